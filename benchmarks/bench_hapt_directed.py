"""Directed vs lagged-MI temporal RUS on HAPT's continuous windows, and which target-past summary
makes the directed form informative.

Builds HAPT with params.yaml + workflow/hapt-transitions.yaml (body / gravity / gyro, continuous
windows, 12 classes) and, on the training windows only, prints R, U1, U2, S per pair × lag for:

- lagged_mi: I(Y_t; X1_{t-τ}, X2_{t-τ}) (the reference code's form);
- directed: conditioned on Y_{t-1} (rus.past_bins = 0), as `timoe quantify` computes it;
- directed+dwell: Y_{t-1} × 4 dwell-time bins (rus.past_bins = 4);
- directed, x permuted over windows: the plug-in bias floor (label dynamics kept, X-Y link cut);
- horizon h: conditioned on Y_{t-h} only, a coarser summary of the target's past (not in timoe's
  estimator yet; computed here with the same discretisation and exact PID).

Every term conditioned on a stratum s is bounded by H(Y_t | s), also printed: with Y_{t-1}, labels
change at < 0.1 % of the steps, so that bound is about 0.01 bits.

    python benchmarks/bench_hapt_directed.py [--horizons 32 64] [--lags 0 1 2 4 8 16 32]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import polars as pl

from timoe.config import RusConfig, load_params
from timoe.data import hapt
from timoe.interactions._samples import label_codes, subsample
from timoe.interactions.discretize import Discretizer
from timoe.interactions.exact import exact_pid, joint_counts
from timoe.interactions.temporal import ScalarFeature, compute_temporal_rus

ROOT = Path(__file__).resolve().parents[1]
COMPONENTS = ["R", "U1", "U2", "S", "total"]


def conditional_entropy(y: np.ndarray, s: np.ndarray, n_y: int, n_s: int) -> float:
    """H(Y | S) in bits of paired codes y, s (n,)."""
    joint = np.zeros((n_s, n_y))
    np.add.at(joint, (s, y), 1.0)
    joint /= joint.sum()
    cond = joint / np.maximum(joint.sum(1, keepdims=True), 1e-300)
    return float(-(joint[joint > 0] * np.log2(cond[joint > 0])).sum())


def horizon_rus(x: np.ndarray, steps: np.ndarray, modalities: dict[str, list[int]], rc: RusConfig,
                horizon: int) -> pl.DataFrame:
    """PID of (X1_{t-τ}, X2_{t-τ}; Y_t) within strata Y_{t-horizon}, averaged by p(stratum).

    x (N, T, C), steps (N, T) class index or -1; the same per-step PC1 feature and quantile bins as
    timoe.interactions.temporal, fitted on these (training) windows.
    """
    y, k = label_codes(steps)
    codes = {}
    for m, ch in modalities.items():
        f = ScalarFeature(rc.feature).fit(x[:, :, ch]).transform(x[:, :, ch])
        codes[m] = Discretizer(rc.n_bins, rc.discretizer).fit(f.ravel()).transform(f.ravel()).reshape(f.shape)
    names = list(modalities)
    pairs = [(a, b) for i, a in enumerate(names) for b in names[i + 1:]]
    n_steps, rows = y.shape[1], []
    for lag in rc.lags:
        first = max(lag, horizon)  # target step t needs t - lag and t - horizon inside the window
        ok = (y[:, first:] >= 0) & (y[:, first - horizon: n_steps - horizon] >= 0)
        wi, ti = np.nonzero(ok)
        keep = subsample(len(wi), rc.max_samples, 0, lag)
        wi, ti = wi[keep], ti[keep] + first
        target, stratum = y[wi, ti], y[wi, ti - horizon]
        weight = np.bincount(stratum, minlength=k) / len(stratum)
        tables = [joint_counts(codes[a][wi, ti - lag], codes[b][wi, ti - lag], target,
                               (rc.n_bins, rc.n_bins, k), group=stratum, n_groups=k) for a, b in pairs]
        res = exact_pid(np.concatenate(tables), tol=rc.solver_tol, device=rc.device)
        comps = np.stack([res.redundancy, res.unique1, res.unique2, res.synergy, res.total], 1)
        bound = conditional_entropy(target, stratum, k, k)
        for i, (a, b) in enumerate(pairs):
            vals = weight @ comps[i * k: (i + 1) * k]
            rows.append({"pair": f"{a}|{b}", "lag": lag, **dict(zip(COMPONENTS, vals.tolist(), strict=True)),
                         "H(Y|past)": bound})
    return pl.DataFrame(rows).sort("pair", "lag", maintain_order=True)


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
    variants = {
        "lagged_mi": (x, rc.model_copy(update={"form": "lagged_mi"})),
        "directed": (x, rc.model_copy(update={"form": "directed", "past_bins": 0})),
        "directed+dwell4": (x, rc.model_copy(update={"form": "directed", "past_bins": 4})),
        "directed, x permuted": (x[perm], rc.model_copy(update={"form": "directed", "past_bins": 0})),
    }
    parts = [compute_temporal_rus(xv, steps, mods, cv).select("pair", "lag", *COMPONENTS)
             .with_columns(pl.lit(name).alias("form"), pl.lit(None, pl.Float64).alias("H(Y|past)"))
             for name, (xv, cv) in variants.items()]
    parts += [horizon_rus(x, steps, mods, rc, h).with_columns(pl.lit(f"horizon {h}").alias("form"))
              for h in args.horizons]
    table = pl.concat([t.select("form", "pair", "lag", *COMPONENTS, "H(Y|past)") for t in parts])
    n_labels = np.array([np.unique(r[r >= 0]).size for r in ds.step_labels])
    transition = (ds.step_labels >= 6).any(1).mean()  # class indices 6..11 are labels 7..12
    print(f"HAPT {ds.modalities}, {len(ds.label)} windows ({int(train.sum())} train); "
          f"{(n_labels > 1).mean():.1%} hold > 1 label, {transition:.1%} a transition")
    with pl.Config(tbl_rows=-1, float_precision=4, tbl_width_chars=200, tbl_cols=-1,
                   tbl_formatting="MARKDOWN", tbl_hide_dataframe_shape=True, tbl_hide_column_data_types=True):
        print(table)


if __name__ == "__main__":
    main()
