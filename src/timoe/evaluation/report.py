"""The benchmark report: one Markdown file and one self-contained HTML file (images inlined).

Both are made from the same list of blocks (Markdown text or a captioned figure), so they say
the same thing; the HTML is the Markdown rendered by markdown-it (CommonMark plus tables), with
each figure inlined as a base64 PNG inside <figure> with its caption.
"""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass
from itertools import groupby
from pathlib import Path

import polars as pl
from markdown_it import MarkdownIt

from timoe.evaluation.claims import ClaimSettings, claims_design, claims_markdown, claims_tally
from timoe.evaluation.diagnostics import diagnostics_markdown


@dataclass(frozen=True)
class Figure:
    """A report figure: the PNG, a title, what to look at in it, and the section it goes in."""

    path: Path
    title: str
    caption: str
    group: str = ""


Block = str | Figure

CSS = """
body { font-family: sans-serif; margin: 2em auto; max-width: 1200px; padding: 0 1em; line-height: 1.4; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.9em; }
td, th { border: 1px solid #bbb; padding: 4px 8px; text-align: left; vertical-align: top; }
th { background: #eee; }
figure { margin: 1.5em 0; }
/* figures are saved at >= 800 px; show them at a readable width, never squeezed into thumbnails */
figure img { display: block; width: 100%; max-width: 960px; min-width: 600px; border: 1px solid #ddd; }
figcaption { max-width: 960px; color: #333; font-size: 0.95em; margin-top: 0.4em; }
figcaption b { color: #000; }
"""


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
        "| data set | model | vs baseline | pairs | mean diff (pp) | p (paired t, two-sided) |",
        "|---|---|---|---|---|---|",
    ]
    for r in tests.iter_rows(named=True):
        p = "n/a" if r["p_value"] is None else f"{r['p_value']:.3g}"
        lines.append(
            f"| {r['dataset']} | {r['model']} | {r['baseline']} | {r['n_pairs']} | "
            f"{100 * r['mean_diff']:+.2f} | {p} |"
        )
    return "\n".join(lines)


def recall_markdown(recall: pl.DataFrame) -> str:
    if recall.is_empty():
        return "_No per-class recall (no test predictions)._"
    parts: list[str] = []
    for ds in sorted(recall["dataset"].unique().to_list()):
        sub = recall.filter(pl.col("dataset") == ds)
        # recall columns of the other data sets' classes are all null here
        classes = [
            c for c in sub.columns if c not in ("dataset", "model") and sub[c].null_count() < sub.height
        ]
        parts += [f"**{ds}**", "", "| model | " + " | ".join(classes) + " |", "|---|" + "---|" * len(classes)]
        for r in sub.iter_rows(named=True):
            vals = ["n/a" if r[c] is None else f"{100 * r[c]:.1f}" for c in classes]
            parts.append(f"| {r['model']} | " + " | ".join(vals) + " |")
        parts.append("")
    return "\n".join(parts)


def report_blocks(
    *,
    claims: pl.DataFrame,
    summary: pl.DataFrame,
    tests: pl.DataFrame,
    recall: pl.DataFrame,
    diagnostics: pl.DataFrame,
    metrics: list[str],
    figures: list[Figure],
    claim_settings: ClaimSettings | None = None,
    reference: list[Block] | None = None,
) -> list[Block]:
    """The report's content in order: where the models stand against the reference (`reference`:
    evaluate's section, so a reader sees the level first), the claims, then the evidence."""
    blocks: list[Block] = [
        "# timoe benchmark",
        *(reference or []),
        "## Claims",
        "Each claim of the paper, tested on the runs: HELD (the claim is shown), REFUTED (its "
        "opposite is shown against the smallest effect of interest), INCONCLUSIVE (neither: the "
        "row gives the effect the data could detect and the seeds that would detect the smallest "
        "effect of interest). A non-significant difference is never read as no difference.",
        claims_design(claim_settings or ClaimSettings()),
        f"**{claims_tally(claims)}**",
        claims_markdown(claims),
        "## Test metrics (mean ± std over seeds, %)",
        summary_markdown(summary, metrics),
        "Standard deviation with ddof=1 (0 for a single seed).",
        "## Against the best baseline (paired over seeds, accuracy)",
        tests_markdown(tests),
        "## Routing diagnostics (mean over seeds and layers)",
        "On the test windows. n_eff = exp(entropy of expert usage), the number of experts in use; "
        "MI in bits (0 = the expert choice says nothing about the class or the true regime); top-k "
        "overlap = share of experts paired modalities share (chance k/E); synergy share = share "
        "of assignments on synergy experts, of all tokens and of the tokens whose prior says "
        "synergy (chance = share of experts that are synergy experts); random-routing drop = test "
        "accuracy lost when routing is replaced by random routing (near 0: routing does not matter).",
        diagnostics_markdown(diagnostics),
        "## Per-class recall (mean over seeds, %)",
        recall_markdown(recall),
        "## Figures",
    ]
    for group, figs in groupby(figures, key=lambda f: f.group):
        if group:
            blocks.append(f"### {group}")
        blocks += list(figs)
    return blocks


def write_markdown(path: Path, blocks: list[Block]) -> None:
    """report.md: figures referenced by file name (they sit next to it), caption in italics below."""
    parts = []
    for b in blocks:
        if isinstance(b, Figure):
            parts.append(f"![{b.title}]({b.path.name})\n\n*{b.title}.* {b.caption}")
        else:
            parts.append(b)
    path.write_text("\n\n".join(parts) + "\n")


def render_markdown(md: str) -> str:
    """CommonMark with GitHub tables; raw HTML in the text is escaped, not passed through."""
    return MarkdownIt("commonmark", {"html": False}).enable("table").render(md)


def _figure_html(fig: Figure) -> str:
    data = base64.b64encode(fig.path.read_bytes()).decode()
    return (
        f'<figure><img alt="{html.escape(fig.title)}" src="data:image/png;base64,{data}">'
        f"<figcaption><b>{html.escape(fig.title)}.</b> {html.escape(fig.caption)}</figcaption></figure>"
    )


def write_html(path: Path, blocks: list[Block], provenance: dict[str, str]) -> None:
    """A single file: the rendered Markdown and every figure inlined as base64 PNG, readable offline."""
    body = []
    for is_fig, run in groupby(blocks, key=lambda b: isinstance(b, Figure)):
        items = list(run)
        body += [_figure_html(f) for f in items] if is_fig else [render_markdown("\n\n".join(items))]
    prov = "".join(
        f"<li><b>{html.escape(k)}</b>: {html.escape(v)}</li>" for k, v in sorted(provenance.items())
    )
    doc = (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8"><title>timoe benchmark</title>\n'
        f"<style>{CSS}</style></head><body>\n"
        + "\n".join(body)
        + f"\n<h2>Provenance</h2><ul>{prov}</ul>\n</body></html>\n"
    )
    path.write_text(doc)
