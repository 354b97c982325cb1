"""PAMAP2 and WESAD readers on tiny files in their official formats, written by the tests.

`write_pamap2_protocol` and `write_wesad_root` are also used by tests/test_datasets_from_params.py.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest

from timoe.config import DataConfig, Pamap2Config, WesadConfig
from timoe.data import DataFormatError, DataSourceError, load_prepared, pamap2, prepare_dataset, wesad
from timoe.data.prepare import build_checked

# ------------------------------------------------------------------------------ PAMAP2
PAMAP_OPTS = {"window": 20, "stride": 10, "classes": [1, 4], "val_subjects": [103], "test_subjects": [104]}
PAMAP_SUBJECTS = (101, 102, 103, 104)


def pamap_config(root: Path) -> DataConfig:
    return DataConfig(datasets=["pamap2"], pamap2=Pamap2Config(path=str(root), **PAMAP_OPTS))


def _pamap_rows(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    n = 200
    table = rng.normal(size=(n, 54))
    table[:, 0] = np.arange(n) / 100.0
    table[:, 1] = np.repeat([0, 1, 4], [50, 80, 70])
    table[:, 2] = np.nan
    table[::10, 2] = 70 + np.arange(20)  # heart rate every 10th row, NaN between (as in the files)
    table[60:64, 3 + 17 + 1] = np.nan  # a chest acc16-x dropout
    table[59, 3 + 17 + 1], table[64, 3 + 17 + 1] = 0.0, 5.0
    return table


def _write_pamap(root: Path, subject: int, table: np.ndarray) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    path = root / f"subject{subject}.dat"
    lines = (" ".join("NaN" if np.isnan(v) else f"{v:.6f}" for v in row) for row in table)
    path.write_text("\n".join(lines) + "\n")
    return path


def write_pamap2_protocol(root: Path) -> Path:
    """A `Protocol` folder of four 200-row subject files (101-104), as PAMAP2 ships them."""
    for s in PAMAP_SUBJECTS:
        _write_pamap(root, s, _pamap_rows(s))
    return root


@pytest.fixture
def pamap_root(tmp_path) -> Path:
    return write_pamap2_protocol(tmp_path / "Protocol")


def test_pamap2_layout() -> None:
    channels, modalities, columns = pamap2.channel_layout()
    assert len(channels) == 40 and len(set(channels)) == 40
    assert {k: len(v) for k, v in modalities.items()} == {
        "heart_rate": 1,
        "hand": 13,
        "chest": 13,
        "ankle": 13,
    }
    assert 16 not in columns and 53 not in columns  # orientation columns dropped


def test_pamap2_read_subject_fills_gaps(pamap_root) -> None:
    rec = pamap2.read_subject(pamap_root / "subject101.dat")
    assert rec.subject == 101 and rec.x.shape == (200, 40) and np.isfinite(rec.x).all()
    assert rec.x[1:10, 0].tolist() == [70.0] * 9  # heart rate carried forward
    chest_acc_x = pamap2.channel_layout()[0].index("chest-acc16-x")
    np.testing.assert_allclose(rec.x[59:65, chest_acc_x], [0, 1, 2, 3, 4, 5], atol=1e-5)  # linear
    assert pamap2.read_subject(pamap_root / "subject101.dat", downsample=3).x.shape == (67, 40)


def test_pamap2_build_windows_and_split(pamap_root) -> None:
    ds = pamap2.build(pamap_config(pamap_root))
    # per subject: activity 1 (80 rows) -> 7 windows, activity 4 (70 rows) -> 6; transients dropped
    assert ds.x.shape == (52, 20, 40)
    assert ds.classes == ["lying", "walking"]
    assert {s: sorted(set(ds.subject[ds.split == s].tolist())) for s in ("train", "val", "test")} == {
        "train": [101, 102],
        "val": [103],
        "test": [104],
    }
    assert np.bincount(ds.label).tolist() == [28, 24]


def test_pamap2_prepare_through_registry(pamap_root, tmp_path) -> None:
    prepare_dataset("pamap2", pamap_config(pamap_root), tmp_path / "out")
    data = load_prepared(tmp_path / "out")
    assert data.modality("chest").shape == (52, 20, 13)


@pytest.mark.parametrize(
    ("mutate", "fragment"),
    [
        (lambda t: t[:, :53], "53 columns, expected 54"),
        (lambda t: np.where(np.arange(54) == 1, 99.0, t), r"unknown activity id\(s\) \[99\]"),
    ],
)
def test_pamap2_malformed(tmp_path, mutate, fragment: str) -> None:
    path = _write_pamap(tmp_path, 105, mutate(_pamap_rows(0)))
    with pytest.raises(DataFormatError, match=rf"subject105\.dat: {fragment}"):
        pamap2.read_subject(path)


def test_pamap2_bad_token_and_missing_root(tmp_path) -> None:
    path = tmp_path / "subject106.dat"
    path.write_text("0.0 1 abc " + " ".join(["1.0"] * 51) + "\n")
    with pytest.raises(DataFormatError, match=r"subject106\.dat: cannot be parsed"):
        pamap2.read_subject(path)
    with pytest.raises(DataSourceError, match="Protocol folder"):
        pamap2.read_protocol(tmp_path / "empty")


def test_pamap2_default_classes_are_the_protocol_activities(pamap_root) -> None:
    cfg = DataConfig(pamap2=Pamap2Config(path=str(pamap_root), **{**PAMAP_OPTS, "classes": None}))
    with pytest.warns(UserWarning):  # the tiny files hold 2 of the 12 protocol activities
        ds = build_checked("pamap2", cfg)
    assert len(ds.classes) == len(pamap2.PROTOCOL_ACTIVITIES)


# ------------------------------------------------------------------------------- WESAD
WESAD_OPTS = WesadConfig(window=70, stride=35, val_subjects=[4], test_subjects=[5])
WESAD_SUBJECTS = (2, 3, 4, 5)


def wesad_config(root: Path, **changes) -> DataConfig:
    return DataConfig(wesad=WesadConfig(**{**WESAD_OPTS.model_dump(), "path": str(root), **changes}))


def _wesad_dict(subject: int, seconds: int = 40) -> dict:
    rng = np.random.default_rng(subject)
    n = seconds * 700
    chest = {k: rng.normal(size=(n, 3 if k == "ACC" else 1)) for k in wesad.RATES["chest"]}
    chest["ECG"] = np.repeat(np.arange(n // 20, dtype=np.float64), 20)[:, None]  # constant per block
    wrist = {
        k: rng.normal(size=(int(seconds * r), 3 if k == "ACC" else 1))
        for k, r in wesad.RATES["wrist"].items()
    }
    wrist["EDA"] = (np.arange(seconds * 4) / 4.0)[:, None]  # a ramp: value == time in s
    label = np.repeat([1, 2, 3], [10 * 700, 15 * 700, 15 * 700]).astype(np.int64)
    return {"subject": f"S{subject}", "signal": {"chest": chest, "wrist": wrist}, "label": label}


def write_wesad_root(root: Path) -> Path:
    """A WESAD root of four 40 s subjects S2-S5 (S<id>/S<id>.pkl, protocol-2 pickles)."""
    for s in WESAD_SUBJECTS:
        (root / f"S{s}").mkdir(parents=True)
        (root / f"S{s}" / f"S{s}.pkl").write_bytes(pickle.dumps(_wesad_dict(s), protocol=2))
    return root


@pytest.fixture
def wesad_root(tmp_path) -> Path:
    return write_wesad_root(tmp_path)


def test_wesad_resampling(wesad_root) -> None:
    data = wesad.read_pickle(wesad_root / "S2" / "S2.pkl")
    rec, channels, modalities = wesad.to_recording(data, 2, WESAD_OPTS)
    assert rec.x.shape == (40 * 35, 14) and len(channels) == 14
    assert modalities["chest_acc"] == [0, 1, 2] and modalities["wrist_eda"] == [channels.index("wrist-EDA")]
    np.testing.assert_allclose(rec.x[:5, channels.index("chest-ECG")], np.arange(5), atol=1e-6)
    t = np.arange(40 * 35) / 35.0
    inside = t <= 39.75  # the last 4 Hz sample; np.interp holds that value after it
    np.testing.assert_allclose(rec.x[inside, channels.index("wrist-EDA")], t[inside], atol=1e-5)
    assert np.bincount(rec.labels).tolist() == [0, 350, 525, 525]


def test_wesad_build(wesad_root) -> None:
    ds = wesad.build(wesad_config(wesad_root))
    assert ds.x.shape == (4 * 37, 70, 14)  # per subject 9 + 14 + 14 windows
    assert ds.classes == ["baseline", "stress", "amusement"]
    assert sorted(set(ds.subject[ds.split == "train"].tolist())) == [2, 3]
    chest_only = wesad.build(wesad_config(wesad_root, devices=["chest"]))
    assert chest_only.x.shape[2] == 8


def test_wesad_devices_are_the_schema_ones() -> None:
    from typing import get_args

    from timoe.config import WesadDevice

    assert set(wesad.RATES) == set(get_args(WesadDevice))


def test_wesad_refuses_code(tmp_path) -> None:
    (tmp_path / "S9").mkdir()
    path = tmp_path / "S9" / "S9.pkl"
    path.write_bytes(b"cos\nsystem\n(S'echo pwned'\ntR.")
    with pytest.raises(pickle.UnpicklingError, match=r"S9\.pkl.*os\.system"):
        wesad.read_pickle(path)
    path.write_bytes(pickle.dumps({"signal": {}, "label": np.zeros(3)}, protocol=2))
    with pytest.raises(DataFormatError, match=r"S9\.pkl: signal\.chest"):
        wesad.read_pickle(path)
    path.write_bytes(b"\x80\x02}q")
    with pytest.raises(DataFormatError, match="cannot be read"):
        wesad.read_pickle(path)
