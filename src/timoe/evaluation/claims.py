"""The paper's claims, each tested on the benchmark's runs and given one of three verdicts.

A claim is declared once in `CLAIMS` (what is compared, on which data sets, by which kind of test)
and evaluated on runs.csv (one row per data set × model × seed, diagnostics included), the
per-subject test scores (from each run's predictions.parquet), or a check table.

Design (stated in the report too):
- Unit of replication. Accuracy claims between two models: the paired hierarchical bootstrap of
  timoe.evaluation.bootstrap over test subjects × seeds (the subject is what a deployed model
  generalises to; the seed is the training randomness): estimate d = pooled accuracy of A − B,
  standard error from 10 000 seeded resamples, t reference with Satterthwaite df of the two-way
  random-effects model's seed and subject terms (timoe.evaluation.bootstrap). Claims on per-run
  columns (diagnostics) have no per-window data: per-seed
  paired t (d = A − B per seed, se = sd/√n, df = n − 1). The estimator check: per-estimate t.
- Two one-sided tests per row, each a t-type test on (d, se, df):
    kind        HELD test (claim's H1)          REFUTED test (H1 against the claim)
    superior    d > 0                           d < +SESOI (no gain of interest)
    within m    d > −m (non-inferiority)        d < −m (inferiority shown)
    threshold v mean(A) > v                     mean(A) < v
    equivalent  −m < d < m (TOST, max of two p) |d| > m (2 × the smaller one-sided p)
  SESOI, the smallest effect of interest: `evaluate.smallest_effect` in params.yaml for claims in
  percentage points; a claim on another unit (bits, shares) declares its own `sesoi`.
- Multiplicity. Holm's step-down correction over the family = every testable claim × data set row
  of one report with `in_family` (all data sets together: the report's tally is read as one set of
  findings), applied separately to the HELD p-values and to the REFUTED p-values, α = 0.05 each.
  "Synergy tokens go to synergy experts" is what the L_S loss optimises: its HELD is by
  construction, a check that training did what it was told, not evidence; it is reported with its
  raw p and left out of the family so it neither spends nor inflates the family's α.
- Verdict, with p_H and p_R the Holm-adjusted p of the two tests:
    HELD         if p_H ≤ α  (for "superior": the one-sided lower bound of d at the row's Holm
                 level is above 0). If the gain is also shown below the SESOI (p_R ≤ α), the row
                 stays HELD and says "gain below the SESOI" (superiority shown, but negligible).
    REFUTED      else if p_R ≤ α (for "superior": the upper bound of d is below +SESOI, i.e. B is
                 shown non-inferior to A at margin SESOI; this includes equivalence and B ahead).
    INCONCLUSIVE otherwise; the row gives the MDE and the seeds needed (below).
    NOT TESTABLE only when a model, a column or an input is missing, or fewer than 2 paired
                 seeds leave no spread to test against; the reason is given.
- Power. MDE = (t_{1−α_k, df} + t_{0.8, df}) · se, where α_k = α/(m − k + 1) is the Holm level
  of the row's rank k among the m family p-values (α outside the family); the true distance from
  the HELD test's null boundary detected with 80 % power (for TOST: t_{0.9} and the distance is
  the margin at d = 0). Units needed for the SESOI: per-seed t: the fewest n with
  (t_{1−α_k,n−1} + t_{0.8,n−1}) · sd/√n ≤ SESOI; bootstrap: the fewest seeds S' (test subjects
  kept) with (z_{1−α_k} + z_{0.8}) · se · sqrt(V(S')/V(S)) ≤ SESOI, V(S) = σ²_seed/S +
  σ²_subject/J + σ²_res/(SJ) from the variance components; none when σ²_subject/J alone is too
  large (more test subjects, not seeds, are needed).
The reported interval is the two-sided 90 % t interval d ± t_{0.95,df} · se (unadjusted).
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import polars as pl
from scipy import stats

from timoe.config import DATASET_NAMES
from timoe.evaluation.bootstrap import cells_from_scores, hierarchical_bootstrap, seeds_for_se
from timoe.evaluation.stats import holm, holm_levels, mde, t_interval, t_p_value, units_needed

ALPHA = 0.05
MIN_PAIRS = 2  # one paired seed leaves no spread to test against
HELD, REFUTED, INCONCLUSIVE, NOT_TESTABLE = "HELD", "REFUTED", "INCONCLUSIVE", "NOT TESTABLE"
VERDICTS = (HELD, REFUTED, INCONCLUSIVE, NOT_TESTABLE)
Kind = Literal["superior", "equivalent", "within", "threshold"]
Source = Literal["runs", "estimator_check"]
ALL = DATASET_NAMES  # a claim on ALL covers bring-your-own data sets the study ran too

# Check tables, read from the evaluate stage's --checks folder (the pipeline writes them).
CHECK_FILES = {"estimator_check": "estimator_check.csv"}
CHECK_HOWTO = {"estimator_check": "the estimator-check rule writes results/checks/estimator_check.csv"}


@dataclass(frozen=True)
class ClaimSettings:
    """How claims are tested (params.yaml `evaluate`): the SESOI in percentage points, the power
    the MDE is computed at, and the bootstrap's resamples and seed."""

    smallest_effect: float = 1.0
    power: float = 0.8
    resamples: int = 10_000
    seed: int = 0


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
    sesoi: float | None = None  # display units; None: evaluate.smallest_effect (pp metrics only)
    source: Source = "runs"
    in_family: bool = True  # False: reported with its raw p, outside Holm's family (say why)


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
        "values_add_to_context",
        "The interaction values add to the context: timoe beats context-moe (context, no RUS values)",
        "superior",
        "timoe",
        "context-moe",
    ),
    Claim(
        "longer_lags_help",
        "A longer lag range helps: timoe beats timoe-lag0 (prior from lag 0 only)",
        "superior",
        "timoe",
        "timoe-lag0",
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
        "synergy_experts_matter",
        "Synergy experts matter where the prior says synergy: disabling them at test time costs "
        "more accuracy on those windows than on the others",
        "superior",
        "timoe",
        reference="syn_off_drop_other",
        metric="syn_off_drop_synergy",
    ),
    Claim(
        "synergy_routing",
        "By construction (L_S): synergy tokens go to synergy experts more often than chance",
        "superior",
        "timoe",
        reference="diag.synergy_chance",
        metric="diag.synergy_share_on_synergy_cells",
        in_family=False,  # what L_S optimises: a check of training, not evidence (module docstring)
    ),
    Claim(
        "regime_mi",
        "Routing is interpretable: MI(expert; regime) > 0.05 bits on synthetic-regimes",
        "threshold",
        "timoe",
        metric="diag.mi_expert_regime",
        datasets=("synthetic-regimes",),
        margin=0.05,
        sesoi=0.05,  # detect an MI of 0.10 bits, twice the threshold
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
        sesoi=0.05,  # the margin: equivalence is shown when the true difference is 0
        source="estimator_check",
    ),
)

