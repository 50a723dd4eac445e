/*
 * otlpwire.c — see otlpwire.h.
 *
 * The request is read with the bounds-checked cursor of pipeline/pbwire.h,
 * one message level at a time, down the path resource_spans → scope_spans
 * → spans; nothing inside a Span is read except by sp_otlpwire_span_keys.
 *
 * A splice is two passes. The first (sp__plan) walks the path and records
 * "edits" in input order: for every span that gains attributes, its length
 * prefix is replaced and its new fields are inserted right after its
 * payload; the ScopeSpans and ResourceSpans around it get their prefixes
 * replaced too. A parent's edit is recorded (as a placeholder) when its
 * first touched child is met, so it precedes the children's edits, and is
 * filled in once the growth of all its children is known. The second pass
 * copies the input between edits and applies them, into one buffer of the
 * exact size. Rewritten prefixes are written canonically (shortest form),
 * so a message whose prefix was longer than needed may even shrink; the
 * sizes are therefore computed as signed growth.
 *
 * Edits are at most four per touched span (its prefix and insertion, and
 * at most one prefix each for its ScopeSpans and ResourceSpans), so their
 * array is sized once from the number of queued runs; a small splice keeps
 * it on the stack. The only other allocation is the output, which makes
 * finish all-or-nothing.
 */
#include "pipeline/otlpwire.h"

#include "pipeline/alloc.h"
#include "pipeline/error.h"
#include "pipeline/pbwire.h"

#include <stdlib.h>
#include <string.h>

/* Field numbers along the path (opentelemetry/proto). */
enum {
  SP_OW_REQ_RESOURCE_SPANS = 1,
  SP_OW_RS_SCOPE_SPANS = 2,
  SP_OW_SS_SPANS = 2,
  SP_OW_SPAN_ATTRIBUTES = 9,
  SP_OW_KV_KEY = 1,
  SP_OW_KV_VALUE = 2,
  SP_OW_ANY_STRING = 1,
  SP_OW_ANY_INT = 3,
};

#define SP_OW_TAG(num, wt) ((uint8_t)(((num) << 3) | (wt)))

/* The end of the field key starting at @p fs (already read successfully by sp_pbwire_next). */
static const uint8_t *sp__tag_end(const uint8_t *fs) {
  while (*fs & 0x80)
    fs++;
  return fs + 1;
}

/* ---- reading --------------------------------------------------------------------------- */

int sp_otlpwire_spans(const uint8_t *req, size_t len, sp_otlpwire_span_fn fn, void *ctx) {
  sp_pbwire_t top = sp_pbwire_init(req, len);
  sp_pbwire_field_t f, g, h;
  size_t ordinal = 0;
  while (sp_pbwire_next(&top, &f)) {
    if (f.num != SP_OW_REQ_RESOURCE_SPANS) continue;
    if (f.wt != 2) return SP_EPROTO;
    sp_pbwire_t rs = sp_pbwire_sub(&f);
    while (sp_pbwire_next(&rs, &g)) {
      if (g.num != SP_OW_RS_SCOPE_SPANS) continue;
      if (g.wt != 2) return SP_EPROTO;
      sp_pbwire_t ss = sp_pbwire_sub(&g);
      while (sp_pbwire_next(&ss, &h)) {
        if (h.num != SP_OW_SS_SPANS) continue;
        if (h.wt != 2) return SP_EPROTO;
        int rc = fn(ctx, ordinal++, h.data, (size_t)h.v);
        if (rc != 0) return rc > 0 ? 0 : rc;
      }
      if (ss.bad) return SP_EPROTO;
    }
    if (rs.bad) return SP_EPROTO;
  }
  return top.bad ? SP_EPROTO : 0;
}

/* True when protobuf-c's decoded key (@p k, @p klen bytes, up to its first NUL) is @p want. */
static bool sp__key_is(const uint8_t *k, size_t klen, const char *want, size_t wlen) {
  return klen >= wlen && memcmp(k, want, wlen) == 0 && (klen == wlen || k[wlen] == 0);
}

