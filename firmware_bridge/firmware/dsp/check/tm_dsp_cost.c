/* The DSP's cost on the emulated Cortex-M4 (pipeline/dsp/cost.py builds it for QEMU's
 * mps2-an386 with the parameter sets of tm_dsp_cost_params.h and runs it under
 * -icount shift=0): for each set, the SysTick ticks of tm_dsp_run on one generated window
 * (40 instructions a tick, board.h), the median of COST_REPEATS runs, and the floats of
 * scratch and output it needs. One line per set over UART0: "cost <i> <ticks> <scratch> <out>". */
#include <stdio.h>
#include <string.h>

#include "board.h"
#include "tm_dsp.h"
#include "tm_dsp_cost_params.h" /* COST_N, COST_MAX_IN, COST_MAX_SCRATCH, COST_MAX_OUT, cost_params[] */

#define COST_REPEATS 3
static float in[COST_MAX_IN], out[COST_MAX_OUT], scratch[COST_MAX_SCRATCH];

static void gen(int32_t n) { /* speech-like: an LCG's noise under a ramp, as tm_dsp_check.c */
    uint32_t s = 12345u;
    int32_t i;
    for (i = 0; i < n; i++) {
        s = s * 1664525u + 1013904223u;
        in[i] = (float)((int32_t)(s >> 16) - 32768) * (float)(i % 400) / 400.0f;
    }
}

int main(void) {
    int i, r;
    char line[96];
    uart_init();
    systick_init();
    for (i = 0; i < COST_N; i++) {
        const tm_dsp_params *p = &cost_params[i];
        uint64_t ticks[COST_REPEATS], t0, best;
        int32_t rows, cols, len;
        gen(p->in_len * p->channels);
        if (tm_dsp_shape(p, &rows, &cols) || tm_dsp_init(p, scratch)) {
            len = snprintf(line, sizeof line, "cost %d error\n", i);
            uart_write(line, (size_t)len);
            continue;
        }
        for (r = 0; r < COST_REPEATS; r++) {
            t0 = systick_ticks();
            tm_dsp_run(p, in, out, scratch);
            ticks[r] = systick_ticks() - t0;
        }
        best = ticks[0]; /* the median of three */
        if ((ticks[1] <= ticks[0]) != (ticks[1] <= ticks[2])) best = ticks[1];
        else if ((ticks[2] <= ticks[0]) != (ticks[2] <= ticks[1])) best = ticks[2];
        len = snprintf(line, sizeof line, "cost %d %lu %ld %ld\n", i, (unsigned long)best,
                       (long)tm_dsp_scratch_floats(p), (long)(rows * cols));
        uart_write(line, (size_t)len);
    }
    uart_write("done\n", 5);
    for (;;) {
    }
}
