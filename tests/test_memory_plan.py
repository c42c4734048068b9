"""The memory plan: input and output inside the one buffer, in-place operators (element-wise,
depthwise and pointwise convolutions written over their input), the op order on residual
graphs, and placement: every output byte still TFLM's.

Small versions of the bench's architectures (bench/bench_memory.py: streaming wakeword,
ResNet-8, MobileNetV1) are built in Keras, converted by the project's converter and
compared with TFLM's Python interpreter on random and saturating inputs, layer by layer on
a mismatch (the harness of test_compiler.py).
"""

from __future__ import annotations

import importlib.util
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_compiler import Compiled, Reference, assert_identical, convert, saturating_inputs

from firmware_bridge import compiler as C
from firmware_bridge.compiler import planner
from firmware_bridge.compiler.patches import fuse_residual_rows
from firmware_bridge.compiler.stripes import fuse_stage, stage_chain

ROOT = Path(__file__).resolve().parent.parent


def _bench():
    spec = importlib.util.spec_from_file_location("bench_memory", ROOT / "bench" / "bench_memory.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


SMALL = {
    "wakeword": ("wakeword", (30, 1, 40), {"channels": 16, "last": 8}),
    "resnet": ("resnet8", (12, 12, 3), {"size": 12, "widths": (4, 8, 8)}),
    "mobilenet": ("mobilenet_v1", (24, 24, 3), {"size": 24, "alpha": 0.25, "blocks": 4}),
}


@pytest.fixture(scope="module")
def small_models():
    bench = _bench()
    out = {}
    for name, (builder, shape, kw) in SMALL.items():
        out[name] = (bench.int8_model(getattr(bench, builder), shape, seed=1, **kw), shape)
    return out


def _inputs(shape, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.concatenate([rng.integers(-128, 128, size=(12, *shape)), saturating_inputs(shape, 12, seed)]).astype(np.int8)


@pytest.mark.parametrize("name", list(SMALL))
def test_small_architectures_byte_identical_with_ops_in_place(name, small_models, tmp_path):
    data, shape = small_models[name]
    ref, comp = Reference(data), Compiled(data, tmp_path)
    assert_identical(ref, comp, _inputs(shape, 3), f"small {name}")
    plan = comp.model.plan
    ops = {op.index: op.name for op in C.read_graph(data).ops}
    in_place = {ops[i] for i in plan.in_place}
    # The point of the plan: convolutions and depthwise convolutions overwrite their input.
    assert in_place & {"DEPTHWISE_CONV_2D", "CONV_2D"}, in_place
    # Every byte, input and output included, in the one buffer; never below the bound.
    assert plan.lower_bound_bytes <= plan.arena_bytes
    x = C.read_graph(data).tensors[C.read_graph(data).inputs[0]]
    assert plan.arena_bytes < plan.lower_bound_bytes + x.nbytes  # the input is not kept aside


def test_the_residual_graph_runs_in_a_memory_saving_order(small_models):
    data, _ = small_models["resnet"]
    graph = C.read_graph(data)
    orders = planner.op_orders(graph)
    assert len(orders) == 2 and sorted(orders[1]) == sorted(orders[0])
    # The chosen plan is the smaller of the two orders' plans.
    plans = [planner._plan(graph, order, frozenset()) for order in orders]
    assert C.plan_memory(graph).arena_bytes <= min(p.arena_bytes for p in plans)


def test_the_buffer_api_and_total_ram(small_models, tmp_path):
    """tinyml_model_input() / tinyml_model_run() / tinyml_model_output() give the bytes
    tinyml_model_invoke() gives; TINYML_MODEL_TOTAL_RAM_BYTES is the buffer's size."""
    data, shape = small_models["wakeword"]
    model = C.compile_bytes(data)
    folder = C.write_compiled(model, tmp_path / "compiled")
    header, source = (folder / C.HEADER).read_text(), (folder / C.SOURCE).read_text()
    total = int(re.search(r"^#define TINYML_MODEL_TOTAL_RAM_BYTES (\d+)$", header, re.M).group(1))
    assert total == model.ram_bytes == int(re.search(r"static int8_t tm_arena\[(\d+)\]", source).group(1))
    for decl in ("int8_t *tinyml_model_input(void);", "const int8_t *tinyml_model_output(void);",
                 "int tinyml_model_run(void);", "int tinyml_model_invoke(const int8_t *input, int8_t *output);"):
        assert decl in header
    main = tmp_path / "main.c"
    main.write_text(r"""
#include <stdio.h>
#include <string.h>
#include "model_compiled.h"
int main(void) {
  static int8_t in[TINYML_MODEL_INPUT_BYTES], a[TINYML_MODEL_OUTPUT_BYTES], b[TINYML_MODEL_OUTPUT_BYTES];
  while (fread(in, 1, sizeof in, stdin) == sizeof in) {
    memcpy(tinyml_model_input(), in, sizeof in);
    if (tinyml_model_run() != 0) return 3;
    memcpy(a, tinyml_model_output(), sizeof a);
    if (tinyml_model_invoke(in, b) != 0) return 4;
    if (memcmp(a, b, sizeof a) != 0) return 5;
    fwrite(a, 1, sizeof a, stdout);
  }
  return 0;
}
""")
    exe = tmp_path / "api"
    subprocess.run(["cc", *C.CFLAGS, "-I", str(folder), *sorted(map(str, folder.glob("*.c"))), str(main),
                    "-o", str(exe), "-lm"], check=True)
    x = _inputs(shape, 5)
    proc = subprocess.run([str(exe)], input=x.tobytes(), capture_output=True, check=True)
    ours = np.frombuffer(proc.stdout, np.int8).reshape(len(x), -1)
    ref = Reference(data)
    assert all(np.array_equal(ref.run(w), ours[i]) for i, w in enumerate(x))


def _conv_zoo():
    """Convolutions and pooling in the configurations whose in-place shift differs: strides
    1 and 2, SAME and VALID, 1x1, 3x3, 5x5, depth multiplier, channels up and down."""
    import keras
    from keras import layers as L

    inp = keras.Input((11, 9, 3))
    a = L.Conv2D(8, 3, strides=2, padding="same", activation="relu")(inp)
    b = L.DepthwiseConv2D(3, padding="same")(a)
    c = L.Conv2D(4, 1)(b)
    d = L.DepthwiseConv2D(5, padding="same", depth_multiplier=2)(c)
    e = L.DepthwiseConv2D(3, strides=2, padding="same")(d)
    f = L.Conv2D(12, 1, activation="relu6")(e)
    g = L.MaxPooling2D(3, strides=1, padding="same")(f)
    h = L.Conv2D(6, 3, strides=2, padding="valid")(g)
    i = L.AveragePooling2D(2, strides=1, padding="same")(h)
    j = L.GlobalAveragePooling2D()(i)
    return keras.Model(inp, L.Dense(3, activation="softmax")(j)), (11, 9, 3)


def test_in_place_windows_in_every_configuration(tmp_path):
    import keras

    keras.utils.set_random_seed(4)
    model, shape = _conv_zoo()
    X = np.random.default_rng(4).normal(0, 2, size=(32, *shape)).astype(np.float32)
    data = convert(model, X)
    ref, comp = Reference(data), Compiled(data, tmp_path)
    assert_identical(ref, comp, _inputs(shape, 6), "conv zoo")
    ops = {op.index: op.name for op in C.read_graph(data).ops}
    assert sum(ops[i] in planner.WINDOWED_OPS for i in comp.model.plan.in_place) >= 3


@settings(max_examples=60, deadline=None, derandomize=True, database=None)
@given(st.lists(st.tuples(st.integers(0, 12), st.integers(0, 6), st.integers(0, 300), st.integers(1, 400),
                          st.integers(0, 300)), min_size=1, max_size=14))
def test_placement_with_offsets_never_overlaps_live_bytes(spec):
    """Buffers whose tensors lie at offsets inside them (an output written below its input):
    at every op, the bytes two buffers use there never meet."""
    buffers = []
    for first, length, lo, size, shift in spec:
        ext = [(first, first + length, lo, lo + size)]
        if length and shift % 2:  # an in-place output below its input, at the last op
            ext.append((first + length, first + length + 1 + shift % 3, max(0, lo - shift), max(0, lo - shift) + size))
        buffers.append({"extents": ext, "segments": [(a, b, hi) for a, b, _, hi in ext],
                        "size": max(e[3] for e in ext), "first": first, "last": max(e[1] for e in ext)})
    offsets, top = planner.place(buffers)
    profiles = [planner._profile(b) for b in buffers]
    for i in range(len(buffers)):
        assert offsets[i] + max(hi for _, hi in profiles[i].values()) <= top
        for j in range(i):
            for p in set(profiles[i]) & set(profiles[j]):
                (li, hi), (lj, hj) = profiles[i][p], profiles[j][p]
                assert offsets[i] + hi <= offsets[j] + lj or offsets[j] + hj <= offsets[i] + li, (i, j, p)


def _residual_rows_model(size: int, kernel_a: int, kernel_b: int, add_order: int, seed: int):
    """A stem conv and one identity residual block (conv, conv, ADD in either input order)."""
    import keras
    from keras import layers as L

    keras.utils.set_random_seed(seed)
    inp = keras.Input((size, size - 1, 2))
    x = L.Conv2D(5, 3, padding="same", activation="relu")(inp)
    y = L.Conv2D(4, kernel_a, padding="same", activation="relu")(x)
    y = L.Conv2D(5, kernel_b, padding="same")(y)
    z = L.Add()([y, x] if add_order else [x, y])
    z = L.Activation("relu")(z)
    out = L.Conv2D(3, 3, strides=2)(z)
    X = np.random.default_rng(seed).normal(0, 2, size=(32, size, size - 1, 2)).astype(np.float32)
    return convert(keras.Model(inp, out), X), (size, size - 1, 2)


@pytest.mark.parametrize("size,ka,kb,order", [(9, 3, 3, 0), (7, 3, 5, 1), (5, 5, 5, 0)])
def test_residual_block_by_rows_is_byte_identical_and_smaller(size, ka, kb, order, tmp_path):
    data, shape = _residual_rows_model(size, ka, kb, order, seed=size + ka)
    ref = Reference(data)
    fast = C.compile_bytes(data, memory="fast")
    # The block by rows, whether or not "min" would choose it (on small images its K rows
    # of scratch can outweigh the tensors it saves).
    fused = fuse_residual_rows(C.read_graph(data))
    rows = C.emit_model(fused, C.plan_memory(fused), "int8.tflite", "-")
    assert any(op["op"] == "FUSED_RESIDUAL_ROWS" for op in rows.ops)
    assert not any(op["op"] == "FUSED_RESIDUAL_ROWS" for op in fast.ops)
    chosen = C.compile_bytes(data, memory="min")
    assert chosen.ram_bytes == min(rows.ram_bytes, fast.ram_bytes)
    if size == 9:
        assert rows.ram_bytes < fast.ram_bytes
    for name, model in (("fast", fast), ("rows", rows)):
        folder = C.write_compiled(model, tmp_path / name)
        comp = Compiled(data, tmp_path, out_dir=folder)
        assert_identical(ref, comp, _inputs(shape, size), f"residual rows {size} {ka}x{kb}, memory={name}")


def test_small_resnet_both_memory_modes(small_models, tmp_path):
    data, shape = small_models["resnet"]
    ref = Reference(data)
    for mode in C.MEMORY_MODES:
        folder = C.write_compiled(C.compile_bytes(data, memory=mode), tmp_path / mode)
        assert_identical(ref, Compiled(data, tmp_path, out_dir=folder), _inputs(shape, 9), f"small resnet, {mode}")


def test_equal_constant_arrays_are_stored_once():
    from firmware_bridge.compiler.ctext import c_array
    from firmware_bridge.compiler.emitter import share_equal_arrays

    decls = [c_array("int32_t", "a", [1, 2, 3]) + c_array("int32_t", "b", [1, 2, 3]),
             c_array("int8_t", "c", [1, 2, 3]), c_array("int32_t", "d", [1, 2, 3]), c_array("int32_t", "e", [1, 2])]
    out, saved = share_equal_arrays(decls)
    assert saved == 24
    assert "#define b a " in out[0] and "#define d a " in out[2]
    assert out[1] == decls[1] and out[3] == decls[3]  # another type, other values: kept


def test_auto_memory_takes_the_fast_plan_when_it_fits_the_budget(capsys):
    """[compile] memory = "auto": "fast" when its RAM fits the board's budget, "min" below
    that; the reason names both figures."""
    data, _ = _residual_rows_model(9, 3, 3, 0, seed=12)
    fast, small = C.compile_bytes(data, memory="fast"), C.compile_bytes(data, memory="min")
    assert small.ram_bytes < fast.ram_bytes and small.memory == "min" and fast.memory == "fast"
    roomy = C.compile_bytes(data, memory="auto", budget=C.Budget(fast.ram_bytes, "test"))
    assert roomy.memory == "fast" and roomy.ram_bytes == fast.ram_bytes
    assert f"{fast.ram_bytes:,} B fit" in roomy.memory_reason
    tight = C.compile_bytes(data, memory="auto", budget=C.Budget(fast.ram_bytes - 1, "test"))
    assert tight.memory == "min" and tight.ram_bytes == small.ram_bytes
    assert "exceed" in tight.memory_reason and f"{small.ram_bytes:,} B (fits)" in tight.memory_reason
    # With no budget given, the default board's (as the quantize stage budgets): "fast".
    assert C.compile_bytes(data).memory == "fast"
    with pytest.raises(C.CompileError, match="memory = 'tiny'"):
        C.compile_bytes(data, memory="tiny")


def test_tinyml_compile_says_which_plan_and_why(tmp_path, capsys):
    from tinyml_cli import main

    data, _ = _residual_rows_model(9, 3, 3, 0, seed=12)
    fast = C.compile_bytes(data, memory="fast")
    run = tmp_path / "run"
    run.mkdir()
    (run / "int8.tflite").write_bytes(data)
    (run / "config.toml").write_text(f"[quantize]\nram_budget_bytes = {fast.ram_bytes - 1}\n")
    assert main(["compile", "--run", str(run)]) == 0
    said = capsys.readouterr().out
    assert "the min plan: [compile] memory = \"auto\"" in said and "[quantize] ram_budget_bytes" in said
    header = (run / C.COMPILED_DIR / C.HEADER).read_text()
    assert f"TINYML_MODEL_TOTAL_RAM_BYTES {fast.ram_bytes}" not in header


def image_like(shape, n: int, seed: int, scale: float, zero_point: int) -> np.ndarray:
    """Quantized inputs with the structure of real images and spectrograms, not noise:
    smooth gradients, bright blobs, hard edges and a little sensor noise per channel, in
    the range the model was calibrated on (N(0, 1): about -3..3)."""
    rng = np.random.default_rng(seed)
    h, w, c = shape
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    out = []
    for _ in range(n):
        img = np.zeros((h, w, c))
        for ch in range(c):
            a, b = rng.normal(0, 2, 2)
            img[..., ch] = a * (yy - 0.5) + b * (xx - 0.5)  # lighting gradient
            for _ in range(3):  # blobs
                cy, cx, r = rng.uniform(0, 1), rng.uniform(0, 1), rng.uniform(0.05, 0.3)
                img[..., ch] += rng.normal(0, 2) * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r * r))
            edge = rng.uniform(0.2, 0.8)  # an object's edge
            img[..., ch] += np.where(xx * rng.uniform(-1, 1) + yy > edge, rng.normal(0, 1.5), 0.0)
        img += rng.normal(0, 0.1, img.shape)
        out.append(np.clip(np.round(img / scale) + zero_point, -128, 127))
    return np.stack(out).astype(np.int8)


