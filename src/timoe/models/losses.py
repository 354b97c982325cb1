"""Auxiliary routing losses (method.md section 3), with per-window interaction masks.

The RUS terms take router probabilities [B, M, T, E] and a prior whose tables are either shared,
R [M, M, T], or per window, R [B, M, M, T] (a BatchPrior); masks broadcast over the batch, so a
loss acts on exactly the windows whose context shows the interaction. Each term function returns
its unweighted value; `aux_losses` averages each term over MoE layers and returns
(weighted total, parts). JSD is in nats, of the probabilities themselves (the reference code
passes log_softmax of probabilities, a different and wrong quantity).

Which cells a term acts on: `weighting: hard` keeps the cells whose value exceeds tau (the
paper); `soft` weighs every cell by sigmoid((value - tau) / soft_width), so a loss does not jump
on or off at an arbitrary cut. With `relative: true` the prior holds fractions of each pair's
total I(X1, X2; Y) and tau is a fraction too.

Which probabilities: `probs: router` uses the router's softmax; `tempered` the softmax of the
per-token standardised logits at a fixed temperature. The latter cannot be met by flattening the
logits (a uniform router has JSD 0 between every pair, so L_R alone would reward ignoring the
token): its sharpness is fixed, and only where experts rank is left to the router.

Pairs are unordered (m1 < m2); since R, S are symmetric this equals the mean over ordered pairs.
A term whose mask selects nothing is 0.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from torch import Tensor

from timoe.config import LossConfig
from timoe.models.prior import BatchPrior
from timoe.models.routers import RouterOutput

LOSS_TERMS = ("load", "z", "redundancy", "uniqueness", "synergy")
_EPS = 1e-8


def loss_weights(cfg: LossConfig) -> dict[str, float]:
    return {
        "load": cfg.lambda_load,
        "z": cfg.lambda_z,
        "redundancy": cfg.lambda_r,
        "uniqueness": cfg.lambda_u,
        "synergy": cfg.lambda_s,
    }


def jsd(p: Tensor, q: Tensor, dim: int = -1) -> Tensor:
    """Jensen-Shannon divergence (nats) between distributions along `dim` (default the last)."""
    return _jsd_from_logs(p, q, p.clamp_min(_EPS).log(), q.clamp_min(_EPS).log(), dim)


def _jsd_from_logs(p: Tensor, q: Tensor, log_p: Tensor, log_q: Tensor, dim: int) -> Tensor:
    """jsd(p, q) given log(clamp(p)), log(clamp(q)), so a caller can take each log once."""
    mid = 0.5 * (p + q)
    log_mid = mid.clamp_min(_EPS).log()
    # clamp_min keeps 0 * log 0 at 0 with a finite gradient when a probability underflows.
    kl_p = (p * (log_p - log_mid)).sum(dim)
    kl_q = (q * (log_q - log_mid)).sum(dim)
    return 0.5 * (kl_p + kl_q)


def experts_outer(probs: Tensor) -> Tensor:
    """probs [B, M, T, E] -> the view [E, B, M, T]. Reductions over experts then run over the
    outer dim, vectorised across tokens (CPU reductions over a last dim of 8 run at a fraction of
    the elementwise rate); the routers' and tempered probabilities are stored this way already,
    so the view is contiguous and free."""
    return probs.permute(3, 0, 1, 2)


def _pair_index(m: int, device: torch.device) -> tuple[Tensor, Tensor]:
    i, j = torch.triu_indices(m, m, offset=1, device=device)
    return i, j


def cell_weights(values: Tensor, tau: float, soft_width: float | None = None) -> Tensor:
    """Weights of the cells a term acts on: values > tau (hard, soft_width None) or
    sigmoid((values - tau) / soft_width) (soft). Same shape as values."""
    if soft_width is None:
        return (values > tau).to(values.dtype)
    return torch.sigmoid((values - tau) / soft_width)


def _weighted_mean(term: Tensor, w: Tensor) -> Tensor:
    """sum(w * term) / sum(w), 0 when nothing is selected; term and w broadcast to [B, P, T].
    Decided on the device (torch.where), so the loss needs no host sync."""
    term, w = torch.broadcast_tensors(term, w)
    total = w.sum()
    empty = total < 1e-6
    return torch.where(empty, 0.0, (w * term).sum() / torch.where(empty, 1.0, total))


def _pair_values(x: Tensor, i: Tensor, j: Tensor, t: int) -> Tensor:
    """R or S [M, M, T'] or [B, M, M, T'] -> per-pair values [P, t] or [B, P, t]."""
    return x[..., i, j, :t]


def pair_jsd(probs: Tensor) -> Tensor:
    """JSD between the routing of every modality pair m1 < m2: probs [B, M, T, E] -> [B, P, T].
    Computed experts-outer, each modality's log taken once (not once per pair)."""
    i, j = _pair_index(probs.shape[1], probs.device)
    p = experts_outer(probs)  # [E, B, M, T]
    log_p = p.clamp_min(_EPS).log()
    # index_select, not p[:, :, i]: its backward is an index_add, not an accumulating index_put.
    p_i, p_j = p.index_select(2, i), p.index_select(2, j)
    return _jsd_from_logs(p_i, p_j, log_p.index_select(2, i), log_p.index_select(2, j), dim=0)


