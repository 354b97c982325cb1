"""Where a study lives, and how its workers take turns creating trials.

A journal file is the local default: safe for parallel processes on one machine, unlike SQLite.
A SQLAlchemy URL (PostgreSQL) lets workers on many machines join one study. The URL may hold a
password, so it is never logged or put on a command line: `describe()` masks it, and local
workers receive it through the environment.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import tempfile
import threading
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna

from timoe.config import ConfigError

STORAGE_ENV = "TIMOE_SWEEP_STORAGE"
log = logging.getLogger(__name__)

StaleCallback = Callable[[optuna.Study, optuna.trial.FrozenTrial], None]


@dataclass(frozen=True)
class StorageSpec:
    """Exactly one of a SQLAlchemy URL or a journal file path."""

    url: str | None = None
    journal: Path | None = None

    @classmethod
    def parse(cls, value: str) -> StorageSpec:
        # A URL always has a scheme; anything else is taken as a journal file (e.g. on a shared disk).
        return cls(url=value) if "://" in value else cls(journal=Path(value))

    @property
    def backend(self) -> str:
        if self.url is None:
            return "journal"
        import sqlalchemy.engine

        return sqlalchemy.engine.make_url(self.url).get_backend_name()

    def describe(self) -> str:
        """A loggable description: the URL with its password masked, or the journal path."""
        if self.url is None:
            return f"journal:{self.journal}"
        import sqlalchemy.engine

        return sqlalchemy.engine.make_url(self.url).render_as_string(hide_password=True)

    def as_arg(self) -> str:
        return self.url if self.url is not None else str(self.journal)

    def open(self, *, heartbeat_s: int = 30, on_stale: StaleCallback | None = None) -> Any:
        if self.url is None:
            from optuna.storages.journal import JournalFileBackend, JournalStorage

            assert self.journal is not None
            self.journal.parent.mkdir(parents=True, exist_ok=True)
            # Absolute: Optuna's lock is a symlink to the journal; with a relative path the link
            # dangles, its stale-lock check never fires, and a worker killed while holding the
            # lock leaves every other worker spinning forever (seen in the killed-worker test).
            return JournalStorage(JournalFileBackend(str(self.journal.resolve())))
        # A worker that dies mid-trial stops its heartbeat; after the grace period any other worker
        # marks that trial FAIL, so it stops counting towards n_trials and is replaced.
        with warnings.catch_warnings(), self._schema_lock():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.storages.RDBStorage(
                self.url,
                engine_kwargs={"pool_pre_ping": True},
                heartbeat_interval=heartbeat_s,
                grace_period=4 * heartbeat_s,
                heartbeat_stale_trial_callback=on_stale,
            )

    @contextlib.contextmanager
    def _schema_lock(self) -> Iterator[None]:
        """On PostgreSQL, one process at a time opens the storage (Optuna creates its tables then).

        A driver and array workers opening a fresh database together otherwise race to create
        Optuna's tables, and all but one fail on the alembic_version key.
        """
        if self.backend != "postgresql":
            yield
            return
        import sqlalchemy
        from sqlalchemy.pool import NullPool

        assert self.url is not None
        engine = sqlalchemy.create_engine(self.url, poolclass=NullPool)
        try:
            with engine.connect() as conn:
                conn.execute(sqlalchemy.text("SELECT pg_advisory_lock(:k)"), {"k": _SCHEMA_LOCK_KEY})
                try:
                    yield
                finally:
                    conn.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:k)"), {"k": _SCHEMA_LOCK_KEY})
        finally:
            engine.dispose()


def _key_of(text: str) -> int:
    # pg_advisory_lock takes a signed 64-bit key
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big", signed=True)


_SCHEMA_LOCK_KEY = _key_of("timoe: optuna schema")


def resolve_storage(
    explicit: str | None, configured: str | None, default_journal: Path | None
) -> StorageSpec:
    """--storage, then $TIMOE_SWEEP_STORAGE, then sweep.storage, then a journal in the output."""
    value = explicit or os.environ.get(STORAGE_ENV) or configured
    if value:
        return StorageSpec.parse(value)
    if default_journal is None:
        raise ConfigError(
            "a sweep worker needs the study's shared storage: pass --storage, set "
            f"{STORAGE_ENV}, or set sweep.storage to a SQLAlchemy URL"
        )
    return StorageSpec(journal=default_journal)


def _lock_key(study_name: str) -> int:
    # pg_advisory_lock takes a signed 64-bit key; one key per study, shared by every machine.
    return int.from_bytes(hashlib.sha256(study_name.encode()).digest()[:8], "big", signed=True)


class TrialClaim:
    """Serialises "count the study's trials, then create one" across workers.

    Without it two workers can both see n_trials - 1 trials and both start one, so a study
    overshoots by up to n_workers - 1 trials. PostgreSQL: an advisory lock, held by every
    machine's workers and released by the server if a worker dies. Journal: an flock on a file
    beside the journal (released by the OS if a worker dies). Other URLs: a machine-local flock,
    so workers on different machines may overshoot by a trial or two.
    """

    def __init__(self, spec: StorageSpec, study_name: str) -> None:
        self.spec = spec
        self.key = _lock_key(study_name)
        self._engine: Any = None
        if spec.url is None:
            self.lock_file = Path(f"{spec.journal}.claim")
        else:
            self.lock_file = Path(tempfile.gettempdir()) / f"timoe-sweep-{self.key & 0xFFFFFFFF:08x}.claim"

    @property
    def shared(self) -> bool:
        """Whether every worker of the study, on any machine, takes this same lock."""
        return self.spec.url is None or self.spec.backend == "postgresql"

    @contextlib.contextmanager
    def __call__(self) -> Iterator[None]:
        if self.spec.url is not None and self.spec.backend == "postgresql":
            with self._pg_lock():
                yield
            return
        from filelock import FileLock  # flock where the file system has it; released if a worker dies

        with FileLock(self.lock_file):
            yield

    @contextlib.contextmanager
    def _pg_lock(self) -> Iterator[None]:
        import sqlalchemy
        from sqlalchemy.pool import NullPool

        if self._engine is None:
            self._engine = sqlalchemy.create_engine(self.spec.url, poolclass=NullPool)
        with self._engine.connect() as conn:
            conn.execute(sqlalchemy.text("SELECT pg_advisory_lock(:k)"), {"k": self.key})
            try:
                yield
            finally:
                conn.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:k)"), {"k": self.key})

    def close(self) -> None:
        if self._engine is not None:
            self._engine.dispose()


@contextlib.contextmanager
def heartbeat(storage: Any, study_name: str, number: int) -> Iterator[None]:
    """Record a trial's heartbeat while it runs (RDB storages with a heartbeat only).

    study.optimize() does this itself; the claim-then-ask loop uses ask/tell, so it must too.
    """
    interval = storage.get_heartbeat_interval() if isinstance(storage, optuna.storages.RDBStorage) else None
    if not interval:
        yield
        return
    trial_id = storage.get_trial_id_from_study_id_trial_number(
        storage.get_study_id_from_name(study_name), number
    )
    stop = threading.Event()

    def beat() -> None:
        while True:
            try:
                storage.record_heartbeat(trial_id)
            except Exception as err:  # a database blip must not kill the trial; the next beat retries
                log.warning("heartbeat of trial %d failed: %s", number, err)
            if stop.wait(interval):
                return

    thread = threading.Thread(target=beat, name=f"heartbeat-{number}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
