"""Audit past experiments: list, show, compare, trace lineage, and reproduce MLflow runs.

Everything here reads the lineage tags that `timoe.tracking` writes (stage, wildcards, git
state, input hashes and upstream run ids); only `reproduce` writes anything, and then only in
a temporary git worktree and a scratch tracking store unless asked otherwise.
"""

from __future__ import annotations


class AuditError(RuntimeError):
    """An audit request that cannot be answered (unknown run, missing store, unrestorable input)."""