def redundancy_loss(
    probs: Tensor, R: Tensor, tau: float, soft_width: float | None = None, divergence: Tensor | None = None
) -> Tensor:
    """Weighted mean JSD over (b, m1<m2, t) of the cells with R > tau. R [M, M, >=T] or [B, M, M, >=T].
    `divergence`: pair_jsd(probs) if the caller has it already (the uniqueness term shares it)."""
    t = probs.shape[2]
    i, j = _pair_index(probs.shape[1], probs.device)
    w = cell_weights(_pair_values(R, i, j, t), tau, soft_width)
    return _weighted_mean(pair_jsd(probs) if divergence is None else divergence, w)


def uniqueness_loss(
    probs: Tensor, U: Tensor, tau: float, soft_width: float | None = None, divergence: Tensor | None = None
) -> Tensor:
    """Minus the weighted mean JSD over (b, m1<m2, t) where U[m1, t] > tau and U[m2, t] > tau.
    U [M, >=T] or [B, M, >=T]. `divergence`: pair_jsd(probs) if the caller has it already."""
    t = probs.shape[2]
    i, j = _pair_index(probs.shape[1], probs.device)
    w = cell_weights(U[..., i, :t], tau, soft_width) * cell_weights(U[..., j, :t], tau, soft_width)
    return -_weighted_mean(pair_jsd(probs) if divergence is None else divergence, w)


def synergy_loss(
    probs: Tensor, S: Tensor, tau: float, n_synergy: int, soft_width: float | None = None
) -> Tensor:
    """Weighted mean over (b, m1<m2, t) with S > tau of 1 - (P_syn(m1, t) + P_syn(m2, t)) / 2,
    P_syn = router mass on the first n_synergy experts. S [M, M, >=T] or [B, M, M, >=T]."""
    t = probs.shape[2]
    i, j = _pair_index(probs.shape[1], probs.device)
    if n_synergy == 0:
        return probs.new_zeros(())
    w = cell_weights(_pair_values(S, i, j, t), tau, soft_width)
    p_syn = experts_outer(probs)[:n_synergy].sum(0)  # [B, M, T]
    return _weighted_mean(1.0 - 0.5 * (p_syn[:, i] + p_syn[:, j]), w)


def load_balance_loss(probs: Tensor, topk_idx: Tensor) -> Tensor:
    """Switch balance E * sum_e f_e P_e with f_e = share of the N tokens whose top-k includes e
    (as Switch and the common top-k implementations count it: sum_e f_e = k) and P_e the mean
    router probability of e. Equals k under perfectly uniform routing."""
    n_experts = probs.shape[-1]
    n_tokens = topk_idx.numel() // topk_idx.shape[-1]
    f = torch.bincount(topk_idx.reshape(-1), minlength=n_experts).to(probs.dtype) / n_tokens
    p = experts_outer(probs).reshape(n_experts, -1).mean(1)
    return n_experts * (f * p).sum()


def z_loss(logits: Tensor) -> Tensor:
    """ST-MoE router z-loss: mean over tokens of logsumexp(logits)^2 (keeps logits from growing).
    logsumexp over the experts of the contiguous [E, N] copy: across tokens it vectorises."""
    n_experts = logits.shape[-1]
    return torch.logsumexp(logits.float().reshape(-1, n_experts).t().contiguous(), dim=0).square().mean()


