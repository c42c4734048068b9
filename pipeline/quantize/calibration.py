"""Which training windows the int8 conversion is calibrated on, and how much of a split's
input falls outside the int8 input range it gives.

Calibration only ever sees (a subset of) the training split. Windows the audit's outlier
score flags (``[quantize] calibration_outlier_z``) are left out; a subset keeps each class
in proportion and every class's extreme values, so it never narrows the calibrated ranges.
"""

from __future__ import annotations

import numpy as np

from pipeline.core.artifacts import sha256_bytes
from pipeline.data.windows import Windows
from pipeline.ml.outliers import outlier_scores


def drop_outliers(train: Windows, outlier_z: float) -> Windows:
    """The training windows with no value beyond robust z ``outlier_z`` (0: all of them):
    the audit's outlier scores, so calibration leaves out the windows the audit flags."""
    if outlier_z <= 0:
        return train
    keep = outlier_scores(train.X, train.X) <= outlier_z
    return train.subset(np.flatnonzero(keep)) if keep.any() else train


def calibration_set(train: Windows, n: int, seed: int) -> Windows:
    """Every training window when ``n`` is 0 or covers them; else ``n`` of them, stratified by
    class (each class in proportion to its frequency, at least one each), plus, for every
    class and channel, the windows holding that class's smallest and largest value of the
    channel: a subset never narrows the ranges the full set calibrates, and no class loses
    its peaks. Only ever called with (a subset of) the training split."""
    if n <= 0 or n >= len(train):
        return train
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(train.y, return_counts=True)
    flat = train.X.reshape(len(train), -1, train.X.shape[-1])
    extremes: list[int] = []
    for c in classes:
        mine = np.flatnonzero(train.y == c)
        extremes += mine[flat[mine].max(axis=1).argmax(axis=0)].tolist()
        extremes += mine[flat[mine].min(axis=1).argmin(axis=0)].tolist()
    extremes_arr = np.unique(np.asarray(extremes, dtype=np.int64))
    raw = counts * n / counts.sum()
    quota = np.minimum(np.maximum(np.floor(raw), 1), counts).astype(int)
    # Hand out what is left by the largest remainders, as far as each class has windows.
    for i in np.argsort(-(raw - np.floor(raw)), kind="stable"):
        if quota.sum() >= n:
            break
        if quota[i] < counts[i]:
            quota[i] += 1
    picked = [extremes_arr]
    for c, q in zip(classes, quota, strict=True):
        rest = np.setdiff1d(np.flatnonzero(train.y == c), extremes_arr)
        have = int(np.isin(extremes_arr, np.flatnonzero(train.y == c)).sum())
        take = min(max(q - have, 0), len(rest))
        if take:
            picked.append(rng.choice(rest, size=take, replace=False))
    return train.subset(np.sort(np.concatenate(picked)))


def calibration_record(calib: Windows, q, labels: list[str], seed: int, left_out: int,
                       train_windows: int | None = None) -> dict:
    counts = np.bincount(calib.y, minlength=len(labels))
    return {
        "split": "train",
        "windows": len(calib),
        "requested": q.calibration_windows,
        "per_class": {name: int(c) for name, c in zip(labels, counts, strict=True)},
        "window_ids_sha256": sha256_bytes("\n".join(calib.window_ids.tolist()).encode()),
        "seed": seed,
        "training_windows": train_windows,
        "sampling": "every training window" if train_windows is not None and len(calib) + left_out >= train_windows
        else "stratified by class, in proportion to class frequency, at least one per class, plus the "
        "windows holding each class's smallest and largest value of each channel",
        "outlier_z": q.calibration_outlier_z,
        "outlier_windows_left_out": left_out,
    }


def input_clipping(x: np.ndarray, scale: float, zero_point: int) -> dict:
    """How much of the input falls outside the int8 input range (and is clamped): spikes
    the calibration windows did not show. Clamped inputs are a common cause of disagreement."""
    lo = (-128 - zero_point) * scale
    hi = (127 - zero_point) * scale
    outside = (x < lo - scale / 2) | (x > hi + scale / 2)
    return {
        "range": [float(lo), float(hi)],
        "values_share": float(outside.mean()) if outside.size else 0.0,
        "windows_share": float(outside.reshape(len(x), -1).any(axis=1).mean()) if len(x) else 0.0,
    }
