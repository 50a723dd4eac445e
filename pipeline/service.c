/*
 * service.c — configuration loading, the graph's life, signals and reload
 * (see service.h).
 *
 * State machine: IDLE → RUNNING (graph started) → RELOADING (old graph
 * draining, then the new one starting) → RUNNING ... → STOPPING → STOPPED.
 * A stop request that arrives during a reload is remembered and carried out
 * when the reload settles, so a graph is never shut down twice at once.
 */
#include "pipeline/service.h"

#include "pipeline/alloc.h"
#include "pipeline/error.h"
#include "pipeline/graph.h"
#include "pipeline/log.h"

#include <signal.h>
#include <string.h>
#include <unistd.h>

typedef enum {
  SP_SVC_IDLE = 0,
  SP_SVC_RUNNING,
  SP_SVC_RELOADING,
  SP_SVC_STOPPING,
  SP_SVC_STOPPED,
} sp_svc_state_t;

struct sp_service_s {
  uv_loop_t *loop;
  char **paths;
  size_t n_paths;
  char *builtin;
  sp_host_t host;
  sp_telemetry_t *telemetry;
  sp_svc_state_t state;
  sp_config_doc_t *doc;      /* configuration of the running graph */
  sp_graph_t *graph;
  sp_config_doc_t *next_doc; /* during a reload: the configuration being switched to */
  bool stop_requested;
  sp_done_cb stop_cb;
  void *stop_arg;
  uv_signal_t sig_term, sig_int, sig_hup;
  bool signals_on;
  uv_timer_t defer; /* closed last at shutdown so completion is never reported inline */
  int open_handles;
  sp_done_cb on_stopped;
  void *on_stopped_arg;
};

static const char *const sp__comp = NULL; /* service lines carry no component */

static int sp__load(const sp_service_t *self, sp_config_doc_t **doc, sp_errors_t *errs) {
  if (self->n_paths > 0)
    return sp_config_load_files((const char *const *)self->paths, self->n_paths, doc, errs);
  const char *yaml = self->builtin != NULL ? self->builtin : sp_default_config;
  return sp_config_load_string("<builtin config>", yaml, strlen(yaml), doc, errs);
}

static void sp__apply_logs(const sp_service_settings_t *s) {
  static const sp_log_level_t levels[] = {SP_LOG_DEBUG, SP_LOG_INFO, SP_LOG_WARN, SP_LOG_ERROR};
  if (s->logs.level >= 0 && s->logs.level < 4)
    sp_log_set_level(levels[s->logs.level]);
  sp_log_set_encoding(s->logs.encoding == 2 ? SP_LOG_JSON : SP_LOG_LOGFMT);
}

static void sp__log_errors(const sp_errors_t *errs) {
  for (size_t i = 0; i < errs->n; i++)
    sp_log_error(sp__comp, "%s", errs->lines[i]);
}

int sp_service_validate(const sp_service_options_t *opts, sp_errors_t *errs) {
  sp_service_t tmp;
  memset(&tmp, 0, sizeof(tmp));
  tmp.paths = (char **)opts->config_paths;
  tmp.n_paths = opts->n_config_paths;
  tmp.builtin = (char *)opts->builtin_yaml;
  sp_config_doc_t *doc = NULL;
  sp_graph_t *g = NULL;
  sp_host_t host = {0};
  int rc = sp__load(&tmp, &doc, errs);
  if (rc == 0)
    rc = sp_graph_build(doc, &host, false, &g, errs);
  sp_graph_destroy(g);
  sp_config_doc_free(doc);
  return rc;
}

int sp_service_create(uv_loop_t *loop, const sp_service_options_t *opts, sp_service_t **out) {
  sp_service_t *self = sp_calloc(1, sizeof(*self));
  if (self == NULL)
    return SP_ENOMEM;
  self->loop = loop;
  self->telemetry = sp_telemetry_create();
  if (self->telemetry == NULL)
    goto fail;
  if (opts->n_config_paths > 0) {
    self->paths = sp_calloc(opts->n_config_paths, sizeof(char *));
    if (self->paths == NULL)
      goto fail;
    for (size_t i = 0; i < opts->n_config_paths; i++) {
      self->paths[i] = sp_strdup(opts->config_paths[i]);
      if (self->paths[i] == NULL)
        goto fail;
      self->n_paths++;
    }
  }
  if (opts->builtin_yaml != NULL && (self->builtin = sp_strdup(opts->builtin_yaml)) == NULL)
    goto fail;
  self->host.loop = loop;
  self->host.telemetry = self->telemetry;
  uv_timer_init(loop, &self->defer);
  self->defer.data = self;
  *out = self;
  return 0;
fail:
  sp_service_destroy(self);
  return SP_ENOMEM;
}

