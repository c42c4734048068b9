"""The host client: talk to an Edge Impulse-compatible device over a serial port.

``Device`` opens a port path or a pyserial URL, handshakes, reads AT+CONFIG?, and
classifies feature windows through AT+RUNIMPULSESTATIC. Every read has a deadline, so a
silent port, a port that is not an Edge Impulse device, or a device that stops answering
is a clear ``BridgeError`` naming the port, never a hang.
"""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import dataclass, field

import numpy as np

from firmware_bridge.host import protocol, sampling
from pipeline.core.errors import BridgeError, CheckFailed, ProtocolParseError

PROMPT_RE = re.compile(rb"\n> ")
READ_POLL_S = 0.05
HANDSHAKE_RETRY_S = 0.5
QUIET_S = 0.1
CHUNK_REPLY_RE = re.compile(rb"OK CHUNK=(\d+)\r?\n|(?:"
                            + b"|".join(re.escape(p.encode()) for p in protocol.ERROR_PREFIXES)
                            + rb")[^\n]*\n")
ACK_REPLY_RE = re.compile(rb"OK (\d+) ?\r?\n|TIMEOUT\r?\n|ERR[^\n]*\n")
END_RE = re.compile(rb"END OUTPUT\r?\n")
END_PROMPT_RE = re.compile(rb"END OUTPUT\r?\n> ")


@dataclass
class Classification:
    """One window classified on the device."""

    probabilities: dict[str, float]
    label: str
    timing: dict[str, float]
    """dsp_ms, classification_ms, anomaly_ms, as the device reported them."""
    raw: str
    """The whole AT+RUNIMPULSESTATIC transcript, for the record."""
    anomaly: float | None = None

    @property
    def array(self) -> np.ndarray:
        """Probabilities in the device's label order."""
        return np.array(list(self.probabilities.values()), dtype=np.float64)


@dataclass(frozen=True)
class DeviceModel:
    """What a device says of its model: the reply to AT+MODELINFO? (an extension of this
    project's devices). Not the model file's own record (pipeline.tflite.flatbuffer.DeviceModel)."""

    sha256: str
    input_shape: tuple[int, ...]
    input_scale: float
    input_zero_point: int
    labels: list[str]
    fields: dict[str, str] = field(default_factory=dict)

    @property
    def input_size(self) -> int:
        return int(np.prod(self.input_shape))


def parse_model_info(fields: dict[str, str], port: str = "device") -> DeviceModel:
    """The AT+MODELINFO? fields as a DeviceModel; anything missing or garbled (a label list
    that is not a list of text, a shape that is not whole numbers) is a ProtocolParseError."""
    try:
        shape = json.loads(fields["input shape"])
        labels = json.loads(fields["labels"])
        if (not isinstance(shape, list) or not shape
                or not all(isinstance(d, int) and not isinstance(d, bool) and 0 < d < 2**31 for d in shape)):
            raise ValueError(f"input shape {fields['input shape'][:60]!r}")
        if not isinstance(labels, list) or not labels or not all(isinstance(x, str) for x in labels):
            raise ValueError(f"labels {fields['labels'][:60]!r}")
        return DeviceModel(
            sha256=fields["sha-256"],
            input_shape=tuple(shape),
            input_scale=float(fields["input scale"]),
            input_zero_point=int(fields["input zero point"]),
            labels=labels,
            fields=fields,
        )
    except (KeyError, ValueError, TypeError, RecursionError) as exc:
        raise ProtocolParseError(f"{port}: AT+MODELINFO? reply lacks or garbles {exc}") from None


def _preview(data: bytes, limit: int = 60) -> str:
    text = data[:limit].decode("utf-8", "replace")
    return repr(text) + ("..." if len(data) > limit else "")


TIMEOUT_RETRIES = 2
"""Times a window whose transfer timed out is sent again before the evaluation stops."""


class ChunkTimeout(BridgeError):
    """The device gave up on a transfer (TIMEOUT): the window can be sent again."""


try:
    import termios

    _TERMIOS_ERRORS: tuple[type[BaseException], ...] = (termios.error,)
except ImportError:  # not POSIX
    _TERMIOS_ERRORS = ()


