"""The one params schema: every stage, the Snakefile and the CLI validate through it.

params.yaml is grouped by stage. Unknown keys, wrong types and out-of-range values are
rejected with the dotted key path named, so a typo never silently falls back to a default.
So are values that would pass a field's own bounds and fail later: inf/NaN floats, booleans
for numbers, a key given twice in one YAML file, patches or lags that do not fit a data set's
window, and sweep values their target field would reject.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, get_args
from urllib.parse import urlsplit

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

# The built-in data sets; bring-your-own ones are named by their key under data.custom.
DATASET_NAMES = ("hapt", "basicmotions", "synthetic-regimes", "pamap2", "wesad", "opportunity")
# Baselines first, then timoe and its ablations; `oracle` routes by the true regime and exists only
# for data sets that record one (synthetic-regimes).
BASELINE_MODELS = ("transformer", "moe", "fusemoe", "modality-moe", "hash-moe")
# timoe-lag0: the prior from lag 0 only (does the lag range matter?); context-moe: a learned gate
# given timoe's label-free context but no interaction values (do the values add to the context?)
TIMOE_MODELS = (
    "timoe",
    "timoe-nolosses",
    "timoe-shuffled-rus",
    "timoe-dataset-rus",
    "timoe-lag0",
    "context-moe",
)
ORACLE_MODELS = ("oracle",)
# Not neural: the practitioner's reference (MiniRocket + ridge). Trained like the others (same
# windows, seeds, outputs) but with no sweep and no RUS input; models.MODEL_SPECS marks it too.
REFERENCE_MODELS = ("minirocket",)
MODEL_NAMES = (*BASELINE_MODELS, *TIMOE_MODELS, *ORACLE_MODELS, *REFERENCE_MODELS)
REGIME_DATASETS = ("synthetic-regimes",)  # data sets that record each window's true regime
BASICMOTIONS_STEPS = 100  # every UEA BasicMotions case is 100 steps long (timoe.data.basicmotions)
SEED_LIMIT = 2**32  # numpy's legacy seeding (and so seed_everything) takes seeds in 0..2**32-1
# Per-invocation files the pipeline writes beside Snakemake's own state (resolved params, worker params).
RUNTIME_DIR = Path(".snakemake") / "timoe"


def runs_on(model: str, dataset: str) -> bool:
    """Whether the study trains `model` on `dataset`: the oracle needs a recorded regime."""
    return model not in ORACLE_MODELS or dataset in REGIME_DATASETS


def is_swept(model: str) -> bool:
    """Whether the model has a sweep stage (hyper-parameters to tune): every neural model."""
    return model not in REFERENCE_MODELS


def dataset_key(name: str) -> str:
    """The params.yaml section of a data set under `data.`: a built-in one's name with '-' as '_'
    (`synthetic_regimes`), a bring-your-own one's `custom.<name>` (the schema admits no other)."""
    return name.replace("-", "_") if name in DATASET_NAMES else f"custom.{name}"


class ConfigError(ValueError):
    """Raised when params do not validate; the message names each offending key path."""


def _accepts_bool(annotation: Any) -> bool:
    """Whether a field's type admits True/False itself (bool, Any, or a union/list holding one)."""
    if annotation is bool or annotation is Any:
        return True
    return any(_accepts_bool(a) for a in get_args(annotation) if not isinstance(a, str))


def _holds_bool(value: Any) -> bool:
    return isinstance(value, bool) or (isinstance(value, list) and any(isinstance(v, bool) for v in value))


class _Strict(BaseModel):
    # allow_inf_nan=False: an inf or NaN float passes every ge/le bound check of its own field
    # and then turns the loss to NaN; no knob of the pipeline means anything at inf or NaN.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_numbers(cls, value: Any, info: Any) -> Any:
        # Pydantic reads `epochs: true` as 1; YAML makes that typo easy and it must not run.
        field = cls.model_fields.get(info.field_name) if info.field_name else None
        if field is not None and _holds_bool(value) and not _accepts_bool(field.annotation):
            raise ValueError(f"expected a number, got the boolean {value!r}")
        return value


# ---------------------------------------------------------------- data
HaptModality = Literal["acc", "body", "gravity", "gyro"]
HAPT_MODALITIES: tuple[str, ...] = get_args(HaptModality)


class HaptConfig(_Strict):
    window: int = Field(128, ge=8, le=2048, description="window length in samples (50 Hz)")
    stride: int = Field(64, ge=1, le=2048)
    classes: list[int] = Field(default_factory=lambda: [1, 2, 3, 4, 5, 6])
    # acc / gyro: the raw signals; body / gravity: the accelerometer split at gravity_cutoff_hz
    # (timoe.data.hapt). Each is 3 channels (x, y, z), in the order listed.
    modalities: list[HaptModality] = Field(default_factory=lambda: ["acc", "gyro"])
    gravity_cutoff_hz: float = Field(0.3, gt=0.0, lt=20.0, description="low-pass that gives gravity")
    # segments: windows inside one label segment (one label per window); continuous: windows cut
    # across label changes, labelled by their last step
    windows: Literal["segments", "continuous"] = "segments"
    test_subjects: list[int] = Field(default_factory=lambda: [2, 4, 9, 10, 12, 13, 18, 20, 24])
    val_subjects: list[int] = Field(default_factory=lambda: [1, 19, 29])
    subjects: list[int] | None = Field(None, description="restrict to these subjects (smoke runs)")

    @field_validator("classes")
    @classmethod
    def _classes_in_range(cls, v: list[int]) -> list[int]:
        if not v or any(c < 1 or c > 12 for c in v):
            raise ValueError("HAPT classes must be a non-empty list of labels in 1..12")
        return v

    @field_validator("modalities")
    @classmethod
    def _modalities(cls, v: list[str]) -> list[str]:
        if len(v) < 2 or len(set(v)) != len(v):
            raise ValueError(f"need at least two distinct HAPT modalities of {list(HAPT_MODALITIES)}")
        return v

    @model_validator(mode="after")
    def _disjoint(self) -> HaptConfig:
        if set(self.val_subjects) & set(self.test_subjects):
            raise ValueError("val_subjects and test_subjects overlap")
        if self.stride > self.window:
            raise ValueError("stride larger than window would skip samples")
        return self


class BasicMotionsConfig(_Strict):
    val_fraction: float = Field(0.25, gt=0.0, lt=1.0, description="share of train cases held out")


