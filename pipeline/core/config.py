"""Configuration: one TOML file, one typed dataclass per section.

Unknown keys and wrong types are errors that name the key. The effective configuration
(defaults, file and command-line overrides) is saved into the run directory as
``config.toml``, so a run says exactly what it did.

Every key is documented by the string right after it (its first line is the summary;
``pipeline.core.config_docs`` turns them into the key table of docs/config.md, and
tests/test_docs.py fails when that table is stale).
"""

from __future__ import annotations

import dataclasses
import sys
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pipeline.core.boards import DEFAULT_BOARD
from pipeline.core.errors import PipelineError
from pipeline.core.typed_tables import (
    AT_LEAST_1,
    POSITIVE,
    SHARE,
    SHARE_BELOW_1,
    SHARE_OPEN,
    Range,
    check_value,
    keys,
    section_from_table,
)
from pipeline.core.typed_tables import check_numbers as _check_numbers
from pipeline.core.typed_tables import tables as _tables

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


@dataclass
class DataConfig:
    dataset: str = "motion"
    """`motion`, `digits`, or a path: an Edge Impulse export folder, a folder of
    acquisition files, a folder of WAV files, a `.npz` or a `.csv` file."""
    motion_seed: int = 0
    """Seed of the embedded motion dataset itself (fixed, unlike the run's `seed`)."""
    motion_subjects: int = 12
    """Subjects the embedded motion dataset is generated for (12: enough groups for three splits)."""
    motion_sessions: int = 3
    """Recording sessions per subject of the embedded motion dataset."""
    rate_hz: float | Literal["auto"] = "auto"
    """Sampling rate every time series is brought to, in Hz. "auto": the most common rate
    among the samples; samples at another rate are resampled (``scipy.signal.resample_poly``,
    anti-aliased), counted and reported."""
    wav_pattern: str = "{label}_{group}_{index}.wav"
    """How a WAV file's name gives its label and group (speaker): fields {label}, {group},
    {index}, the rest literal. In per-label folders the folder gives the label (see docs/data.md)."""
    merge_labels: bool = True
    """Labels that differ only in case, spaces, hyphens or underscores ("x-circle left",
    "xcircle left") are one label, spelled as most often in training; said loudly. false: kept apart."""
    label_map: dict[str, str] = field(default_factory=dict)
    """Labels renamed by hand before anything else, a table "from" = "to"
    (`label_map = { "testing" = "idle" }`): merges any other pair of labels."""


@dataclass
class SplitConfig:
    strategy: Literal["auto", "group", "time", "random"] = "auto"
    """How samples are split: "group" keeps each subject/device (else recording) whole, "time" is
    chronological with `gap_s`, "random" only for data without recordings; "auto": group, or random when there is nothing to keep whole."""
    test_size: float = 0.2
    """Share of the data (whole groups or recordings) held out as the test split; a predefined test split wins."""
    val_size: float = 0.2
    """Share of the data (whole groups or recordings) held out as the validation split."""
    folds: int = 4
    """Folds of the group-aware cross-validation (linear baseline, audit checks)."""
    window_ms: float | Literal["auto"] = "auto"
    """Window length. "auto": chosen from the recordings (see ``pipeline.data.windows.choose_window``);
    what it chose is in the audit, the report and the run's config.toml. A number wins."""
    stride_ms: float | Literal["auto"] = "auto"
    """Step between windows, in ms. "auto": the window's choice, or a quarter of an explicit window."""
    pad: Literal["zero", "drop"] = "zero"
    """Samples shorter than a window (but at least half of it): "zero" pads them at the end
    (Edge Impulse's "zero-pad data"), "drop" skips them; both are counted and reported."""
    gap_s: float = 0.0
    """With strategy "time": seconds between the end of one split and the start of the next (recordings within it are dropped)."""
    strict: bool = False
    """Refuse instead of repair: what the pipeline would repair and report (cuts of one recording across
    splits, labels spelled two ways, a class only in test, files listed but missing) becomes an error (--strict)."""


