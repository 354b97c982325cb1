"""Training that cannot report success on NaN, and a checkpoint that cannot block a rerun.

Non-finite: a loss, an auxiliary loss or a validation output that is NaN or inf stops the loop
with NonFiniteError (exit 2 through the CLI) naming what went non-finite, where, and what to
check. Checkpoints: one that cannot be read is moved aside and training starts from scratch
with a warning naming the file. Models are tiny and train one or two epochs.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
from torch import nn

from test_reliability_data import PARAMS, _toy, run_cli, tracking, train_args
from timoe.config import DataConfig, ModelConfig
from timoe.data import DATASETS, prepare_dataset
from timoe.data.errors import NonFiniteError
from timoe.models import build_model
from timoe.training.loop import CheckpointSpec, CheckpointWarning, LoopData, LoopSettings, train
from timoe.training.patching import Patched, patched_modalities
from timoe.training.seeding import seed_everything

CFG = ModelConfig(d_model=8, n_heads=2, d_ff=16, n_layers=1, moe_layers=[0], encoder_layers=1)
SETTINGS = LoopSettings(
    epochs=2, batch_size=8, lr=3e-3, weight_decay=0.0, grad_clip=1.0, warmup_epochs=1, patience=10, seed=3
)
CPU = torch.device("cpu")


def _data() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(24, 8, 4)).astype(np.float32)
    y = (x[:, :, 0].mean(axis=1) > 0).astype(np.int64)
    return x[:16], y[:16], x[16:], y[16:]


def _model(name: str = "transformer") -> nn.Module:
    seed_everything(0)
    inner = build_model(
        name,
        CFG,
        n_channels=8,
        n_timesteps=4,
        n_classes=2,
        modalities=patched_modalities({"a": [0, 1], "b": [2, 3]}, 4, 2),
    )
    return Patched(inner, 2)


class Poisoned(nn.Module):
    """Wraps a model and makes one field of its output non-finite (in training or in eval)."""

    def __init__(self, inner: nn.Module, field: str, when: str = "train", value: float = float("nan")):
        super().__init__()
        self.inner, self.field, self.when, self.value = inner, field, when, value

    def forward(self, x: torch.Tensor, shift: torch.Tensor | None = None):
        out = self.inner(x, shift=shift)
        if (self.when == "train") != self.training:
            return out
        if self.field == "logits":
            return dataclasses.replace(out, logits=out.logits * self.value)
        if self.field == "aux_loss":
            return dataclasses.replace(
                out,
                aux_loss=out.aux_loss + self.value,
                aux_parts={**out.aux_parts, "load": torch.tensor(self.value)},
            )
        raise ValueError(self.field)


NONFINITE: list[tuple[str, Callable[[], nn.Module], str]] = [
    ("nan-logits", lambda: Poisoned(_model(), "logits"), "non-finite training loss at epoch 1, step 0"),
    ("inf-logits", lambda: Poisoned(_model(), "logits", value=float("inf")), "non-finite training loss"),
    ("nan-aux-loss", lambda: Poisoned(_model(), "aux_loss"), "aux_load"),
    (
        "inf-aux-loss-moe",
        lambda: Poisoned(_model("moe"), "aux_loss", value=float("inf")),
        "check model.losses.*",
    ),
    (
        "nan-validation-output",
        lambda: Poisoned(_model(), "logits", when="eval"),
        "non-finite validation output at epoch 1",
    ),
]


@pytest.mark.parametrize(("make", "fragment"), [c[1:] for c in NONFINITE], ids=[c[0] for c in NONFINITE])
def test_non_finite_training_fails(tmp_path: Path, make: Callable[[], nn.Module], fragment: str) -> None:
    xt, yt, xv, yv = _data()
    ckpt = tmp_path / "last.pt"
    with pytest.raises(NonFiniteError, match=r".*") as info:
        train(make(), LoopData(xt, yt, xv, yv, 2), SETTINGS, CPU, checkpoint=CheckpointSpec(ckpt, "k"))
    assert fragment in str(info.value)
    assert not ckpt.exists()  # a NaN epoch is not saved as something to resume


def prepared_toy(root: Path, monkeypatch: pytest.MonkeyPatch, huge: str = "") -> None:
    """The data tests' tiny prepared set and params in root (the working folder from now on);
    huge="all" or "test": those windows' values pushed to float32's limit, still finite."""
    monkeypatch.setitem(DATASETS, "toy", _toy)
    prepare_dataset("toy", DataConfig(), root / "prepared")
    (root / "params.yaml").write_text(PARAMS + tracking(root))
    if huge:
        path = root / "prepared" / "windows.parquet"
        frame = pl.read_parquet(path)
        x = frame["x"].explode().to_numpy().reshape(len(frame), -1).copy()
        rows = (frame["split"] == "test").to_numpy() if huge == "test" else slice(None)
        x[rows] = np.sign(x[rows]) * 3e38
        frame.with_columns(pl.Series("x", x).cast(pl.List(pl.Float32))).write_parquet(path)
    monkeypatch.chdir(root)


CLI_NONFINITE: list[tuple[str, str, str, str]] = [
    # (id, huge inputs, params override, fragment): the three routes to a NaN run, and
    # test windows that overflow a model trained on finite ones
    ("huge-inputs", "all", "", "non-finite training loss at epoch 1, step 0 (non-finite: ce): check"),
    ("huge-test-inputs", "test", "", "non-finite test predictions of the selected model"),
    ("patch-over-prepared-window", "", "model: {patch_size: 8}\n", "model.patch_size 8 exceeds the window"),
    ("inf-loss-weight", "", "model: {losses: {lambda_r: .inf}}\n", "model.losses.lambda_r"),
]


@pytest.mark.parametrize(
    ("huge", "override", "fragment"), [c[1:] for c in CLI_NONFINITE], ids=[c[0] for c in CLI_NONFINITE]
)
def test_non_finite_runs_fail_the_train_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, huge: str, override: str, fragment: str
) -> None:
    """Exit 2 and no train output; where the NaN only shows in training, the run is marked failed."""
    prepared_toy(tmp_path, monkeypatch, huge=huge)
    (tmp_path / "over.yaml").write_text(override)
    code, output = run_cli(*train_args(), "-p", "over.yaml")
    assert code == 2, output
    assert fragment in output and "Traceback" not in output, output
    assert not (tmp_path / "model").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".model")]  # no half-written folder
    if not huge:
        assert not (tmp_path / "mlflow.db").exists()  # refused before a run was opened
        return
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert mlflow.search_runs(search_all_experiments=True)["status"].tolist() == ["FAILED"]


def test_non_finite_trial_fails_the_sweep(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A sweep trial trains through the same loop: its NaN fails the trial and the command."""
    prepared_toy(tmp_path, monkeypatch, huge="all")
    (tmp_path / "over.yaml").write_text("sweep: {n_trials: 1, epochs: 1, pruning: false}\n")
    code, output = run_cli(
        "sweep",
        "--dataset",
        "basicmotions",
        "--model",
        "transformer",
        "--data",
        "prepared",
        "--out",
        "sw",
        "-p",
        "params.yaml",
        "-p",
        "over.yaml",
    )
    assert code == 2, output
    assert "non-finite training loss at epoch 1, step 0" in output and "Traceback" not in output
    assert not (tmp_path / "sw").exists()  # no best_params.json for a study whose trial went NaN


