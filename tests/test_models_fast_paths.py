"""The CPU fast paths of the models (issue 19) against the plain torch implementations they replace:
dropout's mask draw, attention without dropout on the probabilities, the Transformer block, and
determinism of a training step for a fixed seed."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from timoe.models.layers import EncoderBlock, dropout, keep_mask, self_attention


def test_keep_mask_drops_p_and_keeps_the_expectation() -> None:
    torch.manual_seed(0)
    p = 0.1
    mask = keep_mask(torch.Size([1000, 1000]), p, torch.float32)
    dropped = (mask == 0).float().mean().item()
    # 1e6 Bernoulli(0.1) draws: std of the share 3e-4, so 2e-3 is > 6 sigma
    assert abs(dropped - p) < 2e-3
    kept_values = mask[mask != 0].unique()
    assert kept_values.numel() == 1 and abs(kept_values.item() - 1 / (1 - p)) < 1e-4
    assert abs(mask.mean().item() - 1.0) < 3e-3


def test_keep_mask_is_unbiased_per_position() -> None:
    """Every 16-bit lane of the 64-bit words drops at rate p (a bad lane split would show here)."""
    torch.manual_seed(1)
    mask = keep_mask(torch.Size([200_000, 4]), 0.25, torch.float32)
    per_lane = (mask == 0).float().mean(0)
    assert torch.allclose(per_lane, torch.full((4,), 0.25), atol=5e-3)


def test_dropout_is_reproducible_and_identity_in_eval() -> None:
    x = torch.randn(64, 32, 17)
    torch.manual_seed(3)
    a = dropout(x, 0.1, True)
    torch.manual_seed(3)
    b = dropout(x, 0.1, True)
    assert torch.equal(a, b)
    assert not torch.equal(a, x)
    assert dropout(x, 0.1, False) is x
    assert dropout(x, 0.0, True) is x


def test_dropout_gradient_is_the_mask() -> None:
    x = torch.randn(50, 40, requires_grad=True)
    torch.manual_seed(4)
    y = dropout(x, 0.3, True)
    y.sum().backward()
    assert x.grad is not None
    torch.testing.assert_close(x.grad, y.detach() / x.detach())


def _mha_and_input(seed: int = 0) -> tuple[nn.MultiheadAttention, torch.Tensor]:
    torch.manual_seed(seed)
    attn = nn.MultiheadAttention(32, 2, dropout=0.0, batch_first=True)
    return attn, torch.randn(8, 13, 32, requires_grad=True)


def test_self_attention_matches_multihead_attention_forward_and_gradients() -> None:
    attn, x = _mha_and_input()
    ref = attn(x, x, x, need_weights=False)[0]
    (gx_ref, *gw_ref) = torch.autograd.grad(ref.square().sum(), [x, *attn.parameters()])
    out = self_attention(attn, x)
    (gx, *gw) = torch.autograd.grad(out.square().sum(), [x, *attn.parameters()])
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(gx, gx_ref, atol=1e-4, rtol=1e-4)
    for a, b in zip(gw, gw_ref, strict=True):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("training", [True, False])
def test_encoder_block_matches_torch_layer_without_dropout(training: bool) -> None:
    """With p = 0 the only differences left are the kernels: same outputs and gradients."""
    torch.manual_seed(0)
    ref = nn.TransformerEncoderLayer(32, 2, 64, 0.0, activation="gelu", batch_first=True)
    block = EncoderBlock(32, 2, 64, 0.0, activation="gelu", batch_first=True)
    block.load_state_dict(ref.state_dict())  # same keys: checkpoints of either load into the other
    ref.train(training)
    block.train(training)
    x = torch.randn(6, 16, 32, requires_grad=True)
    y_ref, y = ref(x), block(x)
    torch.testing.assert_close(y, y_ref, atol=1e-5, rtol=1e-5)
    if training:
        g_ref = torch.autograd.grad(y_ref.sum(), [x, *ref.parameters()])
        g = torch.autograd.grad(y.sum(), [x, *block.parameters()])
        for a, b in zip(g, g_ref, strict=True):
            torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


def test_encoder_block_drops_at_rate_p() -> None:
    torch.manual_seed(0)
    block = EncoderBlock(32, 2, 64, 0.5, activation="gelu", batch_first=True).train()
    x = torch.randn(4, 16, 32)
    torch.manual_seed(1)
    a = block(x)
    torch.manual_seed(1)
    b = block(x)
    torch.manual_seed(2)
    c = block(x)
    assert torch.equal(a, b) and not torch.allclose(a, c)
