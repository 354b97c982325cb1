"""`timoe audit` on a real MLflow store made by the real stages, in a temporary git repository.

One module fixture runs prepare, a 2-trial sweep, two train seeds (one with the sweep's best
params) and evaluate on BasicMotions with the smoke config, on CPU, from a committed copy of
the project; every test then audits that store. Tests that change anything work on copies.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from timoe.cli import app
from timoe.config import load_params

ROOT = Path(__file__).resolve().parents[1]
# What a run needs from the project: the code and the config files the stages and DVC read.
PROJECT_FILES = (
    "src",
    "workflow",
    "params.yaml",
    "pyproject.toml",
    "Snakefile",
    "dvc.yaml",
    ".gitignore",
    ".dvcignore",
    ".dvc/config",
    ".dvc/.gitignore",
)
SEED1_OVERRIDES = {"train.lr": 0.0021, "model.dropout": 0.05}


def git(*args: str, cwd: Path) -> str:
    return subprocess.run(
        ["git", "-c", "user.email=audit@timoe", "-c", "user.name=audit", *args],
        cwd=cwd,
        check=True,
        capture_output=True,
        text=True,
    ).stdout


def copy_project(dest: Path) -> None:
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    for rel in PROJECT_FILES:
        src = ROOT / rel
        if src.is_dir():
            shutil.copytree(src, dest / rel, ignore=ignore)
        elif src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)


def audit(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["audit", *args])
    return result.exit_code, result.output


# The jobs run in a separate interpreter on the copy's sources (PYTHONPATH), so the code that made the
# runs is exactly the committed code, whatever this process imported earlier.
DRIVER = """
import json, sys
from pathlib import Path
from timoe.config import validate
from timoe.stages.evaluate import run_evaluate
from timoe.stages.prepare import run_prepare
from timoe.stages.sweep import run_sweep
from timoe.stages.train import TrainJob, run_train

