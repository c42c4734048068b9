"""The recording file a board's IMU plays: the run's test recordings (or an .npz you name) as
float32 frames behind a short header. The host board reads it from a file
(firmware/boards/host/main.cpp, RecordedImu); on QEMU the generic loader puts it into the
board's PSRAM (firmware/boards/mps2_an386/board.h, MemoryImu). One format for both.

Layout, little-endian: "TMSENSR1", uint32 axes, uint32 frames, float64 rate_hz, then
frames x axes float32 (the recordings one after another).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from pipeline.core.artifacts import write_bytes
from pipeline.core.errors import BridgeError, PipelineError
from pipeline.core.safe_io import load_npz_arrays

SENSOR_FILE = "sensor.bin"
SENSOR_MAGIC = b"TMSENSR1"
HEADER_BYTES = 24


def sensor_name(npz: str | os.PathLike) -> str:
    """What AT+CONFIG? calls the IMU that plays ``npz`` (no comma: it would end the field)."""
    return ("Playback of " + Path(npz).name).replace(",", "_")[:120]


def write_sensor_file(npz: str | os.PathLike, out: str | os.PathLike, *, max_bytes: int | None = None,
                      warn=None) -> Path:
    """The board's recording file from an ``.npz`` (``X`` (n, T, C) numbers, scalar ``rate_hz``):
    the recordings one after another, as float32 frames behind a short header (the host board
    reads it from a file, QEMU's loader puts it into the board's PSRAM). ``max_bytes``: the
    whole recordings that fit are kept, and ``warn`` is told how many."""
    npz = Path(npz)
    try:
        arrays = load_npz_arrays(npz)
    except PipelineError as exc:
        raise BridgeError(exc.message, hint=exc.hint) from None
    X, rate = arrays.get("X"), arrays.get("rate_hz")
    if X is None or rate is None:
        raise BridgeError(f"{npz}: sensor file has no {'X' if X is None else 'rate_hz'!r} array",
                          hint="expected X float32 (n, T, C) recordings and a scalar rate_hz")
    if X.ndim != 3 or 0 in X.shape or X.dtype.kind not in "fiu" or X.shape[2] > 23:
        raise BridgeError(f"{npz}: X has shape {X.shape} of {X.dtype}, expected numbers (recordings, samples, "
                          "channels) with 1 to 23 channels")
    if np.ndim(rate) != 0 or rate.dtype.kind not in "fiu" or not 0 < float(rate) < float("inf"):
        raise BridgeError(f"{npz}: rate_hz must be a positive scalar, got {rate!r}")
    per_recording = X.shape[1] * X.shape[2] * 4
    if max_bytes is not None and HEADER_BYTES + len(X) * per_recording > max_bytes:
        keep = max(0, (max_bytes - HEADER_BYTES) // per_recording)
        if keep == 0:
            raise BridgeError(f"{npz}: one recording takes {per_recording:,} bytes, the board holds {max_bytes:,}")
        (warn or print)(f"sensor: {npz}: the first {keep} of {len(X)} recordings fit the board's "
                        f"{max_bytes:,} bytes; the IMU plays those")
        X = X[:keep]
    frames = X.astype("<f4").reshape(-1, X.shape[2])
    if not np.all(np.isfinite(frames)):
        raise BridgeError(f"{npz}: X holds values that are not finite")
    head = SENSOR_MAGIC + np.array([X.shape[2], len(frames)], "<u4").tobytes() + np.array([float(rate)], "<f8").tobytes()
    return write_bytes(Path(out), head + frames.tobytes())


def run_sensor(run_dir: str | os.PathLike, sensor: str | os.PathLike | None = None, *,
               out_dir: str | os.PathLike, max_bytes: int | None = None,
               warn=None) -> tuple[Path | None, str | None]:
    """(recording file, IMU name) of the board of ``run_dir``: ``sensor`` (an .npz), else the
    run's test recordings (RUN/device/flash/sensor.npz) when there are some; (None, None) when
    there are none. The file is written into ``out_dir``."""
    run_dir = Path(run_dir)
    npz = Path(sensor) if sensor else run_dir / "device" / "flash" / "sensor.npz"
    if not sensor and not npz.is_file():
        return None, None
    return write_sensor_file(npz, Path(out_dir) / SENSOR_FILE, max_bytes=max_bytes, warn=warn), sensor_name(npz)
