"""Discretisers: fitted on training data only, deterministic, sensible on ties and outliers."""

from __future__ import annotations

import numpy as np
import pytest

from timoe.interactions.discretize import Discretizer, discretize


def test_quantile_bins_are_balanced_and_use_training_edges() -> None:
    rng = np.random.default_rng(0)
    train = rng.normal(size=10_000)
    disc = Discretizer(8, "quantile").fit(train)
    counts = np.bincount(disc.transform(train), minlength=8)
    assert counts.min() > 1150 and counts.max() < 1350
    shifted = disc.transform(train + 100.0)  # applied to other data: training edges, not refitted
    assert (shifted == 7).all()
    assert disc.transform(np.array([-1e9]))[0] == 0


def test_quantile_on_discrete_values_never_splits_ties() -> None:
    x = np.repeat([0.0, 1.0, 2.0], [500, 300, 200])
    codes = Discretizer(8, "quantile").fit_transform(x)
    assert len(np.unique(codes)) == 3
    for v in (0.0, 1.0, 2.0):
        assert len(np.unique(codes[x == v])) == 1
    assert codes.max() < 8


def test_uniform_bins_clip_outside_training_range() -> None:
    train = np.linspace(0.0, 1.0, 101)
    disc = Discretizer(4, "uniform").fit(train)
    np.testing.assert_array_equal(
        disc.transform(np.array([-5.0, 0.1, 0.3, 0.6, 0.9, 7.0])), [0, 0, 1, 2, 3, 3]
    )


def test_per_column_codes_keep_shape() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(500, 3))
    codes = Discretizer(5, "quantile").fit_transform(x)
    assert codes.shape == (500, 3) and codes.dtype == np.int64
    np.testing.assert_array_equal(codes[:, 1], discretize(x[:, 1], n_bins=5))


def test_kmeans_recovers_clusters_and_is_seeded() -> None:
    rng = np.random.default_rng(2)
    centers = np.array([[0.0, 0.0], [5.0, 5.0], [0.0, 8.0]])
    truth = rng.integers(0, 3, 900)
    x = centers[truth] + 0.3 * rng.normal(size=(900, 2))
    a = Discretizer(3, "kmeans", seed=7).fit(x)
    b = Discretizer(3, "kmeans", seed=7).fit(x)
    codes = a.transform(x)
    np.testing.assert_array_equal(codes, b.transform(x))
    for t in range(3):  # each true cluster maps to exactly one code
        assert len(np.unique(codes[truth == t])) == 1
    assert len(np.unique(codes)) == 3
    few = Discretizer(8, "kmeans").fit_transform(np.repeat([1.0, 2.0], 50))
    assert len(np.unique(few)) == 2


def test_errors() -> None:
    with pytest.raises(RuntimeError):
        Discretizer().transform(np.zeros(3))
    with pytest.raises(ValueError):
        Discretizer(4, "nope")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        Discretizer().fit(np.array([1.0, np.nan]))
    with pytest.raises(ValueError):
        Discretizer().fit(np.zeros((3, 2))).transform(np.zeros((3, 4)))
