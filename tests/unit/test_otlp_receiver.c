/*
 * test_otlp_receiver.c — the otlp receiver's answers, from the sender's
 * side, over both transports: accepted data reaches the pipeline with the
 * tenant; a full pipeline is refused retryably (gRPC UNAVAILABLE with
 * RetryInfo, HTTP 503 + Retry-After); wrong-length IDs are INVALID_ARGUMENT /
 * 400 naming the field; all-zero IDs are dropped and reported as partial
 * success; oversized gRPC messages get RESOURCE_EXHAUSTED; an empty request
 * succeeds. The gRPC client is our own (pipeline/transport/grpc_client.h);
 * HTTP uses libcurl.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "pipeline/alloc.h"
#include "pipeline/batch.h"
#include "pipeline/component.h"
#include "pipeline/config.h"
#include "pipeline/error.h"
#include "pipeline/log.h"
#include "pipeline/transport/grpc_client.h"
#include "receivers/otlp/otlp.h"
#include "support/loop_util.h"
#include "support/sink.h"

#include <curl/curl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

extern const sp_component_def_t sp_receiver_otlp;

#define TRACE_METHOD "/opentelemetry.proto.collector.trace.v1.TraceService/Export"

typedef struct fx_s {
  uv_loop_t loop;
  sp_host_t host;
  sp_telemetry_t *tel;
  sp_config_doc_t *doc;
  void *cfg;
  sp_component_t *recv;
  sp_sink_t sink;
  sp_grpc_client_t *client;
  int grpc_port, http_port;
} fx_t;

/* Encodes a request of @p n spans; @p id_len sets span 0's span_id length, @p zero makes it all zero. */
static uint8_t *request(size_t n, size_t id_len, int zero, size_t pad, size_t *len) {
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
  ss.spans = sp_arena_calloc(a, n * sizeof(void *));
  char *name = sp_arena_calloc(a, pad + 4);
  memset(name, 'x', pad + 3);
  for (size_t i = 0; i < n; i++) {
    sp_otlp_span_t *s = sp_arena_calloc(a, sizeof(*s));
    opentelemetry__proto__trace__v1__span__init(s);
    uint8_t *tid = sp_arena_calloc(a, 16), *sid = sp_arena_calloc(a, 8);
    tid[0] = 1;
    sid[0] = (uint8_t)(i + 1);
    if (i == 0 && zero)
      sid[0] = 0;
    s->trace_id = (ProtobufCBinaryData){16, tid};
    s->span_id = (ProtobufCBinaryData){i == 0 && id_len ? id_len : 8, sid};
    s->name = name;
    ss.spans[i] = s;
  }
  *len = protobuf_c_message_get_packed_size(&req.base);
  uint8_t *buf = sp_malloc(*len + 1);
  protobuf_c_message_pack(&req.base, buf);
  sp_arena_destroy(a);
  return buf;
}

static void fx_start(fx_t *f) {
  memset(f, 0, sizeof(*f));
  uv_loop_init(&f->loop);
  f->tel = sp_telemetry_create();
  f->host.loop = &f->loop;
  f->host.telemetry = f->tel;
  const char *y = "protocols:\n  grpc:\n    endpoint: 127.0.0.1:0\n    max_recv_msg_size_mib: 1\n"
                  "  http:\n    endpoint: 127.0.0.1:0\n";
  sp_errors_t errs = {0};
  assert_int_equal(sp_config_load_string("t", y, strlen(y), &f->doc, &errs), 0);
  f->cfg = sp_calloc(1, sp_receiver_otlp.config_size);
  assert_int_equal(sp_cfg_decode(sp_receiver_otlp.schema, f->doc->root, "otlp", NULL, f->cfg, &errs), 0);
  sp_sink_init(&f->sink);
  sp_create_settings_t set = {.host = &f->host, .id = "otlp", .next_traces = &f->sink.consumer,
                              .next_profiles = &f->sink.consumer};
  assert_int_equal(sp_receiver_otlp.create(&set, f->cfg, &f->recv), 0);
  f->recv->def = &sp_receiver_otlp;
  f->recv->host = &f->host;
  f->recv->id = "otlp";
  assert_int_equal(sp_receiver_otlp.start(f->recv), 0);
  f->grpc_port = sp_grpc_server_port(((sp_otlp_t *)f->recv)->grpc);
  f->http_port = sp_http_server_port(((sp_otlp_t *)f->recv)->http);
  char target[64];
  snprintf(target, sizeof(target), "127.0.0.1:%d", f->grpc_port);
  sp_grpc_client_options_t co = {.target = target, .component = "test"};
  assert_int_equal(sp_grpc_client_create(&f->loop, &co, &f->client), 0);
}

