/*
 * spanprofile_join.c — the join engine: holding both signals for the
 * window, resolving samples, enriching spans, bounding memory.
 *
 * Every incoming batch becomes a "unit". Units sit in one queue in arrival
 * order while their batch is held (`wait` at most), so expiry is a walk from
 * the head. A traces unit also sits in a second queue while the spans it
 * indexed are in the index: spans stay indexed for 2 x wait after arrival,
 * longer than their batch is held, because a profile arriving up to `wait`
 * after a span is itself held up to `wait` and resolves its samples only
 * when it leaves; the span must still be known then.
 *
 * Spans are indexed from the request bytes as received (spanprofile_wire.c)
 * and a held batch is never decoded: an unchanged batch leaves as the bytes
 * it came in as, and attributes its spans gain are spliced into the bytes
 * (pipeline/otlpwire.h; only a batch that reached the join already decoded
 * is changed through protobuf-c). Profiles are never
 * decoded either: samples are read through the pprof wire index
 * (sp_profile_wire) and labels spliced into the bytes (spanprofile_enrich.c).
 *
 * Samples are resolved twice:
 *  - on arrival, against the spans known then. A join by span ID is final
 *    (IDs are unique); its labels are written at once and the span is
 *    credited. A join by thread and time is tentative: the span is credited
 *    (so a held span batch can gain its attributes even if it leaves before
 *    the profile), but a span arriving later may turn out to be more inner
 *    or overlapping.
 *  - when the profile leaves, against everything known by then. The answer
 *    is final; the tentative credit is moved if it changed, and labels are
 *    written.
 * A profile whose samples are all final on arrival (joined by ID, or with
 * nothing to join by) leaves at once. A traces unit leaves early when
 * nothing more can change it: no span it holds can gain an attribute
 * (profile_id_attribute: none, or no local roots in local_roots mode), or
 * every such span was joined finally — unless span_cpu_attributes asks for
 * the full window. When span batches are never held (profile_id_attribute:
 * none without span_cpu_attributes) the tentative pass is skipped.
 *
 * Keys are scoped by tenant (X-Scope-OrgID): the service of the span-ID
 * join and the process identity both include it, so tenants never mix.
 *
 * Memory is bounded by max_held_spans (indexed spans) and max_held_bytes
 * (held batches plus the index): when over, the oldest unit goes first —
 * a held batch is emitted (a profile resolved with what is known), indexed
 * spans are forgotten (raising their process's watermark, so no later
 * sample can be attributed to an outer span in their place). Nothing is
 * dropped; batches that cannot be held at all are emitted unjoined.
 */
#include "processors/spanprofile/spanprofile_int.h"

#include "pipeline/alloc.h"
#include "pipeline/component.h"
#include "pipeline/error.h"
#include "pipeline/hex.h"
#include "pipeline/log.h"
#include "pipeline/otlpwire.h"

#include <stdio.h>
#include <string.h>

#define SP_SPJ_KEY_MAX 1024

typedef struct sp_spj_pend_s {
  uint32_t prof;
  uint32_t sample;
  sp_spj_ref_t tent; /* tentative window join, or SP_SPJ_NONE */
} sp_spj_pend_t;

struct sp_spj_unit_s {
  sp_spj_unit_t *prev, *next;   /* hold queue (batch held) */
  sp_spj_unit_t *iprev, *inext; /* index queue (owns indexed spans) */
  uint64_t arrival_ms;
  unsigned signal;
  unsigned port;
  bool held;
  bool indexed;
  size_t batch_bytes; /* counted while held */
  size_t side_bytes;  /* refs / pend arrays, counted while the unit lives */
  /* traces */
  sp_traces_t *traces;
  sp_spj_ref_t *refs; /* one per span, in request order */
  size_t n_refs;
  size_t owned;
  size_t undecided;
  /* profiles */
  sp_profiles_t *profiles;
  sp_spj_pend_t *pend;
  size_t n_pend;
  size_t n_samples;
};

struct sp_spj_s {
  /* settings (own copies) */
  uint64_t wait_ms;
  size_t max_spans;
  uint64_t max_bytes;
  int pid_mode;
  bool cpu;
  sp_spj_keyset_t sets[2];
  size_t n_sets;
  char *thread_attr;
  char *thread_label;
  char *time_label;
  char **id_labels;
  size_t n_id_labels;
  /* output */
  sp_spj_emit_fn emit;
  void *ctx;
  sp_spj_metrics_t m;
  sp_metric_t dummy;
  /* state */
  sp_spj_index_t *ix;
  sp_spj_unit_t *hold_head, *hold_tail;
  sp_spj_unit_t *index_head, *index_tail;
  size_t unit_bytes;
  size_t held_samples;
  bool flushing;
};

/* ---- settings ---------------------------------------------------------------------------- */

static void sp__keyset_free(sp_spj_keyset_t *k) {
  for (size_t i = 0; i < k->n; i++) {
    sp_free(k->dotted[i]);
    sp_free(k->underscored[i]);
  }
  sp_free(k->dotted);
  sp_free(k->underscored);
  memset(k, 0, sizeof(*k));
}

static int sp__keyset_copy(sp_spj_keyset_t *k, const sp_strlist_t *l) {
  if (l->n == 0) return 0;
  k->dotted = sp_calloc(l->n, sizeof(char *));
  k->underscored = sp_calloc(l->n, sizeof(char *));
  if (k->dotted == NULL || k->underscored == NULL) return SP_ENOMEM;
  for (size_t i = 0; i < l->n; i++) {
    k->n = i + 1;
    k->dotted[i] = sp_strdup(l->items[i]);
    k->underscored[i] = sp_strdup(l->items[i]);
    if (k->dotted[i] == NULL || k->underscored[i] == NULL) return SP_ENOMEM;
    for (char *c = k->underscored[i]; *c; c++)
      if (*c == '.') *c = '_';
  }
  return 0;
}

void sp__spj_destroy(sp_spj_t *j);

int sp__spj_create(const sp_spanprofile_cfg_t *cfg, sp_spj_t **out) {
  sp_spj_t *j = sp_calloc(1, sizeof(*j));
  if (j == NULL) return SP_ENOMEM;
  j->wait_ms = cfg->wait_ms > 0 ? cfg->wait_ms : 1;
  j->max_spans = cfg->max_held_spans > 0 ? (size_t)cfg->max_held_spans : 1;
  j->max_bytes = cfg->max_held_bytes;
  j->pid_mode = cfg->profile_id_attribute;
  j->cpu = cfg->span_cpu_attributes;
  sp__spj_bind(j, NULL, NULL, NULL);
  if (sp__keyset_copy(&j->sets[0], &cfg->process_attributes) != 0 ||
      sp__keyset_copy(&j->sets[1], &cfg->process_attributes_fallback) != 0)
    goto fail;
  j->n_sets = 2;
  /* An empty name switches that source off. */
  const char *names[3] = {cfg->span_thread_attribute, cfg->sample_thread_label,
                          cfg->sample_time_label};
  char **dst[3] = {&j->thread_attr, &j->thread_label, &j->time_label};
  for (int i = 0; i < 3; i++)
    if (names[i] != NULL && names[i][0] != '\0' && (*dst[i] = sp_strdup(names[i])) == NULL)
      goto fail;
  size_t nid = cfg->span_id_labels.n < 4 ? cfg->span_id_labels.n : 4;
  if (nid > 0 && (j->id_labels = sp_calloc(nid, sizeof(char *))) == NULL) goto fail;
  for (size_t i = 0; i < nid; i++) {
    if ((j->id_labels[i] = sp_strdup(cfg->span_id_labels.items[i])) == NULL) goto fail;
    j->n_id_labels = i + 1;
  }
  j->ix = sp__spj_index_create(j->max_spans);
  if (j->ix == NULL) goto fail;
  *out = j;
  return 0;
fail:
  sp__spj_destroy(j);
  return SP_ENOMEM;
}

