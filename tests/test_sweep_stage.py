"""The sweep stage in one process: trial ↔ run links, pruning, best params, naming, CLI errors."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest
from optuna.storages.journal import JournalFileBackend
from typer.testing import CliRunner

from sweep_support import SPACE, audit, prepare_basicmotions, sweep_params
from timoe.cli import app
from timoe.overrides import apply_overrides
from timoe.stages.common import read_best_params
from timoe.stages.sweep import run_sweep, study_key
from timoe.sweeps.storage import STORAGE_ENV, StorageSpec, resolve_storage


class OddTrialsPruner(optuna.pruners.BasePruner):
    """Prunes odd-numbered trials after their second epoch: pruning made deterministic."""

    def prune(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
        return trial.number % 2 == 1 and (trial.last_step or 0) >= 1


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from timoe.config import load_params

    root = Path(__file__).resolve().parents[1]
    params = load_params(root / "params.yaml", root / "workflow" / "smoke.yaml")
    return prepare_basicmotions(params, tmp_path_factory.mktemp("prepared") / "basicmotions")


def _load(out: Path, name: str) -> optuna.Study:
    storage = optuna.storages.JournalStorage(JournalFileBackend(str(out / "study.journal")))
    return optuna.load_study(study_name=name, storage=storage)


def test_trials_and_runs_link_both_ways_and_pruned_is_pruned(
    smoke_params, data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.delenv(STORAGE_ENV, raising=False)
    monkeypatch.setattr("timoe.sweeps.worker.make_pruner", lambda sweep: OddTrialsPruner())
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    params = sweep_params(smoke_params, tracking_uri=uri, n_trials=4, n_workers=1)
    out = tmp_path / "sweep"
    best = run_sweep(params, dataset="basicmotions", model="transformer", data_dir=data_dir, out_dir=out)

    study = _load(out, best["study"])
    report = audit(study, uri, best["parent_run_id"], params.sweep.metric, n_trials=4)
    assert report["problems"] == []
    assert report == report | {"trials": 4, "recorded": 4, "lost": 0, "errors": 0}
    states = {t.number: t.state.name for t in study.trials}
    assert states == {0: "COMPLETE", 1: "PRUNED", 2: "COMPLETE", 3: "PRUNED"}
    assert all(sorted(t.intermediate_values) == [0, 1] for t in study.trials if t.state.name == "PRUNED")

    # best_params.json keeps the format the train stage reads, and its params apply cleanly.
    saved = json.loads((out / "best_params.json").read_text())
    assert {"params", "value", "trial", "study", "parent_run_id"} <= set(saved)
    assert saved["trial"] in (0, 2) and saved["n_pruned"] == 2 and saved["n_failed"] == 0
    assert read_best_params(out) == study.best_params
    assert apply_overrides(params, read_best_params(out)).train.lr == study.best_params["train.lr"]
    assert saved["trial_run_id"] == study.best_trial.user_attrs["mlflow_run_id"]
    assert (out / "sweep_history.png").exists() and (out / "sweep_parallel.png").exists()
    assert "user_attrs_mlflow_run_id" in (out / "trials.csv").read_text().splitlines()[0]
    assert not list(out.glob("*.claim")) and not list(out.glob("worker_params*"))


def test_single_worker_sweep_is_reproducible(smoke_params, data_dir: Path, tmp_path: Path, monkeypatch):
    monkeypatch.delenv(STORAGE_ENV, raising=False)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    params = sweep_params(smoke_params, tracking_uri=uri, n_trials=3, n_workers=1, epochs=1)
    runs = []
    for name in ("a", "b"):
        best = run_sweep(
            params, dataset="basicmotions", model="transformer", data_dir=data_dir, out_dir=tmp_path / name
        )
        runs.append([t.params for t in _load(tmp_path / name, best["study"]).trials])
    assert runs[0] == runs[1] and len({json.dumps(p, sort_keys=True) for p in runs[0]}) == 3


# Runs the worker command, unless its first launch should die: then SIGKILL, as the OOM killer does.
_DIE_ONCE = """
import os, sys
marker, always, cmd = sys.argv[1], sys.argv[2] == "always", sys.argv[3:]
if always or not os.path.exists(marker):
    open(marker, "w").close()
    os.kill(os.getpid(), 9)
