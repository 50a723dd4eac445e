/*
 * test_core.c — the data model and the graph: wire-scan validation of
 * traces requests, copy-on-write batches, fan-out, the lossless batch
 * processor, and a whole graph built from YAML (one instance per ID shared by
 * pipelines, ordered start and shutdown, no handle left open).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "pipeline/alloc.h"
#include "pipeline/batch.h"
#include "pipeline/pprofwire.h"
#include "pipeline/component.h"
#include "pipeline/config.h"
#include "pipeline/consumer.h"
#include "pipeline/error.h"
#include "pipeline/graph.h"
#include "pipeline/log.h"
#include "pipeline/telemetry.h"
#include "support/loop_util.h"

#include <arpa/inet.h>
#include <malloc.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

typedef Opentelemetry__Proto__Trace__V1__Span Span;

/* ---- building requests with protobuf-c ------------------------------------------ */

/* Encodes a request with one resource and @p n spans; span k gets span_id k+1 unless
 * @p id_len overrides the length of span 1's ID, or @p zero_span makes one all-zero. */
static uint8_t *make_request(size_t n, size_t id_len, int zero_span, size_t *len) {
  sp_arena_t *a = sp_arena_create(0);
  sp_otlp_traces_req_t req = OPENTELEMETRY__PROTO__COLLECTOR__TRACE__V1__EXPORT_TRACE_SERVICE_REQUEST__INIT;
  Opentelemetry__Proto__Trace__V1__ResourceSpans rs = OPENTELEMETRY__PROTO__TRACE__V1__RESOURCE_SPANS__INIT;
  Opentelemetry__Proto__Trace__V1__ScopeSpans ss = OPENTELEMETRY__PROTO__TRACE__V1__SCOPE_SPANS__INIT;
  sp_otlp_resource_spans_t *rsp = &rs;
  sp_otlp_scope_spans_t *ssp = &ss;
  req.n_resource_spans = 1;
  req.resource_spans = &rsp;
  rs.n_scope_spans = 1;
  rs.scope_spans = &ssp;
  ss.n_spans = n;
  ss.spans = sp_arena_calloc(a, n * sizeof(Span *));
  for (size_t i = 0; i < n; i++) {
    Span *s = sp_arena_calloc(a, sizeof(Span));
    opentelemetry__proto__trace__v1__span__init(s);
    uint8_t *tid = sp_arena_calloc(a, 16), *sid = sp_arena_calloc(a, 8);
    tid[15] = 0x42;
    sid[7] = (uint8_t)(i + 1);
    if ((int)i == zero_span)
      sid[7] = 0;
    s->trace_id = (ProtobufCBinaryData){16, tid};
    s->span_id = (ProtobufCBinaryData){i == 1 && id_len ? id_len : 8, sid};
    s->name = "op";
    ss.spans[i] = s;
  }
  *len = protobuf_c_message_get_packed_size(&req.base);
  uint8_t *buf = sp_malloc(*len + 1);
  protobuf_c_message_pack(&req.base, buf);
  sp_arena_destroy(a);
  return buf;
}

/* sp_arena_adopt: the block is freed with the arena (ASan would report a leak
 * otherwise), counted, and refused past the limit (then still the caller's). */
static void test_arena_adopt(void **state) {
  (void)state;
  sp_arena_t *a = sp_arena_create(0);
  assert_non_null(a);
  size_t before = sp_arena_bytes(a);
  uint8_t *blk = sp_malloc(100000);
  assert_non_null(blk);
  memset(blk, 7, 100000);
  assert_true(sp_arena_adopt(a, blk, 100000));
  assert_true(sp_arena_bytes(a) >= before + 100000);
  assert_non_null(sp_arena_alloc(a, 64)); /* the arena still allocates after it */
  sp_arena_set_limit(a, sp_arena_bytes(a) + 1000);
  uint8_t *big = sp_malloc(5000);
  assert_non_null(big);
  assert_false(sp_arena_adopt(a, big, 5000));
  assert_true(sp_arena_limited(a));
  sp_free(big); /* refused: still ours */
  sp_arena_destroy(a);
  /* Out of memory for the arena's bookkeeping: refused, the block stays the caller's. */
  a = sp_arena_create(16);
  assert_non_null(a);
  assert_non_null(sp_arena_alloc(a, 16)); /* the first chunk is full */
  blk = sp_malloc(64);
  assert_non_null(blk);
  sp_alloc_set_fail_after(0);
  bool taken = sp_arena_adopt(a, blk, 64);
  sp_alloc_set_fail_after(-1);
  assert_false(taken);
  sp_free(blk);
  sp_arena_destroy(a);
}

