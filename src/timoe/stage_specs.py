"""One declaration per pipeline stage: the params it reads, its inputs and its output.

Everything that used to repeat these facts derives from `STAGES`:
- the Snakemake rules' paths and their `reads` rerun trigger (workflow/rules/*.smk via
  timoe.workflow_support.Pipeline);
- the targets of a stage (`timoe targets STAGE`, which dvc.yaml's commands call);
- the sweep's study key (timoe.stages.sweep: the sweep's reads, less the keys that only schedule
  trials);
- dvc.yaml itself (`timoe dvc-yaml` writes it; a test fails when the committed file differs),
  whose code deps are the source files each stage's module imports, found by reading them.

`reads` are dotted keys of params.yaml whose values change what a stage computes: a change
reruns the stage. `schedules` are keys it reads that only decide how or where it runs, or where
its run is recorded (threads, storage, tracking): no rerun. A stage that reads a key declared in
neither fails tests/test_stage_specs.py, which records every key each stage reads.
"""

from __future__ import annotations

import ast
import json
import string
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from timoe.config import Params, dataset_key, is_swept, runs_on

SRC = Path(__file__).resolve().parent  # src/timoe
Needs = Literal["always", "rus", "sweep"]  # when an input is wired in: always, RUS models, use_sweep
# Where every stage's run is recorded; read by all, changes no result.
RECORD_KEYS = ("tracking",)


@dataclass(frozen=True)
class StageInput:
    name: str
    stage: str  # the stage whose output this is
    needs: Needs = "always"


@dataclass(frozen=True)
class StageSpec:
    name: str
    output: str  # path template over the wildcards, e.g. "results/rus/{dataset}"
    reads: tuple[str, ...]  # may hold wildcards, and "{dataset_section}": <key> or custom.<name>
    schedules: tuple[str, ...] = ()
    inputs: tuple[StageInput, ...] = ()
    not_in_study: tuple[str, ...] = ()  # sweep only: reads that change the study's length, not its trials
    exclude: tuple[str, ...] = ()  # leaves inside a read section that are not read (train.seeds)
    swept_only: bool = False  # a job per swept model only (config.is_swept: not the reference models)
    module: str = ""  # timoe.stages.<module>; its imports are the stage's code deps
    wildcards: tuple[str, ...] = field(init=False, default=())

    def __post_init__(self) -> None:
        names = tuple(f for _, f, _, _ in string.Formatter().parse(self.output) if f)
        object.__setattr__(self, "wildcards", names)
        object.__setattr__(self, "module", self.module or self.name)


_OBJECTIVE_TRAIN = tuple(
    f"train.{k}"
    for k in (
        "batch_size",
        "lr",
        "weight_decay",
        "grad_clip",
        "warmup_epochs",
        "max_train_windows",
        "label_smoothing",
        "augment",
    )
)
_SWEEP_OBJECTIVE = tuple(
    f"sweep.{k}"
    for k in ("epochs", "seed", "metric", "pruning", "pruner_startup_trials", "pruner_warmup_epochs")
)

STAGES: dict[str, StageSpec] = {
    s.name: s
    for s in (
        StageSpec(
            name="prepare",
            output="data/processed/{dataset}",
            reads=("data.seed", "data.{dataset_section}"),
            schedules=RECORD_KEYS,
        ),
        StageSpec(
            name="quantify",
            output="results/rus/{dataset}",
            reads=("rus", "data.seed"),
            schedules=RECORD_KEYS,
            inputs=(StageInput("data", "prepare"),),
        ),
        StageSpec(
            name="sweep",
            output="results/sweeps/{dataset}/{model}",
            reads=(
                "sweep.space.{model}",
                *_SWEEP_OBJECTIVE,
                "sweep.n_trials",
                "sweep.n_workers",
                "model",
                *_OBJECTIVE_TRAIN,
                "train.device",
            ),
            # n_trials extends a study and workers share one; a study may mix CPU and GPU workers
            not_in_study=("sweep.n_trials", "sweep.n_workers", "train.device"),
            schedules=(
                *RECORD_KEYS,
                "sweep.storage",
                "sweep.slurm_array",
                "sweep.heartbeat_s",
                "train.num_threads",
            ),
            inputs=(StageInput("data", "prepare"), StageInput("rus", "quantify", "rus")),
            swept_only=True,
        ),
        StageSpec(
            name="train",
            output="results/models/{dataset}/{model}/seed{seed}",
            reads=("model", "train"),
            # the seed is the job's wildcard. Threads stay a read: a CPU reduction split over
            # another number of threads may round differently.
            exclude=("train.seeds",),
            schedules=RECORD_KEYS,
            inputs=(
                StageInput("data", "prepare"),
                StageInput("rus", "quantify", "rus"),
                StageInput("sweep", "sweep", "sweep"),
            ),
        ),
        StageSpec(
            # estimator checks on data with known RUS: the input of the claims no study run measures
            name="check",
            output="results/checks",
            reads=("checks",),
            schedules=RECORD_KEYS,
        ),
        StageSpec(
            name="evaluate",
            output="results/benchmark",
            reads=("evaluate",),
            schedules=RECORD_KEYS,
            inputs=(
                StageInput("models", "train"),
                StageInput("rus", "quantify"),
                StageInput("sweeps", "sweep", "sweep"),
                StageInput("checks", "check"),
            ),
        ),
    )
}