class SyntheticRegimesConfig(_Strict):
    """The synthetic regime benchmark (timoe.data.synthetic_regimes): knobs of the generator.

    A regime is a string of one or two `+`-joined terms, each `kind(modalities)` with kind
    unique (one modality), redundant, xor or and (two distinct modalities), modality names
    m0..m{n_modalities-1}; each term gives one bit of the label (two terms: 4 classes).
    """

    seed: int = Field(0, ge=0, lt=SEED_LIMIT)
    n_train: int = Field(3000, ge=10, le=1_000_000, description="training windows")
    n_val: int = Field(1000, ge=10, le=1_000_000)
    n_test: int = Field(1000, ge=10, le=1_000_000)
    windows_per_subject: int = Field(50, ge=1, le=100_000, description="windows of one synthetic subject")
    window: int = Field(32, ge=8, le=2048, description="steps per window")
    n_modalities: int = Field(3, ge=2, le=4)
    hold: int = Field(
        32,
        ge=1,
        le=2048,
        description="steps each latent bit is held; 1: i.i.d.; = window: one bit per window",
    )
    signal_channels: int = Field(2, ge=2, le=4, description="channels carrying a modality's bit")
    regimes: list[str] = Field(
        default_factory=lambda: ["unique(m0)", "redundant(m1,m2)", "xor(m0,m1)", "unique(m2)+xor(m0,m1)"]
    )
    lags: list[int] = Field(default_factory=lambda: [1, 2, 3, 1], description="lag of each regime, in steps")
    mix: list[float] | None = Field(None, description="relative share of each regime; None: equal")
    noise: float = Field(0.3, ge=0.0, le=10.0, description="Gaussian noise std on the signal channels")
    distractor: float = Field(1.0, ge=0.0, le=10.0, description="amplitude of the distractor channels")
    context_strength: float = Field(0.6, gt=0.0, le=10.0, description="regime offset/scale of the context")
    context_offset: float = Field(
        0.0, ge=0.0, le=1.0, description="weight of the context mean cue (0: regime in stds only)"
    )
    signal_context: float = Field(
        0.25, ge=0.0, le=2.0, description="regime cue in the signal noise: std noise·exp(this·sin φ)"
    )
    truth_lags: list[int] = Field(
        default_factory=lambda: [0, 1, 2, 4, 8, 16],
        description="lags of the ground-truth table (the regime lags are added)",
    )

    def parsed_regimes(self) -> list[list[tuple[str, tuple[int, ...]]]]:
        """Each regime as its terms [(kind, modality indices)], e.g. [("xor", (0, 1))]."""
        import re  # local: the only regex in the schema

        kinds = {"unique": 1, "redundant": 2, "xor": 2, "and": 2}  # kind -> number of modalities
        out = []
        for spec in self.regimes:
            terms = []
            for term in spec.replace(" ", "").split("+"):
                match = re.fullmatch(r"([a-z]+)\(([^()]*)\)", term)
                if match is None or match.group(1) not in kinds:
                    raise ValueError(
                        f"regime {spec!r}: term {term!r} is not kind(m<i>,...) with kind in {sorted(kinds)}"
                    )
                kind, names = match.group(1), match.group(2).split(",")
                if any(re.fullmatch(r"m\d+", n) is None or int(n[1:]) >= self.n_modalities for n in names):
                    raise ValueError(
                        f"regime {spec!r}: modalities {names} are not among m0..m{self.n_modalities - 1}"
                    )
                mods = tuple(int(n[1:]) for n in names)
                if len(mods) != kinds[kind] or len(set(mods)) != len(mods):
                    raise ValueError(f"regime {spec!r}: {kind} needs {kinds[kind]} distinct modalities")
                terms.append((kind, mods))
            if len(terms) > 2:
                raise ValueError(f"regime {spec!r}: at most two terms (label bits)")
            out.append(terms)
        return out

    @model_validator(mode="after")
    def _consistent(self) -> SyntheticRegimesConfig:
        if not self.regimes:
            raise ValueError("at least one regime is needed")
        self.parsed_regimes()
        if len(self.lags) != len(self.regimes):
            raise ValueError(f"{len(self.lags)} lags for {len(self.regimes)} regimes")
        bad = [k for k in [*self.lags, *self.truth_lags] if k < 0 or k >= self.window]
        if bad:
            raise ValueError(f"lags {bad} outside 0..window-1 ({self.window - 1})")
        if len(set(zip(self.regimes, self.lags, strict=True))) != len(self.regimes):
            raise ValueError("a regime (with its lag) is listed twice")
        if self.mix is not None and (
            len(self.mix) != len(self.regimes) or min(self.mix) < 0 or sum(self.mix) <= 0
        ):
            raise ValueError("mix needs one non-negative share per regime, not all zero")
        return self


def _is_safe_name(name: str) -> bool:
    """Letters, digits, '-' and '_' only: the name becomes a path part and a Snakemake wildcard."""
    return bool(name) and all(c.isascii() and (c.isalnum() or c in "-_") for c in name)


def _name_clash_key(name: str) -> str:
    # data/processed/<name> must be one folder per data set, also on case-insensitive file
    # systems, and a name must not differ from another's params key by '-' vs '_' only
    return name.lower().replace("-", "_")


class _DownloadedConfig(_Strict):
    """Knobs shared by the data sets read from files the user downloads (PAMAP2, WESAD,
    OPPORTUNITY): where the files are, how recordings are cut into windows, how they are split.
    Subclasses set the defaults of window, stride and the subject lists."""

    # how to get the files; the loaders' "not found" errors and the schema's "not set" one quote it
    source_hint: ClassVar[str] = ""
    path: str | None = Field(
        None,
        min_length=1,
        description="the downloaded files' folder, relative to the working directory; None: not configured",
    )
    window: int = Field(ge=8, le=8192, description="window length in samples")
    stride: int = Field(ge=1, le=8192)
    classes: list[int] | None = Field(None, description="source labels to keep; None: the loader's default")
    val_subjects: list[int]
    test_subjects: list[int]
    subjects: list[int] | None = Field(None, description="restrict to these subjects (smoke runs)")

    @model_validator(mode="after")
    def _consistent(self) -> _DownloadedConfig:
        if set(self.val_subjects) & set(self.test_subjects):
            raise ValueError("val_subjects and test_subjects overlap")
        if self.stride > self.window:
            raise ValueError("stride larger than window would skip samples")
        if self.classes is not None and (not self.classes or len(set(self.classes)) != len(self.classes)):
            raise ValueError("classes must be a non-empty list of distinct labels (or null for the default)")
        return self


class Pamap2Config(_DownloadedConfig):
    """PAMAP2 (timoe.data.pamap2): path = the `Protocol` folder holding subject10X.dat."""

    source_hint: ClassVar[str] = (
        "download PAMAP2 from the UCI repository and point data.pamap2.path at its Protocol folder"
    )
    window: int = Field(512, ge=8, le=8192, description="samples after downsampling: 5.12 s at 100 Hz")
    stride: int = Field(256, ge=1, le=8192)
    downsample: int = Field(1, ge=1, le=100, description="keep every n-th sample (3: ~33 Hz)")
    val_subjects: list[int] = Field(default_factory=lambda: [107])
    test_subjects: list[int] = Field(default_factory=lambda: [108, 109])


