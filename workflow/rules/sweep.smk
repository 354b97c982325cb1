rule sweep:
    input:
        unpack(lambda w: PIPE.model_inputs(w.dataset, w.model, with_sweep=False)),
    output:
        directory("results/sweeps/{dataset}/{model}"),
    threads: P.sweep.n_workers
    params:
        reads=lambda w: PIPE.params_json(
            "sweep", "model", "train.batch_size", "train.lr", "train.weight_decay", "train.grad_clip",
            "train.warmup_epochs", "train.max_train_windows", "train.device", "train.label_smoothing",
            "train.augment",
        ),
        rus=lambda w, input: f"--rus {input.rus}" if "rus" in input.keys() else "",
    log:
        "logs/sweep/{dataset}/{model}.log",
    shell:
        "TIMOE_LOG={log} timoe sweep --dataset {wildcards.dataset} --model {wildcards.model}"
        " --data {input.data} {params.rus} --out {output} --params {RESOLVED} > {log} 2>&1"
