// The impulse on the device: a raw window -> the [dsp] block (tm_dsp, one C99 source with the
// host library that computed the training features) -> the model's input.
//
// dsp_settings.h, written by `tinyml quantize` from the run's [dsp] config
// (pipeline/tflite/export.py dsp_settings_h), names the block and every tm_dsp_params field.
// Without it (a run quantized before it existed, or a hand-written test run) the model reads
// the raw window, as every model did before. As Edge Impulse's run_classifier does
// (edge-impulse-sdk/classifier/ei_run_classifier.h: extract features, then run the model).
// Plain C++14, no heap.

#ifndef TINYML_IMPULSE_H_
#define TINYML_IMPULSE_H_

#include "model_settings.h"

#if defined(__has_include)
#if __has_include("dsp_settings.h")
#include "dsp_settings.h"
#endif
#endif
#ifndef TINYML_DSP_BLOCK
#define TINYML_DSP_BLOCK 0
#define TINYML_DSP_BLOCK_NAME "raw"
#define TINYML_DSP_INSTRUCTIONS 0ull
#endif

namespace tinyml {

constexpr bool kHasDsp = TINYML_DSP_BLOCK != 0;
#if TINYML_DSP_BLOCK
// The raw window: TINYML_DSP_IN_LEN readings of TINYML_DSP_CHANNELS values, interleaved.
constexpr int kWindowChannels = TINYML_DSP_CHANNELS;
constexpr int kWindowSize = TINYML_DSP_IN_LEN * TINYML_DSP_CHANNELS;
static_assert(TINYML_DSP_OUTPUT_FLOATS == kInputSize,
              "dsp_settings.h and model_settings.h disagree: the block's features are not the model's input");
#else
constexpr int kWindowChannels = kInputShape[kInputDims - 1];
constexpr int kWindowSize = kInputSize;
#endif
// Instructions of one window's features on the Cortex-M4, measured on QEMU by
// pipeline/dsp/cost.py when quantize wrote dsp_settings.h (0: not measured).
constexpr unsigned long long kDspInstructions = TINYML_DSP_INSTRUCTIONS;

inline const char* dsp_block_name() { return TINYML_DSP_BLOCK_NAME; }

// Fills the block's tables (twiddles, mel filter bank, DCT) once; 0 or tm_dsp's error code.
// Called before the DSP is timed: Timing lines count one window's work, as
// pipeline/dsp/cost.py does (the tables are built once per boot).
int impulse_init();

// The model's input for `window` (kWindowSize floats): the window itself for a raw model,
// else the block's kInputSize features (in a static buffer, valid until the next call).
// *status: 0, or tm_dsp's negative error code (then nullptr is returned).
const float* impulse_features(const float* window, int* status);

}  // namespace tinyml

#endif  // TINYML_IMPULSE_H_
