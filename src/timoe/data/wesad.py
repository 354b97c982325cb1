"""WESAD (wearable stress and affect detection), from its official `S*/S*.pkl` files.

Each pickle (written by Python 2) holds {"subject": "S2", "label": (N,) at 700 Hz,
"signal": {"chest": {ACC (N,3), ECG, EMG, EDA, Temp, Resp (N,1)} at 700 Hz,
"wrist": {ACC (M,3) 32 Hz, BVP 64 Hz, EDA 4 Hz, TEMP 4 Hz}}}. It is read with the restricted
unpickler (numpy arrays, dicts, lists, strings only). All signals are resampled onto one time
grid of `target_hz`: block means where the rate is an integer multiple (chest 700 Hz -> 35 Hz
averages 20 samples, which also suppresses aliasing), linear interpolation otherwise.
Labels: 0 transient, 1 baseline, 2 stress, 3 amusement, 4 meditation, 5-7 not to be used.
Not bundled in any package: users download it and point `data.wesad.path` at the folder holding
S<id>/S<id>.pkl (knobs: timoe.config.WesadConfig; by default classes 1-3, split by subject:
val S15, test S16 and S17).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from timoe.config import DataConfig, WesadConfig
from timoe.data.assemble import RecordingSet, from_recordings
from timoe.data.base import Recording, WindowedDataset
from timoe.data.errors import DataFormatError, DataSourceError, UnsafePickleError
from timoe.data.safe_pickle import NUMPY_GLOBALS, restricted_load
from timoe.data.sources import configured_folder, sha256_file

LABEL_RATE_HZ = 700.0
RATES = {  # keyed by the devices timoe.config.WesadDevice names
    "chest": {"ACC": 700.0, "ECG": 700.0, "EMG": 700.0, "EDA": 700.0, "Temp": 700.0, "Resp": 700.0},
    "wrist": {"ACC": 32.0, "BVP": 64.0, "EDA": 4.0, "TEMP": 4.0},
}
LABELS = {
    0: "transient",
    1: "baseline",
    2: "stress",
    3: "amusement",
    4: "meditation",
    5: "ignore5",
    6: "ignore6",
    7: "ignore7",
}
FILE_PATTERN = "S*/S*.pkl"
_SUBJECT = re.compile(r"S(\d+)$")


def read_pickle(path: Path) -> dict[str, Any]:
    """The raw dict of one subject file, validated; nothing but numpy data can be loaded."""
    try:
        with open(path, "rb") as fh:
            data = restricted_load(fh, NUMPY_GLOBALS, encoding="latin1")
    except UnsafePickleError as err:
        raise UnsafePickleError(f"{path}: {err}") from None
    except Exception as err:  # truncated or foreign files raise many types; report them as one
        reason = f"{type(err).__name__}: {err}"
        raise DataFormatError(f"{path}: cannot be read as a WESAD pickle ({reason})") from None
    if not isinstance(data, Mapping) or not {"signal", "label"} <= set(data):
        raise DataFormatError(f"{path}: expected a dict with 'signal' and 'label'")
    signal = data["signal"]
    for device, rates in RATES.items():
        got = signal.get(device) if isinstance(signal, Mapping) else None
        if not isinstance(got, Mapping) or not set(rates) <= set(got):
            raise DataFormatError(f"{path}: signal.{device} must hold {sorted(rates)}")
        for name in rates:
            if not isinstance(got[name], np.ndarray) or got[name].ndim not in (1, 2):
                raise DataFormatError(f"{path}: signal.{device}.{name} is not a 1-D or 2-D array")
    label = np.asarray(data["label"]).ravel()
    if label.size != len(signal["chest"]["ACC"]):
        raise DataFormatError(f"{path}: {label.size} labels for {len(signal['chest']['ACC'])} chest samples")
    return dict(data)


def _resample(values: np.ndarray, rate: float, target: float, n_out: int) -> np.ndarray:
    values = values.reshape(len(values), -1).astype(np.float64)
    ratio = rate / target
    if ratio >= 1 and float(ratio).is_integer():
        q = int(ratio)
        return values[: n_out * q].reshape(n_out, q, -1).mean(axis=1)
    t_out = np.arange(n_out) / target
    t_in = np.arange(len(values)) / rate
    return np.stack([np.interp(t_out, t_in, col) for col in values.T], axis=1)


def to_recording(
    data: Mapping[str, Any], subject: int, options: WesadConfig
) -> tuple[Recording, list[str], dict[str, list[int]]]:
    """Resample one subject's signals onto a common grid; (recording, channels, modalities)."""
    target = options.target_hz
    label = np.asarray(data["label"]).ravel().astype(np.int32)
    lengths = [len(label) / LABEL_RATE_HZ]
    for device in options.devices:
        for name, rate in RATES[device].items():
            lengths.append(len(data["signal"][device][name]) / rate)
    n_out = int(np.floor(min(lengths) * target))
    columns, channels, modalities = [], [], {}
    for device in options.devices:
        for name, rate in RATES[device].items():
            block = _resample(np.asarray(data["signal"][device][name]), rate, target, n_out)
            width = block.shape[1]
            suffixes = ["-x", "-y", "-z"] if width == 3 else [f"-{i}" for i in range(width)]
            suffixes = [""] if width == 1 else suffixes
            modalities[f"{device}_{name.lower()}"] = list(range(len(channels), len(channels) + width))
            channels += [f"{device}-{name}{s}" for s in suffixes]
            columns.append(block)
    # the label at each grid step's centre, so a step is never labelled from the previous block
    centre = np.minimum(((np.arange(n_out) + 0.5) * LABEL_RATE_HZ / target).astype(int), len(label) - 1)
    x = np.concatenate(columns, axis=1).astype(np.float32)
    return Recording(subject=subject, index=0, x=x, labels=label[centre]), channels, modalities


def read_root(root: Path, options: WesadConfig | None = None) -> RecordingSet:
    """All S*/S*.pkl files under root, ordered by subject number."""
    opt = options or WesadConfig()
    files = [p for p in Path(root).glob(FILE_PATTERN) if _SUBJECT.match(p.stem)]
    files.sort(key=lambda p: int(p.stem[1:]))
    if opt.subjects is not None:
        files = [p for p in files if int(p.stem[1:]) in set(opt.subjects)]
    if not files:
        raise DataSourceError(f"no WESAD S*/S*.pkl file under {root}; download WESAD and point timoe at it")
    recordings, channels, modalities = [], [], {}
    for path in files:
        rec, channels, modalities = to_recording(read_pickle(path), int(path.stem[1:]), opt)
        recordings.append(rec)
    return RecordingSet(
        name="wesad",
        recordings=recordings,
        channels=channels,
        modalities=modalities,
        label_names=LABELS,
        sources={f"{p.parent.name}/{p.name}": sha256_file(p) for p in files},
        sample_rate_hz=opt.target_hz,
    )


def build(cfg: DataConfig) -> WindowedDataset:
    """Windows of every subject under data.wesad.path, split by subject."""
    wc = cfg.wesad
    root = configured_folder(wc.path, "data.wesad.path", FILE_PATTERN, wc.source_hint)
    rs = read_root(root, wc)
    return from_recordings(
        rs,
        window=wc.window,
        stride=wc.stride,
        classes=wc.classes,
        val_subjects=wc.val_subjects,
        test_subjects=wc.test_subjects,
        config={"seed": cfg.seed, "wesad": wc.model_dump(mode="json")},
    )
