"""TensorFlow Lite Micro on the host: int8 in and out as firmware does it, the real TFLM
kernels, and the tensor arena a model needs. The quantize stage and the device stage's
host reference run on this module.

Two arena figures, because they differ: the recording allocator's total (what TFLM says
it allocated) and the true minimum, found by bisection. The allocator's own objects live
in the arena too, so the minimum is usually larger than the recorded total. A too-small
arena can crash the process (SIGSEGV) instead of raising, so ``probe`` runs in a child
process and each arena it tries runs in a forked grandchild: a crash fails only that trial.

Both are 64-bit host figures: TFLM's structs hold pointers, which take 8 bytes here and 4
on a 32-bit microcontroller, so the device needs somewhat less than measured here.
"""

from __future__ import annotations

import ctypes
import json
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.core.errors import GateFailed, PipelineError
from pipeline.core.progress import progress
from pipeline.tflite.flatbuffer import add_metadata, read_metadata

ARENA_ALIGN = 16
# Arenas tried in turn until the model runs. The last holds any model a microcontroller
# could run: a model that does not run in it is not a model TFLM can run at all.
ARENA_LADDER = (256 * 1024, 1024 * 1024, 4 * 1024 * 1024, 16 * 1024 * 1024, 64 * 1024 * 1024)
PROBE_TIMEOUT_S = 120.0
HOST_FIGURE = "64-bit host figure"
HOST_NOTE = (
    f"{HOST_FIGURE} (TFLM Python runtime on x86-64): TFLM's structs hold 8-byte pointers "
    "here and 4-byte ones on a 32-bit MCU, so the device needs somewhat less"
)
_RECORDED = re.compile(r"\[RecordingMicroAllocator\] Arena allocation total (\d+) bytes")


