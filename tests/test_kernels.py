"""The fast kernels give TFLM's bytes on both paths: the portable C99 path on the host and
the DSP path (SXTB16/SMLAD, arm_acle.h) on the emulated Cortex-M4 (QEMU mps2-an386).

Each model is converted from Keras with random weights scaled so activations reach the
clamps, run by TFLM on the host, and by the compiled C on both paths, on random,
saturating and calibration-like inputs. The requantization shortcut of tm_fast.h is checked
against tm_common.c's line-for-line TFLM version on random and edge values.
"""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest
from test_compiler import Compiled, Reference, assert_identical, convert, saturating_inputs

from firmware_bridge import compiler as C

QEMU = shutil.which("qemu-system-arm") is not None and shutil.which("arm-none-eabi-gcc") is not None
needs_qemu = pytest.mark.skipif(not QEMU, reason="qemu-system-arm / arm-none-eabi-gcc not installed")

REQUANT_MAIN = r"""
#include "tm_fast.h"
#ifndef PRINT_RESULT
#include <stdio.h>
#define PRINT_RESULT(n, bad) printf("%ld %ld\n", n, bad)
#define ITERS 2000000
#endif
/* xorshift: the same sequence everywhere */
static uint32_t s = 2463534242u;
static uint32_t rnd(void) { s ^= s << 13; s ^= s >> 17; s ^= s << 5; return s; }
int main(void) {
  static const int32_t edge[] = {0, 1, -1, 2, -2, 127, -128, 255, -256, 1 << 20, -(1 << 20),
                                 INT32_MAX, INT32_MIN, INT32_MAX - 1, INT32_MIN + 1, 1 << 30, -(1 << 30)};
  long bad = 0, n = 0;
  int i, j, sh;
  for (i = 0; i < ITERS; ++i) {
    const int32_t x = (i % 3 == 0) ? (int32_t)rnd() : (int32_t)rnd() >> (rnd() % 31);
    const int32_t m = (int32_t)((rnd() >> 1) | 0x40000000u); /* QuantizeMultiplier: [2^30, 2^31) */
    const int shift = (int)(rnd() % 40) - 31;                 /* -31 .. 8 */
    bad += tm_requantize(x, m, shift) != tm_multiply_by_quantized_multiplier(x, m, shift);
    ++n;
  }
  for (i = 0; i < (int)(sizeof edge / sizeof edge[0]); ++i)
    for (j = 0; j < (int)(sizeof edge / sizeof edge[0]); ++j)
      for (sh = -31; sh <= 8; ++sh) {
        const int32_t m = edge[j] >= 0 ? edge[j] : -edge[j] - 1;
        bad += tm_requantize(edge[i], m, sh) != tm_multiply_by_quantized_multiplier(edge[i], m, sh);
        ++n;
      }
  /* The shortcut of the fast conv kernels (tm_requantize_r): |acc| < 2^30, shift -31 .. -1. */
  for (i = 0; i < ITERS; ++i) {
    const int32_t x = (int32_t)rnd() >> (2 + rnd() % 29); /* shift 2 .. 30 */
    const int32_t m = (int32_t)((rnd() >> 1) | 0x40000000u);
    const int e = 1 + (int)(rnd() % 31);
    bad += tm_requantize_r(x, m, e) != tm_multiply_by_quantized_multiplier(x, m, -e);
    ++n;
  }
  for (i = 0; i < (int)(sizeof edge / sizeof edge[0]); ++i)
    for (j = 0; j < (int)(sizeof edge / sizeof edge[0]); ++j)
      for (sh = 1; sh <= 31; ++sh) {
        const int32_t x = edge[i] >= (1 << 30) ? (1 << 30) - 1 : (edge[i] <= -(1 << 30) ? -(1 << 30) + 1 : edge[i]);
        const int32_t m = edge[j] >= 0 ? edge[j] : -edge[j] - 1;
        bad += tm_requantize_r(x, m, sh) != tm_multiply_by_quantized_multiplier(x, m, -sh);
        ++n;
      }
  PRINT_RESULT(n, bad);
  return 0;
}
"""


def test_requantize_shortcut_equals_tflm_requantization(tmp_path):
    main = tmp_path / "requant.c"
    main.write_text(REQUANT_MAIN)
    exe = tmp_path / "requant"
    subprocess.run(["cc", *C.CFLAGS, "-I", str(_kernels()),
                    str(main), str(_kernels() / "tm_common.c"), "-o", str(exe)], check=True)
    n, bad = map(int, subprocess.run([str(exe)], capture_output=True, text=True, check=True).stdout.split())
    assert n > 4_000_000 and bad == 0, f"{bad} of {n} requantizations differ"


