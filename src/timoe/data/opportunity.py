"""OPPORTUNITY Activity Recognition (UCI), from its official `S<1-4>-ADL<1-5>.dat` / `S<1-4>-Drill.dat`.

Each file: space-separated, 250 columns at 30 Hz, NaN where a sensor sent nothing. Column 1 is
MILLISEC, columns 2-243 the sensors in the order of `SENSOR_GROUPS`, columns 244-250 the label
tracks in the order of timoe.config.OPPORTUNITY_LABELS (Locomotion, HL_Activity, LL_Left_Arm,
LL_Left_Arm_Object, LL_Right_Arm, LL_Right_Arm_Object, ML_Both_Arms); label 0 is the null class.
Not bundled in any package: users download it and point `data.opportunity.path` at the folder
holding the .dat files (knobs: timoe.config.OpportunityConfig).

Modalities (data.opportunity.modalities) are the sensor groups of the data set: body_acc (12
body-worn 3-axis accelerometers), body_imu (5 upper-body IMUs: acc, gyro, magnetometer), shoes
(2 foot IMUs), objects (12 instrumented objects: acc, gyro x/y), ambient_switches (13 reed
switches), ambient_acc (8 accelerometers on doors, drawers, chair), location (4 tags x/y/z).
The default, the three body-worn groups, gives the 113 channels of the widely used setup
(Ordóñez & Roggen 2016): the IMUs' quaternions are dropped there and here.
Label: one track (data.opportunity.label, default locomotion: stand, walk, sit, lie;
ml_both_arms: the challenge's 17 gestures); classes default to every non-null label of it.

Gaps: each channel is linearly interpolated within its recording (ends held at the nearest
valid value), so no window spans a gap filled with zeros; a channel with no valid value in some
selected recording is dropped from all of them (listed in meta.json `extra.dropped_channels`),
since every recording must have the same channels.

Split (data.opportunity.split):
- "official" (default): the OPPORTUNITY challenge's split by run (Chavarriaga et al. 2013), in the
  variant of DeepConvLSTM (Ordóñez & Roggen 2016) and most later work, `OFFICIAL_SPLIT`: train
  S1's six runs and ADL1, ADL2, Drill of S2 and S3; val ADL3 of S2 and S3; test ADL4, ADL5 of S2
  and S3; S4 is not read. S2 and S3 are in train and test at once, so the data set declares
  split_unit "recording" (timoe.data.base.SplitUnit): no run has windows in two splits, and
  results are comparable with the literature but not subject-independent. meta.json lists the
  split of every run read (`extra.official_split`).
- "subjects": leave subjects out (val_subjects, default S3; test_subjects, default S4; every
  other subject trains), split_unit "subject", so results are subject-independent.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from timoe.config import OPPORTUNITY_LABELS, OPPORTUNITY_RUNS, ConfigError, DataConfig, OpportunityConfig
from timoe.data.assemble import RecordingSet, fill_gaps, from_recordings, windowed_dataset
from timoe.data.base import SPLITS, Recording, WindowedDataset
from timoe.data.errors import DataFormatError, DataSourceError
from timoe.data.sources import configured_folder, sha256_file
from timoe.data.windowing import window_recordings

SAMPLE_RATE_HZ = 30.0
_ACC = ("accX", "accY", "accZ")
_QUATERNION = ("Quaternion1", "Quaternion2", "Quaternion3", "Quaternion4")
# (modality, sensors, fields of each sensor): columns 2-243 are these, sensor by sensor, in order
SENSOR_GROUPS: tuple[tuple[str, tuple[str, ...], tuple[str, ...]], ...] = (
    (
        "body_acc",
        ("RKN^", "HIP", "LUA^", "RUA_", "LH", "BACK", "RKN_", "RWR", "RUA^", "LUA_", "LWR", "RH"),
        _ACC,
    ),
    (
        "body_imu",
        ("BACK", "RUA", "RLA", "LUA", "LLA"),
        (*_ACC, "gyroX", "gyroY", "gyroZ", "magneticX", "magneticY", "magneticZ", *_QUATERNION),
    ),
    (
        "shoes",
        ("L-SHOE", "R-SHOE"),
        (
            *("EuX", "EuY", "EuZ", "Nav_Ax", "Nav_Ay", "Nav_Az", "Body_Ax", "Body_Ay", "Body_Az"),
            *("AngVelBodyFrameX", "AngVelBodyFrameY", "AngVelBodyFrameZ"),
            *("AngVelNavFrameX", "AngVelNavFrameY", "AngVelNavFrameZ", "Compass"),
        ),
    ),
    (
        "objects",
        (
            "CUP",
            "SALAMI",
            "WATER",
            "CHEESE",
            "BREAD",
            "KNIFE1",
            "MILK",
            "SPOON",
            "SUGAR",
            "KNIFE2",
            "PLATE",
            "GLASS",
        ),
        (*_ACC, "gyroX", "gyroY"),
    ),
    (
        "ambient_switches",
        (
            *("DISHWASHER_S1", "FRIDGE_S3", "FRIDGE_S2", "FRIDGE_S1", "MIDDLEDRAWER_S1", "MIDDLEDRAWER_S2"),
            *("MIDDLEDRAWER_S3", "LOWERDRAWER_S3", "LOWERDRAWER_S2", "UPPERDRAWER", "DISHWASHER_S3"),
            *("LOWERDRAWER_S1", "DISHWASHER_S2"),
        ),
        ("state",),
    ),
    (
        "ambient_acc",
        ("DOOR1", "LAZYCHAIR", "DOOR2", "DISHWASHER", "UPPERDRAWER", "LOWERDRAWER", "MIDDLEDRAWER", "FRIDGE"),
        _ACC,
    ),
    ("location", ("TAG1", "TAG2", "TAG3", "TAG4"), ("X", "Y", "Z")),
)
DROPPED_FIELDS = frozenset(_QUATERNION)  # orientation estimates, left out as in the 113-channel setup
FIRST_SENSOR_COLUMN = 1  # 0-based: column 0 is MILLISEC
LABEL_COLUMNS = {name: 243 + i for i, name in enumerate(OPPORTUNITY_LABELS)}  # 0-based, file order
N_COLUMNS = 250

_ARM_VERBS = ("unlock", "stir", "lock", "close", "reach", "open", "sip", "clean", "bite", "cut", "spread")
_ARM_VERBS += ("release", "move")
_OBJECTS = ("Bottle", "Salami", "Bread", "Sugar", "Dishwasher", "Switch", "Milk", "Drawer3", "Spoon")
_OBJECTS += ("Knife_cheese", "Drawer2", "Table", "Glass", "Cheese", "Chair", "Door1", "Door2", "Plate")
_OBJECTS += ("Drawer1", "Fridge", "Cup", "Knife_salami", "Lazychair")
# label id -> name of each track (label_legend.txt of the data set); 0 is the null class everywhere
LABEL_NAMES: dict[str, dict[int, str]] = {
    "locomotion": {1: "Stand", 2: "Walk", 4: "Sit", 5: "Lie"},
    "hl_activity": {
        101: "Relaxing",
        102: "Coffee_time",
        103: "Early_morning",
        104: "Cleanup",
        105: "Sandwich_time",
    },
    "ll_left_arm": {201 + i: v for i, v in enumerate(_ARM_VERBS)},
    "ll_left_arm_object": {301 + i: o for i, o in enumerate(_OBJECTS)},
    "ll_right_arm": {401 + i: v for i, v in enumerate(_ARM_VERBS)},
    "ll_right_arm_object": {501 + i: o for i, o in enumerate(_OBJECTS)},
    "ml_both_arms": {
        406516: "Open_Door1",
        406517: "Open_Door2",
        404516: "Close_Door1",
        404517: "Close_Door2",
        406520: "Open_Fridge",
        404520: "Close_Fridge",
        406505: "Open_Dishwasher",
        404505: "Close_Dishwasher",
        406519: "Open_Drawer1",
        404519: "Close_Drawer1",
        406511: "Open_Drawer2",
        404511: "Close_Drawer2",
        406508: "Open_Drawer3",
        404508: "Close_Drawer3",
        408512: "Clean_Table",
        407521: "Drink_from_Cup",
        405506: "Toggle_Switch",
    },
}
NULL_LABEL = 0
FILE_PATTERN = "S*-*.dat"
_FILE = re.compile(r"S(\d+)-(" + "|".join(OPPORTUNITY_RUNS) + r")\.dat$")

# The challenge's split by run (split "official", see the module doc): split -> subject -> runs.
# A (subject, run) listed nowhere (all of S4) is not read.
OFFICIAL_SPLIT: dict[str, dict[int, tuple[str, ...]]] = {
    "train": {1: OPPORTUNITY_RUNS, 2: ("ADL1", "ADL2", "Drill"), 3: ("ADL1", "ADL2", "Drill")},
    "val": {2: ("ADL3",), 3: ("ADL3",)},
    "test": {2: ("ADL4", "ADL5"), 3: ("ADL4", "ADL5")},
}
_OFFICIAL_SPLIT_OF = {
    (subject, run): split
    for split, by_subject in OFFICIAL_SPLIT.items()
    for subject, runs in by_subject.items()
    for run in runs
}


def run_name(subject: int, run: str) -> str:
    """A run's name as its file stem gives it, e.g. (2, "ADL3") -> "S2-ADL3"."""
    return f"S{subject}-{run}"


