"""What every audit check reads: the windows of the three splits side by side (`Pool`),
the shape of a finding, and the fast baseline the model-based checks cross-validate.

Every check returns a plain dict (``finding``): ``id``, ``severity`` (error, warning, info),
``passed``, a short ``message`` and a ``detail`` with counts and the offending ids.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from pipeline.data.folds import cross_validate_pipeline
from pipeline.data.splits import SPLITS, Prepared, cv_groups

MAX_IDS = 50  # ids listed per finding; counts are always complete


def finding(cid: str, severity: str, passed: bool, message: str, **detail) -> dict:
    """One check's result, as ``audit.json`` lists it."""
    return {"id": cid, "severity": severity, "passed": bool(passed), "message": message, "detail": detail}


def id_list(values, limit: int = MAX_IDS) -> list[str]:
    """The distinct ids among ``values``, sorted, at most ``limit`` of them."""
    return [str(v) for v in sorted(set(np.asarray(values).tolist()))[:limit]]


# --------------------------------------------------------------------------- the fast baseline


def summary_features(X: np.ndarray, bands: int = 6) -> np.ndarray:
    """Cheap, shift-invariant features of windows for the fast linear baseline.

    Time series (n, L, C): per channel mean, std, min, max, log power in ``bands``
    log-spaced frequency bands, and the correlation of each pair of channels (up to 8
    channels). A linear model on raw samples cannot see an oscillation whatever its phase;
    on these it can. Images (n, H, W, C): the pixels, average-pooled to at most 1024 values.
    """
    X = np.nan_to_num(np.asarray(X, dtype=np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    n = X.shape[0]
    if X.ndim == 4:
        h, w, c = X.shape[1:]
        f = int(np.ceil(np.sqrt(h * w * c / 1024))) if h * w * c > 1024 else 1
        if f > 1:
            X = X[:, : h // f * f, : w // f * f].reshape(n, h // f, f, w // f, f, c).mean(axis=(2, 4))
        return X.reshape(n, -1)
    if X.ndim != 3:
        raise ValueError(f"summary_features expects (n, L, C) or (n, H, W, C), got shape {X.shape}")
    length, channels = X.shape[1:]
    mean = X.mean(axis=1)
    std = X.std(axis=1)
    centered = X - mean[:, None, :]
    power = np.abs(np.fft.rfft(centered, axis=1)) ** 2 / length
    edges = np.unique(np.round(np.geomspace(1, power.shape[1], bands + 1)).astype(int))  # ~octaves
    band_power = [np.log1p(power[:, a:b].sum(axis=1)) for a, b in zip(edges[:-1], edges[1:], strict=True)]
    parts = [mean, std, X.min(axis=1), X.max(axis=1), *band_power]
    if 1 < channels <= 8:
        z = centered / (std[:, None, :] + 1e-6)
        corr = np.einsum("nlc,nld->ncd", z, z) / length
        iu = np.triu_indices(channels, 1)
        parts.append(corr[:, iu[0], iu[1]])
    return np.concatenate(parts, axis=1).astype(np.float32)


def fast_baseline(seed: int = 0):
    """StandardScaler -> LogisticRegression (balanced classes): fit inside each fold."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    return Pipeline([
        ("scale", StandardScaler()),
        ("logreg", LogisticRegression(max_iter=2000, class_weight="balanced", random_state=seed)),
    ])


# --------------------------------------------------------------------------- all windows in one place


@dataclass
class Pool:
    """The windows of the three splits side by side, with the split of each."""

    X: np.ndarray
    y: np.ndarray
    split: np.ndarray  # index into SPLITS
    window_ids: np.ndarray
    recording_ids: np.ndarray
    group_ids: np.ndarray
    sample_index: np.ndarray
    start_times: np.ndarray
    groups: np.ndarray  # what the pipeline keeps whole when cross-validating (``cv_groups``)
    duration: float  # seconds a window covers (0 when the rate is unknown)
    hashes: np.ndarray
    padded: np.ndarray | None = None  # zero steps appended per window

    def where(self, *names: str) -> np.ndarray:
        return np.flatnonzero(np.isin(self.split, [SPLITS.index(s) for s in names]))


def content_hash(x: np.ndarray) -> str:
    # + 0.0 turns -0.0 into 0.0, so equal values hash equal.
    return hashlib.blake2b(np.ascontiguousarray(x + 0.0, dtype="<f4").tobytes(), digest_size=16).hexdigest()


def make_pool(prepared: Prepared) -> Pool:
    """The windows of ``prepared``'s three splits in one place, hashed on their content."""
    ws = [prepared.windows[s] for s in SPLITS]
    ds = prepared.dataset
    X = np.concatenate([w.X for w in ws])
    sample_index = np.concatenate([w.sample_index for w in ws]).astype(np.int64)
    duration = prepared.plan.window_length / ds.rate_hz if ds.rate_hz else 0.0
    return Pool(
        X=X,
        y=np.concatenate([w.y for w in ws]),
        split=np.concatenate([np.full(len(w), k) for k, w in enumerate(ws)]),
        window_ids=np.concatenate([w.window_ids for w in ws]).astype(str),
        recording_ids=np.concatenate([w.recording_ids for w in ws]).astype(str),
        group_ids=np.concatenate([w.group_ids for w in ws]).astype(str),
        sample_index=sample_index,
        start_times=np.concatenate([w.start_times for w in ws]).astype(np.float64),
        groups=np.concatenate([cv_groups(w, prepared.plan) for w in ws]).astype(str),
        duration=float(duration),
        hashes=np.array([content_hash(x) for x in X]),
        padded=np.concatenate([w.padded if w.padded is not None else np.zeros(len(w), np.int64) for w in ws]),
    )



def cv_score(estimator, F, y, groups, folds, seed) -> float:
    """Mean balanced accuracy of ``estimator`` cross-validated with the pipeline's splitter."""
    res = cross_validate_pipeline(estimator, F, y, groups, n_splits=folds, seed=seed)
    return float(np.mean(res["test_balanced_accuracy"]))
