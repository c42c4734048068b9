"""Total RAM of the compiled model against TFLM, on three MLPerf Tiny architectures and the
default model.

The architectures are built here in Keras (random weights: the arithmetic, hence the
memory, does not depend on their values), converted to full int8 by the project's converter
(pipeline/tflite/convert.py), compiled (`tinyml compile`) and measured:
- total RAM: TINYML_MODEL_TOTAL_RAM_BYTES, every byte the compiled model needs, input and
  output included;
- TFLM: its planned tensors ("head" of the arena: what its GreedyMemoryPlanner lays out,
  input and output included) and its whole arena (head + persistent data), from TFLM's
  RecordingMicroAllocator in the tflite-micro Python runtime (a 64-bit host figure);
- flash: weights (the model's int8/int32 constant tensors), requantization parameters
  (everything else in the model's .rodata) and code (.text), built for a Cortex-M4;
- compile time and byte identity against TFLM on random and saturating inputs;
- on a model with row-by-row blocks or stages (ResNet-8, MobileNetV1), what `[compile] memory = "min"` costs
  against "fast": MACs executed and instructions per inference on the emulated Cortex-M4.

The architectures (the MLPerf Tiny v1 reference models' shapes):
- streaming wakeword: input 30x1x40, four (depthwise 3x1 + pointwise 1x1) blocks, one fully
  connected layer (ST Edge AI reports 5,836 B of RAM on it, input and output included);
- ResNet-8: 32x32x3, three residual stages of 16, 32, 64 channels (IC);
- MobileNetV1-0.25: 96x96x3, 13 depthwise-separable blocks (VWW).

    python bench/bench_memory.py [--default-run bench/results/run] [--out bench/results/memory.json]
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

ROW_OPS = ("FUSED_RESIDUAL_ROWS", "FUSED_STAGE_ROWS")  # memory = "min"'s row-by-row forms
ST_EDGE_AI_WAKEWORD_RAM = 5836  # ST's MLPerf Tiny report, input and output included


# --------------------------------------------------------------------------- architectures


def wakeword(channels: int = 128, last: int = 64):
    """Streaming-wakeword shape: 30x1x40 -> 4 x (depthwise 3x1, pointwise) -> dense 3."""
    import keras
    from keras import layers as L

    inp = keras.Input((30, 1, 40))
    z = inp
    for i, c in enumerate([channels, channels, channels, last]):
        z = L.DepthwiseConv2D((3, 1), padding="valid", name=f"dw{i}")(z)
        z = L.Conv2D(c, 1, activation="relu", name=f"pw{i}")(z)
    z = L.Flatten()(z)
    return keras.Model(inp, L.Dense(3, activation="softmax", name="classes")(z))


def resnet8(size: int = 32, widths: tuple[int, ...] = (16, 32, 64)):
    """MLPerf Tiny IC's ResNet-8: conv, three residual stages (stride 2 from the second, with
    a 1x1 shortcut), average pooling, dense 10."""
    import keras
    from keras import layers as L

    inp = keras.Input((size, size, 3))
    x = L.Conv2D(widths[0], 3, padding="same", activation="relu")(inp)
    for i, w in enumerate(widths):
        stride = 1 if i == 0 else 2
        y = L.Conv2D(w, 3, strides=stride, padding="same", activation="relu")(x)
        y = L.Conv2D(w, 3, padding="same")(y)
        short = x if i == 0 else L.Conv2D(w, 1, strides=stride)(x)
        x = L.Activation("relu")(L.Add()([y, short]))
    x = L.AveragePooling2D(x.shape[1])(x)
    return keras.Model(inp, L.Dense(10, activation="softmax")(L.Flatten()(x)))


def mobilenet_v1(size: int = 96, alpha: float = 0.25, blocks: int = 13):
    """MobileNetV1 (MLPerf Tiny VWW: alpha 0.25 at 96x96x3), 2 classes."""
    import keras
    from keras import layers as L

    plan = [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2), *[(512, 1)] * 5, (1024, 2), (1024, 1)]
    inp = keras.Input((size, size, 3))
    x = L.Conv2D(int(32 * alpha), 3, strides=2, padding="same", activation="relu6")(inp)
    for filters, stride in plan[:blocks]:
        x = L.DepthwiseConv2D(3, strides=stride, padding="same", activation="relu6")(x)
        x = L.Conv2D(int(filters * alpha), 1, activation="relu6")(x)
    x = L.GlobalAveragePooling2D()(x)
    return keras.Model(inp, L.Dense(2, activation="softmax")(x))


ARCHITECTURES = {
    "streaming_wakeword": (wakeword, (30, 1, 40)),
    "resnet8": (resnet8, (32, 32, 3)),
    "mobilenet_v1_025_96": (mobilenet_v1, (96, 96, 3)),
}


def int8_model(build, shape: tuple[int, ...], seed: int = 0, **kw) -> bytes:
    """The architecture with random weights, converted to full int8 by the project's converter."""
    import keras

    from pipeline.tflite.convert import convert_int8

    keras.utils.set_random_seed(seed)
    X = np.random.default_rng(seed).normal(0, 1, size=(32, *shape)).astype(np.float32)
    model = build(**kw)
    # Random logits can be tiny: TFLM's int8 softmax refuses an input scale below 2^-26 / beta
    # (softmax_common.cc: a multiplier not above one). Scaled to a spread of a few units, as
    # a trained model's are.
    import keras

    last = model.layers[-1]
    features = keras.Model(model.inputs[0], last.input)(X)
    spread = float(np.std(np.asarray(features) @ last.get_weights()[0])) or 1.0
    last.set_weights([last.get_weights()[0] * (4.0 / spread)] + last.get_weights()[1:])
    data, _ = convert_int8(model, X)
    return data


