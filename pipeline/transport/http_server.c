/*
 * http_server.c — HTTP/1.1 server on libuv + http-parser (see http_server.h).
 *
 * One conn_t per TCP connection. A connection moves through these states:
 *
 *   IDLE ──first byte──▶ HEADERS ──headers──▶ BODY ──complete──▶ HANDLING
 *     ▲                                                              │
 *     └──────── response written (keep-alive) ◀── WRITING ◀─respond──┘
 *                                                    │ (close)
 *                                                    ▼
 *                                                  LINGER ─EOF/timer─▶ closed
 *
 * Reading stops while a request is at the handler and its response is being
 * written, so pipelined requests are served one at a time and in order: the
 * parser is paused at the end of each message and bytes already read past it
 * are kept in `pending`, parsed again when the response has been written.
 * The write callback (never the respond call) resumes the connection, so a
 * handler that answers synchronously cannot recurse into the next request.
 *
 * One timer per connection enforces absolute deadlines: the header timeout
 * runs from accept (first request) or from the first byte of a request, the
 * body timeout from the end of the headers — trickling bytes does not extend
 * either (slowloris) — and the idle timeout between requests and while a
 * response waits to be written.
 *
 * A connection that must close after its response (error, `Connection:
 * close`, shutdown) shuts down its write side and "lingers": it reads and
 * discards input until EOF or a short deadline, so a client still sending a
 * refused body receives the response instead of a reset.
 *
 * Shutdown has a bound (sp_http_server_shutdown_within): from then on every
 * timer a connection arms is clamped to the shutdown deadline, and one that
 * fires because of the clamp (TK_DEADLINE) closes the connection, abandoning
 * a request still being received — a client trickling its body cannot hold
 * the process past its drain time. Requests already at the handler are not
 * cut short (the handler owns them until it responds). A request that starts
 * after shutdown began (pipelined behind a keep-alive response written just
 * before) is answered 503 + `Connection: close` by the server itself.
 *
 * Memory: the socket is read into one 64 KiB buffer shared by every
 * connection (reads are sequential on the loop), except that a large body of
 * known length is read straight into the request's body buffer. Per request
 * there are a few reused buffers (head, header table, body) and one
 * allocation per response. The body buffer never grows beyond the limit + 1
 * byte, also while inflating. A declared Content-Length is a claim, not
 * bytes: the body buffer starts at no more than BODY_FIRST_MAX and doubles as
 * bytes arrive (up to the declared length, or the limit), so connections
 * that announce large bodies and send nothing cost little.
 *
 * A request stays valid until sp_http_respond(), even when the peer goes
 * away meanwhile: a conn_t is freed only once its handles are closed and no
 * request of it is at the handler.
 */
#include "pipeline/transport/http_server.h"

#include "pipeline/alloc.h"
#include "pipeline/buf.h"
#include "pipeline/compress.h"
#include "pipeline/error.h"
#include "pipeline/log.h"
#include "pipeline/transport/tls_conn.h"

#include <arpa/inet.h>
#include <assert.h>
#include <ctype.h>
#include <http_parser.h>
#include <netdb.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define DEFAULT_MAX_BODY ((size_t)20 * 1024 * 1024)
#define DEFAULT_HEADER_TIMEOUT_MS 10000
#define DEFAULT_BODY_TIMEOUT_MS 30000
#define DEFAULT_IDLE_TIMEOUT_MS 60000
#define DEFAULT_MAX_CONNECTIONS 4096
#define DEFAULT_MAX_HEADER_SIZE ((size_t)64 * 1024)
#define LINGER_MS 2000
#define RBUF_SIZE ((size_t)64 * 1024)
#define ZERO_COPY_MIN ((size_t)16 * 1024) /* read bodies this large straight into place */
/* The most reserved for a body before its bytes arrive (a Content-Length is only a claim). */
#define BODY_FIRST_MAX ((size_t)256 * 1024)
/*
 * Idle keep-alive connections keep buffers up to these sizes for the next
 * request; larger ones are freed, so 4096 idle connections cost little.
 */
#define KEEP_BUF_CAP ((size_t)16 * 1024)
/* zlib states (~45 KiB each) are pooled per server, not kept per connection. */
#define INFLATER_POOL 16

typedef enum {
  CS_IDLE,     /* between requests, nothing of the next one received */
  CS_HEADERS,  /* receiving request line and headers */
  CS_BODY,     /* receiving the body */
  CS_HANDLING, /* the request is at the handler */
  CS_WRITING,  /* the response is being written */
  CS_LINGER,   /* final response sent; discarding input until EOF */
  CS_CLOSING,  /* handles closing */
} conn_state_t;

typedef enum {
  TK_NONE,
  TK_HEADER,
  TK_BODY,
  TK_IDLE,
  TK_WRITE,
  TK_LINGER,
  TK_DEADLINE, /* the shutdown bound, which came before the timer's own deadline */
} timer_kind_t;

typedef enum { PARSE_MORE, PARSE_STOP } parse_result_t;

typedef struct hdr_ref_s {
  uint32_t name_off;
  uint32_t val_off;
} hdr_ref_t;

typedef struct conn_s conn_t;

typedef struct cors_s {
  char **origins;
  size_t n_origins;
  char **headers;
  size_t n_headers;
  bool any_header;
  int max_age;
} cors_t;

struct sp_http_server_s {
  uv_loop_t *loop;
  /* options, with defaults applied and strings owned */
  char *endpoint;
  char *component;
  size_t max_body;
  uint64_t header_timeout_ms, body_timeout_ms, idle_timeout_ms;
  size_t max_connections;
  size_t max_header_size;
  sp_http_handler_cb handler;
  void *handler_ctx;
  cors_t *cors;
  sp_tls_ctx_t *tls;

  struct sockaddr_storage addr;
  uv_tcp_t listener;
  enum { LS_NONE, LS_OPEN, LS_CLOSING } listener_state;
  int port;

  conn_t *conns; /* doubly linked list of live connections */
  size_t n_conns;
  size_t n_rejects; /* bare handles of refused connections, closing */

  sp_inflater_t *inflaters[INFLATER_POOL]; /* idle inflater states (~85 KiB each) for reuse */
  size_t n_inflaters;

  uint8_t *rbuf;      /* shared socket read buffer */
  uint8_t *tls_plain; /* shared decrypted-bytes buffer */

  bool shutting_down;
  bool shutdown_done;
  uint64_t shutdown_deadline; /* loop time (ms) by which connections close; UINT64_MAX: none */
  void (*shutdown_cb)(void *arg);
  void *shutdown_arg;
  uv_timer_t defer; /* defers shutdown_cb when nothing else would */
  bool defer_active;

  sp_http_server_stats_t stats;
};

struct conn_s {
  sp_http_server_t *srv;
  conn_t *prev, *next;
  uv_tcp_t tcp;
  uv_timer_t timer;
  uv_shutdown_t shut;
  int handles_open;
  conn_state_t state;
  timer_kind_t timer_kind;
  bool closing;
  bool reading;
  bool req_out;     /* request at the handler, not answered yet */
  bool msg_ready;   /* the parser stopped at a complete (or failed) message */
  bool close_after; /* close the connection once the response is written */
  bool headers_done;
  bool hdr_overflow;
  bool oom;
  bool keep_alive_10; /* HTTP/1.0 client asked for keep-alive */
  bool is_head;
  bool late; /* the request began after shutdown began: answered 503 */
  http_parser parser;
  sp_tls_conn_t *tls;

  /* the request being received */
  sp_buf_t head; /* url, then header names and values, each NUL-terminated */
  size_t head_bytes;
  int last_cb; /* 0 none yet, 1 header field, 2 header value */
  hdr_ref_t *refs;
  size_t n_refs, cap_refs;
  sp_http_header_t *hdrs;
  size_t cap_hdrs;
  bool has_cl;
  uint64_t content_length;
  sp_buf_t body;
  sp_inflater_t *inflater; /* borrowed from the server's pool while inflating */
  bool inflating;
  size_t wire_len;
  const char *cors_origin; /* allowed Origin of this request, for the response */
  char err_msg[192];
  sp_http_request_t req;
  char remote[64];

