/*
 * batch.h — the two signals as they travel through a pipeline.
 *
 * A traces batch is one OTLP ExportTraceServiceRequest. It arrives as bytes;
 * the receiver checks them with a fast wire scan (counting spans, checking
 * trace/span ID lengths) without building any structure, and the batch keeps
 * those bytes. Decoding with protobuf-c into the batch's arena happens only
 * when a component asks for the message (sp_traces_request), so a pipeline
 * that only forwards never pays for it, and an unchanged batch is exported as
 * the bytes it arrived as. A component that changes a batch calls
 * sp_traces_writable() first: that decodes, drops the stale bytes, and — if
 * another consumer also holds the batch — gives the caller its own copy.
 *
 * A profiles batch is a list of profiles, each with series labels
 * (service_name, __name__, ...), a time range, the pprof bytes as received
 * (uncompressed) and, on demand, the decoded perftools Profile. Per-sample
 * timestamps and thread ids that pprof cannot carry natively (OTLP profiles
 * have them) live in side arrays parallel to the profile's samples; sample
 * links become `span_id`/`trace_id` sample labels.
 *
 * Both are reference counted on the loop thread only (plain ints): passing a
 * batch downstream hands over one reference; fan-out adds references, and a
 * batch with more than one reference is read-only.
 */
#ifndef SP_BATCH_H
#define SP_BATCH_H

#include "pipeline/arena.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "opentelemetry/proto/collector/trace/v1/trace_service.pb-c.h"
#include "perftools/profiles/profile.pb-c.h"

typedef Opentelemetry__Proto__Collector__Trace__V1__ExportTraceServiceRequest sp_otlp_traces_req_t;
typedef Opentelemetry__Proto__Trace__V1__ResourceSpans sp_otlp_resource_spans_t;
typedef Opentelemetry__Proto__Trace__V1__ScopeSpans sp_otlp_scope_spans_t;
typedef Opentelemetry__Proto__Trace__V1__Span sp_otlp_span_t;
typedef Opentelemetry__Proto__Common__V1__KeyValue sp_otlp_kv_t;
typedef Opentelemetry__Proto__Common__V1__AnyValue sp_otlp_any_t;
typedef Perftools__Profiles__Profile sp_pprof_t;

/** Request metadata carried with data (for per-tenant forwarding). Strings live in the batch arena. */
typedef struct sp_meta_s {
  const char *tenant;        /* X-Scope-OrgID, or NULL */
  const char *authorization; /* Authorization, or NULL */
} sp_meta_t;

/* ---- traces ----------------------------------------------------------------- */

typedef struct sp_traces_s {
  int refcnt;
  sp_arena_t *arena;
  sp_otlp_traces_req_t *req; /* decoded on demand; NULL until then */
  uint8_t *raw;              /* encoded request (sp_malloc'd); NULL once modified */
  size_t raw_len;
  size_t span_count;
  size_t invalid_spans;      /* spans the wire scan found without a usable trace/span ID */
  sp_meta_t meta;
  uint64_t received_ns;      /* uv_hrtime() when it entered the daemon */
  uint8_t *enc;              /* cached re-encoding of a modified request */
  size_t enc_len;
} sp_traces_t;

/**
 * Validates an encoded ExportTraceServiceRequest with a wire scan and wraps
 * it in a new batch (refcnt 1). When @p copy is false the batch takes
 * ownership of @p buf, which must come from sp_malloc; otherwise it is
 * copied. On error @p err receives a message for the sender (e.g.
 * "resource_spans[0].scope_spans[0].spans[3]: span_id must be 8 bytes, got 7")
 * and, when @p copy is false, @p buf is freed.
 * Returns 0, SP_EPROTO or SP_ENOMEM.
 */
int sp_traces_from_proto(uint8_t *buf, size_t len, bool copy, sp_traces_t **out, char *err,
                         size_t errlen);

/**
 * Wraps bytes that are already known to be a valid request holding
 * @p span_count spans (e.g. the concatenation of validated requests, which
 * protobuf defines as their merge). Takes ownership of @p buf (sp_malloc'd)
 * even on failure. NULL on OOM.
 */
sp_traces_t *sp_traces_wrap(uint8_t *buf, size_t len, size_t span_count);

