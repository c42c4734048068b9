"""The quantize stage: ``float.keras`` -> full-int8 TFLite, checked, budgeted, exported as C.

1. Calibrate on the training windows only (all of them by default), convert to full int8,
   with headroom above the calibrated maximum of the logits.
2. Check every op is one TFLM can run, naming the Keras layer of any that is not.
3. Measure the TFLM arena (recorded and true minimum), count MACs, budget against the board.
4. Run the float model, the int8 model in LiteRT (default and reference kernels) and in
   TFLM on the same validation windows; compare them and apply the gates. When a gate is
   missed, try the input-handling remedies in order (REMEDIES) and keep the first that
   meets every gate.
5. Compare every layer (pipeline.quantize.layer_compare): where int8 loses the signal is printed
   with a failed gate and written to the report.
6. Only a model that passed every gate (or was accepted with --accept-drop, recorded as
   an override) is scored on the test split (once, in the ledger) and exported:
   ``quantize_report.json`` first (naming the model's SHA-256), then
   ``firmware/model_data.{h,cc}``, ``firmware/model_settings.h`` and ``int8.tflite``.

``quantize_report.json`` is written either way, so a failed gate's numbers are on disk.
"""

from __future__ import annotations

import contextlib
import io
import re
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.tflite import export

from pipeline.ml import metrics
from pipeline.core.artifacts import sha256_bytes, write_bytes, write_json, write_text
from pipeline.ml.outliers import outlier_scores
from pipeline.core.boards import BOARDS, get_board, model_budgets
from pipeline.core.errors import GateFailed, PipelineError
from pipeline.quantize.layer_compare import compare_layers, jump_message, summary_lines
from pipeline.core.ledger import record_test_look
from pipeline.core.progress import progress, quiet_native_stderr
from pipeline.data.splits import Prepared, cv_groups, load_run_split
from pipeline.tflite.flatbuffer import MACS_NOTE, ModelInfo, inspect_model, layer_of, require_tflm_ops
from pipeline.tflite.runtime import (
    HOST_FIGURE,
    NORMALIZATION_METADATA,
    InputNormalization,
    TFLMRunner,
    dequantize_int8,
    measure_arena,
    model_input,
    normalize_input,
    read_input_normalization,
    with_input_normalization,
)
from pipeline.data.windows import Windows

FLOAT_MODEL = "float.keras"
MODEL = "int8.tflite"
REJECTED = "int8.rejected.tflite"
REPORT = "quantize_report.json"
FIRMWARE = "firmware"
FIRMWARE_FILES = ("model_data.h", "model_data.cc", "model_settings.h")
TEST_PURPOSE = "int8 model (deployable)"
HEADLINE = ("accuracy", "balanced_accuracy", "macro_f1")


# --------------------------------------------------------------------------- inputs


@dataclass
class StageInputs:
    model: object  # keras.Model
    prepared: Prepared
    labels: list[str]

    @property
    def windows(self) -> dict[str, Windows]:
        return self.prepared.windows

    @property
    def layer_types(self) -> dict[str, str]:
        return {layer.name: type(layer).__name__ for layer in self.model.layers}


def load_inputs(cfg, run_dir: str | Path) -> StageInputs:
    """float.keras and the windows of the run's split (splits.json must match the config)."""
    run_dir = Path(run_dir)
    path = run_dir / FLOAT_MODEL
    if not path.exists():
        raise PipelineError(f"{path}: not found", hint="run `tinyml train` (make train) first")
    prepared = load_run_split(cfg, run_dir)
    import keras

    try:
        model = keras.models.load_model(path)
    except Exception as exc:  # Keras raises many types for a bad file
        raise PipelineError(f"{path}: not a loadable Keras model ({type(exc).__name__}: {exc})") from exc
    expected = tuple(prepared.windows["train"].X.shape[1:])
    got = tuple(model.input_shape[1:])
    if got != expected:
        raise PipelineError(f"{path}: the model takes inputs of shape {got}, the split's windows are {expected}",
                            hint="retrain: the split changed since float.keras was written")
    return StageInputs(model, prepared, list(prepared.manifest["dataset"]["label_names"]))


# --------------------------------------------------------------------------- calibration


def drop_outliers(train: Windows, outlier_z: float) -> Windows:
    """The training windows with no value beyond robust z ``outlier_z`` (0: all of them):
    the audit's outlier scores, so calibration leaves out the windows the audit flags."""
    if outlier_z <= 0:
        return train
    keep = outlier_scores(train.X, train.X) <= outlier_z
    return train.subset(np.flatnonzero(keep)) if keep.any() else train


def calibration_set(train: Windows, n: int, seed: int) -> Windows:
    """Every training window when ``n`` is 0 or covers them; else ``n`` of them, stratified by
    class (each class in proportion to its frequency, at least one each), plus, for every
    class and channel, the windows holding that class's smallest and largest value of the
    channel: a subset never narrows the ranges the full set calibrates, and no class loses
    its peaks. Only ever called with (a subset of) the training split."""
    if n <= 0 or n >= len(train):
        return train
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(train.y, return_counts=True)
    flat = train.X.reshape(len(train), -1, train.X.shape[-1])
    extremes: list[int] = []
    for c in classes:
        mine = np.flatnonzero(train.y == c)
        extremes += mine[flat[mine].max(axis=1).argmax(axis=0)].tolist()
        extremes += mine[flat[mine].min(axis=1).argmin(axis=0)].tolist()
    extremes_arr = np.unique(np.asarray(extremes, dtype=np.int64))
    raw = counts * n / counts.sum()
    quota = np.minimum(np.maximum(np.floor(raw), 1), counts).astype(int)
    # Hand out what is left by the largest remainders, as far as each class has windows.
    for i in np.argsort(-(raw - np.floor(raw)), kind="stable"):
        if quota.sum() >= n:
            break
        if quota[i] < counts[i]:
            quota[i] += 1
    picked = [extremes_arr]
    for c, q in zip(classes, quota, strict=True):
        rest = np.setdiff1d(np.flatnonzero(train.y == c), extremes_arr)
        have = int(np.isin(extremes_arr, np.flatnonzero(train.y == c)).sum())
        take = min(max(q - have, 0), len(rest))
        if take:
            picked.append(rng.choice(rest, size=take, replace=False))
    return train.subset(np.sort(np.concatenate(picked)))


