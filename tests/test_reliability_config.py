"""Malformed params through the real CLI: exit 2, one line naming the key, nothing written.

Each case is a params override file that must be refused before any stage starts: no output
directory, no MLflow store. The table is the record the issue "Records that cannot lie" asked
for; a case that later passes validation would again crash or mislead a later stage.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from timoe.cli import app

SPACE = "sweep:\n  space:\n    transformer:\n"


def _sweep(key: str, spec: str) -> str:
    return f"{SPACE}      {key}: {spec}\n"


# (id, override YAML, fragment the message must hold: the key path, or the file and key)
CASES: list[tuple[str, str, str]] = [
    # ---- non-finite floats: every float field is finite
    ("inf-lambda-r", "model:\n  losses:\n    lambda_r: .inf\n", "model.losses.lambda_r"),
    ("nan-lambda-load", "model:\n  losses:\n    lambda_load: .nan\n", "model.losses.lambda_load"),
    ("inf-tau-r", "model:\n  losses:\n    tau_r: .inf\n", "model.losses.tau_r"),
    ("nan-tau-u", "model:\n  losses:\n    tau_u: .nan\n", "model.losses.tau_u"),
    ("inf-tau-s", "model:\n  losses:\n    tau_s: .inf\n", "model.losses.tau_s"),
    ("nan-soft-width", "model:\n  losses:\n    soft_width: .nan\n", "model.losses.soft_width"),
    ("nan-lr", "train:\n  lr: .nan\n", "train.lr"),
    ("inf-grad-clip", "train:\n  grad_clip: .inf\n", "train.grad_clip"),
    ("nan-grad-clip", "train:\n  grad_clip: .nan\n", "train.grad_clip"),
    ("inf-weight-decay", "train:\n  weight_decay: .inf\n", "train.weight_decay"),
    ("nan-label-smoothing", "train:\n  label_smoothing: .nan\n", "train.label_smoothing"),
    ("nan-dropout", "model:\n  dropout: .nan\n", "model.dropout"),
    ("nan-augment-jitter", "train:\n  augment:\n    jitter: .nan\n", "train.augment.jitter"),
    ("inf-gravity-cutoff", "data:\n  hapt:\n    gravity_cutoff_hz: .inf\n", "data.hapt.gravity_cutoff_hz"),
    (
        "nan-val-fraction",
        "data:\n  basicmotions:\n    val_fraction: .nan\n",
        "data.basicmotions.val_fraction",
    ),
    ("nan-synthetic-noise", "data:\n  synthetic_regimes:\n    noise: .nan\n", "data.synthetic_regimes.noise"),
    (
        "inf-context-strength",
        "data:\n  synthetic_regimes:\n    context_strength: .inf\n",
        "data.synthetic_regimes.context_strength",
    ),
    ("nan-mix", "data:\n  synthetic_regimes:\n    mix: [.nan, 1, 1, 1]\n", "data.synthetic_regimes.mix"),
    ("inf-mix", "data:\n  synthetic_regimes:\n    mix: [.inf, 1, 1, 1]\n", "data.synthetic_regimes.mix"),
    ("inf-batch-lr", "rus:\n  batch:\n    lr: .inf\n", "rus.batch.lr"),
    ("nan-sinkhorn-tol", "rus:\n  batch:\n    sinkhorn_tol: .nan\n", "rus.batch.sinkhorn_tol"),
    ("nan-solver-tol", "rus:\n  solver_tol: .nan\n", "rus.solver_tol"),
    ("inf-temperature", "model:\n  losses:\n    temperature: .inf\n", "model.losses.temperature"),
    # ---- sweep spaces: finite, ordered, integral where the field is, inside the field's range
    ("sweep-nan-low", _sweep("train.lr", "{type: float, low: .nan, high: 0.01}"), "train.lr"),
    ("sweep-inf-high", _sweep("model.dropout", "{type: float, low: 0.0, high: .inf}"), "model.dropout"),
    ("sweep-low-gt-high", _sweep("train.lr", "{type: float, low: 0.1, high: 0.01}"), "train.lr"),
    ("sweep-log-zero-low", _sweep("train.lr", "{type: float, low: 0.0, high: 0.01, log: true}"), "train.lr"),
    (
        "sweep-int-fractional",
        _sweep("train.batch_size", "{type: int, low: 8.5, high: 64}"),
        "train.batch_size",
    ),
    (
        "sweep-float-for-int-field",
        _sweep("train.batch_size", "{type: float, low: 8, high: 64}"),
        "train.batch_size",
    ),
    ("sweep-high-outside-field", _sweep("train.lr", "{type: float, low: 0.001, high: 5.0}"), "train.lr"),
    (
        "sweep-low-outside-field",
        _sweep("model.dropout", "{type: float, low: -0.1, high: 0.2}"),
        "model.dropout",
    ),
    (
        "sweep-choice-zero-batch",
        _sweep("train.batch_size", "{type: categorical, choices: [32, 0]}"),
        "train.batch_size",
    ),
    (
        "sweep-choice-string-for-int",
        _sweep("model.d_model", "{type: categorical, choices: [32, big]}"),
        "model.d_model",
    ),
    (
        "sweep-choice-top-k-over-experts",
        _sweep("model.top_k", "{type: categorical, choices: [2, 16]}"),
        "model.top_k",
    ),
    (
        "sweep-choice-indivisible-d-model",
        _sweep("model.d_model", "{type: categorical, choices: [30]}"),
        "model.d_model",
    ),
    ("sweep-choice-bool-for-float", _sweep("train.lr", "{type: categorical, choices: [true]}"), "train.lr"),
    ("sweep-choice-nan", _sweep("model.dropout", "{type: categorical, choices: [.nan]}"), "model.dropout"),
    (
        "sweep-choice-n-layers-below-moe",
        _sweep("model.n_layers", "{type: categorical, choices: [1]}"),
        "model.n_layers",
    ),
    ("sweep-empty-choices", _sweep("model.top_k", "{type: categorical, choices: []}"), "sweep.space"),
    ("sweep-unsweepable-key", _sweep("train.epochs", "{type: int, low: 1, high: 2}"), "sweep.space"),
    # ---- cross-field: patches and lags fit the window, MoE layers unique, seeds in range
    ("patch-over-hapt-window", "model:\n  patch_size: 200\n", "model.patch_size"),
    (
        "patch-over-basicmotions",
        "data:\n  datasets: [basicmotions]\nmodel:\n  patch_size: 128\n",
        "model.patch_size",
    ),
    (
        "patch-over-synthetic-window",
        "data:\n  datasets: [synthetic-regimes]\nmodel:\n  patch_size: 64\n",
        "model.patch_size",
    ),
    ("lag-over-hapt-window", "rus:\n  lags: [0, 200]\n", "rus.lags"),
    ("lag-at-basicmotions-window", "data:\n  datasets: [basicmotions]\nrus:\n  lags: [0, 100]\n", "rus.lags"),
    (
        "lag-at-synthetic-window",
        "data:\n  datasets: [synthetic-regimes]\nrus:\n  lags: [0, 32]\n",
        "rus.lags",
    ),
    (
        "small-hapt-window-default-lags",
        "data:\n  datasets: [hapt]\n  hapt: {window: 16, stride: 8}\n",
        "rus.lags",
    ),
    ("past-horizon-over-window", "rus:\n  past_horizon: 200\n", "rus.past_horizon"),
    ("moe-layers-duplicate", "model:\n  moe_layers: [0, 0]\n", "model.moe_layers"),
    ("moe-layers-duplicate-later", "model:\n  moe_layers: [1, 2, 1]\n", "model.moe_layers"),
    ("moe-layers-out-of-range", "model:\n  moe_layers: [5]\n", "model"),
    ("seed-2-32", "train:\n  seeds: [0, 4294967296]\n", "train.seeds"),
    ("seed-negative", "train:\n  seeds: [-1]\n", "train.seeds"),
    ("data-seed-2-32", "data:\n  seed: 4294967296\n", "data.seed"),
    ("sweep-seed-2-32", "sweep:\n  seed: 4294967296\n", "sweep.seed"),
    (
        "synthetic-seed-2-32",
        "data:\n  synthetic_regimes:\n    seed: 4294967296\n",
        "data.synthetic_regimes.seed",
    ),
    # ---- booleans are not numbers
    ("epochs-true", "train:\n  epochs: true\n", "train.epochs"),
    ("batch-size-true", "train:\n  batch_size: true\n", "train.batch_size"),
    ("seeds-bool", "train:\n  seeds: [true]\n", "train.seeds"),
    ("patch-size-true", "model:\n  patch_size: true\n", "model.patch_size"),
    ("moe-layers-bool", "model:\n  moe_layers: [true]\n", "model.moe_layers"),
    ("hapt-stride-true", "data:\n  hapt:\n    stride: true\n", "data.hapt.stride"),
    ("hapt-classes-bool", "data:\n  hapt:\n    classes: [true, 2]\n", "data.hapt.classes"),
    ("data-seed-true", "data:\n  seed: true\n", "data.seed"),
    ("past-bins-true", "rus:\n  past_bins: true\n", "rus.past_bins"),
    ("lr-true", "train:\n  lr: true\n", "train.lr"),
    ("dropout-false", "model:\n  dropout: false\n", "model.dropout"),
    ("max-train-windows-true", "train:\n  max_train_windows: true\n", "train.max_train_windows"),
    ("evaluate-batch-size-true", "evaluate:\n  batch_size: true\n", "evaluate.batch_size"),
    ("sweep-epochs-true", "sweep:\n  epochs: true\n", "sweep.epochs"),
    ("sweep-n-workers-true", "sweep:\n  n_workers: true\n", "sweep.n_workers"),
    ("num-threads-true", "train:\n  num_threads: true\n", "train.num_threads"),
    ("rus-lags-bool", "rus:\n  lags: [false, 1]\n", "rus.lags"),
    # ---- strings where a list is meant
    ("hapt-classes-string", "data:\n  hapt:\n    classes: '1234'\n", "data.hapt.classes"),
    ("model-names-string", "model:\n  names: transformer\n", "model.names"),
    ("seeds-string", "train:\n  seeds: '012'\n", "train.seeds"),
    # ---- the YAML itself
    ("duplicate-top-key", "train:\n  epochs: 1\ntrain:\n  lr: 0.1\n", "bad.yaml: duplicate key 'train'"),
    ("duplicate-nested-key", "train:\n  epochs: 1\n  epochs: 2\n", "bad.yaml: duplicate key 'epochs'"),
    (
        "duplicate-deep-key",
        "model:\n  losses:\n    lambda_r: 0.1\n    lambda_r: 0.2\n",
        "bad.yaml: duplicate key 'lambda_r'",
    ),
    ("duplicate-flow-key", "train: {epochs: 1, epochs: 2}\n", "bad.yaml: duplicate key 'epochs'"),
    ("top-level-list", "- train\n", "bad.yaml"),
    ("invalid-yaml", "train: [unclosed\n", "bad.yaml"),
    ("section-not-mapping", "train: 3\n", "train"),
    ("unknown-key", "train:\n  epochz: 3\n", "train.epochz"),
]


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)  # outputs would land here
    return tmp_path


def run_cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.output  # click >= 8.2: stdout and stderr interleaved


@pytest.mark.parametrize(("text", "fragment"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_malformed_params_fail_cleanly(workdir: Path, text: str, fragment: str) -> None:
    # an absolute store URI: MLflow caches stores per URI, a relative one may point elsewhere
    (workdir / "track.yaml").write_text(f"tracking: {{uri: 'sqlite:///{workdir / 'mlflow.db'}'}}\n")
    (workdir / "bad.yaml").write_text(text)
    code, output = run_cli(
        "prepare", "--dataset", "basicmotions", "--out", "out", "-p", "track.yaml", "-p", "bad.yaml"
    )
    assert code == 2, output
    assert fragment in output, output
    assert "Traceback" not in output
    assert sorted(p.name for p in workdir.iterdir()) == ["bad.yaml", "track.yaml"]  # no output, no store


def test_table_is_large_enough() -> None:
    assert len(CASES) >= 60 and len({c[0] for c in CASES}) == len(CASES)


def test_valid_sweep_space_and_cross_fields_still_pass() -> None:
    from timoe.config import validate

    p = validate(
        {
            "sweep": {
                "space": {
                    "transformer": {
                        "train.batch_size": {"type": "categorical", "choices": [16, 32]},
                        "model.top_k": {"type": "int", "low": 1, "high": 4},
                        "train.lr": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True},
                    }
                }
            },
            "model": {"patch_size": 100, "moe_layers": [0, 3]},
            "data": {"datasets": ["basicmotions"]},
            "rus": {"lags": [0, 99]},
            "train": {"seeds": [0, 2**32 - 1], "epochs": 3},
        }
    )
    assert p.train.seeds[-1] == 2**32 - 1 and p.model.patch_size == 100
