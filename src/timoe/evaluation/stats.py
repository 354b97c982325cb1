"""Score-based metrics and the paired comparison across seeds."""

from __future__ import annotations

import math

import numpy as np
import polars as pl

from timoe.config import BASELINE_MODELS

# The models every other model is compared with (one list, in config.py).
BASELINES = BASELINE_MODELS


def _binary_auroc(pos: np.ndarray, scores: np.ndarray) -> float:
    """scikit-learn's AUROC of `scores` for the positives `pos` (ties count half); nan without both."""
    from sklearn.metrics import roc_auc_score

    if pos.all() or not pos.any():
        return float("nan")
    return float(roc_auc_score(pos, scores))


def auroc_ovr(y_true: np.ndarray, prob: np.ndarray) -> float:
    """Macro one-vs-rest AUROC over the classes present in y_true (nan if fewer than two).

    prob: (n_samples, n_classes). Each present class is scored against the rest with scikit-learn's
    roc_auc_score; a class absent from y_true has no positives and is left out, where
    `roc_auc_score(multi_class="ovr")` would refuse the whole call.
    """
    y_true = np.asarray(y_true)
    prob = np.asarray(prob, dtype=float)
    classes = np.unique(y_true)
    if len(classes) < 2 or prob.ndim != 2:
        return float("nan")
    return float(np.mean([_binary_auroc(y_true == c, prob[:, c]) for c in classes]))


