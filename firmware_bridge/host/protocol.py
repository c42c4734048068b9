"""The Edge Impulse AT protocol (shared/PROTOCOL.md): what both sides agree on.

The constants of the line discipline (prompt, line bound, AT version); the renderers
(``render_*``), which print results byte for byte as the firmwares do; the
AT+RUNIMPULSESTATIC transfer (base64 of float32, in chunks). Host side: parsers for
AT+CONFIG?, both AT+RUNIMPULSE result formats and the whole AT+RUNIMPULSESTATIC transcript.
They tolerate what real firmwares vary in (CRLF, ``us`` timings, 5 or 6 decimals, unknown
keys and lines) and raise ``ProtocolParseError``, and nothing else, on text that is not the
protocol.

Elsewhere: the AT server a device runs is the firmware's (firmware/core/at_server.cpp, one
source for the host board, QEMU and the Arduino sketch; no Python copy); sampling, the signed
CBOR acquisition file and AT+SAMPLESTART's replies: ``firmware_bridge.host.sampling``.
"""

from __future__ import annotations

import base64
import binascii
import re
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field

from pipeline.core.errors import ProtocolParseError

AT_VERSION = "1.8.0"
PROMPT = "> "
BACKSPACES = (0x08, 0x7F)
STATIC_CHUNK_TIMEOUT_S = 0.1
DEFAULT_CHUNK_SIZE = 32
STATIC_MAX_VALUES = 1 << 20  # the C++ core's kStaticMaxValues
# The line discipline's bound, as the C++ core's kAtMaxLineLength (firmware/core/at_server.h): a
# longer line is discarded whole, its excess neither stored nor echoed, and its CR prints
# LINE_TOO_LONG and a prompt. Constant work per byte, whatever the line's length.
MAX_LINE_LENGTH = 256
LINE_TOO_LONG = f"ERR: line too long (more than {MAX_LINE_LENGTH} characters), discarded\n"
MAX_ARGS = 16  # AT+X=a,b,...: arguments past this are dropped (kAtMaxArgs)


# ---------------------------------------------------------------------------------------
# Renderers: how firmwares print results (the tests round-trip the parsers through them)
# ---------------------------------------------------------------------------------------


def format_duration(ms: float, unit: str) -> str:
    """One timing value: ``unit`` is "ms" (integer ms, ``us`` below a millisecond, as the
    current SDK prints) or "ms3" (3-decimal ms, for a device that measures microseconds)."""
    if unit == "ms3":
        return f"{ms:.3f} ms"
    if unit == "ms":
        return f"{round(ms * 1000)} us" if ms < 1.0 else f"{round(ms)} ms"
    raise ValueError(f"unit: expected 'ms' or 'ms3', got {unit!r}")


def render_timing(dsp_ms: float, inference_ms: float, anomaly_ms: float, unit: str = "ms",
                  postprocessing_ms: float | None = None) -> str:
    text = (f"Timing: DSP {format_duration(dsp_ms, unit)}, "
            f"inference {format_duration(inference_ms, unit)}, "
            f"anomaly {format_duration(anomaly_ms, unit)}")
    if postprocessing_ms is not None:
        text += f", postprocessing {format_duration(postprocessing_ms, unit)}"
    return text


def render_static_result(labels: Sequence[str], probabilities: Sequence[float],
                         timing_ms: tuple[float, float, float], decimals: int = 6,
                         anomaly: float | None = None) -> str:
    """Everything AT+RUNIMPULSESTATIC prints after TRANSFER COMPLETED, END OUTPUT included."""
    lines = [render_timing(*timing_ms, unit="ms3"), "Predictions:"]
    lines += [f"  {label}: {p:.{decimals}f}" for label, p in zip(labels, probabilities, strict=True)]
    if anomaly is not None:
        lines.append(f"Anomaly prediction: {anomaly:.{decimals}f}")
    lines += ["RESULT 0", "END OUTPUT"]
    return "".join(line + "\r\n" for line in lines)


