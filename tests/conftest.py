"""Shared fixtures. Tests generate their own data; nothing large is committed."""

from __future__ import annotations

import os

import numpy as np
import pytest

import pipeline.core.progress  # noqa: F401 - before any test imports TensorFlow: its thread settings (one

#                                 thread, reproducible training) must be in the environment first

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

# --------------------------------------------------------------------------- CI: no silent skip

MAY_SKIP_IN_CI = "TINYML_EI_TEST_INFERENCE"
"""A skip whose reason names this may happen in CI: Edge Impulse's test_inference.py is not
ours to install. Every other tool a test needs (g++, the ARM cross-compiler, QEMU) is
installed by .ci/run, so under CI=true a skip means an install went missing: a failure."""


def _skip_fails_in_ci(report) -> bool:
    if os.environ.get("CI") != "true" or not report.skipped or hasattr(report, "wasxfail"):
        return False
    return MAY_SKIP_IN_CI not in str(report.longrepr)


def _fail_the_skip(report) -> None:
    reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
    reason = reason.removeprefix("Skipped: ")
    report.outcome = "failed"
    report.longrepr = (f"CI=true and this skipped: {reason}\n.ci/run installs every tool the tests need "
                       f"(only the {MAY_SKIP_IN_CI} tests may skip in CI): install the missing one")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Under CI=true a skipped test (a skip mark, pytest.skip in a fixture or the test) fails."""
    outcome = yield
    report = outcome.get_result()
    if _skip_fails_in_ci(report):
        _fail_the_skip(report)


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    """The same for a whole module skipped at import (pytest.importorskip, a module-level skip)."""
    outcome = yield
    report = outcome.get_result()
    if _skip_fails_in_ci(report):
        _fail_the_skip(report)


def build_tiny_int8(path, *, input_len=32, channels=3, classes=4, seed=0, width=4):
    """A real (tiny) Keras convnet, trained briefly and converted to full-int8 TFLite.

    Returns the .tflite bytes (also written to ``path``). Slow-ish: imports TensorFlow.
    """
    import keras

    from pipeline.tflite.convert import convert_int8

    keras.utils.set_random_seed(seed)
    rng = np.random.default_rng(seed)
    X = rng.normal(0, 2, size=(256, input_len, channels)).astype(np.float32)
    y = rng.integers(0, classes, size=256)
    X[np.arange(256), :, y % channels] += 3.0  # something learnable
    inp = keras.Input((input_len, channels))
    z = keras.layers.Conv1D(width, 3, padding="same", activation="relu")(inp)
    z = keras.layers.MaxPooling1D(2)(z)
    z = keras.layers.GlobalAveragePooling1D()(z)
    out = keras.layers.Dense(classes, activation="softmax")(z)
    model = keras.Model(inp, out)
    model.compile(keras.optimizers.Adam(1e-2), "sparse_categorical_crossentropy")
    model.fit(X, y, epochs=3, verbose=0, batch_size=64)
    data, _ = convert_int8(model, X[:100], logit_headroom=0.0)  # the project's converter, plain calibration
    path.write_bytes(data)
    return data


@pytest.fixture(scope="session")
def tiny_int8(tmp_path_factory):
    """(path, bytes, labels) of a tiny real int8 model: input (1, 32, 3), 4 classes."""
    path = tmp_path_factory.mktemp("tiny") / "int8.tflite"
    data = build_tiny_int8(path)
    return path, data, ("idle", "wave", "circle", "updown")


FAST_RUN_OUTPUT: dict[str, str] = {}
"""What each stage of the shared fast run printed, by stage name."""


@pytest.fixture(scope="session")
def fast_run(tmp_path_factory):
    """One real run of `tinyml train quantize flash --fast` (virtual device on a pty),
    shared by the end-to-end tests. Tests that change a run copy it first (copy_run)."""
    import contextlib
    import io

    from tinyml_cli import main

    run = tmp_path_factory.mktemp("fast_run") / "run"
    for stage in ("train", "quantize", "flash"):
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            code = main([stage, "--fast", "--run", str(run)])
        FAST_RUN_OUTPUT[stage] = buf.getvalue()
        assert code == 0, f"tinyml {stage} --fast exited {code}:\n{buf.getvalue()[-3000:]}"
    return run


def sigint_default():
    """For Popen(preexec_fn=...): a child that gets Ctrl-C must handle it. A shell's
    background jobs start with SIGINT ignored, and Python keeps an ignored SIGINT ignored."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)


def copy_run(run, dest):
    import shutil

    shutil.copytree(run, dest)
    return dest
