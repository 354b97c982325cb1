"""What the Snakefile needs from Python, kept here so the Snakefile stays thin and testable."""

from __future__ import annotations

import hashlib
import json
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
from timoe.workflow_targets import targets

RESOLVED_DIR = RUNTIME_DIR / "params"
# The params of the last successful run, beside dvc.lock (commit both).
USED_PARAMS = Path("params.used.yaml")


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

    def _get(self, dotted: str) -> Any:
        node: Any = self.params.model_dump()
        for part in dotted.split("."):
            node = node[part]
        return node

    def params_json(self, *keys: str, exclude: tuple[str, ...] = ()) -> str:
        """The params a rule reads, as a stable string for Snakemake's params rerun trigger."""
        picked = {k: self._get(k) for k in keys}
        for ex in exclude:
            head, _, leaf = ex.rpartition(".")
            if head in picked and isinstance(picked[head], dict):
                picked[head] = {k: v for k, v in picked[head].items() if k != leaf}
        return json.dumps(picked, sort_keys=True)

    def model_inputs(self, dataset: str, model: str, *, with_sweep: bool) -> dict[str, str]:
        inputs = {"data": f"data/processed/{dataset}"}
        if needs_rus(model):
            inputs["rus"] = f"results/rus/{dataset}"
        if with_sweep:
            inputs["sweep"] = f"results/sweeps/{dataset}/{model}"
        return inputs

    def all_model_outputs(self) -> list[str]:
        return targets(self.params, "train")

    def all_sweep_outputs(self) -> list[str]:
        return targets(self.params, "sweep")

    def on_start(self) -> None:
        from timoe.tracking import init_store

        init_store(self.params.tracking.uri)

    def on_success(self) -> None:
        if not self.params.tracking.dvc_commit:
            return
        # dvc.yaml reads stage params from this file, so dvc.lock records this run's values.
        atomic_write_text(USED_PARAMS, self.resolved_text())
        dvc_commit(Path("."))


def committable_stages(root: Path) -> list[str]:
    """dvc.yaml stages whose deps and outs all exist (a partial run commits what it made)."""
    spec = yaml.safe_load((root / "dvc.yaml").read_text())
    ready = []
    for name, stage in spec.get("stages", {}).items():
        paths = [*stage.get("deps", []), *stage.get("outs", [])]
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
