"""Routers and MoE dispatch: top-k, weights, and dispatch against a naive per-token loop."""

from __future__ import annotations

import pytest
import torch

from timoe.models import (
    BatchPrior,
    LaplaceRouter,
    MoELayer,
    RoutingContext,
    RusAwareRouter,
    RusPrior,
    SoftmaxRouter,
    route_from_logits,
)

B, M, T, D, E, K = 3, 2, 5, 16, 6, 2


def random_prior(m: int, t: int, seed: int = 0) -> RusPrior:
    g = torch.Generator().manual_seed(seed)
    r = torch.rand(m, m, t, generator=g)
    s = torch.rand(m, m, t, generator=g)
    off = (1 - torch.eye(m))[:, :, None]
    return RusPrior(
        torch.rand(m, t, generator=g),
        0.5 * (r + r.transpose(0, 1)) * off,
        0.5 * (s + s.transpose(0, 1)) * off,
    )


def batch_context(m: int, t: int, b: int = B, seed: int = 0) -> RoutingContext:
    """A different random prior for every window of the batch."""
    priors = [random_prior(m, t, seed + i) for i in range(b)]
    return RoutingContext(
        BatchPrior(
            torch.stack([p.U for p in priors]),
            torch.stack([p.R for p in priors]),
            torch.stack([p.S for p in priors]),
            torch.arange(b),
        )
    )


@pytest.mark.parametrize("kind", ["softmax", "laplace", "rus"])
def test_router_topk_and_weights(kind: str) -> None:
    torch.manual_seed(0)
    if kind == "softmax":
        router = SoftmaxRouter(D, E, K)
    elif kind == "laplace":
        router = LaplaceRouter(D, E, K)
    else:
        router = RusAwareRouter(D, E, K, M, token_dim=8, gru_dim=8, kv_dim=4)
    out = router(torch.randn(B, M, T, D), batch_context(M, T))
    assert out.probs.shape == (B, M, T, E)
    assert out.topk_idx.shape == out.topk_weights.shape == (B, M, T, K)
    assert torch.allclose(out.probs.sum(-1), torch.ones(B, M, T))
    assert torch.allclose(out.topk_weights.sum(-1), torch.ones(B, M, T))
    # The selection is the k largest probabilities, the weights those renormalised.
    top = out.probs.topk(K, dim=-1)
    assert torch.equal(out.topk_idx, top.indices)
    assert torch.allclose(out.topk_weights, top.values / top.values.sum(-1, keepdim=True), atol=1e-6)
    assert (out.topk_idx[..., 0] != out.topk_idx[..., 1]).all()


def test_laplace_logits_are_negative_distances() -> None:
    torch.manual_seed(0)
    router = LaplaceRouter(D, E, K)
    x = torch.randn(B, M, T, D)
    expected = -torch.cdist(x.reshape(-1, D), router.centres).view(B, M, T, E)
    assert torch.allclose(router.compute_logits(x), expected, atol=1e-4)


def test_top1_uses_switch_gate() -> None:
    logits = torch.tensor([[[[2.0, 0.0, 1.0]]]])
    out = route_from_logits(logits, 1)
    assert out.topk_idx.item() == 0
    assert out.topk_weights.item() == pytest.approx(torch.softmax(logits, -1)[..., 0].item())


