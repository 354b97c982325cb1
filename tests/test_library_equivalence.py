"""scikit-learn's macro-F1 and AUROC against the hand-written versions they replaced.

The frozen numbers are what timoe's own implementations (numpy confusion-matrix F1 over the classes
present in y_true or y_pred; Mann-Whitney AUROC with average ranks, macro over the classes present
in y_true) returned on these inputs before they were deleted: the library versions must match them.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from timoe.evaluation.metrics import macro_f1
from timoe.evaluation.stats import auroc_ovr


def cases():
    """Fixed inputs: (y_true, y_pred, prob, n_classes), absent classes and ties included."""
    out = []
    for seed in range(24):
        rng = np.random.default_rng(seed)
        k = int(rng.integers(2, 9))
        n = int(rng.integers(1, 120))
        present = rng.choice(k, size=max(1, int(rng.integers(1, k + 1))), replace=False)
        y_true = rng.choice(present, size=n)
        y_pred = np.where(rng.random(n) < 0.6, y_true, rng.integers(0, k, size=n))
        prob = rng.dirichlet(np.ones(k), size=n)
        if seed % 3 == 0:
            prob = np.round(prob, 1)  # ties in the scores
        out.append((y_true, y_pred, prob, k))
    return out


OLD_MACRO_F1 = [
    0.38738981448658866,
    0.5297391304347826,
    0.14901960784313725,
    0.3693181818181818,
    0.6202367798656908,
    0.13080168776371306,
    0.3823010593742301,
    0.5196767001114828,
    0.33885135135135136,
    0.7316056083220263,
    0.23056722689075632,
    0.8545454545454545,
    0.6056818181818181,
    0.5872605838930555,
    0.5688888888888889,
    0.44075159489633176,
    0.6892751196172249,
    0.11695906432748537,
    0.24444444444444446,
    0.38422688422688417,
    0.3195488721804511,
    0.3722263588979896,
    0.4779220779220779,
    0.44666666666666666,
]
OLD_AUROC = [
    0.5339995552818829,
    0.44428091749520326,
    "nan",
    0.35714285714285715,
    0.49399631919107095,
    "nan",
    0.44980862633301655,
    0.48709941141838947,
    0.6470588235294118,
    0.4654186263973963,
    0.49322660098522164,
    0.6333333333333333,
    0.4553883867742563,
    0.5024478067971017,
    0.5089807852965748,
    0.474177298734394,
    0.48890432036054043,
    "nan",
    0.517578125,
    0.4276499558016534,
    0.5807584323888672,
    0.47733580018501387,
    0.5832195141570142,
    "nan",
]


def _same(a: float, b: float | str) -> bool:
    return math.isnan(a) if b == "nan" else a == pytest.approx(b, rel=1e-12, abs=1e-15)


def test_macro_f1_matches_the_old_implementation() -> None:
    got = [macro_f1(t, p, k) for t, p, _, k in cases()]
    assert all(_same(a, b) for a, b in zip(got, OLD_MACRO_F1, strict=True)), got


def test_auroc_matches_the_old_implementation() -> None:
    got = [auroc_ovr(t, q) for t, _, q, _ in cases()]
    assert all(_same(a, b) for a, b in zip(got, OLD_AUROC, strict=True)), got


def test_macro_f1_averages_over_the_classes_present_not_all_n_classes() -> None:
    # classes 1, 3, 4 appear in neither: the old convention (and sklearn's default labels) skip them;
    # labels=range(n_classes) would average in three zeros and report 0.293 instead
    y_true, y_pred = np.array([0, 0, 2, 2]), np.array([0, 2, 2, 2])
    assert macro_f1(y_true, y_pred, 5) == pytest.approx((2 / 3 + 4 / 5) / 2)
    assert macro_f1(np.array([1]), np.array([3]), 5) == 0.0  # present only in one of them: F1 0


def test_empty_and_single_class_inputs_are_nan() -> None:
    assert math.isnan(macro_f1(np.array([], dtype=int), np.array([], dtype=int), 3))
    assert math.isnan(auroc_ovr(np.array([1, 1, 1]), np.full((3, 3), 1 / 3)))
    assert math.isnan(auroc_ovr(np.array([0, 1]), np.array([0.2, 0.8])))  # not a probability matrix


# ---------------------------------------------------------------- k-means (scikit-learn's, one for both uses)
# What the two hand-written k-means (contexts' with 8 k-means++ restarts, the discretiser's with
# one) returned on these four well-separated blobs, seed 3, before scikit-learn's replaced both.
# On well-separated data the partition is the same and the centres agree to rounding; on
# overlapping data the two may stop in different local optima (measured: adjusted Rand index
# 0.56-1.0 between old and new partitions, inertia within 0.8% and as often lower as higher).
OLD_CONTEXT_CENTRES = [
    [-0.08933274742, 0.001605830837, -0.148270871819],
    [0.074267800607, 8.086110444424, -0.901491298517],
    [7.935540062852, -0.020646100219, 0.873973096258],
    [8.011167023314, 7.999188449351, 4.140537422826],
]
OLD_DISCRETIZER_CENTRES = [
    [-0.948739989977, -0.967333648098, -0.50105742146],
    [-0.908858636499, 0.980164139181, -0.842167285197],
    [1.00750522448, -0.972693974867, -0.038115249027],
    [1.025941015674, 0.95922526894, 1.441209093262],
]
OLD_FIRST_CODES = [0, 0, 3, 2, 1, 1, 1, 0, 2, 0, 2, 3, 1, 0, 1, 0, 3, 3, 3, 1]


def _blobs() -> np.ndarray:
    rng = np.random.default_rng(11)
    centres = np.array([[0.0, 0.0, 0.0], [8.0, 0.0, 1.0], [0.0, 8.0, -1.0], [8.0, 8.0, 4.0]])
    return centres[rng.integers(0, 4, 400)] + rng.normal(size=(400, 3))


def test_context_kmeans_matches_the_old_centres() -> None:
    from timoe.interactions.contexts import kmeans

    c = kmeans(_blobs(), 4, seed=3)
    np.testing.assert_allclose(c[np.lexsort(c.T[::-1])], OLD_CONTEXT_CENTRES, atol=1e-10)


def test_discretizer_kmeans_matches_the_old_centres_and_codes() -> None:
    from timoe.interactions.discretize import Discretizer

    disc = Discretizer(4, "kmeans", seed=3).fit(_blobs())
    np.testing.assert_allclose(disc.centers_, OLD_DISCRETIZER_CENTRES, atol=1e-10)
    assert disc.transform(_blobs())[:20].tolist() == OLD_FIRST_CODES


def test_kmeans_is_the_same_on_any_thread_count() -> None:
    from threadpoolctl import threadpool_limits

    from timoe.interactions.discretize import kmeans

    x = np.random.default_rng(0).normal(size=(3000, 5))  # overlapping: sums decide the last bits
    one = kmeans(x, 6, seed=1, n_init=2)
    with threadpool_limits(limits=2):
        assert np.array_equal(kmeans(x, 6, seed=1, n_init=2), one)
