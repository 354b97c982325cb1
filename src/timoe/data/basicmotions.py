"""UEA BasicMotions (4 activities, smart-watch accelerometer + gyroscope, 10 Hz, 10 s per case).

Read from the `.ts` files bundled with aeon (the package is never imported). The official
40/40 train/test split is kept; validation is carved from train cases, stratified by class.
Each case is its own subject and its own recording: the UEA files do not say which of the
four participants recorded a case, so no subject-level split is possible.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from timoe.config import DataConfig
from timoe.data.base import WindowedDataset
from timoe.data.errors import DataFormatError
from timoe.data.sources import package_file, sha256_file
from timoe.data.splits import require_splits, stratified_holdout
from timoe.data.ts_format import TsData, read_ts

PACKAGE = "aeon"
REQUIREMENT = "aeon==1.6.0"
RESOURCE = "datasets/data/BasicMotions/BasicMotions_{part}.ts"
SAMPLE_RATE_HZ = 10.0
CHANNELS = ["acc-x", "acc-y", "acc-z", "gyro-x", "gyro-y", "gyro-z"]
MODALITIES = {"acc": [0, 1, 2], "gyro": [3, 4, 5]}


def source_paths() -> dict[str, Path]:
    """{"TRAIN": path, "TEST": path} of the bundled files (DataSourceError if aeon is missing)."""
    return {p: package_file(PACKAGE, RESOURCE.format(part=p), REQUIREMENT) for p in ("TRAIN", "TEST")}


def read_parts(paths: dict[str, Path]) -> tuple[TsData, TsData]:
    train, test = read_ts(paths["TRAIN"]), read_ts(paths["TEST"])
    if train.class_names != test.class_names:
        raise DataFormatError(
            f"{paths['TEST']}: classes {test.class_names} differ from TRAIN's {train.class_names}"
        )
    if train.x.shape[1:] != test.x.shape[1:] or train.x.shape[1] != len(CHANNELS):
        raise DataFormatError(
            f"BasicMotions cases have shapes {train.x.shape[1:]} / {test.x.shape[1:]}, "
            f"expected ({len(CHANNELS)}, T) in both files"
        )
    return train, test


def build(cfg: DataConfig) -> WindowedDataset:
    """One window per case (T=100); split train/val/test with val stratified from train."""
    paths = source_paths()
    train, test = read_parts(paths)
    classes = train.class_names
    to_index = {name: i for i, name in enumerate(classes)}
    x = np.concatenate([train.x, test.x]).transpose(0, 2, 1)  # (N, C, T) -> (N, T, C)
    label = np.asarray([to_index[n] for n in [*train.labels, *test.labels]], dtype=np.int32)
    n_train, n = len(train.labels), label.size
    split = np.full(n, "test", dtype="<U5")
    split[:n_train] = "train"
    held = stratified_holdout(label[:n_train], cfg.basicmotions.val_fraction, cfg.seed)
    split[:n_train][held] = "val"
    require_splits(split, "basicmotions")
    case_ids = np.arange(n, dtype=np.int32)  # train cases 0..n_train-1, then test cases
    return WindowedDataset(
        name="basicmotions",
        x=np.ascontiguousarray(x, dtype=np.float32),
        label=label,
        step_labels=np.repeat(label[:, None], x.shape[1], axis=1),
        subject=case_ids,
        recording=case_ids.copy(),
        start=np.zeros(n, dtype=np.int32),
        split=split,
        channels=list(CHANNELS),
        modalities={k: list(v) for k, v in MODALITIES.items()},
        classes=list(classes),
        sources={f"{PACKAGE}/{RESOURCE.format(part=p)}": sha256_file(q) for p, q in paths.items()},
        config={"seed": cfg.seed, "basicmotions": cfg.basicmotions.model_dump(mode="json")},
        sample_rate_hz=SAMPLE_RATE_HZ,
        extra={"package": REQUIREMENT, "n_official_train": n_train},
    )