# The same check on the emulated Cortex-M4: the DSP path's SMMULR (fewer random values: QEMU
# runs a few hundred million instructions a minute).
QEMU_PRELUDE = r"""
#include "board.h"
static void put_long(long v) {
  char d[24];
  int len = 0;
  do { d[len++] = (char)('0' + v % 10); v /= 10; } while (v);
  while (len) uart_write(&d[--len], 1);
}
#define PRINT_RESULT(n, bad) \
  (uart_init(), put_long(n), uart_write(" ", 1), put_long(bad), uart_write("\nEND\n", 5))
#define ITERS 100000
"""


@needs_qemu
def test_requantize_shortcut_on_the_emulated_cortex_m4(tmp_path):
    from firmware_bridge.targets import profile as P
    from firmware_bridge.targets import qemu

    main = tmp_path / "requant.c"
    main.write_text(QEMU_PRELUDE + REQUANT_MAIN)
    sources = [qemu.BOARD_DIR / s for s in P.BOARD_SOURCES] + [_kernels() / "tm_common.c", main]
    flags = [*qemu.COMPILE_FLAGS, *qemu.C_FLAGS, f"-I{qemu.BOARD_DIR}", f"-I{_kernels()}"]
    elf = tmp_path / "requant.elf"
    P.link_bare_image(sources, flags, elf)
    dis = subprocess.run(["arm-none-eabi-objdump", "-d", str(elf)], capture_output=True, text=True).stdout
    assert "smmulr" in dis
    lines = [line for line in P.run_image(elf) if line and line != "END"]
    n, bad = map(int, lines[-1].split())
    assert n > 200_000 and bad == 0, f"{bad} of {n} requantizations differ on the Cortex-M4"


def _kernels():
    from firmware_bridge.sources import KERNEL_DIR

    return KERNEL_DIR


# --------------------------------------------------------------------------- models


def _scaled(model, factor: float = 4.0):
    """Weights scaled up: activations reach the clamps of every layer."""
    for layer in model.layers:
        w = layer.get_weights()
        if w:
            layer.set_weights([w[0] * factor] + w[1:])
    return model


def model_1d():
    """The default architecture (input normalization as SUB/MUL, CONV 1xK SAME with its
    border pixels, MAX_POOL, MEAN, FULLY_CONNECTED, SOFTMAX) at a small size, odd widths."""
    import keras

    from pipeline.ml.model import ModelParams, build_model

    keras.utils.set_random_seed(1)
    X = np.random.default_rng(1).normal(0, 2, size=(128, 37, 3)).astype(np.float32) + [3.0, -1.0, 0.5]
    params = ModelParams(width=5, depth=3, kernel_size=7, separable=False, dropout=0.0)
    return build_model((37, 3), 3, params, train_X=X, priors=np.full(3, 1 / 3)), X


def model_2d():
    """CONV 2-D: SAME 3x3 with an odd output count and odd width, strided SAME, VALID 1x1 and
    a 5x2 VALID; MAX_POOL VALID 2x2 and padded SAME; the global average pool."""
    import keras
    from keras import layers as L

    keras.utils.set_random_seed(2)
    inp = keras.Input((11, 9, 2))
    a = L.Conv2D(5, 3, padding="same", activation="relu")(inp)
    b = L.Conv2D(7, 3, strides=2, padding="same")(a)
    c = L.MaxPooling2D(2, padding="same")(L.Conv2D(8, 1, activation="relu6")(b))
    d = L.Conv2D(8, (5, 2), padding="valid")(L.MaxPooling2D(2, strides=1)(a))
    g = L.Add()([L.GlobalAveragePooling2D()(c), L.GlobalAveragePooling2D()(d)])
    out = L.Dense(4, activation="softmax")(g)
    X = np.random.default_rng(2).normal(0, 2, size=(128, 11, 9, 2)).astype(np.float32)
    return keras.Model(inp, out), X