@dataclass
class AuditConfig:
    near_duplicate_ratio: float = 0.1
    """A validation/test window is a near-copy when its nearest window of another split
    reproduces its own variation to within this share (see ``pipeline.audit.stage.check_near_duplicates``)."""
    low_information_rms: float = 0.1
    """A window whose variation (RMS about its own mean, in units of the training data's
    spread) is below this is near-constant: set apart from the near-copy rule, reported per class."""
    outlier_z: float = 8.0
    """The outliers check warns about values beyond this robust z-score (median, central 98% spread)."""
    permutation_max_above_chance: float = 0.15
    """permutation_test fails when the baseline on shuffled labels scores this far above chance (balanced accuracy)."""
    split_optimism_warn: float = 0.05
    """split_optimism warns when a random window split scores this much above the pipeline's split."""
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
class SearchSpace:
    """``[train.search_space]``: what the random search draws from, and the one-batch overfit
    check run before it. No user should need these; the defaults suit the small convnets an
    MCU holds. Older config files that set the flat ``[train] search_*`` / ``overfit_*`` keys
    still load: see MOVED_KEYS."""

    lr_min: float = 3e-4
    """Lowest learning rate drawn (log-uniform); the default learning_rate."""
    lr_max: float = 3e-3
    """Highest learning rate drawn (log-uniform): ten times lr_min."""
    width_min: int = 4
    """Fewest kernels drawn for the first conv block."""
    width_max: int = 12
    """Most kernels drawn for the first conv block (with depth_max, what keeps models MCU-sized)."""
    depth_min: int = 1
    """Fewest conv blocks drawn."""
    depth_max: int = 3
    """Most conv blocks drawn."""
    kernel_min: int = 3
    """Shortest (odd) kernel drawn, in time steps (pixels for images)."""
    kernel_max: int = 9
    """Longest (odd) kernel drawn."""
    dropout_max: float = 0.3
    """Highest dropout drawn (uniform from 0)."""
    l2_min: float = 1e-5
    """Lowest L2 weight penalty drawn (log-uniform)."""
    l2_max: float = 1e-3
    """Highest L2 weight penalty drawn (log-uniform)."""
    overfit_batch: int = 16
    """Windows in the batch the sanity check must memorize (stratified by class)."""
    overfit_steps: int = 400
    """Most training steps the sanity check gets on that batch; it stops as soon as the loss is
    below ``overfit_max_loss`` (motion needs 50, raw 8 kHz speech 175: see ``overfit_one_batch``)."""
    overfit_learning_rate: float = 1e-2
    """Its learning rate: higher than for training, since it checks capacity, not generalization."""
    overfit_max_loss: float = 0.05
    """Cross-entropy (nats) the batch must get below, else the model or the labels are broken."""


