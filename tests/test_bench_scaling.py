"""benchmarks/bench_scaling.py --quick: every cost curve prints its rows, its growth line and the figure."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_scaling.py"
CURVES = (
    "exact PID, 16 problems",
    "exact PID, 10x10x6",
    "BATCH estimate",
    "quantify, 1 lags",
    "quantify, M=2",
    "timoe train step, E=4",
    "timoe train step, T=16",
)


def test_quick_run_prints_every_curve_and_draws_the_figure(tmp_path: Path) -> None:
    fig = tmp_path / "scaling.png"
    out = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--fig", str(fig)],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    ).stdout
    for name in CURVES:
        rows = [line for line in out.splitlines() if line.strip().startswith(name)]
        assert len(rows) == 2 and all(re.search(r"[\d.]+ ms", r) for r in rows), name
        assert re.search(rf"growth: {re.escape(name)}.*time ∝ \w+\^-?[\d.]+", out), name
    assert fig.stat().st_size > 0
