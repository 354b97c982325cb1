"""`timoe audit reproduce RUN`: rerun a job at its code and data version and compare the metrics.

Steps: a git worktree at the run's commit (plus the uncommitted diff, when the working tree
still holds one with the recorded hash); the run's full config as a params file; every input
restored by content hash; the same `timoe <stage>` command, run with the worktree's code; then
the reproduced metrics against the recorded ones. The rerun logs to a scratch store unless
told otherwise, so an audit leaves the audited store as it was.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from timoe import environment
from timoe.audit import AuditError
from timoe.audit.rerun import (
    DEFAULT_IGNORE,
    MetricRow,
    compare_metrics,
    metric_table,
    pick_device,
    rebuild_config,
    stage_command,
)
from timoe.audit.restore import (
    DvcSource,
    Restored,
    add_worktree,
    remove_worktree,
    replay_dirty_tree,
    repo_root,
    restore_input,
)
from timoe.audit.store import TRIAL_STAGE, Store, is_sqlite, sqlite_path
from timoe.audit.views import inputs_of
from timoe.tracking import RUN_ID_FILE

REPRO_TAG = "timoe.reproduction_of"
# Variables that would redirect the rerun: into the audited run (MLflow), an old study, a log.
_SCRUB_ENV = (
    "MLFLOW_RUN_ID",
    "MLFLOW_EXPERIMENT_ID",
    "MLFLOW_EXPERIMENT_NAME",
    "MLFLOW_TRACKING_URI",
    "TIMOE_LOG",
    "TIMOE_SWEEP_STORAGE",
    "SNAKEMAKE_JOBID",
)


@dataclass
class Outcome:
    run_id: str
    reproduced_run_id: str | None = None
    rows: list[MetricRow] = field(default_factory=list)
    tag_differences: dict[str, tuple[str | None, str | None]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def matched(self) -> bool:
        return not self.tag_differences and all(r.status in ("match", "ignored") for r in self.rows)

    @property
    def exit_code(self) -> int:
        return 0 if self.matched else 1


def _experiment_prefix(store: Store, run: Any) -> str | None:
    name = store.experiments.get(run.info.experiment_id, "")
    return name.rpartition("/")[0] or None


def _absolute_uri(uri: str) -> str:
    # The rerun works in the worktree; a relative SQLite path would point at a new, empty store there.
    return f"sqlite:///{sqlite_path(uri).resolve()}" if is_sqlite(uri) else uri


def dirty_warning(run_id: str, commit: str, dirty: str, diff_sha256: str) -> str:
    bar = "!" * 78
    what = "a DIRTY" if dirty == "true" else f"a possibly dirty (git_dirty={dirty})"
    return "\n".join(
        [
            bar,
            f"!! WARNING: run {run_id[:12]} was made from {what} working tree.",
            f"!! Only the hash of its uncommitted diff was recorded ({diff_sha256 or 'none'}),",
            f"!! not the diff: the code rebuilt at {commit[:12]} may differ from what ran. Trying anyway.",
            bar,
        ]
    )


@dataclass
class _Job:
    """One reproduction in progress: the audited run, the repository, the scratch folder."""

    store: Store
    run: Any
    tags: dict[str, str]
    stage: str
    root: Path  # the repository the worktree is added to
    scratch: Path  # the worktree, params file, restored inputs, rerun output, log and store
    outcome: Outcome
    echo: Callable[[str], None]

    @property
    def run_id(self) -> str:
        return self.run.info.run_id

    @property
    def commit(self) -> str:
        return self.tags.get("git_commit", "unknown")

    @property
    def dirty(self) -> str:
        return self.tags.get("git_dirty", "unknown")

    @property
    def code(self) -> Path:
        return self.scratch / "code"


def _audited_run(store: Store, ref: str) -> tuple[Any, str]:
    """The run `ref` names and its stage; AuditError for a trial or a run timoe did not make."""
    run = store.run(ref)
    tags = dict(run.data.tags)
    stage = tags.get("stage", "")
    run_id = run.info.run_id
    if stage == TRIAL_STAGE:
        raise AuditError(
            f"run {run_id} is one Optuna trial; reproduce its sweep run "
            f"{tags.get('mlflow.parentRunId', '')} instead"
        )
    if stage not in ("prepare", "quantify", "sweep", "train", "check", "evaluate"):
        raise AuditError(f"run {run_id} has no timoe stage tag (stage={stage!r}); it was not made by timoe")
    return run, stage


def _announce(run: Any, stage: str, outcome: Outcome, echo: Callable[[str], None]) -> None:
    """Name the job being reproduced; note an unfinished run, warn loudly about a dirty one."""
    tags = dict(run.data.tags)
    run_id = run.info.run_id
    wild = " ".join(v for k, v in sorted(tags.items()) if k.startswith("wildcard."))
    echo(f"reproducing run {run_id}: {stage} {wild}".rstrip())
    if run.info.status != "FINISHED":
        outcome.notes.append(f"the run's status is {run.info.status}: its metrics may be partial")
    dirty = tags.get("git_dirty", "unknown")
    if dirty != "false":
        echo(dirty_warning(run_id, tags.get("git_commit", "unknown"), dirty, tags.get("git_diff_sha256", "")))


def _check_out_code(job: _Job) -> None:
    """[1/5] A worktree at the run's commit, with the uncommitted diff replayed when it can be."""
    add_worktree(job.root, job.commit, job.code)
    job.echo(f"[1/5] code: git worktree at {job.commit[:12]} in {job.code}")
    if job.dirty != "true":
        return
    if replay_dirty_tree(job.root, job.code, job.commit, job.tags.get("git_diff_sha256", "")):
        job.echo("      the working tree holds a diff with the recorded hash: replayed it")
    else:
        job.outcome.notes.append(
            "dirty run: rebuilt from the commit alone (the recorded diff is not available)"
        )


