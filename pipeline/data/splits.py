"""Leakage-safe splits: by recording and group first, windows after.

The unit of splitting is the group (subject or device) when the data has groups, else the
recording. Every window of a recording and every recording of a group lands in one split.
Windows are cut from each split's samples only after the split is made.

Strategies:
- ``group``: stratified by class as far as groups allow (scikit-learn's StratifiedGroupKFold);
- ``time``: chronological, test strictly after train, with a gap;
- ``random``: for data with no recordings or groups only, and it says so;
- a predefined test split (Edge Impulse's ``testing`` category) is kept as the test split.

The split is written to ``splits.json``; later stages reuse it (same seed, same split) and
check the test content against its SHA-256.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from sklearn.model_selection import (
    BaseCrossValidator,
    GroupKFold,
    StratifiedGroupKFold,
    StratifiedKFold,
)

from pipeline.core.artifacts import read_json, write_json
from pipeline.data.datasets import Dataset
from pipeline.core.errors import PipelineError
from pipeline.core.safe_io import NUMBER, check_structure
from pipeline.data.windows import PAD_MIN_SHARE, Windows, choose_window, cut_windows

SPLITS = ("train", "val", "test")
MANIFEST = "splits.json"


@dataclass
class SplitPlan:
    """Sample indices per split, and how they were chosen."""

    strategy: str
    unit: str  # "group", "recording" or "sample": what was kept whole
    seed: int
    indices: dict[str, np.ndarray]
    window_length: int
    window_stride: int
    window_ms: float
    stride_ms: float
    predefined_test: bool = False
    notes: list[str] = field(default_factory=list)
    excluded: dict[str, list[str]] = field(default_factory=dict)  # reason -> sample ids
    sizes: dict[str, float] = field(default_factory=dict)  # test_size, val_size, gap_s asked for
    pad: str = "drop"  # samples shorter than a window: "zero" (padded) or "drop"
    requested: dict = field(default_factory=dict)  # window_ms/stride_ms as configured ("auto" or ms)
    window_why: str = ""  # how the window was chosen


def split_units(dataset: Dataset, strategy: str = "group") -> tuple[np.ndarray, str]:
    """The id each sample is kept whole by, and its name.

    In ``time`` mode the unit is the recording: subjects keep recording over the whole
    period, so a chronological split puts the same subjects on both sides (the audit says so).
    """
    if dataset.has_groups and strategy != "time":
        return dataset.group_ids, "group"
    if dataset.has_recordings or not dataset.windowed:
        return dataset.recording_ids, "recording"
    return dataset.sample_ids, "sample"


def resolve_strategy(dataset: Dataset, requested: str) -> str:
    _, unit = split_units(dataset)
    if requested == "auto":
        return "random" if unit == "sample" else "group"
    if requested == "random" and unit != "sample":
        raise PipelineError(
            f"[split] strategy 'random' on {dataset.source}: the data has {unit}s, and a random "
            "split would put windows of one "
            f"{unit} in both training and test",
            hint="use strategy 'group' (the default) or 'time'; the audit's split_optimism shows what a random split would claim",
        )
    if requested == "group" and unit == "sample":
        # No structure to respect: a group split over single samples is a random split.
        return "random"
    return requested


def _group_folds(n_folds: int, y: np.ndarray, seed: int):
    """Folds that keep groups whole, stratified by class when any class can fill every fold.

    StratifiedGroupKFold raises when every class has fewer members than folds (tiny data);
    then the folds are only shuffled, and the caller still prefers folds with every class.
    """
    if np.unique(y, return_counts=True)[1].max() >= n_folds:
        return StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    return GroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)


def _best_fold(folds, labels_all, n_classes, target_share, total):
    """Pick the fold whose held-out part has every class and the size closest to target."""
    best, best_key = None, None
    for train_idx, held_idx in folds:
        missing = n_classes - np.unique(labels_all[held_idx]).size
        missing_train = n_classes - np.unique(labels_all[train_idx]).size
        key = (missing + missing_train, abs(held_idx.size / total - target_share))
        if best_key is None or key < best_key:
            best, best_key = (train_idx, held_idx), key
    return best


def _hold_out(idx: np.ndarray, labels: np.ndarray, units: np.ndarray, share: float,
              n_classes: int, seed: int, grouped: bool, unit: str = "group") -> tuple[np.ndarray, np.ndarray]:
    """Split ``idx`` into (kept, held) with about ``share`` held out, units kept whole."""
    n_folds = max(2, int(round(1.0 / share)))
    y = labels[idx]
    if grouped:
        n_units = np.unique(units[idx]).size
        if n_units < 2:
            raise PipelineError(
                f"only {n_units} {unit}(s) left to split; need at least 2",
                hint=f"add {unit}s, or lower [split] test_size/val_size",
            )
        n_folds = min(n_folds, n_units)
        cv = _group_folds(n_folds, y, seed)
        folds = list(cv.split(np.zeros(idx.size), y, units[idx]))
    else:
        min_class = np.bincount(y).min() if y.size else 0
        n_folds = max(2, min(n_folds, int(min_class) if min_class >= 2 else 2))
        cv = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed) if min_class >= n_folds else None
        if cv is None:
            rng = np.random.default_rng(seed)
            perm = rng.permutation(idx.size)
            cut = int(round(idx.size * share))
            folds = [(perm[cut:], perm[:cut])]
        else:
            folds = list(cv.split(np.zeros(idx.size), y))
    kept, held = _best_fold(folds, y, n_classes, share, idx.size)
    return idx[kept], idx[held]


def _time_split(dataset: Dataset, cfg, units: np.ndarray) -> tuple[dict, dict, list]:
    """Chronological: units ordered by their first time; test last, validation before it."""
    rate = dataset.rate_hz or 1.0
    ends = dataset.start_times + dataset.lengths / rate
    uniq = np.unique(units)
    u_start = {u: dataset.start_times[units == u].min() for u in uniq}
    u_end = {u: ends[units == u].max() for u in uniq}
    order = sorted(uniq, key=lambda u: (u_start[u], u))
    sizes = np.array([np.sum(units == u) for u in order], dtype=float)
    cum = np.cumsum(sizes) / sizes.sum()
    n_test_from = int(np.searchsorted(cum, 1.0 - cfg.test_size))
    n_val_from = int(np.searchsorted(cum, 1.0 - cfg.test_size - cfg.val_size))
    n_test_from = max(n_test_from, 1)
    n_val_from = min(max(n_val_from, 1), n_test_from)
    parts = {"train": order[:n_val_from], "val": order[n_val_from:n_test_from], "test": order[n_test_from:]}
    excluded: dict[str, list[str]] = {}
    notes = []
    # The gap: drop units that end within gap_s of the start of the next split (or overlap it).
    for early, late in (("train", "val"), ("val", "test"), ("train", "test")):
        if not parts[late] or not parts[early]:
            continue
        boundary = min(u_start[u] for u in parts[late])
        keep = [u for u in parts[early] if u_end[u] + cfg.gap_s <= boundary]
        dropped = [u for u in parts[early] if u not in keep]
        if dropped:
            parts[early] = keep
            excluded.setdefault(f"within gap_s={cfg.gap_s} before {late}", []).extend(dropped)
    if excluded:
        n = sum(len(v) for v in excluded.values())
        notes.append(f"time split: {n} unit(s) dropped because they end within the gap before a later split")
    idx = {name: np.flatnonzero(np.isin(units, parts[name])) for name in SPLITS}
    excl_ids = {reason: dataset.sample_ids[np.isin(units, us)].tolist() for reason, us in excluded.items()}
    return idx, excl_ids, notes


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


def linked_cuts(dataset: Dataset, units: np.ndarray) -> tuple[np.ndarray, int]:
    """Units with overlapping cuts of one recording merged, so a split keeps them together.

    Copies (sharing more than CUT_MAX_SHARED) are not merged: they are the audit's finding.
    """
    pairs = [ab for ab, share in shared_stretches(dataset).items() if share <= CUT_MAX_SHARED]
    if not pairs:
        return units, 0
    parent = {u: u for u in np.unique(units).tolist()}

    def find(u):
        while parent[u] != u:
            parent[u] = parent[parent[u]]
            u = parent[u]
        return u

    for a, b in pairs:
        ra, rb = find(str(units[a])), find(str(units[b]))
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    merged = np.asarray([find(str(u)) for u in units])
    return merged, len(pairs)


def check_enough_samples(dataset: Dataset, predefined: bool) -> None:
    """Refuse, in one line, data too small for three splits with every class in each."""
    per_class = np.bincount(dataset.labels, minlength=dataset.num_classes)
    if predefined:
        per_class = np.bincount(dataset.labels[dataset.predefined_split != "test"], minlength=dataset.num_classes)
    need = 2 if predefined else 3  # one sample of each class per split it must fill
    short = {n: int(c) for n, c in zip(dataset.label_names, per_class, strict=True) if c < need}
    if short:
        have = ", ".join(f"{n} {c}" for n, c in short.items())
        where = "outside the predefined test split" if predefined else "in all"
        raise PipelineError(
            f"{dataset.source}: too few samples to split: have {have} {where}; need at least {need} of every "
            f"class ({need * dataset.num_classes} samples) for {'training and validation' if predefined else 'training, validation and test'}",
            hint="add samples, or drop the classes with too few")


def plan_split(dataset: Dataset, cfg, seed: int) -> SplitPlan:
    """Decide which samples go to train, validation and test. ``cfg`` is a SplitConfig."""
    strategy = resolve_strategy(dataset, cfg.strategy)
    units, unit = split_units(dataset, strategy)
    notes: list[str] = list(dataset.notes.get("loader", []))
    check_enough_samples(dataset, dataset.predefined_split is not None and bool(np.any(dataset.predefined_split == "test")))
    pool = units if dataset.predefined_split is None else units[dataset.predefined_split != "test"]
    if unit == "group" and np.unique(pool).size < 2:
        # One subject/device (a common Edge Impulse project): nothing to hold out by group.
        units, unit = dataset.recording_ids, "recording"
        notes.append(
            "one subject/device only: split by recording; the scores estimate performance on "
            "new recordings of that subject/device, not on new ones"
        )
    choice = choose_window(dataset, cfg.window_ms, cfg.stride_ms)
    length, stride = choice.length, choice.stride
    pad = getattr(cfg, "pad", "drop")
    if not dataset.windowed:
        notes.append(f"windows of {length} steps ({choice.window_ms:g} ms) every {stride} steps: {choice.why}"
                     + (f"; samples shorter than a window but at least {PAD_MIN_SHARE:.0%} of it are zero-padded "
                        "at the end ([split] pad = \"zero\")" if pad == "zero" else ""))
    k = dataset.num_classes
    all_idx = np.arange(len(dataset))
    excluded: dict[str, list[str]] = {}
    predefined = dataset.predefined_split is not None and np.any(dataset.predefined_split == "test")
    if strategy == "random":
        notes.append(
            "random split: the data has no recordings or groups, so samples are split independently; "
            "the test score estimates performance on new samples from the same sources"
        )
    def assign(units, unit):
        if predefined:
            test = all_idx[dataset.predefined_split == "test"]
            rest = all_idx[dataset.predefined_split != "test"]
            share = cfg.val_size / (1.0 - cfg.test_size)
            train, val = _hold_out(rest, dataset.labels, units, share, k, seed, strategy != "random", unit)
            return {"train": train, "val": val, "test": test}
        grouped = strategy == "group"
        rest, test = _hold_out(all_idx, dataset.labels, units, cfg.test_size, k, seed, grouped, unit)
        share = cfg.val_size / (1.0 - cfg.test_size)
        train, val = _hold_out(rest, dataset.labels, units, share, k, seed + 1, grouped, unit)
        return {"train": train, "val": val, "test": test}

    if strategy == "time":
        idx, excluded, time_notes = _time_split(dataset, cfg, units)
        notes.extend(time_notes)
        if dataset.has_groups:
            notes.append(
                "time split: recordings are kept whole, but subjects/devices appear on both sides, "
                "so the test score estimates performance on known subjects at a later time"
            )
    else:
        if unit == "recording":
            units, n_linked = linked_cuts(dataset, units)
            if n_linked:
                notes.append(f"{n_linked} pair(s) of samples share stretches of identical time steps (overlapping "
                             "cuts of one recording): each such family is kept in one split")
        idx = assign(units, unit)
        lacking = [s for s in SPLITS if np.unique(dataset.labels[idx[s]]).size < k]
        if unit == "group" and lacking:
            # Few subjects/devices, some holding one class only (two boards, one of which
            # recorded only falls): no split by group gives every split every class. A split
            # by recording does; a new-device estimate is then not possible, and it says so.
            n_groups = np.unique(pool).size
            units, unit = dataset.recording_ids, "recording"
            units, n_linked = linked_cuts(dataset, units)
            idx = assign(units, unit)
            notes.append(
                f"{n_groups} subjects/devices, too few to split by group with every class in every split "
                f"({', '.join(lacking)} would lack a class): split by recording instead; the scores estimate "
                "performance on new recordings of these subjects/devices, not on new ones")
        if predefined:
            notes.append(f"predefined test split kept ({idx['test'].size} samples from the source's testing category)")
    for name in SPLITS:
        idx[name] = np.sort(np.asarray(idx[name], dtype=np.int64))
        if idx[name].size == 0:
            raise PipelineError(
                f"split {name!r} is empty with strategy {strategy!r}",
                hint="the data has too few recordings/groups for three splits; lower [split] test_size/val_size or add data",
            )
    return SplitPlan(
        strategy=strategy, unit=unit, seed=seed, indices=idx, window_length=length,
        window_stride=stride, window_ms=choice.window_ms, stride_ms=choice.stride_ms,
        predefined_test=bool(predefined), notes=notes, excluded=excluded,
        sizes={"test_size": cfg.test_size, "val_size": cfg.val_size, "gap_s": cfg.gap_s},
        pad=pad, requested={"window_ms": cfg.window_ms, "stride_ms": cfg.stride_ms}, window_why=choice.why,
    )


def make_windows(dataset: Dataset, plan: SplitPlan, skipped: dict | None = None) -> dict[str, Windows]:
    """Cut the windows of each split, from that split's samples only."""
    out = {}
    for name in SPLITS:
        w = cut_windows(dataset, plan.indices[name], plan.window_length, plan.window_stride, skipped, plan.pad)
        if len(w) == 0:
            raise PipelineError(
                f"split {name!r} has no windows: its samples are all shorter than {plan.window_length} steps",
                hint="lower [split] window_ms, or set it to \"auto\"",
            )
        out[name] = w
    return out


