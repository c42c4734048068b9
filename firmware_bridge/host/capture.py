"""`tinyml capture`: record labelled samples from any Edge Impulse firmware over serial.

The host does what Edge Impulse's daemon does for a device without a network of its own
(edge-impulse-cli, shared/daemon/ei-serial-protocol.ts, ``startSampling``): set the sample
settings, ``AT+SAMPLESTART=<sensor>``, then ``AT+READBUFFER`` for the signed CBOR file the
device recorded. Each sample is checked (the pipeline's own acquisition loader, the HMAC
signature when a key is set, its rate and its length against the settings) and written
into an Edge Impulse export, ``DIR/info.labels`` + ``DIR/training/`` (or ``testing/``), that
``tinyml train --dataset DIR`` reads and Edge Impulse's uploader accepts. Every sample is
written, and ``info.labels`` updated, as it arrives: an interrupted capture, or a device
that stops answering, keeps every sample captured before.
"""

from __future__ import annotations

import json
import math
import re
import secrets
import string
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from firmware_bridge.host import sampling
from pipeline.core.errors import BridgeError, PipelineError

# Labels go into an AT command (no comma), a file name (no path separator, no leading dot)
# and Edge Impulse's file naming <label>.<id>.json (no dot).
LABEL_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9 _+-]*")
KEY_RE = re.compile(r"[!-+\--~]*")  # printable ASCII, no comma, no space
CATEGORIES = ("training", "testing")
DEFAULT_LENGTH_MS = 2000
DEFAULT_COUNTDOWN_S = 3
# A sample may take this long past the reply timeout before the device counts as silent:
# the 2 s "Starting in 2000 ms" of Edge Impulse firmwares, then the sample's own length
# twice over (flash erase and writes on a busy board; Edge Impulse's daemon allows 10x).
SAMPLE_START_DELAY_S = 2.0
SAMPLE_LENGTH_FACTOR = 2.0


@dataclass
class CaptureResult:
    out_dir: Path
    files: list[Path] = field(default_factory=list)
    bytes_read: int = 0
    seconds: float = 0.0
    read_seconds: float = 0.0  # spent in AT+READBUFFER alone

    @property
    def samples_per_minute(self) -> float:
        return 60.0 * len(self.files) / self.seconds if self.seconds else 0.0

    @property
    def bytes_per_second(self) -> float:
        """Read-back rate: sample bytes per second of AT+READBUFFER (base64 on the wire)."""
        return self.bytes_read / self.read_seconds if self.read_seconds else 0.0


def _load_info(path: Path) -> dict:
    if not path.exists():
        return {"version": 1, "files": []}
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise BridgeError(f"{path}: not a readable info.labels ({exc})") from None
    if not isinstance(info, dict) or not isinstance(info.get("files"), list):
        raise BridgeError(f"{path}: expected an object with a \"files\" list (an Edge Impulse info.labels)")
    return info


def _sample_id(taken: set[str]) -> str:
    """Eight lower-case letters and digits, as Edge Impulse names its samples."""
    alphabet = string.ascii_lowercase + string.digits
    while True:
        sid = "".join(secrets.choice(alphabet) for _ in range(8))
        if sid not in taken:
            return sid


