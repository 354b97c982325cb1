rule sweep:
    input:
        unpack(lambda w: PIPE.inputs("sweep", w)),
    output:
        directory(PIPE.output("sweep")),
    threads: P.sweep.n_workers
    params:
        reads=lambda w: PIPE.reads("sweep", w),
        resolved=RESOLVED_PATH,
        rus=lambda w, input: f"--rus {shlex.quote(input.rus)}" if "rus" in input.keys() else "",
    # Slurm asks for these (memory and time grow with each retry); declared per rule so that
    # `--default-resources` on the command line cannot drop them. MiB, minutes.
    resources:
        mem_mb=lambda w, attempt: 4000 * attempt,
        runtime=lambda w, attempt: 240 * attempt,
    log:
        "logs/sweep/{dataset}/{model}.log",
    shell:
        "TIMOE_LOG={log:q} timoe sweep --dataset {wildcards.dataset:q} --model {wildcards.model:q}"
        " --data {input.data:q} {params.rus} --out {output:q} --params {params.resolved:q} > {log:q} 2>&1"
