"""benchmarks/bench_speed_accuracy.py: the shared params both trees run, and the verdict."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_speed_accuracy.py"
_spec = importlib.util.spec_from_file_location("bench_speed_accuracy", SCRIPT)
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)


def test_the_bound_is_the_one_sided_t_bound_and_decides_the_verdict():
    from scipy import stats

    diffs = [0.2, -0.1, 0.4, 0.0, 0.3]
    mean, lower, verdict = bench.noninferiority(diffs, 0.5)
    sd = math.sqrt(sum((d - 0.16) ** 2 for d in diffs) / 4)
    assert mean == pytest.approx(0.16)
    assert lower == pytest.approx(0.16 - stats.t.ppf(0.95, 4) * sd / math.sqrt(5))
    assert verdict == "non-inferior"
    # a mean near zero with a wide spread: the bound falls below -margin, which is not "worse"
    assert bench.noninferiority([1.5, -2.0, 0.8, -1.9, 1.4], 0.5)[2] == "not shown"
    assert bench.noninferiority([0.3], 0.5)[2] == "too few seeds"


def test_both_trees_run_the_current_settings_cut_to_the_keys_the_base_knows():
    from timoe.config import Params, load_params

    known = Params().model_dump()
    del known["train"]["select"], known["model"]["per_dataset"], known["train"]["per_dataset"]
    raw = bench.shared_params("hapt", ["transformer", "timoe"], [0, 1], known)
    current = load_params(bench.REPO / "params.yaml").for_dataset("hapt")
    # HAPT's own settings arrive as plain values; keys the base lacks are left out
    assert raw["model"]["patch_size"] == current.model.patch_size
    assert raw["train"]["epochs"] == current.train.epochs
    assert raw["train"]["max_train_windows"] == current.train.max_train_windows
    assert "select" not in raw["train"] and "per_dataset" not in raw["model"]
    assert raw["train"]["use_sweep"] is False and raw["train"]["seeds"] == [0, 1]
    assert raw["model"]["names"] == ["transformer", "timoe"] and raw["data"]["datasets"] == ["hapt"]
    # what is left validates in the current schema and there means the base's behaviour
    again = Params.model_validate(raw).for_dataset("hapt")
    assert again.train.select == "best" and again.model.patch_size == current.model.patch_size