static void test_traces_scan(void **state) {
  (void)state;
  size_t len;
  char err[256];
  sp_traces_t *b = NULL;
  uint8_t *buf = make_request(5, 0, -1, &len);
  assert_int_equal(sp_traces_from_proto(buf, len, true, &b, err, sizeof(err)), 0);
  assert_int_equal(b->span_count, 5);
  assert_int_equal(b->invalid_spans, 0);
  /* Unchanged: exported as the very bytes received, without decoding. */
  const uint8_t *out;
  size_t out_len;
  assert_int_equal(sp_traces_encoded(b, &out, &out_len), 0);
  assert_ptr_equal(out, b->raw);
  assert_null(b->req);
  assert_int_equal(out_len, len);
  assert_memory_equal(out, buf, len);
  sp_traces_unref(b);

  /* Truncated: the scan names the place. */
  assert_int_equal(sp_traces_from_proto(buf, len - 3, true, &b, err, sizeof(err)), SP_EPROTO);
  assert_non_null(strstr(err, "resource_spans[0]"));
  assert_non_null(strstr(err, "truncated"));
  sp_free(buf);

  /* A 7-byte span_id is invalid data. */
  buf = make_request(3, 7, -1, &len);
  assert_int_equal(sp_traces_from_proto(buf, len, false, &b, err, sizeof(err)), SP_EPROTO);
  assert_string_equal(err,
                      "resource_spans[0].scope_spans[0].spans[1].span_id: span_id must be 8 bytes, got 7");

  /* An all-zero span_id is counted and dropped (partial success). */
  buf = make_request(4, 0, 2, &len);
  assert_int_equal(sp_traces_from_proto(buf, len, false, &b, err, sizeof(err)), 0);
  assert_int_equal(b->invalid_spans, 1);
  size_t dropped = 0;
  assert_int_equal(sp_traces_drop_invalid(&b, &dropped), 0);
  assert_int_equal(dropped, 1);
  assert_int_equal(b->span_count, 3);
  assert_int_equal(sp_traces_encoded(b, &out, &out_len), 0);
  sp_traces_t *again = NULL;
  uint8_t *copy = sp_malloc(out_len);
  memcpy(copy, out, out_len);
  assert_int_equal(sp_traces_from_proto(copy, out_len, false, &again, err, sizeof(err)), 0);
  assert_int_equal(again->span_count, 3);
  assert_int_equal(again->invalid_spans, 0);
  sp_traces_unref(again);
  sp_traces_unref(b);

  /* An empty request is valid and empty. */
  assert_int_equal(sp_traces_from_proto((uint8_t *)"", 0, true, &b, err, sizeof(err)), 0);
  assert_int_equal(b->span_count, 0);
  sp_traces_unref(b);
}

static void test_traces_copy_on_write(void **state) {
  (void)state;
  size_t len;
  char err[256];
  sp_traces_t *b = NULL;
  uint8_t *buf = make_request(2, 0, -1, &len);
  assert_int_equal(sp_traces_from_proto(buf, len, false, &b, err, sizeof(err)), 0);
  sp_traces_t *shared = sp_traces_ref(b);
  sp_traces_t *mine = b;
  assert_int_equal(sp_traces_writable(&mine), 0);
  assert_ptr_not_equal(mine, shared); /* shared → copied */
  assert_int_equal(shared->refcnt, 1);
  mine->req->resource_spans[0]->scope_spans[0]->spans[0]->name = "renamed";
  const sp_otlp_traces_req_t *orig = sp_traces_request(shared);
  assert_string_equal(orig->resource_spans[0]->scope_spans[0]->spans[0]->name, "op");
  const uint8_t *out;
  size_t out_len;
  assert_int_equal(sp_traces_encoded(mine, &out, &out_len), 0);
  assert_int_equal(out_len, len + strlen("renamed") - strlen("op"));
  /* A sole owner is changed in place. */
  sp_traces_t *solo = shared;
  assert_int_equal(sp_traces_writable(&solo), 0);
  assert_ptr_equal(solo, shared);
  sp_traces_unref(mine);
  sp_traces_unref(solo);
}

/* ---- consumers -------------------------------------------------------------------- */

typedef struct rec_s {
  sp_consumer_t base;
  int rc;           /* what to answer */
  size_t batches;
  size_t spans;
  sp_traces_t *kept[16];
  size_t n_kept;
} rec_t;

static int rec_traces(sp_consumer_t *c, sp_traces_t *b) {
  rec_t *r = (rec_t *)c;
  if (r->rc == 0) {
    r->batches++;
    r->spans += b->span_count;
    if (r->n_kept < 16) {
      r->kept[r->n_kept++] = b;
      return 0;
    }
  }
  sp_traces_unref(b);
  return r->rc;
}

