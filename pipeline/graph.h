/*
 * graph.h — from a loaded configuration to connected component instances.
 *
 * Building reads the five top-level sections, decodes every component's
 * settings with its schema, checks the pipelines (known signals, defined and
 * signal-capable components, no empty or duplicated lists) and reports every
 * problem at once. With `create` set it then instantiates the components
 * used by some pipeline — each ID once, however many pipelines list it — and
 * wires them: exporters first (their shared input consumer), then each
 * pipeline's processors from last to first, then receivers with a fan-out
 * per signal to every pipeline that lists them.
 *
 * Start runs exporters → processors → receivers; shutdown the reverse, each
 * stage fully finished before the next begins, so data drains downstream.
 * Loop thread only.
 */
#ifndef SP_GRAPH_H
#define SP_GRAPH_H

#include "pipeline/component.h"
#include "pipeline/config.h"

#include <stdbool.h>

typedef struct sp_graph_s sp_graph_t;

/** The `service` section's own settings. */
typedef struct sp_service_settings_s {
  struct {
    int level;    /* index into debug, info, warn, error */
    int encoding; /* index into console, logfmt, json */
  } logs;
  struct {
    int level;     /* index into none, basic, normal, detailed */
    char *address; /* host:port of the Prometheus /metrics endpoint */
  } metrics;
  uint64_t shutdown_timeout_ms;
} sp_service_settings_t;

/**
 * Builds a graph from @p doc (which must outlive it). Errors go to @p errs.
 * With @p create false only validation happens (no instance is created; used
 * by `spanprofd validate` and before a reload). Returns 0, SP_ECONFIG,
 * SP_ENOMEM, or a component's create error (also added to @p errs).
 */
int sp_graph_build(const sp_config_doc_t *doc, sp_host_t *host, bool create, sp_graph_t **out,
                   sp_errors_t *errs);

/** The decoded `service` settings. */
const sp_service_settings_t *sp_graph_settings(const sp_graph_t *self);

/**
 * Starts exporters, processors, receivers. On failure returns the error (the
 * component logged why); the caller then shuts the graph down, which stops
 * what had started. Never blocks.
 */
int sp_graph_start(sp_graph_t *self);

/**
 * Shuts everything down in reverse order, draining until @p timeout_ms from
 * now, then calls @p cb once from the loop. Safe without start; idempotent
 * (a second call only adds no callback).
 */
void sp_graph_shutdown(sp_graph_t *self, uint64_t timeout_ms, sp_done_cb cb, void *arg);

/** Frees the graph after its shutdown completed (or when never started). Accepts NULL. */
void sp_graph_destroy(sp_graph_t *self);

/** The instance with this kind and ID, or NULL (tests). */
sp_component_t *sp_graph_component(sp_graph_t *self, sp_kind_t kind, const char *id);

/** The number of pipelines (tests). */
size_t sp_graph_pipeline_count(const sp_graph_t *self);

#endif
