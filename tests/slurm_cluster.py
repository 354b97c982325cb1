"""A throwaway single-node Slurm cluster for tests: munge, slurmctld and slurmd on loopback.

Debian's `slurm-wlm` and `munge` packages, no systemd and nothing under /etc: every daemon runs
in the foreground as a child of the test, with its state in a temporary folder, and is stopped
by its PID. Accounting is off (no slurmdbd); finished jobs stay visible to `squeue --states=all`
and `scontrol` for MinJobAge, and jobcomp/filetxt keeps one line per finished job with what it
asked for (CPUs, memory, time limit), which is what the tests check instead of `sacct`.

The Slurm daemons run as root (SlurmUser=root), as on CI; elsewhere the fixture says why it
cannot start. Run by hand to get a cluster for manual tries (stops on Ctrl-C):
    python tests/slurm_cluster.py
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from pg_server import Unavailable

DAEMONS = ("munged", "mungekey", "slurmctld", "slurmd")
CLIENTS = ("sbatch", "squeue", "sinfo", "scontrol", "scancel", "srun")
# MinJobAge: keep finished jobs in slurmctld for an hour, so the executor plugin's `squeue`
# status queries see them finish (it needs >= 3 x its first status-check delay).
MIN_JOB_AGE_S = 3600


@dataclass
class Cluster:
    base: Path
    conf: Path
    env: dict[str, str]
    jobcomp: Path
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)

    def run(
        self, *cmd: str, check: bool = True, timeout: float = 60, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess:
        """A Slurm client command against this cluster (env: the jobs' environment, for sbatch)."""
        res = subprocess.run(cmd, env=env or self.env, capture_output=True, text=True, timeout=timeout)
        if check and res.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed ({res.returncode}):\n{res.stdout}{res.stderr}")
        return res

    def jobs(self) -> list[dict[str, str]]:
        """Every finished job's jobcomp record (key=value pairs), in completion order."""
        if not self.jobcomp.exists():
            return []
        return [_parse_record(line) for line in self.jobcomp.read_text().splitlines() if line.strip()]

    def job_info(self, job_id: str) -> dict[str, str]:
        """`scontrol show job` as a dict (jobs stay there for MinJobAge after they end)."""
        out = self.run("scontrol", "show", "job", "-o", job_id).stdout
        return _parse_record(out.strip())


def _parse_record(line: str) -> dict[str, str]:
    pairs = (tok.split("=", 1) for tok in line.split() if "=" in tok)
    return {k: v for k, v in pairs}


def _check_available() -> None:
    missing = [b for b in (*DAEMONS, *CLIENTS) if shutil.which(b) is None]
    if missing:
        raise Unavailable(
            f"Slurm/munge binaries not found ({', '.join(missing)}); install them with "
            "`apt-get install -y --no-install-recommends slurm-wlm munge`"
        )
    if os.geteuid() != 0:
        raise Unavailable("slurmd must run as root to start jobs (SlurmUser=root); run the tests as root")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _slurm_conf(base: Path, host: str, cpus: int, mem_mb: int) -> str:
    lines = {
        "ClusterName": "timoe-test",
        "SlurmctldHost": f"{host}(127.0.0.1)",
        "SlurmUser": "root",
        "SlurmdUser": "root",
        "SlurmctldPort": str(_free_port()),
        "SlurmdPort": str(_free_port()),
        "AuthType": "auth/munge",
        "CredType": "cred/munge",
        "AuthInfo": f"socket={base / 'munge' / 'munge.socket.2'}",
        "StateSaveLocation": str(base / "state"),
        "SlurmdSpoolDir": str(base / "spool"),
        "SlurmctldPidFile": str(base / "slurmctld.pid"),
        "SlurmdPidFile": str(base / "slurmd.pid"),
        "SlurmctldLogFile": str(base / "slurmctld.log"),
        "SlurmdLogFile": str(base / "slurmd.log"),
        # No cgroups in a container: track processes through /proc, no task binding.
        "ProctrackType": "proctrack/linuxproc",
        "TaskPlugin": "task/none",
        "MpiDefault": "none",
        "SelectType": "select/cons_tres",
        "SelectTypeParameters": "CR_Core_Memory",
        "ReturnToService": "2",
        "AccountingStorageType": "accounting_storage/none",
        "JobAcctGatherType": "jobacct_gather/none",
        "JobCompType": "jobcomp/filetxt",
        "JobCompLoc": str(base / "jobcomp.log"),
        "MinJobAge": str(MIN_JOB_AGE_S),
        # Scancel'd or failed jobs are resubmitted by Snakemake (--retries), not requeued by Slurm.
        "JobRequeue": "0",
        "SchedulerParameters": "sched_interval=2",
    }
    node = f"NodeName={host} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={mem_mb} State=UNKNOWN"
    part = f"PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP"
    return "\n".join([*(f"{k}={v}" for k, v in lines.items()), node, part, ""])


def _srun_wrapper(base: Path, conf: Path) -> Path:
    """A `srun` first on PATH that restores SLURM_CONF.

    The jobstep executor drops every SLURM_* variable before its inner `srun`, which then
    cannot find this cluster's config (a real cluster has it at the default path).
    """
    bindir = base / "bin"
    bindir.mkdir()
    real = shutil.which("srun")
    wrapper = bindir / "srun"
    wrapper.write_text(f'#!/bin/sh\nexport SLURM_CONF="{conf}"\nexec "{real}" "$@"\n')
    wrapper.chmod(0o755)
    return bindir


def _start(name: str, cmd: list[str], base: Path, env: dict[str, str]) -> subprocess.Popen:
    log = open(base / f"{name}.out", "ab")  # noqa: SIM115 - lives as long as the daemon
    return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=base)


