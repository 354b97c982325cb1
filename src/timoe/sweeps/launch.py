"""Local worker processes: `timoe sweep --worker`, the same command other machines run.

Separate processes, not threads: training holds the GIL in Python code between kernels, and a
crashed worker must not take the driver with it. Each worker re-imports torch and MLflow
(seconds), which is small next to a trial. The storage URL travels in the environment, not on
the command line, where `ps` would show its password.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import optuna
from optuna.trial import TrialState

from timoe.sweeps.runs import fail_dead_trial, fail_stale
from timoe.sweeps.storage import STORAGE_ENV, StorageSpec, TrialClaim
from timoe.sweeps.worker import WORKER_ATTR


def worker_command(
    *,
    index: int,
    dataset: str,
    model: str,
    data_dir: Path,
    params_file: Path,
    study_name: str,
    rus_dir: Path | None,
    threads: int,
) -> list[str]:
    cmd = [
        sys.executable, "-m", "timoe.cli", "sweep", "--worker",
        "--worker-index", str(index),
        "--dataset", dataset,
        "--model", model,
        "--data", str(data_dir),
        "--params", str(params_file),
        "--study-name", study_name,
        "--threads", str(threads),
    ]  # fmt: skip
    if rus_dir is not None:
        cmd += ["--rus", str(rus_dir)]
    return cmd


def fail_orphans(study: optuna.Study, worker: str, tracking_uri: str, claim: TrialClaim) -> list[int]:
    """Mark FAIL the trials a dead worker left RUNNING (the journal has no heartbeat to do it).

    Under a claim lock that all workers share, no live worker is between creating a trial and
    tagging it with its name and run, so a running trial without a name is one whose worker
    died there; it is linked to a run (found or created) before it is failed.
    """
    failed = []
    unnamed = worker if claim.shared else None
    with claim():
        for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if t.user_attrs.get(WORKER_ATTR, unnamed) == worker and fail_dead_trial(tracking_uri, study, t):
                failed.append(t.number)
    return failed


def run_local_workers(
    commands: list[list[str]],
    spec: StorageSpec,
    study: optuna.Study,
    tracking_uri: str,
    poll_s: float = 0.5,
) -> dict[int, int]:
    """Start the workers and wait for all; return {worker index: exit code} of those that failed.

    A failed worker's running trial is marked FAIL at once, so the others replace it: the
    study can still reach n_trials, and the caller decides whether the failure is fatal.
    """
    env = {**os.environ, STORAGE_ENV: spec.as_arg()}
    host = socket.gethostname()
    claim = TrialClaim(spec, study.study_name)
    procs = [subprocess.Popen(cmd, env=env) for cmd in commands]
    codes: dict[int, int] = {}
    try:
        while len(codes) < len(procs):
            for i, p in enumerate(procs):
                if i not in codes and p.poll() is not None:
                    codes[i] = p.returncode
                    if p.returncode != 0:
                        fail_orphans(study, f"{host}:{p.pid}", tracking_uri, claim)
            time.sleep(poll_s)
    except BaseException:
        # The driver was interrupted: stop the workers rather than leave them running unattended.
        for p in procs:
            if p.poll() is None:
                p.terminate()
        for p in procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
            fail_orphans(study, f"{host}:{p.pid}", tracking_uri, claim)
        raise
    finally:
        claim.close()
    return {i: c for i, c in codes.items() if c != 0}


def wait_for_running(
    study: optuna.Study, tracking_uri: str, poll_s: float = 2.0, note_every_s: float = 60.0
) -> None:
    """Wait for trials that workers on other machines still run, so the summary sees them.

    With RDB storage, trials of a dead worker turn FAIL after the heartbeat grace period.
    """
    last_note = time.monotonic()
    while True:
        fail_stale(study, tracking_uri)
        running = [t.number for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))]
        if not running:
            return
        if time.monotonic() - last_note >= note_every_s:
            print(f"sweep: waiting for running trials {running}", file=sys.stderr, flush=True)
            last_note = time.monotonic()
        time.sleep(poll_s)
