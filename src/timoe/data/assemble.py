"""Shared last step of recording-based data sets: window, map labels, split by subject.

Data set modules that read continuous recordings (HAPT, PAMAP2, WESAD, OPPORTUNITY) call
`from_recordings` so windowing and splitting rules are the same for all of them. Its errors are
ConfigErrors naming the data set's params section: they come from params that do not fit the
data (a class or subject the files lack, a window longer than every labelled stretch).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from timoe.config import ConfigError, dataset_key
from timoe.data.base import Recording, WindowedDataset
from timoe.data.errors import DataFormatError
from timoe.data.splits import require_splits, split_by_subject
from timoe.data.windowing import WindowMode, to_class_index, window_recordings


@dataclass(frozen=True)
class RecordingSet:
    """Recordings plus what meta.json needs to describe them."""

    name: str
    recordings: list[Recording]
    channels: list[str]
    modalities: dict[str, list[int]]
    label_names: Mapping[int, str]  # source label -> class name
    sources: dict[str, str]  # source file name -> sha256
    sample_rate_hz: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def fill_gaps(values: np.ndarray, path: Path, name: str, carry_forward: bool = False) -> np.ndarray:
    """One channel (T,) of a recording with its NaN gaps filled: linearly interpolated (ends held
    at the nearest valid value) or, with carry_forward, the last valid value (a slow signal
    sampled at a lower rate, e.g. heart rate). DataFormatError naming path and channel if it has
    no valid value at all."""
    good = np.isfinite(values)
    if good.all():
        return values
    if not good.any():
        raise DataFormatError(f"{path}: channel {name} has no valid value")
    idx = np.arange(values.size)
    if carry_forward:  # last valid value; leading gap takes the first valid one
        last = np.maximum.accumulate(np.where(good, idx, -1))
        return values[np.where(last < 0, np.argmax(good), last)]
    return np.interp(idx, idx[good], values[good])


def from_recordings(
    rs: RecordingSet,
    *,
    window: int,
    stride: int,
    classes: Sequence[int],
    val_subjects: Sequence[int],
    test_subjects: Sequence[int],
    subjects: Sequence[int] | None = None,
    config: dict[str, Any] | None = None,
    windows: WindowMode = "segments",
) -> WindowedDataset:
    """Window rs (`windows` mode, see timoe.data.windowing), keep `classes` (in sorted order),
    split by subject. Steps whose label is not in `classes` get step label -1.

    Recording ids are positions in rs.recordings, so they do not change when `subjects`
    restricts the set (smoke runs).
    """
    key = f"data.{dataset_key(rs.name)}"
    if len(set(classes)) != len(classes):
        raise ConfigError(f"{key}.classes list a label twice: {list(classes)}")
    unknown = sorted(set(classes) - set(rs.label_names))
    if unknown:
        raise ConfigError(f"{key}.classes: unknown class label(s) {unknown}; known: {sorted(rs.label_names)}")
    ordered = sorted(classes)  # class index order does not depend on how the list is written
    ids = list(range(len(rs.recordings)))
    if subjects is not None:
        missing = set(subjects) - {r.subject for r in rs.recordings}
        if missing:
            raise ConfigError(f"{key}.subjects: {sorted(missing)} are not in the data")
        ids = [i for i in ids if rs.recordings[i].subject in set(subjects)]
    try:
        win = window_recordings([rs.recordings[i] for i in ids], window, stride, ordered, ids, mode=windows)
    except ValueError as err:  # no window fits: the window is too long for these recordings
        raise ConfigError(f"{key}: {err}") from None
    split = split_by_subject(win.subject, test_subjects, val_subjects)
    require_splits(split, rs.name)
    return windowed_dataset(rs, win, ordered, split, config or {})


def windowed_dataset(
    rs: RecordingSet,
    win: Any,
    ordered: list[int],
    split: np.ndarray,
    config: Mapping[str, Any],
    split_unit: str = "subject",
) -> WindowedDataset:
    """The data set of a recording set's windows (window_recordings' result) with their split [N];
    labels become indices into `ordered` (the source label ids kept, in order)."""
    return WindowedDataset(
        name=rs.name,
        x=win.x,
        label=to_class_index(win.label, ordered),
        step_labels=to_class_index(win.step_labels, ordered),
        subject=win.subject,
        recording=win.recording,
        start=win.start,
        split=split,
        channels=list(rs.channels),
        modalities={k: list(v) for k, v in rs.modalities.items()},
        classes=[rs.label_names[c] for c in ordered],
        sources=dict(rs.sources),
        config=dict(config),
        sample_rate_hz=rs.sample_rate_hz,
        extra={**rs.extra, "source_labels": ordered},
        split_unit=split_unit,
    )