# --------------------------------------------------------------------------- measuring


def tflm_arena(data: bytes) -> dict:
    """TFLM's arena head (planned tensors) and whole arena, from its recording allocator."""
    code = ("import sys\nfrom tflite_micro.python.tflite_micro import runtime\n"
            "i = runtime.Interpreter.from_bytes(sys.stdin.buffer.read(), arena_size=8 << 20)\n"
            "i.print_allocations()\n")
    proc = subprocess.run([sys.executable, "-c", code], input=data, capture_output=True)
    text = proc.stdout.decode(errors="replace") + proc.stderr.decode(errors="replace")
    head = re.search(r"[Hh]ead[^\d]*(\d+)", text)
    total = re.search(r"[Tt]otal[^\d]*(\d+)", text)
    if not head or not total:
        raise RuntimeError(f"TFLM printed no allocation figures: {text[-400:]}")
    return {"head_bytes": int(head.group(1)), "arena_bytes": int(total.group(1))}


def measure(name: str, data: bytes, work: Path) -> dict:
    from firmware_bridge import compiler as C
    from pipeline.tflite.runtime import TFLMRunner

    start = time.perf_counter()
    compiled = C.compile_bytes(data, memory="min")
    seconds = time.perf_counter() - start
    fast = C.compile_bytes(data, memory="fast")
    auto = C.compile_bytes(data)  # "auto" on the default board's RAM budget
    graph = C.read_graph(data)
    weights = sum(t.nbytes for t in graph.tensors if t.data is not None)
    C.write_compiled(compiled, work / "compiled")
    import bench_compiler as BC

    arm = BC.arm_sections(work / "compiled", work)
    tflm = tflm_arena(data)
    # Byte identity on random and saturating inputs.
    exe = C.build_runner(work / "compiled", work / "runner")
    runner = TFLMRunner(data, 8 << 20)
    shape = tuple(int(d) for d in runner.input_details["shape"])[1:]
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.integers(-128, 128, size=(16, *shape)),
                        np.full((1, *shape), -128), np.full((1, *shape), 127),
                        rng.choice([-128, 127], size=(6, *shape))]).astype(np.int8)
    ours = C.run_runner(exe, x, compiled.output_bytes)
    theirs = np.stack([runner.invoke(w).reshape(-1) for w in x])
    total = compiled.ram_bytes
    row = {
        "ops": len(graph.ops),
        "compile_seconds": round(seconds, 3),
        "total_ram_bytes": total,
        "total_ram_bytes_memory_fast": fast.ram_bytes,
        "memory_auto_default_board": auto.memory, "memory_auto_reason": auto.memory_reason,
        "row_by_row_ops": sum(op["op"] in ROW_OPS for op in compiled.ops),
        "lower_bound_bytes": compiled.lower_bound_bytes,
        "input_bytes": compiled.input_bytes, "output_bytes": compiled.output_bytes,
        "tflm_head_bytes": tflm["head_bytes"], "tflm_arena_bytes": tflm["arena_bytes"],
        "ratio_to_tflm_head": round(total / tflm["head_bytes"], 4),
        "ratio_to_tflm_arena": round(total / tflm["arena_bytes"], 4),
        "in_place_ops": len(compiled.plan.in_place),
        "identical_outputs": f"{int((ours == theirs).all(axis=1).sum())}/{len(x)}",
    }
    if arm:
        model_ro = arm["model_constants_bytes"]
        row["flash"] = {"weights_bytes": weights, "parameters_bytes": model_ro - weights,
                        "code_bytes": arm["code_bytes"], "total_bytes": model_ro + arm["code_bytes"]}
    if name == "streaming_wakeword":
        row["st_edge_ai_ram_bytes"] = ST_EDGE_AI_WAKEWORD_RAM
        row["target_met"] = total <= ST_EDGE_AI_WAKEWORD_RAM
    elif name != "default":
        row["target_met"] = total <= 0.6 * tflm["head_bytes"]
    return row


