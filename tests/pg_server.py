"""A throwaway PostgreSQL server for tests: initdb in a temporary folder, started on loopback.

PostgreSQL refuses to run as root, and CI runs as root, so as root the server runs as the
`postgres` user that Debian's package creates. The data folder is made outside pytest's
tmp_path, which is private to root. Trust authentication is safe here: the server listens
on 127.0.0.1 only and lives as long as the test.

Run by hand to get a server for manual sweeps (stops on Ctrl-C):
    python tests/pg_server.py
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

DB_USER = "timoe"
# Debian installs the server binaries off PATH, one folder per major version.
_DEBIAN_BIN_GLOB = "/usr/lib/postgresql/*/bin"


class Unavailable(RuntimeError):
    """The server cannot be started here; the message says why (used as a skip reason)."""


def find_bindir() -> Path:
    """The folder holding initdb and pg_ctl: $PG_BINDIR, PATH, pg_config, then Debian's layout."""
    candidates = []
    if os.environ.get("PG_BINDIR"):
        candidates.append(Path(os.environ["PG_BINDIR"]))
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append(Path(on_path).resolve().parent)
    if shutil.which("pg_config"):
        with contextlib.suppress(OSError, subprocess.CalledProcessError):
            out = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True, check=True)
            candidates.append(Path(out.stdout.strip()))

    def major(p: str) -> int:
        return int(v) if (v := Path(p).parent.name).isdigit() else 0

    candidates += [Path(p) for p in sorted(glob.glob(_DEBIAN_BIN_GLOB), key=major, reverse=True)]
    for c in candidates:
        if (c / "initdb").is_file() and (c / "pg_ctl").is_file():
            return c
    raise Unavailable(
        "PostgreSQL server binaries (initdb, pg_ctl) not found on PATH or under "
        f"{_DEBIAN_BIN_GLOB}; install them with `apt-get install -y postgresql`"
    )


def _run_as() -> pwd.struct_passwd | None:
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam("postgres")
    except KeyError:
        raise Unavailable(
            "running as root, and PostgreSQL refuses root: no `postgres` user to run it as "
            "(Debian's postgresql package creates one)"
        ) from None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def postgres_server() -> Iterator[str]:
    """Start a server; yield its SQLAlchemy URL (psycopg2 driver); stop and delete it after."""
    bindir = find_bindir()
    user = _run_as()
    base = Path(tempfile.mkdtemp(prefix="timoe-pg-"))
    as_user = {}
    if user is not None:
        os.chown(base, user.pw_uid, user.pw_gid)
        as_user = {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}
    data, port = base / "data", _free_port()

    def run(*cmd: str) -> None:
        res = subprocess.run(cmd, capture_output=True, text=True, cwd=base, **as_user)  # type: ignore[arg-type]
        if res.returncode != 0:
            log = (base / "server.log").read_text() if (base / "server.log").exists() else ""
            raise RuntimeError(f"{' '.join(cmd)} failed:\n{res.stdout}{res.stderr}{log}")

    started = False
    try:
        run(str(bindir / "initdb"), "-D", str(data), "-U", DB_USER, "-A", "trust", "-E", "UTF8",
            "--no-sync", "--locale=C")  # fmt: skip
        # fsync off: a test server's data is thrown away; it only makes commits slower.
        opts = f"-c listen_addresses=127.0.0.1 -p {port} -k {base} -c fsync=off -c max_connections=200"
        run(str(bindir / "pg_ctl"), "-D", str(data), "-l", str(base / "server.log"), "-o", opts,
            "-w", "-t", "60", "start")  # fmt: skip
        started = True
        yield f"postgresql+psycopg2://{DB_USER}@127.0.0.1:{port}/postgres"
    finally:
        if started:
            with contextlib.suppress(RuntimeError):
                run(str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    import time

    with postgres_server() as url:
        print(url, flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            while True:
                time.sleep(3600)
