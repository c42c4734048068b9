"""The quantize stage on the default dataset: conversion time, int8 accuracy delta, model
bytes and arena bytes.

Runs `tinyml train` (default config) into a fresh run directory, or reuses one given with
--run, then times `tinyml quantize` on it. The figures come from quantize_report.json,
which is written whether or not the gates pass (the JSON says which).

    python bench/bench_quantize.py [--run models] [--fast] [--out bench/results/quantize.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import tinyml_cli  # noqa: E402
from pipeline.core.artifacts import write_json  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", help="a run directory `tinyml train` already filled (default: train a new one)")
    parser.add_argument("--fast", action="store_true", help="the fast config instead of the default one")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "quantize.json"))
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    common = ["--fast"] if args.fast else []

    with tempfile.TemporaryDirectory(prefix="bench-quantize-") as tmp:
        run = Path(args.run) if args.run else Path(tmp) / "run"
        train_s = None
        if not args.run:
            start = time.perf_counter()
            rc = tinyml_cli.main(["train", *common, "--run", str(run)])
            train_s = time.perf_counter() - start
            if rc != 0:
                print(f"bench: tinyml train exited {rc}", file=sys.stderr)
                return rc
        load_before = os.getloadavg()[0]
        start = time.perf_counter()
        rc = tinyml_cli.main(["quantize", *common, "--run", str(run)])
        quantize_s = time.perf_counter() - start
        load_after = os.getloadavg()[0]
        report_path = run / "quantize_report.json"
        if not report_path.is_file():
            print(f"bench: tinyml quantize exited {rc} without a report", file=sys.stderr)
            return rc or 2
        report = json.loads(report_path.read_text(encoding="utf-8"))
    if "validation" not in report:  # conversion or the op check failed: nothing to measure
        print(f"bench: quantize failed before validation: {report.get('failures')}", file=sys.stderr)
        return rc or 1

    val = report["validation"]
    delta = val["delta_int8_minus_float"]["balanced_accuracy"]
    mem = report["memory"]
    result = {
        "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "host": {"machine": platform.machine(), "python": platform.python_version(), "cpus": os.cpu_count()},
        "config": "fast" if args.fast else "default",
        "run": args.run or "(fresh, trained by this benchmark)",
        "quantize_exit_code": rc,
        "gates_passed": report["gates_passed"],
        "train_seconds": round(train_s, 1) if train_s is not None else None,
        "quantize_seconds": round(quantize_s, 2),
        "load_average_1min_before": round(load_before, 2),
        "load_average_1min_after": round(load_after, 2),
        "conversion_seconds": report["conversion"]["seconds"],
        "calibration_windows": report["calibration"]["windows"],
        "val_windows": val["windows"],
        "float_balanced_accuracy": val["float"]["balanced_accuracy"],
        "int8_balanced_accuracy": val["int8"]["balanced_accuracy"],
        "int8_balanced_accuracy_delta": delta["delta"],
        "int8_balanced_accuracy_delta_ci95": delta["ci95"],
        "float_int8_agreement": val["agreement"]["float_int8"],
        "input_handling_kept": report["conversion"].get("remedy"),
        "remedies_tried": [{k: r.get(k) for k in ("remedy", "float_int8_agreement", "balanced_accuracy_delta",
                                                  "gates_passed", "skipped")}
                           for r in report.get("remedies", {}).get("tried", [])],
        "per_layer_jump": (report.get("per_layer") or {}).get("jump"),
        "override": report.get("override"),
        "model_bytes": mem["model_bytes"],
        "arena_recorded_bytes": mem["arena_recorded_bytes"],
        "arena_min_bytes": mem["arena_min_bytes"],
        "arena_bytes_exported": mem["arena_bytes_exported"],
        "arena_note": mem["note"],
        "macs": report["macs"]["total"],
    }
    write_json(args.out, result)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