def calibration_record(calib: Windows, q, labels: list[str], seed: int, left_out: int,
                       train_windows: int | None = None) -> dict:
    counts = np.bincount(calib.y, minlength=len(labels))
    return {
        "split": "train",
        "windows": len(calib),
        "requested": q.calibration_windows,
        "per_class": {name: int(c) for name, c in zip(labels, counts, strict=True)},
        "window_ids_sha256": sha256_bytes("\n".join(calib.window_ids.tolist()).encode()),
        "seed": seed,
        "training_windows": train_windows,
        "sampling": "every training window" if train_windows is not None and len(calib) + left_out >= train_windows
        else "stratified by class, in proportion to class frequency, at least one per class, plus the "
        "windows holding each class's smallest and largest value of each channel",
        "outlier_z": q.calibration_outlier_z,
        "outlier_windows_left_out": left_out,
    }


# --------------------------------------------------------------------------- conversion


# Headroom above the calibrated maximum of the logits (the input of the final SOFTMAX), as
# a share of their calibrated range. Windows not seen in calibration can have a larger top
# logit; clamped at the maximum, the top two classes tie and the first index wins. Seen on
# the 8x8 digits: every one of the 4 windows int8 changed was such a tie (float 0.89 vs
# 0.11), logits calibrated to [-38.5, 4.8]; headroom 0.1, 0.25 or 0.5 took float/int8
# agreement from 0.989 to 0.997. The cost: a logit step 1.25x as coarse.
LOGIT_HEADROOM = 0.25


def convert_int8(model, calibration_x: np.ndarray, per_channel: bool = True,
                 layer_types: dict[str, str] | None = None,
                 logit_headroom: float = LOGIT_HEADROOM) -> tuple[bytes, float]:
    """Full-integer TFLite (int8 weights, activations, input and output) and the seconds it took.

    Calibrated in two steps, as TFLite's own quantization debugger does (calibrate only,
    then ``mlir_quantize``), so that the logits' calibrated range can get its headroom."""
    import tensorflow as tf
    from tensorflow.lite.python import convert as tf_convert

    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    xs = np.asarray(calibration_x, dtype=np.float32)
    conv.representative_dataset = lambda: ([x[None]] for x in xs)
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = tf.int8
    conv.inference_output_type = tf.int8
    if not per_channel:
        conv._experimental_disable_per_channel = True
    conv._experimental_calibrate_only = logit_headroom > 0
    start = time.perf_counter()
    try:
        # The converter prints its SavedModel export and warns about input statistics it
        # does not need (inputs are quantized from the calibration data): keep that quiet.
        with quiet_native_stderr(), contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            data = conv.convert()
            if logit_headroom > 0:
                data = tf_convert.mlir_quantize(widen_logit_range(bytes(data), logit_headroom),
                                                disable_per_channel=not per_channel,
                                                input_data_type=tf.int8, output_data_type=tf.int8)
    except Exception as exc:  # ConverterError and friends
        raise _conversion_failed(exc, layer_types or {}) from exc
    return bytes(data), time.perf_counter() - start


