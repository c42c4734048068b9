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
};

// The board's motion sensor: one reading is axes() values in m/s^2.
class MotionSensor {
 public:
  virtual ~MotionSensor() {}
  virtual const char* name() const = 0;
  virtual int axes() const = 0;
  virtual bool read(float* values) = 0;
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
