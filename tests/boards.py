"""The device the tests talk to: the host board (the firmware's C++ core and a tiny real int8
model compiled to C, built with g++), booted on a real pseudo-terminal.

One run directory and one build per test process (``tiny_run``); each test boots its own
board process from it, with the sensor recordings and clock speed it needs (``tiny_board``).
"""

from __future__ import annotations

import contextlib
import shutil
from pathlib import Path

import numpy as np
import pytest

from firmware_bridge.targets import host_board

MACS = 1152  # the tiny model's, fixed: Timing lines are 1152 x 8 cycles / 64 MHz = 0.144 ms
_RUNS: dict[str, Path] = {}


def tiny_run(tmp_path_factory, tiny_int8) -> Path:
    """The run directory of the tiny model (int8.tflite, model_settings.h, MACs), its host
    board built once for this test process."""
    if shutil.which("g++") is None or shutil.which("gcc") is None:
        pytest.skip("the host board needs g++ (Debian package g++)")
    key = tiny_int8[0].as_posix()
    if key not in _RUNS:
        from test_host_board import write_run

        run = write_run(tmp_path_factory.mktemp("tiny_board") / "run", tiny_int8[1], tiny_int8[2])
        host_board.build_host_board(run)
        _RUNS[key] = run
    return _RUNS[key]


def save_recordings(path: Path, X: np.ndarray, rate_hz: float = 62.5) -> Path:
    np.savez(path, X=np.asarray(X, np.float32), rate_hz=np.float64(rate_hz))
    return path


@contextlib.contextmanager
def tiny_board(run: Path, *, sensor: Path | None = None, time_scale: float = 1.0):
    """The host board of ``run`` running (its IMU playing ``sensor``, an .npz, when given);
    stopped on leaving the block."""
    _, board = host_board.boot(run, sensor=sensor, time_scale=time_scale)
    with board:
        yield board
