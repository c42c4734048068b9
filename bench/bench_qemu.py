"""`tinyml flash --device qemu` timed on a run, from a clean build to the device report.

Copies the run (so the original keeps its own results), removes the firmware image and the
device results from the copy, then times the whole command: the arm-none-eabi build, QEMU's
boot, the evaluation of every test window over the pty, and the report. Writes the time and
the figures the firmware measured (flash, static RAM, stack high-water mark, instructions
per inference beside the MAC-based estimate) to bench/results/qemu.json.

    python bench/bench_qemu.py [--run bench/results/run] [--out bench/results/qemu.json]
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

from firmware_bridge.targets import qemu  # noqa: E402
from pipeline.core.boards import CYCLES_PER_MAC_REFERENCE  # noqa: E402

TARGET_S = 60.0  # the target, build included


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", default=str(ROOT / "bench" / "results" / "run"), help="a quantized run directory")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "qemu.json"))
    args = ap.parse_args()
    missing = qemu.missing_packages()
    if missing:
        print(f"bench_qemu: skipped, needs {', '.join(missing)} ({qemu.INSTALL_LINE})", file=sys.stderr)
        return 0
    source = Path(args.run)
    if not (source / "int8.tflite").is_file():
        print(f"bench_qemu: {source}/int8.tflite not found: run bench_quantize.py (make bench) first", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="bench-qemu-") as tmp:
        run = Path(tmp) / "run"
        shutil.copytree(source, run)
        for stale in (run / "device" / "qemu", run / "device_eval.jsonl", run / "device_report.json"):
            if stale.is_dir():
                shutil.rmtree(stale)
            elif stale.exists():
                stale.unlink()
        cmd = [sys.executable, "-m", "tinyml_cli", "flash", "--device", "qemu", "--run", str(run)]
        env = dict(os.environ, PYTHONPATH=str(ROOT), CI="true")  # CI: no progress bars
        cpu_before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
        seconds = time.perf_counter() - start
        cpu_after = resource.getrusage(resource.RUSAGE_CHILDREN)
        # CPU time of the command and its children (QEMU, the compilers): what the wall time
        # would be on idle cores if nothing ran in parallel, so loaded runs can be compared.
        cpu_seconds = (cpu_after.ru_utime - cpu_before.ru_utime) + (cpu_after.ru_stime - cpu_before.ru_stime)
        if proc.returncode != 0:
            print(proc.stdout[-2000:], proc.stderr[-2000:], file=sys.stderr)
            return proc.returncode
        report = json.loads((run / "device_report.json").read_text())
    m = report["measured_on_emulated_cortex_m4"]
    result = {
        "when": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "host": {"machine": platform.machine(), "cpus": os.cpu_count(), "python": platform.python_version(),
                 "load_average_1min": round(os.getloadavg()[0], 2)},
        "command": "tinyml flash --device qemu (clean build included)",
        "seconds": round(seconds, 1),
        "cpu_seconds": round(cpu_seconds, 1),
        "target_seconds": TARGET_S,
        "windows": report["windows"],
        "windows_per_s_streaming": report["throughput"]["windows_per_s"],
        "agreement_top1": report["agreement_with_host_int8"]["top1"],
        "int8_outputs_identical": report["agreement_with_host_int8"].get("int8_outputs_identical"),
        "measured_on_emulated_cortex_m4": m,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    est = m.get("mac_estimate", {})
    print(f"tinyml flash --device qemu: {seconds:.1f} s for {report['windows']} windows, build included "
          f"(target {TARGET_S:g} s; {cpu_seconds:.1f} s of CPU; load average {result['host']['load_average_1min']} "
          f"on {os.cpu_count()} cores)")
    print(f"  flash {m['flash_bytes_text_plus_data']:,} B (text + data), static RAM {m['static_ram_bytes_data_plus_bss']:,} B "
          f"(data + bss), stack high-water {m['stack_high_water_bytes']:,} B of {m['stack_size_bytes']:,}")
    print(f"  {m['instructions_per_inference']:,} instructions per inference (measured, -icount); "
          f"estimated {est.get('estimated_cycles_reference_kernels', 0):,} cycles from {est.get('macs', 0):,} MACs "
          f"x {CYCLES_PER_MAC_REFERENCE:g} cycles/MAC")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
