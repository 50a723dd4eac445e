/*
 * otlp receiver — OTLP traces and profiles over gRPC and HTTP, as the
 * OpenTelemetry Collector's `otlp` receiver takes them.
 *
 *   receivers:
 *     otlp:
 *       protocols:
 *         grpc: { endpoint: 127.0.0.1:4317, max_recv_msg_size_mib: 4, tls: {...},
 *                 keepalive: { server_parameters: { time, timeout, max_connection_idle } } }
 *         http: { endpoint: 127.0.0.1:4318, max_request_body_size: 20MiB, tls: {...},
 *                 cors: { allowed_origins: [...], allowed_headers: [...], max_age: 7200 },
 *                 traces_url_path: /v1/traces, profiles_url_path: /v1development/profiles }
 *
 * Either protocol may be left out, not both. This file holds the config
 * table and the lifecycle; see otlp.h for the other files.
 */
#include "receivers/otlp/otlp.h"

#include "pipeline/alloc.h"
#include "pipeline/defer.h"
#include "pipeline/error.h"
#include "pipeline/log.h"

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

static const sp_cfg_field_t sp__keepalive_fields[] = {
    {.key = "time", .type = SP_CFG_DURATION, .offset = offsetof(sp_otlp_keepalive_cfg_t, time_ms)},
    {.key = "timeout", .type = SP_CFG_DURATION,
     .offset = offsetof(sp_otlp_keepalive_cfg_t, timeout_ms)},
    {.key = "max_connection_idle", .type = SP_CFG_DURATION,
     .offset = offsetof(sp_otlp_keepalive_cfg_t, max_connection_idle_ms)},
};
static const sp_cfg_schema_t sp__keepalive_schema = {sp__keepalive_fields, 3,
                                                     sizeof(sp_otlp_keepalive_cfg_t), NULL};

static const sp_cfg_field_t sp__keepalive_outer_fields[] = {
    {.key = "server_parameters", .type = SP_CFG_SECTION, .offset = 0,
     .section = &sp__keepalive_schema},
};
static const sp_cfg_schema_t sp__keepalive_outer_schema = {
    sp__keepalive_outer_fields, 1, sizeof(sp_otlp_keepalive_cfg_t), NULL};

static const sp_cfg_field_t sp__grpc_fields[] = {
    {.key = "endpoint", .type = SP_CFG_STRING, .offset = offsetof(sp_otlp_grpc_cfg_t, endpoint),
     .def = "127.0.0.1:4317", .flags = SP_CFG_NONEMPTY},
    {.key = "max_recv_msg_size_mib", .type = SP_CFG_INT,
     .offset = offsetof(sp_otlp_grpc_cfg_t, max_recv_msg_size_mib), .def = "4", .min = 1,
     .max = 2047},
    {.key = "tls", .type = SP_CFG_SECTION, .offset = offsetof(sp_otlp_grpc_cfg_t, tls),
     .flags = SP_CFG_PRESENT, .present_offset = offsetof(sp_tls_config_t, present),
     .section = &sp_tls_server_schema},
    {.key = "keepalive", .type = SP_CFG_SECTION,
     .offset = offsetof(sp_otlp_grpc_cfg_t, keepalive), .section = &sp__keepalive_outer_schema},
};
static const sp_cfg_schema_t sp__grpc_schema = {sp__grpc_fields, 4, sizeof(sp_otlp_grpc_cfg_t),
                                                NULL};

static const sp_cfg_field_t sp__cors_fields[] = {
    {.key = "allowed_origins", .type = SP_CFG_STRLIST,
     .offset = offsetof(sp_otlp_cors_cfg_t, allowed_origins)},
    {.key = "allowed_headers", .type = SP_CFG_STRLIST,
     .offset = offsetof(sp_otlp_cors_cfg_t, allowed_headers)},
    {.key = "max_age", .type = SP_CFG_INT, .offset = offsetof(sp_otlp_cors_cfg_t, max_age),
     .def = "0", .min = 0, .max = 86400 * 7},
};
static const sp_cfg_schema_t sp__cors_schema = {sp__cors_fields, 3, sizeof(sp_otlp_cors_cfg_t),
                                                NULL};

