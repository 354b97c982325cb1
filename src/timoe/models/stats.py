"""Routing statistics for logging and interpretability figures.

RoutingStats holds sums (not means) so batches merge by addition; means are derived. Everything
is detached; `to_dict` and `interaction_regime_usage` return plain lists/floats for JSON.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from timoe.config import LossConfig
from timoe.models.routers import RouterOutput
from timoe.models.rus import RusPrior


@dataclass
class RoutingStats:
    """Per MoE layer (L of them, at stack positions `layers`), M modalities, T steps, E experts:

    usage [L, M, E]        top-k assignment counts per modality
    usage_t [L, M, T, E]   the same per step (summed over the batch)
    prob_sum [L, M, E]     sum over (batch, steps) of the full router softmax
    entropy_sum [L, M]     sum over (batch, steps) of the router entropy (nats)
    n_tokens               tokens per (layer, modality) summed: batch size * T
    """

    layers: list[int]
    usage: Tensor
    usage_t: Tensor
    prob_sum: Tensor
    entropy_sum: Tensor
    n_tokens: int
    n_synergy: int

    @classmethod
    def from_routes(
        cls, layers: Sequence[int], routes: Sequence[RouterOutput], n_synergy: int
    ) -> RoutingStats:
        with torch.no_grad():
            usage_t, prob_sum, entropy_sum = [], [], []
            for r in routes:
                n_experts = r.probs.shape[-1]
                onehot = F.one_hot(r.topk_idx, n_experts).to(r.probs.dtype)  # [B, M, T, k, E]
                usage_t.append(onehot.sum(dim=(0, 3)))  # [M, T, E]
                prob_sum.append(r.probs.sum(dim=(0, 2)))  # [M, E]
                ent = -(r.probs * r.probs.clamp_min(1e-12).log()).sum(-1)  # [B, M, T]
                entropy_sum.append(ent.sum(dim=(0, 2)))
            ut = torch.stack(usage_t).cpu()
            b, _, t, _ = routes[0].probs.shape
            return cls(
                list(layers),
                ut.sum(2),
                ut,
                torch.stack(prob_sum).cpu(),
                torch.stack(entropy_sum).cpu(),
                b * t,
                n_synergy,
            )

    def merge(self, other: RoutingStats) -> RoutingStats:
        """Sum of two batches' statistics (same model)."""
        if self.layers != other.layers or self.usage_t.shape != other.usage_t.shape:
            raise ValueError("routing statistics of different layouts cannot be merged")
        return RoutingStats(
            self.layers,
            self.usage + other.usage,
            self.usage_t + other.usage_t,
            self.prob_sum + other.prob_sum,
            self.entropy_sum + other.entropy_sum,
            self.n_tokens + other.n_tokens,
            self.n_synergy,
        )

    @property
    def prob_mean(self) -> Tensor:
        """[L, M, E] mean router probability."""
        return self.prob_sum / self.n_tokens

    @property
    def entropy(self) -> Tensor:
        """[L, M] mean router entropy (nats)."""
        return self.entropy_sum / self.n_tokens

    def to_dict(self, modality_names: Sequence[str] | None = None) -> dict[str, Any]:
        return {
            "layers": self.layers,
            "modalities": list(modality_names) if modality_names is not None else None,
            "n_tokens": self.n_tokens,
            "n_synergy": self.n_synergy,
            "usage": self.usage.tolist(),
            "usage_fraction": (self.usage / self.usage.sum(-1, keepdim=True).clamp_min(1)).tolist(),
            "prob_mean": self.prob_mean.tolist(),
            "entropy": self.entropy.tolist(),
        }


def regime_masks(rus: RusPrior, cfg: LossConfig) -> dict[str, Tensor]:
    """Token regimes [M, T] bool: the token of modality m at step t is
    redundancy if some partner j has R[m, j, t] > tau_r, uniqueness if U[m, t] > tau_u,
    synergy if some partner has S[m, j, t] > tau_s, none if none of these (they may overlap)."""
    red = (cfg.tau_r < rus.R).any(dim=1)
    uni = cfg.tau_u < rus.U
    syn = (cfg.tau_s < rus.S).any(dim=1)
    return {"redundancy": red, "uniqueness": uni, "synergy": syn, "none": ~(red | uni | syn)}


