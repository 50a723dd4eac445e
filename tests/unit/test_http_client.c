/*
 * test_http_client.c — the libcurl-multi HTTP client against a scripted
 * server that lives in this file.
 *
 * The server is raw libuv TCP on 127.0.0.1, port 0. It reads a request
 * (headers up to the blank line, then Content-Length bytes of body), records
 * it, and answers with the next scripted response: status, headers, body,
 * optionally after a delay, or hangs, or closes without answering. With an
 * SSL_CTX it speaks TLS through OpenSSL memory BIOs, with certificates from
 * tests/support/testcerts generated per run.
 *
 * Every test runs its own loop until a condition holds or a deadline passes,
 * and ends with uv_loop_close() == 0 (no leaked handle).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "pipeline/alloc.h"
#include "pipeline/buf.h"
#include "pipeline/error.h"
#include "pipeline/log.h"
#include "pipeline/transport/http_client.h"

#include "support/testcerts.h"

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

/* ------------------------------------------------------------------------ */
/* certificates (tests/support/testcerts: CA, server for localhost/127.0.0.1,  */
/* client, and a client signed by an untrusted CA)                            */
/* ------------------------------------------------------------------------ */

static sp_testcerts_t g_certs;
static bool g_certs_ready;

static void certs_make(void) {
  if (g_certs_ready) return;
  assert_int_equal(sp_testcerts_create(&g_certs), 0);
  g_certs_ready = true;
}

static void certs_free(void) {
  if (!g_certs_ready) return;
  sp_testcerts_destroy(&g_certs);
  g_certs_ready = false;
}

/* ------------------------------------------------------------------------ */
/* the scripted test server                                                   */
/* ------------------------------------------------------------------------ */

enum { REPLY_ANSWER, REPLY_HANG, REPLY_CLOSE, REPLY_UNTIL_CLOSE };

typedef struct reply_s {
  int mode;
  int status;
  const char *headers; /* extra raw header lines, each ending in \r\n */
  const char *body;
  size_t body_len;
  uint64_t delay_ms;
  bool close_after; /* close the connection silently once answered */
} reply_t;

typedef struct srv_s srv_t;
typedef struct conn_s conn_t;

struct conn_s {
  uv_tcp_t tcp;
  uv_timer_t delay;
  srv_t *srv;
  conn_t *prev, *next;
  sp_buf_t in;
  SSL *ssl;
  BIO *rbio, *wbio;
  reply_t pending;
  int writes;
  int closes;
  bool closing;
  bool close_after_write;
};

struct srv_s {
  uv_loop_t *loop;
  uv_tcp_t listener;
  int port;
  SSL_CTX *ssl_ctx;
  reply_t script[8];
  size_t n_script, next;
  reply_t dflt;
  conn_t *conns;
  int accepted;
  int requests;
  int tls_failures;
  int closing;
  /* The last request, as received. */
  char method[16];
  char path[256];
  char *head; /* header block (malloc) */
  sp_buf_t body;
  char sni[256];
};

static void on_conn_closed(uv_handle_t *h) {
  conn_t *c = h->data;
  if (++c->closes < 2) return;
  srv_t *s = c->srv;
  if (c->ssl) SSL_free(c->ssl); /* frees the BIOs too */
  free(c->in.data);
  free(c);
  s->closing--;
}

static void conn_close(conn_t *c) {
  if (c->closing) return;
  c->closing = true;
  srv_t *s = c->srv;
  if (c->prev)
    c->prev->next = c->next;
  else
    s->conns = c->next;
  if (c->next) c->next->prev = c->prev;
  s->closing++;
  uv_close((uv_handle_t *)&c->tcp, on_conn_closed);
  uv_close((uv_handle_t *)&c->delay, on_conn_closed);
}

typedef struct wreq_s {
  uv_write_t req;
  conn_t *conn;
  char data[];
} wreq_t;

static void on_written(uv_write_t *req, int status) {
  wreq_t *w = (wreq_t *)req;
  conn_t *c = w->conn;
  free(w);
  c->writes--;
  if (c->close_after_write && c->writes == 0) conn_close(c);
}

static void raw_write(conn_t *c, const void *p, size_t n) {
  if (c->closing) return;
  wreq_t *w = malloc(sizeof *w + n);
  assert_non_null(w);
  memcpy(w->data, p, n);
  w->conn = c;
  uv_buf_t buf = uv_buf_init(w->data, (unsigned)n);
  c->writes++;
  if (uv_write(&w->req, (uv_stream_t *)&c->tcp, &buf, 1, on_written) != 0) {
    c->writes--;
    free(w);
  }
}

static void tls_flush(conn_t *c) {
  char tmp[16384];
  int n;
  while ((n = BIO_read(c->wbio, tmp, sizeof tmp)) > 0)
    raw_write(c, tmp, (size_t)n);
}

static void conn_send(conn_t *c, const void *p, size_t n) {
  if (!c->ssl) {
    raw_write(c, p, n);
    return;
  }
  while (n > 0) {
    int w = SSL_write(c->ssl, p, n > 65536 ? 65536 : (int)n);
    assert_true(w > 0);
    p = (const char *)p + w;
    n -= (size_t)w;
    tls_flush(c);
  }
}

static void conn_close_soon(conn_t *c) {
  c->close_after_write = true;
  if (c->writes == 0) conn_close(c);
}

static void send_reply(conn_t *c, const reply_t *r) {
  char head[1024];
  int n = snprintf(head, sizeof head, "HTTP/1.1 %d Scripted\r\n%s%s", r->status,
                   r->headers ? r->headers : "",
                   r->mode == REPLY_UNTIL_CLOSE ? "Connection: close\r\n" : "");
  if (r->mode != REPLY_UNTIL_CLOSE)
    n += snprintf(head + n, sizeof head - (size_t)n, "Content-Length: %zu\r\n", r->body_len);
  n += snprintf(head + n, sizeof head - (size_t)n, "\r\n");
  conn_send(c, head, (size_t)n);
  if (r->body_len) conn_send(c, r->body, r->body_len);
  if (r->mode == REPLY_UNTIL_CLOSE || r->close_after) conn_close_soon(c);
}

