"""Each op as C: the kernel it calls, the constant parameters TFLM's Prepare would give it,
and the call. ``KERNELS`` is the one table the emitter chooses from (op name -> ``Kernel``);
a specialized kernel for an op (or for some of its shapes) is a new emit function here that
picks its C function and parameters, and a table entry."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from firmware_bridge.compiler.context import Emitter
from firmware_bridge.compiler.ctext import c_array, c_struct
from firmware_bridge.compiler.patches import FUSED_OP, emit_fused_residual
from firmware_bridge.compiler.prepare import (
    activation_range,
    binary_element,
    padding,
    quantize_multiplier,
    quantize_multiplier_greater_than_one,
    quantize_multiplier_smaller_than_one,
)
from firmware_bridge.compiler.reader import (
    ACT_NONE,
    ALIAS_OPS,
    CompileError,
    COp,
    CTensor,
    Graph,
    shape4,
    where,
)


def _bias(op: COp) -> int | None:
    return op.inputs[2] if len(op.inputs) > 2 and op.inputs[2] >= 0 else None


def _conv(em: Emitter, op: COp, depthwise: bool) -> None:
    x, w = em.tensors[op.inputs[0]], em.tensors[op.inputs[1]]
    bias = _bias(op)
    y = em.tensors[op.outputs[0]]
    o = op.options
    _, ih, iw, ic = shape4(x.shape)
    _, oh, ow, oc = shape4(y.shape)
    kh, kw = w.shape[1], w.shape[2]
    if any(z != 0 for z in w.zero_points):
        raise CompileError(f"cannot compile {where(op, em.tensors)}: filter zero point is not 0")
    scales = w.scales if len(w.scales) == oc else [w.scales[0]] * oc
    mults, shifts = zip(*(quantize_multiplier(float(x.scale) * float(s) / float(y.scale))
                          for s in scales), strict=True)
    act_min, act_max = activation_range(o.fusedActivationFunction, y.scale, y.zero_point)
    n = f"op{op.index}"
    fields = {
        "in_h": ih, "in_w": iw, "in_c": ic, "out_h": oh, "out_w": ow, "out_c": oc,
        "filter_h": kh, "filter_w": kw, "stride_h": o.strideH, "stride_w": o.strideW,
        "dilation_h": o.dilationHFactor, "dilation_w": o.dilationWFactor,
        "pad_h": padding(o.padding, o.strideH, o.dilationHFactor, ih, kh, oh),
        "pad_w": padding(o.padding, o.strideW, o.dilationWFactor, iw, kw, ow),
        "depth_multiplier": oc // ic if depthwise else 1,
        "input_offset": -x.zero_point, "output_offset": y.zero_point,
        "act_min": act_min, "act_max": act_max,
    }
    fields["requant_fast"] = int(_requant_fast(em, w, bias, x.zero_point, shifts, depthwise))
    em.decl(c_struct("tm_conv_params", f"{n}_params", fields)
            + c_array("int32_t", f"{n}_multiplier", mults)
            + c_array("int32_t", f"{n}_shift", shifts))
    if depthwise and fields["depth_multiplier"] == 1 and o.dilationHFactor == 1 and o.dilationWFactor == 1 \
            and kh * kw <= DW_MAX_TAPS:
        _emit_depthwise_fast(em, op, n, bias, x.zero_point)
        return
    fast = not depthwise and o.dilationHFactor == 1 and o.dilationWFactor == 1
    bias_c = em.const(bias) if bias is not None and not (fast and kh * kw * ic <= CONV_WIN_MAX) else "NULL"
    if fast:
        # tm_conv_fast.c: windows inside the image start from bias + input_offset * sum(filter),
        # in int32 as the C sums it (wrapping alike).
        sums = np.asarray(w.data, dtype=np.int64).reshape(oc, -1).sum(axis=1)
        b = np.zeros(oc, np.int64) if bias is None else np.asarray(em.tensors[bias].data, np.int64).reshape(-1)
        eff = ((b + (-x.zero_point) * sums + (1 << 31)) % (1 << 32) - (1 << 31)).astype(np.int64)
        em.decl(c_array("int32_t", f"{n}_bias_eff", eff))
        tap_sums = "NULL"  # border pixels from a padded copy of their window: bias_eff is all they need
        if kh * kw * ic > CONV_WIN_MAX:  # larger windows: border pixels summed in place (tm_conv_border_pixel)
            tap_sums = f"{n}_tap_sums"
            em.decl(c_array("int32_t", tap_sums, np.asarray(w.data, np.int64).sum(axis=-1).reshape(-1)))
        if "tm_conv_fast.h" not in em.kernels:  # inlined into each call with the layer's constants
            em.decl('#include "tm_conv_fast.h"\n')
        em.kernels.update(("tm_conv_fast.h", "tm_fast.h"))
        em.call(op, f"tm_conv2d_fast_s8(&{n}_params, {em.ptr(x.index)}, {em.const(w.index)}, {bias_c}, "
                    f"{n}_bias_eff, {tap_sums}, {n}_multiplier, {n}_shift, {em.ptr(y.index, True)});")
        return
    fn = "tm_depthwise_conv2d_s8" if depthwise else "tm_conv2d_s8"
    em.call(op, f"{fn}(&{n}_params, {em.ptr(x.index)}, {em.const(w.index)}, "
                f"{bias_c}, {n}_multiplier, {n}_shift, {em.ptr(y.index, True)});")


def _requant_fast(em: Emitter, w: CTensor, bias: int | None, zero_point: int, shifts, depthwise: bool) -> bool:
    """tm_fast.h tm_requantize_r's conditions, proven for the layer: every shift <= -1, and
    |acc| < 2^30 for every channel and input (|bias| + sum |filter| * max |input - zero point|)."""
    if any(s > -1 for s in shifts):
        return False
    a = np.abs(np.asarray(w.data, np.int64))
    per_channel = a.reshape(-1, a.shape[-1]).sum(axis=0) if depthwise else a.reshape(a.shape[0], -1).sum(axis=1)
    b = 0 if bias is None else np.abs(np.asarray(em.tensors[bias].data, np.int64)).reshape(-1)
    bound = b + per_channel * max(abs(-128 - zero_point), abs(127 - zero_point))
    return bool(np.all(bound < (1 << 30)))


# tm_conv_fast.h TM_CONV_WIN_MAX: the largest conv window (bytes) copied for border pixels.
CONV_WIN_MAX = 512
# tm_dwconv_fast.h TM_DW_MAX_TAPS: the largest window of the depthwise fast path.
DW_MAX_TAPS = 64


def _emit_depthwise_fast(em: Emitter, op: COp, n: str, bias: int | None, zero_point: int) -> None:
    """DEPTHWISE_CONV_2D, depth multiplier 1, dilation 1: tm_dwconv_fast.h, inlined with the
    layer's constants. bias_eff[c] = bias[c] + input_offset * sum over taps of filter[c], in
    int32 as the C sums wrap (the filter is [1][kh][kw][C])."""
    w = em.tensors[op.inputs[1]]
    sums = np.asarray(w.data, dtype=np.int64).reshape(-1, w.shape[-1]).sum(axis=0)
    b = np.zeros(len(sums), np.int64) if bias is None else np.asarray(em.tensors[bias].data, np.int64).reshape(-1)
    eff = (b + (-zero_point) * sums + (1 << 31)) % (1 << 32) - (1 << 31)
    # The DSP path's filter: per group of four channels and per tap, channels (0, 2) and (1, 3)
    # as sign-extended halfword pairs (SXTB16 of the filter word, at compile time).
    c4 = len(sums) // 4 * 4
    taps = np.asarray(w.data, np.int64).reshape(-1, len(sums))
    f = taps[:, :c4].reshape(len(taps), c4 // 4, 4).transpose(1, 0, 2)  # (groups, taps, 4); none when C < 4
    pairs = np.stack([(f[..., 0] & 0xFFFF) | (f[..., 2] << 16), (f[..., 1] & 0xFFFF) | (f[..., 3] << 16)], axis=-1)
    words = ((pairs & 0xFFFFFFFF) ^ (1 << 31)) - (1 << 31)  # as int32
    em.decl(c_array("int32_t", f"{n}_bias_eff", eff) + c_array("int32_t", f"{n}_filter_x", words)
            + c_array("int8_t", f"{n}_pad", np.full(len(sums), zero_point)))
    if "tm_dwconv_fast.h" not in em.kernels:
        em.decl('#include "tm_dwconv_fast.h"\n')
    em.kernels.update(("tm_dwconv_fast.h", "tm_fast.h"))
    em.call(op, f"tm_depthwise_conv2d_fast_s8(&{n}_params, {em.ptr(op.inputs[0])}, {n}_pad, {em.const(w.index)}, {n}_filter_x, "
                f"{n}_bias_eff, {n}_multiplier, {n}_shift, {em.ptr(op.outputs[0], True)});")


def emit_conv_2d(em: Emitter, op: COp) -> None:
    _conv(em, op, depthwise=False)


def emit_depthwise_conv_2d(em: Emitter, op: COp) -> None:
    _conv(em, op, depthwise=True)


def emit_fully_connected(em: Emitter, op: COp) -> None:
    x, w = em.tensors[op.inputs[0]], em.tensors[op.inputs[1]]
    bias = _bias(op)
    y = em.tensors[op.outputs[0]]
    out_depth, in_depth = w.shape[0], w.shape[-1]
    per_channel = len(w.scales) > 1
    # tflite-micro kernels/kernel_util.cc GetQuantizedConvolutionMultipler (double product).
    mults, shifts = zip(*(quantize_multiplier(float(x.scale) * float(s) / float(y.scale))
                          for s in w.scales), strict=True)
    act_min, act_max = activation_range(op.options.fusedActivationFunction, y.scale, y.zero_point)
    n = f"op{op.index}"
    fields = {"batches": x.size // in_depth, "in_depth": in_depth, "out_depth": out_depth,
              "input_offset": -x.zero_point, "filter_offset": -w.zero_point,
              "output_offset": y.zero_point, "act_min": act_min, "act_max": act_max,
              "per_channel": int(per_channel)}
    em.decl(c_struct("tm_fc_params", f"{n}_params", fields)
            + c_array("int32_t", f"{n}_multiplier", mults)
            + c_array("int32_t", f"{n}_shift", shifts))
    em.call(op, f"tm_fully_connected_s8(&{n}_params, {em.ptr(x.index)}, {em.const(w.index)}, "
                f"{em.const(bias) if bias is not None else 'NULL'}, {n}_multiplier, "
                f"{n}_shift, {em.ptr(y.index, True)});")


def _pool(em: Emitter, op: COp, fn: str) -> None:
    x, y, o = em.tensors[op.inputs[0]], em.tensors[op.outputs[0]], op.options
    _, ih, iw, c = shape4(x.shape)
    _, oh, ow, _ = shape4(y.shape)
    act_min, act_max = activation_range(o.fusedActivationFunction, y.scale, y.zero_point)
    fields = {"in_h": ih, "in_w": iw, "channels": c, "out_h": oh, "out_w": ow,
              "filter_h": o.filterHeight, "filter_w": o.filterWidth,
              "stride_h": o.strideH, "stride_w": o.strideW,
              "pad_h": padding(o.padding, o.strideH, 1, ih, o.filterHeight, oh),
              "pad_w": padding(o.padding, o.strideW, 1, iw, o.filterWidth, ow),
              "act_min": act_min, "act_max": act_max}
    n = f"op{op.index}"
    em.kernels.add("tm_fast.h")
    em.decl(c_struct("tm_pool_params", f"{n}_params", fields))
    call = f"{fn}(&{n}_params, {em.ptr(x.index)}, {em.ptr(y.index, True)})"
    if fn == "tm_average_pool_s8":
        call = f"if ({call} != 0) return -1;"
    else:
        call += ";"
    em.call(op, call)


def emit_max_pool_2d(em: Emitter, op: COp) -> None:
    _pool(em, op, "tm_max_pool_s8")


def emit_average_pool_2d(em: Emitter, op: COp) -> None:
    _pool(em, op, "tm_average_pool_s8")


def _binary_multipliers(op: COp, a: CTensor, b: CTensor, y: CTensor) -> dict:
    """The requantization fields of ADD, SUB or MUL."""
    fields = {"left_shift": 0, "input1_multiplier": 0, "input2_multiplier": 0, "output_multiplier": 0,
              "input1_shift": 0, "input2_shift": 0, "output_shift": 0}
    if op.name == "MUL":
        # tflite-micro kernels/mul_common.cc CalculateOpDataMul.
        fields["output_multiplier"], fields["output_shift"] = quantize_multiplier(
            float(a.scale) * float(b.scale) / float(y.scale))
        return fields
    fields["left_shift"] = 20
    if op.name == "ADD":
        # tflite-micro kernels/add_common.cc CalculateOpDataAdd: in double.
        twice = 2 * max(float(a.scale), float(b.scale))
        m1, m2 = float(a.scale) / twice, float(b.scale) / twice
        mo = twice / ((1 << 20) * float(y.scale))
    else:
        # tflite-micro kernels/sub_common.cc CalculateOpDataSub: in float32.
        f32 = np.float32
        twice = f32(2) * max(f32(a.scale), f32(b.scale))
        m1, m2 = float(f32(a.scale) / twice), float(f32(b.scale) / twice)
        mo = float(twice / (f32(1 << 20) * f32(y.scale)))
    fields["input1_multiplier"], fields["input1_shift"] = quantize_multiplier_smaller_than_one(m1)
    fields["input2_multiplier"], fields["input2_shift"] = quantize_multiplier_smaller_than_one(m2)
    fields["output_multiplier"], fields["output_shift"] = quantize_multiplier_smaller_than_one(mo)
    return fields


# The largest constant operand made a table: 256 bytes of flash per constant value. The
# input normalization's SUB and MUL have one value per input channel (3 on the motion
# data, 9 on a 9-axis export); 64 values (16 KB) keeps a per-channel table within a few
# percent of a 256 KB-flash board.
TABLE_MAX_VALUES = 64


def _emit_table(em: Emitter, op: COp, ins, strides, out4: list[int], fields: dict) -> bool:
    """ADD/SUB/MUL with one constant operand broadcast as a scalar or along the last axis:
    a table per constant value (tm_lut_s8), computed with the kernels' own integer arithmetic
    (prepare.binary_element). False when the op does not take that form."""
    const = [k for k in (0, 1) if ins[k].data is not None]
    if len(const) != 1 or ins[1 - const[0]].data is not None:
        return False
    k = const[0]
    values = np.asarray(ins[k].data).reshape(-1).astype(np.int64)
    s = [0 if out4[d] == 1 else strides[k][d] for d in range(4)]  # an index that is always 0
    if s == [0, 0, 0, 0]:
        period = 1
    elif s == [0, 0, 0, 1] and len(values) == out4[3]:
        period = out4[3]
    else:
        return False
    whole = [0 if out4[d] == 1 else int(np.prod(out4[d + 1:])) for d in range(4)]
    if period > TABLE_MAX_VALUES or [0 if out4[d] == 1 else strides[1 - k][d] for d in range(4)] != whole:
        return False
    table = np.empty((period, 256), np.int64)
    for c in range(period):
        for v in range(-128, 128):
            pair = (int(values[c]), v) if k == 0 else (v, int(values[c]))
            table[c, v & 255] = binary_element(op.name, *pair, fields)
    n = f"op{op.index}"
    var = ins[1 - k]
    em.decl(c_struct("tm_lut_params", f"{n}_params", {"outer": int(np.prod(out4)) // period, "period": period})
            + c_array("int8_t", f"{n}_table", table.reshape(-1)))
    em.call(op, f"tm_lut_s8(&{n}_params, {em.ptr(var.index)}, {n}_table, {em.ptr(op.outputs[0], True)});")
    return True


def emit_binary(em: Emitter, op: COp) -> None:
    """ADD, SUB and MUL, with broadcasting."""
    a, b, y = em.tensors[op.inputs[0]], em.tensors[op.inputs[1]], em.tensors[op.outputs[0]]
    out4 = shape4(y.shape)

    def strides(t: CTensor) -> list[int]:
        s4 = shape4(t.shape)
        if any(d not in (1, o) for d, o in zip(s4, out4, strict=True)):
            raise CompileError(f"cannot compile {where(op, em.tensors)}: shapes {t.shape} and {y.shape} do not broadcast")
        contiguous = [int(np.prod(s4[k + 1:])) for k in range(4)]
        return [0 if d == 1 and o > 1 else c for d, o, c in zip(s4, out4, contiguous, strict=True)]

    act = getattr(op.options, "fusedActivationFunction", ACT_NONE)
    act_min, act_max = activation_range(act, y.scale, y.zero_point)
    in1_strides, in2_strides = strides(a), strides(b)
    fields = {"out_shape": out4, "in1_strides": in1_strides, "in2_strides": in2_strides,
              "input1_offset": -a.zero_point, "input2_offset": -b.zero_point,
              "output_offset": y.zero_point, **_binary_multipliers(op, a, b, y),
              "act_min": act_min, "act_max": act_max}
    n = f"op{op.index}"
    if _emit_table(em, op, (a, b), (in1_strides, in2_strides), out4, fields):
        return
    em.decl(c_struct("tm_binary_params", f"{n}_params", fields))
    fn = {"ADD": "tm_add_s8", "SUB": "tm_sub_s8", "MUL": "tm_mul_s8"}[op.name]
    em.call(op, f"{fn}(&{n}_params, {em.ptr(a.index)}, {em.ptr(b.index)}, {em.ptr(y.index, True)});")


def emit_mean(em: Emitter, op: COp) -> None:
    x, axis_t, y = em.tensors[op.inputs[0]], em.tensors[op.inputs[1]], em.tensors[op.outputs[0]]
    if axis_t.data is None:
        raise CompileError(f"cannot compile {where(op, em.tensors)}: its axes are not constant")
    nd = len(x.shape)
    axes = {int(a) + nd if int(a) < 0 else int(a) for a in np.asarray(axis_t.data).reshape(-1)}
    pad = 4 - nd
    in4 = shape4(x.shape)
    reduce = [int(d - pad in axes) if d >= pad else 0 for d in range(4)]
    count = int(np.prod([in4[d] for d in range(4) if reduce[d]]))
    same = x.zero_point == y.zero_point and np.float32(x.scale) == np.float32(y.scale)
    mult, shift = 0, 0
    if not same:
        # tflite-micro kernels/reduce_common.cc PrepareMeanOrSumHelper, then the 1/count
        # folding of kernels/internal/reference/reduce.h QuantizedMeanOrSum.
        mult, shift = quantize_multiplier(float(x.scale) / float(y.scale))
        if count > 0:
            s = min(count.bit_length() - 1, 32, 31 + shift)
            mult = int((mult << s) // count) if s >= 0 else int((mult >> -s) // count)
            shift -= s
    fields = {"in_shape": in4, "reduce": reduce, "count": count, "same_quant": int(same),
              "input_zero_point": x.zero_point, "output_zero_point": y.zero_point,
              "multiplier": mult, "shift": shift}
    n = f"op{op.index}"
    em.decl(c_struct("tm_mean_params", f"{n}_params", fields))
    em.call(op, f"tm_mean_s8(&{n}_params, {em.ptr(x.index)}, {em.ptr(y.index, True)});")


def emit_softmax(em: Emitter, op: COp) -> None:
    x, y = em.tensors[op.inputs[0]], em.tensors[op.outputs[0]]
    if y.zero_point != -128 or abs(y.scale - 1.0 / 256) > 1e-3 / 256:
        raise CompileError(f"cannot compile {where(op, em.tensors)}: int8 softmax output must have "
                           f"scale 1/256 and zero point -128 (has {y.scale}, {y.zero_point})")
    beta = float(op.options.beta)
    # tflite-micro kernels/softmax_common.cc CalculateSoftmaxParams and
    # kernels/internal/quantization_util.cc PreprocessSoftmaxScaling, CalculateInputRadius.
    integer_bits = 5
    real = min(beta * float(x.scale) * float(1 << (31 - integer_bits)), float((1 << 31) - 1))
    mult, left_shift = quantize_multiplier_greater_than_one(real)
    radius = math.floor(1.0 * ((1 << integer_bits) - 1) * float(1 << (31 - integer_bits))
                        / float(1 << left_shift))
    depth = shape4(x.shape)[3]
    fields = {"outer": x.size // depth, "depth": depth, "input_multiplier": mult,
              "input_left_shift": left_shift, "diff_min": -radius}
    n = f"op{op.index}"
    em.decl(c_struct("tm_softmax_params", f"{n}_params", fields))
    em.call(op, f"tm_softmax_s8(&{n}_params, {em.ptr(x.index)}, {em.ptr(y.index, True)});")


def emit_unary_table(em: Emitter, op: COp) -> None:
    """LOGISTIC, TANH, HARD_SWISH and QUANTIZE (int8 -> int8): a 256-byte table computed
    with TFLM's integer arithmetic (fixedpoint.py), looked up by tm_lut_s8 (in place)."""
    from firmware_bridge.compiler import fixedpoint as F

    x, y = em.tensors[op.inputs[0]], em.tensors[op.outputs[0]]
    if x.dtype != "int8" or y.dtype != "int8":
        raise CompileError(f"cannot compile {where(op, em.tensors)}: {x.dtype} -> {y.dtype}, only int8 -> int8")
    if op.name == "LOGISTIC":
        if y.zero_point != -128 or abs(y.scale * 256 - 1) > 1e-6:
            raise CompileError(f"cannot compile {where(op, em.tensors)}: int8 LOGISTIC output must have scale "
                               f"1/256 and zero point -128 (TFLM's logistic_common.cc)")
        table = F.logistic_table(x.scale, x.zero_point)
    elif op.name == "TANH":
        if y.zero_point != 0 or abs(y.scale * 128 - 1) > 1e-6:
            raise CompileError(f"cannot compile {where(op, em.tensors)}: int8 TANH output must have scale "
                               f"1/128 and zero point 0 (TFLM's tanh.cc)")
        table = F.tanh_table(x.scale, x.zero_point)
    elif op.name == "HARD_SWISH":
        table = F.hard_swish_table(x.scale, x.zero_point, y.scale, y.zero_point)
    else:
        table = F.requantize_table(x.scale, x.zero_point, y.scale, y.zero_point)
    n = f"op{op.index}"
    em.decl(c_struct("tm_lut_params", f"{n}_params", {"outer": x.size, "period": 1})
            + c_array("int8_t", f"{n}_table", table))
    em.call(op, f"tm_lut_s8(&{n}_params, {em.ptr(x.index)}, {n}_table, {em.ptr(y.index, True)});")


