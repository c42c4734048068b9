"""The device's AT protocol, byte for byte: the host board (the firmware's C++ core and a tiny
real int8 model compiled to C, built with g++) over a real pseudo-terminal opened with pyserial.

Expected bytes are written out from shared/PROTOCOL.md here, not produced by the firmware or
the host's renderers, so these tests check the device against the spec; probabilities against
TFLM's own Python interpreter.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import serial
from boards import MACS, inference_us, save_recordings, tiny_board, tiny_run
from conftest import sigint_default

from firmware_bridge.host.client import Device
from firmware_bridge.host.protocol import encode_chunks

ROOT = Path(__file__).resolve().parent.parent
FAST = 100  # the board's clock this many times faster: RUNIMPULSE's 2 s pauses pass in 20 ms
SPEC_SENSOR_RE = re.compile(
    r"^Name\:\s?([^,]+),\s?Max sample length\:\s?([^,]+)s\s?,\s?Frequencies\:\s?\[(.*)\]\s?$"
)
CONFIG_SECTIONS = ["===== Device info =====", "===== Sensors ======", "===== Snapshot ======",
                   "===== Inference ======", "===== WIFI =====", "===== Sampling parameters =====",
                   "===== Upload settings =====", "===== Remote management ====="]


def read_until(ser: serial.Serial, terminator: bytes, timeout: float = 3.0) -> bytes:
    """Bytes up to and including ``terminator``; fails (never hangs) after ``timeout``."""
    deadline = time.monotonic() + timeout
    buf = b""
    while not buf.endswith(terminator):  # byte by byte: what follows stays unread
        assert time.monotonic() < deadline, f"no {terminator!r} within {timeout} s; got {buf!r}"
        buf += ser.read(1)
    return buf


def read_quiet(ser: serial.Serial, quiet: float = 0.3) -> bytes:
    """Everything until the line has been silent for ``quiet`` seconds."""
    buf = b""
    last = time.monotonic()
    while time.monotonic() - last < quiet:
        data = ser.read(max(1, ser.in_waiting))
        if data:
            buf, last = buf + data, time.monotonic()
    return buf


def exchange(ser: serial.Serial, data: bytes, until: bytes = b"\n> ") -> bytes:
    ser.write(data)
    return read_until(ser, until)


@pytest.fixture(scope="module")
def labels(tiny_int8):
    return list(tiny_int8[2])


@pytest.fixture(scope="module")
def sensor_file(tmp_path_factory):
    rng = np.random.default_rng(3)
    return save_recordings(tmp_path_factory.mktemp("sensor") / "wave.npz", rng.normal(0, 2, size=(3, 64, 3)))


@pytest.fixture(scope="module")
def run(tmp_path_factory, tiny_int8):
    return tiny_run(tmp_path_factory, tiny_int8)


@pytest.fixture(scope="module")
def device(run, sensor_file):
    """The board on its own clock (AT+RUNIMPULSESTATIC's 100 ms per chunk is board time)."""
    with tiny_board(run, sensor=sensor_file) as board:
        yield board


@pytest.fixture(scope="module")
def fast_device(run, sensor_file):
    """The board with a clock FAST times faster, for AT+RUNIMPULSE's waits."""
    with tiny_board(run, sensor=sensor_file, time_scale=FAST) as board:
        yield board


def _open(port: str) -> serial.Serial:
    s = serial.Serial(port, 115200, timeout=0.05)
    s.write(b"\r")  # end whatever line an earlier test left, then start from silence
    read_quiet(s, 0.15)
    return s


@pytest.fixture
def fast_ser(fast_device):
    s = _open(fast_device.port)
    yield s
    s.close()


@pytest.fixture
def ser(device):
    s = serial.Serial(device.port, 115200, timeout=0.05)
    s.write(b"\r")  # end whatever line an earlier test left, then start from silence
    read_quiet(s, 0.15)
    yield s
    s.close()


@pytest.fixture(scope="module")
def host_tflm(tiny_int8):
    from tflite_micro.python.tflite_micro import runtime

    # 64 KB is far above this model's needs: safe to construct in-process.
    return runtime.Interpreter.from_bytes(tiny_int8[1], arena_size=64 * 1024)


def host_classify(interpreter, window: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Quantize as firmware does (C roundf, clip), invoke, dequantize: (int8 out, probabilities)."""
    inp = interpreter.get_input_details(0)
    out = interpreter.get_output_details(0)
    scale = np.float32(inp["quantization_parameters"]["scales"][0])
    zp = int(inp["quantization_parameters"]["zero_points"][0])
    v = window.astype(np.float32) / scale
    q = np.clip(np.where(v >= 0, np.floor(v + np.float32(0.5)), np.ceil(v - np.float32(0.5))) + zp, -128, 127)
    interpreter.set_input(q.astype(np.int8).reshape(inp["shape"]), 0)
    interpreter.invoke()
    raw = np.array(interpreter.get_output(0)).reshape(-1)
    oscale = float(out["quantization_parameters"]["scales"][0])
    ozp = int(out["quantization_parameters"]["zero_points"][0])
    return raw, (raw.astype(np.float64) - ozp) * oscale


# -- line discipline -----------------------------------------------------------------------


def test_echo_then_output_then_prompt(ser):
    assert exchange(ser, b"AT\r") == b"AT\r\nNot a valid AT command (AT)\n> "


def test_line_feed_is_ignored(ser):
    assert exchange(ser, b"A\nT\r") == b"AT\r\nNot a valid AT command (AT)\n> "
    # A host that sends CRLF runs its line once, not twice.
    reply = exchange(ser, b"AT+DEVICEINFO?\r\n") + read_quiet(ser)
    assert reply.count(b"> ") == 1


def test_backspace_redraws_the_line(ser):
    assert exchange(ser, b"ATX\x08Y\r") == (
        b"ATX\r\x1b[K> AT\x1b[5GY\r\nNot a valid AT command (ATY)\n> ")
    # On an empty line there is nothing to remove, and nothing is redrawn (Edge Impulse's server).
    assert exchange(ser, b"AB\x7f\x7f\x7fC\r") == (
        b"AB\r\x1b[K> A\x1b[4G\r\x1b[K> \x1b[3GC\r\nNot a valid AT command (C)\n> ")


def test_parse_errors_are_exact(ser):
    assert exchange(ser, b"AT+NOPE\r") == b"AT+NOPE\r\nCommand not found! (AT+NOPE)\n> "
    assert exchange(ser, b"AT+NOPE=1\r") == b"AT+NOPE=1\r\nCommand not found! (AT+NOPE)\n> "
    assert exchange(ser, b"AT+CONFIG\r") == b"AT+CONFIG\r\nNo handler for command! (AT+CONFIG)\n> "
    assert exchange(ser, b"AT+CONFIG=1\r") == b"AT+CONFIG=1\r\nNo handler for command! (AT+CONFIG=1)\n> "
    assert exchange(ser, b"\r") == b"\r\nNot a valid AT command ()\n> "


# -- AT+HELP, AT+CONFIG?, settings -------------------------------------------------------------


def test_help_is_exact(ser):
    reply = exchange(ser, b"AT+HELP\r")
    assert reply.startswith(b"AT+HELP\r\n"
                            b"AT Server\n"
                            b"Command set version: 1.8.0\n"
                            b"Arguments in square brackets are optional, eg.:\n"
                            b"AT+CMD=arg1,[arg2]\n"
                            b"\n"
                            b"AT+HELP\n\tLists all commands\n\n")
    assert b"AT+CONFIG?\n\tLists complete config\n\n" in reply
    assert b"AT+SAMPLESETTINGS?\nAT+SAMPLESETTINGS=LABEL,INTERVAL_MS,LENGTH_MS,[HMAC_KEY]\n\t" in reply
    assert b"AT+RUNIMPULSECONT\n\tRun the impulse continuously\n\n" in reply
    assert b"AT+RUNIMPULSEDEBUG=USEMAXRATE\n\t" in reply and b"AT+SAMPLESTART=SENSOR_NAME\n\t" in reply
    assert b"AT+RUNIMPULSE\n\t" in reply and b"AT+RUNIMPULSESTATIC=DEBUG,N\n\t" in reply
    assert b"AT+MODELINFO?\n\t" in reply
    assert reply.endswith(b"\n\n> ")
    # Every entry: form lines, then one tab-indented help line, then a blank line.
    body = reply.decode().split("AT+CMD=arg1,[arg2]\n\n", 1)[1][:-2]
    for entry in body.split("\n\n")[:-1]:
        *forms, help_line = entry.split("\n")
        assert forms and all(re.fullmatch(r"AT\+[A-Z]+(\?|=.+)?", f) for f in forms), entry
        assert help_line.startswith("\t") and len(help_line) > 1


def test_config_has_every_section_in_order_and_valid_fields(ser, device):
    reply = exchange(ser, b"AT+CONFIG?\r").decode()
    lines = reply.split("\n")
    assert [line for line in lines if line.startswith("=====")] == CONFIG_SECTIONS
    section = None
    fields: dict[str, dict[str, str]] = {}
    for line in lines[1:-1]:
        if line.startswith("====="):
            section = line
            fields[section] = {}
        elif section == "===== Sensors ======" and line:
            assert SPEC_SENSOR_RE.match(line), line
            assert "62.50Hz" in line
        elif line:
            key, value = line.split(":", 1)
            fields[section][key.strip().lower()] = value.strip()
    info = fields["===== Device info ====="]
    assert re.fullmatch(r"([0-9A-F]{2}:){5}[0-9A-F]{2}", info["id"])
    assert info["at version"] == "1.8.0" and info["data transfer baudrate"] == "115200"
    assert info["type"] == "TINYML_HOST_BOARD"
    # No camera: no Color depth or Resolutions lines (an empty one makes the CLI warn).
    assert set(fields["===== Snapshot ======"]) == {"has snapshot", "supports stream"}
    assert fields["===== Inference ======"]["model type"] == "classification"
    # Only the keys Edge Impulse's CLI knows: it warns on any other.
    assert set(fields["===== Inference ======"]) == {"sensor", "model type"}
    assert re.fullmatch(r"\d+\.\d{2} ms\.", fields["===== Sampling parameters ====="]["interval"])
    assert re.fullmatch(r"\d+ ms\.", fields["===== Sampling parameters ====="]["length"])


def test_sample_settings_write_prints_ok(ser):
    assert exchange(ser, b"AT+SAMPLESETTINGS=wave,20,5000\r") == b"AT+SAMPLESETTINGS=wave,20,5000\r\nOK\n> "
    reply = exchange(ser, b"AT+SAMPLESETTINGS?\r")
    assert b"Label:     wave\nInterval:  20.00 ms.\nLength:    5000 ms.\n" in reply


def test_modelinfo(ser, device, tiny_int8, labels, host_tflm):
    reply = exchange(ser, b"AT+MODELINFO?\r").decode()
    fields = dict(line.split(":", 1) for line in reply.split("\n")[1:-1])
    fields = {k.strip(): v.strip() for k, v in fields.items()}
    assert fields["SHA-256"] == hashlib.sha256(tiny_int8[1]).hexdigest()
    assert json.loads(fields["Input shape"]) == [1, 32, 3]
    q = host_tflm.get_input_details(0)["quantization_parameters"]
    assert np.float32(fields["Input scale"]) == np.float32(q["scales"][0])  # 9 digits: the float32 exactly
    assert int(fields["Input zero point"]) == int(q["zero_points"][0])
    assert json.loads(fields["Labels"]) == labels
    assert fields["Arena size"] == "4096 bytes (kTensorArenaSize)"
    assert fields["MACs"] == str(MACS) and fields["Board"] == "nano33ble"


# -- AT+RUNIMPULSESTATIC ---------------------------------------------------------------------------


def static_exchange(ser, values: np.ndarray, n: int | None = None, chunk: int = 32) -> bytes:
    """A host that sends each chunk after the device's reply to the one before."""
    n = values.size if n is None else n
    out = exchange(ser, f"AT+RUNIMPULSESTATIC=n,{n}\r".encode(), until=b"OK CHUNK=32\r\n")
    for piece in encode_chunks(values.astype("<f4").tobytes(), chunk):
        ser.write(piece.encode())
        out += read_until(ser, b" \r\n")
    return out + read_until(ser, b"END OUTPUT\r\n> ")


def test_static_transcript_byte_for_byte(ser, labels, host_tflm, run):
    window = np.random.default_rng(7).normal(0, 2, size=(32, 3)).astype(np.float32)
    _, probabilities = host_classify(host_tflm, window)
    expected = (b"AT+RUNIMPULSESTATIC=n,96\r\nOK CHUNK=32\r\n"
                + b"".join(f"OK {6 * (k + 1)} \r\n".encode() for k in range(16))
                + b"TRANSFER COMPLETED 96\r\n"
                + f"Timing: DSP 0.000 ms, inference {inference_us(run) / 1000:.3f} ms, anomaly 0.000 ms\r\n".encode()
                + b"Predictions:\r\n"
                + b"".join(f"  {label}: {p:.6f}\r\n".encode() for label, p in zip(labels, probabilities, strict=True))
                + b"RESULT 0\r\nEND OUTPUT\r\n> ")
    assert static_exchange(ser, window) == expected


def test_wrong_input_size_takes_the_transfer_then_reports(ser):
    reply = static_exchange(ser, np.zeros(95, np.float32))
    assert reply.endswith(b"OK 90 \r\nOK 95 \r\nTRANSFER COMPLETED 95\r\n"
                          b"ERROR: The size of the input buffer is not correct.\r\n"
                          b"Expected 96 items, but got 95\r\n"
                          b"RESULT -1\r\nEND OUTPUT\r\n> ")


def test_too_few_arguments_gets_no_prompt(ser):
    ser.write(b"AT+RUNIMPULSESTATIC=n\r")
    assert read_quiet(ser) == b"AT+RUNIMPULSESTATIC=n\r\nToo few arguments! Required: 2\r\n"


def test_more_values_than_ram_is_an_err_line_without_prompt(ser):
    ser.write(b"AT+RUNIMPULSESTATIC=n,10000000\r")
    reply = read_quiet(ser)
    assert reply.startswith(b"AT+RUNIMPULSESTATIC=n,10000000\r\nERR: ")
    assert reply.endswith(b"\r\n") and reply.count(b"\r\n") == 2


def test_a_stalled_host_gets_timeout_after_100_ms(ser):
    ser.write(b"AT+RUNIMPULSESTATIC=y,96\r")
    read_until(ser, b"OK CHUNK=32\r\n")
    chunks = encode_chunks(np.zeros(96, np.float32).tobytes(), 32)
    ser.write(chunks[0].encode())
    assert read_until(ser, b"OK 6 \r\n") == b"OK 6 \r\n"
    ser.write(chunks[1][:10].encode())  # part of a chunk, then nothing
    assert read_quiet(ser) == b"TIMEOUT\r\nEND OUTPUT\r\n"  # no RESULT, no prompt


def test_no_echo_during_the_transfer(ser):
    reply = static_exchange(ser, np.ones(96, np.float32))
    chunk_text = "".join(encode_chunks(np.ones(96, np.float32).tobytes(), 32))
    assert chunk_text[:32].encode() not in reply


def test_probabilities_over_serial_equal_host_tflm_for_every_window(device, labels, host_tflm):
    """50 windows through the device over the pty vs the host TFLM interpreter, exactly."""
    out = host_tflm.get_output_details(0)["quantization_parameters"]
    scale, zp = float(out["scales"][0]), int(out["zero_points"][0])
    windows = np.random.default_rng(11).normal(0, 2.5, size=(50, 32, 3)).astype(np.float32)
    with Device(device.port, timeout=3.0) as dev:
        for window in windows:
            raw, expected = host_classify(host_tflm, window)
            result = dev.classify(window)
            assert list(result.probabilities) == labels
            recovered = np.round(result.array / scale + zp).astype(int)
            np.testing.assert_array_equal(recovered, raw.astype(int))
            printed = re.findall(r"^  \S+: (\S+)\r$", result.raw, re.MULTILINE)
            assert printed == [f"{p:.6f}" for p in expected]


# -- AT+RUNIMPULSE -----------------------------------------------------------------------------


def test_runimpulse_runs_until_b_and_reads_only_the_b(fast_ser, labels, run):
    ser = fast_ser
    ser.write(b"AT+RUNIMPULSE\r")
    head = read_until(ser, b"#Classification predictions:\n", timeout=5)
    assert head.startswith(b"AT+RUNIMPULSE\r\nInferencing settings:\n")
    assert b"Starting inferencing, press 'b' to break\nStarting inferencing in 2 seconds...\n" in head
    assert re.search(rb"Timing: DSP 0 us, inference %d us, anomaly 0 us\n#Classification predictions:\n$" % inference_us(run), head)
    block = read_until(ser, f"  {labels[-1]}: ".encode())
    assert block.startswith(f"  {labels[0]}: ".encode())
    ser.write(b"b\r")
    tail = read_until(ser, b"Inferencing stopped by user\r\n> ", timeout=5)
    assert tail.count(b"> ") == 1
    # The firmware read only the 'b': the CR runs an empty line.
    assert read_until(ser, b"\n> ") == b"\r\nNot a valid AT command ()\n> "


def test_runimpulse_without_sensor_data_says_so(run):
    with tiny_board(run) as board:
        s = _open(board.port)
        reply = exchange(s, b"AT+RUNIMPULSE\r")
        s.close()
    assert re.fullmatch(rb"AT\+RUNIMPULSE\r\nERR: No sensor data[^\n]*\n> ", reply)


def test_emulate_cli_prints_the_port_first_and_stops_on_ctrl_c(run):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, "-m", "firmware_bridge.cli", "emulate", "--run", str(run)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT,
                            preexec_fn=sigint_default)
    try:
        port = proc.stdout.readline().strip()
        assert re.fullmatch(r"/dev/pts/\d+", port), port + (proc.stderr.read() if proc.poll() is not None else "")
        with Device(port, timeout=3.0) as host:
            assert list(host.classify(np.zeros(96)).probabilities) == ["idle", "wave", "circle", "updown"]
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


# -- Edge Impulse's own client ------------------------------------------------------------

EI_TEST_INFERENCE = os.environ.get("TINYML_EI_TEST_INFERENCE")


@pytest.mark.skipif(not EI_TEST_INFERENCE or not Path(EI_TEST_INFERENCE).is_file(),
                    reason="set TINYML_EI_TEST_INFERENCE to Edge Impulse's firmware-sdk/tools/test_inference.py")
def test_edge_impulses_test_inference_script_runs_against_the_device(device, tmp_path, labels):
    """Edge Impulse's firmware-sdk/tools/test_inference.py (pyserial): AT, then
    AT+RUNIMPULSESTATIC with base64 chunks, to END OUTPUT. Not vendored (its licence is not
    stated beside it): point the variable at a checkout of edgeimpulse/firmware-sdk."""
    features = tmp_path / "features.txt"
    values = np.linspace(-2.0, 2.0, 96)
    features.write_text(",".join(f"{v:.6f}" for v in values))
    proc = subprocess.run([sys.executable, EI_TEST_INFERENCE, str(features), device.port],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "b'RESULT 0\\r\\n'" in proc.stdout and "b'END OUTPUT\\r\\n'" in proc.stdout
    for label in labels:
        assert f"b'  {label}: " in proc.stdout


# -- Edge Impulse's CLI: its daemon's sampling sequence and run-impulse's three modes ---------


def test_edge_impulse_cli_sequences_work_on_the_host_board(run, tmp_path):
    from test_qemu_sensor import ei_cli_session

    recordings = np.random.default_rng(21).normal(0, 2, size=(2, 200, 3)).astype(np.float32)
    sensor = save_recordings(tmp_path / "sensor.npz", recordings)  # "Playback of sensor.npz"
    with tiny_board(run, sensor=sensor, time_scale=FAST) as board:
        ei_cli_session(board.port, recordings, result_timeout=10.0)