static void on_done(void *arg) { (*(int *)arg)++; }
static int flag(void *arg) { return *(int *)arg; }
static int both(void *arg) { return *(int *)arg >= 2; }

static void fx_stop(fx_t *f) {
  int done = 0;
  sp_grpc_client_shutdown(f->client, on_done, &done);
  sp_receiver_otlp.shutdown(f->recv, on_done, &done);
  assert_int_equal(sp_test_run_until(&f->loop, both, &done, 5000), 0);
  sp_grpc_client_destroy(f->client);
  sp_receiver_otlp.destroy(f->recv);
  sp_sink_free(&f->sink);
  sp_cfg_free(sp_receiver_otlp.schema, f->cfg);
  sp_free(f->cfg);
  sp_config_doc_free(f->doc);
  assert_int_equal(sp_test_loop_finish(&f->loop, 2000), 0);
  sp_telemetry_destroy(f->tel);
}

/* ---- gRPC ------------------------------------------------------------------------ */

typedef struct call_s {
  int done;
  int status;
  char message[512];
  uint64_t retry_after_ms;
  int64_t rejected;
  char partial[256];
} call_t;

static void on_call(const sp_grpc_client_result_t *res, void *arg) {
  call_t *c = arg;
  c->status = res->status;
  snprintf(c->message, sizeof(c->message), "%s", res->message ? res->message : "");
  c->retry_after_ms = res->retry_after_ms;
  if (res->status == 0 && res->resp_len > 0) {
    Opentelemetry__Proto__Collector__Trace__V1__ExportTraceServiceResponse *r =
        opentelemetry__proto__collector__trace__v1__export_trace_service_response__unpack(NULL, res->resp_len, res->resp);
    if (r != NULL && r->partial_success != NULL) {
      c->rejected = r->partial_success->rejected_spans;
      snprintf(c->partial, sizeof(c->partial), "%s", r->partial_success->error_message);
    }
    protobuf_c_message_free_unpacked(&r->base, NULL);
  }
  c->done = 1;
}

static call_t grpc_export(fx_t *f, const uint8_t *body, size_t len, const char *tenant) {
  call_t c = {0};
  sp_grpc_metadata_t md[] = {{"x-scope-orgid", tenant}};
  assert_int_equal(sp_grpc_client_call(f->client, TRACE_METHOD, body, len, 5000, md, tenant ? 1 : 0,
                                       on_call, &c),
                   0);
  assert_int_equal(sp_test_run_until(&f->loop, flag, &c.done, 10000), 0);
  return c;
}

static void test_grpc_answers(void **state) {
  (void)state;
  fx_t f;
  fx_start(&f);
  size_t len;
  uint8_t *body = request(3, 0, 0, 0, &len);

  call_t c = grpc_export(&f, body, len, "team-a");
  assert_int_equal(c.status, 0);
  assert_int_equal(f.sink.n_traces, 1);
  assert_int_equal(f.sink.traces[0]->span_count, 3);
  assert_string_equal(f.sink.traces[0]->meta.tenant, "team-a");
  assert_int_equal(sp_telemetry_value(f.tel, "spanprof_receiver_accepted_spans_total",
                                      "receiver=\"otlp\",transport=\"grpc\""),
                   3);

  f.sink.result = SP_EAGAIN; /* the pipeline is full */
  c = grpc_export(&f, body, len, NULL);
  assert_int_equal(c.status, 14);
  assert_int_equal(c.retry_after_ms, 1000);
  assert_int_equal(sp_telemetry_value(f.tel, "spanprof_receiver_refused_spans_total",
                                      "receiver=\"otlp\",transport=\"grpc\""),
                   3);
  f.sink.result = 0;
  sp_free(body);

  body = request(2, 5, 0, 0, &len);
  c = grpc_export(&f, body, len, NULL);
  assert_int_equal(c.status, 3);
  assert_non_null(strstr(c.message, "span_id must be 8 bytes, got 5"));
  sp_free(body);

  body = request(4, 0, 1, 0, &len);
  c = grpc_export(&f, body, len, NULL);
  assert_int_equal(c.status, 0);
  assert_int_equal(c.rejected, 1);
  assert_non_null(strstr(c.partial, "1 span(s) rejected"));
  assert_int_equal(f.sink.traces[f.sink.n_traces - 1]->span_count, 3);
  sp_free(body);

  body = request(1, 0, 0, 2 << 20, &len); /* over max_recv_msg_size_mib: 1 */
  c = grpc_export(&f, body, len, NULL);
  assert_int_equal(c.status, 8);
  sp_free(body);

  size_t before = f.sink.n_traces;
  c = grpc_export(&f, (const uint8_t *)"", 0, NULL); /* empty request */
  assert_int_equal(c.status, 0);
  assert_int_equal(f.sink.n_traces, before);
  fx_stop(&f);
}

