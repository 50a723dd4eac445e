/*
 * otlp exporter — sends traces and profiles over OTLP/gRPC (what Grafana
 * Tempo ingests on :4317), as the OpenTelemetry Collector's `otlp` exporter
 * does: TraceService/Export and ProfilesService/Export (v1development).
 *
 * An unchanged traces batch goes out as the bytes it arrived as; profiles
 * are converted to an ExportProfilesServiceRequest once per batch (kept
 * across retries). gzip, when configured, is grpc core's own message
 * compression, done on its threads. Calls run on the grpc core client
 * (pipeline/transport/grpc_client.h, its own channel and completion-queue
 * thread); the exporter helper (pipeline/exporterhelper.h) queues, retries
 * and drains.
 *
 * Status codes, per the OTLP specification: CANCELLED, DEADLINE_EXCEEDED,
 * ABORTED, OUT_OF_RANGE, UNAVAILABLE, DATA_LOSS are retried, and
 * RESOURCE_EXHAUSTED only when the server sent a RetryInfo (whose delay is
 * honoured); every other code is permanent. An OK response's
 * partial_success is logged and its rejected items counted, never retried.
 */
#include "exporters/otlp/otlp.h"

#include "pipeline/alloc.h"
#include "pipeline/buf.h"
#include "pipeline/error.h"
#include "pipeline/log.h"
#include "pipeline/otlpprofiles.h"
#include "pipeline/transport/grpc_client.h"

#include <stdio.h>
#include <string.h>

#define SP_OTLP_TRACES_METHOD "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
#define SP_OTLP_PROFILES_METHOD                                                                    \
  "/opentelemetry.proto.collector.profiles.v1development.ProfilesService/Export"

/* ---- configuration ---------------------------------------------------------- */

static const sp_cfg_field_t sp__keepalive_fields[] = {
    {.key = "time",
     .type = SP_CFG_DURATION,
     .offset = offsetof(sp_otlpexp_keepalive_cfg_t, time_ms),
     .def = "0"},
    {.key = "timeout",
     .type = SP_CFG_DURATION,
     .offset = offsetof(sp_otlpexp_keepalive_cfg_t, timeout_ms),
     .def = "20s"},
    {.key = "permit_without_stream",
     .type = SP_CFG_BOOL,
     .offset = offsetof(sp_otlpexp_keepalive_cfg_t, permit_without_stream),
     .def = "false"},
};
static const sp_cfg_schema_t sp__keepalive_schema = {sp__keepalive_fields, 3,
                                                     sizeof(sp_otlpexp_keepalive_cfg_t), NULL};

static int sp__otlp_validate(void *cfg, const sp_node_t *node, const char *path,
                             sp_errors_t *errs) {
  const sp_otlpexp_cfg_t *c = cfg;
  const char *e = c->endpoint;
  if (strncmp(e, "http://", 7) == 0)
    e += 7;
  else if (strncmp(e, "https://", 8) == 0)
    e += 8;
  const char *colon = strrchr(e, ':');
  if (colon == NULL || colon[1] == '\0' || strchr(e, '/') != NULL) {
    const sp_node_t *v = sp_node_get(node, "endpoint");
    sp_errors_add(errs,
                  v      ? &v->mark
                  : node ? &node->mark
                         : NULL,
                  path, "endpoint must be host:port, got \"%s\"", c->endpoint);
    return SP_ECONFIG;
  }
  return 0;
}

static const sp_cfg_field_t sp__otlp_fields[] = {
    {.key = "endpoint",
     .type = SP_CFG_STRING,
     .offset = offsetof(sp_otlpexp_cfg_t, endpoint),
     .flags = SP_CFG_REQUIRED | SP_CFG_NONEMPTY},
    {.key = "compression",
     .type = SP_CFG_ENUM,
     .offset = offsetof(sp_otlpexp_cfg_t, compression),
     .def = "gzip",
     .enum_values = sp_exporterhelper_compressions},
    {.key = "timeout",
     .type = SP_CFG_DURATION,
     .offset = offsetof(sp_otlpexp_cfg_t, timeout_ms),
     .def = "5s",
     .min = 1,
     .max = 3600000},
    {.key = "keepalive",
     .type = SP_CFG_SECTION,
     .offset = offsetof(sp_otlpexp_cfg_t, keepalive),
     .section = &sp__keepalive_schema},
    SP_EXPORTERHELPER_COMMON_FIELDS(sp_otlpexp_cfg_t),
    {.key = "max_recv_msg_size",
     .type = SP_CFG_SIZE,
     .offset = offsetof(sp_otlpexp_cfg_t, max_recv_msg_size),
     .def = "4MiB",
     .min = 1024,
     .max = 1e9},
};

