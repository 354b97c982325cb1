rule evaluate:
    input:
        models=PIPE.all_model_outputs(),
        rus=expand("results/rus/{dataset}", dataset=P.data.datasets),
        sweeps=PIPE.all_sweep_outputs() if P.train.use_sweep else [],
        # optional inputs of claims the default runs cannot measure (`make checks` writes them)
        checks=[CHECKS_DIR] if Path(CHECKS_DIR).is_dir() else [],
    output:
        report(
            directory("results/benchmark"),
            patterns=["{name}.png"],
            caption="../report/benchmark.rst",
            category="Benchmark",
        ),
    params:
        reads=lambda w: PIPE.params_json("evaluate"),
        rus=lambda w, input: " ".join(f"--rus {shlex.quote(d)}" for d in input.rus),
        sweeps=lambda w, input: " ".join(f"--sweeps {shlex.quote(d)}" for d in input.sweeps),
        checks=lambda w, input: " ".join(f"--checks {shlex.quote(d)}" for d in input.checks),
    # Slurm asks for these (memory and time grow with each retry); declared per rule so that
    # `--default-resources` on the command line cannot drop them. MiB, minutes.
    resources:
        mem_mb=lambda w, attempt: 2000 * attempt,
        runtime=lambda w, attempt: 30 * attempt,
    log:
        "logs/evaluate.log",
    shell:
        "TIMOE_LOG={log:q} timoe evaluate {input.models:q} {params.rus} {params.sweeps} {params.checks} --out {output:q}"
        " --params {RESOLVED:q} > {log:q} 2>&1"
