"""The sweep stage: one Optuna study per data set × model, every trial an MLflow child run.

The driver (`timoe sweep`) opens the study's parent MLflow run, creates the study, records the
parent run id and n_trials on it, then runs trials itself (sweep.n_workers = 1) or through
local worker processes. Workers on other machines join with `timoe sweep --worker` given the
same params and a shared storage (a SQLAlchemy URL, e.g. PostgreSQL). When all trials have
ended the driver writes best_params.json (read by the train stage), trials.csv and figures.

Storage is a journal file inside the stage's output by default (safe for parallel local
workers, unlike SQLite); a SQLAlchemy URL from --storage, the environment variable
TIMOE_SWEEP_STORAGE or params (`sweep.storage`) lets many machines share one study.

The study name carries a hash of everything the objective depends on (search space, model
and training settings, data content), so a persistent database resumes a study only when its
trials are still comparable, and a changed config starts a fresh one instead of mixing in
stale trials. n_trials and n_workers are left out: raising n_trials resumes and extends.
"""

from __future__ import annotations

import os
import sys
import time
import warnings
from collections import Counter
from pathlib import Path
from typing import Any

import optuna
import yaml
from optuna.trial import TrialState

from timoe.atomic import atomic_dir
from timoe.config import RUNTIME_DIR, Params
from timoe.device import pick_device
from timoe.plotting import matplotlib_agg
from timoe.stage_specs import recorded_config, study_values
from timoe.stages.common import save_json, stable_hash
from timoe.sweeps.launch import run_local_workers, wait_for_running, worker_command
from timoe.sweeps.runs import PARENT_RUN_ATTR, REPAIRED_TAG, RUN_ID_ATTR, repair_unlinked_trials
from timoe.sweeps.slurm_array import cancel_pending, check_can_submit, submit_array
from timoe.sweeps.storage import STORAGE_ENV, StorageSpec, resolve_storage
from timoe.sweeps.worker import (
    N_TRIALS_ATTR,
    WorkerJob,
    WorkerReport,
    make_pruner,
    make_sampler,
    open_storage,
    run_worker,
    suggest,
)
from timoe.tracking import content_hash, experiment_name, log_artifacts_from, tracked_run
from timoe.training.build import load_rus_table

__all__ = ["STORAGE_ENV", "run_sweep", "run_sweep_worker", "study_key", "study_name", "suggest"]


def study_name(prefix: str, dataset: str, model: str, key: str | None = None) -> str:
    base = f"{prefix}-{dataset}-{model}"
    return f"{base}-{key}" if key else base


def study_key(params: Params, model: str, data_dir: Path, rus_dir: Path | None) -> str:
    data = {"data": content_hash(data_dir), "rus": content_hash(rus_dir) if rus_dir else None}
    # The sweep's declared reads less those that only schedule it (timoe.stage_specs): a setting
    # the trials depend on can never be left out of the key by a list kept here.
    return stable_hash({"objective": study_values(params, model), **data})[:10]


def _rus_input(rus_dir: Path | None, model: str) -> Path | None:
    # Fails early, before any run is opened, if a RUS model lacks the quantify output.
    return rus_dir if load_rus_table(rus_dir, model) is not None else None


def _figures(study: optuna.Study, out: Path) -> list[Path]:
    """Optimisation history, parameter importance, parallel coordinates (where defined)."""
    from optuna.visualization import matplotlib as ovm

    plt = matplotlib_agg()
    made = []
    plots = {
        "history": ovm.plot_optimization_history,
        "importance": ovm.plot_param_importances,
        "parallel": ovm.plot_parallel_coordinate,
    }
    for name, fn in plots.items():
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ax = fn(study)
            fig = ax.figure if hasattr(ax, "figure") else ax[0].figure
            path = out / f"sweep_{name}.png"
            fig.set_size_inches(7, 4)
            fig.tight_layout()
            fig.savefig(path, dpi=90)
            plt.close(fig)
            made.append(path)
        except (ValueError, RuntimeError, IndexError, ZeroDivisionError) as err:
            # Importance needs >= 2 completed trials and >= 1 varying parameter; a tiny study has none.
            (out / f"sweep_{name}.txt").write_text(f"not drawn: {err}\n")
    return made


