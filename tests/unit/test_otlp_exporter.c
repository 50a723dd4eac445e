/*
 * test_otlp_exporter.c — the otlp (gRPC) exporter against a scripted
 * OTLP/gRPC backend built on our own gRPC server transport.
 *
 * The backend serves TraceService/Export and ProfilesService/Export,
 * records every call (message bytes, metadata, time) and answers from a
 * script: status, message, RetryInfo delay, response message, optional
 * delay. Tests check that every span arrives intact (gzip and not),
 * profiles arrive in OTLP form, and walk the fault table: backend down then
 * up, UNAVAILABLE + RetryInfo, RESOURCE_EXHAUSTED with and without
 * RetryInfo, INVALID_ARGUMENT, partial success, deadline exceeded, queue
 * full; TLS and mTLS.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "exporters/otlp/otlp.h"
#include "pipeline/alloc.h"
#include "pipeline/arena.h"
#include "pipeline/error.h"
#include "pipeline/log.h"
#include "pipeline/telemetry.h"
#include "pipeline/transport/grpc_server.h"
#include "support/exporter_fixture.h"
#include "support/loop_util.h"
#include "support/testcerts.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

/* grpc status codes used here */
enum { ST_OK = 0, ST_INVALID_ARGUMENT = 3, ST_RESOURCE_EXHAUSTED = 8, ST_UNAVAILABLE = 14 };

/* ---- the scripted backend ------------------------------------------------------ */

#define MAX_REQ 64

typedef struct resp_s {
  int status;
  const char *message;
  uint64_t retry_after_ms;
  const uint8_t *resp;
  size_t len;
  uint64_t delay_ms;
} resp_t;

typedef struct rec_s {
  int kind; /* 0 traces, 1 profiles */
  char tenant[32];
  char xtest[32];
  uint8_t *body;
  size_t len;
  uint64_t at_ms;
} rec_t;

typedef struct backend_s {
  uv_loop_t *loop;
  sp_grpc_server_t *srv;
  int port;
  resp_t script[16];
  size_t n_script, next;
  rec_t recs[MAX_REQ];
  size_t n, ok;
  int delayed_open;
} backend_t;

typedef struct delayed_s {
  uv_timer_t timer;
  backend_t *be;
  sp_grpc_call_t *call;
  resp_t resp;
} delayed_t;

static void answer(sp_grpc_call_t *call, const resp_t *r) {
  sp_grpc_respond(call, r->status, r->message ? r->message : "", r->resp, r->len,
                  r->retry_after_ms);
}

static void delayed_closed(uv_handle_t *h) {
  delayed_t *d = h->data;
  d->be->delayed_open--;
  free(d);
}

static void delayed_fire(uv_timer_t *t) {
  delayed_t *d = t->data;
  answer(d->call, &d->resp);
  uv_close((uv_handle_t *)&d->timer, delayed_closed);
}

static void handle(backend_t *be, int kind, sp_grpc_call_t *call, const uint8_t *msg, size_t len) {
  resp_t r = be->next < be->n_script ? be->script[be->next++] : (resp_t){.status = ST_OK};
  if (be->n < MAX_REQ) {
    rec_t *rec = &be->recs[be->n];
    rec->kind = kind;
    const char *v = sp_grpc_call_metadata(call, "x-scope-orgid");
    snprintf(rec->tenant, sizeof(rec->tenant), "%s", v ? v : "");
    v = sp_grpc_call_metadata(call, "x-test");
    snprintf(rec->xtest, sizeof(rec->xtest), "%s", v ? v : "");
    rec->body = malloc(len ? len : 1);
    memcpy(rec->body, msg ? (const void *)msg : "", len);
    rec->len = len;
    uv_update_time(be->loop);
    rec->at_ms = uv_now(be->loop);
  }
  be->n++;
  if (r.status == ST_OK) be->ok++;
  if (r.delay_ms > 0) {
    delayed_t *d = calloc(1, sizeof(*d));
    d->be = be;
    d->call = call;
    d->resp = r;
    uv_timer_init(be->loop, &d->timer);
    d->timer.data = d;
    be->delayed_open++;
    uv_timer_start(&d->timer, delayed_fire, r.delay_ms, 0);
    return;
  }
  answer(call, &r);
}

