/*
 * test_otlpwire.c — the OTLP traces wire reader and attribute splice
 * (pipeline/otlpwire.h) against protobuf-c and against the decoded path
 * the join used before (sp__spj_write_attrs).
 *
 * Requests are encoded by a small writer here rather than by protobuf-c,
 * so they can carry what protobuf-c never writes: fields in any order
 * (attributes between other span fields), unknown fields of every wire
 * type at every level, length prefixes and tags longer than needed, keys
 * repeated inside a KeyValue and keys with an embedded NUL. Checked:
 *   - the span walk numbers spans as protobuf-c's decode orders them;
 *   - the key reader agrees with strcmp on decoded keys;
 *   - over randomized requests, the splice (queued the way the join queues:
 *     keys the span has are skipped) decodes to the message the decoded
 *     path produces (protobuf-c packs both to the same bytes), and an empty
 *     splice reproduces the input byte for byte;
 *   - failing every allocation in turn leaves the input untouched and
 *     sets no output, and the builder usable;
 *   - truncated and malformed requests are refused;
 *   - sp_traces_set_raw on a sole and a shared batch, and under OOM.
 */
#include "opentelemetry/proto/collector/trace/v1/trace_service.pb-c.h"
#include "pipeline/alloc.h"
#include "pipeline/arena.h"
#include "pipeline/batch.h"
#include "pipeline/error.h"
#include "pipeline/hex.h"
#include "pipeline/otlpwire.h"
#include "processors/spanprofile/spanprofile_int.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

/* ---- a protobuf writer that can be non-canonical ---------------------------------------- */

typedef struct w_s {
  uint8_t *b;
  size_t len, cap;
} w_t;

static uint64_t g_rng;

static uint64_t rnd64(void) {
  g_rng ^= g_rng >> 12;
  g_rng ^= g_rng << 25;
  g_rng ^= g_rng >> 27;
  return g_rng * 0x2545f4914f6cdd1dull;
}

static uint32_t rnd(uint32_t n) { return (uint32_t)(rnd64() % n); }

static void w_bytes(w_t *w, const void *p, size_t n) {
  if (w->len + n > w->cap) {
    size_t c = w->cap ? w->cap : 256;
    while (c < w->len + n)
      c *= 2;
    w->b = realloc(w->b, c);
    assert_non_null(w->b);
    w->cap = c;
  }
  if (n > 0) memcpy(w->b + w->len, p, n);
  w->len += n;
}

/* A varint, padded with @p pad redundant continuation bytes (at most 10 bytes in all). */
static void w_varint(w_t *w, uint64_t v, int pad) {
  uint8_t tmp[16];
  size_t n = 0;
  while (v >= 0x80) {
    tmp[n++] = (uint8_t)(v | 0x80);
    v >>= 7;
  }
  tmp[n++] = (uint8_t)v;
  while (pad-- > 0 && n < 10) {
    tmp[n - 1] |= 0x80;
    tmp[n++] = 0;
  }
  w_bytes(w, tmp, n);
}

/* Padding for a length prefix or tag: mostly none, sometimes 1-3 bytes (5 bytes at most in all). */
static int w_pad(void) { return rnd(6) == 0 ? 1 + (int)rnd(3) : 0; }

static void w_tag(w_t *w, uint32_t num, int wt) {
  int pad = rnd(10) == 0 ? 1 : 0;
  w_varint(w, (uint64_t)num << 3 | (uint64_t)wt, pad);
}

static void w_ld(w_t *w, uint32_t num, const void *p, size_t n) {
  w_tag(w, num, 2);
  w_varint(w, n, w_pad());
  w_bytes(w, p, n);
}

static void w_sub(w_t *w, uint32_t num, w_t *sub) {
  w_ld(w, num, sub->b, sub->len);
  free(sub->b);
  memset(sub, 0, sizeof(*sub));
}

/* An unknown field (numbers 100-199) of a random wire type, sometimes packed-like bytes. */
static void w_unknown(w_t *w) {
  uint32_t num = 100 + rnd(100);
  switch (rnd(4)) {
  case 0:
    w_tag(w, num, 0);
    w_varint(w, rnd64() >> rnd(64), 0);
    break;
  case 1: {
    uint64_t v = rnd64();
    w_tag(w, num, 1);
    w_bytes(w, &v, 8);
    break;
  }
  case 2: {
    w_t p = {0};
    for (uint32_t i = rnd(6); i > 0; i--) /* packed varints */
      w_varint(&p, rnd64() >> rnd(64), 0);
    w_sub(w, num, &p);
    break;
  }
  default: {
    uint32_t v = (uint32_t)rnd64();
    w_tag(w, num, 5);
    w_bytes(w, &v, 4);
    break;
  }
  }
}

static void w_maybe_unknown(w_t *w) {
  if (rnd(4) == 0) w_unknown(w);
}

