/* CONV_2D, int8 per-channel, dilation 1: the fast path.
 *
 * Must match byte for byte what tm_conv.c computes, i.e. tflite-micro
 * tensorflow/lite/kernels/internal/reference/integer_ops/conv.h (ConvPerChannel):
 *   acc = bias + sum filter * (input + input_offset) over the window inside the image.
 * For a window wholly inside the image this is bias_eff + sum filter * input, with
 * bias_eff = bias + input_offset * sum filter computed at compile time (integers: the
 * same sum, in another order; int32 wraps alike). A window that crosses the border (SAME
 * padding) is copied with the taps outside the image at the input zero point, whose products
 * cancel their share of bias_eff (tm_conv_window); windows over TM_CONV_WIN_MAX bytes sum
 * the taps inside and add input_offset times those taps' filter sums (tm_conv_border_pixel).
 *
 * The window of an output pixel is filter_h rows of filter_w * in_c contiguous bytes (NHWC),
 * as is each output channel's filter (OHWI). Two output channels times two output pixels
 * share every load (the blocking of CMSIS-NN's arm_nn_mat_mult_kernel_s8_s16). On a core with
 * the DSP extension the two windows are split once into SXTB16 halfword pairs (an int16
 * im2col of two pixels) and each four bytes of two filters take two SXTB16 each and eight
 * SMLAD (tm_conv_pair_expanded); elsewhere plain C99 on the windows in place.
 *
 * A header, included by model_compiled.c, whose calls pass each layer's parameters as a
 * static const struct: the compiler inlines the kernel into every call with that layer's
 * shape as constants (window length, strides, channel counts), so the loops over a window
 * row are unrolled and their offsets are immediates, for each layer as its own kernel.
 */
#ifndef TM_CONV_FAST_H_
#define TM_CONV_FAST_H_

#include "tm_fast.h"

/* acc += dot(w[0..n), x[0..n)) for two filters (w0, w1) and two windows (x0, x1). */
TM_INLINE void tm_dot_2x2(const int8_t *w0, const int8_t *w1, const int8_t *x0, const int8_t *x1,
                          int n, int32_t *a00, int32_t *a01, int32_t *a10, int32_t *a11) {
  int32_t s00 = *a00, s01 = *a01, s10 = *a10, s11 = *a11;
  int k = 0;
#if TM_DSP
  for (; k + 4 <= n; k += 4) {
    const uint32_t xa = tm_read4(x0 + k), xb = tm_read4(x1 + k);
    const uint32_t wa = tm_read4(w0 + k), wb = tm_read4(w1 + k);
    const int32_t xa02 = __sxtb16(xa), xa13 = tm_sxtb16_ror8(xa);
    const int32_t xb02 = __sxtb16(xb), xb13 = tm_sxtb16_ror8(xb);
    const int32_t wa02 = __sxtb16(wa), wa13 = tm_sxtb16_ror8(wa);
    const int32_t wb02 = __sxtb16(wb), wb13 = tm_sxtb16_ror8(wb);
    s00 = __smlad(wa02, xa02, s00);
    s00 = __smlad(wa13, xa13, s00);
    s01 = __smlad(wa02, xb02, s01);
    s01 = __smlad(wa13, xb13, s01);
    s10 = __smlad(wb02, xa02, s10);
    s10 = __smlad(wb13, xa13, s10);
    s11 = __smlad(wb02, xb02, s11);
    s11 = __smlad(wb13, xb13, s11);
  }
#endif
  for (; k < n; ++k) {
    const int32_t xa = x0[k], xb = x1[k], wa = w0[k], wb = w1[k];
    s00 += wa * xa;
    s01 += wa * xb;
    s10 += wb * xa;
    s11 += wb * xb;
  }
  *a00 = s00;
  *a01 = s01;
  *a10 = s10;
  *a11 = s11;
}

