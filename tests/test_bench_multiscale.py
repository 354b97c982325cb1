"""benchmarks/bench_multiscale.py --quick: per-lag, multi-scale and stacked rows for every process."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import polars as pl

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_multiscale.py"
ROUTES = ("multi-scale x1", "multi-scale x3", "stacked ", "stacked, full align")


def test_quick_run_prints_every_route_and_writes_the_check_csv(tmp_path: Path) -> None:
    out_csv = tmp_path / "estimator_check.csv"
    out = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--out", str(out_csv)],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    ).stdout
    assert len(re.findall(r"per-lag BATCH +[\d.]+ s", out)) == 3
    for route in ROUTES:
        rows = [line for line in out.splitlines() if route in line and "speed-up" in line]
        assert len(rows) == 3, route
        assert all(re.search(r"speed-up +[\d.]+x .*max\|diff\| [\d.]+ bits", r) for r in rows), route
    assert re.search(r"^target \(stacked: .*: (met|not met)$", out, re.M)
    table = pl.read_csv(out_csv)
    assert set(table["steps_factor"]) == {1, 3} and table.height == 3 * 2 * 3 * 4
