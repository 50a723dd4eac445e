/*
 * buf.h — a growable byte buffer.
 *
 * Used for encoding (JSON, protobuf, HTTP responses) and for reading request
 * bodies. A limit, when set, is checked before any allocation: an append that
 * would pass it fails with SP_ETOOBIG and leaves the buffer unchanged.
 */
#ifndef SP_BUF_H
#define SP_BUF_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

typedef struct sp_buf_s {
  uint8_t *data;
  size_t len;
  size_t cap;
  size_t limit; /* 0 = no limit */
} sp_buf_t;

/** Initialises an empty buffer with an optional byte @p limit (0: none). */
void sp_buf_init(sp_buf_t *self, size_t limit);
/** Frees the storage; the buffer is empty and reusable afterwards. */
void sp_buf_free(sp_buf_t *self);
/** Makes room for @p extra more bytes; SP_ETOOBIG past the limit, SP_ENOMEM. */
int sp_buf_reserve(sp_buf_t *self, size_t extra);
/** Appends bytes; 0, SP_ETOOBIG or SP_ENOMEM. */
int sp_buf_append(sp_buf_t *self, const void *p, size_t n);
/** Appends a NUL-terminated string (without the NUL). */
int sp_buf_puts(sp_buf_t *self, const char *s);
/** Appends one byte. */
int sp_buf_putc(sp_buf_t *self, int c);
/** Appends printf-formatted text. */
int sp_buf_printf(sp_buf_t *self, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/** va_list form of sp_buf_printf. */
int sp_buf_vprintf(sp_buf_t *self, const char *fmt, va_list ap);
/** Hands the storage to the caller (free with sp_free) and empties the buffer. */
uint8_t *sp_buf_steal(sp_buf_t *self, size_t *len);
/** Ensures data[len] == '\0' (not counted in len) and returns data as a string. */
const char *sp_buf_cstr(sp_buf_t *self);

#endif
