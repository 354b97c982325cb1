"""The two cross-process locks (tracking.store_lock, sweeps.storage.TrialClaim) on `filelock`:
one holder at a time across processes, and a killed holder's lock is free again."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from timoe.sweeps.storage import StorageSpec, TrialClaim
from timoe.tracking import store_lock

HOLD = """
import sys, time
from pathlib import Path
from timoe.sweeps.storage import StorageSpec, TrialClaim
claim = TrialClaim(StorageSpec.parse(sys.argv[1]), "study")
with claim():
    Path(sys.argv[2]).write_text("held")
    time.sleep(60)
"""


def _holder(journal: Path, flag: Path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(journal), str(flag)])
    deadline = time.monotonic() + 60
    while not flag.exists():
        assert proc.poll() is None and time.monotonic() < deadline, "the holder never took the lock"
        time.sleep(0.05)
    return proc


def test_a_trial_claim_excludes_other_processes_until_its_holder_dies(tmp_path: Path) -> None:
    from filelock import FileLock, Timeout

    journal = tmp_path / "study.journal"
    claim = TrialClaim(StorageSpec.parse(str(journal)), "study")
    proc = _holder(journal, tmp_path / "flag")
    try:
        with pytest.raises(Timeout):
            FileLock(claim.lock_file, timeout=0.3).acquire()
    finally:
        proc.kill()
        proc.wait()
    started = time.monotonic()
    with claim():  # the OS released the killed holder's flock
        assert time.monotonic() - started < 5


def test_the_store_lock_creates_the_store_and_is_released(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'sub' / 'mlflow.db'}"
    with store_lock(uri):
        assert (tmp_path / "sub" / "mlflow.db").is_file()
    with store_lock(uri):  # taken again after release
        pass
    with store_lock("http://127.0.0.1:1"):  # servers need no lock: nothing opened
        pass