def model_dw():
    """DEPTHWISE_CONV_2D as DS-CNN and MobileNet use it: SAME 3x3 on 6 channels (a group of
    four and two left over) and on 3 (no group), strided SAME on 8, VALID 5x3; a depth multiplier of 2 (the
    reference kernel); pointwise 1x1 convs (on 9x7 and 5x4 pixels: pairs across the rows'
    ends, an odd pixel left, windows of 3 and 6 bytes); a 3x3 SAME conv on 64 channels (a window over
    512 bytes: its border pixels summed in place); a 3x2 conv to 32 channels (its windows'
    rows gathered for the DSP path's expanded pairs)."""
    import keras
    from keras import layers as L

    keras.utils.set_random_seed(3)
    inp = keras.Input((9, 7, 3))
    a = L.Conv2D(6, 1, activation="relu")(inp)
    b = L.DepthwiseConv2D(3, padding="same", activation="relu6")(a)
    c = L.Conv2D(8, 1)(b)
    d = L.DepthwiseConv2D(3, strides=2, padding="same", activation="relu")(c)
    e = L.DepthwiseConv2D((5, 3), padding="valid", depth_multiplier=2)(c)
    f = L.Conv2D(4, 3, padding="same")(L.Conv2D(64, 1, activation="relu")(d))
    h = L.Conv2D(32, (3, 2), activation="relu")(inp)  # rows gathered, then expanded (32 channels)
    i = L.DepthwiseConv2D(3, padding="same")(inp)  # 3 channels: no group of four
    g = L.Add()([L.Dense(3)(L.GlobalAveragePooling2D()(f)), L.Dense(3)(L.GlobalAveragePooling2D()(e)),
                 L.Dense(3)(L.GlobalAveragePooling2D()(h)), L.Dense(3)(L.GlobalAveragePooling2D()(i))])
    out = L.Softmax()(g)
    X = np.random.default_rng(3).normal(0, 2, size=(128, 9, 7, 3)).astype(np.float32)
    return keras.Model(inp, out), X


def _profile_inputs(n: int, size: int) -> np.ndarray:
    from firmware_bridge.targets.profile import default_inputs

    return default_inputs(size, n)


def _every_value_inputs(shape, n: int) -> np.ndarray:
    """Inputs in which every channel sees all 256 int8 values (the tables' every entry)."""
    size = int(np.prod(shape))
    rows = [(np.arange(size) * 7 + k * 61) % 256 - 128 for k in range(n)]
    return np.stack(rows).astype(np.int8).reshape(n, *shape)


def _model(name: str, tmp_path_factory):
    model, X = {"1d": model_1d, "2d": model_2d, "dw": model_dw}[name]()
    data = convert(_scaled(model), X)
    work = tmp_path_factory.mktemp(f"kernels_{name}")
    ref = Reference(data)
    from pipeline.tflite.runtime import quantize_int8

    q = ref.interp.get_input_details(0)["quantization_parameters"]
    shape = ref.shape[1:]
    x_q = np.concatenate([
        quantize_int8(X[:8], float(q["scales"][0]), int(q["zero_points"][0])).reshape(8, *shape),
        saturating_inputs(shape, 12, seed=4), _every_value_inputs(shape, 4)])
    return name, data, ref, Compiled(data, work), x_q, work


@pytest.fixture(scope="module", params=["1d", "2d", "dw"])
def model(request, tmp_path_factory):
    return _model(request.param, tmp_path_factory)


@pytest.fixture(scope="module")
def model_1d_only(tmp_path_factory):
    """One model is enough for the command (the kernels are checked on both above)."""
    return _model("1d", tmp_path_factory)


def test_portable_path_on_the_host_is_tflm_byte_for_byte(model):
    name, data, ref, comp, x_q, _ = model
    source = (comp.dir / C.SOURCE).read_text()
    # The fast kernels are the ones called (not the reference fallbacks).
    assert "tm_conv2d_fast_s8(" in source
    if name == "1d":
        assert source.count("tm_lut_s8(") == 2, "the input normalization's SUB and MUL as tables"
    if name == "dw":
        assert source.count("tm_depthwise_conv2d_fast_s8(") == 3 and "tm_depthwise_conv2d_s8(" in source
        assert "_tap_sums" in source, "a conv window over 512 bytes: border pixels summed in place"
    assert_identical(ref, comp, x_q, f"model {name}, host")
    # Every layer, not only the output (a softmax can absorb a one-LSB slip upstream).
    for i, x in enumerate(x_q[::4]):
        theirs, ours = ref.layers(x), C.run_runner_debug(comp.debug_exe, x[None])
        for op, out in theirs.items():
            assert np.array_equal(out, ours[op]), f"model {name}, input {4 * i}, op {op} on the host"


