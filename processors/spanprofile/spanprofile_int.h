/*
 * spanprofile_int.h — what the files of the spanprofile processor share.
 *
 * The processor is split by concern:
 *   spanprofile.c         the component: config table, ports (one per
 *                         pipeline it is attached to), the timer, retries of
 *                         refused batches, shutdown and the reload stash;
 *   spanprofile_index.c   the span index: interned strings, the span-ID hash
 *                         table, processes, per-thread interval grids and the
 *                         resolution rules (innermost span, ambiguity);
 *   spanprofile_join.c    the join engine: held traces and profiles batches
 *                         ("units"), the hold window, memory bound and
 *                         eviction, tentative and final resolution of samples;
 *   spanprofile_enrich.c  reading sample keys out of pprof, writing labels
 *                         into pprof samples and attributes onto spans;
 *   spanprofile_wire.c    reading span fields from encoded requests without
 *                         decoding them.
 *
 * Everything runs on the loop thread. Names with `sp__spj_` are internal to
 * this folder.
 */
#ifndef SP_SPANPROFILE_INT_H
#define SP_SPANPROFILE_INT_H

#include "pipeline/batch.h"
#include "pipeline/pprofwire.h"
#include "pipeline/config.h"
#include "pipeline/telemetry.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ---- configuration ---------------------------------------------------------- */

enum { SP_SPJ_PID_LOCAL_ROOTS = 0, SP_SPJ_PID_ALL = 1, SP_SPJ_PID_NONE = 2 };

/** The decoded `spanprofile` config section (see the table in spanprofile.c). */
typedef struct sp_spanprofile_cfg_s {
  uint64_t wait_ms;
  int64_t max_held_spans;
  uint64_t max_held_bytes;
  int profile_id_attribute; /* SP_SPJ_PID_* */
  bool span_cpu_attributes;
  sp_strlist_t process_attributes;
  sp_strlist_t process_attributes_fallback;
  char *span_thread_attribute;
  char *sample_thread_label;
  char *sample_time_label;
  sp_strlist_t span_id_labels;
} sp_spanprofile_cfg_t;

/* ---- metrics ------------------------------------------------------------------ */

/** Why a sample stayed unjoined (the `reason` label). */
typedef enum sp_spj_reason_e {
  SP_SPJ_R_NO_SPAN = 0,     /* no span with its ID / none active at its time and thread */
  SP_SPJ_R_EXPIRED,         /* the span data it needed had already left the window */
  SP_SPJ_R_AMBIGUOUS,       /* several spans qualify and none is innermost */
  SP_SPJ_R_NO_THREAD,       /* thread unknown on one side and several spans active */
  SP_SPJ_R_NO_TIMESTAMP,    /* neither a span ID nor a timestamp: nothing to join by */
  SP_SPJ_R_UNKNOWN_PROCESS, /* no span of its process (identity) was seen */
  SP_SPJ_R_COUNT,
  /* results that are joins (not metrics reasons) */
  SP_SPJ_JOINED_ID = 100,
  SP_SPJ_JOINED_WINDOW = 101,
} sp_spj_reason_t;

/** Series the engine updates; owned by the telemetry registry. */
typedef struct sp_spj_metrics_s {
  sp_metric_t *joined_id;
  sp_metric_t *joined_window;
  sp_metric_t *unjoined[SP_SPJ_R_COUNT];
  sp_metric_t *spans_indexed;
  sp_metric_t *spans_duplicate;
  sp_metric_t *spans_enriched;
  sp_metric_t *evicted_spans;   /* spans emitted or unindexed early by the memory bound */
  sp_metric_t *evicted_samples; /* samples resolved and emitted early by the memory bound */
  sp_metric_t *passthrough;     /* batches emitted unjoined because they could not be held */
  sp_metric_t *held_spans;      /* gauges */
  sp_metric_t *held_samples;
  sp_metric_t *held_bytes;
} sp_spj_metrics_t;

/* ---- the span index (spanprofile_index.c) -------------------------------------- */

#define SP_SPJ_NONE UINT32_MAX
#define SP_SPJ_NO_THREAD INT64_MIN

