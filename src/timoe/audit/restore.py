"""Rebuilding a run's code and data version: a git worktree at its commit, inputs by content hash.

Inputs are identified by the sha256 the run recorded, never by path alone: a path is only a
place where the right bytes may be. Two sources are tried in turn: the local copy (when its
hash matches) and DVC. DVC versions outputs in dvc.lock, which is rewritten after a pipeline
run and committed later, so the lock that describes a run's inputs usually lives in a commit
after the run's own commit; every candidate lock is tried until the restored bytes match.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from timoe.audit import AuditError
from timoe.tracking import NOT_CODE_EXCLUDES, content_hash, git_state


def git(*args: str, cwd: Path, check: bool = True, stdin: bytes | None = None) -> subprocess.CompletedProcess:
    r = subprocess.run(["git", *args], cwd=cwd, capture_output=True, input=stdin, timeout=300)
    if check and r.returncode != 0:
        raise AuditError(f"git {' '.join(args)} failed: {r.stderr.decode(errors='replace').strip()}")
    return r


def repo_root(path: Path) -> Path:
    r = git("rev-parse", "--show-toplevel", cwd=path, check=False)
    if r.returncode != 0:
        raise AuditError(f"{Path(path).resolve()} is not inside a git repository (use --repo)")
    return Path(r.stdout.decode().strip())


def add_worktree(repo: Path, commit: str, dest: Path) -> None:
    if commit in ("", "unknown"):
        raise AuditError("the run recorded no git commit, so its code version cannot be rebuilt")
    if git("cat-file", "-e", f"{commit}^{{commit}}", cwd=repo, check=False).returncode != 0:
        raise AuditError(f"commit {commit} is not in the repository {repo} (fetch it first?)")
    git("worktree", "add", "--detach", "--quiet", str(dest), commit, cwd=repo)


def remove_worktree(repo: Path, dest: Path) -> None:
    git("worktree", "remove", "--force", str(dest), cwd=repo, check=False)
    shutil.rmtree(dest, ignore_errors=True)
    git("worktree", "prune", cwd=repo, check=False)


def replay_dirty_tree(repo: Path, code: Path, commit: str, diff_sha256: str) -> bool:
    """Copy the repository's uncommitted changes into the worktree if they are the recorded ones.

    Only the diff's hash was recorded. When the working tree still sits on the run's commit with
    a diff of the same hash, it holds exactly the code the run used, and that can be replayed.
    """
    now = git_state(repo)
    if now["git_commit"] != commit or not diff_sha256 or now["git_diff_sha256"] != diff_sha256:
        return False
    diff = git("diff", "HEAD", "--binary", "--", ".", *NOT_CODE_EXCLUDES, cwd=repo).stdout
    if diff:
        git("apply", "--whitespace=nowarn", "-", cwd=code, stdin=diff)
    status = git("status", "--porcelain", "--untracked-files=all", cwd=repo).stdout.decode()
    for line in status.splitlines():
        if line.startswith("?? "):
            rel = line[3:]
            (code / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(repo / rel, code / rel)
    return True


@dataclass
class Restored:
    name: str
    path: Path  # where the rerun reads it
    how: str  # one line for the report


def place(src: Path, dest: Path) -> None:
    if dest.exists() or dest.is_symlink():
        if dest.is_dir() and not dest.is_symlink():
            shutil.rmtree(dest)
        else:
            dest.unlink()
    dest.parent.mkdir(parents=True, exist_ok=True)
    if src.is_dir():
        shutil.copytree(src, dest, symlinks=False)
    else:
        shutil.copy2(src, dest)


def _dvc_exe() -> str | None:
    beside = Path(sys.executable).parent / "dvc"  # the dvc of this environment, even off PATH
    return str(beside) if beside.exists() else shutil.which("dvc")


class DvcSource:
    """Restores paths in the worktree from DVC, trying each dvc.lock that might describe them."""

    def __init__(self, repo: Path, code: Path, commit: str) -> None:
        self.repo, self.code, self.commit = repo, code, commit
        self.exe = _dvc_exe()
        self._ready = False
        self._candidates: list[tuple[str, bytes | None, bytes]] | None = None

    @property
    def usable(self) -> bool:
        return self.exe is not None and (self.code / ".dvc").is_dir()

    def _dvc(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [self.exe or "dvc", *args], cwd=self.code, capture_output=True, text=True, timeout=3600
        )

    def _prepare(self) -> None:
        if self._ready:
            return
        # Remote and cache are machine settings (config.local, never committed): borrow the repo's.
        local = self.repo / ".dvc" / "config.local"
        if local.is_file():
            shutil.copy2(local, self.code / ".dvc" / "config.local")
        r = subprocess.run(
            [self.exe or "dvc", "cache", "dir"], cwd=self.repo, capture_output=True, text=True, timeout=300
        )
        cache = (
            r.stdout.strip() if r.returncode == 0 and r.stdout.strip() else str(self.repo / ".dvc" / "cache")
        )
        self._dvc("cache", "dir", "--local", cache)
        self._ready = True

    def candidates(self) -> list[tuple[str, bytes | None, bytes]]:
        """(label, dvc.yaml, dvc.lock) in the order most likely to hold the run's data."""
        if self._candidates is not None:
            return self._candidates
        out: list[tuple[str, bytes | None, bytes]] = []

        def at(rev: str, name: str) -> bytes | None:
            r = git("show", f"{rev}:{name}", cwd=self.repo, check=False)
            return r.stdout if r.returncode == 0 else None

        later = (
            git(
                "log",
                "--reverse",
                "--format=%H",
                f"{self.commit}..HEAD",
                "--",
                "dvc.lock",
                cwd=self.repo,
                check=False,
            )
            .stdout.decode()
            .split()
        )
        for rev in later:
            lock = at(rev, "dvc.lock")
            if lock is not None:
                out.append((f"dvc.lock of commit {rev[:10]}", at(rev, "dvc.yaml"), lock))
        if (self.repo / "dvc.lock").is_file():
            yaml_now = (self.repo / "dvc.yaml").read_bytes() if (self.repo / "dvc.yaml").is_file() else None
            out.append(("dvc.lock of the working tree", yaml_now, (self.repo / "dvc.lock").read_bytes()))
        own = at(self.commit, "dvc.lock")
        if own is not None:
            out.append((f"dvc.lock of the run's commit {self.commit[:10]}", at(self.commit, "dvc.yaml"), own))
        seen: set[bytes] = set()
        self._candidates = [c for c in out if not (c[2] in seen or seen.add(c[2]))]
        return self._candidates

    def restore(self, rel: str, sha256: str) -> str | None:
        """Check out `rel` (relative to the repository) with the given hash; say from which lock."""
        self._prepare()
        target = self.code / rel
        originals = {
            n: (self.code / n).read_bytes() if (self.code / n).is_file() else None
            for n in ("dvc.yaml", "dvc.lock")
        }
        try:
            for label, yaml_bytes, lock in self.candidates():
                if yaml_bytes is not None:
                    (self.code / "dvc.yaml").write_bytes(yaml_bytes)
                (self.code / "dvc.lock").write_bytes(lock)
                how = "dvc checkout"
                if self._dvc("checkout", "--force", "-q", rel).returncode != 0 or not target.exists():
                    how = "dvc pull"
                    if self._dvc("pull", "--force", "-q", rel).returncode != 0:
                        continue
                if target.exists() and content_hash(target) == sha256:
                    return f"{how} with the {label}"
        finally:
            # The worktree's own dvc files go back, so the code tree stays exactly at the commit.
            for n, data in originals.items():
                if data is None:
                    with contextlib.suppress(FileNotFoundError):
                        (self.code / n).unlink()
                else:
                    (self.code / n).write_bytes(data)
        return None


