"""Temporal RUS on the synthetic ground truth, output schema, labels, lags and sequence-level mode."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from timoe.config import RusConfig
from timoe.interactions.synthetic import (
    PROCESSES,
    make_process,
    population_joint,
    true_rus,
)
from timoe.interactions.temporal import COLUMNS, ScalarFeature, compute_temporal_rus

LAGS = [0, 1, 2, 3, 4, 8]
COMPS = ("R", "U1", "U2", "S")
# Tolerances (bits).  Plug-in estimates on ~12k samples: "≈ 0" means below NULL_*; the dominant
# component must be the largest one and reach FRACTION of its population value.
NULL_DISCRETE, NULL_CONTINUOUS, FRACTION = 0.03, 0.08, 0.85


def _rus(task, form: str = "directed", **kw) -> pl.DataFrame:
    cfg = RusConfig(form=form, lags=LAGS, **kw)
    return compute_temporal_rus(task.x, task.step_labels, task.modalities, cfg)


@pytest.mark.parametrize("continuous", [False, True])
@pytest.mark.parametrize("name", [p for p in PROCESSES if p != "persistent_lead1"])
def test_exact_estimator_finds_the_right_component_at_the_right_lag(name: str, continuous: bool) -> None:
    task = make_process(name, continuous=continuous, seed=1)
    df = _rus(task)
    truth = true_rus(name, LAGS)
    null = NULL_CONTINUOUS if continuous else NULL_DISCRETE
    for row in df.iter_rows(named=True):
        dominant = task.expected(row["lag"])
        if dominant is None:
            assert max(row[c] for c in COMPS) < null, row
        else:
            assert max(COMPS, key=lambda c: row[c]) == dominant, row
            assert row[dominant] >= FRACTION * truth[row["lag"]][dominant], row


def test_directed_form_localises_the_lag_that_lagged_mi_smears() -> None:
    task = make_process("persistent_lead1", seed=2)
    directed = _rus(task, "directed")
    lagged = _rus(task, "lagged_mi")
    u1 = dict(zip(directed["lag"], directed["U1"], strict=True))
    u1_lagged = dict(zip(lagged["lag"], lagged["U1"], strict=True))
    assert u1[1] == max(u1.values()) and u1[1] > 0.4
    assert all(u1[lag] < NULL_DISCRETE for lag in (2, 3, 4, 8))
    assert u1_lagged[3] > 0.5 and u1_lagged[8] > 0.05  # persistence leaks into every lag
    assert set(directed["form"]) == {"directed"} and set(lagged["form"]) == {"lagged_mi"}


def test_output_schema_pairs_and_determinism() -> None:
    task = make_process("synergy_lag1", seed=3, n_windows=60, window=32)
    x = np.concatenate([task.x, task.x[:, :, :1] * 0.5], axis=2)  # a third modality
    mods = {**task.modalities, "c": [2]}
    cfg = RusConfig(lags=[0, 1, 40])
    df = compute_temporal_rus(x, task.step_labels, mods, cfg)
    assert df.columns == list(COLUMNS)
    assert df.schema["lag"] == pl.Int64 and df.schema["n_samples"] == pl.Int64
    assert df.schema["seconds"] == pl.Float64 and df.schema["R"] == pl.Float64
    assert df["pair"].to_list() == ["a|b"] * 3 + ["a|c"] * 3 + ["b|c"] * 3
    assert set(df["estimator"]) == {"exact"}
    far = df.filter(pl.col("lag") == 40)  # longer than the window: no pairs inside a window
    assert (far["n_samples"] == 0).all() and (far["total"] == 0).all()
    near = df.filter(pl.col("lag") == 1)
    assert (near["n_samples"] == 60 * 31).all()
    again = compute_temporal_rus(x, task.step_labels, mods, cfg)
    assert df.drop("seconds").equals(again.drop("seconds"))
    total = df["R"] + df["U1"] + df["U2"] + df["S"]
    np.testing.assert_allclose(total.to_numpy(), df["total"].to_numpy(), atol=1e-6)


def test_ignored_labels_subsampling_and_past_bins() -> None:
    task = make_process("unique_lag2", seed=4, n_windows=100)
    labels = task.step_labels.copy()
    labels[:, ::5] = -1  # ignored steps never become targets nor a target's past
    cfg = RusConfig(lags=[2], max_samples=1000)
    df = compute_temporal_rus(task.x, labels, task.modalities, cfg)
    assert df["n_samples"][0] == 1000
    assert df["U1"][0] > 1.5
    full = compute_temporal_rus(task.x, labels, task.modalities, RusConfig(lags=[2], form="lagged_mi"))
    valid = (labels[:, 2:] >= 0).sum()
    assert full["n_samples"][0] == valid
    dwell = compute_temporal_rus(task.x, labels, task.modalities, RusConfig(lags=[2], past_bins=3))
    assert dwell["U1"][0] > 1.5


def test_sequence_level_labels() -> None:
    rng = np.random.default_rng(5)
    n, steps = 400, 20
    x = rng.normal(size=(n, steps, 2)).astype(np.float32)
    label = rng.integers(0, 2, n)
    x[:, : steps // 2, 0] += 3.0 * label[:, None]  # the label shows in modality a's early steps only
    with pytest.warns(UserWarning, match="lagged_mi"):
        df = compute_temporal_rus(
            x,
            None,
            {"a": [0], "b": [1]},
            RusConfig(lags=[0, 5, 15]),
            window_labels=label,
            sequence_level=True,
        )
    assert set(df["form"]) == {"lagged_mi"} and (df["n_samples"] == n).all()
    lag0 = df.row(0, named=True)
    assert max(COMPS, key=lambda c: lag0[c]) == "U1" and lag0["U1"] > 0.6


def test_input_validation_and_features() -> None:
    task = make_process("independent", n_windows=10, window=16)
    with pytest.raises(ValueError):
        compute_temporal_rus(task.x, task.step_labels, {"a": [0]}, RusConfig())
    with pytest.raises(ValueError):
        compute_temporal_rus(task.x, task.step_labels, {"a": [0], "b": [9]}, RusConfig())
    with pytest.raises(ValueError):
        compute_temporal_rus(task.x, task.step_labels[:, :3], task.modalities, RusConfig())
    rng = np.random.default_rng(6)
    z = rng.normal(size=(500, 1))
    x = np.concatenate([z, -2 * z + 0.01 * rng.normal(size=(500, 1))], 1)
    feat = ScalarFeature("pca").fit(x)
    assert abs(np.corrcoef(feat.transform(x), z[:, 0])[0, 1]) > 0.99
    assert ScalarFeature("magnitude").fit(x).transform(x).min() >= 0


def test_synthetic_ground_truth() -> None:
    for name in PROCESSES[:4]:
        for lag in (1, 2, 3):
            p = population_joint(name, lag)
            assert p.sum() == pytest.approx(1.0) and (p >= 0).all()
    assert true_rus("unique_lag2", [2])[2]["U1"] == pytest.approx(2.0, abs=1e-6)
    assert true_rus("synergy_lag1", [1])[1]["S"] == pytest.approx(1.0, abs=1e-6)
    red = true_rus("redundancy_lag3", [3])[3]
    assert red["R"] > 1.4 and red["R"] > 3 * max(red["U1"], red["U2"], red["S"])
    task = make_process("redundancy_lag3", continuous=True, n_channels=3, n_windows=5, window=10)
    assert task.x.shape == (5, 10, 6) and task.x.dtype == np.float32
    assert task.step_labels.shape == (5, 10) and task.modalities == {"a": [0, 1, 2], "b": [3, 4, 5]}
    with pytest.raises(ValueError):
        make_process("nope")


# ------------------------------------------------------------------ rus.past_horizon
def test_past_horizon_1_reproduces_the_directed_form_before_the_option() -> None:
    """Regression: the default (h = 1) gives the numbers the directed form gave before
    rus.past_horizon existed (values recorded from that code, ignored labels and dwell bins included)."""
    task = make_process("persistent_lead1", seed=2, n_windows=120, window=48)
    labels = task.step_labels.copy()
    labels[:, ::7] = -1
    before = {  # past_bins -> rows (lag 0, 1, 3) of R, U1, U2, S
        0: [
            [0.0035119359, 0.3092559065, 0.0, 0.0073677183],
            [0.0013729309, 0.5608503576, 0.0, 0.0],
            [0.0002690399, 0.002492806, 0.0013653251, 0.0044838231],
        ],
        3: [
            [0.0095952694, 0.3087128514, 0.0, 0.0162046309],
            [0.0081411079, 0.5511914581, 0.0, 0.0],
            [0.0004749884, 0.0021001249, 0.0049056815, 0.0054420497],
        ],
    }
    for past_bins, rows in before.items():
        cfg = RusConfig(lags=[0, 1, 3], past_bins=past_bins, device="cpu")
        assert cfg.past_horizon == 1
        df = compute_temporal_rus(task.x, labels, task.modalities, cfg)
        assert df["n_samples"].to_list() == [4080, 4080, 3960]
        np.testing.assert_allclose(df.select(COMPS).to_numpy(), rows, atol=1e-6)
        explicit = compute_temporal_rus(
            task.x, labels, task.modalities, cfg.model_copy(update={"past_horizon": 1})
        )
        assert df.drop("seconds").equals(explicit.drop("seconds"))


def _sticky_leading_sensor(
    n: int, steps: int, lead: int, p_change: float, k: int = 4, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """A label that rarely changes per step, and a sensor that shows it `lead` steps early.

    Y: per window a Markov chain on k labels (uniform start, which is its stationary law) leaving
    its label w.p. p_change per step for a uniform other one.  X1_t = Y_{t+lead} (so Y_t is a
    function of X1_{t-lead}), X2 i.i.d. uniform noise.  Returns x (n, steps, 2) float32 and
    labels (n, steps) int64.
    """
    rng = np.random.default_rng(seed)
    y = np.empty((n, steps + lead), dtype=np.int64)
    y[:, 0] = rng.integers(0, k, n)
    for t in range(1, steps + lead):
        move = rng.random(n) < p_change
        y[:, t] = np.where(move, (y[:, t - 1] + rng.integers(1, k, n)) % k, y[:, t - 1])
    x = np.stack([y[:, lead:], rng.integers(0, k, (n, steps))], -1).astype(np.float32)
    return x, y[:, :steps]


def test_past_horizon_recovers_what_y_t_minus_1_hides() -> None:
    """Labels change at 1 / 400 of the steps, so Y_{t-1} (nearly) determines Y_t and every h = 1
    term is bounded near 0, although X1_{t-4} determines Y_t.  Conditioning on Y_{t-48} instead
    leaves the label changes of the last 48 steps (~11 % of the samples) to explain: U1 at lag 4 is
    then H(Y_t | Y_{t-48}), 0.5-0.7 bits, and cutting the X-Y link (windows permuted) sends it back
    to the plug-in bias floor (≈ 0.02-0.03 bits: the sticky X1 leaves few independent samples)."""
    lead, h = 4, 48
    x, labels = _sticky_leading_sensor(600, 96, lead, 1 / 400)
    mods = {"a": [0], "b": [1]}
    cfg = RusConfig(lags=[0, lead, 16], n_bins=4, device="cpu")
    near = compute_temporal_rus(x, labels, mods, cfg)
    far = compute_temporal_rus(x, labels, mods, cfg.model_copy(update={"past_horizon": h}))
    perm = np.random.default_rng(1).permutation(len(x))
    cut = compute_temporal_rus(x[perm], labels, mods, cfg.model_copy(update={"past_horizon": h}))
    u1_near = dict(zip(near["lag"], near["U1"], strict=True))
    u1_far = dict(zip(far["lag"], far["U1"], strict=True))
    assert u1_near[lead] < 0.05 and u1_far[lead] > 0.4 and u1_far[lead] > 10 * u1_near[lead]
    assert max(far.filter(pl.col("lag") == lead).row(0, named=True)[c] for c in ("R", "U2", "S")) < 0.03
    assert cut["total"].max() < min(0.05, 0.1 * u1_far[lead])
    # samples: t ≥ max(lag, h) in each window, so neither X_{t-lag} nor Y_{t-h} leaves the window
    assert far["n_samples"].to_list() == [600 * (96 - h)] * 3
    assert near["n_samples"].to_list() == [600 * 95, 600 * (96 - lead), 600 * (96 - 16)]
    assert set(far["form"]) == {"directed"}


def test_past_horizon_needs_a_valid_past_inside_the_window() -> None:
    x, labels = _sticky_leading_sensor(30, 20, 2, 0.2)
    mods = {"a": [0], "b": [1]}
    labels[:, 3] = -1  # step 3 is ignored: the target at 3 + h has no past and is dropped
    df = compute_temporal_rus(x, labels, mods, RusConfig(lags=[0, 8], past_horizon=5, device="cpu"))
    # lag 0: t in 5..19 minus t = 8 (past at 3); lag 8: t in 8..19 (t = 8 has its past at 3)
    assert df["n_samples"].to_list() == [30 * 14, 30 * 11]
    lagged = compute_temporal_rus(x, labels, mods, RusConfig(lags=[0], form="lagged_mi", past_horizon=5))
    assert lagged["n_samples"][0] == 30 * 19  # lagged_mi ignores the horizon
    with pytest.raises(ValueError, match="past_horizon=20"):
        compute_temporal_rus(x, labels, mods, RusConfig(lags=[0], past_horizon=20))
    with pytest.raises(ValueError):
        RusConfig(past_horizon=0)
