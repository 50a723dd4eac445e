/*
 * spanprofile_enrich.c — reading what a pprof sample offers the join, and
 * writing what the join found: labels on samples, attributes on spans.
 *
 * Profiles are never decoded here: samples are read from the encoded bytes
 * through the profile's wire index (pipeline/pprofwire.h). pprof keeps every
 * string once in the string table and refers to it by index, so reading a
 * sample's labels is integer comparisons against the indices of the few
 * label names the join cares about, looked up once per profile. Label
 * values (span IDs, thread numbers as text) repeat across the samples of a
 * profile — a CPU profile of 1,500 samples typically names a few dozen
 * spans — so each distinct string is parsed once per profile and the
 * result kept in a lazily allocated array indexed by string index.
 *
 * Writing splices the encoded profile: the new strings (deduplicated per
 * call: span names and trace IDs repeat across samples) are appended to the
 * string table and the new labels to the touched samples — encoded once per
 * span as a label group of the splice — in one copy into the batch arena;
 * the result replaces the profile's bytes, with its index (strings, samples
 * and the label-key summary the exporter reads; not the pre-decoded labels,
 * which nothing reads after the join). Nothing that was
 * there changes or moves, so indices stay valid, and until the final swap
 * the profile is untouched — a failure leaves it as it was.
 *
 * Span attributes are added the same way as before: a new attribute array
 * in the batch's arena holding the old entries plus the new ones. Keys a
 * span already has (an SDK may have set pyroscope.profile.id itself) are
 * left alone.
 */
#include "processors/spanprofile/spanprofile_int.h"

#include "pipeline/alloc.h"
#include "pipeline/error.h"
#include "pipeline/hex.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- reading -------------------------------------------------------------------------- */

/* Per string index: the parse results of sp__memo_* (state bits in memo_st). */
struct sp_spj_memo_s {
  uint64_t id;
  int64_t num;
};

enum {
  SP_MEMO_ID_DONE = 1u << 0,
  SP_MEMO_ID_OK = 1u << 1,
  SP_MEMO_NUM_DONE = 1u << 2,
  SP_MEMO_NUM_OK = 1u << 3,
};

/* Samples with more labels than this (or values past it) use the context's scratch. */
#define SP_SPJ_STACK_LABELS 16
#define SP_SPJ_STACK_VALUES 8

/*
 * String @p i as the decoded Profile would show it: protobuf-c gives
 * strings as C strings, so text after an embedded NUL was never seen.
 */
static const char *sp__wstr(const sp_pprof_wire_t *w, int64_t i, size_t *len) {
  const char *s = sp_pprof_wire_str(w, i, len);
  const char *nul = *len > 0 ? memchr(s, '\0', *len) : NULL;
  if (nul != NULL) *len = (size_t)(nul - s);
  return s;
}

static bool sp__wstr_is(const sp_pprof_wire_t *w, int64_t i, const char *name) {
  size_t len;
  const char *s = sp__wstr(w, i, &len);
  return len == strlen(name) && memcmp(s, name, len) == 0;
}

static int64_t sp__unit_scale(const sp_pprof_wire_t *w, int64_t unit) {
  if (sp__wstr_is(w, unit, "nanoseconds")) return 1;
  if (sp__wstr_is(w, unit, "microseconds")) return 1000;
  if (sp__wstr_is(w, unit, "milliseconds")) return 1000000;
  if (sp__wstr_is(w, unit, "seconds")) return 1000000000;
  return 0;
}

