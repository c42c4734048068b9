/* Portable C99 int8 kernels with TensorFlow Lite Micro's reference arithmetic.
 *
 * Every kernel computes, for every element, exactly the integer TFLM's reference kernel
 * computes (tflite-micro, tensorflow/lite/kernels/internal/reference/...): same
 * accumulation, same requantization (MultiplyByQuantizedMultiplier with its double
 * rounding), same clamping. The constants (multipliers, shifts, activation ranges,
 * padding) are computed at compile time by firmware_bridge/compiler/ exactly as TFLM's
 * Prepare functions compute them, and passed in the parameter structs below.
 *
 * No malloc, no recursion, no library beyond <stdint.h> and <string.h>. Tensors are NHWC
 * with batch 1; shapes are given as 4-D (missing leading dimensions are 1).
 *
 * Assumes two's complement int32 with arithmetic right shift of negative values, as TFLM
 * itself does (every compiler for every MCU TFLM supports behaves so).
 */
#ifndef TM_KERNELS_H_
#define TM_KERNELS_H_

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---------------------------------------------------------------- fixed-point helpers */

int32_t tm_saturating_rounding_doubling_high_mul(int32_t a, int32_t b);
int32_t tm_rounding_divide_by_pot(int32_t x, int exponent);
int32_t tm_multiply_by_quantized_multiplier(int32_t x, int32_t multiplier, int shift);

/* ---------------------------------------------------------------- convolutions */

typedef struct {
  int in_h, in_w, in_c;
  int out_h, out_w, out_c;
  int filter_h, filter_w;
  int stride_h, stride_w;
  int dilation_h, dilation_w;
  int pad_h, pad_w;
  int depth_multiplier; /* depthwise only */
  int32_t input_offset;  /* -input zero point */
  int32_t output_offset; /* output zero point */
  int32_t act_min, act_max;
  /* The fast kernels' requantization shortcut (tm_fast.h tm_requantize_r) holds: every
   * shift is <= -1 and every accumulator is below 2^30 in magnitude (the compiler proves
   * it from the weights, the bias and the input range). 0 in the reference kernels. */
  int requant_fast;
} tm_conv_params;

/* CONV_2D, per-channel: filter [out_c][filter_h][filter_w][in_c]. */
void tm_conv2d_s8(const tm_conv_params *p, const int8_t *input, const int8_t *filter,
                  const int32_t *bias, const int32_t *multiplier, const int32_t *shift,
                  int8_t *output);

/* CONV_2D with dilation 1, fast: tm_conv2d_fast_s8 in tm_conv_fast.h (inlined per layer). */

/* DEPTHWISE_CONV_2D, per-channel: filter [1][filter_h][filter_w][out_c]. */
void tm_depthwise_conv2d_s8(const tm_conv_params *p, const int8_t *input,
                            const int8_t *filter, const int32_t *bias,
                            const int32_t *multiplier, const int32_t *shift,
                            int8_t *output);

/* ---------------------------------------------------------------- fully connected */

typedef struct {
  int batches, in_depth, out_depth;
  int32_t input_offset, filter_offset, output_offset;
  int32_t act_min, act_max;
  int per_channel; /* multiplier/shift hold out_depth entries, else one */
} tm_fc_params;

/* FULLY_CONNECTED: filter [out_depth][in_depth]. */
void tm_fully_connected_s8(const tm_fc_params *p, const int8_t *input, const int8_t *filter,
                           const int32_t *bias, const int32_t *multiplier,
                           const int32_t *shift, int8_t *output);

/* ---------------------------------------------------------------- pooling */

typedef struct {
  int in_h, in_w, channels;
  int out_h, out_w;
  int filter_h, filter_w;
  int stride_h, stride_w;
  int pad_h, pad_w;
  int32_t act_min, act_max;
} tm_pool_params;

/* Returns 0, or -1 when a window holds no input (as TFLM's AveragePool fails). */
int tm_average_pool_s8(const tm_pool_params *p, const int8_t *input, int8_t *output);
void tm_max_pool_s8(const tm_pool_params *p, const int8_t *input, int8_t *output);

/* ---------------------------------------------------------------- element-wise, broadcast */

typedef struct {
  int out_shape[4];
  int in1_strides[4]; /* element strides of input 1 in the output's 4-D index; 0 broadcasts */
  int in2_strides[4];
  int32_t input1_offset, input2_offset, output_offset;
  int left_shift;
  int32_t input1_multiplier, input2_multiplier, output_multiplier;
  int input1_shift, input2_shift, output_shift;
  int32_t act_min, act_max;
} tm_binary_params;

void tm_add_s8(const tm_binary_params *p, const int8_t *in1, const int8_t *in2, int8_t *out);
void tm_sub_s8(const tm_binary_params *p, const int8_t *in1, const int8_t *in2, int8_t *out);
void tm_mul_s8(const tm_binary_params *p, const int8_t *in1, const int8_t *in2, int8_t *out);

/* An element-wise op with one constant operand as a table: outer * period elements, element
 * i looked up in table[(i % period) * 256 + (uint8_t)input[i]]. */
typedef struct {
  int outer, period;
} tm_lut_params;

void tm_lut_s8(const tm_lut_params *p, const int8_t *input, const int8_t *table, int8_t *output);

/* ---------------------------------------------------------------- reductions, softmax */

typedef struct {
  int in_shape[4];
  int reduce[4];   /* 1 where the dimension is reduced */
  int32_t count;   /* elements summed per output */
  int same_quant;  /* input and output share scale and zero point: TFLM's integer Mean */
  int32_t input_zero_point, output_zero_point;
  int32_t multiplier; /* already folded with 1/count, as TFLM's QuantizedMeanOrSum does */
  int shift;
} tm_mean_params;

void tm_mean_s8(const tm_mean_params *p, const int8_t *input, int8_t *output);

typedef struct {
  int outer, depth;
  int32_t input_multiplier;
  int input_left_shift;
  int32_t diff_min;
} tm_softmax_params;

void tm_softmax_s8(const tm_softmax_params *p, const int8_t *input, int8_t *output);

#ifdef __cplusplus
}
#endif

#endif /* TM_KERNELS_H_ */
