// The model's ops and int8 quantization, from model_settings.h alone (no TFLM headers).
//
// model_settings.h lists the ops once, in TINYML_FOR_EACH_OP, with the names of
// MicroMutableOpResolver's Add<Name>() methods: the resolver gets exactly those ops and the
// device prints exactly those names, from the one list the quantize stage wrote.

#ifndef TINYML_MODEL_OPS_H_
#define TINYML_MODEL_OPS_H_

#include <math.h>
#include <stdint.h>

#include "model_settings.h"

namespace tinyml {

// Adds every op of the model to `resolver` (a tflite::MicroMutableOpResolver<kNumOps> on
// the board). Returns false as soon as one Add<Name>() fails (kTfLiteOk is 0).
template <typename Resolver>
bool add_model_ops(Resolver& resolver) {
#define TINYML_ADD_OP(name) \
  if (static_cast<int>(resolver.Add##name()) != 0) return false;
  TINYML_FOR_EACH_OP(TINYML_ADD_OP)
#undef TINYML_ADD_OP
  return true;
}

#define TINYML_OP_NAME(name) #name,
static const char* const kOpNames[] = {TINYML_FOR_EACH_OP(TINYML_OP_NAME)};
#undef TINYML_OP_NAME
static_assert(sizeof(kOpNames) / sizeof(kOpNames[0]) == static_cast<unsigned>(kNumOps),
              "kNumOps must count the ops of TINYML_FOR_EACH_OP");

// float -> int8 as TFLM's reference QUANTIZE kernel does: round half away from zero, then
// clamp. NaN maps to the zero point; the clamp before rounding keeps lroundf defined.
inline int8_t quantize_int8(float value, float scale, int zero_point) {
  float scaled = value / scale;
  if (scaled != scaled) scaled = 0.0f;
  if (scaled > 1.0e6f) scaled = 1.0e6f;
  if (scaled < -1.0e6f) scaled = -1.0e6f;
  long q = lroundf(scaled) + zero_point;
  if (q < -128) q = -128;
  if (q > 127) q = 127;
  return static_cast<int8_t>(q);
}

// Raw sensor value number `index` of a window -> the int8 model's input: the float step
// before the graph, (x - kInputMean[c]) * kInputInvStd[c] with c = index % kInputChannels
// (mean 0 and inv_std 1 leave x unchanged, bit for bit), then quantize_int8. Must match
// pipeline/tflite/runtime.py model_input() exactly: the host checks the device byte for byte.
inline int8_t model_input_int8(float value, int index) {
  const int c = index % kInputChannels;
  const float normalized = (value - kInputMean[c]) * kInputInvStd[c];
  return quantize_int8(normalized, kInputScale, kInputZeroPoint);
}

inline float dequantize_int8(int8_t q, float scale, int zero_point) {
  return static_cast<float>(static_cast<int>(q) - zero_point) * scale;
}

}  // namespace tinyml

#endif  // TINYML_MODEL_OPS_H_
