"""One command table, the same bytes: the virtual device (Python, over a real pty) and the
C++ core of the firmware (compiled with g++ and sanitizers, over pipes) get the same command
script and must answer with the same bytes, command by command.

Both devices boot the same model (its labels, input shape and rate), the same device ID
and type, and the same sensor readings (the harness's ramp; the virtual device plays the
same ramp from an .npz). What differs by nature is masked, and only that: inference timing
and the probabilities (the harness stands in for TFLM with a round trip of the input, the
virtual device runs TFLM), and AT+MODELINFO? (host facts against board facts), which is not
compared. The sample files AT+READBUFFER returns must be identical, bit for bit, and carry
a valid HMAC-SHA256 signature (checked with Python's hmac, so the C++ SHA-256 is too).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import shutil
import threading
import time

import numpy as np
import pytest
import serial
from test_sketch import Harness, build_harness

from firmware_bridge.host import protocol, sampling
from firmware_bridge.targets.virtual_device import VirtualDevice
from pipeline.tflite.export import ModelSettings, model_data_cc, model_data_h, model_settings_h

RATE = 62.5
DEVICE_ID = "C0:FF:EE:00:00:01"
SENSOR = "Playback of ramp.npz"
CLOCK_SCALE = 20  # device waits pass 20 times faster on both devices
KEY = "0123456789abcdef0123456789abcdef"


def ramp(n: int) -> np.ndarray:
    """The harness's RampSensor: reading i is (0.5 i, -0.25 i, 9.80665) m/s^2, as float32."""
    i = np.arange(n, dtype=np.float32)
    return np.stack([np.float32(0.5) * i, np.float32(-0.25) * i,
                     np.full(n, np.float32(9.80665))], axis=1).astype(np.float32)


@pytest.fixture(scope="module")
def devices(tiny_int8, tmp_path_factory):
    if shutil.which("g++") is None:
        pytest.skip("g++ is not installed: the C++ core cannot be compiled here")
    _, data, labels = tiny_int8
    folder = tmp_path_factory.mktemp("parity")
    sensor = folder / "ramp.npz"
    np.savez(sensor, X=ramp(8000)[None], rate_hz=RATE)
    py = VirtualDevice.from_model(data, list(labels), macs=1152, sensor=sensor,
                                  time_scale=1.0 / CLOCK_SCALE).start()
    run = folder / "run"
    firmware = run / "firmware"
    firmware.mkdir(parents=True)
    ops = ["Conv2D"]
    settings = ModelSettings(labels=list(labels), input_shape=[1, 32, 3], input_scale=0.05,
                             input_zero_point=0, output_scale=1 / 256, output_zero_point=-128,
                             arena_bytes=4096, macs=1152, ops=ops,
                             sha256=hashlib.sha256(data).hexdigest(), board="nano33ble",
                             sample_rate_hz=RATE)
    (firmware / "model_settings.h").write_text(model_settings_h(settings))
    (firmware / "model_data.h").write_text(model_data_h())
    (firmware / "model_data.cc").write_text(model_data_cc(data))
    exe = build_harness(run, folder, ops)
    env = {"TINYML_DEVICE_TYPE": py.firmware.device_type, "TINYML_SENSOR_NAME": SENSOR}
    fast = Harness(exe, dict(env, TINYML_CLOCK_SCALE=str(CLOCK_SCALE)))
    # The static transfer's 100 ms chunk timeout is device time: keep it real there.
    real = Harness(exe, env)
    ser = serial.Serial(py.port, 115200, timeout=0.05)
    yield PySide(ser), fast, real
    ser.close()
    py.stop()
    fast.close()
    real.close()


class PySide:
    """The virtual device with the harness's interface: send bytes, read up to a marker."""

    def __init__(self, ser: serial.Serial):
        self.ser, self.buf = ser, b""
        ser.write(b"\r")
        self.read_until(b"\n> ")

    def send(self, data: bytes) -> None:
        self.ser.write(data)

    def read_until(self, marker: bytes, timeout: float = 20.0) -> bytes:
        deadline = time.monotonic() + timeout
        while marker not in self.buf:
            assert time.monotonic() < deadline, f"no {marker!r}; got {self.buf[-300:]!r}"
            self.buf += self.ser.read(max(1, self.ser.in_waiting))
        end = self.buf.index(marker) + len(marker)
        data, self.buf = self.buf[:end], self.buf[end:]
        return data

    def command(self, line: str) -> bytes:
        self.send(line.encode() + b"\r")
        return self.read_until(b"\n> ")


def mask(text: bytes) -> bytes:
    """Inference timing and probabilities: what differs between TFLM and the stand-in."""
    text = re.sub(rb"inference \d+(\.\d{3})? (ms|us)", b"inference <t>", text)
    return re.sub(rb"(?m)^(  [^:\r\n]+: )-?\d+\.\d{6}(\r?)$", rb"\1<p>\2", text)


