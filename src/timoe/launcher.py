"""The `timoe` command's entry point, and a fork server that spares each study job its imports.

A study runs ~150 short `timoe <stage>` processes (train, sweep, ...), and each paid 5-7 s of
imports (torch and its dynamo, which any torch.optim optimiser loads; MLflow and its SQL store;
scikit-learn; matplotlib; polars) before its first step: ~10 % of a 45-minute `make run` on two
cores. `timoe study` therefore starts a fork server for local runs: one process that imports all
of that once, then forks a child per job. Each job's `timoe` call (this module's `main`) is a thin
client: it hands its argv, working folder, environment and stdin/stdout/stderr to the server,
which forks; the child runs the ordinary CLI with them and the client exits with its exit code.
The child computes exactly what a fresh process would (every stage seeds its own generators);
tests/test_launcher.py checks a job's outputs against a direct run.

Why not reuse one process for many jobs: a fork gives each job a clean interpreter state (module
globals, MLflow's active run, torch's thread count) at no import cost.

Scope and safety:
- only the stage commands in SERVED_COMMANDS go through the server; anything else, and every call
  when TIMOE_FORKSERVER is unset or its server does not answer, runs in-process as before;
- the socket lives in a fresh 0700 folder, so only the user who started the study can use it,
  and the server runs nothing but this CLI;
- the server imports before it serves and refuses to serve if an import started a thread (a fork
  would copy a process whose other threads are gone);
- a signal to the client (Snakemake stopping a job) is forwarded to the child; a client that
  disappears without one (SIGKILL) has its child terminated by the server;
- cluster runs (`--executor`, or a profile naming one) start no server: their jobs run elsewhere;
- the server stops with `timoe study`, and on its own within a second when the study is killed.

This module imports only the standard library at module level, so the client starts in
milliseconds.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import selectors
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import traceback
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

SERVER_ENV = "TIMOE_FORKSERVER"  # the socket's path; "off" before `timoe study`: start none
SERVER_OFF = "off"
# The stage commands Snakemake rules call, one process per job.
SERVED_COMMANDS = frozenset({"prepare", "quantify", "sweep", "sweep-worker", "train", "check", "evaluate"})
# What a job imports before its first step, measured with `python -X importtime` (module: why).
PRELOAD = (
    "torch",
    "torch._dynamo",  # torch.optim's first optimiser loads it (~1.2 s), in every train job
    "torch.utils.flop_counter",
    "numpy",
    "polars",
    "mlflow",
    "mlflow.store.tracking.sqlalchemy_store",  # the sqlite tracking store: SQLAlchemy, alembic
    "sklearn.metrics",
    "matplotlib.pyplot",  # each run's learning curves
    "optuna",
    "timoe.cli",
    "timoe.stages.train",
    "timoe.stages.sweep",
    "timoe.stages.evaluate",
    "timoe.training.loop",
    "timoe.models.model",
)
READY = "ready"
_HEADER = struct.Struct("!Q")  # the length of the JSON request that follows it
_STDIO = 3  # stdin, stdout, stderr travel with the request


# ------------------------------------------------------------------------------------ client side
def main() -> None:
    """Console entry point: through the fork server when one is set and the command is a stage."""
    argv = sys.argv[1:]
    path = os.environ.get(SERVER_ENV)
    if path and path != SERVER_OFF and argv and argv[0] in SERVED_COMMANDS:
        code = run_through_server(Path(path), argv)
        if code is not None:
            sys.exit(code)
    from timoe.cli import app

    app()


def run_through_server(path: Path, argv: list[str]) -> int | None:
    """Run `timoe argv` in a child of the server at `path`; its exit code, or None when no server
    answers (the caller then runs the command itself)."""
    try:
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        conn.connect(str(path))
    except OSError:
        return None
    with conn:
        request = json.dumps(
            {"argv": [sys.argv[0], *argv], "cwd": os.getcwd(), "env": dict(os.environ)}
        ).encode()
        try:
            socket.send_fds(conn, [_HEADER.pack(len(request))], list(range(_STDIO)))
            conn.sendall(request)
            replies = _json_lines(conn)
            started = next(replies, None)
        except OSError:
            return None
        if started is None or "pid" not in started:
            return None  # the server refused or went away before forking: nothing ran
        previous = _forward_signals(int(started["pid"]))
        try:
            for reply in replies:
                if "exit" in reply:
                    return int(reply["exit"])
        except OSError:
            pass
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
    print("timoe: error: the fork server went away while the job ran", file=sys.stderr)
    return 1


def _forward_signals(pid: int) -> dict[int, object]:
    """Send SIGTERM, SIGINT and SIGHUP on to the child `pid`; the handlers they replaced."""

    def forward(signum: int, _frame: object) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)

    return {sig: signal.signal(sig, forward) for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}


def _json_lines(conn: socket.socket) -> Iterator[dict]:
    buf = b""
    while True:
        chunk = conn.recv(4096)
        if not chunk:
            return
        buf += chunk
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            yield json.loads(line)


# ------------------------------------------------------------------------------------ server side
@dataclass
class _Job:
    conn: socket.socket
    pid: int


@dataclass
class ForkServer:
    """Accepts requests on a Unix socket and runs each in a forked child (see the module docstring)."""

    path: Path
    listener: socket.socket = field(init=False)
    jobs: dict[int, _Job] = field(default_factory=dict)  # child pid -> its client
    _own_fds: list[int] = field(default_factory=list)  # the server's descriptors a child closes

    def serve(self) -> None:
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(str(self.path))
        self.listener.listen(64)
        wake_r, wake_w = os.pipe()
        os.set_blocking(wake_w, False)
        signal.set_wakeup_fd(wake_w)
        signal.signal(signal.SIGCHLD, lambda *_: None)  # wakes select through the pipe
        stop = threading.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
        sel = selectors.DefaultSelector()
        sel.register(self.listener, selectors.EVENT_READ, "accept")
        sel.register(wake_r, selectors.EVENT_READ, "wake")
        print(READY, flush=True)
        # Nobody reads the pipe after READY: a later write must not block on a full pipe.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        os.close(devnull)
        self._own_fds = [self.listener.fileno(), wake_r, wake_w, sel.fileno()]
        parent = os.getppid()
        try:
            # A study killed outright (SIGKILL) cannot stop its server: it leaves when orphaned.
            while not stop.is_set() and os.getppid() == parent:
                for key, _ in sel.select(timeout=1.0):
                    if key.data == "accept":
                        self._accept(sel)
                    elif key.data == "wake":
                        with contextlib.suppress(BlockingIOError):
                            os.read(wake_r, 4096)
                    else:
                        self._client_closed(sel, key.data)
                self._reap(sel)
        finally:
            self._shutdown(sel)

    def _accept(self, sel: selectors.BaseSelector) -> None:
        conn, _ = self.listener.accept()
        try:
            request, fds = _read_request(conn)
        except (OSError, ValueError) as err:
            print(f"timoe fork server: bad request ({err})", file=sys.stderr, flush=True)
            conn.close()
            return
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # the child never returns
            inherited = [*self._own_fds, conn.fileno(), *(j.conn.fileno() for j in self.jobs.values())]
            _run_child(request, fds, inherited)
        for fd in fds:
            os.close(fd)
        self.jobs[pid] = _Job(conn, pid)
        try:
            conn.sendall(json.dumps({"pid": pid}).encode() + b"\n")
        except OSError:  # the client is already gone: so is the reason for its job
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
            return
        sel.register(conn, selectors.EVENT_READ, pid)

    def _client_closed(self, sel: selectors.BaseSelector, pid: int) -> None:
        """A client's socket turned readable: it sends nothing more, so it is gone (SIGKILL)."""
        job = self.jobs.get(pid)
        if job is None:
            return
        sel.unregister(job.conn)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)

    def _reap(self, sel: selectors.BaseSelector) -> None:
        while self.jobs:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            job = self.jobs.pop(pid, None)
            if job is None:
                continue
            code = os.waitstatus_to_exitcode(status)
            code = 128 - code if code < 0 else code  # killed by signal n: 128 + n, as a shell says
            with contextlib.suppress(OSError, KeyError, ValueError):
                sel.unregister(job.conn)
            with contextlib.suppress(OSError):
                job.conn.sendall(json.dumps({"exit": code}).encode() + b"\n")
            job.conn.close()

    def _shutdown(self, sel: selectors.BaseSelector) -> None:
        for pid in list(self.jobs):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        for pid in list(self.jobs):
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
        self.listener.close()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        sel.close()


