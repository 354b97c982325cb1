"""Text (and JSON-ready) views of runs: the list table, one run in full, and a comparison."""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence
from typing import Any

from timoe.audit.store import Store

# Tags that tie a number to its code, data and job; compared and shown apart from the rest.
LINEAGE_KEYS = (
    "stage",
    "seed",
    "device",
    "git_commit",
    "git_dirty",
    "git_diff_sha256",
    "timoe_version",
    "python",
)
DEFAULT_METRIC_COLUMNS = ("val_accuracy", "test_accuracy")
SHORT_ID = 12
SIGNIFICANT_DIGITS = 4  # metrics in the tables people read


def fmt_value(v: Any) -> str:
    """Exact but readable: floats in their shortest round-trip form, whole floats as integers."""
    if isinstance(v, float):
        if math.isfinite(v) and v.is_integer() and abs(v) < 1e15:
            return str(int(v))
        return repr(v)
    return "" if v is None else str(v)


def fmt_cell(v: Any, exact: bool = False) -> str:
    """A table cell for people: floats to SIGNIFICANT_DIGITS (--json and CSV keep every digit)."""
    if exact or not isinstance(v, float) or not math.isfinite(v) or v.is_integer():
        return fmt_value(v)
    return f"{v:.{SIGNIFICANT_DIGITS}g}"


def fmt_diff(a: Any, b: Any) -> str:
    """b - a to 3 significant digits; the values themselves are printed exactly beside it."""
    if not isinstance(a, int | float) or not isinstance(b, int | float):
        return ""
    d = b - a
    return "0" if d == 0 else f"{d:+.3g}"


def fmt_time(ms: int | None) -> str:
    if not ms:
        return ""
    return dt.datetime.fromtimestamp(ms / 1000).strftime("%Y-%m-%d %H:%M:%S")


def fmt_size(n: int | None) -> str:
    if n is None:
        return ""
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return str(n)


