/* tm_dsp.c: see tm_dsp.h. C99, float32 work, built with -ffp-contract=off everywhere. */
#include "tm_dsp.h"

/* No fused multiply-add even where the build's flags allow it (the Arduino IDE builds with
 * gnu11, whose default is -ffp-contract=fast, and the Cortex-M4F has VFMA): the features
 * must be the host library's bits. GCC takes -ffp-contract per function through this pragma. */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("fp-contract=off")
#endif

#include <math.h>
#include <string.h>

#define TM_PI 3.14159265358979323846
#define TM_LN2 0.69314718055994530942
#define TM_LN10 2.30258509299404568402
/* speechpy's zero_handling (third_party/speechpy/functions.py): a zero energy becomes
 * numpy's float64 epsilon before a log. Edge Impulse's common/spectrum.py uses 1e-10 for
 * the spectral block's log10. */
#define TM_EPS_ENERGY 2.220446049250313e-16f
#define TM_EPS_SPECTRAL 1e-10f
#define TM_MAX_FILTERS 128 /* mel energies of one frame live on the stack */

/* ------------------------------------------------------------------ elementary functions */

double tm_dsp_log(double x) {
    uint64_t bits;
    int e;
    double m, s, s2, term, sum = 0.0;
    int k;
    if (!(x > 0.0)) return -1.0e300;
    memcpy(&bits, &x, 8);
    e = (int)((bits >> 52) & 0x7ff);
    if (e == 0) { /* subnormal: scale by 2^52 first */
        x = x * 4503599627370496.0;
        memcpy(&bits, &x, 8);
        e = (int)((bits >> 52) & 0x7ff) - 52;
    }
    e -= 1023;
    bits = (bits & 0x000fffffffffffffULL) | 0x3ff0000000000000ULL;
    memcpy(&m, &bits, 8);
    if (m > 1.4142135623730951) { m = m * 0.5; e += 1; }
    /* ln m = 2 atanh(s), s = (m - 1) / (m + 1), |s| <= 0.172: 20 odd terms reach 1e-30 */
    s = (m - 1.0) / (m + 1.0);
    s2 = s * s;
    term = s;
    for (k = 1; k < 41; k += 2) { sum = sum + term / (double)k; term = term * s2; }
    return 2.0 * sum + (double)e * TM_LN2;
}

double tm_dsp_exp(double x) {
    double kd, r, term = 1.0, sum = 1.0, scale;
    int k, i;
    uint64_t bits;
    if (x > 700.0) x = 700.0;
    if (x < -700.0) return 0.0;
    kd = x / TM_LN2;
    k = (int)(kd < 0.0 ? kd - 0.5 : kd + 0.5);
    r = x - (double)k * TM_LN2; /* |r| <= 0.35 */
    for (i = 1; i < 25; i++) { term = term * r / (double)i; sum = sum + term; }
    bits = (uint64_t)(k + 1023) << 52;
    memcpy(&scale, &bits, 8);
    return sum * scale;
}

static double reduce_2pi(double x) {
    double n = x / (2.0 * TM_PI);
    long q = (long)(n < 0.0 ? n - 0.5 : n + 0.5);
    return x - (double)q * (2.0 * TM_PI); /* [-pi, pi] for the arguments used here */
}

double tm_dsp_sin(double x) {
    double r = reduce_2pi(x), r2 = r * r, term = r, sum = r;
    int i;
    for (i = 1; i < 22; i++) { term = -term * r2 / (double)((2 * i) * (2 * i + 1)); sum = sum + term; }
    return sum;
}

double tm_dsp_cos(double x) {
    double r = reduce_2pi(x), r2 = r * r, term = 1.0, sum = 1.0;
    int i;
    for (i = 1; i < 22; i++) { term = -term * r2 / (double)((2 * i - 1) * (2 * i)); sum = sum + term; }
    return sum;
}