void sp__spj_bind(sp_spj_t *j, sp_spj_emit_fn emit, void *ctx, const sp_spj_metrics_t *m) {
  j->emit = emit;
  j->ctx = ctx;
  if (m != NULL) {
    j->m = *m;
    return;
  }
  sp_metric_t **all = (sp_metric_t **)&j->m;
  for (size_t i = 0; i < sizeof(j->m) / sizeof(sp_metric_t *); i++)
    all[i] = &j->dummy;
}

/* ---- bookkeeping ------------------------------------------------------------------------- */

static size_t sp__held_bytes(sp_spj_t *j) { return j->unit_bytes + sp__spj_bytes(j->ix); }

static void sp__gauges(sp_spj_t *j) {
  sp_metric_set(j->m.held_spans, sp__spj_live(j->ix));
  sp_metric_set(j->m.held_samples, j->held_samples);
  sp_metric_set(j->m.held_bytes, sp__held_bytes(j));
}

static void sp__hold_link(sp_spj_t *j, sp_spj_unit_t *u) {
  u->held = true;
  u->next = NULL;
  u->prev = j->hold_tail;
  if (j->hold_tail != NULL)
    j->hold_tail->next = u;
  else
    j->hold_head = u;
  j->hold_tail = u;
  j->unit_bytes += u->batch_bytes;
}

static void sp__hold_unlink(sp_spj_t *j, sp_spj_unit_t *u) {
  if (!u->held) return;
  if (u->prev != NULL)
    u->prev->next = u->next;
  else
    j->hold_head = u->next;
  if (u->next != NULL)
    u->next->prev = u->prev;
  else
    j->hold_tail = u->prev;
  u->held = false;
  u->prev = u->next = NULL;
  j->unit_bytes -= u->batch_bytes;
}

static void sp__index_link(sp_spj_t *j, sp_spj_unit_t *u) {
  u->indexed = true;
  u->inext = NULL;
  u->iprev = j->index_tail;
  if (j->index_tail != NULL)
    j->index_tail->inext = u;
  else
    j->index_head = u;
  j->index_tail = u;
}

static void sp__index_unlink(sp_spj_t *j, sp_spj_unit_t *u) {
  if (u->iprev != NULL)
    u->iprev->inext = u->inext;
  else
    j->index_head = u->inext;
  if (u->inext != NULL)
    u->inext->iprev = u->iprev;
  else
    j->index_tail = u->iprev;
  u->indexed = false;
  u->iprev = u->inext = NULL;
}

static sp_spj_unit_t *sp__unit_new(sp_spj_t *j, unsigned signal, unsigned port, uint64_t now) {
  sp_spj_unit_t *u = sp_calloc(1, sizeof(*u));
  if (u == NULL) return NULL;
  u->signal = signal;
  u->port = port;
  u->arrival_ms = now;
  (void)j;
  return u;
}

/* Frees a unit that is neither held nor indexed. */
static void sp__unit_free(sp_spj_t *j, sp_spj_unit_t *u) {
  j->unit_bytes -= u->side_bytes;
  sp_traces_unref(u->traces);
  sp_profiles_unref(u->profiles);
  sp_free(u->refs);
  sp_free(u->pend);
  sp_free(u);
}

static void sp__emit(sp_spj_t *j, unsigned signal, unsigned port, void *batch) {
  if (j->emit != NULL) {
    j->emit(j->ctx, signal, port, batch);
  } else if (signal == SP_SIGNAL_TRACES) {
    sp_traces_unref(batch);
  } else {
    sp_profiles_unref(batch);
  }
}

static size_t sp__traces_bytes(sp_traces_t *b) {
  return b->raw_len + b->enc_len + sp_arena_bytes(b->arena) + sizeof(*b);
}

/*
 * A held batch is counted at raw_len, but bytes assembled by appending (the
 * batch processor's concatenated requests) can have up to twice that
 * allocated, which made held batches cost up to 2x what held_bytes said. A
 * batch held here that nobody else references and nothing points into (not
 * decoded) gives that slack back first. One realloc per held batch.
 */
static void sp__traces_fit(sp_traces_t *b) {
  if (b->refcnt != 1 || b->raw == NULL || b->req != NULL || b->raw_len == 0) return;
  uint8_t *raw = sp_realloc(b->raw, b->raw_len);
  if (raw != NULL) b->raw = raw;
}

/* ---- emitting traces --------------------------------------------------------------------- */

static void sp__emit_profiles(sp_spj_t *j, sp_spj_unit_t *u, bool evicted);

static bool sp__attrs_for(sp_spj_t *j, const sp_spj_span_t *e, sp_spj_attrs_t *a) {
  memset(a, 0, sizeof(*a));
  if (e == NULL || e->joined == 0) return false;
  a->span_id = e->span_id;
  a->profile_id = j->pid_mode == SP_SPJ_PID_ALL ||
                  (j->pid_mode == SP_SPJ_PID_LOCAL_ROOTS && (e->flags & SP_SPJ_F_LOCAL_ROOT));
  if (j->cpu) {
    a->cpu = true;
    a->count = e->count;
    a->cpu_ns = e->cpu_ns;
    a->wall_ns = e->wall_ns;
  }
  return a->profile_id || a->cpu;
}

/* The attribute keys the join adds, in sp__spj_write_attrs's order. */
static const char *const sp__attr_keys[4] = {SP_ATTR_PROFILE_ID, SP_ATTR_COUNT, SP_ATTR_CPU,
                                             SP_ATTR_WALL};

typedef struct sp_spj_ectx_s {
  sp_spj_t *j;
  sp_spj_unit_t *u;
  sp_otlpwire_splice_t sp;
  size_t enriched;
} sp_spj_ectx_t;

/*
 * One span of a held batch's bytes (ordinal @p i: the wire walk gave the
 * span refs[i]): queues the attributes sp__spj_write_attrs would add, in
 * its order and under its conditions.
 */
