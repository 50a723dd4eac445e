/*
 * http_client.c — libcurl multi-socket on the libuv loop (see http_client.h).
 *
 * How the pieces fit:
 *
 * - One CURLM per client. curl reports the sockets it wants watched through
 *   the socket callback; each gets a uv_poll_t (a sock_t), created on first
 *   use and closed when curl says CURL_POLL_REMOVE — which curl does before
 *   it closes the descriptor, so a reused descriptor number never meets a
 *   stale watcher. curl's single timeout is one uv_timer_t. Readiness and
 *   timer events go back to curl through curl_multi_socket_action(), after
 *   which finished transfers are collected with curl_multi_info_read().
 *
 * - A request is an xfer_t wrapped around a curl easy handle. Finished
 *   xfers go back to a small pool with the easy handle, its response buffer
 *   and its options intact, so the next request only sets what differs
 *   (URL, method, body, headers, limits). Connections live in the multi
 *   handle's connection cache, not in the easy handles, so any pooled
 *   handle reuses any idle connection; TLS session tickets are shared
 *   through a CURLSH so that even a new connection resumes cheaply.
 *
 * - Completion callbacks only ever run from libuv callbacks: from the poll
 *   or timer callbacks when curl finishes a transfer, or from the `defer`
 *   timer for requests that failed before reaching curl, and for shutdown.
 *   curl_multi_add_handle() itself only arms the timer (with 0 ms), so a
 *   transfer never completes inside sp_http_client_request().
 *
 * - Shutdown runs from the defer timer: in-flight transfers are removed from
 *   the multi handle and answered SP_ECANCELED, the multi handle is cleaned
 *   up (which closes cached connections, reporting their sockets removed),
 *   every remaining handle is closed, and the user's callback runs from the
 *   last close callback.
 *
 * Request headers: the client formats its default headers once into a
 * curl_slist. A request without headers of its own uses that list as it is;
 * otherwise one block holds a new chain of list nodes (pointing at the
 * default lines it keeps and at its own formatted lines). curl only reads the
 * list, so the nodes need not come from curl_slist_append().
 */
#include "pipeline/transport/http_client.h"

#include "pipeline/alloc.h"
#include "pipeline/buf.h"
#include "pipeline/error.h"
#include "pipeline/log.h"

#include <assert.h>
#include <ctype.h>
#include <curl/curl.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "pipeline/transport/curl_dl.h" /* last: curl calls go through the table */

/* Idle easy handles kept for reuse; more are freed when they finish. */
#define POOL_MAX 64
/* A response buffer grown past this is released after its request rather
 * than kept with the pooled handle. */
#define KEEP_BODY_CAP (256u * 1024)

typedef struct xfer_s xfer_t;
typedef struct sock_s sock_t;

struct xfer_s {
  sp_http_client_t *client;
  CURL *easy;          /* NULL only when curl_easy_init() failed */
  xfer_t *prev, *next; /* active list, pool or deferred queue */
  sp_http_client_cb cb;
  void *arg;
  sp_buf_t body;
  size_t max_body;
  struct curl_slist *hdr_block;  /* this request's header nodes (sp_malloc), or NULL */
  struct curl_slist *connect_to; /* server_name_override routing (curl-allocated) */
  uint64_t start_ns;
  int early_err; /* failure found before curl got the request */
  bool too_big;
  bool oom;
  char errbuf[CURL_ERROR_SIZE];
};

struct sock_s {
  uv_poll_t poll;
  sp_http_client_t *client;
  curl_socket_t fd;
  sock_t *prev, *next;
};

struct sp_http_client_s {
  uv_loop_t *loop;
  CURLM *multi;
  CURLSH *share;
  uv_timer_t timer; /* curl's timeout */
  uv_timer_t defer; /* deferred completions and shutdown */
  char *component;
  char *user_agent;

  /* TLS, copied from the options. */
  char *ca_file, *cert_file, *key_file, *server_name;
  long ssl_version;
  bool verify;
  bool plaintext_ok;
  bool keep_alive;
  bool http2;
  long connect_timeout_ms;
  long per_host; /* CURLMOPT_MAX_HOST_CONNECTIONS */

  /* Default headers: names (for override checks), formatted lines, and the
   * list curl reads when a request adds nothing. */
  char **base_names;
  char **base_lines;
  size_t n_base;
  struct curl_slist *base_list;

  xfer_t *active; /* added to the multi handle */
  xfer_t *pool;
  size_t n_pool;
  xfer_t *deferred_head, *deferred_tail;
  sock_t *socks;
  size_t n_pending;
  int n_handles; /* open libuv handles (2 timers + polls) */

  bool shutting_down; /* shutdown called: refuse new requests */
  bool torn_down;     /* curl state gone, handles closing */
  bool finished;      /* shutdown callback ran */
  void (*shutdown_cb)(void *arg);
  void *shutdown_arg;
};

static const char *const k_canceled_msg = "canceled: HTTP client shut down";

/* --- process-wide curl initialisation ----------------------------------- */

static pthread_once_t g_curl_once = PTHREAD_ONCE_INIT;
static CURLcode g_curl_init_rc = CURLE_FAILED_INIT;

/* curl_global_init() is not thread-safe on every platform; pthread_once makes
 * it so. It is never undone: curl stays initialised for the process. */
static void curl_init_once(void) { g_curl_init_rc = curl_global_init(CURL_GLOBAL_DEFAULT); }

/* --- small helpers ------------------------------------------------------- */

static uint64_t now_ms_since(uint64_t start_ns) { return (uv_hrtime() - start_ns) / 1000000u; }

static bool header_name_ok(const char *s) {
  if (!s || !*s) return false;
  for (; *s; s++) {
    unsigned char c = (unsigned char)*s;
    if (c <= ' ' || c == ':' || c >= 0x7f) return false;
  }
  return true;
}

static bool header_value_ok(const char *s) {
  if (!s) return true;
  for (; *s; s++)
    if (*s == '\r' || *s == '\n') return false;
  return true;
}

static bool method_ok(const char *s) {
  if (!*s) return false;
  for (; *s; s++) {
    unsigned char c = (unsigned char)*s;
    if (c <= ' ' || c >= 0x7f || strchr("()<>@,;:\\\"/[]?={}", c)) return false;
  }
  return true;
}

