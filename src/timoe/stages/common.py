"""Pieces shared by the stage functions: a sweep's best params, hashing, JSON."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from timoe.config import ConfigError


def read_best_params(sweep_dir: Path | None) -> dict[str, Any]:
    if sweep_dir is None:
        return {}
    path = Path(sweep_dir) / "best_params.json"
    if not path.exists():
        raise FileNotFoundError(f"sweep output {path} is missing; run the sweep stage first")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ConfigError(f"{path} is not valid JSON: {err}") from None
    return dict(data.get("params", {}))


def stable_hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def save_json(path: Path, obj: Any) -> None:
    Path(path).write_text(json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")


def _json_default(o: Any) -> Any:
    import numpy as np

    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)