static int sp__enrich_wire_span(void *ctx, size_t i, const uint8_t *span, size_t len) {
  sp_spj_ectx_t *c = ctx;
  if (i >= c->u->n_refs) return 1;
  sp_spj_attrs_t a;
  if (!sp__attrs_for(c->j, sp__spj_deref(c->j->ix, c->u->refs[i]), &a)) return 0;
  uint32_t have = 0;
  int rc = sp_otlpwire_span_keys(span, len, sp__attr_keys, 4, &have);
  if (rc != 0) return rc;
  if (a.profile_id && !(have & 1u)) {
    uint8_t raw[8];
    char hex[17];
    for (int b = 0; b < 8; b++)
      raw[b] = (uint8_t)(a.span_id >> (56 - 8 * b));
    sp_hex_encode(raw, 8, hex, sizeof(hex));
    if ((rc = sp_otlpwire_splice_str(&c->sp, i, sp__attr_keys[0], hex, 16)) != 0) return rc;
  }
  if (a.cpu) {
    const uint64_t v[3] = {a.count, a.cpu_ns, a.wall_ns};
    for (int k = 0; k < 3; k++) {
      if ((k > 0 && v[k] == 0) || (have & (1u << (k + 1)))) continue;
      int64_t x = v[k] > INT64_MAX ? INT64_MAX : (int64_t)v[k];
      if ((rc = sp_otlpwire_splice_int(&c->sp, i, sp__attr_keys[k + 1], x)) != 0) return rc;
    }
  }
  c->enriched++;
  return 0;
}

/*
 * Enriches a held batch that still has its received bytes without
 * decoding it: the attributes are spliced into the bytes
 * (pipeline/otlpwire.h), which replace the batch's. All or nothing: on
 * failure (no memory, or bytes the splice refuses) the batch is unchanged
 * and the caller takes the decoded path.
 */
static int sp__enrich_wire(sp_spj_t *j, sp_spj_unit_t *u) {
  sp_spj_ectx_t c = {.j = j, .u = u};
  sp_otlpwire_splice_init(&c.sp);
  sp_traces_t *b = u->traces;
  uint8_t *out = NULL;
  size_t out_len = 0;
  int rc = sp_otlpwire_spans(b->raw, b->raw_len, sp__enrich_wire_span, &c);
  if (rc == 0 && !sp_otlpwire_splice_empty(&c.sp)) {
    rc = sp_otlpwire_splice_finish(&c.sp, b->raw, b->raw_len, &out, &out_len);
    if (rc == 0) rc = sp_traces_set_raw(&u->traces, out, out_len); /* takes out */
  }
  sp_otlpwire_splice_free(&c.sp);
  if (rc == 0) sp_metric_add(j->m.spans_enriched, c.enriched);
  return rc;
}

/* Adds what the join found to the spans of a held batch. */
static void sp__enrich_traces(sp_spj_t *j, sp_spj_unit_t *u) {
  bool any = false;
  sp_spj_attrs_t a;
  for (size_t i = 0; i < u->n_refs && !any; i++)
    any = sp__attrs_for(j, sp__spj_deref(j->ix, u->refs[i]), &a);
  if (!any) return; /* unchanged: goes out as the bytes it came in as */
  /*
   * Bytes as received (or as last spliced) are enriched on the wire: the
   * spans' ordinals in them are the refs' (the wire walk, or a decode of
   * the same bytes, numbered them in this order). A batch someone decoded
   * is changed decoded.
   */
  if (u->traces->req == NULL && u->traces->raw != NULL && sp__enrich_wire(j, u) == 0) return;
  if (sp_traces_writable(&u->traces) != 0) {
    sp_log_warn(NULL, "spanprofile: out of memory enriching %zu span(s); sent unchanged",
                u->n_refs);
    return;
  }
  sp_otlp_traces_req_t *req = u->traces->req;
  size_t i = 0, enriched = 0;
  for (size_t r = 0; r < req->n_resource_spans; r++) {
    sp_otlp_resource_spans_t *rs = req->resource_spans[r];
    for (size_t s = 0; s < rs->n_scope_spans; s++) {
      sp_otlp_scope_spans_t *ss = rs->scope_spans[s];
      for (size_t k = 0; k < ss->n_spans && i < u->n_refs; k++, i++) {
        if (!sp__attrs_for(j, sp__spj_deref(j->ix, u->refs[i]), &a)) continue;
        if (sp__spj_write_attrs(u->traces->arena, ss->spans[k], &a) == 0) enriched++;
      }
    }
  }
  sp_metric_add(j->m.spans_enriched, enriched);
}

/* Lets a held traces batch go (enriched); the unit may be freed. */
static void sp__emit_traces(sp_spj_t *j, sp_spj_unit_t *u) {
  if (!u->held) return;
  sp__hold_unlink(j, u);
  sp__enrich_traces(j, u);
  for (size_t i = 0; i < u->n_refs; i++) {
    sp_spj_span_t *e = sp__spj_deref(j->ix, u->refs[i]);
    if (e != NULL && e->held == u) e->held = NULL;
  }
  sp_traces_t *t = u->traces;
  u->traces = NULL;
  sp__emit(j, SP_SIGNAL_TRACES, u->port, t);
  if (!u->indexed) sp__unit_free(j, u);
}

/* Forgets the spans a unit indexed; the unit may be freed. */
static size_t sp__unindex(sp_spj_t *j, sp_spj_unit_t *u) {
  size_t removed = 0;
  sp__index_unlink(j, u);
  for (size_t i = 0; i < u->n_refs; i++) {
    if (i + 16 < u->n_refs) sp__spj_prefetch(j->ix, u->refs[i + 16].idx, false);
    if (i + 8 < u->n_refs) sp__spj_prefetch(j->ix, u->refs[i + 8].idx, true);
    sp_spj_span_t *e = sp__spj_deref(j->ix, u->refs[i]);
    if (e != NULL && e->owner == u) {
      sp__spj_remove(j->ix, u->refs[i].idx);
      removed++;
    }
  }
  if (!u->held) sp__unit_free(j, u);
  return removed;
}

/* ---- crediting spans --------------------------------------------------------------------- */

static bool sp__counts_undecided(const sp_spj_t *j, const sp_spj_span_t *e) {
  return j->pid_mode == SP_SPJ_PID_ALL ||
         (j->pid_mode == SP_SPJ_PID_LOCAL_ROOTS && (e->flags & SP_SPJ_F_LOCAL_ROOT));
}

/* Adds (delta 1), removes (-1) or just confirms (0) a sample's credit to a span. */
static void sp__credit(sp_spj_t *j, sp_spj_span_t *e, const sp_spj_skey_t *k, int delta,
                       bool final) {
  if (delta > 0) {
    e->joined++;
    e->count += k->count;
    e->cpu_ns += k->cpu_ns;
    e->wall_ns += k->wall_ns;
  } else if (delta < 0) {
    e->joined -= e->joined > 0;
    e->count -= k->count < e->count ? k->count : e->count;
    e->cpu_ns -= k->cpu_ns < e->cpu_ns ? k->cpu_ns : e->cpu_ns;
    e->wall_ns -= k->wall_ns < e->wall_ns ? k->wall_ns : e->wall_ns;
  }
  if (!final || delta < 0 || (e->flags & SP_SPJ_F_DECIDED)) return;
  e->flags |= SP_SPJ_F_DECIDED;
  sp_spj_unit_t *u = e->held;
  if (u == NULL || !sp__counts_undecided(j, e) || e->owner != u) return;
  if (--u->undecided == 0 && !j->cpu && !j->flushing)
    sp__emit_traces(j, u); /* nothing in it can change any more */
}

