"""On-disk format of a prepared data set, written atomically and validated on load.

    {out_dir}/windows.parquet  one row per window: window_id int64, subject/recording/start int32,
                               split str, label int32, step_labels List[Int32] (T),
                               x List[Float32] (T*C, time-major: x[t*C + c]), normalised
    {out_dir}/meta.json        shapes, channel and modality maps, class names, normalisation,
                               counts, source hashes, the data config used, split_unit (what no
                               two splits share: "subject" or "recording"; absent in folders
                               written before it existed, which were all split by subject)

Lists rather than fixed-size arrays keep the parquet readable by any arrow version; the lengths
are checked on load against meta.json.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from timoe.data.base import SPLIT_UNITS, SPLITS, is_index, modality_problem, names_problem, split_leak
from timoe.data.errors import PreparedDataError

WINDOWS_FILE = "windows.parquet"
META_FILE = "meta.json"
FORMAT_VERSION = 1
_META_KEYS = (
    "dataset",
    "n_timesteps",
    "n_channels",
    "channels",
    "modalities",
    "classes",
    "normalisation",
    "counts",
)
_COLUMNS = {
    "window_id": pl.Int64,
    "subject": pl.Int32,
    "recording": pl.Int32,
    "start": pl.Int32,
    "split": pl.String,
    "label": pl.Int32,
    "step_labels": pl.List(pl.Int32),
    "x": pl.List(pl.Float32),
}
# the split_unit of a meta.json without one: every folder written before the key was split by subject
LEGACY_SPLIT_UNIT = "subject"


@dataclass(frozen=True)
class PreparedData:
    """A prepared data set in memory. x: (N, T, C) float32; step_labels: (N, T); others (N,)."""

    x: np.ndarray
    label: np.ndarray
    step_labels: np.ndarray
    subject: np.ndarray
    recording: np.ndarray
    start: np.ndarray
    split: np.ndarray
    window_id: np.ndarray
    meta: dict[str, Any]

    def __len__(self) -> int:
        return int(self.label.shape[0])

    @property
    def classes(self) -> list[str]:
        return list(self.meta["classes"])

    @property
    def channels(self) -> list[str]:
        return list(self.meta["channels"])

    @property
    def split_unit(self) -> str:
        """What no two splits share ("subject" or "recording"), as meta.json declares it."""
        return meta_split_unit(self.meta)

    @property
    def modalities(self) -> dict[str, list[int]]:
        return {k: list(v) for k, v in self.meta["modalities"].items()}

    def select(self, mask: np.ndarray) -> PreparedData:
        """Rows where `mask` (bool (N,) or integer indices) holds; meta is shared."""
        fields = ("x", "label", "step_labels", "subject", "recording", "start", "split", "window_id")
        return replace(self, **{f: getattr(self, f)[mask] for f in fields})

    def subset(self, split: str) -> PreparedData:
        """The windows of one split ("train", "val" or "test")."""
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
        return self.select(self.split == split)

    def modality(self, name: str) -> np.ndarray:
        """x restricted to one modality's channels: (N, T, C_m)."""
        if name not in self.meta["modalities"]:
            raise KeyError(f"unknown modality {name!r}; known: {sorted(self.meta['modalities'])}")
        return self.x[:, :, self.meta["modalities"][name]]