def channel_layout(modalities: Sequence[str]) -> tuple[list[str], dict[str, list[int]], list[int]]:
    """(channel names, modality -> channel indices, 0-based source column of each channel) of the
    selected modalities, in the order given, quaternions dropped."""
    where: dict[str, list[tuple[str, int]]] = {}  # modality -> [(channel name, column)]
    column = FIRST_SENSOR_COLUMN
    for modality, sensors, fields in SENSOR_GROUPS:
        for sensor in sensors:
            for f in fields:
                if f not in DROPPED_FIELDS:
                    where.setdefault(modality, []).append((f"{modality}-{sensor}-{f}", column))
                column += 1
    channels: list[str] = []
    groups: dict[str, list[int]] = {}
    columns: list[int] = []
    for modality in modalities:
        groups[modality] = list(range(len(channels), len(channels) + len(where[modality])))
        channels += [n for n, _ in where[modality]]
        columns += [c for _, c in where[modality]]
    return channels, groups, columns


def read_table(path: Path) -> np.ndarray:
    """One run file -> (T, 250) float64, NaN where the file says NaN; labels checked."""
    try:
        table = np.loadtxt(path, dtype=np.float64, ndmin=2)
    except (OSError, ValueError) as err:
        raise DataFormatError(f"{path}: cannot be parsed as OPPORTUNITY .dat ({err})") from None
    if table.shape[1] != N_COLUMNS:
        raise DataFormatError(f"{path}: {table.shape[1]} columns, expected {N_COLUMNS}")
    for track, column in LABEL_COLUMNS.items():
        labels = table[:, column]
        if not np.isfinite(labels).all() or np.any(labels != np.round(labels)):
            raise DataFormatError(f"{path}: label column {column + 1} ({track}) holds non-integer values")
        bad = sorted(set(np.unique(labels).astype(int).tolist()) - {NULL_LABEL, *LABEL_NAMES[track]})
        if bad:
            raise DataFormatError(f"{path}: unknown {track} label id(s) {bad}")
    return table


