"""Do the claims' verdicts survive a rerun? Evaluate them on two disjoint seed sets and compare.

    python benchmarks/bench_stability.py [--benchmark results/benchmark] [--checks results/checks]
                                         [--other OTHER/benchmark] [--resamples 10000]

Reads the evaluate stage's runs.csv and subject_scores.csv (per run × test subject: windows and
correct predictions). Without --other, the seeds of the study are split in two halves (sorted,
first half vs second half; an odd one out goes to the first); with --other, the second set is
another study's benchmark folder (e.g. the same study run with a seed-set configfile). Each set
is tested as a report of its own (its own Holm family). Prints, per claim × data set, the two
verdicts; a HELD in one set and REFUTED in the other is a FLIP, which must never happen (exit 1);
moves to or from INCONCLUSIVE are counted (a verdict that needs more seeds, not a contradiction).

Statistic settings are timoe.evaluation.claims.ClaimSettings with the given SESOI/resamples.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import polars as pl

from timoe.evaluation.claims import (
    HELD,
    INCONCLUSIVE,
    NOT_TESTABLE,
    REFUTED,
    ClaimSettings,
    evaluate_claims,
    load_checks,
)


def read_study(folder: Path) -> tuple[pl.DataFrame, pl.DataFrame | None]:
    """runs.csv and (if present) subject_scores.csv of one evaluate output folder."""
    runs_path = folder / "runs.csv"
    if not runs_path.is_file():
        raise FileNotFoundError(f"{runs_path} is missing (run the evaluate stage first)")
    scores_path = folder / "subject_scores.csv"
    scores = pl.read_csv(scores_path) if scores_path.is_file() else None
    return pl.read_csv(runs_path, infer_schema_length=None), scores


def split_seeds(seeds: list[int]) -> tuple[list[int], list[int]]:
    """Two disjoint halves of the sorted seeds (the first gets the odd one out)."""
    ordered = sorted(set(seeds))
    cut = (len(ordered) + 1) // 2
    return ordered[:cut], ordered[cut:]


def _subset(runs: pl.DataFrame, scores: pl.DataFrame | None, seeds: list[int]):
    keep = pl.col("seed").is_in(seeds)
    return runs.filter(keep), None if scores is None else scores.filter(keep)


def compare_verdicts(first: pl.DataFrame, second: pl.DataFrame) -> pl.DataFrame:
    """Per claim × data set: both verdicts and the change (same, flip, to/from inconclusive)."""
    cols = ["claim", "dataset", "verdict"]
    joined = first.select(cols).join(second.select(cols), on=["claim", "dataset"], suffix="_2", how="full")
    one, two = pl.col("verdict"), pl.col("verdict_2")
    decided = [HELD, REFUTED]
    change = (
        pl.when(one == two)
        .then(pl.lit("same"))
        .when(one.is_in(decided) & two.is_in(decided))
        .then(pl.lit("FLIP"))
        .when((one == INCONCLUSIVE) & two.is_in(decided))
        .then(pl.lit("from inconclusive"))
        .when(one.is_in(decided) & (two == INCONCLUSIVE))
        .then(pl.lit("to inconclusive"))
        .otherwise(pl.lit("not testable in one"))
    )
    return joined.select("claim", "dataset", one.alias("set_1"), two.alias("set_2"), change.alias("change"))


def summary(table: pl.DataFrame) -> dict[str, int]:
    counts = table.group_by("change").len()
    return dict(zip(counts["change"].to_list(), counts["len"].to_list(), strict=True))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--benchmark", type=Path, default=Path("results/benchmark"))
    ap.add_argument("--checks", type=Path, default=Path("results/checks"))
    ap.add_argument("--other", type=Path, default=None, help="a second study's benchmark folder")
    ap.add_argument("--resamples", type=int, default=10_000)
    ap.add_argument("--smallest-effect", type=float, default=ClaimSettings().smallest_effect)
    args = ap.parse_args(argv)
    try:
        runs, scores = read_study(args.benchmark)
        checks = load_checks(args.checks if args.checks.is_dir() else None)
        settings = ClaimSettings(smallest_effect=args.smallest_effect, resamples=args.resamples)
        if args.other is None:
            seeds_1, seeds_2 = split_seeds(runs["seed"].to_list())
            if not seeds_2:
                raise ValueError(f"one seed in {args.benchmark}: nothing to split")
            sets = [(f"seeds {seeds_1}", *_subset(runs, scores, seeds_1))]
            sets.append((f"seeds {seeds_2}", *_subset(runs, scores, seeds_2)))
        else:
            sets = [(str(args.benchmark), runs, scores), (str(args.other), *read_study(args.other))]
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    tables = [evaluate_claims(r, checks, scores=s, settings=settings) for _, r, s in sets]
    table = compare_verdicts(*tables)
    print(f"set 1: {sets[0][0]}\nset 2: {sets[1][0]}")
    with pl.Config(tbl_rows=-1, fmt_str_lengths=40, tbl_hide_dataframe_shape=True):
        print(table)
    both = table.filter((pl.col("set_1") != NOT_TESTABLE) & (pl.col("set_2") != NOT_TESTABLE))
    counts = summary(both)
    print(
        f"{both.height} rows testable in both: {counts.get('same', 0)} same, {counts.get('FLIP', 0)} "
        f"HELD<->REFUTED flips, {counts.get('to inconclusive', 0)} to INCONCLUSIVE, "
        f"{counts.get('from inconclusive', 0)} from INCONCLUSIVE"
    )
    return 1 if counts.get("FLIP", 0) else 0


if __name__ == "__main__":
    sys.exit(main())