  /* bytes read past the end of the message being handled (pipelining) */
  sp_buf_t pending;
  size_t pending_off;
};

typedef struct wblock_s {
  uv_write_t req;
  conn_t *c;
  bool response; /* its completion ends the response */
  size_t len;
  char data[];
} wblock_t;

static http_parser_settings parser_settings;
static uv_once_t parser_settings_once = UV_ONCE_INIT;

static void conn_close(conn_t *c);
static void conn_resume(conn_t *c);
static void conn_finish(conn_t *c);
static parse_result_t conn_parse(conn_t *c, const char *data, size_t len, bool from_pending);
static void conn_reject(conn_t *c, int status, const char *msg);
static void maybe_finish_shutdown(sp_http_server_t *s);
static void conn_send_small(conn_t *c, const char *data, size_t len);
static void dispatch(conn_t *c);

/* --- small helpers ------------------------------------------------------- */

static const char *reason_phrase(int status) {
  switch (status) {
  case 100: return "Continue";
  case 101: return "Switching Protocols";
  case 200: return "OK";
  case 201: return "Created";
  case 202: return "Accepted";
  case 204: return "No Content";
  case 206: return "Partial Content";
  case 301: return "Moved Permanently";
  case 302: return "Found";
  case 304: return "Not Modified";
  case 307: return "Temporary Redirect";
  case 308: return "Permanent Redirect";
  case 400: return "Bad Request";
  case 401: return "Unauthorized";
  case 403: return "Forbidden";
  case 404: return "Not Found";
  case 405: return "Method Not Allowed";
  case 406: return "Not Acceptable";
  case 408: return "Request Timeout";
  case 409: return "Conflict";
  case 410: return "Gone";
  case 411: return "Length Required";
  case 413: return "Payload Too Large";
  case 414: return "URI Too Long";
  case 415: return "Unsupported Media Type";
  case 417: return "Expectation Failed";
  case 422: return "Unprocessable Entity";
  case 429: return "Too Many Requests";
  case 431: return "Request Header Fields Too Large";
  case 500: return "Internal Server Error";
  case 501: return "Not Implemented";
  case 502: return "Bad Gateway";
  case 503: return "Service Unavailable";
  case 504: return "Gateway Timeout";
  case 505: return "HTTP Version Not Supported";
  default: break;
  }
  switch (status / 100) {
  case 1: return "Informational";
  case 2: return "Success";
  case 3: return "Redirection";
  case 4: return "Client Error";
  default: return "Server Error";
  }
}

/* Case-insensitive match of @p s against @p pat where '*' matches any run. */
static bool glob_match_ci(const char *pat, const char *s) {
  const char *star = NULL, *resume = NULL;
  while (*s) {
    if (*pat == '*') {
      star = pat++;
      resume = s;
    } else if (*pat && tolower((unsigned char)*pat) == tolower((unsigned char)*s)) {
      pat++;
      s++;
    } else if (star) {
      pat = star + 1;
      s = ++resume;
    } else {
      return false;
    }
  }
  while (*pat == '*')
    pat++;
  return *pat == '\0';
}

static void set_timer(conn_t *c, timer_kind_t kind, uint64_t ms);

static void update_body_peak(conn_t *c) {
  if (c->body.cap > c->srv->stats.body_buffer_peak) c->srv->stats.body_buffer_peak = c->body.cap;
}

/* Resizes the body buffer to exactly @p cap bytes (never beyond what the limit allows). */
static int body_realloc(conn_t *c, size_t cap) {
  if (cap <= c->body.cap) return 0;
  uint8_t *d = sp_realloc(c->body.data, cap);
  if (!d) return SP_ENOMEM;
  c->body.data = d;
  c->body.cap = cap;
  update_body_peak(c);
  return 0;
}

/* The largest the identity body buffer may need: the declared length, else the limit. */
static size_t body_cap_max(const conn_t *c) {
  size_t max = c->srv->max_body;
  if (c->has_cl && !c->inflating && c->content_length < max) max = (size_t)c->content_length;
  return max;
}

/* Appends identity body bytes, growing geometrically but never past the limit. */
static int body_append(conn_t *c, const char *p, size_t n) {
  size_t max = c->srv->max_body;
  if (n > max - c->body.len) return SP_ETOOBIG;
  if (c->body.len + n > c->body.cap) {
    size_t want = c->body.cap * 2;
    if (want < 16384) want = 16384;
    size_t top = body_cap_max(c);
    if (want > top) want = top;
    if (want < c->body.len + n) want = c->body.len + n;
    int rc = body_realloc(c, want);
    if (rc) return rc;
  }
  memcpy(c->body.data + c->body.len, p, n);
  c->body.len += n;
  return 0;
}

/* --- request lifecycle ----------------------------------------------------- */

/* Returns the connection's inflater to the server's pool. */
static void inflater_release(conn_t *c) {
  sp_http_server_t *s = c->srv;
  if (!c->inflater) return;
  if (s->n_inflaters < INFLATER_POOL)
    s->inflaters[s->n_inflaters++] = c->inflater;
  else
    sp_inflater_destroy(c->inflater);
  c->inflater = NULL;
}

/* Forgets the request (after it was answered or before the next one). */
static void request_reset(conn_t *c) {
  c->head.len = 0;
  c->head_bytes = 0;
  c->last_cb = 0;
  c->n_refs = 0;
  c->headers_done = false;
  c->hdr_overflow = false;
  c->oom = false;
  c->has_cl = false;
  c->content_length = 0;
  c->wire_len = 0;
  c->inflating = false;
  inflater_release(c);
  c->cors_origin = NULL;
  c->keep_alive_10 = false;
  c->is_head = false;
  c->late = false;
  c->err_msg[0] = '\0';
  if (c->body.cap > KEEP_BUF_CAP) sp_buf_free(&c->body);
  if (c->head.cap > KEEP_BUF_CAP) sp_buf_free(&c->head);
  c->body.len = 0;
  memset(&c->req, 0, sizeof c->req);
}

