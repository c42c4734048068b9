"""The device computes the [dsp] features: raw window -> tm_dsp (dsp_settings.h) -> model, on
the host board and on QEMU's Cortex-M4, byte for byte the host library's features and the
host TFLM's outputs, on every test window.

Fixtures are generated here: a spectral motion model (3 axes at 62.5 Hz, a dense network over
the features) and an MFE audio model (8 kHz, 0.25 s windows), each trained for a moment and
converted to full int8 (real Keras, real TFLite converter), written as quantize leaves a run.
"""

from __future__ import annotations

import hashlib
import json
import shutil

import numpy as np
import pytest

from firmware_bridge.host.client import Device
from firmware_bridge.host.streaming import compare_features
from firmware_bridge.targets import host_board, qemu
from pipeline.core.config import DspConfig
from pipeline.dsp import blocks
from pipeline.dsp import firmware as dsp_firmware
from pipeline.tflite.export import (
    DspSettings,
    ModelSettings,
    dsp_settings_h,
    model_data_cc,
    model_data_h,
    model_settings_h,
    parse_dsp_settings_h,
)
from pipeline.tflite.runtime import TFLMRunner, model_input

MISSING = qemu.missing_packages()
WINDOWS = 12  # test windows per fixture: every one is compared, features and outputs


def motion_windows(rng, n):
    """3-axis IMU windows, 2 s at 62.5 Hz: a class is a frequency of shaking (1, 3, 6 Hz)."""
    t = np.arange(125) / 62.5
    y = rng.integers(0, 3, n)
    f = np.array([1.0, 3.0, 6.0])[y]
    X = np.sin(2 * np.pi * f[:, None, None] * t[None, :, None] + rng.uniform(0, 6, (n, 1, 3)))
    return (4 * X + rng.normal(0, 0.5, (n, 125, 3))).astype(np.float32), y


def audio_windows(rng, n):
    """8 kHz mono, 0.25 s: a class is a tone (300, 900, 2000 Hz) in noise, 16-bit-like scale."""
    t = np.arange(2000) / 8000.0
    y = rng.integers(0, 3, n)
    f = np.array([300.0, 900.0, 2000.0])[y]
    X = 0.3 * np.sin(2 * np.pi * f[:, None] * t[None, :]) + rng.normal(0, 0.05, (n, 2000))
    return X[..., None].astype(np.float32), y


CASES = {
    "spectral": (motion_windows, 62.5, DspConfig(block="spectral")),
    "mfe": (audio_windows, 8000.0, DspConfig(block="mfe", num_filters=16, frame_length=0.032, frame_stride=0.032)),
}


def _int8_dense(F, y, path):
    """A real dense network over the features, trained briefly, converted to full int8."""
    import keras

    from pipeline.tflite.convert import convert_int8

    keras.utils.set_random_seed(0)
    inp = keras.Input(F.shape[1:])
    z = keras.layers.Flatten()(inp)
    z = keras.layers.Dense(8, activation="relu")(z)
    model = keras.Model(inp, keras.layers.Dense(3, activation="softmax")(z))
    model.compile(keras.optimizers.Adam(1e-2), "sparse_categorical_crossentropy")
    model.fit(F, y, epochs=5, verbose=0, batch_size=32)
    data, _ = convert_int8(model, F[:64], logit_headroom=0.0)  # the project's converter, plain calibration
    path.write_bytes(data)
    return data


def _write_run(run, data, dsp, rate, raw_shape, n_features):
    from pipeline.tflite.flatbuffer import inspect_model

    info = inspect_model(data)
    firmware = run / "firmware"
    firmware.mkdir(parents=True)
    settings = ModelSettings(
        labels=["a", "b", "c"], input_shape=list(info.input.shape), input_scale=info.input.scales[0],
        input_zero_point=info.input.zero_points[0], output_scale=info.output.scales[0],
        output_zero_point=info.output.zero_points[0], arena_bytes=16384, macs=info.total_macs,
        ops=info.resolver_ops(), sha256=hashlib.sha256(data).hexdigest(), board="nano33ble", sample_rate_hz=rate)
    (firmware / "model_settings.h").write_text(model_settings_h(settings))
    (firmware / "model_data.h").write_text(model_data_h())
    (firmware / "model_data.cc").write_text(model_data_cc(data))
    (firmware / "dsp_settings.h").write_text(dsp_settings_h(DspSettings(**dsp_firmware.settings(dsp, rate, raw_shape, n_features))))
    (run / "quantize_report.json").write_text(json.dumps({"board": "nano33ble", "macs": {"total": info.total_macs}}))


@pytest.fixture(scope="module", params=sorted(CASES))
def dsp_run(request, tmp_path_factory):
    if shutil.which("g++") is None or shutil.which("gcc") is None:
        pytest.skip("the host board needs g++ (Debian package g++)")
    make, rate, dsp = CASES[request.param]
    rng = np.random.default_rng(1)
    X, y = make(rng, 160 + WINDOWS)
    F = blocks.features(X, dsp, rate)
    run = tmp_path_factory.mktemp(f"dsp_{request.param}") / "run"
    run.mkdir()
    data = _int8_dense(F[:160], y[:160], run / "int8.tflite")
    _write_run(run, data, dsp, rate, X.shape[1:], int(F[0].size))
    return request.param, run, X[160:], F[160:], data


def _host_outputs(data, F):
    from pipeline.tflite.flatbuffer import inspect_model

    info = inspect_model(data)
    x_q = model_input(F, info.input.scales[0], info.input.zero_points[0], None)
    return TFLMRunner(data, 1 << 20).predict(x_q), info.output


