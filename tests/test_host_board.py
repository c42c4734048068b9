"""The host board: the firmware's C++ core and the compiled model built with g++ for this
computer, its UART on a real pseudo-terminal opened with pyserial (firmware_bridge.host.client).

Nothing is stood in for: the model is a real (tiny) int8 convnet compiled to C, the board
answers the AT protocol from the same core as the QEMU image and the Arduino sketch, and its
int8 outputs are compared byte for byte with TFLM's Python interpreter and LiteRT.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import time

import numpy as np
import pytest
from boards import inference_us, prompt_after

from firmware_bridge.host.client import Device
from firmware_bridge.targets import host_board
from pipeline.core.errors import BridgeError
from pipeline.tflite import latency
from pipeline.tflite.export import ModelSettings, model_data_cc, model_data_h, model_settings_h

needs_gxx = pytest.mark.skipif(shutil.which("g++") is None or shutil.which("gcc") is None,
                               reason="the host board needs g++ (Debian package g++)")
RATE = 62.5
MACS = 1152


def _quantization(data: bytes):
    from pipeline.tflite.litert import host_interpreter

    Interpreter, _, _ = host_interpreter()
    interp = Interpreter(model_content=data)
    qi = interp.get_input_details()[0]["quantization"]
    qo = interp.get_output_details()[0]["quantization"]
    return (float(qi[0]), int(qi[1])), (float(qo[0]), int(qo[1]))


def write_run(run, data: bytes, labels, *, recordings: np.ndarray | None = None):
    """A run directory as quantize leaves it, for the tiny model: int8.tflite, the firmware's
    model_settings.h and the quantize report's MAC count; the test recordings when given."""
    (qi_scale, qi_zp), (qo_scale, qo_zp) = _quantization(data)
    firmware = run / "firmware"
    firmware.mkdir(parents=True)
    (run / "int8.tflite").write_bytes(data)
    settings = ModelSettings(labels=list(labels), input_shape=[1, 32, 3], input_scale=qi_scale,
                             input_zero_point=qi_zp, output_scale=qo_scale, output_zero_point=qo_zp,
                             arena_bytes=4096, macs=MACS, ops=["Conv2D"], sha256=hashlib.sha256(data).hexdigest(),
                             board="nano33ble", sample_rate_hz=RATE)
    (firmware / "model_settings.h").write_text(model_settings_h(settings))
    (firmware / "model_data.h").write_text(model_data_h())
    (firmware / "model_data.cc").write_text(model_data_cc(data))
    (run / "quantize_report.json").write_text(json.dumps({"board": "nano33ble", "macs": {"total": MACS}}))
    if recordings is not None:
        flash = run / "device" / "flash"
        flash.mkdir(parents=True)
        np.savez(flash / "sensor.npz", X=recordings, rate_hz=np.float64(RATE))
    return run


@pytest.fixture(scope="module")
def board_run(tiny_int8, tmp_path_factory):
    if shutil.which("g++") is None or shutil.which("gcc") is None:
        pytest.skip("the host board needs g++ (Debian package g++)")
    _, data, labels = tiny_int8
    rng = np.random.default_rng(3)
    recordings = rng.normal(0, 2, size=(2, 200, 3)).astype(np.float32)
    run = write_run(tmp_path_factory.mktemp("host") / "run", data, labels, recordings=recordings)
    image = host_board.build_host_board(run)
    return run, image, data, labels, recordings


def test_without_a_compiler_one_line_names_the_package(tmp_path, monkeypatch):
    empty = tmp_path / "bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    with pytest.raises(BridgeError) as info:
        host_board.build_host_board(tmp_path)
    assert "g++" in info.value.message and "\n" not in info.value.message
    assert "apt-get install" in info.value.hint


@needs_gxx
def test_the_build_is_cached_by_content_hash(board_run, tmp_path):
    run, image, *_ = board_run
    again = host_board.build_host_board(run)
    assert not again.rebuilt and again.exe == image.exe and again.inputs_sha256 == image.inputs_sha256
    record = json.loads((run / host_board.BUILD_DIR / host_board.BUILD_RECORD).read_text())
    assert record["inputs_sha256"] == image.inputs_sha256 and record["has_compiled_model"]
    # Another flag is another build, named by its own hash.
    other = host_board.build_host_board(run, chunk_size=64)
    assert other.rebuilt and other.inputs_sha256 != image.inputs_sha256
    # The model's settings are an input: a changed byte is a new build.
    settings = run / "firmware" / "model_settings.h"
    original = settings.read_text()
    settings.write_text(original + "\n// changed\n")
    try:
        changed = host_board.build_host_board(run)
        assert changed.rebuilt and changed.inputs_sha256 not in (image.inputs_sha256, other.inputs_sha256)
    finally:
        settings.write_text(original)
    assert host_board.build_host_board(run).exe.is_file()


