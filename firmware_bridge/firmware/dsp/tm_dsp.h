/* tm_dsp: the DSP front ends (raw, spectral, MFE, MFCC, spectrogram), one C99 source for the
 * device and the host (pipeline/dsp builds it into a shared library for training).
 *
 * Bit-identical on x86-64 and the Cortex-M4 when built with -ffp-contract=off: only IEEE
 * float/double +, -, *, /, sqrt and conversions are used; every other function (log, exp,
 * sin, cos, tan) is computed here from those, never from the C library, whose results
 * differ between glibc and newlib in the last bit.
 *
 * Names and defaults follow Edge Impulse's processing blocks (edgeimpulse/processing-blocks:
 * spectral_analysis/dsp.py, mfe/dsp.py, mfcc/parameters.json, spectrogram/parameters.json,
 * third_party/speechpy/feature.py); see docs/dsp.md for what differs.
 */
#ifndef TM_DSP_H
#define TM_DSP_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

enum { TM_DSP_RAW = 0, TM_DSP_SPECTRAL = 1, TM_DSP_MFE = 2, TM_DSP_MFCC = 3, TM_DSP_SPECTROGRAM = 4 };
enum { TM_FILTER_NONE = 0, TM_FILTER_LOW = 1, TM_FILTER_HIGH = 2 };
enum { TM_GAIN_NONE = 0, TM_GAIN_PEAK = 1 };

/* Errors (negative return values). */
enum {
    TM_DSP_OK = 0, TM_DSP_E_BLOCK = -1, TM_DSP_E_FFT = -2, TM_DSP_E_SHORT = -3, TM_DSP_E_FILTERS = -4,
    TM_DSP_E_FREQ = -5, TM_DSP_E_ORDER = -6, TM_DSP_E_CEPSTRAL = -7, TM_DSP_E_MASKED = -8, TM_DSP_E_ARG = -9
};

/* Every field is 4 bytes (int32_t or float): the ctypes mirror in pipeline/dsp/binding.py. */
typedef struct {
    int32_t block;           /* TM_DSP_* */
    float rate_hz;           /* sampling rate of the window */
    int32_t in_len;          /* time steps per window */
    int32_t channels;        /* axes, interleaved: in[t * channels + c] */
    float scale_axes;        /* spectral: multiplies every value (Edge Impulse "scale-axes") */
    int32_t filter_type;     /* spectral: TM_FILTER_NONE / LOW / HIGH ("filter-type") */
    float filter_cutoff;     /* spectral: cut-off in Hz ("filter-cutoff") */
    int32_t filter_order;    /* spectral: even, 2..8; 0 only masks FFT bins ("filter-order") */
    int32_t fft_length;      /* power of two: spectral "fft-length", mfe/mfcc/spectrogram "fft_length" */
    int32_t do_log;          /* spectral: log10 of the spectral power ("do-log") */
    int32_t do_fft_overlap;  /* spectral: FFT frames overlap by half ("do-fft-overlap") */
    float frame_length;      /* mfe/mfcc/spectrogram: seconds */
    float frame_stride;      /* mfe/mfcc/spectrogram: seconds */
    int32_t num_filters;     /* mfe/mfcc: mel filters */
    float low_frequency;     /* mfe/mfcc: Hz */
    float high_frequency;    /* mfe/mfcc: Hz; 0: rate / 2 */
    float noise_floor_db;    /* mfe/spectrogram: dB below which a bin is 0 */
    int32_t num_cepstral;    /* mfcc: coefficients */
    float pre_cof;           /* mfe/mfcc: pre-emphasis coefficient; 0: none */
    int32_t lifter;          /* mfcc: sinusoidal lifter length; 0: none */
    int32_t gain;            /* mfe/mfcc/spectrogram: TM_GAIN_NONE, or TM_GAIN_PEAK (each channel's peak to -6 dBFS) */
} tm_dsp_params;

/* Output shape (rows x cols floats) of one window; returns TM_DSP_OK or an error. */
int tm_dsp_shape(const tm_dsp_params *p, int32_t *rows, int32_t *cols);
/* Floats of scratch tm_dsp_init and tm_dsp_run need (tables, then work space). */
int32_t tm_dsp_scratch_floats(const tm_dsp_params *p);
/* Fill the tables (twiddles, mel filter bank, DCT) in scratch once; returns TM_DSP_OK or an error. */
int tm_dsp_init(const tm_dsp_params *p, float *scratch);
/* Features of one window (in: in_len x channels) into out (rows x cols), with scratch as tm_dsp_init left it. */
int tm_dsp_run(const tm_dsp_params *p, const float *in, float *out, float *scratch);

/* The elementary functions, exposed for the tests. */
double tm_dsp_log(double x);
double tm_dsp_exp(double x);
double tm_dsp_sin(double x);
double tm_dsp_cos(double x);
float tm_dsp_logf(float x);
/* Radix-2 real FFT of n (power of two) real values: out holds n/2 + 1 (re, im) pairs.
 * tw: the n-float twiddle table tm_dsp_init makes; work: n floats. */
void tm_dsp_rfft(const float *in, int32_t n, const float *tw, float *work, float *out);
void tm_dsp_twiddles(int32_t n, float *tw);

#ifdef __cplusplus
}
#endif
#endif
