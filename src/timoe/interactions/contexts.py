"""Contexts: which windows share one RUS table, assigned from a window's inputs alone.

A dataset-level RUS table is the same for every window, so it cannot guide a per-sample router
(method.md §5).  Here the training windows are grouped into contexts and the quantify stage
estimates one RUS table per context; a window of any split is mapped to a context from label-free
features of its inputs (`window_features`, then `ContextSpec.assign`), so validation and test
windows receive train-derived interactions without their labels ever being read.

Scopes:
- "dataset": one context holding every window (the paper's single table, kept for comparison).
- "subject": one context per training subject; an unseen (test) subject's window goes to the
  training subject whose mean feature is nearest.
- "context": seeded k-means on the standardised window features.

Features: per modality channel, the window's mean over time (orientation / posture, e.g. where
gravity lies) and its population std over time (motion intensity).  They never see labels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from timoe.interactions.discretize import kmeans as shared_kmeans

SCOPES = ("dataset", "subject", "context")
SPEC_VERSION = 1
MIN_CONTEXT_WINDOWS = 50  # default smallest training-window count a k-means context may keep
N_RESTARTS = 8  # k-means++ restarts; the lowest-inertia run wins
MAX_ITER = 300


def window_features(x: torch.Tensor, channels: torch.Tensor | list[int]) -> torch.Tensor:
    """Label-free window features: [mean over time of each channel, then std over time of each].

    x: [N, T, C] float; channels: the modality channels, in this order.  Returns [N, 2·len(channels)]
    in x's dtype and device (population std, correction 0).  Pure torch, so the model can call it on
    GPU batches and get the features the quantify stage clustered on.
    """
    if x.ndim != 3:
        raise ValueError(f"x must have shape [N, T, C], got {tuple(x.shape)}")
    if not isinstance(channels, torch.Tensor):
        channels = list(channels)
        if not channels or min(channels) < 0 or max(channels) >= x.shape[2]:
            raise ValueError(f"channels must be a non-empty list inside 0..{x.shape[2] - 1}, got {channels}")
    idx = torch.as_tensor(channels, dtype=torch.long, device=x.device)
    sel = x.index_select(2, idx)
    std, mean = torch.std_mean(sel, dim=1, correction=0)
    return torch.cat([mean, std], dim=1)


@dataclass(frozen=True)
class ContextSpec:
    """Contexts fitted on training windows; `assign` maps any window's features to a context.

    channels: the x channels `window_features` reads; mean, std: [F] standardisation of the
    features (F = 2·len(channels)), fitted on training windows; centroids: [K][F] in standardised
    space; counts: [K] training windows per context; names: [K]; note: what fitting did (e.g. K
    reduced because a cluster was too small), for the record.
    """

    scope: str
    channels: list[int]
    mean: list[float]
    std: list[float]
    centroids: list[list[float]]
    counts: list[int]
    names: list[str]
    note: str = ""

    def __post_init__(self) -> None:
        _validate(self)

    @property
    def n_contexts(self) -> int:
        return len(self.centroids)

    @property
    def n_features(self) -> int:
        return len(self.mean)

    def assign(self, features: torch.Tensor) -> torch.Tensor:
        """Context id (long [N]) of each feature row [N, F]: nearest centroid by squared Euclidean
        distance after standardisation; ties go to the lowest index (argmin's first minimum)."""
        if features.ndim != 2 or features.shape[1] != self.n_features:
            raise ValueError(f"features must have shape [N, {self.n_features}], got {tuple(features.shape)}")
        if self.n_contexts == 1:
            return torch.zeros(features.shape[0], dtype=torch.long, device=features.device)
        dt, dev = features.dtype, features.device
        mean = torch.tensor(self.mean, dtype=dt, device=dev)
        z = (features - mean) / torch.tensor(self.std, dtype=dt, device=dev)
        c = torch.tensor(self.centroids, dtype=dt, device=dev)
        dist = ((z[:, None, :] - c[None, :, :]) ** 2).sum(-1)  # [N, K]; no matmul trick, exact ties stay ties
        return dist.argmin(dim=1)

    def to_json(self) -> dict[str, Any]:
        return {
            "version": SPEC_VERSION,
            "scope": self.scope,
            "channels": [int(c) for c in self.channels],
            "mean": [float(v) for v in self.mean],
            "std": [float(v) for v in self.std],
            "centroids": [[float(v) for v in row] for row in self.centroids],
            "counts": [int(n) for n in self.counts],
            "names": [str(n) for n in self.names],
            "note": self.note,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> ContextSpec:
        """Rebuild a spec written by `to_json`; ValueError names the defect (lengths, K=0, NaN...)."""
        if not isinstance(d, dict):
            raise ValueError(f"contexts: expected a JSON object, got {type(d).__name__}")
        if d.get("version", SPEC_VERSION) != SPEC_VERSION:
            raise ValueError(f"contexts: version {d.get('version')!r} is not {SPEC_VERSION}")
        keys = ("scope", "channels", "mean", "std", "centroids", "counts", "names")
        missing = [k for k in keys if k not in d]
        if missing:
            raise ValueError(f"contexts: missing key(s) {missing}")
        try:
            return cls(
                scope=str(d["scope"]),
                channels=[_as_int(c, "channels") for c in _as_list(d["channels"], "channels")],
                mean=[_as_float(v, "mean") for v in _as_list(d["mean"], "mean")],
                std=[_as_float(v, "std") for v in _as_list(d["std"], "std")],
                centroids=[
                    [_as_float(v, "centroids") for v in _as_list(row, "centroids row")]
                    for row in _as_list(d["centroids"], "centroids")
                ],
                counts=[_as_int(n, "counts") for n in _as_list(d["counts"], "counts")],
                names=[str(n) for n in _as_list(d["names"], "names")],
                note=str(d.get("note", "")),
            )
        except (TypeError, ValueError) as err:
            raise ValueError(f"contexts: {err}") from None


def _as_list(v: Any, what: str) -> list[Any]:
    if not isinstance(v, list):
        raise ValueError(f"{what} must be a list, got {type(v).__name__}")
    return v


def _as_int(v: Any, what: str) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
        raise ValueError(f"{what} must hold integers, got {v!r}")
    return int(v)


def _as_float(v: Any, what: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float, np.floating, np.integer)):
        raise ValueError(f"{what} must hold numbers, got {v!r}")
    return float(v)


def _validate(s: ContextSpec) -> None:
    """Shape and value checks shared by construction and from_json."""
    if s.scope not in SCOPES:
        raise ValueError(f"scope must be one of {SCOPES}, got {s.scope!r}")
    if not s.channels or min(s.channels) < 0:
        raise ValueError(f"channels must be a non-empty list of non-negative ints, got {s.channels}")
    f = 2 * len(s.channels)
    if len(s.mean) != f or len(s.std) != f:
        raise ValueError(f"mean and std need {f} entries (2 per channel), got {len(s.mean)} and {len(s.std)}")
    k = len(s.centroids)
    if k == 0:
        raise ValueError("no contexts (K=0): centroids is empty")
    if s.scope == "dataset" and k != 1:
        raise ValueError(f"scope 'dataset' has exactly one context, got {k}")
    if any(len(row) != f for row in s.centroids):
        raise ValueError(f"every centroid needs {f} entries, got lengths {[len(r) for r in s.centroids]}")
    if len(s.counts) != k or len(s.names) != k:
        raise ValueError(f"counts and names need {k} entries, got {len(s.counts)} and {len(s.names)}")
    if len(set(s.names)) != k:
        raise ValueError(f"context names must be distinct, got {s.names}")
    if any(n < 0 for n in s.counts):
        raise ValueError(f"counts must be non-negative, got {s.counts}")
    values = [*s.mean, *s.std, *(v for row in s.centroids for v in row)]
    if not all(math.isfinite(v) for v in values):
        raise ValueError("mean, std and centroids must be finite (found NaN or inf)")
    if any(v <= 0 for v in s.std):
        raise ValueError(f"std entries must be positive, got {s.std}")


# ------------------------------------------------------------------------------- fitting
def fit_contexts(
    x: np.ndarray,
    subjects: np.ndarray,
    channels: list[int],
    scope: str,
    n_contexts: int,
    seed: int,
    *,
    min_size: int = MIN_CONTEXT_WINDOWS,
) -> tuple[ContextSpec, np.ndarray]:
    """Fit contexts on TRAINING windows; returns the spec and each training window's context id [N].

    x: [N, T, C] training windows; subjects: [N] subject ids (used by scope "subject" only);
    channels: the modality channels the features read.  Labels are not an argument: the contexts
    cannot depend on them.  scope "context": k-means with K = n_contexts; while a cluster holds
    fewer than `min_size` training windows, K is reduced by one and k-means refitted (recorded in
    spec.note), down to K = 1.  scope "subject": a subject with fewer than `min_size` windows is
    an error (its RUS table would be noise).
    """
    if scope not in SCOPES:
        raise ValueError(f"scope must be one of {SCOPES}, got {scope!r}")
    x = np.asarray(x)
    if x.ndim != 3 or len(x) == 0:
        raise ValueError(f"x must be a non-empty [N, T, C] array, got shape {x.shape}")
    feats = window_features(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)), list(channels))
    raw = feats.double().numpy()
    mean = raw.mean(0)
    std = raw.std(0)
    std = np.where(std > 1e-12, std, 1.0)  # a constant feature carries no context: leave it unscaled
    z = (raw - mean) / std
    common = {"channels": [int(c) for c in channels], "mean": mean.tolist(), "std": std.tolist()}
    if scope == "dataset":
        spec = ContextSpec(
            scope="dataset", centroids=[z.mean(0).tolist()], counts=[len(x)], names=["dataset"], **common
        )
        return spec, np.zeros(len(x), dtype=np.int64)
    if scope == "subject":
        return _fit_subjects(z, np.asarray(subjects), common, min_size)
    return _fit_kmeans(z, feats, common, n_contexts, seed, min_size)


