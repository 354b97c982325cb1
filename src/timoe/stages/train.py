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
from timoe.config import Params
from timoe.data.io import load_prepared
from timoe.device import pick_device
from timoe.stages.common import (
    apply_overrides,
    matplotlib_agg,
    needs_rus,
    read_best_params,
    save_json,
    stable_hash,
)
from timoe.tracking import content_hash, experiment_name, log_artifacts_from, tracked_run
from timoe.training.loop import LoopSettings, predict, train
from timoe.training.patching import Patched, patched_modalities
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


def load_rus_table(rus_dir: Path | None, model_name: str) -> pl.DataFrame | None:
    if not needs_rus(model_name):
        return None
    if rus_dir is None:
        raise ValueError(f"model {model_name!r} needs the quantify stage's RUS output (--rus)")
    path = Path(rus_dir) / "rus.parquet"
    if not path.exists():
        raise FileNotFoundError(f"RUS table {path} is missing; run the quantify stage first")
    return pl.read_parquet(path)


def build_for_data(
    params: Params, model_name: str, meta: dict[str, Any], rus: pl.DataFrame | None, seed: int
) -> torch.nn.Module:
    """Build a named model for a prepared data set, wrapped in temporal patching."""
    from timoe.models import RusPrior, build_model

    p = params.model.patch_size
    n_steps = int(meta["n_timesteps"]) // p
    modalities = {m: list(ch) for m, ch in meta["modalities"].items()}
    prior = None
    if rus is not None:
        # Lags are in raw steps; the model's time axis is in patches.
        scaled = (
            rus.with_columns((pl.col("lag") // p).alias("lag"))
            .group_by(["pair", "lag"])
            .agg([pl.col(c).mean() for c in ("R", "U1", "U2", "S", "total")])
            .sort(["pair", "lag"])
        )
        prior = RusPrior.from_table(
            scaled, list(modalities), n_steps
        )  # build_model shuffles for the ablation
    torch.manual_seed(seed)
    inner = build_model(
        model_name,
        params.model,
        n_channels=int(meta["n_channels"]) * p,
        n_timesteps=n_steps,
        n_classes=len(meta["classes"]),
        modalities=patched_modalities(modalities, int(meta["n_channels"]), p),
        rus=prior,
    )
    return Patched(inner, p)


def subsample(n: int, limit: int | None, seed: int) -> np.ndarray:
    idx = np.arange(n)
    if limit is None or n <= limit:
        return idx
    return np.sort(np.random.default_rng(seed).choice(n, size=limit, replace=False))


@torch.no_grad()
def routing_summary(
    model: torch.nn.Module,
    x: np.ndarray,
    device: torch.device,
    params: Params,
    modality_names: list[str],
    batch_size: int = 256,
) -> dict[str, Any] | None:
    """Expert usage on the test windows, per modality and (with a RUS prior) per interaction regime."""
    from timoe.models import interaction_regime_usage

    model.eval()
    stats = None
    for i in range(0, len(x), batch_size):
        out = model(torch.from_numpy(x[i : i + batch_size]).to(device))
        if out.routing is None:
            return None  # a dense model has no experts
        stats = out.routing if stats is None else stats.merge(out.routing)
    if stats is None:
        return None
    summary = {"stats": stats.to_dict(modality_names)}
    prior = getattr(getattr(model, "inner", model), "rus", None)
    if prior is not None:
        summary |= interaction_regime_usage(stats, prior, params.model.losses, modality_names)
    return summary


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
        **LoopSettings.regularisation_from(tc),
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

            def log_epoch(epoch: int, m: dict[str, float]) -> None:
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
            routing = routing_summary(model, te.x, device, eff, list(meta["modalities"]))
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
    return summary