/* Keys the attributes are drawn from: ours, their near misses, and others. */
static const struct {
  const char *s;
  size_t len;
} g_keys[] = {
    {"pyroscope.profile.id", 20},
    {"profile.sample.count", 20},
    {"profile.cpu.time_ns", 19},
    {"profile.wall.time_ns", 20},
    {"profile.cpu.time_ns\0junk", 24}, /* decodes to "profile.cpu.time_ns" */
    {"profile.cpu.time_n", 18},
    {"pyroscope.profile.idx", 21},
    {"http.request.method", 19},
    {"thread.id", 9},
    {"", 0},
};
#define N_KEYS (sizeof(g_keys) / sizeof(g_keys[0]))

static void w_kv(w_t *w) {
  w_t kv = {0}, any = {0};
  size_t k = rnd(N_KEYS);
  /* the value: a string, an int or a bool */
  switch (rnd(3)) {
  case 0: w_ld(&any, 1, "some-value", rnd(11)); break;
  case 1:
    w_tag(&any, 3, 0);
    w_varint(&any, rnd64() >> rnd(64), 0);
    break;
  default:
    w_tag(&any, 2, 0);
    w_varint(&any, rnd(2), 0);
    break;
  }
  w_maybe_unknown(&any);
  bool value_first = rnd(3) == 0;
  if (value_first) w_sub(&kv, 2, &any);
  if (rnd(8) == 0) w_ld(&kv, 1, "shadowed.key", 12); /* the last key field wins */
  w_ld(&kv, 1, g_keys[k].s, g_keys[k].len);
  w_maybe_unknown(&kv);
  if (!value_first) w_sub(&kv, 2, &any);
  free(any.b);
  w_sub(w, 9, &kv);
}

static void w_span(w_t *w, uint64_t id) {
  w_t s = {0};
  uint8_t trace[16], sid[8];
  for (int i = 0; i < 16; i++)
    trace[i] = (uint8_t)(rnd64() | 1);
  for (int i = 0; i < 8; i++)
    sid[i] = (uint8_t)(id >> (56 - 8 * i));
  size_t n_attrs = rnd(7), at = 0;
  /* the fields in a random order, attributes spread among them */
  int order[6] = {0, 1, 2, 3, 4, 5};
  for (int i = 5; i > 0; i--) {
    int jx = (int)rnd((uint32_t)i + 1), t = order[i];
    order[i] = order[jx];
    order[jx] = t;
  }
  for (int i = 0; i < 6; i++) {
    switch (order[i]) {
    case 0: w_ld(&s, 1, trace, 16); break;
    case 1: w_ld(&s, 2, sid, 8); break;
    case 2: w_ld(&s, 5, "GET /api/orders", rnd(16)); break;
    case 3: {
      uint64_t t = rnd64();
      w_tag(&s, 7, 1);
      w_bytes(&s, &t, 8);
      break;
    }
    case 4: {
      w_t st = {0};
      w_ld(&st, 2, "ok", 2);
      w_sub(&s, 15, &st);
      break;
    }
    default: w_maybe_unknown(&s); break;
    }
    for (size_t k = rnd(3); k > 0 && at < n_attrs; k--, at++)
      w_kv(&s);
  }
  for (; at < n_attrs; at++)
    w_kv(&s);
  w_sub(w, 2, &s);
}

/* A random request; *n_spans gets its span count. */
static w_t w_request(size_t *n_spans) {
  w_t req = {0};
  uint64_t id = 1;
  *n_spans = 0;
  for (uint32_t r = 1 + rnd(3); r > 0; r--) {
    w_maybe_unknown(&req);
    w_t rs = {0};
    bool res_first = rnd(2);
    w_t res = {0};
    w_ld(&res, 1, "\x0a\x0cservice.name\x12\x05\x0a\x03svc", 21); /* a KeyValue */
    if (res_first) w_sub(&rs, 1, &res);
    for (uint32_t s = rnd(4); s > 0; s--) {
      w_t ss = {0};
      w_maybe_unknown(&ss);
      if (rnd(2)) w_ld(&ss, 1, "\x0a\x04lib1", 6); /* scope */
      for (uint32_t k = rnd(6); k > 0; k--) {
        w_span(&ss, id++);
        (*n_spans)++;
        w_maybe_unknown(&ss);
      }
      if (rnd(3) == 0) w_ld(&ss, 3, "https://schema", 14);
      w_sub(&rs, 2, &ss);
      w_maybe_unknown(&rs);
    }
    if (!res_first) w_sub(&rs, 1, &res);
    free(res.b);
    w_sub(&req, 1, &rs);
  }
  w_maybe_unknown(&req);
  return req;
}

/* ---- the two paths ------------------------------------------------------------------------ */

static sp_otlp_traces_req_t *unpack(sp_arena_t *a, const uint8_t *b, size_t len) {
  return opentelemetry__proto__collector__trace__v1__export_trace_service_request__unpack(
      sp_arena_pbc(a), len, b);
}

