"""Figures are written by jobs without a display: one place selects the file-only backend."""

from __future__ import annotations

from typing import Any


def matplotlib_agg() -> Any:
    """matplotlib with the file-only backend: jobs run without a display."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