def _stop(proc: subprocess.Popen, timeout_s: float = 20) -> None:
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=timeout_s)


def _start_munge(base: Path, env: dict[str, str]) -> subprocess.Popen:
    mdir = base / "munge"
    mdir.mkdir(mode=0o755)
    mdir.chmod(0o755)  # munged refuses a socket folder others cannot traverse
    key = mdir / "munge.key"
    subprocess.run(["mungekey", "-c", "-k", str(key)], check=True, capture_output=True, timeout=30)
    cmd = ["munged", "-F", "--force", "-S", str(mdir / "munge.socket.2"), f"--key-file={key}",
           f"--log-file={mdir / 'munged.log'}", f"--pid-file={mdir / 'munged.pid'}",
           f"--seed-file={mdir / 'munged.seed'}"]  # fmt: skip
    proc = _start("munged", cmd, base, env)
    _wait_for(lambda: (mdir / "munge.socket.2").exists(), 30, "munged socket", base, proc)
    return proc


def _wait_for(ok, timeout_s: float, what: str, base: Path, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if ok():
            return
        if proc is not None and proc.poll() is not None:
            break
        time.sleep(0.5)
    logs = "\n".join(f"--- {p.name}\n{p.read_text()[-3000:]}" for p in sorted(base.rglob("*.log")))
    logs += "\n".join(f"--- {p.name}\n{p.read_text()[-3000:]}" for p in sorted(base.glob("*.out")))
    raise RuntimeError(f"timed out waiting for {what}\n{logs}")


def _node_idle(env: dict[str, str]) -> bool:
    res = subprocess.run(["sinfo", "-h", "-o", "%T"], env=env, capture_output=True, text=True, timeout=30)
    return res.returncode == 0 and res.stdout.strip() == "idle"


def _cancel_all(cluster: Cluster) -> None:
    """Cancel this cluster's jobs and wait for them to end, so no job outlives slurmd."""
    with contextlib.suppress(Exception):
        cluster.run("scancel", "--full", "--user", str(os.geteuid()), check=False)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            out = cluster.run("squeue", "-h", "-o", "%i", "--states=PENDING,RUNNING,COMPLETING").stdout
            if not out.strip():
                return
            time.sleep(1)


@contextlib.contextmanager
def slurm_cluster(cpus: int | None = None, mem_mb: int = 16000) -> Iterator[Cluster]:
    """Start munge + slurmctld + slurmd; yield the cluster; cancel its jobs and stop it after."""
    _check_available()
    base = Path(tempfile.mkdtemp(prefix="timoe-slurm-"))
    base.chmod(0o755)
    for d in ("state", "spool"):
        (base / d).mkdir()
    host = socket.gethostname().split(".")[0]
    conf = base / "slurm.conf"
    conf.write_text(_slurm_conf(base, host, cpus or os.cpu_count() or 1, mem_mb))
    bindir = _srun_wrapper(base, conf)
    env = {**os.environ, "SLURM_CONF": str(conf), "PATH": f"{bindir}{os.pathsep}{os.environ['PATH']}"}
    cluster = Cluster(base=base, conf=conf, env=env, jobcomp=base / "jobcomp.log")
    try:
        cluster.procs["munged"] = _start_munge(base, env)
        ctld = ["slurmctld", "-D", "-i", "-f", str(conf)]  # -i: ignore state left by an earlier run
        cluster.procs["slurmctld"] = _start("slurmctld", ctld, base, env)
        cluster.procs["slurmd"] = _start("slurmd", ["slurmd", "-D", "-f", str(conf), "-N", host], base, env)
        _wait_for(lambda: _node_idle(env), 90, "the node to turn idle", base, cluster.procs["slurmd"])
        yield cluster
    finally:
        if "slurmctld" in cluster.procs:
            _cancel_all(cluster)
        for name in ("slurmd", "slurmctld", "munged"):  # reverse start order
            if name in cluster.procs:
                _stop(cluster.procs[name])
        shutil.rmtree(base, ignore_errors=True)


@dataclass
class TrackingServer:
    """A `timoe server` process (MLflow on PostgreSQL) and how it came up."""

    url: str
    backend: str
    artifacts: Path
    port: int
    log: Path
    proc: subprocess.Popen | None = None
    ready_s: float = 0.0
    memory_mib: float = 0.0

    def start(self, timeout_s: float = 240) -> None:
        cmd = [sys.executable, "-m", "timoe", "server", "--artifacts-destination", str(self.artifacts),
               "--port", str(self.port)]  # fmt: skip
        # The backend URL in the environment, as users are told to pass one with a password.
        env = {**os.environ, "MLFLOW_BACKEND_STORE_URI": self.backend}
        out = open(self.log, "ab")  # noqa: SIM115 - handed to the child
        seen = self.log.stat().st_size  # a restart appends: wait for a new "ready" line
        started = time.monotonic()
        self.proc = subprocess.Popen(
            cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
        out.close()
        _wait_for(lambda: "tracking server ready" in self._since(seen), timeout_s, "the tracking server",
                  self.log.parent, self.proc)  # fmt: skip
        self.ready_s = time.monotonic() - started
        line = next(ln for ln in self._since(seen).splitlines() if "tracking server ready" in ln)
        self.memory_mib = float(line.split("(")[1].split(" MiB")[0])

    def _since(self, offset: int) -> str:
        with open(self.log, "rb") as fh:
            fh.seek(offset)
            return fh.read().decode(errors="replace")

    def stop(self, timeout_s: float = 60) -> int:
        """SIGTERM `timoe server` (it stops MLflow's process group) and wait; its exit code."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return proc.returncode if proc else 0
        proc.terminate()
        try:
            return proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # its own session: only the server's processes
            return proc.wait(timeout=timeout_s)


@contextlib.contextmanager
def tracking_server(pg_url: str, base: Path) -> Iterator[TrackingServer]:
    """`timoe server` on a free loopback port, its runs in the `mlflow` database of pg_url."""
    from sqlalchemy.engine import make_url

    backend = make_url(pg_url).set(drivername="postgresql", database="mlflow").render_as_string(False)
    port = _free_port()
    server = TrackingServer(url=f"http://127.0.0.1:{port}", backend=backend, artifacts=base / "artifacts",
                            port=port, log=base / "tracking-server.log")  # fmt: skip
    try:
        server.start()
        yield server
    finally:
        server.stop()


if __name__ == "__main__":
    with slurm_cluster() as c:
        print(f"export SLURM_CONF={c.conf} PATH={c.env['PATH'].split(os.pathsep)[0]}:$PATH", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            while True:
                time.sleep(3600)