def _fit_subjects(
    z: np.ndarray, subjects: np.ndarray, common: dict[str, Any], min_size: int
) -> tuple[ContextSpec, np.ndarray]:
    """One context per training subject.  The training windows' ids are their own subject's context,
    not the nearest centroid: a per-subject RUS table is by definition the PID over that subject's
    windows (the reference's scope), and a training window's subject is known, label-free metadata.
    Only windows of subjects never seen in training (val/test) need the nearest-centroid rule."""
    if subjects.shape != z.shape[:1]:
        raise ValueError(f"subjects must have shape ({len(z)},), got {subjects.shape}")
    uniq, ids, counts = np.unique(subjects, return_inverse=True, return_counts=True)
    small = {int(s): int(n) for s, n in zip(uniq, counts, strict=True) if n < min_size}
    if small:
        raise ValueError(
            f"scope 'subject': training subject(s) {small} have fewer than {min_size} windows "
            "(rus.min_context_windows); their RUS tables would be noise. Use scope 'context' "
            "or lower the minimum"
        )
    centroids = [z[ids == k].mean(0).tolist() for k in range(len(uniq))]
    spec = ContextSpec(
        scope="subject",
        centroids=centroids,
        counts=counts.tolist(),
        names=[f"subject{int(s)}" for s in uniq],
        **common,
    )
    return spec, ids.astype(np.int64)


