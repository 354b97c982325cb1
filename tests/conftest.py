"""Shared fixtures: the repository root and the real params files."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def repo_root() -> Path:
    return ROOT


@pytest.fixture
def smoke_params():
    from timoe.config import load_params

    return load_params(ROOT / "params.yaml", ROOT / "workflow" / "smoke.yaml")