# How a reference column is named in the report.
REFERENCE_LABELS = {"diag.synergy_chance": "chance", "syn_off_drop_other": "drop on other windows"}

# Display unit per metric: (scale from the stored value, unit, decimals).
_UNITS = {
    "accuracy": (100.0, "pp", 2),
    "macro_f1": (100.0, "pp", 2),
    "auroc": (100.0, "pp", 2),
    "diag.synergy_share_on_synergy_cells": (100.0, "pp", 2),
    "syn_off_drop_synergy": (100.0, "pp", 2),
}
_DEFAULT_UNIT = (1.0, "bits", 3)

BOOTSTRAP_DESIGN = "subjects × seeds bootstrap"
SEED_DESIGN = "per-seed paired t"

SCHEMA = {
    "claim": pl.String,
    "dataset": pl.String,
    "statement": pl.String,
    "kind": pl.String,
    "metric": pl.String,
    "model_a": pl.String,
    "model_b": pl.String,
    "unit": pl.String,
    "design": pl.String,
    "n_pairs": pl.Int64,
    "n_subjects": pl.Int64,
    "mean_a": pl.Float64,
    "std_a": pl.Float64,
    "mean_b": pl.Float64,
    "std_b": pl.Float64,
    "mean_diff": pl.Float64,
    "se": pl.Float64,
    "df": pl.Float64,
    "ci_low": pl.Float64,
    "ci_high": pl.Float64,
    "margin": pl.Float64,
    "sesoi": pl.Float64,
    "test": pl.String,
    "in_family": pl.Boolean,
    "p_value": pl.Float64,
    "p_holm": pl.Float64,
    "p_refute": pl.Float64,
    "p_refute_holm": pl.Float64,
    "verdict": pl.String,
    "reason": pl.String,
    "mde": pl.Float64,
    "n_needed": pl.Int64,
    "prob_improvement": pl.Float64,
    "pi_low": pl.Float64,
    "pi_high": pl.Float64,
    "var_seed": pl.Float64,
    "var_subject": pl.Float64,
    "var_residual": pl.Float64,
}


