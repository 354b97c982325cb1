rule train:
    input:
        unpack(lambda w: PIPE.model_inputs(w.dataset, w.model, with_sweep=P.train.use_sweep)),
    output:
        directory("results/models/{dataset}/{model}/seed{seed}"),
    threads: max(1, P.train.num_threads)
    params:
        reads=lambda w: PIPE.params_json("model", "train", exclude=("train.seeds",)),
        extra=lambda w, input: " ".join(
            f"--{k} {input[k]}" for k in ("rus", "sweep") if k in input.keys()
        ),
        checkpoints="results/checkpoints/{dataset}/{model}/seed{seed}",
    log:
        "logs/train/{dataset}/{model}/seed{seed}.log",
    shell:
        "TIMOE_LOG={log} timoe train --dataset {wildcards.dataset} --model {wildcards.model}"
        " --seed {wildcards.seed} --data {input.data} {params.extra} --checkpoints {params.checkpoints}"
        " --out {output} --params {RESOLVED} > {log} 2>&1"
