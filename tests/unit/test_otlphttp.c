/*
 * test_otlphttp.c — the otlphttp exporter against a scripted OTLP/HTTP
 * backend built on our own HTTP server transport.
 *
 * The backend records every request (path, headers, decoded body) and
 * answers from a script: status, Retry-After, body, optional delay. Tests
 * decode what arrived with protobuf-c (or pbjson) and compare it with what
 * was sent, byte for byte after re-encoding, and walk the fault table of
 * issue #4: backend down then up, 503 + Retry-After, 429, 400, partial
 * success, slow backend past the timeout, queue full; TLS and mTLS.
 * Retry intervals are tens of milliseconds; the one Retry-After test waits
 * its full second. Compression runs on libuv's thread pool: tests hold the
 * pool (support/pool_block.h) to shut down with that work in flight, and
 * compare the sizes the compression levels give.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "exporters/otlphttp/otlphttp.h"
#include "pipeline/alloc.h"
#include "pipeline/arena.h"
#include "pipeline/error.h"
#include "pipeline/log.h"
#include "pipeline/pbjson.h"
#include "pipeline/telemetry.h"
#include "pipeline/transport/http_server.h"
#include "support/exporter_fixture.h"
#include "support/loop_util.h"
#include "support/pool_block.h"
#include "support/testcerts.h"

#include "google/rpc/status.pb-c.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

/* ---- the scripted backend ------------------------------------------------------ */

#define MAX_REQ 64

typedef struct resp_s {
  int status;
  const char *retry_after;
  const uint8_t *body;
  size_t len;
  const char *ctype;
  uint64_t delay_ms;
} resp_t;

typedef struct rec_s {
  char path[64];
  char ctype[64];
  char cenc[32];
  char tenant[32];
  char xtest[32];
  uint8_t *body;
  size_t len;
  size_t wire_len;
  uint64_t at_ms;
  int answered; /* status answered */
} rec_t;

typedef struct backend_s {
  uv_loop_t *loop;
  sp_http_server_t *srv;
  int port;
  resp_t script[16];
  size_t n_script, next;
  rec_t recs[MAX_REQ];
  size_t n;
  size_t ok; /* requests answered 2xx */
  int delayed_open;
} backend_t;

typedef struct delayed_s {
  uv_timer_t timer;
  backend_t *be;
  sp_http_request_t *req;
  resp_t resp;
} delayed_t;

static void copy_hdr(const sp_http_request_t *req, const char *name, char *out, size_t cap) {
  const char *v = sp_http_request_header(req, name);
  snprintf(out, cap, "%s", v ? v : "");
}

static void answer(sp_http_request_t *req, const resp_t *r) {
  sp_http_header_t extra[1];
  size_t n = 0;
  if (r->retry_after) extra[n++] = (sp_http_header_t){"Retry-After", r->retry_after};
  sp_http_respond(req, r->status, r->ctype ? r->ctype : "application/x-protobuf", r->body, r->len,
                  extra, n);
}

static void delayed_closed(uv_handle_t *h) {
  delayed_t *d = h->data;
  d->be->delayed_open--;
  free(d);
}

static void delayed_fire(uv_timer_t *t) {
  delayed_t *d = t->data;
  answer(d->req, &d->resp);
  uv_close((uv_handle_t *)&d->timer, delayed_closed);
}

static void backend_handler(sp_http_request_t *req, void *ctx) {
  backend_t *be = ctx;
  resp_t r = be->next < be->n_script ? be->script[be->next++] : (resp_t){.status = 200};
  if (be->n < MAX_REQ) {
    rec_t *rec = &be->recs[be->n];
    snprintf(rec->path, sizeof(rec->path), "%s", req->path);
    copy_hdr(req, "content-type", rec->ctype, sizeof(rec->ctype));
    copy_hdr(req, "content-encoding", rec->cenc, sizeof(rec->cenc));
    copy_hdr(req, "x-scope-orgid", rec->tenant, sizeof(rec->tenant));
    copy_hdr(req, "x-test", rec->xtest, sizeof(rec->xtest));
    rec->body = malloc(req->body_len ? req->body_len : 1);
    memcpy(rec->body, req->body ? (const void *)req->body : "", req->body_len);
    rec->len = req->body_len;
    rec->wire_len = req->wire_len;
    uv_update_time(be->loop);
    rec->at_ms = uv_now(be->loop);
    rec->answered = r.status;
  }
  be->n++;
  if (r.status >= 200 && r.status < 300) be->ok++;
  if (r.delay_ms > 0) {
    delayed_t *d = calloc(1, sizeof(*d));
    d->be = be;
    d->req = req;
    d->resp = r;
    uv_timer_init(be->loop, &d->timer);
    d->timer.data = d;
    be->delayed_open++;
    uv_timer_start(&d->timer, delayed_fire, r.delay_ms, 0);
    return;
  }
  answer(req, &r);
}

