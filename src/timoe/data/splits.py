"""Train / val / test assignment.

Splits are by subject (or by case, where each case is its own subject) and never by window:
overlapping windows of one recording in two splits would leak the test data into training.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from timoe.config import ConfigError, dataset_key
from timoe.data.base import SPLITS


def split_by_subject(
    subject: np.ndarray, test_subjects: Sequence[int], val_subjects: Sequence[int]
) -> np.ndarray:
    """Split name per window: test and val subjects as listed, every other subject train."""
    if set(test_subjects) & set(val_subjects):
        raise ConfigError(f"subjects in both val and test: {sorted(set(test_subjects) & set(val_subjects))}")
    split = np.full(subject.shape, "train", dtype="<U5")
    split[np.isin(subject, list(val_subjects))] = "val"
    split[np.isin(subject, list(test_subjects))] = "test"
    return split


def stratified_holdout(labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Boolean mask holding out round(fraction * n_c) cases of each class c (at least one case
    of a class with two or more, so every class is seen in validation), seeded for reproducibility.
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"fraction must be in (0, 1), got {fraction}")
    rng = np.random.default_rng(seed)
    held = np.zeros(labels.shape, dtype=bool)
    for c in np.unique(labels):  # sorted, so the rng draws in a fixed order
        idx = np.flatnonzero(labels == c)
        n_out = int(np.floor(fraction * idx.size + 0.5))  # round half up, not to even
        n_out = min(max(n_out, 1 if idx.size > 1 else 0), idx.size - 1)
        held[rng.permutation(idx)[:n_out]] = True
    return held


def require_splits(split: np.ndarray, dataset: str) -> None:
    """Fail early, naming the data set, when a split has no window (e.g. a smoke-run subset)."""
    empty = [s for s in SPLITS if not np.any(split == s)]
    if empty:
        raise ConfigError(
            f"{dataset}: split(s) {empty} would be empty; check the data.{dataset_key(dataset)} subject lists"
        )