/* ---- traces in ---------------------------------------------------------------------------- */

static const sp_otlp_any_t *sp__attr(sp_otlp_kv_t *const *attrs, size_t n, const char *key) {
  for (size_t i = 0; i < n; i++)
    if (attrs[i]->key != NULL && strcmp(attrs[i]->key, key) == 0) return attrs[i]->value;
  return NULL;
}

typedef const char *(*sp_spj_lookup_fn)(const void *src, size_t attr_i, const sp_spj_keyset_t *ks,
                                        char *tmp, size_t cap);

#define SP_SPJ_VAL_MAX 256

/*
 * Data of different tenants (X-Scope-OrgID) never joins: service and
 * process keys are scoped by the tenant. Writes "tenant\x1es" into @p buf
 * and returns it, or @p s itself without a tenant; NULL when too long.
 */
static const char *sp__scoped(const char *tenant, const char *s, char *buf, size_t cap) {
  if (tenant == NULL || tenant[0] == '\0') return s;
  int n = snprintf(buf, cap, "%s\x1e%s", tenant, s);
  return n >= 0 && (size_t)n < cap ? buf : NULL;
}

/* Builds the key string of key set @p set into @p buf; false when incomplete. */
static bool sp__build_key(const sp_spj_t *j, const char *tenant, size_t set, sp_spj_lookup_fn get,
                          const void *src, char *buf, size_t cap) {
  const sp_spj_keyset_t *ks = &j->sets[set];
  if (ks->n == 0) return false;
  int n = snprintf(buf, cap, "%s\x1e%zu", tenant != NULL ? tenant : "", set);
  if (n < 0 || (size_t)n >= cap) return false;
  size_t len = (size_t)n;
  for (size_t i = 0; i < ks->n; i++) {
    char tmp[SP_SPJ_VAL_MAX];
    const char *v = get(src, i, ks, tmp, sizeof(tmp));
    if (v == NULL || v[0] == '\0') return false;
    size_t vl = strlen(v);
    if (len + 1 + vl + 1 > cap) return false;
    buf[len++] = '\x1f';
    memcpy(buf + len, v, vl + 1);
    len += vl;
  }
  return true;
}

static const char *sp__res_get(const void *src, size_t i, const sp_spj_keyset_t *ks, char *tmp,
                               size_t cap) {
  const sp_otlp_resource_spans_t *rs = src;
  if (rs->resource == NULL) return NULL;
  return sp__spj_any_str(
      sp__attr(rs->resource->attributes, rs->resource->n_attributes, ks->dotted[i]), tmp, cap);
}

typedef struct sp_spj_wres_s {
  const uint8_t *b;
  size_t len;
} sp_spj_wres_t;

static const char *sp__wres_get(const void *src, size_t i, const sp_spj_keyset_t *ks, char *tmp,
                                size_t cap) {
  const sp_spj_wres_t *r = src;
  return r->b != NULL && sp__spj_wire_attr(r->b, r->len, ks->dotted[i], tmp, cap) == 1 ? tmp : NULL;
}

static const char *sp__prof_get(const void *src, size_t i, const sp_spj_keyset_t *ks, char *tmp,
                                size_t cap) {
  const sp_profile_t *p = src;
  (void)tmp;
  (void)cap;
  const char *v = sp_profile_label(p, ks->underscored[i]);
  return v != NULL ? v : sp_profile_label(p, ks->dotted[i]);
}

static uint64_t sp__be64(const uint8_t *b) {
  uint64_t v = 0;
  for (int i = 0; i < 8; i++)
    v = v << 8 | b[i];
  return v;
}

static int64_t sp__ns(uint64_t v) { return v > (uint64_t)INT64_MAX ? INT64_MAX : (int64_t)v; }

static void sp__passthrough(sp_spj_t *j, unsigned signal, unsigned port, void *batch) {
  sp_metric_add(j->m.passthrough, 1);
  sp__emit(j, signal, port, batch);
}

/*
 * Evicts the oldest held data until the limits hold. Too many indexed spans:
 * the oldest indexing unit goes (its batch first if still held). Too many
 * bytes: the oldest of the held batches and the indexing units goes.
 */
static void sp__enforce(sp_spj_t *j) {
  for (;;) {
    bool spans_over = sp__spj_live(j->ix) > j->max_spans;
    if (!spans_over && sp__held_bytes(j) <= j->max_bytes) break;
    /* Room the index no longer needs goes back before anything is evicted. */
    if (!spans_over && sp__spj_trim(j->ix)) continue;
    sp_spj_unit_t *hu = j->hold_head, *iu = j->index_head;
    if (spans_over && iu == NULL) break;
    if (hu == NULL && iu == NULL) break;
    if (!spans_over && hu != NULL && (iu == NULL || hu->arrival_ms <= iu->arrival_ms)) {
      if (hu->signal == SP_SIGNAL_TRACES) {
        sp_metric_add(j->m.evicted_spans, hu->n_refs);
        sp__emit_traces(j, hu);
      } else {
        sp__emit_profiles(j, hu, true);
      }
    } else {
      if (iu->held) sp__emit_traces(j, iu);
      sp_metric_add(j->m.evicted_spans, sp__unindex(j, iu));
    }
  }
}

/*
 * Spans are read this many ahead of indexing them: looking a span's ID up
 * is a cache miss in a table of millions of slots, so its slot is asked for
 * when the span is read and is there when the span is indexed.
 */
#define SP_SPJ_AHEAD 8

/* Indexing one traces batch: the unit being filled and the current resource. */
typedef struct sp_spj_tctx_s {
  sp_spj_t *j;
  sp_spj_unit_t *u;
  size_t cap;
  size_t dups;
  sp_spj_str_t *svc;
  uint32_t proc;
  const char *tenant;
  sp_spj_wspan_t ahead[SP_SPJ_AHEAD]; /* read, not yet indexed (pointers into the request) */
  size_t ahead_first, ahead_n;
} sp_spj_tctx_t;

static void sp__t_resource(sp_spj_tctx_t *c, const char *svc, char *keys[2]) {
  sp_spj_t *j = c->j;
  char buf[SP_SPJ_KEY_MAX];
  const char *scoped = sp__scoped(c->tenant, svc, buf, sizeof(buf));
  sp__spj_unintern(j->ix, c->svc);
  c->svc = scoped != NULL ? sp__spj_intern(j->ix, scoped, strlen(scoped)) : NULL;
  c->proc = sp__spj_process(j->ix, keys, j->n_sets, true);
}

