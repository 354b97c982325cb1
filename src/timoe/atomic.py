"""Atomic writes: a killed or failed job never leaves a half-written output behind."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

# A temporary left by a process on another machine (a cluster node) cannot be checked for life;
# past this age it is debris all the same.
FOREIGN_TEMP_MAX_AGE_S = 24 * 3600


def _temp_prefix(name: str) -> str:
    """`.<name>.tmp-<host>-<pid>-`: who made a temporary, so the next run can tell debris."""
    return f".{name}.tmp-{socket.gethostname()}-{os.getpid()}-"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _is_debris(path: Path, name: str) -> bool:
    # mkdtemp's random suffix has no "-", so the last two "-" fields are the pid and the suffix.
    parts = path.name[len(f".{name}.tmp-") :].rsplit("-", 2)
    if len(parts) == 3 and parts[0] == socket.gethostname() and parts[1].isdigit():
        pid = int(parts[1])
        return pid != os.getpid() and not _alive(pid)
    try:
        return time.time() - path.lstat().st_mtime > FOREIGN_TEMP_MAX_AGE_S
    except OSError:
        return False


def remove_debris(target: Path) -> list[Path]:
    """Remove the temporaries that killed writers of `target` left beside it; return them.

    Without this a killed job's `.<name>.tmp-*` folder stays, and the next `dvc commit` of the
    parent folder records its files as outputs.
    """
    target = Path(target)
    removed = []
    for path in target.parent.glob(f".{target.name}.tmp-*"):
        if _is_debris(path, target.name):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
            removed.append(path)
    for path in target.parent.glob(f".{target.name}.old-*"):
        # a swap killed half-way: the new version is in place, this is the previous one
        if target.exists():
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


@contextlib.contextmanager
def atomic_dir(target: Path) -> Iterator[Path]:
    """Yield a temporary sibling directory; on success it replaces `target` in one rename.

    On an exception the temporary directory is removed and `target` is left as it was.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_debris(target)
    tmp = Path(tempfile.mkdtemp(prefix=_temp_prefix(target.name), dir=target.parent))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    os.chmod(tmp, 0o755)  # mkdtemp creates 0700; an output should be readable like any other
    if target.exists():
        # Move the old version aside first so the swap never leaves `target` missing for long.
        old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
        os.replace(target, old / "x")
        os.replace(tmp, target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, target)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_debris(path)
    fd, tmp = tempfile.mkstemp(prefix=_temp_prefix(path.name), dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())
