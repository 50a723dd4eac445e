/*
 * test_http_server.c — the HTTP/1.1 server against real clients.
 *
 * libcurl (easy and multi API) runs in a client thread while the test runs
 * the server's loop on the main thread until the client is done. Tests that
 * need exact bytes on the wire (half-sent headers, pipelining, malformed
 * requests) use a raw socket from the main thread, read without blocking
 * inside the loop-condition callback. Every test ends with uv_loop_close()
 * returning 0: no handle may leak.
 */
#include "pipeline/alloc.h"
#include "pipeline/compress.h"
#include "pipeline/error.h"
#include "pipeline/log.h"
#include "pipeline/transport/http_server.h"
#include "pipeline/transport/tls_conn.h"
#include "support/loop_util.h"
#include "support/testcerts.h"

#include <arpa/inet.h>
#include <curl/curl.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#define MAX_HELD 512
#define MB ((size_t)1024 * 1024)

/* --- fixture ------------------------------------------------------------- */

typedef enum { MODE_ECHO, MODE_ASYNC, MODE_HOLD, MODE_TAKE } handler_mode_t;

typedef struct fixture_s {
  uv_loop_t loop;
  sp_http_server_t *srv;
  int port;
  handler_mode_t mode;
  uint64_t delay_ms;     /* MODE_ASYNC */
  int hold_target;       /* MODE_HOLD: answer all once this many are held (0: never) */
  int handled;           /* requests seen by the handler */
  int last_error_status; /* of the last request seen */
  char last_error[256];
  size_t last_body_len, last_wire_len;
  sp_http_request_t *held[MAX_HELD];
  int n_held;
  int shutdown_calls;
} fixture_t;

static fixture_t fx;
static sp_testcerts_t certs;

static uint32_t fnv1a(const void *p, size_t n) {
  const uint8_t *b = p;
  uint32_t h = 2166136261u;
  for (size_t i = 0; i < n; i++)
    h = (h ^ b[i]) * 16777619u;
  return h;
}

/* The echo body: what the server decoded (@p data, @p len), so the client can check it. */
static void answer_body(sp_http_request_t *req, const uint8_t *data, size_t len) {
  char body[512];
  const char *echo = sp_http_request_header(req, "x-echo");
  int n = snprintf(body, sizeof body, "%s %s q=%s len=%zu wire=%zu sum=%08x err=%d echo=%s%s%s",
                   req->method, req->path, req->query, len, req->wire_len, fnv1a(data, len),
                   req->error_status, echo ? echo : "-", req->error_message ? " msg=" : "",
                   req->error_message ? req->error_message : "");
  int status = req->error_status ? req->error_status : 200;
  sp_http_header_t extra[] = {{"X-Test", "yes"}};
  sp_http_respond(req, status, "text/plain", body, (size_t)n, extra, 1);
}

static void answer(sp_http_request_t *req) { answer_body(req, req->body, req->body_len); }

/* MODE_TAKE: the handler owns the body's storage, as a receiver keeping the bytes does. */
static void answer_taken(sp_http_request_t *req) {
  size_t want = req->body_len, n = 12345;
  uint8_t *b = sp_http_request_take_body(req, &n);
  assert_int_equal(n, want);
  assert_true((b == NULL) == (want == 0));
  assert_null(req->body);
  assert_int_equal(req->body_len, 0);
  answer_body(req, b, n);
  sp_free(b);
}

typedef struct delayed_s {
  uv_timer_t timer;
  sp_http_request_t *req;
} delayed_t;

static void on_delayed_closed(uv_handle_t *h) { free(h->data); }

static void on_delayed(uv_timer_t *t) {
  delayed_t *d = t->data;
  answer(d->req);
  uv_close((uv_handle_t *)&d->timer, on_delayed_closed);
}

static void release_held(void) {
  for (int i = 0; i < fx.n_held; i++)
    answer(fx.held[i]);
  fx.n_held = 0;
}

static void handler(sp_http_request_t *req, void *ctx) {
  assert_ptr_equal(ctx, &fx);
  fx.handled++;
  fx.last_error_status = req->error_status;
  snprintf(fx.last_error, sizeof fx.last_error, "%s", req->error_message ? req->error_message : "");
  fx.last_body_len = req->body_len;
  fx.last_wire_len = req->wire_len;
  assert_non_null(req->remote_addr);
  assert_non_null(req->path);
  assert_non_null(req->query);
  switch (fx.mode) {
  case MODE_ECHO: answer(req); break;
  case MODE_TAKE: answer_taken(req); break;
  case MODE_ASYNC: {
    delayed_t *d = calloc(1, sizeof *d);
    d->req = req;
    uv_timer_init(&fx.loop, &d->timer);
    d->timer.data = d;
    uv_timer_start(&d->timer, on_delayed, fx.delay_ms, 0);
    break;
  }
  case MODE_HOLD:
    assert_true(fx.n_held < MAX_HELD);
    fx.held[fx.n_held++] = req;
    if (fx.hold_target && fx.n_held >= fx.hold_target) release_held();
    break;
  }
}

static sp_http_server_options_t default_opts(void) {
  sp_http_server_options_t o;
  memset(&o, 0, sizeof o);
  o.endpoint = "127.0.0.1:0";
  o.component = "test";
  o.max_body_size = 4 * MB;
  o.handler = handler;
  o.handler_ctx = &fx;
  return o;
}

static void start_server(const sp_http_server_options_t *o) {
  assert_int_equal(sp_http_server_create(&fx.loop, o, &fx.srv), 0);
  assert_int_equal(sp_http_server_start(fx.srv), 0);
  fx.port = sp_http_server_port(fx.srv);
  assert_true(fx.port > 0);
}

static void on_shutdown(void *arg) {
  assert_ptr_equal(arg, &fx);
  fx.shutdown_calls++;
}

static int shutdown_called(void *arg) {
  (void)arg;
  return fx.shutdown_calls > 0;
}

static void on_flag(void *arg) { *(int *)arg = 1; }

static int flag_set(void *arg) { return *(int *)arg; }

static int setup(void **state) {
  (void)state;
  memset(&fx, 0, sizeof fx);
  assert_int_equal(uv_loop_init(&fx.loop), 0);
  return 0;
}

static int teardown(void **state) {
  (void)state;
  if (fx.srv) {
    release_held();
    fx.shutdown_calls = 0;
    sp_http_server_shutdown(fx.srv, on_shutdown, &fx);
    assert_int_equal(fx.shutdown_calls, 0); /* never from inside the call */
    assert_int_equal(sp_test_run_until(&fx.loop, shutdown_called, NULL, 5000), 0);
    assert_int_equal(fx.shutdown_calls, 1);
    sp_http_server_destroy(fx.srv);
    fx.srv = NULL;
  }
  assert_int_equal(sp_test_loop_finish(&fx.loop, 5000), 0);
  return 0;
}

/* --- client thread --------------------------------------------------------- */

typedef struct client_s {
  void (*fn)(void *arg);
  void *arg;
  atomic_int done;
  pthread_t th;
} client_t;

static void *client_main(void *p) {
  client_t *c = p;
  c->fn(c->arg);
  atomic_store(&c->done, 1);
  return NULL;
}

static int client_done(void *p) { return atomic_load(&((client_t *)p)->done); }

static void client_start(client_t *c, void (*fn)(void *), void *arg) {
  memset(c, 0, sizeof *c);
  c->fn = fn;
  c->arg = arg;
  assert_int_equal(pthread_create(&c->th, NULL, client_main, c), 0);
}

static void client_wait(client_t *c, uint64_t timeout_ms) {
  int rc = sp_test_run_until(&fx.loop, client_done, c, timeout_ms);
  if (rc) {
    /* Keep serving so the client's own timeouts end it, then fail. */
    sp_test_run_until(&fx.loop, client_done, c, 15000);
  }
  pthread_join(c->th, NULL);
  assert_int_equal(rc, 0);
}

static void run_client(void (*fn)(void *), void *arg) {
  client_t c;
  client_start(&c, fn, arg);
  client_wait(&c, 10000);
}

/* --- curl helpers (client thread) ------------------------------------------ */

typedef struct result_s {
  CURLcode rc;
  long status;
  long connects;
  char body[2048];
  size_t body_len;
  char headers[4096];
  size_t headers_len;
} result_t;

