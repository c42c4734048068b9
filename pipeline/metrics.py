"""Honest metrics: the ones that survive imbalance, each with a bootstrap interval.

Everything is computed from confusion matrices, so the bootstrap resamples whole groups or
recordings (clusters) by reweighting their per-cluster confusion matrices: 2000 resamples
cost milliseconds. Agrees with scikit-learn's definitions (tested).
"""

from __future__ import annotations

import math

import numpy as np

METRICS = ("accuracy", "balanced_accuracy", "macro_f1", "mcc")


def confusion(y_true: np.ndarray, y_pred: np.ndarray, k: int) -> np.ndarray:
    """Rows are true classes, columns predicted."""
    y_true = np.asarray(y_true, dtype=np.int64)
    y_pred = np.asarray(y_pred, dtype=np.int64)
    return np.bincount(y_true * k + y_pred, minlength=k * k).reshape(k, k)


def _per_class(cm: np.ndarray) -> tuple[np.ndarray, ...]:
    """Precision, recall, F1 and support per class of one or many confusion matrices."""
    cm = cm.astype(np.float64)
    diag = np.diagonal(cm, axis1=-2, axis2=-1)
    true_n = cm.sum(axis=-1)
    pred_n = cm.sum(axis=-2)
    with np.errstate(divide="ignore", invalid="ignore"):
        recall = np.where(true_n > 0, diag / np.where(true_n > 0, true_n, 1), 0.0)
        precision = np.where(pred_n > 0, diag / np.where(pred_n > 0, pred_n, 1), 0.0)
        denom = precision + recall
        f1 = np.where(denom > 0, 2 * precision * recall / np.where(denom > 0, denom, 1), 0.0)
    return precision, recall, f1, true_n, pred_n


def _scores(cm: np.ndarray) -> dict[str, np.ndarray]:
    """Metrics of one or many confusion matrices (..., k, k), vectorized."""
    cm = cm.astype(np.float64)
    total = cm.sum(axis=(-2, -1))
    diag = np.diagonal(cm, axis1=-2, axis2=-1)
    _, recall, f1, true_n, pred_n = _per_class(cm)
    with np.errstate(divide="ignore", invalid="ignore"):
        acc = np.where(total > 0, diag.sum(-1) / total, np.nan)
        present = true_n > 0
        bal = recall.sum(-1) / np.maximum(present.sum(-1), 1)
        used = present | (pred_n > 0)
        macro_f1 = (f1 * used).sum(-1) / np.maximum(used.sum(-1), 1)
        cov_ytyp = diag.sum(-1) * total - (true_n * pred_n).sum(-1)
        cov_ypyp = total**2 - (pred_n**2).sum(-1)
        cov_ytyt = total**2 - (true_n**2).sum(-1)
        d = np.sqrt(cov_ytyt * cov_ypyp)
        mcc = np.where(d > 0, cov_ytyp / np.where(d > 0, d, 1), 0.0)
    return {"accuracy": acc, "balanced_accuracy": bal, "macro_f1": macro_f1, "mcc": mcc}


def scores(y_true, y_pred, k: int) -> dict[str, float]:
    return {m: float(v) for m, v in _scores(confusion(y_true, y_pred, k)).items()}


def _cluster_confusions(y_true, y_pred, k, clusters):
    clusters = np.asarray(clusters)
    _, inv = np.unique(clusters, return_inverse=True)
    n_c = inv.max() + 1
    flat = inv * (k * k) + np.asarray(y_true) * k + np.asarray(y_pred)
    return np.bincount(flat, minlength=n_c * k * k).reshape(n_c, k, k)


def _resampled(per: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Confusion matrices of bootstrap resamples: ``weights`` (n_boot, clusters) counts."""
    return np.einsum("bc,cij->bij", weights, per)


def _cluster_weights(n_c: int, n_boot: int, seed: int) -> np.ndarray:
    """How often each of ``n_c`` clusters is drawn, per resample."""
    rng = np.random.default_rng(seed)
    return rng.multinomial(n_c, np.full(n_c, 1.0 / n_c), size=n_boot)


def bootstrap_intervals(y_true, y_pred, k: int, clusters=None, n_boot: int = 2000,
                        seed: int = 0, level: float = 0.95) -> dict[str, list[float]]:
    """Percentile intervals, resampling whole clusters (groups/recordings) when given."""
    y_true = np.asarray(y_true)
    if clusters is None:
        clusters = np.arange(y_true.size)
    per = _cluster_confusions(y_true, y_pred, k, clusters)
    boot = _resampled(per, _cluster_weights(per.shape[0], n_boot, seed))
    alpha = (1 - level) / 2
    out = {}
    for m, vals in _scores(boot).items():
        vals = vals[np.isfinite(vals)]
        out[m] = [float(np.quantile(vals, alpha)), float(np.quantile(vals, 1 - alpha))]
    return out


def evaluate(y_true, y_pred, label_names, clusters=None, n_boot: int = 2000, seed: int = 0) -> dict:
    """The full set for one split: headline metrics with 95% intervals, per class, confusion."""
    k = len(label_names)
    y_true = np.asarray(y_true, dtype=np.int64)
    y_pred = np.asarray(y_pred, dtype=np.int64)
    cm = confusion(y_true, y_pred, k)
    precision, recall, f1, support, _ = _per_class(cm)
    per_class = {
        name: {"precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]),
               "support": int(support[i])}
        for i, name in enumerate(label_names)
    }
    return {
        "n": int(y_true.size),
        "clusters": int(np.unique(clusters).size) if clusters is not None else int(y_true.size),
        **scores(y_true, y_pred, k),
        "ci95": bootstrap_intervals(y_true, y_pred, k, clusters, n_boot=n_boot, seed=seed),
        "per_class": per_class,
        "confusion": cm.tolist(),
    }


def paired_delta(y_true, pred_a, pred_b, k: int, metric: str, clusters=None,
                 n_boot: int = 2000, seed: int = 0) -> dict:
    """metric(b) - metric(a) on the same samples, with a paired cluster-bootstrap interval."""
    y_true = np.asarray(y_true)
    if clusters is None:
        clusters = np.arange(y_true.size)
    pa = _cluster_confusions(y_true, pred_a, k, clusters)
    pb = _cluster_confusions(y_true, pred_b, k, clusters)
    w = _cluster_weights(pa.shape[0], n_boot, seed)
    da = _scores(_resampled(pa, w))[metric]
    db = _scores(_resampled(pb, w))[metric]
    point = float(_scores(pb.sum(0))[metric] - _scores(pa.sum(0))[metric])
    diff = db - da
    return {"metric": metric, "delta": point,
            "ci95": [float(np.quantile(diff, 0.025)), float(np.quantile(diff, 0.975))]}


def mcnemar(correct_a, correct_b) -> dict:
    """Exact McNemar test on paired correctness: does b err on different samples than a?"""
    correct_a = np.asarray(correct_a, dtype=bool)
    correct_b = np.asarray(correct_b, dtype=bool)
    only_a = int(np.sum(correct_a & ~correct_b))
    only_b = int(np.sum(~correct_a & correct_b))
    n = only_a + only_b
    if n == 0:
        p = 1.0
    else:
        k = min(only_a, only_b)
        tail = sum(math.comb(n, i) for i in range(k + 1)) / 2.0**n
        p = min(1.0, 2.0 * tail)
    return {"a_right_b_wrong": only_a, "a_wrong_b_right": only_b, "p_value": p,
            "test": "exact binomial McNemar, two-sided"}


def format_metric(value: float, ci: list[float] | None = None) -> str:
    if ci is None:
        return f"{value:.3f}"
    return f"{value:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]"