static void on_delay(uv_timer_t *t) {
  conn_t *c = t->data;
  send_reply(c, &c->pending);
}

/* Value of header @p name in the header block @p head, copied into @p out. */
static bool head_value(const char *head, const char *name, char *out, size_t cap) {
  size_t nl = strlen(name);
  for (const char *p = head; p && *p; p = strstr(p, "\r\n"), p = p ? p + 2 : NULL) {
    if (strncasecmp(p, name, nl) == 0 && p[nl] == ':') {
      const char *v = p + nl + 1;
      while (*v == ' ')
        v++;
      const char *e = strstr(v, "\r\n");
      size_t len = e ? (size_t)(e - v) : strlen(v);
      if (len >= cap) len = cap - 1;
      memcpy(out, v, len);
      out[len] = '\0';
      return true;
    }
  }
  return false;
}

/* Consumes every complete request in c->in. */
static void conn_process(conn_t *c) {
  srv_t *s = c->srv;
  for (;;) {
    if (c->closing || c->in.len == 0) return;
    char *data = (char *)c->in.data;
    char *end = memmem(data, c->in.len, "\r\n\r\n", 4);
    if (!end) return;
    size_t head_len = (size_t)(end - data) + 2; /* keep the last CRLF */
    char *head = strndup(data, head_len);
    char cl[32];
    size_t body_len = head_value(head, "Content-Length", cl, sizeof cl) ? strtoul(cl, NULL, 10) : 0;
    size_t total = head_len + 2 + body_len;
    if (c->in.len < total) {
      free(head);
      return;
    }
    sscanf(head, "%15s %255s", s->method, s->path);
    free(s->head);
    s->head = head;
    s->body.len = 0;
    sp_buf_append(&s->body, data + head_len + 2, body_len);
    memmove(data, data + total, c->in.len - total);
    c->in.len -= total;
    s->requests++;

    reply_t r = s->next < s->n_script ? s->script[s->next++] : s->dflt;
    switch (r.mode) {
    case REPLY_HANG: break;
    case REPLY_CLOSE: conn_close(c); return;
    default:
      if (r.delay_ms) {
        c->pending = r;
        uv_timer_start(&c->delay, on_delay, r.delay_ms, 0);
      } else {
        send_reply(c, &r);
      }
    }
  }
}

static void conn_in_append(conn_t *c, const void *p, size_t n) {
  /* The test server's buffers come from malloc, not sp_malloc, so that
   * allocation-failure injection only hits the client. */
  if (c->in.len + n > c->in.cap) {
    size_t cap = c->in.cap ? c->in.cap : 4096;
    while (cap < c->in.len + n)
      cap *= 2;
    c->in.data = realloc(c->in.data, cap);
    assert_non_null(c->in.data);
    c->in.cap = cap;
  }
  memcpy(c->in.data + c->in.len, p, n);
  c->in.len += n;
}

static void conn_tls_input(conn_t *c, const char *p, size_t n) {
  BIO_write(c->rbio, p, (int)n);
  if (!SSL_is_init_finished(c->ssl)) {
    int r = SSL_do_handshake(c->ssl);
    tls_flush(c);
    if (r <= 0) {
      int e = SSL_get_error(c->ssl, r);
      if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE) {
        c->srv->tls_failures++;
        ERR_clear_error();
        conn_close_soon(c);
      }
      return;
    }
    const char *sni = SSL_get_servername(c->ssl, TLSEXT_NAMETYPE_host_name);
    snprintf(c->srv->sni, sizeof c->srv->sni, "%s", sni ? sni : "");
  }
  char tmp[16384];
  int r;
  while ((r = SSL_read(c->ssl, tmp, sizeof tmp)) > 0)
    conn_in_append(c, tmp, (size_t)r);
  int e = SSL_get_error(c->ssl, r);
  tls_flush(c);
  if (e != SSL_ERROR_WANT_READ) {
    if (e != SSL_ERROR_ZERO_RETURN) c->srv->tls_failures++;
    ERR_clear_error();
    conn_close_soon(c);
    return;
  }
  conn_process(c);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  static char slab[65536];
  buf->base = slab;
  buf->len = sizeof slab;
}

static void on_read(uv_stream_t *stream, ssize_t n, const uv_buf_t *buf) {
  conn_t *c = stream->data;
  if (n < 0) {
    conn_close(c);
    return;
  }
  if (n == 0) return;
  if (c->ssl) {
    conn_tls_input(c, buf->base, (size_t)n);
  } else {
    conn_in_append(c, buf->base, (size_t)n);
    conn_process(c);
  }
}

static void on_connection(uv_stream_t *listener, int status) {
  srv_t *s = listener->data;
  assert_int_equal(status, 0);
  conn_t *c = calloc(1, sizeof *c);
  assert_non_null(c);
  c->srv = s;
  uv_tcp_init(s->loop, &c->tcp);
  uv_timer_init(s->loop, &c->delay);
  c->tcp.data = c;
  c->delay.data = c;
  c->next = s->conns;
  if (s->conns) s->conns->prev = c;
  s->conns = c;
  assert_int_equal(uv_accept(listener, (uv_stream_t *)&c->tcp), 0);
  s->accepted++;
  if (s->ssl_ctx) {
    c->ssl = SSL_new(s->ssl_ctx);
    c->rbio = BIO_new(BIO_s_mem());
    c->wbio = BIO_new(BIO_s_mem());
    SSL_set_bio(c->ssl, c->rbio, c->wbio);
    SSL_set_accept_state(c->ssl);
  }
  uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
}