static size_t on_body(char *p, size_t size, size_t n, void *ud) {
  result_t *r = ud;
  size_t len = size * n, room = sizeof r->body - 1 - r->body_len;
  memcpy(r->body + r->body_len, p, len < room ? len : room);
  r->body_len += len < room ? len : room;
  r->body[r->body_len] = '\0';
  return len;
}

static size_t on_header(char *p, size_t size, size_t n, void *ud) {
  result_t *r = ud;
  size_t len = size * n, room = sizeof r->headers - 1 - r->headers_len;
  memcpy(r->headers + r->headers_len, p, len < room ? len : room);
  r->headers_len += len < room ? len : room;
  r->headers[r->headers_len] = '\0';
  return len;
}

typedef struct request_s {
  const char *method; /* NULL: POST when body, else GET */
  const char *path;
  const void *body;
  size_t len;
  const char *headers[8]; /* NULL-terminated */
  bool chunked;           /* stream the body with Transfer-Encoding: chunked */
  bool tls;
  const char *cert, *key; /* client certificate */
} request_t;

typedef struct reader_s {
  const uint8_t *p;
  size_t left;
  size_t piece;
} reader_t;

static size_t on_read_body(char *dst, size_t size, size_t n, void *ud) {
  reader_t *r = ud;
  size_t k = size * n;
  if (k > r->left) k = r->left;
  if (k > r->piece) k = r->piece;
  memcpy(dst, r->p, k);
  r->p += k;
  r->left -= k;
  return k;
}

static void curl_setup(CURL *h, const request_t *q, result_t *r, struct curl_slist **hl,
                       reader_t *rd, char *url, size_t url_cap) {
  memset(r, 0, sizeof *r);
  snprintf(url, url_cap, "%s://127.0.0.1:%d%s", q->tls ? "https" : "http", fx.port,
           q->path ? q->path : "/");
  curl_easy_setopt(h, CURLOPT_URL, url);
  curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
  curl_easy_setopt(h, CURLOPT_WRITEDATA, r);
  curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
  curl_easy_setopt(h, CURLOPT_HEADERDATA, r);
  curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, 8000L);
  curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
  *hl = NULL;
  for (int i = 0; q->headers[i]; i++)
    *hl = curl_slist_append(*hl, q->headers[i]);
  if (q->chunked) *hl = curl_slist_append(*hl, "Transfer-Encoding: chunked");
  curl_easy_setopt(h, CURLOPT_HTTPHEADER, *hl);
  if (q->body || q->chunked) {
    curl_easy_setopt(h, CURLOPT_POST, 1L);
    if (q->chunked) {
      rd->p = q->body;
      rd->left = q->len;
      rd->piece = 100000;
      curl_easy_setopt(h, CURLOPT_READFUNCTION, on_read_body);
      curl_easy_setopt(h, CURLOPT_READDATA, rd);
    } else {
      curl_easy_setopt(h, CURLOPT_POSTFIELDS, q->body);
      curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)q->len);
    }
  } else {
    curl_easy_setopt(h, CURLOPT_HTTPGET, 1L);
  }
  if (q->method) curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, q->method);
  if (q->method && strcmp(q->method, "HEAD") == 0) curl_easy_setopt(h, CURLOPT_NOBODY, 1L);
  if (q->tls) {
    curl_easy_setopt(h, CURLOPT_CAINFO, certs.ca_cert);
    if (q->cert) {
      curl_easy_setopt(h, CURLOPT_SSLCERT, q->cert);
      curl_easy_setopt(h, CURLOPT_SSLKEY, q->key);
    }
  }
}

/* One request on handle @p h (reused across calls for keep-alive). */
static void curl_do(CURL *h, const request_t *q, result_t *r) {
  struct curl_slist *hl;
  reader_t rd;
  char url[256];
  curl_setup(h, q, r, &hl, &rd, url, sizeof url);
  r->rc = curl_easy_perform(h);
  curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &r->status);
  curl_easy_getinfo(h, CURLINFO_NUM_CONNECTS, &r->connects);
  curl_slist_free_all(hl);
}

static void curl_once(const request_t *q, result_t *r) {
  CURL *h = curl_easy_init();
  curl_do(h, q, r);
  curl_easy_cleanup(h);
}

typedef struct job_s {
  request_t q;
  result_t r;
} job_t;

static void job_fn(void *arg) {
  job_t *j = arg;
  curl_once(&j->q, &j->r);
}

static void expect_echo(const result_t *r, const void *body, size_t len) {
  char want[64];
  snprintf(want, sizeof want, "len=%zu ", len);
  assert_non_null(strstr(r->body, want));
  snprintf(want, sizeof want, "sum=%08x ", fnv1a(body, len));
  assert_non_null(strstr(r->body, want));
}

static uint8_t *make_text(size_t n) {
  uint8_t *p = malloc(n);
  uint32_t x = 99;
  for (size_t i = 0; i < n; i++) {
    x = x * 1103515245u + 12345u;
    p[i] = (uint8_t)("abcdefgh span profile "[(x >> 16) % 22]);
  }
  return p;
}

/* --- raw socket helpers (main thread, non-blocking reads in loop conditions) */

typedef struct raw_s {
  int fd;
  char buf[256 * 1024];
  size_t len;
  bool eof;
  const char *needle; /* raw_has: stop once this text arrived */
} raw_t;

static void raw_connect(raw_t *r) {
  memset(r, 0, sizeof *r);
  r->fd = socket(AF_INET, SOCK_STREAM, 0);
  assert_true(r->fd >= 0);
  struct sockaddr_in a;
  memset(&a, 0, sizeof a);
  a.sin_family = AF_INET;
  a.sin_port = htons((uint16_t)fx.port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  assert_int_equal(connect(r->fd, (struct sockaddr *)&a, sizeof a), 0);
}

static void raw_send(raw_t *r, const void *p, size_t n) {
  assert_int_equal(send(r->fd, p, n, MSG_NOSIGNAL), (ssize_t)n);
}

static void raw_close(raw_t *r) {
  if (r->fd >= 0) close(r->fd);
  r->fd = -1;
}

static void raw_pump(raw_t *r) {
  while (!r->eof && r->len < sizeof r->buf - 1) {
    ssize_t n = recv(r->fd, r->buf + r->len, sizeof r->buf - 1 - r->len, MSG_DONTWAIT);
    if (n > 0) {
      r->len += (size_t)n;
      r->buf[r->len] = '\0';
    } else if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) {
      r->eof = true;
    } else {
      break;
    }
  }
}

static int raw_eof(void *p) {
  raw_t *r = p;
  raw_pump(r);
  return r->eof;
}

static int raw_has(void *p) {
  raw_t *r = p;
  raw_pump(r);
  return strstr(r->buf, r->needle) != NULL || r->eof;
}

/* Counts complete responses (each here ends with "err=...") in the buffer. */
static int count_substr(const char *hay, const char *needle) {
  int n = 0;
  for (const char *p = strstr(hay, needle); p; p = strstr(p + 1, needle))
    n++;
  return n;
}

/* --- tests: basics ------------------------------------------------------- */

static void test_simple_post(void **state) {
  (void)state;
  sp_http_server_options_t o = default_opts();
  start_server(&o);
  job_t j = {.q = {.path = "/v1/traces?a=1&b=2",
                   .body = "hello",
                   .len = 5,
                   .headers = {"Content-Type: application/x-protobuf", "X-Echo: abc"}}};
  run_client(job_fn, &j);
  assert_int_equal(j.r.rc, CURLE_OK);
  assert_int_equal(j.r.status, 200);
  assert_non_null(strstr(j.r.body, "POST /v1/traces q=a=1&b=2 len=5 wire=5"));
  assert_non_null(strstr(j.r.body, "echo=abc"));
  expect_echo(&j.r, "hello", 5);
  assert_non_null(strstr(j.r.headers, "HTTP/1.1 200 OK\r\n"));
  assert_non_null(strstr(j.r.headers, "Content-Type: text/plain\r\n"));
  assert_non_null(strstr(j.r.headers, "X-Test: yes\r\n"));
  sp_http_server_stats_t st;
  sp_http_server_stats(fx.srv, &st);
  assert_int_equal(st.requests, 1);
  assert_int_equal(st.connections_accepted, 1);

  /* GET without body, HEAD without response body */
  job_t g = {.q = {.path = "/status"}};
  run_client(job_fn, &g);
  assert_int_equal(g.r.status, 200);
  assert_non_null(strstr(g.r.body, "GET /status q= len=0"));
  job_t h = {.q = {.method = "HEAD", .path = "/status"}};
  run_client(job_fn, &h);
  assert_int_equal(h.r.rc, CURLE_OK);
  assert_int_equal(h.r.status, 200);
  assert_int_equal(h.r.body_len, 0);
  assert_non_null(strstr(h.r.headers, "Content-Length: "));
}

