"""Edge Impulse data: acquisition files (JSON or CBOR), exports with ``info.labels``, bare
folders of acquisition files, and zipped exports.

An acquisition file holds ``protected`` (with ``iat``, its time) and ``payload`` (with
``device_name``, ``device_type``, ``interval_ms``, ``sensors`` and ``values``): Edge
Impulse's data acquisition format. ``parse_acquisition`` also reads what
``firmware_bridge.host.capture`` receives from a board.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.core.errors import PipelineError
from pipeline.core.safe_io import (
    finite_number,
    finite_rows,
    loads_json,
    path_inside,
    read_file_bytes,
    resolved,
)
from pipeline.data.dataset import Dataset, add_repair, labels_to_ints
from pipeline.data.rates import one_rate


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
        import cbor2  # lazy: only CBOR files need it

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
    rate, samples, originals, resampled = one_rate(source, rates, [acq.values for acq, _, _ in items], rate_hz)
    labels, label_names = labels_to_ints([lab for _, lab, _ in items], source)
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


def load_edge_impulse_export(folder: str | Path, rate_hz="auto", source: str | None = None,
                             strict: bool = False) -> Dataset:
    """An Edge Impulse export: ``info.labels`` with ``training/`` and ``testing/`` (or ``test/``).

    Reads what real exports hold: ``info.labels`` at the root or one per split folder, entries
    with the older or newer keys (``name``, ``metadata``; ``boundingBoxes`` is not needed), and
    a listed file that is not at its path but is under the export by its name (an author who
    moved the files into one folder per label). Files missing everywhere are skipped and
    said loudly (a repair), or with ``strict`` an error.
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
            label, category, skip = _entry_label(entry, where, default_category)
            if skip:
                skipped[skip] += 1
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
            items.append((acq, label, "test" if category == "testing" else "train"))
    if missing:
        said = f"{', '.join(missing[:3])}{', ...' if len(missing) > 3 else ''}"
        if strict or not items:
            raise PipelineError(
                f"{source}: {len(missing)} file(s) listed in info.labels are missing, neither at their path nor "
                f"anywhere under the export by name: {said}",
                hint="restore the files, or remove their entries from info.labels"
                     + ("; without --strict they are skipped" if strict and items else ""),
            )
        skipped["listed in info.labels, missing"] += len(missing)
    for sub in SPLIT_FOLDERS:
        for p in sorted((folder / sub).glob("*")):
            if p.suffix in ACQ_SUFFIXES and resolved(p) not in found:
                skipped["not listed in info.labels"] += 1
    ds = _dataset_from_acquisitions(Path(source).stem if source.endswith(".zip") else folder.name,
                                    source, items, dict(skipped), rate_hz)
    if missing:
        add_repair(ds, "missing_files",
                   f"{len(missing)} of {len(missing) + len(items)} file(s) listed in info.labels are missing "
                   f"(neither at their path nor anywhere under the export by name), skipped: {said}", missing)
    if moved:
        ds.notes["loader"].insert(0, f"{len(moved)} file(s) listed in info.labels were not at their path and were "
                                     f"found by name under the export (moved), e.g. {moved[0]}")
    return ds


def _entry_label(entry, where: str, default_category: str) -> tuple[str, str, str | None]:
    """An info.labels entry's (label, category, why it is skipped or None); refuses what is malformed."""
    if not isinstance(entry, dict) or not isinstance(entry.get("path"), str):
        raise PipelineError(f"{where}: expected an object with a 'path'")
    category = entry.get("category", default_category)
    label = entry.get("label")
    if not isinstance(label, dict) or "type" not in label:
        raise PipelineError(f"{where}: field 'label': expected an object with a 'type'")
    if label["type"] == "unlabeled":
        return "", category, "unlabeled"
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
        return label["label"], category, f"category {category}"
    return label["label"], category, None


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


def load_zip(path: Path, rate_hz="auto", strict: bool = False) -> Dataset:
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
            return load_edge_impulse_export(root, rate_hz, source=str(path), strict=strict)
        return load_acquisition_folder(root, rate_hz, source=str(path))


MAX_ZIP_BYTES = 4 * 1024**3
