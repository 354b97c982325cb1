"""Shared pieces of the sweep tests: tiny params, prepared data, and the study ↔ MLflow audit."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import yaml

from timoe.config import Params, deep_merge, validate

ERROR_MARKERS = ("Traceback", "database is locked", "timoe: error")
# A space wide enough that trials differ after a few steps of basicmotions (so pruning can act),
# and cheap: 28 training windows, a 16-wide transformer.
SPACE = {
    "transformer": {
        "train.lr": {"type": "float", "low": 3e-3, "high": 1e-1, "log": True},
        "train.batch_size": {"type": "categorical", "choices": [4, 8, 16]},
        "model.dropout": {"type": "float", "low": 0.0, "high": 0.3},
    }
}


def sweep_params(base: Params, *, tracking_uri: str, prefix: str = "timoe", **sweep: Any) -> Params:
    raw = deep_merge(
        base.model_dump(),
        {
            "sweep": {"space": SPACE, "epochs": 3, **sweep},
            "tracking": {"uri": tracking_uri, "experiment_prefix": prefix},
            "train": {"device": "cpu"},
        },
    )
    return validate(raw)


def write_params(params: Params, path: Path) -> Path:
    path.write_text(yaml.safe_dump(params.model_dump(), sort_keys=False))
    return path


def prepare_basicmotions(params: Params, out: Path) -> Path:
    from timoe.data.prepare import prepare_dataset

    prepare_dataset("basicmotions", params.data, out)
    return out


def audit(study: Any, tracking_uri: str, parent_run_id: str, metric: str, n_trials: int) -> dict[str, Any]:
    """Compare a study with its MLflow child runs, both ways; count recorded, lost, errors."""
    from mlflow.tracking import MlflowClient
    from optuna.trial import TrialState

    from timoe.sweeps.runs import trial_run_id

    client = MlflowClient(tracking_uri=tracking_uri)
    exp = client.get_run(parent_run_id).info.experiment_id
    children = client.search_runs(
        [exp], filter_string=f"tags.mlflow.parentRunId = '{parent_run_id}'", max_results=10_000
    )
    runs = {r.info.run_id: r for r in children}
    trials = study.get_trials(deepcopy=False)
    problems: list[str] = []
    recorded = 0
    linked: set[str | None] = set()
    for t in trials:
        run_id = trial_run_id(client, parent_run_id, t)
        linked.add(run_id)
        run = runs.get(run_id or "")
        if run is None:
            problems.append(f"trial {t.number}: no MLflow child run")
            continue
        tags, status = run.data.tags, run.info.status
        history = sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, metric))
        expected_status = "FAILED" if t.state == TrialState.FAIL else "FINISHED"
        checks = {
            "trial number tag": tags.get("optuna_trial_number") == str(t.number),
            "state tag": tags.get("optuna_state") == t.state.name,
            "run status": status == expected_status,
            "params": run.data.params == {k: str(v) for k, v in t.params.items()},
            "intermediate values": history == sorted(t.intermediate_values.items()),
            "duration": "duration_s" in run.data.metrics,
        }
        if t.state == TrialState.FAIL:
            # A worker killed mid-trial cannot log its duration or last epoch; the rest must hold.
            checks = {k: checks[k] for k in ("trial number tag", "state tag", "run status")}
        bad = [k for k, ok in checks.items() if not ok]
        if bad:
            problems.append(f"trial {t.number}: {', '.join(bad)} differ ({tags}, {status})")
        elif t.state in (TrialState.COMPLETE, TrialState.PRUNED):
            recorded += 1
    problems += [f"run {rid}: no trial points at it" for rid in runs if rid not in linked]
    states = Counter(t.state.name for t in trials)
    return {
        "trials": len(trials),
        "recorded": recorded,
        "lost": max(0, n_trials - recorded),
        "errors": states.get("FAIL", 0) + len(problems),
        "states": dict(states),
        "workers": len({t.user_attrs.get("worker") for t in trials}),
        "problems": problems,
    }