static uint8_t *pack(const sp_otlp_traces_req_t *req, size_t *len) {
  *len = protobuf_c_message_get_packed_size(&req->base);
  uint8_t *b = malloc(*len + 1);
  assert_non_null(b);
  assert_int_equal(protobuf_c_message_pack(&req->base, b), *len);
  return b;
}

/* Random attributes for some spans (NULL entries: none). */
typedef struct plan_s {
  sp_spj_attrs_t *a;
  bool *on;
  size_t n;
} plan_t;

static plan_t mk_plan(size_t n) {
  plan_t p = {calloc(n + 1, sizeof(sp_spj_attrs_t)), calloc(n + 1, sizeof(bool)), n};
  for (size_t i = 0; i < n; i++) {
    if (rnd(3) == 0) continue;
    p.on[i] = true;
    sp_spj_attrs_t *a = &p.a[i];
    a->span_id = rnd64();
    a->profile_id = rnd(4) != 0;
    a->cpu = !a->profile_id || rnd(2);
    a->count = rnd(3) == 0 ? 0 : rnd64() >> rnd(64);
    a->cpu_ns = rnd(4) == 0 ? 0 : rnd64() >> rnd(64); /* > INT64_MAX sometimes: clamped */
    a->wall_ns = rnd(4) == 0 ? 0 : rnd64() >> rnd(64);
  }
  return p;
}

static void plan_free(plan_t *p) {
  free(p->a);
  free(p->on);
}

/* The decoded path: unpack, sp__spj_write_attrs on the planned spans, pack. */
static uint8_t *decoded_path(const uint8_t *in, size_t len, const plan_t *p, size_t *out_len) {
  sp_arena_t *a = sp_arena_create(0);
  sp_otlp_traces_req_t *req = unpack(a, in, len);
  assert_non_null(req);
  size_t k = 0;
  for (size_t r = 0; r < req->n_resource_spans; r++)
    for (size_t s = 0; s < req->resource_spans[r]->n_scope_spans; s++) {
      sp_otlp_scope_spans_t *ss = req->resource_spans[r]->scope_spans[s];
      for (size_t i = 0; i < ss->n_spans; i++, k++)
        if (k < p->n && p->on[k])
          assert_int_equal(sp__spj_write_attrs(a, ss->spans[i], &p->a[k]), 0);
    }
  assert_int_equal(k, p->n);
  uint8_t *out = pack(req, out_len);
  sp_arena_destroy(a);
  return out;
}

/* The wire path, queued as spanprofile_join.c queues (keys the span has are skipped). */
static const char *const g_ours[4] = {"pyroscope.profile.id", "profile.sample.count",
                                      "profile.cpu.time_ns", "profile.wall.time_ns"};

typedef struct qctx_s {
  const plan_t *p;
  sp_otlpwire_splice_t *sp;
} qctx_t;

static int queue_span(void *ctx, size_t i, const uint8_t *span, size_t len) {
  qctx_t *c = ctx;
  if (i >= c->p->n || !c->p->on[i]) return 0;
  const sp_spj_attrs_t *a = &c->p->a[i];
  uint32_t have = 0;
  int rc = sp_otlpwire_span_keys(span, len, g_ours, 4, &have);
  if (rc != 0) return rc;
  if (a->profile_id && !(have & 1)) {
    uint8_t raw[8];
    char hex[17];
    for (int b = 0; b < 8; b++)
      raw[b] = (uint8_t)(a->span_id >> (56 - 8 * b));
    sp_hex_encode(raw, 8, hex, sizeof(hex));
    if ((rc = sp_otlpwire_splice_str(c->sp, i, g_ours[0], hex, 16)) != 0) return rc;
  }
  if (a->cpu) {
    const uint64_t v[3] = {a->count, a->cpu_ns, a->wall_ns};
    for (int k = 0; k < 3; k++) {
      if ((k > 0 && v[k] == 0) || (have & (1u << (k + 1)))) continue;
      int64_t x = v[k] > INT64_MAX ? INT64_MAX : (int64_t)v[k];
      if ((rc = sp_otlpwire_splice_int(c->sp, i, g_ours[k + 1], x)) != 0) return rc;
    }
  }
  return 0;
}

static int wire_path(const uint8_t *in, size_t len, const plan_t *p, uint8_t **out,
                     size_t *out_len) {
  sp_otlpwire_splice_t sp;
  sp_otlpwire_splice_init(&sp);
  qctx_t c = {p, &sp};
  int rc = sp_otlpwire_spans(in, len, queue_span, &c);
  if (rc == 0) rc = sp_otlpwire_splice_finish(&sp, in, len, out, out_len);
  sp_otlpwire_splice_free(&sp);
  return rc;
}

/* ---- tests ---------------------------------------------------------------------------------- */

typedef struct walk_s {
  const sp_otlp_span_t **spans; /* the decoded spans in decoded order */
  size_t n, seen;
} walk_t;

