"""Stacked per-lag BATCH: independent per-lag networks in one pass, same estimates as batch_pid."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from timoe.config import BatchEstimatorConfig
from timoe.interactions._samples import step_index
from timoe.interactions.batch import batch_pid
from timoe.interactions.lagstack import StackedMLP, stacked_pid
from timoe.interactions.multiscale import LagSamples
from timoe.interactions.synthetic import make_process

FAST = BatchEstimatorConfig(discrim_epochs=20, align_epochs=6, batch_size=256, sinkhorn_tol=1e-3)


def _lag_samples(name: str, lags: list[int]) -> dict[int, LagSamples]:
    task = make_process(name, continuous=True, n_windows=40, window=48, seed=0)
    out = {}
    for lag in lags:
        wi, ti = step_index(task.step_labels, lag, False, 10**9, 0)
        src = task.x[wi, ti - lag]
        out[lag] = LagSamples(src[:, :2], src[:, 2:], task.step_labels[wi, ti])
    return out


def test_stacked_mlp_runs_each_lag_on_its_own_weights() -> None:
    torch.manual_seed(0)
    net = StackedMLP(3, 4, 8, 5)
    x = torch.randn(3, 10, 4)
    full = net(x)
    for lag in range(3):
        torch.testing.assert_close(net(x[lag : lag + 1], lag)[0], full[lag])
    full.sum().backward()  # gradients reach every lag's slice of every layer
    assert all(bool((p.grad.flatten(1).abs().sum(1) > 0).all()) for p in net.weights)


def test_stacked_matches_per_lag_batch_on_synergy_at_lag_one() -> None:
    samples = _lag_samples("synergy_lag1", [0, 1, 2])
    res = stacked_pid(samples, FAST, seed=0)
    assert set(res) == {0, 1, 2}
    assert res[1].synergy > 0.6 and max(res[0].synergy, res[2].synergy) < 0.1
    per_lag = batch_pid(samples[1].x1, samples[1].x2, samples[1].y, FAST, seed=0)
    assert abs(res[1].synergy - per_lag.synergy) < 0.1
    again = stacked_pid(samples, FAST, seed=0)
    assert [r.row() for r in again.values()] == [r.row() for r in res.values()]  # seeded on CPU


def test_stacked_gives_the_conditional_pid_with_context() -> None:
    rng = np.random.default_rng(4)
    n = 1500

    def lag(seed: int) -> LagSamples:
        r = np.random.default_rng(seed)
        s, a, b = r.integers(0, 2, n), r.integers(0, 2, n), r.integers(0, 2, n)
        emb = lambda v: np.eye(2)[v] + 0.2 * rng.standard_normal((n, 2))  # noqa: E731
        return LagSamples(emb(a), emb(b), a ^ s, s)

    res = stacked_pid({0: lag(0), 1: lag(1)}, FAST, seed=0)
    for r in res.values():
        assert r.unique1 == pytest.approx(1.0, abs=0.15) and r.synergy < 0.1


def test_stacked_needs_equal_widths() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 64)
    bad = {
        0: LagSamples(rng.normal(size=(64, 2)), rng.normal(size=(64, 2)), y),
        1: LagSamples(rng.normal(size=(64, 3)), rng.normal(size=(64, 2)), y),
    }
    with pytest.raises(ValueError, match="same x1, x2 widths"):
        stacked_pid(bad, FAST)