WesadDevice = Literal["chest", "wrist"]  # the two devices of a WESAD pickle (timoe.data.wesad.RATES)


class WesadConfig(_DownloadedConfig):
    """WESAD (timoe.data.wesad): path = the root folder holding S<id>/S<id>.pkl."""

    source_hint: ClassVar[str] = (
        "download WESAD (S*/S*.pkl) from its authors' site and point data.wesad.path at its root folder"
    )
    target_hz: float = Field(35.0, gt=0.0, le=700.0, description="common rate every signal is resampled to")
    window: int = Field(350, ge=8, le=8192, description="samples at target_hz: 10 s")
    stride: int = Field(175, ge=1, le=8192)
    devices: list[WesadDevice] = Field(default_factory=lambda: ["chest", "wrist"])
    classes: list[int] = Field(
        default_factory=lambda: [1, 2, 3], description="1 baseline, 2 stress, 3 amusement, 4 meditation"
    )
    val_subjects: list[int] = Field(default_factory=lambda: [15])
    test_subjects: list[int] = Field(default_factory=lambda: [16, 17])

    @field_validator("devices")
    @classmethod
    def _devices(cls, v: list[str]) -> list[str]:
        if not v or len(set(v)) != len(v):
            raise ValueError(f"need a non-empty list of distinct devices of {list(get_args(WesadDevice))}")
        return v


# The label columns and sensor groups of an OPPORTUNITY .dat file; timoe.data.opportunity maps
# each name to its columns.
OpportunityLabel = Literal[
    "locomotion",
    "hl_activity",
    "ll_left_arm",
    "ll_left_arm_object",
    "ll_right_arm",
    "ll_right_arm_object",
    "ml_both_arms",
]
OpportunityModality = Literal[
    "body_acc", "body_imu", "shoes", "objects", "ambient_switches", "ambient_acc", "location"
]
OpportunityRun = Literal["ADL1", "ADL2", "ADL3", "ADL4", "ADL5", "Drill"]
OPPORTUNITY_LABELS: tuple[str, ...] = get_args(OpportunityLabel)
OPPORTUNITY_MODALITIES: tuple[str, ...] = get_args(OpportunityModality)
OPPORTUNITY_RUNS: tuple[str, ...] = get_args(OpportunityRun)


class OpportunityConfig(_DownloadedConfig):
    """OPPORTUNITY (timoe.data.opportunity): path = the folder holding S<1-4>-<run>.dat.

    split "official" (default): the challenge's split by run (timoe.data.opportunity.OFFICIAL_SPLIT),
    val_subjects / test_subjects unused and refused when changed from their defaults, since a
    setting that is silently ignored reads as one that holds. "subjects": leave subjects out
    (val_subjects, test_subjects; every other subject trains).
    """

    source_hint: ClassVar[str] = (
        "download the OPPORTUNITY Activity Recognition data set from the UCI repository and point "
        "data.opportunity.path at its folder of S<1-4>-ADL<1-5>.dat / S<1-4>-Drill.dat files"
    )
    window: int = Field(64, ge=8, le=8192, description="samples at 30 Hz: 2.1 s")
    stride: int = Field(32, ge=1, le=8192)
    label: OpportunityLabel = Field("locomotion", description="the label column windows are classified by")
    classes: list[int] | None = Field(None, description="label ids to keep; None: every one but 0 (null)")
    modalities: list[OpportunityModality] = Field(
        default_factory=lambda: ["body_acc", "body_imu", "shoes"], description="sensor groups, in order"
    )
    runs: list[OpportunityRun] = Field(default_factory=lambda: list(OPPORTUNITY_RUNS))
    windows: Literal["segments", "continuous"] = "segments"  # as data.hapt.windows
    split: Literal["official", "subjects"] = Field(
        "official", description="official: the challenge's runs; subjects: by val/test_subjects"
    )
    val_subjects: list[int] = Field(default_factory=lambda: [3])  # split "subjects" only
    test_subjects: list[int] = Field(default_factory=lambda: [4])  # split "subjects" only

    @field_validator("modalities")
    @classmethod
    def _modalities(cls, v: list[str]) -> list[str]:
        if len(v) < 2 or len(set(v)) != len(v):
            raise ValueError(
                f"need at least two distinct OPPORTUNITY modalities of {list(OPPORTUNITY_MODALITIES)}"
            )
        return v

    @field_validator("runs")
    @classmethod
    def _runs(cls, v: list[str]) -> list[str]:
        if not v or len(set(v)) != len(v):
            raise ValueError(f"need a non-empty list of distinct runs of {list(OPPORTUNITY_RUNS)}")
        return v

    @model_validator(mode="after")
    def _subject_lists_need_subject_split(self) -> OpportunityConfig:
        # against the defaults, not "was it set": a dumped config validates again unchanged
        for key in ("val_subjects", "test_subjects"):
            value = getattr(self, key)
            default = type(self).model_fields[key].get_default(call_default_factory=True)
            if self.split == "official" and value != default:
                raise ValueError(
                    f"{key} {value} is not used by split 'official' (its runs fix train, val and "
                    f"test); set data.opportunity.split: subjects to split by subject, or leave "
                    f"{key} out"
                )
        return self


class CustomDatasetConfig(_Strict):
    """A bring-your-own data set (timoe.data.custom), selected by its key under data.custom."""

    path: str = Field(
        min_length=1,
        description="folder holding windows.parquet and dataset.json, relative to the working directory",
    )
    val_subjects: list[int] = Field(default_factory=list, description="without a split column")
    test_subjects: list[int] = Field(default_factory=list, description="without a split column")

    @model_validator(mode="after")
    def _disjoint(self) -> CustomDatasetConfig:
        if set(self.val_subjects) & set(self.test_subjects):
            raise ValueError("val_subjects and test_subjects overlap")
        return self


