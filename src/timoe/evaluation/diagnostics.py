"""Routing diagnostics per run (from routing.json) and their table per model × data set.

Router entropy says little about routing (a router at ln E can still choose experts by content),
so the train stage writes diagnostics that do: the effective number of experts, MI between the
top-1 expert and the class or the true regime, top-k overlap of paired modalities, the share of
synergy experts' share of all assignments and of synergy tokens' assignments, and the accuracy
lost under random routing (timoe.models.diagnostics computes them). routing.json layout (all
optional; a run without them gets nulls):

    "diagnostics": {"per_layer": [{"layer", "n_eff", "mi_expert_class", "mi_expert_regime",
                                   "topk_overlap", "synergy_share",
                                   "synergy_share_on_synergy_cells"}, ...],
                    "random_routing_accuracy", "accuracy", "random_routing_drop"},
    "synergy_chance": share of experts that are synergy experts (chance for both synergy shares),
    "topk_overlap_chance": k / E,
    "regimes": {"synergy": {"steps", "assignments", "synergy_share"}, ...}, "n_synergy", "n_experts",
    "synergy_ablation": {"criterion", "all" | "synergy" | "other": {"n", "accuracy",
                         "accuracy_syn_off", "drop"}, "per_context": [...], "per_regime": [...]}

synergy_ablation (models with a prior): the test accuracy lost when the synergy experts are
disabled (their logits masked, top-k picks among the others), on the windows whose prior says
synergy (the top third by the prior's max S over pairs and steps) and on the others; runs.csv carries
the two drops (fractions) and the two window counts as syn_off_drop_synergy / syn_off_drop_other
and syn_off_n_synergy / syn_off_n_other (null where a group is empty or the model has no prior).
"""

from __future__ import annotations

import math
from typing import Any

import polars as pl

# Per-layer keys, averaged over layers into one value per run.
LAYER_KEYS = (
    "n_eff",
    "mi_expert_class",
    "mi_expert_regime",
    "topk_overlap",
    "synergy_share",
    "synergy_share_on_synergy_cells",
)
RUN_KEYS = ("topk_overlap_chance", "synergy_chance")
# Columns of runs.csv (prefixed so they never clash with a metric or a class name), in table order.
COLUMNS = (
    "diag.n_eff",
    "diag.mi_expert_class",
    "diag.mi_expert_regime",
    "diag.topk_overlap",
    "diag.topk_overlap_chance",
    "diag.synergy_share",
    "diag.synergy_share_on_synergy_cells",
    "diag.synergy_chance",
    "diag.random_routing_drop",
    "syn_off_drop_synergy",
    "syn_off_drop_other",
)
# Window counts behind the two synergy-ablation drops (runs.csv only, not averaged in the table).
ABLATION_COUNTS = ("syn_off_n_synergy", "syn_off_n_other")
# Report headings and how each column is shown: (label, scale, decimals).
DISPLAY = {
    "diag.n_eff": ("n_eff (experts)", 1.0, 2),
    "diag.mi_expert_class": ("MI(top-1; class), bits", 1.0, 3),
    "diag.mi_expert_regime": ("MI(expert; regime), bits", 1.0, 3),
    "diag.topk_overlap": ("top-k overlap", 1.0, 3),
    "diag.topk_overlap_chance": ("overlap chance", 1.0, 3),
    "diag.synergy_share": ("synergy share (all tokens), %", 100.0, 1),
    "diag.synergy_share_on_synergy_cells": ("synergy share (synergy tokens), %", 100.0, 1),
    "diag.synergy_chance": ("synergy chance, %", 100.0, 1),
    "diag.random_routing_drop": ("random-routing drop, pp", 100.0, 2),
    "syn_off_drop_synergy": ("synergy experts off: drop on synergy windows, pp", 100.0, 2),
    "syn_off_drop_other": ("synergy experts off: drop on other windows, pp", 100.0, 2),
}


def _finite(value: Any) -> float | None:
    if value is None:
        return None
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def _layer_mean(per_layer: list[dict[str, Any]], key: str) -> float | None:
    vals = [v for v in (_finite(layer.get(key)) for layer in per_layer) if v is not None]
    return sum(vals) / len(vals) if vals else None


def _fallback_synergy(routing: dict[str, Any]) -> tuple[float | None, float | None]:
    """Synergy tokens' share and chance from the regime summary, when no diagnostics were written.

    regimes.synergy.synergy_share is the share of synergy-regime tokens' assignments that went to
    synergy experts; chance is n_synergy / n_experts. No synergy tokens: no share to report.
    """
    syn = (routing.get("regimes") or {}).get("synergy") or {}
    share = _finite(syn.get("synergy_share")) if (_finite(syn.get("assignments")) or 0) > 0 else None
    n_syn, n_exp = _finite(routing.get("n_synergy")), _finite(routing.get("n_experts"))
    chance = n_syn / n_exp if n_syn is not None and n_exp else None
    return share, chance


def run_diagnostics(routing: dict[str, Any] | None) -> dict[str, float | None]:
    """One run's diagnostics, each a mean over layers; every column present (null when absent)."""
    out: dict[str, float | None] = dict.fromkeys((*COLUMNS, *ABLATION_COUNTS))
    if not routing:
        return out
    ablation = routing.get("synergy_ablation") or {}
    for group in ("synergy", "other"):
        part = ablation.get(group) or {}
        out[f"syn_off_drop_{group}"] = _finite(part.get("drop"))
        out[f"syn_off_n_{group}"] = _finite(part.get("n"))
    diag = routing.get("diagnostics") or {}
    per_layer = diag.get("per_layer") or []
    for key in LAYER_KEYS:
        out[f"diag.{key}"] = _layer_mean(per_layer, key)
    out["diag.random_routing_drop"] = _finite(diag.get("random_routing_drop"))
    for key in RUN_KEYS:
        out[f"diag.{key}"] = _finite(routing.get(key))
    share, chance = _fallback_synergy(routing)
    if out["diag.synergy_share_on_synergy_cells"] is None:
        out["diag.synergy_share_on_synergy_cells"] = share
    if out["diag.synergy_chance"] is None:
        out["diag.synergy_chance"] = chance
    return out


def diagnostics_table(runs: pl.DataFrame) -> pl.DataFrame:
    """Mean over seeds of every diagnostic, per data set × model; only models with any diagnostic."""
    cols = [c for c in COLUMNS if c in runs.columns]
    if not cols:
        return pl.DataFrame()
    casted = runs.with_columns([pl.col(c).cast(pl.Float64) for c in cols])
    table = casted.group_by(["dataset", "model"]).agg(
        [pl.len().alias("n_seeds"), *[pl.col(c).mean() for c in cols]]
    )
    has_any = pl.any_horizontal([pl.col(c).is_not_null() for c in cols])
    return table.filter(has_any).sort(["dataset", "model"])


def diagnostics_markdown(table: pl.DataFrame) -> str:
    if table.is_empty():
        return "No routing diagnostics: no run wrote routing.json with diagnostics (dense models have none)."
    cols = [c for c in COLUMNS if c in table.columns]
    head = "| data set | model | seeds | " + " | ".join(DISPLAY[c][0] for c in cols) + " |"
    lines = [head, "|---|---|---|" + "---|" * len(cols)]
    for r in table.iter_rows(named=True):
        cells = []
        for c in cols:
            _, scale, dec = DISPLAY[c]
            cells.append("n/a" if r[c] is None else f"{scale * r[c]:.{dec}f}")
        lines.append(f"| {r['dataset']} | {r['model']} | {r['n_seeds']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