def both(devices, line: str) -> bytes:
    """Send ``line`` to both devices; assert the same bytes; return them."""
    py, cpp = devices[0], devices[1]
    a, b = py.command(line), cpp.command(line)
    assert a == b, f"{line}: the virtual device and the C++ core differ\n  py:  {a!r}\n  c++: {b!r}"
    return a


SETTINGS_SCRIPT = [
    f"AT+DEVICEID={DEVICE_ID}", "AT+DEVICEID?", "AT+HELP", "AT+CONFIG?", "AT+DEVICEINFO?",
    "AT+SAMPLESETTINGS?", "AT+SAMPLESETTINGS=wave,16,480", "AT+SAMPLESETTINGS?",
    f"AT+SAMPLESETTINGS=wave,16.000,480,{KEY}", "AT+SAMPLESETTINGS?",
    "AT+SAMPLESETTINGS=x,abc,1", "AT+SAMPLESETTINGS=x,16,0x10", "AT+SAMPLESETTINGS=x,inf,10",
    "AT+SAMPLESETTINGS=a,b", "AT+SAMPLESETTINGS=" + "L" * 200 + ",16,480", "AT+SAMPLESETTINGS?",
    f"AT+SAMPLESETTINGS=wave,16,480,{KEY}",
    "AT+UPLOADSETTINGS?", "AT+UPLOADSETTINGS=ei_0123456789,/api/training/data", "AT+UPLOADSETTINGS=one",
    "AT+UPLOADSETTINGS?", "AT+UPLOADHOST=ingestion.edgeimpulse.com", "AT+UPLOADHOST?",
    "AT+MGMTSETTINGS=wss://remote-mgmt.edgeimpulse.com", "AT+MGMTSETTINGS?", "AT+CONFIG?",
    "AT+SAMPLESTART", "AT+SAMPLESTART=nope", "AT+SAMPLESTART=", "AT+READBUFFER=0,10",
    "AT+SAMPLESETTINGS=wave,10,480", f"AT+SAMPLESTART={SENSOR}",
    "AT+SAMPLESETTINGS=wave,16,99999", f"AT+SAMPLESTART={SENSOR}",
    "AT+NOPE", "AT+CONFIG", "AT+CONFIG=1", "AT", "hello", "A" * 300, "AT+" + "X" * 253,
]


def test_settings_errors_and_help_are_the_same_bytes(devices):
    for line in SETTINGS_SCRIPT:
        both(devices, line)
    # The line discipline: backspace, control bytes, an over-long line.
    for raw in (b"AT+DEVX\x08ICEID?\r", b"\x08\x7fA\x01T\r", b"Z" * 1000 + b"\r"):
        py, cpp = devices[0], devices[1]
        py.send(raw)
        cpp.send(raw)
        assert py.read_until(b"\n> ") == cpp.read_until(b"\n> ")


def test_a_sample_is_the_same_signed_file_on_both(devices):
    both(devices, f"AT+SAMPLESETTINGS=wave,16,480,{KEY}")
    reply = both(devices, f"AT+SAMPLESTART={SENSOR}")
    sample = sampling.parse_sample_reply(reply)
    assert sample.file_name == "/fs/wave" and sample.start == 0
    data = sampling.decode_read_buffer(both(devices, f"AT+READBUFFER=0,{sample.end}").split(b"\r\n", 1)[1][:-2])
    assert len(data) == sample.end
    assert data == sampling.decode_read_buffer(
        both(devices, f"AT+READBUFFER=0,{sample.end},y").split(b"\r\n", 1)[1][:-2])
    assert both(devices, "AT+READBUFFER=5,10") == (
        b"AT+READBUFFER=5,10\r\n" + base64.b64encode(data[5:15]) + b"\n> ")
    for line in (f"AT+READBUFFER={sample.end + 1},1", "AT+READBUFFER=1", "AT+READBUFFER=-1,5"):
        both(devices, line)

    import cbor2

    doc = cbor2.loads(data)
    assert doc["protected"] == {"ver": "v1", "alg": "HS256"}
    payload = doc["payload"]
    assert payload["device_name"] == DEVICE_ID and payload["interval_ms"] == 16.0
    assert [s["name"] for s in payload["sensors"]] == ["accX", "accY", "accZ"]
    assert np.array_equal(np.asarray(payload["values"], dtype=np.float32), ramp(30))  # 480 ms / 16 ms
    zeroed = data.replace(doc["signature"].encode(), b"0" * 64)
    assert doc["signature"] == hmac.new(KEY.encode(), zeroed, hashlib.sha256).hexdigest()
    # Without a key: alg none, the zeros stay.
    both(devices, "AT+SAMPLESETTINGS=idle,16,160,")
    reply = both(devices, f"AT+SAMPLESTART={SENSOR}")
    end = sampling.parse_sample_reply(reply).end
    doc = cbor2.loads(sampling.decode_read_buffer(both(devices, f"AT+READBUFFER=0,{end}").split(b"\r\n", 1)[1][:-2]))
    assert doc["protected"]["alg"] == "none" and doc["signature"] == "0" * 64
    assert np.array_equal(np.asarray(doc["payload"]["values"], dtype=np.float32), ramp(40)[30:])


