"""What a DSP block costs on the device, measured on the emulated Cortex-M4.

``measure(param_sets)`` builds ``dsp/check/tm_dsp_cost.c`` with the firmware's CPU flags for
QEMU's mps2-an386 (the board ``tinyml profile`` and the QEMU target use), runs it under
``-icount shift=0`` (one instruction is one ns of virtual time, so one tick of the 25 MHz
SysTick is 40 instructions: board.h) and reads, for each parameter set, the ticks of one
``tm_dsp_run`` (the median of three), the scratch floats and the output floats. RAM is
scratch + output (4 bytes a float) plus the raw window the device holds (in_len x channels
floats). The figures are cached in ``$TINYML_CACHE/dsp/cost-<hash>.json`` by the hash of the
sources, the flags and the parameter sets. Without arm-none-eabi-gcc or qemu-system-arm the
cost is not measured (``None``), and the caller says so.
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

from firmware_bridge.sources import BOARDS_DIR
from pipeline.core.artifacts import write_json
from pipeline.dsp.binding import Params, library, shape
from pipeline.dsp.build import DSP_DIR, cache_dir

BOARD = BOARDS_DIR / "mps2_an386"
# The firmware's flags (firmware_bridge/targets/qemu.py CPU_FLAGS, LINK_FLAGS) plus no contraction.
CPU_FLAGS = ("-mcpu=cortex-m4", "-mthumb", "-mfloat-abi=hard", "-mfpu=fpv4-sp-d16")
FLAGS = (*CPU_FLAGS, "-O2", "-std=c99", "-ffp-contract=off", "--specs=nano.specs", "-nostartfiles",
         "-Wl,--gc-sections")
INSTRUCTIONS_PER_TICK = 40  # 1 ns per instruction under -icount shift=0, SysTick at 25 MHz
BOARD_SOURCES = ("startup.c", "syscalls.c", "cmsdk_uart.c", "systick.c")
TIMEOUT_S = 300.0


def tools_missing() -> list[str]:
    return [t for t in ("arm-none-eabi-gcc", "qemu-system-arm") if not shutil.which(t)]


def _c_value(v, ctype) -> str:
    return f"{float(v)!r}f" if ctype is ctypes.c_float else str(int(v))


def _header(param_sets: list[Params]) -> str:
    rows = []
    for p in param_sets:
        rows.append("{" + ", ".join(_c_value(getattr(p, n), t) for n, t in Params._fields_) + "}")
    lib = library()
    max_in = max(p.in_len * p.channels for p in param_sets)
    max_scratch = max(lib.tm_dsp_scratch_floats(ctypes.byref(p)) for p in param_sets)
    max_out = max(r * c for r, c in (shape(p) for p in param_sets))
    return (f"#define COST_N {len(param_sets)}\n#define COST_MAX_IN {max_in}\n"
            f"#define COST_MAX_SCRATCH {max(1, max_scratch)}\n#define COST_MAX_OUT {max(1, max_out)}\n"
            "static const tm_dsp_params cost_params[COST_N] = {\n  " + ",\n  ".join(rows) + "\n};\n")


def _key(header: str) -> str:
    h = hashlib.sha256(header.encode())
    for name in ("tm_dsp.c", "tm_dsp.h", "check/tm_dsp_cost.c"):
        h.update((DSP_DIR / name).read_bytes())
    h.update(" ".join(FLAGS).encode())
    return h.hexdigest()[:16]


def measure(param_sets: list[Params]) -> list[dict] | None:
    """Per parameter set: instructions of one window's features, scratch / output / input
    floats and RAM bytes, on the emulated Cortex-M4; None when the tools are missing."""
    if not param_sets or tools_missing():
        return None
    header = _header(param_sets)
    path = cache_dir() / f"cost-{_key(header)}.json"
    if path.is_file():
        return json.loads(path.read_text())
    with tempfile.TemporaryDirectory(prefix="tm_dsp_cost-") as tmp:
        (Path(tmp) / "tm_dsp_cost_params.h").write_text(header)
        elf = Path(tmp) / "cost.elf"
        subprocess.run(["arm-none-eabi-gcc", *FLAGS, f"-I{tmp}", f"-I{BOARD}", f"-I{DSP_DIR}",
                        f"-T{BOARD / 'mps2_an386.ld'}", str(DSP_DIR / "check" / "tm_dsp_cost.c"),
                        str(DSP_DIR / "tm_dsp.c"), *(str(BOARD / f) for f in BOARD_SOURCES),
                        "-lm", "-lc", "-lgcc", "-o", str(elf)], check=True, capture_output=True)
        lines = _run(elf)
    out = []
    for p, line in zip(param_sets, lines, strict=True):
        _, _, ticks, scratch, n_out = line.split()
        n_in = p.in_len * p.channels
        out.append({"instructions": int(ticks) * INSTRUCTIONS_PER_TICK, "scratch_floats": int(scratch),
                    "output_floats": int(n_out), "input_floats": n_in,
                    "ram_bytes": 4 * (int(scratch) + int(n_out) + n_in)})
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, out)
    return out


def _run(elf: Path) -> list[str]:
    proc = subprocess.Popen(["qemu-system-arm", "-M", "mps2-an386", "-nographic", "-monitor", "none",
                             "-serial", "stdio", "-icount", "shift=0", "-kernel", str(elf)],
                            stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
    lines: list[str] = []
    timer = threading.Timer(TIMEOUT_S, proc.kill)  # a hung image ends here, not never
    timer.start()
    try:
        for line in proc.stdout:
            if line.strip() == "done":
                break
            if line.startswith("cost "):
                if "error" in line:
                    raise RuntimeError(f"the DSP cost image: {line.strip()}")
                lines.append(line.strip())
    finally:
        timer.cancel()
        proc.kill()
        proc.wait()
    return lines

