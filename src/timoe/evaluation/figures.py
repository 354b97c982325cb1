"""Figures of the benchmark report, each a PNG written from saved stage outputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from timoe.evaluation.metrics import confusion
from timoe.plotting import matplotlib_agg

# Saved at 150 dpi and >= 6 in wide: every figure is at least 900 px wide, so the report shows it at
# ~900 px without upscaling (at 100 dpi, squeezed to 520 px, the tick labels were unreadable).
DPI = 150

# What to look at in each kind of figure: the caption under it in the report.
CAPTIONS = {
    "confusion": "Rows are the true classes, columns the predictions, each row normalised to 1 and "
    "pooled over seeds. Look at the off-diagonal cells: they show which classes the model confuses.",
    "curves": "Left: training loss per epoch; right: validation accuracy, one line per seed. A loss "
    "still falling at the last epoch means more epochs could help; seeds far apart mean an unstable run.",
    "experts": "Share of top-k assignments per expert for the tokens of each interaction regime (test "
    "split). Guided routing shows different bars per regime (synergy tokens on the synergy experts); "
    "bars of equal height in every regime mean the router ignores the regime.",
    "rus": "Redundancy R, uniqueness U1/U2 and synergy S (bits) of each modality pair against the lag, "
    "on the training split. Look at the lags where a component stands out: there the prior steers "
    "routing; flat lines mean the prior is the same at every step.",
    "sweep": "Validation metric of each sweep trial (dots) and the best so far (line). A best-so-far "
    "line still rising at the last trial means the sweep was too short.",
    "levels": "Test accuracy of each model (dot) with its 95 % interval over test subjects × seeds "
    "(bar), one panel per data set; the reference model (MiniRocket + ridge) in orange, its "
    "interval shaded across the panel. A model whose bar lies left of the band is below what the "
    "practitioner's first tool reaches on the same windows.",
}


def confusion_figure(preds: dict[str, pl.DataFrame], classes: list[str], title: str, path: Path) -> Path:
    """Row-normalised test confusion matrix, pooled over the seeds in `preds`."""
    plt = matplotlib_agg()
    cm = sum(confusion(p["label"].to_numpy(), p["pred"].to_numpy(), len(classes)) for p in preds.values())
    norm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(max(6.0, 0.6 * len(classes) + 3), 0.5 * len(classes) + 2.5))
    ax.imshow(norm, vmin=0, vmax=1, cmap="Blues")
    ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(len(classes)), classes, fontsize=8)
    for i in range(len(classes)):
        for j in range(len(classes)):
            ax.text(
                j,
                i,
                f"{norm[i, j]:.2f}",
                ha="center",
                va="center",
                fontsize=8,
                color="white" if norm[i, j] > 0.5 else "black",
            )
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def curves_figure(histories: dict[str, list[dict[str, float]]], title: str, path: Path) -> Path:
    """Training loss and validation accuracy per epoch, one line per run."""
    plt = matplotlib_agg()
    fig, ax = plt.subplots(1, 2, figsize=(8, 3.4))
    for label, hist in sorted(histories.items()):
        ep = [h["epoch"] for h in hist]
        ax[0].plot(ep, [h["train_loss"] for h in hist], label=label)
        ax[1].plot(ep, [h["val_accuracy"] for h in hist], label=label)
    ax[0].set_title("train loss", fontsize=10)
    ax[1].set_title("validation accuracy", fontsize=10)
    for a in ax:
        a.set_xlabel("epoch")
    ax[1].legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def rus_figure(table: pl.DataFrame, title: str, path: Path) -> Path:
    """R, U1, U2, S against lag, one panel per modality pair."""
    plt = matplotlib_agg()
    pairs = sorted(table["pair"].unique().to_list())
    fig, axes = plt.subplots(1, len(pairs), figsize=(max(6, 4 * len(pairs)), 3.5), squeeze=False)
    for ax, pair in zip(axes[0], pairs, strict=True):
        sub = table.filter(pl.col("pair") == pair).sort("lag")
        for comp in ("R", "U1", "U2", "S"):
            ax.plot(sub["lag"].to_list(), sub[comp].to_list(), marker="o", label=comp)
        ax.set_title(pair, fontsize=9)
        ax.set_xlabel("lag (steps)")
        ax.set_ylabel("bits")
    axes[0][-1].legend(fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def expert_usage_figure(routing: dict[str, dict], title: str, path: Path) -> Path | None:
    """Share of top-k assignments per expert, by interaction regime (from routing.json files).

    routing.json carries `regimes`: {regime: {"usage": per-expert fractions, "assignments": n}}
    for models with a RUS prior; for others there is nothing to split by, and no figure is drawn.
    """
    usage: dict[str, np.ndarray] = {}
    for data in routing.values():
        for regime, entry in (data.get("regimes") or {}).items():
            arr = np.asarray(entry["usage"], dtype=float).reshape(-1) * float(entry["assignments"])
            usage[regime] = usage.get(regime, np.zeros_like(arr)) + arr
    if not usage:
        return None
    plt = matplotlib_agg()
    fig, ax = plt.subplots(figsize=(6, 3))
    width = 0.8 / len(usage)
    for i, (regime, counts) in enumerate(sorted(usage.items())):
        share = counts / max(counts.sum(), 1)
        ax.bar(np.arange(len(share)) + i * width, share, width=width, label=regime)
    ax.set_xlabel("expert")
    ax.set_ylabel("share of assignments")
    ax.legend(fontsize=7)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def sweep_history_figure(trials_csv: dict[str, Path], title: str, path: Path) -> Path | None:
    """Objective value per trial and best-so-far, one line per study."""
    plt = matplotlib_agg()
    fig, ax = plt.subplots(figsize=(6, 3))
    drawn = False
    for label, csv in sorted(trials_csv.items()):
        try:
            df = pl.read_csv(csv)
        except pl.exceptions.NoDataError:  # a model without a search space ran no trial
            continue
        if "value" not in df.columns or df.is_empty():
            continue
        df = df.filter(pl.col("value").is_not_null()).sort("number")
        if df.is_empty():
            continue
        ax.plot(df["number"].to_list(), df["value"].to_list(), "o", alpha=0.5, label=f"{label} trials")
        ax.plot(df["number"].to_list(), np.maximum.accumulate(df["value"].to_numpy()), label=f"{label} best")
        drawn = True
    if not drawn:
        plt.close(fig)
        return None
    ax.set_xlabel("trial")
    ax.set_ylabel("validation metric")
    ax.legend(fontsize=6)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def levels_figure(levels: pl.DataFrame, reference: str, path: Path) -> Path | None:
    """Accuracy per model × data set with its interval (evaluation.reference.accuracy_levels rows:
    dataset, model, value, low, high in %), the reference model marked; None without rows."""
    if levels.is_empty():
        return None
    plt = matplotlib_agg()
    datasets = sorted(levels["dataset"].unique().to_list())
    n_models = max(levels.group_by("dataset").len()["len"].to_list())
    fig, axes = plt.subplots(
        1, len(datasets), figsize=(max(6.0, 4.2 * len(datasets)), 0.32 * n_models + 1.6), squeeze=False
    )
    for ax, ds in zip(axes[0], datasets, strict=True):
        sub = levels.filter(pl.col("dataset") == ds).sort("value")
        names = sub["model"].to_list()
        y = np.arange(len(names))
        value, low, high = (sub[c].to_numpy() for c in ("value", "low", "high"))
        colours = ["tab:orange" if m == reference else "tab:blue" for m in names]
        for i, colour in enumerate(colours):  # errorbar takes one colour per call
            err = [[value[i] - low[i]], [high[i] - value[i]]]
            ax.errorbar(value[i], y[i], xerr=err, color=colour, fmt="o", markersize=4, capsize=2)
        if reference in names:
            i = names.index(reference)
            ax.axvspan(low[i], high[i], color="tab:orange", alpha=0.15, lw=0)
        ax.set_yticks(y, names, fontsize=8)
        ax.set_xlabel("test accuracy (%)")
        ax.set_title(ds, fontsize=10)
        ax.grid(axis="x", alpha=0.3)
    fig.suptitle("Test accuracy per model, 95 % interval (subjects × seeds)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path
