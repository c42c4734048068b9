// Reset and exceptions for QEMU's mps2-an386: the vector table, .data/.bss set-up, the FPU,
// stack painting, C++ constructors, then main(). No heap (syscalls.c refuses _sbrk).

#include <stdint.h>
#include <string.h>

#include "board.h"

extern uint32_t _data_load, _data_start, _data_end, _bss_start, _bss_end;
extern uint32_t _stack_limit, _stack_top;
typedef void (*init_fn)(void);
extern init_fn __init_array_start[], __init_array_end[];

int main(void);
void Reset_Handler(void);
void Fault_Handler(void);
void Default_Handler(void);
void SysTick_Handler(void);
void Uart0Rx_Handler(void);

// The stack is filled with this word at reset; the first word from the bottom that no
// longer holds it is the deepest the stack has been.
#define STACK_PAINT 0xC5AC5AC5u

// 16 system exceptions, then the 32 interrupts QEMU gives this board (num-irq 32).
__attribute__((section(".vectors"), used)) static void (*const g_vectors[16 + 32])(void) = {
    (void (*)(void))(&_stack_top),
    Reset_Handler,
    Fault_Handler,  // NMI
    Fault_Handler,  // HardFault
    Fault_Handler,  // MemManage
    Fault_Handler,  // BusFault
    Fault_Handler,  // UsageFault
    0, 0, 0, 0,
    Default_Handler,  // SVCall
    Default_Handler,  // DebugMonitor
    0,
    Default_Handler,  // PendSV
    SysTick_Handler,
    [16 + UART0_RX_IRQ] = Uart0Rx_Handler,
    [16 + 1] = Default_Handler, [16 + 2] = Default_Handler, [16 + 3] = Default_Handler,
    [16 + 4] = Default_Handler, [16 + 5] = Default_Handler, [16 + 6] = Default_Handler,
    [16 + 7] = Default_Handler, [16 + 8] = Default_Handler, [16 + 9] = Default_Handler,
    [16 + 10] = Default_Handler, [16 + 11] = Default_Handler, [16 + 12] = Default_Handler,
    [16 + 13] = Default_Handler, [16 + 14] = Default_Handler, [16 + 15] = Default_Handler,
    [16 + 16] = Default_Handler, [16 + 17] = Default_Handler, [16 + 18] = Default_Handler,
    [16 + 19] = Default_Handler, [16 + 20] = Default_Handler, [16 + 21] = Default_Handler,
    [16 + 22] = Default_Handler, [16 + 23] = Default_Handler, [16 + 24] = Default_Handler,
    [16 + 25] = Default_Handler, [16 + 26] = Default_Handler, [16 + 27] = Default_Handler,
    [16 + 28] = Default_Handler, [16 + 29] = Default_Handler, [16 + 30] = Default_Handler,
    [16 + 31] = Default_Handler,
};

// Naked: no stack frame of its own, so the whole stack below the reset SP can be painted
// before any C code runs on it.
__attribute__((naked, noreturn)) void Reset_Handler(void) {
  __asm volatile(
      "ldr r0, =_stack_limit\n"
      "mov r1, sp\n"
      "ldr r2, =0xC5AC5AC5\n"
      "1: cmp r0, r1\n"
      "bhs 2f\n"
      "str r2, [r0], #4\n"
      "b 1b\n"
      "2: b reset_c\n");
}

__attribute__((noreturn, used)) void reset_c(void) {
  // The FPU first (CP10 and CP11 full access), before any code that may touch a float
  // register: the compiler may use them for plain copies at -O2.
  SCB_CPACR |= (0xFu << 20);
  __asm volatile("dsb\n isb" ::: "memory");

  memcpy(&_data_start, &_data_load, (size_t)((char*)&_data_end - (char*)&_data_start));
  memset(&_bss_start, 0, (size_t)((char*)&_bss_end - (char*)&_bss_start));
  for (init_fn* f = __init_array_start; f < __init_array_end; f++) (*f)();
  main();
  board_reset();
}

size_t stack_size_bytes(void) { return (size_t)((char*)&_stack_top - (char*)&_stack_limit); }

size_t stack_used_bytes(void) {
  const uint32_t* word = &_stack_limit;
  while (word < &_stack_top && *word == STACK_PAINT) word++;
  return (size_t)((const char*)&_stack_top - (const char*)word);
}

void board_reset(void) {
  __asm volatile("dsb" ::: "memory");
  SCB_AIRCR = (0x05FAu << 16) | (1u << 2);  // VECTKEY, SYSRESETREQ
  for (;;) {
  }
}

// A fault must not hang the device: say so on the UART, then reset, so a host sees a
// fresh prompt (and its evaluation resumes) instead of silence.
void Fault_Handler(void) {
  static const char kMessage[] = "\r\nERR: fault, resetting\r\n";
  uart_write(kMessage, sizeof(kMessage) - 1);
  board_reset();
}

void Default_Handler(void) { Fault_Handler(); }
