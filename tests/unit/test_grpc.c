/*
 * test_grpc.c — the gRPC server and client bridges against each other.
 *
 * Every test builds its own loop, server and client, drives the loop until a
 * condition holds (never sleeps), tears everything down and checks that
 * uv_loop_close() returns 0. TLS material (a CA, a server certificate for
 * localhost/127.0.0.1, a client certificate and a client certificate from an
 * untrusted CA) is generated once per run by tests/support/testcerts.
 */
#include "pipeline/alloc.h"
#include "pipeline/error.h"
#include "pipeline/log.h"
#include "pipeline/transport/grpc_client.h"
#include "pipeline/transport/grpc_server.h"
#include "pipeline/transport/grpc_util.h"

#include "support/testcerts.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

/* ---- loop helpers -------------------------------------------------------------- */

static void on_deadline(uv_timer_t *t) { *(int *)t->data = 1; }

/* Runs @p loop until *@p counter >= @p target or @p ms pass; true when reached. */
static bool run_until(uv_loop_t *loop, const int *counter, int target, uint64_t ms) {
  uv_timer_t timer;
  int expired = 0;
  uv_timer_init(loop, &timer);
  timer.data = &expired;
  uv_timer_start(&timer, on_deadline, ms, 0);
  while (*counter < target && !expired)
    uv_run(loop, UV_RUN_ONCE);
  uv_close((uv_handle_t *)&timer, NULL);
  uv_run(loop, UV_RUN_NOWAIT);
  return *counter >= target;
}

static void walk_print(uv_handle_t *h, void *arg) {
  (void)arg;
  fprintf(stderr, "leaked handle: %s active=%d\n", uv_handle_type_name(h->type), uv_is_active(h));
}

static int loop_finish(uv_loop_t *loop) {
  for (int i = 0; i < 10; i++)
    uv_run(loop, UV_RUN_NOWAIT);
  int rc = uv_loop_close(loop);
  if (rc != 0) uv_walk(loop, walk_print, NULL);
  return rc;
}

/* ---- TLS material (tests/support/testcerts) ------------------------------------ */

static sp_testcerts_t certs;
static char *ca_pem = certs.ca_cert, *server_pem = certs.server_cert,
            *server_key = certs.server_key, *client_pem = certs.client_cert,
            *client_key = certs.client_key;

static int group_setup(void **state) {
  (void)state;
  sp_log_set_level(SP_LOG_OFF);
  return sp_testcerts_create(&certs) == 0 ? 0 : -1;
}

static int group_teardown(void **state) {
  (void)state;
  sp_testcerts_destroy(&certs);
  return 0;
}

/* ---- fixture ------------------------------------------------------------------------ */

#define MAX_RESULTS 256

typedef struct {
  int done;
  int status;
  char message[128];
  uint8_t *resp;
  size_t resp_len;
  uint64_t retry_after_ms;
} result_t;

typedef struct tctx_s {
  uv_loop_t loop;
  sp_grpc_server_t *server;
  sp_grpc_client_t *client;
  int n_results;
  result_t results[MAX_RESULTS];
  int handled;
  char orgid[64];
  char peer[64];
  char static_hdr[64];
  sp_grpc_call_t *held;
  uv_timer_t later;
  int later_closed;
  size_t zeros_len; /* the last /Zeros message: its length when all zero */
  int server_down, client_down;
} tctx_t;

static void h_echo(sp_grpc_call_t *call, const uint8_t *msg, size_t len, void *ctx) {
  tctx_t *t = ctx;
  const char *o = sp_grpc_call_metadata(call, "x-scope-orgid");
  const char *s = sp_grpc_call_metadata(call, "x-static");
  snprintf(t->orgid, sizeof(t->orgid), "%s", o ? o : "");
  snprintf(t->static_hdr, sizeof(t->static_hdr), "%s", s ? s : "");
  snprintf(t->peer, sizeof(t->peer), "%s", sp_grpc_call_peer(call));
  t->handled++;
  sp_grpc_respond(call, 0, NULL, msg, len, 0);
}

static void h_busy(sp_grpc_call_t *call, const uint8_t *msg, size_t len, void *ctx) {
  tctx_t *t = ctx;
  t->handled++;
  sp_grpc_respond(call, 14, "busy, come back later", NULL, 0, 1500);
}

static void h_zeros(sp_grpc_call_t *call, const uint8_t *msg, size_t len, void *ctx) {
  tctx_t *t = ctx;
  t->handled++;
  size_t i = 0;
  while (i < len && msg[i] == 0)
    i++;
  t->zeros_len = i == len ? len : (size_t)-1;
  sp_grpc_respond(call, 0, NULL, (const uint8_t *)"ok", 2, 0);
}

static void on_later(uv_timer_t *timer) {
  tctx_t *t = timer->data;
  sp_grpc_call_t *c = t->held;
  t->held = NULL;
  if (c) sp_grpc_respond(c, 0, NULL, (const uint8_t *)"later", 5, 0);
}

static void h_later(sp_grpc_call_t *call, const uint8_t *msg, size_t len, void *ctx) {
  tctx_t *t = ctx;
  t->handled++;
  t->held = call;
  uv_timer_start(&t->later, on_later, 20, 0);
}

static void h_hold(sp_grpc_call_t *call, const uint8_t *msg, size_t len, void *ctx) {
  tctx_t *t = ctx;
  t->handled++;
  t->held = call;
}

