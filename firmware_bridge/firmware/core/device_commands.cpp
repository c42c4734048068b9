#include "device_commands.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "acquisition.h"
#include "base64_chunk.h"
#include "model_ops.h"  // and model_settings.h
#include "tm_impulse.h"  // and dsp_settings.h: raw window -> features

namespace tinyml {

namespace {

Classifier* g_classifier = nullptr;
MotionSensor* g_sensor = nullptr;
DeviceInfo g_info = {"00:00:00:00:00:00", "TINYML_DEVICE"};

// One raw window: AT+RUNIMPULSESTATIC decodes into it, AT+RUNIMPULSE samples into it; the
// [dsp] block (tm_impulse) turns it into the model's input. Static: no heap on the device.
float g_window[kWindowSize];
float g_probabilities[kNumClasses];

// What the host stores on the device (AT+DEVICEID, AT+SAMPLESETTINGS, AT+UPLOADSETTINGS,
// AT+UPLOADHOST, AT+MGMTSETTINGS) and AT+CONFIG? shows; AT+CLEARCONFIG restores the
// defaults. The device has no network: upload and management settings are only kept.
struct Settings {
  char device_id[kSettingChars + 1];
  char label[kSettingChars + 1];
  double interval_ms;
  long length_ms;
  char hmac_key[kSettingChars + 1];
  char api_key[kSettingChars + 1];
  char upload_host[kSettingChars + 1];
  char upload_path[kSettingChars + 1];
  char mgmt_url[kSettingChars + 1];
};
Settings g_settings;

constexpr const char* kDefaultLabel = "test";
constexpr long kDefaultSampleLengthMs = 10000;
constexpr long kMaxSampleLengthMs = 86400000L;  // a day: bounds a mistyped length
// An interval within this of the sensor's own is the sensor's (hosts send 1000/f in full).
constexpr double kIntervalToleranceMs = 0.01;
constexpr int kMaxSampleAxes = 23;  // one-byte CBOR array heads

// The last sample AT+SAMPLESTART recorded, for AT+READBUFFER.
uint8_t g_sample_buffer[kSampleBufferBytes];
size_t g_sample_length = 0;

const char* const kAxisNames[9] = {"accX", "accY", "accZ", "gyrX", "gyrY",
                                   "gyrZ", "magX", "magY", "magZ"};
const char* const kAxisUnits[3] = {"m/s2", "dps", "uT"};

int model_axes() { return kWindowChannels; }

// A window of a sensor sampled at kSampleRateHz: (1, frames, axes) read by the model, or any
// time-series window the [dsp] block turns into the model's input (a microphone's too).
bool is_motion_model() { return (kHasDsp || kInputDims == 3) && kSampleRateHz > 0.0f; }

long window_ms() {
  if (!is_motion_model()) return 0;
  long frames = kWindowSize / model_axes();
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

// The interval of the sensor's readings: the model's rate (0 without one).
double sensor_interval_ms() { return kSampleRateHz > 0.0f ? 1000.0 / kSampleRateHz : 0.0; }

void reset_settings() {
  memset(&g_settings, 0, sizeof(g_settings));
  copy_text(g_settings.device_id, sizeof(g_settings.device_id), g_info.id);
  copy_text(g_settings.label, sizeof(g_settings.label), kDefaultLabel);
  g_settings.interval_ms = sensor_interval_ms();
  g_settings.length_ms = kDefaultSampleLengthMs;
}

// The longest sample, in whole seconds, whose readings fit the sample buffer.
long max_sample_seconds() {
  if (g_sensor == nullptr || !(kSampleRateHz > 0.0f)) return 0;
  size_t readings = (kSampleBufferBytes - kSampleHeaderReserve) / acquisition_reading_bytes(g_sensor->axes());
  return static_cast<long>(static_cast<double>(readings) / static_cast<double>(kSampleRateHz));
}

// A decimal number as hosts write one: [+-]digits[.digits][e[+-]digits], nothing else
// (strtod alone would also take hex, "inf" and leading blanks; the virtual device does not).
bool is_decimal(const char* text, bool fraction) {
  const char* c = text;
  if (*c == '+' || *c == '-') c++;
  int digits = 0;
  while (*c >= '0' && *c <= '9') c++, digits++;
  if (fraction && *c == '.') {
    c++;
    while (*c >= '0' && *c <= '9') c++, digits++;
  }
  if (digits == 0) return false;
  if (fraction && (*c == 'e' || *c == 'E')) {
    c++;
    if (*c == '+' || *c == '-') c++;
    if (!(*c >= '0' && *c <= '9')) return false;
    while (*c >= '0' && *c <= '9') c++;
  }
  return *c == '\0';
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

// --- AT+CONFIG?, AT+DEVICEINFO?, the stored settings -----------------------------------------
// Bytes as Edge Impulse's boards print them (firmware-arduino-nano-33-ble-sense,
// src/ingestion-sdk-platform/nano-ble33/ei_at_handlers.cpp, at_get_config and the
// at_get_*/at_set_* handlers), less what a board without a camera leaves out.

void print_device_info(DeviceIo& io) {
  io.printf("ID:         %s\n", g_settings.device_id);
  io.printf("Type:       %s\n", g_info.type);
  io.printf("AT Version: %s\n", kAtCommandSetVersion);
  io.printf("Data Transfer Baudrate: %ld\n", kTransferBaudrate);
}

void print_sample_settings(DeviceIo& io) {
  io.print("Label:     ");
  io.print(g_settings.label);
  io.print("\nInterval:  ");
  io.print_fixed(g_settings.interval_ms, 2);
  io.print(" ms.\n");
  io.printf("Length:    %ld ms.\n", g_settings.length_ms);
  io.print("HMAC key:  ");
  io.print(g_settings.hmac_key);
  io.print("\n");
}

void print_upload_settings(DeviceIo& io) {
  io.print("Api Key:   ");
  io.print(g_settings.api_key);
  io.print("\nHost:      ");
  io.print(g_settings.upload_host);
  io.print("\nPath:      ");
  io.print(g_settings.upload_path);
  io.print("\n");
}

bool read_config(DeviceIo& io) {
  print_boot_error(io, "\n");  // before the first section, where hosts look for it
  io.print("===== Device info =====\n");
  print_device_info(io);
  io.print("\n===== Sensors ======\n");
  if (g_sensor != nullptr) {
    io.print("Name: ");
    io.print(g_sensor->name());
    io.printf(", Max sample length: %lds, Frequencies: [", max_sample_seconds());
    io.print_fixed(kSampleRateHz, 2);
    io.print("Hz]\n");
  }
  // No camera: no "Color depth" or "Resolutions" line (an empty "Resolutions: [ ]" makes
  // Edge Impulse's CLI warn "Failed to parse snapshot line" on every connect).
  io.print("\n===== Snapshot ======\n");
  io.print("Has snapshot:         0\n");
  io.print("Supports stream:      0\n");
  io.print("\n===== Inference ======\n");
  io.printf("Sensor:           %d\n", inference_sensor_code());
  io.print("Model type:       classification\n");
  io.print("\n===== WIFI =====\n");
  io.print("SSID:      \n");
  io.print("Password:  \n");
  io.print("Security:  0\n");
  io.printf("MAC:       %s\n", g_settings.device_id);
  io.print("Connected: 0\n");
  io.print("Present:   0\n");
  io.print("\n===== Sampling parameters =====\n");
  print_sample_settings(io);
  io.print("\n===== Upload settings =====\n");
  print_upload_settings(io);
  io.print("\n===== Remote management =====\n");
  io.print("URL:        ");
  io.print(g_settings.mgmt_url);
  io.print("\nConnected:  0\n");
  io.print("Last error: \n");
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

// AT+SAMPLESETTINGS=LABEL,INTERVAL_MS,LENGTH_MS,[HMAC_KEY]: a key argument, even empty,
// replaces the key (Edge Impulse's daemon sends an empty one to mean none).
bool write_sample_settings(DeviceIo& io, char** argv, int argc) {
  if (argc < 3) {
    io.print("Missing argument! Required: LABEL,INTERVAL_MS,LENGTH_MS,[HMAC_KEY]\n");
    return true;
  }
  double interval = is_decimal(argv[1], true) ? strtod(argv[1], nullptr) : -1.0;
  long length = is_decimal(argv[2], false) ? strtol(argv[2], nullptr, 10) : -1;
  if (!(interval > 0.0) || !isfinite(interval) || length <= 0 || length > kMaxSampleLengthMs ||
      strlen(argv[2]) > 9) {
    io.print("Invalid interval or length (");
    io.print(argv[1]);
    io.print(",");
    io.print(argv[2]);
    io.print("): expected positive numbers of ms\n");
    return true;
  }
  copy_text(g_settings.label, sizeof(g_settings.label), argv[0]);
  if (argc > 3) copy_text(g_settings.hmac_key, sizeof(g_settings.hmac_key), argv[3]);
  g_settings.interval_ms = interval;
  g_settings.length_ms = length;
  io.print("OK\n");
  return true;
}

bool run_clear_config(DeviceIo& io) {
  io.print("Clearing config...\n");
  reset_settings();
  io.print("OK\r\n");
  return true;
}

bool read_device_id(DeviceIo& io) {
  io.print(g_settings.device_id);
  io.print("\n");
  return true;
}

bool write_device_id(DeviceIo& io, char** argv, int) {
  copy_text(g_settings.device_id, sizeof(g_settings.device_id), argv[0]);
  io.print("OK\n");
  return true;
}

bool read_upload_settings(DeviceIo& io) {
  print_upload_settings(io);
  return true;
}

bool write_upload_settings(DeviceIo& io, char** argv, int argc) {
  if (argc < 2) {
    io.print("Missing argument! Required: APIKEY,PATH\n");
    return true;
  }
  copy_text(g_settings.api_key, sizeof(g_settings.api_key), argv[0]);
  copy_text(g_settings.upload_path, sizeof(g_settings.upload_path), argv[1]);
  io.print("OK\n");
  return true;
}

bool read_upload_host(DeviceIo& io) {
  io.print(g_settings.upload_host);
  io.print("\n");
  return true;
}

bool write_upload_host(DeviceIo& io, char** argv, int) {
  copy_text(g_settings.upload_host, sizeof(g_settings.upload_host), argv[0]);
  io.print("OK\n");
  return true;
}

bool read_mgmt_settings(DeviceIo& io) {
  io.print(g_settings.mgmt_url);
  io.print("\n");
  return true;
}

bool write_mgmt_settings(DeviceIo& io, char** argv, int) {
  copy_text(g_settings.mgmt_url, sizeof(g_settings.mgmt_url), argv[0]);
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

// The last classify's duration: board time when the board knows it, else its clock since
// `start`.
uint32_t inference_us(DeviceIo& io, uint32_t start) {
  long board = g_classifier->board_time_us();
  return board >= 0 ? static_cast<uint32_t>(board) : io.micros() - start;
}

// One window through the impulse: the [dsp] block on g_window (tm_impulse), then the model.
struct ImpulseRun {
  const float* features;  // the model's input (g_window itself for a raw model)
  uint32_t dsp_us;        // board time, as inference_us()
  uint32_t inference_us;
};

// Edge Impulse's EI_IMPULSE_DSP_ERROR (edge-impulse-sdk/classifier/ei_classifier_types.h).
constexpr int kDspError = -5;

// 0, or (after printing why, ending lines with `newline`) kDspError or the classifier's code.
int run_window(DeviceIo& io, ImpulseRun* run, const char* newline) {
  int dsp_status = impulse_init();  // the tables, once per boot: not one window's time
  uint32_t start = io.micros();
  g_classifier->dsp_begin();
  if (dsp_status == 0) run->features = impulse_features(g_window, &dsp_status);
  g_classifier->dsp_end();
  long board = g_classifier->dsp_board_time_us();
  run->dsp_us = !kHasDsp ? 0u : board >= 0 ? static_cast<uint32_t>(board) : io.micros() - start;
  if (dsp_status != 0) {
    io.printf("ERR: Failed to compute the %s features (tm_dsp error %d)%s", dsp_block_name(), dsp_status, newline);
    return kDspError;
  }
  start = io.micros();
  int status = g_classifier->classify(run->features, g_probabilities);
  run->inference_us = inference_us(io, start);
  if (status != 0) {
    io.printf("ERR: Failed to run classifier (%d)%s", status, newline);
    print_boot_error(io, newline);
  }
  return status;
}

// The model's input as the little-endian bits of each float32, in hex: what the host compares
// byte for byte with its own features (AT+RUNIMPULSESTATIC=y,N).
void print_feature_bits(DeviceIo& io, const float* features) {
  io.print("Features (float32 hex):");
  for (int i = 0; i < kInputSize; i++) {
    uint32_t bits;
    memcpy(&bits, &features[i], sizeof(bits));
    io.printf(" %08lx", static_cast<unsigned long>(bits));
  }
  io.print("\r\n");
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

// Takes the N values of one AT+RUNIMPULSESTATIC transfer into g_window (the first
// kWindowSize of them; the rest are counted, not stored). False when the transfer failed;
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
      if (bytes % 4 == 3 && index < static_cast<unsigned long>(kWindowSize)) {
        uint32_t bits = static_cast<uint32_t>(pending[0]) |
                        (static_cast<uint32_t>(pending[1]) << 8) |
                        (static_cast<uint32_t>(pending[2]) << 16) |
                        (static_cast<uint32_t>(pending[3]) << 24);
        memcpy(&g_window[index], &bits, sizeof(float));
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
  // argv[0] is the debug flag (y/n): with y, the model's input (the [dsp] block's features
  // of the window, or the window for a raw model) is printed before the Timing line.
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
  if (n != kWindowSize) {
    io.print("ERROR: The size of the input buffer is not correct.\r\n");
    io.printf("Expected %d items, but got %d\r\n", kWindowSize, static_cast<int>(n));
    io.print("RESULT -1\r\nEND OUTPUT\r\n");
    return true;
  }

  ImpulseRun run;
  int status = run_window(io, &run, "\r\n");
  if (status != 0) {
    io.printf("RESULT %d\r\nEND OUTPUT\r\n", status);
    return true;
  }
  if (argv[0][0] == 'y') print_feature_bits(io, run.features);
  io.print("Timing: DSP ");
  io.print_us_as_ms(run.dsp_us);
  io.print(" ms, inference ");
  io.print_us_as_ms(run.inference_us);
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

// Waits until micros() reaches `deadline`, reading nothing (bytes wait for the AT server).
void wait_quietly(DeviceIo& io, uint32_t deadline) {
  while (static_cast<int32_t>(io.micros() - deadline) < 0) io.idle();
}

// One result as the current SDK prints it; with `debug`, the features before it, as
// run_classifier(..., debug = true) prints them (edge-impulse-sdk/classifier/ei_run_classifier.h).
void print_result(DeviceIo& io, const ImpulseRun& run, bool debug) {
  if (debug) {
    io.printf("Features (%lu ms.): ", static_cast<unsigned long>(run.dsp_us / 1000u));
    for (int i = 0; i < kInputSize; i++) {
      io.print_fixed(run.features[i], 6);
      io.print(" ");
    }
    io.print("\n");
  }
  io.print("Timing: DSP ");
  print_duration(io, run.dsp_us);
  io.print(", inference ");
  print_duration(io, run.inference_us);
  io.print(", anomaly ");
  print_duration(io, 0);
  io.print("\n#Classification predictions:\n");
  print_predictions(io, "  ", "\n");
}

// Classifies g_window and prints the result; false (after printing why) on failure.
bool classify_and_print(DeviceIo& io, bool debug) {
  ImpulseRun run;
  if (run_window(io, &run, "\n") != 0) return false;
  print_result(io, run, debug);
  return true;
}

// Reads frames [from, to) of the window from the sensor, one every interval_us from *next;
// true when the host sent 'b' (or the sensor failed, having said so: *failed).
bool sample_frames(DeviceIo& io, int from, int to, int axes, uint32_t interval_us, uint32_t* next,
                   bool* failed) {
  for (int f = from; f < to; f++) {
    if (wait_until(io, *next)) return true;
    if (!g_sensor->read(&g_window[f * axes])) {
      io.printf("ERR: failed to read the %s\n", g_sensor->name());
      *failed = true;
      return true;
    }
    *next += interval_us;
  }
  return false;
}

enum class Mode { kNormal, kDebug, kContinuous };

// AT+RUNIMPULSE, AT+RUNIMPULSEDEBUG and AT+RUNIMPULSECONT: the settings, then results until
// 'b'. Normal and debug: a window, a result, 2 s of pause. Continuous: a result every
// slice of the window over the last whole window, no pause (run_classifier_continuous in
// firmware-espressif-esp32, edge-impulse/inference/ei_run_fusion_impulse.cpp).
bool run_inference(DeviceIo& io, Mode mode) {
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
  const int frames = kWindowSize / axes;
  const uint32_t interval_us = static_cast<uint32_t>(1.0e6 / kSampleRateHz + 0.5);

  io.print("Inferencing settings:\n");
  io.print("\tInterval: ");
  io.print_fixed(1000.0 / kSampleRateHz, 2);
  io.print(" ms.\n");
  io.printf("\tFrame size: %d\n", kWindowSize);
  io.printf("\tSample length: %ld ms.\n", window_ms());
  io.printf("\tNo. of classes: %d\n", kNumClasses);
  io.print("Starting inferencing, press 'b' to break\n");
  bool stop = false;
  bool failed = false;
  if (mode == Mode::kContinuous) {
    const int slice = frames / kSlicesPerWindow > 0 ? frames / kSlicesPerWindow : 1;
    uint32_t next = io.micros();
    int from = 0;  // the first result needs a whole window, then each slice gives one
    while (!stop) {
      stop = sample_frames(io, from, frames, axes, interval_us, &next, &failed);
      if (failed) return true;
      if (stop) break;
      if (!classify_and_print(io, false)) return true;
      memmove(g_window, g_window + slice * axes,
              static_cast<size_t>(frames - slice) * axes * sizeof(float));
      from = frames - slice;
    }
  } else {
    io.print("Starting inferencing in 2 seconds...\n");
    stop = wait_until(io, io.micros() + kRunImpulsePauseUs);
    while (!stop) {
      io.print("Sampling...\n");
      uint32_t next = io.micros();
      stop = sample_frames(io, 0, frames, axes, interval_us, &next, &failed);
      if (failed) return true;
      if (stop) break;
      if (!classify_and_print(io, mode == Mode::kDebug)) return true;
      stop = wait_until(io, io.micros() + kRunImpulsePauseUs);
    }
  }
  io.print("Inferencing stopped by user\r\n");
  return true;
}

bool run_impulse(DeviceIo& io) { return run_inference(io, Mode::kNormal); }
bool run_impulse_cont(DeviceIo& io) { return run_inference(io, Mode::kContinuous); }

// AT+RUNIMPULSEDEBUG=<y|n>: 'y' asks for the faster data baud rate; this device has none
// (Data Transfer Baudrate is 115200), so it answers at the one it has.
bool write_run_impulse_debug(DeviceIo& io, char**, int) { return run_inference(io, Mode::kDebug); }

// --- AT+SAMPLESTART, AT+READBUFFER -----------------------------------------------------------
// As Edge Impulse's boards without a network record a sample for its daemon
// (firmware-arduino-nano-33-ble-sense, src/ingestion-sdk-c/ei_sampler.cpp, and
// edge-impulse-cli, shared/daemon/ei-serial-protocol.ts startSampling): settings, "Sampling...",
// "Done sampling", then "Used buffer, from=0, to=<bytes>." for AT+READBUFFER to fetch.

bool write_sample_start(DeviceIo& io, char** argv, int argc) {
  if (argc < 1 || argv[0][0] == '\0') {
    io.print("Missing sensor name!\n");
    return true;
  }
  if (g_sensor == nullptr || strcmp(argv[0], g_sensor->name()) != 0) {
    io.print("ERR: Failed to find sensor '");
    io.print(argv[0]);
    io.print("' in the sensor list\n");
    return true;
  }
  g_sample_length = 0;
  const int axes = g_sensor->axes();
  const double interval = g_settings.interval_ms;
  if (axes < 1 || axes > kMaxSampleAxes) {
    io.printf("ERR: Failed to start sampling: %d axes, at most %d fit a sample\n", axes, kMaxSampleAxes);
    return true;
  }
  if (!(kSampleRateHz > 0.0f) || fabs(interval - sensor_interval_ms()) > kIntervalToleranceMs) {
    io.print("ERR: Failed to start sampling: the sensor reads every ");
    io.print_fixed(sensor_interval_ms(), 2);
    io.print(" ms, not every ");
    io.print_fixed(interval, 2);
    io.print(" ms (set INTERVAL_MS with AT+SAMPLESETTINGS)\n");
    return true;
  }
  // As ei_sampler.cpp: samples_required = length / interval, rounded down.
  const double readings = floor(static_cast<double>(g_settings.length_ms) / interval);
  if (readings < 1.0) {
    io.printf("ERR: Failed to start sampling: %ld ms hold no reading\n", g_settings.length_ms);
    return true;
  }
  const char* names[kMaxSampleAxes];
  const char* units[kMaxSampleAxes];
  for (int i = 0; i < axes; i++) {
    names[i] = g_sensor->axis_name(i);
    units[i] = g_sensor->axis_units(i);
  }
  AcquisitionWriter writer(g_sample_buffer, sizeof(g_sample_buffer));
  bool fits = writer.begin(g_settings.device_id, g_info.type, interval, names, units, axes,
                           g_settings.hmac_key[0] != '\0');
  if (!fits || static_cast<double>(writer.length()) + readings * acquisition_reading_bytes(axes) + 1.0 >
                   static_cast<double>(sizeof(g_sample_buffer))) {
    io.print("ERR: Failed to start sampling: ");
    io.print_fixed(readings, 0);  // no %f: newlib-nano's printf has none
    io.printf(" readings do not fit the %lu-byte sample buffer (at most %ld s)\n",
              static_cast<unsigned long>(sizeof(g_sample_buffer)), max_sample_seconds());
    return true;
  }
  io.print("Sampling settings:\n");
  io.print("\tInterval: ");
  io.print_fixed(interval, 5);
  io.print(" ms.\n");
  io.printf("\tLength: %ld ms.\n", g_settings.length_ms);
  io.print("\tName: ");
  io.print(g_settings.label);
  io.print("\n\tHMAC Key: ");
  io.print(g_settings.hmac_key);
  io.print("\n\tFile name: /fs/");
  io.print(g_settings.label);
  io.print("\n");
  io.printf("Starting in %lu ms... (or until all flash was erased)\n",
            static_cast<unsigned long>(kSampleStartDelayUs / 1000u));
  wait_quietly(io, io.micros() + kSampleStartDelayUs);
  io.print("Sampling...\n");
  const uint32_t interval_us = static_cast<uint32_t>(interval * 1000.0 + 0.5);
  uint32_t next = io.micros();
  float values[kMaxSampleAxes];
  for (long r = 0; r < static_cast<long>(readings); r++) {
    wait_quietly(io, next);
    if (!g_sensor->read(values)) {
      io.printf("ERR: failed to read the %s\n", g_sensor->name());
      return true;
    }
    writer.add(values);
    next += interval_us;
  }
  size_t length = writer.finish(g_settings.hmac_key);
  if (length == 0) {
    io.print("ERR: the sample did not fit the sample buffer\n");
    return true;
  }
  g_sample_length = length;
  io.printf("Done sampling, total bytes collected: %lu\n", static_cast<unsigned long>(length));
  io.printf("Not uploading file, not connected to WiFi. Used buffer, from=0, to=%lu.\n",
            static_cast<unsigned long>(length));
  io.print("OK\n");
  return true;
}

void write_to_io(const char* text, size_t n, void* ctx) { static_cast<DeviceIo*>(ctx)->write(text, n); }

bool parse_offset(const char* text, long* out) {
  if (!is_decimal(text, false) || text[0] == '-' || strlen(text) > 9) return false;
  *out = strtol(text, nullptr, 10);
  return true;
}

// AT+READBUFFER=START,LENGTH,[USEMAXRATE]: the base64 of the sample's bytes START to
// START+LENGTH (cut at its end), on one line. Edge Impulse's daemon sends its "from,to"
// with from = 0, so LENGTH is the file's length. 'y' brackets the data with OK lines
// (where a board switches baud rate; this one has only 115200).
bool write_read_buffer(DeviceIo& io, char** argv, int argc) {
  if (argc < 2) {
    io.print("Missing argument! Required: START,LENGTH,[USEMAXRATE]\n");
    return true;
  }
  long start = 0;
  long length = 0;
  bool ok = parse_offset(argv[0], &start) && parse_offset(argv[1], &length) &&
            static_cast<size_t>(start) <= g_sample_length;
  bool max_rate = argc >= 3 && argv[2][0] == 'y';
  if (max_rate) io.print("OK\r\n");
  if (ok) {
    size_t available = g_sample_length - static_cast<size_t>(start);
    size_t n = static_cast<size_t>(length) < available ? static_cast<size_t>(length) : available;
    base64_encode(g_sample_buffer + start, n, write_to_io, &io);
  }
  if (max_rate) io.print("\r\nOK\r\n");
  io.print(ok ? "\n" : "Failed to read from buffer\n");
  return true;
}

}  // namespace

// Names, help texts and argument lists as Edge Impulse's command set 1.8.0 has them
// (firmware-sdk/at-server/ei_at_command_set.h); the virtual device reads this table too.
const AtCommand kDeviceCommands[] = {
    {"CONFIG", "Lists complete config", nullptr, read_config, nullptr, nullptr},
    {"DEVICEINFO", "Lists device information", nullptr, read_device_info, nullptr, nullptr},
    {"SAMPLESETTINGS", "Lists or sets current sampling settings", nullptr, read_sample_settings,
     write_sample_settings, "LABEL,INTERVAL_MS,LENGTH_MS,[HMAC_KEY]"},
    {"SAMPLESTART", "Start sampling", nullptr, nullptr, write_sample_start, "SENSOR_NAME"},
    {"READBUFFER", "Read from the temporary buffer (as base64)", nullptr, nullptr, write_read_buffer,
     "START,LENGTH,[USEMAXRATE]"},
    {"CLEARCONFIG", "Clears complete config", run_clear_config, nullptr, nullptr, nullptr},
    {"DEVICEID", "Sets the device ID", nullptr, read_device_id, write_device_id, "DEVICEID"},
    {"UPLOADSETTINGS", "Lists or sets current upload settings (stored; no network)", nullptr,
     read_upload_settings, write_upload_settings, "APIKEY,PATH"},
    {"UPLOADHOST", "Sets upload host (stored; no network)", nullptr, read_upload_host,
     write_upload_host, "HOST"},
    {"MGMTSETTINGS", "Lists or sets current management settings (stored; no network)", nullptr,
     read_mgmt_settings, write_mgmt_settings, "URL"},
    {"RUNIMPULSE", "Run the impulse", run_impulse, nullptr, nullptr, nullptr},
    {"RUNIMPULSEDEBUG", "Run the impulse with extra debug output", nullptr, nullptr,
     write_run_impulse_debug, "USEMAXRATE"},
    {"RUNIMPULSECONT", "Run the impulse continuously", run_impulse_cont, nullptr, nullptr, nullptr},
    {"RUNIMPULSESTATIC",
     "Classifies N float32 values sent in base64 chunks (DEBUG y or n; N the input size)",
     nullptr, nullptr, write_run_impulse_static, "DEBUG,N"},
    {"MODELINFO", "Lists the model: SHA-256, input shape and quantization, labels, arena",
     nullptr, read_model_info, nullptr, nullptr},
};
const size_t kDeviceCommandCount = sizeof(kDeviceCommands) / sizeof(kDeviceCommands[0]);

const char* MotionSensor::axis_name(int axis) const {
  return axis >= 0 && axis < 9 ? kAxisNames[axis] : "axis";
}

const char* MotionSensor::axis_units(int axis) const {
  return axis >= 0 && axis < 9 ? kAxisUnits[axis / 3] : "";
}

void begin_commands(Classifier* classifier, MotionSensor* sensor, const DeviceInfo& info) {
  g_classifier = classifier;
  g_sensor = sensor;
  g_info = info;
  reset_settings();
  g_sample_length = 0;
}

void print_banner(DeviceIo& io) {
  io.printf("tinyml-pipeline device: model %.12s..., %d classes, AT command set %s\r\n",
            kModelSha256, kNumClasses, kAtCommandSetVersion);
}

}  // namespace tinyml
