"""The convnet builder, seeding and Karpathy's checks, on small real data with real Keras."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pipeline.core.config import TrainConfig
from pipeline.core.errors import GateFailed, PipelineError
from pipeline.data.windows import Windows

pytestmark = pytest.mark.slow

TFLM_LAYERS = {
    "InputLayer", "Normalization", "Conv1D", "SeparableConv1D", "Conv2D", "SeparableConv2D",
    "DepthwiseConv1D", "DepthwiseConv2D", "ReLU", "MaxPooling1D", "MaxPooling2D",
    "GlobalAveragePooling1D", "GlobalAveragePooling2D", "Flatten", "Dropout", "Dense",
}
# What the int8 converter makes of them, all run by TFLM (see the briefing).
TFLM_OPS = {"SUB", "MUL", "EXPAND_DIMS", "CONV_2D", "RESHAPE", "MAX_POOL_2D", "DEPTHWISE_CONV_2D",
            "MEAN", "FULLY_CONNECTED", "SOFTMAX", "QUANTIZE", "DEQUANTIZE"}


def make_windows(X: np.ndarray, y: np.ndarray, tag: str) -> Windows:
    n = len(y)
    ids = np.array([f"{tag}{i:04d}" for i in range(n)])
    return Windows(X=X.astype(np.float32), y=np.asarray(y, dtype=np.int64),
                   window_ids=np.array([f"{i}@0" for i in ids]), sample_index=np.arange(n),
                   offsets=np.zeros(n, dtype=np.int64), length=X.shape[1], recording_ids=ids,
                   group_ids=ids, start_times=np.zeros(n))


def learnable(n: int, seed: int, length: int = 32, channels: int = 3, k: int = 4):
    """Noise plus a class-dependent tone on one channel, with an offset per channel."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % k
    t = np.arange(length)
    X = rng.normal(0, 1, size=(n, length, channels)) + np.array([9.8, -3.0, 0.5])[:channels]
    X[np.arange(n), :, y % channels] += 3 * np.sin(2 * np.pi * (1 + y)[:, None] * t / length)
    return X.astype(np.float32), y


def small_params(**changes):
    from pipeline.ml.model import ModelParams

    return ModelParams(width=4, depth=2, kernel_size=5, dropout=0.0, l2=0.0,
                       learning_rate=3e-3).replace(**changes)


# --------------------------------------------------------------------------- builder


@pytest.mark.parametrize("shape,separable", [((64, 3), False), ((64, 3), True), ((8, 8, 1), False),
                                             ((8, 8, 1), True)])
def test_builder_makes_a_small_softmax_convnet_of_tflm_layers(shape, separable):
    from pipeline.ml.model import ModelParams, build_model, class_priors

    y = np.array([0, 0, 0, 1, 2])
    priors = class_priors(y, 3)
    X = np.random.default_rng(0).normal(size=(5, *shape)).astype(np.float32)
    model = build_model(shape, 3, ModelParams(width=6, depth=3, separable=separable), X, priors)
    types = [type(layer).__name__ for layer in model.layers]
    assert set(types) <= TFLM_LAYERS, set(types) - TFLM_LAYERS
    assert types[1] == "Normalization" and types[-1] == "Dense"
    assert ("SeparableConv2D" in types or "SeparableConv1D" in types) == separable
    assert model.count_params() < 8000
    out = np.asarray(model(X))
    assert out.shape == (5, 3)
    np.testing.assert_allclose(out.sum(axis=1), 1.0, atol=1e-5)
    # Final bias = log class priors, so the untrained model predicts the prior.
    bias = model.get_layer("classes").get_weights()[1]
    np.testing.assert_allclose(bias, np.log(priors), rtol=1e-5)
    np.testing.assert_allclose(out, np.broadcast_to(priors, out.shape), atol=0.02)


