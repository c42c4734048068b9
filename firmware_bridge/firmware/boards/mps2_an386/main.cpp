// tinyml-pipeline firmware for QEMU's mps2-an386 (an emulated Cortex-M4F).
//
// The same AT protocol core as the Arduino sketch (firmware_bridge/firmware/core/: the AT server,
// the command table, the base64 transfer, the float->int8 input quantizer), bound here to
// the CMSDK UART, SysTick and the model compiled to C (RUN/firmware/compiled/, written by
// firmware_bridge/compiler/). Built and booted by firmware_bridge/targets/qemu.py.
//
// One command is this board's own, AT+PROFILE?: what only a real image can measure, the
// stack's high-water mark and the instructions an inference executes (QEMU's -icount).
//
// Timing lines are board time: the instructions the invoke executed (SysTick under
// -icount shift=0) over the clock of the board the model is for (TINYML_BOARD_CLOCK_HZ, from
// pipeline/core/boards.py), one cycle an instruction. Never QEMU's virtual time.
//
// The IMU plays a recording QEMU's loader put into PSRAM (board.h), one frame a reading, at
// the model's interval on SysTick: AT+RUNIMPULSE, its continuous and debug modes and
// AT+SAMPLESTART run as on the host board, from the same file format.

#include <stdint.h>
#include <string.h>

#include "at_server.h"
#include "board.h"
#include "device_commands.h"
#include "device_io.h"
#include "model_ops.h"  // includes model_settings.h (once per file: it may have no guard)

#if __has_include("model_compiled.h")
#include "model_compiled.h"
#define TINYML_HAS_COMPILED_MODEL 1
static_assert(TINYML_MODEL_INPUT_BYTES == kInputSize,
              "the compiled model's input is not kInputSize int8 values");
static_assert(TINYML_MODEL_OUTPUT_BYTES == kNumClasses,
              "the compiled model's output is not kNumClasses int8 values");
#else
#define TINYML_HAS_COMPILED_MODEL 0
#endif

namespace {

// The AT protocol's end of UART0.
class UartIo : public tinyml::DeviceIo {
 public:
  int read() override { return uart_read(); }
  void write(const char* data, size_t len) override { uart_write(data, len); }
  uint32_t micros() override { return systick_micros(); }
  // Sleep until an interrupt: a received byte or the next millisecond tick. QEMU then
  // stops executing instead of spinning a host core on the polling loop.
  // Interrupts are masked around the check, so a byte arriving just before the WFI still
  // wakes it (WFI wakes on a pending interrupt even when masked).
  void idle() override {
    __asm volatile("cpsid i" ::: "memory");
    if (!uart_rx_pending()) __asm volatile("wfi");
    __asm volatile("cpsie i" ::: "memory");
  }
};

// What AT+PROFILE? reports about inferences, measured around the invoke alone.
struct InvokeProfile {
  uint32_t count;
  uint64_t last_ticks;
  uint64_t min_ticks;
  uint64_t max_ticks;
};
InvokeProfile g_profile = {0, 0, 0, 0};

// Under -icount shift=0 an instruction is 1 ns of virtual time: one tick of the processor
// clock is this many instructions (the calibration below checks it; so does the host).
constexpr uint32_t kInstructionsPerTick = 1000000000u / TINYML_SYSCLK_HZ;

// The model compiled to C: the core's float step and int8 quantization (model_input_int8,
// TFLM's QUANTIZE arithmetic), invoke, dequantize.
class CompiledClassifier : public tinyml::Classifier {
 private:
  uint64_t dsp_start_ = 0;
  uint64_t dsp_ticks_ = 0;

 public:
  int classify(const float* input, float* probabilities) override {
#if TINYML_HAS_COMPILED_MODEL
    for (int i = 0; i < kInputSize; i++) {
      input_[i] = tinyml::model_input_int8(input[i], i);
    }
    uint64_t start = systick_ticks();
    int status = tinyml_model_invoke(input_, output_);
    uint64_t ticks = systick_ticks() - start;
    if (status != 0) return status < 0 ? status : -status;
    g_profile.last_ticks = ticks;
    if (g_profile.count == 0 || ticks < g_profile.min_ticks) g_profile.min_ticks = ticks;
    if (ticks > g_profile.max_ticks) g_profile.max_ticks = ticks;
    g_profile.count++;
    for (int i = 0; i < kNumClasses; i++) {
      probabilities[i] = tinyml::dequantize_int8(output_[i], kOutputScale, kOutputZeroPoint);
    }
    return 0;
#else
    (void)input;
    (void)probabilities;
    return -2;
#endif
  }