class DataConfig(_Strict):
    # built-in names (DATASET_NAMES) or keys of `custom`
    datasets: list[str] = Field(default_factory=lambda: ["hapt", "basicmotions"])
    seed: int = Field(0, ge=0, lt=SEED_LIMIT)
    hapt: HaptConfig = HaptConfig()
    basicmotions: BasicMotionsConfig = BasicMotionsConfig()
    synthetic_regimes: SyntheticRegimesConfig = SyntheticRegimesConfig()
    pamap2: Pamap2Config = Pamap2Config()
    wesad: WesadConfig = WesadConfig()
    opportunity: OpportunityConfig = OpportunityConfig()
    custom: dict[str, CustomDatasetConfig] = Field(default_factory=dict)

    @field_validator("datasets")
    @classmethod
    def _non_empty(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("at least one data set is needed")
        if len(set(v)) != len(v):
            raise ValueError("data sets listed twice")
        return v

    @field_validator("custom")
    @classmethod
    def _custom_names(cls, v: dict[str, CustomDatasetConfig]) -> dict[str, CustomDatasetConfig]:
        seen = {_name_clash_key(n): n for n in DATASET_NAMES}
        for name in v:
            if not _is_safe_name(name):
                raise ValueError(f"{name!r}: a data set name may hold only letters, digits, '-' and '_'")
            clash = seen.get(_name_clash_key(name))
            if clash is not None:
                what = "the built-in data set" if clash in DATASET_NAMES else "the custom data set"
                raise ValueError(f"{name!r} clashes with {what} {clash!r}; choose another name")
            seen[_name_clash_key(name)] = name
        return v

    @model_validator(mode="after")
    def _known(self) -> DataConfig:
        for i, name in enumerate(self.datasets):
            if name not in DATASET_NAMES and name not in self.custom:
                raise ValueError(
                    f"data.datasets.{i}: {name!r} is neither a built-in data set {list(DATASET_NAMES)} "
                    f"nor configured under data.custom {sorted(self.custom)}"
                )
            section = getattr(self, dataset_key(name), None)
            if isinstance(section, _DownloadedConfig) and section.path is None:
                raise ValueError(
                    f"data.datasets lists {name} but data.{dataset_key(name)}.path is not set; "
                    f"{section.source_hint}"
                )
        return self


# ---------------------------------------------------------------- rus
class BatchEstimatorConfig(_Strict):
    hidden: int = Field(64, ge=4, le=4096)
    embed_dim: int = Field(16, ge=2, le=1024)
    discrim_epochs: int = Field(20, ge=1, le=10_000)
    align_epochs: int = Field(20, ge=1, le=10_000)
    batch_size: int = Field(256, ge=8, le=65_536)
    lr: float = Field(1e-3, gt=0.0, le=1.0)
    sinkhorn_iters: int = Field(100, ge=1, le=100_000)
    sinkhorn_tol: float = Field(1e-6, gt=0.0, le=1.0)


class RusConfig(_Strict):
    # stacked: per-lag BATCH models trained together in one pass (interactions.lagstack); agrees with
    # "batch" within its seed noise where the shared multiscale model does not (README, estimators)
    estimator: Literal["exact", "batch", "multiscale", "stacked"] = "exact"
    form: Literal["directed", "lagged_mi"] = "directed"
    lags: list[int] = Field(default_factory=lambda: [0, 1, 2, 4, 8, 16])
    n_bins: int = Field(8, ge=2, le=64)
    feature: Literal["pca", "magnitude"] = Field(
        "pca", description="per-step scalar of a modality for the exact estimator: PC1 or L2 norm"
    )
    discretizer: Literal["quantile", "uniform", "kmeans"] = "quantile"
    past_bins: int = Field(0, ge=0, le=64, description="0: condition on the previous label itself")
    # The directed form conditions on a summary of the target's past taken h = past_horizon steps
    # before t.  h = 1 is the standard directed-information conditioning on Y_{t-1}.  h > 1
    # conditions on Y_{t-h} (crossed with the dwell-time bin measured at t-h when past_bins > 0):
    # a coarser past that keeps the label's dynamics between t-h and t in the estimate.  That is
    # NOT the textbook DI(tau); it is a PID conditioned on an older past.  It matters where labels
    # rarely change per step (HAPT: H(Y_t | Y_{t-1}) ~ 0.01 bits bounds every h = 1 term).
    past_horizon: int = Field(
        1,
        ge=1,
        description="form=directed: condition on the target's past summary at t - h; 1 = Y_{t-1} "
        "(directed information); h > 1 = Y_{t-h} (and its dwell bin at t-h), a conditioned PID on an "
        "older past, not DI(tau); needs windows longer than h",
    )
    max_samples: int = Field(200_000, ge=100)
    solver_tol: float = Field(1e-7, gt=0.0, le=1e-2)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    batch: BatchEstimatorConfig = BatchEstimatorConfig()
    # Which windows share one RUS table (timoe.interactions.contexts): `dataset` is the paper's
    # single table; `subject` one per training subject; `context` one per cluster of label-free
    # window features, so a test window is assigned from its inputs alone.
    scope: Literal["dataset", "subject", "context"] = "context"
    n_contexts: int = Field(4, ge=1, le=64, description="clusters for scope=context")
    min_context_windows: int = Field(
        50,
        ge=1,
        description="scope=context: K is reduced until every cluster keeps this many training "
        "windows; scope=subject: a smaller training subject is an error",
    )
    min_context_samples: int = Field(
        1000,
        ge=1,
        description="fewest (X1, X2, Y) samples a context's RUS at one lag may rest on; fewer is an error",
    )

    @field_validator("lags")
    @classmethod
    def _lags(cls, v: list[int]) -> list[int]:
        if not v or any(t < 0 for t in v) or len(set(v)) != len(v):
            raise ValueError("lags must be distinct non-negative integers, at least one")
        return sorted(v)


# ---------------------------------------------------------------- model
class RouterConfig(_Strict):
    token_dim: int = Field(64, ge=1)
    gru_dim: int = Field(64, ge=1)
    kv_dim: int = Field(32, ge=1)


class LossConfig(_Strict):
    """Auxiliary routing losses (timoe.models.losses). Defaults, and why:

    - relative: thresholds on R, U, S as fractions of the pair's total I(X1,X2;Y) (the authors'
      later code does the same), so the estimator's scale in bits does not decide which losses act.
    - tau_*: on HAPT's training split R, U_acc, U_gyro, S are about 0.19, 0.45, 0.32, 0.04 of the
      total at the dataset level and spread widely across contexts; 0.2 / 0.25 / 0.2 put the cut
      inside that spread rather than above or below every cell.
    - weighting soft: a cell's weight rises smoothly around tau (width soft_width), so a context
      near the cut does not flip a loss on or off.
    - probs tempered at temperature 1: the interaction losses see standardised logits, so a router
      cannot satisfy them by flattening its logits (method.md section 5).
    - lambda_r/u/s 0.3: timoe's JSD (of the probabilities themselves) is 19-64x the reference's,
      whose PAMAP2 lambda = 10 is about 0.2-0.5 here.
    - lambda_z 1e-3: ST-MoE's router z-loss default.
    """

    relative: bool = True
    tau_r: float = Field(0.2, ge=0.0)
    tau_u: float = Field(0.25, ge=0.0)
    tau_s: float = Field(0.2, ge=0.0)
    weighting: Literal["hard", "soft"] = "soft"
    soft_width: float = Field(0.05, gt=0.0, le=10.0)
    probs: Literal["router", "tempered"] = "tempered"
    temperature: float = Field(1.0, gt=0.0, le=100.0)
    lambda_r: float = Field(0.3, ge=0.0, allow_inf_nan=False)
    lambda_u: float = Field(0.3, ge=0.0, allow_inf_nan=False)
    lambda_s: float = Field(0.3, ge=0.0, allow_inf_nan=False)
    lambda_load: float = Field(0.02, ge=0.0, allow_inf_nan=False)
    lambda_z: float = Field(1e-3, ge=0.0, allow_inf_nan=False)


def _no_per_dataset(value: Any) -> Any:
    # `per_dataset: null` in an override file drops every data set's own settings (a merge of
    # `{}` would keep them), e.g. for a smoke run whose budget must hold for every data set.
    return {} if value is None else value


# data set -> {key: value} of one section (model.per_dataset, train.per_dataset); null reads as {}
PerDataset = Annotated[dict[str, dict[str, Any]], BeforeValidator(_no_per_dataset)]


TokenizerKind = Literal["linear", "conv"]  # timoe.models.tokenizers builds each


class ModelConfig(_Strict):
    names: list[str] = Field(default_factory=lambda: ["transformer"])
    patch_size: int = Field(4, ge=1, le=256, description="consecutive steps merged into one token")
    tokenizer: TokenizerKind = Field(
        "linear",
        description="per-modality embedding of a patch: linear projection, or a small causal 1D CNN "
        "with a strided conv to one token per patch (timoe.models.tokenizers)",
    )
    d_model: int = Field(64, ge=4, le=4096)
    n_heads: int = Field(4, ge=1, le=64)
    d_ff: int = Field(128, ge=4, le=16384)
    encoder_layers: int = Field(1, ge=0, le=24)
    n_layers: int = Field(4, ge=1, le=48)
    moe_layers: list[int] = Field(default_factory=lambda: [0, 2])
    n_experts: int = Field(8, ge=1, le=256)
    n_synergy_experts: int = Field(2, ge=0, le=256)
    top_k: int = Field(2, ge=1, le=256)
    dropout: float = Field(0.1, ge=0.0, lt=1.0)
    rus_mapping: Literal["hold", "interp", "segments", "end"] = Field(
        "end",
        description="how RUS over lags become per-step priors (see timoe.models.rus); 'end' for "
        "one label per window at its last step",
    )
    router: RouterConfig = RouterConfig()
    losses: LossConfig = LossConfig()
    per_dataset: PerDataset = Field(
        default_factory=dict,
        description="data set -> {key: value} replacing this section's keys for that data set "
        "(Params.for_dataset); checked against the section's schema by Params",
    )

    @field_validator("names")
    @classmethod
    def _known_models(cls, v: list[str]) -> list[str]:
        unknown = [n for n in v if n not in MODEL_NAMES]
        if unknown or not v:
            raise ValueError(f"unknown model name(s) {unknown}; known: {list(MODEL_NAMES)}")
        return v

    @field_validator("moe_layers")
    @classmethod
    def _unique_layers(cls, v: list[int]) -> list[int]:
        # a layer listed twice would be built once and counted twice in diagnostics
        if len(set(v)) != len(v):
            raise ValueError(f"layer(s) {sorted({i for i in v if v.count(i) > 1})} listed twice")
        return v

    @model_validator(mode="after")
    def _shapes(self) -> ModelConfig:
        if self.d_model % self.n_heads:
            raise ValueError("d_model must be divisible by n_heads")
        if any(i < 0 or i >= self.n_layers for i in self.moe_layers):
            raise ValueError("moe_layers must index layers in 0..n_layers-1")
        if self.top_k > self.n_experts:
            raise ValueError("top_k exceeds n_experts")
        if self.n_synergy_experts > self.n_experts:
            raise ValueError("n_synergy_experts exceeds n_experts")
        return self


# ---------------------------------------------------------------- train
class AugmentConfig(_Strict):
    """Training-time augmentation of the (standardised) input windows; 0 disables a part.

    Drawn from the epoch's generator, so a resumed run augments exactly as an uninterrupted one.
    """

    scale: float = Field(0.0, ge=0.0, le=1.0, description="std of a per-window, per-channel gain around 1")
    jitter: float = Field(0.0, ge=0.0, le=1.0, description="std of additive Gaussian noise per sample")
    shift: int = Field(0, ge=0, description="largest circular time shift, in raw steps")


class TrainConfig(_Strict):
    seeds: list[int] = Field(default_factory=lambda: [0, 1, 2])
    epochs: int = Field(30, ge=1, le=10_000)
    batch_size: int = Field(64, ge=1, le=65_536)
    lr: float = Field(1e-3, gt=0.0, le=1.0)
    weight_decay: float = Field(1e-5, ge=0.0, le=1.0)
    grad_clip: float = Field(1.0, gt=0.0)
    warmup_epochs: int = Field(1, ge=0)
    patience: int = Field(8, ge=1)
    max_train_windows: int | None = Field(None, ge=1, description="subsample training windows")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    # Float reductions split differently across threads, so the thread count is part of what
    # makes a CPU run reproducible; 0 keeps torch's (machine-dependent) default.
    num_threads: int = Field(1, ge=0, le=256, description="torch CPU threads per train job")
    use_sweep: bool = Field(True, description="start from the sweep's best params")
    label_smoothing: float = Field(0.0, ge=0.0, lt=1.0)
    augment: AugmentConfig = AugmentConfig()
    select: Literal["best", "last"] = Field(
        "best",
        description="the weights a train job keeps: the epoch best on validation, or the last one "
        "(sweep trials always select on sweep.metric)",
    )
    per_dataset: PerDataset = Field(
        default_factory=dict, description="as model.per_dataset, for this section's keys"
    )

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, v: list[int]) -> list[int]:
        if not v or len(set(v)) != len(v) or any(s < 0 or s >= SEED_LIMIT for s in v):
            raise ValueError(f"seeds must be distinct integers in 0..{SEED_LIMIT - 1}, at least one")
        return v