def unit(metric: str) -> tuple[float, str, int]:
    return _UNITS.get(metric, _DEFAULT_UNIT)


def load_checks(checks_dir: Path | None) -> dict[str, pl.DataFrame]:
    """The check tables found in `checks_dir` (none when it is None or absent)."""
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


def _column(table: pl.DataFrame, name: str) -> str | None:
    """`name` or its diagnostics-prefixed form `diag.name`, whichever runs.csv has."""
    for col in (name, f"diag.{name}"):
        if col in table.columns:
            return col
    return None


def _pairs_by_seed(a: pl.DataFrame, b: pl.DataFrame, metric: str) -> pl.DataFrame:
    left = a.select("seed", _float(metric).alias("a"))
    right = b.select("seed", _float(metric).alias("b"))
    return left.join(right, on="seed").drop_nulls().sort("seed")


def _runs_values(claim: Claim, table: pl.DataFrame, ds: str) -> pl.DataFrame | str:
    """Columns a, b (b absent for a threshold) of the claim's per-seed observations, or the reason."""
    needed = [claim.metric] + ([claim.reference] if claim.reference else [])
    cols = {n: _column(table, n) for n in needed}
    missing = [n for n, c in cols.items() if c is None]
    if missing:
        return f"runs.csv has no {', '.join(missing)} column (a run without that diagnostic?)"
    metric = str(cols[claim.metric])
    sub = table.filter(pl.col("dataset") == ds)
    a = sub.filter(pl.col("model") == claim.a)
    if a.is_empty():
        return f"{claim.a} not run on {ds}"
    if claim.b is not None:
        b = sub.filter(pl.col("model") == claim.b)
        if b.is_empty():
            return f"{claim.b} not run on {ds}"
        return _pairs_by_seed(a, b, metric)
    select = [_float(metric).alias("a")]
    if claim.reference:
        select.append(_float(str(cols[claim.reference])).alias("b"))
    values = a.sort("seed").select(select).drop_nulls()
    if values.is_empty():
        return f"{claim.a}'s runs on {ds} record no {claim.metric}"
    return values


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
    table = checks.get("estimator_check")
    if table is None:
        return f"no estimator_check.csv ({CHECK_HOWTO['estimator_check']})"
    return _estimator_values(claim, table, ds)


def _label_b(claim: Claim) -> str | None:
    """What A is compared with, as the report names it."""
    if claim.reference:
        return REFERENCE_LABELS.get(claim.reference, claim.reference)
    return claim.b or (f"{claim.margin:g}" if claim.kind == "threshold" else None)


def _sesoi(claim: Claim, settings: ClaimSettings) -> float:
    if claim.sesoi is not None:
        return claim.sesoi
    if unit(claim.metric)[1] != "pp":
        raise ValueError(f"claim {claim.name} on {claim.metric} must declare its own sesoi")
    return settings.smallest_effect