/* Indexes one span (or notes it as a duplicate); never fails: a span it cannot index still goes
 * out. */
static int sp__t_span(sp_spj_tctx_t *c, const sp_spj_wspan_t *w) {
  sp_spj_t *j = c->j;
  sp_spj_unit_t *u = c->u;
  if (u->n_refs == c->cap) {
    size_t cap = c->cap ? c->cap * 2 : 64;
    sp_spj_ref_t *r = sp_realloc(u->refs, cap * sizeof(*r));
    if (r == NULL) return SP_ENOMEM;
    j->unit_bytes += (cap - c->cap) * sizeof(*r);
    u->side_bytes += (cap - c->cap) * sizeof(*r);
    u->refs = r;
    c->cap = cap;
  }
  sp_spj_ref_t *ref = &u->refs[u->n_refs++];
  *ref = (sp_spj_ref_t){SP_SPJ_NONE, 0};
  sp_spj_str_t *svc = c->svc;
  if (svc == NULL || w->span_id_len != 8) return 0;
  uint64_t id = sp__be64(w->span_id);
  if (id == 0) return 0;
  uint32_t dup = sp__spj_lookup(j->ix, svc, id);
  if (dup != SP_SPJ_NONE) {
    *ref = (sp_spj_ref_t){dup, sp__spj_at(j->ix, dup)->gen};
    c->dups++;
    return 0;
  }
  sp_spj_span_t t = {0};
  t.span_id = id;
  t.parent_id = w->parent_len == 8 ? sp__be64(w->parent) : 0;
  t.start_ns = sp__ns(w->start);
  t.end_ns = sp__ns(w->end);
  if (w->trace_len == 16) memcpy(t.trace_id, w->trace, 16);
  /* A local root: no parent, or a parent flagged remote (HAS_IS_REMOTE and IS_REMOTE). */
  if (w->parent_len == 0 || (w->flags & 0x300u) == 0x300u) t.flags |= SP_SPJ_F_LOCAL_ROOT;
  t.owner = t.held = u;
  t.name = sp__spj_intern(j->ix, w->name != NULL ? w->name : "", w->name_len);
  if (t.name == NULL) return 0;
  svc->refs++;
  t.svc = svc;
  if (sp__spj_add(j->ix, &t, c->proc, w->thread, ref) != 0)
    return 0; /* out of memory: the span is not joinable, but it is not lost */
  u->owned++;
  if (sp__counts_undecided(j, &t)) u->undecided++;
  return 0;
}

/* Indexes the spans read ahead until at most @p keep wait; 0 or SP_ENOMEM. */
static int sp__t_drain(sp_spj_tctx_t *c, size_t keep) {
  while (c->ahead_n > keep) {
    int rc = sp__t_span(c, &c->ahead[c->ahead_first]);
    c->ahead_first = (c->ahead_first + 1) % SP_SPJ_AHEAD;
    c->ahead_n--;
    if (rc != 0) return rc;
  }
  return 0;
}

/* Reads a span ahead (its span-ID slot on its way into the cache), indexing the oldest one. */
static int sp__t_queue(sp_spj_tctx_t *c, const sp_spj_wspan_t *w) {
  if (w->span_id_len == 8) sp__spj_prefetch_id(c->j->ix, c->svc, sp__be64(w->span_id));
  c->ahead[(c->ahead_first + c->ahead_n) % SP_SPJ_AHEAD] = *w;
  c->ahead_n++;
  return sp__t_drain(c, SP_SPJ_AHEAD - 1);
}

static int sp__w_resource(void *ctx, const uint8_t *res, size_t len) {
  sp_spj_tctx_t *c = ctx;
  sp_spj_t *j = c->j;
  int rc = sp__t_drain(c, 0); /* the spans read ahead belong to the previous resource */
  if (rc != 0) return rc;
  char svc[SP_SPJ_VAL_MAX] = "";
  if (res != NULL && sp__spj_wire_attr(res, len, "service.name", svc, sizeof(svc)) < 0)
    return SP_EPROTO;
  sp_spj_wres_t r = {res, len};
  char keybuf[2][SP_SPJ_KEY_MAX];
  char *keys[2] = {NULL, NULL};
  for (size_t s = 0; s < j->n_sets; s++)
    if (sp__build_key(j, c->tenant, s, sp__wres_get, &r, keybuf[s], SP_SPJ_KEY_MAX))
      keys[s] = keybuf[s];
  sp__t_resource(c, svc, keys);
  return 0;
}

static int sp__w_span(void *ctx, const sp_spj_wspan_t *s) { return sp__t_queue(ctx, s); }

/* Indexes from the decoded request. */
static int sp__t_decoded(sp_spj_tctx_t *c, const sp_otlp_traces_req_t *req) {
  sp_spj_t *j = c->j;
  char keybuf[2][SP_SPJ_KEY_MAX];
  for (size_t r = 0; r < req->n_resource_spans; r++) {
    const sp_otlp_resource_spans_t *rs = req->resource_spans[r];
    char tmp[SP_SPJ_VAL_MAX];
    const char *svc = rs->resource != NULL
                          ? sp__spj_any_str(sp__attr(rs->resource->attributes,
                                                     rs->resource->n_attributes, "service.name"),
                                            tmp, sizeof(tmp))
                          : NULL;
    char *keys[2] = {NULL, NULL};
    for (size_t s = 0; s < j->n_sets; s++)
      if (sp__build_key(j, c->tenant, s, sp__res_get, rs, keybuf[s], SP_SPJ_KEY_MAX))
        keys[s] = keybuf[s];
    int rc = sp__t_drain(c, 0);
    if (rc != 0) return rc;
    sp__t_resource(c, svc != NULL ? svc : "", keys);
    for (size_t s = 0; s < rs->n_scope_spans; s++) {
      const sp_otlp_scope_spans_t *ss = rs->scope_spans[s];
      for (size_t k = 0; k < ss->n_spans; k++) {
        const sp_otlp_span_t *span = ss->spans[k];
        sp_spj_wspan_t w = {
            .trace = span->trace_id.data,
            .trace_len = span->trace_id.len,
            .span_id = span->span_id.data,
            .span_id_len = span->span_id.len,
            .parent = span->parent_span_id.data,
            .parent_len = span->parent_span_id.len,
            .name = span->name,
            .name_len = span->name != NULL ? strlen(span->name) : 0,
            .start = span->start_time_unix_nano,
            .end = span->end_time_unix_nano,
            .flags = span->flags,
            .thread = SP_SPJ_NO_THREAD,
        };
        if (j->thread_attr != NULL &&
            !sp__spj_any_int(sp__attr(span->attributes, span->n_attributes, j->thread_attr),
                             &w.thread))
          w.thread = SP_SPJ_NO_THREAD;
        rc = sp__t_queue(c, &w);
        if (rc != 0) return rc;
      }
    }
  }
  return sp__t_drain(c, 0);
}