static void set_error(conn_t *c, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void set_error(conn_t *c, int status, const char *fmt, ...) {
  if (c->req.error_status) return; /* the first reason wins */
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(c->err_msg, sizeof c->err_msg, fmt, ap);
  va_end(ap);
  c->req.error_status = status;
  c->req.error_message = c->err_msg;
}

static int head_append(conn_t *c, const char *p, size_t n) {
  if (sp_buf_append(&c->head, p, n) != 0) {
    c->oom = true;
    return -1;
  }
  return 0;
}

static int count_head(conn_t *c, size_t n) {
  c->head_bytes += n;
  if (c->head_bytes > c->srv->max_header_size) {
    c->hdr_overflow = true;
    return -1;
  }
  return 0;
}

/* --- http-parser callbacks ------------------------------------------------- */

static int on_message_begin(http_parser *p) {
  conn_t *c = p->data;
  request_reset(c);
  c->state = CS_HEADERS;
  c->late = c->srv->shutting_down;
  /* A new connection's header deadline already runs from accept. */
  if (c->timer_kind != TK_HEADER) set_timer(c, TK_HEADER, c->srv->header_timeout_ms);
  return 0;
}

static int on_url(http_parser *p, const char *at, size_t len) {
  conn_t *c = p->data;
  if (count_head(c, len)) return -1;
  return head_append(c, at, len);
}

static int on_header_field(http_parser *p, const char *at, size_t len) {
  conn_t *c = p->data;
  if (count_head(c, len)) return -1;
  if (c->headers_done) return 0; /* chunked trailers are counted, not kept */
  if (c->last_cb != 1) {
    /* A new header: terminate the url or the previous value first. */
    if (head_append(c, "", 1)) return -1;
    if (c->n_refs == c->cap_refs) {
      size_t cap = c->cap_refs ? c->cap_refs * 2 : 16;
      hdr_ref_t *r = sp_realloc(c->refs, cap * sizeof(*r));
      if (!r) {
        c->oom = true;
        return -1;
      }
      c->refs = r;
      c->cap_refs = cap;
    }
    c->refs[c->n_refs].name_off = (uint32_t)c->head.len;
    c->refs[c->n_refs].val_off = UINT32_MAX;
    c->n_refs++;
    c->last_cb = 1;
  }
  size_t start = c->head.len;
  if (head_append(c, at, len)) return -1;
  for (size_t i = start; i < c->head.len; i++)
    c->head.data[i] = (uint8_t)tolower(c->head.data[i]);
  return 0;
}

static int on_header_value(http_parser *p, const char *at, size_t len) {
  conn_t *c = p->data;
  if (count_head(c, len)) return -1;
  if (c->headers_done) return 0;
  if (c->last_cb != 2) {
    if (head_append(c, "", 1)) return -1;
    c->refs[c->n_refs - 1].val_off = (uint32_t)c->head.len;
    c->last_cb = 2;
  }
  return head_append(c, at, len);
}

static const char *find_header(conn_t *c, const char *name) {
  return sp_http_request_header(&c->req, name);
}

/* Splits the request target in place into path and query. */
static void split_target(conn_t *c, char *url) {
  char *path = url;
  if (*url != '/' && strcmp(url, "*") != 0) {
    /* absolute-form ("http://host/p?q"): skip scheme and authority */
    struct http_parser_url u;
    http_parser_url_init(&u);
    if (http_parser_parse_url(url, strlen(url), 0, &u) == 0) {
      if (u.field_set & (1 << UF_PATH))
        path = url + u.field_data[UF_PATH].off;
      else if (u.field_set & (1 << UF_QUERY))
        path = url + u.field_data[UF_QUERY].off - 1;
      else
        path = url + strlen(url);
    }
  }
  char *hash = strchr(path, '#');
  if (hash) *hash = '\0';
  char *q = strchr(path, '?');
  c->req.query = "";
  if (q) {
    *q = '\0';
    c->req.query = q + 1;
  }
  c->req.path = *path ? path : "/";
}

static int on_headers_complete(http_parser *p) {
  conn_t *c = p->data;
  sp_http_server_t *s = c->srv;
  /* Terminate the last string; a trailing field without value gets "". */
  if (head_append(c, "", 1)) return -1;
  if (c->last_cb == 1) {
    c->refs[c->n_refs - 1].val_off = (uint32_t)c->head.len;
    if (head_append(c, "", 1)) return -1;
  }
  c->headers_done = true;
  if (c->n_refs > c->cap_hdrs) {
    sp_http_header_t *h = sp_realloc(c->hdrs, c->n_refs * sizeof(*h));
    if (!h) {
      c->oom = true;
      return -1;
    }
    c->hdrs = h;
    c->cap_hdrs = c->n_refs;
  }
  /* The head buffer no longer moves: point into it. */
  char *base = (char *)c->head.data;
  for (size_t i = 0; i < c->n_refs; i++) {
    char *v = base + c->refs[i].val_off;
    size_t n = strlen(v);
    while (n && (v[n - 1] == ' ' || v[n - 1] == '\t'))
      v[--n] = '\0'; /* trailing OWS */
    c->hdrs[i].name = base + c->refs[i].name_off;
    c->hdrs[i].value = v;
  }
  c->req.headers = c->hdrs;
  c->req.n_headers = c->n_refs;
  c->req.method = http_method_str((enum http_method)p->method);
  c->req.remote_addr = c->remote;
  split_target(c, base);
  c->is_head = p->method == HTTP_HEAD;
  c->keep_alive_10 = p->http_major == 1 && p->http_minor == 0 && http_should_keep_alive(p);
  if (c->late) {
    /* Begun after shutdown: not read further, answered 503 by dispatch(). */
    c->close_after = true;
    return 1;
  }

  c->has_cl = (p->flags & F_CONTENTLENGTH) != 0;
  c->content_length = c->has_cl ? p->content_length : 0;
  bool chunked = (p->flags & F_CHUNKED) != 0;
  bool has_body = chunked || c->content_length > 0;

  sp_encoding_t enc = SP_ENC_IDENTITY;
  const char *ce = find_header(c, "content-encoding");
  if (has_body && sp_encoding_parse(ce, &enc) != 0) {
    set_error(c, 415, "unsupported Content-Encoding \"%.64s\" (supported: gzip, deflate, identity)",
              ce);
  } else if (c->content_length > s->max_body) {
    set_error(c, 413, "request body of %llu bytes exceeds the limit of %zu bytes",
              (unsigned long long)c->content_length, s->max_body);
  }
  if (c->req.error_status) {
    /* Do not read the body: answer now, then close the connection. */
    c->close_after = true;
    return 1;
  }
  if (!has_body) return 0;

  if (enc != SP_ENC_IDENTITY) {
    if (s->n_inflaters) {
      c->inflater = s->inflaters[--s->n_inflaters];
    } else if (sp_inflater_create(enc, s->max_body, &c->inflater) != 0) {
      c->oom = true;
      return -1;
    }
    sp_inflater_reset(c->inflater, enc, s->max_body);
    c->inflating = true;
    if (c->has_cl) {
      /*
       * Payloads typically inflate 3-10x: start at 4x instead of doubling up
       * from 16 KiB, but reserve no more than BODY_FIRST_MAX before bytes
       * arrive; the inflater doubles the buffer as output is produced.
       */
      uint64_t guess = c->content_length * 4 + 1024;
      if (guess > (uint64_t)s->max_body + 1) guess = (uint64_t)s->max_body + 1;
      if (guess > BODY_FIRST_MAX) guess = BODY_FIRST_MAX;
      if (body_realloc(c, (size_t)guess) != 0) {
        c->oom = true;
        return -1;
      }
    }
  } else if (c->has_cl) {
    /*
     * The exact size when small, else a first part of it: the buffer grows
     * (doubling, up to the declared length) as bytes arrive (see on_alloc).
     */
    size_t first = c->content_length < BODY_FIRST_MAX ? (size_t)c->content_length : BODY_FIRST_MAX;
    if (body_realloc(c, first) != 0) {
      c->oom = true;
      return -1;
    }
  }
  const char *expect = find_header(c, "expect");
  if (expect && strcasecmp(expect, "100-continue") == 0 && p->http_major == 1 &&
      p->http_minor >= 1) {
    static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
    conn_send_small(c, cont, sizeof cont - 1);
  }
  c->state = CS_BODY;
  set_timer(c, TK_BODY, s->body_timeout_ms);
  return 0;
}

/* Ends message processing early: the request goes to the handler as is. */
static void stop_with_error(conn_t *c) {
  c->close_after = true;
  c->msg_ready = true;
  http_parser_pause(&c->parser, 1);
}

static int on_body(http_parser *p, const char *at, size_t len) {
  conn_t *c = p->data;
  sp_http_server_t *s = c->srv;
  if (c->req.error_status) return 0;
  c->wire_len += len;
  if (c->wire_len > s->max_body) {
    set_error(c, 413, "request body exceeds the limit of %zu bytes", s->max_body);
    stop_with_error(c);
    return 0;
  }
  int rc;
  if (c->inflating) {
    rc = sp_inflater_feed(c->inflater, at, len, &c->body);
    update_body_peak(c);
  } else if (c->body.data && at == (const char *)c->body.data + c->body.len) {
    c->body.len += len; /* read in place (see on_alloc) */
    rc = 0;
  } else {
    rc = body_append(c, at, len);
  }
  if (rc == 0) return 0;
  if (rc == SP_ETOOBIG)
    set_error(c, 413, "%s body exceeds the limit of %zu bytes",
              c->inflating ? "decompressed" : "request", s->max_body);
  else if (rc == SP_EPROTO)
    set_error(c, 400, "corrupt %s body", find_header(c, "content-encoding"));
  else
    set_error(c, 503, "out of memory reading the request body");
  stop_with_error(c);
  return 0;
}

static int on_message_complete(http_parser *p) {
  conn_t *c = p->data;
  if (!c->req.error_status && c->inflating) {
    int rc = sp_inflater_finish(c->inflater, &c->body);
    if (rc == SP_ETOOBIG)
      set_error(c, 413, "decompressed body exceeds the limit of %zu bytes", c->srv->max_body);
    else if (rc)
      set_error(c, 400, "corrupt or truncated %s body", find_header(c, "content-encoding"));
    if (rc) c->close_after = true;
  }
  c->msg_ready = true;
  http_parser_pause(p, 1);
  return 0;
}

static void init_parser_settings(void) {
  http_parser_settings_init(&parser_settings);
  parser_settings.on_message_begin = on_message_begin;
  parser_settings.on_url = on_url;
  parser_settings.on_header_field = on_header_field;
  parser_settings.on_header_value = on_header_value;
  parser_settings.on_headers_complete = on_headers_complete;
  parser_settings.on_body = on_body;
  parser_settings.on_message_complete = on_message_complete;
}

/* --- writing ------------------------------------------------------------- */

static void on_write(uv_write_t *req, int status) {
  wblock_t *wb = (wblock_t *)req;
  conn_t *c = wb->c;
  bool response = wb->response;
  sp_free(wb);
  if (c->closing) return;
  if (status < 0) {
    sp_log_debug(c->srv->component, "http: write to %s failed: %s", c->remote, uv_strerror(status));
    conn_close(c);
    return;
  }
  if (!response) return;
  /*
   * During shutdown a keep-alive response (built before shutdown began) may
   * have a pipelined request behind it: resume so that it is answered 503
   * (see on_message_begin) rather than dropped unanswered.
   */
  if (c->close_after || (c->srv->shutting_down && c->pending.len <= c->pending_off))
    conn_finish(c);
  else
    conn_resume(c);
}

static wblock_t *wblock_new(conn_t *c, size_t len, bool response) {
  wblock_t *wb = sp_malloc(sizeof(*wb) + len);
  if (!wb) return NULL;
  wb->c = c;
  wb->response = response;
  wb->len = len;
  return wb;
}

static int wblock_write(conn_t *c, wblock_t *wb) {
  uv_buf_t b = uv_buf_init(wb->data, (unsigned)wb->len);
  int rc = uv_write(&wb->req, (uv_stream_t *)&c->tcp, &b, 1, on_write);
  if (rc) {
    sp_free(wb);
    return rc;
  }
  return 0;
}

/*
 * Sends the ciphertext the TLS connection has pending, as one write. With
 * @p response set the write is the one whose completion ends the response,
 * and is made even if empty so that completion is signalled.
 */
static int tls_flush(conn_t *c, bool response) {
  size_t n = sp_tls_conn_pending(c->tls);
  if (!n && !response) return 0;
  wblock_t *wb = wblock_new(c, n, response);
  if (!wb) return SP_ENOMEM;
  wb->len = n ? sp_tls_conn_take(c->tls, wb->data, n) : 0;
  return wblock_write(c, wb) ? SP_EIO : 0;
}

/* Sends @p wb (plaintext) on the connection; takes ownership of it. */
static int conn_write(conn_t *c, wblock_t *wb) {
  if (!c->tls) return wblock_write(c, wb) ? SP_EIO : 0;
  bool response = wb->response;
  int rc = sp_tls_conn_write(c->tls, wb->data, wb->len);
  sp_free(wb);
  if (rc) return rc;
  return tls_flush(c, response);
}

/* Sends a small control message (100 Continue); failures close the connection later. */
static void conn_send_small(conn_t *c, const char *data, size_t len) {
  wblock_t *wb = wblock_new(c, len, false);
  if (!wb) return;
  memcpy(wb->data, data, len);
  if (conn_write(c, wb) != 0) c->close_after = true;
}

/* --- timers -------------------------------------------------------------- */

static void on_timer(uv_timer_t *t) {
  conn_t *c = t->data;
  sp_http_server_t *s = c->srv;
  timer_kind_t kind = c->timer_kind;
  c->timer_kind = TK_NONE;
  switch (kind) {
  case TK_HEADER:
    s->stats.timeouts++;
    if (c->state == CS_HEADERS) {
      sp_log_debug(s->component, "http: %s: timed out reading the request headers", c->remote);
      conn_reject(c, 408, "timed out reading the request headers");
    } else {
      conn_close(c);
    }
    break;
  case TK_BODY: {
    s->stats.timeouts++;
    sp_log_debug(s->component, "http: %s: timed out reading the request body", c->remote);
    set_error(c, 408, "timed out after %llu ms reading the request body",
              (unsigned long long)s->body_timeout_ms);
    c->close_after = true;
    http_parser_pause(&c->parser, 1);
    dispatch(c);
    break;
  }
  case TK_WRITE:
    s->stats.timeouts++;
    conn_close(c);
    break;
  case TK_DEADLINE:
    if (c->state == CS_HEADERS || c->state == CS_BODY) {
      /* The client sees the connection close and retries elsewhere or later. */
      s->stats.shutdown_aborts++;
      sp_log_debug(s->component,
                   "http: %s: shutting down: abandoning a request still being received", c->remote);
    }
    conn_close(c);
    break;
  case TK_IDLE:
  case TK_LINGER:
  case TK_NONE: conn_close(c); break;
  }
}

/*
 * Arms the connection's one timer. During a bounded shutdown no timer may
 * run past the shutdown deadline: a later one is clamped to it and becomes
 * TK_DEADLINE, which closes the connection when it fires.
 */
static void set_timer(conn_t *c, timer_kind_t kind, uint64_t ms) {
  sp_http_server_t *s = c->srv;
  c->timer_kind = kind;
  if (kind == TK_NONE) {
    uv_timer_stop(&c->timer);
    return;
  }
  if (s->shutting_down && s->shutdown_deadline != UINT64_MAX) {
    uint64_t now = uv_now(s->loop);
    uint64_t left = s->shutdown_deadline > now ? s->shutdown_deadline - now : 0;
    if (ms > left) {
      ms = left;
      c->timer_kind = TK_DEADLINE;
    }
  }
  uv_timer_start(&c->timer, on_timer, ms, 0);
}

/* --- reading ------------------------------------------------------------- */

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  (void)suggested;
  conn_t *c = h->data;
  /*
   * A large identity body of known length is read straight into its
   * buffer, limited to the bytes still due, so nothing past the body (a
   * pipelined request) lands there. The parser then sees the bytes in place.
   * libuv asks for a buffer only when the socket is readable, so this is
   * where the buffer grows: doubling (amortised copies), up to the declared
   * length. If growing fails the bytes go through the shared buffer and
   * body_append reports the out-of-memory.
   */
  if (!c->tls && c->state == CS_BODY && c->has_cl && !c->inflating && !c->req.error_status &&
      c->body.data) {
    size_t left = (size_t)c->content_length - c->body.len;
    if (left >= ZERO_COPY_MIN) {
      if (c->body.cap - c->body.len < ZERO_COPY_MIN) {
        size_t want = c->body.cap * 2;
        if (want < c->body.len + ZERO_COPY_MIN) want = c->body.len + ZERO_COPY_MIN;
        if (want > (size_t)c->content_length) want = (size_t)c->content_length;
        body_realloc(c, want);
      }
      size_t room = c->body.cap - c->body.len;
      if (room > left) room = left;
      if (room >= ZERO_COPY_MIN) {
        if (room > (size_t)1 << 30) room = (size_t)1 << 30;
        *buf = uv_buf_init((char *)c->body.data + c->body.len, (unsigned)room);
        return;
      }
    }
  }
  *buf = uv_buf_init((char *)c->srv->rbuf, (unsigned)RBUF_SIZE);
}