def check_sample(data: bytes, where: str, *, interval_ms: float, readings: int, hmac_key: str) -> dict:
    """The decoded acquisition file, or a BridgeError saying what does not match."""
    # lazy: the dataset readers load numpy and pandas; cbor2 only when a sample is checked
    import cbor2

    from pipeline.data.edge_impulse import parse_acquisition

    try:
        acquisition = parse_acquisition(data, where)
        doc = cbor2.loads(data) if data[:1] != b"{" else json.loads(data)
    except PipelineError as exc:
        raise BridgeError(f"{exc.message} (the device's sample is not an acquisition file)") from None
    except Exception as exc:  # noqa: BLE001 - cbor2 raises several types for garbage
        raise BridgeError(f"{where}: not an acquisition file ({type(exc).__name__}: {exc})") from None
    if hmac_key:
        alg = (doc.get("protected") or {}).get("alg")
        if alg != "HS256":
            raise BridgeError(f"{where}: not signed (alg {alg!r}) although an HMAC key is set",
                              hint="the firmware did not take the key: check AT+SAMPLESETTINGS?")
        if doc.get("signature") != sampling.acquisition_hmac(data, hmac_key):
            raise BridgeError(f"{where}: the HMAC-SHA256 signature does not match the key",
                              hint="the sample was altered on the way, or signed under another key")
    if abs(acquisition.interval_ms - interval_ms) > sampling.INTERVAL_TOLERANCE_MS:
        raise BridgeError(f"{where}: rate {1000.0 / acquisition.interval_ms:.2f} Hz "
                          f"(interval_ms {acquisition.interval_ms:g}), the settings ask for "
                          f"{1000.0 / interval_ms:.2f} Hz ({interval_ms:g} ms)")
    got = acquisition.values.shape[0]
    if got != readings:
        raise BridgeError(f"{where}: length {got} readings ({got * interval_ms:.0f} ms), the settings "
                          f"ask for {readings} ({readings * interval_ms:.0f} ms)")
    return doc


def _as_json(doc: dict, hmac_key: str) -> bytes:
    """The sample as a JSON acquisition file, signed again over its JSON bytes (Edge
    Impulse's ingestion checks an HS256 signature over the body it receives)."""
    doc = dict(doc, protected=dict(doc["protected"], alg="HS256" if hmac_key else "none"),
               signature=sampling.SIGNATURE_ZEROS)
    data = json.dumps(doc, indent=None, separators=(",", ":")).encode("utf-8")
    if hmac_key:
        data = data.replace(sampling.SIGNATURE_ZEROS.encode(), sampling.acquisition_hmac(data, hmac_key).encode(), 1)
    return data


def _countdown(seconds: int, what: str, out) -> None:
    if seconds <= 0:
        return
    for k in range(seconds, 0, -1):
        print(f"{what} in {k}...", file=out, flush=True)
        time.sleep(1.0)


def _check_arguments(label: str, count: int, length_ms: int, hmac_key: str, category: str) -> None:
    """BridgeError naming the first option the device would refuse or a file could not hold."""
    if not LABEL_RE.fullmatch(label) or len(label) > sampling.SETTING_CHARS:
        raise BridgeError(f"--label {label!r}: expected letters, digits, spaces, '_', '+' or '-' "
                          f"(starting with a letter or digit, at most {sampling.SETTING_CHARS})")
    if count < 1:
        raise BridgeError(f"--count: expected at least 1, got {count}")
    if not 0 < length_ms <= sampling.MAX_SAMPLE_LENGTH_MS:
        raise BridgeError(f"--length-ms: expected a positive number of ms, got {length_ms}")
    if not KEY_RE.fullmatch(hmac_key) or len(hmac_key) > sampling.SETTING_CHARS:
        raise BridgeError("--hmac-key: expected printable characters without commas or spaces")
    if category not in CATEGORIES:
        raise BridgeError(f"--category: expected one of {', '.join(CATEGORIES)}, got {category!r}")


def _choose_sensor(device, port: str, sensor: str | None, length_ms: int):
    """The device's sensor named ``sensor`` (default: its first) that can record ``length_ms``."""
    sensors = device.config.sensors
    if not sensors:
        raise BridgeError(f"{port}: the device lists no sensor in AT+CONFIG?",
                          hint="a firmware that samples lists its sensors under ===== Sensors ======")
    chosen = next((s for s in sensors if s.name == sensor), None) if sensor else sensors[0]
    if chosen is None:
        raise BridgeError(f"--sensor {sensor!r}: not a sensor of the device on {port}",
                          hint="its sensors: " + ", ".join(repr(s.name) for s in sensors))
    if not chosen.frequencies_hz or not chosen.frequencies_hz[0] > 0:
        raise BridgeError(f"{port}: sensor {chosen.name!r} lists no sampling frequency")
    if chosen.max_sample_length_s and length_ms > chosen.max_sample_length_s * 1000:
        raise BridgeError(f"--length-ms {length_ms}: sensor {chosen.name!r} records at most "
                          f"{chosen.max_sample_length_s:g} s")
    return chosen


