"""A data set's own settings (model.per_dataset, train.per_dataset) reach its train job: the run
records and trains with them, and the shared values stay for every other data set."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from timoe.config import Params


@pytest.fixture(scope="module")
def basicmotions(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from timoe.config import DataConfig
    from timoe.data import prepare_dataset

    out = tmp_path_factory.mktemp("bm") / "prepared"
    prepare_dataset("basicmotions", DataConfig(), out)
    return out


def test_a_train_job_runs_and_records_its_data_sets_own_settings(basicmotions: Path, tmp_path: Path) -> None:
    import mlflow

    from timoe.stages.train import TrainJob, run_train

    raw = Params().model_dump()
    raw["data"]["datasets"] = ["basicmotions"]
    raw["tracking"]["uri"] = f"sqlite:///{tmp_path / 'mlflow.db'}"
    small = {"d_model": 8, "n_heads": 2, "d_ff": 16, "n_layers": 1, "moe_layers": [0]}
    raw["model"] |= small | {"patch_size": 4}
    raw["model"]["per_dataset"] = {"basicmotions": {"patch_size": 10}, "hapt": {"patch_size": 8}}
    raw["train"] |= {"epochs": 1, "use_sweep": False, "max_train_windows": 30}
    raw["train"]["per_dataset"] = {"basicmotions": {"max_train_windows": 12}}
    out = tmp_path / "run"
    job = TrainJob(dataset="basicmotions", model="transformer", seed=0, data_dir=basicmotions, out_dir=out)
    run_train(Params.model_validate(raw), job)

    run_id = json.loads((out / "metrics.json").read_text())["run_id"]
    mlflow.set_tracking_uri(raw["tracking"]["uri"])
    logged = mlflow.get_run(run_id).data.params
    assert logged["model.patch_size"] == "10" and logged["train.max_train_windows"] == "12"
    # the per_dataset maps are recorded too, so a change to them reruns the job
    assert "hapt" in json.dumps({k: v for k, v in logged.items() if "per_dataset" in k})
    import torch

    state = torch.load(out / "model.pt", map_location="cpu", weights_only=True)
    weight = next(v for k, v in state["state_dict"].items() if k.endswith("weight") and v.ndim == 2)
    # BasicMotions' modalities have 3 channels: a patch of 10 steps embeds 30 inputs, not 12
    assert 30 in weight.shape