static void start_reading(conn_t *c);

/* Decrypts and parses what TLS holds. */
static parse_result_t tls_pump(conn_t *c) {
  sp_http_server_t *s = c->srv;
  if (!sp_tls_conn_established(c->tls)) {
    int rc = sp_tls_conn_handshake(c->tls);
    if (rc && rc != SP_EAGAIN) {
      s->stats.tls_handshake_failures++;
      sp_log_debug(s->component, "http: TLS handshake with %s failed: %s", c->remote,
                   sp_tls_conn_error(c->tls));
      tls_flush(c, false); /* the alert */
      conn_close(c);
      return PARSE_STOP;
    }
    if (tls_flush(c, false) != 0) {
      conn_close(c);
      return PARSE_STOP;
    }
    if (rc == SP_EAGAIN) return PARSE_MORE;
  }
  for (;;) {
    size_t n = 0;
    int rc = sp_tls_conn_read(c->tls, s->tls_plain, RBUF_SIZE, &n);
    if (rc == SP_EAGAIN) break;
    if (rc) {
      if (rc != SP_ESHUTDOWN)
        sp_log_debug(s->component, "http: TLS error from %s: %s", c->remote,
                     sp_tls_conn_error(c->tls));
      conn_close(c);
      return PARSE_STOP;
    }
    if (conn_parse(c, (const char *)s->tls_plain, n, false) == PARSE_STOP) return PARSE_STOP;
  }
  if (tls_flush(c, false) != 0) {
    conn_close(c);
    return PARSE_STOP;
  }
  return PARSE_MORE;
}

