rule evaluate:
    input:
        models=PIPE.all_model_outputs(),
    output:
        directory("results/benchmark"),
    params:
        reads=lambda w: PIPE.params_json("evaluate"),
    log:
        "logs/evaluate.log",
    shell:
        "TIMOE_LOG={log} timoe evaluate {input.models} --out {output} --params {RESOLVED} > {log} 2>&1"