/* Looks metadata up once with every allocation failing, then normally. */
static void h_md_oom(sp_grpc_call_t *call, const uint8_t *msg, size_t len, void *ctx) {
  tctx_t *t = ctx;
  t->handled++;
  const char *v = "unset";
  sp_alloc_set_fail_after(0);
  int rc = sp_grpc_call_metadata_get(call, "x-scope-orgid", &v);
  const char *legacy = sp_grpc_call_metadata(call, "x-scope-orgid");
  sp_alloc_set_fail_after(-1);
  assert_int_equal(rc, SP_ENOMEM); /* visible, not a missing key */
  assert_null(v);
  assert_null(legacy);
  assert_int_equal(sp_grpc_call_metadata_get(call, "x-scope-orgid", &v), 0);
  snprintf(t->orgid, sizeof(t->orgid), "%s", v ? v : "");
  assert_int_equal(sp_grpc_call_metadata_get(call, "x-absent", &v), 0);
  assert_null(v);
  assert_int_equal(sp_grpc_call_metadata_get(call, NULL, &v), SP_EINVAL);
  sp_grpc_respond(call, 0, NULL, msg, len, 0);
}

static void on_result(const sp_grpc_client_result_t *res, void *arg) {
  tctx_t *t = arg;
  assert_true(t->n_results < MAX_RESULTS);
  result_t *r = &t->results[t->n_results++];
  r->done = 1;
  r->status = res->status;
  snprintf(r->message, sizeof(r->message), "%s", res->message);
  r->resp_len = res->resp_len;
  r->resp = res->resp_len ? malloc(res->resp_len) : NULL;
  if (r->resp) memcpy(r->resp, res->resp, res->resp_len);
  r->retry_after_ms = res->retry_after_ms;
}

static void on_server_down(void *arg) {
  tctx_t *t = arg;
  t->server_down++;
}

static void on_client_down(void *arg) { ((tctx_t *)arg)->client_down++; }

static void on_later_closed(uv_handle_t *h) { ((tctx_t *)h->data)->later_closed = 1; }

static sp_grpc_method_t *methods(tctx_t *t, size_t *n) {
  static sp_grpc_method_t m[6];
  m[0] = (sp_grpc_method_t){"/test.Echo/Echo", h_echo, t};
  m[1] = (sp_grpc_method_t){"/test.Echo/Busy", h_busy, t};
  m[2] = (sp_grpc_method_t){"/test.Echo/Later", h_later, t};
  m[3] = (sp_grpc_method_t){"/test.Echo/Hold", h_hold, t};
  m[4] = (sp_grpc_method_t){"/test.Echo/Zeros", h_zeros, t};
  m[5] = (sp_grpc_method_t){"/test.Echo/MetadataOom", h_md_oom, t};
  *n = 6;
  return m;
}

static tctx_t *fixture_new(void) {
  tctx_t *t = calloc(1, sizeof(*t));
  assert_non_null(t);
  assert_int_equal(uv_loop_init(&t->loop), 0);
  uv_timer_init(&t->loop, &t->later);
  t->later.data = t;
  return t;
}

static void server_up(tctx_t *t, const sp_tls_config_t *tls, size_t max_recv,
                      uint64_t shutdown_timeout_ms) {
  size_t n;
  sp_grpc_method_t *m = methods(t, &n);
  sp_grpc_server_options_t o = {.endpoint = "127.0.0.1:0",
                                .component = "test/grpc",
                                .max_recv_msg_size = max_recv,
                                .tls = tls,
                                .methods = m,
                                .n_methods = n,
                                .shutdown_timeout_ms = shutdown_timeout_ms};
  assert_int_equal(sp_grpc_server_create(&t->loop, &o, &t->server), 0);
  assert_int_equal(sp_grpc_server_start(t->server), 0);
  assert_true(sp_grpc_server_port(t->server) > 0);
}

static void client_up_to(tctx_t *t, int port, const sp_tls_config_t *tls,
                         sp_grpc_compression_t comp) {
  char target[64];
  snprintf(target, sizeof(target), "127.0.0.1:%d", port);
  static const sp_grpc_metadata_t hdrs[] = {{"X-Static", "s1"}};
  sp_grpc_client_options_t o = {.target = target,
                                .component = "test/grpc-client",
                                .tls = tls,
                                .compression = comp,
                                .headers = hdrs,
                                .n_headers = 1};
  assert_int_equal(sp_grpc_client_create(&t->loop, &o, &t->client), 0);
}

static void client_up(tctx_t *t, const sp_tls_config_t *tls) {
  client_up_to(t, sp_grpc_server_port(t->server), tls, SP_GRPC_COMPRESSION_NONE);
}

static void call(tctx_t *t, const char *method, const void *req, size_t len, uint64_t timeout_ms) {
  static const sp_grpc_metadata_t extra[] = {{"x-scope-orgid", "tenant-a"}};
  assert_int_equal(
      sp_grpc_client_call(t->client, method, req, len, timeout_ms, extra, 1, on_result, t), 0);
}

/* Shuts everything down and checks the loop closes clean. */
static void fixture_end(tctx_t *t) {
  if (t->client) {
    sp_grpc_client_shutdown(t->client, on_client_down, t);
    assert_int_equal(t->client_down, 0); /* never from inside the call */
    assert_true(run_until(&t->loop, &t->client_down, 1, 10000));
    sp_grpc_client_destroy(t->client);
  }
  if (t->server) {
    sp_grpc_server_shutdown(t->server, on_server_down, t);
    assert_true(run_until(&t->loop, &t->server_down, 1, 10000));
    sp_grpc_server_destroy(t->server);
  }
  if (t->held) sp_grpc_respond(t->held, 0, NULL, NULL, 0, 0); /* an orphan: only freed */
  uv_close((uv_handle_t *)&t->later, on_later_closed);
  assert_true(run_until(&t->loop, &t->later_closed, 1, 1000));
  assert_int_equal(loop_finish(&t->loop), 0);
  for (int i = 0; i < t->n_results; i++)
    free(t->results[i].resp);
  free(t);
}

