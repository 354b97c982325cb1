"""Exceptions of the data layer.

Each one says what went wrong and, where a user can fix it, how. They share a base class so
that the CLI can catch data problems in one place and print the message without a traceback.
"""

from __future__ import annotations

import pickle


class DataError(Exception):
    """Base class of every error raised by timoe.data."""


class DataSourceError(DataError, RuntimeError):
    """A raw data source (an installed carrier package or a user file) is missing."""


class DataFormatError(DataError, ValueError):
    """A raw data file does not follow its format; the message names the file (and line)."""


class PreparedDataError(DataError, RuntimeError):
    """A prepared data directory (windows.parquet, meta.json) is missing, corrupt or inconsistent."""


class UnknownDatasetError(DataError, ValueError):
    """A data set name that the registry does not know."""


class UnsafePickleError(DataFormatError, pickle.UnpicklingError):
    """A pickle references a global outside the reader's allow-list; nothing from it was run."""


class NonFiniteError(DataError, FloatingPointError):
    """A training loss, validation output or metric came out NaN or inf.

    Raised by the training loop rather than letting a NaN run finish at chance level with exit
    0. It is a DataError so that the CLI reports it in one line (exit 2): its cause is nearly
    always an input (extreme or missing values) or a loss weight, which the message names.
    """


class DataWarning(UserWarning):
    """A data set that prepares but may mislead, e.g. a class with no training window."""