static srv_t *srv_start(uv_loop_t *loop, SSL_CTX *ssl_ctx) {
  srv_t *s = calloc(1, sizeof *s);
  assert_non_null(s);
  s->loop = loop;
  s->ssl_ctx = ssl_ctx;
  s->dflt = (reply_t){.mode = REPLY_ANSWER, .status = 200, .body = "ok", .body_len = 2};
  uv_tcp_init(loop, &s->listener);
  s->listener.data = s;
  struct sockaddr_in addr;
  uv_ip4_addr("127.0.0.1", 0, &addr);
  assert_int_equal(uv_tcp_bind(&s->listener, (const struct sockaddr *)&addr, 0), 0);
  assert_int_equal(uv_listen((uv_stream_t *)&s->listener, 256, on_connection), 0);
  struct sockaddr_storage ss;
  int len = sizeof ss;
  uv_tcp_getsockname(&s->listener, (struct sockaddr *)&ss, &len);
  s->port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
  return s;
}

static void srv_script(srv_t *s, reply_t r) {
  assert_true(s->n_script < 8);
  s->script[s->n_script++] = r;
}

static void on_listener_closed(uv_handle_t *h) {
  srv_t *s = h->data;
  s->closing--;
}

static void srv_stop(srv_t *s) {
  while (s->conns)
    conn_close(s->conns);
  s->closing++;
  uv_close((uv_handle_t *)&s->listener, on_listener_closed);
}

static void srv_free(srv_t *s) {
  if (!s) return;
  assert_int_equal(s->closing, 0);
  if (s->ssl_ctx) SSL_CTX_free(s->ssl_ctx);
  free(s->head);
  sp_buf_free(&s->body);
  free(s);
}

static SSL_CTX *srv_tls_ctx(bool require_client_cert) {
  SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
  assert_non_null(ctx);
  assert_int_equal(SSL_CTX_use_certificate_chain_file(ctx, g_certs.server_cert), 1);
  assert_int_equal(SSL_CTX_use_PrivateKey_file(ctx, g_certs.server_key, SSL_FILETYPE_PEM), 1);
  if (require_client_cert) {
    assert_int_equal(SSL_CTX_load_verify_locations(ctx, g_certs.ca_cert, NULL), 1);
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
  }
  return ctx;
}

/* ------------------------------------------------------------------------ */
/* fixture and helpers                                                        */
/* ------------------------------------------------------------------------ */

typedef struct env_s {
  uv_loop_t loop;
  uv_timer_t guard; /* wakes the loop while a test waits */
  srv_t *srv;
  sp_http_client_t *client;
  bool shut;
} env_t;

static void on_guard(uv_timer_t *t) {}

/* Runs the loop until *counter >= target or timeout_ms passes. */
static bool run_until(env_t *env, const int *counter, int target, uint64_t timeout_ms) {
  uint64_t deadline = uv_hrtime() + timeout_ms * 1000000u;
  uv_timer_start(&env->guard, on_guard, 10, 10);
  while (*counter < target && uv_hrtime() < deadline)
    uv_run(&env->loop, UV_RUN_ONCE);
  uv_timer_stop(&env->guard);
  return *counter >= target;
}

static int setup(void **state) {
  env_t *env = calloc(1, sizeof *env);
  assert_non_null(env);
  assert_int_equal(uv_loop_init(&env->loop), 0);
  uv_timer_init(&env->loop, &env->guard);
  *state = env;
  return 0;
}

static void on_shut(void *arg) { ((env_t *)arg)->shut = true; }

/* Shuts the current client down, waits for its callback and frees it. */
static void client_close(env_t *env) {
  if (!env->client) return;
  env->shut = false;
  sp_http_client_shutdown(env->client, on_shut, env);
  uint64_t deadline = uv_hrtime() + 5000000000u;
  uv_timer_start(&env->guard, on_guard, 10, 10);
  while (!env->shut && uv_hrtime() < deadline)
    uv_run(&env->loop, UV_RUN_ONCE);
  uv_timer_stop(&env->guard);
  int shut = env->shut;
  assert_true(shut);
  sp_http_client_destroy(env->client);
  env->client = NULL;
}

static int teardown(void **state) {
  env_t *env = *state;
  client_close(env);
  if (env->srv) srv_stop(env->srv);
  uv_close((uv_handle_t *)&env->guard, NULL);
  uv_run(&env->loop, UV_RUN_DEFAULT);
  srv_free(env->srv);
  assert_int_equal(uv_loop_close(&env->loop), 0);
  free(env);
  return 0;
}

static sp_http_client_t *client_new(env_t *env, const sp_http_client_options_t *opts) {
  sp_http_client_t *c = NULL;
  assert_int_equal(sp_http_client_create(&env->loop, opts, &c), 0);
  env->client = c;
  return c;
}

/* One request's outcome, copied out of the callback. */
typedef struct res_s {
  int *done; /* shared completion counter */
  bool called;
  int err;
  int status;
  char *body;
  size_t body_len;
  uint64_t retry_after_ms;
  uint64_t elapsed_ms;
  char error[256];
  char reply_hdr[64]; /* X-Reply, when present */
} res_t;

static void on_result(const sp_http_client_result_t *r, void *arg) {
  res_t *res = arg;
  assert_false(res->called);
  res->called = true;
  res->err = r->err;
  res->status = r->status;
  assert_non_null(r->error);
  snprintf(res->error, sizeof res->error, "%s", r->error);
  res->retry_after_ms = r->retry_after_ms;
  res->elapsed_ms = r->elapsed_ms;
  res->body_len = r->body_len;
  free(res->body);
  res->body = NULL;
  if (r->body_len) {
    res->body = malloc(r->body_len + 1);
    memcpy(res->body, r->body, r->body_len);
    res->body[r->body_len] = '\0';
  }
  const char *h = sp_http_client_result_header(r, "x-REPLY");
  snprintf(res->reply_hdr, sizeof res->reply_hdr, "%s", h ? h : "");
  (*res->done)++;
}

static char *url_of(const srv_t *s, const char *scheme, const char *host, const char *path) {
  static char buf[256];
  snprintf(buf, sizeof buf, "%s://%s:%d%s", scheme, host, s->port, path);
  return buf;
}

/* Sends one request and waits for its callback. */
static void roundtrip(env_t *env, const sp_http_client_request_t *req, res_t *res) {
  int done = 0;
  memset(res, 0, sizeof *res);
  res->done = &done;
  assert_int_equal(sp_http_client_request(env->client, req, on_result, res), 0);
  assert_int_equal(done, 0); /* never from inside the call */
  assert_true(run_until(env, &done, 1, 5000));
}

