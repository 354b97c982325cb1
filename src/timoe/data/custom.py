"""Bring your own data: a parquet of windows plus a small JSON description.

    windows.parquet  subject int, label int (class index) or str (class name),
                     x list[float] of length T*C, time-major (x[t*C + c]), unnormalised;
                     optional: split str (train/val/test), recording int, start int,
                     step_labels list[int] (T, class index or -1)
    dataset.json     {"name": str, "n_timesteps": T, "channels": [C names],
                      "modalities": {modality: [channel indices]}, "classes": [names],
                      "sample_rate_hz": float (optional)}

Without a split column, windows are split by subject with val_subjects / test_subjects.
Without recording/start, each window is its own recording starting at 0, so no temporal
relation between windows is invented; provide them to let lags span neighbouring windows.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from timoe.data.base import SPLITS, WindowedDataset, is_index, modality_problem, names_problem
from timoe.data.errors import DataFormatError, DataSourceError
from timoe.data.sources import sha256_file
from timoe.data.splits import require_splits, split_by_subject


def read_spec(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise DataSourceError(f"{path}: dataset description not found")
    try:
        spec = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DataFormatError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(spec, dict):
        raise DataFormatError(f"{path}: expected a JSON object at the top level")
    missing = [k for k in ("name", "n_timesteps", "channels", "modalities", "classes") if k not in spec]
    if missing:
        raise DataFormatError(f"{path}: missing key(s) {missing}")
    _check_spec(spec, path)
    return spec


def _check_spec(spec: dict[str, Any], path: Path) -> None:
    """Types as the format says, before any of them is used (a string would iterate as letters)."""
    if not is_index(spec["n_timesteps"]) or spec["n_timesteps"] < 1:
        raise DataFormatError(f"{path}: n_timesteps must be a positive integer, got {spec['n_timesteps']!r}")
    for key in ("channels", "classes"):
        problem = names_problem(spec[key], key)
        if problem:
            raise DataFormatError(f"{path}: {problem}")
    problem = modality_problem(spec["modalities"], len(spec["channels"]))
    if problem:
        raise DataFormatError(f"{path}: modalities: {problem}")


def _column(frame: pl.DataFrame, name: str, path: Path) -> np.ndarray:
    if frame[name].null_count():
        raise DataFormatError(f"{path}: column {name} has null values")
    return frame[name].to_numpy()


def _lists(frame: pl.DataFrame, name: str, length: int, path: Path) -> np.ndarray:
    lengths = frame[name].list.len()
    if frame[name].null_count() or lengths.min() != length or lengths.max() != length:
        raise DataFormatError(f"{path}: every {name} list must have length {length} and no nulls")
    flat = frame[name].explode()
    if flat.null_count():
        raise DataFormatError(f"{path}: column {name} has null entries inside lists")
    return flat.to_numpy().reshape(len(frame), length)


def build(
    parquet: Path,
    spec_path: Path | None = None,
    val_subjects: Sequence[int] = (),
    test_subjects: Sequence[int] = (),
    seed: int = 0,
) -> WindowedDataset:
    """Read a user windows parquet (and its dataset.json, default: next to it)."""
    parquet = Path(parquet)
    spec_path = parquet.with_name("dataset.json") if spec_path is None else Path(spec_path)
    spec = read_spec(spec_path)
    if not parquet.is_file():
        raise DataSourceError(f"{parquet}: windows parquet not found")
    try:
        frame = pl.read_parquet(parquet)
    except Exception as err:  # polars/arrow raise many types for a damaged file
        raise DataFormatError(f"{parquet}: cannot be read as parquet ({type(err).__name__}: {err})") from None
    missing = [c for c in ("subject", "label", "x") if c not in frame.columns]
    if missing:
        raise DataFormatError(f"{parquet}: missing column(s) {missing}")
    t, channels, classes = int(spec["n_timesteps"]), list(spec["channels"]), list(spec["classes"])
    n, c = len(frame), len(channels)
    x = _lists(frame, "x", t * c, parquet).astype(np.float32).reshape(n, t, c)
    bad = ~np.isfinite(x).all(axis=(1, 2))
    if bad.any():
        raise DataFormatError(
            f"{parquet}: column x holds NaN or inf in {int(bad.sum())} window(s) (rows "
            f"{np.flatnonzero(bad)[:5].tolist()}); timoe does not impute"
        )
    raw = _column(frame, "label", parquet)
    if raw.dtype.kind in "OUS":
        unknown = sorted(set(raw.tolist()) - set(classes))
        if unknown:
            raise DataFormatError(f"{parquet}: labels {unknown} not in dataset.json classes")
        label = np.asarray([classes.index(v) for v in raw], dtype=np.int32)
    else:
        label = raw.astype(np.int32)
    subject = _column(frame, "subject", parquet).astype(np.int32)
    if "split" in frame.columns:
        split = _column(frame, "split", parquet).astype("<U5")
        bad = sorted(set(split.tolist()) - set(SPLITS))
        if bad:
            raise DataFormatError(f"{parquet}: unknown split value(s) {bad}")
    else:
        split = split_by_subject(subject, test_subjects, val_subjects)
    require_splits(split, str(spec["name"]))
    has = frame.columns.__contains__
    try:
        return WindowedDataset(
            name=str(spec["name"]),
            x=x,
            label=label,
            step_labels=(
                _lists(frame, "step_labels", t, parquet).astype(np.int32)
                if has("step_labels")
                else np.repeat(label[:, None], t, axis=1)
            ),
            subject=subject,
            recording=(
                _column(frame, "recording", parquet).astype(np.int32)
                if has("recording")
                else np.arange(n, dtype=np.int32)
            ),
            start=_column(frame, "start", parquet).astype(np.int32)
            if has("start")
            else np.zeros(n, np.int32),
            split=split,
            channels=channels,
            modalities={k: [int(i) for i in v] for k, v in spec["modalities"].items()},
            classes=[str(k) for k in classes],
            sources={parquet.name: sha256_file(parquet), spec_path.name: sha256_file(spec_path)},
            config={
                "seed": seed,
                "custom": {"val_subjects": list(val_subjects), "test_subjects": list(test_subjects)},
            },
            sample_rate_hz=spec.get("sample_rate_hz"),
        )
    except ValueError as err:  # WindowedDataset's own shape / range checks
        raise DataFormatError(f"{parquet}: {err}") from None
