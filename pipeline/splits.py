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

from pipeline.artifacts import read_json, write_json
from pipeline.datasets import Dataset
from pipeline.errors import PipelineError
from pipeline.safe_io import NUMBER, check_structure
from pipeline.windows import Windows, cut_windows, window_steps

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


def plan_split(dataset: Dataset, cfg, seed: int) -> SplitPlan:
    """Decide which samples go to train, validation and test. ``cfg`` is a SplitConfig."""
    strategy = resolve_strategy(dataset, cfg.strategy)
    units, unit = split_units(dataset, strategy)
    notes: list[str] = []
    pool = units if dataset.predefined_split is None else units[dataset.predefined_split != "test"]
    if unit == "group" and np.unique(pool).size < 2:
        # One subject/device (a common Edge Impulse project): nothing to hold out by group.
        units, unit = dataset.recording_ids, "recording"
        notes.append(
            "one subject/device only: split by recording; the scores estimate performance on "
            "new recordings of that subject/device, not on new ones"
        )
    length, stride = window_steps(dataset, cfg.window_ms, cfg.stride_ms)
    k = dataset.num_classes
    all_idx = np.arange(len(dataset))
    excluded: dict[str, list[str]] = {}
    predefined = dataset.predefined_split is not None and np.any(dataset.predefined_split == "test")
    if strategy == "random":
        notes.append(
            "random split: the data has no recordings or groups, so samples are split independently; "
            "the test score estimates performance on new samples from the same sources"
        )
    if predefined:
        test = all_idx[dataset.predefined_split == "test"]
        rest = all_idx[dataset.predefined_split != "test"]
        share = cfg.val_size / (1.0 - cfg.test_size)
        train, val = _hold_out(rest, dataset.labels, units, share, k, seed, strategy != "random", unit)
        notes.append(f"predefined test split kept ({test.size} samples from the source's testing category)")
        idx = {"train": train, "val": val, "test": test}
    elif strategy == "time":
        idx, excluded, time_notes = _time_split(dataset, cfg, units)
        notes.extend(time_notes)
        if dataset.has_groups:
            notes.append(
                "time split: recordings are kept whole, but subjects/devices appear on both sides, "
                "so the test score estimates performance on known subjects at a later time"
            )
    else:
        grouped = strategy == "group"
        rest, test = _hold_out(all_idx, dataset.labels, units, cfg.test_size, k, seed, grouped, unit)
        share = cfg.val_size / (1.0 - cfg.test_size)
        train, val = _hold_out(rest, dataset.labels, units, share, k, seed + 1, grouped, unit)
        idx = {"train": train, "val": val, "test": test}
    for name in SPLITS:
        idx[name] = np.sort(np.asarray(idx[name], dtype=np.int64))
        if idx[name].size == 0:
            raise PipelineError(
                f"split {name!r} is empty with strategy {strategy!r}",
                hint="the data has too few recordings/groups for three splits; lower [split] test_size/val_size or add data",
            )
    return SplitPlan(
        strategy=strategy, unit=unit, seed=seed, indices=idx, window_length=length,
        window_stride=stride, window_ms=cfg.window_ms, stride_ms=cfg.stride_ms,
        predefined_test=bool(predefined), notes=notes, excluded=excluded,
        sizes={"test_size": cfg.test_size, "val_size": cfg.val_size, "gap_s": cfg.gap_s},
    )


def make_windows(dataset: Dataset, plan: SplitPlan, skipped: dict | None = None) -> dict[str, Windows]:
    """Cut the windows of each split, from that split's samples only."""
    out = {}
    for name in SPLITS:
        w = cut_windows(dataset, plan.indices[name], plan.window_length, plan.window_stride, skipped)
        if len(w) == 0:
            raise PipelineError(
                f"split {name!r} has no windows: its samples are all shorter than {plan.window_length} steps",
                hint="lower [split] window_ms",
            )
        out[name] = w
    return out


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
                   "input_shape": list(windows["train"].X.shape[1:])},
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
    "window": {"length": int, "stride": int, "window_ms": NUMBER, "stride_ms": NUMBER},
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


def _manifest_matches(man: dict, dataset: Dataset, cfg) -> bool:
    w = man.get("window", {})
    # A split asked for with other sizes is another split (manifests before "sizes" match on the rest).
    sizes = man.get("sizes") or {}
    same_sizes = all(sizes.get(k, getattr(cfg.split, k)) == getattr(cfg.split, k)
                     for k in ("test_size", "val_size", "gap_s"))
    return (
        same_sizes
        and man.get("dataset", {}).get("source") == dataset.source
        and man.get("seed") == cfg.seed
        and resolve_strategy(dataset, cfg.split.strategy) == man.get("strategy")
        and w.get("window_ms") == cfg.split.window_ms
        and w.get("stride_ms") == cfg.split.stride_ms
    )


def prepare(cfg, run_dir: str | Path, dataset: Dataset | None = None, write: bool = True) -> Prepared:
    """Load the dataset and the split: reuse ``splits.json`` when it matches the config,
    else plan a new split and write it. The reused test content must match its SHA-256."""
    from pipeline.datasets import dataset_from_config

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
