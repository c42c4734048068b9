/* Bit check of tm_dsp on the emulated Cortex-M4 (tests/test_dsp.py builds it for the
 * mps2-an386 board): features of a few generated windows, each block, printed as the
 * FNV-1a hash of their bytes over UART0. The test computes the same windows with the host
 * library and compares the hashes. */
#include <stdio.h>
#include <string.h>

#include "board.h"
#include "tm_dsp.h"

#define N_IN 4000
static float in[N_IN], out[8192], scratch[8192];

/* the test's generator: an LCG, scaled by a ramp (numpy reproduces it exactly) */
static void gen(int seed) {
    uint32_t s = 12345u + (uint32_t)seed;
    int i;
    for (i = 0; i < N_IN; i++) {
        s = s * 1664525u + 1013904223u;
        in[i] = (float)((int32_t)(s >> 16) - 32768) * (float)(i % 400) / 400.0f;
    }
}

static void report(int block, int seed, int n) {
    uint32_t h = 2166136261u;
    char line[64];
    int i, k, len;
    for (i = 0; i < n; i++) {
        uint32_t b;
        memcpy(&b, &out[i], 4);
        for (k = 0; k < 4; k++) { h ^= (b >> (8 * k)) & 0xffu; h *= 16777619u; }
    }
    len = snprintf(line, sizeof line, "dsp %d %d %d %08lx\n", block, seed, n, (unsigned long)h);
    uart_write(line, (size_t)len);
}

int main(void) {
    int b, seed;
    uart_init();
    for (b = 1; b <= 4; b++) {
        for (seed = 0; seed < 3; seed++) {
            /* spectral: low-pass 1 kHz order 4, FFT 64; mfe: peak gain; mfcc: lifter 22, stride 0.02 */
            tm_dsp_params p = {b, 8000.0f, N_IN, 1, 1.0f, b == 1 ? 1 : 0, 1000.0f, 4, b == 1 ? 64 : 256, 1, 1,
                               0.02f, b == 3 ? 0.02f : 0.01f, 32, 300.0f, 0.0f, -52.0f, 13, 0.98f, b == 3 ? 22 : 0, b == 2 ? 1 : 0};
            int32_t r, c;
            gen(seed);
            if (tm_dsp_shape(&p, &r, &c) || tm_dsp_init(&p, scratch) || tm_dsp_run(&p, in, out, scratch)) {
                uart_write("dsp error\n", 10);
                continue;
            }
            report(b, seed, (int)(r * c));
        }
    }
    uart_write("done\n", 5);
    for (;;) {
    }
}