def render_current_result(labels: Sequence[str], probabilities: Sequence[float],
                          timing_ms: tuple[float, float, float], *, hashed: bool = True,
                          newline: str = "\n", decimals: int = 6, unit: str = "ms",
                          anomaly: float | None = None,
                          postprocessing_ms: float | None = None) -> str:
    """One AT+RUNIMPULSE result as the current SDK prints it (``hashed``: the ``#`` of 2026)."""
    lines = [render_timing(*timing_ms, unit=unit, postprocessing_ms=postprocessing_ms),
             ("#" if hashed else "") + "Classification predictions:"]
    lines += [f"  {label}: {p:.{decimals}f}" for label, p in zip(labels, probabilities, strict=True)]
    if anomaly is not None:
        lines.append(f"Anomaly prediction: {anomaly:.{decimals}f}")
    return "".join(line + newline for line in lines)


def render_older_result(labels: Sequence[str], probabilities: Sequence[float],
                        timing_ms: tuple[int, int, int], decimals: int = 5,
                        anomaly: float | None = None) -> str:
    """One AT+RUNIMPULSE result as older firmwares print it."""
    d, i, a = (int(t) for t in timing_ms)
    text = f"Predictions (DSP: {d} ms., Classification: {i} ms., Anomaly: {a} ms.): \n"
    text += "".join(f"    {label}: \t{p:.{decimals}f}\r\n" for label, p in zip(labels, probabilities, strict=True))
    if anomaly is not None:
        text += f"    anomaly score: {anomaly:.{decimals}f}\r\n"
    return text


# ---------------------------------------------------------------------------------------
# AT+RUNIMPULSESTATIC transfer: base64 of little-endian float32, in chunks
# ---------------------------------------------------------------------------------------


def check_chunk_size(chunk_size: int) -> int:
    if not isinstance(chunk_size, int) or chunk_size <= 0 or chunk_size % 16:
        raise ValueError(f"chunk size: expected a positive multiple of 16, got {chunk_size!r}")
    return chunk_size


