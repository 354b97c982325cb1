"""The stage declarations (timoe.stage_specs) and what derives from them.

- dvc.yaml is exactly what `timoe dvc-yaml` generates from them;
- every stage, run for real in this process on params that record their reads, reads only the
  keys its declaration names (`reads`, or `schedules` for keys that only decide how it runs);
- the targets, the jobs' inputs and the sweep's study key follow the declarations.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from read_recorder import ReadLog
from sweep_support import SPACE, sweep_params
from timoe import stage_specs
from timoe.cli import app
from timoe.config import Params
from timoe.stage_specs import STAGES, covers, dvc_yaml_text, job_inputs, job_reads, study_values, targets

ROOT = Path(__file__).resolve().parents[1]
DATASET, MODEL = "basicmotions", "timoe"


def undeclared_reads(name: str, keys: set[str], params: Params, **wildcards: str) -> list[str]:
    """Keys read that the stage's declaration does not name (a dict read whole is allowed when a
    declared key lies inside it: `sweep.space.get(model)` reads the dict at sweep.space)."""
    spec = STAGES[name]
    declared = [*job_reads(spec, **wildcards), *spec.schedules]

    def is_dict(key: str) -> bool:  # a dict field (sweep.space), not a section dumped whole
        node: Any = params
        for part in key.split("."):
            node = node[part] if isinstance(node, dict) else getattr(node, part)
        return isinstance(node, dict)

    return sorted(
        k
        for k in keys
        if not covers(declared, k) and not (is_dict(k) and any(d.startswith(k + ".") for d in declared))
    )


def test_dvc_yaml_is_generated_from_the_declarations():
    assert (ROOT / "dvc.yaml").read_text() == dvc_yaml_text(), "run `timoe dvc-yaml`"


def test_dvc_yaml_check_fails_on_a_hand_edit(tmp_path: Path):
    runner = CliRunner()
    path = tmp_path / "dvc.yaml"
    assert runner.invoke(app, ["dvc-yaml", "--path", str(path)]).exit_code == 0
    assert runner.invoke(app, ["dvc-yaml", "--check", "--path", str(path)]).exit_code == 0
    path.write_text(path.read_text().replace("- results/rus\n", "", 1))
    result = runner.invoke(app, ["dvc-yaml", "--check", "--path", str(path)])
    assert result.exit_code == 2 and "differs from the stage declarations" in result.output


def test_dvc_stages_depend_on_every_upstream_output_and_imported_package():
    spec = stage_specs.dvc_stage(STAGES["evaluate"])
    assert {"results/models", "results/rus", "results/sweeps"} <= set(spec["deps"])
    train = stage_specs.dvc_stage(STAGES["train"])
    assert {"src/timoe/models", "src/timoe/training", "src/timoe/config.py"} <= set(train["deps"])
    quantify = stage_specs.dvc_stage(STAGES["quantify"])
    assert quantify["params"] == [{"params.used.yaml": ["rus", "data.seed"]}]


def test_code_deps_follow_imports_transitively():
    paths = stage_specs.module_imports("stages.prepare")
    assert "stages/prepare.py" in paths and "config.py" in paths
    assert any(p.startswith("data/") for p in paths)  # reached through timoe.data.prepare


def test_targets_and_inputs_follow_the_declarations(smoke_params: Params):
    assert targets(smoke_params, "quantify") == [f"results/rus/{d}" for d in smoke_params.data.datasets]
    n_train = len(smoke_params.data.datasets) * len(smoke_params.model.names) * len(smoke_params.train.seeds)
    assert len(targets(smoke_params, "train")) == n_train
    rus_models = {"timoe"}.__contains__
    train = job_inputs(smoke_params, "train", rus_models, dataset="hapt", model="timoe", seed="0")
    assert train == {
        "data": "data/processed/hapt",
        "rus": "results/rus/hapt",
        "sweep": "results/sweeps/hapt/timoe",
    }
    dense = job_inputs(smoke_params, "sweep", rus_models, dataset="hapt", model="transformer")
    assert dense == {"data": "data/processed/hapt"}
    evaluate = job_inputs(smoke_params, "evaluate", rus_models)
    assert evaluate["models"] == targets(smoke_params, "train")
    assert evaluate["sweeps"] == targets(smoke_params, "sweep")


def with_value(params: Params, dotted: str, value: Any) -> Params:
    raw = params.model_dump()
    node = raw
    *parents, leaf = dotted.split(".")
    for part in parents:
        node = node[part]
    node[leaf] = value
    return Params.model_validate(raw)


def test_the_study_key_holds_every_objective_setting(smoke_params: Params):
    """label_smoothing and augment were once left out of a hand-kept list of the key's fields."""
    base = study_values(smoke_params, "timoe")
    for key, value in [
        ("train.label_smoothing", 0.27),
        ("train.augment.jitter", 0.33),
        ("model.dropout", 0.37),
    ]:
        assert study_values(with_value(smoke_params, key, value), "timoe") != base, key
    for key, value in [
        ("sweep.n_trials", 99),
        ("sweep.n_workers", 3),
        ("train.num_threads", 4),
        ("train.epochs", 7),
    ]:
        assert study_values(with_value(smoke_params, key, value), "timoe") == base, key


