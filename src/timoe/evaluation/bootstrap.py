"""Paired hierarchical bootstrap of an accuracy difference over test subjects × seeds.

Design. Two models A and B are scored on the same test windows. For every seed s both ran and
every test subject j, a cell holds each model's accuracy on that subject's windows. The estimate
is the window-weighted (pooled) accuracy difference D = Σ_sj n_j (a_sj − b_sj) / (S Σ_j n_j),
the difference of the accuracies the report shows. A resample draws seeds and subjects with
replacement (multiplicities v [S], w [J]), A and B together (paired):
    D* = Σ_sj v_s w_j n_j d_sj / (Σ_s v_s · Σ_j w_j n_j).
The subject is the unit a deployed model generalises to; the seed is the training randomness.
Both are resampled because both vary in a rerun (Bouthillier et al., MLSys 2021).

Inference uses the bootstrap's standard error with a t reference, not the percentile interval:
with 3 seeds the percentile interval has normal tails and a resample of n units has only
(n − 1)/n of the variance, so a one-sided 5 % test rejected a true null 20 % of the time when the
seed spread dominated (simulated, 3 seeds × 9 subjects). Here the SE is corrected by that factor
per design term (`small_sample_factor`) and the t degrees of freedom come from the two-way
random-effects model of the cells (Satterthwaite), which falls to S − 1 when the seeds dominate:
6.8 %, 4.5 % and 3.3 % in the three simulated regimes (seeds, subjects, both dominant;
tests/test_bootstrap.py checks the first).

The probability of improvement (rliable's definition, per task, averaged over tasks): per test
subject, the share of (run of A, run of B) pairs in which A's accuracy is higher (ties count half),
averaged over subjects; its interval comes from the same resamples.

All of it is numpy on [B, S] and [B, J] multiplicity matrices: 10 000 resamples of a 10 × 30
design take milliseconds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import polars as pl


@dataclass(frozen=True)
class Cells:
    """Per (seed, subject) accuracies of A and B on the test windows both were scored on.

    acc_a, acc_b: [S, J]; windows: [J] test windows per subject; seeds [S], subjects [J] ids.
    """

    acc_a: np.ndarray
    acc_b: np.ndarray
    windows: np.ndarray
    seeds: tuple[int, ...]
    subjects: tuple[int, ...]

    @property
    def diff(self) -> np.ndarray:
        """[S, J] per-cell accuracy differences A − B."""
        return self.acc_a - self.acc_b


@dataclass(frozen=True)
class BootstrapResult:
    """The estimate, its bootstrap standard error, the t degrees of freedom, and the variance
    components (seed, subject, residual) of the per-cell differences; prob_improvement with its
    90 % percentile interval."""

    estimate: float
    se: float
    df: float
    var_seed: float
    var_subject: float
    var_residual: float
    prob_improvement: float
    pi_low: float
    pi_high: float
    n_seeds: int
    n_subjects: int


def cells_from_scores(scores: pl.DataFrame, a: str, b: str) -> Cells | str:
    """The paired cells of models `a` and `b` from per (model, seed, subject) scores (columns
    model, seed, subject, n, correct); a reason string when they share no seed or subject."""
    both = []
    for model in (a, b):
        sub = scores.filter(pl.col("model") == model).select(
            "seed", "subject", pl.col("n").alias(f"n_{model}"), pl.col("correct").alias(f"c_{model}")
        )
        if sub.is_empty():
            return f"{model} has no per-subject test scores"
        both.append(sub)
    joined = both[0].join(both[1], on=["seed", "subject"], how="inner")
    seeds = sorted(joined["seed"].unique().to_list())
    subjects = sorted(joined["subject"].unique().to_list())
    # a complete seed × subject grid: keep the seeds that scored every shared subject
    complete = joined.group_by("seed").agg(pl.len().alias("k")).filter(pl.col("k") == len(subjects))
    seeds = sorted(complete["seed"].to_list())
    if not seeds or not subjects:
        return f"{a} and {b} share no seed with test predictions"
    joined = joined.filter(pl.col("seed").is_in(seeds)).sort(["seed", "subject"])
    shape = (len(seeds), len(subjects))
    n_a = joined[f"n_{a}"].to_numpy().reshape(shape).astype(float)
    n_b = joined[f"n_{b}"].to_numpy().reshape(shape).astype(float)
    acc_a = joined[f"c_{a}"].to_numpy().reshape(shape) / n_a
    acc_b = joined[f"c_{b}"].to_numpy().reshape(shape) / n_b
    return Cells(acc_a, acc_b, n_a.mean(axis=0), tuple(seeds), tuple(subjects))


def _multiplicities(rng: np.random.Generator, n: int, size: int) -> np.ndarray:
    """[size, n] counts of each of n units in a resample of n drawn with replacement."""
    return rng.multinomial(n, np.full(n, 1.0 / n), size=size).astype(float)


def variance_components(diff: np.ndarray) -> tuple[float, float, float, float]:
    """Two-way random-effects ANOVA (one observation per cell) of diff [S, J]:
    (σ²_seed, σ²_subject, σ²_residual, Satterthwaite df of the grand mean).

    E[MS_seed] = σ²_e + J σ²_a, E[MS_subj] = σ²_e + S σ²_b, E[MS_res] = σ²_e; negative moment
    estimates are set to 0. Var(grand mean) = σ²_a/S + σ²_b/J + σ²_e/(SJ)
    = (MS_seed + MS_subj − MS_res)/(SJ); the df returned is Satterthwaite's for its two factor
    terms (see the comment below).
    """
    s, j = diff.shape
    grand = diff.mean()
    if s < 2 and j < 2:
        return 0.0, 0.0, 0.0, float("nan")
    if j == 1 or s == 1:  # one factor: the plain variance of the units, n − 1 df
        v = float(diff.ravel().var(ddof=1))
        return (v, 0.0, 0.0, float(s - 1)) if j == 1 else (0.0, v, 0.0, float(j - 1))
    row, col = diff.mean(axis=1), diff.mean(axis=0)
    ms_a = j * float(((row - grand) ** 2).sum()) / (s - 1)
    ms_b = s * float(((col - grand) ** 2).sum()) / (j - 1)
    resid = diff - row[:, None] - col[None, :] + grand
    ms_e = float((resid**2).sum()) / ((s - 1) * (j - 1))
    var_a, var_b = max(0.0, (ms_a - ms_e) / j), max(0.0, (ms_b - ms_e) / s)
    # Var(grand mean) = MS_seed/(SJ) [the seed means' spread, S − 1 df] + σ²_subject/J [J − 1 df].
    # The full Satterthwaite form also carries −MS_res, whose sampling noise drives its df to 1
    # whenever the subject term is near 0 (seen on simulated data); without it the df stays
    # between min(S, J) − 1 and S + J − 2: S − 1 when the seeds dominate, J − 1 when subjects do.
    v1, v2 = ms_a / (s * j), var_b / j
    den = v1**2 / (s - 1) + v2**2 / (j - 1)
    df = (v1 + v2) ** 2 / den if den > 0 else float(s + j - 2)
    return var_a, var_b, ms_e, float(df)


def small_sample_factor(diff: np.ndarray) -> float:
    """Factor on the bootstrap SE that undoes its small-sample bias: resampling n units gives
    (n − 1)/n of the unbiased variance of their mean, per factor. With the seed term v1 and the
    subject term v2 of `variance_components`, sqrt((v1 + v2) / ((S−1)/S v1 + (J−1)/J v2)):
    sqrt(3/2) at 3 seeds when the seeds dominate, 1 as S and J grow."""
    s, j = diff.shape
    if s < 2 or j < 2:
        n = max(s, j)
        return math.sqrt(n / (n - 1)) if n > 1 else 1.0
    var_a, var_b, var_e, _ = variance_components(diff)
    v1, v2 = (var_a * j + var_e) / (s * j), var_b / j
    shrunk = (s - 1) / s * v1 + (j - 1) / j * v2
    return math.sqrt((v1 + v2) / shrunk) if shrunk > 0 else 1.0


def _prob_improvement(cells: Cells, v: np.ndarray, w: np.ndarray) -> np.ndarray:
    """[B] probability of improvement per resample: per subject, the v-weighted share of (seed of
    A, seed of B) pairs with A ahead (ties half), averaged over the w-weighted subjects."""
    a, b = cells.acc_a, cells.acc_b  # [S, J]
    per_subject = np.empty((v.shape[0], a.shape[1]))
    total = v.sum(axis=1) ** 2
    for j in range(a.shape[1]):
        wins = (a[:, j, None] > b[None, :, j]) + 0.5 * (a[:, j, None] == b[None, :, j])  # [S, S]
        per_subject[:, j] = ((v @ wins) * v).sum(axis=1) / total
    return (per_subject * w).sum(axis=1) / w.sum(axis=1)


def hierarchical_bootstrap(cells: Cells, n_resamples: int, seed: int | list[int]) -> BootstrapResult:
    """Resample seeds and subjects (paired A, B) `n_resamples` times with a seeded generator."""
    rng = np.random.default_rng(seed)
    s, j = cells.diff.shape
    weighted = cells.diff * cells.windows[None, :]  # [S, J]
    estimate = float(weighted.sum() / (s * cells.windows.sum()))
    v = _multiplicities(rng, s, n_resamples)  # [B, S]
    w = _multiplicities(rng, j, n_resamples)  # [B, J]
    boot = ((v @ weighted) * w).sum(axis=1) / (v.sum(axis=1) * (w @ cells.windows))  # [B]
    pi = _prob_improvement(cells, v, w)
    var_a, var_b, var_e, df = variance_components(cells.diff)
    lo, hi = np.quantile(pi, [0.05, 0.95])
    return BootstrapResult(
        estimate=estimate,
        se=float(boot.std(ddof=1)) * small_sample_factor(cells.diff) if n_resamples > 1 else float("nan"),
        df=df,
        var_seed=var_a,
        var_subject=var_b,
        var_residual=var_e,
        prob_improvement=float(_prob_improvement(cells, np.ones((1, s)), np.ones((1, j)))[0]),
        pi_low=float(lo),
        pi_high=float(hi),
        n_seeds=s,
        n_subjects=j,
    )


def mean_variance(
    var_seed: float, var_subject: float, var_residual: float, seeds: int, subjects: int
) -> float:
    """Var of the grand mean of a seeds × subjects design under the two-way random-effects model."""
    return var_seed / seeds + var_subject / subjects + var_residual / (seeds * subjects)


def seeds_for_se(res: BootstrapResult, target_se: float) -> int | None:
    """The fewest seeds at which the standard error falls to `target_se`, the test subjects kept.

    The bootstrap SE at the current seeds is scaled by the components' ratio
    sqrt(Var(S')/Var(S)); solving Var(S) (target/SE)² ≥ σ²_a/S' + σ²_b/J + σ²_e/(S'J) for S'.
    None when the subject term σ²_b/J alone exceeds the target (more seeds cannot reach it).
    """
    if not (math.isfinite(res.se) and res.se > 0):
        return None
    now = mean_variance(res.var_seed, res.var_subject, res.var_residual, res.n_seeds, res.n_subjects)
    if now <= 0:
        return res.n_seeds
    budget = now * (target_se / res.se) ** 2 - res.var_subject / res.n_subjects
    per_seed = res.var_seed + res.var_residual / res.n_subjects
    if per_seed <= 0:
        return res.n_seeds if budget >= 0 else None
    if budget <= 0:
        return None
    return max(2, math.ceil(per_seed / budget - 1e-9))