static void backend_start_on(backend_t *be, uv_loop_t *loop, int port, const sp_tls_config_t *tls) {
  char ep[64];
  snprintf(ep, sizeof(ep), "127.0.0.1:%d", port);
  sp_http_server_options_t o = {.endpoint = ep,
                                .component = "backend",
                                .handler = backend_handler,
                                .handler_ctx = be,
                                .tls = tls};
  be->loop = loop;
  assert_int_equal(sp_http_server_create(loop, &o, &be->srv), 0);
  assert_int_equal(sp_http_server_start(be->srv), 0);
  be->port = sp_http_server_port(be->srv);
}

static void on_flag(void *arg) { *(int *)arg = 1; }
static int flag_set(void *arg) { return *(int *)arg; }
static size_t g_ok_want;
static int ok_reached(void *arg) { return ((backend_t *)arg)->ok >= g_ok_want; }
static int no_delayed(void *arg) { return ((backend_t *)arg)->delayed_open == 0; }

static void backend_stop(backend_t *be) {
  if (be->srv == NULL) return;
  assert_int_equal(sp_test_run_until(be->loop, no_delayed, be, 5000), 0);
  int done = 0;
  sp_http_server_shutdown(be->srv, on_flag, &done);
  assert_int_equal(sp_test_run_until(be->loop, flag_set, &done, 5000), 0);
  sp_http_server_destroy(be->srv);
  be->srv = NULL;
}

static void backend_free(backend_t *be) {
  backend_stop(be);
  for (size_t i = 0; i < be->n && i < MAX_REQ; i++)
    free(be->recs[i].body);
  memset(be, 0, sizeof(*be));
}

/* ---- fixture ----------------------------------------------------------------- */

typedef struct fx_s {
  uv_loop_t loop;
  sp_host_t host;
  backend_t be;
  sp_test_exporter_t ex;
  uint8_t *sent[16];
  size_t sent_len[16];
  size_t n_sent;
} fx_t;

static sp_testcerts_t g_certs;

static int setup(void **state) {
  fx_t *fx = calloc(1, sizeof(*fx));
  assert_int_equal(uv_loop_init(&fx->loop), 0);
  fx->host.loop = &fx->loop;
  fx->host.telemetry = sp_telemetry_create();
  *state = fx;
  return 0;
}

static int teardown(void **state) {
  fx_t *fx = *state;
  sp_test_exporter_stop(&fx->ex, 1000);
  backend_free(&fx->be);
  for (size_t i = 0; i < fx->n_sent; i++)
    sp_free(fx->sent[i]);
  assert_int_equal(sp_test_loop_finish(&fx->loop, 3000), 0);
  sp_telemetry_destroy(fx->host.telemetry);
  free(fx);
  return 0;
}

/* Creates and starts the exporter with "endpoint: http(s)://127.0.0.1:<port>" + @p extra. */
static void exporter_up(fx_t *fx, const char *scheme, int port, const char *extra) {
  char yaml[2048];
  snprintf(yaml, sizeof(yaml), "endpoint: %s://127.0.0.1:%d\n%s", scheme, port, extra);
  assert_int_equal(
      sp_test_exporter_make(&fx->ex, &sp_exporter_otlphttp, yaml, &fx->host, "otlphttp/test"), 0);
  assert_int_equal(fx->ex.def->start(fx->ex.comp), 0);
}

static int send_traces(fx_t *fx, size_t n_spans, const char *tenant) {
  assert_true(fx->n_sent < 16);
  sp_traces_t *b = sp_test_traces(n_spans, (uint32_t)fx->n_sent + 1, &fx->sent[fx->n_sent],
                                  &fx->sent_len[fx->n_sent]);
  b->meta.tenant = tenant;
  fx->n_sent++;
  return sp_consume_traces(fx->ex.comp->input, b);
}

static uint64_t metric(fx_t *fx, const char *name) {
  return sp_telemetry_value(fx->host.telemetry, name, "exporter=\"otlphttp/test\"");
}

static uint64_t g_want;
static int done_reached(void *arg) {
  fx_t *fx = arg;
  return metric(fx, "spanprof_exporter_sent_spans_total") +
             metric(fx, "spanprof_exporter_send_failed_spans_total") >=
         g_want;
}
static void wait_spans(fx_t *fx, uint64_t want, uint64_t timeout_ms) {
  g_want = want;
  assert_int_equal(sp_test_run_until(&fx->loop, done_reached, fx, timeout_ms), 0);
}

/* Decodes a recorded traces body and checks it re-encodes to the sent bytes. */
static void check_traces_body(const rec_t *r, bool json, const uint8_t *want, size_t want_len) {
  sp_arena_t *a = sp_arena_create(0);
  ProtobufCMessage *m = NULL;
  if (json) {
    char err[256];
    assert_int_equal(
        sp_pbjson_decode(
            &opentelemetry__proto__collector__trace__v1__export_trace_service_request__descriptor,
            (const char *)r->body, r->len, SP_PBJSON_OTLP, sp_arena_pbc(a), &m, err, sizeof(err)),
        0);
  } else {
    m = protobuf_c_message_unpack(
        &opentelemetry__proto__collector__trace__v1__export_trace_service_request__descriptor,
        sp_arena_pbc(a), r->len, r->body);
    assert_non_null(m);
    assert_memory_equal(r->body, want, want_len); /* unchanged batches go out as received */
  }
  size_t n = protobuf_c_message_get_packed_size(m);
  assert_int_equal(n, want_len);
  uint8_t *re = malloc(n);
  protobuf_c_message_pack(m, re);
  assert_memory_equal(re, want, n);
  free(re);
  sp_arena_destroy(a);
}

