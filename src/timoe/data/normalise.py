"""Per-channel standardisation fitted on the training split only.

Statistics from val/test windows would leak information about the held-out data into the
inputs. Overlapping training windows count shared samples more than once; the statistics thus
match the distribution the model actually sees.
"""

from __future__ import annotations

import numpy as np

# a constant channel keeps std 1 (no division by ~0 that would blow up float noise)
_MIN_STD = 1e-8


def fit_channel_stats(x: np.ndarray, split: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std per channel (float64, shape (C,)) over all steps of the train windows.

    x: (N, T, C); split: (N,) split names.
    """
    train = x[split == "train"]
    if train.size == 0:
        raise ValueError("no training window: cannot fit normalisation statistics")
    flat = train.reshape(-1, x.shape[-1]).astype(np.float64)  # float64: sums over millions of steps
    if not np.isfinite(flat).all():
        raise ValueError("training windows hold NaN or inf values; normalisation needs finite data")
    mean = flat.mean(axis=0)
    std = flat.std(axis=0)
    std = np.where(std < _MIN_STD, 1.0, std)
    return mean, std


def apply_channel_stats(x: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """(x - mean) / std per channel, as float32."""
    return ((x - mean) / std).astype(np.float32)
