"""Configuration: one TOML file, one typed dataclass per section.

Unknown keys and wrong types are errors that name the key. The effective configuration
(defaults, file and command-line overrides) is saved into the run directory as
``config.toml``, so a run says exactly what it did.
"""

from __future__ import annotations

import dataclasses
import sys
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pipeline.boards import DEFAULT_BOARD
from pipeline.errors import PipelineError

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


@dataclass
class SplitConfig:
    strategy: Literal["auto", "group", "time", "random"] = "auto"
    test_size: float = 0.2
    val_size: float = 0.2
    folds: int = 4
    window_ms: float = 2000.0
    stride_ms: float = 500.0
    gap_s: float = 0.0


@dataclass
class AuditConfig:
    near_duplicate_fraction: float = 0.05
    """A cross-split pair closer than this fraction of the median nearest-neighbour
    distance is a near-duplicate."""
    near_duplicate_error_share: float = 0.05
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
    calibration_windows: int = 300
    """Training windows (stratified by class) the int8 ranges are calibrated on."""
    calibration_outlier_z: float = 8.0
    """Training windows holding a value beyond this robust z-score (scored as the audit
    scores outliers; [audit] outlier_z is the audit's own threshold) are left out of calibration: one spike would stretch the int8 input range
    and coarsen every other input. 0 keeps them all."""
    per_channel: bool = True
    max_balanced_accuracy_drop: float = 0.01
    min_float_int8_agreement: float = 0.98
    min_tflm_agreement: float = 0.995
    """Top-1 agreement of TFLM with LiteRT's reference kernels (the arithmetic TFLM implements)."""
    max_lsb_difference: int = 1
    """Largest output difference, in LSB, between TFLM and LiteRT's reference kernels."""
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
    if typing.get_origin(tp) is Literal:
        return " or ".join(repr(a) for a in typing.get_args(tp))
    return getattr(tp, "__name__", str(tp))


def _check_value(where: str, tp: Any, value: Any) -> Any:
    origin = typing.get_origin(tp)
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


def _section_from_table(name: str, cls: type, table: Any, source: str):
    where = f"{source}: [{name}]"
    if not isinstance(table, dict):
        raise PipelineError(f"{where}: expected a table, got {type(table).__name__}")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    values = {}
    for key, value in table.items():
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
    """Checks that span a value's range, not just its type."""
    s = cfg.split
    for key in ("test_size", "val_size"):
        v = getattr(s, key)
        if not 0.0 < v < 1.0:
            raise PipelineError(f"{source}: [split] {key}: expected a share between 0 and 1, got {v}")
    if s.test_size + s.val_size >= 0.9:
        raise PipelineError(f"{source}: [split] test_size + val_size = {s.test_size + s.val_size}: leaves too little to train on")
    if s.window_ms <= 0 or s.stride_ms <= 0:
        raise PipelineError(f"{source}: [split] window_ms and stride_ms must be positive")
    if s.folds < 2:
        raise PipelineError(f"{source}: [split] folds: expected at least 2, got {s.folds}")
    t = cfg.train
    for key in ("epochs", "batch_size", "width", "depth", "kernel_size", "trials", "search_epochs", "seeds"):
        if getattr(t, key) < 1:
            raise PipelineError(f"{source}: [train] {key}: expected at least 1, got {getattr(t, key)}")
    if not 0.0 <= t.dropout < 1.0:
        raise PipelineError(f"{source}: [train] dropout: expected 0 <= dropout < 1, got {t.dropout}")
    if t.learning_rate <= 0:
        raise PipelineError(f"{source}: [train] learning_rate: expected > 0, got {t.learning_rate}")
    for key in ("max_ram_kb", "max_latency_ms"):
        if getattr(t, key) < 0:
            raise PipelineError(f"{source}: [train] {key}: expected >= 0 (0: no target), got {getattr(t, key)}")
    from pipeline.boards import get_board

    try:
        get_board(cfg.quantize.board)
    except PipelineError as exc:
        raise PipelineError(f"{source}: [quantize] board: {exc.message}", hint=exc.hint) from None
    q, where = cfg.quantize, f"{source}: [quantize]"
    if q.calibration_outlier_z < 0:
        raise PipelineError(f"{where} calibration_outlier_z: expected >= 0 (0: keep every window), got {q.calibration_outlier_z}")
    if q.calibration_windows < 1:
        raise PipelineError(f"{where} calibration_windows: expected at least 1, got {q.calibration_windows}")
    for key in ("ram_reserve", "flash_reserve"):
        if not 0.0 <= getattr(q, key) < 1.0:
            raise PipelineError(f"{where} {key}: expected a share in [0, 1), got {getattr(q, key)}")
    for key in ("arena_margin", "max_balanced_accuracy_drop", "max_lsb_difference", "flash_budget_bytes", "ram_budget_bytes"):
        if getattr(q, key) < 0:
            raise PipelineError(f"{where} {key}: expected >= 0, got {getattr(q, key)}")
    for key in ("min_float_int8_agreement", "min_tflm_agreement"):
        if not 0.0 <= getattr(q, key) <= 1.0:
            raise PipelineError(f"{where} {key}: expected a share in [0, 1], got {getattr(q, key)}")
    if cfg.device.chunk_size <= 0 or cfg.device.chunk_size % 16:
        raise PipelineError(
            f"{source}: [device] chunk_size: expected a positive multiple of 16, got {cfg.device.chunk_size}"
        )


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
        escaped = value.replace("\\", "\\\\").replace('"', '\\"')
        return f'"{escaped}"'
    raise TypeError(type(value))


def to_toml(cfg: Config) -> str:
    lines = [f"seed = {cfg.seed}", ""]
    for name in SECTIONS:
        section = getattr(cfg, name)
        lines.append(f"[{name}]")
        for f in dataclasses.fields(section):
            lines.append(f"{f.name} = {_toml_value(getattr(section, f.name))}")
        lines.append("")
    return "\n".join(lines)


def save_config(cfg: Config, run_dir: str | Path) -> Path:
    from pipeline.artifacts import write_text

    return write_text(Path(run_dir) / "config.toml", to_toml(cfg))


def as_dict(cfg: Config) -> dict:
    return dataclasses.asdict(cfg)
