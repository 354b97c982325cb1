"""benchmarks/gpu.sh and bench_gpu.py on a machine without CUDA: the script says so and exits 0,
and the timing code runs CPU against CPU at tiny sizes so it is ready for a GPU."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA path")
def test_gpu_script_says_no_cuda_and_exits_0() -> None:
    done = subprocess.run(
        ["bash", str(BENCH / "gpu.sh")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={"PYTHON": sys.executable, "PATH": os.defpath},  # the system PATH only: no CUDA tools
    )
    assert done.returncode == 0, done.stderr
    assert "no CUDA" in done.stdout


def test_gpu_timings_run_cpu_against_cpu() -> None:
    done = subprocess.run(
        [sys.executable, str(BENCH / "bench_gpu.py"), "--device", "cpu", "--quick"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    rows = re.findall(r"cpu/cpu +[\d.]+x", done.stdout)
    assert len(rows) == 6 and "checks failed: 0" in done.stdout
    assert all(float(d) == 0.0 for d in re.findall(r"max\|cpu-cpu\| ([\d.e+-]+)", done.stdout))