static const sp_cfg_schema_t sp__otlp_schema = {
    .fields = sp__otlp_fields,
    .n_fields = sizeof(sp__otlp_fields) / sizeof(sp__otlp_fields[0]),
    .size = sizeof(sp_otlpexp_cfg_t),
    .validate = sp__otlp_validate,
};

/* ---- instance --------------------------------------------------------------- */

typedef struct sp_otlpexp_s {
  sp_component_t base;
  const sp_otlpexp_cfg_t *cfg;
  sp_exporterhelper_t *helper;
  sp_grpc_client_t *client;
  const char *target;  /* points into cfg->endpoint, past any scheme */
  sp_tls_config_t tls; /* cfg->tls, with insecure forced by an http:// endpoint */
  sp_grpc_metadata_t *headers;
  size_t n_headers;
  bool shut; /* shutdown was called: start must not open the client */
} sp_otlpexp_t;

/* Per-batch state kept across attempts (item.user). */
typedef struct sp_otlpexp_req_s {
  sp_otlpexp_t *self;
  sp_buf_t body; /* profiles only: the encoded request */
  sp_exporterhelper_done_cb done;
  void *token;
  unsigned signal;
} sp_otlpexp_req_t;

static void sp__partial_success(const sp_grpc_client_result_t *res, unsigned signal,
                                size_t *rejected, char *msg, size_t cap) {
  *rejected = 0;
  msg[0] = '\0';
  if (res->resp == NULL || res->resp_len == 0) return;
  sp_arena_t *arena = sp_arena_create(0);
  if (arena == NULL) return;
  int64_t n = 0;
  const char *text = NULL;
  if (signal == SP_SIGNAL_TRACES) {
    const Opentelemetry__Proto__Collector__Trace__V1__ExportTraceServiceResponse *r =
        opentelemetry__proto__collector__trace__v1__export_trace_service_response__unpack(
            sp_arena_pbc(arena), res->resp_len, res->resp);
    if (r != NULL && r->partial_success != NULL) {
      n = r->partial_success->rejected_spans;
      text = r->partial_success->error_message;
    }
  } else {
    const Opentelemetry__Proto__Collector__Profiles__V1development__ExportProfilesServiceResponse *r =
        opentelemetry__proto__collector__profiles__v1development__export_profiles_service_response__unpack(
            sp_arena_pbc(arena), res->resp_len, res->resp);
    if (r != NULL && r->partial_success != NULL) {
      n = r->partial_success->rejected_profiles;
      text = r->partial_success->error_message;
    }
  }
  *rejected = n > 0 ? (size_t)n : 0;
  if (text != NULL) snprintf(msg, cap, "%s", text);
  sp_arena_destroy(arena);
}

static void sp__on_reply(const sp_grpc_client_result_t *res, void *arg) {
  sp_otlpexp_req_t *r = arg;
  char msg[512];
  sp_exporterhelper_result_t out = {0};
  out.err = sp_grpc_client_result_err(res);
  if (out.err == 0) {
    sp__partial_success(res, r->signal, &out.rejected, msg, sizeof(msg));
  } else {
    snprintf(msg, sizeof(msg), "%s%s%s", sp_grpc_status_name(res->status),
             res->message[0] ? ": " : "", res->message);
    out.retry_after_ms = res->retry_after_ms;
  }
  out.message = msg;
  r->done(r->token, &out);
}

