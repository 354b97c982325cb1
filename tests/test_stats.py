"""timoe.evaluation.stats: AUROC, the paired t-test and the comparison with the best baseline."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest

from timoe.evaluation.stats import (
    BASELINES,
    _binary_auroc,
    auroc_ovr,
    compare_with_best_baseline,
    paired_t_test,
)


def _softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _reference_binary(pos: np.ndarray, scores: np.ndarray) -> float:
    """AUROC by its definition: the share of (positive, negative) pairs ranked right, ties half."""
    p, n = scores[pos], scores[~pos]
    wins = (p[:, None] > n[None, :]).sum() + 0.5 * (p[:, None] == n[None, :]).sum()
    return float(wins / (len(p) * len(n)))


# AUROC
def test_binary_auroc_hand_computed_with_a_tie():
    # pairs (0.8,0.4) (0.8,0.1) (0.4,0.4) (0.4,0.1): 1 + 1 + 0.5 + 1 of 4
    pos = np.array([True, True, False, False])
    assert _binary_auroc(pos, np.array([0.8, 0.4, 0.4, 0.1])) == pytest.approx(0.875)


@pytest.mark.parametrize(
    ("scores", "expected"),
    [([0.9, 0.8, 0.2, 0.1], 1.0), ([0.1, 0.2, 0.8, 0.9], 0.0), ([0.5, 0.5, 0.5, 0.5], 0.5)],
)
def test_binary_auroc_extremes(scores, expected):
    pos = np.array([True, True, False, False])
    assert _binary_auroc(pos, np.array(scores)) == expected


def test_binary_auroc_is_nan_without_both_classes():
    assert math.isnan(_binary_auroc(np.array([True, True]), np.array([0.1, 0.2])))
    assert math.isnan(_binary_auroc(np.array([False, False]), np.array([0.1, 0.2])))


@pytest.mark.parametrize("seed", range(5))
def test_binary_auroc_matches_the_pairwise_definition_with_many_ties(seed):
    rng = np.random.default_rng(seed)
    pos = rng.random(200) < 0.3
    scores = np.round(rng.random(200) + 0.3 * pos, 1)  # rounding makes long runs of equal scores
    assert _binary_auroc(pos, scores) == pytest.approx(_reference_binary(pos, scores), abs=1e-12)


def test_auroc_ovr_hand_computed_three_classes():
    y = np.array([0, 0, 1, 1, 2, 2])
    prob = np.array(
        [
            [0.7, 0.2, 0.1],
            [0.4, 0.4, 0.2],
            [0.3, 0.6, 0.1],
            [0.5, 0.3, 0.2],
            [0.1, 0.2, 0.7],
            [0.2, 0.2, 0.6],
        ]
    )
    # class 0: positives 0.7, 0.4 vs 0.3, 0.5, 0.1, 0.2 -> (4 + 3) / 8
    # class 1: positives 0.6, 0.3 vs 0.2, 0.4, 0.2, 0.2 -> (4 + 3) / 8
    # class 2: positives 0.7, 0.6 vs 0.1, 0.2, 0.1, 0.2 -> 8 / 8
    assert auroc_ovr(y, prob) == pytest.approx((7 / 8 + 7 / 8 + 1) / 3)


@pytest.mark.parametrize("seed", range(4))
def test_auroc_ovr_matches_sklearn(seed):
    metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 4, size=120)
    prob = _softmax(rng.normal(size=(120, 4)) + 1.5 * np.eye(4)[y])
    prob = np.round(prob, 2)  # ties across samples, which sklearn also counts half
    prob /= prob.sum(axis=1, keepdims=True)
    expected = metrics.roc_auc_score(y, prob, multi_class="ovr", average="macro")
    assert auroc_ovr(y, prob) == pytest.approx(expected, abs=1e-12)


def test_auroc_binary_problem_matches_sklearn_on_the_positive_column():
    metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(7)
    y = rng.integers(0, 2, size=80)
    prob = _softmax(rng.normal(size=(80, 2)) + np.eye(2)[y])
    # For two classes the two one-vs-rest scores are the same number: column 1 ranks what column 0 does.
    assert auroc_ovr(y, prob) == pytest.approx(metrics.roc_auc_score(y, prob[:, 1]), abs=1e-12)


def test_auroc_ovr_averages_only_the_classes_present():
    # Class 1 never occurs: its column must not enter the mean (it would be nan, or a wrong 0.5).
    y = np.array([0, 0, 2, 2])
    prob = np.array([[0.9, 0.05, 0.05], [0.6, 0.1, 0.3], [0.2, 0.1, 0.7], [0.3, 0.2, 0.5]])
    assert auroc_ovr(y, prob) == 1.0


def test_auroc_ovr_is_nan_for_one_class_or_flat_scores():
    assert math.isnan(auroc_ovr(np.array([1, 1, 1]), np.full((3, 2), 0.5)))
    assert math.isnan(auroc_ovr(np.array([0, 1, 1]), np.array([0.2, 0.7, 0.9])))


# The paired t-test
def test_paired_t_test_hand_computed():
    # d = 1, 2, 3: mean 2, sd 1, t = 2 * sqrt(3) on 2 degrees of freedom, whose CDF is
    # 1/2 + t / (2 sqrt(2 + t^2)): p = 1 - t / sqrt(2 + t^2).
    t = 2 * math.sqrt(3)
    diff, p = paired_t_test(np.array([2.0, 4.0, 6.0]), np.array([1.0, 2.0, 3.0]))
    assert diff == pytest.approx(2.0)
    assert p == pytest.approx(1 - t / math.sqrt(2 + t * t), rel=1e-9)


@pytest.mark.parametrize("seed", range(3))
def test_paired_t_test_is_the_one_sample_test_of_the_differences(seed):
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(seed)
    a = rng.normal(0.8, 0.05, size=6)
    b = a - rng.normal(0.02, 0.03, size=6)
    diff, p = paired_t_test(a, b)
    assert diff == pytest.approx(float(np.mean(a - b)))
    assert p == pytest.approx(float(stats.ttest_1samp(a - b, 0.0).pvalue), rel=1e-9)
    # Swapping the sides flips the difference, not the two-sided p-value.
    back, p_back = paired_t_test(b, a)
    assert back == pytest.approx(-diff) and p_back == pytest.approx(p)


def test_paired_t_test_pairs_by_position_not_by_sorted_value():
    # An unpaired (Welch) test would see two overlapping samples; paired, the gain is steady.
    a = np.array([0.60, 0.70, 0.80, 0.90])
    b = a - np.array([0.010, 0.012, 0.011, 0.009])
    _, p = paired_t_test(a, b)
    assert p < 1e-3


def test_paired_t_test_constant_differences():
    # Accuracy differences of exactly 0.1 carry float noise; the test must not fall into nan.
    diff, p = paired_t_test(np.array([0.8, 0.9, 0.7]), np.array([0.7, 0.8, 0.6]))
    assert diff == pytest.approx(0.1) and p == 0.0
    diff, p = paired_t_test(np.array([0.8, 0.9, 0.7]), np.array([0.8, 0.9, 0.7]))
    assert diff == 0.0 and p == 1.0


def test_paired_t_test_with_fewer_than_two_pairs():
    diff, p = paired_t_test(np.array([0.9]), np.array([0.7]))
    assert diff == pytest.approx(0.2) and math.isnan(p)
    diff, p = paired_t_test(np.array([]), np.array([]))
    assert math.isnan(diff) and math.isnan(p)


# The best baseline
def _runs(rows: list[tuple[str, str, int, float]]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema=["dataset", "model", "seed", "accuracy"], orient="row")


def test_baselines_are_the_configured_ones_and_exclude_timoe():
    assert "transformer" in BASELINES and "moe" in BASELINES and "timoe" not in BASELINES


def test_best_baseline_is_the_highest_mean_baseline_never_timoe():
    runs = _runs(
        [
            *[("ds", "transformer", s, v) for s, v in enumerate([0.70, 0.72, 0.74])],
            *[("ds", "moe", s, v) for s, v in enumerate([0.75, 0.60, 0.95])],  # mean 0.7667: the best
            *[("ds", "timoe", s, v) for s, v in enumerate([0.90, 0.91, 0.92])],  # better, not a baseline
        ]
    )
    out = compare_with_best_baseline(runs)
    assert set(out["baseline"].to_list()) == {"moe"}
    assert sorted(out["model"].to_list()) == ["timoe", "transformer"]  # the best is not compared with itself
    timoe = out.filter(pl.col("model") == "timoe").row(0, named=True)
    assert timoe["mean_diff"] == pytest.approx(np.mean([0.15, 0.31, -0.03]))
    assert timoe["n_pairs"] == 3 and timoe["metric"] == "accuracy"
    _, p = paired_t_test(np.array([0.90, 0.91, 0.92]), np.array([0.75, 0.60, 0.95]))
    assert timoe["p_value"] == pytest.approx(p)


def test_best_baseline_is_chosen_per_data_set_and_per_metric():
    rows = [
        ("a", "transformer", 0, 0.9, 0.2),
        ("a", "transformer", 1, 0.8, 0.3),
        ("a", "moe", 0, 0.5, 0.8),
        ("a", "moe", 1, 0.6, 0.7),
        ("b", "transformer", 0, 0.1, 0.1),
        ("b", "transformer", 1, 0.2, 0.2),
        ("b", "moe", 0, 0.3, 0.3),
        ("b", "moe", 1, 0.4, 0.4),
    ]
    runs = pl.DataFrame(rows, schema=["dataset", "model", "seed", "accuracy", "macro_f1"], orient="row")
    by_acc = compare_with_best_baseline(runs)
    assert by_acc.select("dataset", "baseline").rows() == [("a", "transformer"), ("b", "moe")]
    by_f1 = compare_with_best_baseline(runs, metric="macro_f1")
    assert by_f1.select("dataset", "baseline").rows() == [("a", "moe"), ("b", "moe")]
    assert by_f1["metric"].to_list() == ["macro_f1", "macro_f1"]


def test_models_are_paired_by_seed_whatever_the_row_order():
    runs = _runs(
        [
            ("ds", "transformer", 0, 0.50),
            ("ds", "transformer", 1, 0.60),
            ("ds", "transformer", 2, 0.70),
            ("ds", "timoe", 2, 0.75),  # reversed order, and seed 3 has no baseline partner
            ("ds", "timoe", 1, 0.65),
            ("ds", "timoe", 0, 0.55),
            ("ds", "timoe", 3, 0.10),
        ]
    )
    row = compare_with_best_baseline(runs).row(0, named=True)
    assert row["n_pairs"] == 3
    assert row["mean_diff"] == pytest.approx(0.05)  # by position it would not be constant
    assert row["p_value"] == 0.0


def test_data_sets_without_a_baseline_are_skipped_and_single_pairs_have_no_p_value():
    runs = _runs(
        [
            ("no-baseline", "timoe", 0, 0.9),
            ("no-baseline", "timoe", 1, 0.8),
            ("one-seed", "transformer", 0, 0.5),
            ("one-seed", "timoe", 0, 0.6),
        ]
    )
    out = compare_with_best_baseline(runs)
    assert out["dataset"].to_list() == ["one-seed"]
    assert out["n_pairs"].to_list() == [1] and out["p_value"].to_list() == [None]
    assert out["mean_diff"][0] == pytest.approx(0.1)


def test_no_comparisons_keep_the_schema():
    out = compare_with_best_baseline(_runs([("ds", "timoe", 0, 0.9)]))
    assert out.is_empty()
    assert out.schema["p_value"] == pl.Float64 and out.schema["n_pairs"] == pl.Int64