/* Duration levels of the interval grid: cell width 2^(13 + 3*level) ns. */
#define SP_SPJ_LEVELS 10
#define SP_SPJ_HUGE SP_SPJ_LEVELS

/** An interned, reference-counted string (span names, service names). */
typedef struct sp_spj_str_s {
  uint32_t refs;
  uint32_t len;
  uint64_t hash;
  char s[];
} sp_spj_str_t;

typedef struct sp_spj_unit_s sp_spj_unit_t;

enum {
  SP_SPJ_F_LOCAL_ROOT = 1u << 0,
  SP_SPJ_F_DECIDED = 1u << 1, /* its attributes can no longer change (final ID join) */
};

/** One indexed span. Lives in a pool and is addressed by index + generation. */
typedef struct sp_spj_span_s {
  uint64_t span_id;
  uint64_t parent_id; /* 0 when none */
  int64_t start_ns, end_ns;
  uint8_t trace_id[16];
  sp_spj_str_t *name;
  sp_spj_str_t *svc;
  sp_spj_unit_t *owner; /* the unit that indexed it (removes it) */
  sp_spj_unit_t *held;  /* the unit whose batch is still held, else NULL */
  uint32_t gen;         /* bumped when freed; odd = live */
  uint32_t bucket;      /* interval bucket or SP_SPJ_NONE; while free: the next free slot */
  uint32_t pos[2];      /* where its items sit in its first and second interval cell */
  uint8_t level;
  uint8_t flags;
  /* joined samples: credited at arrival (tentatively) and corrected when final */
  uint32_t joined;
  uint64_t count;
  uint64_t cpu_ns;
  uint64_t wall_ns;
} sp_spj_span_t;

/** A reference to an indexed span that notices when the span was freed. */
typedef struct sp_spj_ref_s {
  uint32_t idx;
  uint32_t gen;
} sp_spj_ref_t;

typedef struct sp_spj_index_s sp_spj_index_t;

/** The identity keys of a process: key sets, each a list of attribute names. */
typedef struct sp_spj_keyset_s {
  char **dotted;      /* attribute names, e.g. "service.instance.id" */
  char **underscored; /* label spellings, e.g. "service_instance_id" */
  size_t n;
} sp_spj_keyset_t;

/** Creates an empty index sized for about @p max_spans spans. NULL on OOM. */
sp_spj_index_t *sp__spj_index_create(size_t max_spans);
/** Frees the index and everything in it. Accepts NULL. */
void sp__spj_index_destroy(sp_spj_index_t *ix);

/** Interns @p s (length @p len); a new reference. NULL on OOM. */
sp_spj_str_t *sp__spj_intern(sp_spj_index_t *ix, const char *s, size_t len);
/** The interned string equal to @p s without creating it (no reference taken), or NULL. */
sp_spj_str_t *sp__spj_intern_find(sp_spj_index_t *ix, const char *s, size_t len);
/** Drops one reference. Accepts NULL. */
void sp__spj_unintern(sp_spj_index_t *ix, sp_spj_str_t *str);

/**
 * The process for identity key strings @p keys (n of them, NULL entries are
 * incomplete key sets), creating it and aliasing its keys when @p create.
 * SP_SPJ_NONE when none matches (or no key is complete, or OOM).
 */
uint32_t sp__spj_process(sp_spj_index_t *ix, char *const *keys, size_t n, bool create);

/** The span @p r refers to, or NULL when it has been freed since. */
sp_spj_span_t *sp__spj_deref(sp_spj_index_t *ix, sp_spj_ref_t r);
/** The span at pool index @p idx (must be live). */
sp_spj_span_t *sp__spj_at(sp_spj_index_t *ix, uint32_t idx);

/** A hint that span ID @p span_id of @p svc is looked up soon: fetches its slot. */
void sp__spj_prefetch_id(sp_spj_index_t *ix, const sp_spj_str_t *svc, uint64_t span_id);
/** The live span with ID @p span_id of service @p svc, or SP_SPJ_NONE. */
uint32_t sp__spj_lookup(sp_spj_index_t *ix, const sp_spj_str_t *svc, uint64_t span_id);

