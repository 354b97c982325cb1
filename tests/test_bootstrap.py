"""The subjects × seeds bootstrap, Holm's correction and the power formulas, against closed forms,
hand computations and seeded simulations."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest
from scipy import stats

from timoe.evaluation.bootstrap import (
    BootstrapResult,
    Cells,
    cells_from_scores,
    hierarchical_bootstrap,
    seeds_for_se,
    variance_components,
)
from timoe.evaluation.stats import holm, holm_levels, mde, t_interval, t_p_value, units_needed


def _cells(diff: np.ndarray, windows: np.ndarray | None = None) -> Cells:
    s, j = diff.shape
    w = np.ones(j) if windows is None else windows
    return Cells(diff, np.zeros_like(diff), w, tuple(range(s)), tuple(range(j)))


def test_one_factor_bootstrap_matches_the_t_interval_of_a_mean():
    # one subject, 400 "seeds" of normal data: the bootstrap SE of the mean is s/√n (the
    # small-sample factor undoes the (n−1)/n of resampling), so the interval is the t interval
    x = np.random.default_rng(0).normal(1.0, 2.0, size=(400, 1))
    res = hierarchical_bootstrap(_cells(x), 20_000, 1)
    assert res.estimate == pytest.approx(x.mean())
    assert res.se == pytest.approx(x.std(ddof=1) / math.sqrt(400), rel=0.03)
    assert res.df == 399
    lo, hi = t_interval(res.estimate, res.se, res.df)
    ref = stats.ttest_1samp(x.ravel(), 0.0).confidence_interval(0.90)
    assert (lo, hi) == pytest.approx((ref.low, ref.high), abs=0.01)


def test_known_effect_is_recovered_and_covered():
    rng = np.random.default_rng(2)
    s, j, effect = 20, 30, 0.02
    d = effect + rng.normal(0, 0.01, (s, 1)) + rng.normal(0, 0.01, (1, j)) + rng.normal(0, 0.02, (s, j))
    res = hierarchical_bootstrap(_cells(d), 5_000, 0)
    lo, hi = t_interval(res.estimate, res.se, res.df)
    assert lo < effect < hi and abs(res.estimate - effect) < 0.006
    # the components the data were made with (σ² = 1e-4, 1e-4, 4e-4), to sampling error
    assert res.var_seed == pytest.approx(1e-4, rel=0.7) and res.var_subject == pytest.approx(1e-4, rel=0.7)
    assert res.var_residual == pytest.approx(4e-4, rel=0.15)


def test_false_positive_rate_with_three_seeds_when_seeds_dominate():
    # a true null, 3 seeds × 9 subjects, seed spread dominant: the percentile bootstrap rejects
    # ~20 % at a nominal 5 %; the corrected SE with Satterthwaite df stays near 5 % (seeded, 300 sims)
    rng = np.random.default_rng(7)
    rejected = 0
    for i in range(300):
        d = rng.normal(0, 1.0, (3, 1)) + rng.normal(0, 0.1, (1, 9)) + rng.normal(0, 0.3, (3, 9))
        res = hierarchical_bootstrap(_cells(d), 1_000, i)
        rejected += t_p_value(res.estimate, res.se, res.df, 0.0, "greater") <= 0.05
    assert rejected / 300 < 0.09


def test_window_weighted_estimate_is_the_pooled_accuracy_difference():
    acc_a = np.array([[0.9, 0.5], [0.8, 0.6]])
    acc_b = np.array([[0.7, 0.5], [0.7, 0.4]])
    windows = np.array([30.0, 10.0])
    res = hierarchical_bootstrap(Cells(acc_a, acc_b, windows, (0, 1), (0, 1)), 200, 0)
    pooled = [(acc_a[s] - acc_b[s]) @ windows / 40 for s in range(2)]
    assert res.estimate == pytest.approx(np.mean(pooled))
    # per subject, pairs (A seed, B seed) with A ahead: subject 0: 0.9, 0.8 vs 0.7, 0.7 -> 4/4;
    # subject 1: 0.5 vs 0.5 tie, 0.5 vs 0.4 win, 0.6 vs both win -> 3.5/4; mean 0.9375
    assert res.prob_improvement == pytest.approx(0.9375)


def test_seeded_and_deterministic():
    d = np.random.default_rng(3).normal(0, 1, (5, 9))
    a, b = (
        hierarchical_bootstrap(_cells(d), 1_000, [0, 42]),
        hierarchical_bootstrap(_cells(d), 1_000, [0, 42]),
    )
    assert a == b
    assert hierarchical_bootstrap(_cells(d), 1_000, [0, 43]).se != a.se


def test_variance_components_of_an_additive_table():
    seed, subj = np.array([0.0, 1.0, 2.0]), np.array([0.0, 2.0, 4.0, 6.0])
    var_a, var_b, var_e, df = variance_components(seed[:, None] + subj[None, :])
    assert (var_a, var_b, var_e) == pytest.approx((1.0, np.var(subj, ddof=1), 0.0), abs=1e-12)
    # Satterthwaite by hand: v1 = MS_seed/(SJ) = 4·1/12, v2 = σ²_b/J = (20/3)/4
    v1, v2 = 4.0 / 12, (20 / 3) / 4
    assert df == pytest.approx((v1 + v2) ** 2 / (v1**2 / 2 + v2**2 / 3))


def test_seeds_for_se_by_hand():
    # Var(S) = 4/4 + 1/10 + 10/40 = 1.35; se 1.0, target 0.5 -> budget 1.35/4 - 0.1 = 0.2375,
    # per seed 4 + 10/10 = 5 -> S' = ceil(5 / 0.2375) = 22
    res = BootstrapResult(0.0, 1.0, 5.0, 4.0, 1.0, 10.0, 0.5, 0.4, 0.6, 4, 10)
    assert seeds_for_se(res, 0.5) == 22
    assert seeds_for_se(res, 0.2) is None  # σ²_b/J = 0.1 > 1.35 · 0.04: subjects, not seeds


def test_cells_from_scores_pairs_seed_and_subject():
    rows = [
        {"model": m, "seed": s, "subject": j, "n": 10, "correct": c}
        for m, base in (("a", 8), ("b", 6))
        for s in (0, 1, 2)
        for j, c in ((1, base), (2, base + 1))
    ]
    rows = [r for r in rows if not (r["model"] == "b" and r["seed"] == 2)]  # b lacks seed 2
    cells = cells_from_scores(pl.DataFrame(rows), "a", "b")
    assert isinstance(cells, Cells) and cells.seeds == (0, 1) and cells.subjects == (1, 2)
    assert np.allclose(cells.diff, 0.2)
    assert cells_from_scores(pl.DataFrame(rows), "a", "c") == "c has no per-subject test scores"


# Holm
def test_holm_hand_computed():
    p = [0.01, 0.04, 0.03, 0.005]
    # sorted 0.005, 0.01, 0.03, 0.04 -> ×4, ×3, ×2, ×1 = 0.02, 0.03, 0.06, 0.04 -> running max
    assert holm(p) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm_levels(p, 0.05) == pytest.approx([0.05 / 3, 0.05 / 1, 0.05 / 2, 0.05 / 4])
    out = holm([0.5, float("nan"), 0.01])  # nan is not in the family: m = 2
    assert out[0] == pytest.approx(0.5) and math.isnan(out[1]) and out[2] == pytest.approx(0.02)
    # 0.6 × 2 = 1.2 is capped at 1, and the running max carries it to 0.7's row
    assert holm([0.6, 0.7]) == pytest.approx([1.0, 1.0])
    assert holm([0.01, 0.02]) == pytest.approx([0.02, 0.02])
    assert holm([]).size == 0


# power
def test_mde_and_units_needed_by_hand():
    # large df: (z_0.95 + z_0.8) · se = (1.6449 + 0.8416) · 0.5
    assert mde(0.5, 1e9, 0.05, 0.8) == pytest.approx(2.4865 * 0.5, abs=1e-3)
    assert mde(1.0, 4, 0.05, 0.8) == pytest.approx(2.1318 + 0.9410, abs=1e-3)  # t tables, 4 df
    # sd 1, target 1: n = 7 gives (1.943 + 0.906)/√7 = 1.077 > 1; n = 8 gives (1.895 + 0.896)/√8 = 0.987
    assert units_needed(1.0, 1.0, 0.05, 0.8) == 8
    assert units_needed(0.0, 1.0, 0.05, 0.8) == 2 and units_needed(float("nan"), 1.0, 0.05, 0.8) is None


def test_t_p_value_matches_scipy_and_handles_zero_spread():
    d = np.array([0.3, 0.1, 0.5, 0.2])
    se = d.std(ddof=1) / 2
    assert t_p_value(d.mean(), se, 3, 0.0, "greater") == pytest.approx(
        stats.ttest_1samp(d, 0.0, alternative="greater").pvalue
    )
    assert t_p_value(0.2, 0.0, 3, 0.0, "greater") == 0.0 and t_p_value(0.0, 0.0, 3, 0.0, "greater") == 1.0
