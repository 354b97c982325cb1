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
    # no gain at all, with no spread: the gain is shown below the SESOI (1 pp), so "beats" is refuted
    assert sup["verdict"] == cl.REFUTED and sup["p_value"] == 1.0 and sup["p_refute"] == 0.0
    assert eq["verdict"] == cl.HELD and eq["p_value"] == 0.0 and eq["mean_diff"] == 0.0


def test_non_significant_difference_is_not_equivalence():
    # noisy seeds: no significant difference, and far too noisy to show equivalence within ±1 point
    runs = runs_table({"timoe": [0.90, 0.95, 0.88], "moe": [0.93, 0.90, 0.91]})
    sup = evaluate_claim(SUPERIOR, runs, {}, "hapt")
    assert sup["verdict"] == cl.INCONCLUSIVE and sup["mde"] > 5.0 and sup["n_needed"] > 3
    assert sup["reason"].startswith(f"MDE {sup['mde']:.2f} pp at n = 3; SESOI 1 pp: needs ≥ ")
    eq = evaluate_claim(EQUIVALENT, runs, {}, "hapt")
    assert eq["verdict"] == cl.INCONCLUSIVE and eq["ci_low"] < -1.0 < 1.0 < eq["ci_high"]


@pytest.mark.parametrize(
    ("diffs_pp", "verdict"),
    [([0.4, 0.5, 0.6], cl.HELD), ([0.8, 0.9, 1.0], cl.INCONCLUSIVE), ([0.9, 1.0, 1.1], cl.INCONCLUSIVE)],
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
    runs = runs_table({"timoe": [0.95], "moe": [0.90]})
    r = evaluate_claim(SUPERIOR, runs, {}, "hapt")
    assert r["verdict"] == cl.NOT_TESTABLE and r["reason"] == "1 paired seeds (< 2)"
    runs = runs_table({"timoe": [0.95, 0.96], "moe": [0.90, 0.91]})
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
    # seeds 1, 2 pair: 0.96 - 0.90 and 0.97 - 0.91
    assert r["n_pairs"] == 2 and r["mean_diff"] == pytest.approx(6.0)


def test_a_gain_shown_but_below_the_sesoi_is_held_and_says_so():
    runs = runs_table({"timoe": [0.9051, 0.9148, 0.9250], "moe": [0.900, 0.910, 0.920]})  # +0.5 pp
    r = evaluate_claim(SUPERIOR, runs, {}, "hapt")
    assert r["p_value"] < 0.05 and r["p_refute"] < 0.05
    assert r["verdict"] == cl.HELD and r["reason"] == "gain below the SESOI 1 pp"
    # a larger SESOI moves nothing here; a SESOI below the gain leaves a plain HELD
    r = evaluate_claim(SUPERIOR, runs, {}, "hapt", settings=cl.ClaimSettings(smallest_effect=0.4))
    assert r["verdict"] == cl.HELD and r["reason"] == ""


def test_a_noisy_no_gain_is_refuted_only_when_the_sesoi_is_excluded():
    base = [0.90, 0.91, 0.92, 0.93, 0.94]
    runs = runs_table(
        {
            "timoe": [b + d for b, d in zip(base, [-0.002, 0.001, 0.0, -0.001, 0.002], strict=True)],
            "moe": base,
        }
    )
    r = evaluate_claim(SUPERIOR, runs, {}, "hapt")
    assert r["verdict"] == cl.REFUTED and r["ci_high"] < 1.0 and r["ci_low"] < 0 < r["ci_high"]
    # the same runs against a SESOI inside the interval: neither test passes
    r = evaluate_claim(SUPERIOR, runs, {}, "hapt", settings=cl.ClaimSettings(smallest_effect=0.1))
    assert r["verdict"] == cl.INCONCLUSIVE and r["ci_high"] > 0.1


def test_within_oracle_is_non_inferiority():
    claim = next(c for c in CLAIMS if c.name == "near_oracle")
    oracle = [0.95, 0.96, 0.97]
    close = runs_table({"timoe": [0.94, 0.951, 0.958], "oracle": oracle}, dataset="synthetic-regimes")
    far = runs_table({"timoe": [0.92, 0.93, 0.94], "oracle": oracle}, dataset="synthetic-regimes")
    assert evaluate_claim(claim, close, {}, "synthetic-regimes")["verdict"] == cl.HELD
    # 3 points below the oracle on every seed: inferiority beyond the 2-point margin is shown
    assert evaluate_claim(claim, far, {}, "synthetic-regimes")["verdict"] == cl.REFUTED


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
    # by construction (L_S): outside Holm's family, raw p only
    assert syn["in_family"] is False and syn["p_holm"] == syn["p_value"]
    assert "By construction (L_S)" in syn["statement"]
    assert by_name(table, "regime_mi", "synthetic-regimes")["verdict"] == cl.HELD
    # MI at chance level (0 bits) is shown below the 0.05-bit threshold
    flat = runs.with_columns(pl.lit(0.0).alias("diag.mi_expert_regime"))
    assert by_name(evaluate_claims(flat), "regime_mi", "synthetic-regimes")["verdict"] == cl.REFUTED
    # no diagnostics written (column absent): not testable, and it says why
    bare = runs.drop("diag.synergy_share_on_synergy_cells")
    r = by_name(evaluate_claims(bare), "synergy_routing", "synthetic-regimes")
    assert r["verdict"] == cl.NOT_TESTABLE and "diag.synergy_share_on_synergy_cells" in r["reason"]


ESTIMATES = pl.DataFrame(  # bench_multiscale.py --out's schema (no dataset column)
    {
        "process": ["p1"] * 4,
        "steps_factor": [1] * 4,
        "lag": [0, 1, 2, 3],
        "component": ["S"] * 4,
        "per_lag": [0.10, 0.80, 0.05, 0.02],
        "multiscale": [0.11, 0.79, 0.05, 0.03],
    }
)


def test_check_inputs_absent_are_not_testable_present_are_tested(tmp_path):
    runs = runs_table({"timoe": [0.9, 0.91, 0.92]})
    table = evaluate_claims(runs)
    est = by_name(table, "multiscale_matches_per_lag", "synthetic-processes")
    assert est["verdict"] == cl.NOT_TESTABLE and "estimator_check.csv" in est["reason"]
    lag = by_name(table, "longer_lags_help")
    assert lag["verdict"] == cl.NOT_TESTABLE and lag["reason"] == "timoe-lag0 not run on hapt"
    ESTIMATES.write_csv(tmp_path / "estimator_check.csv")
    checks = cl.load_checks(tmp_path)
    lag_runs = runs_table({"timoe": [0.95, 0.96, 0.97], "timoe-lag0": [0.90, 0.92, 0.91]})
    table = evaluate_claims(lag_runs, checks)
    assert by_name(table, "multiscale_matches_per_lag", "synthetic-processes")["verdict"] == cl.HELD
    lag = by_name(table, "longer_lags_help")
    assert lag["verdict"] == cl.HELD and lag["mean_diff"] == pytest.approx(5.0)


def test_causal_synergy_claim_pairs_the_two_drops_per_run():
    runs = runs_table(
        {"timoe": [0.9, 0.9, 0.9, 0.9]},
        dataset="synthetic-regimes",
        syn_off_drop_synergy={"timoe": [0.20, 0.25, 0.22, 0.24]},
        syn_off_drop_other={"timoe": [0.02, 0.03, 0.01, 0.02]},
    )
    r = by_name(evaluate_claims(runs), "synergy_experts_matter", "synthetic-regimes")
    assert r["verdict"] == cl.HELD and r["mean_diff"] == pytest.approx(20.75) and r["unit"] == "pp"
    assert r["model_b"] == "drop on other windows" and r["design"] == cl.SEED_DESIGN
    # the diagnostic written under the diag. prefix is found too
    prefixed = runs.rename({"syn_off_drop_synergy": "diag.syn_off_drop_synergy"})
    assert (
        by_name(evaluate_claims(prefixed), "synergy_experts_matter", "synthetic-regimes")["verdict"]
        == cl.HELD
    )
    r = by_name(
        evaluate_claims(runs.drop("syn_off_drop_other")), "synergy_experts_matter", "synthetic-regimes"
    )
    assert r["verdict"] == cl.NOT_TESTABLE and "syn_off_drop_other" in r["reason"]


def test_holm_family_spans_data_sets_and_moves_verdicts():
    # one claim, two data sets, each significant alone at p ≈ 0.03: Holm over both (m = 2) keeps
    # only what survives 0.025 / 0.05
    claim = Claim("s", "timoe beats moe", "superior", "timoe", "moe", datasets=("hapt", "wisdm"))
    alone = {}
    runs = []
    for ds, gains in (("hapt", [0.8, 3.0, 2.0, 0.6]), ("wisdm", [5.0, 5.1, 4.9, 5.0])):
        t = runs_table({"timoe": [0.9 + g / 100 for g in gains], "moe": [0.9] * 4}, dataset=ds)
        runs.append(t)
        alone[ds] = evaluate_claim(claim, t, {}, ds)
    table = evaluate_claims(pl.concat(runs), claims=(claim,))
    hapt, wisdm = by_name(table, "s", "hapt"), by_name(table, "s", "wisdm")
    p = [alone["hapt"]["p_value"], alone["wisdm"]["p_value"]]
    assert 0.025 < p[0] < 0.05 and p[1] < 0.001  # hapt passes alone, not at its Holm level
    assert alone["hapt"]["verdict"] == cl.HELD
    assert hapt["p_holm"] == pytest.approx(max(min(1, 2 * p[1]), p[0]))  # the second-smallest, ×1
    assert wisdm["p_holm"] == pytest.approx(2 * p[1]) and wisdm["verdict"] == cl.HELD
    assert hapt["p_holm"] == pytest.approx(p[0]) and hapt["verdict"] == cl.HELD
    # a third row with no gain: hapt's p now ranks second of three (×2) and no longer survives
    third = runs_table({"timoe": [0.91, 0.89, 0.905, 0.895], "moe": [0.9] * 4}, dataset="uci-har")
    claim3 = Claim("s", "timoe beats moe", "superior", "timoe", "moe", datasets=("hapt", "wisdm", "uci-har"))
    table = evaluate_claims(pl.concat([*runs, third]), claims=(claim3,))
    hapt = by_name(table, "s", "hapt")
    assert hapt["p_holm"] == pytest.approx(2 * p[0]) and hapt["verdict"] == cl.INCONCLUSIVE
    assert "MDE" in hapt["reason"]


def scores_table(
    effects: dict[str, float], seeds: int, subjects: int, dataset: str = "hapt", rng_seed: int = 0
):
    """Per-subject test scores (300 windows each) and the runs table they add up to."""
    rng = np.random.default_rng(rng_seed)
    rows, runs = [], []
    for model, effect in effects.items():
        for s in range(seeds):
            seed_shift = rng.normal(0, 0.004)
            correct = []
            for j in range(subjects):
                c = int(rng.binomial(300, min(1.0, 0.85 + effect + seed_shift + 0.01 * (j % 3))))
                rows.append(
                    {"dataset": dataset, "model": model, "seed": s, "subject": j, "n": 300, "correct": c}
                )
                correct.append(c)
            runs.append(
                {"dataset": dataset, "model": model, "seed": s, "accuracy": sum(correct) / (300 * subjects)}
            )
    return pl.DataFrame(runs), pl.DataFrame(rows)


def test_accuracy_claims_use_the_subject_seed_bootstrap_when_scores_exist():
    runs, scores = scores_table({"timoe": 0.05, "moe": 0.0, "fusemoe": 0.05}, seeds=5, subjects=9)
    settings = cl.ClaimSettings(resamples=2_000)
    table = evaluate_claims(runs, scores=scores, settings=settings)
    moe, fuse = by_name(table, "beats_moe"), by_name(table, "beats_fusemoe")
    assert moe["design"] == cl.BOOTSTRAP_DESIGN and moe["n_subjects"] == 9 and moe["n_pairs"] == 5
    # the estimate is the difference of the pooled accuracies the runs table holds
    acc = runs.group_by("model").agg(pl.col("accuracy").mean())
    means = dict(zip(acc["model"], acc["accuracy"], strict=True))
    assert moe["mean_diff"] == pytest.approx(100 * (means["timoe"] - means["moe"]))
    assert moe["verdict"] == cl.HELD and moe["prob_improvement"] > 0.95
    assert fuse["verdict"] in (cl.REFUTED, cl.INCONCLUSIVE) and 0.2 < fuse["prob_improvement"] < 0.8
    # deterministic: the same inputs give the same numbers
    again = evaluate_claims(runs, scores=scores, settings=settings)
    assert again.equals(table)
    # a diagnostic claim keeps the per-seed t (no per-window data for it)
    assert by_name(table, "rus_losses_help")["verdict"] == cl.NOT_TESTABLE


def test_every_declared_claim_gets_a_row_and_markdown_line(tmp_path):
    runs = runs_table({"timoe": [0.95, 0.96, 0.97], "timoe-nolosses": [0.90, 0.92, 0.91]})
    table = evaluate_claims(runs)
    # only the data sets the runs cover (here hapt), plus the estimator check's
    studied = set(runs["dataset"].to_list())
    expected = sum(1 for c in CLAIMS for ds in c.datasets if ds in studied or c.source == "estimator_check")
    assert table.height == expected
    assert set(table["dataset"].to_list()) <= studied | {"synthetic-processes"}
    assert set(table["verdict"]) <= set(cl.VERDICTS)
    assert by_name(table, "rus_losses_help")["verdict"] == cl.HELD
    assert by_name(table, "context_prior_helps")["reason"] == "timoe-dataset-rus not run on hapt"
    table.write_csv(tmp_path / "claims.csv")
    back = pl.read_csv(tmp_path / "claims.csv")
    assert back.height == table.height
    for col in ("p_value", "p_holm", "p_refute", "p_refute_holm", "ci_low", "ci_high", "mde", "n_needed"):
        assert col in back.columns
    md = claims_markdown(table)
    assert len(md.splitlines()) == table.height + 2
    n_held = table.filter(pl.col("verdict") == cl.HELD).height
    assert cl.claims_tally(table).startswith(f"{table.height} claim × data set rows: {n_held} HELD, ")
    assert "timoe 96.00 ± 1.00 vs timoe-nolosses 91.00 ± 1.00 pp (n = 3); diff +5.00" in md
    assert "p claim / refute (Holm)" in md.splitlines()[0]


def test_claims_declare_their_units():
    for c in CLAIMS:  # a claim not in pp must bring its own SESOI; every verdict needs one
        assert cl._sesoi(c, cl.ClaimSettings()) > 0
    with pytest.raises(ValueError, match="must declare its own sesoi"):
        cl._sesoi(Claim("x", "x", "superior", "timoe", "moe", metric="diag.n_eff"), cl.ClaimSettings())


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