/** Wraps a decoded request allocated in @p arena (ownership of both passes to the batch). */
sp_traces_t *sp_traces_from_request(sp_arena_t *arena, sp_otlp_traces_req_t *req);

/**
 * Removes spans whose trace_id (16 bytes) or span_id (8 bytes) is missing or
 * all zero — the OTLP spec's invalid IDs — making the batch writable only if
 * there are any. *@p dropped gets their number. 0 or SP_ENOMEM.
 */
int sp_traces_drop_invalid(sp_traces_t **batch, size_t *dropped);

/** Counts spans in a decoded request. */
size_t sp_traces_count_spans(const sp_otlp_traces_req_t *req);

sp_traces_t *sp_traces_ref(sp_traces_t *self);
/** Drops one reference; frees at zero. Accepts NULL. */
void sp_traces_unref(sp_traces_t *self);

/**
 * The decoded request, decoding on first use. NULL on OOM (or corrupt bytes,
 * which the wire scan already excludes). The result is read-only unless the
 * caller obtained the batch through sp_traces_writable().
 */
const sp_otlp_traces_req_t *sp_traces_request(sp_traces_t *self);

/**
 * Makes *@p batch safe to modify: decodes it, and when others hold a
 * reference replaces *@p batch with a private copy (dropping the caller's
 * reference to the shared one). Marks it modified so it is re-encoded on
 * export. 0 or SP_ENOMEM (then *@p batch is unchanged).
 */
int sp_traces_writable(sp_traces_t **batch);

/**
 * The encoded request: the received bytes when unchanged, else a cached
 * re-encoding. The bytes stay valid while the batch lives and is not
 * modified again. 0 or SP_ENOMEM.
 */
int sp_traces_encoded(sp_traces_t *self, const uint8_t **out, size_t *len);

/**
 * Installs @p raw (@p len bytes, sp_malloc'd) as the encoded request of
 * *@p batch: bytes holding the same spans (span_count is kept), e.g. a wire
 * splice of the batch's own bytes (pipeline/otlpwire.h). The batch takes
 * ownership of @p raw in every case (on failure it is freed). The old
 * bytes, any decoded form (its arena memory stays until the batch is
 * freed) and any cached encoding are dropped, so the batch is exported as
 * @p raw. When others hold a reference, *@p batch is replaced by a private
 * copy carrying @p raw (and the metadata), dropping the caller's reference
 * to the shared one, as sp_traces_writable does. Loop thread.
 * 0 or SP_ENOMEM (then *@p batch is unchanged).
 */
int sp_traces_set_raw(sp_traces_t **batch, uint8_t *raw, size_t len);

/* ---- profiles --------------------------------------------------------------- */

typedef struct sp_label_s {
  const char *name;
  const char *value;
} sp_label_t;

typedef struct sp_profile_s {
  sp_label_t *labels;     /* series labels, including service_name and __name__ */
  size_t n_labels;
  int64_t time_start_ns;  /* covered interval; 0 when unknown */
  int64_t time_end_ns;
  const uint8_t *raw;     /* uncompressed pprof bytes (arena); NULL once modified */
  size_t raw_len;
  sp_pprof_t *pprof;      /* decoded on demand into the batch arena; NULL until then */
  /*
   * Side arrays parallel to pprof->sample (n_ext entries), NULL when absent:
   * per-sample wall-clock time (ns since the epoch; 0 = unknown) and thread
   * id (-1 = unknown). They are what the thread/time join uses.
   */
  int64_t *sample_time_ns;
  int64_t *sample_thread;
  size_t n_ext;
  bool modified;
  /*
   * Wire index of `raw` (pipeline/pprofwire.h) in the batch arena, built on
   * first use by sp_profile_wire() (or by a receiver that validated the
   * bytes on the wire); NULL until then and whenever `raw` changes.
   */
  const struct sp_pprof_wire_s *wire;
} sp_profile_t;

typedef struct sp_profiles_s {
  int refcnt;
  sp_arena_t *arena;
  sp_profile_t *items;
  size_t n;
  size_t cap;
  sp_meta_t meta;
  uint64_t received_ns;
} sp_profiles_t;