@needs_gxx
def test_answers_the_at_protocol_on_a_pty_and_is_always_stopped(board_run):
    run, _, data, labels, _ = board_run
    image, board = host_board.boot(run)
    with board:
        assert board.port.startswith("/dev/pts/")
        client = Device(board.port, timeout=5.0)
        try:
            assert client.config.device_type == "TINYML_HOST_BOARD"
            info = client.model_info()
            assert info.sha256 == hashlib.sha256(data).hexdigest() and info.labels == list(labels)
            result = client.classify(np.zeros(96, np.float32))
            # Board time: the compiled model's predicted instructions over the Nano's 64 MHz, never host time.
            predicted = latency.predict(data)["instructions_per_inference"]
            assert result.timing["classification_ms"] == pytest.approx(predicted / 64e6 * 1e3, abs=1e-3)
            profile = client.command("AT+PROFILE?")
            assert "64000000 Hz" in profile and f"{predicted} (predicted from measured op costs" in profile
        finally:
            client.close()
        pid = board.process.pid
    assert not board.running
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


@needs_gxx
def test_an_error_inside_the_with_block_stops_the_board(board_run):
    run = board_run[0]
    _, board = host_board.boot(run)
    with pytest.raises(RuntimeError), board:
        raise RuntimeError("boom")
    assert not board.running


@needs_gxx
def test_int8_outputs_are_byte_identical_to_tflm_and_litert(board_run):
    """The compiled C on the board against the host references, every output byte: identical
    to TFLM's interpreter; against LiteRT, different exactly where TFLM is."""
    from pipeline.tflite.litert import run_litert
    from pipeline.tflite.runtime import TFLMRunner, model_input

    run, _, data, labels, _ = board_run
    (qi_scale, qi_zp), (qo_scale, qo_zp) = _quantization(data)
    rng = np.random.default_rng(7)
    X = rng.normal(0, 3, size=(40, 32, 3)).astype(np.float32)
    x_q = model_input(X, qi_scale, qi_zp, None)
    tflm = TFLMRunner(data, 1 << 16).predict(x_q)
    litert = run_litert(data, x_q, reference=True)
    _, board = host_board.boot(run)
    with board:
        client = Device(board.port, timeout=5.0)
        try:
            printed = np.array([client.classify(x.reshape(-1)).array for x in X])
        finally:
            client.close()
    device_q = (np.rint(printed / qo_scale) + qo_zp).astype(np.int64)
    assert np.array_equal(device_q, tflm.astype(np.int64))
    # LiteRT's reference kernels are another implementation: where they round an output
    # differently (1 of 40 windows here, by one step, in the softmax), TFLM does too, and
    # the board is TFLM's, byte for byte.
    assert np.array_equal(device_q != litert, tflm.astype(np.int64) != litert)


@needs_gxx
def test_reset_starts_the_firmware_over_on_the_same_pty(board_run):
    run = board_run[0]
    _, board = host_board.boot(run)
    with board:
        client = Device(board.port, timeout=5.0)
        try:
            client.classify(np.zeros(96, np.float32))
            assert "Inferences:           1" in client.command("AT+PROFILE?")
            board.reset()
            time.sleep(0.3)
            client.close()
            client = Device(board.port, timeout=5.0)
            assert "Inferences:           0" in client.command("AT+PROFILE?")
            assert board.running
        finally:
            client.close()


@needs_gxx
def test_sigterm_and_a_dead_parent_leave_no_board(board_run):
    run = board_run[0]
    _, board = host_board.boot(run)
    pid = board.process.pid
    board.process.send_signal(signal.SIGKILL)
    board.stop()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


