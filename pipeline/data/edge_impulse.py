"""Datasets: one `Dataset` value and the loaders that make it.

A sample is what a loader reads as one unit: a whole recording for time series that the
pipeline windows later (motion, CSV, Edge Impulse acquisition files), or one model input
already (NPZ rows, digit images). Windows are cut after the split (``pipeline.data.windows``),
never here.

Every loader rejects bad input with a `PipelineError` naming the file, the field and what
was expected, and counts anything it skips in ``Dataset.skipped``.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from pipeline.core.errors import PipelineError
from pipeline.core.safe_io import (
    csv_rows,
    finite_number,
    finite_rows,
    load_npz_arrays,
    loads_json,
    path_inside,
    read_file_bytes,
    resolved,
)

Kind = Literal["timeseries", "image"]
EMBEDDED = ("motion", "digits")


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
        }


# --------------------------------------------------------------------------- embedded


def load_motion(seed: int = 0, subjects: int = 12, sessions: int = 3) -> Dataset:
    """The embedded synthetic motion dataset (see ``pipeline.data.motion``)."""
    from pipeline.data import motion

    raw = motion.generate(seed=seed, subjects=subjects, sessions=sessions)
    return Dataset(
        name="motion",
        source=f"embedded:motion(seed={seed}, subjects={subjects}, sessions={sessions})",
        kind="timeseries",
        samples=raw["recordings"],
        labels=raw["labels"],
        label_names=motion.LABELS,
        recording_ids=raw["recording_ids"],
        group_ids=raw["groups"],
        start_times=raw["starts"],
        sample_ids=raw["recording_ids"],
        rate_hz=motion.RATE_HZ,
        channel_names=motion.CHANNELS,
        has_groups=True,
        has_recordings=True,
        notes={**raw["notes"], "group_word": "subject"},
    )


def load_digits() -> Dataset:
    """scikit-learn's bundled 8x8 handwritten digits (real data), as (8, 8, 1) images.

    The writers are not recorded in this copy, so it has neither groups nor recordings:
    the pipeline can only split it at random, and says so.
    """
    from sklearn.datasets import load_digits as sk_digits

    d = sk_digits()
    images = d.images.astype(np.float32)[..., None]
    n = images.shape[0]
    ids = np.array([f"digit{i:04d}" for i in range(n)])
    return Dataset(
        name="digits",
        source="embedded:sklearn.datasets.load_digits",
        kind="image",
        samples=list(images),
        labels=d.target,
        label_names=tuple(str(c) for c in range(10)),
        recording_ids=ids,
        group_ids=ids,
        start_times=np.arange(n, dtype=np.float64),
        sample_ids=ids,
        channel_names=("intensity",),
        windowed=True,
    )


# --------------------------------------------------------------------------- helpers


def _labels_to_ints(raw_labels: list, source: str, names: list[str] | None = None):
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


def _finite(arr: np.ndarray, source: str, what: str) -> np.ndarray:
    if not np.all(np.isfinite(arr)):
        bad = np.argwhere(~np.isfinite(arr))[0].tolist()
        raise PipelineError(f"{source}: {what} has NaN or infinite values (first at index {bad})")
    return arr


# --------------------------------------------------------------------------- Edge Impulse


@dataclass
class Acquisition:
    path: Path
    device_name: str | None  # None when the file names none
    interval_ms: float
    sensors: tuple[str, ...]
    values: np.ndarray  # (T, C) float32
    created: float | None
    device_type: str = ""


def parse_acquisition(data: bytes, source: str) -> Acquisition:
    """Parse one Edge Impulse data acquisition file (JSON or CBOR) from its bytes."""
    payload_doc = None
    if data[:1] in (b"{", b" ", b"\n", b"\r", b"\t"):
        payload_doc = loads_json(data, source)
    else:
        import cbor2

        try:
            payload_doc = cbor2.loads(data)
        except Exception as exc:  # cbor2 raises several types for garbage
            raise PipelineError(f"{source}: not valid JSON or CBOR ({type(exc).__name__}: {exc})") from exc
    if not isinstance(payload_doc, dict):
        raise PipelineError(f"{source}: expected an object at the top level, got {type(payload_doc).__name__}")
    payload = payload_doc.get("payload")
    if not isinstance(payload, dict):
        raise PipelineError(f"{source}: field 'payload': expected an object")
    protected = payload_doc.get("protected")
    created = None
    if isinstance(protected, dict) and isinstance(protected.get("iat"), (int, float)):
        created = finite_number(protected["iat"], f"{source}: field 'protected.iat'")
    interval = finite_number(payload.get("interval_ms"), f"{source}: field 'payload.interval_ms'", positive=True)
    sensors = payload.get("sensors")
    if not isinstance(sensors, list) or not sensors:
        raise PipelineError(f"{source}: field 'payload.sensors': expected a non-empty list")
    names = []
    for k, s in enumerate(sensors):
        if not isinstance(s, dict) or not isinstance(s.get("name"), str):
            raise PipelineError(f"{source}: field 'payload.sensors[{k}]': expected an object with a 'name'")
        # Real exports carry padded strings ("uT   "): names are compared stripped.
        names.append(s["name"].strip())
    values = payload.get("values")
    if not isinstance(values, list) or not values:
        raise PipelineError(f"{source}: field 'payload.values': expected a non-empty list")
    rows = []
    width = len(names)
    if width == 1 and set(map(type, values)) <= {int, float}:
        # Audio exports: one flat list of 16,000 numbers a second; checked at C speed
        # (type() is never bool here, so True/False cannot pass as numbers).
        arr = finite_rows(values, f"{source}: field 'payload.values'").reshape(-1, 1)
        values = []
    for k, row in enumerate(values):
        if not isinstance(row, list):
            row = [row]
        if len(row) != width:
            raise PipelineError(
                f"{source}: field 'payload.values[{k}]': expected {width} values (one per sensor), got {len(row)}"
            )
        for v in row:
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise PipelineError(f"{source}: field 'payload.values[{k}]': expected numbers, got {v!r}")
        rows.append(row)
    if rows:
        arr = finite_rows(rows, f"{source}: field 'payload.values'")
    device = payload.get("device_name")
    device = str(device).strip() if device is not None and str(device).strip() else None
    return Acquisition(
        path=Path(source),
        device_name=device,
        interval_ms=float(interval),
        sensors=tuple(names),
        values=arr.astype(np.float32),
        created=created,
        device_type=str(payload.get("device_type") or "").strip(),
    )


def _label_from_filename(path: Path) -> str:
    return path.name.split(".")[0]


def most_common_rate(rates: list[float]) -> float:
    """The rate most samples have (ties: the higher, which loses no information)."""
    counts = Counter(round(r, 6) for r in rates)
    return max(counts, key=lambda r: (counts[r], r))


def resample(values: np.ndarray, from_hz: float, to_hz: float) -> np.ndarray:
    """Anti-aliased polyphase resampling along time (``scipy.signal.resample_poly``).

    The ratio is approximated by a fraction with a denominator up to 1000 (62.5 -> 100 Hz is
    exactly 8/5). ``padtype="line"`` extends each end along its trend instead of with zeros,
    so a channel that carries gravity (9.8 m/s2) does not ring at the sample's edges.
    """
    from fractions import Fraction

    from scipy.signal import resample_poly

    ratio = Fraction(to_hz / from_hz).limit_denominator(1000)
    out = resample_poly(values.astype(np.float64), ratio.numerator, ratio.denominator, axis=0, padtype="line")
    return out.astype(np.float32)


def _one_rate(source: str, rates: list[float], values: list[np.ndarray], rate_hz) -> tuple:
    """Bring every sample to one rate: ``rate_hz``, or "auto" (the most common rate).

    Returns (rate, samples, originals or None, note or None).
    """
    target = most_common_rate(rates) if rate_hz in (None, "auto") else float(rate_hz)
    off = [i for i, r in enumerate(rates) if abs(r - target) > 1e-6 * target]
    if not off:
        return target, values, None, None
    samples, originals = list(values), [None] * len(values)
    for i in off:
        # Shorter than the filter's reach the result is all edge effect; the window rule
        # counts such a sample as too short anyway.
        samples[i] = resample(values[i], rates[i], target)
        originals[i] = values[i]
        if samples[i].shape[0] == 0:
            raise PipelineError(f"{source}: a sample of {values[i].shape[0]} steps at {rates[i]:g} Hz "
                                f"is empty after resampling to {target:g} Hz")
    from_counts = Counter(f"{r:g}" for r in rates)
    note = {"to_hz": target, "chosen": "most common rate" if rate_hz in (None, "auto") else "[data] rate_hz",
            "samples_resampled": len(off), "from_hz": dict(sorted(from_counts.items())),
            "method": "scipy.signal.resample_poly (anti-aliasing FIR), padtype line"}
    return target, samples, originals, note


def _dataset_from_acquisitions(
    name: str, source: str, items: list[tuple[Acquisition, str, str | None]], skipped: dict, rate_hz="auto"
) -> Dataset:
    """items: (acquisition, label, split or None)."""
    if not items:
        raise PipelineError(f"{source}: no labelled acquisition files found", hint="files are named <label>.<id>.json or .cbor")
    first = items[0][0]
    for acq, _, _ in items:
        if acq.sensors != first.sensors:
            raise PipelineError(
                f"{acq.path}: sensors {list(acq.sensors)} differ from {list(first.sensors)} in {first.path.name}"
            )
    rates = [1000.0 / acq.interval_ms for acq, _, _ in items]
    rate, samples, originals, resampled = _one_rate(source, rates, [acq.values for acq, _, _ in items], rate_hz)
    labels, label_names = _labels_to_ints([lab for _, lab, _ in items], source)
    sample_ids = [acq.path.name.rsplit(".", 1)[0] for acq, _, _ in items]
    if len(set(sample_ids)) != len(sample_ids):
        sample_ids = [str(acq.path) for acq, _, _ in items]
    splits = [sp for _, _, sp in items]
    predefined = None
    if any(sp is not None for sp in splits):
        predefined = np.asarray([sp or "train" for sp in splits])
    starts = []
    for k, (acq, _, _) in enumerate(items):
        starts.append(acq.created if acq.created is not None else float(k))
    notes: dict = {"loader": [], "group_word": "device"}
    devices = [acq.device_name for acq, _, _ in items]
    has_groups = any(d is not None for d in devices)
    if not has_groups:
        notes["loader"].append("the acquisition files name no device_name: the split keeps recordings whole, and "
                               "the scores estimate new recordings, not new devices or subjects")
    elif None in devices:
        n = devices.count(None)
        notes["loader"].append(f"{n} acquisition file(s) name no device_name: they form the group 'no-device-name'")
    if resampled:
        notes["resampled"] = resampled
        notes["loader"].append(
            f"{resampled['samples_resampled']} of {len(items)} samples resampled to {rate:g} Hz "
            f"({resampled['chosen']}; rates found: "
            + ", ".join(f"{n} at {r} Hz" for r, n in resampled["from_hz"].items()) + ")")
    return Dataset(
        name=name,
        source=source,
        kind="timeseries",
        samples=samples,
        labels=labels,
        label_names=label_names,
        recording_ids=np.asarray(sample_ids),
        group_ids=np.asarray([d if d is not None else ("no-device-name" if has_groups else sid)
                              for d, sid in zip(devices, sample_ids, strict=True)]),
        start_times=np.asarray(starts),
        sample_ids=np.asarray(sample_ids),
        rate_hz=rate,
        channel_names=first.sensors,
        has_groups=has_groups,
        has_recordings=False,
        predefined_split=predefined,
        skipped=skipped,
        notes=notes,
        meta={"rate_hz": np.asarray([f"{r:g}" for r in rates]),
              "device_type": np.asarray([acq.device_type or "-" for acq, _, _ in items])},
        originals=originals,
    )


TEST_FOLDERS = ("testing", "test")  # Edge Impulse writes testing/; some exports are renamed test/
SPLIT_FOLDERS = {"training": "train", "testing": "test", "test": "test"}
ACQ_SUFFIXES = (".json", ".cbor")


def info_labels_files(folder: Path) -> list[Path]:
    """``info.labels`` at the export's root, else one per split folder (``training/info.labels``)."""
    root = folder / "info.labels"
    if root.is_file():
        return [root]
    return [folder / sub / "info.labels" for sub in SPLIT_FOLDERS if (folder / sub / "info.labels").is_file()]


