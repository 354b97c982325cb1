"""Batched exact PID vs. the routes researchers already use, on the same random distributions.

Peers, each run one problem at a time on the first problems of every batch:
- cvxpy + CLARABEL (`cvxpy_min_mi`, the reference the tests use; min I_Q only);
- IDTxl's BROJA estimator (TartuPID: `idtxl.synergy_tartu.pid`, exponential cones in ECOS);
- dit's PID_BROJA (small shapes only: it takes seconds already at 3×3×2).
Prints, per problem size and peer: seconds per problem, ratio to the batched exact solver's seconds
per problem, and the largest |difference| in bits (min I_Q, and R/U1/U2/S where the peer gives them);
plus the batched solver's largest certificate (duality gap, bits).  A peer that is not installed
prints "not installed: <name> (why)" and the run goes on (install them with `pip install --no-deps
idtxl-uv==1.6.1 ecos==2.0.14` and `pip install dit==2.3`).

    python benchmarks/bench_exact_pid.py            # cvxpy on 12 and IDTxl on 2 of the 48 20×20×12
    python benchmarks/bench_exact_pid.py --full     # cvxpy on every problem (about 5 minutes more)
    python benchmarks/bench_exact_pid.py --quick    # tiny shapes, seconds (smoke test)

The peers are benchmark/test dependencies only.
"""

from __future__ import annotations

import argparse
import math
import os
import time
import warnings
from collections.abc import Callable

import numpy as np

from timoe.interactions.exact import exact_pid

COMPS = ("R", "U1", "U2", "S")
Peer = Callable[[np.ndarray], dict[str, float]]


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
    opts = (
        {"tol_gap_abs": 1e-10, "tol_gap_rel": 1e-10, "tol_feas": 1e-10, "max_iter": 500}
        if solver == "CLARABEL"
        else {"eps": 1e-9, "max_iters": 200_000}
    )
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


def tartu_pid(p: np.ndarray) -> dict[str, float]:
    """IDTxl's BROJA (TartuPID, ECOS) on a joint p (n1, n2, ny); components and min I_Q in bits."""
    from idtxl import synergy_tartu

    pdf = {(int(z), int(x), int(y)): float(p[x, y, z]) for x, y, z in zip(*np.nonzero(p), strict=True)}
    out = synergy_tartu.pid(pdf, cone_solver="ECOS", output=0)
    comps = {"R": out["SI"], "U1": out["UIY"], "U2": out["UIZ"], "S": out["CI"]}
    return {**comps, "min_mi": comps["R"] + comps["U1"] + comps["U2"]}


def dit_pid(p: np.ndarray) -> dict[str, float]:
    """dit's PID_BROJA on a joint p (n1, n2, ny); components and min I_Q in bits."""
    import dit
    from dit.pid import PID_BROJA

    cells = list(zip(*np.nonzero(p), strict=True))
    dist = dit.Distribution([tuple(int(v) for v in c) for c in cells], [float(p[c]) for c in cells])
    pid = PID_BROJA(dist, [[0], [1]], [2])
    atoms = {"R": ((0,), (1,)), "U1": ((0,),), "U2": ((1,),), "S": ((0, 1),)}
    comps = {k: float(pid.get_pi(atom)) for k, atom in atoms.items()}
    return {**comps, "min_mi": comps["R"] + comps["U1"] + comps["U2"]}


def clarabel_pid(p: np.ndarray) -> dict[str, float]:
    return {"min_mi": cvxpy_min_mi(p)}


# (label, importable module that must be present, solver, largest support it is run on)
PEERS: list[tuple[str, str, Peer, int]] = [
    ("cvxpy+CLARABEL loop", "cvxpy", clarabel_pid, 10**9),
    ("IDTxl BROJA (TartuPID, ECOS)", "idtxl", tartu_pid, 10**9),
    ("dit PID_BROJA", "dit", dit_pid, 48),
]