def stream(device, line: str, results: int) -> tuple[bytes, bytes]:
    """Run a streaming command until ``results`` results are out, then 'b': (head, tail)."""
    device.send(line.encode() + b"\r")
    head = b"".join(device.read_until(b"  updown: ") + device.read_until(b"\n") for _ in range(results))
    device.send(b"b")
    tail = device.read_until(b"Inferencing stopped by user\r\n> ")
    return head, b"Inferencing stopped by user\r\n> " if tail.endswith(b"stopped by user\r\n> ") else tail


@pytest.mark.parametrize("line, results", [("AT+RUNIMPULSEDEBUG=n", 1), ("AT+RUNIMPULSE", 2),
                                           ("AT+RUNIMPULSECONT", 3)])
def test_inference_streams_the_same_bytes(devices, line, results):
    py, cpp = devices[0], devices[1]
    a = stream(py, line, results)
    b = stream(cpp, line, results)
    assert mask(a[0]) == mask(b[0]), f"{line}\n  py:  {a[0]!r}\n  c++: {b[0]!r}"
    assert a[1] == b[1]
    # 'b' is read alone: a CR after it runs an empty line on both.
    assert both(devices, "") == b"\r\nNot a valid AT command ()\n> "
    if line == "AT+RUNIMPULSECONT":  # no pause and no "Sampling..." between results
        body = a[0].split(b"press 'b' to break\n", 1)[1]
        assert b"Sampling" not in body and b"2 seconds" not in body
        assert body.count(b"#Classification predictions:\n") == results


def test_static_inference_is_the_same_bytes(devices):
    py, real = devices[0], devices[2]
    real.command(f"AT+DEVICEID={DEVICE_ID}")
    for n in (96, 10):
        values = np.linspace(-3, 3, n, dtype=np.float32)
        outs = []
        for dev in (py, real):
            dev.send(f"AT+RUNIMPULSESTATIC=n,{n}\r".encode())
            out = dev.read_until(b"OK CHUNK=32\r\n")
            for chunk in protocol.encode_chunks(values.tobytes(), 32):
                dev.send(chunk.encode())
                out += dev.read_until(b" \r\n")
            outs.append(mask(out + dev.read_until(b"\n> ")))
        assert outs[0] == outs[1]
    for line in ("AT+RUNIMPULSESTATIC=n", "AT+RUNIMPULSESTATIC=n,abc"):
        outs = []
        for dev in (py, real):
            dev.send(line.encode() + b"\r")
            time.sleep(0.2)
            dev.send(b"AT\r")
            outs.append(dev.read_until(b"\n> "))
        assert outs[0] == outs[1]


def test_clearconfig_restores_the_defaults_on_both(devices):
    py, cpp = devices[0], devices[1]
    assert both(devices, "AT+CLEARCONFIG") == b"AT+CLEARCONFIG\r\nClearing config...\nOK\r\n> "
    # The default IDs differ by nature (a board's own, a hash of the model): set it again.
    assert py.command("AT+UPLOADSETTINGS?") == cpp.command("AT+UPLOADSETTINGS?") == (
        b"AT+UPLOADSETTINGS?\r\nApi Key:   \nHost:      \nPath:      \n> ")
    both(devices, f"AT+DEVICEID={DEVICE_ID}")
    config = both(devices, "AT+CONFIG?")
    assert b"Label:     test\nInterval:  16.00 ms.\nLength:    10000 ms.\nHMAC key:  \n" in config


def test_a_megabyte_line_and_garbage_leave_both_answering(devices):
    """Issue 13: a bounded, linear line discipline (1 MB without a CR, then garbage)."""
    py, cpp = devices[0], devices[1]
    junk = bytes(range(256)) * 64  # every byte value, CR included
    for dev in (py, cpp):
        done = threading.Event()

        def feed(dev=dev, done=done):
            dev.send(b"A" * (1 << 20) + b"\r")
            done.set()

        threading.Thread(target=feed, daemon=True).start()
        out = dev.read_until(protocol.LINE_TOO_LONG.encode() + b"> ", timeout=120)
        assert out == b"A" * protocol.MAX_LINE_LENGTH + b"\r\n" + protocol.LINE_TOO_LONG.encode() + b"> "
        assert done.wait(60)
        dev.send(junk + b"\r")
        dev.send(b"AT+DEVICEID?\r")
        assert dev.read_until(b"AT+DEVICEID?\r\n", timeout=60)
        assert dev.read_until(b"\n> ") == DEVICE_ID.encode() + b"\n> "
