/*
 * http_server.h — an HTTP/1.1 server on the libuv loop.
 *
 * Receivers (otlp, pyroscope) sit on this. It parses requests with
 * http-parser, keeps connections alive, answers `Expect: 100-continue`,
 * optionally speaks TLS (OpenSSL over memory BIOs), enforces a body limit
 * while reading and while inflating `Content-Encoding: gzip|deflate`, and
 * closes connections that stall (header / body / idle timeouts). Each
 * complete request is handed to one handler callback on the loop thread with
 * the whole, decoded body; the handler answers with sp_http_respond(), now or
 * later (asynchronous handlers are fine). One request per connection is in
 * flight at a time; pipelined requests wait their turn.
 *
 * Errors the server detects itself (body too large, bad encoding, corrupt
 * gzip, malformed HTTP) are also delivered to the handler, as a request with
 * `error_status` set, so the receiver formats the error body in its own
 * protocol (google.rpc.Status for OTLP, text for Pyroscope, JSON for Connect).
 * Malformed HTTP that cannot be answered in a protocol is answered 400 by the
 * server itself and the connection closed.
 *
 * All functions run on the loop thread.
 */
#ifndef SP_HTTP_SERVER_H
#define SP_HTTP_SERVER_H

#include "pipeline/tls.h"

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

typedef struct sp_http_server_s sp_http_server_t;

typedef struct sp_http_header_s {
  const char *name; /* lower-case in requests */
  const char *value;
} sp_http_header_t;

typedef struct sp_http_request_s {
  const char *method;              /* "POST", "GET", ... */
  const char *path;                /* path without the query, e.g. "/v1/traces" */
  const char *query;               /* text after '?', "" when none (not decoded) */
  const sp_http_header_t *headers; /* names lower-cased */
  size_t n_headers;
  const uint8_t *body; /* decoded body (after Content-Encoding); NULL when empty */
  size_t body_len;
  size_t wire_len;           /* body bytes as received, before inflating */
  int error_status;          /* 0, or 400/408/413/415 (503: out of memory) when the
                                server rejected it; answer it and the connection closes */
  const char *error_message; /* why, when error_status != 0 */
  const char *remote_addr;   /* "ip:port" of the peer */
  void *user;                /* free for the handler's use */
} sp_http_request_t;

/**
 * Called once per request on the loop thread. The request (and everything it
 * points to) stays valid until sp_http_respond() is called for it. The
 * handler must eventually call sp_http_respond() exactly once.
 */
typedef void (*sp_http_handler_cb)(sp_http_request_t *req, void *ctx);

/**
 * Cross-origin (CORS) settings, as the OpenTelemetry Collector's confighttp
 * `cors` block: browsers may send from any origin matching one of
 * @p allowed_origins. The server answers preflight requests (OPTIONS with
 * Origin and Access-Control-Request-Method) itself — they never reach the
 * handler — and adds Access-Control-Allow-Origin to responses for allowed
 * origins. Allowed methods are GET, POST and HEAD. Strings are copied by
 * sp_http_server_create().
 */
typedef struct sp_http_cors_s {
  const char *const *allowed_origins; /* patterns where '*' matches any run of characters:
                                         e.g. "*", or "https://" followed by
                                         "*.example.com" */
  size_t n_allowed_origins;
  const char *const *allowed_headers; /* request headers allowed beyond Accept,
                                         Accept-Language, Content-Language, Content-Type,
                                         Origin and X-Requested-With; "*" allows any */
  size_t n_allowed_headers;
  int max_age; /* seconds browsers may cache a preflight answer; 0: not sent */
} sp_http_cors_t;

typedef struct sp_http_server_options_s {
  const char *endpoint;       /* "host:port"; port 0 picks a free one (tests) */
  const char *component;      /* component ID for log lines */
  size_t max_body_size;       /* limit on wire and on inflated bytes; 0 = 20 MiB */
  uint64_t header_timeout_ms; /* time to receive the headers; 0 = 10 s */
  uint64_t body_timeout_ms;   /* time to receive the body; 0 = 30 s */
  uint64_t idle_timeout_ms;   /* keep-alive idle time; 0 = 60 s */
  size_t max_connections;     /* 0 = 4096; further connections are closed */
  const sp_tls_config_t *tls; /* NULL or !present: plaintext */
  sp_http_handler_cb handler;
  void *handler_ctx;
  size_t max_header_size;     /* request line + header bytes; 0 = 64 KiB; over it: 431 */
  const sp_http_cors_t *cors; /* NULL or no allowed origins: no CORS handling */
} sp_http_server_options_t;

