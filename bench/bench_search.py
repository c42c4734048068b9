"""Search throughput on this machine: trials per minute, sequential (one process) vs an
embedded local Ray (one trial per core), on the same candidates.

The data is the fast config's motion split; each trial is what `tinyml train` runs: int8
conversion and TFLM arena before training (the budget check), training for the fast
config's search epochs, scoring, and the trained model's conversion. The Ray figure
includes starting Ray and its workers (each imports TensorFlow once), as a run pays it.

It also measures the two figures ``pipeline.train.engine.choose_engine`` decides by:
Ray's start-up (``ray_startup``: ray.init without the dashboard, then one task on each core
that imports TensorFlow, as the first trials pay it) and a task's cost on the default
config (``task_cost``: one trial trained for 2 and for 6 epochs, early stopping off; the
difference gives the seconds per epoch, the rest is the fixed part: model build, int8
conversions, TFLM arena).

    python bench/bench_search.py [--trials 6] [--only-choice] [--out bench/results/search.json]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from pipeline.core.artifacts import write_json  # noqa: E402

FAST = ROOT / "pipeline" / "core" / "configs" / "fast.toml"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=6)
    parser.add_argument("--only-choice", action="store_true", help="only Ray's start-up and a task's cost")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "search.json"))
    args = parser.parse_args(argv)
    if args.only_choice:
        results = {"ray_startup": ray_startup(), "task_cost": task_cost()}
        write_json(args.out, results)
        print(results)
        return 0

    from pipeline.core.config import load_config
    from pipeline.core.progress import import_tensorflow
    from pipeline.data.splits import prepare
    from pipeline.ml.model import ModelParams, class_priors
    from pipeline.train.search import Engine, device_budget, random_search

    import_tensorflow().get_logger().setLevel("ERROR")  # retracing notices, as `tinyml train` does
    cfg = load_config(FAST, {"train.trials": args.trials})
    with tempfile.TemporaryDirectory(prefix="bench-search-") as tmp:
        w = prepare(cfg, tmp).windows
    k = int(w["train"].y.max()) + 1
    tc = cfg.train
    results = {
        "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "host": {"machine": platform.machine(), "python": platform.python_version(), "cpus": os.cpu_count()},
        "data": "motion, fast config split", "trials": args.trials, "search_epochs": tc.search_epochs,
        "train_windows": len(w["train"]),
    }
    for name in ("sequential", "ray"):
        print(f"bench: search, {args.trials} trials, {name} ...", flush=True)
        load = os.getloadavg()[0]
        start = time.perf_counter()
        search = random_search(w["train"], w["val"], k, class_priors(w["train"].y, k), tc,
                               ModelParams.from_config(tc), cfg.seed, device_budget(cfg.quantize), Engine(name))
        seconds = time.perf_counter() - start
        results[name] = {
            "seconds": round(seconds, 1), "trials_per_min": round(60 * args.trials / seconds, 2),
            "cpus": search["cpus"], "counts": search["counts"], "best_trial": search["best"]["trial"],
            "val_scores": [t["val_score"] for t in search["trials"]],
            "trial_seconds": [t.get("seconds") for t in search["trials"]],
            "load_average_1min_before": round(load, 2), "load_average_1min_after": round(os.getloadavg()[0], 2),
        }
    results["speedup"] = round(results["sequential"]["seconds"] / results["ray"]["seconds"], 2)
    results["same_winner"] = results["sequential"]["best_trial"] == results["ray"]["best_trial"]
    write_json(args.out, results)
    for name in ("sequential", "ray"):
        r = results[name]
        print(f"{name}: {r['trials_per_min']} trials/min ({r['seconds']} s for {args.trials}; "
              f"load {r['load_average_1min_before']} -> {r['load_average_1min_after']})")
    print(f"speed-up {results['speedup']}x; same winner: {results['same_winner']}; figures in {args.out}")
    return 0


def tree_cpu_seconds(root: int) -> float:
    """CPU seconds (user + system) of ``root`` and every process under it, from /proc: on a
    busy shared machine, what the work costs rather than how long it waited for a core."""
    parents, cpu = {}, {}
    tick = os.sysconf("SC_CLK_TCK")
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(entry)] = int(fields[1])
        cpu[int(entry)] = (int(fields[11]) + int(fields[12])) / tick  # utime, stime
    def under(pid):
        while pid in parents and pid != root:
            pid = parents[pid]
        return pid == root
    return sum(c for pid, c in cpu.items() if under(pid))


def ray_startup() -> dict:
    """Seconds from nothing to a Ray whose every core has run a task importing TensorFlow:
    wall time, and the CPU seconds of this process and of every Ray process it started."""
    import ray

    from pipeline.train.engine import Engine

    load = os.getloadavg()[0]
    cpu0 = tree_cpu_seconds(os.getpid())
    start = time.perf_counter()
    with Engine("ray") as engine:
        init = time.perf_counter() - start
        init_cpu = tree_cpu_seconds(os.getpid()) - cpu0

        @ray.remote(num_cpus=1)
        def first_task():
            from pipeline.core.progress import import_tensorflow

            import_tensorflow()
            return os.getpid()

        ray.get([first_task.remote() for _ in range(engine.cpus)])
        ready = time.perf_counter() - start
        ready_cpu = tree_cpu_seconds(os.getpid()) - cpu0
    return {"init_seconds": round(init, 2), "ready_seconds": round(ready, 2), "init_cpu_seconds": round(init_cpu, 2),
            "ready_cpu_seconds": round(ready_cpu, 2), "cpus": engine.cpus,
            "load_average_1min_before": round(load, 2), "load_average_1min_after": round(os.getloadavg()[0], 2)}


def task_cost() -> dict:
    """One trial of the default config, trained 2 and 6 epochs (no early stopping)."""
    from dataclasses import replace

    import numpy as np

    from pipeline.core.config import load_config
    from pipeline.data.splits import prepare
    from pipeline.ml.model import ModelParams, class_priors
    from pipeline.train.engine import TrialTask
    from pipeline.train.search import device_budget, evaluate_trial, trial_data

    cfg = load_config(None)
    with tempfile.TemporaryDirectory(prefix="bench-task-") as tmp:
        w = prepare(cfg, tmp).windows
    k = int(w["train"].y.max()) + 1
    tc = replace(cfg.train, patience=100)
    data = trial_data(w["train"], w["val"], k, class_priors(w["train"].y, k), tc, device_budget(cfg.quantize), 0)
    load = os.getloadavg()[0]
    result = {"windows": len(w["train"]), "input_values": int(np.prod(w["train"].X.shape[1:]))}
    for clock_name, clock in (("wall", time.perf_counter), ("cpu", time.process_time)):
        seconds = {}
        for epochs in (2, 2, 6):  # the first run pays the imports and tracing once
            task = TrialTask(0, ModelParams.from_config(tc), "config", epochs, cfg.seed)
            start = clock()
            record = evaluate_trial(task, data)
            seconds[epochs] = clock() - start
            assert record["status"] == "ok", record
        per_epoch = (seconds[6] - seconds[2]) / 4
        result[clock_name] = {
            "seconds_2_epochs": round(seconds[2], 2), "seconds_6_epochs": round(seconds[6], 2),
            "seconds_per_epoch": round(per_epoch, 3), "fixed_seconds": round(seconds[2] - 2 * per_epoch, 2),
            "seconds_per_epoch_window_value": float(f"{per_epoch / (result['windows'] * result['input_values']):.3g}")}
    return {**result,
            "load_average_1min_before": round(load, 2), "load_average_1min_after": round(os.getloadavg()[0], 2)}


if __name__ == "__main__":
    sys.exit(main())
