"""Batched exact PID vs. the reference route (cvxpy + CLARABEL, one problem at a time).

Prints, per problem size: the cvxpy loop time, the batched time, their ratio, the largest
|difference| of min I_Q in bits, and the largest certificate (duality gap, bits) of the batched solver.

    python benchmarks/bench_exact_pid.py            # cvxpy timed on 12 of the 48 20×20×12 problems
    python benchmarks/bench_exact_pid.py --full     # cvxpy on all problems (about 5 minutes more)

cvxpy is a benchmark/test dependency only; `cvxpy_min_mi` is also the reference the tests use.
"""

from __future__ import annotations

import argparse
import math
import os
import time
import warnings

import numpy as np

from timoe.interactions.exact import exact_pid


def cvxpy_min_mi(p: np.ndarray, solver: str = "CLARABEL") -> float:
    """min_{Q∈Δ_p} I_Q(X1,X2;Y) in bits, as the reference code poses it (rel_entr per class)."""
    import cvxpy as cp

    p = np.asarray(p, dtype=np.float64)
    p = p / p.sum()
    n1, n2, ny = p.shape
    qs = [cp.Variable((n1, n2), nonneg=True) for _ in range(ny)]
    q12 = sum(qs)
    obj = sum(cp.sum(cp.rel_entr(qs[y], q12)) for y in range(ny))
    cons = []
    for y in range(ny):
        cons += [cp.sum(qs[y], axis=1) == p[:, :, y].sum(1), cp.sum(qs[y], axis=0) == p[:, :, y].sum(0)]
    prob = cp.Problem(cp.Minimize(obj), cons)
    # Tight tolerances: the reference must be more accurate than the 1e-4-bit target we test against.
    opts = ({"tol_gap_abs": 1e-10, "tol_gap_rel": 1e-10, "tol_feas": 1e-10, "max_iter": 500}
            if solver == "CLARABEL" else {"eps": 1e-9, "max_iters": 200_000})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # CLARABEL warns "may be inaccurate" at these tolerances
        prob.solve(solver=solver, **opts)
    py = p.sum((0, 1))
    hy = -float(np.sum(py[py > 0] * np.log(py[py > 0])))
    return (hy + float(prob.value)) / math.log(2.0)


def random_joints(n: int, shape: tuple[int, int, int], seed: int) -> np.ndarray:
    """A mix of dense Dirichlet joints and sparse ones (30–80% zero cells)."""
    rng = np.random.default_rng(seed)
    out = rng.dirichlet(np.full(int(np.prod(shape)), 0.5), size=n).reshape(n, *shape)
    for i in range(1, n, 2):
        out[i][rng.random(shape) < rng.uniform(0.3, 0.8)] = 0.0
    return out


def run(shape: tuple[int, int, int], n: int, n_cvx: int, seed: int) -> None:
    ps = random_joints(n, shape, seed)
    t0 = time.perf_counter()
    res = exact_pid(ps)
    t_batch = time.perf_counter() - t0
    t0 = time.perf_counter()
    ref = np.array([cvxpy_min_mi(p) for p in ps[:n_cvx]])
    t_cvx = (time.perf_counter() - t0) * n / n_cvx
    diff = float(np.abs(ref - res.min_mi[:n_cvx]).max())
    note = "" if n_cvx == n else f"  (cvxpy timed on {n_cvx}/{n}, extrapolated)"
    size = "x".join(map(str, shape))
    print(f"{n:3d} x {size:<9s} cvxpy+CLARABEL loop {t_cvx:8.2f} s | "
          f"batched {t_batch:6.2f} s | ratio {t_cvx / t_batch:7.1f}x | max|diff| {diff:.1e} bits | "
          f"max certificate {res.gap.max():.1e} bits | all certified {bool(res.converged.all())}{note}",
          flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--full", action="store_true", help="time cvxpy on every problem")
    args = ap.parse_args()
    print(f"load average before start: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    run((8, 8, 4), 48, 48, seed=0)
    run((10, 10, 6), 48, 48, seed=1)
    run((20, 20, 12), 48, 48 if args.full else 12, seed=2)


if __name__ == "__main__":
    main()