def test_the_read_check_names_an_undeclared_read(smoke_params: Params):
    log = ReadLog()
    params = log.record(smoke_params)
    _ = params.data.seed, params.train.epochs, params.tracking.uri, params.model_dump()
    assert log.keys == {"data.seed", "train.epochs", "tracking.uri"}  # the root dump is the audit record
    _ = params.model.losses.model_dump()
    assert "model.losses" in log.keys
    assert undeclared_reads("prepare", log.keys, smoke_params, dataset=DATASET) == [
        "model.losses",
        "train.epochs",
    ]


# ---------------------------------------------------------------- every stage, reads recorded
@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Run prepare → quantify → sweep (driver, then one in-process worker) → train → evaluate."""
    from timoe.config import load_params

    smoke_params = load_params(ROOT / "params.yaml", ROOT / "workflow" / "smoke.yaml")
    root = tmp_path_factory.mktemp("stages")
    base = sweep_params(
        smoke_params,
        tracking_uri=f"sqlite:///{root / 'mlflow.db'}",
        n_trials=1,
        n_workers=1,
        epochs=1,
        space={MODEL: SPACE["transformer"]},
    )
    raw = base.model_dump()
    raw["data"]["datasets"] = [DATASET]
    raw["model"]["names"] = [MODEL]
    raw["train"] |= {"seeds": [0], "epochs": 1, "use_sweep": True}
    base = Params.model_validate(raw)
    logs: dict[str, ReadLog] = {}
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        yield _run_stages(base, root, logs, mp) | {"logs": logs, "params": base}


def _rerecording_overrides(mp: pytest.MonkeyPatch, current: dict[str, ReadLog | None]) -> None:
    """apply_overrides builds new params; keep recording through them into the running stage's log."""
    import timoe.overrides

    original = timoe.overrides.apply_overrides

    def recording_overrides(params: Params, overrides: dict[str, Any]) -> Params:
        made = original(params, overrides)
        log = current["log"]
        return log.record(made) if log else made

    for mod in [m for name, m in sys.modules.items() if name.startswith("timoe")]:
        if getattr(mod, "apply_overrides", None) is original:
            mp.setattr(mod, "apply_overrides", recording_overrides)


def _run_stages(base: Params, root: Path, logs: dict[str, ReadLog], mp: pytest.MonkeyPatch) -> dict[str, Any]:
    from timoe.stages.check import run_check
    from timoe.stages.evaluate import run_evaluate
    from timoe.stages.prepare import run_prepare
    from timoe.stages.quantify import run_quantify
    from timoe.stages.sweep import run_sweep, run_sweep_worker
    from timoe.stages.train import TrainJob, run_train

    current: dict[str, ReadLog | None] = {"log": None}
    _rerecording_overrides(mp, current)

    def rec(stage: str) -> Params:
        logs[stage] = current["log"] = ReadLog()
        return logs[stage].record(base)

    w = {"dataset": DATASET, "model": MODEL, "seed": "0"}
    path = {name: root / stage_specs.output_path(name, **w) for name in STAGES}
    run_prepare(rec("prepare"), dataset=DATASET, out_dir=path["prepare"])
    run_quantify(rec("quantify"), dataset=DATASET, data_dir=path["prepare"], out_dir=path["quantify"])
    where = {"dataset": DATASET, "model": MODEL, "data_dir": path["prepare"], "rus_dir": path["quantify"]}
    best = run_sweep(rec("sweep"), **where, out_dir=path["sweep"])
    logs["sweep-driver"] = logs["sweep"]
    storage = str(path["sweep"] / "study.journal")  # one more trial, in this process
    report = run_sweep_worker(rec("sweep"), **where, name=best["study"], storage=storage, n_trials=2)
    job = TrainJob(**{k: v for k, v in where.items() if k != "data_dir"}, seed=0, data_dir=path["prepare"],
                   out_dir=path["train"], sweep_dir=path["sweep"])  # fmt: skip
    run_train(rec("train"), job)
    run_check(rec("check"), out_dir=path["check"])
    upstream = {"rus_dirs": [path["quantify"]], "sweep_dirs": [path["sweep"]], "checks_dir": path["check"]}
    run_evaluate(rec("evaluate"), model_dirs=[path["train"]], out_dir=path["evaluate"], **upstream)
    return {"worker_trials": report.trials}


@pytest.mark.slow  # about 1 min: every stage once on BasicMotions
@pytest.mark.parametrize(
    "name", ["prepare", "quantify", "sweep-driver", "sweep", "train", "check", "evaluate"]
)
def test_each_stage_reads_only_what_it_declares(recorded: dict[str, Any], name: str):
    keys = recorded["logs"][name].keys
    assert keys, f"{name}: no read recorded (is the recorder wired in?)"
    stage = {"sweep-driver": "sweep"}.get(name, name)
    wildcards = {"dataset": DATASET, "model": MODEL}
    assert undeclared_reads(stage, keys, recorded["params"], **wildcards) == [], json.dumps(sorted(keys))


@pytest.mark.slow
def test_the_in_process_worker_ran_a_trial(recorded: dict[str, Any]):
    assert len(recorded["worker_trials"]) == 1  # so the objective's reads are in the sweep log


def test_every_schema_model_name_has_a_model_spec_and_back():
    """Model names are written in config.py (the schema) and keyed in models.MODEL_SPECS."""
    from timoe.config import MODEL_NAMES
    from timoe.models.model import MODEL_SPECS

    assert list(MODEL_SPECS) == list(MODEL_NAMES)
