/*
 * exporterhelper.h — the bounded sending queue and retry loop every network
 * exporter sits on (otlp, otlphttp, pyroscope), in the manner of the
 * OpenTelemetry Collector's exporterhelper.
 *
 * An exporter supplies a *sender*: one asynchronous `send` that puts an item
 * (one traces or profiles batch) on the wire and later reports a result:
 * success (possibly partial: the backend rejected some items), retryable
 * failure (SP_EAGAIN, with the server's Retry-After / RetryInfo delay), or a
 * permanent failure. The helper owns everything else:
 *
 *   consume ──► queue (bounded) ──► num_consumers slots ──► sender.send
 *                  │ full: SP_EAGAIN         ▲  │ retryable
 *                  ▼                         └──┘ backoff timer
 *             enqueue_failed
 *
 * - The helper *is* the exporter's consumer (sp_exporterhelper_consumer()):
 *   a batch is accepted into the queue (0) or refused retryably (SP_EAGAIN,
 *   counted in spanprof_exporter_enqueue_failed_*), never dropped silently.
 *   The queue bounds what waits in `queue_size` units of its `sizer`, as
 *   the Collector's does: requests, items (spans / profiles) or bytes (each
 *   request's encoded size: see sp_exporterhelper_traces_bytes /
 *   _profiles_bytes). Whatever the sizer, it also holds at most
 *   `max_queued_bytes` (default 64 MiB, 0: no cap; our addition, not the
 *   Collector's), so the default queue bounds memory for any request size:
 *   1,000 requests of 4 MiB would otherwise be 4 GiB. A request that alone
 *   exceeds either bound is still taken when the queue is empty (whole,
 *   never split), so nothing is refused forever. With
 *   `sending_queue.enabled: false` nothing waits: a batch is sent at once
 *   when fewer than num_consumers are in flight, and refused otherwise.
 *   Requests taken from the queue by a consumer (sending or waiting to
 *   retry) no longer count: at most num_consumers of them exist.
 * - A slot holds its item until it is done, through every retry (as the
 *   Collector's queue consumers do), so a failing backend fills the queue
 *   and the pipeline pushes back.
 * - Retries follow the Collector's backoff: the first delay is
 *   initial_interval, each next one multiplier times the last, capped at
 *   max_interval, each randomized by ±randomization_factor; a server's
 *   Retry-After / RetryInfo raises the next delay to at least what it asked.
 *   When the time since the first attempt plus the next delay would pass
 *   max_elapsed_time (0: never), the item is given up: logged with its count
 *   and counted in spanprof_exporter_send_failed_* (so a server delay past
 *   the budget gives up at once). With max_elapsed_time 0 a server delay is
 *   capped at max(max_interval, 1h), so no slot waits longer than that
 *   (Retry-After parsers saturate at UINT64_MAX; all sums saturate too). Permanent failures are
 *   never retried (logged and counted the same way), and items a backend
 *   rejected in a partial success are logged and counted as failed too.
 * - Shutdown drains: queued items keep being sent and retries keep running
 *   until sp_host_t.drain_deadline (a retry that could only happen after it
 *   is given up at once). At the deadline, what is still queued or waiting
 *   is logged and counted as failed, and the sender's `cancel` is asked to
 *   end the sends in flight (they complete, as failures, and are counted).
 *
 * Metrics (label exporter="<id>"): spanprof_exporter_sent_{spans,profiles}_total,
 * spanprof_exporter_send_failed_{spans,profiles}_total,
 * spanprof_exporter_enqueue_failed_{spans,profiles}_total,
 * spanprof_exporter_retries_total (retry attempts),
 * spanprof_exporter_queue_size and spanprof_exporter_queue_capacity (gauges,
 * in the queue's sizer unit), spanprof_exporter_queue_bytes and
 * spanprof_exporter_queue_bytes_capacity (gauges: the queued requests'
 * bytes whatever the sizer, and max_queued_bytes).
 *
 * Everything runs on the loop thread. The helper opens its libuv handles
 * (one retry timer per slot, one drain timer) in sp_exporterhelper_start().
 */
#ifndef SP_EXPORTERHELPER_H
#define SP_EXPORTERHELPER_H

