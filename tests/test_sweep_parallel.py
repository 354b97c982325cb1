"""Parallel sweeps: 4 worker processes on a journal file, on a real PostgreSQL server, and
workers that join a running study with `timoe sweep --worker` as another machine would.

Each test runs the CLI exactly as the Snakemake rule does, then audits the study against the
MLflow store: every trial recorded as a child run (both links, state, params, intermediate
values), none lost, no errors in the study, the runs or the workers' output.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
from optuna.storages.journal import JournalFileBackend

from pg_server import Unavailable, postgres_server
from sweep_support import ERROR_MARKERS, audit, prepare_basicmotions, sweep_params, write_params
from timoe.sweeps.storage import STORAGE_ENV

pytestmark = pytest.mark.slow
N_TRIALS = 12
TRACKING = "sqlite:///mlflow.db"  # relative: the commands run in the test's folder


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from timoe.config import load_params

    root = Path(__file__).resolve().parents[1]
    params = load_params(root / "params.yaml", root / "workflow" / "smoke.yaml")
    return prepare_basicmotions(params, tmp_path_factory.mktemp("prepared") / "basicmotions")


@pytest.fixture(scope="module")
def pg_url() -> Iterator[str]:
    pytest.importorskip("psycopg2", reason="psycopg2-binary (SQLAlchemy's PostgreSQL driver) not installed")
    server = postgres_server()
    try:
        url = server.__enter__()
    except Unavailable as err:
        pytest.skip(str(err))
    try:
        yield url
    finally:
        server.__exit__(None, None, None)


def _timoe(*args: str) -> list[str]:
    return [sys.executable, "-m", "timoe.cli", *args]


def _sweep_args(data_dir: Path) -> list[str]:
    return ["sweep", "--dataset", "basicmotions", "--model", "transformer", "--data", str(data_dir)]


def _env(storage: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != STORAGE_ENV}
    return env | ({STORAGE_ENV: storage} if storage else {})


def _check(cwd: Path, study: optuna.Study, outputs: list[str]) -> dict:
    best = json.loads((cwd / "out" / "best_params.json").read_text())
    report = audit(study, f"sqlite:///{cwd / 'mlflow.db'}", best["parent_run_id"], "val_accuracy", N_TRIALS)
    noisy = [m for m in ERROR_MARKERS for out in outputs if m in out]
    report["errors"] += len(noisy)
    print(f"\nsweep audit: {report} wall {best['wall_s']} s")
    assert report["problems"] == [] and not noisy, (report["problems"], noisy)
    assert report["trials"] == N_TRIALS, "the study must hold exactly n_trials trials"
    assert (report["recorded"], report["lost"], report["errors"]) == (N_TRIALS, 0, 0)
    assert set(report["states"]) <= {"COMPLETE", "PRUNED"}
    assert best["n_complete"] + best["n_pruned"] == N_TRIALS and best["params"]
    return report


def _write_params(cwd: Path, n_workers: int, prefix: str) -> None:
    # Each test its own prefix, hence its own study name: the PostgreSQL server is shared.
    params = sweep_params(
        _smoke(), tracking_uri=TRACKING, prefix=prefix, n_trials=N_TRIALS, n_workers=n_workers
    )
    write_params(params, cwd / "params.yaml")


def _run_driver(cwd: Path, data_dir: Path, storage: str | None) -> str:
    res = subprocess.run(
        _timoe(*_sweep_args(data_dir), "--out", "out", "--params", "params.yaml"),
        cwd=cwd,
        env=_env(storage),
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    return res.stdout + res.stderr


def _smoke():
    from timoe.config import load_params

    root = Path(__file__).resolve().parents[1]
    return load_params(root / "params.yaml", root / "workflow" / "smoke.yaml")


def test_four_workers_on_a_journal_file(data_dir: Path, tmp_path: Path):
    _write_params(tmp_path, n_workers=4, prefix="journal")
    output = _run_driver(tmp_path, data_dir, None)
    name = json.loads((tmp_path / "out" / "best_params.json").read_text())["study"]
    storage = optuna.storages.JournalStorage(JournalFileBackend(str(tmp_path / "out" / "study.journal")))
    report = _check(tmp_path, optuna.load_study(study_name=name, storage=storage), [output])
    assert report["workers"] >= 2, "trials should spread over the worker processes"


def test_four_workers_on_postgresql(pg_url: str, data_dir: Path, tmp_path: Path):
    _write_params(tmp_path, n_workers=4, prefix="pg")
    output = _run_driver(tmp_path, data_dir, pg_url)
    name = json.loads((tmp_path / "out" / "best_params.json").read_text())["study"]
    report = _check(tmp_path, optuna.load_study(study_name=name, storage=pg_url), [output])
    assert report["workers"] >= 2, "trials should spread over the worker processes"


def test_workers_join_a_running_study_from_elsewhere(pg_url: str, data_dir: Path, tmp_path: Path):
    """Two `timoe sweep --worker` processes, started with the driver, find the study by the name
    they derive from the same params and help the driver's own 2 workers finish it."""
    _write_params(tmp_path, n_workers=2, prefix="join")
    joiners = [
        subprocess.Popen(
            _timoe(*_sweep_args(data_dir), "--worker", "--params", "params.yaml", "--join-timeout", "300"),
            cwd=tmp_path,
            env=_env(pg_url),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for _ in range(2)
    ]
    time.sleep(1.0)  # let the joiners start first: they must wait for the study, not fail
    output = _run_driver(tmp_path, data_dir, pg_url)
    joined = [p.communicate(timeout=600)[0] for p in joiners]
    assert [p.returncode for p in joiners] == [0, 0], joined
    name = json.loads((tmp_path / "out" / "best_params.json").read_text())["study"]
    _check(tmp_path, optuna.load_study(study_name=name, storage=pg_url), [output, *joined])
    assert all("ran " in out for out in joined)


def _children(pid: int) -> list[int]:
    # Linux: the kernel lists a process's children here; enough for a test, no psutil needed.
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(c) for c in path.read_text().split()] if path.exists() else []