/* ---- HTTP -------------------------------------------------------------------------- */

typedef struct post_s {
  char url[128];
  const void *body;
  size_t len;
  const char *ctype;
  long status;
  char retry_after[32];
  char reply[2048];
  size_t reply_len;
  atomic_int done;
} post_t;

static size_t on_body(char *p, size_t sz, size_t n, void *arg) {
  post_t *pt = arg;
  size_t k = sz * n;
  if (pt->reply_len + k < sizeof(pt->reply)) {
    memcpy(pt->reply + pt->reply_len, p, k);
    pt->reply_len += k;
  }
  return k;
}

static size_t on_header(char *p, size_t sz, size_t n, void *arg) {
  post_t *pt = arg;
  if (strncasecmp(p, "Retry-After:", 12) == 0)
    sscanf(p + 12, " %31s", pt->retry_after);
  return sz * n;
}

static void *post_thread(void *arg) {
  post_t *pt = arg;
  CURL *c = curl_easy_init();
  char ct[128];
  snprintf(ct, sizeof(ct), "Content-Type: %s", pt->ctype);
  struct curl_slist *h = curl_slist_append(NULL, ct);
  h = curl_slist_append(h, "X-Scope-OrgID: team-h");
  curl_easy_setopt(c, CURLOPT_URL, pt->url);
  curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
  curl_easy_setopt(c, CURLOPT_POSTFIELDS, pt->body);
  curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, (long)pt->len);
  curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
  curl_easy_setopt(c, CURLOPT_WRITEDATA, pt);
  curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
  curl_easy_setopt(c, CURLOPT_HEADERDATA, pt);
  curl_easy_setopt(c, CURLOPT_TIMEOUT, 10L);
  if (curl_easy_perform(c) == CURLE_OK)
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &pt->status);
  curl_slist_free_all(h);
  curl_easy_cleanup(c);
  atomic_store(&pt->done, 1);
  return NULL;
}

static int post_done(void *arg) { return atomic_load(&((post_t *)arg)->done); }

static void http_post(fx_t *f, post_t *pt, const char *ctype, const void *body, size_t len) {
  memset(pt, 0, sizeof(*pt));
  snprintf(pt->url, sizeof(pt->url), "http://127.0.0.1:%d/v1/traces", f->http_port);
  pt->ctype = ctype;
  pt->body = body;
  pt->len = len;
  pthread_t th;
  pthread_create(&th, NULL, post_thread, pt);
  assert_int_equal(sp_test_run_until(&f->loop, post_done, pt, 10000), 0);
  pthread_join(th, NULL);
}

static void test_http_answers(void **state) {
  (void)state;
  fx_t f;
  fx_start(&f);
  post_t pt;
  size_t len;
  uint8_t *body = request(2, 0, 0, 0, &len);
  http_post(&f, &pt, "application/x-protobuf", body, len);
  assert_int_equal(pt.status, 200);
  assert_int_equal(pt.reply_len, 0); /* an empty ExportTraceServiceResponse */
  assert_string_equal(f.sink.traces[0]->meta.tenant, "team-h");

  f.sink.result = SP_EAGAIN;
  http_post(&f, &pt, "application/x-protobuf", body, len);
  assert_int_equal(pt.status, 503);
  assert_string_equal(pt.retry_after, "1");
  f.sink.result = 0;
  sp_free(body);

  /* JSON with one all-zero span ID: 200 with partial_success, answered in JSON. */
  const char *json =
      "{\"resourceSpans\":[{\"scopeSpans\":[{\"spans\":["
      "{\"traceId\":\"5b8efff798038103d269b633813fc60c\",\"spanId\":\"0000000000000000\",\"name\":\"a\"},"
      "{\"traceId\":\"5b8efff798038103d269b633813fc60c\",\"spanId\":\"eee19b7ec3c1b174\",\"name\":\"b\"}]}]}]}";
  http_post(&f, &pt, "application/json", json, strlen(json));
  assert_int_equal(pt.status, 200);
  pt.reply[pt.reply_len] = '\0';
  assert_non_null(strstr(pt.reply, "\"partialSuccess\":{\"rejectedSpans\":\"1\""));
  assert_int_equal(f.sink.traces[f.sink.n_traces - 1]->span_count, 1);
  fx_stop(&f);
}

int main(void) {
  sp_log_set_level(SP_LOG_ERROR);
  curl_global_init(CURL_GLOBAL_DEFAULT);
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_grpc_answers),
      cmocka_unit_test(test_http_answers),
  };
  int rc = cmocka_run_group_tests(tests, NULL, NULL);
  curl_global_cleanup();
  return rc;
}
