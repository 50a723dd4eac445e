/*
 * service.h — the running daemon: configuration, graph, signals, reload.
 *
 * The service loads the configuration (files, or the built-in default),
 * builds and starts the graph, and reacts to signals: SIGTERM/SIGINT drain
 * and stop, SIGHUP reloads. A reload first validates the new configuration
 * completely; an invalid one is logged line by line and the running graph
 * keeps serving. A valid one replaces the graph: the old graph drains (its
 * receivers stop accepting, processors flush, exporters send what they hold
 * until service.shutdown_timeout), then the new one starts. If the new one
 * cannot start (a port is taken, say), the old configuration is started again.
 * Loop thread only.
 */
#ifndef SP_SERVICE_H
#define SP_SERVICE_H

#include "pipeline/component.h"
#include "pipeline/config.h"

#include <uv.h>

typedef struct sp_service_s sp_service_t;

typedef struct sp_service_options_s {
  const char *const *config_paths; /* merged in order; none = the built-in config */
  size_t n_config_paths;
  const char *builtin_yaml;        /* used when there is no path */
} sp_service_options_t;

/** The built-in default configuration (the local-dev pipeline). */
extern const char sp_default_config[];

/**
 * Loads and validates a configuration without creating anything (the
 * `validate` command). Every problem is added to @p errs. 0 or SP_ECONFIG.
 */
int sp_service_validate(const sp_service_options_t *opts, sp_errors_t *errs);

/** Creates the service (nothing loaded yet). Options are copied. 0 or SP_ENOMEM. */
int sp_service_create(uv_loop_t *loop, const sp_service_options_t *opts, sp_service_t **out);

/**
 * Loads the configuration, builds the graph and starts it. Errors are added
 * to @p errs (configuration) or logged (start failures). On failure the
 * caller shuts the service down (which stops whatever had started) and exits
 * non-zero.
 */
int sp_service_start(sp_service_t *self, sp_errors_t *errs);

/** Watches SIGTERM, SIGINT (drain and stop; then @p on_stopped) and SIGHUP (reload). */
int sp_service_watch_signals(sp_service_t *self, sp_done_cb on_stopped, void *arg);

/** Reloads the configuration (what SIGHUP does). */
void sp_service_reload(sp_service_t *self);

/** Drains and stops; @p cb runs once from the loop when every handle is closed. Idempotent. */
void sp_service_shutdown(sp_service_t *self, sp_done_cb cb, void *arg);

/** Frees the service after its shutdown completed. Accepts NULL. */
void sp_service_destroy(sp_service_t *self);

/** The self-metrics registry (lives as long as the service). */
sp_telemetry_t *sp_service_telemetry(sp_service_t *self);

/** The running graph (tests), or NULL between graphs. */
struct sp_graph_s *sp_service_graph(sp_service_t *self);

#endif
