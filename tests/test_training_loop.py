"""The training loop: deterministic, and a resumed run ends exactly like an uninterrupted one."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from timoe.config import ModelConfig
from timoe.models import build_model
from timoe.training.loop import CheckpointSpec, LoopData, LoopSettings, train
from timoe.training.patching import Patched, patch_input, patched_modalities
from timoe.training.seeding import seed_everything

CFG = ModelConfig(d_model=8, n_heads=2, d_ff=16, n_layers=2, moe_layers=[0], encoder_layers=1, dropout=0.2)


def _data(seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(48, 16, 4)).astype(np.float32)
    y = (x[:, :, 0].mean(axis=1) > 0).astype(np.int64)
    x[:, :, 1] += y[:, None] * 0.5
    return x[:32], y[:32], x[32:], y[32:]


def _model(name: str = "transformer"):
    seed_everything(0)
    inner = build_model(
        name,
        CFG,
        n_channels=8,
        n_timesteps=8,
        n_classes=2,
        modalities=patched_modalities({"a": [0, 1], "b": [2, 3]}, 4, 2),
    )
    return Patched(inner, 2)


SETTINGS = LoopSettings(
    epochs=4, batch_size=8, lr=3e-3, weight_decay=0.0, grad_clip=1.0, warmup_epochs=1, patience=10, seed=3
)


def _run(ckpt=None, stop_after=None):
    xt, yt, xv, yv = _data()
    model = _model()

    def stop(epoch, _m):
        if stop_after is not None and epoch == stop_after:
            raise KeyboardInterrupt  # stands in for a kill after the checkpoint was written

    result = train(
        model,
        LoopData(xt, yt, xv, yv, 2),
        SETTINGS,
        torch.device("cpu"),
        checkpoint=None if ckpt is None else CheckpointSpec(ckpt, "k"),
        on_epoch=stop,
    )
    return model, result


def test_same_seed_same_numbers():
    m1, r1 = _run()
    m2, r2 = _run()
    assert r1.history == r2.history
    for a, b in zip(m1.state_dict().values(), m2.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_resume_after_interruption_matches_uninterrupted(tmp_path):
    _, full = _run()
    ckpt = tmp_path / "last.pt"
    with pytest.raises(KeyboardInterrupt):
        _run(ckpt, stop_after=1)
    assert ckpt.exists()
    _, resumed = _run(ckpt)
    # interrupted while epoch 1 was being reported, before its checkpoint: epoch 1 is redone
    assert resumed.resumed_from_epoch == 1
    assert resumed.history == full.history
    assert resumed.best_epoch == full.best_epoch


def test_checkpoint_of_another_config_is_not_resumed(tmp_path):
    ckpt = tmp_path / "last.pt"
    with pytest.raises(KeyboardInterrupt):
        _run(ckpt, stop_after=0)
    xt, yt, xv, yv = _data()
    result = train(
        _model(),
        LoopData(xt, yt, xv, yv, 2),
        SETTINGS,
        torch.device("cpu"),
        checkpoint=CheckpointSpec(ckpt, "other"),
    )
    assert result.resumed_from_epoch is None
    assert len(result.history) == SETTINGS.epochs


def test_patching_keeps_modalities_apart():
    x = torch.arange(2 * 4 * 3, dtype=torch.float32).reshape(2, 4, 3)
    p = patch_input(x, 2)
    assert p.shape == (2, 2, 6)
    mods = patched_modalities({"a": [0], "b": [1, 2]}, 3, 2)
    assert mods == {"a": [0, 3], "b": [1, 2, 4, 5]}
    # step 1 channel 0 of the window lands at patch 0, channel 3
    assert p[0, 0, 3] == x[0, 1, 0]


def test_moe_epochs_log_expert_load_and_routing_entropy():
    xt, yt, xv, yv = _data()
    seed_everything(0)
    inner = build_model(
        "moe",
        CFG,
        n_channels=8,
        n_timesteps=8,
        n_classes=2,
        modalities=patched_modalities({"a": [0, 1], "b": [2, 3]}, 4, 2),
    )
    settings = LoopSettings(
        epochs=1, batch_size=8, lr=1e-3, weight_decay=0.0, grad_clip=1.0, warmup_epochs=0, patience=2, seed=0
    )
    hist = train(Patched(inner, 2), LoopData(xt, yt, xv, yv, 2), settings, torch.device("cpu")).history[0]
    assert 0.0 <= hist["train_expert_load_cv"] < 3.0
    assert 1 / CFG.n_experts <= hist["train_expert_load_max"] <= 1.0
    assert 0.0 < hist["train_routing_entropy"] <= np.log(CFG.n_experts) + 1e-6
    assert "train_aux_load" in hist


AUGMENTED = LoopSettings(
    epochs=4,
    batch_size=8,
    lr=3e-3,
    weight_decay=0.0,
    grad_clip=1.0,
    warmup_epochs=1,
    patience=10,
    seed=3,
    label_smoothing=0.1,
    augment_scale=0.1,
    augment_jitter=0.05,
    augment_shift=3,
)


def _run_augmented(ckpt=None, stop_after=None, settings=AUGMENTED):
    xt, yt, xv, yv = _data()
    model = _model()

    def stop(epoch, _m):
        if stop_after is not None and epoch == stop_after:
            raise KeyboardInterrupt

    return train(
        model,
        LoopData(xt, yt, xv, yv, 2),
        settings,
        torch.device("cpu"),
        checkpoint=None if ckpt is None else CheckpointSpec(ckpt, "k"),
        on_epoch=stop,
    )


def test_augmentation_is_deterministic_resumable_and_changes_training(tmp_path):
    full = _run_augmented()
    assert full.history == _run_augmented().history
    ckpt = tmp_path / "last.pt"
    with pytest.raises(KeyboardInterrupt):
        _run_augmented(ckpt, stop_after=1)
    assert _run_augmented(ckpt).history == full.history
    plain = _run_augmented(settings=SETTINGS)
    assert [h["train_loss"] for h in plain.history] != [h["train_loss"] for h in full.history]


def test_augment_batch_parts():
    from timoe.training.loop import augment_batch

    x = torch.arange(2 * 6 * 3, dtype=torch.float32).view(2, 6, 3)
    base = dict(
        epochs=1, batch_size=2, lr=1e-3, weight_decay=0.0, grad_clip=1.0, warmup_epochs=0, patience=1, seed=0
    )
    only_shift = LoopSettings(**base, augment_shift=2)
    out, shifts = augment_batch(x, only_shift, torch.Generator().manual_seed(0))
    assert shifts is not None
    for b in range(2):  # a circular shift of each window by the returned amount
        assert torch.equal(out[b], torch.roll(x[b], int(shifts[b]), dims=0))
    only_scale = LoopSettings(**base, augment_scale=0.2)
    ones = torch.ones(4, 5, 3)
    scaled, no_shift = augment_batch(ones, only_scale, torch.Generator().manual_seed(0))
    assert no_shift is None
    # one gain per (window, channel), constant over time, and not all equal to 1
    assert torch.allclose(scaled, scaled[:, :1].expand_as(scaled))
    assert not torch.allclose(scaled, ones)
    untouched, _ = augment_batch(x, SETTINGS, torch.Generator().manual_seed(0))
    assert torch.equal(untouched, x)


def test_epoch_routing_diagnostics_with_regime():
    """MoE runs log the routing diagnostics every epoch, MI(expert; regime) where the data carry
    the true regime, and the validation accuracy lost under random routing."""
    xt, yt, xv, yv = _data()
    xt[:, :, 3] = (np.arange(32) % 2)[:, None]  # channel 3 stands in for a one-hot regime pair
    xt[:, :, 2] = 1.0 - xt[:, :, 3]
    settings = LoopSettings(
        epochs=2,
        batch_size=8,
        lr=3e-3,
        weight_decay=0.0,
        grad_clip=1.0,
        warmup_epochs=0,
        patience=10,
        seed=3,
        regime_channels=(2, 3),
    )
    history = train(_model("moe"), LoopData(xt, yt, xv, yv, 2), settings, torch.device("cpu")).history
    for h in history:
        assert {
            "train_n_eff_l0",
            "train_mi_expert_class_l0",
            "train_topk_overlap_l0",
            "train_synergy_share_l0",
            "train_mi_expert_regime_l0",
        } <= set(h)
        assert 1.0 <= h["train_n_eff_l0"] <= CFG.n_experts
        assert h["train_mi_expert_regime_l0"] >= 0.0
    # one more validation pass, at the last scheduled epoch only
    assert [("val_random_routing_drop" in h) for h in history] == [False] * (len(history) - 1) + [True]
    dense = train(_model(), LoopData(xt, yt, xv, yv, 2), settings, torch.device("cpu")).history[0]
    assert "val_random_routing_drop" not in dense  # no routing to replace


def test_loop_settings_for_a_train_job_and_a_sweep_trial():
    from timoe.config import validate
    from timoe.training.loop import loop_settings

    params = validate(
        {
            "model": {"patch_size": 4},
            "train": {"epochs": 9, "warmup_epochs": 3, "patience": 2, "augment": {"shift": 8}},
            "sweep": {"epochs": 2},
        }
    )
    job = loop_settings(params, seed=5, regime_channels=[2, 3])
    assert (job.epochs, job.warmup_epochs, job.patience, job.seed) == (9, 3, 2, 5)
    assert job.selection_metric == "val_accuracy" and job.regime_channels == (2, 3)
    assert (job.augment_shift, job.augment_shift_unit) == (8, 4)
    trial = loop_settings(params, seed=1, sweep_trial=True)
    assert (trial.epochs, trial.warmup_epochs, trial.patience) == (2, 1, 2)  # warm-up ends before the trial
    assert trial.selection_metric == params.sweep.metric and trial.regime_channels == ()
    assert job.routing_drop and not trial.routing_drop  # a trial reads only its metric
    assert not job.select_last  # train.select defaults to best


@pytest.mark.parametrize("select_last", [False, True])
def test_the_model_ends_holding_the_selected_epochs_weights(select_last):
    """train.select: best keeps the epoch best on validation, last the final epoch's weights; the
    two runs train identically (selection does not touch the training stream)."""
    import dataclasses

    xt, yt, xv, yv = _data()
    model = _model("moe")
    snapshots: list[dict[str, torch.Tensor]] = []

    def snapshot(_epoch, _m):
        snapshots.append({k: v.clone() for k, v in model.state_dict().items()})

    settings = dataclasses.replace(SETTINGS, select_last=select_last, patience=1)
    result = train(model, LoopData(xt, yt, xv, yv, 2), settings, torch.device("cpu"), on_epoch=snapshot)
    vals = [h["val_accuracy"] for h in result.history]
    expected = len(vals) - 1 if select_last else int(np.argmax(vals))
    assert result.best_epoch == expected
    assert result.best_metric == vals[expected]
    for k, v in model.state_dict().items():
        assert torch.equal(v, snapshots[expected][k])
    if select_last:
        assert len(vals) == SETTINGS.epochs  # no early stopping when the last epoch is kept
