"""Routing diagnostics that entropy alone cannot give (method.md section 5).

Per MoE layer, accumulated over batches (sums, so batches merge by addition):
- n_eff = exp(H(expert share of the top-k assignments)): 1 = collapsed onto one expert, E = all
  used equally (by volume; says nothing about content).
- MI(top-1 expert; class) in bits: does the choice of expert carry information about the label?
  The token's class is its window's label.
- MI(top-1 expert; regime) in bits, where a true regime is known (synthetic-regimes).
- top-k overlap: mean over modality pairs and steps of |topk(m1) ∩ topk(m2)| / k, i.e. how often
  paired modalities share experts (what L_R pulls up and L_U pushes down).
- synergy share: share of all top-k assignments that go to synergy experts; and, where a prior
  is given, the same share restricted to the tokens of pairs whose prior says synergy
  (weight > 0.5), which is what L_S asks for.
Chance levels: synergy share n_syn / E; top-k overlap k / E for independent uniform choices.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from timoe.models.prior import BatchPrior
from timoe.models.routers import Router, RouterOutput


def mutual_information_bits(joint: Tensor) -> float:
    """MI in bits of a joint count table [A, B]."""
    total = float(joint.sum())
    if total <= 0:
        return 0.0
    p = joint.double() / total
    pa, pb = p.sum(1, keepdim=True), p.sum(0, keepdim=True)
    nz = p > 0
    return float((p[nz] * (p[nz] / (pa @ pb)[nz]).log2()).sum())


def effective_experts(counts: Tensor) -> float:
    """exp of the entropy (nats) of the share of assignments per expert. counts [E]."""
    share = counts.double() / counts.sum().clamp_min(1)
    nz = share > 0
    return float(math.exp(-(share[nz] * share[nz].log()).sum()))


def topk_overlap(topk_idx: Tensor, n_experts: int) -> tuple[float, int]:
    """Sum over (b, m1<m2, t) of |topk(m1) ∩ topk(m2)| / k and the number of such cells.
    topk_idx [B, M, T, k]."""
    b, m, t, k = topk_idx.shape
    if m < 2:
        return 0.0, 0
    sel = torch.zeros(b, m, t, n_experts, device=topk_idx.device).scatter_(-1, topk_idx, 1.0)
    i, j = torch.triu_indices(m, m, offset=1, device=topk_idx.device)
    shared = (sel[:, i] * sel[:, j]).sum(-1) / k  # [B, P, T]
    return float(shared.sum()), shared.numel()


@dataclass
class LayerAccumulator:
    n_experts: int
    n_classes: int
    n_regimes: int
    usage: Tensor = field(init=False)
    expert_class: Tensor = field(init=False)
    expert_regime: Tensor = field(init=False)
    overlap_sum: float = 0.0
    overlap_cells: int = 0
    synergy_hits: float = 0.0
    synergy_cells: int = 0
    assignments: int = 0

    def __post_init__(self) -> None:
        self.usage = torch.zeros(self.n_experts, dtype=torch.float64)
        self.expert_class = torch.zeros(self.n_experts, self.n_classes, dtype=torch.float64)
        self.expert_regime = torch.zeros(self.n_experts, max(1, self.n_regimes), dtype=torch.float64)


class RoutingDiagnostics:
    """Accumulates the diagnostics of the module docstring over batches, per MoE layer."""

    def __init__(
        self, layers: Sequence[int], n_experts: int, n_synergy: int, n_classes: int, n_regimes: int = 0
    ) -> None:
        self.layers = list(layers)
        self.n_experts = n_experts
        self.n_synergy = n_synergy
        self.n_regimes = n_regimes
        self.acc = [LayerAccumulator(n_experts, n_classes, n_regimes) for _ in self.layers]

    @torch.no_grad()
    def update(
        self,
        routes: Sequence[RouterOutput],
        labels: Tensor,
        regime: Tensor | None = None,
        prior: BatchPrior | None = None,
        synergy_tau: float | None = None,
    ) -> None:
        """routes: one per layer (topk_idx [B, M, T, k]); labels [B]; regime [B] or None."""
        for acc, route in zip(self.acc, routes, strict=True):
            idx = route.topk_idx.cpu()
            b, m, _t, _k = idx.shape
            acc.usage += torch.bincount(idx.reshape(-1), minlength=self.n_experts).double()
            acc.assignments += idx.numel()
            top1 = idx[..., 0].reshape(b, -1)  # [B, M*T]
            lab = labels.cpu().long()[:, None].expand_as(top1)
            acc.expert_class.index_put_(
                (top1.reshape(-1), lab.reshape(-1)),
                torch.ones(top1.numel(), dtype=torch.float64),
                accumulate=True,
            )
            if regime is not None and self.n_regimes:
                reg = regime.cpu().long()[:, None].expand_as(top1)
                acc.expert_regime.index_put_(
                    (top1.reshape(-1), reg.reshape(-1)),
                    torch.ones(top1.numel(), dtype=torch.float64),
                    accumulate=True,
                )
            s, n = topk_overlap(idx, self.n_experts)
            acc.overlap_sum += s
            acc.overlap_cells += n
            if prior is not None and synergy_tau is not None and self.n_synergy and m > 1:
                self._synergy_cells(acc, idx, prior, synergy_tau)

    def _synergy_cells(self, acc: LayerAccumulator, idx: Tensor, prior: BatchPrior, tau: float) -> None:
        """Share of assignments to synergy experts among tokens of pairs whose prior says synergy."""
        _, m, t, k = idx.shape
        i, j = torch.triu_indices(m, m, offset=1)
        syn_cell = prior.S[..., :t].cpu()[:, i, j] > tau  # [B, P, T]
        on_syn = (idx < self.n_synergy).double().sum(-1)  # [B, M, T] assignments to synergy experts
        hits = (on_syn[:, i] + on_syn[:, j])[syn_cell]
        acc.synergy_hits += float(hits.sum())
        acc.synergy_cells += int(syn_cell.sum()) * 2 * k

    def summary(self) -> list[dict[str, Any]]:
        """One dict per layer (JSON-ready)."""
        out = []
        for pos, acc in zip(self.layers, self.acc, strict=True):
            out.append(
                {
                    "layer": pos,
                    "n_eff": effective_experts(acc.usage),
                    "mi_expert_class": mutual_information_bits(acc.expert_class),
                    "mi_expert_regime": mutual_information_bits(acc.expert_regime)
                    if self.n_regimes
                    else None,
                    "topk_overlap": acc.overlap_sum / acc.overlap_cells if acc.overlap_cells else None,
                    "synergy_share": float(acc.usage[: self.n_synergy].sum() / max(1, acc.assignments)),
                    "synergy_share_on_synergy_cells": (
                        acc.synergy_hits / acc.synergy_cells if acc.synergy_cells else None
                    ),
                }
            )
        return out

    def flat_metrics(self, prefix: str) -> dict[str, float]:
        """Per-layer values as MLflow metric names, e.g. train_n_eff_l0."""
        flat = {}
        for row in self.summary():
            for key, value in row.items():
                if key != "layer" and value is not None:
                    flat[f"{prefix}{key}_l{row['layer']}"] = float(value)
        return flat


@contextmanager
def random_routing(model: nn.Module, seed: int = 0):
    """Within the block every router picks k distinct experts uniformly at random per token, with
    equal weights (test-time ablation: how much accuracy does the learned routing carry?)."""
    routers = [mod for mod in model.modules() if isinstance(mod, Router)]
    gen = torch.Generator().manual_seed(seed)
    for r in routers:
        r.random_generator = gen
    try:
        yield
    finally:
        for r in routers:
            r.random_generator = None


@contextmanager
def synergy_experts_disabled(model: nn.Module, n_synergy: int):
    """Within the block no router may pick the first n_synergy experts (the synergy experts): their
    logits are masked before top-k, so every token still gets k experts, chosen among the others,
    with mixing weights renormalised over them (test-time ablation: what do the synergy experts do
    that the others cannot?). Routers that bypass logits (hash) are not affected."""
    routers = [mod for mod in model.modules() if isinstance(mod, Router)]
    for r in routers:
        if r.n_experts - n_synergy < r.top_k:
            raise ValueError(
                f"cannot disable {n_synergy} of {r.n_experts} experts with top_k={r.top_k}: too few remain"
            )
        mask = torch.zeros(r.n_experts, dtype=torch.bool)
        mask[:n_synergy] = True
        r.disabled_experts = mask
    try:
        yield
    finally:
        for r in routers:
            r.disabled_experts = None


def window_synergy(prior: BatchPrior) -> Tensor:
    """Each window's largest synergy over modality pairs and steps: prior.S [B, M, M, T] -> [B]."""
    return prior.S.flatten(1).amax(dim=1)