def _usage_summary(counts_le: Tensor, n_syn: int) -> dict[str, Any]:
    """Top-k assignment counts [L, E] as JSON: total, usage fractions overall and per layer, and
    the share that went to the first n_syn (synergy) experts."""
    total = counts_le.sum()
    per_layer = counts_le / counts_le.sum(-1, keepdim=True).clamp_min(1)
    overall = counts_le.sum(0) / total.clamp_min(1)
    return {
        "assignments": float(total),
        "usage": overall.tolist(),
        "usage_per_layer": per_layer.tolist(),
        "synergy_share": float(overall[:n_syn].sum()) if n_syn else 0.0,
    }


def _modality_names(stats: RoutingStats, rus: RusPrior, modality_names: Sequence[str] | None) -> list[str]:
    """The names given, else the prior's, else the modality indices as strings."""
    if modality_names is not None:
        return list(modality_names)
    if rus.modality_names:
        return list(rus.modality_names)
    return [str(m) for m in range(stats.usage.shape[1])]


def _regime_usage(stats: RoutingStats, masks: dict[str, Tensor]) -> dict[str, Any]:
    """Per token regime (masks [M, T] bool): its number of cells and the usage of its tokens."""
    regimes = {}
    for name, mask in masks.items():
        counts = (stats.usage_t * mask[None, :, :, None].to(stats.usage_t.dtype)).sum(dim=(1, 2))  # [L, E]
        regimes[name] = {"steps": int(mask.sum()), **_usage_summary(counts, stats.n_synergy)}
    return regimes


def _pair_usage(stats: RoutingStats, rus: RusPrior, cfg: LossConfig, names: list[str]) -> dict[str, Any]:
    """Per modality pair "a|b": usage of both modalities' tokens at the steps where the pair is
    redundant (R > tau_r), unique (both U > tau_u) or synergistic (S > tau_s)."""
    t = stats.usage_t.shape[2]
    pairs = {}
    m_count = stats.usage.shape[1]
    for i in range(m_count):
        for j in range(i + 1, m_count):
            cells = {  # [T] bool each
                "redundancy": rus.R[i, j, :t] > cfg.tau_r,
                "uniqueness": (rus.U[i, :t] > cfg.tau_u) & (rus.U[j, :t] > cfg.tau_u),
                "synergy": rus.S[i, j, :t] > cfg.tau_s,
            }
            both = stats.usage_t[:, i] + stats.usage_t[:, j]  # [L, T, E]
            pairs[f"{names[i]}|{names[j]}"] = {
                name: {
                    "steps": int(mask.sum()),
                    **_usage_summary((both * mask[None, :, None].to(both.dtype)).sum(1), stats.n_synergy),
                }
                for name, mask in cells.items()
            }
    return pairs


def interaction_regime_usage(
    stats: RoutingStats, rus: RusPrior, cfg: LossConfig, modality_names: Sequence[str] | None = None
) -> dict[str, Any]:
    """Expert usage per modality, per token regime and per modality pair, JSON-ready.

    regimes: for each token regime (see `regime_masks`) the number of (modality, step) cells in it,
    its top-k assignments, expert usage fractions overall and per layer, and the share of
    assignments that went to synergy experts. pairs: the same for the tokens of both modalities of
    a pair at the steps where the pair is redundant (R > tau_r), unique (both U > tau_u) or
    synergistic (S > tau_s), i.e. exactly the cells each auxiliary loss acts on.
    """
    t = stats.usage_t.shape[2]  # steps of the prior beyond the routed tokens are left out
    masks = {k: v[:, :t] for k, v in regime_masks(rus, cfg).items()}
    names = _modality_names(stats, rus, modality_names)
    return {
        "thresholds": {"tau_r": cfg.tau_r, "tau_u": cfg.tau_u, "tau_s": cfg.tau_s},
        "layers": stats.layers,
        "n_experts": stats.usage.shape[-1],
        "n_synergy": stats.n_synergy,
        "per_modality": {n: _usage_summary(stats.usage[:, m], stats.n_synergy) for m, n in enumerate(names)},
        "regimes": _regime_usage(stats, masks),
        "pairs": _pair_usage(stats, rus, cfg, names),
    }
