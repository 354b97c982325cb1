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

From params: `data.custom.<name>: {path: <folder with both files>, val_subjects, test_subjects}`
and `<name>` in `data.datasets` (`build_configured`); the data set is then called <name>, whatever
dataset.json's "name" says.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from timoe.config import DataConfig
from timoe.data.base import SPLITS, WindowedDataset, is_index, modality_problem, names_problem
from timoe.data.errors import DataFormatError, DataSourceError, UnknownDatasetError
from timoe.data.sources import configured_folder, sha256_file
from timoe.data.splits import require_splits, split_by_subject

WINDOWS_FILE = "windows.parquet"
SPEC_FILE = "dataset.json"
FORMAT_HINT = f"the folder must hold {WINDOWS_FILE} and {SPEC_FILE} (see the README, 'Adding a data set')"


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
    name: str | None = None,
) -> WindowedDataset:
    """Read a user windows parquet (and its dataset.json, default: next to it); `name` (default
    dataset.json's) names the data set."""
    parquet = Path(parquet)
    spec_path = parquet.with_name(SPEC_FILE) if spec_path is None else Path(spec_path)
    spec = read_spec(spec_path)
    frame = _read_windows(parquet)
    t, channels, classes = int(spec["n_timesteps"]), list(spec["channels"]), list(spec["classes"])
    n = len(frame)
    x = _windows(frame, parquet, t, len(channels))
    label = _labels(frame, parquet, classes)
    subject = _column(frame, "subject", parquet).astype(np.int32)
    split = _split(frame, parquet, subject, val_subjects, test_subjects)
    name = str(spec["name"]) if name is None else name
    require_splits(split, name)
    has = frame.columns.__contains__
    try:
        return WindowedDataset(
            name=name,
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
            start=(
                _column(frame, "start", parquet).astype(np.int32) if has("start") else np.zeros(n, np.int32)
            ),
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


def _read_windows(parquet: Path) -> pl.DataFrame:
    """The windows table, with its three required columns."""
    if not parquet.is_file():
        raise DataSourceError(f"{parquet}: windows parquet not found")
    try:
        frame = pl.read_parquet(parquet)
    except Exception as err:  # polars/arrow raise many types for a damaged file
        raise DataFormatError(f"{parquet}: cannot be read as parquet ({type(err).__name__}: {err})") from None
    missing = [c for c in ("subject", "label", "x") if c not in frame.columns]
    if missing:
        raise DataFormatError(f"{parquet}: missing column(s) {missing}")
    return frame


def _windows(frame: pl.DataFrame, parquet: Path, t: int, c: int) -> np.ndarray:
    """x as [N, T, C] float32, refusing NaN or inf (timoe does not impute)."""
    x = _lists(frame, "x", t * c, parquet).astype(np.float32).reshape(len(frame), t, c)
    bad = ~np.isfinite(x).all(axis=(1, 2))
    if bad.any():
        raise DataFormatError(
            f"{parquet}: column x holds NaN or inf in {int(bad.sum())} window(s) (rows "
            f"{np.flatnonzero(bad)[:5].tolist()}); timoe does not impute"
        )
    return x


def _labels(frame: pl.DataFrame, parquet: Path, classes: list[Any]) -> np.ndarray:
    """[N] class indices, from indices or from class names."""
    raw = _column(frame, "label", parquet)
    if raw.dtype.kind not in "OUS":
        return raw.astype(np.int32)
    unknown = sorted(set(raw.tolist()) - set(classes))
    if unknown:
        raise DataFormatError(f"{parquet}: labels {unknown} not in dataset.json classes")
    return np.asarray([classes.index(v) for v in raw], dtype=np.int32)


def _split(
    frame: pl.DataFrame,
    parquet: Path,
    subject: np.ndarray,
    val_subjects: Sequence[int],
    test_subjects: Sequence[int],
) -> np.ndarray:
    """[N] split names: the file's own split column, else by subject."""
    if "split" not in frame.columns:
        return split_by_subject(subject, test_subjects, val_subjects)
    split = _column(frame, "split", parquet).astype("<U5")
    bad = sorted(set(split.tolist()) - set(SPLITS))
    if bad:
        raise DataFormatError(f"{parquet}: unknown split value(s) {bad}")
    return split


def build_configured(name: str, cfg: DataConfig) -> WindowedDataset:
    """The bring-your-own data set configured as data.custom.<name>."""
    cc = cfg.custom.get(name)
    if cc is None:
        raise UnknownDatasetError(
            f"{name!r} is not configured under data.custom (configured: {sorted(cfg.custom)})"
        )
    key = f"data.custom.{name}.path"
    folder = configured_folder(cc.path, key, WINDOWS_FILE, FORMAT_HINT)
    configured_folder(cc.path, key, SPEC_FILE, FORMAT_HINT)
    return build(
        folder / WINDOWS_FILE, folder / SPEC_FILE, cc.val_subjects, cc.test_subjects, cfg.seed, name=name
    )
