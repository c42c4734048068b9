// The clock: SysTick on the processor clock, interrupting once a millisecond. The count
// of interrupts plus the counter's value gives processor clocks since boot.

#include "board.h"

static volatile uint32_t g_reloads;  // SysTick periods completed (wraps after 49 days)

void SysTick_Handler(void) { g_reloads++; }

void systick_init(void) {
  SYST_RVR = TINYML_SYSTICK_RELOAD - 1u;
  SYST_CVR = 0;
  // Writing the counter clears it to 0, and it reads 0 until its first reload: start
  // counting only once it has reloaded, or the first reading is a whole period ahead.
  SYST_CSR = (1u << 2) | (1u << 0);  // processor clock, enable
  while (SYST_CVR == 0) {
  }
  g_reloads = 0;
  SYST_CSR = (1u << 2) | (1u << 1) | (1u << 0);  // and the interrupt
}

uint64_t systick_ticks(void) {
  // Read the period count on both sides of the counter: a reload in between (its interrupt
  // runs at once, interrupts are never masked here) shows as a changed count, and we read
  // again. The counter rests at 0 for one tick before it reloads, with the period already
  // counted by the interrupt: that tick is ambiguous, so wait it out.
  uint32_t before, after;
  uint32_t value;
  do {
    before = g_reloads;
    value = SYST_CVR;
    after = g_reloads;
  } while (before != after || value == 0u);
  return (uint64_t)before * TINYML_SYSTICK_RELOAD + (TINYML_SYSTICK_RELOAD - 1u - value);
}

uint32_t systick_micros(void) {
  return (uint32_t)(systick_ticks() / (TINYML_SYSCLK_HZ / 1000000u));
}
