/* DEPTHWISE_CONV_2D, int8 per-channel, depth multiplier 1, dilation 1: the fast path.
 *
 * Must match byte for byte what tm_conv.c's tm_depthwise_conv2d_s8 computes, i.e.
 * tflite-micro tensorflow/lite/kernels/internal/reference/integer_ops/depthwise_conv.h
 * (DepthwiseConvPerChannel): for output channel c (= input channel c when the depth
 * multiplier is 1), acc = bias[c] + sum filter[ky][kx][c] * (input + input_offset) over the
 * taps inside the image; MultiplyByQuantizedMultiplier per channel; + output offset; clamp.
 *
 * As in tm_conv_fast.h, a window wholly inside the image starts from
 * bias_eff[c] = bias[c] + input_offset * sum over taps of filter[.][.][c] (compile time, int32
 * wrapping as the C sums wrap) and adds sum filter * input: the same integers in another order.
 * A window that crosses the border is copied, four channels at a time, into a small buffer in
 * which the taps outside the image hold the input zero point (= -input_offset): their
 * products filter * zero_point cancel their share of bias_eff exactly, so every pixel runs the
 * same inner code. (CMSIS-NN's arm_depthwise_conv_s8_opt pads its im2col buffer the same way
 * for the same reason; this code is our own.)
 *
 * NHWC input and [1][kh][kw][C] filter keep the channels contiguous: four channels are one
 * 32-bit load of input and one of filter per tap. With the DSP extension SXTB16 splits each
 * word into channels (0, 2) and (1, 3), and SMLABB/SMLATT accumulate the bottom and top
 * halfword products (16 x 16 -> 32 bits, exact). Elsewhere plain C99, the same sums.
 *
 * A header inlined into each call with the layer's parameters as constants (see
 * tm_conv_fast.h): the tap loops unroll, their offsets become immediates.
 */
#ifndef TM_DWCONV_FAST_H_
#define TM_DWCONV_FAST_H_

#include "tm_fast.h"

/* The largest window the fast path takes (its border buffer is TM_DW_MAX_TAPS x 4 bytes of stack). */
#define TM_DW_MAX_TAPS 64

/* a[0..3] += sum over the kh x kw taps of w[tap][0..3] * x[tap][0..3]. x's rows are row_step
 * bytes apart and its taps tap_step bytes apart; w's taps are w_step bytes apart. On the DSP
 * path the filter comes as wx: for each tap two words, channels (0, 2) and (1, 3) as
 * sign-extended halfwords (what SXTB16 would make of the filter word, done at compile time). */
TM_INLINE void tm_dw_group4(const int8_t *x, long row_step, int tap_step, const int8_t *w, int w_step,
                            const int32_t *wx, int kh, int kw, int32_t *a) {
  int32_t a0 = a[0], a1 = a[1], a2 = a[2], a3 = a[3];
  int ky, kx;
  TM_UNROLL
  for (ky = 0; ky < kh; ++ky) {
    TM_UNROLL
    for (kx = 0; kx < kw; ++kx) {
      const int8_t *xp = x + ky * row_step + kx * tap_step;
#if TM_DSP
      const uint32_t xv = tm_read4(xp);
      const int32_t x02 = __sxtb16(xv), x13 = tm_sxtb16_ror8(xv);
      const int32_t w02 = wx[2 * (ky * kw + kx)], w13 = wx[2 * (ky * kw + kx) + 1];
      (void)w;
      (void)w_step;
      a0 = __smlabb(x02, w02, a0);
      a2 = __smlatt(x02, w02, a2);
      a1 = __smlabb(x13, w13, a1);
      a3 = __smlatt(x13, w13, a3);
#else
      const int8_t *wp = w + (ky * kw + kx) * w_step;
      (void)wx;
      a0 += (int32_t)wp[0] * xp[0];
      a1 += (int32_t)wp[1] * xp[1];
      a2 += (int32_t)wp[2] * xp[2];
      a3 += (int32_t)wp[3] * xp[3];
#endif
    }
  }
  a[0] = a0;
  a[1] = a1;
  a[2] = a2;
  a[3] = a3;
}

/* The last C % 4 channels of a pixel, one at a time (taps outside the image at the zero point). */
TM_INLINE void tm_dw_tail(const tm_conv_params *p, const int8_t *input, int in_y0, int in_x0, const int8_t *filter,
                          const int32_t *bias_eff, const int32_t *multiplier, const int32_t *shift, int8_t *out) {
  const int C = p->in_c, kh = p->filter_h, kw = p->filter_w;
  int c, ky, kx;
  for (c = C / 4 * 4; c < C; ++c) {
    int32_t acc = bias_eff[c];
    for (ky = 0; ky < kh; ++ky) {
      const int iy = in_y0 + ky;
      for (kx = 0; kx < kw; ++kx) {
        const int ix = in_x0 + kx;
        const int32_t v = (iy >= 0 && iy < p->in_h && ix >= 0 && ix < p->in_w)
                              ? input[((long)iy * p->in_w + ix) * C + c] : -p->input_offset;
        acc += (int32_t)filter[(ky * kw + kx) * C + c] * v;
      }
    }
    out[c] = TM_OUT(acc, c);
  }
}

