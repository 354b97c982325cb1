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
from timoe.data.io import load_prepared
from timoe.device import pick_device
from timoe.overrides import apply_overrides
from timoe.plotting import matplotlib_agg
from timoe.stages.common import read_best_params, save_json, stable_hash
from timoe.tracking import ResumeChain, content_hash, experiment_name, log_artifacts_from, tracked_run
from timoe.training.build import build_for_data, load_rus_table, regime_channels, subsample
from timoe.training.loop import NON_FINITE_HINT, LoopSettings, predict, train
from timoe.training.seeding import seed_everything


@dataclass(frozen=True)
class TrainJob:
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
    usage per interaction regime of the test windows' average prior; and the accuracy lost when
    routing is replaced by uniform-random routing ("does routing matter")."""
    from timoe.models import interaction_regime_usage
    from timoe.models.diagnostics import RoutingDiagnostics, random_routing
    from timoe.models.prior import regime_of

    inner = getattr(model, "inner", model)
    model.eval()
    stats, diag, priors = None, None, []
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
        if prior is not None:
            priors.append((prior, len(xb)))
    if stats is None or diag is None:
        return None
    modality_names = list(meta["modalities"])
    summary: dict[str, Any] = {"stats": stats.to_dict(modality_names)}
    if priors:
        mean = _mean_prior(priors, tuple(modality_names))
        summary |= interaction_regime_usage(stats, mean, params.model.losses, modality_names)
    accuracy = _accuracy(model, x, labels, device)
    with random_routing(model, seed=0):
        random_accuracy = _accuracy(model, x, labels, device)
    summary["diagnostics"] = {
        "per_layer": diag.summary(),
        "accuracy": accuracy,
        "random_routing_accuracy": random_accuracy,
        "random_routing_drop": accuracy - random_accuracy,
    }
    summary["synergy_chance"] = inner.n_synergy / params.model.n_experts
    summary["topk_overlap_chance"] = params.model.top_k / params.model.n_experts
    return summary


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


def run_train(params: Params, job: TrainJob, *, progress: bool = False) -> dict[str, Any]:
    """Train one model; write model.pt, predictions.parquet, metrics.json, curves.png atomically."""
    if not 0 <= job.seed < SEED_LIMIT:  # --seed bypasses train.seeds' check; numpy would fail late
        raise ConfigError(f"seed {job.seed} outside 0..{SEED_LIMIT - 1}")
    overrides = read_best_params(job.sweep_dir) if params.train.use_sweep else {}
    eff = apply_overrides(params, overrides) if overrides else params
    tc = eff.train
    data = load_prepared(job.data_dir)
    meta = data.meta
    tr, va, te = data.subset("train"), data.subset("val"), data.subset("test")
    keep = subsample(len(tr.label), tc.max_train_windows, job.seed)
    rus = load_rus_table(job.rus_dir, job.model)
    device = pick_device(tc.device)
    if tc.num_threads:
        torch.set_num_threads(tc.num_threads)  # not left to OMP_NUM_THREADS: numbers depend on it
    seed_everything(job.seed)
    model = build_for_data(eff, job.model, meta, rus, job.seed)
    settings = LoopSettings(
        epochs=tc.epochs,
        batch_size=tc.batch_size,
        lr=tc.lr,
        weight_decay=tc.weight_decay,
        grad_clip=tc.grad_clip,
        warmup_epochs=tc.warmup_epochs,
        patience=tc.patience,
        seed=job.seed,
        **LoopSettings.regularisation_from(tc, shift_unit=eff.model.patch_size),
        regime_channels=tuple(regime_channels(meta)),
    )
    resolved = {
        "data": eff.data.model_dump(),
        "model": eff.model.model_dump(),
        "train": tc.model_dump(),
        "sweep_overrides": overrides,
    }
    key = stable_hash(
        {"cfg": resolved, "job": [job.dataset, job.model, job.seed], "data": content_hash(job.data_dir)}
    )
    ckpt = Path(job.checkpoint_dir) / "last.pt" if job.checkpoint_dir else None
    inputs = {"data": job.data_dir}
    if job.rus_dir is not None and rus is not None:
        inputs["rus"] = job.rus_dir
    if job.sweep_dir is not None and overrides:
        inputs["sweep"] = job.sweep_dir
    with atomic_dir(job.out_dir) as tmp:
        import mlflow

        with tracked_run(
            uri=params.tracking.uri,
            experiment=experiment_name(params.tracking.experiment_prefix, "train", job.dataset),
            stage="train",
            full_params=eff.model_dump(),
            config=resolved,
            out_dir=tmp,
            inputs=inputs,
            wildcards={"dataset": job.dataset, "model": job.model, "seed": job.seed},
            seed=job.seed,
            device=str(device),
            run_name=f"train/{job.dataset}/{job.model}/seed{job.seed}",
        ) as run:
            # A killed earlier run of this job ends as KILLED; this run takes over its curve.
            chain = ResumeChain(job.checkpoint_dir, run.info.run_id)

            def log_epoch(epoch: int, m: dict[str, float]) -> None:
                chain.first_epoch(epoch)
                mlflow.log_metrics({k: v for k, v in m.items() if np.isfinite(v)}, step=epoch)
                # One line per epoch in the job's log: progress bars are off when not on a terminal.
                print(
                    f"epoch {epoch + 1}/{settings.epochs} train_loss {m.get('train_loss', float('nan')):.4f}"
                    f" val_accuracy {m.get('val_accuracy', float('nan')):.4f}",
                    file=sys.stderr,
                    flush=True,
                )

            result = train(
                model,
                tr.x[keep],
                tr.label[keep],
                va.x,
                va.label,
                len(meta["classes"]),
                settings,
                device,
                checkpoint=ckpt,
                checkpoint_key=key,
                on_epoch=log_epoch,
                progress=progress,
            )
            # A run killed after its last epoch resumes with no epoch left to log: adopt it here.
            chain.first_epoch(result.resumed_from_epoch or 0)
            n_classes = len(meta["classes"])
            rows = []
            summary: dict[str, Any] = {
                "best_epoch": result.best_epoch,
                "epochs_run": len(result.history),
                "resumed_from_epoch": result.resumed_from_epoch,
            }
            from timoe.evaluation.metrics import classification_metrics

            for split_name, part in (("val", va), ("test", te)):
                prob = predict(model, part.x, device)
                if not np.isfinite(prob).all():  # NaN argmaxes to class 0: a chance-level "result"
                    raise NonFiniteError(
                        f"non-finite {split_name} predictions of the selected model: {NON_FINITE_HINT}"
                    )
                pred = prob.argmax(axis=1) if len(prob) else np.zeros(0, dtype=np.int64)
                for k, v in classification_metrics(part.label, pred, n_classes).items():
                    summary[f"{split_name}_{k}"] = v
                rows.append(
                    pl.DataFrame(
                        {
                            "split": [split_name] * len(pred),
                            "window_id": part.window_id.astype(np.int64),
                            "subject": part.subject.astype(np.int32),
                            "label": part.label.astype(np.int32),
                            "pred": pred.astype(np.int32),
                            "prob": pl.Series(prob.astype(np.float32).tolist(), dtype=pl.List(pl.Float32)),
                        }
                    )
                )
            pl.concat(rows).write_parquet(tmp / "predictions.parquet")
            torch.save(
                {
                    "state_dict": {k: v.cpu() for k, v in model.state_dict().items()},
                    "model": job.model,
                    "config": resolved,
                },
                tmp / "model.pt",
            )
            save_json(
                tmp / "metrics.json",
                {
                    **summary,
                    "history": result.history,
                    "dataset": job.dataset,
                    "model": job.model,
                    "seed": job.seed,
                    "run_id": run.info.run_id,
                    "classes": meta["classes"],
                },
            )
            routing = routing_summary(model, te.x, te.label, n_classes, device, eff, meta)
            if routing is not None:
                d = routing["diagnostics"]
                mlflow.log_metrics(
                    {
                        "test_random_routing_accuracy": d["random_routing_accuracy"],
                        "test_random_routing_drop": d["random_routing_drop"],
                    }
                )
                for row in d["per_layer"]:
                    mlflow.log_metrics(
                        {
                            f"test_{k}_l{row['layer']}": float(v)
                            for k, v in row.items()
                            if k != "layer" and v is not None
                        }
                    )
            if routing is not None:
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
    if ckpt is not None and ckpt.exists():
        ckpt.unlink()  # finished: a later run with the same key must start fresh, not "resume" at the end
    chain.finished()
    return summary
