"""Streaming a test set to a device, one AT+RUNIMPULSESTATIC per window, resumable.

Each result is appended to a JSON-lines file as it arrives (written and flushed whole, one
line at a time), so an interrupted evaluation resumes where it stopped and never repeats
or loses a finished window. Scoring the results is the host pipeline's job; this module
only talks to the device and writes what it said.
"""

from __future__ import annotations

import os
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.core.artifacts import append_line, read_json_lines
from pipeline.core.errors import BridgeError


@dataclass
class StreamStats:
    done_before: int
    done_now: int
    total: int
    seconds: float
    payload_bytes: int
    timeouts_retried: int = 0
    """Transfers the device timed out (TIMEOUT) that were sent again (client.TIMEOUT_RETRIES)."""

    @property
    def windows_per_s(self) -> float:
        return self.done_now / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self) -> dict:
        return {
            "windows_resumed": self.done_before, "windows_streamed": self.done_now,
            "windows_total": self.total, "seconds": round(self.seconds, 3),
            "windows_per_s": round(self.windows_per_s, 2),
            "feature_bytes_per_s": round(self.payload_bytes / self.seconds, 1) if self.seconds > 0 else 0.0,
            "timeouts_retried": self.timeouts_retried,
        }


class DeviceMismatch(BridgeError):
    """The device answered, but not as this model does (labels, probabilities): a reset
    would not change that, so nothing reconnects on it."""


def finished_ids(path: Path) -> set[str]:
    """Window ids with a whole line in ``path``; a torn last line is cut off the file
    (quietly: the stage read and reported the file before streaming), its window runs again."""
    found = read_json_lines(path, warn=None, cut=True)
    return {rec["window_id"] for _, rec in found.records if isinstance(rec, dict) and isinstance(rec.get("window_id"), str)}


def stream_windows(device, X: np.ndarray, window_ids, labels, out_path: str | os.PathLike,
                   progress=None, model_sha256: str | None = None, *,
                   label_names: list[str] | None = None, device_identity: dict | None = None,
                   strict_order: bool = False, host_features: np.ndarray | None = None) -> StreamStats:
    """Classify every window not yet in ``out_path`` on ``device`` and append its line.

    ``device`` is a connected ``firmware_bridge.Device``; ``model_sha256``, the model it
    runs, and ``device_identity`` go on every line so results of another model or another
    device are never resumed. With ``label_names`` the device's probabilities are mapped
    by label name into that order, and a reply naming other labels (or, with
    ``strict_order``, the same labels in another order), or holding a probability that is
    not a number in [0, 1], is an error naming the window: its line is not written. On any
    error the lines already written stay; the error says how many are in and that a rerun
    resumes.

    With ``host_features`` (the host library's features of each window, when the model reads
    a [dsp] block's), ``X`` holds raw windows, as Edge Impulse's run-impulse streams them: the
    device computes the features, prints them in debug mode (AT+RUNIMPULSESTATIC=y,N) and each
    line records whether they are the host's byte for byte (``features``).
    """
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    done = finished_ids(out_path)
    todo = [i for i, wid in enumerate(window_ids) if wid not in done]
    start = time.perf_counter()
    payload = 0
    streamed = 0
    retried_before = getattr(device, "timeouts_retried", 0)
    iterator = progress(todo, total=len(todo)) if progress else todo
    for i in iterator:
        features = np.asarray(X[i], dtype=np.float32).ravel()
        try:
            result = device.classify(features, debug=True) if host_features is not None else device.classify(features)
        except BridgeError as exc:
            have = len(done) + streamed
            raise type(exc)(
                f"{exc.message} (after {have} of {len(window_ids)} windows; they are kept in {out_path})",
                hint="reconnect the device and run `tinyml eval` again: it resumes where it stopped",
            ) from exc
        have = len(done) + streamed
        probabilities = checked_probabilities(result.probabilities, label_names, strict_order,
                                              f"{device.port}: window {str(window_ids[i])!r}", have,
                                              len(window_ids), out_path)
        line = {
            "window_id": str(window_ids[i]),
            "label": str(labels[i]),
            "probabilities": list(probabilities.values()),
            "device_labels": list(probabilities),
            "prediction": result.label,
            "timing": result.timing,
            "model_sha256": model_sha256,
            "device": device_identity,
            "time": time.time(),
        }
        if host_features is not None:
            line["features"] = compare_features(result.raw, host_features[i],
                                                f"{device.port}: window {str(window_ids[i])!r}")
        # One write of the whole line, fsynced; a write the disk cuts short is undone.
        append_line(out_path, line, f"the {have} results before window {str(window_ids[i])!r} are kept; "
                    "`tinyml eval` resumes from them")
        streamed += 1
        payload += features.size * 4
    return StreamStats(len(done), streamed, len(window_ids), time.perf_counter() - start, payload,
                       getattr(device, "timeouts_retried", 0) - retried_before)


