"""Cost curves of the hot paths, each with its fitted growth exponent (time ∝ x^b, least squares in log-log).

1. exact PID: seconds vs support size (n×n×n/2 cells, 16 problems) and vs batch count (10×10×6);
2. BATCH: one estimate's seconds vs number of samples (XOR in noise, short config);
3. quantify stage (compute_temporal_rus, exact estimator, directed form): seconds vs modalities
   M (M(M−1)/2 pairs) and vs number of lags;
4. training step (timoe model, forward + backward + AdamW): seconds vs window length and experts.
Times are process CPU seconds, median of repeats, one torch thread: on a shared machine wall time
mostly measures the neighbours.  Prints one table row per point and one "growth" line per curve,
and draws the four panels into --fig.

    python benchmarks/bench_scaling.py [--fig results/benchmarks/scaling.png] [--quick]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from timoe.config import BatchEstimatorConfig, ModelConfig, RusConfig
from timoe.interactions.batch import batch_pid
from timoe.interactions.exact import exact_pid
from timoe.interactions.temporal import compute_temporal_rus
from timoe.models import RusPrior, build_model


@dataclass
class Curve:
    """One cost curve: x values, CPU seconds per point, and the panel it is drawn in."""

    name: str
    xlabel: str
    panel: int
    xs: list[float] = field(default_factory=list)
    secs: list[float] = field(default_factory=list)

    def add(self, x: float, sec: float, note: str = "") -> None:
        self.xs.append(x)
        self.secs.append(sec)
        print(f"  {self.name:<34s} {self.xlabel:>10s} {x:8g}  {sec * 1e3:10.2f} ms  {note}", flush=True)

    def exponent(self, last: int | None = None) -> float:
        """b in seconds ∝ x^b (least squares on log-log), over all points or the `last` largest: at
        small sizes fixed per-call costs flatten the curve, the tail shows the asymptotic growth."""
        xs, secs = (self.xs, self.secs) if last is None else (self.xs[-last:], self.secs[-last:])
        return float(np.polyfit(np.log(xs), np.log(secs), 1)[0])


def cpu_median(fn: Callable[[], object], repeats: int) -> float:
    """Median process CPU seconds of fn() after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.process_time()
        fn()
        times.append(time.process_time() - t0)
    return statistics.median(times)


def random_joints(n: int, shape: tuple[int, int, int], seed: int) -> np.ndarray:
    """n dense Dirichlet joints (n, n1, n2, ny)."""
    rng = np.random.default_rng(seed)
    return rng.dirichlet(np.full(int(np.prod(shape)), 0.5), size=n).reshape(n, *shape)


