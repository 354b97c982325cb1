"""Build a named model for a prepared data set, with the RUS prior the quantify stage wrote.

Shared by the train stage and the sweep workers (so it sits below both).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch

from timoe.config import ConfigError, Params
from timoe.models.model import needs_rus
from timoe.training.patching import Patched, patched_modalities

RUS_TABLE = "rus.parquet"  # per-context table (column `context`), written by the quantify stage
DATASET_RUS_TABLE = "rus_dataset.parquet"  # the single dataset-level table (paper's form)
CONTEXTS_FILE = "contexts.json"  # the context model: features, standardisation, centroids


@dataclass(frozen=True)
class RusInputs:
    """What a RUS model reads from the quantify stage: its table and, for a per-context table
    with more than one context, the context model (interactions.contexts.ContextSpec JSON)."""

    table: pl.DataFrame
    contexts: dict[str, Any] | None


def load_rus_table(rus_dir: Path | None, model_name: str) -> RusInputs | None:
    """The quantify output a model needs (None for models without a prior)."""
    from timoe.models.model import MODEL_SPECS

    if not needs_rus(model_name):
        return None
    if rus_dir is None:
        raise ValueError(f"model {model_name!r} needs the quantify stage's RUS output (--rus)")
    spec = MODEL_SPECS[model_name]
    rus_dir = Path(rus_dir)
    if spec.prior == "dataset":
        path = rus_dir / DATASET_RUS_TABLE
        if not path.exists():
            raise FileNotFoundError(f"dataset-level RUS table {path} is missing; rerun the quantify stage")
        return RusInputs(pl.read_parquet(path).drop("context", strict=False), None)
    path = rus_dir / RUS_TABLE
    if not path.exists():
        raise FileNotFoundError(f"RUS table {path} is missing; run the quantify stage first")
    table = pl.read_parquet(path)
    contexts = None
    if "context" in table.columns and table["context"].n_unique() > 1:
        ctx_path = rus_dir / CONTEXTS_FILE
        if not ctx_path.exists():
            raise FileNotFoundError(f"{path} has several contexts but {ctx_path} is missing")
        contexts = json.loads(ctx_path.read_text())
    return RusInputs(table, contexts)


def build_provider(params: Params, model_name: str, meta: dict[str, Any], rus: RusInputs) -> Any:
    """The per-context prior bank of a RUS model, at raw-step resolution (pooled per batch)."""
    from timoe.models.model import MODEL_SPECS, SHUFFLE_SEED
    from timoe.models.prior import (
        ContextAssigner,
        PriorProvider,
        bank_from_table,
        lag0_table,
        normalise_table,
        shuffle_table,
    )

    table = rus.table
    if params.model.losses.relative:
        table = normalise_table(table)
    if MODEL_SPECS[model_name].lags == "lag0":
        table = lag0_table(table)
    if MODEL_SPECS[model_name].shuffle_rus:
        table = shuffle_table(table, SHUFFLE_SEED)
    names, n_raw = list(meta["modalities"]), int(meta["n_timesteps"])
    U, R, S = bank_from_table(table, names, n_raw, params.model.rus_mapping)
    assigner = None
    if rus.contexts is not None and U.shape[0] > 1:
        c = rus.contexts
        assigner = ContextAssigner(c["channels"], c["mean"], c["std"], c["centroids"])
    return PriorProvider(U, R, S, params.model.patch_size, assigner)


def regime_channels(meta: dict[str, Any]) -> list[int]:
    """Channels holding the one-hot true regime (synthetic-regimes), outside every modality."""
    return [int(c) for c in (meta.get("extra") or {}).get("regime_channels", [])]


def build_for_data(
    params: Params, model_name: str, meta: dict[str, Any], rus: RusInputs | None, seed: int
) -> torch.nn.Module:
    """Build a named model for a prepared data set, wrapped in temporal patching."""
    from timoe.models import build_model
    from timoe.models.model import MODEL_SPECS
    from timoe.models.prior import RegimeReader

    p = params.model.patch_size
    n_steps = int(meta["n_timesteps"]) // p
    if n_steps < 1:  # the schema checks known data sets; this catches any other prepared data
        raise ConfigError(f"model.patch_size {p} exceeds the window of {meta['n_timesteps']} steps")
    modalities = {m: list(ch) for m, ch in meta["modalities"].items()}
    provider = build_provider(params, model_name, meta, rus) if rus is not None else None
    regime = None
    if MODEL_SPECS[model_name].needs_regime:
        regime = RegimeReader(regime_channels(meta))
    torch.manual_seed(seed)
    inner = build_model(
        model_name,
        params.model,
        n_channels=int(meta["n_channels"]) * p,
        n_timesteps=n_steps,
        n_classes=len(meta["classes"]),
        modalities=patched_modalities(modalities, int(meta["n_channels"]), p),
        rus=provider,
        regime=regime,
    )
    return Patched(inner, p)


def subsample(n: int, limit: int | None, seed: int) -> np.ndarray:
    idx = np.arange(n)
    if limit is None or n <= limit:
        return idx
    return np.sort(np.random.default_rng(seed).choice(n, size=limit, replace=False))
