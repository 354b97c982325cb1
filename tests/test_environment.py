"""environment.yml (conda users) must list exactly the dependencies pyproject.toml pins."""

from __future__ import annotations

import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def _pyproject_pins() -> set[str]:
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    deps = list(meta["dependencies"])
    for extra in meta.get("optional-dependencies", {}).values():
        deps += extra
    return {d.replace(" ", "").lower() for d in deps}


def _environment_pins() -> set[str]:
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    return {d.replace(" ", "").lower() for d in pip}


def test_environment_yml_matches_pyproject():
    assert _pyproject_pins() == _environment_pins()


def test_every_dependency_is_pinned_exactly_and_torch_is_the_cpu_release():
    pins = _pyproject_pins()
    assert all("==" in d for d in pins), [d for d in pins if "==" not in d]
    assert "torch==2.13.0" in pins


def test_python_version_matches():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    assert "python=3.11" in env["dependencies"]