FEATURES_RE = re.compile(r"^Features \(float32 hex\):((?: [0-9a-fA-F]{8})*)\s*$", re.M)


def device_features(transcript: str, where: str) -> np.ndarray:
    """The features a device printed in debug mode: each float32's bits in hex
    (firmware_bridge/firmware/core/device_commands.cpp print_feature_bits)."""
    m = FEATURES_RE.search(transcript)
    if m is None:
        raise DeviceMismatch(f"{where}: the device printed no 'Features (float32 hex):' line in debug mode",
                             hint="the device's firmware does not compute the [dsp] features: flash it again")
    words = m.group(1).split()
    return np.array([int(w, 16) for w in words], dtype=np.uint32).view(np.float32)


def compare_features(transcript: str, host: np.ndarray, where: str) -> dict:
    """Whether the device's features are the host's, byte for byte: the count, and the first
    index that differs with both values (None when identical)."""
    dev = device_features(transcript, where)
    host = np.ascontiguousarray(np.asarray(host, dtype=np.float32).ravel())
    if dev.size != host.size:
        return {"values": int(dev.size), "identical": False, "first_difference": None,
                "note": f"the device printed {dev.size} features, the host computed {host.size}"}
    differ = np.flatnonzero(dev.view(np.uint32) != host.view(np.uint32))
    first = int(differ[0]) if differ.size else None
    out = {"values": int(dev.size), "identical": first is None, "first_difference": first}
    if first is not None:
        out.update(device=float(dev[first]), host=float(host[first]), differing=int(differ.size))
    return out


def stream_windows_resuming(device, reconnect, X: np.ndarray, window_ids, labels, out_path: str | os.PathLike,
                            progress=None, model_sha256: str | None = None, attempts: int = 3,
                            **checks):
    """``stream_windows``, reconnecting when the device stops answering part way (a reset,
    a fault): ``reconnect()`` returns a fresh connected device, and streaming resumes from
    ``out_path``. A window is written only once its whole result is in, so after any number
    of resets every window is scored exactly once. Gives up after ``attempts`` reconnects
    in a row without a finished window. ``checks`` go to ``stream_windows``
    (label names, device identity, strict order). Returns (stats, the device in use at the end)."""
    out_path = Path(out_path)
    before = len(finished_ids(out_path))
    start = time.perf_counter()
    failures = 0
    while True:
        done = len(finished_ids(out_path))
        try:
            stream_windows(device, X, window_ids, labels, out_path, progress=progress, model_sha256=model_sha256,
                           **checks)
            break
        except DeviceMismatch:
            raise
        except BridgeError as exc:
            failures = failures + 1 if len(finished_ids(out_path)) == done else 1
            if failures > attempts:
                raise
            print(f"eval: {exc.message}; reconnecting (attempt {failures} of {attempts})", file=sys.stderr)
            device.close()
            device = reconnect()
    total_now = len(finished_ids(out_path)) - before
    payload = total_now * int(np.asarray(X[0]).size) * 4 if len(X) else 0
    return StreamStats(before, total_now, len(window_ids), time.perf_counter() - start, payload), device


def checked_probabilities(probabilities: dict[str, float], label_names: list[str] | None, strict_order: bool,
                          where: str, have: int, total: int, out_path: Path) -> dict[str, float]:
    """A device's probabilities, in ``label_names`` order (mapped by name), each a number
    in [0, 1]; anything else is a BridgeError naming the window (``where``)."""
    kept = f" (nothing written for it; {have} of {total} windows are done and kept in {out_path})"
    names = list(probabilities)
    if label_names is not None:
        if sorted(names) != sorted(label_names) or len(set(names)) != len(names):
            raise DeviceMismatch(f"{where}: the device reports labels {names}, the model has {list(label_names)}{kept}",
                              hint="the device runs another model or another label list: flash it again")
        if strict_order and names != list(label_names):
            raise DeviceMismatch(f"{where}: the device lists labels in the order {names}, the model's order is "
                              f"{list(label_names)}{kept}",
                              hint="a device that does not answer AT+MODELINFO? is read in its printed order")
        names = list(label_names)
    out = {}
    for name in names:
        p = probabilities[name]
        if not (isinstance(p, (int, float)) and 0.0 <= p <= 1.0):  # False for NaN too
            raise DeviceMismatch(f"{where}: the device reports probability {p!r} for {name!r}, "
                              f"expected a number in [0, 1]{kept}",
                              hint="the device's model or output dequantization is broken")
        out[name] = float(p)
    return out
