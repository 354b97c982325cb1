"""The study on a real Slurm cluster (single node, loopback) with a shared MLflow server.

One module stack: munge + slurmctld + slurmd, PostgreSQL, and `timoe server` on it. Then:
- the smoke pipeline (one data set, kept small) through `--profile workflow/profiles/slurm`, with
  one train job cancelled by `scancel` while it runs: every job ran under sbatch asking for what
  its rule declares, Snakemake's retry resumed the cancelled job from its checkpoint, outputs and
  metrics equal a local run's, MLflow runs on the server carry lineage, `dvc status` is clean;
- sweep workers as a Slurm job array joining one PostgreSQL study, child runs on the server.
Accounting is off, as on many small clusters: the plugin then needs `--slurm-status-command
squeue`, and jobcomp/filetxt records what each job asked for (instead of sacct).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from pg_server import Unavailable, postgres_server
from repo_support import BIN, copy_repo, git_commit_all, sh
from slurm_cluster import Cluster, TrackingServer, slurm_cluster, tracking_server

pytestmark = [pytest.mark.slow, pytest.mark.e2e]
ROOT = Path(__file__).resolve().parents[1]
# One data set, one model, two seeds: 6 jobs in 5 waves. Twenty epochs without a window cap make a
# train job run long enough (seconds) to be cancelled after its first checkpoints.
OVERRIDES = """
data:
  datasets: [basicmotions]
model:
  names: [transformer]
train:
  seeds: [0, 1]
  epochs: 20
  patience: 20
  max_train_windows: null
"""
VICTIM = "results/checkpoints/basicmotions/transformer/seed0/last.pt"
COMPARED = ("history", "best_epoch", "val_accuracy", "test_accuracy", "test_macro_f1")
# Seconds before the plugin's first status check, and after each finished job: the default 40 s
# makes every wave of a small pipeline wait; MinJobAge (1 h here) stays above 3x this.
STATUS_CHECK_S = "5"


@dataclass
class Stack:
    cluster: Cluster
    server: TrackingServer
    pg_url: str
    base: Path


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    pytest.importorskip("snakemake_executor_plugin_slurm", reason="snakemake-executor-plugin-slurm missing")
    base = tmp_path_factory.mktemp("slurm")
    with contextlib.ExitStack() as stack:
        try:
            cluster = stack.enter_context(slurm_cluster())
            pg_url = stack.enter_context(postgres_server())
        except Unavailable as err:
            pytest.skip(str(err))
        server = stack.enter_context(tracking_server(pg_url, base))
        print(f"\ntracking server ready in {server.ready_s:.1f} s, {server.memory_mib:.0f} MiB")
        yield Stack(cluster, server, pg_url, base)


def _repo(path: Path, extra: str) -> Path:
    path.mkdir(parents=True)
    copy_repo(path)
    (path / "cluster.yaml").write_text(OVERRIDES + extra)
    sh(["git", "init", "-q"], path)
    git_commit_all(path, "snapshot")
    return path


def _slurm_env(stack: Stack, repo: Path) -> dict[str, str]:
    # No virtualenv on PATH: the jobs must find `timoe` without it (the Snakefile puts the
    # interpreter's folder first). The cluster has no accounting: any account name is accepted.
    path = os.pathsep.join(p for p in stack.cluster.env["PATH"].split(os.pathsep) if Path(p) != BIN)
    return {**stack.cluster.env, "PATH": path, "PYTHONPATH": str(repo / "src"),
            "TIMOE_SLURM_ACCOUNT": "timoe", "TIMOE_SLURM_PARTITION": "debug"}  # fmt: skip


def _slurm_cmd(*extra: str) -> list[str]:
    return [sys.executable, "-m", "snakemake", "--profile", "workflow/profiles/slurm",
            "--configfile", "workflow/smoke.yaml", "cluster.yaml",
            "--slurm-status-command", "squeue", "--slurm-init-seconds-before-status-checks", STATUS_CHECK_S,
            *extra]  # fmt: skip


def _planned(repo: Path, env: dict[str, str]) -> dict[tuple[str, str], dict[str, int]]:
    """(rule, output) -> threads, mem_mb and runtime the rule declares, from a dry run."""
    out = subprocess.run(_slurm_cmd("-n"), cwd=repo, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    plan = {}
    for block in re.split(r"\n(?=(?:local)?rule \w+:)", out.stdout + out.stderr):
        m = re.match(r"(?:local)?rule (\w+):", block)
        if not m or m.group(1) == "all":
            continue
        threads = re.search(r"^\s+threads: (\d+)", block, re.M)
        res = re.search(r"^\s+resources: (.*)$", block, re.M)
        output = re.search(r"^\s+output: (\S+)", block, re.M)
        assert res and output, block
        values = dict(kv.split("=", 1) for kv in res.group(1).split(", "))
        plan[(m.group(1), output.group(1))] = {
            "threads": int(threads.group(1)) if threads else 1,
            "mem_mb": int(values["mem_mb"]),
            "runtime": int(values["runtime"]),
        }
    return plan


def _checkpoint_epoch(path: Path) -> int:
    import torch

    try:
        return int(torch.load(path, map_location="cpu", weights_only=True)["epoch"])
    except Exception:  # not there yet, or being replaced right now
        return -1


def _cancel_running_train(cluster: Cluster, repo: Path, proc: subprocess.Popen) -> str:
    """Wait for seed 0's train job to save a checkpoint, then scancel it; its job id."""
    deadline = time.monotonic() + 600
    while _checkpoint_epoch(repo / VICTIM) < 2:
        assert proc.poll() is None, "the pipeline ended before the train job could be cancelled"
        assert time.monotonic() < deadline, "no train checkpoint within 10 minutes"
        time.sleep(0.2)
    jobs = cluster.run("squeue", "-h", "-o", "%i|%k", "--states=RUNNING").stdout.split()
    victim = [j.split("|")[0] for j in jobs if "rule_train" in j and "transformer_0" in j]
    assert len(victim) == 1, (jobs, "the checkpointing train job should be running")
    cluster.run("scancel", victim[0])
    return victim[0]