/**
 * Adds a span (fields other than the pool's own filled from @p tmpl) and
 * registers its interval on @p thread of process @p proc (SP_SPJ_NONE: no
 * interval). Takes over tmpl's references to name and svc. Returns its
 * reference in *@p out. 0 or SP_ENOMEM (then the references are dropped).
 */
int sp__spj_add(sp_spj_index_t *ix, const sp_spj_span_t *tmpl, uint32_t proc, int64_t thread,
                sp_spj_ref_t *out);

/**
 * A hint that span @p idx (any index: freed ones are ignored) leaves soon:
 * fetches its record, or with @p slots, the table slots its removal touches
 * (ask for the record some spans earlier). Changes nothing.
 */
void sp__spj_prefetch(sp_spj_index_t *ix, uint32_t idx, bool slots);
/** Removes a live span from the index (raising its process's watermark). */
void sp__spj_remove(sp_spj_index_t *ix, uint32_t idx);

/** True when a span with this key left the index recently (for the `expired` reason). */
bool sp__spj_recently_removed(sp_spj_index_t *ix, const sp_spj_str_t *svc, uint64_t span_id);

/**
 * The thread/time rule for a sample at @p t_ns on @p thread (SP_SPJ_NO_THREAD
 * when unknown) of process @p proc: SP_SPJ_JOINED_WINDOW with *@p idx set,
 * or the reason it stays unjoined.
 */
int sp__spj_resolve_window(sp_spj_index_t *ix, uint32_t proc, int64_t thread, int64_t t_ns,
                           uint32_t *idx);

/**
 * Gives back room the content no longer needs: hash tables under 1/8 load
 * shrink, empty ones are freed (pool chunks and vectors do so as they
 * empty). True when something was given back.
 */
bool sp__spj_trim(sp_spj_index_t *ix);
/** Frees processes that have had no span for @p grace_ms. */
void sp__spj_gc(sp_spj_index_t *ix, uint64_t now_ms, uint64_t grace_ms);
/** The time at which the next process becomes collectable (UINT64_MAX: none). */
uint64_t sp__spj_gc_due(sp_spj_index_t *ix, uint64_t grace_ms);
/** Sets the clock the index stamps empty processes with. */
void sp__spj_set_now(sp_spj_index_t *ix, uint64_t now_ms);

/** Live spans in the index. */
size_t sp__spj_live(const sp_spj_index_t *ix);
/** Removals that found a span's position note stale and searched (for tests: 0 unless a bug). */
size_t sp__spj_searches(const sp_spj_index_t *ix);
/**
 * Heap bytes the index holds for its content: pool chunks, tables and
 * vectors at the size they were allocated (not what they use), which all
 * shrink again as content leaves. Not counted: the fixed cost of an empty
 * index (its struct and the removed-ID cache, sized once at create).
 */
size_t sp__spj_bytes(const sp_spj_index_t *ix);

/* ---- enrichment helpers (spanprofile_enrich.c) --------------------------------- */

/**
 * Per-profile facts for reading and writing samples. Samples are read from
 * the profile's encoded bytes through its wire index (pipeline/pprofwire.h),
 * never from a decoded Profile. Label values are parsed once per distinct
 * string: `memo` (sp_malloc'd on first use, freed by sp__spj_pctx_free)
 * holds, per string index, the parsed span ID and thread number.
 */
typedef struct sp_spj_pctx_s {
  const struct sp_pprof_wire_s *w;
  const sp_profile_t *prof;
  int64_t k_id[4]; /* string indices of the span ID label keys; -1 when absent */
  size_t n_k_id;
  int64_t k_thread, k_time, k_span_name, k_trace_id;
  int v_count, v_cpu, v_wall; /* sample value indices, -1 when absent */
  int64_t cpu_scale, wall_scale;
  size_t v_need; /* 1 + the largest value index read */
  /*
   * Set by the caller after sp__spj_pctx_init when nothing reads the values
   * of its sample keys (count, cpu_ns, wall_ns: only span_cpu_attributes
   * does): they stay 1, 0, 0 and no value is decoded.
   */
  bool skip_values;
  /* private: per-string parse results and scratch for unusual samples */
  struct sp_spj_memo_s *memo;
  uint8_t *memo_st;
  bool memo_failed;
  struct sp_pw_label_s *lbuf;
  size_t lcap;
  int64_t *vbuf;
} sp_spj_pctx_t;