/* Length of the curl header line for (name, value): "Name: value",
 * "Name;" for an empty value (curl's way to send it empty) or "Name:" for a
 * NULL value (curl's way to suppress it). Excludes the NUL. */
static size_t header_line_len(const char *name, const char *value) {
  size_t n = strlen(name) + 1;
  if (value && *value) n += 1 + strlen(value);
  return n;
}

static size_t header_line_write(char *dst, const char *name, const char *value) {
  size_t nl = strlen(name);
  memcpy(dst, name, nl);
  if (!value) {
    dst[nl++] = ':';
  } else if (!*value) {
    dst[nl++] = ';';
  } else {
    dst[nl++] = ':';
    dst[nl++] = ' ';
    size_t vl = strlen(value);
    memcpy(dst + nl, value, vl);
    nl += vl;
  }
  dst[nl] = '\0';
  return nl;
}

/* --- lists ---------------------------------------------------------------- */

static void on_defer(uv_timer_t *t);

static void active_link(sp_http_client_t *self, xfer_t *x) {
  x->prev = NULL;
  x->next = self->active;
  if (self->active) self->active->prev = x;
  self->active = x;
}

static void active_unlink(sp_http_client_t *self, xfer_t *x) {
  if (x->prev)
    x->prev->next = x->next;
  else
    self->active = x->next;
  if (x->next) x->next->prev = x->prev;
  x->prev = x->next = NULL;
}

static void defer_push(sp_http_client_t *self, xfer_t *x) {
  x->prev = x->next = NULL;
  if (self->deferred_tail)
    self->deferred_tail->next = x;
  else
    self->deferred_head = x;
  self->deferred_tail = x;
  uv_timer_start(&self->defer, on_defer, 0, 0);
}

static xfer_t *defer_pop(sp_http_client_t *self) {
  xfer_t *x = self->deferred_head;
  if (!x) return NULL;
  self->deferred_head = x->next;
  if (!self->deferred_head) self->deferred_tail = NULL;
  x->next = NULL;
  return x;
}

/* --- easy handles ---------------------------------------------------------- */

static size_t on_write(char *p, size_t size, size_t nmemb, void *ud) {
  xfer_t *x = ud;
  size_t n = size * nmemb;
  if (n > x->max_body || x->body.len > x->max_body - n) {
    x->too_big = true;
    return 0; /* anything but n fails the transfer with CURLE_WRITE_ERROR */
  }
  if (x->body.len == 0) {
    /* Size the buffer once when the length is announced. */
    curl_off_t cl = -1;
    if (sp_curl_easy_getinfo(x->easy, CURLINFO_CONTENT_LENGTH_DOWNLOAD_T, &cl) == CURLE_OK &&
        cl > 0 && (uint64_t)cl <= x->max_body)
      (void)sp_buf_reserve(&x->body, (size_t)cl);
  }
  if (sp_buf_append(&x->body, p, n) != 0) {
    x->oom = true;
    return 0;
  }
  return n;
}

static void xfer_free(xfer_t *x) {
  if (!x) return;
  if (x->easy) curl_easy_cleanup(x->easy);
  sp_free(x->hdr_block);
  curl_slist_free_all(x->connect_to);
  sp_buf_free(&x->body);
  sp_free(x);
}

/* Options that are the same for every request of this client. */
static int xfer_static_options(sp_http_client_t *self, xfer_t *x) {
  CURL *e = x->easy;
  CURLcode rc = CURLE_OK;
#define SET(opt, val)                                                                              \
  do {                                                                                             \
    if (rc == CURLE_OK) rc = sp_curl_easy_setopt(e, opt, val);                                     \
  } while (0)
  SET(CURLOPT_NOSIGNAL, 1L);
  SET(CURLOPT_PRIVATE, (void *)x);
  SET(CURLOPT_WRITEFUNCTION, on_write);
  SET(CURLOPT_WRITEDATA, (void *)x);
  SET(CURLOPT_ERRORBUFFER, x->errbuf);
  SET(CURLOPT_USERAGENT, self->user_agent);
  SET(CURLOPT_PROTOCOLS_STR, self->plaintext_ok ? "http,https" : "https");
  SET(CURLOPT_FOLLOWLOCATION, 0L);
  SET(CURLOPT_TCP_NODELAY, 1L);
  SET(CURLOPT_TCP_KEEPALIVE, 1L);
  SET(CURLOPT_FORBID_REUSE, self->keep_alive ? 0L : 1L);
  SET(CURLOPT_HTTP_VERSION,
      self->http2 ? (long)CURL_HTTP_VERSION_2TLS : (long)CURL_HTTP_VERSION_1_1);
  if (self->http2) SET(CURLOPT_PIPEWAIT, 1L);
  SET(CURLOPT_SHARE, self->share);
  SET(CURLOPT_SSLVERSION, self->ssl_version);
  SET(CURLOPT_SSL_VERIFYPEER, self->verify ? 1L : 0L);
  SET(CURLOPT_SSL_VERIFYHOST, self->verify ? 2L : 0L);
  if (self->ca_file) SET(CURLOPT_CAINFO, self->ca_file);
  if (self->cert_file) {
    SET(CURLOPT_SSLCERT, self->cert_file);
    SET(CURLOPT_SSLCERTTYPE, "PEM");
    SET(CURLOPT_SSLKEY, self->key_file);
    SET(CURLOPT_SSLKEYTYPE, "PEM");
  }
#undef SET
  if (rc == CURLE_OUT_OF_MEMORY) return SP_ENOMEM;
  if (rc != CURLE_OK) {
    sp_log_error(self->component, "curl rejected an option: %s", curl_easy_strerror(rc));
    return SP_EIO;
  }
  return 0;
}

/* A pooled xfer, or a new one. NULL only when the xfer itself could not be
 * allocated; a failed curl_easy_init() leaves x->easy NULL and is reported
 * through the callback. */