def _redirect_config(cfg: dict[str, Any], uri: str, prefix: str | None, dev: str) -> None:
    """Point the rebuilt config at the rerun's store and device, and away from the recorded study."""
    tracking = dict(cfg.get("tracking") or {})
    tracking["uri"] = uri
    if prefix:
        tracking["experiment_prefix"] = prefix
    cfg["tracking"] = tracking
    for sec in ("train", "rus"):
        if sec in cfg:
            cfg[sec] = {**cfg[sec], "device": dev}
    if "sweep" in cfg:
        cfg["sweep"] = {**cfg["sweep"], "storage": None}  # a fresh study, never the recorded one


def _write_params(job: _Job, device: str, rerun_uri: str | None) -> tuple[dict[str, Any], Path, str]:
    """[2/5] The run's full config as params.yaml: (config, its path, the rerun's tracking URI)."""
    cfg, source = rebuild_config(job.store, job.run, job.code)
    dev, dev_note = pick_device(job.tags.get("device", "cpu"), device)
    if dev_note:
        job.outcome.notes.append(dev_note)
    uri = _absolute_uri(rerun_uri) if rerun_uri else f"sqlite:///{job.scratch / 'rerun.db'}"
    _redirect_config(cfg, uri, _experiment_prefix(job.store, job.run), dev)
    params_file = job.scratch / "params.yaml"
    params_file.write_text(yaml.safe_dump(cfg, sort_keys=True))
    job.echo(f"[2/5] config: {source} -> {params_file} (device {dev}, rerun logged to {uri})")
    return cfg, params_file, uri


def _restore_inputs(job: _Job) -> dict[str, Restored]:
    """[3/5] Every recorded input, by content hash; a train job's lost sweep is synthesised."""
    dvc = DvcSource(job.root, job.code, job.commit)
    restored: dict[str, Restored] = {}
    for name, inp in inputs_of(job.run).items():
        try:
            restored[name] = restore_input(
                name,
                inp.get("path", ""),
                inp.get("sha256", ""),
                repo=job.root,
                code=job.code,
                scratch=job.scratch,
                dvc=dvc,
            )
        except AuditError:
            if not (job.stage == "train" and name == "sweep"):
                raise
            restored[name] = _synthesised_sweep(job.store, job.run, job.scratch)
        job.echo(f"[3/5] input {name}: {restored[name].how}")
    if not restored:
        job.echo("[3/5] inputs: none recorded (the stage reads installed data packages)")
    return restored


def _rerun(job: _Job, restored: dict[str, Restored], params_file: Path, extra: list[str]) -> Path:
    """[4/5] The same `timoe <stage>` command with the worktree's code; its output folder."""
    out = job.scratch / "out"
    cmd = stage_command(job.stage, job.tags, restored, out, params_file, extra)
    job.echo(f"[4/5] rerun: timoe {' '.join(cmd)}  (cwd {job.code})")
    started = time.time()
    _run_stage(cmd, job.code, job.scratch / "rerun.log")
    job.echo(f"      done in {time.time() - started:.1f} s")
    return out


