rule quantify:
    input:
        unpack(lambda w: PIPE.inputs("quantify", w)),
    output:
        directory(PIPE.output("quantify")),
    params:
        reads=lambda w: PIPE.reads("quantify", w),
        resolved=RESOLVED_PATH,
    # Slurm asks for these (memory and time grow with each retry); declared per rule so that
    # `--default-resources` on the command line cannot drop them. MiB, minutes.
    resources:
        mem_mb=lambda w, attempt: 4000 * attempt,
        runtime=lambda w, attempt: 60 * attempt,
    log:
        "logs/quantify/{dataset}.log",
    shell:
        "TIMOE_LOG={log:q} timoe quantify --dataset {wildcards.dataset:q} --data {input.data:q} --out {output:q}"
        " --params {params.resolved:q} > {log:q} 2>&1"
