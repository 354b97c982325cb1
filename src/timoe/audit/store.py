"""Read access to an MLflow tracking store (local SQLite file or a tracking server).

Queries go to the store as MLflow filter strings where MLflow can evaluate them, so a large
shared server does not ship every run to the client just to be filtered here.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import tempfile
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from timoe.audit import AuditError

RUN_ID_RE = re.compile(r"^[0-9a-f]{32}$")
# Operators longest first so ">=" is not read as ">" followed by "=0.9".
_METRIC_FILTER_RE = re.compile(r"^\s*([^<>=!\s][^<>=!]*?)\s*(>=|<=|==|!=|=|>|<)\s*(\S+)\s*$")
STATUSES = ("RUNNING", "SCHEDULED", "FINISHED", "FAILED", "KILLED")
TRIAL_STAGE = "sweep-trial"


@dataclass(frozen=True)
class MetricFilter:
    name: str
    op: str
    value: float

    def __str__(self) -> str:
        return f"{self.name}{self.op}{self.value:g}"


def parse_metric_filter(text: str) -> MetricFilter:
    """'test_accuracy>=0.9' -> MetricFilter('test_accuracy', '>=', 0.9)."""
    m = _METRIC_FILTER_RE.match(text)
    if not m:
        raise AuditError(f"cannot read metric filter {text!r}; write it like test_accuracy>=0.9")
    name, op, raw = m.groups()
    try:
        value = float(raw)
    except ValueError:
        raise AuditError(f"metric filter {text!r}: {raw!r} is not a number") from None
    return MetricFilter(name, "=" if op == "==" else op, value)


def parse_when(text: str, *, end_of_day: bool = False) -> int:
    """An ISO date or date-time (local time when no zone is given) as epoch milliseconds.

    A bare date used as an upper bound means the end of that day, which is what people mean
    by `--until 2024-05-01`.
    """
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError:
        raise AuditError(f"cannot read date {text!r}; use YYYY-MM-DD or YYYY-MM-DDTHH:MM") from None
    if end_of_day and len(text.strip()) == 10:
        when += dt.timedelta(days=1)
    return int(when.timestamp() * 1000)


@dataclass
class RunFilter:
    dataset: str | None = None
    model: str | None = None
    stage: str | None = None
    status: str | None = None
    since: str | None = None
    until: str | None = None
    experiment: str | None = None
    metrics: list[MetricFilter] = field(default_factory=list)
    include_trials: bool = False

    def to_mlflow(self) -> str:
        clauses = []
        for key, value in (
            ("wildcard.dataset", self.dataset),
            ("wildcard.model", self.model),
            ("stage", self.stage),
        ):
            if value is not None:
                clauses.append(f"tags.`{key}` = {_quote(value)}")
        if self.status is not None:
            status = self.status.upper()
            if status not in STATUSES:
                raise AuditError(f"unknown status {self.status!r}; known: {', '.join(STATUSES)}")
            clauses.append(f"attributes.status = '{status}'")
        if self.since:
            clauses.append(f"attributes.start_time >= {parse_when(self.since)}")
        if self.until:
            clauses.append(f"attributes.start_time < {parse_when(self.until, end_of_day=True)}")
        for mf in self.metrics:
            clauses.append(f"metrics.`{mf.name}` {mf.op} {mf.value!r}")
        return " and ".join(clauses)


def _quote(value: str) -> str:
    if "'" in value or "`" in value:
        raise AuditError(f"filter value {value!r} may not contain quotes")
    return f"'{value}'"


def is_sqlite(uri: str) -> bool:
    return uri.startswith("sqlite:")


def sqlite_path(uri: str) -> Path:
    """The database file of a sqlite:/// URI (relative URIs are relative to the working directory)."""
    return Path(uri.split(":///", 1)[1]) if ":///" in uri else Path(uri.removeprefix("sqlite:"))


