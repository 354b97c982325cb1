"""Malformed data through the real CLI: exit 2, one line naming the file, nothing written.

Two tables. PREPARED: a tiny prepared data set (meta.json, windows.parquet) damaged after
prepare, then read by `timoe train`. SOURCE: a bring-your-own data set (dataset.json,
windows.parquet) damaged before `timoe prepare`. Every case must stop before a model is
trained or an MLflow run is opened (the default tracking URI is relative to the work folder,
so a store would show there).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
from typer.testing import CliRunner

from timoe.cli import app
from timoe.config import CustomDatasetConfig, DataConfig
from timoe.data import DATASETS, prepare_dataset
from timoe.data.base import WindowedDataset

PARAMS = """\
model:
  names: [transformer]
  patch_size: 1
  d_model: 8
  n_heads: 2
  d_ff: 16
  n_layers: 1
  moe_layers: [0]
train: {seeds: [0], epochs: 1, batch_size: 8, use_sweep: false, device: cpu}
"""
Mutation = Callable[[Path], None]


def tracking(root: Path) -> str:
    """An MLflow store in the test's folder. Absolute: MLflow caches a store per URI, so a
    relative one could point at an earlier test's folder and hide a run opened by mistake."""
    return f"tracking: {{uri: 'sqlite:///{root / 'mlflow.db'}'}}\n"


# ------------------------------------------------------------------ a tiny prepared data set
def _toy(cfg: DataConfig) -> WindowedDataset:
    """12 windows of 5 steps x 3 channels; subjects 0-5 (train 0-3, val 4, test 5)."""
    rng = np.random.default_rng(0)
    n, t = 12, 5
    subject = np.repeat(np.arange(6), 2).astype(np.int32)
    label = (np.arange(n) % 2).astype(np.int32)
    return WindowedDataset(
        name="toy",
        x=rng.normal(size=(n, t, 3)).astype(np.float32),
        label=label,
        step_labels=np.repeat(label[:, None], t, axis=1),
        subject=subject,
        recording=subject.copy(),
        start=np.tile([0, 5], 6).astype(np.int32),
        split=np.array(["train"] * 8 + ["val"] * 2 + ["test"] * 2),
        channels=["a", "b", "c"],
        modalities={"m1": [0, 1], "m2": [2]},
        classes=["neg", "pos"],
        sources={"toy": "0" * 64},
        config={"seed": cfg.seed},
    )


def meta(key: str, value: Any) -> Mutation:
    def mutate(d: Path) -> None:
        m = json.loads((d / "meta.json").read_text())
        m[key] = value
        (d / "meta.json").write_text(json.dumps(m))

    return mutate


def x_values(value: float) -> Mutation:
    def mutate(d: Path) -> None:
        frame = pl.read_parquet(d / "windows.parquet")
        x = frame["x"].explode().to_numpy().reshape(len(frame), -1).copy()
        x[3, 4] = value
        frame.with_columns(pl.Series("x", x).cast(pl.List(pl.Float32))).write_parquet(d / "windows.parquet")

    return mutate


def subject_shared(d: Path) -> None:
    frame = pl.read_parquet(d / "windows.parquet")
    moved = pl.when(pl.col("split") == "val").then(0).otherwise(pl.col("subject")).cast(pl.Int32)
    frame.with_columns(moved.alias("subject")).write_parquet(d / "windows.parquet")