def _check_board(port, X, F, data):
    """Every window raw to the device: its features and int8 outputs are the host's, byte for byte."""
    host_q, out = _host_outputs(data, F)
    identical = 0
    dsp_ms = set()
    with Device(port, timeout=20.0) as device:
        for i in range(len(X)):
            r = device.classify(X[i], debug=True)
            f = compare_features(r.raw, F[i], f"window {i}")
            assert f["identical"], f"window {i}: {f}"
            identical += 1
            q = np.rint(r.array / out.scales[0]).astype(int) + out.zero_points[0]
            assert q.tolist() == host_q[i].astype(int).tolist(), f"window {i}"
            dsp_ms.add(r.timing["dsp_ms"])
    assert identical == len(X)
    return dsp_ms


def test_dsp_settings_h_names_the_block_and_its_measured_cost(dsp_run):
    block, run, X, F, _ = dsp_run
    s = parse_dsp_settings_h((run / "firmware" / "dsp_settings.h").read_text())
    assert s["block"] == block and s["in_len"] * s["channels"] == X[0].size and s["output_floats"] == F[0].size
    if not MISSING:  # measured on QEMU by pipeline/dsp/cost.py
        assert s["instructions"] > 0


def test_host_board_computes_the_features_byte_for_byte(dsp_run):
    _, run, X, F, data = dsp_run
    _, board = host_board.boot(run)
    with board:
        dsp_ms = _check_board(board.port, X, F, data)
    instructions = parse_dsp_settings_h((run / "firmware" / "dsp_settings.h").read_text())["instructions"]
    # Board time: the DSP's instructions measured on QEMU over the 64 MHz clock (nano33ble).
    assert dsp_ms == {round(instructions / 64e6 * 1e3, 3)}


@pytest.mark.skipif(bool(MISSING), reason=f"needs the Debian packages {', '.join(MISSING)}")
def test_qemu_computes_the_features_byte_for_byte(dsp_run):
    _, run, X, F, data = dsp_run
    _, board = qemu.boot(run)
    with board:
        dsp_ms = _check_board(board.port, X, F, data)
    # Counted live (instructions under -icount over the 64 MHz clock), first window included
    # (the tables are built before the timing starts): within 2% of what pipeline/dsp/cost.py
    # measured on its own input (the work depends a little on the data: logs, noise floor).
    instructions = parse_dsp_settings_h((run / "firmware" / "dsp_settings.h").read_text())["instructions"]
    expected = instructions / 64e6 * 1e3
    assert all(abs(ms - expected) <= 0.02 * expected for ms in dsp_ms), (dsp_ms, expected)


def test_a_raw_window_of_the_wrong_size_is_refused_with_the_window_size(dsp_run):
    _, run, X, F, _ = dsp_run
    _, board = host_board.boot(run)
    with board, Device(board.port, timeout=10.0) as device:
        with pytest.raises(Exception) as info:
            device.classify(F[0])  # features, not the raw window
        assert str(X[0].size) in str(info.value)


def test_run_impulse_on_the_boards_own_sensor_computes_the_features(dsp_run, tmp_path):
    """AT+RUNIMPULSEDEBUG with the IMU (or microphone) playing the raw test windows: the device
    samples a raw window, computes the block's features and prints them as Edge Impulse's
    debug mode does; they are the host library's features of that window (6 decimals)."""
    import sys

    sys.path.insert(0, str(__import__("pathlib").Path(__file__).parent))
    from ei_daemon import EiSerial

    block, run, X, F, _ = dsp_run
    sensor = tmp_path / "sensor.npz"
    np.savez(sensor, X=X[:2], rate_hz=np.float64(CASES[block][1]))
    _, board = host_board.boot(run, sensor=sensor, time_scale=20.0)
    with board:
        ei = EiSerial(board.port)
        try:
            ei.on_connected()
            ei.start_inference("debug")
            out = ei.read_results(1, timeout=60.0)
            ei.stop_inference()
        finally:
            ei.close()
    line = next(ln for ln in out.splitlines() if ln.startswith("Features ("))
    printed = line.split("): ", 1)[1].split()
    assert printed == [format(float(v), ".6f") for v in F[0].ravel()]
    assert f"Frame size: {X[0].size}" in out


def test_a_differing_feature_is_an_error_naming_the_window_and_index(tmp_path):
    from pipeline.core.errors import GateFailed
    from pipeline.device import scoring

    host = np.array([1.0, 2.0, 3.0], np.float32)
    dev = host.copy()
    dev.view(np.uint32)[2] += 1  # one unit in the last place
    hexline = "Features (float32 hex): " + " ".join(f"{int(b):08x}" for b in dev.view(np.uint32))
    same = compare_features("Features (float32 hex): " + " ".join(f"{int(b):08x}" for b in host.view(np.uint32)),
                            host, "w0")
    differ = compare_features(hexline, host, "w1")
    assert same == {"values": 3, "identical": True, "first_difference": None}
    assert differ["first_difference"] == 2 and not differ["identical"]
    records = [{"window_id": "w0", "features": same}, {"window_id": "w1", "features": differ}]
    f = scoring.feature_identity(records, np.array(["w0", "w1"]), "spectral")
    assert (f["identical"], f["differing"]) == (1, 1)
    with pytest.raises(GateFailed) as info:
        scoring.check_features(f, tmp_path / "device_report.json")
    assert "window 'w1', feature 2" in info.value.message