# ------------------------------------------------------------------ checkpoints
def _garbage(path: Path) -> None:
    path.write_bytes(b"this is not a torch checkpoint")


def _empty(path: Path) -> None:
    path.write_bytes(b"")


def _truncated(path: Path) -> None:
    torch.save({"key": "k", "epoch": 0, "model": _model().state_dict()}, path)
    blob = path.read_bytes()
    path.write_bytes(blob[: len(blob) // 2])


def _missing_fields(path: Path) -> None:
    torch.save({"key": "k", "epoch": 0}, path)


def _not_a_mapping(path: Path) -> None:
    torch.save(torch.zeros(3), path)


def _wrong_shapes(path: Path) -> None:
    state = {k: torch.zeros(1) for k in _model().state_dict()}
    torch.save({"key": "k", "epoch": 0, "model": state, "optimizer": {}, "scheduler": {}}, path)


def _unsafe_pickle(path: Path) -> None:
    import pickle

    path.write_bytes(pickle.dumps({"key": "k", "fn": print}))


CHECKPOINTS: list[tuple[str, Callable[[Path], None]]] = [
    ("garbage-bytes", _garbage),
    ("empty-file", _empty),
    ("truncated-zip", _truncated),
    ("missing-fields", _missing_fields),
    ("not-a-mapping", _not_a_mapping),
    ("wrong-shapes", _wrong_shapes),
    ("unsafe-pickle", _unsafe_pickle),
]


@pytest.mark.parametrize("damage", [c[1] for c in CHECKPOINTS], ids=[c[0] for c in CHECKPOINTS])
def test_unreadable_checkpoint_is_moved_aside(tmp_path: Path, damage: Callable[[Path], None]) -> None:
    xt, yt, xv, yv = _data()
    ckpt = tmp_path / "last.pt"
    damage(ckpt)
    with pytest.warns(CheckpointWarning, match=r"last\.pt.*moved to .*last\.pt\.corrupt-.*from scratch"):
        result = train(
            _model(), LoopData(xt, yt, xv, yv, 2), SETTINGS, CPU, checkpoint=CheckpointSpec(ckpt, "k")
        )
    assert result.resumed_from_epoch is None and len(result.history) == SETTINGS.epochs
    assert [p.name.startswith("last.pt.corrupt-") for p in tmp_path.iterdir()].count(True) == 1
    clean = train(_model(), LoopData(xt, yt, xv, yv, 2), SETTINGS, CPU)
    assert result.history == clean.history  # the restart is a true fresh start


def test_train_command_recovers_from_a_corrupt_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    prepared_toy(tmp_path, monkeypatch)
    (tmp_path / "ck").mkdir()
    (tmp_path / "ck" / "last.pt").write_bytes(b"PK\x03\x04 half a zip")
    with pytest.warns(CheckpointWarning, match=r"ck/last\.pt .*from scratch"):
        code, output = run_cli(*train_args(), "--checkpoints", "ck")
    assert code == 0, output
    assert (tmp_path / "model" / "metrics.json").exists()
    assert [p.name[:16] for p in (tmp_path / "ck").iterdir()] == ["last.pt.corrupt-"]