/* acc += dot(w, x0), dot(w, x1): one filter, two windows. */
TM_INLINE void tm_dot_1x2(const int8_t *w, const int8_t *x0, const int8_t *x1, int n, int32_t *a0,
                          int32_t *a1) {
  int32_t s0 = *a0, s1 = *a1;
  int k = 0;
#if TM_DSP
  for (; k + 4 <= n; k += 4) {
    const uint32_t xa = tm_read4(x0 + k), xb = tm_read4(x1 + k), wa = tm_read4(w + k);
    const int32_t w02 = __sxtb16(wa), w13 = tm_sxtb16_ror8(wa);
    s0 = __smlad(w02, __sxtb16(xa), s0);
    s0 = __smlad(w13, tm_sxtb16_ror8(xa), s0);
    s1 = __smlad(w02, __sxtb16(xb), s1);
    s1 = __smlad(w13, tm_sxtb16_ror8(xb), s1);
  }
#endif
  for (; k < n; ++k) {
    s0 += (int32_t)w[k] * x0[k];
    s1 += (int32_t)w[k] * x1[k];
  }
  *a0 = s0;
  *a1 = s1;
}

/* acc += dot(w, x): one filter, one window. */
TM_INLINE int32_t tm_dot_1x1(const int8_t *w, const int8_t *x, int n, int32_t s) {
  int k = 0;
#if TM_DSP
  for (; k + 4 <= n; k += 4) {
    const uint32_t xa = tm_read4(x + k), wa = tm_read4(w + k);
    s = __smlad(__sxtb16(wa), __sxtb16(xa), s);
    s = __smlad(tm_sxtb16_ror8(wa), tm_sxtb16_ror8(xa), s);
  }
#endif
  for (; k < n; ++k) s += (int32_t)w[k] * x[k];
  return s;
}

/* A pixel whose window crosses the border (SAME padding): the taps inside the image are
 * contiguous spans of each window row, summed as inside; the padded taps contribute nothing,
 * so the input offset is added once per channel with the filter sums of the taps inside
 * (tap_sums[oc][ky][kx] = sum over in_c of the filter, at compile time). */
static void tm_conv_border_pixel(const tm_conv_params *p, const int8_t *input, const int8_t *filter,
                                 const int32_t *bias, const int32_t *tap_sums,
                                 const int32_t *multiplier, const int32_t *shift, int oy, int ox,
                                 int8_t *out) {
  const int in_y0 = oy * p->stride_h - p->pad_h, in_x0 = ox * p->stride_w - p->pad_w;
  const int ky0 = in_y0 < 0 ? -in_y0 : 0;
  const int ky1 = in_y0 + p->filter_h > p->in_h ? p->in_h - in_y0 : p->filter_h;
  const int kx0 = in_x0 < 0 ? -in_x0 : 0;
  const int kx1 = in_x0 + p->filter_w > p->in_w ? p->in_w - in_x0 : p->filter_w;
  const int span = (kx1 - kx0) * p->in_c, taps = p->filter_h * p->filter_w;
  int oc, ky, kx;
  for (oc = 0; oc < p->out_c; ++oc) {
    const int32_t *ts = tap_sums + (long)oc * taps;
    uint32_t acc = bias ? (uint32_t)bias[oc] : 0u;
    int32_t tap_sum = 0;
    for (ky = ky0; ky < ky1; ++ky) {
      const int8_t *w = filter + (((long)oc * p->filter_h + ky) * p->filter_w + kx0) * p->in_c;
      const int8_t *x = input + ((long)(in_y0 + ky) * p->in_w + in_x0 + kx0) * p->in_c;
      for (kx = kx0; kx < kx1; ++kx) tap_sum += ts[ky * p->filter_w + kx];
      acc += (uint32_t)tm_dot_1x1(w, x, span, 0);
    }
    acc += (uint32_t)p->input_offset * (uint32_t)tap_sum;
    out[oc] = TM_OUT((int32_t)acc, oc);
  }
}

