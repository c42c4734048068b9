#include "device_commands.h"

#include <stdlib.h>
#include <string.h>

#include "base64_chunk.h"
#include "model_ops.h"  // and model_settings.h, which is included only there

namespace tinyml {

namespace {

Classifier* g_classifier = nullptr;
MotionSensor* g_sensor = nullptr;
DeviceInfo g_info = {"00:00:00:00:00:00", "TINYML_DEVICE"};

// One frame of model input: AT+RUNIMPULSESTATIC decodes into it, AT+RUNIMPULSE samples
// into it. Static: no heap on the device.
float g_features[kInputSize];
float g_probabilities[kNumClasses];

// What AT+SAMPLESETTINGS sets (data acquisition metadata; the model's own sampling rate
// is kSampleRateHz and AT+RUNIMPULSE always samples at it).
struct SampleSettings {
  char label[64];
  double interval_ms;
  long length_ms;
  char hmac_key[65];
};
SampleSettings g_sample = {"unlabeled", 0.0, 0, ""};

int model_axes() { return kInputShape[kInputDims - 1]; }

// A window of a motion sensor: (1, frames, axes) sampled at kSampleRateHz.
bool is_motion_model() { return kInputDims == 3 && kSampleRateHz > 0.0f; }

long window_ms() {
  if (!is_motion_model()) return 0;
  long frames = kInputSize / model_axes();
  return static_cast<long>(frames * 1000.0 / kSampleRateHz + 0.5);
}

// Edge Impulse's sensor codes: 1 microphone, 2 accelerometer, 3 camera, 4 9DoF,
// 5 environmental, 6 fusion.
int inference_sensor_code() {
  if (kInputDims == 4) return 3;
  if (is_motion_model() && model_axes() == 3) return 2;
  if (is_motion_model() && model_axes() == 9) return 4;
  return 6;
}

void copy_text(char* dst, size_t cap, const char* src) {
  size_t n = strlen(src);
  if (n >= cap) n = cap - 1;
  memcpy(dst, src, n);
  dst[n] = '\0';
}

// "<label>: <p>" lines, one per class, with the given indent and line end.
void print_predictions(DeviceIo& io, const char* indent, const char* newline) {
  for (int i = 0; i < kNumClasses; i++) {
    io.print(indent);
    io.print(kCategoryLabels[i]);
    io.print(": ");
    io.print_fixed(g_probabilities[i], 6);
    io.print(newline);
  }
}

// One duration as the current SDK prints it: whole ms, or whole us below a millisecond.
void print_duration(DeviceIo& io, uint32_t us) {
  if (us < 1000u) {
    io.printf("%lu us", static_cast<unsigned long>(us));
  } else {
    io.printf("%lu ms", static_cast<unsigned long>((us + 500u) / 1000u));
  }
}

// Why the model cannot run, or nullptr.
const char* boot_error() {
  if (g_classifier == nullptr) return "no classifier";
  return g_classifier->error();
}

// "ERR: <why>" when the model did not boot (hosts look for lines starting with ERR).
bool print_boot_error(DeviceIo& io, const char* newline) {
  const char* why = boot_error();
  if (why == nullptr) return false;
  io.print("ERR: ");
  io.print(why);
  io.print(newline);
  return true;
}

// A JSON string: quotes, backslashes and control characters escaped, UTF-8 passed through.
void print_json_string(DeviceIo& io, const char* text) {
  io.print("\"");
  for (const char* c = text; *c != '\0'; c++) {
    unsigned char u = static_cast<unsigned char>(*c);
    if (u == '"' || u == '\\') {
      char escaped[2] = {'\\', static_cast<char>(u)};
      io.write(escaped, 2);
    } else if (u < 0x20 || u == 0x7f) {
      io.printf("\\u%04x", static_cast<unsigned>(u));
    } else {
      io.write(c, 1);
    }
  }
  io.print("\"");
}

// --- AT+CONFIG?, AT+DEVICEINFO?, AT+SAMPLESETTINGS ----------------------------------------

void print_device_info(DeviceIo& io) {
  io.printf("ID:         %s\n", g_info.id);
  io.printf("Type:       %s\n", g_info.type);
  io.printf("AT Version: %s\n", kAtCommandSetVersion);
  io.printf("Data Transfer Baudrate: %ld\n", kTransferBaudrate);
}

void print_sample_settings(DeviceIo& io) {
  io.printf("Label:     %s\n", g_sample.label);
  io.print("Interval:  ");
  io.print_fixed(g_sample.interval_ms, 2);
  io.print(" ms.\n");
  io.printf("Length:    %ld ms.\n", g_sample.length_ms);
  io.printf("HMAC key:  %s\n", g_sample.hmac_key);
}

bool read_config(DeviceIo& io) {
  print_boot_error(io, "\n");  // before the first section, where hosts look for it
  io.print("===== Device info =====\n");
  print_device_info(io);
  io.print("\n===== Sensors ======\n");
  if (g_sensor != nullptr) {
    long seconds = (window_ms() + 999) / 1000;
    io.printf("Name: %s, Max sample length: %lds, Frequencies: [", g_sensor->name(),
              seconds > 0 ? seconds : 1);
    io.print_fixed(kSampleRateHz, 2);
    io.print("Hz]\n");
  }
  io.print("\n===== Snapshot ======\n");
  io.print("Has snapshot:         0\n");
  io.print("Supports stream:      0\n");
  io.print("Color depth:          RGB\n");
  io.print("Resolutions:          [ ]\n");
  io.print("\n===== Inference ======\n");
  io.printf("Sensor:           %d\n", inference_sensor_code());
  io.print("Model type:       classification\n");
  io.print("\n===== WIFI =====\n");
  io.print("SSID:\n");
  io.print("Password:\n");
  io.print("Security:  0\n");
  io.printf("MAC:       %s\n", g_info.id);
  io.print("Connected: 0\n");
  io.print("Present:   0\n");
  io.print("\n===== Sampling parameters =====\n");
  print_sample_settings(io);
  io.print("\n===== Upload settings =====\n");
  io.print("Api Key:   \n");
  io.print("Host:      \n");
  io.print("Path:      \n");
  io.print("\n===== Remote management =====\n");
  io.print("URL:        \n");
  io.print("Connected:  0\n");
  io.print("Last error:\n");
  return true;
}

bool read_device_info(DeviceIo& io) {
  print_device_info(io);
  return true;
}

bool read_sample_settings(DeviceIo& io) {
  print_sample_settings(io);
  return true;
}

// AT+SAMPLESETTINGS=[LABEL],[INTERVAL_MS],[LENGTH_MS],[HMAC_KEY]: an empty argument keeps
// the current value.
bool write_sample_settings(DeviceIo& io, char** argv, int argc) {
  const char* label = argc > 0 ? argv[0] : "";
  const char* interval_text = argc > 1 ? argv[1] : "";
  const char* length_text = argc > 2 ? argv[2] : "";
  const char* key = argc > 3 ? argv[3] : "";
  double interval = g_sample.interval_ms;
  long length = g_sample.length_ms;
  char* end = nullptr;
  bool valid = true;
  if (interval_text[0] != '\0') {
    interval = strtod(interval_text, &end);
    valid = valid && *end == '\0';
  }
  if (length_text[0] != '\0') {
    length = strtol(length_text, &end, 10);
    valid = valid && *end == '\0';
  }
  if (!valid || !(interval > 0.0) || length <= 0) {
    io.print("Invalid interval or length (");
    io.print(interval_text);
    io.print(",");
    io.print(length_text);
    io.print(valid ? "): expected positive numbers of ms\n" : "): expected numbers of ms\n");
    return true;
  }
  if (label[0] != '\0') copy_text(g_sample.label, sizeof(g_sample.label), label);
  if (key[0] != '\0') copy_text(g_sample.hmac_key, sizeof(g_sample.hmac_key), key);
  g_sample.interval_ms = interval;
  g_sample.length_ms = length;
  io.print("OK\n");
  return true;
}

// --- AT+MODELINFO? ---------------------------------------------------------------------------

bool read_model_info(DeviceIo& io) {
  print_boot_error(io, "\n");
  io.printf("SHA-256:           %s\n", kModelSha256);
  io.print("Input shape:       [");
  for (int i = 0; i < kInputDims; i++) io.printf("%s%d", i ? ", " : "", kInputShape[i]);
  io.print("]\n");
  io.print("Input dtype:       int8\n");
  io.printf("Input size:        %d\n", kInputSize);
  io.print("Input scale:       ");
  io.print_float32(kInputScale);
  io.printf("\nInput zero point:  %d\n", kInputZeroPoint);
  io.print("Output scale:      ");
  io.print_float32(kOutputScale);
  io.printf("\nOutput zero point: %d\n", kOutputZeroPoint);
  io.print("Labels:            [");
  for (int i = 0; i < kNumClasses; i++) {
    if (i) io.print(", ");
    print_json_string(io, kCategoryLabels[i]);
  }
  io.print("]\nOps:               [");
  for (int i = 0; i < kNumOps; i++) {
    if (i) io.print(", ");
    print_json_string(io, kOpNames[i]);
  }
  io.printf("]\nBoard:             %s\n", kBoard);
  io.printf("Arena size:        %d bytes (kTensorArenaSize)\n", kTensorArenaSize);
  long used = g_classifier != nullptr ? g_classifier->arena_used_bytes() : -1;
  if (used >= 0) {
    io.printf("Arena used:        %ld bytes (measured by TFLM on this device)\n", used);
  } else {
    io.print("Arena used:        unknown\n");
  }
  io.printf("MACs:              %ld\n", static_cast<long>(kModelMacs));
  io.print("Sample rate:       ");
  io.print_fixed(kSampleRateHz, 2);
  io.print(" Hz\n");
  return true;
}

// --- AT+RUNIMPULSESTATIC=<debug>,<N> ---------------------------------------------------------

// Reads exactly kStaticChunkSize characters; false when they do not all arrive within
// kStaticChunkTimeoutUs of the start of the wait. CR and LF are skipped: they are never
// base64, and a host that ends its command line with CRLF would otherwise shift the data.
bool read_chunk(DeviceIo& io, char* chunk) {
  uint32_t start = io.micros();
  int got = 0;
  while (got < kStaticChunkSize) {
    int byte = io.read();
    if (byte >= 0) {
      if (byte != '\r' && byte != '\n') chunk[got++] = static_cast<char>(byte);
    } else if (static_cast<uint32_t>(io.micros() - start) > kStaticChunkTimeoutUs) {
      return false;
    } else {
      io.idle();
    }
  }
  return true;
}

bool parse_count(const char* text, long* out) {
  char* end = nullptr;
  long n = strtol(text, &end, 10);
  if (end == text || *end != '\0' || n <= 0) return false;
  *out = n;
  return true;
}

// Takes the N values of one AT+RUNIMPULSESTATIC transfer into g_features (the first
// kInputSize of them; the rest are counted, not stored). False when the transfer failed;
// it then printed why, END OUTPUT, and no prompt follows.
bool receive_values(DeviceIo& io, long n) {
  const unsigned long characters = 4ul * ((4ul * static_cast<unsigned long>(n) + 2ul) / 3ul);
  const unsigned long chunks = (characters + kStaticChunkSize - 1) / kStaticChunkSize;
  char chunk[kStaticChunkSize];
  uint8_t decoded[kStaticChunkSize / 4 * 3];
  uint8_t pending[4];  // bytes of the float32 value being assembled, little-endian
  unsigned long bytes = 0;
  for (unsigned long c = 0; c < chunks; c++) {
    if (!read_chunk(io, chunk)) {
      io.print("TIMEOUT\r\nEND OUTPUT\r\n");
      return false;
    }
    int got = base64_decode_chunk(chunk, sizeof(chunk), decoded, sizeof(decoded));
    if (got < 0) {
      io.printf("ERR: chunk %lu is not base64\r\nEND OUTPUT\r\n", c + 1);
      return false;
    }
    for (int i = 0; i < got; i++, bytes++) {
      pending[bytes % 4] = decoded[i];
      unsigned long index = bytes / 4;
      if (bytes % 4 == 3 && index < static_cast<unsigned long>(kInputSize)) {
        uint32_t bits = static_cast<uint32_t>(pending[0]) |
                        (static_cast<uint32_t>(pending[1]) << 8) |
                        (static_cast<uint32_t>(pending[2]) << 16) |
                        (static_cast<uint32_t>(pending[3]) << 24);
        memcpy(&g_features[index], &bits, sizeof(float));
      }
    }
    unsigned long values = bytes / 4;
    io.printf("OK %lu \r\n", values < static_cast<unsigned long>(n) ? values : static_cast<unsigned long>(n));
  }
  if (bytes / 4 < static_cast<unsigned long>(n)) {
    io.printf("ERR: %lu values arrived, %ld were announced\r\nEND OUTPUT\r\n", bytes / 4, n);
    return false;
  }
  return true;
}

bool write_run_impulse_static(DeviceIo& io, char** argv, int argc) {
  if (argc < 2) {
    io.print("Too few arguments! Required: 2\r\n");
    return false;
  }
  if (print_boot_error(io, "\r\n")) return true;
  // argv[0] is the debug flag (y/n). A raw-input model has no DSP stage whose output
  // debug mode would show, so it changes nothing here.
  long n = 0;
  if (!parse_count(argv[1], &n) || n > kStaticMaxValues) {
    io.printf("ERR: N must be a whole number of float32 values from 1 to %ld, got '%s'\r\n",
              kStaticMaxValues, argv[1]);
    return false;
  }
  io.printf("OK CHUNK=%d\r\n", kStaticChunkSize);
  // The whole transfer is taken even when N is not the model's input size: the host then
  // gets the size error, not a link out of step.
  if (!receive_values(io, n)) return false;
  io.printf("TRANSFER COMPLETED %ld\r\n", n);
  if (n != kInputSize) {
    io.print("ERROR: The size of the input buffer is not correct.\r\n");
    io.printf("Expected %d items, but got %d\r\n", kInputSize, static_cast<int>(n));
    io.print("RESULT -1\r\nEND OUTPUT\r\n");
    return true;
  }

  uint32_t start = io.micros();
  int status = g_classifier->classify(g_features, g_probabilities);
  uint32_t elapsed = io.micros() - start;
  if (status != 0) {
    io.printf("ERR: Failed to run classifier (%d)\r\n", status);
    print_boot_error(io, "\r\n");
    io.printf("RESULT %d\r\nEND OUTPUT\r\n", status);
    return true;
  }
  io.print("Timing: DSP 0.000 ms, inference ");
  io.print_us_as_ms(elapsed);
  io.print(" ms, anomaly 0.000 ms\r\n");
  io.print("Predictions:\r\n");
  print_predictions(io, "  ", "\r\n");
  io.print("RESULT 0\r\nEND OUTPUT\r\n");
  return true;
}

// --- AT+RUNIMPULSE -----------------------------------------------------------------------

// True when the host sent 'b'. Reads nothing after the 'b' (a CR behind it reaches the AT
// server as an empty line, as on Edge Impulse firmwares); other bytes are dropped.
bool stop_requested(DeviceIo& io) {
  int byte;
  while ((byte = io.read()) >= 0) {
    if (byte == 'b') return true;
  }
  return false;
}

// Waits until micros() reaches `deadline`; true when the host asked to stop meanwhile.
bool wait_until(DeviceIo& io, uint32_t deadline) {
  while (static_cast<int32_t>(io.micros() - deadline) < 0) {
    if (stop_requested(io)) return true;
    io.idle();
  }
  return stop_requested(io);
}

bool run_impulse(DeviceIo& io) {
  if (print_boot_error(io, "\n")) return true;
  const int axes = model_axes();
  if (!is_motion_model()) {
    io.print("ERR: the model's input is not a window of a motion sensor (no sample rate)\n");
    return true;
  }
  if (g_sensor == nullptr) {
    io.print("ERR: No sensor data: the IMU did not start\n");
    return true;
  }
  if (g_sensor->axes() != axes) {
    io.printf("ERR: the model takes %d values per sample, the %s gives %d\n", axes,
              g_sensor->name(), g_sensor->axes());
    return true;
  }
  const int frames = kInputSize / axes;
  const uint32_t interval_us = static_cast<uint32_t>(1.0e6 / kSampleRateHz + 0.5);

  io.print("Inferencing settings:\n");
  io.print("\tInterval: ");
  io.print_fixed(1000.0 / kSampleRateHz, 2);
  io.print(" ms.\n");
  io.printf("\tFrame size: %d\n", kInputSize);
  io.printf("\tSample length: %ld ms.\n", window_ms());
  io.printf("\tNo. of classes: %d\n", kNumClasses);
  io.print("Starting inferencing, press 'b' to break\n");
  io.print("Starting inferencing in 2 seconds...\n");
  bool stop = wait_until(io, io.micros() + kRunImpulsePauseUs);
  while (!stop) {
    io.print("Sampling...\n");
    uint32_t next = io.micros();
    for (int f = 0; f < frames && !stop; f++) {
      stop = wait_until(io, next);
      if (!stop && !g_sensor->read(&g_features[f * axes])) {
        io.printf("ERR: failed to read the %s\n", g_sensor->name());
        return true;
      }
      next += interval_us;
    }
    if (stop) break;
    uint32_t start = io.micros();
    int status = g_classifier->classify(g_features, g_probabilities);
    uint32_t elapsed = io.micros() - start;
    if (status != 0) {
      io.printf("ERR: Failed to run classifier (%d)\n", status);
      print_boot_error(io, "\n");
      return true;
    }
    io.print("Timing: DSP ");
    print_duration(io, 0);
    io.print(", inference ");
    print_duration(io, elapsed);
    io.print(", anomaly ");
    print_duration(io, 0);
    io.print("\n#Classification predictions:\n");
    print_predictions(io, "  ", "\n");
    stop = wait_until(io, io.micros() + kRunImpulsePauseUs);
  }
  io.print("Inferencing stopped by user\r\n");
  return true;
}

}  // namespace

const AtCommand kDeviceCommands[] = {
    {"CONFIG", "Lists complete config", nullptr, read_config, nullptr, nullptr},
    {"DEVICEINFO", "Lists device information", nullptr, read_device_info, nullptr, nullptr},
    {"SAMPLESETTINGS", "Lists or sets current sampling settings", nullptr, read_sample_settings,
     write_sample_settings, "[LABEL],[INTERVAL_MS],[LENGTH_MS],[HMAC_KEY]"},
    {"RUNIMPULSE", "Runs the model continuously on the IMU, press 'b' to stop", run_impulse,
     nullptr, nullptr, nullptr},
    {"RUNIMPULSESTATIC",
     "Classifies N float32 values sent in base64 chunks (DEBUG y or n; N the input size)",
     nullptr, nullptr, write_run_impulse_static, "DEBUG,N"},
    {"MODELINFO", "Lists the model: SHA-256, input shape and quantization, labels, arena",
     nullptr, read_model_info, nullptr, nullptr},
};
const size_t kDeviceCommandCount = sizeof(kDeviceCommands) / sizeof(kDeviceCommands[0]);

void begin_commands(Classifier* classifier, MotionSensor* sensor, const DeviceInfo& info) {
  g_classifier = classifier;
  g_sensor = sensor;
  g_info = info;
  if (is_motion_model()) {
    g_sample.interval_ms = 1000.0 / kSampleRateHz;
    g_sample.length_ms = window_ms();
  }
}

void print_banner(DeviceIo& io) {
  io.printf("tinyml-pipeline device: model %.12s..., %d classes, AT command set %s\r\n",
            kModelSha256, kNumClasses, kAtCommandSetVersion);
}

}  // namespace tinyml
