"""Shared last step of recording-based data sets: window, map labels, split by subject.

Data set modules that read continuous recordings (HAPT, PAMAP2, WESAD) call `from_recordings`
so windowing and splitting rules are the same for all of them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from timoe.data.base import Recording, WindowedDataset
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
    if len(set(classes)) != len(classes):
        raise ValueError(f"{rs.name}: classes list a label twice: {list(classes)}")
    unknown = sorted(set(classes) - set(rs.label_names))
    if unknown:
        raise ValueError(f"{rs.name}: unknown class label(s) {unknown}; known: {sorted(rs.label_names)}")
    ordered = sorted(classes)  # class index order does not depend on how the list is written
    ids = list(range(len(rs.recordings)))
    if subjects is not None:
        missing = set(subjects) - {r.subject for r in rs.recordings}
        if missing:
            raise ValueError(f"{rs.name}: subjects {sorted(missing)} are not in the data")
        ids = [i for i in ids if rs.recordings[i].subject in set(subjects)]
    win = window_recordings([rs.recordings[i] for i in ids], window, stride, ordered, ids, mode=windows)
    split = split_by_subject(win.subject, test_subjects, val_subjects)
    require_splits(split, rs.name)
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
        config=dict(config or {}),
        sample_rate_hz=rs.sample_rate_hz,
        extra={**rs.extra, "source_labels": ordered},
    )
