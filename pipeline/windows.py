"""Cutting windows, after the split and never before.

A `Windows` value is what a model sees: fixed-shape inputs with, per window, the sample it
came from, its offset in that sample (in time steps), its recording, group and start time.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.datasets import Dataset
from pipeline.errors import PipelineError


@dataclass(eq=False)
class Windows:
    X: np.ndarray  # float32 (n, L, C) or (n, H, W, C)
    y: np.ndarray  # int64 (n,)
    window_ids: np.ndarray  # str: "<sample_id>@<offset>"
    sample_index: np.ndarray  # int: index into Dataset.samples
    offsets: np.ndarray  # int: first time step of the window within its sample
    length: int  # time steps per window (rows for images)
    recording_ids: np.ndarray
    group_ids: np.ndarray
    start_times: np.ndarray  # seconds

    def __len__(self) -> int:
        return int(self.X.shape[0])

    def subset(self, idx: np.ndarray) -> Windows:
        idx = np.asarray(idx)
        return Windows(
            X=self.X[idx], y=self.y[idx], window_ids=self.window_ids[idx],
            sample_index=self.sample_index[idx], offsets=self.offsets[idx], length=self.length,
            recording_ids=self.recording_ids[idx], group_ids=self.group_ids[idx],
            start_times=self.start_times[idx],
        )


def window_steps(dataset: Dataset, window_ms: float, stride_ms: float) -> tuple[int, int]:
    """Window length and stride in time steps for this dataset."""
    if dataset.windowed:
        length = int(dataset.samples[0].shape[0])
        return length, length
    if not dataset.rate_hz:
        raise PipelineError(f"{dataset.source}: no sampling rate known, cannot cut {window_ms} ms windows")
    length = int(round(window_ms / 1000.0 * dataset.rate_hz))
    stride = max(1, int(round(stride_ms / 1000.0 * dataset.rate_hz)))
    if length < 2:
        raise PipelineError(f"[split] window_ms {window_ms} is under two samples at {dataset.rate_hz} Hz")
    return length, stride


def cut_windows(dataset: Dataset, indices: np.ndarray, length: int, stride: int,
                skipped: dict | None = None) -> Windows:
    """Windows of ``length`` steps every ``stride`` steps from the samples at ``indices``.

    Already-windowed datasets (NPZ rows, images) give one window per sample. A recording
    shorter than one window gives none; it is counted in ``skipped`` ("shorter than a
    window"), never dropped silently.
    """
    indices = np.asarray(indices, dtype=np.int64)
    xs, ys, ids, src, offs = [], [], [], [], []
    short = 0
    for i in indices:
        sample = dataset.samples[i]
        if dataset.windowed:
            starts = [0]
        else:
            n = sample.shape[0]
            if n < length:
                short += 1
                continue
            starts = range(0, n - length + 1, stride)
        for s in starts:
            xs.append(sample[s:s + length] if not dataset.windowed else sample)
            ys.append(dataset.labels[i])
            ids.append(f"{dataset.sample_ids[i]}@{s}")
            src.append(i)
            offs.append(s)
    if skipped is not None and short:
        skipped["shorter than a window"] = skipped.get("shorter than a window", 0) + short
    src_arr = np.asarray(src, dtype=np.int64)
    offs_arr = np.asarray(offs, dtype=np.int64)
    rate = dataset.rate_hz or 1.0
    shape = (0, length, dataset.channels) if dataset.kind == "timeseries" else (0, *dataset.samples[0].shape)
    return Windows(
        X=np.stack(xs).astype(np.float32) if xs else np.zeros(shape, np.float32),
        y=np.asarray(ys, dtype=np.int64),
        window_ids=np.asarray(ids, dtype=str),
        sample_index=src_arr,
        offsets=offs_arr,
        length=length,
        recording_ids=dataset.recording_ids[src_arr] if src else np.asarray([], dtype=str),
        group_ids=dataset.group_ids[src_arr] if src else np.asarray([], dtype=str),
        start_times=(dataset.start_times[src_arr] + offs_arr / rate) if src else np.asarray([], dtype=np.float64),
    )
