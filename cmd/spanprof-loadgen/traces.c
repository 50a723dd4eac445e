/*
 * traces.c — realistic OTLP traces, pre-encoded once, patched per send.
 *
 * Each batch holds whole traces of four spans: an HTTP server span with ten
 * attributes and three children (a PostgreSQL query, an HTTP call to another
 * service, a Redis GET), under a resource with ten attributes, as an
 * instrumented web service's SDK exports them. A pool of distinct batches
 * (routes, status codes, durations, services vary) is encoded once with
 * protobuf-c (or the OTLP/JSON codec); generating data is then never the
 * bottleneck.
 *
 * So that no two sends carry the same IDs, the offsets of every trace ID,
 * span ID, parent span ID and timestamp in the encoded bytes are recorded
 * (with the wire reader of pipeline/pbwire.h, or by finding the keys in the
 * JSON), and each send copies a pool entry into its slot's buffer and XORs
 * the IDs with per-send keys — the same key for a span ID and the parent IDs
 * that name it, so the trees stay intact — and moves the times so that the
 * batch's first span ends at the moment of sending (the sink measures the
 * delivery latency from it). Pre-compressed (--gzip) pools are sent as they
 * are: their IDs repeat every pool-size batches.
 */
#include "cmd/spanprof-loadgen/loadgen.h"

#include "pipeline/alloc.h"
#include "pipeline/arena.h"
#include "pipeline/batch.h"
#include "pipeline/compress.h"
#include "pipeline/error.h"
#include "pipeline/hex.h"
#include "pipeline/log.h"
#include "pipeline/pbjson.h"
#include "pipeline/pbwire.h"

#include "opentelemetry/proto/collector/trace/v1/trace_service.pb-c.h"

#include <stdlib.h>
#include <string.h>

typedef Opentelemetry__Proto__Common__V1__KeyValue lg_kv_t;
typedef Opentelemetry__Proto__Common__V1__AnyValue lg_any_t;
typedef Opentelemetry__Proto__Trace__V1__Span lg_span_t;

typedef struct lg_entry_s {
  uint8_t *bytes;
  size_t len;
  uint32_t *trace_off; /* proto: low 8 bytes of each trace ID; json: their 16 hex chars */
  size_t n_trace;
  uint32_t *sid_off;   /* span and parent span IDs (8 bytes / 16 hex chars) */
  size_t n_sid;
  uint32_t *time_off;  /* proto: fixed64 LE; json: 19 decimal digits */
  uint64_t *time_rel;  /* value = now - rel */
  size_t n_time;
  uint64_t *span_ids;  /* base span IDs, big-endian values, in span order */
  size_t n_spans;
  char service[64];
} lg_entry_t;

struct lg_span_pool_s {
  lg_span_pool_opts_t o;
  lg_entry_t *e;
  size_t n;
  size_t max_len;
};

/* ---- building one batch ------------------------------------------------------ */

typedef struct lg_build_s {
  sp_arena_t *a;
  uint64_t *rng;
} lg_build_t;

static lg_kv_t *lg__kv_str(lg_build_t *b, const char *key, const char *val) {
  lg_kv_t *kv = sp_arena_alloc(b->a, sizeof(*kv));
  lg_any_t *v = sp_arena_alloc(b->a, sizeof(*v));
  if (kv == NULL || v == NULL)
    return NULL;
  opentelemetry__proto__common__v1__key_value__init(kv);
  opentelemetry__proto__common__v1__any_value__init(v);
  kv->key = sp_arena_strdup(b->a, key);
  v->value_case = OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_STRING_VALUE;
  v->string_value = sp_arena_strdup(b->a, val);
  kv->value = v;
  return kv->key && v->string_value ? kv : NULL;
}

static lg_kv_t *lg__kv_int(lg_build_t *b, const char *key, int64_t val) {
  lg_kv_t *kv = sp_arena_alloc(b->a, sizeof(*kv));
  lg_any_t *v = sp_arena_alloc(b->a, sizeof(*v));
  if (kv == NULL || v == NULL)
    return NULL;
  opentelemetry__proto__common__v1__key_value__init(kv);
  opentelemetry__proto__common__v1__any_value__init(v);
  kv->key = sp_arena_strdup(b->a, key);
  v->value_case = OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_INT_VALUE;
  v->int_value = val;
  kv->value = v;
  return kv->key ? kv : NULL;
}