@needs_qemu
def test_dsp_path_on_the_emulated_cortex_m4_is_tflm_byte_for_byte(model):
    from firmware_bridge.targets import profile as P

    name, data, ref, comp, x_q, work = model
    image_inputs = x_q.reshape(len(x_q), -1)
    run = P.run_on_qemu(comp.dir, image_inputs, len(ref.ops), work / "qemu", debug=True)
    # The image was built with the DSP extension: the conv kernel's SMLADs are in it.
    dis = subprocess.run(["arm-none-eabi-objdump", "-d", str(run.elf)], capture_output=True, text=True).stdout
    assert "smlad" in dis and "sxtb16" in dis
    assert len(run.outputs) == len(image_inputs)
    for i, (x, ours) in enumerate(zip(image_inputs, run.outputs, strict=True)):
        theirs = ref.run(x)
        assert np.array_equal(theirs, ours), f"model {name}, input {i} on QEMU: TFLM {theirs.tolist()} vs {ours.tolist()}"
        # Every layer: the image's checksum of each op's output against TFLM's tensor.
        for op, out in ref.layers(x).items():
            assert run.op_fnv[(i, op)] == P.fnv1a(out.astype(np.int8).tobytes()), \
                f"model {name}, input {i}: op {op} differs on QEMU"


@needs_qemu
def test_tinyml_profile_cli_writes_the_table_and_profile_json(model_1d_only, tmp_path, capsys):
    from pipeline.core.artifacts import read_json
    from tinyml_cli import main

    name, data, ref, *_ = model_1d_only
    path = tmp_path / "m.tflite"
    path.write_bytes(data)
    assert main(["profile", "--model", str(path)]) == 0
    out = capsys.readouterr().out
    p = read_json(tmp_path / "profile.json")
    ops = [op for op in ref.ops if op.name not in C.ALIAS_OPS]
    assert [r["index"] for r in p["layers"]] == [op.index for op in ops]
    assert all(r["instructions"] > 0 for r in p["layers"]) and abs(sum(r["share"] for r in p["layers"]) - 1) < 1e-3
    # The per-op figures (hook build, hook cost taken off) add up to the whole invoke measured
    # without hooks, within the SysTick resolution of each op and the hook calls' own few
    # instructions (op count x 40 + 20 per op).
    total = p["instructions_per_inference"]
    assert abs(sum(r["instructions"] for r in p["layers"]) - total) <= 60 * len(ops), (p["layers"], total)
    conv = [r for r in p["layers"] if r["op"] == "CONV_2D"]
    assert all(r["macs"] > 0 and r["instructions_per_mac"] > 0 for r in conv)
    assert p["flash_bytes_text_plus_rodata"] > 0 and p["static_ram_bytes"] >= p["arena_bytes"] > 0
    assert 0 < p["stack_high_water_bytes"] < 4096
    x = _profile_inputs(len(p["outputs_on_qemu"]), int(np.prod(ref.shape[1:])))
    assert p["outputs_on_qemu"] == [ref.run(v).tolist() for v in x]
    assert "instructions per inference" in out and "stack high-water" in out


def test_requant_shortcut_only_where_the_compiler_proves_it():
    """tm_requantize_r needs every shift <= -1 and |acc| < 2^30; otherwise the layer keeps
    TFLM's requantization (requant_fast = 0)."""
    from types import SimpleNamespace

    from firmware_bridge.compiler.ops import _requant_fast

    w = SimpleNamespace(data=np.full((4, 3, 3, 8), 127, np.int8))  # sum |w| = 9144 per channel
    em = SimpleNamespace(tensors={7: SimpleNamespace(data=np.full(4, 1000, np.int32)),
                                  8: SimpleNamespace(data=np.full(4, (1 << 30) - 1000, np.int32))})
    assert _requant_fast(em, w, 7, -128, [-3] * 4, depthwise=False)
    assert not _requant_fast(em, w, 7, -128, [-3, -3, 0, -3], depthwise=False)  # a shift of 0
    assert not _requant_fast(em, w, 8, -128, [-3] * 4, depthwise=False)  # bias near 2^30
    # Depthwise [1][kh][kw][C]: the sum runs over the taps of each channel.
    dw = SimpleNamespace(data=np.full((1, 3, 3, 4), -128, np.int8))
    assert _requant_fast(em, dw, None, 0, [-1] * 4, depthwise=True)
