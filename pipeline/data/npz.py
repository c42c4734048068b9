"""NPZ datasets: arrays of windows already cut (``--dataset data.npz``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.core.errors import PipelineError
from pipeline.core.safe_io import finite_number, load_npz_arrays
from pipeline.data.dataset import Dataset, finite_array, labels_to_ints

KNOWN = {"X", "y", "groups", "recordings", "times", "label_names", "kind", "rate_hz"}


def load_npz(path: str | Path) -> Dataset:
    """Arrays X (n, T, C) or (n, H, W[, C]), y (ints or strings); optional groups,
    recordings, times, label_names, kind ("timeseries" or "image"), rate_hz.

    Rows are already windows; rows sharing a `recordings` value were cut from one recording.
    A 3-D X is a time series unless `kind` says "image".
    """
    path = Path(path)
    src = str(path)
    arrays = load_npz_arrays(path, KNOWN)
    for required in ("X", "y"):
        if required not in arrays:
            raise PipelineError(f"{src}: missing array {required!r}", hint="an NPZ dataset needs arrays X and y")
    X = arrays.pop("X")
    y = arrays.pop("y")
    opt = arrays
    X, kind = _inputs(X, opt, src)
    n = X.shape[0]
    if y.ndim != 1 or y.shape[0] != n:
        raise PipelineError(f"{src}: y: expected shape ({n},) to match X, got {y.shape}")
    labels, label_names = _labels(y, opt, src)

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
    finite_array(times.astype(np.float64), src, "times")
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
        rate_hz=_rate(opt, src),
        channel_names=tuple(f"ch{c}" for c in range(X.shape[-1])),
        windowed=True,
        has_groups=has_groups,
        has_recordings=has_rec,
    )


def _inputs(X: np.ndarray, opt: dict, src: str) -> tuple[np.ndarray, str]:
    """X as float32 windows with a channel axis, and its kind ("timeseries" or "image")."""
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
    if X.shape[0] == 0:
        raise PipelineError(f"{src}: X has no rows")
    return finite_array(X.astype(np.float32), src, "X"), kind


def _labels(y: np.ndarray, opt: dict, src: str) -> tuple[np.ndarray, tuple[str, ...]]:
    """y as 0..K-1 with the class names (``label_names`` when given, else the sorted values)."""
    names = None
    if "label_names" in opt:
        names = [str(v) for v in opt["label_names"].tolist()]
    if y.dtype.kind in "iu":
        if names is not None:
            if y.min() < 0 or y.max() >= len(names):
                raise PipelineError(f"{src}: y: values {y.min()}..{y.max()} do not index label_names ({len(names)} names)")
            return y.astype(np.int64), tuple(names)
        return labels_to_ints(y.tolist(), src, [str(v) for v in sorted(set(y.tolist()))])
    if y.dtype.kind in "US":
        return labels_to_ints(y.astype(str).tolist(), src, names)
    raise PipelineError(f"{src}: y: expected integers or strings, got dtype {y.dtype}")


def _rate(opt: dict, src: str) -> float | None:
    """The optional ``rate_hz``: one positive number."""
    if "rate_hz" not in opt:
        return None
    r = opt["rate_hz"]
    if r.size != 1 or r.dtype.kind not in "fiu":
        got = f"text {str(r.item())[:40]!r}" if r.size == 1 and r.dtype.kind in "US" else f"{r.dtype} of shape {r.shape}"
        raise PipelineError(f"{src}: rate_hz: expected one number, got {got}")
    return finite_number(r.item(), f"{src}: rate_hz", positive=True)
