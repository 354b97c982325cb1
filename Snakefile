# timoe pipeline: prepare -> quantify -> sweep -> train -> evaluate, over data set × model × seed.
# Thin by design: config validation, includes, `rule all`, and the onstart/onsuccess hooks.
# Every rule calls `timoe <stage>`; the stage itself is a plain function in src/timoe.

import os
import shlex  # noqa: F401 (the rules quote the paths they build)
import sys
from pathlib import Path

from timoe.config import dataset_key
from timoe.workflow_support import Pipeline

# Cluster jobs run this file with the controller's interpreter; putting its scripts folder first
# makes every rule's `timoe` this environment's, whatever PATH sbatch happened to pass on.
os.environ["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])

configfile: "params.yaml"

PIPE = Pipeline.from_snakemake_config(config, workflow.configfiles)  # validates, or stops before any job with key paths named
P = PIPE.params
RESOLVED = PIPE.write_resolved()  # what every `timoe` call reads
CHECKS_DIR = "results/checks"  # optional estimator / lag-range check tables (`make checks`)

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
include: "workflow/rules/evaluate.smk"


rule all:
    input:
        "results/benchmark",
        # the interaction estimates are a result of the study in their own right, and the input
        # of the RUS-aware models; run them even when only baselines are listed
        expand("results/rus/{dataset}", dataset=P.data.datasets),


onstart:
    PIPE.on_start()


onsuccess:
    PIPE.on_success()