def _read_info(info_path: Path) -> list:
    info = loads_json(read_file_bytes(info_path), str(info_path))
    files = info.get("files") if isinstance(info, dict) else None
    if not isinstance(files, list):
        raise PipelineError(f"{info_path}: field 'files': expected a list")
    return files


def load_edge_impulse_export(folder: str | Path, rate_hz="auto", source: str | None = None) -> Dataset:
    """An Edge Impulse export: ``info.labels`` with ``training/`` and ``testing/`` (or ``test/``).

    Reads what real exports hold: ``info.labels`` at the root or one per split folder, entries
    with the older or newer keys (``name``, ``metadata``; ``boundingBoxes`` is not needed), and
    a listed file that is not at its path but is under the export by its name (an author who
    moved the files into one folder per label). Only files missing everywhere are an error.
    """
    folder = Path(folder)
    source = source or str(folder)
    infos = info_labels_files(folder)
    if not infos:
        raise PipelineError(f"{folder}: no info.labels at the root or in training/ or testing/")
    by_name: dict[str, list[Path]] | None = None
    skipped: Counter = Counter()
    items, missing, found, moved = [], [], set(), []
    for info_path in infos:
        files = _read_info(info_path)
        # A per-folder info.labels implies its folder's category.
        default_category = "training" if info_path.parent == folder else {
            "training": "training", "testing": "testing", "test": "testing"}[info_path.parent.name]
        for k, entry in enumerate(files):
            where = f"{info_path}: files[{k}]"
            if not isinstance(entry, dict) or not isinstance(entry.get("path"), str):
                raise PipelineError(f"{where}: expected an object with a 'path'")
            category = entry.get("category", default_category)
            label = entry.get("label")
            if not isinstance(label, dict) or "type" not in label:
                raise PipelineError(f"{where}: field 'label': expected an object with a 'type'")
            if label["type"] == "unlabeled":
                skipped["unlabeled"] += 1
                continue
            if label["type"] == "multi-label":
                raise PipelineError(
                    f"{where}: label type 'multi-label' is not supported",
                    hint="this pipeline trains single-label classifiers; split multi-label samples in Edge Impulse first",
                )
            if label["type"] != "label":
                raise PipelineError(f"{where}: field 'label': unknown label type {label.get('type')!r}, expected 'label' or 'unlabeled'")
            if not isinstance(label.get("label"), str) or not label["label"]:
                raise PipelineError(f"{where}: field 'label.label': expected a non-empty string, got {label.get('label')!r}")
            if category not in ("training", "testing"):
                skipped[f"category {category}"] += 1
                continue
            path = _listed_path(folder, info_path.parent, entry["path"], where)
            if path is None:
                # Not at its path: look for it by name anywhere under the export.
                if by_name is None:
                    by_name = defaultdict(list)
                    for p in sorted(folder.rglob("*")):
                        if p.suffix in ACQ_SUFFIXES and p.is_file():
                            by_name[p.name].append(p)
                hits = by_name.get(Path(entry["path"]).name, [])
                if not hits:
                    missing.append(entry["path"])
                    continue
                if len(hits) > 1:
                    raise PipelineError(f"{where}: file {entry['path']!r} is not at its path, and "
                                        f"{len(hits)} files under {folder} have its name ({hits[0]}, {hits[1]})",
                                        hint="keep one copy, or restore the export's layout")
                path = hits[0]
                moved.append(entry["path"])
            found.add(resolved(path))
            acq = parse_acquisition(read_file_bytes(path, f"{where}: file {path} listed in info.labels"), str(path))
            items.append((acq, label["label"], "test" if category == "testing" else "train"))
    if missing:
        raise PipelineError(
            f"{source}: {len(missing)} file(s) listed in info.labels are missing, neither at their path nor "
            f"anywhere under the export by name: {', '.join(missing[:3])}{', ...' if len(missing) > 3 else ''}",
            hint="restore the files, or remove their entries from info.labels",
        )
    for sub in SPLIT_FOLDERS:
        for p in sorted((folder / sub).glob("*")):
            if p.suffix in ACQ_SUFFIXES and resolved(p) not in found:
                skipped["not listed in info.labels"] += 1
    ds = _dataset_from_acquisitions(Path(source).stem if source.endswith(".zip") else folder.name,
                                    source, items, dict(skipped), rate_hz)
    if moved:
        ds.notes["loader"].insert(0, f"{len(moved)} file(s) listed in info.labels were not at their path and were "
                                     f"found by name under the export (moved), e.g. {moved[0]}")
    return ds


