/*
 * bench_traces_scan.c — cost of accepting an OTLP traces request: the wire
 * scan that validates it and counts its spans (sp_traces_from_proto), which
 * the otlp receiver runs on the loop thread for every protobuf request.
 *
 * Builds a 512-span request shaped like the load generator's (4-span traces,
 * 4–10 attributes per span, 10 resource attributes), then scans it over and
 * over. Prints nanoseconds per span and MB/s.
 *
 *   bench_traces_scan [iterations=2000] [spans=512]
 */
#include "pipeline/arena.h"
#include "pipeline/batch.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef Opentelemetry__Proto__Common__V1__KeyValue kv_t;
typedef Opentelemetry__Proto__Common__V1__AnyValue any_t;

static kv_t *kv(sp_arena_t *a, const char *k, const char *s, int64_t i) {
  kv_t *x = sp_arena_alloc(a, sizeof(*x));
  any_t *v = sp_arena_alloc(a, sizeof(*v));
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

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
  int iters = argc > 1 ? atoi(argv[1]) : 2000;
  size_t n = argc > 2 ? (size_t)atol(argv[2]) : 512;
  sp_arena_t *a = sp_arena_create(1 << 20);
  sp_otlp_traces_req_t req = OPENTELEMETRY__PROTO__COLLECTOR__TRACE__V1__EXPORT_TRACE_SERVICE_REQUEST__INIT;
  Opentelemetry__Proto__Trace__V1__ResourceSpans rs = OPENTELEMETRY__PROTO__TRACE__V1__RESOURCE_SPANS__INIT;
  Opentelemetry__Proto__Resource__V1__Resource res = OPENTELEMETRY__PROTO__RESOURCE__V1__RESOURCE__INIT;
  Opentelemetry__Proto__Trace__V1__ScopeSpans ss = OPENTELEMETRY__PROTO__TRACE__V1__SCOPE_SPANS__INIT;
  Opentelemetry__Proto__Common__V1__InstrumentationScope scope =
      OPENTELEMETRY__PROTO__COMMON__V1__INSTRUMENTATION_SCOPE__INIT;
  static const char *const rkeys[10] = {"service.name", "service.namespace", "service.version",
                                        "service.instance.id", "deployment.environment.name",
                                        "host.name", "process.pid", "telemetry.sdk.name",
                                        "telemetry.sdk.language", "telemetry.sdk.version"};
  kv_t *rattrs[10];
  for (int i = 0; i < 10; i++)
    rattrs[i] = i == 6 ? kv(a, rkeys[i], NULL, 4242) : kv(a, rkeys[i], "shop-api-production-1", 0);
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
      id[k] = (uint8_t)(rand() | 1);
    s->trace_id = (ProtobufCBinaryData){16, id};
    s->span_id = (ProtobufCBinaryData){8, id + 16};
    if (i % 4 != 0)
      s->parent_span_id = (ProtobufCBinaryData){8, ids + (i & ~(size_t)3) * 24 + 16};
    s->name = i % 4 == 0 ? "GET /api/v1/orders/{id}" : "SELECT shop.orders";
    s->kind = i % 4 == 0 ? 2 : 3;
    s->start_time_unix_nano = 1700000000000000000ull + i;
    s->end_time_unix_nano = s->start_time_unix_nano + 5000000;
    size_t na = i % 4 == 0 ? 10 : 5;
    kv_t **attrs = sp_arena_alloc(a, na * sizeof(*attrs));
    for (size_t k = 0; k < na; k++)
      attrs[k] = k % 3 == 2 ? kv(a, "http.response.status_code", NULL, 200)
                            : kv(a, "url.path", "/api/v1/orders/184467", 0);
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
  size_t len = protobuf_c_message_get_packed_size(&req.base);
  uint8_t *buf = malloc(len);
  protobuf_c_message_pack(&req.base, buf);

  char err[256];
  double t0 = now_s();
  size_t total = 0;
  for (int it = 0; it < iters; it++) {
    sp_traces_t *b = NULL;
    if (sp_traces_from_proto(buf, len, true, &b, err, sizeof(err)) != 0) {
      fprintf(stderr, "scan failed: %s\n", err);
      return 1;
    }
    total += b->span_count;
    sp_traces_unref(b);
  }
  double dt = now_s() - t0;
  printf("bench_traces_scan: %.1f ns/span, %.0f MB/s (%zu-byte requests of %zu spans, %d iterations)\n",
         dt / (double)total * 1e9, (double)len * iters / dt / 1e6, len, n, iters);
  free(buf);
  sp_arena_destroy(a);
  return 0;
}
