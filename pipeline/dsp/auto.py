"""``[dsp] block = "auto"``: the blocks worth trying on this data, with their main parameters
chosen from the training windows, each with the reason.

Raw is always a candidate, so a block is only chosen when it beats the raw window on
validation (the train stage scores every candidate the same way: ``pipeline.train.search``).

- Audio (one channel at ``AUDIO_MIN_RATE_HZ`` or more): MFE with and without the peak gain,
  and MFCC, with Edge Impulse's frame, FFT, filter and noise-floor defaults.
- Motion and vibration (a rate below ``AUDIO_MIN_RATE_HZ``, any number of axes): spectral
  features with Edge Impulse's FFT length (16) and, when the window holds 4 of them, a longer
  FFT (``spectral_ffts``).
- Anything else (images, a window without a rate): raw only.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from pipeline.data.windows import AUDIO_MIN_RATE_HZ, is_audio

# Audio: MFE with each window's peak brought to -6 dBFS ([dsp] gain = "peak") and MFE as
# recorded, both at Edge Impulse's -52 dB floor, and MFCC. The gain replaces an earlier rule
# that lowered the floor to keep the quietest speaker's frames (it chose -90 dB on fsdd): one
# speaker held out in turn, 4 training speakers, the time-max convnet, MFE -52 dB scored 0.748
# as recorded and 0.854 with the peak gain; the peak gain at -72 dB scored 0.841 (docs/dsp.md).
# MFE as recorded stays a candidate for data whose loudness carries the class (a silence or
# noise class in keyword spotting, which the gain would raise to the level of speech). Both
# MFE candidates take the configured `[dsp] noise_floor_db` (Edge Impulse's -52 dB by default).
EI_FLOOR_DB = -52.0
# Spectral: Edge Impulse's 16 points, and 64 when the window holds four 64-point frames (a
# finer spectrum for slow gestures at 50-100 Hz, as Studio's autotuner also proposes).
SPECTRAL_FFTS = (16, 64)


def kind(rate_hz: float | None, window_shape: tuple) -> str:
    """"audio", "motion" or "other" (no block but raw)."""
    if not rate_hz or len(window_shape) != 2:
        return "other"
    if is_audio(rate_hz, window_shape[1]):
        return "audio"
    return "motion" if rate_hz < AUDIO_MIN_RATE_HZ else "other"


def candidates(dsp, rate_hz: float | None, X_train: np.ndarray) -> list[dict]:
    """[{"block", "dsp" (a DspConfig with the block's parameters set), "why"}], raw first."""
    raw = dataclasses.replace(dsp, block="raw")
    out = [{"block": "raw", "dsp": raw, "why": "the window itself: always a candidate"}]
    what = kind(rate_hz, tuple(X_train.shape[1:]))
    if what == "audio":
        where = f"audio ({rate_hz:g} Hz, one channel)"
        floor = f"noise floor {dsp.noise_floor_db:g} dB" + (" (Edge Impulse's)" if dsp.noise_floor_db == EI_FLOOR_DB else "")
        for gain, note in (("peak", "each window's peak to -6 dBFS"), ("none", "the level as recorded")):
            out.append({"block": "mfe", "dsp": dataclasses.replace(dsp, block="mfe", gain=gain),
                        "why": f"{where}: mel energies, {note}, {floor}"})
        out.append({"block": "mfcc", "dsp": dataclasses.replace(dsp, block="mfcc", gain="peak"),
                    "why": f"{where}: cepstral coefficients, each window's peak to -6 dBFS"})
    elif what == "motion":
        steps = X_train.shape[1]
        for n in SPECTRAL_FFTS:
            if n == SPECTRAL_FFTS[0] or steps >= 4 * n:
                out.append({"block": "spectral", "dsp": dataclasses.replace(dsp, block="spectral", fft_length=n),
                            "why": f"motion ({rate_hz:g} Hz, {X_train.shape[2]} axes): spectral features, "
                                   f"FFT {n}" + (" (Edge Impulse's default)" if n == 16 else
                                                 f" (the window holds {steps // n} frames of {n})")})
    return out