def _row(claim: Claim, ds: str, settings: ClaimSettings) -> dict:
    row: dict = dict.fromkeys(SCHEMA)
    row.update(
        claim=claim.name,
        dataset=ds,
        statement=claim.statement,
        kind=claim.kind,
        metric=claim.metric,
        model_a=claim.a,
        model_b=_label_b(claim),
        unit=unit(claim.metric)[1],
        margin=claim.margin,
        sesoi=_sesoi(claim, settings),
        in_family=claim.in_family,
    )
    return row


def _test_words(claim: Claim, u: str, sesoi: float) -> str:
    b = _label_b(claim)
    if claim.kind == "superior":
        return f"H1 {claim.a} > {b}; refuted if < +{sesoi:g} {u} shown"
    if claim.kind == "within":
        return f"H1 diff > −{claim.margin:g} {u}; refuted if < −{claim.margin:g} {u} shown"
    if claim.kind == "threshold":
        return f"H1 mean > {claim.margin:g} {u}; refuted if < {claim.margin:g} {u} shown"
    return f"TOST ±{claim.margin:g} {u}; refuted if |diff| > {claim.margin:g} {u} shown"


def _two_p(kind: str, est: float, se: float, df: float, margin: float, sesoi: float) -> tuple[float, float]:
    """(p of the HELD test, p of the REFUTED test) for the claim's kind (module docstring table)."""

    def p(null: float, alt: str) -> float:
        return t_p_value(est, se, df, null, alt)

    if kind == "superior":
        return p(0.0, "greater"), p(sesoi, "less")
    if kind == "within":
        return p(-margin, "greater"), p(-margin, "less")
    if kind == "threshold":
        return p(margin, "greater"), p(margin, "less")
    held = max(p(-margin, "greater"), p(margin, "less"))
    return held, min(1.0, 2 * min(p(margin, "greater"), p(-margin, "less")))


def _bootstrap_seed(settings: ClaimSettings, claim: Claim, ds: str) -> list[int]:
    # one stream per row, fixed by its name: a row's numbers do not depend on the others
    return [settings.seed, zlib.crc32(f"{claim.name}/{ds}".encode())]


def _measure_bootstrap(
    claim: Claim, row: dict, scores: pl.DataFrame, ds: str, settings: ClaimSettings
) -> dict | str:
    """The bootstrap's estimate, se, df, components and probability of improvement (display units)."""
    cells = cells_from_scores(scores.filter(pl.col("dataset") == ds), claim.a, str(claim.b))
    if isinstance(cells, str):
        return cells
    if len(cells.seeds) < MIN_PAIRS:
        return f"{len(cells.seeds)} paired seed with test predictions (< {MIN_PAIRS}: no seed spread)"
    res = hierarchical_bootstrap(cells, settings.resamples, _bootstrap_seed(settings, claim, ds))
    scale = unit(claim.metric)[0]
    pooled = cells.windows / cells.windows.sum()
    acc_a, acc_b = (cells.acc_a @ pooled) * scale, (cells.acc_b @ pooled) * scale  # [S] per seed
    return row | {
        "design": BOOTSTRAP_DESIGN,
        "n_pairs": len(cells.seeds),
        "n_subjects": len(cells.subjects),
        "mean_a": float(acc_a.mean()),
        "std_a": float(acc_a.std(ddof=1)),
        "mean_b": float(acc_b.mean()),
        "std_b": float(acc_b.std(ddof=1)),
        "mean_diff": res.estimate * scale,
        "se": res.se * scale,
        "df": res.df,
        "var_seed": res.var_seed * scale**2,
        "var_subject": res.var_subject * scale**2,
        "var_residual": res.var_residual * scale**2,
        "prob_improvement": res.prob_improvement,
        "pi_low": res.pi_low,
        "pi_high": res.pi_high,
    }


