"""The bring-your-own parquet format."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from timoe.config import CustomDatasetConfig, DataConfig
from timoe.data import DataFormatError, custom, load_prepared, prepare_dataset

SPEC = {
    "name": "mine",
    "n_timesteps": 4,
    "channels": ["a", "b", "c"],
    "modalities": {"left": [0, 1], "right": [2]},
    "classes": ["rest", "move"],
}


def _write(tmp_path: Path, frame: pl.DataFrame, spec: dict | None = None) -> Path:
    (tmp_path / "dataset.json").write_text(json.dumps(spec or SPEC))
    path = tmp_path / "windows.parquet"
    frame.write_parquet(path)
    return path


def _frame(n: int = 10) -> pl.DataFrame:
    rng = np.random.default_rng(0)
    return pl.DataFrame(
        {
            "subject": np.arange(n) % 5,
            "label": ["rest", "move"] * (n // 2),
            "x": pl.Series(rng.normal(size=(n, 12)).astype(np.float32)).cast(pl.List(pl.Float32)),
        }
    )


def test_custom_split_by_subject_and_prepare(tmp_path) -> None:
    path = _write(tmp_path, _frame())
    ds = custom.build(path, val_subjects=[3], test_subjects=[4])
    assert ds.x.shape == (10, 4, 3) and ds.label.tolist() == [0, 1] * 5
    assert sorted(set(ds.subject[ds.split == "train"].tolist())) == [0, 1, 2]
    assert np.unique(ds.recording).size == 10 and (ds.start == 0).all()
    section = CustomDatasetConfig(path=str(tmp_path), val_subjects=[3], test_subjects=[4])
    prepare_dataset("mine", DataConfig(datasets=["mine"], custom={"mine": section}), tmp_path / "out")
    assert load_prepared(tmp_path / "out").modalities == {"left": [0, 1], "right": [2]}


def test_custom_explicit_split_and_errors(tmp_path) -> None:
    # subjects follow the split: a subject in two splits is refused (timoe.data.base.split_leak)
    frame = _frame().with_columns(
        pl.Series("split", ["train"] * 6 + ["val"] * 2 + ["test"] * 2),
        pl.Series("subject", np.arange(10) // 2),
    )
    assert (custom.build(_write(tmp_path, frame)).split[-2:] == "test").all()
    with pytest.raises(DataFormatError, match="every x list must have length 12"):
        custom.build(_write(tmp_path, frame.with_columns(pl.col("x").list.head(3))))
    with pytest.raises(DataFormatError, match=r"labels \['jump'\] not in"):
        custom.build(_write(tmp_path, frame.with_columns(pl.lit("jump").alias("label"))))
    with pytest.raises(DataFormatError, match="missing key"):
        custom.build(_write(tmp_path, frame, {"name": "x"}))