static xfer_t *xfer_get(sp_http_client_t *self, bool with_easy) {
  xfer_t *x = self->pool;
  if (x) {
    self->pool = x->next;
    self->n_pool--;
    x->next = NULL;
    return x;
  }
  x = sp_calloc(1, sizeof *x);
  if (!x) return NULL;
  x->client = self;
  sp_buf_init(&x->body, 0);
  x->easy = with_easy ? curl_easy_init() : NULL;
  if (x->easy && xfer_static_options(self, x) != 0) {
    curl_easy_cleanup(x->easy);
    x->easy = NULL;
  }
  return x;
}

/* Clears per-request state and returns @p x to the pool (or frees it). */
static void xfer_recycle(sp_http_client_t *self, xfer_t *x) {
  if (x->easy) {
    /* Drop pointers into memory that is about to go away. */
    sp_curl_easy_setopt(x->easy, CURLOPT_HTTPHEADER, NULL);
    sp_curl_easy_setopt(x->easy, CURLOPT_CONNECT_TO, NULL);
  }
  sp_free(x->hdr_block);
  x->hdr_block = NULL;
  curl_slist_free_all(x->connect_to);
  x->connect_to = NULL;
  if (x->body.cap > KEEP_BODY_CAP) sp_buf_free(&x->body);
  x->body.len = 0;
  x->cb = NULL;
  x->arg = NULL;
  x->early_err = 0;
  x->too_big = x->oom = false;
  x->errbuf[0] = '\0';
  if (!x->easy || self->torn_down || self->n_pool >= POOL_MAX) {
    xfer_free(x);
    return;
  }
  x->prev = NULL;
  x->next = self->pool;
  self->pool = x;
  self->n_pool++;
}

/* --- completion ------------------------------------------------------------ */

/* Runs the user's callback with @p res, then recycles @p x. */
static void xfer_deliver(sp_http_client_t *self, xfer_t *x, sp_http_client_result_t *res) {
  res->elapsed_ms = now_ms_since(x->start_ns);
  if (res->err && sp_log_enabled(SP_LOG_DEBUG))
    sp_log_debug(self->component, "request failed: %s (%s)", res->error, sp_err_name(res->err));
  assert(self->n_pending > 0);
  self->n_pending--;
  sp_http_client_cb cb = x->cb;
  void *arg = x->arg;
  cb(res, arg);
  xfer_recycle(self, x);
}

static void xfer_fail(sp_http_client_t *self, xfer_t *x, int err, const char *msg) {
  sp_http_client_result_t res = {.err = err, .error = msg ? msg : sp_strerror(err)};
  xfer_deliver(self, x, &res);
}

static int map_curl_error(const xfer_t *x, CURLcode rc) {
  if (x->too_big || rc == CURLE_FILESIZE_EXCEEDED) return SP_ETOOBIG;
  if (x->oom) return SP_ENOMEM;
  switch (rc) {
  case CURLE_OK: return 0;
  case CURLE_OPERATION_TIMEDOUT: return SP_ETIMEDOUT;
  case CURLE_URL_MALFORMAT:
  case CURLE_UNSUPPORTED_PROTOCOL: return SP_EINVAL;
  case CURLE_OUT_OF_MEMORY: return SP_ENOMEM;
  default: return SP_EIO;
  }
}

/* A transfer curl reports done (already removed from the multi handle). */
static void xfer_done(sp_http_client_t *self, xfer_t *x, CURLcode rc) {
  sp_http_client_result_t res = {.impl_ = x};
  long code = 0;
  sp_curl_easy_getinfo(x->easy, CURLINFO_RESPONSE_CODE, &code);
  res.status = (int)code;
  res.err = map_curl_error(x, rc);
  if (res.err == SP_ETOOBIG) {
    snprintf(x->errbuf, sizeof x->errbuf, "response body exceeds %zu bytes", x->max_body);
  } else if (res.err == SP_ENOMEM && x->oom) {
    snprintf(x->errbuf, sizeof x->errbuf, "out of memory buffering the response");
  } else if (res.err && !x->errbuf[0]) {
    snprintf(x->errbuf, sizeof x->errbuf, "%s", curl_easy_strerror(rc));
  }
  res.error = res.err ? x->errbuf : "";
  if (res.err == 0) {
    res.body = x->body.len ? x->body.data : NULL;
    res.body_len = x->body.len;
  }
  if (res.status > 0) {
    const char *ra = sp_http_client_result_header(&res, "Retry-After");
    if (ra) (void)sp_http_parse_retry_after(ra, time(NULL), &res.retry_after_ms);
  }
  xfer_deliver(self, x, &res);
}

/* Collects every finished transfer and completes it. */
static void process_done(sp_http_client_t *self) {
  CURLMsg *m;
  int left;
  while (self->multi && (m = curl_multi_info_read(self->multi, &left))) {
    if (m->msg != CURLMSG_DONE) continue;
    CURL *easy = m->easy_handle;
    CURLcode rc = m->data.result;
    xfer_t *x = NULL;
    sp_curl_easy_getinfo(easy, CURLINFO_PRIVATE, (char **)&x);
    curl_multi_remove_handle(self->multi, easy); /* invalidates m */
    active_unlink(self, x);
    xfer_done(self, x, rc);
  }
}

/* --- curl <-> libuv ---------------------------------------------------------- */

static void maybe_finish(sp_http_client_t *self) {
  if (!self->torn_down || self->n_handles > 0 || self->finished) return;
  self->finished = true;
  if (self->shutdown_cb) self->shutdown_cb(self->shutdown_arg); /* may destroy self */
}

static void on_handle_closed(uv_handle_t *h) {
  sp_http_client_t *self = h->data;
  self->n_handles--;
  maybe_finish(self);
}

static void on_sock_closed(uv_handle_t *h) {
  sock_t *s = h->data;
  sp_http_client_t *self = s->client;
  sp_free(s);
  self->n_handles--;
  maybe_finish(self);
}

static void sock_close(sp_http_client_t *self, sock_t *s) {
  if (s->prev)
    s->prev->next = s->next;
  else
    self->socks = s->next;
  if (s->next) s->next->prev = s->prev;
  /* uv_close stops watching the descriptor at once, before curl closes it. */
  uv_close((uv_handle_t *)&s->poll, on_sock_closed);
}