/* Forgets what a failed walk indexed so the unit can start over. */
static void sp__t_rollback(sp_spj_tctx_t *c) {
  sp_spj_unit_t *u = c->u;
  for (size_t i = 0; i < u->n_refs; i++) {
    sp_spj_span_t *e = sp__spj_deref(c->j->ix, u->refs[i]);
    if (e != NULL && e->owner == u) sp__spj_remove(c->j->ix, u->refs[i].idx);
  }
  u->n_refs = u->owned = u->undecided = 0;
  c->dups = 0;
  c->ahead_first = c->ahead_n = 0;
}

void sp__spj_traces(sp_spj_t *j, sp_traces_t *b, unsigned port, uint64_t now_ms) {
  sp__spj_set_now(j->ix, now_ms);
  if (b->span_count == 0 && b->req == NULL) {
    sp__emit(j, SP_SIGNAL_TRACES, port, b);
    return;
  }
  sp_spj_unit_t *u = sp__unit_new(j, SP_SIGNAL_TRACES, port, now_ms);
  if (u == NULL) {
    sp__passthrough(j, SP_SIGNAL_TRACES, port, b);
    return;
  }
  u->traces = b;
  u->side_bytes = sizeof(*u);
  j->unit_bytes += u->side_bytes;
  sp_spj_tctx_t c = {.j = j, .u = u, .proc = SP_SPJ_NONE, .tenant = b->meta.tenant};
  int rc = SP_EPROTO;
  /*
   * The bytes as received are read in place; a batch someone already
   * decoded (or changed) is read decoded.
   */
  if (b->req == NULL && b->raw != NULL) {
    rc = sp__spj_wire_walk(b->raw, b->raw_len, j->thread_attr, sp__w_resource, sp__w_span, &c);
    if (rc == 0) rc = sp__t_drain(&c, 0);
    if (rc != 0) sp__t_rollback(&c);
  }
  if (rc != 0) {
    const sp_otlp_traces_req_t *req = sp_traces_request(b);
    rc = req != NULL ? sp__t_decoded(&c, req) : SP_ENOMEM;
    if (rc != 0) sp__t_rollback(&c);
  }
  sp__spj_unintern(j->ix, c.svc);
  if (rc != 0 || u->n_refs == 0) {
    u->traces = NULL;
    sp__unit_free(j, u);
    if (rc != 0)
      sp__passthrough(j, SP_SIGNAL_TRACES, port, b);
    else
      sp__emit(j, SP_SIGNAL_TRACES, port, b);
    sp__gauges(j);
    return;
  }
  sp_metric_add(j->m.spans_indexed, u->owned);
  sp_metric_add(j->m.spans_duplicate, c.dups);
  bool hold = j->cpu || u->undecided > 0;
  if (u->owned > 0) sp__index_link(j, u);
  if (hold) {
    sp__traces_fit(b);
    u->batch_bytes = sp__traces_bytes(b);
    sp__hold_link(j, u);
  } else {
    for (size_t k = 0; k < u->n_refs; k++) {
      sp_spj_span_t *e = sp__spj_deref(j->ix, u->refs[k]);
      if (e != NULL && e->held == u) e->held = NULL;
    }
    u->traces = NULL;
    sp__emit(j, SP_SIGNAL_TRACES, port, b);
    if (!u->indexed) sp__unit_free(j, u);
  }
  sp__enforce(j);
  sp__gauges(j);
}

/* ---- profiles ----------------------------------------------------------------------------- */

/*
 * Span IDs found for this profile, direct-mapped: its samples name a few
 * dozen spans, each many times, and a hit here skips the hash lookup's
 * cache misses. An entry is trusted only while its span is live with that
 * ID and service (checked through its generation), so nothing the join
 * does between samples can make it wrong.
 */
#define SP_SPJ_IDCACHE 64

typedef struct sp_spj_idc_s {
  uint64_t id; /* 0: empty (span IDs are never 0) */
  sp_spj_ref_t ref;
} sp_spj_idc_t;

typedef struct sp_spj_pinfo_s {
  sp_spj_pctx_t c;
  sp_spj_str_t *svc; /* not referenced: looked up only */
  uint32_t proc;
  sp_spj_idc_t idc[SP_SPJ_IDCACHE];
} sp_spj_pinfo_t;

/* Sets up reading @p p (wire index @p w); free pi->c with sp__spj_pctx_free. */
static void sp__pinfo(sp_spj_t *j, const char *tenant, sp_profile_t *p, const sp_pprof_wire_t *w,
                      sp_spj_pinfo_t *pi) {
  sp__spj_pctx_init(&pi->c, w, p, (const char *const *)j->id_labels, j->n_id_labels,
                    j->thread_label, j->time_label);
  pi->c.skip_values = !j->cpu; /* only span_cpu_attributes reads the values */
  const char *svc = sp_profile_label(p, "service_name");
  if (svc == NULL) svc = sp_profile_label(p, "service.name");
  if (svc == NULL) svc = "";
  char buf[SP_SPJ_KEY_MAX];
  const char *scoped = sp__scoped(tenant, svc, buf, sizeof(buf));
  pi->svc = scoped != NULL ? sp__spj_intern_find(j->ix, scoped, strlen(scoped)) : NULL;
  char keybuf[2][SP_SPJ_KEY_MAX];
  char *keys[2] = {NULL, NULL};
  for (size_t s = 0; s < j->n_sets; s++)
    if (sp__build_key(j, tenant, s, sp__prof_get, p, keybuf[s], SP_SPJ_KEY_MAX))
      keys[s] = keybuf[s];
  pi->proc = sp__spj_process(j->ix, keys, j->n_sets, false);
  memset(pi->idc, 0, sizeof(pi->idc));
}

/* sp__spj_lookup through the profile's cache. */
static uint32_t sp__lookup_cached(sp_spj_t *j, sp_spj_pinfo_t *pi, uint64_t id) {
  sp_spj_idc_t *c = &pi->idc[(id * 0x9e3779b97f4a7c15ULL) >> 58];
  if (c->id == id) {
    sp_spj_span_t *e = sp__spj_deref(j->ix, c->ref);
    if (e != NULL && e->span_id == id && e->svc == pi->svc) return c->ref.idx;
  }
  uint32_t idx = sp__spj_lookup(j->ix, pi->svc, id);
  if (idx != SP_SPJ_NONE)
    *c = (sp_spj_idc_t){.id = id, .ref = {idx, sp__spj_at(j->ix, idx)->gen}};
  return idx;
}

/* Resolves one sample against what is known now. */
static int sp__resolve(sp_spj_t *j, sp_spj_pinfo_t *pi, const sp_spj_skey_t *k, uint32_t *idx) {
  if (k->has_id) {
    *idx = sp__lookup_cached(j, pi, k->span_id);
    if (*idx != SP_SPJ_NONE) return SP_SPJ_JOINED_ID;
    return sp__spj_recently_removed(j->ix, pi->svc, k->span_id) ? SP_SPJ_R_EXPIRED
                                                                : SP_SPJ_R_NO_SPAN;
  }
  if (k->time_ns <= 0) return SP_SPJ_R_NO_TIMESTAMP;
  return sp__spj_resolve_window(j->ix, pi->proc, k->thread, k->time_ns, idx);
}