/* Each walked span is the next decoded one: same span ID and attribute count. */
static int check_span(void *ctx, size_t i, const uint8_t *span, size_t len) {
  walk_t *w = ctx;
  assert_int_equal(i, w->seen);
  assert_true(i < w->n);
  const sp_otlp_span_t *d = w->spans[i];
  sp_arena_t *a = sp_arena_create(0);
  sp_otlp_span_t *mine = opentelemetry__proto__trace__v1__span__unpack(sp_arena_pbc(a), len, span);
  assert_non_null(mine);
  assert_int_equal(mine->span_id.len, d->span_id.len);
  assert_memory_equal(mine->span_id.data, d->span_id.data, d->span_id.len);
  assert_int_equal(mine->n_attributes, d->n_attributes);
  /* the key reader agrees with strcmp on the decoded keys */
  for (size_t k = 0; k < N_KEYS; k++) {
    if (g_keys[k].len != strlen(g_keys[k].s)) continue; /* not a C string */
    bool has = false;
    for (size_t x = 0; x < d->n_attributes; x++)
      has = has || strcmp(d->attributes[x]->key, g_keys[k].s) == 0;
    assert_int_equal(sp_otlpwire_span_has_attr(span, len, g_keys[k].s), has);
  }
  sp_arena_destroy(a);
  w->seen++;
  return 0;
}

static void test_walk_order_and_keys(void **state) {
  (void)state;
  g_rng = 0x9e3779b97f4a7c15ull;
  for (int iter = 0; iter < 300; iter++) {
    size_t n;
    w_t req = w_request(&n);
    sp_arena_t *a = sp_arena_create(0);
    const sp_otlp_traces_req_t *d = unpack(a, req.b, req.len);
    assert_non_null(d);
    assert_int_equal(sp_traces_count_spans(d), n);
    walk_t w = {.spans = calloc(n + 1, sizeof(*w.spans)), .n = n};
    size_t k = 0;
    for (size_t r = 0; r < d->n_resource_spans; r++)
      for (size_t s = 0; s < d->resource_spans[r]->n_scope_spans; s++)
        for (size_t x = 0; x < d->resource_spans[r]->scope_spans[s]->n_spans; x++)
          w.spans[k++] = d->resource_spans[r]->scope_spans[s]->spans[x];
    assert_int_equal(sp_otlpwire_spans(req.b, req.len, check_span, &w), 0);
    assert_int_equal(w.seen, n);
    free(w.spans);
    sp_arena_destroy(a);
    free(req.b);
  }
}

static int stop_at_2(void *ctx, size_t i, const uint8_t *span, size_t len) {
  (void)span;
  (void)len;
  ++*(size_t *)ctx;
  return i == 2 ? 1 : 0;
}

static int fail_at_1(void *ctx, size_t i, const uint8_t *span, size_t len) {
  (void)ctx;
  (void)span;
  (void)len;
  return i == 1 ? SP_ENOMEM : 0;
}

static void test_walk_stop(void **state) {
  (void)state;
  g_rng = 7;
  size_t n = 0;
  w_t req = {0};
  while (n < 4) {
    free(req.b);
    req = w_request(&n);
  }
  size_t calls = 0;
  assert_int_equal(sp_otlpwire_spans(req.b, req.len, stop_at_2, &calls), 0);
  assert_int_equal(calls, 3);
  assert_int_equal(sp_otlpwire_spans(req.b, req.len, fail_at_1, NULL), SP_ENOMEM);
  assert_int_equal(sp_otlpwire_span_keys(req.b, req.len, g_ours, 33, &(uint32_t){0}), SP_EINVAL);
  free(req.b);
}

static void test_splice_matches_decoded_path(void **state) {
  (void)state;
  g_rng = 0x1234567887654321ull;
  size_t spliced = 0;
  for (int iter = 0; iter < 400; iter++) {
    size_t n;
    w_t req = w_request(&n);
    plan_t p = mk_plan(n);
    size_t ref_len, out_len;
    uint8_t *ref = decoded_path(req.b, req.len, &p, &ref_len);
    uint8_t *out = NULL;
    uint8_t *copy = malloc(req.len + 1);
    memcpy(copy, req.b, req.len);
    assert_int_equal(wire_path(req.b, req.len, &p, &out, &out_len), 0);
    assert_memory_equal(copy, req.b, req.len); /* the input is not touched */
    sp_arena_t *a = sp_arena_create(0);
    sp_otlp_traces_req_t *got = unpack(a, out, out_len);
    assert_non_null(got);
    size_t got_len;
    uint8_t *repacked = pack(got, &got_len);
    assert_int_equal(got_len, ref_len);
    assert_memory_equal(repacked, ref, ref_len);
    if (out_len != req.len) spliced++;
    free(repacked);
    sp_arena_destroy(a);
    sp_free(out);
    free(ref);
    free(copy);
    plan_free(&p);
    free(req.b);
  }
  assert_true(spliced > 200); /* most requests were changed */
}