/** What a sample offers the join. */
typedef struct sp_spj_skey_s {
  bool has_id;
  uint64_t span_id;
  int64_t time_ns; /* 0 = unknown */
  int64_t thread;  /* SP_SPJ_NO_THREAD = unknown */
  bool has_span_name, has_trace_id, has_span_id_label;
  uint64_t count, cpu_ns, wall_ns;
} sp_spj_skey_t;

/**
 * Fills @p c for profile @p p whose wire index is @p w (from
 * sp_profile_wire(); it must stay valid while @p c is used) with the
 * configured label names. Allocates nothing; free with sp__spj_pctx_free.
 */
void sp__spj_pctx_init(sp_spj_pctx_t *c, const struct sp_pprof_wire_s *w, const sp_profile_t *p,
                       const char *const *id_labels, size_t n_id_labels, const char *thread_label,
                       const char *time_label);

/** Frees what reading samples through @p c allocated. Accepts a zeroed context. */
void sp__spj_pctx_free(sp_spj_pctx_t *c);

/**
 * Reads sample @p i of the profile. Never fails: without memory for its
 * parse cache it parses every value again.
 */
void sp__spj_sample_key(sp_spj_pctx_t *c, size_t i, sp_spj_skey_t *k);

/** Parses 16 hex characters (either case) into a non-zero span ID. */
bool sp__spj_parse_span_id(const char *s, uint64_t *out);

/**
 * A pending label write: sample @p sample gets the labels of span @p span
 * that it lacks. The has_* flags are the sample's, from its sp_spj_skey_t
 * (read on the bytes the write applies to), so writing reads no sample again.
 */
typedef struct sp_spj_write_s {
  uint32_t sample;
  bool with_span_id;
  bool has_span_id_label, has_span_name, has_trace_id;
  const sp_spj_span_t *span;
} sp_spj_write_t;

/**
 * Adds span_id (when with_span_id), span_name and trace_id labels that the
 * samples lack (per their has_* flags), for @p n writes into profile @p p of @p batch (which must
 * be writable; @p c was set up on sp_profile_wire(batch, p)). The labels are spliced into the
 * encoded bytes (new strings deduplicated), which replace the profile's with sp_profile_set_raw():
 * afterwards p->pprof is NULL and p->raw holds the labelled profile. 0, or SP_ENOMEM with @p p
 * unchanged.
 */
int sp__spj_write_labels(sp_profiles_t *batch, sp_profile_t *p, sp_spj_pctx_t *c,
                         const sp_spj_write_t *w, size_t n);

/* The span attributes the join adds (decoded path: sp__spj_write_attrs; wire path: the join). */
#define SP_ATTR_PROFILE_ID "pyroscope.profile.id"
#define SP_ATTR_COUNT "profile.sample.count"
#define SP_ATTR_CPU "profile.cpu.time_ns"
#define SP_ATTR_WALL "profile.wall.time_ns"

/** Attributes a span gains on emission. */
typedef struct sp_spj_attrs_s {
  bool profile_id;
  bool cpu;
  uint64_t span_id;
  uint64_t count, cpu_ns, wall_ns;
} sp_spj_attrs_t;

/**
 * Adds the attributes in @p a to @p span (a span of a writable batch whose
 * arena is @p arena), skipping keys it already has. 0 or SP_ENOMEM.
 */
int sp__spj_write_attrs(sp_arena_t *arena, sp_otlp_span_t *span, const sp_spj_attrs_t *a);

/** The string form of an attribute value for identity keys, in @p buf; NULL when not scalar. */
const char *sp__spj_any_str(const sp_otlp_any_t *v, char *buf, size_t cap);

