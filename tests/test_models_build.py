"""build_model: every named model's shapes, gradients, determinism, errors, routing statistics."""

from __future__ import annotations

import json

import polars as pl
import pytest
import torch

from timoe.config import MODEL_NAMES, REFERENCE_MODELS, ModelConfig
from timoe.models import RoutingStats, RusPrior, TimoeModel, build_model, interaction_regime_usage
from timoe.models.prior import RegimeReader

B, T, C, N_CLASSES = 3, 12, 7, 4
MODALITIES = {"acc": [0, 1, 2], "gyro": [3, 4]}
REGIME_CHANNELS = [5, 6]  # one-hot true regime, outside every modality (read by the oracle only)
NEURAL = [n for n in MODEL_NAMES if n not in REFERENCE_MODELS]  # build_model's models


def small_cfg(**kw: object) -> ModelConfig:
    base = dict(
        d_model=16,
        n_heads=2,
        d_ff=32,
        encoder_layers=1,
        n_layers=3,
        moe_layers=[0, 2],
        n_experts=4,
        n_synergy_experts=1,
        top_k=2,
        dropout=0.1,
        router={"token_dim": 8, "gru_dim": 8, "kv_dim": 4},
    )
    base.update(kw)
    return ModelConfig.model_validate(base)


def prior() -> RusPrior:
    df = pl.DataFrame(
        {
            "pair": ["acc|gyro"] * 3,
            "lag": [0, 2, 4],
            "R": [0.5, 0.05, 0.3],
            "U1": [0.9, 0.1, 0.6],
            "U2": [0.7, 0.2, 0.8],
            "S": [0.0, 0.4, 0.2],
        }
    )
    return RusPrior.from_table(df, ["acc", "gyro"], n_timesteps=T)


def make(name: str, **kw: object) -> TimoeModel:
    torch.manual_seed(0)
    return build_model(
        name,
        small_cfg(**kw),
        n_channels=C,
        n_timesteps=T,
        n_classes=N_CLASSES,
        modalities=MODALITIES,
        rus=prior(),
        regime=RegimeReader(REGIME_CHANNELS),
    )


def batch() -> torch.Tensor:
    x = torch.randn(B, T, C, generator=torch.Generator().manual_seed(5))
    x[..., REGIME_CHANNELS] = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])[:, None, :]
    return x


@pytest.mark.parametrize("name", NEURAL)
def test_shapes_gradients_determinism(name: str) -> None:
    model = make(name)
    x = batch()
    torch.manual_seed(1)
    out = model(x)
    assert out.logits.shape == (B, N_CLASSES)
    assert out.aux_loss.dim() == 0
    loss = torch.nn.functional.cross_entropy(out.logits, torch.tensor([0, 1, 2])) + out.aux_loss
    loss.backward()
    assert torch.isfinite(loss)
    grads = {n: p.grad for n, p in model.named_parameters()}
    assert all(g is None or torch.isfinite(g).all() for g in grads.values())
    assert grads["encoders.0.proj.weight"].abs().sum() > 0
    assert grads["head.weight"].abs().sum() > 0
    if name == "transformer":
        assert out.aux_loss.item() == 0.0 and out.routing is None
    else:
        router_param = {
            "moe": "gate.weight",
            "fusemoe": "centres",
            "modality-moe": "gate.weight",
            "oracle": "regime_bias",
            "hash-moe": None,
        }.get(name, "token.weight")
        if router_param is not None:  # the hash router learns nothing
            assert grads[f"layers.0.mixer.router.{router_param}"] is not None
        assert out.routing is not None and out.routing.usage.shape == (2, 2, 4)
        # every token makes k = 2 assignments per MoE layer
        assert out.routing.usage.sum().item() == 2 * B * len(MODALITIES) * T * 2
    # same seed -> identical logits (dropout included, model in training mode)
    again = make(name)
    torch.manual_seed(1)
    assert torch.equal(again(x).logits, out.logits)