os.execv(cmd[0], cmd)
"""


def _dying_workers(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, always: bool) -> None:
    import sys

    import timoe.stages.sweep as sweep_stage

    real = sweep_stage.worker_command

    def wrapped(**kw):
        marker = tmp_path / f"died-{kw['index']}"
        return [sys.executable, "-c", _DIE_ONCE, str(marker), "always" if always else "once", *real(**kw)]

    monkeypatch.setattr(sweep_stage, "worker_command", wrapped)


def test_workers_that_die_after_the_others_left_are_replaced(
    smoke_params, data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
):
    """Every worker's first launch is killed, so no live worker is left to replace their trials:
    the driver starts replacements, and the study still ends with n_trials finished (seen in CI
    when a killed worker was the last one running)."""
    monkeypatch.delenv(STORAGE_ENV, raising=False)
    _dying_workers(monkeypatch, tmp_path, always=False)
    params = sweep_params(
        smoke_params, tracking_uri=f"sqlite:///{tmp_path / 'm.db'}", n_trials=2, n_workers=2, epochs=1
    )
    best = run_sweep(
        params, dataset="basicmotions", model="transformer", data_dir=data_dir, out_dir=tmp_path / "o"
    )
    assert best["n_complete"] + best["n_pruned"] == 2 and best["failed_workers"] == 2
    assert "starting 2 replacement(s)" in capsys.readouterr().err


def test_a_worker_that_always_dies_ends_the_sweep_after_bounded_retries(
    smoke_params, data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.delenv(STORAGE_ENV, raising=False)
    _dying_workers(monkeypatch, tmp_path, always=True)
    params = sweep_params(
        smoke_params, tracking_uri=f"sqlite:///{tmp_path / 'm.db'}", n_trials=2, n_workers=2, epochs=1
    )
    with pytest.raises(RuntimeError, match="sweep incomplete: worker 0 exited with code -9"):
        run_sweep(
            params, dataset="basicmotions", model="transformer", data_dir=data_dir, out_dir=tmp_path / "o"
        )
    assert not (tmp_path / "o").exists()


def test_study_name_follows_the_objective_not_the_scheduling(smoke_params, data_dir: Path, tmp_path: Path):
    uri = "sqlite:///unused.db"
    base = sweep_params(smoke_params, tracking_uri=uri)
    key = study_key(base, "transformer", data_dir, None)
    same = [
        sweep_params(smoke_params, tracking_uri=uri, n_trials=50),
        sweep_params(smoke_params, tracking_uri=uri, n_workers=4),
        sweep_params(smoke_params, tracking_uri=uri, storage="postgresql://u:pw@db/optuna"),
    ]
    assert all(study_key(p, "transformer", data_dir, None) == key for p in same)
    dropout = {"type": "float", "low": 0.0, "high": 0.1}
    narrower = {"transformer": {**SPACE["transformer"], "model.dropout": dropout}}
    different = [
        sweep_params(smoke_params, tracking_uri=uri, epochs=4),
        sweep_params(smoke_params, tracking_uri=uri, seed=1),
        sweep_params(smoke_params, tracking_uri=uri, space=narrower),
    ]
    assert all(study_key(p, "transformer", data_dir, None) != key for p in different)
    changed_data = tmp_path / "data"
    changed_data.mkdir()
    (changed_data / "meta.json").write_text("{}")
    assert study_key(base, "transformer", changed_data, None) != key


def test_storage_resolution_and_password_masking(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv(STORAGE_ENV, raising=False)
    url = "postgresql+psycopg2://sweeper:s3cret@db.example:5432/optuna"
    assert "s3cret" not in StorageSpec.parse(url).describe()
    assert StorageSpec.parse(url).backend == "postgresql"
    assert StorageSpec.parse("shared/study.journal").journal == Path("shared/study.journal")
    default = tmp_path / "study.journal"
    assert resolve_storage(None, None, default).journal == default
    assert resolve_storage(None, url, default).url == url
    monkeypatch.setenv(STORAGE_ENV, "env.journal")
    assert resolve_storage(None, url, default).journal == Path("env.journal")
    assert resolve_storage("cli.journal", url, default).journal == Path("cli.journal")


def _cli(data_dir: Path, *extra: str) -> tuple[int, str]:
    root = Path(__file__).resolve().parents[1]
    args = ["sweep", "--dataset", "basicmotions", "--model", "transformer", "--data", str(data_dir)]
    args += ["--params", str(root / "params.yaml"), "--params", str(root / "workflow" / "smoke.yaml")]
    result = CliRunner().invoke(app, [*args, *extra])
    return result.exit_code, result.output


def test_worker_needs_a_shared_storage(data_dir: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv(STORAGE_ENV, raising=False)
    code, output = _cli(data_dir, "--worker")
    assert code == 2 and STORAGE_ENV in output


def test_worker_for_a_missing_study_fails_cleanly(data_dir: Path, tmp_path: Path, monkeypatch):
    monkeypatch.delenv(STORAGE_ENV, raising=False)
    code, output = _cli(data_dir, "--worker", "--storage", str(tmp_path / "j"), "--join-timeout", "0")
    assert code == 2 and "not found" in output


def test_worker_and_out_are_exclusive(data_dir: Path, tmp_path: Path):
    code, output = _cli(data_dir, "--worker", "--out", str(tmp_path / "o"))
    assert code == 2 and "--worker writes no output" in output
