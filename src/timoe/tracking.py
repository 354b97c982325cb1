"""MLflow tracking with lineage: every job that computes something is one MLflow run.

Each run records the resolved config, its metrics and artifacts, and tags that tie a number
back to the code (git commit, dirty flag, hash of the diff), the data (content hashes of the
inputs) and the job (stage, wildcards, seed, device). The run id is written beside the stage's
outputs (run_id.txt) so artifacts and runs link both ways.
"""

from __future__ import annotations

import contextlib
import fnmatch
import hashlib
import json
import os
import platform
import socket
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from timoe import __version__, environment

RUN_ID_FILE = "run_id.txt"
# How the process that wrote a run started: "fork-server" (a child of timoe.launcher's server,
# which `timoe study` runs for local jobs) or "process" (a command started on its own).
LAUNCHER_ENV, LAUNCHER_TAG = "TIMOE_LAUNCHED_BY", "launcher"
HOST_TAG, PID_TAG = "host", "pid"  # which process wrote a run: a RUNNING run whose process is gone was killed
REPLACED_BY_TAG = "replaced_by_run_id"
LOG_ENV = "TIMOE_LOG"
# Files that change while or because the pipeline runs, not because code changed: dvc.lock and
# params.used.yaml are rewritten by every successful run, and SQLite's journals and timoe's lock
# files appear while any job writes. Counting them would tag clean trees dirty at random.
_NOT_CODE = ("dvc.lock", "params.used.yaml", "*.db-journal", "*.db-wal", "*.db-shm", "*.db.lock", "*.claim")


# The same set as git pathspecs, for `git diff` (the recorded diff hash and its replay).
NOT_CODE_EXCLUDES = tuple(f":(exclude,glob)**/{p}" for p in _NOT_CODE)


def _is_code(path: str) -> bool:
    name = Path(path.strip('"')).name
    return not any(fnmatch.fnmatch(name, pattern) for pattern in _NOT_CODE)


def _git(*args: str, cwd: Path | None = None) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True, timeout=30)
    except (OSError, subprocess.CalledProcessError, subprocess.TimeoutExpired):
        return None
    return out.stdout


def git_state(cwd: Path | None = None) -> dict[str, str]:
    """Commit, dirty flag and a hash of the uncommitted diff (tracked and untracked source)."""
    commit = (_git("rev-parse", "HEAD", cwd=cwd) or "").strip() or "unknown"
    status = _git("status", "--porcelain", "--untracked-files=all", cwd=cwd)
    if status is None:
        return {"git_commit": commit, "git_dirty": "unknown", "git_diff_sha256": ""}
    changed = [ln[3:] for ln in status.splitlines() if _is_code(ln[3:])]
    dirty = bool(changed)
    digest = ""
    if dirty:
        h = hashlib.sha256()
        h.update(
            (
                _git("diff", "HEAD", "--", ".", *[f":(exclude,glob)**/{p}" for p in _NOT_CODE], cwd=cwd) or ""
            ).encode()
        )
        root = Path((_git("rev-parse", "--show-toplevel", cwd=cwd) or ".").strip())
        for rel in sorted(ln[3:] for ln in status.splitlines() if ln.startswith("??") and _is_code(ln[3:])):
            h.update(rel.encode())
            with contextlib.suppress(OSError):
                h.update((root / rel).read_bytes())
        digest = h.hexdigest()
    return {"git_commit": commit, "git_dirty": str(dirty).lower(), "git_diff_sha256": digest}


def content_hash(path: Path) -> str:
    """sha256 over a file, or over a directory's files (relative names and bytes, sorted)."""
    path = Path(path)
    h = hashlib.sha256()
    if path.is_file():
        files = [path]
        base = path.parent
    else:
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.name != RUN_ID_FILE)
        base = path
    for f in files:
        h.update(str(f.relative_to(base)).encode())
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        if isinstance(v, Mapping):
            out.update(flatten(v, key))
        else:
            out[key] = v
    return out


def _mlflow():
    # Imported lazily: `import mlflow` costs seconds, and most helpers here do not need it.
    import mlflow

    return mlflow


def init_store(uri: str) -> None:
    """Create the tracking store once, before parallel jobs race to create its tables."""
    mlflow = _mlflow()
    client = mlflow.tracking.MlflowClient(tracking_uri=uri)
    client.search_experiments(max_results=1)


@contextlib.contextmanager
def store_lock(uri: str) -> Iterator[None]:
    """Serialise store creation and experiment creation across processes for a SQLite store.

    Two jobs started by hand (not through Snakemake's onstart, which creates the store first) on a
    fresh SQLite file both try to create its tables, and one fails ("table ... already exists");
    two creating the same experiment hit its unique name. A file lock beside the database orders
    them. Server and other URIs need no lock.
    """
    if not uri.startswith("sqlite:///"):
        yield
        return
    from filelock import FileLock  # flock where the file system has it; released if the process dies

    db = Path(uri[len("sqlite:///") :])
    db.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(db.with_name(db.name + ".lock")):
        init_store(uri)
        yield


