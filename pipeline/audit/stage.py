"""The data audit: leakage and data-quality checks on a prepared split (``audit.json``).

Every check is a plain dict: ``id``, ``severity`` (error, warning, info), ``passed``, a short
``message`` and a ``detail`` with counts and the offending ids. A failed error stops
``tinyml audit`` and ``tinyml train`` (exit 1) unless ``--allow-leakage`` is given, and the
override is written into ``audit.json``.

Overlap of groups and recordings is checked on samples (what the split assigned); duplicates,
near-duplicates and time overlap on windows (what a model sees), hashed on their content.
The model-based checks use one fast baseline (``summary_features`` -> StandardScaler ->
LogisticRegression) cross-validated with the pipeline's own splitter on the training and
validation windows; only ``label_issues`` also scores test windows with a model, and says
why that is not a look at the test set.
"""

from __future__ import annotations

import hashlib
import warnings
from collections import Counter, defaultdict
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path

import numpy as np

from pipeline.core.artifacts import write_json
from pipeline.core.errors import GateFailed
from pipeline.data.splits import (
    RUN_STEPS,
    SPLITS,
    GroupAwareKFold,
    Prepared,
    cross_validate_pipeline,
    cv_groups,
    prepare,
    shared_stretches,
)

AUDIT = "audit.json"
MAX_IDS = 50  # ids listed per finding; counts are always complete
RANK = {"error": 0, "warning": 1, "info": 2}

FIXES = {
    "group_overlap": "keep every recording (and, for a new-subject estimate, every subject/device) in one split: "
                     "use [split] strategy 'group' and remove splits.json to re-split",
    "cross_split_duplicates": "remove the duplicated samples from the dataset (keep one copy) and re-split",
    "near_duplicates": "look at the listed pairs; remove re-uploads and near copies, then re-split",
    "shared_segments": "put every cut of a recording in one split (with a predefined test split: move the listed "
                       "training samples to the testing category, or delete them), then remove splits.json",
    "window_overlap": "keep each recording in one split (strategy 'group' or 'time'), never window before splitting",
    "temporal_order": "use [split] strategy 'time' with a gap_s that covers the window length",
    "missing_classes": "add data for the missing classes, or lower [split] test_size/val_size",
    "non_finite": "remove or repair the windows with NaN/inf values",
    "permutation_test": "a model beats chance on shuffled labels: the splitter or the features leak across folds",
}


def _check(cid: str, severity: str, passed: bool, message: str, **detail) -> dict:
    return {"id": cid, "severity": severity, "passed": bool(passed), "message": message, "detail": detail}


def _ids(values, limit: int = MAX_IDS) -> list[str]:
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
class _Pool:
    """The windows of the three splits side by side, with the split of each."""

    X: np.ndarray
    y: np.ndarray
    split: np.ndarray  # index into SPLITS
    window_ids: np.ndarray
    recording_ids: np.ndarray
    group_ids: np.ndarray
    sample_index: np.ndarray
    start_times: np.ndarray
    units: np.ndarray  # what the pipeline keeps whole when cross-validating
    duration: float  # seconds a window covers (0 when the rate is unknown)
    hashes: np.ndarray
    padded: np.ndarray | None = None  # zero steps appended per window

    def where(self, *names: str) -> np.ndarray:
        return np.flatnonzero(np.isin(self.split, [SPLITS.index(s) for s in names]))


def _content_hash(x: np.ndarray) -> str:
    # + 0.0 turns -0.0 into 0.0, so equal values hash equal.
    return hashlib.blake2b(np.ascontiguousarray(x + 0.0, dtype="<f4").tobytes(), digest_size=16).hexdigest()


def _pool(prepared: Prepared) -> _Pool:
    ws = [prepared.windows[s] for s in SPLITS]
    ds = prepared.dataset
    X = np.concatenate([w.X for w in ws])
    sample_index = np.concatenate([w.sample_index for w in ws]).astype(np.int64)
    duration = prepared.plan.window_length / ds.rate_hz if ds.rate_hz else 0.0
    return _Pool(
        X=X,
        y=np.concatenate([w.y for w in ws]),
        split=np.concatenate([np.full(len(w), k) for k, w in enumerate(ws)]),
        window_ids=np.concatenate([w.window_ids for w in ws]).astype(str),
        recording_ids=np.concatenate([w.recording_ids for w in ws]).astype(str),
        group_ids=np.concatenate([w.group_ids for w in ws]).astype(str),
        sample_index=sample_index,
        start_times=np.concatenate([w.start_times for w in ws]).astype(np.float64),
        units=np.concatenate([cv_groups(w, prepared.plan) for w in ws]).astype(str),
        duration=float(duration),
        hashes=np.array([_content_hash(x) for x in X]),
        padded=np.concatenate([w.padded if w.padded is not None else np.zeros(len(w), np.int64) for w in ws]),
    )


# --------------------------------------------------------------------------- leakage checks


def check_group_overlap(prepared: Prepared) -> dict:
    ds, plan = prepared.dataset, prepared.plan
    pairs = [("train", "val"), ("train", "test"), ("val", "test")]
    samples, recordings, groups_err, groups_warn = {}, {}, {}, {}
    for a, b in pairs:
        ia, ib = plan.indices[a], plan.indices[b]
        key = f"{a}/{b}"
        shared = set(ds.sample_ids[ia].tolist()) & set(ds.sample_ids[ib].tolist())
        if shared:
            samples[key] = _ids(list(shared))
        shared = set(ds.recording_ids[ia].tolist()) & set(ds.recording_ids[ib].tolist())
        if shared:
            recordings[key] = _ids(list(shared))
        if ds.has_groups:
            shared = set(ds.group_ids[ia].tolist()) & set(ds.group_ids[ib].tolist())
            if shared:
                # The pipeline keeps groups whole unless the test split was given by the
                # source, or the split is chronological (it keeps recordings whole, not subjects).
                by_design = (plan.strategy == "time" or (plan.predefined_test and b == "test")
                             or plan.unit != "group")
                (groups_warn if by_design else groups_err)[key] = _ids(list(shared))
    detail = {"samples_in_two_splits": samples, "recordings_in_two_splits": recordings,
              "groups_in_two_splits": {**groups_err, **groups_warn}}
    if samples or recordings or groups_err:
        what = []
        if samples:
            what.append(f"{sum(len(v) for v in samples.values())} sample(s)")
        if recordings:
            what.append(f"{sum(len(v) for v in recordings.values())} recording(s)")
        if groups_err:
            what.append(f"{sum(len(v) for v in groups_err.values())} group(s)")
        where = sorted({*samples, *recordings, *groups_err})
        return _check("group_overlap", "error", False,
                      f"{' and '.join(what)} in more than one split ({', '.join(where)}): the model is "
                      "scored on what it was trained on", **detail)
    if groups_warn:
        names = sorted({g for v in groups_warn.values() for g in v})
        if plan.unit == "recording" and plan.strategy != "time":
            why = ("the data has one subject/device only, so the split keeps recordings whole and the test "
                   "score estimates performance on new recordings of that subject/device, not on new ones")
            how = "for a new-subject estimate collect data from more subjects/devices"
        elif plan.strategy == "time":
            why = ("the time split keeps recordings whole, not subjects/devices, so the test score "
                   "estimates performance on known subjects/devices at a later time")
            how = "for a new-subject estimate use [split] strategy = \"group\""
        else:
            why = ("the source's predefined test split shares them with training, so the test score "
                   "estimates performance on known subjects/devices, not new ones")
            how = ("for a new-subject estimate hold out whole subjects/devices: move all of a device's "
                   "samples to the testing category, or drop the predefined split and use strategy \"group\"")
        return _check("group_overlap", "warning", False,
                      f"{len(names)} subject(s)/device(s) on both sides ({', '.join(names[:5])}"
                      f"{', ...' if len(names) > 5 else ''}): {why}; {how}", **detail)
    kept = "groups and recordings" if ds.has_groups else "recordings"
    return _check("group_overlap", "error", True, f"no {kept} in more than one split", **detail)


