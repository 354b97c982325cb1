"""The rewritten routing kernels (issue 19) against the plain implementations they replace:
forward values and gradients to float32 rounding, and CPU determinism for a fixed seed."""

from __future__ import annotations

import pytest
import torch

from timoe.config import LossConfig
from timoe.models import RusPrior
from timoe.models.losses import layer_parts, redundancy_loss, tempered_probs, uniqueness_loss
from timoe.models.routers import SoftmaxRouter, expert_softmax, route_from_logits


def plain_route(logits: torch.Tensor, top_k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """route_from_logits as it was before the rewrite: torch.softmax over the last dim."""
    probs = torch.softmax(logits, dim=-1)
    top_logits, top_idx = logits.topk(top_k, dim=-1)
    weights = probs.gather(-1, top_idx) if top_k == 1 else torch.softmax(top_logits, dim=-1)
    return probs, top_idx, weights


def plain_tempered(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """tempered_probs as it was before the rewrite."""
    z = (logits - logits.mean(-1, keepdim=True)) / logits.std(-1, keepdim=True).clamp_min(1e-4)
    return torch.softmax(z / temperature, dim=-1)


def _logits(seed: int, shape: tuple[int, ...] = (4, 3, 7, 8), scale: float = 3.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (scale * torch.randn(shape, generator=g)).requires_grad_()


def _grads(out: torch.Tensor, wrt: torch.Tensor, seed: int) -> torch.Tensor:
    """Gradient of a random linear functional of `out` (every output entry matters)."""
    g = torch.Generator().manual_seed(seed + 100)
    probe = torch.randn(out.shape, generator=g)
    (grad,) = torch.autograd.grad((out * probe).sum(), wrt, retain_graph=True)
    return grad


@pytest.mark.parametrize("shape", [(4, 3, 7, 8), (2, 5), (3, 1, 2, 1)])
def test_expert_softmax_matches_torch_softmax(shape: tuple[int, ...]) -> None:
    x = _logits(0, shape)
    got, want = expert_softmax(x), torch.softmax(x, dim=-1)
    assert got.shape == want.shape
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(_grads(got, x, 0), _grads(want, x, 0), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("top_k", [1, 2, 3])
def test_route_from_logits_matches_plain(top_k: int) -> None:
    x = _logits(top_k)
    route = route_from_logits(x, top_k)
    probs, idx, weights = plain_route(x, top_k)
    assert torch.equal(route.topk_idx, idx)
    torch.testing.assert_close(route.probs, probs, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(route.topk_weights, weights, rtol=1e-6, atol=1e-7)
    if top_k > 1:  # k = 1 follows Switch: the weight is the full probability
        torch.testing.assert_close(route.topk_weights.sum(-1), torch.ones(idx.shape[:-1]))
    for i, (got, want) in enumerate([(route.probs, probs), (route.topk_weights, weights)]):
        torch.testing.assert_close(_grads(got, x, i), _grads(want, x, i), rtol=1e-5, atol=1e-6)


def test_masked_experts_get_zero_probability_and_are_never_picked() -> None:
    """The disabled_experts hook masks logits before route_from_logits; the rewrite keeps the
    masked experts at probability exactly 0."""
    router = SoftmaxRouter(16, 8, 2)
    router.disabled_experts = torch.tensor([True, True] + [False] * 6)
    route = router(torch.randn(2, 3, 5, 16))
    assert (route.probs[..., :2] == 0).all()
    assert (route.topk_idx >= 2).all()


@pytest.mark.parametrize("temperature", [1.0, 0.5])
def test_tempered_probs_matches_plain(temperature: float) -> None:
    x = _logits(7)
    got, want = tempered_probs(x, temperature), plain_tempered(x, temperature)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(_grads(got, x, 7), _grads(want, x, 7), rtol=1e-4, atol=1e-5)


def test_tempered_probs_of_constant_logits_is_uniform() -> None:
    """std 0 hits the clamp: uniform probabilities and finite gradients, as before."""
    x = torch.zeros(2, 3, 4, 8, requires_grad=True)
    got = tempered_probs(x, 1.0)
    torch.testing.assert_close(got, torch.full_like(got, 1 / 8))
    assert torch.isfinite(_grads(got, x, 0)).all()


def test_kernels_are_deterministic_on_cpu() -> None:
    def run() -> list[torch.Tensor]:
        x = _logits(3, (16, 3, 32, 8))
        route = route_from_logits(x, 2)
        t = tempered_probs(x, 1.0)
        return [route.probs, route.topk_weights, t, _grads(route.probs + t, x, 3)]

    for a, b in zip(run(), run(), strict=True):
        assert torch.equal(a, b)


def test_layer_parts_share_one_pair_jsd_with_the_same_values() -> None:
    """redundancy and uniqueness computed from one pair_jsd equal the stand-alone terms."""
    g = torch.Generator().manual_seed(5)
    logits = torch.randn(4, 3, 6, 8, generator=g)
    route = route_from_logits(logits, 2)
    prior = RusPrior(
        torch.rand(3, 6, generator=g), torch.rand(3, 3, 6, generator=g), torch.rand(3, 3, 6, generator=g)
    )
    cfg = LossConfig(weighting="soft", probs="tempered", tau_r=0.3, tau_u=0.4, tau_s=0.5)
    parts = layer_parts(route, prior, cfg, 2, ["redundancy", "uniqueness"])
    probs = tempered_probs(logits, cfg.temperature)
    width = cfg.soft_width
    assert torch.equal(parts["redundancy"], redundancy_loss(probs, prior.R, cfg.tau_r, width))
    assert torch.equal(parts["uniqueness"], uniqueness_loss(probs, prior.U, cfg.tau_u, width))