def experiment_name(prefix: str, stage: str, dataset: str | None) -> str:
    return f"{prefix}/{dataset}" if dataset else f"{prefix}/{stage}"


def _input_tags(inputs: Mapping[str, Path]) -> dict[str, str]:
    """Path and content hash of every input, and the run that made it when it says so."""
    tags: dict[str, str] = {}
    for name, p in inputs.items():
        tags[f"input.{name}.path"] = str(p)
        tags[f"input.{name}.sha256"] = content_hash(Path(p))
        upstream = Path(p) / RUN_ID_FILE if Path(p).is_dir() else Path(p).parent / RUN_ID_FILE
        if upstream.exists():
            tags[f"input.{name}.run_id"] = upstream.read_text().strip()
    return tags


def _torch_cpu_capability(torch: Any) -> str:
    """The vector instruction set torch's CPU kernels dispatch to here ('AVX2', 'AVX512', ...)."""
    try:
        return str(torch.backends.cpu.get_cpu_capability())
    except (AttributeError, RuntimeError):  # a torch without the query
        return "unknown"


def _lineage_tags(
    *,
    stage: str,
    device: str,
    dists: Any,
    seed: int | None,
    wildcards: Mapping[str, Any],
    inputs: Mapping[str, Path],
    parent_run_id: str | None,
) -> dict[str, str]:
    """The tags that tie a run to its code, environment, job, inputs and process."""
    tags: dict[str, str] = {
        "stage": stage,
        "timoe_version": __version__,
        "device": device,
        "python": platform.python_version(),
        **git_state(),
    }
    # The environment beside the code: a library change then shows as one (`timoe audit reproduce`).
    tags.update(environment.fingerprint(dists=dists))
    if seed is not None:
        tags["seed"] = str(seed)
    if "torch" in sys.modules:  # CPU numbers depend on the thread count; record it where torch runs
        tags["torch_threads"] = str(sys.modules["torch"].get_num_threads())
        tags[environment.TORCH_CPU_TAG] = _torch_cpu_capability(sys.modules["torch"])
    for k, v in wildcards.items():
        tags[f"wildcard.{k}"] = str(v)
    tags.update(_input_tags(inputs))
    if parent_run_id:
        tags["mlflow.parentRunId"] = parent_run_id
    if os.environ.get("SNAKEMAKE_JOBID"):
        tags["snakemake_jobid"] = os.environ["SNAKEMAKE_JOBID"]
    tags[HOST_TAG], tags[PID_TAG] = socket.gethostname(), str(os.getpid())
    tags[LAUNCHER_TAG] = os.environ.get(LAUNCHER_ENV, "process")
    return tags


def _log_config(
    mlflow: Any, config: Mapping[str, Any], dists: Any, full_params: Mapping[str, Any] | None
) -> None:
    """Log the config as flat params and as JSON, the installed distributions, the full params."""
    params = {k: json.dumps(v) if isinstance(v, list | dict) else v for k, v in flatten(config).items()}
    items = list(params.items())
    for i in range(0, len(items), 90):  # MLflow caps a log_params batch at 100
        mlflow.log_params(dict(items[i : i + 90]))
    mlflow.log_text(json.dumps(config, indent=2, default=str), "resolved_config.json")
    mlflow.log_text(environment.freeze_text(dists), environment.DISTRIBUTIONS_ARTIFACT)
    if full_params is not None:
        # The whole validated config, so `timoe audit reproduce` can rerun the job as it was.
        import yaml

        mlflow.log_text(yaml.safe_dump(dict(full_params), sort_keys=True), "resolved_params.yaml")