/* Builds and starts a graph from @p doc. On a start failure the graph is left for the caller to shut down. */
static int sp__bring_up(sp_service_t *self, sp_config_doc_t *doc, sp_graph_t **out,
                        sp_errors_t *errs) {
  sp_graph_t *g = NULL;
  int rc = sp_graph_build(doc, &self->host, true, &g, errs);
  if (rc != 0)
    return rc;
  sp__apply_logs(sp_graph_settings(g));
  *out = g;
  return sp_graph_start(g);
}

int sp_service_start(sp_service_t *self, sp_errors_t *errs) {
  int rc = sp__load(self, &self->doc, errs);
  if (rc != 0)
    return rc;
  rc = sp__bring_up(self, self->doc, &self->graph, errs);
  if (rc == 0) {
    self->state = SP_SVC_RUNNING;
    sp_log_info(sp__comp, "spanprofd %s started with %zu pipeline(s)", SP_VERSION,
                sp_graph_pipeline_count(self->graph));
  }
  return rc;
}

/* ---- stopping ----------------------------------------------------------------- */

static void sp__handle_closed(uv_handle_t *h) {
  sp_service_t *self = h->data;
  if (--self->open_handles > 0)
    return;
  self->state = SP_SVC_STOPPED;
  sp_done_cb cb = self->stop_cb;
  self->stop_cb = NULL;
  if (cb != NULL)
    cb(self->stop_arg);
  if (self->on_stopped != NULL)
    self->on_stopped(self->on_stopped_arg);
}

static void sp__graph_stopped(void *arg) {
  sp_service_t *self = arg;
  sp_graph_destroy(self->graph);
  self->graph = NULL;
  sp_log_info(sp__comp, "stopped");
  /* Close our own handles; the last close callback reports (never inline). */
  self->open_handles = 1;
  uv_close((uv_handle_t *)&self->defer, sp__handle_closed);
  if (self->signals_on) {
    self->signals_on = false;
    uv_signal_t *hs[] = {&self->sig_term, &self->sig_int, &self->sig_hup};
    for (int i = 0; i < 3; i++) {
      self->open_handles++;
      uv_close((uv_handle_t *)hs[i], sp__handle_closed);
    }
  }
}

static void sp__stop_now(sp_service_t *self) {
  self->state = SP_SVC_STOPPING;
  if (self->graph == NULL) {
    sp__graph_stopped(self);
    return;
  }
  uint64_t timeout = sp_graph_settings(self->graph)->shutdown_timeout_ms;
  sp_log_info(sp__comp, "draining (up to %llu ms)", (unsigned long long)timeout);
  sp_graph_shutdown(self->graph, timeout, sp__graph_stopped, self);
}

void sp_service_shutdown(sp_service_t *self, sp_done_cb cb, void *arg) {
  if (self->stop_requested)
    return;
  self->stop_requested = true;
  self->stop_cb = cb;
  self->stop_arg = arg;
  if (self->state != SP_SVC_RELOADING)
    sp__stop_now(self);
}

/* ---- reload ------------------------------------------------------------------- */

static void sp__reload_settled(sp_service_t *self) {
  self->state = SP_SVC_RUNNING;
  /* State nobody took over (the component left the configuration) is freed. */
  sp_host_stash_clear(&self->host);
  if (self->stop_requested)
    sp__stop_now(self);
}

static void sp__fallback_stopped(void *arg);

/* The new graph failed to start and has been shut down: bring the old configuration back. */
static void sp__restore_old(sp_service_t *self) {
  sp_errors_t errs = {0};
  sp_graph_t *g = NULL;
  int rc = sp__bring_up(self, self->doc, &g, &errs);
  sp__log_errors(&errs);
  sp_errors_free(&errs);
  self->graph = g;
  if (rc != 0) {
    sp_log_error(sp__comp, "the previous configuration cannot be started again either (%s); "
                           "stopping",
                 sp_strerror(rc));
    self->stop_requested = true;
  } else {
    sp_log_warn(sp__comp, "running the previous configuration again");
  }
  sp__reload_settled(self);
}

