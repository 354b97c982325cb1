"""The train stage: one model × data set × seed, from prepared windows to test predictions.

Model selection uses the validation split only; test predictions are written once, with the
selected weights, for the evaluate stage to score.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch

from timoe.atomic import atomic_dir
from timoe.config import SEED_LIMIT, ConfigError, Params
from timoe.data.errors import NonFiniteError
from timoe.data.io import PreparedData, load_prepared
from timoe.device import pick_device
from timoe.overrides import apply_overrides
from timoe.plotting import matplotlib_agg
from timoe.stage_specs import recorded_config
from timoe.stages.common import read_best_params, save_json, stable_hash
from timoe.tracking import ResumeChain, content_hash, experiment_name, log_artifacts_from, tracked_run
from timoe.training.build import build_for_data, load_rus_table, regime_channels, subsample
from timoe.training.loop import (
    NON_FINITE_HINT,
    CheckpointSpec,
    EpochCallback,
    LoopData,
    LoopSettings,
    TrainResult,
    loop_settings,
    predict,
    train,
)
from timoe.training.seeding import seed_everything


@dataclass(frozen=True)
class TrainJob:
    """One train job: which model, data set and seed, and the folders it reads and writes."""

    dataset: str
    model: str
    seed: int
    data_dir: Path
    out_dir: Path
    rus_dir: Path | None = None
    sweep_dir: Path | None = None
    checkpoint_dir: Path | None = None


@torch.no_grad()
def routing_summary(
    model: torch.nn.Module,
    x: np.ndarray,
    labels: np.ndarray,
    n_classes: int,
    device: torch.device,
    params: Params,
    meta: dict[str, Any],
    batch_size: int = 256,
) -> dict[str, Any] | None:
    """Expert usage and routing diagnostics on the test windows (models.diagnostics); with a prior,
    usage per interaction regime of the test windows' average prior, and the accuracy lost when the
    synergy experts are disabled, on the windows whose prior says synergy and on the others
    (`synergy_ablation`); and the accuracy lost when routing is replaced by uniform-random routing
    ("does routing matter")."""
    from timoe.models import interaction_regime_usage
    from timoe.models.diagnostics import RoutingDiagnostics, random_routing, window_synergy
    from timoe.models.prior import regime_of

    inner = getattr(model, "inner", model)
    model.eval()
    stats, diag, priors = None, None, []
    windows: dict[str, list[torch.Tensor]] = {"correct": [], "synergy": [], "context": [], "regime": []}
    truth = regime_channels(meta)
    n_regimes = len(truth)
    for i in range(0, len(x), batch_size):
        xb = torch.from_numpy(x[i : i + batch_size]).to(device)
        out = model(xb)
        if out.routing is None:
            return None  # a dense model has no experts
        stats = out.routing if stats is None else stats.merge(out.routing)
        if diag is None:
            diag = RoutingDiagnostics(
                out.routing.layers, out.routing.usage.shape[-1], out.routing.n_synergy, n_classes, n_regimes
            )
        regime = regime_of(xb, truth) if n_regimes else None
        prior = out.context.prior if out.context is not None else None
        tau = params.model.losses.tau_s
        diag.update(out.routes, torch.from_numpy(labels[i : i + batch_size]), regime, prior, tau)
        windows["correct"].append(out.logits.argmax(-1).cpu() == torch.from_numpy(labels[i : i + len(xb)]))
        if prior is not None:
            priors.append((prior, len(xb)))
            windows["synergy"].append(window_synergy(prior).cpu())
            windows["context"].append(prior.context.cpu())
            if regime is not None:
                windows["regime"].append(regime.cpu())
    if stats is None or diag is None:
        return None
    modality_names = list(meta["modalities"])
    summary: dict[str, Any] = {"stats": stats.to_dict(modality_names)}
    if priors:
        mean = _mean_prior(priors, tuple(modality_names))
        summary |= interaction_regime_usage(stats, mean, params.model.losses, modality_names)
    accuracy = float(torch.cat(windows["correct"]).float().mean())  # this pass's, not one more
    with random_routing(model, seed=0):
        random_accuracy = _accuracy(model, x, labels, device)
    summary["diagnostics"] = {
        "per_layer": diag.summary(),
        "accuracy": accuracy,
        "random_routing_accuracy": random_accuracy,
        "random_routing_drop": accuracy - random_accuracy,
    }
    if priors and 0 < inner.n_synergy <= params.model.n_experts - params.model.top_k:
        summary["synergy_ablation"] = _synergy_ablation(model, x, labels, device, params, meta, windows)
    summary["synergy_chance"] = inner.n_synergy / params.model.n_experts
    summary["topk_overlap_chance"] = params.model.top_k / params.model.n_experts
    return summary


def _synergy_ablation(
    model: torch.nn.Module,
    x: np.ndarray,
    labels: np.ndarray,
    device: torch.device,
    params: Params,
    meta: dict[str, Any],
    windows: dict[str, list[torch.Tensor]],
) -> dict[str, Any]:
    """Classify the test windows again with the synergy experts disabled (their logits masked, so
    top-k picks among the others) and summarise the drop per group (models.diagnostics)."""
    from timoe.models.diagnostics import synergy_ablation_summary, synergy_experts_disabled

    inner = getattr(model, "inner", model)
    with synergy_experts_disabled(model, inner.n_synergy):
        prob = predict(model, x, device)
    correct_off = torch.from_numpy(prob.argmax(axis=1) == labels)
    regime = torch.cat(windows["regime"]) if windows["regime"] else None
    names = (meta.get("extra") or {}).get("regime_names")
    return synergy_ablation_summary(
        torch.cat(windows["correct"]),
        correct_off,
        torch.cat(windows["synergy"]),
        params.model.losses.tau_s,
        context=torch.cat(windows["context"]),
        regime=regime,
        regime_names=names,
    )


def _mean_prior(priors: list[tuple[Any, int]], names: tuple[str, ...]) -> Any:
    from timoe.models import RusPrior

    n = sum(k for _, k in priors)
    U = sum(p.U.sum(0).cpu() for p, _ in priors) / n
    R = sum(p.R.sum(0).cpu() for p, _ in priors) / n
    S = sum(p.S.sum(0).cpu() for p, _ in priors) / n
    return RusPrior(U, R, S, names)


def _accuracy(model: torch.nn.Module, x: np.ndarray, labels: np.ndarray, device: torch.device) -> float:
    prob = predict(model, x, device)
    return float((prob.argmax(axis=1) == labels).mean()) if len(prob) else float("nan")


def _plot_curves(history: list[dict[str, float]], path: Path) -> None:
    plt = matplotlib_agg()
    fig, ax = plt.subplots(1, 2, figsize=(9, 3.2))
    ep = [h["epoch"] for h in history]
    ax[0].plot(ep, [h["train_loss"] for h in history], label="train loss")
    ax[0].set_xlabel("epoch")
    ax[0].legend()
    ax[1].plot(ep, [h["val_accuracy"] for h in history], label="val accuracy")
    ax[1].set_xlabel("epoch")
    ax[1].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


@dataclass
class _TrainSetup:
    """Everything a train job has assembled before its MLflow run opens."""

    params: Params  # with the sweep's best params applied, when train.use_sweep
    overrides: dict[str, Any]  # the sweep's best params ({} without a sweep)
    meta: dict[str, Any]
    train_split: PreparedData
    val_split: PreparedData
    test_split: PreparedData
    keep: np.ndarray  # [n] indices of the training windows used (train.max_train_windows)
    device: torch.device
    model: torch.nn.Module
    settings: LoopSettings
    resolved: dict[str, Any]  # the config the job ran with, as logged and saved in model.pt
    key: str  # identifies config, job and data: a checkpoint under another key is not resumed
    checkpoint: Path | None
    inputs: dict[str, Path]  # the lineage inputs tracked_run hashes

    @property
    def n_classes(self) -> int:
        return len(self.meta["classes"])


def _check_seed(seed: int) -> None:
    """Refuse a seed numpy cannot take (--seed bypasses train.seeds' own check)."""
    if not 0 <= seed < SEED_LIMIT:  # numpy would fail late, after the data were loaded
        raise ConfigError(f"seed {seed} outside 0..{SEED_LIMIT - 1}")


def _build_model(
    eff: Params, job: TrainJob, meta: dict[str, Any], rus: Any
) -> tuple[torch.device, torch.nn.Module]:
    """Pick the device (train.device), fix threads and seeds, then build the model for the data set."""
    device = pick_device(eff.train.device)
    if eff.train.num_threads:
        torch.set_num_threads(eff.train.num_threads)  # not left to OMP_NUM_THREADS: numbers depend on it
    seed_everything(job.seed)
    return device, build_for_data(eff, job.model, meta, rus, job.seed)


def _lineage(
    eff: Params, overrides: dict[str, Any], job: TrainJob, rus: Any
) -> tuple[dict[str, Any], str, dict[str, Path]]:
    """(resolved config, checkpoint key, tracked inputs) of the job.

    The rus and sweep folders count as inputs only when the job actually read something there.
    """
    wildcards = {"dataset": job.dataset, "model": job.model, "seed": str(job.seed)}
    resolved = recorded_config(eff, "train", **wildcards) | {"sweep_overrides": overrides}
    key = stable_hash(
        {"cfg": resolved, "job": [job.dataset, job.model, job.seed], "data": content_hash(job.data_dir)}
    )
    inputs = {"data": job.data_dir}
    if job.rus_dir is not None and rus is not None:
        inputs["rus"] = job.rus_dir
    if job.sweep_dir is not None and overrides:
        inputs["sweep"] = job.sweep_dir
    return resolved, key, inputs


def _set_up(params: Params, job: TrainJob) -> _TrainSetup:
    """Apply the sweep's best params, load the splits and RUS table, build the model and settings."""
    overrides = read_best_params(job.sweep_dir) if params.train.use_sweep else {}
    eff = apply_overrides(params, overrides) if overrides else params
    data = load_prepared(job.data_dir)
    meta = data.meta
    tr, va, te = data.subset("train"), data.subset("val"), data.subset("test")
    keep = subsample(len(tr.label), eff.train.max_train_windows, job.seed)
    rus = load_rus_table(job.rus_dir, job.model)
    device, model = _build_model(eff, job, meta, rus)
    settings = loop_settings(eff, seed=job.seed, regime_channels=regime_channels(meta))
    resolved, key, inputs = _lineage(eff, overrides, job, rus)
    ckpt = Path(job.checkpoint_dir) / "last.pt" if job.checkpoint_dir else None
    return _TrainSetup(
        params=eff,
        overrides=overrides,
        meta=meta,
        train_split=tr,
        val_split=va,
        test_split=te,
        keep=keep,
        device=device,
        model=model,
        settings=settings,
        resolved=resolved,
        key=key,
        checkpoint=ckpt,
        inputs=inputs,
    )


def _tracked_train_run(params: Params, job: TrainJob, setup: _TrainSetup, out_dir: Path) -> Any:
    """The job's MLflow run (a context manager yielding the run), tagged with its lineage."""
    return tracked_run(
        uri=params.tracking.uri,
        experiment=experiment_name(params.tracking.experiment_prefix, "train", job.dataset),
        stage="train",
        full_params=setup.params.model_dump(),
        config=setup.resolved,
        out_dir=out_dir,
        inputs=setup.inputs,
        wildcards={"dataset": job.dataset, "model": job.model, "seed": job.seed},
        seed=job.seed,
        device=str(setup.device),
        run_name=f"train/{job.dataset}/{job.model}/seed{job.seed}",
    )


def _epoch_logger(chain: ResumeChain, epochs: int) -> EpochCallback:
    """Log each epoch's finite metrics to MLflow and one progress line to stderr."""
    import mlflow

    def log_epoch(epoch: int, m: dict[str, float]) -> None:
        chain.first_epoch(epoch)
        mlflow.log_metrics({k: v for k, v in m.items() if np.isfinite(v)}, step=epoch)
        # One line per epoch in the job's log: progress bars are off when not on a terminal.
        print(
            f"epoch {epoch + 1}/{epochs} train_loss {m.get('train_loss', float('nan')):.4f}"
            f" val_accuracy {m.get('val_accuracy', float('nan')):.4f}",
            file=sys.stderr,
            flush=True,
        )

    return log_epoch


def _fit(setup: _TrainSetup, chain: ResumeChain, progress: bool) -> TrainResult:
    """Run the training loop on the kept training windows, resuming from the job's checkpoint."""
    tr, va = setup.train_split, setup.val_split
    data = LoopData(tr.x[setup.keep], tr.label[setup.keep], va.x, va.label, setup.n_classes)
    checkpoint = CheckpointSpec(setup.checkpoint, setup.key) if setup.checkpoint is not None else None
    return train(
        setup.model,
        data,
        setup.settings,
        setup.device,
        checkpoint=checkpoint,
        on_epoch=_epoch_logger(chain, setup.settings.epochs),
        progress=progress,
    )


def _split_predictions(
    split_name: str, part: PreparedData, prob: np.ndarray, pred: np.ndarray
) -> pl.DataFrame:
    """One split's rows of predictions.parquet; prob [N, n_classes], pred [N]."""
    return pl.DataFrame(
        {
            "split": [split_name] * len(pred),
            "window_id": part.window_id.astype(np.int64),
            "subject": part.subject.astype(np.int32),
            "label": part.label.astype(np.int32),
            "pred": pred.astype(np.int32),
            "prob": pl.Series(prob.astype(np.float32).tolist(), dtype=pl.List(pl.Float32)),
        }
    )


def _score_splits(setup: _TrainSetup) -> tuple[dict[str, float], pl.DataFrame]:
    """Metrics (val_*, test_*) of the selected model and the predictions of both splits."""
    from timoe.evaluation.metrics import classification_metrics

    scores: dict[str, float] = {}
    rows = []
    for split_name, part in (("val", setup.val_split), ("test", setup.test_split)):
        prob = predict(setup.model, part.x, setup.device)
        if not np.isfinite(prob).all():  # NaN argmaxes to class 0: a chance-level "result"
            raise NonFiniteError(
                f"non-finite {split_name} predictions of the selected model: {NON_FINITE_HINT}"
            )
        pred = prob.argmax(axis=1) if len(prob) else np.zeros(0, dtype=np.int64)
        for k, v in classification_metrics(part.label, pred, setup.n_classes).items():
            scores[f"{split_name}_{k}"] = v
        rows.append(_split_predictions(split_name, part, prob, pred))
    return scores, pl.concat(rows)


def _save_model(path: Path, setup: _TrainSetup, model_name: str) -> None:
    """model.pt: the selected weights (on the CPU), the model's name and the resolved config."""
    torch.save(
        {
            "state_dict": {k: v.cpu() for k, v in setup.model.state_dict().items()},
            "model": model_name,
            "config": setup.resolved,
        },
        path,
    )


def _log_routing(routing: dict[str, Any]) -> None:
    """Log the test routing diagnostics: random-routing accuracy and drop, and each layer's row."""
    import mlflow

    d = routing["diagnostics"]
    mlflow.log_metrics(
        {
            "test_random_routing_accuracy": d["random_routing_accuracy"],
            "test_random_routing_drop": d["random_routing_drop"],
        }
    )
    for row in d["per_layer"]:
        mlflow.log_metrics(
            {f"test_{k}_l{row['layer']}": float(v) for k, v in row.items() if k != "layer" and v is not None}
        )


def _write_outputs(
    tmp: Path, setup: _TrainSetup, job: TrainJob, result: TrainResult, run_id: str
) -> dict[str, Any]:
    """Write predictions, model, metrics, routing and curves into tmp and log them; the summary."""
    import mlflow

    summary: dict[str, Any] = {
        "best_epoch": result.best_epoch,
        "epochs_run": len(result.history),
        "resumed_from_epoch": result.resumed_from_epoch,
    }
    scores, predictions = _score_splits(setup)
    summary |= scores
    predictions.write_parquet(tmp / "predictions.parquet")
    _save_model(tmp / "model.pt", setup, job.model)
    save_json(
        tmp / "metrics.json",
        {
            **summary,
            "history": result.history,
            "dataset": job.dataset,
            "model": job.model,
            "seed": job.seed,
            "run_id": run_id,
            "classes": setup.meta["classes"],
        },
    )
    te = setup.test_split
    routing = routing_summary(
        setup.model, te.x, te.label, setup.n_classes, setup.device, setup.params, setup.meta
    )
    if routing is not None:
        _log_routing(routing)
        save_json(tmp / "routing.json", routing)
    _plot_curves(result.history, tmp / "curves.png")
    mlflow.log_metrics(
        {
            k: float(v)
            for k, v in summary.items()
            if isinstance(v, int | float) and v is not None and np.isfinite(v)
        }
    )
    log_artifacts_from([tmp / "metrics.json", tmp / "curves.png", tmp / "routing.json"])
    return summary


REFERENCE_MODEL_FILE = "model.npz"  # a reference model's fitted state: plain arrays, no pickle


def _reference_outputs(tmp: Path, splits: dict[str, PreparedData], result: Any) -> dict[str, Any]:
    """Write a reference model's predictions, model.npz and metrics.json into tmp; the summary."""
    from timoe.evaluation.metrics import classification_metrics

    n_classes = result.model.n_classes
    summary: dict[str, Any] = {}
    rows = []
    for name, part in splits.items():
        prob = result.prob[name]
        pred = prob.argmax(axis=1) if len(prob) else np.zeros(0, dtype=np.int64)
        summary |= {f"{name}_{k}": v for k, v in classification_metrics(part.label, pred, n_classes).items()}
        rows.append(_split_predictions(name, part, prob, pred))
    # timings end in "seconds": `timoe audit reproduce` leaves them out of its comparison
    summary |= {
        "fit_seconds": result.fit_s,
        "predict_seconds": result.predict_s["test"],
        "val_predict_seconds": result.predict_s["val"],
        "ridge_alpha": result.model.alpha,
        "n_features": int(result.model.coef.shape[1]),
    }
    pl.concat(rows).write_parquet(tmp / "predictions.parquet")
    result.model.save(tmp / REFERENCE_MODEL_FILE)
    return summary


def _run_reference(params: Params, job: TrainJob) -> dict[str, Any]:
    """Train a reference model (MODEL_SPECS kind "reference", e.g. minirocket) like a neural one:
    the same kept training windows and splits, one MLflow run with lineage, predictions.parquet in
    the same schema (prob: softmax of the ridge scores), metrics.json; no sweep, prior, epochs,
    checkpoint or routing diagnostics."""
    import mlflow

    from timoe.training.reference import fit_reference

    data = load_prepared(job.data_dir)
    tr, splits = data.subset("train"), {"val": data.subset("val"), "test": data.subset("test")}
    keep = subsample(len(tr.label), params.train.max_train_windows, job.seed)
    resolved, _, inputs = _lineage(params, {}, job, None)
    with (
        atomic_dir(job.out_dir) as tmp,
        tracked_run(
            uri=params.tracking.uri,
            experiment=experiment_name(params.tracking.experiment_prefix, "train", job.dataset),
            stage="train",
            full_params=params.model_dump(),
            config=resolved,
            out_dir=tmp,
            inputs=inputs,
            wildcards={"dataset": job.dataset, "model": job.model, "seed": job.seed},
            seed=job.seed,
            device="cpu",
            run_name=f"train/{job.dataset}/{job.model}/seed{job.seed}",
        ) as run,
    ):
        result = fit_reference(params, tr, keep, splits, job.seed)
        summary = _reference_outputs(tmp, splits, result)
        summary["n_train_windows"] = len(keep)
        save_json(
            tmp / "metrics.json",
            {
                **summary,
                "history": [],  # no epochs
                "dataset": job.dataset,
                "model": job.model,
                "seed": job.seed,
                "run_id": run.info.run_id,
                "classes": data.meta["classes"],
            },
        )
        mlflow.log_metrics({k: float(v) for k, v in summary.items() if np.isfinite(v)})
        log_artifacts_from([tmp / "metrics.json"])
    return summary


def run_train(params: Params, job: TrainJob, *, progress: bool = False) -> dict[str, Any]:
    """Train one model; write model.pt, predictions.parquet, metrics.json, curves.png atomically."""
    from timoe.models.model import MODEL_SPECS

    _check_seed(job.seed)
    params = params.for_dataset(job.dataset)  # the data set's own settings (per_dataset) apply
    if job.model in MODEL_SPECS and not MODEL_SPECS[job.model].neural:
        return _run_reference(params, job)
    setup = _set_up(params, job)
    with atomic_dir(job.out_dir) as tmp, _tracked_train_run(params, job, setup, tmp) as run:
        # A killed earlier run of this job ends as KILLED; this run takes over its curve.
        chain = ResumeChain(job.checkpoint_dir, run.info.run_id)
        result = _fit(setup, chain, progress)
        # A run killed after its last epoch resumes with no epoch left to log: adopt it here.
        chain.first_epoch(result.resumed_from_epoch or 0)
        summary = _write_outputs(tmp, setup, job, result, run.info.run_id)
    if setup.checkpoint is not None and setup.checkpoint.exists():
        # Finished: a later run with the same key must start fresh, not "resume" at the end.
        setup.checkpoint.unlink()
    chain.finished()
    return summary
