/*
 * http_client.h — an asynchronous HTTP client on the libuv loop.
 *
 * Exporters (otlphttp, pyroscope) and the pprof_scrape receiver send their
 * requests through this. It is libcurl's multi-socket interface driven by
 * the loop: curl tells us which sockets to watch (one uv_poll_t each) and
 * when to wake it (one uv_timer_t); nothing ever blocks the loop, and name
 * resolution runs on curl's resolver thread.
 *
 * Connections are kept alive and reused across requests to the same host
 * (up to max_conns_per_host at once; further requests wait for a free
 * connection). Each request runs on a pooled curl easy handle, so the steady
 * state costs no handle set-up, no new connection and no TLS handshake.
 *
 * Like the OpenTelemetry Collector's HTTP clients, it honours the usual
 * proxy variables (https_proxy, http_proxy, no_proxy) of the environment.
 * Redirects are not followed.
 *
 * Every request ends in exactly one callback on the loop thread, never from
 * inside sp_http_client_request(). An HTTP status, whatever it is, is a
 * success at this level (err == 0); the caller decides what 429 or 503
 * means. Transport failures map to:
 *   SP_ETIMEDOUT  the request's timeout passed (connecting included),
 *   SP_EIO        connection refused or reset, DNS or TLS failure, protocol
 *                 error — with curl's message in `error`,
 *   SP_ETOOBIG    the response body passed max_response_bytes,
 *   SP_ECANCELED  the client was shut down with the request in flight,
 *   SP_EINVAL     the request itself was unusable (bad URL or header, or a
 *                 plaintext URL when the TLS settings forbid plaintext),
 *   SP_ENOMEM     out of memory after the request was accepted.
 *
 * All functions run on the loop thread, except sp_http_parse_retry_after(),
 * which is pure.
 */
#ifndef SP_HTTP_CLIENT_H
#define SP_HTTP_CLIENT_H

#include "pipeline/tls.h"
#include "pipeline/transport/http_server.h" /* sp_http_header_t */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>
#include <uv.h>

typedef struct sp_http_client_s sp_http_client_t;

/** Defaults applied when the corresponding field is 0. */
#define SP_HTTP_CLIENT_DEFAULT_CONNS_PER_HOST 16
#define SP_HTTP_CLIENT_DEFAULT_CONNECT_TIMEOUT_MS 10000
#define SP_HTTP_CLIENT_DEFAULT_TIMEOUT_MS 30000
#define SP_HTTP_CLIENT_DEFAULT_MAX_RESPONSE (16u * 1024 * 1024)

typedef struct sp_http_client_options_s {
  /* Component ID for log lines ("exporter/otlphttp"); NULL: "http_client".
   * Copied. */
  const char *component;
  /* TLS for https:// URLs; NULL or !present: system CA bundle, full
   * verification, TLS >= 1.2. When present and not `insecure`, plaintext
   * http:// URLs are refused (SP_EINVAL); otherwise the scheme decides.
   * ca_file verifies the server, cert_file + key_file present a client
   * certificate (mTLS), server_name_override is the name used for SNI and
   * for checking the certificate (the TCP connection still goes to the URL's
   * host, and the Host header stays the URL's), insecure_skip_verify turns
   * verification off, min_version is "1.2" or "1.3". The strings are copied;
   * files are checked for readability at create time. */
  const sp_tls_config_t *tls;
  /* Most connections open at once to one host:port; 0: 16. Requests past it
   * wait (inside curl) for a connection to become free. */
  unsigned max_conns_per_host;
  /* True: every request opens a fresh connection (no reuse). */
  bool disable_keep_alive;
  /* True: offer HTTP/2 over TLS via ALPN and multiplex requests over it;
   * HTTP/1.1 remains the fallback and the only choice for http:// URLs. */
  bool http2;
  /* Connection set-up limit (TCP + TLS), further bounded by each request's
   * own timeout; 0: 10 s. */
  uint64_t connect_timeout_ms;
  /* Value of User-Agent; NULL: "spanprofd/<SP_VERSION>". Copied. */
  const char *user_agent;
  /* Headers sent with every request (a request's own header of the same
   * name replaces one of these). Copied. A NULL value suppresses a header
   * curl would otherwise send (e.g. "Accept"). */
  const sp_http_header_t *headers;
  size_t n_headers;
} sp_http_client_options_t;

typedef struct sp_http_client_request_s {
  /* "GET", "POST", "PUT", "HEAD", ...; NULL: "POST" when body_len > 0 or body
   * != NULL, else "GET". */
  const char *method;
  /* Absolute http:// or https:// URL. Copied during the call. */
  const char *url;
  /* Extra headers for this request; copied during the call. A NULL value
   * suppresses the header (see options.headers). Names and values must not
   * contain CR or LF (SP_EINVAL). */
  const sp_http_header_t *headers;
  size_t n_headers;
  /* Request body. BORROWED: it must stay valid and unchanged until the
   * callback runs (the bytes are sent straight from it, never copied). */
  const void *body;
  size_t body_len;
  /* Limit on the whole request, connecting and queueing included; 0: 30 s. */
  uint64_t timeout_ms;
  /* Limit on the response body; a longer one fails with SP_ETOOBIG (as soon
   * as Content-Length shows it, or when the bytes pass the limit); 0: 16 MiB. */
  size_t max_response_bytes;
} sp_http_client_request_t;

