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
from timoe.config import ConfigError, Params, RusConfig
from timoe.data.io import PreparedData, load_prepared
from timoe.device import pick_device
from timoe.plotting import matplotlib_agg
from timoe.stage_specs import recorded_config
from timoe.stages.common import save_json
from timoe.tracking import experiment_name, log_artifacts_from, tracked_run
from timoe.training.build import CONTEXTS_FILE, DATASET_RUS_TABLE, RUS_TABLE

COMPONENTS = ("R", "U1", "U2", "S")


def labels_constant_within_windows(step_labels: np.ndarray) -> bool:
    """True when no window's per-step label sequence changes (ignored steps, -1, aside)."""
    y = np.asarray(step_labels)
    valid = (y[:, 1:] >= 0) & (y[:, :-1] >= 0)
    return bool(np.all((y[:, 1:] == y[:, :-1]) | ~valid))


def plot_heatmaps(table: pl.DataFrame, names: list[str], counts: list[int], out: Path) -> list[Path]:
    """One PNG per modality pair: a panel per context (R, U1, U2, S rows × lag columns, values
    written in the cells), at most 4 panels a row, one colour scale shared by all panels so the
    contexts compare at a glance."""
    plt = matplotlib_agg()
    paths = []
    for pair in sorted(table["pair"].unique().to_list()):
        sub = table.filter(pl.col("pair") == pair)
        vmax = max(float(sub.select(COMPONENTS).to_numpy().max()), 1e-9)
        lags = sorted(sub["lag"].unique().to_list())
        k = len(names)
        ncols = min(k, 4)
        nrows = -(-k // ncols)
        size = (0.55 * len(lags) * ncols + 1.5 * ncols + 1, 2.6 * nrows + 0.6)
        fig, axes = plt.subplots(nrows, ncols, figsize=size, squeeze=False, layout="constrained")
        for c, ax in enumerate(axes.flat):
            if c >= k:
                ax.set_axis_off()
                continue
            grid = sub.filter(pl.col("context") == c).sort("lag").select(COMPONENTS).to_numpy().T
            im = ax.imshow(grid, aspect="auto", cmap="viridis", vmin=0.0, vmax=vmax)
            if len(lags) <= 8:
                for (i, j), v in np.ndenumerate(grid):
                    ax.text(
                        j,
                        i,
                        f"{v:.2f}",
                        ha="center",
                        va="center",
                        fontsize=6,
                        color="black" if v > 0.6 * vmax else "white",
                    )
            ax.set_yticks(range(len(COMPONENTS)), COMPONENTS)
            ax.set_xticks(range(len(lags)), [str(v) for v in lags], fontsize=7)
            ax.set_xlabel("lag (steps)", fontsize=8)
            ax.set_title(f"{names[c]} (n={counts[c]})", fontsize=9)
        fig.suptitle(f"RUS over lags per context: {pair} (bits, train split)", fontsize=10)
        fig.colorbar(im, ax=axes, shrink=0.8)
        path = out / f"rus_{pair.replace('|', '__')}.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        paths.append(path)
    return paths


def context_channels(modalities: dict[str, list[int]]) -> list[int]:
    """The channels the context features read: every modality's, in modality order."""
    return [c for chans in modalities.values() for c in chans]


def rus_by_context(
    x: np.ndarray,
    step_labels: np.ndarray,
    window_labels: np.ndarray,
    ids: np.ndarray,
    names: list[str],
    modalities: dict[str, list[int]],
    rc: RusConfig,
    seed: int,
    precomputed: pl.DataFrame | None = None,
) -> tuple[pl.DataFrame, list[float]]:
    """compute_temporal_rus on each context's training windows; rows gain an int `context` column.

    x: [N, T, C] training windows; step_labels [N, T]; window_labels, ids: [N].  A (context, lag)
    resting on fewer than rc.min_context_samples samples raises ValueError rather than entering the
    table: a PID on a handful of samples is noise the router would take for structure.  Returns the
    table (context-major, then pair, lag; no `seconds` column, see run_quantify) and the seconds
    each context took.  `precomputed`: the table over all N windows (without `seconds`), reused
    for a context that holds every window instead of estimating it again.
    """
    from timoe.interactions.temporal import compute_temporal_rus

    frames, seconds = [], []
    for c, name in enumerate(names):
        rows = np.flatnonzero(ids == c)
        if len(rows) == 0:
            raise ValueError(f"context {name} holds no training windows")
        t0 = time.perf_counter()
        if precomputed is not None and len(rows) == len(ids):  # one context = all windows: same table
            table = precomputed
        else:
            table = compute_temporal_rus(
                x[rows],
                step_labels[rows],
                modalities,
                rc,
                window_labels=window_labels[rows],
                seed=seed,
                feature=rc.feature,
            ).drop("seconds")
        seconds.append(time.perf_counter() - t0)
        _check_samples(table, name, len(rows), rc.min_context_samples)
        frames.append(table.with_columns(pl.lit(c, dtype=pl.Int64).alias("context")))
    table = pl.concat(frames)
    return table.select("context", *[c for c in table.columns if c != "context"]), seconds


def _check_samples(table: pl.DataFrame, name: str, n_windows: int, minimum: int) -> None:
    thin = table.filter(pl.col("n_samples") < minimum).unique("lag").sort("lag")
    if thin.height:
        detail = ", ".join(f"lag {r['lag']}: {r['n_samples']}" for r in thin.iter_rows(named=True))
        raise ConfigError(
            f"context {name} ({n_windows} training windows) has too few samples for a RUS "
            f"estimate ({detail}; rus.min_context_samples={minimum}): lower rus.n_contexts, "
            "raise rus.min_context_windows, or drop the long lags"
        )


def _metrics(table: pl.DataFrame, dataset_table: pl.DataFrame, names: list[str]) -> dict[str, float]:
    """Dataset-level rows under today's names (R.acc_gyro.lag0), per-context ones with the context
    name appended (R.acc_gyro.lag0.ctx1)."""
    metrics = {}
    for frame, contextual in ((dataset_table, False), (table, True)):
        for row in frame.iter_rows(named=True):
            suffix = f".{names[row['context']]}" if contextual else ""
            for c in (*COMPONENTS, "total"):
                metrics[f"{c}.{row['pair'].replace('|', '_')}.lag{row['lag']}{suffix}"] = float(row[c])
    return metrics


def estimate(params: Params, train: PreparedData) -> dict[str, Any]:
    """The stage's computation on the training split: dataset-level table, contexts, per-context table.

    Returns {"dataset_table", "spec", "table", "seconds": {...}}; nothing here sees another split.
    """
    from timoe.interactions.contexts import fit_contexts
    from timoe.interactions.temporal import compute_temporal_rus

    rc, seed = params.rus, params.data.seed
    modalities = {m: list(ch) for m, ch in train.meta["modalities"].items()}
    t0 = time.perf_counter()
    dataset_table = compute_temporal_rus(
        train.x, train.step_labels, modalities, rc, window_labels=train.label, seed=seed, feature=rc.feature
    ).drop("seconds")
    t1 = time.perf_counter()
    spec, ids = fit_contexts(
        train.x,
        train.subject,
        context_channels(modalities),
        rc.scope,
        rc.n_contexts,
        seed,
        min_size=rc.min_context_windows,
    )
    t2 = time.perf_counter()
    table, per_context = rus_by_context(
        train.x,
        train.step_labels,
        train.label,
        ids,
        spec.names,
        modalities,
        rc,
        seed,
        precomputed=dataset_table,
    )
    seconds = {
        "dataset_table": t1 - t0,
        "fit_contexts": t2 - t1,
        "per_context": per_context,
        "total": time.perf_counter() - t0,
    }
    return {"dataset_table": dataset_table, "spec": spec, "ids": ids, "table": table, "seconds": seconds}


def _warn_if_directed_is_degenerate(rc: RusConfig, train: PreparedData) -> None:
    """Warn (stderr and an MLflow tag) when the directed form can only give zeros."""
    import mlflow

    if rc.form == "directed" and labels_constant_within_windows(train.step_labels):
        # true for any rus.past_horizon: Y_{t-h} lies in the same window, so it fixes Y_t too
        note = (
            "rus.form is 'directed' but every training window holds one label, so Y_t is "
            "determined by Y_{t-1} (and by Y_{t-h} for any rus.past_horizon h) and all "
            "directed RUS terms are 0; use 'lagged_mi' here"
        )
        print(f"timoe: warning: {note}", file=sys.stderr)
        mlflow.set_tag("warning", note)


def _quantify_summary(
    rc: RusConfig, spec: Any, table: pl.DataFrame, seconds: dict[str, Any], n_train: int
) -> dict[str, Any]:
    """summary.json: table size, timings, the estimator and form, and the fitted contexts."""
    return {
        "n_rows": table.height,
        "seconds": seconds["total"],
        "seconds_detail": seconds,
        "n_train_windows": n_train,
        "estimator": rc.estimator,
        "form": rc.form,
        # the past the directed form conditions on (Y_{t-h}); None for lagged_mi
        "past_horizon": rc.past_horizon if rc.form == "directed" else None,
        "scope": spec.scope,
        "n_contexts": spec.n_contexts,
        "counts": spec.counts,
        "context_names": spec.names,
        "contexts_note": spec.note,
    }


def _write_estimates(tmp: Path, res: dict[str, Any]) -> list[Path]:
    """rus.parquet, rus_dataset.parquet, contexts.json and the heatmaps; the heatmaps' paths."""
    spec, table = res["spec"], res["table"]
    table.write_parquet(tmp / RUS_TABLE)
    res["dataset_table"].write_parquet(tmp / DATASET_RUS_TABLE)
    save_json(tmp / CONTEXTS_FILE, spec.to_json())
    return plot_heatmaps(table, spec.names, spec.counts, tmp)


def _log_estimates(tmp: Path, res: dict[str, Any], figs: list[Path]) -> None:
    """Log timings, context sizes and every RUS value as metrics; the files as artifacts."""
    import mlflow

    spec, table, seconds = res["spec"], res["table"], res["seconds"]
    metrics = {"seconds": seconds["total"], "n_contexts": float(spec.n_contexts)}
    metrics |= {f"n_windows.{n}": float(k) for n, k in zip(spec.names, spec.counts, strict=True)}
    mlflow.log_metrics(metrics | _metrics(table, res["dataset_table"], spec.names))
    log_artifacts_from([tmp / "summary.json", tmp / CONTEXTS_FILE, *figs])
    log_artifacts_from([tmp / RUS_TABLE, tmp / DATASET_RUS_TABLE], artifact_path="tables")


def run_quantify(params: Params, *, dataset: str, data_dir: Path, out_dir: Path) -> dict[str, Any]:
    """Fit contexts on the training split, then RUS per context and over all training windows.

    Writes rus.parquet (column `context` 0..K−1 first, then compute_temporal_rus's columns),
    rus_dataset.parquet (all training windows, no `context`), contexts.json (ContextSpec.to_json),
    one heatmap per pair, summary.json.  The tables leave out compute_temporal_rus's wall-time
    column `seconds` so that identical inputs give byte-identical files (the leak-free test relies
    on it); timings go to summary.json.
    """
    rc = params.rus
    data = load_prepared(data_dir)
    train = data.subset("train")  # the only split this stage may read
    device = pick_device(rc.device)
    with (
        atomic_dir(out_dir) as tmp,
        tracked_run(
            uri=params.tracking.uri,
            experiment=experiment_name(params.tracking.experiment_prefix, "quantify", dataset),
            stage="quantify",
            full_params=params.model_dump(),
            config=recorded_config(params, "quantify", dataset=dataset),
            out_dir=tmp,
            inputs={"data": data_dir},
            wildcards={"dataset": dataset},
            seed=params.data.seed,
            device=str(device),
            run_name=f"quantify/{dataset}",
        ),
    ):
        import mlflow

        _warn_if_directed_is_degenerate(rc, train)
        res = estimate(params, train)
        spec = res["spec"]
        if spec.note:
            print(f"timoe: note: contexts: {spec.note}", file=sys.stderr)
            mlflow.set_tag("contexts_note", spec.note)
        figs = _write_estimates(tmp, res)
        summary = _quantify_summary(rc, spec, res["table"], res["seconds"], len(train.label))
        save_json(tmp / "summary.json", summary)
        _log_estimates(tmp, res, figs)
    return summary