def _summary(study: optuna.Study, space: dict[str, Any], parent_run_id: str, extra: dict[str, Any]) -> dict:
    trials = study.get_trials(deepcopy=False)
    states = Counter(t.state for t in trials)
    best: dict[str, Any] = {
        "study": study.study_name,
        "params": {},
        "value": None,
        "trial": None,
        "parent_run_id": parent_run_id,
        "n_trials": len(trials),
        "n_complete": states[TrialState.COMPLETE],
        "n_pruned": states[TrialState.PRUNED],
        "n_failed": states[TrialState.FAIL],
        "search_space": sorted(space),
        **extra,
    }
    if states[TrialState.COMPLETE]:
        bt = study.best_trial
        best.update(
            params=bt.params, value=bt.value, trial=bt.number, trial_run_id=bt.user_attrs.get(RUN_ID_ATTR)
        )
    return best


def _write_worker_params(params: Params, path: Path) -> None:
    # The storage URL may hold a password: workers get it from the environment, not this file.
    raw = params.model_dump()
    raw["sweep"]["storage"] = None
    path.write_text(yaml.safe_dump(raw, sort_keys=False))


def run_sweep(
    params: Params,
    *,
    dataset: str,
    model: str,
    data_dir: Path,
    out_dir: Path,
    rus_dir: Path | None = None,
    n_trials: int | None = None,
    storage: str | None = None,
) -> dict[str, Any]:
    """Drive one study to n_trials live trials; write best_params.json, trials.csv, figures."""
    params = params.for_dataset(dataset)  # the data set's own settings (per_dataset) apply
    sc = params.sweep
    rus_dir = _rus_input(rus_dir, model)
    name = study_name(
        params.tracking.experiment_prefix, dataset, model, study_key(params, model, data_dir, rus_dir)
    )
    inputs = {"data": data_dir} | ({"rus": rus_dir} if rus_dir else {})
    started = time.monotonic()
    with atomic_dir(out_dir) as tmp:
        spec = resolve_storage(storage, sc.storage, tmp / "study.journal")
        if sc.slurm_array:
            check_can_submit(spec)  # before any run is opened
        # The default journal is renamed with the output: describe it where it will end up.
        default_journal = spec.journal == tmp / "study.journal"
        where = f"journal:{out_dir / 'study.journal'}" if default_journal else spec.describe()
        with tracked_run(
            uri=params.tracking.uri,
            experiment=experiment_name(params.tracking.experiment_prefix, "sweep", dataset),
            stage="sweep",
            config=recorded_config(params, "sweep", dataset=dataset, model=model) | {"sweep_storage": where},
            out_dir=tmp,
            inputs=inputs,
            wildcards={"dataset": dataset, "model": model},
            seed=sc.seed,
            device=str(pick_device(params.train.device)),
            run_name=f"sweep/{dataset}/{model}",
        ) as parent:
            job = WorkerJob(
                params=params,
                model=model,
                data_dir=data_dir,
                study_name=name,
                storage=spec,
                rus_dir=rus_dir,
                n_trials=n_trials or sc.n_trials,
            )
            study = _open_study(job, parent.info.run_id, where)
            failed_workers = _drive(job, study, tmp, dataset=dataset)
            extra = {"storage": where, "n_workers": sc.n_workers, "metric": sc.metric}
            extra |= {"wall_s": round(time.monotonic() - started, 2), "failed_workers": len(failed_workers)}
            best = _record_best(study, sc.space.get(model, {}), parent.info.run_id, extra, tmp)
        if default_journal:
            Path(f"{spec.journal}.claim").unlink(missing_ok=True)  # the workers' lock, not an output
    return best


