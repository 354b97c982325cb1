rule prepare:
    output:
        directory("data/processed/{dataset}"),
    params:
        reads=lambda w: PIPE.params_json("data.seed", f"data.{dataset_key(w.dataset)}"),
    log:
        "logs/prepare/{dataset}.log",
    shell:
        "TIMOE_LOG={log} timoe prepare --dataset {wildcards.dataset} --out {output} --params {RESOLVED} > {log} 2>&1"
