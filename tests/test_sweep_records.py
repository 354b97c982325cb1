"""A trial and its MLflow child run never disagree, even when a worker dies between the two.

Each test builds the state a worker killed at one point leaves behind (deterministically, no
timing), then runs the code that recovers from it, and audits the records both ways.
"""

from __future__ import annotations

import time
from pathlib import Path

import optuna
import pytest
from mlflow.tracking import MlflowClient
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

from timoe.sweeps.launch import fail_orphans
from timoe.sweeps.runs import (
    PARENT_RUN_ATTR,
    REPAIRED_TAG,
    RUN_ID_ATTR,
    TRIAL_TAG,
    fail_stale,
    repair_unlinked_trials,
    trial_run_id,
)
from timoe.sweeps.storage import StorageSpec, TrialClaim
from timoe.sweeps.worker import WORKER_ATTR

DEAD = "host:4242"


@pytest.fixture()
def uri(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


def _study(storage: object, client: MlflowClient) -> optuna.Study:
    study = optuna.create_study(study_name="records", storage=storage, direction="maximize")
    exp = client.create_experiment("sweep")
    parent = client.create_run(exp, run_name="sweep")
    study.set_user_attr(PARENT_RUN_ATTR, parent.info.run_id)
    return study


def _journal(tmp_path: Path) -> tuple[optuna.storages.JournalStorage, TrialClaim]:
    spec = StorageSpec(url=None, journal=tmp_path / "study.journal")
    return optuna.storages.JournalStorage(JournalFileBackend(str(spec.journal))), TrialClaim(spec, "records")


def _children(client: MlflowClient, study: optuna.Study) -> list:
    parent = client.get_run(study.user_attrs[PARENT_RUN_ATTR])
    return client.search_runs(
        [parent.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'"
    )


def _trial(study: optuna.Study, number: int) -> optuna.trial.FrozenTrial:
    return study.get_trials(deepcopy=False)[number]


@pytest.mark.parametrize("named", [True, False], ids=["named-worker", "killed-before-naming"])
def test_a_trial_whose_worker_died_before_its_run_gets_a_repaired_failed_run(
    tmp_path: Path, uri: str, named: bool
):
    client = MlflowClient(tracking_uri=uri)
    storage, claim = _journal(tmp_path)
    study = _study(storage, client)
    trial = study.ask()
    if named:
        trial.set_user_attr(WORKER_ATTR, DEAD)
    assert fail_orphans(study, DEAD, uri, claim) == [0]
    frozen = _trial(study, 0)
    assert frozen.state == TrialState.FAIL
    run = client.get_run(frozen.user_attrs[RUN_ID_ATTR])
    assert run.info.status == "FAILED"
    assert run.data.tags[TRIAL_TAG] == "0" and REPAIRED_TAG in run.data.tags
    assert [r.info.run_id for r in _children(client, study)] == [run.info.run_id]


def test_a_run_created_but_not_linked_is_linked_not_duplicated(tmp_path: Path, uri: str):
    client = MlflowClient(tracking_uri=uri)
    storage, claim = _journal(tmp_path)
    study = _study(storage, client)
    trial = study.ask()
    trial.set_user_attr(WORKER_ATTR, DEAD)
    parent = client.get_run(study.user_attrs[PARENT_RUN_ATTR])
    created = client.create_run(
        parent.info.experiment_id,
        tags={"mlflow.parentRunId": parent.info.run_id, TRIAL_TAG: "0", "optuna_state": "RUNNING"},
    )
    fail_orphans(study, DEAD, uri, claim)
    frozen = _trial(study, 0)
    assert frozen.user_attrs[RUN_ID_ATTR] == created.info.run_id
    assert client.get_run(created.info.run_id).info.status == "FAILED"
    assert REPAIRED_TAG not in client.get_run(created.info.run_id).data.tags
    assert len(_children(client, study)) == 1


def test_a_live_workers_trial_is_left_alone(tmp_path: Path, uri: str):
    client = MlflowClient(tracking_uri=uri)
    storage, claim = _journal(tmp_path)
    study = _study(storage, client)
    study.ask().set_user_attr(WORKER_ATTR, "host:1")
    assert fail_orphans(study, DEAD, uri, claim) == []
    assert _trial(study, 0).state == TrialState.RUNNING and _children(client, study) == []


def test_an_old_unlinked_failed_trial_is_repaired_once_when_the_study_is_opened(tmp_path: Path, uri: str):
    client = MlflowClient(tracking_uri=uri)
    storage, _ = _journal(tmp_path)
    study = _study(storage, client)
    study.tell(study.ask(), state=TrialState.FAIL)  # failed by an older timoe, never linked
    assert repair_unlinked_trials(uri, study) == [0]
    assert repair_unlinked_trials(uri, study) == []
    parent_id = study.user_attrs[PARENT_RUN_ATTR]
    run_id = trial_run_id(client, parent_id, _trial(study, 0))
    assert run_id is not None and client.get_run(run_id).info.status == "FAILED"
    assert len(_children(client, study)) == 1


def test_a_stale_rdb_trial_is_linked_before_it_is_failed(tmp_path: Path, uri: str):
    client = MlflowClient(tracking_uri=uri)
    storage = optuna.storages.RDBStorage(
        f"sqlite:///{tmp_path / 'optuna.db'}", heartbeat_interval=1, grace_period=1
    )
    study = _study(storage, client)
    trial = study.ask()
    storage.record_heartbeat(trial._trial_id)
    time.sleep(2.5)  # the heartbeat goes stale: its worker is dead
    assert fail_stale(study, uri) == [0]
    frozen = _trial(study, 0)
    assert frozen.state == TrialState.FAIL
    assert client.get_run(frozen.user_attrs[RUN_ID_ATTR]).info.status == "FAILED"