float tm_dsp_logf(float x) {
    uint32_t b;
    int e;
    float m, s, s2, poly;
    if (!(x > 0.0f)) return -1.0e30f;
    memcpy(&b, &x, 4);
    e = (int)((b >> 23) & 0xff);
    if (e == 0) { x = x * 8388608.0f; memcpy(&b, &x, 4); e = (int)((b >> 23) & 0xff) - 23; }
    e -= 127;
    b = (b & 0x7fffffu) | 0x3f800000u;
    memcpy(&m, &b, 4);
    if (m > 1.41421356f) { m = m * 0.5f; e += 1; }
    s = (m - 1.0f) / (m + 1.0f);
    s2 = s * s;
    poly = s2 * (1.0f / 3.0f + s2 * (1.0f / 5.0f + s2 * (1.0f / 7.0f + s2 * (1.0f / 9.0f))));
    /* e * ln 2 in two parts: 0.693359375 is exact in 10 bits, so e * it is exact */
    return ((float)e * -2.12194440e-4f + 2.0f * (s + s * poly)) + (float)e * 0.693359375f;
}

static float log10_f(float x) { return tm_dsp_logf(x) * (float)(1.0 / TM_LN10); }

/* round half to even, as numpy.around */
static float round_even(float x) {
    float f = (float)(int32_t)x, d;
    if (x < 0.0f && f != x) f = f - 1.0f; /* floor */
    d = x - f;
    if (d > 0.5f) return f + 1.0f;
    if (d < 0.5f) return f;
    return ((int32_t)f % 2 == 0) ? f : f + 1.0f;
}

/* ------------------------------------------------------------------ FFT */

void tm_dsp_twiddles(int32_t n, float *tw) {
    int32_t k;
    for (k = 0; k < n / 2; k++) {
        double a = 2.0 * TM_PI * (double)k / (double)n;
        tw[2 * k] = (float)tm_dsp_cos(a);
        tw[2 * k + 1] = (float)-tm_dsp_sin(a);
    }
}

/* In-place radix-2 decimation-in-time FFT of m complex values (interleaved), twiddles of
 * the length-n table (n = 2m): W_len^k = W_n^(k n / len). */
static void cfft(float *z, int32_t m, int32_t n, const float *tw) {
    int32_t i, j = 0, len, k;
    for (i = 1; i < m; i++) {
        int32_t bit = m >> 1;
        for (; j & bit; bit >>= 1) j ^= bit;
        j ^= bit;
        if (i < j) {
            float t0 = z[2 * i], t1 = z[2 * i + 1];
            z[2 * i] = z[2 * j]; z[2 * i + 1] = z[2 * j + 1];
            z[2 * j] = t0; z[2 * j + 1] = t1;
        }
    }
    for (len = 2; len <= m; len <<= 1) {
        int32_t half = len / 2, step = n / len;
        for (i = 0; i < m; i += len) {
            for (k = 0; k < half; k++) {
                float wr = tw[2 * (k * step)], wi = tw[2 * (k * step) + 1];
                float *a = z + 2 * (i + k), *b = z + 2 * (i + k + half);
                float tr = b[0] * wr - b[1] * wi, ti = b[0] * wi + b[1] * wr;
                b[0] = a[0] - tr; b[1] = a[1] - ti;
                a[0] = a[0] + tr; a[1] = a[1] + ti;
            }
        }
    }
}

void tm_dsp_rfft(const float *in, int32_t n, const float *tw, float *work, float *out) {
    int32_t m = n / 2, k;
    memcpy(work, in, (size_t)n * sizeof(float)); /* z[j] = x[2j] + i x[2j+1] */
    cfft(work, m, n, tw);
    out[0] = work[0] + work[1]; out[1] = 0.0f;
    out[2 * m] = work[0] - work[1]; out[2 * m + 1] = 0.0f;
    for (k = 1; k < m; k++) {
        float ar = work[2 * k], ai = work[2 * k + 1];
        float br = work[2 * (m - k)], bi = -work[2 * (m - k) + 1]; /* conj(Z[m-k]) */
        float er = 0.5f * (ar + br), ei = 0.5f * (ai + bi);
        float dr = ar - br, di = ai - bi;
        float orr = 0.5f * di, oi = -0.5f * dr; /* -i/2 (Z[k] - conj(Z[m-k])) */
        float c = tw[2 * k], s = tw[2 * k + 1];
        out[2 * k] = er + (c * orr - s * oi);
        out[2 * k + 1] = ei + (c * oi + s * orr);
    }
}