def round_up(n: float, to: int = ARENA_ALIGN) -> int:
    return int(-(-int(np.ceil(n)) // to) * to)


# --------------------------------------------------------------------------- int8 <-> float


def quantize_int8(values: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    """float32 -> int8 as TFLite and the firmware do it: round half away from zero (C
    roundf), then clamp. In float32 arithmetic, as on the device. NaN maps to the zero point
    and the scaled value is held in +-1e6 before rounding, as model_ops.h quantize_int8 does."""
    with np.errstate(invalid="ignore", over="ignore"):
        scaled = np.asarray(values, dtype=np.float32) / np.float32(scale)
    scaled = np.clip(np.nan_to_num(scaled, nan=0.0, posinf=1e6, neginf=-1e6), -1e6, 1e6).astype(np.float32)
    rounded = np.sign(scaled) * np.floor(np.abs(scaled) + np.float32(0.5))
    return np.clip(rounded + zero_point, -128, 127).astype(np.int8)


def dequantize_int8(values: np.ndarray, scale: float, zero_point: int,
                    dtype: type[np.floating] = np.float32) -> np.ndarray:
    """int8 -> real values, ``(q - zero_point) * scale`` computed in ``dtype``."""
    return (np.asarray(values, dtype=dtype) - zero_point) * dtype(scale)


# --------------------------------------------------------------------------- the model's input


NORMALIZATION_METADATA = "tinyml.input_normalization"
"""Name of the TFLite metadata entry that holds the float step before the int8 graph."""


@dataclass(frozen=True)
class InputNormalization:
    """The float step a device runs on each raw value before quantizing it to the int8
    input: ``(x - mean[c]) * inv_std[c]`` in float32, ``c = flat index % channels`` (the
    last axis of the input). Edge Impulse's DSP blocks run in float the same way. Stored
    in int8.tflite itself (metadata ``tinyml.input_normalization``), so the model's SHA-256
    covers it; a model without it has the identity (mean 0, inv_std 1)."""

    mean: tuple[float, ...]
    inv_std: tuple[float, ...]

    @classmethod
    def identity(cls, channels: int) -> InputNormalization:
        return cls((0.0,) * channels, (1.0,) * channels)

    @property
    def channels(self) -> int:
        return len(self.mean)

    @property
    def is_identity(self) -> bool:
        return all(m == 0.0 for m in self.mean) and all(s == 1.0 for s in self.inv_std)

    def to_json(self) -> bytes:
        return json.dumps({
            "version": 1,
            "formula": "q = quantize_int8((x - mean[c]) * inv_std[c]), c = flat index % channels, float32",
            "mean": [float(np.float32(v)) for v in self.mean],
            "inv_std": [float(np.float32(v)) for v in self.inv_std],
        }).encode("utf-8")

    @classmethod
    def from_json(cls, raw: bytes, where: str = "int8.tflite") -> InputNormalization:
        try:
            doc = json.loads(bytes(raw).rstrip(b"\0").decode("utf-8"))
            mean = tuple(float(np.float32(v)) for v in doc["mean"])
            inv_std = tuple(float(np.float32(v)) for v in doc["inv_std"])
        except (ValueError, KeyError, TypeError) as exc:
            raise PipelineError(f"{where}: metadata {NORMALIZATION_METADATA} is not valid ({exc})") from None
        if not mean or len(mean) != len(inv_std) or not all(np.isfinite(mean + inv_std)):
            raise PipelineError(f"{where}: metadata {NORMALIZATION_METADATA}: expected finite mean and "
                             "inv_std lists of one length")
        return cls(mean, inv_std)


def normalize_input(values: np.ndarray, norm: InputNormalization | None) -> np.ndarray:
    """The float step before quantization, in float32 as on the device (C: ``(x - m) * s``)."""
    x = np.asarray(values, dtype=np.float32)
    if norm is None:
        return x
    flat = x.reshape(-1, norm.channels)
    return ((flat - np.asarray(norm.mean, np.float32)) * np.asarray(norm.inv_std, np.float32)).reshape(x.shape)


def model_input(values: np.ndarray, scale: float, zero_point: int,
                norm: InputNormalization | None = None) -> np.ndarray:
    """Raw float32 sensor values -> the int8 graph's input, exactly as firmware does it:
    the float normalization step (if the model has one), then ``quantize_int8``. The one
    Python place for it: the quantize stage and the device stage both call it, and the C++
    core's ``tinyml::model_input_int8`` (firmware_bridge/sketch/model_ops.h) mirrors it."""
    return quantize_int8(normalize_input(values, norm), scale, zero_point)


def read_input_normalization(data: bytes, where: str = "int8.tflite") -> InputNormalization | None:
    """The model's float input step from its metadata, or None when it has none."""
    raw = read_metadata(data).get(NORMALIZATION_METADATA)
    return None if raw is None else InputNormalization.from_json(raw, where)


def with_input_normalization(data: bytes, norm: InputNormalization) -> bytes:
    """``data`` with the float input step written into its metadata."""
    return add_metadata(data, NORMALIZATION_METADATA, norm.to_json())


# --------------------------------------------------------------------------- inference


class TFLMRunner:
    """One TFLM interpreter, run one window at a time as on the device. Build it only with
    an arena ``probe`` found enough: too small a one can crash the process."""

    def __init__(self, data: bytes, arena_size: int):
        from tflite_micro.python.tflite_micro import runtime

        try:
            self._interp = runtime.Interpreter.from_bytes(data, arena_size=int(arena_size))
        except RuntimeError as exc:
            raise GateFailed(
                f"TFLM could not load the int8 model with a {arena_size}-byte arena ({exc})",
                hint="TFLM printed the reason on stderr above",
            ) from exc
        self.input_details = self._interp.get_input_details(0)
        self.output_details = self._interp.get_output_details(0)
        self._shape = tuple(int(d) for d in self.input_details["shape"])

    def invoke(self, x: np.ndarray) -> np.ndarray:
        """The flattened output for one input (its values, in the input's dtype)."""
        self._interp.set_input(np.ascontiguousarray(np.reshape(x, self._shape)), 0)
        self._interp.invoke()
        return np.array(self._interp.get_output(0)).reshape(-1)

    def predict(self, x_q: np.ndarray, desc: str = "TFLM") -> np.ndarray:
        """Flattened quantized outputs (n, k) for quantized inputs (n, *input shape[1:])."""
        outs = [self.invoke(x) for x in progress(x_q, desc, total=len(x_q), unit="window")]
        return np.stack(outs) if outs else np.zeros((0, 0), np.int8)


# --------------------------------------------------------------------------- the arena probe


@dataclass(frozen=True)
class TensorFacts:
    shape: tuple[int, ...]
    dtype: str
    scale: float
    zero_point: int


@dataclass(frozen=True)
class ArenaProbe:
    """What the probe child found out about a model."""

    ok: bool
    """The model loads and runs within ``arena_size`` bytes (without one: in some arena)."""
    arena_size: int | None
    error: str | None = None
    """Why TFLM cannot run the model at all; the figures below are then empty."""
    recorded_bytes: int | None = None
    """The recording allocator's total."""
    min_bytes: int | None = None
    """The smallest arena (a multiple of 16) with which the model loads, runs and gives the
    output it gives in a generous one."""
    trials: int = 0
    input: TensorFacts | None = None
    output: TensorFacts | None = None


@dataclass
class ArenaMeasurement:
    recorded_bytes: int
    """The recording allocator's total, at a generous arena."""
    min_bytes: int
    """The smallest arena (a multiple of 16) with which the model runs and gives the same output."""
    trials: int = 0

    def exported(self, margin: float) -> int:
        """min x (1 + margin), rounded up to 16 bytes: the kTensorArenaSize to ship."""
        return round_up(self.min_bytes * (1.0 + margin))

    def as_dict(self, margin: float) -> dict:
        return {
            "arena_recorded_bytes": self.recorded_bytes,
            "arena_min_bytes": self.min_bytes,
            "arena_bytes_exported": self.exported(margin),
            "margin": margin,
            "probes": self.trials,
            "method": "recorded: TFLM RecordingMicroAllocator total at a generous arena; "
            "min: bisection over arena sizes (16-byte steps), each run in a forked child process, "
            "a size passing when the model loads, runs and gives the same output",
            "note": HOST_NOTE,
        }


def probe(model: bytes | str | Path, arena_size: int | None = None) -> ArenaProbe:
    """Whether the model (bytes or a path) runs within ``arena_size`` bytes, its arena
    figures and its input and output, found in a child process."""
    data = model if isinstance(model, bytes) else Path(model).read_bytes()
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[2])  # the directory holding the pipeline package
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.setdefault("OPENBLAS_NUM_THREADS", "1")
    cmd = [sys.executable, "-m", "pipeline.tflite.runtime", *([str(int(arena_size))] if arena_size is not None else [])]
    try:
        proc = subprocess.run(cmd, input=data, capture_output=True, env=env, timeout=PROBE_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise GateFailed(f"the TFLM probe did not finish in {PROBE_TIMEOUT_S:.0f} s") from None
    try:
        report = json.loads(proc.stdout.decode("utf-8", "replace").strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        tail = proc.stderr.decode("utf-8", "replace").strip()[-300:]
        raise GateFailed(f"the TFLM probe failed (exit {proc.returncode}): {tail}") from None
    size = None if arena_size is None else int(arena_size)
    if report.get("error"):
        return ArenaProbe(ok=False, arena_size=size, error=report["error"])
    tensors = {k: TensorFacts(**{**report[k], "shape": tuple(report[k]["shape"])}) for k in ("input", "output")}
    return ArenaProbe(ok=report["ok"], arena_size=size, recorded_bytes=report["recorded_bytes"],
                      min_bytes=report["min_bytes"], trials=report["trials"], **tensors)


def measure_arena(data: bytes) -> ArenaMeasurement:
    """The recorded arena total and the true minimum arena of a model, on this host."""
    found = probe(data)
    if found.error or found.recorded_bytes is None:
        raise GateFailed(
            f"TFLM could not run the int8 model ({found.error or 'it printed no allocation total'})",
            hint="check the ops in quantize_report.json; the model may need an op or type TFLM lacks",
        )
    return ArenaMeasurement(found.recorded_bytes, found.min_bytes, found.trials)


# --------------------------------------------------------------------------- the probe child


def _probe_main(argv: list[str]) -> None:  # pragma: no cover - runs in the probe child
    """Model bytes on stdin, the arena to try in argv (optional); one JSON line on stdout."""
    data = sys.stdin.buffer.read()
    out = os.fdopen(os.dup(1), "w")
    # TFLM's own messages would corrupt the JSON line: keep them off stdout.
    os.dup2(2, 1)
    with out:
        out.write(json.dumps(_probe(data, int(argv[0]) if argv else None)) + "\n")


def _probe(data: bytes, arena_size: int | None) -> dict:  # pragma: no cover - runs in the probe child
    from tflite_micro.python.tflite_micro import runtime

    trials = 0
    with tempfile.TemporaryFile() as log:

        def works(size: int, reference: bytes | None = None) -> bool:
            nonlocal trials
            trials += 1
            return _trial(data, size, reference, log)

        ok = arena_size is not None and works(arena_size)
        working = arena_size if ok else next((size for size in ARENA_LADDER if works(size)), None)
        if working is None:
            log.seek(0)
            text = " | ".join(line.strip() for line in log.read().decode("utf-8", "replace").splitlines()
                              if line.strip())[-600:]
            return {"error": f"it does not run even with a {ARENA_LADDER[-1]}-byte arena: {text or 'no log'}"}
        try:  # in-process: a trial has just run it in this arena
            interpreter = runtime.Interpreter.from_bytes(data, arena_size=working)
            reference = _run_once(interpreter)
            tensors = {"input": _facts(interpreter.get_input_details(0)),
                       "output": _facts(interpreter.get_output_details(0))}
            recorded = _recorded_total(interpreter)
        except Exception as exc:
            return {"error": f"{type(exc).__name__}: {exc}"}
        # Bisection in 16-byte steps between a size that fails and one that works. TFLM
        # aligns the arena to 16 bytes, so no size in between would work either.
        lo, hi = 0, working
        for size in ([round_up(recorded) - ARENA_ALIGN, round_up(recorded), round_up(recorded * 2)]
                     if recorded else []):  # the recorded total usually brackets it closely
            if lo < size < hi:
                lo, hi = (lo, size) if works(size, reference) else (size, hi)
        while hi - lo > ARENA_ALIGN:
            mid = round_up((lo + hi) / 2)
            lo, hi = (lo, mid) if works(mid, reference) else (mid, hi)
    return {"ok": ok or arena_size is None, "recorded_bytes": recorded, "min_bytes": hi, "trials": trials, **tensors}


def _trial(data: bytes, arena: int, reference: bytes | None, log) -> bool:  # pragma: no cover
    """Load and run the model in a forked grandchild with ``arena`` bytes; it passes when it
    gives ``reference`` (if given). TFLM's messages go to ``log``."""
    from tflite_micro.python.tflite_micro import runtime

    os.lseek(log.fileno(), 0, os.SEEK_SET)
    os.ftruncate(log.fileno(), 0)
    pid = os.fork()
    if pid == 0:  # the grandchild: leave only by os._exit
        code = 1
        try:
            os.dup2(log.fileno(), 1)
            os.dup2(log.fileno(), 2)
            output = _run_once(runtime.Interpreter.from_bytes(data, arena_size=arena))
            code = 0 if reference is None or output == reference else 3
        except BaseException as exc:
            os.write(2, f"{type(exc).__name__}: {exc}\n".encode())
        finally:
            _flush_c_stdio()
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status) == 0


def _run_once(interpreter) -> bytes:
    """The output for an all-zero-point input, as bytes to compare across arenas."""
    details = interpreter.get_input_details(0)
    zp = details["quantization_parameters"]["zero_points"]
    interpreter.set_input(np.full(details["shape"], int(zp[0]) if len(zp) else 0, dtype=details["dtype"]), 0)
    interpreter.invoke()
    return np.asarray(interpreter.get_output(0)).tobytes()


def _facts(detail: dict) -> dict:
    q = detail.get("quantization_parameters", {})
    scales, zero_points = q.get("scales", []), q.get("zero_points", [])
    return {"shape": [int(d) for d in detail["shape"]], "dtype": np.dtype(detail["dtype"]).name,
            "scale": float(scales[0]) if len(scales) else 0.0,
            "zero_point": int(zero_points[0]) if len(zero_points) else 0}


def _recorded_total(interpreter) -> int | None:
    """The RecordingMicroAllocator total. TFLM prints it with C-level printf: on fd 1 or fd
    2 depending on the build, so both are read."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 1)
        os.dup2(tmp.fileno(), 2)
        try:
            interpreter.print_allocations()
            _flush_c_stdio()
        finally:
            for fd, copy in zip((1, 2), saved, strict=True):
                os.dup2(copy, fd)
                os.close(copy)
        tmp.seek(0)
        text = tmp.read().decode("utf-8", "replace")
    m = _RECORDED.search(text)
    return int(m.group(1)) if m else None


def _flush_c_stdio() -> None:
    ctypes.CDLL(None).fflush(None)


if __name__ == "__main__":
    _probe_main(sys.argv[1:])
