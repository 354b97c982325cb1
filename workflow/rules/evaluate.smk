rule evaluate:
    input:
        **PIPE.inputs("evaluate"),
    output:
        report(
            directory(PIPE.output("evaluate")),
            patterns=["{name}.png"],
            caption="../report/benchmark.rst",
            category="Benchmark",
        ),
    params:
        reads=lambda w: PIPE.reads("evaluate", w),
        resolved=RESOLVED_PATH,
        rus=lambda w, input: " ".join(f"--rus {shlex.quote(d)}" for d in input.rus),
        sweeps=lambda w, input: " ".join(f"--sweeps {shlex.quote(d)}" for d in getattr(input, "sweeps", [])),
        checks=lambda w, input: f"--checks {shlex.quote(input.checks)}",
    # Slurm asks for these (memory and time grow with each retry); declared per rule so that
    # `--default-resources` on the command line cannot drop them. MiB, minutes.
    resources:
        mem_mb=lambda w, attempt: 2000 * attempt,
        runtime=lambda w, attempt: 30 * attempt,
    log:
        "logs/evaluate.log",
    shell:
        "TIMOE_LOG={log:q} timoe evaluate {input.models:q} {params.rus} {params.sweeps} {params.checks} --out {output:q}"
        " --params {params.resolved:q} > {log:q} 2>&1"
