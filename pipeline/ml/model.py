"""The float convnet: builder, seeding, fitting, and Karpathy's checks at init.

A few conv blocks (kernel counts doubling block to block), ReLU, max pooling, optional
depthwise-separable convolutions, dropout and L2, a head (global average pooling, or for
time-frequency features the maximum over time of each frequency row: ``HEADS``) and a
dense softmax. Only layers whose int8 conversion TFLM runs. Input normalization is the first
layer, with statistics from the training windows only, so the device gets raw sensor values.

Keras is imported inside the functions: importing this module is cheap.
"""

from __future__ import annotations

import dataclasses
import math
import random
from dataclasses import dataclass

import numpy as np

from pipeline.core.errors import GateFailed, PipelineError
from pipeline.core.progress import import_tensorflow
from pipeline.tflite.runtime import InputNormalization

# A 1-D input longer than this many steps (1 s of 16 kHz audio is 16,000) is downsampled by the
# first convolution itself: a stride that brings it to at most this many steps and a kernel of
# twice the stride, so every input sample is seen (a learned, anti-aliased filter bank).
# Unstrided, the first block's activations alone (16,000 x 6 int8) and its MACs would dwarf
# everything else; 512 steps keep the 2 s motion windows (125 steps) untouched.
FRONT_END_MAX_STEPS = 512


def front_end_stride(length: int) -> int:
    """Stride of the first convolution for a 1-D input of ``length`` steps (1: none)."""
    return max(1, math.ceil(length / FRONT_END_MAX_STEPS))


# Probabilities are clipped here before a log: a class missing from the training split
# must not make the bias or a loss infinite.
MIN_PROB = 1e-6


# The heads between the conv blocks and the softmax.
# - "gap": the mean over every position of each kernel's output (windows, images).
# - "time_max": for time-frequency features (frames x bands, the mfe / mfcc / spectrogram
#   blocks), each kernel's maximum over time in each frequency row, flattened: where in the
#   window the word is does not matter, which band it is in does. Measured on fsdd (one
#   speaker held out, the other five trained on; MFE -84 dB over 605 ms; three 3x3 conv blocks
#   of 8, 16, 32 kernels; 40 epochs): held-out lucas, whose digits start 136 ms in (median,
#   against 5-30 ms for the others), scored 0.678 with "gap", 0.504 with a plain flattened
#   head and 0.834 with "time_max"; george 0.736, 0.642 and 0.728.
HEADS = ("gap", "time_max")


def head_for(setting: str, time_frequency: bool) -> str:
    """``[train] head``: "auto" is "time_max" on time-frequency features, else "gap"."""
    if setting == "auto":
        return "time_max" if time_frequency else "gap"
    if setting not in HEADS:
        raise PipelineError(f"[train] head: expected one of auto, {', '.join(HEADS)}, got {setting!r}")
    return setting


AUGMENTS = ("none", "specaugment")


def augment_for(setting: str, time_frequency: bool) -> bool:
    """``[train] augment``: whether training masks bands and frames (SpecAugment). "auto": on
    time-frequency features (mfe, mfcc, spectrogram) only; masks mean nothing on a raw window
    or a vector of spectral features."""
    if setting == "auto":
        return time_frequency
    if setting not in AUGMENTS:
        raise PipelineError(f"[train] augment: expected one of auto, {', '.join(AUGMENTS)}, got {setting!r}")
    if setting == "specaugment" and not time_frequency:
        raise PipelineError('[train] augment = "specaugment" masks bands and frames: it needs a '
                            'time-frequency block ([dsp] block = "mfe", "mfcc" or "spectrogram")')
    return setting == "specaugment"