def row_variants(graph) -> dict:
    """Every row-by-row form "min" may choose from: residual blocks, the first stage of each
    length, both (whether or not "min" would pick them at this size)."""
    out = {"residual rows": fuse_residual_rows(graph)}
    for layers in range(2, len(stage_chain(graph)) + 1):
        out[f"stage of {layers}"] = fuse_residual_rows(fuse_stage(graph, layers))
    return {name: g for name, g in out.items() if g is not graph}


@pytest.mark.parametrize("name", list(SMALL))
def test_image_like_inputs_in_both_memory_modes(name, small_models, tmp_path):
    """Real-structured inputs (image_like), random and saturating ones through every op, in
    "fast", "min" and every row-by-row form "min" chooses from."""
    data, shape = small_models[name]
    ref = Reference(data)
    graph = C.read_graph(data)
    x = graph.tensors[graph.inputs[0]]
    inputs = np.concatenate([image_like(shape, 8, seed=7, scale=x.scale, zero_point=x.zero_point),
                             _inputs(shape, 8)[::3]])
    variants = row_variants(graph)
    assert ("residual rows" in variants) == (name == "resnet")
    assert any(v.startswith("stage") for v in variants) == (name != "resnet")  # its stem feeds a block
    modes = {"fast": C.compile_bytes(data, memory="fast"), "min": C.compile_bytes(data, memory="min")}
    modes.update({v: C.emit_model(g, C.plan_memory(g), "int8.tflite", "-") for v, g in variants.items()})
    for mode, model in modes.items():
        comp = Compiled(data, tmp_path, out_dir=C.write_compiled(model, tmp_path / mode.replace(" ", "_")))
        assert_identical(ref, comp, inputs, f"small {name}, image-like inputs, {mode}")


