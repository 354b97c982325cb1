# timoe pipeline: prepare -> quantify -> sweep -> train -> evaluate, over data set × model × seed.
# Thin by design: config validation, includes, `rule all`, and the onstart/onsuccess hooks.
# Every rule calls `timoe <stage>`; the stage itself is a plain function in src/timoe.

from pathlib import Path

from timoe.config import dataset_key
from timoe.workflow_support import Pipeline

configfile: "params.yaml"

PIPE = Pipeline.from_snakemake_config(config)  # validates, or stops before any job with key paths named
P = PIPE.params
RESOLVED = PIPE.write_resolved()  # what every `timoe` call reads
CHECKS_DIR = "results/checks"  # optional estimator / lag-range check tables (`make checks`)


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
