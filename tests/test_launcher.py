"""The fork server `timoe study` starts for local jobs (timoe.launcher): a job run through it gives
the same outputs as a direct run, exit codes and stderr come back, a stopped client stops its job,
and cluster runs start no server. Real processes and sockets throughout."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest
import yaml

from timoe import launcher
from timoe.config import Params

CLIENT = "import sys; from timoe.launcher import main; sys.argv = ['timoe', *sys.argv[1:]]; main()"


@pytest.fixture(scope="module")
def basicmotions(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from timoe.config import DataConfig
    from timoe.data import prepare_dataset

    out = tmp_path_factory.mktemp("bm") / "prepared"
    prepare_dataset("basicmotions", DataConfig(), out)
    return out


@pytest.fixture(scope="module")
def server():
    # a generous wait: the server's imports take ~7 s alone, a minute or more on a loaded machine
    with launcher.fork_server(ready_timeout_s=600) as path:
        assert path is not None and path.exists()
        yield path


def _params(tmp_path: Path, epochs: int = 1) -> Path:
    raw = Params().model_dump(mode="json")
    raw["data"]["datasets"] = ["basicmotions"]
    raw["tracking"] |= {"uri": f"sqlite:///{tmp_path / 'mlflow.db'}", "dvc_commit": False}
    small = {"d_model": 8, "n_heads": 2, "d_ff": 16, "n_layers": 1, "moe_layers": [0], "patch_size": 10}
    raw["model"] |= small
    raw["model"]["per_dataset"] = None
    raw["train"] |= {"epochs": epochs, "use_sweep": False, "max_train_windows": 30, "per_dataset": None}
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _train_args(data: Path, out: Path, params: Path, model: str = "moe") -> list[str]:
    return [
        *("train", "--dataset", "basicmotions", "--model", model, "--seed", "3", "--data", str(data)),
        *("--out", str(out), "--params", str(params)),
    ]


def _server_pid(path: Path) -> int:
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmdline = (proc / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if str(path).encode() in cmdline and b"serve" in cmdline:
                return int(proc.name)
    raise AssertionError("no fork server process found")


def _children(pid: int) -> list[int]:
    return [int(c) for c in (Path(f"/proc/{pid}/task/{pid}/children")).read_text().split()]


def test_a_job_through_the_server_matches_a_direct_run(server: Path, basicmotions: Path, tmp_path: Path):
    params = _params(tmp_path)
    served, direct = tmp_path / "served", tmp_path / "direct"
    code = launcher.run_through_server(server, _train_args(basicmotions, served, params))
    assert code == 0  # not None: the server ran it
    env = os.environ | {launcher.SERVER_ENV: launcher.SERVER_OFF}
    subprocess.run(
        [sys.executable, "-m", "timoe", *_train_args(basicmotions, direct, params)], env=env, check=True
    )
    a = pl.read_parquet(served / "predictions.parquet")
    b = pl.read_parquet(direct / "predictions.parquet")
    assert a.equals(b)
    ma, mb = (json.loads((d / "metrics.json").read_text()) for d in (served, direct))
    assert ma["test_accuracy"] == mb["test_accuracy"] and ma["history"] == mb["history"]
    assert ma["run_id"] != mb["run_id"]


def test_exit_code_and_error_come_back_from_the_server(server: Path, tmp_path: Path):
    env = os.environ | {launcher.SERVER_ENV: str(server)}
    bad = ["train", "--dataset", "basicmotions", "--model", "no-such-model", "--seed", "0"]
    bad += ["--data", str(tmp_path), "--out", str(tmp_path / "o"), "--params", str(_params(tmp_path))]
    done = subprocess.run([sys.executable, "-c", CLIENT, *bad], env=env, capture_output=True, text=True)
    assert done.returncode == 2
    assert "no-such-model" in done.stderr
    assert not (tmp_path / "o").exists()


def test_without_a_server_the_client_runs_the_command_itself(tmp_path: Path):
    env = os.environ | {launcher.SERVER_ENV: str(tmp_path / "gone" / "socket")}
    bad = ["train", "--dataset", "basicmotions", "--model", "no-such-model", "--seed", "0"]
    bad += ["--data", str(tmp_path), "--out", str(tmp_path / "o"), "--params", str(_params(tmp_path))]
    done = subprocess.run([sys.executable, "-c", CLIENT, *bad], env=env, capture_output=True, text=True)
    assert done.returncode == 2 and "no-such-model" in done.stderr


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_a_stopped_client_stops_its_job(server: Path, basicmotions: Path, tmp_path: Path, sig: int):
    env = os.environ | {launcher.SERVER_ENV: str(server)}
    args = _train_args(basicmotions, tmp_path / "out", _params(tmp_path, epochs=10_000))
    client = subprocess.Popen([sys.executable, "-c", CLIENT, *args], env=env)
    pid = _server_pid(server)
    deadline = time.monotonic() + 60
    while not _children(pid):
        assert time.monotonic() < deadline, "the server never forked the job"
        time.sleep(0.05)
    (child,) = _children(pid)
    time.sleep(1.0)  # into the job
    client.send_signal(sig)
    code = client.wait(timeout=60)
    # SIGTERM is forwarded and the job's own exit comes back (killed by it: 128 + 15)
    assert code == (128 + signal.SIGTERM if sig == signal.SIGTERM else -signal.SIGKILL)
    deadline = time.monotonic() + 30
    while child in _children(pid):
        assert time.monotonic() < deadline, "the job outlived its client"
        time.sleep(0.05)
    assert not (tmp_path / "out").exists()  # atomic outputs: nothing half-written


def test_cluster_runs_start_no_server(tmp_path: Path):
    assert launcher.runs_elsewhere(["--cores", "2", "--executor", "slurm"])
    assert launcher.runs_elsewhere(["--executor=slurm"])
    profile = tmp_path / "prof"
    profile.mkdir()
    (profile / "config.yaml").write_text("executor: slurm\njobs: 10\n")
    assert launcher.runs_elsewhere(["--profile", str(profile)])
    repo = Path(__file__).resolve().parents[1]
    assert not launcher.runs_elsewhere(["--cores", "2", "--profile", str(repo / "workflow/profiles/default")])
    assert launcher.runs_elsewhere(["--profile", str(repo / "workflow/profiles/slurm")])


def test_off_starts_no_server(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv(launcher.SERVER_ENV, launcher.SERVER_OFF)
    with launcher.fork_server() as path:
        assert path is None
        assert os.environ[launcher.SERVER_ENV] == launcher.SERVER_OFF


def test_the_server_refuses_to_fork_after_an_import_started_a_thread(tmp_path: Path):
    code = (
        "import threading, sys\n"
        "threading.Thread(target=threading.Event().wait, daemon=True).start()  # alive until exit\n"
        "from timoe import launcher\n"
        f"sys.exit(launcher.serve(__import__('pathlib').Path({str(tmp_path / 's')!r})))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 1 and "not serving" in done.stderr
    assert not (tmp_path / "s").exists()


def test_the_server_leaves_when_the_study_that_started_it_is_killed(tmp_path: Path):
    study = (
        "import time\n"
        "from pathlib import Path\n"
        "from timoe import launcher\n"
        "with launcher.fork_server(ready_timeout_s=600) as path:\n"
        f"    Path({str(tmp_path / 'path')!r}).write_text(str(path))\n"
        "    time.sleep(600)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", study])
    deadline = time.monotonic() + 120
    while not (tmp_path / "path").exists():
        assert time.monotonic() < deadline, "the fork server never started"
        time.sleep(0.1)
    sock = Path((tmp_path / "path").read_text())
    server_pid = _server_pid(sock)
    proc.kill()
    proc.wait()
    deadline = time.monotonic() + 30
    while Path(f"/proc/{server_pid}").exists() and "Z" not in _state(server_pid):
        assert time.monotonic() < deadline, "the orphaned fork server kept running"
        time.sleep(0.1)


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "Z"