/* ---- tests -------------------------------------------------------------------------- */

static void test_status_details_codec(void **state) {
  (void)state;
  /* The codec allocates through grpc core, which spanprof loads on demand. */
  assert_int_equal(sp__grpc_load("test"), 0);
  const uint64_t v[] = {1, 999, 1000, 1500, 60000, 3600123};
  for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
    grpc_slice s = sp__grpc_status_details_encode(14, "busy", v[i]);
    assert_int_equal(
        sp__grpc_status_details_retry_ms(GRPC_SLICE_START_PTR(s), GRPC_SLICE_LENGTH(s)), v[i]);
    /* Every truncation is malformed or lacks the detail: never a crash. */
    for (size_t cut = 0; cut < GRPC_SLICE_LENGTH(s); cut++)
      (void)sp__grpc_status_details_retry_ms(GRPC_SLICE_START_PTR(s), cut);
    grpc_slice_unref(s);
  }
  grpc_slice s = sp__grpc_status_details_encode(14, NULL, 0);
  assert_int_equal(sp__grpc_status_details_retry_ms(GRPC_SLICE_START_PTR(s), GRPC_SLICE_LENGTH(s)),
                   0);
  grpc_slice_unref(s);
  /* Status{code=14, details=[Any{type_url="x", value=...}]}: not a RetryInfo. */
  const uint8_t other[] = {0x08, 0x0e, 0x1a, 0x07, 0x0a, 0x01, 'x', 0x12, 0x02, 0x0a, 0x00};
  assert_int_equal(sp__grpc_status_details_retry_ms(other, sizeof(other)), 0);
  const uint8_t junk[] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
  assert_int_equal(sp__grpc_status_details_retry_ms(junk, sizeof(junk)), 0);
}

static void test_roundtrip_insecure(void **state) {
  (void)state;
  tctx_t *t = fixture_new();
  server_up(t, NULL, 0, 0);
  client_up(t, NULL);
  call(t, "/test.Echo/Echo", "hello", 5, 5000);
  assert_int_equal(t->n_results, 0); /* never from inside the call */
  assert_true(run_until(&t->loop, &t->n_results, 1, 10000));
  result_t *r = &t->results[0];
  assert_int_equal(r->status, 0);
  assert_int_equal(r->resp_len, 5);
  assert_memory_equal(r->resp, "hello", 5);
  assert_int_equal(r->retry_after_ms, 0);
  assert_string_equal(t->orgid, "tenant-a");
  assert_string_equal(t->static_hdr, "s1");
  assert_true(strncmp(t->peer, "127.0.0.1:", 10) == 0);

  /* Many calls at once, and a 1 MiB message (several slices). */
  uint8_t *big = malloc(1 << 20);
  for (size_t i = 0; i < (1u << 20); i++)
    big[i] = (uint8_t)(i * 7);
  for (int i = 0; i < 100; i++)
    call(t, "/test.Echo/Echo", big, 1000 + (size_t)i, 10000);
  call(t, "/test.Echo/Echo", big, 1 << 20, 10000);
  assert_int_equal(sp_grpc_client_inflight(t->client), 101);
  assert_true(run_until(&t->loop, &t->n_results, 102, 20000));
  for (int i = 1; i < 102; i++) {
    assert_int_equal(t->results[i].status, 0);
    assert_memory_equal(t->results[i].resp, big, t->results[i].resp_len);
  }
  assert_int_equal(t->results[101].resp_len + t->results[1].resp_len > (1u << 20), 1);
  free(big);
  /* An empty request is a valid message too. */
  call(t, "/test.Echo/Echo", NULL, 0, 5000);
  assert_true(run_until(&t->loop, &t->n_results, 103, 10000));
  assert_int_equal(t->results[102].status, 0);
  assert_int_equal(t->results[102].resp_len, 0);
  fixture_end(t);
}

static void test_unimplemented(void **state) {
  (void)state;
  tctx_t *t = fixture_new();
  server_up(t, NULL, 0, 0);
  client_up(t, NULL);
  call(t, "/test.Echo/Nope", "x", 1, 5000);
  assert_true(run_until(&t->loop, &t->n_results, 1, 10000));
  assert_int_equal(t->results[0].status, 12);
  assert_non_null(strstr(t->results[0].message, "/test.Echo/Nope"));
  assert_int_equal(t->handled, 0);
  fixture_end(t);
}

static void test_retry_info(void **state) {
  (void)state;
  tctx_t *t = fixture_new();
  server_up(t, NULL, 0, 0);
  client_up(t, NULL);
  call(t, "/test.Echo/Busy", "x", 1, 5000);
  assert_true(run_until(&t->loop, &t->n_results, 1, 10000));
  result_t *r = &t->results[0];
  assert_int_equal(r->status, 14);
  assert_int_equal(r->retry_after_ms, 1500);
  assert_string_equal(r->message, "busy, come back later");
  sp_grpc_client_result_t res = {.status = 14, .retry_after_ms = 1500};
  assert_int_equal(sp_grpc_client_result_err(&res), SP_EAGAIN);
  res.status = 8;
  assert_int_equal(sp_grpc_client_result_err(&res), SP_EAGAIN);
  res.retry_after_ms = 0;
  assert_int_equal(sp_grpc_client_result_err(&res), SP_EREJECTED);
  res.status = 3;
  assert_int_equal(sp_grpc_client_result_err(&res), SP_EREJECTED);
  res.status = 0;
  assert_int_equal(sp_grpc_client_result_err(&res), 0);
  assert_string_equal(sp_grpc_status_name(14), "UNAVAILABLE");
  assert_string_equal(sp_grpc_status_name(99), "UNKNOWN");
  fixture_end(t);
}

