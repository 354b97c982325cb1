"""Which (window, step) pairs become samples of a lag: shared by the exact and neural temporal paths.

A sample at lag τ is target step t with sources at t − τ in the same window, and, in the directed
form, the target's past summary at t − h (h = rus.past_horizon) in the same window too, so neither
the lag-shifted sources nor the past ever cross a recording or subject boundary.  Subsampling is
deterministic per (seed, lag) and identical for all modality pairs of a lag.
"""

from __future__ import annotations

import numpy as np

from timoe.interactions.discretize import Discretizer


def label_codes(labels: np.ndarray) -> tuple[np.ndarray, int]:
    """Map valid labels (≥ 0) to 0..K−1 (sorted); ignored ones stay −1."""
    classes = np.unique(labels[labels >= 0])
    if len(classes) == 0:
        raise ValueError("no valid labels (all −1)")
    return np.where(labels >= 0, np.searchsorted(classes, labels), -1), len(classes)


def subsample(n: int, max_samples: int, seed: int, lag: int) -> np.ndarray:
    """Deterministic subset (sorted) of range(n); the same for every pair at a given lag."""
    if n <= max_samples:
        return np.arange(n)
    return np.sort(np.random.default_rng([seed, lag]).choice(n, size=max_samples, replace=False))


def dwell(y: np.ndarray) -> np.ndarray:
    """Steps Y has held its current value, counted within the window (1 at a change or window start)."""
    out = np.ones(y.shape, dtype=np.int64)
    for t in range(1, y.shape[1]):
        out[:, t] = np.where(y[:, t] == y[:, t - 1], out[:, t - 1] + 1, 1)
    return out


def past_strata(y: np.ndarray, n_classes: int, past_bins: int) -> tuple[np.ndarray, int]:
    """Stratum of each (window, step) summarising Y up to that step: Y itself, or Y × dwell-time bin.

    y: (N, T) class codes, −1 = ignored.  Returns (strata (N, T), number of strata).  The stratum at
    step s describes Y^s; the directed form reads it at s = t − h for target step t (h =
    rus.past_horizon), so with h > 1 the dwell time is the one measured at t − h as well.  Entries
    at ignored steps are meaningless: step_index never picks a target whose past step is ignored.
    """
    if past_bins == 0:
        return y, n_classes
    d = dwell(y).astype(np.float64)
    disc = Discretizer(past_bins, "quantile").fit(d[y >= 0])
    return y * past_bins + disc.transform(d.ravel()).reshape(y.shape), n_classes * past_bins


def step_index(
    y: np.ndarray, lag: int, directed: bool, max_samples: int, seed: int, horizon: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    """(window, target step) of every sample at `lag`: valid Y_t (and Y_{t−horizon} when directed).

    y: (N, T) class codes, −1 = ignored.  Returns two (n,) int arrays wi, ti with
    ti ≥ max(lag, horizon if directed else 0), so both the sources at ti − lag and the past at
    ti − horizon lie in window wi: no sample reaches before its window's first step.
    """
    if horizon < 1:
        raise ValueError(f"horizon must be ≥ 1, got {horizon}")
    steps = y.shape[1]
    start = max(lag, horizon if directed else 0)
    if start >= steps:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    valid = y[:, start:] >= 0
    if directed:  # the past summary is read at t − horizon, so that label must be valid too
        valid &= y[:, start - horizon : steps - horizon] >= 0
    wi, ti = np.nonzero(valid)
    keep = subsample(len(wi), max_samples, seed, lag)
    return wi[keep], ti[keep] + start


def window_index(labels: np.ndarray, lag: int, steps: int, max_samples: int, seed: int) -> np.ndarray:
    """Windows used at `lag` in sequence-level mode (valid label, at least one step left)."""
    valid = np.nonzero(labels >= 0)[0]
    if lag >= steps:
        return valid[:0]
    return valid[subsample(len(valid), max_samples, seed, lag)]
