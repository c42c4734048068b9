// Base64 decoding of one AT+RUNIMPULSESTATIC chunk on its own (shared/PROTOCOL.md).
//
// The host sends the base64 of little-endian float32 values in chunks of exactly C
// characters, the last one padded with '=' to C characters. C is a multiple of 16, so a
// chunk holds whole 4-character groups (16 characters are exactly 3 float32 values) and
// each chunk decodes without carrying state over to the next one.

#ifndef TINYML_BASE64_CHUNK_H_
#define TINYML_BASE64_CHUNK_H_

#include <stddef.h>
#include <stdint.h>

namespace tinyml {

// Decodes `len` characters into out (room for len / 4 * 3 bytes). "====" groups are the
// padding of the last chunk and decode to nothing; "xx==" and "xxx=" end the data.
// Returns the number of bytes written, or -1 when the chunk is not base64: a length that
// is not a multiple of 4, a character outside the alphabet, or data after padding.
int base64_decode_chunk(const char* in, size_t len, uint8_t* out, size_t out_cap);

}  // namespace tinyml

#endif  // TINYML_BASE64_CHUNK_H_