def _find_files(root: Path, oc: OpportunityConfig) -> list[tuple[int, str, Path]]:
    """(subject, run, path) of the selected files under root, by subject then run order."""
    found = []
    for path in root.glob(FILE_PATTERN):
        match = _FILE.search(path.name)
        if match is None:  # other .dat files (e.g. a user's notes) are not runs
            continue
        subject, run = int(match.group(1)), match.group(2)
        # the official split reads only the runs it assigns (S4's are in no split)
        used = oc.split != "official" or (subject, run) in _OFFICIAL_SPLIT_OF
        if used and run in oc.runs and (oc.subjects is None or subject in oc.subjects):
            found.append((subject, run, path))
    found.sort(key=lambda f: (f[0], OPPORTUNITY_RUNS.index(f[1])))
    if not found:
        which = "S1-S3 (split 'official')" if oc.split == "official" else "any subject"
        raise DataSourceError(
            f"no OPPORTUNITY file S<subject>-<run>.dat of {which} for runs {list(oc.runs)} under {root}; "
            + oc.source_hint
        )
    return found


def read_runs(root: Path, oc: OpportunityConfig) -> RecordingSet:
    """The selected run files under root as recordings of the selected modalities and label."""
    files = _find_files(Path(root), oc)
    channels, modalities, columns = channel_layout(oc.modalities)
    tables = [read_table(path) for _, _, path in files]
    # a channel must be in every recording: one with no value anywhere in a recording goes
    empty = {
        ch for t in tables for ch, col in zip(channels, columns, strict=True) if np.isnan(t[:, col]).all()
    }
    for modality, idx in modalities.items():
        if all(channels[i] in empty for i in idx):
            raise DataFormatError(
                f"{root}: every {modality} channel is missing (all NaN) in some selected run; "
                "leave that modality out of data.opportunity.modalities"
            )
    keep = [i for i, ch in enumerate(channels) if ch not in empty]
    renumber = {old: new for new, old in enumerate(keep)}
    kept_modalities = {m: [renumber[i] for i in idx if i in renumber] for m, idx in modalities.items()}
    label_column = LABEL_COLUMNS[oc.label]
    recordings = []
    per_subject: dict[int, int] = {}
    for (subject, _, path), table in zip(files, tables, strict=True):
        x = np.stack([fill_gaps(table[:, columns[i]], path, channels[i]) for i in keep], axis=1)
        index = per_subject.get(subject, 0)
        per_subject[subject] = index + 1
        recordings.append(
            Recording(
                subject=subject,
                index=index,
                x=x.astype(np.float32),
                labels=table[:, label_column].astype(np.int32),
            )
        )
    extra: dict[str, object] = {
        "label_track": oc.label,
        "runs": [run_name(s, r) for s, r, _ in files],  # one per recording, in recording order
        "dropped_channels": sorted(empty),
    }
    if oc.split == "official":
        extra["official_split"] = {run_name(s, r): _OFFICIAL_SPLIT_OF[(s, r)] for s, r, _ in files}
    return RecordingSet(
        name="opportunity",
        recordings=recordings,
        channels=[channels[i] for i in keep],
        modalities=kept_modalities,
        label_names={NULL_LABEL: "null", **LABEL_NAMES[oc.label]},
        sources={path.name: sha256_file(path) for _, _, path in files},
        sample_rate_hz=SAMPLE_RATE_HZ,
        extra=extra,
    )


