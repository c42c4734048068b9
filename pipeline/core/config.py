"""Configuration: one TOML file, one typed dataclass per section.

Unknown keys and wrong types are errors that name the key. The effective configuration
(defaults, file and command-line overrides) is saved into the run directory as
``config.toml``, so a run says exactly what it did.
"""

from __future__ import annotations

import dataclasses
import math
import sys
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pipeline.core.boards import DEFAULT_BOARD
from pipeline.core.errors import PipelineError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


@dataclass
class DataConfig:
    dataset: str = "motion"
    """`motion`, `digits`, or a path: an Edge Impulse export folder, a folder of
    acquisition files, a `.npz` or a `.csv` file."""
    motion_seed: int = 0
    """Seed of the embedded motion dataset itself (fixed, unlike the run's `seed`)."""
    motion_subjects: int = 12
    motion_sessions: int = 3
    rate_hz: float | Literal["auto"] = "auto"
    """Sampling rate every time series is brought to, in Hz. "auto": the most common rate
    among the samples; samples at another rate are resampled (``scipy.signal.resample_poly``,
    anti-aliased), counted and reported."""


@dataclass
class SplitConfig:
    strategy: Literal["auto", "group", "time", "random"] = "auto"
    test_size: float = 0.2
    val_size: float = 0.2
    folds: int = 4
    window_ms: float | Literal["auto"] = "auto"
    """Window length. "auto": chosen from the recordings (see ``pipeline.data.windows.choose_window``);
    what it chose is in the audit, the report and the run's config.toml. A number wins."""
    stride_ms: float | Literal["auto"] = "auto"
    pad: Literal["zero", "drop"] = "zero"
    """Samples shorter than a window (but at least half of it): "zero" pads them at the end
    (Edge Impulse's "zero-pad data"), "drop" skips them; both are counted and reported."""
    gap_s: float = 0.0


@dataclass
class AuditConfig:
    near_duplicate_ratio: float = 0.1
    """A validation/test window is a near-copy when its nearest window of another split
    reproduces its own variation to within this share (see ``pipeline.audit.stage.check_near_duplicates``)."""
    low_information_rms: float = 0.1
    """A window whose variation (RMS about its own mean, in units of the training data's
    spread) is below this is near-constant: set apart from the near-copy rule, reported per class."""
    outlier_z: float = 8.0
    permutation_max_above_chance: float = 0.15
    split_optimism_warn: float = 0.05
    label_issue_margin: float = 0.5
    """A recording is a label issue when another class's mean out-of-fold probability
    exceeds its own label's by more than this."""
    confounding_warn: float = 0.5
    """group_label_confounding warns at this chance-corrected purity (0 chance, 1 determined)."""
    identifier_max_above_chance: float = 0.2
    """identifier_label warns when order, id or time alone scores this far above chance."""
    permutations: int = 3
    """Label shuffles averaged by permutation_test."""
    max_distance_queries: int = 4000
    """Windows compared by near_duplicates (a seeded sample beyond this; cost grows as n^2)."""


