"""The quantify stage reads the training split only: held-out labels cannot change its output."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from timoe.data import prepare_dataset
from timoe.stages.quantify import run_quantify


def _scramble(data_dir: Path, seed: int, split_is_train: bool = False) -> None:
    """Draw new random labels for the held-out windows (or, for the control, the training ones)."""
    path = data_dir / "windows.parquet"
    df = pl.read_parquet(path)
    rng = np.random.default_rng(seed)
    held = ((df["split"] == "train") if split_is_train else (df["split"] != "train")).to_numpy()
    labels = df["label"].to_numpy().copy()
    labels[held] = rng.integers(0, labels.max() + 1, held.sum())
    steps = [list(s) for s in df["step_labels"].to_list()]
    for i in np.flatnonzero(held):
        steps[i] = [int(labels[i])] * len(steps[i])
    df = df.with_columns(pl.Series("label", labels, dtype=pl.Int32),
                         pl.Series("step_labels", steps, dtype=pl.List(pl.Int32)))
    df.write_parquet(path)


def test_changing_val_and_test_labels_leaves_rus_unchanged(tmp_path, smoke_params, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the MLflow store of the smoke params is relative
    data = tmp_path / "data"
    prepare_dataset("basicmotions", smoke_params.data, data)
    run_quantify(smoke_params, dataset="basicmotions", data_dir=data, out_dir=tmp_path / "rus_a")
    before = pl.read_parquet(data / "windows.parquet")
    _scramble(data, seed=1)
    after = pl.read_parquet(data / "windows.parquet")
    held = before["split"] != "train"
    assert (before.filter(held)["label"] != after.filter(held)["label"]).any()
    run_quantify(smoke_params, dataset="basicmotions", data_dir=data, out_dir=tmp_path / "rus_b")
    cols = ["pair", "lag", "R", "U1", "U2", "S", "total", "n_samples"]
    a = pl.read_parquet(tmp_path / "rus_a" / "rus.parquet").select(cols)
    b = pl.read_parquet(tmp_path / "rus_b" / "rus.parquet").select(cols)
    assert a.equals(b)
    assert a["total"].sum() > 0  # the estimate is not trivially empty


def test_changing_train_labels_does_change_rus(tmp_path, smoke_params, monkeypatch):
    """The control: the same scrambling applied to the training split moves the estimate."""
    monkeypatch.chdir(tmp_path)
    data = tmp_path / "data"
    prepare_dataset("basicmotions", smoke_params.data, data)
    run_quantify(smoke_params, dataset="basicmotions", data_dir=data, out_dir=tmp_path / "rus_a")
    _scramble(data, seed=1, split_is_train=True)
    run_quantify(smoke_params, dataset="basicmotions", data_dir=data, out_dir=tmp_path / "rus_b")
    a = pl.read_parquet(tmp_path / "rus_a" / "rus.parquet")
    b = pl.read_parquet(tmp_path / "rus_b" / "rus.parquet")
    assert not np.allclose(a["total"].to_numpy(), b["total"].to_numpy())
