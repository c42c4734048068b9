/* Fixed-point helpers: TFLM's requantization, integer for integer.
 *
 * Must match byte for byte:
 *   gemmlowp fixedpoint/fixedpoint.h (SaturatingRoundingDoublingHighMul, RoundingDivideByPOT),
 *   tflite-micro tensorflow/lite/kernels/internal/common.h (MultiplyByQuantizedMultiplier,
 *   the default build: TFLITE_SINGLE_ROUNDING undefined, so two roundings).
 */
#include "tm_kernels.h"

int32_t tm_saturating_rounding_doubling_high_mul(int32_t a, int32_t b) {
  int64_t ab;
  int32_t nudge;
  if (a == b && a == INT32_MIN) return INT32_MAX; /* -1 * -1 saturates */
  ab = (int64_t)a * (int64_t)b;
  nudge = ab >= 0 ? (1 << 30) : (1 - (1 << 30));
  /* C99 division truncates toward zero, as gemmlowp's does. */
  return (int32_t)((ab + nudge) / ((int64_t)1 << 31));
}

int32_t tm_rounding_divide_by_pot(int32_t x, int exponent) {
  const int32_t mask = (int32_t)(((int64_t)1 << exponent) - 1);
  const int32_t remainder = x & mask;
  const int32_t threshold = (mask >> 1) + (x < 0 ? 1 : 0);
  return (x >> exponent) + (remainder > threshold ? 1 : 0);
}

int32_t tm_multiply_by_quantized_multiplier(int32_t x, int32_t multiplier, int shift) {
  const int left_shift = shift > 0 ? shift : 0;
  const int right_shift = shift > 0 ? 0 : -shift;
  /* x * (1 << left_shift) wraps in TFLM's C++ as it does here, without undefined behaviour. */
  const int32_t shifted = (int32_t)((uint32_t)x << left_shift);
  return tm_rounding_divide_by_pot(tm_saturating_rounding_doubling_high_mul(shifted, multiplier),
                                   right_shift);
}