def _minutes(limit: str) -> int:
    """A Slurm time limit in minutes: jobcomp writes plain minutes, scontrol [D-]HH:MM:SS."""
    if ":" not in limit:
        return int(limit)
    days, _, hms = limit.rpartition("-")
    h, m, s = (int(x) for x in hms.split(":"))
    return (int(days) if days else 0) * 1440 + h * 60 + m + (1 if s else 0)


def _slurm_jobs(repo: Path, cluster: Cluster) -> dict[str, list[dict[str, str]]]:
    """Slurm log folder (rule/wildcards) -> its jobs' jobcomp records, oldest attempt first."""
    records = {r["JobId"]: r for r in cluster.jobs()}
    by_job: dict[str, list[dict[str, str]]] = {}
    for log in sorted((repo / "logs/slurm").rglob("*.log"), key=lambda p: int(p.stem)):
        assert log.stem in records, f"{log}: no Slurm record for job {log.stem}"
        by_job.setdefault(str(log.parent.relative_to(repo / "logs/slurm")), []).append(records[log.stem])
    return by_job


def _metrics(repo: Path) -> dict[str, dict]:
    return {
        str(p.parent.relative_to(repo)): json.loads(p.read_text())
        for p in sorted(repo.glob("results/models/*/*/seed*/metrics.json"))
    }


