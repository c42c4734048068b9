"""The TFLM runtime of the virtual device: boot probe and inference, on pipeline.tflite.runtime.

The TFLM Python runtime can crash the whole process (SIGSEGV) when it is constructed with
too small an arena, and the allocation total it records is below the true minimum arena
(the allocator's own objects live in the arena too). So whether a model boots within a
board's RAM is decided by ``pipeline.tflite.runtime.probe`` in a child process, which also measures
the true minimum arena by bisection; the in-process interpreter is built only when the
probe says the model boots.
"""

from __future__ import annotations

import hashlib
import threading
import time
from dataclasses import dataclass

import numpy as np

from pipeline.core.errors import BridgeError, PipelineError
from pipeline.tflite import runtime as tflm


@dataclass(frozen=True)
class ProbedModel:
    """What TFLM measured of a model when the boot probe loaded it: its input and output
    (shape, type, quantization), the arena it needs, its input normalization. Not the model
    file's graph (pipeline.tflite.flatbuffer.ModelInfo): these come from the interpreter."""

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
    """The smallest arena TFLM loads and runs the model in, on this (64-bit) host, by bisection."""
    recorded_arena_bytes: int | None
    """TFLM's RecordingMicroAllocator total: below the true minimum (see the module docstring)."""
    input_normalization: tflm.InputNormalization | None = None
    """The float step before int8 quantization, from the model's own metadata (None: none)."""

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
    facts: ProbedModel


# ---------------------------------------------------------------------------------------
# The probe (runs in a child process: pipeline.tflite.runtime.probe)
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
    try:
        found = tflm.probe(data, int(arena_cap_bytes))
    except PipelineError as exc:
        raise BridgeError(f"{source}: {exc.message}") from None
    if found.error:
        raise BridgeError(f"{source}: not a model TFLM can run ({found.error})",
                          hint="expected an int8 .tflite file (models/int8.tflite)")
    i, o = found.input, found.output
    try:
        norm = tflm.read_input_normalization(data, source)
    except PipelineError as exc:
        raise BridgeError(exc.message) from None
    facts = ProbedModel(
        sha256=sha, input_shape=i.shape, input_dtype=i.dtype, input_scale=i.scale, input_zero_point=i.zero_point,
        output_shape=o.shape, output_dtype=o.dtype, output_scale=o.scale, output_zero_point=o.zero_point,
        min_arena_bytes=found.min_bytes, recorded_arena_bytes=found.recorded_bytes, input_normalization=norm,
    )
    probe = BootProbe(boots=found.ok, arena_cap_bytes=int(arena_cap_bytes), facts=facts)
    with _probe_lock:
        _probe_cache[key] = probe
    return probe


# ---------------------------------------------------------------------------------------
# Inference, as firmware does it
# ---------------------------------------------------------------------------------------


class TflmModel:
    """The in-process TFLM interpreter; build it only after ``probe_model`` said it boots."""

    def __init__(self, data: bytes, probe: BootProbe):
        if not probe.boots:
            raise ValueError("the probe says this model does not boot within its arena cap")
        self.facts = probe.facts
        try:
            self._runner = tflm.TFLMRunner(data, probe.arena_cap_bytes)
        except PipelineError as exc:
            raise BridgeError(exc.message, hint=exc.hint) from None
        self._lock = threading.Lock()

    def classify(self, features: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
        """One input frame (float32, flat) -> (raw output, probabilities, invoke seconds)."""
        f = self.facts
        x = np.asarray(features, dtype=np.float32).reshape(f.input_shape)
        if f.input_dtype == "int8":
            x = tflm.model_input(x, f.input_scale, f.input_zero_point, f.input_normalization)
        with self._lock:
            start = time.perf_counter()
            raw = self._runner.invoke(x)
            elapsed = time.perf_counter() - start
        if f.output_dtype == "int8":
            # float64: the device prints 6 decimals, which must equal the host's exactly.
            probabilities = tflm.dequantize_int8(raw, f.output_scale, f.output_zero_point, np.float64)
        else:
            probabilities = raw.astype(np.float64)
        return raw, probabilities, elapsed