def _listed_path(folder: Path, info_dir: Path, rel: str, where: str) -> Path | None:
    """The file an info.labels entry names, relative to the export or to its info.labels;
    a path that leads out of the export is refused (``safe_io.path_inside``)."""
    for base in dict.fromkeys((folder, info_dir)):
        p = path_inside(folder, str(Path(base.relative_to(folder)) / rel) if base != folder else rel, where)
        if p.is_file():
            return p
    return None


def load_acquisition_folder(folder: str | Path, rate_hz="auto", source: str | None = None) -> Dataset:
    """A bare folder of acquisition files named ``<label>.<id>[.<more>].json`` (or .cbor).

    Files in ``training/`` or ``testing/`` (or ``test/``) subfolders keep that category as their split.
    """
    folder = Path(folder)
    source = source or str(folder)
    files = [p for p in folder.rglob("*") if p.is_file()]
    paths = sorted(p for p in files if p.suffix in ACQ_SUFFIXES)
    skipped: Counter = Counter()
    other = [p for p in files if p.suffix not in ACQ_SUFFIXES]
    if other:
        skipped["not .json or .cbor"] = len(other)
    items = []
    for p in paths:
        label = _label_from_filename(p)
        if not label or "." not in p.name[len(label):]:
            raise PipelineError(f"{p}: file name does not start with '<label>.'", hint="name files <label>.<id>.json")
        rel = p.relative_to(folder).parts
        split = SPLIT_FOLDERS.get(rel[0]) if len(rel) > 1 else None
        items.append((parse_acquisition(read_file_bytes(p), str(p)), label, split))
    if any(sp is not None for _, _, sp in items) and not all(sp is not None for _, _, sp in items):
        items = [(a, lab, sp or "train") for a, lab, sp in items]
    return _dataset_from_acquisitions(Path(source).stem if source.endswith(".zip") else folder.name,
                                      source, items, dict(skipped), rate_hz)


