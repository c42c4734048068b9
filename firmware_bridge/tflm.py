"""The TFLM runtime of the virtual device: boot probe, arena measurement, inference.

The TFLM Python runtime can crash the whole process (SIGSEGV) when it is constructed with
too small an arena, and the allocation total it records is below the true minimum arena
(the allocator's own objects live in the arena too). So whether a model boots within a
board's RAM is decided in a child process, which also measures the true minimum arena by
bisection, each trial in a forked grandchild; the in-process interpreter is built only
when the probe says the model boots.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from firmware_bridge.errors import BridgeError

# An arena this large holds any model a microcontroller could run: if a model does not
# allocate in it, it is not a model TFLM can run at all.
LOAD_CHECK_ARENA = 64 * 1024 * 1024
PROBE_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class ModelFacts:
    """What the device knows about its model, read from the model itself by TFLM."""

    sha256: str
    input_shape: tuple[int, ...]
    input_dtype: str
    input_scale: float
    input_zero_point: int
    output_shape: tuple[int, ...]
    output_dtype: str
    output_scale: float
    output_zero_point: int
    min_arena_bytes: int
    """The smallest arena TFLM constructs in, measured on this (64-bit) host by bisection."""
    recorded_arena_bytes: int | None
    """TFLM's RecordingMicroAllocator total: below the true minimum (see the module docstring)."""

    @property
    def input_size(self) -> int:
        return int(np.prod(self.input_shape))

    @property
    def classes(self) -> int:
        return int(np.prod(self.output_shape))


@dataclass(frozen=True)
class BootProbe:
    """Whether a model boots in an arena capped at ``arena_cap_bytes``."""

    boots: bool
    arena_cap_bytes: int
    facts: ModelFacts


# ---------------------------------------------------------------------------------------
# The probe (runs in a child process; see _probe_main)
# ---------------------------------------------------------------------------------------

_probe_cache: dict[tuple[str, int], BootProbe] = {}
_probe_lock = threading.Lock()


