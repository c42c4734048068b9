"""Remedies for an int8 model that misses an accuracy gate, tried in order (``LADDER``);
the first that meets every gate is kept, and what each gave is in the report ("remedies").
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.core.artifacts import sha256_bytes
from pipeline.ml.model import input_normalization, without_normalization
from pipeline.quantize.gates import Outputs
from pipeline.tflite.convert import convert_int8
from pipeline.tflite.flatbuffer import ModelInfo
from pipeline.tflite.runtime import InputNormalization, normalize_input, with_input_normalization

REMEDIES = {
    "graph": "normalization inside the int8 graph: the device quantizes raw sensor values",
    "device": "normalization as a float step on the device before the int8 graph (as Edge "
              "Impulse's DSP runs in float); its constants are in int8.tflite's metadata",
    "device_trim": "device normalization, and activation ranges calibrated without the training "
                   "windows whose float logits are the most extreme (above the 90th percentile "
                   "of their largest |logit|): a few very confident windows otherwise set the scale of "
                   "the logits, and borderline windows flip; the windows left out are clamped on the device",
}
LADDER = tuple(REMEDIES)
# Share of training windows device_trim leaves out of calibration, by largest |logit|.
# Measured on the accelerometer + gyroscope generator (tests/sensor_data.py), where the
# logits of saturated shakes reach -885 and their int8 step is 4 logit units: leaving out
# 1% / 5% / 10% gave float/int8 agreement 0.984 / 0.988 / 0.992 and a balanced-accuracy
# change of -1.6 / -1.2 / -0.8 points (0.973 and -2.7 with none left out).
TRIM_SHARE = 0.10


class NotApplicable(Exception):
    """A remedy this model cannot take (e.g. device normalization without a normalize layer)."""


@dataclass
class Candidate:
    """One int8 conversion and everything measured about it on the validation windows."""

    remedy: str
    data: bytes
    seconds: float
    norm: InputNormalization | None
    info: ModelInfo
    arena: object  # ArenaMeasurement
    arena_bytes: int
    outs: Outputs
    val: dict

    @property
    def passed(self) -> bool:
        return all(g["passed"] for g in self.val["gates"].values())

    def summary(self) -> dict:
        v = self.val
        d = v["delta_int8_minus_float"]["balanced_accuracy"]
        return {
            "remedy": self.remedy, "what": REMEDIES.get(self.remedy, self.remedy),
            "float_int8_agreement": v["agreement"]["float_int8"],
            "balanced_accuracy_delta": d["delta"], "balanced_accuracy_delta_ci95": d["ci95"],
            "balanced_accuracy_delta_uncertainty": d.get("uncertainty"),
            "litert_tflm_agreement": v["litert_vs_tflm"]["reference_kernels"]["top1_agreement"],
            "input_clipping_windows_share": v["input_clipping"]["windows_share"],
            "gates_passed": self.passed, "model_sha256": sha256_bytes(self.data),
        }


def convert_remedy(remedy: str, model, calib_x: np.ndarray, q, layer_types: dict[str, str]
                   ) -> tuple[bytes, float, InputNormalization | None]:
    """The int8 model of one remedy: (bytes, seconds, the device's float input step or None)."""
    if remedy == "graph":
        data, seconds = convert_int8(model, calib_x, q.per_channel, layer_types)
        return data, seconds, None
    norm = input_normalization(model)
    if norm is None:
        raise NotApplicable("the model has no 'normalize' layer")
    if remedy == "device_trim":
        calib_x = calib_x[~most_extreme_logits(model, calib_x, TRIM_SHARE)]
    xs = normalize_input(calib_x, norm)
    data, seconds = convert_int8(without_normalization(model), xs, q.per_channel, layer_types)
    return with_input_normalization(data, norm), seconds, norm


def most_extreme_logits(model, x: np.ndarray, share: float) -> np.ndarray:
    """Mask of the windows (about ``share`` of them) whose float logits reach the largest
    magnitude. The logits are the input of the final softmax Dense layer times its weights."""
    import keras

    head = model.layers[-1]
    if type(head).__name__ != "Dense" or getattr(head.activation, "__name__", "") != "softmax":
        raise NotApplicable("the model does not end in a softmax Dense layer")
    features = keras.Model(model.inputs, head.input).predict(np.asarray(x, np.float32), batch_size=256, verbose=0)
    w, b = head.get_weights()
    span = np.abs(features.reshape(len(x), -1) @ w + b).max(axis=1)
    return span > np.quantile(span, 1.0 - share)