static void on_poll(uv_poll_t *h, int status, int events) {
  sock_t *s = h->data;
  sp_http_client_t *self = s->client;
  int flags = 0;
  if (status < 0) {
    flags = CURL_CSELECT_ERR;
  } else {
    if (events & UV_READABLE) flags |= CURL_CSELECT_IN;
    if (events & UV_WRITABLE) flags |= CURL_CSELECT_OUT;
  }
  int running = 0;
  /* s may be closed inside this call; only self is used afterwards. */
  curl_multi_socket_action(self->multi, s->fd, flags, &running);
  process_done(self);
}

static int on_curl_socket(CURL *easy, curl_socket_t fd, int what, void *userp, void *socketp) {
  sp_http_client_t *self = userp;
  sock_t *s = socketp;
  int rc;
  if (what == CURL_POLL_REMOVE) {
    if (s) {
      curl_multi_assign(self->multi, fd, NULL);
      sock_close(self, s);
    }
    return 0;
  }
  if (!s) {
    if (self->torn_down) return 0;
    s = sp_calloc(1, sizeof *s);
    if (!s) return -1; /* curl fails the transfer */
    rc = uv_poll_init_socket(self->loop, &s->poll, fd);
    if (rc != 0) {
      sp_log_error(self->component, "cannot watch socket %d: %s", (int)fd, uv_strerror(rc));
      sp_free(s);
      return -1;
    }
    s->client = self;
    s->fd = fd;
    s->poll.data = s;
    s->next = self->socks;
    if (self->socks) self->socks->prev = s;
    self->socks = s;
    self->n_handles++;
    curl_multi_assign(self->multi, fd, s);
  }
  int events = 0;
  if (what & CURL_POLL_IN) events |= UV_READABLE;
  if (what & CURL_POLL_OUT) events |= UV_WRITABLE;
  rc = uv_poll_start(&s->poll, events, on_poll);
  if (rc != 0) {
    sp_log_error(self->component, "cannot watch socket %d: %s", (int)fd, uv_strerror(rc));
    return -1;
  }
  return 0;
}

static void on_timer(uv_timer_t *t) {
  sp_http_client_t *self = t->data;
  int running = 0;
  curl_multi_socket_action(self->multi, CURL_SOCKET_TIMEOUT, 0, &running);
  process_done(self);
}

/* curl forbids calling curl_multi_socket_action() from here; the timer does
 * it from the loop (a 0 ms timeout fires on the next iteration). */
static int on_curl_timer(CURLM *multi, long timeout_ms, void *userp) {
  sp_http_client_t *self = userp;
  if (self->torn_down) return 0;
  if (timeout_ms < 0)
    uv_timer_stop(&self->timer);
  else
    uv_timer_start(&self->timer, on_timer, (uint64_t)timeout_ms, 0);
  return 0;
}

/* --- shutdown ---------------------------------------------------------------- */

static void teardown(sp_http_client_t *self) {
  self->torn_down = true;
  uv_timer_stop(&self->timer);
  xfer_t *x;
  while ((x = self->active)) {
    active_unlink(self, x);
    curl_multi_remove_handle(self->multi, x->easy);
    xfer_fail(self, x, SP_ECANCELED, k_canceled_msg);
  }
  while ((x = defer_pop(self)))
    xfer_fail(self, x, SP_ECANCELED, k_canceled_msg);
  while ((x = self->pool)) {
    self->pool = x->next;
    xfer_free(x);
  }
  self->n_pool = 0;
  /* Closes the cached connections; curl reports their sockets removed. */
  if (self->multi) curl_multi_cleanup(self->multi);
  self->multi = NULL;
  if (self->share) curl_share_cleanup(self->share);
  self->share = NULL;
  while (self->socks)
    sock_close(self, self->socks);
  uv_close((uv_handle_t *)&self->timer, on_handle_closed);
  uv_close((uv_handle_t *)&self->defer, on_handle_closed);
}

static void on_defer(uv_timer_t *t) {
  sp_http_client_t *self = t->data;
  xfer_t *x;
  while ((x = defer_pop(self))) {
    const char *msg = x->errbuf[0] ? x->errbuf : NULL;
    xfer_fail(self, x, x->early_err, msg);
  }
  if (self->shutting_down && !self->torn_down) teardown(self);
}

void sp_http_client_shutdown(sp_http_client_t *self, void (*cb)(void *arg), void *arg) {
  if (!self || self->shutting_down) return;
  self->shutting_down = true;
  self->shutdown_cb = cb;
  self->shutdown_arg = arg;
  uv_timer_start(&self->defer, on_defer, 0, 0);
}

/* --- requests ------------------------------------------------------------------ */

/* Builds this request's header list in x->hdr_block, or points at the
 * client's list when the request adds nothing. */
static int build_headers(sp_http_client_t *self, xfer_t *x, const sp_http_client_request_t *req,
                         const char *host_line, struct curl_slist **out) {
  *out = self->base_list;
  if (req->n_headers == 0 && !host_line) return 0;
  size_t n_nodes = self->n_base + req->n_headers + (host_line ? 1 : 0);
  size_t text = host_line ? strlen(host_line) + 1 : 0;
  for (size_t i = 0; i < req->n_headers; i++) {
    const sp_http_header_t *h = &req->headers[i];
    if (!header_name_ok(h->name) || !header_value_ok(h->value)) {
      snprintf(x->errbuf, sizeof x->errbuf, "invalid request header %s",
               h->name && header_name_ok(h->name) ? h->name : "name");
      return SP_EINVAL;
    }
    text += header_line_len(h->name, h->value) + 1;
  }
  size_t nodes_size = n_nodes * sizeof(struct curl_slist);
  struct curl_slist *nodes = sp_malloc(nodes_size + text);
  if (!nodes) return SP_ENOMEM;
  char *p = (char *)nodes + nodes_size;
  size_t k = 0;
  for (size_t i = 0; i < self->n_base; i++) {
    bool replaced = host_line && strcasecmp(self->base_names[i], "Host") == 0;
    for (size_t j = 0; j < req->n_headers && !replaced; j++)
      replaced = strcasecmp(self->base_names[i], req->headers[j].name) == 0;
    if (!replaced) nodes[k++].data = self->base_lines[i];
  }
  for (size_t j = 0; j < req->n_headers; j++) {
    nodes[k++].data = p;
    p += header_line_write(p, req->headers[j].name, req->headers[j].value) + 1;
  }
  if (host_line) {
    bool replaced = false;
    for (size_t j = 0; j < req->n_headers && !replaced; j++)
      replaced = strcasecmp(req->headers[j].name, "Host") == 0;
    if (!replaced) {
      nodes[k++].data = p;
      memcpy(p, host_line, strlen(host_line) + 1);
    }
  }
  for (size_t i = 0; i < k; i++)
    nodes[i].next = i + 1 < k ? &nodes[i + 1] : NULL;
  x->hdr_block = nodes;
  *out = k ? nodes : NULL;
  return 0;
}