static void lg__rand_bytes(uint64_t *rng, uint8_t *out, size_t n) {
  for (size_t i = 0; i < n; i += 8) {
    uint64_t r = lg_rand(rng);
    for (size_t k = 0; k < 8 && i + k < n; k++)
      out[i + k] = (uint8_t)(r >> (8 * k));
  }
}

static lg_span_t *lg__span(lg_build_t *b, const uint8_t *trace_id, const uint8_t *parent,
                           const char *name, int kind, uint64_t start, uint64_t end, size_t n_attrs) {
  lg_span_t *s = sp_arena_alloc(b->a, sizeof(*s));
  uint8_t *ids = sp_arena_alloc(b->a, 8);
  lg_kv_t **attrs = sp_arena_alloc(b->a, n_attrs * sizeof(*attrs));
  if (s == NULL || ids == NULL || attrs == NULL)
    return NULL;
  opentelemetry__proto__trace__v1__span__init(s);
  do
    lg__rand_bytes(b->rng, ids, 8);
  while (ids[0] == 0); /* never all zero; a non-zero first byte also keeps hex unambiguous */
  s->trace_id.data = (uint8_t *)trace_id;
  s->trace_id.len = 16;
  s->span_id.data = ids;
  s->span_id.len = 8;
  if (parent != NULL) {
    s->parent_span_id.data = (uint8_t *)parent;
    s->parent_span_id.len = 8;
  }
  s->flags = 0x101; /* sampled, with the "parent is remote" bits known */
  s->name = sp_arena_strdup(b->a, name);
  s->kind = kind;
  s->start_time_unix_nano = start;
  s->end_time_unix_nano = end;
  s->attributes = attrs;
  s->n_attributes = 0;
  return s->name ? s : NULL;
}

#define LG_ADD(s, kv)                                                                              \
  do {                                                                                             \
    lg_kv_t *kv_ = (kv);                                                                           \
    if (kv_ == NULL)                                                                               \
      return NULL;                                                                                 \
    (s)->attributes[(s)->n_attributes++] = kv_;                                                    \
  } while (0)

static const char *const lg__routes[] = {"/api/v1/orders/{id}", "/api/v1/users/{id}",
                                         "/api/v1/cart", "/api/v1/products", "/checkout",
                                         "/api/v1/search", "/healthz", "/api/v1/payments/{id}"};
static const char *const lg__methods[] = {"GET", "GET", "POST", "GET", "POST", "GET", "GET", "PUT"};
static const char *const lg__tables[] = {"orders", "users", "carts", "products", "payments"};