static void test_oversized(void **state) {
  (void)state;
  tctx_t *t = fixture_new();
  server_up(t, NULL, 64 * 1024, 0);
  client_up(t, NULL);
  uint8_t *big = calloc(1, 100 * 1024);
  big[0] = 1;
  call(t, "/test.Echo/Echo", big, 100 * 1024, 5000);
  call(t, "/test.Echo/Echo", big, 1000, 5000);
  assert_true(run_until(&t->loop, &t->n_results, 2, 10000));
  int ok = 0, exhausted = 0;
  for (int i = 0; i < 2; i++) {
    if (t->results[i].status == 0) ok++;
    if (t->results[i].status == 8) exhausted++;
  }
  assert_int_equal(ok, 1);
  assert_int_equal(exhausted, 1);
  assert_int_equal(t->handled, 1);

  /* The client's own send limit fails the call locally. */
  char target[64];
  snprintf(target, sizeof(target), "127.0.0.1:%d", sp_grpc_server_port(t->server));
  sp_grpc_client_options_t o = {.target = target, .max_send_msg_size = 1000};
  sp_grpc_client_t *c2 = NULL;
  assert_int_equal(sp_grpc_client_create(&t->loop, &o, &c2), 0);
  assert_int_equal(
      sp_grpc_client_call(c2, "/test.Echo/Echo", big, 2000, 5000, NULL, 0, on_result, t), 0);
  assert_true(run_until(&t->loop, &t->n_results, 3, 10000));
  assert_int_equal(t->results[2].status, 8);
  assert_int_equal(t->handled, 1);
  sp_grpc_client_shutdown(c2, on_client_down, t);
  assert_true(run_until(&t->loop, &t->client_down, 1, 10000));
  sp_grpc_client_destroy(c2);
  t->client_down = 0;
  free(big);
  fixture_end(t);
}

/* A gzip bomb: small on the wire, over the limit once inflated. */
static void test_oversized_after_inflate(void **state) {
  (void)state;
  tctx_t *t = fixture_new();
  server_up(t, NULL, 64 * 1024, 0);
  client_up_to(t, sp_grpc_server_port(t->server), NULL, SP_GRPC_COMPRESSION_GZIP);
  uint8_t *zeros = calloc(1, 1 << 20);
  call(t, "/test.Echo/Zeros", zeros, 1 << 20, 5000);
  assert_true(run_until(&t->loop, &t->n_results, 1, 10000));
  assert_int_equal(t->results[0].status, 8);
  assert_int_equal(t->handled, 0);
  free(zeros);
  fixture_end(t);
}

/* ---- a byte-counting TCP proxy, to see what goes over the wire ------------------ */

typedef struct proxy_s {
  uv_loop_t *loop;
  uv_tcp_t listener;
  int port, upstream_port;
  size_t up_bytes;
  int open; /* handles open, the listener included */
} proxy_t;

typedef struct pconn_s {
  proxy_t *p;
  uv_tcp_t down, up;
  uv_connect_t creq;
  int closed;
  bool closing;
} pconn_t;

typedef struct {
  uv_write_t req;
  char *buf;
} pwrite_t;

static void p_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf) {
  buf->base = malloc(65536);
  buf->len = 65536;
}

static void p_conn_closed(uv_handle_t *h) {
  pconn_t *c = h->data;
  c->p->open--;
  if (++c->closed == 2) free(c);
}

static void p_close(pconn_t *c) {
  if (c->closing) return;
  c->closing = true;
  uv_close((uv_handle_t *)&c->down, p_conn_closed);
  uv_close((uv_handle_t *)&c->up, p_conn_closed);
}

static void p_written(uv_write_t *req, int status) {
  pwrite_t *w = (pwrite_t *)req;
  free(w->buf);
  free(w);
}

static void p_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf) {
  pconn_t *c = s->data;
  if (n < 0) {
    free(buf->base);
    p_close(c);
    return;
  }
  if (n == 0) {
    free(buf->base);
    return;
  }
  uv_stream_t *to = s == (uv_stream_t *)&c->down ? (uv_stream_t *)&c->up : (uv_stream_t *)&c->down;
  if (to == (uv_stream_t *)&c->up) c->p->up_bytes += (size_t)n;
  pwrite_t *w = malloc(sizeof(*w));
  w->buf = buf->base;
  uv_buf_t b = uv_buf_init(buf->base, (unsigned)n);
  if (uv_write(&w->req, to, &b, 1, p_written) != 0) {
    free(w->buf);
    free(w);
    p_close(c);
  }
}

static void p_connected(uv_connect_t *req, int status) {
  pconn_t *c = req->data;
  if (status != 0 || c->closing) {
    p_close(c);
    return;
  }
  uv_read_start((uv_stream_t *)&c->down, p_alloc, p_read);
  uv_read_start((uv_stream_t *)&c->up, p_alloc, p_read);
}

