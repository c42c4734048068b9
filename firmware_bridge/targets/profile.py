"""`tinyml profile`: the compiled model on the emulated Cortex-M4, layer by layer.

A bare image for QEMU's mps2-an386 (the board's startup, SysTick and UART, no AT server)
runs ``tinyml_model_invoke`` on inputs compiled into it and prints over UART0:

- the model's output bytes for each input (the host checks them against TFLM: this is the
  byte-identity test of the kernels' DSP path, on the emulated Cortex-M4);
- the SysTick ticks of each invoke (built without hooks: the instructions per inference);
- the ticks of each op (built with -DTINYML_MODEL_DEBUG: the emitted code calls
  ``tinyml_model_debug`` after every op, and the time between two calls is that op);
- the stack the invoke took (painted below the caller's frame before each invoke).

Under ``-icount shift=0`` one instruction is one ns of virtual time and one tick of the 25 MHz
SysTick is 40 instructions (board.h; the boot firmware's calibration checks the same
figure). A single reading is +-40 instructions: every input runs ``REPEATS`` times and the
phase of the clock differs between runs, so the mean per op is finer than one tick. The hook's
own instructions (the call, reading SysTick) are measured with two hook calls back to back
and taken off every op.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from firmware_bridge.targets import qemu
from firmware_bridge.targets.board_process import run_tool
from pipeline.core.errors import BridgeError

REPEATS = 8
# The board's sources the bare image needs (main.cpp, the AT firmware, is left out).
BOARD_SOURCES = ("startup.c", "systick.c", "cmsdk_uart.c", "syscalls.c")
RUN_TIMEOUT_S = 120.0

PROFILE_MAIN = r"""
/* tinyml profile: the compiled model on the bare board, figures printed on UART0. */
#include <stdint.h>
#include <string.h>
#include "board.h"
#include "model_compiled.h"
#include "profile_inputs.h" /* PROFILE_N, PROFILE_REPEATS, PROFILE_OPS, profile_inputs[][] */

extern uint32_t _stack_limit;
static int8_t g_out[TINYML_MODEL_OUTPUT_BYTES];
static uint64_t g_op_ticks[PROFILE_OPS];
static uint32_t g_op_calls[PROFILE_OPS];
static uint64_t g_prev;

static void put(const char *s) { uart_write(s, strlen(s)); }
static void put_u(uint64_t n) {
  char d[24];
  int len = 0;
  do { d[len++] = (char)('0' + n % 10u); n /= 10u; } while (n);
  while (len) uart_write(&d[--len], 1);
}
static void put_hex(const int8_t *p, int n) {
  static const char h[] = "0123456789abcdef";
  int i;
  for (i = 0; i < n; i++) {
    char c[2];
    c[0] = h[((uint8_t)p[i]) >> 4];
    c[1] = h[((uint8_t)p[i]) & 15];
    uart_write(c, 2);
  }
}

#ifdef TINYML_MODEL_DEBUG
static int g_input;
static uint32_t g_op_fnv[PROFILE_N][PROFILE_OPS]; /* FNV-1a of each op's output bytes */

void tinyml_model_debug(int op, const int8_t *data, int bytes) {
  const uint64_t now = systick_ticks();
  if (op >= 0 && op < PROFILE_OPS) {
    uint32_t h = 2166136261u;
    int i;
    g_op_ticks[op] += now - g_prev;
    g_op_calls[op]++;
    for (i = 0; i < bytes; i++) h = (h ^ (uint8_t)data[i]) * 16777619u; /* not timed */
    g_op_fnv[g_input][op] = h;
  }
  g_prev = systick_ticks();
}
#endif

static inline __attribute__((always_inline)) uint32_t *stack_pointer(void) {
  uint32_t *sp;
  __asm volatile("mov %0, sp" : "=r"(sp));
  return sp;
}

/* Paints the free stack below this frame, runs the model, and returns the bytes of stack
 * the invoke took (the deepest painted word overwritten). */