def spec_augment(X: np.ndarray, rng: np.random.Generator, mask_bands: float, mask_frames: float,
                 fill: np.ndarray) -> np.ndarray:
    """SpecAugment's masks (Park et al. 2019, "SpecAugment: a simple data augmentation method
    for automatic speech recognition", without the time warp): in each window of ``X``
    (windows, frames, bands, channels), one run of 0 to ``mask_bands`` x bands bands and one
    run of 0 to ``mask_frames`` x frames frames, each at a uniform place, set to ``fill``
    (the training split's mean per channel: what the model's normalization maps to zero).
    A copy; ``X`` is not changed."""
    n, frames, bands = X.shape[:3]
    hit = np.zeros((n, frames, bands), dtype=bool)
    for axis, size, share in ((2, bands, mask_bands), (1, frames, mask_frames)):
        width = rng.integers(0, int(share * size) + 1, n)
        start = (rng.random(n) * (size - width + 1)).astype(np.int64)
        pos = np.arange(size)
        run = (pos >= start[:, None]) & (pos < (start + width)[:, None])
        hit |= run[:, None, :] if axis == 2 else run[:, :, None]
    return np.where(hit[..., None], np.asarray(fill, dtype=X.dtype), X)


def augmented_batches(X: np.ndarray, y: np.ndarray, params: ModelParams, batch_size: int):
    """The training windows for ``model.fit``, shuffled and masked anew every epoch. Each
    batch is a function of (seed, epoch, batch) only, the seed drawn from NumPy's global
    generator (``seed_everything``), so a fit is reproducible to the bit like one on arrays."""
    import keras

    seed = int(np.random.randint(2**31 - 1))
    fill = np.asarray(X, dtype=np.float64).reshape(-1, X.shape[-1]).mean(axis=0)

    class Batches(keras.utils.PyDataset):
        def __init__(self):
            super().__init__()
            self.epoch = 0
            self.order = np.random.default_rng([seed, 0]).permutation(len(X))

        @property
        def num_batches(self):
            return math.ceil(len(X) / batch_size)

        def __len__(self):
            return self.num_batches

        def __getitem__(self, i):
            idx = self.order[i * batch_size:(i + 1) * batch_size]
            rng = np.random.default_rng([seed, self.epoch, i + 1])
            return spec_augment(X[idx], rng, params.mask_bands, params.mask_frames, fill), y[idx]

        def on_epoch_end(self):
            self.epoch += 1
            self.order = np.random.default_rng([seed, self.epoch]).permutation(len(X))

    return Batches()


# The configured kernel ([train] kernel_size = "auto"): 7 steps on windows (a 2 s motion window
# at 62.5 Hz: 112 ms) and images; 3x3 on time-frequency features, as the keyword-spotting
# convnets (MLPerf Tiny's DS-CNN, Edge Impulse's audio models) have. On fsdd's MFE (59 x 32,
# noise floor -90 dB), the configured model (width 6, depth 3, 40 epochs) with 7x7 kernels
# scored 0.582 on the validation speaker and costs 103.4 ms on the Nano 33; with 3x3, 0.754
# and 27.6 ms.
KERNEL_AUTO = {False: 7, True: 3}