static void p_accept(uv_stream_t *server, int status) {
  proxy_t *p = server->data;
  pconn_t *c = calloc(1, sizeof(*c));
  c->p = p;
  uv_tcp_init(p->loop, &c->down);
  uv_tcp_init(p->loop, &c->up);
  p->open += 2;
  c->down.data = c->up.data = c->creq.data = c;
  assert_int_equal(uv_accept(server, (uv_stream_t *)&c->down), 0);
  struct sockaddr_in addr;
  uv_ip4_addr("127.0.0.1", p->upstream_port, &addr);
  uv_tcp_connect(&c->creq, &c->up, (const struct sockaddr *)&addr, p_connected);
}

static void p_listener_closed(uv_handle_t *h) { ((proxy_t *)h->data)->open--; }

static void proxy_start(proxy_t *p, uv_loop_t *loop, int upstream_port) {
  memset(p, 0, sizeof(*p));
  p->loop = loop;
  p->upstream_port = upstream_port;
  uv_tcp_init(loop, &p->listener);
  p->listener.data = p;
  p->open = 1;
  struct sockaddr_in addr;
  uv_ip4_addr("127.0.0.1", 0, &addr);
  assert_int_equal(uv_tcp_bind(&p->listener, (const struct sockaddr *)&addr, 0), 0);
  assert_int_equal(uv_listen((uv_stream_t *)&p->listener, 16, p_accept), 0);
  struct sockaddr_storage ss;
  int len = sizeof(ss);
  uv_tcp_getsockname(&p->listener, (struct sockaddr *)&ss, &len);
  p->port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
}

static int proxy_closed(void *arg) { return ((proxy_t *)arg)->open == 0; }

static void test_gzip_request_arrives_decompressed(void **state) {
  (void)state;
  tctx_t *t = fixture_new();
  server_up(t, NULL, 0, 0);
  proxy_t p;
  proxy_start(&p, &t->loop, sp_grpc_server_port(t->server));
  client_up_to(t, p.port, NULL, SP_GRPC_COMPRESSION_GZIP);
  const size_t n = 256 * 1024;
  uint8_t *zeros = calloc(1, n);
  call(t, "/test.Echo/Zeros", zeros, n, 10000);
  assert_true(run_until(&t->loop, &t->n_results, 1, 10000));
  assert_int_equal(t->results[0].status, 0);
  assert_int_equal(t->zeros_len, n);
  /* 256 KiB of zeros deflate to well under 1 KiB; headers and TLS-free
   * framing add a few hundred bytes. */
  assert_true(p.up_bytes < 16 * 1024);
  free(zeros);
  sp_grpc_client_shutdown(t->client, on_client_down, t);
  assert_true(run_until(&t->loop, &t->client_down, 1, 10000));
  sp_grpc_client_destroy(t->client);
  t->client = NULL;
  uv_close((uv_handle_t *)&p.listener, p_listener_closed);
  int closed = 0;
  for (int i = 0; i < 1000 && !closed; i++) {
    uv_run(&t->loop, UV_RUN_ONCE);
    closed = proxy_closed(&p);
  }
  assert_true(closed);
  fixture_end(t);
}

static void test_async_respond(void **state) {
  (void)state;
  tctx_t *t = fixture_new();
  server_up(t, NULL, 0, 0);
  client_up(t, NULL);
  call(t, "/test.Echo/Later", "x", 1, 5000);
  assert_true(run_until(&t->loop, &t->n_results, 1, 10000));
  assert_int_equal(t->results[0].status, 0);
  assert_int_equal(t->results[0].resp_len, 5);
  assert_memory_equal(t->results[0].resp, "later", 5);
  fixture_end(t);
}

static void test_deadline_exceeded(void **state) {
  (void)state;
  tctx_t *t = fixture_new();
  server_up(t, NULL, 0, 0);
  client_up(t, NULL);
  call(t, "/test.Echo/Hold", "x", 1, 100);
  assert_true(run_until(&t->loop, &t->n_results, 1, 10000));
  assert_int_equal(t->results[0].status, 4);
  /* The server's handler still holds the (now cancelled) call: answering
   * it late is harmless. */
  assert_true(run_until(&t->loop, &t->handled, 1, 5000));
  assert_non_null(t->held);
  sp_grpc_respond(t->held, 0, NULL, (const uint8_t *)"late", 4, 0);
  t->held = NULL;
  fixture_end(t);
}

static void test_client_shutdown_cancels_inflight(void **state) {
  (void)state;
  tctx_t *t = fixture_new();
  server_up(t, NULL, 0, 0);
  client_up(t, NULL);
  call(t, "/test.Echo/Hold", "x", 1, 0);
  assert_true(run_until(&t->loop, &t->handled, 1, 10000));
  sp_grpc_client_shutdown(t->client, on_client_down, t);
  sp_grpc_client_shutdown(t->client, on_client_down, t); /* idempotent */
  assert_int_equal(
      sp_grpc_client_call(t->client, "/test.Echo/Echo", NULL, 0, 0, NULL, 0, on_result, t),
      SP_ESHUTDOWN);
  assert_true(run_until(&t->loop, &t->client_down, 1, 10000));
  assert_int_equal(t->n_results, 1);
  assert_int_equal(t->results[0].status, 1); /* CANCELLED */
  assert_int_equal(t->client_down, 1);
  sp_grpc_client_destroy(t->client);
  t->client = NULL;
  sp_grpc_respond(t->held, 0, NULL, NULL, 0, 0);
  t->held = NULL;
  fixture_end(t);
}