/* ------------------------------------------------------------------------ */
/* tests                                                                      */
/* ------------------------------------------------------------------------ */

static void test_parse_retry_after(void **state) {
  uint64_t ms = 1;
  time_t now = 1445412450; /* 2015-10-21 07:27:30 UTC */
  assert_int_equal(sp_http_parse_retry_after("2", now, &ms), 0);
  assert_int_equal(ms, 2000);
  assert_int_equal(sp_http_parse_retry_after("120", now, &ms), 0);
  assert_int_equal(ms, 120000);
  assert_int_equal(sp_http_parse_retry_after(" 0 ", now, &ms), 0);
  assert_int_equal(ms, 0);
  assert_int_equal(sp_http_parse_retry_after("99999999999999999999999", now, &ms), 0);
  assert_true(ms == UINT64_MAX);
  /* IMF-fixdate, 30 s after now; RFC 850 and asctime forms of the same. */
  assert_int_equal(sp_http_parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now, &ms), 0);
  assert_int_equal(ms, 30000);
  assert_int_equal(sp_http_parse_retry_after("Wednesday, 21-Oct-15 07:28:00 GMT", now, &ms), 0);
  assert_int_equal(ms, 30000);
  assert_int_equal(sp_http_parse_retry_after("Wed Oct 21 07:28:00 2015", now, &ms), 0);
  assert_int_equal(ms, 30000);
  /* asctime pads a one-digit day with a space; 1443657600 is Oct 1 2015. */
  assert_int_equal(sp_http_parse_retry_after("Thu Oct  1 00:00:00 2015", 1443657600 - 100, &ms), 0);
  assert_int_equal(ms, 100000);
  /* A date in the past means "now". */
  ms = 7;
  assert_int_equal(sp_http_parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", now, &ms), 0);
  assert_int_equal(ms, 0);
  const char *bad[] = {"",
                       "soon",
                       "-1",
                       "1.5",
                       "2 s",
                       "0x10",
                       "Wed, 32 Oct 2015 07:28:00 GMT",
                       "Wed, 29 Feb 2015 07:28:00 GMT",
                       "Wed, 21 Oct 2015 07:28:00 PST",
                       "Wed, 21 Oct 2015 25:28:00 GMT",
                       "Wed, 21 Oct 2015 07:28 GMT",
                       "Wed, 21 Foo 2015 07:28:00 GMT",
                       "Wed, 21 Oct 2015 07:28:00 GMT trailing",
                       "Wed Oct 21 07:28:00",
                       NULL};
  for (size_t i = 0; bad[i]; i++) {
    ms = 5;
    assert_int_equal(sp_http_parse_retry_after(bad[i], now, &ms), SP_EINVAL);
    assert_int_equal(ms, 0);
  }
  assert_int_equal(sp_http_parse_retry_after(NULL, now, &ms), SP_EINVAL);
}

static void test_post_body_and_headers(void **state) {
  env_t *env = *state;
  env->srv = srv_start(&env->loop, NULL);
  sp_http_header_t defaults[] = {{"X-Scope-OrgID", "tenant-1"}, {"X-Default", "replaced"}};
  sp_http_client_options_t opts = {.component = "test", .headers = defaults, .n_headers = 2};
  client_new(env, &opts);
  srv_script(env->srv, (reply_t){.status = 200,
                                 .headers = "X-Reply: yes\r\nContent-Type: text/plain\r\n",
                                 .body = "ok-body",
                                 .body_len = 7});
  /* 1.5 MB: large enough that curl would otherwise ask for 100-continue. */
  size_t n = 1536 * 1024;
  uint8_t *body = malloc(n);
  for (size_t i = 0; i < n; i++)
    body[i] = (uint8_t)(i * 31 + 7);
  sp_http_header_t hdrs[] = {{"Content-Type", "application/x-protobuf"},
                             {"X-Custom", "hello world"},
                             {"x-default", "mine"}};
  sp_http_client_request_t req = {.url = url_of(env->srv, "http", "127.0.0.1", "/v1/traces"),
                                  .headers = hdrs,
                                  .n_headers = 3,
                                  .body = body,
                                  .body_len = n};
  res_t res;
  roundtrip(env, &req, &res);
  assert_int_equal(res.err, 0);
  assert_int_equal(res.status, 200);
  assert_string_equal(res.error, "");
  assert_int_equal(res.body_len, 7);
  assert_string_equal(res.body, "ok-body");
  assert_string_equal(res.reply_hdr, "yes");

  srv_t *s = env->srv;
  assert_string_equal(s->method, "POST");
  assert_string_equal(s->path, "/v1/traces");
  assert_int_equal(s->body.len, n);
  assert_memory_equal(s->body.data, body, n);
  char v[128];
  assert_true(head_value(s->head, "content-type", v, sizeof v));
  assert_string_equal(v, "application/x-protobuf");
  assert_true(head_value(s->head, "x-custom", v, sizeof v));
  assert_string_equal(v, "hello world");
  assert_true(head_value(s->head, "x-scope-orgid", v, sizeof v));
  assert_string_equal(v, "tenant-1");
  assert_true(head_value(s->head, "x-default", v, sizeof v));
  assert_string_equal(v, "mine");
  assert_null(strstr(s->head, "replaced")); /* overridden, not duplicated */
  assert_true(head_value(s->head, "user-agent", v, sizeof v));
  assert_string_equal(v, "spanprofd/" SP_VERSION);
  assert_false(head_value(s->head, "expect", v, sizeof v));
  free(res.body);
  free(body);
}

