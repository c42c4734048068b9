"""Wall time of the whole main job on a fresh clone, install included (issue 22: at most 180 s
on 2 cores): `make setup`, then `make train`, `make quantize` and `make flash` (what `make
train quantize flash` runs, one target after the other), each timed with the load average
before and after.

The clone is of the committed HEAD of this checkout (uncommitted changes are not in it), in
a temporary folder removed afterwards (--keep keeps it). The installers' caches (uv's, pip's)
are whatever this machine holds: run it twice to measure with a warm cache.

    python bench/bench_job.py [--keep] [--out bench/results/job.json]
"""

from __future__ import annotations

import argparse
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
STEPS = ("setup", "train", "quantize", "flash")


def git(*args: str, cwd: Path = ROOT) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--keep", action="store_true", help="keep the clone (and its .venv)")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "job.json")
    args = ap.parse_args(argv)
    commit = git("rev-parse", "HEAD")
    common = Path(git("rev-parse", "--path-format=absolute", "--git-common-dir"))
    where = Path(tempfile.mkdtemp(prefix="tinyml-job-")) / "clone"
    git("clone", "--quiet", "--shared", "--no-checkout", str(common), str(where))
    git("checkout", "--quiet", commit, cwd=where)
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    steps, ok = [], True
    try:
        for step in STEPS:
            load = os.getloadavg()[0]
            start = time.perf_counter()
            proc = subprocess.run(["make", step], cwd=where, env=env, capture_output=True, text=True)
            seconds = time.perf_counter() - start
            steps.append({"step": f"make {step}", "exit_code": proc.returncode, "seconds": round(seconds, 1),
                          "load_average_1min": f"{load:.2f} -> {os.getloadavg()[0]:.2f}"})
            print(f"make {step}: {seconds:.1f} s (exit {proc.returncode}, load {steps[-1]['load_average_1min']})",
                  flush=True)
            if proc.returncode != 0:
                steps[-1]["stderr_tail"] = (proc.stderr or proc.stdout).strip().splitlines()[-8:]
                ok = False
                break
    finally:
        if not args.keep:
            shutil.rmtree(where.parent, ignore_errors=True)
    total = sum(s["seconds"] for s in steps)
    result = {
        "what": "fresh clone: make setup, then make train, quantize, flash (the default dataset and config)",
        "commit": commit, "measured_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "host": {"machine": platform.machine(), "cpus": os.cpu_count(),
                 "load_average_1min": f"{steps[0]['load_average_1min'].split(' -> ')[0]} -> "
                                      f"{steps[-1]['load_average_1min'].split(' -> ')[1]}"},
        "steps": steps,
        "total_seconds": round(total, 1) if ok else None, "target_seconds": TARGET_SECONDS,
        "within_target": ok and total <= TARGET_SECONDS,
    }
    write_json(args.out, result)
    print(f"whole job: {total:.1f} s (target {TARGET_SECONDS:.0f} s); {args.out}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