/* One trace (4 spans) ending at @p end into @p out. */
static lg_span_t **lg__trace(lg_build_t *b, uint64_t end, lg_span_t **out) {
  uint64_t *rng = b->rng;
  uint8_t *tid = sp_arena_alloc(b->a, 16);
  if (tid == NULL)
    return NULL;
  lg__rand_bytes(rng, tid, 16);
  tid[0] |= 1;
  size_t r = lg_rand(rng) % 8;
  uint64_t dur = 2000000 + lg_rand(rng) % 180000000; /* 2–182 ms */
  uint64_t start = end - dur;
  int status = (lg_rand(rng) % 50) == 0 ? 500 : ((lg_rand(rng) % 20) == 0 ? 404 : 200);
  char name[128], path[128], buf[160];
  snprintf(name, sizeof(name), "%s %s", lg__methods[r], lg__routes[r]);
  lg_span_t *root = lg__span(b, tid, NULL, name, 2 /* SERVER */, start, end, 10);
  if (root == NULL)
    return NULL;
  snprintf(path, sizeof(path), "%s", lg__routes[r]);
  char *brace = strchr(path, '{');
  if (brace != NULL)
    snprintf(brace, sizeof(path) - (size_t)(brace - path), "%llu",
             (unsigned long long)(lg_rand(rng) % 1000000));
  LG_ADD(root, lg__kv_str(b, "http.request.method", lg__methods[r]));
  LG_ADD(root, lg__kv_str(b, "url.path", path));
  LG_ADD(root, lg__kv_str(b, "url.scheme", "https"));
  LG_ADD(root, lg__kv_str(b, "http.route", lg__routes[r]));
  LG_ADD(root, lg__kv_int(b, "http.response.status_code", status));
  LG_ADD(root, lg__kv_str(b, "server.address", "shop.example.com"));
  LG_ADD(root, lg__kv_int(b, "server.port", 443));
  LG_ADD(root, lg__kv_str(b, "user_agent.original",
                          "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"));
  snprintf(buf, sizeof(buf), "10.%u.%u.%u", (unsigned)(lg_rand(rng) % 256),
           (unsigned)(lg_rand(rng) % 256), (unsigned)(lg_rand(rng) % 256));
  LG_ADD(root, lg__kv_str(b, "client.address", buf));
  LG_ADD(root, lg__kv_str(b, "network.protocol.version", "1.1"));
  if (status >= 500) {
    root->status = sp_arena_alloc(b->a, sizeof(*root->status));
    if (root->status == NULL)
      return NULL;
    opentelemetry__proto__trace__v1__status__init(root->status);
    root->status->code = OPENTELEMETRY__PROTO__TRACE__V1__STATUS__STATUS_CODE__STATUS_CODE_ERROR;
  }
  const uint8_t *pid = root->span_id.data;
  /* The database query: the first 40% of the request. */
  const char *table = lg__tables[lg_rand(rng) % 5];
  uint64_t d1s = start + dur / 20, d1e = start + dur / 20 + dur * 2 / 5;
  snprintf(name, sizeof(name), "SELECT shop.%s", table);
  lg_span_t *db = lg__span(b, tid, pid, name, 3 /* CLIENT */, d1s, d1e, 6);
  if (db == NULL)
    return NULL;
  snprintf(buf, sizeof(buf), "SELECT id, status, total, created_at FROM %s WHERE id = $1", table);
  LG_ADD(db, lg__kv_str(b, "db.system", "postgresql"));
  LG_ADD(db, lg__kv_str(b, "db.namespace", "shop"));
  LG_ADD(db, lg__kv_str(b, "db.operation.name", "SELECT"));
  LG_ADD(db, lg__kv_str(b, "db.query.text", buf));
  LG_ADD(db, lg__kv_str(b, "server.address", "pg-primary.shop.svc"));
  LG_ADD(db, lg__kv_int(b, "server.port", 5432));
  /* A call to another service: the next 40%. */
  uint64_t h1s = d1e + dur / 50, h1e = h1s + dur * 2 / 5;
  lg_span_t *http = lg__span(b, tid, pid, "GET", 3 /* CLIENT */, h1s, h1e, 5);
  if (http == NULL)
    return NULL;
  LG_ADD(http, lg__kv_str(b, "http.request.method", "GET"));
  LG_ADD(http, lg__kv_str(b, "url.full", "http://inventory.shop.svc:8080/v1/stock?sku=184467"));
  LG_ADD(http, lg__kv_str(b, "server.address", "inventory.shop.svc"));
  LG_ADD(http, lg__kv_int(b, "server.port", 8080));
  LG_ADD(http, lg__kv_int(b, "http.response.status_code", 200));
  /* A cache read near the end. */
  uint64_t c1s = h1e + dur / 100, c1e = c1s + dur / 50;
  lg_span_t *cache = lg__span(b, tid, pid, "GET", 3 /* CLIENT */, c1s, c1e, 4);
  if (cache == NULL)
    return NULL;
  LG_ADD(cache, lg__kv_str(b, "db.system", "redis"));
  LG_ADD(cache, lg__kv_str(b, "db.operation.name", "GET"));
  LG_ADD(cache, lg__kv_str(b, "server.address", "redis.shop.svc"));
  LG_ADD(cache, lg__kv_int(b, "server.port", 6379));
  out[0] = root;
  out[1] = db;
  out[2] = http;
  out[3] = cache;
  return out;
}

