"""benchmarks/bench_accuracy.py: the issue-4 target check reads the evaluate stage's runs.csv."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import polars as pl

from timoe.evaluation.stats import BASELINES

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_accuracy.py"


def _runs(path: Path, timoe_hapt: list[float], fusemoe_hapt: list[float]) -> Path:
    rows = []
    for seed in range(3):
        rows += [
            {
                "dataset": "hapt",
                "model": "timoe",
                "seed": seed,
                "accuracy": timoe_hapt[seed],
                "routing_entropy": 2.079,
            },
            {"dataset": "hapt", "model": "fusemoe", "seed": seed, "accuracy": fusemoe_hapt[seed]},
            {"dataset": "hapt", "model": "moe", "seed": seed, "accuracy": 0.90},
            {"dataset": "hapt", "model": "transformer", "seed": seed, "accuracy": 0.91},
            {"dataset": "basicmotions", "model": "timoe", "seed": seed, "accuracy": 1.0},
        ]
        # the other configured baselines, all below fusemoe
        rows += [
            {"dataset": "hapt", "model": m, "seed": seed, "accuracy": 0.89}
            for m in BASELINES
            if m not in ("transformer", "moe", "fusemoe")
        ]
    pl.DataFrame(rows).write_csv(path)
    return path


def _bench(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, check=False)


def test_reports_met_and_missed_targets(tmp_path):
    met = _bench("--runs", str(_runs(tmp_path / "a.csv", [0.97, 0.97, 0.97], [0.95, 0.96, 0.94])))
    assert met.returncode == 0, met.stderr
    assert "hapt: timoe 97.00 % vs target 96.5 % -> MET" in met.stdout
    assert "best baseline fusemoe 95.00 %" in met.stdout and "+2.00 pp" in met.stdout
    assert "basicmotions: timoe 100.00 % vs target 100.0 % -> MET" in met.stdout
    assert "| hapt | timoe | 97.00 ± 0.00 | 3 | 2.079 |" in met.stdout
    assert "| hapt | transformer | 91.00 ± 0.00 | 3 | dense |" in met.stdout
    missed = _bench("--runs", str(_runs(tmp_path / "b.csv", [0.95, 0.95, 0.95], [0.96, 0.96, 0.96])))
    assert "hapt: timoe 95.00 % vs target 96.5 % -> MISSED" in missed.stdout
    n = len(BASELINES)
    assert f"-1.00 pp ({n}/{n} baselines present) -> MISSED" in missed.stdout


def test_missing_table_is_a_clear_error(tmp_path):
    res = _bench("--runs", str(tmp_path / "nope.csv"))
    assert res.returncode == 2 and "not found" in res.stderr
    pl.DataFrame({"dataset": ["hapt"], "model": ["timoe"]}).write_csv(tmp_path / "bad.csv")
    res = _bench("--runs", str(tmp_path / "bad.csv"))
    assert res.returncode == 2 and "accuracy" in res.stderr and "seed" in res.stderr
