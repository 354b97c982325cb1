"""Exact discrete BROJA partial information decomposition, batched over many problems.

Only one convex program needs solving (method.md §1): min over Q in Δ_p of I_Q(X1,X2;Y).  With
P(y) fixed on Δ_p this is min Σ q(x1,x2,y) log[q(x1,x2,y)/q(x1,x2)] subject to q(x1,·,y) = p(x1,y),
q(·,x2,y) = p(x2,y), q ≥ 0 (q vanishes wherever p(x1,y) = 0 or p(x2,y) = 0: the marginals force it).

The objective is positively 1-homogeneous in each cell's vector q(x1,x2,·), so its conjugate is the
indicator of {c : logsumexp_y c_y ≤ 0} and the Lagrange dual has only (n1+n2)·ny unknowns:

    max Σ λ(x1,y) p(x1,y) + Σ μ(x2,y) p(x2,y)   s.t.  logsumexp_y [λ(x1,y) + μ(x2,y)] ≤ 0 per cell.

_pid_solver.py solves it with a batched primal-dual interior-point method in float64 (CPU or CUDA).
Every answer carries a certificate: `gap` = (I_Q of the returned, exactly feasible Q) − (dual lower
bound), so the true minimum lies in [lower_bound, min_mi] — provable accuracy, up to float64 rounding.

R = I(X1;Y) + I(X2;Y) − min I_Q,  U1 = min I_Q − I(X2;Y),  U2 = min I_Q − I(X1;Y),  S = I_P − min I_Q.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from timoe.interactions._pid_solver import objective, solve_min_mi, xlogx_sum
from timoe.interactions._torch import as_float64, cpu_threads, resolve_device

LN2 = math.log(2.0)


@dataclass(frozen=True)
class ExactPID:
    """Per-problem results, all in bits, arrays of length B (Q has shape (B, n1, n2, ny))."""

    redundancy: np.ndarray
    unique1: np.ndarray
    unique2: np.ndarray
    synergy: np.ndarray
    total: np.ndarray  # I_P(X1, X2; Y)
    min_mi: np.ndarray  # I_Q(X1, X2; Y) at the returned Q (an upper bound on the minimum)
    lower_bound: np.ndarray  # dual bound: the true minimum lies in [lower_bound, min_mi]
    gap: np.ndarray  # certificate: min_mi − lower_bound
    q: np.ndarray
    iterations: np.ndarray
    converged: np.ndarray  # gap ≤ tol

    def __len__(self) -> int:
        return len(self.total)

    def row(self, i: int) -> dict[str, float]:
        return {
            "R": float(self.redundancy[i]),
            "U1": float(self.unique1[i]),
            "U2": float(self.unique2[i]),
            "S": float(self.synergy[i]),
            "total": float(self.total[i]),
            "gap": float(self.gap[i]),
        }


def _information_terms(p: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """H(Y), I(X1;Y), I(X2;Y), I(X1,X2;Y) in nats for a batch of normalised joints."""
    py = p.sum(dim=(1, 2))
    p1y, p2y = p.sum(dim=2), p.sum(dim=1)
    hy = -xlogx_sum(py, (1,))
    i1 = xlogx_sum(p1y, (1, 2)) - xlogx_sum(p1y.sum(-1), (1,)) + hy
    i2 = xlogx_sum(p2y, (1, 2)) - xlogx_sum(p2y.sum(-1), (1,)) + hy
    return hy, i1, i2, objective(p) + hy


def _auto_chunk(n1: int, n2: int, ny: int, budget_bytes: float = 1e9) -> int:
    """Problems per solver call so that the per-iteration working set stays near budget_bytes."""
    per_problem = 8.0 * (3 * (n2 * ny) ** 2 + 2 * n1 * ny * n2 * ny + 16 * n1 * n2 * ny)
    return max(1, int(budget_bytes // per_problem))


def exact_pid(
    p: Any,
    *,
    tol: float = 1e-7,
    device: str | torch.device = "auto",
    max_iter: int = 100,
    chunk_size: int | None = None,
    num_threads: int | None = 1,
) -> ExactPID:
    """BROJA PID of a batch of discrete joints P of shape (B, n1, n2, ny) (or one (n1, n2, ny)).

    P may hold counts or probabilities (each problem is normalised); zero-padded cells, rows and
    classes are fine, and an all-zero problem returns zeros.  `tol` is the target certificate in
    bits.  `device` 'auto' picks CUDA when available.  `num_threads` sets torch's CPU threads during
    the solve (restored afterwards; None leaves them): the work is many small factorisations, for
    which one thread measured 2–10× faster than two on a shared 2-core machine.
    """
    dev = resolve_device(device)
    pt = _normalised(p, dev)
    nb, n1, n2, ny = pt.shape
    if n2 > n1:  # the solver factorises an (n2·ny)² matrix: give it the smaller side
        swapped = exact_pid(
            pt.transpose(1, 2),
            tol=tol,
            device=dev,
            max_iter=max_iter,
            chunk_size=chunk_size,
            num_threads=num_threads,
        )
        return _swap_sources(swapped)
    chunk = chunk_size or _auto_chunk(n1, n2, ny)
    with cpu_threads(num_threads if dev.type == "cpu" else None):
        outs = [solve_min_mi(pt[i : i + chunk], tol * LN2, max_iter) for i in range(0, nb, chunk)]
    return _decomposition(pt, {k: torch.cat([o[k] for o in outs]) for k in outs[0]})


def _normalised(p: Any, dev: torch.device) -> torch.Tensor:
    """P as a checked float64 batch (B, n1, n2, ny) on `dev`, each problem summing to 1 (or all 0)."""
    pt = as_float64(p, dev)
    if pt.ndim == 3:
        pt = pt.unsqueeze(0)
    if pt.ndim != 4:
        raise ValueError(f"P must have shape (B, n1, n2, ny) or (n1, n2, ny), got {tuple(pt.shape)}")
    if not bool(torch.isfinite(pt).all()) or bool((pt < 0).any()):
        raise ValueError("P must be finite and non-negative")
    mass = pt.sum(dim=(1, 2, 3), keepdim=True)
    return torch.where(mass > 0, pt / mass.clamp_min(1e-300), 0.0)


def _decomposition(pt: torch.Tensor, res: dict[str, torch.Tensor]) -> ExactPID:
    """ExactPID of the normalised joints pt (B, n1, n2, ny) from the solver's outputs `res`."""
    hy, i1, i2, i12 = _information_terms(pt)
    min_mi = hy + res["primal"]
    lower = hy + res["dual"]

    def bits(x: torch.Tensor) -> np.ndarray:
        return (x / LN2).cpu().numpy()

    # Components are non-negative in exact arithmetic; clip float noise (at most the certificate).
    return ExactPID(
        redundancy=bits((i1 + i2 - min_mi).clamp_min(0.0)),
        unique1=bits((min_mi - i2).clamp_min(0.0)),
        unique2=bits((min_mi - i1).clamp_min(0.0)),
        synergy=bits((i12 - min_mi).clamp_min(0.0)),
        total=bits(i12.clamp_min(0.0)),
        min_mi=bits(min_mi),
        lower_bound=bits(lower),
        gap=bits(res["gap"]),
        q=res["q"].cpu().numpy(),
        iterations=res["iters"].cpu().numpy(),
        converged=res["converged"].cpu().numpy(),
    )


