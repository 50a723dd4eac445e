/*
 * pyroscope.h — internals shared by the files of the `pyroscope` receiver.
 *
 * pyroscope.c holds the config table, the lifecycle and the HTTP routing;
 * pyroscope_ingest.c the legacy `/ingest` API (query parameters, `name`
 * parsing, timestamps, body formats); pyroscope_multipart.c the
 * multipart/form-data parser for the SDKs' form uploads; pyroscope_folded.c
 * the conversion of folded ("groups") and "lines" text into pprof;
 * pyroscope_push.c the Connect `push.v1.PusherService/Push` API;
 * pyroscope_profile.c what both APIs share: one pprof (gzipped or not) into
 * a batch with its series labels, span labels normalised.
 *
 * Threads. Turning a request into a batch — inflating the pprof, checking
 * it on the wire (pipeline/pprofwire.h; decoding only the uploads whose
 * labels must change), normalising labels — is stateless and was most of the
 * loop's time on the profiles path, so for bodies of at least
 * SP_PYRO_POOL_MIN bytes it runs on libuv's thread pool (uv_queue_work):
 * the handler checks only the method (and Push its content type) on the
 * loop, the work builds a private batch from the request (which the HTTP
 * server keeps unchanged until it is answered) and reads only the
 * immutable config, and the after_work callback, on the loop, hands the
 * batch to the pipeline, counts and answers. The HTTP server answers one
 * request per connection at a time, so responses (and batches) of one
 * connection keep their order, and its shutdown waits for requests not
 * answered yet, so the receiver's shutdown waits for work on the pool
 * without anything more.
 */
#ifndef SP_RECEIVER_PYROSCOPE_H
#define SP_RECEIVER_PYROSCOPE_H

#include "pipeline/component.h"
#include "pipeline/pprof.h"
#include "pipeline/tls.h"
#include "pipeline/transport/http_server.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct sp_pyro_cfg_s {
  char *endpoint;
  uint64_t max_request_body_size; /* wire bytes, and bytes after Content-Encoding */
  uint64_t max_profile_size;      /* one uncompressed pprof */
  sp_tls_config_t tls;
} sp_pyro_cfg_t;

/* Per-API counters (pipeline/telemetry.h). */
typedef sp_receiver_metrics_t sp_pyro_metrics_t;

/** Request bodies of at least this many bytes are decoded on the thread pool. */
#define SP_PYRO_POOL_MIN ((size_t)16 * 1024)
/**
 * At most this many requests wait for or run on the pool; past it they are
 * decoded on the loop (the loop then works as one more decoder, and reads
 * nothing new meanwhile).
 */
#define SP_PYRO_POOL_MAX 64

typedef struct sp_pyro_s {
  sp_component_t base;
  const sp_pyro_cfg_t *cfg;
  sp_consumer_t *next;
  sp_http_server_t *http;
  sp_pyro_metrics_t m_ingest, m_push;
  bool shutting;
  int pending;
  sp_done_cb cb;
  void *cb_arg;
  /* Decoding on the thread pool (see the top of this file); loop thread only. */
  size_t pool_min; /* 0: SP_PYRO_POOL_MIN (tests set 1 to send every body there) */
  size_t n_work;   /* requests on the pool: their after_work has not run */
} sp_pyro_t;

/* Series labels of one profile while a request is turned into a batch. */
#define SP_PYRO_MAX_LABELS 128

typedef struct sp_pyro_labels_s {
  sp_label_t items[SP_PYRO_MAX_LABELS];
  size_t n;
} sp_pyro_labels_t;

/** The value of label @p name, or NULL. */
const char *sp__pyro_labels_get(const sp_pyro_labels_t *l, const char *name);
/** Sets (replaces or appends) a label; the strings are borrowed. SP_ETOOBIG past the cap. */
int sp__pyro_labels_set(sp_pyro_labels_t *l, const char *name, const char *value);
/** Removes label @p name; true when it was there. */
bool sp__pyro_labels_del(sp_pyro_labels_t *l, const char *name);

/* A sample_type_config entry of the Go SDK's form upload (only what we use). */
typedef struct sp_pyro_stc_s {
  const char *type;         /* the pprof sample type it configures */
  const char *display_name; /* "display-name", or NULL */
} sp_pyro_stc_t;

typedef struct sp_pyro_stcs_s {
  sp_pyro_stc_t *items;
  size_t n;
  bool present; /* the form carried a sample_type_config part */
} sp_pyro_stcs_t;

/** How sp__pyro_add_pprof() treats a profile. */
typedef struct sp_pyro_pprof_opts_s {
  /* /ingest: set __name__ from the sample types as Pyroscope does (with @p stcs). */
  bool derive_name;
  const sp_pyro_stcs_t *stcs;
  /* /ingest: the request's from/until; a profile without its own time gets from. */
  int64_t start_ns, end_ns;
  /* Push: the time range comes from the profile's time_nanos/duration_nanos. */
  bool time_from_profile;
  int64_t now_ns;
} sp_pyro_pprof_opts_t;