def memory_mode_cost(data: bytes, work: Path) -> dict:
    """What "min" costs against "fast": total RAM, MACs executed (patches.executed_macs:
    taps outside the image skipped, as the kernels do) and instructions per inference on the
    emulated Cortex-M4 (QEMU -icount, the profile machinery of `tinyml profile`), per mode,
    and per row-by-row block against its three ops (per-op hooks); outputs checked against TFLM."""
    from firmware_bridge import compiler as C
    from firmware_bridge.compiler.patches import executed_macs
    from firmware_bridge.targets import profile as P
    from firmware_bridge.targets.qemu import INSTRUCTIONS_PER_TICK as TICK
    from pipeline.tflite.flatbuffer import inspect_model
    from pipeline.tflite.runtime import TFLMRunner

    graph = C.read_graph(data)
    runner = TFLMRunner(data, 8 << 20)
    x = P.default_inputs(graph.tensors[graph.inputs[0]].nbytes, n=2)
    want = [runner.invoke(w.reshape(runner.input_details["shape"][1:])).reshape(-1) for w in x]
    out: dict = {"nominal_macs": inspect_model(data).total_macs, "instruction_resolution": TICK}
    per_op = {}
    for mode in ("fast", "min"):
        compiled = C.compile_bytes(data, memory=mode)
        folder = C.write_compiled(compiled, work / mode)
        release = P.run_on_qemu(folder, x, len(graph.ops), work / f"build-{mode}", debug=False)
        debug = P.run_on_qemu(folder, x, len(graph.ops), work / f"build-{mode}", debug=True)
        per_op[mode] = {i: (t / n - debug.hook_ticks_per_call) * TICK for i, (t, n) in debug.op_ticks.items()}
        out[mode] = {"total_ram_bytes": compiled.ram_bytes, "executed_macs": executed_macs(compiled.graph),
                     "instructions_per_inference": max(release.invoke_ticks) * TICK,
                     "identical_on_qemu": all(np.array_equal(a, b) for a, b in zip(release.outputs, want, strict=True)),
                     "row_by_row_ops": [f"{o['op']} {o['index']}" for o in compiled.ops if o["op"] in ROW_OPS]}
        if mode == "min":
            fused = [op for op in compiled.graph.ops if op.name in ROW_OPS]
    f, m = out["fast"], out["min"]
    out["min_extra_macs"] = m["executed_macs"] - f["executed_macs"]
    out["min_extra_instructions"] = m["instructions_per_inference"] - f["instructions_per_inference"]
    out["min_extra_instructions_share"] = round(out["min_extra_instructions"] / f["instructions_per_inference"], 4)
    out["min_ram_saved_bytes"] = f["total_ram_bytes"] - m["total_ram_bytes"]
    blocks = []
    for op in fused:  # each row-by-row op against the ops it replaces, per-op hooks
        o = op.options
        parts = [layer.index for layer in o.layers] if op.name == "FUSED_STAGE_ROWS" else [o.conv_a.index, o.conv_b.index,
                                                                                 op.index]
        blocks.append({"op": op.name, "ops": parts, "fast_instructions": round(sum(per_op["fast"][i] for i in parts)),
                       "min_instructions": round(per_op["min"][op.index])})
    out["row_by_row"] = blocks
    return out