/* Two pixels wholly inside the image (windows at x0 and x1), every output channel. */
TM_INLINE void tm_conv_pair(const tm_conv_params *p, const int8_t *x0, const int8_t *x1, long in_row,
                         const int8_t *filter, const int32_t *bias_eff, const int32_t *multiplier,
                         const int32_t *shift, int8_t *out0, int8_t *out1) {
  const int row_len = p->filter_w * p->in_c, k_len = p->filter_h * row_len;
  int oc = 0, ky;
  for (; oc + 2 <= p->out_c; oc += 2) {
    const int8_t *w0 = filter + (long)oc * k_len, *w1 = w0 + k_len;
    int32_t a00 = bias_eff[oc], a01 = a00, a10 = bias_eff[oc + 1], a11 = a10;
    for (ky = 0; ky < p->filter_h; ++ky) {
      tm_dot_2x2(w0 + ky * row_len, w1 + ky * row_len, x0 + ky * in_row, x1 + ky * in_row, row_len,
                 &a00, &a01, &a10, &a11);
    }
    out0[oc] = TM_OUT(a00, oc);
    out1[oc] = TM_OUT(a01, oc);
    out0[oc + 1] = TM_OUT(a10, oc + 1);
    out1[oc + 1] = TM_OUT(a11, oc + 1);
  }
  if (oc < p->out_c) {
    const int8_t *w = filter + (long)oc * k_len;
    int32_t a0 = bias_eff[oc], a1 = a0;
    for (ky = 0; ky < p->filter_h; ++ky) {
      tm_dot_1x2(w + ky * row_len, x0 + ky * in_row, x1 + ky * in_row, row_len, &a0, &a1);
    }
    out0[oc] = TM_OUT(a0, oc);
    out1[oc] = TM_OUT(a1, oc);
  }
}

/* One pixel wholly inside the image. */
TM_INLINE void tm_conv_single(const tm_conv_params *p, const int8_t *x, long in_row, const int8_t *filter,
                           const int32_t *bias_eff, const int32_t *multiplier, const int32_t *shift,
                           int8_t *out) {
  const int row_len = p->filter_w * p->in_c, k_len = p->filter_h * row_len;
  int oc, ky;
  for (oc = 0; oc < p->out_c; ++oc) {
    const int8_t *w = filter + (long)oc * k_len;
    int32_t acc = bias_eff[oc];
    for (ky = 0; ky < p->filter_h; ++ky) acc = tm_dot_1x1(w + ky * row_len, x + ky * in_row, row_len, acc);
    out[oc] = TM_OUT(acc, oc);
  }
}

/* The window of the pixel at (in_y0, in_x0) (a corner, may lie outside the image) into buf,
 * filter_h rows of filter_w * in_c bytes, the taps outside the image at the input zero point
 * (-input_offset): their products filter * zero_point cancel their share of bias_eff
 * (bias + input_offset * sum filter), leaving TFLM's sum over the taps inside the image. */
TM_INLINE void tm_conv_window(const tm_conv_params *p, const int8_t *input, int in_y0, int in_x0, int8_t *buf) {
  const int row_len = p->filter_w * p->in_c;
  int ky, kx;
  for (ky = 0; ky < p->filter_h; ++ky) {
    const int iy = in_y0 + ky;
    int8_t *b = buf + ky * row_len;
    for (kx = 0; kx < p->filter_w; ++kx, b += p->in_c) {
      const int ix = in_x0 + kx;
      if (iy >= 0 && iy < p->in_h && ix >= 0 && ix < p->in_w) {
        memcpy(b, input + ((long)iy * p->in_w + ix) * p->in_c, (size_t)p->in_c);
      } else {
        memset(b, (int8_t)(-p->input_offset), (size_t)p->in_c);
      }
    }
  }
}

/* The largest window (filter_h * filter_w * in_c bytes) copied for border pixels, and on the
 * DSP path expanded for pairs of pixels. Larger windows take tm_conv_border_pixel. */
#define TM_CONV_WIN_MAX 512

#if TM_DSP_ASM
/* Four bytes of two filters (w0, w1) times four of two windows, the windows' halves at q
 * (x0 (0, 2), x0 (1, 3), x1 (0, 2), x1 (1, 3)): eight SMLAD. The pointers advance. In assembly
 * so that the fourteen values stay in registers (GCC's own schedule spilled them). */
