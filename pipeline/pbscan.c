/*
 * pbscan.c — schema-driven protobuf wire validation (see pbscan.h).
 *
 * The walk is recursive over sub-messages with an explicit depth limit, and
 * keeps a path stack (field + element index) only to name the place of an
 * error; nothing is allocated.
 *
 * Every request a receiver accepts goes through here on the loop thread, so
 * the inner loop is kept cheap (it was half of spanprofd's CPU when
 * forwarding OTLP/HTTP): one-byte varints and field lookups are inlined, the
 * path frame records only a field pointer and an index (names are looked up
 * when an error is reported), and the callback is skipped for message types
 * the caller did not ask about (sp_pbscan_only).
 */
#include "pipeline/pbscan.h"

#include "pipeline/error.h"

#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#define SP_PBSCAN_MAX_DEPTH 64
#define SP_PBSCAN_FIELD_COST 32 /* protobuf-c's per-occurrence scan record, rounded up */

typedef struct sp_pbscan_frame_s {
  const ProtobufCFieldDescriptor *field; /* the last known field seen; NULL before one */
  uint32_t tag;
  size_t index;
} sp_pbscan_frame_t;

struct sp_pbscan_s {
  sp_pbscan_cb cb;
  void *ctx;
  const ProtobufCMessageDescriptor *const *only; /* NULL: the callback sees every message */
  size_t n_only;
  char *err;
  size_t errlen;
  int depth;
  /*
   * What protobuf-c's unpack would allocate: every message struct, a slot per
   * repeated element, string and bytes contents — plus, transiently, a
   * record per field occurrence of the message being decoded. Bounded so
   * that a small request cannot make the daemon allocate gigabytes (empty
   * spans cost 2 bytes on the wire and ~200 bytes decoded).
   */
  uint64_t cost;
  uint64_t max_cost;
  sp_pbscan_frame_t path[SP_PBSCAN_MAX_DEPTH + 1];
};

/* The path to the current field; deep paths keep their first and last frames around "...". */
static size_t sp__path(const sp_pbscan_t *s, char *out, size_t cap) {
  size_t n = 0;
  out[0] = '\0';
  for (int i = 1; i <= s->depth && n < cap; i++) {
    if (s->depth > 8 && i == 4) {
      int w = snprintf(out + n, cap - n, ".(%d levels)", s->depth - 6);
      if (w < 0)
        break;
      n += (size_t)w;
      i = s->depth - 3;
      continue;
    }
    const sp_pbscan_frame_t *fr = &s->path[i];
    const char *name = fr->field != NULL ? fr->field->name : "?";
    int w = fr->field != NULL && fr->field->label == PROTOBUF_C_LABEL_REPEATED
                ? snprintf(out + n, cap - n, "%s%s[%zu]", i > 1 ? "." : "", name, fr->index)
                : snprintf(out + n, cap - n, "%s%s", i > 1 ? "." : "", name);
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

static int sp__varint_slow(const uint8_t **p, const uint8_t *end, uint64_t *out) {
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

/* Most varints (keys, lengths of small fields) are one byte. */
static inline int sp__varint(const uint8_t **p, const uint8_t *end, uint64_t *out) {
  if (*p < end && **p < 0x80) {
    *out = *(*p)++;
    return 0;
  }
  return sp__varint_slow(p, end, out);
}

/*
 * protobuf_c_message_descriptor_get_field() inlined: the descriptor's
 * ranges of consecutive field numbers (one or two for most messages) map a
 * number to its index in `fields`, which is sorted by number.
 */
static inline const ProtobufCFieldDescriptor *sp__field(const ProtobufCMessageDescriptor *desc,
                                                        uint32_t tag) {
  const ProtobufCIntRange *r = desc->field_ranges;
  for (unsigned i = 0; i < desc->n_field_ranges; i++) {
    if ((int)tag < r[i].start_value)
      return NULL;
    unsigned count = r[i + 1].orig_index - r[i].orig_index;
    if ((unsigned)((int)tag - r[i].start_value) < count)
      return &desc->fields[r[i].orig_index + (unsigned)((int)tag - r[i].start_value)];
  }
  return NULL;
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
  s->cost += desc->sizeof_message;
  uint64_t fields = 0; /* occurrences in this message: protobuf-c's transient records */
  sp_pbscan_frame_t *fr = &s->path[s->depth];
  fr->field = NULL;
  fr->tag = 0;
  fr->index = 0;
  int rc = 0;
  bool want_cb = s->cb != NULL;
  if (want_cb && s->only != NULL) {
    want_cb = false;
    for (size_t i = 0; i < s->n_only; i++)
      want_cb |= s->only[i] == desc;
  }
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
    const ProtobufCFieldDescriptor *f = sp__field(desc, tag);
    if (f != NULL) {
      if (fr->tag == tag)
        fr->index++;
      else
        fr->index = 0;
      fr->tag = tag;
      fr->field = f;
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
    fields++;
    if (f->label == PROTOBUF_C_LABEL_REPEATED)
      s->cost += 8;
    if (wt == 2 && f->type != PROTOBUF_C_TYPE_MESSAGE)
      s->cost += len + 1;
    if (s->max_cost != 0 && s->cost + fields * SP_PBSCAN_FIELD_COST > s->max_cost) {
      rc = SP_ETOOBIG;
      if (s->err != NULL && s->errlen > 0)
        snprintf(s->err, s->errlen,
                 "decoding would need more than %llu MiB (over %d times the request size); "
                 "send smaller requests",
                 (unsigned long long)(s->max_cost >> 20), SP_PBSCAN_COST_FACTOR);
      goto done;
    }
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
      s->cost += len * 8; /* at most one 8-byte slot per packed byte */
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
    if (want_cb && (rc = s->cb(s, desc, f, data, (size_t)len, s->ctx)) != 0)
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

uint64_t sp_pbscan_budget(size_t len) {
  return (uint64_t)len * SP_PBSCAN_COST_FACTOR + ((uint64_t)1 << 20);
}

int sp_pbscan(const ProtobufCMessageDescriptor *desc, const uint8_t *buf, size_t len,
              sp_pbscan_cb cb, void *ctx, char *err, size_t errlen) {
  return sp_pbscan_only(desc, buf, len, cb, ctx, NULL, 0, err, errlen);
}

int sp_pbscan_only(const ProtobufCMessageDescriptor *desc, const uint8_t *buf, size_t len,
                   sp_pbscan_cb cb, void *ctx, const ProtobufCMessageDescriptor *const *only,
                   size_t n_only, char *err, size_t errlen) {
  sp_pbscan_t s;
  s.cb = cb;
  s.ctx = ctx;
  s.only = only;
  s.n_only = n_only;
  s.depth = 0;
  s.cost = 0;
  s.max_cost = sp_pbscan_budget(len);
  s.err = err;
  s.errlen = errlen;
  if (err != NULL && errlen > 0)
    err[0] = '\0';
  if (buf == NULL && len > 0)
    return SP_EINVAL;
  return sp__scan(&s, desc, buf, buf + len);
}
