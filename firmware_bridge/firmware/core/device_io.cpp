#include "device_io.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

namespace tinyml {

namespace {

constexpr int kMaxDecimals = 16;
// Above this the scaled value no longer fits the exact-integer range of a double.
constexpr double kMaxScaled = 9.0e15;

// Digits of n, most significant first, at least min_digits long (zero-padded).
// Written by hand because newlib-nano's printf has no %llu.
size_t put_digits(char* out, uint64_t n, int min_digits) {
  char tmp[24];
  int len = 0;
  do {
    tmp[len++] = static_cast<char>('0' + n % 10u);
    n /= 10u;
  } while (n != 0u);
  while (len < min_digits) tmp[len++] = '0';
  for (int i = 0; i < len; i++) out[i] = tmp[len - 1 - i];
  return static_cast<size_t>(len);
}

}  // namespace

size_t format_fixed(char* out, size_t cap, double value, int decimals) {
  char buf[48];
  size_t len = 0;
  if (decimals < 0) decimals = 0;
  if (decimals > kMaxDecimals) decimals = kMaxDecimals;
  if (isnan(value)) {
    memcpy(buf, "nan", 3);
    len = 3;
  } else {
    if (signbit(value)) buf[len++] = '-';
    double magnitude = fabs(value);
    uint64_t scale = 1u;
    for (int i = 0; i < decimals; i++) scale *= 10u;
    if (isinf(magnitude) || magnitude * static_cast<double>(scale) >= kMaxScaled) {
      memcpy(buf + len, "inf", 3);  // out of the range any quantity here can take
      len += 3;
    } else {
      double scaled = magnitude * static_cast<double>(scale);
      double whole = floor(scaled);
      double fraction = scaled - whole;
      uint64_t n = static_cast<uint64_t>(whole);
      // Ties go to even, as printf and Python do for exactly representable halves
      // (dequantized int8 values k/256 hit such ties at 6 decimals).
      if (fraction > 0.5 || (fraction == 0.5 && (n & 1u))) n++;
      len += put_digits(buf + len, n / scale, 1);
      if (decimals > 0) {
        buf[len++] = '.';
        len += put_digits(buf + len, n % scale, decimals);
      }
    }
  }
  if (cap == 0) return 0;
  if (len >= cap) len = cap - 1;
  memcpy(out, buf, len);
  out[len] = '\0';
  return len;
}

void DeviceIo::print(const char* text) { write(text, strlen(text)); }

void DeviceIo::printf(const char* format, ...) {
  char buf[160];
  va_list args;
  va_start(args, format);
  int n = vsnprintf(buf, sizeof(buf), format, args);
  va_end(args);
  if (n < 0) return;
  size_t len = static_cast<size_t>(n) < sizeof(buf) ? static_cast<size_t>(n) : sizeof(buf) - 1;
  write(buf, len);
}

void DeviceIo::print_fixed(double value, int decimals) {
  char buf[48];
  size_t len = format_fixed(buf, sizeof(buf), value, decimals);
  write(buf, len);
}

void DeviceIo::print_float32(float value) {
  // 9 significant digits: decimals = 8 - e, where |value| is in [10^e, 10^(e+1)).
  double magnitude = fabs(static_cast<double>(value));
  int e = 0;
  if (magnitude >= 1.0) {
    for (double p = 10.0; magnitude >= p && e < 38; p *= 10.0) e++;
  } else if (magnitude > 0.0) {
    for (double p = 1.0; magnitude < p && e > -45; p /= 10.0) e--;
  }
  int decimals = 8 - e;
  if (decimals < 0) decimals = 0;
  char buf[48];
  size_t len = format_fixed(buf, sizeof(buf), value, decimals);  // capped at kMaxDecimals
  // Trailing zeros say nothing: 0.00390625, not 0.00390625000 (one decimal stays).
  if (memchr(buf, '.', len) != nullptr) {
    while (len > 2 && buf[len - 1] == '0' && buf[len - 2] != '.') len--;
  }
  write(buf, len);
}

void DeviceIo::print_us_as_ms(uint32_t us) {
  printf("%lu.%03lu", static_cast<unsigned long>(us / 1000u),
         static_cast<unsigned long>(us % 1000u));
}

}  // namespace tinyml