@dataclass(frozen=True)
class ModelParams:
    """What the random search varies, plus ``separable`` (a builder option)."""

    learning_rate: float = 3e-4
    width: int = 8
    depth: int = 2
    kernel_size: int = 5
    dropout: float = 0.1
    l2: float = 1e-4
    separable: bool = False
    head: str = "gap"
    mask_bands: float = 0.0
    mask_frames: float = 0.0

    @classmethod
    def from_config(cls, tc, time_frequency: bool = False) -> ModelParams:
        """The configured model; ``time_frequency``: the input is a block's frames x bands."""
        kernel = KERNEL_AUTO[time_frequency] if tc.kernel_size == "auto" else tc.kernel_size
        masks = augment_for(tc.augment, time_frequency)
        return cls(learning_rate=tc.learning_rate, width=tc.width, depth=tc.depth,
                   kernel_size=kernel, dropout=tc.dropout, l2=tc.l2, separable=tc.separable,
                   head=head_for(tc.head, time_frequency),
                   mask_bands=tc.mask_bands if masks else 0.0, mask_frames=tc.mask_frames if masks else 0.0)

    @property
    def augmented(self) -> bool:
        return self.mask_bands > 0 or self.mask_frames > 0

    def replace(self, **changes) -> ModelParams:
        return dataclasses.replace(self, **changes)

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def seed_everything(seed: int) -> None:
    """Same seed, same weights, bit for bit: Python, NumPy and TensorFlow (Keras) seeded,
    TensorFlow's deterministic ops, and its thread pools at a fixed size whatever the
    machine (``pipeline.core.progress.TF_THREADS``: sums split over another thread count
    round differently). What that costs in speed is measured by bench/bench_train.py."""
    import keras

    tf = import_tensorflow()  # fixes the thread count, or says why it cannot
    random.seed(seed)
    np.random.seed(seed)
    keras.utils.set_random_seed(seed)  # Python, NumPy and the backend's seeds
    tf.config.experimental.enable_op_determinism()


def class_priors(y: np.ndarray, n_classes: int) -> np.ndarray:
    counts = np.bincount(np.asarray(y, dtype=np.int64), minlength=n_classes).astype(np.float64)
    return np.clip(counts / counts.sum(), MIN_PROB, None)


def prior_entropy(priors: np.ndarray) -> float:
    """The loss of a model that predicts the class prior: what the loss at init should be."""
    p = np.asarray(priors, dtype=np.float64)
    p = p / p.sum()
    return float(-(p * np.log(p)).sum())


