/* MAX_POOL_2D and AVERAGE_POOL_2D, int8.
 *
 * Must match byte for byte: tflite-micro tensorflow/lite/kernels/internal/reference/
 * integer_ops/pooling.h (MaxPool, AveragePool): the window is clipped to the image
 * (padding is never averaged in), the average rounds half away from zero by integer
 * division, both clamp to the activation range.
 *
 * Safe in place when the padding is 0 (VALID): output pixel q is written after every
 * read of input pixels before it, and later outputs read only input pixels >= q.
 */
#include "tm_fast.h"

#if TM_DSP
/* Four signed bytes at once: max(a, b) per byte (SSUB8 sets GE where a >= b, SEL picks). */
TM_INLINE uint32_t tm_max4(uint32_t a, uint32_t b) {
  uint32_t d;
  __asm__("ssub8 %0, %1, %2\n\tsel %0, %1, %2" : "=&r"(d) : "r"(a), "r"(b) : "cc");
  return d;
}
#endif

static int tm_max_int(int a, int b) { return a > b ? a : b; }
static int tm_min_int(int a, int b) { return a < b ? a : b; }

int tm_average_pool_s8(const tm_pool_params *p, const int8_t *input, int8_t *output) {
  int oy, ox, c, fy, fx;
  for (oy = 0; oy < p->out_h; ++oy) {
    for (ox = 0; ox < p->out_w; ++ox) {
      const int in_y0 = oy * p->stride_h - p->pad_h;
      const int in_x0 = ox * p->stride_w - p->pad_w;
      const int fy0 = tm_max_int(0, -in_y0);
      const int fy1 = tm_min_int(p->filter_h, p->in_h - in_y0);
      const int fx0 = tm_max_int(0, -in_x0);
      const int fx1 = tm_min_int(p->filter_w, p->in_w - in_x0);
      for (c = 0; c < p->channels; ++c) {
        int32_t acc = 0;
        int count = 0;
        for (fy = fy0; fy < fy1; ++fy) {
          for (fx = fx0; fx < fx1; ++fx) {
            acc += input[((long)(in_y0 + fy) * p->in_w + (in_x0 + fx)) * p->channels + c];
            ++count;
          }
        }
        if (count == 0) return -1;
        acc = acc > 0 ? (acc + count / 2) / count : (acc - count / 2) / count;
        if (acc < p->act_min) acc = p->act_min;
        if (acc > p->act_max) acc = p->act_max;
        output[((long)oy * p->out_w + ox) * p->channels + c] = (int8_t)acc;
      }
    }
  }
  return 0;
}

/* MAX_POOL_2D without padding: every window inside the image, no clipping; channels
 * innermost, output written in the same order as the general loop (in-place safe alike). */
static void tm_max_pool_valid(const tm_pool_params *p, const int8_t *input, int8_t *output) {
  const int channels = p->channels;
  const long row = (long)p->in_w * channels;
  const int clamp = p->act_min > -128 || p->act_max < 127;
  int oy, ox, c, fy, fx;
  for (oy = 0; oy < p->out_h; ++oy) {
    for (ox = 0; ox < p->out_w; ++ox) {
      const int8_t *win = input + (long)oy * p->stride_h * row + (long)ox * p->stride_w * channels;
      c = 0;
#if TM_DSP
      if (!clamp) {
        for (; c + 4 <= channels; c += 4) {
          const int8_t *x = win + c;
          uint32_t max = tm_read4(x);
          for (fy = 0; fy < p->filter_h; ++fy, x += row) {
            for (fx = fy == 0 ? 1 : 0; fx < p->filter_w; ++fx) max = tm_max4(max, tm_read4(x + fx * channels));
          }
          memcpy(output, &max, 4);
          output += 4;
        }
      }
#endif
      for (; c < channels; ++c) {
        const int8_t *x = win + c;
        int32_t max = -128;
        for (fy = 0; fy < p->filter_h; ++fy, x += row) {
          for (fx = 0; fx < p->filter_w; ++fx) {
            const int32_t v = x[fx * channels];
            if (v > max) max = v;
          }
        }
        if (clamp) {
          if (max < p->act_min) max = p->act_min;
          if (max > p->act_max) max = p->act_max;
        }
        *output++ = (int8_t)max;
      }
    }
  }
}

void tm_max_pool_s8(const tm_pool_params *p, const int8_t *input, int8_t *output) {
  int oy, ox, c, fy, fx;
  if (p->pad_h == 0 && p->pad_w == 0 && (p->out_h - 1) * p->stride_h + p->filter_h <= p->in_h &&
      (p->out_w - 1) * p->stride_w + p->filter_w <= p->in_w) {
    tm_max_pool_valid(p, input, output);
    return;
  }
  for (oy = 0; oy < p->out_h; ++oy) {
    for (ox = 0; ox < p->out_w; ++ox) {
      const int in_y0 = oy * p->stride_h - p->pad_h;
      const int in_x0 = ox * p->stride_w - p->pad_w;
      const int fy0 = tm_max_int(0, -in_y0);
      const int fy1 = tm_min_int(p->filter_h, p->in_h - in_y0);
      const int fx0 = tm_max_int(0, -in_x0);
      const int fx1 = tm_min_int(p->filter_w, p->in_w - in_x0);
      for (c = 0; c < p->channels; ++c) {
        int32_t max = -128;
        for (fy = fy0; fy < fy1; ++fy) {
          for (fx = fx0; fx < fx1; ++fx) {
            const int32_t v =
                input[((long)(in_y0 + fy) * p->in_w + (in_x0 + fx)) * p->channels + c];
            if (v > max) max = v;
          }
        }
        if (max < p->act_min) max = p->act_min;
        if (max > p->act_max) max = p->act_max;
        output[((long)oy * p->out_w + ox) * p->channels + c] = (int8_t)max;
      }
    }
  }
}
