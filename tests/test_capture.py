"""`tinyml capture`: samples recorded over a real pty into an export `tinyml train` reads.

Two kinds of device: the host board (the firmware's C++ core built for this computer, live,
its IMU playing a recording), and a replay device serving a transcript recorded from a
device (tests/transcripts/sampling_virtual.json) over a real pty, byte for byte, which the tests then alter the way a misbehaving firmware
would: another sample length, another rate, a bad signature, Edge Impulse Nano's own
wording and CRLF line ends, a device that falls silent.
"""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import tty
from pathlib import Path

import numpy as np
import pytest
from boards import save_recordings, tiny_board, tiny_run
from conftest import sigint_default

from firmware_bridge.host import sampling
from firmware_bridge.host.capture import capture
from pipeline.core.errors import BridgeError
from pipeline.data.load import load_dataset

ROOT = Path(__file__).resolve().parent.parent
TRANSCRIPT = json.loads((Path(__file__).parent / "transcripts" / "sampling_virtual.json").read_text())
KEY = TRANSCRIPT["hmac_key"]
SENSOR = "Playback of wave.npz"
START = f"AT+SAMPLESTART={SENSOR}"


class ReplayDevice:
    """A pty that echoes each line, then answers with the recorded reply for it (a list:
    one reply per call, the last repeated; None: no answer at all)."""

    def __init__(self, replies: dict[str, str | list[str | None] | None]):
        self.replies = {k: (v if isinstance(v, list) else [v]) for k, v in replies.items()}
        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)
        self.port = os.ttyname(self.slave)
        self.lines: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        import select

        line = b""
        while not self._stop.is_set():
            if not select.select([self.master], [], [], 0.05)[0]:
                continue
            for byte in os.read(self.master, 4096):
                if byte != 0x0D:
                    line += bytes([byte]) if byte != 0x0A else b""
                    continue
                text, line = line.decode(), b""
                self.lines.append(text)
                queue = self.replies.get(text, [f"Command not found! ({text})\n> "])
                reply = queue.pop(0) if len(queue) > 1 else queue[0]
                if reply is not None:
                    os.write(self.master, text.encode() + b"\r\n" + reply.encode("latin-1"))

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        os.close(self.master)
        os.close(self.slave)


@pytest.fixture
def replay():
    devices = []

    def make(**changes):
        replies = dict(TRANSCRIPT["replies"], **changes)
        devices.append(ReplayDevice(replies))
        return devices[-1]

    yield make
    for d in devices:
        d.close()


def recorded_sample() -> bytes:
    return base64.b64decode(TRANSCRIPT["replies"]["AT+READBUFFER=0,805,n"].split("\n")[0])


def serve_sample(data: bytes) -> dict[str, str]:
    """SAMPLESTART and READBUFFER replies that hand out ``data`` instead of the recorded sample."""
    start = TRANSCRIPT["replies"][START].replace("to=805.", f"to={len(data)}.")
    return {START: start, f"AT+READBUFFER=0,{len(data)},n": base64.b64encode(data).decode() + "\n> "}


def run_capture(port, out, **kwargs):
    options = dict(length_ms=480, hmac_key=KEY, countdown_s=0, timeout=1.0)
    options.update(kwargs)
    return capture(port, "wave", options.pop("count", 2), out, **options)


# -- against the recorded transcript -------------------------------------------------------


def test_the_client_captures_the_recorded_transcript(replay, tmp_path):
    dev = replay()
    result = run_capture(dev.port, tmp_path / "data", cbor=True)
    assert dev.lines == ["bAT", "AT+CONFIG?", f"AT+SAMPLESETTINGS=wave,16.0,480,{KEY}", "AT+SAMPLESETTINGS?",
                         START, "AT+READBUFFER=0,805,n", START, "AT+READBUFFER=0,805,n"]
    assert len(result.files) == 2 and result.bytes_read == 2 * 805
    for f in result.files:  # --cbor keeps the device's signed bytes as they are
        assert f.read_bytes() == recorded_sample() and re.fullmatch(r"wave\.[a-z0-9]{8}\.cbor", f.name)
    info = json.loads((tmp_path / "data" / "info.labels").read_text())
    assert info["version"] == 1
    assert [e["path"] for e in info["files"]] == [f"training/{f.name}" for f in result.files]
    assert all(e["label"] == {"type": "label", "label": "wave"} and e["category"] == "training"
               for e in info["files"])


