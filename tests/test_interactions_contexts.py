"""Contexts: label-free window features, nearest-centroid assignment, fitting, serialisation."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from timoe.interactions.contexts import ContextSpec, fit_contexts, kmeans, window_features


def _spec(**over) -> ContextSpec:
    base = dict(
        scope="context",
        channels=[0, 2],
        mean=[0.0, 1.0, 2.0, 3.0],
        std=[1.0, 2.0, 1.0, 0.5],
        centroids=[[0.0] * 4, [1.0, 1.0, 1.0, 1.0]],
        counts=[10, 20],
        names=["ctx0", "ctx1"],
    )
    return ContextSpec(**(base | over))


def _blobs(n_per: int, centres: list[list[float]], seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Windows [N, 32, 2] whose channel means sit at `centres` (one blob each); returns x and truth."""
    rng = np.random.default_rng(seed)
    xs, truth = [], []
    for k, c in enumerate(centres):
        x = rng.normal(0.0, 0.3, size=(n_per, 32, 2)) + np.asarray(c)[None, None, :]
        xs.append(x)
        truth += [k] * n_per
    return np.concatenate(xs).astype(np.float32), np.asarray(truth)


# ------------------------------------------------------------------------------ features
def test_window_features_match_float64_numpy():
    rng = np.random.default_rng(0)
    x = rng.normal(2.0, 3.0, size=(7, 50, 5))
    chans = [4, 1, 2]
    got = window_features(torch.from_numpy(x.astype(np.float32)), chans)
    want = np.concatenate([x[:, :, chans].mean(1), x[:, :, chans].std(1)], axis=1)  # population std
    assert got.shape == (7, 6) and got.dtype == torch.float32
    np.testing.assert_allclose(got.double().numpy(), want, atol=1e-5, rtol=0)
    same = window_features(torch.from_numpy(x.astype(np.float32)), torch.tensor(chans))
    assert torch.equal(got, same)


def test_window_features_rejects_bad_input():
    with pytest.raises(ValueError, match="N, T, C"):
        window_features(torch.zeros(3, 4), [0])
    with pytest.raises(ValueError, match="channels"):
        window_features(torch.zeros(2, 4, 3), [3])
    with pytest.raises(ValueError, match="channels"):
        window_features(torch.zeros(2, 4, 3), [])


# ------------------------------------------------------------------------------ assign
def test_assign_is_nearest_centroid_after_standardisation():
    spec = _spec()
    rng = np.random.default_rng(1)
    feats = rng.normal(1.0, 2.0, size=(200, 4))
    z = (feats - np.asarray(spec.mean)) / np.asarray(spec.std)
    want = ((z[:, None, :] - np.asarray(spec.centroids)[None]) ** 2).sum(-1).argmin(1)
    got = spec.assign(torch.from_numpy(feats))
    assert got.dtype == torch.long
    np.testing.assert_array_equal(got.numpy(), want)


def test_assign_ties_go_to_lowest_index_and_dataset_scope_gives_zeros():
    spec = _spec(centroids=[[1.0, 0, 0, 0], [-1.0, 0, 0, 0]], mean=[0.0] * 4, std=[1.0] * 4)
    assert spec.assign(torch.zeros(3, 4)).tolist() == [0, 0, 0]  # equidistant from both
    one = ContextSpec(
        scope="dataset",
        channels=[0],
        mean=[0.0, 0.0],
        std=[1.0, 1.0],
        centroids=[[0.0, 0.0]],
        counts=[5],
        names=["dataset"],
    )
    assert one.n_contexts == 1
    assert one.assign(torch.randn(4, 2)).tolist() == [0, 0, 0, 0]
    with pytest.raises(ValueError, match="shape"):
        one.assign(torch.randn(4, 3))


# ------------------------------------------------------------------------------ json
def test_json_round_trip_is_exact():
    spec = _spec(mean=[0.1, 1 / 3, -2.5e-9, 7.0], note="K reduced")
    text = json.dumps(spec.to_json())
    back = ContextSpec.from_json(json.loads(text))
    assert back == spec and back.n_contexts == 2


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"centroids": [], "counts": [], "names": []}, "K=0"),
        ({"mean": [0.0, 1.0]}, "mean and std"),
        ({"centroids": [[0.0] * 4, [1.0] * 3]}, "every centroid"),
        ({"counts": [1]}, "counts and names"),
        ({"names": ["a", "a"]}, "distinct"),
        ({"centroids": [[0.0] * 4, [math.nan] * 4]}, "NaN"),
        ({"std": [1.0, 0.0, 1.0, 1.0]}, "positive"),
        ({"scope": "planet"}, "scope"),
        ({"scope": "dataset"}, "exactly one"),
        ({"channels": "0,2"}, "channels must be a list"),
        ({"counts": [1.5, 2]}, "integers"),
    ],
)
def test_from_json_rejects_bad_specs(change, message):
    d = _spec().to_json() | change
    with pytest.raises(ValueError, match=message):
        ContextSpec.from_json(d)


def test_from_json_names_missing_keys():
    d = _spec().to_json()
    del d["centroids"]
    with pytest.raises(ValueError, match="missing key"):
        ContextSpec.from_json(d)