/* ------------------------------------------------------------------ layout of scratch */

typedef struct { int32_t tw, edges, dct, lift, work, spec, power, hold, sig, sos, total; } layout;

static int is_pow2(int32_t n) { return n >= 4 && (n & (n - 1)) == 0; }
static int32_t steps(float seconds, float rate) { return (int32_t)((double)seconds * (double)rate + 0.5); }

static layout plan(const tm_dsp_params *p) {
    layout L;
    int32_t n = p->fft_length > 0 ? p->fft_length : 0, nf = p->num_filters > 0 ? p->num_filters : 0;
    int32_t nc = p->num_cepstral > 0 ? p->num_cepstral : 0, ord = p->filter_order > 0 ? p->filter_order : 0;
    L.tw = 0;
    L.edges = L.tw + n;
    L.dct = L.edges + nf + 2;
    L.lift = L.dct + nc * nf;
    L.work = L.lift + nc;
    L.spec = L.work + n;
    L.power = L.spec + n + 2;
    L.hold = L.power + n / 2 + 1;
    L.sig = L.hold + n / 2 + 1;
    L.sos = L.sig + (p->in_len > 0 ? p->in_len : 0);
    L.total = L.sos + (ord / 2) * 5 + 1;
    return L;
}

int32_t tm_dsp_scratch_floats(const tm_dsp_params *p) {
    return p->block == TM_DSP_RAW ? 1 : plan(p).total;
}

static int32_t frames_of(const tm_dsp_params *p) {
    int32_t fl = steps(p->frame_length, p->rate_hz), fs = steps(p->frame_stride, p->rate_hz);
    if (fl < 1 || fs < 1 || p->in_len < fl) return 0;
    return 1 + (p->in_len - fl) / fs;
}

/* spectral: is FFT bin i (1..n/2) kept by the filter's mask (spectral_analysis/dsp.py)? */
static int bin_kept(const tm_dsp_params *p, int32_t i, int *stop) {
    float spacing = p->rate_hz / (float)p->fft_length, f = (float)i * spacing;
    *stop = 0;
    if (p->filter_type == TM_FILTER_LOW && f - spacing / 2.0f > p->filter_cutoff) { *stop = 1; return 0; }
    if (p->filter_type == TM_FILTER_HIGH && f + spacing / 2.0f < p->filter_cutoff) return 0;
    return 1;
}

static int32_t spectral_bins(const tm_dsp_params *p) {
    int32_t i, count = 0;
    int stop;
    for (i = 1; i <= p->fft_length / 2; i++) {
        int keep = bin_kept(p, i, &stop);
        if (stop) break;
        count += keep;
    }
    return count;
}

