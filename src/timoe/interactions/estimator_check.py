"""The multi-scale estimator against per-lag BATCH on synthetic processes whose RUS is known.

One table, shared by the pipeline's check stage (timoe.stages.check) and
benchmarks/bench_multiscale.py: per process, lag and component (R, U1, U2, S), the per-lag BATCH
estimate (seed `seed`) and the multi-scale one (one model for every lag) at each steps factor, in
bits. The report's claim "multi-scale estimates equal per-lag ones" reads it
(timoe.evaluation.claims, source estimator_check).

Schema (one row per process × steps_factor × lag × component):
    dataset "synthetic-processes", process, steps_factor, lag, component, per_lag, multiscale
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from timoe.config import BatchEstimatorConfig, EstimatorCheckConfig
from timoe.interactions.batch import BatchPID, batch_pid
from timoe.interactions.multiscale import LagSamples, multiscale_pid
from timoe.interactions.synthetic import lag_sample_sets, make_process

DATASET = "synthetic-processes"  # the claim's data set name for these rows
COMPONENTS = ("R", "U1", "U2", "S")
COLUMNS = ("dataset", "process", "steps_factor", "lag", "component", "per_lag", "multiscale")


def process_samples(
    name: str, lags: Sequence[int], *, n_windows: int, window: int, seed: int = 0
) -> tuple[dict[int, LagSamples], dict[int, str]]:
    """The (X1_{t-lag}, X2_{t-lag}, Y_t) samples of a continuous synthetic process per lag, and its
    dominant component per lag (the ground truth)."""
    task = make_process(name, continuous=True, seed=seed, n_windows=n_windows, window=window)
    return lag_sample_sets(task, list(lags)), task.dominant


def per_lag_estimates(
    samples: Mapping[int, LagSamples], cfg: BatchEstimatorConfig, seed: int = 0, device: str = "auto"
) -> dict[int, BatchPID]:
    """One BATCH fit per lag: the reference the multi-scale model is compared with."""
    return {lag: batch_pid(x.x1, x.x2, x.y, cfg, seed=seed, device=device) for lag, x in samples.items()}


def estimate_rows(
    name: str, factor: int, multiscale: Mapping[int, BatchPID], per_lag: Mapping[int, BatchPID]
) -> list[dict[str, Any]]:
    """One row per lag × component: the per-lag and the multi-scale estimate (bits)."""
    return [
        {
            "dataset": DATASET,
            "process": name,
            "steps_factor": factor,
            "lag": lag,
            "component": k,
            "per_lag": per_lag[lag].row()[k],
            "multiscale": multiscale[lag].row()[k],
        }
        for lag in per_lag
        for k in COMPONENTS
    ]


def estimator_check_rows(cfg: EstimatorCheckConfig) -> list[dict[str, Any]]:
    """Every row of the check table (module docstring) for these settings; deterministic for a
    given seed on one CPU (both estimators run on the CPU, one torch thread: a check of a few
    minutes gains nothing from a GPU and would lose its reproducibility)."""
    lags = list(range(cfg.n_lags))
    rows: list[dict[str, Any]] = []
    for name in cfg.processes:
        samples, _ = process_samples(name, lags, n_windows=cfg.n_windows, window=cfg.window, seed=cfg.seed)
        per_lag = per_lag_estimates(samples, cfg.batch, seed=cfg.seed, device="cpu")
        for factor in cfg.steps_factors:
            ms = multiscale_pid(samples, cfg.batch, steps_factor=factor, seed=cfg.seed, device="cpu")
            rows += estimate_rows(name, factor, ms, per_lag)
    return rows
