rule quantify:
    input:
        data="data/processed/{dataset}",
    output:
        directory("results/rus/{dataset}"),
    params:
        reads=lambda w: PIPE.params_json("rus", "data.seed"),
    log:
        "logs/quantify/{dataset}.log",
    shell:
        "TIMOE_LOG={log} timoe quantify --dataset {wildcards.dataset} --data {input.data} --out {output}"
        " --params {RESOLVED} > {log} 2>&1"
