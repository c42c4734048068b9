"""CSV datasets in long format: one row per time step of a recording (``--dataset data.csv``)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from pipeline.core.errors import PipelineError
from pipeline.core.safe_io import csv_rows, read_file_bytes
from pipeline.data.dataset import Dataset, labels_to_ints
from pipeline.data.rates import one_rate

CSV_REQUIRED = ("recording", "label", "t")
META_COLUMNS = {"recording", "label", "t", "group"}


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
    header, channels = _header(next(reader, None), src)
    col = {h: i for i, h in enumerate(header)}
    recs = _recordings(reader, header, col, channels, src)
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
        rate, samples, originals, resampled = one_rate(src, r3, samples, rate_hz)
        if resampled:
            notes["resampled"] = resampled
            notes["loader"].append(f"{resampled['samples_resampled']} of {len(samples)} recordings resampled to "
                                   f"{rate:g} Hz ({resampled['chosen']})")
    names = list(recs)
    labels, label_names = labels_to_ints([recs[r]["label"] for r in names], src)
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


def _header(header: list[str] | None, src: str) -> tuple[list[str], list[str]]:
    """The column names (stripped) and the channel columns among them."""
    if not header:
        raise PipelineError(f"{src}: empty file", hint="expected a header: recording,label,t,<channels>")
    header = [h.strip() for h in header]
    missing = [c for c in CSV_REQUIRED if c not in header]
    if missing:
        raise PipelineError(f"{src}: missing column(s) {missing}", hint=f"header is {header}")
    if len(set(header)) != len(header):
        raise PipelineError(f"{src}: duplicate column names in header {header}")
    channels = [h for h in header if h not in META_COLUMNS]
    if not channels:
        raise PipelineError(f"{src}: no channel columns", hint="add one column per sensor channel after recording,label,t")
    return header, channels


def _recordings(reader, header: list[str], col: dict[str, int], channels: list[str], src: str) -> dict[str, dict]:
    """The data rows gathered per recording: its label, group, time stamps and values, in file order."""
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
        t, vals = _numbers(row, col, channels, f"{src}: line {lineno}")
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
    return recs


def _numbers(row: list[str], col: dict[str, int], channels: list[str], where: str) -> tuple[float, list[float]]:
    """The row's time stamp and channel values, finite numbers, or an error naming the column."""
    try:
        t = float(row[col["t"]])
        vals = [float(row[col[c]]) for c in channels]
    except ValueError:
        bad = next(c for c in ["t", *channels] if not _is_float(row[col[c]]))
        raise PipelineError(f"{where}: column {bad!r}: expected a number, got {row[col[bad]]!r}") from None
    if not math.isfinite(t) or not all(math.isfinite(v) for v in vals):
        bad = next(c for c in ["t", *channels] if not math.isfinite(float(row[col[c]])))
        raise PipelineError(f"{where}: column {bad!r}: NaN or infinite value")
    return t, vals


def _is_float(s: str) -> bool:
    try:
        float(s)
        return True
    except ValueError:
        return False
