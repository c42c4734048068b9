// tinyml-pipeline firmware for the host: the board `tinyml emulate`, `flash --device emu`
// and the tests run. Not a model of a device in Python: the same AT protocol core as the
// Arduino sketch and the QEMU image (firmware_bridge/firmware/core/) and the same model
// compiled to C (RUN/firmware/compiled/), built with the host's g++ by
// firmware_bridge/targets/host_board.py and bound here to POSIX:
//
//   UART    a pseudo-terminal this program opens (--pty; its path is the first line on
//           stdout, as QEMU announces its own), or stdin/stdout (the default);
//   clock   CLOCK_MONOTONIC since boot, times --time-scale (waits of the protocol pass
//           faster in tests; the board's clock itself never enters a Timing line);
//   sensor  a recording file (--sensor, written by host_board.py from the run's
//           device/flash/sensor.npz), played frame after frame, one per reading;
//   timing  board time, never host time: an inference takes --cycles-per-inference cycles
//           of a --clock-hz processor (the board's, pipeline/core/boards.py), and the
//           Timing lines print that (0 without a count). AT+PROFILE? says where the cycle
//           count comes from: QEMU's measurement for this model, `tinyml profile`, or MACs.
//
// Reset: SIGUSR1 re-executes this program on the same pseudo-terminal (the statics start
// over, as after a reset of a board whose USB link stays up).

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include "at_server.h"
#include "device_commands.h"
#include "device_io.h"
#include "model_ops.h"  // includes model_settings.h (once per file: it may have no guard)
#include "tm_impulse.h"  // kDspInstructions

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

struct Options {
  bool pty = false;
  int pty_fd = -1;  // after a reset: the pseudo-terminal the board already has
  const char* sensor = nullptr;
  const char* sensor_name = nullptr;  // default: "Playback of <file name>"
  double time_scale = 1.0;
  unsigned long long clock_hz = 64000000ull;
  unsigned long long cycles_per_inference = 0;  // 0: not known, Timing uses the clock
  const char* cycles_source = "not given";
  const char* device_type = "TINYML_HOST_BOARD";
};
Options g_options;

volatile sig_atomic_t g_reset_requested = 0;
void on_reset_signal(int) { g_reset_requested = 1; }

// --- the UART ----------------------------------------------------------------------------

// A write the host does not take within this long is dropped, as a UART with nobody
// listening drops it (the pty's buffer is full: no client reads it).
constexpr int kWriteStallMs = 1000;

class PosixUart : public tinyml::DeviceIo {
 public:
  void attach(int in_fd, int out_fd) {
    in_ = in_fd;
    out_ = out_fd;
    start_ = now_ns();
  }

  int read() override {
    unsigned char c;
    ssize_t n = ::read(in_, &c, 1);
    if (n == 1) return c;
    if (n == 0 && !g_options.pty) exit(0);  // stdin closed: the host hung up
    return -1;
  }

  void write(const char* data, size_t len) override {
    while (len > 0) {
      ssize_t n = ::write(out_, data, len);
      if (n > 0) {
        data += n;
        len -= static_cast<size_t>(n);
        continue;
      }
      if (n < 0 && errno != EAGAIN && errno != EINTR) {
        if (!g_options.pty) exit(0);  // stdout closed
        tx_dropped_ += len;
        return;
      }
      struct pollfd p = {out_, POLLOUT, 0};
      if (poll(&p, 1, kWriteStallMs) <= 0) {
        tx_dropped_ += len;
        return;
      }
    }
  }

  uint32_t micros() override {
    double us = static_cast<double>(now_ns() - start_) / 1000.0 * g_options.time_scale;
    return static_cast<uint32_t>(static_cast<uint64_t>(us));
  }

  // Sleep until a byte arrives or a millisecond passes (no core spinning on the loop).
  void idle() override {
    struct pollfd p = {in_, POLLIN, 0};
    poll(&p, 1, 1);
  }

  unsigned long tx_dropped() const { return tx_dropped_; }

