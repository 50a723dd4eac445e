/*
 * spanprofile_wire.c — reading the few span fields the join needs straight
 * from an encoded ExportTraceServiceRequest.
 *
 * Indexing a span needs its IDs, name, times, flags and one attribute, and
 * its resource's service and identity attributes. Decoding the whole
 * request with protobuf-c costs most of the indexing time and, for a batch
 * held for the window, keeps a decoded copy several times the size of the
 * bytes. So the join walks the wire format itself, pointing into the bytes
 * (nothing is copied), and decodes a batch only when it has to change it
 * (sp_traces_writable, at emission). Batches that arrive already decoded
 * use the decoded form instead (spanprofile_join.c).
 *
 * The reader is bounds-checked and strict about wire types of the fields it
 * reads; anything unexpected (groups, a wrong wire type, truncation) makes
 * it return SP_EPROTO and the caller falls back to protobuf-c. Fields it
 * does not read are skipped. For a field that appears more than once, the
 * last occurrence wins, as in protobuf; repeated fields are seen in order,
 * the order protobuf-c decodes them in, so a span's position in the walk is
 * its position in the decoded request.
 */
#include "processors/spanprofile/spanprofile_int.h"

#include "pipeline/error.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct sp_rd_s {
  const uint8_t *p, *end;
} sp_rd_t;

typedef struct sp_fld_s {
  uint32_t num;
  int wt;
  uint64_t v;       /* varint / fixed values */
  const uint8_t *b; /* length-delimited payload */
  size_t len;
} sp_fld_t;

static bool sp__varint(sp_rd_t *r, uint64_t *out) {
  uint64_t x = 0;
  for (int sh = 0; sh < 64 && r->p < r->end; sh += 7) {
    uint8_t b = *r->p++;
    x |= (uint64_t)(b & 0x7f) << sh;
    if (!(b & 0x80)) {
      *out = x;
      return true;
    }
  }
  return false;
}

/* Reads the next field; false on malformed input. */
static bool sp__field(sp_rd_t *r, sp_fld_t *f) {
  uint64_t tag;
  if (!sp__varint(r, &tag) || (tag >> 3) == 0 || (tag >> 3) > UINT32_MAX) return false;
  f->num = (uint32_t)(tag >> 3);
  f->wt = (int)(tag & 7);
  switch (f->wt) {
  case 0: return sp__varint(r, &f->v);
  case 1:
    if (r->end - r->p < 8) return false;
    f->v = 0;
    for (int i = 7; i >= 0; i--)
      f->v = f->v << 8 | r->p[i];
    r->p += 8;
    return true;
  case 2: {
    uint64_t len;
    if (!sp__varint(r, &len) || len > (uint64_t)(r->end - r->p)) return false;
    f->b = r->p;
    f->len = (size_t)len;
    r->p += len;
    return true;
  }
  case 5:
    if (r->end - r->p < 4) return false;
    f->v = (uint64_t)r->p[0] | (uint64_t)r->p[1] << 8 | (uint64_t)r->p[2] << 16 |
           (uint64_t)r->p[3] << 24;
    r->p += 4;
    return true;
  default: return false; /* groups: never in OTLP */
  }
}

/* A scalar AnyValue: its kind (AnyValue field number) and value. */
typedef struct sp_anyv_s {
  int kind; /* 0 none, 1 string, 2 bool, 3 int, 4 double */
  const uint8_t *s;
  size_t len;
  uint64_t v;
} sp_anyv_t;

static bool sp__any(const uint8_t *b, size_t len, sp_anyv_t *out) {
  sp_rd_t r = {b, b + len};
  memset(out, 0, sizeof(*out));
  sp_fld_t f;
  while (r.p < r.end) {
    if (!sp__field(&r, &f)) return false;
    if (f.num == 1 && f.wt == 2) {
      *out = (sp_anyv_t){.kind = 1, .s = f.b, .len = f.len};
    } else if ((f.num == 2 || f.num == 3) && f.wt == 0) {
      *out = (sp_anyv_t){.kind = (int)f.num, .v = f.v};
    } else if (f.num == 4 && f.wt == 1) {
      *out = (sp_anyv_t){.kind = 4, .v = f.v};
    } else if (f.num <= 4) {
      return false;
    } else {
      out->kind = 0; /* another oneof member (array, kvlist, bytes) replaces it */
    }
  }
  return true;
}

/* Splits a KeyValue into key and value bytes. */
static bool sp__kv(const uint8_t *b, size_t len, const uint8_t **key, size_t *klen,
                   const uint8_t **val, size_t *vlen) {
  sp_rd_t r = {b, b + len};
  sp_fld_t f;
  *key = *val = NULL;
  *klen = *vlen = 0;
  while (r.p < r.end) {
    if (!sp__field(&r, &f)) return false;
    if (f.num == 1 || f.num == 2) {
      if (f.wt != 2) return false;
      if (f.num == 1) {
        *key = f.b;
        *klen = f.len;
      } else {
        *val = f.b;
        *vlen = f.len;
      }
    }
  }
  return true;
}

static bool sp__int_text(const uint8_t *s, size_t len, int64_t *out) {
  char buf[32];
  if (len == 0 || len >= sizeof(buf)) return false;
  memcpy(buf, s, len);
  buf[len] = '\0';
  char *end;
  long long v = strtoll(buf, &end, 10);
  if (*end != '\0') return false;
  *out = v;
  return true;
}

