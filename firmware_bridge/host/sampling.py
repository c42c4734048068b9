"""Sampling (AT+SAMPLESTART), both sides: the signed CBOR acquisition file a device writes
and a host reads back (byte for byte as the C++ core's AcquisitionWriter), the bounds of
the device's sample buffer, and the host's parsers of the sampling replies.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import struct
from dataclasses import dataclass

from firmware_bridge.host.protocol import parse_fields, parse_number, text_lines
from pipeline.core.errors import ProtocolParseError

# Sampling (AT+SAMPLESTART): the same bounds as the C++ core's device_commands.h.
SAMPLE_BUFFER_BYTES = 16384
SAMPLE_HEADER_RESERVE = 1024
SETTING_CHARS = 127
SAMPLE_START_DELAY_S = 2.0
SLICES_PER_WINDOW = 4
MAX_SAMPLE_AXES = 23
MAX_SAMPLE_LENGTH_MS = 86_400_000
INTERVAL_TOLERANCE_MS = 0.01
AXIS_NAMES = ("accX", "accY", "accZ", "gyrX", "gyrY", "gyrZ", "magX", "magY", "magZ")
AXIS_UNITS = ("m/s2", "dps", "uT")


SIGNATURE_ZEROS = "0" * 64


def is_decimal(text: str, fraction: bool) -> bool:
    """A number as hosts write one, and as the C++ core's is_decimal accepts it."""
    pattern = r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?" if fraction else r"[+-]?\d+"
    return re.fullmatch(pattern, text, flags=re.ASCII) is not None


def axis_name(axis: int) -> str:
    return AXIS_NAMES[axis] if 0 <= axis < len(AXIS_NAMES) else "axis"