def test_a_killed_worker_loses_no_trial(data_dir: Path, tmp_path: Path):
    """SIGKILL one of 4 workers mid-sweep: its trial turns FAIL (study and run), the others
    replace it, and the study still ends with n_trials finished trials, all recorded."""
    if not Path(f"/proc/{os.getpid()}/task/{os.getpid()}/children").exists():
        pytest.skip("needs Linux's /proc/<pid>/task/<pid>/children to find the worker processes")
    _write_params(tmp_path, n_workers=4, prefix="kill")
    driver = subprocess.Popen(
        _timoe(*_sweep_args(data_dir), "--out", "out", "--params", "params.yaml"),
        cwd=tmp_path,
        env=_env(None),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines = []
    assert driver.stdout is not None
    for line in driver.stdout:  # wait until trials are under way, then kill a worker
        lines.append(line)
        if "trial 1 " in line:
            victim = _children(driver.pid)[0]
            os.kill(victim, 9)
            break
    output = "".join(lines) + driver.communicate(timeout=900)[0]
    assert driver.returncode == 0, output
    name = json.loads((tmp_path / "out" / "best_params.json").read_text())["study"]
    storage = optuna.storages.JournalStorage(JournalFileBackend(str(tmp_path / "out" / "study.journal")))
    study = optuna.load_study(study_name=name, storage=storage)
    best = json.loads((tmp_path / "out" / "best_params.json").read_text())
    report = audit(
        study, f"sqlite:///{tmp_path / 'mlflow.db'}", best["parent_run_id"], "val_accuracy", N_TRIALS
    )
    print(f"\nkilled-worker audit: {report}")
    assert report["problems"] == [] and report["states"].get("FAIL", 0) <= 1
    assert (report["recorded"], report["lost"]) == (N_TRIALS, 0)
    assert best["failed_workers"] == 1 and "exited with code -9" in output


OPEN_STORAGE = """
import sys
from timoe.sweeps.storage import StorageSpec
StorageSpec(url=sys.argv[1]).open(heartbeat_s=5)
print("opened")
"""


def test_processes_opening_a_fresh_postgresql_database_at_once_all_succeed(pg_url: str):
    """Optuna creates its tables on first open; unserialised, concurrent openers can fail on its
    alembic_version key (seen with a driver and Slurm array workers)."""
    import sqlalchemy

    engine = sqlalchemy.create_engine(pg_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(sqlalchemy.text("CREATE DATABASE fresh_schema_race"))
    engine.dispose()
    url = pg_url.rsplit("/", 1)[0] + "/fresh_schema_race"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", OPEN_STORAGE, url],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for _ in range(4)
    ]
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0, 0], outputs