static const char *g_fast_retry =
    "retry_on_failure: {initial_interval: 50ms, max_interval: 200ms, randomization_factor: 0}\n";

/* ---- tests ------------------------------------------------------------------- */

static void test_proto_gzip_intact(void **state) {
  fx_t *fx = *state;
  backend_start_on(&fx->be, &fx->loop, 0, NULL);
  exporter_up(fx, "http", fx->be.port, "headers: {X-Test: hello}\ntenant_from_metadata: true\n");
  assert_int_equal(send_traces(fx, 5, "tenant-a"), 0);
  assert_int_equal(send_traces(fx, 8, NULL), 0);
  assert_int_equal(send_traces(fx, 1, "tenant-b"), 0);
  wait_spans(fx, 14, 5000);
  assert_int_equal(metric(fx, "spanprof_exporter_sent_spans_total"), 14);
  assert_int_equal(fx->be.n, 3);
  for (size_t i = 0; i < 3; i++) {
    const rec_t *r = &fx->be.recs[i];
    assert_string_equal(r->path, "/v1/traces");
    assert_string_equal(r->ctype, "application/x-protobuf");
    assert_string_equal(r->cenc, "gzip");
    assert_string_equal(r->xtest, "hello");
    assert_true(r->wire_len != r->len); /* it really was compressed */
    /* Requests run concurrently: match by length and content. */
    bool found = false;
    for (size_t k = 0; k < fx->n_sent && !found; k++)
      if (fx->sent_len[k] == r->len && memcmp(fx->sent[k], r->body, r->len) == 0) {
        check_traces_body(r, false, fx->sent[k], fx->sent_len[k]);
        assert_string_equal(r->tenant, k == 0 ? "tenant-a" : k == 2 ? "tenant-b" : "");
        found = true;
      }
    assert_true(found);
  }
}

static void test_json_uncompressed_intact(void **state) {
  fx_t *fx = *state;
  backend_start_on(&fx->be, &fx->loop, 0, NULL);
  exporter_up(fx, "http", fx->be.port,
              "encoding: json\ncompression: none\nsending_queue: {num_consumers: 1}\n");
  assert_int_equal(send_traces(fx, 6, "t"), 0); /* tenant not forwarded by default */
  assert_int_equal(send_traces(fx, 3, NULL), 0);
  wait_spans(fx, 9, 5000);
  assert_int_equal(fx->be.n, 2);
  for (size_t i = 0; i < 2; i++) {
    const rec_t *r = &fx->be.recs[i];
    assert_string_equal(r->ctype, "application/json");
    assert_string_equal(r->cenc, "");
    assert_string_equal(r->tenant, "");
    assert_int_equal(r->body[0], '{');
    check_traces_body(r, true, fx->sent[i], fx->sent_len[i]);
  }
}

static void test_profiles_both_encodings(void **state) {
  fx_t *fx = *state;
  backend_start_on(&fx->be, &fx->loop, 0, NULL);
  exporter_up(fx, "http", fx->be.port, "sending_queue: {num_consumers: 1}\n");
  assert_int_equal(sp_consume_profiles(fx->ex.comp->input, sp_test_profiles()), 0);
  g_ok_want = 1;
  assert_int_equal(sp_test_run_until(&fx->loop, ok_reached, &fx->be, 5000), 0);
  sp_test_exporter_stop(&fx->ex, 1000);
  assert_int_equal(metric(fx, "spanprof_exporter_sent_profiles_total"), 2);
  exporter_up(fx, "http", fx->be.port, "encoding: json\n");
  assert_int_equal(sp_consume_profiles(fx->ex.comp->input, sp_test_profiles()), 0);
  g_ok_want = 2;
  assert_int_equal(sp_test_run_until(&fx->loop, ok_reached, &fx->be, 5000), 0);
  assert_int_equal(fx->be.n, 2);
  for (int i = 0; i < 2; i++) {
    const rec_t *r = &fx->be.recs[i];
    assert_string_equal(r->path, "/v1development/profiles");
    sp_arena_t *a = sp_arena_create(0);
    ProtobufCMessage *m = NULL;
    const ProtobufCMessageDescriptor *desc =
        &opentelemetry__proto__collector__profiles__v1development__export_profiles_service_request__descriptor;
    if (i == 0) {
      assert_string_equal(r->ctype, "application/x-protobuf");
      m = protobuf_c_message_unpack(desc, sp_arena_pbc(a), r->len, r->body);
    } else {
      assert_string_equal(r->ctype, "application/json");
      char err[256];
      assert_int_equal(sp_pbjson_decode(desc, (const char *)r->body, r->len, SP_PBJSON_OTLP,
                                        sp_arena_pbc(a), &m, err, sizeof(err)),
                       0);
    }
    assert_non_null(m);
    sp_test_check_profiles((const sp_otlpprofiles_req_t *)m);
    sp_arena_destroy(a);
  }
}

