/*
 * otlp.h — internals shared by the files of the `otlp` receiver.
 *
 * otlp.c holds the config table and lifecycle, otlp_http.c and otlp_grpc.c
 * the two transports, otlp_ingest.c what both share (decode, hand to the
 * pipeline, map the result to a status), otlp_profiles.c the conversion of
 * OTLP profiles into the internal profiles form.
 */
#ifndef SP_RECEIVER_OTLP_H
#define SP_RECEIVER_OTLP_H

#include "pipeline/component.h"
#include "pipeline/tls.h"
#include "pipeline/transport/grpc_server.h"
#include "pipeline/transport/http_server.h"

#include "opentelemetry/proto/collector/profiles/v1development/profiles_service.pb-c.h"

typedef Opentelemetry__Proto__Collector__Profiles__V1development__ExportProfilesServiceRequest
    sp_otlp_profiles_req_t;

typedef struct sp_otlp_keepalive_cfg_s {
  uint64_t time_ms;
  uint64_t timeout_ms;
  uint64_t max_connection_idle_ms;
} sp_otlp_keepalive_cfg_t;

typedef struct sp_otlp_grpc_cfg_s {
  bool present;
  char *endpoint;
  int64_t max_recv_msg_size_mib;
  sp_tls_config_t tls;
  struct {
    sp_otlp_keepalive_cfg_t server_parameters;
  } keepalive;
} sp_otlp_grpc_cfg_t;

typedef struct sp_otlp_cors_cfg_s {
  sp_strlist_t allowed_origins;
  sp_strlist_t allowed_headers;
  int64_t max_age;
} sp_otlp_cors_cfg_t;

typedef struct sp_otlp_http_cfg_s {
  bool present;
  char *endpoint;
  uint64_t max_request_body_size;
  sp_tls_config_t tls;
  sp_otlp_cors_cfg_t cors;
  char *traces_url_path;
  char *profiles_url_path;
} sp_otlp_http_cfg_t;

typedef struct sp_otlp_cfg_s {
  struct {
    sp_otlp_grpc_cfg_t grpc;
    sp_otlp_http_cfg_t http;
  } protocols;
} sp_otlp_cfg_t;

/* Per-transport counters, one set per signal. */
typedef struct sp_otlp_metrics_s {
  sp_receiver_metrics_t spans;
  sp_receiver_metrics_t profiles;
} sp_otlp_metrics_t;

typedef struct sp_otlp_s {
  sp_component_t base;
  const sp_otlp_cfg_t *cfg;
  sp_consumer_t *next_traces;
  sp_consumer_t *next_profiles;
  sp_http_server_t *http;
  sp_grpc_server_t *grpc;
  sp_otlp_metrics_t m_http, m_grpc;
  int pending;
  bool shutting;
  sp_done_cb cb;
  void *cb_arg;
} sp_otlp_t;

/** What ingesting one request came to, for the transport to answer. */
typedef struct sp_otlp_result_s {
  int rc;                 /* 0, SP_EAGAIN (refused, retryable), SP_EPROTO (bad data), other */
  char message[512];      /* why, for the sender */
  int64_t rejected;       /* partial success: items dropped as invalid */
  char partial_msg[256];
} sp_otlp_result_t;

/**
 * Decodes a traces request (protobuf, or OTLP/JSON when @p json) and hands it
 * to the traces pipeline. @p tenant/@p authorization may be NULL.
 */
void sp__otlp_ingest_traces(sp_otlp_t *self, const sp_otlp_metrics_t *m, const uint8_t *body,
                            size_t len, bool json, const char *tenant,
                            const char *authorization, sp_otlp_result_t *res);

/**
 * sp__otlp_ingest_traces() for a body the caller owns (sp_malloc'd, e.g.
 * from sp_http_request_take_body()): the call takes it over whatever the
 * outcome, and a protobuf body becomes the batch's bytes without a copy.
 */
void sp__otlp_ingest_traces_owned(sp_otlp_t *self, const sp_otlp_metrics_t *m, uint8_t *body,
                                  size_t len, bool json, const char *tenant,
                                  const char *authorization, sp_otlp_result_t *res);

/** Same for an ExportProfilesServiceRequest. */
void sp__otlp_ingest_profiles(sp_otlp_t *self, const sp_otlp_metrics_t *m, const uint8_t *body,
                              size_t len, bool json, const char *tenant,
                              const char *authorization, sp_otlp_result_t *res);

/**
 * Converts a decoded OTLP profiles request into @p out (appending one
 * sp_profile_t per OTLP Profile). @p err gets a message on SP_EPROTO.
 * 0, SP_EPROTO or SP_ENOMEM.
 */
int sp__otlp_profiles_convert(const sp_otlp_profiles_req_t *req, sp_profiles_t *out, char *err,
                              size_t errlen);

int sp__otlp_http_start(sp_otlp_t *self);
int sp__otlp_grpc_start(sp_otlp_t *self);

/** Encodes a response message in protobuf or OTLP/JSON into @p out. 0 or SP_ENOMEM. */
int sp__otlp_encode(const ProtobufCMessage *msg, bool json, sp_buf_t *out);

#endif
