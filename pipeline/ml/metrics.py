"""Honest metrics: the ones that survive imbalance, each with a bootstrap interval.

Everything is computed from confusion matrices, so the bootstrap resamples whole groups
(what the split keeps whole: subjects, devices or recordings) by reweighting their per-group
confusion matrices: 2000 resamples cost milliseconds. Agrees with scikit-learn's
definitions (tested).

``score_with_intervals`` scores one split of host predictions; the device stage scores the
device's predictions with it too (``pipeline.device.scoring``).
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


def _group_confusions(y_true, y_pred, k, groups):
    groups = np.asarray(groups)
    _, inv = np.unique(groups, return_inverse=True)
    n_c = inv.max() + 1
    flat = inv * (k * k) + np.asarray(y_true) * k + np.asarray(y_pred)
    return np.bincount(flat, minlength=n_c * k * k).reshape(n_c, k, k)


def _resampled(per: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Confusion matrices of bootstrap resamples: ``weights`` (n_boot, groups) counts."""
    return np.einsum("bc,cij->bij", weights, per)


def _group_weights(n_c: int, n_boot: int, seed: int) -> np.ndarray:
    """How often each of ``n_c`` groups is drawn, per resample."""
    rng = np.random.default_rng(seed)
    return rng.multinomial(n_c, np.full(n_c, 1.0 / n_c), size=n_boot)


def bootstrap_intervals(y_true, y_pred, k: int, groups=None, n_boot: int = 2000,
                        seed: int = 0, level: float = 0.95) -> dict[str, list[float]]:
    """Percentile intervals, resampling whole groups (subjects/devices/recordings) when given."""
    y_true = np.asarray(y_true)
    if groups is None:
        groups = np.arange(y_true.size)
    per = _group_confusions(y_true, y_pred, k, groups)
    boot = _resampled(per, _group_weights(per.shape[0], n_boot, seed))
    alpha = (1 - level) / 2
    out = {}
    for m, vals in _scores(boot).items():
        vals = vals[np.isfinite(vals)]
        out[m] = [float(np.quantile(vals, alpha)), float(np.quantile(vals, 1 - alpha))]
    return out


# A bootstrap over fewer groups than this is no interval: with one group every resample is
# that group (an interval of zero width), with two to four the resamples take a handful of
# values. Then the scores per group are printed instead, and no interval.
MIN_GROUPS_FOR_INTERVAL = 5


