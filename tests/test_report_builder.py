"""The report builder (timoe.evaluation.report) on small hand-made tables: what each table says,
the order of the sections, and that report.md and report.html say the same thing."""

from __future__ import annotations

import base64
from pathlib import Path

import polars as pl

from timoe.evaluation import report  # its tests_markdown, imported by name, would be collected as a test
from timoe.evaluation.claims import SCHEMA
from timoe.evaluation.report import (
    Figure,
    recall_markdown,
    report_blocks,
    summary_markdown,
    write_html,
    write_markdown,
)

PNG = base64.b64decode(  # a 1×1 PNG
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
)


def _summary() -> pl.DataFrame:
    return pl.DataFrame(
        {
            "dataset": ["hapt", "hapt"],
            "model": ["moe", "timoe"],
            "n_seeds": [3, 1],
            "accuracy_mean": [0.91234, None],
            "accuracy_std": [0.0071, None],
        },
        schema_overrides={"accuracy_mean": pl.Float64, "accuracy_std": pl.Float64},
    )


def _claims() -> pl.DataFrame:
    row = dict.fromkeys(SCHEMA) | {
        "statement": "timoe beats <b>moe</b> | dense",
        "dataset": "hapt",
        "metric": "accuracy",
        "design": "per-seed paired t",
        "test": "H1 timoe > moe",
        "p_value": 0.0123,
        "p_refute": 0.4,
        "p_holm": 0.0492,
        "p_refute_holm": 0.8,
        "in_family": True,
        "verdict": "INCONCLUSIVE",
        "reason": "MDE 2.10 pp at n = 3",
    }
    return pl.DataFrame([row], schema=SCHEMA)


def _blocks(tmp_path: Path) -> list:
    fig = tmp_path / "rus_hapt.png"
    fig.write_bytes(PNG)
    figures = [
        Figure(fig, "RUS by lag", "Synergy peaks at lag 1.", group="Interactions"),
        Figure(fig, "Accuracy", "Bars are seeds.", group="Accuracy"),
    ]
    recall = pl.DataFrame({"dataset": ["hapt"], "model": ["moe"], "WALKING": [0.95]})
    return report_blocks(
        claims=_claims(),
        summary=_summary(),
        tests=pl.DataFrame(),
        recall=recall,
        diagnostics=pl.DataFrame(),
        metrics=["accuracy"],
        figures=figures,
    )


def test_summary_shows_percent_mean_and_std_and_marks_a_missing_metric():
    lines = summary_markdown(_summary(), ["accuracy"]).splitlines()
    assert lines[0] == "| data set | model | seeds | accuracy |"
    assert lines[2] == "| hapt | moe | 3 | 91.23 ± 0.71 |"
    assert lines[3] == "| hapt | timoe | 1 | n/a |"


def test_paired_tests_table_signs_the_difference_and_says_when_there_is_none():
    assert report.tests_markdown(pl.DataFrame()).startswith("_No model to compare")
    tests = pl.DataFrame(
        {
            "dataset": ["hapt", "hapt"],
            "model": ["timoe", "fusemoe"],
            "baseline": ["moe", "moe"],
            "n_pairs": [3, 1],
            "mean_diff": [-0.0174, 0.0031],
            "p_value": [0.0312, None],
        }
    )
    rows = report.tests_markdown(tests).splitlines()[2:]
    assert rows == [
        "| hapt | timoe | moe | 3 | -1.74 | 0.0312 |",
        "| hapt | fusemoe | moe | 1 | +0.31 | n/a |",
    ]


def test_recall_lists_only_each_data_sets_own_classes():
    recall = pl.DataFrame(
        {
            "dataset": ["hapt", "synthetic-regimes"],
            "model": ["moe", "moe"],
            "WALKING": [0.951, None],
            "class_0": [None, 0.5],
        }
    )
    text = recall_markdown(recall)
    hapt, synthetic = text.split("**synthetic-regimes**")
    assert "WALKING" in hapt and "class_0" not in hapt and "95.1" in hapt
    assert "class_0" in synthetic and "WALKING" not in synthetic and "50.0" in synthetic
    assert recall_markdown(pl.DataFrame()).startswith("_No per-class recall")


def test_claims_come_first_and_figures_are_grouped_under_their_heading(tmp_path: Path):
    blocks = _blocks(tmp_path)
    text = [b for b in blocks if isinstance(b, str)]
    order = [text.index(h) for h in ("## Claims", "## Test metrics (mean ± std over seeds, %)", "## Figures")]
    assert order == sorted(order)
    assert "**1 claim × data set rows: 0 HELD, 0 REFUTED, 1 INCONCLUSIVE, 0 NOT TESTABLE.**" in text
    # the design is stated before the table: unit of replication, margin, correction, family
    design = next(b for b in text if b.startswith("Design."))
    for words in ("subjects × seeds", "SESOI = 1 pp", "Holm", "every testable row", "MDE"):
        assert words in design
    claims_table = next(b for b in text if b.startswith("| claim |"))
    assert "| 0.0123 / 0.4 | 0.0492 / 0.8 | **INCONCLUSIVE** (MDE 2.10 pp at n = 3) |" in claims_table
    figures_at = blocks.index("## Figures")
    tail = blocks[figures_at + 1 :]
    assert [b if isinstance(b, str) else b.title for b in tail] == [
        "### Interactions",
        "RUS by lag",
        "### Accuracy",
        "Accuracy",
    ]


def test_markdown_and_html_say_the_same_and_html_is_self_contained(tmp_path: Path):
    blocks = _blocks(tmp_path)
    md, page = tmp_path / "report.md", tmp_path / "report.html"
    write_markdown(md, blocks)
    write_html(page, blocks, {"git_commit": "abc123", "created": "2026-12-02"})
    text, doc = md.read_text(), page.read_text()
    assert "![RUS by lag](rus_hapt.png)" in text and "*RUS by lag.* Synergy peaks at lag 1." in text
    # the figure is inlined, not linked: the page reads offline
    assert (
        f"data:image/png;base64,{base64.b64encode(PNG).decode()}" in doc and 'src="rus_hapt.png"' not in doc
    )
    assert "<figcaption><b>RUS by lag.</b> Synergy peaks at lag 1.</figcaption>" in doc
    # tables render as tables; text from the runs is escaped, never passed through as HTML
    assert "<table>" in doc and "<th>claim</th>" in doc
    assert "<b>moe</b>" not in doc and "&lt;b&gt;moe&lt;/b&gt;" in doc
    assert "timoe beats &lt;b&gt;moe&lt;/b&gt; | dense" in doc  # the escaped | stays inside its cell
    assert doc.index("<b>created</b>") < doc.index("<b>git_commit</b>")  # provenance sorted by key
    for heading in ("Claims", "Test metrics", "Routing diagnostics", "Per-class recall", "Figures"):
        assert f"## {heading}" in text and f"<h2>{heading}" in doc
