"""Training speed of the study's models on this CPU: the current tree against a base commit.

One run measures both trees: the base commit is checked out in a temporary `git worktree`, and
every (tree, setting, model) is timed in its own subprocess whose PYTHONPATH points at that
tree's `src`, so each side runs its own code. Measurements of base and new alternate (new, base,
then base, new in the next round), so load from the neighbours on the shared cores hits both.

A training step is the training loop's own (timoe.training.loop of the tree measured): forward
through the patching wrapper, cross-entropy plus the auxiliary losses, backward, gradient
clipping and the AdamW step, on one torch thread. Settings:

    fixed   the issue's settings: B 64, T 128 raw steps, 3 modalities x 3 channels, patch 4,
            d 32, 2 heads, d_ff 64, 4 layers with MoE at 0 and 2, 8 experts (2 synergy), top-2,
            dropout 0.1
    study   params.yaml's model and train settings on the synthetic-regimes window (32 steps)

Per model: ms/step (median process CPU time; wall time beside it), windows/s, the share of the
same-run one-thread fp32 1024x1024 matmul rate reached in model FLOPs, the ratio to the
transformer's step and the speed-up over the base. Model FLOPs are counted with
torch.utils.flop_counter.FlopCounterMode over one forward + backward of the BASE tree's model:
the work the model needs, so a rewrite that computes padding or masked-out entries cannot raise
its own share. The last line states the issue's targets, met or not.

    python benchmarks/bench_models.py [--base 9f9e351] [--rounds 2] [--repeats 8]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_BASE = "9f9e351"  # the commit before the speed work of issue 19
MODELS = "transformer,moe,fusemoe,timoe,modality-moe,hash-moe,oracle"
SETTINGS = {
    # name: (batch, raw steps, modalities, channels per modality)
    "fixed": (64, 128, 3, 3),
    "study": (None, 32, 3, 3),  # batch from params.yaml's train.batch_size
}
TARGET_TIMOE_SPEEDUP = 3.0
TARGET_OTHER_SPEEDUP = 2.0
TARGET_TIMOE_VS_DENSE = 1.3
TARGET_PEAK_SHARE = 0.35
N_CONTEXTS = 4  # the study's rus.n_contexts: timoe assigns each window to one of 4 prior tables


# ---------------------------------------------------------------- worker (runs inside one tree)
def _median_times(fn: Callable[[], object], repeats: int, warmup: int) -> tuple[float, float]:
    """Median (process CPU seconds, wall seconds) per call after `warmup` untimed calls."""
    for _ in range(warmup):
        fn()
    cpu, wall = [], []
    for _ in range(repeats):
        c0, w0 = time.process_time(), time.perf_counter()
        fn()
        cpu.append(time.process_time() - c0)
        wall.append(time.perf_counter() - w0)
    return statistics.median(cpu), statistics.median(wall)


def _build(name: str, setting: str, params_path: Path):  # -> (model, x, y, settings, params)
    """The model as build_for_data builds it (patching wrapper, per-context prior bank with a
    context assigner, the regime reader for the oracle) on random windows of the setting."""
    import torch

    from timoe.config import load_params
    from timoe.models import build_model
    from timoe.models.prior import ContextAssigner, PriorProvider, RegimeReader
    from timoe.training.loop import loop_settings
    from timoe.training.patching import Patched, patched_modalities

    params = load_params(params_path)
    batch, t_raw, m, per = SETTINGS[setting]
    batch = batch or params.train.batch_size
    cfg = params.model
    if setting == "fixed":  # the settings, whatever params.yaml says
        cfg = cfg.model_copy(
            update={"d_model": 32, "n_heads": 2, "d_ff": 64, "n_layers": 4, "moe_layers": [0, 2]}
        )
        cfg = cfg.model_copy(update={"n_experts": 8, "n_synergy_experts": 2, "top_k": 2, "dropout": 0.1})
        cfg = cfg.model_copy(update={"patch_size": 4, "encoder_layers": 1})
    p = cfg.patch_size
    gen = torch.Generator().manual_seed(0)
    n_regimes = 4
    c = m * per
    x = torch.randn(batch, t_raw, c + n_regimes, generator=gen)
    regime = torch.randint(0, n_regimes, (batch,), generator=gen)
    x[:, :, c:] = torch.nn.functional.one_hot(regime, n_regimes).float()[:, None, :]
    y = torch.randint(0, 6, (batch,), generator=gen)
    modalities = {f"m{k}": list(range(k * per, (k + 1) * per)) for k in range(m)}
    U = torch.rand(N_CONTEXTS, m, t_raw, generator=gen)
    R = torch.rand(N_CONTEXTS, m, m, t_raw, generator=gen) * 0.3
    S = torch.rand(N_CONTEXTS, m, m, t_raw, generator=gen) * 0.3
    R, S = 0.5 * (R + R.transpose(1, 2)), 0.5 * (S + S.transpose(1, 2))
    chans = list(range(c))
    assigner = ContextAssigner(
        chans, [0.0] * 2 * c, [1.0] * 2 * c, torch.randn(N_CONTEXTS, 2 * c, generator=gen).tolist()
    )
    provider = PriorProvider(U, R, S, p, assigner)
    torch.manual_seed(0)
    inner = build_model(
        name,
        cfg,
        n_channels=(c + n_regimes) * p,
        n_timesteps=t_raw // p,
        n_classes=6,
        modalities=patched_modalities(modalities, c + n_regimes, p),
        rus=provider,
        regime=RegimeReader(list(range(c, c + n_regimes))),
    )
    model = Patched(inner, p)
    settings = loop_settings(params, seed=0)
    return model, x, y, settings


def _count_flops(model, x, y) -> float:
    """FLOPs of one forward + backward (FlopCounterMode: matmuls, attention, convolutions)."""
    import torch.nn.functional as F
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        out = model(x)
        (F.cross_entropy(out.logits, y) + out.aux_loss).backward()
    model.zero_grad(set_to_none=True)
    return float(counter.get_total_flops())


def training_step(model, x, y, settings, forward: Callable | None = None) -> Callable[[], None]:
    """One step of the training loop (forward, loss with the auxiliary terms, backward, clipping,
    AdamW) on the fixed batch x, y; `forward` (default: the model) runs the forward pass, e.g. a
    torch.compile wrapper of the model."""
    from torch import nn

    from timoe.training import loop

    opt, sched = loop._optimiser(model, settings, 100 * len(x))
    loss_fn = nn.CrossEntropyLoss(label_smoothing=settings.label_smoothing)
    run = model if forward is None else forward

    def step() -> None:
        out = run(x)
        loss, _ = loop._loss_parts(out, y, loss_fn)
        loop._optimiser_step(loss, model, opt, sched, settings.grad_clip)

    return step


def worker(name: str, setting: str, params_path: Path, repeats: int, warmup: int) -> dict[str, float]:
    """Time the training step of one model in this process's tree; JSON-ready numbers."""
    import torch

    torch.set_num_threads(1)
    model, x, y, settings = _build(name, setting, params_path)
    model.train()
    flops = _count_flops(model, x, y)
    cpu, wall = _median_times(training_step(model, x, y, settings), repeats, warmup)
    return {"cpu": cpu, "wall": wall, "flops": flops, "batch": len(x)}


