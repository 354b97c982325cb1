"""The environment fingerprint every run carries, and what `timoe audit reproduce` makes of it."""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import platform
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from timoe import environment as env
from timoe.audit.reproduce import Outcome, environment_notes, report

ROOT = Path(__file__).resolve().parents[1]
DISTS = {"numpy": "2.4.6", "torch": "2.13.0+cpu", "polars": "2.1.0"}


def test_fingerprint_names_lock_python_torch_and_distributions(tmp_path):
    (tmp_path / env.LOCK_FILE).write_text("numpy==2.4.6\n")
    tags = env.fingerprint(tmp_path, dists=DISTS)
    assert set(tags) == set(env.ENV_TAGS)
    assert tags[env.LOCK_TAG] == hashlib.sha256(b"numpy==2.4.6\n").hexdigest()
    assert tags[env.PYTHON_TAG] == platform.python_version()
    assert tags[env.TORCH_TAG] == "2.13.0+cpu"
    assert tags[env.DISTS_TAG] == hashlib.sha256(env.freeze_text(DISTS).encode()).hexdigest()


def test_fingerprint_without_a_lock_or_torch(tmp_path):
    tags = env.fingerprint(tmp_path, dists={"numpy": "2.4.6"})
    assert tags[env.LOCK_TAG] == "none"
    assert tags[env.TORCH_TAG] == tags[env.CUDA_TAG] == "none"


def test_distribution_hash_ignores_order_but_not_one_version():
    reordered = dict(reversed(list(DISTS.items())))
    bumped = {**DISTS, "polars": "2.1.1"}
    h = env.fingerprint(ROOT, dists=DISTS)[env.DISTS_TAG]
    assert env.fingerprint(ROOT, dists=reordered)[env.DISTS_TAG] == h
    assert env.fingerprint(ROOT, dists=bumped)[env.DISTS_TAG] != h


def test_installed_distributions_is_pip_freezes_set_with_normalised_names():
    dists = env.installed_distributions()
    assert dists["pytest"] == importlib.metadata.version("pytest")
    assert "pyyaml" in dists and "PyYAML" not in dists  # PEP 503 names, as in the lock
    assert all(name == env.normalize(name) for name in dists)


