"""PAMAP2 physical activity monitoring, from its official `Protocol/subject10X.dat` files.

Each file: space-separated, 54 columns at 100 Hz: timestamp (s), activity id, heart rate (bpm,
~9 Hz, NaN in between), then 17 columns for each IMU (hand, chest, ankle): temperature,
acc ±16 g (3), acc ±6 g (3), gyro (3), magnetometer (3), orientation (4, documented as invalid
and dropped). Activity 0 marks transients. Not bundled in any package: users download it and
point `data.pamap2.path` at the `Protocol` folder (knobs: timoe.config.Pamap2Config; by default
the 12 protocol activities, split by subject: val 107, test 108 and 109).

Gaps: heart rate is carried forward (it is a slow signal sampled at a lower rate); IMU dropouts
are linearly interpolated within the recording, so no window spans a gap filled with zeros.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from timoe.config import DataConfig
from timoe.data.assemble import RecordingSet, fill_gaps, from_recordings
from timoe.data.base import Recording, WindowedDataset
from timoe.data.errors import DataFormatError, DataSourceError
from timoe.data.sources import configured_folder, sha256_file

N_COLUMNS = 54
SAMPLE_RATE_HZ = 100.0
IMUS = ("hand", "chest", "ankle")
_IMU_FIELDS = [
    "temp",
    "acc16-x",
    "acc16-y",
    "acc16-z",
    "acc6-x",
    "acc6-y",
    "acc6-z",
    "gyro-x",
    "gyro-y",
    "gyro-z",
    "mag-x",
    "mag-y",
    "mag-z",
]  # orientation dropped
ACTIVITIES = {
    1: "lying",
    2: "sitting",
    3: "standing",
    4: "walking",
    5: "running",
    6: "cycling",
    7: "nordic_walking",
    9: "watching_tv",
    10: "computer_work",
    11: "car_driving",
    12: "ascending_stairs",
    13: "descending_stairs",
    16: "vacuum_cleaning",
    17: "ironing",
    18: "folding_laundry",
    19: "house_cleaning",
    20: "playing_soccer",
    24: "rope_jumping",
}
PROTOCOL_ACTIVITIES = [1, 2, 3, 4, 5, 6, 7, 12, 13, 16, 17, 24]  # the 12 of the protocol
FILE_PATTERN = "subject*.dat"
_FILE = re.compile(r"subject(\d+)\.dat$")


def channel_layout() -> tuple[list[str], dict[str, list[int]], list[int]]:
    """(channel names, modality -> channel indices, source column of each channel)."""
    channels, modalities, columns = ["heart_rate"], {"heart_rate": [0]}, [2]
    for k, imu in enumerate(IMUS):
        base = 3 + 17 * k
        modalities[imu] = list(range(len(channels), len(channels) + len(_IMU_FIELDS)))
        channels += [f"{imu}-{f}" for f in _IMU_FIELDS]
        columns += list(range(base, base + len(_IMU_FIELDS)))
    return channels, modalities, columns


def _subject_id(path: Path) -> int:
    match = _FILE.search(path.name)
    if not match:
        raise DataFormatError(f"{path}: expected a file named subject<id>.dat")
    return int(match.group(1))


def read_subject(path: Path, downsample: int = 1) -> Recording:
    """One subject file -> Recording with x (T, 40) float32 and labels (T,) activity ids."""
    subject = _subject_id(path)
    try:
        table = np.loadtxt(path, dtype=np.float64, ndmin=2)
    except (OSError, ValueError) as err:
        raise DataFormatError(f"{path}: cannot be parsed as PAMAP2 .dat ({err})") from None
    if table.shape[1] != N_COLUMNS:
        raise DataFormatError(f"{path}: {table.shape[1]} columns, expected {N_COLUMNS}")
    activity = table[:, 1]
    if not np.isfinite(activity).all() or np.any(activity != np.round(activity)):
        raise DataFormatError(f"{path}: activity column holds non-integer values")
    bad = sorted(set(np.unique(activity).astype(int).tolist()) - {0, *ACTIVITIES})
    if bad:
        raise DataFormatError(f"{path}: unknown activity id(s) {bad}")
    channels, _, columns = channel_layout()
    x = np.stack(
        [
            fill_gaps(table[:, col], path, ch, carry_forward=ch == "heart_rate")
            for ch, col in zip(channels, columns, strict=True)
        ],
        axis=1,
    )
    step = max(1, int(downsample))
    return Recording(
        subject=subject,
        index=0,
        x=x[::step].astype(np.float32),
        labels=activity[::step].astype(np.int32),
    )


def read_protocol(root: Path, subjects: Sequence[int] | None = None, downsample: int = 1) -> RecordingSet:
    """All subject*.dat files under root (the `Protocol` folder), ordered by subject id."""
    root = Path(root)
    files = sorted(root.glob(FILE_PATTERN), key=_subject_id)
    if subjects is not None:
        files = [f for f in files if _subject_id(f) in set(subjects)]
    if not files:
        raise DataSourceError(
            f"no PAMAP2 subject*.dat file under {root}; download PAMAP2 from the UCI repository "
            "and point timoe at its Protocol folder"
        )
    channels, modalities, _ = channel_layout()
    return RecordingSet(
        name="pamap2",
        recordings=[read_subject(f, downsample) for f in files],
        channels=channels,
        modalities=modalities,
        label_names=ACTIVITIES,
        sources={f"Protocol/{f.name}": sha256_file(f) for f in files},
        sample_rate_hz=SAMPLE_RATE_HZ / max(1, downsample),
    )


def build(cfg: DataConfig) -> WindowedDataset:
    """Windows of the protocol recordings under data.pamap2.path, split by subject."""
    pc = cfg.pamap2
    root = configured_folder(pc.path, "data.pamap2.path", FILE_PATTERN, pc.source_hint)
    rs = read_protocol(root, pc.subjects, pc.downsample)
    return from_recordings(
        rs,
        window=pc.window,
        stride=pc.stride,
        classes=PROTOCOL_ACTIVITIES if pc.classes is None else pc.classes,
        val_subjects=pc.val_subjects,
        test_subjects=pc.test_subjects,
        config={"seed": cfg.seed, "pamap2": pc.model_dump(mode="json")},
    )