# Sections whose keys a data set may set for itself (`per_dataset`), and the keys that stay one
# value for the whole study: which models and seeds run, and how a job is placed and started.
PER_DATASET_SECTIONS = ("model", "train")
_PER_DATASET_APPLIED = "per_dataset_applied"  # validation context of Params.for_dataset
PER_DATASET_FIXED: dict[str, tuple[str, ...]] = {
    "model": ("names", "per_dataset"),
    "train": ("seeds", "device", "num_threads", "use_sweep", "per_dataset"),
}


# ---------------------------------------------------------------- sweep
class SearchParam(_Strict):
    type: Literal["float", "int", "categorical"]
    low: float | None = None
    high: float | None = None
    log: bool = False
    choices: list[Any] | None = None

    @model_validator(mode="after")
    def _bounds(self) -> SearchParam:
        if self.type == "categorical":
            if not self.choices:
                raise ValueError("categorical parameter needs choices")
        elif self.low is None or self.high is None or self.low > self.high:
            raise ValueError("numeric parameter needs low <= high")
        elif self.log and self.low <= 0:
            raise ValueError("log scale needs low > 0")
        elif self.type == "int" and not (float(self.low).is_integer() and float(self.high).is_integer()):
            # optuna would truncate 8.5 to 8 silently
            raise ValueError(f"int parameter needs whole-number bounds, got {self.low}..{self.high}")
        return self

    def values_to_check(self) -> list[Any]:
        """The values a trial may draw that decide whether every draw is valid.

        Categorical: each choice. Float: both bounds (a float field's constraints are intervals).
        Int: both bounds and every value of the range up to INT_VALUES_CHECKED of them. The target
        fields' constraints are intervals (decided by the bounds) or, like d_model divisible by
        n_heads (at most 64), repeat with a period far below that count, so a range too long to walk
        still has each of its residues checked.
        """
        if self.type == "categorical":
            return list(self.choices or [])
        if self.type == "float":
            return [self.low, self.high]
        low, high = int(self.low or 0), int(self.high or 0)
        walked = range(low, min(high, low + INT_VALUES_CHECKED - 1) + 1)
        return list(dict.fromkeys([low, high, *walked]))


