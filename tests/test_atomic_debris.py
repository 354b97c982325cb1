"""A killed writer's temporaries are removed by the next writer of the same output, and only then."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from timoe.atomic import FOREIGN_TEMP_MAX_AGE_S, atomic_dir, atomic_write_text, remove_debris

KILLED_WRITER = """
import os, sys, time
from pathlib import Path
from timoe.atomic import atomic_dir
with atomic_dir(Path(sys.argv[1])) as tmp:
    (tmp / "part.txt").write_text("half")
    print("writing", flush=True)
    time.sleep(600)
"""


def _killed_writer_leaves_debris(target: Path) -> Path:
    proc = subprocess.Popen(
        [sys.executable, "-c", KILLED_WRITER, str(target)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "writing"
    proc.kill()
    proc.wait()
    (debris,) = target.parent.glob(f".{target.name}.tmp-*")
    return debris


def test_the_next_run_removes_a_killed_jobs_temporary_folder(tmp_path: Path):
    target = tmp_path / "out"
    debris = _killed_writer_leaves_debris(target)
    assert (debris / "part.txt").exists() and not target.exists()
    with atomic_dir(target) as tmp:
        (tmp / "done.txt").write_text("ok")
    assert not debris.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_a_live_writers_temporary_is_kept(tmp_path: Path):
    target = tmp_path / "out"
    live = tmp_path / f".out.tmp-{socket.gethostname()}-{os.getppid()}-abc123"
    live.mkdir()
    assert remove_debris(target) == [] and live.exists()


def test_a_foreign_hosts_temporary_is_removed_only_when_old(tmp_path: Path):
    target = tmp_path / "results.txt"
    foreign = tmp_path / ".results.txt.tmp-node-17-4242-abc123"
    foreign.write_text("x")
    assert remove_debris(target) == []
    old = time.time() - FOREIGN_TEMP_MAX_AGE_S - 60
    os.utime(foreign, (old, old))
    atomic_write_text(target, "new")
    assert not foreign.exists() and target.read_text() == "new"