int tm_dsp_shape(const tm_dsp_params *p, int32_t *rows, int32_t *cols) {
    int32_t nb;
    if (p->in_len < 1 || p->channels < 1 || !(p->rate_hz > 0.0f)) return TM_DSP_E_ARG;
    switch (p->block) {
    case TM_DSP_RAW:
        *rows = p->in_len; *cols = p->channels;
        return TM_DSP_OK;
    case TM_DSP_SPECTRAL:
        if (!is_pow2(p->fft_length)) return TM_DSP_E_FFT;
        if (p->filter_type != TM_FILTER_NONE) {
            if (p->filter_order < 0 || p->filter_order > 8 || p->filter_order % 2) return TM_DSP_E_ORDER;
            if (!(p->filter_cutoff > 0.0f) || !(p->filter_cutoff < p->rate_hz / 2.0f)) return TM_DSP_E_FREQ;
        }
        nb = spectral_bins(p);
        if (nb == 0) return TM_DSP_E_MASKED;
        *rows = 1; *cols = p->channels * (3 + nb);
        return TM_DSP_OK;
    case TM_DSP_MFE: case TM_DSP_MFCC: case TM_DSP_SPECTROGRAM:
        if (!is_pow2(p->fft_length)) return TM_DSP_E_FFT;
        if (frames_of(p) < 1) return TM_DSP_E_SHORT;
        *rows = frames_of(p);
        if (p->block == TM_DSP_SPECTROGRAM) { *cols = p->channels * (p->fft_length / 2 + 1); return TM_DSP_OK; }
        if (p->num_filters < 2 || p->num_filters > TM_MAX_FILTERS) return TM_DSP_E_FILTERS;
        {
            float high = p->high_frequency > 0.0f ? p->high_frequency : p->rate_hz / 2.0f;
            if (p->low_frequency < 0.0f || high > p->rate_hz / 2.0f || !(p->low_frequency < high)) return TM_DSP_E_FREQ;
        }
        if (p->block == TM_DSP_MFE) { *cols = p->channels * p->num_filters; return TM_DSP_OK; }
        if (p->num_cepstral < 1 || p->num_cepstral > p->num_filters) return TM_DSP_E_CEPSTRAL;
        *cols = p->channels * p->num_cepstral;
        return TM_DSP_OK;
    default:
        return TM_DSP_E_BLOCK;
    }
}

/* ------------------------------------------------------------------ tables */

/* Mel filter bank edges as FFT bin indices (speechpy feature.filterbanks: mel = 1127 ln(1 + f/700),
 * num_filters + 2 points evenly spaced in mel, bin = floor((n/2 + 2) f / rate)). */
static void mel_edges(const tm_dsp_params *p, float *edges) {
    double high = p->high_frequency > 0.0f ? (double)p->high_frequency : (double)p->rate_hz / 2.0;
    double lo = 1127.0 * tm_dsp_log(1.0 + (double)p->low_frequency / 700.0);
    double hi = 1127.0 * tm_dsp_log(1.0 + high / 700.0);
    double step = (hi - lo) / (double)(p->num_filters + 1);
    int32_t coefficients = p->fft_length / 2 + 1, i;
    for (i = 0; i < p->num_filters + 2; i++) {
        double mel = i == p->num_filters + 1 ? hi : lo + (double)i * step;
        double hz = 700.0 * (tm_dsp_exp(mel / 1127.0) - 1.0);
        double idx = (double)(coefficients + 1) * hz / (double)p->rate_hz;
        int32_t b = (int32_t)idx; /* floor: idx >= 0 */
        if (b > coefficients - 1) b = coefficients - 1;
        edges[i] = (float)b;
    }
}

static void butter_sos(const tm_dsp_params *p, float *sos) {
    /* Butterworth as order/2 second-order sections, bilinear transform: the design Edge
     * Impulse's C++ filter uses (checked in spectral_analysis/dsp.py, filter_is_stable). */
    double a = tm_dsp_sin(TM_PI * p->filter_cutoff / p->rate_hz) / tm_dsp_cos(TM_PI * p->filter_cutoff / p->rate_hz);
    double a2 = a * a;
    int32_t k, n = p->filter_order / 2;
    for (k = 0; k < n; k++) {
        double r = tm_dsp_sin(TM_PI * (2.0 * k + 1.0) / (2.0 * p->filter_order));
        double s = a2 + 2.0 * a * r + 1.0;
        sos[5 * k] = (float)((p->filter_type == TM_FILTER_LOW ? a2 : 1.0) / s); /* gain */
        sos[5 * k + 1] = p->filter_type == TM_FILTER_LOW ? 2.0f : -2.0f;         /* b1 / gain */
        sos[5 * k + 2] = 1.0f;                                                  /* b2 / gain */
        sos[5 * k + 3] = (float)(2.0 * (1.0 - a2) / s);                         /* d1 */
        sos[5 * k + 4] = (float)(-(a2 - 2.0 * a * r + 1.0) / s);                /* d2 */
    }
}