static void on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf) {
  conn_t *c = stream->data;
  if (nread == 0) return;
  if (nread < 0) {
    /* EOF or error: whatever was in progress cannot be answered. */
    conn_close(c);
    return;
  }
  c->srv->stats.bytes_received += (uint64_t)nread;
  if (c->state == CS_LINGER) return; /* discard */
  if (c->tls) {
    if (sp_tls_conn_feed(c->tls, buf->base, (size_t)nread) != 0) {
      conn_close(c);
      return;
    }
    tls_pump(c);
    return;
  }
  conn_parse(c, buf->base, (size_t)nread, false);
}

static void start_reading(conn_t *c) {
  if (c->reading || c->closing) return;
  int rc = uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
  if (rc) {
    conn_close(c);
    return;
  }
  c->reading = true;
}

static void stop_reading(conn_t *c) {
  if (!c->reading) return;
  uv_read_stop((uv_stream_t *)&c->tcp);
  c->reading = false;
}

/* --- dispatch ------------------------------------------------------------ */

static bool cors_header_allowed(const cors_t *cors, const char *name, size_t n) {
  static const char *const safelist[] = {"accept",       "accept-language", "content-language",
                                         "content-type", "origin",          "x-requested-with"};
  if (cors->any_header) return true;
  for (size_t i = 0; i < sizeof safelist / sizeof *safelist; i++)
    if (strlen(safelist[i]) == n && strncasecmp(safelist[i], name, n) == 0) return true;
  for (size_t i = 0; i < cors->n_headers; i++)
    if (strlen(cors->headers[i]) == n && strncasecmp(cors->headers[i], name, n) == 0) return true;
  return false;
}

static bool cors_origin_allowed(const cors_t *cors, const char *origin) {
  for (size_t i = 0; i < cors->n_origins; i++)
    if (glob_match_ci(cors->origins[i], origin)) return true;
  return false;
}

/* Answers a CORS preflight request itself. */
static void answer_preflight(conn_t *c, const char *origin, const char *method) {
  const cors_t *cors = c->srv->cors;
  const char *req_headers = find_header(c, "access-control-request-headers");
  bool ok =
      cors_origin_allowed(cors, origin) &&
      (strcmp(method, "GET") == 0 || strcmp(method, "POST") == 0 || strcmp(method, "HEAD") == 0);
  if (ok && req_headers) {
    const char *p = req_headers;
    while (*p && ok) {
      while (*p == ' ' || *p == '\t' || *p == ',')
        p++;
      const char *start = p;
      while (*p && *p != ',')
        p++;
      const char *end = p;
      while (end > start && (end[-1] == ' ' || end[-1] == '\t'))
        end--;
      if (end > start) ok = cors_header_allowed(cors, start, (size_t)(end - start));
    }
  }
  c->srv->stats.preflights++;
  sp_http_header_t h[7];
  size_t n = 0;
  char max_age[24];
  h[n++] = (sp_http_header_t){"Vary", "Origin, Access-Control-Request-Method, "
                                      "Access-Control-Request-Headers"};
  if (ok) {
    h[n++] = (sp_http_header_t){"Access-Control-Allow-Origin", origin};
    h[n++] = (sp_http_header_t){"Access-Control-Allow-Methods", method};
    h[n++] = (sp_http_header_t){"Access-Control-Allow-Credentials", "true"};
    if (req_headers && *req_headers)
      h[n++] = (sp_http_header_t){"Access-Control-Allow-Headers", req_headers};
    if (cors->max_age > 0) {
      snprintf(max_age, sizeof max_age, "%d", cors->max_age);
      h[n++] = (sp_http_header_t){"Access-Control-Max-Age", max_age};
    }
  }
  sp_http_respond(&c->req, 204, NULL, NULL, 0, h, n);
}

static void dispatch(conn_t *c) {
  sp_http_server_t *s = c->srv;
  c->msg_ready = false;
  if (c->late) {
    sp_log_debug(s->component, "http: %s %s from %s after shutdown began: 503", c->req.method,
                 c->req.path, c->remote);
    conn_reject(c, 503, "server is shutting down; retry");
    return;
  }
  stop_reading(c);
  set_timer(c, TK_NONE, 0);
  c->state = CS_HANDLING;
  c->req_out = true;
  if (c->parser.upgrade || !http_should_keep_alive(&c->parser)) c->close_after = true;
  if (c->req.error_status) c->close_after = true;
  c->req.body = c->body.len ? c->body.data : NULL;
  c->req.body_len = c->body.len;
  c->req.wire_len = c->wire_len;
  if (s->cors && !c->req.error_status) {
    const char *origin = find_header(c, "origin");
    if (origin) {
      const char *acrm = find_header(c, "access-control-request-method");
      if (strcmp(c->req.method, "OPTIONS") == 0 && acrm) {
        answer_preflight(c, origin, acrm);
        return;
      }
      if (cors_origin_allowed(s->cors, origin)) c->cors_origin = origin;
    }
  }
  s->stats.requests++;
  if (c->req.error_status) {
    s->stats.requests_rejected++;
    sp_log_debug(s->component, "http: %s %s from %s rejected: %d %s", c->req.method, c->req.path,
                 c->remote, c->req.error_status, c->req.error_message);
  }
  s->handler(&c->req, s->handler_ctx);
}

/*
 * Runs the parser over @p data. Stops (PARSE_STOP) when a message went to
 * the handler or the connection is being closed; bytes after the message
 * are kept for later.
 */
static parse_result_t conn_parse(conn_t *c, const char *data, size_t len, bool from_pending) {
  size_t n = http_parser_execute(&c->parser, &parser_settings, data, len);
  enum http_errno e = HTTP_PARSER_ERRNO(&c->parser);
  if (c->msg_ready) {
    if (from_pending) {
      c->pending_off += n;
      if (c->pending_off >= c->pending.len) c->pending.len = c->pending_off = 0;
    } else if (n < len) {
      c->pending.len = 0;
      c->pending_off = 0;
      if (sp_buf_append(&c->pending, data + n, len - n) != 0) c->close_after = true;
    }
    dispatch(c);
    return PARSE_STOP;
  }
  if (e != HPE_OK) {
    if (c->hdr_overflow || e == HPE_HEADER_OVERFLOW)
      conn_reject(c, 431, "request headers too large");
    else if (c->oom)
      conn_reject(c, 503, "out of memory");
    else
      conn_reject(c, 400, http_errno_description(e));
    return PARSE_STOP;
  }
  if (from_pending) {
    c->pending_off = 0;
    c->pending.len = 0;
    if (c->pending.cap > KEEP_BUF_CAP) sp_buf_free(&c->pending);
  }
  return PARSE_MORE;
}

