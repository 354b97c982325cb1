"""The auxiliary losses' experts-outer rewrite (issue 19) against the plain last-dim forms it
replaced: every term's value and gradient (logits) to float32 rounding, per-window and shared
priors, hard and soft weighting, an empty mask; and CPU determinism."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from timoe.config import LossConfig
from timoe.models.losses import cell_weights, layer_parts, tempered_probs
from timoe.models.prior import BatchPrior
from timoe.models.routers import route_from_logits

TERMS = ("load", "z", "redundancy", "uniqueness", "synergy")
EPS = 1e-8


def plain_jsd(p: Tensor, q: Tensor) -> Tensor:
    mid = 0.5 * (p + q)
    log_mid = mid.clamp_min(EPS).log()
    kl_p = (p * (p.clamp_min(EPS).log() - log_mid)).sum(-1)
    kl_q = (q * (q.clamp_min(EPS).log() - log_mid)).sum(-1)
    return 0.5 * (kl_p + kl_q)


def plain_mean(term: Tensor, w: Tensor) -> Tensor:
    term, w = torch.broadcast_tensors(term, w)
    total = w.sum()
    if float(total) < 1e-6:
        return term.new_zeros(())
    return (w * term).sum() / total


def plain_parts(
    logits: Tensor, top_k: int, prior: BatchPrior, cfg: LossConfig, n_syn: int
) -> dict[str, Tensor]:
    """layer_parts as the plain formulas: every reduction over the last (experts) dim."""
    route = route_from_logits(logits, top_k)
    probs = route.probs.contiguous()
    n_exp = probs.shape[-1]
    f = torch.bincount(route.topk_idx.reshape(-1), minlength=n_exp).float() / (probs.numel() // n_exp)
    out = {
        "load": n_exp * (f * probs.reshape(-1, n_exp).mean(0)).sum(),
        "z": torch.logsumexp(logits, dim=-1).square().mean(),
    }
    lp = tempered_probs(logits, cfg.temperature).contiguous() if cfg.probs == "tempered" else probs
    m, t = lp.shape[1], lp.shape[2]
    i, j = torch.triu_indices(m, m, offset=1)
    width = cfg.soft_width if cfg.weighting == "soft" else None
    div = plain_jsd(lp[:, i], lp[:, j])
    out["redundancy"] = plain_mean(div, cell_weights(prior.R[..., i, j, :t], cfg.tau_r, width))
    wu = cell_weights(prior.U[..., i, :t], cfg.tau_u, width) * cell_weights(
        prior.U[..., j, :t], cfg.tau_u, width
    )
    out["uniqueness"] = -plain_mean(div, wu)
    p_syn = lp[..., :n_syn].sum(-1)
    ws = cell_weights(prior.S[..., i, j, :t], cfg.tau_s, width)
    out["synergy"] = plain_mean(1.0 - 0.5 * (p_syn[:, i] + p_syn[:, j]), ws)
    return out


def _prior(seed: int, b: int, m: int, t: int, per_window: bool, scale: float = 0.5) -> BatchPrior:
    g = torch.Generator().manual_seed(seed)
    lead = (b,) if per_window else ()
    U = scale * torch.rand(*lead, m, t, generator=g)
    R = scale * torch.rand(*lead, m, m, t, generator=g)
    S = scale * torch.rand(*lead, m, m, t, generator=g)
    return BatchPrior(U, R, S, torch.zeros(b, dtype=torch.long))


@pytest.mark.parametrize(
    ("weighting", "probs", "per_window", "scale"),
    [
        ("soft", "tempered", True, 0.5),
        ("hard", "router", True, 0.5),
        ("hard", "tempered", False, 0.5),
        ("hard", "router", True, 0.0),  # nothing above tau: the RUS terms are 0
    ],
)
def test_layer_parts_match_plain(weighting: str, probs: str, per_window: bool, scale: float) -> None:
    cfg = LossConfig(weighting=weighting, probs=probs, soft_width=0.05, tau_r=0.2, tau_u=0.25, tau_s=0.2)
    g = torch.Generator().manual_seed(0)
    logits = (3.0 * torch.randn(5, 3, 7, 8, generator=g)).requires_grad_()
    prior = _prior(1, 5, 3, 9, per_window, scale)
    got = layer_parts(route_from_logits(logits, 2), prior, cfg, 2, TERMS)
    want = plain_parts(logits, 2, prior, cfg, 2)
    for term in TERMS:
        torch.testing.assert_close(got[term], want[term], rtol=1e-5, atol=1e-7, msg=term)
        if want[term].requires_grad:
            (g_got,) = torch.autograd.grad(got[term], logits, retain_graph=True)
            (g_want,) = torch.autograd.grad(want[term], logits, retain_graph=True)
            torch.testing.assert_close(g_got, g_want, rtol=1e-4, atol=1e-7, msg=term)
        else:
            assert float(got[term]) == 0.0


def test_layer_parts_deterministic() -> None:
    cfg = LossConfig(weighting="soft", probs="tempered", soft_width=0.05)

    def run() -> list[Tensor]:
        logits = (3.0 * torch.randn(4, 3, 6, 8, generator=torch.Generator().manual_seed(2))).requires_grad_()
        parts = layer_parts(route_from_logits(logits, 2), _prior(3, 4, 3, 6, True), cfg, 2, TERMS)
        (grad,) = torch.autograd.grad(sum(parts.values()), logits)
        return [*parts.values(), grad]

    for a, b in zip(run(), run(), strict=True):
        assert torch.equal(a, b)