#include "pipeline/component.h"
#include "pipeline/transport/http_client.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ---- configuration ---------------------------------------------------------- */

enum {
  SP_EXPORTERHELPER_SIZER_REQUESTS = 0,
  SP_EXPORTERHELPER_SIZER_ITEMS = 1,
  SP_EXPORTERHELPER_SIZER_BYTES = 2
};

/*
 * The default byte cap of the queue. Why 64 MiB: issue #8 allows 256 MiB of
 * RSS under overload with the default config. With it the plain pipeline
 * (receiver -> otlphttp) peaks near 80 MiB at twice the load it carries
 * (~170 MiB with 1,000 requests of ~150 KB queued), and the heaviest
 * default pipeline (batch + spanprofile, whose join holds up to 128 MiB)
 * holds ~200 MiB live: join, 64 MiB queued, num_consumers requests in
 * flight (10 x ~2.4 MB 8,192-span batches). 64 MiB is still ~440
 * scenario-1 requests (512 spans) or ~27 full batch-processor batches: a
 * burst buffer; an outage pushes back (503 / UNAVAILABLE) to senders that
 * retry.
 */
#define SP_EXPORTERHELPER_DEFAULT_MAX_QUEUED_BYTES ((uint64_t)64 << 20)

/**
 * `sending_queue`: enabled (true), num_consumers (10), queue_size (1000, in
 * sizer units), sizer (requests|items|bytes) and max_queued_bytes (64MiB; a
 * byte cap applied whatever the sizer, 0: none). A struct built in code
 * with max_queued_bytes 0 has no byte cap; the schema and the NULL
 * defaults have SP_EXPORTERHELPER_DEFAULT_MAX_QUEUED_BYTES.
 */
typedef struct sp_exporterhelper_queue_cfg_s {
  bool enabled;
  int64_t num_consumers;
  int64_t queue_size;
  int sizer; /* SP_EXPORTERHELPER_SIZER_* */
  uint64_t max_queued_bytes;
} sp_exporterhelper_queue_cfg_t;

/**
 * `retry_on_failure`: enabled (true), initial_interval (5s), max_interval
 * (30s), max_elapsed_time (300s, 0 = retry forever), multiplier (1.5),
 * randomization_factor (0.5). Durations in milliseconds.
 */
typedef struct sp_exporterhelper_retry_cfg_s {
  bool enabled;
  uint64_t initial_interval_ms;
  uint64_t max_interval_ms;
  uint64_t max_elapsed_time_ms;
  double multiplier;
  double randomization_factor;
} sp_exporterhelper_retry_cfg_t;

/**
 * Schemas for the two sections above, for exporters to embed in their own
 * tables as SP_CFG_SECTION fields (keys `sending_queue` and
 * `retry_on_failure`). Decoded structs own no memory.
 */
extern const sp_cfg_schema_t sp_exporterhelper_queue_schema;
extern const sp_cfg_schema_t sp_exporterhelper_retry_schema;

/** The `compression` values network exporters accept: "gzip" (index 0), "none" (1). */
extern const char *const sp_exporterhelper_compressions[];

/**
 * `compression_params` (the Collector's confighttp name): level -1 .. 9,
 * default -1; pipeline/compress.h says which library runs each level (1-3:
 * ISA-L, about 15x faster than zlib's 6 for ~10% more bytes; -1 through an
 * sp_compressor_t: ISA-L level 0 with tables learned from the stream, level
 * 1's bytes for ~0.8x its time).
 */
typedef struct sp_compression_params_s {
  int64_t level;
} sp_compression_params_t;

/** Schema of sp_compression_params_t, for an SP_CFG_SECTION `compression_params` row. */
extern const sp_cfg_schema_t sp_exporterhelper_compression_params_schema;

/**
 * The config-table rows every network exporter shares, with the Collector's
 * names: `headers` (map), `tls` (client settings), `sending_queue`,
 * `retry_on_failure` and `tenant_from_metadata` (forward the X-Scope-OrgID
 * received with the data). @p T is the exporter's config struct, which must
 * have members of those names (sp_strmap_t, sp_tls_config_t, the two helper
 * config structs, bool).
 */