/* Builds the request for entry @p idx into @p b's arena. */
static sp_otlp_traces_req_t *lg__request(lg_build_t *b, size_t idx, size_t n_spans,
                                         size_t services, char *service, size_t service_cap) {
  sp_otlp_traces_req_t *req = sp_arena_alloc(b->a, sizeof(*req));
  Opentelemetry__Proto__Trace__V1__ResourceSpans *rs = sp_arena_alloc(b->a, sizeof(*rs));
  Opentelemetry__Proto__Resource__V1__Resource *res = sp_arena_alloc(b->a, sizeof(*res));
  Opentelemetry__Proto__Trace__V1__ScopeSpans *ss = sp_arena_alloc(b->a, sizeof(*ss));
  Opentelemetry__Proto__Common__V1__InstrumentationScope *scope =
      sp_arena_alloc(b->a, sizeof(*scope));
  lg_kv_t **rattrs = sp_arena_alloc(b->a, 10 * sizeof(*rattrs));
  lg_span_t **spans = sp_arena_alloc(b->a, (n_spans + 4) * sizeof(*spans));
  if (!req || !rs || !res || !ss || !scope || !rattrs || !spans)
    return NULL;
  opentelemetry__proto__collector__trace__v1__export_trace_service_request__init(req);
  opentelemetry__proto__trace__v1__resource_spans__init(rs);
  opentelemetry__proto__resource__v1__resource__init(res);
  opentelemetry__proto__trace__v1__scope_spans__init(ss);
  opentelemetry__proto__common__v1__instrumentation_scope__init(scope);
  size_t svc = services > 0 ? idx % services : 0;
  snprintf(service, service_cap, "loadgen-svc-%zu", svc);
  char inst[64], host[64];
  snprintf(inst, sizeof(inst), "%08x-7b1c-4c3e-9a51-%012llx", (unsigned)(0x5eed0000 + svc),
           (unsigned long long)(0xa11ce000ull + svc));
  snprintf(host, sizeof(host), "node-%zu.cluster.local", svc % 3);
  size_t n = 0;
#define LG_RADD(kv)                                                                                \
  do {                                                                                             \
    if ((rattrs[n++] = (kv)) == NULL)                                                              \
      return NULL;                                                                                 \
  } while (0)
  LG_RADD(lg__kv_str(b, "service.name", service));
  LG_RADD(lg__kv_str(b, "service.namespace", "shop"));
  LG_RADD(lg__kv_str(b, "service.version", "2.14.1"));
  LG_RADD(lg__kv_str(b, "service.instance.id", inst));
  LG_RADD(lg__kv_str(b, "deployment.environment.name", "production"));
  LG_RADD(lg__kv_str(b, "host.name", host));
  LG_RADD(lg__kv_int(b, "process.pid", 4000 + (int64_t)svc));
  LG_RADD(lg__kv_str(b, "telemetry.sdk.name", "opentelemetry"));
  LG_RADD(lg__kv_str(b, "telemetry.sdk.language", "go"));
  LG_RADD(lg__kv_str(b, "telemetry.sdk.version", "1.32.0"));
#undef LG_RADD
  res->attributes = rattrs;
  res->n_attributes = n;
  scope->name = "go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp";
  scope->version = "0.57.0";
  /* Traces end one after the other going back in time from a fixed base, so
   * the first span of the batch ends last: the send time is patched onto it. */
  uint64_t base = 1700000000000000000ull;
  size_t k = 0;
  for (uint64_t t = 0; k < n_spans; t++) {
    if (lg__trace(b, base - t * 997000, spans + k) == NULL)
      return NULL;
    k += 4;
  }
  ss->scope = scope;
  ss->spans = spans;
  ss->n_spans = k;
  rs->resource = res;
  rs->scope_spans = sp_arena_alloc(b->a, sizeof(*rs->scope_spans));
  req->resource_spans = sp_arena_alloc(b->a, sizeof(*req->resource_spans));
  if (rs->scope_spans == NULL || req->resource_spans == NULL)
    return NULL;
  rs->scope_spans[0] = ss;
  rs->n_scope_spans = 1;
  rs->schema_url = "https://opentelemetry.io/schemas/1.26.0";
  req->resource_spans[0] = rs;
  req->n_resource_spans = 1;
  return req;
}

/* ---- recording patch offsets --------------------------------------------------- */