def widen_logit_range(calibrated: bytes, headroom: float) -> bytes:
    """A calibrated (float) model with the recorded maximum of every SOFTMAX input raised by
    ``headroom`` x its recorded range."""
    from pipeline.tflite.flatbuffer import _AlignedBuilder, _builtin_names, _schema

    schema = _schema()
    names = _builtin_names()
    model = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(bytearray(calibrated), 0))
    for graph in model.subgraphs:
        for op in graph.operators or []:
            code = model.operatorCodes[op.opcodeIndex]
            if names.get(max(code.builtinCode, code.deprecatedBuiltinCode)) != "SOFTMAX":
                continue
            q = graph.tensors[op.inputs[0]].quantization
            if q is None or q.min is None or q.max is None or len(q.min) != 1:
                continue
            lo, hi = float(q.min[0]), float(q.max[0])
            q.max = [hi + headroom * (hi - lo)]
    builder = _AlignedBuilder(len(calibrated) + 1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def _conversion_failed(exc: Exception, layer_types: dict[str, str]) -> GateFailed:
    text = str(exc)
    ops = sorted(set(re.findall(r"'tf\.(\w+)' op", text)))
    layers: list[str] = []
    for path in re.findall(r'"([^"@]+)@__inference', text):
        layer = layer_of(path, layer_types)
        if layer and layer not in layers:
            layers.append(layer)
    if not ops and not layers:
        first = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
        return GateFailed(f"float.keras: int8 conversion failed: {first[:300]}")
    where = ", ".join(f"{name!r} ({layer_types.get(name, '?')})" for name in layers) or "an unknown layer"
    return GateFailed(
        f"float.keras: op(s) {', '.join(ops) or '?'} from layer {where} have no int8 TFLite "
        "builtin, so TFLM cannot run them",
        hint="replace that layer with one that converts to TFLM builtins (e.g. Conv1D instead of a recurrent layer)",
    )


def input_clipping(x: np.ndarray, scale: float, zero_point: int) -> dict:
    """How much of the input falls outside the int8 input range (and is clamped): spikes
    the calibration windows did not show. Clamped inputs are a common cause of disagreement."""
    lo = (-128 - zero_point) * scale
    hi = (127 - zero_point) * scale
    outside = (x < lo - scale / 2) | (x > hi + scale / 2)
    return {
        "range": [float(lo), float(hi)],
        "values_share": float(outside.mean()) if outside.size else 0.0,
        "windows_share": float(outside.reshape(len(x), -1).any(axis=1).mean()) if len(x) else 0.0,
    }


# --------------------------------------------------------------------------- running


def run_float(model, x: np.ndarray) -> np.ndarray:
    out = model.predict(x, batch_size=256, verbose=0)
    return np.asarray(out, dtype=np.float32).reshape(len(x), -1)


def host_interpreter():
    """(Interpreter, OpResolverType, name) of the host TFLite interpreter: LiteRT, the
    maintained one; else tflite_runtime (its last release fails under NumPy 2); else tf.lite."""
    try:
        from ai_edge_litert.interpreter import Interpreter, OpResolverType

        return Interpreter, OpResolverType, "ai_edge_litert"
    except ImportError:
        pass
    try:
        from tflite_runtime.interpreter import Interpreter, OpResolverType

        return Interpreter, OpResolverType, "tflite_runtime"
    except ImportError:
        pass
    from pipeline.core.progress import import_tensorflow

    tf = import_tensorflow()
    return tf.lite.Interpreter, tf.lite.experimental.OpResolverType, "tf.lite"


def run_litert(data: bytes, x_q: np.ndarray, reference: bool = False) -> np.ndarray:
    """Quantized outputs of the int8 model in LiteRT, one window at a time."""
    Interpreter, OpResolverType, _ = host_interpreter()
    kind = OpResolverType.BUILTIN_REF if reference else OpResolverType.AUTO
    with quiet_native_stderr():  # "Created TensorFlow Lite XNNPACK delegate for CPU."
        interp = Interpreter(model_content=data, experimental_op_resolver_type=kind, num_threads=1)
        interp.allocate_tensors()
    inp = interp.get_input_details()[0]
    outp = interp.get_output_details()[0]
    outs = []
    desc = "LiteRT reference kernels" if reference else "LiteRT"
    for x in progress(x_q, desc, total=len(x_q), unit="window"):
        interp.set_tensor(inp["index"], x.reshape(inp["shape"]))
        interp.invoke()
        outs.append(interp.get_tensor(outp["index"]).reshape(-1).copy())
    return np.stack(outs)


def _run_default_kernels(data: bytes, x_q: np.ndarray) -> np.ndarray | str:
    """LiteRT's default kernels, reported and never gated: a model they refuse (XNNPACK
    rejects some requantization scales an extreme activation range gives) is said, not fatal."""
    try:
        return run_litert(data, x_q)
    except (RuntimeError, ValueError) as exc:
        return f"{type(exc).__name__}: {str(exc).strip().splitlines()[0][:200]}"


@dataclass
class Outputs:
    """The four runtimes' outputs on one split's windows.

    "int8" is LiteRT with its reference kernels: the arithmetic TFLM implements, so its
    figures are the ones the device should reproduce. LiteRT's default kernels (XNNPACK and
    the optimized builtins) requantize with other rounding and approximate softmax; they
    are run and reported, never gated.
    """

    float: np.ndarray  # (n, k) float32
    int8: np.ndarray  # (n, k) int8, LiteRT reference kernels
    int8_default: np.ndarray | str  # LiteRT default kernels, or why they could not run
    tflm: np.ndarray  # TFLM (reference kernels, the Python runtime)


def run_all(model, data: bytes, x: np.ndarray, info: ModelInfo, arena_bytes: int,
            norm: InputNormalization | None = None) -> Outputs:
    inp = info.input
    x_q = model_input(x, inp.scales[0], inp.zero_points[0], norm)
    return Outputs(
        float=run_float(model, x),
        int8=run_litert(data, x_q, reference=True),
        int8_default=_run_default_kernels(data, x_q),
        tflm=TFLMRunner(data, arena_bytes).predict(x_q),
    )


# --------------------------------------------------------------------------- comparing


def output_error(reference: np.ndarray, approx: np.ndarray) -> dict:
    """STM32Cube.AI validate's figures, over all output values of all windows."""
    r = reference.astype(np.float64).ravel()
    a = approx.astype(np.float64).ravel()
    d = a - r
    norm_r, norm_a = np.linalg.norm(r), np.linalg.norm(a)
    return {
        "rmse": float(np.sqrt(np.mean(d**2))),
        "mae": float(np.mean(np.abs(d))),
        "relative_l2": float(np.linalg.norm(d) / norm_r) if norm_r else None,
        "cosine_similarity": float(r @ a / (norm_r * norm_a)) if norm_r and norm_a else None,
    }


def runtime_match(a: np.ndarray, b: np.ndarray) -> dict:
    """How closely two int8 runtimes agree: top-1, bit-identical outputs, largest LSB gap."""
    diff = np.abs(a.astype(np.int32) - b.astype(np.int32))
    return {
        "top1_agreement": float(np.mean(a.argmax(1) == b.argmax(1))),
        "bit_identical_share": float(np.mean(np.all(diff == 0, axis=1))),
        "max_lsb_difference": int(diff.max()) if diff.size else 0,
    }


def compare(outs: Outputs, y: np.ndarray, labels: list[str], clusters, seed: int,
            out_scale: float, out_zp: int, unit: str = "cluster") -> dict:
    """Every float / int8 / TFLM comparison on one split."""
    k = len(labels)
    default_ok = not isinstance(outs.int8_default, str)
    pred = {name: getattr(outs, name).argmax(1) for name in ("float", "int8", "tflm")}
    if default_ok:
        pred["int8_default"] = outs.int8_default.argmax(1)
    ev = {name: metrics.evaluate(y, pred[name], labels, clusters=clusters, seed=seed, unit=unit)
          for name in ("float", "int8", "tflm")}
    per_class = {}
    for i, name in enumerate(labels):
        f, q = ev["float"]["per_class"][name], ev["int8"]["per_class"][name]
        mine = y == i
        per_class[name] = {
            "support": f["support"],
            "changed_share": float(np.mean(pred["float"][mine] != pred["int8"][mine])) if mine.any() else 0.0,
            "float_recall": f["recall"], "int8_recall": q["recall"], "recall_delta": q["recall"] - f["recall"],
            "float_f1": f["f1"], "int8_f1": q["f1"], "f1_delta": q["f1"] - f["f1"],
        }
    return {
        "windows": int(len(y)),
        "clusters": ev["float"]["clusters"],
        "float": ev["float"],
        "int8": ev["int8"],
        "tflm": ev["tflm"],
        "int8_runtime": "LiteRT reference kernels (TFLM's arithmetic)",
        "int8_default_kernels": metrics.scores(y, pred["int8_default"], k) if default_ok
        else {"not_run": outs.int8_default},
        "delta_int8_minus_float": {
            m: metrics.paired_delta(y, pred["float"], pred["int8"], k, m, clusters, seed=seed) for m in HEADLINE
        },
        "mcnemar_float_vs_int8": metrics.mcnemar(pred["float"] == y, pred["int8"] == y),
        "per_class": per_class,
        "agreement": {
            "float_int8": float(np.mean(pred["float"] == pred["int8"])),
            "float_tflm": float(np.mean(pred["float"] == pred["tflm"])),
            "int8_int8_default_kernels": float(np.mean(pred["int8"] == pred["int8_default"])) if default_ok else None,
        },
        "litert_vs_tflm": {
            "reference_kernels": runtime_match(outs.int8, outs.tflm),
            "default_kernels": {
                **(runtime_match(outs.int8_default, outs.tflm) if default_ok
                   else {"top1_agreement": None, "bit_identical_share": None, "max_lsb_difference": None,
                         "not_run": outs.int8_default}),
                "gated": False,
                "why": "LiteRT's default kernels (XNNPACK, optimized builtins) round requantization "
                "differently and approximate softmax; TFLM implements the reference arithmetic",
            },
        },
        "output_error": {
            **output_error(outs.float, dequantize_int8(outs.int8, out_scale, out_zp)),
            "compared": "dequantized int8 output (LiteRT reference kernels) vs float output, "
            "all values of all windows",
        },
    }


ACCURACY_GATES = ("balanced_accuracy_drop", "float_int8_agreement")
"""The gates ``--accept-drop`` may override: what int8 costs in accuracy. The LiteRT/TFLM
agreement is not one of them: a disagreement there is an implementation fault."""


def accuracy_gates(val: dict, q) -> dict:
    drop = val["float"]["balanced_accuracy"] - val["int8"]["balanced_accuracy"]
    delta = val["delta_int8_minus_float"]["balanced_accuracy"]
    ref = val["litert_vs_tflm"]["reference_kernels"]

    def gate(value, rule, threshold, **extra):
        passed = value <= threshold if rule == "<=" else value >= threshold
        return {"value": value, "rule": rule, "threshold": threshold, "passed": bool(passed), **extra}

    return {
        # The point estimate is gated; its 95% interval (paired, resampling whole groups)
        # is beside it so a reader sees how sure the drop is.
        "balanced_accuracy_drop": gate(drop, "<=", q.max_balanced_accuracy_drop,
                                       ci95=[-delta["ci95"][1], -delta["ci95"][0]]),
        "float_int8_agreement": gate(val["agreement"]["float_int8"], ">=", q.min_float_int8_agreement),
        "litert_tflm_agreement": gate(ref["top1_agreement"], ">=", q.min_tflm_agreement),
    }


def worst_classes(val: dict, n: int = 3) -> list[str]:
    """The classes int8 hurt most: largest recall drop, then most predictions changed."""
    rows = sorted(val["per_class"].items(), key=lambda kv: (kv[1]["recall_delta"], -kv[1]["changed_share"]))
    hurt = [(name, r) for name, r in rows if r["recall_delta"] < 0 or r["changed_share"] > 0][:n]
    return [f"{name} (recall {r['float_recall']:.3f} -> {r['int8_recall']:.3f}, "
            f"{r['changed_share']:.0%} of its windows change class)" for name, r in hurt] or ["none (no class changed)"]


# --------------------------------------------------------------------------- budget


def board_section(board_name: str, q, model_bytes: int, arena_bytes: int) -> dict:
    board = get_board(board_name)
    flash_budget, ram_budget = model_budgets(q, board_name)
    return {
        "profile": {"name": board.name, "title": board.title, "mcu": board.mcu, "core": board.core,
                    "clock_hz": board.clock_hz, "flash_bytes": board.flash_bytes, "ram_bytes": board.ram_bytes},
        "budgets": {
            "flash_bytes": flash_budget, "ram_bytes": ram_budget,
            "flash_source": "[quantize] flash_budget_bytes" if q.flash_budget_bytes
            else f"board flash minus flash_reserve {q.flash_reserve}",
            "ram_source": "[quantize] ram_budget_bytes" if q.ram_budget_bytes
            else f"board RAM minus ram_reserve {q.ram_reserve}",
        },
        "fits": {
            "flash": {"used_bytes": model_bytes, "what": "the model's bytes",
                      "budget_bytes": flash_budget, "passed": model_bytes <= flash_budget},
            "ram": {"used_bytes": arena_bytes, "what": "kTensorArenaSize (min arena x (1 + margin), 64-bit host)",
                    "budget_bytes": ram_budget, "passed": arena_bytes <= ram_budget},
        },
    }


def latency_estimates(macs: int, configured: str) -> dict:
    return {name: {**b.latency_estimate(macs), "configured": name == configured} for name, b in BOARDS.items()}


# --------------------------------------------------------------------------- the stage


# Remedies for an int8 model that misses an accuracy gate, tried in this order; the first
# that meets every gate is kept (what each gave is in the report under "remedies").
REMEDIES = {
    "graph": "normalization inside the int8 graph: the device quantizes raw sensor values",
    "device": "normalization as a float step on the device before the int8 graph (as Edge "
              "Impulse's DSP runs in float); its constants are in int8.tflite's metadata",
    "device_trim": "device normalization, and activation ranges calibrated without the training "
                   "windows whose float logits are the most extreme (above the 90th percentile "
                   "of their largest |logit|): a few very confident windows otherwise set the scale of "
                   "the logits, and borderline windows flip; the windows left out are clamped on the device",
}
LADDER = tuple(REMEDIES)
# Share of training windows device_trim leaves out of calibration, by largest |logit|.
# Measured on the accelerometer + gyroscope generator (tests/sensor_data.py), where the
# logits of saturated shakes reach -885 and their int8 step is 4 logit units: leaving out
# 1% / 5% / 10% gave float/int8 agreement 0.984 / 0.988 / 0.992 and a balanced-accuracy
# change of -1.6 / -1.2 / -0.8 points (0.973 and -2.7 with none left out).
TRIM_SHARE = 0.10


class NotApplicable(Exception):
    """A remedy this model cannot take (e.g. device normalization without a normalize layer)."""


@dataclass
class Candidate:
    """One int8 conversion and everything measured about it on the validation windows."""

    remedy: str
    data: bytes
    seconds: float
    norm: InputNormalization | None
    info: ModelInfo
    arena: object  # ArenaMeasurement
    arena_bytes: int
    outs: Outputs
    val: dict

    @property
    def passed(self) -> bool:
        return all(g["passed"] for g in self.val["gates"].values())

    def summary(self) -> dict:
        v = self.val
        d = v["delta_int8_minus_float"]["balanced_accuracy"]
        return {
            "remedy": self.remedy, "what": REMEDIES.get(self.remedy, self.remedy),
            "float_int8_agreement": v["agreement"]["float_int8"],
            "balanced_accuracy_delta": d["delta"], "balanced_accuracy_delta_ci95": d["ci95"],
            "litert_tflm_agreement": v["litert_vs_tflm"]["reference_kernels"]["top1_agreement"],
            "input_clipping_windows_share": v["input_clipping"]["windows_share"],
            "gates_passed": self.passed, "model_sha256": sha256_bytes(self.data),
        }


def convert_remedy(remedy: str, model, calib_x: np.ndarray, q, layer_types: dict[str, str]
                   ) -> tuple[bytes, float, InputNormalization | None]:
    """The int8 model of one remedy: (bytes, seconds, the device's float input step or None)."""
    if remedy == "graph":
        data, seconds = convert_int8(model, calib_x, q.per_channel, layer_types)
        return data, seconds, None
    from pipeline.ml.model import input_normalization, without_normalization

    norm = input_normalization(model)
    if norm is None:
        raise NotApplicable("the model has no 'normalize' layer")
    if remedy == "device_trim":
        calib_x = calib_x[~most_extreme_logits(model, calib_x, TRIM_SHARE)]
    xs = normalize_input(calib_x, norm)
    data, seconds = convert_int8(without_normalization(model), xs, q.per_channel, layer_types)
    return with_input_normalization(data, norm), seconds, norm


def most_extreme_logits(model, x: np.ndarray, share: float) -> np.ndarray:
    """Mask of the windows (about ``share`` of them) whose float logits reach the largest
    magnitude. The logits are the input of the final softmax Dense layer times its weights."""
    import keras

    head = model.layers[-1]
    if type(head).__name__ != "Dense" or getattr(head.activation, "__name__", "") != "softmax":
        raise NotApplicable("the model does not end in a softmax Dense layer")
    features = keras.Model(model.inputs, head.input).predict(np.asarray(x, np.float32), batch_size=256, verbose=0)
    w, b = head.get_weights()
    span = np.abs(features.reshape(len(x), -1) @ w + b).max(axis=1)
    return span > np.quantile(span, 1.0 - share)


def evaluate_candidate(cfg, inputs: StageInputs, remedy: str, data: bytes, seconds: float,
                       norm: InputNormalization | None) -> Candidate:
    """Op check, arena, and the float / int8 / TFLM comparison on validation, with gates."""
    q = cfg.quantize
    info = inspect_model(data, inputs.layer_types)
    require_tflm_ops(info, inputs.layer_types)
    arena = measure_arena(data)
    arena_bytes = arena.exported(q.arena_margin)
    val_w = inputs.windows["val"]
    outs = run_all(inputs.model, data, val_w.X, info, arena_bytes, norm)
    val = compare(outs, val_w.y, inputs.labels, cv_groups(val_w, inputs.prepared.plan), cfg.seed,
                  info.output.scales[0], info.output.zero_points[0], unit=inputs.prepared.cluster_word)
    val["split"] = "val"
    val["input_clipping"] = input_clipping(normalize_input(val_w.X, norm), info.input.scales[0],
                                           info.input.zero_points[0])
    val["gates"] = accuracy_gates(val, q)
    return Candidate(remedy, data, seconds, norm, info, arena, arena_bytes, outs, val)


def quantize(cfg, run_dir: str | Path, out: Callable[[str], None] = print) -> dict:
    """Convert, check, budget and export the run's float model; return the report."""
    q = cfg.quantize
    run_dir = Path(run_dir)
    inputs = load_inputs(cfg, run_dir)
    train = inputs.windows["train"]
    eligible = drop_outliers(train, q.calibration_outlier_z)
    calib = calibration_set(eligible, q.calibration_windows, cfg.seed)
    calibration = calibration_record(calib, q, inputs.labels, cfg.seed, len(train) - len(eligible), len(train))
    ladder = LADDER if q.input_handling == "auto" else (q.input_handling,)
    tried: list[Candidate] = []
    skipped: list[dict] = []
    for remedy in ladder:
        try:
            data, seconds, norm = convert_remedy(remedy, inputs.model, calib.X, q, inputs.layer_types)
        except NotApplicable as exc:
            skipped.append({"remedy": remedy, "what": REMEDIES[remedy], "skipped": str(exc)})
            continue
        except GateFailed as exc:
            _reject(run_dir, None, {
                "stage": "quantize", "labels": inputs.labels, "calibration": calibration,
                "conversion": {"per_channel": q.per_channel, "remedy": remedy, "error": exc.message},
                "gates_passed": False, "failures": [exc.message],
            })
            raise
        try:
            cand = evaluate_candidate(cfg, inputs, remedy, data, seconds, norm)
        except GateFailed as exc:  # an op TFLM lacks, a model TFLM cannot run: no remedy helps
            info = inspect_model(data, inputs.layer_types)
            report = _base_report(cfg, inputs, calibration, data, seconds, info, remedy, norm)
            report["failures"] = [exc.message]
            _reject(run_dir, data, report)
            raise
        tried.append(cand)
        if len(ladder) > 1:
            out(f"quantize: remedy {remedy!r}: float/int8 agreement {cand.val['agreement']['float_int8']:.3f}, "
                f"balanced accuracy {cand.val['delta_int8_minus_float']['balanced_accuracy']['delta']:+.3f}"
                f" -> {'meets the gates' if cand.passed else 'misses a gate'}")
        if cand.passed:
            break
    if not tried:
        raise PipelineError(f"[quantize] input_handling {q.input_handling!r}: "
                            + "; ".join(x["skipped"] for x in skipped),
                            hint="use input_handling = \"graph\" (or \"auto\")")
    # The first that meets the gates; if none does, the one int8 hurt least, for inspection.
    chosen = tried[-1] if tried[-1].passed else max(
        tried, key=lambda c: (c.val["agreement"]["float_int8"], -tried.index(c)))
    remedies = {"tried": [c.summary() for c in tried] + skipped, "kept": chosen.remedy,
                "order": list(ladder),
                "qat": "not tried: quantization-aware training needs tensorflow-model-optimization, "
                       "which supports only Keras 2 (tf_keras), not the Keras 3 model trained here"}
    return check_and_export(cfg, run_dir, inputs, calibration, chosen.data, chosen.seconds, out,
                            candidate=chosen, remedies=remedies)


def _base_report(cfg, inputs: StageInputs, calibration: dict, data: bytes, seconds: float,
                 info: ModelInfo, remedy: str, norm: InputNormalization | None) -> dict:
    q = cfg.quantize
    return {
        "stage": "quantize",
        "labels": inputs.labels,
        "model_sha256": sha256_bytes(data),
        "calibration": calibration,
        "conversion": {
            "per_channel": q.per_channel,
            "seconds": round(seconds, 3),
            "remedy": remedy,
            "input": _tensor_record(info.input),
            "output": _tensor_record(info.output),
            "input_normalization": None if norm is None else {
                "where": "device, float32, before the int8 graph",
                "metadata": NORMALIZATION_METADATA,
                "formula": "q = quantize_int8((x - mean[c]) * inv_std[c], input scale, zero point), "
                           "c = flat index % channels",
                "mean": list(norm.mean), "inv_std": list(norm.inv_std)},
            "weights": "int8 per-channel" if q.per_channel else "int8 per-tensor",
            "activations": "int8",
            "host_input_rounding": "round half away from zero, then clamp to int8 (as TFLite)",
            "host_interpreter": host_interpreter()[2],
        },
        "ops": info.ops_table(),
        "tflm_ops": {"supported": not info.unsupported_ops(), "resolver": info.resolver_ops(),
                     "unsupported": sorted({op.name for op in info.unsupported_ops()})},
        "macs": {"per_layer": info.macs_per_layer(), "total": info.total_macs, "counted": MACS_NOTE},
        "latency_estimates": latency_estimates(info.total_macs, q.board),
        "gates_passed": False,
    }


def check_and_export(cfg, run_dir: str | Path, inputs: StageInputs, calibration: dict, data: bytes,
                     seconds: float, out: Callable[[str], None] = print, candidate: Candidate | None = None,
                     remedies: dict | None = None, norm: InputNormalization | None = None) -> dict:
    """Everything after conversion: op check, arena, comparisons, gates, per-layer
    comparison, test look, export (``candidate``: already evaluated by ``quantize``)."""
    run_dir = Path(run_dir)
    q = cfg.quantize
    labels = inputs.labels
    if candidate is None:
        norm = norm if norm is not None else read_input_normalization(data)
        try:
            candidate = evaluate_candidate(cfg, inputs, "given", data, seconds, norm)
        except GateFailed as exc:
            report = _base_report(cfg, inputs, calibration, data, seconds,
                                  inspect_model(data, inputs.layer_types), "given", norm)
            report["failures"] = [exc.message]
            _reject(run_dir, data, report)
            raise
    norm, info, sha = candidate.norm, candidate.info, sha256_bytes(data)
    report = _base_report(cfg, inputs, calibration, data, seconds, info, candidate.remedy, norm)
    if remedies is not None:
        report["remedies"] = remedies
    arena_bytes = candidate.arena_bytes
    report["memory"] = {"model_bytes": len(data), **candidate.arena.as_dict(q.arena_margin)}
    report["board"] = board_section(q.board, q, len(data), arena_bytes)
    val = candidate.val
    report["validation"] = val

    val_w = inputs.windows["val"]
    x_q = model_input(val_w.X, info.input.scales[0], info.input.zero_points[0], norm)
    try:
        layers = compare_layers(inputs.model, data, info, val_w.X, x_q, normalize_input(val_w.X, norm),
                                "normalize" if norm is not None else inputs.model.layers[0].name)
    except Exception as exc:  # a diagnostic: a model it cannot take apart must not stop the stage
        layers = {"error": f"{type(exc).__name__}: {str(exc).strip()[:300]}", "jump": None}
    report["per_layer"] = layers

    gate_failures = {name: _gate_message(name, g) for name, g in val["gates"].items() if not g["passed"]}
    failures = list(gate_failures.values())
    if failures:
        where = jump_message(layers.get("jump"))
        if where:
            failures.append(where)
        failures.append("worst classes: " + ", ".join(worst_classes(val)))
        clip = val["input_clipping"]
        if clip["windows_share"] > 0:
            failures.append(f"{clip['windows_share']:.0%} of val windows have inputs outside the int8 range "
                            f"[{clip['range'][0]:.3g}, {clip['range'][1]:.3g}] seen in calibration (clamped)")
    board_failures = []
    for part, fit in report["board"]["fits"].items():
        if not fit["passed"]:
            board_failures.append(
                f"{part}: {fit['used_bytes']:,} B ({fit['what']}) over the {q.board} budget of "
                f"{fit['budget_bytes']:,} B ({report['board']['budgets'][part + '_source']})")
    failures += board_failures
    overridable = bool(gate_failures) and set(gate_failures) <= set(ACCURACY_GATES) and not board_failures
    if failures and q.accept_drop and overridable:
        # The override goes first in the report, so it is the first thing a reader sees.
        report = {"override": {
            "accept_drop": True,
            "failed_gates": sorted(gate_failures),
            "failures": failures,
            "note": "exported with --accept-drop ([quantize] accept_drop = true) although it missed "
                    "the accuracy gate(s) above",
        }, **report}
        out("quantize: OVERRIDE --accept-drop: exporting a model that missed " + "; ".join(gate_failures.values()))
        failures = []
    report["failures"] = failures
    if failures:
        _reject(run_dir, data, report)
        _summary(report, out)
        raise GateFailed(
            "quantize gate(s) failed: " + "; ".join(failures),
            hint=f"the numbers are in {run_dir / REPORT}; the rejected model is {run_dir / REJECTED}"
            + ("; `tinyml quantize --accept-drop` exports it anyway, recorded as an override"
               if overridable else ""),
        )

    report["gates_passed"] = "override" not in report
    report["test"] = _test_look(cfg, run_dir, inputs, data, info, arena_bytes, sha, norm)
    firmware = _firmware_texts(data, sha, info, labels, arena_bytes, q.board,
                               inputs.prepared.manifest["dataset"].get("rate_hz"), norm)
    report["firmware"] = {"dir": FIRMWARE, "array": export.ARRAY, "length": export.LENGTH, "alignment": 16,
                          "files": {f"{FIRMWARE}/{name}": sha256_bytes(text.encode("utf-8"))
                                    for name, text in firmware.items()}}
    _publish(run_dir, data, report, firmware)
    _summary(report, out)
    return report


def _publish(run_dir: Path, data: bytes, report: dict, firmware: dict[str, str]) -> None:
    """One unit: the old model goes first, then the report naming the new model's SHA-256,
    then the firmware files and the model. A kill at any point leaves either no model or a
    report that names a model the reader can check (issue 13)."""
    (run_dir / MODEL).unlink(missing_ok=True)
    write_json(run_dir / REPORT, report)
    for name, text in firmware.items():
        write_text(run_dir / FIRMWARE / name, text)
    write_bytes(run_dir / MODEL, data)
    (run_dir / REJECTED).unlink(missing_ok=True)


def _tensor_record(t) -> dict:
    return {"shape": list(t.shape), "dtype": t.dtype, "scale": t.scales[0] if t.scales else None,
            "zero_point": t.zero_points[0] if t.zero_points else None}


def _gate_message(name: str, g: dict) -> str:
    fail_rule = ">" if g["rule"] == "<=" else "<"
    fmt = (lambda v: str(v)) if isinstance(g["value"], int) else (lambda v: f"{v:.4f}")
    return f"{name} {fmt(g['value'])} {fail_rule} {fmt(g['threshold'])} (val)"


def _reject(run_dir: Path, data: bytes | None, report: dict) -> None:
    """A model that failed a gate is kept for inspection, never left where make or the
    flash step would take it for the deployable one; the report says what failed. The
    failure report is written first, so no earlier success report is ever left beside a
    missing model, and a report that cannot be written leaves the old model in place."""
    if data is not None:
        report["rejected_model"] = REJECTED
        report["rejected_model_sha256"] = sha256_bytes(data)
    write_json(run_dir / REPORT, report)
    for stale in [run_dir / MODEL, run_dir / REJECTED, *(run_dir / FIRMWARE / f for f in FIRMWARE_FILES)]:
        stale.unlink(missing_ok=True)
    if data is not None:
        write_bytes(run_dir / REJECTED, data)


def _test_look(cfg, run_dir: Path, inputs: StageInputs, data: bytes, info: ModelInfo,
               arena_bytes: int, sha: str, norm: InputNormalization | None = None) -> dict:
    """The deployable int8 model on the test split: once, recorded in the ledger."""
    test_w = inputs.windows["test"]
    inp = info.input
    x_q = model_input(test_w.X, inp.scales[0], inp.zero_points[0], norm)
    int8 = run_litert(data, x_q, reference=True)
    tflm = TFLMRunner(data, arena_bytes).predict(x_q)
    clusters = cv_groups(test_w, inputs.prepared.plan)
    result = metrics.evaluate(test_w.y, int8.argmax(1), inputs.labels, clusters=clusters, seed=cfg.seed,
                              unit=inputs.prepared.cluster_word)
    entry = record_test_look(run_dir, "quantize", TEST_PURPOSE, sha, result,
                             split_sha256=inputs.prepared.manifest["test_sha256"])
    return {
        "split": "test",
        "model": "int8 (LiteRT reference kernels)",
        **result,
        "litert_vs_tflm": runtime_match(int8, tflm),
        "ledger": {"purpose": TEST_PURPOSE, "look": entry["look"], "warning": entry.get("warning")},
    }


def _firmware_texts(data: bytes, sha: str, info: ModelInfo, labels: list[str], arena_bytes: int,
                    board: str, rate_hz, norm: InputNormalization | None) -> dict[str, str]:
    channels = int(info.input.shape[-1]) if info.input.shape else 1
    norm = norm or InputNormalization.identity(channels)
    settings = export.ModelSettings(
        labels=labels, input_shape=list(info.input.shape),
        input_scale=info.input.scales[0], input_zero_point=info.input.zero_points[0],
        output_scale=info.output.scales[0], output_zero_point=info.output.zero_points[0],
        arena_bytes=arena_bytes, macs=info.total_macs, ops=info.resolver_ops(), sha256=sha,
        board=board, sample_rate_hz=float(rate_hz or 0.0),
        input_mean=list(norm.mean), input_inv_std=list(norm.inv_std),
    )
    return {
        "model_data.h": export.model_data_h(),
        "model_data.cc": export.model_data_cc(data, MODEL, sha),
        "model_settings.h": export.model_settings_h(settings),
    }


# --------------------------------------------------------------------------- summary


def _summary(report: dict, out: Callable[[str], None]) -> None:
    if report.get("override"):
        out("OVERRIDE: " + report["override"]["note"] + ": " + "; ".join(report["override"]["failed_gates"]))
    val = report.get("validation")
    conv = report["conversion"]
    cal = report["calibration"]
    out(f"quantize: full int8 ({conv['weights']} weights), calibrated on {cal['windows']} train windows "
        f"({cal['outlier_windows_left_out']} outlier windows left out), converted in {conv['seconds']:.1f} s; "
        f"input: {REMEDIES.get(conv.get('remedy'), conv.get('remedy'))}")
    if val:
        out(f"validation split: {val['windows']} windows, {val['clusters']} groups")
        out(f"  {'':<22}{'float':>10}{'int8 LiteRT':>14}{'int8 TFLM':>12}   (LiteRT: reference kernels)")
        for m in HEADLINE:
            out(f"  {m.replace('_', ' '):<22}{val['float'][m]:>10.3f}{val['int8'][m]:>14.3f}{val['tflm'][m]:>12.3f}")
        ag = val["agreement"]
        out(f"  {'top-1 agreement':<22}{'(float)':>10}{ag['float_int8']:>14.3f}{ag['float_tflm']:>12.3f}")
        rf = val["litert_vs_tflm"]["reference_kernels"]
        df = val["litert_vs_tflm"]["default_kernels"]
        dflt = (f"not run: {df['not_run']}" if df.get("not_run") else
                f"top-1 {df['top1_agreement']:.3f}, bit-identical {df['bit_identical_share']:.1%}, "
                f"max {df['max_lsb_difference']} LSB")
        out(f"  LiteRT vs TFLM: top-1 {rf['top1_agreement']:.3f}, bit-identical {rf['bit_identical_share']:.1%}, "
            f"max {rf['max_lsb_difference']} LSB (LiteRT default kernels, not gated: {dflt})")
        d = val["delta_int8_minus_float"]["balanced_accuracy"]
        e = val["output_error"]
        clip = val["input_clipping"]
        if clip["windows_share"] > 0:
            out(f"  {clip['windows_share']:.1%} of windows have inputs outside the int8 input range "
                f"[{clip['range'][0]:.3g}, {clip['range'][1]:.3g}] (clamped)")
        out(f"  int8 - float balanced accuracy {d['delta']:+.3f} [{d['ci95'][0]:+.3f}, {d['ci95'][1]:+.3f}], "
            f"McNemar p={val['mcnemar_float_vs_int8']['p_value']:.3g}; output RMSE {e['rmse']:.4f}, "
            f"cosine {'n/a' if e['cosine_similarity'] is None else format(e['cosine_similarity'], '.5f')}")
        for name, g in val["gates"].items():
            value = g["value"] if isinstance(g["value"], int) else round(g["value"], 4)
            ci = f" (95% CI [{g['ci95'][0]:+.3f}, {g['ci95'][1]:+.3f}])" if g.get("ci95") else ""
            out(f"  gate {name}: {value}{ci} {g['rule']} {g['threshold']}  {'ok' if g['passed'] else 'FAILED'}")
    layers = report.get("per_layer")
    if layers and layers.get("error"):
        out(f"per layer: not compared ({layers['error']})")
    elif layers:
        out(f"per layer on {layers['windows']} val windows: float vs int8 (dequantized), and LiteRT vs TFLM "
            "in LSB (reported, not gated)")
        for line in summary_lines(layers):
            out(line)
        msg = jump_message(layers["jump"])
        if msg and layers["jump"]["significant"]:
            out("  " + msg)
    rem = report.get("remedies")
    if rem and len(rem["tried"]) > 1:
        out("remedies tried in order: " + ", ".join(
            f"{r['remedy']} ({'skipped' if 'skipped' in r else format(r['float_int8_agreement'], '.3f') + ' agreement'})"
            for r in rem["tried"]) + f"; kept {rem['kept']!r}")
    board = report.get("board")
    mem = report.get("memory")
    if board and mem:
        b = board["profile"]
        fits = board["fits"]
        out(f"board {b['name']} ({b['title']}):")
        out(f"  flash  {mem['model_bytes']:>9,} B model          budget {fits['flash']['budget_bytes']:>9,} B  "
            f"{'ok' if fits['flash']['passed'] else 'DOES NOT FIT'}")
        out(f"  RAM    {mem['arena_bytes_exported']:>9,} B tensor arena   budget {fits['ram']['budget_bytes']:>9,} B  "
            f"{'ok' if fits['ram']['passed'] else 'DOES NOT FIT'}")
        out(f"         (min {mem['arena_min_bytes']:,} B by bisection + {mem['margin']:.0%} margin; "
            f"recorded {mem['arena_recorded_bytes']:,} B; {HOST_FIGURE}s)")
    macs = report["macs"]["total"]
    est = next(e for e in report["latency_estimates"].values() if e["configured"])
    out(f"  MACs   {macs:>9,}  estimated latency {est['reference_kernels_ms']:.2f} ms (reference kernels), "
        f"{est['optimized_kernels_ms']:.2f} ms (optimized) - estimated, not measured")
    test = report.get("test")
    if test:
        ci = test["ci95"]["balanced_accuracy"]
        out(f"test split (int8, look {test['ledger']['look']} in test_ledger.jsonl): balanced accuracy "
            f"{metrics.format_metric(test['balanced_accuracy'], ci)}, macro-F1 {test['macro_f1']:.3f}")
    if report.get("gates_passed"):
        out(f"wrote {MODEL}, {REPORT}, " + ", ".join(report["firmware"]["files"]))
    else:
        out(f"gates failed: wrote {REPORT} and {REJECTED}")