 private:
  static uint64_t now_ns() {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return static_cast<uint64_t>(ts.tv_sec) * 1000000000ull + static_cast<uint64_t>(ts.tv_nsec);
  }

  int in_ = 0;
  int out_ = 1;
  uint64_t start_ = 0;
  unsigned long tx_dropped_ = 0;
};

// Opens a pseudo-terminal in raw mode; returns the master. The board keeps the slave open
// too, so the master never reads EIO between two clients (QEMU's -serial pty does the same).
int open_pty(char* path, size_t cap) {
  int master = posix_openpt(O_RDWR | O_NOCTTY);
  if (master < 0 || grantpt(master) != 0 || unlockpt(master) != 0) return -1;
  const char* name = ptsname(master);
  if (name == nullptr) return -1;
  snprintf(path, cap, "%s", name);
  int slave = open(name, O_RDWR | O_NOCTTY);
  if (slave < 0) return -1;
  struct termios t;
  if (tcgetattr(slave, &t) == 0) {
    cfmakeraw(&t);
    tcsetattr(slave, TCSANOW, &t);
  }
  return master;
}

// --- the sensor --------------------------------------------------------------------------

// The recording file host_board.py writes: "TMSENSR1", uint32 axes, uint32 frames,
// float64 rate_hz (little-endian), then frames x axes float32.
class RecordedImu : public tinyml::MotionSensor {
 public:
  bool load(const char* path, const char* name) {
    FILE* f = fopen(path, "rb");
    if (f == nullptr) return fail(path, "cannot open");
    char magic[8];
    uint32_t axes = 0, frames = 0;
    bool ok = fread(magic, 1, 8, f) == 8 && memcmp(magic, "TMSENSR1", 8) == 0 &&
              fread(&axes, 4, 1, f) == 1 && fread(&frames, 4, 1, f) == 1 &&
              fread(&rate_hz_, 8, 1, f) == 1 && axes >= 1 && axes <= 23 && frames >= 1 &&
              rate_hz_ > 0.0;
    if (!ok) {
      fclose(f);
      return fail(path, "not a TMSENSR1 recording file");
    }
    size_t count = static_cast<size_t>(axes) * frames;
    data_ = static_cast<float*>(malloc(count * sizeof(float)));
    ok = data_ != nullptr && fread(data_, sizeof(float), count, f) == count;
    fclose(f);
    if (!ok) return fail(path, "shorter than its header says");
    axes_ = static_cast<int>(axes);
    frames_ = frames;
    const char* base = strrchr(path, '/');
    if (name != nullptr) {
      snprintf(name_, sizeof(name_), "%s", name);
    } else {
      snprintf(name_, sizeof(name_), "Playback of %s", base ? base + 1 : path);
    }
    for (char* c = name_; *c; c++) {
      if (*c == ',') *c = '_';  // a comma would end the name field of AT+CONFIG?
    }
    return true;
  }

  const char* name() const override { return name_; }
  int axes() const override { return axes_; }
  // The next recorded frame; the recordings loop. The core reads at the model's interval,
  // which is the recordings' rate, so board time and recorded time advance together.
  bool read(float* values) override {
    memcpy(values, data_ + static_cast<size_t>(pos_) * axes_, static_cast<size_t>(axes_) * sizeof(float));
    pos_ = (pos_ + 1) % frames_;
    return true;
  }
  double rate_hz() const { return rate_hz_; }
  uint32_t frames() const { return frames_; }

 private:
  static bool fail(const char* path, const char* why) {
    fprintf(stderr, "host board: sensor %s: %s\n", path, why);
    return false;
  }
  float* data_ = nullptr;
  int axes_ = 0;
  uint32_t frames_ = 0;
  uint32_t pos_ = 0;
  double rate_hz_ = 0.0;
  char name_[128] = "";
};

// --- the model ---------------------------------------------------------------------------

unsigned long g_inferences = 0;

