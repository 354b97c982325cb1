"""The implicit Sinkhorn gradient of the alignment loss (interactions._coupling)."""

from __future__ import annotations

import pytest
import torch

from timoe.config import BatchEstimatorConfig
from timoe.interactions import _coupling
from timoe.interactions._coupling import alignment_terms
from timoe.interactions.lagstack import _kernel, coupling_terms_lags

L, K, N, D = 2, 3, 24, 8


def _standardised(e: torch.Tensor) -> torch.Tensor:
    return (e - e.mean(-1, keepdim=True)) / torch.sqrt(e.var(-1, keepdim=True) + 1e-8)


def _problem(seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    raw1 = torch.randn(L, N, K, D, generator=g, dtype=torch.float64, requires_grad=True)
    raw2 = torch.randn(L, N, K, D, generator=g, dtype=torch.float64, requires_grad=True)
    p1 = torch.randn(L, N, K, generator=g, dtype=torch.float64).softmax(-1)
    p2 = torch.randn(L, N, K, generator=g, dtype=torch.float64).softmax(-1)
    return raw1, raw2, p1, p2


@pytest.mark.parametrize("strata", [False, True])
def test_loss_and_implicit_gradient_match_the_converged_unrolled_solve(
    strata: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    raw1, raw2, p1, p2 = _problem(0)
    ctx = torch.randint(0, 2, (L, N), generator=torch.Generator().manual_seed(1)) if strata else None
    tight = BatchEstimatorConfig(sinkhorn_iters=5000, sinkhorn_tol=1e-12)
    ref, _ = coupling_terms_lags(_kernel(_standardised(raw1), _standardised(raw2)), p1, p2, ctx, tight)
    g_ref = torch.autograd.grad((ref * torch.tensor([1.0, 2.0])).sum(), (raw1, raw2))
    monkeypatch.setattr(_coupling, "PROJECTION_STEPS", 60)  # the fit converged: the exact gradient
    got, iters = alignment_terms(_standardised(raw1), _standardised(raw2), p1, p2, ctx, 5000, 1e-12)
    g = torch.autograd.grad((got * torch.tensor([1.0, 2.0])).sum(), (raw1, raw2))
    assert iters > 1
    torch.testing.assert_close(got, ref, rtol=0, atol=1e-10)
    for a, b in zip(g, g_ref, strict=True):
        assert float((a - b).abs().max()) < 1e-6 * float(b.abs().max())


def test_default_projection_steps_give_a_gradient_as_close_as_the_unrolled_one() -> None:
    raw1, raw2, p1, p2 = _problem(2)
    raw1, raw2, p1, p2 = (t.float().detach().requires_grad_(t.requires_grad) for t in (raw1, raw2, p1, p2))
    tight = BatchEstimatorConfig(sinkhorn_iters=5000, sinkhorn_tol=1e-7)
    ref, _ = coupling_terms_lags(_kernel(_standardised(raw1), _standardised(raw2)), p1, p2, None, tight)
    (g_ref,) = torch.autograd.grad(ref.sum(), raw1)
    got, _ = alignment_terms(_standardised(raw1), _standardised(raw2), p1, p2, None, 100, 1e-3)
    (g,) = torch.autograd.grad(got.sum(), raw1)
    assert float((g - g_ref).abs().max()) < 0.05 * float(g_ref.abs().max())
