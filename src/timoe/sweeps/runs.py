"""One MLflow child run per trial, written with the client API so any process can write it.

The fluent API (`mlflow.start_run`) keeps one active run per process; a worker that resumed
the study's parent run would end it when done, while other workers still log under it. The
client names runs explicitly, so every worker logs under the same parent without owning it.

Trial number and run id point at each other: the trial's user attr `mlflow_run_id` names the
run, the run's tag `optuna_trial_number` names the trial.
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


def stale_trial_callback(uri: str) -> Callable[[optuna.Study, optuna.trial.FrozenTrial], None]:
    """For RDBStorage: when a dead worker's trial is failed, fail its MLflow run too."""

    def on_stale(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        fail_trial_run(uri, trial.user_attrs.get(RUN_ID_ATTR))

    return on_stale