static int rec_profiles(sp_consumer_t *c, sp_profiles_t *b) {
  rec_t *r = (rec_t *)c;
  if (r->rc == 0)
    r->batches++;
  sp_profiles_unref(b);
  return r->rc;
}

static void rec_init(rec_t *r) {
  memset(r, 0, sizeof(*r));
  r->base.consume_traces = rec_traces;
  r->base.consume_profiles = rec_profiles;
}

static void rec_free(rec_t *r) {
  for (size_t i = 0; i < r->n_kept; i++)
    sp_traces_unref(r->kept[i]);
  r->n_kept = 0;
}

static sp_traces_t *traces(size_t n) {
  size_t len;
  char err[128];
  sp_traces_t *b = NULL;
  uint8_t *buf = make_request(n, 0, -1, &len);
  assert_int_equal(sp_traces_from_proto(buf, len, false, &b, err, sizeof(err)), 0);
  return b;
}

static void test_fanout(void **state) {
  (void)state;
  rec_t a, b, c;
  rec_init(&a);
  rec_init(&b);
  rec_init(&c);
  sp_consumer_t *list[] = {&a.base, &b.base, &c.base};
  sp_consumer_t *fan = sp_fanout_create(list, 3);
  sp_traces_t *t = traces(2);
  assert_int_equal(sp_consume_traces(fan, t), 0);
  /* Same batch, shared by reference by all three. */
  assert_ptr_equal(a.kept[0], t);
  assert_ptr_equal(b.kept[0], t);
  assert_int_equal(t->refcnt, 3);
  rec_free(&a);
  rec_free(&b);
  rec_free(&c);
  /* A retryable refusal from one, a permanent error from another: permanent wins. */
  b.rc = SP_EAGAIN;
  assert_int_equal(sp_consume_traces(fan, traces(1)), SP_EAGAIN);
  c.rc = SP_EPROTO;
  assert_int_equal(sp_consume_traces(fan, traces(1)), SP_EPROTO);
  rec_free(&a);
  rec_free(&b);
  rec_free(&c);
  sp_fanout_destroy(fan);
  /* A single consumer is used directly. */
  assert_ptr_equal(sp_fanout_create(list, 1), &a.base);
}

/* ---- the batch processor ---------------------------------------------------------- */

extern const sp_component_def_t sp_processor_batch;

typedef struct bp_s {
  uv_loop_t loop;
  sp_host_t host;
  sp_config_doc_t *doc;
  void *cfg;
  sp_component_t *comp;
  sp_consumer_t *input;
  rec_t next;
} bp_t;

/* Starts a batch processor from @p yaml (t zeroed first) whose @p signal output goes to @p next. */
static void bp_start(bp_t *t, const char *yaml, unsigned signal, sp_consumer_t *next) {
  uv_loop_init(&t->loop);
  t->host.loop = &t->loop;
  sp_errors_t errs = {0};
  assert_int_equal(sp_config_load_string("t", yaml, strlen(yaml), &t->doc, &errs), 0);
  t->cfg = sp_calloc(1, sp_processor_batch.config_size);
  assert_int_equal(sp_cfg_decode(sp_processor_batch.schema, t->doc->root, "batch", NULL, t->cfg, &errs), 0);
  sp_create_settings_t set = {.host = &t->host, .id = "batch"};
  assert_int_equal(sp_processor_batch.create(&set, t->cfg, &t->comp), 0);
  t->comp->def = &sp_processor_batch;
  t->comp->host = &t->host;
  t->comp->id = "batch";
  assert_int_equal(sp_processor_batch.attach(t->comp, signal, next, &t->input), 0);
  assert_int_equal(sp_processor_batch.start(t->comp), 0);
}

/* A traces batch processor whose output t->next records. */
static void bp_make(bp_t *t, const char *yaml) {
  memset(t, 0, sizeof(*t));
  rec_init(&t->next);
  bp_start(t, yaml, SP_SIGNAL_TRACES, &t->next.base);
}

static void on_done(void *arg) { (*(int *)arg)++; }
static int flag_set(void *arg) { return *(int *)arg != 0; }
static int has_batches(void *arg) { return ((rec_t *)arg)->batches > 0; }

static void bp_stop(bp_t *t, uint64_t drain_ms) {
  int done = 0;
  t->host.drain_deadline = uv_now(&t->loop) + drain_ms;
  sp_processor_batch.shutdown(t->comp, on_done, &done);
  assert_int_equal(sp_test_run_until(&t->loop, flag_set, &done, 5000), 0);
  sp_processor_batch.destroy(t->comp);
  rec_free(&t->next);
  sp_cfg_free(sp_processor_batch.schema, t->cfg);
  sp_free(t->cfg);
  sp_config_doc_free(t->doc);
  assert_int_equal(sp_test_loop_finish(&t->loop, 1000), 0);
}