INT_VALUES_CHECKED = 1024


SWEEPABLE_KEYS = (
    "train.lr",
    "train.weight_decay",
    "train.batch_size",
    "train.label_smoothing",
    "train.augment.scale",
    "train.augment.jitter",
    "train.augment.shift",
    "model.d_model",
    "model.dropout",
    "model.n_layers",
    "model.d_ff",
    "model.top_k",
    "model.losses.lambda_r",
    "model.losses.lambda_u",
    "model.losses.lambda_s",
    "model.losses.lambda_load",
)


def _default_space() -> dict[str, dict[str, SearchParam]]:
    base = {
        "train.lr": SearchParam(type="float", low=1e-4, high=3e-3, log=True),
        "model.dropout": SearchParam(type="float", low=0.0, high=0.3),
    }
    return {"transformer": base}


class SweepConfig(_Strict):
    n_trials: int = Field(12, ge=1, le=100_000)
    epochs: int = Field(5, ge=1, le=10_000)
    n_workers: int = Field(1, ge=1, le=256)
    seed: int = Field(0, ge=0, lt=SEED_LIMIT)
    metric: Literal["val_accuracy", "val_macro_f1"] = "val_accuracy"
    storage: str | None = Field(None, description="SQLAlchemy URL; None: a journal file per study")
    pruning: bool = True
    pruner_startup_trials: int = Field(5, ge=0, description="trials before the median pruner may prune")
    pruner_warmup_epochs: int = Field(1, ge=0, description="epochs of a trial before it may be pruned")
    heartbeat_s: int = Field(30, ge=1, description="RDB storage heartbeat; a silent worker's trial fails")
    slurm_array: int = Field(0, ge=0, le=1000, description="Slurm array workers the driver submits (0: none)")
    space: dict[str, dict[str, SearchParam]] = Field(default_factory=_default_space)

    @field_validator("space")
    @classmethod
    def _space_keys(cls, v: dict[str, dict[str, SearchParam]]) -> dict[str, dict[str, SearchParam]]:
        for model, params in v.items():
            if model not in MODEL_NAMES:
                raise ValueError(f"search space for unknown model {model!r}")
            if not is_swept(model):
                raise ValueError(f"{model!r} is a reference model with nothing to sweep; drop its space")
            bad = [k for k in params if k not in SWEEPABLE_KEYS]
            if bad:
                raise ValueError(f"unsweepable key(s) {bad} for {model}; allowed: {list(SWEEPABLE_KEYS)}")
        return v


# ---------------------------------------------------------------- checks
# The synthetic processes with known RUS (timoe.interactions.synthetic.PROCESSES; a test keeps both equal).
ProcessName = Literal["unique_lag2", "synergy_lag1", "redundancy_lag3", "independent", "persistent_lead1"]


class EstimatorCheckConfig(_Strict):
    """The multi-scale estimator against per-lag BATCH on processes whose RUS is known (the check
    stage; timoe.interactions.estimator_check). Defaults: benchmarks/bench_multiscale.py's sizes,
    about 1 min on one core."""

    processes: list[ProcessName] = Field(
        default_factory=lambda: ["synergy_lag1", "unique_lag2", "redundancy_lag3"], min_length=1
    )
    n_lags: int = Field(8, ge=1, le=64, description="lags 0 .. n_lags-1")
    n_windows: int = Field(60, ge=2, le=100_000)
    window: int = Field(64, ge=2, le=100_000)
    # 1: the paper's tau-fold saving (what the claim reads); n_lags: the same compute as per-lag
    steps_factors: list[int] = Field(default_factory=lambda: [1, 8], min_length=1)
    seed: int = Field(0, ge=0, lt=SEED_LIMIT)
    batch: BatchEstimatorConfig = BatchEstimatorConfig(discrim_epochs=10, align_epochs=5, sinkhorn_tol=1e-3)

    @field_validator("steps_factors")
    @classmethod
    def _factors(cls, v: list[int]) -> list[int]:
        if any(f < 1 for f in v) or len(set(v)) != len(v):
            raise ValueError("steps_factors must be distinct integers >= 1")
        return sorted(v)

    @model_validator(mode="after")
    def _lags_fit(self) -> EstimatorCheckConfig:
        if self.n_lags >= self.window:
            raise ValueError(f"n_lags {self.n_lags} leaves no sample in windows of {self.window} steps")
        return self


class ChecksConfig(_Strict):
    estimator: EstimatorCheckConfig = EstimatorCheckConfig()