class CompiledClassifier : public tinyml::Classifier {
 public:
  int classify(const float* input, float* probabilities) override {
#if TINYML_HAS_COMPILED_MODEL
    for (int i = 0; i < kInputSize; i++) input_[i] = tinyml::model_input_int8(input[i], i);
    int status = tinyml_model_invoke(input_, output_);
    if (status != 0) return status < 0 ? status : -status;
    g_inferences++;
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
    return "this board was built without a compiled model (RUN/firmware/compiled/)";
#endif
  }

  // Board time: the cycles an inference takes on the board over its clock. Without a cycle
  // count, 0 (AT+PROFILE? says so): this computer's time is never a board's.
  long board_time_us() const override {
    if (g_options.cycles_per_inference == 0) return 0;
    return cycles_to_us(g_options.cycles_per_inference);
  }

  // The DSP's board time: its instructions on the Cortex-M4 as QEMU counted them when
  // quantize wrote dsp_settings.h (pipeline/dsp/cost.py), one cycle each, over the clock;
  // 0 when they were not measured (no arm-none-eabi-gcc or qemu-system-arm then).
  long dsp_board_time_us() const override { return cycles_to_us(tinyml::kDspInstructions); }

 private:
  // Cycles on the board's clock, in whole microseconds rounded to nearest.
  static long cycles_to_us(unsigned long long cycles) {
    return static_cast<long>((cycles * 1000000ull + g_options.clock_hz / 2) / g_options.clock_hz);
  }

#if TINYML_HAS_COMPILED_MODEL
  int8_t input_[TINYML_MODEL_INPUT_BYTES];
  int8_t output_[TINYML_MODEL_OUTPUT_BYTES];
#endif
};

PosixUart g_uart;
CompiledClassifier g_classifier;
RecordedImu g_imu;
bool g_has_sensor = false;

bool read_profile(tinyml::DeviceIo& io) {
  io.print("Board:                host (the firmware built with g++ for this computer)\n");
  io.printf("Clock:                %llu Hz (the board's, for board time)\n", g_options.clock_hz);
  io.printf("Cycles per inference: %llu (%s)\n", g_options.cycles_per_inference, g_options.cycles_source);
  if (g_options.cycles_per_inference == 0) {
    io.print("Timing:               0 ms: no cycle count (no QEMU measurement, profile.json or MAC count)\n");
  } else {
    io.print("Timing:               board time = cycles / clock; never this computer's time\n");
  }
  io.printf("Inferences:           %lu\n", g_inferences);
  if (g_has_sensor) {
    io.printf("Sensor:               %s, %lu frames of %d axes at ", g_imu.name(),
              static_cast<unsigned long>(g_imu.frames()), g_imu.axes());
    io.print_fixed(g_imu.rate_hz(), 3);
    io.print(" Hz\n");
  } else {
    io.print("Sensor:               none\n");
  }
  io.printf("TX dropped:           %lu bytes (nobody read the UART)\n", g_uart.tx_dropped());
  return true;
}

constexpr size_t kMaxCommands = 32;
tinyml::AtCommand g_commands[kMaxCommands];

size_t build_command_table() {
  size_t n = 0;
  for (size_t i = 0; i < tinyml::kDeviceCommandCount && n < kMaxCommands - 1; i++) {
    g_commands[n++] = tinyml::kDeviceCommands[i];
  }
  g_commands[n++] = {"PROFILE", "This board: its clock, cycles per inference and where they come from",
                     nullptr, read_profile, nullptr, nullptr};
  return n;
}

[[noreturn]] void usage(const char* why) {
  fprintf(stderr,
          "host board: %s\nusage: firmware [--pty] [--sensor FILE [--sensor-name NAME]] [--time-scale X] "
          "[--clock-hz N] [--cycles-per-inference N --cycles-source TEXT] [--device-type T]\n",
          why);
  exit(2);
}

