"""Arm CMSIS-NN on the same layers as the compiled kernels (issue 24): instructions per layer on
the emulated Cortex-M4, beside ours, for the DS-CNN and MobileNetV1-0.25 of bench_kernels.py.

CMSIS-NN is not a package here and is never committed: give the folder of its sources, fetched
by hand from ARM-software/CMSIS-NN (Apache-2.0), with ``--cmsis-nn DIR`` (DIR/Include holds
arm_nnfunctions.h and arm_nnsupportfunctions.h, DIR/Source the kernels' .c files: at least
arm_convolve_s8.c, arm_convolve_1x1_s8_fast.c, arm_nn_mat_mult_kernel_s8_s16.c,
arm_nn_mat_mult_nt_t_s8.c, arm_q7_to_q15_with_offset.c, arm_depthwise_conv_3x3_s8.c,
arm_avgpool_s8.c; DIR/VERSION says which commit they came from). Without it the script says
CMSIS-NN is not measured and writes nothing.

How it measures, the way issue 24 measured the default model:
- the model is bench_kernels.py's (same Keras builder, same seed, same int8 conversion), and
  its sha256 is recorded beside the figures;
- every layer TFLM runs with a CMSIS-NN kernel on a Cortex-M4 (CONV_2D, DEPTHWISE_CONV_2D,
  AVERAGE_POOL_2D; the kernel TFLM's cmsis_nn port would pick: arm_convolve_wrapper_s8 and
  arm_depthwise_conv_wrapper_s8's choice, made here in Python) gets its own call in a bare
  image for QEMU mps2-an386 (the project's board files, linker script and compile flags,
  firmware_bridge.targets.qemu), with that layer's real int8 weights, bias, per-channel
  multipliers and shifts (computed as the compiler computes them: TFLM's), and as input the
  layer's input tensor on real model inputs;
- SysTick is read around each call (-icount shift=0: one tick is 40 instructions), every call
  runs REPEATS times per input, and the cost of reading the clock twice is taken off;
- each layer's output bytes (FNV-1a of them, printed by the image) must equal the same
  tensor computed by LiteRT's reference kernels, whose final output must equal TFLM's: a
  figure is kept only when the bytes agree;
- ops CMSIS-NN has no kernel for in TFLM (PAD, MEAN, RESHAPE) run the same reference code on
  both sides there, so our own figure stands on both sides, as issue 24's table did for SUB,
  MUL and MEAN. FULLY_CONNECTED and SOFTMAX do have CMSIS-NN kernels, which this bench does
  not build: their rows carry our figure on both sides, marked, and they are under 0.1% of
  either model.

    python bench/bench_cmsis_nn.py --cmsis-nn /tmp/cmsis-nn [--only dscnn] [--out bench/results/cmsis_nn.json]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

REPEATS = 4
N_INPUTS = 2
TARGET_RATIO = 0.8
NOT_MEASURED = "not measured: run bench/bench_cmsis_nn.py --cmsis-nn DIR (CMSIS-NN's sources, fetched by hand)"
NEEDED = ("arm_convolve_s8.c", "arm_convolve_1x1_s8_fast.c", "arm_nn_mat_mult_kernel_s8_s16.c",
          "arm_nn_mat_mult_nt_t_s8.c", "arm_q7_to_q15_with_offset.c", "arm_depthwise_conv_3x3_s8.c",
          "arm_avgpool_s8.c")
SAME_CODE = {"PAD", "MEAN", "RESHAPE"}  # no CMSIS-NN kernel in TFLM: reference code on both sides
NOT_BUILT = {"FULLY_CONNECTED", "SOFTMAX"}  # CMSIS-NN kernels exist; not built by this bench

MAIN = r"""
#include <stdint.h>
#include <string.h>
#include "board.h"
#include "layers.h"