class Device:
    """An Edge Impulse-compatible device on ``port`` (a path or a pyserial URL such as
    ``socket://127.0.0.1:7000``). Hosts send CR alone, never CRLF (PROTOCOL.md)."""

    def __init__(self, port: str, baud: int = 115200, timeout: float = 5.0):
        import serial  # lazy (here and below): pyserial only when a port is opened

        self.port, self.baud, self.timeout = str(port), baud, float(timeout)
        self._buf = bytearray()
        self._model_info: DeviceModel | None | bool = False  # False: not asked yet
        self.timeouts_retried = 0
        try:
            self._serial = serial.serial_for_url(self.port, baudrate=baud, timeout=READ_POLL_S,
                                                 write_timeout=self.timeout)
        except (serial.SerialException, ValueError, OSError) as exc:
            reason = os.strerror(exc.errno) if getattr(exc, "errno", None) else str(exc)
            raise BridgeError(f"{self.port}: cannot open serial port ({reason})",
                              hint="list serial ports with `tinyml ports`") from None
        try:
            self.config = self._handshake()
        except BaseException:
            self.close()
            raise

    # -- bytes in and out -----------------------------------------------------------------

    def write(self, data: bytes) -> None:
        import serial

        try:
            self._serial.write(data)
            self._serial.flush()
        except (serial.SerialException, OSError, *_TERMIOS_ERRORS) as exc:
            # pyserial's flush is termios.tcdrain, whose error is not an OSError: a pty whose
            # device died (kill -9 of the host board) raises it, EIO, while a chunk drains.
            raise BridgeError(f"{self.port}: write failed ({exc})") from None

    def _fill(self) -> int:
        """Read what is there, waiting at most READ_POLL_S for the first byte."""
        import serial

        try:
            data = self._serial.read(max(1, self._serial.in_waiting))
        except (serial.SerialException, OSError) as exc:
            raise BridgeError(f"{self.port}: read failed, the device went away? ({exc})") from None
        self._buf += data
        return len(data)

    def read(self, timeout: float) -> bytes:
        """Whatever the device sends within ``timeout`` seconds (at least what is buffered)."""
        deadline = time.monotonic() + timeout
        while not self._buf and time.monotonic() < deadline:
            self._fill()
        while self._serial.in_waiting:
            self._fill()
        data, self._buf = bytes(self._buf), bytearray()
        return data

    def _expect(self, pattern: re.Pattern, what: str,
                timeout: float | None = None) -> tuple[bytes, re.Match]:
        """Read until ``pattern`` matches; consume and return the bytes up to its end."""
        timeout = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        while True:
            # Match on a copy: a match keeps pointing into the buffer we are about to cut.
            m = pattern.search(bytes(self._buf))
            if m:
                data = m.string[:m.end()]
                del self._buf[:m.end()]
                return data, m
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                seen = f"; last bytes {_preview(bytes(self._buf[-60:]))}" if self._buf else "; nothing"
                raise BridgeError(f"{self.port}: no {what} within {timeout:g} s{seen}",
                                  hint="is this the board's port, running an Edge Impulse-compatible firmware?")
            self._fill()

    def _drain(self, quiet: float = QUIET_S) -> None:
        """Discard input until the line has been quiet for ``quiet`` seconds."""
        deadline = time.monotonic() + self.timeout
        last = time.monotonic()
        while time.monotonic() - last < quiet and time.monotonic() < deadline:
            if self._fill():
                last = time.monotonic()
        self._buf.clear()

    # -- commands -------------------------------------------------------------------------

    def _handshake(self) -> protocol.ATConfig:
        try:
            self._serial.reset_input_buffer()
        except Exception:  # noqa: BLE001 - URL handlers without a buffer to reset
            pass
        deadline = time.monotonic() + self.timeout
        received = bytearray()
        while True:
            # 'b' first: it stops an AT+RUNIMPULSE a previous host left running; on an
            # idle device "bAT" is just one more invalid line that earns a prompt.
            self.write(b"bAT\r")
            retry = min(deadline, time.monotonic() + HANDSHAKE_RETRY_S)
            while time.monotonic() < retry and not PROMPT_RE.search(self._buf):
                self._fill()
            received += self._buf
            if PROMPT_RE.search(self._buf):
                break
            self._buf.clear()
            if time.monotonic() >= deadline:
                if received:
                    raise BridgeError(
                        f"{self.port}: not an Edge Impulse AT device: {len(received)} bytes in "
                        f"{self.timeout:g} s but no '> ' prompt (first bytes {_preview(bytes(received))})",
                        hint="check the port and the baud rate; the board must run an Edge Impulse-compatible firmware")
                raise BridgeError(f"{self.port}: no reply to AT within {self.timeout:g} s",
                                  hint="is the board connected, running its firmware, on this port?")
        self._drain()
        reply = self.command("AT+CONFIG?")
        try:
            config = protocol.parse_config(reply)
        except ProtocolParseError as exc:
            raise BridgeError(f"{self.port}: not an Edge Impulse AT device: {exc}") from None
        for line in config.errors:
            self._raise_device_error(line)
        return config

    def command(self, line: str, timeout: float | None = None) -> str:
        """Send one AT command line and return its output (between the echo and the prompt)."""
        self.send(line, timeout)
        data, _ = self._expect(PROMPT_RE, f"prompt after {line}", timeout)
        return data[:-len(protocol.PROMPT)].decode("utf-8", "replace")

    def send(self, line: str, timeout: float | None = None) -> None:
        """Send ``line`` + CR and consume the device's echo of it."""
        encoded = line.encode("ascii")
        self.write(encoded + b"\r")
        self._expect(re.compile(re.escape(encoded) + rb"\r\n"), f"echo of {line}", timeout)

    def wait_prompt(self, timeout: float | None = None) -> str:
        """Everything up to the next prompt."""
        data, _ = self._expect(PROMPT_RE, "prompt", timeout)
        return data.decode("utf-8", "replace")

    def _raise_device_error(self, line: str) -> None:
        if "Failed to allocate tensor arena" in line:
            raise CheckFailed(f"{self.port}: the device failed to boot the model: {line}",
                              hint="the model needs more RAM than the board has: shrink it or pick a bigger board")
        raise BridgeError(f"{self.port}: the device reported an error: {line}")

    def model_info(self) -> DeviceModel | None:
        """AT+MODELINFO? when the device supports it (this project's device), else None."""
        if self._model_info is not False:
            return self._model_info
        reply = self.command("AT+MODELINFO?")
        if "Command not found" in reply or "No handler" in reply:
            self._model_info = None
            return None
        for line in protocol.text_lines(reply):
            if line.startswith("ERR"):
                self._raise_device_error(line.strip())
        info = parse_model_info(protocol.parse_fields(reply), self.port)
        self._model_info = info
        return info

    def classify(self, features, debug: bool = False) -> Classification:
        """Classify one raw input frame (any shape; sent flat as float32) on the device.

        A transfer the device gave up on (TIMEOUT: a chunk came later than 100 ms after the
        last, e.g. when this host was descheduled on a loaded machine or a USB hub stalled)
        is sent again, up to TIMEOUT_RETRIES times, after getting a prompt back; the count is
        kept in ``timeouts_retried``. Nothing of a timed-out transfer is scored. ``debug``:
        AT+RUNIMPULSESTATIC=y, the device prints the model's input (its features) too."""
        values = np.asarray(features, dtype="<f4").reshape(-1)
        if values.size == 0:
            raise BridgeError(f"{self.port}: no features to classify (an empty window)")
        for attempt in range(TIMEOUT_RETRIES + 1):
            try:
                return self._classify_once(values, debug)
            except ChunkTimeout:
                if attempt == TIMEOUT_RETRIES:
                    raise
                self.timeouts_retried += 1
                self.command("AT")  # after TIMEOUT the device prints no prompt: get one
        raise AssertionError("unreachable")

    def _classify_once(self, values: np.ndarray, debug: bool = False) -> Classification:
        n = values.size
        line = f"AT+RUNIMPULSESTATIC={'y' if debug else 'n'},{n}"
        self.send(line)
        transcript = bytearray()
        data, m = self._expect(CHUNK_REPLY_RE, "OK CHUNK= reply to AT+RUNIMPULSESTATIC")
        transcript += data
        if m.group(1) is None:
            self._raise_device_error(m.group(0).decode("utf-8", "replace").strip())
        chunk_size = int(m.group(1))
        try:
            protocol.check_chunk_size(chunk_size)
        except ValueError as exc:
            raise ProtocolParseError(f"{self.port}: OK CHUNK={chunk_size}: {exc}") from None
        # Each chunk goes after the reply to the one before, so none waits out the 100 ms.
        for chunk in protocol.encode_chunks(values.tobytes(), chunk_size):
            self.write(chunk.encode("ascii"))
            data, m = self._expect(ACK_REPLY_RE, "OK <n> reply to a chunk")
            transcript += data
            if m.group(1) is None:
                break
        if m.group(1) is not None:
            data, _ = self._expect(END_PROMPT_RE, "END OUTPUT and prompt")
            transcript += data
        else:
            try:  # TIMEOUT or ERR: END OUTPUT follows, and no prompt
                data, _ = self._expect(END_RE, "END OUTPUT", timeout=min(self.timeout, 1.0))
                transcript += data
            except BridgeError:
                pass
        raw = transcript.decode("utf-8", "replace")
        result = protocol.parse_static_transcript(raw)
        return self._classification(result, raw, n)

    def _classification(self, t: protocol.StaticTranscript, raw: str, n: int) -> Classification:
        if t.timed_out:
            raise ChunkTimeout(f"{self.port}: the device gave up waiting for a chunk (TIMEOUT), "
                               f"{TIMEOUT_RETRIES + 1} times in a row",
                               hint="the link is too slow or lossy for its 100 ms chunk timeout")
        if t.expected_values is not None:
            raise BridgeError(f"{self.port}: the device expects {t.expected_values} values per window, got {n}",
                              hint="send one raw input frame of the model (its input size)")
        for line in t.errors:
            self._raise_device_error(line)
        if t.result_code != 0 or t.result is None or not t.result.predictions:
            raise ProtocolParseError(f"{self.port}: AT+RUNIMPULSESTATIC ended without predictions "
                                     f"(RESULT {t.result_code}); transcript {_preview(raw.encode(), 200)}")
        r = t.result
        return Classification(dict(r.predictions), r.label or "", dict(r.timing), raw, r.anomaly)

    # -- sampling (edge-impulse-cli, shared/daemon/ei-serial-protocol.ts) ------------------

    def sample_settings(self) -> sampling.SampleSettings:
        """AT+SAMPLESETTINGS?: label, interval, length and HMAC key the device will sample with."""
        try:
            return sampling.parse_sample_settings(self.command("AT+SAMPLESETTINGS?"))
        except ProtocolParseError as exc:
            raise ProtocolParseError(f"{self.port}: {exc.message}") from None

    def set_sample_settings(self, label: str, interval_ms: float, length_ms: int, hmac_key: str = "") -> None:
        """AT+SAMPLESETTINGS=label,interval,length,key, as the daemon sends it (an empty key: none)."""
        line = f"AT+SAMPLESETTINGS={label},{float(interval_ms)!r},{int(length_ms)},{hmac_key}"
        reply = self.command(line)
        if "OK" not in reply:  # the daemon's check
            raise BridgeError(f"{self.port}: the device refused {line}: {reply.strip()[:120]}")

    def sample_start(self, sensor: str, timeout: float) -> sampling.SampleReply:
        """AT+SAMPLESTART=sensor: the device records one sample into its buffer."""
        reply = self.command(f"AT+SAMPLESTART={sensor}", timeout=timeout)
        try:
            return sampling.parse_sample_reply(reply)
        except ProtocolParseError as exc:
            raise BridgeError(f"{self.port}: {exc.message}") from None

    def read_buffer(self, start: int, end: int, timeout: float | None = None) -> bytes:
        """AT+READBUFFER: the sample's bytes. Like the daemon, ",n" asks for no baud switch."""
        reply = self.command(f"AT+READBUFFER={int(start)},{int(end)},n", timeout=timeout)
        if "Failed to read" in reply or "Missing argument" in reply:
            raise BridgeError(f"{self.port}: AT+READBUFFER={start},{end}: {reply.strip()[:120]}")
        try:
            return sampling.decode_read_buffer(reply)
        except ProtocolParseError as exc:
            raise BridgeError(f"{self.port}: {exc.message}") from None

    def close(self) -> None:
        serial_port = getattr(self, "_serial", None)
        if serial_port is not None:
            try:
                serial_port.close()
            except Exception:  # noqa: BLE001 - closing a port that already went away
                pass

    def __enter__(self) -> Device:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
