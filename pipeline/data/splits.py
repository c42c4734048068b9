"""Leakage-safe splits: by recording and group first, windows after.

What a split keeps whole (its group) is the subject or device when the data has them, else
the recording. Every window of a recording and every recording of a group lands in one split.
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

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from sklearn.model_selection import StratifiedKFold

from pipeline.core.artifacts import read_json, write_json
from pipeline.core.errors import PipelineError
from pipeline.core.safe_io import NUMBER, check_structure
from pipeline.data.cuts import cut_links, linked_groups, quarantine_cuts
from pipeline.data.dataset import Dataset
from pipeline.data.folds import group_folds
from pipeline.data.load import dataset_from_config
from pipeline.data.windows import (
    Windows,
    choose_window,
    content_sha256,
    cut_windows,
    pad_min_share,
    padded_counts,
)

SPLITS = ("train", "val", "test")
MANIFEST = "splits.json"


@dataclass
class SplitPlan:
    """Sample indices per split, and how they were chosen."""

    strategy: str
    group_by: str  # "group", "recording" or "sample": what was kept whole
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
    repairs: list[dict] = field(default_factory=list)  # what the split repaired (pipeline.data.repairs)
    strict: bool = False  # [split] strict: refuse instead of repair


def split_groups(dataset: Dataset, strategy: str = "group") -> tuple[np.ndarray, str]:
    """The group each sample is kept whole by, and what the groups are ("group": subjects or
    devices, "recording", "sample").

    In ``time`` mode the group is the recording: subjects keep recording over the whole
    period, so a chronological split puts the same subjects on both sides (the audit says so).
    """
    if dataset.has_groups and strategy != "time":
        return dataset.group_ids, "group"
    if dataset.has_recordings or not dataset.windowed:
        return dataset.recording_ids, "recording"
    return dataset.sample_ids, "sample"


def resolve_strategy(dataset: Dataset, requested: str) -> str:
    _, group_by = split_groups(dataset)
    if requested == "auto":
        return "random" if group_by == "sample" else "group"
    if requested == "random" and group_by != "sample":
        raise PipelineError(
            f"[split] strategy 'random' on {dataset.source}: the data has {group_by}s, and a random "
            "split would put windows of one "
            f"{group_by} in both training and test",
            hint="use strategy 'group' (the default) or 'time'; the audit's split_optimism shows what a random split would claim",
        )
    if requested == "group" and group_by == "sample":
        # No structure to respect: a group split over single samples is a random split.
        return "random"
    return requested


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


def _hold_out(idx: np.ndarray, labels: np.ndarray, groups: np.ndarray, share: float,
              n_classes: int, seed: int, grouped: bool, group_by: str = "group") -> tuple[np.ndarray, np.ndarray]:
    """Split ``idx`` into (kept, held) with about ``share`` held out, groups kept whole."""
    n_folds = max(2, int(round(1.0 / share)))
    y = labels[idx]
    if grouped:
        n_groups = np.unique(groups[idx]).size
        if n_groups < 2:
            raise PipelineError(
                f"only {n_groups} {group_by}(s) left to split; need at least 2",
                hint=f"add {group_by}s, or lower [split] test_size/val_size",
            )
        n_folds = min(n_folds, n_groups)
        cv = group_folds(n_folds, y, seed)
        folds = list(cv.split(np.zeros(idx.size), y, groups[idx]))
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


def _time_split(dataset: Dataset, cfg, groups: np.ndarray) -> tuple[dict, dict, list]:
    """Chronological: groups (recordings) ordered by their first time; test last, validation before it."""
    rate = dataset.rate_hz or 1.0
    ends = dataset.start_times + dataset.lengths / rate
    uniq = np.unique(groups)
    u_start = {u: dataset.start_times[groups == u].min() for u in uniq}
    u_end = {u: ends[groups == u].max() for u in uniq}
    order = sorted(uniq, key=lambda u: (u_start[u], u))
    sizes = np.array([np.sum(groups == u) for u in order], dtype=float)
    cum = np.cumsum(sizes) / sizes.sum()
    n_test_from = int(np.searchsorted(cum, 1.0 - cfg.test_size))
    n_val_from = int(np.searchsorted(cum, 1.0 - cfg.test_size - cfg.val_size))
    n_test_from = max(n_test_from, 1)
    n_val_from = min(max(n_val_from, 1), n_test_from)
    parts = {"train": order[:n_val_from], "val": order[n_val_from:n_test_from], "test": order[n_test_from:]}
    excluded: dict[str, list[str]] = {}
    notes = []
    # The gap: drop groups that end within gap_s of the start of the next split (or overlap it).
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
    idx = {name: np.flatnonzero(np.isin(groups, parts[name])) for name in SPLITS}
    excl_ids = {reason: dataset.sample_ids[np.isin(groups, us)].tolist() for reason, us in excluded.items()}
    return idx, excl_ids, notes


def check_enough_samples(dataset: Dataset, predefined: bool, out: np.ndarray | None = None) -> None:
    """Refuse, in one line, data too small for three splits with every class in each
    (``out``: indices of samples left out, quarantined)."""
    keep = np.ones(len(dataset), bool)
    if out is not None:
        keep[out] = False
    if predefined:
        keep &= dataset.predefined_split != "test"
    per_class = np.bincount(dataset.labels[keep], minlength=dataset.num_classes)
    need = 2 if predefined else 3  # one sample of each class per split it must fill
    short = {n: int(c) for n, c in zip(dataset.label_names, per_class, strict=True) if c < need}
    if short:
        have = ", ".join(f"{n} {c}" for n, c in short.items())
        where = "outside the predefined test split" if predefined else "in all"
        if out is not None and out.size:
            where += f" once {out.size} quarantined sample(s) are left out (splits.json: repairs)"
        raise PipelineError(
            f"{dataset.source}: too few samples to split: have {have} {where}; need at least {need} of every "
            f"class ({need * dataset.num_classes} samples) for {'training and validation' if predefined else 'training, validation and test'}",
            hint="add samples, or drop the classes with too few")


def plan_split(dataset: Dataset, cfg, seed: int) -> SplitPlan:
    """Decide which samples go to train, validation and test. ``cfg`` is a SplitConfig."""
    strategy = resolve_strategy(dataset, cfg.strategy)
    predefined = dataset.predefined_split is not None and bool(np.any(dataset.predefined_split == "test"))
    check_enough_samples(dataset, predefined)
    groups, group_by, notes = _kept_whole(dataset, strategy)
    strict = bool(getattr(cfg, "strict", False))
    links = cut_links(dataset)
    quarantined, repairs, excluded = _quarantine(dataset, links, predefined and strategy != "time", strict)
    if quarantined.size:
        check_enough_samples(dataset, predefined, quarantined)
    choice = choose_window(dataset, cfg.window_ms, cfg.stride_ms)
    pad = getattr(cfg, "pad", "drop")
    if not dataset.windowed:
        notes.append(f"windows of {choice.length} steps ({choice.window_ms:g} ms) every {choice.stride} steps: "
                     f"{choice.why}"
                     + (f"; {_padded_which(pad_min_share(dataset))} are zero-padded at the end "
                        "([split] pad = \"zero\")" if pad == "zero" else ""))
    if strategy == "random":
        notes.append(
            "random split: the data has no recordings or groups, so samples are split independently; "
            "the test score estimates performance on new samples from the same sources"
        )
    if links:
        kinds = {why: sum(1 for *_, w in links if w == why) for why in ("stretch", "name")}
        notes.append(f"{kinds['stretch']} pair(s) of samples share stretches of identical time steps and "
                     f"{kinds['name']} link(s) join cuts of one recording by name (NAME.sN): each such family "
                     "is one recording for the split, kept in one split")
    if strategy == "time":
        idx, excluded, time_notes = _time_split(dataset, cfg, linked_groups(groups, links))
        notes.extend(time_notes)
        if dataset.has_groups:
            notes.append(
                "time split: recordings are kept whole, but subjects/devices appear on both sides, "
                "so the test score estimates performance on known subjects at a later time"
            )
    else:
        idx, group_by = _held_out_split(dataset, cfg, seed, strategy, predefined, groups, group_by, notes,
                                        links, quarantined)
    for name in SPLITS:
        idx[name] = np.sort(np.asarray(idx[name], dtype=np.int64))
        if idx[name].size == 0:
            raise PipelineError(
                f"split {name!r} is empty with strategy {strategy!r}",
                hint="the data has too few recordings/groups for three splits; lower [split] test_size/val_size or add data",
            )
    return SplitPlan(
        strategy=strategy, group_by=group_by, seed=seed, indices=idx, window_length=choice.length,
        window_stride=choice.stride, window_ms=choice.window_ms, stride_ms=choice.stride_ms,
        predefined_test=predefined, notes=notes, excluded=excluded,
        sizes={"test_size": cfg.test_size, "val_size": cfg.val_size, "gap_s": cfg.gap_s},
        pad=pad, requested={"window_ms": cfg.window_ms, "stride_ms": cfg.stride_ms}, window_why=choice.why,
        repairs=repairs, strict=strict,
    )


QUARANTINED = "quarantined: cut of a recording the predefined test split holds"


def _quarantine(dataset: Dataset, links, predefined: bool, strict: bool) -> tuple[np.ndarray, list, dict]:
    """With a predefined test split: the samples outside it that are one recording with a test
    sample (quarantined), the repair that lists them, and the plan's ``excluded``. In strict mode
    nothing is quarantined: the audit's ``shared_segments`` then refuses, as it did before repairs."""
    if not predefined or strict:
        return np.zeros(0, np.int64), [], {}
    out, rep = quarantine_cuts(dataset, links, dataset.predefined_split == "test")
    if rep is None:
        return out, [], {}
    return out, [rep], {QUARANTINED: dataset.sample_ids[out].tolist()}


