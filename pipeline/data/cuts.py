"""Overlapping cuts of one recording: samples that share stretches of identical time steps,
and cuts of one recording by name.

Edge Impulse's "split sample" makes several samples of one recording, named ``NAME.s1``,
``NAME.s2``, ... (the file of each cut ends ``.sN`` before its extension); one file may also be
cut twice, or uploaded twice under two ids. Cuts that overlap share time steps. A split keeps
such a family together like one recording (``linked_groups``); with a predefined test split it
cannot, and the splitter quarantines the family's parts outside test (``pipeline.data.splits``).
The audit reports any linked pair in different splits (``shared_segments``).
"""

from __future__ import annotations

import re
from itertools import combinations

import numpy as np

from pipeline.data.dataset import Dataset
from pipeline.data.repairs import repair

# Overlapping cuts of one recording share stretches of identical time steps. RUN_STEPS in a
# row, at least half of them distinct rows (so no constant, clipped or silent stretch), do
# not repeat by chance across different recordings of real sensors: a match is a shared cut.
# (ei-nano33-fall: two pairs of its 294 samples, cuts by Edge Impulse's "split sample" of one
# recording, share 18 and 19 identical 9-axis rows; no other pair shares even one run. Runs
# of 8 would also find three pairs sharing 11-14 rows, all cuts of one recording by name, which
# the name links anyway; 16 keeps quantized quiet audio, a few distinct values, from matching.)
RUN_STEPS = 16
# Sharing less than this share of the shorter sample's stretches, two samples are cuts of one
# recording (kept in one split); sharing more, one is a copy of the other (the audit's error).
CUT_MAX_SHARED = 0.5
# Edge Impulse's split-sample cuts: the sample id (file name without extension) ends ".s<N>";
# what comes before is the recording (ei-nano33-fall: every one of its 294 files, 112 recordings).
CUT_NAME = re.compile(r"^(?P<recording>.+)\.s(?P<cut>\d+)$")