def _export_root(folder: Path) -> Path:
    """The folder of an unpacked archive that holds the export (archives often wrap it in one)."""
    entries = [p for p in folder.iterdir() if not p.name.startswith(("__MACOSX", "."))]
    if info_labels_files(folder) or any((folder / s).is_dir() for s in SPLIT_FOLDERS):
        return folder
    if len(entries) == 1 and entries[0].is_dir():
        return _export_root(entries[0])
    return folder


def load_zip(path: Path, rate_hz="auto") -> Dataset:
    """A zipped export (``--dataset export.zip``), unpacked to a temporary folder and read there.

    Member names that are absolute or climb out with ``..`` are refused, and the unpacked size
    is capped, before anything is written.
    """
    import tempfile
    import zipfile

    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise PipelineError(f"{path}: not a readable zip file ({exc})") from exc
    with zf, tempfile.TemporaryDirectory(prefix="tinyml-zip-") as tmp:
        total = 0
        for info in zf.infolist():
            parts = Path(info.filename).parts
            if info.filename.startswith(("/", "\\")) or ".." in parts or (parts and ":" in parts[0]):
                raise PipelineError(f"{path}: member {info.filename!r} points outside the archive")
            total += info.file_size
        if total > MAX_ZIP_BYTES:
            raise PipelineError(f"{path}: unpacks to {total} bytes, more than the {MAX_ZIP_BYTES} this loader reads")
        zf.extractall(tmp)
        root = _export_root(Path(tmp))
        if info_labels_files(root):
            return load_edge_impulse_export(root, rate_hz, source=str(path))
        return load_acquisition_folder(root, rate_hz, source=str(path))


