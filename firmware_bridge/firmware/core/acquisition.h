// One sample in Edge Impulse's data acquisition format, CBOR-encoded and signed, built in a
// fixed buffer (shared/PROTOCOL.md, "Sampling" and "Edge Impulse data acquisition format").
//
// The layout is the one Edge Impulse's firmware-sdk writes (sensor_aq.cpp, sensor_aq_init
// and sensor_aq_add_data): a map {protected: {ver, alg}, signature: 64 hex characters,
// payload: {device_name, device_type, interval_ms, sensors: [{name, units}...],
// values: [_ [x, y, z], ... ]}} whose "values" is an indefinite-length array closed by a
// 0xFF break, so readings are appended as they arrive and nothing is held twice. The
// signature is HMAC-SHA256 over the whole file with the signature field set to 64 ASCII
// zeros ("HS256"), or the zeros left in place ("none") when there is no key.
// Byte for byte the virtual device writes the same (firmware_bridge/host/protocol.py,
// acquisition_header): floats as CBOR float32 (0xFA), interval_ms as float64 (0xFB).
// Plain C++14, no heap.

#ifndef TINYML_ACQUISITION_H_
#define TINYML_ACQUISITION_H_

#include <stddef.h>
#include <stdint.h>

namespace tinyml {

// SHA-256 (FIPS 180-4), streaming.
class Sha256 {
 public:
  Sha256() { reset(); }
  void reset();
  void update(const uint8_t* data, size_t len);
  void finish(uint8_t digest[32]);

 private:
  void block(const uint8_t* p);
  uint32_t h_[8];
  uint8_t buf_[64];
  size_t used_;
  uint64_t bits_;
};

// HMAC-SHA256 (RFC 2104) of `data` under `key`.
void hmac_sha256(const uint8_t* key, size_t key_len, const uint8_t* data, size_t data_len,
                 uint8_t mac[32]);

// Base64 of `len` bytes, written piece by piece to `put` (no line breaks, '=' padding),
// as Edge Impulse's at_base64_lib.cpp base64_encode does for AT+READBUFFER.
void base64_encode(const uint8_t* data, size_t len, void (*put)(const char* text, size_t n, void* ctx),
                   void* ctx);

// CBOR bytes of one reading of `axes` values: an array of float32.
size_t acquisition_reading_bytes(int axes);

class AcquisitionWriter {
 public:
  AcquisitionWriter(uint8_t* buffer, size_t capacity) : buf_(buffer), cap_(capacity) {}

  // The header, up to the open "values" array. Names and units: `axes` entries each.
  // False when the buffer cannot hold it.
  bool begin(const char* device_name, const char* device_type, double interval_ms,
             const char* const* names, const char* const* units, int axes, bool signed_hs256);
  // One reading; false when it does not fit (the buffer keeps room for the break byte).
  bool add(const float* values);
  // Closes the values array and writes the signature (key: the HMAC key; empty: "none").
  // Returns the file's length, or 0 when it did not fit.
  size_t finish(const char* hmac_key);
  size_t length() const { return len_; }
  bool overflowed() const { return overflow_; }

 private:
  void put(uint8_t b);
  void put_head(uint8_t major, uint32_t n);
  void put_text(const char* text);
  void put_float32(float v);
  void put_float64(double v);

  uint8_t* buf_;
  size_t cap_;
  size_t len_ = 0;
  size_t signature_at_ = 0;
  int axes_ = 0;
  bool overflow_ = false;
};

}  // namespace tinyml

#endif  // TINYML_ACQUISITION_H_
