"""The sweep stage: one Optuna study per data set × model, every trial an MLflow child run.

Storage is a journal file inside the stage's output by default (safe for parallel local
workers, unlike SQLite); any SQLAlchemy URL from params (`sweep.storage`) or the environment
variable TIMOE_SWEEP_STORAGE lets workers on many machines join one study. The best
parameters go to best_params.json, which the train stage reads.
"""

from __future__ import annotations

import os
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import optuna

from timoe.atomic import atomic_dir
from timoe.config import Params, SearchParam
from timoe.data.io import load_prepared
from timoe.device import pick_device
from timoe.stages.common import apply_overrides, matplotlib_agg, save_json
from timoe.stages.train import build_for_data, load_rus_table, subsample
from timoe.tracking import experiment_name, log_artifacts_from, tracked_run
from timoe.training.loop import LoopSettings, train
from timoe.training.seeding import seed_everything

STORAGE_ENV = "TIMOE_SWEEP_STORAGE"


def study_name(prefix: str, dataset: str, model: str) -> str:
    return f"{prefix}-{dataset}-{model}"


def make_storage(params: Params, journal_path: Path) -> Any:
    url = os.environ.get(STORAGE_ENV) or params.sweep.storage
    if url:
        return optuna.storages.RDBStorage(url, heartbeat_interval=30, grace_period=120)
    from optuna.storages.journal import JournalFileBackend

    return optuna.storages.JournalStorage(JournalFileBackend(str(journal_path)))


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


def run_sweep(
    params: Params,
    *,
    dataset: str,
    model: str,
    data_dir: Path,
    out_dir: Path,
    rus_dir: Path | None = None,
    n_trials: int | None = None,
) -> dict[str, Any]:
    sc = params.sweep
    space = sc.space.get(model, {})
    data = load_prepared(data_dir)
    tr, va = data.subset("train"), data.subset("val")
    keep = subsample(len(tr.label), params.train.max_train_windows, sc.seed)
    rus = load_rus_table(rus_dir, model)
    device = pick_device(params.train.device)
    n_classes = len(data.meta["classes"])
    inputs = {"data": data_dir} | ({"rus": rus_dir} if rus is not None and rus_dir else {})
    with atomic_dir(out_dir) as tmp:
        import mlflow

        name = study_name(params.tracking.experiment_prefix, dataset, model)
        with tracked_run(
            uri=params.tracking.uri,
            experiment=experiment_name(params.tracking.experiment_prefix, "sweep", dataset),
            stage="sweep",
            full_params=params.model_dump(),
            config={
                "sweep": sc.model_dump(),
                "train": params.train.model_dump(),
                "model": params.model.model_dump(),
            },
            out_dir=tmp,
            inputs=inputs,
            wildcards={"dataset": dataset, "model": model},
            seed=sc.seed,
            device=str(device),
            run_name=f"sweep/{dataset}/{model}",
        ) as parent:
            storage = make_storage(params, tmp / "study.journal")
            study = optuna.create_study(
                study_name=name,
                storage=storage,
                direction="maximize",
                load_if_exists=True,
                sampler=optuna.samplers.TPESampler(seed=sc.seed),
                pruner=optuna.pruners.MedianPruner(n_warmup_steps=1)
                if sc.pruning
                else optuna.pruners.NopPruner(),
            )
            mlflow.set_tag("optuna_study", name)

            def objective(trial: optuna.Trial) -> float:
                values = suggest(trial, space)
                eff = apply_overrides(params, values) if values else params
                started = time.time()
                with mlflow.start_run(
                    run_name=f"trial {trial.number}",
                    nested=True,
                    tags={
                        "optuna_trial_number": str(trial.number),
                        "stage": "sweep-trial",
                        "optuna_study": name,
                    },
                ) as child:
                    trial.set_user_attr("mlflow_run_id", child.info.run_id)
                    mlflow.log_params(values)
                    seed_everything(sc.seed)
                    net = build_for_data(eff, model, data.meta, rus, sc.seed)
                    settings = LoopSettings(
                        epochs=sc.epochs,
                        batch_size=eff.train.batch_size,
                        lr=eff.train.lr,
                        weight_decay=eff.train.weight_decay,
                        grad_clip=eff.train.grad_clip,
                        warmup_epochs=min(eff.train.warmup_epochs, sc.epochs - 1),
                        patience=sc.epochs,
                        seed=sc.seed,
                        selection_metric=sc.metric,
                    )

                    def report(epoch: int, m: dict[str, float]) -> None:
                        value = m[sc.metric]
                        mlflow.log_metric(sc.metric, value, step=epoch)
                        trial.report(value, epoch)
                        if trial.should_prune():
                            mlflow.set_tag("optuna_state", "PRUNED")
                            raise optuna.TrialPruned()

                    try:
                        result = train(
                            net,
                            tr.x[keep],
                            tr.label[keep],
                            va.x,
                            va.label,
                            n_classes,
                            settings,
                            device,
                            on_epoch=report,
                        )
                    finally:
                        mlflow.log_metric("duration_s", time.time() - started)
                    mlflow.set_tag("optuna_state", "COMPLETE")
                    mlflow.log_metric(f"best_{sc.metric}", result.best_metric)
                    return float(result.best_metric)

            if space:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                    study.optimize(objective, n_trials=n_trials or sc.n_trials, catch=())
            done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
            best: dict[str, Any] = {
                "study": name,
                "params": {},
                "value": None,
                "trial": None,
                "parent_run_id": parent.info.run_id,
                "n_trials": len(study.trials),
                "n_complete": len(done),
                "search_space": sorted(space),
            }
            if done:
                bt = study.best_trial
                best.update(
                    params=bt.params,
                    value=bt.value,
                    trial=bt.number,
                    trial_run_id=bt.user_attrs.get("mlflow_run_id"),
                )
                mlflow.log_metric(f"best_{sc.metric}", float(bt.value))
                mlflow.log_params({f"best.{k}": v for k, v in bt.params.items()})
            save_json(tmp / "best_params.json", best)
            trials = study.trials_dataframe(attrs=("number", "value", "state", "params", "duration"))
            trials.to_csv(tmp / "trials.csv", index=False)
            figs = _figures(study, tmp) if done else []
            log_artifacts_from([tmp / "best_params.json", tmp / "trials.csv", *figs])
    return best


def best_value_or_nan(best: dict[str, Any]) -> float:
    return float(best["value"]) if best.get("value") is not None else float(np.nan)