def _read_request(conn: socket.socket) -> tuple[dict, list[int]]:
    head, fds, _, _ = socket.recv_fds(conn, _HEADER.size, _STDIO)
    if len(head) != _HEADER.size or len(fds) != _STDIO:
        for fd in fds:
            os.close(fd)
        raise ValueError("expected a length header and three file descriptors")
    (length,) = _HEADER.unpack(head)
    body = b""
    while len(body) < length:
        chunk = conn.recv(length - len(body))
        if not chunk:
            raise ValueError("request cut short")
        body += chunk
    return json.loads(body), fds


def _run_child(request: dict, fds: list[int], inherited: list[int]) -> None:
    """In the forked child: close the server's descriptors (`inherited`), become the client's
    process (stdio, folder, environment, argv), run the CLI, exit with its code. Never returns."""
    code = 1
    try:
        for fd in inherited:
            with contextlib.suppress(OSError):
                os.close(fd)
        for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGCHLD):
            signal.signal(sig, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.set_wakeup_fd(-1)
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
            os.close(fd)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        from timoe.tracking import LAUNCHER_ENV

        os.environ[LAUNCHER_ENV] = "fork-server"  # recorded as each MLflow run's `launcher` tag
        sys.argv = list(request["argv"])
        import random

        random.seed()  # a fresh process's state; every stage seeds its own generators anyway
        code = _run_cli(sys.argv[1:])
    except BaseException:  # the child must reach os._exit whatever happened
        traceback.print_exc()
    finally:
        with contextlib.suppress(Exception):
            atexit._run_exitfuncs()  # what interpreter exit would run (MLflow ends its runs there)
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)