  const char* error() const override {
#if TINYML_HAS_COMPILED_MODEL
    return nullptr;
#else
    return "this image was built without a compiled model (RUN/firmware/compiled/)";
#endif
  }

  // Board time of the last invoke: its instructions, one cycle each, on the board's clock.
  long board_time_us() const override { return ticks_to_board_us(g_profile.last_ticks); }

  // The last window's DSP (tm_impulse), counted the same way: instructions under -icount.
  void dsp_begin() override { dsp_start_ = systick_ticks(); }
  void dsp_end() override { dsp_ticks_ = systick_ticks() - dsp_start_; }
  long dsp_board_time_us() const override { return ticks_to_board_us(dsp_ticks_); }

  static long ticks_to_board_us(uint64_t ticks) {
    uint64_t instructions = ticks * kInstructionsPerTick;
    return static_cast<long>((instructions * 1000000ull + TINYML_BOARD_CLOCK_HZ / 2) / TINYML_BOARD_CLOCK_HZ);
  }

 private:
#if TINYML_HAS_COMPILED_MODEL
  int8_t input_[TINYML_MODEL_INPUT_BYTES];
  int8_t output_[TINYML_MODEL_OUTPUT_BYTES];
#endif
};

// The recording in PSRAM (board.h): "TMSENSR1", uint32 axes, uint32 frames, float64
// rate_hz, then frames x axes float32 (host_board.py's file, as QEMU's loader put it there).
class MemoryImu : public tinyml::MotionSensor {
 public:
  bool attach() {
    const uint8_t* base = reinterpret_cast<const uint8_t*>(TINYML_SENSOR_ADDR);
    if (memcmp(base, "TMSENSR1", 8) != 0) return false;
    uint32_t axes, frames;
    memcpy(&axes, base + 8, 4);
    memcpy(&frames, base + 12, 4);
    memcpy(&rate_hz_, base + 16, 8);
    uint64_t bytes = 24ull + static_cast<uint64_t>(axes) * frames * 4ull;
    if (axes < 1 || axes > 23 || frames < 1 || !(rate_hz_ > 0.0) || bytes > TINYML_SENSOR_MAX_BYTES) return false;
    axes_ = static_cast<int>(axes);
    frames_ = frames;
    data_ = reinterpret_cast<const float*>(base + 24);
    const char* name = reinterpret_cast<const char*>(TINYML_SENSOR_NAME_ADDR);
    size_t n = 0;
    while (n < sizeof(name_) - 1 && name[n] >= 0x20 && name[n] < 0x7f && name[n] != ',') {
      name_[n] = name[n];
      n++;
    }
    name_[n] = '\0';
    if (n == 0) strcpy(name_, "Playback");
    return true;
  }
  const char* name() const override { return name_; }
  int axes() const override { return axes_; }
  // The next frame; the recordings loop. The core reads at the model's interval, which is
  // the recordings' rate, so board time and recorded time advance together.
  bool read(float* values) override {
    memcpy(values, data_ + static_cast<size_t>(pos_) * axes_, static_cast<size_t>(axes_) * sizeof(float));
    pos_ = (pos_ + 1u) % frames_;
    return true;
  }
  uint32_t frames() const { return frames_; }
  double rate_hz() const { return rate_hz_; }

