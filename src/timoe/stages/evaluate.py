"""The evaluate stage: test metrics per data set × model × seed, the summary table, the report.

Metrics come from the test predictions each train job saved (model selection never saw them);
figures come from the saved RUS tables, routing statistics, training histories and sweeps.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from timoe.atomic import atomic_dir
from timoe.config import Params
from timoe.evaluation import figures as figs
from timoe.evaluation.claims import ClaimSettings, evaluate_claims, load_checks
from timoe.evaluation.diagnostics import diagnostics_table, run_diagnostics
from timoe.evaluation.metrics import accuracy, macro_f1, per_class_recall
from timoe.evaluation.report import Block, Figure, report_blocks, summary_markdown, write_html, write_markdown
from timoe.evaluation.stats import auroc_ovr, compare_with_best_baseline
from timoe.stage_specs import recorded_config
from timoe.stages.common import save_json
from timoe.tracking import experiment_name, git_state, log_artifacts_from, tracked_run
from timoe.training.build import DATASET_RUS_TABLE, RUS_TABLE


def _read_train_output(model_dir: Path) -> tuple[dict[str, Any], pl.DataFrame]:
    model_dir = Path(model_dir)
    meta_path, pred_path = model_dir / "metrics.json", model_dir / "predictions.parquet"
    for p in (meta_path, pred_path):
        if not p.exists():
            raise FileNotFoundError(f"train output {p} is missing")
    meta = json.loads(meta_path.read_text())
    preds = pl.read_parquet(pred_path).filter(pl.col("split") == "test")
    return meta, preds


def _last_epoch(meta: dict[str, Any], key: str) -> float | None:
    history = meta.get("history") or []
    value = history[-1].get(key) if history else None
    return None if value is None else float(value)


def _routing(model_dir: Path) -> dict[str, Any] | None:
    path = Path(model_dir) / "routing.json"
    return json.loads(path.read_text()) if path.exists() else None


def score_run(model_dir: Path) -> dict[str, Any]:
    """Score one train output from its saved test predictions (and routing diagnostics, if any)."""
    meta, preds = _read_train_output(model_dir)
    y, yhat = preds["label"].to_numpy(), preds["pred"].to_numpy()
    n_classes = len(meta["classes"])
    prob = np.asarray(preds["prob"].to_list(), dtype=float) if preds.height else np.zeros((0, n_classes))
    recall = per_class_recall(y, yhat, n_classes)
    row: dict[str, Any] = {
        "dataset": meta["dataset"],
        "model": meta["model"],
        "seed": int(meta["seed"]),
        "accuracy": accuracy(y, yhat),
        "macro_f1": macro_f1(y, yhat, n_classes),
        "auroc": auroc_ovr(y, prob),
        "n_test": len(y),
        "run_id": meta.get("run_id", ""),
        # Router entropy (nats) over the last epoch's training tokens; ln(n_experts) means the router
        # spreads every token uniformly, i.e. it does not route. None for the dense model.
        "routing_entropy": _last_epoch(meta, "train_routing_entropy"),
    }
    # every diagnostics column on every row (null without routing.json), so the table's schema
    # never depends on which model happened to come first
    row.update(run_diagnostics(_routing(model_dir)))
    for name, r in zip(meta["classes"], recall, strict=True):
        row[f"recall.{name}"] = None if np.isnan(r) else float(r)
    return row


def subject_scores(model_dir: Path) -> pl.DataFrame:
    """Test windows and correct predictions per subject of one run (the claims' bootstrap input):
    columns dataset, model, seed, subject, n, correct."""
    meta, preds = _read_train_output(model_dir)
    per = preds.group_by("subject").agg(
        pl.len().cast(pl.Int64).alias("n"),
        (pl.col("pred") == pl.col("label")).sum().cast(pl.Int64).alias("correct"),
    )
    return per.select(
        pl.lit(meta["dataset"]).alias("dataset"),
        pl.lit(meta["model"]).alias("model"),
        pl.lit(int(meta["seed"])).cast(pl.Int64).alias("seed"),
        pl.col("subject").cast(pl.Int64),
        "n",
        "correct",
    ).sort("subject")


def claim_settings(params: Params) -> ClaimSettings:
    """The claims' statistics settings from params.yaml `evaluate`."""
    ev = params.evaluate
    return ClaimSettings(ev.smallest_effect, ev.power, ev.bootstrap_resamples, ev.bootstrap_seed)


def summarise(runs: pl.DataFrame, metrics: list[str]) -> pl.DataFrame:
    aggs = [pl.len().alias("n_seeds")]
    for m in metrics:
        aggs += [pl.col(m).mean().alias(f"{m}_mean"), pl.col(m).std(ddof=1).fill_null(0.0).alias(f"{m}_std")]
    return runs.group_by(["dataset", "model"]).agg(aggs).sort(["dataset", "model"])


def to_markdown(summary: pl.DataFrame, metrics: list[str]) -> str:
    return (
        "# Test metrics (mean ± std over seeds)\n\n"
        + summary_markdown(summary, metrics)
        + "\n\nValues in %. Standard deviation with ddof=1 (0 for a single seed).\n"
    )


def _recall_table(runs: pl.DataFrame) -> pl.DataFrame:
    cols = [c for c in runs.columns if c.startswith("recall.")]
    if not cols:
        return pl.DataFrame()
    out = runs.group_by(["dataset", "model"]).agg([pl.col(c).mean() for c in cols]).sort(["dataset", "model"])
    return out.rename({c: c.removeprefix("recall.") for c in cols})


def _model_figures(tmp: Path, ds: str, model: str, dirs: list[Path]) -> list[Figure]:
    metas = {d.name: json.loads((d / "metrics.json").read_text()) for d in dirs}
    preds = {d.name: _read_train_output(d)[1] for d in dirs}
    classes = next(iter(metas.values()))["classes"]
    cap = figs.CAPTIONS
    made = [
        Figure(
            figs.confusion_figure(
                preds, classes, f"{ds} / {model}: test confusion", tmp / f"confusion_{ds}_{model}.png"
            ),
            f"{model}: test confusion matrix",
            cap["confusion"],
            ds,
        ),
    ]
    histories = {k: m["history"] for k, m in metas.items() if m["history"]}
    if histories:  # a reference model (minirocket) trains without epochs
        curves = figs.curves_figure(histories, f"{ds} / {model}", tmp / f"curves_{ds}_{model}.png")
        made.append(Figure(curves, f"{model}: training curves", cap["curves"], ds))
    routing = {d.name: r for d in dirs if (r := _routing(d)) is not None}
    usage = figs.expert_usage_figure(
        routing, f"{ds} / {model}: expert usage by interaction regime", tmp / f"experts_{ds}_{model}.png"
    )
    if usage is not None:
        made.append(Figure(usage, f"{model}: expert usage by interaction regime", cap["experts"], ds))
    return made


def _figures(tmp: Path, model_dirs: list[Path], rus_dirs: list[Path], sweep_dirs: list[Path]) -> list[Figure]:
    """Every report figure with its caption, grouped by data set (RUS and sweeps first in each)."""
    made: list[Figure] = []
    for d in rus_dirs:
        ds = Path(d).name
        # The dataset-level table: rus.parquet holds one table per context, which one line per
        # (pair, component) cannot show; the quantify stage's heatmaps show the contexts.
        dataset_table = Path(d) / DATASET_RUS_TABLE
        table = pl.read_parquet(dataset_table if dataset_table.exists() else Path(d) / RUS_TABLE)
        path = figs.rus_figure(table, f"{ds}: RUS over lags (train split)", tmp / f"rus_{ds}.png")
        made.append(Figure(path, "RUS over lags (train split)", figs.CAPTIONS["rus"], ds))
    by_ds: dict[str, dict[str, Path]] = {}
    for d in sweep_dirs:
        d = Path(d)
        if (d / "trials.csv").exists():
            by_ds.setdefault(d.parent.name, {})[d.name] = d / "trials.csv"
    for ds, csvs in sorted(by_ds.items()):
        hist = figs.sweep_history_figure(csvs, f"{ds}: sweep history", tmp / f"sweep_{ds}.png")
        if hist is not None:
            made.append(Figure(hist, "sweep history", figs.CAPTIONS["sweep"], ds))
    groups: dict[tuple[str, str], list[Path]] = {}
    for d in model_dirs:
        meta = json.loads((Path(d) / "metrics.json").read_text())
        groups.setdefault((meta["dataset"], meta["model"]), []).append(Path(d))
    for (ds, model), dirs in sorted(groups.items()):
        made += _model_figures(tmp, ds, model, dirs)
    # stable sort: one section per data set, in name order, figures in the order made
    return sorted(made, key=lambda f: f.group)


@dataclass(frozen=True)
class _Results:
    """The evaluate stage's tables: one row per train run, and what is derived from them."""

    runs: pl.DataFrame  # per data set × model × seed (score_run's rows)
    summary: pl.DataFrame  # mean and std over seeds per data set × model
    tests: pl.DataFrame  # paired tests against the best baseline
    recall: pl.DataFrame  # mean per-class recall per data set × model
    claims: pl.DataFrame  # every claim's verdict
    subjects: pl.DataFrame  # test windows and correct predictions per run × subject
    settings: ClaimSettings  # how the claims were tested (the report states the design)


_TABLE_FILES = (
    "metrics.csv",
    "metrics.md",
    "runs.csv",
    "paired_tests.csv",
    "claims.csv",
    "subject_scores.csv",
    "reference_gaps.csv",
    "accuracy_levels.csv",
    "report.md",
    "report.html",
)


def _evaluate_inputs(
    model_dirs: list[Path],
    rus_dirs: list[Path],
    sweep_dirs: list[Path],
    checks_dir: Path | None,
    has_checks: bool,
) -> dict[str, Path]:
    """The lineage inputs: every train, quantify and sweep output, and the checks folder if used."""
    inputs = {f"model{i}": Path(d) for i, d in enumerate(model_dirs)}
    inputs |= {f"rus{i}": Path(d) for i, d in enumerate(rus_dirs)}
    inputs |= {f"sweep{i}": Path(d) for i, d in enumerate(sweep_dirs)}
    if has_checks:  # one folder input, so `timoe audit reproduce` can pass it back as --checks
        inputs["checks"] = Path(checks_dir)
    return inputs


def _score_all(model_dirs: list[Path], metrics: list[str], checks: Any, settings: ClaimSettings) -> _Results:
    """Score every train output and derive the summary, paired tests, recall and claims."""
    runs = pl.DataFrame([score_run(d) for d in model_dirs]).sort(["dataset", "model", "seed"])
    subjects = pl.concat([subject_scores(d) for d in model_dirs]).sort(
        ["dataset", "model", "seed", "subject"]
    )
    return _Results(
        runs=runs,
        summary=summarise(runs, metrics),
        tests=compare_with_best_baseline(runs, "accuracy"),
        recall=_recall_table(runs),
        claims=evaluate_claims(runs, checks, scores=subjects, settings=settings),
        subjects=subjects,
        settings=settings,
    )


def _write_tables(tmp: Path, results: _Results, metrics: list[str]) -> None:
    """runs.csv, metrics.csv, paired_tests.csv, claims.csv and metrics.md."""
    results.runs.write_csv(tmp / "runs.csv")
    results.summary.write_csv(tmp / "metrics.csv")
    results.tests.write_csv(tmp / "paired_tests.csv")
    results.claims.write_csv(tmp / "claims.csv")
    results.subjects.write_csv(tmp / "subject_scores.csv")
    (tmp / "metrics.md").write_text(to_markdown(results.summary, metrics))


def _reference_section(tmp: Path, results: _Results) -> list[Block]:
    """The report's first section: accuracy levels with intervals (figure) and each model's gap
    to the reference model; writes accuracy_levels.csv and reference_gaps.csv."""
    from timoe.evaluation.reference import REFERENCE, accuracy_levels, gaps_markdown, reference_gaps

    n, seed = results.settings.resamples, results.settings.seed
    levels, gaps = accuracy_levels(results.subjects, n, seed), reference_gaps(results.subjects, n, seed)
    levels.write_csv(tmp / "accuracy_levels.csv")
    gaps.write_csv(tmp / "reference_gaps.csv")
    blocks: list[Block] = [
        "## Where the models stand: against the reference",
        f"The reference is {REFERENCE}: aeon's MiniRocket features and a ridge classifier, what a "
        "practitioner runs first on sensor windows, trained on the same training windows and seeds "
        "as every model, without routing. Accuracy minus the reference's, paired by seed and test "
        "subject; 95 % intervals from the subjects × seeds bootstrap (t reference, Satterthwaite "
        "df), as for the claims. The claims below compare models with each other; this says how "
        "good they are.",
    ]
    path = figs.levels_figure(levels, REFERENCE, tmp / "accuracy_levels.png")
    if path is not None:
        blocks.append(Figure(path, "Test accuracy per model and data set", figs.CAPTIONS["levels"]))
    return [*blocks, gaps_markdown(gaps, levels)]


def _write_report(
    tmp: Path, results: _Results, metrics: list[str], figures: list[Figure], run_id: str
) -> None:
    """report.md and report.html (the latter with the code version and the runs it scores)."""
    blocks = report_blocks(
        claims=results.claims,
        summary=results.summary,
        tests=results.tests,
        recall=results.recall,
        diagnostics=diagnostics_table(results.runs),
        metrics=metrics,
        figures=figures,
        claim_settings=results.settings,
        reference=_reference_section(tmp, results),
    )
    write_markdown(tmp / "report.md", blocks)
    provenance = {
        **git_state(),
        "mlflow_run_id": run_id,
        "train_runs": ", ".join(results.runs["run_id"].to_list()),
    }
    write_html(tmp / "report.html", blocks, provenance)


def _log_evaluation(tmp: Path, summary: pl.DataFrame, metrics: list[str], figures: list[Figure]) -> None:
    """Log each data set × model's finite mean metrics, the tables, the report and the figures."""
    import mlflow

    for r in summary.iter_rows(named=True):
        for m in metrics:
            val = r[f"{m}_mean"]
            if val is not None and np.isfinite(val):
                mlflow.log_metric(f"{r['dataset']}.{r['model']}.{m}_mean", float(val))
    log_artifacts_from([tmp / n for n in _TABLE_FILES])
    log_artifacts_from([f.path for f in figures], artifact_path="figures")


def run_evaluate(
    params: Params,
    *,
    model_dirs: list[Path],
    out_dir: Path,
    rus_dirs: list[Path] | None = None,
    sweep_dirs: list[Path] | None = None,
    checks_dir: Path | None = None,
) -> pl.DataFrame:
    """Score every train output, test the claims, write the tables, figures and the report.

    `checks_dir` holds the check tables of claims no model run measures (estimator_check.csv,
    which the pipeline's check rule writes; see timoe.evaluation.claims); without them those claims
    are NOT TESTABLE, with the reason.
    """
    if not model_dirs:
        raise ValueError("evaluate needs at least one train output")
    metrics = [*params.evaluate.metrics, "auroc"]
    rus_dirs, sweep_dirs = list(rus_dirs or []), list(sweep_dirs or [])
    checks = load_checks(checks_dir)
    inputs = _evaluate_inputs(model_dirs, rus_dirs, sweep_dirs, checks_dir, bool(checks))
    with (
        atomic_dir(out_dir) as tmp,
        tracked_run(
            uri=params.tracking.uri,
            experiment=experiment_name(params.tracking.experiment_prefix, "evaluate", None),
            stage="evaluate",
            full_params=params.model_dump(),
            config=recorded_config(params, "evaluate"),
            out_dir=tmp,
            inputs=inputs,
            run_name="evaluate",
        ) as run,
    ):
        results = _score_all(model_dirs, metrics, checks, claim_settings(params))
        _write_tables(tmp, results, metrics)
        figures = _figures(tmp, [Path(d) for d in model_dirs], rus_dirs, sweep_dirs)
        _write_report(tmp, results, metrics, figures, run.info.run_id)
        save_json(tmp / "summary.json", results.summary.to_dicts())
        _log_evaluation(tmp, results.summary, metrics, figures)
    return results.summary