static void h_traces(sp_grpc_call_t *call, const uint8_t *msg, size_t len, void *ctx) {
  handle(ctx, 0, call, msg, len);
}
static void h_profiles(sp_grpc_call_t *call, const uint8_t *msg, size_t len, void *ctx) {
  handle(ctx, 1, call, msg, len);
}

static void backend_start_on(backend_t *be, uv_loop_t *loop, int port, const sp_tls_config_t *tls) {
  char ep[64];
  snprintf(ep, sizeof(ep), "127.0.0.1:%d", port);
  sp_grpc_method_t m[2] = {
      {"/opentelemetry.proto.collector.trace.v1.TraceService/Export", h_traces, be},
      {"/opentelemetry.proto.collector.profiles.v1development.ProfilesService/Export", h_profiles,
       be}};
  sp_grpc_server_options_t o = {.endpoint = ep,
                                .component = "backend",
                                .tls = tls,
                                .methods = m,
                                .n_methods = 2,
                                .shutdown_timeout_ms = 500};
  be->loop = loop;
  assert_int_equal(sp_grpc_server_create(loop, &o, &be->srv), 0);
  assert_int_equal(sp_grpc_server_start(be->srv), 0);
  be->port = sp_grpc_server_port(be->srv);
}

static void on_flag(void *arg) { *(int *)arg = 1; }
static int flag_set(void *arg) { return *(int *)arg; }
static int no_delayed(void *arg) { return ((backend_t *)arg)->delayed_open == 0; }

