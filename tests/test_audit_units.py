"""The audit's pieces without a tracking store: filters, comparisons, configs, commands, git replay."""

from __future__ import annotations

import json
import math
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest

from timoe.audit import AuditError
from timoe.audit.lineage import run_id_from_path
from timoe.audit.rerun import (
    DEFAULT_IGNORE,
    compare_metrics,
    rebuild_config,
    stage_command,
    unflatten_params,
)
from timoe.audit.restore import Restored, add_worktree, remove_worktree, replay_dirty_tree
from timoe.audit.store import MetricFilter, RunFilter, parse_metric_filter, parse_when
from timoe.audit.views import fmt_diff, fmt_value, table
from timoe.tracking import git_state


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("test_accuracy>=0.9", MetricFilter("test_accuracy", ">=", 0.9)),
        (" val_macro_f1 < 0.5 ", MetricFilter("val_macro_f1", "<", 0.5)),
        ("n_windows.train==28", MetricFilter("n_windows.train", "=", 28.0)),
        ("loss!=1e-3", MetricFilter("loss", "!=", 0.001)),
    ],
)
def test_parse_metric_filter(text, expected):
    assert parse_metric_filter(text) == expected


@pytest.mark.parametrize("text", ["test_accuracy", ">=0.9", "acc>=high", "acc=>0.9"])
def test_parse_metric_filter_rejects(text):
    with pytest.raises(AuditError):
        parse_metric_filter(text)


def test_run_filter_builds_an_mlflow_query():
    q = RunFilter(dataset="hapt", stage="train", status="finished", metrics=[parse_metric_filter("n.x>0.5")])
    assert q.to_mlflow() == (
        "tags.`wildcard.dataset` = 'hapt' and tags.`stage` = 'train' and attributes.status = 'FINISHED'"
        " and metrics.`n.x` > 0.5"
    )
    assert RunFilter().to_mlflow() == ""
    with pytest.raises(AuditError, match="unknown status"):
        RunFilter(status="done").to_mlflow()
    with pytest.raises(AuditError, match="quotes"):
        RunFilter(model="x' or 1=1").to_mlflow()


def test_parse_when_treats_a_bare_until_date_as_the_whole_day():
    day = parse_when("2024-05-01")
    assert parse_when("2024-05-01", end_of_day=True) - day == 86_400_000
    assert parse_when("2024-05-01T12:00", end_of_day=True) - day == 12 * 3_600_000
    with pytest.raises(AuditError):
        parse_when("yesterday")


def test_compare_metrics_statuses():
    recorded = {"acc": 0.5, "f1": 0.25, "gone": 1.0, "seconds": 3.0, "nan": math.nan}
    reproduced = {"acc": 0.5, "f1": 0.2500000001, "extra": 2.0, "seconds": 4.0, "nan": math.nan}
    rows = {r.metric: r.status for r in compare_metrics(recorded, reproduced, DEFAULT_IGNORE)}
    assert rows == {
        "acc": "match",
        "f1": "differs",
        "gone": "missing",
        "extra": "new",
        "seconds": "ignored",
        "nan": "match",
    }


def test_formatting_is_exact():
    assert fmt_value(0.1 + 0.2) == "0.30000000000000004"
    assert fmt_value(3.0) == "3" and fmt_value(None) == ""
    assert fmt_diff(0.5, 0.5) == "0" and fmt_diff(0.5, 0.75) == "+0.25" and fmt_diff(None, 1.0) == ""
    text = table(["k", "value"], [["a", 1.5], ["long", "x" * 100]], max_width=10)
    lines = text.splitlines()
    assert lines[0] == "k     value" and lines[3].endswith("xxxxxxxxx…")


def test_unflatten_params():
    params = {
        "train.lr": "0.001",
        "train.seeds": "[0, 1]",
        "train.max_train_windows": "None",
        "data.hapt.subjects": "null",
        "train.use_sweep": "True",
    }
    assert unflatten_params(params) == {
        "train": {"lr": 0.001, "seeds": [0, 1], "max_train_windows": None, "use_sweep": True},
        "data": {"hapt": {"subjects": None}},
    }


class _FakeStore:
    def __init__(self, artifacts: dict[str, str]) -> None:
        self.artifacts = artifacts

    def artifact_text(self, run_id: str, path: str) -> str | None:
        return self.artifacts.get(path)


def _run(tags: dict[str, str], params: dict[str, str] | None = None) -> SimpleNamespace:
    return SimpleNamespace(
        info=SimpleNamespace(run_id="r" * 32), data=SimpleNamespace(tags=tags, params=params or {})
    )


def test_rebuild_config_prefers_the_full_params_artifact(tmp_path):
    store = _FakeStore({"resolved_params.yaml": "train:\n  lr: 0.5\n", "resolved_config.json": "{}"})
    cfg, where = rebuild_config(store, _run({"stage": "train"}), tmp_path)
    assert cfg == {"train": {"lr": 0.5}} and "resolved_params.yaml" in where


