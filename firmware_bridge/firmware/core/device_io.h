// The device's end of the serial link, and its clock.
//
// Everything that speaks the AT protocol goes through this interface, so the same code runs
// on the board (over Arduino's Serial, in tinyml_device.ino) and on a host in the test
// harness (over stdin/stdout), where the protocol is checked byte for byte.
// Plain C++14, no Arduino or TFLM headers, no heap.

#ifndef TINYML_DEVICE_IO_H_
#define TINYML_DEVICE_IO_H_

#include <stddef.h>
#include <stdint.h>

namespace tinyml {

class DeviceIo {
 public:
  virtual ~DeviceIo() {}

  // The next received byte, or -1 when none is waiting. Never blocks.
  virtual int read() = 0;
  virtual void write(const char* data, size_t len) = 0;
  // Microseconds since boot; wraps after about 71 minutes (compare differences only).
  virtual uint32_t micros() = 0;
  // Called while waiting for a byte or a deadline: lets the USB stack (or the host) run.
  virtual void idle() {}

  uint32_t millis() { return micros() / 1000u; }

  void print(const char* text);
  void printf(const char* format, ...) __attribute__((format(printf, 2, 3)));
  // A float in fixed notation with `decimals` digits after the point, rounded to nearest,
  // ties to even, as printf("%.*f") and Python's format() do (so the virtual device and
  // this firmware print the same text for the same value).
  void print_fixed(double value, int decimals);
  // A float with 9 significant digits: enough to read a float32 back exactly.
  void print_float32(float value);
  // Microseconds as milliseconds with 3 decimals ("1.234"), exact integer arithmetic.
  void print_us_as_ms(uint32_t us);
};

// Writes `value` in fixed notation to out (NUL-terminated); returns the length.
size_t format_fixed(char* out, size_t cap, double value, int decimals);

}  // namespace tinyml

#endif  // TINYML_DEVICE_IO_H_