static void test_batch_processor_size_and_time(void **state) {
  (void)state;
  bp_t t;
  bp_make(&t, "send_batch_size: 5\ntimeout: 50ms\n");
  assert_int_equal(sp_consume_traces(t.input, traces(2)), 0);
  assert_int_equal(sp_consume_traces(t.input, traces(2)), 0);
  assert_int_equal(t.next.batches, 0);
  assert_int_equal(sp_consume_traces(t.input, traces(2)), 0);
  /* 6 >= 5: one merged batch, still a valid request holding all 6 spans. */
  assert_int_equal(t.next.batches, 1);
  assert_int_equal(t.next.spans, 6);
  const sp_otlp_traces_req_t *req = sp_traces_request(t.next.kept[0]);
  assert_non_null(req);
  assert_int_equal(req->n_resource_spans, 3);
  assert_int_equal(sp_traces_count_spans(req), 6);
  /* Below the size, the timeout sends it. */
  assert_int_equal(sp_consume_traces(t.input, traces(1)), 0);
  t.next.batches = 0;
  assert_int_equal(sp_test_run_until(&t.loop, has_batches, &t.next, 2000), 0);
  assert_int_equal(t.next.spans, 7);
  bp_stop(&t, 100);
}

static void test_batch_processor_never_loses(void **state) {
  (void)state;
  bp_t t;
  bp_make(&t, "send_batch_size: 2\ntimeout: 20ms\n");
  t.next.rc = SP_EAGAIN; /* the next stage is full */
  assert_int_equal(sp_consume_traces(t.input, traces(2)), 0); /* accepted, then refused downstream */
  /* While the refused batch waits, new data is refused retryably, not dropped. */
  assert_int_equal(sp_consume_traces(t.input, traces(1)), SP_EAGAIN);
  /* The next stage frees up: the kept batch is delivered by the retry timer. */
  t.next.rc = 0;
  assert_int_equal(sp_test_run_until(&t.loop, has_batches, &t.next, 2000), 0);
  assert_int_equal(t.next.spans, 2);
  assert_int_equal(sp_consume_traces(t.input, traces(1)), 0);
  /* Shutdown flushes what is held. */
  bp_stop(&t, 500);
  assert_int_equal(t.next.spans, 3);
}

static void test_batch_processor_tenants_apart(void **state) {
  (void)state;
  bp_t t;
  bp_make(&t, "send_batch_size: 100\ntimeout: 1h\n");
  sp_traces_t *a = traces(1), *b = traces(1);
  a->meta.tenant = "team-a";
  b->meta.tenant = "team-b";
  assert_int_equal(sp_consume_traces(t.input, a), 0);
  assert_int_equal(sp_consume_traces(t.input, b), 0); /* flushes team-a's batch first */
  assert_int_equal(t.next.batches, 1);
  assert_string_equal(t.next.kept[0]->meta.tenant, "team-a");
  bp_stop(&t, 100);
  assert_int_equal(t.next.batches, 2); /* team-b's went out at shutdown */
}

/*
 * What a flushed traces batch has allocated beyond its bytes: a heap block's
 * rounding (tens of bytes) or a mapped block's page. Doubling left up to the
 * whole content again.
 */
static size_t slack(const sp_traces_t *t) {
  size_t usable = malloc_usable_size(t->raw);
  assert_true(usable >= t->raw_len);
  return usable - t->raw_len;
}
#define MAX_SLACK 4200 /* a page, plus a chunk header */

