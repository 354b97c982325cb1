"""Temporal patching: p consecutive steps become one token.

Attention cost grows with the square of the token count; on a 2-core CPU a 128-step window
per modality is the difference between minutes and hours per study. Patching keeps every
sample (the p steps are concatenated, not averaged) and keeps modalities separate: a modality's
channels at the p steps of a patch stay that modality's channels.
"""

from __future__ import annotations

import torch
from torch import nn


def patched_modalities(modalities: dict[str, list[int]], n_channels: int, patch: int) -> dict[str, list[int]]:
    """Channel indices of each modality after (B, T, C) -> (B, T/p, p*C) patching."""
    return {m: [j * n_channels + c for j in range(patch) for c in chans] for m, chans in modalities.items()}


def patch_input(x: torch.Tensor, patch: int) -> torch.Tensor:
    """[B, T, C] -> [B, T // p, p * C]; trailing steps that do not fill a patch are dropped."""
    if patch == 1:
        return x
    b, t, c = x.shape
    usable = (t // patch) * patch
    return x[:, :usable].reshape(b, t // patch, patch * c)


class Patched(nn.Module):
    """Wrap a model built for patched inputs so callers keep passing raw [B, T, C] windows."""

    def __init__(self, inner: nn.Module, patch: int) -> None:
        super().__init__()
        self.inner = inner
        self.patch = patch

    def forward(self, x: torch.Tensor, shift: torch.Tensor | None = None):  # the inner ModelOutput
        """x [B, T, C] raw windows; shift [B] the augmentation's circular time shift (raw steps),
        so a position-dependent prior can follow the signal."""
        return self.inner(patch_input(x, self.patch), raw=x, shift=shift)