#define SP_EXPORTERHELPER_COMMON_FIELDS(T)                                                         \
  {.key = "headers", .type = SP_CFG_STRMAP, .offset = offsetof(T, headers)},                       \
      {.key = "tls",                                                                               \
       .type = SP_CFG_SECTION,                                                                     \
       .offset = offsetof(T, tls),                                                                 \
       .flags = SP_CFG_PRESENT,                                                                    \
       .section = &sp_tls_client_schema,                                                           \
       .present_offset = offsetof(sp_tls_config_t, present)},                                      \
      {.key = "sending_queue",                                                                     \
       .type = SP_CFG_SECTION,                                                                     \
       .offset = offsetof(T, sending_queue),                                                       \
       .section = &sp_exporterhelper_queue_schema},                                                \
      {.key = "retry_on_failure",                                                                  \
       .type = SP_CFG_SECTION,                                                                     \
       .offset = offsetof(T, retry_on_failure),                                                    \
       .section = &sp_exporterhelper_retry_schema},                                                \
  {                                                                                                \
    .key = "tenant_from_metadata", .type = SP_CFG_BOOL,                                            \
    .offset = offsetof(T, tenant_from_metadata), .def = "false"                                    \
  }

/* ---- the sender an exporter supplies ---------------------------------------- */

/** One request as the sender sees it. Owned by the helper. */
typedef struct sp_exporterhelper_item_s {
  unsigned signal;         /* SP_SIGNAL_TRACES or SP_SIGNAL_PROFILES */
  sp_traces_t *traces;     /* signal == SP_SIGNAL_TRACES (the helper holds the reference) */
  sp_profiles_t *profiles; /* signal == SP_SIGNAL_PROFILES (likewise) */
  size_t count;            /* spans or profiles in the batch */
  size_t bytes;            /* its size as the queue counted it (sp_exporterhelper_*_bytes) */
  unsigned attempt;        /* 0 for the first send, 1 for the first retry, ... */
  /*
   * The sender's own per-item state kept across attempts (e.g. the encoded
   * and compressed body, so a retry does not redo the work); NULL at first.
   * Freed by sender.release when the item leaves the helper.
   */
  void *user;
} sp_exporterhelper_item_t;

/** The outcome of one send. Pointers are read during the done call only. */
typedef struct sp_exporterhelper_result_s {
  int err;                 /* 0, SP_EAGAIN (retryable) or a permanent SP_E* code */
  uint64_t retry_after_ms; /* retryable: the server's requested delay (0: none) */
  size_t rejected;         /* err == 0: items the backend rejected (partial success) */
  const char *message;     /* why (error or partial-success message); NULL or "" when none */
} sp_exporterhelper_result_t;

/** Reports a send's outcome; @p token is the one passed to send. Loop thread, exactly once. */
typedef void (*sp_exporterhelper_done_cb)(void *token, const sp_exporterhelper_result_t *res);

typedef struct sp_exporterhelper_sender_s {
  /**
   * Starts sending @p item (which stays valid, and may be given a `user`
   * state, until release). Returns 0 when started: @p done(@p token, result)
   * must then run exactly once, on the loop thread, never from inside this
   * call. Any other return is the result itself (SP_EAGAIN retryable, else
   * permanent) and @p done must not run.
   */
  int (*send)(void *ctx, sp_exporterhelper_item_t *item, sp_exporterhelper_done_cb done,
              void *token);
  /**
   * Optional. The shutdown deadline passed with sends in flight: make them
   * complete soon (typically by shutting the transport down, whose callbacks
   * then report SP_ECANCELED). Called at most once. Exporters that supply
   * `close` need not supply this: `close` is then called at the deadline.
   */
  void (*cancel)(void *ctx);
  /**
   * Optional. Closes the transport, ending whatever is still in flight
   * (those sends complete as failures), then calls @p done(@p arg) once from
   * the loop. The helper calls it exactly once during its shutdown, after a
   * started helper has drained — or at the drain deadline when sends are
   * still in flight and there is no `cancel` — and reports its own shutdown
   * only after @p done. No send is started after it. Not called when the
   * helper never started.
   */
  void (*close)(void *ctx, void (*done)(void *arg), void *arg);
  /** Optional. @p item leaves the helper for good: free item->user. */
  void (*release)(void *ctx, sp_exporterhelper_item_t *item);
} sp_exporterhelper_sender_t;