def tempered_probs(logits: Tensor, temperature: float) -> Tensor:
    """softmax(standardise(logits) / temperature) over experts [..., E]: fixed sharpness per token.

    Computed on a contiguous [E, N] copy (experts outer): CPU reductions and softmax over a last
    dim of 8 run far below the elementwise rate; across tokens they vectorise. The (unbiased) std
    is written out: torch.std's Welford kernel took 1.9 ms for 6144 tokens x 8 experts, the sum of
    squares a tenth of that. One thread, 6144 tokens, forward + backward: 1.7 ms against 3.1 ms.
    Returns [..., E] in the experts-outer layout.
    """
    n_experts = logits.shape[-1]
    x = logits.reshape(-1, n_experts).t().contiguous()  # [E, N]
    centred = x - x.mean(0)
    # Clamping the variance at 1e-8 = clamping the std at 1e-4, and keeps sqrt's gradient finite.
    std = (centred.square().sum(0) / (n_experts - 1)).clamp_min(1e-8).sqrt()  # [N]
    z = centred / std
    return torch.softmax(z / temperature, dim=0).t().reshape(logits.shape)


def _loss_probs(route: RouterOutput, cfg: LossConfig) -> Tensor:
    return tempered_probs(route.logits, cfg.temperature) if cfg.probs == "tempered" else route.probs


def layer_parts(
    route: RouterOutput, prior: BatchPrior | None, cfg: LossConfig, n_synergy: int, terms: Iterable[str]
) -> dict[str, Tensor]:
    """Unweighted loss terms of one MoE layer. The RUS terms need the prior."""
    parts: dict[str, Tensor] = {}
    width = cfg.soft_width if cfg.weighting == "soft" else None
    probs = None
    divergence = None  # pair_jsd(probs), computed once for the redundancy and uniqueness terms
    for term in terms:
        if term == "load":
            parts[term] = load_balance_loss(route.probs, route.topk_idx)
            continue
        if term == "z":
            parts[term] = z_loss(route.logits)
            continue
        if prior is None:
            raise ValueError(f"loss term {term!r} needs a RUS prior")
        probs = _loss_probs(route, cfg) if probs is None else probs
        if term in ("redundancy", "uniqueness") and divergence is None:
            divergence = pair_jsd(probs)
        if term == "redundancy":
            parts[term] = redundancy_loss(probs, prior.R, cfg.tau_r, width, divergence)
        elif term == "uniqueness":
            parts[term] = uniqueness_loss(probs, prior.U, cfg.tau_u, width, divergence)
        elif term == "synergy":
            parts[term] = synergy_loss(probs, prior.S, cfg.tau_s, n_synergy, width)
        else:
            raise ValueError(f"unknown loss term {term!r}; known: {list(LOSS_TERMS)}")
    return parts


def aux_losses(
    routes: Sequence[RouterOutput],
    prior: BatchPrior | None,
    cfg: LossConfig,
    n_synergy: int,
    active: Iterable[str],
    diagnostic: Iterable[str] = (),
) -> tuple[Tensor, dict[str, Tensor]]:
    """Average each term over MoE layers; total = sum_{active} lambda * part.

    `diagnostic` terms are computed without gradient and reported in parts only (e.g. the RUS
    terms of a model not trained on them, to compare routing across models); they do not enter
    the total. A term whose lambda is 0 is not computed. Returns (total scalar, parts).
    """
    weights = loss_weights(cfg)
    active = [t for t in LOSS_TERMS if t in set(active) and weights[t] > 0]
    diagnostic = [t for t in LOSS_TERMS if t in set(diagnostic) and t not in active]
    if not routes:
        return torch.zeros(()), {}
    per_layer = [layer_parts(r, prior, cfg, n_synergy, active) for r in routes]
    parts = {t: torch.stack([p[t] for p in per_layer]).mean() for t in active}
    if diagnostic:
        with torch.no_grad():
            diag = [layer_parts(r, prior, cfg, n_synergy, diagnostic) for r in routes]
            parts.update({t: torch.stack([p[t] for p in diag]).mean() for t in diagnostic})
    total = routes[0].probs.new_zeros(())
    for t in active:
        total = total + weights[t] * parts[t]
    return total, parts