@dataclass
class TrainConfig:
    epochs: int = 80
    """Epochs of the final fit (early stopping on validation loss restores the best)."""
    batch_size: int = 32
    """Windows per training step."""
    learning_rate: float = 3e-3
    """Adam's learning rate for the configured model (trial 0 of the search); with cosine,
    the rate it starts from."""
    lr_schedule: Literal["constant", "cosine"] = "cosine"
    """Learning rate over the epochs: constant, or cosine decay to zero over the search's
    epoch budget (``search_epochs``; the refit and the seed refits follow the same
    schedule, and so repeat a trial's epochs). Decided on fsdd's MFE (peak gain), one
    speaker held out in turn, 4 training speakers, the default model for 40 epochs:
    constant 3e-4 (Karpathy's Adam default, the earlier default) 0.811, constant 3e-3 0.820,
    cosine from 3e-4 0.794, cosine from 3e-3 0.842 (over 26 epochs 0.838)."""
    patience: int = 10
    """Constant rate only: epochs without a lower validation loss before early stopping
    (a cosine fit runs its whole schedule)."""
    width: int = 6
    """Kernels in the first conv block; each further block doubles them."""
    depth: int = 3
    """Conv blocks of the configured model."""
    kernel_size: int | Literal["auto"] = "auto"
    """Kernel length of the configured model, in time steps (pixels for images). "auto": 7 on
    windows and images, 3 (3x3) on time-frequency features (pipeline/ml/model.py KERNEL_AUTO)."""
    dropout: float = 0.1
    """Dropout rate of the configured model."""
    l2: float = 1e-4
    """L2 weight penalty of the configured model."""
    separable: bool = False
    """Depthwise-separable convolutions after the first block."""
    head: Literal["auto", "gap", "time_max"] = "auto"
    """Between the conv blocks and the softmax: "gap" averages each kernel over every position;
    "time_max" (for mfe, mfcc, spectrogram features) takes each kernel's maximum over time per
    frequency row. "auto": "time_max" on those features, else "gap" (pipeline/ml/model.py HEADS)."""
    augment: Literal["auto", "none", "specaugment"] = "auto"
    """Training-time augmentation, anew every epoch, for every fit (the search's trials, the
    refits, the folds): "specaugment" masks one run of mel bands and one run of frames of each
    training window with the training mean (SpecAugment without its time warp; validation and
    test windows are never masked); "auto": on mfe, mfcc and spectrogram features, none on raw
    windows and spectral features. Decided on fsdd (MFE, peak gain, the default model, 25
    epochs, one speaker held out in turn, 4 training speakers, seeds 0, 1, 2): none 0.832,
    0.816, 0.822 (mean 0.823); specaugment 0.864, 0.858, 0.829 (mean 0.850), nicolas's fold
    0.76 -> 0.84 (pipeline/ml/model.py spec_augment)."""
    mask_bands: float = 0.2
    """Widest band mask, as a share of the bands (drawn from 0 to it per window): 6 of 32 mel
    bands. On fsdd (a variant of the model, seed 0), 6 bands and 10 frames scored 0.870 (11
    frames 0.868), 4 and 6 0.860, 8 and 15 0.842."""
    mask_frames: float = 0.17
    """Widest frame mask, as a share of the frames: 10 of fsdd's 59 (110 ms at its 10 ms stride)."""
    trials: int = 10
    """Random-search budget: trial 0 is the configured model, the rest random draws."""
    search_epochs: int = 25
    """Epochs each search trial trains for (early stopping still applies under a constant
    rate); the cosine schedule's length. 25: on fsdd (the default model, one speaker held
    out in turn) cosine over 26 epochs scored 0.838, over 40 0.842; motion's trials had
    stopped early at 12 to 40 epochs (most below 25)."""
    max_params: int = 8000
    """Search draws with more parameters than this are redrawn (the model goes on an MCU)."""
    init_loss_tolerance: float = 0.25
    """Allowed gap (nats) between the loss at init and the entropy of the class prior."""
    logo_folds: int = 5
    """Leave-one-group-out of the chosen configuration on the training side (train +
    validation), when it has 3 or more subjects/devices: one fit per group up to this many
    groups, else this many folds of whole groups. 0: off. Each fold costs one refit."""
    reproducibility_check: bool = True
    """Train the best configuration twice from one seed (the refit serves when the learning
    rate is constant); every epoch's losses and accuracies must be identical."""
    search_engine: Literal["auto", "ray", "sequential"] = "auto"
    """Where the trials run: Ray tasks (embedded, or the cluster of ray_address) or one after
    another in this process; auto: Ray given a cluster address, or when the expected work
    saves more on this machine's cores than Ray's start-up costs (docs/train.md), else sequential."""
    ray_address: str = ""
    """Ray cluster for the search ("host:port", "ray://host:port", "auto"); empty: the
    RAY_ADDRESS environment variable if set, else an embedded local Ray on this machine's cores."""
    max_ram_kb: float = 0.0
    """Chosen model: the most accurate trial whose TFLM arena (as exported) is within this
    many KB; 0: no target (EON Tuner's RAM target)."""
    max_latency_ms: float = 0.0
    """Chosen model: the most accurate trial whose predicted latency on [quantize] board is
    within this; the quantize stage gates on it too; 0: no target."""
    seeds: int = 3
    """Refits of the chosen configuration (seed, seed + 1, ...): the spread of its validation
    score is reported beside the search's figure."""
    search_space: SearchSpace = field(default_factory=SearchSpace)
    """The search's bounds and the overfit check: the `[train.search_space]` table below."""