_LAYOUT_PROTOTYPES = ("void tm_pad_s8(const int32_t *shape, int8_t value, const int8_t *input, int8_t *output);\n"
                      "void tm_concat_part_s8(long outer, long inner, long out_inner, const int8_t *input, "
                      "int8_t *output);\n")


def _layout_decls(em: Emitter) -> None:
    if _LAYOUT_PROTOTYPES not in em.decls:
        em.decl(_LAYOUT_PROTOTYPES)


def _same_quantization(em: Emitter, op: COp, a: CTensor, y: CTensor) -> None:
    if a.zero_point != y.zero_point or np.float32(a.scale) != np.float32(y.scale):
        raise CompileError(f"cannot compile {where(op, em.tensors)}: input and output quantization differ "
                           f"({a.scale}, {a.zero_point} vs {y.scale}, {y.zero_point}); TFLM requires them equal")


def emit_pad(em: Emitter, op: COp) -> None:
    """PAD / PADV2 (tflite-micro kernels/pad.cc): the pad value is the output zero point, or
    PADV2's constant value."""
    x, y = em.tensors[op.inputs[0]], em.tensors[op.outputs[0]]
    pads_t = em.tensors[op.inputs[1]]
    if pads_t.data is None:
        raise CompileError(f"cannot compile {where(op, em.tensors)}: its paddings are not constant")
    _same_quantization(em, op, x, y)
    pads = np.asarray(pads_t.data).reshape(-1, 2)
    before = [0] * (4 - len(pads)) + [int(p) for p in pads[:, 0]]
    value = y.zero_point
    if op.name == "PADV2" and len(op.inputs) > 2 and op.inputs[2] >= 0:
        c = em.tensors[op.inputs[2]]
        if c.data is None:
            raise CompileError(f"cannot compile {where(op, em.tensors)}: its pad value is not constant")
        value = int(np.asarray(c.data).reshape(-1)[0])
    n = f"op{op.index}"
    _layout_decls(em)
    em.decl(c_array("int32_t", f"{n}_shape", shape4(x.shape) + before + shape4(y.shape)))
    em.call(op, f"tm_pad_s8({n}_shape, {value}, {em.ptr(x.index)}, {em.ptr(y.index, True)});")


