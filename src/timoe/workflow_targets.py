"""Print the Snakemake targets of one stage for the current params (used by dvc.yaml's cmds).

python -m timoe.workflow_targets train [params.yaml ...]
"""

from __future__ import annotations

import sys
from pathlib import Path

from timoe.config import ConfigError, Params, load_params, runs_on


def targets(params: Params, stage: str) -> list[str]:
    d, m, s = params.data.datasets, params.model.names, params.train.seeds
    table = {
        "prepare": [f"data/processed/{x}" for x in d],
        "quantify": [f"results/rus/{x}" for x in d],
        "sweep": [f"results/sweeps/{x}/{y}" for x in d for y in m if runs_on(y, x)],
        "train": [f"results/models/{x}/{y}/seed{z}" for x in d for y in m if runs_on(y, x) for z in s],
        "evaluate": ["results/benchmark"],
    }
    if stage not in table:
        raise ConfigError(f"unknown stage {stage!r}; known: {list(table)}")
    return table[stage]


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    files = [Path(a) for a in argv[1:]] or [Path("params.yaml")]
    try:
        print(" ".join(targets(load_params(*files), argv[0])))
    except ConfigError as err:
        print(f"timoe: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