def test_json_samples_are_signed_again_and_load(replay, tmp_path):
    result = run_capture(replay().port, tmp_path / "data")
    doc = json.loads(result.files[0].read_bytes())
    assert doc["protected"]["alg"] == "HS256"
    assert doc["signature"] == sampling.acquisition_hmac(result.files[0].read_bytes(), KEY)
    import cbor2

    cbor_doc = cbor2.loads(recorded_sample())
    assert doc["payload"] == cbor_doc["payload"]  # the values survive JSON exactly


@pytest.mark.parametrize("change, message", [
    ("length", r"length 25 readings \(400 ms\), the settings ask for 30 \(480 ms\)"),
    ("rate", r"rate 100\.00 Hz \(interval_ms 10\), the settings ask for 62\.50 Hz \(16 ms\)"),
    ("signature", r"signature does not match the key"),
    ("unsigned", r"not signed \(alg 'none'\) although an HMAC key is set"),
    ("garbage", r"not an acquisition file"),
])
def test_a_sample_that_does_not_match_is_refused_and_earlier_ones_kept(replay, tmp_path, change, message):
    import cbor2

    payload = cbor2.loads(recorded_sample())["payload"]
    values = np.asarray(payload["values"], dtype=np.float32)
    name, kind = payload["device_name"], payload["device_type"]
    bad = {
        "length": lambda: sampling.encode_acquisition(name, kind, 16.0, values[:25], KEY),
        "rate": lambda: sampling.encode_acquisition(name, kind, 10.0, np.concatenate([values, values])[:48], KEY),
        "signature": lambda: recorded_sample()[:-3] + bytes([recorded_sample()[-3] ^ 1]) + recorded_sample()[-2:],
        "unsigned": lambda: sampling.encode_acquisition(name, kind, 16.0, values, ""),
        "garbage": lambda: b"\x01\x02\x03 not a sample",
    }[change]()
    served = serve_sample(bad)
    good = TRANSCRIPT["replies"]
    served = {k: [good[k], v] if k in good else v for k, v in served.items()}  # sample 1 good, 2 bad
    dev = replay(**served)
    with pytest.raises(BridgeError, match=message) as info:
        run_capture(dev.port, tmp_path / "data", count=3)
    assert "sample 2 of 3" in info.value.message and "kept 1 sample(s)" in info.value.message
    listed = json.loads((tmp_path / "data" / "info.labels").read_text())["files"]
    assert len(listed) == 1 and (tmp_path / "data" / listed[0]["path"]).is_file()
    assert len(list((tmp_path / "data" / "training").iterdir())) == 1  # nothing of the refused one


def test_edge_impulse_nano_wording_and_crlf_are_read(replay, tmp_path):
    # As firmware-arduino-nano-33-ble-sense's ei_sampler.cpp prints it (and CRLF ends).
    nano = ("Sampling settings:\r\n\tInterval: 16.00000 ms.\r\n\tLength: 480 ms.\r\n\tName: wave\r\n"
            f"\tHMAC Key: {KEY}\r\n\tFile name: /fs/wave\r\nStarting in 2000 ms... (or until all flash was erased)\r\n"
            "Try to write 254 bytes\r\nSampling...\r\nDone sampling, total bytes collected: 30\r\n"
            "[1/1] Uploading file to Edge Impulse...\r\n"
            "Not uploading file, not connected to WiFi. Used buffer, from=0, to=805.\r\n"
            "[1/1] Uploading file to Edge Impulse OK (took 0 ms.)\r\nOK\r\n> ")
    result = run_capture(replay(**{START: nano}).port, tmp_path / "data", count=1, cbor=True)
    assert result.files[0].read_bytes() == recorded_sample()


def test_a_device_that_falls_silent_keeps_what_was_captured(replay, tmp_path):
    good = TRANSCRIPT["replies"][START]
    dev = replay(**{START: [good, None]})
    with pytest.raises(BridgeError, match=r"no (echo|prompt).*AT\+SAMPLESTART.*kept 1 sample\(s\)"):
        run_capture(dev.port, tmp_path / "data", count=3, length_ms=480, timeout=0.3)
    assert len(json.loads((tmp_path / "data" / "info.labels").read_text())["files"]) == 1


