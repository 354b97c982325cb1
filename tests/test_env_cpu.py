"""The CPU in the environment fingerprint (env.cpu, env.torch_cpu_capability) and reproduce's note."""

from __future__ import annotations

import platform
from pathlib import Path
from types import SimpleNamespace

import torch

from timoe import environment as env
from timoe.audit.reproduce import environment_notes

ROOT = Path(__file__).resolve().parents[1]
X86 = (
    "processor\t: 0\nvendor_id\t: GenuineIntel\ncpu family\t: 6\n"
    "model name\t: Intel(R) Xeon(R) Platinum 8480+\nflags\t\t: fpu avx512f\n\n"
    "processor\t: 1\nvendor_id\t: OtherVendor\nmodel name\t: not the first\n"
)
ARM_NO_MODEL = "processor\t: 0\nBogoMIPS\t: 50.00\nCPU implementer\t: 0x41\nCPU part\t: 0xd0c\n\n"


def test_cpu_name_reads_the_first_processors_vendor_and_model(tmp_path: Path) -> None:
    (tmp_path / "cpuinfo").write_text(X86)
    assert env.cpu_name(tmp_path / "cpuinfo") == "GenuineIntel Intel(R) Xeon(R) Platinum 8480+"
    (tmp_path / "arm").write_text(ARM_NO_MODEL)
    assert env.cpu_name(tmp_path / "arm") == "0x41"


def test_cpu_name_falls_back_to_the_platform(tmp_path: Path) -> None:
    expected = " ".join(p for p in (platform.machine(), platform.processor()) if p) or "unknown"
    assert env.cpu_name(tmp_path / "missing") == expected
    (tmp_path / "empty").write_text("")
    assert env.cpu_name(tmp_path / "empty") == expected


def test_the_fingerprint_names_this_cpu() -> None:
    tags = env.fingerprint(ROOT, dists={"numpy": "2.3.5"})
    assert tags[env.CPU_TAG] == env.cpu_name() and tags[env.CPU_TAG] != ""


def test_a_run_with_torch_records_its_cpu_capability(tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    from timoe.tracking import tracked_run

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    with tracked_run(uri=uri, experiment="e", stage="train", config={}, out_dir=None) as run:
        run_id = run.info.run_id
    tags = MlflowClient(tracking_uri=uri).get_run(run_id).data.tags
    assert tags[env.TORCH_CPU_TAG] == torch.backends.cpu.get_cpu_capability()
    assert tags[env.CPU_TAG] == env.cpu_name()


class _Store:
    def artifact_text(self, run_id: str, path: str) -> str | None:
        return env.freeze_text({"numpy": "2.3.5"})


def _run(run_id: str, **tags: str) -> SimpleNamespace:
    base = env.fingerprint(ROOT, dists={"numpy": "2.3.5"})
    base.pop(env.CPU_TAG)
    return SimpleNamespace(info=SimpleNamespace(run_id=run_id), data=SimpleNamespace(tags={**base, **tags}))


def test_reproduce_notes_a_cpu_difference() -> None:
    old = _run("old", **{env.CPU_TAG: "GenuineIntel Xeon 8480+", env.TORCH_CPU_TAG: "AVX512"})
    new = _run("new", **{env.CPU_TAG: "AuthenticAMD EPYC 7763", env.TORCH_CPU_TAG: "AVX2"})
    (note,) = environment_notes(_Store(), old, _Store(), new)
    assert "cpu: GenuineIntel Xeon 8480+ -> AuthenticAMD EPYC 7763" in note
    assert "torch_cpu_capability: AVX512 -> AVX2" in note and "another CPU" in note
    assert "torch:" not in note and "distributions_sha256" not in note


def test_reproduce_is_silent_on_the_same_cpu_and_on_runs_that_predate_the_cpu_tags() -> None:
    same = {env.CPU_TAG: "AuthenticAMD EPYC 7763", env.TORCH_CPU_TAG: "AVX2"}
    assert environment_notes(_Store(), _run("old", **same), _Store(), _run("new", **same)) == []
    assert environment_notes(_Store(), _run("old"), _Store(), _run("new", **same)) == []