def _stretch_hashes(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Hash of the RUN_STEPS-step stretch starting at each step of a (T, C) sample (uint64),
    and whether it is informative (at least half of its rows distinct)."""
    v = np.ascontiguousarray(values, dtype=np.float32)
    if v.shape[0] < RUN_STEPS:
        return np.zeros(0, np.uint64), np.zeros(0, bool)
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
    return h, distinct >= RUN_STEPS // 2


def _run_hashes(values: np.ndarray) -> np.ndarray:
    """Hashes of every informative RUN_STEPS-step stretch of a (T, C) sample (uint64, unique)."""
    h, informative = _stretch_hashes(values)
    return np.unique(h[informative])


def _as_recorded(dataset: Dataset, i: int) -> np.ndarray:
    """A sample's values as recorded (before any resampling, ``Dataset.originals``)."""
    if dataset.originals is not None and dataset.originals[i] is not None:
        return dataset.originals[i]
    return dataset.samples[i]


def shared_stretches(dataset: Dataset, indices=None) -> dict[tuple[int, int], float]:
    """Pairs of samples (i < j) that share identical RUN_STEPS-step stretches, with the share
    of the shorter one's stretches they share. Looked for in the values as recorded (before
    any resampling, ``Dataset.originals``). When three or more samples share a stretch, every
    pair of them counts."""
    if dataset.windowed:
        return {}
    indices = np.arange(len(dataset)) if indices is None else np.asarray(indices)
    hashes, owners, counts = [], [], {}
    for i in indices:
        h = _run_hashes(_as_recorded(dataset, int(i)))
        hashes.append(h)
        owners.append(np.full(h.size, i))
        counts[int(i)] = max(h.size, 1)
    if not hashes:
        return {}
    h, o = np.concatenate(hashes), np.concatenate(owners)
    order = np.argsort(h, kind="stable")
    h, o = h[order], o[order]
    # Runs of one hash: each sample holds a hash once (np.unique), so a run of k is k samples.
    starts = np.flatnonzero(np.r_[True, h[1:] != h[:-1]])
    ends = np.r_[starts[1:], h.size]
    pairs: dict = {}
    for s, e in zip(starts[ends - starts > 1], ends[ends - starts > 1], strict=True):
        for a, b in combinations(sorted(int(x) for x in o[s:e]), 2):
            pairs[(a, b)] = pairs.get((a, b), 0) + 1
    return {ab: n / min(counts[ab[0]], counts[ab[1]]) for ab, n in pairs.items()}


def shared_rows(dataset: Dataset, i: int, j: int) -> int:
    """How many time steps (rows, as recorded) of sample ``i`` lie in a stretch it shares with ``j``."""
    h, informative = _stretch_hashes(_as_recorded(dataset, i))
    starts = np.flatnonzero(informative & np.isin(h, _run_hashes(_as_recorded(dataset, j))))
    if not starts.size:
        return 0
    edges = np.zeros(h.size + RUN_STEPS + 1, np.int64)
    np.add.at(edges, starts, 1)
    np.add.at(edges, starts + RUN_STEPS, -1)
    return int(np.count_nonzero(np.cumsum(edges)[:h.size + RUN_STEPS - 1]))


def cut_recordings(dataset: Dataset) -> np.ndarray:
    """The recording each sample is a cut of by name: its id without the final ``.sN`` (Edge
    Impulse's split-sample naming), or its own id. Cuts of one recording come from one device
    at one rate, so the name counts only with the same device (when the data names devices)
    and the same recorded rate: "wave.s0" and "wave.s2" of two boards are two recordings."""
    keys = []
    for i, sid in enumerate(dataset.sample_ids.tolist()):
        m = CUT_NAME.match(sid)
        if m is None:
            keys.append(sid)
            continue
        device = str(dataset.group_ids[i]) if dataset.has_groups else ""
        rate = str(dataset.meta["rate_hz"][i]) if "rate_hz" in dataset.meta else ""
        keys.append("\x1f".join((m.group("recording"), device, rate)))
    return np.asarray(keys)


def cut_links(dataset: Dataset) -> list[tuple[int, int, str]]:
    """Pairs (i < j) of samples that are one recording: they share stretches of identical
    steps (cuts that overlap, not copies: at most CUT_MAX_SHARED), "stretch", or are cuts of
    one recording by name, "name"."""
    links = {ab: "stretch" for ab, share in shared_stretches(dataset).items() if share <= CUT_MAX_SHARED}
    if not dataset.windowed:
        names = cut_recordings(dataset)
        for name in np.unique(names):
            members = np.flatnonzero(names == name)
            if members.size > 1:
                # One chain (not every pair) is enough to link a family of cuts.
                for a, b in zip(members[:-1], members[1:], strict=True):
                    links.setdefault((int(a), int(b)), "name")
    return [(a, b, why) for (a, b), why in sorted(links.items())]


def link_families(n: int, links) -> np.ndarray:
    """The family (smallest member index) of each of ``n`` items joined by ``links`` (pairs)."""
    parent = list(range(n))

    def find(u):
        while parent[u] != u:
            parent[u] = parent[parent[u]]
            u = parent[u]
        return u

    for a, b, *_ in links:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    return np.asarray([find(u) for u in range(n)])


def linked_groups(groups: np.ndarray, links) -> np.ndarray:
    """``groups`` with the groups of linked samples merged, so a split keeps them together."""
    if not links:
        return groups
    uniq, inv = np.unique(groups, return_inverse=True)
    fam = link_families(uniq.size, [(int(inv[a]), int(inv[b])) for a, b, *_ in links])
    return uniq[fam][inv]


def linked_cuts(dataset: Dataset, groups: np.ndarray) -> tuple[np.ndarray, int]:
    """Groups with cuts of one recording merged (``cut_links``), and how many links there were.

    Copies (sharing more than CUT_MAX_SHARED) are not merged: they are the audit's finding.
    """
    links = cut_links(dataset)
    return linked_groups(groups, links), len(links)


def quarantine_cuts(dataset: Dataset, links, test: np.ndarray) -> tuple[np.ndarray, dict | None]:
    """The samples outside the predefined test split (``test``, a mask) that are one recording
    with a test sample (``links``, from ``cut_links``), and the repair that lists them.

    The test split is kept exactly as its author made it; these parts of its recordings are
    left out of training and validation (quarantined, not deleted), each listed with the test
    samples of its recording and the rows it shares with them.
    """
    if not links:
        return np.zeros(0, np.int64), None
    family = link_families(len(dataset), links)
    test_families = np.unique(family[test])
    out = np.flatnonzero(~test & np.isin(family, test_families))
    if not out.size:
        return out, None
    ids = dataset.sample_ids
    stretch = {(a, b) for a, b, why in links if why == "stretch"}
    items = []
    for i in out.tolist():
        tests = np.flatnonzero(test & (family == family[i])).tolist()
        rows = {ids[j]: shared_rows(dataset, i, j) for j in tests if (min(i, j), max(i, j)) in stretch}
        shares = "; ".join(f"shares {n} rows with {t}" for t, n in rows.items())
        items.append({"sample": str(ids[i]), "test": [str(ids[j]) for j in tests],
                      "shared_rows": {str(t): int(n) for t, n in rows.items()},
                      "text": f"{ids[i]}: one recording with test {', '.join(ids[j] for j in tests[:3])}"
                              f"{', ...' if len(tests) > 3 else ''}"
                              f" ({shares or 'cuts of it by name'})"})
    items.sort(key=lambda x: -max(x["shared_rows"].values(), default=0))  # shared rows first
    n_rec = np.unique(family[out]).size
    what = (f"{out.size} sample(s) outside the predefined test split are cuts of {n_rec} recording(s) that the "
            "test split also holds (cuts by name, or sharing stretches of identical steps): quarantined, left out "
            "of training and validation (not deleted); the test split is kept as its author made it")
    return out, repair("quarantined_cuts", what, items)
