"""TFLM's int8 LOGISTIC, TANH, HARD_SWISH and QUANTIZE (int8 -> int8) as 256-entry tables.

An int8 op of one int8 input has 256 possible inputs: the compiler computes each output here,
with TFLM's own integer arithmetic in Python integers, and the C looks it up (tm_lut_s8).
Every function must give, for every input byte, the byte TFLM gives (the tests run all 256
through TFLM's interpreter):

- LOGISTIC: tflite-micro kernels/logistic_common.cc (CalculateArithmeticOpDataLogistic) and
  tensorflow/lite/kernels/internal/reference/integer_ops/logistic.h (int8 Logistic), over
  gemmlowp fixedpoint/fixedpoint.h (logistic, exp_on_negative_values,
  one_over_one_plus_x_for_x_in_0_1);
- TANH: tflite-micro kernels/tanh.cc (TanhPrepare) and reference/integer_ops/tanh.h, over
  gemmlowp's tanh (neg_tanh_on_negative_values, one_minus_x_over_one_plus_x_for_x_in_0_1);
- HARD_SWISH: tflite-micro kernels/hard_swish_common.cc (HardSwishPrepare) and
  reference/hard_swish.h (HardSwish for int8), int16 fixed point;
- QUANTIZE int8 -> int8: tflite-micro kernels/quantize_common.cc (PrepareQuantizeReference)
  and reference/requantize.h (Requantize).
"""

from __future__ import annotations

import math

import numpy as np

from firmware_bridge.compiler.prepare import (
    _round_half_away,
    mbqm,
    quantize_multiplier,
    rdbpot,
    srdhm,
)

INT32_MIN, INT32_MAX = -(1 << 31), (1 << 31) - 1


def _trunc_div(a: int, b: int) -> int:
    """C's integer division (toward zero)."""
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b > 0) else -q


def _wrap(v: int) -> int:
    return (v + (1 << 31)) % (1 << 32) - (1 << 31)


def _sat_shift(x: int, exponent: int) -> int:
    """gemmlowp SaturatingRoundingMultiplyByPOT: a left shift that saturates, or a rounding
    right shift."""
    if exponent == 0:
        return x
    if exponent < 0:
        return rdbpot(x, -exponent)
    threshold = (1 << (31 - exponent)) - 1
    if x > threshold:
        return INT32_MAX
    if x < -threshold:
        return INT32_MIN
    return _wrap(x << exponent)


def _mul(a: int, b: int) -> int:
    """FixedPoint * FixedPoint: the raw SaturatingRoundingDoublingHighMul."""
    return srdhm(a, b)


def _exp_quarter(a: int) -> int:
    """exp_on_interval_between_negative_one_quarter_and_0_excl, F0 -> F0."""
    constant_term, one_third = 1895147668, 715827883
    x = _wrap(a + (1 << 28))
    x2 = _mul(x, x)
    x3 = _mul(x2, x)
    x4 = _mul(x2, x2)
    x4_over_4 = _sat_shift(x4, -2)
    poly = _sat_shift(_wrap(_mul(_wrap(x4_over_4 + x3), one_third) + x2), -1)
    return _wrap(constant_term + _mul(constant_term, _wrap(x + poly)))


_BARREL = [(-2, 1672461947), (-1, 1302514674), (0, 790015084), (1, 290630308), (2, 39332535),
           (3, 720401), (4, 242)]


def _exp_on_negative_values(a: int, integer_bits: int) -> int:
    """exp(a) for a <= 0 in Q(integer_bits), result in Q0."""
    frac = 31 - integer_bits
    one_quarter = 1 << (frac - 2)
    mask = one_quarter - 1
    a_mod = _wrap((a & mask) - one_quarter)
    result = _exp_quarter(_sat_shift(a_mod, integer_bits))
    remainder = _wrap(a_mod - a)
    for exponent, multiplier in _BARREL:
        if integer_bits > exponent and remainder & (1 << (frac + exponent)):
            result = _mul(result, multiplier)
    if integer_bits > 5 and a < -(1 << (36 - integer_bits)):
        result = 0
    return INT32_MAX if a == 0 else result


def _newton_reciprocal(a: int) -> tuple[int, int]:
    """The Newton-Raphson iterate of 1 / (1 + a) shared by gemmlowp's two divisions, as
    (x in Q2, half_denominator in Q0)."""
    total = a + INT32_MAX  # RoundingHalfSum(a, One): (sum + sign) / 2, truncated
    half_denominator = _trunc_div(total + (1 if total >= 0 else -1), 2)
    x = _wrap(1515870810 + _mul(half_denominator, -1010580540))
    one_q2 = 1 << 29
    for _ in range(3):
        hd_x = _mul(half_denominator, x)
        x = _wrap(x + _sat_shift(_mul(x, _wrap(one_q2 - hd_x)), 2))
    return x, half_denominator


def _one_over_one_plus_x(a: int) -> int:
    x, _ = _newton_reciprocal(a)
    return _sat_shift(x, 1)  # Rescale<0>(ExactMulByPot<-1>(x)): Q1 -> Q0


def _one_minus_x_over_one_plus_x(a: int) -> int:
    x, _ = _newton_reciprocal(a)
    return _sat_shift(_wrap(x - (1 << 29)), 2)


