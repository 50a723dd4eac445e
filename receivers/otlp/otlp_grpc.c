/*
 * otlp_grpc.c — OTLP/gRPC: the TraceService and ProfilesService Export
 * methods. grpc core decompresses gzip and enforces max_recv_msg_size
 * (RESOURCE_EXHAUSTED) itself; the handler runs on the loop thread.
 *
 * Status codes per the OTLP specification: OK with partial_success when some
 * spans were dropped as invalid, INVALID_ARGUMENT for data that cannot be
 * decoded, UNAVAILABLE with a RetryInfo when the pipeline refuses.
 */
#include "receivers/otlp/otlp.h"

#include "pipeline/buf.h"
#include "pipeline/error.h"
#include "pipeline/log.h"

#include <grpc/status.h>
#include <string.h>

static void sp__grpc_answer(sp_grpc_call_t *call, bool traces, const sp_otlp_result_t *res) {
  if (res->rc == SP_EAGAIN) {
    sp_grpc_respond(call, GRPC_STATUS_UNAVAILABLE, res->message, NULL, 0, 1000);
    return;
  }
  if (res->rc == SP_ETOOBIG) {
    sp_grpc_respond(call, GRPC_STATUS_RESOURCE_EXHAUSTED, res->message, NULL, 0, 0);
    return;
  }
  if (res->rc == SP_ENOTSUP) {
    sp_grpc_respond(call, GRPC_STATUS_UNIMPLEMENTED, res->message, NULL, 0, 0);
    return;
  }
  if (res->rc != 0) {
    sp_grpc_respond(call, GRPC_STATUS_INVALID_ARGUMENT, res->message, NULL, 0, 0);
    return;
  }
  sp_buf_t out;
  sp_buf_init(&out, 0);
  int rc = 0;
  if (traces && res->rejected > 0) {
    Opentelemetry__Proto__Collector__Trace__V1__ExportTraceServiceResponse r =
        OPENTELEMETRY__PROTO__COLLECTOR__TRACE__V1__EXPORT_TRACE_SERVICE_RESPONSE__INIT;
    Opentelemetry__Proto__Collector__Trace__V1__ExportTracePartialSuccess ps =
        OPENTELEMETRY__PROTO__COLLECTOR__TRACE__V1__EXPORT_TRACE_PARTIAL_SUCCESS__INIT;
    ps.rejected_spans = res->rejected;
    ps.error_message = (char *)res->partial_msg;
    r.partial_success = &ps;
    rc = sp__otlp_encode(&r.base, false, &out);
  }
  if (rc != 0)
    sp_grpc_respond(call, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory", NULL, 0, 1000);
  else
    sp_grpc_respond(call, GRPC_STATUS_OK, NULL, out.data != NULL ? out.data : (const uint8_t *)"",
                    out.len, 0);
  sp_buf_free(&out);
}

/*
 * Reads the tenant and authorization metadata. When they cannot be read (out
 * of memory) the call is answered UNAVAILABLE, retryable, and false returned:
 * going on without them would export a tenant's data with no tenant.
 */
static bool sp__grpc_metadata(sp_grpc_call_t *call, const char **tenant, const char **auth) {
  if (sp_grpc_call_metadata_get(call, "x-scope-orgid", tenant) == 0 &&
      sp_grpc_call_metadata_get(call, "authorization", auth) == 0)
    return true;
  sp_grpc_respond(call, GRPC_STATUS_UNAVAILABLE, "out of memory reading the request metadata",
                  NULL, 0, 1000);
  return false;
}

static void sp__grpc_traces(sp_grpc_call_t *call, const uint8_t *msg, size_t len, void *ctx) {
  sp_otlp_t *self = ctx;
  sp_otlp_result_t res;
  const char *tenant, *auth;
  if (!sp__grpc_metadata(call, &tenant, &auth))
    return;
  sp__otlp_ingest_traces(self, &self->m_grpc, msg, len, false, tenant, auth, &res);
  sp__grpc_answer(call, true, &res);
}

static void sp__grpc_profiles(sp_grpc_call_t *call, const uint8_t *msg, size_t len, void *ctx) {
  sp_otlp_t *self = ctx;
  sp_otlp_result_t res;
  const char *tenant, *auth;
  if (!sp__grpc_metadata(call, &tenant, &auth))
    return;
  sp__otlp_ingest_profiles(self, &self->m_grpc, msg, len, false, tenant, auth, &res);
  sp__grpc_answer(call, false, &res);
}

int sp__otlp_grpc_start(sp_otlp_t *self) {
  const sp_otlp_grpc_cfg_t *c = &self->cfg->protocols.grpc;
  sp_grpc_method_t methods[2];
  size_t n = 0;
  if (self->next_traces != NULL)
    methods[n++] = (sp_grpc_method_t){
        "/opentelemetry.proto.collector.trace.v1.TraceService/Export", sp__grpc_traces, self};
  if (self->next_profiles != NULL)
    methods[n++] = (sp_grpc_method_t){
        "/opentelemetry.proto.collector.profiles.v1development.ProfilesService/Export",
        sp__grpc_profiles, self};
  sp_grpc_server_options_t opts = {
      .endpoint = c->endpoint,
      .component = self->base.id,
      .max_recv_msg_size = (size_t)c->max_recv_msg_size_mib << 20,
      .keepalive_time_ms = c->keepalive.server_parameters.time_ms,
      .keepalive_timeout_ms = c->keepalive.server_parameters.timeout_ms,
      .max_connection_idle_ms = c->keepalive.server_parameters.max_connection_idle_ms,
      .tls = c->tls.present ? &c->tls : NULL,
      .methods = methods,
      .n_methods = n,
  };
  int rc = sp_grpc_server_create(self->base.host->loop, &opts, &self->grpc);
  if (rc == 0)
    rc = sp_grpc_server_start(self->grpc);
  if (rc != 0) {
    sp_log_error(self->base.id, "cannot serve OTLP/gRPC on %s: %s", c->endpoint, sp_strerror(rc));
    return rc;
  }
  return 0;
}
