"""Data layer: raw sources -> windows -> split -> normalisation -> parquet + meta.json.

Public entry points: `prepare_dataset`, `load_prepared`, `PreparedData`, `get_dataset`,
`DATASETS`, and the errors in `timoe.data.errors`.
"""

from timoe.data import basicmotions, custom, hapt, opportunity, pamap2, wesad
from timoe.data.errors import (
    DataError,
    DataFormatError,
    DataSourceError,
    PreparedDataError,
    UnknownDatasetError,
    UnsafePickleError,
)
from timoe.data.io import PreparedData, load_prepared
from timoe.data.prepare import prepare_dataset
from timoe.data.registry import DATASETS, get_dataset

__all__ = [
    "DATASETS",
    "DataError",
    "DataFormatError",
    "DataSourceError",
    "PreparedData",
    "PreparedDataError",
    "UnknownDatasetError",
    "UnsafePickleError",
    "basicmotions",
    "custom",
    "get_dataset",
    "hapt",
    "load_prepared",
    "opportunity",
    "pamap2",
    "prepare_dataset",
    "wesad",
]
