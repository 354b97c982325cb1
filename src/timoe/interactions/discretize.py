"""Discretise continuous features into integer codes for the exact (discrete) PID.

Fit on training data only, then apply to any data.  Three methods:
- quantile: per column, edges at the training quantiles i/n_bins (ties merged, so a column with
  few distinct values gets fewer occupied bins);
- uniform: per column, n_bins equal-width bins over the training range (values outside clip to
  the end bins);
- kmeans: rows are points (columns standardised with training mean/std), scikit-learn's k-means
  (`kmeans` below, also the contexts' one); the code is the nearest centroid.
Codes are int64 in [0, n_bins).  quantile/uniform keep the input's shape ((N,) → (N,), (N, D) →
(N, D)); kmeans maps (N,) or (N, D) to (N,).
"""

from __future__ import annotations

from typing import Literal

import numpy as np

Method = Literal["quantile", "uniform", "kmeans"]


def _as_2d(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2:
        raise ValueError(f"expected a (N,) or (N, D) array, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError("features must be finite")
    return x


class Discretizer:
    """fit / transform / fit_transform; deterministic for a given seed."""

    def __init__(
        self, n_bins: int = 8, method: Method = "quantile", *, seed: int = 0, max_iter: int = 100
    ) -> None:
        if n_bins < 1:
            raise ValueError("n_bins must be positive")
        if method not in ("quantile", "uniform", "kmeans"):
            raise ValueError(f"unknown discretisation method {method!r}")
        self.n_bins, self.method, self.seed, self.max_iter = n_bins, method, seed, max_iter
        self.edges_: list[np.ndarray] | None = None
        self.centers_: np.ndarray | None = None
        self.mean_: np.ndarray | None = None
        self.std_: np.ndarray | None = None
        self.n_features_: int | None = None

    # ------------------------------------------------------------------ fit
    def fit(self, x: np.ndarray) -> Discretizer:
        x2 = _as_2d(x)
        if len(x2) == 0:
            raise ValueError("cannot fit on zero samples")
        self.n_features_ = x2.shape[1]
        if self.method == "quantile":
            qs = np.linspace(0.0, 1.0, self.n_bins + 1)[1:-1]
            self.edges_ = [np.unique(np.quantile(col, qs)) for col in x2.T]
        elif self.method == "uniform":
            self.edges_ = [np.linspace(col.min(), col.max(), self.n_bins + 1)[1:-1] for col in x2.T]
        else:
            self.mean_ = x2.mean(0)
            self.std_ = np.where(x2.std(0) > 0, x2.std(0), 1.0)
            self.centers_ = _kmeans((x2 - self.mean_) / self.std_, self.n_bins, self.seed, self.max_iter)
        return self

    # ------------------------------------------------------------ transform
    def transform(self, x: np.ndarray) -> np.ndarray:
        if self.n_features_ is None:
            raise RuntimeError("Discretizer.transform called before fit")
        arr = np.asarray(x)
        x2 = _as_2d(arr)
        if x2.shape[1] != self.n_features_:
            raise ValueError(f"fitted on {self.n_features_} feature(s), got {x2.shape[1]}")
        if self.method == "kmeans":
            assert self.centers_ is not None and self.mean_ is not None and self.std_ is not None
            return _nearest((x2 - self.mean_) / self.std_, self.centers_)
        assert self.edges_ is not None
        # side="right": a value equal to an edge goes to the upper bin, so ties never split.
        codes = np.stack(
            [np.searchsorted(e, col, side="right") for e, col in zip(self.edges_, x2.T, strict=True)], 1
        )
        codes = codes.astype(np.int64)
        return codes[:, 0] if arr.ndim == 1 else codes

    def fit_transform(self, x: np.ndarray) -> np.ndarray:
        return self.fit(x).transform(x)


def _nearest(x: np.ndarray, centers: np.ndarray) -> np.ndarray:
    d2 = (x * x).sum(1, keepdims=True) - 2.0 * x @ centers.T + (centers * centers).sum(1)
    return d2.argmin(1).astype(np.int64)


def kmeans(x: np.ndarray, k: int, seed: int, *, n_init: int = 1, max_iter: int = 300) -> np.ndarray:
    """[k, D] centres of scikit-learn's k-means on x [N, D]: k-means++ seeding from `seed`, Lloyd
    iterations until no point changes cluster (tol 0), the lowest-inertia of `n_init` starts.

    Timoe's one k-means (the discretiser's and the contexts'). One OpenMP thread: scikit-learn
    splits the centre sums across threads, so the thread count of a machine would otherwise reach
    the last bits of the centres; the inputs here are small.
    """
    from sklearn.cluster import KMeans
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):
        fitted = KMeans(
            n_clusters=k, n_init=n_init, max_iter=max_iter, tol=0.0, random_state=seed, algorithm="lloyd"
        ).fit(np.asarray(x, dtype=np.float64))
    return fitted.cluster_centers_


def _kmeans(x: np.ndarray, k: int, seed: int, max_iter: int) -> np.ndarray:
    """k-means centres, k shrunk to the number of distinct points, in lexicographic order."""
    k = min(k, len(np.unique(x, axis=0)))
    c = kmeans(x, k, seed, max_iter=max_iter)
    return c[np.lexsort(c.T[::-1])]  # order centres so codes do not depend on the seed's draw order


def discretize(
    x_train: np.ndarray,
    x_apply: np.ndarray | None = None,
    *,
    n_bins: int = 8,
    method: Method = "quantile",
    seed: int = 0,
) -> np.ndarray:
    """Fit on x_train and return the codes of x_apply (default: x_train itself)."""
    disc = Discretizer(n_bins, method, seed=seed).fit(x_train)
    return disc.transform(x_train if x_apply is None else x_apply)