def _duplicate_sets(pool: _Pool) -> list[np.ndarray]:
    by_hash: dict[str, list[int]] = defaultdict(list)
    for i, h in enumerate(pool.hashes.tolist()):
        by_hash[h].append(i)
    return [np.asarray(v) for v in by_hash.values() if len(v) > 1]


def _dup_example(pool: _Pool, members: np.ndarray) -> dict:
    return {"windows": pool.window_ids[members][:10].tolist(),
            "splits": [SPLITS[s] for s in pool.split[members][:10]],
            "recordings": sorted(set(pool.recording_ids[members].tolist())),
            "labels_differ": bool(np.unique(pool.y[members]).size > 1)}


def _constant(x: np.ndarray) -> bool:
    """Every channel flat over the window: digital silence, a stuck sensor, all padding."""
    flat = x.reshape(-1, x.shape[-1])
    return bool(np.all(flat == flat[:1]))


def check_cross_split_duplicates(pool: _Pool, dup_sets: list[np.ndarray]) -> dict:
    cross = [m for m in dup_sets if np.unique(pool.split[m]).size > 1]
    # Constant windows of different recordings are equal without being copies (silence,
    # a board at rest read by a coarse sensor): look-alikes, counted, not an error.
    constant = [m for m in cross if _constant(pool.X[m[0]])]
    cross = [m for m in cross if not _constant(pool.X[m[0]])]
    recordings = sorted({r for m in cross for r in pool.recording_ids[m].tolist()})
    per_pair: Counter = Counter()
    for m in cross:
        present = sorted(set(pool.split[m].tolist()))
        for i, a in enumerate(present):
            for b in present[i + 1:]:
                per_pair[f"{SPLITS[a]}/{SPLITS[b]}"] += 1
    detail = {"sets": len(cross), "windows": int(sum(m.size for m in cross)), "by_split_pair": dict(per_pair),
              "constant_look_alikes": int(sum(m.size for m in constant)),
              "recordings": recordings[:MAX_IDS], "examples": [_dup_example(pool, m) for m in cross[:20]]}
    if cross:
        return _check("cross_split_duplicates", "error", False,
                      f"{len(cross)} window content(s) appear in more than one split "
                      f"({detail['windows']} windows, recordings {', '.join(recordings[:4])}"
                      f"{', ...' if len(recordings) > 4 else ''}): exact copies are scored as unseen data", **detail)
    return _check("cross_split_duplicates", "error", True, "no window content appears in two splits", **detail)


def check_within_split_duplicates(pool: _Pool, dup_sets: list[np.ndarray]) -> dict:
    counts = {s: 0 for s in SPLITS}
    pairs: Counter = Counter()
    examples = []
    for m in dup_sets:
        for s in np.unique(pool.split[m]):
            inside = m[pool.split[m] == s]
            if inside.size < 2:
                continue
            counts[SPLITS[s]] += int(inside.size - 1)
            recs = sorted(set(pool.recording_ids[inside].tolist()))
            # A copy inside one recording is reported as the pair (recording, recording).
            for a, b in list(combinations(recs, 2)) or [(recs[0], recs[0])]:
                pairs[(SPLITS[s], a, b)] += 1
            if len(examples) < 20:
                examples.append(_dup_example(pool, inside))
    recording_pairs = [{"split": s, "recordings": [a, b], "windows": n}
                       for (s, a, b), n in sorted(pairs.items(), key=lambda kv: (-kv[1], kv[0]))]
    recordings = sorted({r for p in recording_pairs for r in p["recordings"]})
    detail = {"extra_copies": counts, "recording_pairs": recording_pairs[:MAX_IDS],
              "recordings": recordings[:MAX_IDS], "examples": examples}
    total = sum(counts.values())
    if total:
        shown = "; ".join(f"{' = '.join(dict.fromkeys(p['recordings']))} ({p['split']}, {p['windows']} windows)"
                          for p in recording_pairs[:4])
        return _check("within_split_duplicates", "warning", False,
                      f"{total} duplicate window(s) inside splits: {shown}"
                      f"{'; ...' if len(recording_pairs) > 4 else ''}; duplicates weigh double in "
                      "training and in the score: remove re-uploads", **detail)
    return _check("within_split_duplicates", "warning", True, "no duplicate windows inside a split", **detail)


