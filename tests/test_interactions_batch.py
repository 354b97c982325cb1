"""BATCH and multi-scale BATCH: Sinkhorn, canonical cases in continuous noise, context, temporal wiring."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from timoe.config import BatchEstimatorConfig, RusConfig
from timoe.interactions._samples import step_index
from timoe.interactions.batch import batch_pid, sinkhorn
from timoe.interactions.exact import exact_pid, joint_counts
from timoe.interactions.multiscale import LagSamples, multiscale_pid
from timoe.interactions.synthetic import make_process
from timoe.interactions.temporal import COLUMNS, compute_temporal_rus

FAST = BatchEstimatorConfig(discrim_epochs=20, align_epochs=6, batch_size=256, sinkhorn_tol=1e-3)
COMPS = ("R", "U1", "U2", "S")


def _embed(rng: np.random.Generator, s: np.ndarray, k: int, noise: float = 0.2) -> np.ndarray:
    return np.eye(k)[s] + noise * rng.standard_normal((len(s), k))


def test_sinkhorn_is_batched_over_classes_and_hits_the_marginals() -> None:
    gen = torch.Generator().manual_seed(0)
    log_a = torch.randn(40, 30, 5, generator=gen, dtype=torch.float64)
    r = torch.rand(40, 5, generator=gen, dtype=torch.float64) + 0.1
    c = torch.rand(30, 5, generator=gen, dtype=torch.float64) + 0.1
    c = c * r.sum(0) / c.sum(0)
    log_q, used = sinkhorn(log_a, r.log(), c.log(), 500, 1e-10)
    q = log_q.exp()
    assert used < 500
    torch.testing.assert_close(q.sum(1), r, atol=1e-12, rtol=0)  # rows exact (last step)
    torch.testing.assert_close(q.sum(0), c, atol=1e-9, rtol=0)
    for k in range(5):  # the same as solving each class slice on its own
        one, _ = sinkhorn(log_a[..., k : k + 1], r[:, k : k + 1].log(), c[:, k : k + 1].log(), 500, 1e-10)
        torch.testing.assert_close(one[..., 0].exp(), q[..., k], atol=1e-8, rtol=0)


def test_batch_on_xor_and_copy_in_noise_is_seeded() -> None:
    rng = np.random.default_rng(0)
    n = 2000
    a, b, c = rng.integers(0, 2, n), rng.integers(0, 2, n), rng.integers(0, 3, n)
    xor = batch_pid(_embed(rng, a, 2), _embed(rng, b, 2), a ^ b, FAST, device="cpu", seed=1)
    assert xor.synergy == pytest.approx(1.0, abs=0.12) and max(xor.redundancy, xor.unique1) < 0.05
    copy = batch_pid(_embed(rng, c, 3), _embed(rng, b, 2), c, FAST, device="cpu", seed=1)
    assert copy.unique1 == pytest.approx(math.log2(3), abs=0.15) and copy.synergy < 0.05
    assert xor.n_samples == n and xor.sinkhorn_iters >= 1


def test_batch_is_deterministic_on_cpu() -> None:
    rng = np.random.default_rng(2)
    a, b = rng.integers(0, 2, 600), rng.integers(0, 2, 600)
    x1, x2 = _embed(rng, a, 2), _embed(rng, b, 2)
    cfg = BatchEstimatorConfig(discrim_epochs=3, align_epochs=2, batch_size=128)
    r1 = batch_pid(x1, x2, a & b, cfg, seed=3)
    r2 = batch_pid(x1, x2, a & b, cfg, seed=3)
    assert r1.row() == r2.row()


def test_context_gives_the_conditional_pid() -> None:
    rng = np.random.default_rng(4)
    n = 1500
    s, a, b = rng.integers(0, 2, n), rng.integers(0, 2, n), rng.integers(0, 2, n)
    y = a ^ s  # X1 says nothing about Y alone, everything once the stratum is known
    plain = batch_pid(_embed(rng, a, 2), _embed(rng, b, 2), y, FAST, seed=0)
    cond = batch_pid(_embed(rng, a, 2), _embed(rng, b, 2), y, FAST, context=s, seed=0)
    assert plain.total < 0.05
    assert cond.unique1 == pytest.approx(1.0, abs=0.15) and cond.synergy < 0.1


@pytest.mark.slow
def test_batch_mae_on_canonical_cases() -> None:
    """Target: MAE ≤ 0.05 bits per component over XOR, AND, copy and X1 = X2 = Y in noise."""
    rng = np.random.default_rng(0)
    n = 2000
    a, b, c = rng.integers(0, 2, n), rng.integers(0, 2, n), rng.integers(0, 3, n)
    cases = [(a, b, a ^ b, 2, 2), (a, b, a & b, 2, 2), (c, b, c, 3, 2), (c, c, c, 3, 3)]
    cfg = BatchEstimatorConfig(align_epochs=10, sinkhorn_tol=1e-3)
    errors = []
    for s1, s2, y, k1, k2 in cases:
        truth = exact_pid(joint_counts(s1, s2, y, (k1, k2, int(y.max()) + 1))).row(0)
        est = batch_pid(_embed(rng, s1, k1), _embed(rng, s2, k2), y, cfg, seed=0).row()
        errors.append([abs(est[k] - truth[k]) for k in COMPS])
    mae = np.mean(errors, axis=0)
    assert (mae <= 0.05).all(), dict(zip(COMPS, mae, strict=True))


def _lag_samples(name: str, lags: list[int]) -> dict[int, LagSamples]:
    task = make_process(name, continuous=True, n_windows=40, window=48, seed=0)
    out = {}
    for lag in lags:
        wi, ti = step_index(task.step_labels, lag, False, 10**9, 0)
        src = task.x[wi, ti - lag]
        out[lag] = LagSamples(src[:, :2], src[:, 2:], task.step_labels[wi, ti])
    return out


def test_multiscale_finds_synergy_at_lag_one_with_full_budget() -> None:
    lags = [0, 1, 2]
    res = multiscale_pid(_lag_samples("synergy_lag1", lags), FAST, steps_factor=len(lags), seed=0)
    assert set(res) == set(lags)
    assert res[1].synergy > 0.6 and max(res[0].synergy, res[2].synergy) < 0.1
    assert max(r.redundancy for r in res.values()) < 0.05


def test_temporal_rus_with_neural_estimators() -> None:
    task = make_process("unique_lag2", continuous=True, n_windows=60, window=48, seed=5)
    for est in ("batch", "multiscale", "stacked"):
        cfg = RusConfig(
            estimator=est,
            lags=[0, 2],
            batch=BatchEstimatorConfig(discrim_epochs=20, align_epochs=2, sinkhorn_tol=1e-3),
        )
        df = compute_temporal_rus(task.x, task.step_labels, task.modalities, cfg)
        assert df.columns == list(COLUMNS) and set(df["estimator"]) == {est}
        assert set(df["form"]) == {"directed"} and df["pair"].to_list() == ["a|b", "a|b"]
        by_lag = {r["lag"]: r for r in df.iter_rows(named=True)}
        assert by_lag[2]["U1"] > 1.0 and by_lag[0]["U1"] < 0.1