/** The integer form of an attribute value (int, or a decimal string). */
bool sp__spj_any_int(const sp_otlp_any_t *v, int64_t *out);

/* ---- reading encoded traces (spanprofile_wire.c) ---------------------------------- */

/** The fields of one span the join reads; pointers into the request (or decoded) bytes. */
typedef struct sp_spj_wspan_s {
  const uint8_t *trace, *span_id, *parent;
  size_t trace_len, span_id_len, parent_len;
  const char *name; /* not NUL-terminated */
  size_t name_len;
  uint64_t start, end;
  uint32_t flags;
  int64_t thread; /* SP_SPJ_NO_THREAD when absent */
} sp_spj_wspan_t;

/** Called per ResourceSpans with its encoded Resource (NULL, 0 when absent). 0 or SP_E*. */
typedef int (*sp_spj_wire_resource_fn)(void *ctx, const uint8_t *res, size_t len);
/** Called per span, in request order, after its resource. 0 or SP_E*. */
typedef int (*sp_spj_wire_span_fn)(void *ctx, const sp_spj_wspan_t *s);

/**
 * Walks an encoded ExportTraceServiceRequest, reading span attribute
 * @p thread_attr (NULL: none) for each span. 0, SP_EPROTO on anything it
 * cannot read (the caller decodes instead), or a callback's code.
 */
int sp__spj_wire_walk(const uint8_t *buf, size_t len, const char *thread_attr,
                      sp_spj_wire_resource_fn on_resource, sp_spj_wire_span_fn on_span, void *ctx);

/**
 * The first attribute @p key of an encoded Resource, as text (strings as
 * they are; ints, bools and doubles formatted like sp__spj_any_str) into
 * @p out. 1 found, 0 absent or not scalar, SP_EPROTO malformed.
 */
int sp__spj_wire_attr(const uint8_t *res, size_t len, const char *key, char *out, size_t cap);

/* ---- the join engine (spanprofile_join.c) ---------------------------------------- */

typedef struct sp_spj_s sp_spj_t;

/**
 * Called for every batch the engine lets go, with its reference: the
 * pipeline port (signal SP_SIGNAL_*, ordinal among the ports of that
 * signal) it came in on.
 */
typedef void (*sp_spj_emit_fn)(void *ctx, unsigned signal, unsigned port, void *batch);

/** A new engine for @p cfg (copied). 0, SP_ENOMEM. */
int sp__spj_create(const sp_spanprofile_cfg_t *cfg, sp_spj_t **out);
/** Sets where batches go and which series to count in (may be called again after a reload). */
void sp__spj_bind(sp_spj_t *j, sp_spj_emit_fn emit, void *ctx, const sp_spj_metrics_t *m);
/** Indexes and holds (or emits) a traces batch; takes @p b's reference. */
void sp__spj_traces(sp_spj_t *j, sp_traces_t *b, unsigned port, uint64_t now_ms);
/** Joins and holds (or emits) a profiles batch; takes @p b's reference. */
void sp__spj_profiles(sp_spj_t *j, sp_profiles_t *b, unsigned port, uint64_t now_ms);
/** Emits what is due at @p now_ms and forgets spans past their retention. */
void sp__spj_advance(sp_spj_t *j, uint64_t now_ms);
/** When sp__spj_advance has something to do next (UINT64_MAX: nothing held). */
uint64_t sp__spj_deadline(sp_spj_t *j);
/** Resolves and emits everything held, and empties the index. */
void sp__spj_flush(sp_spj_t *j);
/** Spans and samples held (for logs). */
void sp__spj_held(sp_spj_t *j, size_t *spans, size_t *samples);
/** Spans and profiles in held batches (what would be lost if the engine were freed). */
size_t sp__spj_held_items(sp_spj_t *j);
/** Sets the held_* gauges of @p m to zero (an engine that is going away). */
void sp__spj_zero_gauges(sp_spj_t *j, const sp_spj_metrics_t *m);
/** Frees the engine, releasing held batches without emitting them. Accepts NULL. */
void sp__spj_destroy(sp_spj_t *j);

#endif
