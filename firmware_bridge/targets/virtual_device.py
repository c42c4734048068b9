"""A virtual Edge Impulse-compatible device: the AT protocol over a real pseudo-terminal.

It runs the real TFLM kernels on the int8 model in its "flash", caps the arena at the
board's RAM (a model that does not fit fails to boot and says so on the console, as a
board would), estimates timing from the board profile, and plays back a sensor recording
for AT+RUNIMPULSE. Hosts open ``device.port`` (``/dev/pts/N``) with pyserial, or
``device.url`` (``socket://127.0.0.1:PORT``) when a TCP port was asked for.
"""

from __future__ import annotations

import base64
import errno
import functools
import hashlib
import json
import math
import os
import select
import socket
import threading
import time
import tty
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from firmware_bridge.host import protocol
from pipeline.core.errors import BridgeError
from firmware_bridge.host.protocol import ATServer, Command
from firmware_bridge.targets.sketch import TEMPLATE_DIR, command_table
from firmware_bridge.targets.virtual_tflm import BootProbe, TflmModel, probe_model
from pipeline.core.boards import CYCLES_PER_MAC_REFERENCE, DEFAULT_BOARD, get_board
from pipeline.core.errors import PipelineError

POLL_S = 0.05
# A host that stops reading must not wedge the device: output that cannot be written for
# this long is dropped, as a UART transmits into the void when nobody listens.
WRITE_STALL_S = 1.0
BOOT_WAIT_S = 2.0


class _Stopped(Exception):
    """The device is stopping: unwinds whatever a session was doing."""


class _Disconnected(Exception):
    """The host of a socket session went away."""


# ---------------------------------------------------------------------------------------
# The serial link: one byte stream (pty master or TCP socket), optionally paced like a UART
# ---------------------------------------------------------------------------------------


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
                raise _Stopped

    def read_byte(self, timeout: float | None) -> int | None:
        """The next byte received, or None after ``timeout`` seconds (None: wait for ever)."""
        deadline = None if timeout is None else time.perf_counter() + timeout
        while self._rx_pos >= len(self._rx):
            if self._stop.is_set():
                raise _Stopped
            remaining = POLL_S if deadline is None else min(POLL_S, deadline - time.perf_counter())
            if remaining <= 0:
                return None
            ready, _, _ = select.select([self._fileno], [], [], remaining)
            if ready:
                data = self._read()
                if data is None:  # woken up for nothing
                    continue
                if not data:
                    raise _Disconnected
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
            raise _Stopped

    def write(self, data: str | bytes) -> None:
        if isinstance(data, str):
            data = data.encode("utf-8")
        if self._stop.is_set():
            raise _Stopped
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
                raise _Stopped
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
                raise _Disconnected from None
            view = view[n:]
            stalled_since = time.perf_counter()


def _pty_link(master: int, stop: threading.Event, baud: int | None) -> SerialLink:
    def read() -> bytes | None:
        try:
            return os.read(master, 4096)
        except BlockingIOError:
            return None
        except OSError as exc:  # EIO: cannot happen while the device holds the slave open
            if exc.errno == errno.EIO:
                raise _Disconnected from None
            raise

    return SerialLink(master, read, lambda view: os.write(master, view), stop, baud)


def _socket_link(conn: socket.socket, stop: threading.Event, baud: int | None) -> SerialLink:
    def read() -> bytes | None:
        try:
            return conn.recv(4096)
        except BlockingIOError:
            return None
        except ConnectionResetError:
            return b""

    return SerialLink(conn.fileno(), read, conn.send, stop, baud)


# ---------------------------------------------------------------------------------------
# The sensor: recordings played back at their real rate
# ---------------------------------------------------------------------------------------