static void test_get_and_methods(void **state) {
  env_t *env = *state;
  env->srv = srv_start(&env->loop, NULL);
  client_new(env, NULL);
  static char big[5000];
  memset(big, 'p', sizeof big);
  srv_script(env->srv, (reply_t){.status = 200, .body = big, .body_len = sizeof big});
  sp_http_client_request_t req = {.url = url_of(env->srv, "http", "localhost", "/debug/pprof")};
  res_t res;
  roundtrip(env, &req, &res);
  assert_int_equal(res.err, 0);
  assert_int_equal(res.status, 200);
  assert_int_equal(res.body_len, sizeof big);
  assert_memory_equal(res.body, big, sizeof big);
  assert_string_equal(env->srv->method, "GET");
  assert_int_equal(env->srv->body.len, 0);
  free(res.body);

  /* A reused handle switches methods cleanly: PUT with a body, then DELETE
   * and GET without. */
  req.method = "PUT";
  req.body = "abc";
  req.body_len = 3;
  roundtrip(env, &req, &res);
  assert_int_equal(res.status, 200);
  assert_string_equal(env->srv->method, "PUT");
  assert_int_equal(env->srv->body.len, 3);
  char v[64];
  assert_false(head_value(env->srv->head, "content-type", v, sizeof v)); /* no form label */
  free(res.body);
  req = (sp_http_client_request_t){.url = req.url, .method = "DELETE"};
  roundtrip(env, &req, &res);
  assert_string_equal(env->srv->method, "DELETE");
  assert_int_equal(env->srv->body.len, 0);
  free(res.body);
  req.method = NULL;
  roundtrip(env, &req, &res);
  assert_string_equal(env->srv->method, "GET");
  free(res.body);
  assert_int_equal(env->srv->accepted, 1);
}

static void test_retry_after_statuses(void **state) {
  env_t *env = *state;
  env->srv = srv_start(&env->loop, NULL);
  client_new(env, NULL);
  srv_script(env->srv, (reply_t){.status = 503, .headers = "Retry-After: 2\r\n"});
  char date_hdr[128];
  time_t later = time(NULL) + 10;
  struct tm tm;
  gmtime_r(&later, &tm);
  strftime(date_hdr, sizeof date_hdr, "Retry-After: %a, %d %b %Y %H:%M:%S GMT\r\n", &tm);
  srv_script(env->srv, (reply_t){.status = 429, .headers = date_hdr});
  srv_script(env->srv, (reply_t){.status = 429, .body = "slow down", .body_len = 9});
  srv_script(env->srv, (reply_t){.status = 503, .headers = "Retry-After: whenever\r\n"});
  sp_http_client_request_t req = {
      .url = url_of(env->srv, "http", "127.0.0.1", "/"), .body = "x", .body_len = 1};
  res_t res;
  roundtrip(env, &req, &res);
  assert_int_equal(res.err, 0);
  assert_int_equal(res.status, 503);
  assert_int_equal(res.retry_after_ms, 2000);
  roundtrip(env, &req, &res);
  assert_int_equal(res.err, 0);
  assert_int_equal(res.status, 429);
  assert_true(res.retry_after_ms >= 8000 && res.retry_after_ms <= 10000);
  roundtrip(env, &req, &res);
  assert_int_equal(res.err, 0);
  assert_int_equal(res.status, 429);
  assert_int_equal(res.retry_after_ms, 0);
  assert_string_equal(res.body, "slow down");
  free(res.body);
  roundtrip(env, &req, &res);
  assert_int_equal(res.status, 503);
  assert_int_equal(res.retry_after_ms, 0);
}

static void test_connection_refused(void **state) {
  env_t *env = *state;
  /* Find a port nobody listens on: bind one, note it, close it. */
  uv_tcp_t tmp;
  uv_tcp_init(&env->loop, &tmp);
  struct sockaddr_in addr;
  uv_ip4_addr("127.0.0.1", 0, &addr);
  assert_int_equal(uv_tcp_bind(&tmp, (const struct sockaddr *)&addr, 0), 0);
  struct sockaddr_storage ss;
  int len = sizeof ss;
  uv_tcp_getsockname(&tmp, (struct sockaddr *)&ss, &len);
  int port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
  uv_close((uv_handle_t *)&tmp, NULL);
  uv_run(&env->loop, UV_RUN_NOWAIT);

  client_new(env, NULL);
  char url[64];
  snprintf(url, sizeof url, "http://127.0.0.1:%d/v1/traces", port);
  sp_http_client_request_t req = {.url = url, .body = "x", .body_len = 1};
  res_t res;
  roundtrip(env, &req, &res);
  assert_int_equal(res.err, SP_EIO);
  assert_int_equal(res.status, 0);
  assert_true(strlen(res.error) > 0);
  assert_non_null(strstr(res.error, "onnect")); /* curl: "Failed to connect ..." */
}

static void test_timeout(void **state) {
  env_t *env = *state;
  env->srv = srv_start(&env->loop, NULL);
  env->srv->dflt.mode = REPLY_HANG;
  client_new(env, NULL);
  sp_http_client_request_t req = {.url = url_of(env->srv, "http", "127.0.0.1", "/"),
                                  .timeout_ms = 300};
  res_t res;
  uint64_t t0 = uv_hrtime();
  roundtrip(env, &req, &res);
  uint64_t took = (uv_hrtime() - t0) / 1000000u;
  assert_int_equal(res.err, SP_ETIMEDOUT);
  assert_int_equal(env->srv->requests, 1);
  assert_true(took >= 290 && took < 2000);
  assert_true(res.elapsed_ms >= 290 && res.elapsed_ms < 2000);
  assert_true(strlen(res.error) > 0);
}

static void test_too_big(void **state) {
  env_t *env = *state;
  env->srv = srv_start(&env->loop, NULL);
  client_new(env, NULL);
  static char big[10000];
  memset(big, 'z', sizeof big);
  /* Announced by Content-Length, then delimited by the connection closing. */
  srv_script(env->srv, (reply_t){.status = 200, .body = big, .body_len = sizeof big});
  srv_script(
      env->srv,
      (reply_t){.mode = REPLY_UNTIL_CLOSE, .status = 200, .body = big, .body_len = sizeof big});
  srv_script(env->srv, (reply_t){.status = 200, .body = big, .body_len = 1000});
  sp_http_client_request_t req = {.url = url_of(env->srv, "http", "127.0.0.1", "/"),
                                  .max_response_bytes = 1000};
  res_t res;
  roundtrip(env, &req, &res);
  assert_int_equal(res.err, SP_ETOOBIG);
  assert_null(res.body);
  assert_non_null(strstr(res.error, "1000"));
  roundtrip(env, &req, &res);
  assert_int_equal(res.err, SP_ETOOBIG);
  roundtrip(env, &req, &res); /* exactly at the limit is fine */
  assert_int_equal(res.err, 0);
  assert_int_equal(res.body_len, 1000);
  free(res.body);
}

