"""Pick the compute device once, at run time: CUDA when present and allowed, else CPU."""

from __future__ import annotations

from typing import Literal

import torch


def pick_device(preference: Literal["auto", "cpu", "cuda"] = "auto") -> torch.device:
    if preference == "cpu":
        return torch.device("cpu")
    if preference == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError("device 'cuda' was asked for in params but no CUDA device is available")
        return torch.device("cuda")
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
