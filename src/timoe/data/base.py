"""The in-memory shapes shared by every data set module.

A data set module turns its raw files into `Recording`s (continuous signals with per-step
labels) or directly into a `WindowedDataset`; prepare.py normalises and writes the latter.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

import numpy as np

SPLITS = ("train", "val", "test")
# What no two splits may share: a subject (every data set so far, so the default), or only a
# recording where a protocol puts one subject's runs in train and test (OPPORTUNITY's official
# split). Windows overlap only inside one recording, so either unit keeps overlapping windows
# out of two splits; "subject" also keeps the test subjects unseen.
SplitUnit = Literal["subject", "recording"]
SPLIT_UNITS: tuple[str, ...] = get_args(SplitUnit)


def is_index(value: object) -> bool:
    """An integer index as JSON or numpy gives it; True/False and 1.0 are not indices."""
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


def modality_problem(modalities: object, n_channels: int, reserved: Sequence[int] = ()) -> str | None:
    """Why a modality map is not a partition of the channels, or None.

    The map must be a non-empty {name: [channel index, ...]} whose lists are non-empty and
    together hold every channel exactly once; `reserved` channels (e.g. the synthetic data's
    true-regime one-hots) belong to no modality. A channel in no modality would be read by no
    expert, one in two would be counted twice by the RUS estimate.
    """
    if not isinstance(modalities, dict) or not modalities:
        return f"must be a non-empty mapping of modality name to channel indices, got {modalities!r}"
    for name, idx in modalities.items():
        if not isinstance(idx, list) or not idx or not all(is_index(i) for i in idx):
            return f"modality {name!r} must list integer channel indices, got {idx!r}"
    used = sorted(int(i) for idx in modalities.values() for i in idx) + sorted(int(i) for i in reserved)
    outside = sorted({i for i in used if i < 0 or i >= n_channels})
    if outside:
        return f"channel index(es) {outside} outside 0..{n_channels - 1}"
    twice = sorted({i for i in used if used.count(i) > 1})
    if twice:
        return f"channel(s) {twice} in more than one modality"
    missing = sorted(set(range(n_channels)) - set(used))
    if missing:
        return f"channel(s) {missing} in no modality"
    return None


def names_problem(names: object, what: str) -> str | None:
    """Why a list of class or channel names is not a non-empty list of distinct strings, or None.

    A string is refused although it iterates: `classes: "abcd"` would read as four classes.
    """
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        return f"{what} must be a non-empty list of names (strings), got {names!r}"
    if len(set(names)) != len(names):
        return f"{what} lists a name twice: {names}"
    return None


def spanning_ids(ids: np.ndarray, split: np.ndarray) -> list[int]:
    """Ids (of subjects or recordings) with windows in more than one split (a leak of test or val
    data into training)."""
    if ids.size == 0:
        return []
    pairs = np.unique(np.stack([ids.astype(np.int64), np.unique(split, return_inverse=True)[1]]), axis=1)
    uniq, n_splits = np.unique(pairs[0], return_counts=True)
    return uniq[n_splits > 1].tolist()


def split_leak(
    split_unit: object, subject: np.ndarray, recording: np.ndarray, split: np.ndarray
) -> str | None:
    """Why the split does not keep each `split_unit` (see SplitUnit) inside one split, or None.

    The builder (`WindowedDataset`) and the loader (`timoe.data.io.load_prepared`) both ask this,
    so the rule prepare wrote by is the rule a load checks.
    """
    if split_unit not in SPLIT_UNITS:
        return f"split_unit must be one of {list(SPLIT_UNITS)}, got {split_unit!r}"
    shared = spanning_ids(subject if split_unit == "subject" else recording, split)
    if not shared:
        return None
    return (
        f"{split_unit}(s) {shared[:10]} have windows in more than one split; "
        f"this data set is split by {split_unit} (split_unit {split_unit!r})"
    )


@dataclass(frozen=True)
class Recording:
    """One continuous recording of one subject.

    x: (T, C) float32 signal; labels: (T,) int32 raw labels of the source (not class indices).
    """

    subject: int
    index: int  # position among this subject's recordings
    x: np.ndarray
    labels: np.ndarray

    def __post_init__(self) -> None:
        if self.x.ndim != 2 or self.labels.shape != (self.x.shape[0],):
            raise ValueError(
                f"recording {self.subject}/{self.index}: x {self.x.shape} and labels "
                f"{self.labels.shape} do not match as (T, C) and (T,)"
            )


@dataclass
class WindowedDataset:
    """Fixed-length windows before normalisation, with everything meta.json needs.

    Shapes (N windows, T steps, C channels): x (N, T, C) float32; label (N,) int32 class index;
    step_labels (N, T) int32 class index or -1 for an excluded label; subject, recording,
    start (N,) int32; split (N,) str in SPLITS. `recording` ids are unique within the data set,
    and `start` is the window's offset in its recording, so temporal lags can be kept inside one
    recording. `split_unit` is what no two splits share (SplitUnit; meta.json keeps it).
    """

    name: str
    x: np.ndarray
    label: np.ndarray
    step_labels: np.ndarray
    subject: np.ndarray
    recording: np.ndarray
    start: np.ndarray
    split: np.ndarray
    channels: list[str]
    modalities: dict[str, list[int]]
    classes: list[str]
    sources: dict[str, str]  # source file name -> sha256
    config: dict[str, Any]
    sample_rate_hz: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    split_unit: SplitUnit = "subject"

    def __post_init__(self) -> None:
        n, t, c = self.x.shape
        checks = {
            "label": (self.label, (n,)),
            "step_labels": (self.step_labels, (n, t)),
            "subject": (self.subject, (n,)),
            "recording": (self.recording, (n,)),
            "start": (self.start, (n,)),
            "split": (self.split, (n,)),
        }
        for key, (arr, shape) in checks.items():
            if arr.shape != shape:
                raise ValueError(f"{self.name}: {key} has shape {arr.shape}, expected {shape}")
        if len(self.channels) != c:
            raise ValueError(f"{self.name}: {len(self.channels)} channel names for {c} channels")
        for what in ("channels", "classes"):
            problem = names_problem(getattr(self, what), what)
            if problem:
                raise ValueError(f"{self.name}: {problem}")
        problem = modality_problem(self.modalities, c, self.extra.get("regime_channels", ()))
        if problem:
            raise ValueError(f"{self.name}: modality map {self.modalities}: {problem}")
        bad = set(np.unique(self.split).tolist()) - set(SPLITS)
        if bad:
            raise ValueError(f"{self.name}: unknown split name(s) {sorted(bad)}")
        leak = split_leak(self.split_unit, self.subject, self.recording, self.split)
        if leak:
            raise ValueError(f"{self.name}: {leak}")
        if n and (self.label.min() < 0 or self.label.max() >= len(self.classes)):
            raise ValueError(f"{self.name}: window labels outside 0..{len(self.classes) - 1}")
