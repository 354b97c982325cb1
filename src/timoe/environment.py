"""The environment a run ran in: the dependency lock and a fingerprint of what is installed.

requirements.lock pins every distribution `make setup` installs except torch (see the Makefile's
`lock` target for why torch stays outside). Its header records a hash of the dependency
specification it was compiled from (pyproject.toml's pins and requirements-data.txt), so a
change to either without `make lock` is caught by tests/test_environment.py.

Every tracked run carries `fingerprint()` as tags, so `timoe audit reproduce` can tell a library
change from a code change. Stdlib only, and runnable as a script (`python src/timoe/environment.py
spec-hash|constraints|verify`): `make lock` and `make setup` call it before timoe is installed.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.metadata
import importlib.util
import platform
import re
import sys
import tomllib
from collections.abc import Iterable, Mapping
from pathlib import Path

LOCK_FILE = "requirements.lock"
DATA_REQUIREMENTS = "requirements-data.txt"
# The extras `make setup` installs, so the ones `make lock` compiles (others, e.g. bench, are not locked).
LOCKED_EXTRAS = ("test",)
SPEC_HASH_PREFIX = "# timoe-spec-sha256: "
# The repository root of a source checkout (src/timoe/environment.py). In the worktree that
# `timoe audit reproduce` builds this is the worktree, so a rerun reports the lock of its commit.
ROOT = Path(__file__).resolve().parents[2]

# Tag names; tracking.py sets them on every run and reproduce.py compares them.
LOCK_TAG = "env.lock_sha256"
PYTHON_TAG = "env.python"
TORCH_TAG = "env.torch"
CUDA_TAG = "env.cuda"
DISTS_TAG = "env.distributions_sha256"
# The same code, libraries and seed still give other float results on another CPU: vendor and model
# (here), and the vector instruction set torch's kernels dispatch to (AVX2, AVX512, ...), which
# tracking.py records where torch is loaded (reading it means importing torch).
CPU_TAG = "env.cpu"
TORCH_CPU_TAG = "env.torch_cpu_capability"
ENV_TAGS = (LOCK_TAG, PYTHON_TAG, TORCH_TAG, CUDA_TAG, DISTS_TAG, CPU_TAG)
COMPARED_TAGS = (*ENV_TAGS, TORCH_CPU_TAG)
# Tags added after runs were already recorded: compared only where the run recorded them.
LATER_TAGS = (CPU_TAG, TORCH_CPU_TAG)
CPUINFO = Path("/proc/cpuinfo")
DISTRIBUTIONS_ARTIFACT = "environment/distributions.txt"

_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)")


def normalize(name: str) -> str:
    """PEP 503 name: what pip, uv and importlib.metadata agree a distribution is called."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _requirement_lines(text: str) -> list[str]:
    lines = (ln.split("#", 1)[0].strip() for ln in text.splitlines())
    return [ln for ln in lines if ln]


def dependency_spec(root: Path = ROOT) -> list[str]:
    """Everything the lock is compiled from, normalised and sorted: pyproject pins, data pins."""
    project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    deps = list(project["dependencies"])
    extras = project.get("optional-dependencies", {})
    for extra in LOCKED_EXTRAS:
        deps += [f"[{extra}]{p}" for p in extras.get(extra, [])]
    data = root / DATA_REQUIREMENTS
    if data.is_file():
        deps += [f"[data]{p}" for p in _requirement_lines(data.read_text())]
    return sorted(d.replace(" ", "").lower() for d in deps)


def spec_hash(root: Path = ROOT) -> str:
    return hashlib.sha256("\n".join(dependency_spec(root)).encode()).hexdigest()


def recorded_spec_hash(lock_text: str) -> str | None:
    """The specification hash `make lock` wrote into the lock, or None for a hand-made lock."""
    for line in lock_text.splitlines():
        if line.startswith(SPEC_HASH_PREFIX):
            return line[len(SPEC_HASH_PREFIX) :].strip()
    return None


def lock_pins(lock_text: str) -> dict[str, str]:
    """{normalised name: version} of every `name==version` entry in a requirements lock."""
    pins = {}
    for line in lock_text.splitlines():
        m = _PIN.match(line)
        if m:
            pins[normalize(m.group(1))] = m.group(2)
    return pins


def installed_distributions() -> dict[str, str]:
    """{normalised name: version} of the running interpreter's distributions (pip freeze's set)."""
    found: dict[str, str] = {}
    for dist in importlib.metadata.distributions():
        name = dist.metadata["Name"]
        if name:  # a broken install can leave metadata without a name; it is not a distribution
            found.setdefault(normalize(name), dist.version)  # the first on sys.path wins, as on import
    return found


def freeze_text(dists: Mapping[str, str]) -> str:
    return "".join(f"{name}=={version}\n" for name, version in sorted(dists.items()))