void parse_args(int argc, char** argv) {
  for (int i = 1; i < argc; i++) {
    const char* a = argv[i];
    const char* v = i + 1 < argc ? argv[i + 1] : nullptr;
    if (strcmp(a, "--pty") == 0) {
      g_options.pty = true;
      continue;
    }
    if (v == nullptr) usage(a);
    i++;
    char* end = nullptr;
    if (strcmp(a, "--pty-fd") == 0) {
      g_options.pty = true;
      g_options.pty_fd = static_cast<int>(strtol(v, &end, 10));
    } else if (strcmp(a, "--sensor") == 0) {
      g_options.sensor = v;
      end = const_cast<char*>(v) + strlen(v);
    } else if (strcmp(a, "--sensor-name") == 0) {
      g_options.sensor_name = v;
      end = const_cast<char*>(v) + strlen(v);
    } else if (strcmp(a, "--time-scale") == 0) {
      g_options.time_scale = strtod(v, &end);
      if (!(g_options.time_scale > 0.0)) usage("--time-scale must be positive");
    } else if (strcmp(a, "--clock-hz") == 0) {
      g_options.clock_hz = strtoull(v, &end, 10);
      if (g_options.clock_hz == 0) usage("--clock-hz must be positive");
    } else if (strcmp(a, "--cycles-per-inference") == 0) {
      g_options.cycles_per_inference = strtoull(v, &end, 10);
    } else if (strcmp(a, "--cycles-source") == 0) {
      g_options.cycles_source = v;
      end = const_cast<char*>(v) + strlen(v);
    } else if (strcmp(a, "--device-type") == 0) {
      g_options.device_type = v;
      end = const_cast<char*>(v) + strlen(v);
    } else {
      usage(a);
    }
    if (end == nullptr || *end != '\0') usage(a);
  }
}

// Reset: the same program again, on the same pseudo-terminal.
[[noreturn]] void reset(int master, int argc, char** argv) {
  static char fd_text[16];
  snprintf(fd_text, sizeof(fd_text), "%d", master);
  char* args[64];
  int n = 0;
  args[n++] = argv[0];
  args[n++] = const_cast<char*>("--pty-fd");
  args[n++] = fd_text;
  for (int i = 1; i < argc && n < 62; i++) {
    if (strcmp(argv[i], "--pty") == 0) continue;
    if (strcmp(argv[i], "--pty-fd") == 0) {
      i++;
      continue;
    }
    args[n++] = argv[i];
  }
  args[n] = nullptr;
  execv("/proc/self/exe", args);
  fprintf(stderr, "host board: reset failed: %s\n", strerror(errno));
  exit(3);
}

}  // namespace

int main(int argc, char** argv) {
  parse_args(argc, argv);
  signal(SIGPIPE, SIG_IGN);
  int in_fd = 0;
  int out_fd = 1;
  if (g_options.pty) {
    int master = g_options.pty_fd;
    if (master < 0) {
      char path[128];
      master = open_pty(path, sizeof(path));
      if (master < 0) {
        fprintf(stderr, "host board: cannot open a pseudo-terminal: %s\n", strerror(errno));
        return 3;
      }
      printf("char device redirected to %s (label uart0)\n", path);
      fflush(stdout);
    }
    fcntl(master, F_SETFL, fcntl(master, F_GETFL) | O_NONBLOCK);
    in_fd = out_fd = master;
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_reset_signal;
    sigaction(SIGUSR1, &sa, nullptr);
  } else {
    fcntl(0, F_SETFL, fcntl(0, F_GETFL) | O_NONBLOCK);
  }
  g_uart.attach(in_fd, out_fd);
  if (g_options.sensor != nullptr) {
    if (!g_imu.load(g_options.sensor, g_options.sensor_name)) return 4;
    g_has_sensor = true;
  }
  tinyml::DeviceInfo info = {"02:00:00:70:6F:73", g_options.device_type};
  tinyml::begin_commands(&g_classifier, g_has_sensor ? &g_imu : nullptr, info);
  tinyml::AtServer server(g_uart, g_commands, build_command_table());
  tinyml::print_banner(g_uart);
  if (g_classifier.error() != nullptr) {
    g_uart.printf("ERR: the model did not boot: %s\r\n", g_classifier.error());
  }
  server.print_prompt();
  for (;;) {
    server.poll();
    if (g_reset_requested) reset(in_fd, argc, argv);
    g_uart.idle();
  }
}