def padded_counts(windows: dict[str, Windows]) -> dict[str, int]:
    """Zero-padded windows per split."""
    return {name: int(np.count_nonzero(w.padded)) if w.padded is not None else 0 for name, w in windows.items()}


def content_sha256(w: Windows) -> str:
    """SHA-256 of a split's content: window ids, labels and values, in order."""
    h = hashlib.sha256()
    h.update("\n".join(w.window_ids.tolist()).encode())
    h.update(np.ascontiguousarray(w.y, dtype="<i8").tobytes())
    h.update(np.ascontiguousarray(w.X, dtype="<f4").tobytes())
    return h.hexdigest()


def manifest(dataset: Dataset, plan: SplitPlan, windows: dict[str, Windows], skipped: dict) -> dict:
    return {
        "version": 1,
        "dataset": {"name": dataset.name, "source": dataset.source, "kind": dataset.kind,
                    "label_names": list(dataset.label_names), "rate_hz": dataset.rate_hz,
                    "channels": list(dataset.channel_names)},
        "strategy": plan.strategy,
        "unit": plan.unit,
        "seed": plan.seed,
        "predefined_test": plan.predefined_test,
        "window": {"length": plan.window_length, "stride": plan.window_stride,
                   "window_ms": plan.window_ms, "stride_ms": plan.stride_ms,
                   "requested": plan.requested, "why": plan.window_why, "pad": plan.pad,
                   "padded": padded_counts(windows),
                   "input_shape": list(windows["train"].X.shape[1:])},
        "resampled": dataset.notes.get("resampled"),
        "splits": {name: dataset.sample_ids[plan.indices[name]].tolist() for name in SPLITS},
        "windows": {name: len(windows[name]) for name in SPLITS},
        "test_sha256": content_sha256(windows["test"]),
        "notes": plan.notes,
        "excluded": plan.excluded,
        "sizes": plan.sizes,
        "skipped": skipped,
    }