def _kept_whole(dataset: Dataset, strategy: str) -> tuple[np.ndarray, str, list[str]]:
    """The group id of each sample, what it is ("group", "recording", "sample"), and the notes
    so far (the loader's, and a fall back to recordings when there is one subject/device)."""
    groups, group_by = split_groups(dataset, strategy)
    notes: list[str] = list(dataset.notes.get("loader", []))
    outside_test = groups if dataset.predefined_split is None else groups[dataset.predefined_split != "test"]
    if group_by == "group" and np.unique(outside_test).size < 2:
        # One subject/device (a common Edge Impulse project): nothing to hold out by group.
        groups, group_by = dataset.recording_ids, "recording"
        notes.append(
            "one subject/device only: split by recording; the scores estimate performance on "
            "new recordings of that subject/device, not on new ones"
        )
    return groups, group_by, notes


def _assign(dataset: Dataset, cfg, seed: int, strategy: str, predefined: bool,
            groups: np.ndarray, group_by: str, out: np.ndarray) -> dict[str, np.ndarray]:
    """Hold out test (unless the source fixed it), then validation, keeping groups whole;
    the samples in ``out`` (quarantined) go nowhere."""
    k = dataset.num_classes
    all_idx = np.arange(len(dataset))
    share = cfg.val_size / (1.0 - cfg.test_size)
    if predefined:
        test = all_idx[dataset.predefined_split == "test"]
        rest = all_idx[(dataset.predefined_split != "test") & ~np.isin(all_idx, out)]
        train, val = _hold_out(rest, dataset.labels, groups, share, k, seed, strategy != "random", group_by)
        return {"train": train, "val": val, "test": test}
    grouped = strategy == "group"
    rest, test = _hold_out(all_idx, dataset.labels, groups, cfg.test_size, k, seed, grouped, group_by)
    train, val = _hold_out(rest, dataset.labels, groups, share, k, seed + 1, grouped, group_by)
    return {"train": train, "val": val, "test": test}


