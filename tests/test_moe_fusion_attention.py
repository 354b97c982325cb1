"""The fusion layers' batched per-modality attention (issue 19) against torch's own
nn.MultiheadAttention run modality by modality: values and gradients (input, every weight) to
float32 rounding; and CPU determinism of a whole fusion layer at a fixed seed."""

from __future__ import annotations

import torch
from torch import nn

from timoe.models.layers import FeedForward, modality_self_attention
from timoe.models.model import FusionLayer


def test_modality_self_attention_matches_multihead_attention() -> None:
    torch.manual_seed(0)
    b, m, t, d = 3, 4, 5, 16
    attns = nn.ModuleList(nn.MultiheadAttention(d, 2, batch_first=True) for _ in range(m))
    h = torch.randn(b, m, t, d, requires_grad=True)
    got = modality_self_attention(attns, h)
    want = torch.stack([a(h[:, k], h[:, k], h[:, k], need_weights=False)[0] for k, a in enumerate(attns)], 1)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    probe = torch.randn(got.shape, generator=torch.Generator().manual_seed(1))
    wrt = [h, *attns.parameters()]
    g1 = torch.autograd.grad((got * probe).sum(), wrt, retain_graph=True)
    g2 = torch.autograd.grad((want * probe).sum(), wrt)
    for a, c in zip(g1, g2, strict=True):
        torch.testing.assert_close(a, c, rtol=1e-4, atol=1e-6)


def test_fusion_layer_deterministic_with_dropout() -> None:
    def run() -> tuple[torch.Tensor, torch.Tensor]:
        torch.manual_seed(3)
        layer = FusionLayer(16, 2, 3, 0.1, FeedForward(16, 24, 0.1)).train()
        h = torch.randn(4, 3, 6, 16, requires_grad=True)
        y, _ = layer(h)
        (grad,) = torch.autograd.grad(y.square().sum(), h)
        return y.detach(), grad

    (y1, g1), (y2, g2) = run(), run()
    assert torch.equal(y1, y2)
    assert torch.equal(g1, g2)
