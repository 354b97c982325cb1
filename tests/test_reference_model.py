"""The reference model (MiniRocket + ridge): saved without pickle, reloaded to the same
predictions, trained by the train stage reproducibly, and kept out of the sweep."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from timoe.config import REFERENCE_MODELS, ConfigError, Params, load_params
from timoe.models.model import MODEL_SPECS, build_model
from timoe.models.reference import fit_minirocket, load_minirocket, softmax
from timoe.stage_specs import job_inputs, targets

ROOT = Path(__file__).resolve().parents[1]


def _windows(n: int, t: int, c: int, n_classes: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """x [n, t, c] with a class-dependent offset on channel 0 and frequency on channel 1."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % n_classes
    steps = np.arange(t)
    x = rng.normal(scale=0.3, size=(n, t, c))
    x[:, :, 0] += y[:, None]
    x[:, :, 1] += np.sin(steps[None, :] * (1 + y[:, None]) / 3)
    return x.astype(np.float32), y


@pytest.mark.parametrize("summary", [True, False])
def test_a_saved_model_reloads_to_identical_predictions(tmp_path: Path, summary: bool) -> None:
    x, y = _windows(40, 20, 4, 3)
    model = fit_minirocket(x, y, channels=[0, 1, 2], n_classes=4, seed=3, summary_features=summary)
    path = tmp_path / "model.npz"
    model.save(path)
    with zipfile.ZipFile(path) as z:  # plain .npy members only: nothing for pickle to run
        assert all(name.endswith(".npy") for name in z.namelist())
    again = load_minirocket(path)
    assert np.array_equal(again.decision(x), model.decision(x))
    assert again.alpha == model.alpha and again.n_classes == 4
    prob = again.predict_proba(x)
    assert prob.shape == (40, 4) and np.allclose(prob.sum(axis=1), 1.0)
    assert (prob[:, 3] == 0).all()  # class 3 never seen in training: never predicted
    assert (prob.argmax(axis=1) == y).mean() > 0.9  # the offset and frequency are easy to read


def test_the_decision_is_the_ridges_own(tmp_path: Path) -> None:
    """decision() recomputes sklearn's decision_function from the saved coef and intercept."""
    from sklearn.linear_model import RidgeClassifierCV

    x, y = _windows(30, 12, 3, 2)
    model = fit_minirocket(x, y, channels=[0, 1, 2], n_classes=2, seed=0, summary_features=True)
    feats = model.features(x)
    ridge = RidgeClassifierCV(alphas=[model.alpha]).fit(feats, y)
    expected = ridge.decision_function(feats)  # binary: one score, positive means class 1
    assert np.allclose(model.decision(x)[:, 1], expected) and np.allclose(model.decision(x)[:, 0], -expected)


def test_short_windows_are_zero_padded_to_the_kernel_length() -> None:
    x, y = _windows(24, 5, 2, 2)
    model = fit_minirocket(x, y, channels=[0, 1], n_classes=2, seed=0, summary_features=False)
    assert model.decision(x).shape == (24, 2)


def test_softmax_of_minus_inf_is_zero() -> None:
    p = softmax(np.array([[0.0, -np.inf, 1.0]]))
    assert p[0, 1] == 0 and np.isclose(p.sum(), 1.0) and p[0, 2] > p[0, 0]


def test_reference_models_are_marked_in_both_places_and_not_built_as_networks() -> None:
    assert {m for m, s in MODEL_SPECS.items() if not s.neural} == set(REFERENCE_MODELS)
    with pytest.raises(ValueError, match="reference model"):
        build_model(
            "minirocket", Params().model, n_channels=2, n_timesteps=4, n_classes=2, modalities={"a": [0, 1]}
        )


def _smoke_with_minirocket() -> Params:
    raw = load_params(ROOT / "params.yaml", ROOT / "workflow" / "smoke.yaml").model_dump()
    raw["model"]["names"] = ["transformer", "minirocket"]
    raw["train"]["use_sweep"] = True
    return Params.model_validate(raw)


def test_the_reference_has_no_sweep_job_and_no_sweep_or_rus_input() -> None:
    p = _smoke_with_minirocket()
    assert not any("/minirocket" in t for t in targets(p, "sweep"))
    assert any("/minirocket/" in t for t in targets(p, "train"))
    inputs = job_inputs(p, "train", lambda m: False, dataset="hapt", model="minirocket", seed="0")
    assert inputs == {"data": "data/processed/hapt"}
    assert "sweep" in job_inputs(p, "train", lambda m: False, dataset="hapt", model="transformer", seed="0")


