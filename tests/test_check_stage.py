"""The check stage: the multi-scale estimator check as a pipeline output the evaluate stage reads."""

from __future__ import annotations

from pathlib import Path
from typing import get_args

import polars as pl
import pytest
from typer.testing import CliRunner

from timoe.cli import app
from timoe.config import ConfigError, ProcessName, validate
from timoe.evaluation.claims import load_checks
from timoe.interactions.estimator_check import COLUMNS, estimator_check_rows
from timoe.interactions.synthetic import PROCESSES

ROOT = Path(__file__).resolve().parents[1]
TINY = """\
checks:
  estimator:
    processes: [synergy_lag1, unique_lag2]
    n_lags: 2
    n_windows: 6
    window: 16
    steps_factors: [1, 2]
    batch: {discrim_epochs: 1, align_epochs: 1, batch_size: 64, sinkhorn_tol: 0.001}
"""


def test_timoe_check_writes_the_table_the_claims_read(tmp_path: Path) -> None:
    params = tmp_path / "tiny.yaml"
    params.write_text(TINY + f"tracking:\n  uri: sqlite:///{tmp_path / 'mlflow.db'}\n")
    out = tmp_path / "checks"
    result = CliRunner().invoke(
        app, ["check", "--out", str(out), "-p", str(ROOT / "params.yaml"), "-p", str(params)]
    )
    assert result.exit_code == 0, result.output
    assert "estimator check: 32 rows" in result.output
    table = pl.read_csv(out / "estimator_check.csv")
    assert tuple(table.columns) == COLUMNS
    # 2 processes x 2 steps factors x 2 lags x 4 components
    assert table.height == 32 and set(table["steps_factor"]) == {1, 2}
    assert set(table["dataset"]) == {"synthetic-processes"}
    assert table["per_lag"].is_finite().all() and table["multiscale"].is_finite().all()
    assert (out / "run_id.txt").is_file()  # the stage's MLflow run travels with its output
    assert load_checks(out)["estimator_check"].height == 32


def test_the_check_is_deterministic() -> None:
    batch = {"discrim_epochs": 1, "align_epochs": 1, "batch_size": 32}
    tiny = {"processes": ["synergy_lag1"], "n_lags": 2, "n_windows": 4, "window": 12, "steps_factors": [1]}
    cfg = validate({"checks": {"estimator": tiny | {"batch": batch}}}).checks.estimator
    assert estimator_check_rows(cfg) == estimator_check_rows(cfg)


def test_check_settings_are_validated() -> None:
    assert set(get_args(ProcessName)) == set(PROCESSES)  # the schema's names are the processes'
    with pytest.raises(ConfigError, match="n_lags"):
        validate({"checks": {"estimator": {"n_lags": 16, "window": 16}}})
    with pytest.raises(ConfigError, match="steps_factors"):
        validate({"checks": {"estimator": {"steps_factors": [1, 1]}}})
    with pytest.raises(ConfigError, match="processes"):
        validate({"checks": {"estimator": {"processes": ["no_such_process"]}}})
