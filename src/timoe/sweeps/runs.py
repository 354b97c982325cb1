"""One MLflow child run per trial, written with the client API so any process can write it.

The fluent API (`mlflow.start_run`) keeps one active run per process; a worker that resumed
the study's parent run would end it when done, while other workers still log under it. The
client names runs explicitly, so every worker logs under the same parent without owning it.

Trial number and run id point at each other: the trial's user attr `mlflow_run_id` names the
run, the run's tag `optuna_trial_number` names the trial. A worker creates both under the
study's claim lock, so no live worker is ever between the two; a worker that died there left a
trial without a link, and whoever fails that trial links it first (`link_trial_run`): to the
run it did create, or to a new one tagged `optuna_repaired` that says the worker died first.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from typing import Any, TypeVar

import optuna
from optuna.trial import TrialState

from timoe.config import ConfigError

T = TypeVar("T")
RUN_ID_ATTR = "mlflow_run_id"
PARENT_RUN_ATTR = "mlflow_parent_run_id"
TRIAL_TAG = "optuna_trial_number"
STATE_TAG = "optuna_state"
REPAIRED_TAG = "optuna_repaired"
# Pruning is a normal end of a trial, not a failure; the optuna_state tag tells the two apart.
_STATUS = {TrialState.COMPLETE: "FINISHED", TrialState.PRUNED: "FINISHED", TrialState.FAIL: "FAILED"}
# Lineage tags of the parent that every trial shares (code version, data hashes, job).
_INHERITED = ("git_", "input.", "wildcard.", "timoe_version", "device", "python")


def retry_locked(fn: Callable[..., T], *args: Any, attempts: int = 8, **kwargs: Any) -> T:
    """Call fn, retrying while a SQLite tracking store reports `database is locked`.

    MLflow already waits 20 s for SQLite's lock; several workers logging every epoch can still
    exceed that on a slow disk. Jittered backoff keeps workers from retrying in lock step.
    """
    for attempt in range(attempts):
        try:
            return fn(*args, **kwargs)
        except Exception as err:
            if "database is locked" not in str(err) or attempt == attempts - 1:
                raise
            time.sleep(min(10.0, 0.2 * 2**attempt) * (0.5 + random.random()))
    raise AssertionError("unreachable")


class TrialRuns:
    """Child runs of one parent run (the study's)."""

    def __init__(self, uri: str, parent_run_id: str, study_name: str, worker: str) -> None:
        from mlflow.exceptions import MlflowException
        from mlflow.tracking import MlflowClient

        self.uri = uri
        self.client = MlflowClient(tracking_uri=uri)
        try:
            parent = retry_locked(self.client.get_run, parent_run_id)
        except MlflowException as err:
            # The usual cause: a worker on another machine with the driver's local SQLite URI.
            raise ConfigError(
                f"the study's parent MLflow run {parent_run_id} is not in the tracking store {uri} "
                f"({err.error_code}): workers on other machines need the driver's tracking server "
                "(tracking.uri)"
            ) from None
        self.parent_run_id = parent_run_id
        self.experiment_id = parent.info.experiment_id
        self.study_name = study_name
        self.worker = worker
        self.inherited = {k: v for k, v in parent.data.tags.items() if k.startswith(_INHERITED)}

    def start(self, trial: optuna.Trial, params: dict[str, Any]) -> str:
        from mlflow.entities import Param

        tags = {
            **self.inherited,
            "mlflow.parentRunId": self.parent_run_id,
            "stage": "sweep-trial",
            "optuna_study": self.study_name,
            TRIAL_TAG: str(trial.number),
            STATE_TAG: "RUNNING",
            "optuna_worker": self.worker,
        }
        run = retry_locked(
            self.client.create_run, self.experiment_id, run_name=f"trial {trial.number}", tags=tags
        )
        run_id = run.info.run_id
        trial.set_user_attr(RUN_ID_ATTR, run_id)
        if params:
            retry_locked(self.client.log_batch, run_id, params=[Param(k, str(v)) for k, v in params.items()])
        return run_id

    def epoch(self, run_id: str, step: int, metrics: dict[str, float]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [Metric(k, float(v), now, step) for k, v in metrics.items() if math.isfinite(v)]
        retry_locked(self.client.log_batch, run_id, metrics=batch)

    def finish(self, run_id: str, state: TrialState, duration_s: float, value: float | None) -> None:
        from mlflow.entities import Metric, RunTag

        now = int(time.time() * 1000)
        metrics = [Metric("duration_s", duration_s, now, 0)]
        if value is not None and math.isfinite(value):
            metrics.append(Metric("objective", float(value), now, 0))
        retry_locked(self.client.log_batch, run_id, metrics=metrics, tags=[RunTag(STATE_TAG, state.name)])
        retry_locked(self.client.set_terminated, run_id, status=_STATUS.get(state, "FAILED"))


def fail_trial_run(uri: str, run_id: str | None) -> None:
    """End the child run of a trial that another process declared failed (dead worker)."""
    if not run_id:
        return
    from mlflow.entities import RunTag
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    retry_locked(client.log_batch, run_id, tags=[RunTag(STATE_TAG, TrialState.FAIL.name)])
    retry_locked(client.set_terminated, run_id, status="FAILED")


def _experiment_of(client: Any, parent_run_id: str) -> str:
    return retry_locked(client.get_run, parent_run_id).info.experiment_id


def find_trial_run(client: Any, parent_run_id: str, number: int) -> str | None:
    """The child run tagged with this trial number, if the trial's worker created one."""
    runs = retry_locked(
        client.search_runs,
        [_experiment_of(client, parent_run_id)],
        filter_string=f"tags.mlflow.parentRunId = '{parent_run_id}' and tags.{TRIAL_TAG} = '{number}'",
        max_results=10,
    )
    return runs[0].info.run_id if runs else None


def _create_repaired_run(client: Any, study: optuna.Study, parent_run_id: str, number: int) -> str:
    tags = {
        "mlflow.parentRunId": parent_run_id,
        "stage": "sweep-trial",
        "optuna_study": study.study_name,
        TRIAL_TAG: str(number),
        STATE_TAG: TrialState.FAIL.name,
        REPAIRED_TAG: "its worker died before creating this run; no parameters or metrics were logged",
    }
    run = retry_locked(
        client.create_run, _experiment_of(client, parent_run_id), run_name=f"trial {number}", tags=tags
    )
    return run.info.run_id


def link_trial_run(uri: str, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> str | None:
    """Return the trial's run id; link a still-RUNNING trial that has none to its run first.

    Call it before failing a dead worker's trial (a finished trial's attrs are read-only) and
    under the claim lock, so the worker cannot be between creating the trial and linking it.
    Returns None for a study without a parent run (nothing to link to).
    """
    run_id = trial.user_attrs.get(RUN_ID_ATTR)
    parent_run_id = study.user_attrs.get(PARENT_RUN_ATTR)
    if run_id or not parent_run_id:
        return run_id
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    run_id = find_trial_run(client, parent_run_id, trial.number)
    if run_id is None:
        run_id = _create_repaired_run(client, study, parent_run_id, trial.number)
    study._storage.set_trial_user_attr(trial._trial_id, RUN_ID_ATTR, run_id)
    return run_id


def repair_unlinked_trials(uri: str, study: optuna.Study) -> list[int]:
    """Give each FAIL trial that links to no run one (found by trial number, or a new repaired one).

    For studies written before trials and runs were created together: a finished trial's attrs
    are read-only, so the link is the run's trial-number tag alone (`trial_run_id` reads it).
    """
    parent_run_id = study.user_attrs.get(PARENT_RUN_ATTR)
    if not parent_run_id:
        return []
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    repaired = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,)):
        if RUN_ID_ATTR in t.user_attrs or find_trial_run(client, parent_run_id, t.number):
            continue
        run_id = _create_repaired_run(client, study, parent_run_id, t.number)
        retry_locked(client.set_terminated, run_id, status="FAILED")
        repaired.append(t.number)
    return repaired


def trial_run_id(client: Any, parent_run_id: str, trial: optuna.trial.FrozenTrial) -> str | None:
    """The run of a trial: its link, or for a repaired FAIL trial the run tagged with its number."""
    linked = trial.user_attrs.get(RUN_ID_ATTR)
    if linked or trial.state != TrialState.FAIL:
        return linked
    return find_trial_run(client, parent_run_id, trial.number)


def fail_dead_trial(uri: str, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
    """Link, then fail, a dead worker's RUNNING trial and its run; False if it had finished."""
    try:
        run_id = link_trial_run(uri, study, trial)
        study._storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
    except optuna.exceptions.UpdateFinishedTrialError:
        return False  # it finished, or another process failed it first
    fail_trial_run(uri, run_id)
    return True


def fail_stale(study: optuna.Study, uri: str) -> list[int]:
    """Fail the trials whose RDB heartbeat stopped (dead workers), runs linked; a journal no-op.

    Optuna's own fail_stale_trials fails the trial first, after which it can no longer be
    linked to a run; this does the same in the order that keeps the records whole.
    """
    from optuna.storages._heartbeat import BaseHeartbeat, is_heartbeat_enabled

    storage = study._storage
    if not isinstance(storage, BaseHeartbeat) or not is_heartbeat_enabled(storage):
        return []
    failed = []
    for trial_id in storage._get_stale_trial_ids(study._study_id):
        trial = storage.get_trial(trial_id)
        if trial.state == TrialState.RUNNING and fail_dead_trial(uri, study, trial):
            failed.append(trial.number)
    return failed


def stale_trial_callback(uri: str) -> Callable[[optuna.Study, optuna.trial.FrozenTrial], None]:
    """For RDBStorage: when a dead worker's trial is failed, fail its MLflow run too."""

    def on_stale(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        fail_trial_run(uri, trial.user_attrs.get(RUN_ID_ATTR))

    return on_stale
