"""Every data set reachable from params alone: `timoe prepare` on files in each official format.

For PAMAP2, WESAD, OPPORTUNITY and a bring-your-own data set, tiny files are written into the
test's folder, a params file lists only that data set with its (relative) path, and the real
CLI prepares it. Missing files end with exit 2, a message naming the params key and the path,
and no output folder.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
import yaml
from typer.testing import CliRunner

from test_data_external import write_pamap2_protocol, write_wesad_root
from test_opportunity import write_opportunity_folder
from timoe.cli import app
from timoe.config import DATASET_NAMES, ConfigError, dataset_key, validate
from timoe.data import load_prepared, prepare_dataset

CUSTOM_SPEC = {
    "name": "whatever-the-file-says",
    "n_timesteps": 4,
    "channels": ["a", "b", "c"],
    "modalities": {"left": [0, 1], "right": [2]},
    "classes": ["rest", "move"],
}


def write_custom_folder(root: Path) -> Path:
    """windows.parquet (10 windows of 4 steps x 3 channels, subjects 0-4) and dataset.json."""
    root.mkdir(parents=True)
    rng = np.random.default_rng(0)
    pl.DataFrame(
        {
            "subject": np.arange(10) % 5,
            "label": ["rest", "move"] * 5,
            "x": pl.Series(rng.normal(size=(10, 12)).astype(np.float32)).cast(pl.List(pl.Float32)),
        }
    ).write_parquet(root / "windows.parquet")
    (root / "dataset.json").write_text(json.dumps(CUSTOM_SPEC))
    return root


# name -> (folder under the work dir, writer, data section, params key of the path, expected meta)
CASES: dict[str, tuple[str, Callable[[Path], Path], dict[str, Any], str, dict[str, Any]]] = {
    "pamap2": (
        "PAMAP2_Dataset/Protocol",
        write_pamap2_protocol,
        {
            "pamap2": {
                "window": 20,
                "stride": 10,
                "classes": [1, 4],
                "val_subjects": [103],
                "test_subjects": [104],
            }
        },
        "data.pamap2.path",
        {
            "shape": (52, 20, 40),
            "classes": ["lying", "walking"],
            "split": {"train": 26, "val": 13, "test": 13},
            "modalities": {"heart_rate": 1, "hand": 13, "chest": 13, "ankle": 13},
        },
    ),
    "wesad": (
        "WESAD",
        write_wesad_root,
        {"wesad": {"window": 70, "stride": 35, "val_subjects": [4], "test_subjects": [5]}},
        "data.wesad.path",
        {
            "shape": (148, 70, 14),
            "classes": ["baseline", "stress", "amusement"],
            "split": {"train": 74, "val": 37, "test": 37},
            "modalities": {
                "chest_acc": 3,
                "chest_ecg": 1,
                "chest_emg": 1,
                "chest_eda": 1,
                "chest_temp": 1,
                "chest_resp": 1,
                "wrist_acc": 3,
                "wrist_bvp": 1,
                "wrist_eda": 1,
                "wrist_temp": 1,
            },
        },
    ),
    "opportunity": (
        "OpportunityUCIDataset/dataset",
        write_opportunity_folder,
        {"opportunity": {"window": 20, "stride": 10}},
        "data.opportunity.path",
        {
            "shape": (64, 20, 112),  # 113 body-worn channels, one dead in a run (dropped)
            "classes": ["Stand", "Walk", "Sit", "Lie"],
            "split": {"train": 32, "val": 16, "test": 16},
            "modalities": {"body_acc": 35, "body_imu": 45, "shoes": 32},
        },
    ),
    "my-windows": (
        "byo/my_windows",
        write_custom_folder,
        {"custom": {"my-windows": {"val_subjects": [3], "test_subjects": [4]}}},
        "data.custom.my-windows.path",
        {
            "shape": (10, 4, 3),
            "classes": ["rest", "move"],
            "split": {"train": 6, "val": 2, "test": 2},
            "modalities": {"left": 2, "right": 1},
        },
    ),
}


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> str:
    """One MLflow store for the module (absolute: MLflow caches a store per URI)."""
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"


def write_params(work: Path, name: str, folder: str, store: str) -> Path:
    """params.yaml listing only `name`, its files at `folder` (relative to the work folder)."""
    section = CASES[name][2]
    data: dict[str, Any] = {"datasets": [name], **json.loads(json.dumps(section))}
    node = data["custom"][name] if name in data.get("custom", {}) else data[dataset_key(name)]
    node["path"] = folder
    path = work / "params.yaml"
    path.write_text(yaml.safe_dump({"data": data, "tracking": {"uri": store}}))
    return path


def prepare(name: str) -> tuple[int, str]:
    result = CliRunner().invoke(
        app, ["prepare", "--dataset", name, "--out", "out", "--params", "params.yaml"]
    )
    return result.exit_code, result.output


@pytest.mark.parametrize("name", list(CASES))
def test_prepare_from_params(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, store: str) -> None:
    folder, writer, _, _, expected = CASES[name]
    writer(tmp_path / folder)
    write_params(tmp_path, name, folder, store)
    monkeypatch.chdir(tmp_path)  # paths in params are relative to the working directory
    code, output = prepare(name)
    assert code == 0, output
    data = load_prepared(tmp_path / "out")
    assert data.meta["dataset"] == name
    assert data.x.shape == expected["shape"]
    assert data.classes == expected["classes"]
    assert data.meta["counts"]["split"] == expected["split"]
    assert {k: len(v) for k, v in data.modalities.items()} == expected["modalities"]
    assert data.meta["sources"]["sha256"]  # every source file hashed


@pytest.mark.parametrize("name", list(CASES))
def test_missing_files_exit_2(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, store: str) -> None:
    key = CASES[name][3]
    write_params(tmp_path, name, "not/downloaded", store)
    monkeypatch.chdir(tmp_path)
    code, output = prepare(name)
    assert code == 2, output
    assert f"{key}: not/downloaded not found" in output, output
    assert "Traceback" not in output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml"]  # no output, no store


def test_empty_folder_names_what_it_lacks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, store: str
) -> None:
    (tmp_path / "Protocol").mkdir()
    write_params(tmp_path, "pamap2", "Protocol", store)
    monkeypatch.chdir(tmp_path)
    code, output = prepare("pamap2")
    assert code == 2, output
    assert "data.pamap2.path: Protocol holds no subject*.dat file" in output
    assert "UCI repository" in output
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------ the schema
def test_defaults_list_no_downloaded_data_set() -> None:
    assert validate({}).data.datasets == ["hapt", "basicmotions"]


@pytest.mark.parametrize(
    ("data", "fragments"),
    [
        ({"datasets": ["nope"]}, ["data.datasets.0", "'nope'", "hapt", "opportunity", "data.custom []"]),
        (
            {"datasets": ["hapt", "mine2"], "custom": {"mine": {"path": "x"}}},
            ["data.datasets.1", "'mine2'", "data.custom ['mine']"],
        ),
        ({"datasets": ["wesad"]}, ["data.wesad.path is not set", "download WESAD"]),
        ({"datasets": ["opportunity"]}, ["data.opportunity.path is not set", "OPPORTUNITY"]),
        ({"custom": {"HAPT": {"path": "x"}}}, ["data.custom", "clashes with the built-in data set 'hapt'"]),
        (
            {"custom": {"synthetic_regimes": {"path": "x"}}},
            ["clashes with the built-in data set 'synthetic-regimes'"],
        ),
        ({"custom": {"a": {"path": "x"}, "A": {"path": "y"}}}, ["'A' clashes with the custom data set 'a'"]),
        ({"custom": {"../up": {"path": "x"}}}, ["'../up'", "letters, digits, '-' and '_'"]),
        ({"custom": {"mine": {}}}, ["data.custom.mine.path", "Field required"]),
        ({"custom": {"mine": {"path": "x", "window": 4}}}, ["data.custom.mine.window", "unknown key"]),
        ({"pamap2": {"path": "p", "val_subjects": [1], "test_subjects": [1]}}, ["data.pamap2", "overlap"]),
        ({"opportunity": {"modalities": ["objects"]}}, ["data.opportunity.modalities", "at least two"]),
        ({"opportunity": {"label": "gestures"}}, ["data.opportunity.label"]),
        ({"wesad": {"devices": ["ankle"]}}, ["data.wesad.devices"]),
    ],
)
def test_data_section_errors_name_the_key(data: dict[str, Any], fragments: list[str]) -> None:
    with pytest.raises(ConfigError) as info:
        validate({"data": data})
    for fragment in fragments:
        assert fragment in str(info.value), str(info.value)


def test_windows_from_params_must_fit_the_model() -> None:
    data = {"datasets": ["opportunity"], "opportunity": {"path": "o", "window": 16, "stride": 8}}
    with pytest.raises(ConfigError, match=r"rus.lags \[16\] are not shorter than data.opportunity.window"):
        validate({"data": data})


def test_params_keys_of_data_sets() -> None:
    assert [dataset_key(n) for n in DATASET_NAMES] == [
        "hapt",
        "basicmotions",
        "synthetic_regimes",
        "pamap2",
        "wesad",
        "opportunity",
    ]
    assert dataset_key("my-windows") == "custom.my-windows"


def test_window_known_only_from_the_files_is_checked_at_train(tmp_path: Path) -> None:
    # params cannot know a bring-your-own window (dataset.json n_timesteps = 4): prepare passes,
    # the train stage's model build refuses a longer patch with a ConfigError (exit 2), no crash
    from timoe.training.build import build_for_data

    write_custom_folder(tmp_path / "byo")
    section = {"path": str(tmp_path / "byo"), "val_subjects": [3], "test_subjects": [4]}
    params = validate(
        {"data": {"datasets": ["mine"], "custom": {"mine": section}}, "model": {"patch_size": 8}}
    )
    prepare_dataset("mine", params.data, tmp_path / "out")
    with pytest.raises(ConfigError, match=r"model\.patch_size 8 exceeds the window of 4 steps"):
        build_for_data(params, "transformer", load_prepared(tmp_path / "out").meta, None, 0)


def test_claims_cover_a_bring_your_own_data_set() -> None:
    from timoe.evaluation.claims import evaluate_claims

    runs = pl.DataFrame(
        {
            "dataset": ["my-windows"] * 6,
            "model": ["timoe"] * 3 + ["moe"] * 3,
            "seed": [0, 1, 2] * 2,
            "accuracy": [0.9, 0.91, 0.92, 0.8, 0.81, 0.82],
        }
    )
    table = evaluate_claims(runs)
    assert "my-windows" in set(table["dataset"].to_list())
