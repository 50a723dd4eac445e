/*
 * buf.c — growable byte buffer (see buf.h).
 */
#include "pipeline/buf.h"

#include "pipeline/alloc.h"
#include "pipeline/error.h"

#include <stdio.h>
#include <string.h>

void sp_buf_init(sp_buf_t *self, size_t limit) {
  self->data = NULL;
  self->len = self->cap = 0;
  self->limit = limit;
}

void sp_buf_free(sp_buf_t *self) {
  sp_free(self->data);
  self->data = NULL;
  self->len = self->cap = 0;
}

int sp_buf_reserve(sp_buf_t *self, size_t extra) {
  if (extra > SIZE_MAX - self->len - 1) return SP_ETOOBIG;
  size_t need = self->len + extra;
  if (self->limit && need > self->limit) return SP_ETOOBIG;
  if (need + 1 <= self->cap) return 0;
  size_t cap = self->cap ? self->cap : 256;
  while (cap < need + 1) cap = cap > SIZE_MAX / 2 ? need + 1 : cap * 2;
  uint8_t *d = sp_realloc(self->data, cap);
  if (!d) return SP_ENOMEM;
  self->data = d;
  self->cap = cap;
  return 0;
}

int sp_buf_append(sp_buf_t *self, const void *p, size_t n) {
  int rc = sp_buf_reserve(self, n);
  if (rc) return rc;
  if (n) memcpy(self->data + self->len, p, n);
  self->len += n;
  return 0;
}

int sp_buf_puts(sp_buf_t *self, const char *s) { return sp_buf_append(self, s, strlen(s)); }

int sp_buf_putc(sp_buf_t *self, int c) {
  uint8_t b = (uint8_t)c;
  return sp_buf_append(self, &b, 1);
}

int sp_buf_vprintf(sp_buf_t *self, const char *fmt, va_list ap) {
  va_list cp;
  va_copy(cp, ap);
  char small[256];
  int n = vsnprintf(small, sizeof small, fmt, cp);
  va_end(cp);
  if (n < 0) return SP_EINVAL;
  if ((size_t)n < sizeof small) return sp_buf_append(self, small, (size_t)n);
  int rc = sp_buf_reserve(self, (size_t)n);
  if (rc) return rc;
  vsnprintf((char *)self->data + self->len, (size_t)n + 1, fmt, ap);
  self->len += (size_t)n;
  return 0;
}

int sp_buf_printf(sp_buf_t *self, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  int rc = sp_buf_vprintf(self, fmt, ap);
  va_end(ap);
  return rc;
}

uint8_t *sp_buf_steal(sp_buf_t *self, size_t *len) {
  uint8_t *d = self->data;
  if (len) *len = self->len;
  self->data = NULL;
  self->len = self->cap = 0;
  return d;
}

const char *sp_buf_cstr(sp_buf_t *self) {
  if (sp_buf_reserve(self, 0) != 0 && !self->data) return "";
  if (!self->data) return "";
  self->data[self->len] = '\0';
  return (const char *)self->data;
}