typedef struct sp_http_client_result_s {
  /* 0 when an HTTP response was received (any status), else a negative SP_E*
   * code (see the top of this file). */
  int err;
  /* HTTP status, or 0 when no response status line arrived. */
  int status;
  /* Response body, valid only during the callback; NULL when empty. Not
   * NUL-terminated. */
  const uint8_t *body;
  size_t body_len;
  /* Retry-After of the response in milliseconds (delta-seconds, or an
   * HTTP-date relative to the time the response was handled); 0 when absent,
   * invalid or in the past. */
  uint64_t retry_after_ms;
  /* Why err != 0 (curl's message for transport failures); "" on success.
   * Never NULL; valid during the callback. */
  const char *error;
  /* Whole request time, from sp_http_client_request() to completion. */
  uint64_t elapsed_ms;
  /* Private to the client (header lookups). */
  const void *impl_;
} sp_http_client_result_t;

/**
 * Completion callback; runs exactly once per accepted request, on the loop
 * thread, never from inside sp_http_client_request(). @p res and everything
 * it points to are valid only during the call. The callback may start new
 * requests and may call sp_http_client_shutdown().
 */
typedef void (*sp_http_client_cb)(const sp_http_client_result_t *res, void *arg);

/**
 * Creates a client on @p loop. @p opts is copied (NULL: all defaults).
 * Loads libcurl once per process (curl_dl.h: spanprof is not linked against
 * it; thread-safe); curl itself (curl_global_init, which initialises
 * OpenSSL, and the client's multi handle) is set up by the first request, so
 * an idle client costs little. Returns 0 and sets *@p out, or
 * SP_EINVAL (NULL loop/out), SP_ECONFIG (unreadable TLS file, unknown
 * min_version, key_file without cert_file or the reverse — with a log line
 * naming it), SP_ENOTSUP (libcurl could not be loaded, or HTTP/2 asked for
 * but curl lacks it; logged) or
 * SP_ENOMEM. On failure nothing is left
 * on the loop.
 */
int sp_http_client_create(uv_loop_t *loop, const sp_http_client_options_t *opts,
                          sp_http_client_t **out);

/**
 * Starts @p req. Returns 0 when accepted: @p cb will then run exactly once
 * with @p arg, later, from the loop. Every failure after acceptance (bad URL,
 * connection errors, timeouts, too-large responses, shutdown) arrives there.
 * Returns, without ever calling @p cb: SP_EINVAL for NULL self/req/url/cb,
 * SP_ESHUTDOWN once sp_http_client_shutdown() was called, SP_ENOMEM when the
 * request's state could not be allocated. The request struct, URL and
 * headers are copied; the body is borrowed until @p cb runs.
 */
int sp_http_client_request(sp_http_client_t *self, const sp_http_client_request_t *req,
                           sp_http_client_cb cb, void *arg);

/**
 * Case-insensitive lookup of a response header during the callback; NULL
 * when absent or when no response arrived. With repeated headers, the first
 * one. The string is valid during the callback only.
 */
const char *sp_http_client_result_header(const sp_http_client_result_t *res, const char *name);

/** Number of requests accepted whose callback has not run yet. */
size_t sp_http_client_pending(const sp_http_client_t *self);

/**
 * Cancels every request in flight (their callbacks run with SP_ECANCELED),
 * closes all connections and libuv handles, then calls @p cb(@p arg) once
 * from the loop — never from inside this call. New requests are refused
 * (SP_ESHUTDOWN) from this call on. Idempotent: later calls do nothing
 * (their @p cb is not called). @p cb may be NULL; it may call
 * sp_http_client_destroy().
 */
void sp_http_client_shutdown(sp_http_client_t *self, void (*cb)(void *arg), void *arg);

/**
 * Frees the client. Accepts NULL. Call only after the shutdown callback ran
 * (the client holds libuv handles until then).
 */
void sp_http_client_destroy(sp_http_client_t *self);

/**
 * Parses a Retry-After value (RFC 9110 §10.2.3): delta-seconds ("120") or an
 * HTTP-date in any of the three formats of RFC 9110 §5.6.7 (IMF-fixdate,
 * RFC 850, asctime), relative to @p now. Sets *@p out_ms (a date in the past
 * gives 0; large values saturate) and returns 0, or returns SP_EINVAL (and
 * sets *@p out_ms to 0) for anything else. Pure and thread-safe.
 */
int sp_http_parse_retry_after(const char *value, time_t now, uint64_t *out_ms);

#endif