int tm_dsp_init(const tm_dsp_params *p, float *scratch) {
    int32_t rows, cols, k, j;
    int err = tm_dsp_shape(p, &rows, &cols);
    layout L;
    if (err) return err;
    if (p->block == TM_DSP_RAW) return TM_DSP_OK;
    L = plan(p);
    tm_dsp_twiddles(p->fft_length, scratch + L.tw);
    if (p->block == TM_DSP_MFE || p->block == TM_DSP_MFCC) mel_edges(p, scratch + L.edges);
    if (p->block == TM_DSP_MFCC) {
        /* DCT-II, orthonormal (scipy.fftpack.dct(norm="ortho")), and the sinusoidal lifter */
        int32_t nf = p->num_filters;
        for (k = 0; k < p->num_cepstral; k++) {
            double sc = k == 0 ? 1.0 / (double)nf : 2.0 / (double)nf, root = sc, x = sc;
            for (j = 0; j < 60; j++) root = 0.5 * (root + x / root); /* sqrt by Newton, in double */
            for (j = 0; j < nf; j++)
                scratch[L.dct + k * nf + j] = (float)(root * tm_dsp_cos(TM_PI * (double)k * (2.0 * j + 1.0) / (2.0 * nf)));
            scratch[L.lift + k] = p->lifter > 0
                ? (float)(1.0 + (double)p->lifter / 2.0 * tm_dsp_sin(TM_PI * (double)k / (double)p->lifter)) : 1.0f;
        }
    }
    if (p->block == TM_DSP_SPECTRAL && p->filter_type != TM_FILTER_NONE && p->filter_order > 0)
        butter_sos(p, scratch + L.sos);
    return TM_DSP_OK;
}

/* ------------------------------------------------------------------ blocks */

/* Power spectrum |rfft(x[0:len], n)|^2 / n (speechpy processing.power_spectrum), into power. */
static void power_spectrum(const tm_dsp_params *p, const float *x, int32_t len, float *scratch, const layout *L) {
    int32_t n = p->fft_length, k, take = len < n ? len : n;
    float *spec = scratch + L->spec, *power = scratch + L->power;
    /* the frame, zero-padded or cut to n, goes into spec (n + 2 floats); rfft reads it into work first */
    memset(spec, 0, (size_t)(n + 2) * sizeof(float));
    memcpy(spec, x, (size_t)take * sizeof(float));
    tm_dsp_rfft(spec, n, scratch + L->tw, scratch + L->work, spec);
    for (k = 0; k <= n / 2; k++) {
        float re = spec[2 * k], im = spec[2 * k + 1];
        power[k] = (re * re + im * im) / (float)n;
    }
}

/* Edge Impulse's MFE/spectrogram scaling (mfe/dsp.py, implementation version 3): dB, noise
 * floor to 0, +12 dB headroom to 1, clipped, then quantized to 8 bits and back. */
static float db_scaled(float v, float noise_floor_db) {
    float db;
    if (v < 1e-30f) v = 1e-30f;
    db = 10.0f * log10_f(v);
    db = (db - noise_floor_db) / (-noise_floor_db + 12.0f);
    if (db < 0.0f) db = 0.0f;
    if (db > 1.0f) db = 1.0f;
    db = round_even(db * 256.0f);
    if (db > 255.0f) db = 255.0f;
    return db / 256.0f;
}

