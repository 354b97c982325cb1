"""End to end: the real Snakefile on the smoke profile, in a copy of the repository.

One pipeline run (module fixture) is checked from several sides: outputs, MLflow lineage,
DVC state, incrementality, the DVC remote round trip, and a corrupted input. Tests that
change the copy run last, in file order.
"""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from repo_support import BIN, copy_repo, git_commit_all, sh
from timoe.models.model import needs_rus

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def snakemake_args(*args: str) -> list[str]:
    return [
        *("--cores", "2", "--profile", "workflow/profiles/default"),
        *("--configfile", "workflow/smoke.yaml", "local.yaml"),
        *args,
    ]


def snakemake(repo: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return sh(["snakemake", *snakemake_args(*args)], repo, check=check)


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory) -> dict:
    base = tmp_path_factory.mktemp("e2e")
    repo = base / "repo"
    repo.mkdir()
    copy_repo(repo)
    (repo / "local.yaml").write_text(f"tracking:\n  dvc_remote: {base / 'remote'}\n")
    sh(["git", "init", "-q"], repo)
    git_commit_all(repo, "snapshot")
    started = time.time()
    # The first run as `make run` starts it: through `timoe study`, whose jobs fork from its server.
    run = sh(["timoe", "study", *snakemake_args()], repo)
    return {"repo": repo, "base": base, "first_run": run, "seconds": time.time() - started}


def test_outputs_exist(pipeline):
    repo = pipeline["repo"]
    for ds in ("hapt", "basicmotions"):
        assert (repo / f"data/processed/{ds}/windows.parquet").is_file()
        assert (repo / f"results/rus/{ds}/rus.parquet").is_file()
        assert list((repo / f"results/rus/{ds}").glob("rus_*.png"))
        assert (repo / f"results/sweeps/{ds}/transformer/best_params.json").is_file()
        for seed in (0, 1):
            d = repo / f"results/models/{ds}/transformer/seed{seed}"
            assert (d / "predictions.parquet").is_file() and (d / "metrics.json").is_file()
    table = (repo / "results/benchmark/metrics.md").read_text()
    assert "| hapt | transformer | 2 |" in table and "| basicmotions | transformer | 2 |" in table
    assert (repo / "results/benchmark/metrics.csv").is_file()
    report = (repo / "results/benchmark/report.html").read_text()
    assert "data:image/png;base64," in report and "<table>" in report


def test_snakemake_report(pipeline):
    repo = pipeline["repo"]
    snakemake(repo, "--report", "snakemake-report.zip")
    assert (repo / "snakemake-report.zip").stat().st_size > 10_000


def test_mlflow_runs_carry_lineage(pipeline):
    import mlflow

    repo = pipeline["repo"]
    head = sh(["git", "rev-parse", "HEAD"], repo).stdout.strip()
    client = mlflow.tracking.MlflowClient(tracking_uri=f"sqlite:///{repo / 'mlflow.db'}")
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()], max_results=1000)
    by_id = {r.info.run_id: r for r in runs}
    stages = {r.data.tags.get("stage") for r in runs}
    assert {"prepare", "quantify", "sweep", "train", "evaluate"} <= stages
    # `timoe study` ran every job as a child of its fork server (timoe.launcher)
    job_stages = {"prepare", "quantify", "sweep", "train", "evaluate"}
    assert {r.data.tags.get("launcher") for r in runs if r.data.tags.get("stage") in job_stages} == {
        "fork-server"
    }
    for r in runs:
        t = r.data.tags
        assert t["git_commit"] == head
        assert t["git_dirty"] in ("true", "false")
        assert t["timoe_version"] and t["device"]
    # every output names its run, and every run of a stage with inputs names the inputs' hashes and runs
    for out in [
        *repo.glob("results/models/*/*/seed*"),
        *repo.glob("results/rus/*"),
        *repo.glob("data/processed/*"),
    ]:
        run = by_id[(out / "run_id.txt").read_text().strip()]
        assert run.info.status == "FINISHED"
        if run.data.tags["stage"] != "prepare":
            assert re.fullmatch(r"[0-9a-f]{64}", run.data.tags["input.data.sha256"])
            assert run.data.tags["input.data.run_id"] in by_id
        if run.data.tags["stage"] == "train":
            assert run.data.tags["wildcard.seed"] in ("0", "1")
            assert "val_accuracy" in run.data.metrics and "test_accuracy" in run.data.metrics
    arts = {
        a.path
        for a in client.list_artifacts(
            next(r for r in runs if r.data.tags.get("stage") == "train").info.run_id
        )
    }
    assert {"resolved_config.json", "metrics.json", "logs"} <= arts


