// QEMU's mps2-an386 (Cortex-M4F): the registers this firmware touches, and the board's
// services to the rest of the firmware. Facts from shared/DESIGN.md and QEMU's
// hw/arm/mps2.c (UART0 RX interrupt is IRQ 0, TX IRQ 1; the system clock is 25 MHz).

#ifndef TINYML_MPS2_AN386_BOARD_H_
#define TINYML_MPS2_AN386_BOARD_H_

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define TINYML_REG(addr) (*(volatile uint32_t*)(addr))

// System control (ARMv7-M architecture reference manual, B3.2).
#define SCB_CPACR TINYML_REG(0xE000ED88u)   // coprocessor access: CP10/CP11 = the FPU
#define SCB_AIRCR TINYML_REG(0xE000ED0Cu)   // SYSRESETREQ resets the whole board
#define SCB_ICSR TINYML_REG(0xE000ED04u)
#define SYST_CSR TINYML_REG(0xE000E010u)
#define SYST_RVR TINYML_REG(0xE000E014u)
#define SYST_CVR TINYML_REG(0xE000E018u)
#define NVIC_ISER0 TINYML_REG(0xE000E100u)

// CMSDK APB UART0.
#define UART0_BASE 0x40004000u
#define UART0_DATA TINYML_REG(UART0_BASE + 0x00u)
#define UART0_STATE TINYML_REG(UART0_BASE + 0x04u)   // bit 0 TX full, bit 1 RX full
#define UART0_CTRL TINYML_REG(UART0_BASE + 0x08u)    // bit 0 TX en, 1 RX en, 3 RX irq en
#define UART0_INTCLEAR TINYML_REG(UART0_BASE + 0x0Cu)  // write 1 to clear: bit 0 TX, 1 RX
#define UART0_BAUDDIV TINYML_REG(UART0_BASE + 0x10u)
#define UART0_RX_IRQ 0

// SYSCLK, the clock of the processor, SysTick (processor clock source) and the UART.
#define TINYML_SYSCLK_HZ 25000000u
// SysTick counts this many processor clocks per interrupt: one millisecond.
#define TINYML_SYSTICK_RELOAD (TINYML_SYSCLK_HZ / 1000u)

// The sensor: QEMU's generic loader (-device loader,file=...,addr=...,force-raw=on) puts a
// recording file into the board's 16 MB PSRAM before the processor starts, as
// firmware_bridge/targets/qemu.py boots it (docs/device.md says why a memory region and not
// a second UART or semihosting). The file is the host board's (host_board.py,
// write_sensor_file: "TMSENSR1", uint32 axes, uint32 frames, float64 rate_hz, then frames x
// axes float32, little-endian); the IMU's name, NUL-terminated, sits in front of it. Nothing
// loaded: the magic is missing (QEMU's RAM starts zeroed) and the board has no sensor.
#define TINYML_PSRAM_BASE 0x21000000u
#define TINYML_PSRAM_BYTES 0x01000000u
#define TINYML_SENSOR_NAME_ADDR TINYML_PSRAM_BASE
#define TINYML_SENSOR_NAME_BYTES 0x100u
#define TINYML_SENSOR_ADDR (TINYML_PSRAM_BASE + TINYML_SENSOR_NAME_BYTES)
#define TINYML_SENSOR_MAX_BYTES (TINYML_PSRAM_BYTES - TINYML_SENSOR_NAME_BYTES)

// The clock of the board the model is deployed to (pipeline/core/boards.py, the run's
// [quantize] board), given by qemu.py at build time: Timing lines are the instructions an
// inference executes over it, never QEMU's virtual time.
#ifndef TINYML_BOARD_CLOCK_HZ
#define TINYML_BOARD_CLOCK_HZ 64000000ull
#define TINYML_BOARD_CLOCK_SOURCE "default: nano33ble's, pipeline/core/boards.py"
#endif
#ifndef TINYML_BOARD_CLOCK_SOURCE
#define TINYML_BOARD_CLOCK_SOURCE "pipeline/core/boards.py"
#endif

// cmsdk_uart.c: UART0 at 115200 baud, received bytes kept in a ring buffer by its RX
// interrupt so that none is lost while the firmware computes.
void uart_init(void);
int uart_read(void);  // the next received byte, or -1
int uart_rx_pending(void);  // whether a received byte is waiting
void uart_write(const char* data, size_t len);
// Bytes dropped because the ring buffer was full (the host sent faster than we read).
uint32_t uart_rx_overruns(void);

// systick.c: the clock. SysTick ticks at the processor clock; under QEMU's
// `-icount shift=0` every instruction is 1 ns of virtual time, so one tick is
// 1e9 / TINYML_SYSCLK_HZ = 40 instructions (calibrated at boot, see main.cpp).
void systick_init(void);
uint64_t systick_ticks(void);  // processor clocks since boot
uint32_t systick_micros(void);

// startup.c: the stack, painted at reset, and its high-water mark.
size_t stack_size_bytes(void);
size_t stack_used_bytes(void);  // the deepest the stack has been since reset
void board_reset(void) __attribute__((noreturn));

#ifdef __cplusplus
}
#endif

#endif  // TINYML_MPS2_AN386_BOARD_H_
