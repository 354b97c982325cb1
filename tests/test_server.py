"""`timoe server`: MLflow on a real PostgreSQL, served artifacts, loopback, clean stop.

Four processes log through it at once as four cluster jobs would (params, 50 metric steps, a
2 MiB artifact each, through `timoe.tracking.tracked_run` into one new experiment): every run is
recorded once in that experiment, artifacts come back byte for byte, and nothing errs.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pg_server import Unavailable, postgres_server
from slurm_cluster import TrackingServer, tracking_server

pytestmark = pytest.mark.slow
N_PROCS = 4
N_STEPS = 50
# One logging job: the same helper the stages use, so lineage tags and run_id.txt come with it.
LOGGER = textwrap.dedent(
    """
    import hashlib, os, sys
    from pathlib import Path
    import mlflow
    from timoe.tracking import tracked_run

    uri, name, out = sys.argv[1], sys.argv[2], Path(sys.argv[3])
    blob = out.parent / f"{out.name}.bin"
    blob.write_bytes(os.urandom(2 << 20))
    with tracked_run(uri=uri, experiment="concurrent/server", stage="train", config={"job": name, "lr": 0.1},
                     out_dir=out, wildcards={"job": name}, seed=0) as run:
        for step in range(50):
            mlflow.log_metric("loss", 1.0 / (step + 1), step=step)
        mlflow.log_artifact(str(blob), artifact_path="blobs")
    print(run.info.run_id, hashlib.sha256(blob.read_bytes()).hexdigest())
    """
)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TrackingServer]:
    pytest.importorskip("psycopg2", reason="psycopg2-binary (SQLAlchemy's PostgreSQL driver) not installed")
    base = tmp_path_factory.mktemp("server")
    with contextlib.ExitStack() as stack:
        try:
            pg_url = stack.enter_context(postgres_server())
        except Unavailable as err:
            pytest.skip(str(err))
        srv = stack.enter_context(tracking_server(pg_url, base))
        print(f"\ntracking server ready in {srv.ready_s:.1f} s, {srv.memory_mib:.0f} MiB")
        yield srv


def test_four_processes_log_concurrently(server: TrackingServer, tmp_path: Path):
    from mlflow.tracking import MlflowClient

    procs = [
        subprocess.Popen(
            [sys.executable, "-c", LOGGER, server.url, f"job{i}", str(tmp_path / f"out{i}")],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(N_PROCS)
    ]
    results = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0] * N_PROCS, [err[-2000:] for _, err in results]
    errors = [err for _, err in results if "Traceback" in err or "ERROR" in err]
    client = MlflowClient(tracking_uri=server.url)
    exp = client.get_experiment_by_name("concurrent/server")
    runs = client.search_runs([exp.experiment_id], max_results=100)
    assert not client.search_runs(["0"], max_results=10), "a run landed in the Default experiment"
    print(f"\nconcurrent logging: {len(runs)}/{N_PROCS} runs, {len(errors)} errors")
    assert not errors and len(runs) == N_PROCS
    for i, (out, _) in enumerate(results):
        run_id, digest = out.strip().splitlines()[-1].split()  # MLflow prints a "View run" line first
        assert (tmp_path / f"out{i}" / "run_id.txt").read_text().strip() == run_id
        run = client.get_run(run_id)
        assert run.info.status == "FINISHED" and run.data.tags["wildcard.job"] == f"job{i}"
        assert run.data.tags["git_commit"] and run.data.tags["stage"] == "train"
        assert len(client.get_metric_history(run_id, "loss")) == N_STEPS
        got = client.download_artifacts(run_id, f"blobs/out{i}.bin", str(tmp_path))
        assert hashlib.sha256(Path(got).read_bytes()).hexdigest() == digest


def _lan_address() -> str | None:
    """An address of this machine other than loopback, if it has one."""
    with contextlib.suppress(OSError), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect(("192.0.2.1", 9))  # TEST-NET: no packet is sent for a UDP connect
        addr = s.getsockname()[0]
        return None if addr.startswith("127.") else addr
    return None


def test_binds_to_loopback_only(server: TrackingServer):
    addr = _lan_address()
    if addr is None:
        pytest.skip("this machine has no address besides loopback to probe")
    with socket.socket() as s:
        s.settimeout(5)
        assert s.connect_ex((addr, server.port)) != 0, "the server answers on a non-loopback address"


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


# A job that keeps logging while the server restarts: MLflow's client retries with backoff.
SLOW_LOGGER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    import mlflow
    from timoe.tracking import tracked_run

    uri, out = sys.argv[1], Path(sys.argv[2])
    with tracked_run(uri=uri, experiment="restart/server", stage="train", config={"lr": 0.1},
                     out_dir=out) as run:
        for step in range(25):
            mlflow.log_metric("loss", 1.0 / (step + 1), step=step)
            print(step, flush=True)
            time.sleep(1.0)
    print(run.info.run_id)
    """
)