typedef struct sp_spj_wlist_s {
  sp_spj_write_t *w;
  uint32_t *prof;
  size_t n, cap;
} sp_spj_wlist_t;

static int sp__wpush(sp_spj_wlist_t *l, uint32_t prof, uint32_t sample, const sp_spj_skey_t *k,
                     const sp_spj_span_t *e, bool with_id) {
  if (l->n == l->cap) {
    size_t cap = l->cap ? l->cap * 2 : 1024; /* a CPU profile: ~1,500 samples, once regrown */
    sp_spj_write_t *w = sp_realloc(l->w, cap * sizeof(*w));
    if (w == NULL) return SP_ENOMEM;
    l->w = w;
    uint32_t *p = sp_realloc(l->prof, cap * sizeof(*p));
    if (p == NULL) return SP_ENOMEM;
    l->prof = p;
    l->cap = cap;
  }
  l->w[l->n] = (sp_spj_write_t){.sample = sample,
                                .with_span_id = with_id,
                                .has_span_id_label = k->has_span_id_label,
                                .has_span_name = k->has_span_name,
                                .has_trace_id = k->has_trace_id,
                                .span = e};
  l->prof[l->n++] = prof;
  return 0;
}

/*
 * Writes the collected labels into *@p batch, making it writable first (a
 * shared batch is copied). Labels are spliced into the encoded profiles;
 * nothing is decoded.
 */
static void sp__apply_writes(sp_spj_t *j, sp_profiles_t **batch, sp_spj_wlist_t *l) {
  if (l->n == 0) return;
  if (sp_profiles_writable(batch) != 0) {
    sp_log_warn(NULL, "spanprofile: out of memory labelling %zu sample(s); sent unlabelled", l->n);
    return;
  }
  size_t i = 0;
  while (i < l->n) {
    uint32_t prof = l->prof[i];
    size_t end = i;
    while (end < l->n && l->prof[end] == prof)
      end++;
    sp_profile_t *p = &(*batch)->items[prof];
    const sp_pprof_wire_t *w = sp_profile_wire(*batch, p);
    if (w != NULL) {
      sp_spj_pctx_t c;
      sp__spj_pctx_init(&c, w, p, (const char *const *)j->id_labels, j->n_id_labels,
                        j->thread_label, j->time_label);
      if (sp__spj_write_labels(*batch, p, &c, l->w + i, end - i) != 0)
        sp_log_warn(NULL, "spanprofile: out of memory labelling samples; some sent unlabelled");
      sp__spj_pctx_free(&c);
    } else {
      sp_log_warn(NULL, "spanprofile: out of memory labelling samples; some sent unlabelled");
    }
    i = end;
  }
}

static void sp__count(sp_spj_t *j, int r) {
  if (r == SP_SPJ_JOINED_ID)
    sp_metric_add(j->m.joined_id, 1);
  else if (r == SP_SPJ_JOINED_WINDOW)
    sp_metric_add(j->m.joined_window, 1);
  else if (r >= 0 && r < SP_SPJ_R_COUNT)
    sp_metric_add(j->m.unjoined[r], 1);
}

/* Resolves the waiting samples of a held profiles unit for good, labels them and lets it go. */
static void sp__emit_profiles(sp_spj_t *j, sp_spj_unit_t *u, bool evicted) {
  sp__hold_unlink(j, u);
  j->held_samples -= u->n_samples;
  if (evicted) sp_metric_add(j->m.evicted_samples, u->n_samples);
  sp_spj_wlist_t wl = {0};
  bool oom = false;
  size_t i = 0;
  while (i < u->n_pend) {
    uint32_t prof = u->pend[i].prof;
    sp_profile_t *p = &u->profiles->items[prof];
    const sp_pprof_wire_t *w = sp_profile_wire(u->profiles, p);
    if (w == NULL) {
      /* Only after an out-of-memory copy or index: the samples go out as they came. */
      for (; i < u->n_pend && u->pend[i].prof == prof; i++)
        sp__count(j, SP_SPJ_R_NO_SPAN);
      continue;
    }
    sp_spj_pinfo_t pi;
    sp__pinfo(j, u->profiles->meta.tenant, p, w, &pi);
    for (; i < u->n_pend && u->pend[i].prof == prof; i++) {
      const sp_spj_pend_t *pd = &u->pend[i];
      sp_spj_skey_t k;
      sp__spj_sample_key(&pi.c, pd->sample, &k);
      uint32_t idx = SP_SPJ_NONE;
      int r = sp__resolve(j, &pi, &k, &idx);
      sp_spj_span_t *tent = sp__spj_deref(j->ix, pd->tent);
      sp_spj_span_t *e =
          (r == SP_SPJ_JOINED_ID || r == SP_SPJ_JOINED_WINDOW) ? sp__spj_at(j->ix, idx) : NULL;
      if (tent != NULL && tent != e) sp__credit(j, tent, &k, -1, false);
      if (e != NULL) {
        sp__credit(j, e, &k, tent == e ? 0 : 1, true);
        if (!oom && sp__wpush(&wl, prof, pd->sample, &k, e, r == SP_SPJ_JOINED_WINDOW) != 0)
          oom = true;
      }
      sp__count(j, r);
    }
    sp__spj_pctx_free(&pi.c);
  }
  sp__apply_writes(j, &u->profiles, &wl);
  sp_free(wl.w);
  sp_free(wl.prof);
  sp_profiles_t *b = u->profiles;
  u->profiles = NULL;
  sp__emit(j, SP_SIGNAL_PROFILES, u->port, b);
  sp__unit_free(j, u);
}

