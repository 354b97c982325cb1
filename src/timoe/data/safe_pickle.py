"""A restricted unpickler: only an explicit allow-list of globals can be loaded.

`pickle.load` runs whatever callable a file names (os.system, subprocess, ...). Every global a
pickle references passes through `find_class`; this one resolves only names on an allow-list
and refuses all others with an `UnsafePickleError` (a pickle.UnpicklingError) naming the
refused class. The allowed callables are harmless constructors (numpy arrays and dtypes,
slices) or guarded wrappers.
"""

from __future__ import annotations

import io
import pickle
from collections.abc import Callable, Mapping
from typing import Any, BinaryIO

import numpy as np

from timoe.data.errors import UnsafePickleError

try:  # numpy >= 2 keeps the reconstructor in numpy._core; importing numpy.core only warns
    from numpy._core.multiarray import _reconstruct as _np_reconstruct
except ImportError:  # pragma: no cover - numpy 1.x
    from numpy.core.multiarray import _reconstruct as _np_reconstruct

# Pickles written by Python 2 (or by Python 3 with protocol <= 2) name modules the old way, and
# numpy 1.x pickles name numpy.core. The overridden find_class sees these raw names.
_MODULE_ALIASES = {
    "__builtin__": "builtins",
    "copy_reg": "copyreg",
    "numpy.core.multiarray": "numpy._core.multiarray",
    "numpy.core.numeric": "numpy._core.numeric",
}


def _latin1_encode(text: str, encoding: str = "latin1") -> bytes:
    # Protocol-2 pickles from Python 3 store bytes as _codecs.encode(str, "latin1"). Other codecs
    # (zlib, base64, rot13 ...) are not needed and are refused to keep the surface small.
    if encoding.lower().replace("_", "-") not in ("latin1", "latin-1", "iso-8859-1"):
        raise UnsafePickleError(f"refused _codecs.encode with codec {encoding!r}")
    return text.encode("latin1")


def _numpy_scalar(dtype: np.dtype, data: bytes | str | None = None) -> Any:
    # numpy scalars (e.g. a float64 stored in a dict) are pickled as multiarray.scalar(dtype, bytes)
    if not isinstance(dtype, np.dtype) or dtype.hasobject:
        raise UnsafePickleError("refused numpy scalar of an object dtype")
    if isinstance(data, str):  # Python 2 str read with encoding="latin1"
        data = data.encode("latin1")
    return np.frombuffer(data or b"", dtype=dtype, count=1)[0]


def _ndarray_reconstruct(cls: type, shape: Any, dtype_code: Any) -> np.ndarray:
    if cls is not np.ndarray:
        raise UnsafePickleError(f"refused numpy reconstruction of {cls!r}")
    return _np_reconstruct(cls, shape, dtype_code)


def _ndarray_frombuffer(buf: Any, dtype: np.dtype, shape: tuple[int, ...], order: str) -> np.ndarray:
    # protocol-5 pickles of contiguous arrays; object dtypes would need element unpickling
    if not isinstance(dtype, np.dtype) or dtype.hasobject:
        raise UnsafePickleError("refused numpy buffer of an object dtype")
    return np.frombuffer(buf, dtype=dtype).reshape(shape, order=order)


#: globals needed to rebuild plain numpy arrays (any dtype) and Python-3-written bytes
NUMPY_GLOBALS: dict[tuple[str, str], Any] = {
    ("numpy._core.multiarray", "_reconstruct"): _ndarray_reconstruct,
    ("numpy._core.multiarray", "scalar"): _numpy_scalar,
    ("numpy._core.numeric", "_frombuffer"): _ndarray_frombuffer,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): _latin1_encode,
}


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that resolves only the globals in `allowed` ((module, name) -> object)."""

    def __init__(self, file: BinaryIO, allowed: Mapping[tuple[str, str], Any], **kwargs: Any) -> None:
        super().__init__(file, **kwargs)
        self._allowed = dict(allowed)

    def find_class(self, module: str, name: str) -> Any:
        key = (_MODULE_ALIASES.get(module, module), name)
        if key in self._allowed:
            return self._allowed[key]
        raise UnsafePickleError(
            f"refused to load global '{module}.{name}': not on this reader's allow-list "
            "(the file is not the expected data, or it is unsafe)"
        )


def restricted_load(
    file: BinaryIO | bytes,
    allowed: Mapping[tuple[str, str], Any],
    encoding: str = "ASCII",
) -> Any:
    """Unpickle `file` allowing only `allowed` globals. `encoding="latin1"` reads Python 2 numpy."""
    stream = io.BytesIO(file) if isinstance(file, bytes | bytearray) else file
    return RestrictedUnpickler(stream, allowed, encoding=encoding).load()


def guarded_new(allowed_classes: tuple[type, ...]) -> Callable[..., Any]:
    """A stand-in for copyreg._reconstructor that only instantiates `allowed_classes`.

    Old-protocol pickles create instances as _reconstructor(cls, object, None); the real one
    would call base.__new__(cls) for any cls the stream names.
    """

    def _reconstructor(cls: type, base: type, state: Any) -> Any:
        if cls not in allowed_classes or base is not object or state is not None:
            raise UnsafePickleError(f"refused to reconstruct {cls!r} on base {base!r}")
        return object.__new__(cls)

    return _reconstructor