@dataclass
class QuantizeConfig:
    board: str = DEFAULT_BOARD
    """Board profile the model must fit and whose latency is estimated (`pipeline.core.boards`)."""
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
    """int8 weights with one scale per output channel (TFLite's default); false: one per tensor (`--per-tensor`)."""
    max_balanced_accuracy_drop: float = 0.01
    """Gate: int8 may lose at most this much validation balanced accuracy against float (1 point)."""
    min_float_int8_agreement: float = 0.98
    """Floor of the agreement gate (share of validation windows where int8 and float agree): int8 fails it only if it
    changes more predictions than this floor and than a refit with another seed does, and scores lower with its interval."""
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
    """Where flash and eval go: "emu" (virtual device), "qemu", "auto" (the first board found) or a serial port."""
    baud: int = 115200
    """Serial speed in bit/s (the Edge Impulse firmwares' 115200)."""
    chunk_size: int = 32
    """Base64 characters per chunk the virtual device asks for in AT+RUNIMPULSESTATIC (a multiple of 16)."""
    throttle: bool = False
    """Virtual device: pace its pseudo-terminal to `baud`, as a real UART would be."""
    timeout_s: float = 5.0
    """Seconds to wait for a device's answer before the port is called dead."""
    engine: str = "compiled"
    """What runs the model in the board's sketch: "compiled" (the model as C, byte-identical
    to TFLM by test, no library, less RAM) or "tflm" (the interpreter library)."""
    min_agreement: float = 1.0
    """Least share of test windows on which the device's top class must be the host int8 model's, else eval fails
    (exit 1). 1.0: this project's firmware (virtual device, QEMU, the generated sketch) is byte-identical to the
    host's TFLM by design, so one differing window is a fault; a third-party firmware with other kernels may need
    lower. device_report.json records it."""


ENGINES = ("compiled", "tflm")


