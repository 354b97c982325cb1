"""HAPT in three modalities (body, gravity, gyro) and continuous windows across label changes."""

from __future__ import annotations

from importlib.util import find_spec

import numpy as np
import pytest
from scipy import signal

from timoe.config import ConfigError, DataConfig, HaptConfig, RusConfig, validate
from timoe.data import hapt
from timoe.data.base import Recording
from timoe.data.windowing import continuous_window_starts, window_recordings

needs_hapt = pytest.mark.skipif(find_spec(hapt.PACKAGE) is None, reason=f"{hapt.REQUIREMENT} not installed")
ALL_CLASSES = list(range(1, 13))
OFFICIAL_TEST = {2, 4, 9, 10, 12, 13, 18, 20, 24}
FS = hapt.SAMPLE_RATE_HZ


@pytest.fixture(scope="module")
def recordings() -> list[Recording]:
    return hapt.read_recordings()


@pytest.fixture(scope="module")
def continuous() -> object:
    """All subjects, three modalities, continuous windows, 12 classes (about 2 s to build)."""
    hc = HaptConfig(modalities=["body", "gravity", "gyro"], windows="continuous", classes=ALL_CLASSES)
    return hapt.build(DataConfig(hapt=hc))


def _power_above(x: np.ndarray, hz: float) -> float:
    """Power of x (T, C) above `hz`, from Welch's estimate (Hann segments of about 10 s).

    A plain FFT of the whole recording would leak the large, step-like gravity changes (sit -> lie
    turns gravity by 1 g) into every frequency; tapered segments keep that leakage below 1e-6.
    """
    freqs, psd = signal.welch(x, fs=FS, nperseg=512, axis=0)
    return float(psd[freqs > hz].sum())


# ------------------------------------------------------------------ filtering
@needs_hapt
def test_body_plus_gravity_is_the_denoised_acceleration(recordings) -> None:
    acc = recordings[0].x[:, hapt.MODALITIES["acc"]]
    body, gravity = hapt.split_gravity(acc)
    np.testing.assert_allclose(body + gravity, hapt.denoise(acc), atol=1e-12)
    # denoising removes spikes and > 20 Hz noise only: the signal itself stays (in g)
    assert np.abs(hapt.denoise(acc) - acc).mean() < 0.02
    # gravity is about 1 g in magnitude; body acceleration has no lasting offset
    assert 0.9 < np.linalg.norm(gravity, axis=1).mean() < 1.1
    assert np.abs(body.mean(0)).max() < 0.01


@needs_hapt
def test_gravity_is_low_frequency(recordings) -> None:
    for rec in (recordings[0], recordings[30]):
        acc = rec.x[:, hapt.MODALITIES["acc"]]
        body, gravity = hapt.split_gravity(acc)
        total = hapt.denoise(acc)
        # above 1 Hz a 3rd-order 0.3 Hz Butterworth run forward and backward passes < 1e-6 of the
        # power (|H(1 Hz)|^4 = 4e-7)
        assert _power_above(gravity, 1.0) < 1e-5 * _power_above(total, 1.0)
        # and the motion above 1 Hz is all in body
        np.testing.assert_allclose(_power_above(body, 1.0), _power_above(total, 1.0), rtol=1e-3)