def _fit_kmeans(
    z: np.ndarray, feats: torch.Tensor, common: dict[str, Any], n_contexts: int, seed: int, min_size: int
) -> tuple[ContextSpec, np.ndarray]:
    """k-means with K reduced until every context keeps at least min_size training windows."""
    if n_contexts < 1:
        raise ValueError(f"n_contexts must be >= 1, got {n_contexts}")
    notes = []
    k = min(n_contexts, len(z))
    while True:
        centroids = _order_centroids(kmeans(z, k, seed)) if k > 1 else z.mean(0, keepdims=True)
        spec = ContextSpec(
            scope="context",
            centroids=centroids.tolist(),
            counts=[0] * k,
            names=[f"ctx{i}" for i in range(k)],
            **common,
        )
        # the ids come from `assign` on the float32 features, exactly what the model computes later
        ids = spec.assign(feats).numpy().astype(np.int64)
        counts = np.bincount(ids, minlength=k)
        if k == 1 or counts.min() >= min_size:
            break
        notes.append(
            f"K={k} gave context sizes {counts.tolist()} (< {min_size} windows): K reduced to {k - 1}"
        )
        k -= 1
    if k < n_contexts and not notes:
        notes.append(f"K reduced from {n_contexts} to {k}: only {len(z)} training windows")
    spec = ContextSpec(
        scope="context",
        centroids=spec.centroids,
        counts=counts.tolist(),
        names=spec.names,
        note="; ".join(notes),
        **common,
    )
    return spec, ids


def _order_centroids(c: np.ndarray) -> np.ndarray:
    """A canonical order, so ids do not depend on which restart won: ascending mean of the
    standardised std features (ctx0 = the calmest windows), ties by the full centroid."""
    f = c.shape[1] // 2
    keys = [(float(row[f:].mean()), *map(float, row)) for row in c]
    return c[sorted(range(len(c)), key=lambda i: keys[i])]


def kmeans(z: np.ndarray, k: int, seed: int, n_restarts: int = N_RESTARTS) -> np.ndarray:
    """[k, F] centroids of seeded k-means on z [N, F], the lowest-inertia of `n_restarts`
    k-means++ starts (scikit-learn's, through timoe.interactions.discretize.kmeans)."""
    return shared_kmeans(z, k, seed, n_init=n_restarts, max_iter=MAX_ITER)
