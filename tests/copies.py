"""Generators of copies that hide: training windows placed in test again, shifted in level or
in gain, with one LSB of noise (issue 22).

The base is the wrist/phone IMU of ``sensor_data`` (accelerometer in m/s² with gravity in
each window's own orientation, gyroscope in deg/s), already cut into 64-step windows: its
windows differ in level by up to ±9.81 m/s² per axis, so a level offset can move a copy
further from its source than other windows are. Each generator returns a windowed
``Dataset`` and ``SPLIT_OF_GROUP`` says which subjects train, validate and test; the copies
belong to a test subject.

- ``level_shifted_copies``: a constant offset per channel of two thirds of the level spread
  (the range of the windows' means over the data): a board re-mounted, a
  recalibrated zero. Nearest by the raw window, such a copy had a ratio of about 1 to
  another window and was missed.
- ``gain_shifted_copies``: the window times 1.5 (level and variation alike): a sensor of
  another sensitivity, or an export rescaled to other units.
"""

from __future__ import annotations

import numpy as np
from sensor_data import CHANNELS, LABELS, RATE_HZ, saturating_windows

from pipeline.data.dataset import Dataset

SPLIT_OF_GROUP = {**{f"subject{s:02d}": "train" for s in range(5)}, "subject05": "val",
                  "subject06": "test", "subject07": "test"}
# Per channel: about one LSB of an LSM9DS1 at ±8 g and ±2000 deg/s, as a copy re-quantized gets.
NOISE = np.array([0.0024, 0.0024, 0.0024, 0.07, 0.07, 0.07])
COPIED = 6  # walking windows copied from one training subject


def _pocket(per_class: int):
    """``sensor_data``'s windows of a phone in a pocket, idle or walking: no shake or fall,
    whose ±50-150 m/s² would dwarf the level (gravity) in the training spread."""
    X, y, groups, recs = saturating_windows(subjects=8, per_class=per_class)
    keep = y < 2
    return X[keep], y[keep], groups[keep], recs[keep]


def _dataset(X, y, groups, recs) -> Dataset:
    return Dataset(name="imu", source="test:imu-copies", kind="timeseries", samples=list(X), labels=y,
                   label_names=tuple(LABELS[:2]), recording_ids=recs, group_ids=groups,
                   start_times=np.arange(len(y), dtype=np.float64) * 2.0,
                   sample_ids=np.array([f"w{i:05d}" for i in range(len(y))]), rate_hz=RATE_HZ,
                   channel_names=tuple(CHANNELS), windowed=True, has_groups=True, has_recordings=True)


def imu_windows(per_class: int = 32) -> Dataset:
    """The clean base: 8 subjects, idle and walk, ``per_class`` windows per class and subject."""
    return _dataset(*_pocket(per_class))


def _with_copies(shift, seed: int, per_class: int = 32) -> tuple[Dataset, list[str]]:
    X, y, groups, recs = _pocket(per_class)
    rng = np.random.default_rng(seed)
    # Walking windows of training subject01 (idle is near-constant: nothing to copy).
    src = np.flatnonzero((groups == "subject01") & (y == 1))[:COPIED]
    copies = shift(X[src].astype(np.float64), X) + rng.normal(0, NOISE, X[src].shape)
    names = [f"subject06-copy-of-{recs[i]}-{k}" for k, i in enumerate(src)]
    return _dataset(np.concatenate([X, copies.astype(np.float32)]), np.concatenate([y, y[src]]),
                    np.concatenate([groups, ["subject06"] * src.size]), np.concatenate([recs, names])), names


def level_shifted_copies(share: float = 2 / 3, seed: int = 1) -> tuple[Dataset, list[str]]:
    """(dataset, names of the copies' recordings): copies offset by ``share`` of the level spread."""
    return _with_copies(lambda W, X: W + share * np.ptp(X.mean(axis=1), axis=0), seed)


def gain_shifted_copies(gain: float = 1.5, seed: int = 2) -> tuple[Dataset, list[str]]:
    """(dataset, names of the copies' recordings): copies read ``gain`` times larger."""
    return _with_copies(lambda W, X: gain * W, seed)