def test_stops_cleanly_and_restarts_while_a_job_logs(server: TrackingServer, tmp_path: Path):
    """SIGTERM stops the whole process group with exit code 0; a job logging meanwhile retries
    until the restarted server answers, and ends with one run holding every step once."""
    from mlflow.tracking import MlflowClient

    before = {r.info.run_id for r in MlflowClient(server.url).search_runs(["0", *_exp_ids(server)])}
    job = subprocess.Popen([sys.executable, "-c", SLOW_LOGGER, server.url, str(tmp_path / "out")],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    assert job.stdout is not None
    while job.stdout.readline().strip() != "3":  # the run is open and logging
        assert job.poll() is None, job.stderr.read() if job.stderr else ""
    assert server.proc is not None
    pgid = server.proc.pid
    started = time.monotonic()
    assert server.stop() == 0
    deadline = time.monotonic() + 30
    while _group_alive(pgid) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _group_alive(pgid), "server processes outlived the stop"
    print(f"\ntracking server stopped in {time.monotonic() - started:.1f} s")
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", server.port)) != 0
    server.start()
    print(f"restarted in {server.ready_s:.1f} s, {server.memory_mib:.0f} MiB")
    rest, err = job.communicate(timeout=600)
    assert job.returncode == 0, err[-3000:]
    run_id = rest.split()[-1]
    client = MlflowClient(server.url)
    after = {r.info.run_id for r in client.search_runs(["0", *_exp_ids(server)])}
    assert after == before | {run_id}, "a run was lost or duplicated across the restart"
    steps = [m.step for m in client.get_metric_history(run_id, "loss")]
    assert sorted(steps) == list(range(25)), steps
    assert client.get_run(run_id).info.status == "FINISHED"


def _exp_ids(server: TrackingServer) -> list[str]:
    from mlflow.tracking import MlflowClient

    return [e.experiment_id for e in MlflowClient(server.url).search_experiments()]


PIPELINE_OVERRIDES = """
data:
  datasets: [basicmotions]
model:
  names: [transformer]
train:
  epochs: 4
  patience: 4
tracking:
  dvc_commit: false
  uri: {uri}
"""


def test_a_server_restart_during_a_pipeline_loses_and_duplicates_no_run(
    server: TrackingServer, tmp_path: Path
):
    """Stop the server while the pipeline trains, start it again: the pipeline ends, and every
    job output links to exactly one FINISHED run of its job, with no run left RUNNING."""
    from mlflow.tracking import MlflowClient

    from repo_support import BIN, copy_repo, git_commit_all, sh

    repo = tmp_path / "repo"
    repo.mkdir()
    copy_repo(repo)
    (repo / "local.yaml").write_text(PIPELINE_OVERRIDES.format(uri=server.url))
    sh(["git", "init", "-q"], repo)
    git_commit_all(repo, "snapshot")
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "PYTHONPATH": str(repo / "src")}
    cmd = ["snakemake", "--cores", "1", "--profile", "workflow/profiles/default", "--retries", "1",
           "--configfile", "workflow/smoke.yaml", "local.yaml"]  # fmt: skip
    proc = subprocess.Popen(
        cmd, cwd=repo, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    deadline = time.monotonic() + 900
    while not (repo / "logs/train/basicmotions/transformer/seed0.log").exists():
        assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read() if proc.stdout else ""
        time.sleep(0.2)
    time.sleep(3)  # the train job has opened its run and is logging epochs
    assert server.stop() == 0
    time.sleep(5)
    server.start()
    out, _ = proc.communicate(timeout=1200)
    assert proc.returncode == 0, out[-4000:]
    client = MlflowClient(server.url)
    exps = [e.experiment_id for e in client.search_experiments() if e.name.startswith("timoe")]
    runs = client.search_runs(exps, max_results=1000)
    assert [r.info.run_name for r in runs if r.info.status == "RUNNING"] == []
    finished: dict[tuple, list[str]] = {}
    for r in runs:
        if r.info.status == "FINISHED" and r.data.tags.get("stage") != "sweep-trial":
            job = (
                r.data.tags["stage"],
                *sorted((k, v) for k, v in r.data.tags.items() if k.startswith("wildcard.")),
            )
            finished.setdefault(job, []).append(r.info.run_id)
    assert all(len(ids) == 1 for ids in finished.values()), finished
    linked = [p for p in (repo / "results").rglob("run_id.txt")] + list((repo / "data").rglob("run_id.txt"))
    assert len(linked) >= 5
    for path in linked:
        run_id = path.read_text().strip()
        assert client.get_run(run_id).info.status == "FINISHED", path
    print(
        f"\nserver restart during a pipeline: {len(finished)} jobs, one FINISHED run each, {len(runs)} runs"
    )