def _open_study(job: WorkerJob, parent_run_id: str, where: str) -> optuna.Study:
    """Create (or reopen) the study, repair trials an earlier session lost, publish the parent run."""
    import mlflow

    sc = job.params.sweep
    study = optuna.create_study(
        study_name=job.study_name,
        storage=open_storage(job),
        direction="maximize",
        load_if_exists=True,
        sampler=make_sampler(sc, 0),
        pruner=make_pruner(sc),
    )
    # Under the parent of the session that lost them, before this session's replaces it.
    repaired = repair_unlinked_trials(job.params.tracking.uri, study)
    if repaired:
        print(f"sweep: trials {repaired} had no MLflow run: each now has one, tagged {REPAIRED_TAG}")
    study.set_user_attr(N_TRIALS_ATTR, job.n_trials)
    # Set last: workers wait for this attribute before they start trials.
    study.set_user_attr(PARENT_RUN_ATTR, parent_run_id)
    mlflow.set_tags({"optuna_study": job.study_name, "optuna_storage": where})
    print(f"sweep: study {job.study_name} in {where}", flush=True)
    return study


def _drive(job: WorkerJob, study: optuna.Study, tmp: Path, *, dataset: str) -> dict[int, int]:
    """Run the trials (local workers, plus a Slurm array if asked) until none is running.

    Returns {worker index: exit code} of the local workers that failed.
    """
    sc = job.params.sweep
    if not sc.space.get(job.model):
        return {}
    array = _submit_array(job, dataset) if sc.slurm_array else None
    try:
        failed_workers = _run_trials(job, study, tmp, dataset=dataset)
        wait_for_running(study, job.params.tracking.uri)
    finally:
        if array is not None:
            cancel_pending(array)
    return failed_workers


def _record_best(
    study: optuna.Study, space: dict[str, Any], parent_run_id: str, extra: dict[str, Any], tmp: Path
) -> dict[str, Any]:
    """Summarise the study: metrics and best params to MLflow; best_params.json, trials.csv, figures."""
    import mlflow

    best = _summary(study, space, parent_run_id, extra)
    mlflow.log_metrics({k: best[k] for k in ("n_trials", "n_complete", "n_pruned", "n_failed", "wall_s")})
    if best["value"] is not None:
        mlflow.log_metric(f"best_{extra['metric']}", float(best["value"]))
        mlflow.log_params({f"best.{k}": v for k, v in best["params"].items()})
    save_json(tmp / "best_params.json", best)
    attrs = ("number", "value", "state", "params", "duration", "user_attrs")
    study.trials_dataframe(attrs=attrs).to_csv(tmp / "trials.csv", index=False)
    figs = _figures(study, tmp) if best["n_complete"] else []
    log_artifacts_from([tmp / "best_params.json", tmp / "trials.csv", *figs])
    return best


def _submit_array(job: WorkerJob, dataset: str) -> str:
    """Submit sweep.slurm_array workers that join this study; return the Slurm job id."""
    params = job.params
    # Beside the resolved params, never deleted: array tasks may start after this driver ends.
    params_file = RUNTIME_DIR / "sweep-workers" / f"{job.study_name}.yaml"
    params_file.parent.mkdir(parents=True, exist_ok=True)
    _write_worker_params(params, params_file)
    args = ["--dataset", dataset, "--model", job.model, "--data", str(job.data_dir)]
    args += ["--params", str(params_file), "--study-name", job.study_name]
    args += ["--rus", str(job.rus_dir)] if job.rus_dir is not None else []
    log_dir = Path("logs") / "sweep" / dataset / f"{job.model}-array"
    array = submit_array(
        params.sweep.slurm_array, args, job.storage, log_dir, index_base=params.sweep.n_workers
    )
    print(f"sweep: submitted Slurm array job {array} ({params.sweep.slurm_array} workers, logs in {log_dir})")
    return array


def _finished(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)))


