/* FULLY_CONNECTED, int8.
 *
 * Must match byte for byte: tflite-micro tensorflow/lite/kernels/internal/reference/
 * integer_ops/fully_connected.h (FullyConnected, FullyConnectedPerChannel):
 * acc = sum (filter + filter_offset) * (input + input_offset), + bias,
 * MultiplyByQuantizedMultiplier, + output offset, clamp.
 */
#include "tm_kernels.h"

void tm_fully_connected_s8(const tm_fc_params *p, const int8_t *input, const int8_t *filter,
                           const int32_t *bias, const int32_t *multiplier,
                           const int32_t *shift, int8_t *output) {
  int b, o, d;
  for (b = 0; b < p->batches; ++b) {
    const int8_t *in_row = input + (long)b * p->in_depth;
    for (o = 0; o < p->out_depth; ++o) {
      const int8_t *f_row = filter + (long)o * p->in_depth;
      const int ch = p->per_channel ? o : 0;
      int32_t acc = 0;
      for (d = 0; d < p->in_depth; ++d) {
        acc += ((int32_t)f_row[d] + p->filter_offset) * ((int32_t)in_row[d] + p->input_offset);
      }
      if (bias) acc += bias[o];
      acc = tm_multiply_by_quantized_multiplier(acc, multiplier[ch], shift[ch]);
      acc += p->output_offset;
      if (acc < p->act_min) acc = p->act_min;
      if (acc > p->act_max) acc = p->act_max;
      output[(long)b * p->out_depth + o] = (int8_t)acc;
    }
  }
}