def missing(module: str) -> str | None:
    """Why `module` cannot be used here (None when it imports): absent, or one of its own
    dependencies absent (dit installed with --no-deps lacks loguru)."""
    import importlib

    try:
        importlib.import_module(module)
    except Exception as err:  # any import-time failure makes the peer unusable, not the benchmark
        return f"{type(err).__name__}: {err}"
    return None


def run_peer(solve: Peer, ps: np.ndarray, exact: dict[str, np.ndarray]) -> tuple[float, float]:
    """Seconds per problem of `solve` over ps (m, n1, n2, ny), and its largest |diff| (bits) to the
    exact solver's values over min I_Q and every component it reports."""
    solve(ps[0])  # warm-up: imports and first-call set-up are not the per-problem cost
    t0 = time.perf_counter()
    rows = [solve(p) for p in ps]
    per = (time.perf_counter() - t0) / len(ps)
    diff = max(abs(row[k] - exact[k][i]) for i, row in enumerate(rows) for k in row)
    return per, diff


def run(shape: tuple[int, int, int], n: int, n_peer: dict[str, int], seed: int) -> None:
    """Batched exact solve of n random joints of `shape`, then each installed peer on its first
    n_peer[module] problems; one printed line per peer."""
    ps = random_joints(n, shape, seed)
    mass = ps.sum(axis=(1, 2, 3), keepdims=True)
    ps = ps[mass.ravel() > 0] / mass[mass.ravel() > 0]  # sparse ones lost mass (on 2×2×2 all of it)
    n = len(ps)
    t0 = time.perf_counter()
    res = exact_pid(ps)
    t_exact = (time.perf_counter() - t0) / n
    exact = {"min_mi": res.min_mi, **{k: np.array([res.row(i)[k] for i in range(n)]) for k in COMPS}}
    size = "x".join(map(str, shape))
    print(
        f"{n:3d} x {size:<9s} batched exact {t_exact * 1e3:8.2f} ms/problem | max certificate "
        f"{res.gap.max():.1e} bits | all certified {bool(res.converged.all())}",
        flush=True,
    )
    for label, module, solve, max_cells in PEERS:
        m = min(n_peer.get(module, 0), n)
        if int(np.prod(shape)) > max_cells or m == 0:
            continue
        why = missing(module)
        if why is not None:
            print(f"{'':15s} {label:<29s} not installed: {module} ({why})", flush=True)
            continue
        per, diff = run_peer(solve, ps[:m], exact)
        print(
            f"{'':15s} {label:<29s} {per * 1e3:9.2f} ms/problem (on {m}/{n}) | ratio "
            f"{per / t_exact:8.1f}x | max|diff| {diff:.1e} bits",
            flush=True,
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--full", action="store_true", help="time cvxpy on every problem")
    ap.add_argument("--quick", action="store_true", help="tiny shapes only (smoke test)")
    args = ap.parse_args()
    print(f"load average before start: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    if args.quick:
        run((2, 2, 2), 8, {"cvxpy": 2, "idtxl": 2, "dit": 1}, seed=0)
        run((4, 4, 3), 8, {"cvxpy": 2, "idtxl": 2}, seed=1)
        return
    run((2, 2, 2), 48, {"cvxpy": 48, "idtxl": 48, "dit": 8}, seed=3)
    run((3, 3, 2), 48, {"cvxpy": 48, "idtxl": 48, "dit": 3}, seed=4)
    run((4, 4, 3), 48, {"cvxpy": 48, "idtxl": 48, "dit": 3}, seed=5)
    run((8, 8, 4), 48, {"cvxpy": 48, "idtxl": 48}, seed=0)
    run((10, 10, 6), 48, {"cvxpy": 48, "idtxl": 48}, seed=1)
    run((20, 20, 12), 48, {"cvxpy": 48 if args.full else 12, "idtxl": 2}, seed=2)


if __name__ == "__main__":
    main()
