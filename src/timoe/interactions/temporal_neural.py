"""Temporal RUS with the neural estimators (BATCH per pair × lag, or one multi-scale model per pair).

Unlike the exact path, no scalar feature or binning: X1, X2 are the modalities' raw channels at
t − τ (step-level) or their channel means over the first T − τ steps (sequence-level).  The directed
form hands the estimator the target's past stratum (at t − rus.past_horizon) as context (conditional
PID: discriminators see the stratum and the coupling pairs samples of the same stratum only).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from timoe.config import RusConfig
from timoe.interactions._samples import label_codes, past_strata, step_index, window_index
from timoe.interactions.batch import BatchPID, batch_pid
from timoe.interactions.lagstack import stacked_pid
from timoe.interactions.multiscale import LagSamples, multiscale_pid

_MIN_SAMPLES = 16


def _lag_samples(
    x: np.ndarray,
    labels: np.ndarray,
    modalities: Mapping[str, Sequence[int]],
    pair: tuple[str, str],
    cfg: RusConfig,
    form: str,
    sequence_level: bool,
    seed: int,
) -> dict[int, LagSamples]:
    y, n_classes = label_codes(labels)
    ch1, ch2 = list(modalities[pair[0]]), list(modalities[pair[1]])
    out = {}
    if sequence_level:
        for lag in cfg.lags:
            rows = window_index(y, lag, x.shape[1], cfg.max_samples, seed)
            pooled = x[rows, : x.shape[1] - lag].mean(1)
            out[lag] = LagSamples(pooled[:, ch1], pooled[:, ch2], y[rows])
        return out
    directed = form == "directed"
    past, _ = past_strata(y, n_classes, cfg.past_bins) if directed else (y, 1)
    for lag in cfg.lags:
        wi, ti = step_index(y, lag, directed, cfg.max_samples, seed, cfg.past_horizon)
        src = x[wi, ti - lag]
        context = past[wi, ti - cfg.past_horizon] if directed else None
        out[lag] = LagSamples(src[:, ch1], src[:, ch2], y[wi, ti], context)
    return out


def _row(
    pair: tuple[str, str], lag: int, est: BatchPID | None, n: int, name: str, form: str
) -> tuple[Any, ...]:
    vals = (0.0,) * 5 if est is None else (est.redundancy, est.unique1, est.unique2, est.synergy, est.total)
    return (f"{pair[0]}|{pair[1]}", lag, *vals, name, form, n)


def neural_rows(
    x: np.ndarray,
    labels: np.ndarray,
    modalities: Mapping[str, Sequence[int]],
    pairs: list[tuple[str, str]],
    cfg: RusConfig,
    form: str,
    sequence_level: bool,
    seed: int,
) -> list[tuple[Any, ...]]:
    """Rows (pair, lag, R, U1, U2, S, total, estimator, form, n_samples) for cfg.estimator."""
    _, n_classes = label_codes(labels)
    rows = []
    # disable=None: a bar on a terminal, nothing in a Snakemake job's log file
    for pair in tqdm(pairs, desc=f"{cfg.estimator} RUS (pairs)", disable=None):
        per_lag = _lag_samples(x, labels, modalities, pair, cfg, form, sequence_level, seed)
        usable = {lag: s for lag, s in per_lag.items() if len(s.y) >= _MIN_SAMPLES}
        if cfg.estimator == "multiscale" and usable:
            est = multiscale_pid(usable, cfg.batch, n_classes=n_classes, device=cfg.device, seed=seed)
        elif cfg.estimator == "stacked" and usable:
            est = stacked_pid(usable, cfg.batch, n_classes=n_classes, device=cfg.device, seed=seed)
        else:
            est = {
                lag: batch_pid(
                    s.x1,
                    s.x2,
                    s.y,
                    cfg.batch,
                    context=s.context,
                    n_classes=n_classes,
                    device=cfg.device,
                    seed=seed,
                )
                for lag, s in usable.items()
            }
        rows += [_row(pair, lag, est.get(lag), len(s.y), cfg.estimator, form) for lag, s in per_lag.items()]
    return rows
