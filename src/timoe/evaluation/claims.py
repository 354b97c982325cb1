"""The paper's claims, each tested on the benchmark's per-seed runs and given a verdict.

A claim is declared once in `CLAIMS` (what is compared, on which data sets, by which test) and
evaluated against runs.csv (one row per data set × model × seed, routing diagnostics included)
or an optional check table. Every claim gets HELD, FAILED or NOT TESTABLE with the reason; a
claim that fails is reported as failed, and one that cannot be measured says what is missing.

Kinds (α = 0.05; d = A − B per seed, paired by seed, in the metric's display unit):
- superior: one-sided paired t-test, H1 mean(d) > 0, and mean(d) ≥ `min_diff`;
- equivalent: two one-sided tests (TOST), H1 −margin < mean(d) < margin. A non-significant
  difference is not evidence of "as good as"; only TOST is;
- within: non-inferiority, one-sided t-test H1 mean(d) > −margin (A at most `margin` below B);
- threshold: one-sample one-sided t-test, H1 mean(A) > `margin` (a diagnostic above a value).
The reported interval is the 90 % t interval of the mean difference, the one these tests match
(superior HELD iff its lower end > 0; equivalent HELD iff it lies inside ±margin).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import polars as pl

from timoe.config import DATASET_NAMES
from timoe.evaluation.stats import mean_ci, one_sided_t, tost

ALPHA = 0.05
MIN_PAIRS = 3  # a t-test on two seeds has one degree of freedom: no test worth a verdict
HELD, FAILED, NOT_TESTABLE = "HELD", "FAILED", "NOT TESTABLE"
Kind = Literal["superior", "equivalent", "within", "threshold"]
Source = Literal["runs", "estimator_check", "lag_runs"]
ALL = DATASET_NAMES  # a claim on ALL covers bring-your-own data sets the study ran too

# Optional inputs, read from the evaluate stage's --checks folder when present.
CHECK_FILES = {"estimator_check": "estimator_check.csv", "lag_runs": "lag_runs.csv"}
CHECK_HOWTO = {
    "estimator_check": "`bench_multiscale.py --out`, then `timoe evaluate --checks`",
    "lag_runs": "lag_runs.csv: runs.csv rows with a max_lag column, via `timoe evaluate --checks`",
}


@dataclass(frozen=True)
class Claim:
    """One claim: model `a` against model `b`, a column of a's own runs (`reference`), or a value."""

    name: str
    statement: str
    kind: Kind
    a: str
    b: str | None = None
    reference: str | None = None  # a column of the same runs (e.g. chance level), paired per run
    metric: str = "accuracy"
    datasets: tuple[str, ...] = ALL
    margin: float = 0.0  # equivalent: ±margin; within: m; threshold: the value (display units)
    min_diff: float = 0.0  # superior: smallest mean difference that counts (display units)
    source: Source = "runs"


CLAIMS: tuple[Claim, ...] = (
    Claim(
        "rus_losses_help",
        "RUS losses help: timoe beats timoe-nolosses",
        "superior",
        "timoe",
        "timoe-nolosses",
    ),
    Claim(
        "beats_moe",
        "Interaction-guided routing beats a learned gate: timoe beats moe",
        "superior",
        "timoe",
        "moe",
    ),
    Claim(
        "beats_fusemoe",
        "Interaction-guided routing beats a learned gate: timoe beats fusemoe",
        "superior",
        "timoe",
        "fusemoe",
    ),
    Claim(
        "beats_modality_moe",
        "Guided routing beats per-modality routing: timoe beats modality-moe",
        "superior",
        "timoe",
        "modality-moe",
    ),
    Claim(
        "beats_hash_moe",
        "Guided routing beats fixed random routing: timoe beats hash-moe",
        "superior",
        "timoe",
        "hash-moe",
    ),
    Claim(
        "context_prior_helps",
        "The sample-conditioned prior beats the dataset-level prior: timoe beats timoe-dataset-rus",
        "superior",
        "timoe",
        "timoe-dataset-rus",
    ),
    Claim(
        "prior_not_noise",
        "The prior carries information: timoe beats timoe-shuffled-rus",
        "superior",
        "timoe",
        "timoe-shuffled-rus",
    ),
    Claim(
        "near_oracle",
        "timoe is within 2 points of routing by the true regime (oracle)",
        "within",
        "timoe",
        "oracle",
        datasets=("synthetic-regimes",),
        margin=2.0,
    ),
    Claim(
        "synergy_routing",
        "Routing is interpretable: synergy tokens go to synergy experts more often than chance",
        "superior",
        "timoe",
        reference="diag.synergy_chance",
        metric="diag.synergy_share_on_synergy_cells",
    ),
    Claim(
        "regime_mi",
        "Routing is interpretable: MI(expert; regime) > 0.05 bits on synthetic-regimes",
        "threshold",
        "timoe",
        metric="diag.mi_expert_regime",
        datasets=("synthetic-regimes",),
        margin=0.05,
    ),
    Claim(
        "multiscale_matches_per_lag",
        "Multi-scale RUS estimates equal per-lag ones within ±0.05 bits",
        "equivalent",
        "multiscale",
        "per_lag",
        metric="bits",
        datasets=("synthetic-processes",),
        margin=0.05,
        source="estimator_check",
    ),
    Claim(
        "longer_lags_help",
        "A longer lag range helps: timoe at the longest lag range beats the shortest",
        "superior",
        "timoe",
        metric="accuracy",
        source="lag_runs",
    ),
)