typedef struct lg_offs_s {
  uint32_t *v;
  uint64_t *rel;
  size_t n, cap;
} lg_offs_t;

static int lg__push(lg_offs_t *o, size_t off, uint64_t rel) {
  if (o->n == o->cap) {
    size_t cap = o->cap ? o->cap * 2 : 1024;
    uint32_t *v = sp_realloc(o->v, cap * sizeof(*v));
    if (v == NULL)
      return SP_ENOMEM;
    o->v = v;
    uint64_t *r = sp_realloc(o->rel, cap * sizeof(*r));
    if (r == NULL)
      return SP_ENOMEM;
    o->rel = r;
    o->cap = cap;
  }
  o->v[o->n] = (uint32_t)off;
  o->rel[o->n++] = rel;
  return 0;
}

static void lg__offs_free(lg_offs_t *o) {
  sp_free(o->v);
  sp_free(o->rel);
}

static const uint64_t lg__base_end = 1700000000000000000ull;

/* Walks request → resource_spans → scope_spans → spans and records the offsets. */
static int lg__offsets_proto(const uint8_t *buf, size_t len, lg_offs_t *tr, lg_offs_t *sid,
                             lg_offs_t *tm) {
  sp_pbwire_t r0 = sp_pbwire_init(buf, len);
  sp_pbwire_field_t f0, f1, f2, f3;
  int rc = 0;
  while (rc == 0 && sp_pbwire_next(&r0, &f0)) {
    if (f0.num != 1 || f0.wt != 2)
      continue;
    sp_pbwire_t r1 = sp_pbwire_sub(&f0);
    while (rc == 0 && sp_pbwire_next(&r1, &f1)) {
      if (f1.num != 2 || f1.wt != 2)
        continue;
      sp_pbwire_t r2 = sp_pbwire_sub(&f1);
      while (rc == 0 && sp_pbwire_next(&r2, &f2)) {
        if (f2.num != 2 || f2.wt != 2)
          continue;
        sp_pbwire_t r3 = sp_pbwire_sub(&f2);
        while (rc == 0 && sp_pbwire_next(&r3, &f3)) {
          size_t off = (size_t)(f3.data - buf);
          if (f3.num == 1 && f3.wt == 2 && f3.v == 16)
            rc = lg__push(tr, off + 8, 0);
          else if ((f3.num == 2 || f3.num == 4) && f3.wt == 2 && f3.v == 8)
            rc = lg__push(sid, off, 0);
          else if ((f3.num == 7 || f3.num == 8) && f3.wt == 1)
            rc = lg__push(tm, off, lg__base_end - f3.v);
        }
      }
    }
  }
  return rc;
}

/* Finds `"key":"` occurrences and records where their values start (+ @p skip chars). */
static int lg__offsets_json_key(const uint8_t *buf, size_t len, const char *key, size_t skip,
                                size_t want_len, lg_offs_t *o, bool time) {
  size_t kl = strlen(key);
  const uint8_t *p = buf, *end = buf + len;
  while ((p = memmem(p, (size_t)(end - p), key, kl)) != NULL) {
    p += kl;
    const uint8_t *v = p;
    size_t n = 0;
    while (v + n < end && v[n] != '"')
      n++;
    if (n != want_len)
      continue;
    uint64_t rel = 0;
    if (time) {
      uint64_t val = strtoull((const char *)v, NULL, 10);
      rel = lg__base_end - val;
    }
    int rc = lg__push(o, (size_t)(v - buf) + skip, rel);
    if (rc != 0)
      return rc;
  }
  return 0;
}

static int lg__offsets_json(const uint8_t *buf, size_t len, lg_offs_t *tr, lg_offs_t *sid,
                            lg_offs_t *tm) {
  int rc = lg__offsets_json_key(buf, len, "\"traceId\":\"", 16, 32, tr, false);
  if (rc == 0)
    rc = lg__offsets_json_key(buf, len, "\"spanId\":\"", 0, 16, sid, false);
  if (rc == 0)
    rc = lg__offsets_json_key(buf, len, "\"parentSpanId\":\"", 0, 16, sid, false);
  if (rc == 0)
    rc = lg__offsets_json_key(buf, len, "\"startTimeUnixNano\":\"", 0, 19, tm, true);
  if (rc == 0)
    rc = lg__offsets_json_key(buf, len, "\"endTimeUnixNano\":\"", 0, 19, tm, true);
  return rc;
}