def stage(name: str) -> StageSpec:
    try:
        return STAGES[name]
    except KeyError:
        raise ValueError(f"unknown stage {name!r}; known: {list(STAGES)}") from None


def job_reads(spec: StageSpec, **wildcards: str) -> tuple[str, ...]:
    """The stage's reads with the job's wildcards filled in (sweep.space.{model} -> sweep.space.timoe)."""
    fill = dict(wildcards)
    if "dataset" in fill:
        fill["dataset_section"] = dataset_key(fill["dataset"])
    return tuple(k.format(**fill) for k in spec.reads)


def _get(tree: Any, dotted: str) -> Any:
    node = tree
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None  # a section that is absent (a model without a search space) reads as nothing
        node = node[part]
    return node


def read_values(
    params: Params, spec: StageSpec, *, omit: Iterable[str] = (), **wildcards: str
) -> dict[str, Any]:
    """{key: value} of the job's reads (less `omit` and the spec's excluded leaves), JSON-ready."""
    tree = params.model_dump(mode="json")
    skip = set(omit)
    picked = {k: _get(tree, k) for k in job_reads(spec, **wildcards) if k not in skip}
    for ex in spec.exclude:
        key, _, leaf = ex.rpartition(".")
        if isinstance(picked.get(key), dict):
            picked[key].pop(leaf, None)
    return picked


def recorded_config(params: Params, name: str, **wildcards: str) -> dict[str, Any]:
    """The job's read values nested as in params.yaml: what its MLflow run records as its config."""
    nested: dict[str, Any] = {}
    for dotted, value in read_values(params, stage(name), **wildcards).items():
        *parents, leaf = dotted.split(".")
        node = nested
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return nested


def reads_json(params: Params, name: str, **wildcards: str) -> str:
    """The job's read values as one stable string: Snakemake's params rerun trigger."""
    return json.dumps(read_values(params, stage(name), **wildcards), sort_keys=True)


def study_values(params: Params, model: str) -> dict[str, Any]:
    """What a sweep trial's result depends on: the sweep's reads less those that only schedule it."""
    spec = stage("sweep")
    omit = {k.format(model=model) for k in spec.not_in_study}
    return {"model_name": model, **read_values(params, spec, omit=omit, model=model)}


def covers(declared: Iterable[str], key: str) -> bool:
    """Whether a read of `key` is inside a declared key (the key itself or a section above it)."""
    return any(key == d or key.startswith(d + ".") for d in declared)


# ------------------------------------------------------------------ paths and targets
def output_path(name: str, **wildcards: Any) -> str:
    return stage(name).output.format(**wildcards)


def targets(params: Params, name: str) -> list[str]:
    """Every output path of a stage for these params (the study's jobs of that stage)."""
    spec = stage(name)
    d, s = params.data.datasets, params.train.seeds
    m = [y for y in params.model.names if is_swept(y)] if spec.swept_only else params.model.names
    jobs: dict[tuple[str, ...], Callable[[], Iterable[dict[str, Any]]]] = {
        (): lambda: [{}],
        ("dataset",): lambda: ({"dataset": x} for x in d),
        ("dataset", "model"): lambda: ({"dataset": x, "model": y} for x in d for y in m if runs_on(y, x)),
        ("dataset", "model", "seed"): lambda: (
            {"dataset": x, "model": y, "seed": z} for x in d for y in m if runs_on(y, x) for z in s
        ),
    }
    return [spec.output.format(**w) for w in jobs[spec.wildcards]()]


def job_inputs(
    params: Params, name: str, needs_rus: Callable[[str], bool], **wildcards: str
) -> dict[str, str | list[str]]:
    """The inputs one job of a stage needs, by name.

    An upstream stage whose wildcards the job has gives one path (the same data set, model);
    one with wildcards the job lacks gives every output of it in the study (evaluate's inputs).
    """
    model = wildcards.get("model", "")
    # evaluate (no model wildcard) takes every sweep output there is; targets() leaves out unswept models
    wired = {"always": True, "rus": needs_rus(model), "sweep": params.train.use_sweep and is_swept(model)}
    inputs: dict[str, str | list[str]] = {}
    for inp in stage(name).inputs:
        if not wired[inp.needs]:
            continue
        upstream = stage(inp.stage)
        if set(upstream.wildcards) <= set(wildcards):
            inputs[inp.name] = upstream.output.format(**{w: wildcards[w] for w in upstream.wildcards})
        else:
            inputs[inp.name] = targets(params, inp.stage)
    return inputs


