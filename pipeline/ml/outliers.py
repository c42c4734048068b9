"""Robust outlier scores of windows against a reference set (the training windows).

The audit reports windows beyond ``[audit] outlier_z`` (``pipeline.audit.quality``), and the
quantize stage leaves them out of its calibration set, by the same score.
"""

from __future__ import annotations

import numpy as np


def outlier_scores(X: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Largest robust z-score of any value of each window of ``X``, per channel against the
    values of the ``reference`` windows (the training windows).

    Centred on the median and scaled by the spread of the central 98% of values (as a normal
    sigma). The MAD alone would flag every vigorous gesture on a channel where gravity and
    rest dominate (it did: 36 of 219 motion recordings); a 1% tail cannot hide a spike.
    The quantize stage leaves windows out of calibration by this score.
    """
    C = X.shape[-1]
    train = reference.reshape(-1, C)
    if train.shape[0] > 500_000:
        train = train[:: int(np.ceil(train.shape[0] / 500_000))]
    z = np.zeros(len(X))
    for c in range(C):
        v = train[:, c]
        v = v[np.isfinite(v)]
        if v.size == 0:
            continue
        med = float(np.median(v))
        lo, hi = np.quantile(v, [0.01, 0.99])
        scale = (hi - lo) / 4.6527  # q99 - q01 of a normal is 4.65 sigma
        if not scale > 0:
            scale = float(np.std(v))
        if not scale > 0:
            continue  # a constant channel: constant_channels reports it
        xc = np.nan_to_num(X[..., c], nan=med, posinf=med, neginf=med)
        z = np.maximum(z, (np.abs(xc - med) / scale).reshape(len(X), -1).max(axis=1))
    return z