static void test_empty_splice_is_identity(void **state) {
  (void)state;
  g_rng = 99;
  for (int iter = 0; iter < 50; iter++) {
    size_t n;
    w_t req = w_request(&n);
    sp_otlpwire_splice_t sp;
    sp_otlpwire_splice_init(&sp);
    assert_true(sp_otlpwire_splice_empty(&sp));
    uint8_t *out = NULL;
    size_t out_len = 0;
    assert_int_equal(sp_otlpwire_splice_finish(&sp, req.b, req.len, &out, &out_len), 0);
    assert_int_equal(out_len, req.len);
    assert_memory_equal(out, req.b, req.len);
    sp_free(out);
    sp_otlpwire_splice_free(&sp);
    free(req.b);
  }
}

/* Calls for spans out of order, and repeated runs for one span, keep per-span call order. */
static void test_splice_any_order(void **state) {
  (void)state;
  g_rng = 5;
  size_t n = 0;
  w_t req = {0};
  while (n < 3) {
    free(req.b);
    req = w_request(&n);
  }
  sp_otlpwire_splice_t sp;
  sp_otlpwire_splice_init(&sp);
  assert_int_equal(sp_otlpwire_splice_int(&sp, 2, "a", 1), 0);
  assert_int_equal(sp_otlpwire_splice_str(&sp, 0, "b", "x", 1), 0);
  assert_int_equal(sp_otlpwire_splice_int(&sp, 2, "c", -3), 0);
  assert_int_equal(sp_otlpwire_splice_str(&sp, 2, "d", "", 0), 0);
  uint8_t *out;
  size_t out_len;
  assert_int_equal(sp_otlpwire_splice_finish(&sp, req.b, req.len, &out, &out_len), 0);
  sp_arena_t *a = sp_arena_create(0);
  sp_otlp_traces_req_t *before = unpack(a, req.b, req.len), *after = unpack(a, out, out_len);
  assert_non_null(after);
  const sp_otlp_span_t *spans_b[3], *spans_a[3];
  size_t k = 0;
  for (size_t r = 0; r < after->n_resource_spans; r++)
    for (size_t s = 0; s < after->resource_spans[r]->n_scope_spans; s++)
      for (size_t i = 0; i < after->resource_spans[r]->scope_spans[s]->n_spans && k < 3; i++, k++) {
        spans_a[k] = after->resource_spans[r]->scope_spans[s]->spans[i];
        spans_b[k] = before->resource_spans[r]->scope_spans[s]->spans[i];
      }
  assert_int_equal(spans_a[0]->n_attributes, spans_b[0]->n_attributes + 1);
  assert_int_equal(spans_a[1]->n_attributes, spans_b[1]->n_attributes);
  assert_int_equal(spans_a[2]->n_attributes, spans_b[2]->n_attributes + 3);
  const sp_otlp_kv_t *const *x =
      (const sp_otlp_kv_t *const *)spans_a[2]->attributes + spans_b[2]->n_attributes;
  assert_string_equal(x[0]->key, "a");
  assert_int_equal(x[0]->value->int_value, 1);
  assert_string_equal(x[1]->key, "c");
  assert_int_equal(x[1]->value->int_value, -3);
  assert_string_equal(x[2]->key, "d");
  assert_int_equal(x[2]->value->value_case,
                   OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_STRING_VALUE);
  assert_string_equal(x[2]->value->string_value, "");
  assert_string_equal(spans_a[0]->attributes[spans_b[0]->n_attributes]->value->string_value, "x");
  /* a span the request does not have */
  assert_int_equal(sp_otlpwire_splice_int(&sp, n, "z", 0), 0);
  uint8_t *o2 = NULL;
  assert_int_equal(sp_otlpwire_splice_finish(&sp, req.b, req.len, &o2, &out_len), SP_EINVAL);
  assert_null(o2);
  sp_arena_destroy(a);
  sp_free(out);
  sp_otlpwire_splice_free(&sp);
  free(req.b);
}

