"""Windowing, splits and normalisation on small synthetic recordings."""

from __future__ import annotations

import numpy as np
import pytest

from timoe.config import ConfigError
from timoe.data.base import Recording
from timoe.data.normalise import apply_channel_stats, fit_channel_stats
from timoe.data.splits import require_splits, split_by_subject, stratified_holdout
from timoe.data.windowing import label_segments, segment_window_starts, to_class_index, window_recordings


def _rec(subject: int, labels: list[int], channels: int = 2) -> Recording:
    t = len(labels)
    x = np.arange(t * channels, dtype=np.float32).reshape(t, channels)
    return Recording(subject=subject, index=0, x=x, labels=np.asarray(labels, dtype=np.int32))


def test_label_segments() -> None:
    starts, ends, values = label_segments(np.array([1, 1, 2, 2, 2, -1, 1]))
    assert starts.tolist() == [0, 2, 5, 6] and ends.tolist() == [2, 5, 6, 7]
    assert values.tolist() == [1, 2, -1, 1]


def test_windows_stay_inside_segments() -> None:
    labels = [1] * 10 + [2] * 7 + [-1] * 5 + [1] * 4 + [2] * 3
    # len 10: starts 0, 2, 4, 6; len 7: 10, 12 (tail dropped); -1 excluded; len 4 fits once: 22;
    # the last segment (len 3) is shorter than the window
    assert segment_window_starts(np.array(labels), 4, 2, [1, 2]).tolist() == [0, 2, 4, 6, 10, 12, 22]
    assert segment_window_starts(np.array(labels), 4, 2, [2]).tolist() == [10, 12]


def test_window_recordings_keeps_recording_and_start() -> None:
    recs = [_rec(7, [1] * 6), _rec(8, [2] * 3 + [1] * 5)]
    win = window_recordings(recs, 3, 3, [1, 2], ids=[10, 11])
    assert win.recording.tolist() == [10, 10, 11, 11]
    assert win.start.tolist() == [0, 3, 0, 3]
    assert win.subject.tolist() == [7, 7, 8, 8]
    assert win.x.shape == (4, 3, 2)
    np.testing.assert_array_equal(win.x[3], recs[1].x[3:6])
    assert win.label.tolist() == [1, 1, 2, 1]
    assert (win.step_labels == win.label[:, None]).all()


def test_window_recordings_errors() -> None:
    with pytest.raises(ValueError, match="no window"):
        window_recordings([_rec(1, [1] * 3)], 4, 1, [1])
    with pytest.raises(ValueError, match="unique"):
        window_recordings([_rec(1, [1] * 3), _rec(2, [1] * 3)], 2, 1, [1], ids=[0, 0])


def test_to_class_index() -> None:
    out = to_class_index(np.array([[6, 1, -1], [12, 3, 2]]), [6, 1, 3])
    assert out.tolist() == [[2, 0, -1], [-1, 1, -1]]
    assert out.dtype == np.int32


def test_split_by_subject_is_disjoint() -> None:
    subject = np.repeat(np.arange(1, 11), 5)
    split = split_by_subject(subject, test_subjects=[2, 4], val_subjects=[1])
    groups = {s: set(subject[split == s].tolist()) for s in ("train", "val", "test")}
    assert groups == {"train": {3, 5, 6, 7, 8, 9, 10}, "val": {1}, "test": {2, 4}}
    with pytest.raises(ConfigError, match="both val and test"):
        split_by_subject(subject, test_subjects=[2], val_subjects=[2])


def test_require_splits_names_empty_split() -> None:
    with pytest.raises(ConfigError, match=r"\['val'\]"):
        require_splits(np.array(["train", "test"]), "toy")


def test_stratified_holdout() -> None:
    labels = np.repeat(np.arange(3), [10, 4, 1])
    held = stratified_holdout(labels, 0.25, seed=0)
    # round half up: 10 -> 3 (2.5), 4 -> 1, 1 -> 0 (a single case stays in train)
    assert np.bincount(labels[held], minlength=3).tolist() == [3, 1, 0]
    assert (held == stratified_holdout(labels, 0.25, seed=0)).all()


def test_normalisation_uses_train_only() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(3.0, 2.0, size=(30, 8, 3)).astype(np.float32)
    split = np.array(["train"] * 20 + ["val"] * 5 + ["test"] * 5)
    mean, std = fit_channel_stats(x, split)
    changed = x.copy()
    changed[20:] = 1e6  # val/test data must not move the statistics
    mean2, std2 = fit_channel_stats(changed, split)
    np.testing.assert_array_equal(mean, mean2)
    np.testing.assert_array_equal(std, std2)
    z = apply_channel_stats(x, mean, std)[:20].reshape(-1, 3).astype(np.float64)
    np.testing.assert_allclose(z.mean(0), 0.0, atol=1e-6)
    np.testing.assert_allclose(z.std(0), 1.0, atol=1e-6)


def test_normalisation_constant_channel_and_nan() -> None:
    x = np.ones((4, 5, 2), dtype=np.float32)
    _, std = fit_channel_stats(x, np.array(["train"] * 4))
    assert std.tolist() == [1.0, 1.0]
    x[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        fit_channel_stats(x, np.array(["train"] * 4))