static void test_server_shutdown_waits_for_inflight(void **state) {
  (void)state;
  tctx_t *t = fixture_new();
  server_up(t, NULL, 0, 0);
  client_up(t, NULL);
  call(t, "/test.Echo/Hold", "x", 1, 0);
  assert_true(run_until(&t->loop, &t->handled, 1, 10000));
  sp_grpc_server_shutdown(t->server, on_server_down, t);
  /* The handler answers after a timer; shutdown waits for it. */
  uv_timer_start(&t->later, on_later, 30, 0);
  assert_true(run_until(&t->loop, &t->server_down, 1, 10000));
  assert_true(run_until(&t->loop, &t->n_results, 1, 10000));
  assert_int_equal(t->results[0].status, 0);
  assert_memory_equal(t->results[0].resp, "later", 5);
  sp_grpc_server_destroy(t->server);
  t->server = NULL;
  /* New calls now fail (nobody listens). */
  call(t, "/test.Echo/Echo", "x", 1, 2000);
  assert_true(run_until(&t->loop, &t->n_results, 2, 10000));
  assert_int_equal(t->results[1].status, 14);
  fixture_end(t);
}

static void test_server_shutdown_cancels_after_timeout(void **state) {
  (void)state;
  tctx_t *t = fixture_new();
  server_up(t, NULL, 0, 100);
  client_up(t, NULL);
  call(t, "/test.Echo/Hold", "x", 1, 0);
  assert_true(run_until(&t->loop, &t->handled, 1, 10000));
  sp_grpc_server_shutdown(t->server, on_server_down, t);
  assert_int_equal(t->server_down, 0);
  assert_true(run_until(&t->loop, &t->server_down, 1, 10000));
  assert_true(run_until(&t->loop, &t->n_results, 1, 10000));
  assert_int_not_equal(t->results[0].status, 0);
  sp_grpc_server_destroy(t->server);
  t->server = NULL;
  /* The handler answers the orphaned call after the server is gone. */
  assert_non_null(t->held);
  sp_grpc_respond(t->held, 0, NULL, (const uint8_t *)"x", 1, 0);
  t->held = NULL;
  fixture_end(t);
}

/* Runs a call the handler never answers into a server shut down with a bound;
 * @p tighten first shuts down unbounded, then tightens. Returns the ms taken. */
static uint64_t shutdown_held_call_within(uint64_t bound_ms, bool tighten) {
  tctx_t *t = fixture_new();
  server_up(t, NULL, 0, 0); /* shutdown_timeout_ms: the 5 s default */
  client_up(t, NULL);
  call(t, "/test.Echo/Hold", "x", 1, 0);
  assert_true(run_until(&t->loop, &t->handled, 1, 10000));
  uv_update_time(&t->loop);
  uint64_t t0 = uv_now(&t->loop);
  if (tighten) {
    sp_grpc_server_shutdown(t->server, on_server_down, t);
    sp_grpc_server_shutdown_within(t->server, bound_ms, on_server_down, t); /* cb ignored */
    sp_grpc_server_shutdown_within(t->server, 60000, NULL, NULL);           /* never loosens */
  } else {
    sp_grpc_server_shutdown_within(t->server, bound_ms, on_server_down, t);
  }
  assert_int_equal(t->server_down, 0);
  assert_true(run_until(&t->loop, &t->server_down, 1, 10000));
  uv_update_time(&t->loop);
  uint64_t took = uv_now(&t->loop) - t0;
  assert_true(run_until(&t->loop, &t->n_results, 1, 10000));
  assert_int_not_equal(t->results[0].status, 0); /* cancelled, the client may retry */
  assert_int_equal(t->server_down, 1);
  sp_grpc_server_destroy(t->server);
  t->server = NULL;
  assert_non_null(t->held);
  sp_grpc_respond(t->held, 0, NULL, NULL, 0, 0); /* the orphan is only freed */
  t->held = NULL;
  fixture_end(t);
  return took;
}

static void test_server_shutdown_within_bound(void **state) {
  (void)state;
  uint64_t took = shutdown_held_call_within(150, false);
  assert_true(took >= 140 && took < 1500);
  took = shutdown_held_call_within(150, true);
  assert_true(took >= 140 && took < 1500);
}

static void test_metadata_copy_failure_is_visible(void **state) {
  (void)state;
  tctx_t *t = fixture_new();
  server_up(t, NULL, 0, 0);
  client_up(t, NULL);
  call(t, "/test.Echo/MetadataOom", "m", 1, 0);
  assert_true(run_until(&t->loop, &t->n_results, 1, 10000));
  assert_int_equal(t->handled, 1);
  assert_int_equal(t->results[0].status, 0);
  assert_string_equal(t->orgid, "tenant-a"); /* the copy is tried again after a failure */
  fixture_end(t);
}

