#include "tm_impulse.h"

#if TINYML_DSP_BLOCK
#include "tm_dsp.h"
#endif

namespace tinyml {

#if TINYML_DSP_BLOCK
namespace {

const tm_dsp_params kDspParams = TINYML_DSP_PARAMS;
// tm_dsp's tables (filled once) then its work space; and the features of the last window.
float g_scratch[TINYML_DSP_SCRATCH_FLOATS > 0 ? TINYML_DSP_SCRATCH_FLOATS : 1];
float g_dsp_out[TINYML_DSP_OUTPUT_FLOATS];
int g_init_status = 1;  // 1: tm_dsp_init not run yet

}  // namespace

int impulse_init() {
  if (g_init_status == 1) g_init_status = tm_dsp_init(&kDspParams, g_scratch);
  return g_init_status;
}

const float* impulse_features(const float* window, int* status) {
  *status = impulse_init();
  if (*status == 0) *status = tm_dsp_run(&kDspParams, window, g_dsp_out, g_scratch);
  return *status == 0 ? g_dsp_out : nullptr;
}
#else
int impulse_init() { return 0; }

const float* impulse_features(const float* window, int* status) {
  *status = 0;
  return window;
}
#endif

}  // namespace tinyml
