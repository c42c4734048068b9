"""Leakage checks: what the model could have seen of what it is scored on.

Overlap of groups and recordings is checked on samples (what the split assigned); duplicates,
near-duplicates and time overlap on windows (what a model sees), hashed on their content;
shared stretches of time steps on the samples as recorded. ``split_optimism`` measures what a
random window split would have claimed instead.
"""

from __future__ import annotations

import warnings
from collections import Counter, defaultdict
from itertools import combinations

import numpy as np

from pipeline.audit.pool import MAX_IDS, Pool, cv_score, fast_baseline, finding, id_list
from pipeline.data.cuts import RUN_STEPS, cut_recordings, shared_rows, shared_stretches
from pipeline.data.splits import SPLITS, Prepared


def check_group_overlap(prepared: Prepared) -> dict:
    ds, plan = prepared.dataset, prepared.plan
    pairs = [("train", "val"), ("train", "test"), ("val", "test")]
    samples, recordings, groups_err, groups_warn = {}, {}, {}, {}
    for a, b in pairs:
        ia, ib = plan.indices[a], plan.indices[b]
        key = f"{a}/{b}"
        shared = set(ds.sample_ids[ia].tolist()) & set(ds.sample_ids[ib].tolist())
        if shared:
            samples[key] = id_list(list(shared))
        shared = set(ds.recording_ids[ia].tolist()) & set(ds.recording_ids[ib].tolist())
        if shared:
            recordings[key] = id_list(list(shared))
        if ds.has_groups:
            shared = set(ds.group_ids[ia].tolist()) & set(ds.group_ids[ib].tolist())
            if shared:
                # The pipeline keeps groups whole unless the test split was given by the
                # source, or the split is chronological (it keeps recordings whole, not subjects).
                by_design = (plan.strategy == "time" or (plan.predefined_test and b == "test")
                             or plan.group_by != "group")
                (groups_warn if by_design else groups_err)[key] = id_list(list(shared))
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
        return finding("group_overlap", "error", False,
                      f"{' and '.join(what)} in more than one split ({', '.join(where)}): the model is "
                      "scored on what it was trained on", **detail)
    if groups_warn:
        names = sorted({g for v in groups_warn.values() for g in v})
        if plan.group_by == "recording" and plan.strategy != "time":
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
        return finding("group_overlap", "warning", False,
                      f"{len(names)} subject(s)/device(s) on both sides ({', '.join(names[:5])}"
                      f"{', ...' if len(names) > 5 else ''}): {why}; {how}", **detail)
    kept = "groups and recordings" if ds.has_groups else "recordings"
    return finding("group_overlap", "error", True, f"no {kept} in more than one split", **detail)


def duplicate_sets(pool: Pool) -> list[np.ndarray]:
    """Sets of windows (two or more) with identical content, in any splits."""
    by_hash: dict[str, list[int]] = defaultdict(list)
    for i, h in enumerate(pool.hashes.tolist()):
        by_hash[h].append(i)
    return [np.asarray(v) for v in by_hash.values() if len(v) > 1]


def _dup_example(pool: Pool, members: np.ndarray) -> dict:
    return {"windows": pool.window_ids[members][:10].tolist(),
            "splits": [SPLITS[s] for s in pool.split[members][:10]],
            "recordings": sorted(set(pool.recording_ids[members].tolist())),
            "labels_differ": bool(np.unique(pool.y[members]).size > 1)}


def _constant(x: np.ndarray) -> bool:
    """Every channel flat over the window: digital silence, a stuck sensor, all padding."""
    flat = x.reshape(-1, x.shape[-1])
    return bool(np.all(flat == flat[:1]))


def check_cross_split_duplicates(pool: Pool, dup_sets: list[np.ndarray]) -> dict:
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
        return finding("cross_split_duplicates", "error", False,
                      f"{len(cross)} window content(s) appear in more than one split "
                      f"({detail['windows']} windows, recordings {', '.join(recordings[:4])}"
                      f"{', ...' if len(recordings) > 4 else ''}): exact copies are scored as unseen data", **detail)
    return finding("cross_split_duplicates", "error", True, "no window content appears in two splits", **detail)


