"""Multi-scale BATCH (one model, all lags) vs per-lag BATCH on the synthetic ground truth.

For each process (continuous version, lags 0–4) prints: per-lag BATCH total time, multi-scale time
at steps_factor 1 (the paper's τ-fold saving) and at steps_factor = number of lags (same compute),
their speed ratios, the largest |multi-scale − per-lag| over lags and components, and whether each
finds the ground-truth component at the ground-truth lag.

    python benchmarks/bench_multiscale.py [--out results/checks/estimator_check.csv]

--out also writes every estimate (process, steps_factor, lag, component, per_lag, multiscale; bits),
the input of the report's claim "multi-scale estimates ≈ per-lag ones" (`timoe evaluate --checks`).
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
import polars as pl
import torch

from timoe.config import BatchEstimatorConfig
from timoe.interactions.batch import BatchPID, batch_pid
from timoe.interactions.multiscale import LagSamples, multiscale_pid
from timoe.interactions.synthetic import finds_ground_truth, lag_sample_sets, make_process

LAGS = [0, 1, 2, 3, 4]
COMPS = ("R", "U1", "U2", "S")
CFG = BatchEstimatorConfig(discrim_epochs=10, align_epochs=5, sinkhorn_tol=1e-3)


def lag_samples(name: str) -> tuple[dict[int, LagSamples], dict[int, str]]:
    task = make_process(name, continuous=True, n_windows=60, window=64, seed=0)
    return lag_sample_sets(task, LAGS), task.dominant


def found(est: dict[int, BatchPID], dominant: dict[int, str]) -> bool:
    return finds_ground_truth({lag: e.row() for lag, e in est.items()}, dominant)


def max_diff(a: dict[int, BatchPID], b: dict[int, BatchPID]) -> float:
    return max(abs(a[lag].row()[k] - b[lag].row()[k]) for lag in a for k in COMPS)


def estimate_rows(
    name: str, factor: int, ms: dict[int, BatchPID], per_lag: dict[int, BatchPID]
) -> list[dict]:
    """One row per lag × component: the per-lag and the multi-scale estimate (bits)."""
    return [
        {"dataset": "synthetic-processes", "process": name, "steps_factor": factor, "lag": lag,
         "component": k, "per_lag": per_lag[lag].row()[k], "multiscale": ms[lag].row()[k]}
        for lag in per_lag
        for k in COMPS
    ]


def main(out: Path | None = None) -> None:
    rows: list[dict] = []
    print(f"load average before start: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs; "
          f"{len(LAGS)} lags, ~3800 samples per lag")
    for name in ("synergy_lag1", "unique_lag2", "redundancy_lag3"):
        samples, dominant = lag_samples(name)
        t0 = time.perf_counter()
        per_lag = {lag: batch_pid(s.x1, s.x2, s.y, CFG, seed=0) for lag, s in samples.items()}
        t_per = time.perf_counter() - t0
        line = f"{name:16s} per-lag {t_per:6.1f} s (found {found(per_lag, dominant)})"
        for factor in (1, len(LAGS)):
            t0 = time.perf_counter()
            ms = multiscale_pid(samples, CFG, steps_factor=factor, seed=0)
            t_ms = time.perf_counter() - t0
            rows += estimate_rows(name, factor, ms, per_lag)
            line += (f" | multi-scale x{factor}: {t_ms:5.1f} s, speed-up {t_per / t_ms:4.1f}x, "
                     f"max|diff| {max_diff(ms, per_lag):.3f} bits, found {found(ms, dominant)}")
        print(line, flush=True)
        dom_lag, comp = next(iter(dominant.items()))
        print(f"{'':16s} {comp} at lag {dom_lag}: per-lag {per_lag[dom_lag].row()[comp]:.3f}", flush=True)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        pl.DataFrame(rows).write_csv(out)
        print(f"estimates: {out}")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=None, help="CSV of every estimate (estimator_check.csv)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    np.set_printoptions(precision=3)
    main(args.out)