/* A flushed batch holds a buffer cut to its content, whether it went out by size or by time. */
static void test_batch_processor_fits_buffers(void **state) {
  (void)state;
  bp_t t;
  bp_make(&t, "send_batch_size: 300\ntimeout: 30ms\n");
  sp_traces_t *one = traces(100);
  size_t req_len = one->raw_len;
  sp_traces_unref(one);
  /* 3 requests: 3x the request in a buffer that doubled from 256 B. */
  for (int i = 0; i < 3; i++)
    assert_int_equal(sp_consume_traces(t.input, traces(100)), 0);
  assert_int_equal(t.next.batches, 1);
  sp_traces_t *full = t.next.kept[0];
  assert_int_equal(full->raw_len, 3 * req_len);
  assert_true(slack(full) < MAX_SLACK);
  assert_int_equal(sp_traces_count_spans(sp_traces_request(full)), 300);
  /* One request alone: the accumulator reserved room for a full batch
   * (estimated from the last one), and the timeout flush gives it back. */
  t.next.batches = 0;
  assert_int_equal(sp_consume_traces(t.input, traces(100)), 0);
  assert_int_equal(sp_test_run_until(&t.loop, has_batches, &t.next, 2000), 0);
  assert_int_equal(t.next.n_kept, 2);
  sp_traces_t *alone = t.next.kept[1];
  assert_int_equal(alone->raw_len, req_len);
  assert_true(slack(alone) < MAX_SLACK);
  /* A larger batch than the estimate still grows and is cut to fit. */
  t.next.batches = 0;
  assert_int_equal(sp_consume_traces(t.input, traces(250)), 0);
  assert_int_equal(sp_consume_traces(t.input, traces(250)), 0);
  assert_int_equal(t.next.batches, 1);
  sp_traces_t *big = t.next.kept[2];
  assert_int_equal(sp_traces_count_spans(sp_traces_request(big)), 500);
  assert_true(slack(big) < MAX_SLACK);
  assert_int_equal(t.next.spans, 900);
  bp_stop(&t, 100);
}

/* ---- a whole graph ---------------------------------------------------------------- */

static const char *graph_yaml =
    "receivers:\n"
    "  otlp:\n"
    "    protocols:\n"
    "      http:\n"
    "        endpoint: 127.0.0.1:0\n"
    "processors:\n"
    "  batch:\n"
    "exporters:\n"
    "  debug:\n"
    "  debug/unused:\n"
    "service:\n"
    "  telemetry:\n"
    "    metrics:\n"
    "      level: none\n"
    "  pipelines:\n"
    "    traces:\n"
    "      receivers: [otlp]\n"
    "      processors: [batch]\n"
    "      exporters: [debug]\n"
    "    traces/2:\n"
    "      receivers: [otlp]\n"
    "      processors: [batch]\n"
    "      exporters: [debug]\n"
    "    profiles:\n"
    "      receivers: [otlp]\n"
    "      processors: [batch]\n"
    "      exporters: [debug]\n";

static void test_graph(void **state) {
  (void)state;
  uv_loop_t loop;
  uv_loop_init(&loop);
  sp_telemetry_t *tel = sp_telemetry_create();
  sp_host_t host = {.loop = &loop, .telemetry = tel};
  sp_errors_t errs = {0};
  sp_config_doc_t *doc = NULL;
  assert_int_equal(sp_config_load_string("g.yaml", graph_yaml, strlen(graph_yaml), &doc, &errs), 0);
  sp_graph_t *g = NULL;
  int rc = sp_graph_build(doc, &host, true, &g, &errs);
  sp_errors_print(&errs, 2);
  assert_int_equal(rc, 0);
  assert_int_equal(sp_graph_pipeline_count(g), 3);
  /* One instance per ID however many pipelines list it; unused ones are not created. */
  assert_non_null(sp_graph_component(g, SP_KIND_PROCESSOR, "batch"));
  assert_non_null(sp_graph_component(g, SP_KIND_EXPORTER, "debug"));
  assert_null(sp_graph_component(g, SP_KIND_EXPORTER, "debug/unused"));
  assert_int_equal(sp_graph_settings(g)->shutdown_timeout_ms, 10000);
  assert_int_equal(sp_graph_start(g), 0);
  int done = 0;
  sp_graph_shutdown(g, 1000, on_done, &done);
  assert_int_equal(done, 0);
  assert_int_equal(sp_test_run_until(&loop, flag_set, &done, 5000), 0);
  sp_graph_destroy(g);
  sp_config_doc_free(doc);
  sp_errors_free(&errs);
  sp_telemetry_destroy(tel);
  assert_int_equal(sp_test_loop_finish(&loop, 1000), 0);
}

static void test_telemetry(void **state) {
  (void)state;
  sp_telemetry_t *t = sp_telemetry_create();
  sp_metric_t *a = sp_telemetry_counter(t, "x_total", "X.", "k=\"1\"");
  sp_metric_add(a, 3);
  /* The same series comes back (counters survive component re-creation). */
  assert_ptr_equal(sp_telemetry_counter(t, "x_total", "X.", "k=\"1\""), a);
  sp_metric_set(sp_telemetry_gauge(t, "q", "Q.", ""), 7);
  assert_int_equal(sp_telemetry_value(t, "x_total", "k=\"1\""), 3);
  sp_buf_t out;
  sp_buf_init(&out, 0);
  assert_int_equal(sp_telemetry_render(t, &out), 0);
  assert_string_equal(sp_buf_cstr(&out), "# HELP x_total X.\n# TYPE x_total counter\nx_total{k=\"1\"} 3\n"
                                          "# HELP q Q.\n# TYPE q gauge\nq 7\n");
  sp_buf_free(&out);
  sp_telemetry_destroy(t);
  /* Without a registry counting still works (a private series). */
  sp_metric_add(sp_telemetry_counter(NULL, "y", "", ""), 1);
}