typedef struct keepalive_job_s {
  int n;
  bool tls;
  long connects;
  int ok;
  size_t body_len;
} keepalive_job_t;

static void keepalive_fn(void *arg) {
  keepalive_job_t *k = arg;
  CURL *h = curl_easy_init();
  uint8_t *body = make_text(k->body_len ? k->body_len : 1);
  for (int i = 0; i < k->n; i++) {
    char path[32];
    snprintf(path, sizeof path, "/r/%d", i);
    request_t q = {.path = path, .body = body, .len = k->body_len ? k->body_len : 1, .tls = k->tls};
    result_t r;
    curl_do(h, &q, &r);
    k->connects += r.connects;
    char want[40];
    snprintf(want, sizeof want, "POST /r/%d ", i);
    if (r.rc == CURLE_OK && r.status == 200 && strstr(r.body, want)) k->ok++;
  }
  free(body);
  curl_easy_cleanup(h);
}

static void test_keep_alive_reuses_connection(void **state) {
  (void)state;
  sp_http_server_options_t o = default_opts();
  start_server(&o);
  keepalive_job_t k = {.n = 200, .body_len = 100};
  run_client(keepalive_fn, &k);
  assert_int_equal(k.ok, 200);
  assert_int_equal(k.connects, 1);
  sp_http_server_stats_t st;
  sp_http_server_stats(fx.srv, &st);
  assert_int_equal(st.connections_accepted, 1);
  assert_int_equal(st.requests, 200);
}

static void test_connection_close_honoured(void **state) {
  (void)state;
  sp_http_server_options_t o = default_opts();
  start_server(&o);
  job_t j = {.q = {.path = "/", .body = "x", .len = 1, .headers = {"Connection: close"}}};
  run_client(job_fn, &j);
  assert_int_equal(j.r.status, 200);
  assert_non_null(strstr(j.r.headers, "Connection: close\r\n"));
  /* The server closes its side: the raw client sees EOF after the answer. */
  raw_t r;
  raw_connect(&r);
  const char req[] = "GET /x HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n";
  raw_send(&r, req, sizeof req - 1);
  assert_int_equal(sp_test_run_until(&fx.loop, raw_eof, &r, 3000), 0);
  assert_non_null(strstr(r.buf, "HTTP/1.1 200 OK"));
  raw_close(&r);
}

static void test_http10(void **state) {
  (void)state;
  sp_http_server_options_t o = default_opts();
  start_server(&o);
  raw_t r;
  raw_connect(&r);
  const char req[] = "POST /old HTTP/1.0\r\nContent-Length: 3\r\n\r\nabc";
  raw_send(&r, req, sizeof req - 1);
  assert_int_equal(sp_test_run_until(&fx.loop, raw_eof, &r, 3000), 0);
  assert_non_null(strstr(r.buf, "HTTP/1.1 200 OK\r\n"));
  assert_non_null(strstr(r.buf, "Connection: close\r\n"));
  assert_non_null(strstr(r.buf, "POST /old q= len=3"));
  raw_close(&r);

  /* HTTP/1.0 keep-alive: the connection stays open for a second request. */
  raw_connect(&r);
  const char ka[] = "GET /a HTTP/1.0\r\nConnection: keep-alive\r\n\r\n";
  raw_send(&r, ka, sizeof ka - 1);
  r.needle = "err=0";
  assert_int_equal(sp_test_run_until(&fx.loop, raw_has, &r, 3000), 0);
  assert_non_null(strstr(r.buf, "Connection: keep-alive\r\n"));
  assert_false(r.eof);
  const char second[] = "GET /b HTTP/1.0\r\n\r\n";
  raw_send(&r, second, sizeof second - 1);
  assert_int_equal(sp_test_run_until(&fx.loop, raw_eof, &r, 3000), 0);
  assert_non_null(strstr(r.buf, "GET /b q="));
  raw_close(&r);
}

static void test_pipelined_requests_in_order(void **state) {
  (void)state;
  sp_http_server_options_t o = default_opts();
  start_server(&o);
  /* Answers come later, from a timer: order must still hold. */
  fx.mode = MODE_ASYNC;
  fx.delay_ms = 5;
  raw_t r;
  raw_connect(&r);
  const char reqs[] = "POST /one HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc"
                      "GET /two?x HTTP/1.1\r\nHost: a\r\n\r\n"
                      "POST /three HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
                      "2\r\nhi\r\n0\r\n\r\n"
                      "GET /four HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n";
  raw_send(&r, reqs, sizeof reqs - 1);
  assert_int_equal(sp_test_run_until(&fx.loop, raw_eof, &r, 3000), 0);
  assert_int_equal(count_substr(r.buf, "HTTP/1.1 200 OK"), 4);
  char *one = strstr(r.buf, "POST /one q= len=3");
  char *two = strstr(r.buf, "GET /two q=x len=0");
  char *three = strstr(r.buf, "POST /three q= len=2");
  char *four = strstr(r.buf, "GET /four q= len=0");
  assert_true(one && two && three && four);
  assert_true(one < two && two < three && three < four);
  assert_int_equal(fx.handled, 4);
  raw_close(&r);
}

/* A handler taking the body's storage leaves the connection able to read the next ones. */
static void test_take_body(void **state) {
  (void)state;
  sp_http_server_options_t o = default_opts();
  start_server(&o);
  fx.mode = MODE_TAKE;
  raw_t r;
  raw_connect(&r);
  const char reqs[] =
      "POST /one HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc"
      "GET /two?x HTTP/1.1\r\nHost: a\r\n\r\n"
      "POST /three HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
      "2\r\nhi\r\n0\r\n\r\n"
      "POST /four HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nConnection: close\r\n\r\n"
      "hello";
  raw_send(&r, reqs, sizeof reqs - 1);
  assert_int_equal(sp_test_run_until(&fx.loop, raw_eof, &r, 3000), 0);
  assert_int_equal(count_substr(r.buf, "HTTP/1.1 200 OK"), 4);
  char want[64];
  snprintf(want, sizeof want, "POST /one q= len=3 wire=3 sum=%08x", fnv1a("abc", 3));
  assert_non_null(strstr(r.buf, want));
  assert_non_null(strstr(r.buf, "GET /two q=x len=0"));
  snprintf(want, sizeof want, "POST /three q= len=2 wire=2 sum=%08x", fnv1a("hi", 2));
  assert_non_null(strstr(r.buf, want));
  snprintf(want, sizeof want, "POST /four q= len=5 wire=5 sum=%08x", fnv1a("hello", 5));
  assert_non_null(strstr(r.buf, want));
  raw_close(&r);
  /* Large and compressed bodies (read in place / inflated) on one kept-alive connection. */
  size_t n = 1 * MB;
  uint8_t *body = make_text(n);
  sp_buf_t z;
  sp_buf_init(&z, 0);
  assert_int_equal(sp_compress(body, n, SP_ENC_GZIP, 6, &z), 0);
  for (int i = 0; i < 2; i++) {
    job_t j = {.q = {.path = "/z",
                     .body = i ? body : z.data,
                     .len = i ? n : z.len,
                     .headers = {i ? "X-Plain: 1" : "Content-Encoding: gzip"}}};
    run_client(job_fn, &j);
    assert_int_equal(j.r.status, 200);
    expect_echo(&j.r, body, n);
  }
  sp_buf_free(&z);
  free(body);
}