def _group(correct: Tensor, correct_off: Tensor) -> dict[str, Any]:
    n = int(correct.numel())
    if n == 0:
        return {"n": 0, "accuracy": None, "accuracy_syn_off": None, "drop": None}
    acc, off = float(correct.double().mean()), float(correct_off.double().mean())
    return {"n": n, "accuracy": acc, "accuracy_syn_off": off, "drop": acc - off}


def synergy_ablation_summary(
    correct: Tensor,
    correct_off: Tensor,
    synergy: Tensor,
    tau: float,
    context: Tensor | None = None,
    regime: Tensor | None = None,
    regime_names: Sequence[str] | None = None,
) -> dict[str, Any]:
    """The accuracy lost when the synergy experts are disabled, on the windows whose prior says
    the most synergy against the others, and per context and true regime when given.

    correct, correct_off [N] bool: each test window classified right with all experts / with the
    synergy experts disabled; synergy [N] its prior's largest S (window_synergy); context, regime
    [N] long or None. Drops are accuracy fractions (all experts minus synergy experts disabled).

    Synergy windows: the top third by the prior's largest S (at or above its 2/3 quantile, ties
    kept together, so a context's windows stay in one group). A rank, not L_S's threshold tau:
    on real data the prior may put no window above tau (the smoke runs' HAPT and BasicMotions
    priors do not), which would leave the comparison empty; how many windows pass tau (what L_S
    acts on) is reported beside it. Neither group is empty unless every window has the same
    prior (a dataset-level table): then there is no synergy group."""
    q = torch.quantile(synergy.double(), 2 / 3, interpolation="lower")
    flagged = synergy >= q
    if bool(flagged.all()):
        flagged = synergy > q  # one prior for every window: no window says more synergy than another
    out: dict[str, Any] = {
        "criterion": "top third of the test windows by the prior's max S over pairs and steps",
        "threshold_s": float(q),
        "tau_s": tau,
        "n_above_tau_s": int((synergy > tau).sum()),
        "all": _group(correct, correct_off),
        "synergy": _group(correct[flagged], correct_off[flagged]),
        "other": _group(correct[~flagged], correct_off[~flagged]),
    }
    for key, ids in (("per_context", context), ("per_regime", regime)):
        if ids is None:
            continue
        rows = []
        for k in sorted(set(ids.tolist())):
            sel = ids == k
            row = {
                "id": int(k),
                "max_synergy": float(synergy[sel].max()),
                **_group(correct[sel], correct_off[sel]),
            }
            if key == "per_regime" and regime_names is not None and k < len(regime_names):
                row["name"] = regime_names[k]
            rows.append(row)
        out[key] = rows
    return out