static int sp__http_validate(void *cfg, const sp_node_t *node, const char *path,
                             sp_errors_t *errs) {
  sp_otlp_http_cfg_t *c = cfg;
  int rc = 0;
  if (c->traces_url_path != NULL && c->traces_url_path[0] != '/') {
    sp_errors_add(errs, node ? &node->mark : NULL, path, "traces_url_path must start with /");
    rc = SP_ECONFIG;
  }
  if (c->profiles_url_path != NULL && c->profiles_url_path[0] != '/') {
    sp_errors_add(errs, node ? &node->mark : NULL, path, "profiles_url_path must start with /");
    rc = SP_ECONFIG;
  }
  return rc;
}

static const sp_cfg_field_t sp__http_fields[] = {
    {.key = "endpoint", .type = SP_CFG_STRING, .offset = offsetof(sp_otlp_http_cfg_t, endpoint),
     .def = "127.0.0.1:4318", .flags = SP_CFG_NONEMPTY},
    {.key = "max_request_body_size", .type = SP_CFG_SIZE,
     .offset = offsetof(sp_otlp_http_cfg_t, max_request_body_size), .def = "20MiB", .min = 1024,
     .max = 1024.0 * 1024 * 1024},
    {.key = "tls", .type = SP_CFG_SECTION, .offset = offsetof(sp_otlp_http_cfg_t, tls),
     .flags = SP_CFG_PRESENT, .present_offset = offsetof(sp_tls_config_t, present),
     .section = &sp_tls_server_schema},
    {.key = "cors", .type = SP_CFG_SECTION, .offset = offsetof(sp_otlp_http_cfg_t, cors),
     .section = &sp__cors_schema},
    {.key = "traces_url_path", .type = SP_CFG_STRING,
     .offset = offsetof(sp_otlp_http_cfg_t, traces_url_path), .def = "/v1/traces",
     .flags = SP_CFG_NONEMPTY},
    {.key = "profiles_url_path", .type = SP_CFG_STRING,
     .offset = offsetof(sp_otlp_http_cfg_t, profiles_url_path), .def = "/v1development/profiles",
     .flags = SP_CFG_NONEMPTY},
};
static const sp_cfg_schema_t sp__http_schema = {sp__http_fields, 6, sizeof(sp_otlp_http_cfg_t),
                                                sp__http_validate};

static int sp__protocols_validate(void *cfg, const sp_node_t *node, const char *path,
                                  sp_errors_t *errs) {
  const sp_otlp_cfg_t *c = cfg; /* protocols is the first member */
  if (!c->protocols.grpc.present && !c->protocols.http.present) {
    sp_errors_add(errs, node ? &node->mark : NULL, path,
                  "at least one protocol (grpc or http) must be configured");
    return SP_ECONFIG;
  }
  return 0;
}

static const sp_cfg_field_t sp__protocols_fields[] = {
    {.key = "grpc", .type = SP_CFG_SECTION, .offset = 0, .flags = SP_CFG_PRESENT,
     .present_offset = offsetof(sp_otlp_grpc_cfg_t, present), .section = &sp__grpc_schema},
    {.key = "http", .type = SP_CFG_SECTION, .offset = sizeof(sp_otlp_grpc_cfg_t),
     .flags = SP_CFG_PRESENT, .present_offset = offsetof(sp_otlp_http_cfg_t, present),
     .section = &sp__http_schema},
};
static const sp_cfg_schema_t sp__protocols_schema = {
    sp__protocols_fields, 2, sizeof(((sp_otlp_cfg_t *)0)->protocols), sp__protocols_validate};

_Static_assert(offsetof(sp_otlp_cfg_t, protocols.http) ==
                   offsetof(sp_otlp_cfg_t, protocols) + sizeof(sp_otlp_grpc_cfg_t),
               "protocols.http follows protocols.grpc");