void sp__spj_pctx_init(sp_spj_pctx_t *c, const sp_pprof_wire_t *w, const sp_profile_t *p,
                       const char *const *id_labels, size_t n_id_labels, const char *thread_label,
                       const char *time_label) {
  memset(c, 0, sizeof(*c));
  c->w = w;
  c->prof = p;
  c->n_k_id = n_id_labels < 4 ? n_id_labels : 4;
  for (size_t i = 0; i < 4; i++)
    c->k_id[i] = -1;
  c->k_thread = c->k_time = c->k_span_name = c->k_trace_id = -1;
  c->v_count = c->v_cpu = c->v_wall = -1;
  /* One pass over the string table finds every label name the join reads. */
  const char *names[8];
  int64_t *slots[8];
  size_t lens[8];
  size_t nn = 0;
  for (size_t i = 0; i < c->n_k_id; i++) {
    names[nn] = id_labels[i];
    slots[nn++] = &c->k_id[i];
  }
  if (thread_label != NULL && thread_label[0] != '\0') {
    names[nn] = thread_label;
    slots[nn++] = &c->k_thread;
  }
  if (time_label != NULL && time_label[0] != '\0') {
    names[nn] = time_label;
    slots[nn++] = &c->k_time;
  }
  names[nn] = "span_name";
  slots[nn++] = &c->k_span_name;
  names[nn] = "trace_id";
  slots[nn++] = &c->k_trace_id;
  size_t minlen = SIZE_MAX, maxlen = 0;
  /* The names' first bytes: most strings (function and file names) start with none of them. */
  uint64_t first[4] = {0, 0, 0, 0};
  for (size_t i = 0; i < nn; i++) {
    lens[i] = strlen(names[i]);
    if (lens[i] < minlen) minlen = lens[i];
    if (lens[i] > maxlen) maxlen = lens[i];
    uint8_t f = (uint8_t)names[i][0]; /* an empty name: '\0', met by strings starting with NUL */
    first[f >> 6] |= 1ull << (f & 63);
  }
  for (size_t s = 1; s < w->n_strings; s++) {
    size_t len = w->strings[s].len;
    if (len < minlen) continue; /* shorter than every name (a NUL only shortens) */
    const char *str = (const char *)w->raw + w->strings[s].off;
    uint8_t f = len > 0 ? (uint8_t)str[0] : 0;
    if (len > 0 && !(first[f >> 6] >> (f & 63) & 1)) continue;
    if (len > maxlen) {
      /* Longer than every name: equal only when a NUL ends it early, as decoded. */
      if (str[maxlen] != '\0' && memchr(str, '\0', maxlen) == NULL) continue;
    }
    for (size_t i = 0; i < nn; i++) {
      if (*slots[i] < 0 && len >= lens[i] && memcmp(str, names[i], lens[i]) == 0 &&
          (len == lens[i] || str[lens[i]] == '\0'))
        *slots[i] = (int64_t)s;
    }
  }
  for (size_t i = 0; i < w->n_sample_types; i++) {
    int64_t type = w->sample_types[i][0], unit = w->sample_types[i][1];
    if (c->v_count < 0 && (sp__wstr_is(w, type, "samples") || sp__wstr_is(w, type, "sample") ||
                           sp__wstr_is(w, unit, "count")))
      c->v_count = (int)i;
    else if (c->v_cpu < 0 && sp__wstr_is(w, type, "cpu") && sp__unit_scale(w, unit) > 0) {
      c->v_cpu = (int)i;
      c->cpu_scale = sp__unit_scale(w, unit);
    } else if (c->v_wall < 0 && sp__wstr_is(w, type, "wall") && sp__unit_scale(w, unit) > 0) {
      c->v_wall = (int)i;
      c->wall_scale = sp__unit_scale(w, unit);
    }
  }
  int vmax = c->v_count;
  if (c->v_cpu > vmax) vmax = c->v_cpu;
  if (c->v_wall > vmax) vmax = c->v_wall;
  c->v_need = (size_t)(vmax + 1);
}

void sp__spj_pctx_free(sp_spj_pctx_t *c) {
  sp_free(c->memo);
  sp_free(c->lbuf);
  sp_free(c->vbuf);
  c->memo = NULL;
  c->memo_st = NULL;
  c->lbuf = NULL;
  c->vbuf = NULL;
  c->lcap = 0;
}

static inline int sp__nib(char ch) {
  if (ch >= '0' && ch <= '9') return ch - '0';
  if (ch >= 'a' && ch <= 'f') return ch - 'a' + 10;
  if (ch >= 'A' && ch <= 'F') return ch - 'A' + 10;
  return -1;
}

