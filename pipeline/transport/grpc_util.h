/*
 * grpc_util.h — helpers shared by the gRPC server and client (internal).
 *
 * Both sides speak google.rpc.Status with a google.rpc.RetryInfo detail in
 * the `grpc-status-details-bin` trailer: the server writes it when it refuses
 * a request retryably, the client reads the delay from it. The messages are
 * tiny and fixed, so they are encoded and parsed by hand here rather than
 * through generated code. The rest is channel-argument plumbing and reading
 * PEM files for the credentials.
 *
 * Nothing here touches a libuv handle; every function may run on any thread
 * unless it allocates through pipeline/alloc.h (noted per function).
 */
#ifndef SP_GRPC_UTIL_H
#define SP_GRPC_UTIL_H

#include "pipeline/tls.h"

#include <grpc/grpc.h>
#include <stddef.h>
#include <stdint.h>

/**
 * Loads grpc core if it is not loaded yet (grpc_dl.h: spanprof is not linked
 * against it). 0, or SP_ENOTSUP after logging why (library missing) under
 * @p component. Call before anything else here; servers and clients do so
 * when they are created. Any thread.
 */
int sp__grpc_load(const char *component);

/**
 * grpc_init(), and on first use routes grpc core's own log lines (gpr_log)
 * into sp_log under the component "grpc": errors as warnings (they are
 * mostly a peer's fault, e.g. a failed handshake), the rest as debug.
 * Pair with grpc_shutdown(). Only after sp__grpc_load() returned 0. Any
 * thread.
 */
void sp__grpc_init(void);

/** Trailing metadata key that carries a serialized google.rpc.Status. */
#define SP__GRPC_STATUS_DETAILS_KEY "grpc-status-details-bin"
/** Any.type_url of google.rpc.RetryInfo. */
#define SP__GRPC_RETRY_INFO_TYPE "type.googleapis.com/google.rpc.RetryInfo"

/**
 * Serializes google.rpc.Status{code, message, details: [Any(RetryInfo{
 * retry_delay: retry_after_ms})]} into a new slice (allocated by grpc; the
 * caller owns it and releases it with grpc_slice_unref). @p message may be
 * NULL. Any thread.
 */
grpc_slice sp__grpc_status_details_encode(int code, const char *message, uint64_t retry_after_ms);

/**
 * Returns the RetryInfo delay in milliseconds found in a serialized
 * google.rpc.Status, rounded up to whole milliseconds; 0 when there is none
 * or the bytes are malformed (untrusted input: every length is checked).
 * Any thread; never allocates.
 */
uint64_t sp__grpc_status_details_retry_ms(const uint8_t *p, size_t len);

/**
 * Reads a whole (PEM) file into a NUL-terminated buffer from sp_malloc; the
 * caller frees it with sp_free. Logs a line naming @p what and the path on
 * failure. 0, SP_ECONFIG (missing, unreadable, empty or over 16 MiB),
 * SP_ENOMEM. Loop thread (allocates).
 */
int sp__grpc_read_pem(const char *component, const char *what, const char *path, char **out);

/**
 * Checks tls->min_version: grpc core 1.51's C API negotiates TLS 1.2–1.3 and
 * cannot raise the floor, so only NULL/"" and "1.2" are accepted; anything
 * else is logged and SP_ECONFIG.
 */
int sp__grpc_check_tls_version(const char *component, const sp_tls_config_t *tls);

/** A small fixed array of channel arguments (keys and string values are not copied). */
typedef struct sp__grpc_args_s {
  grpc_arg v[16];
  size_t n;
} sp__grpc_args_t;

/** Appends an integer argument (ignored when the array is full: sized for all callers). */
void sp__grpc_args_int(sp__grpc_args_t *a, const char *key, int value);
/** Appends a string argument; @p value must outlive the channel/server creation call. */
void sp__grpc_args_str(sp__grpc_args_t *a, const char *key, const char *value);
/** Clamps milliseconds (or bytes) to a positive int for a channel argument. */
int sp__grpc_clamp_int(uint64_t v);

#endif
