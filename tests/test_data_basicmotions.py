"""The .ts reader and BasicMotions (real-data tests skip when aeon's files are missing)."""

from __future__ import annotations

from importlib.util import find_spec
from pathlib import Path

import numpy as np
import pytest

from timoe.config import BasicMotionsConfig, DataConfig
from timoe.data import DataFormatError, DataSourceError, basicmotions
from timoe.data.ts_format import read_ts

needs_aeon = pytest.mark.skipif(find_spec("aeon") is None, reason="aeon==1.6.0 not installed")

HEADER = (
    "# comment\n@problemName toy\n@timeStamps false\n@univariate false\n@dimensions 2\n"
    "@equalLength true\n@seriesLength 3\n@classLabel true a b\n@data\n"
)


def _write(tmp_path: Path, body: str, header: str = HEADER) -> Path:
    path = tmp_path / "toy_TRAIN.ts"
    path.write_text(header + body)
    return path


def test_read_ts_ok(tmp_path) -> None:
    data = read_ts(_write(tmp_path, "1,2,3:4,5,6:a\n\n0.5,?,1:1,1,1:b\n"))
    assert data.problem == "toy" and data.class_names == ["a", "b"] and data.labels == ["a", "b"]
    assert data.x.shape == (2, 2, 3) and data.x.dtype == np.float32
    assert np.isnan(data.x[1, 0, 1]) and data.x[0, 1, 2] == 6


@pytest.mark.parametrize(
    ("body", "lineno", "fragment"),
    [
        ("1,2,3:4,5,6:a\n1,2,x:4,5,6:b\n", 11, "'x' is not a number"),
        ("1,2,3:a\n", 10, "1 dimensions, header says 2"),
        ("1,2,3:4,5:a\n", 10, "dimension 1 has 2 values, expected 3"),
        ("1,2,3:4,5,6:c\n", 10, "class 'c' not declared"),
    ],
)
def test_read_ts_malformed_names_file_and_line(tmp_path, body: str, lineno: int, fragment: str) -> None:
    path = _write(tmp_path, body)
    with pytest.raises(DataFormatError) as err:
        read_ts(path)
    assert f"{path}:{lineno}:" in str(err.value) and fragment in str(err.value)


def test_read_ts_structure_errors(tmp_path) -> None:
    with pytest.raises(DataFormatError, match="no @data"):
        read_ts(_write(tmp_path, "", header="@problemName toy\n"))
    with pytest.raises(DataFormatError, match="no case"):
        read_ts(_write(tmp_path, ""))
    with pytest.raises(DataFormatError, match=":2: data line before @data"):
        read_ts(_write(tmp_path, "", header="@problemName toy\n1,2:a\n"))
    with pytest.raises(DataSourceError, match="not found"):
        read_ts(tmp_path / "absent.ts")


def test_missing_aeon_message(monkeypatch) -> None:
    monkeypatch.setattr("timoe.data.sources.find_spec", lambda name: None)
    with pytest.raises(DataSourceError, match=r"pip install --no-deps aeon==1\.6\.0"):
        basicmotions.source_paths()


@needs_aeon
def test_basicmotions_shapes_and_splits() -> None:
    ds = basicmotions.build(DataConfig())
    assert ds.x.shape == (80, 100, 6) and ds.x.dtype == np.float32
    assert ds.classes == ["Standing", "Running", "Walking", "Badminton"]
    assert ds.modalities == {"acc": [0, 1, 2], "gyro": [3, 4, 5]}
    sizes = {s: int(np.sum(ds.split == s)) for s in ("train", "val", "test")}
    assert sizes == {"train": 28, "val": 12, "test": 40}
    for s, per_class in (("train", 7), ("val", 3), ("test", 10)):
        assert np.bincount(ds.label[ds.split == s], minlength=4).tolist() == [per_class] * 4
    # the official test cases stay test; each case is its own subject and recording
    assert (ds.split[40:] == "test").all()
    assert np.unique(ds.subject).size == 80 and (ds.recording == ds.subject).all()
    assert (ds.step_labels == ds.label[:, None]).all()


@needs_aeon
def test_basicmotions_val_is_seeded() -> None:
    def val(seed: int, frac: float = 0.25) -> list[int]:
        ds = basicmotions.build(DataConfig(seed=seed, basicmotions=BasicMotionsConfig(val_fraction=frac)))
        return np.flatnonzero(ds.split == "val").tolist()

    assert val(0) == val(0)
    assert val(0) != val(1)
    assert len(val(0, frac=0.5)) == 20
