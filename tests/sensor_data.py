"""Generators of sensor datasets with the traits of real exports, for the quantize tests.

``write_saturating_dataset`` imitates a phone-accelerometer export (issue 12): 3 axes in
m/s² at 62.5 Hz, 1 s windows, several subjects with their own orientation and gain; an
``idle`` class that is almost constant next to ``shake`` and ``fall`` windows that
saturate the sensor at ±78.4 m/s² (±8 g), and a ``walk`` class whose weakest walkers are
barely above idle. One int8 input scale must then cover ±78 m/s² while idle and slow walks
differ by a fraction of a m/s².
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

RATE_HZ = 62.5
STEPS = 64
SATURATION = 78.4
LABELS = ["idle", "walk", "shake", "fall"]


def _gravity(rng) -> np.ndarray:
    v = rng.normal(size=3)  # the phone lies, stands or hangs in any pose
    return 9.81 * v / np.linalg.norm(v)


PER_CLASS = {"idle": 32, "walk": 32, "shake": 8, "fall": 8}
"""Windows per subject: idle and walking dominate, shakes and falls are rare (as in a real
export, where the saturating classes are a minority, so their peaks look like outliers)."""


def saturating_windows(subjects: int = 8, per_class: dict | None = None, seed: int = 3):
    """(X, y, groups, recordings): ``per_class[label]`` windows per class and subject, 4 recordings each."""
    per_class = per_class or PER_CLASS
    rng = np.random.default_rng(seed)
    t = np.arange(STEPS) / RATE_HZ
    X, y, groups, recs = [], [], [], []
    for s in range(subjects):
        gain = rng.uniform(0.6, 1.4)
        tempo = rng.uniform(0.8, 1.2)
        for c, label in enumerate(LABELS):
            for i in range(per_class[label]):
                g = _gravity(rng)
                w = np.tile(g, (STEPS, 1)) + rng.normal(0, rng.uniform(0.02, 0.1), size=(STEPS, 3))
                phase = rng.uniform(0, 2 * np.pi)
                if label == "walk":  # a slow, weak walker is barely above idle
                    amp = gain * rng.uniform(0.5, 3.0)
                    axis = rng.normal(size=3)
                    w += amp * np.outer(np.sin(2 * np.pi * 1.8 * tempo * t + phase), axis / np.linalg.norm(axis))
                elif label == "shake":
                    amp = gain * rng.uniform(50, 120)
                    w += amp * np.outer(np.sin(2 * np.pi * 5.0 * tempo * t + phase), rng.normal(size=3))
                elif label == "fall":
                    at = rng.integers(8, STEPS - 8)
                    w[at:] = np.tile(_gravity(rng), (STEPS - at, 1)) + rng.normal(0, 0.05, size=(STEPS - at, 3))
                    w[at - 2 : at + 2] += gain * rng.uniform(60, 150) * rng.normal(size=(1, 3))
                X.append(np.clip(w, -SATURATION, SATURATION))
                y.append(c)
                groups.append(f"subject{s:02d}")
                recs.append(f"subject{s:02d}-{label}-{i * 4 // per_class[label]}")
    return np.asarray(X, np.float32), np.asarray(y), np.asarray(groups), np.asarray(recs)


def write_saturating_dataset(path: Path, **kw) -> Path:
    X, y, groups, recs = saturating_windows(**kw)
    np.savez(path, X=X, y=y, groups=groups, recordings=recs, label_names=np.asarray(LABELS),
             rate_hz=RATE_HZ)
    return path
