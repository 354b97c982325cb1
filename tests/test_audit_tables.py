"""Audit tables round metrics for people (4 significant digits); --json keeps every digit."""

from __future__ import annotations

from types import SimpleNamespace

from timoe.audit.rerun import MetricRow, metric_table
from timoe.audit.views import list_table, run_record, table

ACC = 0.9517045454545454


def _run() -> SimpleNamespace:
    return SimpleNamespace(
        info=SimpleNamespace(
            run_id="a" * 32, start_time=0, end_time=None, status="FINISHED", run_name="r", experiment_id="1"
        ),
        data=SimpleNamespace(
            metrics={"test_accuracy": ACC, "epochs": 3.0},
            params={"lr": "0.0012345678"},
            tags={"stage": "train", "wildcard.dataset": "hapt", "wildcard.model": "timoe"},
        ),
    )


def test_audit_list_rounds_metrics_to_four_significant_digits() -> None:
    text = list_table([_run()], ["test_accuracy", "epochs"])
    assert "0.9517 " in text + " " and str(ACC) not in text and " 3" in text


def test_tables_keep_strings_integers_and_non_finite_values() -> None:
    text = table(["a", "b", "c", "d"], [["0.0012345678", 12.0, float("nan"), 1.23456e-7]])
    assert "0.0012345678" in text and "12" in text and "nan" in text and "1.235e-07" in text


def test_json_records_keep_full_precision() -> None:
    assert run_record(_run())["metrics"]["test_accuracy"] == ACC


def test_reproduce_table_stays_exact() -> None:
    text = metric_table([MetricRow("test_accuracy", ACC, ACC + 1e-12, "differs")])
    assert str(ACC) in text and str(ACC + 1e-12) in text
