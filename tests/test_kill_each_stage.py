"""SIGKILL the pipeline once inside every stage, rerun it each time, and compare with a run that
was never interrupted: same report numbers, no temporaries left where DVC looks, no MLflow run
left RUNNING, and `dvc status` clean after the final run."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

from repo_support import BIN, copy_repo, git_commit_all, sh

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
OVERRIDES = """
data:
  datasets: [basicmotions]
train:
  seeds: [0]
"""
# Where each stage's atomic temporary appears while it works (the kill points, in DAG order).
IN_STAGE = {
    "prepare": ("data/processed", ".basicmotions.tmp-*"),
    "quantify": ("results/rus", ".basicmotions.tmp-*"),
    "sweep": ("results/sweeps/basicmotions", ".*.tmp-*"),
    "train": ("results/models/basicmotions", "*/.seed0.tmp-*"),
    "evaluate": ("results", ".benchmark.tmp-*"),
}
CMD = ["snakemake", "--cores", "1", "--profile", "workflow/profiles/default"]
CMD += ["--configfile", "workflow/smoke.yaml", "local.yaml"]


def _env(repo: Path) -> dict[str, str]:
    return {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "PYTHONPATH": str(repo / "src")}


def _repo(path: Path) -> Path:
    path.mkdir(parents=True)
    copy_repo(path)
    (path / "local.yaml").write_text(OVERRIDES)
    sh(["git", "init", "-q"], path)
    git_commit_all(path, "snapshot")
    return path


def _kill_inside(repo: Path, stage: str) -> bool:
    """Run the pipeline until `stage` is at work, then SIGKILL it all; False if it never got there."""
    folder, pattern = IN_STAGE[stage]
    proc = subprocess.Popen(
        CMD,
        cwd=repo,
        env=_env(repo),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.time() + 900
    while not list((repo / folder).glob(pattern)):
        if proc.poll() is not None or time.time() > deadline:
            return False
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # snakemake and its job, as a lost node or an OOM kill would
    proc.wait()
    sh([*CMD, "--unlock"], repo)  # a killed Snakemake leaves its lock; --unlock is the documented way out
    return True


def _running_runs(repo: Path) -> list[str]:
    with sqlite3.connect(repo / "mlflow.db") as db:
        return [r[0] for r in db.execute("SELECT name FROM runs WHERE status = 'RUNNING'")]


def test_kill_in_every_stage_then_rerun_matches_an_uninterrupted_run(tmp_path: Path):
    plain = _repo(tmp_path / "plain")
    sh(CMD, plain)
    killed = _repo(tmp_path / "killed")
    reached = [stage for stage in IN_STAGE if _kill_inside(killed, stage)]
    sh(CMD, killed)
    assert reached == list(IN_STAGE), f"killed only inside {reached}"
    for name in ("metrics.md", "metrics.csv"):
        assert (killed / "results/benchmark" / name).read_text() == (
            plain / "results/benchmark" / name
        ).read_text()
    debris = [p for top in ("data", "results") for p in (killed / top).rglob(".*.tmp-*")]
    assert debris == []
    assert _running_runs(killed) == []
    status = sh(["dvc", "status"], killed)
    assert "up to date" in status.stdout.lower(), status.stdout