def test_separable_1d_and_2d_models_convert_to_full_int8_that_tflm_runs():
    import tensorflow as tf
    from ai_edge_litert.interpreter import Interpreter
    from tflite_micro.python.tflite_micro import runtime

    from pipeline.ml.model import build_model, class_priors

    for shape in ((64, 3), (8, 8, 1)):
        X = np.random.default_rng(1).normal(3, 2, size=(64, *shape)).astype(np.float32)
        y = np.arange(64) % 4
        model = build_model(shape, 4, small_params(depth=3, separable=True), X, class_priors(y, 4))
        conv = tf.lite.TFLiteConverter.from_keras_model(model)
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.representative_dataset = lambda X=X: ([X[i:i + 1]] for i in range(len(X)))
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        conv.inference_input_type = tf.int8
        conv.inference_output_type = tf.int8
        data = conv.convert()
        lite = Interpreter(model_content=data)
        ops = {op["op_name"] for op in lite._get_ops_details()}
        assert ops <= TFLM_OPS, ops - TFLM_OPS
        assert lite.get_input_details()[0]["dtype"] == np.int8
        # A generous arena: these models need a few KB (too small an arena can crash TFLM).
        micro = runtime.Interpreter.from_bytes(data, arena_size=200_000)
        details = micro.get_input_details(0)
        scale = details["quantization_parameters"]["scales"][0]
        zero = details["quantization_parameters"]["zero_points"][0]
        q = np.clip(np.round(X[:1] / scale + zero), -128, 127).astype(np.int8)
        micro.set_input(q, 0)
        micro.invoke()
        out = micro.get_output(0)
        assert out.dtype == np.int8 and out.shape == (1, 4)


def test_time_max_head_takes_each_band_at_its_loudest_wherever_the_word_is_and_runs_on_tflm():
    """The head of time-frequency features: the same word earlier or later in the window gives
    the same output; moved to another band, another. int8, it runs on TFLM as MAX_POOL_2D."""
    from tflite_micro.python.tflite_micro import runtime

    from pipeline.ml.model import build_model, class_priors, head_for
    from pipeline.tflite.convert import convert_int8

    assert head_for("auto", True) == "time_max" and head_for("auto", False) == "gap"
    assert head_for("gap", True) == "gap"
    from pipeline.ml.model import ModelParams

    tf_params = ModelParams.from_config(TrainConfig(), time_frequency=True)
    assert (tf_params.head, tf_params.kernel_size) == ("time_max", 3)
    assert (ModelParams.from_config(TrainConfig()).kernel_size, ModelParams.from_config(TrainConfig()).head) == (7, "gap")
    assert ModelParams.from_config(TrainConfig(kernel_size=5), time_frequency=True).kernel_size == 5
    with pytest.raises(PipelineError, match=r"\[train\] head"):
        head_for("flat", True)
    shape = (48, 16, 1)  # frames x bands
    rng = np.random.default_rng(2)
    X = rng.uniform(0, 0.1, size=(64, *shape)).astype(np.float32)
    y = np.arange(64) % 4
    model = build_model(shape, 4, small_params(head="time_max"), X, class_priors(y, 4))
    names = [layer.name for layer in model.layers]
    assert "time_max" in names and "gap" not in names
    import keras

    head = keras.Model(model.inputs, model.get_layer("flatten").output)  # what the softmax reads
    word = np.zeros((1, *shape), np.float32)
    word[0, 16:20, 3:6] = 1.0  # its receptive field away from the edges ("same" padding)
    late = np.roll(word, 16, axis=1)
    other_band = np.roll(word, 8, axis=2)
    out = np.asarray(head(np.concatenate([word, late, other_band])))
    np.testing.assert_allclose(out[0], out[1], atol=1e-5)
    assert np.abs(out[0] - out[2]).max() > 1e-2
    data, _ = convert_int8(model, X, logit_headroom=0)
    ops = {op["op_name"] for op in _litert_ops(data)}
    folded = {"SHAPE", "STRIDED_SLICE", "PACK"}  # Flatten's shape, folded by the compiler
    assert "MAX_POOL_2D" in ops and ops <= TFLM_OPS | folded, ops - TFLM_OPS
    micro = runtime.Interpreter.from_bytes(data, arena_size=200_000)
    micro.set_input(np.zeros((1, *shape), np.int8), 0)
    micro.invoke()
    assert micro.get_output(0).shape == (1, 4)


def _litert_ops(data: bytes) -> list[dict]:
    from ai_edge_litert.interpreter import Interpreter

    return Interpreter(model_content=data)._get_ops_details()


# --------------------------------------------------------------------------- checks at init