def emit_concatenation(em: Emitter, op: COp) -> None:
    """CONCATENATION (reference/concatenation.h): each input's block per outer index."""
    y = em.tensors[op.outputs[0]]
    axis = op.options.axis + (len(y.shape) if op.options.axis < 0 else 0)
    outer = int(np.prod(y.shape[:axis]))
    out_inner = int(np.prod(y.shape[axis:]))
    act = getattr(op.options, "fusedActivationFunction", ACT_NONE)
    if act != ACT_NONE:
        raise CompileError(f"cannot compile {where(op, em.tensors)}: a fused activation on CONCATENATION")
    _layout_decls(em)
    offset = 0
    for i in op.inputs:
        t = em.tensors[i]
        _same_quantization(em, op, t, y)
        inner = int(np.prod(t.shape[axis:]))
        em.call(op, f"tm_concat_part_s8({outer}L, {inner}L, {out_inner}L, {em.ptr(i)}, "
                    f"{em.ptr(y.index, True)} + {offset});")
        offset += inner


# --------------------------------------------------------------------------- the table


@dataclass(frozen=True)
class Kernel:
    """How one op becomes C: the kernel source it needs (besides tm_common.c) and the
    function that writes its parameters and its call."""

    source: str
    emit: Callable[[Emitter, COp], None]