# ------------------------------------------------------------------------------ fitting
def test_kmeans_recovers_well_separated_clusters():
    x, truth = _blobs(80, [[0.0, 0.0], [6.0, 0.0], [0.0, 6.0]])
    spec, ids = fit_contexts(x, np.zeros(len(x)), [0, 1], "context", 3, seed=0, min_size=10)
    assert spec.n_contexts == 3 and spec.note == "" and sum(spec.counts) == len(x)
    # a perfect match up to relabelling: every true blob maps to exactly one context
    pairs = set(zip(truth.tolist(), ids.tolist(), strict=True))
    assert len(pairs) == 3 and len({c for _, c in pairs}) == 3
    # the returned ids are what assign gives on the same windows (what the model computes later)
    again = spec.assign(window_features(torch.from_numpy(x), spec.channels)).numpy()
    np.testing.assert_array_equal(again, ids)


def test_fit_is_deterministic_per_seed():
    x, _ = _blobs(60, [[0.0, 0.0], [1.0, 0.5], [0.3, 1.2], [2.0, 2.0]], seed=3)
    a = fit_contexts(x, np.zeros(len(x)), [0, 1], "context", 4, seed=5, min_size=5)
    b = fit_contexts(x, np.zeros(len(x)), [0, 1], "context", 4, seed=5, min_size=5)
    assert a[0] == b[0]
    np.testing.assert_array_equal(a[1], b[1])
    assert json.dumps(a[0].to_json()) == json.dumps(b[0].to_json())


def test_contexts_are_ordered_by_motion_intensity():
    rng = np.random.default_rng(0)
    calm = rng.normal(0.0, 0.1, size=(60, 32, 1))
    busy = rng.normal(0.0, 3.0, size=(60, 32, 1))
    x = np.concatenate([busy, calm]).astype(np.float32)
    _, ids = fit_contexts(x, np.zeros(len(x)), [0], "context", 2, seed=0, min_size=10)
    assert ids[:60].tolist() == [1] * 60 and ids[60:].tolist() == [0] * 60  # ctx0 = calmest


def test_small_clusters_reduce_k_and_are_recorded():
    # windows constant over time (std features all 0): only the channel means separate them
    rng = np.random.default_rng(0)
    means = np.concatenate(
        [
            rng.normal(0, 0.3, (100, 2)),
            rng.normal(8, 0.3, (100, 2)),
            rng.normal(0, 0.3, (5, 2)) + np.array([-8.0, 8.0]),
        ]
    )
    x = np.repeat(means[:, None, :], 16, axis=1).astype(np.float32)
    spec, ids = fit_contexts(x, np.zeros(len(x)), [0, 1], "context", 3, seed=0, min_size=20)
    assert spec.n_contexts <= 2 and min(spec.counts) >= 20
    assert "reduced" in spec.note
    assert np.bincount(ids).tolist() == spec.counts
    tiny = fit_contexts(x[:10], np.zeros(10), [0, 1], "context", 4, seed=0, min_size=50)[0]
    assert tiny.n_contexts == 1 and tiny.counts == [10]


def test_dataset_scope_is_one_context():
    x, _ = _blobs(30, [[0.0, 0.0], [5.0, 5.0]])
    spec, ids = fit_contexts(x, np.zeros(len(x)), [1, 0], "dataset", 4, seed=0)
    assert spec.scope == "dataset" and spec.n_contexts == 1 and spec.counts == [60]
    assert ids.tolist() == [0] * 60 and spec.channels == [1, 0]


def test_subject_scope_keeps_own_subject_and_assigns_unseen_to_nearest():
    x, truth = _blobs(60, [[0.0, 0.0], [5.0, 0.0], [0.0, 5.0]])
    subjects = np.array([7, 3, 11])[truth]
    # a training window far from its own subject still belongs to its subject's table
    x[0] += 5.0
    spec, ids = fit_contexts(x, subjects, [0, 1], "subject", 99, seed=0, min_size=10)
    assert spec.names == ["subject3", "subject7", "subject11"] and spec.counts == [60, 60, 60]
    assert ids[0] == spec.names.index("subject7")
    np.testing.assert_array_equal(np.array(spec.names)[ids], [f"subject{s}" for s in subjects])
    # an unseen subject's window resembling subject 3's goes to subject 3
    unseen, _ = _blobs(4, [[5.0, 0.0]], seed=2)
    got = spec.assign(window_features(torch.from_numpy(unseen), spec.channels))
    assert got.tolist() == [spec.names.index("subject3")] * 4


def test_subject_scope_rejects_tiny_subjects():
    x, truth = _blobs(30, [[0.0, 0.0], [5.0, 0.0]])
    subjects = np.where(np.arange(len(x)) < 3, 99, truth)
    with pytest.raises(ValueError, match="99"):
        fit_contexts(x, subjects, [0, 1], "subject", 1, seed=0, min_size=10)


def test_kmeans_centroids_are_means_of_their_members():
    x, _ = _blobs(50, [[0.0, 0.0], [6.0, 6.0]])
    z = x.mean(1).astype(np.float64)
    c = kmeans(z, 2, seed=1)
    labels = ((z[:, None] - c[None]) ** 2).sum(-1).argmin(1)
    for j in range(2):
        np.testing.assert_allclose(c[j], z[labels == j].mean(0))
