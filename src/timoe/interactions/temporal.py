"""Temporal RUS: R, U1, U2, S per modality pair and lag, from the training split only.

Per modality we take one scalar per time step: the first principal component of the modality's
channels (standardised with training statistics; sign fixed so the largest loading is positive).
PC1 keeps the signed, dominant direction of the signal, which a magnitude would fold away (and
for a one-channel modality it is just the standardised channel); `feature="magnitude"` (the L2
norm of the standardised channels) is available for orientation-free comparisons.  The scalar is
discretised with cfg.n_bins bins (cfg.discretizer), fitted on the training windows.

For lag τ a sample is (X1_{t−τ}, X2_{t−τ}, Y_t) with both positions inside the same window, so a
pair never crosses a recording or subject boundary (windows lie inside one recording).  Forms:
- "lagged_mi" (the reference code's): PID of I(Y_t; X1_{t−τ}, X2_{t−τ}).
- "directed" (default): condition on the target's past.  The PID of (X1, X2; Y_t) is computed within
  each stratum of the past summary — Y_{t−h} itself (cfg.past_bins = 0), or Y_{t−h} crossed with
  cfg.past_bins quantile bins of how long Y has held that value at t − h (a semi-Markov summary of
  Y^{t−h}) — and averaged with the strata's weights p(stratum): the conditional PID, whose total is
  I(X1_{t−τ}, X2_{t−τ}; Y_t | past).  h = cfg.past_horizon: h = 1 (default) is the directed-
  information conditioning on Y_{t−1}; h > 1 is a conditioned PID on an older, coarser past (not
  DI(τ)), which leaves the label's dynamics between t − h and t in the estimate — on data whose
  labels rarely change from one step to the next, H(Y_t | Y_{t−1}) bounds every h = 1 term near 0.
  Samples need a valid Y_{t−h} in the same window (t ≥ max(τ, h)).
With one label per window (sequence_level=True), each window gives one sample: drop its last τ steps,
mean-pool each modality's scalar, pair with the window label (as the reference does); no target
past exists there, so the form is always "lagged_mi".
With cfg.estimator "exact", all pairs × lags (× strata) are solved in one batched exact PID call;
"batch" / "multiscale" use the raw channels instead, see temporal_neural.py.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
import polars as pl
from tqdm.auto import tqdm

from timoe.config import RusConfig
from timoe.interactions._samples import label_codes, past_strata, step_index, window_index
from timoe.interactions.discretize import Discretizer
from timoe.interactions.exact import exact_pid, joint_counts
from timoe.interactions.temporal_neural import neural_rows

Feature = Literal["pca", "magnitude"]
COLUMNS = ("pair", "lag", "R", "U1", "U2", "S", "total", "estimator", "form", "n_samples", "seconds")


class ScalarFeature:
    """Per-step scalar of one modality's channels, fitted on training data (fit / transform)."""

    def __init__(self, kind: Feature = "pca") -> None:
        if kind not in ("pca", "magnitude"):
            raise ValueError(f"unknown feature {kind!r}")
        self.kind = kind

    def fit(self, x: np.ndarray) -> ScalarFeature:
        flat = np.asarray(x, dtype=np.float64).reshape(-1, x.shape[-1])
        self.mean_ = flat.mean(0)
        std = flat.std(0)
        self.std_ = np.where(std > 0, std, 1.0)
        z = (flat - self.mean_) / self.std_
        _, vecs = np.linalg.eigh(z.T @ z / max(len(z), 1))
        pc = vecs[:, -1]
        self.loading_ = pc * (1.0 if pc[np.abs(pc).argmax()] >= 0 else -1.0)
        return self

    def transform(self, x: np.ndarray) -> np.ndarray:
        z = (np.asarray(x, dtype=np.float64) - self.mean_) / self.std_
        return np.linalg.norm(z, axis=-1) if self.kind == "magnitude" else z @ self.loading_


