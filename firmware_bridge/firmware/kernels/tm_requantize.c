/* QUANTIZE int8 -> int8 (a change of scale and zero point).
 *
 * Must match byte for byte: tflite-micro tensorflow/lite/kernels/internal/reference/
 * requantize.h (Requantize): (input - input_zp) * effective scale, + output_zp, clamp.
 */
#include "tm_kernels.h"

void tm_requantize_s8(const tm_requantize_params *p, const int8_t *input, int8_t *output) {
  int i;
  for (i = 0; i < p->size; ++i) {
    int32_t v = tm_multiply_by_quantized_multiplier((int32_t)input[i] - p->input_zero_point,
                                                    p->multiplier, p->shift) +
                p->output_zero_point;
    if (v < -128) v = -128;
    if (v > 127) v = 127;
    output[i] = (int8_t)v;
  }
}