/**
 * Adds the pprof in @p bytes (gzip or plain) to @p batch with the series
 * labels @p labels (which this may change: span labels move to the samples,
 * __name__ may be set; strings must live until the call returns). Span
 * labels on samples are normalised (pprof.h). @p err gets a message for the
 * sender on failure. 0; SP_EPROTO (not pprof, corrupt gzip); SP_ETOOBIG
 * (over max_profile_size); SP_ENOMEM. An empty @p bytes adds nothing.
 * Any thread, for a batch nobody else uses yet (it reads only self->cfg).
 */
int sp__pyro_add_pprof(sp_pyro_t *self, sp_profiles_t *batch, sp_pyro_labels_t *labels,
                       const uint8_t *bytes, size_t len, const sp_pyro_pprof_opts_t *opts,
                       char *err, size_t errlen);

/**
 * Adds an already built profile (folded conversion) allocated in @p batch's
 * arena, with the same label handling. 0 or SP_ENOMEM / SP_ETOOBIG.
 */
int sp__pyro_add_built(sp_profiles_t *batch, sp_pyro_labels_t *labels, sp_pprof_t *pp,
                       int64_t start_ns, int64_t end_ns, char *err, size_t errlen);

/** Copies tenant and authorization headers of @p req into @p batch's meta. */
void sp__pyro_set_meta(sp_profiles_t *batch, const sp_http_request_t *req);

/**
 * Hands @p batch (its reference is taken) to the pipeline and counts it
 * under @p m. Returns the consumer's result; an empty batch is dropped and
 * counts as success.
 */
int sp__pyro_consume(sp_pyro_t *self, const sp_pyro_metrics_t *m, sp_profiles_t *batch);

/**
 * Whether a request body of @p len bytes is decoded on the thread pool:
 * at least the threshold, and fewer than SP_PYRO_POOL_MAX requests there.
 * When true, the request is counted in self->n_work; the caller queues the
 * work and calls sp__pyro_offload_done() from its after_work. Loop thread.
 */
bool sp__pyro_offload(sp_pyro_t *self, size_t len);

/** The after_work of an offloaded request ran. Loop thread. */
void sp__pyro_offload_done(sp_pyro_t *self);

/** POST /ingest. */
void sp__pyro_ingest_handle(sp_pyro_t *self, sp_http_request_t *req);

/** POST /push.v1.PusherService/Push. */
void sp__pyro_push_handle(sp_pyro_t *self, sp_http_request_t *req);

/* ---- multipart/form-data ---------------------------------------------------- */

typedef struct sp_pyro_part_s {
  const char *name;         /* form field name ("" when absent) */
  const char *filename;     /* NULL when absent */
  const char *content_type; /* NULL when absent */
  const uint8_t *data;      /* points into the body */
  size_t len;
} sp_pyro_part_t;

/** Most parts a form may have. */
#define SP_PYRO_MAX_PARTS 16

/**
 * Parses a multipart/form-data @p body whose Content-Type is
 * @p content_type. Part headers are copied into @p arena; part data points
 * into @p body. Returns 0, SP_EPROTO with @p err set, or SP_ENOMEM.
 */
int sp__pyro_multipart_parse(const char *content_type, const uint8_t *body, size_t len,
                             sp_arena_t *arena, sp_pyro_part_t *parts, size_t *n_parts,
                             char *err, size_t errlen);

/* ---- folded / lines text ---------------------------------------------------- */

/** The profile type of a folded upload, from the app name's suffix (Pyroscope's table). */
typedef struct sp_pyro_folded_type_s {
  const char *metric;   /* __name__ */
  const char *type;     /* sample type */
  const char *unit;     /* sample unit */
} sp_pyro_folded_type_t;

/**
 * Splits "app.suffix" into the app name (copied into @p arena) and the
 * profile type the suffix stands for, as Pyroscope's legacy ingestion does
 * (no suffix: cpu). SP_EPROTO with @p err set for an unknown suffix.
 */
int sp__pyro_folded_type(const char *app_name, sp_arena_t *arena, const char **app,
                         sp_pyro_folded_type_t *out, char *err, size_t errlen);

/**
 * Converts folded text ("frame;frame;frame count" per line, root first) or,
 * with @p lines, one stack per line counted by occurrence, into a pprof in
 * @p arena. @p sample_rate (Hz, 0: none) turns cpu and wall sample counts
 * into nanoseconds as Pyroscope does. Returns 0, SP_EPROTO (@p err set) or
 * SP_ENOMEM.
 */
int sp__pyro_folded_to_pprof(sp_arena_t *arena, const uint8_t *text, size_t len, bool lines,
                             const sp_pyro_folded_type_t *type, uint32_t sample_rate,
                             int64_t start_ns, int64_t end_ns, sp_pprof_t **out, char *err,
                             size_t errlen);

#endif
