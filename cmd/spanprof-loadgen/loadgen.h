/*
 * loadgen.h — internals shared by the files of spanprof-loadgen.
 *
 *   main.c      command line, dispatch to a mode
 *   stats.c     latency histogram, clocks, flag value parsers, /proc readers
 *   send.c      the sending engine: N slots, fixed rate or as fast as
 *               possible, SDK-style retries, counters (HTTP and gRPC)
 *   traces.c    the `traces` mode: a pool of pre-encoded, realistic
 *               ExportTraceServiceRequests whose IDs and times are patched
 *               in place for every send
 *   profiles.c  the `profiles` mode: pprof CPU profiles whose samples carry
 *               span_id labels of spans sent alongside
 *   sink.c      the `sink` mode: counts what arrives, answers with faults
 *
 * Everything runs on one libuv loop (the gRPC transports add their
 * completion-queue threads, which only hand events to the loop).
 */
#ifndef SP_LOADGEN_H
#define SP_LOADGEN_H

#include "pipeline/buf.h"
#include "pipeline/transport/grpc_client.h"
#include "pipeline/transport/http_client.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <uv.h>

/* ---- stats.c -------------------------------------------------------------- */

/* Log-linear histogram of microsecond values: 32 buckets per power of two
 * (about 3% resolution) up to 2^40 us; fixed size, O(1) to record. */
#define LG_HIST_SUB 32
#define LG_HIST_BUCKETS (41 * LG_HIST_SUB)

typedef struct lg_hist_s {
  uint64_t count;
  uint64_t max_us;
  uint64_t sum_us;
  uint32_t b[LG_HIST_BUCKETS];
} lg_hist_t;

/** Records one value in microseconds. */
void lg_hist_add(lg_hist_t *h, uint64_t us);
/** The value at quantile @p q (0..1) in microseconds; 0 when empty. */
uint64_t lg_hist_quantile(const lg_hist_t *h, double q);

/** Monotonic nanoseconds (uv_hrtime). */
uint64_t lg_mono_ns(void);
/** Wall-clock nanoseconds since the epoch (CLOCK_REALTIME). */
uint64_t lg_wall_ns(void);
/** CPU seconds (user + system) used by this process so far. */
double lg_cpu_seconds(void);
/** Peak resident set (VmHWM) of this process in KiB; 0 when unknown. */
uint64_t lg_peak_rss_kib(void);

/** "30s", "500ms", "2m", "1h", or a bare number of seconds → milliseconds. 0 or -1. */
int lg_parse_duration(const char *s, uint64_t *ms);
/** "1000", "10k", "2M", "1G" → value. 0 or -1. */
int lg_parse_count(const char *s, double *out);

/** A fast, seedable PRNG (splitmix64): advances *@p state. */
uint64_t lg_rand(uint64_t *state);

/* ---- send.c --------------------------------------------------------------- */

typedef enum { LG_PROTO_HTTP = 0, LG_PROTO_GRPC } lg_proto_t;
typedef enum { LG_ITEMS_SPANS = 0, LG_ITEMS_PROFILES, LG_ITEMS_KINDS } lg_items_t;

/** Where one kind of request goes. Filled by a mode, opened by the engine. */
typedef struct lg_target_s {
  lg_proto_t proto;
  lg_items_t items;          /* what its requests carry (for the counters) */
  char url[512];             /* HTTP: the full URL */
  char grpc_target[256];     /* gRPC: host:port */
  const char *grpc_method;   /* gRPC: "/pkg.Service/Method" */
  sp_http_header_t headers[4];
  size_t n_headers;
  bool grpc_gzip;            /* gRPC: compress messages */
  /* opened by the engine */
  sp_grpc_client_t **grpc;
  size_t n_grpc, rr;
} lg_target_t;

/** One request of a job. The body is the mode's and must stay unchanged until the job ends. */
typedef struct lg_part_s {
  lg_target_t *target;
  const uint8_t *body;
  size_t len;
  size_t items;
  const char *url; /* HTTP: overrides target->url when set (copied per request) */
} lg_part_t;

typedef struct lg_engine_s lg_engine_t;

/** A slot: one job (1–2 requests sent in order) in flight or waiting to retry. */
typedef struct lg_job_s {
  lg_engine_t *eng;
  size_t idx;           /* slot number; modes keep per-slot buffers by it */
  lg_part_t parts[2];
  size_t n_parts, cur;
  unsigned attempt;     /* of the current part */
  uint64_t attempt_ns;  /* when the current attempt started */
  uint64_t first_ns;    /* when the job's first attempt started */
  uv_timer_t timer;     /* retry backoff */
  bool busy, in_flight;
} lg_job_t;

/** Fills @p job's parts for the next job; returns false when there is nothing more to send. */
typedef bool (*lg_fill_cb)(void *ctx, lg_job_t *job);

typedef struct lg_send_opts_s {
  size_t connections;   /* HTTP connections / gRPC channels */
  size_t inflight;      /* jobs at once (0: = connections) */
  double rate;          /* items per second of targets[0]'s kind; 0: as fast as possible */
  uint64_t duration_ms; /* stop starting jobs after this (0: until count) */
  double count;         /* stop after this many items of targets[0]'s kind (0: no limit) */
  uint64_t timeout_ms;  /* per request */
  uint64_t drain_ms;    /* after the end, wait this long for retries to finish */
  uint64_t retry_initial_ms, retry_max_ms;
  unsigned max_attempts; /* 0: unlimited (until the drain deadline) */
  uint64_t report_ms;   /* progress line on stderr every this often (0: never) */
} lg_send_opts_t;