def _run_cli(argv: list[str]) -> int:
    from timoe.cli import app

    try:
        app(args=argv, prog_name="timoe")
    except SystemExit as done:
        if done.code is None:
            return 0
        if isinstance(done.code, int):
            return done.code
        print(done.code, file=sys.stderr)
        return 1
    return 0


def preload() -> list[str]:
    """Import PRELOAD; the modules that failed (an optional package missing), by name."""
    import importlib

    failed = []
    for name in PRELOAD:
        try:
            importlib.import_module(name)
        except ImportError:
            failed.append(name)
    import matplotlib

    matplotlib.use("Agg")
    return failed


def serve(path: Path) -> int:
    preload()
    if threading.active_count() != 1:
        names = [t.name for t in threading.enumerate()]
        print(f"timoe fork server: an import started threads {names}; not serving", file=sys.stderr)
        return 1
    ForkServer(path).serve()
    return 0


# --------------------------------------------------------------------- started by `timoe study`
def runs_elsewhere(args: list[str]) -> bool:
    """True when these Snakemake arguments send jobs to a cluster executor (no local server)."""
    if any(a in ("--executor", "-e") or a.startswith("--executor=") for a in args):
        return True
    for i, a in enumerate(args):
        if a in ("--profile", "--workflow-profile") and i + 1 < len(args):
            config = Path(args[i + 1]) / "config.yaml"
            if config.is_file() and any(
                line.split(":", 1)[0].strip() == "executor" for line in config.read_text().splitlines()
            ):
                return True
    return False


@contextlib.contextmanager
def fork_server(enabled: bool = True, ready_timeout_s: float = 120.0) -> Iterator[Path | None]:
    """Run a fork server for the duration of the block and point TIMOE_FORKSERVER at it; yields
    its socket path, or None (and changes nothing) when disabled or when it failed to start."""
    if not enabled or os.environ.get(SERVER_ENV) == SERVER_OFF or not hasattr(socket, "send_fds"):
        yield None
        return
    folder = Path(tempfile.mkdtemp(prefix="timoe-fs-"))  # 0700: only this user may connect
    path = folder / "socket"
    proc = subprocess.Popen(
        [sys.executable, "-m", "timoe.launcher", "serve", str(path)],
        stdout=subprocess.PIPE,
        text=True,
    )
    ready = _wait_ready(proc, ready_timeout_s)
    previous = os.environ.get(SERVER_ENV)
    if ready:
        os.environ[SERVER_ENV] = str(path)
    else:
        print("timoe: the fork server did not start; each job imports on its own", file=sys.stderr)
    try:
        yield path if ready else None
    finally:
        if previous is None:
            os.environ.pop(SERVER_ENV, None)
        else:
            os.environ[SERVER_ENV] = previous
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        with contextlib.suppress(OSError):
            path.unlink(missing_ok=True)
            folder.rmdir()


def _wait_ready(proc: subprocess.Popen, timeout_s: float) -> bool:
    assert proc.stdout is not None
    answer: list[str] = []
    reader = threading.Thread(target=lambda: answer.append(proc.stdout.readline()), daemon=True)
    reader.start()
    reader.join(timeout_s)
    return bool(answer) and answer[0].strip() == READY


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "serve":
        sys.exit(serve(Path(sys.argv[2])))
    print("usage: python -m timoe.launcher serve SOCKET_PATH", file=sys.stderr)
    sys.exit(2)
