"""Did the speed work cost accuracy? The study's models trained by a base commit and by the
current tree on the same settings, paired by seed, tested for non-inferiority.

    python benchmarks/bench_speed_accuracy.py [--base 9f9e351] [--datasets synthetic-regimes,hapt]
        [--models transformer,moe,timoe] [--seeds 0,1,2,3,4] [--margin 0.5] [--jobs 2]
        [--workdir DIR]

The base commit is checked out in a temporary `git worktree`. Each tree prepares the data,
quantifies the RUS tables and trains with its own code (PYTHONPATH = that tree's src), from one
params file written here: the current params.yaml as data set D runs it (`Params.for_dataset`,
so HAPT's patch, windows and epochs), cut to the keys the base's schema knows, the sweep off
(`train.use_sweep: false`, both trees at params.yaml's learning rate). Keys only the current
tree knows keep their schema defaults, which are the base's behaviour (`train.select: best`,
no per-data-set settings), so what differs between the two runs of a pair is the code alone.

Design: unit = (data set, model, seed); difference = new - base test accuracy in points; a
one-sided paired t-test per (data set, model) for non-inferiority at --margin points (the issue's
0.5): the new code is non-inferior when the lower 95 % bound of the mean difference lies above
-margin. With 5 seeds and a seed spread of ~0.5-1 point the bound is wide: "not shown" is the
honest reading of a bound below -margin, not "worse". Exit 0 when every job ran (a verdict is a
report, not a gate), 2 on a failed job.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
DEFAULT_BASE = "9f9e351"  # the commit before the speed work of issue 19


def _tree_env(tree: Path) -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=str(tree / "src"), OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")


def known_keys(tree: Path) -> dict:
    """The base schema's default params as a nested dict: the key paths it accepts."""
    code = "import json; from timoe.config import Params; print(json.dumps(Params().model_dump()))"
    out = subprocess.run(
        [sys.executable, "-c", code], env=_tree_env(tree), capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout)


def _cut(values: dict, known: dict) -> dict:
    """values restricted to the key paths of `known` (nested sections recursively)."""
    out = {}
    for key, value in values.items():
        if key not in known:
            continue
        if isinstance(value, dict) and isinstance(known[key], dict) and known[key]:
            out[key] = _cut(value, known[key])
        else:
            out[key] = value
    return out


def shared_params(dataset: str, models: list[str], seeds: list[int], known: dict) -> dict:
    from timoe.config import load_params

    eff = load_params(REPO / "params.yaml").for_dataset(dataset).model_dump()
    eff["data"]["datasets"] = [dataset]
    eff["model"]["names"] = models
    eff["train"] |= {"use_sweep": False, "seeds": seeds}
    return _cut(eff, known)


def _run(tree: Path, args: list[str], cwd: Path, log: Path) -> None:
    with log.open("w") as fh:
        done = subprocess.run(
            [sys.executable, "-m", "timoe", *args], env=_tree_env(tree), cwd=cwd, stdout=fh, stderr=fh
        )
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(args[:3])} failed in {tree} (rc {done.returncode}); see {log}")


def prepare_tree(tree: Path, work: Path, dataset: str, params: Path) -> tuple[Path, Path]:
    data, rus = work / "data" / dataset, work / "rus" / dataset
    if not data.exists():
        _run(
            tree,
            ["prepare", "--dataset", dataset, "--out", str(data), "-p", str(params)],
            work,
            work / f"prepare-{dataset}.log",
        )
    if not rus.exists():
        cmd = ["quantify", "--dataset", dataset, "--data", str(data), "--out", str(rus), "-p", str(params)]
        _run(tree, cmd, work, work / f"quantify-{dataset}.log")
    return data, rus


def train_one(
    tree: Path, work: Path, job: tuple[str, str, int], data: Path, rus: Path, params: Path
) -> float:
    dataset, model, seed = job
    out = work / "models" / dataset / model / f"seed{seed}"
    if not (out / "metrics.json").exists():
        cmd = ["train", "--dataset", dataset, "--model", model, "--seed", str(seed), "--data", str(data)]
        cmd += ["--rus", str(rus), "--out", str(out), "-p", str(params)]
        log = work / "logs" / f"{dataset}-{model}-{seed}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        _run(tree, cmd, work, log)
    return float(json.loads((out / "metrics.json").read_text())["test_accuracy"])