typedef struct lg_counts_s {
  uint64_t sent_items;     /* items in jobs started */
  uint64_t accepted_items; /* items in requests answered with success */
  uint64_t failed_items;   /* items given up (permanent error, attempts or drain exhausted) */
  uint64_t requests_ok;
  uint64_t refused;        /* retryable refusals (503/429/UNAVAILABLE...) */
  uint64_t errors;         /* transport errors and timeouts (retried) */
  uint64_t rejected;       /* permanent error answers */
  uint64_t bytes;          /* request body bytes of successful requests */
} lg_counts_t;

struct lg_engine_s {
  uv_loop_t *loop;
  lg_send_opts_t o;
  lg_fill_cb fill;
  void *fill_ctx;
  lg_target_t *targets[2];
  size_t n_targets;
  sp_http_client_t *http;
  lg_job_t *jobs;
  size_t n_jobs;
  lg_counts_t c[LG_ITEMS_KINDS];
  lg_hist_t lat;           /* attempt latency of successful requests */
  uint64_t seed;
  uint64_t start_ns, end_ns, next_due_ns;
  double started_items;    /* of the first kind, for --count */
  bool stopping, closing, exhausted;
  uv_timer_t rate_timer, tick_timer;
  int open_handles;
  uint64_t last_report_ns, last_report_items;
  char last_error[256];
  const char *mode;
};

/**
 * Creates the engine's transports (one HTTP client for all HTTP targets,
 * `connections` gRPC channels per gRPC target), runs until the duration or
 * count is reached and the jobs have finished (or the drain ran out), closes
 * everything. Returns 0, or a negative SP_E* code when the transports could
 * not be created.
 */
int lg_engine_run(lg_engine_t *eng);

/** Prints the result table (human) or one JSON object to @p out. */
void lg_engine_report(const lg_engine_t *eng, bool json, FILE *out);

/* ---- modes ---------------------------------------------------------------- */

/** The modes' entry points: @p argv holds the flags after the mode name; the exit status. */
int lg_traces_main(int argc, char **argv);
/** See lg_traces_main. */
int lg_profiles_main(int argc, char **argv);
/** See lg_traces_main. */
int lg_sink_main(int argc, char **argv);

/* ---- traces.c: the span pool, shared with profiles.c ---------------------- */

typedef struct lg_span_pool_s lg_span_pool_t;

typedef struct lg_span_pool_opts_s {
  size_t batches;     /* distinct batches in the pool */
  size_t batch_spans; /* spans per batch (rounded up to whole traces of 4 spans) */
  size_t services;    /* distinct service.name values (pool entries cycle through them) */
  bool json;          /* OTLP/JSON instead of protobuf */
  bool gzip;          /* pre-compress (then IDs and times are not patched) */
  uint64_t seed;
} lg_span_pool_opts_t;

/** Builds the pool (the caller owns it). 0 or SP_ENOMEM. */
int lg_span_pool_create(const lg_span_pool_opts_t *o, lg_span_pool_t **out);
/** Frees the pool; accepts NULL. */
void lg_span_pool_destroy(lg_span_pool_t *p);
/** Largest encoded batch, for sizing per-slot buffers. */
size_t lg_span_pool_max_len(const lg_span_pool_t *p);
/** Number of distinct batches in the pool. */
size_t lg_span_pool_size(const lg_span_pool_t *p);
/** Spans in entry @p i. */
size_t lg_span_pool_spans(const lg_span_pool_t *p, size_t i);
/** service.name of entry @p i. */
const char *lg_span_pool_service(const lg_span_pool_t *p, size_t i);
/** The base (unpatched) span IDs of entry @p i as big-endian u64 values; *n gets their number. */
const uint64_t *lg_span_pool_span_ids(const lg_span_pool_t *p, size_t i, size_t *n);
/**
 * Copies entry @p i into @p dst (lg_span_pool_max_len bytes) and patches it:
 * every trace ID's low 8 bytes XOR @p trace_key, every span and parent span
 * ID XOR @p span_key (so parent links stay intact), and span times moved so
 * that the first span ends at @p now_ns. Returns the length.
 */
size_t lg_span_pool_emit(const lg_span_pool_t *p, size_t i, uint8_t *dst, uint64_t trace_key,
                         uint64_t span_key, uint64_t now_ns);

/* ---- shared flag parsing -------------------------------------------------- */

typedef struct lg_common_s {
  lg_proto_t proto;
  bool json, gzip, want_json_out, quiet;
  const char *endpoint;
  lg_send_opts_t send;
  uint64_t seed;
  const char *headers[4]; /* "Name: value" */
  size_t n_headers;
} lg_common_t;

/** Defaults for the flags every sending mode shares. */
void lg_common_defaults(lg_common_t *c);
/**
 * Consumes argv[*i] (and its value) when it is a common flag; returns 1 when
 * consumed, 0 when not a common flag, -1 on a bad value (message printed).
 */
int lg_common_flag(lg_common_t *c, int argc, char **argv, int *i);
/**
 * Points @p t at --endpoint: for HTTP "http://host:port" + @p path (a bare
 * host:port gets "http://"; a URL with a path keeps it), with Content-Type
 * @p content_type (and Content-Encoding: gzip with --gzip); for gRPC the
 * host:port and @p grpc_method. @p default_port completes an empty endpoint.
 */
void lg_target_setup(lg_target_t *t, const lg_common_t *c, const char *default_port,
                     const char *path, const char *grpc_method, const char *content_type);

/** Help text of the common flags. */
extern const char lg_common_help[];

#endif
