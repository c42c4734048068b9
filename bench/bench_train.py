"""Wall time of `tinyml train` on the default dataset (target: under 3 minutes on 2 cores),
and of the fast config used by the tests.

Each run is a fresh `tinyml train` in its own process (imports, audit and all), as a person
or `make train` would start it. The default run goes to bench/results/run, where
bench_quantize.py picks it up (see `make bench`); the fast run to a temporary directory.

It also measures what reproducible training costs (``determinism``): the default config's
model trained for a fixed number of epochs on its split, in a fresh process each, with
TensorFlow as it comes (a thread per core, no op determinism) and as the pipeline runs it
(one thread, op determinism), and one thread per core with op determinism.

    python bench/bench_train.py [--run DIR] [--no-fast] [--only-determinism] [--out bench/results/train.json]
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


# One fit of the default config's model, in a child process: wall and CPU seconds.
FIT = """
import json, os, sys, tempfile, time
from pipeline.core.config import load_config
from pipeline.data.splits import prepare
from pipeline.ml import model as M
cfg = load_config(None)
with tempfile.TemporaryDirectory() as tmp:
    w = prepare(cfg, tmp).windows
tr, va = w["train"], w["val"]
k = int(tr.y.max()) + 1
M.seed_everything(cfg.seed)
if sys.argv[2] == "off":
    from tensorflow.python.framework import config as tf_config
    tf_config.disable_op_determinism()
p = M.ModelParams.from_config(cfg.train)
net = M.build_model(tr.X.shape[1:], k, p, tr.X, M.class_priors(tr.y, k))
M.fit(net, (tr.X, tr.y), (va.X, va.y), p, 1, cfg.train.batch_size, 100)  # tracing, not timed
wall, cpu = time.perf_counter(), time.process_time()
M.fit(net, (tr.X, tr.y), (va.X, va.y), p, int(sys.argv[1]), cfg.train.batch_size, 100)
print(json.dumps({"seconds": round(time.perf_counter() - wall, 2), "cpu_seconds": round(time.process_time() - cpu, 2)}))
"""
DETERMINISM_EPOCHS = 10


def time_determinism() -> dict:
    """Seconds for ``DETERMINISM_EPOCHS`` epochs of the default model, three ways."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(ROOT)}
    out = {"epochs": DETERMINISM_EPOCHS, "note": "wall and CPU seconds of the epochs after the first (tracing)"}
    for name, threads, determinism in (("as_tensorflow_comes", "0", "off"), ("pipeline", "1", "on"),
                                       ("thread_per_core_deterministic", "0", "on")):
        load = os.getloadavg()[0]
        proc = subprocess.run([sys.executable, "-c", FIT, str(DETERMINISM_EPOCHS), determinism],
                              env={**env, "TINYML_TF_THREADS": threads}, capture_output=True, text=True)
        if proc.returncode != 0:
            out[name] = {"exit_code": proc.returncode, "stderr_tail": proc.stderr.strip().splitlines()[-3:]}
            continue
        out[name] = {**json.loads(proc.stdout.strip().splitlines()[-1]), "tf_threads": int(threads) or os.cpu_count(),
                     "op_determinism": determinism == "on", "load_average_1min_before": round(load, 2),
                     "load_average_1min_after": round(os.getloadavg()[0], 2)}
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", default=str(DEFAULT_RUN),
                        help=f"run directory for the default-config run (default: {DEFAULT_RUN.relative_to(ROOT)}, emptied first)")
    parser.add_argument("--no-fast", action="store_true", help="skip the fast-config run")
    parser.add_argument("--only-determinism", action="store_true", help="only what reproducible training costs")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "train.json"))
    args = parser.parse_args(argv)
    if args.only_determinism:
        results = {"time": datetime.now(timezone.utc).isoformat(timespec="seconds"), "determinism": time_determinism()}
        write_json(args.out, results)
        print(json.dumps(results["determinism"], indent=1))
        return 0

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
    print("bench: what reproducible training costs ...", flush=True)
    results["determinism"] = time_determinism()
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