/* ---- the pool -------------------------------------------------------------------- */

static int lg__entry_build(const lg_span_pool_opts_t *o, size_t idx, uint64_t *rng,
                           lg_entry_t *e) {
  int rc = SP_ENOMEM;
  sp_arena_t *a = sp_arena_create(1 << 20);
  sp_buf_t enc, gz;
  sp_buf_init(&enc, 0);
  sp_buf_init(&gz, 0);
  lg_offs_t tr = {0}, sid = {0}, tm = {0};
  if (a == NULL)
    goto fail;
  lg_build_t b = {a, rng};
  size_t n_spans = (o->batch_spans + 3) / 4 * 4;
  sp_otlp_traces_req_t *req = lg__request(&b, idx, n_spans, o->services, e->service,
                                          sizeof(e->service));
  if (req == NULL)
    goto fail;
  e->n_spans = n_spans;
  e->span_ids = sp_calloc(n_spans, sizeof(uint64_t));
  if (e->span_ids == NULL)
    goto fail;
  Opentelemetry__Proto__Trace__V1__ScopeSpans *ss = req->resource_spans[0]->scope_spans[0];
  for (size_t i = 0; i < ss->n_spans; i++) {
    uint64_t v = 0;
    for (int k = 0; k < 8; k++)
      v = v << 8 | ss->spans[i]->span_id.data[k];
    e->span_ids[i] = v;
  }
  if (o->json) {
    if ((rc = sp_pbjson_encode(&req->base, SP_PBJSON_OTLP, &enc)) != 0)
      goto fail;
  } else {
    size_t n = protobuf_c_message_get_packed_size(&req->base);
    if ((rc = sp_buf_reserve(&enc, n)) != 0)
      goto fail;
    enc.len = protobuf_c_message_pack(&req->base, enc.data);
  }
  if (o->gzip) {
    if ((rc = sp_gzip_compress(enc.data, enc.len, -1, &gz)) != 0)
      goto fail;
    e->bytes = sp_buf_steal(&gz, &e->len);
  } else {
    rc = o->json ? lg__offsets_json(enc.data, enc.len, &tr, &sid, &tm)
                 : lg__offsets_proto(enc.data, enc.len, &tr, &sid, &tm);
    if (rc != 0)
      goto fail;
    e->bytes = sp_buf_steal(&enc, &e->len);
    e->trace_off = tr.v;
    e->n_trace = tr.n;
    tr.v = NULL;
    e->sid_off = sid.v;
    e->n_sid = sid.n;
    sid.v = NULL;
    e->time_off = tm.v;
    e->time_rel = tm.rel;
    e->n_time = tm.n;
    tm.v = NULL;
    tm.rel = NULL;
  }
  rc = e->bytes != NULL ? 0 : SP_ENOMEM;
fail:
  lg__offs_free(&tr);
  lg__offs_free(&sid);
  lg__offs_free(&tm);
  sp_buf_free(&enc);
  sp_buf_free(&gz);
  sp_arena_destroy(a);
  return rc;
}

int lg_span_pool_create(const lg_span_pool_opts_t *o, lg_span_pool_t **out) {
  lg_span_pool_t *p = sp_calloc(1, sizeof(*p));
  if (p == NULL)
    return SP_ENOMEM;
  p->o = *o;
  if (p->o.batches == 0)
    p->o.batches = 1;
  if (p->o.batch_spans == 0)
    p->o.batch_spans = 4;
  p->e = sp_calloc(p->o.batches, sizeof(*p->e));
  if (p->e == NULL) {
    sp_free(p);
    return SP_ENOMEM;
  }
  uint64_t rng = o->seed;
  for (size_t i = 0; i < p->o.batches; i++) {
    int rc = lg__entry_build(&p->o, i, &rng, &p->e[i]);
    p->n = i + 1;
    if (rc != 0) {
      lg_span_pool_destroy(p);
      return rc;
    }
    if (p->e[i].len > p->max_len)
      p->max_len = p->e[i].len;
  }
  *out = p;
  return 0;
}

