#include "base64_chunk.h"

namespace tinyml {

namespace {

int sextet(char c) {
  if (c >= 'A' && c <= 'Z') return c - 'A';
  if (c >= 'a' && c <= 'z') return c - 'a' + 26;
  if (c >= '0' && c <= '9') return c - '0' + 52;
  if (c == '+') return 62;
  if (c == '/') return 63;
  return -1;
}

}  // namespace

int base64_decode_chunk(const char* in, size_t len, uint8_t* out, size_t out_cap) {
  if (len % 4 != 0) return -1;
  size_t written = 0;
  bool ended = false;  // a padded group was seen: only "====" may follow
  for (size_t i = 0; i < len; i += 4) {
    const char* g = in + i;
    if (g[0] == '=' && g[1] == '=' && g[2] == '=' && g[3] == '=') {
      ended = true;
      continue;
    }
    if (ended) return -1;
    int a = sextet(g[0]);
    int b = sextet(g[1]);
    if (a < 0 || b < 0) return -1;
    int c = g[2] == '=' ? -2 : sextet(g[2]);
    int d = g[3] == '=' ? -2 : sextet(g[3]);
    if (c == -1 || d == -1 || (c == -2 && d != -2)) return -1;
    size_t n = c == -2 ? 1u : (d == -2 ? 2u : 3u);
    if (written + n > out_cap) return -1;
    uint32_t bits = (static_cast<uint32_t>(a) << 18) | (static_cast<uint32_t>(b) << 12) |
                    (static_cast<uint32_t>(c < 0 ? 0 : c) << 6) |
                    static_cast<uint32_t>(d < 0 ? 0 : d);
    out[written++] = static_cast<uint8_t>(bits >> 16);
    if (n > 1) out[written++] = static_cast<uint8_t>(bits >> 8);
    if (n > 2) out[written++] = static_cast<uint8_t>(bits);
    if (n < 3) ended = true;
  }
  return static_cast<int>(written);
}

}  // namespace tinyml