static void test_backend_down_then_up(void **state) {
  fx_t *fx = *state;
  /* Find a free port, then leave it closed: connections are refused. */
  backend_start_on(&fx->be, &fx->loop, 0, NULL);
  int port = fx->be.port;
  backend_stop(&fx->be);
  exporter_up(fx, "http", port, g_fast_retry);
  assert_int_equal(send_traces(fx, 4, NULL), 0);
  assert_int_equal(send_traces(fx, 2, NULL), 0);
  /* Let a few attempts fail. */
  uv_update_time(&fx->loop);
  uint64_t until = uv_now(&fx->loop) + 300;
  while (uv_now(&fx->loop) < until) {
    uv_run(&fx->loop, UV_RUN_ONCE);
    uv_update_time(&fx->loop);
  }
  assert_true(metric(fx, "spanprof_exporter_retries_total") >= 2);
  assert_int_equal(metric(fx, "spanprof_exporter_sent_spans_total"), 0);
  backend_start_on(&fx->be, &fx->loop, port, NULL);
  wait_spans(fx, 6, 5000);
  assert_int_equal(metric(fx, "spanprof_exporter_sent_spans_total"), 6);
  assert_int_equal(metric(fx, "spanprof_exporter_send_failed_spans_total"), 0);
  assert_int_equal(fx->be.n, 2);
}

static void test_503_retry_after(void **state) {
  fx_t *fx = *state;
  fx->be.script[0] = (resp_t){.status = 503, .retry_after = "1"};
  fx->be.n_script = 1;
  backend_start_on(&fx->be, &fx->loop, 0, NULL);
  exporter_up(fx, "http", fx->be.port, g_fast_retry);
  assert_int_equal(send_traces(fx, 3, NULL), 0);
  wait_spans(fx, 3, 5000);
  assert_int_equal(fx->be.n, 2);
  uint64_t gap = fx->be.recs[1].at_ms - fx->be.recs[0].at_ms;
  assert_true(gap >= 990);
  assert_true(gap < 1500);
  assert_int_equal(metric(fx, "spanprof_exporter_sent_spans_total"), 3);
  check_traces_body(&fx->be.recs[1], false, fx->sent[0], fx->sent_len[0]);
}

static void test_429_and_502_retried(void **state) {
  fx_t *fx = *state;
  fx->be.script[0] = (resp_t){.status = 429};
  fx->be.script[1] = (resp_t){.status = 502};
  fx->be.script[2] = (resp_t){.status = 504};
  fx->be.n_script = 3;
  backend_start_on(&fx->be, &fx->loop, 0, NULL);
  exporter_up(fx, "http", fx->be.port, g_fast_retry);
  assert_int_equal(send_traces(fx, 2, NULL), 0);
  wait_spans(fx, 2, 5000);
  assert_int_equal(fx->be.n, 4);
  assert_int_equal(metric(fx, "spanprof_exporter_sent_spans_total"), 2);
  assert_int_equal(metric(fx, "spanprof_exporter_retries_total"), 3);
  /* Backoff 50, 75, 112 ms between the attempts (multiplier 1.5). */
  assert_true(fx->be.recs[1].at_ms - fx->be.recs[0].at_ms >= 45);
  assert_true(fx->be.recs[3].at_ms - fx->be.recs[2].at_ms >= 105);
}

static void test_400_not_retried(void **state) {
  fx_t *fx = *state;
  Google__Rpc__Status st = GOOGLE__RPC__STATUS__INIT;
  st.code = 3;
  st.message = "span 3 has an invalid trace id";
  uint8_t buf[128];
  size_t n = google__rpc__status__pack(&st, buf);
  fx->be.script[0] = (resp_t){.status = 400, .body = buf, .len = n};
  fx->be.script[1] =
      (resp_t){.status = 401, .body = (const uint8_t *)"no", .len = 2, .ctype = "text/plain"};
  fx->be.script[2] = (resp_t){.status = 500};
  fx->be.n_script = 3;
  backend_start_on(&fx->be, &fx->loop, 0, NULL);
  exporter_up(fx, "http", fx->be.port, "sending_queue: {num_consumers: 1}\n");
  assert_int_equal(send_traces(fx, 4, NULL), 0);
  assert_int_equal(send_traces(fx, 1, NULL), 0);
  assert_int_equal(send_traces(fx, 2, NULL), 0);
  wait_spans(fx, 7, 5000);
  assert_int_equal(fx->be.n, 3); /* one attempt each */
  assert_int_equal(metric(fx, "spanprof_exporter_send_failed_spans_total"), 7);
  assert_int_equal(metric(fx, "spanprof_exporter_retries_total"), 0);
}