def check_within_split_duplicates(pool: Pool, dup_sets: list[np.ndarray]) -> dict:
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
        return finding("within_split_duplicates", "warning", False,
                      f"{total} duplicate window(s) inside splits: {shown}"
                      f"{'; ...' if len(recording_pairs) > 4 else ''}; duplicates weigh double in "
                      "training and in the score: remove re-uploads", **detail)
    return finding("within_split_duplicates", "warning", True, "no duplicate windows inside a split", **detail)


def _standardized_rows(pool: Pool) -> np.ndarray:
    """Windows flattened, each channel scaled by the training windows' mean and std."""
    X = np.nan_to_num(pool.X.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    train = X[pool.split == 0]
    axes = tuple(range(train.ndim - 1))
    mean = train.mean(axis=axes)
    std = train.std(axis=axes)
    std[std == 0] = 1.0
    return ((X - mean) / std).reshape(len(X), -1)


def _nearest(Z: np.ndarray, queries: np.ndarray, refs: np.ndarray, groups: np.ndarray | None = None,
             chunk: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """Distance from each query row to its nearest ref row (skipping refs of the query's group)."""
    R = Z[refs]
    r2 = np.einsum("ij,ij->i", R, R)
    dist = np.empty(queries.size)
    arg = np.empty(queries.size, dtype=np.int64)
    for s in range(0, queries.size, chunk):
        q = queries[s:s + chunk]
        Q = Z[q]
        d2 = np.einsum("ij,ij->i", Q, Q)[:, None] + r2[None, :] - 2.0 * Q @ R.T
        if groups is not None:
            d2[groups[q][:, None] == groups[refs][None, :]] = np.inf
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


def low_information(pool: Pool, acfg, Z: np.ndarray | None = None) -> np.ndarray:
    """Windows whose variation is below ``[audit] low_information_rms`` of the training spread:
    near-constant (a board lying still, silence), so nothing in them tells one recording from another."""
    Z = _standardized_rows(pool) if Z is None else Z
    _, norm = _variation(Z, pool.X.shape[1:])
    return norm / np.sqrt(Z.shape[1]) < acfg.low_information_rms


def check_near_duplicates(pool: Pool, acfg, seed: int, label_names=None) -> dict:
    """Validation/test windows that copy a window of another split, other than exactly,
    whatever the copy's level or gain.

    The rule, decided from data: a copy reproduces the *variation* of a window, not just its
    level. Each window is standardized with the training spread, then compared in two views
    of its variation: with each channel's own mean removed (a copy shifted in level), and
    that also divided by its own RMS (a copy at another gain: a sensor of another
    sensitivity, a rescaled export). In each view a window's nearest window of an earlier
    split (train for validation, train and validation for test) is found, and the distance
    is divided by the window's own size in that view (and, in the gain view, by
    ``GAIN_VIEW_SHARE``: a stricter limit); the smaller of the two ratios is the window's. Neighbours were once chosen on the raw window, level included: a copy offset by
    two thirds of the level spread then had a ratio of 1.07 to another window and was
    missed (0.007 to its true source). A re-upload, a rescaled, offset or re-recorded copy
    leaves only the noise: ratios of 0.005-0.05 for the copies of the tests' fixtures. Two
    different recordings differ by their variation itself: the smallest ratio between
    windows of different recordings was 0.59 (level view; 0.73 gain view) on ei-nano33-fall
    (real, 9 axes), 0.19 (0.29) on the synthetic motion data (12 subjects repeating one
    template per gesture) and 0.11 (0.11) on the embedded 8x8 digits, so 0.1 flags copies and
    no clean data, and any flagged window is an error.

    Near-constant windows (variation under ``low_information_rms`` of the training spread:
    0.015-0.05 for ei-nano33-fall's standing windows, 0.28 and more for its falls) carry no
    shape to copy: two still boards look alike whether or not one copied the other, and a
    model learns nothing from either but the level. They are set apart, counted per class
    and split, and reported, never an error; for the same reason no window is scaled up by
    more than 1 / ``low_information_rms`` in the gain view (no noise blown up into a shape).
    A gain that differs per channel (one sensor rescaled, not the others) is not undone.
    (The old rule, a distance under 5% of the median nearest-neighbour distance,
    flagged 24% of such windows in two real projects.)
    """
    rng = np.random.default_rng(seed)
    Z = _standardized_rows(pool)
    S, var = _variation(Z, pool.X.shape[1:])
    low = var / np.sqrt(Z.shape[1]) < acfg.low_information_rms
    train, val, test = (pool.where(s) for s in SPLITS)
    queries = np.concatenate([val, test])
    candidates = int(queries.size)
    sampled = queries.size > acfg.max_distance_queries
    if sampled:
        queries = np.sort(rng.choice(queries, acfg.max_distance_queries, replace=False))
    ratios, nearests = _copy_ratios(pool, S, var, queries, train, val, acfg.low_information_rms)
    ratios[1] /= GAIN_VIEW_SHARE  # judged against the stricter limit: in the same units as the level view
    best = np.argmin(ratios, axis=0)
    ratio, nearest = ratios.min(axis=0), nearests[best, np.arange(queries.size)]
    # A copy is put down to the gain view only when the level view alone would have missed it.
    view = np.where(ratios[0] < acfg.near_duplicate_ratio, 0, best)
    exact = pool.hashes[queries] == pool.hashes[nearest]
    judged = ~low[queries] & ~exact  # exact copies are cross_split_duplicates' finding
    flagged = judged & (ratio < acfg.near_duplicate_ratio)
    order = np.argsort(ratio[flagged])
    fq, fn, fr, fv = queries[flagged][order], nearest[flagged][order], ratio[flagged][order], view[flagged][order]
    examples = [{"window": pool.window_ids[q], "split": SPLITS[pool.split[q]], "nearest": pool.window_ids[n],
                 "nearest_split": SPLITS[pool.split[n]], "ratio": round(float(r), 4), "view": VIEWS[v]}
                for q, n, r, v in zip(fq[:20], fn[:20], fr[:20], fv[:20], strict=True)]
    names = sorted(set(pool.y.tolist()))
    low_by = {SPLITS[k]: {int(c): int(np.sum(low & (pool.split == k) & (pool.y == c))) for c in names}
              for k in range(len(SPLITS))}
    finite = judged & np.isfinite(ratio)
    smallest = round(float(np.min(ratio[finite])), 4) if finite.any() else None
    detail = {"ratio_below": acfg.near_duplicate_ratio, "queries": int(queries.size), "sampled": sampled,
              "candidates": candidates, "views": list(VIEWS),
              "judged": int(judged.sum()), "flagged": int(flagged.sum()), "smallest_ratio": smallest,
              "flagged_by_view": {name: int((fv == k).sum()) for k, name in enumerate(VIEWS)},
              "by_split": {s: int((pool.split[fq] == k).sum()) for k, s in enumerate(SPLITS) if k},
              "recordings": id_list(np.concatenate([pool.recording_ids[fq], pool.recording_ids[fn]])),
              "exact_copies_skipped": int(exact.sum()),
              "low_information": {"rms_below": acfg.low_information_rms, "windows": int(low.sum()),
                                  "by_split_and_class": low_by},
              "examples": examples}
    return _near_duplicates_finding(pool, acfg, queries, low, flagged, smallest, detail, label_names)


def _near_duplicates_finding(pool: Pool, acfg, queries, low, flagged, smallest, detail: dict, label_names) -> dict:
    """The near_duplicates finding's message: the copies (or none), what was set apart, and
    whether the check sampled."""
    sampled, candidates = detail["sampled"], detail["candidates"]
    lows = int(low[queries].sum())
    per = Counter(pool.y[queries][low[queries]].tolist())
    by_class = ", ".join(f"{label_names[c] if label_names else c} {n}" for c, n in sorted(per.items()))
    aside = (f"; {lows} near-constant validation/test window(s) set apart ({by_class}: look-alikes, not judged)"
             if lows else "")
    if sampled:
        aside += (f"; sampled {queries.size} of {candidates} validation/test windows (seeded; "
                  f"[audit] max_distance_queries = {acfg.max_distance_queries})")
    if not flagged.any():
        return finding("near_duplicates", "error", True,
                      f"no validation/test window reproduces the variation of a window of another split, at any "
                      f"level or gain (smallest ratio {smallest if smallest is None else round(smallest, 3)}, "
                      f"copies are below {acfg.near_duplicate_ratio:g}){aside}", **detail)
    recs = detail["recordings"]
    shifted = detail["flagged_by_view"]["gain"]
    return finding("near_duplicates", "error", False,
                  f"{int(flagged.sum())} validation/test window(s) are near-copies of a window of another split "
                  f"(their variation reproduced to within {acfg.near_duplicate_ratio:g}"
                  f"{f', {shifted} at another gain' if shifted else ''}; "
                  f"{', '.join(recs[:4])}{', ...' if len(recs) > 4 else ''}): re-uploads, or copies offset or "
                  f"rescaled{aside}", **detail)

VIEWS = ("level", "gain")  # how a copy was told: its mean-removed variation, or that divided by its RMS
# The gain view fits one more thing (the scale), so a look-alike gets closer in it: two devices
# at gains 0.83 apart repeating a pure sine (tests/ei_fixtures.py's updown) came to 0.090 in the
# gain view (0.22 in the level view), while gain copies with one LSB of noise (tests/copies.py)
# came to 0.025-0.048. A gain-view ratio counts as this share of near_duplicate_ratio: 0.065 at
# the default, between the two. (Real data: 0.60 on ei-nano33-fall, 0.185 on motion, 0.107 on
# the embedded digits in the gain view.) Ratios reported for the gain view are divided by it.
GAIN_VIEW_SHARE = 0.65


def _gain_normalized(S: np.ndarray, var: np.ndarray, floor: float) -> np.ndarray:
    """Mean-removed rows divided by their own RMS (all channels together, so a copy at another
    gain lands on its source), an RMS under ``floor`` (a near-constant window: noise only) counted
    as ``floor``."""
    rms = var / np.sqrt(S.shape[1])
    return S / np.maximum(rms, floor)[:, None]


def _copy_ratios(pool: Pool, S: np.ndarray, var: np.ndarray, queries: np.ndarray, train: np.ndarray,
                 val: np.ndarray, floor: float) -> tuple[np.ndarray, np.ndarray]:
    """(ratios, nearest windows), each (len(VIEWS), queries): in each view, the distance from a
    query to its nearest window of an earlier split divided by the query's own size there."""
    G = _gain_normalized(S, var, floor)
    sizes = (var, np.sqrt(np.einsum("ij,ij->i", G, G)))
    ratio = np.full((len(VIEWS), queries.size), np.inf)
    nearest = np.zeros((len(VIEWS), queries.size), dtype=np.int64)
    for s, refs in (("val", train), ("test", np.concatenate([train, val]))):
        m = np.flatnonzero(pool.split[queries] == SPLITS.index(s))
        if not m.size or not refs.size:
            continue
        for k, (rows, size) in enumerate(zip((S, G), sizes, strict=True)):
            dist, nearest[k, m] = _nearest(rows, queries[m], refs)
            with np.errstate(divide="ignore", invalid="ignore"):
                ratio[k, m] = np.where(size[queries[m]] > 0, dist / size[queries[m]], np.inf)
    return ratio, nearest


def check_shared_segments(prepared: Prepared) -> dict:
    """Samples in different splits that are one recording: they share a stretch of identical
    time steps (overlapping cuts, or one file cut twice or uploaded twice), looked for in the
    values as recorded (before any resampling), or they are cuts of one recording by name
    (``NAME.sN``). Every pair counts, also when three or more samples share one stretch, and in
    every strategy (time splits too). An error at any count; by default the splitter has
    already kept such samples together or quarantined them (``splits.json``: repairs)."""
    ds, plan = prepared.dataset, prepared.plan
    if ds.windowed:
        return finding("shared_segments", "info", True, "samples are windows already: exact copies are checked on windows")
    split_of = np.full(len(ds), -1)
    for k, s in enumerate(SPLITS):
        split_of[plan.indices[s]] = k
    pairs = {ab: ("stretch", n) for ab, n in shared_stretches(ds, np.flatnonzero(split_of >= 0)).items()
             if split_of[ab[0]] != split_of[ab[1]]}
    names = cut_recordings(ds)
    for name in np.unique(names[split_of >= 0]):
        members = np.flatnonzero((names == name) & (split_of >= 0))
        for a, b in combinations(members.tolist(), 2):
            if split_of[a] != split_of[b]:
                pairs.setdefault((a, b), ("name", 0.0))
    order = sorted(pairs.items(), key=lambda kv: (kv[1][0] != "stretch", -kv[1][1], kv[0]))
    listed = [{"samples": [ds.sample_ids[a], ds.sample_ids[b]], "splits": [SPLITS[split_of[a]], SPLITS[split_of[b]]],
               "link": why, "shared_share": round(float(n), 4),
               **({"shared_rows": shared_rows(ds, a, b)} if why == "stretch" and k < 20 else {})}
              for k, ((a, b), (why, n)) in enumerate(order)]
    quarantined = [r for r in prepared.manifest.get("repairs") or [] if r.get("kind") == "quarantined_cuts"]
    detail = {"run_steps": RUN_STEPS, "pairs": len(listed),
              "by_link": {w: sum(1 for p in listed if p["link"] == w) for w in ("stretch", "name")},
              "examples": listed[:20], "recordings": id_list([x for p in listed for x in p["samples"]]),
              "quarantined": sum(r.get("count", 0) for r in quarantined)}
    if listed:
        shown = ", ".join(" = ".join(p["samples"]) + (f" ({p['shared_rows']} rows)" if "shared_rows" in p else " (by name)")
                          for p in listed[:3])
        return finding("shared_segments", "error", False,
                      f"{len(listed)} pair(s) of samples in different splits are one recording "
                      f"({detail['by_link']['stretch']} share stretches of identical time steps, "
                      f"{detail['by_link']['name']} are cuts of it by name; {shown}{', ...' if len(listed) > 3 else ''}): "
                      "overlapping cuts of one recording, or copies of one file", **detail)
    aside = (f"; {detail['quarantined']} cut(s) of test recordings quarantined from training and validation "
             "(splits.json: repairs)" if detail["quarantined"] else "")
    return finding("shared_segments", "error", True,
                  f"no two samples of different splits share {RUN_STEPS} identical time steps or are cuts of "
                  f"one recording by name{aside}", **detail)


def check_window_overlap(pool: Pool, rate_hz: float | None) -> dict:
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
        return finding("window_overlap", "error", False,
                      f"{n_pairs} pair(s) of windows in different splits share time steps of one recording "
                      f"({', '.join(recordings[:4])}{', ...' if len(recordings) > 4 else ''})", **detail)
    return finding("window_overlap", "error", True, "no window shares time steps with a window of another split", **detail)


def check_temporal_order(pool: Pool, plan) -> dict:
    if plan.strategy != "time":
        return finding("temporal_order", "info", True, f"not a time split (strategy {plan.strategy!r}): nothing to check")
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
        return finding("temporal_order", "error", False,
                      f"{len(late_windows)} later-split window(s) start before the earlier split ends: "
                      "the model is scored on a past it was not meant to see", **detail)
    return finding("temporal_order", "error", True, "validation is after training and test after both", **detail)



def check_split_optimism(pool: Pool, F: np.ndarray, plan, acfg, folds: int, seed: int) -> dict:
    from sklearn.model_selection import StratifiedKFold, cross_validate

    tv = pool.where("train", "val")
    groups = pool.groups[tv]
    y = pool.y[tv]
    if np.unique(groups).size < 2 or np.bincount(y).max() < folds:
        return finding("split_optimism", "info", True, "too little data to cross-validate: not measured")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ours = cv_score(fast_baseline(seed), F[tv], y, groups, folds, seed)
        naive_cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
        naive = float(np.mean(cross_validate(fast_baseline(seed), F[tv], y, cv=naive_cv,
                                             scoring="balanced_accuracy")["test_score"]))
    gap = naive - ours
    detail = {"random_window_split": round(naive, 4), "pipeline_split": round(ours, 4), "gap": round(gap, 4),
              "warn_above": acfg.split_optimism_warn, "metric": "balanced_accuracy",
              "pipeline_unit": plan.group_by, "folds": folds}
    if plan.group_by == "sample":
        return finding("split_optimism", "info", True,
                      f"no recordings or groups: the pipeline's split is a random split (gap {gap:+.3f})", **detail)
    text = (f"a random window split scores {naive:.3f}, this pipeline's split by {plan.group_by} {ours:.3f}: "
            f"gap {gap:+.3f}")
    if gap > acfg.split_optimism_warn:
        return finding("split_optimism", "warning", False,
                      text + f"; a random split puts neighbouring (often overlapping) windows of the same "
                      f"{plan.group_by}s on both sides, so its figure would be optimistic by about that much", **detail)
    return finding("split_optimism", "warning", True, text, **detail)