@dataclass
class TrainConfig:
    epochs: int = 80
    """Epochs of the final fit (early stopping on validation loss restores the best)."""
    batch_size: int = 32
    learning_rate: float = 3e-4
    lr_schedule: Literal["constant", "cosine"] = "constant"
    patience: int = 10
    width: int = 6
    """Kernels in the first conv block; each further block doubles them."""
    depth: int = 3
    kernel_size: int = 7
    dropout: float = 0.1
    l2: float = 1e-4
    separable: bool = False
    """Depthwise-separable convolutions after the first block."""
    trials: int = 10
    """Random-search budget: trial 0 is the configured model, the rest random draws."""
    search_epochs: int = 40
    search_lr_min: float = 3e-4
    search_lr_max: float = 3e-3
    search_width_min: int = 4
    search_width_max: int = 12
    search_depth_min: int = 1
    search_depth_max: int = 3
    search_kernel_min: int = 3
    search_kernel_max: int = 9
    search_dropout_max: float = 0.3
    search_l2_min: float = 1e-5
    search_l2_max: float = 1e-3
    max_params: int = 8000
    """Search draws with more parameters than this are redrawn (the model goes on an MCU)."""
    overfit_batch: int = 16
    overfit_steps: int = 150
    overfit_learning_rate: float = 1e-2
    overfit_max_loss: float = 0.05
    init_loss_tolerance: float = 0.25
    """Allowed gap (nats) between the loss at init and the entropy of the class prior."""
    logo_folds: int = 5
    """Leave-one-group-out of the chosen configuration on the training side (train +
    validation), when it has 3 or more subjects/devices: one fit per group up to this many
    groups, else this many folds of whole groups. 0: off. Each fold costs one refit."""
    reproducibility_check: bool = True
    """Train the best configuration twice from one seed; the metrics must be identical."""
    search_engine: Literal["ray", "sequential"] = "ray"
    """Where the search's trials run: Ray Tune (embedded, or the cluster of ray_address), or
    one after another in this process."""
    ray_address: str = ""
    """Ray cluster for the search ("host:port", "ray://host:port", "auto"); empty: the
    RAY_ADDRESS environment variable if set, else an embedded local Ray on this machine's cores."""
    max_ram_kb: float = 0.0
    """Chosen model: the most accurate trial whose TFLM arena (as exported) is within this
    many KB; 0: no target (EON Tuner's RAM target)."""
    max_latency_ms: float = 0.0
    """Chosen model: the most accurate trial whose estimated latency on [quantize] board is
    within this; 0: no target."""
    seeds: int = 3
    """Refits of the chosen configuration (seed, seed + 1, ...): the spread of its validation
    score is reported beside the search's figure."""


@dataclass
class QuantizeConfig:
    board: str = DEFAULT_BOARD
    calibration_windows: int = 0
    """Training windows the int8 ranges are calibrated on; 0: all of them. A smaller number
    draws that many stratified by class and adds the windows holding each class's extremes
    of each channel. All by default: on a phone-accelerometer export, 300 windows left
    12% of validation windows outside the int8 input range (issue 12)."""
    calibration_outlier_z: float = 0.0
    """Training windows holding a value beyond this robust z-score (scored as the audit
    scores outliers) are left out of calibration; 0 (the default) keeps them all. Off by
    default: on sensor data the "outliers" are the peaks of whole classes (falls, shakes),
    and leaving them out clamps those classes on the device."""
    input_handling: Literal["auto", "graph", "device", "device_trim"] = "auto"
    """Where the input normalization runs. "graph": inside the int8 model; "device": a
    float step on the device before the int8 model (constants in int8.tflite's metadata);
    "device_trim": that, with activation ranges calibrated without the 10% of training windows
    whose float logits are the most extreme. "auto" tries them in that order and keeps the first that meets every gate."""
    accept_drop: bool = False
    """Export a model that missed an accuracy gate (balanced-accuracy drop or float/int8
    agreement) anyway; recorded as an override in every report (`tinyml quantize --accept-drop`)."""
    per_channel: bool = True
    max_balanced_accuracy_drop: float = 0.01
    min_float_int8_agreement: float = 0.98
    min_tflm_agreement: float = 0.995
    """Top-1 agreement of TFLM with LiteRT's reference kernels (the arithmetic TFLM implements).
    Their difference in LSB is reported per layer, not gated: the two are not bit-identical
    in places (tensorflow/tflite-micro issues 3130 and 2629)."""
    arena_margin: float = 0.2
    """Margin added to the arena measured on the host before budgeting and exporting."""
    ram_reserve: float = 0.25
    """Share of the board's RAM kept for the firmware itself (stack, serial, RTOS)."""
    flash_reserve: float = 0.4
    """Share of the board's flash kept for the firmware itself (RTOS, TFLM kernels, sketch)."""
    flash_budget_bytes: int = 0
    """Flash the model may use, in bytes; 0: the board's flash minus flash_reserve."""
    ram_budget_bytes: int = 0
    """RAM the tensor arena may use, in bytes; 0: the board's RAM minus ram_reserve."""


