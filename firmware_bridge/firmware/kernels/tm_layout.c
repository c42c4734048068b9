/* PAD / PADV2 and CONCATENATION on int8: data moved, never changed.
 *
 * Must match byte for byte: tflite-micro tensorflow/lite/micro/kernels/pad.cc with
 * tensorflow/lite/kernels/internal/reference/pad.h (PadImpl: every output element outside
 * the input's box is the pad value, the others the input's, no requantization: TFLM requires
 * the input's and the output's quantization to agree), and
 * tensorflow/lite/kernels/internal/reference/concatenation.h (Concatenation: for each outer
 * index, each input's inner block in turn; int8 inputs share the output's quantization).
 *
 * Declared in the generated model_compiled.c (firmware_bridge/compiler/ops.py).
 */
#include <stdint.h>
#include <string.h>

/* shape[0..3]: the input's 4-D shape; shape[4..7]: padding before each dimension;
 * shape[8..11]: the output's 4-D shape. */
void tm_pad_s8(const int32_t *shape, int8_t value, const int8_t *input, int8_t *output) {
  const int32_t *in = shape, *before = shape + 4, *out = shape + 8;
  long o = 0, i = 0;
  int d0, d1, d2;
  for (d0 = 0; d0 < out[0]; ++d0) {
    for (d1 = 0; d1 < out[1]; ++d1) {
      for (d2 = 0; d2 < out[2]; ++d2, o += out[3]) {
        const int inside = d0 >= before[0] && d0 < before[0] + in[0] && d1 >= before[1] &&
                           d1 < before[1] + in[1] && d2 >= before[2] && d2 < before[2] + in[2];
        if (!inside) {
          memset(output + o, value, (size_t)out[3]);
          continue;
        }
        memset(output + o, value, (size_t)before[3]);
        memcpy(output + o + before[3], input + i, (size_t)in[3]);
        memset(output + o + before[3] + in[3], value, (size_t)(out[3] - before[3] - in[3]));
        i += in[3];
      }
    }
  }
}

/* One input of a concatenation: outer blocks of `inner` bytes, written every `out_inner`
 * bytes of the output from `output` on. */
void tm_concat_part_s8(long outer, long inner, long out_inner, const int8_t *input, int8_t *output) {
  long k;
  for (k = 0; k < outer; ++k) memcpy(output + k * out_inner, input + k * inner, (size_t)inner);
}