def _standardized_rows(pool: _Pool) -> np.ndarray:
    """Windows flattened, each channel scaled by the training windows' mean and std."""
    X = np.nan_to_num(pool.X.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    train = X[pool.split == 0]
    axes = tuple(range(train.ndim - 1))
    mean = train.mean(axis=axes)
    std = train.std(axis=axes)
    std[std == 0] = 1.0
    return ((X - mean) / std).reshape(len(X), -1)


def _nearest(Z: np.ndarray, queries: np.ndarray, refs: np.ndarray, units: np.ndarray | None = None,
             chunk: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """Distance from each query row to its nearest ref row (skipping refs of the query's unit)."""
    R = Z[refs]
    r2 = np.einsum("ij,ij->i", R, R)
    dist = np.empty(queries.size)
    arg = np.empty(queries.size, dtype=np.int64)
    for s in range(0, queries.size, chunk):
        q = queries[s:s + chunk]
        Q = Z[q]
        d2 = np.einsum("ij,ij->i", Q, Q)[:, None] + r2[None, :] - 2.0 * Q @ R.T
        if units is not None:
            d2[units[q][:, None] == units[refs][None, :]] = np.inf
        j = np.argmin(d2, axis=1)
        arg[s:s + chunk] = refs[j]
        dist[s:s + chunk] = np.sqrt(np.maximum(d2[np.arange(q.size), j], 0.0))
    return dist, arg


def _variation(Z: np.ndarray, shape: tuple) -> tuple[np.ndarray, np.ndarray]:
    """Rows with each channel's own mean removed, and their norms: what a window shows beyond its level."""
    W = Z.reshape(len(Z), *shape)
    axes = tuple(range(1, W.ndim - 1))
    S = (W - W.mean(axis=axes, keepdims=True)).reshape(len(Z), -1)
    return S, np.sqrt(np.einsum("ij,ij->i", S, S))


def low_information(pool: _Pool, acfg, Z: np.ndarray | None = None) -> np.ndarray:
    """Windows whose variation is below ``[audit] low_information_rms`` of the training spread:
    near-constant (a board lying still, silence), so nothing in them tells one recording from another."""
    Z = _standardized_rows(pool) if Z is None else Z
    _, norm = _variation(Z, pool.X.shape[1:])
    return norm / np.sqrt(Z.shape[1]) < acfg.low_information_rms


def check_near_duplicates(pool: _Pool, acfg, seed: int, label_names=None) -> dict:
    """Validation/test windows that copy a window of another split, other than exactly.

    The rule, decided from data: a copy reproduces the *variation* of a window, not just its
    level. Each window is standardized with the training spread; its nearest window of an
    earlier split (train for validation, train and validation for test) is compared after
    removing each window's own mean, and the distance is divided by the window's own
    variation. A re-upload, a rescaled copy (x1.002 plus sensor noise) or a re-recording
    leaves only the noise: ratios of 0.005-0.05 for the copies of the tests' fixtures. Two
    different recordings differ by their variation itself: the smallest ratio between
    windows of different recordings was 0.60 on ei-nano33-fall (real, 9 axes) and 0.19 on the
    synthetic motion data (12 subjects repeating one template per gesture), so 0.1 flags
    copies and no clean data, and any flagged window is an error.

    Near-constant windows (variation under ``low_information_rms`` of the training spread:
    0.015-0.05 for ei-nano33-fall's standing windows, 0.28 and more for its falls) carry no
    shape to copy: two still boards look alike whether or not one copied the other, and a
    model learns nothing from either but the level. They are set apart, counted per class
    and split, and reported, never an error. (The old rule, a distance under 5% of the median
    nearest-neighbour distance, flagged 24% of such windows in two real projects.)
    """
    rng = np.random.default_rng(seed)
    Z = _standardized_rows(pool)
    S, var = _variation(Z, pool.X.shape[1:])
    low = var / np.sqrt(Z.shape[1]) < acfg.low_information_rms
    train, val, test = (pool.where(s) for s in SPLITS)
    queries = np.concatenate([val, test])
    sampled = queries.size > acfg.max_distance_queries
    if sampled:
        queries = np.sort(rng.choice(queries, acfg.max_distance_queries, replace=False))
    dist = np.full(queries.size, np.inf)
    nearest = np.zeros(queries.size, dtype=np.int64)
    for s, refs in (("val", train), ("test", np.concatenate([train, val]))):
        m = pool.split[queries] == SPLITS.index(s)
        if m.any() and refs.size:
            # Nearest by the whole window (level and variation), judged by the variation.
            _, nearest[m] = _nearest(Z, queries[m], refs)
            dist[m] = np.sqrt(np.einsum("ij,ij->i", S[queries[m]] - S[nearest[m]], S[queries[m]] - S[nearest[m]]))
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(var[queries] > 0, dist / var[queries], np.inf)
    exact = pool.hashes[queries] == pool.hashes[nearest]
    judged = ~low[queries] & ~exact  # exact copies are cross_split_duplicates' finding
    flagged = judged & (ratio < acfg.near_duplicate_ratio)
    order = np.argsort(ratio[flagged])
    fq, fn, fr = queries[flagged][order], nearest[flagged][order], ratio[flagged][order]
    examples = [{"window": pool.window_ids[q], "split": SPLITS[pool.split[q]], "nearest": pool.window_ids[n],
                 "nearest_split": SPLITS[pool.split[n]], "ratio": round(float(r), 4)}
                for q, n, r in zip(fq[:20], fn[:20], fr[:20], strict=True)]
    names = sorted(set(pool.y.tolist()))
    low_by = {SPLITS[k]: {int(c): int(np.sum(low & (pool.split == k) & (pool.y == c))) for c in names}
              for k in range(len(SPLITS))}
    smallest = float(np.min(ratio[judged & np.isfinite(ratio)])) if np.any(judged & np.isfinite(ratio)) else None
    detail = {"ratio_below": acfg.near_duplicate_ratio, "queries": int(queries.size), "sampled": sampled,
              "judged": int(judged.sum()), "flagged": int(flagged.sum()),
              "smallest_ratio": round(smallest, 4) if smallest is not None else None,
              "by_split": {s: int((pool.split[fq] == k).sum()) for k, s in enumerate(SPLITS) if k},
              "recordings": _ids(np.concatenate([pool.recording_ids[fq], pool.recording_ids[fn]])),
              "exact_copies_skipped": int(exact.sum()),
              "low_information": {"rms_below": acfg.low_information_rms, "windows": int(low.sum()),
                                  "by_split_and_class": low_by},
              "examples": examples}
    lows = int(low[queries].sum())
    per = Counter(pool.y[queries][low[queries]].tolist())
    by_class = ", ".join(f"{label_names[c] if label_names else c} {n}" for c, n in sorted(per.items()))
    aside = (f"; {lows} near-constant validation/test window(s) set apart ({by_class}: look-alikes, not judged)"
             if lows else "")
    if not flagged.any():
        return _check("near_duplicates", "error", True,
                      f"no validation/test window reproduces the variation of a window of another split "
                      f"(smallest ratio {smallest if smallest is None else round(smallest, 3)}, copies are below "
                      f"{acfg.near_duplicate_ratio:g}){aside}", **detail)
    recs = detail["recordings"]
    return _check("near_duplicates", "error", False,
                  f"{int(flagged.sum())} validation/test window(s) are near-copies of a window of another split "
                  f"(their variation reproduced to within {acfg.near_duplicate_ratio:g}; "
                  f"{', '.join(recs[:4])}{', ...' if len(recs) > 4 else ''}): re-uploads or rescaled copies{aside}",
                  **detail)


def check_shared_segments(prepared: Prepared) -> dict:
    """Samples in different splits that share a stretch of identical time steps: overlapping
    cuts of one recording (or one file cut twice), on both sides of the split. Looked for in
    the values as recorded (before any resampling). An error at any count."""
    ds, plan = prepared.dataset, prepared.plan
    if ds.windowed:
        return _check("shared_segments", "info", True, "samples are windows already: exact copies are checked on windows")
    split_of = np.full(len(ds), -1)
    for k, s in enumerate(SPLITS):
        split_of[plan.indices[s]] = k
    pairs = {ab: n for ab, n in shared_stretches(ds, np.flatnonzero(split_of >= 0)).items()
             if split_of[ab[0]] != split_of[ab[1]]}
    listed = [{"samples": [ds.sample_ids[a], ds.sample_ids[b]], "splits": [SPLITS[split_of[a]], SPLITS[split_of[b]]],
               "shared_share": round(float(n), 4)} for (a, b), n in sorted(pairs.items(), key=lambda kv: -kv[1])]
    detail = {"run_steps": RUN_STEPS, "pairs": len(listed), "examples": listed[:20],
              "recordings": _ids([x for p in listed for x in p["samples"]])}
    if listed:
        shown = ", ".join(" = ".join(p["samples"]) for p in listed[:3])
        return _check("shared_segments", "error", False,
                      f"{len(listed)} pair(s) of samples in different splits share stretches of identical time "
                      f"steps ({shown}{', ...' if len(listed) > 3 else ''}): overlapping cuts of one recording, or copies "
                      "of one file", **detail)
    return _check("shared_segments", "error", True,
                  f"no two samples of different splits share {RUN_STEPS} identical time steps", **detail)


MIN_CONFOUND = 10


def check_acquisition_confounding(pool: _Pool, ds, acfg, seed: int) -> dict:
    """A sampling rate, device type or zero-padding that goes with one class: a model can
    learn how a sample was recorded (resampled or not, padded or not) instead of what it shows."""
    facts = {key: np.asarray(v)[pool.sample_index] for key, v in ds.meta.items()}
    padded = getattr(pool, "padded", None)
    if padded is not None and np.any(padded > 0):
        facts["zero-padded"] = np.where(padded > 0, "padded", "not padded")
    k = ds.num_classes
    found, detail = [], {}
    share = np.bincount(pool.y, minlength=k) / max(pool.y.size, 1)
    for key, values in facts.items():
        uniq, inv = np.unique(values.astype(str), return_inverse=True)
        if uniq.size < 2:
            continue
        table = np.bincount(inv * k + pool.y, minlength=uniq.size * k).reshape(uniq.size, k)
        # Per value: how much purer in its main class than the data as a whole (0: no
        # purer, 1: that class only). One value of three classes' worth of data that holds
        # only waves is a confound even though the other value mixes the rest.
        main = table.argmax(axis=1)
        purity = table.max(axis=1) / np.maximum(table.sum(axis=1), 1)
        score = (purity - share[main]) / np.maximum(1 - share[main], 1e-9)
        # Fewer than MIN_CONFOUND windows with a value (three short samples padded) say nothing.
        hit = (score >= acfg.confounding_warn) & (table.sum(axis=1) >= MIN_CONFOUND)
        detail[key] = {"windows": {str(u): dict(zip(ds.label_names, row.tolist(), strict=True))
                                   for u, row in zip(uniq, table, strict=True)},
                       "score": {str(u): round(float(sc), 4) for u, sc in zip(uniq, score, strict=True)}}
        if hit.any():
            found.append((key, float(score[hit].max()), uniq, table))
    detail["warn_at"] = acfg.confounding_warn
    if found:
        parts = []
        for key, score, uniq, table in found:
            top = ", ".join(f"{u}: " + "/".join(f"{ds.label_names[c]} {table[i, c]}" for c in range(k) if table[i, c])
                            for i, u in enumerate(uniq[:4]))
            parts.append(f"{key} ({top}; score {score:.2f})")
        return _check("acquisition_confounding", "warning", False,
                      "how the data was recorded goes with the class: " + "; ".join(parts)
                      + ": a model can learn the recording setup instead of the task; record every class with every "
                      "setup, or check the per-device scores", **detail)
    return _check("acquisition_confounding", "warning", True,
                  "sampling rate, device type and padding do not go with the class"
                  if facts else "one sampling rate, device type and no padding: nothing to check", **detail)


def check_window_overlap(pool: _Pool, rate_hz: float | None) -> dict:
    # Only recordings with windows in two splits can overlap across splits.
    split_count = defaultdict(set)
    for r, s in zip(pool.recording_ids.tolist(), pool.split.tolist(), strict=True):
        split_count[r].add(s)
    suspects = sorted(r for r, ss in split_count.items() if len(ss) > 1)
    # A quarter step of tolerance so that back-to-back windows do not count as overlapping.
    eps = 0.25 / rate_hz if rate_hz else 0.0
    n_pairs, recordings, examples = 0, [], []
    for r in suspects:
        idx = np.flatnonzero(pool.recording_ids == r)
        start = pool.start_times[idx]
        end = start + pool.duration
        s = pool.split[idx]
        if pool.duration > 0:
            hit = (start[:, None] < end[None, :] - eps) & (start[None, :] < end[:, None] - eps)
        else:  # unknown rate: only windows at the same time stamp count
            hit = np.isclose(start[:, None], start[None, :], rtol=1e-12, atol=1e-9)
        hit &= s[:, None] < s[None, :]
        a, b = np.nonzero(hit)
        if a.size:
            n_pairs += int(a.size)
            recordings.append(r)
            examples.extend([pool.window_ids[idx[i]], pool.window_ids[idx[j]]]
                            for i, j in zip(a[:3], b[:3], strict=True))
    detail = {"overlapping_pairs": n_pairs, "recordings": recordings[:MAX_IDS], "examples": examples[:20],
              "window_seconds": pool.duration if pool.duration > 0 else None}
    if n_pairs:
        return _check("window_overlap", "error", False,
                      f"{n_pairs} pair(s) of windows in different splits share time steps of one recording "
                      f"({', '.join(recordings[:4])}{', ...' if len(recordings) > 4 else ''})", **detail)
    return _check("window_overlap", "error", True, "no window shares time steps with a window of another split", **detail)


def check_temporal_order(pool: _Pool, plan) -> dict:
    if plan.strategy != "time":
        return _check("temporal_order", "info", True, f"not a time split (strategy {plan.strategy!r}): nothing to check")
    end = pool.start_times + pool.duration
    late_windows, detail = [], {}
    for early, late in (("train", "val"), ("train", "test"), ("val", "test")):
        e, l_ = pool.where(early), pool.where(late)
        if not e.size or not l_.size:
            continue
        last_end = float(end[e].max())
        bad = l_[pool.start_times[l_] < last_end - 1e-6]
        detail[f"{early}/{late}"] = {"early_ends": last_end, "late_starts": float(pool.start_times[l_].min()),
                                     "windows_not_after": int(bad.size)}
        late_windows.extend(pool.window_ids[bad].tolist())
    detail["windows"] = late_windows[:MAX_IDS]
    if late_windows:
        return _check("temporal_order", "error", False,
                      f"{len(late_windows)} later-split window(s) start before the earlier split ends: "
                      "the model is scored on a past it was not meant to see", **detail)
    return _check("temporal_order", "error", True, "validation is after training and test after both", **detail)


# --------------------------------------------------------------------------- data checks


def _class_counts(pool: _Pool, names) -> dict[str, dict[str, int]]:
    return {s: dict(zip(names, np.bincount(pool.y[pool.split == k], minlength=len(names)).tolist(), strict=True))
            for k, s in enumerate(SPLITS)}


def check_missing_classes(pool: _Pool, names) -> dict:
    counts = _class_counts(pool, names)
    missing = {s: [c for c, n in cc.items() if n == 0] for s, cc in counts.items()}
    missing = {s: v for s, v in missing.items() if v}
    if missing:
        text = "; ".join(f"{s} lacks {', '.join(v)}" for s, v in missing.items())
        return _check("missing_classes", "error", False,
                      f"{text}: a class that is not trained on cannot be predicted, one not tested is not measured",
                      missing=missing, class_counts=counts)
    return _check("missing_classes", "error", True, "every class is in every split", missing={}, class_counts=counts)


def check_class_imbalance(pool: _Pool, names) -> dict:
    k = len(names)
    per_split, flagged = {}, []
    for s, cc in _class_counts(pool, names).items():
        present = {c: n for c, n in cc.items() if n > 0}
        if not present:
            continue
        big, small = max(present, key=present.get), min(present, key=present.get)
        ratio = present[big] / present[small]
        share = present[small] / sum(present.values())
        per_split[s] = {"largest": big, "smallest": small, "ratio": round(ratio, 3), "rarest_share": round(share, 4)}
        if ratio >= 3 or share < 0.1 / k:
            flagged.append(s)
    detail = {"per_split": per_split, "ratio_warn": 3, "rarest_share_warn": round(0.1 / k, 4)}
    if flagged:
        t = per_split[flagged[0]]
        return _check("class_imbalance", "warning", False,
                      f"classes are imbalanced in {', '.join(flagged)} ({t['largest']!r} is {t['ratio']:g}x "
                      f"{t['smallest']!r}): trust balanced accuracy, macro-F1, MCC and per-class recall; "
                      "plain accuracy rewards predicting the majority class", **detail)
    return _check("class_imbalance", "warning", True, "classes are balanced within 3:1 in every split", **detail)


def check_non_finite(pool: _Pool) -> dict:
    axes = tuple(range(1, pool.X.ndim))
    bad = np.flatnonzero(~np.all(np.isfinite(pool.X), axis=axes))
    detail = {"windows": pool.window_ids[bad][:MAX_IDS].tolist(), "count": int(bad.size),
              "by_split": {s: int((pool.split[bad] == k).sum()) for k, s in enumerate(SPLITS)}}
    if bad.size:
        return _check("non_finite", "error", False, f"{bad.size} window(s) hold NaN or infinite values", **detail)
    return _check("non_finite", "error", True, "every value is finite", **detail)


def check_constant_channels(pool: _Pool, channel_names) -> dict:
    names = list(channel_names) or [f"ch{c}" for c in range(pool.X.shape[-1])]
    X = np.nan_to_num(pool.X, nan=0.0)
    inner = tuple(range(1, X.ndim - 1))
    flat = np.ptp(X, axis=inner) == 0  # (n, C): channel flat within the window
    dead = {}
    for k, s in enumerate(SPLITS):
        m = pool.split == k
        if m.any():
            ptp = np.ptp(X[m], axis=tuple(range(X.ndim - 1)))
            dead_here = [names[c] for c in np.flatnonzero(ptp == 0)]
            if dead_here:
                dead[s] = dead_here
    rows = np.flatnonzero(flat.any(axis=1))
    detail = {"dead_channels": dead, "windows_with_flat_channel": int(rows.size),
              "windows": pool.window_ids[rows][:MAX_IDS].tolist(), "recordings": _ids(pool.recording_ids[rows])}
    if dead or rows.size:
        text = "; ".join(f"{', '.join(v)} constant over all of {s}" for s, v in dead.items())
        return _check("constant_channels", "warning", False,
                      (text + "; " if text else "") + f"{rows.size} window(s) with a flat channel "
                      "(a dead or disconnected sensor)", **detail)
    return _check("constant_channels", "warning", True, "no channel is flat", **detail)


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


def check_outliers(pool: _Pool, acfg, z: np.ndarray) -> dict:
    bad = np.flatnonzero(z > acfg.outlier_z)
    worst = bad[np.argsort(-z[bad])]
    detail = {"threshold_z": acfg.outlier_z, "count": int(bad.size),
              "by_split": {s: int((pool.split[bad] == k).sum()) for k, s in enumerate(SPLITS)},
              "recordings": _ids(pool.recording_ids[bad]),
              "worst": [{"window": pool.window_ids[i], "split": SPLITS[pool.split[i]], "z": round(float(z[i]), 1)}
                        for i in worst[:20]]}
    if bad.size:
        recs = detail["recordings"]
        return _check("outliers", "warning", False,
                      f"{bad.size} window(s) from {len(recs)} recording(s) hold values beyond robust z = "
                      f"{acfg.outlier_z:g} ({', '.join(recs[:4])}{', ...' if len(recs) > 4 else ''}): "
                      "spikes or glitches; look at them before trusting the scale of the inputs", **detail)
    return _check("outliers", "warning", True, f"no value beyond robust z = {acfg.outlier_z:g}", **detail)


def _purity(labels: np.ndarray, ids_inv: np.ndarray, n_ids: int, k: int) -> float:
    """Share of windows whose label is their id's most common label."""
    table = np.bincount(ids_inv * k + labels, minlength=n_ids * k).reshape(n_ids, k)
    return float(table.max(axis=1).sum() / labels.size)


def check_group_label_confounding(pool: _Pool, ds, acfg, seed: int) -> dict:
    if ds.has_groups:
        ids, what = pool.group_ids, "group"
    elif ds.has_recordings and ds.windowed:
        ids, what = pool.recording_ids, "recording"
        single = all(np.unique(pool.y[pool.recording_ids == r]).size == 1 for r in np.unique(ids))
        if single:
            return _check("group_label_confounding", "info", True,
                          "each recording carries one label, as expected; the split keeps recordings whole")
    else:
        return _check("group_label_confounding", "info", True,
                      "no subjects/devices recorded: nothing to check (a recording carries one label by design)")
    k = ds.num_classes
    uniq, inv = np.unique(ids, return_inverse=True)
    purity = _purity(pool.y, inv, uniq.size, k)
    # Chance level: the same purity with labels shuffled across samples (windows keep their
    # sample's label), so many small groups do not look predictive by themselves.
    rng = np.random.default_rng(seed)
    samples, s_inv = np.unique(pool.sample_index, return_inverse=True)
    s_label = np.zeros(samples.size, dtype=np.int64)
    s_label[s_inv] = pool.y
    chance = float(np.mean([_purity(rng.permutation(s_label)[s_inv], inv, uniq.size, k) for _ in range(20)]))
    score = (purity - chance) / (1.0 - chance) if chance < 1 else 0.0
    table = np.bincount(inv * k + pool.y, minlength=uniq.size * k).reshape(uniq.size, k)
    one_class = uniq[(table > 0).sum(axis=1) == 1]
    detail = {"by": what, "purity": round(purity, 4), "chance_purity": round(chance, 4), "score": round(score, 4),
              "warn_at": acfg.confounding_warn, f"{what}s_with_one_class": _ids(one_class)}
    if score >= acfg.confounding_warn:
        return _check("group_label_confounding", "warning", False,
                      f"{what} identity predicts the label (score {score:.2f}; 0 = no more than chance, 1 = "
                      f"determined): a model can learn who rather than what; {one_class.size} {what}(s) hold "
                      "one class only. Only a group split measures what carries over to new ones", **detail)
    return _check("group_label_confounding", "warning", True,
                  f"{what} identity does not predict the label (score {score:.2f})", **detail)


# --------------------------------------------------------------------------- model-based checks


def _cv_score(estimator, F, y, groups, folds, seed) -> float:
    res = cross_validate_pipeline(estimator, F, y, groups, n_splits=folds, seed=seed)
    return float(np.mean(res["test_balanced_accuracy"]))


def check_identifier_label(pool: _Pool, ds, acfg, folds: int, seed: int) -> dict:
    from sklearn.tree import DecisionTreeClassifier

    tv = pool.where("train", "val")
    groups = pool.units[tv]
    if np.unique(groups).size < 2:
        return _check("identifier_label", "info", True, "too few groups to cross-validate: not measured")
    y = pool.y[tv]
    k = np.unique(y).size
    # Edge Impulse names every file "<label>.<id>": the label in the name is not an id that
    # happens to predict it, so it is left out before ranking.
    names = np.asarray(ds.label_names)[ds.labels]
    bare = np.asarray([sid[len(n) + 1:] if sid.startswith(f"{n}.") else sid
                       for sid, n in zip(ds.sample_ids.tolist(), names.tolist(), strict=True)])
    id_rank = np.argsort(np.argsort(bare))  # position of each sample id in sorted order
    features = {
        "order": pool.sample_index[tv].astype(float),
        "time": pool.start_times[tv],
        "id": id_rank[pool.sample_index[tv]].astype(float),
    }
    tree = DecisionTreeClassifier(max_depth=int(np.ceil(np.log2(k))) + 3, min_samples_leaf=max(5, tv.size // 50),
                                  class_weight="balanced", random_state=seed)
    chance = 1.0 / k
    scores = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name, f in features.items():
            scores[name] = round(_cv_score(tree, f[:, None], y, groups, folds, seed), 4)
    limit = chance + acfg.identifier_max_above_chance
    flagged = [n for n, s in scores.items() if s > limit]
    detail = {"balanced_accuracy": scores, "chance": round(chance, 4), "warn_above": round(limit, 4),
              "model": "decision tree on one identifier, cross-validated with the pipeline's splitter"}
    if flagged:
        return _check("identifier_label", "warning", False,
                      f"the sample {' / '.join(flagged)} alone predicts the label (balanced accuracy "
                      f"{max(scores[n] for n in flagged):.2f}, chance {chance:.2f}): the data is ordered by "
                      "class, or classes were recorded at different times; a model may learn when, not what", **detail)
    return _check("identifier_label", "warning", True,
                  "sample order, id and time do not predict the label", **detail)


def _recording_labels(pool: _Pool, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(recording ids, their majority label, inverse index of idx into them)."""
    recs, inv = np.unique(pool.recording_ids[idx], return_inverse=True)
    k = int(pool.y.max()) + 1
    table = np.bincount(inv * k + pool.y[idx], minlength=recs.size * k).reshape(recs.size, k)
    return recs, table.argmax(axis=1), inv


def check_permutation_test(pool: _Pool, F: np.ndarray, acfg, folds: int, seed: int) -> dict:
    tv = pool.where("train", "val")
    groups = pool.units[tv]
    if np.unique(groups).size < 2:
        return _check("permutation_test", "info", True, "too few groups to cross-validate: not measured")
    # Labels are shuffled across recordings, not windows: all windows of a recording keep one
    # (wrong) label, so a splitter that lets a recording into two folds can be caught
    # memorizing it, and a sound one scores chance.
    recs, rec_label, inv = _recording_labels(pool, tv)
    k = int(np.unique(pool.y[tv]).size)
    rng = np.random.default_rng(seed)
    scores = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for p in range(max(1, acfg.permutations)):
            y_perm = rng.permutation(rec_label)[inv]
            scores.append(_cv_score(fast_baseline(seed), F[tv], y_perm, groups, folds, seed + p))
    mean = float(np.mean(scores))
    chance = 1.0 / k
    # With few recordings a chance-level score is noisy: never call a leak what three standard
    # errors of chance balanced accuracy (recordings independent) can explain.
    per_class = np.bincount(rec_label)[np.bincount(rec_label) > 0]
    noise = 3.0 * float(np.sqrt(np.sum(chance * (1 - chance) / per_class)) / k) / np.sqrt(len(scores))
    limit = chance + max(acfg.permutation_max_above_chance, noise)
    detail = {"balanced_accuracy": [round(s, 4) for s in scores], "mean": round(mean, 4), "chance": round(chance, 4),
              "error_above": round(limit, 4), "noise_floor": round(noise, 4), "permutations": acfg.permutations,
              "shuffled": "labels across recordings"}
    if mean > limit:
        return _check("permutation_test", "error", False,
                      f"the fast baseline scores {mean:.2f} balanced accuracy on shuffled labels (chance {chance:.2f}): "
                      "information crosses the folds, so the pipeline itself leaks", **detail)
    return _check("permutation_test", "error", True,
                  f"on shuffled labels the fast baseline scores {mean:.2f} (chance {chance:.2f})", **detail)


def check_split_optimism(pool: _Pool, F: np.ndarray, plan, acfg, folds: int, seed: int) -> dict:
    from sklearn.model_selection import StratifiedKFold, cross_validate

    tv = pool.where("train", "val")
    groups = pool.units[tv]
    y = pool.y[tv]
    if np.unique(groups).size < 2 or np.bincount(y).max() < folds:
        return _check("split_optimism", "info", True, "too little data to cross-validate: not measured")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ours = _cv_score(fast_baseline(seed), F[tv], y, groups, folds, seed)
        naive_cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
        naive = float(np.mean(cross_validate(fast_baseline(seed), F[tv], y, cv=naive_cv,
                                             scoring="balanced_accuracy")["test_score"]))
    gap = naive - ours
    detail = {"random_window_split": round(naive, 4), "pipeline_split": round(ours, 4), "gap": round(gap, 4),
              "warn_above": acfg.split_optimism_warn, "metric": "balanced_accuracy",
              "pipeline_unit": plan.unit, "folds": folds}
    if plan.unit == "sample":
        return _check("split_optimism", "info", True,
                      f"no recordings or groups: the pipeline's split is a random split (gap {gap:+.3f})", **detail)
    text = (f"a random window split scores {naive:.3f}, this pipeline's split by {plan.unit} {ours:.3f}: "
            f"gap {gap:+.3f}")
    if gap > acfg.split_optimism_warn:
        return _check("split_optimism", "warning", False,
                      text + f"; a random split puts neighbouring (often overlapping) windows of the same "
                      f"{plan.unit}s on both sides, so its figure would be optimistic by about that much", **detail)
    return _check("split_optimism", "warning", True, text, **detail)


def check_label_issues(pool: _Pool, F: np.ndarray, names, acfg, folds: int, seed: int) -> dict:
    tv, test = pool.where("train", "val"), pool.where("test")
    groups = pool.units[tv]
    if np.unique(groups).size < 2:
        return _check("label_issues", "info", True, "too few groups to cross-validate: not measured")
    k = len(names)
    proba = np.zeros((len(pool.y), k))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cv = GroupAwareKFold(folds, groups=groups, seed=seed)
        for fit_idx, held_idx in cv.split(F[tv], pool.y[tv]):
            est = fast_baseline(seed).fit(F[tv][fit_idx], pool.y[tv][fit_idx])
            proba[tv[held_idx][:, None], est.classes_[None, :]] = est.predict_proba(F[tv][held_idx])
        # Test recordings are scored by a model fit on train+val. This reads test labels, but
        # only to list suspicious recordings for a person to inspect: no model, feature or
        # threshold is chosen from it and no test metric is reported, so it is not a look at
        # the test set (nothing goes into test_ledger.jsonl). A mislabeled test recording
        # biases the test score as much as a training one, so it must be found too. Fixing
        # test labels only where this model disagrees would bias the test towards such models:
        # fix them by looking at the recordings themselves.
        if test.size:
            est = fast_baseline(seed).fit(F[tv], pool.y[tv])
            proba[test[:, None], est.classes_[None, :]] = est.predict_proba(F[test])
    scored = np.concatenate([tv, test])
    recs, rec_label, inv = _recording_labels(pool, scored)
    mean_p = np.zeros((recs.size, k))
    np.add.at(mean_p, inv, proba[scored])
    mean_p /= np.bincount(inv, minlength=recs.size)[:, None]
    own = mean_p[np.arange(recs.size), rec_label]
    other = mean_p.copy()
    other[np.arange(recs.size), rec_label] = -1.0
    best = other.argmax(axis=1)
    margin = other[np.arange(recs.size), best] - own
    split_of = dict(zip(pool.recording_ids[scored].tolist(), pool.split[scored].tolist(), strict=True))
    flagged = np.flatnonzero(margin > acfg.label_issue_margin)
    flagged = flagged[np.argsort(-margin[flagged])]
    issues = [{"recording": recs[i], "split": SPLITS[split_of[recs[i]]], "label": names[rec_label[i]],
               "predicted": names[best[i]], "p_label": round(float(own[i]), 3),
               "p_predicted": round(float(mean_p[i, best[i]]), 3)} for i in flagged]
    detail = {"margin": acfg.label_issue_margin, "recordings_scored": int(recs.size), "issues": issues[:MAX_IDS],
              "recordings": [x["recording"] for x in issues][:MAX_IDS],
              "how": "train/val: out-of-fold probabilities (pipeline's splitter); test: model fit on train+val; "
                     "mean probability per class over each recording's windows"}
    if issues:
        shown = ", ".join(f"{x['recording']} ({x['label']}, looks {x['predicted']})" for x in issues[:4])
        return _check("label_issues", "warning", False,
                      f"{len(issues)} recording(s) look like another class: {shown}"
                      f"{', ...' if len(issues) > 4 else ''}; check their labels by looking at them", **detail)
    return _check("label_issues", "warning", True, "no recording looks confidently like another class", **detail)


# --------------------------------------------------------------------------- the report


def _summary(prepared: Prepared, pool: _Pool, checks: dict, z: np.ndarray) -> dict:
    ds, plan = prepared.dataset, prepared.plan
    rate = ds.rate_hz
    lengths = ds.lengths

    def stats(idx):
        v = lengths[idx]
        out = {"min": int(v.min()), "median": float(np.median(v)), "max": int(v.max())}
        if rate and not ds.windowed:
            out["seconds"] = {k: round(val / rate, 3) for k, val in out.items()}
        return out

    worst = np.argsort(-z)[:10]
    return {
        "strategy": plan.strategy, "unit": plan.unit, "seed": plan.seed,
        "window": {"length": plan.window_length, "stride": plan.window_stride},
        "samples": {s: int(plan.indices[s].size) for s in SPLITS},
        "windows": {s: int((pool.split == k).sum()) for k, s in enumerate(SPLITS)},
        "class_counts": _class_counts(pool, ds.label_names),
        "groups": ({s: _ids(ds.group_ids[plan.indices[s]], 100) for s in SPLITS} if ds.has_groups else None),
        "recordings": {s: int(np.unique(ds.recording_ids[plan.indices[s]]).size) for s in SPLITS},
        "recording_lengths": {"all": stats(np.arange(len(ds))), **{s: stats(plan.indices[s]) for s in SPLITS}},
        "worst_outliers": [{"window": pool.window_ids[i], "split": SPLITS[pool.split[i]], "z": round(float(z[i]), 1)}
                           for i in worst if z[i] > 0],
        "duplicates": {"within_split": checks["within_split_duplicates"]["detail"]["recording_pairs"][:20],
                       "cross_split": checks["cross_split_duplicates"]["detail"]["recordings"]},
        "label_issues": checks["label_issues"]["detail"].get("recordings", []),
        "excluded": plan.excluded,
        "notes": list(plan.notes),
        "padded": {s: int(np.count_nonzero(pool.padded[pool.split == k])) for k, s in enumerate(SPLITS)}
        if pool.padded is not None else {},
    }


def run_audit(prepared: Prepared, cfg) -> dict:
    """Every check on a prepared split. Pure: reads nothing, writes nothing; deterministic per seed."""
    from threadpoolctl import threadpool_limits

    # One BLAS/OpenMP thread: these models are small, and on a busy 2-core machine threads
    # that spin waiting for each other made a 20 ms fit take 2 s.
    with threadpool_limits(limits=1):
        return _run_audit(prepared, cfg)


def _measured(cid: str, check, *args) -> dict:
    """A model-based check; on data too small to cross-validate (a fold with one class), info."""
    try:
        return check(*args)
    except ValueError as exc:
        return _check(cid, "info", True, f"not measured: the training and validation data are too small "
                                         f"to cross-validate ({exc})")


def _run_audit(prepared: Prepared, cfg) -> dict:
    acfg, seed, folds = cfg.audit, cfg.seed, cfg.split.folds
    ds = prepared.dataset
    names = ds.label_names
    pool = _pool(prepared)
    F = summary_features(pool.X)
    dup_sets = _duplicate_sets(pool)
    z = outlier_scores(pool.X, pool.X[pool.split == 0])
    checks = [
        check_group_overlap(prepared),
        check_cross_split_duplicates(pool, dup_sets),
        check_near_duplicates(pool, acfg, seed, names),
        check_shared_segments(prepared),
        check_window_overlap(pool, ds.rate_hz),
        check_temporal_order(pool, prepared.plan),
        check_missing_classes(pool, names),
        check_non_finite(pool),
        _measured("permutation_test", check_permutation_test, pool, F, acfg, folds, seed),
        check_class_imbalance(pool, names),
        check_group_label_confounding(pool, ds, acfg, seed),
        check_acquisition_confounding(pool, ds, acfg, seed),
        _measured("identifier_label", check_identifier_label, pool, ds, acfg, folds, seed),
        check_constant_channels(pool, ds.channel_names),
        check_outliers(pool, acfg, z),
        check_within_split_duplicates(pool, dup_sets),
        _measured("label_issues", check_label_issues, pool, F, names, acfg, folds, seed),
        _measured("split_optimism", check_split_optimism, pool, F, prepared.plan, acfg, folds, seed),
    ]
    by_id = {c["id"]: c for c in checks}
    # Failed errors first, then failed warnings, then the rest; stable within each.
    checks.sort(key=lambda c: (c["passed"], RANK[c["severity"]]))
    return {
        "checks": checks,
        "summary": _summary(prepared, pool, by_id, z),
        "errors_failed": [c["id"] for c in checks if c["severity"] == "error" and not c["passed"]],
        "warnings_failed": [c["id"] for c in checks if c["severity"] == "warning" and not c["passed"]],
    }


def format_report(doc: dict) -> list[str]:
    """The lines a person reads: counts per split, then every check, failures first."""
    s = doc["summary"]
    names = list(next(iter(s["class_counts"].values())))
    lines = [f"audit: {doc['dataset']['name']} split by {s['unit']} (strategy {s['strategy']}, seed {s['seed']}), "
             f"windows of {s['window']['length']} steps every {s['window']['stride']}"]
    head = f"  {'split':<6}{'samples':>8}{'windows':>8}{'recs':>6}{'groups':>7}  " + "  ".join(names)
    lines.append(head)
    for sp in SPLITS:
        groups = len(s["groups"][sp]) if s["groups"] else "-"
        counts = "  ".join(f"{s['class_counts'][sp][n]:>{len(n)}}" for n in names)
        lines.append(f"  {sp:<6}{s['samples'][sp]:>8}{s['windows'][sp]:>8}{s['recordings'][sp]:>6}{groups:>7}  {counts}")
    if s["groups"]:
        for sp in ("val", "test"):
            lines.append(f"  {sp} groups: {', '.join(s['groups'][sp][:12])}{' ...' if len(s['groups'][sp]) > 12 else ''}")
    for note in s.get("notes", []):
        lines.append(f"  note: {note}")
    if any((s.get("padded") or {}).values()):
        lines.append("  zero-padded windows ([split] pad = \"zero\"): "
                     + ", ".join(f"{sp} {n}" for sp, n in s["padded"].items()))
    rl = s["recording_lengths"]["all"]
    secs = f" ({rl['seconds']['min']:g}..{rl['seconds']['max']:g} s)" if "seconds" in rl else ""
    lines.append(f"  sample lengths: {rl['min']}..{rl['max']} steps{secs}, median {rl['median']:g}")
    for c in doc["checks"]:
        mark = "ok  " if c["passed"] else "FAIL"
        lines.append(f"  {mark} {c['severity']:<7} {c['id']:<24} {c['message']}")
    if s["worst_outliers"]:
        lines.append("  worst outliers: " + ", ".join(f"{o['window']} (z={o['z']:g})" for o in s["worst_outliers"][:5]))
    dup = s["duplicates"]
    if dup["within_split"] or dup["cross_split"]:
        pairs = [" = ".join(dict.fromkeys(p["recordings"])) for p in dup["within_split"][:6]]
        lines.append("  duplicates: " + "; ".join(pairs + ([f"across splits: {', '.join(dup['cross_split'][:6])}"]
                                                           if dup["cross_split"] else [])))
    if s["label_issues"]:
        lines.append("  label issues: " + ", ".join(s["label_issues"][:10]))
    if doc.get("override"):
        lines.append(f"  OVERRIDDEN by --allow-leakage: {', '.join(doc['override']['checks'])}")
    return lines


def audit_stage(cfg, run_dir, allow_leakage: bool = False, out=print) -> tuple[Prepared, dict]:
    """Split (``splits.json``), audit, write ``audit.json``; a failed error check raises
    GateFailed unless ``allow_leakage``, in which case the override is recorded."""
    run_dir = Path(run_dir)
    prepared = prepare(cfg, run_dir)
    report = run_audit(prepared, cfg)
    doc = {
        "version": 1,
        "dataset": prepared.dataset.summary(),
        "split": {"strategy": prepared.plan.strategy, "unit": prepared.plan.unit, "seed": prepared.plan.seed,
                  "predefined_test": prepared.plan.predefined_test, "reused": prepared.reused,
                  "test_sha256": prepared.manifest["test_sha256"]},
        **report,
        "passed": not report["errors_failed"],
        "allow_leakage": bool(allow_leakage),
    }
    failed = report["errors_failed"]
    if allow_leakage and failed:
        doc["override"] = {"checks": list(failed), "by": "--allow-leakage",
                           "note": "error-level findings were overridden; every score of this run is suspect"}
    path = write_json(run_dir / AUDIT, doc)
    skipped = prepared.manifest.get("skipped") or {}
    if skipped:
        # Nothing is dropped silently: what the loader or the windowing passed over, counted.
        out("data: skipped " + ", ".join(f"{n} ({why})" for why, n in skipped.items()))
    for line in format_report(doc):
        out(line)
    if failed and not allow_leakage:
        fixes = [f"{c}: {FIXES[c]}" for c in failed if c in FIXES]
        raise GateFailed(
            f"audit: {len(failed)} error-level check(s) failed: {', '.join(failed)} (details in {path})",
            hint="; ".join(fixes + [f"or pass --allow-leakage to go on anyway (recorded in {AUDIT})"]),
        )
    return prepared, doc