def gemmlowp_logistic(a: int, integer_bits: int) -> int:
    """gemmlowp logistic: Q(integer_bits) -> Q0."""
    if a == 0:
        return 1 << 30
    abs_a = a if a > 0 else _wrap(-a)
    positive = _one_over_one_plus_x(_exp_on_negative_values(_wrap(-abs_a), integer_bits))
    return positive if a > 0 else _wrap(INT32_MAX - positive)


def gemmlowp_tanh(a: int, integer_bits: int) -> int:
    """gemmlowp tanh: Q(integer_bits) -> Q0."""
    if a == 0:
        return 0
    n = a if a < 0 else _wrap(-a)
    # neg_tanh_on_negative_values: ExactMulByPot<1> makes the same raw a Q(integer_bits + 1).
    t = _one_minus_x_over_one_plus_x(_exp_on_negative_values(n, integer_bits + 1))
    return _wrap(-t) if a < 0 else t


def _input_scaling(scale: float) -> tuple[int, int, int]:
    """LOGISTIC and TANH's Prepare for int8: multiplier, left shift and input radius, with
    4 integer bits (frexp of scale * 2^27, CalculateInputRadius)."""
    real = float(scale) * float(1 << 27)
    q, left_shift = math.frexp(real)
    multiplier = _round_half_away(q * float(1 << 31))
    radius = math.floor(1.0 * 15 * float(1 << 27) / float(1 << left_shift))
    return multiplier, left_shift, radius


def _saturating_table(x_scale: float, x_zero: int, inside) -> np.ndarray:
    """Output byte for each input byte v (index v & 255) of TFLM's int8 LOGISTIC and TANH:
    -128 / 127 beyond the input radius, else ``inside`` of the rescaled input."""
    mult, shift, radius = _input_scaling(x_scale)
    table = np.empty(256, np.int64)
    for v in range(-128, 128):
        x = v - x_zero
        out = -128 if x <= -radius else 127 if x >= radius else inside(mbqm(x, mult, shift))
        table[v & 255] = out
    return table


def logistic_table(x_scale: float, x_zero: int) -> np.ndarray:
    """int8 LOGISTIC (output zero point -128, scale 1/256, as TFLM requires)."""
    return _saturating_table(x_scale, x_zero,
                             lambda q: min(max(rdbpot(gemmlowp_logistic(q, 4), 23) - 128, -128), 127))


def tanh_table(x_scale: float, x_zero: int) -> np.ndarray:
    """int8 TANH (output zero point 0, scale 1/128, as TFLM requires)."""
    return _saturating_table(x_scale, x_zero, lambda q: min(max(rdbpot(gemmlowp_tanh(q, 4), 24), -128), 127))


# --------------------------------------------------------------------------- int16 (hard swish)


def _wrap16(v: int) -> int:
    return (v + (1 << 15)) % (1 << 16) - (1 << 15)


def _srdhm16(a: int, b: int) -> int:
    if a == b == -(1 << 15):
        return (1 << 15) - 1
    ab = a * b
    nudge = (1 << 14) if ab >= 0 else 1 - (1 << 14)
    t = ab + nudge
    return _wrap16(_trunc_div(t, 1 << 15))


def _sdhm16(a: int, b: int) -> int:
    """hard_swish.h SaturatingDoublingHighMul: rounds toward zero."""
    if a == b == -(1 << 15):
        return (1 << 15) - 1
    ab = a * b
    return _wrap16(_trunc_div(ab, 1 << 15))


def _sat_left16(v: int, amount: int) -> int:
    return min(max(v * (1 << amount), -(1 << 15)), (1 << 15) - 1)


def _down_scale16(m: int) -> int:
    """DownScaleInt32ToInt16Multiplier."""
    if m >= INT32_MAX - (1 << 15):
        return (1 << 15) - 1
    return (m + (1 << 15)) >> 16


def hard_swish_table(x_scale: float, x_zero: int, y_scale: float, y_zero: int) -> np.ndarray:
    f32 = np.float32
    hires = f32(1.0 / 128.0) * f32(x_scale)
    out_mult, out_exp = quantize_multiplier(float(hires / f32(y_scale)))
    relu_mult, relu_exp = quantize_multiplier(float(hires / (f32(3.0) / f32(32768.0))))
    out16, relu16 = _down_scale16(out_mult), _down_scale16(relu_mult)
    table = np.empty(256, np.int64)
    for v in range(-128, 128):
        x = _wrap16(v - x_zero)
        hires_x = _wrap16(x * (1 << 7))
        preshift = _srdhm16(hires_x, out16)
        reluish = hires_x
        if relu_exp > 0:
            reluish = _sat_left16(reluish, relu_exp - 1)
        reluish = _srdhm16(reluish, relu16)
        if relu_exp > 0:
            reluish = _sat_left16(reluish, 1)
        if relu_exp < 0:
            reluish = rdbpot(reluish, -relu_exp)
        reluish = _wrap16((reluish + (1 << 15)) >> 1)
        out = rdbpot(_sdhm16(reluish, preshift), -out_exp) + y_zero
        table[v & 255] = min(max(out, -128), 127)
    return table


def requantize_table(x_scale: float, x_zero: int, y_scale: float, y_zero: int) -> np.ndarray:
    mult, shift = quantize_multiplier(float(x_scale) / float(y_scale))
    return np.array([min(max(mbqm((v if v < 128 else v - 256) - x_zero, mult, shift) + y_zero, -128), 127)
                     for v in range(256)], np.int64)
