/*
 * pyroscope.h — the pyroscope exporter: its decoded configuration and the
 * label rules it applies before anything goes on the wire (shared by its
 * files and by tests that call them directly).
 *
 * pyroscope.c holds the component (config table, lifecycle, the sender on
 * the exporter helper, HTTP and response handling); pyroscope_labels.c
 * turns one profile of a batch into what Pyroscope accepts (series labels,
 * sample labels, the pprof bytes to send).
 */
#ifndef SP_EXPORTER_PYROSCOPE_H
#define SP_EXPORTER_PYROSCOPE_H

#include "pipeline/arena.h"
#include "pipeline/batch.h"
#include "pipeline/component.h"
#include "pipeline/config.h"
#include "pipeline/exporterhelper.h"
#include "pipeline/tls.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum { SP_PYROSCOPE_API_PUSH = 0, SP_PYROSCOPE_API_INGEST = 1 };
enum { SP_PYROSCOPE_GZIP = 0, SP_PYROSCOPE_NONE = 1 };

/** Pyroscope's own defaults for its per-tenant validation limits. */
#define SP_PYROSCOPE_MAX_LABEL_NAME_LEN 1024
#define SP_PYROSCOPE_MAX_LABEL_VALUE_LEN 2048
#define SP_PYROSCOPE_MAX_LABEL_NAMES 30

/** `basic_auth` (Grafana Cloud: the stack's user ID and an access token). */
typedef struct sp_pyroscope_basic_auth_s {
  bool present;
  char *username;
  char *password;
} sp_pyroscope_basic_auth_t;

/**
 * Keys: endpoint (base URL of Pyroscope, required), api (push|ingest),
 * compression (gzip|none), compression_params {level: -1..9, default -1:
 * learned tables, pipeline/compress.h},
 * timeout (10s), headers (map), tls (client
 * schema), basic_auth {username, password}, bearer_token, tenant_id
 * (X-Scope-OrgID), tenant_from_metadata (false), external_labels (map),
 * span_name_label (true), max_age (1h; 0: no limit),
 * max_label_name_length (1024), max_label_value_length (2048),
 * max_label_names_per_series (30), sending_queue, retry_on_failure,
 * max_conns_per_host (16).
 */
typedef struct sp_pyroscope_cfg_s {
  char *endpoint;
  int api;         /* SP_PYROSCOPE_API_* */
  int compression; /* SP_PYROSCOPE_GZIP / _NONE */
  sp_compression_params_t compression_params;
  uint64_t timeout_ms;
  sp_strmap_t headers;
  sp_tls_config_t tls;
  sp_pyroscope_basic_auth_t basic_auth;
  char *bearer_token;
  char *tenant_id;
  bool tenant_from_metadata;
  sp_strmap_t external_labels;
  bool span_name_label;
  uint64_t max_age_ms;
  int64_t max_label_name_length;
  int64_t max_label_value_length;
  int64_t max_label_names_per_series;
  sp_exporterhelper_queue_cfg_t sending_queue;
  sp_exporterhelper_retry_cfg_t retry_on_failure;
  int64_t max_conns_per_host;
} sp_pyroscope_cfg_t;

/** The component definition (registered in pipeline/components.c). */
extern const sp_component_def_t sp_exporter_pyroscope;

/* ---- label rules (pyroscope_labels.c) ------------------------------------------ */

/** Why a label was dropped; index into sp_pyroscope_drops_t.n. */
typedef enum {
  SP_PYRO_DROP_INVALID_NAME = 0, /* empty, or nothing valid left after sanitizing */
  SP_PYRO_DROP_NAME_TOO_LONG,
  SP_PYRO_DROP_VALUE_TOO_LONG,
  SP_PYRO_DROP_INVALID_VALUE, /* not UTF-8 */
  SP_PYRO_DROP_DUPLICATE,     /* same name as a label kept before it (after sanitizing) */
  SP_PYRO_DROP_TOO_MANY,      /* past max_label_names_per_series */
  SP_PYRO_DROP_REASONS
} sp_pyroscope_drop_reason_t;

/** Drops counted while preparing profiles, with the first one described for the log. */
typedef struct sp_pyroscope_drops_s {
  size_t n[SP_PYRO_DROP_REASONS];
  char first[256]; /* "" until the first drop */
} sp_pyroscope_drops_t;

/** The reason's name as used in the dropped-labels metric ("value_too_long", ...). */
const char *sp_pyroscope_drop_reason_name(sp_pyroscope_drop_reason_t r);

/** What sp_pyroscope_prepare() applies. */
typedef struct sp_pyroscope_rules_s {
  size_t max_name_len;                /* 0: SP_PYROSCOPE_MAX_LABEL_NAME_LEN */
  size_t max_value_len;               /* 0: SP_PYROSCOPE_MAX_LABEL_VALUE_LEN */
  size_t max_labels;                  /* 0: SP_PYROSCOPE_MAX_LABEL_NAMES */
  const sp_strmap_t *external_labels; /* may be NULL */
  bool span_name_label;               /* false: span_name is removed from samples */
} sp_pyroscope_rules_t;

/** One profile as it will be sent. Everything points into the caller's arena or the batch. */
typedef struct sp_pyroscope_prepared_s {
  sp_label_t *labels; /* series labels: service_name, __name__, then the rest */
  size_t n_labels;
  const char *service_name;
  const char *profile_type; /* the __name__ value */
  const uint8_t *pprof;     /* uncompressed pprof bytes to send */
  size_t pprof_len;
  bool modified; /* pprof was re-encoded (sample labels changed) */
  int64_t start_ns, end_ns;
} sp_pyroscope_prepared_t;

/**
 * Writes @p name as a Pyroscope label name into @p out (capacity @p cap,
 * NUL-terminated): every byte outside [A-Za-z0-9_] becomes '_' (so
 * `service.namespace` → `service_namespace`, as Pyroscope itself does with
 * dots), and a name starting with a digit gets a leading '_'. Returns the
 * length written, or 0 when @p name is empty or does not fit. Pure.
 */
size_t sp_pyroscope_label_name(const char *name, char *out, size_t cap);

/**
 * Prepares profile @p p of @p batch for Pyroscope (see the rules at the top
 * of pyroscope_labels.c): builds its series labels, checks its sample
 * labels against the same limits (Pyroscope turns them into series labels),
 * and gives the pprof bytes to send — the batch's own bytes when nothing had
 * to change (decided on the encoded bytes, without decoding them), else a
 * re-encoding. The batch is only read (apart from sp_profile_wire() caching
 * the profile's wire index and, for a profile another component modified
 * and left decoded, its encoding): every allocation, including a private decoded copy when
 * samples must change, comes from @p arena. Drops are added to @p drops. Loop thread (or any
 * thread, for a batch nobody else touches meanwhile). Returns 0, SP_EPROTO (the pprof does not
 * decode; @p err says why) or SP_ENOMEM.
 */
int sp_pyroscope_prepare(const sp_pyroscope_rules_t *rules, sp_profiles_t *batch, sp_profile_t *p,
                         sp_arena_t *arena, sp_pyroscope_prepared_t *out,
                         sp_pyroscope_drops_t *drops, char *err, size_t errlen);

#endif