int sp__spj_wire_attr(const uint8_t *res, size_t len, const char *key, char *out, size_t cap) {
  sp_rd_t r = {res, res + len};
  sp_fld_t f;
  size_t want = strlen(key);
  int found = 0;
  while (r.p < r.end) {
    if (!sp__field(&r, &f)) return SP_EPROTO;
    if (f.num != 1) continue;
    if (f.wt != 2) return SP_EPROTO;
    const uint8_t *k, *v;
    size_t kl, vl;
    if (!sp__kv(f.b, f.len, &k, &kl, &v, &vl)) return SP_EPROTO;
    if (found || kl != want || memcmp(k, key, want) != 0)
      continue; /* the first attribute with the key wins, as in the decoded lookup */
    sp_anyv_t a;
    if (v == NULL || !sp__any(v, vl, &a)) return v == NULL ? 0 : SP_EPROTO;
    found = -1;
    switch (a.kind) {
    case 1:
      if (a.len + 1 > cap) break;
      memcpy(out, a.s, a.len);
      out[a.len] = '\0';
      found = 1;
      break;
    case 2:
      snprintf(out, cap, "%s", a.v ? "true" : "false");
      found = 1;
      break;
    case 3:
      snprintf(out, cap, "%" PRId64, (int64_t)a.v);
      found = 1;
      break;
    case 4: {
      double d;
      memcpy(&d, &a.v, sizeof(d));
      snprintf(out, cap, "%.17g", d);
      found = 1;
      break;
    }
    default: break;
    }
  }
  return found > 0 ? 1 : 0;
}

/* Fills @p s from one encoded Span. */
static bool sp__span(const uint8_t *b, size_t len, const char *thread_attr, size_t thread_len,
                     sp_spj_wspan_t *s) {
  sp_rd_t r = {b, b + len};
  sp_fld_t f;
  memset(s, 0, sizeof(*s));
  s->thread = SP_SPJ_NO_THREAD;
  bool thread_seen = false;
  while (r.p < r.end) {
    if (!sp__field(&r, &f)) return false;
    switch (f.num) {
    case 1:
    case 2:
    case 4:
    case 5:
    case 9:
      if (f.wt != 2) return false;
      if (f.num == 1) {
        s->trace = f.b;
        s->trace_len = f.len;
      } else if (f.num == 2) {
        s->span_id = f.b;
        s->span_id_len = f.len;
      } else if (f.num == 4) {
        s->parent = f.b;
        s->parent_len = f.len;
      } else if (f.num == 5) {
        s->name = (const char *)f.b;
        s->name_len = f.len;
      } else if (thread_attr != NULL && !thread_seen) {
        const uint8_t *k, *v;
        size_t kl, vl;
        if (!sp__kv(f.b, f.len, &k, &kl, &v, &vl)) return false;
        if (kl == thread_len && memcmp(k, thread_attr, kl) == 0) {
          thread_seen = true; /* the first match decides, as in the decoded lookup */
          sp_anyv_t a;
          int64_t t;
          if (v != NULL && !sp__any(v, vl, &a)) return false;
          if (v != NULL && a.kind == 3)
            s->thread = (int64_t)a.v;
          else if (v != NULL && a.kind == 1 && sp__int_text(a.s, a.len, &t))
            s->thread = t;
        }
      }
      break;
    case 7:
    case 8:
      if (f.wt != 1) return false;
      if (f.num == 7)
        s->start = f.v;
      else
        s->end = f.v;
      break;
    case 16:
      if (f.wt != 5) return false;
      s->flags = (uint32_t)f.v;
      break;
    default: break;
    }
  }
  return true;
}

int sp__spj_wire_walk(const uint8_t *buf, size_t len, const char *thread_attr,
                      sp_spj_wire_resource_fn on_resource, sp_spj_wire_span_fn on_span, void *ctx) {
  sp_rd_t top = {buf, buf + len};
  sp_fld_t f;
  size_t thread_len = thread_attr != NULL ? strlen(thread_attr) : 0;
  while (top.p < top.end) {
    if (!sp__field(&top, &f)) return SP_EPROTO;
    if (f.num != 1) continue;
    if (f.wt != 2) return SP_EPROTO;
    /* ResourceSpans: the resource first (it may be encoded after the spans) */
    const uint8_t *res = NULL;
    size_t res_len = 0;
    sp_rd_t rs = {f.b, f.b + f.len};
    sp_fld_t g;
    while (rs.p < rs.end) {
      if (!sp__field(&rs, &g)) return SP_EPROTO;
      if (g.num == 1) {
        if (g.wt != 2) return SP_EPROTO;
        if (res == NULL) {
          res = g.b;
          res_len = g.len;
        }
      }
    }
    int rc = on_resource(ctx, res, res_len);
    if (rc != 0) return rc;
    rs = (sp_rd_t){f.b, f.b + f.len};
    while (rs.p < rs.end) {
      sp__field(&rs, &g); /* checked above */
      if (g.num != 2) continue;
      if (g.wt != 2) return SP_EPROTO;
      sp_rd_t ss = {g.b, g.b + g.len};
      sp_fld_t h;
      while (ss.p < ss.end) {
        if (!sp__field(&ss, &h)) return SP_EPROTO;
        if (h.num != 2) continue;
        if (h.wt != 2) return SP_EPROTO;
        sp_spj_wspan_t s;
        if (!sp__span(h.b, h.len, thread_attr, thread_len, &s)) return SP_EPROTO;
        if ((rc = on_span(ctx, &s)) != 0) return rc;
      }
    }
  }
  return 0;
}