def _measure_t(claim: Claim, row: dict, values: pl.DataFrame) -> dict | str:
    """Per-seed (or per-estimate) t: estimate mean(d), se = sd/√n, df = n − 1 (display units)."""
    scale = unit(claim.metric)[0]
    a = values["a"].to_numpy().astype(float) * scale
    b = values["b"].to_numpy().astype(float) * scale if "b" in values.columns else None
    if len(a) < MIN_PAIRS:
        what = "paired seeds" if claim.source != "estimator_check" else "estimates"
        return f"{len(a)} {what} (< {MIN_PAIRS})"
    d = a - b if b is not None else a
    out = row | {
        "design": SEED_DESIGN if claim.source == "runs" else "per-estimate t",
        "n_pairs": len(a),
        "mean_a": float(a.mean()),
        "std_a": float(a.std(ddof=1)),
        "se": float(d.std(ddof=1)) / math.sqrt(len(d)),
        "df": float(len(d) - 1),
    }
    if b is not None:
        out |= {"mean_b": float(b.mean()), "std_b": float(b.std(ddof=1)), "mean_diff": float(d.mean())}
    return out


def _estimate(row: dict) -> float:
    return row["mean_diff"] if row["mean_diff"] is not None else row["mean_a"]


def measure_claim(
    claim: Claim,
    runs: pl.DataFrame,
    checks: dict[str, pl.DataFrame],
    ds: str,
    scores: pl.DataFrame | None = None,
    settings: ClaimSettings = ClaimSettings(),
) -> dict:
    """One claim on one data set: the measurement and the raw p of both tests (no verdict yet)."""
    row = _row(claim, ds, settings)
    values = _values(claim, runs, checks, ds)
    if isinstance(values, str):
        return row | {"n_pairs": 0, "verdict": NOT_TESTABLE, "reason": values}
    use_bootstrap = (
        scores is not None
        and claim.source == "runs"
        and claim.metric == "accuracy"
        and claim.b is not None
        and not scores.filter(pl.col("dataset") == ds).is_empty()
    )
    measured = (
        _measure_bootstrap(claim, row, scores, ds, settings)  # type: ignore[arg-type]
        if use_bootstrap
        else _measure_t(claim, row, values)
    )
    if isinstance(measured, str):
        return row | {"n_pairs": 0, "verdict": NOT_TESTABLE, "reason": measured}
    est, se, df = _estimate(measured), measured["se"], measured["df"]
    p_held, p_ref = _two_p(claim.kind, est, se, df, claim.margin, measured["sesoi"])
    lo, hi = t_interval(est, se, df)
    return measured | {
        "test": _test_words(claim, measured["unit"], measured["sesoi"]),
        "p_value": p_held,
        "p_refute": p_ref,
        "ci_low": lo,
        "ci_high": hi,
    }


def _n_needed(row: dict, level: float, power: float) -> int | None:
    """Seeds (or estimates) needed to detect the SESOI at `level` (module docstring formula)."""
    tost = row["kind"] == "equivalent"
    if row["design"] == BOOTSTRAP_DESIGN:
        from timoe.evaluation.bootstrap import BootstrapResult

        q = stats.norm.ppf(1 - level) + stats.norm.ppf(0.5 + power / 2 if tost else power)
        res = BootstrapResult(
            _estimate(row), row["se"], row["df"], row["var_seed"], row["var_subject"],
            row["var_residual"], math.nan, math.nan, math.nan, row["n_pairs"], row["n_subjects"],
        )  # fmt: skip
        return seeds_for_se(res, row["sesoi"] / q)
    sd = row["se"] * math.sqrt(row["n_pairs"])
    return units_needed(sd, row["sesoi"], level, power, two_sided_power=tost)