static void test_request_target_and_headers(void **state) {
  (void)state;
  sp_http_server_options_t o = default_opts();
  start_server(&o);
  raw_t r;
  raw_connect(&r);
  const char reqs[] = "GET http://example.com:8080/abs/path?k=v#frag HTTP/1.1\r\nHost: a\r\n"
                      "X-ECHO:   padded value  \t\r\n\r\n"
                      "GET /only-path HTTP/1.1\r\nHost: a\r\nX-Echo:\r\n"
                      "Connection: close\r\n\r\n";
  raw_send(&r, reqs, sizeof reqs - 1);
  assert_int_equal(sp_test_run_until(&fx.loop, raw_eof, &r, 3000), 0);
  assert_non_null(strstr(r.buf, "GET /abs/path q=k=v len=0"));
  assert_non_null(strstr(r.buf, "err=0 echo=padded valueHTTP/1.1 200")); /* next response */
  assert_non_null(strstr(r.buf, "GET /only-path q= len=0"));
  /* present but empty: the last body ends with "echo=" */
  assert_string_equal(r.buf + r.len - 11, "err=0 echo=");
  raw_close(&r);
}

static void test_expect_100_continue(void **state) {
  (void)state;
  sp_http_server_options_t o = default_opts();
  o.max_body_size = 64 * 1024;
  start_server(&o);
  uint8_t *body = make_text(20000);
  job_t j = {.q = {.path = "/up", .body = body, .len = 20000, .headers = {"Expect: 100-continue"}}};
  run_client(job_fn, &j);
  assert_int_equal(j.r.rc, CURLE_OK);
  assert_int_equal(j.r.status, 200);
  assert_non_null(strstr(j.r.headers, "HTTP/1.1 100 Continue\r\n"));
  expect_echo(&j.r, body, 20000);

  /* Too large: the final 413 comes instead of 100, and the body is never read. */
  uint8_t *big = make_text(200000);
  job_t k = {.q = {.path = "/up", .body = big, .len = 200000, .headers = {"Expect: 100-continue"}}};
  run_client(job_fn, &k);
  assert_int_equal(k.r.status, 413);
  assert_null(strstr(k.r.headers, "100 Continue"));
  assert_non_null(strstr(k.r.headers, "Connection: close\r\n"));
  assert_int_equal(fx.last_error_status, 413);
  assert_int_equal(fx.last_wire_len, 0);
  free(body);
  free(big);
}

static void test_chunked_body(void **state) {
  (void)state;
  sp_http_server_options_t o = default_opts();
  start_server(&o);
  size_t n = 350000;
  uint8_t *body = make_text(n);
  job_t j = {.q = {.path = "/chunked", .body = body, .len = n, .chunked = true}};
  run_client(job_fn, &j);
  assert_int_equal(j.r.rc, CURLE_OK);
  assert_int_equal(j.r.status, 200);
  expect_echo(&j.r, body, n);

  /* Chunked and over the limit. */
  free(body);
  n = 5 * MB;
  body = make_text(n);
  job_t k = {.q = {.path = "/chunked", .body = body, .len = n, .chunked = true}};
  run_client(job_fn, &k);
  assert_int_equal(k.r.status, 413);
  assert_int_equal(fx.last_error_status, 413);
  sp_http_server_stats_t st;
  sp_http_server_stats(fx.srv, &st);
  assert_true(st.body_buffer_peak <= 4 * MB);
  free(body);
}

static void test_compressed_bodies(void **state) {
  (void)state;
  sp_http_server_options_t o = default_opts();
  start_server(&o);
  size_t n = 1 * MB;
  uint8_t *body = make_text(n);
  struct {
    sp_encoding_t enc;
    const char *header;
    bool chunked;
  } cases[] = {
      {SP_ENC_GZIP, "Content-Encoding: gzip", false},
      {SP_ENC_GZIP, "Content-Encoding: gzip", true},
      {SP_ENC_DEFLATE, "Content-Encoding: deflate", false},
      {SP_ENC_RAW_DEFLATE, "Content-Encoding: deflate", false},
      {SP_ENC_IDENTITY, "Content-Encoding: identity", false},
  };
  for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
    sp_buf_t z;
    sp_buf_init(&z, 0);
    assert_int_equal(sp_compress(body, n, cases[i].enc, 6, &z), 0);
    job_t j = {.q = {.path = "/z",
                     .body = z.data,
                     .len = z.len,
                     .chunked = cases[i].chunked,
                     .headers = {cases[i].header}}};
    run_client(job_fn, &j);
    assert_int_equal(j.r.status, 200);
    expect_echo(&j.r, body, n);
    char want[48];
    snprintf(want, sizeof want, "wire=%zu ", z.len);
    assert_non_null(strstr(j.r.body, want));
    sp_buf_free(&z);
  }
  free(body);
}

static void test_gzip_bomb_is_refused(void **state) {
  (void)state;
  sp_http_server_options_t o = default_opts();
  o.max_body_size = 1 * MB;
  start_server(&o);
  size_t n = 10 * MB;
  uint8_t *zeros = calloc(1, n);
  sp_buf_t z;
  sp_buf_init(&z, 0);
  assert_int_equal(sp_gzip_compress(zeros, n, 9, &z), 0);
  assert_true(z.len < 16 * 1024);
  for (int chunked = 0; chunked < 2; chunked++) {
    job_t j = {.q = {.path = "/bomb",
                     .body = z.data,
                     .len = z.len,
                     .chunked = chunked,
                     .headers = {"Content-Encoding: gzip"}}};
    run_client(job_fn, &j);
    assert_int_equal(j.r.status, 413);
    assert_int_equal(fx.last_error_status, 413);
    assert_non_null(strstr(fx.last_error, "decompressed"));
  }
  sp_http_server_stats_t st;
  sp_http_server_stats(fx.srv, &st);
  /* The body buffer never held more than the limit (+1 byte to detect it). */
  assert_true(st.body_buffer_peak <= 1 * MB + 1);
  assert_true(st.body_buffer_peak > 0);
  sp_buf_free(&z);
  free(zeros);
}

static void test_content_length_over_limit(void **state) {
  (void)state;
  sp_http_server_options_t o = default_opts();
  o.max_body_size = 1 * MB;
  start_server(&o);
  uint8_t *body = make_text(2 * MB);
  /* No Expect: the client sends the body anyway; the answer still arrives. */
  job_t j = {.q = {.path = "/big", .body = body, .len = 2 * MB, .headers = {"Expect:"}}};
  run_client(job_fn, &j);
  assert_int_equal(j.r.status, 413);
  assert_non_null(strstr(j.r.body, "exceeds the limit of 1048576 bytes"));
  assert_int_equal(fx.last_error_status, 413);
  assert_int_equal(fx.last_wire_len, 0);
  sp_http_server_stats_t st;
  sp_http_server_stats(fx.srv, &st);
  assert_true(st.body_buffer_peak < 64 * 1024); /* nothing was allocated for it */
  /* Exactly at the limit is accepted. */
  job_t k = {.q = {.path = "/big", .body = body, .len = 1 * MB, .headers = {"Expect:"}}};
  run_client(job_fn, &k);
  assert_int_equal(k.r.status, 200);
  expect_echo(&k.r, body, 1 * MB);
  free(body);
}

static void test_bad_encodings(void **state) {
  (void)state;
  sp_http_server_options_t o = default_opts();
  start_server(&o);
  job_t j = {.q = {.path = "/", .body = "abc", .len = 3, .headers = {"Content-Encoding: br"}}};
  run_client(job_fn, &j);
  assert_int_equal(j.r.status, 415);
  assert_int_equal(fx.last_error_status, 415);
  assert_non_null(strstr(fx.last_error, "\"br\""));

  job_t k = {.q = {.path = "/",
                   .body = "definitely not gzip",
                   .len = 19,
                   .headers = {"Content-Encoding: gzip"}}};
  run_client(job_fn, &k);
  assert_int_equal(k.r.status, 400);
  assert_int_equal(fx.last_error_status, 400);

  sp_buf_t z;
  sp_buf_init(&z, 0);
  assert_int_equal(sp_gzip_compress("hello hello hello", 17, 6, &z), 0);
  job_t t = {
      .q = {.path = "/", .body = z.data, .len = z.len - 4, .headers = {"Content-Encoding: gzip"}}};
  run_client(job_fn, &t);
  assert_int_equal(t.r.status, 400);
  assert_non_null(strstr(fx.last_error, "truncated"));
  sp_buf_free(&z);
}

static void test_async_respond(void **state) {
  (void)state;
  sp_http_server_options_t o = default_opts();
  start_server(&o);
  fx.mode = MODE_ASYNC;
  fx.delay_ms = 60;
  uv_update_time(&fx.loop);
  uint64_t t0 = uv_now(&fx.loop);
  keepalive_job_t k = {.n = 3, .body_len = 1000};
  run_client(keepalive_fn, &k);
  assert_int_equal(k.ok, 3);
  assert_int_equal(k.connects, 1);
  uv_update_time(&fx.loop);
  assert_true(uv_now(&fx.loop) - t0 >= 3 * 60 - 5);
}

