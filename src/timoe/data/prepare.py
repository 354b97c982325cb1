"""The prepare stage: raw source -> normalised windows on disk (data/processed/{dataset}/).

Deterministic: the same source files and config give the same windows, split and meta.json
(no timestamps in the output), so DVC sees no change when nothing changed.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np

from timoe.atomic import atomic_dir as atomic_directory
from timoe.config import DataConfig
from timoe.data.base import SPLITS, WindowedDataset
from timoe.data.errors import DataFormatError, DataWarning
from timoe.data.io import FORMAT_VERSION, META_FILE, WINDOWS_FILE, write_meta, write_windows
from timoe.data.normalise import apply_channel_stats, fit_channel_stats
from timoe.data.registry import get_dataset


def _counts(ds: WindowedDataset) -> dict[str, Any]:
    per_class = {}
    for s in SPLITS:
        labels = ds.label[ds.split == s]
        per_class[s] = {name: int(np.sum(labels == i)) for i, name in enumerate(ds.classes)}
    return {"split": {s: int(np.sum(ds.split == s)) for s in SPLITS}, "class": per_class}


def build_meta(ds: WindowedDataset, mean: np.ndarray, std: np.ndarray) -> dict[str, Any]:
    """meta.json content for a built data set and its train-split statistics."""
    n, t, c = ds.x.shape
    return {
        "format_version": FORMAT_VERSION,
        "dataset": ds.name,
        "n_windows": n,
        "n_timesteps": t,
        "n_channels": c,
        "sample_rate_hz": ds.sample_rate_hz,
        "channels": list(ds.channels),
        "modalities": {k: list(v) for k, v in ds.modalities.items()},
        "classes": list(ds.classes),
        "normalisation": {"fitted_on": "train", "mean": mean.tolist(), "std": std.tolist()},
        "counts": _counts(ds),
        "split_unit": ds.split_unit,
        "sources": {"sha256": dict(ds.sources)},
        "config": ds.config,
        "extra": ds.extra,
    }


def build_checked(name: str, data_cfg: DataConfig) -> WindowedDataset:
    """Build one data set and check it, writing nothing: the prepare stage calls this before it
    opens an MLflow run, so a bad source leaves no run and no output behind."""
    ds = get_dataset(name, data_cfg)(data_cfg)
    bad = ~np.isfinite(ds.x).all(axis=(1, 2))
    if bad.any():
        raise DataFormatError(
            f"{name}: the source holds NaN or inf values in {int(bad.sum())} window(s), "
            "which prepare does not impute"
        )
    absent = [c for i, c in enumerate(ds.classes) if not np.any(ds.label[ds.split == "train"] == i)]
    if absent:
        # a warning, not an error: a smoke-run subset may lack a class; its test windows then
        # score as errors whatever the model does
        warnings.warn(f"{name}: class(es) {absent} have no training window", DataWarning, stacklevel=2)
    return ds


def prepare_dataset(name: str, data_cfg: DataConfig, out_dir: Path) -> dict[str, Any]:
    """Build, normalise (train statistics) and write one data set to out_dir; return its meta.

    Written atomically: on any error out_dir is left as it was before the call.
    """
    return write_prepared(build_checked(name, data_cfg), out_dir)


def write_prepared(ds: WindowedDataset, out_dir: Path) -> dict[str, Any]:
    """Normalise (train statistics) and write a built data set to out_dir atomically; its meta."""
    mean, std = fit_channel_stats(ds.x, ds.split)
    x = apply_channel_stats(ds.x, mean, std)
    meta = build_meta(ds, mean, std)
    arrays = {
        "window_id": np.arange(len(ds.label), dtype=np.int64),
        "subject": ds.subject,
        "recording": ds.recording,
        "start": ds.start,
        "split": ds.split,
        "label": ds.label,
        "step_labels": ds.step_labels,
        "x": x,
    }
    with atomic_directory(Path(out_dir)) as tmp:
        write_windows(tmp / WINDOWS_FILE, arrays)
        write_meta(tmp / META_FILE, meta)
    return meta
