/*
 * bench_otlpwire — what enriching a held traces batch costs the span–profile
 * join, decoded versus on the wire (pipeline/otlpwire.h), on the request the
 * load generator sends per profile: 32 spans in groups of four (an HTTP
 * server span with 10 attributes, the local root, and three children with
 * 5), one resource with 10 attributes (tests/bench/bench_traces.h).
 *
 * Decoded (what the join did): protobuf-c unpack into an arena,
 *   sp__spj_write_attrs on the chosen spans, get_packed_size + pack (what
 *   the exporter then did, sp_traces_encoded).
 * Wire (what it does now): sp_otlpwire_spans over the bytes, for each
 *   chosen span sp_otlpwire_span_keys (keys it already has are skipped) and
 *   the attributes queued, then sp_otlpwire_splice_finish into a new buffer.
 * Two cases: "roots" — pyroscope.profile.id on the 8 local roots (the
 * default profile_id_attribute: local_roots, as scenario 4 runs);
 * "all+cpu" — profile id, sample count, CPU and wall time on all 32
 * (profile_id_attribute: all with span_cpu_attributes).
 * Times are CPU time of this thread per request; the ratio is decoded over
 * wire, both measured in the same run.
 *
 *   bench_otlpwire [iterations]   (default 20000)
 */
#include "bench_traces.h"

#include "pipeline/alloc.h"
#include "pipeline/arena.h"
#include "pipeline/error.h"
#include "pipeline/hex.h"
#include "pipeline/otlpwire.h"
#include "processors/spanprofile/spanprofile_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define N_SPANS 32

static double now_cpu(void) {
  struct timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static const char *const g_keys[4] = {"pyroscope.profile.id", "profile.sample.count",
                                      "profile.cpu.time_ns", "profile.wall.time_ns"};

typedef struct bctx_s {
  const sp_spj_attrs_t *attrs; /* per span; a zeroed entry gets nothing */
  sp_otlpwire_splice_t sp;
} bctx_t;

/* The join's wire path (spanprofile_join.c sp__enrich_wire_span), for one span. */
static int queue_span(void *ctx, size_t i, const uint8_t *span, size_t len) {
  bctx_t *c = ctx;
  if (i >= N_SPANS) return 1;
  const sp_spj_attrs_t *a = &c->attrs[i];
  if (!a->profile_id && !a->cpu) return 0;
  uint32_t have = 0;
  int rc = sp_otlpwire_span_keys(span, len, g_keys, 4, &have);
  if (rc != 0) return rc;
  if (a->profile_id && !(have & 1u)) {
    uint8_t raw[8];
    char hex[17];
    for (int b = 0; b < 8; b++)
      raw[b] = (uint8_t)(a->span_id >> (56 - 8 * b));
    sp_hex_encode(raw, 8, hex, sizeof(hex));
    if ((rc = sp_otlpwire_splice_str(&c->sp, i, g_keys[0], hex, 16)) != 0) return rc;
  }
  if (a->cpu) {
    const uint64_t v[3] = {a->count, a->cpu_ns, a->wall_ns};
    for (int k = 0; k < 3; k++) {
      if ((k > 0 && v[k] == 0) || (have & (1u << (k + 1)))) continue;
      if ((rc = sp_otlpwire_splice_int(&c->sp, i, g_keys[k + 1], (int64_t)v[k])) != 0) return rc;
    }
  }
  return 0;
}

static size_t wire_once(const uint8_t *req, size_t len, const sp_spj_attrs_t *attrs) {
  bctx_t c = {.attrs = attrs};
  sp_otlpwire_splice_init(&c.sp);
  uint8_t *out = NULL;
  size_t out_len = 0;
  if (sp_otlpwire_spans(req, len, queue_span, &c) != 0 ||
      sp_otlpwire_splice_finish(&c.sp, req, len, &out, &out_len) != 0) {
    fprintf(stderr, "bench_otlpwire: splice failed\n");
    exit(1);
  }
  sp_otlpwire_splice_free(&c.sp);
  sp_free(out);
  return out_len;
}

static size_t decoded_once(const uint8_t *req, size_t len, const sp_spj_attrs_t *attrs) {
  sp_arena_t *a = sp_arena_create(0);
  sp_otlp_traces_req_t *r =
      opentelemetry__proto__collector__trace__v1__export_trace_service_request__unpack(
          sp_arena_pbc(a), len, req);
  if (r == NULL) {
    fprintf(stderr, "bench_otlpwire: unpack failed\n");
    exit(1);
  }
  size_t k = 0;
  for (size_t i = 0; i < r->n_resource_spans; i++)
    for (size_t j = 0; j < r->resource_spans[i]->n_scope_spans; j++) {
      sp_otlp_scope_spans_t *ss = r->resource_spans[i]->scope_spans[j];
      for (size_t s = 0; s < ss->n_spans; s++, k++)
        if ((attrs[k].profile_id || attrs[k].cpu) &&
            sp__spj_write_attrs(a, ss->spans[s], &attrs[k]) != 0) {
          fprintf(stderr, "bench_otlpwire: write_attrs failed\n");
          exit(1);
        }
    }
  size_t n = protobuf_c_message_get_packed_size(&r->base);
  uint8_t *out = sp_malloc(n);
  size_t out_len = protobuf_c_message_pack(&r->base, out);
  sp_free(out);
  sp_arena_destroy(a);
  return out_len;
}

static void run_case(const char *name, const uint8_t *req, size_t len, const sp_spj_attrs_t *attrs,
                     int iters) {
  size_t lw = wire_once(req, len, attrs), ld = decoded_once(req, len, attrs);
  if (lw != ld) { /* same content; protobuf-c's canonical form has the same size here */
    fprintf(stderr, "bench_otlpwire: %s: wire %zu bytes, decoded %zu\n", name, lw, ld);
    exit(1);
  }
  double t0 = now_cpu();
  for (int i = 0; i < iters; i++)
    decoded_once(req, len, attrs);
  double t1 = now_cpu();
  for (int i = 0; i < iters; i++)
    wire_once(req, len, attrs);
  double t2 = now_cpu();
  double dec_us = (t1 - t0) / iters * 1e6, wire_us = (t2 - t1) / iters * 1e6;
  printf("bench_otlpwire %-8s: decoded (unpack + write_attrs + pack) %6.2f us, wire (walk + keys + "
         "splice) %5.2f us per %zu-byte request of %d spans; %.1fx (%d iterations)\n",
         name, dec_us, wire_us, len, N_SPANS, dec_us / wire_us, iters);
}

int main(int argc, char **argv) {
  int iters = argc > 1 ? atoi(argv[1]) : 20000;
  if (iters <= 0) iters = 1;
  size_t len;
  uint8_t *req = bench_traces_request(N_SPANS, 42, &len);
  sp_spj_attrs_t roots[N_SPANS], all[N_SPANS];
  memset(roots, 0, sizeof(roots));
  memset(all, 0, sizeof(all));
  for (size_t i = 0; i < N_SPANS; i++) {
    uint64_t id = 0x1000 + i;
    if (i % 4 == 0) roots[i] = (sp_spj_attrs_t){.profile_id = true, .span_id = id};
    all[i] = (sp_spj_attrs_t){.profile_id = true,
                              .cpu = true,
                              .span_id = id,
                              .count = 40 + i,
                              .cpu_ns = 400000000 + i,
                              .wall_ns = 500000000 + i};
  }
  run_case("roots", req, len, roots, iters);
  run_case("all+cpu", req, len, all, iters);
  free(req);
  return 0;
}