/** Counters for self-telemetry and tests; read on the loop thread. */
typedef struct sp_http_server_stats_s {
  uint64_t connections_accepted;
  uint64_t connections_rejected; /* closed at once: max_connections reached */
  uint64_t connections_active;   /* open now */
  uint64_t requests;             /* handed to the handler, error ones included */
  uint64_t requests_rejected;    /* handed to the handler with error_status != 0 */
  uint64_t bad_requests;         /* answered by the server itself (400, 408, 431, 503) */
  uint64_t timeouts;             /* header, body, idle-write timeouts that ended a request */
  uint64_t tls_handshake_failures;
  uint64_t preflights;      /* CORS preflight requests answered */
  uint64_t bytes_received;  /* bytes read from sockets (ciphertext with TLS) */
  size_t body_buffer_peak;  /* largest request body buffer ever allocated, in bytes */
  uint64_t shutdown_aborts; /* requests abandoned mid-receive when a shutdown bound passed */
} sp_http_server_stats_t;

/**
 * Creates a server (not yet listening). The options are copied.
 * Returns 0, SP_EINVAL (bad endpoint), SP_ECONFIG (TLS files unreadable, with
 * a log line naming them) or SP_ENOMEM.
 */
int sp_http_server_create(uv_loop_t *loop, const sp_http_server_options_t *opts,
                          sp_http_server_t **out);

/**
 * Binds and listens. 0, SP_EADDRINUSE, SP_EPERM, SP_EIO, or SP_ESTATE when
 * already listening. Never blocks. After a failure the listening handle is
 * still closing: call sp_http_server_shutdown() and wait for its callback
 * before sp_http_server_destroy() (or start again after that callback).
 */
int sp_http_server_start(sp_http_server_t *self);

/** The bound TCP port (after start), e.g. when the endpoint asked for port 0. */
int sp_http_server_port(const sp_http_server_t *self);

/**
 * Stops accepting, closes idle connections, lets requests in flight be
 * answered (the handler's responses still go out), then closes everything and
 * calls @p cb once from the loop (never from inside this call). Idempotent;
 * safe without start.
 *
 * Requests still being received may finish within @p timeout_ms (and within
 * their header and body timeouts); they go to the handler as usual and are
 * answered with `Connection: close`. When @p timeout_ms passes, every
 * connection still receiving a request is closed and that request abandoned
 * (counted in shutdown_aborts; the client sees the connection close and
 * retries), and responses still being written or connections lingering are
 * closed too. Requests at the handler are not cut short: the callback waits
 * for their sp_http_respond(). A request that begins after shutdown began
 * (pipelined behind a keep-alive response) is answered 503 with
 * `Retry-After` and `Connection: close` by the server, without the handler.
 * UINT64_MAX: no bound beyond the header, body and idle timeouts.
 *
 * A call while a shutdown is in progress only tightens the bound (its @p cb
 * is not called); a call after one completed calls @p cb again (deferred).
 * The server may be started again after its shutdown callback ran. @p cb may
 * be NULL.
 */
void sp_http_server_shutdown_within(sp_http_server_t *self, uint64_t timeout_ms,
                                    void (*cb)(void *arg), void *arg);

/** sp_http_server_shutdown_within() without a bound (timeout UINT64_MAX). */
void sp_http_server_shutdown(sp_http_server_t *self, void (*cb)(void *arg), void *arg);

/** Frees the server after its shutdown callback ran (or if never started). Accepts NULL. */
void sp_http_server_destroy(sp_http_server_t *self);

/** Copies the server's counters into @p out. */
void sp_http_server_stats(const sp_http_server_t *self, sp_http_server_stats_t *out);

/** Case-insensitive header lookup; NULL when absent. */
const char *sp_http_request_header(const sp_http_request_t *req, const char *name);

/**
 * Hands the storage of @p req's decoded body to the caller (free with
 * sp_free), so a handler that keeps the bytes (a receiver wrapping them in a
 * batch) does not copy them. Storage with much unused capacity is shrunk to
 * the body's length first. Afterwards req->body is NULL and the connection
 * reads its next request into fresh storage. *@p len gets the length.
 * NULL when the body is empty. Call before sp_http_respond(); loop thread.
 */
uint8_t *sp_http_request_take_body(sp_http_request_t *req, size_t *len);

/**
 * Answers @p req. @p body is copied. `Content-Length`, `Date`-less minimal
 * headers and keep-alive handling are added by the server; @p extra adds
 * headers such as `Retry-After`. After this call @p req is invalid.
 */
void sp_http_respond(sp_http_request_t *req, int status, const char *content_type, const void *body,
                     size_t len, const sp_http_header_t *extra, size_t n_extra);

#endif