static int held_at_least_one(void *arg) {
  (void)arg;
  return fx.n_held >= 1;
}

static void test_respond_after_peer_closed(void **state) {
  (void)state;
  sp_http_server_options_t o = default_opts();
  start_server(&o);
  fx.mode = MODE_HOLD;
  raw_t r;
  raw_connect(&r);
  const char req[] = "POST /gone HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello";
  raw_send(&r, req, sizeof req - 1);
  assert_int_equal(sp_test_run_until(&fx.loop, held_at_least_one, NULL, 3000), 0);
  /* The peer resets the connection while the handler still holds the request. */
  struct linger lg = {1, 0};
  setsockopt(r.fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
  raw_close(&r);
  assert_int_equal(fx.held[0]->body_len, 5);
  assert_memory_equal(fx.held[0]->body, "hello", 5);
  release_held(); /* must not touch freed memory (ASan) */
  sp_http_server_stats_t st;
  for (int i = 0; i < 100; i++) {
    sp_http_server_stats(fx.srv, &st);
    if (!st.connections_active) break;
    sp_test_run_until(&fx.loop, held_at_least_one, NULL, 10);
  }
  assert_int_equal(st.connections_active, 0);
}

/* --- tests: timeouts and limits -------------------------------------------- */

static void test_header_timeout(void **state) {
  (void)state;
  sp_http_server_options_t o = default_opts();
  o.header_timeout_ms = 150;
  start_server(&o);
  raw_t r;
  raw_connect(&r);
  const char half[] = "POST /slow HTTP/1.1\r\nHost: a\r\nContent-";
  raw_send(&r, half, sizeof half - 1);
  uv_update_time(&fx.loop);
  uint64_t t0 = uv_now(&fx.loop);
  assert_int_equal(sp_test_run_until(&fx.loop, raw_eof, &r, 3000), 0);
  uv_update_time(&fx.loop);
  uint64_t took = uv_now(&fx.loop) - t0;
  assert_true(took >= 140 && took < 1500);
  assert_non_null(strstr(r.buf, "HTTP/1.1 408 Request Timeout"));
  assert_int_equal(fx.handled, 0);
  raw_close(&r);

  /* Slowloris: a byte every 40 ms does not extend the deadline. */
  raw_connect(&r);
  uv_update_time(&fx.loop);
  t0 = uv_now(&fx.loop);
  const char *drip = "GET / HTTP/1.1\r\nHost: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
  for (size_t i = 0; drip[i] && !r.eof; i++) {
    send(r.fd, drip + i, 1, MSG_NOSIGNAL);
    sp_test_run_until(&fx.loop, raw_eof, &r, 40);
  }
  uv_update_time(&fx.loop);
  took = uv_now(&fx.loop) - t0;
  assert_true(r.eof);
  assert_true(took < 1000);
  raw_close(&r);

  /* A connection that sends nothing is closed after the header timeout too. */
  raw_connect(&r);
  assert_int_equal(sp_test_run_until(&fx.loop, raw_eof, &r, 3000), 0);
  assert_int_equal(r.len, 0);
  raw_close(&r);
  sp_http_server_stats_t st;
  sp_http_server_stats(fx.srv, &st);
  assert_true(st.timeouts >= 3);
}

static void test_body_and_idle_timeouts(void **state) {
  (void)state;
  sp_http_server_options_t o = default_opts();
  o.body_timeout_ms = 150;
  o.idle_timeout_ms = 200;
  start_server(&o);
  raw_t r;
  raw_connect(&r);
  const char part[] = "POST /stall HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\n0123456789";
  raw_send(&r, part, sizeof part - 1);
  assert_int_equal(sp_test_run_until(&fx.loop, raw_eof, &r, 3000), 0);
  assert_int_equal(fx.last_error_status, 408);
  assert_non_null(strstr(r.buf, "HTTP/1.1 408 Request Timeout"));
  assert_non_null(strstr(r.buf, "Connection: close"));
  raw_close(&r);

  /* Idle keep-alive connection: closed after the idle timeout. */
  raw_connect(&r);
  const char req[] = "GET /idle HTTP/1.1\r\nHost: a\r\n\r\n";
  raw_send(&r, req, sizeof req - 1);
  uv_update_time(&fx.loop);
  uint64_t t0 = uv_now(&fx.loop);
  assert_int_equal(sp_test_run_until(&fx.loop, raw_eof, &r, 3000), 0);
  uv_update_time(&fx.loop);
  uint64_t took = uv_now(&fx.loop) - t0;
  assert_non_null(strstr(r.buf, "GET /idle"));
  assert_true(took >= 190 && took < 2000);
  raw_close(&r);
}

static void test_malformed_and_oversized_headers(void **state) {
  (void)state;
  sp_http_server_options_t o = default_opts();
  o.max_header_size = 8 * 1024;
  start_server(&o);
  raw_t r;
  raw_connect(&r);
  const char junk[] = "THIS IS NOT HTTP\r\n\r\n";
  raw_send(&r, junk, sizeof junk - 1);
  assert_int_equal(sp_test_run_until(&fx.loop, raw_eof, &r, 3000), 0);
  assert_non_null(strstr(r.buf, "HTTP/1.1 400 Bad Request\r\n"));
  raw_close(&r);

  raw_connect(&r);
  const char both[] = "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n"
                      "Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n";
  raw_send(&r, both, sizeof both - 1);
  assert_int_equal(sp_test_run_until(&fx.loop, raw_eof, &r, 3000), 0);
  assert_non_null(strstr(r.buf, "HTTP/1.1 400 Bad Request\r\n"));
  raw_close(&r);

  raw_connect(&r);
  char big[12 * 1024];
  int n = snprintf(big, sizeof big, "GET / HTTP/1.1\r\nHost: a\r\nX-Big: ");
  memset(big + n, 'x', sizeof big - (size_t)n);
  raw_send(&r, big, sizeof big);
  assert_int_equal(sp_test_run_until(&fx.loop, raw_eof, &r, 3000), 0);
  assert_non_null(strstr(r.buf, "HTTP/1.1 431 Request Header Fields Too Large\r\n"));
  raw_close(&r);
  assert_int_equal(fx.handled, 0);
  sp_http_server_stats_t st;
  sp_http_server_stats(fx.srv, &st);
  assert_int_equal(st.bad_requests, 3);
}

typedef struct multi_job_s {
  int n;
  int ok;
  long connects;
} multi_job_t;

static void multi_fn(void *arg) {
  multi_job_t *m = arg;
  CURLM *multi = curl_multi_init();
  CURL **hs = calloc((size_t)m->n, sizeof *hs);
  result_t *rs = calloc((size_t)m->n, sizeof *rs);
  struct curl_slist **hls = calloc((size_t)m->n, sizeof *hls);
  reader_t *rds = calloc((size_t)m->n, sizeof *rds);
  char(*urls)[256] = calloc((size_t)m->n, sizeof *urls);
  for (int i = 0; i < m->n; i++) {
    request_t q = {.path = "/many", .body = "0123456789", .len = 10};
    hs[i] = curl_easy_init();
    curl_setup(hs[i], &q, &rs[i], &hls[i], &rds[i], urls[i], sizeof urls[i]);
    curl_multi_add_handle(multi, hs[i]);
  }
  int running = 1;
  while (running) {
    curl_multi_perform(multi, &running);
    if (running) curl_multi_poll(multi, NULL, 0, 100, NULL);
  }
  for (int i = 0; i < m->n; i++) {
    long status = 0, c = 0;
    curl_easy_getinfo(hs[i], CURLINFO_RESPONSE_CODE, &status);
    curl_easy_getinfo(hs[i], CURLINFO_NUM_CONNECTS, &c);
    m->connects += c;
    if (status == 200 && strstr(rs[i].body, "len=10")) m->ok++;
    curl_multi_remove_handle(multi, hs[i]);
    curl_easy_cleanup(hs[i]);
    curl_slist_free_all(hls[i]);
  }
  curl_multi_cleanup(multi);
  free(hs);
  free(rs);
  free(hls);
  free(rds);
  free(urls);
}

static size_t received_target; /* received_at_least: bytes the server must have read */

static int received_at_least(void *arg) {
  (void)arg;
  sp_http_server_stats_t st;
  sp_http_server_stats(fx.srv, &st);
  return st.bytes_received >= received_target;
}

static void test_declared_length_is_not_reserved_up_front(void **state) {
  (void)state;
  sp_http_server_options_t o = default_opts();
  o.max_body_size = 32 * MB;
  start_server(&o);
  /* 64 connections announce 20 MiB bodies (a quarter of them gzip) and send
   * a few bytes: the server must not reserve the announced sizes. */
  enum { N = 64 };
  raw_t *r = calloc(N, sizeof *r);
  assert_non_null(r);
  const char ident[] = "POST /big HTTP/1.1\r\nHost: a\r\nContent-Length: 20971520\r\n\r\n"
                       "0123456789012345678901234567890123456789";
  const char gz[] = "POST /big HTTP/1.1\r\nHost: a\r\nContent-Encoding: gzip\r\n"
                    "Content-Length: 20971520\r\n\r\n";
  received_target = 0;
  for (int i = 0; i < N; i++) {
    raw_connect(&r[i]);
    const char *m = i % 4 ? ident : gz;
    size_t len = i % 4 ? sizeof ident - 1 : sizeof gz - 1;
    raw_send(&r[i], m, len);
    received_target += len;
  }
  assert_int_equal(sp_test_run_until(&fx.loop, received_at_least, NULL, 5000), 0);
  sp_http_server_stats_t st;
  sp_http_server_stats(fx.srv, &st);
  assert_int_equal(st.connections_active, N);
  assert_true(st.body_buffer_peak > 0);
  assert_true(st.body_buffer_peak <= 256 * 1024);
  for (int i = 0; i < N; i++)
    raw_close(&r[i]);
  free(r);

  /* Real large bodies still arrive whole (the buffer grows as bytes come). */
  size_t n = 6 * MB + 12345;
  uint8_t *body = make_text(n);
  job_t j = {.q = {.path = "/v1/traces", .body = body, .len = n}};
  run_client(job_fn, &j);
  assert_int_equal(j.r.status, 200);
  expect_echo(&j.r, body, n);
  sp_http_server_stats(fx.srv, &st);
  assert_int_equal(st.body_buffer_peak, n); /* grown up to the declared length, not beyond */
  free(body);
}

static void test_many_concurrent_connections(void **state) {
  (void)state;
  sp_http_server_options_t o = default_opts();
  start_server(&o);
  /* Nothing is answered until all 200 requests are at the handler at once. */
  fx.mode = MODE_HOLD;
  fx.hold_target = 200;
  multi_job_t m = {.n = 200};
  run_client(multi_fn, &m);
  assert_int_equal(m.ok, 200);
  assert_int_equal(m.connects, 200);
  sp_http_server_stats_t st;
  sp_http_server_stats(fx.srv, &st);
  assert_int_equal(st.connections_accepted, 200);
  assert_int_equal(st.requests, 200);
}

static int accepted_two(void *arg) {
  (void)arg;
  sp_http_server_stats_t st;
  sp_http_server_stats(fx.srv, &st);
  return st.connections_accepted >= 2;
}

static void test_max_connections(void **state) {
  (void)state;
  sp_http_server_options_t o = default_opts();
  o.max_connections = 2;
  start_server(&o);
  raw_t a, b, *c = malloc(sizeof *c);
  raw_connect(&a);
  raw_connect(&b);
  assert_int_equal(sp_test_run_until(&fx.loop, accepted_two, NULL, 3000), 0);
  raw_connect(c);
  assert_int_equal(sp_test_run_until(&fx.loop, raw_eof, c, 3000), 0);
  assert_int_equal(c->len, 0);
  sp_http_server_stats_t st;
  sp_http_server_stats(fx.srv, &st);
  assert_int_equal(st.connections_rejected, 1);
  assert_int_equal(st.connections_active, 2);
  /* The two admitted connections still work. */
  const char req[] = "GET /ok HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n";
  raw_send(&a, req, sizeof req - 1);
  assert_int_equal(sp_test_run_until(&fx.loop, raw_eof, &a, 3000), 0);
  assert_non_null(strstr(a.buf, "200 OK"));
  raw_close(&a);
  raw_close(&b);
  raw_close(c);
  free(c);
}

/* --- tests: TLS ------------------------------------------------------------ */

static sp_tls_config_t server_tls(bool mtls) {
  sp_tls_config_t t;
  memset(&t, 0, sizeof t);
  t.present = true;
  t.cert_file = certs.server_cert;
  t.key_file = certs.server_key;
  if (mtls) t.client_ca_file = certs.ca_cert;
  return t;
}

static void test_tls(void **state) {
  (void)state;
  sp_tls_config_t t = server_tls(false);
  sp_http_server_options_t o = default_opts();
  o.tls = &t;
  start_server(&o);
  keepalive_job_t k = {.n = 20, .tls = true, .body_len = 300000};
  run_client(keepalive_fn, &k);
  assert_int_equal(k.ok, 20);
  assert_int_equal(k.connects, 1);

  size_t n = 2 * MB;
  uint8_t *body = make_text(n);
  sp_buf_t z;
  sp_buf_init(&z, 0);
  assert_int_equal(sp_gzip_compress(body, n, 1, &z), 0);
  job_t j = {.q = {.path = "/tls",
                   .body = z.data,
                   .len = z.len,
                   .tls = true,
                   .headers = {"Content-Encoding: gzip", "Expect: 100-continue"}}};
  run_client(job_fn, &j);
  assert_int_equal(j.r.rc, CURLE_OK);
  assert_int_equal(j.r.status, 200);
  expect_echo(&j.r, body, n);
  sp_buf_free(&z);
  free(body);

  /* Plain HTTP to a TLS port gets nowhere (and costs the server nothing). */
  job_t p = {.q = {.path = "/", .body = "x", .len = 1}};
  run_client(job_fn, &p);
  assert_true(p.r.rc != CURLE_OK || p.r.status != 200);
}

static void test_mtls(void **state) {
  (void)state;
  sp_tls_config_t t = server_tls(true);
  t.min_version = "1.3";
  sp_http_server_options_t o = default_opts();
  o.tls = &t;
  start_server(&o);
  job_t good = {.q = {.path = "/m",
                      .body = "hi",
                      .len = 2,
                      .tls = true,
                      .cert = certs.client_cert,
                      .key = certs.client_key}};
  run_client(job_fn, &good);
  assert_int_equal(good.r.rc, CURLE_OK);
  assert_int_equal(good.r.status, 200);
  assert_int_equal(fx.handled, 1);

  job_t none = {.q = {.path = "/m", .body = "hi", .len = 2, .tls = true}};
  run_client(job_fn, &none);
  assert_true(none.r.rc != CURLE_OK);
  job_t rogue = {.q = {.path = "/m",
                       .body = "hi",
                       .len = 2,
                       .tls = true,
                       .cert = certs.rogue_client_cert,
                       .key = certs.rogue_client_key}};
  run_client(job_fn, &rogue);
  assert_true(rogue.r.rc != CURLE_OK);
  assert_int_equal(fx.handled, 1);
  sp_http_server_stats_t st;
  sp_http_server_stats(fx.srv, &st);
  assert_true(st.tls_handshake_failures >= 2);
}

static void test_tls_config_errors(void **state) {
  (void)state;
  sp_http_server_options_t o = default_opts();
  sp_tls_config_t t = server_tls(false);
  o.tls = &t;
  sp_log_set_level(SP_LOG_OFF);
  t.cert_file = "/nonexistent/cert.pem";
  assert_int_equal(sp_http_server_create(&fx.loop, &o, &fx.srv), SP_ECONFIG);
  t = server_tls(false);
  t.key_file = certs.client_key; /* does not match the certificate */
  assert_int_equal(sp_http_server_create(&fx.loop, &o, &fx.srv), SP_ECONFIG);
  t = server_tls(false);
  t.cert_file = certs.server_key; /* not a certificate */
  assert_int_equal(sp_http_server_create(&fx.loop, &o, &fx.srv), SP_ECONFIG);
  t = server_tls(true);
  t.client_ca_file = "/nonexistent/ca.pem";
  assert_int_equal(sp_http_server_create(&fx.loop, &o, &fx.srv), SP_ECONFIG);
  t = server_tls(false);
  t.min_version = "1.1";
  assert_int_equal(sp_http_server_create(&fx.loop, &o, &fx.srv), SP_ECONFIG);
  t = server_tls(false);
  t.key_file = NULL;
  assert_int_equal(sp_http_server_create(&fx.loop, &o, &fx.srv), SP_ECONFIG);
  sp_log_set_level(SP_LOG_WARN);
  assert_null(fx.srv);
}

/* The memory-BIO TLS layer on its own: a client and a server conn talking. */
static void pump_tls(sp_tls_conn_t *from, sp_tls_conn_t *to) {
  char buf[16384];
  size_t n;
  while ((n = sp_tls_conn_take(from, buf, sizeof buf)) > 0)
    assert_int_equal(sp_tls_conn_feed(to, buf, n), 0);
}

static void test_tls_conn_memory_bios(void **state) {
  (void)state;
  sp_tls_config_t st = server_tls(true);
  sp_tls_config_t ct;
  memset(&ct, 0, sizeof ct);
  ct.present = true;
  ct.ca_file = certs.ca_cert;
  ct.cert_file = certs.client_cert;
  ct.key_file = certs.client_key;
  sp_tls_ctx_t *sctx, *cctx;
  assert_int_equal(sp_tls_ctx_create_server(&st, "t", &sctx), 0);
  assert_int_equal(sp_tls_ctx_create_client(&ct, "t", &cctx), 0);
  sp_tls_conn_t *s, *c;
  assert_int_equal(sp_tls_conn_create(sctx, NULL, &s), 0);
  assert_int_equal(sp_tls_conn_create(cctx, "localhost", &c), 0);
  sp_tls_ctx_destroy(sctx); /* connections keep their context alive */
  sp_tls_ctx_destroy(cctx);
  /* The client writes before the handshake: held, then sent. */
  assert_int_equal(sp_tls_conn_write(c, "ping", 4), 0);
  char buf[64];
  size_t n = 0;
  int src = SP_EAGAIN, crc = SP_EAGAIN;
  for (int i = 0; i < 10 && (src == SP_EAGAIN || n == 0); i++) {
    pump_tls(c, s);
    src = sp_tls_conn_read(s, buf, sizeof buf, &n);
    pump_tls(s, c);
    size_t m;
    crc = sp_tls_conn_read(c, buf + 32, 16, &m);
  }
  assert_int_equal(src, 0);
  assert_int_equal(n, 4);
  assert_memory_equal(buf, "ping", 4);
  assert_true(sp_tls_conn_established(s));
  assert_string_equal(sp_tls_conn_version(s), "TLSv1.3");
  assert_int_equal(sp_tls_conn_write(s, "pong", 4), 0);
  pump_tls(s, c);
  assert_int_equal(sp_tls_conn_read(c, buf, sizeof buf, &n), 0);
  assert_int_equal(n, 4);
  assert_memory_equal(buf, "pong", 4);
  assert_int_equal(sp_tls_conn_close_notify(c), 0);
  pump_tls(c, s);
  assert_int_equal(sp_tls_conn_read(s, buf, sizeof buf, &n), SP_ESHUTDOWN);
  (void)crc;
  sp_tls_conn_destroy(s);
  sp_tls_conn_destroy(c);

  /* Wrong name: the client refuses the server certificate. */
  assert_int_equal(sp_tls_ctx_create_server(&st, "t", &sctx), 0);
  ct.cert_file = ct.key_file = NULL;
  assert_int_equal(sp_tls_ctx_create_client(&ct, "t", &cctx), 0);
  assert_int_equal(sp_tls_conn_create(sctx, NULL, &s), 0);
  assert_int_equal(sp_tls_conn_create(cctx, "other.example", &c), 0);
  int rc = SP_EAGAIN;
  for (int i = 0; i < 10 && rc == SP_EAGAIN; i++) {
    rc = sp_tls_conn_handshake(c);
    pump_tls(c, s);
    sp_tls_conn_handshake(s);
    pump_tls(s, c);
  }
  assert_int_equal(rc, SP_EPROTO);
  assert_non_null(strstr(sp_tls_conn_error(c), "certificate"));
  sp_tls_conn_destroy(s);
  sp_tls_conn_destroy(c);
  sp_tls_ctx_destroy(sctx);
  sp_tls_ctx_destroy(cctx);
}

/* --- tests: lifecycle ------------------------------------------------------ */

static void test_graceful_shutdown_with_inflight_request(void **state) {
  (void)state;
  sp_http_server_options_t o = default_opts();
  start_server(&o);
  fx.mode = MODE_HOLD;
  raw_t idle;
  raw_connect(&idle);
  client_t cl;
  job_t j = {.q = {.path = "/inflight", .body = "data", .len = 4}};
  client_start(&cl, job_fn, &j);
  assert_int_equal(sp_test_run_until(&fx.loop, held_at_least_one, NULL, 5000), 0);

  sp_http_server_shutdown(fx.srv, on_shutdown, &fx);
  sp_http_server_shutdown(fx.srv, on_shutdown, &fx); /* ignored while in progress */
  /* The idle connection is closed; the in-flight request is not. */
  assert_int_equal(sp_test_run_until(&fx.loop, raw_eof, &idle, 3000), 0);
  raw_close(&idle);
  assert_int_equal(fx.shutdown_calls, 0);
  assert_false(client_done(&cl));
  /* No new connections. */
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)fx.port)};
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof a), -1);
  close(fd);

  release_held();
  client_wait(&cl, 5000);
  assert_int_equal(j.r.status, 200);
  assert_non_null(strstr(j.r.headers, "Connection: close\r\n"));
  assert_int_equal(sp_test_run_until(&fx.loop, shutdown_called, NULL, 3000), 0);
  assert_int_equal(fx.shutdown_calls, 1);
}

