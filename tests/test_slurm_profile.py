"""The Slurm profiles cannot silently degrade: a dry run shows what each job would ask for.

`--default-resources` given on the command line (as the executor plugin's docs suggest for
account and partition) replaces the profile's whole list; the rules' own memory and time must
survive it, and the GPU layer must ask for a GPU exactly where a stage can use one.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from repo_support import copy_repo, sh

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
GPU_RULES = {"quantify", "sweep", "train"}


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("snakemake_executor_plugin_slurm", reason="snakemake-executor-plugin-slurm missing")
    path = tmp_path_factory.mktemp("profile")
    copy_repo(path)
    return path


def _dry_run(repo: Path, *args: str) -> dict[str, list[dict[str, str]]]:
    """rule -> the resources of each job a dry run plans."""
    cmd = [sys.executable, "-m", "snakemake", "-n", "--configfile", "workflow/smoke.yaml", *args]
    out = sh(cmd, repo, timeout=300)
    plan: dict[str, list[dict[str, str]]] = {}
    for block in re.split(r"\n(?=(?:local)?rule \w+:)", out.stdout + out.stderr):
        rule = re.match(r"(?:local)?rule (\w+):", block)
        res = re.search(r"^\s+resources: (.*)$", block, re.M)
        if rule and res and rule.group(1) != "all":
            values = dict(kv.split("=", 1) for kv in res.group(1).split(", "))
            plan.setdefault(rule.group(1), []).append(values)
    return plan


def test_command_line_default_resources_keep_the_rules_memory_and_time(repo: Path):
    plan = _dry_run(repo, "--profile", "workflow/profiles/slurm",
                    "--default-resources", "slurm_account=acct", "slurm_partition=part")  # fmt: skip
    assert set(plan) == {"prepare", "quantify", "check", "sweep", "train", "evaluate"}
    for rule, jobs in plan.items():
        for res in jobs:
            assert res["slurm_account"] == "acct" and res["slurm_partition"] == "part"
            # the plugin's fallback would be 1000 MB and no time limit; every rule declares more
            assert int(res["mem_mb"]) >= 2000 and int(res["runtime"]) >= 30, (rule, res)
            assert "gpu" not in res, "GPUs are off unless the GPU layer is asked for"


def test_account_and_partition_come_from_the_environment(repo: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("TIMOE_SLURM_ACCOUNT", "from-env")
    monkeypatch.setenv("TIMOE_SLURM_PARTITION", "gpu-part")
    plan = _dry_run(repo, "--profile", "workflow/profiles/slurm", "--profile", "workflow/profiles/slurm-gpu")
    for rule, jobs in plan.items():
        for res in jobs:
            assert (res["slurm_account"], res["slurm_partition"]) == ("from-env", "gpu-part")
            assert (res.get("gpu") == "1") == (rule in GPU_RULES), (rule, res)
