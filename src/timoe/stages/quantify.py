"""The quantify stage: temporal RUS per modality pair × lag, from the training split only.

Reading only the training split is what makes the estimates leak-free: the model later sees
these train-derived interactions at validation and test time, never ones computed from
held-out labels.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from timoe.atomic import atomic_dir
from timoe.config import Params
from timoe.data.io import load_prepared
from timoe.device import pick_device
from timoe.stages.common import matplotlib_agg, save_json
from timoe.tracking import experiment_name, log_artifacts_from, tracked_run

COMPONENTS = ("R", "U1", "U2", "S")


def labels_constant_within_windows(step_labels: np.ndarray) -> bool:
    """True when no window's per-step label sequence changes (ignored steps, -1, aside)."""
    y = np.asarray(step_labels)
    valid = (y[:, 1:] >= 0) & (y[:, :-1] >= 0)
    return bool(np.all((y[:, 1:] == y[:, :-1]) | ~valid))


def plot_heatmaps(table: pl.DataFrame, out: Path) -> list[Path]:
    """One PNG per modality pair: R, U1, U2, S (rows) over lags (columns)."""
    plt = matplotlib_agg()
    paths = []
    for pair in sorted(table["pair"].unique().to_list()):
        sub = table.filter(pl.col("pair") == pair).sort("lag")
        grid = sub.select(COMPONENTS).to_numpy().T
        fig, ax = plt.subplots(figsize=(max(4, 0.6 * grid.shape[1] + 2), 2.8))
        im = ax.imshow(grid, aspect="auto", cmap="viridis")
        ax.set_yticks(range(len(COMPONENTS)), COMPONENTS)
        ax.set_xticks(range(grid.shape[1]), [str(v) for v in sub["lag"].to_list()])
        ax.set_xlabel("lag (steps)")
        ax.set_title(f"RUS over lags: {pair} (bits)")
        fig.colorbar(im, ax=ax)
        fig.tight_layout()
        path = out / f"rus_{pair.replace('|', '__')}.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        paths.append(path)
    return paths


def run_quantify(params: Params, *, dataset: str, data_dir: Path, out_dir: Path) -> dict[str, Any]:
    from timoe.interactions.temporal import compute_temporal_rus

    rc = params.rus
    data = load_prepared(data_dir)
    train = data.subset("train")  # the only split this stage may read
    modalities = {m: list(ch) for m, ch in data.meta["modalities"].items()}
    device = pick_device(rc.device)
    with atomic_dir(out_dir) as tmp:
        import mlflow

        with tracked_run(
            uri=params.tracking.uri,
            experiment=experiment_name(params.tracking.experiment_prefix, "quantify", dataset),
            stage="quantify",
            full_params=params.model_dump(),
            config={"rus": rc.model_dump()},
            out_dir=tmp,
            inputs={"data": data_dir},
            wildcards={"dataset": dataset},
            seed=params.data.seed,
            device=str(device),
            run_name=f"quantify/{dataset}",
        ):
            if rc.form == "directed" and labels_constant_within_windows(train.step_labels):
                note = ("rus.form is 'directed' but every training window holds one label, so Y_t is "
                        "determined by Y_{t-1} and all directed RUS terms are 0; use 'lagged_mi' here")
                print(f"timoe: warning: {note}", file=sys.stderr)
                mlflow.set_tag("warning", note)
            started = time.time()
            table = compute_temporal_rus(
                train.x,
                train.step_labels,
                modalities,
                rc,
                window_labels=train.label,
                seed=params.data.seed,
                feature=rc.feature,
            )
            elapsed = time.time() - started
            table.write_parquet(tmp / "rus.parquet")
            figs = plot_heatmaps(table, tmp)
            summary = {
                "n_rows": table.height,
                "seconds": elapsed,
                "n_train_windows": len(train.label),
                "estimator": rc.estimator,
                "form": rc.form,
            }
            save_json(tmp / "summary.json", summary)
            metrics = {"seconds": elapsed}
            for row in table.iter_rows(named=True):
                for c in (*COMPONENTS, "total"):
                    metrics[f"{c}.{row['pair'].replace('|', '_')}.lag{row['lag']}"] = float(row[c])
            mlflow.log_metrics(metrics)
            log_artifacts_from([tmp / "summary.json", *figs])
            log_artifacts_from([tmp / "rus.parquet"], artifact_path="tables")
    return summary