# How a reference column is named in the report.
REFERENCE_LABELS = {"diag.synergy_chance": "chance"}

# Display unit per metric: (scale from the stored value, unit, decimals).
_UNITS = {
    "accuracy": (100.0, "pp", 2),
    "macro_f1": (100.0, "pp", 2),
    "auroc": (100.0, "pp", 2),
    "diag.synergy_share_on_synergy_cells": (100.0, "pp", 2),
}
_DEFAULT_UNIT = (1.0, "bits", 3)

SCHEMA = {
    "claim": pl.String,
    "dataset": pl.String,
    "statement": pl.String,
    "kind": pl.String,
    "metric": pl.String,
    "model_a": pl.String,
    "model_b": pl.String,
    "unit": pl.String,
    "n_pairs": pl.Int64,
    "mean_a": pl.Float64,
    "std_a": pl.Float64,
    "mean_b": pl.Float64,
    "std_b": pl.Float64,
    "mean_diff": pl.Float64,
    "ci_low": pl.Float64,
    "ci_high": pl.Float64,
    "margin": pl.Float64,
    "test": pl.String,
    "p_value": pl.Float64,
    "verdict": pl.String,
    "reason": pl.String,
}


def unit(metric: str) -> tuple[float, str, int]:
    return _UNITS.get(metric, _DEFAULT_UNIT)


def load_checks(checks_dir: Path | None) -> dict[str, pl.DataFrame]:
    """The optional check tables found in `checks_dir` (none when it is None or absent)."""
    found: dict[str, pl.DataFrame] = {}
    if checks_dir is None:
        return found
    for key, name in CHECK_FILES.items():
        path = Path(checks_dir) / name
        if path.is_file():
            found[key] = pl.read_csv(path)
    return found


def _float(col: str) -> pl.Expr:
    # columns that are all empty in a CSV read back as strings: cast, non-numbers become null
    return pl.col(col).cast(pl.Float64, strict=False)


def _pairs_by_seed(a: pl.DataFrame, b: pl.DataFrame, metric: str) -> pl.DataFrame:
    left = a.select("seed", _float(metric).alias("a"))
    right = b.select("seed", _float(metric).alias("b"))
    return left.join(right, on="seed").drop_nulls()


def _runs_values(claim: Claim, table: pl.DataFrame, ds: str) -> pl.DataFrame | str:
    """Columns a, b (b absent for a threshold) of the claim's paired observations, or the reason."""
    needed = [claim.metric] + ([claim.reference] if claim.reference else [])
    missing = [c for c in needed if c not in table.columns]
    if missing:
        return f"runs.csv has no {', '.join(missing)} column (routing.json without diagnostics?)"
    sub = table.filter(pl.col("dataset") == ds)
    a = sub.filter(pl.col("model") == claim.a)
    if a.is_empty():
        return f"{claim.a} not run on {ds}"
    if claim.b is not None:
        b = sub.filter(pl.col("model") == claim.b)
        if b.is_empty():
            return f"{claim.b} not run on {ds}"
        return _pairs_by_seed(a, b, claim.metric)
    cols = [_float(claim.metric).alias("a")]
    if claim.reference:
        cols.append(_float(claim.reference).alias("b"))
    values = a.select(cols).drop_nulls()
    if values.is_empty():
        return f"{claim.a}'s runs on {ds} record no {claim.metric}"
    return values