/*
 * The common encoding of a KeyValue, read directly: a key field and a value
 * field (in that order, one-byte tags and lengths) and nothing else. False
 * for anything else, which the general reader then handles.
 */
static bool sp__kv_common(const uint8_t *p, size_t len, const uint8_t **key, size_t *key_len) {
  if (len < 2 || p[0] != SP_OW_TAG(SP_OW_KV_KEY, 2) || p[1] >= 0x80 || p[1] > len - 2) return false;
  size_t rest = len - 2 - p[1];
  const uint8_t *q = p + 2 + p[1];
  if (rest != 0 &&
      (rest < 2 || q[0] != SP_OW_TAG(SP_OW_KV_VALUE, 2) || q[1] >= 0x80 || q[1] != rest - 2))
    return false;
  *key = p + 2;
  *key_len = p[1];
  return true;
}

int sp_otlpwire_span_keys(const uint8_t *span, size_t len, const char *const *keys, size_t n,
                          uint32_t *found) {
  if (n > 32) return SP_EINVAL;
  size_t klen[32];
  for (size_t i = 0; i < n; i++)
    klen[i] = strlen(keys[i]);
  uint32_t all = n == 32 ? UINT32_MAX : ((uint32_t)1 << n) - 1;
  uint32_t have = 0;
  sp_pbwire_t r = sp_pbwire_init(span, len);
  sp_pbwire_field_t f, g;
  while (sp_pbwire_next(&r, &f)) {
    if (f.num != SP_OW_SPAN_ATTRIBUTES) continue;
    if (f.wt != 2) return SP_EPROTO;
    if (have == all) continue; /* nothing left to find; the framing is still checked */
    /* A KeyValue: the last key field is the key; absent means "" (protobuf-c's default). */
    const uint8_t *key = (const uint8_t *)"";
    size_t key_len = 0;
    if (!sp__kv_common(f.data, (size_t)f.v, &key, &key_len)) {
      sp_pbwire_t kv = sp_pbwire_sub(&f);
      while (sp_pbwire_next(&kv, &g)) {
        if (g.num != SP_OW_KV_KEY) continue;
        if (g.wt != 2) return SP_EPROTO;
        key = g.data;
        key_len = (size_t)g.v;
      }
      if (kv.bad) return SP_EPROTO;
    }
    for (size_t i = 0; i < n; i++)
      if (!(have & ((uint32_t)1 << i)) && sp__key_is(key, key_len, keys[i], klen[i]))
        have |= (uint32_t)1 << i;
  }
  if (r.bad) return SP_EPROTO;
  *found = have;
  return 0;
}

int sp_otlpwire_span_has_attr(const uint8_t *span, size_t len, const char *key) {
  uint32_t found = 0;
  int rc = sp_otlpwire_span_keys(span, len, &key, 1, &found);
  return rc != 0 ? rc : (int)(found & 1);
}

/* ---- the splice builder ---------------------------------------------------------------- */

/* One run of consecutive calls for one span: its encoded fields in the builder's bytes. */
struct sp_ow_add_s {
  size_t span;
  size_t off, len;
};

void sp_otlpwire_splice_init(sp_otlpwire_splice_t *sp) { memset(sp, 0, sizeof(*sp)); }

void sp_otlpwire_splice_free(sp_otlpwire_splice_t *sp) {
  sp_free(sp->adds);
  sp_free(sp->bytes);
  memset(sp, 0, sizeof(*sp));
}

bool sp_otlpwire_splice_empty(const sp_otlpwire_splice_t *sp) { return sp->n_adds == 0; }

/*
 * Whether bytes for @p ordinal can extend the last run: the same span and
 * its bytes the last ones queued (after a finish sorted the runs, the last
 * run need not end the byte queue).
 */
static bool sp__extends_last(const sp_otlpwire_splice_t *sp, size_t ordinal) {
  if (sp->n_adds == 0) return false;
  const struct sp_ow_add_s *last = &sp->adds[sp->n_adds - 1];
  return last->span == ordinal && last->off + last->len == sp->len;
}

