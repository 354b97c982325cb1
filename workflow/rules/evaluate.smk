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
        rus=lambda w, input: " ".join(f"--rus {d}" for d in input.rus),
        sweeps=lambda w, input: " ".join(f"--sweeps {d}" for d in input.sweeps),
        checks=lambda w, input: " ".join(f"--checks {d}" for d in input.checks),
    log:
        "logs/evaluate.log",
    shell:
        "TIMOE_LOG={log} timoe evaluate {input.models} {params.rus} {params.sweeps} {params.checks} --out {output}"
        " --params {RESOLVED} > {log} 2>&1"