def _run_trials(job: WorkerJob, study: optuna.Study, tmp: Path, *, dataset: str) -> dict[int, int]:
    """Run the study to n_trials; return the exit codes of local workers that failed."""
    params = job.params
    n_workers = params.sweep.n_workers
    target = job.n_trials or params.sweep.n_trials
    if _finished(study) >= target:
        return {}  # a persistent study that is already complete: nothing to start
    if n_workers == 1:
        run_worker(job)
        return {}
    # Two cores shared by four workers each using both would thrash; split the cores instead.
    threads = params.train.num_threads or max(1, (os.cpu_count() or 1) // n_workers)
    params_file = tmp / "worker_params.yaml"
    _write_worker_params(params, params_file)
    commands = [
        worker_command(
            index=i,
            dataset=dataset,
            model=job.model,
            data_dir=job.data_dir,
            params_file=params_file,
            study_name=job.study_name,
            rus_dir=job.rus_dir,
            threads=threads,
        )
        for i in range(n_workers)
    ]
    try:
        failed = _run_with_replacements(job, study, commands, target)
    finally:
        params_file.unlink(missing_ok=True)
    if failed:
        detail = ", ".join(f"worker {i} exited with code {c}" for i, c in sorted(failed.items()))
        if _finished(study) < target:
            raise RuntimeError(f"sweep incomplete: {detail}; see the log above")
        # The others replaced its trial: the study is whole, so keep it, but say so.
        print(f"sweep: warning: {detail}; its trial was marked FAIL and replaced", file=sys.stderr)
    return failed


REPLACEMENT_ROUNDS = 2  # a worker that keeps dying is a bug to report, not to retry forever


def _run_with_replacements(
    job: WorkerJob, study: optuna.Study, commands: list[list[str]], target: int
) -> dict[int, int]:
    """Run the workers; when some died and the study is still short of `target`, start as many
    again (up to REPLACEMENT_ROUNDS times). Returns {worker index: exit code} of every failure.

    A dead worker's trial is failed at once and the live workers replace it, but a worker that
    dies after the others have seen n_trials started (and left) leaves nobody to replace it.
    """
    failed_all: dict[int, int] = {}
    indices = list(range(len(commands)))
    for round_no in range(REPLACEMENT_ROUNDS + 1):
        live = [commands[i] for i in indices]
        failed = run_local_workers(live, job.storage, study, job.params.tracking.uri)
        failed = {indices[i]: code for i, code in failed.items()}
        failed_all |= {i: code for i, code in failed.items() if i not in failed_all}
        if not failed or _finished(study) >= target or round_no == REPLACEMENT_ROUNDS:
            return failed_all
        indices = sorted(failed)
        print(
            f"sweep: {len(failed)} worker(s) died with {_finished(study)} of {target} trials finished; "
            f"starting {len(indices)} replacement(s)",
            file=sys.stderr,
            flush=True,
        )
    return failed_all


def run_sweep_worker(
    params: Params,
    *,
    dataset: str,
    model: str,
    data_dir: Path,
    rus_dir: Path | None = None,
    name: str | None = None,
    storage: str | None = None,
    worker_index: int | None = None,
    n_trials: int | None = None,
    threads: int = 0,
    join_timeout_s: float = 60.0,
) -> WorkerReport:
    """Join a running study (`timoe sweep --worker`) and run trials until it is complete.

    Without a worker index the process id offsets the sampler's seed, so workers started
    without one still draw different start-up trials.
    """
    params = params.for_dataset(dataset)  # as run_sweep: its study key and trials need the same
    rus_dir = _rus_input(rus_dir, model)
    spec: StorageSpec = resolve_storage(storage, params.sweep.storage, None)
    name = name or study_name(
        params.tracking.experiment_prefix, dataset, model, study_key(params, model, data_dir, rus_dir)
    )
    job = WorkerJob(
        params=params,
        model=model,
        data_dir=data_dir,
        study_name=name,
        storage=spec,
        rus_dir=rus_dir,
        worker_index=os.getpid() if worker_index is None else worker_index,
        n_trials=n_trials,
        threads=threads,
        join_timeout_s=join_timeout_s,
    )
    return run_worker(job)