def _held_out_split(dataset: Dataset, cfg, seed: int, strategy: str, predefined: bool,
                    groups: np.ndarray, group_by: str, notes: list[str], links: list,
                    out: np.ndarray) -> tuple[dict[str, np.ndarray], str]:
    """A group or random split (indices per split, and what was kept whole); appends its notes.
    Linked samples (``links``: cuts of one recording) are kept in one split; ``out`` go nowhere."""
    groups = linked_groups(groups, links)
    idx = _assign(dataset, cfg, seed, strategy, predefined, groups, group_by, out)
    lacking = [s for s in SPLITS if np.unique(dataset.labels[idx[s]]).size < dataset.num_classes]
    if group_by == "group" and lacking:
        # Few subjects/devices, some holding one class only (two boards, one of which
        # recorded only falls): no split by group gives every split every class. A split
        # by recording does; a new-device estimate is then not possible, and it says so.
        outside_test = groups if dataset.predefined_split is None else groups[dataset.predefined_split != "test"]
        n_groups = np.unique(outside_test).size
        groups, group_by = linked_groups(dataset.recording_ids, links), "recording"
        idx = _assign(dataset, cfg, seed, strategy, predefined, groups, group_by, out)
        notes.append(
            f"{n_groups} subjects/devices, too few to split by group with every class in every split "
            f"({', '.join(lacking)} would lack a class): split by recording instead; the scores estimate "
            "performance on new recordings of these subjects/devices, not on new ones")
    if predefined:
        notes.append(f"predefined test split kept ({idx['test'].size} samples from the source's testing category)")
    return idx, group_by


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


