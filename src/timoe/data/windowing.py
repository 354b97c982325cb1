"""Cut continuous labelled recordings into fixed-length windows.

Two modes (`WindowMode`):
- "segments": a segment is a maximal run of one label; a window never straddles two segments, so
  its label is unambiguous and every step carries it.
- "continuous": windows start every `stride` samples from the recording's start, whatever the
  labels, so they cross label changes and unlabelled stretches; the per-step labels keep that
  structure (what directed RUS needs). A window's label is the label of its LAST step: the
  causal, end-of-window task of a real-time recogniser, which has seen the history before the
  label it predicts. Windows whose last step is not a kept label are dropped; inside a kept
  window, steps with other labels (unlabelled ones included) stay in x and are excluded (-1)
  only as per-step targets, since the signal there is as real as anywhere else.
In both modes a window's label is its last step's, and a window never straddles two recordings;
each keeps its recording id and start offset so temporal work (lags, per-step targets) can stay
inside one recording.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from timoe.data.base import Recording

WindowMode = Literal["segments", "continuous"]


@dataclass(frozen=True)
class Windows:
    """Raw windows: x (N, T, C) float32; label (N,) (the last step's) and step_labels (N, T) in
    source labels."""

    x: np.ndarray
    label: np.ndarray
    step_labels: np.ndarray
    subject: np.ndarray
    recording: np.ndarray
    start: np.ndarray


def label_segments(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(starts, ends, values) of the maximal constant runs of `labels`; ends are exclusive."""
    labels = np.asarray(labels)
    if labels.size == 0:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, labels[:0]
    change = np.flatnonzero(labels[1:] != labels[:-1]) + 1
    starts = np.concatenate(([0], change))
    ends = np.concatenate((change, [labels.size]))
    return starts, ends, labels[starts]


def segment_window_starts(labels: np.ndarray, window: int, stride: int, keep: Sequence[int]) -> np.ndarray:
    """Start offsets of all windows lying inside one segment whose label is in `keep`.

    Windows start at the segment's first sample and advance by `stride`; the tail shorter than
    `window` is dropped (padding would invent data).
    """
    if window < 1 or stride < 1:
        raise ValueError(f"window ({window}) and stride ({stride}) must be positive")
    starts, ends, values = label_segments(labels)
    out = []
    for s, e, v in zip(starts, ends, values, strict=True):
        if v in keep and e - s >= window:
            out.append(np.arange(s, e - window + 1, stride))
    return np.concatenate(out).astype(np.int64) if out else np.zeros(0, dtype=np.int64)


def continuous_window_starts(labels: np.ndarray, window: int, stride: int, keep: Sequence[int]) -> np.ndarray:
    """Start offsets 0, stride, 2·stride, … of the windows whose last step has a label in `keep`.

    The tail shorter than `window` is dropped, as in `segment_window_starts`.
    """
    if window < 1 or stride < 1:
        raise ValueError(f"window ({window}) and stride ({stride}) must be positive")
    labels = np.asarray(labels)
    starts = np.arange(0, labels.size - window + 1, stride, dtype=np.int64)
    return starts[np.isin(labels[starts + window - 1], list(keep))]


def window_recordings(
    recordings: Sequence[Recording],
    window: int,
    stride: int,
    keep: Sequence[int],
    ids: Sequence[int] | None = None,
    mode: WindowMode = "segments",
) -> Windows:
    """Windows of every recording (see the module doc for `mode`), in recording then start order.

    `ids` gives each recording's id (default: its position); ids must be unique.
    """
    if mode not in ("segments", "continuous"):
        raise ValueError(f"unknown window mode {mode!r}; known: segments, continuous")
    find_starts = segment_window_starts if mode == "segments" else continuous_window_starts
    ids = list(range(len(recordings))) if ids is None else list(ids)
    if len(ids) != len(recordings) or len(set(ids)) != len(ids):
        raise ValueError("recording ids must be unique, one per recording")
    keep_set = {int(k) for k in keep}
    parts: dict[str, list[np.ndarray]] = {k: [] for k in ("x", "label", "steps", "subject", "rec", "start")}
    n_channels = recordings[0].x.shape[1] if recordings else 0
    for rid, rec in zip(ids, recordings, strict=True):
        if rec.x.shape[1] != n_channels:
            raise ValueError(f"recording {rid} has {rec.x.shape[1]} channels, expected {n_channels}")
        starts = find_starts(rec.labels, window, stride, keep_set)
        if starts.size == 0:
            continue
        # views, not copies, until the fancy index below gathers just the kept windows
        xs = sliding_window_view(rec.x, window, axis=0)[starts]  # (n, C, T)
        steps = sliding_window_view(rec.labels, window)[starts]  # (n, T)
        parts["x"].append(np.ascontiguousarray(xs.transpose(0, 2, 1), dtype=np.float32))
        parts["steps"].append(steps.astype(np.int32))
        parts["label"].append(steps[:, -1].astype(np.int32))  # == the first step's in segments mode
        parts["subject"].append(np.full(starts.size, rec.subject, dtype=np.int32))
        parts["rec"].append(np.full(starts.size, rid, dtype=np.int32))
        parts["start"].append(starts.astype(np.int32))
    if not parts["x"]:
        where = "inside a segment with" if mode == "segments" else "ending on"
        raise ValueError(f"no window of {window} samples fits {where} a label in {sorted(keep_set)}")
    return Windows(
        x=np.concatenate(parts["x"]),
        label=np.concatenate(parts["label"]),
        step_labels=np.concatenate(parts["steps"]),
        subject=np.concatenate(parts["subject"]),
        recording=np.concatenate(parts["rec"]),
        start=np.concatenate(parts["start"]),
    )


def to_class_index(raw: np.ndarray, classes: Sequence[int]) -> np.ndarray:
    """Map source labels to 0-based class indices (position in sorted `classes`); others -> -1."""
    table = np.asarray(sorted(classes))
    if table.size == 0 or np.any(np.diff(table) == 0):
        raise ValueError(f"classes must be non-empty and distinct: {list(classes)}")
    raw = np.asarray(raw)
    pos = np.clip(np.searchsorted(table, raw), 0, table.size - 1)
    return np.where(table[pos] == raw, pos, -1).astype(np.int32)