void lg_span_pool_destroy(lg_span_pool_t *p) {
  if (p == NULL)
    return;
  for (size_t i = 0; i < p->n; i++) {
    lg_entry_t *e = &p->e[i];
    sp_free(e->bytes);
    sp_free(e->trace_off);
    sp_free(e->sid_off);
    sp_free(e->time_off);
    sp_free(e->time_rel);
    sp_free(e->span_ids);
  }
  sp_free(p->e);
  sp_free(p);
}

size_t lg_span_pool_max_len(const lg_span_pool_t *p) { return p->max_len; }
size_t lg_span_pool_size(const lg_span_pool_t *p) { return p->n; }
size_t lg_span_pool_spans(const lg_span_pool_t *p, size_t i) { return p->e[i].n_spans; }
const char *lg_span_pool_service(const lg_span_pool_t *p, size_t i) { return p->e[i].service; }

const uint64_t *lg_span_pool_span_ids(const lg_span_pool_t *p, size_t i, size_t *n) {
  *n = p->e[i].n_spans;
  return p->e[i].span_ids;
}

static void lg__xor_be(uint8_t *p, uint64_t key) {
  for (int k = 0; k < 8; k++)
    p[k] ^= (uint8_t)(key >> (56 - 8 * k));
}

static void lg__xor_hex(uint8_t *p, uint64_t key) {
  uint8_t b[8];
  if (sp_hex_decode((const char *)p, 16, b) != 0)
    return;
  lg__xor_be(b, key);
  char hex[17];
  sp_hex_encode(b, 8, hex, sizeof(hex));
  memcpy(p, hex, 16);
}

size_t lg_span_pool_emit(const lg_span_pool_t *p, size_t i, uint8_t *dst, uint64_t trace_key,
                         uint64_t span_key, uint64_t now_ns) {
  const lg_entry_t *e = &p->e[i];
  memcpy(dst, e->bytes, e->len);
  if (p->o.gzip)
    return e->len;
  bool json = p->o.json;
  for (size_t k = 0; k < e->n_trace; k++)
    json ? lg__xor_hex(dst + e->trace_off[k], trace_key) : lg__xor_be(dst + e->trace_off[k], trace_key);
  for (size_t k = 0; k < e->n_sid; k++)
    json ? lg__xor_hex(dst + e->sid_off[k], span_key) : lg__xor_be(dst + e->sid_off[k], span_key);
  for (size_t k = 0; k < e->n_time; k++) {
    uint64_t v = now_ns - e->time_rel[k];
    uint8_t *q = dst + e->time_off[k];
    if (json) {
      for (int d = 18; d >= 0; d--) {
        q[d] = (uint8_t)('0' + v % 10);
        v /= 10;
      }
    } else {
      for (int b = 0; b < 8; b++)
        q[b] = (uint8_t)(v >> (8 * b));
    }
  }
  return e->len;
}

/* ---- the `traces` mode ------------------------------------------------------------ */

typedef struct lg_traces_s {
  lg_span_pool_t *pool;
  lg_target_t target;
  uint8_t **bufs; /* one per slot */
  size_t next;
  uint64_t rng;
} lg_traces_t;

static bool lg__traces_fill(void *ctx, lg_job_t *job) {
  lg_traces_t *t = ctx;
  size_t i = t->next++ % lg_span_pool_size(t->pool);
  uint64_t tk = lg_rand(&t->rng), sk = lg_rand(&t->rng);
  size_t len = lg_span_pool_emit(t->pool, i, t->bufs[job->idx], tk, sk, lg_wall_ns());
  job->parts[0] = (lg_part_t){&t->target, t->bufs[job->idx], len, lg_span_pool_spans(t->pool, i),
                              NULL};
  job->n_parts = 1;
  return true;
}

static const char lg__traces_help[] =
    "usage: spanprof-loadgen traces [flags]\n"
    "\n"
    "Sends OTLP traces: realistic 4-span traces (an HTTP server span and three\n"
    "client/database children) in batches, over OTLP/HTTP or OTLP/gRPC.\n"
    "\n"
    "  --batch N            spans per request (default 512)\n"
    "  --pool N             distinct pre-encoded batches (default 16)\n"
    "  --services N         distinct service.name values (default 4)\n";

