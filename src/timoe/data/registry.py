"""Name -> builder of every data set timoe can prepare.

A builder takes the validated DataConfig and returns an unnormalised `WindowedDataset`
(windows, labels, subjects, recordings, split, channel/modality map, class names, source
hashes); prepare.py does normalisation and writing for all of them alike.

Adding a data set: write `timoe/data/<name>.py` with `build(cfg: DataConfig) -> WindowedDataset`
and add one line to DATASETS below. To select it from params.yaml, its name must also be
accepted by `DataConfig.datasets` in timoe/config.py (and a config section added there if it
has knobs).
"""

from __future__ import annotations

from collections.abc import Callable

from timoe.config import DataConfig
from timoe.data import basicmotions, hapt, synthetic_regimes
from timoe.data.base import WindowedDataset
from timoe.data.errors import UnknownDatasetError

DatasetBuilder = Callable[[DataConfig], WindowedDataset]

DATASETS: dict[str, DatasetBuilder] = {
    "hapt": hapt.build,
    "basicmotions": basicmotions.build,
    "synthetic-regimes": synthetic_regimes.build,
}


def get_dataset(name: str) -> DatasetBuilder:
    """The builder registered under `name`; UnknownDatasetError lists the known names."""
    try:
        return DATASETS[name]
    except KeyError:
        raise UnknownDatasetError(f"unknown data set {name!r}; known: {sorted(DATASETS)}") from None