static void sp__fallback_stopped(void *arg) {
  sp_service_t *self = arg;
  self->host.reloading = false;
  sp_graph_destroy(self->graph);
  self->graph = NULL;
  sp_config_doc_free(self->next_doc);
  self->next_doc = NULL;
  sp__restore_old(self);
}

static void sp__old_graph_stopped(void *arg) {
  sp_service_t *self = arg;
  self->host.reloading = false;
  sp_graph_destroy(self->graph);
  self->graph = NULL;
  sp_errors_t errs = {0};
  sp_graph_t *g = NULL;
  int rc = sp__bring_up(self, self->next_doc, &g, &errs);
  sp__log_errors(&errs);
  sp_errors_free(&errs);
  self->graph = g;
  if (rc == 0) {
    sp_config_doc_free(self->doc);
    self->doc = self->next_doc;
    self->next_doc = NULL;
    sp_log_info(sp__comp, "configuration reloaded (%zu pipeline(s))",
                sp_graph_pipeline_count(g));
    sp__reload_settled(self);
    return;
  }
  sp_log_error(sp__comp, "the new configuration failed to start: %s", sp_strerror(rc));
  if (g == NULL) {
    sp_config_doc_free(self->next_doc);
    self->next_doc = NULL;
    sp__restore_old(self);
    return;
  }
  /* Whatever the new graph took over goes back to the stash for the old one. */
  self->host.reloading = true;
  sp_graph_shutdown(g, 0, sp__fallback_stopped, self);
}

void sp_service_reload(sp_service_t *self) {
  if (self->state != SP_SVC_RUNNING || self->stop_requested) {
    sp_log_warn(sp__comp, "reload ignored: %s",
                self->state == SP_SVC_RELOADING ? "a reload is already in progress"
                                                : "the service is not running");
    return;
  }
  sp_log_info(sp__comp, "reloading the configuration");
  sp_errors_t errs = {0};
  sp_config_doc_t *doc = NULL;
  sp_graph_t *probe = NULL;
  int rc = sp__load(self, &doc, &errs);
  if (rc == 0)
    rc = sp_graph_build(doc, &self->host, false, &probe, &errs);
  sp_graph_destroy(probe);
  if (rc != 0) {
    sp__log_errors(&errs);
    sp_log_error(sp__comp, "the new configuration is invalid (%zu error(s)); keeping the "
                           "running one",
                 errs.n);
    sp_errors_free(&errs);
    sp_config_doc_free(doc);
    return;
  }
  sp_errors_free(&errs);
  self->next_doc = doc;
  self->state = SP_SVC_RELOADING;
  self->host.reloading = true;
  uint64_t timeout = sp_graph_settings(self->graph)->shutdown_timeout_ms;
  sp_graph_shutdown(self->graph, timeout, sp__old_graph_stopped, self);
}

/* ---- signals ------------------------------------------------------------------ */

static void sp__on_signal(uv_signal_t *h, int signum) {
  sp_service_t *self = h->data;
  if (signum == SIGHUP) {
    sp_service_reload(self);
    return;
  }
  sp_log_info(sp__comp, "received %s; shutting down", signum == SIGTERM ? "SIGTERM" : "SIGINT");
  sp_service_shutdown(self, NULL, NULL);
}

int sp_service_watch_signals(sp_service_t *self, sp_done_cb on_stopped, void *arg) {
  uv_signal_t *hs[] = {&self->sig_term, &self->sig_int, &self->sig_hup};
  int nums[] = {SIGTERM, SIGINT, SIGHUP};
  self->on_stopped = on_stopped;
  self->on_stopped_arg = arg;
  for (int i = 0; i < 3; i++) {
    uv_signal_init(self->loop, hs[i]);
    hs[i]->data = self;
    uv_signal_start(hs[i], sp__on_signal, nums[i]);
  }
  self->signals_on = true;
  return 0;
}

/* ---- the rest ----------------------------------------------------------------- */

sp_telemetry_t *sp_service_telemetry(sp_service_t *self) { return self->telemetry; }

struct sp_graph_s *sp_service_graph(sp_service_t *self) { return self->graph; }

void sp_service_destroy(sp_service_t *self) {
  if (self == NULL)
    return;
  sp_graph_destroy(self->graph);
  sp_host_stash_clear(&self->host);
  sp_config_doc_free(self->doc);
  sp_config_doc_free(self->next_doc);
  for (size_t i = 0; i < self->n_paths; i++)
    sp_free(self->paths[i]);
  sp_free(self->paths);
  sp_free(self->builtin);
  sp_telemetry_destroy(self->telemetry);
  sp_free(self);
}