def manifest(dataset: Dataset, plan: SplitPlan, windows: dict[str, Windows], skipped: dict) -> dict:
    return {
        "version": 1,
        "dataset": {"name": dataset.name, "source": dataset.source, "kind": dataset.kind,
                    "label_names": list(dataset.label_names), "rate_hz": dataset.rate_hz,
                    "channels": list(dataset.channel_names)},
        "strategy": plan.strategy,
        "group_by": plan.group_by,
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
        "strict": plan.strict,
        # Every repair, the loader's and the split's (pipeline.data.repairs; docs/data.md).
        "repairs": _repairs(dataset, plan),
    }


def _repairs(dataset: Dataset, plan: SplitPlan) -> list[dict]:
    """The loader's repairs (``Dataset.notes["repairs"]``), then the split's, each once."""
    out = list(dataset.notes.get("repairs") or [])
    return out + [r for r in plan.repairs if r not in out]


MANIFEST_SCHEMA = {
    "dataset": {"source": str, "label_names": [str]},
    "strategy": str, "group_by?": str, "unit?": str, "seed": int, "predefined_test?": bool,
    "window": {"length": int, "stride": int, "window_ms": NUMBER, "stride_ms": NUMBER,
               "pad?": str, "requested?": dict, "why?": str},
    "splits": {name: [str] for name in SPLITS},
    "test_sha256": str, "notes?": list, "excluded?": dict, "sizes?": dict, "repairs?": list, "strict?": bool,
}
"""What readers of ``splits.json`` rely on; anything else in it is for people."""


def check_manifest(man, path: str | Path = MANIFEST) -> dict:
    """``man`` if it has the structure of a ``splits.json``, else a PipelineError naming the field."""
    hint = "the file was edited or damaged: restore it, or remove it to make a new split (tinyml train)"
    try:
        check_structure(man, MANIFEST_SCHEMA, str(path))
    except PipelineError as exc:
        raise PipelineError(exc.message, hint=hint) from None
    if "group_by" not in man and "unit" not in man:
        raise PipelineError(f"{path}: the top level: missing key 'group_by'", hint=hint)
    for key in ("length", "stride"):
        if man["window"][key] < 1:
            raise PipelineError(f"{path}: field 'window.{key}': expected at least 1, got {man['window'][key]}", hint=hint)
    return man


def _group_by(man: dict) -> str:
    """What the written split kept whole; manifests before the word "group" call it "unit"."""
    return man["group_by"] if "group_by" in man else man["unit"]


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
        strategy=man["strategy"], group_by=_group_by(man), seed=man["seed"], indices=idx,
        window_length=w["length"], window_stride=w["stride"], window_ms=w["window_ms"],
        stride_ms=w["stride_ms"], predefined_test=man.get("predefined_test", False),
        notes=man.get("notes", []), excluded=man.get("excluded", {}), sizes=man.get("sizes", {}),
        pad=w.get("pad", "drop"), requested=w.get("requested", {}), window_why=w.get("why", ""),
        repairs=man.get("repairs", []), strict=man.get("strict", False),
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
    def group_word(self) -> str:
        """What the split keeps whole, as the tables name it ("subject", "device", "recording")."""
        return {"group": self.dataset.notes.get("group_word", "group")}.get(self.plan.group_by, self.plan.group_by)


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
        # Strict refuses what the default repairs: a split made one way is not the other's.
        and man.get("strict", False) == cfg.split.strict
    )


def _padded_which(min_share: float) -> str:
    if min_share <= 0:
        return "samples shorter than a window (audio: the rest is silence)"
    return f"samples shorter than a window but at least {min_share:.0%} of it"


def prepare(cfg, run_dir: str | Path, dataset: Dataset | None = None, write: bool = True) -> Prepared:
    """Load the dataset and the split: reuse ``splits.json`` when it matches the config,
    else plan a new split and write it. The reused test content must match its SHA-256."""
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


def cv_groups(windows: Windows, plan: SplitPlan) -> np.ndarray:
    """The ids to keep whole when cross-validating over ``windows``."""
    if plan.group_by == "group":
        return windows.group_ids
    if plan.group_by == "recording":
        return windows.recording_ids
    return windows.window_ids


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
