/* The fast kernels' shared pieces: TFLM's requantization in few instructions, unaligned
 * 4-byte reads, and the Cortex-M DSP extension (ACLE, arm_acle.h) when the target has it.
 *
 * Must match byte for byte tflite-micro tensorflow/lite/kernels/internal/common.h
 * MultiplyByQuantizedMultiplier (default build, two roundings) and gemmlowp
 * fixedpoint/fixedpoint.h SaturatingRoundingDoublingHighMul and RoundingDivideByPOT,
 * which tm_common.c follows line for line. tests/test_kernels.py checks tm_requantize
 * against tm_multiply_by_quantized_multiplier on random and edge values, on the host and
 * on the emulated Cortex-M4.
 */
#ifndef TM_FAST_H_
#define TM_FAST_H_

#include <stdint.h>
#include <string.h>

#include "tm_kernels.h"

#if defined(__GNUC__)
#define TM_INLINE static inline __attribute__((always_inline))
#else
#define TM_INLINE static inline
#endif

/* Unroll the next loop fully when its trip count is a constant (a layer's window): GCC's -O2
 * does not peel loops that grow the code. */
#if defined(__GNUC__) && !defined(__clang__)
#define TM_UNROLL _Pragma("GCC unroll 16")
#else
#define TM_UNROLL
#endif

#if defined(__ARM_FEATURE_DSP) && __ARM_FEATURE_DSP
#include <arm_acle.h>
#define TM_DSP 1
#else
#define TM_DSP 0
#endif

/* Inline-assembly steps that keep many values in registers: not at -O0, where GCC keeps a
 * frame pointer and every variable in memory and cannot find them the registers. */
#if TM_DSP && defined(__OPTIMIZE__)
#define TM_DSP_ASM 1
#else
#define TM_DSP_ASM 0
#endif

/* Four bytes from any address (one LDR on a Cortex-M4, which allows unaligned words). */
TM_INLINE uint32_t tm_read4(const int8_t *p) {
  uint32_t v;
  memcpy(&v, p, 4);
  return v;
}

/* SaturatingRoundingDoublingHighMul(a, m) for m >= 0 (a multiplier from QuantizeMultiplier,
 * so the one saturating case a == m == INT32_MIN cannot occur): gemmlowp adds a nudge of
 * 2^30 (or 1 - 2^30 when a*m < 0) and divides by 2^31 truncating toward zero. For a*m < 0
 * truncation toward zero is floor((a*m + 1 - 2^30 + 2^31 - 1) / 2^31), the same
 * floor((a*m + 2^30) / 2^31) as for a*m >= 0: one rounding shift of the 64-bit product. */
TM_INLINE int32_t tm_srdhm_pos(int32_t a, int32_t m) {
  return (int32_t)(((int64_t)a * m + ((int64_t)1 << 30)) >> 31);
}

/* RoundingDivideByPOT(x, e), 0 <= e <= 31: round half away from zero. */
TM_INLINE int32_t tm_rdbpot(int32_t x, int e) {
  const int32_t mask = (int32_t)(((uint32_t)1 << e) - 1u);
  const int32_t threshold = (mask >> 1) + (x < 0 ? 1 : 0);
  return (x >> e) + ((x & mask) > threshold ? 1 : 0);
}

/* MultiplyByQuantizedMultiplier(acc, multiplier, shift). */
TM_INLINE int32_t tm_requantize(int32_t acc, int32_t multiplier, int shift) {
  const int left = shift > 0 ? shift : 0;
  const int right = shift > 0 ? 0 : -shift;
  return tm_rdbpot(tm_srdhm_pos((int32_t)((uint32_t)acc << left), multiplier), right);
}

TM_INLINE int8_t tm_clamp8(int32_t v, int32_t lo, int32_t hi) {
#if TM_DSP
  if (lo == -128 && hi == 127) return (int8_t)__ssat(v, 8); /* the whole int8 range: one SSAT */
#endif
  return (int8_t)(v < lo ? lo : (v > hi ? hi : v));
}

/* MultiplyByQuantizedMultiplier(acc, m, -e) for 1 <= e <= 31, m >= 0 and |acc| < 2^30.
 * Then 2 * acc fits in int32 and tm_srdhm_pos(acc, m) = floor((acc * m + 2^30) / 2^31)
 * = floor((2 * acc * m + 2^31) / 2^32): SMMULR (the high word of the product, rounded) on a
 * core with the DSP extension. The rounding divide by 2^e, half away from zero, is
 * (x + 2^(e-1) - (x < 0)) >> e: for x >= 0 floor((x + 2^(e-1)) / 2^e); for x < 0 the -1
 * moves the ties (x + 2^(e-1) a multiple of 2^e) down, away from zero, and nothing else
 * (|x| < 2^30: no overflow). tests/test_kernels.py checks it against
 * tm_multiply_by_quantized_multiplier on both paths. */
TM_INLINE int32_t tm_requantize_r(int32_t acc, int32_t m, int e) {
#if defined(__ARM_FEATURE_DSP) && __ARM_FEATURE_DSP
  int32_t x;
  __asm__("smmulr %0, %1, %2" : "=r"(x) : "r"(acc * 2), "r"(m));
#else
  const int32_t x = tm_srdhm_pos(acc, m);
#endif
  return (x + (int32_t)(1u << (e - 1)) - (int32_t)((uint32_t)x >> 31)) >> e;
}

/* A conv kernel's output byte for channel c: requantized, offset, clamped. */
TM_INLINE int8_t tm_conv_out(const tm_conv_params *p, int32_t acc, int32_t m, int32_t shift) {
  const int32_t v = p->requant_fast ? tm_requantize_r(acc, m, -shift) : tm_requantize(acc, m, shift);
  return tm_clamp8(v + p->output_offset, p->act_min, p->act_max);
}
#define TM_OUT(acc, c) tm_conv_out(p, (acc), multiplier[c], shift[c])

#if TM_DSP
/* Bytes 1 and 3 of x, sign-extended into two halfwords (SXTB16 with ROR #8). */
TM_INLINE int32_t tm_sxtb16_ror8(uint32_t x) {
  int32_t r;
  __asm__("sxtb16 %0, %1, ror #8" : "=r"(r) : "r"(x));
  return r;
}

#endif

#endif /* TM_FAST_H_ */