static void frames_block(const tm_dsp_params *p, const float *in, float *out, float *scratch, const layout *L) {
    int32_t fl = steps(p->frame_length, p->rate_hz), fs = steps(p->frame_stride, p->rate_hz);
    int32_t nfr = frames_of(p), n = p->fft_length, C = p->channels, t, c, f, k, j;
    int32_t width = p->block == TM_DSP_SPECTROGRAM ? n / 2 + 1 : (p->block == TM_DSP_MFE ? p->num_filters : p->num_cepstral);
    float *sig = scratch + L->sig, *power = scratch + L->power, *edges = scratch + L->edges;
    float mel[TM_MAX_FILTERS];
    for (c = 0; c < C; c++) {
        /* rescale int16 audio to [-1, 1] (mfe/dsp.py v3) or by the window's peak (gain), then
         * pre-emphasis with speechpy's circular shift (processing.preemphasis:
         * y[0] = x[0] - cof x[n-1]) */
        float scale = 1.0f / 32768.0f;
        if (p->gain == TM_GAIN_PEAK) {
            /* the channel's largest magnitude to half full scale (-6 dBFS), so that the noise
             * floor and the features do not depend on how loud the source was recorded; a
             * silent window stays as it is */
            float peak = 0.0f;
            for (t = 0; t < p->in_len; t++) {
                float v = in[t * C + c];
                if (v < 0.0f) v = -v;
                if (v > peak) peak = v;
            }
            if (peak > 0.0f) scale = 0.5f / peak;
        }
        for (t = 0; t < p->in_len; t++) sig[t] = in[t * C + c] * scale;
        if (p->block != TM_DSP_SPECTROGRAM && p->pre_cof != 0.0f) {
            float last = sig[p->in_len - 1], prev = last;
            for (t = 0; t < p->in_len; t++) {
                float cur = sig[t];
                sig[t] = cur - p->pre_cof * prev;
                prev = cur;
            }
        }
        for (f = 0; f < nfr; f++) {
            float *row = out + f * (C * width) + c * width;
            power_spectrum(p, sig + f * fs, fl, scratch, L);
            if (p->block == TM_DSP_SPECTROGRAM) {
                for (k = 0; k <= n / 2; k++) row[k] = db_scaled(power[k], p->noise_floor_db);
                continue;
            }
            for (j = 0; j < p->num_filters; j++) {
                int32_t left = (int32_t)edges[j], mid = (int32_t)edges[j + 1], right = (int32_t)edges[j + 2], z;
                float e = 0.0f;
                for (z = left; z <= right; z++) {
                    float w = 0.0f; /* speechpy functions.triangle */
                    if (z > left && z <= mid) w = (float)(z - left) / (float)(mid - left);
                    if (z >= mid && z < right) w = (float)(right - z) / (float)(right - mid);
                    e = e + w * power[z];
                }
                mel[j] = e == 0.0f ? TM_EPS_ENERGY : e;
            }
            if (p->block == TM_DSP_MFE) {
                for (j = 0; j < p->num_filters; j++) row[j] = db_scaled(mel[j], p->noise_floor_db);
                continue;
            }
            {   /* MFCC: log mel energies, DCT-II (ortho), c0 = log frame energy, lifter */
                float energy = 0.0f;
                const float *dct = scratch + L->dct;
                for (k = 0; k <= n / 2; k++) energy = energy + power[k];
                if (energy == 0.0f) energy = TM_EPS_ENERGY;
                for (j = 0; j < p->num_filters; j++) mel[j] = tm_dsp_logf(mel[j]);
                for (k = 0; k < p->num_cepstral; k++) {
                    float acc = 0.0f;
                    for (j = 0; j < p->num_filters; j++) acc = acc + dct[k * p->num_filters + j] * mel[j];
                    row[k] = acc;
                }
                row[0] = tm_dsp_logf(energy);
                for (k = 0; k < p->num_cepstral; k++) row[k] = row[k] * scratch[L->lift + k];
            }
        }
    }
}