static void test_oom_every_allocation(void **state) {
  (void)state;
  g_rng = 0xabcdef;
  for (int iter = 0; iter < 20; iter++) {
    size_t n;
    w_t req = w_request(&n);
    plan_t p = mk_plan(n);
    /* many spans queued (concatenated requests merge): the edits do not fit the stack */
    if (iter == 0) {
      plan_free(&p);
      while (n < 40) {
        size_t more;
        w_t r2 = w_request(&more);
        w_bytes(&req, r2.b, r2.len);
        free(r2.b);
        n += more;
      }
      p = mk_plan(n);
      for (size_t i = 0; i < n; i++) {
        p.on[i] = true;
        p.a[i].cpu = true;
      }
    }
    size_t ref_len;
    uint8_t *ref = decoded_path(req.b, req.len, &p, &ref_len);
    uint8_t *copy = malloc(req.len + 1);
    memcpy(copy, req.b, req.len);
    bool done = false;
    for (long fail = 0; !done; fail++) {
      uint8_t *out = (uint8_t *)"unset";
      size_t out_len = 12345;
      sp_alloc_set_fail_after(fail);
      int rc = wire_path(req.b, req.len, &p, &out, &out_len);
      sp_alloc_set_fail_after(-1);
      assert_memory_equal(copy, req.b, req.len);
      if (rc == SP_ENOMEM) {
        assert_string_equal((char *)out, "unset");
        assert_int_equal(out_len, 12345);
        assert_true(fail < 100);
        continue;
      }
      assert_int_equal(rc, 0);
      sp_arena_t *a = sp_arena_create(0);
      size_t got_len;
      uint8_t *repacked = pack(unpack(a, out, out_len), &got_len);
      assert_int_equal(got_len, ref_len);
      assert_memory_equal(repacked, ref, ref_len);
      free(repacked);
      sp_arena_destroy(a);
      sp_free(out);
      done = true;
    }
    /* a builder whose add failed is as before the call: finish still succeeds */
    sp_otlpwire_splice_t sp;
    sp_otlpwire_splice_init(&sp);
    if (n > 0) {
      assert_int_equal(sp_otlpwire_splice_int(&sp, 0, "k", 1), 0);
      char big[4096];
      memset(big, 'v', sizeof(big));
      sp_alloc_set_fail_after(0);
      assert_int_equal(sp_otlpwire_splice_str(&sp, n - 1, "big", big, sizeof(big)), SP_ENOMEM);
      sp_alloc_set_fail_after(-1);
      uint8_t *out;
      size_t out_len;
      assert_int_equal(sp_otlpwire_splice_finish(&sp, req.b, req.len, &out, &out_len), 0);
      sp_arena_t *a = sp_arena_create(0);
      sp_otlp_traces_req_t *d = unpack(a, out, out_len);
      assert_non_null(d);
      assert_int_equal(sp_traces_count_spans(d), n);
      sp_arena_destroy(a);
      sp_free(out);
    }
    sp_otlpwire_splice_free(&sp);
    free(ref);
    free(copy);
    plan_free(&p);
    free(req.b);
  }
}

static int count_span(void *ctx, size_t i, const uint8_t *span, size_t len) {
  (void)i;
  (void)span;
  (void)len;
  ++*(size_t *)ctx;
  return 0;
}

static void test_truncated_refused(void **state) {
  (void)state;
  g_rng = 31337;
  for (int iter = 0; iter < 30; iter++) {
    size_t n;
    w_t req = w_request(&n);
    if (n == 0) {
      free(req.b);
      continue;
    }
    sp_otlpwire_splice_t sp;
    sp_otlpwire_splice_init(&sp);
    assert_int_equal(sp_otlpwire_splice_int(&sp, n - 1, "profile.sample.count", 3), 0);
    for (size_t t = 0; t < req.len; t++) {
      uint8_t *cut = malloc(t + 1);
      memcpy(cut, req.b, t);
      uint8_t *out = NULL;
      size_t out_len;
      int rc = sp_otlpwire_splice_finish(&sp, cut, t, &out, &out_len);
      sp_arena_t *a = sp_arena_create(0);
      bool decodes = unpack(a, cut, t) != NULL;
      sp_arena_destroy(a);
      /*
       * A prefix protobuf-c refuses is refused; one it accepts (cut between
       * top-level fields) lacks the last span, unless only a trailing
       * unknown field was cut.
       */
      if (!decodes) {
        assert_int_equal(rc, SP_EPROTO);
        assert_null(out);
        assert_int_equal(sp_otlpwire_spans(cut, t, count_span, &(size_t){0}), SP_EPROTO);
      } else if (rc != 0) {
        assert_int_equal(rc, SP_EINVAL);
        assert_null(out);
      }
      sp_free(out);
      free(cut);
    }
    sp_otlpwire_splice_free(&sp);
    free(req.b);
  }
}

static void test_malformed_refused(void **state) {
  (void)state;
  static const struct {
    const char *what;
    const char *b;
    size_t len;
  } bad[] = {
      {"group at the top", "\x0b\x0c", 2},
      {"resource_spans as a varint", "\x08\x01", 2},
      {"scope_spans as fixed32", "\x0a\x05\x15\x01\x02\x03\x04", 7},
      {"span as a varint", "\x0a\x04\x12\x02\x10\x01", 6},
      {"length past the end", "\x0a\x05\x12\x01", 4},
      {"span length past its scope", "\x0a\x04\x12\x02\x12\x05", 6},
      {"an 11-byte varint", "\x10\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01", 12},
      {"field number 0", "\x02\x00", 2},
  };
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
    sp_otlpwire_splice_t sp;
    sp_otlpwire_splice_init(&sp);
    uint8_t *out = NULL;
    size_t out_len, c = 0;
    const uint8_t *b = (const uint8_t *)bad[i].b;
    if (sp_otlpwire_spans(b, bad[i].len, count_span, &c) != SP_EPROTO) fail_msg("%s", bad[i].what);
    if (sp_otlpwire_splice_finish(&sp, b, bad[i].len, &out, &out_len) != SP_EPROTO)
      fail_msg("%s", bad[i].what);
    assert_null(out);
    sp_otlpwire_splice_free(&sp);
  }
  /* malformed attributes of a span */
  uint32_t found;
  assert_int_equal(sp_otlpwire_span_keys((const uint8_t *)"\x48\x01", 2, g_ours, 4, &found),
                   SP_EPROTO);
  assert_int_equal(sp_otlpwire_span_keys((const uint8_t *)"\x4a\x02\x08\x01", 4, g_ours, 4, &found),
                   SP_EPROTO);
  assert_int_equal(sp_otlpwire_span_has_attr((const uint8_t *)"\x4a\x05\x0a", 3, "x"), SP_EPROTO);
  /* an empty request and an empty span are fine */
  size_t c = 0;
  assert_int_equal(sp_otlpwire_spans(NULL, 0, count_span, &c), 0);
  assert_int_equal(c, 0);
  assert_int_equal(sp_otlpwire_span_has_attr(NULL, 0, "x"), 0);
}

