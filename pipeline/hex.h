/* hex.h — lower-case hex for trace and span IDs. */
#ifndef SP_HEX_H
#define SP_HEX_H

#include <stddef.h>
#include <stdint.h>

/**
 * Writes @p len bytes as lower-case hex plus a NUL into @p out (capacity
 * @p cap, at least 2*len+1; shorter output is truncated to ""). Returns 2*len.
 */
size_t sp_hex_encode(const uint8_t *data, size_t len, char *out, size_t cap);

/**
 * Decodes exactly @p n_chars hex characters (either case) into @p out
 * (n_chars/2 bytes). 0, or SP_EINVAL on an odd length or a non-hex character.
 */
int sp_hex_decode(const char *s, size_t n_chars, uint8_t *out);

#endif
