"""The check stage: estimator checks on data with known RUS, whose tables the evaluate stage's
claims read (results/checks/).

estimator_check.csv: the multi-scale estimator against per-lag BATCH on synthetic processes
(timoe.interactions.estimator_check; settings under `checks.estimator`), the input of the claim
"multi-scale estimates equal per-lag ones".
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import polars as pl

from timoe.atomic import atomic_dir
from timoe.config import Params
from timoe.stage_specs import recorded_config
from timoe.tracking import experiment_name, log_artifacts_from, tracked_run

ESTIMATOR_CHECK = "estimator_check.csv"  # the name timoe.evaluation.claims.CHECK_FILES reads


def run_check(params: Params, *, out_dir: Path) -> dict[str, Any]:
    """Write estimator_check.csv into out_dir atomically; the summary (rows, largest |diff| per
    steps factor in bits, seconds)."""
    import mlflow

    from timoe.interactions.estimator_check import COLUMNS, estimator_check_rows

    cfg = params.checks.estimator
    with (
        atomic_dir(out_dir) as tmp,
        tracked_run(
            uri=params.tracking.uri,
            experiment=experiment_name(params.tracking.experiment_prefix, "check", None),
            stage="check",
            full_params=params.model_dump(),
            config=recorded_config(params, "check"),
            out_dir=tmp,
            seed=cfg.seed,
            run_name="check",
        ),
    ):
        start = time.perf_counter()
        table = pl.DataFrame(estimator_check_rows(cfg)).select(COLUMNS)
        seconds = time.perf_counter() - start
        table.write_csv(tmp / ESTIMATOR_CHECK)
        worst = (
            table.group_by("steps_factor")
            .agg((pl.col("multiscale") - pl.col("per_lag")).abs().max().alias("max_abs_diff"))
            .sort("steps_factor")
        )
        summary = {
            "rows": table.height,
            "seconds": seconds,
            "max_abs_diff_bits": dict(zip(worst["steps_factor"], worst["max_abs_diff"], strict=True)),
        }
        mlflow.log_metrics(
            {"seconds": seconds}
            | {f"max_abs_diff_x{f}": float(v) for f, v in summary["max_abs_diff_bits"].items()}
        )
        log_artifacts_from([tmp / ESTIMATOR_CHECK])
    return summary