class SensorPlayback:
    """Recordings from an ``.npz`` (``X`` float32 (n, T, C), ``rate_hz``), played one after another."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        if not self.path.is_file():
            raise BridgeError(f"{self.path}: sensor file not found", hint="expected an .npz with X (n, T, C) and rate_hz")
        from pipeline.core.errors import PipelineError
        from pipeline.core.safe_io import load_npz_arrays

        try:  # a truncated or tampered file is one error line, and no header is trusted
            arrays = load_npz_arrays(self.path)
        except PipelineError as exc:
            raise BridgeError(exc.message, hint=exc.hint) from None
        for key in ("X", "rate_hz"):
            if key not in arrays:
                raise BridgeError(f"{self.path}: sensor file has no {key!r} array",
                                  hint="expected X float32 (n, T, C) recordings and a scalar rate_hz")
        X, rate = arrays["X"], arrays["rate_hz"]
        if X.ndim != 3 or 0 in X.shape or X.dtype.kind not in "fiu":
            raise BridgeError(f"{self.path}: X has shape {X.shape} of {X.dtype}, expected numbers "
                              "(recordings, samples, channels)")
        if np.ndim(rate) != 0 or rate.dtype.kind not in "fiu" or not 0 < float(rate) < float("inf"):
            raise BridgeError(f"{self.path}: rate_hz must be a positive scalar, got {rate!r}")
        self.stream = X.astype(np.float32).reshape(-1, X.shape[2])
        self.recordings, self.rate_hz = X.shape[0], float(rate)
        self.channels = X.shape[2]
        self.name = "Playback of " + self.path.name.replace(",", "_")  # a comma would end the name field
        self._pos = 0
        self._lock = threading.Lock()

    @property
    def seconds(self) -> float:
        return len(self.stream) / self.rate_hz

    def next_window(self, samples: int) -> np.ndarray:
        """The next ``samples`` samples of the stream (recordings back to back, looping)."""
        with self._lock:
            idx = (self._pos + np.arange(samples)) % len(self.stream)
            self._pos = int((self._pos + samples) % len(self.stream))
        return self.stream[idx]


# ---------------------------------------------------------------------------------------
# The firmware: state and the AT command table
# ---------------------------------------------------------------------------------------


@dataclass
class Settings:
    """What hosts store on the device (AT+DEVICEID, AT+SAMPLESETTINGS, AT+UPLOADSETTINGS,
    AT+UPLOADHOST, AT+MGMTSETTINGS), as the C++ core's Settings; AT+CLEARCONFIG resets them."""

    device_id: str
    interval_ms: float
    label: str = "test"
    length_ms: int = 10000
    hmac_key: str = ""
    api_key: str = ""
    upload_host: str = ""
    upload_path: str = ""
    mgmt_url: str = ""


def _setting(text: str) -> str:
    return text[:protocol.SETTING_CHARS]  # the C++ core keeps as many characters


@functools.lru_cache(maxsize=1)
def device_command_table() -> tuple[tuple[str, str, str | None, bool, bool, bool], ...]:
    """(name, help, write_args, run, read, write) of each entry of the C++ core's
    kDeviceCommands (firmware/core/device_commands.cpp): the one command table of every device."""
    table = []
    for c in command_table((TEMPLATE_DIR / "device_commands.cpp").read_text(encoding="utf-8"))[1:]:
        forms = c["forms"]
        write = next((f.split("=", 1)[1] for f in forms if "=" in f), None)
        table.append((c["name"], c["help"].replace('\\"', '"'), write, f"AT+{c['name']}" in forms,
                      f"AT+{c['name']}?" in forms, write is not None))
    return tuple(table)