static void test_partial_success(void **state) {
  fx_t *fx = *state;
  Opentelemetry__Proto__Collector__Trace__V1__ExportTracePartialSuccess ps =
      OPENTELEMETRY__PROTO__COLLECTOR__TRACE__V1__EXPORT_TRACE_PARTIAL_SUCCESS__INIT;
  ps.rejected_spans = 2;
  ps.error_message = "2 spans too old";
  Opentelemetry__Proto__Collector__Trace__V1__ExportTraceServiceResponse resp =
      OPENTELEMETRY__PROTO__COLLECTOR__TRACE__V1__EXPORT_TRACE_SERVICE_RESPONSE__INIT;
  resp.partial_success = &ps;
  uint8_t buf[128];
  size_t n = protobuf_c_message_pack(&resp.base, buf);
  fx->be.script[0] = (resp_t){.status = 200, .body = buf, .len = n};
  const char *json = "{\"partialSuccess\":{\"rejectedSpans\":\"1\",\"errorMessage\":\"dup\"}}";
  fx->be.script[1] = (resp_t){.status = 200,
                              .body = (const uint8_t *)json,
                              .len = strlen(json),
                              .ctype = "application/json"};
  fx->be.n_script = 2;
  backend_start_on(&fx->be, &fx->loop, 0, NULL);
  exporter_up(fx, "http", fx->be.port, "sending_queue: {num_consumers: 1}\n");
  assert_int_equal(send_traces(fx, 5, NULL), 0);
  assert_int_equal(send_traces(fx, 3, NULL), 0);
  wait_spans(fx, 8, 5000);
  assert_int_equal(fx->be.n, 2); /* never retried */
  assert_int_equal(metric(fx, "spanprof_exporter_sent_spans_total"), 5);
  assert_int_equal(metric(fx, "spanprof_exporter_send_failed_spans_total"), 3);
}

static void test_slow_backend_timeout(void **state) {
  fx_t *fx = *state;
  fx->be.script[0] = (resp_t){.status = 200, .delay_ms = 600};
  fx->be.n_script = 1;
  backend_start_on(&fx->be, &fx->loop, 0, NULL);
  char extra[256];
  snprintf(extra, sizeof(extra), "timeout: 200ms\n%s", g_fast_retry);
  exporter_up(fx, "http", fx->be.port, extra);
  assert_int_equal(send_traces(fx, 3, NULL), 0);
  wait_spans(fx, 3, 5000);
  assert_int_equal(metric(fx, "spanprof_exporter_sent_spans_total"), 3);
  assert_int_equal(fx->be.n, 2);
  uint64_t gap = fx->be.recs[1].at_ms - fx->be.recs[0].at_ms;
  assert_true(gap >= 240); /* 200 ms timeout + 50 ms backoff, give or take a tick */
  assert_true(gap < 600);  /* did not wait for the slow answer */
}

static void test_queue_full_refuses(void **state) {
  fx_t *fx = *state;
  fx->be.script[0] = (resp_t){.status = 200, .delay_ms = 200};
  fx->be.n_script = 1;
  backend_start_on(&fx->be, &fx->loop, 0, NULL);
  exporter_up(fx, "http", fx->be.port, "sending_queue: {num_consumers: 1, queue_size: 1}\n");
  assert_int_equal(send_traces(fx, 1, NULL), 0); /* in flight */
  assert_int_equal(send_traces(fx, 2, NULL), 0); /* queued */
  assert_int_equal(send_traces(fx, 3, NULL), SP_EAGAIN);
  assert_int_equal(metric(fx, "spanprof_exporter_enqueue_failed_spans_total"), 3);
  wait_spans(fx, 3, 5000);
  assert_int_equal(metric(fx, "spanprof_exporter_sent_spans_total"), 3);
}

static void test_drain_on_shutdown(void **state) {
  fx_t *fx = *state;
  backend_start_on(&fx->be, &fx->loop, 0, NULL);
  exporter_up(fx, "http", fx->be.port, "sending_queue: {num_consumers: 1}\n");
  for (int i = 0; i < 4; i++)
    assert_int_equal(send_traces(fx, 2, NULL), 0);
  sp_test_exporter_stop(&fx->ex, 2000); /* returns once drained */
  assert_int_equal(fx->be.n, 4);
  assert_int_equal(metric(fx, "spanprof_exporter_sent_spans_total"), 8);
}