# ---------------------------------------------------------------------------------------
# Engines, the agreement gate
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("port", ["emu", "qemu"])
def test_tflm_on_a_board_of_the_compiled_engine_is_one_clear_line(port):
    from pipeline.core.config import Config
    from pipeline.core.errors import PipelineError
    from pipeline.device.connect import check_engine

    cfg = Config()
    cfg.device.port, cfg.device.engine = port, "tflm"
    with pytest.raises(PipelineError) as info:
        check_engine(cfg)
    assert "compiled engine only" in info.value.message and "\n" not in info.value.message
    assert f"--device {port}" in info.value.message
    cfg.device.port = "/dev/ttyACM0"  # the Arduino sketch has the library
    check_engine(cfg)


def test_one_differing_output_is_an_error_naming_window_and_output():
    from pipeline.core.errors import GateFailed
    from pipeline.device import agreement

    scale, zp = 1 / 256, -128
    tflm_q = np.array([[10, -20, 30], [5, 6, 7], [-128, 127, 0]])
    device_q = tflm_q.copy()
    litert_q = tflm_q.copy()
    litert_q[0, 1] += 1  # LiteRT's own rounding: reported, not the firmware's fault
    ok = agreement.int8_agreement((device_q - zp) * scale, (tflm_q - zp) * scale, litert_q, ["a", "b", "c"],
                                  ["x", "y", "z"], (scale, zp))
    assert ok["passed"] and ok["tflm"]["outputs_identical"] == 9
    assert ok["litert_reference_kernels"]["outputs_identical"] == 8
    agreement.check(ok)
    device_q[1, 2] -= 1
    bad = agreement.int8_agreement((device_q - zp) * scale, (tflm_q - zp) * scale, litert_q, ["a", "b", "c"],
                                   ["x", "y", "z"], (scale, zp))
    assert not bad["passed"] and bad["tflm"]["outputs_identical"] == 8 and bad["tflm"]["windows_identical"] == 2
    with pytest.raises(GateFailed) as info:
        agreement.check(bad)
    assert "8 of 9 outputs" in info.value.message
    assert "window 'b', output 2 ('z'): device 6, TFLM 7" in info.value.message


# ---------------------------------------------------------------------------------------
# The sensor: the run's recordings played as the board's IMU, in board time
# ---------------------------------------------------------------------------------------


@needs_gxx
def test_runimpulse_classifies_the_recordings_the_imu_plays(board_run):
    from firmware_bridge.host.monitor import monitor
    from pipeline.tflite.runtime import TFLMRunner, dequantize_int8, model_input

    run, _, data, labels, recordings = board_run
    _, board = host_board.boot(run, time_scale=50)  # the 2 s pauses pass in 40 ms
    with board:
        mon = monitor(board.port, count=3, timeout=5.0)
    (qi_scale, qi_zp), (qo_scale, qo_zp) = _quantization(data)
    stream = recordings.reshape(-1, 3)
    windows = np.stack([stream[i * 32:(i + 1) * 32] for i in range(3)])  # played one frame a reading
    q = TFLMRunner(data, 1 << 16).predict(model_input(windows, qi_scale, qi_zp, None))
    probs = dequantize_int8(q, qo_scale, qo_zp)
    assert [r.label for r in mon.results] == [labels[int(k)] for k in probs.argmax(1)]
    for result, p in zip(mon.results, probs, strict=True):  # the board's own numbers, 6 decimals
        assert [result.predictions[lab] for lab in labels] == pytest.approx(p.tolist(), abs=1e-6)
        # Board time, printed as the SDK prints it (whole us below 1 ms): the predicted cycles / 64 MHz.
        assert result.timing["classification_ms"] == pytest.approx(inference_us(board_run[0]) / 1000)


