"""environment.yml (conda users) must list exactly the dependencies pyproject.toml pins, and
requirements.lock must be compiled from those pins."""

from __future__ import annotations

import re
import shutil
import tomllib
from pathlib import Path

import yaml

from timoe import environment

ROOT = Path(__file__).resolve().parents[1]


def _pyproject_pins(extras: tuple[str, ...] | None = None) -> set[str]:
    """The direct pins and those of `extras` (all extras when None)."""
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    deps = list(meta["dependencies"])
    for name, extra in meta.get("optional-dependencies", {}).items():
        if extras is None or name in extras:
            deps += extra
    return {d.replace(" ", "").lower() for d in deps}


def _environment_pins() -> set[str]:
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    return {d.replace(" ", "").lower() for d in pip}


def test_environment_yml_matches_pyproject():
    # What `make setup` installs (the locked extras); bench's peers are installed by hand, --no-deps.
    assert _pyproject_pins(environment.LOCKED_EXTRAS) == _environment_pins()


def test_every_dependency_is_pinned_exactly_and_torch_is_the_cpu_release():
    pins = _pyproject_pins()
    assert all("==" in d for d in pins), [d for d in pins if "==" not in d]
    assert "torch==2.13.0" in pins


def test_python_version_matches():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    assert "python=3.11" in env["dependencies"]


# requirements.lock: the whole transitive set `make setup` installs (tests/test_env_fingerprint.py
# covers the fingerprint built on it).
def _lock_text() -> str:
    return (ROOT / environment.LOCK_FILE).read_text()


def _locked_requirements() -> list[str]:
    """pyproject's direct pins and its locked extras, then requirements-data.txt's pins."""
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    deps = list(meta["dependencies"])
    for extra in environment.LOCKED_EXTRAS:
        deps += meta["optional-dependencies"][extra]
    deps += [ln.strip() for ln in (ROOT / "requirements-data.txt").read_text().splitlines()]
    return [d.split("#")[0].replace(" ", "") for d in deps if d.split("#")[0].strip()]


def test_lock_was_regenerated_after_the_last_dependency_change():
    recorded = environment.recorded_spec_hash(_lock_text())
    assert recorded == environment.spec_hash(ROOT), (
        "pyproject.toml or requirements-data.txt changed after requirements.lock was made: run `make lock`"
    )


def test_lock_agrees_with_every_direct_pin_and_leaves_torch_out():
    pins = environment.lock_pins(_lock_text())
    for req in _locked_requirements():
        name, version = req.split("==")
        if environment.normalize(name) == "torch":
            assert "torch" not in pins  # torch comes from pyproject's pin: CPU or CUDA build per machine
        else:
            assert pins.get(environment.normalize(name)) == version, req


def test_lock_holds_no_cuda_runtime_wheels():
    # They would make a CPU machine download gigabytes; only PyPI's CUDA torch needs them.
    cuda = [n for n in environment.lock_pins(_lock_text()) if n.startswith("nvidia-") or n == "triton"]
    assert cuda == []


def test_every_locked_entry_has_a_hash():
    # `pip install --require-hashes` refuses the whole lock if one entry lacks a hash.
    text = _lock_text()
    entries = re.split(r"\n(?=[A-Za-z0-9])", text)
    pinned = [e for e in entries if environment.lock_pins(e.splitlines()[0])]
    assert len(pinned) == len(environment.lock_pins(text)) > 50
    assert [e.splitlines()[0] for e in pinned if "--hash=sha256:" not in e] == []


def _spec_copy(tmp_path: Path) -> Path:
    for name in ("pyproject.toml", "requirements-data.txt"):
        shutil.copy2(ROOT / name, tmp_path / name)
    return tmp_path


def test_spec_hash_follows_pins_but_not_comments_or_unlocked_extras(tmp_path):
    root = _spec_copy(tmp_path)
    before = environment.spec_hash(root)
    data = root / "requirements-data.txt"
    data.write_text("# a comment\n" + data.read_text() + "\n")
    pyproject = root / "pyproject.toml"
    pyproject.write_text(pyproject.read_text() + "\n[project.optional-dependencies.unlocked]\n")
    assert environment.spec_hash(root) == before
    pyproject.write_text(pyproject.read_text().replace('"numpy==', '"numpy==9', 1))
    assert environment.spec_hash(root) != before


def test_spec_hash_follows_the_data_carriers(tmp_path):
    root = _spec_copy(tmp_path)
    before = environment.spec_hash(root)
    data = root / "requirements-data.txt"
    data.write_text(data.read_text() + "another-carrier==1.0\n")
    assert environment.spec_hash(root) != before


def test_make_setup_installs_the_lock_and_the_locked_extras():
    recipe = (ROOT / "Makefile").read_text().split("\n$(STAMP):", 1)[1].split("\n\n", 1)[0]
    assert "--require-hashes --no-deps -r $(LOCK)" in recipe
    extras = ",".join(environment.LOCKED_EXTRAS)
    assert "environment.py constraints > $(VENV)/lock-constraints.txt" in recipe
    assert f'-c $(VENV)/lock-constraints.txt -e ".[{extras}]"' in recipe