static void spectral_block(const tm_dsp_params *p, const float *in, float *out, float *scratch, const layout *L) {
    int32_t n = p->fft_length, C = p->channels, len = p->in_len, c, t, k, s, ix, hop;
    int32_t per_axis = 3 + spectral_bins(p);
    float *sig = scratch + L->sig, *power = scratch + L->power, *hold = scratch + L->hold;
    const float *sos = scratch + L->sos;
    for (c = 0; c < C; c++) {
        float *row = out + c * per_axis;
        float sum = 0.0f, mean, m2 = 0.0f, m3 = 0.0f, m4 = 0.0f;
        int stop;
        for (t = 0; t < len; t++) sig[t] = in[t * C + c] * p->scale_axes;
        if (p->filter_type != TM_FILTER_NONE && p->filter_order > 0) {
            for (s = 0; s < p->filter_order / 2; s++) { /* direct form I, zero initial state (scipy sosfilt) */
                const float *q = sos + 5 * s;
                float x1 = 0.0f, x2 = 0.0f, y1 = 0.0f, y2 = 0.0f;
                for (t = 0; t < len; t++) {
                    float x0 = sig[t];
                    float y0 = q[0] * (x0 + q[1] * x1 + q[2] * x2) + (q[3] * y1 + q[4] * y2);
                    x2 = x1; x1 = x0; y2 = y1; y1 = y0;
                    sig[t] = y0;
                }
            }
        }
        for (t = 0; t < len; t++) sum = sum + sig[t];
        mean = sum / (float)len;
        for (t = 0; t < len; t++) {
            float d = sig[t] - mean, d2;
            sig[t] = d;
            d2 = d * d;
            m2 = m2 + d2; m3 = m3 + d2 * d; m4 = m4 + d2 * d2;
        }
        m2 = m2 / (float)len; m3 = m3 / (float)len; m4 = m4 / (float)len;
        /* RMS of the mean-free signal, skewness and kurtosis (scipy.stats skew / kurtosis:
         * biased, Fisher), as spectral_analysis/dsp.py extract_spec_features */
        row[0] = m2 > 0.0f ? sqrtf(m2) : 0.0f;
        row[1] = m2 > 0.0f ? m3 / (m2 * sqrtf(m2)) : 0.0f;
        row[2] = m2 > 0.0f ? m4 / (m2 * m2) - 3.0f : 0.0f;
        /* Welch with max hold (common/spectrum.py welch_max_hold): frames of n every n or n/2,
         * while the start is <= len (the last one zero-padded), power |X|^2 / n, max per bin */
        for (k = 0; k <= n / 2; k++) hold[k] = 0.0f;
        hop = p->do_fft_overlap ? n - n / 2 : n;
        for (ix = 0; ix <= len; ix += hop) {
            power_spectrum(p, sig + ix, len - ix < n ? len - ix : n, scratch, L);
            for (k = 0; k <= n / 2; k++) if (power[k] > hold[k]) hold[k] = power[k];
        }
        s = 3;
        for (k = 1; k <= n / 2; k++) {
            int keep = bin_kept(p, k, &stop);
            if (stop) break;
            if (!keep) continue;
            row[s++] = p->do_log ? log10_f(hold[k] == 0.0f ? TM_EPS_SPECTRAL : hold[k]) : hold[k];
        }
    }
}

int tm_dsp_run(const tm_dsp_params *p, const float *in, float *out, float *scratch) {
    int32_t rows, cols;
    int err = tm_dsp_shape(p, &rows, &cols);
    layout L;
    if (err) return err;
    if (p->block == TM_DSP_RAW) {
        memcpy(out, in, (size_t)rows * (size_t)cols * sizeof(float));
        return TM_DSP_OK;
    }
    L = plan(p);
    if (p->block == TM_DSP_SPECTRAL) spectral_block(p, in, out, scratch, &L);
    else frames_block(p, in, out, scratch, &L);
    return TM_DSP_OK;
}