def encoded_length(n_values: int) -> int:
    """Base64 characters of ``n_values`` float32 values, padding included."""
    return 4 * -(-4 * n_values // 3)


def chunk_count(n_values: int, chunk_size: int) -> int:
    return -(-encoded_length(n_values) // chunk_size)


def encode_chunks(values: Sequence[float] | bytes, chunk_size: int) -> list[str]:
    """The chunks a host sends: base64 of the float32 values, the last padded with ``=``."""
    check_chunk_size(chunk_size)
    raw = values if isinstance(values, bytes) else struct.pack(f"<{len(values)}f", *values)
    text = base64.b64encode(raw).decode("ascii")
    chunks = [text[i:i + chunk_size] for i in range(0, len(text), chunk_size)]
    if chunks:
        chunks[-1] = chunks[-1].ljust(chunk_size, "=")
    return chunks


def decode_chunk(chunk: str | bytes) -> bytes:
    """Decode one chunk on its own, as the firmware does (its padding is whole ``====`` groups)."""
    if isinstance(chunk, str):
        chunk = chunk.encode("ascii", "replace")
    if len(chunk) % 4:
        raise ValueError(f"chunk of {len(chunk)} characters: expected a multiple of 4")
    out = bytearray()
    for i in range(0, len(chunk), 4):
        group = chunk[i:i + 4]
        if group == b"====":
            continue
        try:
            out += base64.b64decode(group, validate=True)
        except binascii.Error as exc:
            raise ValueError(f"not base64: {group!r}") from exc
    return bytes(out)


# ---------------------------------------------------------------------------------------
# Host side: AT+CONFIG?
# ---------------------------------------------------------------------------------------

SENSOR_RE = re.compile(
    r"^Name\:\s?([^,]+),\s?Max sample length\:\s?([^,]+)s\s?,\s?Frequencies\:\s?\[(.*)\]\s?$"
)
SECTION_RE = re.compile(r"^=+\s*([^=]*?)\s*=+\s*$")
_NUM = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?|[-+]?(?:nan|inf)"
_NUM_RE = re.compile(rf"^(?:{_NUM})$", re.IGNORECASE)


def parse_number(text: str, what: str) -> float:
    text = text.strip()
    if not _NUM_RE.match(text):
        raise ProtocolParseError(f"{what}: expected a number, got {text!r}")
    return float(text)


def text_lines(text: str | bytes) -> list[str]:
    """Lines of device output: bytes decoded leniently, CR and LF both end a line."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return [line for line in re.split(r"\r\n|\r|\n", text)]


@dataclass(frozen=True)
class Sensor:
    name: str
    max_sample_length_s: float
    frequencies_hz: tuple[float, ...]


def parse_sensor_line(line: str) -> Sensor:
    match = SENSOR_RE.match(line.strip())
    if not match:
        raise ProtocolParseError(f"sensor line {line!r}: expected 'Name: ..., Max sample length: ...s, Frequencies: [...]'")
    name, length, freqs = match.groups()
    frequencies = []
    for item in freqs.split(","):
        item = item.strip()
        if item:
            frequencies.append(parse_number(re.sub(r"\s*Hz$", "", item, flags=re.IGNORECASE), f"sensor {name!r} frequency"))
    return Sensor(name.strip(), parse_number(length, f"sensor {name!r} max sample length"), tuple(frequencies))


@dataclass
class ATConfig:
    """A device's reply to AT+CONFIG?: sections of lower-cased keys, and the sensors."""

    sections: dict[str, dict[str, str]]
    sensors: list[Sensor]
    preamble: list[str] = field(default_factory=list)
    """Lines before the first section (a device that failed to boot says so there)."""

    def get(self, section: str, key: str, default: str | None = None) -> str | None:
        return self.sections.get(section, {}).get(key, default)

    @property
    def device_id(self) -> str | None:
        return self.get("device info", "id")

    @property
    def device_type(self) -> str | None:
        return self.get("device info", "type")

    @property
    def at_version(self) -> str | None:
        return self.get("device info", "at version")

    @property
    def transfer_baudrate(self) -> int | None:
        value = self.get("device info", "data transfer baudrate")
        return int(value) if value and value.isdigit() else None

    @property
    def errors(self) -> list[str]:
        return [line for line in self.preamble if line.startswith("ERR")]


def parse_config(text: str | bytes) -> ATConfig:
    """Parse the reply to AT+CONFIG? (tolerates CRLF, unknown keys, Resolutions without camera)."""
    sections: dict[str, dict[str, str]] = {}
    sensors: list[Sensor] = []
    preamble: list[str] = []
    current: str | None = None
    for raw in text_lines(text):
        line = raw.strip()
        if not line:
            continue
        header = SECTION_RE.match(line)
        if header:
            current = header.group(1).strip().lower()
            sections.setdefault(current, {})
        elif current is None:
            preamble.append(line)
        elif current == "sensors":
            sensors.append(parse_sensor_line(line))
        elif ":" in line:
            key, value = line.split(":", 1)
            sections[current][key.strip().lower()] = value.strip()
    if "device info" not in sections:
        raise ProtocolParseError("AT+CONFIG? reply has no '===== Device info =====' section")
    return ATConfig(sections, sensors, preamble)


def parse_fields(text: str | bytes) -> dict[str, str]:
    """``key: value`` lines (split at the first ``:``, keys lower-cased), e.g. AT+MODELINFO?."""
    fields: dict[str, str] = {}
    for raw in text_lines(text):
        line = raw.strip()
        if ":" in line:
            key, value = line.split(":", 1)
            fields[key.strip().lower()] = value.strip()
    return fields


# ---------------------------------------------------------------------------------------
# Host side: inference results (AT+RUNIMPULSE in both formats, AT+RUNIMPULSESTATIC)
# ---------------------------------------------------------------------------------------

_UNIT = r"(ms|us)\.?"
TIMING_RE = re.compile(
    rf"^Timing:\s*DSP\s+({_NUM})\s*{_UNIT},\s*inference\s+({_NUM})\s*{_UNIT},"
    rf"\s*anomaly\s+({_NUM})\s*{_UNIT}(?:,\s*postprocessing\s+({_NUM})\s*{_UNIT})?\s*$",
    re.IGNORECASE,
)
OLDER_TIMING_RE = re.compile(
    rf"^Predictions\s*\(DSP:\s*({_NUM})\s*ms\.?,\s*Classification:\s*({_NUM})\s*ms\.?,"
    rf"\s*Anomaly:\s*({_NUM})\s*ms\.?\)\s*:\s*$",
    re.IGNORECASE,
)
CLASSES_HEADER_RE = re.compile(r"^#?\s*(?:Classification\s+)?predictions\s*:\s*$", re.IGNORECASE)
CLASS_RE = re.compile(rf"^\s+(\S.*?)\s*:\s*({_NUM})\s*$", re.IGNORECASE)
ANOMALY_RE = re.compile(rf"^\s*(?:Anomaly prediction|anomaly score)\s*:\s*({_NUM})\s*$", re.IGNORECASE)
BOXES_HEADER_RE = re.compile(r"^#?\s*Object detection bounding boxes\s*:\s*$", re.IGNORECASE)
BOX_RE = re.compile(
    rf"^\s*(\S.*?)\s*\(({_NUM})\)\s*\[\s*x:\s*({_NUM}),\s*y:\s*({_NUM}),"
    rf"\s*width:\s*({_NUM}),\s*height:\s*({_NUM})\s*\]\s*$",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class BoundingBox:
    label: str
    score: float
    x: float
    y: float
    width: float
    height: float


@dataclass
class InferenceResult:
    """One classification as a device printed it."""

    timing: dict[str, float] = field(default_factory=dict)
    """dsp_ms, classification_ms, anomaly_ms (and postprocessing_ms when printed)."""
    predictions: dict[str, float] = field(default_factory=dict)
    anomaly: float | None = None
    boxes: list[BoundingBox] = field(default_factory=list)
    format: str = "current"
    """"current" (SDK, ``Timing:`` line) or "older" (``Predictions (DSP: ...)``)."""

    @property
    def label(self) -> str | None:
        """The top class (or top box), None when the device printed none."""
        if self.predictions:
            return max(self.predictions, key=self.predictions.__getitem__)
        if self.boxes:
            return max(self.boxes, key=lambda b: b.score).label
        return None


def _ms(value: str, unit: str) -> float:
    v = float(value)
    return v / 1000.0 if unit.lower() == "us" else v


def parse_timing(line: str) -> dict[str, float] | None:
    """The timing of a ``Timing:`` or an older ``Predictions (DSP: ...)`` line, else None."""
    line = line.strip()
    m = TIMING_RE.match(line)
    if m:
        g = m.groups()
        timing = {"dsp_ms": _ms(g[0], g[1]), "classification_ms": _ms(g[2], g[3]),
                  "anomaly_ms": _ms(g[4], g[5])}
        if g[6] is not None:
            timing["postprocessing_ms"] = _ms(g[6], g[7])
        return timing
    m = OLDER_TIMING_RE.match(line)
    if m:
        return {"dsp_ms": float(m.group(1)), "classification_ms": float(m.group(2)),
                "anomaly_ms": float(m.group(3))}
    return None


class ResultParser:
    """Assembles inference results from device output lines, in either format.

    A result is complete when a line that cannot belong to it arrives; ``flush()`` ends
    the pending one (a live monitor calls it when the port goes quiet).
    """

    def __init__(self) -> None:
        self._pending: InferenceResult | None = None
        self._state = "idle"  # idle | header (timing seen) | classes | boxes

    @property
    def pending(self) -> bool:
        return self._pending is not None

    def flush(self) -> InferenceResult | None:
        result, self._pending, self._state = self._pending, None, "idle"
        if result is not None and (result.predictions or result.boxes or result.anomaly is not None):
            return result
        return None

    def feed_line(self, line: str) -> list[InferenceResult]:
        done: list[InferenceResult] = []
        stripped = line.strip()
        if not stripped:
            return done
        timing = parse_timing(stripped)
        if timing is not None:
            self._finish(done)
            older = bool(OLDER_TIMING_RE.match(stripped))
            self._pending = InferenceResult(timing=timing, format="older" if older else "current")
            self._state = "classes" if older else "header"
            return done
        header = ("classes" if CLASSES_HEADER_RE.match(stripped)
                  else "boxes" if BOXES_HEADER_RE.match(stripped) else None)
        if header:
            if self._state != "header":  # a block without a Timing line before it
                self._finish(done)
                self._pending = InferenceResult()
            self._state = header
            return done
        anomaly = ANOMALY_RE.match(line)
        if anomaly and self._state in ("classes", "boxes"):
            assert self._pending is not None
            self._pending.anomaly = float(anomaly.group(1))
            return done
        if self._state == "classes":
            m = CLASS_RE.match(line.rstrip("\r\n"))
            if m:
                assert self._pending is not None
                self._pending.predictions[m.group(1)] = float(m.group(2))
                return done
        if self._state == "boxes":
            m = BOX_RE.match(stripped)
            if m:
                assert self._pending is not None
                label, *numbers = m.groups()
                self._pending.boxes.append(BoundingBox(label, *(float(n) for n in numbers)))
                return done
            if stripped.lower().startswith("no objects found"):
                return done
        self._finish(done)
        return done

    def _finish(self, done: list[InferenceResult]) -> None:
        result = self.flush()
        if result is not None:
            done.append(result)


def parse_results(text: str | bytes) -> list[InferenceResult]:
    """Every inference result in a stretch of device output (AT+RUNIMPULSE, either format)."""
    parser = ResultParser()
    results: list[InferenceResult] = []
    for line in text_lines(text):
        results += parser.feed_line(line)
    last = parser.flush()
    return results + ([last] if last else [])


# ---------------------------------------------------------------------------------------
# Host side: the whole AT+RUNIMPULSESTATIC transcript
# ---------------------------------------------------------------------------------------

CHUNK_RE = re.compile(r"^OK CHUNK=(\d+)\s*$")
ACK_RE = re.compile(r"^OK (\d+)\s*$")
COMPLETED_RE = re.compile(r"^TRANSFER COMPLETED (\d+)\s*$")
RESULT_RE = re.compile(r"^RESULT (-?\d+)\s*$")
EXPECTED_RE = re.compile(r"^Expected (\d+) items, but got (\d+)\s*$")
ERROR_PREFIXES = ("ERR", "Too few arguments", "Not a valid AT command", "Command not found",
                  "No handler for command")


@dataclass
class StaticTranscript:
    """What a device said during one AT+RUNIMPULSESTATIC."""

    chunk_size: int | None = None
    acks: list[int] = field(default_factory=list)
    completed: int | None = None
    result_code: int | None = None
    result: InferenceResult | None = None
    errors: list[str] = field(default_factory=list)
    expected_values: int | None = None
    timed_out: bool = False
    ended: bool = False

    @property
    def ok(self) -> bool:
        return self.result_code == 0 and self.result is not None and not self.timed_out


def parse_static_transcript(text: str | bytes) -> StaticTranscript:
    """Parse everything a device printed for AT+RUNIMPULSESTATIC (from OK CHUNK to the prompt)."""
    out = StaticTranscript()
    parser = ResultParser()
    recognized = False

    def take_results(results: list[InferenceResult]) -> None:
        if results:
            out.result = results[-1]

    for raw in text_lines(text):
        line = raw.strip()
        if not line or line == PROMPT.strip():
            continue
        recognized_line = True
        if m := CHUNK_RE.match(line):
            out.chunk_size = int(m.group(1))
        elif m := ACK_RE.match(line):
            out.acks.append(int(m.group(1)))
        elif m := COMPLETED_RE.match(line):
            out.completed = int(m.group(1))
        elif m := RESULT_RE.match(line):
            out.result_code = int(m.group(1))
        elif line == "END OUTPUT":
            out.ended = True
        elif line == "TIMEOUT":
            out.timed_out = True
        elif m := EXPECTED_RE.match(line):
            out.expected_values = int(m.group(1))
            out.errors.append(line)
        elif line.startswith(ERROR_PREFIXES):
            out.errors.append(line)
        else:
            recognized_line = False
        recognized |= recognized_line
        # Any line the result block cannot hold ends it (RESULT normally does).
        take_results(parser.feed_line(raw))
    last = parser.flush()
    if last is not None:
        out.result = last
    if not recognized:
        raise ProtocolParseError(
            "not an AT+RUNIMPULSESTATIC transcript: no OK CHUNK=, RESULT, END OUTPUT, TIMEOUT or error line"
        )
    return out