def test_a_device_error_is_one_line(replay, tmp_path):
    dev = replay(**{START: "ERR: Failed to find sensor 'x' in the sensor list\n> "})
    with pytest.raises(BridgeError, match="the device could not sample: ERR: Failed to find sensor"):
        run_capture(dev.port, tmp_path / "data")
    with pytest.raises(BridgeError, match="--sensor 'gyro': not a sensor of the device") as info:
        run_capture(dev.port, tmp_path / "data", sensor="gyro")
    assert info.value.hint == "its sensors: 'Playback of wave.npz'"
    with pytest.raises(BridgeError, match="records at most 15 s"):
        run_capture(dev.port, tmp_path / "data", length_ms=20000)


@pytest.mark.parametrize("label", ["a,b", "../x", ".hidden", "a.b", ""])
def test_a_label_that_cannot_be_a_file_name_is_refused(tmp_path, label):
    with pytest.raises(BridgeError, match="--label"):
        capture("/dev/null", label, 1, tmp_path)


# -- against the host board, live -----------------------------------------------------------


@pytest.fixture(scope="module")
def virtual(tiny_int8, tmp_path_factory):
    """The host board, its IMU playing wave.npz, its clock 50 times faster (the 2 s before
    each sample pass in 40 ms)."""
    rng = np.random.default_rng(5)
    sensor = save_recordings(tmp_path_factory.mktemp("capture") / "wave.npz", rng.normal(0, 2, size=(4, 250, 3)))
    with tiny_board(tiny_run(tmp_path_factory, tiny_int8), sensor=sensor, time_scale=50) as board:
        yield board


def test_capture_then_train_reads_the_export(virtual, tmp_path, capsys):
    from tinyml_cli import main

    out = tmp_path / "data"
    for label, count in (("wave", 3), ("idle", 2)):
        code = main(["capture", virtual.port, "--label", label, "--count", str(count), "--length-ms", "640",
                     "--out", str(out), "--countdown", "0", "--hmac-key", KEY])
        assert code == 0
    printed = capsys.readouterr().out
    assert re.search(r"capture: 2 sample\(s\) in [\d.]+ s \([\d.]+ samples/min, 1\d{3} bytes read back at \d+ bytes/s", printed)
    ds = load_dataset(str(out))  # what `tinyml train --dataset DIR` loads
    assert sorted(ds.label_names) == ["idle", "wave"] and len(ds) == 5
    assert ds.rate_hz == 62.5 and all(s.shape == (40, 3) for s in ds.samples)  # 640 ms / 16 ms
    assert ds.channel_names == ("accX", "accY", "accZ")
    # CBOR into the same folder: appended, and still one loadable export.
    assert main(["capture", virtual.port, "--label", "wave", "--count", "1", "--length-ms", "640",
                 "--out", str(out), "--countdown", "0", "--cbor"]) == 0
    assert len(load_dataset(str(out))) == 6


def test_ctrl_c_keeps_every_sample_captured(virtual, tmp_path):
    out = tmp_path / "data"
    proc = subprocess.Popen(
        [sys.executable, "-m", "tinyml_cli", "capture", virtual.port, "--label", "wave", "--count", "50",
         "--length-ms", "320", "--out", str(out), "--countdown", "1"],
        cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        preexec_fn=sigint_default)
    info = out / "info.labels"
    deadline = time.monotonic() + 60
    while not (info.exists() and len(json.loads(info.read_text())["files"]) >= 1):
        assert time.monotonic() < deadline and proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    files = json.loads(info.read_text())["files"]
    assert files and all((out / f["path"]).is_file() for f in files)
    assert len(list((out / "training").iterdir())) == len(files)
    assert b"Traceback" not in err and b"interrupted" in err
    from pipeline.data.edge_impulse import parse_acquisition

    for f in files:
        assert parse_acquisition((out / f["path"]).read_bytes(), f["path"]).values.shape == (20, 3)


def test_emulate_has_the_runs_test_recordings_as_its_sensor(fast_run, tmp_path):
    from firmware_bridge.targets import sensor_file

    recording, name = sensor_file.run_sensor(fast_run, out_dir=tmp_path)
    assert name == "Playback of sensor.npz"
    with np.load(fast_run / "device" / "flash" / "sensor.npz") as npz:
        X = npz["X"]
    head = recording.read_bytes()
    assert head[:8] == b"TMSENSR1"
    frames = np.frombuffer(head[24:], "<f4").reshape(-1, X.shape[2])
    assert np.array_equal(frames, X.reshape(-1, X.shape[2]).astype(np.float32))