static int sp__otlp_send(void *ctx, sp_exporterhelper_item_t *item, sp_exporterhelper_done_cb done,
                         void *token) {
  sp_otlpexp_t *self = ctx;
  if (self->client == NULL) return SP_ECANCELED;
  sp_otlpexp_req_t *r = item->user;
  if (r == NULL) {
    r = sp_calloc(1, sizeof(*r));
    if (r == NULL) return SP_EAGAIN;
    r->self = self;
    r->signal = item->signal;
    sp_buf_init(&r->body, 0);
    if (item->signal == SP_SIGNAL_PROFILES) {
      sp_arena_t *arena = sp_arena_create(0);
      sp_otlpprofiles_req_t *req = NULL;
      int rc = arena == NULL ? SP_ENOMEM : sp_otlpprofiles_from_batch(item->profiles, arena, &req);
      if (rc == 0) {
        size_t n = protobuf_c_message_get_packed_size(&req->base);
        rc = sp_buf_reserve(&r->body, n > 0 ? n : 1);
        if (rc == 0) r->body.len = protobuf_c_message_pack(&req->base, r->body.data);
      }
      sp_arena_destroy(arena);
      if (rc != 0) {
        /* Nothing is kept: the retry encodes again rather than sending the
         * empty body (which a backend would accept as zero profiles). */
        sp_buf_free(&r->body);
        sp_free(r);
        sp_log_error(self->base.id, "cannot encode profiles: %s", sp_strerror(rc));
        return rc == SP_ENOMEM ? SP_EAGAIN : rc;
      }
    }
    item->user = r; /* only once the body is complete */
  }
  const uint8_t *body;
  size_t len;
  const char *method;
  const sp_meta_t *meta;
  if (item->signal == SP_SIGNAL_TRACES) {
    int rc = sp_traces_encoded(item->traces, &body, &len);
    if (rc != 0) return SP_EAGAIN;
    method = SP_OTLP_TRACES_METHOD;
    meta = &item->traces->meta;
  } else {
    body = r->body.data;
    len = r->body.len;
    method = SP_OTLP_PROFILES_METHOD;
    meta = &item->profiles->meta;
  }
  sp_grpc_metadata_t extra[1];
  size_t n_extra = 0;
  if (self->cfg->tenant_from_metadata && meta->tenant != NULL && meta->tenant[0] != '\0')
    extra[n_extra++] = (sp_grpc_metadata_t){"x-scope-orgid", meta->tenant};
  r->done = done;
  r->token = token;
  int rc = sp_grpc_client_call(self->client, method, body, len, self->cfg->timeout_ms, extra,
                               n_extra, sp__on_reply, r);
  if (rc == SP_ESHUTDOWN) return SP_ECANCELED;
  if (rc == SP_ENOMEM || rc == SP_EIO) return SP_EAGAIN;
  return rc;
}

static void sp__otlp_release(void *ctx, sp_exporterhelper_item_t *item) {
  (void)ctx;
  sp_otlpexp_req_t *r = item->user;
  if (r == NULL) return;
  sp_buf_free(&r->body);
  sp_free(r);
  item->user = NULL;
}

/*
 * The helper has drained (or the deadline passed with requests in flight):
 * close the client, which ends whatever is still in flight; the helper
 * reports its shutdown after @p done.
 */
static void sp__otlp_close(void *ctx, void (*done)(void *arg), void *arg) {
  sp_otlpexp_t *self = ctx;
  sp_grpc_client_shutdown(self->client, done, arg);
}

static const sp_exporterhelper_sender_t sp__otlp_sender = {
    .send = sp__otlp_send,
    .close = sp__otlp_close,
    .release = sp__otlp_release,
};

static void sp__otlp_destroy(sp_component_t *base);

