/*
 * otlp_ingest.c — what the gRPC and HTTP sides of the otlp receiver share:
 * decode a request, attach the sender's tenant, hand it to the pipeline and
 * say how it went. Protobuf traces are only wire-scanned here (see batch.h);
 * JSON is decoded into the batch arena.
 */
#include "receivers/otlp/otlp.h"

#include "pipeline/alloc.h"
#include "pipeline/error.h"
#include "pipeline/log.h"
#include "pipeline/pbjson.h"
#include "pipeline/pbscan.h"

#include <stdio.h>
#include <string.h>

int sp__otlp_encode(const ProtobufCMessage *msg, bool json, sp_buf_t *out) {
  if (json)
    return sp_pbjson_encode(msg, SP_PBJSON_OTLP, out) == 0 ? 0 : SP_ENOMEM;
  size_t n = protobuf_c_message_get_packed_size(msg);
  if (sp_buf_reserve(out, n) != 0)
    return SP_ENOMEM;
  out->len += protobuf_c_message_pack(msg, out->data + out->len);
  return 0;
}

static void sp__set_meta(sp_arena_t *arena, sp_meta_t *meta, const char *tenant,
                         const char *authorization) {
  meta->tenant = tenant != NULL && tenant[0] != '\0' ? sp_arena_strdup(arena, tenant) : NULL;
  meta->authorization = authorization != NULL && authorization[0] != '\0'
                            ? sp_arena_strdup(arena, authorization)
                            : NULL;
}

/* *@p owned (may be NULL): the body's storage, taken over by the batch when it wraps the bytes. */
static void sp__ingest_traces(sp_otlp_t *self, const sp_otlp_metrics_t *m, const uint8_t *body,
                              size_t len, bool json, const char *tenant, const char *authorization,
                              sp_otlp_result_t *res, uint8_t **owned) {
  memset(res, 0, sizeof(*res));
  sp_traces_t *batch = NULL;
  if (self->next_traces == NULL) {
    res->rc = SP_ENOTSUP;
    snprintf(res->message, sizeof(res->message), "no traces pipeline uses receiver %s",
             self->base.id);
    return;
  }
  if (json) {
    sp_arena_t *arena = sp_arena_create(len + 4096);
    ProtobufCMessage *msg = NULL;
    if (arena == NULL) {
      res->rc = SP_EAGAIN;
      snprintf(res->message, sizeof(res->message), "out of memory");
      return;
    }
    /* The decoded message is bounded like the wire scan bounds protobuf. */
    sp_arena_set_limit(arena, sp_pbjson_budget(len));
    int rc = sp_pbjson_decode(
        &opentelemetry__proto__collector__trace__v1__export_trace_service_request__descriptor,
        (const char *)body, len, SP_PBJSON_OTLP, sp_arena_pbc(arena), &msg, res->message,
        sizeof(res->message));
    if (rc == SP_ENOMEM && sp_arena_limited(arena)) {
      rc = SP_ETOOBIG;
      snprintf(res->message, sizeof(res->message),
               "decoding would need more than %d times the request size; send smaller requests",
               SP_PBJSON_COST_FACTOR);
    }
    sp_arena_set_limit(arena, 0); /* the batch may grow later (enrichment) */
    if (rc != 0) {
      sp_arena_destroy(arena);
      res->rc = rc == SP_ENOMEM ? SP_EAGAIN : rc == SP_ETOOBIG ? SP_ETOOBIG : SP_EPROTO;
      sp_metric_add(m->spans.bad_requests, 1);
      return;
    }
    batch = sp_traces_from_request(arena, (sp_otlp_traces_req_t *)msg);
  } else {
    /* Without a copy the batch takes the storage, and frees it on failure too. */
    bool take = owned != NULL && *owned != NULL;
    int rc = sp_traces_from_proto(take ? *owned : (uint8_t *)body, len, !take, &batch, res->message,
                                  sizeof(res->message));
    if (take) *owned = NULL;
    if (rc != 0) {
      /* Out of memory is retryable; a request over the decode budget is too large. */
      res->rc = rc == SP_ENOMEM ? SP_EAGAIN : rc == SP_ETOOBIG ? SP_ETOOBIG : SP_EPROTO;
      if (rc != SP_ENOMEM)
        sp_metric_add(m->spans.bad_requests, 1);
      return;
    }
  }
  if (batch == NULL) {
    res->rc = SP_EAGAIN;
    snprintf(res->message, sizeof(res->message), "out of memory");
    return;
  }
  /* Spans without a valid trace or span ID (empty or all zero) cannot be used: partial success. */
  size_t invalid = 0;
  if (batch->invalid_spans > 0 || json) {
    int rc = sp_traces_drop_invalid(&batch, &invalid);
    if (rc != 0) {
      sp_traces_unref(batch);
      res->rc = SP_EAGAIN;
      snprintf(res->message, sizeof(res->message), "out of memory");
      return;
    }
  }
  if (invalid > 0) {
    res->rejected = (int64_t)invalid;
    snprintf(res->partial_msg, sizeof(res->partial_msg),
             "%zu span(s) rejected: trace_id and span_id must be non-zero", invalid);
    sp_metric_add(m->spans.rejected, invalid);
  }
  sp__set_meta(batch->arena, &batch->meta, tenant, authorization);
  size_t spans = batch->span_count;
  if (spans == 0 && invalid == 0) {
    sp_traces_unref(batch); /* an empty request succeeds and carries nothing */
    return;
  }
  res->rc = sp_consume_traces(self->next_traces, batch);
  if (res->rc == 0) {
    sp_metric_add(m->spans.accepted, spans);
  } else if (res->rc == SP_EAGAIN) {
    sp_metric_add(m->spans.refused, spans);
    snprintf(res->message, sizeof(res->message), "the pipeline is full; retry later");
  } else {
    sp_metric_add(m->spans.rejected, spans);
    snprintf(res->message, sizeof(res->message), "the pipeline rejected the data: %s",
             sp_strerror(res->rc));
  }
}

