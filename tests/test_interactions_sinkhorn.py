"""Batched Sinkhorn: class-major core, sample-major wrapper, log-domain fallback, gradients."""

from __future__ import annotations

import torch

from timoe.interactions.batch import _scale_probability, sinkhorn, sinkhorn_classes


def _problem(
    b: int, n1: int, n2: int, scale: float, seed: int = 0, dtype: torch.dtype = torch.float64
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    log_a = scale * torch.randn(b, n1, n2, generator=gen, dtype=dtype)
    r = torch.softmax(torch.randn(b, n1, generator=gen, dtype=dtype), 1)
    c = torch.softmax(torch.randn(b, n2, generator=gen, dtype=dtype), 1)
    return log_a, r, c


def test_class_major_core_matches_the_sample_major_wrapper() -> None:
    log_a, r, c = _problem(4, 20, 30, 1.0)
    core, used = sinkhorn_classes(log_a, r.log(), c.log(), 500, 1e-10)
    wrapped, used_w = sinkhorn(log_a.permute(1, 2, 0), r.T.log(), c.T.log(), 500, 1e-10)
    assert used == used_w < 500
    torch.testing.assert_close(wrapped.permute(2, 0, 1), core, atol=1e-12, rtol=0)
    q = core.exp()
    torch.testing.assert_close(q.sum(2), r, atol=1e-12, rtol=0)
    torch.testing.assert_close(q.sum(1), c, atol=1e-9, rtol=0)


def test_lags_batch_like_classes() -> None:
    """Classes × lags stacked in one batch give each slice's own solution."""
    log_a, r, c = _problem(12, 16, 16, 1.0, seed=1)
    both, _ = sinkhorn_classes(log_a, r.log(), c.log(), 500, 1e-11)
    for lag in range(3):
        part = slice(4 * lag, 4 * lag + 4)
        one, _ = sinkhorn_classes(log_a[part], r[part].log(), c[part].log(), 500, 1e-11)
        torch.testing.assert_close(one.exp(), both[part].exp(), atol=1e-9, rtol=0)


def test_wide_kernels_fall_back_to_the_log_domain() -> None:
    """Exponents far past the alignment's ±30 clamp under/overflow in float32: the log domain takes
    over and still hits the marginals and the float64 solution."""
    log_a, r, c = _problem(3, 48, 48, 40.0, seed=2, dtype=torch.float32)
    a = (log_a - log_a.amax(dim=(1, 2), keepdim=True)).exp()
    *_, unsafe = _scale_probability(a, r.unsqueeze(1), c.unsqueeze(1), 50, 1e-4)
    assert unsafe
    log_q, _ = sinkhorn_classes(log_a, r.log(), c.log(), 3000, 1e-4)
    q = log_q.exp()
    assert torch.isfinite(log_q[q > 0]).all()
    assert float((q.sum(2) - r).abs().max()) < 1e-5  # rows exact up to float32
    assert float((q.sum(1) - c).abs().max()) < 2e-4
    ref, _ = sinkhorn_classes(log_a.double(), r.double().log(), c.double().log(), 3000, 1e-4)
    assert float((ref.exp() - q.double()).abs().max()) < 1e-3


def test_clamped_kernels_stay_in_the_probability_domain_and_carry_gradients() -> None:
    log_a, r, c = _problem(6, 32, 32, 30.0, seed=3, dtype=torch.float32)
    log_a = log_a.clamp(-30.0, 30.0).requires_grad_(True)
    a = (log_a.detach() - log_a.detach().amax(dim=(1, 2), keepdim=True)).exp()
    *_, unsafe = _scale_probability(a, r.unsqueeze(1), c.unsqueeze(1), 100, 1e-3)
    assert not unsafe
    log_q, _ = sinkhorn_classes(log_a, r.log(), c.log(), 100, 1e-3)
    (log_q.exp() * log_q).sum().backward()
    assert log_a.grad is not None and torch.isfinite(log_a.grad).all()