def _check_inputs(x: np.ndarray, modalities: Mapping[str, Sequence[int]]) -> list[str]:
    if x.ndim != 3:
        raise ValueError(f"x must have shape (N, T, C), got {x.shape}")
    names = list(modalities)
    if len(names) < 2:
        raise ValueError("need at least two modalities to form pairs")
    for name, chans in modalities.items():
        if "|" in name:
            raise ValueError(f"modality name {name!r} must not contain '|'")
        if len(chans) == 0 or min(chans) < 0 or max(chans) >= x.shape[2]:
            raise ValueError(f"modality {name!r} has channels outside 0..{x.shape[2] - 1}")
    return names


def compute_temporal_rus(
    x: np.ndarray,
    step_labels: np.ndarray | None,
    modalities: Mapping[str, Sequence[int]],
    cfg: RusConfig,
    *,
    window_labels: np.ndarray | None = None,
    sequence_level: bool = False,
    seed: int = 0,
    feature: Feature = "pca",
) -> pl.DataFrame:
    """RUS per modality pair (in the order of `modalities`, i<j) and lag, from TRAINING windows only.

    x: (N, T, C) training windows; step_labels: (N, T) ints, −1 = ignore (unused when
    sequence_level); window_labels: (N,) ints for sequence-level labels.  Returns a polars frame
    with columns pair ("a|b"), lag, R, U1, U2, S, total (bits), estimator, form, n_samples and
    seconds (the call's wall time shared equally over its rows).
    """
    t0 = time.perf_counter()
    x = np.asarray(x)
    names = _check_inputs(x, modalities)
    pairs = [(a, b) for i, a in enumerate(names) for b in names[i + 1 :]]
    labels, form = _labels_and_form(x, step_labels, window_labels, sequence_level, cfg)
    if cfg.estimator != "exact":
        rows = neural_rows(x, labels, modalities, pairs, cfg, form, sequence_level, seed)
    else:
        rows = _exact_rows(x, labels, modalities, pairs, cfg, form, sequence_level, seed, feature)
    return _frame(rows, pairs, t0)


def _labels_and_form(
    x: np.ndarray,
    step_labels: np.ndarray | None,
    window_labels: np.ndarray | None,
    sequence_level: bool,
    cfg: RusConfig,
) -> tuple[np.ndarray, str]:
    """The labels the estimate is about, (N,) or (N, T), and the form it can take, checked."""
    if sequence_level:
        if window_labels is None or np.asarray(window_labels).shape != x.shape[:1]:
            raise ValueError("sequence_level=True needs window_labels of shape (N,)")
        if cfg.form == "directed":
            warnings.warn(
                "sequence-level labels have no target past: computing the lagged_mi form", stacklevel=3
            )
        return np.asarray(window_labels), "lagged_mi"
    if step_labels is None or np.asarray(step_labels).shape != x.shape[:2]:
        raise ValueError("step_labels must have shape (N, T)")
    if cfg.form == "directed" and cfg.past_horizon >= x.shape[1]:
        # no target step has its past inside the window: every row would be an empty table
        raise ValueError(
            f"rus.past_horizon={cfg.past_horizon} needs windows longer than that (T = {x.shape[1]})"
        )
    return np.asarray(step_labels), cfg.form


def _exact_rows(
    x: np.ndarray,
    labels: np.ndarray,
    modalities: Mapping[str, Sequence[int]],
    pairs: list[tuple[str, str]],
    cfg: RusConfig,
    form: str,
    sequence_level: bool,
    seed: int,
    feature: Feature,
) -> list[tuple[Any, ...]]:
    """Rows (pair, lag, R, U1, U2, S, total, "exact", form, n_samples) from one batched exact solve."""
    feats = {
        m: ScalarFeature(feature).fit(x[:, :, list(ch)]).transform(x[:, :, list(ch)])
        for m, ch in modalities.items()
    }
    if sequence_level:
        tables, meta = _sequence_tables(feats, labels, pairs, cfg, seed)
    else:
        tables, meta = _step_tables(feats, labels, pairs, cfg, seed)
    res = exact_pid(np.concatenate(tables), tol=cfg.solver_tol, device=cfg.device)
    comps = np.stack([res.redundancy, res.unique1, res.unique2, res.synergy, res.total], 1)
    rows = []
    start = 0
    for pair, lag, weights, n_samples in meta:
        k = len(weights)
        w = weights / weights.sum() if weights.sum() > 0 else weights
        vals = (w[:, None] * comps[start : start + k]).sum(0)  # conditional PID: strata averaged by p(s)
        start += k
        rows.append((f"{pair[0]}|{pair[1]}", lag, *map(float, vals), "exact", form, n_samples))
    return rows