/* One output pixel whose window lies inside the image (x: its top-left tap), all channels. */
TM_INLINE void tm_dw_pixel_inside(const tm_conv_params *p, const int8_t *x, const int8_t *filter,
                                  const int32_t *filter_x, const int32_t *bias_eff, const int32_t *multiplier,
                                  const int32_t *shift, int8_t *out) {
  const int C = p->in_c, kh = p->filter_h, kw = p->filter_w;
  const long row_step = (long)p->in_w * C;
  int c, k;
  for (c = 0; c + 4 <= C; c += 4) {
    int32_t a[4] = {bias_eff[c], bias_eff[c + 1], bias_eff[c + 2], bias_eff[c + 3]};
    tm_dw_group4(x + c, row_step, C, filter + c, C, filter_x + 2 * kh * kw * (c / 4), kh, kw, a);
    TM_UNROLL
    for (k = 0; k < 4; ++k) out[c + k] = TM_OUT(a[k], c + k);
  }
}

/* One output pixel whose window crosses the border: each tap reads from the image, or, outside
 * it, from pad (C bytes of the input zero point), through a table of row pointers. */
TM_INLINE void tm_dw_pixel_border(const tm_conv_params *p, const int8_t *input, int in_y0, int in_x0,
                                  const int8_t *pad, const int8_t *filter, const int32_t *filter_x,
                                  const int32_t *bias_eff, const int32_t *multiplier, const int32_t *shift,
                                  int8_t *out) {
  const int C = p->in_c, kh = p->filter_h, kw = p->filter_w;
  const int8_t *tap[TM_DW_MAX_TAPS];
  int c, k, ky, kx;
  (void)filter; /* the portable path's; the DSP path reads filter_x */
  for (ky = 0; ky < kh; ++ky) {
    const int iy = in_y0 + ky;
    for (kx = 0; kx < kw; ++kx) {
      const int ix = in_x0 + kx;
      tap[ky * kw + kx] = (iy >= 0 && iy < p->in_h && ix >= 0 && ix < p->in_w)
                              ? input + ((long)iy * p->in_w + ix) * C : pad;
    }
  }
  for (c = 0; c + 4 <= C; c += 4) {
    const int32_t *wx = filter_x + 2 * kh * kw * (c / 4);
    int32_t a0 = bias_eff[c], a1 = bias_eff[c + 1], a2 = bias_eff[c + 2], a3 = bias_eff[c + 3];
    int32_t a[4];
    TM_UNROLL
    for (k = 0; k < kh * kw; ++k) {
      const int8_t *xp = tap[k] + c;
#if TM_DSP
      const uint32_t xv = tm_read4(xp);
      const int32_t x02 = __sxtb16(xv), x13 = tm_sxtb16_ror8(xv);
      a0 = __smlabb(x02, wx[2 * k], a0);
      a2 = __smlatt(x02, wx[2 * k], a2);
      a1 = __smlabb(x13, wx[2 * k + 1], a1);
      a3 = __smlatt(x13, wx[2 * k + 1], a3);
#else
      const int8_t *wp = filter + k * C + c;
      (void)wx;
      a0 += (int32_t)wp[0] * xp[0];
      a1 += (int32_t)wp[1] * xp[1];
      a2 += (int32_t)wp[2] * xp[2];
      a3 += (int32_t)wp[3] * xp[3];
#endif
    }
    a[0] = a0;
    a[1] = a1;
    a[2] = a2;
    a[3] = a3;
    TM_UNROLL
    for (k = 0; k < 4; ++k) out[c + k] = TM_OUT(a[k], c + k);
  }
}

TM_INLINE void tm_depthwise_conv2d_fast_s8(const tm_conv_params *p, const int8_t *input, const int8_t *pad,
                                           const int8_t *filter, const int32_t *filter_x, const int32_t *bias_eff, const int32_t *multiplier,
                                           const int32_t *shift, int8_t *output) {
  int oy, ox;
  for (oy = 0; oy < p->out_h; ++oy) {
    const int in_y0 = oy * p->stride_h - p->pad_h;
    const int rows_inside = in_y0 >= 0 && in_y0 + p->filter_h <= p->in_h;
    int8_t *out = output + (long)oy * p->out_w * p->out_c;
    for (ox = 0; ox < p->out_w; ++ox, out += p->out_c) {
      const int in_x0 = ox * p->stride_w - p->pad_w;
      if (rows_inside && in_x0 >= 0 && in_x0 + p->filter_w <= p->in_w) {
        tm_dw_pixel_inside(p, input + ((long)in_y0 * p->in_w + in_x0) * p->in_c, filter, filter_x, bias_eff,
                           multiplier, shift, out);
      } else {
        tm_dw_pixel_border(p, input, in_y0, in_x0, pad, filter, filter_x, bias_eff, multiplier, shift, out);
      }
      if (p->in_c % 4) tm_dw_tail(p, input, in_y0, in_x0, filter, bias_eff, multiplier, shift, out);
    }
  }
}

#endif /* TM_DWCONV_FAST_H_ */