def lock_mismatches(pins: Mapping[str, str], installed: Mapping[str, str]) -> list[str]:
    """Locked distributions that are missing or at another version; extras are not counted."""
    out = []
    for name, version in sorted(pins.items()):
        have = installed.get(name)
        if have != version:
            out.append(f"{name}: locked {version}, installed {have or 'nothing'}")
    return out


def cuda_in_version_py(source: str) -> str:
    """The `cuda = ...` literal of torch/version.py: "12.8", "none" for a CPU build, or "unknown"."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return "unknown"
    for node in tree.body:
        if isinstance(node, ast.AnnAssign):
            targets, value = [node.target], node.value
        elif isinstance(node, ast.Assign):
            targets, value = node.targets, node.value
        else:
            continue
        if value is not None and any(isinstance(t, ast.Name) and t.id == "cuda" for t in targets):
            try:
                return str(ast.literal_eval(value) or "none")
            except ValueError:
                return "unknown"
    return "unknown"


def _torch_cuda(torch_version: str) -> str:
    """torch's CUDA build ("12.8") or "none", without importing torch where it is not loaded yet.

    Importing torch costs seconds, and stages such as prepare never need it; torch/version.py
    holds the same value as a literal.
    """
    if "torch" in sys.modules:
        return str(getattr(sys.modules["torch"].version, "cuda", None) or "none")
    if torch_version == "none":
        return "none"
    spec = importlib.util.find_spec("torch")
    if spec is None or not spec.submodule_search_locations:
        return "none"
    try:
        source = (Path(next(iter(spec.submodule_search_locations))) / "version.py").read_text()
    except OSError:
        return "unknown"
    return cuda_in_version_py(source)


def cpu_name(cpuinfo: Path = CPUINFO) -> str:
    """'vendor model' of this machine's CPU, e.g. 'AuthenticAMD AMD EPYC 7763 64-Core Processor'.

    From /proc/cpuinfo's first processor (Linux); elsewhere, or where it names neither (some ARM
    kernels), the platform's own words; 'unknown' when nothing says.
    """
    fields: dict[str, str] = {}
    try:
        for line in cpuinfo.read_text(errors="replace").splitlines():
            if not line.strip():
                break  # the first processor's block ends here
            key, _, value = line.partition(":")
            fields.setdefault(key.strip(), " ".join(value.split()))
    except OSError:
        pass
    vendor = fields.get("vendor_id") or fields.get("CPU implementer", "")
    model = fields.get("model name") or fields.get("Model") or fields.get("Hardware", "")
    name = " ".join(p for p in (vendor, model) if p) or " ".join(
        p for p in (platform.machine(), platform.processor()) if p
    )
    return name or "unknown"


def _file_hash(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "none"


def fingerprint(root: Path = ROOT, dists: Mapping[str, str] | None = None) -> dict[str, str]:
    """Tags naming the environment: lock, Python, torch and its CUDA, all installed versions, the CPU."""
    dists = installed_distributions() if dists is None else dists
    torch = dists.get("torch", "none")
    return {
        LOCK_TAG: _file_hash(root / LOCK_FILE),
        PYTHON_TAG: platform.python_version(),
        TORCH_TAG: torch,
        CUDA_TAG: _torch_cuda(torch),
        DISTS_TAG: hashlib.sha256(freeze_text(dists).encode()).hexdigest(),
        CPU_TAG: cpu_name(),
    }


def differences(recorded: Mapping[str, str], now: Mapping[str, str]) -> list[str]:
    """'what: recorded -> now' for each fingerprint tag that differs (absent tags read as '?')."""
    return [
        f"{tag.removeprefix('env.')}: {recorded.get(tag, '?')} -> {now.get(tag, '?')}"
        for tag in COMPARED_TAGS
        if recorded.get(tag) != now.get(tag) and (tag in recorded or tag not in LATER_TAGS)
    ]


def distribution_changes(recorded: str, now: str) -> list[str]:
    """Distributions added, removed or at another version between two freeze_text listings."""
    old, new = lock_pins(recorded), lock_pins(now)
    names = sorted(set(old) | set(new))
    return [f"{n} {old.get(n, '-')} -> {new.get(n, '-')}" for n in names if old.get(n) != new.get(n)]


def _verify(lock: Path) -> int:
    """`make setup`'s last check: the venv holds exactly the locked versions."""
    bad = lock_mismatches(lock_pins(lock.read_text()), installed_distributions())
    for line in bad:
        print(f"not as locked: {line}", file=sys.stderr)
    return 2 if bad else 0  # a user error (rerun `make setup`), as every timoe command counts them


def main(argv: Iterable[str]) -> int:
    args = list(argv)
    if args == ["spec-hash"]:
        print(spec_hash(Path.cwd()))
        return 0
    if args == ["verify"]:
        return _verify(Path.cwd() / LOCK_FILE)
    if args == ["constraints"]:  # the lock's pins without hashes, for `pip install -c`
        print(freeze_text(lock_pins((Path.cwd() / LOCK_FILE).read_text())), end="")
        return 0
    print("usage: python src/timoe/environment.py spec-hash|verify|constraints", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