def _lag_values(claim: Claim, table: pl.DataFrame, ds: str) -> pl.DataFrame | str:
    """The claim's model at its longest lag range (a) against its shortest (b), paired by seed."""
    if "max_lag" not in table.columns:
        return "no max_lag column in the lag runs"
    sub = table.filter((pl.col("dataset") == ds) & (pl.col("model") == claim.a))
    lags = sorted(sub["max_lag"].drop_nulls().unique().to_list())
    if len(lags) < 2:
        return f"{claim.a} on {ds} ran at {len(lags)} lag setting(s); need two"
    long, short = (sub.filter(pl.col("max_lag") == v) for v in (lags[-1], lags[0]))
    return _pairs_by_seed(long, short, claim.metric)


def _estimator_values(claim: Claim, table: pl.DataFrame, ds: str) -> pl.DataFrame | str:
    """Columns a (multiscale) and b (per_lag), one row per process × lag × component."""
    missing = [c for c in (claim.a, claim.b) if c not in table.columns]
    if missing:
        return f"estimator_check.csv has no {', '.join(map(str, missing))} column"
    if "dataset" in table.columns:
        table = table.filter(pl.col("dataset") == ds)
    if "steps_factor" in table.columns and table.height:
        # the paper's claim is about the τ-fold saving: the smallest training budget
        table = table.filter(pl.col("steps_factor") == table["steps_factor"].min())
    return table.select(_float(claim.a).alias("a"), _float(str(claim.b)).alias("b")).drop_nulls()


def _values(claim: Claim, runs: pl.DataFrame, checks: dict[str, pl.DataFrame], ds: str) -> pl.DataFrame | str:
    if claim.source == "runs":
        return _runs_values(claim, runs, ds)
    if claim.source == "lag_runs":
        table = checks.get("lag_runs")
        if table is None and "max_lag" in runs.columns:
            table = runs
        if table is None:
            return f"no runs at a second lag setting ({CHECK_HOWTO['lag_runs']})"
        return _lag_values(claim, table, ds)
    table = checks.get("estimator_check")
    if table is None:
        return f"no estimator_check.csv ({CHECK_HOWTO['estimator_check']})"
    return _estimator_values(claim, table, ds)


def _test(claim: Claim, a: np.ndarray, b: np.ndarray | None) -> tuple[float, str, np.ndarray]:
    """(p-value, the test in words, the differences the test is on)."""
    u = unit(claim.metric)[1]
    if claim.kind == "threshold":
        d = a - claim.margin
        return one_sided_t(a, claim.margin, "greater"), f"one-sided t, H1 mean > {claim.margin:g} {u}", d
    assert b is not None
    d = a - b
    if claim.kind == "superior":
        extra = f", min diff {claim.min_diff:g} {u}" if claim.min_diff else ""
        test = f"paired one-sided t, H1 {claim.a} > {_label_b(claim)}{extra}"
        return one_sided_t(d, 0.0, "greater"), test, d
    if claim.kind == "equivalent":
        return tost(d, claim.margin), f"TOST ±{claim.margin:g} {u}", d
    return (
        one_sided_t(d, -claim.margin, "greater"),
        f"non-inferiority t, H1 diff > −{claim.margin:g} {u}",
        d,
    )


def _verdict(claim: Claim, p: float, d: np.ndarray) -> tuple[str, str]:
    _, u, dec = unit(claim.metric)
    if not np.isfinite(p):
        return NOT_TESTABLE, "test undefined"
    if p >= ALPHA:
        return FAILED, f"p = {p:.3g} ≥ {ALPHA}"
    if claim.kind == "superior" and float(d.mean()) < claim.min_diff:
        return FAILED, f"mean diff {d.mean():.{dec}f} {u} < the stated minimum {claim.min_diff:g} {u}"
    return HELD, ""


def _label_b(claim: Claim) -> str | None:
    """What A is compared with, as the report names it."""
    if claim.source == "lag_runs":
        return f"{claim.a} (shortest lags)"
    if claim.reference:
        return REFERENCE_LABELS.get(claim.reference, claim.reference)
    return claim.b or (f"{claim.margin:g}" if claim.kind == "threshold" else None)


def _row(claim: Claim, ds: str) -> dict:
    row: dict = dict.fromkeys(SCHEMA)
    label_b = _label_b(claim)
    row.update(
        claim=claim.name,
        dataset=ds,
        statement=claim.statement,
        kind=claim.kind,
        metric=claim.metric,
        model_a=claim.a,
        model_b=label_b,
        unit=unit(claim.metric)[1],
        margin=claim.margin if claim.kind != "superior" else claim.min_diff,
    )
    return row


