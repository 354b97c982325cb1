"""GPU vs CPU on the estimator and training hot paths (run by benchmarks/gpu.sh).

Each check times the same work on the CPU and on the accelerator (synchronised, median of repeats),
prints both and the CPU/GPU ratio, and for the estimators the largest |CPU − GPU| difference:
1. exact PID, 48 problems of 20×20×12 (bits);
2. Sinkhorn batched over classes × lags, 12 classes × 8 lags of 256×256;
3. one BATCH estimate (XOR in noise, 8000 samples) (bits);
4. one multi-scale BATCH estimate over 4 lags (bits);
5. a timoe training step (batch 64, window 128) and a transformer step, forward + backward + AdamW.
A check that fails prints "FAILED <check>: <error>" and the others go on; the exit status is the
number of failed checks.  `--device cpu --quick` runs the same code CPU against CPU at tiny sizes
(how the script is kept working on machines without CUDA).

    python benchmarks/bench_gpu.py [--device cuda] [--quick]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import traceback
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from timoe.config import BatchEstimatorConfig, ModelConfig
from timoe.interactions.batch import batch_pid, sinkhorn_classes
from timoe.interactions.exact import exact_pid
from timoe.interactions.multiscale import LagSamples, multiscale_pid
from timoe.models import RusPrior, build_model

CPU = torch.device("cpu")


def timed(fn: Callable[[], object], dev: torch.device, repeats: int) -> float:
    """Median wall seconds of fn() on `dev` (synchronised), after one warm-up call."""

    def sync() -> None:
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)

    fn()
    sync()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def report(name: str, t_cpu: float, t_dev: float, dev: torch.device, diff: float | None = None) -> None:
    extra = "" if diff is None else f" | max|cpu-{dev.type}| {diff:.1e}"
    print(
        f"{name:<40s} cpu {t_cpu * 1e3:9.1f} ms | {dev.type} {t_dev * 1e3:9.1f} ms | "
        f"cpu/{dev.type} {t_cpu / t_dev:6.1f}x{extra}",
        flush=True,
    )


def check_exact(dev: torch.device, quick: bool) -> None:
    n, shape = (4, (6, 6, 3)) if quick else (48, (20, 20, 12))
    rng = np.random.default_rng(0)
    ps = rng.dirichlet(np.full(int(np.prod(shape)), 0.5), size=n).reshape(n, *shape)
    on_cpu, on_dev = exact_pid(ps, device=CPU), exact_pid(ps, device=dev)
    diff = float(np.abs(on_cpu.min_mi - on_dev.min_mi).max())
    reps = 1 if quick else 3
    t_cpu = timed(lambda: exact_pid(ps, device=CPU), CPU, reps)
    report(
        f"exact PID {n} x {'x'.join(map(str, shape))}",
        t_cpu,
        timed(lambda: exact_pid(ps, device=dev), dev, reps),
        dev,
        diff,
    )


def check_sinkhorn(dev: torch.device, quick: bool) -> None:
    b, n = (6, 32) if quick else (96, 256)
    gen = torch.Generator().manual_seed(0)
    log_a = 2.0 * torch.randn(b, n, n, generator=gen)
    log_r = torch.log_softmax(torch.randn(b, n, generator=gen), 1)
    log_c = torch.log_softmax(torch.randn(b, n, generator=gen), 1)
    args_dev = [t.to(dev) for t in (log_a, log_r, log_c)]
    q_cpu, _ = sinkhorn_classes(log_a, log_r, log_c, 500, 1e-3)
    q_dev, _ = sinkhorn_classes(*args_dev, 500, 1e-3)
    diff = float((q_cpu.exp() - q_dev.exp().cpu()).abs().max())
    report(
        f"Sinkhorn {b} slices of {n}x{n}",
        timed(lambda: sinkhorn_classes(log_a, log_r, log_c, 500, 1e-3), CPU, 5),
        timed(lambda: sinkhorn_classes(*args_dev, 500, 1e-3), dev, 5),
        dev,
        diff,
    )


def xor_samples(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    a, b = rng.integers(0, 2, n), rng.integers(0, 2, n)
    x1 = np.eye(2)[a] + 0.2 * rng.standard_normal((n, 2))
    return x1, np.eye(2)[b] + 0.2 * rng.standard_normal((n, 2)), a ^ b


def check_batch(dev: torch.device, quick: bool) -> None:
    n = 400 if quick else 8000
    cfg = BatchEstimatorConfig(
        discrim_epochs=2 if quick else 20, align_epochs=1 if quick else 20, sinkhorn_tol=1e-3
    )
    x1, x2, y = xor_samples(n, 0)
    runs = {}

    def run(d: torch.device) -> None:
        runs[d.type] = batch_pid(x1, x2, y, cfg, device=d, seed=0)

    t_cpu, t_dev = timed(lambda: run(CPU), CPU, 1), timed(lambda: run(dev), dev, 1)
    diff = max(abs(runs["cpu"].row()[k] - runs[dev.type].row()[k]) for k in ("R", "U1", "U2", "S"))
    report(f"BATCH estimate, {n} samples", t_cpu, t_dev, dev, diff)


def check_multiscale(dev: torch.device, quick: bool) -> None:
    n = 300 if quick else 4000
    cfg = BatchEstimatorConfig(
        discrim_epochs=2 if quick else 10, align_epochs=1 if quick else 5, sinkhorn_tol=1e-3
    )
    samples = {lag: LagSamples(*xor_samples(n, lag)) for lag in range(4)}
    runs = {}

    def run(d: torch.device) -> None:
        runs[d.type] = multiscale_pid(samples, cfg, device=d, seed=0, steps_factor=4)

    t_cpu, t_dev = timed(lambda: run(CPU), CPU, 1), timed(lambda: run(dev), dev, 1)
    diff = max(
        abs(runs["cpu"][lag].row()[k] - runs[dev.type][lag].row()[k])
        for lag in samples
        for k in ("R", "U1", "U2", "S")
    )
    report(f"multi-scale BATCH, 4 lags x {n}", t_cpu, t_dev, dev, diff)


def train_step(name: str, dev: torch.device, batch: int, steps: int, m: int = 3) -> Callable[[], None]:
    """One training step of model `name` on random windows, built on `dev`."""
    gen = torch.Generator().manual_seed(0)
    modalities = {f"mod{k}": list(range(3 * k, 3 * k + 3)) for k in range(m)}
    x = torch.randn(batch, steps, 3 * m, generator=gen).to(dev)
    y = torch.randint(0, 6, (batch,), generator=gen).to(dev)
    sym = torch.rand(m, m, steps, generator=gen) * 0.3 * (1 - torch.eye(m))[:, :, None]
    rus = RusPrior(torch.rand(m, steps, generator=gen), sym, sym.clone())
    torch.manual_seed(0)
    model = build_model(
        name,
        ModelConfig(d_model=64),
        n_channels=3 * m,
        n_timesteps=steps,
        n_classes=6,
        modalities=modalities,
        rus=rus,
    ).to(dev)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model.train()

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        out = model(x)
        (F.cross_entropy(out.logits, y) + out.aux_loss).backward()
        opt.step()

    return step


def check_training(dev: torch.device, quick: bool) -> None:
    batch, steps = (4, 16) if quick else (64, 128)
    for name in ("timoe", "transformer"):
        report(
            f"{name} train step, B={batch} T={steps}",
            timed(train_step(name, CPU, batch, steps), CPU, 3),
            timed(train_step(name, dev, batch, steps), dev, 3 if quick else 10),
            dev,
        )


CHECKS = {
    "exact": check_exact,
    "sinkhorn": check_sinkhorn,
    "batch": check_batch,
    "multiscale": check_multiscale,
    "training": check_training,
}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda", help="the accelerator to compare with the CPU")
    ap.add_argument("--quick", action="store_true", help="tiny sizes (CPU smoke test)")
    args = ap.parse_args()
    dev = torch.device(args.device)
    if args.quick:  # a smoke test on a shared CPU: more threads than free cores only thrash
        torch.set_num_threads(1)
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"
    print(f"torch {torch.__version__}, {dev} ({name}) vs cpu ({torch.get_num_threads()} threads)", flush=True)
    failed = 0
    for label, check in CHECKS.items():
        try:
            check(dev, args.quick)
        except Exception as exc:  # report and go on: one broken path must not hide the others
            failed += 1
            print(f"FAILED {label}: {type(exc).__name__}: {exc}", flush=True)
            traceback.print_exc()
    print(f"checks failed: {failed}")
    return failed


if __name__ == "__main__":
    sys.exit(main())
