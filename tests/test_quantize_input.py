"""Issue 12: int8 that holds on real-like sensor data, the device's float input step, and
the end-to-end runs the issue names (digits and a saturating accelerometer export).

The float input step (``pipeline.tflite.runtime.model_input``) is the device contract: the quantize
stage and the firmware's C++ core must turn raw values into the same int8 bytes.
"""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pipeline.core.config import load_config
from pipeline.core.errors import PipelineError
from pipeline.tflite.export import ModelSettings, model_settings_h, parse_model_settings_h
from pipeline.tflite.runtime import (
    InputNormalization,
    TFLMRunner,
    model_input,
    read_input_normalization,
    with_input_normalization,
)

sys.path.insert(0, str(Path(__file__).parent))
from sensor_data import write_saturating_dataset  # noqa: E402

SKETCH = Path(__file__).resolve().parents[1] / "firmware_bridge" / "firmware" / "core"
NORM = InputNormalization((9.81, -0.5, 1234.5), (0.03125, 2.5, 1e-3))

CPP_MAIN = r"""
#include <stdio.h>
#include "model_ops.h"
int main() {
  float x;
  int i = 0;
  while (scanf("%a", &x) == 1) {
    printf("%d\n", static_cast<int>(tinyml::model_input_int8(x, i)));
    i++;
  }
  return 0;
}
"""