# ------------------------------------------------------------------------------- writing
def write_windows(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write the windows table; arrays holds the _COLUMNS keys, x as (N, T, C)."""
    n, t, c = arrays["x"].shape
    frame = pl.DataFrame(
        {
            "window_id": pl.Series(arrays["window_id"], dtype=pl.Int64),
            "subject": pl.Series(arrays["subject"], dtype=pl.Int32),
            "recording": pl.Series(arrays["recording"], dtype=pl.Int32),
            "start": pl.Series(arrays["start"], dtype=pl.Int32),
            "split": pl.Series(arrays["split"].astype(str), dtype=pl.String),
            "label": pl.Series(arrays["label"], dtype=pl.Int32),
            # a 2-D numpy array becomes a fixed-size Array column; cast to List for portability
            "step_labels": pl.Series(arrays["step_labels"].astype(np.int32)).cast(pl.List(pl.Int32)),
            "x": pl.Series(arrays["x"].reshape(n, t * c).astype(np.float32)).cast(pl.List(pl.Float32)),
        }
    )
    frame.write_parquet(path, compression="zstd", statistics=False)


def write_meta(path: Path, meta: dict[str, Any]) -> None:
    path.write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")


# ------------------------------------------------------------------------------- reading
def meta_split_unit(meta: dict[str, Any]) -> str:
    """meta.json's split_unit, LEGACY_SPLIT_UNIT where the key is absent (an older folder)."""
    return meta.get("split_unit", LEGACY_SPLIT_UNIT)


def read_meta(out_dir: Path) -> dict[str, Any]:
    path = Path(out_dir) / META_FILE
    if not path.is_file():
        raise PreparedDataError(f"{path}: missing; run `timoe prepare` for this data set")
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise PreparedDataError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(meta, dict):
        raise PreparedDataError(f"{path}: expected a JSON object at the top level")
    missing = [k for k in _META_KEYS if k not in meta]
    if missing:
        raise PreparedDataError(f"{path}: missing key(s) {missing}")
    for key in ("n_timesteps", "n_channels"):
        if not is_index(meta[key]) or meta[key] < 1:
            raise PreparedDataError(f"{path}: {key} must be a positive integer, got {meta[key]!r}")
    if meta_split_unit(meta) not in SPLIT_UNITS:
        raise PreparedDataError(
            f"{path}: split_unit must be one of {list(SPLIT_UNITS)}, got {meta['split_unit']!r}"
        )
    _check_meta_maps(meta, path)
    return meta


def _check_meta_maps(meta: dict[str, Any], path: Path) -> None:
    """Names, modality map and counts: what every later stage indexes without a second look."""
    for key in ("channels", "classes"):
        problem = names_problem(meta[key], key)
        if problem:
            raise PreparedDataError(f"{path}: {problem}")
    if len(meta["channels"]) != meta["n_channels"]:
        raise PreparedDataError(
            f"{path}: {len(meta['channels'])} channel names for n_channels={meta['n_channels']}"
        )
    extra = meta.get("extra") if isinstance(meta.get("extra"), dict) else {}
    reserved = extra.get("regime_channels", [])
    if not isinstance(reserved, list) or not all(is_index(i) for i in reserved):
        raise PreparedDataError(f"{path}: extra.regime_channels must list channel indices, got {reserved!r}")
    problem = modality_problem(meta["modalities"], meta["n_channels"], reserved)
    if problem:
        raise PreparedDataError(f"{path}: modalities: {problem}")
    counts = meta["counts"]
    if not isinstance(counts, dict) or not isinstance(counts.get("split", {}), dict):
        raise PreparedDataError(f"{path}: counts must be a mapping with a 'split' mapping, got {counts!r}")


def _read_table(path: Path) -> pl.DataFrame:
    if not path.is_file():
        raise PreparedDataError(f"{path}: missing; run `timoe prepare` for this data set")
    try:
        frame = pl.read_parquet(path)
    except Exception as err:  # polars/arrow raise many types for a damaged file; report them as one
        raise PreparedDataError(f"{path}: cannot be read as parquet ({type(err).__name__}: {err})") from None
    wrong = {k: str(frame.schema.get(k)) for k, dt in _COLUMNS.items() if frame.schema.get(k) != dt}
    if wrong:
        raise PreparedDataError(f"{path}: missing or mistyped column(s) {wrong}; expected {_COLUMNS}")
    nulls = [k for k in _COLUMNS if frame[k].null_count()]
    if nulls:
        raise PreparedDataError(f"{path}: null values in column(s) {nulls}")
    return frame


def _fixed_lists(frame: pl.DataFrame, column: str, length: int, path: Path) -> np.ndarray:
    lengths = frame[column].list.len()
    if len(frame) and (lengths.min() != length or lengths.max() != length):
        raise PreparedDataError(
            f"{path}: column {column} has lists of length {lengths.min()}..{lengths.max()}, expected {length}"
        )
    flat = frame[column].explode()
    if flat.null_count():
        raise PreparedDataError(f"{path}: column {column} has null entries inside lists")
    return flat.to_numpy().reshape(len(frame), length)


def load_prepared(out_dir: Path) -> PreparedData:
    """Read a prepared data set; PreparedDataError names the file and problem on any defect."""
    out_dir = Path(out_dir)
    meta = read_meta(out_dir)
    path = out_dir / WINDOWS_FILE
    frame = _read_table(path)
    t, c, n = meta["n_timesteps"], meta["n_channels"], len(frame)
    x = _fixed_lists(frame, "x", t * c, path).astype(np.float32, copy=False).reshape(n, t, c)
    steps = _fixed_lists(frame, "step_labels", t, path).astype(np.int32, copy=False)
    data = PreparedData(
        x=x,
        label=frame["label"].to_numpy(),
        step_labels=steps,
        subject=frame["subject"].to_numpy(),
        recording=frame["recording"].to_numpy(),
        start=frame["start"].to_numpy(),
        split=frame["split"].to_numpy().astype(str),
        window_id=frame["window_id"].to_numpy(),
        meta=meta,
    )
    _check_consistency(data, path)
    return data


def _check_consistency(data: PreparedData, path: Path) -> None:
    k = len(data.meta["classes"])
    if len(data) and (data.label.min() < 0 or data.label.max() >= k):
        raise PreparedDataError(f"{path}: labels outside 0..{k - 1}")
    if data.step_labels.size and (data.step_labels.min() < -1 or data.step_labels.max() >= k):
        raise PreparedDataError(f"{path}: step_labels outside -1..{k - 1}")
    bad = sorted(set(np.unique(data.split).tolist()) - set(SPLITS))
    if bad:
        raise PreparedDataError(f"{path}: unknown split name(s) {bad}")
    if np.unique(data.window_id).size != len(data):
        raise PreparedDataError(f"{path}: window_id values are not unique")
    bad_x = ~np.isfinite(data.x).all(axis=(1, 2))
    if bad_x.any():
        # prepare never writes these (it refuses a non-finite source), so the file was altered
        raise PreparedDataError(
            f"{path}: column x holds NaN or inf in {int(bad_x.sum())} window(s) (window_id "
            f"{data.window_id[bad_x][:5].tolist()}); re-run `timoe prepare`"
        )
    leak = split_leak(data.split_unit, data.subject, data.recording, data.split)
    if leak:
        raise PreparedDataError(f"{path}: {leak}")
    expected = data.meta["counts"].get("split", {})
    found = {s: int(np.sum(data.split == s)) for s in SPLITS}
    if {s: expected.get(s, 0) for s in SPLITS} != found:
        raise PreparedDataError(f"{path}: split counts {found} differ from meta.json's {expected}")