/* After a response was written on a keep-alive connection: next request. */
static void conn_resume(conn_t *c) {
  sp_http_server_t *s = c->srv;
  request_reset(c);
  c->state = CS_IDLE;
  set_timer(c, TK_NONE, 0);
  http_parser_pause(&c->parser, 0);
  if (c->pending.len > c->pending_off) {
    if (conn_parse(c, (const char *)c->pending.data + c->pending_off,
                   c->pending.len - c->pending_off, true) == PARSE_STOP)
      return;
  }
  if (c->tls && tls_pump(c) == PARSE_STOP) return;
  if (c->state == CS_IDLE) {
    if (s->shutting_down) {
      conn_close(c);
      return;
    }
    set_timer(c, TK_IDLE, s->idle_timeout_ms);
  }
  start_reading(c);
}

/* --- closing ------------------------------------------------------------- */

static void conn_free(conn_t *c) {
  sp_http_server_t *s = c->srv;
  if (c->prev)
    c->prev->next = c->next;
  else
    s->conns = c->next;
  if (c->next) c->next->prev = c->prev;
  s->n_conns--;
  s->stats.connections_active--;
  sp_buf_free(&c->head);
  sp_buf_free(&c->body);
  sp_buf_free(&c->pending);
  sp_free(c->refs);
  sp_free(c->hdrs);
  inflater_release(c);
  sp_tls_conn_destroy(c->tls);
  sp_free(c);
  maybe_finish_shutdown(s);
}

static void on_conn_handle_closed(uv_handle_t *h) {
  conn_t *c = h->data;
  if (--c->handles_open == 0 && !c->req_out) conn_free(c);
}

static void conn_close(conn_t *c) {
  if (c->closing) return;
  c->closing = true;
  c->state = CS_CLOSING;
  c->reading = false;
  uv_timer_stop(&c->timer);
  uv_close((uv_handle_t *)&c->timer, on_conn_handle_closed);
  uv_close((uv_handle_t *)&c->tcp, on_conn_handle_closed);
}

static void on_shutdown(uv_shutdown_t *req, int status) {
  conn_t *c = req->data;
  if (c->closing) return;
  if (status < 0) conn_close(c);
}

/* The last response is out: half-close and drain input until EOF. */
static void conn_finish(conn_t *c) {
  sp_http_server_t *s = c->srv;
  c->state = CS_LINGER;
  if (c->tls && sp_tls_conn_established(c->tls)) {
    sp_tls_conn_close_notify(c->tls);
    tls_flush(c, false);
  }
  c->shut.data = c;
  if (uv_shutdown(&c->shut, (uv_stream_t *)&c->tcp, on_shutdown) != 0) {
    conn_close(c);
    return;
  }
  uint64_t linger = s->idle_timeout_ms < LINGER_MS ? s->idle_timeout_ms : LINGER_MS;
  set_timer(c, TK_LINGER, linger);
  start_reading(c);
}

/* Answers a request the handler cannot see (malformed, header timeout) and closes. */
static void conn_reject(conn_t *c, int status, const char *msg) {
  sp_http_server_t *s = c->srv;
  s->stats.bad_requests++;
  stop_reading(c);
  set_timer(c, TK_WRITE, s->idle_timeout_ms);
  c->close_after = true;
  c->state = CS_WRITING;
  char hdr[256];
  size_t mlen = strlen(msg);
  /* 503 (out of memory, shutting down) passes: say when to come back. */
  int n =
      snprintf(hdr, sizeof hdr,
               "HTTP/1.1 %d %s\r\nContent-Type: text/plain; charset=utf-8\r\n"
               "Content-Length: %zu\r\n%sConnection: close\r\n\r\n",
               status, reason_phrase(status), mlen + 1, status == 503 ? "Retry-After: 1\r\n" : "");
  wblock_t *wb = wblock_new(c, (size_t)n + mlen + 1, true);
  if (!wb) {
    conn_close(c);
    return;
  }
  memcpy(wb->data, hdr, (size_t)n);
  memcpy(wb->data + n, msg, mlen);
  wb->data[(size_t)n + mlen] = '\n';
  if (conn_write(c, wb) != 0) conn_close(c);
}

/* --- responding ---------------------------------------------------------- */

static char *put(char *p, const char *s, size_t n) {
  memcpy(p, s, n);
  return p + n;
}

#define PUTS(p, lit) put((p), (lit), sizeof(lit) - 1)

static char *put_header(char *p, const char *name, const char *value) {
  p = put(p, name, strlen(name));
  p = PUTS(p, ": ");
  p = put(p, value, strlen(value));
  return PUTS(p, "\r\n");
}

uint8_t *sp_http_request_take_body(sp_http_request_t *req, size_t *len) {
  conn_t *c = (conn_t *)((char *)req - offsetof(conn_t, req));
  assert(c->req_out);
  *len = 0;
  if (req->body == NULL || c->body.len == 0) return NULL;
  size_t n;
  size_t cap = c->body.cap;
  uint8_t *d = sp_buf_steal(&c->body, &n);
  /* Reading in place grows the buffer geometrically: give back a large tail. */
  if (cap - n > 4096 && cap - n > n / 8) {
    uint8_t *fit = sp_realloc(d, n);
    if (fit != NULL) d = fit;
  }
  req->body = NULL;
  req->body_len = 0;
  *len = n;
  return d;
}

void sp_http_respond(sp_http_request_t *req, int status, const char *content_type, const void *body,
                     size_t len, const sp_http_header_t *extra, size_t n_extra) {
  conn_t *c = (conn_t *)((char *)req - offsetof(conn_t, req));
  sp_http_server_t *s = c->srv;
  assert(c->req_out);
  c->req_out = false;
  if (c->closing) {
    /* The peer went away meanwhile; just let go of the connection. */
    request_reset(c);
    if (c->handles_open == 0) conn_free(c);
    return;
  }
  if (status < 100 || status > 999) status = 500;
  if (s->shutting_down) c->close_after = true;
  bool no_body = status == 204 || status == 304 || status < 200;
  bool send_body = !no_body && !c->is_head;

  const char *reason = reason_phrase(status);
  size_t need = 64 + strlen(reason) + 64; /* status line, content-length, connection */
  if (content_type) need += 16 + strlen(content_type);
  for (size_t i = 0; i < n_extra; i++)
    need += strlen(extra[i].name) + strlen(extra[i].value) + 4;
  if (c->cors_origin) need += 96 + strlen(c->cors_origin);
  if (send_body) need += len;

  wblock_t *wb = wblock_new(c, need, true);
  if (!wb) {
    request_reset(c);
    conn_close(c);
    return;
  }
  char *p = wb->data;
  char num[48];
  int k = snprintf(num, sizeof num, "HTTP/1.1 %d ", status);
  p = put(p, num, (size_t)k);
  p = put(p, reason, strlen(reason));
  p = PUTS(p, "\r\n");
  if (content_type) p = put_header(p, "Content-Type", content_type);
  if (!no_body) {
    k = snprintf(num, sizeof num, "Content-Length: %zu\r\n", len);
    p = put(p, num, (size_t)k);
  }
  if (c->cors_origin) {
    p = put_header(p, "Access-Control-Allow-Origin", c->cors_origin);
    p = PUTS(p, "Access-Control-Allow-Credentials: true\r\nVary: Origin\r\n");
  }
  for (size_t i = 0; i < n_extra; i++)
    p = put_header(p, extra[i].name, extra[i].value);
  if (c->close_after)
    p = PUTS(p, "Connection: close\r\n");
  else if (c->keep_alive_10)
    p = PUTS(p, "Connection: keep-alive\r\n");
  p = PUTS(p, "\r\n");
  if (send_body && len) p = put(p, body, len);
  wb->len = (size_t)(p - wb->data);

  request_reset(c);
  c->state = CS_WRITING;
  set_timer(c, TK_WRITE, s->idle_timeout_ms);
  if (conn_write(c, wb) != 0) conn_close(c);
}