/** A new empty batch (refcnt 1) with its own arena; NULL on OOM. */
sp_profiles_t *sp_profiles_create(void);
sp_profiles_t *sp_profiles_ref(sp_profiles_t *self);
/** Drops one reference; frees at zero. Accepts NULL. */
void sp_profiles_unref(sp_profiles_t *self);

/**
 * Appends a profile whose pprof bytes (uncompressed) are copied into the
 * batch arena; labels are copied too. Returns the new profile (so callers can
 * attach side arrays) or NULL on OOM.
 */
sp_profile_t *sp_profiles_add(sp_profiles_t *self, const sp_label_t *labels, size_t n_labels,
                              int64_t start_ns, int64_t end_ns, const uint8_t *pprof,
                              size_t len);

/**
 * sp_profiles_add() for pprof bytes already in the batch's own arena (e.g.
 * built there by a receiver): they are used in place, not copied.
 */
sp_profile_t *sp_profiles_add_arena_bytes(sp_profiles_t *self, const sp_label_t *labels,
                                         size_t n_labels, int64_t start_ns, int64_t end_ns,
                                         const uint8_t *pprof, size_t len);

/**
 * Appends an already decoded profile (allocated in the batch arena).
 * NULL on OOM.
 */
sp_profile_t *sp_profiles_add_decoded(sp_profiles_t *self, const sp_label_t *labels,
                                      size_t n_labels, int64_t start_ns, int64_t end_ns,
                                      sp_pprof_t *pprof);

/** The decoded profile, decoding on first use into the batch arena; NULL on corrupt bytes or OOM. */
sp_pprof_t *sp_profile_decode(sp_profiles_t *batch, sp_profile_t *p);

/**
 * The wire index of @p p's pprof bytes, built on first use into the batch
 * arena (a modified decoded profile is encoded first). Lets readers that
 * only look at sample labels and values skip decoding. NULL on OOM or
 * corrupt bytes.
 */
const struct sp_pprof_wire_s *sp_profile_wire(sp_profiles_t *batch, sp_profile_t *p);

/**
 * Replaces @p p's pprof bytes with @p raw (@p len bytes in the batch arena,
 * a valid profile, e.g. the result of a splice): drops the decoded form and
 * the wire index, and clears `modified`. The batch must be writable.
 */
void sp_profile_set_raw(sp_profile_t *p, const uint8_t *raw, size_t len);

/**
 * sp_profile_set_raw that also installs @p wire, an index of exactly these
 * bytes (e.g. from sp_pprof_splice_finish_indexed) living at least as long
 * as the batch's arena; NULL is sp_profile_set_raw.
 */
void sp_profile_set_raw_indexed(sp_profile_t *p, const uint8_t *raw, size_t len,
                                const struct sp_pprof_wire_s *wire);

/** Series label value or NULL. */
const char *sp_profile_label(const sp_profile_t *p, const char *name);

/** Total samples across profiles (decodes when needed); for metrics. */
size_t sp_profiles_count_samples(sp_profiles_t *self);

/**
 * Makes *@p batch safe to modify, copying it when shared (like
 * sp_traces_writable). Profiles are marked modified individually by the
 * caller (p->modified = true) when it changes their pprof.
 * 0 or SP_ENOMEM.
 */
int sp_profiles_writable(sp_profiles_t **batch);

/**
 * Appends to @p dst_batch a copy of profile @p src of @p src_batch: its
 * pprof bytes (encoded first when modified), labels, side arrays and wire
 * index. Returns the new profile, or NULL on OOM (then @p dst_batch has no
 * new item).
 */
sp_profile_t *sp_profiles_copy_in(sp_profiles_t *dst_batch, sp_profiles_t *src_batch,
                                  sp_profile_t *src);

/**
 * The pprof bytes of @p p: the received bytes when unmodified, else a fresh
 * encoding into the batch arena. 0 or SP_ENOMEM.
 */
int sp_profile_encoded(sp_profiles_t *batch, sp_profile_t *p, const uint8_t **out, size_t *len);

/** Copies @p s into the batch arena (NULL in, NULL out). */
const char *sp_profiles_strdup(sp_profiles_t *self, const char *s);

#endif