static void test_shutdown_bound_closes_trickling_clients(void **state) {
  (void)state;
  /* Default timeouts: 10 s for headers, 30 s for the body. */
  sp_http_server_options_t o = default_opts();
  start_server(&o);
  raw_t body, head;
  raw_connect(&body);
  raw_connect(&head);
  const char b[] = "POST /trickle HTTP/1.1\r\nHost: a\r\nContent-Length: 1000\r\n\r\nabc";
  const char h[] = "POST /half HTTP/1.1\r\nHost: a\r\nContent-";
  raw_send(&body, b, sizeof b - 1);
  raw_send(&head, h, sizeof h - 1);
  received_target = sizeof b - 1 + sizeof h - 1;
  assert_int_equal(sp_test_run_until(&fx.loop, received_at_least, NULL, 3000), 0);

  uv_update_time(&fx.loop);
  uint64_t t0 = uv_now(&fx.loop);
  sp_http_server_shutdown_within(fx.srv, 200, on_shutdown, &fx);
  assert_int_equal(fx.shutdown_calls, 0);
  /* A byte every 40 ms keeps neither connection open past the bound. */
  for (int i = 0; i < 50 && !body.eof; i++) {
    send(body.fd, "x", 1, MSG_NOSIGNAL);
    sp_test_run_until(&fx.loop, raw_eof, &body, 40);
  }
  assert_true(body.eof);
  assert_int_equal(sp_test_run_until(&fx.loop, raw_eof, &head, 1000), 0);
  assert_int_equal(sp_test_run_until(&fx.loop, shutdown_called, NULL, 1000), 0);
  uv_update_time(&fx.loop);
  uint64_t took = uv_now(&fx.loop) - t0;
  assert_true(took >= 150 && took < 900);
  assert_int_equal(fx.shutdown_calls, 1);
  assert_int_equal(body.len, 0); /* abandoned: closed without an answer */
  assert_int_equal(fx.handled, 0);
  sp_http_server_stats_t st;
  sp_http_server_stats(fx.srv, &st);
  assert_int_equal(st.shutdown_aborts, 2);
  assert_int_equal(st.connections_active, 0);
  raw_close(&body);
  raw_close(&head);
}