/* @p len characters (no NUL among them) as a non-zero span ID. */
static bool sp__parse_span_id_n(const char *s, size_t len, uint64_t *out) {
  if (len != 16) return false;
  uint64_t v = 0;
  for (int i = 0; i < 16; i++) {
    int n = sp__nib(s[i]);
    if (n < 0) return false;
    v = v << 4 | (uint64_t)n;
  }
  if (v == 0) return false;
  *out = v;
  return true;
}

bool sp__spj_parse_span_id(const char *s, uint64_t *out) {
  return sp__parse_span_id_n(s, strnlen(s, 17), out);
}

static bool sp__parse_i64(const char *s, int64_t *out) {
  if (s == NULL || *s == '\0') return false;
  char *end;
  long long v = strtoll(s, &end, 10);
  if (*end != '\0') return false;
  *out = v;
  return true;
}

/* sp__parse_i64 of @p len characters (no NUL among them). */
static bool sp__parse_i64_n(const char *s, size_t len, int64_t *out) {
  char small[64];
  char *buf = small;
  if (len == 0) return false;
  if (len >= sizeof(small) && (buf = sp_malloc(len + 1)) == NULL) return false;
  memcpy(buf, s, len);
  buf[len] = '\0';
  bool ok = sp__parse_i64(buf, out);
  if (buf != small) sp_free(buf);
  return ok;
}

/* The memo state of string @p i (in range), allocating the memo on first use; NULL without it. */
static uint8_t *sp__memo(sp_spj_pctx_t *c, int64_t i) {
  if (c->memo == NULL) {
    if (c->memo_failed) return NULL;
    size_t n = c->w->n_strings;
    c->memo = sp_malloc(n * (sizeof(*c->memo) + 1));
    if (c->memo == NULL) {
      c->memo_failed = true;
      return NULL;
    }
    c->memo_st = (uint8_t *)(c->memo + n);
    memset(c->memo_st, 0, n);
  }
  return &c->memo_st[i];
}

/* Label value @p str as a span ID, parsed once per string. */
static bool sp__value_span_id(sp_spj_pctx_t *c, int64_t str, uint64_t *out) {
  if (str <= 0 || (size_t)str >= c->w->n_strings) return false;
  uint8_t *st = sp__memo(c, str);
  if (st != NULL && (*st & SP_MEMO_ID_DONE)) {
    if (!(*st & SP_MEMO_ID_OK)) return false;
    *out = c->memo[str].id;
    return true;
  }
  size_t len;
  const char *s = sp__wstr(c->w, str, &len);
  uint64_t v = 0;
  bool ok = sp__parse_span_id_n(s, len, &v);
  if (st != NULL) {
    *st |= SP_MEMO_ID_DONE | (ok ? SP_MEMO_ID_OK : 0);
    c->memo[str].id = v;
  }
  if (ok) *out = v;
  return ok;
}

/* Label value @p str as a decimal integer, parsed once per string. */
static bool sp__value_i64(sp_spj_pctx_t *c, int64_t str, int64_t *out) {
  if (str <= 0 || (size_t)str >= c->w->n_strings) return false;
  uint8_t *st = sp__memo(c, str);
  if (st != NULL && (*st & SP_MEMO_NUM_DONE)) {
    if (!(*st & SP_MEMO_NUM_OK)) return false;
    *out = c->memo[str].num;
    return true;
  }
  size_t len;
  const char *s = sp__wstr(c->w, str, &len);
  int64_t v = 0;
  bool ok = sp__parse_i64_n(s, len, &v);
  if (st != NULL) {
    *st |= SP_MEMO_NUM_DONE | (ok ? SP_MEMO_NUM_OK : 0);
    c->memo[str].num = v;
  }
  if (ok) *out = v;
  return ok;
}

