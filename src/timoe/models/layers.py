"""Building blocks shared by every model: positional encoding, FFN, Transformer blocks,
per-modality encoders and a masked multi-head attention for grouped tokens."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from timoe.models.tokenizers import make_tokenizer


class SinusoidalPositionalEncoding(nn.Module):
    """Adds the fixed sine/cosine table of Vaswani et al. to x [..., T, d]."""

    def __init__(self, d_model: int, max_len: int) -> None:
        super().__init__()
        pos = torch.arange(max_len, dtype=torch.float32)[:, None]
        div = torch.exp(torch.arange(0, d_model, 2, dtype=torch.float32) * (-math.log(10000.0) / d_model))
        pe = torch.zeros(max_len, d_model)
        pe[:, 0::2] = torch.sin(pos * div)
        pe[:, 1::2] = torch.cos(pos * div)[:, : d_model // 2]
        # Not persistent: it is a pure function of the shape, so checkpoints need not carry it.
        self.register_buffer("pe", pe, persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        t = x.shape[-2]
        if t > self.pe.shape[0]:
            raise ValueError(f"sequence of {t} steps exceeds the positional table ({self.pe.shape[0]})")
        return x + self.pe[:t]


class FeedForward(nn.Module):
    """Position-wise FFN d -> d_ff -> d (GELU); also the FFN expert of the MoE layer."""

    def __init__(self, d_model: int, d_ff: int, dropout: float) -> None:
        super().__init__()
        self.fc1 = nn.Linear(d_model, d_ff)
        self.fc2 = nn.Linear(d_ff, d_model)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.drop(F.gelu(self.fc1(x))))


def transformer_block(d_model: int, n_heads: int, d_ff: int, dropout: float) -> nn.TransformerEncoderLayer:
    """Post-norm Transformer block (the reference's layout); torch's layer for its fused kernels."""
    return nn.TransformerEncoderLayer(
        d_model, n_heads, d_ff, dropout, activation="gelu", batch_first=True, norm_first=False
    )


class ModalityEncoder(nn.Module):
    """One modality's channels [B, T, D_m] -> [B, T, d]: tokenizer (`tokenizer`, see
    models.tokenizers; `patch` steps per token of the input) x sqrt(d), so the embedding is not
    drowned by the unit-scale positional table, then positional encoding and blocks."""

    def __init__(
        self,
        in_channels: int,
        d_model: int,
        n_heads: int,
        d_ff: int,
        n_layers: int,
        dropout: float,
        max_len: int,
        tokenizer: str = "linear",
        patch: int = 1,
    ) -> None:
        super().__init__()
        self.proj = make_tokenizer(tokenizer, in_channels, d_model, patch)
        self.scale = math.sqrt(d_model)
        self.pos = SinusoidalPositionalEncoding(d_model, max_len)
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(
            transformer_block(d_model, n_heads, d_ff, dropout) for _ in range(n_layers)
        )

    def forward(self, x: Tensor) -> Tensor:
        h = self.drop(self.pos(self.proj(x) * self.scale))
        for block in self.blocks:
            h = block(h)
        return h


class GroupedSelfAttention(nn.Module):
    """Multi-head self-attention over padded groups: x [G, L, d], allowed [G, L, L] bool
    (True where query l may attend to key l'). Returns [G, L, d].

    Written out (rather than nn.MultiheadAttention with key_padding_mask) because a fully masked
    query row there yields NaN, and NaN in a discarded padding row still poisons the backward pass;
    the caller guarantees every row has at least one allowed key (its own position).
    No dropout on the attention weights: on CPU it forces SDPA's unfused path, about 6x slower
    (measured at 64 groups x 256 tokens); callers drop the output instead.
    """

    def __init__(self, d_model: int, n_heads: int) -> None:
        super().__init__()
        if d_model % n_heads:
            raise ValueError("d_model must be divisible by n_heads")
        self.n_heads = n_heads
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.out = nn.Linear(d_model, d_model)

    def forward(self, x: Tensor, allowed: Tensor) -> Tensor:
        g, length, d = x.shape
        q, k, v = self.qkv(x).view(g, length, 3, self.n_heads, d // self.n_heads).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed[:, None])
        return self.out(y.transpose(1, 2).reshape(g, length, d))
