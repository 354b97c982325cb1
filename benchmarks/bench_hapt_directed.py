"""Directed vs lagged-MI temporal RUS on HAPT's continuous windows, and which target-past summary
makes the directed form informative.

Builds HAPT with params.yaml + workflow/hapt-transitions.yaml (body / gravity / gyro, continuous
windows, 12 classes) and, on the training windows only, prints R, U1, U2, S per pair × lag for:

- lagged_mi: I(Y_t; X1_{t-τ}, X2_{t-τ}) (the reference code's form);
- directed: conditioned on Y_{t-1} (rus.past_bins = 0, rus.past_horizon = 1);
- directed+dwell: Y_{t-1} × 4 dwell-time bins (rus.past_bins = 4);
- directed, x permuted over windows: the plug-in bias floor (label dynamics kept, X-Y link cut);
- horizon h: conditioned on Y_{t-h} only (rus.past_horizon = h), a coarser summary of the target's
  past (a PID conditioned on an older past, not DI(τ)); `--horizons` adds its permuted floor too.

All variants are timoe's own estimator (compute_temporal_rus with the options above).  Every term
conditioned on a stratum s is bounded by H(Y_t | s), printed as H(Y|past) on the same samples: with
Y_{t-1}, labels change at < 0.1 % of the steps, so that bound is about 0.01 bits.

    python benchmarks/bench_hapt_directed.py [--horizons 32 64] [--lags 0 1 2 4 8 16 32]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import polars as pl

from timoe.config import RusConfig, load_params
from timoe.data import hapt
from timoe.interactions._samples import label_codes, past_strata, step_index
from timoe.interactions.temporal import compute_temporal_rus

ROOT = Path(__file__).resolve().parents[1]
COMPONENTS = ["R", "U1", "U2", "S", "total"]


def conditional_entropy(y: np.ndarray, s: np.ndarray, n_y: int, n_s: int) -> float:
    """H(Y | S) in bits of paired codes y, s (n,)."""
    joint = np.zeros((n_s, n_y))
    np.add.at(joint, (s, y), 1.0)
    joint /= joint.sum()
    cond = joint / np.maximum(joint.sum(1, keepdims=True), 1e-300)
    return float(-(joint[joint > 0] * np.log2(cond[joint > 0])).sum())


def past_bound(steps: np.ndarray, rc: RusConfig, seed: int = 0) -> dict[int, float]:
    """Per lag, H(Y_t | past stratum) on exactly the samples the directed form of `rc` uses.

    steps (N, T) labels, -1 = ignored; the strata and sample index are the library's
    (past_strata at t - rc.past_horizon, step_index), so the bound matches the estimate's rows.
    """
    y, k = label_codes(steps)
    past, n_strata = past_strata(y, k, rc.past_bins)
    out = {}
    for lag in rc.lags:
        wi, ti = step_index(y, lag, True, rc.max_samples, seed, rc.past_horizon)
        out[lag] = (
            conditional_entropy(y[wi, ti], past[wi, ti - rc.past_horizon], k, n_strata) if len(wi) else 0.0
        )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--horizons", type=int, nargs="*", default=[32, 64])
    ap.add_argument("--lags", type=int, nargs="*", default=[0, 1, 2, 4, 8, 16, 32])
    args = ap.parse_args()
    params = load_params(ROOT / "params.yaml", ROOT / "workflow" / "hapt-transitions.yaml")
    rc = params.rus.model_copy(update={"lags": sorted(args.lags)})
    ds = hapt.build(params.data)
    train = ds.split == "train"
    x, steps, mods = ds.x[train], ds.step_labels[train], ds.modalities
    perm = np.random.default_rng(0).permutation(len(x))
    directed = rc.model_copy(update={"form": "directed", "past_bins": 0, "past_horizon": 1})
    variants = {
        "lagged_mi": (x, rc.model_copy(update={"form": "lagged_mi"})),
        "directed": (x, directed),
        "directed+dwell4": (x, directed.model_copy(update={"past_bins": 4})),
        "directed, x permuted": (x[perm], directed),
    }
    for h in args.horizons:
        variants[f"horizon {h}"] = (x, directed.model_copy(update={"past_horizon": h}))
        variants[f"horizon {h}, x permuted"] = (x[perm], directed.model_copy(update={"past_horizon": h}))
    parts = []
    for name, (xv, cv) in variants.items():
        t = compute_temporal_rus(xv, steps, mods, cv).select("pair", "lag", *COMPONENTS)
        bound = past_bound(steps, cv) if cv.form == "directed" else {}
        parts.append(
            t.with_columns(
                pl.lit(name).alias("form"),
                pl.col("lag").replace_strict(bound, default=None, return_dtype=pl.Float64).alias("H(Y|past)"),
            )
        )
    table = pl.concat([t.select("form", "pair", "lag", *COMPONENTS, "H(Y|past)") for t in parts])
    n_labels = np.array([np.unique(r[r >= 0]).size for r in ds.step_labels])
    transition = (ds.step_labels >= 6).any(1).mean()  # class indices 6..11 are labels 7..12
    print(
        f"HAPT {ds.modalities}, {len(ds.label)} windows ({int(train.sum())} train); "
        f"{(n_labels > 1).mean():.1%} hold > 1 label, {transition:.1%} a transition"
    )
    with pl.Config(
        tbl_rows=-1,
        float_precision=4,
        tbl_width_chars=200,
        tbl_cols=-1,
        tbl_formatting="MARKDOWN",
        tbl_hide_dataframe_shape=True,
        tbl_hide_column_data_types=True,
    ):
        print(table)


if __name__ == "__main__":
    main()