@contextlib.contextmanager
def tracked_run(
    *,
    uri: str,
    experiment: str,
    stage: str,
    config: Mapping[str, Any],
    out_dir: Path | None,
    inputs: Mapping[str, Path] | None = None,
    wildcards: Mapping[str, Any] | None = None,
    seed: int | None = None,
    device: str = "cpu",
    run_name: str | None = None,
    parent_run_id: str | None = None,
    nested: bool = False,
    full_params: Mapping[str, Any] | None = None,
) -> Iterator[Any]:
    """Open an MLflow run carrying the lineage tags; write run_id.txt into out_dir.

    out_dir is the (temporary) directory the stage is filling, so the run id travels with the
    outputs when they are renamed into place.
    """
    mlflow = _mlflow()
    mlflow.set_tracking_uri(uri)
    with store_lock(uri):
        exp = mlflow.set_experiment(experiment)
    dists = environment.installed_distributions()
    tags = _lineage_tags(
        stage=stage,
        device=device,
        dists=dists,
        seed=seed,
        wildcards=wildcards or {},
        inputs=inputs or {},
        parent_run_id=parent_run_id,
    )
    with mlflow.start_run(
        experiment_id=exp.experiment_id, run_name=run_name, tags=tags, nested=nested
    ) as run:
        end_killed_runs(exp.experiment_id, stage, wildcards or {}, run.info.run_id)
        _log_config(mlflow, config, dists, full_params)
        if out_dir is not None:
            Path(out_dir).mkdir(parents=True, exist_ok=True)
            (Path(out_dir) / RUN_ID_FILE).write_text(run.info.run_id + "\n")
        yield run
        _log_job_log(mlflow)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def end_killed_runs(experiment_id: str, stage: str, wildcards: Mapping[str, Any], run_id: str) -> list[str]:
    """End as KILLED the RUNNING runs of this same job whose process on this host is gone.

    A SIGKILLed job cannot end its own run, which would otherwise stay RUNNING for good. Runs
    from other hosts are left alone: their process cannot be checked from here.
    """
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    query = " and ".join(
        [f"tags.stage = '{stage}'", f"tags.{HOST_TAG} = '{socket.gethostname()}'"]
        + [f"tags.`wildcard.{k}` = '{v}'" for k, v in wildcards.items()]
    )
    ended = []
    for r in client.search_runs([experiment_id], filter_string=query, max_results=1000):
        pid = r.data.tags.get(PID_TAG, "")
        if r.info.run_id == run_id or r.info.status != "RUNNING" or not pid.isdigit():
            continue
        if int(pid) != os.getpid() and not _process_alive(int(pid)):
            client.set_tag(r.info.run_id, REPLACED_BY_TAG, run_id)
            client.set_terminated(r.info.run_id, status="KILLED")
            ended.append(r.info.run_id)
    return ended


def _log_job_log(mlflow: Any) -> None:
    """Attach the Snakemake job's log (path in TIMOE_LOG) to the run, as written so far."""
    log = os.environ.get(LOG_ENV)
    if not log or not Path(log).is_file():
        return
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    mlflow.log_artifact(log, artifact_path="logs")


def log_artifacts_from(paths: list[Path], artifact_path: str | None = None) -> None:
    mlflow = _mlflow()
    for p in paths:
        if Path(p).is_file():
            mlflow.log_artifact(str(p), artifact_path=artifact_path)


RESUME_CHAIN_FILE = "mlflow_runs.txt"  # beside a job's checkpoint: its runs since it last finished
RESUMED_FROM_TAG = "resumed_from_run_ids"
RESUMED_BY_TAG = "resumed_by_run_id"


class ResumeChain:
    """Keep the MLflow record of a job that was killed and resumed in one run.

    Each run of a job appends its id to a file beside the checkpoint. When a resumed run logs
    its first epoch, the earlier runs of the chain (killed, so still RUNNING) are ended as
    KILLED and tagged with the run that took over; their metric history before that epoch is
    copied into the new run, which then carries the whole curve. A finished job clears the file.
    """

    def __init__(self, checkpoint_dir: Path | None, run_id: str) -> None:
        self.file = Path(checkpoint_dir) / RESUME_CHAIN_FILE if checkpoint_dir else None
        self.run_id = run_id
        self.earlier: list[str] = []
        if self.file is not None:
            if self.file.exists():
                self.earlier = [r for r in self.file.read_text().split() if r and r != run_id]
            self.file.parent.mkdir(parents=True, exist_ok=True)
            with open(self.file, "a") as fh:
                fh.write(run_id + "\n")
        self._adopted = False

    def first_epoch(self, epoch: int) -> None:
        """Call before logging `epoch` (0-based); the first call adopts the earlier runs."""
        if self._adopted:
            return
        self._adopted = True
        if not self.earlier:
            return
        from mlflow.entities import Metric
        from mlflow.tracking import MlflowClient

        client = MlflowClient()
        copied: dict[tuple[str, int], Metric] = {}
        for old in self.earlier:  # later runs win where two logged the same epoch
            run = client.get_run(old)
            for key in run.data.metrics:
                for m in client.get_metric_history(old, key):
                    if m.step < epoch:
                        copied[(key, m.step)] = Metric(key, m.value, m.timestamp, m.step)
            client.set_tag(old, RESUMED_BY_TAG, self.run_id)
            if run.info.status == "RUNNING":  # tracked_run ends it already when it ran on this host
                client.set_terminated(old, status="KILLED")
        batch = list(copied.values())
        for i in range(0, len(batch), 900):  # MLflow caps a batch at 1000 metrics
            client.log_batch(self.run_id, metrics=batch[i : i + 900])
        client.set_tag(self.run_id, RESUMED_FROM_TAG, ",".join(self.earlier))

    def finished(self) -> None:
        if self.file is not None:
            self.file.unlink(missing_ok=True)
