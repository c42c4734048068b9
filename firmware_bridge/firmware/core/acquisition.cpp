#include "acquisition.h"

#include <string.h>

namespace tinyml {

namespace {

constexpr uint32_t kK[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
};

inline uint32_t rotr(uint32_t x, int n) { return (x >> n) | (x << (32 - n)); }

constexpr char kBase64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
constexpr char kHex[] = "0123456789abcdef";  // lower case, as sensor_aq writes the hash
constexpr size_t kSignatureChars = 64;

}  // namespace

// --- SHA-256 --------------------------------------------------------------------------------

void Sha256::reset() {
  static const uint32_t kInit[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                                    0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
  memcpy(h_, kInit, sizeof(h_));
  used_ = 0;
  bits_ = 0;
}

void Sha256::block(const uint8_t* p) {
  uint32_t w[64];
  for (int i = 0; i < 16; i++) {
    w[i] = (static_cast<uint32_t>(p[4 * i]) << 24) | (static_cast<uint32_t>(p[4 * i + 1]) << 16) |
           (static_cast<uint32_t>(p[4 * i + 2]) << 8) | static_cast<uint32_t>(p[4 * i + 3]);
  }
  for (int i = 16; i < 64; i++) {
    uint32_t s0 = rotr(w[i - 15], 7) ^ rotr(w[i - 15], 18) ^ (w[i - 15] >> 3);
    uint32_t s1 = rotr(w[i - 2], 17) ^ rotr(w[i - 2], 19) ^ (w[i - 2] >> 10);
    w[i] = w[i - 16] + s0 + w[i - 7] + s1;
  }
  uint32_t a = h_[0], b = h_[1], c = h_[2], d = h_[3], e = h_[4], f = h_[5], g = h_[6], h = h_[7];
  for (int i = 0; i < 64; i++) {
    uint32_t t1 = h + (rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25)) + ((e & f) ^ (~e & g)) + kK[i] + w[i];
    uint32_t t2 = (rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
    h = g;
    g = f;
    f = e;
    e = d + t1;
    d = c;
    c = b;
    b = a;
    a = t1 + t2;
  }
  h_[0] += a; h_[1] += b; h_[2] += c; h_[3] += d;
  h_[4] += e; h_[5] += f; h_[6] += g; h_[7] += h;
}

void Sha256::update(const uint8_t* data, size_t len) {
  bits_ += static_cast<uint64_t>(len) * 8u;
  while (len > 0) {
    size_t n = 64 - used_;
    if (n > len) n = len;
    memcpy(buf_ + used_, data, n);
    used_ += n;
    data += n;
    len -= n;
    if (used_ == 64) {
      block(buf_);
      used_ = 0;
    }
  }
}

void Sha256::finish(uint8_t digest[32]) {
  uint64_t bits = bits_;
  uint8_t pad = 0x80;
  update(&pad, 1);
  uint8_t zero = 0;
  while (used_ != 56) update(&zero, 1);
  uint8_t length[8];
  for (int i = 0; i < 8; i++) length[i] = static_cast<uint8_t>(bits >> (56 - 8 * i));
  update(length, 8);
  for (int i = 0; i < 8; i++) {
    digest[4 * i] = static_cast<uint8_t>(h_[i] >> 24);
    digest[4 * i + 1] = static_cast<uint8_t>(h_[i] >> 16);
    digest[4 * i + 2] = static_cast<uint8_t>(h_[i] >> 8);
    digest[4 * i + 3] = static_cast<uint8_t>(h_[i]);
  }
  reset();
}

void hmac_sha256(const uint8_t* key, size_t key_len, const uint8_t* data, size_t data_len,
                 uint8_t mac[32]) {
  uint8_t k[64] = {0};
  Sha256 sha;
  if (key_len > 64) {
    sha.update(key, key_len);
    sha.finish(k);
  } else {
    memcpy(k, key, key_len);
  }
  uint8_t pad[64];
  for (int i = 0; i < 64; i++) pad[i] = k[i] ^ 0x36;
  uint8_t inner[32];
  sha.update(pad, 64);
  sha.update(data, data_len);
  sha.finish(inner);
  for (int i = 0; i < 64; i++) pad[i] = k[i] ^ 0x5c;
  sha.update(pad, 64);
  sha.update(inner, 32);
  sha.finish(mac);
}

// --- base64 ---------------------------------------------------------------------------------

void base64_encode(const uint8_t* data, size_t len, void (*put)(const char* text, size_t n, void* ctx),
                   void* ctx) {
  char out[64];
  size_t used = 0;
  for (size_t i = 0; i < len; i += 3) {
    uint32_t v = static_cast<uint32_t>(data[i]) << 16;
    size_t left = len - i;
    if (left > 1) v |= static_cast<uint32_t>(data[i + 1]) << 8;
    if (left > 2) v |= data[i + 2];
    out[used++] = kBase64[(v >> 18) & 63];
    out[used++] = kBase64[(v >> 12) & 63];
    out[used++] = left > 1 ? kBase64[(v >> 6) & 63] : '=';
    out[used++] = left > 2 ? kBase64[v & 63] : '=';
    if (used == sizeof(out)) {
      put(out, used, ctx);
      used = 0;
    }
  }
  if (used > 0) put(out, used, ctx);
}

// --- the CBOR writer ------------------------------------------------------------------------

size_t acquisition_reading_bytes(int axes) { return 1u + 5u * static_cast<size_t>(axes); }

void AcquisitionWriter::put(uint8_t b) {
  if (len_ < cap_) {
    buf_[len_++] = b;
  } else {
    overflow_ = true;
  }
}

void AcquisitionWriter::put_head(uint8_t major, uint32_t n) {
  uint8_t m = static_cast<uint8_t>(major << 5);
  if (n < 24) {
    put(static_cast<uint8_t>(m | n));
  } else if (n < 256) {
    put(static_cast<uint8_t>(m | 24));
    put(static_cast<uint8_t>(n));
  } else if (n < 65536) {
    put(static_cast<uint8_t>(m | 25));
    put(static_cast<uint8_t>(n >> 8));
    put(static_cast<uint8_t>(n));
  } else {
    put(static_cast<uint8_t>(m | 26));
    for (int s = 24; s >= 0; s -= 8) put(static_cast<uint8_t>(n >> s));
  }
}

void AcquisitionWriter::put_text(const char* text) {
  size_t n = strlen(text);
  put_head(3, static_cast<uint32_t>(n));
  for (size_t i = 0; i < n; i++) put(static_cast<uint8_t>(text[i]));
}

void AcquisitionWriter::put_float32(float v) {
  uint32_t bits;
  memcpy(&bits, &v, sizeof(bits));
  put(0xfa);
  for (int s = 24; s >= 0; s -= 8) put(static_cast<uint8_t>(bits >> s));
}

void AcquisitionWriter::put_float64(double v) {
  uint64_t bits;
  memcpy(&bits, &v, sizeof(bits));
  put(0xfb);
  for (int s = 56; s >= 0; s -= 8) put(static_cast<uint8_t>(bits >> s));
}

bool AcquisitionWriter::begin(const char* device_name, const char* device_type, double interval_ms,
                              const char* const* names, const char* const* units, int axes,
                              bool signed_hs256) {
  len_ = 0;
  overflow_ = false;
  axes_ = axes;
  put_head(5, 3);
  put_text("protected");
  put_head(5, 2);
  put_text("ver");
  put_text("v1");
  put_text("alg");
  put_text(signed_hs256 ? "HS256" : "none");
  put_text("signature");
  put_head(3, kSignatureChars);
  signature_at_ = len_;
  for (size_t i = 0; i < kSignatureChars; i++) put('0');
  put_text("payload");
  put_head(5, 5);
  put_text("device_name");
  put_text(device_name);
  put_text("device_type");
  put_text(device_type);
  put_text("interval_ms");
  put_float64(interval_ms);
  put_text("sensors");
  put_head(4, static_cast<uint32_t>(axes));
  for (int i = 0; i < axes; i++) {
    put_head(5, 2);
    put_text("name");
    put_text(names[i]);
    put_text("units");
    put_text(units[i]);
  }
  put_text("values");
  put(0x9f);  // indefinite-length array, closed by finish()
  return !overflow_ && len_ < cap_;
}

bool AcquisitionWriter::add(const float* values) {
  if (len_ + acquisition_reading_bytes(axes_) + 1 > cap_) {  // keep room for the break byte
    overflow_ = true;
    return false;
  }
  put_head(4, static_cast<uint32_t>(axes_));
  for (int i = 0; i < axes_; i++) put_float32(values[i]);
  return true;
}

size_t AcquisitionWriter::finish(const char* hmac_key) {
  put(0xff);
  if (overflow_) return 0;
  size_t key_len = strlen(hmac_key);
  if (key_len > 0) {
    uint8_t mac[32];
    hmac_sha256(reinterpret_cast<const uint8_t*>(hmac_key), key_len, buf_, len_, mac);
    for (int i = 0; i < 32; i++) {
      buf_[signature_at_ + 2 * i] = static_cast<uint8_t>(kHex[mac[i] >> 4]);
      buf_[signature_at_ + 2 * i + 1] = static_cast<uint8_t>(kHex[mac[i] & 15]);
    }
  }
  return len_;
}

}  // namespace tinyml