def decide(row: dict, p_held: float, p_ref: float, level: float, power: float) -> dict:
    """The verdict from the (Holm-adjusted) p of both tests; MDE and units needed if INCONCLUSIVE.
    `level` is the α the row's HELD test is held to (its Holm level), for the MDE."""
    if row["verdict"] == NOT_TESTABLE:
        return row
    u, dec = row["unit"], unit(row["metric"])[2]
    out = row | {"p_holm": p_held, "p_refute_holm": p_ref, "mde": None, "n_needed": None, "reason": ""}
    if p_held <= ALPHA:
        below = row["kind"] == "superior" and p_ref <= ALPHA
        return out | {
            "verdict": HELD,
            "reason": f"gain below the SESOI {row['sesoi']:g} {u}" if below else "",
        }
    if p_ref <= ALPHA:
        return out | {"verdict": REFUTED}
    tost = row["kind"] == "equivalent"
    m = mde(row["se"], row["df"], level, power, two_sided_power=tost)
    n = _n_needed(row, level, power)
    what = "estimates" if row["design"] == "per-estimate t" else "seeds"
    need = f"needs ≥ {n} {what}" if n is not None else f"not reachable by more {what} (subject spread)"
    reason = f"MDE {m:.{dec}f} {u} at n = {row['n_pairs']}; SESOI {row['sesoi']:g} {u}: {need}"
    return out | {"verdict": INCONCLUSIVE, "mde": m, "n_needed": n, "reason": reason}


def evaluate_claim(
    claim: Claim,
    runs: pl.DataFrame,
    checks: dict[str, pl.DataFrame],
    ds: str,
    scores: pl.DataFrame | None = None,
    settings: ClaimSettings = ClaimSettings(),
) -> dict:
    """One claim on one data set tested alone (a family of one: raw p = Holm p)."""
    row = measure_claim(claim, runs, checks, ds, scores, settings)
    return decide(row, row["p_value"], row["p_refute"], ALPHA, settings.power)


def _apply_holm(rows: list[dict], settings: ClaimSettings) -> list[dict]:
    """Holm over the in-family testable rows (HELD and REFUTED p separately), then the verdicts."""
    family = [i for i, r in enumerate(rows) if r["verdict"] != NOT_TESTABLE and r["in_family"]]
    held = np.array([rows[i]["p_value"] for i in family], dtype=float)
    ref = np.array([rows[i]["p_refute"] for i in family], dtype=float)
    adj_held, adj_ref, levels = holm(held), holm(ref), holm_levels(held, ALPHA)
    out = list(rows)
    for k, i in enumerate(family):
        out[i] = decide(rows[i], float(adj_held[k]), float(adj_ref[k]), float(levels[k]), settings.power)
    for i, r in enumerate(rows):
        if r["verdict"] != NOT_TESTABLE and not r["in_family"]:
            out[i] = decide(r, r["p_value"], r["p_refute"], ALPHA, settings.power)
    return out


def evaluate_claims(
    runs: pl.DataFrame,
    checks: dict[str, pl.DataFrame] | None = None,
    claims: tuple[Claim, ...] = CLAIMS,
    scores: pl.DataFrame | None = None,
    settings: ClaimSettings = ClaimSettings(),
) -> pl.DataFrame:
    """Every claim on every data set it names that the study ran (all of them when no run is
    there at all): one row each, in declaration order, with Holm's correction over the family.
    A data set left out of the study on purpose is not a missing result, so it gets no row.
    `scores`: per data set × model × seed × subject test windows `n` and `correct` (accuracy
    claims between two models then use the subjects × seeds bootstrap)."""
    checks = checks or {}
    ran = set(runs["dataset"].to_list()) if "dataset" in runs.columns and runs.height else set()

    byo = tuple(sorted(ran - set(DATASET_NAMES)))  # data.custom names are known only from the runs

    def studied(claim: Claim, ds: str) -> bool:
        return claim.source == "estimator_check" or not ran or ds in ran

    def names(claim: Claim) -> tuple[str, ...]:
        return (*claim.datasets, *byo) if claim.datasets == ALL else claim.datasets

    rows = [
        measure_claim(c, runs, checks, ds, scores, settings)
        for c in claims
        for ds in names(c)
        if studied(c, ds)
    ]
    return pl.DataFrame(_apply_holm(rows, settings), schema=SCHEMA)


