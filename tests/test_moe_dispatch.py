"""The MoE layer's rewritten dispatch and synergy experts (issue 19) against plain
implementations written out here (the code they replaced): forward values and gradients (inputs,
mixing weights, every parameter) to float32 rounding, and CPU determinism at a fixed seed.

Dropout is 0 in the comparisons: the rewrite draws its masks over fewer rows (no padding), so
with dropout the masks differ in realisation, not in distribution."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from timoe.models.moe import MoELayer, SynergyExpert
from timoe.models.routers import RouterOutput, SoftmaxRouter


def plain_synergy(expert: SynergyExpert, x: Tensor, sample: Tensor) -> Tensor:
    """SynergyExpert.forward before the rewrite: every projection on zero-padded groups, each
    row allowed its group's rows and itself."""
    n, d = x.shape
    first = torch.ones_like(sample, dtype=torch.bool)
    first[1:] = sample[1:] != sample[:-1]
    group = torch.cumsum(first.long(), 0) - 1
    n_groups = int(group[-1]) + 1
    counts = torch.bincount(group, minlength=n_groups)
    pos = torch.arange(n) - (torch.cumsum(counts, 0) - counts)[group]
    length = int(counts.max())
    padded = x.new_zeros(n_groups, length, d).index_put((group, pos), x)
    valid = torch.arange(length)[None, :] < counts[:, None]
    allowed = valid[:, None, :] | torch.eye(length, dtype=torch.bool)[None]
    attn = expert.attn
    h = attn.n_heads
    q, k, v = attn.qkv(padded).view(n_groups, length, 3, h, d // h).permute(2, 0, 3, 1, 4)
    y = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed[:, None])
    y = attn.out(y.transpose(1, 2).reshape(n_groups, length, d))
    z = expert.norm(padded + y)
    return expert.ffn(z[group, pos])


def plain_dispatch(layer: MoELayer, x: Tensor, route: RouterOutput) -> Tensor:
    """MoELayer.dispatch written plainly: a loop over (token, slot) per expert, no sorting."""
    b, m, t, d = x.shape
    flat = x.reshape(-1, d)
    idx = route.topk_idx.reshape(flat.shape[0], -1)
    w = route.topk_weights.reshape(flat.shape[0], -1)
    out = torch.zeros_like(flat)
    for e in range(layer.n_experts):
        tok, slot = (idx == e).nonzero(as_tuple=True)  # token order: ascending, as the sample ids need
        if tok.numel() == 0:
            continue
        if e < layer.n_synergy:
            y = plain_synergy(layer.experts[e], flat[tok], tok // (m * t))
        else:
            y = layer.experts[e](flat[tok])
        out = out.index_add(0, tok, y * w[tok, slot][:, None])
    return out.view(b, m, t, d)


def _layer(seed: int, n_experts: int = 8, n_synergy: int = 2, top_k: int = 2, d: int = 16) -> MoELayer:
    torch.manual_seed(seed)
    router = SoftmaxRouter(d, n_experts, top_k)
    return MoELayer(d, 24, n_experts, n_synergy, 2, 0.0, router).train()


def _inputs(seed: int, shape: tuple[int, int, int, int]) -> Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g).requires_grad_()


def _all_grads(out: Tensor, wrt: list[Tensor], seed: int) -> list[Tensor]:
    probe = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed + 7))
    grads = torch.autograd.grad((out * probe).sum(), wrt, retain_graph=True, allow_unused=True)
    return [torch.zeros_like(w) if g is None else g for w, g in zip(wrt, grads, strict=True)]


@pytest.mark.parametrize(
    ("seed", "shape", "n_experts", "n_synergy", "top_k"),
    [
        (0, (4, 3, 7, 16), 8, 2, 2),
        (1, (3, 2, 5, 16), 4, 1, 1),
        (2, (2, 3, 4, 16), 6, 3, 3),
        (3, (5, 1, 6, 16), 3, 0, 2),
    ],
)
def test_dispatch_matches_plain(
    seed: int, shape: tuple[int, int, int, int], n_experts: int, n_synergy: int, top_k: int
) -> None:
    layer = _layer(seed, n_experts, n_synergy, top_k, shape[-1])
    x = _inputs(seed, shape)
    route = layer.router(x)
    weights = route.topk_weights
    params = [p for p in layer.experts.parameters()]
    got, want = layer.dispatch(x, route), plain_dispatch(layer, x, route)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    wrt = [x, weights, *params]
    for g_got, g_want in zip(_all_grads(got, wrt, seed), _all_grads(want, wrt, seed), strict=True):
        torch.testing.assert_close(g_got, g_want, rtol=1e-4, atol=1e-5)


def test_dispatch_skewed_routing_and_single_token_groups() -> None:
    """All tokens of some samples on one synergy expert, other samples with one token there:
    groups of very different lengths, and experts that receive nothing."""
    layer = _layer(4, n_experts=4, n_synergy=2, top_k=2)
    x = _inputs(4, (3, 2, 5, 16))
    idx = torch.zeros(3, 2, 5, 2, dtype=torch.long)
    idx[..., 1] = 3
    idx[1, :, :, 0] = 2  # sample 1 never reaches expert 0
    idx[2, 1, 4, 0] = 1  # sample 2 sends one token to expert 1, the rest to expert 0
    w = torch.softmax(torch.randn(3, 2, 5, 2, generator=torch.Generator().manual_seed(0)), -1)
    w.requires_grad_()
    route = RouterOutput(torch.zeros(3, 2, 5, 4), torch.full((3, 2, 5, 4), 0.25), idx, w)
    got, want = layer.dispatch(x, route), plain_dispatch(layer, x, route)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    wrt = [x, w, *layer.experts.parameters()]
    for g_got, g_want in zip(_all_grads(got, wrt, 4), _all_grads(want, wrt, 4), strict=True):
        torch.testing.assert_close(g_got, g_want, rtol=1e-4, atol=1e-5)


def test_dispatch_deterministic_with_dropout() -> None:
    """Same seed, same outputs and gradients, bit for bit (dropout on, CPU)."""

    def run() -> tuple[Tensor, Tensor]:
        torch.manual_seed(11)
        router = SoftmaxRouter(16, 8, 2)
        layer = MoELayer(16, 24, 8, 2, 2, 0.1, router).train()
        x = _inputs(11, (4, 3, 7, 16))
        y = layer(x).y
        (grad,) = torch.autograd.grad(y.square().sum(), x)
        return y.detach(), grad

    (y1, g1), (y2, g2) = run(), run()
    assert torch.equal(y1, y2)
    assert torch.equal(g1, g2)
