"""The prepare stage: one data set from its installed source to data/processed/{dataset}/."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from timoe.atomic import atomic_dir
from timoe.config import Params
from timoe.data.prepare import build_checked, write_prepared
from timoe.stage_specs import recorded_config
from timoe.tracking import experiment_name, log_artifacts_from, tracked_run


def run_prepare(params: Params, *, dataset: str, out_dir: Path) -> dict[str, Any]:
    ds = build_checked(dataset, params.data)  # before the run opens: a bad source records nothing
    with atomic_dir(out_dir) as tmp:
        import mlflow

        with tracked_run(
            uri=params.tracking.uri,
            experiment=experiment_name(params.tracking.experiment_prefix, "prepare", dataset),
            stage="prepare",
            full_params=params.model_dump(),
            config=recorded_config(params, "prepare", dataset=dataset),
            out_dir=tmp,
            wildcards={"dataset": dataset},
            seed=params.data.seed,
            run_name=f"prepare/{dataset}",
        ):
            staging = tmp / "staging"
            meta = write_prepared(ds, staging)
            for f in staging.iterdir():
                os.replace(f, tmp / f.name)
            staging.rmdir()
            counts = meta.get("counts", {}).get("split", {})
            mlflow.log_metrics({f"n_windows.{k}": float(v) for k, v in counts.items()})
            for name, digest in meta.get("sources", {}).get("sha256", {}).items():
                mlflow.set_tag(f"source.{name}.sha256", digest)
            log_artifacts_from([tmp / "meta.json"])
    return meta
