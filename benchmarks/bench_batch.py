"""BATCH estimator: Sinkhorn batched over classes vs a per-class loop, and accuracy on canonical cases.

1. Sinkhorn on one alignment step (n×n samples, K classes, optionally × lags), class-major kernel
   (K, n, n) as the estimator builds it: the reference route (one class at a time, probability
   domain, stop when sums are within 0.01) vs ours (all slices at once, two batched mat-vecs per
   iteration, same stop rule; and at the config default tolerance 1e-6).  Times are CPU-time
   medians of 7 repeats (the CPU may be shared); iterations to tolerance and the error against a float64 solve
   are printed for both.  Target: batched ≥ 2× the loop at K = 6 and 12.
2. Accuracy: XOR, AND, copy (Y = X1) and X1 = X2 = Y, each symbol embedded as one-hot + Gaussian
   noise (σ = 0.2), 4000 samples; BATCH (default config except align_epochs=10, sinkhorn_tol=1e-3)
   vs the exact PID of the underlying symbols.  Target: MAE ≤ 0.05 bits per component.

    python benchmarks/bench_batch.py [--quick]
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch

from timoe.config import BatchEstimatorConfig
from timoe.interactions.batch import batch_pid, sinkhorn_classes
from timoe.interactions.exact import exact_pid, joint_counts

COMPS = ("R", "U1", "U2", "S")


def per_class_loop(
    a: torch.Tensor, r: torch.Tensor, c: torch.Tensor, iters: int = 500, atol: float = 0.01
) -> tuple[torch.Tensor, list[int]]:
    """The reference route: each class slice of a (K, n1, n2) on its own, alternating column/row
    normalisation to r (K, n1), c (K, n2).  Returns q (K, n1, n2) and the iterations per class."""
    out, used = [], []
    for k in range(a.shape[0]):
        m = a[k]
        for it in range(1, iters + 1):  # noqa: B007 (read after the loop)
            m = m / m.sum(0, keepdim=True) * c[k][None]
            if torch.allclose(m.sum(1), r[k], rtol=0, atol=atol):
                break
            m = m / m.sum(1, keepdim=True) * r[k][:, None]
            if torch.allclose(m.sum(0), c[k], rtol=0, atol=atol):
                break
        out.append(m)
        used.append(it)
    return torch.stack(out), used


def sinkhorn_problem(n: int, b: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A class-major log kernel (b, n, n) as the alignment makes it, row targets r and feasible column
    targets c (b, n)."""
    gen = torch.Generator().manual_seed(seed)
    logits = 2.0 * torch.randn(b, n, n, generator=gen)
    r = torch.softmax(torch.randn(b, n, generator=gen), 0)
    c = torch.softmax(torch.randn(b, n, generator=gen), 0)
    return logits, r, c * r.sum(1, keepdim=True) / c.sum(1, keepdim=True)


def median_time(fn, reps: int) -> float:
    """Median process CPU seconds of fn() (one torch thread: on a shared CPU, wall time mostly
    measures the neighbours), after one warm-up call."""
    fn()
    times = []
    for _ in range(reps):
        t0 = time.process_time()
        fn()
        times.append(time.process_time() - t0)
    return float(np.median(times))


def bench_sinkhorn(n: int, k: int, lags: int = 1, reps: int = 7, tol: float = 0.01) -> float:
    """Per-class loop vs all slices (classes × lags) at once; both stop when sums are within `tol`.
    Prints times (median of `reps`), ratio, iterations to tolerance and the largest |q − q*| of
    each against a float64 solve to 1e-10.  Returns the ratio."""
    logits, r, c = sinkhorn_problem(n, k * lags)
    t_loop = median_time(lambda: per_class_loop(logits.exp(), r, c, atol=tol), reps)
    t_batched = median_time(lambda: sinkhorn_classes(logits, r.log(), c.log(), 500, tol), reps)
    t_tight = median_time(lambda: sinkhorn_classes(logits, r.log(), c.log(), 500, 1e-6), reps)
    q_loop, it_loop = per_class_loop(logits.exp(), r, c, atol=tol)
    log_q, it_batched = sinkhorn_classes(logits, r.log(), c.log(), 500, tol)
    _, it_tight = sinkhorn_classes(logits, r.log(), c.log(), 500, 1e-6)
    ref, _ = sinkhorn_classes(logits.double(), r.double().log(), c.double().log(), 5000, 1e-10)
    err_loop = float((q_loop.double() - ref.exp()).abs().max())
    err_batched = float((log_q.double().exp() - ref.exp()).abs().max())
    shape = f"K={k}" if lags == 1 else f"K={k}x{lags} lags"
    print(
        f"sinkhorn n={n} {shape:<12s}: per-class loop {t_loop * 1e3:7.2f} ms "
        f"(iters mean {np.mean(it_loop):.1f}, max {max(it_loop)}) | batched {t_batched * 1e3:6.2f} ms "
        f"(iters {it_batched}) | ratio {t_loop / t_batched:5.1f}x | max|q-q*| loop {err_loop:.1e}, "
        f"batched {err_batched:.1e} | batched at tol 1e-6 {t_tight * 1e3:6.2f} ms (iters {it_tight})",
        flush=True,
    )
    return t_loop / t_batched