MANIFEST_SCHEMA = {
    "dataset": {"source": str, "label_names": [str]},
    "strategy": str, "unit": str, "seed": int, "predefined_test?": bool,
    "window": {"length": int, "stride": int, "window_ms": NUMBER, "stride_ms": NUMBER,
               "pad?": str, "requested?": dict, "why?": str},
    "splits": {name: [str] for name in SPLITS},
    "test_sha256": str, "notes?": list, "excluded?": dict, "sizes?": dict,
}
"""What readers of ``splits.json`` rely on; anything else in it is for people."""


def check_manifest(man, path: str | Path = MANIFEST) -> dict:
    """``man`` if it has the structure of a ``splits.json``, else a PipelineError naming the field."""
    hint = "the file was edited or damaged: restore it, or remove it to make a new split (tinyml train)"
    try:
        check_structure(man, MANIFEST_SCHEMA, str(path))
    except PipelineError as exc:
        raise PipelineError(exc.message, hint=hint) from None
    for key in ("length", "stride"):
        if man["window"][key] < 1:
            raise PipelineError(f"{path}: field 'window.{key}': expected at least 1, got {man['window'][key]}", hint=hint)
    return man


def plan_from_manifest(dataset: Dataset, man: dict, path: str = MANIFEST) -> SplitPlan:
    """Rebuild a plan from ``splits.json``; every id must exist in the dataset."""
    check_manifest(man, path)
    pos = {sid: i for i, sid in enumerate(dataset.sample_ids.tolist())}
    idx = {}
    for name in SPLITS:
        ids = man["splits"][name]
        missing = [s for s in ids if s not in pos]
        if missing:
            raise PipelineError(
                f"{path}: split {name!r} names {len(missing)} sample(s) not in the dataset (e.g. {missing[0]!r})",
                hint="the dataset changed since the split was made; remove splits.json to make a new split",
            )
        idx[name] = np.asarray(sorted(pos[s] for s in ids), dtype=np.int64)
    w = man["window"]
    return SplitPlan(
        strategy=man["strategy"], unit=man["unit"], seed=man["seed"], indices=idx,
        window_length=w["length"], window_stride=w["stride"], window_ms=w["window_ms"],
        stride_ms=w["stride_ms"], predefined_test=man.get("predefined_test", False),
        notes=man.get("notes", []), excluded=man.get("excluded", {}), sizes=man.get("sizes", {}),
        pad=w.get("pad", "drop"), requested=w.get("requested", {}), window_why=w.get("why", ""),
    )