# ------------------------------------------------------------------ dvc.yaml
def module_imports(module: str) -> set[str]:
    """The timoe source paths (relative to src/timoe) that `timoe.<module>` imports, transitively."""
    seen: set[str] = set()
    todo = [module]
    while todo:
        mod = todo.pop()
        path = _module_path(mod)
        if path is None or path in seen:
            continue
        seen.add(path)
        if "/" in path:  # importing a package's module runs the package's __init__ first
            todo.append(path.split("/")[0])
        file = SRC / path if path.endswith(".py") else SRC / path / "__init__.py"
        todo += _timoe_imports(file)
    return seen


def _module_path(mod: str) -> str | None:
    parts = mod.split(".")
    for n in range(len(parts), 0, -1):
        rel = Path(*parts[:n])
        if (SRC / rel).with_suffix(".py").is_file():
            return str(rel.with_suffix(".py"))
        if (SRC / rel / "__init__.py").is_file():
            return str(rel)
    return None


def _timoe_imports(file: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(file.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "timoe":
            found.append(node.module.removeprefix("timoe").lstrip("."))
            found += [
                f"{node.module.removeprefix('timoe').lstrip('.')}.{a.name}".lstrip(".") for a in node.names
            ]
        elif isinstance(node, ast.Import):
            found += [
                a.name.removeprefix("timoe").lstrip(".")
                for a in node.names
                if a.name.split(".")[0] == "timoe"
            ]
    return [f for f in found if f]


def code_deps(spec: StageSpec) -> list[str]:
    """src/ paths whose change reruns the stage: its module and everything it imports.

    A package counts whole (src/timoe/models, not its files), so a new file inside one is covered.
    """
    paths = module_imports(f"stages.{spec.module}")
    packages = {p.split("/")[0] for p in paths if "/" in p or (SRC / p).is_dir()} - {"stages"}
    files = {p for p in paths if p.endswith(".py") and "/" not in p}
    own = f"stages/{spec.module}.py"
    shared = {p for p in paths if p.startswith("stages/") and p.endswith(".py")} - {own}
    return [f"src/timoe/{p}" for p in [*sorted(packages), *sorted(files), own, *sorted(shared)]]


DVC_HEADER = """\
# GENERATED by `timoe dvc-yaml` from timoe/stage_specs.py: edit that, not this file
# (tests/test_stage_specs.py fails when the two differ).
# DVC's view of the pipeline: each stage runs its Snakemake targets. Snakemake executes (and
# skips what is up to date); DVC versions the outputs. After a successful `snakemake` run the
# Snakefile's onsuccess hook runs `dvc commit -f`, so dvc.lock matches the outputs.
# No `persist: true`: it let DVC record stale results (see the README's design section).
# Stage params come from params.used.yaml, the validated params of the last successful run
# (overrides included), which the hook writes just before `dvc commit`: so dvc.lock records the
# values the outputs were made with. params.yaml is a dep, so editing it still marks the stages.
# Code deps are the source the stage's module imports (packages whole).
"""


def output_root(spec: StageSpec) -> str:
    """The folder holding every job's output of a stage: the template cut at its first wildcard."""
    return spec.output.split("{")[0].rstrip("/") if spec.wildcards else spec.output


def _dvc_param_key(key: str) -> str:
    # DVC params are static: a key with a wildcard counts whole up to it (sweep.space.{model} -> sweep.space).
    return key.split("{")[0].rstrip(".")


def dvc_stage(spec: StageSpec) -> dict[str, Any]:
    targets_cmd = f"$(python -m timoe targets {spec.name})" if spec.wildcards else spec.output
    upstream = [output_root(stage(i.stage)) for i in spec.inputs]
    static = list(dict.fromkeys(_dvc_param_key(k) for k in spec.reads))
    keys = [k for k in static if not covers([d for d in static if d != k], k)]
    return {
        "cmd": f"snakemake --cores all --allowed-rules {spec.name} -- {targets_cmd}",
        "deps": ["params.yaml", *dict.fromkeys(upstream), *code_deps(spec)],
        "params": [{USED_PARAMS_FILE: keys}],
        "outs": [output_root(spec)],
    }


USED_PARAMS_FILE = "params.used.yaml"  # the params of the last successful run, beside dvc.lock


def dvc_yaml_text() -> str:
    """dvc.yaml as generated from STAGES."""
    import yaml

    body = yaml.safe_dump(
        {"stages": {n: dvc_stage(s) for n, s in STAGES.items()}}, sort_keys=False, width=120
    )
    return DVC_HEADER + body