def _measurement(r: dict) -> str:
    if r["mean_a"] is None:
        return "—"
    dec = unit(r["metric"])[2]
    u = r["unit"]
    n = f"n = {r['n_pairs']}" + (f" seeds × {r['n_subjects']} subjects" if r["n_subjects"] else "")
    a = f"{r['model_a']} {r['mean_a']:.{dec}f} ± {r['std_a']:.{dec}f}"
    if r["mean_b"] is None:  # a threshold
        return f"{a} {u} ({n})"
    b = f"{r['model_b']} {r['mean_b']:.{dec}f} ± {r['std_b']:.{dec}f}"
    pi = "" if r["prob_improvement"] is None else f"; P(A > B) {r['prob_improvement']:.2f}"
    return f"{a} vs {b} {u} ({n}); diff {r['mean_diff']:+.{dec}f}{pi}"


def _p(v: float | None) -> str:
    return "—" if v is None or not math.isfinite(v) else f"{v:.3g}"


def claims_tally(table: pl.DataFrame) -> str:
    """One sentence: how many claim × data set rows got each verdict."""
    counts = {v: table.filter(pl.col("verdict") == v).height for v in VERDICTS}
    return f"{table.height} claim × data set rows: " + ", ".join(f"{n} {v}" for v, n in counts.items()) + "."


def claims_markdown(table: pl.DataFrame) -> str:
    """One table row per claim × data set: measurement, CI, raw and Holm p of both tests, verdict."""
    lines = [
        "| claim | data set | measurement (mean ± std over seeds) | 90 % CI | design; test | "
        "p claim / refute (raw) | p claim / refute (Holm) | verdict |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in table.iter_rows(named=True):
        dec = unit(r["metric"])[2]
        ci = "—" if r["ci_low"] is None else f"[{r['ci_low']:+.{dec}f}, {r['ci_high']:+.{dec}f}]"
        raw = "—" if r["p_value"] is None else f"{_p(r['p_value'])} / {_p(r['p_refute'])}"
        adj = "not in family" if r["in_family"] is False else "—"
        if r["p_holm"] is not None and r["in_family"]:
            adj = f"{_p(r['p_holm'])} / {_p(r['p_refute_holm'])}"
        verdict = f"**{r['verdict']}**" + (f" ({r['reason']})" if r["reason"] else "")
        test = "—" if r["test"] is None else f"{r['design']}; {r['test']}"
        cells = [r["statement"], r["dataset"], _measurement(r), ci, test, raw, adj, verdict]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines)


def claims_design(settings: ClaimSettings) -> str:
    """The design paragraph of the report's claims section."""
    return (
        f"Design. Accuracy claims between two models: a paired hierarchical bootstrap over test "
        f"subjects × seeds ({settings.resamples} seeded resamples; the subject is the unit a "
        "deployed model generalises to, the seed the training randomness), estimate = pooled "
        "accuracy difference, t reference on the bootstrap standard error with Satterthwaite df "
        "of the seeds × subjects random-effects model. Diagnostic claims (runs.csv columns, no "
        "per-window data): per-seed paired t; the estimator check: per-estimate t. Each row has "
        "two one-sided tests, at α = 0.05 after Holm's step-down correction over the family "
        "(every testable row of this report, all data sets together, since the tally is read as "
        "one set of findings; the HELD and the REFUTED tests are corrected separately): "
        '**HELD** if the claim\'s test rejects (for "A beats B": the lower bound of A − B is above '
        '0); **REFUTED** otherwise if the opposite test rejects (for "A beats B": the upper bound '
        f"is below the smallest effect of interest, SESOI = {settings.smallest_effect:g} pp for "
        'accuracy (`evaluate.smallest_effect`), claims on bits declare their own; for "within '
        'm", threshold and equivalence claims: shown beyond the margin); **INCONCLUSIVE** '
        f"otherwise, with the minimum detectable effect at the row's Holm level and "
        f"{100 * settings.power:.0f} % power, MDE = (t₁₋α + t_power) · se, and the seeds needed to "
        "detect the SESOI. A HELD row whose gain is also shown below the SESOI says so. "
        '"By construction (L_S)" is a check of what the loss optimises, reported with its raw p '
        "outside the family. NOT TESTABLE only where a model or input is missing. The CI is the "
        "unadjusted two-sided 90 % t interval; P(A > B) is the probability of improvement "
        "(per subject over pairs of seeds, averaged over subjects). All columns are in `claims.csv`."
    )