class Firmware:
    """What the board runs: the model, the sensor, and one handler per AT command."""

    def __init__(self, model: bytes, labels: list[str] | None, board, *, macs: int | None,
                 arena_cap_bytes: int | None, chunk_size: int, baud: int,
                 sensor: SensorPlayback | None, time_scale: float, chunk_timeout_s: float,
                 source: str):
        self.board, self.macs, self.chunk_size, self.baud = board, macs, chunk_size, baud
        self.sensor, self.time_scale, self.chunk_timeout_s = sensor, time_scale, chunk_timeout_s
        cap_from_settings = arena_cap_bytes is not None
        self.arena_cap = int(arena_cap_bytes) if cap_from_settings else board.ram_bytes
        self.arena_cap_source = "arena_cap_bytes in settings" if cap_from_settings else f"RAM of {board.name}"
        self.probe: BootProbe = probe_model(model, self.arena_cap, source)
        facts = self.facts
        if facts.input_dtype not in ("int8", "float32"):
            raise BridgeError(f"{source}: model input is {facts.input_dtype}, expected int8 (or float32)")
        if labels is None:
            labels = [f"class{i}" for i in range(facts.classes)]
        if len(labels) != facts.classes:
            raise BridgeError(f"{source}: {len(labels)} labels for a model with {facts.classes} outputs",
                              hint="give one label per output class")
        self.labels = list(labels)
        self.model = TflmModel(model, self.probe) if self.probe.boots else None
        if sensor is not None:
            if facts.input_size % sensor.channels or (len(facts.input_shape) >= 3 and facts.input_shape[-1] != sensor.channels):
                raise BridgeError(f"{sensor.path}: the sensor has {sensor.channels} channels, "
                                  f"the model's input {list(facts.input_shape)} expects {facts.input_shape[-1]}")
            self.samples_per_window = facts.input_size // sensor.channels
        digest = hashlib.sha256(f"{facts.sha256}:{board.name}".encode()).digest()
        self.default_device_id = ":".join(f"{b:02X}" for b in bytes([(digest[0] | 0x02) & 0xFE]) + digest[1:6])
        self.device_type = (f"Virtual {board.title} (emulated; timing "
                            f"{'estimated' if macs else 'measured on the host'})")
        self.settings = self._default_settings()
        self.sample = b""  # the last sample AT+SAMPLESTART recorded, for AT+READBUFFER

    def _default_settings(self) -> Settings:
        interval = 1000.0 / self.sensor.rate_hz if self.sensor else 16.0
        return Settings(device_id=self.default_device_id, interval_ms=interval)

    @property
    def device_id(self) -> str:
        return self.settings.device_id

    @property
    def facts(self):
        return self.probe.facts

    @property
    def boot_error(self) -> str | None:
        if self.probe.boots:
            return None
        return (f"ERR: Failed to allocate tensor arena: model needs about {self.facts.min_arena_bytes} bytes, "
                f"arena capped at {self.arena_cap} bytes ({self.arena_cap_source})")

    # -- timing -----------------------------------------------------------------------

    @functools.cached_property
    def estimated_ms(self) -> float | None:
        """The board profile's latency estimate (MACs x cycles/MAC / clock), None without MACs."""
        return self.board.estimated_latency_ms(self.macs, CYCLES_PER_MAC_REFERENCE) if self.macs else None

    def inference_ms(self, measured_s: float) -> float:
        """The board profile's estimate when MACs are known, else the host's invoke time."""
        return self.estimated_ms if self.estimated_ms is not None else measured_s * 1000.0

    def timing_note(self) -> str:
        if self.estimated_ms is not None:
            return (f"estimated {self.estimated_ms:.3f} ms ({self.macs} MACs x {CYCLES_PER_MAC_REFERENCE:g} cycles/MAC / "
                    f"{self.board.clock_hz / 1e6:g} MHz, {self.board.name} profile), not measured")
        return "host-measured TFLM invoke time (model MACs unknown), not the board's"

    def sleep(self, term, seconds: float) -> bool:
        """Wait ``seconds`` of device time; True when the host sent ``b`` meanwhile."""
        deadline = time.perf_counter() + seconds * self.time_scale
        while True:
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                return False
            byte = term.read_byte(remaining)
            if byte == ord("b"):
                return True

    # -- the command table ------------------------------------------------------------

    def commands(self) -> list[Command]:
        """The C++ core's table (names, help, forms), bound to this device's handlers."""
        handlers = {
            "CONFIG": {"read": self.read_config},
            "DEVICEINFO": {"read": self.read_deviceinfo},
            "SAMPLESETTINGS": {"read": self.read_samplesettings, "write": self.write_samplesettings},
            "SAMPLESTART": {"write": self.write_samplestart},
            "READBUFFER": {"write": self.write_readbuffer},
            "CLEARCONFIG": {"run": self.run_clearconfig},
            "DEVICEID": {"read": self.read_deviceid, "write": self.write_deviceid},
            "UPLOADSETTINGS": {"read": self.read_uploadsettings, "write": self.write_uploadsettings},
            "UPLOADHOST": {"read": self.read_uploadhost, "write": self.write_uploadhost},
            "MGMTSETTINGS": {"read": self.read_mgmtsettings, "write": self.write_mgmtsettings},
            "RUNIMPULSE": {"run": self.run_impulse},
            "RUNIMPULSEDEBUG": {"write": self.write_runimpulsedebug},
            "RUNIMPULSECONT": {"run": self.run_impulsecont},
            "RUNIMPULSESTATIC": {"write": self.run_impulse_static},
            "MODELINFO": {"read": self.read_modelinfo},
        }
        commands = []
        for name, help_text, write_args, run, read, write in device_command_table():
            bound = handlers.pop(name, None)
            forms = {"run": run, "read": read, "write": write}
            if bound is None or {f for f, on in forms.items() if on} != set(bound):
                raise RuntimeError(f"AT+{name}: the virtual device's handlers {sorted(bound or {})} "
                                   f"do not match the forms of device_commands.cpp {forms}")
            commands.append(Command(name, help_text, write_args=write_args or "", **bound))
        if handlers:
            raise RuntimeError(f"commands missing from device_commands.cpp: {sorted(handlers)}")
        return commands

    def _device_info(self) -> str:
        return (f"ID:         {self.device_id}\n"
                f"Type:       {self.device_type}\n"
                f"AT Version: {protocol.AT_VERSION}\n"
                f"Data Transfer Baudrate: {self.baud}\n")

    def _sensor_kind(self) -> int:
        channels = self.sensor.channels if self.sensor else self.facts.input_shape[-1]
        return {1: 1, 3: 2, 9: 4}.get(channels, 6)

    def _sampling(self) -> str:
        s = self.settings
        return (f"Label:     {s.label}\n"
                f"Interval:  {s.interval_ms:.2f} ms.\n"
                f"Length:    {s.length_ms} ms.\n"
                f"HMAC key:  {s.hmac_key}\n")

    def _upload(self) -> str:
        s = self.settings
        return f"Api Key:   {s.api_key}\nHost:      {s.upload_host}\nPath:      {s.upload_path}\n"

    def read_config(self, term) -> None:
        # The bytes of the C++ core's read_config (Edge Impulse's at_get_config, without the
        # camera lines a board without a camera leaves out).
        sensor_lines = ""
        if self.sensor is not None:
            seconds = protocol.max_sample_seconds(self.sensor.channels, self.sensor.rate_hz)
            sensor_lines = (f"Name: {self.sensor.name}, Max sample length: {seconds}s, "
                            f"Frequencies: [{self.sensor.rate_hz:.2f}Hz]\n")
        text = ((self.boot_error + "\n" if self.boot_error else "")
                + "===== Device info =====\n" + self._device_info() + "\n"
                + "===== Sensors ======\n" + sensor_lines + "\n"
                + "===== Snapshot ======\n"
                "Has snapshot:         0\n"
                "Supports stream:      0\n\n"
                "===== Inference ======\n"
                f"Sensor:           {self._sensor_kind()}\n"
                "Model type:       classification\n\n"
                "===== WIFI =====\n"
                "SSID:      \n"
                "Password:  \n"
                "Security:  0\n"
                f"MAC:       {self.device_id}\n"
                "Connected: 0\n"
                "Present:   0\n\n"
                "===== Sampling parameters =====\n" + self._sampling() + "\n"
                "===== Upload settings =====\n" + self._upload() + "\n"
                "===== Remote management =====\n"
                f"URL:        {self.settings.mgmt_url}\n"
                "Connected:  0\n"
                "Last error: \n")
        term.write(text)

    def read_deviceinfo(self, term) -> None:
        term.write(self._device_info())

    def read_samplesettings(self, term) -> None:
        term.write(self._sampling())

    def write_samplesettings(self, term, args: list[str]) -> None:
        if len(args) < 3:
            term.write("Missing argument! Required: LABEL,INTERVAL_MS,LENGTH_MS,[HMAC_KEY]\n")
            return
        interval = float(args[1]) if protocol.is_decimal(args[1], True) else -1.0
        length = int(args[2]) if protocol.is_decimal(args[2], False) and len(args[2]) <= 9 else -1
        if not (interval > 0 and math.isfinite(interval)) or not 0 < length <= protocol.MAX_SAMPLE_LENGTH_MS:
            term.write(f"Invalid interval or length ({args[1]},{args[2]}): expected positive numbers of ms\n")
            return
        s = self.settings
        s.label, s.interval_ms, s.length_ms = _setting(args[0]), interval, length
        if len(args) > 3:
            s.hmac_key = _setting(args[3])
        term.write("OK\n")

    def run_clearconfig(self, term) -> None:
        term.write("Clearing config...\n")
        self.settings = self._default_settings()
        term.write("OK\r\n")

    def read_deviceid(self, term) -> None:
        term.write(self.settings.device_id + "\n")

    def write_deviceid(self, term, args: list[str]) -> None:
        self.settings.device_id = _setting(args[0])
        term.write("OK\n")

    def read_uploadsettings(self, term) -> None:
        term.write(self._upload())

    def write_uploadsettings(self, term, args: list[str]) -> None:
        if len(args) < 2:
            term.write("Missing argument! Required: APIKEY,PATH\n")
            return
        self.settings.api_key, self.settings.upload_path = _setting(args[0]), _setting(args[1])
        term.write("OK\n")

    def read_uploadhost(self, term) -> None:
        term.write(self.settings.upload_host + "\n")

    def write_uploadhost(self, term, args: list[str]) -> None:
        self.settings.upload_host = _setting(args[0])
        term.write("OK\n")

    def read_mgmtsettings(self, term) -> None:
        term.write(self.settings.mgmt_url + "\n")

    def write_mgmtsettings(self, term, args: list[str]) -> None:
        self.settings.mgmt_url = _setting(args[0])
        term.write("OK\n")

    # -- sampling (the C++ core's write_sample_start and write_read_buffer) -------------

    def write_samplestart(self, term, args: list[str]) -> None:
        name = args[0] if args else ""
        if not name:
            term.write("Missing sensor name!\n")
            return
        if self.sensor is None or name != self.sensor.name:
            term.write(f"ERR: Failed to find sensor '{name}' in the sensor list\n")
            return
        self.sample = b""
        s, axes = self.settings, self.sensor.channels
        interval, sensor_interval = s.interval_ms, 1000.0 / self.sensor.rate_hz
        if not 1 <= axes <= protocol.MAX_SAMPLE_AXES:
            term.write(f"ERR: Failed to start sampling: {axes} axes, at most {protocol.MAX_SAMPLE_AXES} fit a sample\n")
            return
        if abs(interval - sensor_interval) > protocol.INTERVAL_TOLERANCE_MS:
            term.write(f"ERR: Failed to start sampling: the sensor reads every {sensor_interval:.2f} ms, "
                       f"not every {interval:.2f} ms (set INTERVAL_MS with AT+SAMPLESETTINGS)\n")
            return
        readings = math.floor(s.length_ms / interval)
        if readings < 1:
            term.write(f"ERR: Failed to start sampling: {s.length_ms} ms hold no reading\n")
            return
        header = protocol.acquisition_header(s.device_id, self.device_type, interval, axes, bool(s.hmac_key))
        if len(header) + readings * protocol.reading_bytes(axes) + 1 > protocol.SAMPLE_BUFFER_BYTES:
            term.write(f"ERR: Failed to start sampling: {readings} readings do not fit the "
                       f"{protocol.SAMPLE_BUFFER_BYTES}-byte sample buffer (at most "
                       f"{protocol.max_sample_seconds(axes, self.sensor.rate_hz)} s)\n")
            return
        term.write("Sampling settings:\n"
                   f"\tInterval: {interval:.5f} ms.\n"
                   f"\tLength: {s.length_ms} ms.\n"
                   f"\tName: {s.label}\n"
                   f"\tHMAC Key: {s.hmac_key}\n"
                   f"\tFile name: /fs/{s.label}\n"
                   f"Starting in {round(protocol.SAMPLE_START_DELAY_S * 1000)} ms... (or until all flash was erased)\n")
        term.idle(protocol.SAMPLE_START_DELAY_S * self.time_scale)
        term.write("Sampling...\n")
        values = self.sensor.next_window(readings)
        term.idle(readings * interval / 1000.0 * self.time_scale)  # the sensor fills it in real time
        self.sample = protocol.encode_acquisition(s.device_id, self.device_type, interval, values, s.hmac_key)
        n = len(self.sample)
        term.write(f"Done sampling, total bytes collected: {n}\n"
                   f"Not uploading file, not connected to WiFi. Used buffer, from=0, to={n}.\n"
                   "OK\n")

    def write_readbuffer(self, term, args: list[str]) -> None:
        if len(args) < 2:
            term.write("Missing argument! Required: START,LENGTH,[USEMAXRATE]\n")
            return

        def offset(text: str) -> int | None:
            ok = protocol.is_decimal(text, False) and not text.startswith("-") and len(text) <= 9
            return int(text) if ok else None

        start, length = offset(args[0]), offset(args[1])
        ok = start is not None and length is not None and start <= len(self.sample)
        max_rate = len(args) >= 3 and args[2].startswith("y")
        if max_rate:
            term.write("OK\r\n")
        if ok:
            term.write(base64.b64encode(self.sample[start:start + length]))
        if max_rate:
            term.write("\r\nOK\r\n")
        term.write("\n" if ok else "Failed to read from buffer\n")

    def read_modelinfo(self, term) -> None:
        f = self.facts
        lines = [self.boot_error] if self.boot_error else []
        lines += [
            f"SHA-256:           {f.sha256}",
            f"Input shape:       {json.dumps(list(f.input_shape))}",
            f"Input dtype:       {f.input_dtype}",
            f"Input scale:       {f.input_scale!r}",
            f"Input zero point:  {f.input_zero_point}",
            f"Output scale:      {f.output_scale!r}",
            f"Output zero point: {f.output_zero_point}",
            f"Labels:            {json.dumps(self.labels)}",
            f"Board:             {self.board.name} ({self.board.title})",
            f"Arena cap:         {self.arena_cap} bytes ({self.arena_cap_source})",
            f"Arena needed:      {f.min_arena_bytes} bytes (smallest that boots, on this 64-bit host; "
            f"TFLM records {f.recorded_arena_bytes})",
            f"Timing:            {self.timing_note()}",
        ]
        term.write("".join(line + "\n" for line in lines))

    # -- inference --------------------------------------------------------------------

    def _classify(self, features: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
        assert self.model is not None
        raw, probabilities, elapsed = self.model.classify(features)
        return raw, probabilities, self.inference_ms(elapsed)

    def run_impulse_static(self, term, args: list[str]) -> bool:
        if len(args) < 2:
            term.write("Too few arguments! Required: 2\r\n")
            return False
        if self.boot_error:
            term.write(self.boot_error + "\r\n")
            return True
        debug = args[0].strip().lower() == "y"
        # As the C++ core's parse_count: a whole number from 1 to STATIC_MAX_VALUES.
        n = int(args[1]) if protocol.is_decimal(args[1], False) and len(args[1]) <= 9 else 0
        if not 0 < n <= protocol.STATIC_MAX_VALUES:
            term.write(f"ERR: N must be a whole number of float32 values from 1 to "
                       f"{protocol.STATIC_MAX_VALUES}, got '{args[1]}'\r\n")
            return False
        term.write(f"OK CHUNK={self.chunk_size}\r\n")
        received = bytearray()
        for k in range(protocol.chunk_count(n, self.chunk_size)):
            chunk = self._read_chunk(term)
            if chunk is None:
                term.write("TIMEOUT\r\nEND OUTPUT\r\n")
                return False
            try:
                received += protocol.decode_chunk(chunk)
            except ValueError:
                term.write(f"ERR: chunk {k + 1} is not base64\r\nEND OUTPUT\r\n")
                return False
            term.write(f"OK {min(n, len(received) // 4)} \r\n")
        term.write(f"TRANSFER COMPLETED {n}\r\n")
        expected = self.facts.input_size
        if n != expected:
            term.write("ERROR: The size of the input buffer is not correct.\r\n"
                       f"Expected {expected} items, but got {n}\r\n"
                       "RESULT -1\r\nEND OUTPUT\r\n")
            return True
        features = np.frombuffer(bytes(received[:4 * n]), dtype="<f4")
        raw, probabilities, ms = self._classify(features)
        if debug:
            term.write("Features (" + str(n) + "): " + ", ".join(f"{v:g}" for v in features) + "\r\n")
            term.write("Raw output: " + ", ".join(str(int(v)) for v in raw) + "\r\n")
        term.write(protocol.render_static_result(self.labels, probabilities, (0.0, ms, 0.0)))
        return True

    def _read_chunk(self, term) -> bytes | None:
        """One transfer chunk, which must be in within the chunk timeout of starting to wait."""
        deadline = time.perf_counter() + self.chunk_timeout_s
        chunk = bytearray()
        while len(chunk) < self.chunk_size:
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                return None
            byte = term.read_byte(remaining)
            if byte is None:
                return None
            if byte not in (0x0D, 0x0A):  # a host's line ends are not base64: skip them
                chunk.append(byte)
        return bytes(chunk)

    def run_impulse(self, term) -> bool:
        return self._run_inference(term, "normal")

    def run_impulsecont(self, term) -> bool:
        return self._run_inference(term, "continuous")

    def write_runimpulsedebug(self, term, args: list[str]) -> bool:
        # 'y' asks for the faster data baud rate; this device has only the one it reports.
        return self._run_inference(term, "debug")

    def _print_result(self, term, window: np.ndarray, debug: bool) -> None:
        _, probabilities, ms = self._classify(window.reshape(-1))
        if debug:  # as run_classifier(..., debug = true) prints the features
            term.write("Features (0 ms.): " + "".join(f"{float(v):.6f} " for v in window.reshape(-1)) + "\n")
        term.write(protocol.render_current_result(self.labels, probabilities, (0.0, ms, 0.0)))

    def _run_inference(self, term, mode: str) -> bool:
        """AT+RUNIMPULSE, AT+RUNIMPULSEDEBUG and AT+RUNIMPULSECONT, as the C++ core's
        run_inference: normal and debug sample a window, print a result and pause 2 s;
        continuous prints a result every slice of the window, with no pause."""
        if self.boot_error:
            term.write(self.boot_error + "\n")
            return True
        if self.sensor is None:
            term.write("ERR: No sensor data: this virtual device has no sensor recording "
                       "(start it with --sensor FILE.npz)\n")
            return True
        frames, rate = self.samples_per_window, self.sensor.rate_hz
        term.write("Inferencing settings:\n"
                   f"\tInterval: {1000.0 / rate:.2f} ms.\n"
                   f"\tFrame size: {self.facts.input_size}\n"
                   f"\tSample length: {int(frames * 1000.0 / rate + 0.5)} ms.\n"  # as the C++ window_ms()
                   f"\tNo. of classes: {len(self.labels)}\n"
                   "Starting inferencing, press 'b' to break\n")
        if mode == "continuous":
            slice_frames = max(1, frames // protocol.SLICES_PER_WINDOW)
            window = self.sensor.next_window(frames)
            stopped = self.sleep(term, frames / rate)
            while not stopped:
                self._print_result(term, window, debug=False)
                window = np.concatenate([window[slice_frames:], self.sensor.next_window(slice_frames)])
                stopped = self.sleep(term, slice_frames / rate)
        else:
            term.write("Starting inferencing in 2 seconds...\n")
            stopped = self.sleep(term, BOOT_WAIT_S)
            while not stopped:
                term.write("Sampling...\n")
                window = self.sensor.next_window(frames)
                if self.sleep(term, frames / rate):  # the sensor fills the window in real time
                    break
                self._print_result(term, window, debug=mode == "debug")
                stopped = self.sleep(term, BOOT_WAIT_S)
        term.write("Inferencing stopped by user\r\n")
        return True


# ---------------------------------------------------------------------------------------
# The device: transports and threads
# ---------------------------------------------------------------------------------------


def _labels_beside(path: Path) -> tuple[list[str] | None, int | None]:
    """Labels and MACs from a quantize_report.json beside the model, if there is one
    ("labels": [...], "macs": {"total": N} as the quantize stage writes them, or "macs": N)."""
    report_path = path.parent / "quantize_report.json"
    if not report_path.is_file():
        return None, None
    try:
        report = json.loads(report_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise BridgeError(f"{report_path}: not valid JSON ({exc})") from None
    labels = report.get("labels")
    macs = report.get("macs")
    if isinstance(macs, dict):
        macs = macs.get("total")
    return ([str(x) for x in labels] if isinstance(labels, list) else None,
            macs if isinstance(macs, int) and not isinstance(macs, bool) else None)


class VirtualDevice:
    """An Edge Impulse-compatible device emulated on a pseudo-terminal (and optionally TCP).

    ``time_scale`` is an emulator-only knob: every device-side wait (the 2 s pauses, the
    sensor filling a window) is multiplied by it, so 0.01 runs AT+RUNIMPULSE 100 times
    faster for tests. ``chunk_timeout_s`` likewise (0.1 s as on the firmwares).
    """

    def __init__(self, model: bytes, labels: list[str] | None = None, *, board: str = DEFAULT_BOARD,
                 macs: int | None = None, arena_cap_bytes: int | None = None,
                 chunk_size: int = protocol.DEFAULT_CHUNK_SIZE, baud: int = 115200,
                 throttle: bool = False, sensor: str | os.PathLike | None = None,
                 time_scale: float = 1.0, socket_port: int | None = None,
                 chunk_timeout_s: float = protocol.STATIC_CHUNK_TIMEOUT_S, source: str = "model"):
        try:
            profile = get_board(board)
        except PipelineError as exc:
            raise BridgeError(f"{source}: {exc.message}", hint=exc.hint) from None
        try:
            protocol.check_chunk_size(chunk_size)
        except ValueError as exc:
            raise BridgeError(str(exc)) from None
        if baud <= 0:
            raise BridgeError(f"baud: expected a positive rate, got {baud}")
        if time_scale <= 0:
            raise BridgeError(f"time_scale: expected a positive factor, got {time_scale}")
        self._stop = threading.Event()
        playback = SensorPlayback(sensor) if sensor is not None else None
        self.firmware = Firmware(model, labels, profile, macs=macs,
                                 arena_cap_bytes=arena_cap_bytes, chunk_size=chunk_size, baud=baud,
                                 sensor=playback, time_scale=time_scale,
                                 chunk_timeout_s=chunk_timeout_s, source=source)
        self.throttle_baud = baud if throttle else None
        self.socket_port = socket_port
        self.port: str | None = None
        self.url: str | None = None
        self._threads: list[threading.Thread] = []
        self._fds: list[int] = []
        self._listener: socket.socket | None = None

    # -- construction from artifacts ---------------------------------------------------

    @classmethod
    def from_model(cls, model: str | os.PathLike | bytes, labels: list[str] | None = None,
                   board: str = DEFAULT_BOARD, **kwargs) -> VirtualDevice:
        """Boot a .tflite (path or bytes). Labels default to a sibling quantize_report.json's
        "labels", else class0..classK-1; MACs likewise from its "macs"."""
        if isinstance(model, bytes):
            return cls(model, labels, board=board, **kwargs)
        path = Path(model)
        if not path.is_file():
            raise BridgeError(f"{path}: model file not found", hint="expected an int8 .tflite (make quantize)")
        report_labels, report_macs = _labels_beside(path)
        kwargs.setdefault("macs", report_macs)
        kwargs.setdefault("source", str(path))
        return cls(path.read_bytes(), labels if labels is not None else report_labels, board=board, **kwargs)

    @classmethod
    def from_flash_dir(cls, flash_dir: str | os.PathLike, **overrides) -> VirtualDevice:
        """Boot the flash image at ``flash_dir``: ``model.tflite`` and ``settings.json``."""
        flash_dir = Path(flash_dir)
        model_path, settings_path = flash_dir / "model.tflite", flash_dir / "settings.json"
        for p in (model_path, settings_path):
            if not p.is_file():
                raise BridgeError(f"{p}: not found in the flash image",
                                  hint="flash the model first (make flash writes <run>/device/flash)")
        try:
            settings = json.loads(settings_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise BridgeError(f"{settings_path}: not valid JSON ({exc})") from None
        if not isinstance(settings, dict) or not isinstance(settings.get("labels"), list):
            raise BridgeError(f"{settings_path}: expected an object with a \"labels\" list")
        kwargs = {"board": settings.get("board") or DEFAULT_BOARD, "macs": settings.get("macs"),
                  "arena_cap_bytes": settings.get("arena_cap_bytes"), "source": str(model_path)}
        kwargs.update({k: v for k, v in overrides.items() if v is not None})
        return cls(model_path.read_bytes(), [str(x) for x in settings["labels"]], **kwargs)

    # -- lifecycle ------------------------------------------------------------------------

    @property
    def boot_error(self) -> str | None:
        """The line the device prints when the model did not fit, else None."""
        return self.firmware.boot_error

    def start(self) -> VirtualDevice:
        """Open the pseudo-terminal (and the TCP listener) and serve in background threads."""
        if self._threads:
            return self
        self._stop.clear()
        master, slave = os.openpty()
        # Raw: the kernel line discipline must add no echo and no CR/LF translation. The
        # device keeps the slave open so the master never sees EIO when a host closes it.
        tty.setraw(slave)
        os.set_blocking(master, False)
        self._fds = [master, slave]
        self.port = os.ttyname(slave)
        link = _pty_link(master, self._stop, self.throttle_baud)
        if self.boot_error:  # at power-up, before any host can have opened the port
            link.write(self.boot_error + "\r\n")
        self._spawn(self._serve_link, link, name="pty")
        if self.socket_port is not None:
            listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                listener.bind(("127.0.0.1", int(self.socket_port)))
            except OSError as exc:
                listener.close()
                self.stop()
                raise BridgeError(f"127.0.0.1:{self.socket_port}: cannot listen ({exc.strerror})") from None
            listener.listen(1)
            self._listener = listener
            self.url = f"socket://127.0.0.1:{listener.getsockname()[1]}"
            self._spawn(self._accept_loop, listener, name="socket")
        return self

    def _spawn(self, target, *args, name: str) -> None:
        thread = threading.Thread(target=target, args=args, name=f"virtual-device-{name}", daemon=True)
        thread.start()
        self._threads.append(thread)

    def _serve_link(self, link: SerialLink, greet: bool = False) -> None:
        server = ATServer(self.firmware.commands())
        try:
            if greet and self.boot_error:  # a socket host connects as the board boots
                link.write(self.boot_error + "\r\n")
            server.serve(link)
        except (_Stopped, _Disconnected):
            pass

    def _accept_loop(self, listener: socket.socket) -> None:
        while not self._stop.is_set():
            ready, _, _ = select.select([listener], [], [], POLL_S)
            if not ready:
                continue
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with conn:
                conn.setblocking(False)
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                self._serve_link(_socket_link(conn, self._stop, self.throttle_baud), greet=True)

    def serve_forever(self) -> None:
        """Serve in the foreground until ``stop()`` or Ctrl-C (KeyboardInterrupt propagates)."""
        self.start()
        try:
            while not self._stop.wait(0.2):
                pass
        finally:
            self.stop()

    def stop(self) -> None:
        """Stop serving and close the pseudo-terminal and the listener."""
        self._stop.set()
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join(timeout=2.0)
        self._threads = []
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        for fd in self._fds:
            try:
                os.close(fd)
            except OSError:
                pass
        self._fds = []

    def __enter__(self) -> VirtualDevice:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