def test_aux_parts_per_model() -> None:
    x = batch()
    parts = {name: make(name)(x).aux_parts for name in NEURAL}
    assert parts["transformer"] == {}
    assert set(parts["timoe"]) == {"load", "z", "redundancy", "uniqueness", "synergy"}
    assert parts["timoe"]["redundancy"].requires_grad
    assert not {"load", "z"} & set(parts["hash-moe"])  # nothing to balance or learn
    # timoe-nolosses reports the RUS terms as detached diagnostics; its total is load + z only.
    nl = make("timoe-nolosses")(x)
    assert not nl.aux_parts["redundancy"].requires_grad
    expected = 0.02 * nl.aux_parts["load"].item() + 1e-3 * nl.aux_parts["z"].item()
    assert nl.aux_loss.item() == pytest.approx(expected, rel=1e-5)


def test_shuffled_model_uses_a_permuted_prior() -> None:
    base, shuffled = make("timoe").rus, make("timoe-shuffled-rus").rus
    assert base is not None and shuffled is not None
    assert not torch.equal(base.R, shuffled.R)
    assert sorted(base.R[0, 1].unique().tolist()) == sorted(shuffled.R[0, 1].unique().tolist())
    # reproducible: a second build gets the same shuffled prior
    assert torch.equal(make("timoe-shuffled-rus").rus.R, shuffled.R)


def test_errors() -> None:
    cfg = small_cfg()
    kw = dict(n_channels=C, n_timesteps=T, n_classes=N_CLASSES, modalities=MODALITIES)
    with pytest.raises(ValueError, match="unknown model 'bert'"):
        build_model("bert", cfg, **kw)
    for name in ("timoe", "timoe-nolosses", "timoe-shuffled-rus", "timoe-dataset-rus"):
        with pytest.raises(ValueError, match="needs a RUS prior"):
            build_model(name, cfg, **kw)
    with pytest.raises(ValueError, match="outside"):
        build_model("moe", cfg, **{**kw, "modalities": {"acc": [0, 9]}})
    with pytest.raises(ValueError, match="differ"):
        build_model("timoe", cfg, **{**kw, "modalities": {"gyro": [3, 4], "acc": [0, 1, 2]}}, rus=prior())
    with pytest.raises(ValueError, match="expected input"):
        build_model("moe", cfg, **kw)(torch.randn(B, T, C + 1))


def test_routing_stats_merge_and_regime_usage_are_json_ready() -> None:
    model = make("timoe").eval()
    with torch.no_grad():
        s1 = model(batch()).routing
        s2 = model(batch() * 2).routing
    assert isinstance(s1, RoutingStats) and isinstance(s2, RoutingStats)
    merged = s1.merge(s2)
    assert merged.n_tokens == 2 * B * T
    assert torch.allclose(merged.prob_mean.sum(-1), torch.ones(2, 2))
    assert (merged.entropy > 0).all()
    cfg = small_cfg(losses={"tau_r": 0.1, "tau_u": 0.5, "tau_s": 0.1}).losses
    usage = interaction_regime_usage(merged, model.rus, cfg, model.modality_names)
    text = json.dumps({"stats": merged.to_dict(model.modality_names), "usage": usage})
    assert "redundancy" in text
    # R > 0.1 at steps 0,1 (lag 0) and 4.. (lag 4), i.e. 10 of 12 steps, for both modalities
    assert usage["regimes"]["redundancy"]["steps"] == 2 * 10
    assert sum(usage["regimes"]["redundancy"]["usage"]) == pytest.approx(1.0)
    # pair view: R > 0.1 at 10 steps; S > 0.1 from lag 2 on (10 steps); both U > 0.5 at 0,1 and 4..
    pair = usage["pairs"]["acc|gyro"]
    assert [pair[k]["steps"] for k in ("redundancy", "synergy", "uniqueness")] == [10, 10, 10]
    assert pair["synergy"]["synergy_share"] == pytest.approx(
        merged.usage_t[:, :, 2:, :1].sum().item() / merged.usage_t[:, :, 2:].sum().item(), rel=1e-5
    )
    total = sum(usage["per_modality"][m]["assignments"] for m in MODALITIES)
    assert total == merged.usage.sum().item()
