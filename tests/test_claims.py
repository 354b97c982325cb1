"""Claims: verdicts on constructed runs tables where the right answer is known."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from scipy import stats

from timoe.config import BASELINE_MODELS
from timoe.evaluation import claims as cl
from timoe.evaluation.claims import CLAIMS, Claim, claims_markdown, evaluate_claim, evaluate_claims
from timoe.evaluation.diagnostics import diagnostics_markdown, diagnostics_table, run_diagnostics
from timoe.evaluation.stats import BASELINES, mean_ci, one_sided_t, tost


def runs_table(
    acc: dict[str, list[float]], dataset: str = "hapt", **cols: dict[str, list[float]]
) -> pl.DataFrame:
    """One row per model × seed (seeds 0..n-1) with accuracy and any extra per-run columns."""
    rows = []
    for model, values in acc.items():
        for seed, v in enumerate(values):
            row = {"dataset": dataset, "model": model, "seed": seed, "accuracy": v}
            for col, per_model in cols.items():
                row[col] = per_model.get(model, [None] * len(values))[seed]
            rows.append(row)
    return pl.DataFrame(rows)


def by_name(table: pl.DataFrame, name: str, dataset: str = "hapt") -> dict:
    return table.filter((pl.col("claim") == name) & (pl.col("dataset") == dataset)).row(0, named=True)


SUPERIOR = Claim("s", "timoe beats moe", "superior", "timoe", "moe", datasets=("hapt",))
EQUIVALENT = Claim("e", "timoe as good as moe", "equivalent", "timoe", "moe", datasets=("hapt",), margin=1.0)


def test_clear_win_is_held():
    runs = runs_table({"timoe": [0.95, 0.96, 0.97], "moe": [0.90, 0.915, 0.905]})
    r = evaluate_claim(SUPERIOR, runs, {}, "hapt")
    assert r["verdict"] == cl.HELD and r["n_pairs"] == 3
    assert r["mean_diff"] == pytest.approx(16 / 3) and r["unit"] == "pp"  # points, not fractions
    assert r["p_value"] < 0.05 and r["ci_low"] > 0
    expected = stats.ttest_rel([0.95, 0.96, 0.97], [0.90, 0.915, 0.905], alternative="greater").pvalue
    assert r["p_value"] == pytest.approx(expected)


def test_identical_runs_are_equivalent_but_not_superior():
    runs = runs_table({"timoe": [0.9, 0.92, 0.91], "moe": [0.9, 0.92, 0.91]})
    sup = evaluate_claim(SUPERIOR, runs, {}, "hapt")
    eq = evaluate_claim(EQUIVALENT, runs, {}, "hapt")
    assert sup["verdict"] == cl.FAILED and "p = 1" in sup["reason"]
    assert eq["verdict"] == cl.HELD and eq["p_value"] == 0.0 and eq["mean_diff"] == 0.0


def test_non_significant_difference_is_not_equivalence():
    # noisy seeds: no significant difference, and far too noisy to show equivalence within ±1 point
    runs = runs_table({"timoe": [0.90, 0.95, 0.88], "moe": [0.93, 0.90, 0.91]})
    assert evaluate_claim(SUPERIOR, runs, {}, "hapt")["verdict"] == cl.FAILED
    eq = evaluate_claim(EQUIVALENT, runs, {}, "hapt")
    assert eq["verdict"] == cl.FAILED and eq["ci_low"] < -1.0 < 1.0 < eq["ci_high"]


@pytest.mark.parametrize(
    ("diffs_pp", "verdict"),
    [([0.4, 0.5, 0.6], cl.HELD), ([0.8, 0.9, 1.0], cl.FAILED), ([0.9, 1.0, 1.1], cl.FAILED)],
)
def test_tost_near_the_margin(diffs_pp, verdict):
    base = [0.90, 0.91, 0.92]
    runs = runs_table({"timoe": [b + d / 100 for b, d in zip(base, diffs_pp, strict=True)], "moe": base})
    r = evaluate_claim(EQUIVALENT, runs, {}, "hapt")
    assert r["verdict"] == verdict
    # by hand: the binding one-sided test is against the upper margin, t = (mean - 1) / (s / sqrt n)
    d = np.asarray(diffs_pp)
    t = (d.mean() - 1.0) / (d.std(ddof=1) / math.sqrt(3))
    assert r["p_value"] == pytest.approx(stats.t.cdf(t, df=2), rel=1e-6)


def test_too_few_seeds_and_missing_models_are_not_testable():
    runs = runs_table({"timoe": [0.95, 0.96], "moe": [0.90, 0.91]})
    r = evaluate_claim(SUPERIOR, runs, {}, "hapt")
    assert r["verdict"] == cl.NOT_TESTABLE and r["reason"] == "2 paired seeds (< 3)"
    r = evaluate_claim(SUPERIOR, runs_table({"timoe": [0.9, 0.9, 0.9]}), {}, "hapt")
    assert r["verdict"] == cl.NOT_TESTABLE and r["reason"] == "moe not run on hapt"
    r = evaluate_claim(SUPERIOR, runs, {}, "basicmotions")
    assert r["reason"] == "timoe not run on basicmotions"


def test_pairs_by_seed_not_by_row_order():
    runs = pl.concat(
        [
            runs_table({"timoe": [0.95, 0.96, 0.97]}),
            runs_table({"moe": [0.0, 0.90, 0.91, 0.92]}).filter(pl.col("seed") > 0),  # seeds 1..3
        ]
    )
    r = evaluate_claim(SUPERIOR, runs, {}, "hapt")
    assert r["n_pairs"] == 2 and r["verdict"] == cl.NOT_TESTABLE


def test_min_diff_must_be_reached():
    claim = Claim(
        "m", "timoe beats moe by 2 points", "superior", "timoe", "moe", datasets=("hapt",), min_diff=2.0
    )
    runs = runs_table({"timoe": [0.910, 0.921, 0.930], "moe": [0.900, 0.910, 0.921]})  # +1 pp, significant
    r = evaluate_claim(claim, runs, {}, "hapt")
    assert r["p_value"] < 0.05 and r["verdict"] == cl.FAILED and "minimum 2" in r["reason"]


def test_within_oracle_is_non_inferiority():
    claim = next(c for c in CLAIMS if c.name == "near_oracle")
    oracle = [0.95, 0.96, 0.97]
    close = runs_table({"timoe": [0.94, 0.951, 0.958], "oracle": oracle}, dataset="synthetic-regimes")
    far = runs_table({"timoe": [0.92, 0.93, 0.94], "oracle": oracle}, dataset="synthetic-regimes")
    assert evaluate_claim(claim, close, {}, "synthetic-regimes")["verdict"] == cl.HELD
    assert evaluate_claim(claim, far, {}, "synthetic-regimes")["verdict"] == cl.FAILED


def test_routing_claims_read_diagnostics():
    share = {"timoe": [0.55, 0.60, 0.58]}
    chance = {"timoe": [0.25, 0.25, 0.25]}
    mi = {"timoe": [0.30, 0.35, 0.28]}
    runs = runs_table(
        {"timoe": [0.9, 0.9, 0.9]},
        dataset="synthetic-regimes",
        **{
            "diag.synergy_share_on_synergy_cells": share,
            "diag.synergy_chance": chance,
            "diag.mi_expert_regime": mi,
        },
    )
    table = evaluate_claims(runs)
    syn = by_name(table, "synergy_routing", "synthetic-regimes")
    assert syn["verdict"] == cl.HELD and syn["mean_diff"] == pytest.approx(32.67, abs=0.01)
    assert by_name(table, "regime_mi", "synthetic-regimes")["verdict"] == cl.HELD
    # MI at chance level (0 bits) does not pass a 0.05-bit threshold
    flat = runs.with_columns(pl.lit(0.0).alias("diag.mi_expert_regime"))
    assert by_name(evaluate_claims(flat), "regime_mi", "synthetic-regimes")["verdict"] == cl.FAILED
    # no diagnostics written (column absent): not testable, and it says why
    bare = runs.drop("diag.synergy_share_on_synergy_cells")
    r = by_name(evaluate_claims(bare), "synergy_routing", "synthetic-regimes")
    assert r["verdict"] == cl.NOT_TESTABLE and "diag.synergy_share_on_synergy_cells" in r["reason"]


def test_optional_inputs_absent_are_not_testable_present_are_tested():
    runs = runs_table({"timoe": [0.9, 0.91, 0.92]})
    table = evaluate_claims(runs)
    est = by_name(table, "multiscale_matches_per_lag", "synthetic-processes")
    assert est["verdict"] == cl.NOT_TESTABLE and "estimator_check.csv" in est["reason"]
    lag = by_name(table, "longer_lags_help")
    assert lag["verdict"] == cl.NOT_TESTABLE and "lag" in lag["reason"]
    check = pl.DataFrame(
        {
            "dataset": ["synthetic-processes"] * 4,
            "lag": [0, 1, 2, 3],
            "component": ["S"] * 4,
            "per_lag": [0.10, 0.80, 0.05, 0.02],
            "multiscale": [0.11, 0.79, 0.05, 0.03],
        }
    )
    long = runs_table({"timoe": [0.95, 0.96, 0.97]}).with_columns(pl.lit(16).alias("max_lag"))
    short = runs_table({"timoe": [0.90, 0.92, 0.91]}).with_columns(pl.lit(4).alias("max_lag"))
    table = evaluate_claims(runs, {"estimator_check": check, "lag_runs": pl.concat([long, short])})
    assert by_name(table, "multiscale_matches_per_lag", "synthetic-processes")["verdict"] == cl.HELD
    lag = by_name(table, "longer_lags_help")
    assert lag["verdict"] == cl.HELD and lag["mean_diff"] == pytest.approx(5.0)


def test_every_declared_claim_gets_a_row_and_markdown_line(tmp_path):
    runs = runs_table({"timoe": [0.95, 0.96, 0.97], "timoe-nolosses": [0.90, 0.92, 0.91]})
    table = evaluate_claims(runs)
    # only the data sets the runs cover (here hapt), plus the estimator check's
    studied = set(runs["dataset"].to_list())
    expected = sum(1 for c in CLAIMS for ds in c.datasets if ds in studied or c.source == "estimator_check")
    assert table.height == expected
    assert set(table["dataset"].to_list()) <= studied | {"synthetic-processes"}
    assert set(table["verdict"]) <= {cl.HELD, cl.FAILED, cl.NOT_TESTABLE}
    assert by_name(table, "rus_losses_help")["verdict"] == cl.HELD
    assert by_name(table, "context_prior_helps")["reason"] == "timoe-dataset-rus not run on hapt"
    table.write_csv(tmp_path / "claims.csv")
    assert pl.read_csv(tmp_path / "claims.csv").height == table.height
    md = claims_markdown(table)
    assert len(md.splitlines()) == table.height + 2
    n_held = table.filter(pl.col("verdict") == cl.HELD).height
    assert cl.claims_tally(table).startswith(f"{table.height} claim × data set rows: {n_held} HELD, ")
    assert "timoe 96.00 ± 1.00 vs timoe-nolosses 91.00 ± 1.00 pp (n = 3); diff +5.00" in md


def test_stats_helpers():
    d = np.array([0.1, 0.3, 0.2, 0.4])
    assert one_sided_t(d, 0.0, "greater") == pytest.approx(
        stats.ttest_1samp(d, 0.0, alternative="greater").pvalue
    )
    assert tost(d, 0.5) == pytest.approx(
        max(
            stats.ttest_1samp(d, -0.5, alternative="greater").pvalue,
            stats.ttest_1samp(d, 0.5, alternative="less").pvalue,
        )
    )
    lo, hi = mean_ci(d)
    res = stats.ttest_1samp(d, 0.0).confidence_interval(0.90)
    assert (lo, hi) == pytest.approx((res.low, res.high))
    assert one_sided_t(np.array([0.0, 0.0, 0.0]), 0.0, "greater") == 1.0
    assert math.isnan(one_sided_t(np.array([1.0]), 0.0, "greater"))


def test_baselines_are_the_configured_ones():
    assert tuple(BASELINES) == BASELINE_MODELS


def test_run_diagnostics_average_layers_and_fall_back():
    routing = {
        "diagnostics": {
            "per_layer": [
                {
                    "layer": 0,
                    "n_eff": 4.0,
                    "mi_expert_class": 0.2,
                    "mi_expert_regime": None,
                    "topk_overlap": 0.5,
                    "synergy_share": 0.4,
                    "synergy_share_on_synergy_cells": 0.8,
                },
                {
                    "layer": 1,
                    "n_eff": 6.0,
                    "mi_expert_class": 0.4,
                    "mi_expert_regime": None,
                    "topk_overlap": 0.7,
                    "synergy_share": 0.6,
                    "synergy_share_on_synergy_cells": None,  # a layer without synergy cells
                },
            ],
            "random_routing_accuracy": 0.8,
            "accuracy": 0.9,
            "random_routing_drop": 0.1,
        },
        "synergy_chance": 0.25,
        "topk_overlap_chance": 0.25,
    }
    d = run_diagnostics(routing)
    assert d["diag.n_eff"] == 5.0 and d["diag.mi_expert_class"] == pytest.approx(0.3)
    assert d["diag.mi_expert_regime"] is None and d["diag.synergy_share"] == pytest.approx(0.5)
    assert d["diag.synergy_share_on_synergy_cells"] == 0.8  # mean over the layers that have one
    assert d["diag.random_routing_drop"] == 0.1 and d["diag.synergy_chance"] == 0.25
    # the older routing.json (no diagnostics): synergy share from the regime summary, chance from counts
    old = {
        "n_synergy": 2,
        "n_experts": 8,
        "regimes": {"synergy": {"assignments": 10.0, "synergy_share": 0.7}},
    }
    d = run_diagnostics(old)
    assert d["diag.synergy_share_on_synergy_cells"] == 0.7 and d["diag.synergy_chance"] == 0.25
    assert d["diag.n_eff"] is None and d["diag.synergy_share"] is None
    assert all(v is None for v in run_diagnostics(None).values())
    runs = pl.DataFrame(
        [
            {
                "dataset": "hapt",
                "model": "timoe",
                "seed": s,
                **run_diagnostics(json.loads(json.dumps(routing))),
            }
            for s in range(2)
        ]
        + [{"dataset": "hapt", "model": "transformer", "seed": 0, **run_diagnostics(None)}]
    )
    table = diagnostics_table(runs)
    assert table["model"].to_list() == ["timoe"]  # the dense model has no diagnostics
    md = diagnostics_markdown(table)
    assert "| hapt | timoe | 2 | 5.00 | 0.300 | n/a | 0.600 | 0.250 | 50.0 | 80.0 | 25.0 | 10.00 |" in md


def test_checks_folder_is_passed_back_on_reproduce():
    from timoe.audit.rerun import stage_command
    from timoe.audit.restore import Restored

    ins = {n: Restored(n, Path(n), "") for n in ("model0", "checks")}
    cmd = stage_command("evaluate", {}, ins, Path("o"), Path("p"), [])
    assert cmd[:4] == ["evaluate", "model0", "--checks", "checks"]
