/*
 * pbscan.c — schema-driven protobuf wire validation (see pbscan.h).
 *
 * The walk is recursive over sub-messages with an explicit depth limit, and
 * keeps a path stack (field name + element index) only to name the place of
 * an error; nothing is allocated.
 */
#include "pipeline/pbscan.h"

#include "pipeline/error.h"

#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#define SP_PBSCAN_MAX_DEPTH 64

typedef struct sp_pbscan_frame_s {
  const char *name;
  uint32_t tag;
  size_t index;
  int repeated;
} sp_pbscan_frame_t;

struct sp_pbscan_s {
  sp_pbscan_cb cb;
  void *ctx;
  char *err;
  size_t errlen;
  int depth;
  sp_pbscan_frame_t path[SP_PBSCAN_MAX_DEPTH + 1];
};

static size_t sp__path(const sp_pbscan_t *s, char *out, size_t cap) {
  size_t n = 0;
  out[0] = '\0';
  for (int i = 1; i <= s->depth && n < cap; i++) {
    const sp_pbscan_frame_t *fr = &s->path[i];
    int w = fr->repeated ? snprintf(out + n, cap - n, "%s%s[%zu]", i > 1 ? "." : "", fr->name,
                                    fr->index)
                         : snprintf(out + n, cap - n, "%s%s", i > 1 ? "." : "", fr->name);
    if (w < 0)
      break;
    n += (size_t)w;
  }
  return n < cap ? n : cap - 1;
}

int sp_pbscan_fail(sp_pbscan_t *s, const char *fmt, ...) {
  if (s->err == NULL || s->errlen == 0)
    return SP_EPROTO;
  size_t n = sp__path(s, s->err, s->errlen);
  if (n > 0 && n + 2 < s->errlen) {
    s->err[n++] = ':';
    s->err[n++] = ' ';
  }
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(s->err + n, s->errlen - n, fmt, ap);
  va_end(ap);
  return SP_EPROTO;
}

static int sp__varint(const uint8_t **p, const uint8_t *end, uint64_t *out) {
  uint64_t v = 0;
  for (int shift = 0; shift < 70; shift += 7) {
    if (*p >= end)
      return -1;
    uint8_t b = *(*p)++;
    if (shift == 63 && b > 1)
      return -1;
    v |= (uint64_t)(b & 0x7f) << shift;
    if (!(b & 0x80)) {
      *out = v;
      return 0;
    }
  }
  return -1;
}

/* The wire type a (non-packed) field of this type uses. */
static int sp__wire_type(ProtobufCType t) {
  switch (t) {
  case PROTOBUF_C_TYPE_SFIXED64:
  case PROTOBUF_C_TYPE_FIXED64:
  case PROTOBUF_C_TYPE_DOUBLE:
    return 1;
  case PROTOBUF_C_TYPE_SFIXED32:
  case PROTOBUF_C_TYPE_FIXED32:
  case PROTOBUF_C_TYPE_FLOAT:
    return 5;
  case PROTOBUF_C_TYPE_STRING:
  case PROTOBUF_C_TYPE_BYTES:
  case PROTOBUF_C_TYPE_MESSAGE:
    return 2;
  default:
    return 0;
  }
}

static int sp__scan(sp_pbscan_t *s, const ProtobufCMessageDescriptor *desc, const uint8_t *p,
                    const uint8_t *end) {
  if (s->depth >= SP_PBSCAN_MAX_DEPTH)
    return sp_pbscan_fail(s, "nesting deeper than %d levels", SP_PBSCAN_MAX_DEPTH);
  s->depth++;
  sp_pbscan_frame_t *fr = &s->path[s->depth];
  fr->name = "?";
  fr->tag = 0;
  fr->index = 0;
  fr->repeated = 0;
  int rc = 0;
  while (p < end) {
    uint64_t key;
    if (sp__varint(&p, end, &key) != 0) {
      rc = sp_pbscan_fail(s, "malformed field key");
      goto done;
    }
    uint32_t tag = (uint32_t)(key >> 3);
    int wt = (int)(key & 7);
    if (tag == 0 || (key >> 3) > 0x1fffffff) {
      rc = sp_pbscan_fail(s, "invalid field number");
      goto done;
    }
    const ProtobufCFieldDescriptor *f = protobuf_c_message_descriptor_get_field(desc, tag);
    if (f != NULL) {
      if (fr->tag == tag)
        fr->index++;
      else
        fr->index = 0;
      fr->tag = tag;
      fr->name = f->name;
      fr->repeated = f->label == PROTOBUF_C_LABEL_REPEATED;
    }
    uint64_t len = 0;
    const uint8_t *data = p;
    switch (wt) {
    case 0:
      if (sp__varint(&p, end, &len) != 0) {
        rc = sp_pbscan_fail(s, "truncated varint in field %u", tag);
        goto done;
      }
      break;
    case 1:
      if (end - p < 8) {
        rc = sp_pbscan_fail(s, "truncated fixed64 in field %u", tag);
        goto done;
      }
      p += 8;
      break;
    case 5:
      if (end - p < 4) {
        rc = sp_pbscan_fail(s, "truncated fixed32 in field %u", tag);
        goto done;
      }
      p += 4;
      break;
    case 2:
      if (sp__varint(&p, end, &len) != 0 || len > (uint64_t)(end - p)) {
        rc = sp_pbscan_fail(s, "truncated length-delimited field %u", tag);
        goto done;
      }
      data = p;
      p += len;
      break;
    default:
      rc = sp_pbscan_fail(s, "unsupported wire type %d in field %u", wt, tag);
      goto done;
    }
    if (f == NULL)
      continue; /* unknown fields are skipped, as protobuf-c keeps/ignores them */
    int want = sp__wire_type(f->type);
    if (wt != want) {
      /* Repeated scalars may come packed (length-delimited). */
      bool packable = f->label == PROTOBUF_C_LABEL_REPEATED && want != 2 && wt == 2;
      if (!packable) {
        rc = sp_pbscan_fail(s, "wrong wire type %d for field %s (expected %d)", wt, f->name,
                            want);
        goto done;
      }
      const uint8_t *q = data, *qe = data + len;
      while (q < qe) {
        uint64_t v;
        if (want == 0 ? sp__varint(&q, qe, &v) != 0
                      : (size_t)(qe - q) < (size_t)(want == 1 ? 8 : 4)) {
          rc = sp_pbscan_fail(s, "malformed packed field %s", f->name);
          goto done;
        }
        if (want != 0)
          q += want == 1 ? 8 : 4;
      }
      continue;
    }
    if (wt != 2)
      continue;
    if (s->cb != NULL && (rc = s->cb(s, desc, f, data, (size_t)len, s->ctx)) != 0)
      goto done;
    if (f->type == PROTOBUF_C_TYPE_MESSAGE) {
      if ((rc = sp__scan(s, f->descriptor, data, data + len)) != 0)
        goto done;
    }
  }
done:
  s->depth--;
  return rc;
}

int sp_pbscan(const ProtobufCMessageDescriptor *desc, const uint8_t *buf, size_t len,
              sp_pbscan_cb cb, void *ctx, char *err, size_t errlen) {
  sp_pbscan_t s;
  memset(&s, 0, sizeof(s));
  s.cb = cb;
  s.ctx = ctx;
  s.err = err;
  s.errlen = errlen;
  if (err != NULL && errlen > 0)
    err[0] = '\0';
  if (buf == NULL && len > 0)
    return SP_EINVAL;
  return sp__scan(&s, desc, buf, buf + len);
}