@dataclass
class DeviceConfig:
    port: str = "emu"
    baud: int = 115200
    chunk_size: int = 32
    throttle: bool = False
    timeout_s: float = 5.0
    # What runs the model in the board's sketch: "compiled" (the model as C, byte-identical
    # to TFLM by test, no library, less RAM) or "tflm" (the interpreter library).
    engine: str = "compiled"


ENGINES = ("compiled", "tflm")


@dataclass
class Config:
    seed: int = 0
    data: DataConfig = field(default_factory=DataConfig)
    split: SplitConfig = field(default_factory=SplitConfig)
    audit: AuditConfig = field(default_factory=AuditConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    quantize: QuantizeConfig = field(default_factory=QuantizeConfig)
    device: DeviceConfig = field(default_factory=DeviceConfig)


SECTIONS = {name: tp for name, tp in typing.get_type_hints(Config).items() if name != "seed"}


def _type_name(tp: Any) -> str:
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if typing.get_origin(tp) is Literal:
        return " or ".join(repr(a) for a in typing.get_args(tp))
    return getattr(tp, "__name__", str(tp))


def _check_value(where: str, tp: Any, value: Any) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        # A number or a keyword ("auto"): the first alternative that accepts the value.
        for alt in typing.get_args(tp):
            try:
                return _check_value(where, alt, value)
            except PipelineError:
                continue
        raise PipelineError(f"{where}: expected {_type_name(tp)}, got {type(value).__name__} {value!r}")
    if origin is Literal:
        if value not in typing.get_args(tp):
            raise PipelineError(f"{where}: expected {_type_name(tp)}, got {value!r}")
        return value
    if tp is bool:
        ok = isinstance(value, bool)
    elif tp is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif tp is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif tp is str:
        ok = isinstance(value, str)
    else:  # pragma: no cover - every field above is one of these
        raise TypeError(tp)
    if not ok:
        raise PipelineError(
            f"{where}: expected {_type_name(tp)}, got {type(value).__name__} {value!r}"
        )
    return value


# Keys earlier versions wrote into a run's config.toml, ignored when read back so an old run
# directory still loads: (section, key) -> why it went.
RETIRED_KEYS = {
    ("quantize", "max_lsb_difference"): "LiteRT vs TFLM LSB differences are reported per layer, not gated",
}


def _section_from_table(name: str, cls: type, table: Any, source: str):
    where = f"{source}: [{name}]"
    if not isinstance(table, dict):
        raise PipelineError(f"{where}: expected a table, got {type(table).__name__}")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    values = {}
    for key, value in table.items():
        if (name, key) in RETIRED_KEYS:
            continue
        if key not in known:
            raise PipelineError(
                f"{where} unknown key {key!r}", hint=f"known keys: {', '.join(sorted(known))}"
            )
        values[key] = _check_value(f"{where} {key}", hints[key], value)
    return cls(**values)


def config_from_dict(raw: dict, source: str = "config") -> Config:
    kwargs = {}
    for key, value in raw.items():
        if key == "seed":
            kwargs["seed"] = _check_value(f"{source}: seed", int, value)
        elif key in SECTIONS:
            kwargs[key] = _section_from_table(key, SECTIONS[key], value, source)
        else:
            raise PipelineError(
                f"{source}: unknown section or key {key!r}",
                hint=f"known: seed, {', '.join(f'[{s}]' for s in SECTIONS)}",
            )
    cfg = Config(**kwargs)
    validate(cfg, source)
    return cfg


def validate(cfg: Config, source: str = "config") -> None:
    """Checks that span a value's range, not just its type. Every number's own interval is
    in FIELD_RANGES (check_numbers); what is left here relates fields or checks names."""
    check_numbers(cfg, source)
    s = cfg.split
    if s.test_size + s.val_size >= 0.9:
        raise PipelineError(f"{source}: [split] test_size + val_size = {s.test_size + s.val_size}: leaves too little to train on")
    from pipeline.core.boards import get_board

    try:
        get_board(cfg.quantize.board)
    except PipelineError as exc:
        raise PipelineError(f"{source}: [quantize] board: {exc.message}", hint=exc.hint) from None
    if cfg.device.engine not in ENGINES:
        raise PipelineError(f"{source}: [device] engine: expected one of {', '.join(ENGINES)}, got {cfg.device.engine!r}")
    if cfg.device.chunk_size % 16:
        raise PipelineError(
            f"{source}: [device] chunk_size: expected a positive multiple of 16, got {cfg.device.chunk_size}"
        )


# --------------------------------------------------------------------------- number ranges


@dataclass(frozen=True)
class Range:
    """An interval a number must lie in; ``*_open`` excludes that end."""

    lo: float | None = 0
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False
    what: str = ""
    """How the message names the interval, when words say it better than bounds."""

    def __contains__(self, v: float) -> bool:
        if self.lo is not None and (v < self.lo or (self.lo_open and v == self.lo)):
            return False
        return not (self.hi is not None and (v > self.hi or (self.hi_open and v == self.hi)))

    def __str__(self) -> str:
        if self.what:
            return self.what
        if self.hi is None:
            return f"a number {'>' if self.lo_open else '>='} {self.lo}"
        lo = "" if self.lo is None else f"{self.lo} {'<' if self.lo_open else '<='} "
        return f"{lo}value {'<' if self.hi_open else '<='} {self.hi}"


INT_MAX = 2**31 - 1
"""Largest int any field takes: TensorFlow and the device hold counts, sizes and seeds
in 32 bits, and a larger number is a typo, not a setting."""
DEFAULT_RANGE = Range(0)
"""Every number of this configuration is a count, size, share, rate, duration or
threshold: none is negative. A field that may be negative, or needs a tighter interval,
gets an entry in FIELD_RANGES."""
POSITIVE, AT_LEAST_1 = Range(0, lo_open=True), Range(1)
SHARE, SHARE_BELOW_1, SHARE_OPEN = Range(0, 1), Range(0, 1, hi_open=True), Range(0, 1, True, True, "a share between 0 and 1")

FIELD_RANGES: dict[str, Range] = {
    "data.motion_subjects": AT_LEAST_1,
    "data.motion_sessions": AT_LEAST_1,
    "split.test_size": SHARE_OPEN,
    "split.val_size": SHARE_OPEN,
    "split.folds": Range(2),
    "split.window_ms": POSITIVE,
    "split.stride_ms": POSITIVE,
    "data.rate_hz": POSITIVE,
    "audit.near_duplicate_ratio": SHARE,
    "audit.low_information_rms": SHARE,
    "audit.permutation_max_above_chance": SHARE,
    "audit.identifier_max_above_chance": SHARE,
    "audit.confounding_warn": SHARE,
    "audit.permutations": AT_LEAST_1,
    "audit.max_distance_queries": Range(2),
    **{f"train.{k}": AT_LEAST_1 for k in ("epochs", "batch_size", "width", "depth", "kernel_size", "trials",
                                          "search_epochs", "search_width_min", "search_depth_min",
                                          "search_kernel_min", "max_params", "overfit_batch", "seeds")},
    **{f"train.{k}": POSITIVE for k in ("learning_rate", "search_lr_min", "search_lr_max", "overfit_learning_rate")},
    "train.dropout": SHARE_BELOW_1,
    "train.search_dropout_max": SHARE_BELOW_1,
    # quantize.calibration_windows: the default range (0 means every training window)
    "quantize.max_balanced_accuracy_drop": SHARE,
    "quantize.min_float_int8_agreement": SHARE,
    "quantize.min_tflm_agreement": SHARE,
    "quantize.ram_reserve": SHARE_BELOW_1,
    "quantize.flash_reserve": SHARE_BELOW_1,
    "device.baud": AT_LEAST_1,
    "device.chunk_size": AT_LEAST_1,
    "device.timeout_s": POSITIVE,
}
"""Intervals beyond DEFAULT_RANGE, by "section.key" (a key absent here gets the default)."""


def check_numbers(cfg: Config, source: str = "config") -> None:
    """Every int and float field, whatever section declares it: finite, within its Range
    (FIELD_RANGES, else DEFAULT_RANGE), ints within INT_MAX, and ``x_min <= x_max`` for
    each such pair. Generic over the dataclasses, so a new field is checked as it lands."""
    fields = [("seed", "seed", cfg.seed)]
    for name in SECTIONS:
        section = getattr(cfg, name)
        fields += [(f"{name}.{f.name}", f"[{name}] {f.name}", getattr(section, f.name)) for f in dataclasses.fields(section)]
    for dotted, label, v in fields:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            continue  # strings, booleans, and the non-numeric choices of a union ("auto")
        if isinstance(v, float) and not math.isfinite(v):
            raise PipelineError(f"{source}: {label}: expected a finite number, got {v}")
        rng = FIELD_RANGES.get(dotted, DEFAULT_RANGE)
        if v not in rng or (isinstance(v, int) and abs(v) > INT_MAX):
            limit = f" and at most {INT_MAX}" if isinstance(v, int) and abs(v) > INT_MAX else ""
            raise PipelineError(f"{source}: {label}: expected {rng}{limit}, got {v}")
    for name in SECTIONS:
        section = getattr(cfg, name)
        for f in dataclasses.fields(section):
            if f.name.endswith("_min") and hasattr(section, f.name[:-4] + "_max"):
                lo, hi = getattr(section, f.name), getattr(section, f.name[:-4] + "_max")
                if all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in (lo, hi)) and lo > hi:
                    raise PipelineError(f"{source}: [{name}] {f.name} = {lo} is above {f.name[:-4]}_max = {hi}")


