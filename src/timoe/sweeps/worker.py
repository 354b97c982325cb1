"""The trial loop every sweep worker runs, in the driver's process or in its own.

A worker joins the study by name, then repeats: take the claim lock, count the study's live
trials (running, waiting or finished without error), stop if they reach n_trials, else create
a trial. Counting running trials, not only finished ones, is what keeps the study at exactly
n_trials: a count of finished trials alone lets every idle worker start one more at the end.
Failed trials do not count, so a trial lost with its worker is replaced.
"""

from __future__ import annotations

import contextlib
import os
import socket
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from timoe.config import ConfigError, Params, SearchParam
from timoe.sweeps.runs import PARENT_RUN_ATTR, TrialRuns, fail_stale, link_trial_run, stale_trial_callback
from timoe.sweeps.storage import StorageSpec, TrialClaim, heartbeat

LIVE = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING, TrialState.WAITING)
N_TRIALS_ATTR = "n_trials"
WORKER_ATTR = "worker"


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def make_sampler(sweep: Any, worker_index: int) -> optuna.samplers.BaseSampler:
    # Workers with one seed would draw the same random start-up trials; an offset per worker
    # keeps them apart, and worker 0 alone reproduces a single-process sweep exactly.
    # constant_liar makes TPE treat running trials as bad, so parallel workers spread out.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.TPESampler(seed=sweep.seed + worker_index, constant_liar=True)


def make_pruner(sweep: Any) -> optuna.pruners.BasePruner:
    if not sweep.pruning:
        return optuna.pruners.NopPruner()
    return optuna.pruners.MedianPruner(
        n_startup_trials=sweep.pruner_startup_trials,
        n_warmup_steps=sweep.pruner_warmup_epochs,
    )


