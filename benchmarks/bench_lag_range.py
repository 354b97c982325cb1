"""Does a longer lag range help? timoe with a short `rus.lags` against the study's own runs.

After the study (`make run`), for every data set of the params: quantify the training split with
the short lag set, train timoe for every seed with that prior (the same sweep result and settings
as the study's timoe runs, so the pair differs only in the lags), and write
results/checks/lag_runs.csv with one row per data set × lag setting × seed (max_lag, test
accuracy, macro_f1 as in runs.csv), the input of the report's claim "a longer lag range helps". The next
snakemake run (or `make run`) re-evaluates with it.

    python benchmarks/bench_lag_range.py [--short-lags 0] [-p params.yaml -p overrides.yaml]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import polars as pl

from timoe.config import Params, load_params
from timoe.stages.quantify import run_quantify
from timoe.stages.train import TrainJob, run_train

MODEL = "timoe"
OUT = Path("results/checks")


def _row(ds: str, seed: int, max_lag: int, metrics_path: Path) -> dict:
    m = json.loads(metrics_path.read_text())
    return {
        "dataset": ds,
        "model": MODEL,
        "seed": seed,
        "max_lag": max_lag,
        "accuracy": m["test_accuracy"],
        "macro_f1": m.get("test_macro_f1"),
    }


def short_lag_runs(params: Params, ds: str, short: list[int]) -> list[dict]:
    """Quantify with the short lags and train timoe for every seed; rows of both settings."""
    base = OUT / "lag_range"
    data, rus = Path(f"data/processed/{ds}"), base / "rus" / ds
    if not data.exists():
        raise SystemExit(f"{data} is missing: run the study first (make run)")
    p_short = params.model_copy(update={"rus": params.rus.model_copy(update={"lags": short})})
    if not rus.exists():
        run_quantify(p_short, dataset=ds, data_dir=data, out_dir=rus)
    rows = []
    sweep = Path(f"results/sweeps/{ds}/{MODEL}")
    for seed in params.train.seeds:
        study = Path(f"results/models/{ds}/{MODEL}/seed{seed}/metrics.json")
        if not study.exists():
            raise SystemExit(f"{study} is missing: run the study first (make run)")
        out = base / "models" / ds / f"seed{seed}"
        if not out.exists():
            run_train(
                p_short,
                TrainJob(
                    ds,
                    MODEL,
                    seed,
                    data,
                    out,
                    rus_dir=rus,
                    sweep_dir=sweep if params.train.use_sweep else None,
                ),
            )
        rows.append(_row(ds, seed, max(short), out / "metrics.json"))
        rows.append(_row(ds, seed, max(params.rus.lags), study))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--short-lags", default="0", help="comma-separated lags of the short setting")
    ap.add_argument("-p", "--params", action="append", type=Path, default=None)
    args = ap.parse_args()
    params = load_params(*(args.params or [Path("params.yaml")]))
    short = sorted({int(v) for v in args.short_lags.split(",")})
    if max(short) >= max(params.rus.lags):
        raise SystemExit(f"the short lags {short} must end below the study's {params.rus.lags}")
    rows = [r for ds in params.data.datasets for r in short_lag_runs(params, ds, short)]
    table = pl.DataFrame(rows)
    OUT.mkdir(parents=True, exist_ok=True)
    table.write_csv(OUT / "lag_runs.csv")
    keys = ["dataset", "max_lag"]
    print(table.group_by(keys).agg(pl.col("accuracy").mean()).sort(keys))
    print(f"wrote {OUT / 'lag_runs.csv'}")


if __name__ == "__main__":
    main()
