"""Where the models stand: each model's test accuracy, and its gap to the reference model.

Design: the same paired hierarchical bootstrap as the claims (evaluation.bootstrap: test subjects
× seeds resampled, the model and the reference together, t reference with Satterthwaite df). A
model's level is the bootstrap of its own accuracy (the difference to a zero model), so its
interval counts both the seed spread and the spread over test subjects. Intervals are two-sided
95 %: this section describes levels, it tests nothing.
"""

from __future__ import annotations

import zlib

import numpy as np
import polars as pl

from timoe.config import REFERENCE_MODELS
from timoe.evaluation.bootstrap import Cells, cells_from_scores, hierarchical_bootstrap
from timoe.evaluation.stats import t_interval

REFERENCE = REFERENCE_MODELS[0]  # minirocket: the row every other model is measured against
LEVEL = 0.95
_COLUMNS = {
    "dataset": pl.String,
    "model": pl.String,
    "n_seeds": pl.Int64,
    "n_subjects": pl.Int64,
    "value": pl.Float64,
    "low": pl.Float64,
    "high": pl.Float64,
}


def _seed(settings_seed: int, what: str) -> list[int]:
    return [settings_seed, zlib.crc32(what.encode())]  # one stream per row, fixed by its name


def _row(ds: str, model: str, cells: Cells, resamples: int, seed: int, what: str) -> dict[str, object]:
    res = hierarchical_bootstrap(cells, resamples, _seed(seed, f"{what}/{ds}/{model}"))
    low, high = t_interval(res.estimate, res.se, res.df, LEVEL)
    return {
        "dataset": ds,
        "model": model,
        "n_seeds": res.n_seeds,
        "n_subjects": res.n_subjects,
        "value": 100 * res.estimate,
        "low": 100 * low,
        "high": 100 * high,
    }


def accuracy_levels(scores: pl.DataFrame, resamples: int, seed: int) -> pl.DataFrame:
    """Per data set × model: pooled test accuracy (%) with its 95 % interval over subjects × seeds.

    scores: the evaluate stage's per (dataset, model, seed, subject) table (columns n, correct).
    """
    rows = []
    for (ds, model), sub in scores.group_by(["dataset", "model"], maintain_order=True):
        cells = cells_from_scores(sub, str(model), str(model))  # the model paired with itself
        if isinstance(cells, str):
            continue
        own = Cells(cells.acc_a, np.zeros_like(cells.acc_a), cells.windows, cells.seeds, cells.subjects)
        rows.append(_row(str(ds), str(model), own, resamples, seed, "level"))
    levels = pl.DataFrame(rows, schema=_COLUMNS).sort(["dataset", "model"])
    # an accuracy lies in [0, 100] %: the t interval of a few seeds can reach past either end
    return levels.with_columns(pl.col("low").clip(0.0, 100.0), pl.col("high").clip(0.0, 100.0))


def reference_gaps(scores: pl.DataFrame, resamples: int, seed: int) -> pl.DataFrame:
    """Per data set × model: accuracy minus the reference's (pp), paired by seed and subject,
    with its 95 % interval; data sets without a reference run have no rows."""
    rows = []
    for ds in sorted(scores["dataset"].unique().to_list()):
        sub = scores.filter(pl.col("dataset") == ds)
        models = sorted(set(sub["model"].to_list()) - {REFERENCE})
        if REFERENCE not in set(sub["model"].to_list()):
            continue
        for model in models:
            cells = cells_from_scores(sub, model, REFERENCE)
            if not isinstance(cells, str):
                rows.append(_row(ds, model, cells, resamples, seed, "gap"))
    return pl.DataFrame(rows, schema=_COLUMNS)


def gaps_markdown(gaps: pl.DataFrame, levels: pl.DataFrame) -> str:
    """The "against the reference" table: level of the reference, then each model's gap."""
    if gaps.is_empty():
        return f"_No {REFERENCE} run to compare with (add it to model.names)._"
    ref = {r["dataset"]: r for r in levels.filter(pl.col("model") == REFERENCE).iter_rows(named=True)}
    lines = [
        f"| data set | model | accuracy (%) | − {REFERENCE} (pp) | 95 % CI (pp) | seeds × subjects |",
        "|---|---|---|---|---|---|",
    ]
    acc = {(r["dataset"], r["model"]): r["value"] for r in levels.iter_rows(named=True)}
    for ds in sorted(gaps["dataset"].unique().to_list()):
        r = ref.get(ds)
        if r is not None:
            lines.append(
                f"| {ds} | **{REFERENCE}** (reference) | {r['value']:.2f} | 0 | "
                f"[{r['low']:.2f}, {r['high']:.2f}] % (its level) | {r['n_seeds']} × {r['n_subjects']} |"
            )
        for g in gaps.filter(pl.col("dataset") == ds).sort("value", descending=True).iter_rows(named=True):
            a = acc.get((ds, g["model"]))
            lines.append(
                f"| {ds} | {g['model']} | {'n/a' if a is None else f'{a:.2f}'} | {g['value']:+.2f} | "
                f"[{g['low']:+.2f}, {g['high']:+.2f}] | {g['n_seeds']} × {g['n_subjects']} |"
            )
    return "\n".join(lines)
