rule train:
    input:
        unpack(lambda w: PIPE.inputs("train", w)),
    output:
        directory(PIPE.output("train")),
    threads: max(1, P.train.num_threads)
    params:
        reads=lambda w: PIPE.reads("train", w),
        resolved=RESOLVED_PATH,
        extra=lambda w, input: " ".join(
            f"--{k} {shlex.quote(input[k])}" for k in ("rus", "sweep") if k in input.keys()
        ),
        checkpoints="results/checkpoints/{dataset}/{model}/seed{seed}",
    # Slurm asks for these (memory and time grow with each retry); declared per rule so that
    # `--default-resources` on the command line cannot drop them. MiB, minutes.
    resources:
        mem_mb=lambda w, attempt: 4000 * attempt,
        runtime=lambda w, attempt: 120 * attempt,
    log:
        "logs/train/{dataset}/{model}/seed{seed}.log",
    shell:
        "TIMOE_LOG={log:q} timoe train --dataset {wildcards.dataset:q} --model {wildcards.model:q}"
        " --seed {wildcards.seed:q} --data {input.data:q} {params.extra} --checkpoints {params.checkpoints:q}"
        " --out {output:q} --params {params.resolved:q} > {log:q} 2>&1"