/* The labels of sample @p i: @p stack when they fit, else the context's scratch. */
static const sp_pw_label_t *sp__labels(sp_spj_pctx_t *c, size_t i, sp_pw_label_t *stack,
                                       size_t *n) {
  size_t total = sp_pprof_wire_labels(c->w, i, stack, SP_SPJ_STACK_LABELS);
  *n = total;
  if (total <= SP_SPJ_STACK_LABELS) return stack;
  if (total > c->lcap) {
    sp_pw_label_t *b = sp_realloc(c->lbuf, total * sizeof(*b));
    if (b == NULL) {
      *n = SP_SPJ_STACK_LABELS; /* out of memory: the first ones only */
      return stack;
    }
    c->lbuf = b;
    c->lcap = total;
  }
  sp_pprof_wire_labels(c->w, i, c->lbuf, total);
  return c->lbuf;
}

/* One label of a sample into @p k (the loop body of sp__read_labels). */
static inline void sp__key_label(sp_spj_pctx_t *c, sp_spj_skey_t *k, int *id_rank, int64_t key,
                                 int64_t str, int64_t num) {
  if (key <= 0) return;
  for (size_t j = 0; j < c->n_k_id; j++) {
    if (key == c->k_id[j]) {
      if (j == 0) k->has_span_id_label = true;
      uint64_t id;
      /* The first configured spelling wins when a sample carries several. */
      if ((int)j < *id_rank && sp__value_span_id(c, str, &id)) {
        k->has_id = true;
        k->span_id = id;
        *id_rank = (int)j;
      }
    }
  }
  if (key == c->k_span_name) {
    k->has_span_name = true;
  } else if (key == c->k_trace_id) {
    k->has_trace_id = true;
  } else if (key == c->k_thread && k->thread == SP_SPJ_NO_THREAD) {
    int64_t v;
    if (str > 0 ? sp__value_i64(c, str, &v) : (v = num, true)) k->thread = v;
  } else if (key == c->k_time && k->time_ns == 0 && str == 0 && num > 0) {
    k->time_ns = num;
  }
}

/*
 * The label part of sp__spj_sample_key: from the pre-decoded labels when
 * the index has them (the receiver made them on the thread pool), else
 * decoded from the sample's bytes.
 */
static void sp__read_labels(sp_spj_pctx_t *c, size_t i, sp_spj_skey_t *k) {
  memset(k, 0, sizeof(*k));
  k->thread = SP_SPJ_NO_THREAD;
  const sp_profile_t *p = c->prof;
  if (i < p->n_ext) {
    if (p->sample_time_ns != NULL && p->sample_time_ns[i] > 0) k->time_ns = p->sample_time_ns[i];
    if (p->sample_thread != NULL && p->sample_thread[i] >= 0) k->thread = p->sample_thread[i];
  }
  int id_rank = 99;
  const sp_pprof_wire_t *w = c->w;
  if (w->plabels != NULL) {
    if (i >= w->n_samples) return;
    for (uint32_t l = w->plabel_start[i], e = w->plabel_start[i + 1]; l < e; l++) {
      uint32_t key = w->plabels[l].key, val = w->plabels[l].val;
      if (key & SP_PW_PLABEL_NUM)
        sp__key_label(c, k, &id_rank, key & ~SP_PW_PLABEL_NUM, 0, val);
      else
        sp__key_label(c, k, &id_rank, key, val, 0);
    }
    return;
  }
  sp_pw_label_t stack[SP_SPJ_STACK_LABELS];
  size_t n;
  const sp_pw_label_t *lbs = sp__labels(c, i, stack, &n);
  for (size_t l = 0; l < n; l++)
    sp__key_label(c, k, &id_rank, lbs[l].key, lbs[l].str, lbs[l].num);
}