# ---------------------------------------------------------------- driver
def matmul_rate(n: int = 1024, repeats: int = 5) -> float:
    """One-thread fp32 n x n matmul, FLOP per CPU second (best of `repeats`)."""
    import torch

    torch.set_num_threads(1)
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        c0 = time.process_time()
        a @ b
        best = min(best, time.process_time() - c0)
    return 2.0 * n**3 / best


def run_worker(tree: Path, name: str, setting: str, args: argparse.Namespace) -> dict[str, float]:
    env = dict(os.environ, PYTHONPATH=str(tree / "src"), OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", name, "--setting", setting]
    cmd += [
        "--params",
        str(tree / "params.yaml"),
        "--repeats",
        str(args.repeats),
        "--warmup",
        str(args.warmup),
    ]
    done = subprocess.run(cmd, env=env, cwd=tree, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{name} ({setting}) failed in {tree}:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def add_worktree(rev: str, where: Path) -> Path:
    tree = where / "base"
    subprocess.run(
        ["git", "-C", str(REPO), "worktree", "add", "--detach", "--quiet", str(tree), rev],
        check=True,
        capture_output=True,
    )
    return tree


def measure(trees: dict[str, Path], setting: str, models: list[str], args: argparse.Namespace):
    """{tree: {model: median step numbers over rounds}}; rounds alternate the trees' order."""
    runs: dict[str, dict[str, list[dict[str, float]]]] = {t: {m: [] for m in models} for t in trees}
    for r in range(args.rounds):
        for name in models:
            order = list(trees) if r % 2 == 0 else list(reversed(trees))
            for label in order:
                runs[label][name].append(run_worker(trees[label], name, setting, args))
    out: dict[str, dict[str, dict[str, float]]] = {}
    for label, per_model in runs.items():
        out[label] = {}
        for name, rs in per_model.items():
            out[label][name] = {k: statistics.median(r[k] for r in rs) for k in rs[0]}
    return out


def print_table(setting: str, res, peak: float, models: list[str]) -> None:
    print(f"\n== {setting} settings ({_describe(setting)}); peak {peak / 1e9:.1f} GFLOP/s (1-thread matmul)")
    print(
        f"{'model':<14s} {'tree':<5s} {'ms/step':>8s} {'(wall)':>8s} {'windows/s':>10s} "
        f"{'GFLOP/step':>10s} {'% peak':>7s} {'vs dense':>8s} {'speed-up':>8s}"
    )
    for name in models:
        for label in ("base", "new"):
            r = res[label][name]
            flops = res["base"][name]["flops"]
            dense = res[label]["transformer"]["cpu"] if "transformer" in res[label] else float("nan")
            speed = res["base"][name]["cpu"] / r["cpu"]
            print(
                f"{name:<14s} {label:<5s} {r['cpu'] * 1e3:8.1f} {r['wall'] * 1e3:8.1f} "
                f"{r['batch'] / r['cpu']:10.0f} {flops / 1e9:10.2f} {100 * flops / r['cpu'] / peak:6.1f}% "
                f"{r['cpu'] / dense:8.2f} {speed:7.2f}x"
            )


def _describe(setting: str) -> str:
    batch, t, m, per = SETTINGS[setting]
    b = batch or "train.batch_size"
    return f"B {b}, T {t} raw steps, {m} modalities x {per} channels, model from params.yaml" + (
        " with the issue's fixed sizes" if setting == "fixed" else ""
    )


def targets_line(res, peak: float, models: list[str]) -> str:
    """The issue's targets at the fixed settings, each with its number and met/missed."""
    new, base = res["new"], res["base"]
    parts, all_met = [], True
    for name in models:
        need = TARGET_TIMOE_SPEEDUP if name == "timoe" else TARGET_OTHER_SPEEDUP
        got = base[name]["cpu"] / new[name]["cpu"]
        all_met &= got >= need
        parts.append(f"{name} {got:.2f}x (>= {need:.0f}x {'met' if got >= need else 'MISSED'})")
    if "timoe" in new and "transformer" in new:
        ratio = new["timoe"]["cpu"] / new["transformer"]["cpu"]
        all_met &= ratio <= TARGET_TIMOE_VS_DENSE
        ok = "met" if ratio <= TARGET_TIMOE_VS_DENSE else "MISSED"
        parts.append(f"timoe/transformer {ratio:.2f} (<= {TARGET_TIMOE_VS_DENSE} {ok})")
    shares = {n: base[n]["flops"] / new[n]["cpu"] / peak for n in models}
    low = [f"{n} {100 * s:.0f}%" for n, s in shares.items() if s < TARGET_PEAK_SHARE]
    all_met &= not low
    parts.append(
        f"peak share >= {100 * TARGET_PEAK_SHARE:.0f}% "
        + ("met (lowest " + f"{100 * min(shares.values()):.0f}%)" if not low else "MISSED: " + ", ".join(low))
    )
    return ("TARGETS (fixed settings) " + ("ALL MET" if all_met else "NOT ALL MET") + ": ") + "; ".join(parts)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--base", default=DEFAULT_BASE, help="git revision to compare against (temporary worktree)"
    )
    ap.add_argument("--models", default=MODELS)
    ap.add_argument("--settings", default="fixed,study")
    ap.add_argument("--rounds", type=int, default=2, help="alternating base/new measurements per model")
    ap.add_argument("--repeats", type=int, default=8, help="timed steps per measurement")
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps first (compilation, caches)")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--setting", help=argparse.SUPPRESS)
    ap.add_argument("--params", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.setting, args.params, args.repeats, args.warmup)))
        return
    models = args.models.split(",")
    unknown_settings = set(args.settings.split(",")) - set(SETTINGS)
    if unknown_settings:
        sys.exit(f"unknown setting(s) {sorted(unknown_settings)}; known: {list(SETTINGS)}")
    import torch

    head = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    )
    print(f"torch {torch.__version__}, 1 thread; new = tree at {head.stdout.strip()}, base = {args.base}")
    with tempfile.TemporaryDirectory(prefix="bench-base-") as tmp:
        base = add_worktree(args.base, Path(tmp))
        try:
            trees = {"new": REPO, "base": base}
            peaks = [matmul_rate()]
            results = {}
            for setting in args.settings.split(","):
                results[setting] = measure(trees, setting, models, args)
                peaks.append(matmul_rate())
            peak = statistics.median(peaks)
            for setting, res in results.items():
                print_table(setting, res, peak, models)
        finally:
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(base)], check=False)
    if "fixed" in results:
        print(targets_line(results["fixed"], peak, models))


if __name__ == "__main__":
    main()
