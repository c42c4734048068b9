"""Cutting windows, after the split and never before.

A `Windows` value is what a model sees: fixed-shape inputs with, per window, the sample it
came from, its offset in that sample (in time steps), its recording, group and start time.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from pipeline.core.errors import PipelineError
from pipeline.data.dataset import Dataset


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
    padded: np.ndarray | None = None  # int: zero steps appended at the end (0: none)

    def __len__(self) -> int:
        return int(self.X.shape[0])

    def subset(self, idx: np.ndarray) -> Windows:
        idx = np.asarray(idx)
        return Windows(
            X=self.X[idx], y=self.y[idx], window_ids=self.window_ids[idx],
            sample_index=self.sample_index[idx], offsets=self.offsets[idx], length=self.length,
            recording_ids=self.recording_ids[idx], group_ids=self.group_ids[idx],
            start_times=self.start_times[idx],
            padded=None if self.padded is None else self.padded[idx],
        )


# Edge Impulse's defaults for continuous motion (window 2 s, a new window every 0.5 s): what
# recordings much longer than one gesture get when the window is "auto".
CONTINUOUS_WINDOW_MS = 2000.0
CONTINUOUS_STRIDE_MS = 500.0
# A typical sample longer than two such windows is a continuous recording to slide over;
# shorter, it is one event (Edge Impulse projects mostly hold 1-2 s samples of one gesture,
# keyword or fall each), and the window is the sample.
CONTINUOUS_ABOVE_S = 2 * CONTINUOUS_WINDOW_MS / 1000.0
# The window of short samples is the length a quarter of them fall short of (the lower
# quartile): on fixed-length exports that is the sample length itself; where lengths vary it
# zero-pads at most a quarter of the samples. The median padded half of the samples of
# ei-nano33-fall (120-step samples of one board, 125 of the other), and the padding went
# with the board, so with the class: a cue no sensor gives.
EVENT_QUANTILE = 0.25
# A sample is zero-padded only when at least half of its window is data: below that the
# window would be mostly padding, and its length more than its content would tell the class.
PAD_MIN_SHARE = 0.5

# Audio: one channel sampled at AUDIO_MIN_RATE_HZ or more. Speech needs at least its
# telephone band (300-3400 Hz), so 8 kHz; no IMU in Edge Impulse's or our data samples faster
# than 1.6 kHz (accelerometers: 62.5-1,600 Hz).
AUDIO_MIN_RATE_HZ = 4000.0
# An utterance must fit its window whole: a digit or keyword cut short loses what tells it
# apart. So audio's window is the length AUDIO_EVENT_QUANTILE of the samples fit in, and every
# shorter sample is zero-padded, however short: zeros are silence, which a microphone also
# hears between words (the MFE's noise floor maps both to 0), and a short word is still a
# word. On fsdd (0.14-2.28 s) the lower quartile (342 ms) cut 75% of the digits; 0.9 gives 605
# ms, cuts the longest 10% short and drops none.
AUDIO_EVENT_QUANTILE = 0.9


def is_audio(rate_hz: float | None, channels: int) -> bool:
    return bool(rate_hz) and channels == 1 and float(rate_hz) >= AUDIO_MIN_RATE_HZ


def pad_min_share(dataset: Dataset) -> float:
    """The least share of a window a sample must fill to be zero-padded (else dropped)."""
    return 0.0 if is_audio(dataset.rate_hz, dataset.channels) else PAD_MIN_SHARE


@dataclass
class WindowChoice:
    """Window length and stride in steps, in ms, and why."""

    length: int
    stride: int
    window_ms: float
    stride_ms: float
    auto: bool
    why: str


def choose_window(dataset: Dataset, window_ms="auto", stride_ms="auto") -> WindowChoice:
    """The window for this dataset: the configured ms, or chosen from the sample lengths.

    "auto" looks only at how long the samples are (no label, no value): when the median
    sample is at most ``CONTINUOUS_ABOVE_S`` long, every sample is one event and one window
    of the typical length (``EVENT_QUANTILE``; shorter ones zero-padded, see ``cut_windows``); longer recordings
    get a 2 s window every 0.5 s. An explicit stride wins; with an explicit window, the
    stride is a quarter of it.
    """
    if dataset.windowed:
        length = int(dataset.samples[0].shape[0])
        return WindowChoice(length, length, 0.0, 0.0, False, "every sample is one window (the data is windowed)")
    rate = dataset.rate_hz
    if not rate:
        raise PipelineError(f"{dataset.source}: no sampling rate known, cannot cut windows")
    lengths = dataset.lengths
    median = float(np.median(lengths))
    audio = is_audio(rate, dataset.channels)
    quantile = AUDIO_EVENT_QUANTILE if audio else EVENT_QUANTILE
    typical = int(np.floor(np.quantile(lengths, quantile)))
    auto = window_ms == "auto"
    if auto:
        if median / rate > CONTINUOUS_ABOVE_S:
            window_ms, event = CONTINUOUS_WINDOW_MS, False
            why = (f"auto: recordings are long (median {median / rate:.3g} s), so a sliding window of "
                   f"{CONTINUOUS_WINDOW_MS:g} ms")
        else:
            window_ms, event = typical * 1000.0 / rate, True
            why = (f"auto: samples are short (median {median / rate:.3g} s; {lengths.min()}..{lengths.max()} "
                   f"steps), so one window per sample, {typical} steps long: "
                   + (f"audio, so the length {quantile:.0%} of the utterances fit in whole" if audio else
                      "the length three quarters of the samples reach"))
    else:
        event = False
        why = f"[split] window_ms = {float(window_ms):g}"
    length = int(round(float(window_ms) / 1000.0 * rate))
    if length < 2:
        raise PipelineError(f"[split] window_ms {window_ms} is under two samples at {rate} Hz")
    if stride_ms == "auto":
        stride_ms = float(window_ms) if event else (CONTINUOUS_STRIDE_MS if auto else float(window_ms) / 4)
        why += f", stride {stride_ms:g} ms" + (" (one window per window length)" if event else "")
    else:
        why += f", [split] stride_ms = {float(stride_ms):g}"
    stride = max(1, int(round(float(stride_ms) / 1000.0 * rate)))
    return WindowChoice(length, stride, length * 1000.0 / rate, stride * 1000.0 / rate, auto, why)


def window_steps(dataset: Dataset, window_ms, stride_ms) -> tuple[int, int]:
    """Window length and stride in time steps for this dataset."""
    c = choose_window(dataset, window_ms, stride_ms)
    return c.length, c.stride


def cut_windows(dataset: Dataset, indices: np.ndarray, length: int, stride: int,
                skipped: dict | None = None, pad: str = "drop") -> Windows:
    """Windows of ``length`` steps every ``stride`` steps from the samples at ``indices``.

    Already-windowed datasets (NPZ rows, images) give one window per sample. A recording
    shorter than one window gives none with ``pad="drop"``; with ``pad="zero"`` one at least
    ``pad_min_share`` of a window long (``PAD_MIN_SHARE``, none for audio) gives one window
    with zeros appended (Edge Impulse's "zero-pad data"), marked in ``Windows.padded``. What gives no window is counted in
    ``skipped`` ("shorter than a window"), never dropped silently.
    """
    indices = np.asarray(indices, dtype=np.int64)
    xs, ys, ids, src, offs, pads = [], [], [], [], [], []
    short = 0
    min_share = pad_min_share(dataset)
    for i in indices:
        sample = dataset.samples[i]
        fill = 0
        if dataset.windowed:
            starts = [0]
        else:
            n = sample.shape[0]
            if n < length:
                if pad != "zero" or n < min_share * length:
                    short += 1
                    continue
                fill = length - n
                sample = np.concatenate([sample, np.zeros((fill, sample.shape[1]), sample.dtype)])
                n = length
            starts = range(0, n - length + 1, stride)
        for s in starts:
            xs.append(sample[s:s + length] if not dataset.windowed else sample)
            pads.append(fill)
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
        padded=np.asarray(pads, dtype=np.int64),
    )


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
