"""Streaming a test set to a device, one AT+RUNIMPULSESTATIC per window, resumable.

Each result is appended to a JSON-lines file as it arrives (written and flushed whole, one
line at a time), so an interrupted evaluation resumes where it stopped and never repeats
or loses a finished window. Scoring the results is the host pipeline's job; this module
only talks to the device and writes what it said.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from firmware_bridge.errors import BridgeError


@dataclass
class StreamStats:
    done_before: int
    done_now: int
    total: int
    seconds: float
    payload_bytes: int

    @property
    def windows_per_s(self) -> float:
        return self.done_now / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self) -> dict:
        return {
            "windows_resumed": self.done_before, "windows_streamed": self.done_now,
            "windows_total": self.total, "seconds": round(self.seconds, 3),
            "windows_per_s": round(self.windows_per_s, 2),
            "feature_bytes_per_s": round(self.payload_bytes / self.seconds, 1) if self.seconds > 0 else 0.0,
        }


def finished_ids(path: Path) -> set[str]:
    """Window ids with a whole line in ``path``; a torn last line is cut off the file."""
    if not path.exists():
        return set()
    data = path.read_bytes()
    whole_end = data.rfind(b"\n") + 1
    ids = set()
    for line in data[:whole_end].splitlines():
        try:
            ids.add(json.loads(line)["window_id"])
        except (ValueError, KeyError, TypeError):
            continue
    if whole_end != len(data):
        # A line torn by a crash mid-write: drop it, its window runs again.
        with open(path, "r+b") as f:
            f.truncate(whole_end)
    return ids


def stream_windows(device, X: np.ndarray, window_ids, labels, out_path: str | os.PathLike,
                   progress=None, model_sha256: str | None = None) -> StreamStats:
    """Classify every window not yet in ``out_path`` on ``device`` and append its line.

    ``device`` is a connected ``firmware_bridge.Device``; ``model_sha256``, the model it
    runs, goes on every line so results of another model are never resumed. On a device
    error the lines already written stay; the error says how many are in and that a rerun
    resumes.
    """
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    done = finished_ids(out_path)
    todo = [i for i, wid in enumerate(window_ids) if wid not in done]
    start = time.perf_counter()
    payload = 0
    streamed = 0
    iterator = progress(todo, total=len(todo)) if progress else todo
    with open(out_path, "a", encoding="utf-8") as f:
        for i in iterator:
            features = np.asarray(X[i], dtype=np.float32).ravel()
            try:
                result = device.classify(features)
            except BridgeError as exc:
                have = len(done) + streamed
                raise type(exc)(
                    f"{exc.message} (after {have} of {len(window_ids)} windows; they are kept in {out_path})",
                    hint="reconnect the device and run `tinyml eval` again: it resumes where it stopped",
                ) from exc
            line = {
                "window_id": str(window_ids[i]),
                "label": str(labels[i]),
                "probabilities": [float(p) for p in result.probabilities.values()],
                "device_labels": list(result.probabilities),
                "prediction": result.label,
                "timing": result.timing,
                "model_sha256": model_sha256,
                # Results of another device are not resumed (the virtual device's, for QEMU's).
                "device_type": getattr(getattr(device, "config", None), "device_type", None),
                "time": time.time(),
            }
            f.write(json.dumps(line) + "\n")
            f.flush()
            os.fsync(f.fileno())
            streamed += 1
            payload += features.size * 4
    return StreamStats(len(done), streamed, len(window_ids), time.perf_counter() - start, payload)


def stream_windows_resuming(device, reconnect, X: np.ndarray, window_ids, labels, out_path: str | os.PathLike,
                            progress=None, model_sha256: str | None = None, attempts: int = 3):
    """``stream_windows``, reconnecting when the device stops answering part way (a reset,
    a fault): ``reconnect()`` returns a fresh connected device, and streaming resumes from
    ``out_path``. A window is written only once its whole result is in, so after any number
    of resets every window is scored exactly once. Gives up after ``attempts`` reconnects
    in a row without a finished window. Returns (stats, the device in use at the end)."""
    import sys

    out_path = Path(out_path)
    before = len(finished_ids(out_path))
    start = time.perf_counter()
    failures = 0
    while True:
        done = len(finished_ids(out_path))
        try:
            stream_windows(device, X, window_ids, labels, out_path, progress=progress, model_sha256=model_sha256)
            break
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
