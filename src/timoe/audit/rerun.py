"""What a rerun needs and how it is judged: the run's config, its command line, metric comparison.

Kept apart from the orchestration in reproduce.py so these pure pieces are testable without
a store, a worktree or a training run.
"""

from __future__ import annotations

import fnmatch
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from timoe.audit import AuditError
from timoe.audit.restore import Restored
from timoe.audit.store import Store
from timoe.audit.views import fmt_diff, table

SECTIONS = ("data", "rus", "model", "train", "sweep", "checks", "evaluate", "tracking")
# Wall-clock measurements and resume bookkeeping: they describe the machine, not the result.
DEFAULT_IGNORE = ("seconds", "*seconds", "*duration*", "wall_s", "*.wall_s", "resumed_from_epoch")


@dataclass
class MetricRow:
    metric: str
    recorded: float | None
    reproduced: float | None
    status: str  # "match", "differs", "missing", "new", "ignored"

    @property
    def diff(self) -> float | None:
        if self.recorded is None or self.reproduced is None:
            return None
        return self.reproduced - self.recorded


def _same(a: float, b: float) -> bool:
    return a == b or (math.isnan(a) and math.isnan(b))


def compare_metrics(
    recorded: dict[str, float], reproduced: dict[str, float], ignore: tuple[str, ...] = DEFAULT_IGNORE
) -> list[MetricRow]:
    rows = []
    for key in sorted(set(recorded) | set(reproduced)):
        a, b = recorded.get(key), reproduced.get(key)
        if any(fnmatch.fnmatchcase(key, pat) for pat in ignore):
            status = "ignored"
        elif a is None:
            status = "new"
        elif b is None:
            status = "missing"
        else:
            status = "match" if _same(a, b) else "differs"
        rows.append(MetricRow(key, a, b, status))
    return rows


def metric_table(rows: list[MetricRow]) -> str:
    body = [[r.metric, r.recorded, r.reproduced, fmt_diff(r.recorded, r.reproduced), r.status] for r in rows]
    # exact: a rerun's verdict turns on the last digit, so both values are printed in full
    return table(["metric", "recorded", "reproduced", "diff", "status"], body, exact=True)


def unflatten_params(params: dict[str, str]) -> dict[str, Any]:
    """MLflow params (flat, strings) back to nested values: the last resort for old runs."""
    out: dict[str, Any] = {}
    for key, raw in params.items():
        value: Any = None if raw == "None" else yaml.safe_load(raw)
        node = out
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return out


def rebuild_config(store: Store, run: Any, code: Path) -> tuple[dict[str, Any], str]:
    """The run's full params mapping, and a phrase saying where it came from.

    Preferred is the resolved_params.yaml artifact (the whole validated config). Otherwise the
    params.yaml at the run's commit, with each section the run logged replacing that section
    whole (a merge could keep keys the run did not have).
    """
    run_id = run.info.run_id
    full = store.artifact_text(run_id, "resolved_params.yaml")
    if full is not None:
        return dict(yaml.safe_load(full) or {}), "the run's resolved_params.yaml artifact"
    base_file = code / "params.yaml"
    base = dict(yaml.safe_load(base_file.read_text()) or {}) if base_file.is_file() else {}
    logged_text = store.artifact_text(run_id, "resolved_config.json")
    if logged_text is not None:
        logged, where = json.loads(logged_text), "resolved_config.json"
    else:
        logged, where = unflatten_params(dict(run.data.params)), "the run's params"
    sections = [k for k in logged if k in SECTIONS]
    for k in sections:
        base[k] = logged[k]
    if run.data.tags.get("stage") == "quantify" and run.data.tags.get("seed") is not None:
        base.setdefault("data", {})["seed"] = int(run.data.tags["seed"])  # read by quantify, not logged
    return base, f"params.yaml at the commit with sections {', '.join(sections) or 'none'} from {where}"


def pick_device(recorded: str, wanted: str) -> tuple[str, str | None]:
    """('cpu' | 'cuda', a note or None). 'recorded' follows the run, falling back to CPU."""
    if wanted in ("cpu", "cuda"):
        return wanted, None
    if recorded.startswith("cuda"):
        import torch

        if torch.cuda.is_available():
            return "cuda", "recorded on CUDA and rerun on CUDA: GPU kernels may not be bit-exact"
        return "cpu", "recorded on CUDA, rerun on CPU (no CUDA here): expect small differences"
    return "cpu", None


def stage_command(
    stage: str, tags: dict[str, str], inputs: dict[str, Restored], out: Path, params: Path, extra: list[str]
) -> list[str]:
    def opt(name: str) -> list[str]:
        return [f"--{name}", str(inputs[name].path)] if name in inputs else []

    ds, model = tags.get("wildcard.dataset", ""), tags.get("wildcard.model", "")
    tail = ["--out", str(out), "--params", str(params)]
    if stage == "prepare":
        return ["prepare", "--dataset", ds, *tail]
    if stage == "quantify":
        return ["quantify", "--dataset", ds, *opt("data"), *tail]
    if stage == "sweep":
        return ["sweep", "--dataset", ds, "--model", model, *opt("data"), *opt("rus"), *extra, *tail]
    if stage == "train":
        seed = tags.get("wildcard.seed", tags.get("seed", "0"))
        return [
            "train",
            "--dataset",
            ds,
            "--model",
            model,
            "--seed",
            seed,
            *opt("data"),
            *opt("rus"),
            *opt("sweep"),
            *tail,
        ]
    if stage == "check":
        return ["check", *tail]
    if stage == "evaluate":
        # model0..N are positional, in order; rus{i} / sweep{i} are repeated options
        numbered = {
            prefix: [str(r.path) for n, r in inputs.items() if re.fullmatch(rf"{prefix}\d+", n)]
            for prefix in ("model", "rus", "sweep")
        }
        return [
            "evaluate",
            *numbered["model"],
            *[a for d in numbered["rus"] for a in ("--rus", d)],
            *[a for d in numbered["sweep"] for a in ("--sweeps", d)],
            *opt("checks"),
            *tail,
        ]
    raise AuditError(f"cannot reproduce a run of stage {stage!r}")