static int sp__otlp_create(const sp_create_settings_t *set, const void *config,
                           sp_component_t **out) {
  const sp_otlpexp_cfg_t *cfg = config;
  sp_otlpexp_t *self = sp_calloc(1, sizeof(*self));
  int rc = SP_ENOMEM;
  if (self == NULL) return SP_ENOMEM;
  self->cfg = cfg;
  self->tls = cfg->tls;
  self->target = cfg->endpoint;
  if (strncmp(cfg->endpoint, "http://", 7) == 0) {
    self->target += 7;
    self->tls.insecure = true;
  } else if (strncmp(cfg->endpoint, "https://", 8) == 0) {
    self->target += 8;
  }
  if (cfg->headers.n > 0) {
    self->headers = sp_calloc(cfg->headers.n, sizeof(*self->headers));
    if (self->headers == NULL) goto fail;
    for (size_t i = 0; i < cfg->headers.n; i++)
      self->headers[i] = (sp_grpc_metadata_t){cfg->headers.keys[i], cfg->headers.values[i]};
    self->n_headers = cfg->headers.n;
  }
  sp_exporterhelper_options_t ho = {.id = set->id,
                                    .host = set->host,
                                    .queue = &cfg->sending_queue,
                                    .retry = &cfg->retry_on_failure,
                                    .sender = &sp__otlp_sender,
                                    .sender_ctx = self};
  rc = sp_exporterhelper_create(&ho, &self->helper);
  if (rc != 0) {
    sp_log_error(set->id, "cannot create the sending queue: %s", sp_strerror(rc));
    goto fail;
  }
  self->base.input = sp_exporterhelper_consumer(self->helper);
  *out = &self->base;
  return 0;
fail:
  sp__otlp_destroy(&self->base);
  return rc;
}

static int sp__otlp_start(sp_component_t *base) {
  sp_otlpexp_t *self = (sp_otlpexp_t *)base;
  if (self->client != NULL || self->shut) return SP_ESTATE;
  const sp_otlpexp_cfg_t *cfg = self->cfg;
  sp_grpc_client_options_t o = {
      .target = self->target,
      .component = base->id,
      .tls = &self->tls,
      .compression =
          cfg->compression == SP_OTLPEXP_GZIP ? SP_GRPC_COMPRESSION_GZIP : SP_GRPC_COMPRESSION_NONE,
      .max_recv_msg_size = (size_t)cfg->max_recv_msg_size,
      .keepalive_time_ms = cfg->keepalive.time_ms,
      .keepalive_timeout_ms = cfg->keepalive.timeout_ms,
      .keepalive_permit_without_calls = cfg->keepalive.permit_without_stream,
      .headers = self->headers,
      .n_headers = self->n_headers,
  };
  int rc = sp_grpc_client_create(base->host->loop, &o, &self->client);
  if (rc != 0) {
    sp_log_error(base->id, "cannot create the gRPC client for %s: %s", self->target,
                 sp_strerror(rc));
    self->client = NULL;
    return rc;
  }
  rc = sp_exporterhelper_start(self->helper);
  if (rc != 0) sp_log_error(base->id, "cannot start the sending queue: %s", sp_strerror(rc));
  return rc;
}

static void sp__otlp_shutdown(sp_component_t *base, sp_done_cb cb, void *arg) {
  sp_otlpexp_t *self = (sp_otlpexp_t *)base;
  self->shut = true;
  /* Drains, then closes the client through the sender's close hook; idempotent. */
  sp_exporterhelper_shutdown(self->helper, cb, arg);
}

static void sp__otlp_destroy(sp_component_t *base) {
  sp_otlpexp_t *self = (sp_otlpexp_t *)base;
  if (self == NULL) return;
  sp_exporterhelper_destroy(self->helper);
  sp_grpc_client_destroy(self->client);
  sp_free(self->headers);
  sp_free(self);
}

static const char *const sp__otlp_aliases[] = {"otlp_grpc", NULL};

const sp_component_def_t sp_exporter_otlp = {
    .kind = SP_KIND_EXPORTER,
    .type = "otlp",
    .aliases = sp__otlp_aliases,
    .signals = SP_SIGNAL_TRACES | SP_SIGNAL_PROFILES,
    .stability = "development",
    .description = "sends traces and profiles over OTLP/gRPC (Tempo, gateways), with queue and "
                   "retry",
    .schema = &sp__otlp_schema,
    .config_size = sizeof(sp_otlpexp_cfg_t),
    .example = "endpoint: 127.0.0.1:4317\ntls: {insecure: true}\n",
    .create = sp__otlp_create,
    .start = sp__otlp_start,
    .shutdown = sp__otlp_shutdown,
    .destroy = sp__otlp_destroy,
};