static void put(const char *s) { uart_write(s, strlen(s)); }
static void put_u(uint64_t n) {
  char d[24];
  int len = 0;
  do { d[len++] = (char)('0' + n % 10u); n /= 10u; } while (n);
  while (len) uart_write(&d[--len], 1);
}

int main(void) {
  int l, n, r;
  uint64_t empty = 0;
  uart_init();
  systick_init();
  put("BEGIN\n");
  for (r = 0; r < 64; r++) { /* reading the clock twice, back to back */
    const uint64_t t0 = systick_ticks();
    empty += systick_ticks() - t0;
  }
  put("EMPTY 64 "); put_u(empty); put("\n");
  for (l = 0; l < N_LAYERS; l++) {
    uint64_t ticks = 0;
    for (n = 0; n < N_INPUTS; n++) {
      uint32_t h = 2166136261u;
      int i;
      for (r = 0; r < REPEATS; r++) {
        uint64_t t0;
        memset(g_out, 0x5A, sizeof g_out);
        t0 = systick_ticks();
        if (layers[l].run(layers[l].inputs[n], g_out) != 0) { put("ERR "); put_u((uint64_t)l); put("\n"); }
        ticks += systick_ticks() - t0;
      }
      for (i = 0; i < layers[l].out_bytes; i++) h = (h ^ (uint8_t)g_out[i]) * 16777619u;
      put("FNV "); put_u((uint64_t)layers[l].op); put(" "); put_u((uint64_t)n); put(" "); put_u(h); put("\n");
    }
    put("LAYER "); put_u((uint64_t)layers[l].op); put(" "); put_u(ticks); put(" ");
    put_u((uint64_t)(N_INPUTS * REPEATS)); put("\n");
  }
  put("END\n");
  for (;;) __asm volatile("wfi");
}
"""


def _arr(ctype: str, name: str, values) -> str:
    vals = np.asarray(values).reshape(-1).astype(np.int64).tolist()
    body = ",".join(str(v) for v in vals) or "0"
    return f"static {ctype} {name}[{max(len(vals), 1)}] = {{{body}}};\n"


def fnv1a(data: bytes) -> int:
    h = 2166136261
    for b in data:
        h = ((h ^ b) * 16777619) & 0xFFFFFFFF
    return h


def choose_kernel(op, graph) -> str | None:
    """The CMSIS-NN function TFLM's cmsis_nn port reaches for this op on a Cortex-M4 (DSP, no
    MVE): arm_convolve_wrapper_s8.c / arm_depthwise_conv_wrapper_s8.c's tests (CMSIS-NN
    v4.0.0), or None where this bench has no CMSIS-NN kernel for the op."""
    from firmware_bridge.compiler.prepare import padding
    from firmware_bridge.compiler.reader import shape4

    t = graph.tensors
    if op.name not in ("CONV_2D", "DEPTHWISE_CONV_2D", "AVERAGE_POOL_2D"):
        return None
    if op.name == "AVERAGE_POOL_2D":
        return "arm_avgpool_s8"
    o = op.options
    x, w, y = t[op.inputs[0]], t[op.inputs[1]], t[op.outputs[0]]
    _, ih, iw, ic = shape4(x.shape)
    _, oh, ow, oc = shape4(y.shape)
    kh, kw = w.shape[1], w.shape[2]
    ph = padding(o.padding, o.strideH, o.dilationHFactor, ih, kh, oh)
    pw = padding(o.padding, o.strideW, o.dilationWFactor, iw, kw, ow)
    dil1 = o.dilationHFactor == 1 and o.dilationWFactor == 1
    if op.name == "CONV_2D":
        if ph == 0 and pw == 0 and kh == 1 and kw == 1 and dil1:
            if o.strideH == 1 and o.strideW == 1:
                return "arm_convolve_1x1_s8_fast"
            raise SystemExit(f"op {op.index}: arm_convolve_1x1_s8 (strided 1x1) is not built by this bench")
        if ih == 1 and ow % 4 == 0 and o.dilationWFactor == 1 and kh == 1:
            raise SystemExit(f"op {op.index}: arm_convolve_1_x_n_s8 is not built by this bench")
        return "arm_convolve_s8"
    if oc == ic and dil1 and kh == 3 and kw == 3 and ph <= 1 and pw <= 1:
        return "arm_depthwise_conv_3x3_s8"
    raise SystemExit(f"op {op.index}: this depthwise shape needs arm_depthwise_conv_s8_opt/_s8, not built here")


def layer_c(op, graph, kernel: str, inputs: list[np.ndarray]) -> tuple[str, int, int]:
    """C for one layer: its constants, its inputs and a run function; (text, output bytes,
    scratch bytes)."""
    from firmware_bridge.compiler.prepare import activation_range, padding, quantize_multiplier
    from firmware_bridge.compiler.reader import shape4

    t = graph.tensors
    x, y = t[op.inputs[0]], t[op.outputs[0]]
    _, ih, iw, ic = shape4(x.shape)
    _, oh, ow, oc = shape4(y.shape)
    o = op.options
    act_min, act_max = activation_range(o.fusedActivationFunction, y.scale, y.zero_point)
    n = f"L{op.index}"
    text = "".join(_arr("const int8_t", f"{n}_in{i}", v) for i, v in enumerate(inputs))
    text += f"static const int8_t *const {n}_inputs[N_INPUTS] = {{{', '.join(f'{n}_in{i}' for i in range(len(inputs)))}}};\n"
    dims = (f"  static const cmsis_nn_dims in_d = {{1, {ih}, {iw}, {ic}}};\n"
            f"  static const cmsis_nn_dims out_d = {{1, {oh}, {ow}, {oc}}};\n")
    if kernel == "arm_avgpool_s8":
        ph = padding(o.padding, o.strideH, 1, ih, o.filterHeight, oh)
        pw = padding(o.padding, o.strideW, 1, iw, o.filterWidth, ow)
        scratch = 4 * ic
        text += (f"static int {n}_run(const int8_t *in, int8_t *out) {{\n{dims}"
                 f"  static const cmsis_nn_dims f_d = {{1, {o.filterHeight}, {o.filterWidth}, 1}};\n"
                 f"  static const cmsis_nn_pool_params p = {{{{{o.strideW}, {o.strideH}}}, {{{pw}, {ph}}}, "
                 f"{{{act_min}, {act_max}}}}};\n"
                 f"  const cmsis_nn_context ctx = {{g_scratch, {scratch}}};\n"
                 f"  return arm_avgpool_s8(&ctx, &p, &in_d, in, &f_d, &out_d, out);\n}}\n")
        return text, y.size, scratch
    w = t[op.inputs[1]]
    bias = t[op.inputs[2]] if len(op.inputs) > 2 and op.inputs[2] >= 0 else None
    kh, kw = w.shape[1], w.shape[2]
    scales = w.scales if len(w.scales) == oc else [w.scales[0]] * oc
    mults, shifts = zip(*(quantize_multiplier(float(x.scale) * float(s) / float(y.scale)) for s in scales),
                        strict=True)
    ph = padding(o.padding, o.strideH, o.dilationHFactor, ih, kh, oh)
    pw = padding(o.padding, o.strideW, o.dilationWFactor, iw, kw, ow)
    text += _arr("const int8_t", f"{n}_w", w.data) + _arr("int32_t", f"{n}_mult", mults) + \
        _arr("int32_t", f"{n}_shift", shifts)
    text += _arr("const int32_t", f"{n}_b", bias.data) if bias is not None else ""
    b = f"{n}_b" if bias is not None else "NULL"
    common = (f"  static const cmsis_nn_dims f_d = {{{w.shape[0]}, {kh}, {kw}, {w.shape[3]}}};\n"
              f"  static const cmsis_nn_dims b_d = {{1, 1, 1, {oc}}};\n"
              f"  static const cmsis_nn_per_channel_quant_params q = {{{n}_mult, {n}_shift}};\n")
    tiles = (f"{{{o.strideW}, {o.strideH}}}, {{{pw}, {ph}}}, {{{o.dilationWFactor}, {o.dilationHFactor}}}, "
             f"{{{act_min}, {act_max}}}")
    if op.name == "CONV_2D":
        scratch = 2 * ic * kh * kw * 2 if kernel == "arm_convolve_s8" else 0
        params = (f"  static const cmsis_nn_conv_params p = {{{-x.zero_point}, {y.zero_point}, {tiles}}};\n")
    else:
        scratch = 0
        params = (f"  static const cmsis_nn_dw_conv_params p = {{{-x.zero_point}, {y.zero_point}, {oc // ic}, "
                  f"{tiles}}};\n")
    text += (f"static int {n}_run(const int8_t *in, int8_t *out) {{\n{dims}{common}{params}"
             f"  const cmsis_nn_context ctx = {{{'g_scratch' if scratch else 'NULL'}, {scratch}}};\n"
             f"  return {kernel}(&ctx, &p, &q, &in_d, in, &f_d, {n}_w, &b_d, {b}, &out_d, out);\n}}\n")
    return text, y.size, scratch


def reference_tensors(data: bytes, x_q: np.ndarray) -> list[dict[int, np.ndarray]]:
    """Every tensor of the model on each input, by LiteRT's reference kernels (the arithmetic
    TFLM's reference kernels share)."""
    import tensorflow as tf

    out = []
    for x in x_q:
        interp = tf.lite.Interpreter(model_content=data, experimental_preserve_all_tensors=True,
                                     experimental_op_resolver_type=tf.lite.experimental.OpResolverType.BUILTIN_REF)
        interp.allocate_tensors()
        d = interp.get_input_details()[0]
        interp.set_tensor(d["index"], x.reshape(d["shape"]).astype(np.int8))
        interp.invoke()
        tensors = {}
        for td in interp.get_tensor_details():
            try:
                tensors[td["index"]] = np.array(interp.get_tensor(td["index"]))
            except ValueError:
                pass
        out.append(tensors)
    return out


