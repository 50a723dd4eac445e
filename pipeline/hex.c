/* hex.c — see hex.h. */
#include "pipeline/hex.h"

#include "pipeline/error.h"

size_t sp_hex_encode(const uint8_t *data, size_t len, char *out, size_t cap) {
  static const char digits[] = "0123456789abcdef";
  if (cap < 2 * len + 1) {
    if (cap > 0)
      out[0] = '\0';
    return 2 * len;
  }
  for (size_t i = 0; i < len; i++) {
    out[2 * i] = digits[data[i] >> 4];
    out[2 * i + 1] = digits[data[i] & 15];
  }
  out[2 * len] = '\0';
  return 2 * len;
}

static int sp__nibble(char c) {
  if (c >= '0' && c <= '9')
    return c - '0';
  if (c >= 'a' && c <= 'f')
    return c - 'a' + 10;
  if (c >= 'A' && c <= 'F')
    return c - 'A' + 10;
  return -1;
}

int sp_hex_decode(const char *s, size_t n_chars, uint8_t *out) {
  if (n_chars % 2 != 0)
    return SP_EINVAL;
  for (size_t i = 0; i < n_chars; i += 2) {
    int hi = sp__nibble(s[i]), lo = sp__nibble(s[i + 1]);
    if (hi < 0 || lo < 0)
      return SP_EINVAL;
    out[i / 2] = (uint8_t)(hi << 4 | lo);
  }
  return 0;
}
