rule check:
    output:
        directory(PIPE.output("check")),
    params:
        reads=lambda w: PIPE.reads("check", w),
        resolved=RESOLVED_PATH,
    # Slurm asks for these (memory and time grow with each retry); declared per rule so that
    # `--default-resources` on the command line cannot drop them. MiB, minutes.
    resources:
        mem_mb=lambda w, attempt: 2000 * attempt,
        runtime=lambda w, attempt: 30 * attempt,
    log:
        "logs/check.log",
    shell:
        "TIMOE_LOG={log:q} timoe check --out {output:q} --params {params.resolved:q} > {log:q} 2>&1"
