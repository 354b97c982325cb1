"""The benchmark report: one Markdown file and one self-contained HTML file (images inlined)."""

from __future__ import annotations

import base64
import html
from pathlib import Path

import polars as pl


def _pct(mean: float | None, std: float | None) -> str:
    if mean is None:
        return "n/a"
    return f"{100 * mean:.2f} ± {100 * (std or 0.0):.2f}"


def summary_markdown(summary: pl.DataFrame, metrics: list[str]) -> str:
    head = "| data set | model | seeds | " + " | ".join(metrics) + " |"
    sep = "|---|---|---|" + "---|" * len(metrics)
    lines = [head, sep]
    for r in summary.iter_rows(named=True):
        cells = [_pct(r[f"{m}_mean"], r[f"{m}_std"]) for m in metrics]
        lines.append(f"| {r['dataset']} | {r['model']} | {r['n_seeds']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def tests_markdown(tests: pl.DataFrame) -> str:
    if tests.is_empty():
        return "_No model to compare with a baseline (one model per data set)._"
    lines = [
        "| data set | model | vs baseline | pairs | mean diff (pp) | p (paired t) |",
        "|---|---|---|---|---|---|",
    ]
    for r in tests.iter_rows(named=True):
        p = "n/a" if r["p_value"] is None else f"{r['p_value']:.3g}"
        lines.append(
            f"| {r['dataset']} | {r['model']} | {r['baseline']} | {r['n_pairs']} | "
            f"{100 * r['mean_diff']:+.2f} | {p} |"
        )
    return "\n".join(lines)


def write_markdown(
    path: Path,
    summary: pl.DataFrame,
    tests: pl.DataFrame,
    recall: pl.DataFrame,
    metrics: list[str],
    figures: list[Path],
) -> None:
    parts = [
        "# timoe benchmark",
        "",
        "## Test metrics (mean ± std over seeds, %)",
        "",
        summary_markdown(summary, metrics),
        "",
        "Standard deviation with ddof=1 (0 for a single seed).",
        "",
        "## Against the best baseline (paired over seeds, accuracy)",
        "",
        tests_markdown(tests),
        "",
        "## Per-class recall (mean over seeds, %)",
        "",
    ]
    for ds in sorted(recall["dataset"].unique().to_list()) if not recall.is_empty() else []:
        sub = recall.filter(pl.col("dataset") == ds)
        # recall columns of the other data sets' classes are all null here
        classes = [c for c in sub.columns if c not in ("dataset", "model")
                   and sub[c].null_count() < sub.height]
        parts.append(f"**{ds}**")
        parts.append("")
        parts.append("| model | " + " | ".join(classes) + " |")
        parts.append("|---|" + "---|" * len(classes))
        for r in sub.iter_rows(named=True):
            vals = ["n/a" if r[c] is None else f"{100 * r[c]:.1f}" for c in classes]
            parts.append(f"| {r['model']} | " + " | ".join(vals) + " |")
        parts.append("")
    parts.append("## Figures")
    parts.append("")
    parts += [f"![{f.stem}]({f.name})" for f in figures]
    path.write_text("\n".join(parts) + "\n")


def _md_table_to_html(md: str) -> str:
    rows = [ln.strip().strip("|").split("|") for ln in md.splitlines() if ln.startswith("|")]
    if len(rows) < 2:
        return f"<p>{html.escape(md)}</p>"
    head, body = rows[0], rows[2:]
    th = "".join(f"<th>{html.escape(c.strip())}</th>" for c in head)
    trs = "".join("<tr>" + "".join(f"<td>{html.escape(c.strip())}</td>" for c in r) + "</tr>" for r in body)
    return f"<table><thead><tr>{th}</tr></thead><tbody>{trs}</tbody></table>"


def write_html(
    path: Path,
    summary: pl.DataFrame,
    tests: pl.DataFrame,
    metrics: list[str],
    figures: list[Path],
    provenance: dict[str, str],
) -> None:
    """A single file: tables and every figure inlined as base64 PNG, readable offline."""
    imgs = []
    for f in figures:
        data = base64.b64encode(f.read_bytes()).decode()
        imgs.append(
            f'<figure><img alt="{html.escape(f.stem)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{html.escape(f.stem)}</figcaption></figure>"
        )
    prov = "".join(
        f"<li><b>{html.escape(k)}</b>: {html.escape(v)}</li>" for k, v in sorted(provenance.items())
    )
    doc = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>timoe benchmark</title>
<style>
body {{ font-family: sans-serif; margin: 2em; max-width: 1100px; }}
table {{ border-collapse: collapse; margin: 1em 0; }}
td, th {{ border: 1px solid #bbb; padding: 4px 8px; text-align: right; }}
th {{ background: #eee; }}
figure {{ display: inline-block; margin: 0.5em; }}
img {{ max-width: 520px; }}
</style></head><body>
<h1>timoe benchmark</h1>
<h2>Test metrics (mean ± std over seeds, %)</h2>
{_md_table_to_html(summary_markdown(summary, metrics))}
<h2>Against the best baseline (paired t-test over seeds, accuracy)</h2>
{_md_table_to_html(tests_markdown(tests))}
<h2>Figures</h2>
{"".join(imgs)}
<h2>Provenance</h2><ul>{prov}</ul>
</body></html>
"""
    path.write_text(doc)
