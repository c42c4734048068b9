"""One sampling rate for every sample: the most common rate, and anti-aliased resampling to it.

Edge Impulse projects mix boards (62.5 Hz and 100 Hz accelerometers); CSV recordings carry
their own time stamps. A model takes one rate, so the loaders bring every sample to one.
"""

from __future__ import annotations

from collections import Counter

import numpy as np

from pipeline.core.errors import PipelineError


def most_common_rate(rates: list[float]) -> float:
    """The rate most samples have (ties: the higher, which loses no information)."""
    counts = Counter(round(r, 6) for r in rates)
    return max(counts, key=lambda r: (counts[r], r))


def resample(values: np.ndarray, from_hz: float, to_hz: float) -> np.ndarray:
    """Anti-aliased polyphase resampling along time (``scipy.signal.resample_poly``).

    The ratio is approximated by a fraction with a denominator up to 1000 (62.5 -> 100 Hz is
    exactly 8/5). ``padtype="line"`` extends each end along its trend instead of with zeros,
    so a channel that carries gravity (9.8 m/s2) does not ring at the sample's edges.
    """
    from fractions import Fraction

    from scipy.signal import resample_poly  # lazy: scipy is slow to import

    ratio = Fraction(to_hz / from_hz).limit_denominator(1000)
    out = resample_poly(values.astype(np.float64), ratio.numerator, ratio.denominator, axis=0, padtype="line")
    return out.astype(np.float32)


def one_rate(source: str, rates: list[float], values: list[np.ndarray], rate_hz) -> tuple:
    """Bring every sample to one rate: ``rate_hz``, or "auto" (the most common rate).

    Returns (rate, samples, originals or None, note or None).
    """
    target = most_common_rate(rates) if rate_hz in (None, "auto") else float(rate_hz)
    off = [i for i, r in enumerate(rates) if abs(r - target) > 1e-6 * target]
    if not off:
        return target, values, None, None
    samples, originals = list(values), [None] * len(values)
    for i in off:
        # Shorter than the filter's reach the result is all edge effect; the window rule
        # counts such a sample as too short anyway.
        samples[i] = resample(values[i], rates[i], target)
        originals[i] = values[i]
        if samples[i].shape[0] == 0:
            raise PipelineError(f"{source}: a sample of {values[i].shape[0]} steps at {rates[i]:g} Hz "
                                f"is empty after resampling to {target:g} Hz")
    from_counts = Counter(f"{r:g}" for r in rates)
    note = {"to_hz": target, "chosen": "most common rate" if rate_hz in (None, "auto") else "[data] rate_hz",
            "samples_resampled": len(off), "from_hz": dict(sorted(from_counts.items())),
            "method": "scipy.signal.resample_poly (anti-aliasing FIR), padtype line"}
    return target, samples, originals, note