KERNELS: dict[str, Kernel] = {
    "CONV_2D": Kernel("tm_conv.c", emit_conv_2d),
    "DEPTHWISE_CONV_2D": Kernel("tm_conv.c", emit_depthwise_conv_2d),
    "FULLY_CONNECTED": Kernel("tm_fully_connected.c", emit_fully_connected),
    "MAX_POOL_2D": Kernel("tm_pooling.c", emit_max_pool_2d),
    "AVERAGE_POOL_2D": Kernel("tm_pooling.c", emit_average_pool_2d),
    "ADD": Kernel("tm_elementwise.c", emit_binary),
    "SUB": Kernel("tm_elementwise.c", emit_binary),
    "MUL": Kernel("tm_elementwise.c", emit_binary),
    "MEAN": Kernel("tm_mean.c", emit_mean),
    "SOFTMAX": Kernel("tm_softmax.c", emit_softmax),
    "LOGISTIC": Kernel("tm_elementwise.c", emit_unary_table),
    "TANH": Kernel("tm_elementwise.c", emit_unary_table),
    "HARD_SWISH": Kernel("tm_elementwise.c", emit_unary_table),
    "QUANTIZE": Kernel("tm_elementwise.c", emit_unary_table),
    "PAD": Kernel("tm_layout.c", emit_pad),
    "PADV2": Kernel("tm_layout.c", emit_pad),
    "CONCATENATION": Kernel("tm_layout.c", emit_concatenation),
    FUSED_OP: Kernel("tm_elementwise.c", emit_fused_residual),  # patches.py: a residual block by rows
}
SUPPORTED_OPS = tuple(k for k in KERNELS if k != FUSED_OP) + ALIAS_OPS