int lg_traces_main(int argc, char **argv) {
  lg_common_t c;
  lg_common_defaults(&c);
  size_t batch = 512, pool_n = 16, services = 4;
  for (int i = 0; i < argc; i++) {
    int r = lg_common_flag(&c, argc, argv, &i);
    if (r < 0)
      return 2;
    if (r > 0)
      continue;
    if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
      fputs(lg__traces_help, stdout);
      fputs(lg_common_help, stdout);
      return 0;
    }
    if (i + 1 < argc && (strcmp(argv[i], "--batch") == 0 || strcmp(argv[i], "--pool") == 0 ||
                         strcmp(argv[i], "--services") == 0)) {
      double v;
      if (lg_parse_count(argv[i + 1], &v) != 0 || v < 1) {
        fprintf(stderr, "spanprof-loadgen: bad value for %s: %s\n", argv[i], argv[i + 1]);
        return 2;
      }
      if (strcmp(argv[i], "--batch") == 0)
        batch = (size_t)v;
      else if (strcmp(argv[i], "--pool") == 0)
        pool_n = (size_t)v;
      else
        services = (size_t)v;
      i++;
      continue;
    }
    fprintf(stderr, "spanprof-loadgen traces: unknown flag %s (see --help)\n", argv[i]);
    return 2;
  }
  lg_traces_t t = {.rng = c.seed ^ 0x7ace5};
  lg_span_pool_opts_t po = {.batches = pool_n, .batch_spans = batch, .services = services,
                            .json = c.json, .gzip = c.gzip && c.proto == LG_PROTO_HTTP,
                            .seed = c.seed};
  int rc = lg_span_pool_create(&po, &t.pool);
  if (rc != 0) {
    fprintf(stderr, "spanprof-loadgen: cannot build the span pool: %s\n", sp_strerror(rc));
    return 1;
  }
  lg_target_setup(&t.target, &c, "4318", "/v1/traces",
                  "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
                  c.json ? "application/json" : "application/x-protobuf");
  t.target.items = LG_ITEMS_SPANS;
  size_t slots = c.send.inflight ? c.send.inflight : c.send.connections;
  t.bufs = sp_calloc(slots, sizeof(*t.bufs));
  for (size_t i = 0; t.bufs != NULL && i < slots; i++)
    if ((t.bufs[i] = sp_malloc(lg_span_pool_max_len(t.pool))) == NULL)
      rc = SP_ENOMEM;
  if (t.bufs == NULL || rc != 0) {
    fprintf(stderr, "spanprof-loadgen: out of memory\n");
    return 1;
  }
  if (!c.quiet)
    fprintf(stderr, "loadgen traces: %zu-span batches of ~%zu bytes (%s%s) to %s, %zu connections\n",
            lg_span_pool_spans(t.pool, 0), lg_span_pool_max_len(t.pool), c.json ? "json" : "proto",
            c.gzip ? "+gzip" : "",
            c.proto == LG_PROTO_HTTP ? t.target.url : t.target.grpc_target, c.send.connections);
  uv_loop_t loop;
  uv_loop_init(&loop);
  lg_engine_t eng = {.loop = &loop, .o = c.send, .fill = lg__traces_fill, .fill_ctx = &t,
                     .n_targets = 1, .seed = c.seed, .mode = "traces"};
  eng.targets[0] = &t.target;
  rc = lg_engine_run(&eng);
  if (rc != 0)
    fprintf(stderr, "spanprof-loadgen: cannot start: %s\n", sp_strerror(rc));
  else
    lg_engine_report(&eng, c.want_json_out, stdout);
  uv_loop_close(&loop);
  for (size_t i = 0; i < slots; i++)
    sp_free(t.bufs[i]);
  sp_free(t.bufs);
  sp_free(eng.jobs);
  lg_span_pool_destroy(t.pool);
  if (rc != 0)
    return 1;
  return eng.c[LG_ITEMS_SPANS].failed_items > 0 ? 3 : 0;
}
