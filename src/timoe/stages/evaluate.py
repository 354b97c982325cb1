"""The evaluate stage: test metrics per data set × model × seed, and mean ± std over seeds."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from timoe.atomic import atomic_dir
from timoe.config import Params
from timoe.evaluation.metrics import accuracy, macro_f1
from timoe.stages.common import save_json
from timoe.tracking import experiment_name, log_artifacts_from, tracked_run


def score_run(model_dir: Path) -> dict[str, Any]:
    """Score one train output from its saved test predictions."""
    model_dir = Path(model_dir)
    meta_path, pred_path = model_dir / "metrics.json", model_dir / "predictions.parquet"
    for p in (meta_path, pred_path):
        if not p.exists():
            raise FileNotFoundError(f"train output {p} is missing")
    meta = json.loads(meta_path.read_text())
    preds = pl.read_parquet(pred_path).filter(pl.col("split") == "test")
    y, yhat = preds["label"].to_numpy(), preds["pred"].to_numpy()
    n_classes = len(meta["classes"])
    return {
        "dataset": meta["dataset"],
        "model": meta["model"],
        "seed": int(meta["seed"]),
        "accuracy": accuracy(y, yhat),
        "macro_f1": macro_f1(y, yhat, n_classes),
        "n_test": len(y),
        "run_id": meta.get("run_id", ""),
    }


def summarise(runs: pl.DataFrame, metrics: list[str]) -> pl.DataFrame:
    aggs = [pl.len().alias("n_seeds")]
    for m in metrics:
        aggs += [pl.col(m).mean().alias(f"{m}_mean"), pl.col(m).std(ddof=1).fill_null(0.0).alias(f"{m}_std")]
    return runs.group_by(["dataset", "model"]).agg(aggs).sort(["dataset", "model"])


def to_markdown(summary: pl.DataFrame, metrics: list[str]) -> str:
    head = "| data set | model | seeds | " + " | ".join(metrics) + " |"
    sep = "|---|---|---|" + "---|" * len(metrics)
    lines = ["# Test metrics (mean ± std over seeds)", "", head, sep]
    for r in summary.iter_rows(named=True):
        cells = [f"{100 * r[f'{m}_mean']:.2f} ± {100 * r[f'{m}_std']:.2f}" for m in metrics]
        lines.append(f"| {r['dataset']} | {r['model']} | {r['n_seeds']} | " + " | ".join(cells) + " |")
    lines.append("")
    lines.append("Values in %. Standard deviation with ddof=1 (0 for a single seed).")
    return "\n".join(lines) + "\n"


def run_evaluate(params: Params, *, model_dirs: list[Path], out_dir: Path) -> pl.DataFrame:
    if not model_dirs:
        raise ValueError("evaluate needs at least one train output")
    metrics = list(params.evaluate.metrics)
    with atomic_dir(out_dir) as tmp:
        import mlflow

        with tracked_run(
            uri=params.tracking.uri,
            experiment=experiment_name(params.tracking.experiment_prefix, "evaluate", None),
            stage="evaluate",
            full_params=params.model_dump(),
            config={"evaluate": params.evaluate.model_dump()},
            out_dir=tmp,
            inputs={f"model{i}": Path(d) for i, d in enumerate(model_dirs)},
            run_name="evaluate",
        ):
            runs = pl.DataFrame([score_run(d) for d in model_dirs]).sort(["dataset", "model", "seed"])
            summary = summarise(runs, metrics)
            runs.write_csv(tmp / "runs.csv")
            summary.write_csv(tmp / "metrics.csv")
            (tmp / "metrics.md").write_text(to_markdown(summary, metrics))
            save_json(tmp / "summary.json", summary.to_dicts())
            for r in summary.iter_rows(named=True):
                for m in metrics:
                    val = r[f"{m}_mean"]
                    if val is not None and np.isfinite(val):
                        mlflow.log_metric(f"{r['dataset']}.{r['model']}.{m}_mean", float(val))
            log_artifacts_from([tmp / "metrics.csv", tmp / "metrics.md", tmp / "runs.csv"])
    return summary
