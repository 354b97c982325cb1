"""Lineage: from a result back through the runs that made its inputs, to code and data versions.

A result is a run id or an output path (its run_id.txt names the run). Each run's input.*
tags give the path, content hash and upstream run of every input, so the walk needs nothing
but the tracking store; the local copies of the inputs are hashed too, to say whether the
files on disk are still the ones the run read.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from timoe.audit import AuditError
from timoe.audit.store import Store
from timoe.audit.views import code_state, fmt_time, fmt_value, inputs_of, run_label
from timoe.tracking import RUN_ID_FILE, content_hash

KEY_METRICS = ("test_accuracy", "test_macro_f1", "val_accuracy", "best_val_accuracy")


def key_metrics(metrics: dict[str, float], most: int = 4) -> dict[str, float]:
    """The headline numbers of a run: the known ones, else accuracy/F1-like names (evaluate's means)."""
    picked = {k: metrics[k] for k in KEY_METRICS if k in metrics}
    if not picked:
        picked = {k: v for k, v in sorted(metrics.items()) if "accuracy" in k or "f1" in k}
    return dict(list(picked.items())[:most])


def run_id_from_path(path: Path) -> str:
    """The run that wrote an output: run_id.txt in the path or the nearest directory above it."""
    path = Path(path).resolve()
    start = path if path.is_dir() else path.parent
    for d in [start, *start.parents]:
        f = d / RUN_ID_FILE
        if f.is_file():
            return f.read_text().strip()
        if (d / ".git").exists():
            break  # an output never lies above its repository; a run_id.txt there is unrelated
    raise AuditError(f"no {RUN_ID_FILE} in {path} or any directory above it; is it a timoe output?")


def resolve_target(store: Store, target: str) -> Any:
    """A run from a run id (or prefix) or from an output path."""
    if Path(target).exists():
        return store.run(run_id_from_path(Path(target)))
    return store.run(target)


class _Walker:
    def __init__(self, store: Store, root: Path, verify: bool) -> None:
        self.store, self.root, self.verify = store, root, verify
        self.seen: set[str] = set()
        self._hashes: dict[Path, str] = {}

    def local_state(self, path: str, sha: str | None) -> str:
        if not self.verify:
            return "unchecked"
        p = Path(path) if Path(path).is_absolute() else self.root / path
        if not p.exists():
            return "missing"
        if p not in self._hashes:
            self._hashes[p] = content_hash(p)
        return "ok" if self._hashes[p] == sha else "changed"

    def node(self, run_id: str) -> dict[str, Any]:
        run = self.store.maybe_run(run_id)
        if run is None:
            return {"run_id": run_id, "missing": True, "inputs": []}
        if run_id in self.seen:
            return {"run_id": run_id, "name": run_label(run), "repeated": True, "inputs": []}
        self.seen.add(run_id)
        tags = run.data.tags
        inputs = []
        for name, inp in inputs_of(run).items():
            up = inp.get("run_id")
            inputs.append(
                {
                    "name": name,
                    "path": inp.get("path"),
                    "sha256": inp.get("sha256"),
                    "run_id": up,
                    "local": self.local_state(inp.get("path", ""), inp.get("sha256"))
                    if inp.get("path")
                    else "?",
                    "upstream": self.node(up) if up else None,
                }
            )
        return {
            "run_id": run_id,
            "name": run_label(run),
            "stage": tags.get("stage"),
            "status": run.info.status,
            "start_time": fmt_time(run.info.start_time),
            "experiment": self.store.experiments.get(run.info.experiment_id, run.info.experiment_id),
            "git_commit": tags.get("git_commit"),
            "git_dirty": tags.get("git_dirty"),
            "git_diff_sha256": tags.get("git_diff_sha256", ""),
            "seed": tags.get("seed"),
            "device": tags.get("device"),
            "sources": {
                k[len("source.") : -len(".sha256")]: v
                for k, v in sorted(tags.items())
                if k.startswith("source.") and k.endswith(".sha256")
            },
            "metrics": dict(sorted(run.data.metrics.items())),
            "inputs": inputs,
        }


def build_lineage(
    store: Store, target: str, *, root: Path = Path("."), verify: bool = True
) -> dict[str, Any]:
    """The lineage tree of a result, plus a summary of commits, dirty runs and input problems."""
    run = resolve_target(store, target)
    tree = _Walker(store, Path(root), verify).node(run.info.run_id)
    return {"tree": tree, "summary": summarise(tree)}


def _nodes(node: dict[str, Any]) -> list[dict[str, Any]]:
    out = [node]
    for inp in node.get("inputs", []):
        if inp.get("upstream"):
            out += _nodes(inp["upstream"])
    return out


def _edges(node: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for inp in node.get("inputs", []):
        out.append(inp)
        if inp.get("upstream"):
            out += _edges(inp["upstream"])
    return out


def summarise(tree: dict[str, Any]) -> dict[str, Any]:
    full = [n for n in _nodes(tree) if not n.get("missing") and not n.get("repeated")]
    commits: dict[str, list[str]] = {}
    for n in full:
        commits.setdefault(n.get("git_commit") or "unknown", []).append(n["run_id"])
    return {
        "runs": len(full),
        "commits": commits,
        "dirty_runs": [n["run_id"] for n in full if n.get("git_dirty") != "false"],
        "missing_runs": sorted({n["run_id"] for n in _nodes(tree) if n.get("missing")}),
        "inputs_changed": sorted({e["path"] for e in _edges(tree) if e["local"] == "changed"}),
        "inputs_missing": sorted({e["path"] for e in _edges(tree) if e["local"] == "missing"}),
    }


def render(lineage: dict[str, Any]) -> str:
    lines: list[str] = []
    _render_node(lineage["tree"], lines, "", "")
    s = lineage["summary"]
    lines.append("")
    lines.append(f"summary: {s['runs']} run(s) in the lineage")
    for commit, ids in s["commits"].items():
        lines.append(f"  code version {commit}: {len(ids)} run(s)")
    if len(s["commits"]) > 1:
        lines.append("  NOTE: the runs in this lineage were made from different commits")
    if s["dirty_runs"]:
        lines.append(
            f"  WARNING: {len(s['dirty_runs'])} run(s) made from a dirty or unknown tree "
            f"(diff hash recorded, diff not): {', '.join(i[:12] for i in s['dirty_runs'])}"
        )
    if s["missing_runs"]:
        lines.append(f"  WARNING: upstream run(s) not in this store: {', '.join(s['missing_runs'])}")
    if s["inputs_changed"]:
        lines.append(
            f"  WARNING: local input(s) differ from what the runs read: {', '.join(s['inputs_changed'])}"
        )
    if s["inputs_missing"]:
        lines.append(f"  local input(s) not present here: {', '.join(s['inputs_missing'])}")
    return "\n".join(lines)


def _render_node(node: dict[str, Any], lines: list[str], first: str, rest: str) -> None:
    rid = node["run_id"]
    if node.get("missing"):
        lines.append(f"{first}run {rid}  (not in this tracking store)")
        return
    if node.get("repeated"):
        lines.append(f"{first}{node['name']}  run {rid[:12]}  (shown above)")
        return
    lines.append(
        f"{first}{node['name']}  run {rid}  [{node['stage']}, {node['status']}, {node['start_time']}]"
    )
    detail = rest + ("│   " if node["inputs"] else "    ")
    tags = {
        "git_commit": node["git_commit"],
        "git_dirty": node["git_dirty"],
        "git_diff_sha256": node["git_diff_sha256"],
    }
    lines.append(f"{detail}code  git {code_state({k: v or '' for k, v in tags.items()})}")
    lines.append(
        f"{detail}job   experiment {node['experiment']}, seed {node['seed'] or '-'}, "
        f"device {node['device'] or '?'}"
    )
    for name, sha in node["sources"].items():
        lines.append(f"{detail}source  {name}  sha256 {sha[:16]}")
    shown = [f"{k} {fmt_value(v)}" for k, v in key_metrics(node["metrics"]).items()]
    if shown:
        lines.append(f"{detail}metrics  {', '.join(shown)}")
    for i, inp in enumerate(node["inputs"]):
        last = i == len(node["inputs"]) - 1
        lines.append(
            f"{rest}{'└── ' if last else '├── '}input {inp['name']}: {inp['path']}  "
            f"sha256 {(inp['sha256'] or '?')[:16]}  local: {inp['local']}"
        )
        pad = rest + ("    " if last else "│   ")
        if inp["upstream"] is not None:
            _render_node(inp["upstream"], lines, pad + "└── made by ", pad + "    ")
        else:
            lines.append(f"{pad}└── (no run recorded: an external input)")