def test_dvc_status_clean_after_run(pipeline):
    r = sh(["dvc", "status"], pipeline["repo"])
    assert "up to date" in r.stdout.lower(), r.stdout


def test_dvc_lock_records_the_params_the_run_used_not_params_yaml(pipeline):
    repo = pipeline["repo"]
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    used = lock["stages"]["train"]["params"]["params.used.yaml"]
    smoke = yaml.safe_load((repo / "workflow/smoke.yaml").read_text())
    assert used["train"]["epochs"] == smoke["train"]["epochs"]
    assert smoke["train"]["epochs"] != yaml.safe_load((repo / "params.yaml").read_text())["train"]["epochs"]
    assert lock["stages"]["quantify"]["params"]["params.used.yaml"]["data.seed"] == smoke.get("data", {}).get(
        "seed", yaml.safe_load((repo / "params.yaml").read_text())["data"]["seed"]
    )


def _resolved_params_files(repo: Path) -> dict[str, str]:
    return {p.name: p.read_text() for p in (repo / ".snakemake/timoe/params").glob("*.yaml")}


def test_a_second_invocation_cannot_change_what_a_pipeline_runs(pipeline):
    """Each invocation's params live in a file named by their content: another invocation with
    other params writes another file, and leaves the first pipeline up to date."""
    repo = pipeline["repo"]
    before = _resolved_params_files(repo)
    assert len(before) == 1
    (repo / "other.yaml").write_text("train:\n  epochs: 2\n")
    cmd = [
        "snakemake",
        "-n",
        "--cores",
        "1",
        "--configfile",
        "workflow/smoke.yaml",
        "local.yaml",
        "other.yaml",
    ]
    sh(cmd, repo)
    (repo / "other.yaml").unlink()
    after = _resolved_params_files(repo)
    assert len(after) == 2 and {k: after[k] for k in before} == before
    assert "Nothing to be done" in (r := snakemake(repo, "-n")).stdout + r.stderr


def test_a_wildcard_cannot_inject_shell_commands(pipeline):
    repo = pipeline["repo"]
    target = "results/models/basicmotions/transformer/seed0;touch INJECTED;"
    r = snakemake(repo, "--forcerun", "train", "--", target, check=False)
    assert r.returncode != 0 and "No rule to produce" in r.stdout + r.stderr
    assert (
        not (repo / "INJECTED").exists()
        and not (repo / "results/models/basicmotions/transformer/seed0;touch INJECTED").exists()
    )


def test_second_run_does_nothing(pipeline):
    repo = pipeline["repo"]
    assert "Nothing to be done" in snakemake(repo, "-n").stdout + snakemake(repo, "-n").stderr
    started = time.time()
    r = snakemake(repo)
    assert "Nothing to be done" in r.stdout + r.stderr
    assert time.time() - started < 60


def _dry_run(repo: Path, extra: str) -> str:
    """What `snakemake -n` prints with `extra` as one more config file."""
    (repo / "extra.yaml").write_text(extra)
    cmd = [
        "snakemake",
        "-n",
        "--cores",
        "2",
        "--profile",
        "workflow/profiles/default",
        "--configfile",
        "workflow/smoke.yaml",
        "local.yaml",
        "extra.yaml",
    ]
    r = sh(cmd, repo)
    return r.stdout + r.stderr


def _planned_rules(repo: Path, extra: str) -> set[str]:
    return set(re.findall(r"^(?:local)?rule (\w+):", _dry_run(repo, extra), flags=re.M)) - {"all"}


def _planned_jobs(repo: Path, extra: str) -> list[str]:
    """Output paths of the jobs a dry run plans."""
    return re.findall(r"^\s+output: (\S+)", _dry_run(repo, extra), flags=re.M)


