/*
 * pyroscope receiver — profiles from every Pyroscope SDK and from Grafana
 * Alloy, speaking the two ingestion APIs of a Pyroscope server, so that
 * clients point at spanprofd instead of Pyroscope unchanged:
 *
 *   POST /ingest                      the legacy API: pprof (raw or in a
 *                                     multipart form), folded or lines text,
 *                                     metadata in the query (name, from,
 *                                     until, format, sampleRate, spyName...)
 *   POST /push.v1.PusherService/Push  Connect unary, application/proto or
 *                                     application/json, gzip allowed
 *
 *   receivers:
 *     pyroscope:
 *       endpoint: 127.0.0.1:4040       # host:port to listen on
 *       max_request_body_size: 20MiB   # request body, on the wire and after
 *                                      # Content-Encoding (413 beyond)
 *       max_profile_size: 16MiB        # one uncompressed pprof (413 beyond)
 *       tls: { cert_file, key_file, client_ca_file, min_version }
 *
 * Every profile becomes one entry of a profiles batch with its series labels
 * (service_name, __name__, the SDK's tags); X-Scope-OrgID and Authorization
 * travel with the batch as metadata. Span-profile labels are normalised on
 * the samples (see pprof.h). This file holds the config table, the
 * lifecycle and the routing; see pyroscope.h for the other files.
 */
#include "receivers/pyroscope/pyroscope.h"

#include "pipeline/alloc.h"
#include "pipeline/defer.h"
#include "pipeline/error.h"
#include "pipeline/log.h"

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

static const sp_cfg_field_t sp__pyro_fields[] = {
    {.key = "endpoint", .type = SP_CFG_STRING, .offset = offsetof(sp_pyro_cfg_t, endpoint),
     .def = "127.0.0.1:4040", .flags = SP_CFG_NONEMPTY},
    {.key = "max_request_body_size", .type = SP_CFG_SIZE,
     .offset = offsetof(sp_pyro_cfg_t, max_request_body_size), .def = "20MiB", .min = 1024,
     .max = 1024.0 * 1024 * 1024},
    {.key = "max_profile_size", .type = SP_CFG_SIZE,
     .offset = offsetof(sp_pyro_cfg_t, max_profile_size), .def = "16MiB", .min = 1024,
     .max = 1024.0 * 1024 * 1024},
    {.key = "tls", .type = SP_CFG_SECTION, .offset = offsetof(sp_pyro_cfg_t, tls),
     .flags = SP_CFG_PRESENT, .present_offset = offsetof(sp_tls_config_t, present),
     .section = &sp_tls_server_schema},
};
static const sp_cfg_schema_t sp__pyro_schema = {sp__pyro_fields, 4, sizeof(sp_pyro_cfg_t), NULL};


static void sp__pyro_handler(sp_http_request_t *req, void *ctx) {
  sp_pyro_t *self = ctx;
  if (strcmp(req->path, "/push.v1.PusherService/Push") == 0) {
    sp__pyro_push_handle(self, req);
  } else if (strcmp(req->path, "/ingest") == 0) {
    sp__pyro_ingest_handle(self, req);
  } else {
    static const char msg[] = "404 page not found\n";
    sp_metric_add(self->m_ingest.bad_requests, 1);
    sp_http_respond(req, req->error_status ? req->error_status : 404,
                    "text/plain; charset=utf-8", msg, sizeof(msg) - 1, NULL, 0);
  }
}

static int sp__pyro_create(const sp_create_settings_t *set, const void *config,
                           sp_component_t **out) {
  if (set->next_profiles == NULL) {
    sp_log_error(set->id, "no profiles pipeline uses this receiver");
    return SP_ECONFIG;
  }
  sp_pyro_t *self = sp_calloc(1, sizeof(*self));
  if (self == NULL)
    return SP_ENOMEM;
  self->cfg = config;
  self->next = set->next_profiles;
  sp_receiver_metrics_init(set->host->telemetry, set->id, "ingest", "profiles", &self->m_ingest);
  sp_receiver_metrics_init(set->host->telemetry, set->id, "push", "profiles", &self->m_push);
  *out = &self->base;
  return 0;
}

static int sp__pyro_start(sp_component_t *base) {
  sp_pyro_t *self = (sp_pyro_t *)base;
  const sp_pyro_cfg_t *c = self->cfg;
  /* A restart after a completed shutdown gets a fresh server. */
  sp_http_server_destroy(self->http);
  self->http = NULL;
  self->shutting = false;
  sp_http_server_options_t opts = {
      .endpoint = c->endpoint,
      .component = base->id,
      .max_body_size = c->max_request_body_size,
      .tls = c->tls.present ? &c->tls : NULL,
      .handler = sp__pyro_handler,
      .handler_ctx = self,
  };
  int rc = sp_http_server_create(base->host->loop, &opts, &self->http);
  if (rc == 0)
    rc = sp_http_server_start(self->http);
  if (rc != 0) {
    sp_log_error(base->id, "cannot serve the Pyroscope API on %s: %s", c->endpoint,
                 sp_strerror(rc));
    return rc;
  }
  sp_log_info(base->id, "Pyroscope ingest API listening on %s (port %d)", c->endpoint,
              sp_http_server_port(self->http));
  return 0;
}

static void sp__pyro_down(void *arg) {
  sp_pyro_t *self = arg;
  if (--self->pending == 0 && self->cb != NULL) {
    sp_done_cb cb = self->cb;
    self->cb = NULL;
    cb(self->cb_arg);
  }
}

static void sp__pyro_shutdown(sp_component_t *base, sp_done_cb cb, void *arg) {
  sp_pyro_t *self = (sp_pyro_t *)base;
  if (self->shutting)
    return;
  self->shutting = true;
  self->cb = cb;
  self->cb_arg = arg;
  /* One extra count so that a server finishing early cannot complete us inline. */
  self->pending = 1;
  if (self->http != NULL) {
    self->pending++;
    sp_http_server_shutdown_within(self->http, sp_host_receiver_stop_budget(base->host), sp__pyro_down,
                                   self);
  }
  if (sp_defer(base->host->loop, sp__pyro_down, self) != 0)
    sp__pyro_down(self); /* out of memory: the server's callback still defers */
}

static void sp__pyro_destroy(sp_component_t *base) {
  sp_pyro_t *self = (sp_pyro_t *)base;
  if (self == NULL)
    return;
  sp_http_server_destroy(self->http);
  sp_free(self);
}

const sp_component_def_t sp_receiver_pyroscope = {
    .kind = SP_KIND_RECEIVER,
    .type = "pyroscope",
    .signals = SP_SIGNAL_PROFILES,
    .stability = "alpha",
    .description = "Pyroscope ingest API (/ingest and Connect push.v1 Push) for the Pyroscope "
                   "SDKs and Alloy (4040)",
    .schema = &sp__pyro_schema,
    .config_size = sizeof(sp_pyro_cfg_t),
    .example = "endpoint: 127.0.0.1:0\n",
    .create = sp__pyro_create,
    .start = sp__pyro_start,
    .shutdown = sp__pyro_shutdown,
    .destroy = sp__pyro_destroy,
};