static void test_concurrent(void **state) {
  env_t *env = *state;
  env->srv = srv_start(&env->loop, NULL);
  env->srv->dflt.delay_ms = 2;
  client_new(env, &(sp_http_client_options_t){.max_conns_per_host = 8});
  enum { N = 100 };
  static res_t res[N];
  int done = 0;
  sp_http_client_request_t req = {
      .url = url_of(env->srv, "http", "127.0.0.1", "/v1/traces"), .body = "payload", .body_len = 7};
  for (int i = 0; i < N; i++) {
    memset(&res[i], 0, sizeof res[i]);
    res[i].done = &done;
    assert_int_equal(sp_http_client_request(env->client, &req, on_result, &res[i]), 0);
  }
  assert_int_equal(sp_http_client_pending(env->client), N);
  assert_true(run_until(env, &done, N, 10000));
  for (int i = 0; i < N; i++) {
    assert_int_equal(res[i].err, 0);
    assert_int_equal(res[i].status, 200);
    free(res[i].body);
  }
  assert_int_equal(sp_http_client_pending(env->client), 0);
  assert_int_equal(env->srv->requests, N);
  assert_true(env->srv->accepted >= 1 && env->srv->accepted <= 8);
}

static void test_server_closes(void **state) {
  env_t *env = *state;
  env->srv = srv_start(&env->loop, NULL);
  client_new(env, NULL);
  srv_script(env->srv, (reply_t){.mode = REPLY_CLOSE});
  srv_script(env->srv, (reply_t){.status = 200, .body = "one", .body_len = 3, .close_after = true});
  srv_script(env->srv, (reply_t){.status = 200, .body = "two", .body_len = 3});
  sp_http_client_request_t req = {
      .url = url_of(env->srv, "http", "127.0.0.1", "/"), .body = "b", .body_len = 1};
  res_t res;
  /* Closed without an answer on a fresh connection: a transport error. */
  roundtrip(env, &req, &res);
  assert_int_equal(res.err, SP_EIO);
  assert_int_equal(res.status, 0);
  assert_true(strlen(res.error) > 0);
  /* An idle keep-alive connection the server dropped is not reused. */
  roundtrip(env, &req, &res);
  assert_int_equal(res.err, 0);
  assert_string_equal(res.body, "one");
  free(res.body);
  int closed_before = env->srv->accepted;
  roundtrip(env, &req, &res);
  assert_int_equal(res.err, 0);
  assert_string_equal(res.body, "two");
  free(res.body);
  assert_int_equal(env->srv->accepted, closed_before + 1);
}

/* Chains sequential requests: each callback starts the next one. */
typedef struct chain_s {
  env_t *env;
  sp_http_client_request_t req;
  int left;
  int done;
  int failures;
} chain_t;

static void on_chain(const sp_http_client_result_t *r, void *arg) {
  chain_t *ch = arg;
  if (r->err != 0 || r->status != 200) ch->failures++;
  ch->done++;
  if (--ch->left > 0)
    assert_int_equal(sp_http_client_request(ch->env->client, &ch->req, on_chain, ch), 0);
}

static void test_keep_alive(void **state) {
  env_t *env = *state;
  env->srv = srv_start(&env->loop, NULL);
  client_new(env, NULL);
  chain_t ch = {
      .env = env,
      .req = {.url = url_of(env->srv, "http", "127.0.0.1", "/"), .body = "a", .body_len = 1},
      .left = 5};
  assert_int_equal(sp_http_client_request(env->client, &ch.req, on_chain, &ch), 0);
  assert_true(run_until(env, &ch.done, 5, 5000));
  assert_int_equal(ch.failures, 0);
  assert_int_equal(env->srv->requests, 5);
  assert_int_equal(env->srv->accepted, 1);
}

static void test_no_keep_alive(void **state) {
  env_t *env = *state;
  env->srv = srv_start(&env->loop, NULL);
  client_new(env, &(sp_http_client_options_t){.disable_keep_alive = true});
  chain_t ch = {.env = env, .req = {.url = url_of(env->srv, "http", "127.0.0.1", "/")}, .left = 3};
  assert_int_equal(sp_http_client_request(env->client, &ch.req, on_chain, &ch), 0);
  assert_true(run_until(env, &ch.done, 3, 5000));
  assert_int_equal(ch.failures, 0);
  assert_int_equal(env->srv->accepted, 3);
}

static bool g_in_shutdown_call;

static void on_canceled(const sp_http_client_result_t *r, void *arg) {
  assert_false(g_in_shutdown_call);
  on_result(r, arg);
}

static void test_shutdown_in_flight(void **state) {
  env_t *env = *state;
  env->srv = srv_start(&env->loop, NULL);
  env->srv->dflt.mode = REPLY_HANG;
  client_new(env, NULL);
  enum { N = 5 };
  res_t res[N];
  int done = 0;
  sp_http_client_request_t req = {
      .url = url_of(env->srv, "http", "127.0.0.1", "/"), .body = "a", .body_len = 1};
  for (int i = 0; i < N; i++) {
    memset(&res[i], 0, sizeof res[i]);
    res[i].done = &done;
    assert_int_equal(sp_http_client_request(env->client, &req, on_canceled, &res[i]), 0);
  }
  assert_true(run_until(env, &env->srv->requests, N, 5000));
  assert_int_equal(done, 0);

  g_in_shutdown_call = true;
  sp_http_client_shutdown(env->client, on_shut, env);
  sp_http_client_shutdown(env->client, NULL, NULL); /* idempotent */
  g_in_shutdown_call = false;
  assert_false(env->shut);
  res_t late = {.done = &done};
  assert_int_equal(sp_http_client_request(env->client, &req, on_result, &late), SP_ESHUTDOWN);

  int shut_flag = 0;
  uv_timer_start(&env->guard, on_guard, 10, 10);
  uint64_t deadline = uv_hrtime() + 5000000000u;
  while (!env->shut && uv_hrtime() < deadline)
    uv_run(&env->loop, UV_RUN_ONCE);
  uv_timer_stop(&env->guard);
  shut_flag = env->shut;
  assert_true(shut_flag);
  assert_int_equal(done, N);
  for (int i = 0; i < N; i++) {
    assert_int_equal(res[i].err, SP_ECANCELED);
    assert_true(strlen(res[i].error) > 0);
  }
  assert_false(late.called);
  sp_http_client_destroy(env->client);
  env->client = NULL; /* teardown checks uv_loop_close() == 0 */
}