void sp__spj_sample_key(sp_spj_pctx_t *c, size_t i, sp_spj_skey_t *k) {
  sp__read_labels(c, i, k);
  k->count = 1;
  if (c->v_need == 0 || c->skip_values) return;
  int64_t stack[SP_SPJ_STACK_VALUES];
  int64_t *v = stack;
  size_t cap = SP_SPJ_STACK_VALUES;
  if (c->v_need > SP_SPJ_STACK_VALUES) {
    if (c->vbuf == NULL) c->vbuf = sp_malloc(c->v_need * sizeof(*c->vbuf));
    if (c->vbuf != NULL) {
      v = c->vbuf;
      cap = c->v_need;
    }
  }
  size_t nv = sp_pprof_wire_values(c->w, i, v, cap);
  if (nv > cap) nv = cap; /* only without memory for a very wide sample */
  if (c->v_count >= 0 && (size_t)c->v_count < nv)
    k->count = v[c->v_count] > 0 ? (uint64_t)v[c->v_count] : 0;
  if (c->v_cpu >= 0 && (size_t)c->v_cpu < nv && v[c->v_cpu] > 0)
    k->cpu_ns = (uint64_t)v[c->v_cpu] * (uint64_t)c->cpu_scale;
  if (c->v_wall >= 0 && (size_t)c->v_wall < nv && v[c->v_wall] > 0)
    k->wall_ns = (uint64_t)v[c->v_wall] * (uint64_t)c->wall_scale;
}

/* ---- writing labels ---------------------------------------------------------------------- */

enum { SP_DD_NAME = 1, SP_DD_SPAN = 2, SP_DD_TRACE = 3 };

typedef struct sp_spj_dd_s {
  uint64_t a, b;
  int kind; /* 0 = empty */
  int64_t idx;
} sp_spj_dd_t;

/*
 * The last string indices handed out for a span (SP_DD_* - 1; -1 when not
 * yet), and the splice's label group for the last set of labels its samples
 * needed (`combo`: SP_DD_* bits; group -1 when none yet).
 */
typedef struct sp_spj_spanvals_s {
  const sp_spj_span_t *span;
  int64_t idx[3];
  int64_t group;
  unsigned combo;
} sp_spj_spanvals_t;

#define SP_SPJ_SPANVALS 256 /* direct-mapped: a profile's samples name a few dozen spans */

typedef struct sp_spj_strtab_s {
  sp_pprof_splice_t *sp;
  sp_spj_dd_t *dd;
  size_t dd_cap, dd_n;
  sp_spj_spanvals_t spans[SP_SPJ_SPANVALS];
} sp_spj_strtab_t;

static int64_t sp__strtab_add(sp_spj_strtab_t *t, const char *s, size_t len) {
  int64_t idx = sp_pprof_splice_string(t->sp, s, len);
  return idx >= 0 ? idx : -1;
}

static uint64_t sp__be64(const uint8_t *b) {
  uint64_t v = 0;
  for (int i = 0; i < 8; i++)
    v = v << 8 | b[i];
  return v;
}

static size_t sp__dd_hash(int kind, uint64_t a, uint64_t b) {
  uint64_t h = (a * 0x9e3779b97f4a7c15ULL) ^ (b + (uint64_t)kind * 0xc2b2ae3d27d4eb4fULL);
  return (size_t)(h ^ h >> 29);
}

/* Doubles the dedup table. 0 or SP_ENOMEM (the table is unchanged). */
static int sp__dd_grow(sp_spj_strtab_t *t) {
  size_t cap = t->dd_cap * 2;
  sp_spj_dd_t *dd = sp_calloc(cap, sizeof(*dd));
  if (dd == NULL) return SP_ENOMEM;
  for (size_t i = 0; i < t->dd_cap; i++) {
    if (t->dd[i].kind == 0) continue;
    size_t j = sp__dd_hash(t->dd[i].kind, t->dd[i].a, t->dd[i].b) & (cap - 1);
    while (dd[j].kind != 0)
      j = (j + 1) & (cap - 1);
    dd[j] = t->dd[i];
  }
  sp_free(t->dd);
  t->dd = dd;
  t->dd_cap = cap;
  return 0;
}

/*
 * The string index of @p span's value of @p kind (SP_DD_*), adding it once:
 * samples of one span share all three, spans of one trace their trace ID,
 * spans of one name their name. The text is made only when it is new.
 * -1 on OOM.
 */
