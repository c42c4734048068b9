// The device's AT command table (shared/PROTOCOL.md) and what its handlers talk to.
//
// The handlers know the model only through model_settings.h and the Classifier below, and
// the board only through DeviceIo and MotionSensor: the sketch binds them to TFLM and the
// IMU, the host test harness to stand-ins, and both run this same code.
// Plain C++14, no Arduino or TFLM headers, no heap.

#ifndef TINYML_DEVICE_COMMANDS_H_
#define TINYML_DEVICE_COMMANDS_H_

#include <stddef.h>
#include <stdint.h>

#include "at_server.h"
#include "device_io.h"

namespace tinyml {

// Characters per AT+RUNIMPULSESTATIC chunk: Edge Impulse's value on the Nano 33 BLE Sense.
// A multiple of 16, so every chunk decodes on its own into whole float32 values. A board
// may set its own (-DTINYML_STATIC_CHUNK_SIZE=128, Edge Impulse's value on the ESP32).
#ifndef TINYML_STATIC_CHUNK_SIZE
#define TINYML_STATIC_CHUNK_SIZE 32
#endif
constexpr int kStaticChunkSize = TINYML_STATIC_CHUNK_SIZE;
static_assert(kStaticChunkSize % 16 == 0, "a chunk must hold whole float32 values");
// Each chunk must arrive within this long of the device starting to wait for it.
constexpr uint32_t kStaticChunkTimeoutUs = 100000;
// The largest N AT+RUNIMPULSESTATIC accepts (values are streamed, not stored, past the
// model's input size; this only bounds a mistyped N).
constexpr long kStaticMaxValues = 1L << 20;
constexpr uint32_t kRunImpulsePauseUs = 2000000;  // "Starting inferencing in 2 seconds..."
constexpr long kTransferBaudrate = 115200;
// AT+RUNIMPULSECONT classifies the last window once per slice of it (Edge Impulse's
// EI_CLASSIFIER_SLICES_PER_MODEL_WINDOW, 4 in its motion firmwares).
constexpr int kSlicesPerWindow = 4;
// AT+SAMPLESTART records one sample, as a signed CBOR acquisition file, into this buffer
// (static: no heap). 16 KB hold 10 s of a 3-axis accelerometer at 62.5 Hz (16 bytes a
// reading); AT+CONFIG? reports the longest sample that fits as "Max sample length".
constexpr size_t kSampleBufferBytes = 16384;
// Room kept for the file's header when computing that maximum (the header of a 9-axis
// sample with 127-character names is under 1 KB).
constexpr size_t kSampleHeaderReserve = 1024;
// Characters a stored setting keeps (label, HMAC key, device ID, API key, host, path,
// URL); longer values are cut. Edge Impulse API keys are 67 characters.
constexpr size_t kSettingChars = 127;
// "Starting in 2000 ms..." before AT+SAMPLESTART samples (the daemon's minimum delay).
constexpr uint32_t kSampleStartDelayUs = 2000000;
// The model: kInputSize float32 values in, kNumClasses probabilities out.
class Classifier {
 public:
  virtual ~Classifier() {}
  // 0 on success, a negative code otherwise (error() then says why).
  virtual int classify(const float* input, float* probabilities) = 0;
  // Why the model cannot run (it did not boot), or nullptr when it can.
  virtual const char* error() const { return nullptr; }
  // Bytes of the arena the interpreter uses, or -1 when not known.
  virtual long arena_used_bytes() const { return -1; }
  // Microseconds of board time the last classify took, when the board knows it better than
  // its clock does (a host or emulated board: cycles over the board's clock); -1: time it
  // with DeviceIo::micros(), as a real board does.
  virtual long board_time_us() const { return -1; }
  // Around the DSP of one window (tm_impulse): a board that counts instructions times it.
  virtual void dsp_begin() {}
  virtual void dsp_end() {}
  // Microseconds of board time the last window's DSP took, as board_time_us(); -1: time it
  // with DeviceIo::micros().
  virtual long dsp_board_time_us() const { return -1; }
};

// The board's motion sensor: one reading is axes() values in m/s^2.
class MotionSensor {
 public:
  virtual ~MotionSensor() {}
  virtual const char* name() const = 0;
  virtual int axes() const = 0;
  virtual bool read(float* values) = 0;
  // Axis names and units as the acquisition file lists them (Edge Impulse's: accX, accY,
  // accZ in m/s2, then gyrX.. in dps and magX.. in uT for a 9DoF IMU).
  virtual const char* axis_name(int axis) const;
  virtual const char* axis_units(int axis) const;
};

struct DeviceInfo {
  const char* id;    // a MAC address, XX:XX:XX:XX:XX:XX
  const char* type;  // e.g. ARDUINO_NANO33BLE
};

// Binds the handlers to the model, the sensor (nullptr: none) and the device's identity.
// The objects must outlive the command table's use.
void begin_commands(Classifier* classifier, MotionSensor* sensor, const DeviceInfo& info);

// The table the AtServer serves (AT+HELP is the server's own).
extern const AtCommand kDeviceCommands[];
extern const size_t kDeviceCommandCount;

// One line at boot, before the first prompt.
void print_banner(DeviceIo& io);

}  // namespace tinyml

#endif  // TINYML_DEVICE_COMMANDS_H_