def suggest(trial: optuna.Trial, space: dict[str, SearchParam]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for key, spec in space.items():
        if spec.type == "float":
            values[key] = trial.suggest_float(key, float(spec.low), float(spec.high), log=spec.log)
        elif spec.type == "int":
            values[key] = trial.suggest_int(key, int(spec.low), int(spec.high), log=spec.log)
        else:
            values[key] = trial.suggest_categorical(key, list(spec.choices or []))
    return values


class Objective:
    """Loads the data once per worker; each call trains one configuration for sweep.epochs."""

    def __init__(self, params: Params, model: str, data_dir: Path, rus_dir: Path | None) -> None:
        from timoe.data.io import load_prepared
        from timoe.device import pick_device
        from timoe.training.build import load_rus_table, subsample

        self.params, self.model = params, model
        data = load_prepared(data_dir)
        self.meta = data.meta
        self.train_split, self.val_split = data.subset("train"), data.subset("val")
        self.keep = subsample(len(self.train_split.label), params.train.max_train_windows, params.sweep.seed)
        self.rus = load_rus_table(rus_dir, model)
        self.device = pick_device(params.train.device)

    def __call__(self, values: dict[str, Any], on_epoch: Any) -> float:
        from timoe.overrides import apply_overrides
        from timoe.training.build import build_for_data
        from timoe.training.loop import LoopData, loop_settings, train
        from timoe.training.seeding import seed_everything

        sc = self.params.sweep
        eff = apply_overrides(self.params, values) if values else self.params
        seed_everything(sc.seed)
        net = build_for_data(eff, self.model, self.meta, self.rus, sc.seed)
        settings = loop_settings(eff, seed=sc.seed, sweep_trial=True)
        tr, va = self.train_split, self.val_split
        data = LoopData(tr.x[self.keep], tr.label[self.keep], va.x, va.label, len(self.meta["classes"]))
        result = train(net, data, settings, self.device, on_epoch=on_epoch)
        return float(result.best_metric)


@dataclass(frozen=True)
class WorkerJob:
    params: Params
    model: str
    data_dir: Path
    study_name: str
    storage: StorageSpec
    rus_dir: Path | None = None
    worker_index: int = 0
    n_trials: int | None = None  # None: the n_trials the driver recorded on the study
    threads: int = 0  # torch CPU threads; 0: train.num_threads, else torch's default
    join_timeout_s: float = 0.0


@dataclass
class WorkerReport:
    worker: str
    trials: dict[int, str] = field(default_factory=dict)  # trial number -> final state


def open_storage(job: WorkerJob) -> Any:
    heartbeat_s = job.params.sweep.heartbeat_s
    return job.storage.open(heartbeat_s=heartbeat_s, on_stale=stale_trial_callback(job.params.tracking.uri))


def join_study(job: WorkerJob, storage: Any) -> optuna.Study:
    """Load the study; wait up to join_timeout_s for the driver to create and tag it."""
    deadline = time.monotonic() + job.join_timeout_s
    while True:
        with contextlib.suppress(KeyError):
            study = optuna.load_study(
                study_name=job.study_name,
                storage=storage,
                sampler=make_sampler(job.params.sweep, job.worker_index),
                pruner=make_pruner(job.params.sweep),
            )
            if PARENT_RUN_ATTR in study.user_attrs:
                return study
        if time.monotonic() >= deadline:
            raise ConfigError(
                f"study {job.study_name!r} not found (or without its MLflow parent run) in "
                f"{job.storage.describe()}: start the sweep without --worker first, or check "
                "that --params, --dataset and --model match the driver's"
            )
        time.sleep(2.0)


@dataclass
class StartedTrial:
    """A trial created together with its MLflow child run (under the claim lock)."""

    trial: optuna.Trial
    values: dict[str, Any]
    run_id: str
    started: float


def _start_trial(study: optuna.Study, objective: Objective, runs: TrialRuns, me: str) -> StartedTrial:
    """Create a trial, name its worker, draw its values and create its run: call under the claim.

    Holding the claim across all four steps is what lets fail_orphans read a RUNNING trial
    without a name or a run as a dead worker's: no live worker is ever between them.
    """
    with warnings.catch_warnings():
        # Optuna expects heartbeats only under optimize(); heartbeat() provides them here.
        warnings.filterwarnings("ignore", "Heartbeat of storage", UserWarning)
        trial = study.ask()
    started = time.monotonic()
    try:
        trial.set_user_attr(WORKER_ATTR, me)
        values = suggest(trial, objective.params.sweep.space.get(objective.model, {}))
        return StartedTrial(trial, values, runs.start(trial, values), started)
    except BaseException:
        # Leave no RUNNING trial behind, and link it to a run if the tracking store allows.
        with contextlib.suppress(Exception):
            link_trial_run(runs.uri, study, study._storage.get_trial(trial._trial_id))
        study.tell(trial, state=TrialState.FAIL)
        raise


def _run_trial(
    study: optuna.Study, started: StartedTrial, objective: Objective, runs: TrialRuns
) -> tuple[TrialState, float | None]:
    """Run one started trial; return its state and value (a pruned trial's: its last reported one)."""
    sc = objective.params.sweep
    trial, run_id = started.trial, started.run_id
    last: list[float] = []  # the latest reported value: what a pruned trial is worth

    def on_epoch(epoch: int, m: dict[str, float]) -> None:
        runs.epoch(run_id, epoch, {k: v for k, v in m.items() if k != "epoch"})
        trial.report(m[sc.metric], epoch)
        last[:] = [m[sc.metric]]
        if trial.should_prune():
            raise optuna.TrialPruned()

    try:
        try:
            value: float | None = objective(started.values, on_epoch)
            state = TrialState.COMPLETE
        except optuna.TrialPruned:
            value, state = None, TrialState.PRUNED
        # MLflow first: if the worker dies before tell, the heartbeat fails the trial and
        # fail_stale fails the run, so the two never disagree for long.
        runs.finish(run_id, state, time.monotonic() - started.started, value)
    except BaseException:
        with contextlib.suppress(Exception):
            runs.finish(run_id, TrialState.FAIL, time.monotonic() - started.started, None)
        study.tell(trial, state=TrialState.FAIL)
        raise
    if state == TrialState.COMPLETE:
        study.tell(trial, value)
    else:
        study.tell(trial, state=state)
    return state, value if value is not None else (last[0] if last else None)


def run_worker(job: WorkerJob) -> WorkerReport:
    """Run trials until the study holds n_trials live trials; return what this worker ran."""
    import torch

    threads = job.threads or job.params.train.num_threads
    if threads:
        torch.set_num_threads(threads)
    me = worker_id()
    storage = open_storage(job)
    study = join_study(job, storage)
    target = job.n_trials or int(study.user_attrs.get(N_TRIALS_ATTR, job.params.sweep.n_trials))
    runs = TrialRuns(job.params.tracking.uri, study.user_attrs[PARENT_RUN_ATTR], job.study_name, me)
    objective = Objective(job.params, job.model, job.data_dir, job.rus_dir)
    claim = TrialClaim(job.storage, job.study_name)
    report = WorkerReport(me)
    try:
        while True:
            with contextlib.ExitStack() as beating:
                with claim():
                    fail_stale(study, job.params.tracking.uri)
                    if len(study.get_trials(deepcopy=False, states=LIVE)) >= target:
                        break
                    started = _start_trial(study, objective, runs, me)
                    # Beat from creation on, so a worker killed here still leaves a stale trial.
                    beating.enter_context(heartbeat(storage, study.study_name, started.trial.number))
                state, value = _run_trial(study, started, objective, runs)
            trial = started.trial
            report.trials[trial.number] = state.name
            # ask/tell does not log results the way optimize() does; the job's log should show them.
            metric = job.params.sweep.metric
            line = f"sweep worker {me}: trial {trial.number} {state.name} {metric}={value} {trial.params}"
            print(line, file=sys.stderr, flush=True)
    finally:
        claim.close()
    return report
