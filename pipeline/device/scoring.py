"""On-device evaluation, the host side: score what came back from the device.

The device side (``firmware_bridge``) streams the test windows and appends one JSON line per
window to ``device_eval.jsonl`` as it arrives. This module reads those lines (nothing else
from the device), compares them with the host int8 model on the same windows, and writes
``device_report.json``. It never imports ``firmware_bridge``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.core.artifacts import read_json, read_json_lines, write_json
from pipeline.core.errors import GateFailed, PipelineError
from pipeline.core.safe_io import NUMBER, check_structure
from pipeline.ml.metrics import METRICS, metric_text, score_with_intervals

RESULTS = "device_eval.jsonl"
REPORT = "device_report.json"


def read_results(path: str | Path, warn=None) -> tuple[list[dict], int]:
    """The whole lines of ``device_eval.jsonl`` and how many torn lines were dropped.

    A line cut by a crash or an unplugged device is the only thing that can be torn, and
    only the last line (lines are appended whole, one ``write`` each: pipeline.core.artifacts);
    it is dropped with a warning (to ``warn``, else stderr) so its window runs again.
    A whole line that says something else (not JSON, a null or NaN probability, a window id
    that is not text: an edited file) is a PipelineError naming the line, never scored.
    """
    path = Path(path)
    found = read_json_lines(path, max_depth=RESULT_DEPTH, hint=EDITED_HINT,
                            **({"warn": warn} if warn is not None else {}))
    for lineno, rec in found.records:
        where = f"{path}: line {lineno}"
        if not isinstance(rec, dict):
            raise PipelineError(f"{where}: expected an object with 'window_id' and 'probabilities', "
                                f"got {type(rec).__name__}", hint=EDITED_HINT)
        check_result(rec, where)
    return [rec for _, rec in found.records], found.torn


EDITED_HINT = "the file was edited or damaged: delete that line (its window runs again) or run `tinyml eval --restart`"


RESULT_SCHEMA = {"window_id": str, "probabilities": [NUMBER], "device_labels?": [str],
                 "model_sha256?": (str, type(None)), "device?": (dict, type(None))}
"""What scoring relies on in a device_eval.jsonl line (firmware_bridge.host.streaming writes it)."""
RESULT_DEPTH = 4


def check_result(rec: dict, where: str) -> dict:
    """One device_eval.jsonl record with the structure scoring needs, probabilities in [0, 1]."""
    try:
        check_structure(rec, RESULT_SCHEMA, where)
        bad = [p for p in rec["probabilities"] if not 0.0 <= p <= 1.0]
        if bad:
            raise PipelineError(f"{where}: field 'probabilities': expected numbers in [0, 1], got {bad[0]}")
        if "device_labels" in rec and len(rec["device_labels"]) != len(rec["probabilities"]):
            raise PipelineError(f"{where}: {len(rec['device_labels'])} device_labels for {len(rec['probabilities'])} probabilities")
    except PipelineError as exc:
        raise PipelineError(f"{exc.message} (window {str(rec.get('window_id'))[:60]!r})",
                            hint=EDITED_HINT) from None
    return rec


def timing_stats(values: list[float]) -> dict | None:
    arr = np.asarray([v for v in values if v is not None], dtype=float)
    if arr.size == 0:
        return None
    return {
        "mean": float(arr.mean()), "p50": float(np.percentile(arr, 50)),
        "p95": float(np.percentile(arr, 95)), "max": float(arr.max()), "n": int(arr.size),
    }


def build_device_report(
    records: list[dict],
    window_ids: np.ndarray,
    y_true: np.ndarray,
    groups: np.ndarray,
    label_names: list[str],
    host_int8_probs: np.ndarray,
    *,
    device_info: dict,
    throughput: dict,
    min_agreement: float = 1.0,
    output_quantization: tuple[float, int] | None = None,
    group_word: str = "group",
) -> dict:
    """Metrics of the device's predictions, and their agreement with the host int8 model;
    ``groups``: each window's group id (intervals resample what the split kept whole), named
    ``group_word`` in the text ("subject", "recording").

    ``min_agreement`` (``[device] min_agreement``): the least top-1 agreement with the host
    int8 model that passes, and, where the device's int8 outputs can be read back (QEMU),
    the least share of windows whose int8 outputs are identical. This project's firmware
    runs the host's kernels byte for byte, so its default is 1.0: anything short of it means
    the serial path, the input quantization or the label mapping is broken.
    """
    by_id = {r["window_id"]: r for r in records}
    missing = [w for w in window_ids.tolist() if w not in by_id]
    if missing:
        raise PipelineError(
            f"{RESULTS}: {len(missing)} of {len(window_ids)} test windows have no device result (e.g. {missing[0]!r})",
            hint="run `tinyml eval` again: it resumes where it stopped",
        )
    dev_probs = _device_probabilities(by_id, window_ids, label_names)
    dev_pred = dev_probs.argmax(1)
    host_pred = np.asarray(host_int8_probs).argmax(1)
    agree = dev_pred == host_pred
    max_abs = float(np.max(np.abs(dev_probs - host_int8_probs))) if len(window_ids) else 0.0
    differ = [
        {"window_id": wid, "label": label_names[int(t)], "device": label_names[int(d)], "host_int8": label_names[int(h)],
         "device_score": round(float(dev_probs[i, d]), 6), "host_int8_score": round(float(host_int8_probs[i][h]), 6),
         "device_probabilities": dev_probs[i].round(6).tolist(), "host_probabilities": np.round(host_int8_probs[i], 6).tolist()}
        for i, (wid, t, d, h) in enumerate(zip(window_ids.tolist(), y_true, dev_pred, host_pred, strict=True)) if d != h
    ]
    top1 = float(agree.mean()) if len(agree) else 1.0
    # Byte-identical outputs: each printed probability back to the int8 it was dequantized
    # from ((q - zero point) x scale, printed with 6 decimals: exact for scales above 1e-6).
    identical = None
    if output_quantization is not None:
        scale, zero_point = output_quantization
        dev_q = np.rint(dev_probs / scale) + zero_point
        host_q = np.rint(np.asarray(host_int8_probs, dtype=np.float64) / scale) + zero_point
        identical = float(np.all(dev_q == host_q, axis=1).mean()) if len(window_ids) else 1.0
    timings = {key: timing_stats([by_id[w].get("timing", {}).get(key) for w in window_ids.tolist()])
               for key in ("dsp_ms", "classification_ms", "anomaly_ms")}
    report = {
        "device": device_info,
        "windows": int(len(window_ids)),
        "metrics": score_with_intervals(y_true, dev_pred, label_names, groups=groups, group_word=group_word),
        "agreement_with_host_int8": {
            "top1": top1,
            "passed": bool(top1 >= min_agreement and (identical is None or identical >= min_agreement)),
            "differing": len(differ),
            "max_abs_probability_difference": max_abs,
            **({"int8_outputs_identical": identical} if identical is not None else {}),
            "samples_that_differ": differ[:50],
            "required": float(min_agreement),
            "required_by": "[device] min_agreement",
        },
        "timing_reported_by_device": timings,
        "timing_note": device_info.get("timing_note", "as reported by the device"),
        "throughput": throughput,
    }
    return report


def _device_probabilities(by_id: dict[str, dict], window_ids: np.ndarray, label_names: list[str]) -> np.ndarray:
    """The device's probabilities per test window, in the model's label order."""
    k = len(label_names)
    dev_probs = np.zeros((len(window_ids), k))
    for i, wid in enumerate(window_ids.tolist()):
        probs = by_id[wid]["probabilities"]
        if len(probs) != k:
            raise PipelineError(f"{RESULTS}: window {wid!r} has {len(probs)} probabilities, the model has {k} classes")
        names = by_id[wid].get("device_labels")
        if names is not None:  # mapped by label name, whatever order the device printed them in
            if sorted(names) != sorted(label_names):
                raise PipelineError(f"{RESULTS}: window {wid!r} has probabilities of labels {names}, "
                                    f"the model's are {list(label_names)}",
                                    hint="run `tinyml eval --restart` against the device flashed with this model")
            by_name = dict(zip(names, probs, strict=True))
            probs = [by_name[n] for n in label_names]
        dev_probs[i] = probs
    return dev_probs


def check_agreement(report: dict, report_path: str | Path = REPORT, document: str | Path | None = None) -> None:
    """A device below ``[device] min_agreement`` is a failed evaluation (GateFailed, exit 1):
    the message names the first window that differs, the host's and the device's top class
    and scores, and where the report is (written before this check)."""
    agreement = report["agreement_with_host_int8"]
    if agreement["passed"]:
        return
    identical = agreement.get("int8_outputs_identical")
    required = agreement["required"]
    first = agreement["samples_that_differ"][:1]
    if first:
        w = first[0]
        where = (f"the first that differs is window {w['window_id']!r}: host int8 top class {w['host_int8']!r} "
                 f"({w['host_int8_score']:.4f}), device {w['device']!r} ({w['device_score']:.4f})")
    else:  # the same top class everywhere, different int8 outputs (QEMU's read-back)
        where = "every window has the host's top class, but not the host's int8 outputs"
    see = f"{report_path}" + (f" and {document}" if document else "")
    raise GateFailed(
        f"device agrees with the host int8 model on {agreement['top1']:.2%} of {report['windows']} test windows "
        f"({agreement['differing']} differ"
        + (f"; int8 outputs identical on {identical:.2%}" if identical is not None else "")
        + f"), below [device] min_agreement {required:.2%}; {where}; see {see}",
        hint="this project's firmware runs the host's kernels byte for byte: check the input quantization, the "
             "serial transfer and the labels the device prints; a third-party firmware with other kernels may need "
             "a lower [device] min_agreement",
    )


def feature_identity(records: list[dict], window_ids: np.ndarray, block: str) -> dict:
    """How many test windows' features the device computed byte for byte as the host library
    did (each result line's ``features``, firmware_bridge/host/streaming.py compare_features),
    and the first window and feature index that differ."""
    by_id = {r["window_id"]: r for r in records}
    identical, differing, first = 0, 0, None
    for wid in window_ids.tolist():
        f = by_id.get(wid, {}).get("features")
        if isinstance(f, dict) and f.get("identical") is True:
            identical += 1
            continue
        differing += 1
        if first is None:
            first = {"window_id": wid, **(f if isinstance(f, dict) else {"note": "no features recorded"})}
    return {"block": block, "windows": int(len(window_ids)), "identical": identical, "differing": differing,
            "values_per_window": next((r["features"]["values"] for r in records if isinstance(r.get("features"), dict)),
                                      None),
            "first_difference": first,
            "compared": "the host library's features (pipeline/dsp, ctypes) vs the device's, as float32 bits"}


def feature_identity_line(f: dict) -> str:
    return (f"eval: [dsp] {f['block']} features computed on the device: byte-identical to the host library's on "
            f"{f['identical']} of {f['windows']} test windows ({f['values_per_window']} values each)")


def check_features(f: dict | None, report_path: str | Path = REPORT) -> None:
    """Any window whose device features differ from the host library's is an error naming the
    first window and feature index (the report, written before, holds the counts)."""
    if not f or not f["differing"]:
        return
    d = f["first_difference"] or {}
    at = (f"feature {d['first_difference']} (device {d['device']!r}, host {d['host']!r})"
          if d.get("first_difference") is not None else d.get("note", "no features"))
    raise GateFailed(
        f"the device's [dsp] {f['block']} features differ from the host library's on {f['differing']} of "
        f"{f['windows']} test windows; the first is window {d.get('window_id')!r}, {at}; see {report_path}",
        hint="the firmware's tm_dsp.c must be built from the same source with -ffp-contract=off; "
             "flash this run's firmware again",
    )


def write_device_report(run_dir: str | Path, report: dict) -> Path:
    return write_json(Path(run_dir) / REPORT, report)


def comparison_table(run_dir: str | Path, device_report: dict) -> str:
    """Float, int8 on the host, int8 on the device: the same test windows, side by side."""
    run_dir = Path(run_dir)
    trained = read_json(run_dir / "train_report.json", "the train report")
    quantized = read_json(run_dir / "quantize_report.json", "the quantize report")
    columns = [
        ("float (host Keras)", trained.get("metrics", {}).get("test")),
        ("int8 (host LiteRT ref)", quantized.get("test")),
        ("int8 (device)", device_report["metrics"]),
    ]
    rows = METRICS
    width = 26
    out = ["test split".ljust(20) + "".join(name.ljust(width) for name, _ in columns)]
    for m in rows:
        cells = []
        for _, metrics in columns:
            if not metrics or m not in metrics:
                cells.append("n/a".ljust(width))
            else:
                cell = metric_text(metrics, m)  # interval, or group count, or exact bound
                cells.append(cell.ljust(max(width, len(cell) + 2)))
        out.append(m.ljust(20) + "".join(cells))
    a = device_report["agreement_with_host_int8"]
    out.append(f"device vs host int8 top-1 agreement: {a['top1']:.2%} ({a['differing']} differ of {device_report['windows']})")
    return "\n".join(out)
