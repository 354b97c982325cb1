"""benchmarks/bench_stability.py: claims on two disjoint seed sets of one finished study."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl

from timoe.evaluation.claims import HELD, INCONCLUSIVE, REFUTED

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_stability.py"
_spec = importlib.util.spec_from_file_location("bench_stability", SCRIPT)
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)


def _study(folder: Path, seeds: int = 6) -> Path:
    """runs.csv and subject_scores.csv of a fake finished study on hapt: timoe 5 points above moe,
    fusemoe identical to timoe on every window count (no gain)."""
    rng = np.random.default_rng(0)
    rows, runs = [], []
    for seed in range(seeds):
        shift = rng.normal(0, 0.003)
        base = [int(rng.binomial(400, 0.85 + shift + 0.01 * (j % 3))) for j in range(8)]
        for model, gain in (("timoe", 20), ("fusemoe", 20), ("moe", 0)):
            correct = [c + gain for c in base]
            rows += [
                {"dataset": "hapt", "model": model, "seed": seed, "subject": j, "n": 400, "correct": c}
                for j, c in enumerate(correct)
            ]
            runs.append({"dataset": "hapt", "model": model, "seed": seed, "accuracy": sum(correct) / 3200})
    folder.mkdir(parents=True)
    pl.DataFrame(runs).write_csv(folder / "runs.csv")
    pl.DataFrame(rows).write_csv(folder / "subject_scores.csv")
    return folder


def test_split_seeds_is_disjoint_and_covers():
    assert bench.split_seeds([2, 0, 1, 4, 3, 0]) == ([0, 1, 2], [3, 4])
    assert bench.split_seeds([5]) == ([5], [])


def test_compare_verdicts_flags_flips_and_moves():
    one = pl.DataFrame(
        {"claim": list("abcd"), "dataset": ["hapt"] * 4, "verdict": [HELD, HELD, INCONCLUSIVE, REFUTED]}
    )
    two = pl.DataFrame(
        {"claim": list("abcd"), "dataset": ["hapt"] * 4, "verdict": [REFUTED, INCONCLUSIVE, HELD, REFUTED]}
    )
    table = bench.compare_verdicts(one, two)
    assert table["change"].to_list() == ["FLIP", "to inconclusive", "from inconclusive", "same"]
    assert bench.summary(table) == {"FLIP": 1, "to inconclusive": 1, "from inconclusive": 1, "same": 1}


def test_halves_of_a_study_agree(tmp_path, capsys):
    folder = _study(tmp_path / "benchmark")
    rc = bench.main(["--benchmark", str(folder), "--checks", str(tmp_path / "none"), "--resamples", "2000"])
    out = capsys.readouterr().out
    assert rc == 0 and "set 1: seeds [0, 1, 2]" in out and "set 2: seeds [3, 4, 5]" in out
    assert " 0 HELD<->REFUTED flips" in out
    # beats_moe is HELD and beats_fusemoe REFUTED (no gain at all) in both halves
    lines = [ln for ln in out.splitlines() if "beats_moe" in ln or "beats_fusemoe" in ln]
    assert any("HELD" in ln and "same" in ln for ln in lines if "beats_moe" in ln)
    assert any("REFUTED" in ln and "same" in ln for ln in lines if "beats_fusemoe" in ln)


def test_a_missing_study_is_a_user_error(tmp_path):
    res = subprocess.run(
        [sys.executable, str(SCRIPT), "--benchmark", str(tmp_path / "nothing")],
        capture_output=True,
        text=True,
    )
    assert res.returncode == 2 and "runs.csv is missing" in res.stderr
