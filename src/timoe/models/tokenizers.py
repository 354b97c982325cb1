"""Tokenizers: one modality's patched steps -> one d-dimensional token per patch.

Every model sees its input patched (`training.patching.patch_input`): token j of a modality
holds the p steps j*p .. j*p+p-1 of that modality's D channels, concatenated step by step
([B, T/p, p*D]). A tokenizer maps that to [B, T/p, d], one token per patch, so token positions
(and the RUS prior's lag -> token mapping, `models.rus` / `models.prior`) do not depend on it.

- `linear`: one matrix over the p*D values of the patch (the reference's input projection).
- `conv`: a small 1D CNN over the modality's raw steps, then a strided convolution down to one
  token per patch. Sensor windows carry their information in local shapes (a step's impact, a
  turn), which a shared kernel finds wherever it falls; a linear patch projection must learn each
  shape once per offset inside the patch. The local convolution is causal (left padding only),
  so token j sees the steps of patch j and the kernel - 1 steps before it, never a later patch:
  the prior that `rus_mapping` puts on token j still describes what token j has seen.
"""

from __future__ import annotations

from typing import get_args

import torch.nn.functional as F
from torch import Tensor, nn

from timoe.config import TokenizerKind

TOKENIZERS: tuple[str, ...] = get_args(TokenizerKind)

# Kernel of the local convolution, in raw steps: 5 steps = 0.1 s at HAPT's 50 Hz, the scale of
# a step's impact; wider kernels add parameters the strided stage already covers.
CONV_KERNEL = 5


class ConvPatchTokenizer(nn.Module):
    """[B, T/p, p*D] patched steps of one modality -> [B, T/p, d].

    Unpatches to [B, T, D], applies a causal convolution D -> d of CONV_KERNEL steps + GELU, then a
    convolution d -> d of kernel p and stride p: exactly one output per patch, aligned with it.
    Both convolutions are written as a window gather and one matrix product (the same arithmetic
    as nn.Conv1d): on one CPU thread, at HAPT's shapes (64 x 128 steps, 3 -> 32 channels),
    torch's Conv1d took 3.6 ms (local) and 8.5 ms (strided) per forward + backward, the matrix
    form 2.0 and 1.7 ms.
    """

    def __init__(self, in_channels: int, d_model: int, patch: int, kernel: int = CONV_KERNEL) -> None:
        super().__init__()
        if patch < 1:
            raise ValueError(f"patch must be >= 1, got {patch}")
        if in_channels % patch:
            raise ValueError(
                f"conv tokenizer: {in_channels} patched channels are not {patch} steps of whole channels"
            )
        self.patch = patch
        self.channels = in_channels // patch
        self.kernel = kernel
        self.local = nn.Linear(kernel * self.channels, d_model)  # one causal kernel, all taps
        self.pool = nn.Linear(patch * d_model, d_model)  # the strided conv: one patch of d-vectors

    def forward(self, x: Tensor) -> Tensor:
        b, n_tokens, _ = x.shape
        n_steps = n_tokens * self.patch
        # [B, T/p, p*D] is step-major inside a patch (patch_input), so a view restores [B, T, D].
        steps = x.reshape(b, n_steps, self.channels)
        padded = F.pad(steps, (0, 0, self.kernel - 1, 0))  # causal: kernel - 1 steps before step 0
        taps = padded.unfold(1, self.kernel, 1).transpose(2, 3)  # [B, T, kernel, D], oldest tap first
        h = F.gelu(self.local(taps.reshape(b, n_steps, self.kernel * self.channels)))  # [B, T, d]
        return self.pool(h.reshape(b, n_tokens, -1))  # [B, T/p, d]


def make_tokenizer(kind: str, in_channels: int, d_model: int, patch: int) -> nn.Module:
    """The named tokenizer for a modality of `in_channels` patched channels (p * D)."""
    if kind == "linear":
        return nn.Linear(in_channels, d_model)
    if kind == "conv":
        return ConvPatchTokenizer(in_channels, d_model, patch)
    raise ValueError(f"unknown tokenizer {kind!r}; known: {list(TOKENIZERS)}")