def test_loss_at_init_is_the_entropy_of_the_class_prior():
    from pipeline.ml.model import build_model, check_init_loss, class_priors, seed_everything

    seed_everything(0)
    X, y = learnable(200, 0)
    balanced = check_init_loss(build_model(X.shape[1:], 4, small_params(), X, class_priors(y, 4)),
                               X, y, class_priors(y, 4), 0.05)
    assert balanced["expected_init_loss"] == pytest.approx(math.log(4))
    assert balanced["init_loss"] == pytest.approx(math.log(4), abs=0.02) and balanced["init_loss_ok"]
    y_skew = np.where(np.arange(200) < 140, 0, y)  # 70% class 0
    pri = class_priors(y_skew, 4)
    skewed = check_init_loss(build_model(X.shape[1:], 4, small_params(), X, pri), X, y_skew, pri, 0.05)
    assert skewed["expected_init_loss"] < math.log(4) - 0.3
    assert skewed["init_loss"] == pytest.approx(skewed["expected_init_loss"], abs=0.02)


def test_init_loss_check_catches_a_broken_final_layer():
    from pipeline.ml.model import build_model, check_init_loss, class_priors

    X, y = learnable(200, 0)
    pri = class_priors(y, 4)
    model = build_model(X.shape[1:], 4, small_params(), X, pri)
    kernel, _ = model.get_layer("classes").get_weights()
    # A final layer confidently wrong at init: the default ln K would be ~1.39, this is ~6.
    model.get_layer("classes").set_weights([kernel, np.array([8.0, 0.0, 0.0, 0.0])])
    with pytest.raises(GateFailed, match=r"loss at init .* is far from the expected 1\.39 "
                                         r"\(entropy of the class prior"):
        check_init_loss(model, X, y, pri, 0.25)


def test_overfit_one_batch_passes_on_a_real_batch():
    from pipeline.ml.model import overfit_one_batch, pick_batch

    X, y = learnable(64, 0)
    idx = pick_batch(y, 16, 0)
    assert set(y[idx]) == {0, 1, 2, 3} and len(set(idx)) == 16
    result = overfit_one_batch(X.shape[1:], 4, small_params(), X[idx], y[idx], 100, 0.05, 0)
    assert result["overfit_ok"] and result["overfit_batch_loss"] < 0.05


def test_overfit_check_catches_a_batch_no_model_can_fit():
    """Identical inputs with different labels: the best possible loss is the label entropy."""
    from pipeline.ml.model import overfit_one_batch

    X = np.repeat(learnable(1, 0)[0], 16, axis=0)
    y = np.arange(16) % 4
    with pytest.raises(GateFailed, match=r"could not overfit one batch of 16 windows: loss 1\.\d+ "
                                         r"after 100 steps \(expected < 0\.05\)"):
        overfit_one_batch(X.shape[1:], 4, small_params(), X, y, 100, 0.05, 0)


# --------------------------------------------------------------------------- seeds, normalization


def _trial(seed, train, val, epochs=4):
    from pipeline.ml.model import class_priors
    from pipeline.train.search import run_trial

    tc = TrainConfig(batch_size=32, patience=10)
    trial, (net, _) = run_trial(small_params(dropout=0.2, l2=1e-4), train, val, 4,
                                class_priors(train.y, 4), tc, epochs, seed)
    return trial, net