def tflm_outputs(data: bytes, x_q: np.ndarray) -> list[list[int]]:
    from tflite_micro.python.tflite_micro import runtime

    interp = runtime.Interpreter.from_bytes(data, arena_size=8 << 20)
    res = []
    for x in x_q:
        interp.set_input(x.reshape(interp.get_input_details(0)["shape"]), 0)
        interp.invoke()
        res.append(np.asarray(interp.get_output(0)).reshape(-1).tolist())
    return res


def build_and_run(cmsis: Path, graph, layers: list[tuple], work: Path) -> dict:
    from firmware_bridge.targets import profile as P
    from firmware_bridge.targets import qemu

    qemu.require_tools()
    work.mkdir(parents=True, exist_ok=True)
    bodies, entries, out_max, scratch_max = [], [], 1, 4
    for op, kernel, inputs in layers:
        text, out_bytes, scratch = layer_c(op, graph, kernel, inputs)
        bodies.append(text)
        entries.append(f"  {{{op.index}, {out_bytes}, L{op.index}_run, L{op.index}_inputs}},")
        out_max, scratch_max = max(out_max, out_bytes), max(scratch_max, scratch)
    header = (f"#include <stddef.h>\n#include \"arm_nnfunctions.h\"\n#define N_INPUTS {N_INPUTS}\n"
              f"#define REPEATS {REPEATS}\n#define N_LAYERS {len(layers)}\n"
              f"static int8_t g_out[{out_max}];\n"
              f"static int32_t g_scratch[{(scratch_max + 3) // 4}];\n" + "".join(bodies)
              + "typedef struct { int op; int out_bytes; int (*run)(const int8_t *, int8_t *); "
                "const int8_t *const *inputs; } layer_t;\n"
              + "static const layer_t layers[N_LAYERS] = {\n" + "\n".join(entries) + "\n};\n")
    (work / "layers.h").write_text(header)
    (work / "cmsis_main.c").write_text(MAIN)
    sources = [qemu.BOARD_DIR / s for s in P.BOARD_SOURCES] + [work / "cmsis_main.c"] + \
        [cmsis / "Source" / f for f in NEEDED]
    flags = [*qemu.COMPILE_FLAGS, *qemu.C_FLAGS, f"-I{qemu.BOARD_DIR}", f"-I{cmsis / 'Include'}", f"-I{work}"]
    elf = work / "cmsis_nn.elf"
    P.link_bare_image(sources, flags, elf)
    lines = P.run_image(elf, timeout=600.0)
    empty, ticks, fnv = 0.0, {}, {}
    for line in lines:
        f = line.split()
        if not f:
            continue
        if f[0] == "EMPTY":
            empty = int(f[2]) / int(f[1])
        elif f[0] == "LAYER":
            ticks[int(f[1])] = (int(f[2]), int(f[3]))
        elif f[0] == "FNV":
            fnv[(int(f[1]), int(f[2]))] = int(f[3])
        elif f[0] == "ERR":
            raise SystemExit(f"CMSIS-NN returned an error on op {f[1]}")
    tick = qemu.INSTRUCTIONS_PER_TICK
    return {"instructions": {op: round((t / c - empty) * tick) for op, (t, c) in ticks.items()}, "fnv": fnv}