def clopper_pearson(successes: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Exact binomial (Clopper-Pearson) interval of a proportion: two-sided, ``level``."""
    from scipy.stats import beta

    alpha = 1.0 - level
    lo = 0.0 if successes == 0 else float(beta.ppf(alpha / 2, successes, n - successes + 1))
    hi = 1.0 if successes == n else float(beta.ppf(1 - alpha / 2, successes + 1, n - successes))
    return lo, hi


def score_with_intervals(y_true, y_pred, label_names, groups=None, n_boot: int = 2000, seed: int = 0,
                         group_word: str = "group") -> dict:
    """The full set for one split: headline metrics with honest 95% uncertainty, per class, confusion.

    ``uncertainty`` says which kind applies and ``ci95`` holds an interval only where one
    means something:
    - ``bootstrap``: groups (``group_word``s: subjects, devices or recordings) resampled whole;
    - ``few_groups``: fewer than MIN_GROUPS_FOR_INTERVAL: no interval, the score of each;
    - ``exact``: otherwise, no error (or no correct answer) at all: a bootstrap interval has zero width
      whatever the sample size, so the Clopper-Pearson bound on the share of groups right,
      with the count, e.g. ``1.000 (12/12 recordings; 95% lower bound 0.74)``.
    """
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
    ids = np.asarray(groups).astype(str) if groups is not None else np.arange(y_true.size).astype(str)
    n_c = int(np.unique(ids).size)
    right = y_true == y_pred
    ci = bootstrap_intervals(y_true, y_pred, k, groups, n_boot=n_boot, seed=seed)
    uncertainty: dict = {"kind": "bootstrap", "groups": n_c, "group_word": group_word, "text": {}}
    plural = group_word if n_c == 1 else f"{group_word}s"
    if n_c < MIN_GROUPS_FOR_INTERVAL:
        # Too few to resample, and too few for a bound on groups to say anything (one
        # device right bounds the share of devices right at 0.03): the count, and each score.
        every = (f"; all {y_true.size} windows right" if right.all()
                 else f"; all {y_true.size} windows wrong" if not right.any() else "")
        uncertainty.update(kind="few_groups")
        uncertainty["text"] = {m: f"({n_c} {plural}: no interval{every})" for m in METRICS}
        ci = {m: None for m in METRICS}
    elif right.all() or not right.any():
        # Every window right (or every one wrong): count groups, all of whose windows agree.
        lo, hi = clopper_pearson(n_c if right.all() else 0, n_c)
        bound = (f"95% lower bound {lo:.2f}" if right.all() else f"95% upper bound {hi:.2f}")
        uncertainty.update(kind="exact", successes=n_c if right.all() else 0, bound=[lo, hi],
                           method="Clopper-Pearson, two-sided 95%, on groups")
        uncertainty["text"] = {m: f"({n_c if right.all() else 0}/{n_c} {plural}; {bound})" for m in METRICS}
        ci = {m: None for m in METRICS}
    if n_c < MIN_GROUPS_FOR_INTERVAL:
        uncertainty["per_group"] = per_group_scores(y_true, y_pred, k, ids)
    return {
        "n": int(y_true.size),
        "groups": n_c,
        **scores(y_true, y_pred, k),
        "ci95": ci,
        "uncertainty": uncertainty,
        "per_class": per_class,
        "confusion": cm.tolist(),
    }


def per_group_scores(y_true, y_pred, k: int, groups) -> dict[str, dict]:
    """Windows, accuracy and balanced accuracy (over the classes present) per group."""
    groups = np.asarray(groups).astype(str)
    out = {}
    for c in sorted(set(groups.tolist())):
        m = groups == c
        s = scores(np.asarray(y_true)[m], np.asarray(y_pred)[m], k)
        out[c] = {"n": int(m.sum()), "accuracy": round(s["accuracy"], 4),
                  "balanced_accuracy": round(s["balanced_accuracy"], 4)}
    return out


def metric_text(m: dict, key: str) -> str:
    """One metric of a ``score_with_intervals`` result as printed: value with its interval, or with the
    group count, or with the exact bound."""
    note = (m.get("uncertainty") or {}).get("text", {}).get(key)
    return format_metric(m[key], (m.get("ci95") or {}).get(key), note)


def paired_delta(y_true, pred_a, pred_b, k: int, metric: str, groups=None,
                 n_boot: int = 2000, seed: int = 0, group_word: str = "group") -> dict:
    """metric(b) - metric(a) on the same samples, with a paired group-bootstrap interval.

    Below MIN_GROUPS_FOR_INTERVAL groups there is no interval (``ci95`` None, the reason in
    ``uncertainty``): one group resampled gives every resample that group, so the interval
    "+0.043 [+0.043, +0.043]" would look certain and say nothing (issue 21). ``ci95_bootstrap``
    keeps the resampled quantiles for a caller that must decide something (train's "beats the
    baseline"), never for printing."""
    y_true = np.asarray(y_true)
    if groups is None:
        groups = np.arange(y_true.size)
    pa = _group_confusions(y_true, pred_a, k, groups)
    pb = _group_confusions(y_true, pred_b, k, groups)
    w = _group_weights(pa.shape[0], n_boot, seed)
    da = _scores(_resampled(pa, w))[metric]
    db = _scores(_resampled(pb, w))[metric]
    point = float(_scores(pb.sum(0))[metric] - _scores(pa.sum(0))[metric])
    diff = db - da
    ci = [float(np.quantile(diff, 0.025)), float(np.quantile(diff, 0.975))]
    n_c = int(pa.shape[0])
    out = {"metric": metric, "delta": point, "ci95": ci, "groups": n_c}
    plural = group_word if n_c == 1 else f"{group_word}s"
    if n_c < MIN_GROUPS_FOR_INTERVAL:
        out.update(ci95=None, ci95_bootstrap=ci,
                   uncertainty={"kind": "few_groups", "groups": n_c,
                                "text": f"({n_c} {plural}: no interval; at least "
                                        f"{MIN_GROUPS_FOR_INTERVAL} are needed)"})
    elif ci[0] == ci[1]:
        # Every resample gives one value (the two models err on the same windows, or neither
        # errs): a zero-width interval would look certain, so none, and why.
        out.update(ci95=None, ci95_bootstrap=ci,
                   uncertainty={"kind": "constant", "groups": n_c,
                                "text": f"(the same in every resample of the {n_c} {plural}: no interval)"})
    return out


def delta_text(d: dict | None, digits: int = 3) -> str:
    """A ``paired_delta`` as printed: "+0.012 [-0.004, +0.031]", or the point with why it has
    no interval. Reads older reports too (no ``groups`` key: the interval as stored)."""
    if not isinstance(d, dict) or not isinstance(d.get("delta"), (int, float)):
        return "n/a"
    head = f"{d['delta']:+.{digits}f}"
    note = (d.get("uncertainty") or {}).get("text")
    ci = d.get("ci95")
    if note or not ci:
        return f"{head} {note or '(no interval)'}"
    return f"{head} [{ci[0]:+.{digits}f}, {ci[1]:+.{digits}f}]"


def disagreement(pred_a, pred_b) -> float:
    """Share of samples on which two models predict different classes."""
    a, b = np.asarray(pred_a), np.asarray(pred_b)
    return float(np.mean(a != b)) if a.size else 0.0


def refit_disagreement(kept_pred, refits: list[dict]) -> dict:
    """How many validation predictions retraining changes: for each refit with another seed
    (a trial record holding ``val_predictions``, removed from it here), the share of
    validation windows where it predicts another class than the kept model. The quantize
    stage's agreement gate compares int8's changes with these."""
    runs = []
    for r in refits:
        pred = r.pop("val_predictions", None)
        if r.get("status") == "ok" and pred is not None and len(pred) == len(kept_pred):
            runs.append({"seed": r["seed"], "share": disagreement(kept_pred, pred)})
    shares = [r["share"] for r in runs]
    return {"runs": runs, "windows": int(len(kept_pred)),
            "max": max(shares) if shares else None, "mean": float(np.mean(shares)) if shares else None,
            "what": "share of validation windows where a refit with another seed predicts another "
                    "class than the kept model (float.keras)"}


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


def format_metric(value: float, ci: list[float] | None = None, note: str | None = None) -> str:
    if note:
        return f"{value:.3f} {note}"
    if ci is None:
        return f"{value:.3f}"
    return f"{value:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]"
