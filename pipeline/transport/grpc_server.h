/*
 * grpc_server.h — a gRPC server (grpc core C API) bridged onto the libuv loop.
 *
 * grpc core runs its own threads. One completion-queue thread receives calls
 * and hands each complete request message to the loop through a locked list
 * and uv_async_send (the list is drained whole: wake-ups coalesce). Handlers
 * run on the loop thread; sp_grpc_respond() is called on the loop thread and
 * hands the response to grpc core there (grpc_call_start_batch never blocks;
 * grpc core 1.51 has no public way to wake a completion-queue thread, so
 * queueing it to that thread would cost a poll); the completion-queue thread
 * reaps the finished call. No pipeline state is touched off the loop thread.
 *
 * grpc core itself decompresses gzip messages and enforces the receive size
 * limit (RESOURCE_EXHAUSTED).
 */
#ifndef SP_GRPC_SERVER_H
#define SP_GRPC_SERVER_H

#include "pipeline/tls.h"

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

typedef struct sp_grpc_server_s sp_grpc_server_t;
typedef struct sp_grpc_call_s sp_grpc_call_t;

/**
 * Called on the loop thread with one unary request message. @p msg is valid
 * until sp_grpc_respond() is called for @p call, which the handler must do
 * exactly once (now or later).
 */
typedef void (*sp_grpc_handler_cb)(sp_grpc_call_t *call, const uint8_t *msg, size_t len,
                                   void *ctx);

typedef struct sp_grpc_method_s {
  const char *path; /* "/opentelemetry.proto.collector.trace.v1.TraceService/Export" */
  sp_grpc_handler_cb handler;
  void *ctx;
} sp_grpc_method_t;

typedef struct sp_grpc_server_options_s {
  const char *endpoint;         /* "host:port"; port 0 picks a free one (tests) */
  const char *component;        /* component ID for log lines */
  size_t max_recv_msg_size;     /* bytes; 0 = 4 MiB */
  uint64_t keepalive_time_ms;   /* 0 = grpc default */
  uint64_t keepalive_timeout_ms;/* 0 = grpc default */
  uint64_t max_connection_idle_ms; /* 0 = unlimited */
  const sp_tls_config_t *tls;   /* NULL or !present: insecure */
  const sp_grpc_method_t *methods; /* copied */
  size_t n_methods;
  /* How long sp_grpc_server_shutdown() waits for handlers to answer calls in
   * flight before cancelling them (clients see UNAVAILABLE); 0 = 5 s. */
  uint64_t shutdown_timeout_ms;
} sp_grpc_server_options_t;

/**
 * Creates the server (not listening yet); the options and methods are copied,
 * TLS files are read now. Loop thread. 0, SP_EINVAL (bad endpoint, a method
 * without a "/..." path or a handler), SP_ECONFIG (TLS files unreadable or an
 * unsupported TLS setting such as min_version "1.3", logged), SP_ENOTSUP
 * (grpc core could not be loaded, see grpc_dl.h; logged), SP_ENOMEM.
 * Takes a grpc_init() reference, released by destroy.
 */
int sp_grpc_server_create(uv_loop_t *loop, const sp_grpc_server_options_t *opts,
                          sp_grpc_server_t **out);
/**
 * Binds, starts grpc core and the completion-queue thread. Loop thread; does
 * not block. 0, SP_EADDRINUSE (the bind failed: address in use or not
 * available; logged), SP_ESTATE (already started or shut down), SP_ENOMEM,
 * SP_EIO.
 */
int sp_grpc_server_start(sp_grpc_server_t *self);
/** The bound port after start (0 before). Any thread after start returned. */
int sp_grpc_server_port(const sp_grpc_server_t *self);
/**
 * Stops accepting calls, lets calls in flight be answered, joins the
 * completion-queue thread and closes the async handle, then calls @p cb once
 * from the loop (never from inside this call). Idempotent; safe without start.
 * Calls still unanswered after shutdown_timeout_ms are cancelled; their
 * handlers must still call sp_grpc_respond() once (then it only frees the
 * call), which may happen even after sp_grpc_server_destroy(). Loop thread.
 */
void sp_grpc_server_shutdown(sp_grpc_server_t *self, void (*cb)(void *arg), void *arg);
/**
 * sp_grpc_server_shutdown() with a bound set at shutdown time: calls still
 * unfinished (unanswered, or still being received) after the smaller of
 * @p timeout_ms and the shutdown_timeout_ms option are cancelled (clients
 * see CANCELLED/UNAVAILABLE and may retry). A call while a shutdown is in
 * progress only tightens the bound (its @p cb is not called). Loop thread.
 */
void sp_grpc_server_shutdown_within(sp_grpc_server_t *self, uint64_t timeout_ms,
                                    void (*cb)(void *arg), void *arg);
/** Frees the server after its shutdown callback ran (or if never started). Accepts NULL. */
void sp_grpc_server_destroy(sp_grpc_server_t *self);

/**
 * Request metadata lookup (lower-case key, e.g. "x-scope-orgid"). Sets
 * *@p value to the value, or to NULL when the key is absent, and returns 0;
 * returns SP_ENOMEM (with *@p value NULL) when the metadata could not be
 * copied into the call — the key may well be present, so a handler that
 * depends on it (a tenant) must refuse the call retryably rather than go on
 * without it; SP_EINVAL for a NULL call or key. The first value wins when a
 * key repeats; "-bin" values are the decoded bytes. The string belongs to
 * @p call (valid until sp_grpc_respond). Loop thread (the first lookup
 * copies the metadata into the call; a failed copy is tried again by the
 * next lookup).
 */
int sp_grpc_call_metadata_get(const sp_grpc_call_t *call, const char *key, const char **value);

/**
 * sp_grpc_call_metadata_get() returning the value, or NULL — when the key is
 * absent and also when the metadata could not be copied (out of memory). Use
 * it only where a missing value is harmless; otherwise use
 * sp_grpc_call_metadata_get().
 */
const char *sp_grpc_call_metadata(const sp_grpc_call_t *call, const char *key);

/**
 * The peer's address, "ip:port" ("[v6]:port" for IPv6) or grpc's URI for
 * other transports; "" when unknown. Owned by @p call (valid until
 * sp_grpc_respond). Loop thread.
 */
const char *sp_grpc_call_peer(const sp_grpc_call_t *call);

/**
 * Answers @p call on the loop thread: @p status is a grpc_status_code
 * (0 = OK, then @p resp/@p len is the response message, copied); otherwise
 * @p message is the status message. @p retry_after_ms > 0 attaches a
 * google.rpc.RetryInfo in grpc-status-details-bin (for UNAVAILABLE /
 * RESOURCE_EXHAUSTED refusals). After this call @p call is invalid.
 */
void sp_grpc_respond(sp_grpc_call_t *call, int status, const char *message, const uint8_t *resp,
                     size_t len, uint64_t retry_after_ms);

#endif
