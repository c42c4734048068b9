"""Overlapping cuts of one recording: samples that share stretches of identical time steps.

Edge Impulse's "split sample" makes several samples of one recording, and one file may be
cut twice; cuts that overlap share time steps. The split keeps such a family in one split
(``linked_cuts``), and the audit reports any pair in different splits (``shared_segments``).
"""

from __future__ import annotations

import numpy as np

from pipeline.data.dataset import Dataset

# Overlapping cuts of one recording share stretches of identical time steps. RUN_STEPS in a
# row, at least half of them distinct rows (so no constant, clipped or silent stretch), do
# not repeat by chance across different recordings of real sensors: a match is a shared cut.
# (ei-nano33-fall: two of its 294 samples, cut by Edge Impulse's "split sample" from one
# recording, share 18 and 19 identical 9-axis rows; no other pair shares even one run.)
RUN_STEPS = 16
# Sharing less than this share of the shorter sample's stretches, two samples are cuts of one
# recording (kept in one split); sharing more, one is a copy of the other (the audit's error).
CUT_MAX_SHARED = 0.5


def _run_hashes(values: np.ndarray) -> np.ndarray:
    """Hashes of every informative RUN_STEPS-step stretch of a (T, C) sample (uint64)."""
    v = np.ascontiguousarray(values, dtype=np.float32)
    if v.shape[0] < RUN_STEPS:
        return np.zeros(0, np.uint64)
    u = (v + np.float32(0.0)).view(np.uint32).astype(np.uint64)  # + 0.0: -0.0 equals 0.0
    with np.errstate(over="ignore"):
        primes = np.uint64(0x9E3779B97F4A7C15) ** np.arange(1, u.shape[1] + 1, dtype=np.uint64)
        row = (u * primes).sum(axis=1) * np.uint64(0xBF58476D1CE4E5B9)
        row ^= row >> np.uint64(31)
        n = row.size - RUN_STEPS + 1
        h = np.zeros(n, np.uint64)
        for j in range(RUN_STEPS):
            h = h * np.uint64(1099511628211) + row[j:j + n]
    srt = np.sort(np.lib.stride_tricks.sliding_window_view(row, RUN_STEPS)[:n], axis=1)
    distinct = 1 + np.count_nonzero(np.diff(srt, axis=1), axis=1)
    return np.unique(h[distinct >= RUN_STEPS // 2])


def shared_stretches(dataset: Dataset, indices=None) -> dict[tuple[int, int], float]:
    """Pairs of samples (i < j) that share identical RUN_STEPS-step stretches, with the share
    of the shorter one's stretches they share. Looked for in the values as recorded (before
    any resampling, ``Dataset.originals``)."""
    if dataset.windowed:
        return {}
    indices = np.arange(len(dataset)) if indices is None else np.asarray(indices)
    hashes, owners, counts = [], [], {}
    for i in indices:
        raw = dataset.originals[i] if dataset.originals is not None and dataset.originals[i] is not None else dataset.samples[i]
        h = _run_hashes(raw)
        hashes.append(h)
        owners.append(np.full(h.size, i))
        counts[int(i)] = max(h.size, 1)
    if not hashes:
        return {}
    h, o = np.concatenate(hashes), np.concatenate(owners)
    order = np.argsort(h, kind="stable")
    h, o = h[order], o[order]
    same = np.flatnonzero(h[1:] == h[:-1])
    pairs: dict = {}
    for j in same:
        a, b = sorted((int(o[j]), int(o[j + 1])))
        if a != b:
            pairs[(a, b)] = pairs.get((a, b), 0) + 1
    return {ab: n / min(counts[ab[0]], counts[ab[1]]) for ab, n in pairs.items()}


def linked_cuts(dataset: Dataset, groups: np.ndarray) -> tuple[np.ndarray, int]:
    """Groups with overlapping cuts of one recording merged, so a split keeps them together.

    Copies (sharing more than CUT_MAX_SHARED) are not merged: they are the audit's finding.
    """
    pairs = [ab for ab, share in shared_stretches(dataset).items() if share <= CUT_MAX_SHARED]
    if not pairs:
        return groups, 0
    parent = {u: u for u in np.unique(groups).tolist()}

    def find(u):
        while parent[u] != u:
            parent[u] = parent[parent[u]]
            u = parent[u]
        return u

    for a, b in pairs:
        ra, rb = find(str(groups[a])), find(str(groups[b]))
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    merged = np.asarray([find(str(u)) for u in groups])
    return merged, len(pairs)
