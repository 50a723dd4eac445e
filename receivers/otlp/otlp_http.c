/*
 * otlp_http.c — OTLP/HTTP: POST protobuf or JSON to /v1/traces and
 * /v1development/profiles, answered in the request's own encoding.
 *
 * Status codes follow the OTLP/HTTP specification and the Collector: 200 with
 * an Export*ServiceResponse (partial_success when spans were dropped as
 * invalid), 400 with a google.rpc.Status for data that cannot be decoded,
 * 413 over the size limit, 415 for other content types, 404 for unknown
 * paths, 405 for other methods, and 503 + Retry-After when the pipeline
 * refuses (the sender retries).
 */
#include "receivers/otlp/otlp.h"

#include "pipeline/alloc.h"
#include "pipeline/buf.h"
#include "pipeline/error.h"
#include "pipeline/log.h"

#include "google/rpc/status.pb-c.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

enum { SP_CT_NONE = 0, SP_CT_PROTO, SP_CT_JSON, SP_CT_OTHER };

/* gRPC codes carried in google.rpc.Status bodies. */
enum { SP_GRPC_INVALID_ARGUMENT = 3, SP_GRPC_NOT_FOUND = 5, SP_GRPC_RESOURCE_EXHAUSTED = 8,
       SP_GRPC_UNIMPLEMENTED = 12, SP_GRPC_INTERNAL = 13, SP_GRPC_UNAVAILABLE = 14 };

static int sp__content_type(const char *ct) {
  if (ct == NULL || ct[0] == '\0')
    return SP_CT_NONE;
  size_t n = strcspn(ct, ";");
  while (n > 0 && (ct[n - 1] == ' ' || ct[n - 1] == '\t'))
    n--;
  if ((n == 22 && strncasecmp(ct, "application/x-protobuf", n) == 0) ||
      (n == 20 && strncasecmp(ct, "application/protobuf", n) == 0))
    return SP_CT_PROTO;
  if (n == 16 && strncasecmp(ct, "application/json", n) == 0)
    return SP_CT_JSON;
  return SP_CT_OTHER;
}

static int sp__grpc_code_for(int http_status) {
  switch (http_status) {
  case 404:
    return SP_GRPC_NOT_FOUND;
  case 413:
    return SP_GRPC_RESOURCE_EXHAUSTED;
  case 503:
    return SP_GRPC_UNAVAILABLE;
  case 501:
    return SP_GRPC_UNIMPLEMENTED;
  default:
    return http_status >= 500 ? SP_GRPC_INTERNAL : SP_GRPC_INVALID_ARGUMENT;
  }
}

/* Answers with a google.rpc.Status body in the request's encoding. */
static void sp__respond_status(sp_http_request_t *req, int status, bool json, const char *msg,
                               const sp_http_header_t *extra, size_t n_extra) {
  Google__Rpc__Status st = GOOGLE__RPC__STATUS__INIT;
  st.code = sp__grpc_code_for(status);
  st.message = (char *)msg;
  sp_buf_t out;
  sp_buf_init(&out, 0);
  if (sp__otlp_encode(&st.base, json, &out) != 0) {
    sp_http_respond(req, status, "text/plain; charset=utf-8", msg, strlen(msg), extra, n_extra);
  } else {
    sp_http_respond(req, status, json ? "application/json" : "application/x-protobuf", out.data,
                    out.len, extra, n_extra);
  }
  sp_buf_free(&out);
}

static void sp__respond_text(sp_http_request_t *req, int status, const char *msg,
                             const sp_http_header_t *extra, size_t n_extra) {
  sp_http_respond(req, status, "text/plain; charset=utf-8", msg, strlen(msg), extra, n_extra);
}

static void sp__respond_ok(sp_http_request_t *req, bool json, bool traces,
                           const sp_otlp_result_t *res) {
  sp_buf_t out;
  sp_buf_init(&out, 0);
  int rc;
  if (traces) {
    Opentelemetry__Proto__Collector__Trace__V1__ExportTraceServiceResponse r =
        OPENTELEMETRY__PROTO__COLLECTOR__TRACE__V1__EXPORT_TRACE_SERVICE_RESPONSE__INIT;
    Opentelemetry__Proto__Collector__Trace__V1__ExportTracePartialSuccess ps =
        OPENTELEMETRY__PROTO__COLLECTOR__TRACE__V1__EXPORT_TRACE_PARTIAL_SUCCESS__INIT;
    if (res->rejected > 0) {
      ps.rejected_spans = res->rejected;
      ps.error_message = (char *)res->partial_msg;
      r.partial_success = &ps;
    }
    rc = sp__otlp_encode(&r.base, json, &out);
  } else {
    Opentelemetry__Proto__Collector__Profiles__V1development__ExportProfilesServiceResponse r =
        OPENTELEMETRY__PROTO__COLLECTOR__PROFILES__V1DEVELOPMENT__EXPORT_PROFILES_SERVICE_RESPONSE__INIT;
    rc = sp__otlp_encode(&r.base, json, &out);
  }
  if (rc != 0)
    sp__respond_text(req, 500, "out of memory", NULL, 0);
  else
    sp_http_respond(req, 200, json ? "application/json" : "application/x-protobuf", out.data,
                    out.len, NULL, 0);
  sp_buf_free(&out);
}

