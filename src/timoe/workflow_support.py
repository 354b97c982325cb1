"""What the Snakefile needs from Python, kept here so the Snakefile stays thin and testable."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from timoe.atomic import atomic_write_text
from timoe.config import DATASET_NAMES, MODEL_NAMES, RUNTIME_DIR, ConfigError, Params, read_yaml, validate
from timoe.models.model import needs_rus
from timoe.stage_specs import USED_PARAMS_FILE, job_inputs, reads_json, stage, targets

RESOLVED_DIR = RUNTIME_DIR / "params"
# The params of the last successful run, beside dvc.lock (commit both).
USED_PARAMS = Path(USED_PARAMS_FILE)


@dataclass
class Pipeline:
    params: Params

    @classmethod
    def from_snakemake_config(cls, config: dict[str, Any], configfiles: list[Any] = ()) -> Pipeline:
        """Validate Snakemake's merged config; re-read its files strictly (duplicate keys).

        Snakemake's own YAML reader keeps the last of two equal keys without a word.
        """
        try:
            for path in configfiles:
                read_yaml(Path(str(path)))
            return cls(validate(dict(config)))
        except ConfigError as err:
            # Stop before any job runs, with the offending key paths and no Python traceback.
            print(f"timoe: {err}", file=sys.stderr)
            raise SystemExit(2) from None

    def resolved_text(self) -> str:
        return yaml.safe_dump(self.params.model_dump(), sort_keys=True)

    def write_resolved(self, folder: Path = RESOLVED_DIR) -> str:
        """Write the validated config to a file named by its content; rules pass it to `timoe`.

        Content-addressed, so a second invocation with other params writes another file and can
        never change what a running pipeline's later jobs read (a cluster job re-parsing the
        Snakefile with the same config finds the same file). The path enters the rules' shell
        commands only when they are formatted, so a new value reruns only the rules whose
        declared params (`reads`) changed, not every rule.
        """
        text = self.resolved_text()
        path = folder / f"{hashlib.sha256(text.encode()).hexdigest()[:16]}.yaml"
        if not path.exists() or path.read_text() != text:
            atomic_write_text(path, text)
        return str(path)

    def wildcard_pattern(self, name: str) -> str:
        """The regex a rule's wildcard must match: the schema's names, or digits for seeds."""
        names = {
            "dataset": (*DATASET_NAMES, *self.params.data.datasets),
            "model": MODEL_NAMES,
        }
        if name == "seed":
            return r"\d+"
        return "|".join(re.escape(n) for n in sorted(set(names[name]), key=len, reverse=True))

    def output(self, name: str) -> str:
        """A stage's output path template (timoe.stage_specs declares it)."""
        return stage(name).output

    def reads(self, name: str, wildcards: Any) -> str:
        """The params one job reads, as a stable string: Snakemake's params rerun trigger."""
        return reads_json(self.params, name, **dict(wildcards.items()))

    def inputs(self, name: str, wildcards: Any = None) -> dict[str, str | list[str]]:
        """The named inputs of one job (for `unpack`): the upstream outputs it needs."""
        return job_inputs(self.params, name, needs_rus, **dict(wildcards.items() if wildcards else {}))

    def targets(self, name: str) -> list[str]:
        return targets(self.params, name)

    def on_start(self) -> None:
        from timoe.tracking import init_store

        init_store(self.params.tracking.uri)

    def on_success(self) -> None:
        if not self.params.tracking.dvc_commit:
            return
        # dvc.yaml reads stage params from this file, so dvc.lock records this run's values.
        atomic_write_text(USED_PARAMS, self.resolved_text())
        dvc_commit(Path("."))


def interpreter_scripts_first_on_path() -> None:
    """Put this interpreter's scripts folder first on PATH, so every rule's `timoe` is this env's."""
    os.environ["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])


# The one Snakemake lint timoe does not follow. Jobs run in the environment `make setup` builds
# from the hash-locked requirements (each run records its fingerprint), not in a conda env per
# rule; naming environment.yml there would make Snakemake's software-env trigger rerun the
# study whenever that file changes, while the jobs never run in it.
ACCEPTED_LINTS = ("Specify a conda environment or container for each rule",)


def workflow_lints(root: Path) -> tuple[list[str], str]:
    """(the titles of Snakemake's lints that are not accepted, its whole report) for root's Snakefile."""
    result = subprocess.run(
        [str(Path(sys.executable).parent / "snakemake"), "--lint", "--cores", "1"],
        cwd=root,
        capture_output=True,
        text=True,
    )
    report = result.stdout + result.stderr
    titles = [ln.strip()[2:] for ln in report.splitlines() if ln.startswith("    * ")]
    return [t for t in titles if not t.startswith(ACCEPTED_LINTS)], report


def committable_stages(root: Path) -> list[str]:
    """dvc.yaml stages whose deps and outs all exist (a partial run commits what it made)."""
    spec = yaml.safe_load((root / "dvc.yaml").read_text())
    ready = []
    for name, entry in spec.get("stages", {}).items():
        paths = [*entry.get("deps", []), *entry.get("outs", [])]
        if all((root / str(p)).exists() for p in paths):
            ready.append(name)
    return ready


def dvc_commit(root: Path) -> None:
    """Record the outputs in dvc.lock (`dvc commit -f`) for every stage whose output exists."""
    if not (root / ".dvc").is_dir() or shutil.which("dvc") is None:
        print("timoe: no DVC repository or dvc command here; outputs not committed to DVC", file=sys.stderr)
        return
    stages = committable_stages(root)
    if not stages:
        return
    result = subprocess.run(["dvc", "commit", "-f", "-q", *stages], cwd=root, capture_output=True, text=True)
    if result.returncode != 0:
        print(f"timoe: dvc commit failed:\n{result.stdout}{result.stderr}", file=sys.stderr)
        raise SystemExit(result.returncode)


def configure_dvc_remote(remote: str, root: Path) -> str:
    """Set the default DVC remote in .dvc/config.local (machine-specific, never committed).

    A local path is expanded (~) and made absolute here rather than in the committed config, so
    committed files hold no machine paths and every clone on this machine shares one remote.
    """
    if not (root / ".dvc").is_dir():
        raise ConfigError(f"{root.resolve()} is not a DVC repository (no .dvc folder)")
    is_url = "://" in remote
    url = remote if is_url else str(Path(remote).expanduser().resolve())
    if not is_url:
        Path(url).mkdir(parents=True, exist_ok=True)
    result = subprocess.run(
        ["dvc", "remote", "add", "--local", "-f", "-d", "default", url],
        cwd=root,
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        raise ConfigError(f"could not configure the DVC remote {url}: {result.stderr.strip()}")
    return url