static void test_drain_deadline_cancels(void **state) {
  fx_t *fx = *state;
  fx->be.script[0] = (resp_t){.status = 200, .delay_ms = 1500}; /* the backend hangs */
  fx->be.n_script = 1;
  backend_start_on(&fx->be, &fx->loop, 0, NULL);
  exporter_up(fx, "http", fx->be.port, "sending_queue: {num_consumers: 1}\n");
  assert_int_equal(send_traces(fx, 2, NULL), 0); /* in flight */
  assert_int_equal(send_traces(fx, 3, NULL), 0); /* queued */
  for (int i = 0; i < 100 && fx->be.n == 0; i++)
    uv_run(&fx->loop, UV_RUN_ONCE);
  assert_int_equal(fx->be.n, 1);
  uv_update_time(&fx->loop);
  uint64_t t0 = uv_now(&fx->loop);
  sp_test_exporter_stop(&fx->ex, 200);
  uv_update_time(&fx->loop);
  uint64_t took = uv_now(&fx->loop) - t0;
  assert_true(took >= 190 && took < 1000);
  assert_int_equal(metric(fx, "spanprof_exporter_send_failed_spans_total"), 5);
  assert_int_equal(metric(fx, "spanprof_exporter_sent_spans_total"), 0);
}

static void test_tls_and_mtls(void **state) {
  fx_t *fx = *state;
  sp_tls_config_t stls = {
      .present = true, .cert_file = g_certs.server_cert, .key_file = g_certs.server_key};
  backend_start_on(&fx->be, &fx->loop, 0, &stls);
  char extra[1024];
  snprintf(extra, sizeof(extra), "tls: {ca_file: \"%s\"}\n", g_certs.ca_cert);
  exporter_up(fx, "https", fx->be.port, extra);
  assert_int_equal(send_traces(fx, 3, NULL), 0);
  wait_spans(fx, 3, 5000);
  assert_int_equal(metric(fx, "spanprof_exporter_sent_spans_total"), 3);
  check_traces_body(&fx->be.recs[0], false, fx->sent[0], fx->sent_len[0]);
  sp_test_exporter_stop(&fx->ex, 1000);
  backend_stop(&fx->be);

  /* mTLS: the server requires a client certificate from our CA. */
  stls.client_ca_file = g_certs.ca_cert;
  backend_start_on(&fx->be, &fx->loop, 0, &stls);
  snprintf(extra, sizeof(extra), "tls: {ca_file: \"%s\", cert_file: \"%s\", key_file: \"%s\"}\n",
           g_certs.ca_cert, g_certs.client_cert, g_certs.client_key);
  exporter_up(fx, "https", fx->be.port, extra);
  assert_int_equal(send_traces(fx, 2, NULL), 0);
  wait_spans(fx, 5, 5000);
  assert_int_equal(metric(fx, "spanprof_exporter_sent_spans_total"), 5);
  sp_test_exporter_stop(&fx->ex, 1000);

  /* Without the client certificate the handshake fails: retried, then given up. */
  snprintf(extra, sizeof(extra),
           "tls: {ca_file: \"%s\"}\nretry_on_failure: {initial_interval: 20ms, "
           "max_elapsed_time: 100ms}\n",
           g_certs.ca_cert);
  exporter_up(fx, "https", fx->be.port, extra);
  assert_int_equal(send_traces(fx, 4, NULL), 0);
  wait_spans(fx, 9, 5000);
  assert_int_equal(metric(fx, "spanprof_exporter_sent_spans_total"), 5);
  assert_int_equal(metric(fx, "spanprof_exporter_send_failed_spans_total"), 4);
  assert_true(fx->be.n == 2);
}

/* Starts the exporter's shutdown with drain deadline now + @p drain_ms; *@p done counts reports. */
static void begin_stop(fx_t *fx, uint64_t drain_ms, int *done) {
  uv_update_time(&fx->loop);
  fx->host.drain_deadline = uv_now(&fx->loop) + drain_ms;
  fx->ex.def->shutdown(fx->ex.comp, on_flag, done);
  assert_int_equal(*done, 0); /* never inline */
}

/* After the shutdown callback: what sp_test_exporter_stop() does past it. */
static void end_stop(fx_t *fx) {
  fx->ex.def->destroy(fx->ex.comp);
  sp_cfg_free(fx->ex.def->schema, fx->ex.cfg);
  sp_free(fx->ex.cfg);
  memset(&fx->ex, 0, sizeof(fx->ex));
}

static int never(void *arg) {
  (void)arg;
  return 0;
}

/*
 * The drain deadline passes while compression work is still on the pool:
 * the work cannot be cancelled, so the shutdown waits for it, and its
 * result is reported as a cancelled send (nothing goes out afterwards).
 */
static void test_shutdown_waits_for_compression(void **state) {
  fx_t *fx = *state;
  backend_start_on(&fx->be, &fx->loop, 0, NULL);
  exporter_up(fx, "http", fx->be.port, "sending_queue: {num_consumers: 2}\n");
  sp_test_pool_block_t *block = sp_test_pool_block(&fx->loop);
  assert_non_null(block);
  assert_int_equal(send_traces(fx, 40, NULL), 0);
  assert_int_equal(send_traces(fx, 60, NULL), 0);
  int done = 0;
  begin_stop(fx, 50, &done);
  /* Well past the deadline: still waiting for the two compressions. */
  assert_int_equal(sp_test_run_until(&fx->loop, never, NULL, 300), SP_ETIMEDOUT);
  assert_int_equal(done, 0);
  assert_int_equal(fx->be.n, 0);
  sp_test_pool_release(block);
  assert_int_equal(sp_test_run_until(&fx->loop, flag_set, &done, 5000), 0);
  assert_int_equal(done, 1);
  end_stop(fx);
  assert_int_equal(fx->be.n, 0); /* cancelled, not sent after the client closed */
  assert_int_equal(metric(fx, "spanprof_exporter_send_failed_spans_total"), 100);
  assert_int_equal(metric(fx, "spanprof_exporter_sent_spans_total"), 0);
}