MAX_ZIP_BYTES = 4 * 1024**3


# --------------------------------------------------------------------------- NPZ


def load_npz(path: str | Path) -> Dataset:
    """Arrays X (n, T, C) or (n, H, W[, C]), y (ints or strings); optional groups,
    recordings, times, label_names, kind ("timeseries" or "image"), rate_hz.

    Rows are already windows; rows sharing a `recordings` value were cut from one recording.
    A 3-D X is a time series unless `kind` says "image".
    """
    path = Path(path)
    src = str(path)
    known = {"X", "y", "groups", "recordings", "times", "label_names", "kind", "rate_hz"}
    arrays = load_npz_arrays(path, known)
    for required in ("X", "y"):
        if required not in arrays:
            raise PipelineError(f"{src}: missing array {required!r}", hint="an NPZ dataset needs arrays X and y")
    X = arrays.pop("X")
    y = arrays.pop("y")
    opt = arrays
    if X.dtype.kind not in "fiu":
        raise PipelineError(f"{src}: X: expected numbers, got dtype {X.dtype}")
    kind = str(opt["kind"]) if "kind" in opt else None
    if kind not in (None, "timeseries", "image"):
        raise PipelineError(f"{src}: kind: expected 'timeseries' or 'image', got {kind!r}")
    if X.ndim == 3:
        kind = kind or "timeseries"
        if kind == "image":
            X = X[..., None]
    elif X.ndim == 4:
        if kind == "timeseries":
            raise PipelineError(f"{src}: X has 4 dimensions {X.shape}; a time series is (n, T, C)")
        kind = "image"
    else:
        raise PipelineError(f"{src}: X: expected shape (n, T, C) or (n, H, W[, C]), got {X.shape}")
    n = X.shape[0]
    if n == 0:
        raise PipelineError(f"{src}: X has no rows")
    X = _finite(X.astype(np.float32), src, "X")
    if y.ndim != 1 or y.shape[0] != n:
        raise PipelineError(f"{src}: y: expected shape ({n},) to match X, got {y.shape}")
    names = None
    if "label_names" in opt:
        names = [str(v) for v in opt["label_names"].tolist()]
    if y.dtype.kind in "iu":
        if names is not None:
            if y.min() < 0 or y.max() >= len(names):
                raise PipelineError(f"{src}: y: values {y.min()}..{y.max()} do not index label_names ({len(names)} names)")
            labels, label_names = y.astype(np.int64), tuple(names)
        else:
            labels, label_names = _labels_to_ints(y.tolist(), src, [str(v) for v in sorted(set(y.tolist()))])
    elif y.dtype.kind in "US":
        labels, label_names = _labels_to_ints(y.astype(str).tolist(), src, names)
    else:
        raise PipelineError(f"{src}: y: expected integers or strings, got dtype {y.dtype}")

    def opt_1d(key, default):
        if key not in opt:
            return default, False
        arr = opt[key]
        if arr.ndim != 1 or arr.shape[0] != n:
            raise PipelineError(f"{src}: {key}: expected shape ({n},) to match X, got {arr.shape}")
        return arr, True

    ids = np.array([f"row{i:06d}" for i in range(n)])
    recordings, has_rec = opt_1d("recordings", ids)
    groups, has_groups = opt_1d("groups", recordings.astype(str))
    times, _ = opt_1d("times", np.arange(n, dtype=np.float64))
    if times.dtype.kind not in "fiu":
        raise PipelineError(f"{src}: times: expected numbers, got dtype {times.dtype}")
    _finite(times.astype(np.float64), src, "times")
    rate = None
    if "rate_hz" in opt:
        r = opt["rate_hz"]
        if r.size != 1 or r.dtype.kind not in "fiu":
            got = f"text {str(r.item())[:40]!r}" if r.size == 1 and r.dtype.kind in "US" else f"{r.dtype} of shape {r.shape}"
            raise PipelineError(f"{src}: rate_hz: expected one number, got {got}")
        rate = finite_number(r.item(), f"{src}: rate_hz", positive=True)
    return Dataset(
        name=path.stem,
        source=src,
        kind=kind,
        samples=list(X),
        labels=labels,
        label_names=label_names,
        recording_ids=recordings.astype(str),
        group_ids=groups.astype(str),
        start_times=times.astype(np.float64),
        sample_ids=ids,
        rate_hz=rate,
        channel_names=tuple(f"ch{c}" for c in range(X.shape[-1])),
        windowed=True,
        has_groups=has_groups,
        has_recordings=has_rec,
    )


