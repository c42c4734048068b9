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

MACS = 1152  # the tiny model's


def inference_us(run: Path) -> int:
    """The tiny board's Timing figure for an inference, as the firmware prints it: the cycles
    host_board.board_timing gives (the latency model's prediction for the compiled model)
    over the board clock, rounded to the microsecond (boards/host/main.cpp board_time_us)."""
    t = host_board.board_timing(run)
    return (t["cycles_per_inference"] * 1_000_000 + t["clock_hz"] // 2) // t["clock_hz"]
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


def prompt_after(device, data: bytes, timeout: float = 10.0) -> str:
    """Send ``data`` then a bare AT: what the firmware printed up to its next prompt (a
    hostile host's bytes must leave it answering)."""
    device.write(data)
    device.write(b"AT\r")
    out = device.wait_prompt(timeout=timeout)
    device._drain()
    return out


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


# ---------------------------------------------------------------------------------------
# A lying device: the real firmware behind a pty that rewrites what it prints
# ---------------------------------------------------------------------------------------

QUIET_FLUSH_S = 0.05  # a partial line (a prompt, an echo) is passed on after this much quiet


class LyingLink:
    """A pseudo-terminal (``port``) in front of a running board: what the host writes reaches
    the board unchanged; what the board prints reaches the host line by line through
    ``rewrite(line: bytes) -> bytes`` (lines keep their ``\\r\\n`` or ``\\n``). The firmware
    computes every answer; only its words are changed, as a firmware that lies would print
    them. Nothing here answers a command by itself."""

    def __init__(self, board_port: str, rewrite):
        import os
        import threading
        import tty

        self.rewrite = rewrite
        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)
        self.port = os.ttyname(self.slave)
        self.board = os.open(board_port, os.O_RDWR | os.O_NOCTTY)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._pump, daemon=True)
        self._thread.start()

    def _pump(self) -> None:
        import os
        import select

        pending = b""
        while not self._stop.is_set():
            ready, _, _ = select.select([self.master, self.board], [], [], QUIET_FLUSH_S)
            try:
                if self.master in ready:
                    os.write(self.board, os.read(self.master, 4096))
                if self.board in ready:
                    pending += os.read(self.board, 4096)
            except OSError:
                return
            *lines, pending = pending.split(b"\n")
            out = b"".join(self.rewrite(line + b"\n") for line in lines)
            if pending and (not ready or pending.endswith(b"> ")):
                out, pending = out + pending, b""
            if out:
                os.write(self.master, out)

    def close(self) -> None:
        import os

        self._stop.set()
        self._thread.join(2)
        for fd in (self.master, self.slave, self.board):
            os.close(fd)


@contextlib.contextmanager
def lying_board(run: Path, rewrite):
    """The host board of ``run`` (its build, its model), reached through a LyingLink: yields
    the port to give the host."""
    with tiny_board(run) as board:
        link = LyingLink(board.port, rewrite)
        try:
            yield link.port
        finally:
            link.close()


def prediction_line(line: bytes) -> tuple[bytes, str, bytes] | None:
    """(indent, label, line end) of a "  <label>: <p>" result line, else None."""
    import re

    m = re.fullmatch(rb"(  )([^:\r\n]+): -?[\d.]+(?:e[-+]?\d+)?(\r?\n)", line)
    return (m.group(1), m.group(2).decode(), m.group(3)) if m else None