/* ---- the helper ------------------------------------------------------------- */

typedef struct sp_exporterhelper_s sp_exporterhelper_t;

typedef struct sp_exporterhelper_options_s {
  const char *id;                             /* component ID (logs, metric label); copied */
  sp_host_t *host;                            /* loop, telemetry, drain_deadline; borrowed */
  const sp_exporterhelper_queue_cfg_t *queue; /* copied; NULL: the defaults */
  const sp_exporterhelper_retry_cfg_t *retry; /* copied; NULL: the defaults */
  const sp_exporterhelper_sender_t *sender;   /* borrowed: must outlive the helper */
  void *sender_ctx;
} sp_exporterhelper_options_t;

/**
 * Creates a helper (no libuv handle yet). Returns 0 and sets *@p out, or
 * SP_EINVAL (missing host/sender/send, num_consumers < 1, queue_size < 1
 * with the queue enabled) or SP_ENOMEM.
 */
int sp_exporterhelper_create(const sp_exporterhelper_options_t *opts, sp_exporterhelper_t **out);

/**
 * The consumer to expose as the exporter's sp_component_t.input. Valid
 * while the helper lives. Before start, batches wait in the queue (or are
 * refused when it is disabled); after shutdown began they are refused
 * (SP_EAGAIN).
 */
sp_consumer_t *sp_exporterhelper_consumer(sp_exporterhelper_t *self);

/**
 * For exporters that send over HTTP: creates the shared HTTP client
 * (pipeline/transport/http_client.h) in *@p client with the exporter's TLS
 * settings (@p tls NULL or !present: system CAs), connection cap and default
 * headers, then starts @p self. Logs why either fails. 0 or an SP_E* code;
 * *@p client stays NULL when it could not be created. Loop thread.
 */
int sp_exporterhelper_start_http(sp_exporterhelper_t *self, const sp_component_t *base,
                                 const sp_tls_config_t *tls, unsigned max_conns_per_host,
                                 const sp_http_header_t *headers, size_t n_headers,
                                 sp_http_client_t **client);

/** Opens the timers and starts sending. Never blocks. 0, SP_ESTATE (twice / after shutdown). */
int sp_exporterhelper_start(sp_exporterhelper_t *self);

/**
 * Drains (see the top of this file), closes the helper's handles, then
 * calls @p cb(@p arg) once from the loop, never from inside this call.
 * The sender must keep working until then (its `cancel` aside). Idempotent:
 * later calls are ignored. Safe without start (queued items are then
 * logged and counted as failed).
 */
void sp_exporterhelper_shutdown(sp_exporterhelper_t *self, void (*cb)(void *arg), void *arg);

/**
 * Frees the helper after its shutdown callback ran, or when it never
 * started (anything still queued is logged, counted as failed and
 * released). Accepts NULL.
 */
void sp_exporterhelper_destroy(sp_exporterhelper_t *self);

/**
 * The bytes a traces batch weighs in the queue: its encoded size (raw_len
 * as received, or enc_len once re-encoded), which is what the exporter
 * sends uncompressed; a batch held only decoded (changed, not re-encoded
 * yet) counts its arena instead, what it actually holds. Loop thread.
 */
size_t sp_exporterhelper_traces_bytes(const sp_traces_t *batch);

/**
 * The bytes a profiles batch weighs in the queue: the sum of its profiles'
 * pprof bytes (uncompressed raw_len); when one is held only decoded, the
 * batch arena's size (which holds every profile). Loop thread.
 */
size_t sp_exporterhelper_profiles_bytes(const sp_profiles_t *batch);

/** Occupancy, for tests and diagnostics. */
typedef struct sp_exporterhelper_stats_s {
  size_t queued_requests; /* waiting in the queue */
  size_t queued_items;
  size_t queued_bytes; /* sum of the queued items' `bytes` */
  size_t busy;    /* slots holding an item (sending or waiting to retry) */
  size_t sending; /* sends in flight */
} sp_exporterhelper_stats_t;

/** Copies the current occupancy into @p out. */
void sp_exporterhelper_stats(const sp_exporterhelper_t *self, sp_exporterhelper_stats_t *out);

#endif