# --------------------------------------------------------------------------- CSV


CSV_REQUIRED = ("recording", "label", "t")


def load_csv(path: str | Path, rate_hz="auto") -> Dataset:
    """Long format: one row per time step, columns ``recording``, ``label``, ``t`` (seconds)
    and one column per channel; optional ``group``. The pipeline windows the recordings."""
    path = Path(path)
    src = str(path)
    try:
        text = read_file_bytes(path).decode("utf-8-sig")  # -sig: Excel's "CSV UTF-8" starts with a BOM
    except UnicodeDecodeError as exc:
        raise PipelineError(f"{src}: not UTF-8 text ({exc})") from exc
    reader = csv_rows(text, src)
    header = next(reader, None)
    if not header:
        raise PipelineError(f"{src}: empty file", hint="expected a header: recording,label,t,<channels>")
    header = [h.strip() for h in header]
    missing = [c for c in CSV_REQUIRED if c not in header]
    if missing:
        raise PipelineError(f"{src}: missing column(s) {missing}", hint=f"header is {header}")
    if len(set(header)) != len(header):
        raise PipelineError(f"{src}: duplicate column names in header {header}")
    meta = {"recording", "label", "t", "group"}
    channels = [h for h in header if h not in meta]
    if not channels:
        raise PipelineError(f"{src}: no channel columns", hint="add one column per sensor channel after recording,label,t")
    col = {h: i for i, h in enumerate(header)}
    recs: dict[str, dict] = {}
    for lineno, row in enumerate(reader, start=2):
        if not row or all(not c.strip() for c in row):
            continue
        if len(row) != len(header):
            raise PipelineError(f"{src}: line {lineno}: expected {len(header)} fields, got {len(row)}")
        rec = row[col["recording"]].strip()
        label = row[col["label"]].strip()
        if not rec:
            raise PipelineError(f"{src}: line {lineno}: column 'recording' is empty")
        if not label:
            raise PipelineError(f"{src}: line {lineno}: column 'label' is empty")
        try:
            t = float(row[col["t"]])
            vals = [float(row[col[c]]) for c in channels]
        except ValueError:
            bad = next(c for c in ["t", *channels] if not _is_float(row[col[c]]))
            raise PipelineError(f"{src}: line {lineno}: column {bad!r}: expected a number, got {row[col[bad]]!r}") from None
        if not math.isfinite(t) or not all(math.isfinite(v) for v in vals):
            bad = next(c for c in ["t", *channels] if not math.isfinite(float(row[col[c]])))
            raise PipelineError(f"{src}: line {lineno}: column {bad!r}: NaN or infinite value")
        group = row[col["group"]].strip() if "group" in col else None
        entry = recs.setdefault(rec, {"label": label, "group": group, "t": [], "v": [], "line": lineno})
        if entry["label"] != label:
            raise PipelineError(
                f"{src}: line {lineno}: recording {rec!r} has label {label!r} but {entry['label']!r} at line {entry['line']}",
                hint="one recording carries one label",
            )
        if group is not None and entry["group"] != group:
            raise PipelineError(f"{src}: line {lineno}: recording {rec!r} has group {group!r} but {entry['group']!r} at line {entry['line']}")
        entry["t"].append(t)
        entry["v"].append(vals)
    if not recs:
        raise PipelineError(f"{src}: no data rows after the header")
    rates, samples, starts = [], [], []
    for rec, e in recs.items():
        t = np.asarray(e["t"])
        order = np.argsort(t, kind="stable")
        t = t[order]
        if t.size > 1 and np.any(np.diff(t) <= 0):
            raise PipelineError(f"{src}: recording {rec!r}: repeated time stamps in column 't'")
        rates.append(1.0 / float(np.median(np.diff(t))) if t.size > 1 else None)
        samples.append(np.asarray(e["v"], dtype=np.float32)[order])
        starts.append(float(t[0]))
    known = [r for r in rates if r is not None]
    rate = float(np.median(known)) if known else None
    notes: dict = {"loader": []}
    originals = None
    if known and (rate_hz != "auto" or (max(known) - min(known)) > 0.02 * rate):
        # Time stamps jitter: rates within 2% are one rate (3 significant digits), and a
        # one-row recording has none of its own. Then resampled like acquisition files.
        r3 = [float(f"{(r if r is not None else rate):.3g}") for r in rates]
        rate, samples, originals, resampled = _one_rate(src, r3, samples, rate_hz)
        if resampled:
            notes["resampled"] = resampled
            notes["loader"].append(f"{resampled['samples_resampled']} of {len(samples)} recordings resampled to "
                                   f"{rate:g} Hz ({resampled['chosen']})")
    names = list(recs)
    labels, label_names = _labels_to_ints([recs[r]["label"] for r in names], src)
    has_groups = "group" in col
    return Dataset(
        name=path.stem,
        source=src,
        kind="timeseries",
        samples=samples,
        labels=labels,
        label_names=label_names,
        recording_ids=np.asarray(names),
        group_ids=np.asarray([recs[r]["group"] if has_groups else r for r in names]),
        start_times=np.asarray(starts),
        sample_ids=np.asarray(names),
        rate_hz=rate,
        channel_names=tuple(channels),
        has_groups=has_groups,
        has_recordings=False,
        notes=notes,
        originals=originals,
    )


