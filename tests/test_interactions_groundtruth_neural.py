"""BATCH and multi-scale BATCH on the ground-truth temporal test bed (continuous versions).

Tolerance (timoe.interactions.synthetic.finds_ground_truth): at the lag that carries the
interaction its component is the largest and >= 0.5 bit; at every other lag all components stay
below 0.1 bit. Multi-scale is run at the same compute as the per-lag fits (steps_factor = number of
lags): at the paper's tau-fold saving (steps_factor 1) it misses, see benchmarks/bench_multiscale.py.
"""

from __future__ import annotations

import pytest

from timoe.config import BatchEstimatorConfig
from timoe.interactions.batch import batch_pid
from timoe.interactions.multiscale import LagSamples, multiscale_pid
from timoe.interactions.synthetic import finds_ground_truth, lag_sample_sets, make_process

LAGS = [0, 1, 2, 3]
CFG = BatchEstimatorConfig(discrim_epochs=10, align_epochs=5, sinkhorn_tol=1e-3)
pytestmark = pytest.mark.slow


def _samples(name: str) -> tuple[dict[int, LagSamples], dict[int, str]]:
    task = make_process(name, continuous=True, n_windows=60, window=64, seed=0)
    return lag_sample_sets(task, LAGS), task.dominant


@pytest.mark.parametrize("name", ["synergy_lag1", "unique_lag2", "redundancy_lag3"])
def test_batch_and_multiscale_find_the_right_component_at_the_right_lag(name: str) -> None:
    samples, dominant = _samples(name)
    per_lag = {lag: batch_pid(s.x1, s.x2, s.y, CFG, seed=0).row() for lag, s in samples.items()}
    assert finds_ground_truth(per_lag, dominant), per_lag
    multi = multiscale_pid(samples, CFG, steps_factor=len(LAGS), seed=0)
    rows = {lag: e.row() for lag, e in multi.items()}
    assert finds_ground_truth(rows, dominant), rows
