"""The OPPORTUNITY reader on tiny files in the official format (250 columns, NaN gaps), its two
splits (the challenge's runs by default, subjects on request), and the split-unit check of the
builder and the loader (split_unit "recording" / "subject", old meta.json without the key).

`write_opportunity_folder` is also used by tests/test_datasets_from_params.py.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import yaml
from typer.testing import CliRunner

from timoe.cli import app
from timoe.config import (
    OPPORTUNITY_LABELS,
    OPPORTUNITY_MODALITIES,
    OPPORTUNITY_RUNS,
    ConfigError,
    DataConfig,
    OpportunityConfig,
    validate,
)
from timoe.data import DataFormatError, DataSourceError, PreparedDataError, load_prepared, opportunity
from timoe.data.base import WindowedDataset
from timoe.data.io import META_FILE, WINDOWS_FILE
from timoe.data.prepare import write_prepared

# The default folder: runs of every official split (train S1-ADL1, S1-Drill, S2-ADL1, S3-ADL1;
# val S2-ADL3, S3-ADL3; test S2-ADL4, S3-ADL4) plus S4, which only the subject split reads.
FILES: dict[int, tuple[str, ...]] = {
    1: ("ADL1", "Drill"),
    2: ("ADL1", "ADL3", "ADL4"),
    3: ("ADL1", "ADL3", "ADL4"),
    4: ("ADL1", "Drill"),
}
ALL_FILES = dict.fromkeys(FILES, OPPORTUNITY_RUNS)  # the full data set: S1-S4 x six runs
# the challenge's split as the literature states it (not read from the module under test)
EXPECTED_OFFICIAL = {
    "train": {"S1-ADL1", "S1-ADL2", "S1-ADL3", "S1-ADL4", "S1-ADL5", "S1-Drill"}
    | {"S2-ADL1", "S2-ADL2", "S2-Drill", "S3-ADL1", "S3-ADL2", "S3-Drill"},
    "val": {"S2-ADL3", "S3-ADL3"},
    "test": {"S2-ADL4", "S2-ADL5", "S3-ADL4", "S3-ADL5"},
}
WINDOWS_PER_FILE = 8  # locomotion, window 20 stride 10: 4 segments of 35 rows, 2 windows each
ROWS = 150
# locomotion per file: 10 null rows, then 35 rows each of Stand, Walk, Sit, Lie
LOCOMOTION = np.repeat([0, 1, 2, 4, 5], [10, 35, 35, 35, 35])
# ml_both_arms: two 30-row gestures in null
GESTURES = np.repeat([0, 406516, 0, 404516, 0], [20, 30, 20, 30, 50])
GAP_COLUMN = 1  # body_acc RKN^ accX: rows 20-24 missing in every file
DEAD_FILE, DEAD_COLUMN = "S2-ADL1.dat", 4  # body_acc HIP accX: no value at all in this run
SMALL = {"window": 20, "stride": 10}


def _table(subject: int, run: str) -> np.ndarray:
    rng = np.random.default_rng(100 * subject + OPPORTUNITY_RUNS.index(run))
    table = np.round(rng.normal(scale=100.0, size=(ROWS, opportunity.N_COLUMNS)))
    table[:, 0] = np.round(np.arange(ROWS) * 1000 / opportunity.SAMPLE_RATE_HZ)
    labels = np.zeros((ROWS, len(OPPORTUNITY_LABELS)))
    labels[:, OPPORTUNITY_LABELS.index("locomotion")] = LOCOMOTION
    labels[:, OPPORTUNITY_LABELS.index("ml_both_arms")] = GESTURES
    labels[:, OPPORTUNITY_LABELS.index("hl_activity")] = 101
    table[:, 243:] = labels
    table[19, GAP_COLUMN], table[25, GAP_COLUMN] = 0.0, 60.0
    table[20:25, GAP_COLUMN] = np.nan
    if f"S{subject}-{run}.dat" == DEAD_FILE:
        table[:, DEAD_COLUMN] = np.nan
    return table


def _write(path: Path, table: np.ndarray) -> Path:
    buf = io.StringIO()
    np.savetxt(buf, table, fmt="%.0f")
    path.write_text(buf.getvalue().replace("nan", "NaN"))  # the files spell it NaN
    return path


def write_opportunity_folder(root: Path, files: dict[int, tuple[str, ...]] = FILES) -> Path:
    """Run files of 150 rows each (subject -> runs; default FILES), as the data set ships them."""
    root.mkdir(parents=True, exist_ok=True)
    for s, runs in files.items():
        for run in runs:
            _write(root / f"S{s}-{run}.dat", _table(s, run))
    return root


def config(root: Path, **changes) -> DataConfig:
    return DataConfig(opportunity=OpportunityConfig(path=str(root), **{**SMALL, **changes}))


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return write_opportunity_folder(tmp_path_factory.mktemp("opportunity"))


@pytest.fixture(scope="module")
def full_root(tmp_path_factory) -> Path:
    return write_opportunity_folder(tmp_path_factory.mktemp("opportunity_full"), ALL_FILES)


def test_layout_matches_the_file_format() -> None:
    assert tuple(m for m, _, _ in opportunity.SENSOR_GROUPS) == OPPORTUNITY_MODALITIES
    channels, _, columns = opportunity.channel_layout(OPPORTUNITY_MODALITIES)
    # 242 sensor columns less the 5 body IMUs' 4 quaternions each
    assert len(channels) == len(set(channels)) == 242 - 20
    assert min(columns) == 1 and max(columns) == 242 and len(set(columns)) == len(columns)
    assert sorted(opportunity.LABEL_COLUMNS.values()) == list(range(243, 250))
    body = opportunity.channel_layout(["body_acc", "body_imu", "shoes"])
    assert {k: len(v) for k, v in body[1].items()} == {"body_acc": 36, "body_imu": 45, "shoes": 32}  # 113


def test_gaps_interpolated_and_dead_channel_dropped(root: Path) -> None:
    rs = opportunity.read_runs(root, OpportunityConfig(path=str(root), **SMALL))
    assert len(rs.recordings) == 8  # S1-S3's files; the official split reads no S4 run
    assert rs.extra["dropped_channels"] == ["body_acc-HIP-accX"]
    assert len(rs.channels) == 113 - 1 and "body_acc-HIP-accX" not in rs.channels
    assert rs.modalities["body_acc"] == list(range(35))
    gap = rs.channels.index("body_acc-RKN^-accX")
    np.testing.assert_allclose(rs.recordings[0].x[19:26, gap], [0, 10, 20, 30, 40, 50, 60])
    assert all(np.isfinite(r.x).all() for r in rs.recordings)
    assert [(r.subject, r.index) for r in rs.recordings[:3]] == [(1, 0), (1, 1), (2, 0)]


def _runs_of(ds: WindowedDataset) -> dict[str, set[str]]:
    """split -> names of the runs with windows in it (recording ids index extra["runs"])."""
    return {s: {ds.extra["runs"][r] for r in ds.recording[ds.split == s]} for s in ("train", "val", "test")}


def _subjects_of(ds: WindowedDataset) -> dict[str, list[int]]:
    return {s: sorted(set(ds.subject[ds.split == s].tolist())) for s in ("train", "val", "test")}


def test_build_locomotion_split_by_subject(root: Path) -> None:
    ds = opportunity.build(config(root, split="subjects"))
    # per file: 4 segments of 35 rows -> 2 windows of 20 each; 10 files
    assert ds.x.shape == (10 * WINDOWS_PER_FILE, 20, 112)
    assert ds.classes == ["Stand", "Walk", "Sit", "Lie"]
    assert np.bincount(ds.label).tolist() == [20, 20, 20, 20]
    assert _subjects_of(ds) == {"train": [1, 2], "val": [3], "test": [4]}
    assert ds.split_unit == "subject" and "official_split" not in ds.extra
    assert ds.sample_rate_hz == 30.0 and len(ds.sources) == 10


def test_official_split_is_the_default_and_puts_each_run_in_its_split(full_root: Path) -> None:
    ds = opportunity.build(config(full_root))
    assert OpportunityConfig().split == "official" and ds.split_unit == "recording"
    assert _runs_of(ds) == EXPECTED_OFFICIAL
    assert ds.extra["official_split"] == {n: s for s, names in EXPECTED_OFFICIAL.items() for n in names}
    counts = {s: int(np.sum(ds.split == s)) for s in ("train", "val", "test")}
    assert counts == {
        "train": 12 * WINDOWS_PER_FILE,
        "val": 2 * WINDOWS_PER_FILE,
        "test": 4 * WINDOWS_PER_FILE,
    }
    # recordings are disjoint across splits, subjects are not: S2 and S3 are in all three
    by_split = {s: set(ds.recording[ds.split == s].tolist()) for s in ("train", "val", "test")}
    assert not (by_split["train"] & by_split["val"] or by_split["train"] & by_split["test"])
    assert not by_split["val"] & by_split["test"]
    assert _subjects_of(ds) == {"train": [1, 2, 3], "val": [2, 3], "test": [2, 3]}
    assert not any(name.startswith("S4-") for name in ds.sources)  # S4 is not read at all
    assert len(ds.sources) == 18


def test_official_split_refuses_subject_lists() -> None:
    for key in ("val_subjects", "test_subjects"):
        with pytest.raises(ConfigError) as info:
            validate({"data": {"opportunity": {key: [2]}}})
        message = str(info.value)
        assert f"data.opportunity: Value error, {key} [2] is not used by split 'official'" in message
        assert "data.opportunity.split: subjects" in message
    # their defaults pass (params.yaml lists them), and split: subjects reads them
    assert validate({"data": {"opportunity": {"val_subjects": [3], "test_subjects": [4]}}})
    oc = validate({"data": {"opportunity": {"split": "subjects", "val_subjects": [2]}}}).data.opportunity
    assert oc.val_subjects == [2]
    with pytest.raises(
        ConfigError, match=r"data\.opportunity\.split: Input should be 'official' or 'subjects'"
    ):
        validate({"data": {"opportunity": {"split": "runs"}}})


def test_official_split_without_its_runs_names_them(root: Path) -> None:
    with pytest.raises(ConfigError) as info:
        opportunity.build(config(root, runs=["ADL1", "Drill"]))
    message = str(info.value)
    assert "split(s) ['val', 'test'] of split 'official' would be empty" in message
    assert "'val': ['S2-ADL3', 'S3-ADL3']" in message and "data.opportunity.split: subjects" in message
    with pytest.raises(DataSourceError, match=r"of S1-S3 \(split 'official'\)"):
        opportunity.build(config(root, subjects=[4]))


def test_build_gestures_and_modality_subset(root: Path) -> None:
    ds = opportunity.build(
        config(
            root,
            label="ml_both_arms",
            classes=[406516, 404516],
            modalities=["objects", "location"],
            runs=["ADL1"],
            split="subjects",
        )
    )
    assert ds.classes == ["Close_Door1", "Open_Door1"]  # sorted by label id
    assert ds.x.shape == (4 * 4, 20, 60 + 12)
    assert list(ds.modalities) == ["objects", "location"]


def test_bad_params_against_the_files(root: Path) -> None:
    with pytest.raises(ConfigError, match=r"data\.opportunity\.classes: unknown class label\(s\) \[3\]"):
        opportunity.build(config(root, classes=[1, 3]))
    with pytest.raises(ConfigError, match=r"data\.opportunity: no window of 40 samples"):
        opportunity.build(config(root, window=40, stride=10))
    with pytest.raises(ConfigError, match=r"split\(s\) \['test'\] would be empty"):
        opportunity.build(config(root, split="subjects", test_subjects=[9]))


@pytest.mark.parametrize(
    ("mutate", "fragment"),
    [
        (lambda t: t[:, :249], "249 columns, expected 250"),
        (lambda t: np.where(np.arange(250) == 243, 3.0, t), r"unknown locomotion label id\(s\) \[3\]"),
        (lambda t: np.where(np.arange(250) == 249, np.nan, t), r"label column 250 \(ml_both_arms\)"),
    ],
)
def test_malformed_file(tmp_path: Path, mutate, fragment: str) -> None:
    path = _write(tmp_path / "S1-ADL1.dat", mutate(_table(1, "ADL1")))
    with pytest.raises(DataFormatError, match=rf"S1-ADL1\.dat: {fragment}"):
        opportunity.read_table(path)


def test_missing_files_name_the_key(tmp_path: Path) -> None:
    with pytest.raises(DataSourceError, match=r"data\.opportunity\.path: .*nowhere not found"):
        opportunity.build(config(tmp_path / "nowhere"))
    (tmp_path / "notes.dat").write_text("not a run\n")
    with pytest.raises(DataSourceError, match=r"data\.opportunity\.path: .* holds no S\*-\*\.dat"):
        opportunity.build(config(tmp_path))
    (tmp_path / "S1-Other.dat").write_text("1 2 3\n")  # matches the glob, not the run names
    with pytest.raises(DataSourceError, match=r"no OPPORTUNITY file .* UCI repository"):
        opportunity.build(config(tmp_path))


# ------------------------------------------------------------------ through the CLI
def test_prepare_official_split_through_the_cli(
    full_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = {"datasets": ["opportunity"], "opportunity": {"path": str(full_root), **SMALL}}
    tracking = {"uri": f"sqlite:///{tmp_path / 'mlflow.db'}"}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"data": data, "tracking": tracking}))
    monkeypatch.chdir(tmp_path)
    args = ["prepare", "--dataset", "opportunity", "--out", "out", "--params", "params.yaml"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    prepared = load_prepared(tmp_path / "out")
    assert prepared.meta["split_unit"] == prepared.split_unit == "recording"
    assert prepared.meta["config"]["opportunity"]["split"] == "official"
    assert prepared.meta["counts"]["split"] == {"train": 96, "val": 16, "test": 32}
    runs = prepared.meta["extra"]["runs"]
    by_split = {
        s: {runs[r] for r in prepared.recording[prepared.split == s]} for s in ("train", "val", "test")
    }
    assert by_split == EXPECTED_OFFICIAL
    assert set(prepared.subject[prepared.split == "test"].tolist()) <= set(
        prepared.subject[prepared.split == "train"].tolist()
    )


# ------------------------------------------------------------------ the split-unit check
def _crafted(split_unit: str, recording: list[int], subject: list[int]) -> WindowedDataset:
    """Six windows of 4 steps x 2 channels: train, train, val, val, test, test."""
    n = len(recording)
    label = (np.arange(n) % 2).astype(np.int32)
    return WindowedDataset(
        name="crafted",
        x=np.random.default_rng(0).normal(size=(n, 4, 2)).astype(np.float32),
        label=label,
        step_labels=np.repeat(label[:, None], 4, axis=1),
        subject=np.array(subject, dtype=np.int32),
        recording=np.array(recording, dtype=np.int32),
        start=np.zeros(n, dtype=np.int32),
        split=np.array(["train", "train", "val", "val", "test", "test"]),
        channels=["a", "b"],
        modalities={"m1": [0], "m2": [1]},
        classes=["neg", "pos"],
        sources={"crafted": "0" * 64},
        config={},
        split_unit=split_unit,  # type: ignore[arg-type]
    )


# one subject in every split, each recording in one split: what the official split builds
ONE_SUBJECT = {"recording": [0, 0, 1, 1, 2, 2], "subject": [7] * 6}


def test_recording_in_two_splits_is_refused() -> None:
    _crafted("recording", **ONE_SUBJECT)  # a subject may span splits when the unit is recording
    with pytest.raises(
        ValueError,
        match=r"crafted: subject\(s\) \[7\] have windows in more than one split; "
        r"this data set is split by subject",
    ):
        _crafted("subject", **ONE_SUBJECT)
    # recording 1 has a train and a val window
    with pytest.raises(
        ValueError,
        match=r"crafted: recording\(s\) \[1\] have windows in more than one split; "
        r"this data set is split by recording \(split_unit 'recording'\)",
    ):
        _crafted("recording", recording=[0, 1, 1, 2, 3, 3], subject=[1, 1, 2, 2, 3, 3])
    with pytest.raises(ValueError, match=r"split_unit must be one of \['subject', 'recording'\], got 'run'"):
        _crafted("run", **ONE_SUBJECT)


def _rewrite_meta(out: Path, change) -> None:
    meta = json.loads((out / META_FILE).read_text())
    change(meta)
    (out / META_FILE).write_text(json.dumps(meta))


def test_load_checks_the_declared_unit(tmp_path: Path) -> None:
    out = tmp_path / "prepared"
    assert write_prepared(_crafted("recording", **ONE_SUBJECT), out)["split_unit"] == "recording"
    assert load_prepared(out).split_unit == "recording"
    # a window of recording 1 (val) moved to train, counts kept: the load refuses the leak
    frame = pl.read_parquet(out / WINDOWS_FILE)
    moved = frame.with_columns(
        split=pl.when(pl.col("window_id") == 2).then(pl.lit("train")).otherwise(pl.col("split")),
    ).with_columns(split=pl.when(pl.col("window_id") == 1).then(pl.lit("val")).otherwise(pl.col("split")))
    moved.write_parquet(out / WINDOWS_FILE)
    with pytest.raises(
        PreparedDataError, match=r"recording\(s\) \[0, 1\] have windows in more than one split"
    ):
        load_prepared(out)
    _rewrite_meta(out, lambda m: m.update(split_unit="window"))
    with pytest.raises(PreparedDataError, match=r"meta\.json: split_unit must be one of"):
        load_prepared(out)


def test_old_meta_without_split_unit_is_checked_by_subject(tmp_path: Path) -> None:
    old = tmp_path / "old"
    write_prepared(_crafted("subject", recording=[0, 1, 2, 3, 4, 5], subject=[1, 1, 2, 2, 3, 3]), old)
    assert json.loads((old / META_FILE).read_text())["split_unit"] == "subject"
    _rewrite_meta(old, lambda m: m.pop("split_unit"))  # as written before the key existed
    assert load_prepared(old).split_unit == "subject"
    # recording-split data whose meta lost the key is read as split by subject, and refused
    shared = tmp_path / "shared"
    write_prepared(_crafted("recording", **ONE_SUBJECT), shared)
    _rewrite_meta(shared, lambda m: m.pop("split_unit"))
    with pytest.raises(
        PreparedDataError,
        match=r"subject\(s\) \[7\] have windows in more than one split; "
        r"this data set is split by subject",
    ):
        load_prepared(shared)
