/*
 * otlphttp.h — the otlphttp exporter's decoded configuration (shared by its
 * files and by tests that build one in code).
 */
#ifndef SP_EXPORTER_OTLPHTTP_H
#define SP_EXPORTER_OTLPHTTP_H

#include "pipeline/component.h"
#include "pipeline/exporterhelper.h"
#include "pipeline/otlpprofiles.h"
#include "pipeline/tls.h"

enum { SP_OTLPHTTP_PROTO = 0, SP_OTLPHTTP_JSON = 1 };
enum { SP_OTLPHTTP_GZIP = 0, SP_OTLPHTTP_NONE = 1 };

/**
 * Keys (Collector names): endpoint (base URL; /v1/traces and
 * /v1development/profiles are appended), traces_endpoint and
 * profiles_endpoint (full URLs overriding it), encoding (proto|json),
 * compression (gzip|none, default gzip), compression_params {level: -1..9,
 * default -1: learned tables, pipeline/compress.h}, timeout (5s), headers (map),
 * tls (client schema), sending_queue, retry_on_failure,
 * tenant_from_metadata (false: when true the X-Scope-OrgID received with the
 * data is forwarded), max_conns_per_host (16).
 */
typedef struct sp_otlphttp_cfg_s {
  char *endpoint;
  char *traces_endpoint;
  char *profiles_endpoint;
  int encoding;    /* SP_OTLPHTTP_PROTO / _JSON */
  int compression; /* SP_OTLPHTTP_GZIP / _NONE */
  sp_compression_params_t compression_params;
  uint64_t timeout_ms;
  sp_strmap_t headers;
  sp_tls_config_t tls;
  sp_exporterhelper_queue_cfg_t sending_queue;
  sp_exporterhelper_retry_cfg_t retry_on_failure;
  bool tenant_from_metadata;
  int64_t max_conns_per_host;
} sp_otlphttp_cfg_t;

/** The component definition (registered in pipeline/components.c). */
extern const sp_component_def_t sp_exporter_otlphttp;

#endif
