/* ADD, SUB, MUL on int8 with 4-D broadcasting.
 *
 * Must match byte for byte: tflite-micro tensorflow/lite/kernels/internal/reference/
 * integer_ops/add.h (AddFunc), reference/sub.h (the int8 SubFunc) and integer_ops/mul.h
 * (MulElementwise). Broadcasting as TFLite defines it (numpy rules); each output element
 * is computed from its two inputs alone, so the order of TFLM's broadcast loops does not
 * change a byte.
 *
 * Safe in place on an input of the output's shape: element i is written after it is read.
 */
#include "tm_kernels.h"

static int32_t tm_clamp(int32_t v, int32_t lo, int32_t hi) {
  return v < lo ? lo : (v > hi ? hi : v);
}

/* MultiplyByQuantizedMultiplierSmallerThanOneExp: shift <= 0. */
static int32_t tm_mbqm_smaller_than_one(int32_t x, int32_t multiplier, int shift) {
  return tm_rounding_divide_by_pot(tm_saturating_rounding_doubling_high_mul(x, multiplier),
                                   -shift);
}

#define TM_BROADCAST_LOOP(BODY)                                                      \
  do {                                                                               \
    int i0, i1, i2, i3;                                                              \
    long o = 0;                                                                      \
    for (i0 = 0; i0 < p->out_shape[0]; ++i0)                                         \
      for (i1 = 0; i1 < p->out_shape[1]; ++i1)                                       \
        for (i2 = 0; i2 < p->out_shape[2]; ++i2)                                     \
          for (i3 = 0; i3 < p->out_shape[3]; ++i3, ++o) {                            \
            const int32_t x = in1[(long)i0 * p->in1_strides[0] + (long)i1 * p->in1_strides[1] + \
                                  (long)i2 * p->in1_strides[2] + (long)i3 * p->in1_strides[3]]; \
            const int32_t y = in2[(long)i0 * p->in2_strides[0] + (long)i1 * p->in2_strides[1] + \
                                  (long)i2 * p->in2_strides[2] + (long)i3 * p->in2_strides[3]]; \
            BODY                                                                     \
          }                                                                          \
  } while (0)

static int32_t tm_scaled_input(int32_t v, int32_t offset, int left_shift, int32_t multiplier,
                               int shift) {
  const int32_t shifted = (int32_t)((uint32_t)(offset + v) << left_shift);
  return tm_mbqm_smaller_than_one(shifted, multiplier, shift);
}

void tm_add_s8(const tm_binary_params *p, const int8_t *in1, const int8_t *in2, int8_t *out) {
  TM_BROADCAST_LOOP({
    const int32_t a = tm_scaled_input(x, p->input1_offset, p->left_shift,
                                      p->input1_multiplier, p->input1_shift);
    const int32_t b = tm_scaled_input(y, p->input2_offset, p->left_shift,
                                      p->input2_multiplier, p->input2_shift);
    const int32_t raw = tm_mbqm_smaller_than_one(a + b, p->output_multiplier, p->output_shift) +
                        p->output_offset;
    out[o] = (int8_t)tm_clamp(raw, p->act_min, p->act_max);
  });
}

void tm_sub_s8(const tm_binary_params *p, const int8_t *in1, const int8_t *in2, int8_t *out) {
  TM_BROADCAST_LOOP({
    const int32_t a = tm_scaled_input(x, p->input1_offset, p->left_shift,
                                      p->input1_multiplier, p->input1_shift);
    const int32_t b = tm_scaled_input(y, p->input2_offset, p->left_shift,
                                      p->input2_multiplier, p->input2_shift);
    const int32_t raw = tm_mbqm_smaller_than_one(a - b, p->output_multiplier, p->output_shift) +
                        p->output_offset;
    out[o] = (int8_t)tm_clamp(raw, p->act_min, p->act_max);
  });
}

void tm_mul_s8(const tm_binary_params *p, const int8_t *in1, const int8_t *in2, int8_t *out) {
  TM_BROADCAST_LOOP({
    const int32_t prod = (p->input1_offset + x) * (p->input2_offset + y);
    const int32_t raw = p->output_offset +
                        tm_multiply_by_quantized_multiplier(prod, p->output_multiplier,
                                                            p->output_shift);
    out[o] = (int8_t)tm_clamp(raw, p->act_min, p->act_max);
  });
}

/* ADD, SUB or MUL with one constant operand, as a table computed at compile time
 * (firmware_bridge/compiler/ops.py, with the arithmetic above in Python integers): the
 * output of element i is table[c][input byte], c = i % period the constant's element.
 * Safe in place: element i is written after it is read. */
void tm_lut_s8(const tm_lut_params *p, const int8_t *input, const int8_t *table, int8_t *output) {
  long i = 0;
  int o, c;
  if (p->period == 1) {
    const long n = (long)p->outer;
    for (i = 0; i < n; ++i) output[i] = table[(uint8_t)input[i]];
    return;
  }
  for (o = 0; o < p->outer; ++o) {
    const int8_t *t = table;
    for (c = 0; c < p->period; ++c, ++i, t += 256) output[i] = t[(uint8_t)input[i]];
  }
}