/* With server_name_override, the URL's host is swapped for the override (so
 * curl sends it as SNI and checks the certificate against it), CONNECT_TO
 * sends the TCP connection to the real host, and a Host header keeps the
 * real authority. Sets *url_out (curl_free) and *host_line (sp_free). */
static int apply_server_name(sp_http_client_t *self, xfer_t *x, const char *url, char **url_out,
                             char **host_line) {
  int rc = SP_EINVAL;
  char *host = NULL, *port = NULL, *defport = NULL;
  CURLU *u = curl_url();
  if (!u) return SP_ENOMEM;
  if (curl_url_set(u, CURLUPART_URL, url, 0) != CURLUE_OK ||
      curl_url_get(u, CURLUPART_HOST, &host, 0) != CURLUE_OK ||
      curl_url_get(u, CURLUPART_PORT, &defport, CURLU_DEFAULT_PORT) != CURLUE_OK) {
    snprintf(x->errbuf, sizeof x->errbuf, "malformed URL");
    goto fail;
  }
  if (curl_url_get(u, CURLUPART_PORT, &port, 0) != CURLUE_OK) port = NULL;
  rc = SP_ENOMEM;
  *host_line = port ? sp_sprintf("Host: %s:%s", host, port) : sp_sprintf("Host: %s", host);
  char *route = sp_sprintf("%s:%s:%s:%s", self->server_name, defport, host, defport);
  if (!*host_line || !route) {
    sp_free(route);
    goto fail;
  }
  x->connect_to = curl_slist_append(NULL, route);
  sp_free(route);
  if (!x->connect_to) goto fail;
  if (curl_url_set(u, CURLUPART_HOST, self->server_name, 0) != CURLUE_OK ||
      curl_url_get(u, CURLUPART_URL, url_out, 0) != CURLUE_OK) {
    snprintf(x->errbuf, sizeof x->errbuf, "cannot apply server_name_override %s",
             self->server_name);
    rc = SP_EINVAL;
    goto fail;
  }
  rc = 0;
fail:
  curl_free(host);
  curl_free(port);
  curl_free(defport);
  curl_url_cleanup(u);
  return rc;
}

/* Sets the per-request options of x->easy. On failure returns the error and
 * may leave a message in x->errbuf. */
static int xfer_setup(sp_http_client_t *self, xfer_t *x, const sp_http_client_request_t *req) {
  int rc = SP_ENOMEM;
  char *url_override = NULL, *host_line = NULL;
  CURL *e = x->easy;
  if (!e) goto fail;
  bool has_body = req->body || req->body_len;
  const char *method = req->method ? req->method : has_body ? "POST" : "GET";
  rc = SP_EINVAL;
  if (!method_ok(method)) {
    snprintf(x->errbuf, sizeof x->errbuf, "invalid method");
    goto fail;
  }
  if (req->body_len && !req->body) {
    snprintf(x->errbuf, sizeof x->errbuf, "body_len without body");
    goto fail;
  }
  bool is_https = strncasecmp(req->url, "https://", 8) == 0;
  if (!self->plaintext_ok && !is_https) {
    snprintf(x->errbuf, sizeof x->errbuf,
             "plaintext URL refused: TLS is configured (set tls.insecure to allow http://)");
    goto fail;
  }
  if (self->server_name && is_https) {
    rc = apply_server_name(self, x, req->url, &url_override, &host_line);
    if (rc) goto fail;
  }
  struct curl_slist *hdrs = NULL;
  rc = build_headers(self, x, req, host_line, &hdrs);
  if (rc) goto fail;

  x->max_body = req->max_response_bytes ? req->max_response_bytes
                                        : (size_t)SP_HTTP_CLIENT_DEFAULT_MAX_RESPONSE;
  uint64_t timeout = req->timeout_ms ? req->timeout_ms : SP_HTTP_CLIENT_DEFAULT_TIMEOUT_MS;
  if (timeout > LONG_MAX) timeout = LONG_MAX;
  long connect_timeout =
      self->connect_timeout_ms < (long)timeout ? self->connect_timeout_ms : (long)timeout;
  CURLcode cc = CURLE_OK;
#define SET(opt, val)                                                                              \
  do {                                                                                             \
    if (cc == CURLE_OK) cc = sp_curl_easy_setopt(e, opt, val);                                     \
  } while (0)
  SET(CURLOPT_URL, url_override ? url_override : req->url);
  SET(CURLOPT_CONNECT_TO, x->connect_to);
  SET(CURLOPT_HTTPHEADER, hdrs);
  SET(CURLOPT_TIMEOUT_MS, (long)timeout);
  SET(CURLOPT_CONNECTTIMEOUT_MS, connect_timeout);
  SET(CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)(x->max_body > INT64_MAX ? INT64_MAX : x->max_body));
  /* Method: NOBODY first (it changes the method), then GET or POST, then a
   * custom verb over either. The body is borrowed (POSTFIELDS, not COPY). */
  SET(CURLOPT_NOBODY, 0L);
  bool is_get = strcmp(method, "GET") == 0, is_head = strcmp(method, "HEAD") == 0;
  if (has_body ||
      !(is_get || is_head || strcmp(method, "DELETE") == 0 || strcmp(method, "OPTIONS") == 0)) {
    SET(CURLOPT_POST, 1L);
    SET(CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)req->body_len);
    SET(CURLOPT_POSTFIELDS, req->body ? req->body : (const void *)"");
    SET(CURLOPT_CUSTOMREQUEST, strcmp(method, "POST") == 0 ? NULL : method);
  } else {
    SET(CURLOPT_HTTPGET, 1L);
    if (is_head) SET(CURLOPT_NOBODY, 1L);
    SET(CURLOPT_CUSTOMREQUEST, is_get || is_head ? NULL : method);
  }