class Store:
    """One tracking store; run lookups by full id or unique prefix."""

    def __init__(self, uri: str) -> None:
        if is_sqlite(uri) and not sqlite_path(uri).exists():
            # MLflow would silently create an empty store, and the audit would find nothing.
            raise AuditError(f"no tracking store at {sqlite_path(uri)} (tracking URI {uri})")
        import mlflow

        self.uri = uri
        self.client = mlflow.tracking.MlflowClient(tracking_uri=uri)

    @cached_property
    def experiments(self) -> dict[str, str]:
        """experiment id -> name, active experiments only."""
        return {e.experiment_id: e.name for e in self.client.search_experiments(max_results=50_000)}

    def experiment_ids(self, name: str | None = None) -> list[str]:
        if name is None:
            return list(self.experiments)
        ids = [i for i, n in self.experiments.items() if n == name]
        if not ids:
            raise AuditError(f"no experiment named {name!r}; known: {sorted(self.experiments.values())}")
        return ids

    def search(
        self,
        filter_string: str = "",
        *,
        experiment: str | None = None,
        limit: int = 1000,
        order_by: list[str] | None = None,
    ) -> list[Any]:
        ids = self.experiment_ids(experiment)
        if not ids:
            return []
        runs: list[Any] = []
        token = None
        while len(runs) < limit:
            page = self.client.search_runs(
                ids,
                filter_string,
                max_results=min(1000, limit - len(runs)),
                order_by=order_by or ["attributes.start_time DESC"],
                page_token=token,
            )
            runs.extend(page)
            token = page.token
            if not token:
                break
        return runs

    def list_runs(self, flt: RunFilter, limit: int = 50) -> list[Any]:
        runs = self.search(flt.to_mlflow(), experiment=flt.experiment, limit=max(limit * 4, 200))
        if not flt.include_trials and flt.stage != TRIAL_STAGE:
            # Optuna trials are children of their sweep run; listing them by default buries the jobs.
            runs = [r for r in runs if r.data.tags.get("stage") != TRIAL_STAGE]
        return runs[:limit]

    def run(self, ref: str) -> Any:
        """A run by its 32-character id or by an unambiguous prefix of it."""
        from mlflow.exceptions import MlflowException

        ref = ref.strip()
        if RUN_ID_RE.match(ref):
            try:
                return self.client.get_run(ref)
            except MlflowException:
                raise AuditError(f"no run {ref} in the tracking store {self.uri}") from None
        if len(ref) < 4 or not re.fullmatch(r"[0-9a-f]+", ref):
            raise AuditError(f"{ref!r} is neither a run id nor a run-id prefix (4+ hex characters)")
        hits = [r for r in self.search(limit=1_000_000) if r.info.run_id.startswith(ref)]
        if not hits:
            raise AuditError(f"no run id starts with {ref} in the tracking store {self.uri}")
        if len(hits) > 1:
            raise AuditError(
                f"run-id prefix {ref} is ambiguous: {', '.join(h.info.run_id for h in hits[:5])}"
            )
        return hits[0]

    def maybe_run(self, run_id: str) -> Any | None:
        try:
            return self.run(run_id)
        except AuditError:
            return None

    def children(self, run_id: str) -> list[Any]:
        return self.search(
            f"tags.`mlflow.parentRunId` = '{run_id}'", limit=100_000, order_by=["attributes.start_time ASC"]
        )

    def artifacts(self, run_id: str, path: str | None = None) -> list[tuple[str, int | None]]:
        """Every artifact file of a run as (path, size), depth first."""
        out: list[tuple[str, int | None]] = []
        for info in self.client.list_artifacts(run_id, path):
            if info.is_dir:
                out.extend(self.artifacts(run_id, info.path))
            else:
                out.append((info.path, info.file_size))
        return out

    def artifact_text(self, run_id: str, path: str) -> str | None:
        """An artifact's text, or None when the run has no such artifact."""
        parent = str(Path(path).parent) if "/" in path else None
        if path not in {i.path for i in self.client.list_artifacts(run_id, parent)}:
            return None
        # MLflow draws a progress bar for every download; noise on the audit's own output.
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
        with tempfile.TemporaryDirectory(prefix="timoe-audit-") as tmp:
            local = self.client.download_artifacts(run_id, path, tmp)
            return Path(local).read_text()