def test_a_fixed_seed_reproduces_training_exactly():
    X, y = learnable(192, 1)
    Xv, yv = learnable(64, 2)
    train, val = make_windows(X, y, "t"), make_windows(Xv, yv, "v")
    first, net1 = _trial(7, train, val)
    w1 = net1.get_weights()
    second, net2 = _trial(7, train, val)
    assert first == second
    for a, b in zip(w1, net2.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    _, net3 = _trial(8, train, val)
    assert any(not np.array_equal(a, b) for a, b in zip(w1, net3.get_weights(), strict=True))


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """The (start, length) of each run of True in a 1-D mask."""
    edges = np.flatnonzero(np.diff(np.concatenate([[0], mask.astype(np.int8), [0]])))
    return [(int(a), int(b - a)) for a, b in zip(edges[::2], edges[1::2], strict=True)]


def test_spec_augment_masks_one_run_of_bands_and_one_of_frames_within_the_bounds_and_nothing_else():
    from pipeline.ml.model import spec_augment

    rng = np.random.default_rng(0)
    X = rng.uniform(1.0, 2.0, size=(400, 59, 32, 1)).astype(np.float32)  # never equal to the fill
    before = X.copy()
    out = spec_augment(X, np.random.default_rng(5), 0.2, 0.17, np.array([0.0]))
    np.testing.assert_array_equal(X, before)  # a copy
    widths = {"bands": [], "frames": []}
    for x, o in zip(X[..., 0], out[..., 0], strict=True):
        hit = o != x
        assert (o[hit] == 0.0).all()
        bands = hit.all(axis=0)  # a band masked in every frame
        frames = hit.all(axis=1)
        assert (hit == (bands[None, :] | frames[:, None])).all(), "only whole bands and whole frames are masked"
        for name, m, most in (("bands", bands, 6), ("frames", frames, 10)):  # 0.2 x 32, 0.17 x 59
            runs = _runs(m)
            assert len(runs) <= 1 and all(n <= most for _, n in runs)
            widths[name].append(runs[0][1] if runs else 0)
    # Widths are drawn uniformly from 0 to the bound: over 400 windows each width is seen.
    assert set(widths["bands"]) == set(range(7)) and set(widths["frames"]) == set(range(11))
    again = spec_augment(X, np.random.default_rng(5), 0.2, 0.17, np.array([0.0]))
    np.testing.assert_array_equal(out, again)


def test_augment_setting_masks_time_frequency_features_only():
    from pipeline.ml.model import ModelParams, augment_for

    assert augment_for("auto", True) and not augment_for("auto", False)
    assert not augment_for("none", True)
    with pytest.raises(PipelineError, match="time-frequency block"):
        augment_for("specaugment", False)
    with pytest.raises(PipelineError, match=r"\[train\] augment"):
        augment_for("mixup", True)
    tc = TrainConfig()
    assert ModelParams.from_config(tc, time_frequency=True).augmented
    assert not ModelParams.from_config(tc, time_frequency=False).augmented


def test_an_augmented_fit_is_reproducible_and_the_masks_reach_training():
    """Masked anew each epoch, from the seed: the same seed gives the same losses and weights,
    and they differ from the same fit without masks."""
    from pipeline.ml import model as M

    rng = np.random.default_rng(3)
    y = np.arange(160) % 4
    X = rng.normal(0, 1, size=(160, 16, 8, 1)).astype(np.float32)
    X[np.arange(160), :, y * 2] += 2.0
    masked = small_params(kernel_size=3, head="time_max", mask_bands=0.25, mask_frames=0.25)

    def run(p):
        M.seed_everything(4)
        net = M.build_model(X.shape[1:], 4, p, X[:128], M.class_priors(y[:128], 4))
        h = M.fit(net, (X[:128], y[:128]), (X[128:], y[128:]), p, 3, 32, 5, "cosine")
        return h["history"], net.get_weights()

    (h1, w1), (h2, w2) = run(masked), run(masked)
    assert h1 == h2
    for a, b in zip(w1, w2, strict=True):
        np.testing.assert_array_equal(a, b)
    plain, _ = run(masked.replace(mask_bands=0.0, mask_frames=0.0))
    assert plain["loss"] != h1["loss"]
    assert len(h1["loss"]) == 3 and "val_loss" in h1


# Trains a small model (5 epochs on 192 windows) from seed 3 and prints the SHA-256 of its
# weights. "one-cpu": the process may use only one core (TensorFlow would size its pools to it).
TRAIN_AND_HASH = """
import hashlib, os, sys
if sys.argv[1] == "one-cpu":
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
import numpy as np
from pipeline.ml import model as M
rng = np.random.default_rng(1)
y = np.arange(256) % 4
X = rng.normal(0, 1, size=(256, 64, 3)).astype(np.float32)
X[np.arange(256), :, y % 3] += np.where(y < 3, 1.0, -1.0)[:, None]
M.seed_everything(3)
p = M.ModelParams(width=8, depth=2, kernel_size=5, dropout=0.2, l2=1e-4, learning_rate=3e-3)
net = M.build_model(X.shape[1:], 4, p, X, M.class_priors(y, 4))
M.fit(net, (X[:192], y[:192]), (X[192:], y[192:]), p, 5, 32, 5)
h = hashlib.sha256()
for w in net.get_weights():
    h.update(np.ascontiguousarray(w).tobytes())
print(h.hexdigest())
"""


def test_the_same_seed_gives_the_same_weights_bit_for_bit_whatever_the_cores_and_threads():
    """Two processes, one held to a single core (OpenMP too) and one with all of them, train
    the same model from one seed: the same weights, bit for bit. A third with TensorFlow on
    2 threads shows why the count is fixed: its sums split differently, its weights differ."""
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(root), "TF_CPP_MIN_LOG_LEVEL": "3"}
    env.pop("TINYML_TF_THREADS", None)
    runs = {
        "one core": (["one-cpu"], {"OMP_NUM_THREADS": "1"}),
        "all cores": (["all"], {}),
        "2 threads": (["all"], {"TINYML_TF_THREADS": "2"}),
    }
    procs = {name: subprocess.Popen([sys.executable, "-c", TRAIN_AND_HASH, *args], env={**env, **extra},
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for name, (args, extra) in runs.items()}
    digests = {}
    for name, proc in procs.items():
        out, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err[-2000:]
        digests[name] = out.strip().splitlines()[-1]
    assert digests["one core"] == digests["all cores"], digests
    if os.cpu_count() > 1:
        assert digests["2 threads"] != digests["one core"], (
            "TensorFlow gave the same weights with 1 and 2 threads: the fixed count is no longer needed")


def test_normalization_statistics_ignore_validation_data():
    """Validation values a thousand times larger must not move the model's input statistics."""
    from pipeline.ml.model import normalization_stats

    X, y = learnable(128, 3)
    Xv, yv = learnable(64, 4)
    train, val = make_windows(X, y, "t"), make_windows(Xv * 1000 + 5000, yv, "v")
    _, net = _trial(0, train, val, epochs=1)
    stats = normalization_stats(net)
    np.testing.assert_allclose(stats["mean"], X.mean(axis=(0, 1)), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(stats["variance"], X.var(axis=(0, 1)), rtol=1e-3)
    pooled = np.concatenate([X, val.X]).mean(axis=(0, 1))
    assert np.all(np.abs(np.array(stats["mean"]) - pooled) > 100)


# --------------------------------------------------------------------------- search


def test_search_candidates_start_with_the_config_and_stay_in_bounds_and_budget():
    from pipeline.ml.model import ModelParams, count_params
    from pipeline.train.search import candidates

    tc = TrainConfig(trials=6, max_params=3000)
    base = ModelParams.from_config(tc)
    first = candidates(tc, base, (64, 3), 4, seed=5)
    assert first == candidates(tc, base, (64, 3), 4, seed=5)
    assert first != candidates(tc, base, (64, 3), 4, seed=6)
    assert first[0] == base and len(set(first)) == 6
    sp = tc.search_space
    for p in first[1:]:
        assert sp.lr_min <= p.learning_rate <= sp.lr_max
        assert sp.width_min <= p.width <= sp.width_max
        assert sp.depth_min <= p.depth <= sp.depth_max
        assert p.kernel_size % 2 == 1 and sp.kernel_min <= p.kernel_size <= sp.kernel_max
        assert 0 <= p.dropout <= sp.dropout_max and sp.l2_min <= p.l2 <= sp.l2_max * 1.05
        assert count_params((64, 3), 4, p) <= 3000


@pytest.mark.parametrize("changes,field", [
    ({"width_min": 10, "width_max": 4}, "width_min/width_max"),
    ({"lr_min": 0.0}, "lr_min/lr_max"),
    ({"dropout_max": 1.0}, "dropout_max"),
])
def test_search_space_rejects_bad_bounds_naming_the_field(changes, field):
    from pipeline.core.config import SearchSpace
    from pipeline.train.search import search_space

    with pytest.raises(PipelineError, match=f"\\[train.search_space\\] {field}"):
        search_space(TrainConfig(search_space=SearchSpace(**changes)))


def test_an_impossible_parameter_budget_is_a_clear_error():
    from pipeline.ml.model import ModelParams
    from pipeline.train.search import candidates

    tc = TrainConfig(trials=2, max_params=10)
    with pytest.raises(PipelineError, match=r"\[train\] max_params 10"):
        candidates(tc, ModelParams.from_config(tc), (64, 3), 4, seed=0)
