"""Labels as real exports spell them: renamed by hand (``[data] label_map``), one label
spelled two ways merged, a class found only in the predefined test split left out.

Each repair is said loudly and recorded in ``Dataset.notes["repairs"]`` (``add_repair``);
``[split] strict`` turns each into an error naming the labels instead (issue 21).

Met in real Edge Impulse exports: a drone-gesture project with ``x-circle left`` in training
and both that and ``xcircle left`` in testing (23 samples); a gesture project with one test
sample labelled ``testing``, a class no training sample has.
"""

from __future__ import annotations

import difflib
import re
from collections import Counter
from dataclasses import replace

import numpy as np

from pipeline.core.errors import PipelineError
from pipeline.data.dataset import Dataset, add_repair

_SEPARATORS = re.compile(r"[\s_\-]+")


def normalized(label: str) -> str:
    """The label with case, spaces, hyphens and underscores ignored: "X-Circle_left" -> "xcircleleft"."""
    return _SEPARATORS.sub("", label).casefold()


def nearest_label(label: str, candidates: list[str]) -> str | None:
    """The candidate whose normalized name is most alike (difflib's ratio), ties to the first."""
    if not candidates:
        return None
    key = normalized(label)
    return max(candidates, key=lambda c: difflib.SequenceMatcher(None, key, normalized(c)).ratio())


def reconcile_labels(ds: Dataset, *, merge: bool = True, label_map: dict[str, str] | None = None,
                     strict: bool = False) -> Dataset:
    """``ds`` with ``label_map`` applied, spellings of one label merged (when ``merge``) and
    classes only in the predefined test split left out; the same object when nothing changes."""
    names = list(ds.label_names)
    raw = [names[i] for i in ds.labels]
    in_train = (np.ones(len(ds), bool) if ds.predefined_split is None
                else np.asarray(ds.predefined_split) != "test")
    rename = _by_hand(ds, names, label_map or {})
    rename.update(_spellings(ds, names, [rename.get(x, x) for x in raw], in_train, merge, strict))
    raw = [rename.get(x, x) for x in raw]
    keep = _test_only(ds, raw, in_train, strict)
    if not rename and keep.all():
        return ds
    order = list(dict.fromkeys(rename.get(n, n) for n in names))
    present = {x for x, k in zip(raw, keep, strict=True) if k}
    unused = set(names) - set(raw)  # names no sample had (an NPZ's label_names): kept as they were
    order = [n for n in order if n in present or n in unused]
    index = {n: i for i, n in enumerate(order)}
    idx = np.flatnonzero(keep)
    out = replace(
        ds,
        samples=[ds.samples[i] for i in idx],
        labels=np.asarray([index[raw[i]] for i in idx], dtype=np.int64),
        label_names=tuple(order),
        recording_ids=ds.recording_ids[idx], group_ids=ds.group_ids[idx],
        start_times=ds.start_times[idx], sample_ids=ds.sample_ids[idx],
        predefined_split=None if ds.predefined_split is None else np.asarray(ds.predefined_split)[idx],
        meta={k: np.asarray(v)[idx] for k, v in ds.meta.items()},
        originals=None if ds.originals is None else [ds.originals[i] for i in idx],
        skipped={**ds.skipped, **({"class only in test": int((~keep).sum())} if not keep.all() else {})},
    )
    return out


def _by_hand(ds: Dataset, names: list[str], label_map: dict[str, str]) -> dict[str, str]:
    """``[data] label_map`` checked against the dataset's labels; a note says what it renamed."""
    unknown = [k for k in label_map if k not in names]
    if unknown:
        raise PipelineError(f"[data] label_map: {unknown[0]!r} is not a label of {ds.source}",
                            hint=f"its labels: {', '.join(repr(n) for n in names)}")
    rename = {k: v for k, v in label_map.items() if k != v}
    if rename:
        ds.notes.setdefault("loader", []).append(
            "[data] label_map renamed " + ", ".join(f"{k!r} to {v!r}" for k, v in rename.items()))
    return rename


