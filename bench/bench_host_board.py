"""The host board timed on a run: its g++ build (cold and cached) and `tinyml eval --device emu`.

Copies the run (the original keeps its results), removes the host board's build and the
device results from the copy, builds the board twice (the second finds its content hash and
builds nothing), then times the evaluation of every test window over the pty and reads back
what device_report.json says: windows per second, the share of a 115200-baud line that
traffic would take, the int8 outputs byte-identical to TFLM and LiteRT, and the board-time
inference figure. Writes bench/results/host_board.json.

    python bench/bench_host_board.py [--run bench/results/run] [--out bench/results/host_board.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from firmware_bridge.targets import host_board  # noqa: E402

BUILD_TARGET_S = 20.0  # the target for a build
LINE_BYTES_PER_S = 115200 / 10  # 8N1: ten bits a byte


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def _line_bytes_per_window(run: Path, n_values: int) -> int:
    """Bytes both ways for one AT+RUNIMPULSESTATIC window, measured on the board: the command
    and the base64 of the values sent, and the transcript it printed (echo, OK lines,
    TRANSFER COMPLETED, Timing, predictions, END OUTPUT)."""
    import base64

    import numpy as np

    from firmware_bridge.host.client import Device

    _, board = host_board.boot(run)
    with board:
        client = Device(board.port, timeout=5.0)
        try:
            result = client.classify(np.zeros(n_values, np.float32))
        finally:
            client.close()
    sent = len(f"AT+RUNIMPULSESTATIC=n,{n_values}\r") + len(base64.b64encode(bytes(4 * n_values)))
    return sent + len(result.raw.encode())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", default=str(ROOT / "bench" / "results" / "run"), help="a quantized, flashed run directory")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "host_board.json"))
    args = ap.parse_args()
    source = Path(args.run)
    if not (source / "device" / "flash" / "model.tflite").is_file():
        print(f"bench_host_board: {source} has no flash image: run `tinyml flash --run {source}` first", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="bench-host-") as tmp:
        run = Path(tmp) / "run"
        shutil.copytree(source, run)
        for stale in (run / "device" / "host", run / "device_eval.jsonl", run / "device_report.json"):
            if stale.is_dir():
                shutil.rmtree(stale)
            elif stale.exists():
                stale.unlink()
        cpu0, t0 = _cpu(), time.perf_counter()
        cold = host_board.build_host_board(run)
        cold_s, cold_cpu = time.perf_counter() - t0, _cpu() - cpu0
        t0 = time.perf_counter()
        cached = host_board.build_host_board(run)
        cached_s = time.perf_counter() - t0
        assert cold.rebuilt and not cached.rebuilt
        env = dict(os.environ, PYTHONPATH=str(ROOT), CI="true")
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "tinyml_cli", "eval", "--device", "emu", "--run", str(run)],
                              cwd=ROOT, env=env, capture_output=True, text=True)
        eval_s = time.perf_counter() - t0
        if proc.returncode != 0:
            print(proc.stdout[-2000:], proc.stderr[-2000:], file=sys.stderr)
            return proc.returncode
        report = json.loads((run / "device_report.json").read_text())
        n_values = 1
        for d in report["device"]["input_shape"]:
            n_values *= int(d)
        per_window = _line_bytes_per_window(run, n_values)
    throughput, int8 = report["throughput"], report["int8_agreement"]
    result = {
        "when": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "host": {"machine": platform.machine(), "cpus": os.cpu_count(), "python": platform.python_version(),
                 "load_average_1min": round(os.getloadavg()[0], 2)},
        "build_cold_seconds": round(cold_s, 2),
        "build_cold_compiler_cpu_seconds": round(cold_cpu, 2),
        "build_cached_seconds": round(cached_s, 3),
        "build_target_seconds": BUILD_TARGET_S,
        "eval_command_seconds": round(eval_s, 1),
        "windows": report["windows"],
        "windows_per_s": throughput["windows_per_s"],
        "line_bytes_per_window": per_window,
        "share_of_115200_baud_line": round(throughput["windows_per_s"] * per_window / LINE_BYTES_PER_S, 2),
        "int8_outputs_identical_tflm": [int8["tflm"]["outputs_identical"], int8["tflm"]["outputs"]],
        "int8_outputs_identical_litert_reference": [
            int8["litert_reference_kernels"].get("outputs_identical"), int8["litert_reference_kernels"].get("outputs")],
        "board_time_inference_ms": report["timing_reported_by_device"]["classification_ms"]["p50"],
        "timing_note": report["timing_note"],
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