PREPARED: list[tuple[str, Mutation, str]] = [
    ("modality-index-out-of-range", meta("modalities", {"m1": [0, 1], "m2": [5]}), "meta.json: modalities"),
    ("modality-index-negative", meta("modalities", {"m1": [0, 1], "m2": [-1]}), "meta.json: modalities"),
    ("modality-map-empty", meta("modalities", {}), "meta.json: modalities"),
    ("modality-map-list", meta("modalities", [[0, 1], [2]]), "meta.json: modalities"),
    ("modality-map-string", meta("modalities", "m1"), "meta.json: modalities"),
    ("modality-string-indices", meta("modalities", {"m1": ["0", "1"], "m2": ["2"]}), "meta.json: modalities"),
    ("modality-float-indices", meta("modalities", {"m1": [0.0, 1.0], "m2": [2.0]}), "meta.json: modalities"),
    ("modality-bool-indices", meta("modalities", {"m1": [False, True], "m2": [2]}), "meta.json: modalities"),
    ("modality-empty-list", meta("modalities", {"m1": [0, 1, 2], "m2": []}), "meta.json: modalities"),
    ("modality-overlap", meta("modalities", {"m1": [0, 1], "m2": [1, 2]}), "meta.json: modalities"),
    ("modality-misses-channel", meta("modalities", {"m1": [0], "m2": [2]}), "meta.json: modalities"),
    ("modality-indices-not-list", meta("modalities", {"m1": 0, "m2": [1, 2]}), "meta.json: modalities"),
    ("classes-string", meta("classes", "ab"), "meta.json: classes"),
    ("classes-empty", meta("classes", []), "meta.json: classes"),
    ("classes-duplicate", meta("classes", ["neg", "neg"]), "meta.json: classes"),
    ("classes-numbers", meta("classes", [0, 1]), "meta.json: classes"),
    ("channels-string", meta("channels", "abc"), "meta.json: channels"),
    ("channels-numbers", meta("channels", [1, 2, 3]), "meta.json: channels"),
    ("counts-not-mapping", meta("counts", []), "meta.json: counts"),
    ("n-timesteps-bool", meta("n_timesteps", True), "meta.json: n_timesteps"),
    ("nan-in-x", x_values(float("nan")), "windows.parquet: column x"),
    ("inf-in-x", x_values(float("inf")), "windows.parquet: column x"),
    ("subject-in-two-splits", subject_shared, "windows.parquet: subject"),
]


