"""Fit and score a reference model (models.reference) on a prepared data set's splits.

The train stage calls this instead of the training loop for a model whose MODEL_SPECS kind is
"reference": the same kept training windows (train.max_train_windows, drawn by build.subsample
with the job's seed), the same validation and test windows, the seed as MiniRocket's random_state.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from timoe.config import Params
from timoe.data.io import PreparedData
from timoe.models.reference import MiniRocketRidge, fit_minirocket

# Appending each channel's mean and std over the window (standardised on the training windows):
# measured with benchmarks/bench_minirocket.py, seeds 0-2, on the study's prepared splits (see the
# README, "The reference model"). Kept on: see the numbers there for why.
SUMMARY_FEATURES = True


@dataclass(frozen=True)
class ReferenceResult:
    """A fitted reference model, its class scores per split, and the timings (seconds).

    prob[split] [N, n_classes]: softmax of the ridge scores (not calibrated probabilities).
    """

    model: MiniRocketRidge
    prob: dict[str, np.ndarray]
    fit_s: float
    predict_s: dict[str, float]


def model_channels(meta: dict[str, Any]) -> list[int]:
    """The channels the neural models read: those of the modalities (never the true-regime ones)."""
    return sorted({int(c) for ch in meta["modalities"].values() for c in ch})


def _threads(params: Params) -> int:
    return params.train.num_threads or 1  # 0 leaves torch's default; one numba/BLAS thread here


def fit_reference(
    params: Params, train: PreparedData, keep: np.ndarray, splits: dict[str, PreparedData], seed: int
) -> ReferenceResult:
    """Fit on train's kept windows; score every split in `splits` (name -> data)."""
    from threadpoolctl import threadpool_limits

    meta = train.meta
    n = _threads(params)
    # BLAS threads fixed like torch's: a reduction split over another thread count may round differently.
    with threadpool_limits(limits=n):
        start = time.perf_counter()
        model = fit_minirocket(
            train.x[keep],
            train.label[keep],
            channels=model_channels(meta),
            n_classes=len(meta["classes"]),
            seed=seed,
            summary_features=SUMMARY_FEATURES,
            n_jobs=n,
        )
        fit_s = time.perf_counter() - start
        prob, predict_s = {}, {}
        for name, part in splits.items():
            start = time.perf_counter()
            prob[name] = model.predict_proba(part.x)
            predict_s[name] = time.perf_counter() - start
    return ReferenceResult(model, prob, fit_s, predict_s)