def test_the_real_fingerprint_matches_torch_without_importing_it():
    # A fresh interpreter: the CUDA version must come from torch/version.py, not an imported torch.
    probe = (
        "import json, sys; from timoe.environment import fingerprint; "
        "print(json.dumps([fingerprint(), 'torch' in sys.modules]))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=ROOT)
    tags, imported = json.loads(out.stdout)
    assert imported is False
    torch = pytest.importorskip("torch")
    assert tags[env.CUDA_TAG] == (torch.version.cuda or "none")
    assert tags[env.TORCH_TAG] == importlib.metadata.version("torch")
    assert tags[env.LOCK_TAG] == hashlib.sha256((ROOT / env.LOCK_FILE).read_bytes()).hexdigest()


@pytest.mark.parametrize(
    ("source", "cuda"),
    [
        ("cuda: Optional[str] = '12.8'\n", "12.8"),
        ("cuda = '11.8'\nhip = None\n", "11.8"),
        ("from typing import Optional\ncuda: Optional[str] = None\n", "none"),
        ("__version__ = '2.13.0'\n", "unknown"),
        ("cuda = get_cuda()\n", "unknown"),
        ("cuda = (\n", "unknown"),
    ],
)
def test_cuda_read_from_torch_version_py(source, cuda):
    assert env.cuda_in_version_py(source) == cuda


def test_lock_pins_and_mismatches():
    lock = "a-b==1.0 \\\n    --hash=sha256:00\n    # via x\nC_d==2.0\n# e==3.0 a comment\n"
    pins = env.lock_pins(lock)
    assert pins == {"a-b": "1.0", "c-d": "2.0"}
    assert env.lock_mismatches(pins, {"a-b": "1.0", "c-d": "2.0", "extra": "9"}) == []
    assert env.lock_mismatches(pins, {"a-b": "1.1"}) == [
        "a-b: locked 1.0, installed 1.1",
        "c-d: locked 2.0, installed nothing",
    ]


def test_differences_and_distribution_changes():
    old = env.fingerprint(ROOT, dists=DISTS)
    new = {**old, env.TORCH_TAG: "2.13.0+cu128", env.CUDA_TAG: "12.8"}
    assert env.differences(old, old) == []
    assert env.differences(old, new) == ["torch: 2.13.0+cpu -> 2.13.0+cu128", "cuda: none -> 12.8"]
    assert env.differences({}, old)[0].endswith(f"? -> {old[env.LOCK_TAG]}")
    before = env.freeze_text(DISTS)
    after = env.freeze_text({"numpy": "2.4.7", "torch": "2.13.0+cpu", "scipy": "1.17.1"})
    assert env.distribution_changes(before, after) == [
        "numpy 2.4.6 -> 2.4.7",
        "polars 2.1.0 -> -",
        "scipy - -> 1.17.1",
    ]


def test_cli_verify_and_spec_hash(tmp_path):
    def run(*args: str) -> subprocess.CompletedProcess:
        script = ROOT / "src" / "timoe" / "environment.py"
        return subprocess.run(
            [sys.executable, str(script), *args], cwd=tmp_path, capture_output=True, text=True
        )

    (tmp_path / env.LOCK_FILE).write_text(f"pytest=={importlib.metadata.version('pytest')}\n")
    assert run("verify").returncode == 0
    (tmp_path / env.LOCK_FILE).write_text("pytest==0.0.1\n")
    bad = run("verify")
    assert bad.returncode == 2 and "pytest: locked 0.0.1" in bad.stderr
    for name in ("pyproject.toml", "requirements-data.txt"):
        (tmp_path / name).write_text((ROOT / name).read_text())
    assert run("constraints").stdout == "pytest==0.0.1\n"
    assert run("spec-hash").stdout.strip() == env.spec_hash(ROOT)
    assert run("nonsense").returncode == 2


def test_tracked_run_tags_the_fingerprint_and_logs_the_distributions(tmp_path):
    from mlflow.tracking import MlflowClient

    from timoe.tracking import tracked_run

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    with tracked_run(uri=uri, experiment="e", stage="prepare", config={}, out_dir=None) as run:
        run_id = run.info.run_id
    client = MlflowClient(tracking_uri=uri)
    tags = client.get_run(run_id).data.tags
    assert {k: tags[k] for k in env.ENV_TAGS} == env.fingerprint()
    listing = Path(client.download_artifacts(run_id, env.DISTRIBUTIONS_ARTIFACT, str(tmp_path))).read_text()
    assert hashlib.sha256(listing.encode()).hexdigest() == tags[env.DISTS_TAG]


# `timoe audit reproduce`'s environment note, on stand-ins for MLflow runs and stores.
class _Store:
    def __init__(self, artifacts: dict[str, str]) -> None:
        self.artifacts = artifacts

    def artifact_text(self, run_id: str, path: str) -> str | None:
        assert path == env.DISTRIBUTIONS_ARTIFACT
        return self.artifacts.get(run_id)


def _run(run_id: str, tags: dict[str, str]) -> SimpleNamespace:
    return SimpleNamespace(info=SimpleNamespace(run_id=run_id), data=SimpleNamespace(tags=tags))


def _notes(old_dists: dict[str, str], new_dists: dict[str, str], old_tags: dict | None = None) -> list[str]:
    old = _run("old", env.fingerprint(ROOT, dists=old_dists) if old_tags is None else old_tags)
    new = _run("new", env.fingerprint(ROOT, dists=new_dists))
    store = _Store({"old": env.freeze_text(old_dists), "new": env.freeze_text(new_dists)})
    return environment_notes(store, old, store, new)


def test_reproduce_is_silent_when_the_environment_is_the_same():
    assert _notes(DISTS, dict(DISTS)) == []


def test_reproduce_names_the_changed_torch_and_distributions():
    (note,) = _notes(DISTS, {**DISTS, "torch": "2.14.0+cpu", "numpy": "2.4.7"})
    assert note.startswith("the rerun's environment differs from the run's: torch: 2.13.0+cpu -> 2.14.0+cpu")
    assert "distributions_sha256:" in note and "lock_sha256" not in note
    assert "(distributions: numpy 2.4.6 -> 2.4.7, torch 2.13.0+cpu -> 2.14.0+cpu)" in note


def test_reproduce_caps_the_list_of_changed_distributions():
    many = {f"pkg{i:02d}": "1.0" for i in range(12)}
    (note,) = _notes(many, {k: "2.0" for k in many})
    assert "pkg07 1.0 -> 2.0)" not in note and "pkg07 1.0 -> 2.0 and 4 more)" in note


def test_reproduce_says_when_the_run_predates_fingerprints():
    (note,) = _notes(DISTS, DISTS, old_tags={"stage": "train"})
    assert "no environment fingerprint" in note


def test_an_environment_difference_is_not_a_mismatch():
    outcome = Outcome("old", notes=_notes(DISTS, {**DISTS, "numpy": "2.4.7"}))
    assert outcome.matched and outcome.exit_code == 0
    text = report(outcome)
    assert "note: the rerun's environment differs" in text and "RESULT: exact match" in text