/* A shutdown with time left drains: compression held up past shutdown still gets sent. */
static void test_drain_waits_for_compression(void **state) {
  fx_t *fx = *state;
  backend_start_on(&fx->be, &fx->loop, 0, NULL);
  exporter_up(fx, "http", fx->be.port, "sending_queue: {num_consumers: 1}\n");
  sp_test_pool_block_t *block = sp_test_pool_block(&fx->loop);
  assert_non_null(block);
  for (int i = 0; i < 3; i++)
    assert_int_equal(send_traces(fx, 30, NULL), 0);
  int done = 0;
  begin_stop(fx, 5000, &done);
  assert_int_equal(sp_test_run_until(&fx->loop, never, NULL, 100), SP_ETIMEDOUT);
  assert_int_equal(done, 0);
  sp_test_pool_release(block);
  assert_int_equal(sp_test_run_until(&fx->loop, flag_set, &done, 5000), 0);
  end_stop(fx);
  assert_int_equal(fx->be.n, 3);
  assert_int_equal(metric(fx, "spanprof_exporter_sent_spans_total"), 90);
  for (size_t i = 0; i < 3; i++) {
    assert_string_equal(fx->be.recs[i].cenc, "gzip");
    check_traces_body(&fx->be.recs[i], false, fx->sent[i], fx->sent_len[i]); /* in order */
  }
}

/* Sends one fixed batch through an exporter configured with @p extra; returns the wire size. */
static size_t wire_size_with(fx_t *fx, const char *extra, uint8_t **bytes, size_t *len) {
  size_t before = fx->be.n;
  exporter_up(fx, "http", fx->be.port, extra);
  assert_int_equal(sp_consume_traces(fx->ex.comp->input, sp_test_traces(300, 7, bytes, len)), 0);
  g_ok_want = before + 1;
  assert_int_equal(sp_test_run_until(&fx->loop, ok_reached, &fx->be, 5000), 0);
  sp_test_exporter_stop(&fx->ex, 1000);
  const rec_t *r = &fx->be.recs[before];
  assert_string_equal(r->cenc, "gzip");
  check_traces_body(r, false, *bytes, *len);
  return r->wire_len;
}

/* Level -1 (learned tables) by default; compression_params.level as in the Collector's confighttp.
 */
static void test_compression_level(void **state) {
  fx_t *fx = *state;
  backend_start_on(&fx->be, &fx->loop, 0, NULL);
  uint8_t *b[4];
  size_t n[4];
  size_t def = wire_size_with(fx, "", &b[0], &n[0]);
  size_t one = wire_size_with(fx, "compression_params: {level: 1}\n", &b[1], &n[1]);
  size_t best = wire_size_with(fx, "compression_params: {level: 9}\n", &b[2], &n[2]);
  size_t stored = wire_size_with(fx, "compression_params: {level: 0}\n", &b[3], &n[3]);
  assert_true(def <= one + one / 50); /* -1: learned tables, within 2% of level 1 */
  assert_true(best < one);
  assert_true(stored > n[3]); /* level 0 stores: gzip framing around the bytes */
  for (int i = 0; i < 4; i++)
    sp_free(b[i]);
  sp_test_exporter_t t;
  assert_int_equal(sp_test_exporter_make(&t, &sp_exporter_otlphttp,
                                         "endpoint: http://x:1\ncompression_params: {level: 10}\n",
                                         &fx->host, "otlphttp/bad"),
                   SP_ECONFIG);
  assert_int_equal(sp_test_exporter_make(&t, &sp_exporter_otlphttp,
                                         "endpoint: http://x:1\ncompression_params: {level: -2}\n",
                                         &fx->host, "otlphttp/bad"),
                   SP_ECONFIG);
  assert_int_equal(sp_test_exporter_make(&t, &sp_exporter_otlphttp, "endpoint: http://x:1\n",
                                         &fx->host, "otlphttp/ok"),
                   0);
  assert_int_equal(((sp_otlphttp_cfg_t *)t.cfg)->compression_params.level, -1);
  t.def->destroy(t.comp);
  sp_cfg_free(t.def->schema, t.cfg);
  sp_free(t.cfg);
}