def split_from_manifest(dataset: Dataset, man: dict, path: str | Path = MANIFEST) -> tuple[SplitPlan, dict[str, Windows]]:
    """Rebuild a written split (plan and windows); its test content must match its SHA-256."""
    plan = plan_from_manifest(dataset, man, str(path))
    windows = make_windows(dataset, plan, dict(dataset.skipped))
    sha = content_sha256(windows["test"])
    if sha != man["test_sha256"]:
        raise PipelineError(
            f"{path}: the test split's content changed since it was written (SHA-256 {sha[:12]} != {man['test_sha256'][:12]})",
            hint="the data or the loader changed; remove the run directory to start a new run",
        )
    return plan, windows


@dataclass
class Prepared:
    dataset: Dataset
    plan: SplitPlan
    windows: dict[str, Windows]
    manifest: dict
    reused: bool

    @property
    def cluster_word(self) -> str:
        """What the split keeps whole, as the tables name it ("subject", "device", "recording")."""
        return {"group": self.dataset.notes.get("group_word", "group")}.get(self.plan.unit, self.plan.unit)


def _manifest_matches(man: dict, dataset: Dataset, cfg) -> bool:
    w = man.get("window", {})
    # A split asked for with other sizes is another split (manifests before "sizes" match on the rest).
    sizes = man.get("sizes") or {}
    same_sizes = all(sizes.get(k, getattr(cfg.split, k)) == getattr(cfg.split, k)
                     for k in ("test_size", "val_size", "gap_s"))
    # Manifests from before "auto" windows recorded the configured ms as window_ms.
    requested = w.get("requested") or {"window_ms": w.get("window_ms"), "stride_ms": w.get("stride_ms")}
    return (
        same_sizes
        and man.get("dataset", {}).get("source") == dataset.source
        and man.get("dataset", {}).get("rate_hz") == dataset.rate_hz
        and man.get("seed") == cfg.seed
        and resolve_strategy(dataset, cfg.split.strategy) == man.get("strategy")
        and requested.get("window_ms") == cfg.split.window_ms
        and requested.get("stride_ms") == cfg.split.stride_ms
        and w.get("pad", "drop") == cfg.split.pad
    )


