// CMSDK APB UART0 of the mps2-an386 (shared/DESIGN.md for the registers).
//
// Receiving is interrupt driven: the UART holds one byte, so the RX interrupt moves each
// byte into a ring buffer at once, and a command that computes for a while (an inference,
// printing AT+CONFIG?) loses nothing that arrives meanwhile. Sending polls TX full.

#include "board.h"

// A power of two, larger than the longest burst a host sends without waiting for a reply
// (an AT+RUNIMPULSESTATIC chunk, or a command line).
#define RX_BUFFER_BYTES 1024u

static volatile uint8_t g_rx[RX_BUFFER_BYTES];
static volatile uint32_t g_rx_head;  // written by the interrupt
static volatile uint32_t g_rx_tail;  // written by uart_read
static volatile uint32_t g_rx_overruns;

void uart_init(void) {
  UART0_CTRL = 0;
  // 25 MHz / 115200. QEMU ignores the rate but refuses to run the UART below 16.
  UART0_BAUDDIV = TINYML_SYSCLK_HZ / 115200u;
  UART0_INTCLEAR = 0xFu;
  UART0_CTRL = (1u << 0) | (1u << 1) | (1u << 3);  // TX, RX, RX interrupt
  NVIC_ISER0 = 1u << UART0_RX_IRQ;
}

void Uart0Rx_Handler(void) {
  UART0_INTCLEAR = 1u << 1;
  while (UART0_STATE & (1u << 1)) {
    uint8_t byte = (uint8_t)UART0_DATA;
    uint32_t head = g_rx_head;
    if (head - g_rx_tail < RX_BUFFER_BYTES) {
      g_rx[head % RX_BUFFER_BYTES] = byte;
      g_rx_head = head + 1u;
    } else {
      g_rx_overruns++;
    }
  }
}

int uart_read(void) {
  uint32_t tail = g_rx_tail;
  if (tail == g_rx_head) return -1;
  int byte = g_rx[tail % RX_BUFFER_BYTES];
  g_rx_tail = tail + 1u;
  return byte;
}

int uart_rx_pending(void) { return g_rx_tail != g_rx_head; }

void uart_write(const char* data, size_t len) {
  for (size_t i = 0; i < len; i++) {
    while (UART0_STATE & 1u) {
    }
    UART0_DATA = (uint8_t)data[i];
  }
}

uint32_t uart_rx_overruns(void) { return g_rx_overruns; }
