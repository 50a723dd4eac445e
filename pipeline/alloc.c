/*
 * alloc.c — the allocation wrapper with a failure-injection hook for tests.
 */
#include "pipeline/alloc.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static long fail_after = -1;

static int should_fail(void) {
  if (fail_after < 0) return 0;
  if (fail_after == 0) return 1;
  fail_after--;
  return 0;
}

void sp_alloc_set_fail_after(long n) { fail_after = n; }

void *sp_malloc(size_t n) { return should_fail() ? NULL : malloc(n ? n : 1); }

void *sp_calloc(size_t count, size_t size) {
  if (size && count > SIZE_MAX / size) return NULL;
  return should_fail() ? NULL : calloc(count ? count : 1, size ? size : 1);
}

void *sp_realloc(void *p, size_t n) { return should_fail() ? NULL : realloc(p, n ? n : 1); }

void sp_free(void *p) { free(p); }

char *sp_strndup(const char *s, size_t n) {
  if (!s) return NULL;
  char *d = sp_malloc(n + 1);
  if (!d) return NULL;
  memcpy(d, s, n);
  d[n] = '\0';
  return d;
}

char *sp_strdup(const char *s) { return s ? sp_strndup(s, strlen(s)) : NULL; }

char *sp_sprintf(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(NULL, 0, fmt, ap);
  va_end(ap);
  if (n < 0) return NULL;
  char *s = sp_malloc((size_t)n + 1);
  if (!s) return NULL;
  va_start(ap, fmt);
  vsnprintf(s, (size_t)n + 1, fmt, ap);
  va_end(ap);
  return s;
}
