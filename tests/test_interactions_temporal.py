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
        df = compute_temporal_rus(x, None, {"a": [0], "b": [1]}, RusConfig(lags=[0, 5, 15]),
                                  window_labels=label, sequence_level=True)
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