def build_model(input_shape: tuple, n_classes: int, params: ModelParams,
                train_X: np.ndarray | None = None, priors: np.ndarray | None = None):
    """A small convnet for (L, C) windows or (H, W, C) images.

    ``train_X`` (training windows only) sets the normalization statistics; ``priors`` the
    final bias (log class priors, so the loss at init is the entropy of the prior).
    Without them the model has the right shape and parameter count, for budgeting.
    """
    import keras
    from keras import layers

    input_shape = tuple(int(d) for d in input_shape)
    if len(input_shape) not in (2, 3):
        raise PipelineError(f"model input: expected (L, C) or (H, W, C), got {input_shape}")
    if len(input_shape) == 3:
        full, separable = layers.Conv2D, layers.SeparableConv2D
        pool, gap = layers.MaxPooling2D, layers.GlobalAveragePooling2D
    else:
        full, separable = layers.Conv1D, layers.SeparableConv1D
        pool, gap = layers.MaxPooling1D, layers.GlobalAveragePooling1D
    reg = keras.regularizers.L2(params.l2) if params.l2 > 0 else None

    inputs = keras.Input(input_shape, name="window")
    if train_X is not None:
        norm = layers.Normalization(axis=-1, name="normalize")
        norm.adapt(np.asarray(train_X, dtype=np.float32))
    else:
        channels = input_shape[-1]
        norm = layers.Normalization(axis=-1, mean=np.zeros(channels), variance=np.ones(channels),
                                    name="normalize")
    x = norm(inputs)
    spatial = list(input_shape[:-1])
    for block in range(params.depth):
        filters = params.width * 2**block
        k = max(1, min(params.kernel_size, *spatial))
        # The first block sees the raw channels: a depthwise-separable conv there saves
        # little and loses capacity, so it is always a full convolution.
        stride = front_end_stride(spatial[0]) if block == 0 and len(input_shape) == 2 else 1
        if params.separable and block > 0:
            conv = separable(filters, k, padding="same", name=f"conv{block + 1}",
                             depthwise_regularizer=reg, pointwise_regularizer=reg)
        elif stride > 1:
            conv = full(filters, 2 * stride, strides=stride, padding="same", name=f"conv{block + 1}",
                        kernel_regularizer=reg)
            spatial = [math.ceil(spatial[0] / stride)]
        else:
            conv = full(filters, k, padding="same", name=f"conv{block + 1}", kernel_regularizer=reg)
        x = layers.ReLU(name=f"relu{block + 1}")(conv(x))
        # Pool between blocks while there is room (an 8x8 image runs out after two).
        if block < params.depth - 1 and min(spatial) >= 4:
            x = pool(2, name=f"pool{block + 1}")(x)
            spatial = [s // 2 for s in spatial]
    if params.head == "time_max" and len(input_shape) == 3:
        # Flattened, it converts to RESHAPE behind SHAPE / STRIDED_SLICE / PACK of its shape,
        # which the compiler folds (firmware_bridge/compiler/reader.py FOLDED_OPS).
        x = layers.Flatten(name="flatten")(layers.MaxPooling2D((spatial[0], 1), name="time_max")(x))
    else:
        x = gap(name="gap")(x)
    if params.dropout > 0:
        x = layers.Dropout(params.dropout, name="dropout")(x)
    bias = np.log(priors) if priors is not None else np.zeros(n_classes)
    outputs = layers.Dense(
        n_classes, activation="softmax", name="classes", kernel_regularizer=reg,
        # Small final weights: at init the output is the prior, whatever the features.
        kernel_initializer=keras.initializers.RandomNormal(stddev=1e-3),
        bias_initializer=keras.initializers.Constant(bias),
    )(x)
    return keras.Model(inputs, outputs, name="convnet")


def count_params(input_shape: tuple, n_classes: int, params: ModelParams) -> int:
    import keras

    model = build_model(input_shape, n_classes, params)
    n = model.count_params()
    del model
    keras.backend.clear_session(free_memory=False)
    return int(n)


def cosine(learning_rate: float, epochs: int, n: int, batch_size: int):
    """Adam's learning rate decayed to zero over ``epochs`` of ``n`` windows (cosine)."""
    import keras

    return keras.optimizers.schedules.CosineDecay(learning_rate, decay_steps=max(1, epochs * math.ceil(n / batch_size)))


# Batches per call into TensorFlow's compiled step: the same updates in the same order (the
# losses of every epoch are identical to the bit), without Python's per-batch overhead,
# which is most of a small model's step. The default model, batch 32, one thread, a quiet
# 2-core machine, windows of random values shaped as the real inputs, with validation:
# 25 epochs on motion's spectral shape (2,096 x 1 x 33): 6.0-7.9 s one batch per call,
# 4.5-5.6 s with 16, 5.3-5.6 s with 64; 8 epochs on raw windows (2,096 x 125 x 3):
# 2.9-3.8 s against 3.1-3.4 s (no gain); 8 epochs on fsdd's MFE shape (1,900 x 59 x 32)
# with masks: 6.5 s against 5.7 s (docs/development.md).
STEPS_PER_EXECUTION = 16


def fit(model, train: tuple, val: tuple | None, params: ModelParams, epochs: int, batch_size: int,
        patience: int, schedule: str = "constant", on_epoch=None, decay_epochs: int | None = None) -> dict:
    """Adam. A constant rate: early stopping on validation loss, restoring the best weights
    (without ``val``, no early stopping).
    Cosine: the rate decays to zero over ``decay_epochs`` (default ``epochs``) and the fit
    runs them all, keeping the last weights: on fsdd with early stopping the validation
    loss was lowest at epoch 7, long before the decay had done its work, and the
    leave-one-speaker-out folds, trained for those 7 epochs, scored 0.809 (docs/train.md).

    With ``params.mask_bands`` or ``mask_frames``, the training windows are masked anew
    every epoch (``spec_augment``); validation windows never are.

    Returns the per-epoch history and the epoch whose weights were kept.
    """
    import keras

    X, y = train
    lr = params.learning_rate  # [train] lr_schedule: cosine by default (decided on fsdd: core/config.py)
    if schedule == "cosine":
        lr = cosine(lr, decay_epochs or epochs, len(X), batch_size)
    model.compile(optimizer=keras.optimizers.Adam(lr), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"], steps_per_execution=STEPS_PER_EXECUTION)
    callbacks = [] if schedule == "cosine" or val is None else [
        keras.callbacks.EarlyStopping(monitor="val_loss", patience=patience, restore_best_weights=True)]
    if on_epoch is not None:
        callbacks.append(keras.callbacks.LambdaCallback(on_epoch_end=lambda e, logs: on_epoch(e)))
    if params.augmented:
        data = {"x": augmented_batches(np.asarray(X, dtype=np.float32), np.asarray(y), params, batch_size)}
    else:
        data = {"x": X, "y": y, "batch_size": batch_size, "shuffle": True}
    hist = model.fit(**data, validation_data=val, epochs=epochs, validation_batch_size=512,
                     callbacks=callbacks, verbose=0)
    history = {k: [float(v) for v in vals] for k, vals in hist.history.items()}
    val_loss = history.get("val_loss", [])
    ran = len(history.get("loss", []))
    best_epoch = ran if schedule == "cosine" or not val_loss else int(np.argmin(val_loss)) + 1
    return {"history": history, "epochs_run": ran, "best_epoch": best_epoch}


def predict_proba(model, X: np.ndarray) -> np.ndarray:
    return np.asarray(model.predict(np.asarray(X, dtype=np.float32), batch_size=512, verbose=0))


def cross_entropy(proba: np.ndarray, y: np.ndarray) -> float:
    """Mean -log p(true class): the data term of the loss, without regularization."""
    p = np.clip(proba[np.arange(len(y)), np.asarray(y, dtype=np.int64)], MIN_PROB, 1.0)
    return float(-np.log(p).mean())


def check_init_loss(model, X: np.ndarray, y: np.ndarray, priors: np.ndarray,
                    tolerance: float, record: dict | None = None) -> dict:
    """The loss at init must be the entropy of the class prior (ln K when balanced).

    The result also goes into ``record`` before a failure is raised, so a report keeps it.
    """
    loss = cross_entropy(predict_proba(model, X), y)
    expected = prior_entropy(priors)
    ok = bool(abs(loss - expected) <= tolerance)
    result = {"init_loss": loss, "expected_init_loss": expected, "init_loss_tolerance": tolerance,
              "init_loss_ok": ok}
    if record is not None:
        record.update(result)
    if not ok:
        raise GateFailed(
            f"loss at init {loss:.2f} is far from the expected {expected:.2f} (entropy of the "
            f"class prior, tolerance {tolerance}): check the final layer's bias and the labels",
            hint="the final bias should be the log class priors and the final weights small",
        )
    return result


def pick_batch(y: np.ndarray, size: int, seed: int) -> np.ndarray:
    """``size`` indices covering every class present, the rest at random."""
    rng = np.random.default_rng(seed)
    y = np.asarray(y)
    size = min(size, len(y))
    first = [rng.choice(np.flatnonzero(y == c)) for c in np.unique(y)][:size]
    rest = rng.permutation(np.setdiff1d(np.arange(len(y)), first))[: size - len(first)]
    return np.sort(np.concatenate([first, rest]).astype(np.int64))


OVERFIT_CHECK_EVERY = 25


def overfit_one_batch(input_shape: tuple, n_classes: int, params: ModelParams, X: np.ndarray,
                      y: np.ndarray, steps: int, max_loss: float, seed: int,
                      learning_rate: float = 1e-2, record: dict | None = None) -> dict:
    """Train on one small batch, without dropout or L2: the loss must reach near zero.

    If it cannot, the model or the data pipeline is broken (or too small to learn anything).
    A higher learning rate than for training: this checks capacity, not generalization.
    The result also goes into ``record`` before a failure is raised.
    """
    import keras

    seed_everything(seed)
    probe = params.replace(dropout=0.0, l2=0.0)
    model = build_model(input_shape, n_classes, probe, train_X=X,
                        priors=class_priors(y, n_classes))
    model.compile(optimizer=keras.optimizers.Adam(learning_rate),
                  loss="sparse_categorical_crossentropy")
    X = np.asarray(X, dtype=np.float32)
    y = np.asarray(y, dtype=np.int64)
    # Up to ``steps`` steps, stopping as soon as the loss is below ``max_loss`` (checked every
    # OVERFIT_CHECK_EVERY steps). Measured (seed 0, batch 16, lr 1e-2, default model): motion
    # and ei-nano33-fall get below 0.05 by step 50; fsdd (raw 8 kHz audio, 2,738 steps, 10
    # classes) only by step 175 (loss 0.066 at 150, 0.0023 at 400). The cap of 400 gives the
    # slowest real input we have more than twice what it needs; the early stop keeps the
    # check as cheap as before where the batch is easy.
    used, loss = 0, float("inf")
    while used < steps:
        chunk = min(OVERFIT_CHECK_EVERY, steps - used)
        for _ in range(chunk):
            model.train_on_batch(X, y)
        used += chunk
        loss = cross_entropy(predict_proba(model, X), y)
        if loss < max_loss:
            break
    ok = bool(loss < max_loss)
    del model
    keras.backend.clear_session(free_memory=False)
    result = {"overfit_batch_size": int(len(y)), "overfit_steps": steps, "overfit_steps_used": used,
              "overfit_learning_rate": learning_rate, "overfit_batch_loss": loss,
              "overfit_max_loss": max_loss, "overfit_ok": ok}
    if record is not None:
        record.update(result)
    if not ok:
        raise GateFailed(
            f"could not overfit one batch of {len(y)} windows: loss {loss:.3g} after {steps} "
            f"steps (expected < {max_loss}): the model or the labels are broken",
            hint="check that inputs and labels line up, and that the model is not too small "
                 "([train] width, depth)",
        )
    return result


def normalization_stats(model) -> dict:
    """Mean and variance per channel of the model's input normalization."""
    layer = model.get_layer("normalize")
    return {"mean": np.asarray(layer.mean).reshape(-1).tolist(),
            "variance": np.asarray(layer.variance).reshape(-1).tolist()}


def describe(model) -> list[dict]:
    """One entry per layer: name, type, output shape, parameter count."""
    out = []
    for layer in model.layers:
        shape = getattr(layer, "output", None)
        out.append({"name": layer.name, "type": type(layer).__name__,
                    "output_shape": list(shape.shape[1:]) if shape is not None else None,
                    "params": int(layer.count_params())})
    return out


def input_normalization(model):
    """The model's ``normalize`` layer as the float step a device can run before the int8
    graph (``pipeline.tflite.runtime.InputNormalization``), or None when the model has no such layer.
    Keras computes ``(x - mean) / max(sqrt(variance), epsilon)``; the device multiplies by
    the float32 reciprocal, which differs from the division by at most 1 ulp."""
    import keras

    try:
        layer = model.get_layer("normalize")
    except ValueError:
        return None
    mean = np.asarray(layer.mean, np.float64).reshape(-1)
    std = np.maximum(np.sqrt(np.asarray(layer.variance, np.float64).reshape(-1)), keras.backend.epsilon())
    return InputNormalization(tuple(float(np.float32(m)) for m in mean),
                              tuple(float(np.float32(1.0 / s)) for s in std))


def without_normalization(model):
    """The same model with its ``normalize`` layer replaced by the identity (weights shared):
    the graph that takes normalized inputs, for a device that normalizes in float."""
    import keras

    def clone(layer):
        if layer.name == "normalize":
            return keras.layers.Identity(name="normalize")
        return layer

    return keras.models.clone_model(model, clone_function=clone)
