"""benchmarks/bench_compile.py: the break-even arithmetic, and its eager worker times a real step."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH))

from bench_compile import break_even_steps  # noqa: E402


def test_break_even_counts_the_steps_that_repay_compilation() -> None:
    assert break_even_steps(eager_s=0.10, compiled_s=0.05, compile_s=30.0) == pytest.approx(600.0)


@pytest.mark.parametrize("compiled_s", [0.10, 0.12])
def test_break_even_is_never_when_compiled_is_not_faster(compiled_s: float) -> None:
    assert break_even_steps(eager_s=0.10, compiled_s=compiled_s, compile_s=30.0) == float("inf")


def test_eager_worker_times_a_training_step() -> None:
    env = dict(os.environ, PYTHONPATH=str(BENCH.parent / "src") + os.pathsep + str(BENCH))
    cmd = [sys.executable, str(BENCH / "bench_compile.py"), "--worker", "transformer", "--setting", "study"]
    cmd += ["--repeats", "2", "--warmup", "1"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    row = json.loads(done.stdout.strip().splitlines()[-1])
    assert 0 < row["cpu"] < 10 and row["first_step_s"] > 0
