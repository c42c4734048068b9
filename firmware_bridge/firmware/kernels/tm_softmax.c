/* SOFTMAX, int8 in and out, in gemmlowp fixed point.
 *
 * Must match byte for byte: tflite-micro tensorflow/lite/kernels/internal/reference/
 * softmax.h (the quantized Softmax<int8_t, int8_t>), common.h (GetReciprocal,
 * MultiplyByQuantizedMultiplierGreaterThanOne) and gemmlowp fixedpoint/fixedpoint.h
 * (exp_on_negative_values, one_over_one_plus_x_for_x_in_0_1, Rescale, RoundingHalfSum).
 * Raw int32 values stand for gemmlowp's FixedPoint<int32_t, N>; N is in the comments.
 *
 * Safe in place: the last pass writes element c after reading element c only.
 */
#include "tm_kernels.h"

#define TM_SRDHM tm_saturating_rounding_doubling_high_mul
#define TM_RDBPOT tm_rounding_divide_by_pot

static int32_t tm_add_wrap(int32_t a, int32_t b) { return (int32_t)((uint32_t)a + (uint32_t)b); }
static int32_t tm_sub_wrap(int32_t a, int32_t b) { return (int32_t)((uint32_t)a - (uint32_t)b); }

/* SaturatingRoundingMultiplyByPOT<exponent> for exponent > 0 (gemmlowp). */
static int32_t tm_saturating_shift_left(int32_t x, int exponent) {
  const int32_t threshold = (int32_t)(((int64_t)1 << (31 - exponent)) - 1);
  if (x > threshold) return INT32_MAX;
  if (x < -threshold) return INT32_MIN;
  return (int32_t)((uint32_t)x << exponent);
}

/* exp(a) for a in [-1/4, 0), a and result Q0.31. */
static int32_t tm_exp_on_interval(int32_t a) {
  const int32_t constant_term = 1895147668;    /* exp(-1/8) */
  const int32_t constant_1_over_3 = 715827883; /* 1/3 */
  const int32_t x = tm_add_wrap(a, (int32_t)1 << 28); /* a + 1/8 */
  const int32_t x2 = TM_SRDHM(x, x);
  const int32_t x3 = TM_SRDHM(x2, x);
  const int32_t x4 = TM_SRDHM(x2, x2);
  const int32_t x4_over_4 = TM_RDBPOT(x4, 2);
  const int32_t poly = TM_RDBPOT(
      tm_add_wrap(TM_SRDHM(tm_add_wrap(x4_over_4, x3), constant_1_over_3), x2), 1);
  return tm_add_wrap(constant_term, TM_SRDHM(constant_term, tm_add_wrap(x, poly)));
}

/* exp(a) for a <= 0; a is Q5.26 (5 integer bits), the result Q0.31. */
static int32_t tm_exp_on_negative_values(int32_t a) {
  static const int32_t multipliers[7] = {1672461947, 1302514674, 790015084, 290630308,
                                         39332535,   720401,     242};
  const int fractional_bits = 26;
  const int32_t one_quarter = (int32_t)1 << (fractional_bits - 2);
  const int32_t mask = one_quarter - 1;
  const int32_t a_mod_quarter_minus_one_quarter = tm_sub_wrap(a & mask, one_quarter);
  int32_t result = tm_exp_on_interval(tm_saturating_shift_left(a_mod_quarter_minus_one_quarter, 5));
  const int32_t remainder = tm_sub_wrap(a_mod_quarter_minus_one_quarter, a);
  int exponent;
  for (exponent = -2; exponent <= 4; ++exponent) {
    /* kIntegerBits (5) > exponent for all seven: each barrel stage applies. */
    if (remainder & ((int32_t)1 << (fractional_bits + exponent))) {
      result = TM_SRDHM(result, multipliers[exponent + 2]);
    }
  }
  if (a == 0) result = INT32_MAX; /* FixedPoint<int32_t, 0>::One() */
  return result;
}