const char *sp_http_request_header(const sp_http_request_t *req, const char *name) {
  for (size_t i = 0; i < req->n_headers; i++)
    if (strcasecmp(req->headers[i].name, name) == 0) return req->headers[i].value;
  return NULL;
}

/* --- accepting ----------------------------------------------------------- */

static void format_peer(conn_t *c) {
  struct sockaddr_storage ss;
  int len = sizeof ss;
  char ip[INET6_ADDRSTRLEN] = "?";
  int port = 0;
  if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&ss, &len) == 0) {
    if (ss.ss_family == AF_INET6) {
      struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
      uv_ip6_name(a, ip, sizeof ip);
      port = ntohs(a->sin6_port);
      snprintf(c->remote, sizeof c->remote, "[%s]:%d", ip, port);
      return;
    }
    struct sockaddr_in *a = (struct sockaddr_in *)&ss;
    uv_ip4_name(a, ip, sizeof ip);
    port = ntohs(a->sin_port);
  }
  snprintf(c->remote, sizeof c->remote, "%s:%d", ip, port);
}

static void on_reject_closed(uv_handle_t *h) {
  sp_http_server_t *s = h->data;
  sp_free(h);
  s->n_rejects--;
  maybe_finish_shutdown(s);
}

/* Accepts and closes a connection we will not serve. */
static void refuse(sp_http_server_t *s, uv_stream_t *server) {
  uv_tcp_t *t = sp_malloc(sizeof(*t));
  if (!t) return;
  uv_tcp_init(s->loop, t);
  t->data = s;
  s->n_rejects++;
  uv_accept(server, (uv_stream_t *)t);
  uv_close((uv_handle_t *)t, on_reject_closed);
}

static void on_connection(uv_stream_t *server, int status) {
  sp_http_server_t *s = server->data;
  if (status < 0) {
    sp_log_warn(s->component, "http: accept failed: %s", uv_strerror(status));
    return;
  }
  if (s->shutting_down || s->n_conns >= s->max_connections) {
    s->stats.connections_rejected++;
    sp_log_debug(s->component, "http: refusing a connection: %zu open (max_connections)",
                 s->n_conns);
    refuse(s, server);
    return;
  }
  conn_t *c = sp_calloc(1, sizeof(*c));
  if (!c) {
    refuse(s, server);
    return;
  }
  c->srv = s;
  sp_buf_init(&c->head, 0);
  sp_buf_init(&c->body, 0);
  sp_buf_init(&c->pending, 0);
  uv_tcp_init(s->loop, &c->tcp);
  uv_timer_init(s->loop, &c->timer);
  c->tcp.data = c;
  c->timer.data = c;
  c->handles_open = 2;
  c->next = s->conns;
  if (s->conns) s->conns->prev = c;
  s->conns = c;
  s->n_conns++;
  s->stats.connections_accepted++;
  s->stats.connections_active++;
  http_parser_init(&c->parser, HTTP_REQUEST);
  c->parser.data = c;
  c->state = CS_IDLE;
  if (uv_accept(server, (uv_stream_t *)&c->tcp) != 0) {
    conn_close(c);
    return;
  }
  uv_tcp_nodelay(&c->tcp, 1);
  format_peer(c);
  if (s->tls && sp_tls_conn_create(s->tls, NULL, &c->tls) != 0) {
    conn_close(c);
    return;
  }
  /* The first request (and the TLS handshake) must arrive within the header timeout. */
  set_timer(c, TK_HEADER, s->header_timeout_ms);
  start_reading(c);
}

/* --- server lifecycle ----------------------------------------------------- */

static int parse_endpoint(const char *ep, struct sockaddr_storage *out) {
  const char *colon = strrchr(ep, ':');
  if (!colon) return SP_EINVAL;
  char host[256];
  size_t hlen = (size_t)(colon - ep);
  const char *h = ep;
  if (hlen >= 2 && ep[0] == '[' && ep[hlen - 1] == ']') {
    h = ep + 1;
    hlen -= 2;
  }
  if (hlen >= sizeof host) return SP_EINVAL;
  memcpy(host, h, hlen);
  host[hlen] = '\0';
  char *end;
  long port = strtol(colon + 1, &end, 10);
  if (!colon[1] || *end || port < 0 || port > 65535) return SP_EINVAL;
  if (!*host) strcpy(host, "0.0.0.0");
  if (strcasecmp(host, "localhost") == 0) strcpy(host, "127.0.0.1");
  memset(out, 0, sizeof *out);
  if (uv_ip4_addr(host, (int)port, (struct sockaddr_in *)out) == 0) return 0;
  if (uv_ip6_addr(host, (int)port, (struct sockaddr_in6 *)out) == 0) return 0;
  /* A host name: resolved once, here, at configuration time (this may block). */
  struct addrinfo hints, *res = NULL;
  memset(&hints, 0, sizeof hints);
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE;
  if (getaddrinfo(host, NULL, &hints, &res) != 0 || !res) return SP_EINVAL;
  memcpy(out, res->ai_addr, res->ai_addrlen);
  if (out->ss_family == AF_INET)
    ((struct sockaddr_in *)out)->sin_port = htons((uint16_t)port);
  else
    ((struct sockaddr_in6 *)out)->sin6_port = htons((uint16_t)port);
  freeaddrinfo(res);
  return 0;
}

static void cors_free(cors_t *c) {
  if (!c) return;
  for (size_t i = 0; i < c->n_origins; i++)
    sp_free(c->origins[i]);
  for (size_t i = 0; i < c->n_headers; i++)
    sp_free(c->headers[i]);
  sp_free(c->origins);
  sp_free(c->headers);
  sp_free(c);
}

static int cors_copy(const sp_http_cors_t *in, cors_t **out) {
  *out = NULL;
  if (!in || !in->n_allowed_origins) return 0;
  cors_t *c = sp_calloc(1, sizeof(*c));
  if (!c) return SP_ENOMEM;
  c->max_age = in->max_age;
  c->origins = sp_calloc(in->n_allowed_origins, sizeof(char *));
  c->headers = sp_calloc(in->n_allowed_headers ? in->n_allowed_headers : 1, sizeof(char *));
  if (!c->origins || !c->headers) goto fail;
  for (size_t i = 0; i < in->n_allowed_origins; i++) {
    if (!(c->origins[i] = sp_strdup(in->allowed_origins[i]))) goto fail;
    c->n_origins++;
  }
  for (size_t i = 0; i < in->n_allowed_headers; i++) {
    if (!(c->headers[i] = sp_strdup(in->allowed_headers[i]))) goto fail;
    c->n_headers++;
    if (strcmp(in->allowed_headers[i], "*") == 0) c->any_header = true;
  }
  *out = c;
  return 0;
fail:
  cors_free(c);
  return SP_ENOMEM;
}