def _frame(rows: list[tuple[Any, ...]], pairs: list[tuple[str, str]], t0: float) -> pl.DataFrame:
    order = {f"{a}|{b}": i for i, (a, b) in enumerate(pairs)}
    rows.sort(key=lambda r: (order[r[0]], r[1]))  # pair-major, then lag
    seconds = (time.perf_counter() - t0) / max(len(rows), 1)
    return pl.DataFrame([(*r, seconds) for r in rows], schema=list(COLUMNS), orient="row").with_columns(
        pl.col("lag").cast(pl.Int64), pl.col("n_samples").cast(pl.Int64)
    )


Meta = list[tuple[tuple[str, str], int, np.ndarray, int]]


def _step_tables(
    feats: dict[str, np.ndarray], labels: np.ndarray, pairs: list[tuple[str, str]], cfg: RusConfig, seed: int
) -> tuple[list[np.ndarray], Meta]:
    y, n_classes = label_codes(labels)
    codes = {
        m: Discretizer(cfg.n_bins, cfg.discretizer, seed=seed)
        .fit(f.ravel())
        .transform(f.ravel())
        .reshape(f.shape)
        for m, f in feats.items()
    }
    directed = cfg.form == "directed"
    past, n_strata = past_strata(y, n_classes, cfg.past_bins) if directed else (y, 1)
    shape = (cfg.n_bins, cfg.n_bins, n_classes)
    tables, meta = [], []
    for lag in tqdm(cfg.lags, desc="RUS tables (lags)", disable=None):  # a bar on terminals only
        wi, ti = step_index(y, lag, directed, cfg.max_samples, seed, cfg.past_horizon)
        ys = y[wi, ti]
        strata = past[wi, ti - cfg.past_horizon] if directed else np.zeros(len(wi), dtype=np.int64)
        weights = np.bincount(strata, minlength=n_strata).astype(np.float64)
        for a, b in pairs:
            tables.append(
                joint_counts(
                    codes[a][wi, ti - lag], codes[b][wi, ti - lag], ys, shape, group=strata, n_groups=n_strata
                )
            )
            meta.append(((a, b), lag, weights, len(ys)))
    return tables, meta


def _sequence_tables(
    feats: dict[str, np.ndarray], labels: np.ndarray, pairs: list[tuple[str, str]], cfg: RusConfig, seed: int
) -> tuple[list[np.ndarray], Meta]:
    steps = next(iter(feats.values())).shape[1]
    y, n_classes = label_codes(labels)
    shape = (cfg.n_bins, cfg.n_bins, n_classes)
    tables, meta = [], []
    for lag in cfg.lags:
        rows = window_index(y, lag, steps, cfg.max_samples, seed)
        ys = y[rows]
        xs = {}
        for m, f in feats.items():  # drop the last τ steps, mean-pool, discretise (fitted on train)
            pooled = f[rows, : steps - lag].mean(1)
            xs[m] = (
                Discretizer(cfg.n_bins, cfg.discretizer, seed=seed).fit_transform(pooled)
                if len(rows)
                else np.zeros(0, dtype=np.int64)
            )
        for a, b in pairs:
            tables.append(joint_counts(xs[a], xs[b], ys, shape)[None])
            meta.append(((a, b), lag, np.array([float(len(ys))]), len(ys)))
    return tables, meta