/* gemmlowp RoundingHalfSum for int32. */
static int32_t tm_rounding_half_sum(int32_t a, int32_t b) {
  const int64_t sum = (int64_t)a + (int64_t)b;
  const int64_t sign = sum >= 0 ? 1 : -1;
  return (int32_t)((sum + sign) / 2);
}

/* 1 / (1 + a) for a in (0, 1): a Q0.31, result Q0.31. */
static int32_t tm_one_over_one_plus_x(int32_t a) {
  const int32_t half_denominator = tm_rounding_half_sum(a, INT32_MAX); /* Q0.31 */
  const int32_t constant_48_over_17 = 1515870810;                      /* Q2.29 */
  const int32_t constant_neg_32_over_17 = -1010580540;                 /* Q2.29 */
  const int32_t f2_one = (int32_t)1 << 29;
  int32_t x = tm_add_wrap(constant_48_over_17, TM_SRDHM(half_denominator, constant_neg_32_over_17));
  int i;
  for (i = 0; i < 3; ++i) {
    const int32_t half_denominator_times_x = TM_SRDHM(half_denominator, x);     /* Q2.29 */
    const int32_t one_minus = tm_sub_wrap(f2_one, half_denominator_times_x);     /* Q2.29 */
    x = tm_add_wrap(x, tm_saturating_shift_left(TM_SRDHM(x, one_minus), 2));     /* Q4 -> Q2 */
  }
  return tm_saturating_shift_left(x, 1); /* ExactMulByPot<-1> then Rescale<0>: Q1 -> Q0 */
}

static int tm_clz32(uint32_t x) {
  int n = 0;
  if (x == 0) return 32;
  while (!(x & 0x80000000u)) {
    x <<= 1;
    ++n;
  }
  return n;
}

static int32_t tm_scaled_diff(const tm_softmax_params *p, int32_t diff) {
  /* MultiplyByQuantizedMultiplierGreaterThanOne */
  return TM_SRDHM((int32_t)((uint32_t)diff << p->input_left_shift), p->input_multiplier);
}

void tm_softmax_s8(const tm_softmax_params *p, const int8_t *input, int8_t *output) {
  int i, c;
  for (i = 0; i < p->outer; ++i) {
    const int8_t *in = input + (long)i * p->depth;
    int8_t *out = output + (long)i * p->depth;
    int32_t max_in_row = -128;
    int32_t sum_of_exps = 0; /* Q12.19 */
    int headroom_plus_one, num_bits_over_unit, exponent;
    int32_t shifted_scale;
    for (c = 0; c < p->depth; ++c) {
      if (in[c] > max_in_row) max_in_row = in[c];
    }
    for (c = 0; c < p->depth; ++c) {
      const int32_t diff = (int32_t)in[c] - max_in_row;
      if (diff >= p->diff_min) {
        const int32_t e = tm_exp_on_negative_values(tm_scaled_diff(p, diff));
        sum_of_exps = tm_add_wrap(sum_of_exps, TM_RDBPOT(e, 12)); /* Rescale<12> */
      }
    }
    /* GetReciprocal(sum_of_exps, 12, &num_bits_over_unit) */
    headroom_plus_one = tm_clz32((uint32_t)sum_of_exps);
    num_bits_over_unit = 12 - headroom_plus_one;
    shifted_scale = tm_one_over_one_plus_x(
        (int32_t)(((uint32_t)sum_of_exps << headroom_plus_one) - ((uint32_t)1 << 31)));
    exponent = num_bits_over_unit + 31 - 8;
    for (c = 0; c < p->depth; ++c) {
      const int32_t diff = (int32_t)in[c] - max_in_row;
      if (diff >= p->diff_min) {
        const int32_t e = tm_exp_on_negative_values(tm_scaled_diff(p, diff));
        int32_t v = TM_RDBPOT(TM_SRDHM(shifted_scale, e), exponent) - 128;
        if (v < -128) v = -128;
        if (v > 127) v = 127;
        out[c] = (int8_t)v;
      } else {
        out[c] = -128;
      }
    }
  }
}