def test_rebuild_config_replaces_logged_sections_whole(tmp_path):
    (tmp_path / "params.yaml").write_text(
        "sweep:\n  space: {transformer: {}, timoe: {}}\nrus:\n  n_bins: 8\n"
    )
    logged = {"sweep": {"space": {"transformer": {}}}, "sweep_overrides": {"train.lr": 0.1}}
    store = _FakeStore({"resolved_config.json": json.dumps(logged)})
    cfg, where = rebuild_config(store, _run({"stage": "quantify", "seed": "7"}), tmp_path)
    assert cfg["sweep"] == {"space": {"transformer": {}}}  # not merged: the run had no 'timoe' space
    assert cfg["rus"] == {"n_bins": 8} and cfg["data"] == {"seed": 7} and "sweep_overrides" not in cfg
    assert "sections sweep" in where


def test_rebuild_config_from_params_alone(tmp_path):
    cfg, where = rebuild_config(_FakeStore({}), _run({"stage": "prepare"}, {"data.seed": "3"}), tmp_path)
    assert cfg == {"data": {"seed": 3}} and "the run's params" in where


def test_stage_commands():
    tags = {"wildcard.dataset": "hapt", "wildcard.model": "timoe", "wildcard.seed": "2"}
    inputs = {n: Restored(n, Path(f"in/{n}"), "") for n in ("data", "rus", "sweep")}
    cmd = stage_command("train", tags, inputs, Path("o"), Path("p.yaml"), [])
    assert cmd == [
        "train",
        "--dataset",
        "hapt",
        "--model",
        "timoe",
        "--seed",
        "2",
        "--data",
        "in/data",
        "--rus",
        "in/rus",
        "--sweep",
        "in/sweep",
        "--out",
        "o",
        "--params",
        "p.yaml",
    ]
    names = ["model0", "model1", "model10", "rus0"]  # in the order inputs_of sorts them
    ins = {n: Restored(n, Path(n), "") for n in names}
    assert stage_command("evaluate", {}, ins, Path("o"), Path("p"), [])[:6] == [
        "evaluate",
        "model0",
        "model1",
        "model10",
        "--rus",
        "rus0",
    ]
    assert stage_command("prepare", tags, {}, Path("o"), Path("p"), [])[:3] == [
        "prepare",
        "--dataset",
        "hapt",
    ]
    with pytest.raises(AuditError):
        stage_command("sweep-trial", tags, {}, Path("o"), Path("p"), [])


def test_run_id_from_path(tmp_path):
    out = tmp_path / "results" / "m"
    (out / "sub").mkdir(parents=True)
    (out / "run_id.txt").write_text("abc\n")
    (out / "sub" / "f.json").write_text("{}")
    assert run_id_from_path(out / "sub" / "f.json") == "abc"
    assert run_id_from_path(out / "run_id.txt") == "abc"
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / ".git").mkdir()  # the search stops at a repository's root
    with pytest.raises(AuditError):
        run_id_from_path(tmp_path / "other")


def _git(*args: str, cwd: Path) -> None:
    subprocess.run(
        ["git", "-c", "user.email=a@b", "-c", "user.name=a", *args], cwd=cwd, check=True, capture_output=True
    )


def test_dirty_tree_is_replayed_only_when_its_hash_matches(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "code.py").write_text("x = 1\n")
    _git("init", "-q", cwd=repo)
    _git("add", "-A", cwd=repo)
    _git("commit", "-qm", "c", cwd=repo)
    (repo / "code.py").write_text("x = 2\n")
    (repo / "new.py").write_text("y = 3\n")
    recorded = git_state(repo)
    assert recorded["git_dirty"] == "true"

    wt = tmp_path / "wt"
    add_worktree(repo, recorded["git_commit"], wt)
    try:
        assert not replay_dirty_tree(repo, wt, recorded["git_commit"], "0" * 64)
        assert (wt / "code.py").read_text() == "x = 1\n"
        assert replay_dirty_tree(repo, wt, recorded["git_commit"], recorded["git_diff_sha256"])
        assert (wt / "code.py").read_text() == "x = 2\n" and (wt / "new.py").read_text() == "y = 3\n"
        assert git_state(wt)["git_diff_sha256"] == recorded["git_diff_sha256"]
    finally:
        remove_worktree(repo, wt)
    assert not wt.exists()
    with pytest.raises(AuditError, match="not in the repository"):
        add_worktree(repo, "f" * 40, wt)


def test_runtime_files_never_make_a_clean_tree_dirty(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "code.py").write_text("x = 1\n")
    _git("init", "-q", cwd=repo)
    _git("add", "-A", cwd=repo)
    _git("commit", "-qm", "c", cwd=repo)
    # what appears while jobs write (SQLite journals, lock files) or after a successful run
    for name in ("mlflow.db-journal", "optuna.db-wal", "mlflow.db.lock", "dvc.lock", "params.used.yaml"):
        (repo / name).write_text("runtime\n")
    (repo / "sub").mkdir()
    (repo / "sub" / "study.journal.claim").write_text("")
    assert git_state(repo)["git_dirty"] == "false"
    (repo / "notes.py").write_text("y = 2\n")  # but a new source file is a change
    assert git_state(repo)["git_dirty"] == "true"