def restore_input(
    name: str, recorded_path: str, sha256: str, *, repo: Path, code: Path, scratch: Path, dvc: DvcSource
) -> Restored:
    """Put input `name` with the recorded hash where the rerun will read it, or raise AuditError."""
    rel = Path(recorded_path)
    dest = rel if rel.is_absolute() else code / rel
    if rel.is_absolute():
        # Never overwrite an absolute path outside the worktree; the rerun reads a private copy.
        dest = scratch / "inputs" / name / rel.name
    local = rel if rel.is_absolute() else repo / rel
    tried = []
    if local.exists():
        if content_hash(local) == sha256:
            place(local, dest)
            return Restored(name, dest, f"copied from {local} (sha256 matches)")
        tried.append(f"the local copy {local} has different content")
    else:
        tried.append(f"no local copy at {local}")
    if rel.is_absolute():
        tried.append("DVC not tried for an absolute path")
    elif not dvc.usable:
        tried.append("DVC not available (no .dvc at the commit, or no dvc command)")
    else:
        how = dvc.restore(str(rel), sha256)
        if how:
            return Restored(name, dest, how)
        tried.append(f"no DVC lock ({len(dvc.candidates())} tried) restored matching content")
    raise AuditError(
        f"input {name!r} ({recorded_path}, sha256 {sha256[:16]}) cannot be restored: " + "; ".join(tried)
    )
