"""benchmarks/bench_exact_pid.py --quick: every peer prints a row (or 'not installed') and agrees."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_exact_pid.py"
PEERS = ("cvxpy+CLARABEL loop", "IDTxl BROJA (TartuPID, ECOS)", "dit PID_BROJA")


def test_quick_run_prints_each_peer_or_says_it_is_missing() -> None:
    pytest.importorskip("cvxpy")
    out = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick"], capture_output=True, text=True, check=True, timeout=120
    ).stdout
    assert len(re.findall(r"batched exact +[\d.]+ ms/problem", out)) == 2
    for peer in PEERS:
        rows = [line for line in out.splitlines() if peer in line]
        assert rows, peer
        for row in rows:
            if "not installed:" in row:
                continue
            assert re.search(r"ratio +[\d.]+x", row)
            diff = float(re.search(r"max\|diff\| ([\d.]+e[-+]\d+) bits", row).group(1))
            # dit's optimiser stops around 1e-2 bits on tiny problems; the cone solvers near 1e-6
            assert diff < (0.05 if peer.startswith("dit") else 1e-4), row


def test_a_peer_whose_own_dependency_is_missing_is_reported_not_fatal(tmp_path: Path) -> None:
    """dit installed with --no-deps is found but fails to import (no loguru): say so, go on."""
    pytest.importorskip("cvxpy")
    fake = tmp_path / "dit"
    fake.mkdir()
    (fake / "__init__.py").write_text("raise ModuleNotFoundError(\"No module named 'loguru'\")\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])}
    run = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick"], capture_output=True, text=True, timeout=120, env=env
    )
    assert run.returncode == 0, run.stderr
    assert "not installed: dit (ModuleNotFoundError: No module named 'loguru')" in run.stdout
