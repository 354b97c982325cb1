"""The in-memory shapes shared by every data set module.

A data set module turns its raw files into `Recording`s (continuous signals with per-step
labels) or directly into a `WindowedDataset`; prepare.py normalises and writes the latter.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

SPLITS = ("train", "val", "test")


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
    recording.
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
        used = sorted(i for idx in self.modalities.values() for i in idx)
        if any(i < 0 or i >= c for i in used) or len(set(used)) != len(used):
            raise ValueError(f"{self.name}: modality map {self.modalities} is not a partition of channels")
        bad = set(np.unique(self.split).tolist()) - set(SPLITS)
        if bad:
            raise ValueError(f"{self.name}: unknown split name(s) {sorted(bad)}")
        if n and (self.label.min() < 0 or self.label.max() >= len(self.classes)):
            raise ValueError(f"{self.name}: window labels outside 0..{len(self.classes) - 1}")