/* ---- the batch processor out of memory (profiles) ---------------------------------- */

/* Records the profiles delivered downstream and checks their side arrays. */
typedef struct prec_s {
  sp_consumer_t base;
  size_t batches, profiles;
  size_t unfitted; /* batches whose item array had room beyond their profiles */
  size_t indexed;  /* profiles that arrived with their wire index */
} prec_t;

static int prec_profiles(sp_consumer_t *c, sp_profiles_t *b) {
  prec_t *r = (prec_t *)c;
  r->batches++;
  r->profiles += b->n;
  r->unfitted += b->cap > b->n;
  for (size_t i = 0; i < b->n; i++) {
    const sp_profile_t *p = &b->items[i];
    r->indexed += p->wire != NULL && p->wire->raw == p->raw;
    assert_non_null(sp_profile_label(p, "service_name"));
    if (p->n_ext > 0) {
      assert_non_null(p->sample_time_ns);
      assert_non_null(p->sample_thread);
    }
  }
  sp_profiles_unref(b);
  return 0;
}

/*
 * Two profiles (service "svc", 3 samples' times and threads) whose pprof is
 * larger than half the arena's largest chunk, so that copying each one
 * allocates: a failure can then fall between the two.
 */
#define OOM_PPROF_PAD (520u * 1024u)
static sp_profiles_t *oom_profiles(void) {
  Perftools__Profiles__Profile pr = PERFTOOLS__PROFILES__PROFILE__INIT;
  char *pad = malloc(OOM_PPROF_PAD + 1);
  assert_non_null(pad);
  memset(pad, 'x', OOM_PPROF_PAD);
  pad[OOM_PPROF_PAD] = '\0';
  char *strings[] = {"", "samples", "count", pad};
  Perftools__Profiles__ValueType vt = PERFTOOLS__PROFILES__VALUE_TYPE__INIT;
  Perftools__Profiles__ValueType *vts[] = {&vt};
  vt.type = 1;
  vt.unit = 2;
  pr.n_string_table = 4;
  pr.string_table = strings;
  pr.n_sample_type = 1;
  pr.sample_type = vts;
  size_t len = perftools__profiles__profile__get_packed_size(&pr);
  uint8_t *buf = malloc(len);
  assert_non_null(buf);
  perftools__profiles__profile__pack(&pr, buf);
  free(pad);
  sp_profiles_t *b = sp_profiles_create();
  assert_non_null(b);
  sp_label_t l[2] = {{"service_name", "svc"}, {"__name__", "process_cpu"}};
  for (int k = 0; k < 2; k++) {
    sp_profile_t *p = sp_profiles_add(b, l, 2, 1, 2, buf, len);
    assert_non_null(p);
    p->sample_time_ns = sp_arena_alloc(b->arena, 3 * sizeof(int64_t));
    p->sample_thread = sp_arena_alloc(b->arena, 3 * sizeof(int64_t));
    assert_true(p->sample_time_ns != NULL && p->sample_thread != NULL);
    for (int i = 0; i < 3; i++) {
      p->sample_time_ns[i] = 10 + i;
      p->sample_thread[i] = 7;
    }
    p->n_ext = 3;
  }
  free(buf);
  return b;
}

/*
 * Out of memory in the batch processor's profiles path: a shared first batch
 * that cannot be copied is refused (never adopted: appending to it later
 * would reallocate its items under the other holder), and a copy that fails
 * part way takes back what it appended, so the sender's retry of the same
 * batch does not duplicate profiles. Every accepted profile comes out once.
 */