/*
 * Makes room for @p n more bytes and, when @p ordinal starts a new run, one
 * more run record; changes nothing visible on failure.
 */
static int sp__reserve(sp_otlpwire_splice_t *sp, size_t ordinal, size_t n) {
  if (n > SP_OTLPWIRE_MAX || sp->len > SP_OTLPWIRE_MAX - n) return SP_ETOOBIG;
  if (sp->len + n > sp->cap) {
    size_t c = sp->cap ? sp->cap : 512;
    while (c < sp->len + n)
      c *= 2;
    uint8_t *b = sp_realloc(sp->bytes, c);
    if (b == NULL) return SP_ENOMEM;
    sp->bytes = b;
    sp->cap = c;
  }
  bool new_run = !sp__extends_last(sp, ordinal);
  if (new_run && sp->n_adds == sp->cap_adds) {
    size_t c = sp->cap_adds ? sp->cap_adds * 2 : 32;
    struct sp_ow_add_s *a = sp_realloc(sp->adds, c * sizeof(*a));
    if (a == NULL) return SP_ENOMEM;
    sp->adds = a;
    sp->cap_adds = c;
  }
  return 0;
}

/* Records @p n bytes just written at sp->bytes + sp->len for @p ordinal (room reserved). */
static void sp__commit(sp_otlpwire_splice_t *sp, size_t ordinal, size_t n) {
  struct sp_ow_add_s *last = sp->n_adds ? &sp->adds[sp->n_adds - 1] : NULL;
  if (!sp__extends_last(sp, ordinal)) {
    last = &sp->adds[sp->n_adds++];
    *last = (struct sp_ow_add_s){ordinal, sp->len, 0};
  }
  last->len += n;
  sp->len += n;
}

/*
 * Queues one Span.attributes field: tag, KeyValue{key, value: AnyValue{...}}.
 * @p any_tag / @p s / @p slen / @p v describe the AnyValue member: a string
 * (s, slen) or an int (v).
 */
static int sp__add(sp_otlpwire_splice_t *sp, size_t ordinal, const char *key, uint8_t any_tag,
                   const char *s, size_t slen, uint64_t v) {
  size_t klen = strlen(key);
  if (klen > SP_OTLPWIRE_MAX || slen > SP_OTLPWIRE_MAX) return SP_ETOOBIG;
  size_t any_len = any_tag == SP_OW_TAG(SP_OW_ANY_INT, 0) ? 1 + sp_pbwire_varint_size(v)
                                                          : 1 + sp_pbwire_varint_size(slen) + slen;
  size_t kv_len =
      1 + sp_pbwire_varint_size(klen) + klen + 1 + sp_pbwire_varint_size(any_len) + any_len;
  size_t total = 1 + sp_pbwire_varint_size(kv_len) + kv_len;
  int rc = sp__reserve(sp, ordinal, total);
  if (rc != 0) return rc;
  uint8_t *p = sp->bytes + sp->len;
  *p++ = SP_OW_TAG(SP_OW_SPAN_ATTRIBUTES, 2);
  p = sp_pbwire_put_varint(p, kv_len);
  *p++ = SP_OW_TAG(SP_OW_KV_KEY, 2);
  p = sp_pbwire_put_varint(p, klen);
  memcpy(p, key, klen);
  p += klen;
  *p++ = SP_OW_TAG(SP_OW_KV_VALUE, 2);
  p = sp_pbwire_put_varint(p, any_len);
  *p++ = any_tag;
  if (any_tag == SP_OW_TAG(SP_OW_ANY_INT, 0)) {
    p = sp_pbwire_put_varint(p, v);
  } else {
    p = sp_pbwire_put_varint(p, slen);
    if (slen > 0) memcpy(p, s, slen);
    p += slen;
  }
  sp__commit(sp, ordinal, (size_t)(p - (sp->bytes + sp->len)));
  return 0;
}