TM_INLINE void tm_mac_2x2_halves(const int8_t **w0, const int8_t **w1, const int32_t **q, int32_t *a00,
                                 int32_t *a01, int32_t *a10, int32_t *a11) {
  int32_t t0, t1, x0, x1, y0, y1;
  __asm__(
      "ldrd %[x0], %[x1], [%[q]], #16\n\t"
      "ldrd %[y0], %[y1], [%[q], #-8]\n\t"
      "ldr %[t0], [%[w0]], #4\n\t"
      "sxtb16 %[t1], %[t0], ror #8\n\t"
      "sxtb16 %[t0], %[t0]\n\t"
      "smlad %[a00], %[t0], %[x0], %[a00]\n\t"
      "smlad %[a00], %[t1], %[x1], %[a00]\n\t"
      "smlad %[a01], %[t0], %[y0], %[a01]\n\t"
      "smlad %[a01], %[t1], %[y1], %[a01]\n\t"
      "ldr %[t0], [%[w1]], #4\n\t"
      "sxtb16 %[t1], %[t0], ror #8\n\t"
      "sxtb16 %[t0], %[t0]\n\t"
      "smlad %[a10], %[t0], %[x0], %[a10]\n\t"
      "smlad %[a10], %[t1], %[x1], %[a10]\n\t"
      "smlad %[a11], %[t0], %[y0], %[a11]\n\t"
      "smlad %[a11], %[t1], %[y1], %[a11]"
      : [a00] "+r"(*a00), [a01] "+r"(*a01), [a10] "+r"(*a10), [a11] "+r"(*a11), [w0] "+r"(*w0),
        [w1] "+r"(*w1), [q] "+r"(*q), [t0] "=&r"(t0), [t1] "=&r"(t1), [x0] "=&r"(x0), [x1] "=&r"(x1),
        [y0] "=&r"(y0), [y1] "=&r"(y1)
      :
      : "memory");
}

/* Two pixels whose windows are contiguous (b0, b1: win bytes each, filter order). The windows
 * are split once into SXTB16 halfword pairs, bytes (0, 2) and (1, 3) of every word (the int16
 * im2col of CMSIS-NN's arm_nn_mat_mult_kernel_s8_s16, done our way): every output channel
 * then reuses them, and four products of an SMLAD pair take no SXTB16 of the input. */