static void test_batch_processor_profiles_oom(void **state) {
  (void)state;
  bp_t t = {0};
  prec_t next = {.base.consume_profiles = prec_profiles};
  bp_start(&t, "send_batch_size: 100000\ntimeout: 1h\n", SP_SIGNAL_PROFILES, &next.base);
  sp_consumer_t *input = t.input;

  /* A shared first batch, and no memory to copy it: refused, not adopted. */
  sp_profiles_t *shared = oom_profiles();
  sp_profiles_ref(shared);
  sp_alloc_set_fail_after(0);
  int rc = sp_consume_profiles(input, shared);
  sp_alloc_set_fail_after(-1);
  assert_int_equal(rc, SP_EAGAIN);
  assert_int_equal(shared->refcnt, 1); /* only ours: the batcher kept nothing */
  /* The retry is taken as a private copy; ours stays intact. */
  sp_profiles_ref(shared);
  assert_int_equal(sp_consume_profiles(input, shared), 0);
  assert_int_equal(shared->refcnt, 1);
  size_t accepted = shared->n;

  /* Failures at each of the first allocations of the copy path, each retried
   * as a sender would; repeated, as the accumulator's own growth shifts them. */
  for (long k = 0; k < 30; k++) {
    long n = k % 5;
    for (int attempt = 0;; attempt++) {
      sp_profiles_t *b = oom_profiles();
      size_t count = b->n;
      sp_alloc_set_fail_after(attempt == 0 ? n : -1);
      rc = sp_consume_profiles(input, b);
      sp_alloc_set_fail_after(-1);
      if (rc == 0) {
        accepted += count;
        break;
      }
      assert_int_equal(rc, SP_EAGAIN);
      assert_true(attempt == 0);
    }
    /* The batch we still hold is unharmed by what the batcher did. */
    assert_int_equal(shared->n, 2);
    assert_string_equal(sp_profile_label(&shared->items[1], "service_name"), "svc");
  }
  sp_profiles_unref(shared);

  bp_stop(&t, 100); /* flushes */
  assert_int_equal(next.profiles, accepted);
}

/* A flushed profiles batch's item array is cut to its profiles (it grew by doubling). */
static void test_batch_processor_fits_profiles(void **state) {
  (void)state;
  bp_t t = {0};
  prec_t next = {.base.consume_profiles = prec_profiles};
  bp_start(&t, "send_batch_size: 5\ntimeout: 1h\n", SP_SIGNAL_PROFILES, &next.base);
  sp_consumer_t *input = t.input;
  /* 2 + 2 + 2 profiles: the third append passes 5 and flushes 6 (the array had room for 8). */
  /* Profiles arrive indexed (as the receivers and the join leave them): the copies keep it. */
  for (int i = 0; i < 3; i++) {
    sp_profiles_t *in = oom_profiles();
    for (size_t k = 0; k < in->n; k++)
      assert_non_null(sp_profile_wire(in, &in->items[k]));
    assert_int_equal(sp_consume_profiles(input, in), 0);
  }
  assert_int_equal(next.batches, 1);
  assert_int_equal(next.profiles, 6);
  assert_int_equal(next.unfitted, 0);
  assert_int_equal(next.indexed, 6);
  bp_stop(&t, 100);
}

/* ---- no limit on pipelines per receiver, exporters per pipeline, service keys ------ */

enum { WIDE_N = 70 }; /* beyond the 64 entries / 16 keys the graph once silently kept */

static sp_telemetry_t *wide_tel;

static uint64_t wide_sent(int i) {
  char labels[64];
  snprintf(labels, sizeof(labels), "exporter=\"debug/%d\"", i);
  return sp_telemetry_value(wide_tel, "spanprof_exporter_sent_spans_total", labels);
}

/* Every exporter got the span twice: from its own pipeline and from traces/all. */
static int wide_all_twice(void *arg) {
  (void)arg;
  for (int i = 1; i <= WIDE_N; i++)
    if (wide_sent(i) < 2)
      return 0;
  return 1;
}