static __attribute__((noinline)) uint32_t invoke_measured(const int8_t *in, uint64_t *ticks) {
  uint32_t *sp = stack_pointer(); /* this frame's bottom: painting calls nothing */
  uint32_t *w;
  uint64_t start;
  for (w = &_stack_limit; w < sp; w++) *w = 0xC5AC5AC5u;
  start = systick_ticks();
  g_prev = start;
  if (tinyml_model_invoke(in, g_out) != 0) { put("ERR invoke\n"); for (;;) {} }
  *ticks = systick_ticks() - start;
  for (w = &_stack_limit; w < sp && *w == 0xC5AC5AC5u; w++) {}
  return (uint32_t)((char *)sp - (char *)w);
}

int main(void) {
  int n, r, op;
  uint32_t stack = 0;
  uint64_t empty = 0;
  uart_init();
  systick_init();
  put("BEGIN\n");
#ifdef TINYML_MODEL_DEBUG
  /* The hook's own cost: two calls back to back, as many times as the ops are timed. */
  for (r = 0; r < 64; r++) {
    g_prev = systick_ticks();
    tinyml_model_debug(-1, 0, 0);
    {
      const uint64_t t0 = g_prev;
      tinyml_model_debug(-1, 0, 0);
      empty += g_prev - t0;
    }
  }
  put("HOOK 64 "); put_u(empty); put("\n");
#endif
  for (n = 0; n < PROFILE_N; n++) {
#ifdef TINYML_MODEL_DEBUG
    g_input = n;
#endif
    for (r = 0; r < PROFILE_REPEATS; r++) {
      uint64_t ticks;
      const uint32_t s = invoke_measured(profile_inputs[n], &ticks);
      if (s > stack) stack = s;
      put("INVOKE "); put_u(ticks); put("\n");
    }
    put("OUT "); put_u((uint64_t)n); put(" "); put_hex(g_out, TINYML_MODEL_OUTPUT_BYTES); put("\n");
  }
  for (op = 0; op < PROFILE_OPS; op++) {
    if (g_op_calls[op] == 0) continue;
    put("OP "); put_u((uint64_t)op); put(" "); put_u(g_op_ticks[op]); put(" ");
    put_u(g_op_calls[op]); put("\n");
  }
#ifdef TINYML_MODEL_DEBUG
  for (n = 0; n < PROFILE_N; n++)
    for (op = 0; op < PROFILE_OPS; op++)
      if (g_op_calls[op]) {
        put("FNV "); put_u((uint64_t)n); put(" "); put_u((uint64_t)op); put(" "); put_u(g_op_fnv[n][op]); put("\n");
      }
#endif
  put("STACK "); put_u(stack); put("\n");
  put("END\n");
  for (;;) __asm volatile("wfi");
}
"""


@dataclass
class ProfileRun:
    """What one image printed: per-invoke ticks, per-op ticks and calls, outputs, stack."""

    invoke_ticks: list[int]
    op_ticks: dict[int, tuple[int, int]]
    hook_ticks_per_call: float
    outputs: list[np.ndarray]
    op_fnv: dict[tuple[int, int], int]  # (input, op) -> FNV-1a of the op's output (debug build)
    stack_bytes: int
    elf: Path
    objects: list[Path]


def _inputs_header(x_q: np.ndarray, n_ops: int) -> str:
    rows = ",\n".join("  {" + ", ".join(str(int(v)) for v in row) + "}" for row in x_q)
    return (f"#define PROFILE_N {len(x_q)}\n#define PROFILE_REPEATS {REPEATS}\n#define PROFILE_OPS {n_ops}\n"
            f"static const int8_t profile_inputs[{len(x_q)}][{x_q.shape[1]}] = {{\n{rows}\n}};\n")


def link_bare_image(sources: list[Path], flags: list[str], elf: Path) -> list[Path]:
    """A bare-metal image for QEMU's board: the board's own files (BOARD_SOURCES) among
    ``sources``, each compiled with ``flags`` into ELF's folder, linked with the firmware's
    linker script and flags. Returns the objects, in the order of ``sources``."""
    objects = []
    for i, src in enumerate(sources):
        obj = elf.parent / f"{i:02d}_{src.stem}.o"
        run_tool(["arm-none-eabi-gcc", *flags, "-c", str(src), "-o", str(obj)], f"arm-none-eabi-gcc {src.name}")
        objects.append(obj)
    run_tool(["arm-none-eabi-gcc", *qemu.LINK_FLAGS, f"-T{qemu.LINKER_SCRIPT}", *map(str, objects),
              *qemu.LINK_LIBS, "-o", str(elf)], f"linking {elf.name}")
    return objects


def build_image(compiled_dir: Path, x_q: np.ndarray, n_ops: int, work: Path, debug: bool) -> tuple[Path, list[Path]]:
    """The bare profiling image (fw.elf) and the model's own objects (for its sizes)."""
    qemu.require_tools()
    work.mkdir(parents=True, exist_ok=True)
    (work / "profile_main.c").write_text(PROFILE_MAIN)
    (work / "profile_inputs.h").write_text(_inputs_header(x_q, n_ops))
    model_sources = sorted(compiled_dir.glob("*.c"))
    sources = [qemu.BOARD_DIR / s for s in BOARD_SOURCES] + model_sources + [work / "profile_main.c"]
    flags = [*qemu.COMPILE_FLAGS, *qemu.C_FLAGS, *(["-DTINYML_MODEL_DEBUG"] if debug else []),
             f"-I{qemu.BOARD_DIR}", f"-I{compiled_dir}", f"-I{work}"]
    elf = work / "profile.elf"
    objects = link_bare_image(sources, flags, elf)
    model_objects = objects[len(BOARD_SOURCES):len(BOARD_SOURCES) + len(model_sources)]
    return elf, model_objects


