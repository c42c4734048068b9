"""Loading a dataset by name or path: the embedded sets (``motion``, ``digits``) and, by the
path's format, the loader of ``edge_impulse``, ``csv_table`` or ``npz``."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.core.errors import PipelineError
from pipeline.data import motion
from pipeline.data.csv_table import load_csv
from pipeline.data.dataset import Dataset, say_repairs
from pipeline.data.edge_impulse import (
    info_labels_files,
    load_acquisition_folder,
    load_edge_impulse_export,
    load_zip,
)
from pipeline.data.labels import reconcile_labels
from pipeline.data.npz import load_npz
from pipeline.data.wav import DEFAULT_PATTERN, has_wav_files, load_wav_folder

EMBEDDED = ("motion", "digits")


def load_motion(seed: int = 0, subjects: int = 12, sessions: int = 3) -> Dataset:
    """The embedded synthetic motion dataset (see ``pipeline.data.motion``)."""
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
    from sklearn.datasets import load_digits as sk_digits  # lazy: scikit-learn is slow to import

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


def load_dataset(spec: str, motion_seed: int = 0, motion_subjects: int = 12, motion_sessions: int = 3,
                 rate_hz="auto", wav_pattern: str = DEFAULT_PATTERN, *, strict: bool = False,
                 merge_labels: bool = True, label_map: dict[str, str] | None = None) -> Dataset:
    """Load a dataset by name (`motion`, `digits`) or path (folder, .zip, .npz, .csv), its
    labels reconciled (``pipeline.data.labels``: ``label_map``, spellings merged, classes only
    in test left out; each a repair in ``notes["repairs"]``, or with ``strict`` an error).

    ``rate_hz`` ("auto": the most common rate) is the one rate acquisition files are brought to.
    """
    ds = _load(spec, motion_seed, motion_subjects, motion_sessions, rate_hz, strict, wav_pattern)
    return reconcile_labels(ds, merge=merge_labels, label_map=label_map, strict=strict)


def _load(spec: str, motion_seed: int, motion_subjects: int, motion_sessions: int, rate_hz,
          strict: bool, wav_pattern: str = DEFAULT_PATTERN) -> Dataset:
    if spec == "motion":
        return load_motion(seed=motion_seed, subjects=motion_subjects, sessions=motion_sessions)
    if spec == "digits":
        return load_digits()
    path = Path(spec)
    if not path.exists():
        raise PipelineError(
            f"dataset {spec!r}: no such file or folder",
            hint=f"use one of {', '.join(EMBEDDED)}, an Edge Impulse export folder, a folder of WAV files, a .npz or a .csv",
        )
    if path.is_dir():
        if info_labels_files(path):
            return load_edge_impulse_export(path, rate_hz, strict=strict)
        if has_wav_files(path):
            return load_wav_folder(path, wav_pattern, rate_hz)
        return load_acquisition_folder(path, rate_hz)
    suffix = path.suffix.lower()
    if path.stat().st_size == 0:
        raise PipelineError(f"{path}: empty file")
    if suffix == ".zip":
        return load_zip(path, rate_hz, strict=strict)
    if suffix == ".npz":
        return load_npz(path)
    if suffix == ".csv":
        return load_csv(path, rate_hz)
    if suffix in (".json", ".cbor"):
        raise PipelineError(f"{path}: a single acquisition file is not a dataset", hint="point --dataset at the folder that holds the files")
    raise PipelineError(f"{path}: unknown dataset format {suffix!r}", hint="expected a folder, .zip, .npz or .csv")


def dataset_from_config(cfg, out=print) -> Dataset:
    """The dataset the config names (``[data]``; ``[split] strict``), each repair said as one
    loud line on ``out``."""
    ds = load_dataset(
        cfg.data.dataset,
        motion_seed=cfg.data.motion_seed,
        motion_subjects=cfg.data.motion_subjects,
        motion_sessions=cfg.data.motion_sessions,
        rate_hz=cfg.data.rate_hz,
        wav_pattern=cfg.data.wav_pattern,
        strict=cfg.split.strict,
        merge_labels=cfg.data.merge_labels,
        label_map=cfg.data.label_map,
    )
    say_repairs(ds, out)
    return ds
