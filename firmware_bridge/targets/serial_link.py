"""The device's end of a serial link (a pty master or a TCP socket): buffered byte reads,
writes that never wedge the device, and optional pacing at a UART's baud rate."""

from __future__ import annotations

import errno
import os
import select
import socket
import threading
import time

POLL_S = 0.05
# A host that stops reading must not wedge the device: output that cannot be written for
# this long is dropped, as a UART transmits into the void when nobody listens.
WRITE_STALL_S = 1.0


class Stopped(Exception):
    """The device is stopping: unwinds whatever a session was doing."""


class Disconnected(Exception):
    """The host of a socket session went away."""




class SerialLink:
    """The device's end of a serial line: buffered byte reads, writes, UART pacing.

    ``read`` returns bytes, None when nothing was there after all, b"" when the host left.
    """

    def __init__(self, fileno: int, read, write, stop: threading.Event, baud: int | None = None):
        self._fileno, self._read, self._write, self._stop = fileno, read, write, stop
        self._period = 10.0 / baud if baud else 0.0  # 8N1: 10 bits per byte
        self._rx = b""
        self._rx_pos = 0  # bytes of _rx already handed out: a read is O(1), not O(len(_rx))
        self._rx_arrival = 0.0
        self._rx_next = 0.0
        self._tx_next = 0.0

    def _pace(self, until: float, exact: bool = True) -> None:
        # Within a burst, sleep only when 1 ms behind (a sleep per byte costs more than a
        # byte); at its end, settle exactly, so no burst arrives early.
        delay = until - time.perf_counter()
        if delay > (0.0 if exact else 0.001):
            if self._stop.wait(delay):
                raise Stopped

    def read_byte(self, timeout: float | None) -> int | None:
        """The next byte received, or None after ``timeout`` seconds (None: wait for ever)."""
        deadline = None if timeout is None else time.perf_counter() + timeout
        while self._rx_pos >= len(self._rx):
            if self._stop.is_set():
                raise Stopped
            remaining = POLL_S if deadline is None else min(POLL_S, deadline - time.perf_counter())
            if remaining <= 0:
                return None
            ready, _, _ = select.select([self._fileno], [], [], remaining)
            if ready:
                data = self._read()
                if data is None:  # woken up for nothing
                    continue
                if not data:
                    raise Disconnected
                self._rx, self._rx_pos = data, 0
                self._rx_arrival = time.perf_counter()
        byte = self._rx[self._rx_pos]
        self._rx_pos += 1
        if self._period:
            self._rx_next = max(self._rx_arrival, self._rx_next) + self._period
            self._pace(self._rx_next, exact=self._rx_pos >= len(self._rx))
        return byte

    def idle(self, seconds: float) -> None:
        """Wait ``seconds`` without reading: what arrives meanwhile waits for the AT server."""
        if self._stop.wait(max(0.0, seconds)):
            raise Stopped

    def write(self, data: str | bytes) -> None:
        if isinstance(data, str):
            data = data.encode("utf-8")
        if self._stop.is_set():
            raise Stopped
        if not self._period:
            self._write_all(data)
            return
        for i in range(0, len(data), 16):
            piece = data[i:i + 16]
            # The piece reaches the host when its last byte would have left the UART.
            self._tx_next = max(time.perf_counter(), self._tx_next) + len(piece) * self._period
            self._pace(self._tx_next)
            self._write_all(piece)

    def _write_all(self, data: bytes) -> None:
        view = memoryview(data)
        stalled_since = time.perf_counter()
        while view:
            if self._stop.is_set():
                raise Stopped
            _, ready, _ = select.select([], [self._fileno], [], POLL_S)
            if not ready:
                if time.perf_counter() - stalled_since > WRITE_STALL_S:
                    return
                continue
            try:
                n = self._write(view)
            except BlockingIOError:
                continue
            except (BrokenPipeError, ConnectionResetError):
                raise Disconnected from None
            view = view[n:]
            stalled_since = time.perf_counter()


def pty_link(master: int, stop: threading.Event, baud: int | None) -> SerialLink:
    def read() -> bytes | None:
        try:
            return os.read(master, 4096)
        except BlockingIOError:
            return None
        except OSError as exc:  # EIO: cannot happen while the device holds the slave open
            if exc.errno == errno.EIO:
                raise Disconnected from None
            raise

    return SerialLink(master, read, lambda view: os.write(master, view), stop, baud)


def socket_link(conn: socket.socket, stop: threading.Event, baud: int | None) -> SerialLink:
    def read() -> bytes | None:
        try:
            return conn.recv(4096)
        except BlockingIOError:
            return None
        except ConnectionResetError:
            return b""

    return SerialLink(conn.fileno(), read, conn.send, stop, baud)