/* A request whose span messages have 5-byte length prefixes: the splice shortens them. */
static void test_long_prefixes_shrink(void **state) {
  (void)state;
  w_t span = {0}, ss = {0}, rs = {0}, req = {0};
  uint8_t sid[8] = {1, 2, 3, 4, 5, 6, 7, 8};
  w_tag(&span, 2, 2);
  w_varint(&span, 8, 4);
  w_bytes(&span, sid, 8);
  w_tag(&ss, 2, 2);
  w_varint(&ss, span.len, 4);
  w_bytes(&ss, span.b, span.len);
  w_tag(&rs, 2, 2);
  w_varint(&rs, ss.len, 4);
  w_bytes(&rs, ss.b, ss.len);
  w_tag(&req, 1, 2);
  w_varint(&req, rs.len, 4);
  w_bytes(&req, rs.b, rs.len);
  sp_otlpwire_splice_t sp;
  sp_otlpwire_splice_init(&sp);
  assert_int_equal(sp_otlpwire_splice_str(&sp, 0, "k", "", 0), 0); /* 9 bytes added */
  uint8_t *out;
  size_t out_len;
  assert_int_equal(sp_otlpwire_splice_finish(&sp, req.b, req.len, &out, &out_len), 0);
  assert_int_equal(out_len, req.len + 9 - 3 * 4); /* span, scope and resource prefixes shorter */
  sp_arena_t *a = sp_arena_create(0);
  sp_otlp_traces_req_t *d = unpack(a, out, out_len);
  assert_non_null(d);
  const sp_otlp_span_t *s = d->resource_spans[0]->scope_spans[0]->spans[0];
  assert_int_equal(s->n_attributes, 1);
  assert_string_equal(s->attributes[0]->key, "k");
  assert_memory_equal(s->span_id.data, sid, 8);
  sp_arena_destroy(a);
  sp_free(out);
  sp_otlpwire_splice_free(&sp);
  free(span.b);
  free(ss.b);
  free(rs.b);
  free(req.b);
}

static void test_set_raw(void **state) {
  (void)state;
  g_rng = 4242;
  size_t n;
  w_t req = {0};
  do {
    free(req.b);
    req = w_request(&n);
  } while (n == 0);
  sp_traces_t *b = NULL;
  char err[128];
  assert_int_equal(sp_traces_from_proto(req.b, req.len, true, &b, err, sizeof(err)), 0);
  b->meta.tenant = sp_arena_strdup(b->arena, "t1");
  assert_non_null(sp_traces_request(b)); /* a decoded form that set_raw drops */
  plan_t p = mk_plan(n);
  p.on[0] = true;
  p.a[0].profile_id = true;
  uint8_t *out;
  size_t out_len;
  assert_int_equal(wire_path(req.b, req.len, &p, &out, &out_len), 0);
  /* sole owner: installed in place */
  sp_traces_t *same = b;
  assert_int_equal(sp_traces_set_raw(&b, out, out_len), 0);
  assert_ptr_equal(b, same);
  assert_null(b->req);
  assert_int_equal(b->span_count, n);
  const uint8_t *enc;
  size_t enc_len;
  assert_int_equal(sp_traces_encoded(b, &enc, &enc_len), 0);
  assert_ptr_equal(enc, out);
  /* shared: a private copy carries the new bytes; the other holder keeps the old ones */
  sp_traces_t *other = sp_traces_ref(b);
  uint8_t *again = sp_malloc(req.len);
  memcpy(again, req.b, req.len);
  sp_alloc_set_fail_after(0);
  assert_int_equal(sp_traces_set_raw(&b, again, req.len), SP_ENOMEM); /* frees `again` */
  sp_alloc_set_fail_after(-1);
  for (long fail = 0;; fail++) {
    again = sp_malloc(req.len);
    memcpy(again, req.b, req.len);
    sp_alloc_set_fail_after(fail);
    int rc = sp_traces_set_raw(&b, again, req.len);
    sp_alloc_set_fail_after(-1);
    if (rc == SP_ENOMEM) {
      assert_ptr_equal(b, other);
      assert_int_equal(b->refcnt, 2);
      continue;
    }
    assert_int_equal(rc, 0);
    break;
  }
  assert_ptr_not_equal(b, other);
  assert_int_equal(other->refcnt, 1);
  assert_ptr_equal(other->raw, out);
  assert_int_equal(b->raw_len, req.len);
  assert_memory_equal(b->raw, req.b, req.len);
  assert_string_equal(b->meta.tenant, "t1");
  assert_int_equal(b->span_count, n);
  sp_traces_unref(other);
  sp_traces_unref(b);
  plan_free(&p);
  free(req.b);
}