def axis_units(axis: int) -> str:
    return AXIS_UNITS[axis // 3] if 0 <= axis < len(AXIS_NAMES) else ""


def reading_bytes(axes: int) -> int:
    """CBOR bytes of one reading: an array head and ``axes`` float32 values."""
    return 1 + 5 * axes


def max_sample_seconds(axes: int, rate_hz: float) -> int:
    """The longest sample, in whole seconds, whose readings fit the device's sample buffer."""
    readings = (SAMPLE_BUFFER_BYTES - SAMPLE_HEADER_RESERVE) // reading_bytes(axes)
    return int(readings / rate_hz)


def _cbor_head(major: int, n: int) -> bytes:
    m = major << 5
    if n < 24:
        return bytes([m | n])
    if n < 256:
        return bytes([m | 24, n])
    if n < 65536:
        return bytes([m | 25]) + n.to_bytes(2, "big")
    return bytes([m | 26]) + n.to_bytes(4, "big")


def _cbor_text(text: str) -> bytes:
    data = text.encode("utf-8")
    return _cbor_head(3, len(data)) + data


def acquisition_header(device_name: str, device_type: str, interval_ms: float, axes: int,
                       signed: bool) -> bytes:
    """The file up to its open "values" array, as the C++ core's AcquisitionWriter::begin
    writes it (the layout of Edge Impulse's firmware-sdk sensor_aq.cpp, sensor_aq_init)."""
    out = bytearray(_cbor_head(5, 3))
    out += _cbor_text("protected") + _cbor_head(5, 2)
    out += _cbor_text("ver") + _cbor_text("v1") + _cbor_text("alg") + _cbor_text("HS256" if signed else "none")
    out += _cbor_text("signature") + _cbor_text(SIGNATURE_ZEROS)
    out += _cbor_text("payload") + _cbor_head(5, 5)
    out += _cbor_text("device_name") + _cbor_text(device_name)
    out += _cbor_text("device_type") + _cbor_text(device_type)
    out += _cbor_text("interval_ms") + b"\xfb" + struct.pack(">d", interval_ms)
    out += _cbor_text("sensors") + _cbor_head(4, axes)
    for i in range(axes):
        out += _cbor_head(5, 2) + _cbor_text("name") + _cbor_text(axis_name(i))
        out += _cbor_text("units") + _cbor_text(axis_units(i))
    out += _cbor_text("values") + b"\x9f"  # indefinite length: readings are appended
    return bytes(out)


def encode_acquisition(device_name: str, device_type: str, interval_ms: float, values,
                       hmac_key: str) -> bytes:
    """One sample as a signed CBOR acquisition file, byte for byte as the C++ core writes it:
    readings as arrays of CBOR float32, a 0xFF break, then HMAC-SHA256 over the file with
    the signature field at 64 zeros (HS256), or the zeros left in place without a key."""
    rows = [[float(v) for v in row] for row in values]
    axes = len(rows[0]) if rows else 0
    out = bytearray(acquisition_header(device_name, device_type, interval_ms, axes, bool(hmac_key)))
    for row in rows:
        out += _cbor_head(4, axes) + b"".join(b"\xfa" + struct.pack(">f", v) for v in row)
    out += b"\xff"
    return sign_acquisition(bytes(out), hmac_key) if hmac_key else bytes(out)


_SIGNATURE_FIELD = _cbor_text("signature") + _cbor_head(3, 64)


def _signature_offset(data: bytes) -> int:
    at = data.find(_SIGNATURE_FIELD)
    if at < 0:
        raise ProtocolParseError("acquisition file: no 64-character 'signature' field")
    return at + len(_SIGNATURE_FIELD)


def acquisition_hmac(data: bytes, hmac_key: str) -> str:
    """HMAC-SHA256 (hex) of a CBOR or JSON acquisition file with its signature zeroed."""
    if data[:1] == b"{":
        at = data.find(b'"signature"')
        start = data.find(b'"', data.find(b":", at) + 1) + 1
    else:
        start = _signature_offset(data)
    zeroed = data[:start] + SIGNATURE_ZEROS.encode() + data[start + 64:]
    return hmac.new(hmac_key.encode("utf-8"), zeroed, hashlib.sha256).hexdigest()


def sign_acquisition(data: bytes, hmac_key: str) -> bytes:
    """The file with its signature field set to its HMAC-SHA256 under ``hmac_key``."""
    start = _signature_offset(data)
    return data[:start] + acquisition_hmac(data, hmac_key).encode() + data[start + 64:]


@dataclass(frozen=True)
class SampleSettings:
    """AT+SAMPLESETTINGS? as a host reads it."""

    label: str
    interval_ms: float
    length_ms: int
    hmac_key: str


def parse_sample_settings(text: str | bytes) -> SampleSettings:
    fields = parse_fields(text)
    try:
        return SampleSettings(fields["label"], parse_number(fields["interval"].replace("ms.", ""), "Interval"),
                              int(parse_number(fields["length"].replace("ms.", ""), "Length")),
                              fields.get("hmac key", ""))
    except KeyError as exc:
        raise ProtocolParseError(f"AT+SAMPLESETTINGS? reply has no {exc} line") from None


USED_BUFFER_RE = re.compile(r"from=(\d+).*?to=(\d+)")


@dataclass(frozen=True)
class SampleReply:
    """What a device printed for AT+SAMPLESTART (edge-impulse-cli, ei-serial-protocol.ts
    startSampling reads the same: a File name line, then the buffer's from and to)."""

    file_name: str
    start: int
    end: int


def parse_sample_reply(text: str | bytes) -> SampleReply:
    lines = [line.strip() for line in text_lines(text)]
    errors = [line for line in lines if "ERR:" in line]
    if errors:
        raise ProtocolParseError(f"the device could not sample: {errors[0]}")
    names = [line.split(":", 1)[1].strip() for line in lines if "File name:" in line]
    if not names:
        raise ProtocolParseError("AT+SAMPLESTART reply has no 'File name:' line")
    used = next((USED_BUFFER_RE.search(line) for line in lines
                 if "Not uploading file" in line and USED_BUFFER_RE.search(line)), None)
    if used is None:
        raise ProtocolParseError("AT+SAMPLESTART reply has no 'Used buffer, from=..., to=...' line "
                                 "(a device that uploads over its own network is not supported)")
    return SampleReply(names[0], int(used.group(1)), int(used.group(2)))


def decode_read_buffer(text: str | bytes) -> bytes:
    """The bytes of an AT+READBUFFER reply: whitespace and lines that are exactly OK dropped,
    the rest base64 (as the daemon reads it)."""
    lines = [line.strip() for line in text_lines(text)]
    body = "".join(line for line in lines if line and line not in ("OK", "OKOK"))
    try:
        return base64.b64decode(body, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ProtocolParseError(f"AT+READBUFFER reply is not base64 ({exc}): {body[:60]!r}") from None