#undef SET
  if (cc != CURLE_OK) {
    rc = cc == CURLE_OUT_OF_MEMORY ? SP_ENOMEM : SP_EINVAL;
    snprintf(x->errbuf, sizeof x->errbuf, "%s", curl_easy_strerror(cc));
    goto fail;
  }
  rc = 0;
fail:
  curl_free(url_override);
  sp_free(host_line);
  return rc;
}

/*
 * Sets up curl for this client on its first request rather than at create:
 * curl_global_init() initialises OpenSSL, which touches about 2 MiB of
 * libcrypto, and a daemon whose exporter has sent nothing yet (idle) should
 * not pay for it. 0, SP_EIO or SP_ENOMEM (logged; the next request tries
 * again). Loop thread.
 */
static int curl_start(sp_http_client_t *self) {
  int rc = SP_EIO;
  pthread_once(&g_curl_once, curl_init_once);
  if (g_curl_init_rc != CURLE_OK) {
    sp_log_error(self->component, "curl_global_init: %s", curl_easy_strerror(g_curl_init_rc));
    return rc;
  }
  rc = SP_ENOMEM;
  self->share = curl_share_init();
  self->multi = curl_multi_init();
  if (!self->share || !self->multi) goto fail;
  rc = SP_EIO;
  if (sp_curl_share_setopt(self->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_SSL_SESSION) != CURLSHE_OK)
    goto fail;
  CURLMcode mc = CURLM_OK;
#define MSET(opt, val)                                                                             \
  do {                                                                                             \
    if (mc == CURLM_OK) mc = sp_curl_multi_setopt(self->multi, opt, val);                          \
  } while (0)
  MSET(CURLMOPT_SOCKETFUNCTION, on_curl_socket);
  MSET(CURLMOPT_SOCKETDATA, (void *)self);
  MSET(CURLMOPT_TIMERFUNCTION, on_curl_timer);
  MSET(CURLMOPT_TIMERDATA, (void *)self);
  MSET(CURLMOPT_MAX_HOST_CONNECTIONS, self->per_host);
  /* Idle connections kept open: enough for every host slot twice over, so a
   * burst does not close what the next burst needs. */
  MSET(CURLMOPT_MAXCONNECTS, self->per_host * 2 > 16 ? self->per_host * 2 : 16L);
  MSET(CURLMOPT_PIPELINING, self->http2 ? (long)CURLPIPE_MULTIPLEX : (long)CURLPIPE_NOTHING);
#undef MSET
  if (mc != CURLM_OK) {
    sp_log_error(self->component, "curl_multi_setopt: %s", curl_multi_strerror(mc));
    goto fail;
  }
  return 0;
fail:
  if (rc == SP_ENOMEM) sp_log_error(self->component, "cannot set up curl: out of memory");
  if (self->multi) curl_multi_cleanup(self->multi);
  if (self->share) curl_share_cleanup(self->share);
  self->multi = NULL;
  self->share = NULL;
  return rc;
}

int sp_http_client_request(sp_http_client_t *self, const sp_http_client_request_t *req,
                           sp_http_client_cb cb, void *arg) {
  if (!self || !req || !req->url || !cb) return SP_EINVAL;
  if (self->shutting_down) return SP_ESHUTDOWN;
  int rc = self->multi ? 0 : curl_start(self);
  xfer_t *x = xfer_get(self, rc == 0);
  if (!x) return SP_ENOMEM;
  x->cb = cb;
  x->arg = arg;
  x->start_ns = uv_hrtime();
  x->errbuf[0] = '\0';
  self->n_pending++;
  if (rc != 0)
    snprintf(x->errbuf, sizeof x->errbuf, "libcurl could not be initialised");
  else
    rc = xfer_setup(self, x, req);
  if (rc == 0) {
    CURLMcode mc = curl_multi_add_handle(self->multi, x->easy);
    if (mc == CURLM_OK) {
      active_link(self, x);
      return 0;
    }
    rc = mc == CURLM_OUT_OF_MEMORY ? SP_ENOMEM : SP_EIO;
    snprintf(x->errbuf, sizeof x->errbuf, "%s", curl_multi_strerror(mc));
  }
  x->early_err = rc;
  defer_push(self, x);
  return 0;
}

const char *sp_http_client_result_header(const sp_http_client_result_t *res, const char *name) {
  if (!res || !name || !res->impl_ || res->status <= 0) return NULL;
  const xfer_t *x = res->impl_;
  struct curl_header *h = NULL;
  if (curl_easy_header(x->easy, name, 0, CURLH_HEADER, -1, &h) != CURLHE_OK || !h) return NULL;
  return h->value;
}

size_t sp_http_client_pending(const sp_http_client_t *self) { return self ? self->n_pending : 0; }

/* --- create / destroy ------------------------------------------------------------- */

static int copy_tls(sp_http_client_t *self, const sp_tls_config_t *tls) {
  self->verify = true;
  self->plaintext_ok = true;
  self->ssl_version = CURL_SSLVERSION_TLSv1_2;
  if (!tls || !tls->present) return 0;
  self->plaintext_ok = tls->insecure;
  self->verify = !tls->insecure_skip_verify;
  if (tls->min_version && *tls->min_version) {
    if (strcmp(tls->min_version, "1.2") == 0) {
      self->ssl_version = CURL_SSLVERSION_TLSv1_2;
    } else if (strcmp(tls->min_version, "1.3") == 0) {
      self->ssl_version = CURL_SSLVERSION_TLSv1_3;
    } else {
      sp_log_error(self->component, "tls.min_version %s is not supported (use 1.2 or 1.3)",
                   tls->min_version);
      return SP_ECONFIG;
    }
  }
  if (!tls->cert_file != !tls->key_file) {
    sp_log_error(self->component, "tls.cert_file and tls.key_file must be given together");
    return SP_ECONFIG;
  }
  const char *files[] = {tls->ca_file, tls->cert_file, tls->key_file};
  const char *keys[] = {"ca_file", "cert_file", "key_file"};
  for (size_t i = 0; i < 3; i++) {
    if (files[i] && access(files[i], R_OK) != 0) {
      sp_log_error(self->component, "tls.%s %s is not readable", keys[i], files[i]);
      return SP_ECONFIG;
    }
  }
  if ((tls->ca_file && !(self->ca_file = sp_strdup(tls->ca_file))) ||
      (tls->cert_file && !(self->cert_file = sp_strdup(tls->cert_file))) ||
      (tls->key_file && !(self->key_file = sp_strdup(tls->key_file))))
    return SP_ENOMEM;
  if (tls->server_name_override && *tls->server_name_override) {
    if (!header_name_ok(tls->server_name_override) || strchr(tls->server_name_override, '/')) {
      sp_log_error(self->component, "tls.server_name_override %s is not a host name",
                   tls->server_name_override);
      return SP_ECONFIG;
    }
    if (!(self->server_name = sp_strdup(tls->server_name_override))) return SP_ENOMEM;
  }
  return 0;
}