int sp_http_server_create(uv_loop_t *loop, const sp_http_server_options_t *opts,
                          sp_http_server_t **out) {
  *out = NULL;
  uv_once(&parser_settings_once, init_parser_settings);
  if (!opts->endpoint || !opts->handler) return SP_EINVAL;
  int rc = SP_ENOMEM;
  sp_http_server_t *s = sp_calloc(1, sizeof(*s));
  if (!s) return SP_ENOMEM;
  s->loop = loop;
  s->endpoint = sp_strdup(opts->endpoint);
  s->component = sp_strdup(opts->component ? opts->component : "http");
  s->rbuf = sp_malloc(RBUF_SIZE);
  if (!s->endpoint || !s->component || !s->rbuf) goto fail;
  s->max_body = opts->max_body_size ? opts->max_body_size : DEFAULT_MAX_BODY;
  s->header_timeout_ms =
      opts->header_timeout_ms ? opts->header_timeout_ms : DEFAULT_HEADER_TIMEOUT_MS;
  s->body_timeout_ms = opts->body_timeout_ms ? opts->body_timeout_ms : DEFAULT_BODY_TIMEOUT_MS;
  s->idle_timeout_ms = opts->idle_timeout_ms ? opts->idle_timeout_ms : DEFAULT_IDLE_TIMEOUT_MS;
  s->max_connections = opts->max_connections ? opts->max_connections : DEFAULT_MAX_CONNECTIONS;
  s->max_header_size = opts->max_header_size ? opts->max_header_size : DEFAULT_MAX_HEADER_SIZE;
  s->handler = opts->handler;
  s->handler_ctx = opts->handler_ctx;
  s->shutdown_deadline = UINT64_MAX;
  rc = parse_endpoint(opts->endpoint, &s->addr);
  if (rc) {
    sp_log_error(s->component, "http: invalid endpoint \"%s\" (want host:port)", opts->endpoint);
    goto fail;
  }
  rc = cors_copy(opts->cors, &s->cors);
  if (rc) goto fail;
  if (opts->tls && opts->tls->present) {
    rc = sp_tls_ctx_create_server(opts->tls, s->component, &s->tls);
    if (rc) goto fail;
    rc = SP_ENOMEM;
    s->tls_plain = sp_malloc(RBUF_SIZE);
    if (!s->tls_plain) goto fail;
  }
  *out = s;
  return 0;
fail:
  sp_http_server_destroy(s);
  return rc;
}

static void on_listener_closed(uv_handle_t *h) {
  sp_http_server_t *s = h->data;
  s->listener_state = LS_NONE;
  maybe_finish_shutdown(s);
}

int sp_http_server_start(sp_http_server_t *self) {
  if (self->listener_state != LS_NONE) return SP_ESTATE;
  self->shutting_down = false;
  self->shutdown_done = false;
  self->shutdown_deadline = UINT64_MAX;
  uv_tcp_init(self->loop, &self->listener);
  self->listener.data = self;
  self->listener_state = LS_OPEN;
  int uvrc = uv_tcp_bind(&self->listener, (const struct sockaddr *)&self->addr, 0);
  if (!uvrc) uvrc = uv_listen((uv_stream_t *)&self->listener, 511, on_connection);
  if (uvrc) {
    sp_log_error(self->component, "http: cannot listen on %s: %s", self->endpoint,
                 uv_strerror(uvrc));
    self->listener_state = LS_CLOSING;
    uv_close((uv_handle_t *)&self->listener, on_listener_closed);
    int rc = sp_err_from_uv(uvrc);
    return rc == SP_EADDRINUSE || rc == SP_EPERM ? rc : SP_EIO;
  }
  struct sockaddr_storage ss;
  int len = sizeof ss;
  if (uv_tcp_getsockname(&self->listener, (struct sockaddr *)&ss, &len) == 0) {
    self->port = ss.ss_family == AF_INET6 ? ntohs(((struct sockaddr_in6 *)&ss)->sin6_port)
                                          : ntohs(((struct sockaddr_in *)&ss)->sin_port);
  }
  sp_log_info(self->component, "http: listening on %s%s (port %d)", self->endpoint,
              self->tls ? " with TLS" : "", self->port);
  return 0;
}

int sp_http_server_port(const sp_http_server_t *self) { return self->port; }

static void maybe_finish_shutdown(sp_http_server_t *s) {
  if (!s->shutting_down || s->shutdown_done || s->defer_active) return;
  if (s->listener_state != LS_NONE || s->n_conns || s->n_rejects) return;
  s->shutdown_done = true;
  if (s->shutdown_cb) s->shutdown_cb(s->shutdown_arg);
}

static void on_defer_closed(uv_handle_t *h) {
  sp_http_server_t *s = h->data;
  s->defer_active = false;
  void (*cb)(void *) = s->shutdown_cb;
  void *arg = s->shutdown_arg;
  if (!s->shutdown_done) {
    maybe_finish_shutdown(s);
  } else if (cb) {
    cb(arg); /* a repeated shutdown after completion */
  }
}

static void on_defer(uv_timer_t *t) { uv_close((uv_handle_t *)t, on_defer_closed); }

/* Runs maybe_finish_shutdown (or the callback) from the loop, not from the caller. */
static void defer_finish(sp_http_server_t *s) {
  s->defer_active = true;
  uv_timer_init(s->loop, &s->defer);
  s->defer.data = s;
  uv_timer_start(&s->defer, on_defer, 0, 0);
}

/* Re-arms every connection's running timer so that none outlives the shutdown deadline. */
static void clamp_timers(sp_http_server_t *s) {
  for (conn_t *c = s->conns; c; c = c->next)
    if (!c->closing && c->timer_kind != TK_NONE)
      set_timer(c, c->timer_kind, uv_timer_get_due_in(&c->timer));
}

void sp_http_server_shutdown_within(sp_http_server_t *self, uint64_t timeout_ms,
                                    void (*cb)(void *arg), void *arg) {
  if (!self) return;
  uint64_t now = uv_now(self->loop);
  uint64_t deadline = timeout_ms >= UINT64_MAX - now ? UINT64_MAX : now + timeout_ms;
  if (self->shutting_down) {
    if (self->shutdown_done && !self->defer_active) {
      self->shutdown_cb = cb;
      self->shutdown_arg = arg;
      defer_finish(self);
    } else if (!self->shutdown_done && deadline < self->shutdown_deadline) {
      self->shutdown_deadline = deadline; /* a tighter bound applies at once */
      clamp_timers(self);
    }
    return;
  }
  self->shutting_down = true;
  self->shutdown_deadline = deadline;
  self->shutdown_cb = cb;
  self->shutdown_arg = arg;
  if (self->listener_state == LS_OPEN) {
    self->listener_state = LS_CLOSING;
    uv_close((uv_handle_t *)&self->listener, on_listener_closed);
  }
  /* Idle connections close now; the others finish their request first, within the bound. */
  for (conn_t *c = self->conns, *next; c; c = next) {
    next = c->next;
    if (c->state == CS_IDLE)
      conn_close(c);
    else if (c->state == CS_HEADERS || c->state == CS_BODY)
      c->close_after = true;
  }
  clamp_timers(self);
  if (self->listener_state == LS_NONE) defer_finish(self);
}

void sp_http_server_shutdown(sp_http_server_t *self, void (*cb)(void *arg), void *arg) {
  sp_http_server_shutdown_within(self, UINT64_MAX, cb, arg);
}

void sp_http_server_destroy(sp_http_server_t *self) {
  if (!self) return;
  if (self->listener_state != LS_NONE || self->n_conns || self->n_rejects || self->defer_active) {
    /* Freeing now would leave libuv holding our handles: leak instead. */
    sp_log_error(self->component, "http: destroy before shutdown completed; leaking the server");
    assert(!"sp_http_server_destroy() before the shutdown callback");
    return;
  }
  sp_free(self->endpoint);
  sp_free(self->component);
  sp_free(self->rbuf);
  sp_free(self->tls_plain);
  for (size_t i = 0; i < self->n_inflaters; i++)
    sp_inflater_destroy(self->inflaters[i]);
  cors_free(self->cors);
  sp_tls_ctx_destroy(self->tls);
  sp_free(self);
}

void sp_http_server_stats(const sp_http_server_t *self, sp_http_server_stats_t *out) {
  *out = self->stats;
}
