/* MEAN over any set of axes, int8.
 *
 * Must match byte for byte: tflite-micro tensorflow/lite/micro/kernels/reduce_common.cc
 * (EvalIntegerMean) and tensorflow/lite/kernels/internal/reference/reduce.h: when input
 * and output share scale and zero point, Mean<int8_t, int32_t> (sum, then C integer
 * division, truncating); otherwise QuantizedMeanOrSum (sum - zero_point * count, then
 * MultiplyByQuantizedMultiplier with 1/count folded into the multiplier at compile time,
 * + output zero point, clamp).
 */
#include "tm_kernels.h"

static int8_t tm_mean_value(const tm_mean_params *p, int32_t sum) {
  int32_t value;
  if (p->same_quant) return (int8_t)(sum / p->count);
  value = tm_multiply_by_quantized_multiplier(sum - p->input_zero_point * p->count, p->multiplier,
                                              p->shift) +
          p->output_zero_point;
  if (value < -128) value = -128;
  if (value > 127) value = 127;
  return (int8_t)value;
}

/* The global average pool: every axis but the last reduced (or of size 1). Channel c sums
 * every in_shape[3]-th byte from c; one requantization per channel. The same integers as
 * the general loop below, summed in the same order. */
static void tm_mean_channels(const tm_mean_params *p, const int8_t *input, int8_t *output) {
  const int channels = p->in_shape[3];
  const long pixels = (long)p->in_shape[0] * p->in_shape[1] * p->in_shape[2];
  int c;
  for (c = 0; c < channels; ++c) {
    const int8_t *x = input + c;
    int32_t sum = 0;
    long i;
    for (i = 0; i < pixels; ++i, x += channels) sum += *x;
    output[c] = tm_mean_value(p, sum);
  }
}

void tm_mean_s8(const tm_mean_params *p, const int8_t *input, int8_t *output) {
  const int *s = p->in_shape;
  int o[4], r[4], n[4];
  long out_index = 0;
  int d;
  if (!p->reduce[3] && (p->reduce[0] || s[0] == 1) && (p->reduce[1] || s[1] == 1) &&
      (p->reduce[2] || s[2] == 1)) {
    tm_mean_channels(p, input, output);
    return;
  }
  for (d = 0; d < 4; ++d) n[d] = p->reduce[d] ? 1 : s[d]; /* output extent */
  for (o[0] = 0; o[0] < n[0]; ++o[0])
    for (o[1] = 0; o[1] < n[1]; ++o[1])
      for (o[2] = 0; o[2] < n[2]; ++o[2])
        for (o[3] = 0; o[3] < n[3]; ++o[3]) {
          int32_t sum = 0;
          for (r[0] = 0; r[0] < (p->reduce[0] ? s[0] : 1); ++r[0])
            for (r[1] = 0; r[1] < (p->reduce[1] ? s[1] : 1); ++r[1])
              for (r[2] = 0; r[2] < (p->reduce[2] ? s[2] : 1); ++r[2])
                for (r[3] = 0; r[3] < (p->reduce[3] ? s[3] : 1); ++r[3]) {
                  const long i0 = p->reduce[0] ? r[0] : o[0];
                  const long i1 = p->reduce[1] ? r[1] : o[1];
                  const long i2 = p->reduce[2] ? r[2] : o[2];
                  const long i3 = p->reduce[3] ? r[3] : o[3];
                  sum += input[((i0 * s[1] + i1) * s[2] + i2) * s[3] + i3];
                }
          output[out_index++] = tm_mean_value(p, sum);
        }
}