def check_supported(graph: Graph) -> None:
    """CompileError (one line) naming every op the compiler cannot take, with its layer."""
    tensors, inputs, outputs = graph.tensors, graph.inputs, graph.outputs
    missing = [op for op in graph.ops if op.name not in SUPPORTED_OPS]
    if missing:
        names = sorted({op.name for op in missing})
        raise CompileError(
            f"cannot compile {', '.join(where(op, tensors) for op in missing)}: "
            f"{', '.join(names)} {'has' if len(names) == 1 else 'have'} no compiled kernel "
            f"(supported: {', '.join(sorted(SUPPORTED_OPS))})",
            hint="the TFLM engine still runs this model: [device] engine = \"tflm\"")
    if len(inputs) != 1 or len(outputs) != 1:
        raise CompileError(f"the model has {len(inputs)} inputs and {len(outputs)} outputs; expected one of each")
    for i in (*inputs, *outputs):
        if tensors[i].dtype != "int8":
            raise CompileError(f"graph tensor {tensors[i].name!r} is {tensors[i].dtype}; expected int8 "
                               "(convert with int8 input and output)")
    for op in graph.ops:
        if op.name in ALIAS_OPS:
            continue
        for i in [op.inputs[0], *op.outputs]:
            if tensors[i].dtype != "int8":
                raise CompileError(f"cannot compile {where(op, tensors)}: tensor {tensors[i].name!r} is "
                                   f"{tensors[i].dtype}, the compiled kernels take int8")
        if tensors[op.inputs[0]].shape[:1] not in ((1,), ()) and op.name != "FULLY_CONNECTED":
            raise CompileError(f"cannot compile {where(op, tensors)}: batch {tensors[op.inputs[0]].shape[0]}, expected 1")