def _swap_sources(r: ExactPID) -> ExactPID:
    return ExactPID(
        redundancy=r.redundancy,
        unique1=r.unique2,
        unique2=r.unique1,
        synergy=r.synergy,
        total=r.total,
        min_mi=r.min_mi,
        lower_bound=r.lower_bound,
        gap=r.gap,
        q=np.ascontiguousarray(r.q.transpose(0, 2, 1, 3)),
        iterations=r.iterations,
        converged=r.converged,
    )


def pad_joints(joints: Sequence[Any]) -> np.ndarray:
    """Stack joints of different shapes (n1_i, n2_i, ny_i) into one zero-padded (B, n1, n2, ny) array."""
    arrs = [np.asarray(j, dtype=np.float64) for j in joints]
    if not arrs or any(a.ndim != 3 for a in arrs):
        raise ValueError("need a non-empty sequence of 3-d joints")
    shape = tuple(max(a.shape[d] for a in arrs) for d in range(3))
    out = np.zeros((len(arrs), *shape))
    for i, a in enumerate(arrs):
        out[i, : a.shape[0], : a.shape[1], : a.shape[2]] = a
    return out


def exact_pid_many(joints: Sequence[Any], **kwargs: Any) -> ExactPID:
    """exact_pid over joints of different shapes (zero-padded to a common one; Q comes back padded)."""
    return exact_pid(pad_joints(joints), **kwargs)


def joint_counts(
    x1: Any,
    x2: Any,
    y: Any,
    shape: tuple[int, int, int],
    *,
    group: Any = None,
    n_groups: int | None = None,
    weights: Any = None,
) -> np.ndarray:
    """Count table(s) of integer codes: (n1, n2, ny), or (n_groups, n1, n2, ny) when `group` is given.

    `group` assigns every sample to one problem (e.g. a (pair, lag, stratum) index), so one bincount
    builds all tables for a batched solve.  Codes outside [0, n) raise; negative group ids drop the sample.
    """
    n1, n2, ny = shape
    a, b, c = (np.asarray(u, dtype=np.int64).ravel() for u in (x1, x2, y))
    if not (len(a) == len(b) == len(c)):
        raise ValueError("x1, x2 and y need the same number of samples")
    for name, u, n in (("x1", a, n1), ("x2", b, n2), ("y", c, ny)):
        if len(u) and (u.min() < 0 or u.max() >= n):
            raise ValueError(f"{name} codes must lie in [0, {n})")
    flat = (a * n2 + b) * ny + c
    w = None if weights is None else np.asarray(weights, dtype=np.float64).ravel()
    if group is None:
        return np.bincount(flat, weights=w, minlength=n1 * n2 * ny).astype(np.float64).reshape(shape)
    g = np.asarray(group, dtype=np.int64).ravel()
    if len(g) != len(flat):
        raise ValueError("group needs one id per sample")
    ng = int(n_groups if n_groups is not None else (g.max() + 1 if len(g) else 0))
    keep = (g >= 0) & (g < ng)
    size = n1 * n2 * ny
    counts = np.bincount(
        g[keep] * size + flat[keep], weights=None if w is None else w[keep], minlength=ng * size
    )
    return counts.astype(np.float64).reshape(ng, n1, n2, ny)


def pid_from_samples(
    x1_codes: Any,
    x2_codes: Any,
    y_codes: Any,
    *,
    n1: int | None = None,
    n2: int | None = None,
    ny: int | None = None,
    **kwargs: Any,
) -> ExactPID:
    """Exact PID of the empirical joint of integer codes (plug-in estimate; a batch of one)."""
    a, b, c = (np.asarray(u, dtype=np.int64).ravel() for u in (x1_codes, x2_codes, y_codes))
    if len(a) == 0:
        raise ValueError("no samples")
    shape = (n1 or int(a.max()) + 1, n2 or int(b.max()) + 1, ny or int(c.max()) + 1)
    return exact_pid(joint_counts(a, b, c, shape), **kwargs)