def _code_note(job: _Job, new_tags: dict[str, str]) -> str | None:
    """Whether the rerun ran the run's code: a note when the commit or the diff hash differ."""
    if new_tags.get("git_commit") != job.commit:
        return f"the rerun recorded commit {new_tags.get('git_commit')}, not {job.commit}"
    if job.dirty == "true":
        same = new_tags.get("git_diff_sha256") == job.tags.get("git_diff_sha256")
        return (
            "the rerun's code had the recorded diff hash: same code as the run"
            if same
            else "the rerun's code differs from the run's (its uncommitted diff was not replayed)"
        )
    return None


def _compare(job: _Job, out: Path, uri: str, ignore: tuple[str, ...]) -> None:
    """[5/5] Tag the rerun as a reproduction; its metrics, data sources, code and environment
    against the run's, into job.outcome."""
    outcome, tags = job.outcome, job.tags
    new_id = (out / RUN_ID_FILE).read_text().strip()
    outcome.reproduced_run_id = new_id
    rerun_store = Store(uri)
    rerun_store.client.set_tag(new_id, REPRO_TAG, job.run_id)
    new = rerun_store.run(new_id)
    new_tags = new.data.tags
    outcome.rows = compare_metrics(dict(job.run.data.metrics), dict(new.data.metrics), ignore)
    for key in sorted(k for k in set(tags) | set(new_tags) if k.startswith("source.")):
        if tags.get(key) != new_tags.get(key):
            outcome.tag_differences[key] = (tags.get(key), new_tags.get(key))
    note = _code_note(job, new_tags)
    if note is not None:
        outcome.notes.append(note)
    outcome.notes += environment_notes(job.store, job.run, rerun_store, new)
    job.echo(f"[5/5] compare: recorded run {job.run_id} vs reproduced run {new_id}")


def _clean_up(job: _Job, keep: bool) -> None:
    """Remove the worktree and scratch folder, or say where they were kept."""
    if keep:
        job.echo(f"kept {job.scratch} (remove the worktree with: git worktree remove --force {job.code})")
    else:
        remove_worktree(job.root, job.code)
        shutil.rmtree(job.scratch, ignore_errors=True)


def reproduce(
    store: Store,
    ref: str,
    *,
    repo: Path = Path("."),
    device: str = "recorded",
    rerun_uri: str | None = None,
    workdir: Path | None = None,
    keep: bool = False,
    ignore: tuple[str, ...] = DEFAULT_IGNORE,
    echo: Callable[[str], None] = print,
) -> Outcome:
    """Rerun the job that made run `ref` at its code and data version; compare the metrics.

    The steps are echoed as [1/5]..[5/5]; the scratch folder (worktree included) is removed
    afterwards unless `keep`.
    """
    run, stage = _audited_run(store, ref)
    outcome = Outcome(run.info.run_id)
    _announce(run, stage, outcome, echo)
    root = repo_root(repo)
    scratch = Path(tempfile.mkdtemp(prefix="timoe-reproduce-", dir=workdir))
    job = _Job(store, run, dict(run.data.tags), stage, root, scratch, outcome, echo)
    try:
        _check_out_code(job)
        cfg, params_file, uri = _write_params(job, device, rerun_uri)
        restored = _restore_inputs(job)
        extra = _sweep_extra(store, run, cfg) if stage == "sweep" else []
        out = _rerun(job, restored, params_file, extra)
        _compare(job, out, uri, ignore)
    finally:
        _clean_up(job, keep)
    return outcome


def environment_notes(store: Store, run: Any, rerun_store: Store, new: Any) -> list[str]:
    """A note naming what differs between the run's environment and the rerun's, if anything.

    Only a note: a library change explains a metric mismatch, it is not one by itself.
    """
    recorded, now = dict(run.data.tags), dict(new.data.tags)
    if not any(tag in recorded for tag in environment.ENV_TAGS):
        return ["the run recorded no environment fingerprint (it predates them): environment not compared"]
    differs = environment.differences(recorded, now)
    if not differs:
        return []
    note = f"the rerun's environment differs from the run's: {'; '.join(differs)}"
    cpu_tags = (environment.CPU_TAG, environment.TORCH_CPU_TAG)
    if any(d.startswith(f"{t.removeprefix('env.')}:") for d in differs for t in cpu_tags):
        note += (
            " (another CPU: its vector kernels and float reduction orders can change results even "
            "with the same code, libraries and seed)"
        )
    if recorded.get(environment.DISTS_TAG) != now.get(environment.DISTS_TAG):
        old = store.artifact_text(run.info.run_id, environment.DISTRIBUTIONS_ARTIFACT)
        fresh = rerun_store.artifact_text(new.info.run_id, environment.DISTRIBUTIONS_ARTIFACT)
        changes = environment.distribution_changes(old, fresh) if old and fresh else []
        if changes:  # the first few name the culprit; the artifacts hold the rest
            more = f" and {len(changes) - 8} more" if len(changes) > 8 else ""
            note += f" (distributions: {', '.join(changes[:8])}{more})"
    return [note]


