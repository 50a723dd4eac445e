/*
 * pyroscope_multipart.c — multipart/form-data (RFC 7578) as the Pyroscope
 * SDKs upload it: the Go SDK writes Go's mime/multipart form (a `profile`
 * file part, optionally a `sample_type_config` JSON part), the Node SDK a
 * WHATWG FormData (undici) with one `profile` part.
 *
 * The body is already whole in memory (the HTTP server bounded it), so
 * parsing is a scan for the delimiter lines: "--boundary" at the start of
 * the body or after CRLF, then part headers up to an empty line, then data
 * up to CRLF "--boundary"; "--boundary--" ends the form. Part data is not
 * copied. Bare LF line ends are tolerated in the headers.
 */
#include "receivers/pyroscope/pyroscope.h"

#include "pipeline/error.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

static int sp__mp_fail(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int sp__mp_fail(char *err, size_t errlen, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(err, errlen, fmt, ap);
  va_end(ap);
  return SP_EPROTO;
}

/*
 * Finds parameter @p name in a header value of the form
 * `token; a=b; name="quoted \" value"` and copies its value into @p arena.
 * Returns NULL when absent (or on OOM, which the caller then reports as a
 * missing parameter only where that is harmless).
 */
static const char *sp__param(sp_arena_t *arena, const char *v, const char *name, bool *oom) {
  size_t nlen = strlen(name);
  const char *p = strchr(v, ';');
  while (p != NULL) {
    p++;
    while (*p == ' ' || *p == '\t')
      p++;
    const char *eq = strchr(p, '=');
    if (eq == NULL)
      return NULL;
    const char *kend = eq;
    while (kend > p && (kend[-1] == ' ' || kend[-1] == '\t'))
      kend--;
    const char *val = eq + 1;
    while (*val == ' ' || *val == '\t')
      val++;
    bool match = (size_t)(kend - p) == nlen && strncasecmp(p, name, nlen) == 0;
    char buf[1024];
    size_t n = 0;
    const char *next;
    if (*val == '"') {
      const char *q = val + 1;
      while (*q != '\0' && *q != '"') {
        if (*q == '\\' && q[1] != '\0')
          q++;
        if (n < sizeof(buf) - 1)
          buf[n++] = *q;
        q++;
      }
      next = *q == '"' ? strchr(q + 1, ';') : NULL;
    } else {
      size_t l = strcspn(val, ";");
      while (l > 0 && (val[l - 1] == ' ' || val[l - 1] == '\t'))
        l--;
      for (size_t i = 0; i < l && n < sizeof(buf) - 1; i++)
        buf[n++] = val[i];
      next = strchr(val, ';');
    }
    if (match) {
      char *out = sp_arena_strndup(arena, buf, n);
      if (out == NULL)
        *oom = true;
      return out;
    }
    p = next;
  }
  return NULL;
}

/* memmem() without relying on _GNU_SOURCE. */
static const uint8_t *sp__find(const uint8_t *hay, size_t hlen, const uint8_t *needle,
                               size_t nlen) {
  if (nlen == 0 || hlen < nlen)
    return NULL;
  const uint8_t *end = hay + hlen - nlen + 1;
  for (const uint8_t *p = hay; p < end; p++) {
    p = memchr(p, needle[0], (size_t)(end - p));
    if (p == NULL)
      return NULL;
    if (memcmp(p, needle, nlen) == 0)
      return p;
  }
  return NULL;
}

/* Parses the header block [p, end) of one part. */
static int sp__part_headers(sp_arena_t *arena, const uint8_t *p, const uint8_t *end,
                            sp_pyro_part_t *part, size_t index, char *err, size_t errlen) {
  bool disposition = false, oom = false;
  while (p < end) {
    const uint8_t *eol = memchr(p, '\n', (size_t)(end - p));
    const uint8_t *lend = eol != NULL ? eol : end;
    size_t llen = (size_t)(lend - p);
    if (llen > 0 && p[llen - 1] == '\r')
      llen--;
    char *line = sp_arena_strndup(arena, (const char *)p, llen);
    if (line == NULL)
      return SP_ENOMEM;
    p = eol != NULL ? eol + 1 : end;
    if (llen == 0)
      continue;
    char *colon = strchr(line, ':');
    if (colon == NULL)
      return sp__mp_fail(err, errlen, "multipart part %zu: malformed header line", index);
    *colon = '\0';
    char *value = colon + 1;
    while (*value == ' ' || *value == '\t')
      value++;
    if (strcasecmp(line, "content-disposition") == 0) {
      if (strncasecmp(value, "form-data", 9) != 0)
        return sp__mp_fail(err, errlen, "multipart part %zu: Content-Disposition is not form-data",
                           index);
      disposition = true;
      const char *name = sp__param(arena, value, "name", &oom);
      part->name = name != NULL ? name : "";
      part->filename = sp__param(arena, value, "filename", &oom);
    } else if (strcasecmp(line, "content-type") == 0) {
      part->content_type = value;
    }
  }
  if (oom)
    return SP_ENOMEM;
  if (!disposition)
    return sp__mp_fail(err, errlen, "multipart part %zu: no Content-Disposition header", index);
  return 0;
}

int sp__pyro_multipart_parse(const char *content_type, const uint8_t *body, size_t len,
                             sp_arena_t *arena, sp_pyro_part_t *parts, size_t *n_parts,
                             char *err, size_t errlen) {
  *n_parts = 0;
  bool oom = false;
  const char *boundary = sp__param(arena, content_type, "boundary", &oom);
  if (oom)
    return SP_ENOMEM;
  if (boundary == NULL || boundary[0] == '\0' || strlen(boundary) > 200)
    return sp__mp_fail(err, errlen, "multipart/form-data without a usable boundary parameter");
  /* "\r\n--" + boundary: the delimiter between parts. */
  size_t blen = strlen(boundary);
  uint8_t delim[208];
  memcpy(delim, "\r\n--", 4);
  memcpy(delim + 4, boundary, blen);
  size_t dlen = blen + 4;

  /* The first delimiter may start the body (no CRLF before it). */
  const uint8_t *p;
  if (len >= dlen - 2 && memcmp(body, delim + 2, dlen - 2) == 0) {
    p = body + dlen - 2;
  } else {
    const uint8_t *d = sp__find(body, len, delim, dlen);
    if (d == NULL)
      return sp__mp_fail(err, errlen, "multipart body does not contain the boundary");
    p = d + dlen;
  }
  const uint8_t *end = body + len;
  for (;;) {
    /* After a delimiter: "--" ends the form, else optional blanks and a line end. */
    if (end - p >= 2 && p[0] == '-' && p[1] == '-')
      break;
    while (p < end && (*p == ' ' || *p == '\t'))
      p++;
    if (p < end && *p == '\r')
      p++;
    if (p >= end || *p != '\n')
      return sp__mp_fail(err, errlen, "multipart body ends inside a delimiter line");
    p++;
    if (*n_parts == SP_PYRO_MAX_PARTS)
      return sp__mp_fail(err, errlen, "multipart form has more than %d parts", SP_PYRO_MAX_PARTS);
    sp_pyro_part_t *part = &parts[*n_parts];
    memset(part, 0, sizeof(*part));
    part->name = "";
    /* Headers end at the first empty line. */
    const uint8_t *hend = NULL, *data = NULL;
    for (const uint8_t *q = p; q < end; q++) {
      if (*q != '\n')
        continue;
      if (q + 1 < end && q[1] == '\n') {
        hend = q;
        data = q + 2;
        break;
      }
      if (q + 2 < end && q[1] == '\r' && q[2] == '\n') {
        hend = q;
        data = q + 3;
        break;
      }
    }
    /* A part without headers starts right away with the empty line. */
    if (p < end && (*p == '\n' || (*p == '\r' && p + 1 < end && p[1] == '\n'))) {
      hend = p;
      data = p + (*p == '\n' ? 1 : 2);
    }
    if (hend == NULL)
      return sp__mp_fail(err, errlen, "multipart part %zu: headers never end", *n_parts);
    int rc = sp__part_headers(arena, p, hend, part, *n_parts, err, errlen);
    if (rc != 0)
      return rc;
    const uint8_t *d = sp__find(data, (size_t)(end - data), delim, dlen);
    if (d == NULL)
      return sp__mp_fail(err, errlen, "multipart part %zu (\"%s\"): no closing boundary", *n_parts,
                         part->name);
    part->data = data;
    part->len = (size_t)(d - data);
    (*n_parts)++;
    p = d + dlen;
  }
  return 0;
}