@needs_gxx
def test_samplestart_records_the_played_frames_byte_for_byte(board_run):
    from firmware_bridge.host import sampling

    run, _, _, _, recordings = board_run
    _, board = host_board.boot(run, time_scale=50)
    with board:
        client = Device(board.port, timeout=5.0)
        try:
            sensor = client.config.sensors[0]
            assert sensor.name == "Playback of sensor.npz" and sensor.frequencies_hz == (RATE,)
            client.set_sample_settings("wave", 1000 / RATE, 480, hmac_key="k3y")
            reply = client.sample_start(sensor.name, timeout=10.0)
            got = client.read_buffer(reply.start, reply.end)
        finally:
            client.close()
    readings = int(480 // (1000 / RATE))  # 30
    want = sampling.encode_acquisition(client.config.device_id, "TINYML_HOST_BOARD", 1000 / RATE,
                                       recordings.reshape(-1, 3)[:readings], "k3y")
    assert got == want


# ---------------------------------------------------------------------------------------
# A hostile host: the firmware never hangs
# ---------------------------------------------------------------------------------------


@pytest.fixture
def device(board_run):
    _, board = host_board.boot(board_run[0])
    with board:
        client = Device(board.port, timeout=5.0)
        client.board = board
        try:
            yield client
        finally:
            client.close()


@needs_gxx
def test_garbage_bytes_and_a_one_megabyte_line_do_not_disturb_it(device):
    from firmware_bridge.host.protocol import LINE_TOO_LONG

    garbage = bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8))
    prompt_after(device, garbage.replace(b"\r", b"."))
    assert device.command("AT") == "Not a valid AT command (AT)\n"
    for _ in range(64):
        device.write(b"A" * (1 << 14))
    device.write(b"\r")
    out = device.wait_prompt(timeout=60.0)  # a guard against a hang, not a timing check
    assert out.endswith("A" * 256 + "\r\n" + LINE_TOO_LONG + "> ")
    assert "AT Version: 1.8.0" in device.command("AT+DEVICEINFO?")


@needs_gxx
def test_a_reset_mid_transfer_and_the_board_classifies_again(device):
    import base64
    import struct

    device.send("AT+RUNIMPULSESTATIC=n,96")
    device._expect(re_compile(rb"OK CHUNK=32\r\n"), "OK CHUNK=")
    text = base64.b64encode(struct.pack("<96f", *np.ones(96)))
    device.write(text[:64])  # two chunks of the window, then the reset button
    device.board.reset()
    time.sleep(0.3)
    device.close()
    again = Device(device.board.port, timeout=5.0)
    try:
        assert "Inferences:           0" in again.command("AT+PROFILE?")
        assert again.classify(np.ones(96, np.float32)).label in again.model_info().labels
    finally:
        again.close()


def re_compile(pattern: bytes):
    import re

    return re.compile(pattern)


@needs_gxx
def test_board_time_takes_the_instructions_qemu_measured_for_this_model_only(board_run, tmp_path):
    run, _, data, _, _ = board_run
    shutil.copy(run / "int8.tflite", tmp_path / "int8.tflite")
    shutil.copy(run / "quantize_report.json", tmp_path / "quantize_report.json")
    modelled = host_board.board_timing(tmp_path)
    assert modelled["cycles_per_inference"] == latency.predict(data)["instructions_per_inference"]
    assert modelled["source"].startswith("predicted from measured op costs")
    record = tmp_path / "device" / "qemu" / "profile.json"
    record.parent.mkdir(parents=True)
    record.write_text(json.dumps({"model_sha256": hashlib.sha256(data).hexdigest(),
                                  "instructions_per_inference": 23456, "machine": "qemu"}))
    measured = host_board.board_timing(tmp_path)
    assert measured["cycles_per_inference"] == 23456 and measured["source"].startswith("measured")
    assert measured["clock_hz"] == 64_000_000
    record.write_text(json.dumps({"model_sha256": "0" * 64, "instructions_per_inference": 23456}))
    assert host_board.board_timing(tmp_path) == modelled  # another model's count is not this one's


@needs_gxx
def test_board_time_takes_tinyml_profile_next_and_never_host_time(board_run, tmp_path):
    run, _, data, _, _ = board_run
    shutil.copy(run / "int8.tflite", tmp_path / "int8.tflite")
    (tmp_path / "profile.json").write_text(json.dumps({"model_sha256": hashlib.sha256(data).hexdigest(),
                                                       "instructions_per_inference": 34567}))
    timing = host_board.board_timing(tmp_path)
    assert timing["cycles_per_inference"] == 34567 and "tinyml profile" in timing["source"]
    # Neither a measurement nor a model to predict from: no cycle count, and the board prints 0, not host time.
    (tmp_path / "profile.json").unlink()
    (tmp_path / "int8.tflite").unlink()
    assert "cycles_per_inference" not in host_board.board_timing(tmp_path)
    board = host_board.HostBoard(host_board.build_host_board(run), timing=host_board.board_timing(tmp_path))
    with board.start():
        client = Device(board.port, timeout=5.0)
        try:
            assert client.classify(np.zeros(96, np.float32)).timing["classification_ms"] == 0.0
            assert "0 ms: no cycle count" in client.command("AT+PROFILE?")
        finally:
            client.close()