def run_image(elf: Path, timeout: float = RUN_TIMEOUT_S) -> list[str]:
    """Boot ``elf`` under -icount shift=0 and the lines it prints up to END."""
    cmd = ["qemu-system-arm", "-M", qemu.MACHINE, "-nographic", "-monitor", "none", "-serial", "stdio",
           "-icount", "shift=0", "-kernel", str(elf)]
    with tempfile.TemporaryDirectory(prefix="tinyml-profile-") as tmp:
        path = Path(tmp) / "uart.txt"
        # QEMU writes through its own descriptor; we read through another (one shared
        # descriptor would share the file offset, and a seek here would move QEMU's writes).
        with open(path, "wb") as log:
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                text = path.read_bytes().decode("utf-8", "replace")
                if "\nEND" in text or proc.poll() is not None:
                    break
                time.sleep(0.05)
        finally:
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    lines = [line.strip() for line in text.splitlines()]
    if "END" not in lines:
        raise BridgeError(f"{elf.name} on qemu-system-arm did not finish within {timeout:g} s: "
                          f"{' | '.join(lines[-3:])}", hint="run by hand: " + " ".join(cmd))
    return lines


def parse(lines: list[str], elf: Path, objects: list[Path]) -> ProfileRun:
    invoke, ops, outputs, hook, stack, fnv = [], {}, [], 0.0, 0, {}
    for line in lines:
        f = line.split()
        if not f:
            continue
        if f[0] == "INVOKE":
            invoke.append(int(f[1]))
        elif f[0] == "OP":
            ops[int(f[1])] = (int(f[2]), int(f[3]))
        elif f[0] == "OUT":
            outputs.append(np.frombuffer(bytes.fromhex(f[2]), dtype=np.int8).copy())
        elif f[0] == "HOOK":
            hook = int(f[2]) / int(f[1])
        elif f[0] == "FNV":
            fnv[(int(f[1]), int(f[2]))] = int(f[3])
        elif f[0] == "STACK":
            stack = int(f[1])
    return ProfileRun(invoke, ops, hook, outputs, fnv, stack, elf, objects)


def fnv1a(data: bytes) -> int:
    """The image's checksum of an op's output (FNV-1a, 32 bits)."""
    h = 2166136261
    for b in data:
        h = ((h ^ b) * 16777619) & 0xFFFFFFFF
    return h


