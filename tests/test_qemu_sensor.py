"""The emulated Cortex-M4 has a sensor: the run's test recordings, put into the board's PSRAM
by QEMU's generic loader (board.h), played as its IMU at the model's rate on SysTick.

Real parts only: a tiny real int8 model compiled to C, the image built with arm-none-eabi-gcc
and booted in qemu-system-arm, driven over the pty QEMU opens, with the host side's own client,
monitor and capture. The expected windows come from the recordings and TFLM's interpreter.
Every Timing line is board time: the invoke's instructions over the Nano's 64 MHz clock.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from test_host_board import RATE, _quantization, write_run

from firmware_bridge.host.client import Device
from firmware_bridge.targets import qemu

MISSING = qemu.missing_packages()
needs_qemu = pytest.mark.skipif(
    bool(MISSING), reason=f"the emulated Cortex-M4 needs the Debian packages {', '.join(MISSING)}: {qemu.INSTALL_LINE}")
LABELS = ("idle", "wave", "circle", "updown")
FRAMES = 32  # the tiny model's window: (1, 32, 3)


@pytest.fixture(scope="module")
def sensor_run(tiny_int8, tmp_path_factory):
    if MISSING:
        pytest.skip(f"needs the Debian packages {', '.join(MISSING)}")
    _, data, labels = tiny_int8
    recordings = np.random.default_rng(5).normal(0, 2, size=(2, 200, 3)).astype(np.float32)
    run = write_run(tmp_path_factory.mktemp("qemu_sensor") / "run", data, labels, recordings=recordings)
    image, board = qemu.boot(run)
    with board:
        yield run, image, board, data, recordings


def _expected(data: bytes, windows: np.ndarray) -> np.ndarray:
    from pipeline.tflite.runtime import TFLMRunner, dequantize_int8, model_input

    (qi_scale, qi_zp), (qo_scale, qo_zp) = _quantization(data)
    q = TFLMRunner(data, 1 << 16).predict(model_input(windows, qi_scale, qi_zp, None))
    return dequantize_int8(q, qo_scale, qo_zp)


def _reset(board) -> None:
    """The reset button (QMP system_reset): the firmware boots again, its IMU at frame 0 (the
    loader puts the recording back into PSRAM)."""
    board.reset()
    time.sleep(0.5)


def _instructions_ms(client: Device) -> float:
    """The last invoke's instructions (AT+PROFILE?) over the Nano's 64 MHz, in ms."""
    last = qemu.read_profile(client)["instructions_per_inference"]["last"]
    return round(last / 64e6 * 1e3, 3)


@needs_qemu
def test_the_imu_is_listed_and_profile_says_where_it_is(sensor_run):
    _, _, board, _, recordings = sensor_run
    with Device(board.port, timeout=60.0) as d:
        sensor = d.config.sensors[0]
        assert sensor.name == "Playback of sensor.npz" and sensor.frequencies_hz == (RATE,)
        profile = d.command("AT+PROFILE?")
    assert f"Playback of sensor.npz, {recordings.shape[0] * recordings.shape[1]} frames of 3 axes at 62.500 Hz" \
        in profile
    assert "Board clock:          64000000 Hz (nano33ble" in profile and "never QEMU's virtual time" in profile


@needs_qemu
def test_runimpulse_classifies_the_played_recordings_in_board_time(sensor_run):
    from firmware_bridge.host.monitor import monitor

    _, _, board, data, recordings = sensor_run
    _reset(board)  # the IMU starts over at frame 0
    mon = monitor(board.port, count=2, timeout=60.0)
    stream = recordings.reshape(-1, 3)
    windows = np.stack([stream[i * FRAMES:(i + 1) * FRAMES] for i in range(2)])
    probs = _expected(data, windows)
    assert [r.label for r in mon.results] == [LABELS[int(k)] for k in probs.argmax(1)]
    for result, p in zip(mon.results, probs, strict=True):
        assert [result.predictions[lab] for lab in LABELS] == pytest.approx(p.tolist(), abs=1e-6)
    with Device(board.port, timeout=60.0) as d:
        board_ms = _instructions_ms(d)
    # Board time, printed as the SDK prints it (whole us below 1 ms): never QEMU's clock.
    # Within 3 us: the count is read in SysTick ticks of 40 instructions and the SDK prints whole
    # us, and the two figures may come from different windows (a saturating requantization
    # branch costs a few instructions); QEMU's own clock would be off by orders of magnitude.
    assert mon.results[-1].timing["classification_ms"] == pytest.approx(board_ms, abs=3e-3)


@needs_qemu
@pytest.mark.parametrize("mode", ["continuous", "debug"])
def test_continuous_and_debug_modes_run_on_the_imu(sensor_run, mode):
    _, _, board, data, _ = sensor_run
    with Device(board.port, timeout=60.0) as d:
        d.send("AT+RUNIMPULSECONT" if mode == "continuous" else "AT+RUNIMPULSEDEBUG=n")
        text = b""
        pattern = re.compile(rb"#Classification predictions:\n(?:  [^\n]*\n){4}")
        while len(pattern.findall(text)) < 2:
            chunk, _ = d._expect(pattern, "a result", timeout=60.0)
            text += chunk
        d.write(b"b")
        d._expect(re.compile(rb"Inferencing stopped by user\r\n"), "the stop", timeout=60.0)
        d.write(b"\r")
        d.wait_prompt(timeout=60.0)
        d._drain()
    out = text.decode()
    assert "Starting inferencing, press 'b' to break" in out
    if mode == "debug":
        features = re.findall(r"Features \(0 ms\.\): ([^\n]*)\n", out)
        assert features and len(features[0].split()) == FRAMES * 3
        x = np.array(features[0].split(), dtype=np.float32).reshape(1, FRAMES, 3)
        first = re.search(r"#Classification predictions:\n((?:  [^\n]*\n){4})", out).group(1)
        got = [float(line.split(": ")[1]) for line in first.strip("\n").split("\n")]
        assert got == pytest.approx(_expected(data, x)[0].tolist(), abs=1e-6)
    else:
        assert "Starting inferencing in 2 seconds" not in out  # no pause between windows
    assert re.search(r"Timing: DSP 0 us, inference \d+ us, anomaly 0 us", out)


@needs_qemu
def test_samplestart_and_capture_give_the_played_frames(sensor_run, tmp_path):
    from firmware_bridge.host import sampling
    from firmware_bridge.host.capture import capture

    _, _, board, _, recordings = sensor_run
    _reset(board)
    with Device(board.port, timeout=60.0) as d:
        sensor = d.config.sensors[0]
        d.set_sample_settings("wave", 1000 / RATE, 480, hmac_key="k3y")
        reply = d.sample_start(sensor.name, timeout=60.0)
        got = d.read_buffer(reply.start, reply.end)
        device_id = d.config.device_id
    readings = int(480 // (1000 / RATE))  # 30
    want = sampling.encode_acquisition(device_id, "QEMU_MPS2_AN386", 1000 / RATE,
                                       recordings.reshape(-1, 3)[:readings], "k3y")
    assert got == want
    result = capture(board.port, "wave", 1, tmp_path / "export", length_ms=320, countdown_s=0, timeout=60.0,
                     out=open("/dev/null", "w"))
    doc = json.loads(result.files[0].read_bytes())
    values = np.array(doc["payload"]["values"], dtype=np.float32)
    # Real samples: the next 20 frames of the recordings, as the IMU played them.
    assert values.tolist() == recordings.reshape(-1, 3)[readings:readings + 20].tolist()


# -- Edge Impulse's own static-inference client, against the emulated board ------------------

EI_TEST_INFERENCE = os.environ.get("TINYML_EI_TEST_INFERENCE")


@needs_qemu
@pytest.mark.skipif(not EI_TEST_INFERENCE or not Path(EI_TEST_INFERENCE).is_file(),
                    reason="set TINYML_EI_TEST_INFERENCE to Edge Impulse's firmware-sdk/tools/test_inference.py")
def test_edge_impulses_test_inference_script_runs_against_qemu(sensor_run, tmp_path):
    """Edge Impulse's firmware-sdk/tools/test_inference.py (pyserial): AT, then
    AT+RUNIMPULSESTATIC with the chunk size the board announces (128 here), to END OUTPUT."""
    _, _, board, _, _ = sensor_run
    features = tmp_path / "features.txt"
    features.write_text(",".join(f"{v:.6f}" for v in np.linspace(-2.0, 2.0, FRAMES * 3)))
    proc = subprocess.run([sys.executable, EI_TEST_INFERENCE, str(features), board.port],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "b'RESULT 0\\r\\n'" in proc.stdout and "b'END OUTPUT\\r\\n'" in proc.stdout
    for label in LABELS:
        assert f"b'  {label}: " in proc.stdout


# -- Edge Impulse's CLI: its daemon's sampling sequence and run-impulse's three modes ---------


def ei_cli_session(port: str, recordings: np.ndarray, *, result_timeout: float) -> None:
    """The daemon's sequence (connect, config, sample settings, sample, read the buffer) and
    run-impulse in its three modes, as Edge Impulse's CLI sends them (tests/ei_daemon.py),
    against a board whose IMU plays ``recordings`` from frame 0."""
    from ei_daemon import EiSerial

    from pipeline.data.edge_impulse import parse_acquisition

    ei = EiSerial(port)
    try:
        ei.on_connected()
        config = ei.get_config()
        sensor = config["sensors"][0]
        assert sensor["name"] == "Playback of sensor.npz" and sensor["frequencies"] == [RATE]
        interval = 1000 / sensor["frequencies"][0]
        ei.set_sample_settings("wave", interval, 320, "")
        data = ei.start_sampling(sensor["name"], 320)
        values = parse_acquisition(data, "the daemon's sample").values  # the signed CBOR file
        assert values.tolist() == recordings.reshape(-1, 3)[:20].tolist()
        for mode in ("normal", "continuous", "debug"):
            ei.start_inference(mode)
            out = ei.read_results(2, timeout=result_timeout)
            ei.stop_inference()
            assert "Starting inferencing, press 'b' to break" in out
            assert re.search(r"Timing: DSP 0 us, inference \d+ us, anomaly 0 us\n#Classification predictions:\n"
                             + "".join(rf"  {lab}: [01]\.\d{{6}}\n" for lab in LABELS), out), out[-500:]
            assert ("Features (0 ms.): " in out) == (mode == "debug")
    finally:
        ei.close()


@needs_qemu
def test_edge_impulse_cli_sequences_work_on_qemu(sensor_run):
    _, _, board, _, recordings = sensor_run
    _reset(board)
    ei_cli_session(board.port, recordings, result_timeout=60.0)