@dataclass
class DspConfig:
    """``[dsp]``: the front end between the raw window and the model, one C99 implementation
    for the host and the device (``pipeline.dsp``, docs/dsp.md). Names and defaults are Edge
    Impulse's processing blocks' (edgeimpulse/processing-blocks, */parameters.json)."""

    block: Literal["auto", "raw", "spectral", "mfe", "mfcc", "spectrogram"] = "auto"
    """What the model reads: "raw" windows, "spectral" features per axis (motion), "mfe" or
    "mfcc" (audio), or a "spectrogram". "auto": the train stage tries raw and the blocks that
    fit the data (pipeline/dsp/auto.py) and keeps the best on validation; the run's config.toml
    records the block chosen and its parameters."""
    scale_axes: float = 1.0
    """spectral: every value is multiplied by this first (Edge Impulse's scale-axes)."""
    filter_type: Literal["none", "low", "high"] = "none"
    """spectral: a Butterworth low- or high-pass filter before the FFT (filter-type)."""
    filter_cutoff: float = 3.0
    """spectral: the filter's cut-off in Hz (filter-cutoff); also masks the FFT bins beyond it."""
    filter_order: int = 6
    """spectral: the filter's order, even, up to 8; 0 only masks the FFT bins (filter-order)."""
    fft_length: int | Literal["auto"] = "auto"
    """FFT points, a power of two. "auto": Edge Impulse's default of the block (spectral 16,
    mfe and mfcc 256, spectrogram 128)."""
    do_log: bool = True
    """spectral: log10 of the spectral power (do-log)."""
    do_fft_overlap: bool = True
    """spectral: FFT frames overlap by half when more than one covers the window (do-fft-overlap)."""
    frame_length: float = 0.02
    """mfe, mfcc, spectrogram: seconds per frame."""
    frame_stride: float | Literal["auto"] = "auto"
    """mfe, mfcc, spectrogram: seconds between frames. "auto": Edge Impulse's default
    (mfe and spectrogram 0.01, mfcc 0.02)."""
    num_filters: int = 32
    """mfe, mfcc: mel filters in the filter bank (2 to 128)."""
    low_frequency: float = 300.0
    """mfe, mfcc: lowest band edge of the mel filters, in Hz."""
    high_frequency: float = 0.0
    """mfe, mfcc: highest band edge, in Hz; 0: half the sampling rate."""
    noise_floor_db: float = -52.0
    """mfe, spectrogram: dB below which a bin is 0 (the output is scaled from here to +12 dB)."""
    num_cepstral: int = 13
    """mfcc: cepstral coefficients kept."""
    pre_cof: float = 0.98
    """mfe, mfcc: pre-emphasis coefficient (y[t] = x[t] - pre_cof x[t-1]); 0: none."""
    lifter: int = 0
    """mfcc: sinusoidal lifter length (1 + L/2 sin(pi k / L)); 0: none (Edge Impulse has none)."""
    gain: Literal["none", "peak"] = "peak"
    """mfe, mfcc, spectrogram: "peak" scales each window so that its largest sample is at half
    full scale (-6 dBFS) before the frames, so that the noise floor cuts the same share of a
    quiet recording as of a loud one; "none": the window as recorded (Edge Impulse's MFE).
    Decided on fsdd, whose speakers' median peaks span 24 dB (theo 968, lucas 15,520): one
    speaker held out in turn (4 training speakers, MFE -52 dB, the time-max convnet),
    balanced accuracy 0.748 as recorded, 0.854 with "peak" (theo 0.632 to 0.878). block =
    "auto" scores MFE both ways, so data where loudness is the signal keeps "none"."""


@dataclass
class CompileConfig:
    memory: Literal["auto", "min", "fast"] = "auto"
    """`tinyml compile`: "fast" computes every op on whole tensors; "min" computes a residual
    block (conv, conv, add) row by row where that needs less RAM (ResNet-8: 24,640 B instead
    of 33,328 B; the same bytes out; row copies cost instructions, docs/compiler.md); "auto":
    "fast" when its RAM fits [quantize]'s RAM budget for its board, else "min"."""