def _counts(raw: list[str], in_train: np.ndarray, label: str) -> tuple[int, int]:
    mine = np.asarray([x == label for x in raw])
    return int((mine & in_train).sum()), int((mine & ~in_train).sum())


def _spellings(ds: Dataset, names: list[str], raw: list[str], in_train: np.ndarray, merge: bool,
               strict: bool) -> dict[str, str]:
    """{spelling: the one kept} for labels that differ only in case, spaces, hyphens or
    underscores. The spelling kept is the one most frequent in training (then overall)."""
    split_word = ds.predefined_split is not None
    by_key: dict[str, list[str]] = {}
    for label in dict.fromkeys(raw):
        by_key.setdefault(normalized(label), []).append(label)
    rename: dict[str, str] = {}
    for spellings in by_key.values():
        if len(spellings) < 2:
            continue
        counts = {s: _counts(raw, in_train, s) for s in spellings}
        spellings.sort(key=lambda s: (-counts[s][0], -sum(counts[s]), s))
        kept = spellings[0]

        def said(s, counts=counts):
            tr, te = counts[s]
            return f"{s!r} ({tr} training, {te} testing)" if split_word else f"{s!r} ({tr} samples)"

        if strict:
            raise PipelineError(
                f"{ds.source}: one label spelled {len(spellings)} ways, "
                + " and ".join(said(s) for s in spellings) + " (they differ only in case, spaces, hyphens or underscores)",
                hint=f"without --strict ([split] strict = false) they are merged into {kept!r}; "
                     f"or map them by hand: [data] label_map = {{ {_pairs(spellings[1:], kept)} }}")
        if not merge:
            ds.notes.setdefault("loader", []).append(
                "[data] merge_labels = false: " + " and ".join(said(s) for s in spellings) + " kept apart")
            continue
        for s in spellings[1:]:
            rename[s] = kept
            moved = [str(sid) for sid, x in zip(ds.sample_ids, raw, strict=True) if x == s]
            add_repair(ds, "merged_labels",
                       f"label {said(s)} merged into {said(kept)}: they differ only in case, spaces, hyphens "
                       f"or underscores; {kept!r} is the spelling most frequent in training "
                       "([data] merge_labels = false keeps them apart)",
                       moved)
    return rename


def _pairs(sources: list[str], target: str) -> str:
    return ", ".join(f'"{s}" = "{target}"' for s in sources)


def _test_only(ds: Dataset, raw: list[str], in_train: np.ndarray, strict: bool) -> np.ndarray:
    """Which samples to keep: every one, less those of a class the predefined test split holds
    and training does not (no model can predict a class it never saw)."""
    keep = np.ones(len(raw), bool)
    if ds.predefined_split is None:
        return keep
    train_labels = sorted({x for x, t in zip(raw, in_train, strict=True) if t})
    test_counts = Counter(x for x, t in zip(raw, in_train, strict=True) if not t)
    for label, n in sorted(test_counts.items()):
        if label in train_labels:
            continue
        near = nearest_label(label, train_labels)
        mapping = f"[data] label_map = {{ {_pairs([label], near)} }}" if near else "[data] label_map"
        if strict:
            raise PipelineError(
                f"{ds.source}: class {label!r} has {n} sample(s) in testing and none in training: "
                f"no model can predict it (nearest training label: {near!r})",
                hint=f"map it ({mapping}), remove it, or leave out --strict to leave it out of training and the scores")
        mine = np.asarray([x == label for x in raw])
        keep &= ~mine
        add_repair(ds, "test_only_class",
                   f"class {label!r} ({n} test sample(s), none in training) left out of training and of the "
                   f"scores: no model can predict a class it never saw; nearest training label {near!r} "
                   f"(to map it: {mapping})",
                   [str(s) for s in ds.sample_ids[mine]])
    return keep
