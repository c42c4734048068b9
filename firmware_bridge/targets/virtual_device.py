"""A virtual Edge Impulse-compatible device: the AT protocol over a real pseudo-terminal.

It runs the real TFLM kernels on the int8 model in its "flash", caps the arena at the
board's RAM (a model that does not fit fails to boot and says so on the console, as a
board would), estimates timing from the board profile, and plays back a sensor recording
for AT+RUNIMPULSE. Hosts open ``device.port`` (``/dev/pts/N``) with pyserial, or
``device.url`` (``socket://127.0.0.1:PORT``) when a TCP port was asked for.

Here: the firmware (its state, settings and the AT command table) and the device
(transports, threads). Elsewhere: its inference commands (``virtual_inference``), its
sensor and sampling commands (``virtual_sensor``), the serial link (``serial_link``), the
AT server (``at_server``) and the TFLM runtime (``virtual_tflm``).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import select
import socket
import threading
import time
import tty
from dataclasses import dataclass
from pathlib import Path

from firmware_bridge.host import protocol, sampling
from firmware_bridge.targets.at_server import ATServer, Command
from firmware_bridge.targets.serial_link import (
    POLL_S,
    Disconnected,
    SerialLink,
    Stopped,
    pty_link,
    socket_link,
)
from firmware_bridge.targets.sketch import TEMPLATE_DIR, command_table
from firmware_bridge.targets.virtual_inference import InferenceCommands
from firmware_bridge.targets.virtual_sensor import SamplingCommands, SensorPlayback, clip_setting
from firmware_bridge.targets.virtual_tflm import BootProbe, TflmModel, probe_model
from pipeline.core.boards import CYCLES_PER_MAC_REFERENCE, DEFAULT_BOARD, get_board
from pipeline.core.errors import BridgeError, PipelineError

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


class Firmware(SamplingCommands, InferenceCommands):
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

    def _upload(self) -> str:
        s = self.settings
        return f"Api Key:   {s.api_key}\nHost:      {s.upload_host}\nPath:      {s.upload_path}\n"

    def read_config(self, term) -> None:
        # The bytes of the C++ core's read_config (Edge Impulse's at_get_config, without the
        # camera lines a board without a camera leaves out).
        sensor_lines = ""
        if self.sensor is not None:
            seconds = sampling.max_sample_seconds(self.sensor.channels, self.sensor.rate_hz)
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

    def run_clearconfig(self, term) -> None:
        term.write("Clearing config...\n")
        self.settings = self._default_settings()
        term.write("OK\r\n")

    def read_deviceid(self, term) -> None:
        term.write(self.settings.device_id + "\n")

    def write_deviceid(self, term, args: list[str]) -> None:
        self.settings.device_id = clip_setting(args[0])
        term.write("OK\n")

    def read_uploadsettings(self, term) -> None:
        term.write(self._upload())

    def write_uploadsettings(self, term, args: list[str]) -> None:
        if len(args) < 2:
            term.write("Missing argument! Required: APIKEY,PATH\n")
            return
        self.settings.api_key, self.settings.upload_path = clip_setting(args[0]), clip_setting(args[1])
        term.write("OK\n")

    def read_uploadhost(self, term) -> None:
        term.write(self.settings.upload_host + "\n")

    def write_uploadhost(self, term, args: list[str]) -> None:
        self.settings.upload_host = clip_setting(args[0])
        term.write("OK\n")

    def read_mgmtsettings(self, term) -> None:
        term.write(self.settings.mgmt_url + "\n")

    def write_mgmtsettings(self, term, args: list[str]) -> None:
        self.settings.mgmt_url = clip_setting(args[0])
        term.write("OK\n")

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
        link = pty_link(master, self._stop, self.throttle_baud)
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
        except (Stopped, Disconnected):
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
                self._serve_link(socket_link(conn, self._stop, self.throttle_baud), greet=True)

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
