"""Generators of sensor datasets with the traits of real exports, for the quantize tests.

``write_saturating_dataset`` imitates a wrist/phone IMU export (issue 12 and the Edge
Impulse Nano 33 BLE Sense export in ../shared/data): an accelerometer in m/s² saturating
at ±78.4 (±8 g) and a gyroscope in deg/s saturating at ±2000, at 62.5 Hz, 1 s windows,
several subjects with their own orientation, gain and gyro bias. An ``idle`` class that is
almost constant sits next to ``shake`` and ``fall`` windows that saturate both sensors, and
a slow ``walk`` that moves the accelerometer by 5-12 m/s² and barely turns the gyroscope
(phone in a pocket).

What makes int8 hard: one input scale must cover ±2000 deg/s, so the accelerometer (and
with it the walk/idle difference) falls below one LSB unless each channel is normalized
before quantization.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

RATE_HZ = 62.5
STEPS = 64
ACC_MAX = 78.4  # m/s², ±8 g
GYRO_MAX = 2000.0  # deg/s
LABELS = ["idle", "walk", "shake", "fall"]
CHANNELS = ["accX", "accY", "accZ", "gyrX", "gyrY", "gyrZ"]


def _unit(rng) -> np.ndarray:
    v = rng.normal(size=3)
    return v / np.linalg.norm(v)


def saturating_windows(subjects: int = 8, per_class: int = 32, seed: int = 3):
    """(X, y, groups, recordings): ``per_class`` windows per class and subject, 4 recordings each."""
    rng = np.random.default_rng(seed)
    t = np.arange(STEPS) / RATE_HZ
    X, y, groups, recs = [], [], [], []
    for s in range(subjects):
        gain = rng.uniform(0.7, 1.3)
        tempo = rng.uniform(0.8, 1.2)
        bias = rng.normal(0, 1.0, size=3)  # gyro zero-rate offset, deg/s
        for c, label in enumerate(LABELS):
            for i in range(per_class):
                acc = np.tile(9.81 * _unit(rng), (STEPS, 1)) + rng.normal(0, rng.uniform(0.02, 0.1), (STEPS, 3))
                gyr = np.tile(bias, (STEPS, 1)) + rng.normal(0, 0.3, (STEPS, 3))
                wave = np.sin(2 * np.pi * 1.8 * tempo * t + rng.uniform(0, 2 * np.pi))
                if label == "walk":
                    acc += gain * rng.uniform(5.0, 12.0) * np.outer(wave, _unit(rng))
                    gyr += gain * rng.uniform(2.0, 8.0) * np.outer(wave, _unit(rng))
                elif label == "shake":
                    fast = np.sin(2 * np.pi * 5.0 * tempo * t + rng.uniform(0, 2 * np.pi))
                    acc += gain * rng.uniform(50, 120) * np.outer(fast, _unit(rng))
                    gyr += gain * rng.uniform(1000, 3000) * np.outer(fast, _unit(rng))
                elif label == "fall":
                    at = rng.integers(8, STEPS - 8)
                    acc[at:] = np.tile(9.81 * _unit(rng), (STEPS - at, 1)) + rng.normal(0, 0.05, (STEPS - at, 3))
                    acc[at - 2 : at + 2] += gain * rng.uniform(60, 150) * _unit(rng)
                    gyr[at - 3 : at + 3] += gain * rng.uniform(800, 2500) * _unit(rng)
                X.append(np.concatenate([np.clip(acc, -ACC_MAX, ACC_MAX), np.clip(gyr, -GYRO_MAX, GYRO_MAX)], 1))
                y.append(c)
                groups.append(f"subject{s:02d}")
                recs.append(f"subject{s:02d}-{label}-{i * 4 // per_class}")
    return np.asarray(X, np.float32), np.asarray(y), np.asarray(groups), np.asarray(recs)


def write_saturating_dataset(path: Path, **kw) -> Path:
    X, y, groups, recs = saturating_windows(**kw)
    np.savez(path, X=X, y=y, groups=groups, recordings=recs, label_names=np.asarray(LABELS),
             rate_hz=RATE_HZ)
    return path