/* Attributes queued after a finish (which sorted the runs by span) still go to their span. */
static void test_add_after_finish(void **state) {
  (void)state;
  Opentelemetry__Proto__Trace__V1__Span s0 = OPENTELEMETRY__PROTO__TRACE__V1__SPAN__INIT,
                                        s1 = OPENTELEMETRY__PROTO__TRACE__V1__SPAN__INIT;
  s0.name = "s0";
  s1.name = "s1";
  Opentelemetry__Proto__Trace__V1__Span *spans[2] = {&s0, &s1};
  Opentelemetry__Proto__Trace__V1__ScopeSpans ss =
      OPENTELEMETRY__PROTO__TRACE__V1__SCOPE_SPANS__INIT;
  ss.n_spans = 2;
  ss.spans = spans;
  Opentelemetry__Proto__Trace__V1__ScopeSpans *ssp = &ss;
  Opentelemetry__Proto__Trace__V1__ResourceSpans rs =
      OPENTELEMETRY__PROTO__TRACE__V1__RESOURCE_SPANS__INIT;
  rs.n_scope_spans = 1;
  rs.scope_spans = &ssp;
  Opentelemetry__Proto__Trace__V1__ResourceSpans *rsp = &rs;
  Opentelemetry__Proto__Collector__Trace__V1__ExportTraceServiceRequest req =
      OPENTELEMETRY__PROTO__COLLECTOR__TRACE__V1__EXPORT_TRACE_SERVICE_REQUEST__INIT;
  req.n_resource_spans = 1;
  req.resource_spans = &rsp;
  uint8_t buf[256];
  size_t len =
      opentelemetry__proto__collector__trace__v1__export_trace_service_request__pack(&req, buf);
  sp_otlpwire_splice_t sp;
  sp_otlpwire_splice_init(&sp);
  uint8_t *out;
  size_t out_len;
  assert_int_equal(sp_otlpwire_splice_str(&sp, 1, "k1", "AAAA", 4), 0);
  assert_int_equal(sp_otlpwire_splice_str(&sp, 0, "k0", "BBBB", 4), 0);
  assert_int_equal(sp_otlpwire_splice_finish(&sp, buf, len, &out, &out_len), 0);
  sp_free(out);
  assert_int_equal(sp_otlpwire_splice_str(&sp, 1, "k2", "CCCC", 4), 0);
  assert_int_equal(sp_otlpwire_splice_finish(&sp, buf, len, &out, &out_len), 0);
  Opentelemetry__Proto__Collector__Trace__V1__ExportTraceServiceRequest *d =
      opentelemetry__proto__collector__trace__v1__export_trace_service_request__unpack(
          NULL, out_len, out);
  assert_non_null(d);
  Opentelemetry__Proto__Trace__V1__Span *const *got = d->resource_spans[0]->scope_spans[0]->spans;
  assert_int_equal(got[0]->n_attributes, 1);
  assert_string_equal(got[0]->attributes[0]->key, "k0");
  assert_string_equal(got[0]->attributes[0]->value->string_value, "BBBB");
  assert_int_equal(got[1]->n_attributes, 2);
  assert_string_equal(got[1]->attributes[0]->key, "k1");
  assert_string_equal(got[1]->attributes[0]->value->string_value, "AAAA");
  assert_string_equal(got[1]->attributes[1]->key, "k2");
  assert_string_equal(got[1]->attributes[1]->value->string_value, "CCCC");
  opentelemetry__proto__collector__trace__v1__export_trace_service_request__free_unpacked(d, NULL);
  sp_free(out);
  sp_otlpwire_splice_free(&sp);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_walk_order_and_keys),
      cmocka_unit_test(test_walk_stop),
      cmocka_unit_test(test_splice_matches_decoded_path),
      cmocka_unit_test(test_empty_splice_is_identity),
      cmocka_unit_test(test_splice_any_order),
      cmocka_unit_test(test_oom_every_allocation),
      cmocka_unit_test(test_truncated_refused),
      cmocka_unit_test(test_malformed_refused),
      cmocka_unit_test(test_long_prefixes_shrink),
      cmocka_unit_test(test_set_raw),
      cmocka_unit_test(test_add_after_finish),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
