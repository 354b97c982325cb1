"""A job killed with SIGKILL cannot end its MLflow run; the next run of the same job does."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from mlflow.tracking import MlflowClient

from timoe.tracking import REPLACED_BY_TAG, tracked_run

HOLD_A_RUN = """
import sys, time
from timoe.tracking import tracked_run
with tracked_run(uri=sys.argv[1], experiment="e", stage="train", config={}, out_dir=None,
                 wildcards={"dataset": sys.argv[2], "seed": 0}):
    print("running", flush=True)
    time.sleep(600)
"""


def _killed_run(uri: str, dataset: str) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD_A_RUN, uri, dataset], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "running"
    proc.kill()
    proc.wait()


def test_the_next_run_of_the_same_job_ends_the_killed_one(tmp_path: Path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    _killed_run(uri, "hapt")
    _killed_run(uri, "basicmotions")  # another job: must stay as it is
    with tracked_run(
        uri=uri,
        experiment="e",
        stage="train",
        config={},
        out_dir=None,
        wildcards={"dataset": "hapt", "seed": 0},
    ) as run:
        new_id = run.info.run_id
    client = MlflowClient(tracking_uri=uri)
    runs = client.search_runs([client.get_experiment_by_name("e").experiment_id])
    status = {(r.data.tags["wildcard.dataset"], r.info.status) for r in runs}
    assert status == {("hapt", "KILLED"), ("hapt", "FINISHED"), ("basicmotions", "RUNNING")}
    killed = next(r for r in runs if r.info.status == "KILLED")
    assert killed.data.tags[REPLACED_BY_TAG] == new_id


def test_a_resumed_run_takes_over_the_killed_runs_curve_even_with_no_epoch_left(tmp_path: Path):
    """Killed after its last epoch (while writing outputs): the rerun resumes with nothing left to
    train, and must still adopt the killed run's epochs."""
    import mlflow

    from timoe.tracking import RESUMED_BY_TAG, RESUMED_FROM_TAG, ResumeChain

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    client = MlflowClient(tracking_uri=uri)
    exp = client.create_experiment("e")
    ckpt = tmp_path / "ckpt"
    killed = client.create_run(exp).info.run_id
    ResumeChain(ckpt, killed)
    for step in range(6):
        client.log_metric(killed, "train_loss", 1.0 / (step + 1), step=step)
    resumed = client.create_run(exp).info.run_id
    chain = ResumeChain(ckpt, resumed)
    chain.first_epoch(6)  # what run_train calls after train() when no epoch was logged
    chain.first_epoch(6)  # a second call changes nothing
    history = sorted((m.step, m.value) for m in client.get_metric_history(resumed, "train_loss"))
    assert history == [(s, 1.0 / (s + 1)) for s in range(6)]
    assert client.get_run(killed).data.tags[RESUMED_BY_TAG] == resumed
    assert client.get_run(killed).info.status == "KILLED"
    assert client.get_run(resumed).data.tags[RESUMED_FROM_TAG] == killed
    chain.finished()
    assert not (ckpt / "mlflow_runs.txt").exists()
