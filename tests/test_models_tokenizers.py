"""Tokenizers: the conv patch embedding's shapes, arithmetic, causality and determinism, the
config key, and that the RUS prior's lag -> token mapping does not depend on the tokenizer."""

from __future__ import annotations

import polars as pl
import pytest
import torch
import torch.nn.functional as F

from timoe.config import ConfigError, ModelConfig, validate
from timoe.models import build_model
from timoe.models.prior import PriorProvider, bank_from_table
from timoe.models.tokenizers import CONV_KERNEL, ConvPatchTokenizer, make_tokenizer
from timoe.training.patching import Patched, patch_input, patched_modalities

B, T, D, P, DM = 3, 16, 3, 4, 8


def patched(x: torch.Tensor, patch: int = P) -> torch.Tensor:
    """x [B, T, D] -> [B, T/p, p*D], the layout the tokenizers receive."""
    return patch_input(x, patch)


@pytest.mark.parametrize("patch", [1, 2, 4])
def test_one_token_per_patch(patch: int) -> None:
    torch.manual_seed(0)
    tok = ConvPatchTokenizer(patch * D, DM, patch)
    out = tok(patched(torch.randn(B, T, D), patch))
    assert out.shape == (B, T // patch, DM)
    lin = make_tokenizer("linear", patch * D, DM, patch)
    assert lin(patched(torch.randn(B, T, D), patch)).shape == out.shape


def test_same_arithmetic_as_a_causal_conv1d_pair() -> None:
    """The matrix form equals nn.Conv1d (causal, kernel CONV_KERNEL) + GELU + Conv1d(stride p)."""
    torch.manual_seed(0)
    tok = ConvPatchTokenizer(P * D, DM, P)
    local = torch.nn.Conv1d(D, DM, CONV_KERNEL)
    pool = torch.nn.Conv1d(DM, DM, P, stride=P)
    with torch.no_grad():
        # Linear weight [d, kernel*D] is tap-major; Conv1d weight is [d, D, kernel].
        local.weight.copy_(tok.local.weight.view(DM, CONV_KERNEL, D).transpose(1, 2))
        local.bias.copy_(tok.local.bias)
        pool.weight.copy_(tok.pool.weight.view(DM, P, DM).transpose(1, 2))
        pool.bias.copy_(tok.pool.bias)
    x = torch.randn(B, T, D)
    ref = pool(F.gelu(local(F.pad(x.transpose(1, 2), (CONV_KERNEL - 1, 0))))).transpose(1, 2)
    torch.testing.assert_close(tok(patched(x)), ref, rtol=1e-5, atol=1e-6)


def test_a_token_never_sees_a_later_patch() -> None:
    torch.manual_seed(0)
    tok = ConvPatchTokenizer(P * D, DM, P)
    x = torch.randn(1, T, D)
    base = tok(patched(x))
    for step in range(T):
        y = x.clone()
        y[0, step] += 5.0
        changed = (tok(patched(y)) - base).abs().amax(-1)[0] > 1e-6  # [T/p]
        token = step // P
        assert not changed[:token].any(), f"a change at step {step} reached an earlier token"
        assert changed[token], f"token {token} ignores its own step {step}"
        # reach into the next token: only from its kernel - 1 steps of history
        assert bool(changed[token + 1 :].any()) == (
            token + 1 < T // P and (token + 1) * P - step < CONV_KERNEL
        )


def test_deterministic_for_a_seed() -> None:
    x = torch.randn(B, T // P, P * D)
    outs = []
    for _ in range(2):
        torch.manual_seed(7)
        outs.append(ConvPatchTokenizer(P * D, DM, P)(x))
    torch.testing.assert_close(outs[0], outs[1], rtol=0, atol=0)
    torch.manual_seed(8)
    assert not torch.equal(outs[0], ConvPatchTokenizer(P * D, DM, P)(x))


def test_channels_must_be_whole_steps() -> None:
    with pytest.raises(ValueError, match="not 4 steps of whole channels"):
        ConvPatchTokenizer(6, DM, 4)
    with pytest.raises(ValueError, match="unknown tokenizer 'cnn'"):
        make_tokenizer("cnn", 12, DM, 4)


def test_config_accepts_the_two_and_names_a_wrong_one() -> None:
    assert ModelConfig().tokenizer == "linear"
    assert ModelConfig(tokenizer="conv").tokenizer == "conv"
    with pytest.raises(ConfigError, match=r"model\.tokenizer"):
        validate({"model": {"tokenizer": "cnn"}})


def _rus_table() -> pl.DataFrame:
    lags = [0, 1, 2, 4, 8]
    return pl.DataFrame(
        {
            "context": [0] * len(lags),
            "pair": ["a|b"] * len(lags),
            "lag": lags,
            "R": [float(v) for v in lags],
            "U1": [0.5 * v for v in lags],
            "U2": [0.25 * v for v in lags],
            "S": [100.0 + v for v in lags],
            "total": [2.0 * v + 1 for v in lags],
        }
    )


@pytest.mark.parametrize("tokenizer", ["linear", "conv"])
def test_lag_to_token_mapping_does_not_depend_on_the_tokenizer(tokenizer: str) -> None:
    """Same prior per token under either tokenizer, and the encoders give exactly one token per
    prior position (T/p), so the router reads the prior of the patch it routes."""
    modalities = {"a": [0, 1, 2], "b": [3, 4, 5]}
    U, R, S = bank_from_table(_rus_table(), ["a", "b"], T, "end")
    cfg = ModelConfig(
        tokenizer=tokenizer,
        patch_size=P,
        d_model=DM,
        n_heads=2,
        d_ff=16,
        n_layers=2,
        moe_layers=[0],
        n_experts=4,
    )
    torch.manual_seed(0)
    inner = build_model(
        "timoe",
        cfg,
        n_channels=6 * P,
        n_timesteps=T // P,
        n_classes=3,
        modalities=patched_modalities(modalities, 6, P),
        rus=PriorProvider(U, R, S, patch=P),
    )
    model = Patched(inner, P)
    x = torch.randn(B, T, 6)
    xp = patch_input(x, P)
    prior = inner.routing_context(xp, x, None).prior
    # 'end' mapping pooled per patch: the last token is lags 0..3, the one before lags 4..7
    expected = PriorProvider(U, R, S, patch=P).token_tables()[1][0, 0, 1]
    assert prior.R.shape[-1] == T // P
    assert torch.equal(prior.R[0, 0, 1], expected)
    assert expected[-1] == pytest.approx((0 + 1 + 2 + 2) / 4)  # lags 0, 1, 2, 3 (3 holds lag 2's value)
    tokens = inner.encoders[0](xp.index_select(-1, inner.channels_0))
    assert tokens.shape == (B, T // P, DM)
    assert model(x).logits.shape == (B, 3)