def paired_t_test(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """Two-sided paired t-test of a - b; returns (mean difference, p-value; nan if undefined)."""
    from scipy import stats

    d = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    if len(d) < 2:
        return float(d.mean()) if len(d) else float("nan"), float("nan")
    if np.allclose(d, d[0]):
        return float(d.mean()), (1.0 if d[0] == 0 else 0.0)
    res = stats.ttest_rel(a, b)
    return float(d.mean()), float(res.pvalue)


def compare_with_best_baseline(runs: pl.DataFrame, metric: str = "accuracy") -> pl.DataFrame:
    """Per data set: every model against the best baseline (by mean metric), paired by seed."""
    rows = []
    for ds in sorted(runs["dataset"].unique().to_list()):
        sub = runs.filter(pl.col("dataset") == ds)
        means = sub.group_by("model").agg(pl.col(metric).mean()).sort("model")
        base = means.filter(pl.col("model").is_in(list(BASELINES)))
        if base.is_empty():
            continue
        best = base.sort(metric, descending=True)["model"][0]
        ref = sub.filter(pl.col("model") == best).select("seed", pl.col(metric).alias("ref"))
        for model in means["model"].to_list():
            if model == best:
                continue
            joined = sub.filter(pl.col("model") == model).select("seed", metric).join(ref, on="seed")
            diff, p = paired_t_test(joined[metric].to_numpy(), joined["ref"].to_numpy())
            rows.append(
                {
                    "dataset": ds,
                    "model": model,
                    "baseline": best,
                    "metric": metric,
                    "n_pairs": joined.height,
                    "mean_diff": diff,
                    "p_value": p if not math.isnan(p) else None,
                }
            )
    schema = {
        "dataset": pl.String,
        "model": pl.String,
        "baseline": pl.String,
        "metric": pl.String,
        "n_pairs": pl.Int64,
        "mean_diff": pl.Float64,
        "p_value": pl.Float64,
    }
    return pl.DataFrame(rows, schema=schema)


def one_sided_t(d: np.ndarray, null: float, alternative: str) -> float:
    """p-value of the one-sample t-test of mean(d) against `null`, H1: mean > null ("greater") or
    mean < null ("less"); nan for fewer than two values.

    Constant differences (zero variance, e.g. identical runs) leave t undefined; the mean then
    either lies on the alternative's side (p = 0) or not (p = 1), which is the limit of the test.
    """
    from scipy import stats

    d = np.asarray(d, dtype=float)
    if len(d) < 2:
        return float("nan")
    mean = float(d.mean())
    if np.allclose(d, d[0], rtol=0.0, atol=1e-12):
        side = mean > null if alternative == "greater" else mean < null
        return 0.0 if side and not math.isclose(mean, null, abs_tol=1e-12) else 1.0
    return float(stats.ttest_1samp(d, popmean=null, alternative=alternative).pvalue)


def tost(d: np.ndarray, margin: float) -> float:
    """Two one-sided tests of equivalence: H1 is -margin < mean(d) < margin; the p-value is the
    larger of the two one-sided p-values (equivalence at level α iff the 1 - 2α CI lies inside)."""
    return max(one_sided_t(d, -margin, "greater"), one_sided_t(d, margin, "less"))


def mean_ci(d: np.ndarray, level: float = 0.90) -> tuple[float, float]:
    """Two-sided t confidence interval of mean(d); 90 % matches one-sided tests at 5 % and TOST."""
    from scipy import stats

    d = np.asarray(d, dtype=float)
    if len(d) < 2:
        return float("nan"), float("nan")
    half = float(stats.t.ppf(0.5 + level / 2, len(d) - 1)) * float(d.std(ddof=1)) / math.sqrt(len(d))
    return float(d.mean()) - half, float(d.mean()) + half


def holm(p_values: np.ndarray | list[float]) -> np.ndarray:
    """Holm's step-down adjusted p-values of one family (nan entries are not in the family).

    With the m finite p sorted ascending, p_(k) becomes max_{i ≤ k} min(1, (m − i + 1) p_(i));
    rejecting where the adjusted p ≤ α controls the family-wise error rate at α under any
    dependence between the tests (Holm 1979).
    """
    p = np.asarray(p_values, dtype=float)
    out = np.full_like(p, np.nan)
    idx = np.flatnonzero(np.isfinite(p))
    m = len(idx)
    if m == 0:
        return out
    order = idx[np.argsort(p[idx], kind="mergesort")]
    scaled = np.minimum(1.0, (m - np.arange(m)) * p[order])
    out[order] = np.maximum.accumulate(scaled)
    return out


def holm_levels(p_values: np.ndarray | list[float], alpha: float) -> np.ndarray:
    """The level Holm tests each finite p at: α / (m − k + 1) for the k-th smallest (nan elsewhere)."""
    p = np.asarray(p_values, dtype=float)
    out = np.full_like(p, np.nan)
    idx = np.flatnonzero(np.isfinite(p))
    order = idx[np.argsort(p[idx], kind="mergesort")]
    out[order] = alpha / (len(idx) - np.arange(len(idx)))
    return out


def t_p_value(estimate: float, se: float, df: float, null: float, alternative: str) -> float:
    """One-sided p of H1: mean > null ("greater") or < null ("less") from an estimate, its
    standard error and t degrees of freedom. se = 0 (constant differences): 0 if the estimate lies
    strictly on the alternative's side, else 1 (the limit of the test)."""
    from scipy import stats

    if not (math.isfinite(estimate) and math.isfinite(df)):
        return float("nan")
    if se <= 1e-12:
        side = estimate > null if alternative == "greater" else estimate < null
        return 0.0 if side and not math.isclose(estimate, null, abs_tol=1e-12) else 1.0
    t = (estimate - null) / se
    return float(stats.t.sf(t, df) if alternative == "greater" else stats.t.cdf(t, df))


def t_interval(estimate: float, se: float, df: float, level: float = 0.90) -> tuple[float, float]:
    """Two-sided t interval estimate ± t_{(1+level)/2, df} · se (90 % ↔ one-sided tests at 5 %)."""
    from scipy import stats

    if not (math.isfinite(se) and math.isfinite(df)):
        return float("nan"), float("nan")
    half = float(stats.t.ppf(0.5 + level / 2, df)) * se
    return estimate - half, estimate + half


def mde(se: float, df: float, alpha: float, power: float, two_sided_power: bool = False) -> float:
    """Minimum detectable effect of a one-sided t-type test at level α with the given power:
    MDE = (t_{1−α, df} + t_{power, df}) · se, the true distance from the null boundary the test
    detects with that probability (normal approximation to the noncentral t). For TOST at a true
    difference of 0 both one-sided tests must pass, so the power quantile is t_{(1+power)/2}."""
    from scipy import stats

    if not (math.isfinite(se) and math.isfinite(df)):
        return float("nan")
    q = 0.5 + power / 2 if two_sided_power else power
    return float(stats.t.ppf(1 - alpha, df) + stats.t.ppf(q, df)) * se


def units_needed(
    sd: float, target: float, alpha: float, power: float, two_sided_power: bool = False, max_n: int = 10_000
) -> int | None:
    """The fewest paired units n with (t_{1−α,n−1} + t_{power,n−1}) · sd/√n ≤ target (MDE at n
    down to the target); None if none up to max_n, or the spread is undefined."""
    if not (math.isfinite(sd) and target > 0):
        return None
    if sd == 0:
        return 2
    from scipy import stats

    # the normal quantiles are below the t ones, so the normal-theory n is a lower bound to start at
    q = 0.5 + power / 2 if two_sided_power else power
    start = max(2, math.floor(((stats.norm.ppf(1 - alpha) + stats.norm.ppf(q)) * sd / target) ** 2))
    for n in range(start, max_n + 1):
        if mde(sd / math.sqrt(n), n - 1, alpha, power, two_sided_power) <= target:
            return n
    return None
