/*
 * grpc_client.h — an asynchronous unary gRPC client (grpc core C API) for
 * exporters, bridged onto the libuv loop.
 *
 * One channel per client (its own subchannel pool, so clients never share
 * connections). Calls are started on the loop thread; grpc core runs the
 * I/O on the client's completion-queue thread, which hands each finished
 * call back through a locked list and uv_async_send. Completion callbacks run
 * on the loop thread, never from inside sp_grpc_client_call().
 *
 * grpc core's own retries are disabled: the exporter queue decides about
 * retrying, helped by the status and the server's RetryInfo delay.
 */
#ifndef SP_GRPC_CLIENT_H
#define SP_GRPC_CLIENT_H

#include "pipeline/tls.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

typedef struct sp_grpc_client_s sp_grpc_client_t;

/** One metadata entry (same layout as sp_http_header_t). Keys are lower-cased when sent. */
typedef struct sp_grpc_metadata_s {
  const char *name;
  const char *value;
} sp_grpc_metadata_t;

typedef enum { SP_GRPC_COMPRESSION_NONE = 0, SP_GRPC_COMPRESSION_GZIP } sp_grpc_compression_t;

typedef struct sp_grpc_client_options_s {
  const char *target;    /* "host:port" (or any grpc target URI) */
  const char *component; /* component ID for log lines */
  /* NULL: plaintext. Otherwise TLS unless tls->insecure (whether or not
   * tls->present): ca_file (else the system roots), cert_file/key_file for
   * mTLS, server_name_override, insecure_skip_verify. */
  const sp_tls_config_t *tls;
  sp_grpc_compression_t compression;
  size_t max_send_msg_size;      /* 0 = unlimited (grpc default) */
  size_t max_recv_msg_size;      /* 0 = 4 MiB (grpc default) */
  uint64_t keepalive_time_ms;    /* 0 = no keepalive pings */
  uint64_t keepalive_timeout_ms; /* 0 = grpc default (20 s) */
  bool keepalive_permit_without_calls;
  const sp_grpc_metadata_t *headers; /* sent with every call; copied */
  size_t n_headers;
} sp_grpc_client_options_t;

/** The outcome of one call; everything it points to is valid during the callback only. */
typedef struct sp_grpc_client_result_s {
  int status;          /* grpc_status_code: 0 OK, 4 DEADLINE_EXCEEDED, 14 UNAVAILABLE... */
  const char *message; /* status message; "" when none */
  const uint8_t *resp; /* response message (status OK); NULL when none */
  size_t resp_len;
  uint64_t retry_after_ms; /* google.rpc.RetryInfo from grpc-status-details-bin; 0 when absent */
} sp_grpc_client_result_t;

/** Completion callback: loop thread, exactly once per accepted call. */
typedef void (*sp_grpc_client_cb)(const sp_grpc_client_result_t *res, void *arg);

/**
 * Creates the client: the channel (it connects lazily, on the first call),
 * the completion-queue thread and the async handle. Loop thread. Takes a
 * grpc_init() reference (released by destroy). @p opts is copied.
 * Returns 0, SP_EINVAL (no target), SP_ECONFIG (TLS files unreadable or an
 * unsupported TLS setting; logged), SP_ENOTSUP (grpc core could not be
 * loaded, see grpc_dl.h; logged), SP_ENOMEM or SP_EIO.
 */
int sp_grpc_client_create(uv_loop_t *loop, const sp_grpc_client_options_t *opts,
                          sp_grpc_client_t **out);

/**
 * Starts a unary call of @p method ("/pkg.Service/Method") with the request
 * bytes @p req/@p len (copied once). @p timeout_ms > 0 sets the deadline
 * (then DEADLINE_EXCEEDED); 0 means none. @p extra adds metadata to this call
 * only (e.g. a tenant's x-scope-orgid), after the static headers; copied.
 * Loop thread.
 * Returns 0 when the call was started: @p cb then runs exactly once, on the
 * loop thread, never from inside this call (CANCELLED when the client shuts
 * down first). Otherwise @p cb never runs: SP_EINVAL (bad argument or
 * invalid metadata), SP_ESHUTDOWN (shutdown was called), SP_ENOMEM, SP_EIO.
 */
int sp_grpc_client_call(sp_grpc_client_t *self, const char *method, const uint8_t *req, size_t len,
                        uint64_t timeout_ms, const sp_grpc_metadata_t *extra, size_t n_extra,
                        sp_grpc_client_cb cb, void *arg);

/** Calls started and not yet completed (their callbacks have not run). Loop thread. */
size_t sp_grpc_client_inflight(const sp_grpc_client_t *self);

/**
 * Cancels the calls in flight (their callbacks run with CANCELLED), refuses
 * new ones, destroys the channel, joins the completion-queue thread and
 * closes the async handle, then calls @p cb once from the loop (never from
 * inside this call). Idempotent: later calls are ignored. Loop thread.
 */
void sp_grpc_client_shutdown(sp_grpc_client_t *self, void (*cb)(void *arg), void *arg);

/**
 * Frees the client after its shutdown callback ran (or from inside it).
 * Releases the grpc_init() reference; the last one makes grpc core clean up
 * synchronously. Accepts NULL.
 */
void sp_grpc_client_destroy(sp_grpc_client_t *self);

/**
 * Classifies a result for the exporter queue as the OTLP specification does:
 * 0 for OK; SP_EAGAIN for the retryable codes (CANCELLED, DEADLINE_EXCEEDED,
 * ABORTED, OUT_OF_RANGE, UNAVAILABLE, DATA_LOSS, and RESOURCE_EXHAUSTED when
 * the server sent a RetryInfo); SP_EREJECTED for the rest (permanent).
 */
int sp_grpc_client_result_err(const sp_grpc_client_result_t *res);

/** The name of a grpc status code ("UNAVAILABLE"); "UNKNOWN" for codes out of range. */
const char *sp_grpc_status_name(int status);

#endif