@pytest.fixture
def prepared(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setitem(DATASETS, "toy", _toy)
    prepare_dataset("toy", DataConfig(), tmp_path / "prepared")
    (tmp_path / "params.yaml").write_text(PARAMS + tracking(tmp_path))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def run_cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.output  # click >= 8.2: stdout and stderr interleaved


def train_args() -> list[str]:
    return [
        "train",
        "--dataset",
        "basicmotions",
        "--model",
        "transformer",
        "--seed",
        "0",
        "--data",
        "prepared",
        "--out",
        "model",
        "-p",
        "params.yaml",
    ]


@pytest.mark.parametrize(("mutate", "fragment"), [c[1:] for c in PREPARED], ids=[c[0] for c in PREPARED])
def test_malformed_prepared_data_fails_cleanly(prepared: Path, mutate: Mutation, fragment: str) -> None:
    mutate(prepared / "prepared")
    code, output = run_cli(*train_args())
    assert code == 2, output
    assert fragment in output, output
    assert "Traceback" not in output
    assert sorted(p.name for p in prepared.iterdir()) == ["params.yaml", "prepared"]


# ------------------------------------------------------------------ a bring-your-own source
SPEC: dict[str, Any] = {
    "name": "mine",
    "n_timesteps": 4,
    "channels": ["a", "b", "c"],
    "modalities": {"left": [0, 1], "right": [2]},
    "classes": ["rest", "move"],
}


def _frame(n: int = 10) -> pl.DataFrame:
    rng = np.random.default_rng(0)
    return pl.DataFrame(
        {
            "subject": np.arange(n) % 5,
            "label": ["rest", "move"] * (n // 2),
            "x": pl.Series(rng.normal(size=(n, 12)).astype(np.float32)).cast(pl.List(pl.Float32)),
        }
    )


def spec(**changes: Any) -> Callable[[dict[str, Any], pl.DataFrame], tuple[Any, pl.DataFrame]]:
    return lambda s, f: ({**s, **changes}, f)


def frame(fn: Callable[[pl.DataFrame], pl.DataFrame]) -> Callable[[dict[str, Any], pl.DataFrame], Any]:
    return lambda s, f: (s, fn(f))


def _x_with(value: float) -> Callable[[pl.DataFrame], pl.DataFrame]:
    def fn(f: pl.DataFrame) -> pl.DataFrame:
        x = f["x"].explode().to_numpy().reshape(len(f), -1).copy()
        x[2, 5] = value
        return f.with_columns(pl.Series("x", x).cast(pl.List(pl.Float32)))

    return fn


def _split_sharing_subject(f: pl.DataFrame) -> pl.DataFrame:
    # subject 0 has windows 0 and 5: one in train, one in test
    return f.with_columns(pl.Series("split", ["train"] * 5 + ["test"] + ["val"] * 2 + ["test"] * 2))


SOURCE: list[tuple[str, Callable[..., Any], str]] = [
    ("spec-classes-string", spec(classes="rm"), "dataset.json: classes"),
    ("spec-channels-string", spec(channels="abc"), "dataset.json: channels"),
    ("spec-classes-duplicate", spec(classes=["rest", "rest"]), "dataset.json: classes"),
    ("spec-modalities-list", spec(modalities=[[0, 1], [2]]), "dataset.json: modalities"),
    ("spec-modalities-empty", spec(modalities={}), "dataset.json: modalities"),
    ("spec-modality-out-of-range", spec(modalities={"left": [0, 1], "right": [3]}), "modalities"),
    (
        "spec-modality-string-indices",
        spec(modalities={"left": ["0", "1"], "right": ["2"]}),
        "dataset.json: modalities",
    ),
    (
        "spec-modality-float-indices",
        spec(modalities={"left": [0.5, 1], "right": [2]}),
        "dataset.json: modalities",
    ),
    ("spec-modality-misses-channel", spec(modalities={"left": [0], "right": [2]}), "modalities"),
    ("spec-modality-overlap", spec(modalities={"left": [0, 1], "right": [1, 2]}), "modalities"),
    ("spec-n-timesteps-string", spec(n_timesteps="4"), "dataset.json: n_timesteps"),
    ("spec-top-level-list", lambda s, f: ([1, 2], f), "dataset.json"),
    ("source-nan-in-x", frame(_x_with(float("nan"))), "windows.parquet"),
    ("source-inf-in-x", frame(_x_with(float("-inf"))), "windows.parquet"),
    ("source-subject-in-two-splits", frame(_split_sharing_subject), "subject"),
    (
        "source-label-out-of-range",
        frame(lambda f: f.with_columns(pl.Series("label", [0, 5] * 5))),
        "windows.parquet",
    ),
]


# the source as params configure it: data.custom.<name>.path, relative to the work folder
SOURCE_DATA = (
    "data:\n  datasets: [mine]\n  custom:\n    mine: {path: src, val_subjects: [3], test_subjects: [4]}\n"
)


@pytest.fixture
def source(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "src").mkdir()
    (tmp_path / "params.yaml").write_text(PARAMS + SOURCE_DATA + tracking(tmp_path))
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize(("change", "fragment"), [c[1:] for c in SOURCE], ids=[c[0] for c in SOURCE])
def test_malformed_source_fails_at_prepare(source: Path, change: Callable[..., Any], fragment: str) -> None:
    s, f = change(dict(SPEC), _frame())
    (source / "src" / "dataset.json").write_text(json.dumps(s))
    f.write_parquet(source / "src" / "windows.parquet")
    code, output = run_cli("prepare", "--dataset", "mine", "--out", "out", "-p", "params.yaml")
    assert code == 2, output
    assert fragment in output, output
    assert "Traceback" not in output
    assert sorted(p.name for p in source.iterdir()) == ["params.yaml", "src"]


def test_tables_are_large_enough() -> None:
    assert len(PREPARED) + len(SOURCE) >= 25


def test_class_missing_from_train_is_named(tmp_path: Path) -> None:
    (tmp_path / "dataset.json").write_text(json.dumps({**SPEC, "classes": ["rest", "move", "jump"]}))
    f = _frame().with_columns(pl.Series("label", ["rest", "move"] * 4 + ["jump", "jump"]))
    f.write_parquet(tmp_path / "windows.parquet")  # jump: only subjects 3 (val) and 4 (test)
    section = CustomDatasetConfig(path=str(tmp_path), val_subjects=[3], test_subjects=[4])
    with pytest.warns(UserWarning, match=r"class\(es\) \['jump'\] have no training window"):
        prepare_dataset("mine", DataConfig(datasets=["mine"], custom={"mine": section}), tmp_path / "out")