def prepare(cfg, run_dir: str | Path, dataset: Dataset | None = None, write: bool = True) -> Prepared:
    """Load the dataset and the split: reuse ``splits.json`` when it matches the config,
    else plan a new split and write it. The reused test content must match its SHA-256."""
    from pipeline.data.datasets import dataset_from_config

    run_dir = Path(run_dir)
    dataset = dataset if dataset is not None else dataset_from_config(cfg)
    path = run_dir / MANIFEST
    skipped = dict(dataset.skipped)
    if path.exists():
        man = check_manifest(read_json(path, "the split manifest"), path)
        if _manifest_matches(man, dataset, cfg):
            plan, windows = split_from_manifest(dataset, man, path)
            return Prepared(dataset, plan, windows, man, reused=True)
    plan = plan_split(dataset, cfg.split, cfg.seed)
    windows = make_windows(dataset, plan, skipped)
    man = manifest(dataset, plan, windows, skipped)
    if write:
        write_json(path, man)
    return Prepared(dataset, plan, windows, man, reused=False)


def load_run_split(cfg, run_dir: str | Path) -> Prepared:
    """The dataset and split of an existing run: ``splits.json`` must exist and match."""
    path = Path(run_dir) / MANIFEST
    if not path.exists():
        raise PipelineError(f"{path}: not found", hint="run `tinyml train` (make train) first")
    prepared = prepare(cfg, run_dir, write=False)
    if not prepared.reused:
        raise PipelineError(
            f"{path}: was made with another dataset, seed or window than this config",
            hint="pass the same --config/--dataset/--seed as the train stage",
        )
    return prepared