def capture(port: str, label: str, count: int, out_dir: str | Path, *, length_ms: int = DEFAULT_LENGTH_MS,
            sensor: str | None = None, cbor: bool = False, hmac_key: str = "",
            category: str = "training", countdown_s: int = DEFAULT_COUNTDOWN_S, baud: int = 115200,
            timeout: float = 5.0, out=None) -> CaptureResult:
    """Record ``count`` samples of ``label`` from the device on ``port`` into ``out_dir``."""
    # Imported here, not at the top: `tinyml capture --help` and the CLI start without them.
    from firmware_bridge.host.client import Device
    from pipeline.core.artifacts import write_bytes, write_json
    from pipeline.core.progress import progress

    out = out or sys.stdout
    _check_arguments(label, count, length_ms, hmac_key, category)
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise BridgeError(f"{out_dir}: exists and is not a folder")
    info_path = out_dir / "info.labels"
    info = _load_info(info_path)
    taken = {str(e.get("name", "")).split(".")[-1] for e in info["files"] if isinstance(e, dict)}
    result = CaptureResult(out_dir)

    with Device(port, baud=baud, timeout=timeout) as device:
        chosen = _choose_sensor(device, port, sensor, length_ms)
        interval_ms = 1000.0 / chosen.frequencies_hz[0]
        device.set_sample_settings(label, interval_ms, length_ms, hmac_key)
        settings = device.sample_settings()
        if settings.label != label or settings.length_ms != length_ms or settings.hmac_key != hmac_key:
            raise BridgeError(f"{port}: the device kept other sample settings than it was sent: {settings}")
        readings = math.floor(length_ms / interval_ms)  # as the firmwares count them (ei_sampler.cpp)
        print(f"capture: {count} x {length_ms} ms of {label!r} from {chosen.name!r} at "
              f"{chosen.frequencies_hz[0]:g} Hz on {port} into {out_dir}", file=out, flush=True)
        sample_timeout = timeout + SAMPLE_START_DELAY_S + SAMPLE_LENGTH_FACTOR * length_ms / 1000.0
        start = time.monotonic()
        try:
            for k in progress(range(count), "capture", total=count, unit="sample"):
                _countdown(countdown_s, f"recording {label!r} {k + 1}/{count}", out)
                reply = device.sample_start(chosen.name, timeout=sample_timeout)
                t0 = time.monotonic()
                data = device.read_buffer(reply.start, reply.end, timeout=sample_timeout)
                result.read_seconds += time.monotonic() - t0
                result.bytes_read += len(data)
                where = f"sample {k + 1} of {count} ({port})"
                if len(data) != reply.end - reply.start:
                    raise BridgeError(f"{where}: {len(data)} bytes read back, the device announced "
                                      f"{reply.end - reply.start}")
                doc = check_sample(data, where, interval_ms=settings.interval_ms, readings=readings,
                                   hmac_key=hmac_key)
                sid = _sample_id(taken)
                taken.add(sid)
                name = f"{label}.{sid}"
                rel = f"{category}/{name}.{'cbor' if cbor else 'json'}"
                write_bytes(out_dir / rel, data if cbor else _as_json(doc, hmac_key))
                info["files"].append({"path": rel, "name": name, "category": category,
                                      "label": {"type": "label", "label": label}})
                write_json(info_path, info)  # after the file: info.labels never lists a missing one
                result.files.append(out_dir / rel)
        except KeyboardInterrupt:
            result.seconds = time.monotonic() - start
            print(f"capture: interrupted; kept {len(result.files)} sample(s) in {out_dir}", file=out, flush=True)
            raise
        except BridgeError as exc:
            raise BridgeError(f"{exc.message}; kept {len(result.files)} sample(s) captured before in {out_dir}",
                              hint=exc.hint) from None
        result.seconds = time.monotonic() - start
    print(f"capture: {len(result.files)} sample(s) in {result.seconds:.1f} s "
          f"({result.samples_per_minute:.1f} samples/min, {result.bytes_read} bytes read back "
          f"at {result.bytes_per_second:.0f} bytes/s); {info_path} lists {len(info['files'])}", file=out, flush=True)
    return result