params = validate(json.loads(Path(sys.argv[1]).read_text()))
overrides = json.loads(sys.argv[2])
data = Path("data/processed/basicmotions")
models = Path("results/models/basicmotions/transformer")
sweep = Path("results/sweeps/basicmotions/transformer")
run_prepare(params, dataset="basicmotions", out_dir=data)
run_sweep(params, dataset="basicmotions", model="transformer", data_dir=data, out_dir=sweep, n_trials=2)
run_train(params, TrainJob("basicmotions", "transformer", 0, data, models / "seed0"))
# seed 1 trains from fixed "best params", so its lineage and reproduction include a sweep input
best = json.loads((sweep / "best_params.json").read_text())
best["params"] = overrides
(sweep / "best_params.json").write_text(json.dumps(best))
run_train(params, TrainJob("basicmotions", "transformer", 1, data, models / "seed1", sweep_dir=sweep))
run_evaluate(params, model_dirs=[models / "seed0", models / "seed1"], out_dir=Path("results/benchmark"))
"""


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> dict:
    from timoe.config import load_params

    base = tmp_path_factory.mktemp("audit")
    repo = base / "repo"
    repo.mkdir()
    copy_project(repo)
    git("init", "-q", cwd=repo)
    git("add", "-A", cwd=repo)
    git("commit", "-qm", "snapshot", cwd=repo)
    uri = f"sqlite:///{base / 'mlflow.db'}"
    raw = load_params(ROOT / "params.yaml", ROOT / "workflow" / "smoke.yaml").model_dump()
    raw["tracking"]["uri"] = uri
    raw["train"]["device"] = raw["rus"]["device"] = "cpu"  # exact reproduction is promised on CPU
    raw["sweep"]["space"] = {"transformer": {"train.lr": {"type": "float", "low": 1e-3, "high": 3e-3}}}
    (base / "params.json").write_text(json.dumps(raw))
    (base / "driver.py").write_text(DRIVER)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "TIMOE_", "SNAKEMAKE_"))}
    env["PYTHONPATH"] = str(repo / "src")
    # cwd: relative paths and the git state are recorded as under Snakemake
    r = subprocess.run(
        [sys.executable, str(base / "driver.py"), str(base / "params.json"), json.dumps(SEED1_OVERRIDES)],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    data = Path("data/processed/basicmotions")
    models = Path("results/models/basicmotions/transformer")
    sweep_dir = Path("results/sweeps/basicmotions/transformer")
    rid = {
        p: (repo / p / "run_id.txt").read_text().strip()
        for p in (
            "data/processed/basicmotions",
            str(sweep_dir),
            str(models / "seed0"),
            str(models / "seed1"),
            "results/benchmark",
        )
    }
    return {
        "base": base,
        "repo": repo,
        "uri": uri,
        "commit": git("rev-parse", "HEAD", cwd=repo).strip(),
        "prepare": rid[str(data)],
        "sweep": rid[str(sweep_dir)],
        "train0": rid[str(models / "seed0")],
        "train1": rid[str(models / "seed1")],
        "evaluate": rid["results/benchmark"],
    }


def store_copy(study: dict, name: str) -> tuple[str, Path]:
    db = study["base"] / f"{name}.db"
    shutil.copy2(study["base"] / "mlflow.db", db)
    return f"sqlite:///{db}", db


def test_list_filters(study):
    uri = study["uri"]
    code, out = audit("list", "--tracking-uri", uri)
    assert code == 0, out
    for key in ("prepare", "sweep", "train0", "train1", "evaluate"):
        assert study[key][:12] in out
    assert "trial" not in out  # Optuna trials only with --trials
    assert "5 run(s)" in out and study["commit"][:8] in out and "test_accuracy" in out

    code, out = audit(
        "list",
        "--tracking-uri",
        uri,
        "--stage",
        "train",
        "--model",
        "transformer",
        "--dataset",
        "basicmotions",
        "--status",
        "finished",
    )
    assert (
        code == 0 and "2 run(s)" in out and study["train0"][:12] in out and study["prepare"][:12] not in out
    )

    code, out = audit("list", "--tracking-uri", uri, "--trials")
    assert "7 run(s)" in out and "sweep-trial" in out

    acc = {
        k: json.loads(audit("show", study[k], "--tracking-uri", uri, "--json")[1])["metrics"]["test_accuracy"]
        for k in ("train0", "train1")
    }
    lo, hi = sorted(acc.values())
    code, out = audit("list", "--tracking-uri", uri, "--metric", f"test_accuracy>={hi}")
    assert code == 0 and study[max(acc, key=acc.get)][:12] in out
    assert (study[min(acc, key=acc.get)][:12] in out) == (lo == hi)
    code, out = audit("list", "--tracking-uri", uri, "--metric", "test_accuracy>1.5")
    assert "0 run(s)" in out

    today = dt.date.today()
    assert "5 run(s)" in audit("list", "--tracking-uri", uri, "--since", str(today), "--until", str(today))[1]
    assert "0 run(s)" in audit("list", "--tracking-uri", uri, "--until", str(today - dt.timedelta(days=1)))[1]
    assert "0 run(s)" in audit("list", "--tracking-uri", uri, "--dataset", "hapt")[1]


def test_list_json_and_bad_requests(study, tmp_path):
    code, out = audit("list", "--tracking-uri", study["uri"], "--stage", "prepare", "--json")
    rows = json.loads(out)
    assert code == 0 and [r["run_id"] for r in rows] == [study["prepare"]]
    assert rows[0]["git_dirty"] == "false" and rows[0]["wildcards"] == {"dataset": "basicmotions"}

    code, out = audit("list", "--tracking-uri", study["uri"], "--metric", "test_accuracy~0.9")
    assert code == 2 and "test_accuracy>=0.9" in out
    code, out = audit("list", "--tracking-uri", f"sqlite:///{tmp_path / 'none.db'}")
    assert code == 2 and "no tracking store" in out and not (tmp_path / "none.db").exists()
    code, out = audit("show", "0123456789abcdef0123456789abcdef", "--tracking-uri", study["uri"])
    assert code == 2 and "no run" in out


def test_show_run(study):
    code, out = audit("show", study["train1"][:10], "--tracking-uri", study["uri"])  # a prefix is enough
    assert code == 0, out
    assert f"run {study['train1']}" in out and "train/basicmotions/transformer/seed1" in out
    assert f"git {study['commit'][:10]} (clean)" in out
    assert f"from run {study['prepare']}" in out and f"from run {study['sweep']}" in out
    for text in ("test_accuracy", "train.lr", "0.0021", "resolved_config.json", "metrics.json", "device"):
        assert text in out
    # a sweep run lists its trials as children, and a trial names its parent
    code, out = audit("show", study["sweep"], "--tracking-uri", study["uri"])
    assert code == 0 and "children    2" in out and "trial 0" in out and "best_params.json" in out
    sweep = json.loads(audit("show", study["sweep"], "--tracking-uri", study["uri"], "--json")[1])
    assert len(sweep["children"]) == 2
    code, out = audit("show", sweep["children"][0], "--tracking-uri", study["uri"])
    assert f"parent      {study['sweep']}  sweep/basicmotions/transformer" in out


def test_show_by_output_path(study):
    out_dir = study["repo"] / "results/models/basicmotions/transformer/seed0"
    code, out = audit("show", str(out_dir / "metrics.json"), "--tracking-uri", study["uri"])
    assert code == 0 and f"run {study['train0']}" in out


def test_compare(study):
    code, out = audit("compare", study["train0"], study["train1"], "--tracking-uri", study["uri"])
    assert code == 0, out
    params = out.split("params")[1].split("metrics")[0]
    assert "train.lr" in params and "0.0021" in params and "model.dropout" in params
    assert "model.d_model" not in params  # equal keys are left out
    lineage = out.split("\nlineage")[1]
    assert "wildcard.seed" in lineage and "input.sweep.sha256" in lineage
    data = json.loads(
        audit(
            "compare",
            study["train0"],
            study["train1"],
            study["prepare"],
            "--tracking-uri",
            study["uri"],
            "--json",
        )[1]
    )
    assert [r["label"] for r in data["runs"]] == ["A", "B", "C"]
    default_lr = load_params(ROOT / "params.yaml", ROOT / "workflow" / "smoke.yaml").train.lr
    assert data["params"]["train.lr"] == [str(default_lr), "0.0021", None]
    code, out = audit("compare", study["train0"], "--tracking-uri", study["uri"])
    assert code == 2 and "at least two" in out


def test_lineage_tree(study):
    bench = study["repo"] / "results/benchmark"
    code, out = audit("lineage", str(bench), "--tracking-uri", study["uri"], "--root", str(study["repo"]))
    assert code == 0, out
    assert out.startswith(f"evaluate  run {study['evaluate']}")
    for key in ("train0", "train1", "prepare", "sweep"):
        assert study[key][:12] in out
    assert "input model0: results/models/basicmotions/transformer/seed0" in out
    assert "input sweep: results/sweeps/basicmotions/transformer" in out
    assert "(shown above)" in out  # the prepare run feeds three jobs; printed in full once
    assert "BasicMotions_TRAIN.ts" in out and "local: ok" in out
    assert f"code version {study['commit']}: 5 run(s)" in out and "WARNING" not in out

    tree = json.loads(
        audit(
            "lineage", study["train1"], "--tracking-uri", study["uri"], "--root", str(study["repo"]), "--json"
        )[1]
    )["tree"]
    assert tree["git_commit"] == study["commit"] and tree["git_dirty"] == "false"
    ups = {i["name"]: i for i in tree["inputs"]}
    assert ups["data"]["upstream"]["run_id"] == study["prepare"] and ups["sweep"]["run_id"] == study["sweep"]
    assert ups["sweep"]["upstream"]["inputs"][0]["upstream"]["repeated"]


def test_lineage_flags_changed_and_missing_inputs(study, tmp_path):
    shutil.copytree(study["repo"] / "data", tmp_path / "data")
    (tmp_path / "data/processed/basicmotions/meta.json").write_text("{}")
    code, out = audit("lineage", study["train0"], "--tracking-uri", study["uri"], "--root", str(tmp_path))
    assert code == 0 and "local: changed" in out and "WARNING: local input(s) differ" in out
    code, out = audit("lineage", study["evaluate"], "--tracking-uri", study["uri"], "--root", str(tmp_path))
    assert "local: missing" in out


def test_reproduce_train_exact_match(study):
    uri, _ = store_copy(study, "rerun-match")  # an already-initialised store: saves MLflow's migrations
    code, out = audit(
        "reproduce",
        study["train1"],
        "--tracking-uri",
        study["uri"],
        "--repo",
        str(study["repo"]),
        "--rerun-uri",
        uri,
    )
    assert code == 0, out
    assert f"git worktree at {study['commit'][:12]}" in out and "resolved_params.yaml" in out
    assert "input data: copied from" in out and "input sweep: copied from" in out
    assert "RESULT: exact match" in out and "test_accuracy" in out and "differs" not in out
    assert "WARNING" not in out
    assert git("worktree", "list", cwd=study["repo"]).count("\n") == 1  # the temporary worktree is gone


def test_reproduce_detects_tampered_metric_and_dirty_run(study):
    uri, db = store_copy(study, "tampered")
    with sqlite3.connect(db) as con:
        for tbl in ("metrics", "latest_metrics"):
            con.execute(
                f"UPDATE {tbl} SET value = 0.999 WHERE key = 'test_accuracy' AND run_uuid = ?",
                (study["train0"],),
            )
        con.execute(
            "UPDATE tags SET value = 'true' WHERE key = 'git_dirty' AND run_uuid = ?", (study["train0"],)
        )
    code, out = audit(
        "reproduce", study["train0"], "--tracking-uri", uri, "--repo", str(study["repo"]), "--rerun-uri", uri
    )
    assert code == 3, out  # exit 3: the rerun ran and its metrics differ (not a bug, not bad input)
    assert "WARNING: run" in out and "DIRTY" in out and "Trying anyway" in out
    row = next(ln for ln in out.splitlines() if ln.startswith("test_accuracy "))
    assert "0.999" in row and row.rstrip().endswith("differs")
    assert "RESULT: MISMATCH (1 of" in out


def test_reproduce_errors(study):
    uri, db = store_copy(study, "errors")
    trial = json.loads(audit("show", study["sweep"], "--tracking-uri", uri, "--json")[1])["children"][0]
    code, out = audit("reproduce", trial, "--tracking-uri", uri, "--repo", str(study["repo"]))
    assert code == 2 and "reproduce its sweep run" in out
    with sqlite3.connect(db) as con:
        con.execute(
            "UPDATE tags SET value = ? WHERE key = 'git_commit' AND run_uuid = ?", ("f" * 40, study["train0"])
        )
    code, out = audit("reproduce", study["train0"], "--tracking-uri", uri, "--repo", str(study["repo"]))
    assert code == 2 and "not in the repository" in out
    code, out = audit("reproduce", study["prepare"], "--tracking-uri", uri, "--repo", str(study["base"]))
    assert code == 2 and "not inside a git repository" in out


@pytest.mark.slow  # about 20-45 s: a DVC commit, push and pull around a training rerun
def test_reproduce_restores_data_with_dvc(study, tmp_path):
    """A clone without the outputs: data comes back through `dvc pull`, the sweep input is rebuilt."""
    beside = Path(sys.executable).parent / "dvc"  # this environment's dvc, whether or not it is on PATH
    dvc = str(beside) if beside.exists() else "dvc"
    clone = tmp_path / "clone"
    shutil.copytree(study["repo"], clone, symlinks=True)
    # what the pipeline's onsuccess hook writes before its dvc commit: the stages' params source
    shutil.copy(clone / "params.yaml", clone / "params.used.yaml")
    for cmd in (
        ["commit", "-f", "-q", "prepare"],
        ["remote", "add", "--local", "-d", "default", str(tmp_path / "remote")],
        ["push", "-q", "prepare"],
    ):
        subprocess.run([dvc, *cmd], cwd=clone, check=True, capture_output=True)
    git("add", "dvc.lock", "params.used.yaml", cwd=clone)
    git("commit", "-qm", "record the prepared data", cwd=clone)
    shutil.rmtree(clone / "data")
    shutil.rmtree(clone / "results")
    shutil.rmtree(clone / ".dvc" / "cache")
    uri, _ = store_copy(study, "rerun-dvc")
    code, out = audit(
        "reproduce", study["train1"], "--tracking-uri", study["uri"], "--repo", str(clone), "--rerun-uri", uri
    )
    assert code == 0, out
    assert "input data: dvc pull with the dvc.lock of commit" in out
    assert "input sweep: not restorable; wrote best_params.json" in out and '"train.lr": 0.0021' in out
    assert "RESULT: exact match" in out
    assert yaml.safe_load((clone / "dvc.lock").read_text())["stages"]["prepare"]  # the repo itself untouched
