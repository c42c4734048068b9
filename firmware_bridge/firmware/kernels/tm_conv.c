/* CONV_2D and DEPTHWISE_CONV_2D, int8 per-channel.
 *
 * Must match byte for byte: tflite-micro tensorflow/lite/kernels/internal/reference/
 * integer_ops/conv.h (ConvPerChannel) and depthwise_conv.h (DepthwiseConvPerChannel):
 * acc = sum filter * (input + input_offset) over the window inside the image (padding
 * contributes nothing), + bias, MultiplyByQuantizedMultiplier per channel, + output offset,
 * clamp to the activation range.
 */
#include "tm_kernels.h"

static int32_t tm_clamp(int32_t v, int32_t lo, int32_t hi) {
  return v < lo ? lo : (v > hi ? hi : v);
}

void tm_conv2d_s8(const tm_conv_params *p, const int8_t *input, const int8_t *filter,
                  const int32_t *bias, const int32_t *multiplier, const int32_t *shift,
                  int8_t *output) {
  int oy, ox, oc, ky, kx, ic;
  for (oy = 0; oy < p->out_h; ++oy) {
    const int in_y0 = oy * p->stride_h - p->pad_h;
    for (ox = 0; ox < p->out_w; ++ox) {
      const int in_x0 = ox * p->stride_w - p->pad_w;
      for (oc = 0; oc < p->out_c; ++oc) {
        int32_t acc = 0;
        for (ky = 0; ky < p->filter_h; ++ky) {
          const int iy = in_y0 + p->dilation_h * ky;
          if (iy < 0 || iy >= p->in_h) continue;
          for (kx = 0; kx < p->filter_w; ++kx) {
            const int ix = in_x0 + p->dilation_w * kx;
            const int8_t *in_px;
            const int8_t *f_px;
            if (ix < 0 || ix >= p->in_w) continue;
            in_px = input + ((long)iy * p->in_w + ix) * p->in_c;
            f_px = filter + (((long)oc * p->filter_h + ky) * p->filter_w + kx) * p->in_c;
            for (ic = 0; ic < p->in_c; ++ic) {
              acc += (int32_t)f_px[ic] * ((int32_t)in_px[ic] + p->input_offset);
            }
          }
        }
        if (bias) acc += bias[oc];
        acc = tm_multiply_by_quantized_multiplier(acc, multiplier[oc], shift[oc]);
        acc += p->output_offset;
        output[((long)oy * p->out_w + ox) * p->out_c + oc] =
            (int8_t)tm_clamp(acc, p->act_min, p->act_max);
      }
    }
  }
}

void tm_depthwise_conv2d_s8(const tm_conv_params *p, const int8_t *input,
                            const int8_t *filter, const int32_t *bias,
                            const int32_t *multiplier, const int32_t *shift,
                            int8_t *output) {
  int oy, ox, ic, m, ky, kx;
  for (oy = 0; oy < p->out_h; ++oy) {
    const int in_y0 = oy * p->stride_h - p->pad_h;
    for (ox = 0; ox < p->out_w; ++ox) {
      const int in_x0 = ox * p->stride_w - p->pad_w;
      for (ic = 0; ic < p->in_c; ++ic) {
        for (m = 0; m < p->depth_multiplier; ++m) {
          const int oc = m + ic * p->depth_multiplier;
          int32_t acc = 0;
          for (ky = 0; ky < p->filter_h; ++ky) {
            const int iy = in_y0 + p->dilation_h * ky;
            if (iy < 0 || iy >= p->in_h) continue;
            for (kx = 0; kx < p->filter_w; ++kx) {
              const int ix = in_x0 + p->dilation_w * kx;
              int32_t in_val, f_val;
              if (ix < 0 || ix >= p->in_w) continue;
              in_val = input[((long)iy * p->in_w + ix) * p->in_c + ic];
              f_val = filter[((long)ky * p->filter_w + kx) * p->out_c + oc];
              acc += f_val * (in_val + p->input_offset);
            }
          }
          if (bias) acc += bias[oc];
          acc = tm_multiply_by_quantized_multiplier(acc, multiplier[oc], shift[oc]);
          acc += p->output_offset;
          output[((long)oy * p->out_w + ox) * p->out_c + oc] =
              (int8_t)tm_clamp(acc, p->act_min, p->act_max);
        }
      }
    }
  }
}
