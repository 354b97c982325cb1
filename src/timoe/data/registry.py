"""Name -> builder of every data set timoe can prepare.

A builder takes the validated DataConfig and returns an unnormalised `WindowedDataset`
(windows, labels, subjects, recordings, split, channel/modality map, class names, source
hashes); prepare.py does normalisation and writing for all of them alike.

Built-in data sets are listed in DATASETS; a bring-your-own one is any key of `data.custom`
(timoe.data.custom.build_configured), so `get_dataset` resolves those only given the
DataConfig. DATASETS holds exactly timoe.config.DATASET_NAMES (tests/test_data_io.py checks).

Adding a built-in data set: write `timoe/data/<name>.py` with `build(cfg: DataConfig) ->
WindowedDataset`, add one line to DATASETS below, add the name to DATASET_NAMES in
timoe/config.py (and a config section `data.<name>` there if it has knobs).
"""

from __future__ import annotations

import functools
from collections.abc import Callable

from timoe.config import DataConfig
from timoe.data import basicmotions, custom, hapt, opportunity, pamap2, synthetic_regimes, wesad
from timoe.data.base import WindowedDataset
from timoe.data.errors import UnknownDatasetError

DatasetBuilder = Callable[[DataConfig], WindowedDataset]

DATASETS: dict[str, DatasetBuilder] = {
    "hapt": hapt.build,
    "basicmotions": basicmotions.build,
    "synthetic-regimes": synthetic_regimes.build,
    "pamap2": pamap2.build,
    "wesad": wesad.build,
    "opportunity": opportunity.build,
}


def get_dataset(name: str, cfg: DataConfig | None = None) -> DatasetBuilder:
    """The builder of `name`: a built-in one, or, given cfg, one configured under data.custom.

    UnknownDatasetError lists the known names (the configured custom ones too, given cfg).
    """
    if name in DATASETS:
        return DATASETS[name]
    if cfg is not None and name in cfg.custom:
        return functools.partial(custom.build_configured, name)
    configured = f"; under data.custom: {sorted(cfg.custom)}" if cfg is not None else ""
    raise UnknownDatasetError(f"unknown data set {name!r}; known: {sorted(DATASETS)}{configured}")