static void test_graph_wide(void **state) {
  (void)state;
  /* A port nothing listens on, for the receiver. */
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {.sin_family = AF_INET};
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t alen = sizeof(a);
  assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
  assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &alen), 0);
  int port = ntohs(a.sin_port);
  close(fd);

  /* One receiver in 71 pipelines; one pipeline with 70 exporters. */
  sp_buf_t y;
  sp_buf_init(&y, 0);
  char line[160];
  snprintf(line, sizeof(line),
           "receivers:\n  otlp:\n    protocols:\n      http:\n        endpoint: 127.0.0.1:%d\n"
           "exporters:\n",
           port);
  sp_buf_puts(&y, line);
  for (int i = 1; i <= WIDE_N; i++) {
    snprintf(line, sizeof(line), "  debug/%d:\n", i);
    sp_buf_puts(&y, line);
  }
  sp_buf_puts(&y, "service:\n  telemetry:\n    metrics:\n      level: none\n  pipelines:\n");
  for (int i = 1; i <= WIDE_N; i++) {
    snprintf(line, sizeof(line),
             "    traces/%d:\n      receivers: [otlp]\n      exporters: [debug/%d]\n", i, i);
    sp_buf_puts(&y, line);
  }
  sp_buf_puts(&y, "    traces/all:\n      receivers: [otlp]\n      exporters: [");
  for (int i = 1; i <= WIDE_N; i++) {
    snprintf(line, sizeof(line), "%sdebug/%d", i > 1 ? ", " : "", i);
    sp_buf_puts(&y, line);
  }
  sp_buf_puts(&y, "]\n");

  uv_loop_t loop;
  uv_loop_init(&loop);
  wide_tel = sp_telemetry_create();
  sp_host_t host = {.loop = &loop, .telemetry = wide_tel};
  sp_errors_t errs = {0};
  sp_config_doc_t *doc = NULL;
  assert_int_equal(sp_config_load_string("wide.yaml", sp_buf_cstr(&y), y.len, &doc, &errs), 0);
  sp_graph_t *g = NULL;
  int rc = sp_graph_build(doc, &host, true, &g, &errs);
  sp_errors_print(&errs, 2);
  assert_int_equal(rc, 0);
  assert_int_equal(sp_graph_pipeline_count(g), WIDE_N + 1);
  assert_int_equal(sp_graph_start(g), 0);

  /* One span over OTLP/HTTP reaches every pipeline and every exporter. */
  static const char body[] =
      "{\"resourceSpans\":[{\"scopeSpans\":[{\"spans\":[{\"traceId\":"
      "\"5b8efff798038103d269b633813fc60c\",\"spanId\":\"0000000000000001\",\"name\":\"w\","
      "\"startTimeUnixNano\":\"1\",\"endTimeUnixNano\":\"2\"}]}]}]}";
  char req[1024];
  int n = snprintf(req, sizeof(req),
                   "POST /v1/traces HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
                   "Content-Length: %zu\r\nConnection: close\r\n\r\n%s",
                   sizeof(body) - 1, body);
  fd = socket(AF_INET, SOCK_STREAM, 0);
  assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof(a)), 0);
  assert_int_equal(send(fd, req, (size_t)n, MSG_NOSIGNAL), n);
  assert_int_equal(sp_test_run_until(&loop, wide_all_twice, NULL, 5000), 0);
  for (int i = 1; i <= WIDE_N; i++)
    assert_int_equal(wide_sent(i), 2);
  close(fd);

  int done = 0;
  sp_graph_shutdown(g, 1000, on_done, &done);
  assert_int_equal(sp_test_run_until(&loop, flag_set, &done, 5000), 0);
  sp_graph_destroy(g);
  sp_config_doc_free(doc);
  sp_errors_free(&errs);
  sp_telemetry_destroy(wide_tel);
  wide_tel = NULL;
  assert_int_equal(sp_test_loop_finish(&loop, 1000), 0);

  /* Every unknown key under service is reported, the 20th as well as the first. */
  y.len = 0;
  sp_buf_puts(&y, "exporters:\n  debug:\nreceivers:\n  otlp:\n    protocols:\n      http:\n"
                  "service:\n");
  for (int i = 1; i <= 20; i++) {
    snprintf(line, sizeof(line), "  bogus%02d: 1\n", i);
    sp_buf_puts(&y, line);
  }
  sp_buf_puts(&y, "  shutdown_timeout: 3s\n  pipelines:\n    traces:\n      receivers: [otlp]\n"
                  "      exporters: [debug]\n");
  sp_telemetry_t *tel = sp_telemetry_create();
  sp_host_t host2 = {.loop = &loop, .telemetry = tel};
  errs = (sp_errors_t){0};
  assert_int_equal(sp_config_load_string("keys.yaml", sp_buf_cstr(&y), y.len, &doc, &errs), 0);
  g = NULL;
  assert_int_equal(sp_graph_build(doc, &host2, false, &g, &errs), SP_ECONFIG);
  assert_null(g);
  int bogus = 0;
  bool last = false;
  for (size_t i = 0; i < errs.n; i++) {
    bogus += strstr(errs.lines[i], "bogus") != NULL;
    last = last || strstr(errs.lines[i], "bogus20") != NULL;
  }
  assert_int_equal(bogus, 20);
  assert_true(last);
  sp_config_doc_free(doc);
  sp_errors_free(&errs);
  sp_telemetry_destroy(tel);
  sp_buf_free(&y);
}

int main(void) {
  sp_log_set_level(SP_LOG_ERROR);
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_arena_adopt),
      cmocka_unit_test(test_traces_scan),
      cmocka_unit_test(test_traces_copy_on_write),
      cmocka_unit_test(test_fanout),
      cmocka_unit_test(test_batch_processor_size_and_time),
      cmocka_unit_test(test_batch_processor_never_loses),
      cmocka_unit_test(test_batch_processor_tenants_apart),
      cmocka_unit_test(test_batch_processor_fits_buffers),
      cmocka_unit_test(test_batch_processor_fits_profiles),
      cmocka_unit_test(test_graph),
      cmocka_unit_test(test_telemetry),
      cmocka_unit_test(test_batch_processor_profiles_oom),
      cmocka_unit_test(test_graph_wide),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