TM_INLINE void tm_conv_pair_expanded(const tm_conv_params *p, const int8_t *b0, const int8_t *b1,
                                     const int8_t *filter, const int32_t *bias_eff, const int32_t *multiplier,
                                     const int32_t *shift, int8_t *out0, int8_t *out1) {
  const int win = p->filter_h * p->filter_w * p->in_c, win4 = win / 4 * 4;
  int32_t e[TM_CONV_WIN_MAX + 4]; /* per 4 bytes: x0 (0, 2), x0 (1, 3), x1 (0, 2), x1 (1, 3) */
  int oc = 0, k;
  {
    int32_t *q = e;
    for (k = 0; k < win4; k += 4, q += 4) {
      const uint32_t v0 = tm_read4(b0 + k), v1 = tm_read4(b1 + k);
      q[0] = __sxtb16(v0);
      q[1] = tm_sxtb16_ror8(v0);
      q[2] = __sxtb16(v1);
      q[3] = tm_sxtb16_ror8(v1);
    }
    if (win - win4 == 3) { /* the last 3 bytes, then a zero: a product with a zero is zero */
      uint32_t v0 = 0, v1 = 0;
      if (win >= 4) { /* the window's last word, its first 4 - win % 4 bytes shifted out */
        v0 = tm_read4(b0 + win - 4) >> (8 * (4 - (win - win4)));
        v1 = tm_read4(b1 + win - 4) >> (8 * (4 - (win - win4)));
      } else {
        for (k = 0; k < win; ++k) {
          v0 |= (uint32_t)(uint8_t)b0[k] << (8 * k);
          v1 |= (uint32_t)(uint8_t)b1[k] << (8 * k);
        }
      }
      q[0] = __sxtb16(v0);
      q[1] = tm_sxtb16_ror8(v0);
      q[2] = __sxtb16(v1);
      q[3] = tm_sxtb16_ror8(v1);
    }
  }
  for (; oc + 2 <= p->out_c; oc += 2) {
    const int8_t *w0 = filter + (long)oc * win, *w1 = w0 + win;
    const int32_t *q = e;
    /* The padded last word of the windows takes the filters' last win % 4 bytes and the first
     * bytes of the next channel's filter (times zero): only while that next filter exists. */
    const int whole = win - win4 == 3 && oc + 2 < p->out_c; /* a step beats 1 or 2 bytes' scalar tail */
    /* A counted loop: with the layer's shape constant (win % 4 != 3, so whole is 0) GCC
     * unrolls it whole, e.g. the 16 steps of a 1x1 conv on 64 channels, with no compare and
     * branch per step (DS-CNN's pointwise convs: 0.89 M -> 0.82 M instructions each). */
    const int steps = (whole ? win4 + 4 : win4) / 4;
    int32_t a00 = bias_eff[oc], a01 = a00, a10 = bias_eff[oc + 1], a11 = a10;
    int step;
    TM_UNROLL
    for (step = 0; step < steps; ++step) tm_mac_2x2_halves(&w0, &w1, &q, &a00, &a01, &a10, &a11);
    for (k = whole ? win : win4; k < win; ++k, ++w0, ++w1) {
      a00 += (int32_t)*w0 * b0[k];
      a01 += (int32_t)*w0 * b1[k];
      a10 += (int32_t)*w1 * b0[k];
      a11 += (int32_t)*w1 * b1[k];
    }
    out0[oc] = TM_OUT(a00, oc);
    out1[oc] = TM_OUT(a01, oc);
    out0[oc + 1] = TM_OUT(a10, oc + 1);
    out1[oc + 1] = TM_OUT(a11, oc + 1);
  }
  if (oc < p->out_c) {
    const int8_t *w = filter + (long)oc * win;
    const int32_t *q = e;
    int32_t a0 = bias_eff[oc], a1 = a0;
    for (k = 0; k < win4; k += 4, q += 4) {
      const uint32_t wa = tm_read4(w + k);
      const int32_t w02 = __sxtb16(wa), w13 = tm_sxtb16_ror8(wa);
      a0 = __smlad(w02, q[0], a0);
      a0 = __smlad(w13, q[1], a0);
      a1 = __smlad(w02, q[2], a1);
      a1 = __smlad(w13, q[3], a1);
    }
    for (; k < win; ++k) {
      a0 += (int32_t)w[k] * b0[k];
      a1 += (int32_t)w[k] * b1[k];
    }
    out0[oc] = TM_OUT(a0, oc);
    out1[oc] = TM_OUT(a1, oc);
  }
}
#endif

/* Two pixels: windows x0, x1 with rows in_row bytes apart. */
TM_INLINE void tm_conv_pair_at(const tm_conv_params *p, const int8_t *input, int in_y0, int in_x0,
                               const int8_t *x0, const int8_t *x1, long in_row, const int8_t *filter,
                               const int32_t *bias_eff, const int32_t *multiplier, const int32_t *shift,
                               int8_t *out0, int8_t *out1) {
#if TM_DSP_ASM
  const int row_len = p->filter_w * p->in_c;
  if (p->filter_h * row_len <= TM_CONV_WIN_MAX) {
    if (p->filter_h == 1 || in_row == row_len) { /* the windows are contiguous already */
      tm_conv_pair_expanded(p, x0, x1, filter, bias_eff, multiplier, shift, out0, out1);
    } else if (p->out_c >= 32) {
      /* Gathering the rows costs about a pass of one channel pair over the windows: worth it
       * with many channels (DS-CNN's 10x4 conv to 64: 0.76 M -> 0.68 M instructions), not
       * with few (MobileNet's 3x3 conv to 8: 1.29 M -> 1.56 M). */
      int8_t buf[2][TM_CONV_WIN_MAX];
      tm_conv_window(p, input, in_y0, in_x0, buf[0]);
      tm_conv_window(p, input, in_y0, in_x0 + p->stride_w, buf[1]);
      tm_conv_pair_expanded(p, buf[0], buf[1], filter, bias_eff, multiplier, shift, out0, out1);
    } else {
      tm_conv_pair(p, x0, x1, in_row, filter, bias_eff, multiplier, shift, out0, out1);
    }
    return;
  }
#endif
  (void)input;
  (void)in_y0;
  (void)in_x0;
  tm_conv_pair(p, x0, x1, in_row, filter, bias_eff, multiplier, shift, out0, out1);
}