static int64_t sp__strtab_value(sp_spj_strtab_t *t, int kind, const sp_spj_span_t *span) {
  uint64_t a, b = 0;
  if (kind == SP_DD_SPAN)
    a = span->span_id;
  else if (kind == SP_DD_NAME)
    a = (uint64_t)(uintptr_t)span->name;
  else {
    a = sp__be64(span->trace_id);
    b = sp__be64(span->trace_id + 8);
  }
  size_t mask = t->dd_cap - 1;
  size_t j = sp__dd_hash(kind, a, b) & mask;
  for (; t->dd[j].kind != 0; j = (j + 1) & mask)
    if (t->dd[j].kind == kind && t->dd[j].a == a && t->dd[j].b == b) return t->dd[j].idx;
  /* Distinct values are few (three per span at most): the table grows with them. */
  if ((t->dd_n + 1) * 2 > t->dd_cap) {
    if (sp__dd_grow(t) != 0) return -1;
    mask = t->dd_cap - 1;
    for (j = sp__dd_hash(kind, a, b) & mask; t->dd[j].kind != 0; j = (j + 1) & mask)
      ;
  }
  char hex[33];
  int64_t idx;
  if (kind == SP_DD_SPAN) {
    uint8_t raw[8];
    for (int i = 0; i < 8; i++)
      raw[i] = (uint8_t)(span->span_id >> (56 - 8 * i));
    sp_hex_encode(raw, 8, hex, sizeof(hex));
    idx = sp__strtab_add(t, hex, 16);
  } else if (kind == SP_DD_NAME) {
    idx = sp__strtab_add(t, span->name->s, span->name->len);
  } else {
    sp_hex_encode(span->trace_id, 16, hex, sizeof(hex));
    idx = sp__strtab_add(t, hex, 32);
  }
  if (idx >= 0) {
    t->dd[j] = (sp_spj_dd_t){.a = a, .b = b, .kind = kind, .idx = idx};
    t->dd_n++;
  }
  return idx;
}

/* sp__strtab_value through the per-span cache: one lookup per sample and kind, no hashing. */
/* The cache slot of @p span, (re)claimed for it. */
static sp_spj_spanvals_t *sp__span_slot(sp_spj_strtab_t *t, const sp_spj_span_t *span) {
  uint64_t h = (uint64_t)(uintptr_t)span * 0x9e3779b97f4a7c15ULL;
  _Static_assert(SP_SPJ_SPANVALS == 256, "the slot is the hash's top 8 bits");
  sp_spj_spanvals_t *c = &t->spans[h >> 56]; /* few collisions among a few dozen spans */
  if (c->span != span)
    *c = (sp_spj_spanvals_t){.span = span, .idx = {-1, -1, -1}, .group = -1};
  return c;
}

static int64_t sp__span_value(sp_spj_strtab_t *t, sp_spj_spanvals_t *c, int kind) {
  if (c->idx[kind - 1] < 0) c->idx[kind - 1] = sp__strtab_value(t, kind, c->span);
  return c->idx[kind - 1];
}

static int64_t sp__key_index(sp_spj_strtab_t *t, int64_t existing, const char *name) {
  return existing >= 0 ? existing : sp__strtab_add(t, name, strlen(name));
}

