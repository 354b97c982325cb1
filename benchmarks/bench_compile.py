"""Does torch.compile pay for the study's training step on this CPU? Eager against compiled.

Issue 19 asks for compilation "where it pays". This measures it for the working tree: for each
model, one subprocess times the eager training step (bench_models' step: forward through the
patching wrapper, the loss with the auxiliary terms, backward, clipping, AdamW; one torch thread)
and another the same step with the model wrapped in `torch.compile` (inductor, its C++ backend),
both on bench_models' settings. The compiled side reports the seconds of its first step
(tracing + compilation, with inductor's on-disk cache cold: each run uses a fresh cache folder)
and its steady ms/step; the last line says, per model, whether compiling pays and after how many
steps its compile time is earned back (never, when it is slower).

    python benchmarks/bench_compile.py [--models transformer,timoe] [--setting fixed] [--repeats 10]

Needs a C++ compiler (inductor's CPU backend); without one the compiled side fails and says so.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import bench_models

REPO = Path(__file__).resolve().parents[1]


def worker(name: str, setting: str, compiled: bool, repeats: int, warmup: int) -> dict[str, float]:
    """Time one model's training step in this process, eager or compiled; JSON-ready numbers."""
    import torch

    torch.set_num_threads(1)
    model, x, y, settings = bench_models._build(name, setting, REPO / "params.yaml")
    model.train()
    forward = torch.compile(model, dynamic=False) if compiled else None
    step = bench_models.training_step(model, x, y, settings, forward)
    t0 = time.perf_counter()
    step()  # compiled: tracing and code generation happen here
    first = time.perf_counter() - t0
    cpu, wall = bench_models._median_times(step, repeats, warmup)
    return {"cpu": cpu, "wall": wall, "first_step_s": first}


def run_worker(name: str, setting: str, compiled: bool, args: argparse.Namespace) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="bench-inductor-") as cache:
        env = dict(
            os.environ,
            PYTHONPATH=str(REPO / "src") + os.pathsep + str(REPO / "benchmarks"),
            OMP_NUM_THREADS="1",
            TORCHINDUCTOR_CACHE_DIR=cache,  # cold cache: the compile cost a fresh job would pay
        )
        cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", name, "--setting", setting]
        cmd += ["--repeats", str(args.repeats), "--warmup", str(args.warmup)]
        cmd += ["--compiled"] if compiled else []
        done = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        side = "compiled" if compiled else "eager"
        raise RuntimeError(f"{name} ({side}) failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def break_even_steps(eager_s: float, compiled_s: float, compile_s: float) -> float:
    """Steps after which compile time is earned back; inf when compiled steps are not faster."""
    saved = eager_s - compiled_s
    return compile_s / saved if saved > 0 else float("inf")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="transformer,moe,timoe")
    ap.add_argument("--setting", default="fixed", choices=sorted(bench_models.SETTINGS))
    ap.add_argument("--repeats", type=int, default=10, help="timed steps per measurement")
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps after the first")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--compiled", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.setting, args.compiled, args.repeats, args.warmup)))
        return
    import torch

    print(f"torch {torch.__version__}, 1 thread, {args.setting} settings; eager vs torch.compile (inductor)")
    head = ("model", "eager ms", "compiled ms", "speed-up", "compile s", "break-even")
    print("{:<14s} {:>9s} {:>12s} {:>9s} {:>10s} {:>11s}".format(*head))
    verdicts = []
    for name in args.models.split(","):
        eager = run_worker(name, args.setting, False, args)
        comp = run_worker(name, args.setting, True, args)
        compile_s = comp["first_step_s"] - comp["wall"]
        steps = break_even_steps(eager["cpu"], comp["cpu"], compile_s)
        shown = "never" if steps == float("inf") else f"{steps:.0f} steps"
        print(
            f"{name:<14s} {eager['cpu'] * 1e3:9.1f} {comp['cpu'] * 1e3:12.1f} "
            f"{eager['cpu'] / comp['cpu']:8.2f}x {compile_s:10.1f} {shown:>11s}"
        )
        verdicts.append(f"{name} {eager['cpu'] / comp['cpu']:.2f}x, break-even {shown}")
    print("COMPILE (a study job trains ~300-500 steps): " + "; ".join(verdicts))


if __name__ == "__main__":
    main()