def mobilenet_blocks(blocks: int):
    """A MobileNet-like chain at 48x48 with ``blocks`` depthwise-separable blocks (placement
    scaling: 2 ops a block)."""
    import keras
    from keras import layers as L

    inp = keras.Input((48, 48, 3))
    x = L.Conv2D(8, 3, strides=2, padding="same", activation="relu6")(inp)
    for _ in range(blocks):
        x = L.DepthwiseConv2D(3, padding="same", activation="relu6")(x)
        x = L.Conv2D(16, 1, activation="relu6")(x)
    x = L.GlobalAveragePooling2D()(x)
    # No softmax: 80 random blocks can collapse the logits to one value, whose int8 softmax
    # TFLM refuses; the plan does not depend on it.
    return keras.Model(inp, L.Dense(2)(x))


def placement_scaling() -> list[dict]:
    """Planning time (plan_memory, every order, in-place choice and placement tried) and
    whole compile time against the number of ops."""
    from firmware_bridge import compiler as C

    rows = []
    for blocks in (10, 20, 40, 80):
        data = int8_model(mobilenet_blocks, (48, 48, 3), blocks=blocks)
        graph = C.read_graph(data)
        start = time.perf_counter()
        C.plan_memory(graph)
        plan_s = time.perf_counter() - start
        start = time.perf_counter()
        C.compile_bytes(data)
        rows.append({"blocks": blocks, "ops": len(graph.ops), "plan_seconds": round(plan_s, 3),
                     "compile_seconds": round(time.perf_counter() - start, 3)})
        print(f"placement: {len(graph.ops)} ops: plan {plan_s:.2f} s, compile {rows[-1]['compile_seconds']} s")
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--default-run", default=str(ROOT / "bench" / "results" / "run"),
                        help="a run directory holding the default model's int8.tflite")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "memory.json"))
    parser.add_argument("--only", choices=[*ARCHITECTURES, "default"], action="append")
    parser.add_argument("--no-qemu", action="store_true", help="skip the instruction counts on QEMU")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT / "bench"))
    from pipeline.core.artifacts import write_json

    models = {}
    for name, (build, shape) in ARCHITECTURES.items():
        if not args.only or name in args.only:
            models[name] = int8_model(build, shape)
    default = Path(args.default_run) / "int8.tflite"
    if (not args.only or "default" in args.only) and default.is_file():
        models["default"] = default.read_bytes()
    results = {}
    for name, data in models.items():
        with tempfile.TemporaryDirectory(prefix=f"bench-memory-{name}-") as tmp:
            results[name] = row = measure(name, data, Path(tmp))
            if row["row_by_row_ops"] and not args.no_qemu:
                row["min_vs_fast"] = cost = memory_mode_cost(data, Path(tmp))
                print(f"{name}: \"min\" against \"fast\": {cost['min_ram_saved_bytes']} B less RAM, "
                      f"{cost['min_extra_macs']:+} MACs, {cost['min_extra_instructions']:+} instructions per "
                      f"inference on QEMU ({100 * cost['min_extra_instructions_share']:+.2f}%)")
        print(f"{name}: total RAM {row['total_ram_bytes']} B (lower bound {row['lower_bound_bytes']}), TFLM head "
              f"{row['tflm_head_bytes']} B / arena {row['tflm_arena_bytes']} B: {row['ratio_to_tflm_head']:.2f}x head; "
              f"compile {row['compile_seconds']} s; identical {row['identical_outputs']}"
              + (f"; flash {row['flash']}" if "flash" in row else "")
              + (f"; target met: {row['target_met']}" if "target_met" in row else ""))
    scaling = placement_scaling() if not args.only else []
    report = {"placement_scaling": scaling,
              "host": {"machine": platform.machine(), "cpus": os.cpu_count(),
                       "load_average_1min": round(os.getloadavg()[0], 2)},
              "what": "total RAM (input and output included) of the compiled model vs TFLM's planned tensors "
                      "(arena head) and whole arena; flash as weights + parameters + code (Cortex-M4, -O2)",
              "models": results, "tflm_note": "TFLM figures from the tflite-micro Python runtime (64-bit host)",
              "measured_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    write_json(args.out, report)
    print(f"wrote {args.out}")
    identical = all(r["identical_outputs"].split("/")[0] == r["identical_outputs"].split("/")[1]
                    and all(r.get("min_vs_fast", {}).get(m, {}).get("identical_on_qemu", True) for m in ("min", "fast"))
                    for r in results.values())
    return 0 if identical else 1


if __name__ == "__main__":
    sys.exit(main())