@dataclass
class Config:
    seed: int = 0
    """Seed of the run: the split, the search's draws, training and calibration all derive from it."""
    data: DataConfig = field(default_factory=DataConfig)
    split: SplitConfig = field(default_factory=SplitConfig)
    audit: AuditConfig = field(default_factory=AuditConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    quantize: QuantizeConfig = field(default_factory=QuantizeConfig)
    device: DeviceConfig = field(default_factory=DeviceConfig)
    dsp: DspConfig = field(default_factory=DspConfig)
    compile: CompileConfig = field(default_factory=CompileConfig)


SECTIONS = {name: tp for name, tp in typing.get_type_hints(Config).items() if name != "seed"}


# Keys earlier versions wrote into a run's config.toml, ignored when read back so an old run
# directory still loads: (section, key) -> why it went.
RETIRED_KEYS = {
    ("quantize", "max_lsb_difference"): "LiteRT vs TFLM LSB differences are reported per layer, not gated",
}

# Keys that moved, (section, old key) -> (table, new key). An old key is read into its new
# place rather than refused: every run directory written before the move holds all of them
# in its config.toml, and `tinyml quantize/flash/eval --run` read that file back. Setting a
# key in both places is an error naming both.
MOVED_KEYS = {
    **{("train", f"search_{k}"): ("train.search_space", k)
       for k in ("lr_min", "lr_max", "width_min", "width_max", "depth_min", "depth_max",
                 "kernel_min", "kernel_max", "dropout_max", "l2_min", "l2_max")},
    **{("train", k): ("train.search_space", k)
       for k in ("overfit_batch", "overfit_steps", "overfit_learning_rate", "overfit_max_loss")},
}


def config_from_dict(raw: dict, source: str = "config") -> Config:
    kwargs = {}
    for key, value in raw.items():
        if key == "seed":
            kwargs["seed"] = check_value(f"{source}: seed", int, value)
        elif key in SECTIONS:
            kwargs[key] = section_from_table(key, SECTIONS[key], value, source, RETIRED_KEYS, MOVED_KEYS)
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
                                          "search_epochs", "max_params", "seeds")},
    **{f"train.search_space.{k}": AT_LEAST_1 for k in ("width_min", "depth_min", "kernel_min", "overfit_batch")},
    "train.learning_rate": POSITIVE,
    **{f"train.search_space.{k}": POSITIVE for k in ("lr_min", "lr_max", "l2_min", "l2_max", "overfit_learning_rate")},
    "train.dropout": SHARE_BELOW_1,
    "train.mask_bands": SHARE_BELOW_1,
    "train.mask_frames": SHARE_BELOW_1,
    "train.search_space.dropout_max": SHARE_BELOW_1,
    # quantize.calibration_windows: the default range (0 means every training window)
    "quantize.max_balanced_accuracy_drop": SHARE,
    "quantize.min_float_int8_agreement": SHARE,
    "quantize.min_tflm_agreement": SHARE,
    "quantize.ram_reserve": SHARE_BELOW_1,
    "quantize.flash_reserve": SHARE_BELOW_1,
    "device.baud": AT_LEAST_1,
    "device.chunk_size": AT_LEAST_1,
    "device.timeout_s": POSITIVE,
    "device.min_agreement": SHARE,
    "dsp.scale_axes": Range(None, what="a finite number"),
    "dsp.filter_cutoff": POSITIVE,
    "dsp.filter_order": Range(0, 8),
    "dsp.fft_length": Range(4, 65536),
    "dsp.frame_length": POSITIVE,
    "dsp.frame_stride": POSITIVE,
    "dsp.num_filters": Range(2, 128),
    "dsp.noise_floor_db": Range(None, 0, hi_open=True, what="a negative number (dB)"),
    "dsp.num_cepstral": AT_LEAST_1,
    "dsp.pre_cof": Range(0, 1),
}
"""Intervals beyond DEFAULT_RANGE, by "section.key" (a key absent here gets the default)."""


def tables(cfg: Config) -> list[tuple[str, Any]]:
    """Every TOML table of the config in file order, by dotted name (\"train\", \"train.search_space\")."""
    return _tables(cfg, SECTIONS)


def check_numbers(cfg: Config, source: str = "config") -> None:
    """Every number of ``cfg`` within its FIELD_RANGES interval (typed_tables.check_numbers)."""
    _check_numbers(cfg, SECTIONS, FIELD_RANGES, source)




def load_config(path: str | Path | None = None, overrides: dict | None = None) -> Config:
    """Defaults, then the TOML file at ``path``, then ``overrides`` ({"seed": 1, "data.dataset": "x",
    "train.search_space.width_max": 8})."""
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
        *path_, key = dotted.split(".")
        table = raw
        for part in path_:
            table = table.setdefault(part, {})
        table[key] = value
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
    if isinstance(value, dict):  # an inline table: label_map = { "from" = "to" }
        return "{" + ", ".join(f"{_toml_value(str(k))} = {_toml_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(type(value))


def to_toml(cfg: Config, comments: dict[str, str] | None = None) -> str:
    """The config as TOML; ``comments`` ({"split.window_ms": "..."}) go after their key, so
    a run's config.toml says what an "auto" value chose."""
    comments = comments or {}
    lines = [f"seed = {cfg.seed}", ""]
    for name, section in tables(cfg):
        lines.append(f"[{name}]")
        for f in keys(section):
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
