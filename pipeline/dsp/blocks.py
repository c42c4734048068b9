"""The ``[dsp]`` block applied to a split's windows: what the model reads.

``featurize(prepared, cfg)`` gives the Prepared value with every split's windows replaced by
the block's features (the raw windows stay in ``prepared.dataset``); "raw" returns it as it
is. Features are (frames, values, 1) for mfe, mfcc and spectrogram: an image the model's 2-D
convolutions read (on fsdd, one speaker held out, a 2-D convnet on MFCCs scored 0.64
balanced accuracy against 0.27 for the same width reading frames as time and coefficients
as channels), and (1, axes x features) for spectral (a dense network over the features).
"auto" is resolved by the train stage (pipeline/dsp/auto.py); the run's config.toml holds
the block chosen.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from pipeline.core.errors import PipelineError
from pipeline.dsp import binding

# Edge Impulse's defaults where one key serves blocks with different defaults
# (processing-blocks: spectral-analysis, mfe, mfcc, spectrogram parameters.json).
FFT_DEFAULT = {"spectral": 16, "mfe": 256, "mfcc": 256, "spectrogram": 128}
STRIDE_DEFAULT = {"mfe": 0.01, "mfcc": 0.02, "spectrogram": 0.01}
KEYS = {
    "raw": (),
    "spectral": ("scale_axes", "filter_type", "filter_cutoff", "filter_order", "fft_length", "do_log", "do_fft_overlap"),
    "mfe": ("frame_length", "frame_stride", "fft_length", "num_filters", "low_frequency", "high_frequency",
            "noise_floor_db", "pre_cof", "gain"),
    "mfcc": ("frame_length", "frame_stride", "fft_length", "num_filters", "low_frequency", "high_frequency",
             "num_cepstral", "pre_cof", "lifter", "gain"),
    "spectrogram": ("frame_length", "frame_stride", "fft_length", "noise_floor_db", "gain"),
}


IMAGE_BLOCKS = ("mfe", "mfcc", "spectrogram")
# The parameters that tell one candidate of a block from another (the summary and the report).
MAIN_KEYS = ("fft_length", "noise_floor_db", "num_filters", "num_cepstral", "gain")


def main_parameters(parameters: dict) -> str:
    """"fft_length 256, noise_floor_db -52, ..., gain peak": the MAIN_KEYS a block has."""
    return ", ".join(f"{k} {v:g}" if isinstance(v, (int, float)) else f"{k} {v}"
                     for k, v in parameters.items() if k in MAIN_KEYS)


def unresolved(block: str) -> None:
    if block == "auto":
        raise PipelineError('[dsp] block = "auto" is chosen by the train stage; this run has no block chosen',
                            hint="run `tinyml train` first: it writes the block chosen into the run's config.toml")


def resolved(dsp, block: str | None = None) -> dict:
    """The block's parameters with "auto" replaced by the block's default."""
    block = block or dsp.block
    values = {k: getattr(dsp, k) for k in KEYS[block]}
    if values.get("fft_length") == "auto":
        values["fft_length"] = FFT_DEFAULT[block]
    if values.get("frame_stride") == "auto":
        values["frame_stride"] = STRIDE_DEFAULT[block]
    return values


def params(dsp, rate_hz: float, in_len: int, channels: int, block: str | None = None) -> binding.Params:
    block = block or dsp.block
    v = {**{k: getattr(dsp, k) for k in KEYS["mfcc"] + KEYS["spectral"] + ("noise_floor_db",)}, **resolved(dsp, block)}
    for key, default in (("fft_length", FFT_DEFAULT.get(block, 16)), ("frame_stride", STRIDE_DEFAULT.get(block, 0.01))):
        if v[key] == "auto":
            v[key] = default
    return binding.Params(
        block=binding.BLOCK_IDS[block], rate_hz=float(rate_hz), in_len=int(in_len), channels=int(channels),
        scale_axes=v["scale_axes"], filter_type=binding.FILTER_IDS[v["filter_type"]], filter_cutoff=v["filter_cutoff"],
        filter_order=v["filter_order"], fft_length=v["fft_length"], do_log=int(v["do_log"]),
        do_fft_overlap=int(v["do_fft_overlap"]), frame_length=v["frame_length"], frame_stride=v["frame_stride"],
        num_filters=v["num_filters"], low_frequency=v["low_frequency"], high_frequency=v["high_frequency"],
        noise_floor_db=v["noise_floor_db"], num_cepstral=v["num_cepstral"], pre_cof=v["pre_cof"], lifter=v["lifter"],
        gain=binding.GAIN_IDS[v["gain"]],
    )


def features(X: np.ndarray, dsp, rate_hz: float | None, block: str | None = None) -> np.ndarray:
    """The block's features of windows X (n, L, C)."""
    block = block or dsp.block
    if block == "raw":
        return X
    unresolved(block)
    if X.ndim != 3:
        raise PipelineError(f"[dsp] block = {block!r}: expects time-series windows (n, steps, channels), got {X.shape[1:]}",
                            hint='images take [dsp] block = "raw"')
    if not rate_hz:
        raise PipelineError(f"[dsp] block = {block!r}: the dataset has no sampling rate")
    p = params(dsp, rate_hz, X.shape[1], X.shape[2], block)
    try:
        F = binding.run(p, X)
        return F[..., None] if block in IMAGE_BLOCKS else F
    except PipelineError as exc:
        raise PipelineError(f"[dsp] block = {block!r} on windows of {X.shape[1]} steps at {rate_hz:g} Hz: {exc.message}",
                            hint=exc.hint) from None


def describe(dsp, rate_hz: float | None, window_shape: tuple, block: str | None = None) -> dict:
    """The block, its parameters as used, and the input and output shapes (for the reports)."""
    block = block or dsp.block
    unresolved(block)
    out = {"block": block, "parameters": resolved(dsp, block), "window_shape": list(window_shape)}
    if block != "raw" and len(window_shape) == 2 and rate_hz:
        shape = list(binding.shape(params(dsp, rate_hz, window_shape[0], window_shape[1], block)))
        out["feature_shape"] = shape + [1] if block in IMAGE_BLOCKS else shape
    else:
        out["feature_shape"] = list(window_shape)
    return out


def featurize(prepared, cfg, block: str | None = None):
    """``prepared`` with each split's windows' X replaced by the ``[dsp]`` block's features."""
    block = block or cfg.dsp.block
    if block == "raw":
        return prepared
    unresolved(block)
    rate = prepared.dataset.rate_hz
    windows = {name: dataclasses.replace(w, X=features(w.X, cfg.dsp, rate, block))
               for name, w in prepared.windows.items()}
    return dataclasses.replace(prepared, windows=windows)