static void sp__otlp_http_handler(sp_http_request_t *req, void *ctx) {
  sp_otlp_t *self = ctx;
  const sp_otlp_cfg_t *cfg = self->cfg;
  const sp_otlp_metrics_t *m = &self->m_http;
  int ct = sp__content_type(sp_http_request_header(req, "content-type"));
  bool json = ct == SP_CT_JSON;
  if (req->error_status != 0) {
    sp_metric_add(m->spans.bad_requests, 1);
    if (req->error_status == 415)
      sp__respond_text(req, 415, req->error_message, NULL, 0);
    else
      sp__respond_status(req, req->error_status, json, req->error_message, NULL, 0);
    return;
  }
  bool traces = strcmp(req->path, cfg->protocols.http.traces_url_path) == 0;
  bool profiles = !traces && strcmp(req->path, cfg->protocols.http.profiles_url_path) == 0;
  if ((!traces && !profiles) || (traces && self->next_traces == NULL) ||
      (profiles && self->next_profiles == NULL)) {
    sp_metric_add(m->spans.bad_requests, 1);
    sp__respond_text(req, 404, "404 page not found", NULL, 0);
    return;
  }
  if (strcmp(req->method, "POST") != 0) {
    static const sp_http_header_t allow[] = {{"Allow", "POST"}};
    char msg[128];
    snprintf(msg, sizeof(msg), "%s method not allowed, supported: [POST]", req->method);
    sp_metric_add(m->spans.bad_requests, 1);
    sp__respond_text(req, 405, msg, allow, 1);
    return;
  }
  if (ct != SP_CT_PROTO && ct != SP_CT_JSON) {
    sp_metric_add(m->spans.bad_requests, 1);
    sp__respond_text(req, 415,
                     "415 unsupported media type, supported: [application/json, "
                     "application/x-protobuf]",
                     NULL, 0);
    return;
  }
  sp_otlp_result_t res;
  const char *tenant = sp_http_request_header(req, "x-scope-orgid");
  const char *auth = sp_http_request_header(req, "authorization");
  if (traces) {
    size_t len;
    uint8_t *body = sp_http_request_take_body(req, &len);
    sp__otlp_ingest_traces_owned(self, m, body, len, json, tenant, auth, &res);
  } else {
    sp__otlp_ingest_profiles(self, m, req->body, req->body_len, json, tenant, auth, &res);
  }
  if (res.rc == 0) {
    sp__respond_ok(req, json, traces, &res);
  } else if (res.rc == SP_ETOOBIG) {
    sp__respond_status(req, 413, json, res.message, NULL, 0);
  } else if (res.rc == SP_EAGAIN) {
    static const sp_http_header_t retry[] = {{"Retry-After", "1"}};
    sp__respond_status(req, 503, json, res.message, retry, 1);
  } else {
    sp_log_debug(self->base.id, "rejected request from %s: %s", req->remote_addr, res.message);
    sp__respond_status(req, 400, json, res.message, NULL, 0);
  }
}

int sp__otlp_http_start(sp_otlp_t *self) {
  const sp_otlp_http_cfg_t *c = &self->cfg->protocols.http;
  sp_http_cors_t cors = {
      .allowed_origins = (const char *const *)c->cors.allowed_origins.items,
      .n_allowed_origins = c->cors.allowed_origins.n,
      .allowed_headers = (const char *const *)c->cors.allowed_headers.items,
      .n_allowed_headers = c->cors.allowed_headers.n,
      .max_age = (int)c->cors.max_age,
  };
  sp_http_server_options_t opts = {
      .endpoint = c->endpoint,
      .component = self->base.id,
      .max_body_size = c->max_request_body_size,
      .tls = c->tls.present ? &c->tls : NULL,
      .cors = c->cors.allowed_origins.n > 0 ? &cors : NULL,
      .handler = sp__otlp_http_handler,
      .handler_ctx = self,
  };
  int rc = sp_http_server_create(self->base.host->loop, &opts, &self->http);
  if (rc == 0)
    rc = sp_http_server_start(self->http);
  if (rc != 0) {
    sp_log_error(self->base.id, "cannot serve OTLP/HTTP on %s: %s", c->endpoint, sp_strerror(rc));
    return rc;
  }
  return 0;
}