# ---------------------------------------------------------------- evaluate / tracking
class EvaluateConfig(_Strict):
    metrics: list[Literal["accuracy", "macro_f1"]] = Field(default_factory=lambda: ["accuracy", "macro_f1"])
    batch_size: int = Field(256, ge=1)
    # The claims' statistics (timoe.evaluation.claims): the smallest effect of interest in
    # percentage points (a "beats" claim is REFUTED when its gain is shown below it), the power
    # the minimum detectable effect is computed at, and the seeded bootstrap's resamples.
    smallest_effect: float = Field(1.0, gt=0, description="SESOI for accuracy claims, pp")
    power: float = Field(0.8, gt=0, lt=1)
    bootstrap_resamples: int = Field(10_000, ge=100)
    bootstrap_seed: int = Field(0, ge=0)


# The MLflow stores timoe's jobs can share: a SQLite file (tracking.store_lock orders its writers),
# a tracking server, or a database server MLflow supports. Anything else would pass here and fail
# only in the pipeline's onstart, inside MLflow.
_DB_SCHEMES = ("postgresql", "mysql", "mssql")
_URI_FORMS = "sqlite:///PATH, http(s)://HOST[:PORT], postgresql://..., mysql://... or mssql://..."


def _tracking_uri_problem(uri: str) -> str | None:
    """Why MLflow could not open `uri` as timoe's tracking store, or None."""
    scheme, sep, rest = uri.partition("://")
    if not sep:
        return f"{uri!r} has no scheme; use {_URI_FORMS}"
    if scheme == "sqlite":
        path = rest.removeprefix("/").split("?", 1)[0]
        if not rest.startswith("/") or not path or path == ":memory:":
            return f"{uri!r} names no database file; use sqlite:///relative/path.db or sqlite:////abs/path.db"
        folder = Path(path).parent
        while not folder.exists() and folder != folder.parent:
            folder = folder.parent  # made by init_store: the nearest existing folder must take it
        if not folder.is_dir() or not os.access(folder, os.W_OK | os.X_OK):
            return f"{uri!r}: the database's folder cannot be made under {str(folder)!r}"
        return None
    if scheme in ("http", "https"):
        return None if urlsplit(uri).hostname else f"{uri!r} names no host"
    if scheme.split("+", 1)[0] in _DB_SCHEMES:
        return None if rest else f"{uri!r} names no database"
    return f"unknown scheme {scheme!r} in {uri!r}; use {_URI_FORMS}"


class TrackingConfig(_Strict):
    uri: str = Field("sqlite:///mlflow.db", description="MLflow tracking URI")
    experiment_prefix: str = Field("timoe", min_length=1)
    dvc_remote: str = Field(".dvc-remote", description="path or URL of the default DVC remote")
    dvc_commit: bool = Field(True, description="dvc commit after a successful snakemake run")

    @field_validator("uri")
    @classmethod
    def _known_store(cls, v: str) -> str:
        problem = _tracking_uri_problem(v)
        if problem:
            raise ValueError(problem)
        return v


class Params(_Strict):
    data: DataConfig = DataConfig()
    rus: RusConfig = RusConfig()
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    sweep: SweepConfig = SweepConfig()
    checks: ChecksConfig = ChecksConfig()
    evaluate: EvaluateConfig = EvaluateConfig()
    tracking: TrackingConfig = TrackingConfig()

    @model_validator(mode="after")
    def _per_dataset_fits(self, info: ValidationInfo) -> Params:
        # Each data set's own settings must pass every check the shared ones pass (its window
        # included), so a bad per-data-set value fails here, before any job, with its key named.
        if info.context and info.context.get(_PER_DATASET_APPLIED):
            return self  # validating for_dataset's result: its checks ran on the shared params
        for section_name in PER_DATASET_SECTIONS:
            for name, values in getattr(self, section_name).per_dataset.items():
                where = f"{section_name}.per_dataset.{name}"
                if name not in DATASET_NAMES and name not in self.data.custom:
                    raise ValueError(
                        f"{where}: {name!r} is neither a built-in data set {list(DATASET_NAMES)} "
                        "nor a key of data.custom"
                    )
                fixed = sorted(set(values) & set(PER_DATASET_FIXED[section_name]))
                if fixed:
                    raise ValueError(f"{where}: {fixed} cannot differ between data sets")
        for name in self.data.datasets:
            problem = self._per_dataset_problem(name)
            if problem:
                raise ValueError(f"per_dataset settings of {name!r} are invalid: {problem}")
        return self

    def _per_dataset_problem(self, name: str) -> str | None:
        try:
            self._apply_per_dataset(name)
        except ValidationError as err:
            return _one_line(err)
        return None

    def for_dataset(self, name: str) -> Params:
        """These params as data set `name` runs them: model.per_dataset[name] and
        train.per_dataset[name] replace the sections' shared keys (the per_dataset maps stay, so
        applying it again changes nothing), and data.datasets narrows to `name`, so the result,
        which a run records as its params, validates on its own (a patch that fits only this data
        set's window). Without settings of its own, the params themselves. ConfigError when the
        result is invalid (a data set not listed in data.datasets was not checked at validation)."""
        try:
            return self._apply_per_dataset(name)
        except ValidationError as err:
            raise ConfigError(f"invalid params: per_dataset settings of {name!r}: {_one_line(err)}") from None

    def _apply_per_dataset(self, name: str) -> Params:
        raw = self.model_dump()
        changed = False
        for section_name in PER_DATASET_SECTIONS:
            merged = deep_merge(raw[section_name], raw[section_name]["per_dataset"].get(name) or {})
            changed = changed or merged != raw[section_name]
            raw[section_name] = merged
        if not changed:
            return self
        if name in raw["data"]["datasets"]:
            raw["data"]["datasets"] = [name]
        return Params.model_validate(raw, context={_PER_DATASET_APPLIED: name})

    @model_validator(mode="after")
    def _fits_the_windows(self, info: ValidationInfo) -> Params:
        # A patch longer than the window leaves no token (NaN loss); a lag as long as the window
        # leaves its RUS row with no sample (R = U = S = 0, reported as a finding). Params of one
        # data set (for_dataset) are checked against that data set's window only.
        only = info.context.get(_PER_DATASET_APPLIED) if info.context else None
        for key, window in _windows(self.data, only).items():
            if self.model.patch_size > window:
                raise ValueError(f"model.patch_size {self.model.patch_size} exceeds {key} ({window} steps)")
            long = [k for k in self.rus.lags if k >= window]
            if long:
                raise ValueError(f"rus.lags {long} are not shorter than {key} ({window} steps)")
            if self.rus.form == "directed" and self.rus.past_horizon >= window:
                raise ValueError(
                    f"rus.past_horizon {self.rus.past_horizon} is not shorter than {key} ({window} steps)"
                )
        return self

    @model_validator(mode="after")
    def _lag0_is_estimated(self) -> Params:
        if "timoe-lag0" in self.model.names and 0 not in self.rus.lags:
            raise ValueError(
                f"model.names lists timoe-lag0, whose prior is lag 0's, but rus.lags {self.rus.lags} lacks 0"
            )
        return self

    @model_validator(mode="after")
    def _sweep_values_fit(self) -> Params:
        # Checked here, not when a trial draws the value: then the error names the sweep key,
        # not the field it overrides, and comes before any trial has run.
        for model, space in self.sweep.space.items():
            for key, spec in space.items():
                problem = _sweep_problem(self, key, spec)
                if problem:
                    raise ValueError(f"sweep.space.{model}.{key}: {problem}")
        return self