def noninferiority(diffs: list[float], margin: float) -> tuple[float, float, str]:
    """(mean, lower one-sided 95 % bound, verdict) of paired differences in points."""
    from scipy import stats

    n = len(diffs)
    mean = sum(diffs) / n
    if n < 2:
        return mean, -math.inf, "too few seeds"
    sd = math.sqrt(sum((d - mean) ** 2 for d in diffs) / (n - 1))
    lower = mean - stats.t.ppf(0.95, n - 1) * sd / math.sqrt(n) if sd > 0 else mean
    return mean, lower, "non-inferior" if lower > -margin else "not shown"


def train_all(args: argparse.Namespace, base: Path, root: Path) -> dict[tuple[str, str, str, int], float]:
    """Test accuracy of every (tree, data set, model, seed), both trees' jobs interleaved."""
    datasets, models = args.datasets.split(","), args.models.split(",")
    seeds = [int(s) for s in args.seeds.split(",")]
    trees = {"base": base, "new": REPO}
    known = known_keys(base)
    acc = {}
    for dataset in datasets:
        setups = {}
        for name, tree in trees.items():
            work = (root / name).resolve()
            work.mkdir(parents=True, exist_ok=True)
            raw = shared_params(dataset, models, seeds, known)
            raw["tracking"] = raw.get("tracking", {}) | {
                "uri": f"sqlite:///{work / 'mlflow.db'}",
                "dvc_commit": False,
            }
            params = work / f"params-{dataset}.yaml"
            params.write_text(yaml.safe_dump(raw, sort_keys=False))
            setups[name] = (tree, work, *prepare_tree(tree, work, dataset, params), params)
        jobs = [(name, (dataset, m, s)) for s in seeds for m in models for name in trees]
        with ThreadPoolExecutor(max_workers=args.jobs) as pool:
            futures = {(n, *j): pool.submit(train_one, *setups[n][:2], j, *setups[n][2:]) for n, j in jobs}
        acc |= {key: fut.result() for key, fut in futures.items()}
    return acc


def print_report(acc: dict, args: argparse.Namespace) -> None:
    datasets, models = args.datasets.split(","), args.models.split(",")
    seeds = [int(s) for s in args.seeds.split(",")]
    print(
        f"\n| data set | model | base % | new % | new - base (pp), seeds {seeds} | mean | low 95% | verdict |"
    )
    print("|---|---|---|---|---|---|---|---|")
    shown = 0
    for d in datasets:
        for m in models:
            b = [100 * acc[("base", d, m, s)] for s in seeds]
            n = [100 * acc[("new", d, m, s)] for s in seeds]
            diffs = [y - x for x, y in zip(b, n, strict=True)]
            mean, lower, verdict = noninferiority(diffs, args.margin)
            shown += verdict == "non-inferior"
            per = " ".join(f"{x:+.2f}" for x in diffs)
            row = [
                d,
                m,
                f"{sum(b) / len(b):.2f}",
                f"{sum(n) / len(n):.2f}",
                per,
                f"{mean:+.2f}",
                f"{lower:+.2f}",
            ]
            print("| " + " | ".join([*row, verdict]) + " |")
    pairs = len(datasets) * len(models)
    print(f"\nnon-inferiority at {args.margin} pp shown for {shown} of {pairs} (data set, model) pairs")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", default=DEFAULT_BASE)
    ap.add_argument("--datasets", default="synthetic-regimes,hapt")
    ap.add_argument("--models", default="transformer,moe,timoe")
    ap.add_argument("--seeds", default="0,1,2,3,4")
    ap.add_argument("--margin", type=float, default=0.5, help="non-inferiority margin, points")
    ap.add_argument("--jobs", type=int, default=2, help="train jobs at once (one thread each)")
    ap.add_argument("--workdir", type=Path, help="keep data, models and logs here (reused)")
    args = ap.parse_args()
    head = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    )
    print(f"new = tree at {head.stdout.strip()}, base = {args.base}; margin {args.margin} points", flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-acc-") as tmp:
        base = Path(tmp) / "base"
        add = ["git", "-C", str(REPO), "worktree", "add", "--detach", "--quiet", str(base), args.base]
        subprocess.run(add, check=True)
        try:
            acc = train_all(args, base, args.workdir or Path(tmp))
        except RuntimeError as err:
            print(f"error: {err}", file=sys.stderr)
            sys.exit(2)
        finally:
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(base)], check=False)
    print_report(acc, args)


if __name__ == "__main__":
    main()