/* Formats the default headers: the caller's, then two suppressions unless
 * the caller set those headers itself — "Expect:" (curl would otherwise
 * wait for "100 Continue" before sending a large body, a round trip per
 * request) and "Content-Type:" (curl would otherwise label every POST body
 * application/x-www-form-urlencoded). */
static int copy_headers(sp_http_client_t *self, const sp_http_client_options_t *opts) {
  static const char *const suppressed[] = {"Expect", "Content-Type"};
  size_t n = opts->n_headers;
  bool have[2] = {false, false};
  for (size_t i = 0; i < n; i++) {
    const sp_http_header_t *h = &opts->headers[i];
    if (!header_name_ok(h->name) || !header_value_ok(h->value)) {
      sp_log_error(self->component, "invalid header %s", header_name_ok(h->name) ? h->name : "");
      return SP_ECONFIG;
    }
    for (size_t j = 0; j < 2; j++)
      if (strcasecmp(h->name, suppressed[j]) == 0) have[j] = true;
  }
  const char *extra[2];
  size_t n_extra = 0;
  for (size_t j = 0; j < 2; j++)
    if (!have[j]) extra[n_extra++] = suppressed[j];
  size_t total = n + n_extra;
  self->base_names = sp_calloc(total, sizeof(char *));
  self->base_lines = sp_calloc(total, sizeof(char *));
  self->base_list = sp_calloc(total, sizeof(struct curl_slist));
  if (!self->base_names || !self->base_lines || !self->base_list) return SP_ENOMEM;
  for (size_t i = 0; i < total; i++) {
    const char *name = i < n ? opts->headers[i].name : extra[i - n];
    const char *value = i < n ? opts->headers[i].value : NULL;
    self->base_names[i] = sp_strdup(name);
    self->base_lines[i] = sp_malloc(header_line_len(name, value) + 1);
    self->n_base = i + 1;
    if (!self->base_names[i] || !self->base_lines[i]) return SP_ENOMEM;
    header_line_write(self->base_lines[i], name, value);
    self->base_list[i].data = self->base_lines[i];
    self->base_list[i].next = i + 1 < total ? &self->base_list[i + 1] : NULL;
  }
  return 0;
}

/* Frees everything but libuv handles (which create sets up last). */
static void client_free(sp_http_client_t *self) {
  if (self->multi) curl_multi_cleanup(self->multi);
  if (self->share) curl_share_cleanup(self->share);
  for (size_t i = 0; i < self->n_base; i++) {
    sp_free(self->base_names[i]);
    sp_free(self->base_lines[i]);
  }
  sp_free(self->base_names);
  sp_free(self->base_lines);
  sp_free(self->base_list);
  sp_free(self->ca_file);
  sp_free(self->cert_file);
  sp_free(self->key_file);
  sp_free(self->server_name);
  sp_free(self->user_agent);
  sp_free(self->component);
  sp_free(self);
}

int sp_http_client_create(uv_loop_t *loop, const sp_http_client_options_t *opts,
                          sp_http_client_t **out) {
  static const sp_http_client_options_t defaults;
  int rc = SP_EINVAL;
  sp_http_client_t *self = NULL;
  if (!loop || !out) goto fail;
  *out = NULL;
  if (!opts) opts = &defaults;
  /* libcurl is loaded on the first client (curl_dl.h), not linked. */
  char dl_err[512];
  if ((rc = sp_curl_dl_load(dl_err, sizeof dl_err)) < 0) {
    sp_log_error(opts->component ? opts->component : "http_client", "%s", dl_err);
    goto fail;
  }
  rc = SP_ENOMEM;
  self = sp_calloc(1, sizeof *self);
  if (!self) goto fail;
  self->loop = loop;
  self->component = sp_strdup(opts->component ? opts->component : "http_client");
  self->user_agent =
      opts->user_agent ? sp_strdup(opts->user_agent) : sp_sprintf("spanprofd/%s", SP_VERSION);
  if (!self->component || !self->user_agent) goto fail;
  rc = SP_ECONFIG;
  if (!header_value_ok(self->user_agent)) goto fail;
  if ((rc = copy_tls(self, opts->tls)) != 0) goto fail;
  if ((rc = copy_headers(self, opts)) != 0) goto fail;
  self->keep_alive = !opts->disable_keep_alive;
  self->http2 = opts->http2;
  if (self->http2 && !(curl_version_info(CURLVERSION_NOW)->features & CURL_VERSION_HTTP2)) {
    sp_log_error(self->component, "this libcurl has no HTTP/2 support");
    rc = SP_ENOTSUP;
    goto fail;
  }
  uint64_t cto = opts->connect_timeout_ms ? opts->connect_timeout_ms
                                          : SP_HTTP_CLIENT_DEFAULT_CONNECT_TIMEOUT_MS;
  self->connect_timeout_ms = cto > LONG_MAX ? LONG_MAX : (long)cto;
  self->per_host = opts->max_conns_per_host ? (long)opts->max_conns_per_host
                                            : SP_HTTP_CLIENT_DEFAULT_CONNS_PER_HOST;

  uv_timer_init(loop, &self->timer);
  uv_timer_init(loop, &self->defer);
  self->timer.data = self;
  self->defer.data = self;
  self->n_handles = 2;
  *out = self;
  return 0;
fail:
  if (self) client_free(self);
  return rc;
}