/* Profiles, JSON and gzip together: the encoding built on the loop is compressed on the pool. */
static void test_profiles_json_gzip(void **state) {
  fx_t *fx = *state;
  backend_start_on(&fx->be, &fx->loop, 0, NULL);
  exporter_up(fx, "http", fx->be.port, "encoding: json\ncompression_params: {level: -1}\n");
  assert_int_equal(sp_consume_profiles(fx->ex.comp->input, sp_test_profiles()), 0);
  assert_int_equal(send_traces(fx, 20, NULL), 0);
  g_ok_want = 2;
  assert_int_equal(sp_test_run_until(&fx->loop, ok_reached, &fx->be, 5000), 0);
  for (size_t i = 0; i < 2; i++) {
    const rec_t *r = &fx->be.recs[i];
    assert_string_equal(r->cenc, "gzip");
    assert_string_equal(r->ctype, "application/json");
    if (strcmp(r->path, "/v1/traces") == 0) {
      check_traces_body(r, true, fx->sent[0], fx->sent_len[0]);
      continue;
    }
    sp_arena_t *a = sp_arena_create(0);
    ProtobufCMessage *m = NULL;
    char err[256];
    assert_int_equal(
        sp_pbjson_decode(
            &opentelemetry__proto__collector__profiles__v1development__export_profiles_service_request__descriptor,
            (const char *)r->body, r->len, SP_PBJSON_OTLP, sp_arena_pbc(a), &m, err, sizeof(err)),
        0);
    sp_test_check_profiles((const sp_otlpprofiles_req_t *)m);
    sp_arena_destroy(a);
  }
}

static void test_config_errors(void **state) {
  fx_t *fx = *state;
  sp_test_exporter_t t;
  assert_int_equal(sp_test_exporter_make(&t, &sp_exporter_otlphttp, "compression: gzip\n",
                                         &fx->host, "otlphttp/bad"),
                   SP_ECONFIG);
  assert_int_equal(sp_test_exporter_make(&t, &sp_exporter_otlphttp, "endpoint: localhost:4318\n",
                                         &fx->host, "otlphttp/bad"),
                   SP_ECONFIG);
  assert_int_equal(sp_test_exporter_make(&t, &sp_exporter_otlphttp,
                                         "endpoint: http://x:1\ntls: {ca_file: /x}\n", &fx->host,
                                         "otlphttp/bad"),
                   SP_ECONFIG);
  assert_int_equal(sp_test_exporter_make(&t, &sp_exporter_otlphttp,
                                         "endpoint: http://x:1\nencoding: xml\n", &fx->host,
                                         "otlphttp/bad"),
                   SP_ECONFIG);
  /* Only a traces URL: profiles fail permanently and are counted. */
  assert_int_equal(sp_test_exporter_make(&fx->ex, &sp_exporter_otlphttp,
                                         "traces_endpoint: http://127.0.0.1:1/custom\n", &fx->host,
                                         "otlphttp/test"),
                   0);
  assert_int_equal(fx->ex.def->start(fx->ex.comp), 0);
  assert_int_equal(sp_consume_profiles(fx->ex.comp->input, sp_test_profiles()), 0);
  for (int i = 0; i < 50 && metric(fx, "spanprof_exporter_send_failed_profiles_total") < 2; i++)
    uv_run(&fx->loop, UV_RUN_NOWAIT);
  assert_int_equal(metric(fx, "spanprof_exporter_send_failed_profiles_total"), 2);
}

int main(void) {
  if (getenv("SP_TEST_LOG") == NULL) sp_log_set_level(SP_LOG_OFF);
  if (sp_testcerts_create(&g_certs) != 0) return 1;
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_proto_gzip_intact, setup, teardown),
      cmocka_unit_test_setup_teardown(test_json_uncompressed_intact, setup, teardown),
      cmocka_unit_test_setup_teardown(test_profiles_both_encodings, setup, teardown),
      cmocka_unit_test_setup_teardown(test_backend_down_then_up, setup, teardown),
      cmocka_unit_test_setup_teardown(test_503_retry_after, setup, teardown),
      cmocka_unit_test_setup_teardown(test_429_and_502_retried, setup, teardown),
      cmocka_unit_test_setup_teardown(test_400_not_retried, setup, teardown),
      cmocka_unit_test_setup_teardown(test_partial_success, setup, teardown),
      cmocka_unit_test_setup_teardown(test_slow_backend_timeout, setup, teardown),
      cmocka_unit_test_setup_teardown(test_queue_full_refuses, setup, teardown),
      cmocka_unit_test_setup_teardown(test_drain_on_shutdown, setup, teardown),
      cmocka_unit_test_setup_teardown(test_drain_deadline_cancels, setup, teardown),
      cmocka_unit_test_setup_teardown(test_tls_and_mtls, setup, teardown),
      cmocka_unit_test_setup_teardown(test_config_errors, setup, teardown),
      cmocka_unit_test_setup_teardown(test_shutdown_waits_for_compression, setup, teardown),
      cmocka_unit_test_setup_teardown(test_drain_waits_for_compression, setup, teardown),
      cmocka_unit_test_setup_teardown(test_compression_level, setup, teardown),
      cmocka_unit_test_setup_teardown(test_profiles_json_gzip, setup, teardown),
  };
  int rc = cmocka_run_group_tests(tests, NULL, NULL);
  sp_testcerts_destroy(&g_certs);
  return rc;
}
