"""Small torch helpers shared by the interaction estimators."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """Pick the compute device at run time: 'auto' means CUDA when present, else CPU."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' requested but CUDA is not available")
    return torch.device(device)


def as_float64(x: Any, device: torch.device) -> torch.Tensor:
    """numpy array / tensor / nested list -> float64 tensor on `device` (never aliases caller's data)."""
    if isinstance(x, torch.Tensor):
        return x.detach().to(device=device, dtype=torch.float64).clone()
    return torch.as_tensor(np.asarray(x, dtype=np.float64), device=device).clone()


@contextmanager
def cpu_threads(n: int | None) -> Iterator[None]:
    """Temporarily set torch's intra-op CPU threads (None: leave unchanged)."""
    if n is None:
        yield
        return
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)