def table(
    headers: Sequence[str], rows: Sequence[Sequence[Any]], max_width: int = 60, *, exact: bool = False
) -> str:
    """Aligned columns; floats rounded for reading unless `exact` (reproduce's recorded vs rerun)."""
    cells = [[_clip(fmt_cell(c, exact), max_width) for c in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    return "\n".join(lines)


def _clip(s: str, n: int) -> str:
    return s if len(s) <= n else s[: n - 1] + "…"


def code_state(tags: dict[str, str]) -> str:
    commit = tags.get("git_commit", "unknown")
    dirty = tags.get("git_dirty", "unknown")
    if dirty == "true":
        return f"{commit[:10]} DIRTY (diff sha256 {tags.get('git_diff_sha256', '')[:12]})"
    return f"{commit[:10]} ({'clean' if dirty == 'false' else 'dirty flag ' + dirty})"


def run_label(run: Any) -> str:
    return run.info.run_name or run.data.tags.get("stage", "")


def inputs_of(run: Any) -> dict[str, dict[str, str]]:
    """{'data': {'path': ..., 'sha256': ..., 'run_id': ...}, ...} from the input.* tags."""
    out: dict[str, dict[str, str]] = {}
    for key, value in run.data.tags.items():
        if key.startswith("input.") and key.count(".") >= 2:
            name, _, field = key[len("input.") :].rpartition(".")
            out.setdefault(name, {})[field] = value
    return dict(sorted(out.items(), key=lambda kv: _natural(kv[0])))


def _natural(name: str) -> tuple[str, int]:
    """model10 after model9: evaluate's inputs are numbered."""
    head = name.rstrip("0123456789")
    tail = name[len(head) :]
    return head, int(tail) if tail else -1


def run_record(run: Any, store: Store | None = None) -> dict[str, Any]:
    """A run as plain data (the JSON form of list and show)."""
    info, tags = run.info, run.data.tags
    return {
        "run_id": info.run_id,
        "name": info.run_name,
        "experiment": store.experiments.get(info.experiment_id, info.experiment_id)
        if store
        else info.experiment_id,
        "status": info.status,
        "start_time": fmt_time(info.start_time),
        "end_time": fmt_time(info.end_time),
        "stage": tags.get("stage"),
        "wildcards": {k[len("wildcard.") :]: v for k, v in tags.items() if k.startswith("wildcard.")},
        "git_commit": tags.get("git_commit"),
        "git_dirty": tags.get("git_dirty"),
        "git_diff_sha256": tags.get("git_diff_sha256"),
        "inputs": inputs_of(run),
        "parent_run_id": tags.get("mlflow.parentRunId"),
        "metrics": dict(sorted(run.data.metrics.items())),
        "params": dict(sorted(run.data.params.items())),
        "tags": dict(sorted(tags.items())),
    }


def metric_columns(runs: Sequence[Any], wanted: Sequence[str]) -> list[str]:
    if wanted:
        return list(dict.fromkeys(wanted))
    return [m for m in DEFAULT_METRIC_COLUMNS if any(m in r.data.metrics for r in runs)]


def list_table(runs: Sequence[Any], metrics: Sequence[str]) -> str:
    headers = ["run", "started", "stage", "dataset", "model", "seed", "status", "git", *metrics]
    rows = []
    for r in runs:
        t = r.data.tags
        dirty = {"true": "*", "false": ""}.get(t.get("git_dirty", ""), "?")
        rows.append(
            [
                r.info.run_id[:SHORT_ID],
                fmt_time(r.info.start_time)[:16],
                t.get("stage", ""),
                t.get("wildcard.dataset", ""),
                t.get("wildcard.model", ""),
                t.get("wildcard.seed", t.get("seed", "")),
                r.info.status,
                t.get("git_commit", "")[:8] + dirty,
                *[r.data.metrics.get(m) for m in metrics],
            ]
        )
    note = "git: commit prefix, * = made from a dirty tree. Run-id prefixes work in every audit command."
    return f"{table(headers, rows)}\n{len(runs)} run(s). {note}"


def show_text(store: Store, run: Any) -> str:
    info, tags = run.info, run.data.tags
    rec = run_record(run, store)
    took = f"  (took {(info.end_time - info.start_time) / 1000:.1f} s)" if info.end_time else ""
    wild = " ".join(f"{k}={v}" for k, v in rec["wildcards"].items())
    lines = [
        f"run {info.run_id}  {run_label(run)}",
        f"  experiment  {rec['experiment']}",
        f"  status      {info.status}",
        f"  started     {rec['start_time']}{took}",
        f"  stage       {tags.get('stage', '?')}  {wild}".rstrip(),
        f"  code        git {code_state(tags)}",
        f"  runtime     device {tags.get('device', '?')}, python {tags.get('python', '?')}, "
        f"timoe {tags.get('timoe_version', '?')}, seed {tags.get('seed', '-')}",
    ]
    if tags.get("git_dirty") == "true":
        lines.append(
            "  WARNING     made from a dirty tree: the diff's hash is recorded, the diff itself is not"
        )
    parent_id = tags.get("mlflow.parentRunId")
    if parent_id:
        parent = store.maybe_run(parent_id)
        lines.append(f"  parent      {parent_id}  {run_label(parent) if parent else '(not in this store)'}")
    children = store.children(info.run_id)
    lines.append(f"  children    {len(children) or 'none'}")
    if children:
        keys = sorted({k for c in children for k in c.data.metrics if not k.endswith("duration_s")})[:3]
        rows = [
            [c.info.run_id[:SHORT_ID], run_label(c), c.info.status, *[c.data.metrics.get(k) for k in keys]]
            for c in children
        ]
        lines.append(_indent(table(["run", "name", "status", *keys], rows)))
    lines.append("inputs" + ("" if rec["inputs"] else "  none"))
    for name, inp in rec["inputs"].items():
        up = f"  from run {inp['run_id']}" if inp.get("run_id") else ""
        lines.append(f"  {name}  {inp.get('path', '?')}  sha256 {inp.get('sha256', '?')}{up}")
    lines.append("metrics" + ("" if rec["metrics"] else "  none"))
    lines += _kv(rec["metrics"])
    lines.append("params" + ("" if rec["params"] else "  none"))
    lines += _kv(rec["params"])
    shown = {"mlflow.runName", "mlflow.parentRunId"}
    other = {
        k: v for k, v in rec["tags"].items() if k not in shown and not k.startswith(("input.", "wildcard."))
    }
    lines.append("tags")
    lines += _kv(other)
    arts = store.artifacts(info.run_id)
    lines.append("artifacts" + ("" if arts else "  none"))
    lines += _kv({p: fmt_size(s) for p, s in arts})
    return "\n".join(lines)


def _kv(d: dict[str, Any]) -> list[str]:
    width = max((len(k) for k in d), default=0)
    return [f"  {k.ljust(width)}  {fmt_value(v)}" for k, v in d.items()]


def _indent(text: str, by: str = "    ") -> str:
    return "\n".join(by + ln for ln in text.splitlines())


def _letters(n: int) -> list[str]:
    return [chr(ord("A") + i) if i < 26 else f"R{i}" for i in range(n)]


def compare_data(runs: Sequence[Any], *, show_all: bool = False) -> dict[str, Any]:
    """Params, metrics and lineage tags side by side; only the differing keys unless show_all."""

    def section(values: list[dict[str, Any]]) -> dict[str, list[Any]]:
        keys = sorted(set().union(*values))
        rows = {k: [v.get(k) for v in values] for k in keys}
        if show_all:
            return rows
        return {k: vals for k, vals in rows.items() if not _all_equal(vals)}

    lineage = [
        {
            k: v
            for k, v in r.data.tags.items()
            if k in LINEAGE_KEYS or k.startswith(("wildcard.", "input.", "source."))
        }
        for r in runs
    ]
    return {
        "runs": [
            {"label": lab, "run_id": r.info.run_id, "name": run_label(r), "status": r.info.status}
            for lab, r in zip(_letters(len(runs)), runs, strict=True)
        ],
        "params": section([dict(r.data.params) for r in runs]),
        "metrics": section([dict(r.data.metrics) for r in runs]),
        "lineage": section(lineage),
        "all_keys": show_all,
    }


def _all_equal(vals: list[Any]) -> bool:
    first = vals[0]
    return all(_same(first, v) for v in vals[1:])


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return a == b


def compare_text(data: dict[str, Any]) -> str:
    labels = [r["label"] for r in data["runs"]]
    lines = ["runs"]
    lines += [f"  {r['label']}  {r['run_id']}  {r['name']}  ({r['status']})" for r in data["runs"]]
    for title in ("params", "metrics", "lineage"):
        rows = data[title]
        lines.append("")
        if not rows:
            lines.append(f"{title}: no differences")
            continue
        headers = ["key", *labels]
        body = [[k, *["-" if v is None else v for v in vals]] for k, vals in rows.items()]  # "-": absent
        if title == "metrics" and len(labels) == 2:
            headers.append(f"{labels[1]}-{labels[0]}")
            for row in body:
                a, b = rows[row[0]]
                row.append(fmt_diff(a, b))
        lines.append(
            f"{title} ({len(rows)} keys)" if data.get("all_keys") else f"{title} ({len(rows)} differ)"
        )
        lines.append(_indent(table(headers, body, max_width=40), "  "))
    return "\n".join(lines)