def _is_float(s: str) -> bool:
    try:
        float(s)
        return True
    except ValueError:
        return False


# --------------------------------------------------------------------------- dispatch


def load_dataset(spec: str, motion_seed: int = 0, motion_subjects: int = 12, motion_sessions: int = 3,
                 rate_hz="auto") -> Dataset:
    """Load a dataset by name (`motion`, `digits`) or path (folder, .zip, .npz, .csv).

    ``rate_hz`` ("auto": the most common rate) is the one rate acquisition files are brought to.
    """
    if spec == "motion":
        return load_motion(seed=motion_seed, subjects=motion_subjects, sessions=motion_sessions)
    if spec == "digits":
        return load_digits()
    path = Path(spec)
    if not path.exists():
        raise PipelineError(
            f"dataset {spec!r}: no such file or folder",
            hint=f"use one of {', '.join(EMBEDDED)}, an Edge Impulse export folder, a .npz or a .csv",
        )
    if path.is_dir():
        if info_labels_files(path):
            return load_edge_impulse_export(path, rate_hz)
        return load_acquisition_folder(path, rate_hz)
    suffix = path.suffix.lower()
    if path.stat().st_size == 0:
        raise PipelineError(f"{path}: empty file")
    if suffix == ".zip":
        return load_zip(path, rate_hz)
    if suffix == ".npz":
        return load_npz(path)
    if suffix == ".csv":
        return load_csv(path, rate_hz)
    if suffix in (".json", ".cbor"):
        raise PipelineError(f"{path}: a single acquisition file is not a dataset", hint="point --dataset at the folder that holds the files")
    raise PipelineError(f"{path}: unknown dataset format {suffix!r}", hint="expected a folder, .zip, .npz or .csv")


def dataset_from_config(cfg) -> Dataset:
    return load_dataset(
        cfg.data.dataset,
        motion_seed=cfg.data.motion_seed,
        motion_subjects=cfg.data.motion_subjects,
        motion_sessions=cfg.data.motion_sessions,
        rate_hz=cfg.data.rate_hz,
    )
