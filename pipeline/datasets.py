"""Datasets: one `Dataset` value and the loaders that make it.

A sample is what a loader reads as one unit: a whole recording for time series that the
pipeline windows later (motion, CSV, Edge Impulse acquisition files), or one model input
already (NPZ rows, digit images). Windows are cut after the split (``pipeline.windows``),
never here.

Every loader rejects bad input with a `PipelineError` naming the file, the field and what
was expected, and counts anything it skips in ``Dataset.skipped``.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from pipeline.errors import PipelineError
from pipeline.safe_io import (
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
        }


# --------------------------------------------------------------------------- embedded


def load_motion(seed: int = 0, subjects: int = 12, sessions: int = 3) -> Dataset:
    """The embedded synthetic motion dataset (see ``pipeline.motion``)."""
    from pipeline import motion

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
        notes=raw["notes"],
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
    device_name: str
    interval_ms: float
    sensors: tuple[str, ...]
    values: np.ndarray  # (T, C) float32
    created: float | None


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
        names.append(s["name"])
    values = payload.get("values")
    if not isinstance(values, list) or not values:
        raise PipelineError(f"{source}: field 'payload.values': expected a non-empty list")
    rows = []
    width = len(names)
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
    arr = finite_rows(rows, f"{source}: field 'payload.values'")
    return Acquisition(
        path=Path(source),
        device_name=str(payload.get("device_name") or "unknown-device"),
        interval_ms=float(interval),
        sensors=tuple(names),
        values=arr.astype(np.float32),
        created=created,
    )


def _label_from_filename(path: Path) -> str:
    return path.name.split(".")[0]


def _dataset_from_acquisitions(
    name: str, source: str, items: list[tuple[Acquisition, str, str | None]], skipped: dict
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
        if abs(acq.interval_ms - first.interval_ms) > 1e-6 * first.interval_ms + 1e-9:
            raise PipelineError(
                f"{acq.path}: interval_ms {acq.interval_ms} differs from {first.interval_ms} in {first.path.name}",
                hint="resample the data to one rate before loading",
            )
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
    return Dataset(
        name=name,
        source=source,
        kind="timeseries",
        samples=[acq.values for acq, _, _ in items],
        labels=labels,
        label_names=label_names,
        recording_ids=np.asarray(sample_ids),
        group_ids=np.asarray([acq.device_name for acq, _, _ in items]),
        start_times=np.asarray(starts),
        sample_ids=np.asarray(sample_ids),
        rate_hz=1000.0 / first.interval_ms,
        channel_names=first.sensors,
        has_groups=True,
        has_recordings=False,
        predefined_split=predefined,
        skipped=skipped,
    )


def load_edge_impulse_export(folder: str | Path) -> Dataset:
    """An Edge Impulse export: ``info.labels`` with ``training/`` and ``testing/`` folders."""
    folder = Path(folder)
    info_path = folder / "info.labels"
    info = loads_json(read_file_bytes(info_path), str(info_path))
    files = info.get("files") if isinstance(info, dict) else None
    if not isinstance(files, list):
        raise PipelineError(f"{info_path}: field 'files': expected a list")
    skipped: Counter = Counter()
    items = []
    for k, entry in enumerate(files):
        where = f"{info_path}: files[{k}]"
        if not isinstance(entry, dict) or not isinstance(entry.get("path"), str):
            raise PipelineError(f"{where}: expected an object with a 'path'")
        category = entry.get("category", "training")
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
        path = path_inside(folder, entry["path"], where)
        acq = parse_acquisition(read_file_bytes(path, f"{where}: file {path} listed in info.labels"), str(path))
        items.append((acq, label["label"], "test" if category == "testing" else "train"))
    listed = {resolved(folder / e["path"]) for e in files if isinstance(e, dict) and isinstance(e.get("path"), str)}
    for sub in ("training", "testing"):
        for p in sorted((folder / sub).glob("*")):
            if p.suffix in (".json", ".cbor") and p.resolve() not in listed:
                skipped["not listed in info.labels"] += 1
    return _dataset_from_acquisitions(folder.name, str(folder), items, dict(skipped))


def load_acquisition_folder(folder: str | Path) -> Dataset:
    """A bare folder of acquisition files named ``<label>.<id>[.<more>].json`` (or .cbor).

    Files in ``training/`` or ``testing/`` subfolders keep that category as their split.
    """
    folder = Path(folder)
    files = [p for p in folder.rglob("*") if p.is_file()]
    paths = sorted(p for p in files if p.suffix in (".json", ".cbor"))
    skipped: Counter = Counter()
    other = [p for p in files if p.suffix not in (".json", ".cbor")]
    if other:
        skipped["not .json or .cbor"] = len(other)
    items = []
    for p in paths:
        label = _label_from_filename(p)
        if not label or "." not in p.name[len(label):]:
            raise PipelineError(f"{p}: file name does not start with '<label>.'", hint="name files <label>.<id>.json")
        rel = p.relative_to(folder).parts
        split = {"training": "train", "testing": "test"}.get(rel[0]) if len(rel) > 1 else None
        items.append((parse_acquisition(read_file_bytes(p), str(p)), label, split))
    if any(sp is not None for _, _, sp in items) and not all(sp is not None for _, _, sp in items):
        items = [(a, lab, sp or "train") for a, lab, sp in items]
    return _dataset_from_acquisitions(folder.name, str(folder), items, dict(skipped))


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


def load_csv(path: str | Path) -> Dataset:
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
        if t.size > 1:
            rates.append(1.0 / float(np.median(np.diff(t))))
        samples.append(np.asarray(e["v"], dtype=np.float32)[order])
        starts.append(float(t[0]))
    rate = float(np.median(rates)) if rates else None
    if rates and (max(rates) - min(rates)) > 0.02 * rate:
        raise PipelineError(
            f"{src}: column 't': recordings have different sampling rates ({min(rates):.3g} to {max(rates):.3g} Hz)",
            hint="resample to one rate before loading",
        )
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
    )


def _is_float(s: str) -> bool:
    try:
        float(s)
        return True
    except ValueError:
        return False


# --------------------------------------------------------------------------- dispatch


def load_dataset(spec: str, motion_seed: int = 0, motion_subjects: int = 12, motion_sessions: int = 3) -> Dataset:
    """Load a dataset by name (`motion`, `digits`) or path (folder, .npz, .csv)."""
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
        if (path / "info.labels").is_file():
            return load_edge_impulse_export(path)
        return load_acquisition_folder(path)
    suffix = path.suffix.lower()
    if path.stat().st_size == 0:
        raise PipelineError(f"{path}: empty file")
    if suffix == ".npz":
        return load_npz(path)
    if suffix == ".csv":
        return load_csv(path)
    if suffix in (".json", ".cbor"):
        raise PipelineError(f"{path}: a single acquisition file is not a dataset", hint="point --dataset at the folder that holds the files")
    raise PipelineError(f"{path}: unknown dataset format {suffix!r}", hint="expected a folder, .npz or .csv")


def dataset_from_config(cfg) -> Dataset:
    return load_dataset(
        cfg.data.dataset,
        motion_seed=cfg.data.motion_seed,
        motion_subjects=cfg.data.motion_subjects,
        motion_sessions=cfg.data.motion_sessions,
    )