def build(cfg: DataConfig) -> WindowedDataset:
    """Windows of the runs under data.opportunity.path, split as data.opportunity.split says."""
    oc = cfg.opportunity
    root = configured_folder(oc.path, "data.opportunity.path", FILE_PATTERN, oc.source_hint)
    rs = read_runs(root, oc)
    classes = sorted(LABEL_NAMES[oc.label]) if oc.classes is None else oc.classes
    config = {"seed": cfg.seed, "opportunity": oc.model_dump(mode="json")}
    if oc.split == "official":
        return split_by_run(rs, oc, classes, config)
    return from_recordings(
        rs,
        window=oc.window,
        stride=oc.stride,
        classes=classes,
        val_subjects=oc.val_subjects,
        test_subjects=oc.test_subjects,
        config=config,
        windows=oc.windows,
    )


def split_by_run(
    rs: RecordingSet, oc: OpportunityConfig, classes: list[int], config: dict[str, object]
) -> WindowedDataset:
    """Windows of rs split by `OFFICIAL_SPLIT` (rs.extra["official_split"]), split_unit "recording".

    Windowing, class mapping and their ConfigErrors are those of timoe.data.assemble.from_recordings,
    which can only split by subject; only the split assignment and its empty-split check differ.
    """
    unknown = sorted(set(classes) - set(rs.label_names))
    if unknown:
        raise ConfigError(
            f"data.opportunity.classes: unknown class label(s) {unknown}; known: {sorted(rs.label_names)}"
        )
    ordered = sorted(classes)  # class index order does not depend on how the list is written
    try:
        win = window_recordings(rs.recordings, oc.window, oc.stride, ordered, mode=oc.windows)
    except ValueError as err:  # no window fits: the window is too long for these recordings
        raise ConfigError(f"data.opportunity: {err}") from None
    # recording ids are positions in rs.recordings, the order of rs.extra["runs"]
    of_recording = np.array([rs.extra["official_split"][name] for name in rs.extra["runs"]])
    split = of_recording[win.recording]
    empty = [s for s in SPLITS if not np.any(split == s)]
    if empty:
        needed = {
            s: [run_name(subj, r) for subj, runs in OFFICIAL_SPLIT[s].items() for r in runs] for s in empty
        }
        raise ConfigError(
            f"opportunity: split(s) {empty} of split 'official' would be empty: no window in runs "
            f"{needed} (missing under data.opportunity.path, left out by data.opportunity.runs or "
            "subjects, or with no window of the selected classes); data.opportunity.split: "
            "subjects splits by subject instead"
        )
    # S2 and S3 are in every split; their runs are not
    return windowed_dataset(rs, win, ordered, split, config, split_unit="recording")
