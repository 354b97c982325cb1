"""The quantify stage reads the training split only: held-out labels cannot change its output."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch

from timoe.data import prepare_dataset
from timoe.data.io import load_prepared
from timoe.interactions.contexts import ContextSpec, window_features
from timoe.stages.quantify import run_quantify, rus_by_context


def _context_params(params, **rus):
    """Smoke params with contexts small enough for BasicMotions' ~30 training windows."""
    over = {"scope": "context", "n_contexts": 3, "min_context_windows": 5, "min_context_samples": 200} | rus
    return params.model_copy(update={"rus": params.rus.model_copy(update=over)})


def _test_assignment(data_dir: Path, out: Path) -> np.ndarray:
    spec = ContextSpec.from_json(json.loads((out / "contexts.json").read_text()))
    test = load_prepared(data_dir).subset("test")
    return spec.assign(window_features(torch.from_numpy(test.x), spec.channels)).numpy()


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
    df = df.with_columns(
        pl.Series("label", labels, dtype=pl.Int32), pl.Series("step_labels", steps, dtype=pl.List(pl.Int32))
    )
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
    cols = ["context", "pair", "lag", "R", "U1", "U2", "S", "total", "n_samples"]
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


def test_context_priors_ignore_held_out_labels(tmp_path, smoke_params, monkeypatch):
    """THE leak-free test for sample-conditioned priors: scrambled val/test labels and step labels
    give byte-identical rus.parquet and contexts.json, and the same context for every test window."""
    monkeypatch.chdir(tmp_path)
    params = _context_params(smoke_params)
    data = tmp_path / "data"
    prepare_dataset("basicmotions", params.data, data)
    run_quantify(params, dataset="basicmotions", data_dir=data, out_dir=tmp_path / "rus_a")
    before = pl.read_parquet(data / "windows.parquet")
    _scramble(data, seed=2)
    after = pl.read_parquet(data / "windows.parquet")
    held = before["split"] != "train"
    assert (before.filter(held)["label"] != after.filter(held)["label"]).any()
    assert (before.filter(held)["step_labels"] != after.filter(held)["step_labels"]).any()
    run_quantify(params, dataset="basicmotions", data_dir=data, out_dir=tmp_path / "rus_b")
    a, b = tmp_path / "rus_a", tmp_path / "rus_b"
    for name in ("rus.parquet", "contexts.json", "rus_dataset.parquet"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    np.testing.assert_array_equal(_test_assignment(data, a), _test_assignment(data, b))
    table = pl.read_parquet(a / "rus.parquet")
    summary = json.loads((a / "summary.json").read_text())
    assert summary["scope"] == "context" and summary["n_contexts"] > 1  # the contexts are exercised
    assert sorted(table["context"].unique().to_list()) == list(range(summary["n_contexts"]))
    assert sum(summary["counts"]) == summary["n_train_windows"]
    assert table.height == summary["n_contexts"] * pl.read_parquet(a / "rus_dataset.parquet").height
    assert table["total"].sum() > 0 and table["total"].is_finite().all()
    assert "context" not in pl.read_parquet(a / "rus_dataset.parquet").columns
    # ... and a timoe model built from either output routes every test window identically
    np.testing.assert_array_equal(_test_routing(params, data, a), _test_routing(params, data, b))


def _test_routing(params, data_dir: Path, rus_dir: Path) -> np.ndarray:
    """Top-k experts of every test token of a freshly built timoe model (seed 0), [N, L, M, T, k]."""
    from timoe.training.build import build_for_data, load_rus_table

    prepared = load_prepared(data_dir)
    model = build_for_data(params, "timoe", prepared.meta, load_rus_table(rus_dir, "timoe"), seed=0).eval()
    with torch.no_grad():
        out = model(torch.from_numpy(prepared.subset("test").x))
    assert out.context.prior is not None and out.context.prior.context.unique().numel() > 1
    return torch.stack([r.topk_idx for r in out.routes], dim=1).numpy()


def test_dataset_scope_table_is_the_dataset_table(tmp_path, smoke_params, monkeypatch):
    monkeypatch.chdir(tmp_path)
    params = _context_params(smoke_params, scope="dataset")
    data = tmp_path / "data"
    prepare_dataset("basicmotions", params.data, data)
    run_quantify(params, dataset="basicmotions", data_dir=data, out_dir=tmp_path / "rus")
    table = pl.read_parquet(tmp_path / "rus" / "rus.parquet")
    assert table["context"].to_list() == [0] * table.height
    assert table.drop("context").equals(pl.read_parquet(tmp_path / "rus" / "rus_dataset.parquet"))
    assert json.loads((tmp_path / "rus" / "contexts.json").read_text())["names"] == ["dataset"]


def test_context_with_too_few_samples_is_an_error(smoke_params):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 20, 2)).astype(np.float32)
    labels = rng.integers(0, 2, 40)
    steps = np.repeat(labels[:, None], 20, axis=1)
    ids = np.where(np.arange(40) < 35, 0, 1)  # context 1: 5 windows × (20 − lag) steps
    rc = smoke_params.rus.model_copy(
        update={"lags": [0, 2], "form": "lagged_mi", "min_context_samples": 95, "device": "cpu"}
    )
    mods = {"a": [0], "b": [1]}
    with pytest.raises(ValueError, match=r"ctx1 \(5 training windows\).*lag 2: 90"):
        rus_by_context(x, steps, labels, ids, ["ctx0", "ctx1"], mods, rc, seed=0)
    ok = rc.model_copy(update={"min_context_samples": 90})
    table, seconds = rus_by_context(x, steps, labels, ids, ["ctx0", "ctx1"], mods, ok, seed=0)
    assert table.columns[0] == "context" and "seconds" not in table.columns and len(seconds) == 2
    assert table.filter(pl.col("context") == 1)["n_samples"].to_list() == [100, 90]