static void test_tls(void **state) {
  (void)state;
  tctx_t *t = fixture_new();
  sp_tls_config_t stls = {.present = true, .cert_file = server_pem, .key_file = server_key};
  server_up(t, &stls, 0, 0);
  int port = sp_grpc_server_port(t->server);

  /* Verified against our CA, by IP SAN. */
  sp_tls_config_t ctls = {.present = true, .ca_file = ca_pem};
  client_up(t, &ctls);
  call(t, "/test.Echo/Echo", "tls", 3, 5000);
  assert_true(run_until(&t->loop, &t->n_results, 1, 10000));
  assert_int_equal(t->results[0].status, 0);
  assert_memory_equal(t->results[0].resp, "tls", 3);
  assert_string_equal(t->orgid, "tenant-a");

  /* The system roots do not know our CA. */
  sp_tls_config_t sys = {.present = true};
  sp_grpc_client_t *c2 = NULL;
  char target[64];
  snprintf(target, sizeof(target), "127.0.0.1:%d", port);
  sp_grpc_client_options_t o = {.target = target, .tls = &sys};
  assert_int_equal(sp_grpc_client_create(&t->loop, &o, &c2), 0);
  assert_int_equal(sp_grpc_client_call(c2, "/test.Echo/Echo", (const uint8_t *)"x", 1, 5000, NULL,
                                       0, on_result, t),
                   0);
  assert_true(run_until(&t->loop, &t->n_results, 2, 10000));
  assert_int_equal(t->results[1].status, 14);
  sp_grpc_client_shutdown(c2, on_client_down, t);
  t->client_down = 0;
  assert_true(run_until(&t->loop, &t->client_down, 1, 10000));
  sp_grpc_client_destroy(c2);
  t->client_down = 0;

  /* insecure_skip_verify needs no CA. */
  sp_tls_config_t skip = {.present = true, .insecure_skip_verify = true};
  o.tls = &skip;
  assert_int_equal(sp_grpc_client_create(&t->loop, &o, &c2), 0);
  assert_int_equal(sp_grpc_client_call(c2, "/test.Echo/Echo", (const uint8_t *)"y", 1, 5000, NULL,
                                       0, on_result, t),
                   0);
  assert_true(run_until(&t->loop, &t->n_results, 3, 10000));
  assert_int_equal(t->results[2].status, 0);
  sp_grpc_client_shutdown(c2, on_client_down, t);
  assert_true(run_until(&t->loop, &t->client_down, 1, 10000));
  sp_grpc_client_destroy(c2);
  t->client_down = 0;

  /* server_name_override: verify the certificate as "localhost". */
  sp_tls_config_t ovr = {.present = true, .ca_file = ca_pem, .server_name_override = "localhost"};
  o.tls = &ovr;
  assert_int_equal(sp_grpc_client_create(&t->loop, &o, &c2), 0);
  assert_int_equal(sp_grpc_client_call(c2, "/test.Echo/Echo", (const uint8_t *)"z", 1, 5000, NULL,
                                       0, on_result, t),
                   0);
  assert_true(run_until(&t->loop, &t->n_results, 4, 10000));
  assert_int_equal(t->results[3].status, 0);
  sp_grpc_client_shutdown(c2, on_client_down, t);
  assert_true(run_until(&t->loop, &t->client_down, 1, 10000));
  sp_grpc_client_destroy(c2);
  t->client_down = 0;

  /* A plaintext client cannot talk to a TLS server. */
  sp_tls_config_t plain = {.insecure = true};
  o.tls = &plain;
  assert_int_equal(sp_grpc_client_create(&t->loop, &o, &c2), 0);
  assert_int_equal(sp_grpc_client_call(c2, "/test.Echo/Echo", (const uint8_t *)"z", 1, 5000, NULL,
                                       0, on_result, t),
                   0);
  assert_true(run_until(&t->loop, &t->n_results, 5, 10000));
  assert_int_equal(t->results[4].status, 14);
  sp_grpc_client_shutdown(c2, on_client_down, t);
  assert_true(run_until(&t->loop, &t->client_down, 1, 10000));
  sp_grpc_client_destroy(c2);
  t->client_down = 0;
  fixture_end(t);
}

static void test_mtls(void **state) {
  (void)state;
  tctx_t *t = fixture_new();
  sp_tls_config_t stls = {
      .present = true, .cert_file = server_pem, .key_file = server_key, .client_ca_file = ca_pem};
  server_up(t, &stls, 0, 0);

  sp_tls_config_t ctls = {
      .present = true, .ca_file = ca_pem, .cert_file = client_pem, .key_file = client_key};
  client_up(t, &ctls);
  call(t, "/test.Echo/Echo", "mtls", 4, 5000);
  assert_true(run_until(&t->loop, &t->n_results, 1, 10000));
  assert_int_equal(t->results[0].status, 0);

  /* Without a client certificate the handshake fails. */
  sp_tls_config_t nocert = {.present = true, .ca_file = ca_pem};
  char target[64];
  snprintf(target, sizeof(target), "127.0.0.1:%d", sp_grpc_server_port(t->server));
  sp_grpc_client_options_t o = {.target = target, .tls = &nocert};
  sp_grpc_client_t *c2 = NULL;
  assert_int_equal(sp_grpc_client_create(&t->loop, &o, &c2), 0);
  assert_int_equal(sp_grpc_client_call(c2, "/test.Echo/Echo", (const uint8_t *)"x", 1, 5000, NULL,
                                       0, on_result, t),
                   0);
  assert_true(run_until(&t->loop, &t->n_results, 2, 10000));
  assert_int_equal(t->results[1].status, 14);
  sp_grpc_client_shutdown(c2, on_client_down, t);
  assert_true(run_until(&t->loop, &t->client_down, 1, 10000));
  sp_grpc_client_destroy(c2);
  t->client_down = 0;

  /* A client certificate from a CA the server does not trust is refused. */
  sp_tls_config_t rogue = {.present = true,
                           .ca_file = ca_pem,
                           .cert_file = certs.rogue_client_cert,
                           .key_file = certs.rogue_client_key};
  o.tls = &rogue;
  assert_int_equal(sp_grpc_client_create(&t->loop, &o, &c2), 0);
  assert_int_equal(sp_grpc_client_call(c2, "/test.Echo/Echo", (const uint8_t *)"x", 1, 5000, NULL,
                                       0, on_result, t),
                   0);
  assert_true(run_until(&t->loop, &t->n_results, 3, 10000));
  assert_int_equal(t->results[2].status, 14);
  sp_grpc_client_shutdown(c2, on_client_down, t);
  assert_true(run_until(&t->loop, &t->client_down, 1, 10000));
  sp_grpc_client_destroy(c2);
  t->client_down = 0;

  /* With skip_verify and a client certificate (the TLS credentials path). */
  sp_tls_config_t skip = {.present = true,
                          .insecure_skip_verify = true,
                          .cert_file = client_pem,
                          .key_file = client_key};
  o.tls = &skip;
  assert_int_equal(sp_grpc_client_create(&t->loop, &o, &c2), 0);
  assert_int_equal(sp_grpc_client_call(c2, "/test.Echo/Echo", (const uint8_t *)"x", 1, 5000, NULL,
                                       0, on_result, t),
                   0);
  assert_true(run_until(&t->loop, &t->n_results, 4, 10000));
  assert_int_equal(t->results[3].status, 0);
  sp_grpc_client_shutdown(c2, on_client_down, t);
  assert_true(run_until(&t->loop, &t->client_down, 1, 10000));
  sp_grpc_client_destroy(c2);
  t->client_down = 0;
  fixture_end(t);
}