def probe_model(data: bytes, arena_cap_bytes: int, source: str = "model") -> BootProbe:
    """Boot ``data`` in a child process with the arena capped; measure its minimum arena.

    Raises BridgeError when TFLM cannot load the model at all (not a .tflite, unsupported
    op). Results are cached per (model, cap): the probe costs a Python start-up.
    """
    sha = hashlib.sha256(data).hexdigest()
    key = (sha, int(arena_cap_bytes))
    with _probe_lock:
        if key in _probe_cache:
            return _probe_cache[key]
    root = str(Path(__file__).resolve().parent.parent)
    env = dict(os.environ)
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.setdefault("OPENBLAS_NUM_THREADS", "1")
    cmd = [sys.executable, "-c", "from firmware_bridge.tflm import _probe_main; _probe_main()",
           str(int(arena_cap_bytes))]
    try:
        proc = subprocess.run(cmd, input=data, capture_output=True, env=env, timeout=PROBE_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise BridgeError(f"{source}: the TFLM boot probe did not finish in {PROBE_TIMEOUT_S:.0f} s") from None
    try:
        report = json.loads(proc.stdout.decode("utf-8", "replace").strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        tail = proc.stderr.decode("utf-8", "replace").strip()[-300:]
        raise BridgeError(f"{source}: the TFLM boot probe failed (exit {proc.returncode}): {tail}") from None
    if report.get("error"):
        raise BridgeError(f"{source}: not a model TFLM can run ({report['error']})",
                          hint="expected an int8 .tflite file (models/int8.tflite)")
    raw = report["facts"]
    raw["input_shape"], raw["output_shape"] = tuple(raw["input_shape"]), tuple(raw["output_shape"])
    facts = ModelFacts(sha256=sha, **raw)
    probe = BootProbe(boots=report["boots"], arena_cap_bytes=int(arena_cap_bytes), facts=facts)
    with _probe_lock:
        _probe_cache[key] = probe
    return probe


def _fits(data: bytes, arena: int) -> bool:
    """Construct the interpreter in a forked grandchild: a crash there only fails the trial."""
    from tflite_micro.python.tflite_micro import runtime

    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the grandchild
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
        try:
            runtime.Interpreter.from_bytes(data, arena_size=arena)
            os._exit(0)
        except BaseException:
            os._exit(1)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status) == 0


def _recorded_total(interpreter) -> int | None:
    """The RecordingMicroAllocator total, which TFLM prints on the C-level stderr."""
    import ctypes
    import re
    import tempfile

    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            interpreter.print_allocations()
            ctypes.CDLL(None).fflush(None)
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        tmp.seek(0)
        text = tmp.read().decode("utf-8", "replace")
    m = re.search(r"Arena allocation total (\d+)", text)
    return int(m.group(1)) if m else None


def _details(detail: dict) -> tuple[tuple[int, ...], str, float, int]:
    q = detail.get("quantization_parameters", {})
    scales, zero_points = q.get("scales", []), q.get("zero_points", [])
    return (tuple(int(d) for d in detail["shape"]), np.dtype(detail["dtype"]).name,
            float(scales[0]) if len(scales) else 0.0, int(zero_points[0]) if len(zero_points) else 0)


def _probe_main() -> None:  # pragma: no cover - runs in the probe child
    """Child process: model bytes on stdin, arena cap in argv; one JSON line on stdout."""
    cap = int(sys.argv[1])
    data = sys.stdin.buffer.read()
    out = os.fdopen(os.dup(1), "w")
    # TFLM's own messages would corrupt the JSON line: keep them off stdout.
    os.dup2(2, 1)
    with out:
        out.write(json.dumps(_probe(data, cap)) + "\n")


def _probe(data: bytes, cap: int) -> dict:  # pragma: no cover - runs in the probe child
    from tflite_micro.python.tflite_micro import runtime

    boots = _fits(data, cap)
    working = cap if boots else LOAD_CHECK_ARENA
    if not boots and not _fits(data, working):
        return {"error": "TFLM cannot construct an interpreter for it, even in a 64 MB arena"}
    try:
        interpreter = runtime.Interpreter.from_bytes(data, arena_size=working)
        in_shape, in_dtype, in_scale, in_zp = _details(interpreter.get_input_details(0))
        out_shape, out_dtype, out_scale, out_zp = _details(interpreter.get_output_details(0))
        recorded = _recorded_total(interpreter)
    except Exception as exc:
        return {"error": f"{type(exc).__name__}: {exc}"}
    # Bisection for the smallest arena that constructs: lo fails, hi works.
    lo, hi = 0, working
    if recorded and recorded * 2 < hi and _fits(data, recorded * 2):
        hi = recorded * 2
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if _fits(data, mid):
            hi = mid
        else:
            lo = mid
    facts = {"input_shape": in_shape, "input_dtype": in_dtype, "input_scale": in_scale,
             "input_zero_point": in_zp, "output_shape": out_shape, "output_dtype": out_dtype,
             "output_scale": out_scale, "output_zero_point": out_zp, "min_arena_bytes": hi,
             "recorded_arena_bytes": recorded}
    return {"boots": boots, "facts": facts}


# ---------------------------------------------------------------------------------------
# Inference, as firmware does it
# ---------------------------------------------------------------------------------------


def quantize(values: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    """float32 -> int8 as firmware does: round half away from zero (C roundf), then clip."""
    scaled = np.asarray(values, dtype=np.float32) / np.float32(scale)
    rounded = np.sign(scaled) * np.floor(np.abs(scaled) + np.float32(0.5))
    return np.clip(rounded + zero_point, -128, 127).astype(np.int8)


def dequantize(values: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    return (np.asarray(values, dtype=np.float64) - zero_point) * float(scale)


class TflmModel:
    """The in-process TFLM interpreter; build it only after ``probe_model`` said it boots."""

    def __init__(self, data: bytes, probe: BootProbe):
        if not probe.boots:
            raise ValueError("the probe says this model does not boot within its arena cap")
        from tflite_micro.python.tflite_micro import runtime

        self.facts = probe.facts
        self._interpreter = runtime.Interpreter.from_bytes(data, arena_size=probe.arena_cap_bytes)
        self._lock = threading.Lock()

    def classify(self, features: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
        """One input frame (float32, flat) -> (raw output, probabilities, invoke seconds)."""
        f = self.facts
        x = np.asarray(features, dtype=np.float32).reshape(f.input_shape)
        if f.input_dtype == "int8":
            x = quantize(x, f.input_scale, f.input_zero_point)
        with self._lock:
            self._interpreter.set_input(x, 0)
            start = time.perf_counter()
            self._interpreter.invoke()
            elapsed = time.perf_counter() - start
            raw = np.array(self._interpreter.get_output(0)).reshape(-1)
        if f.output_dtype == "int8":
            probabilities = dequantize(raw, f.output_scale, f.output_zero_point)
        else:
            probabilities = raw.astype(np.float64)
        return raw, probabilities, elapsed
