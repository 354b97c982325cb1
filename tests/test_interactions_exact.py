"""Exact batched BROJA PID: closed forms, agreement with cvxpy+CLARABEL, certificates, padding."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from timoe.interactions.exact import (
    exact_pid,
    exact_pid_many,
    joint_counts,
    pad_joints,
    pid_from_samples,
)

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_exact_pid.py"


def _reference():
    pytest.importorskip("cvxpy")
    spec = importlib.util.spec_from_file_location("bench_exact_pid", BENCH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _table(fn, n: int = 2) -> np.ndarray:
    p = np.zeros((n, n, n))
    for a in range(n):
        for b in range(n):
            p[a, b, fn(a, b)] += 1.0
    return p / p.sum()


def test_closed_forms() -> None:
    xor = _table(lambda a, b: a ^ b)
    and_ = _table(lambda a, b: a & b)
    copy = np.zeros((3, 2, 3))  # Y = X1 uniform on 3 symbols, X2 an independent fair bit
    for a in range(3):
        copy[a, :, a] = 1.0 / 6.0
    same = np.zeros((4, 4, 4))  # X1 = X2 = Y, non-uniform
    for a, w in enumerate([0.1, 0.2, 0.3, 0.4]):
        same[a, a, a] = w
    res = exact_pid_many([xor, and_, copy, same])
    assert res.converged.all() and (res.gap <= 1e-7).all()
    r = [res.row(i) for i in range(4)]
    assert r[0]["S"] == pytest.approx(1.0, abs=1e-6)
    assert max(r[0]["R"], r[0]["U1"], r[0]["U2"]) < 1e-6
    assert r[1]["R"] == pytest.approx(1.5 - 0.75 * math.log2(3), abs=1e-6)  # = I(X1;Y) ≈ 0.3113
    assert r[1]["S"] == pytest.approx(0.5, abs=1e-6)
    assert max(r[1]["U1"], r[1]["U2"]) < 1e-6
    assert r[2]["U1"] == pytest.approx(math.log2(3), abs=1e-6)
    assert max(r[2]["R"], r[2]["U2"], r[2]["S"]) < 1e-6
    h_same = -sum(w * math.log2(w) for w in [0.1, 0.2, 0.3, 0.4])
    assert r[3]["R"] == pytest.approx(h_same, abs=1e-6)
    assert max(r[3]["U1"], r[3]["U2"], r[3]["S"]) < 1e-6


def _random(rng: np.random.Generator, shape: tuple[int, int, int], sparsity: float) -> np.ndarray:
    p = rng.dirichlet(np.full(int(np.prod(shape)), 0.5)).reshape(shape)
    p[rng.random(shape) < sparsity] = 0.0
    if p.sum() == 0:
        p[0, 0, 0] = 1.0
    return p


def test_matches_clarabel_on_random_problems() -> None:
    ref = _reference()
    rng = np.random.default_rng(0)
    joints = [
        _random(
            rng,
            (int(rng.integers(2, 11)), int(rng.integers(2, 11)), int(rng.integers(2, 7))),
            sparsity=[0.0, 0.5, 0.85][i % 3],
        )
        for i in range(12)
    ]
    res = exact_pid_many(joints)
    expected = np.array([ref.cvxpy_min_mi(p) for p in joints])
    assert np.abs(res.min_mi - expected).max() < 1e-5
    assert (res.gap <= 1e-7).all()
    # The certificate brackets the reference: lower_bound ≤ optimum ≤ min_mi (up to its accuracy).
    assert (res.lower_bound <= expected + 1e-6).all() and (expected <= res.min_mi + 1e-6).all()


@pytest.mark.slow
def test_matches_clarabel_at_32x32x12() -> None:
    ref = _reference()
    rng = np.random.default_rng(1)
    joints = [_random(rng, (32, 32, 12), s) for s in (0.0, 0.9)]
    joints.append(_random(rng, (20, 20, 12), 0.5))
    res = exact_pid_many(joints)
    expected = np.array([ref.cvxpy_min_mi(p) for p in joints])
    assert np.abs(res.min_mi - expected).max() < 1e-4
    assert (res.gap <= 1e-7).all()


def test_returned_q_is_feasible_and_components_add_up() -> None:
    rng = np.random.default_rng(2)
    p = np.stack([_random(rng, (6, 5, 4), s) for s in (0.0, 0.4, 0.7)])
    res = exact_pid(p)
    p = p / p.sum(axis=(1, 2, 3), keepdims=True)
    assert (res.q >= 0).all()
    np.testing.assert_allclose(res.q.sum(2), p.sum(2), atol=1e-12)
    np.testing.assert_allclose(res.q.sum(1), p.sum(1), atol=1e-12)
    support = (p.sum(2)[:, :, None, :] > 0) & (p.sum(1)[:, None, :, :] > 0)
    assert (res.q[~support] == 0).all()
    total = res.redundancy + res.unique1 + res.unique2 + res.synergy
    np.testing.assert_allclose(total, res.total, atol=1e-9)
    assert (res.lower_bound <= res.min_mi + 1e-12).all()


def test_padding_empty_and_degenerate_problems() -> None:
    rng = np.random.default_rng(3)
    small = _random(rng, (3, 4, 2), 0.2)
    alone = exact_pid(small)
    padded = exact_pid(pad_joints([small, np.zeros((7, 6, 5)), np.ones((1, 1, 1)), np.ones((4, 3, 1))]))
    assert padded.min_mi[0] == pytest.approx(alone.min_mi[0], abs=1e-7)
    assert padded.synergy[0] == pytest.approx(alone.synergy[0], abs=1e-7)
    for i in (1, 2, 3):  # all-zero, single cell, single class: nothing to decompose
        assert padded.row(i)["total"] == pytest.approx(0.0, abs=1e-12)
        assert max(abs(padded.row(i)[k]) for k in ("R", "U1", "U2", "S")) < 1e-9
    assert padded.converged.all()


def test_inputs_devices_determinism_and_symmetry() -> None:
    rng = np.random.default_rng(4)
    p = np.stack([_random(rng, (5, 7, 3), 0.3) for _ in range(3)])
    a = exact_pid(p)
    b = exact_pid(torch.tensor(p) * 17.0, device="cpu")  # counts and torch input are fine
    # Counts are normalised first, which may round differently in the last bit (seen: 7e-16).
    np.testing.assert_allclose(a.min_mi, b.min_mi, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(exact_pid(p).min_mi, a.min_mi)  # deterministic on CPU
    swapped = exact_pid(p.transpose(0, 2, 1, 3))
    np.testing.assert_allclose(swapped.unique1, a.unique2, atol=1e-6)
    np.testing.assert_allclose(swapped.redundancy, a.redundancy, atol=1e-6)
    with pytest.raises(ValueError):
        exact_pid(-p)
    with pytest.raises(ValueError):
        exact_pid(np.ones((2, 2)))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.gpu
def test_cuda_matches_cpu() -> None:
    rng = np.random.default_rng(5)
    p = np.stack([_random(rng, (8, 8, 4), 0.3) for _ in range(4)])
    np.testing.assert_allclose(
        exact_pid(p, device="cuda").min_mi, exact_pid(p, device="cpu").min_mi, atol=1e-6
    )


def test_from_samples_and_grouped_counts() -> None:
    rng = np.random.default_rng(6)
    x1, x2 = rng.integers(0, 2, 4000), rng.integers(0, 2, 4000)
    res = pid_from_samples(x1, x2, x1 ^ x2)
    assert res.synergy[0] == pytest.approx(1.0, abs=0.01)
    assert res.redundancy[0] < 0.01
    group = rng.integers(-1, 3, 4000)
    tables = joint_counts(x1, x2, x1 & x2, (2, 2, 2), group=group, n_groups=3)
    assert tables.shape == (3, 2, 2, 2)
    for g in range(3):
        sel = group == g
        np.testing.assert_array_equal(tables[g], joint_counts(x1[sel], x2[sel], (x1 & x2)[sel], (2, 2, 2)))
    with pytest.raises(ValueError):
        joint_counts([0, 5], [0, 1], [0, 1], (2, 2, 2))