def _windows(data: DataConfig, only: str | None = None) -> dict[str, int]:
    """Window length of each listed data set (or of `only`) whose window the schema knows, by its
    key path."""
    known = {
        "hapt": ("data.hapt.window", data.hapt.window),
        "basicmotions": ("the BasicMotions window", BASICMOTIONS_STEPS),
        "synthetic-regimes": ("data.synthetic_regimes.window", data.synthetic_regimes.window),
        "pamap2": ("data.pamap2.window", data.pamap2.window),
        "wesad": ("data.wesad.window", data.wesad.window),
        "opportunity": ("data.opportunity.window", data.opportunity.window),
    }
    # a bring-your-own data set's window is n_timesteps in its dataset.json, not in params: the
    # train stage refuses a model.patch_size longer than the prepared windows (training/build.py),
    # the quantify stage a lag with too few samples (stages/quantify.py, rus.min_context_samples)
    return dict(known[d] for d in data.datasets if d in known and only in (None, d))


def _sweep_problem(params: Params, key: str, spec: SearchParam) -> str | None:
    """Why a sweep parameter can draw a value its target field rejects, or None."""
    parent_path, leaf = key.rsplit(".", 1)
    parent = section(params, parent_path)
    if spec.type == "float" and type(parent).model_fields[leaf].annotation is int:
        return f"type float draws fractions but {key} is an integer; use type int"
    for value in spec.values_to_check():
        try:
            type(parent).model_validate({**parent.model_dump(), leaf: value})
        except ValidationError as err:
            detail = "; ".join(e["msg"].removeprefix("Value error, ") for e in err.errors())
            if spec.type == "categorical":
                return f"choice {value!r} is invalid for {key}: {detail}"
            if value in (spec.low, spec.high):
                return f"bound {value!r} is invalid for {key}: {detail}"
            return (
                f"value {value!r} of the range {spec.low:g}..{spec.high:g} is invalid for {key}: {detail}; "
                "list the valid values as a categorical's choices"
            )
    return None


def _one_line(err: ValidationError) -> str:
    """A validation error's messages on one line, each after its key path."""
    return "; ".join(
        f"{'.'.join(str(p) for p in e['loc'])}: {e['msg'].removeprefix('Value error, ')}"
        if e["loc"]
        else e["msg"].removeprefix("Value error, ")
        for e in err.errors()
    )


def _format_errors(err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        path = ".".join(str(p) for p in e["loc"])
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown key"
        # cross-section checks run on the whole params and name their key paths themselves
        lines.append(f"  {path}: {msg}" if path else f"  {msg.removeprefix('Value error, ')}")
    return "invalid params:\n" + "\n".join(lines)


def validate(raw: dict[str, Any]) -> Params:
    """Validate a raw params mapping (e.g. Snakemake's merged `config`)."""
    if not isinstance(raw, dict):
        raise ConfigError("invalid params: the top level must be a mapping of stage groups")
    try:
        return Params.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(_format_errors(err)) from None


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Merge override into base recursively, the way Snakemake merges --configfile files."""
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


class _DuplicateKey(yaml.YAMLError):
    def __init__(self, key: Any, line: int) -> None:
        super().__init__(f"duplicate key {key!r} (line {line})")


def _unique_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if isinstance(key, str | int | float | bool) and key != "<<":
            if key in seen:
                raise _DuplicateKey(key, key_node.start_mark.line + 1)
            seen.add(key)
    return loader.construct_mapping(node, deep)


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping (PyYAML keeps the last silently,
    so an edit further down a file would quietly undo one above it)."""


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _unique_mapping)


# Params files are data. Snakemake reads a --configfile (and a profile) with YTE, which evaluates
# the Python expressions of a file holding `__use_yte__: true`, and with PyYAML's FullLoader, which
# builds Python objects from `!!python/...` tags; both are refused here, for every `timoe` command
# and before Snakemake opens a file through `timoe study`.
YTE_KEY = "__use_yte__"
# The tags of YAML's core schema; any other explicit tag (`!!python/...`, `!custom`) is refused.
_CORE_TYPES = ("str", "int", "float", "bool", "null", "seq", "map")
_DATA_TAGS = frozenset(f"tag:yaml.org,2002:{t}" for t in _CORE_TYPES)


def _code_tag(text: str) -> tuple[str, int] | None:
    """The first explicit tag outside YAML's core schema in `text`, with its line, or None."""
    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        tag = getattr(event, "tag", None)
        if tag is not None and tag not in _DATA_TAGS and tag != "!":  # "!": a non-specific tag
            return tag, event.start_mark.line + 1
    return None


def parse_params_text(text: str, source: str) -> dict[str, Any]:
    """The mapping a params file holds, read as data only (`source` names it in errors)."""
    try:
        code_tag = _code_tag(text)
        if code_tag:
            raise ConfigError(
                f"params file {source}: YAML tag {code_tag[0]!r} (line {code_tag[1]}) is refused: "
                "params files hold plain data, and a tag can make a loader build Python objects"
            )
        data = yaml.load(text, Loader=_UniqueKeyLoader) or {}  # a SafeLoader subclass
    except _DuplicateKey as err:
        raise ConfigError(f"params file {source}: {err}") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"params file {source} is not valid YAML: {err}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"params file {source} must hold a mapping at the top level")
    if YTE_KEY in data:
        raise ConfigError(
            f"params file {source}: {YTE_KEY!r} is refused: Snakemake would run this file as a YTE "
            "template, i.e. as Python code; params files hold plain data"
        )
    return data


def read_yaml(path: Path) -> dict[str, Any]:
    if not path.exists():
        raise ConfigError(f"params file not found: {path}")
    return parse_params_text(path.read_text(), str(path))


def load_params(*paths: Path) -> Params:
    """Read params.yaml and any override files (later ones win) and validate."""
    merged: dict[str, Any] = {}
    for p in paths:
        merged = deep_merge(merged, read_yaml(Path(p)))
    return validate(merged)


def section(params: Params, dotted: str) -> Any:
    """Return a sub-config by dotted path, e.g. 'train' or 'model.losses'."""
    node: Any = params
    for part in dotted.split("."):
        node = getattr(node, part)
    return node
