"""A train job killed with SIGKILL and rerun by Snakemake resumes from its last checkpoint and
ends with exactly the metrics of an uninterrupted run (CPU)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from repo_support import copy_repo, git_commit_all, sh

BIN = Path(sys.executable).parent
pytestmark = [pytest.mark.e2e, pytest.mark.slow]
TARGET = "results/models/basicmotions/transformer/seed0"
CKPT = "results/checkpoints/basicmotions/transformer/seed0/last.pt"
OVERRIDES = """
data:
  datasets: [basicmotions]
train:
  seeds: [0]
  epochs: 6
  patience: 6
  use_sweep: false
  max_train_windows: null
tracking:
  dvc_commit: false
"""


def _repo(base: Path) -> Path:
    repo = base
    repo.mkdir(parents=True)
    copy_repo(repo)
    (repo / "local.yaml").write_text(OVERRIDES)
    sh(["git", "init", "-q"], repo)
    git_commit_all(repo, "snapshot")
    return repo


def _cmd() -> list[str]:
    return [
        "snakemake",
        "--cores",
        "1",
        "--profile",
        "workflow/profiles/default",
        "--configfile",
        "workflow/smoke.yaml",
        "local.yaml",
        "--",
        TARGET,
    ]


def _env(repo: Path) -> dict[str, str]:
    return {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "PYTHONPATH": str(repo / "src")}


def _checkpoint_epoch(path: Path) -> int:
    try:
        return int(torch.load(path, map_location="cpu", weights_only=True)["epoch"])
    except Exception:  # being replaced right now, or not there yet
        return -1


def test_sigkill_then_rerun_matches_uninterrupted(tmp_path: Path):
    plain = _repo(tmp_path / "plain")
    subprocess.run(_cmd(), cwd=plain, env=_env(plain), check=True, capture_output=True, timeout=900)
    expected = json.loads((plain / TARGET / "metrics.json").read_text())

    killed = _repo(tmp_path / "killed")
    proc = subprocess.Popen(
        _cmd(),
        cwd=killed,
        env=_env(killed),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.time() + 600
    while _checkpoint_epoch(killed / CKPT) < 2:
        assert proc.poll() is None, "the job finished before it could be killed; raise train.epochs"
        assert time.time() < deadline
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)  # the whole session: snakemake and the train job
    proc.wait()
    assert not (killed / TARGET / "metrics.json").exists()

    # a killed Snakemake leaves its directory lock behind; --unlock is the documented way out
    subprocess.run([*_cmd()[:-2], "--unlock"], cwd=killed, env=_env(killed), check=True, capture_output=True)
    r = subprocess.run(_cmd(), cwd=killed, env=_env(killed), capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    got = json.loads((killed / TARGET / "metrics.json").read_text())
    assert got["resumed_from_epoch"] is not None and got["resumed_from_epoch"] >= 3
    for key in ("history", "best_epoch", "val_accuracy", "test_accuracy", "test_macro_f1"):
        assert got[key] == expected[key], key
    assert not (killed / CKPT).exists()  # removed once the job finished

    # the records: the killed run ended KILLED and points at the run that resumed it, which
    # carries the whole curve (the epochs before the kill included); no debris left for DVC
    from mlflow.tracking import MlflowClient

    def train_runs(repo: Path) -> tuple[MlflowClient, list]:
        client = MlflowClient(tracking_uri=f"sqlite:///{repo / 'mlflow.db'}")
        exps = [e.experiment_id for e in client.search_experiments()]
        return client, client.search_runs(exps, filter_string="tags.stage = 'train'")

    client, runs = train_runs(killed)
    by_status = {r.info.status: r for r in runs}
    assert sorted(by_status) == ["FINISHED", "KILLED"], [r.info.status for r in runs]
    resumed, dead = by_status["FINISHED"], by_status["KILLED"]
    assert dead.data.tags["resumed_by_run_id"] == resumed.info.run_id
    assert resumed.data.tags["resumed_from_run_ids"] == dead.info.run_id
    plain_client, plain_runs = train_runs(plain)
    for key in ("train_loss", "val_accuracy"):
        want = [(m.step, m.value) for m in plain_client.get_metric_history(plain_runs[0].info.run_id, key)]
        got_history = [(m.step, m.value) for m in client.get_metric_history(resumed.info.run_id, key)]
        assert sorted(got_history) == sorted(want), key
    assert not list((killed / "results/models/basicmotions/transformer").glob(".*"))
