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