void sp_http_client_destroy(sp_http_client_t *self) {
  if (!self) return;
  if (self->n_handles > 0) {
    /* Freeing now would leave the loop pointing into freed memory; leaking
     * is the lesser evil for this programmer error. */
    sp_log_error(self->component, "sp_http_client_destroy before shutdown completed; leaking");
    assert(!"sp_http_client_destroy before shutdown completed");
    return;
  }
  client_free(self);
}

/* --- Retry-After ------------------------------------------------------------------ */

static const char *const k_months[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                       "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
static const char *const k_days[] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
static const char *const k_long_days[] = {"Sunday",   "Monday", "Tuesday", "Wednesday",
                                          "Thursday", "Friday", "Saturday"};

static bool take_lit(const char **p, const char *lit) {
  size_t n = strlen(lit);
  if (strncasecmp(*p, lit, n) != 0) return false;
  *p += n;
  return true;
}

static bool take_digits(const char **p, int n, int *out) {
  int v = 0;
  for (int i = 0; i < n; i++) {
    if (!isdigit((unsigned char)(*p)[i])) return false;
    v = v * 10 + ((*p)[i] - '0');
  }
  *p += n;
  *out = v;
  return true;
}

/* One of @p names (case-insensitive); returns its index or -1. Longer names
 * are tried first by the caller's ordering where prefixes overlap. */
static int take_name(const char **p, const char *const *names, int n) {
  for (int i = 0; i < n; i++)
    if (take_lit(p, names[i])) return i;
  return -1;
}

static bool take_time(const char **p, struct tm *tm) {
  return take_digits(p, 2, &tm->tm_hour) && take_lit(p, ":") && take_digits(p, 2, &tm->tm_min) &&
         take_lit(p, ":") && take_digits(p, 2, &tm->tm_sec);
}

static bool tm_valid(const struct tm *tm) {
  static const int mdays[] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  int y = tm->tm_year + 1900;
  bool leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
  if (tm->tm_mon < 0 || tm->tm_mon > 11 || tm->tm_mday < 1) return false;
  if (tm->tm_mday > mdays[tm->tm_mon] || (tm->tm_mon == 1 && !leap && tm->tm_mday > 28))
    return false;
  return tm->tm_hour <= 23 && tm->tm_min <= 59 && tm->tm_sec <= 60;
}

/* Parses an HTTP-date; false when @p s is not one. */
static bool parse_http_date(const char *s, time_t now, time_t *out) {
  struct tm tm = {0};
  const char *p = s;
  int mon;
  if (take_name(&p, k_long_days, 7) >= 0) {
    /* rfc850-date: Sunday, 06-Nov-94 08:49:37 GMT */
    int yy;
    if (!take_lit(&p, ", ") || !take_digits(&p, 2, &tm.tm_mday) || !take_lit(&p, "-") ||
        (mon = take_name(&p, k_months, 12)) < 0 || !take_lit(&p, "-") || !take_digits(&p, 2, &yy) ||
        !take_lit(&p, " ") || !take_time(&p, &tm) || !take_lit(&p, " GMT"))
      return false;
    /* A two-digit year more than 50 years ahead means the past century. */
    struct tm nowtm;
    gmtime_r(&now, &nowtm);
    int now_year = nowtm.tm_year + 1900;
    int year = now_year - now_year % 100 + yy;
    if (year > now_year + 50) year -= 100;
    tm.tm_year = year - 1900;
  } else if (take_name(&p, k_days, 7) >= 0) {
    if (take_lit(&p, ", ")) {
      /* IMF-fixdate: Sun, 06 Nov 1994 08:49:37 GMT */
      int year;
      if (!take_digits(&p, 2, &tm.tm_mday) || !take_lit(&p, " ") ||
          (mon = take_name(&p, k_months, 12)) < 0 || !take_lit(&p, " ") ||
          !take_digits(&p, 4, &year) || !take_lit(&p, " ") || !take_time(&p, &tm) ||
          !take_lit(&p, " GMT"))
        return false;
      tm.tm_year = year - 1900;
    } else {
      /* asctime-date: Sun Nov  6 08:49:37 1994 */
      int year;
      if (!take_lit(&p, " ") || (mon = take_name(&p, k_months, 12)) < 0 || !take_lit(&p, " "))
        return false;
      if (*p == ' ') {
        p++;
        if (!take_digits(&p, 1, &tm.tm_mday)) return false;
      } else if (!take_digits(&p, 2, &tm.tm_mday)) {
        return false;
      }
      if (!take_lit(&p, " ") || !take_time(&p, &tm) || !take_lit(&p, " ") ||
          !take_digits(&p, 4, &year))
        return false;
      tm.tm_year = year - 1900;
    }
  } else {
    return false;
  }
  while (*p == ' ' || *p == '\t')
    p++;
  if (*p) return false;
  tm.tm_mon = mon;
  if (!tm_valid(&tm)) return false;
  if (tm.tm_sec == 60) tm.tm_sec = 59; /* a leap second rounds down */
  time_t t = timegm(&tm);
  if (t == (time_t)-1) return false;
  *out = t;
  return true;
}

int sp_http_parse_retry_after(const char *value, time_t now, uint64_t *out_ms) {
  if (!out_ms) return SP_EINVAL;
  *out_ms = 0;
  if (!value) return SP_EINVAL;
  const char *p = value;
  while (*p == ' ' || *p == '\t')
    p++;
  if (isdigit((unsigned char)*p)) {
    uint64_t secs = 0;
    bool saturated = false;
    for (; isdigit((unsigned char)*p); p++) {
      unsigned d = (unsigned)(*p - '0');
      if (secs > (UINT64_MAX - d) / 10)
        saturated = true;
      else
        secs = secs * 10 + d;
    }
    while (*p == ' ' || *p == '\t')
      p++;
    if (*p) return SP_EINVAL;
    *out_ms = saturated || secs > UINT64_MAX / 1000 ? UINT64_MAX : secs * 1000;
    return 0;
  }
  time_t t;
  if (!parse_http_date(p, now, &t)) return SP_EINVAL;
  if (t > now) *out_ms = (uint64_t)(t - now) * 1000;
  return 0;
}
