# timoe pipeline: prepare -> quantify -> sweep -> train -> evaluate, over data set × model × seed,
# and check (estimator checks on data with known RUS) -> evaluate.
# Thin by design: config validation, includes, `rule all`, and the onstart/onsuccess hooks.
# Every rule calls `timoe <stage>`; the stage itself is a plain function in src/timoe.

import shlex  # noqa: F401 (the rules quote the paths they build)
from pathlib import Path

from timoe.workflow_support import Pipeline, interpreter_scripts_first_on_path

# Cluster jobs run this file with the controller's interpreter; putting its scripts folder first
# makes every rule's `timoe` this environment's, whatever PATH sbatch happened to pass on.
interpreter_scripts_first_on_path()

configfile: "params.yaml"

PIPE = Pipeline.from_snakemake_config(config, workflow.configfiles)  # validates, or stops before any job with key paths named
P = PIPE.params
# What every `timoe` call reads, passed as a rule param. A Path: Snakemake's params rerun
# trigger compares only plain values (str, numbers, containers), so this one is not part of it and
# a new file (any param changed) reruns only the jobs whose declared `reads` changed
# (tests/test_pipeline_e2e.py checks that).
RESOLVED_PATH = Path(PIPE.write_resolved())

# Wildcards match only what the schema allows, so a requested path can never smuggle shell
# syntax into a command (every shell argument is also quoted with :q).
wildcard_constraints:
    dataset=PIPE.wildcard_pattern("dataset"),
    model=PIPE.wildcard_pattern("model"),
    seed=PIPE.wildcard_pattern("seed"),


include: "workflow/rules/prepare.smk"
include: "workflow/rules/quantify.smk"
include: "workflow/rules/sweep.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/check.smk"
include: "workflow/rules/evaluate.smk"


rule all:
    input:
        PIPE.output("evaluate"),
        # the interaction estimates are a result of the study in their own right, and the input
        # of the RUS-aware models; run them even when only baselines are listed
        PIPE.targets("quantify"),


onstart:
    PIPE.on_start()


onsuccess:
    PIPE.on_success()