static void test_shutdown_answers_late_requests_503(void **state) {
  (void)state;
  sp_http_server_options_t o = default_opts();
  start_server(&o);
  fx.mode = MODE_HOLD;
  raw_t r;
  raw_connect(&r);
  const char two[] = "GET /first HTTP/1.1\r\nHost: a\r\n\r\n"
                     "POST /second HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\n\r\nbody";
  raw_send(&r, two, sizeof two - 1);
  assert_int_equal(sp_test_run_until(&fx.loop, held_at_least_one, NULL, 3000), 0);
  /* The first response is keep-alive (built before shutdown); the request
   * pipelined behind it began after shutdown: 503, not the handler. */
  release_held();
  sp_http_server_shutdown_within(fx.srv, 2000, on_shutdown, &fx);
  assert_int_equal(sp_test_run_until(&fx.loop, raw_eof, &r, 3000), 0);
  assert_int_equal(sp_test_run_until(&fx.loop, shutdown_called, NULL, 3000), 0);
  const char *first = strstr(r.buf, "GET /first");
  const char *late = strstr(r.buf, "HTTP/1.1 503 Service Unavailable\r\n");
  assert_non_null(first);
  assert_non_null(late);
  assert_true(late > first);
  assert_non_null(strstr(late, "Retry-After: 1\r\n"));
  assert_non_null(strstr(late, "Connection: close\r\n"));
  assert_int_equal(fx.handled, 1);
  raw_close(&r);
}