def test_default_model_real_windows_in_both_memory_modes(fast_run, tmp_path):
    """The default model on its validation and test windows, compiled in either mode."""
    from pipeline.core.config import load_config
    from pipeline.data.splits import load_run_split
    from pipeline.tflite.runtime import quantize_int8

    data = (fast_run / "int8.tflite").read_bytes()
    ref = Reference(data)
    windows = load_run_split(load_config(fast_run / "config.toml"), fast_run).windows
    q = ref.interp.get_input_details(0)["quantization_parameters"]
    x_q = quantize_int8(np.concatenate([windows["val"].X, windows["test"].X]), float(q["scales"][0]),
                        int(q["zero_points"][0]))
    for mode in ("min", "fast"):
        comp = Compiled(data, tmp_path, out_dir=C.write_compiled(C.compile_bytes(data, memory=mode), tmp_path / mode))
        assert_identical(ref, comp, x_q, f"default model, validation + test windows, memory={mode}")


def test_min_computes_the_first_stage_by_rows_where_it_saves_ram(tmp_path):
    """MobileNetV1-0.25 at 64x64 (two blocks): its first stage's 32x32x16 activation is
    larger than its input; "min" computes the stage row by row (stripes.py) and needs less
    RAM than "fast", every output byte TFLM's."""
    bench = _bench()
    data = bench.int8_model(bench.mobilenet_v1, (64, 64, 3), seed=2, size=64, alpha=0.25, blocks=2)
    fast, small = C.compile_bytes(data, memory="fast"), C.compile_bytes(data, memory="min")
    assert small.ram_bytes < fast.ram_bytes, (small.ram_bytes, fast.ram_bytes)
    assert any(op["op"] == "FUSED_STAGE_ROWS" for op in small.ops)
    assert f"{fast.ram_bytes:,} B -> {small.ram_bytes:,} B" in small.memory_reason
    x = C.read_graph(data).tensors[C.read_graph(data).inputs[0]]
    inputs = np.concatenate([image_like((64, 64, 3), 4, seed=3, scale=x.scale, zero_point=x.zero_point),
                             _inputs((64, 64, 3), 4)[::4]])
    comp = Compiled(data, tmp_path, out_dir=C.write_compiled(small, tmp_path / "min"))
    assert_identical(Reference(data), comp, inputs, "MobileNetV1 64x64, first stage by rows")


def test_row_by_row_forms_on_the_emulated_cortex_m4(small_models, tmp_path):
    """The kernels' DSP path on the band shapes the row-by-row forms call them with: every
    form of the small ResNet and MobileNet gives TFLM's bytes on QEMU."""
    from firmware_bridge.targets import profile as P

    for name in ("resnet", "mobilenet"):
        data, shape = small_models[name]
        ref, graph = Reference(data), C.read_graph(data)
        x = graph.tensors[graph.inputs[0]]
        inputs = np.concatenate([image_like(shape, 2, seed=4, scale=x.scale, zero_point=x.zero_point),
                                 saturating_inputs(shape, 4, seed=4)]).reshape(6, -1)
        for variant, g in row_variants(graph).items():
            folder = C.write_compiled(C.emit_model(g, C.plan_memory(g), "int8.tflite", "-"), tmp_path / "c")
            run = P.run_on_qemu(folder, inputs, len(graph.ops), tmp_path / "build", debug=False)
            for i, w in enumerate(inputs):
                assert np.array_equal(ref.run(w), run.outputs[i]), f"{name}, {variant}, input {i}: differs on QEMU"