void sp__spj_profiles(sp_spj_t *j, sp_profiles_t *b, unsigned port, uint64_t now_ms) {
  sp__spj_set_now(j->ix, now_ms);
  sp_spj_unit_t *u = sp__unit_new(j, SP_SIGNAL_PROFILES, port, now_ms);
  if (u == NULL) {
    sp__passthrough(j, SP_SIGNAL_PROFILES, port, b);
    return;
  }
  u->profiles = b;
  u->side_bytes = sizeof(*u);
  j->unit_bytes += u->side_bytes;
  sp_spj_wlist_t wl = {0};
  size_t cap_pend = 0;
  bool oom = false;
  /*
   * A tentative thread/time join only serves spans whose batch is held (to
   * credit them before they leave); when spans are never held, the one
   * resolution at the profile's departure is enough.
   */
  bool tentative = j->cpu || j->pid_mode != SP_SPJ_PID_NONE;
  for (size_t pidx = 0; pidx < b->n && !oom; pidx++) {
    sp_profile_t *p = &b->items[pidx];
    /* Read in place; corrupt pprof (or no memory for its index): forwarded as it came. */
    const sp_pprof_wire_t *w = sp_profile_wire(b, p);
    if (w == NULL) continue;
    sp_spj_pinfo_t pi;
    sp__pinfo(j, b->meta.tenant, p, w, &pi);
    size_t ns = w->n_samples;
    u->n_samples += ns;
    for (size_t s = 0; s < ns; s++) {
      sp_spj_skey_t k;
      sp__spj_sample_key(&pi.c, s, &k);
      uint32_t idx = SP_SPJ_NONE;
      int r;
      if (!k.has_id && k.time_ns > 0 && !tentative)
        r = SP_SPJ_R_NO_SPAN; /* resolved once, when the profile leaves */
      else
        r = sp__resolve(j, &pi, &k, &idx);
      sp_spj_ref_t tent = {SP_SPJ_NONE, 0};
      if (r == SP_SPJ_JOINED_ID) {
        sp_spj_span_t *e = sp__spj_at(j->ix, idx);
        sp__credit(j, e, &k, 1, true);
        sp__count(j, r);
        if (sp__wpush(&wl, (uint32_t)pidx, (uint32_t)s, &k, e, false) != 0) oom = true;
        continue;
      }
      if (r == SP_SPJ_R_NO_TIMESTAMP || (r == SP_SPJ_R_EXPIRED && !k.has_id)) {
        sp__count(j, r); /* final: nothing can change these */
        continue;
      }
      if (r == SP_SPJ_JOINED_WINDOW) {
        sp_spj_span_t *e = sp__spj_at(j->ix, idx);
        sp__credit(j, e, &k, 1, false);
        tent = (sp_spj_ref_t){idx, e->gen};
      }
      if (u->n_pend == cap_pend) {
        size_t cap = cap_pend ? cap_pend * 2 : 64;
        sp_spj_pend_t *pd = sp_realloc(u->pend, cap * sizeof(*pd));
        if (pd == NULL) {
          oom = true;
          sp__count(j, r);
          break;
        }
        u->pend = pd;
        cap_pend = cap;
      }
      u->pend[u->n_pend++] = (sp_spj_pend_t){(uint32_t)pidx, (uint32_t)s, tent};
    }
    sp__spj_pctx_free(&pi.c);
  }
  if (oom) sp_log_warn(NULL, "spanprofile: out of memory joining a profiles batch; sending it now");
  sp__apply_writes(j, &u->profiles, &wl);
  sp_free(wl.w);
  sp_free(wl.prof);
  size_t pend_bytes = cap_pend * sizeof(sp_spj_pend_t);
  u->side_bytes += pend_bytes;
  j->unit_bytes += pend_bytes;
  if (u->n_pend == 0 || oom) {
    if (oom && u->n_pend > 0) {
      /* Resolve what waits with what is known: nothing is held without memory. */
      j->held_samples += u->n_samples;
      sp__emit_profiles(j, u, false);
    } else {
      sp_profiles_t *out = u->profiles;
      u->profiles = NULL;
      sp__emit(j, SP_SIGNAL_PROFILES, port, out);
      sp__unit_free(j, u);
    }
  } else {
    u->batch_bytes = sp_arena_bytes(u->profiles->arena) + sizeof(*u->profiles) +
                     u->profiles->cap * sizeof(*u->profiles->items);
    j->held_samples += u->n_samples;
    sp__hold_link(j, u);
  }
  sp__enforce(j);
  sp__gauges(j);
}

/* ---- time ---------------------------------------------------------------------------------- */

void sp__spj_advance(sp_spj_t *j, uint64_t now_ms) {
  sp__spj_set_now(j->ix, now_ms);
  while (j->hold_head != NULL && j->hold_head->arrival_ms + j->wait_ms <= now_ms) {
    sp_spj_unit_t *u = j->hold_head;
    if (u->signal == SP_SIGNAL_TRACES)
      sp__emit_traces(j, u);
    else
      sp__emit_profiles(j, u, false);
  }
  while (j->index_head != NULL && j->index_head->arrival_ms + 2 * j->wait_ms <= now_ms)
    sp__unindex(j, j->index_head);
  sp__spj_gc(j->ix, now_ms, 2 * j->wait_ms);
  sp__spj_trim(j->ix);
  sp__gauges(j);
}

uint64_t sp__spj_deadline(sp_spj_t *j) {
  uint64_t d = sp__spj_gc_due(j->ix, 2 * j->wait_ms);
  if (j->hold_head != NULL && j->hold_head->arrival_ms + j->wait_ms < d)
    d = j->hold_head->arrival_ms + j->wait_ms;
  if (j->index_head != NULL && j->index_head->arrival_ms + 2 * j->wait_ms < d)
    d = j->index_head->arrival_ms + 2 * j->wait_ms;
  return d;
}

void sp__spj_flush(sp_spj_t *j) {
  /* Profiles first, so their final credits reach spans still held. */
  j->flushing = true;
  for (sp_spj_unit_t *u = j->hold_head, *next; u != NULL; u = next) {
    next = u->next;
    if (u->signal == SP_SIGNAL_PROFILES) sp__emit_profiles(j, u, false);
  }
  while (j->hold_head != NULL)
    sp__emit_traces(j, j->hold_head);
  while (j->index_head != NULL)
    sp__unindex(j, j->index_head);
  j->flushing = false;
  sp__gauges(j);
}

void sp__spj_held(sp_spj_t *j, size_t *spans, size_t *samples) {
  *spans = sp__spj_live(j->ix);
  *samples = j->held_samples;
}

size_t sp__spj_held_items(sp_spj_t *j) {
  size_t n = 0;
  for (sp_spj_unit_t *u = j->hold_head; u != NULL; u = u->next)
    n += u->signal == SP_SIGNAL_TRACES ? u->n_refs : u->profiles->n;
  return n;
}

void sp__spj_zero_gauges(sp_spj_t *j, const sp_spj_metrics_t *m) {
  (void)j;
  sp_metric_set(m->held_spans, 0);
  sp_metric_set(m->held_samples, 0);
  sp_metric_set(m->held_bytes, 0);
}

void sp__spj_destroy(sp_spj_t *j) {
  if (j == NULL) return;
  while (j->hold_head != NULL) {
    sp_spj_unit_t *u = j->hold_head;
    sp__hold_unlink(j, u);
    if (!u->indexed) sp__unit_free(j, u);
  }
  while (j->index_head != NULL) {
    sp_spj_unit_t *u = j->index_head;
    sp__index_unlink(j, u);
    sp__unit_free(j, u);
  }
  sp__spj_index_destroy(j->ix);
  for (size_t s = 0; s < 2; s++)
    sp__keyset_free(&j->sets[s]);
  sp_free(j->thread_attr);
  sp_free(j->thread_label);
  sp_free(j->time_label);
  for (size_t i = 0; i < j->n_id_labels; i++)
    sp_free(j->id_labels[i]);
  sp_free(j->id_labels);
  sp_free(j);
}