static void test_shutdown_without_start_and_restart(void **state) {
  (void)state;
  sp_http_server_options_t o = default_opts();
  assert_int_equal(sp_http_server_create(&fx.loop, &o, &fx.srv), 0);
  sp_http_server_shutdown(fx.srv, on_shutdown, &fx);
  assert_int_equal(fx.shutdown_calls, 0);
  assert_int_equal(sp_test_run_until(&fx.loop, shutdown_called, NULL, 1000), 0);
  /* start → shutdown → start again */
  assert_int_equal(sp_http_server_start(fx.srv), 0);
  fx.port = sp_http_server_port(fx.srv);
  job_t j = {.q = {.path = "/again"}};
  run_client(job_fn, &j);
  assert_int_equal(j.r.status, 200);
  /* never started at all: destroy directly */
  sp_http_server_t *other;
  assert_int_equal(sp_http_server_create(&fx.loop, &o, &other), 0);
  sp_http_server_destroy(other);
  sp_http_server_destroy(NULL);
}

static void test_endpoint_errors(void **state) {
  (void)state;
  sp_http_server_options_t o = default_opts();
  sp_http_server_t *s = NULL;
  sp_log_set_level(SP_LOG_OFF);
  o.endpoint = "no-port-here";
  assert_int_equal(sp_http_server_create(&fx.loop, &o, &s), SP_EINVAL);
  o.endpoint = "127.0.0.1:99999";
  assert_int_equal(sp_http_server_create(&fx.loop, &o, &s), SP_EINVAL);
  o.endpoint = "[::1]:0";
  assert_int_equal(sp_http_server_create(&fx.loop, &o, &s), 0);
  sp_http_server_destroy(s);
  o.endpoint = "localhost:0";
  assert_int_equal(sp_http_server_create(&fx.loop, &o, &s), 0);
  sp_http_server_destroy(s);

  /* Address in use. */
  o.endpoint = "127.0.0.1:0";
  start_server(&o);
  char ep[64];
  snprintf(ep, sizeof ep, "127.0.0.1:%d", fx.port);
  o.endpoint = ep;
  assert_int_equal(sp_http_server_create(&fx.loop, &o, &s), 0);
  assert_int_equal(sp_http_server_start(s), SP_EADDRINUSE);
  int done = 0;
  sp_http_server_shutdown(s, on_flag, &done);
  assert_int_equal(sp_test_run_until(&fx.loop, flag_set, &done, 1000), 0);
  sp_http_server_destroy(s);
  sp_log_set_level(SP_LOG_WARN);
}

static void test_cors(void **state) {
  (void)state;
  const char *origins[] = {"https://*.example.com", "http://localhost:3000"};
  const char *hdrs[] = {"X-Custom"};
  sp_http_cors_t cors = {.allowed_origins = origins,
                         .n_allowed_origins = 2,
                         .allowed_headers = hdrs,
                         .n_allowed_headers = 1,
                         .max_age = 600};
  sp_http_server_options_t o = default_opts();
  o.cors = &cors;
  start_server(&o);
  job_t pre = {
      .q = {.method = "OPTIONS",
            .path = "/v1/traces",
            .headers = {"Origin: https://app.example.com", "Access-Control-Request-Method: POST",
                        "Access-Control-Request-Headers: content-type, x-custom"}}};
  run_client(job_fn, &pre);
  assert_int_equal(pre.r.status, 204);
  assert_non_null(
      strstr(pre.r.headers, "Access-Control-Allow-Origin: https://app.example.com\r\n"));
  assert_non_null(strstr(pre.r.headers, "Access-Control-Allow-Methods: POST\r\n"));
  assert_non_null(
      strstr(pre.r.headers, "Access-Control-Allow-Headers: content-type, x-custom\r\n"));
  assert_non_null(strstr(pre.r.headers, "Access-Control-Max-Age: 600\r\n"));
  assert_int_equal(fx.handled, 0);

  job_t bad = {
      .q = {.method = "OPTIONS",
            .path = "/v1/traces",
            .headers = {"Origin: https://evil.com", "Access-Control-Request-Method: POST"}}};
  run_client(job_fn, &bad);
  assert_int_equal(bad.r.status, 204);
  assert_null(strstr(bad.r.headers, "Access-Control-Allow-Origin"));
  job_t badh = {
      .q = {.method = "OPTIONS",
            .path = "/v1/traces",
            .headers = {"Origin: http://localhost:3000", "Access-Control-Request-Method: POST",
                        "Access-Control-Request-Headers: x-other"}}};
  run_client(job_fn, &badh);
  assert_null(strstr(badh.r.headers, "Access-Control-Allow-Origin"));
  assert_int_equal(fx.handled, 0);

  job_t post = {.q = {.path = "/v1/traces",
                      .body = "x",
                      .len = 1,
                      .headers = {"Origin: https://a.b.example.com"}}};
  run_client(job_fn, &post);
  assert_int_equal(post.r.status, 200);
  assert_non_null(
      strstr(post.r.headers, "Access-Control-Allow-Origin: https://a.b.example.com\r\n"));
  assert_non_null(strstr(post.r.headers, "Vary: Origin\r\n"));
  job_t other = {
      .q = {
          .path = "/v1/traces", .body = "x", .len = 1, .headers = {"Origin: https://example.org"}}};
  run_client(job_fn, &other);
  assert_int_equal(other.r.status, 200);
  assert_null(strstr(other.r.headers, "Access-Control-Allow-Origin"));
  sp_http_server_stats_t st;
  sp_http_server_stats(fx.srv, &st);
  assert_int_equal(st.preflights, 3);
}

static int group_setup(void **state) {
  (void)state;
  curl_global_init(CURL_GLOBAL_DEFAULT);
  sp_log_set_level(SP_LOG_WARN);
  return sp_testcerts_create(&certs) == 0 ? 0 : -1;
}

static int group_teardown(void **state) {
  (void)state;
  sp_testcerts_destroy(&certs);
  curl_global_cleanup();
  return 0;
}

#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)

int main(void) {
  const struct CMUnitTest tests[] = {
      T(test_simple_post),
      T(test_keep_alive_reuses_connection),
      T(test_connection_close_honoured),
      T(test_http10),
      T(test_pipelined_requests_in_order),
      T(test_take_body),
      T(test_request_target_and_headers),
      T(test_expect_100_continue),
      T(test_chunked_body),
      T(test_compressed_bodies),
      T(test_gzip_bomb_is_refused),
      T(test_content_length_over_limit),
      T(test_bad_encodings),
      T(test_async_respond),
      T(test_respond_after_peer_closed),
      T(test_header_timeout),
      T(test_body_and_idle_timeouts),
      T(test_malformed_and_oversized_headers),
      T(test_many_concurrent_connections),
      T(test_declared_length_is_not_reserved_up_front),
      T(test_max_connections),
      T(test_tls),
      T(test_mtls),
      T(test_tls_config_errors),
      T(test_tls_conn_memory_bios),
      T(test_graceful_shutdown_with_inflight_request),
      T(test_shutdown_bound_closes_trickling_clients),
      T(test_shutdown_answers_late_requests_503),
      T(test_shutdown_without_start_and_restart),
      T(test_endpoint_errors),
      T(test_cors),
  };
  return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
