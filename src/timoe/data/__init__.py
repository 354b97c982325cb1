"""Data layer: raw sources -> windows -> split -> normalisation -> parquet + meta.json.

Public entry points: `prepare_dataset`, `load_prepared`, `PreparedData`, `get_dataset`,
`DATASETS`, and the errors in `timoe.data.errors`.

The names load on first use (PEP 562): importing `timoe.data.errors` or `timoe.data.io` then does
not import every reader (scipy.signal alone is ~1 s), which every train and sweep job paid.
"""

from __future__ import annotations

import importlib
from typing import Any

_WHERE = {
    "DataError": "timoe.data.errors",
    "DataFormatError": "timoe.data.errors",
    "DataSourceError": "timoe.data.errors",
    "PreparedDataError": "timoe.data.errors",
    "UnknownDatasetError": "timoe.data.errors",
    "UnsafePickleError": "timoe.data.errors",
    "PreparedData": "timoe.data.io",
    "load_prepared": "timoe.data.io",
    "prepare_dataset": "timoe.data.prepare",
    "DATASETS": "timoe.data.registry",
    "get_dataset": "timoe.data.registry",
}
_MODULES = ("basicmotions", "custom", "hapt", "opportunity", "pamap2", "wesad")

__all__ = sorted([*_WHERE, *_MODULES])


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name]), name)
    if name in _MODULES:
        return importlib.import_module(f"timoe.data.{name}")
    raise AttributeError(f"module 'timoe.data' has no attribute {name!r}")