 private:
  const float* data_ = nullptr;
  int axes_ = 0;
  uint32_t frames_ = 0;
  uint32_t pos_ = 0;
  double rate_hz_ = 0.0;
  char name_[128] = "";
};

MemoryImu g_imu;
bool g_has_sensor = false;

// Instructions per SysTick tick, measured at boot: two runs of a loop of a known number of
// instructions (SUBS + BNE per iteration), differenced so the cost of reading the clock
// cancels. Under -icount shift=0 a tick is 1e9 / TINYML_SYSCLK_HZ = 40 instructions.
struct Calibration {
  uint32_t instructions;
  uint64_t ticks;
};
Calibration g_calibration = {0, 0};

uint64_t ticks_for_loop(uint32_t iterations) {
  uint64_t start = systick_ticks();
  __asm volatile(
      "1: subs %0, %0, #1\n"
      "bne 1b\n"
      : "+r"(iterations)
      :
      : "cc");
  return systick_ticks() - start;
}

void calibrate() {
  constexpr uint32_t kShort = 100000u;
  constexpr uint32_t kLong = 300000u;
  uint64_t short_ticks = ticks_for_loop(kShort);
  uint64_t long_ticks = ticks_for_loop(kLong);
  g_calibration.instructions = 2u * (kLong - kShort);
  g_calibration.ticks = long_ticks - short_ticks;
}

void print_u64(tinyml::DeviceIo& io, uint64_t n) {
  char digits[24];
  int len = 0;
  do {
    digits[len++] = static_cast<char>('0' + n % 10u);
    n /= 10u;
  } while (n != 0u);
  while (len > 0) io.write(&digits[--len], 1);
}

// "last <n>, min <n>, max <n>" of the invoke's ticks, times `scale`.
void print_invoke_row(tinyml::DeviceIo& io, const char* name, uint32_t scale) {
  io.print(name);
  const uint64_t values[] = {g_profile.last_ticks, g_profile.min_ticks, g_profile.max_ticks};
  const char* const labels[] = {"last ", ", min ", ", max "};
  for (int i = 0; i < 3; i++) {
    io.print(labels[i]);
    print_u64(io, values[i] * scale);
  }
}

bool read_profile(tinyml::DeviceIo& io) {
  io.print("Board:                mps2-an386 (QEMU, Cortex-M4F)\n");
  io.printf("Clock:                %lu Hz (SysTick on the processor clock)\n",
            static_cast<unsigned long>(TINYML_SYSCLK_HZ));
  io.printf("Stack size:           %lu bytes\n", static_cast<unsigned long>(stack_size_bytes()));
  io.printf("Stack used:           %lu bytes (high-water mark since reset, stack painting)\n",
            static_cast<unsigned long>(stack_used_bytes()));
  io.print("Calibration:          ");
  print_u64(io, g_calibration.instructions);
  io.print(" instructions in ");
  print_u64(io, g_calibration.ticks);
  io.print(" ticks\n");
  io.printf("Inferences:           %lu\n", static_cast<unsigned long>(g_profile.count));
  print_invoke_row(io, "Invoke ticks:         ", 1u);
  io.print("\n");
  print_invoke_row(io, "Invoke instructions:  ", kInstructionsPerTick);
  io.printf(" (%lu per tick under -icount shift=0)\n", static_cast<unsigned long>(kInstructionsPerTick));
  io.printf("Board clock:          %lu Hz (%s)\n", static_cast<unsigned long>(TINYML_BOARD_CLOCK_HZ),
            TINYML_BOARD_CLOCK_SOURCE);
  io.print("Timing:               board time = invoke instructions (1 cycle each) / board clock; "
           "never QEMU's virtual time\n");
  if (g_has_sensor) {
    io.printf("Sensor:               %s, %lu frames of %d axes at ", g_imu.name(),
              static_cast<unsigned long>(g_imu.frames()), g_imu.axes());
    io.print_fixed(g_imu.rate_hz(), 3);
    io.print(" Hz (PSRAM, QEMU's loader)\n");
  } else {
    io.print("Sensor:               none\n");
  }
  io.printf("RX overruns:          %lu\n", static_cast<unsigned long>(uart_rx_overruns()));
  return true;
}

// The core's table, then this board's own command.
constexpr size_t kMaxCommands = 32;
tinyml::AtCommand g_commands[kMaxCommands];

size_t build_command_table() {
  size_t n = 0;
  for (size_t i = 0; i < tinyml::kDeviceCommandCount && n < kMaxCommands - 1; i++) {
    g_commands[n++] = tinyml::kDeviceCommands[i];
  }
  g_commands[n++] = {"PROFILE",
                     "Measured on this board: stack high-water mark, instructions per "
                     "inference (QEMU -icount)",
                     nullptr, read_profile, nullptr, nullptr};
  return n;
}

UartIo g_io;
CompiledClassifier g_classifier;

}  // namespace

int main() {
  uart_init();
  systick_init();
  calibrate();
  tinyml::DeviceInfo info = {"02:00:00:38:6A:4E", "QEMU_MPS2_AN386"};
  g_has_sensor = g_imu.attach();
  tinyml::begin_commands(&g_classifier, g_has_sensor ? &g_imu : nullptr, info);
  tinyml::AtServer server(g_io, g_commands, build_command_table());
  tinyml::print_banner(g_io);
  if (g_classifier.error() != nullptr) {
    g_io.printf("ERR: the model did not boot: %s\r\n", g_classifier.error());
  }
  server.print_prompt();
  for (;;) {
    server.poll();
    g_io.idle();
  }
}

// C++ runtime pieces a freestanding image needs without libstdc++.
extern "C" void __cxa_pure_virtual() { board_reset(); }
void operator delete(void*) noexcept { board_reset(); }
void operator delete(void*, size_t) noexcept { board_reset(); }