int sp__spj_write_labels(sp_profiles_t *batch, sp_profile_t *p, sp_spj_pctx_t *c,
                         const sp_spj_write_t *w, size_t n) {
  const sp_pprof_wire_t *pw = c->w;
  sp_pprof_splice_t sp;
  sp_pprof_splice_init(&sp, pw);
  sp_spj_strtab_t t = {.sp = &sp}; /* zeroed: no span cached */
  int rc = SP_ENOMEM;
  size_t touched = 0;
  t.dd_cap = 256; /* a profile names a few dozen spans, up to three values each: no regrowth */
  t.dd = sp_calloc(t.dd_cap, sizeof(*t.dd));
  if (t.dd == NULL) goto fail;
  /* An empty table still needs its "" at index 0. */
  if (pw->n_strings == 0 && sp__strtab_add(&t, "", 0) < 0) goto fail;
  int64_t k_span_id = -1;
  for (size_t i = 0; i < c->n_k_id; i++)
    if (c->k_id[i] >= 0 && sp__wstr_is(pw, c->k_id[i], "span_id")) k_span_id = c->k_id[i];
  int64_t k_name = -1, k_trace = -1;
  for (size_t i = 0; i < n; i++) {
    const sp_spj_write_t *wi = &w[i];
    bool add_id = wi->with_span_id && !wi->has_span_id_label;
    bool add_name = !wi->has_span_name;
    bool add_trace = !wi->has_trace_id;
    if (!add_id && !add_name && !add_trace) continue;
    if ((add_id && k_span_id < 0 && (k_span_id = sp__key_index(&t, -1, "span_id")) < 0) ||
        (add_name && k_name < 0 && (k_name = sp__key_index(&t, c->k_span_name, "span_name")) < 0) ||
        (add_trace && k_trace < 0 && (k_trace = sp__key_index(&t, c->k_trace_id, "trace_id")) < 0))
      goto fail;
    /*
     * The samples of a span get the same labels: they are encoded once per
     * span (a label group of the splice) and appended by reference.
     */
    sp_spj_spanvals_t *sv = sp__span_slot(&t, wi->span);
    unsigned combo = (add_id ? 1u : 0u) | (add_name ? 2u : 0u) | (add_trace ? 4u : 0u);
    if (sv->group < 0 || sv->combo != combo) {
      sp_pw_label_t fresh[3];
      size_t nl = 0;
      if (add_id) {
        int64_t v = sp__span_value(&t, sv, SP_DD_SPAN);
        if (v < 0) goto fail;
        fresh[nl++] = (sp_pw_label_t){.key = k_span_id, .str = v};
      }
      if (add_name) {
        int64_t v = sp__span_value(&t, sv, SP_DD_NAME);
        if (v < 0) goto fail;
        fresh[nl++] = (sp_pw_label_t){.key = k_name, .str = v};
      }
      if (add_trace) {
        int64_t v = sp__span_value(&t, sv, SP_DD_TRACE);
        if (v < 0) goto fail;
        fresh[nl++] = (sp_pw_label_t){.key = k_trace, .str = v};
      }
      int64_t g = sp_pprof_splice_group(&sp, fresh, nl);
      if (g < 0) goto fail;
      sv->group = g;
      sv->combo = combo;
    }
    if (sp_pprof_splice_labels_group(&sp, wi->sample, sv->group) != 0) goto fail;
    touched++;
  }
  if (touched > 0) {
    /* Nothing of the profile changes before this point: a failure leaves it as it was. */
    const uint8_t *out;
    size_t out_len;
    /*
     * The output comes indexed: readers downstream need not index it again.
     * Its key summary is what the exporter reads; the pre-decoded labels
     * are not carried over (a copy of every label per profile that nothing
     * downstream reads: a reader of sample labels reads the bytes).
     */
    sp_pprof_wire_t *nw = sp_arena_alloc(batch->arena, sizeof(*nw));
    if (nw == NULL) goto fail;
    if (sp_pprof_splice_finish_indexed_ex(&sp, batch->arena, 0, &out, &out_len, nw) != 0)
      goto fail;
    sp_profile_set_raw_indexed(p, out, out_len, nw);
  }
  rc = 0;
fail:
  sp_pprof_splice_free(&sp);
  sp_free(t.dd);
  return rc;
}

/* ---- span attributes ------------------------------------------------------------------- */

static bool sp__has_attr(const sp_otlp_span_t *span, const char *key) {
  for (size_t i = 0; i < span->n_attributes; i++)
    if (span->attributes[i]->key != NULL && strcmp(span->attributes[i]->key, key) == 0) return true;
  return false;
}