def evaluate_claim(claim: Claim, runs: pl.DataFrame, checks: dict[str, pl.DataFrame], ds: str) -> dict:
    """One claim on one data set: the measurement, the test, the verdict (a claims.csv row)."""
    row = _row(claim, ds)
    values = _values(claim, runs, checks, ds)
    if isinstance(values, str):
        return row | {"n_pairs": 0, "verdict": NOT_TESTABLE, "reason": values}
    scale = unit(claim.metric)[0]
    a = values["a"].to_numpy().astype(float) * scale
    b = values["b"].to_numpy().astype(float) * scale if "b" in values.columns else None
    row["n_pairs"] = len(a)
    if len(a) < MIN_PAIRS:
        what = "paired seeds" if claim.source != "estimator_check" else "estimates"
        return row | {"verdict": NOT_TESTABLE, "reason": f"{len(a)} {what} (< {MIN_PAIRS})"}
    p, test, d = _test(claim, a, b)
    lo, hi = mean_ci(d if b is not None else a)
    verdict, reason = _verdict(claim, p, d)
    row.update(
        mean_a=float(a.mean()),
        std_a=float(a.std(ddof=1)),
        test=test,
        p_value=p,
        verdict=verdict,
        reason=reason,
        ci_low=lo,
        ci_high=hi,
        mean_diff=float(d.mean()) if b is not None else None,
    )
    if b is not None:
        row.update(mean_b=float(b.mean()), std_b=float(b.std(ddof=1)))
    return row


def evaluate_claims(
    runs: pl.DataFrame,
    checks: dict[str, pl.DataFrame] | None = None,
    claims: tuple[Claim, ...] = CLAIMS,
) -> pl.DataFrame:
    """Every claim on every data set it names that the study ran (all of them when no run is
    there at all): one row each, in declaration order. A data set left out of the study on
    purpose is not a missing result, so it gets no NOT TESTABLE row."""
    checks = checks or {}
    ran = set(runs["dataset"].to_list()) if "dataset" in runs.columns and runs.height else set()

    byo = tuple(sorted(ran - set(DATASET_NAMES)))  # data.custom names are known only from the runs

    def studied(claim: Claim, ds: str) -> bool:
        return claim.source == "estimator_check" or not ran or ds in ran

    def names(claim: Claim) -> tuple[str, ...]:
        return (*claim.datasets, *byo) if claim.datasets == ALL else claim.datasets

    rows = [evaluate_claim(c, runs, checks, ds) for c in claims for ds in names(c) if studied(c, ds)]
    return pl.DataFrame(rows, schema=SCHEMA)


def _measurement(r: dict) -> str:
    if r["mean_a"] is None:
        return "—"
    dec = unit(r["metric"])[2]
    u = r["unit"]
    a = f"{r['model_a']} {r['mean_a']:.{dec}f} ± {r['std_a']:.{dec}f}"
    ci = f"90 % CI [{r['ci_low']:+.{dec}f}, {r['ci_high']:+.{dec}f}]"
    if r["mean_b"] is None:  # a threshold: the interval is of the mean itself
        ci = f"90 % CI [{r['ci_low']:.{dec}f}, {r['ci_high']:.{dec}f}]"
        return f"{a} {u} (n = {r['n_pairs']}); {ci}"
    b = f"{r['model_b']} {r['mean_b']:.{dec}f} ± {r['std_b']:.{dec}f}"
    return f"{a} vs {b} {u} (n = {r['n_pairs']}); diff {r['mean_diff']:+.{dec}f}, {ci}"


def claims_tally(table: pl.DataFrame) -> str:
    """One sentence: how many claim × data set rows held, failed, could not be tested."""
    counts = {v: table.filter(pl.col("verdict") == v).height for v in (HELD, FAILED, NOT_TESTABLE)}
    return f"{table.height} claim × data set rows: " + ", ".join(f"{n} {v}" for v, n in counts.items()) + "."


def claims_markdown(table: pl.DataFrame) -> str:
    """One table row per claim × data set: claim, measurement, test and p, verdict."""
    lines = [
        "| claim | data set | measurement (mean ± std) | test | p | verdict |",
        "|---|---|---|---|---|---|",
    ]
    for r in table.iter_rows(named=True):
        p = "—" if r["p_value"] is None else f"{r['p_value']:.3g}"
        verdict = f"**{r['verdict']}**" + (f" ({r['reason']})" if r["reason"] else "")
        cells = [r["statement"], r["dataset"], _measurement(r), r["test"] or "—", p, verdict]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines)
