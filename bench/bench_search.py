"""Search throughput on this machine: trials per minute, sequential (one process) vs an
embedded local Ray (one trial per core), on the same candidates.

The data is the fast config's motion split; each trial is what `tinyml train` runs: int8
conversion and TFLM arena before training (the budget check), training for the fast
config's search epochs, scoring, and the trained model's conversion. The Ray figure
includes starting Ray and its workers (each imports TensorFlow once), as a run pays it.

    python bench/bench_search.py [--trials 6] [--out bench/results/search.json]
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
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "search.json"))
    args = parser.parse_args(argv)

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


if __name__ == "__main__":
    sys.exit(main())
