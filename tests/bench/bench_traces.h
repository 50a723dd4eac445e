/*
 * bench_traces.h — the OTLP traces request the benchmarks measure with: an
 * ExportTraceServiceRequest of @p n spans shaped like the load generator's
 * (a resource with 10 attributes; per group of four, an HTTP server span
 * with 10 attributes and three client/database children with 5, sharing its
 * trace), encoded with protobuf-c. Header-only (static), for bench programs.
 */
#ifndef SP_BENCH_TRACES_H
#define SP_BENCH_TRACES_H

#include "pipeline/arena.h"
#include "pipeline/batch.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef Opentelemetry__Proto__Common__V1__KeyValue bench_kv_t;
typedef Opentelemetry__Proto__Common__V1__AnyValue bench_any_t;

static bench_kv_t *bench_kv(sp_arena_t *a, const char *k, const char *s, int64_t i) {
  bench_kv_t *x = sp_arena_alloc(a, sizeof(*x));
  bench_any_t *v = sp_arena_alloc(a, sizeof(*v));
  opentelemetry__proto__common__v1__key_value__init(x);
  opentelemetry__proto__common__v1__any_value__init(v);
  x->key = (char *)k;
  if (s != NULL) {
    v->value_case = OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_STRING_VALUE;
    v->string_value = (char *)s;
  } else {
    v->value_case = OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_INT_VALUE;
    v->int_value = i;
  }
  x->value = v;
  return x;
}

/* xorshift64*: deterministic request content for a given seed. */
static uint64_t bench_rnd(uint64_t *s) {
  *s ^= *s >> 12;
  *s ^= *s << 25;
  *s ^= *s >> 27;
  return *s * 0x2545f4914f6cdd1dull;
}

/** The encoded request (malloc'd; the caller frees it) and its length in *@p len. */
static uint8_t *bench_traces_request(size_t n, uint64_t seed, size_t *len) {
  uint64_t rng = seed | 1;
  sp_arena_t *a = sp_arena_create(1 << 20);
  sp_otlp_traces_req_t req =
      OPENTELEMETRY__PROTO__COLLECTOR__TRACE__V1__EXPORT_TRACE_SERVICE_REQUEST__INIT;
  Opentelemetry__Proto__Trace__V1__ResourceSpans rs =
      OPENTELEMETRY__PROTO__TRACE__V1__RESOURCE_SPANS__INIT;
  Opentelemetry__Proto__Resource__V1__Resource res =
      OPENTELEMETRY__PROTO__RESOURCE__V1__RESOURCE__INIT;
  Opentelemetry__Proto__Trace__V1__ScopeSpans ss =
      OPENTELEMETRY__PROTO__TRACE__V1__SCOPE_SPANS__INIT;
  Opentelemetry__Proto__Common__V1__InstrumentationScope scope =
      OPENTELEMETRY__PROTO__COMMON__V1__INSTRUMENTATION_SCOPE__INIT;
  static const char *const rkeys[10] = {
      "service.name",         "service.namespace",           "service.version",
      "service.instance.id",  "deployment.environment.name", "host.name",
      "process.pid",          "telemetry.sdk.name",          "telemetry.sdk.language",
      "telemetry.sdk.version"};
  bench_kv_t *rattrs[10];
  for (int i = 0; i < 10; i++)
    rattrs[i] = i == 6 ? bench_kv(a, rkeys[i], NULL, 4242)
                       : bench_kv(a, rkeys[i], "shop-api-production-1", 0);
  res.attributes = rattrs;
  res.n_attributes = 10;
  scope.name = "go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp";
  scope.version = "0.57.0";
  Opentelemetry__Proto__Trace__V1__Span **spans = sp_arena_alloc(a, n * sizeof(*spans));
  uint8_t *ids = sp_arena_alloc(a, n * 24);
  for (size_t i = 0; i < n; i++) {
    Opentelemetry__Proto__Trace__V1__Span *s = sp_arena_alloc(a, sizeof(*s));
    opentelemetry__proto__trace__v1__span__init(s);
    uint8_t *id = ids + i * 24;
    for (int k = 0; k < 24; k++)
      id[k] = (uint8_t)(bench_rnd(&rng) | 1);
    if (i % 4 != 0) memcpy(id, ids + (i & ~(size_t)3) * 24, 16); /* same trace as its root */
    s->trace_id = (ProtobufCBinaryData){16, id};
    s->span_id = (ProtobufCBinaryData){8, id + 16};
    if (i % 4 != 0) s->parent_span_id = (ProtobufCBinaryData){8, ids + (i & ~(size_t)3) * 24 + 16};
    s->name = i % 4 == 0 ? "GET /api/v1/orders/{id}" : "SELECT shop.orders";
    s->kind = i % 4 == 0 ? 2 : 3;
    s->start_time_unix_nano = 1700000000000000000ull + i * 1000003 + bench_rnd(&rng) % 1000;
    s->end_time_unix_nano = s->start_time_unix_nano + 5000000 + bench_rnd(&rng) % 100000;
    size_t na = i % 4 == 0 ? 10 : 5;
    bench_kv_t **attrs = sp_arena_alloc(a, na * sizeof(*attrs));
    for (size_t k = 0; k < na; k++)
      attrs[k] = k % 3 == 2 ? bench_kv(a, "http.response.status_code", NULL, 200)
                            : bench_kv(a, "url.path", "/api/v1/orders/184467", 0);
    s->attributes = attrs;
    s->n_attributes = na;
    spans[i] = s;
  }
  ss.scope = &scope;
  ss.spans = spans;
  ss.n_spans = n;
  Opentelemetry__Proto__Trace__V1__ScopeSpans *ssp = &ss;
  rs.resource = &res;
  rs.scope_spans = &ssp;
  rs.n_scope_spans = 1;
  Opentelemetry__Proto__Trace__V1__ResourceSpans *rsp = &rs;
  req.resource_spans = &rsp;
  req.n_resource_spans = 1;
  *len = protobuf_c_message_get_packed_size(&req.base);
  uint8_t *buf = malloc(*len);
  protobuf_c_message_pack(&req.base, buf);
  sp_arena_destroy(a);
  return buf;
}

#endif