static void test_lifecycle_and_errors(void **state) {
  (void)state;
  tctx_t *t = fixture_new();
  size_t n;
  sp_grpc_method_t *m = methods(t, &n);
  sp_grpc_server_t *s = NULL;
  sp_grpc_server_options_t o = {.endpoint = "nonsense", .methods = m, .n_methods = n};
  assert_int_equal(sp_grpc_server_create(&t->loop, &o, &s), SP_EINVAL);
  assert_null(s);
  o.endpoint = "127.0.0.1:99999";
  assert_int_equal(sp_grpc_server_create(&t->loop, &o, &s), SP_EINVAL);

  /* TLS problems are configuration errors found at create. */
  o.endpoint = "127.0.0.1:0";
  sp_tls_config_t bad = {.present = true, .cert_file = "/nonexistent.pem", .key_file = server_key};
  o.tls = &bad;
  assert_int_equal(sp_grpc_server_create(&t->loop, &o, &s), SP_ECONFIG);
  sp_tls_config_t v13 = {
      .present = true, .cert_file = server_pem, .key_file = server_key, .min_version = "1.3"};
  o.tls = &v13;
  assert_int_equal(sp_grpc_server_create(&t->loop, &o, &s), SP_ECONFIG);
  o.tls = NULL;

  /* Shutdown without start: the callback still comes, later. */
  assert_int_equal(sp_grpc_server_create(&t->loop, &o, &s), 0);
  sp_grpc_server_shutdown(s, on_server_down, t);
  sp_grpc_server_shutdown(s, on_server_down, t);
  assert_int_equal(t->server_down, 0);
  assert_true(run_until(&t->loop, &t->server_down, 1, 5000));
  assert_int_equal(sp_grpc_server_start(s), SP_ESTATE);
  sp_grpc_server_destroy(s);
  /* Destroy without start or shutdown. */
  assert_int_equal(sp_grpc_server_create(&t->loop, &o, &s), 0);
  sp_grpc_server_destroy(s);
  sp_grpc_server_destroy(NULL);

  /* A busy port is refused. */
  server_up(t, NULL, 0, 0);
  char ep[64];
  snprintf(ep, sizeof(ep), "127.0.0.1:%d", sp_grpc_server_port(t->server));
  o.endpoint = ep;
  assert_int_equal(sp_grpc_server_create(&t->loop, &o, &s), 0);
  assert_int_equal(sp_grpc_server_start(s), SP_EADDRINUSE);
  t->server_down = 0;
  sp_grpc_server_shutdown(s, on_server_down, t);
  assert_true(run_until(&t->loop, &t->server_down, 1, 5000));
  sp_grpc_server_destroy(s);
  t->server_down = 0;

  /* Client argument errors never call back. */
  sp_grpc_client_t *c = NULL;
  sp_grpc_client_options_t co = {.target = NULL};
  assert_int_equal(sp_grpc_client_create(&t->loop, &co, &c), SP_EINVAL);
  sp_tls_config_t half = {.present = true, .cert_file = client_pem};
  co.target = "127.0.0.1:1";
  co.tls = &half;
  assert_int_equal(sp_grpc_client_create(&t->loop, &co, &c), SP_ECONFIG);
  assert_null(c);
  client_up(t, NULL);
  assert_int_equal(sp_grpc_client_call(t->client, "no-slash", NULL, 0, 0, NULL, 0, on_result, t),
                   SP_EINVAL);
  assert_int_equal(sp_grpc_client_call(t->client, "/a/b", NULL, 0, 0, NULL, 0, NULL, t), SP_EINVAL);
  sp_grpc_client_destroy(NULL);
  assert_int_equal(t->n_results, 0);
  fixture_end(t);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_status_details_codec),
      cmocka_unit_test(test_roundtrip_insecure),
      cmocka_unit_test(test_unimplemented),
      cmocka_unit_test(test_retry_info),
      cmocka_unit_test(test_oversized),
      cmocka_unit_test(test_oversized_after_inflate),
      cmocka_unit_test(test_gzip_request_arrives_decompressed),
      cmocka_unit_test(test_async_respond),
      cmocka_unit_test(test_deadline_exceeded),
      cmocka_unit_test(test_client_shutdown_cancels_inflight),
      cmocka_unit_test(test_server_shutdown_waits_for_inflight),
      cmocka_unit_test(test_server_shutdown_cancels_after_timeout),
      cmocka_unit_test(test_server_shutdown_within_bound),
      cmocka_unit_test(test_metadata_copy_failure_is_visible),
      cmocka_unit_test(test_tls),
      cmocka_unit_test(test_mtls),
      cmocka_unit_test(test_lifecycle_and_errors),
  };
  return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
