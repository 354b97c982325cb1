"""Auxiliary routing losses (method.md section 3).

All take the router's full softmax probs [B, M, T, E]. Each term function returns its unweighted
value; `aux_losses` averages each term over MoE layers and returns (weighted total, parts) with
total = sum over active terms of lambda_term * part. JSD is in nats and is taken of the router
probabilities themselves (the reference code passes log_softmax of probabilities, i.e. of
already-normalised values, which is a different and wrong quantity).

Pairs are unordered (m1 < m2); since R, S are symmetric this equals the mean over ordered pairs.
A term whose mask selects nothing is 0.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from torch import Tensor

from timoe.config import LossConfig
from timoe.models.routers import RouterOutput
from timoe.models.rus import RusPrior

LOSS_TERMS = ("load", "redundancy", "uniqueness", "synergy")
_EPS = 1e-8


def loss_weights(cfg: LossConfig) -> dict[str, float]:
    return {"load": cfg.lambda_load, "redundancy": cfg.lambda_r, "uniqueness": cfg.lambda_u,
            "synergy": cfg.lambda_s}


def jsd(p: Tensor, q: Tensor) -> Tensor:
    """Jensen-Shannon divergence (nats) between distributions along the last dim."""
    mid = 0.5 * (p + q)
    log_mid = mid.clamp_min(_EPS).log()
    # clamp_min keeps 0 * log 0 at 0 with a finite gradient when a probability underflows.
    kl_p = (p * (p.clamp_min(_EPS).log() - log_mid)).sum(-1)
    kl_q = (q * (q.clamp_min(_EPS).log() - log_mid)).sum(-1)
    return 0.5 * (kl_p + kl_q)


def _pair_index(m: int, device: torch.device) -> tuple[Tensor, Tensor]:
    i, j = torch.triu_indices(m, m, offset=1, device=device)
    return i, j


def _masked_pair_jsd(probs: Tensor, mask: Tensor, i: Tensor, j: Tensor) -> Tensor:
    """probs [B, M, T, E], mask [P, T] over pairs (i[p], j[p]) -> mean JSD over (b, masked p, t)."""
    if not bool(mask.any()):
        return probs.new_zeros(())
    p = probs[:, i][:, mask]  # [B, n, E]
    q = probs[:, j][:, mask]
    return jsd(p, q).mean()


def redundancy_loss(probs: Tensor, R: Tensor, tau: float) -> Tensor:
    """Mean JSD over (b, m1<m2, t) with R[m1, m2, t] > tau. R [M, M, >=T]."""
    t = probs.shape[2]
    i, j = _pair_index(probs.shape[1], probs.device)
    return _masked_pair_jsd(probs, R[i, j, :t] > tau, i, j)


def uniqueness_loss(probs: Tensor, U: Tensor, tau: float) -> Tensor:
    """Minus the mean JSD over (b, m1<m2, t) with U[m1, t] > tau and U[m2, t] > tau. U [M, >=T]."""
    t = probs.shape[2]
    i, j = _pair_index(probs.shape[1], probs.device)
    return -_masked_pair_jsd(probs, (U[i, :t] > tau) & (U[j, :t] > tau), i, j)


def synergy_loss(probs: Tensor, S: Tensor, tau: float, n_synergy: int) -> Tensor:
    """Mean over (b, m1<m2, t) with S > tau of 1 - (P_syn(m1, t) + P_syn(m2, t)) / 2,
    P_syn = router mass on the first n_synergy experts."""
    t = probs.shape[2]
    i, j = _pair_index(probs.shape[1], probs.device)
    mask = S[i, j, :t] > tau  # [P, T]
    if n_synergy == 0 or not bool(mask.any()):
        return probs.new_zeros(())
    p_syn = probs[..., :n_synergy].sum(-1)  # [B, M, T]
    both = 0.5 * (p_syn[:, i][:, mask] + p_syn[:, j][:, mask])  # [B, n]
    return (1.0 - both).mean()


def load_balance_loss(probs: Tensor, topk_idx: Tensor) -> Tensor:
    """Switch balance E * sum_e f_e P_e: f_e = share of the N*k assignments that went to e,
    P_e = mean router probability of e. Equals 1 under perfectly uniform routing."""
    n_experts = probs.shape[-1]
    f = torch.bincount(topk_idx.reshape(-1), minlength=n_experts).to(probs.dtype) / topk_idx.numel()
    p = probs.reshape(-1, n_experts).mean(0)
    return n_experts * (f * p).sum()


def layer_parts(route: RouterOutput, rus: RusPrior | None, cfg: LossConfig, n_synergy: int,
                terms: Iterable[str]) -> dict[str, Tensor]:
    """Unweighted loss terms of one MoE layer. The RUS terms need the prior (buffers on the
    probabilities' device)."""
    parts: dict[str, Tensor] = {}
    for term in terms:
        if term == "load":
            parts[term] = load_balance_loss(route.probs, route.topk_idx)
            continue
        if rus is None:
            raise ValueError(f"loss term {term!r} needs a RUS prior")
        dev = route.probs.device
        if term == "redundancy":
            parts[term] = redundancy_loss(route.probs, rus.R.to(dev), cfg.tau_r)
        elif term == "uniqueness":
            parts[term] = uniqueness_loss(route.probs, rus.U.to(dev), cfg.tau_u)
        elif term == "synergy":
            parts[term] = synergy_loss(route.probs, rus.S.to(dev), cfg.tau_s, n_synergy)
        else:
            raise ValueError(f"unknown loss term {term!r}; known: {list(LOSS_TERMS)}")
    return parts


def aux_losses(routes: Sequence[RouterOutput], rus: RusPrior | None, cfg: LossConfig, n_synergy: int,
               active: Iterable[str], diagnostic: Iterable[str] = ()) -> tuple[Tensor, dict[str, Tensor]]:
    """Average each term over MoE layers; total = sum_{active} lambda * part.

    `diagnostic` terms are computed without gradient and reported in parts only (e.g. the RUS
    terms of a model not trained on them, to compare routing across models); they do not enter
    the total. Returns (total scalar, parts).
    """
    active = [t for t in LOSS_TERMS if t in set(active)]
    diagnostic = [t for t in LOSS_TERMS if t in set(diagnostic) and t not in active]
    if not routes:
        return torch.zeros(()), {}
    per_layer = [layer_parts(r, rus, cfg, n_synergy, active) for r in routes]
    parts = {t: torch.stack([p[t] for p in per_layer]).mean() for t in active}
    if diagnostic:
        with torch.no_grad():
            diag = [layer_parts(r, rus, cfg, n_synergy, diagnostic) for r in routes]
            parts.update({t: torch.stack([p[t] for p in diag]).mean() for t in diagnostic})
    weights = loss_weights(cfg)
    total = routes[0].probs.new_zeros(())
    for t in active:
        total = total + weights[t] * parts[t]
    return total, parts
