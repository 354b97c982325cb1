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
        " --data {input.data:q} {params.rus} --out {output:q} --params {RESOLVED:q} > {log:q} 2>&1"