static const sp_cfg_field_t sp__otlp_fields[] = {
    {.key = "protocols", .type = SP_CFG_SECTION, .offset = offsetof(sp_otlp_cfg_t, protocols),
     .flags = SP_CFG_REQUIRED, .section = &sp__protocols_schema},
};
static const sp_cfg_schema_t sp__otlp_schema = {sp__otlp_fields, 1, sizeof(sp_otlp_cfg_t), NULL};

static void sp__metrics_init(sp_telemetry_t *t, const char *id, const char *transport,
                             sp_otlp_metrics_t *m) {
  sp_receiver_metrics_init(t, id, transport, "spans", &m->spans);
  sp_receiver_metrics_init(t, id, transport, "profiles", &m->profiles);
}

static int sp__otlp_create(const sp_create_settings_t *set, const void *config,
                           sp_component_t **out) {
  sp_otlp_t *self = sp_calloc(1, sizeof(*self));
  if (self == NULL)
    return SP_ENOMEM;
  self->cfg = config;
  self->next_traces = set->next_traces;
  self->next_profiles = set->next_profiles;
  sp__metrics_init(set->host->telemetry, set->id, "http", &self->m_http);
  sp__metrics_init(set->host->telemetry, set->id, "grpc", &self->m_grpc);
  *out = &self->base;
  return 0;
}

static void sp__otlp_server_down(void *arg) {
  sp_otlp_t *self = arg;
  if (--self->pending == 0 && self->cb != NULL) {
    sp_done_cb cb = self->cb;
    self->cb = NULL;
    cb(self->cb_arg);
  }
}

static int sp__otlp_start(sp_component_t *base) {
  sp_otlp_t *self = (sp_otlp_t *)base;
  int rc = 0;
  if (self->cfg->protocols.grpc.present)
    rc = sp__otlp_grpc_start(self);
  if (rc == 0 && self->cfg->protocols.http.present)
    rc = sp__otlp_http_start(self);
  return rc;
}

static void sp__otlp_shutdown(sp_component_t *base, sp_done_cb cb, void *arg) {
  sp_otlp_t *self = (sp_otlp_t *)base;
  if (self->shutting)
    return;
  self->shutting = true;
  self->cb = cb;
  self->cb_arg = arg;
  uint64_t bound = sp_host_receiver_stop_budget(base->host);
  /* One extra count so that servers finishing early cannot complete us inline. */
  self->pending = 1;
  if (self->grpc != NULL) {
    self->pending++;
    sp_grpc_server_shutdown_within(self->grpc, bound, sp__otlp_server_down, self);
  }
  if (self->http != NULL) {
    self->pending++;
    sp_http_server_shutdown_within(self->http, bound, sp__otlp_server_down, self);
  }
  if (sp_defer(base->host->loop, sp__otlp_server_down, self) != 0)
    sp__otlp_server_down(self); /* out of memory: the servers' callbacks still defer */
}

static void sp__otlp_destroy(sp_component_t *base) {
  sp_otlp_t *self = (sp_otlp_t *)base;
  if (self == NULL)
    return;
  sp_grpc_server_destroy(self->grpc);
  sp_http_server_destroy(self->http);
  sp_free(self);
}

const sp_component_def_t sp_receiver_otlp = {
    .kind = SP_KIND_RECEIVER,
    .type = "otlp",
    .signals = SP_SIGNAL_TRACES | SP_SIGNAL_PROFILES,
    .stability = "beta",
    .description = "OTLP traces and profiles over gRPC (4317) and HTTP (4318)",
    .schema = &sp__otlp_schema,
    .config_size = sizeof(sp_otlp_cfg_t),
    .example = "protocols:\n  grpc:\n    endpoint: 127.0.0.1:0\n  http:\n    endpoint: 127.0.0.1:0\n",
    .create = sp__otlp_create,
    .start = sp__otlp_start,
    .shutdown = sp__otlp_shutdown,
    .destroy = sp__otlp_destroy,
};
