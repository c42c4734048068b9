"""The compiled model against TFLM: RAM, flash, lower bound, host speed, byte identity.

Compiles RUN/int8.tflite (`tinyml compile`) and measures, on the same model:
- RAM: TINYML_MODEL_RAM_BYTES (the one static buffer) against TFLM's arena, measured
  here by bisection in the TFLM Python runtime (a 64-bit host figure), and against the
  lower bound (the most tensor bytes live at once for any op, in place where possible);
- flash: the compiled sources built for a Cortex-M4 (arm-none-eabi-gcc -O2, one section
  per function and array, as a linker with --gc-sections keeps them), split into constants
  (weights, biases, requantization tables: .rodata) and code (.text); the .tflite bytes TFLM
  would keep in flash for comparison (TFLM's own library code is not built here);
- speed on this host: windows per second of the compiled model (cc -O2) and of TFLM's
  Python runtime, on the same random int8 windows, whose outputs must be the same bytes.

    python bench/bench_compiler.py [--run bench/results/run] [--out bench/results/compiler.json]
"""

from __future__ import annotations

import argparse
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from firmware_bridge import compiler as C  # noqa: E402
from pipeline.core.artifacts import sha256_bytes, write_json  # noqa: E402
from pipeline.tflite.runtime import HOST_NOTE, TFLMRunner, measure_arena  # noqa: E402

ARM_FLAGS = ["-mcpu=cortex-m4", "-mthumb", "-mfloat-abi=hard", "-mfpu=fpv4-sp-d16", "-std=c99", "-O2",
             "-ffunction-sections", "-fdata-sections"]


def arm_sections(folder: Path, work: Path) -> dict | None:
    """Bytes of .text (code) and .rodata (constants) per source, built for a Cortex-M4."""
    gcc, size = shutil.which("arm-none-eabi-gcc"), shutil.which("arm-none-eabi-size")
    if not gcc or not size:
        return None
    per_file = {}
    for src in sorted(folder.glob("*.c")):
        obj = work / f"{src.stem}.o"
        subprocess.run([gcc, *ARM_FLAGS, "-I", str(folder), "-c", str(src), "-o", str(obj)], check=True)
        out = subprocess.run([size, "-A", str(obj)], check=True, capture_output=True, text=True).stdout
        sections = {"text": 0, "rodata": 0, "data": 0, "bss": 0}
        for name, nbytes in re.findall(r"^\.(\w+)\S*\s+(\d+)", out, re.M):
            if name in sections:
                sections[name] += int(nbytes)
        per_file[src.name] = sections
    total = {k: sum(f[k] for f in per_file.values()) for k in ("text", "rodata", "data", "bss")}
    return {"compiler": subprocess.run([gcc, "--version"], capture_output=True, text=True).stdout.splitlines()[0],
            "flags": " ".join(ARM_FLAGS), "per_file": per_file, "total": total,
            "flash_bytes": total["text"] + total["rodata"] + total["data"],
            "model_constants_bytes": per_file.get(C.SOURCE, {}).get("rodata", 0),
            "code_bytes": total["text"]}


def speed(data: bytes, exe: Path, output_bytes: int, arena: int, n: int) -> dict:
    runner = TFLMRunner(data, arena)
    shape = tuple(int(d) for d in runner.input_details["shape"])
    x = np.random.default_rng(0).integers(-128, 128, size=(n, *shape[1:]), dtype=np.int8)
    start = time.perf_counter()
    compiled = C.run_runner(exe, x, output_bytes)
    compiled_s = time.perf_counter() - start
    start = time.perf_counter()
    tflm = np.stack([runner.invoke(w) for w in x])
    tflm_s = time.perf_counter() - start
    return {"windows": n, "identical_outputs": int((compiled == tflm).all(axis=1).sum()),
            "compiled_windows_per_s": round(n / compiled_s, 1),
            "tflm_python_windows_per_s": round(n / tflm_s, 1),
            "note": "host figures: the compiled model as one process reading stdin (cc -O2), TFLM "
                    "through its Python runtime, one invoke per window; not a board's speed"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", default=str(ROOT / "models"), help="a run directory holding int8.tflite")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "compiler.json"))
    parser.add_argument("--windows", type=int, default=2000)
    args = parser.parse_args(argv)

    run = Path(args.run)
    model_path = run / "int8.tflite"
    if not model_path.is_file():
        print(f"bench: {model_path} not found (run `make quantize` or bench_quantize.py first)", file=sys.stderr)
        return 2
    data = model_path.read_bytes()
    folder = run / C.COMPILED_DIR
    start = time.perf_counter()
    model = C.compile_model(model_path, folder)
    compile_s = time.perf_counter() - start
    arena = measure_arena(data)
    with tempfile.TemporaryDirectory(prefix="bench-compiler-") as tmp:
        work = Path(tmp)
        arm = arm_sections(folder, work)
        exe = C.build_runner(folder, work / "runner")
        host = speed(data, exe, model.output_bytes, arena.exported(0.2), args.windows)

    ram = {
        "compiled_ram_bytes": model.ram_bytes,
        "compiled_ram_with_io_bytes": model.ram_bytes + model.input_bytes + model.output_bytes,
        "lower_bound_bytes": model.lower_bound_bytes,
        "tflm_arena_min_bytes": arena.min_bytes,
        "tflm_arena_recorded_bytes": arena.recorded_bytes,
        "ratio_to_tflm_arena": round(model.ram_bytes / arena.min_bytes, 4),
        "ratio_to_lower_bound": round(model.ram_bytes / model.lower_bound_bytes, 4) if model.lower_bound_bytes else None,
        "targets": {"ram_le_0.65_tflm_arena": model.ram_bytes <= 0.65 * arena.min_bytes,
                    "within_10pct_of_lower_bound": model.ram_bytes <= 1.10 * model.lower_bound_bytes},
        "tflm_note": HOST_NOTE,
        "compiled_note": "the static buffer only: the caller's input and output arrays are not in it "
                         "(TFLM's arena holds its input and output tensors)",
    }
    report = {
        "what": "the int8 model compiled to C vs TFLM: RAM, flash, lower bound, host speed",
        "model": {"path": str(model_path), "sha256": sha256_bytes(data), "tflite_bytes": len(data),
                  "ops": [op["op"] for op in model.ops]},
        "compile_seconds": round(compile_s, 3),
        "ram": ram,
        "flash_cortex_m4": arm,
        "host_speed": host,
        "host": {"python": platform.python_version(), "machine": platform.machine(), "system": platform.system()},
        "measured_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    write_json(args.out, report)
    print(f"model {model_path} ({len(data)} bytes, {len(model.ops)} ops)")
    print(f"RAM: compiled {model.ram_bytes} B, lower bound {model.lower_bound_bytes} B, TFLM arena "
          f"{arena.min_bytes} B (min, 64-bit host; recorded {arena.recorded_bytes}): "
          f"{100 * ram['ratio_to_tflm_arena']:.1f}% of TFLM's")
    if arm:
        print(f"flash (Cortex-M4, -O2): {arm['flash_bytes']} B = {arm['model_constants_bytes']} B model constants "
              f"+ {arm['code_bytes']} B code; the .tflite TFLM keeps in flash is {len(data)} B (+ TFLM's library)")
    print(f"host: compiled {host['compiled_windows_per_s']} windows/s, TFLM Python {host['tflm_python_windows_per_s']} "
          f"windows/s; identical outputs {host['identical_outputs']}/{host['windows']}")
    print(f"wrote {args.out}")
    return 0 if host["identical_outputs"] == host["windows"] else 1


if __name__ == "__main__":
    sys.exit(main())