def _synthesised_sweep(store: Store, run: Any, scratch: Path) -> Restored:
    """A sweep output holding just the best params the run used (all that train reads of it)."""
    logged = store.artifact_text(run.info.run_id, "resolved_config.json")
    overrides = json.loads(logged).get("sweep_overrides") if logged else None
    if overrides is None:
        raise AuditError("the sweep input cannot be restored and the run logged no sweep_overrides")
    d = scratch / "sweep"
    d.mkdir(parents=True, exist_ok=True)
    (d / "best_params.json").write_text(json.dumps({"params": overrides}, indent=2, sort_keys=True) + "\n")
    return Restored(
        "sweep",
        d,
        f"not restorable; wrote best_params.json with the logged sweep_overrides "
        f"{json.dumps(overrides, sort_keys=True)}",
    )


def _sweep_extra(store: Store, run: Any, cfg: dict[str, Any]) -> list[str]:
    """--n-trials when the study ran a different count than its config (a CLI override)."""
    text = store.artifact_text(run.info.run_id, "best_params.json")
    n = json.loads(text).get("n_trials") if text else None
    if n and n != (cfg.get("sweep") or {}).get("n_trials"):
        return ["--n-trials", str(n)]
    return []


def _run_stage(cmd: list[str], code: Path, log: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in _SCRUB_ENV}
    # The worktree's sources come first on the path, ahead of any installed (editable) timoe.
    env["PYTHONPATH"] = os.pathsep.join([str(code / "src"), *filter(None, [env.get("PYTHONPATH")])])
    probe = subprocess.run(
        [sys.executable, "-c", "import timoe; print(timoe.__file__)"],
        cwd=code,
        env=env,
        capture_output=True,
        text=True,
    )
    where = Path(probe.stdout.strip() or "?").resolve()
    if probe.returncode != 0 or not where.is_relative_to((code / "src").resolve()):
        raise AuditError(
            f"the rerun would not import timoe from the worktree (got {where}); {probe.stderr.strip()[-300:]}"
        )
    with open(log, "w") as fh:
        r = subprocess.run(
            [sys.executable, "-m", "timoe.cli", *cmd], cwd=code, env=env, stdout=fh, stderr=subprocess.STDOUT
        )
    if r.returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-25:])
        raise AuditError(f"the rerun failed (exit {r.returncode}); its output ends with:\n{tail}")


def report(outcome: Outcome) -> str:
    lines = [metric_table(outcome.rows)] if outcome.rows else ["no metrics recorded or reproduced"]
    for key, (a, b) in outcome.tag_differences.items():
        lines.append(f"data source {key}: recorded {a}, reproduced {b}")
    lines += [f"note: {n}" for n in outcome.notes]
    compared = [r for r in outcome.rows if r.status != "ignored"]
    bad = [r for r in compared if r.status != "match"]
    ignored = [r.metric for r in outcome.rows if r.status == "ignored"]
    if ignored:
        lines.append(f"not compared (timing/bookkeeping): {', '.join(ignored)}")
    if outcome.matched:
        lines.append(f"RESULT: exact match ({len(compared)} metric(s) identical)")
    else:
        what = f"{len(bad)} of {len(compared)} metric(s) differ"
        if outcome.tag_differences:
            what += f", {len(outcome.tag_differences)} data source hash(es) differ"
        lines.append(f"RESULT: MISMATCH ({what})")
    return "\n".join(lines)


def outcome_json(outcome: Outcome) -> dict[str, Any]:
    return {
        "run_id": outcome.run_id,
        "reproduced_run_id": outcome.reproduced_run_id,
        "matched": outcome.matched,
        "metrics": [
            {
                "metric": r.metric,
                "recorded": r.recorded,
                "reproduced": r.reproduced,
                "diff": r.diff,
                "status": r.status,
            }
            for r in outcome.rows
        ],
        "source_differences": {k: list(v) for k, v in outcome.tag_differences.items()},
        "notes": outcome.notes,
    }
