"""Pieces shared by the stage functions: overrides from a sweep, hashing, figures."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from timoe.config import SWEEPABLE_KEYS, ConfigError, Params, validate


def needs_rus(model_name: str) -> bool:
    """Whether a model reads the quantify stage's output (models.MODEL_SPECS says)."""
    from timoe.models.model import MODEL_SPECS

    return model_name in MODEL_SPECS and MODEL_SPECS[model_name].needs_rus


def apply_overrides(params: Params, overrides: dict[str, Any]) -> Params:
    """Return params with dotted-key overrides (e.g. {'train.lr': 3e-4}) applied and re-validated."""
    raw = params.model_dump()
    for dotted, value in overrides.items():
        if dotted not in SWEEPABLE_KEYS:
            raise ConfigError(
                f"override of {dotted!r} is not allowed; sweepable keys: {list(SWEEPABLE_KEYS)}"
            )
        node = raw
        *parents, leaf = dotted.split(".")
        for p in parents:
            node = node[p]
        node[leaf] = value
    return validate(raw)


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


def matplotlib_agg():
    """matplotlib with the file-only backend: jobs run without a display."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
