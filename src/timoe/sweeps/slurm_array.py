"""Sweep workers as a Slurm job array, submitted by the study's driver (`sweep.slurm_array`).

The driver creates the study, then submits the array; each task runs the same worker loop as a
local worker (workflow/profiles/slurm/sweep_workers.sbatch) and stops once the study holds
n_trials. The storage URL travels in the job's environment (sbatch exports it), not on its
command line, where `squeue`/`ps` would show its password.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from timoe.config import ConfigError
from timoe.sweeps.storage import STORAGE_ENV, StorageSpec

# The script ships with the repository, which a cluster shares between its nodes.
SCRIPT = Path(__file__).resolve().parents[3] / "workflow" / "profiles" / "slurm" / "sweep_workers.sbatch"
ACCOUNT_ENV, PARTITION_ENV = "TIMOE_SLURM_ACCOUNT", "TIMOE_SLURM_PARTITION"
INDEX_BASE_ENV = "TIMOE_WORKER_INDEX_BASE"  # array task i is worker base + i (its sampler seed)


def check_can_submit(spec: StorageSpec) -> None:
    """Fail before the study starts if array workers could not join it."""
    if spec.url is None or spec.backend == "sqlite":
        raise ConfigError(
            "sweep.slurm_array needs a database every node reaches (sweep.storage or "
            f"{STORAGE_ENV}: a postgresql:// URL), not {spec.describe()}"
        )
    if shutil.which("sbatch") is None:
        raise ConfigError(
            "sweep.slurm_array is set but there is no `sbatch` on PATH (not on a Slurm cluster?)"
        )
    if not SCRIPT.is_file():
        raise ConfigError(
            f"sweep.slurm_array: the worker script {SCRIPT} is missing (run from the repository)"
        )


def submit_array(
    n_tasks: int, worker_args: list[str], spec: StorageSpec, log_dir: Path, index_base: int
) -> str:
    """Submit n_tasks array workers with these `timoe sweep --worker` arguments; return the job id."""
    check_can_submit(spec)
    log_dir.mkdir(parents=True, exist_ok=True)
    cmd = ["sbatch", "--parsable", f"--array=0-{n_tasks - 1}", f"--output={log_dir}/worker-%a.out"]
    cmd += [f"--chdir={Path.cwd()}"]
    for flag, var in (("--account", ACCOUNT_ENV), ("--partition", PARTITION_ENV)):
        if os.environ.get(var):
            cmd.append(f"{flag}={os.environ[var]}")
    env = {
        **os.environ,
        STORAGE_ENV: spec.as_arg(),
        "TIMOE_PYTHON": sys.executable,
        INDEX_BASE_ENV: str(index_base),
    }
    result = subprocess.run(
        [*cmd, str(SCRIPT), *worker_args], env=env, capture_output=True, text=True, timeout=120
    )
    if result.returncode != 0:
        raise RuntimeError(
            f"sbatch of the sweep workers failed ({result.returncode}): {result.stderr.strip()}"
        )
    return result.stdout.strip().split(";")[0]  # "jobid" or "jobid;cluster"


def cancel_pending(job_id: str) -> None:
    """Cancel the array's tasks that never started: the study is complete without them."""
    subprocess.run(["scancel", "--state=PENDING", job_id], capture_output=True, text=True, timeout=60)