def test_train_change_reruns_train_and_evaluate_only(pipeline):
    repo = pipeline["repo"]
    assert _planned_rules(repo, "train:\n  weight_decay: 0.001\n") == {"sweep", "train", "evaluate"}
    assert _planned_rules(repo, "train:\n  patience: 3\n") == {"train", "evaluate"}
    # timoe reads the RUS prior, so its sweep and training follow quantify; evaluate draws the RUS
    # figures; the dense transformer does not read RUS and is not retrained
    assert _planned_rules(repo, "rus:\n  n_bins: 5\n") == {"quantify", "sweep", "train", "evaluate"}
    planned = _planned_jobs(repo, "rus:\n  n_bins: 5\n")
    assert planned and all(needs_rus(j.split("/")[3]) for j in planned if j.startswith("results/models/"))
    assert any("/context-moe/" in j for j in planned)  # reads the contexts, not the values, of quantify
    (repo / "extra.yaml").unlink()


def test_a_param_change_reruns_exactly_the_stages_declared_to_read_it(pipeline):
    """The rules' rerun trigger is each stage's declared reads (timoe.stage_specs), nothing else:
    not the resolved-params path every rule is passed, which changes with any param."""
    repo = pipeline["repo"]
    assert _planned_rules(repo, "train:\n  label_smoothing: 0.05\n") == {"sweep", "train", "evaluate"}
    assert _planned_rules(repo, "evaluate:\n  metrics: [accuracy]\n") == {"evaluate"}
    assert _planned_rules(repo, "tracking:\n  experiment_prefix: elsewhere\n") == set()  # records only
    assert _planned_rules(repo, "sweep:\n  heartbeat_s: 45\n") == set()  # schedules only
    (repo / "extra.yaml").unlink()


def test_push_then_pull_in_fresh_clone_restores_everything(pipeline):
    repo, base = pipeline["repo"], pipeline["base"]
    sh([str(BIN / "timoe"), "dvc-remote", "-p", "params.yaml", "-p", "local.yaml"], repo)
    sh(["dvc", "push", "-q"], repo)
    git_commit_all(repo, "results recorded in dvc.lock")
    clone = base / "clone"
    sh(["git", "clone", "-q", str(repo), str(clone)], base)
    assert not (clone / "results").exists()
    sh([str(BIN / "timoe"), "dvc-remote", "-p", "params.yaml", "-p", "local.yaml"], clone)
    sh(["dvc", "pull", "-q"], clone)
    assert (clone / "results/benchmark/metrics.md").read_text() == (
        repo / "results/benchmark/metrics.md"
    ).read_text()
    snakemake(clone, "--touch")
    r = snakemake(clone, "-n")
    assert "Nothing to be done" in r.stdout + r.stderr, r.stdout


def test_notebook_executes_on_the_finished_pipeline(pipeline, monkeypatch):
    import nbclient
    import nbformat

    repo = pipeline["repo"]
    nb = nbformat.read(repo / "notebooks/explore_results.ipynb", as_version=4)
    monkeypatch.setenv("TIMOE_ROOT", str(repo))  # the kernel inherits this environment
    nbclient.NotebookClient(
        nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(repo / "notebooks")}}
    ).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    html = "".join(str(o.get("data", {}).get("text/html", "")) for o in outputs)
    assert "hapt" in html and "basicmotions" in html


def test_invalid_params_stop_before_any_job(pipeline):
    repo = pipeline["repo"]
    (repo / "bad.yaml").write_text("train:\n  epochs: 0\n")
    cmd = ["snakemake", "-n", "--cores", "1", "--configfile", "workflow/smoke.yaml", "local.yaml", "bad.yaml"]
    r = sh(cmd, repo, check=False)
    (repo / "bad.yaml").unlink()
    assert r.returncode != 0
    assert "train.epochs" in r.stderr


def test_corrupted_input_fails_cleanly(pipeline):
    repo = pipeline["repo"]
    (repo / "data/processed/basicmotions/windows.parquet").write_bytes(b"PAR1 corrupted")
    r = snakemake(repo, "--forcerun", "quantify", "--", "results/rus/basicmotions", check=False)
    assert r.returncode != 0
    log = (repo / "logs/quantify/basicmotions.log").read_text()
    assert "windows.parquet" in log and "Traceback" not in log
    assert not (repo / "results/rus/basicmotions").exists()
    assert not list((repo / "results/rus").glob(".basicmotions*"))