@pytest.fixture(scope="module")
def pipeline(stack: Stack) -> dict:
    local = _repo(stack.base / "local", f"tracking:\n  dvc_remote: {stack.base / 'remote-local'}\n")
    started = time.monotonic()
    sh([str(BIN / "snakemake"), "--cores", "2", "--profile", "workflow/profiles/default",
        "--configfile", "workflow/smoke.yaml", "cluster.yaml"], local)  # fmt: skip
    local_s = time.monotonic() - started

    tracking = f"tracking:\n  uri: {stack.server.url}\n  dvc_remote: {stack.base / 'remote'}\n"
    repo = _repo(stack.base / "cluster", tracking)
    env = _slurm_env(stack, repo)
    plan = _planned(repo, env)
    started = time.monotonic()
    log = open(stack.base / "snakemake-slurm.log", "w")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(_slurm_cmd(), cwd=repo, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        victim = _cancel_running_train(stack.cluster, repo, proc)
        rc = proc.wait(timeout=1200)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()
    output = (stack.base / "snakemake-slurm.log").read_text()
    assert rc == 0, output[-6000:]
    slurm_s = time.monotonic() - started
    return {"local": local, "repo": repo, "plan": plan, "victim": victim, "output": output,
            "local_s": local_s, "slurm_s": slurm_s}  # fmt: skip


def test_every_job_ran_on_slurm_asking_for_its_rules_resources(pipeline: dict, stack: Stack):
    repo, plan = pipeline["repo"], pipeline["plan"]
    by_job = _slurm_jobs(repo, stack.cluster)
    assert len(by_job) == len(plan), (sorted(by_job), sorted(plan))
    for rule, _ in plan:
        folders = [k for k in by_job if k.startswith(f"rule_{rule}")]
        assert folders, f"no Slurm job for rule {rule}"
    for folder, attempts in by_job.items():
        rule = folder.split("/")[0].removeprefix("rule_")
        want = next(v for (r, _), v in plan.items() if r == rule)
        assert attempts[-1]["JobState"] == "COMPLETED", (folder, attempts[-1])
        for attempt, rec in enumerate(attempts, start=1):
            tres = dict(kv.split("=") for kv in rec["Tres"].split(","))
            # a retry asks for more: the rules scale memory and time with the attempt
            assert tres["mem"] == f"{want['mem_mb'] * attempt}M", (folder, rec)
            assert _minutes(rec["TimeLimit"]) == want["runtime"] * attempt, (folder, rec)
            assert int(rec["ProcCnt"]) == want["threads"], (folder, rec)
    n_jobs = sum(len(a) for a in by_job.values())
    inside = [_seconds(r["EndTime"]) - _seconds(r["StartTime"]) for a in by_job.values() for r in a]
    print(
        f"\nslurm: {n_jobs} Slurm jobs for {len(plan)} planned, {pipeline['slurm_s']:.0f} s "
        f"(local {pipeline['local_s']:.0f} s): overhead "
        f"{(pipeline['slurm_s'] - pipeline['local_s']) / len(plan):.1f} s per job; "
        f"{sum(inside) / len(inside):.1f} s inside each Slurm job on average"
    )


def _seconds(stamp: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(stamp).timestamp()


def test_cancelled_train_job_was_retried_and_resumed(pipeline: dict, stack: Stack):
    by_job = _slurm_jobs(pipeline["repo"], stack.cluster)
    attempts = next(a for k, a in by_job.items() if k.startswith("rule_train") and k.endswith("_0"))
    assert attempts[0]["JobId"] == pipeline["victim"]
    assert [r["JobState"] for r in attempts] == ["CANCELLED", "COMPLETED"], attempts
    got = _metrics(pipeline["repo"])["results/models/basicmotions/transformer/seed0"]
    assert got["resumed_from_epoch"] is not None and got["resumed_from_epoch"] >= 2


def test_outputs_and_metrics_equal_the_local_run(pipeline: dict):
    repo, local = pipeline["repo"], pipeline["local"]
    got, want = _metrics(repo), _metrics(local)
    assert sorted(got) == sorted(want) and len(got) == 2
    for job in want:  # the resumed job too: it ends with an uninterrupted run's metrics
        assert {k: got[job][k] for k in COMPARED} == {k: want[job][k] for k in COMPARED}, job
    for rel in ("results/benchmark/metrics.csv", "results/rus/basicmotions/rus.parquet"):
        assert (repo / rel).read_bytes() == (local / rel).read_bytes(), rel
    best = [json.loads((r / "results/sweeps/basicmotions/transformer/best_params.json").read_text())
            for r in (repo, local)]  # fmt: skip
    assert best[0]["params"] == best[1]["params"] and best[0]["value"] == best[1]["value"]


def test_runs_on_the_server_carry_lineage(pipeline: dict, stack: Stack):
    from mlflow.tracking import MlflowClient

    repo = pipeline["repo"]
    head = sh(["git", "rev-parse", "HEAD"], repo).stdout.strip()
    client = MlflowClient(tracking_uri=stack.server.url)
    exps = [e.experiment_id for e in client.search_experiments() if e.name.startswith("timoe/")]
    runs = {r.info.run_id: r for r in client.search_runs(exps, max_results=1000)}
    stages = {r.data.tags["stage"] for r in runs.values()}
    assert {"prepare", "quantify", "sweep", "train", "evaluate"} <= stages
    outputs = [*repo.glob("data/processed/*"), *repo.glob("results/rus/*"),
               *repo.glob("results/models/*/*/seed*"), repo / "results/benchmark"]  # fmt: skip
    for out in outputs:
        run = runs[(out / "run_id.txt").read_text().strip()]
        assert run.info.status == "FINISHED" and run.data.tags["git_commit"] == head, out
        if run.data.tags["stage"] in ("quantify", "train"):
            assert run.data.tags["input.data.run_id"] in runs
            assert re.fullmatch(r"[0-9a-f]{64}", run.data.tags["input.data.sha256"])
    model_dir = repo / "results/models/basicmotions/transformer/seed1"
    # artifacts travel through the server (mlflow-artifacts:/), no shared folder needed
    run_id = (model_dir / "run_id.txt").read_text().strip()
    path = client.download_artifacts(run_id, "metrics.json", str(stack.base))
    assert Path(path).read_bytes() == (model_dir / "metrics.json").read_bytes()
    # no run of this pipeline landed in the Default experiment
    assert not client.search_runs(["0"], max_results=10)


def test_dvc_status_clean_after_the_cluster_run(pipeline: dict):
    r = sh([str(BIN / "dvc"), "status"], pipeline["repo"])
    assert "up to date" in r.stdout.lower(), r.stdout


def test_sweep_workers_as_a_job_array(stack: Stack, tmp_path: Path):
    """`sweep.slurm_array: 3`: the driver submits 3 array workers that join its PostgreSQL study."""
    import optuna

    from sweep_support import ERROR_MARKERS, audit, prepare_basicmotions, sweep_params, write_params
    from timoe.config import load_params
    from timoe.sweeps.storage import STORAGE_ENV

    n_trials = 12
    base = load_params(ROOT / "params.yaml", ROOT / "workflow/smoke.yaml")
    data = prepare_basicmotions(base, tmp_path / "basicmotions")
    params = sweep_params(base, tracking_uri=stack.server.url, prefix="array", n_trials=n_trials, n_workers=1)
    params = params.model_copy(update={"sweep": params.sweep.model_copy(update={"slurm_array": 3})})
    write_params(params, tmp_path / "params.yaml")
    storage = stack.pg_url  # optuna's tables in a database of their own (the server owns `mlflow`)
    env = {**stack.cluster.env, STORAGE_ENV: storage}
    args = ["--dataset", "basicmotions", "--model", "transformer", "--data", str(data),
            "--params", str(tmp_path / "params.yaml")]  # fmt: skip
    r = subprocess.run([sys.executable, "-m", "timoe", "sweep", *args, "--out", str(tmp_path / "out")],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)  # fmt: skip
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-4000:]
    array = re.search(r"submitted Slurm array job (\d+)", out).group(1)
    states = _wait_array(stack.cluster, array)
    # tasks that had not started when the study completed were cancelled by the driver
    assert set(states) <= {"COMPLETED", "CANCELLED"} and "COMPLETED" in states, states
    log_dir = tmp_path / "logs/sweep/basicmotions/transformer-array"
    logs = [p.read_text() for p in sorted(log_dir.glob("*.out"))]
    best = json.loads((tmp_path / "out/best_params.json").read_text())
    study = optuna.load_study(study_name=best["study"], storage=storage)
    report = audit(study, stack.server.url, best["parent_run_id"], "val_accuracy", n_trials)
    noisy = [m for m in ERROR_MARKERS for text in (out, *logs) if m in text]
    by_array = sum(int(m) for text in logs for m in re.findall(r"ran (\d+) trial", text))
    print(f"\narray sweep: {report['recorded']}/{n_trials} recorded, {report['lost']} lost, "
          f"{report['errors']} errors, {by_array} trials by the array workers, states {states}")  # fmt: skip
    assert report["problems"] == [] and not noisy, (report["problems"], noisy)
    counts = (report["trials"], report["recorded"], report["lost"], report["errors"])
    assert counts == (n_trials, n_trials, 0, 0)
    assert by_array >= 1, logs


def test_slurm_array_needs_a_shared_database(tmp_path: Path):
    from timoe.config import ConfigError
    from timoe.sweeps.slurm_array import check_can_submit
    from timoe.sweeps.storage import StorageSpec

    with pytest.raises(ConfigError, match="postgresql"):
        check_can_submit(StorageSpec(journal=tmp_path / "study.journal"))


def _wait_array(cluster: Cluster, array: str, timeout_s: float = 600) -> list[str]:
    """The array tasks' final states, once none is pending or running."""
    deadline = time.monotonic() + timeout_s
    while True:
        lines = cluster.run("squeue", "-h", "--states=all", "-r", "-j", array, "-o", "%i|%T").stdout.split()
        states = [ln.split("|")[1] for ln in sorted(lines)]
        if states and not {"PENDING", "RUNNING", "COMPLETING", "CONFIGURING"} & set(states):
            return states
        assert time.monotonic() < deadline, lines
        time.sleep(2)


def test_audit_reproduce_a_cluster_run_from_the_server(pipeline: dict, stack: Stack):
    """`timoe audit reproduce` reruns a train job recorded on the server and matches it exactly."""
    repo = pipeline["repo"]
    target = "results/models/basicmotions/transformer/seed1"
    out = sh([sys.executable, "-m", "timoe", "audit", "reproduce", target, "--tracking-uri", stack.server.url,
              "--rerun-uri", stack.server.url, "--repo", str(repo)], repo, check=False)  # fmt: skip
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "RESULT: exact match" in out.stdout, out.stdout[-3000:]
