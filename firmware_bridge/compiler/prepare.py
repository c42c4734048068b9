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
