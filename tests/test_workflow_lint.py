"""Snakemake's lints on the real Snakefile: none but the one timoe documents as accepted."""

from __future__ import annotations

import shutil
from pathlib import Path

from timoe.workflow_support import workflow_lints

ROOT = Path(__file__).resolve().parents[1]


def _copy_workflow(dest: Path) -> Path:
    for name in ("Snakefile", "params.yaml"):
        shutil.copy(ROOT / name, dest / name)
    shutil.copytree(ROOT / "workflow", dest / "workflow")
    return dest


def test_the_snakefile_has_no_lint_but_the_accepted_one():
    left, report = workflow_lints(ROOT)
    assert left == [], report
    assert "Lints for rule train" in report  # the accepted lint is still reported: the check ran


def test_a_rule_using_a_global_variable_is_caught(tmp_path: Path):
    repo = _copy_workflow(tmp_path)
    rules = repo / "workflow" / "rules" / "evaluate.smk"
    rules.write_text(rules.read_text().replace("{params.resolved:q}", "{RESOLVED_PATH}"))
    left, _ = workflow_lints(repo)
    assert any("uses variable RESOLVED_PATH from outside of the rule" in t for t in left)