def bench_accuracy(n: int = 4000, noise: float = 0.2) -> None:
    rng = np.random.default_rng(0)
    a, b, c = rng.integers(0, 2, n), rng.integers(0, 2, n), rng.integers(0, 3, n)
    cases = {
        "XOR": (a, b, a ^ b, 2, 2),
        "AND": (a, b, a & b, 2, 2),
        "copy": (c, b, c, 3, 2),
        "X1=X2=Y": (c, c, c, 3, 3),
    }
    cfg = BatchEstimatorConfig(align_epochs=10, sinkhorn_tol=1e-3)
    errors = []
    for name, (s1, s2, y, k1, k2) in cases.items():
        truth = exact_pid(joint_counts(s1, s2, y, (k1, k2, int(y.max()) + 1))).row(0)
        x1 = np.eye(k1)[s1] + noise * rng.standard_normal((n, k1))
        x2 = np.eye(k2)[s2] + noise * rng.standard_normal((n, k2))
        res = batch_pid(x1, x2, y, cfg, seed=0)
        est = res.row()
        errors.append([abs(est[k] - truth[k]) for k in COMPS])
        shown = " ".join(f"{k} {est[k]:.3f}/{truth[k]:.3f}" for k in COMPS)
        print(
            f"{name:8s} est/true: {shown} | {res.seconds:5.1f} s, {res.sinkhorn_iters:.1f} "
            "Sinkhorn iterations per step",
            flush=True,
        )
    mae = np.mean(errors, axis=0)
    print(
        "MAE per component (bits): "
        + " ".join(f"{k} {m:.3f}" for k, m in zip(COMPS, mae, strict=True))
        + f" | max {mae.max():.3f} (target ≤ 0.05)"
    )


def bench_throughput(n: int = 8000, noise: float = 0.2) -> None:
    """Samples per second of one whole BATCH estimate (discriminators + alignment + readout), on the
    device the estimator picks (CUDA when present), and training throughput over all epochs."""
    rng = np.random.default_rng(1)
    a, b = rng.integers(0, 2, n), rng.integers(0, 2, n)
    x1 = np.eye(2)[a] + noise * rng.standard_normal((n, 2))
    x2 = np.eye(2)[b] + noise * rng.standard_normal((n, 2))
    cfg = BatchEstimatorConfig(sinkhorn_tol=1e-3)
    res = batch_pid(x1, x2, a ^ b, cfg, seed=0)
    epochs = cfg.discrim_epochs + cfg.align_epochs
    device = "cuda" if torch.cuda.is_available() else "cpu"
    print(
        f"throughput ({device}, n={n}): {n / res.seconds:8.0f} samples/s per estimate "
        f"({res.seconds:.1f} s) | {n * epochs / res.seconds:8.0f} sample-epochs/s over {epochs} epochs"
    )


def main(quick: bool = False) -> None:
    print(
        f"load average before start: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs; "
        f"device {'cuda' if torch.cuda.is_available() else 'cpu'}"
    )
    torch.set_num_threads(1)
    n = 64 if quick else 256
    for k, lags in ((2, 1), (6, 1), (12, 1), (6, 8)):
        bench_sinkhorn(n, k, lags, reps=3 if quick else 7)
    if quick:
        return
    bench_accuracy()
    bench_throughput()


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="Sinkhorn rows only, n = 64 (smoke test)")
    main(ap.parse_args().quick)
