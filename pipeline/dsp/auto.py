"""``[dsp] block = "auto"``: the blocks worth trying on this data, with their main parameters
chosen from the training windows, each with the reason.

Raw is always a candidate, so a block is only chosen when it beats the raw window on
validation (the train stage scores every candidate the same way: ``pipeline.train.search``).

- Audio (one channel at ``AUDIO_MIN_RATE_HZ`` or more): MFE and MFCC with Edge Impulse's
  frame, FFT and filter defaults, and the noise floor from the data (``noise_floor``).
- Motion and vibration (a rate below ``AUDIO_MIN_RATE_HZ``, any number of axes): spectral
  features with Edge Impulse's FFT length (16) and, when the window holds 4 of them, a longer
  FFT (``spectral_ffts``).
- Anything else (images, a window without a rate): raw only.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from pipeline.data.windows import AUDIO_MIN_RATE_HZ, is_audio
from pipeline.dsp import blocks

# The noise floor keeps the quietest group's frames: on fsdd's training speakers Edge
# Impulse's -52 dB zeroes 71% of the mel energies of the quietest (theo) against 19% of the
# loudest (george), so that loudness, not the digit, may separate them. The floor is the
# FLOOR_QUANTILE of every group's non-empty mel energies (dB), the lowest group's, rounded
# down to 6 dB, kept in [FLOOR_MIN_DB, Edge Impulse's -52]; -52 is always scored beside it
# (on fsdd the rule gives -90 dB, and -52 scored higher with the time-max model: docs/dsp.md).
FLOOR_QUANTILE = 0.05
FLOOR_MIN_DB = -100.0
EI_FLOOR_DB = -52.0
PROBE_FLOOR_DB = -150.0  # the mel energies read below any floor chosen
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


def noise_floor(X: np.ndarray, groups: np.ndarray | None, dsp, rate_hz: float) -> tuple[float, str]:
    """The noise floor (dB) that keeps FLOOR_QUANTILE of the quietest group's mel energies."""
    probe = dataclasses.replace(dsp, noise_floor_db=PROBE_FLOOR_DB)
    F = blocks.features(X, probe, rate_hz, "mfe").reshape(len(X), -1)
    db = F * (-PROBE_FLOOR_DB + 12.0) + PROBE_FLOOR_DB  # tm_dsp.c db_scaled, inverted
    groups = np.zeros(len(X)) if groups is None else np.asarray(groups).astype(str)
    lows = {}
    for g in np.unique(groups):
        v = db[groups == g][F[groups == g] > 0]
        if v.size:
            lows[g] = float(np.quantile(v, FLOOR_QUANTILE))
    if not lows:
        return EI_FLOOR_DB, "no energy in the training windows: Edge Impulse's -52 dB"
    quiet = min(lows, key=lows.get)
    floor = float(np.clip(np.floor(lows[quiet] / 6.0) * 6.0, FLOOR_MIN_DB, EI_FLOOR_DB))
    return floor, (f"{floor:g} dB: {FLOOR_QUANTILE:.0%} of the quietest group's ({quiet}) mel energies are "
                   f"below {lows[quiet]:.0f} dB (rounded down to 6 dB, kept in [{FLOOR_MIN_DB:g}, {EI_FLOOR_DB:g}])")


def candidates(dsp, rate_hz: float | None, X_train: np.ndarray, groups=None) -> list[dict]:
    """[{"block", "dsp" (a DspConfig with the block's parameters set), "why"}], raw first."""
    raw = dataclasses.replace(dsp, block="raw")
    out = [{"block": "raw", "dsp": raw, "why": "the window itself: always a candidate"}]
    what = kind(rate_hz, tuple(X_train.shape[1:]))
    if what == "audio":
        floor, why = noise_floor(X_train, groups, dataclasses.replace(dsp, block="mfe"), rate_hz)
        floors = [floor] if floor == EI_FLOOR_DB else [floor, EI_FLOOR_DB]
        for f in floors:
            note = why if f == floor else f"{EI_FLOOR_DB:g} dB, Edge Impulse's default"
            out.append({"block": "mfe", "dsp": dataclasses.replace(dsp, block="mfe", noise_floor_db=f),
                        "why": f"audio ({rate_hz:g} Hz, one channel): mel energies, noise floor {note}"})
        out.append({"block": "mfcc", "dsp": dataclasses.replace(dsp, block="mfcc"),
                    "why": f"audio ({rate_hz:g} Hz, one channel): cepstral coefficients (loudness in c0 only)"})
    elif what == "motion":
        steps = X_train.shape[1]
        for n in SPECTRAL_FFTS:
            if n == SPECTRAL_FFTS[0] or steps >= 4 * n:
                out.append({"block": "spectral", "dsp": dataclasses.replace(dsp, block="spectral", fft_length=n),
                            "why": f"motion ({rate_hz:g} Hz, {X_train.shape[2]} axes): spectral features, "
                                   f"FFT {n}" + (" (Edge Impulse's default)" if n == 16 else
                                                 f" (the window holds {steps // n} frames of {n})")})
    return out