static void test_tls(void **state) {
  env_t *env = *state;
  certs_make();
  env->srv = srv_start(&env->loop, srv_tls_ctx(false));
  srv_t *s = env->srv;
  res_t res;
  char url_name[128], url_ip[128];
  snprintf(url_name, sizeof url_name, "https://localhost:%d/v1/traces", s->port);
  snprintf(url_ip, sizeof url_ip, "https://127.0.0.1:%d/v1/traces", s->port);
  sp_http_client_request_t req = {.url = url_name, .body = "secret", .body_len = 6};

  /* The system CA bundle does not know our CA: verification fails. */
  client_new(env, NULL);
  roundtrip(env, &req, &res);
  assert_int_equal(res.err, SP_EIO);
  assert_non_null(strstr(res.error, "certificate")); /* curl's reason */
  assert_int_equal(s->requests, 0);
  client_close(env);

  /* With the CA it verifies, and the body arrives. */
  sp_tls_config_t tls = {.present = true, .ca_file = g_certs.ca_cert};
  client_new(env, &(sp_http_client_options_t){.tls = &tls});
  roundtrip(env, &req, &res);
  assert_int_equal(res.err, 0);
  assert_int_equal(res.status, 200);
  assert_int_equal(s->requests, 1);
  assert_string_equal(s->sni, "localhost");
  assert_memory_equal(s->body.data, "secret", 6);
  free(res.body);
  /* The TLS connection is kept and reused. */
  int accepted = s->accepted;
  roundtrip(env, &req, &res);
  assert_int_equal(res.status, 200);
  assert_int_equal(s->accepted, accepted);
  free(res.body);
  /* TLS enabled and not insecure: plaintext URLs are refused. */
  sp_http_client_request_t plain = {.url = url_of(s, "http", "127.0.0.1", "/")};
  roundtrip(env, &plain, &res);
  assert_int_equal(res.err, SP_EINVAL);
  assert_non_null(strstr(res.error, "plaintext"));
  client_close(env);

  /* server_name_override: connect to the IP, verify and send SNI for a name
   * the certificate carries, keep the Host header of the URL. */
  tls.server_name_override = "localhost";
  client_new(env, &(sp_http_client_options_t){.tls = &tls});
  req.url = url_ip;
  s->sni[0] = '\0'; /* curl sends no SNI for an IP address of its own accord */
  roundtrip(env, &req, &res);
  assert_int_equal(res.err, 0);
  assert_int_equal(res.status, 200);
  assert_string_equal(s->sni, "localhost");
  char v[128], want[64];
  assert_true(head_value(s->head, "host", v, sizeof v));
  snprintf(want, sizeof want, "127.0.0.1:%d", s->port);
  assert_string_equal(v, want);
  free(res.body);
  client_close(env);

  /* A name the certificate does not carry fails verification. */
  tls.server_name_override = "wrong.test";
  client_new(env, &(sp_http_client_options_t){.tls = &tls});
  int before = s->requests;
  roundtrip(env, &req, &res);
  assert_int_equal(res.err, SP_EIO);
  assert_non_null(strstr(res.error, "wrong.test"));
  assert_int_equal(s->requests, before);
  client_close(env);

  /* insecure_skip_verify accepts the unknown CA. */
  sp_tls_config_t skip = {.present = true, .insecure_skip_verify = true};
  client_new(env, &(sp_http_client_options_t){.tls = &skip});
  roundtrip(env, &req, &res);
  assert_int_equal(res.err, 0);
  assert_int_equal(res.status, 200);
  free(res.body);
  client_close(env);

  /* HTTP/2 offered through ALPN falls back to HTTP/1.1 with this server. */
  client_new(env, &(sp_http_client_options_t){.tls = &skip, .http2 = true});
  roundtrip(env, &req, &res);
  assert_int_equal(res.err, 0);
  assert_int_equal(res.status, 200);
  free(res.body);
  client_close(env);

  /* insecure allows plaintext next to https. */
  sp_tls_config_t insecure = {.present = true, .insecure = true, .ca_file = g_certs.ca_cert};
  client_new(env, &(sp_http_client_options_t){.tls = &insecure});
  req.url = url_name;
  roundtrip(env, &req, &res);
  assert_int_equal(res.err, 0);
  free(res.body);
}

static void test_mtls(void **state) {
  env_t *env = *state;
  certs_make();
  env->srv = srv_start(&env->loop, srv_tls_ctx(true));
  srv_t *s = env->srv;
  res_t res;
  char url[128];
  snprintf(url, sizeof url, "https://localhost:%d/", s->port);
  sp_http_client_request_t req = {.url = url, .body = "m", .body_len = 1};

  sp_tls_config_t tls = {.present = true, .ca_file = g_certs.ca_cert, .min_version = "1.3"};
  client_new(env, &(sp_http_client_options_t){.tls = &tls});
  roundtrip(env, &req, &res);
  assert_int_equal(res.err, SP_EIO);
  assert_int_equal(s->requests, 0);
  client_close(env);

  /* A client certificate from a CA the server does not trust. */
  tls.cert_file = g_certs.rogue_client_cert;
  tls.key_file = g_certs.rogue_client_key;
  client_new(env, &(sp_http_client_options_t){.tls = &tls});
  roundtrip(env, &req, &res);
  assert_int_equal(res.err, SP_EIO);
  assert_int_equal(s->requests, 0);
  client_close(env);

  tls.cert_file = g_certs.client_cert;
  tls.key_file = g_certs.client_key;
  client_new(env, &(sp_http_client_options_t){.tls = &tls});
  roundtrip(env, &req, &res);
  assert_int_equal(res.err, 0);
  assert_int_equal(res.status, 200);
  assert_int_equal(s->requests, 1);
  free(res.body);
}

