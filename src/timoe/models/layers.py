"""Building blocks shared by every model: positional encoding, FFN, Transformer blocks,
per-modality encoders and a masked multi-head attention for grouped tokens."""

from __future__ import annotations

import math
from collections.abc import Sequence

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


# Dropout's keep/drop draw, 16 random bits per element: p is rounded to a multiple of 2**-16
# (0.1 -> 0.1000061) and the survivors are scaled by the rounded p's 1 / (1 - p), so the
# expectation stays exact.
_LANES = 4  # 16-bit lanes per 64-bit random word
_LANE_LEVELS = 1 << 16


def keep_mask(shape: torch.Size, p: float, dtype: torch.dtype) -> Tensor:
    """Inverted-dropout multiplier on the CPU: 0 with probability p, else 1 / (1 - p); [shape].

    Why not torch's: ATen's bernoulli_ has a vectorised path only with Intel MKL; elsewhere (this
    AMD EPYC) it draws one double per element through the serial generator, 3.7 ms for 393k
    elements, and nn.Dropout cost 30 % of a training step. One 64-bit draw from the same global
    generator here serves four elements (0.9 ms including the multiply), and stays reproducible
    under torch.manual_seed like the rest of the training stream.
    """
    n = math.prod(shape)
    drop_levels = round(p * _LANE_LEVELS)
    words = torch.empty((n + _LANES - 1) // _LANES, dtype=torch.int64).random_(-(2**63), None)
    lanes = words.view(torch.int16)[:n].view(shape)  # uniform on -2**15 .. 2**15 - 1
    keep = lanes >= drop_levels - _LANE_LEVELS // 2
    return keep.to(dtype).mul_(_LANE_LEVELS / (_LANE_LEVELS - drop_levels))


def dropout(x: Tensor, p: float, training: bool) -> Tensor:
    """F.dropout with keep_mask's draw on the CPU (torch's own elsewhere: CUDA's is fast)."""
    if not training or p == 0.0:
        return x
    if x.device.type != "cpu" or p >= 1.0:
        return F.dropout(x, p, True)
    return x * keep_mask(x.shape, p, x.dtype)


class Dropout(nn.Dropout):
    """nn.Dropout drawing its mask with keep_mask on the CPU (same state, same p)."""

    def forward(self, x: Tensor) -> Tensor:
        return dropout(x, self.p, self.training)


class FeedForward(nn.Module):
    """Position-wise FFN d -> d_ff -> d (GELU); also the FFN expert of the MoE layer."""

    def __init__(self, d_model: int, d_ff: int, dropout: float) -> None:
        super().__init__()
        self.fc1 = nn.Linear(d_model, d_ff)
        self.fc2 = nn.Linear(d_ff, d_model)
        self.drop = Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.drop(F.gelu(self.fc1(x))))