def run_on_qemu(compiled_dir: str | os.PathLike, x_q: np.ndarray, n_ops: int, work: str | os.PathLike,
                debug: bool) -> ProfileRun:
    """Build and run the profiling image for int8 inputs ``x_q`` (n, input bytes)."""
    x_q = np.asarray(x_q, dtype=np.int8).reshape(len(x_q), -1)
    work = Path(work) / ("debug" if debug else "release")
    elf, objects = build_image(Path(compiled_dir), x_q, n_ops, work, debug)
    return parse(run_image(elf), elf, objects)


# ---------------------------------------------------------------------------------------
# The profile of a model: the table, the sizes, profile.json
# ---------------------------------------------------------------------------------------

PROFILE_JSON = "profile.json"


def _shape_text(graph, op) -> str:
    t = graph.tensors
    x, y = t[op.inputs[0]].shape if op.inputs else (), t[op.outputs[0]].shape
    if op.name in ("CONV_2D", "DEPTHWISE_CONV_2D"):
        w = t[op.inputs[1]].shape
        return f"{w[1]}x{w[2]}, {x[-1]}->{y[-1]}, out {'x'.join(map(str, y[1:-1]))}"
    if op.name == "FULLY_CONNECTED":
        return f"{t[op.inputs[1]].shape[-1]}->{y[-1]}"
    return f"{list(x)}->{list(y)}"


def _model_sizes(objects: list[Path]) -> dict:
    """text (code + read-only data, as arm-none-eabi-size counts it), data, bss of the model's
    own objects (model_compiled.o and the kernels it calls)."""
    text = data = bss = 0
    for obj in objects:
        out = run_tool(["arm-none-eabi-size", "--format=berkeley", str(obj)], "arm-none-eabi-size")
        f = out.splitlines()[1].split()
        text, data, bss = text + int(f[0]), data + int(f[1]), bss + int(f[2])
    return {"flash_bytes_text_plus_rodata": text + data, "static_ram_bytes": data + bss,
            "text_bytes": text, "data_bytes": data, "bss_bytes": bss}


def default_inputs(n_bytes: int, n: int = 2, seed: int = 0) -> np.ndarray:
    """Random int8 inputs: the instruction counts of the kernels do not depend on the values
    (no branch on data besides clamps and the softmax's cut-off)."""
    return np.random.default_rng(seed).integers(-128, 128, (n, n_bytes)).astype(np.int8)


