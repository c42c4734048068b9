"""TensorFlow Lite Micro on the host: run a model with the real TFLM kernels, and measure
the tensor arena it needs.

Two arena figures, because they differ: the recording allocator's total (what TFLM says
it allocated) and the true minimum, found by bisection. The allocator's own objects live
in the arena too, so the minimum is larger than the recorded total. A too-small arena can
crash the process instead of raising, so every probe runs in a child process.

Both are 64-bit host figures: TFLM's structs hold pointers, which take 8 bytes here and 4
on a 32-bit microcontroller, so the device needs somewhat less than measured here.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pipeline.errors import GateFailed
from pipeline.progress import progress

ARENA_ALIGN = 16
HOST_FIGURE = "64-bit host figure"
HOST_NOTE = (
    f"{HOST_FIGURE} (TFLM Python runtime on x86-64): TFLM's structs hold 8-byte pointers "
    "here and 4-byte ones on a 32-bit MCU, so the device needs somewhat less"
)
_RECORDED = re.compile(r"\[RecordingMicroAllocator\] Arena allocation total (\d+) bytes")
_OUTPUT = re.compile(r"^OUTPUT ([0-9a-f]*)$", re.M)
_PROBE_TIMEOUT_S = 120


def round_up(n: float, to: int = ARENA_ALIGN) -> int:
    return int(-(-int(np.ceil(n)) // to) * to)


class TFLMRunner:
    """One TFLM interpreter, run one window at a time as on the device."""

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

    def predict(self, x_q: np.ndarray, desc: str = "TFLM") -> np.ndarray:
        """Flattened quantized outputs (n, k) for quantized inputs (n, *input shape[1:])."""
        shape = tuple(int(d) for d in self.input_details["shape"])
        outs = []
        for x in progress(x_q, desc, total=len(x_q), unit="window"):
            self._interp.set_input(np.ascontiguousarray(x.reshape(shape)), 0)
            self._interp.invoke()
            outs.append(np.array(self._interp.get_output(0)).reshape(-1))
        return np.stack(outs) if outs else np.zeros((0, 0), np.int8)


@dataclass
class Probe:
    arena_size: int
    ok: bool
    recorded_bytes: int | None = None
    output_hex: str | None = None
    log: str = ""


@dataclass
class ArenaMeasurement:
    recorded_bytes: int
    """The recording allocator's total, at a generous arena."""
    min_bytes: int
    """The smallest arena (a multiple of 16) with which the model runs and gives the same output."""
    probes: list[Probe] = field(default_factory=list)

    def exported(self, margin: float) -> int:
        """min x (1 + margin), rounded up to 16 bytes: the kTensorArenaSize to ship."""
        return round_up(self.min_bytes * (1.0 + margin))

    def as_dict(self, margin: float) -> dict:
        return {
            "arena_recorded_bytes": self.recorded_bytes,
            "arena_min_bytes": self.min_bytes,
            "arena_bytes_exported": self.exported(margin),
            "margin": margin,
            "probes": len(self.probes),
            "method": "recorded: TFLM RecordingMicroAllocator total at a generous arena; "
            "min: bisection over arena sizes (16-byte steps), each run in a child process, "
            "a size passing when the model loads, runs and gives the same output",
            "note": HOST_NOTE,
        }


def probe(model_path: str | Path, arena_size: int) -> Probe:
    """Run the model once in a child process with ``arena_size`` bytes of arena."""
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "pipeline.tflm", str(model_path), str(int(arena_size))],
            capture_output=True, text=True, env=env, timeout=_PROBE_TIMEOUT_S,
        )
    except subprocess.TimeoutExpired:
        return Probe(arena_size=int(arena_size), ok=False, log=f"timed out after {_PROBE_TIMEOUT_S} s")
    out = _OUTPUT.search(proc.stdout)
    # MicroPrintf goes to stderr in this build (fd 2, not fd 1): read both.
    recorded = _RECORDED.search(proc.stdout + proc.stderr)
    ok = proc.returncode == 0 and out is not None
    return Probe(
        arena_size=int(arena_size), ok=ok,
        recorded_bytes=int(recorded.group(1)) if recorded else None,
        output_hex=out.group(1) if out else None,
        log=(proc.stderr or "")[-2000:] if not ok else "",
    )


def measure_arena(data: bytes, generous: int = 256 * 1024, limit: int = 64 * 1024 * 1024) -> ArenaMeasurement:
    """The recorded arena total and the true minimum arena of a model, on this host."""
    with tempfile.TemporaryDirectory(prefix="tinyml-arena-") as tmp:
        path = Path(tmp) / "model.tflite"
        path.write_bytes(data)
        probes: list[Probe] = []

        def run(size: int) -> Probe:
            p = probe(path, size)
            probes.append(p)
            return p

        size = round_up(generous)
        first = run(size)
        while not first.ok and size < limit:
            size *= 4
            first = run(size)
        if not first.ok or first.recorded_bytes is None:
            log = " | ".join(line.strip() for line in first.log.splitlines() if line.strip())[-600:]
            raise GateFailed(
                f"TFLM could not run the int8 model even with a {size}-byte arena: {log or 'no log'}",
                hint="check the ops in quantize_report.json; the model may need an op or type TFLM lacks",
            )
        reference = first.output_hex

        def works(size: int) -> bool:
            p = run(size)
            return p.ok and p.output_hex == reference

        # Bisect between a size that fails and one that works, in 16-byte steps.
        recorded = first.recorded_bytes
        lo = round_up(recorded)
        if works(lo):
            return ArenaMeasurement(recorded, lo, probes)
        hi = round_up(recorded * 1.5 + 1024)
        if not works(hi):
            hi = size
        while hi - lo > ARENA_ALIGN:
            mid = round_up((lo + hi) / 2)
            if works(mid):
                hi = mid
            else:
                lo = mid
        return ArenaMeasurement(recorded, hi, probes)


def _child(model_path: str, arena_size: int) -> int:
    """Load, run once on an all-zero-point input, print the output and the allocations."""
    from tflite_micro.python.tflite_micro import runtime

    data = Path(model_path).read_bytes()
    interp = runtime.Interpreter.from_bytes(data, arena_size=arena_size)
    details = interp.get_input_details(0)
    zp = details["quantization_parameters"]["zero_points"]
    fill = int(zp[0]) if len(zp) else 0
    interp.set_input(np.full(details["shape"], fill, dtype=details["dtype"]), 0)
    interp.invoke()
    print("OUTPUT " + np.asarray(interp.get_output(0)).tobytes().hex(), flush=True)
    interp.print_allocations()  # C-level MicroPrintf, not sys.stdout
    return 0


if __name__ == "__main__":
    sys.exit(_child(sys.argv[1], int(sys.argv[2])))