TM_INLINE void tm_conv2d_fast_s8(const tm_conv_params *p, const int8_t *input, const int8_t *filter,
                       const int32_t *bias, const int32_t *bias_eff, const int32_t *tap_sums,
                       const int32_t *multiplier, const int32_t *shift, int8_t *output) {
  const long pixel_step = (long)p->stride_w * p->in_c, in_row = (long)p->in_w * p->in_c;
  const int win = p->filter_h * p->filter_w * p->in_c, row_len = p->filter_w * p->in_c;
  int oy, ox;
  if (p->filter_h == 1 && p->filter_w == 1 && p->stride_h == 1 && p->stride_w == 1 && p->pad_h == 0 &&
      p->pad_w == 0) {
    /* A pointwise conv: every output pixel reads its own input pixel only, so the image is one
     * row of out_h * out_w pixels, taken in pairs across the rows' ends (the rows of an odd
     * width no longer leave one pixel each to the slower single-pixel path: DS-CNN's 25x5
     * pointwise convs). Pixels in the same increasing order as the rows' loop, each pair's
     * inputs read before its outputs are written: the same accesses in place. */
    const long n = (long)p->out_h * p->out_w;
    long i = 0;
    for (; i + 2 <= n; i += 2) {
      const int8_t *x0 = input + i * p->in_c;
      int8_t *out0 = output + i * p->out_c;
      tm_conv_pair_at(p, input, 0, 0, x0, x0 + p->in_c, in_row, filter, bias_eff, multiplier, shift, out0,
                      out0 + p->out_c);
    }
    if (i < n) tm_conv_single(p, input + i * p->in_c, in_row, filter, bias_eff, multiplier, shift, output + i * p->out_c);
    (void)bias;
    (void)tap_sums;
    (void)pixel_step;
    return;
  }
  for (oy = 0; oy < p->out_h; ++oy) {
    const int in_y0 = oy * p->stride_h - p->pad_h;
    const int rows_inside = in_y0 >= 0 && in_y0 + p->filter_h <= p->in_h;
    int8_t *out_row = output + (long)oy * p->out_w * p->out_c;
    ox = 0;
    while (ox < p->out_w) {
      const int in_x0 = ox * p->stride_w - p->pad_w;
      const int two = ox + 1 < p->out_w;
      const int inside0 = rows_inside && in_x0 >= 0 && in_x0 + p->filter_w <= p->in_w;
      const int inside1 = two && rows_inside && in_x0 + p->stride_w >= 0 &&
                          in_x0 + p->stride_w + p->filter_w <= p->in_w;
      int8_t *out0 = out_row + (long)ox * p->out_c;
      if (inside0 && inside1) {
        const int8_t *x0 = input + ((long)in_y0 * p->in_w + in_x0) * p->in_c;
        tm_conv_pair_at(p, input, in_y0, in_x0, x0, x0 + pixel_step, in_row, filter, bias_eff, multiplier, shift,
                        out0, out0 + p->out_c);
        ox += 2;
      } else if (inside0) {
        tm_conv_single(p, input + ((long)in_y0 * p->in_w + in_x0) * p->in_c, in_row, filter, bias_eff,
                       multiplier, shift, out0);
        ox += 1;
      } else if (win <= TM_CONV_WIN_MAX) {
        /* A border pixel (and its neighbour): their windows, padded, side by side. */
        int8_t buf[2][TM_CONV_WIN_MAX];
        tm_conv_window(p, input, in_y0, in_x0, buf[0]);
        if (two) {
          tm_conv_window(p, input, in_y0, in_x0 + p->stride_w, buf[1]);
          tm_conv_pair_at(p, input, in_y0, in_x0, buf[0], buf[1], row_len, filter, bias_eff, multiplier, shift,
                          out0, out0 + p->out_c);
          ox += 2;
        } else {
          tm_conv_single(p, buf[0], row_len, filter, bias_eff, multiplier, shift, out0);
          ox += 1;
        }
      } else {
        tm_conv_border_pixel(p, input, filter, bias, tap_sums, multiplier, shift, oy, ox, out0);
        ox += 1;
      }
    }
  }
}

#endif /* TM_CONV_FAST_H_ */
