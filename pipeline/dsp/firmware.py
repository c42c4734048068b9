"""The ``[dsp]`` block as the firmware runs it: the fields of ``dsp_settings.h``
(pipeline/tflite/export.py DspSettings, which the quantize stage writes), with the same ``tm_dsp_params`` the host library computed the training features with, the
scratch the device must hold, and the instructions one window costs on the Cortex-M4
(measured on QEMU by pipeline/dsp/cost.py; 0 when the tools are missing)."""

from __future__ import annotations

import ctypes

from pipeline.core.errors import PipelineError
from pipeline.dsp import binding, blocks, cost


def settings(dsp, rate_hz: float | None, window_shape: tuple, model_input_size: int) -> dict:
    """The DspSettings fields (a dict) of the run's block for raw windows of ``window_shape`` (steps, channels)."""
    block = dsp.block
    blocks.unresolved(block)
    if block == "raw":
        return {"block": "raw", "fields": []}
    if len(window_shape) != 2 or not rate_hz:
        raise PipelineError(f"[dsp] block = {block!r}: the device's DSP needs time-series windows with a rate, "
                            f"got windows of shape {tuple(window_shape)} at {rate_hz!r} Hz")
    p = blocks.params(dsp, rate_hz, window_shape[0], window_shape[1], block)
    rows, cols = binding.shape(p)
    if rows * cols != model_input_size:
        raise PipelineError(f"[dsp] block = {block!r}: gives {rows} x {cols} features per window, the model takes "
                            f"{model_input_size}", hint="retrain: the [dsp] settings changed since the model was trained")
    measured = cost.measure([p])
    fields = [(name, getattr(p, name), ctype is ctypes.c_float) for name, ctype in binding.Params._fields_]
    return {"block": block, "fields": fields, "in_len": int(window_shape[0]), "channels": int(window_shape[1]),
            "scratch_floats": max(1, int(binding.library().tm_dsp_scratch_floats(ctypes.byref(p)))),
            "output_floats": rows * cols, "instructions": int(measured[0]["instructions"]) if measured else 0}
