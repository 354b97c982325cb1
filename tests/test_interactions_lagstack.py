"""Stacked per-lag BATCH: independent per-lag networks in one pass, same estimates as batch_pid."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from timoe.config import BatchEstimatorConfig
from timoe.interactions._samples import step_index
from timoe.interactions.batch import batch_pid
from timoe.interactions.lagstack import StackedMLP, _NetAdam, stacked_pid
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


def test_net_adam_is_torch_adam_per_network_and_idle_networks_stay() -> None:
    torch.manual_seed(0)
    w = torch.randn(3, 4, 5, requires_grad=True)
    ref = w.detach().clone().requires_grad_()
    torch_opt, opt = torch.optim.Adam([ref], lr=0.01), _NetAdam([w], 0.01)
    for _ in range(3):  # all active: torch's Adam, step for step
        w.grad = torch.randn(3, 4, 5)
        ref.grad = w.grad.clone()
        opt.step(torch.ones(3, dtype=torch.bool))
        torch_opt.step()
        torch.testing.assert_close(w.detach(), ref.detach(), rtol=0, atol=1e-6)
    frozen = w.detach()[2].clone()
    for _ in range(3):  # network 2 idle: it stays, the others keep stepping
        w.grad = torch.randn(3, 4, 5)
        before = w.detach()[:2].clone()
        opt.step(torch.tensor([True, True, False]))
        assert torch.equal(w.detach()[2], frozen) and not torch.equal(w.detach()[:2], before)


def test_stacked_replays_per_lag_batch_discriminators() -> None:
    samples = _lag_samples("unique_lag2", [1, 2])
    res = stacked_pid(samples, FAST, seed=3)
    for lag, s in samples.items():
        ref = batch_pid(s.x1, s.x2, s.y, FAST, seed=3)
        for field in ("mi1", "mi2", "total", "n_samples"):  # same splits, weights, minibatches
            assert getattr(res[lag], field) == pytest.approx(getattr(ref, field), abs=2e-3), (lag, field)
        assert max(abs(res[lag].row()[c] - ref.row()[c]) for c in ("R", "U1", "U2", "S")) < 0.03


def test_stacked_runs_lags_smaller_than_a_minibatch() -> None:
    rng = np.random.default_rng(1)

    def lag(n: int) -> LagSamples:
        y = rng.integers(0, 2, n)
        return LagSamples(y[:, None] + 0.3 * rng.standard_normal((n, 2)), rng.normal(size=(n, 2)), y)

    samples = {0: lag(120), 3: lag(200)}
    res = stacked_pid(samples, FAST, seed=0)
    for li, s in samples.items():
        ref = batch_pid(s.x1, s.x2, s.y, FAST, seed=0)
        assert res[li].mi1 == pytest.approx(ref.mi1, abs=2e-3)
        assert abs(res[li].unique1 - ref.unique1) < 0.1 and res[li].unique1 > 0.15


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

    samples = {0: lag(0), 1: lag(1)}
    res = stacked_pid(samples, FAST, seed=0)
    for li, r in res.items():
        # truth: U1 = 1 bit; per-lag BATCH itself reaches ≈ 0.85 at this budget, and stacked replays it
        assert r.unique1 == pytest.approx(1.0, abs=0.2) and r.synergy < 0.1
        s = samples[li]
        ref = batch_pid(s.x1, s.x2, s.y, FAST, context=s.context, seed=0)
        assert r.unique1 == pytest.approx(ref.unique1, abs=0.02)


def test_stacked_needs_equal_widths() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 64)
    bad = {
        0: LagSamples(rng.normal(size=(64, 2)), rng.normal(size=(64, 2)), y),
        1: LagSamples(rng.normal(size=(64, 3)), rng.normal(size=(64, 2)), y),
    }
    with pytest.raises(ValueError, match="same x1, x2 widths"):
        stacked_pid(bad, FAST)