def load_config(path: str | Path | None = None, overrides: dict | None = None) -> Config:
    """Defaults, then the TOML file at ``path``, then ``overrides`` ({"seed": 1, "data.dataset": "x"})."""
    raw: dict = {}
    source = "defaults"
    if path is not None:
        path = Path(path)
        source = str(path)
        if not path.is_file():
            raise PipelineError(f"{path}: config file not found")
        try:
            raw = tomllib.loads(path.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise PipelineError(f"{path}: not valid TOML ({exc})") from exc
    for dotted, value in (overrides or {}).items():
        if value is None:
            continue
        if "." in dotted:
            section, key = dotted.split(".", 1)
            raw.setdefault(section, {})[key] = value
        else:
            raw[dotted] = value
    return config_from_dict(raw, source)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        # TOML basic strings escape the backslash, the quote and every control character.
        escaped = "".join(f"\\u{ord(c):04x}" if ord(c) < 0x20 or ord(c) == 0x7F else c
                          for c in value.replace("\\", "\\\\").replace('"', '\\"'))
        return f'"{escaped}"'
    raise TypeError(type(value))


def to_toml(cfg: Config, comments: dict[str, str] | None = None) -> str:
    """The config as TOML; ``comments`` ({"split.window_ms": "..."}) go after their key, so
    a run's config.toml says what an "auto" value chose."""
    comments = comments or {}
    lines = [f"seed = {cfg.seed}", ""]
    for name in SECTIONS:
        section = getattr(cfg, name)
        lines.append(f"[{name}]")
        for f in dataclasses.fields(section):
            line = f"{f.name} = {_toml_value(getattr(section, f.name))}"
            note = comments.get(f"{name}.{f.name}")
            lines.append(f"{line}  # {' '.join(note.split())}" if note else line)
        lines.append("")
    return "\n".join(lines)


def save_config(cfg: Config, run_dir: str | Path, comments: dict[str, str] | None = None) -> Path:
    from pipeline.core.artifacts import write_text

    return write_text(Path(run_dir) / "config.toml", to_toml(cfg, comments))


def as_dict(cfg: Config) -> dict:
    return dataclasses.asdict(cfg)
