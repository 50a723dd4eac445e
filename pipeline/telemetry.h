/*
 * telemetry.h — the daemon's own metrics.
 *
 * Counters and gauges are identified by a metric name and a label set (in
 * Prometheus text form, e.g. `receiver="otlp",transport="grpc"`). Asking for
 * the same pair again returns the same series, so counters stay monotonic
 * across a config reload that recreates the components. Updates are atomic
 * (relaxed), so gRPC threads may count too; creating series happens on the
 * loop thread. The registry renders Prometheus text exposition format for the
 * `service.telemetry.metrics` endpoint.
 */
#ifndef SP_TELEMETRY_H
#define SP_TELEMETRY_H

#include "pipeline/buf.h"

#include <stdatomic.h>
#include <stdint.h>

typedef struct sp_telemetry_s sp_telemetry_t;

typedef struct sp_metric_s {
  _Atomic uint64_t value; /* counters count up; gauges hold the last set value */
} sp_metric_t;

/** A new, empty registry; NULL on OOM. */
sp_telemetry_t *sp_telemetry_create(void);
/** Frees the registry and every series. Accepts NULL. */
void sp_telemetry_destroy(sp_telemetry_t *self);

/**
 * The counter @p name{@p labels} (created at 0 on first use). @p help is used
 * on first creation. With @p self NULL (tests, tools) a private dummy series
 * is returned so callers need no NULL checks. Never NULL.
 */
sp_metric_t *sp_telemetry_counter(sp_telemetry_t *self, const char *name, const char *help,
                                  const char *labels);
/** Like sp_telemetry_counter for a gauge (rendered as TYPE gauge). */
sp_metric_t *sp_telemetry_gauge(sp_telemetry_t *self, const char *name, const char *help,
                                const char *labels);

static inline void sp_metric_add(sp_metric_t *m, uint64_t n) {
  atomic_fetch_add_explicit(&m->value, n, memory_order_relaxed);
}
static inline void sp_metric_set(sp_metric_t *m, uint64_t v) {
  atomic_store_explicit(&m->value, v, memory_order_relaxed);
}
static inline uint64_t sp_metric_get(const sp_metric_t *m) {
  return atomic_load_explicit(&m->value, memory_order_relaxed);
}

/**
 * A receiver's counters for one kind of item on one transport, as the
 * Collector's receiver observability reports them:
 * spanprof_receiver_{accepted,refused,rejected}_<items>_total and
 * spanprof_receiver_bad_requests_total, labelled receiver="<id>",
 * transport="<transport>". Refused means the pipeline was full and the
 * sender was told to retry; rejected means the data was invalid.
 */
typedef struct sp_receiver_metrics_s {
  sp_metric_t *accepted;
  sp_metric_t *refused;
  sp_metric_t *rejected;
  sp_metric_t *bad_requests;
} sp_receiver_metrics_t;

/** Registers (or finds) the counters above; @p items is "spans" or "profiles". */
void sp_receiver_metrics_init(sp_telemetry_t *self, const char *id, const char *transport,
                              const char *items, sp_receiver_metrics_t *out);

/** Current value of a series, 0 when it does not exist (tests). */
uint64_t sp_telemetry_value(sp_telemetry_t *self, const char *name, const char *labels);

/** Appends the Prometheus text exposition of every series to @p out. 0 or SP_ENOMEM. */
int sp_telemetry_render(sp_telemetry_t *self, sp_buf_t *out);

#endif
