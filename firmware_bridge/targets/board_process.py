"""What the host board and the QEMU board share: a build cached by content hash, and a
child process whose UART is a pseudo-terminal it names on its output.

``HostBoard`` (the firmware built with g++) and ``QemuBoard`` (``qemu-system-arm``) differ in
their command, their reset and how politely they stop; starting, finding the pty, keeping
the output's tail and the last-resort stop are this module's.
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import os
import re
import select
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from pipeline.core.errors import BridgeError

BOOT_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 5.0
TAIL_LINES = 20


def content_hash(files: list[Path], flags: list[str], compiler: str) -> str:
    """The build's identity: compiler, flags and every input file's name and bytes."""
    h = hashlib.sha256(json.dumps([compiler, flags]).encode())
    for path in files:
        h.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()


def run_tool(cmd: list[str], what: str) -> str:
    """Run a build tool; its first error line in a BridgeError when it fails, else its stdout."""
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        first = next((line for line in proc.stderr.splitlines() if "error" in line), proc.stderr.strip()[:300])
        raise BridgeError(f"{what} failed (exit {proc.returncode}): {first}", hint="the full command: " + " ".join(cmd))
    return proc.stdout


def die_with_parent() -> None:
    """In the child before exec: its own session (a terminal's Ctrl-C reaches us, and we stop
    it), and on Linux SIGTERM when the parent dies, so no board outlives a killed host."""
    os.setsid()
    if _PRCTL is not None:
        _PRCTL(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


try:  # resolved in the parent: the child only calls it
    _PRCTL = ctypes.CDLL(None, use_errno=True).prctl if sys.platform.startswith("linux") else None
except (OSError, AttributeError):
    _PRCTL = None


class BoardProcess:
    """A board's process: ``command`` (a subclass's) started with its UART on a pty.

    The pty's path is read from ``pty_re`` on stdout. ``merge_stderr``: stderr goes to
    stdout (QEMU), else it is read apart (the host board, whose stdout names the pty only).
    After boot a thread keeps reading the output, so the child never blocks on a full pipe;
    its last lines are kept for error messages (``output_tail``).
    """

    pty_re: re.Pattern
    merge_stderr = False

    def __init__(self) -> None:
        self.port: str | None = None
        self.process: subprocess.Popen | None = None
        self._tail: list[str] = []
        self._reader: threading.Thread | None = None

    @property
    def command(self) -> list[str]:
        raise NotImplementedError

    @property
    def what(self) -> str:
        """The process in messages."""
        return Path(self.command[0]).name

    def _spawn(self) -> None:
        self.process = subprocess.Popen(
            self.command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT if self.merge_stderr else subprocess.PIPE, preexec_fn=die_with_parent)
        self.port = self._wait_for_pty()
        log = self.process.stdout if self.merge_stderr else self.process.stderr
        self._reader = threading.Thread(target=self._drain, args=(log,), daemon=True)
        self._reader.start()

    def _keep(self, line: str) -> None:
        self._tail = (self._tail + [line])[-TAIL_LINES:]

    def _wait_for_pty(self) -> str:
        deadline = time.monotonic() + BOOT_TIMEOUT_S
        fd = self.process.stdout.fileno()
        pending = b""
        while time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                break
            chunk = os.read(fd, 4096)
            if not chunk:
                break
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for raw in lines:
                line = raw.decode("utf-8", "replace").strip()
                self._keep(line)
                m = self.pty_re.search(line)
                if m:
                    return m.group(1)
        code = self.process.poll()
        if code is not None and not self.merge_stderr:
            for line in self.process.stderr.read().decode("utf-8", "replace").splitlines():
                self._keep(line.strip())
        said = "; ".join(self.output_tail()[-3:] + ([pending.decode("utf-8", "replace")] if pending else []))
        raise BridgeError(f"{self.what} did not open its pseudo-terminal within {BOOT_TIMEOUT_S:g} s"
                          + (f" (exit {code})" if code is not None else "") + (f": {said[:300]}" if said else ""),
                          hint="run it by hand: " + " ".join(self.command))

    def _drain(self, stream) -> None:
        for raw in iter(stream.readline, b""):
            self._keep(raw.decode("utf-8", "replace").rstrip())

    def _terminate(self) -> None:
        """SIGTERM, then SIGKILL; then the pipes this side still holds are closed."""
        proc = self.process
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self._reader is None:  # the reader thread owns the stream it drains
            for stream in (proc.stdout, proc.stderr):
                if stream is not None:
                    stream.close()
        elif not self.merge_stderr and proc.stdout is not None:
            proc.stdout.close()

    def output_tail(self) -> list[str]:
        """The last lines the process printed (its reasons when it stops by itself)."""
        return [line for line in self._tail if line][-5:]

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def __enter__(self):
        return self if self.process is not None else self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