static void test_bad_input(void **state) {
  env_t *env = *state;
  sp_http_client_t *c = NULL;
  /* Configuration errors at create time (each logs a line; keep them quiet). */
  sp_log_set_level(SP_LOG_OFF);
  sp_tls_config_t tls = {.present = true, .ca_file = "/nonexistent/ca.pem"};
  assert_int_equal(sp_http_client_create(&env->loop, &(sp_http_client_options_t){.tls = &tls}, &c),
                   SP_ECONFIG);
  tls = (sp_tls_config_t){.present = true, .min_version = "1.1"};
  assert_int_equal(sp_http_client_create(&env->loop, &(sp_http_client_options_t){.tls = &tls}, &c),
                   SP_ECONFIG);
  tls = (sp_tls_config_t){.present = true, .cert_file = "/etc/hostname"};
  assert_int_equal(sp_http_client_create(&env->loop, &(sp_http_client_options_t){.tls = &tls}, &c),
                   SP_ECONFIG);
  sp_http_header_t bad_hdr[] = {{"X-Bad", "a\r\nInjected: 1"}};
  assert_int_equal(
      sp_http_client_create(&env->loop,
                            &(sp_http_client_options_t){.headers = bad_hdr, .n_headers = 1}, &c),
      SP_ECONFIG);
  sp_log_set_level(SP_LOG_INFO);
  assert_null(c);
  assert_int_equal(sp_http_client_create(NULL, NULL, &c), SP_EINVAL);

  env->srv = srv_start(&env->loop, NULL);
  client_new(env, NULL);
  res_t res;
  int done = 0;
  sp_http_client_request_t req = {.url = url_of(env->srv, "http", "127.0.0.1", "/")};
  assert_int_equal(sp_http_client_request(env->client, &req, NULL, NULL), SP_EINVAL);
  assert_int_equal(sp_http_client_request(env->client, NULL, on_result, &res), SP_EINVAL);

  /* Request errors arrive through the callback, later. */
  req.headers = bad_hdr;
  req.n_headers = 1;
  roundtrip(env, &req, &res);
  assert_int_equal(res.err, SP_EINVAL);
  req = (sp_http_client_request_t){.url = "not a url"};
  roundtrip(env, &req, &res);
  assert_int_equal(res.err, SP_EINVAL);
  req = (sp_http_client_request_t){.url = "file:///etc/passwd"};
  roundtrip(env, &req, &res);
  assert_int_equal(res.err, SP_EINVAL);
  req = (sp_http_client_request_t){.url = url_of(env->srv, "http", "127.0.0.1", "/"),
                                   .method = "GET /x"};
  roundtrip(env, &req, &res);
  assert_int_equal(res.err, SP_EINVAL);
  assert_int_equal(env->srv->requests, 0);

  /* Out of memory for the request's state: refused at once, no callback
   * (the pool is empty once its handles are freed by a fresh client). */
  client_close(env);
  client_new(env, NULL);
  memset(&res, 0, sizeof res);
  res.done = &done;
  sp_alloc_set_fail_after(0);
  int rc = sp_http_client_request(env->client, &req, on_result, &res);
  sp_alloc_set_fail_after(-1);
  assert_int_equal(rc, SP_ENOMEM);
  /* A later allocation failing (the header block) comes through the callback. */
  sp_http_header_t ok_hdr[] = {{"X-A", "b"}};
  req = (sp_http_client_request_t){
      .url = url_of(env->srv, "http", "127.0.0.1", "/"), .headers = ok_hdr, .n_headers = 1};
  sp_alloc_set_fail_after(1);
  rc = sp_http_client_request(env->client, &req, on_result, &res);
  sp_alloc_set_fail_after(-1);
  assert_int_equal(rc, 0);
  assert_int_equal(done, 0);
  assert_true(run_until(env, &done, 1, 5000));
  assert_int_equal(res.err, SP_ENOMEM);
  /* And the client still works afterwards. */
  roundtrip(env, &req, &res);
  assert_int_equal(res.err, 0);
  assert_int_equal(res.status, 200);
  free(res.body);
  (void)state;
}

static int group_teardown(void **state) {
  certs_free();
  return 0;
}

int main(void) {
  /* The client honours proxy variables; the tests talk to 127.0.0.1 directly. */
  const char *proxies[] = {"http_proxy", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"};
  for (size_t i = 0; i < sizeof proxies / sizeof *proxies; i++)
    unsetenv(proxies[i]);
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_parse_retry_after),
      cmocka_unit_test_setup_teardown(test_post_body_and_headers, setup, teardown),
      cmocka_unit_test_setup_teardown(test_get_and_methods, setup, teardown),
      cmocka_unit_test_setup_teardown(test_retry_after_statuses, setup, teardown),
      cmocka_unit_test_setup_teardown(test_connection_refused, setup, teardown),
      cmocka_unit_test_setup_teardown(test_timeout, setup, teardown),
      cmocka_unit_test_setup_teardown(test_too_big, setup, teardown),
      cmocka_unit_test_setup_teardown(test_concurrent, setup, teardown),
      cmocka_unit_test_setup_teardown(test_server_closes, setup, teardown),
      cmocka_unit_test_setup_teardown(test_keep_alive, setup, teardown),
      cmocka_unit_test_setup_teardown(test_no_keep_alive, setup, teardown),
      cmocka_unit_test_setup_teardown(test_shutdown_in_flight, setup, teardown),
      cmocka_unit_test_setup_teardown(test_tls, setup, teardown),
      cmocka_unit_test_setup_teardown(test_mtls, setup, teardown),
      cmocka_unit_test_setup_teardown(test_bad_input, setup, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, group_teardown);
}
