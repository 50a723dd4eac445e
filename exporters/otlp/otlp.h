/*
 * otlp.h — the otlp (gRPC) exporter's decoded configuration.
 */
#ifndef SP_EXPORTER_OTLP_H
#define SP_EXPORTER_OTLP_H

#include "pipeline/component.h"
#include "pipeline/exporterhelper.h"
#include "pipeline/tls.h"

enum { SP_OTLPEXP_GZIP = 0, SP_OTLPEXP_NONE = 1 };

/** `keepalive`: time (0 = no pings), timeout (20s), permit_without_stream (false). */
typedef struct sp_otlpexp_keepalive_cfg_s {
  uint64_t time_ms;
  uint64_t timeout_ms;
  bool permit_without_stream;
} sp_otlpexp_keepalive_cfg_t;

/**
 * Keys (Collector names): endpoint (host:port; an http:// or https:// prefix
 * is accepted and removed, http:// meaning plaintext), tls (client schema;
 * TLS unless tls.insecure is true, as in the Collector), headers (map, sent
 * as metadata), compression (gzip|none, default gzip), timeout (5s),
 * keepalive, sending_queue, retry_on_failure, tenant_from_metadata (false:
 * when true the X-Scope-OrgID received with the data is forwarded as
 * x-scope-orgid metadata), max_recv_msg_size (4 MiB).
 */
typedef struct sp_otlpexp_cfg_s {
  char *endpoint;
  sp_tls_config_t tls;
  sp_strmap_t headers;
  int compression; /* SP_OTLPEXP_GZIP / _NONE */
  uint64_t timeout_ms;
  sp_otlpexp_keepalive_cfg_t keepalive;
  sp_exporterhelper_queue_cfg_t sending_queue;
  sp_exporterhelper_retry_cfg_t retry_on_failure;
  bool tenant_from_metadata;
  uint64_t max_recv_msg_size;
} sp_otlpexp_cfg_t;

/** The component definition (registered in pipeline/components.c). */
extern const sp_component_def_t sp_exporter_otlp;

#endif
