"""Dotted-key overrides of validated params (a sweep trial's values, a run's best params)."""

from __future__ import annotations

from typing import Any

from timoe.config import SWEEPABLE_KEYS, ConfigError, Params, validate


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
