"""Reader for the sktime/UEA `.ts` text format (equal-length, no timestamps).

Layout: `#` comment lines, `@key value` header lines, `@data`, then one case per line with the
dimensions separated by ':' and values by ','; when `@classLabel true ...` the last field is the
class label. `?` marks a missing value (read as NaN). Every problem is reported with file and
line, because a silently misparsed case would corrupt a benchmark without any visible sign.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from timoe.data.errors import DataFormatError, DataSourceError


@dataclass(frozen=True)
class TsData:
    """x: (N, C, T) float32; labels: N class names; class_names in the header's order."""

    problem: str
    x: np.ndarray
    labels: list[str]
    class_names: list[str]


def _bool(value: str, path: Path, lineno: int, key: str) -> bool:
    v = value.strip().lower()
    if v not in ("true", "false"):
        raise DataFormatError(f"{path}:{lineno}: @{key} must be true or false, got {value!r}")
    return v == "true"


def _parse_header(line: str, path: Path, lineno: int, header: dict[str, object]) -> None:
    key, _, rest = line[1:].partition(" ")
    key = key.lower()
    if key == "classlabel":
        tokens = rest.split()
        if not tokens:
            raise DataFormatError(f"{path}:{lineno}: @classLabel needs true/false")
        header["classlabel"] = _bool(tokens[0], path, lineno, key)
        header["class_names"] = tokens[1:]
        if header["classlabel"] and not tokens[1:]:
            raise DataFormatError(f"{path}:{lineno}: @classLabel true lists no class")
    elif key in ("timestamps", "univariate", "missing", "equallength"):
        header[key] = _bool(rest, path, lineno, key)
    elif key in ("dimensions", "serieslength"):
        try:
            header[key] = int(rest)
        except ValueError:
            raise DataFormatError(f"{path}:{lineno}: @{key} must be an integer, got {rest!r}") from None
    else:  # problemName and unknown keys are kept as text
        header[key] = rest.strip()


def _parse_case(
    line: str, path: Path, lineno: int, n_dims: int | None, length: int | None, labelled: bool
) -> tuple[list[list[float]], str | None]:
    fields = line.split(":")
    label = fields.pop().strip() if labelled else None
    if not fields:
        raise DataFormatError(f"{path}:{lineno}: case has no dimension")
    if n_dims is not None and len(fields) != n_dims:
        raise DataFormatError(f"{path}:{lineno}: {len(fields)} dimensions, header says {n_dims}")
    dims = []
    for d, text in enumerate(fields):
        values = []
        for tok in text.split(","):
            tok = tok.strip()
            if tok == "?":
                values.append(math.nan)
                continue
            try:
                values.append(float(tok))
            except ValueError:
                raise DataFormatError(f"{path}:{lineno}: dimension {d}: {tok!r} is not a number") from None
        length = len(values) if length is None else length  # dimensions of one case share a length
        if len(values) != length:
            raise DataFormatError(
                f"{path}:{lineno}: dimension {d} has {len(values)} values, expected {length}"
            )
        dims.append(values)
    return dims, label


def read_ts(path: Path) -> TsData:
    """Parse an equal-length `.ts` file; DataFormatError names the file and line of any problem."""
    if not path.is_file():
        raise DataSourceError(f"{path}: .ts file not found")
    header: dict[str, object] = {}
    cases: list[list[list[float]]] = []
    labels: list[str] = []
    in_data = False
    with open(path, encoding="utf-8") as fh:
        for lineno, raw in enumerate(fh, start=1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            if not in_data:
                if not line.startswith("@"):
                    raise DataFormatError(f"{path}:{lineno}: data line before @data")
                if line.lower() == "@data":
                    if header.get("timestamps"):
                        raise DataFormatError(f"{path}:{lineno}: timestamped .ts files are not supported")
                    if header.get("equallength") is False:
                        raise DataFormatError(f"{path}:{lineno}: unequal-length .ts files are not supported")
                    in_data = True
                else:
                    _parse_header(line, path, lineno, header)
                continue
            labelled = bool(header.get("classlabel", False))
            # without @dimensions / @seriesLength the first case fixes both (equal-length files)
            n_dims = header.get("dimensions", len(cases[0]) if cases else None)
            length = header.get("serieslength", len(cases[0][0]) if cases else None)
            dims, label = _parse_case(line, path, lineno, n_dims, length, labelled)  # type: ignore[arg-type]
            names = header.get("class_names", [])
            if labelled and label not in names:
                raise DataFormatError(f"{path}:{lineno}: class {label!r} not declared in @classLabel {names}")
            cases.append(dims)
            labels.append(label or "")
    if not in_data:
        raise DataFormatError(f"{path}: no @data section")
    if not cases:
        raise DataFormatError(f"{path}: no case after @data")
    class_names = [str(c) for c in header.get("class_names", [])]  # type: ignore[union-attr]
    return TsData(
        problem=str(header.get("problemname", path.stem)),
        x=np.asarray(cases, dtype=np.float32),
        labels=labels,
        class_names=class_names,
    )