def test_model_input_is_the_cpp_cores_bit_for_bit(tmp_path):
    """pipeline.tflite.runtime.model_input (quantize stage, device stage's reference) and the sketch's
    tinyml::model_input_int8, with the model_settings.h export writes: same int8 for every
    value, including extremes, halves and non-finite ones."""
    if shutil.which("g++") is None:
        pytest.skip("g++ not installed")
    settings = ModelSettings(labels=["a", "b"], input_shape=[1, 50, 3], input_scale=0.0478, input_zero_point=-7,
                             output_scale=1 / 256, output_zero_point=-128, arena_bytes=4096, macs=1,
                             ops=["Conv2D"], sha256="0" * 64, board="nano33ble", sample_rate_hz=62.5,
                             input_mean=list(NORM.mean), input_inv_std=list(NORM.inv_std))
    (tmp_path / "model_settings.h").write_text(model_settings_h(settings))
    for name in ("model_ops.h",):
        shutil.copy(SKETCH / name, tmp_path / name)
    (tmp_path / "main.cpp").write_text(CPP_MAIN)
    exe = tmp_path / "main"
    subprocess.run(["g++", "-std=c++17", "-O2", "-o", str(exe), str(tmp_path / "main.cpp"), "-I", str(tmp_path)],
                   check=True, capture_output=True)
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(0, 100, 3000), rng.uniform(-2000, 2000, 1500),
                        np.array([0.0, -0.0, 1e30, -1e30, np.inf, -np.inf, np.nan] * 3)]).astype(np.float32)
    x = x[: len(x) // 3 * 3]
    out = subprocess.run([str(exe)], input="\n".join(float(v).hex() for v in x).replace("inf", "INF"),
                         capture_output=True, text=True, check=True).stdout.split()
    cpp = np.asarray([int(v) for v in out], dtype=np.int8)
    host = model_input(x.reshape(-1, 3), settings.input_scale, settings.input_zero_point, NORM).reshape(-1)
    assert len(cpp) == len(x)
    assert np.array_equal(cpp, host)  # non-finite values too: NaN -> zero point, +-inf -> the clamps
    assert parse_model_settings_h(model_settings_h(settings))["input_mean"] == [float(np.float32(v)) for v in NORM.mean]


def test_the_float_step_lives_in_the_model_and_tflm_ignores_it(tiny_int8):
    _, data, _ = tiny_int8
    assert read_input_normalization(data) is None
    tagged = with_input_normalization(data, NORM)
    assert read_input_normalization(tagged) == InputNormalization(
        tuple(float(np.float32(v)) for v in NORM.mean), tuple(float(np.float32(v)) for v in NORM.inv_std))
    x = np.random.default_rng(1).integers(-128, 128, size=(4, 32, 3)).astype(np.int8)
    assert np.array_equal(TFLMRunner(tagged, 1 << 20).predict(x), TFLMRunner(data, 1 << 20).predict(x))


@pytest.mark.parametrize("key", ["max_balanced_accuracy_drop", "min_float_int8_agreement", "arena_margin"])
def test_a_non_finite_quantize_threshold_is_refused_at_load(key):
    with pytest.raises(PipelineError, match=f"\\[quantize\\] {key}"):
        load_config(None, {f"quantize.{key}": float("nan")})


def test_an_old_run_config_with_the_retired_lsb_gate_still_loads(tmp_path):
    from pipeline.core.config import load_config

    path = tmp_path / "config.toml"
    path.write_text("[quantize]\nmax_lsb_difference = 1\naccept_drop = true\n")
    assert load_config(path).quantize.accept_drop is True


def _cli(*args) -> tuple[int, str]:
    from tinyml_cli import main

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
        code = main(list(args))
    return code, buf.getvalue()


def _fit_like_train(cfg, run: Path, epochs: int = 80):
    """The train stage's own model (builder, normalization from the training windows, prior
    bias, Adam) fitted on the run's split and saved as float.keras; without the train
    stage's search, baselines and audits, which these tests do not need."""
    from pipeline.core.config import save_config
    from pipeline.data.splits import prepare
    from pipeline.ml import model as M

    prepared = prepare(cfg, run)
    tr, va = prepared.windows["train"], prepared.windows["val"]
    k = len(prepared.manifest["dataset"]["label_names"])
    params = M.ModelParams.from_config(cfg.train).replace(learning_rate=3e-3)
    M.seed_everything(cfg.seed)
    net = M.build_model(tr.X.shape[1:], k, params, tr.X, M.class_priors(tr.y, k))
    M.fit(net, (tr.X, tr.y), (va.X, va.y), params, epochs, cfg.train.batch_size, patience=15)
    net.save(run / "float.keras")
    save_config(cfg, run)
    return prepared


@pytest.mark.slow
def test_accelerometer_and_gyroscope_that_saturate_keep_int8_with_the_defaults(tmp_path):
    """An idle class that is almost constant next to shakes and falls that saturate both
    sensors, several subjects (tests/sensor_data.py). The int8 graph with the normalization
    inside takes raw values on one scale that must reach ±2000 deg/s, so the accelerometer
    (the walk/idle difference) drops below one LSB and that remedy misses the gates; the
    float step on the device keeps int8 within 1 point of float with >= 98% agreement.
    The firmware (the host board: the C++ core's float step and the compiled model) gives
    the host TFLM's bytes for the raw windows."""
    from firmware_bridge.host.client import Device
    from firmware_bridge.targets import host_board

    # 10 subjects, not 8: with 8 (256 validation windows) the int8 drop sat on the gate's edge
    # (0.0078 against 0.01 with data seed 3, 0.0117 and a failed gate with seed 4). With 10,
    # measured over data seeds 3, 4 and 5: drop 0.0039, 0.0, 0.0039 and float-int8 agreement
    # 0.996, 1.0, 0.996, so the assertions below hold with at least twice the margin.
    data = write_saturating_dataset(tmp_path / "imu.npz", subjects=10)
    run = tmp_path / "run"
    # raw windows: this test is about the int8 input step on raw IMU values, and _fit_like_train
    # skips the train stage that resolves [dsp] block = "auto"
    cfg = load_config(None, {"data.dataset": str(data), "dsp.block": "raw"})
    prepared = _fit_like_train(cfg, run)
    code, text = _cli("quantize", "--run", str(run))
    assert code == 0, text[-3000:]
    report = json.loads((run / "quantize_report.json").read_text())
    val = report["validation"]
    assert report["gates_passed"] is True and "override" not in report
    # Half the gates (drop 0.01, agreement 0.98): a pass that is not on the gate's edge.
    assert val["float"]["balanced_accuracy"] - val["int8"]["balanced_accuracy"] <= 0.005
    assert val["agreement"]["float_int8"] >= 0.99
    assert report["calibration"]["windows"] == report["calibration"]["training_windows"]
    tried = report["remedies"]["tried"]
    assert [t["remedy"] for t in tried][:2] == ["graph", "device"] and report["remedies"]["kept"].startswith("device")
    assert tried[0]["float_int8_agreement"] < 0.98 and not tried[0]["gates_passed"]
    layers = report["per_layer"]["layers"]
    assert layers[0]["layer"] == "(input)" and all(r["litert_vs_tflm"]["max_lsb"] == 0 for r in layers)
    assert report["conversion"]["input_normalization"]["metadata"] == "tinyml.input_normalization"

    model = (run / "int8.tflite").read_bytes()
    norm = read_input_normalization(model)
    assert norm is not None and not norm.is_identity
    settings = parse_model_settings_h((run / "firmware" / "model_settings.h").read_text())
    assert (settings["input_mean"], settings["input_inv_std"]) == (list(norm.mean), list(norm.inv_std))
    test = prepared.windows["test"].X[:64]
    _, board = host_board.boot(run)
    with board, Device(board.port, timeout=10.0) as device:
        printed = np.stack([device.classify(x.reshape(-1)).array for x in test])
    raw = np.rint(printed / settings["output_scale"]).astype(int) + settings["output_zero_point"]
    host = TFLMRunner(model, 1 << 20).predict(model_input(test, settings["input_scale"],
                                                          settings["input_zero_point"], norm))
    assert np.array_equal(raw, host)


@pytest.mark.slow
def test_digits_npz_goes_train_quantize_flash_with_the_defaults(tmp_path):
    from sklearn.datasets import load_digits

    d = load_digits()
    path = tmp_path / "digits.npz"
    np.savez(path, X=(d.images / 16.0).reshape(-1, 8, 8, 1).astype(np.float32), y=d.target)
    run = tmp_path / "run"
    for stage in ("train", "quantize", "flash"):
        code, text = _cli(stage, "--fast", "--dataset", str(path), "--run", str(run))
        assert code == 0, f"{stage}: {text[-3000:]}"
    device = json.loads((run / "device_report.json").read_text())
    assert device["agreement_with_host_int8"]["top1"] == 1.0
