"""Keras -> full-int8 TFLite: the one conversion the quantize stage and the search's
device-cost estimate share (int8 weights, activations, input and output).

TensorFlow is imported inside ``convert_int8``: importing this module is cheap.
"""

from __future__ import annotations

import contextlib
import io
import re
import time
import warnings

import numpy as np

from pipeline.core.errors import GateFailed
from pipeline.core.progress import quiet_native_stderr
from pipeline.tflite.flatbuffer import layer_of, widen_logit_range

# Headroom above the calibrated maximum of the logits (the input of the final SOFTMAX), as
# a share of their calibrated range. Windows not seen in calibration can have a larger top
# logit; clamped at the maximum, the top two classes tie and the first index wins. Seen on
# the 8x8 digits: every one of the 4 windows int8 changed was such a tie (float 0.89 vs
# 0.11), logits calibrated to [-38.5, 4.8]; headroom 0.1, 0.25 or 0.5 took float/int8
# agreement from 0.989 to 0.997. The cost: a logit step 1.25x as coarse.
LOGIT_HEADROOM = 0.25


def convert_int8(model, calibration_x: np.ndarray, per_channel: bool = True,
                 layer_types: dict[str, str] | None = None,
                 logit_headroom: float = LOGIT_HEADROOM) -> tuple[bytes, float]:
    """Full-integer TFLite (int8 weights, activations, input and output) and the seconds it took.

    Calibrated in two steps, as TFLite's own quantization debugger does (calibrate only,
    then ``mlir_quantize``), so that the logits' calibrated range can get its headroom."""
    import tensorflow as tf
    from tensorflow.lite.python import convert as tf_convert

    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    xs = np.asarray(calibration_x, dtype=np.float32)
    conv.representative_dataset = lambda: ([x[None]] for x in xs)
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = tf.int8
    conv.inference_output_type = tf.int8
    if not per_channel:
        conv._experimental_disable_per_channel = True
    conv._experimental_calibrate_only = logit_headroom > 0
    start = time.perf_counter()
    try:
        # The converter prints its SavedModel export and warns about input statistics it
        # does not need (inputs are quantized from the calibration data): keep that quiet.
        with quiet_native_stderr(), contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            data = conv.convert()
            if logit_headroom > 0:
                data = tf_convert.mlir_quantize(widen_logit_range(bytes(data), logit_headroom),
                                                disable_per_channel=not per_channel,
                                                input_data_type=tf.int8, output_data_type=tf.int8)
    except Exception as exc:  # ConverterError and friends
        raise conversion_failed(exc, layer_types or {}) from exc
    return bytes(data), time.perf_counter() - start


def conversion_failed(exc: Exception, layer_types: dict[str, str]) -> GateFailed:
    """The converter's error as one line naming the op(s) and the Keras layer(s) they came from."""
    text = str(exc)
    ops = sorted(set(re.findall(r"'tf\.(\w+)' op", text)))
    layers: list[str] = []
    for path in re.findall(r'"([^"@]+)@__inference', text):
        layer = layer_of(path, layer_types)
        if layer and layer not in layers:
            layers.append(layer)
    if not ops and not layers:
        first = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
        return GateFailed(f"float.keras: int8 conversion failed: {first[:300]}")
    where = ", ".join(f"{name!r} ({layer_types.get(name, '?')})" for name in layers) or "an unknown layer"
    return GateFailed(
        f"float.keras: op(s) {', '.join(ops) or '?'} from layer {where} have no int8 TFLite "
        "builtin, so TFLM cannot run them",
        hint="replace that layer with one that converts to TFLM builtins (e.g. Conv1D instead of a recurrent layer)",
    )
