"""benchmarks/bench_batch.py --quick: the Sinkhorn rows print and the batched solve agrees with the loop."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_batch.py"


def test_quick_run_prints_every_sinkhorn_row() -> None:
    out = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick"], capture_output=True, text=True, check=True, timeout=120
    ).stdout
    rows = [line for line in out.splitlines() if line.startswith("sinkhorn n=64")]
    assert [re.search(r"K=\S+( lags)?", r).group(0) for r in rows] == ["K=2", "K=6", "K=12", "K=6x8 lags"]
    for row in rows:
        assert re.search(r"ratio +[\d.]+x", row) and re.search(r"\(iters \d+\)", row)
        errs = [float(e) for e in re.findall(r"(?:loop|batched) ([\d.]+e[-+]\d+)", row)]
        assert len(errs) == 2 and max(errs) < 0.05  # both within the 0.01 stop rule's reach
