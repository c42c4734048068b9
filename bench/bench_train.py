"""Wall time of `tinyml train` on the default dataset (target: under 3 minutes on 2 cores),
and of the fast config used by the tests.

Each run is a fresh `tinyml train` in its own process (imports, audit and all), as a person
or `make train` would start it. The default run goes to bench/results/run, where
bench_quantize.py picks it up (see `make bench`); the fast run to a temporary directory.

    python bench/bench_train.py [--run DIR] [--no-fast] [--out bench/results/train.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pipeline.core.artifacts import write_json  # noqa: E402

TARGET_SECONDS = 180.0
DEFAULT_RUN = ROOT / "bench" / "results" / "run"


def time_train(run: Path, extra: list[str]) -> dict:
    """One `tinyml train` in a child process: seconds, exit code, and the report's figures."""
    cmd = [sys.executable, str(ROOT / "tinyml_cli.py"), "train", *extra, "--run", str(run)]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    load_before = os.getloadavg()[0]
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    result = {
        "command": "tinyml " + " ".join(cmd[2:]),
        "exit_code": proc.returncode,
        "seconds": round(seconds, 1),
        "load_average_1min_before": round(load_before, 2),
        "load_average_1min_after": round(os.getloadavg()[0], 2),
    }
    report_path = run / "train_report.json"
    if proc.returncode != 0 or not report_path.is_file():
        result["stderr_tail"] = proc.stderr.strip().splitlines()[-5:]
        return result
    report = json.loads(report_path.read_text(encoding="utf-8"))
    metrics = report["metrics"]
    result.update({
        "windows": report["split"]["windows"],
        "phases_seconds": report["timing"],
        "trials": len(report["search"]["trials"]),
        "model_params": report["model"]["params"],
        "best_hyperparameters": report["model"]["hyperparameters"],
        "train_balanced_accuracy": metrics["train"]["balanced_accuracy"],
        "val_balanced_accuracy": metrics["val"]["balanced_accuracy"],
        "val_balanced_accuracy_ci95": metrics["val"]["ci95"]["balanced_accuracy"],
        "test_balanced_accuracy": metrics["test"]["balanced_accuracy"],
        "test_balanced_accuracy_ci95": metrics["test"]["ci95"]["balanced_accuracy"],
        "best_baseline_val_balanced_accuracy": max(
            b["val"]["balanced_accuracy"] for b in report["baselines"].values()),
        "beats_every_baseline": report["sanity"]["beats_every_baseline"],
    })
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", default=str(DEFAULT_RUN),
                        help=f"run directory for the default-config run (default: {DEFAULT_RUN.relative_to(ROOT)}, emptied first)")
    parser.add_argument("--no-fast", action="store_true", help="skip the fast-config run")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "train.json"))
    args = parser.parse_args(argv)

    run = Path(args.run).resolve()
    if run == DEFAULT_RUN:
        shutil.rmtree(run, ignore_errors=True)  # the benchmark's own output: always fresh
    elif run.exists() and any(run.iterdir()):
        print(f"bench: {run} is not empty; give a new or empty run directory", file=sys.stderr)
        return 2
    run.mkdir(parents=True, exist_ok=True)

    results = {
        "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "host": {"machine": platform.machine(), "python": platform.python_version(),
                 "cpus": os.cpu_count()},
        "target_seconds": TARGET_SECONDS,
    }
    print("bench: tinyml train (default config) ...", flush=True)
    results["default"] = time_train(run, [])
    results["within_target"] = (results["default"]["exit_code"] == 0
                                and results["default"]["seconds"] < TARGET_SECONDS)
    if not args.no_fast:
        print("bench: tinyml train --fast ...", flush=True)
        with tempfile.TemporaryDirectory(prefix="bench-train-") as tmp:
            results["fast"] = time_train(Path(tmp) / "run", ["--fast"])
    write_json(args.out, results)

    for name in ("default", "fast"):
        r = results.get(name)
        if not r:
            continue
        if r["exit_code"] != 0:
            print(f"{name}: exit {r['exit_code']} after {r['seconds']} s: {r.get('stderr_tail')}")
            continue
        print(f"{name}: {r['seconds']} s; val balanced accuracy {r['val_balanced_accuracy']:.3f}, "
              f"test {r['test_balanced_accuracy']:.3f}; {r['model_params']} parameters "
              f"(load {r['load_average_1min_before']} -> {r['load_average_1min_after']})")
    verdict = "within" if results["within_target"] else "OVER"
    print(f"default config: {verdict} the {TARGET_SECONDS:.0f} s target; figures in {args.out}")
    return 0 if results["default"]["exit_code"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
