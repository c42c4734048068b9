"""The integers TFLM's Prepare functions compute (multipliers, shifts, activation ranges,
padding), computed exactly as they do: each must give the integer TFLM's Prepare gives; the
source is cited where it is computed."""

from __future__ import annotations

import math

import numpy as np

from firmware_bridge.compiler.reader import (
    ACT_NONE,
    ACT_RELU,
    ACT_RELU6,
    ACT_RELU_N1_TO_1,
    PADDING_VALID,
    CompileError,
)


def _round_half_away(x: float) -> int:
    """std::round / TfLiteRound on a double."""
    return int(math.copysign(math.floor(abs(x) + 0.5), x))


def quantize_multiplier(real: float) -> tuple[int, int]:
    """tflite-micro kernels/internal/quantization_util.cc QuantizeMultiplier (default build)."""
    if real == 0.0:
        return 0, 0
    q, shift = math.frexp(real)
    q_fixed = _round_half_away(q * (1 << 31))
    if q_fixed == 1 << 31:
        q_fixed //= 2
        shift += 1
    if shift < -31:
        shift, q_fixed = 0, 0
    return int(q_fixed), int(shift)


def quantize_multiplier_smaller_than_one(real: float) -> tuple[int, int]:
    if not 0.0 < real < 1.0:
        raise CompileError(f"a multiplier {real} outside (0, 1): TFLM would refuse this model")
    return quantize_multiplier(real)


def quantize_multiplier_greater_than_one(real: float) -> tuple[int, int]:
    if not real > 1.0:
        raise CompileError(f"a multiplier {real} not above 1: TFLM would refuse this model")
    return quantize_multiplier(real)


def activation_range(activation: int, scale: float, zero_point: int) -> tuple[int, int]:
    """tflite-micro kernels/kernel_util.cc CalculateActivationRangeQuantized for int8; the
    quantized bound is zero_point + round(f / scale) computed in float32 (Quantize)."""

    def q(f: float) -> int:
        return int(zero_point) + _round_half_away(float(np.float32(f) / np.float32(scale)))

    if activation == ACT_NONE:
        return -128, 127
    if activation == ACT_RELU:
        return max(-128, q(0.0)), 127
    if activation == ACT_RELU6:
        return max(-128, q(0.0)), min(127, q(6.0))
    if activation == ACT_RELU_N1_TO_1:
        return max(-128, q(-1.0)), min(127, q(1.0))
    raise CompileError(f"fused activation {activation} is not one TFLM's int8 kernels support")


def padding(kind: int, stride: int, dilation: int, in_size: int, filt: int, out_size: int) -> int:
    """tflite-micro kernels/padding.h ComputePadding."""
    if kind == PADDING_VALID:
        return 0
    effective = (filt - 1) * dilation + 1
    return max(0, ((out_size - 1) * stride + effective - in_size) // 2)


# --------------------------------------------------------------------------- fixed point
# The C kernels' integer arithmetic in Python integers, for tables computed at compile time
# (element-wise ops with a constant operand become a 256-entry table per constant value).
# Must match tm_common.c, i.e. gemmlowp fixedpoint/fixedpoint.h and tflite-micro
# tensorflow/lite/kernels/internal/common.h, integer for integer.

def _wrap32(v: int) -> int:
    return (v + (1 << 31)) % (1 << 32) - (1 << 31)


def srdhm(a: int, b: int) -> int:
    """SaturatingRoundingDoublingHighMul (gemmlowp): C99 division truncates toward zero."""
    if a == b == -(1 << 31):
        return (1 << 31) - 1
    ab = a * b
    nudge = (1 << 30) if ab >= 0 else 1 - (1 << 30)
    t = ab + nudge
    q = abs(t) >> 31
    return q if t >= 0 else -q


def rdbpot(x: int, exponent: int) -> int:
    """RoundingDivideByPOT (gemmlowp): round half away from zero."""
    mask = (1 << exponent) - 1
    remainder = x & mask
    threshold = (mask >> 1) + (1 if x < 0 else 0)
    return (x >> exponent) + (1 if remainder > threshold else 0)


def mbqm(x: int, multiplier: int, shift: int) -> int:
    """MultiplyByQuantizedMultiplier (TFLM's default build: two roundings); x << left wraps."""
    left, right = max(shift, 0), max(-shift, 0)
    return rdbpot(srdhm(_wrap32(x << left), multiplier), right)


def binary_element(op: str, x: int, y: int, f: dict) -> int:
    """One output of tm_add_s8 / tm_sub_s8 / tm_mul_s8 (tm_elementwise.c) for inputs x, y and
    the parameter fields ``f`` (ops._binary_multipliers plus offsets and activation range)."""
    if op == "MUL":
        raw = f["output_offset"] + mbqm((f["input1_offset"] + x) * (f["input2_offset"] + y),
                                        f["output_multiplier"], f["output_shift"])
    else:
        def scaled(v, offset, mult, shift):
            return rdbpot(srdhm(_wrap32((offset + v) << f["left_shift"]), mult), -shift)

        a = scaled(x, f["input1_offset"], f["input1_multiplier"], f["input1_shift"])
        b = scaled(y, f["input2_offset"], f["input2_multiplier"], f["input2_shift"])
        s = a + b if op == "ADD" else a - b
        raw = rdbpot(srdhm(s, f["output_multiplier"]), -f["output_shift"]) + f["output_offset"]
    return min(max(raw, f["act_min"]), f["act_max"])