def profile_model(data: bytes, out_dir: str | os.PathLike, x_q: np.ndarray | None = None,
                  source: str = "int8.tflite") -> dict:
    """Compile, build for the emulated Cortex-M4, run, and the figures (profile.json's)."""
    from firmware_bridge import compiler as C
    from pipeline.tflite.flatbuffer import inspect_model

    out_dir = Path(out_dir)
    compiled = C.compile_bytes(data, source)
    C.write_compiled(compiled, out_dir / "compiled")
    graph = C.read_graph(data)
    macs = {o.index: o.macs for o in inspect_model(data).ops}
    if x_q is None:
        x_q = default_inputs(compiled.input_bytes)
    release = run_on_qemu(out_dir / "compiled", x_q, len(graph.ops), out_dir / "build", debug=False)
    per_op = run_on_qemu(out_dir / "compiled", x_q, len(graph.ops), out_dir / "build", debug=True)
    tick = qemu.INSTRUCTIONS_PER_TICK
    total = max(release.invoke_ticks) * tick
    rows = []
    for op in graph.ops:
        if op.index not in per_op.op_ticks:
            continue
        ticks, calls = per_op.op_ticks[op.index]
        instr = round((ticks / calls - per_op.hook_ticks_per_call) * tick)
        m = macs.get(op.index, 0)
        rows.append({"index": op.index, "op": op.name, "layer": op.layer, "shape": _shape_text(graph, op),
                     "macs": m, "output_elements": graph.tensors[op.outputs[0]].size, "instructions": instr,
                     "instructions_per_mac": round(instr / m, 2) if m else None})
    layer_sum = sum(r["instructions"] for r in rows)
    for r in rows:
        r["share"] = round(r["instructions"] / layer_sum, 4) if layer_sum else 0.0
    total_macs = sum(macs.values())
    by_type: dict[str, dict] = {}
    for r in rows:  # the basis of a latency model: per op type, per MAC or per output element
        t = by_type.setdefault(r["op"], {"instructions": 0, "macs": 0, "output_elements": 0})
        for k in t:
            t[k] += r[k]
    for t in by_type.values():
        t["instructions_per_mac"] = round(t["instructions"] / t["macs"], 3) if t["macs"] else None
        t["instructions_per_output_element"] = round(t["instructions"] / t["output_elements"], 3)
    return {
        "machine": f"qemu-system-arm -M {qemu.MACHINE} -icount shift=0 (Cortex-M4F), "
                   f"arm-none-eabi-gcc {' '.join(qemu.COMPILE_FLAGS[:5])}",
        "model_sha256": compiled.sha256,
        "instructions_per_inference": total,
        "instructions_per_inference_note": (
            f"SysTick ticks around tinyml_model_invoke x {tick} instructions per tick, the most over "
            f"{len(release.invoke_ticks)} invokes, image built without per-op hooks; resolution {tick}"),
        "macs": total_macs,
        "instructions_per_mac": round(total / total_macs, 2) if total_macs else None,
        "layers": rows,
        "op_types": by_type,
        "layers_note": ("per op: the ticks between the hooks the emitted code calls after every op "
                        "(-DTINYML_MODEL_DEBUG), less the hook's own, averaged over every invoke"),
        **_model_sizes(release.objects),
        "stack_high_water_bytes": release.stack_bytes,
        "stack_note": "the deepest tinyml_model_invoke took the stack (painted below the caller before each invoke)",
        "arena_bytes": compiled.ram_bytes,
        "inputs": int(len(x_q)),
        "outputs_on_qemu": [o.tolist() for o in release.outputs],
    }


def format_profile(p: dict) -> list[str]:
    lines = [f"{'op':>3} {'layer':<12} {'kind':<18} {'shape':<28} {'MACs':>8} {'instr':>9} {'instr/MAC':>9} {'share':>6}"]
    for r in p["layers"]:
        ipm = f"{r['instructions_per_mac']:.2f}" if r["instructions_per_mac"] else "-"
        lines.append(f"{r['index']:>3} {(r['layer'] or '-')[:12]:<12} {r['op'][:18]:<18} {r['shape'][:28]:<28} "
                     f"{r['macs']:>8} {r['instructions']:>9} {ipm:>9} {100 * r['share']:>5.1f}%")
    lines.append(f"whole model: {p['instructions_per_inference']} instructions per inference, {p['macs']} MACs, "
                 f"{p['instructions_per_mac']} instructions/MAC")
    lines.append(f"flash (text + rodata): {p['flash_bytes_text_plus_rodata']} bytes; static RAM: "
                 f"{p['static_ram_bytes']} bytes (arena {p['arena_bytes']}); stack high-water: "
                 f"{p['stack_high_water_bytes']} bytes")
    return lines


def run(run_dir: str | os.PathLike | None = None, *, model: str | os.PathLike | None = None,
        device: str = "qemu", out=print) -> dict:
    """`tinyml profile`: RUN/int8.tflite (or ``model``) profiled on ``device``; writes
    profile.json (into RUN, or beside ``model``)."""
    from pipeline.core.artifacts import write_json

    if device != "qemu":
        raise BridgeError(f"tinyml profile: device {device!r} is not supported", hint="use --device qemu")
    path = Path(model) if model else Path(run_dir or "models") / "int8.tflite"
    if not path.is_file():
        raise BridgeError(f"{path}: not found", hint="run `tinyml quantize` first, or give --model M.tflite")
    dest = Path(run_dir) if run_dir and not model else path.parent
    with tempfile.TemporaryDirectory(prefix="tinyml-profile-") as tmp:
        p = profile_model(path.read_bytes(), tmp, source=path.name)
    p["model"] = str(path)
    for line in format_profile(p):
        out(line)
    write_json(dest / PROFILE_JSON, p)
    out(f"profile: wrote {dest / PROFILE_JSON}")
    return p