void sp__otlp_ingest_traces(sp_otlp_t *self, const sp_otlp_metrics_t *m, const uint8_t *body,
                            size_t len, bool json, const char *tenant, const char *authorization,
                            sp_otlp_result_t *res) {
  sp__ingest_traces(self, m, body, len, json, tenant, authorization, res, NULL);
}

void sp__otlp_ingest_traces_owned(sp_otlp_t *self, const sp_otlp_metrics_t *m, uint8_t *body,
                                  size_t len, bool json, const char *tenant,
                                  const char *authorization, sp_otlp_result_t *res) {
  uint8_t *owned = body;
  sp__ingest_traces(self, m, body, len, json, tenant, authorization, res, &owned);
  sp_free(owned);
}

void sp__otlp_ingest_profiles(sp_otlp_t *self, const sp_otlp_metrics_t *m, const uint8_t *body,
                              size_t len, bool json, const char *tenant,
                              const char *authorization, sp_otlp_result_t *res) {
  memset(res, 0, sizeof(*res));
  if (self->next_profiles == NULL) {
    res->rc = SP_ENOTSUP;
    snprintf(res->message, sizeof(res->message), "no profiles pipeline uses receiver %s",
             self->base.id);
    return;
  }
  /* The request is decoded into a scratch arena and converted into the batch's own. */
  sp_arena_t *scratch = sp_arena_create(len + 4096);
  sp_profiles_t *batch = sp_profiles_create();
  sp_otlp_profiles_req_t *req = NULL;
  int rc = SP_ENOMEM;
  if (scratch == NULL || batch == NULL)
    goto done;
  if (json) {
    ProtobufCMessage *msg = NULL;
    sp_arena_set_limit(scratch, sp_pbjson_budget(len));
    rc = sp_pbjson_decode(
        &opentelemetry__proto__collector__profiles__v1development__export_profiles_service_request__descriptor,
        (const char *)body, len, SP_PBJSON_OTLP, sp_arena_pbc(scratch), &msg, res->message,
        sizeof(res->message));
    if (rc == SP_ENOMEM && sp_arena_limited(scratch)) {
      rc = SP_ETOOBIG;
      snprintf(res->message, sizeof(res->message),
               "decoding would need more than %d times the request size; send smaller requests",
               SP_PBJSON_COST_FACTOR);
    }
    req = (sp_otlp_profiles_req_t *)msg;
  } else {
    /*
     * Scan first: protobuf-c's unpack recurses once per nesting level
     * (AnyValue arrays nest without end) and allocates per element; the scan
     * bounds both, and names the place of an error.
     */
    rc = sp_pbscan(
        &opentelemetry__proto__collector__profiles__v1development__export_profiles_service_request__descriptor,
        body, len, NULL, NULL, res->message, sizeof(res->message));
    if (rc == 0) {
      req = opentelemetry__proto__collector__profiles__v1development__export_profiles_service_request__unpack(
          sp_arena_pbc(scratch), len, body);
      rc = req != NULL ? 0 : SP_ENOMEM;
    }
  }
  if (rc == 0)
    rc = sp__otlp_profiles_convert(req, batch, res->message, sizeof(res->message));
  if (rc != 0)
    goto done;
  sp__set_meta(batch->arena, &batch->meta, tenant, authorization);
  size_t n = batch->n;
  if (n == 0)
    goto done;
  rc = sp_consume_profiles(self->next_profiles, batch);
  batch = NULL;
  if (rc == 0)
    sp_metric_add(m->profiles.accepted, n);
  else if (rc == SP_EAGAIN)
    sp_metric_add(m->profiles.refused, n);
  else
    sp_metric_add(m->profiles.rejected, n);
  if (rc == SP_EAGAIN)
    snprintf(res->message, sizeof(res->message), "the pipeline is full; retry later");
  else if (rc != 0)
    snprintf(res->message, sizeof(res->message), "the pipeline rejected the data: %s",
             sp_strerror(rc));
done:
  if (rc == SP_ENOMEM) {
    rc = SP_EAGAIN;
    snprintf(res->message, sizeof(res->message), "out of memory");
  } else if (rc == SP_EPROTO || rc == SP_ETOOBIG) {
    sp_metric_add(m->profiles.bad_requests, 1);
  }
  res->rc = rc;
  sp_profiles_unref(batch);
  sp_arena_destroy(scratch);
}
