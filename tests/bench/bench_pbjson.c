/*
 * bench_pbjson — OTLP/JSON decode and encode speed, against protobuf-c's own
 * unpack/pack of the same request measured in the same run (the baseline:
 * what binary OTLP costs), so the numbers survive a noisy machine.
 *
 *   bench_pbjson [spans]   (default 20000)
 */
#include "pipeline/arena.h"
#include "pipeline/buf.h"
#include "pipeline/pbjson.h"

#include "opentelemetry/proto/collector/trace/v1/trace_service.pb-c.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef Opentelemetry__Proto__Collector__Trace__V1__ExportTraceServiceRequest Req;

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

/* A request of n realistic spans (10 attributes each) in one resource/scope. */
static Req *build(sp_arena_t *a, size_t n) {
  ProtobufCAllocator *al = sp_arena_pbc(a);
  (void)al;
  Req *req = sp_arena_calloc(a, sizeof(*req));
  opentelemetry__proto__collector__trace__v1__export_trace_service_request__init(req);
  Opentelemetry__Proto__Trace__V1__ResourceSpans *rs = sp_arena_calloc(a, sizeof(*rs));
  opentelemetry__proto__trace__v1__resource_spans__init(rs);
  Opentelemetry__Proto__Trace__V1__ScopeSpans *ss = sp_arena_calloc(a, sizeof(*ss));
  opentelemetry__proto__trace__v1__scope_spans__init(ss);
  req->n_resource_spans = 1;
  req->resource_spans = sp_arena_calloc(a, sizeof(void *));
  req->resource_spans[0] = rs;
  rs->n_scope_spans = 1;
  rs->scope_spans = sp_arena_calloc(a, sizeof(void *));
  rs->scope_spans[0] = ss;
  ss->n_spans = n;
  ss->spans = sp_arena_calloc(a, n * sizeof(void *));
  for (size_t i = 0; i < n; i++) {
    Opentelemetry__Proto__Trace__V1__Span *s = sp_arena_calloc(a, sizeof(*s));
    opentelemetry__proto__trace__v1__span__init(s);
    uint8_t *tid = sp_arena_alloc(a, 16), *sid = sp_arena_alloc(a, 8);
    for (int k = 0; k < 16; k++)
      tid[k] = (uint8_t)(i * 31 + (size_t)k * 7 + 1);
    for (int k = 0; k < 8; k++)
      sid[k] = (uint8_t)(i * 17 + (size_t)k * 3 + 1);
    s->trace_id = (ProtobufCBinaryData){16, tid};
    s->span_id = (ProtobufCBinaryData){8, sid};
    s->name = "GET /api/v1/items/{id}";
    s->kind = 2;
    s->start_time_unix_nano = 1700000000000000000ull + i * 1000;
    s->end_time_unix_nano = s->start_time_unix_nano + 250000;
    s->n_attributes = 10;
    s->attributes = sp_arena_calloc(a, 10 * sizeof(void *));
    for (int k = 0; k < 10; k++) {
      Opentelemetry__Proto__Common__V1__KeyValue *kv = sp_arena_calloc(a, sizeof(*kv));
      opentelemetry__proto__common__v1__key_value__init(kv);
      Opentelemetry__Proto__Common__V1__AnyValue *v = sp_arena_calloc(a, sizeof(*v));
      opentelemetry__proto__common__v1__any_value__init(v);
      static const char *keys[] = {"http.method", "http.route", "http.status_code", "net.peer.ip",
                                   "user_agent.original", "http.scheme", "server.address",
                                   "server.port", "thread.id", "component"};
      kv->key = (char *)keys[k];
      if (k == 2 || k == 7 || k == 8) {
        v->value_case = OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_INT_VALUE;
        v->int_value = 200 + k;
      } else {
        v->value_case = OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_STRING_VALUE;
        v->string_value = "some-typical-attribute-value";
      }
      kv->value = v;
      s->attributes[k] = kv;
    }
    ss->spans[i] = s;
  }
  return req;
}

int main(int argc, char **argv) {
  size_t n = argc > 1 ? strtoul(argv[1], NULL, 10) : 20000;
  sp_arena_t *a = sp_arena_create(0);
  Req *req = build(a, n);
  size_t plen = protobuf_c_message_get_packed_size(&req->base);
  uint8_t *pb = malloc(plen);
  protobuf_c_message_pack(&req->base, pb);
  sp_buf_t json;
  sp_buf_init(&json, 0);
  sp_pbjson_encode(&req->base, SP_PBJSON_OTLP, &json);

  double best[4] = {1e9, 1e9, 1e9, 1e9};
  for (int run = 0; run < 5; run++) {
    double t0 = now();
    sp_arena_t *x = sp_arena_create(1 << 20);
    Req *d = opentelemetry__proto__collector__trace__v1__export_trace_service_request__unpack(
        sp_arena_pbc(x), plen, pb);
    double t1 = now();
    uint8_t *out = malloc(plen);
    protobuf_c_message_pack(&d->base, out);
    double t2 = now();
    sp_arena_t *y = sp_arena_create(1 << 20);
    ProtobufCMessage *m = NULL;
    char err[256];
    sp_pbjson_decode(&opentelemetry__proto__collector__trace__v1__export_trace_service_request__descriptor,
                     (const char *)json.data, json.len, SP_PBJSON_OTLP, sp_arena_pbc(y), &m, err,
                     sizeof(err));
    double t3 = now();
    sp_buf_t enc;
    sp_buf_init(&enc, 0);
    sp_pbjson_encode(m, SP_PBJSON_OTLP, &enc);
    double t4 = now();
    double d4[4] = {t1 - t0, t2 - t1, t3 - t2, t4 - t3};
    for (int k = 0; k < 4; k++)
      if (d4[k] < best[k])
        best[k] = d4[k];
    sp_buf_free(&enc);
    free(out);
    sp_arena_destroy(x);
    sp_arena_destroy(y);
  }
  printf("| operation (%zu spans) | spans/s | ratio to protobuf-c unpack |\n|---|---|---|\n", n);
  const char *names[] = {"protobuf-c unpack (baseline)", "protobuf-c pack", "OTLP/JSON decode",
                         "OTLP/JSON encode"};
  for (int k = 0; k < 4; k++)
    printf("| %s | %.0f | %.2f |\n", names[k], (double)n / best[k], best[0] / best[k]);
  printf("\nprotobuf %zu bytes, JSON %zu bytes (best of 5 runs)\n", plen, json.len);
  sp_buf_free(&json);
  free(pb);
  sp_arena_destroy(a);
  return 0;
}