static void backend_stop(backend_t *be) {
  if (be->srv == NULL) return;
  assert_int_equal(sp_test_run_until(be->loop, no_delayed, be, 5000), 0);
  int done = 0;
  sp_grpc_server_shutdown(be->srv, on_flag, &done);
  assert_int_equal(sp_test_run_until(be->loop, flag_set, &done, 5000), 0);
  sp_grpc_server_destroy(be->srv);
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

static void exporter_up(fx_t *fx, int port, const char *extra) {
  char yaml[2048];
  snprintf(yaml, sizeof(yaml), "endpoint: 127.0.0.1:%d\n%s", port, extra);
  assert_int_equal(sp_test_exporter_make(&fx->ex, &sp_exporter_otlp, yaml, &fx->host, "otlp/test"),
                   0);
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
  return sp_telemetry_value(fx->host.telemetry, name, "exporter=\"otlp/test\"");
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

/* The recorded message is the exact request sent (an unchanged batch). */
static void check_sent(fx_t *fx, const rec_t *r) {
  for (size_t k = 0; k < fx->n_sent; k++)
    if (fx->sent_len[k] == r->len && memcmp(fx->sent[k], r->body, r->len) == 0) {
      sp_arena_t *a = sp_arena_create(0);
      assert_non_null(
          opentelemetry__proto__collector__trace__v1__export_trace_service_request__unpack(
              sp_arena_pbc(a), r->len, r->body));
      sp_arena_destroy(a);
      return;
    }
  fail_msg("a received request matches nothing that was sent");
}

static const char *g_plain = "tls: {insecure: true}\n";
static const char *g_fast =
    "tls: {insecure: true}\n"
    "retry_on_failure: {initial_interval: 50ms, max_interval: 200ms, randomization_factor: 0}\n";

/* ---- tests ------------------------------------------------------------------- */

static void test_traces_intact_gzip(void **state) {
  fx_t *fx = *state;
  backend_start_on(&fx->be, &fx->loop, 0, NULL);
  exporter_up(fx, fx->be.port,
              "tls: {insecure: true}\nheaders: {x-test: hi}\ntenant_from_metadata: true\n");
  assert_int_equal(send_traces(fx, 7, "tenant-a"), 0);
  assert_int_equal(send_traces(fx, 2, NULL), 0);
  wait_spans(fx, 9, 10000);
  assert_int_equal(metric(fx, "spanprof_exporter_sent_spans_total"), 9);
  assert_int_equal(fx->be.n, 2);
  for (size_t i = 0; i < 2; i++) {
    const rec_t *r = &fx->be.recs[i];
    assert_int_equal(r->kind, 0);
    assert_string_equal(r->xtest, "hi");
    check_sent(fx, r);
    bool first = r->len == fx->sent_len[0] && memcmp(r->body, fx->sent[0], r->len) == 0;
    assert_string_equal(r->tenant, first ? "tenant-a" : "");
  }
}

static void test_traces_uncompressed_and_profiles(void **state) {
  fx_t *fx = *state;
  backend_start_on(&fx->be, &fx->loop, 0, NULL);
  exporter_up(fx, fx->be.port, "tls: {insecure: true}\ncompression: none\n");
  assert_int_equal(send_traces(fx, 4, "t"), 0); /* tenant not forwarded by default */
  assert_int_equal(sp_consume_profiles(fx->ex.comp->input, sp_test_profiles()), 0);
  wait_spans(fx, 4, 10000);
  for (int i = 0; i < 500 && metric(fx, "spanprof_exporter_sent_profiles_total") < 2; i++)
    uv_run(&fx->loop, UV_RUN_ONCE);
  assert_int_equal(metric(fx, "spanprof_exporter_sent_profiles_total"), 2);
  assert_int_equal(fx->be.n, 2);
  for (size_t i = 0; i < 2; i++) {
    const rec_t *r = &fx->be.recs[i];
    assert_string_equal(r->tenant, "");
    if (r->kind == 0) {
      check_sent(fx, r);
      continue;
    }
    sp_arena_t *a = sp_arena_create(0);
    const sp_otlpprofiles_req_t *req =
        opentelemetry__proto__collector__profiles__v1development__export_profiles_service_request__unpack(
            sp_arena_pbc(a), r->len, r->body);
    assert_non_null(req);
    sp_test_check_profiles(req);
    sp_arena_destroy(a);
  }
}

static void test_backend_down_then_up(void **state) {
  fx_t *fx = *state;
  backend_start_on(&fx->be, &fx->loop, 0, NULL);
  int port = fx->be.port;
  backend_stop(&fx->be);
  exporter_up(fx, port, g_fast);
  assert_int_equal(send_traces(fx, 3, NULL), 0);
  assert_int_equal(send_traces(fx, 5, NULL), 0);
  uv_update_time(&fx->loop);
  uint64_t until = uv_now(&fx->loop) + 300;
  while (uv_now(&fx->loop) < until) {
    uv_run(&fx->loop, UV_RUN_ONCE);
    uv_update_time(&fx->loop);
  }
  assert_true(metric(fx, "spanprof_exporter_retries_total") >= 2);
  assert_int_equal(metric(fx, "spanprof_exporter_sent_spans_total"), 0);
  backend_start_on(&fx->be, &fx->loop, port, NULL);
  wait_spans(fx, 8, 10000);
  assert_int_equal(metric(fx, "spanprof_exporter_sent_spans_total"), 8);
  assert_int_equal(metric(fx, "spanprof_exporter_send_failed_spans_total"), 0);
}

static void test_unavailable_retry_info(void **state) {
  fx_t *fx = *state;
  fx->be.script[0] =
      (resp_t){.status = ST_UNAVAILABLE, .message = "overloaded", .retry_after_ms = 1000};
  fx->be.n_script = 1;
  backend_start_on(&fx->be, &fx->loop, 0, NULL);
  exporter_up(fx, fx->be.port, g_fast);
  assert_int_equal(send_traces(fx, 2, NULL), 0);
  wait_spans(fx, 2, 10000);
  assert_int_equal(fx->be.n, 2);
  uint64_t gap = fx->be.recs[1].at_ms - fx->be.recs[0].at_ms;
  assert_true(gap >= 990);
  assert_true(gap < 1600);
  assert_int_equal(metric(fx, "spanprof_exporter_sent_spans_total"), 2);
}

static void test_resource_exhausted(void **state) {
  fx_t *fx = *state;
  /* With RetryInfo: retried. Without: permanent. */
  fx->be.script[0] = (resp_t){.status = ST_RESOURCE_EXHAUSTED, .retry_after_ms = 100};
  fx->be.script[1] = (resp_t){.status = ST_OK};
  fx->be.script[2] = (resp_t){.status = ST_RESOURCE_EXHAUSTED, .message = "quota"};
  fx->be.n_script = 3;
  backend_start_on(&fx->be, &fx->loop, 0, NULL);
  exporter_up(fx, fx->be.port,
              "tls: {insecure: true}\nsending_queue: {num_consumers: 1}\n"
              "retry_on_failure: {initial_interval: 20ms}\n");
  assert_int_equal(send_traces(fx, 2, NULL), 0);
  wait_spans(fx, 2, 10000);
  assert_int_equal(metric(fx, "spanprof_exporter_sent_spans_total"), 2);
  assert_true(fx->be.recs[1].at_ms - fx->be.recs[0].at_ms >= 95);
  assert_int_equal(send_traces(fx, 3, NULL), 0);
  wait_spans(fx, 5, 10000);
  assert_int_equal(metric(fx, "spanprof_exporter_send_failed_spans_total"), 3);
  assert_int_equal(fx->be.n, 3);
}

static void test_invalid_argument_not_retried(void **state) {
  fx_t *fx = *state;
  fx->be.script[0] = (resp_t){.status = ST_INVALID_ARGUMENT, .message = "bad span"};
  fx->be.n_script = 1;
  backend_start_on(&fx->be, &fx->loop, 0, NULL);
  exporter_up(fx, fx->be.port, g_fast);
  assert_int_equal(send_traces(fx, 4, NULL), 0);
  wait_spans(fx, 4, 10000);
  assert_int_equal(metric(fx, "spanprof_exporter_send_failed_spans_total"), 4);
  assert_int_equal(metric(fx, "spanprof_exporter_retries_total"), 0);
  assert_int_equal(fx->be.n, 1);
}

static void test_partial_success(void **state) {
  fx_t *fx = *state;
  Opentelemetry__Proto__Collector__Trace__V1__ExportTracePartialSuccess ps =
      OPENTELEMETRY__PROTO__COLLECTOR__TRACE__V1__EXPORT_TRACE_PARTIAL_SUCCESS__INIT;
  ps.rejected_spans = 3;
  ps.error_message = "3 spans dropped";
  Opentelemetry__Proto__Collector__Trace__V1__ExportTraceServiceResponse resp =
      OPENTELEMETRY__PROTO__COLLECTOR__TRACE__V1__EXPORT_TRACE_SERVICE_RESPONSE__INIT;
  resp.partial_success = &ps;
  uint8_t buf[128];
  size_t n = protobuf_c_message_pack(&resp.base, buf);
  fx->be.script[0] = (resp_t){.status = ST_OK, .resp = buf, .len = n};
  fx->be.n_script = 1;
  backend_start_on(&fx->be, &fx->loop, 0, NULL);
  exporter_up(fx, fx->be.port, g_plain);
  assert_int_equal(send_traces(fx, 10, NULL), 0);
  wait_spans(fx, 10, 10000);
  assert_int_equal(metric(fx, "spanprof_exporter_sent_spans_total"), 7);
  assert_int_equal(metric(fx, "spanprof_exporter_send_failed_spans_total"), 3);
  assert_int_equal(fx->be.n, 1);
}

static void test_deadline_exceeded_retried(void **state) {
  fx_t *fx = *state;
  fx->be.script[0] = (resp_t){.status = ST_OK, .delay_ms = 600};
  fx->be.n_script = 1;
  backend_start_on(&fx->be, &fx->loop, 0, NULL);
  char extra[512];
  snprintf(extra, sizeof(extra), "timeout: 200ms\n%s", g_fast);
  exporter_up(fx, fx->be.port, extra);
  assert_int_equal(send_traces(fx, 3, NULL), 0);
  wait_spans(fx, 3, 10000);
  assert_int_equal(metric(fx, "spanprof_exporter_sent_spans_total"), 3);
  assert_int_equal(fx->be.n, 2);
  uint64_t gap = fx->be.recs[1].at_ms - fx->be.recs[0].at_ms;
  assert_true(gap >= 240);
  assert_true(gap < 600);
}

static void test_queue_full_refuses(void **state) {
  fx_t *fx = *state;
  fx->be.script[0] = (resp_t){.status = ST_OK, .delay_ms = 200};
  fx->be.n_script = 1;
  backend_start_on(&fx->be, &fx->loop, 0, NULL);
  exporter_up(fx, fx->be.port,
              "tls: {insecure: true}\n"
              "sending_queue: {num_consumers: 1, queue_size: 1}\n");
  assert_int_equal(send_traces(fx, 1, NULL), 0);
  assert_int_equal(send_traces(fx, 2, NULL), 0);
  assert_int_equal(send_traces(fx, 3, NULL), SP_EAGAIN);
  assert_int_equal(metric(fx, "spanprof_exporter_enqueue_failed_spans_total"), 3);
  wait_spans(fx, 3, 10000);
  assert_int_equal(metric(fx, "spanprof_exporter_sent_spans_total"), 3);
}

static void test_drain_deadline_cancels(void **state) {
  fx_t *fx = *state;
  fx->be.script[0] = (resp_t){.status = ST_OK, .delay_ms = 1500}; /* the backend hangs */
  fx->be.n_script = 1;
  backend_start_on(&fx->be, &fx->loop, 0, NULL);
  exporter_up(fx, fx->be.port, "tls: {insecure: true}\nsending_queue: {num_consumers: 1}\n");
  assert_int_equal(send_traces(fx, 2, NULL), 0); /* in flight */
  assert_int_equal(send_traces(fx, 3, NULL), 0); /* queued */
  for (int i = 0; i < 1000 && fx->be.n == 0; i++)
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
  exporter_up(fx, fx->be.port, extra);
  assert_int_equal(send_traces(fx, 3, NULL), 0);
  wait_spans(fx, 3, 10000);
  assert_int_equal(metric(fx, "spanprof_exporter_sent_spans_total"), 3);
  sp_test_exporter_stop(&fx->ex, 1000);
  backend_stop(&fx->be);

  stls.client_ca_file = g_certs.ca_cert;
  backend_start_on(&fx->be, &fx->loop, 0, &stls);
  snprintf(extra, sizeof(extra), "tls: {ca_file: \"%s\", cert_file: \"%s\", key_file: \"%s\"}\n",
           g_certs.ca_cert, g_certs.client_cert, g_certs.client_key);
  exporter_up(fx, fx->be.port, extra);
  assert_int_equal(send_traces(fx, 2, NULL), 0);
  wait_spans(fx, 5, 10000);
  assert_int_equal(metric(fx, "spanprof_exporter_sent_spans_total"), 5);
  check_sent(fx, &fx->be.recs[1]);
}

static void test_config_errors(void **state) {
  fx_t *fx = *state;
  sp_test_exporter_t t;
  assert_int_equal(
      sp_test_exporter_make(&t, &sp_exporter_otlp, "compression: gzip\n", &fx->host, "otlp/bad"),
      SP_ECONFIG);
  assert_int_equal(
      sp_test_exporter_make(&t, &sp_exporter_otlp, "endpoint: tempo\n", &fx->host, "otlp/bad"),
      SP_ECONFIG);
  assert_int_equal(sp_test_exporter_make(&t, &sp_exporter_otlp,
                                         "endpoint: tempo:4317\ncompression: zstd\n", &fx->host,
                                         "otlp/bad"),
                   SP_ECONFIG);
  /* Aliases and scheme prefixes. */
  assert_ptr_equal(sp_registry_find(SP_KIND_EXPORTER, "otlp_grpc", 9), &sp_exporter_otlp);
  assert_int_equal(sp_test_exporter_make(&t, &sp_exporter_otlp, "endpoint: http://tempo:4317\n",
                                         &fx->host, "otlp/ok"),
                   0);
  t.def->destroy(t.comp);
  sp_cfg_free(t.def->schema, t.cfg);
  sp_free(t.cfg);
}

static uint64_t g_want_profiles;
static int profiles_done(void *arg) {
  fx_t *fx = arg;
  return metric(fx, "spanprof_exporter_sent_profiles_total") +
             metric(fx, "spanprof_exporter_send_failed_profiles_total") >=
         g_want_profiles;
}

/*
 * Out of memory while the first attempt encodes the profiles must leave
 * nothing behind: the retry encodes again. (It used to keep the per-batch
 * state with an empty body, so the retry sent an empty request that the
 * backend accepted and the profiles were counted as sent.) Each round fails
 * one allocation later than the last, walking the whole encode path.
 */
static void test_profiles_encode_oom_retried(void **state) {
  fx_t *fx = *state;
  backend_start_on(&fx->be, &fx->loop, 0, NULL);
  exporter_up(fx, fx->be.port, g_fast);
  uint64_t accepted = 0;
  for (long n = 0; n < 40; n++) {
    sp_profiles_t *b = sp_test_profiles();
    sp_alloc_set_fail_after(n);
    int rc = sp_consume_profiles(fx->ex.comp->input, b);
    sp_alloc_set_fail_after(-1);
    if (rc != 0) {
      assert_int_equal(rc, SP_EAGAIN);
      continue;
    }
    accepted += 2;
    g_want_profiles = accepted;
    assert_int_equal(sp_test_run_until(&fx->loop, profiles_done, fx, 10000), 0);
  }
  /* Every profile counted as sent arrived in a full request. (A decode that
   * runs out of memory reads as malformed data and is dropped permanently,
   * which is counted as failed, not as sent.) */
  uint64_t sent = metric(fx, "spanprof_exporter_sent_profiles_total");
  assert_true(sent > 0);
  assert_int_equal(sent + metric(fx, "spanprof_exporter_send_failed_profiles_total"), accepted);
  assert_true(fx->be.n <= MAX_REQ);
  assert_int_equal(2 * fx->be.n, sent);
  for (size_t i = 0; i < fx->be.n; i++) {
    const rec_t *r = &fx->be.recs[i];
    assert_int_equal(r->kind, 1);
    sp_arena_t *a = sp_arena_create(0);
    const sp_otlpprofiles_req_t *req =
        opentelemetry__proto__collector__profiles__v1development__export_profiles_service_request__unpack(
            sp_arena_pbc(a), r->len, r->body);
    assert_non_null(req);
    sp_test_check_profiles(req); /* never an empty request */
    sp_arena_destroy(a);
  }
}

int main(void) {
  if (getenv("SP_TEST_LOG") == NULL) sp_log_set_level(SP_LOG_OFF);
  if (sp_testcerts_create(&g_certs) != 0) return 1;
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_traces_intact_gzip, setup, teardown),
      cmocka_unit_test_setup_teardown(test_traces_uncompressed_and_profiles, setup, teardown),
      cmocka_unit_test_setup_teardown(test_backend_down_then_up, setup, teardown),
      cmocka_unit_test_setup_teardown(test_unavailable_retry_info, setup, teardown),
      cmocka_unit_test_setup_teardown(test_resource_exhausted, setup, teardown),
      cmocka_unit_test_setup_teardown(test_invalid_argument_not_retried, setup, teardown),
      cmocka_unit_test_setup_teardown(test_partial_success, setup, teardown),
      cmocka_unit_test_setup_teardown(test_deadline_exceeded_retried, setup, teardown),
      cmocka_unit_test_setup_teardown(test_queue_full_refuses, setup, teardown),
      cmocka_unit_test_setup_teardown(test_drain_deadline_cancels, setup, teardown),
      cmocka_unit_test_setup_teardown(test_tls_and_mtls, setup, teardown),
      cmocka_unit_test_setup_teardown(test_config_errors, setup, teardown),
      cmocka_unit_test_setup_teardown(test_profiles_encode_oom_retried, setup, teardown),
  };
  int rc = cmocka_run_group_tests(tests, NULL, NULL);
  sp_testcerts_destroy(&g_certs);
  return rc;
}
