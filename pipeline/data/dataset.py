"""The `Dataset` value every loader makes, and the helpers the loaders share.

A sample is what a loader reads as one unit: a whole recording for time series that the
pipeline windows later (motion, CSV, Edge Impulse acquisition files), or one model input
already (NPZ rows, digit images). Windows are cut after the split (``pipeline.data.windows``),
never here.

Every loader rejects bad input with a `PipelineError` naming the file, the field and what
was expected, and counts anything it skips in ``Dataset.skipped``. The loaders, one module
per format: ``edge_impulse`` (exports, folders of acquisition files, zips), ``csv_table``,
``npz``; ``load`` picks one by name or path (``load_dataset``, ``dataset_from_config``).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from pipeline.core.errors import PipelineError
from pipeline.data.repairs import repair

Kind = Literal["timeseries", "image"]


@dataclass(eq=False)
class Dataset:
    """Samples with integer labels and, per sample, recording, group, start time and id.

    ``samples[i]`` is float32 of shape (T_i, C) for time series or (H, W, C) for images.
    ``has_groups`` says whether ``group_ids`` name real subjects/devices (otherwise each
    group is its recording); ``has_recordings`` whether several samples may share a recording.
    ``predefined_split`` holds "train"/"test" per sample when the source fixed a test set
    (Edge Impulse's `testing` category), else None.
    """

    name: str
    source: str
    kind: Kind
    samples: list[np.ndarray]
    labels: np.ndarray
    label_names: tuple[str, ...]
    recording_ids: np.ndarray
    group_ids: np.ndarray
    start_times: np.ndarray
    sample_ids: np.ndarray
    rate_hz: float | None = None
    channel_names: tuple[str, ...] = ()
    windowed: bool = False
    has_groups: bool = False
    has_recordings: bool = False
    predefined_split: np.ndarray | None = None
    skipped: dict[str, int] = field(default_factory=dict)
    notes: dict = field(default_factory=dict)
    meta: dict[str, np.ndarray] = field(default_factory=dict)
    """Per-sample acquisition facts a model could learn instead of the task (``rate_hz``,
    ``device_type``): the audit checks whether one of them goes with one class."""
    originals: list[np.ndarray | None] | None = None
    """Resampled samples' values as recorded (None where not resampled): the audit looks for
    stretches shared between splits in what was recorded, not in an interpolation of it."""

    def __post_init__(self) -> None:
        n = len(self.samples)
        self.labels = np.asarray(self.labels, dtype=np.int64)
        for name in ("labels", "recording_ids", "group_ids", "start_times", "sample_ids"):
            if len(getattr(self, name)) != n:
                raise PipelineError(
                    f"{self.source}: {name} has {len(getattr(self, name))} entries for {n} samples"
                )
        self.recording_ids = np.asarray(self.recording_ids).astype(str)
        self.group_ids = np.asarray(self.group_ids).astype(str)
        self.sample_ids = np.asarray(self.sample_ids).astype(str)
        self.start_times = np.asarray(self.start_times, dtype=np.float64)
        if n == 0:
            raise PipelineError(f"{self.source}: no samples")
        if len(set(self.sample_ids.tolist())) != n:
            dup = [k for k, c in Counter(self.sample_ids.tolist()).items() if c > 1][:3]
            raise PipelineError(f"{self.source}: sample ids are not unique (e.g. {dup})")
        if self.labels.min() < 0 or self.labels.max() >= len(self.label_names):
            raise PipelineError(
                f"{self.source}: labels must be 0..{len(self.label_names) - 1}, "
                f"got {self.labels.min()}..{self.labels.max()}"
            )
        present = np.unique(self.labels)
        if present.size < 2:
            raise PipelineError(
                f"{self.source}: one class only ({self.label_names[present[0]]!r}); "
                "a classifier needs at least two"
            )
        shapes = {s.shape[1:] if self.kind == "timeseries" else s.shape for s in self.samples}
        if len(shapes) != 1:
            raise PipelineError(
                f"{self.source}: samples differ in shape {sorted(shapes)[:3]}; "
                "expected one channel layout for every sample"
            )
        for i, s in enumerate(self.samples):
            if 0 in s.shape:
                raise PipelineError(
                    f"{self.source}: sample {str(self.sample_ids[i])!r} is empty (shape {s.shape}); "
                    "expected at least one time step and one channel"
                )
            if not np.all(np.isfinite(s)):
                raise PipelineError(
                    f"{self.source}: sample {self.sample_ids[i]!r} has NaN or infinite values"
                )

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def num_classes(self) -> int:
        return len(self.label_names)

    @property
    def channels(self) -> int:
        return int(self.samples[0].shape[-1])

    @property
    def lengths(self) -> np.ndarray:
        """Time steps per sample (rows for images)."""
        return np.array([s.shape[0] for s in self.samples])

    def class_counts(self) -> dict[str, int]:
        counts = np.bincount(self.labels, minlength=self.num_classes)
        return {name: int(c) for name, c in zip(self.label_names, counts, strict=True)}

    def summary(self) -> dict:
        return {
            "name": self.name,
            "source": self.source,
            "kind": self.kind,
            "samples": len(self),
            "classes": list(self.label_names),
            "class_counts": self.class_counts(),
            "recordings": int(np.unique(self.recording_ids).size),
            "groups": int(np.unique(self.group_ids).size) if self.has_groups else None,
            "rate_hz": self.rate_hz,
            "channels": list(self.channel_names),
            "windowed": self.windowed,
            "predefined_split": self.predefined_split is not None,
            "skipped": dict(self.skipped),
            "resampled": self.notes.get("resampled"),
            "loader_notes": list(self.notes.get("loader", [])),
            "repairs": list(self.notes.get("repairs", [])),
        }


# --------------------------------------------------------------------------- repairs

REPAIR_KINDS = ("merged_labels", "test_only_class", "missing_files")


def add_repair(ds_or_notes, kind: str, what: str, items: list) -> dict:
    """Record one repair the loaders made in ``notes["repairs"]`` (splits.json, the audit, the
    train summary and the report show them at the top): ``kind``, ``what`` (one line a person
    reads), ``count`` and ``items`` (the sample ids or files concerned)."""
    if kind not in REPAIR_KINDS:
        raise ValueError(kind)
    notes = ds_or_notes.notes if isinstance(ds_or_notes, Dataset) else ds_or_notes
    entry = repair(kind, what, items)
    notes.setdefault("repairs", []).append(entry)
    return entry


def repairs(ds: Dataset) -> list[dict]:
    return list(ds.notes.get("repairs", []))


def say_repairs(ds: Dataset, out=print) -> None:
    """Each repair as one loud line, when the data loads."""
    for r in repairs(ds):
        out(f"repaired: {r['what']}")


# --------------------------------------------------------------------------- helpers of the loaders


def labels_to_ints(raw_labels: list, source: str, names: list[str] | None = None):
    """Map label values (strings or ints) to 0..K-1 with sorted names."""
    if names is None:
        names = sorted({str(v) for v in raw_labels})
    index = {n: i for i, n in enumerate(names)}
    out = []
    for v in raw_labels:
        key = str(v)
        if key not in index:
            raise PipelineError(f"{source}: label {v!r} is not one of {names}")
        out.append(index[key])
    return np.asarray(out, dtype=np.int64), tuple(names)


def finite_array(arr: np.ndarray, source: str, what: str) -> np.ndarray:
    """``arr`` if every value is finite, else a PipelineError naming the first bad index."""
    if not np.all(np.isfinite(arr)):
        bad = np.argwhere(~np.isfinite(arr))[0].tolist()
        raise PipelineError(f"{source}: {what} has NaN or infinite values (first at index {bad})")
    return arr