def load_split_windows(cfg, run_dir: str | Path, name: str) -> Windows:
    """The windows of one split of an existing run."""
    if name not in SPLITS:
        raise PipelineError(f"unknown split {name!r}; expected one of {SPLITS}")
    return load_run_split(cfg, run_dir).windows[name]


class GroupAwareKFold(BaseCrossValidator):
    """K folds that keep groups whole, stratified by class as far as groups allow.

    A scikit-learn CV object: pass it as ``cv=`` anywhere. Give the groups at construction
    (``GroupAwareKFold(4, groups=windows.group_ids)``) or to ``split``.
    """

    def __init__(self, n_splits: int = 4, groups=None, seed: int = 0):
        self.n_splits = n_splits
        self.groups = groups
        self.seed = seed

    def get_n_splits(self, X=None, y=None, groups=None):
        g = self.groups if self.groups is not None else groups
        if g is None:
            return self.n_splits
        return min(self.n_splits, np.unique(np.asarray(g)).size)

    def split(self, X, y=None, groups=None):
        g = np.asarray(self.groups if self.groups is not None else groups)
        if g.ndim == 0:
            raise ValueError("GroupAwareKFold needs groups: pass them at construction or to split()")
        if len(g) != len(X):
            raise ValueError(f"groups has {len(g)} entries for {len(X)} samples")
        n = self.get_n_splits(X, y, g)
        if n < 2:
            raise ValueError(f"GroupAwareKFold needs at least 2 groups, got {np.unique(g).size}")
        y = np.zeros(len(X)) if y is None else np.asarray(y)
        yield from _group_folds(n, y, self.seed).split(np.zeros(len(X)), y, g)

def cv_groups(windows: Windows, plan: SplitPlan) -> np.ndarray:
    """The ids to keep whole when cross-validating over ``windows``."""
    if plan.unit == "group":
        return windows.group_ids
    if plan.unit == "recording":
        return windows.recording_ids
    return windows.window_ids


def cross_validate_pipeline(estimator, X, y, groups, n_splits: int = 4, seed: int = 0,
                            scoring=("balanced_accuracy",), n_jobs: int | None = None) -> dict:
    """Cross-validate a whole scikit-learn Pipeline, refit inside each fold (ESL 7.10.2),
    with groups kept whole and training scores beside validation scores."""
    from sklearn.model_selection import cross_validate

    X2 = np.asarray(X).reshape(len(X), -1)
    cv = GroupAwareKFold(n_splits, groups=groups, seed=seed)
    return cross_validate(estimator, X2, y, cv=cv, scoring=list(scoring),
                          return_train_score=True, n_jobs=n_jobs, error_score="raise")


def chosen_comments(prepared: Prepared) -> dict[str, str]:
    """What "auto" chose, for the run's config.toml (``pipeline.core.config.to_toml``)."""
    plan, ds = prepared.plan, prepared.dataset
    out = {}
    if plan.requested.get("window_ms") == "auto" or plan.requested.get("stride_ms") == "auto":
        out["split.window_ms"] = f"chose {plan.window_ms:g} ms ({plan.window_length} steps): {plan.window_why}"
        out["split.stride_ms"] = f"chose {plan.stride_ms:g} ms ({plan.window_stride} steps)"
    padded = prepared.manifest.get("window", {}).get("padded") or {}
    if any(padded.values()):
        out["split.pad"] = "zero-padded windows: " + ", ".join(f"{s} {n}" for s, n in padded.items())
    res = ds.notes.get("resampled")
    if res:
        out["data.rate_hz"] = f"{res['to_hz']:g} Hz ({res['chosen']}); {res['samples_resampled']} samples resampled"
    elif ds.rate_hz:
        out["data.rate_hz"] = f"{ds.rate_hz:g} Hz, every sample already at it"
    return out
