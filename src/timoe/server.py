"""`timoe server`: one MLflow tracking server that every machine of a study logs to.

A cluster's jobs run on many nodes; a SQLite file on a shared file system is unsafe there (its
locks do not hold over NFS). The server keeps runs in PostgreSQL and serves artifacts itself
(`--artifacts-destination`), so jobs need only `tracking.uri: http://<host>:<port>`, no shared
folder. It binds to loopback unless `--host` opens it on purpose, runs lean (one worker, no job
execution: ready in seconds and about 0.5 GiB instead of 15 processes and 2-3 GiB), waits until
it answers before saying it is ready, and stops its whole process group on Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

LOOPBACK = "127.0.0.1"
BACKEND_ENV = "MLFLOW_BACKEND_STORE_URI"  # read by `mlflow server`; keeps a password off `ps`
# Seconds a stopped server's processes get before SIGKILL (uvicorn finishes open requests first).
STOP_GRACE_S = 20.0


class ServerError(RuntimeError):
    """The server could not start or did not become ready; the message says why."""


@dataclass(frozen=True)
class ServerConfig:
    backend_store_uri: str
    artifacts_destination: Path
    host: str = LOOPBACK
    port: int = 5000
    workers: int = 1
    allowed_hosts: str | None = None

    @property
    def url(self) -> str:
        """Where clients on this machine reach it (a server on 0.0.0.0 answers on loopback too)."""
        host = LOOPBACK if self.host in ("0.0.0.0", "::") else self.host
        return f"http://{host}:{self.port}"


def ensure_database(url: str) -> bool:
    """Create the PostgreSQL database the URL names, if missing; True if it was created.

    MLflow and Optuna both keep an `alembic_version` table, so they must not share a database:
    the server gets its own, made here rather than by hand on a fresh PostgreSQL.
    """
    import sqlalchemy
    from sqlalchemy.engine import make_url
    from sqlalchemy.pool import NullPool

    target = make_url(url)
    if target.get_backend_name() != "postgresql" or not target.database:
        return False
    admin = sqlalchemy.create_engine(
        target.set(database="postgres"), isolation_level="AUTOCOMMIT", poolclass=NullPool
    )
    try:
        with admin.connect() as conn:
            q = sqlalchemy.text("SELECT 1 FROM pg_database WHERE datname = :n")
            if conn.execute(q, {"n": target.database}).first():
                return False
            name = target.database.replace('"', '""')
            conn.execute(sqlalchemy.text(f'CREATE DATABASE "{name}"'))
            return True
    finally:
        admin.dispose()


def server_command(cfg: ServerConfig) -> list[str]:
    """The `mlflow server` command line (the backend URI travels in the environment instead)."""
    cmd = [
        sys.executable, "-m", "mlflow", "server",
        "--artifacts-destination", str(cfg.artifacts_destination.resolve()),
        "--serve-artifacts",
        "--host", cfg.host,
        "--port", str(cfg.port),
        "--workers", str(cfg.workers),
    ]  # fmt: skip
    if cfg.allowed_hosts:
        cmd += ["--allowed-hosts", cfg.allowed_hosts]
    return cmd


def server_env(cfg: ServerConfig) -> dict[str, str]:
    # Job execution starts a Huey consumer and workers per job type: seconds and GiBs for nothing.
    return {**os.environ, BACKEND_ENV: cfg.backend_store_uri, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}


def start(cfg: ServerConfig, log: Path | None = None) -> subprocess.Popen:
    """Start the server in its own process group (uvicorn's children are stopped with it)."""
    cfg.artifacts_destination.mkdir(parents=True, exist_ok=True)
    out = open(log, "ab") if log is not None else None  # noqa: SIM115 - handed to the child
    try:
        return subprocess.Popen(
            server_command(cfg), env=server_env(cfg), stdout=out, stderr=subprocess.STDOUT if out else None,
            start_new_session=True,
        )  # fmt: skip
    finally:
        if out is not None:
            out.close()  # the child holds its own copy


def is_ready(url: str, timeout_s: float = 5.0) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=timeout_s) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError):
        return False


def wait_ready(url: str, proc: subprocess.Popen, timeout_s: float = 180.0) -> float:
    """Poll /health until it answers; seconds it took. Fails at once if the server exits."""
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        if proc.poll() is not None:
            raise ServerError(f"mlflow server exited with code {proc.returncode} before it was ready")
        if is_ready(url):
            return time.monotonic() - started
        time.sleep(0.25)
    raise ServerError(f"mlflow server not ready at {url} after {timeout_s:.0f} s")


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stop(proc: subprocess.Popen, grace_s: float = STOP_GRACE_S) -> None:
    """SIGTERM the server's process group, wait for all of it, SIGKILL what outlives the grace."""
    pgid = proc.pid  # start() made it a session (and group) leader
    if _group_alive(pgid):
        os.killpg(pgid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        proc.poll()  # reap the leader, or the group stays alive as a zombie
        if not _group_alive(pgid):
            return
        time.sleep(0.2)
    if _group_alive(pgid):
        os.killpg(pgid, signal.SIGKILL)
    proc.wait(timeout=grace_s)


def memory_mib(pgid: int) -> float:
    """Resident memory of the server's process group (Linux /proc), for the ready report."""
    total_kib = 0
    for status in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = status.read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) != pgid:  # field 5 of stat, the process group
                continue
            rss = (status.parent / "status").read_text().split("VmRSS:")[1].split()[0]
            total_kib += int(rss)
        except (OSError, IndexError, ValueError):
            continue  # the process ended while we read it
    return total_kib / 1024


class _Stop(Exception):
    pass


def _raise_stop(signum: int, frame: FrameType | None) -> None:
    raise _Stop


def serve(cfg: ServerConfig, ready_timeout_s: float = 180.0) -> int:
    """Run the server in the foreground until Ctrl-C or SIGTERM; its exit code (0 when stopped)."""
    if cfg.host != LOOPBACK:
        print(f"timoe server: listening on {cfg.host}: reachable from other machines", file=sys.stderr)
    if ensure_database(cfg.backend_store_uri):
        print("timoe server: created the backend database", file=sys.stderr)
    proc = start(cfg)
    previous = signal.signal(signal.SIGTERM, _raise_stop)
    try:
        seconds = wait_ready(cfg.url, proc, ready_timeout_s)
        print(
            f"tracking server ready at {cfg.url} in {seconds:.1f} s ({memory_mib(proc.pid):.0f} MiB); "
            f"set tracking.uri: {cfg.url}",
            flush=True,
        )
        return proc.wait()
    except (KeyboardInterrupt, _Stop):
        return 0
    finally:
        signal.signal(signal.SIGTERM, previous)
        stop(proc)