int sp_otlpwire_splice_str(sp_otlpwire_splice_t *sp, size_t ordinal, const char *key,
                           const char *val, size_t val_len) {
  return sp__add(sp, ordinal, key, SP_OW_TAG(SP_OW_ANY_STRING, 2), val, val_len, 0);
}

int sp_otlpwire_splice_int(sp_otlpwire_splice_t *sp, size_t ordinal, const char *key, int64_t val) {
  return sp__add(sp, ordinal, key, SP_OW_TAG(SP_OW_ANY_INT, 0), NULL, 0, (uint64_t)val);
}

/* ---- finishing ------------------------------------------------------------------------ */

/*
 * An edit of the input: a prefix replaced ([off, off + cut) becomes the
 * varint `val`), or runs of queued fields inserted at `off` (cut 0; runs
 * adds[first .. first + n)).
 */
typedef struct sp_ow_edit_s {
  size_t off;
  size_t cut;
  size_t val; /* prefix: the new payload length; insertion: first run */
  size_t n;   /* insertion: number of runs; prefix: 0 */
  bool insert;
} sp_ow_edit_t;

#define SP_OW_STACK_EDITS 128
#define SP_OW_NONE SIZE_MAX

static int sp__cmp_add(const void *a, const void *b) {
  const struct sp_ow_add_s *x = a, *y = b;
  if (x->span != y->span) return x->span < y->span ? -1 : 1;
  return x->off < y->off ? -1 : x->off > y->off; /* call order within a span */
}

/* A placeholder prefix edit for the message whose field starts at @p fs. */
static size_t sp__edit_prefix(sp_ow_edit_t *ev, size_t *n_ev, const uint8_t *req, const uint8_t *fs,
                              const uint8_t *payload) {
  const uint8_t *te = sp__tag_end(fs);
  ev[*n_ev] = (sp_ow_edit_t){(size_t)(te - req), (size_t)(payload - te), 0, 0, false};
  return (*n_ev)++;
}

/* Fills prefix edit @p e with @p old_len + @p grow; returns the field's growth. */
static int64_t sp__edit_fill(sp_ow_edit_t *e, uint64_t old_len, int64_t grow) {
  e->val = (size_t)((int64_t)old_len + grow);
  return grow + (int64_t)sp_pbwire_varint_size(e->val) - (int64_t)e->cut;
}

/* The first pass: edits in input order into @p ev (room for 4 per run) and the total growth. */
static int sp__plan(const sp_otlpwire_splice_t *sp, const uint8_t *req, size_t len,
                    sp_ow_edit_t *ev, size_t *n_ev, int64_t *growth) {
  const struct sp_ow_add_s *adds = sp->adds;
  size_t a = 0, ordinal = 0;
  int64_t grow_top = 0;
  sp_pbwire_t top = sp_pbwire_init(req, len);
  sp_pbwire_field_t f, g, h;
  const uint8_t *fs = top.p;
  *n_ev = 0;
  for (; sp_pbwire_next(&top, &f); fs = top.p) {
    if (f.num != SP_OW_REQ_RESOURCE_SPANS) continue;
    if (f.wt != 2) return SP_EPROTO;
    size_t e_rs = SP_OW_NONE;
    int64_t grow_rs = 0;
    sp_pbwire_t rs = sp_pbwire_sub(&f);
    const uint8_t *gs = rs.p;
    for (; sp_pbwire_next(&rs, &g); gs = rs.p) {
      if (g.num != SP_OW_RS_SCOPE_SPANS) continue;
      if (g.wt != 2) return SP_EPROTO;
      size_t e_ss = SP_OW_NONE;
      int64_t grow_ss = 0;
      sp_pbwire_t ss = sp_pbwire_sub(&g);
      const uint8_t *hs = ss.p;
      for (; sp_pbwire_next(&ss, &h); hs = ss.p) {
        if (h.num != SP_OW_SS_SPANS) continue;
        if (h.wt != 2) return SP_EPROTO;
        size_t k = ordinal++;
        if (a == sp->n_adds || adds[a].span != k) continue;
        size_t b = a;
        int64_t extra = 0;
        for (; b < sp->n_adds && adds[b].span == k; b++)
          extra += (int64_t)adds[b].len;
        if (e_rs == SP_OW_NONE) e_rs = sp__edit_prefix(ev, n_ev, req, fs, f.data);
        if (e_ss == SP_OW_NONE) e_ss = sp__edit_prefix(ev, n_ev, req, gs, g.data);
        size_t e_span = sp__edit_prefix(ev, n_ev, req, hs, h.data);
        grow_ss += sp__edit_fill(&ev[e_span], h.v, extra);
        ev[(*n_ev)++] = (sp_ow_edit_t){(size_t)(h.data - req) + (size_t)h.v, 0, a, b - a, true};
        a = b;
      }
      if (ss.bad) return SP_EPROTO;
      if (e_ss != SP_OW_NONE) grow_rs += sp__edit_fill(&ev[e_ss], g.v, grow_ss);
    }
    if (rs.bad) return SP_EPROTO;
    if (e_rs != SP_OW_NONE) grow_top += sp__edit_fill(&ev[e_rs], f.v, grow_rs);
  }
  if (top.bad) return SP_EPROTO;
  if (a != sp->n_adds) return SP_EINVAL; /* queued for a span the request does not have */
  *growth = grow_top;
  return 0;
}