@needs_hapt
def test_filtering_runs_per_recording_before_windowing(recordings) -> None:
    hc = HaptConfig(
        modalities=["body", "gravity", "gyro"], subjects=[1, 2, 3], val_subjects=[1], test_subjects=[2]
    )
    ds = hapt.build(DataConfig(hapt=hc))
    for i in (0, len(ds.label) // 2, len(ds.label) - 1):
        rec = recordings[ds.recording[i]]
        whole = hapt.modality_signals(rec.x, hc.modalities)  # filtered over the whole recording
        np.testing.assert_array_equal(ds.x[i], whole[ds.start[i] : ds.start[i] + hc.window])
    assert ds.extra["filters"]["gravity"].endswith("0.3 Hz of denoised acc")


# ------------------------------------------------------------------ modality selection
@needs_hapt
@pytest.mark.parametrize(
    ("names", "channels", "modalities"),
    [
        (["acc", "gyro"], hapt.CHANNELS, {"acc": [0, 1, 2], "gyro": [3, 4, 5]}),
        (
            ["body", "gravity", "gyro"],
            [
                "body-x",
                "body-y",
                "body-z",
                "gravity-x",
                "gravity-y",
                "gravity-z",
                "gyro-x",
                "gyro-y",
                "gyro-z",
            ],
            {"body": [0, 1, 2], "gravity": [3, 4, 5], "gyro": [6, 7, 8]},
        ),
        (
            ["gyro", "gravity"],
            ["gyro-x", "gyro-y", "gyro-z", "gravity-x", "gravity-y", "gravity-z"],
            {"gyro": [0, 1, 2], "gravity": [3, 4, 5]},
        ),
    ],
)
def test_channels_and_modality_map_follow_the_selection(recordings, names, channels, modalities) -> None:
    hc = HaptConfig(modalities=names, subjects=[1, 2, 3], val_subjects=[1], test_subjects=[2])
    ds = hapt.build(DataConfig(hapt=hc))
    assert ds.channels == channels and ds.modalities == modalities
    assert ds.x.shape[2] == 3 * len(names)
    rec = recordings[ds.recording[0]]
    raw = rec.x[ds.start[0] : ds.start[0] + hc.window]
    body, gravity = (
        s[ds.start[0] : ds.start[0] + hc.window] for s in hapt.split_gravity(rec.x[:, hapt.MODALITIES["acc"]])
    )
    source = {"acc": raw[:, :3], "gyro": raw[:, 3:], "body": body, "gravity": gravity}
    for name, idx in ds.modalities.items():  # acc and gyro are the raw signals, unfiltered
        np.testing.assert_allclose(ds.x[0][:, idx], source[name], atol=1e-6)


def test_default_selection_is_todays_acc_gyro() -> None:
    assert HaptConfig().modalities == ["acc", "gyro"] and HaptConfig().windows == "segments"


@pytest.mark.parametrize(
    ("hapt_raw", "key", "words"),
    [
        ({"modalities": ["acc", "magnetometer"]}, "data.hapt.modalities.1", "'gravity'"),
        ({"modalities": ["gyro"]}, "data.hapt.modalities", "at least two distinct"),
        ({"modalities": ["gyro", "gyro"]}, "data.hapt.modalities", "at least two distinct"),
        ({"windows": "sliding"}, "data.hapt.windows", "'continuous'"),
        ({"gravity_cutoff_hz": 0}, "data.hapt.gravity_cutoff_hz", "greater than"),
    ],
)
def test_bad_hapt_params_name_the_key(hapt_raw, key, words) -> None:
    with pytest.raises(ConfigError) as err:
        validate({"data": {"hapt": hapt_raw}})
    assert f"{key}:" in str(err.value) and words in str(err.value)


def test_modality_signals_rejects_unknown_names() -> None:
    with pytest.raises(ValueError, match=r"unknown HAPT modalities \['mag'\]"):
        hapt.modality_signals(np.zeros((300, 6), dtype=np.float32), ["acc", "mag"])


# ------------------------------------------------------------------ continuous windows
def test_continuous_window_starts_cross_label_changes() -> None:
    labels = np.array([1] * 5 + [7] * 3 + [-1] * 4 + [4] * 6)  # 18 steps
    # every stride-2 start whose last step (start + 3) is a kept label; tail < window dropped
    assert continuous_window_starts(labels, 4, 2, [1, 4, 7]).tolist() == [0, 2, 4, 10, 12, 14]
    assert continuous_window_starts(labels, 4, 2, [4]).tolist() == [10, 12, 14]
    rec = Recording(subject=1, index=0, x=np.arange(36, dtype=np.float32).reshape(18, 2), labels=labels)
    win = window_recordings([rec], 4, 2, [1, 4, 7], mode="continuous")
    assert win.label.tolist() == [1, 7, 7, 4, 4, 4]
    assert win.step_labels[2].tolist() == [1, 7, 7, 7]
    with pytest.raises(ValueError, match="unknown window mode"):
        window_recordings([rec], 4, 2, [1], mode="overlapping")  # type: ignore[arg-type]


@needs_hapt
def test_continuous_windows_hold_transitions_and_label_changes(continuous, recordings) -> None:
    ds = continuous
    assert ds.classes[6:] == [hapt.LABEL_NAMES[c] for c in range(7, 13)]
    steps = ds.step_labels
    # the task: the label of the last step (causal, end-of-window); never an unlabelled step
    np.testing.assert_array_equal(ds.label, steps[:, -1])
    assert (ds.label >= 0).all()
    assert set(np.unique(ds.label).tolist()) == set(range(12))
    n_labels = np.array([np.unique(row[row >= 0]).size for row in steps])
    has_transition = (steps >= 6).any(1)
    has_unlabelled = (steps < 0).any(1)
    assert 0.05 < (n_labels > 1).mean() < 0.15
    assert 0.05 < has_transition.mean() < 0.2
    assert 0.02 < has_unlabelled.mean() < 0.2
    # every window start is on the stride grid of its recording, and every grid window that ends on
    # a labelled step is kept
    assert (ds.start % 64 == 0).all()
    expected = sum(int(np.sum(r.labels[np.arange(0, r.labels.size - 127, 64) + 127] > 0)) for r in recordings)
    assert len(ds.label) == expected


@needs_hapt
def test_continuous_windows_keep_the_official_split(continuous) -> None:
    ds = continuous
    groups = {s: set(ds.subject[ds.split == s].tolist()) for s in ("train", "val", "test")}
    assert groups["test"] == OFFICIAL_TEST and groups["val"] == {1, 19, 29}
    assert groups["train"] == set(range(1, 31)) - OFFICIAL_TEST - {1, 19, 29}
    for rid in np.unique(ds.recording):  # a recording (so every overlapping window) stays in one split
        assert np.unique(ds.split[ds.recording == rid]).size == 1


@needs_hapt
def test_continuous_windows_with_six_classes_exclude_transition_steps() -> None:
    hc = HaptConfig(windows="continuous", subjects=[1, 2, 3], val_subjects=[1], test_subjects=[2])
    ds = hapt.build(DataConfig(hapt=hc))
    assert ds.x.shape[1:] == (128, 6) and ds.step_labels.max() == 5
    np.testing.assert_array_equal(ds.label, ds.step_labels[:, -1])
    assert (ds.step_labels < 0).any(1).mean() > 0.1  # transition and unlabelled steps are -1


# ------------------------------------------------------------------ temporal RUS on them
def _entropy_given_previous(y: np.ndarray) -> float:
    """H(Y_t | Y_{t-1}) in bits over the steps of y (N, T) where both labels are valid."""
    prev, cur = y[:, :-1].ravel(), y[:, 1:].ravel()
    ok = (prev >= 0) & (cur >= 0)
    joint = np.zeros((y.max() + 1,) * 2)
    np.add.at(joint, (prev[ok], cur[ok]), 1.0)
    joint /= joint.sum()
    cond = joint / np.maximum(joint.sum(1, keepdims=True), 1e-300)
    return float(-(joint[joint > 0] * np.log2(cond[joint > 0])).sum())


@needs_hapt
def test_directed_rus_is_nonzero_only_on_continuous_windows() -> None:
    from timoe.interactions.temporal import compute_temporal_rus

    subjects = [1, 2, 3, 5, 6, 7, 8]  # train = 3, 5, 6, 7, 8: a few seconds of PID
    rc = RusConfig(form="directed", lags=[0, 8], n_bins=6, max_samples=60_000, device="cpu")
    pairs = ["body|gravity", "body|gyro", "gravity|gyro"]  # three modalities: three pairs
    out = {}
    for windows in ("segments", "continuous"):
        hc = HaptConfig(
            modalities=["body", "gravity", "gyro"],
            windows=windows,
            classes=ALL_CLASSES,
            subjects=subjects,
            val_subjects=[1],
            test_subjects=[2],
        )
        ds = hapt.build(DataConfig(hapt=hc))
        train = ds.split == "train"
        args = (ds.x[train], ds.step_labels[train], ds.modalities)
        directed = compute_temporal_rus(*args, rc)
        lagged = compute_temporal_rus(*args, rc.model_copy(update={"form": "lagged_mi"}))
        assert directed["pair"].to_list() == [p for p in pairs for _ in rc.lags]
        bound = _entropy_given_previous(ds.step_labels[train])
        out[windows] = (directed["total"].to_numpy(), lagged["total"].to_numpy(), bound)
    # inside one segment Y_{t-1} fixes Y_t: every directed term is 0 there
    assert out["segments"][2] == 0.0 and np.abs(out["segments"][0]).max() < 1e-6
    # across label changes it is not 0, but labels change at < 0.1 % of the steps, so every
    # conditional term is bounded by H(Y_t | Y_{t-1}) ≈ 0.01 bits, far below lagged MI
    directed, lagged, bound = out["continuous"]
    assert 0.0 < bound < 0.02
    assert (directed > 1e-4).all() and (directed <= bound + 1e-9).all()
    assert (lagged > 20 * directed).all()


@needs_hapt
def test_quantify_with_past_horizon_64_finds_directed_interactions(tmp_path) -> None:
    """workflow/hapt-transitions.yaml's quantify (continuous windows, three modalities, directed form
    with rus.past_horizon 64) on 7 subjects: where Y_{t-1} bounds every term by ~0.01 bits, Y_{t-64}
    leaves a pair × lag above 0.05 bits (U_body and U_gyro are ~0.07 on all subjects too), which a
    window permutation of x (same labels, X-Y link cut) does not reach.  About 15 s."""
    from pathlib import Path

    from timoe.config import load_params
    from timoe.data.io import load_prepared
    from timoe.data.prepare import prepare_dataset
    from timoe.interactions.temporal import compute_temporal_rus
    from timoe.stages.quantify import estimate

    root = Path(__file__).resolve().parents[1]
    params = load_params(root / "params.yaml", root / "workflow" / "hapt-transitions.yaml")
    assert params.rus.form == "directed" and params.rus.past_horizon == 64
    hc = params.data.hapt.model_copy(
        update={"subjects": [1, 2, 3, 5, 6, 7, 8], "val_subjects": [1], "test_subjects": [2]}
    )
    params = params.model_copy(
        update={
            "data": params.data.model_copy(update={"hapt": hc}),
            "rus": params.rus.model_copy(update={"device": "cpu"}),
        }
    )
    prepare_dataset("hapt", params.data, tmp_path / "data")
    train = load_prepared(tmp_path / "data").subset("train")
    res = estimate(params, train)  # the quantify stage's computation: dataset table + per-context ones
    table, per_context = res["dataset_table"], res["table"]
    n_rows = 3 * len(params.rus.lags)  # three modalities: three pairs
    assert table.height == n_rows and per_context.height == res["spec"].n_contexts * n_rows
    # every lag (≤ 64) samples the windows' last 64 steps whose label and label 64 steps back are valid
    steps = train.step_labels
    valid = int(((steps[:, 64:] >= 0) & (steps[:, :64] >= 0)).sum())
    assert (table["n_samples"] == min(params.rus.max_samples, valid)).all()
    comps = ["U1", "U2", "S"]
    assert table.select(comps).to_numpy().max() > 0.05
    assert np.isfinite(per_context.select(comps).to_numpy()).all()
    mods = {m: list(ch) for m, ch in train.meta["modalities"].items()}
    near = compute_temporal_rus(
        train.x, train.step_labels, mods, params.rus.model_copy(update={"past_horizon": 1})
    )
    assert near["total"].max() < 0.02  # the h = 1 bound H(Y_t | Y_{t-1}) is ~0.01 bits
    perm = np.random.default_rng(0).permutation(len(train.x))
    cut = compute_temporal_rus(train.x[perm], train.step_labels, mods, params.rus)
    assert cut.select(comps).to_numpy().max() < 0.5 * table.select(comps).to_numpy().max()
