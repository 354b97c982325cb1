"""Layers import downward only: a package may import from its own layer or a lower one.

The layers, lowest first. A new package must be placed here, so the test also fails on a
package nobody has placed.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "timoe"
LAYERS: list[set[str]] = [
    {"__init__", "config", "stage_specs", "atomic", "device", "plotting", "overrides", "environment"},
    {"tracking"},
    {"interactions"},
    {"data", "models"},
    {"evaluation"},
    {"training"},
    {"sweeps"},
    {"stages"},
    {"audit", "workflow_support", "server"},
    {"audit_cli", "cli", "cli_support", "__main__", "launcher"},
]


def _layer(name: str) -> int:
    for i, layer in enumerate(LAYERS):
        if name in layer:
            return i
    raise AssertionError(f"timoe.{name} is in no layer: place it in tests/test_layers.py")


def _top(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "timoe":
            found.add(_top(node.module))
        elif isinstance(node, ast.Import):
            found |= {_top(a.name) for a in node.names if a.name.split(".")[0] == "timoe"}
    return found


def test_no_module_imports_from_a_higher_layer():
    upward = []
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC)
        own = rel.parts[0] if len(rel.parts) > 1 else rel.stem
        for target in _imports(path):
            if _layer(target) > _layer(own):
                upward.append(f"{rel} imports timoe.{target}")
    assert upward == []


def test_the_layer_check_sees_an_upward_import(tmp_path: Path):
    probe = tmp_path / "probe.py"
    probe.write_text("def f():\n    from timoe.stages.train import run_train\n")
    assert _imports(probe) == {"stages"} and _layer("stages") > _layer("models")
