from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from timoe.config import ConfigError, Params, deep_merge, load_params, validate

ROOT = Path(__file__).resolve().parents[1]


def test_params_yaml_and_smoke_profile_validate():
    p = load_params(ROOT / "params.yaml")
    smoke = load_params(ROOT / "params.yaml", ROOT / "workflow" / "smoke.yaml")
    assert p.train.epochs > smoke.train.epochs == 1
    assert smoke.sweep.n_trials == 2
    # the override keeps keys it does not mention
    assert smoke.train.lr == p.train.lr
    assert smoke.data.hapt.window == p.data.hapt.window


def test_defaults_equal_an_empty_file():
    assert validate({}) == Params()


@pytest.mark.parametrize(
    ("raw", "path", "words"),
    [
        ({"train": {"epochz": 3}}, "train.epochz", "unknown key"),
        ({"train": {"epochs": "many"}}, "train.epochs", "integer"),
        ({"train": {"epochs": 0}}, "train.epochs", "greater than or equal"),
        ({"model": {"names": ["nope"]}}, "model.names", "unknown model"),
        ({"data": {"datasets": ["mnist"]}}, "data.datasets.0", "hapt"),
        (
            {"sweep": {"space": {"transformer": {"train.epochs": {"type": "int", "low": 1, "high": 2}}}}},
            "sweep.space",
            "unsweepable",
        ),
        ({"rus": {"lags": [1, 1]}}, "rus.lags", "distinct"),
        ({"bogus": {}}, "bogus", "unknown key"),
        ({"train": {"augment": {"scale": -0.1}}}, "train.augment.scale", "greater than or equal"),
        ({"train": {"augment": {"rotate": 1}}}, "train.augment.rotate", "unknown key"),
        ({"train": {"label_smoothing": 1.0}}, "train.label_smoothing", "less than"),
    ],
)
def test_bad_params_name_the_key_path(raw, path, words):
    with pytest.raises(ConfigError) as info:
        validate(raw)
    msg = str(info.value)
    assert path in msg
    assert words in msg


def test_cross_field_checks():
    with pytest.raises(ConfigError, match="d_model must be divisible"):
        validate({"model": {"d_model": 30, "n_heads": 4}})
    with pytest.raises(ConfigError, match="overlap"):
        validate({"data": {"hapt": {"val_subjects": [2], "test_subjects": [2]}}})


def test_yaml_errors_are_clear(tmp_path):
    bad = tmp_path / "p.yaml"
    bad.write_text("train: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_params(bad)
    with pytest.raises(ConfigError, match="not found"):
        load_params(tmp_path / "missing.yaml")


def test_deep_merge_is_recursive():
    assert deep_merge({"a": {"b": 1, "c": 2}}, {"a": {"c": 3}}) == {"a": {"b": 1, "c": 3}}


def test_sweep_overrides_apply_and_revalidate():
    from timoe.overrides import apply_overrides

    p = apply_overrides(Params(), {"train.lr": 0.01, "model.dropout": 0.2, "train.augment.jitter": 0.1})
    assert p.train.lr == 0.01 and p.model.dropout == 0.2 and p.train.augment.jitter == 0.1
    with pytest.raises(ConfigError):
        apply_overrides(Params(), {"train.lr": -1.0})
    with pytest.raises(ConfigError, match="not allowed"):
        apply_overrides(Params(), {"data.seed": 3})


def test_every_params_yaml_key_is_in_the_schema():
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    assert set(raw) == set(Params.model_fields)


def _with_per_dataset(model: dict | None = None, train: dict | None = None) -> dict:
    return {
        "data": {"datasets": ["synthetic-regimes", "hapt"]},
        "model": {"patch_size": 4, "per_dataset": model or {}},
        "train": {"max_train_windows": 2000, "per_dataset": train or {}},
    }


def test_per_dataset_settings_apply_to_their_data_set_only():
    p = validate(_with_per_dataset({"hapt": {"patch_size": 8}}, {"hapt": {"max_train_windows": 3000}}))
    hapt, synthetic = p.for_dataset("hapt"), p.for_dataset("synthetic-regimes")
    assert (hapt.model.patch_size, hapt.train.max_train_windows) == (8, 3000)
    assert (synthetic.model.patch_size, synthetic.train.max_train_windows) == (4, 2000)
    assert synthetic is p  # nothing of its own: the shared params themselves
    assert hapt.for_dataset("hapt") == hapt  # applying twice changes nothing (audit re-runs do)
    assert hapt.model.d_model == p.model.d_model  # keys it does not name stay shared


@pytest.mark.parametrize(
    ("model", "train", "words"),
    [
        # checked against its own window (128 steps), not the synthetic data's 32
        ({"hapt": {"patch_size": 200}}, None, ["hapt", "patch_size 200 exceeds data.hapt.window"]),
        ({"synthetic-regimes": {"patch_size": 64}}, None, ["synthetic-regimes", "synthetic_regimes.window"]),
        ({"hapt": {"patch_sise": 8}}, None, ["hapt", "patch_sise"]),
        ({"hapt": {"d_model": 33}}, None, ["hapt", "divisible by n_heads"]),
        ({"mnist": {"patch_size": 8}}, None, ["model.per_dataset.mnist", "neither a built-in"]),
        ({"hapt": {"names": ["moe"]}}, None, ["model.per_dataset.hapt", "names", "cannot differ"]),
        (None, {"hapt": {"seeds": [7]}}, ["train.per_dataset.hapt", "seeds", "cannot differ"]),
        (None, {"hapt": {"epochs": 0}}, ["hapt", "train.epochs"]),
    ],
)
def test_bad_per_dataset_settings_fail_at_validation_naming_the_data_set(model, train, words):
    with pytest.raises(ConfigError) as err:
        validate(_with_per_dataset(model, train))
    for w in words:
        assert w in str(err.value)


def test_a_patch_too_long_for_one_data_set_is_fine_where_only_the_other_uses_it():
    # 64 fits HAPT's 128-step windows; the shared patch (4) fits the synthetic 32-step ones
    p = validate(_with_per_dataset({"hapt": {"patch_size": 64}}))
    hapt = p.for_dataset("hapt")
    assert hapt.model.patch_size == 64
    # what a HAPT run records as its params validates again on its own (audit reproduce reads it)
    assert hapt.data.datasets == ["hapt"]
    assert validate(hapt.model_dump()).for_dataset("hapt") == hapt


def test_per_dataset_of_an_unlisted_data_set_fails_when_applied_not_before():
    raw = _with_per_dataset({"basicmotions": {"patch_size": 500}})
    p = validate(raw)  # basicmotions is not studied: its windows are not checked
    with pytest.raises(ConfigError, match="per_dataset settings of 'basicmotions'"):
        p.for_dataset("basicmotions")


def test_an_override_file_can_drop_every_per_dataset_setting(tmp_path: Path):
    base, smoke = tmp_path / "params.yaml", tmp_path / "smoke.yaml"
    base.write_text(yaml.safe_dump(_with_per_dataset({"hapt": {"patch_size": 8}}, {"hapt": {"epochs": 3}})))
    smoke.write_text("model: {per_dataset: null}\ntrain: {epochs: 1, per_dataset: null}\n")
    p = load_params(base, smoke).for_dataset("hapt")
    assert (p.model.patch_size, p.train.epochs) == (4, 1)
    assert load_params(base).for_dataset("hapt").train.epochs == 3  # without it, hapt keeps its own
