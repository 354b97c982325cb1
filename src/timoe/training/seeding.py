"""Seeding: the same config and seed give the same numbers on CPU."""

from __future__ import annotations

import os
import random

import numpy as np
import torch


def seed_everything(seed: int, *, deterministic: bool = True) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    if deterministic:
        # warn_only: a few CUDA kernels have no deterministic variant; CPU runs stay exact.
        torch.use_deterministic_algorithms(True, warn_only=True)


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """A generator for one epoch's shuffling, derived from (seed, epoch) alone.

    Deriving it instead of carrying one generator across epochs lets a resumed run shuffle
    exactly as an uninterrupted one would.
    """
    g = torch.Generator()
    g.manual_seed(seed * 1_000_003 + epoch)
    return g