def self_attention(attn: nn.MultiheadAttention, x: Tensor) -> Tensor:
    """x [B, T, d] -> [B, T, d]: `attn`'s weights (batch_first, packed in-projection) through
    SDPA with no dropout on the attention probabilities.

    Why: with dropout on the probabilities, CPU SDPA leaves its fused kernel for the unfused math
    path, which draws a bernoulli mask of B x heads x T x T (one encoder layer's forward +
    backward: 11.6 ms at p = 0.1, 6.0 ms at p = 0). The blocks still drop the attention output.
    """
    b, t, d = x.shape
    h = attn.num_heads
    qkv = F.linear(x, attn.in_proj_weight, attn.in_proj_bias)  # [B, T, 3d]
    q, k, v = qkv.view(b, t, 3, h, d // h).permute(2, 0, 3, 1, 4)  # 3 x [B, h, T, d/h]
    y = F.scaled_dot_product_attention(q, k, v)
    return attn.out_proj(y.transpose(1, 2).reshape(b, t, d))


def modality_self_attention(attns: Sequence[nn.MultiheadAttention], h: Tensor) -> Tensor:
    """h [B, M, T, d] -> [B, M, T, d]: modality m's stream through its own attention attns[m]
    (over its steps, as `self_attention`), all modalities in one batch.

    Why: a loop over modalities runs M sets of small ops on strided [B, T, d] slices (each
    projection copies its slice first) and stacks the results; here the projections are one
    batched matmul each over the [M, B*T, d] streams and attention is one SDPA over M*B
    sequences. Same arithmetic per modality.
    """
    b, m, t, d = h.shape
    heads = attns[0].num_heads
    w_in = torch.stack([a.in_proj_weight for a in attns])  # [M, 3d, d]
    b_in = torch.stack([a.in_proj_bias for a in attns])  # [M, 3d]
    w_out = torch.stack([a.out_proj.weight for a in attns])  # [M, d, d]
    b_out = torch.stack([a.out_proj.bias for a in attns])  # [M, d]
    x = h.transpose(0, 1).reshape(m, b * t, d)  # [M, B*T, d]
    qkv = torch.baddbmm(b_in[:, None, :], x, w_in.transpose(1, 2))  # [M, B*T, 3d]
    q, k, v = qkv.view(m * b, t, 3, heads, d // heads).permute(2, 0, 3, 1, 4)  # 3 x [M*B, h, T, d/h]
    y = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(m, b * t, d)
    out = torch.baddbmm(b_out[:, None, :], y, w_out.transpose(1, 2))  # [M, B*T, d]
    return out.view(m, b, t, d).transpose(0, 1)


class EncoderBlock(nn.TransformerEncoderLayer):
    """Post-norm Transformer block (the reference's layout), torch's layer with its parameters and
    state-dict keys; in training, attention runs through `self_attention` (no dropout on the
    probabilities, fused SDPA) and dropout draws its masks with keep_mask. Evaluation, and any
    call with a mask, takes torch's own path (its fused inference kernel)."""

    def forward(
        self,
        src: Tensor,
        src_mask: Tensor | None = None,
        src_key_padding_mask: Tensor | None = None,
        is_causal: bool = False,
    ) -> Tensor:
        if not self.training or src_mask is not None or src_key_padding_mask is not None or self.norm_first:
            return super().forward(src, src_mask, src_key_padding_mask, is_causal)
        p = self.dropout.p
        x = self.norm1(src + dropout(self_attention(self.self_attn, src), p, True))
        hidden = dropout(self.activation(self.linear1(x)), p, True)
        return self.norm2(x + dropout(self.linear2(hidden), p, True))


def transformer_block(d_model: int, n_heads: int, d_ff: int, dropout: float) -> EncoderBlock:
    """Post-norm Transformer block (see EncoderBlock)."""
    return EncoderBlock(
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
        self.drop = Dropout(dropout)
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

    def packed(self, x: Tensor, group: Tensor, pos: Tensor, counts: Tensor) -> Tensor:
        """Attention within groups of rows: x [n, d], row i is position pos[i] of group group[i]
        (each group's positions are 0..counts[g]-1), counts [G]. Returns [n, d].

        Equals forward() on the zero-padded [G, L, d] with each row allowed its group's rows, at
        about half the projection work: q/k/v and the output projection run on the n rows, and
        only q/k/v are padded. The mask hides padding keys only; a padding query (zero q, zero
        k/v) still sees its group's keys, so no row is fully masked and none is NaN."""
        n, d = x.shape
        n_groups, length = counts.shape[0], int(counts.max())
        qkv = x.new_zeros(n_groups, length, 3 * d).index_put((group, pos), self.qkv(x))  # [G, L, 3d]
        q, k, v = qkv.view(n_groups, length, 3, self.n_heads, d // self.n_heads).permute(2, 0, 3, 1, 4)
        valid = torch.arange(length, device=x.device)[None, :] < counts[:, None]  # [G, L]
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=valid[:, None, None, :])  # [G, h, L, d/h]
        return self.out(y.transpose(1, 2)[group, pos].reshape(n, d))

    def forward(self, x: Tensor, allowed: Tensor) -> Tensor:
        g, length, d = x.shape
        q, k, v = self.qkv(x).view(g, length, 3, self.n_heads, d // self.n_heads).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed[:, None])
        return self.out(y.transpose(1, 2).reshape(g, length, d))