def exact_curves(sides: Sequence[int], counts: Sequence[int], repeats: int) -> list[Curve]:
    by_size = Curve("exact PID, 16 problems", "cells", 0)
    for s in sides:
        shape = (s, s, max(2, s // 2))
        ps = random_joints(16, shape, s)
        sec = cpu_median(lambda ps=ps: exact_pid(ps), repeats)
        by_size.add(float(np.prod(shape)), sec, "x".join(map(str, shape)))
    by_count = Curve("exact PID, 10x10x6", "problems", 0)
    for b in counts:
        ps = random_joints(b, (10, 10, 6), b)
        by_count.add(float(b), cpu_median(lambda ps=ps: exact_pid(ps), repeats))
    return [by_size, by_count]


def batch_curve(sizes: Sequence[int], repeats: int) -> list[Curve]:
    cfg = BatchEstimatorConfig(discrim_epochs=4, align_epochs=2, sinkhorn_tol=1e-3)
    curve = Curve("BATCH estimate (4+2 epochs)", "samples", 1)
    for n in sizes:
        rng = np.random.default_rng(n)
        a, b = rng.integers(0, 2, n), rng.integers(0, 2, n)
        x1 = np.eye(2)[a] + 0.2 * rng.standard_normal((n, 2))
        x2 = np.eye(2)[b] + 0.2 * rng.standard_normal((n, 2))
        curve.add(
            float(n), cpu_median(lambda x1=x1, x2=x2, y=a ^ b: batch_pid(x1, x2, y, cfg, seed=0), repeats)
        )
    return [curve]


def quantify_inputs(
    m: int, windows: int, steps: int, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, dict[str, list[int]]]:
    """Random windows x (N, T, 2M), sticky step labels (N, T) in 6 classes, and M two-channel modalities."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((windows, steps, 2 * m)).astype(np.float32)
    change = rng.random((windows, steps)) < 0.1
    labels = np.cumsum(change * rng.integers(1, 6, (windows, steps)), axis=1) % 6
    return x, labels, {f"m{k}": [2 * k, 2 * k + 1] for k in range(m)}


def quantify_curves(
    mods: Sequence[int], lag_counts: Sequence[int], windows: int, steps: int, repeats: int
) -> list[Curve]:
    def run(m: int, n_lags: int) -> float:
        x, labels, modalities = quantify_inputs(m, windows, steps)
        cfg = RusConfig(lags=list(range(n_lags)), device="cpu")
        return cpu_median(lambda: compute_temporal_rus(x, labels, modalities, cfg), repeats)

    by_mod = Curve(f"quantify, {lag_counts[0]} lags", "pairs", 2)
    for m in mods:
        by_mod.add(float(m * (m - 1) // 2), run(m, lag_counts[0]), f"M={m}")
    by_lag = Curve(f"quantify, M={mods[0]} ({mods[0] * (mods[0] - 1) // 2} pairs)", "lags", 2)
    for n_lags in lag_counts:
        by_lag.add(float(n_lags), run(mods[0], n_lags))
    return [by_mod, by_lag]


def train_step_time(steps: int, experts: int, batch: int, repeats: int, m: int = 3) -> float:
    """CPU seconds of one timoe training step on random windows (batch, steps, 3m)."""
    gen = torch.Generator().manual_seed(0)
    modalities = {f"mod{k}": list(range(3 * k, 3 * k + 3)) for k in range(m)}
    x = torch.randn(batch, steps, 3 * m, generator=gen)
    y = torch.randint(0, 6, (batch,), generator=gen)
    sym = torch.rand(m, m, steps, generator=gen) * 0.3 * (1 - torch.eye(m))[:, :, None]
    rus = RusPrior(torch.rand(m, steps, generator=gen), sym, sym.clone())
    cfg = ModelConfig(d_model=64, n_experts=experts)
    torch.manual_seed(0)
    model = build_model(
        "timoe", cfg, n_channels=3 * m, n_timesteps=steps, n_classes=6, modalities=modalities, rus=rus
    )
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model.train()

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        out = model(x)
        (F.cross_entropy(out.logits, y) + out.aux_loss).backward()
        opt.step()

    return cpu_median(step, repeats)


def training_curves(lengths: Sequence[int], experts: Sequence[int], batch: int, repeats: int) -> list[Curve]:
    by_len = Curve(f"timoe train step, E={experts[0]}", "window", 3)
    for t in lengths:
        by_len.add(float(t), train_step_time(t, experts[0], batch, repeats))
    by_exp = Curve(f"timoe train step, T={lengths[0]}", "experts", 3)
    for e in experts:
        by_exp.add(float(e), train_step_time(lengths[0], e, batch, repeats))
    return [by_len, by_exp]


def draw(curves: list[Curve], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 4, figsize=(16, 3.6))
    titles = ("exact PID", "BATCH", "quantify stage", "training step")
    for ax, title in zip(axes, titles, strict=True):
        ax.set(title=title, xscale="log", yscale="log", ylabel="CPU seconds")
    for c in curves:
        axes[c.panel].plot(c.xs, c.secs, "o-", label=f"{c.name} vs {c.xlabel} (b={c.exponent():.2f})")
    for ax in axes:
        ax.legend(fontsize=6)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fig", type=Path, default=Path("results/benchmarks/scaling.png"))
    ap.add_argument("--quick", action="store_true", help="two or three points per curve (smoke test)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    print(
        f"load average before start: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs; CPU seconds, "
        "median of repeats, 1 torch thread"
    )
    q = args.quick
    reps = 1 if q else 3
    curves = exact_curves((4, 8) if q else (4, 8, 12, 16, 20), (1, 4) if q else (1, 4, 16, 64), reps)
    curves += batch_curve((200, 400) if q else (500, 1000, 2000, 4000), 1)
    curves += quantify_curves(
        (2, 3) if q else (2, 4, 6, 8), (1, 2) if q else (2, 4, 8), 8 if q else 64, 32 if q else 128, reps
    )
    curves += training_curves(
        (16, 32) if q else (32, 64, 128, 256), (4, 8) if q else (4, 8, 16, 32), 4 if q else 16, reps
    )
    for c in curves:
        print(
            f"growth: {c.name:<34s} time ∝ {c.xlabel}^{c.exponent():.2f} over all points, "
            f"^{c.exponent(2):.2f} over the largest two"
        )
    draw(curves, args.fig)
    print(f"figure: {args.fig}")


if __name__ == "__main__":
    main()
