"""The practitioner's reference: MiniRocket features and a ridge classifier (no routing, no torch).

MiniRocket (aeon) turns each window into ~10,000 proportion-of-positive-values features of random
dilated convolutions; scikit-learn's RidgeClassifierCV picks its penalty by leave-one-out over
alphas logspace(-3, 3, 10) (the MiniRocket paper's setting). Both are the field's own code; this
module only wires them to timoe's windows and saves the fitted state without pickle.

MiniRocket's kernels sum to zero, so a constant offset (gravity on an accelerometer) shifts every
convolution output equally and only moves the bias comparison; appending each channel's mean and
std over the window (standardised on the training windows) gives the ridge that level back. Whether
it helps is measured per data set (README, "The reference model").
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

ALPHAS = np.logspace(-3, 3, 10)  # the MiniRocket paper's ridge penalties, chosen by leave-one-out
N_KERNELS = 10_000  # aeon's default: 84 kernels × dilations × bias quantiles ≈ 10k features
MAX_DILATIONS = 32  # aeon's default
FORMAT_VERSION = 1
# MiniRocket's fitted parameters, in the order aeon's transform unpacks them.
_ROCKET_KEYS = (
    "n_channels_per_combination",
    "channel_indices",
    "dilations",
    "n_features_per_dilation",
    "biases",
)
_SCALE_FLOOR = 1e-8  # a constant summary feature keeps scale 1 instead of dividing by zero
MIN_STEPS = 9  # MiniRocket's kernels span 9 steps; aeon asks shorter series to be zero-padded


@dataclass
class MiniRocketRidge:
    """A fitted reference classifier.

    channels: the input channels it reads (a data set's modality channels; never extra ones such
    as synthetic-regimes' true-regime channels). summary_mean/summary_scale [2 * n_channels]: the
    standardisation of the appended per-channel mean and std features, None when none are
    appended. coef [n_fitted_classes, n_features], intercept [n_fitted_classes], classes: the
    class indices the ridge saw, n_classes: all classes of the data set.
    """

    channels: np.ndarray
    rocket: Any  # a fitted aeon MiniRocket
    coef: np.ndarray
    intercept: np.ndarray
    classes: np.ndarray
    alpha: float
    n_classes: int
    summary_mean: np.ndarray | None = None
    summary_scale: np.ndarray | None = None

    def features(self, x: np.ndarray) -> np.ndarray:
        """x [N, T, C] (timoe's window layout) -> features [N, n_features] float64."""
        picked = as_series(x, self.channels)
        feats = np.asarray(self.rocket.transform(picked), dtype=np.float64)
        if self.summary_mean is None or self.summary_scale is None:
            return feats
        summary = (window_summary(picked) - self.summary_mean) / self.summary_scale
        return np.concatenate([feats, summary], axis=1)

    def decision(self, x: np.ndarray) -> np.ndarray:
        """x [N, T, C] -> ridge scores [N, n_classes]; a class absent from training scores -inf."""
        raw = self.features(x) @ self.coef.T + self.intercept  # [N, n_fitted_classes]
        out = np.full((len(x), self.n_classes), -np.inf)
        out[:, self.classes] = raw
        return out

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        """x [N, T, C] -> [N, n_classes]: softmax of the ridge scores.

        A ridge classifier is not probabilistic; the softmax keeps the argmax and gives AUROC a
        ranking score, but these are not calibrated probabilities.
        """
        return softmax(self.decision(x))

    def save(self, path: Path) -> None:
        """One .npz of plain arrays (np.load reads it with allow_pickle=False)."""
        arrays: dict[str, np.ndarray] = {
            f"rocket.{k}": np.asarray(v) for k, v in zip(_ROCKET_KEYS, self.rocket.parameters, strict=True)
        }
        arrays |= {
            "channels": self.channels,
            "coef": self.coef,
            "intercept": self.intercept,
            "classes": self.classes,
        }
        if self.summary_mean is not None and self.summary_scale is not None:
            arrays |= {"summary_mean": self.summary_mean, "summary_scale": self.summary_scale}
        header = {
            "format_version": FORMAT_VERSION,
            "alpha": self.alpha,
            "n_classes": self.n_classes,
            "n_kernels": int(self.rocket.n_kernels_),
            "max_dilations_per_kernel": int(self.rocket.max_dilations_per_kernel),
            "n_timepoints": int(self.rocket.metadata_["n_timepoints"]),
        }
        arrays["header"] = np.frombuffer(json.dumps(header).encode(), dtype=np.uint8)
        with open(path, "wb") as fh:
            np.savez(fh, **arrays)


def as_series(x: np.ndarray, channels: np.ndarray) -> np.ndarray:
    """x [N, T, C] -> aeon's layout [N, len(channels), max(T, 9)] float32, zero-padded at the end."""
    picked = np.transpose(x[:, :, channels], (0, 2, 1)).astype(np.float32)
    short = MIN_STEPS - picked.shape[2]
    if short > 0:
        picked = np.pad(picked, ((0, 0), (0, 0), (0, short)))
    return np.ascontiguousarray(picked)


def window_summary(x: np.ndarray) -> np.ndarray:
    """x [N, C, T] -> [N, 2C]: each channel's mean over time, then each channel's std."""
    return np.concatenate([x.mean(axis=2), x.std(axis=2)], axis=1).astype(np.float64)


def softmax(scores: np.ndarray) -> np.ndarray:
    """Row softmax of [N, K] scores (-inf entries get probability 0)."""
    shifted = scores - scores.max(axis=1, keepdims=True)
    e = np.exp(shifted)
    return e / e.sum(axis=1, keepdims=True)


def fit_minirocket(
    x: np.ndarray,
    y: np.ndarray,
    *,
    channels: list[int],
    n_classes: int,
    seed: int,
    summary_features: bool,
    n_jobs: int = 1,
) -> MiniRocketRidge:
    """Fit MiniRocket (random_state=seed) and the ridge on x [N, T, C], y [N] class indices."""
    from aeon.transformations.collection.convolution_based import MiniRocket
    from sklearn.linear_model import RidgeClassifierCV

    if len(np.unique(y)) < 2:
        raise ValueError("the reference classifier needs at least two classes in its training windows")
    chans = np.asarray(channels, dtype=np.int64)
    picked = as_series(x, chans)
    rocket = MiniRocket(
        n_kernels=N_KERNELS, max_dilations_per_kernel=MAX_DILATIONS, n_jobs=n_jobs, random_state=seed
    )
    feats = np.asarray(rocket.fit_transform(picked), dtype=np.float64)
    summary_mean = summary_scale = None
    if summary_features:
        summary = window_summary(picked)
        summary_mean = summary.mean(axis=0)
        summary_scale = np.maximum(summary.std(axis=0), _SCALE_FLOOR)
        feats = np.concatenate([feats, (summary - summary_mean) / summary_scale], axis=1)
    ridge = RidgeClassifierCV(alphas=ALPHAS).fit(feats, y)
    coef = np.atleast_2d(ridge.coef_)
    intercept = np.atleast_1d(ridge.intercept_)
    classes = np.asarray(ridge.classes_, dtype=np.int64)
    if len(classes) == 2:  # sklearn keeps one score for two classes: positive means classes[1]
        coef = np.concatenate([-coef, coef])
        intercept = np.concatenate([-intercept, intercept])
    return MiniRocketRidge(
        channels=chans,
        rocket=rocket,
        coef=coef.astype(np.float64),
        intercept=intercept.astype(np.float64),
        classes=classes,
        alpha=float(ridge.alpha_),
        n_classes=n_classes,
        summary_mean=summary_mean,
        summary_scale=summary_scale,
    )


def load_minirocket(path: Path) -> MiniRocketRidge:
    """Rebuild a saved reference classifier (no pickle: allow_pickle=False)."""
    from aeon.transformations.collection.convolution_based import MiniRocket

    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    header = json.loads(arrays.pop("header").tobytes().decode())
    if header.get("format_version") != FORMAT_VERSION:
        raise ValueError(
            f"{path}: reference model format {header.get('format_version')} is not {FORMAT_VERSION}"
        )
    channels = arrays["channels"]
    rocket = MiniRocket(
        n_kernels=header["n_kernels"], max_dilations_per_kernel=header["max_dilations_per_kernel"], n_jobs=1
    )
    # What aeon's fit sets and its transform reads: the fitted parameters and the fit metadata.
    rocket.parameters = tuple(arrays[f"rocket.{k}"] for k in _ROCKET_KEYS)
    rocket.n_kernels_ = header["n_kernels"]
    rocket._n_jobs = 1
    rocket.metadata_ = {
        "multivariate": len(channels) > 1,
        "missing_values": False,
        "unequal_length": False,
        "n_cases": 0,
        "n_channels": len(channels),
        "n_timepoints": header["n_timepoints"],
    }
    rocket.is_fitted = True
    return MiniRocketRidge(
        channels=channels,
        rocket=rocket,
        coef=arrays["coef"],
        intercept=arrays["intercept"],
        classes=arrays["classes"],
        alpha=float(header["alpha"]),
        n_classes=int(header["n_classes"]),
        summary_mean=arrays.get("summary_mean"),
        summary_scale=arrays.get("summary_scale"),
    )