int sp_otlpwire_splice_finish(sp_otlpwire_splice_t *sp, const uint8_t *req, size_t len,
                              uint8_t **out, size_t *out_len) {
  sp_ow_edit_t stack_ev[SP_OW_STACK_EDITS];
  sp_ow_edit_t *ev = stack_ev;
  uint8_t *buf = NULL;
  int rc;
  if (sp->n_adds > 1) {
    bool sorted = true;
    for (size_t i = 1; i < sp->n_adds && sorted; i++)
      sorted = sp->adds[i].span > sp->adds[i - 1].span;
    if (!sorted) qsort(sp->adds, sp->n_adds, sizeof(*sp->adds), sp__cmp_add);
  }
  if (sp->n_adds > SP_OW_STACK_EDITS / 4) {
    rc = SP_ENOMEM;
    if (sp->n_adds > SIZE_MAX / 4 / sizeof(*ev) ||
        (ev = sp_malloc(4 * sp->n_adds * sizeof(*ev))) == NULL)
      goto fail;
  }
  size_t n_ev = 0;
  int64_t growth = 0;
  if ((rc = sp__plan(sp, req, len, ev, &n_ev, &growth)) != 0) goto fail;
  rc = SP_ETOOBIG;
  if (len > SP_OTLPWIRE_MAX || (int64_t)len + growth > (int64_t)SP_OTLPWIRE_MAX) goto fail;
  size_t total = (size_t)((int64_t)len + growth);
  rc = SP_ENOMEM;
  if ((buf = sp_malloc(total > 0 ? total : 1)) == NULL) goto fail;
  /* The second pass: the input between edits, and the edits. */
  uint8_t *p = buf;
  size_t at = 0;
  for (size_t i = 0; i < n_ev; i++) {
    const sp_ow_edit_t *e = &ev[i];
    memcpy(p, req + at, e->off - at);
    p += e->off - at;
    if (e->insert) {
      for (size_t r = e->val; r < e->val + e->n; r++) {
        memcpy(p, sp->bytes + sp->adds[r].off, sp->adds[r].len);
        p += sp->adds[r].len;
      }
      at = e->off;
    } else {
      p = sp_pbwire_put_varint(p, e->val);
      at = e->off + e->cut;
    }
  }
  if (len > at) memcpy(p, req + at, len - at);
  p += len - at;
  if ((size_t)(p - buf) != total) { /* cannot happen: the plan measured what was written */
    rc = SP_EPROTO;
    goto fail;
  }
  if (ev != stack_ev) sp_free(ev);
  *out = buf;
  *out_len = total;
  return 0;
fail:
  if (ev != stack_ev) sp_free(ev);
  sp_free(buf);
  return rc;
}