def test_a_search_space_for_the_reference_is_refused() -> None:
    raw = Params().model_dump()
    raw["sweep"]["space"] = {"minirocket": {"train.lr": {"type": "float", "low": 1e-4, "high": 1e-3}}}
    with pytest.raises((ConfigError, ValueError), match="nothing to sweep"):
        Params.model_validate(raw)


@pytest.fixture(scope="module")
def basicmotions(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from timoe.config import DataConfig
    from timoe.data import prepare_dataset

    out = tmp_path_factory.mktemp("bm") / "prepared"
    prepare_dataset("basicmotions", DataConfig(), out)
    return out


def _train(data: Path, root: Path, name: str, seed: int) -> Path:
    from timoe.stages.train import TrainJob, run_train

    raw = Params().model_dump()
    raw["tracking"]["uri"] = f"sqlite:///{root / 'mlflow.db'}"
    raw["train"] |= {"max_train_windows": 20, "use_sweep": True}  # use_sweep: ignored by the reference
    out = root / name
    job = TrainJob(dataset="basicmotions", model="minirocket", seed=seed, data_dir=data, out_dir=out)
    run_train(Params.model_validate(raw), job)
    return out


def test_training_the_reference_twice_with_a_seed_gives_identical_outputs(
    basicmotions: Path, tmp_path: Path
) -> None:
    import mlflow

    first, second = _train(basicmotions, tmp_path, "a", 1), _train(basicmotions, tmp_path, "b", 1)
    other_seed = _train(basicmotions, tmp_path, "c", 2)
    pa, pb = pl.read_parquet(first / "predictions.parquet"), pl.read_parquet(second / "predictions.parquet")
    assert pa.columns == ["split", "window_id", "subject", "label", "pred", "prob"]
    assert pa.equals(pb) and set(pa["split"]) == {"val", "test"}
    ma, mb = (json.loads((d / "metrics.json").read_text()) for d in (first, second))
    untimed = {k: v for k, v in ma.items() if not k.endswith("seconds") and k != "run_id"}
    assert untimed == {k: v for k, v in mb.items() if not k.endswith("seconds") and k != "run_id"}
    assert ma["n_train_windows"] == 20 and ma["fit_seconds"] > 0 and ma["predict_seconds"] > 0
    assert (other_seed / "model.npz").read_bytes() != (first / "model.npz").read_bytes()
    # the saved state reproduces the saved test predictions
    from timoe.data.io import load_prepared

    test = load_prepared(basicmotions).subset("test")
    reloaded = load_minirocket(first / "model.npz").predict_proba(test.x).argmax(axis=1)
    assert np.array_equal(reloaded, pa.filter(pl.col("split") == "test")["pred"].to_numpy())
    # one MLflow run per job, with lineage and timings
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    run = mlflow.get_run((first / "run_id.txt").read_text().strip())
    assert run.data.tags["stage"] == "train" and run.data.tags["wildcard.model"] == "minirocket"
    assert "input.data.sha256" in run.data.tags and "input.sweep.sha256" not in run.data.tags
    assert {"fit_seconds", "predict_seconds", "test_accuracy"} <= set(run.data.metrics)


def _scores(acc: dict[str, list[list[int]]], n: int = 50) -> pl.DataFrame:
    """Per (model, seed, subject) scores: acc[model][seed][subject] correct of n windows."""
    rows = [
        {"dataset": "d", "model": m, "seed": s, "subject": j, "n": n, "correct": c}
        for m, grid in acc.items()
        for s, per in enumerate(grid)
        for j, c in enumerate(per)
    ]
    return pl.DataFrame(rows)


def test_the_gap_to_the_reference_is_the_paired_pooled_difference() -> None:
    from timoe.evaluation.reference import accuracy_levels, gaps_markdown, reference_gaps

    scores = _scores({"minirocket": [[48, 47], [49, 46], [48, 48]], "timoe": [[45, 44], [46, 40], [44, 47]]})
    gaps = reference_gaps(scores, 2000, 0)
    row = gaps.row(0, named=True)
    expected = 100 * ((45 + 44 + 46 + 40 + 44 + 47) - (48 + 47 + 49 + 46 + 48 + 48)) / 300
    assert row["model"] == "timoe" and row["value"] == pytest.approx(expected)
    assert row["low"] < row["value"] < row["high"] and (row["n_seeds"], row["n_subjects"]) == (3, 2)
    levels = accuracy_levels(scores, 2000, 0)
    assert levels.filter(pl.col("model") == "minirocket")["value"][0] == pytest.approx(100 * 286 / 300)
    assert (levels["high"] <= 100).all()
    assert "| d | **minirocket** (reference) | 95.33 |" in gaps_markdown(gaps, levels)
    alone = reference_gaps(scores.filter(pl.col("model") == "timoe"), 2000, 0)
    assert alone.is_empty() and "No minirocket run" in gaps_markdown(alone, levels)