static sp_otlp_kv_t *sp__kv(sp_arena_t *arena, const char *key) {
  sp_otlp_kv_t *kv = sp_arena_alloc(arena, sizeof(*kv));
  sp_otlp_any_t *v = sp_arena_alloc(arena, sizeof(*v));
  if (kv == NULL || v == NULL) return NULL;
  *kv = (sp_otlp_kv_t)OPENTELEMETRY__PROTO__COMMON__V1__KEY_VALUE__INIT;
  *v = (sp_otlp_any_t)OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__INIT;
  kv->key = (char *)key; /* static text: the arena allocator never frees */
  kv->value = v;
  return kv;
}

static sp_otlp_kv_t *sp__kv_int(sp_arena_t *arena, const char *key, uint64_t val) {
  sp_otlp_kv_t *kv = sp__kv(arena, key);
  if (kv != NULL) {
    kv->value->value_case = OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_INT_VALUE;
    kv->value->int_value = val > INT64_MAX ? INT64_MAX : (int64_t)val;
  }
  return kv;
}

int sp__spj_write_attrs(sp_arena_t *arena, sp_otlp_span_t *span, const sp_spj_attrs_t *a) {
  sp_otlp_kv_t *add[4];
  size_t n = 0;
  if (a->profile_id && !sp__has_attr(span, SP_ATTR_PROFILE_ID)) {
    sp_otlp_kv_t *kv = sp__kv(arena, SP_ATTR_PROFILE_ID);
    char *hex = sp_arena_alloc(arena, 17);
    if (kv == NULL || hex == NULL) return SP_ENOMEM;
    uint8_t raw[8];
    for (int b = 0; b < 8; b++)
      raw[b] = (uint8_t)(a->span_id >> (56 - 8 * b));
    sp_hex_encode(raw, 8, hex, 17);
    kv->value->value_case = OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_STRING_VALUE;
    kv->value->string_value = hex;
    add[n++] = kv;
  }
  if (a->cpu) {
    if (!sp__has_attr(span, SP_ATTR_COUNT) &&
        (add[n++] = sp__kv_int(arena, SP_ATTR_COUNT, a->count)) == NULL)
      return SP_ENOMEM;
    if (a->cpu_ns > 0 && !sp__has_attr(span, SP_ATTR_CPU) &&
        (add[n++] = sp__kv_int(arena, SP_ATTR_CPU, a->cpu_ns)) == NULL)
      return SP_ENOMEM;
    if (a->wall_ns > 0 && !sp__has_attr(span, SP_ATTR_WALL) &&
        (add[n++] = sp__kv_int(arena, SP_ATTR_WALL, a->wall_ns)) == NULL)
      return SP_ENOMEM;
  }
  if (n == 0) return 0;
  sp_otlp_kv_t **attrs = sp_arena_alloc(arena, (span->n_attributes + n) * sizeof(*attrs));
  if (attrs == NULL) return SP_ENOMEM;
  if (span->n_attributes > 0) memcpy(attrs, span->attributes, span->n_attributes * sizeof(*attrs));
  memcpy(attrs + span->n_attributes, add, n * sizeof(*attrs));
  span->attributes = attrs;
  span->n_attributes += n;
  return 0;
}

/* ---- attribute values ------------------------------------------------------------------- */

const char *sp__spj_any_str(const sp_otlp_any_t *v, char *buf, size_t cap) {
  if (v == NULL) return NULL;
  switch (v->value_case) {
  case OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_STRING_VALUE: return v->string_value;
  case OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_INT_VALUE:
    snprintf(buf, cap, "%" PRId64, v->int_value);
    return buf;
  case OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_BOOL_VALUE:
    return v->bool_value ? "true" : "false";
  case OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_DOUBLE_VALUE:
    snprintf(buf, cap, "%.17g", v->double_value);
    return buf;
  default: return NULL;
  }
}

bool sp__spj_any_int(const sp_otlp_any_t *v, int64_t *out) {
  if (v == NULL) return false;
  if (v->value_case == OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_INT_VALUE) {
    *out = v->int_value;
    return true;
  }
  if (v->value_case == OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_STRING_VALUE)
    return sp__parse_i64(v->string_value, out);
  return false;
}