@pytest.mark.parametrize("m", [1, 2, 3])
def test_rus_router_conditions_each_window_on_its_own_prior(m: int) -> None:
    torch.manual_seed(0)
    router = RusAwareRouter(D, E, K, m, token_dim=8, gru_dim=8, kv_dim=4)
    x = torch.randn(1, m, T, D).expand(B, m, T, D)  # the same tokens in every window
    ctx = batch_context(m, T)
    logits = router.compute_logits(x, ctx)
    # each window's logits equal those computed for that window alone (no mixing across the batch)
    for b in range(B):
        one = [getattr(ctx.prior, k)[b : b + 1] for k in ("U", "R", "S", "context")]
        alone = RoutingContext(BatchPrior(*one))
        assert torch.allclose(logits[b : b + 1], router.compute_logits(x[b : b + 1], alone), atol=1e-5)
    # identical tokens, different priors -> different routing logits: the prior is not a constant bias
    assert not torch.allclose(logits[0], logits[1], atol=1e-4)
    # Shorter inputs use the prior's first steps; longer ones are refused.
    assert router.compute_logits(x[:, :, :3], ctx).shape == (B, m, 3, E)
    with pytest.raises(ValueError, match="covers"):
        router.compute_logits(torch.randn(B, m, T + 1, D), ctx)
    with pytest.raises(ValueError, match="per-window prior"):
        router.compute_logits(x, None)


def naive_moe(layer: MoELayer, x: torch.Tensor) -> torch.Tensor:
    """Token-by-token reference: FFN experts on one token at a time; a synergy expert on the list
    of one sample's tokens routed to it (no padding), in token order."""
    route = layer.router(x, None)
    b, m, t, _ = x.shape
    out = torch.zeros_like(x)
    for bi in range(b):
        for e in range(layer.n_experts):
            routed = [
                (mi, ti, s)
                for mi in range(m)
                for ti in range(t)
                for s in range(K)
                if route.topk_idx[bi, mi, ti, s] == e
            ]
            if not routed:
                continue
            if e < layer.n_synergy:
                group = torch.stack([x[bi, mi, ti] for mi, ti, _ in routed])
                y = layer.experts[e](group, torch.zeros(len(routed), dtype=torch.long))
                for row, (mi, ti, s) in enumerate(routed):
                    out[bi, mi, ti] += route.topk_weights[bi, mi, ti, s] * y[row]
            else:
                for mi, ti, s in routed:
                    y = layer.experts[e](x[bi, mi, ti][None])[0]
                    out[bi, mi, ti] += route.topk_weights[bi, mi, ti, s] * y
    return out


@pytest.mark.parametrize("n_synergy", [0, 2])
def test_dispatch_matches_naive_reference(n_synergy: int) -> None:
    torch.manual_seed(0)
    layer = MoELayer(D, 24, E, n_synergy, n_heads=2, dropout=0.0, router=SoftmaxRouter(D, E, K)).eval()
    x = torch.randn(B, M, T, D)
    with torch.no_grad():
        got = layer(x).y
        want = naive_moe(layer, x)
    assert torch.allclose(got, want, atol=1e-5)


def test_synergy_expert_attends_within_sample_only() -> None:
    torch.manual_seed(0)
    layer = MoELayer(D, 24, E, 2, n_heads=2, dropout=0.0, router=SoftmaxRouter(D, E, K)).eval()
    expert = layer.experts[0]
    x = torch.randn(7, D)
    sample = torch.tensor([0, 0, 0, 2, 2, 5, 5])
    with torch.no_grad():
        together = expert(x, sample)
        apart = torch.cat(
            [
                expert(x[sample == s], torch.zeros(int((sample == s).sum()), dtype=torch.long))
                for s in (0, 2, 5)
            ]
        )
    assert torch.allclose(together, apart, atol=1e-5)


def test_moe_layer_gradients_and_determinism() -> None:
    torch.manual_seed(0)
    layer = MoELayer(
        D,
        24,
        E,
        2,
        n_heads=2,
        dropout=0.1,
        router=RusAwareRouter(D, E, K, M, token_dim=8, gru_dim=8, kv_dim=4),
    )
    x = torch.randn(B, M, T, D, requires_grad=True)
    ctx = batch_context(M, T)
    torch.manual_seed(1)
    y1 = layer(x, ctx).y
    y1.square().mean().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    assert layer.router.token.weight.grad is not None
    assert layer.router.gru.weight_ih_l0.grad.abs().sum() > 0
    torch.manual_seed(1)
    assert torch.equal(layer(x, ctx).y, y1)