def measure(name: str, build, cmsis: Path, work: Path) -> dict:
    from firmware_bridge.compiler import read_graph
    from firmware_bridge.targets import profile as P
    from pipeline.tflite.convert import convert_int8
    from pipeline.tflite.runtime import quantize_int8

    model, X = build()
    data, _ = convert_int8(model, X)
    graph = read_graph(data)
    t_in = graph.tensors[graph.inputs[0]]
    x_q = quantize_int8(X[:N_INPUTS], float(t_in.scale), int(t_in.zero_point)).reshape(N_INPUTS, -1)
    # Ours, exactly as bench_kernels.py measures it (outputs checked against TFLM there too).
    ours = P.profile_model(data, work / name / "ours", x_q=x_q, source=f"{name}.tflite")
    theirs = tflm_outputs(data, x_q)
    if ours["outputs_on_qemu"] != theirs:
        raise SystemExit(f"{name}: our outputs on QEMU differ from TFLM's")
    ref = reference_tensors(data, x_q)
    out_idx = graph.outputs[0]
    if [r[out_idx].reshape(-1).tolist() for r in ref] != theirs:
        raise SystemExit(f"{name}: LiteRT's reference kernels do not give TFLM's output bytes; "
                         "their intermediate tensors cannot stand for TFLM's")
    layers = []
    for op in graph.ops:
        kernel = choose_kernel(op, graph)
        if kernel:
            layers.append((op, kernel, [r[op.inputs[0]].astype(np.int8) for r in ref]))
    run = build_and_run(cmsis, graph, layers, work / name / "cmsis")
    kernels = {op.index: k for op, k, _ in layers}
    rows, total_cmsis = [], 0
    for r in ours["layers"]:
        i = r["index"]
        row = {"index": i, "op": r["op"], "layer": r["layer"], "shape": r["shape"], "macs": r["macs"],
               "ours": r["instructions"]}
        if i in kernels:
            want = [fnv1a(ref[k][graph.ops[i].outputs[0]].astype(np.int8).tobytes()) for k in range(N_INPUTS)]
            got = [run["fnv"].get((i, k)) for k in range(N_INPUTS)]
            if got != want:
                raise SystemExit(f"{name}: CMSIS-NN's {kernels[i]} on op {i} ({r['op']}) gave other bytes "
                                 f"than the reference kernels: no figure kept")
            row.update(cmsis_nn=run["instructions"][i], cmsis_nn_kernel=kernels[i], cmsis_nn_output_identical=True)
        else:
            row.update(cmsis_nn=r["instructions"],
                       cmsis_nn_kernel=("same reference code on both sides in TFLM: ours counted on both sides"
                                        if r["op"] in SAME_CODE else
                                        "CMSIS-NN kernel not built by this bench: ours counted on both sides"))
        row["ratio"] = round(row["ours"] / row["cmsis_nn"], 3) if row["cmsis_nn"] else None
        total_cmsis += row["cmsis_nn"]
        rows.append(row)
    layer_sum = sum(r["ours"] for r in rows)
    return {
        "model_sha256": hashlib.sha256(data).hexdigest(),
        "ours_instructions_per_inference": ours["instructions_per_inference"],
        "ours_sum_of_layers": layer_sum,
        "cmsis_nn_sum_of_layers": total_cmsis,
        "ratio": round(layer_sum / total_cmsis, 3),
        "target_ratio": TARGET_RATIO,
        "ratio_note": ("sum of per-layer instructions, ours / CMSIS-NN's, each layer timed on its own "
                       "(ours: between the hooks of the -DTINYML_MODEL_DEBUG build; CMSIS-NN: around its call)"),
        "layers": rows,
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cmsis-nn", metavar="DIR", help="CMSIS-NN's sources (Include/, Source/, VERSION), fetched by hand")
    ap.add_argument("--only", choices=("dscnn", "mobilenet"), action="append")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "cmsis_nn.json"))
    args = ap.parse_args(argv)
    if not args.cmsis_nn:
        print(f"CMSIS-NN {NOT_MEASURED}")
        return 0
    cmsis = Path(args.cmsis_nn)
    missing = [f for f in NEEDED if not (cmsis / "Source" / f).is_file()] + \
        [f for f in ("arm_nnfunctions.h", "arm_nnsupportfunctions.h") if not (cmsis / "Include" / f).is_file()]
    if missing:
        print(f"{cmsis}: CMSIS-NN sources missing: {', '.join(missing)}", file=sys.stderr)
        return 2
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import platform

    from bench_kernels import dscnn_model, mobilenet_model

    from pipeline.core.artifacts import write_json

    version = (cmsis / "VERSION").read_text().strip() if (cmsis / "VERSION").is_file() else "unknown"
    results = {"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
               "host": {"machine": platform.machine(), "cpus": os.cpu_count(),
                        "load_average_1min": round(os.getloadavg()[0], 2)},
               "cmsis_nn_source": version.splitlines()[0] if version != "unknown" else version,
               "cmsis_nn_version": version,
               "cmsis_nn_note": ("CMSIS-NN sources fetched by hand from ARM-software/CMSIS-NN (Apache-2.0), "
                                 "kept outside the repository, built with the project's board flags for the "
                                 "Cortex-M4 (DSP path); per-layer outputs checked byte for byte"),
               "repeats": REPEATS, "inputs": N_INPUTS}
    models = {"dscnn": dscnn_model, "mobilenet": mobilenet_model}
    with tempfile.TemporaryDirectory(prefix="bench-cmsis-nn-") as tmp:
        for name, build in models.items():
            if args.only and name not in args.only:
                continue
            r = measure(name, build, cmsis, Path(tmp))
            results[name] = r
            print(f"== {name}: ours {r['ours_sum_of_layers']:,} vs CMSIS-NN {r['cmsis_nn_sum_of_layers']:,} "
                  f"instructions (sum of layers): ratio {r['ratio']}")
            print(f"{'op':>3} {'type':<18} {'shape':<32} {'ours':>11} {'CMSIS-NN':>11} {'ratio':>6}  kernel")
            for row in r["layers"]:
                print(f"{row['index']:>3} {row['op']:<18} {row['shape'][:32]:<32} {row['ours']:>11,} "
                      f"{row['cmsis_nn']:>11,} {row['ratio'] if row['ratio'] is not None else '-':>6}  "
                      f"{row['cmsis_nn_kernel'][:40]}")
    write_json(args.out, results)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
