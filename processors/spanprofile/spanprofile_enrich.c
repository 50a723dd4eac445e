/*
 * spanprofile_enrich.c — reading what a pprof sample offers the join, and
 * writing what the join found: labels on samples, attributes on spans.
 *
 * pprof keeps every string once in the profile's string table and refers to
 * it by index, so reading a sample's labels is integer comparisons against
 * the indices of the few label names the join cares about, looked up once
 * per profile. Writing appends the new strings (deduplicated per call:
 * span names and trace IDs repeat across samples) to a new string table in
 * the batch arena and gives each touched sample a new, longer label array;
 * nothing that was there is changed or moved, so indices stay valid.
 *
 * Span attributes are added the same way: a new attribute array in the
 * batch's arena holding the old entries plus the new ones. Keys a span
 * already has (an SDK may have set pyroscope.profile.id itself) are left
 * alone.
 */
#include "processors/spanprofile/spanprofile_int.h"

#include "pipeline/alloc.h"
#include "pipeline/error.h"
#include "pipeline/hex.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef Perftools__Profiles__Label sp_pprof_label_t;
typedef Perftools__Profiles__Sample sp_pprof_sample_t;

/* ---- reading -------------------------------------------------------------------------- */

static int64_t sp__unit_scale(const char *unit) {
  if (strcmp(unit, "nanoseconds") == 0) return 1;
  if (strcmp(unit, "microseconds") == 0) return 1000;
  if (strcmp(unit, "milliseconds") == 0) return 1000000;
  if (strcmp(unit, "seconds") == 0) return 1000000000;
  return 0;
}

static const char *sp__str(const sp_pprof_t *pp, int64_t i) {
  return i >= 0 && (size_t)i < pp->n_string_table ? pp->string_table[i] : "";
}

void sp__spj_pctx_init(sp_spj_pctx_t *c, sp_profile_t *p, const char *const *id_labels,
                       size_t n_id_labels, const char *thread_label, const char *time_label) {
  sp_pprof_t *pp = p->pprof;
  memset(c, 0, sizeof(*c));
  c->pp = pp;
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
  for (size_t i = 0; i < nn; i++)
    lens[i] = strlen(names[i]);
  for (size_t s = 1; s < pp->n_string_table; s++) {
    const char *str = pp->string_table[s];
    if (str == NULL) continue;
    for (size_t i = 0; i < nn; i++) {
      if (*slots[i] < 0 && str[0] == names[i][0] && strncmp(str, names[i], lens[i] + 1) == 0)
        *slots[i] = (int64_t)s;
    }
  }
  for (size_t i = 0; i < pp->n_sample_type; i++) {
    const char *type = sp__str(pp, pp->sample_type[i]->type);
    const char *unit = sp__str(pp, pp->sample_type[i]->unit);
    if (c->v_count < 0 &&
        (strcmp(type, "samples") == 0 || strcmp(type, "sample") == 0 || strcmp(unit, "count") == 0))
      c->v_count = (int)i;
    else if (c->v_cpu < 0 && strcmp(type, "cpu") == 0 && sp__unit_scale(unit) > 0) {
      c->v_cpu = (int)i;
      c->cpu_scale = sp__unit_scale(unit);
    } else if (c->v_wall < 0 && strcmp(type, "wall") == 0 && sp__unit_scale(unit) > 0) {
      c->v_wall = (int)i;
      c->wall_scale = sp__unit_scale(unit);
    }
  }
}

static inline int sp__nib(char ch) {
  if (ch >= '0' && ch <= '9') return ch - '0';
  if (ch >= 'a' && ch <= 'f') return ch - 'a' + 10;
  if (ch >= 'A' && ch <= 'F') return ch - 'A' + 10;
  return -1;
}

bool sp__spj_parse_span_id(const char *s, uint64_t *out) {
  uint64_t v = 0;
  for (int i = 0; i < 16; i++) {
    int n = sp__nib(s[i]);
    if (n < 0) return false;
    v = v << 4 | (uint64_t)n;
  }
  if (s[16] != '\0' || v == 0) return false;
  *out = v;
  return true;
}

static bool sp__parse_i64(const char *s, int64_t *out) {
  if (s == NULL || *s == '\0') return false;
  char *end;
  long long v = strtoll(s, &end, 10);
  if (*end != '\0') return false;
  *out = v;
  return true;
}

void sp__spj_sample_key(const sp_spj_pctx_t *c, size_t i, sp_spj_skey_t *k) {
  const sp_pprof_t *pp = c->pp;
  const sp_pprof_sample_t *s = pp->sample[i];
  memset(k, 0, sizeof(*k));
  k->thread = SP_SPJ_NO_THREAD;
  const sp_profile_t *p = c->prof;
  if (i < p->n_ext) {
    if (p->sample_time_ns != NULL && p->sample_time_ns[i] > 0) k->time_ns = p->sample_time_ns[i];
    if (p->sample_thread != NULL && p->sample_thread[i] >= 0) k->thread = p->sample_thread[i];
  }
  int id_rank = 99;
  for (size_t l = 0; l < s->n_label; l++) {
    const sp_pprof_label_t *lb = s->label[l];
    int64_t key = lb->key;
    if (key <= 0) continue;
    for (size_t j = 0; j < c->n_k_id; j++) {
      if (key == c->k_id[j]) {
        if (j == 0) k->has_span_id_label = true;
        uint64_t id;
        /* The first configured spelling wins when a sample carries several. */
        if ((int)j < id_rank && lb->str > 0 && sp__spj_parse_span_id(sp__str(pp, lb->str), &id)) {
          k->has_id = true;
          k->span_id = id;
          id_rank = (int)j;
        }
      }
    }
    if (key == c->k_span_name) {
      k->has_span_name = true;
    } else if (key == c->k_trace_id) {
      k->has_trace_id = true;
    } else if (key == c->k_thread && k->thread == SP_SPJ_NO_THREAD) {
      int64_t v;
      if (lb->str > 0 ? sp__parse_i64(sp__str(pp, lb->str), &v) : (v = lb->num, true))
        k->thread = v;
    } else if (key == c->k_time && k->time_ns == 0 && lb->str == 0 && lb->num > 0) {
      k->time_ns = lb->num;
    }
  }
  k->count = 1;
  if (c->v_count >= 0 && (size_t)c->v_count < s->n_value)
    k->count = s->value[c->v_count] > 0 ? (uint64_t)s->value[c->v_count] : 0;
  if (c->v_cpu >= 0 && (size_t)c->v_cpu < s->n_value && s->value[c->v_cpu] > 0)
    k->cpu_ns = (uint64_t)s->value[c->v_cpu] * (uint64_t)c->cpu_scale;
  if (c->v_wall >= 0 && (size_t)c->v_wall < s->n_value && s->value[c->v_wall] > 0)
    k->wall_ns = (uint64_t)s->value[c->v_wall] * (uint64_t)c->wall_scale;
}

/* ---- writing labels ---------------------------------------------------------------------- */

enum { SP_DD_NAME = 1, SP_DD_SPAN = 2, SP_DD_TRACE = 3 };

typedef struct sp_spj_dd_s {
  uint64_t a, b;
  int kind; /* 0 = empty */
  int64_t idx;
} sp_spj_dd_t;

typedef struct sp_spj_strtab_s {
  sp_profiles_t *batch;
  sp_pprof_t *pp;
  char **extra;
  size_t n_extra, cap_extra;
  sp_spj_dd_t *dd;
  size_t dd_cap;
} sp_spj_strtab_t;

static int64_t sp__strtab_add(sp_spj_strtab_t *t, const char *s, size_t len) {
  if (t->n_extra == t->cap_extra) {
    size_t cap = t->cap_extra ? t->cap_extra * 2 : 16;
    char **e = sp_realloc(t->extra, cap * sizeof(*e));
    if (e == NULL) return -1;
    t->extra = e;
    t->cap_extra = cap;
  }
  char *copy = sp_arena_strndup(t->batch->arena, s, len);
  if (copy == NULL) return -1;
  t->extra[t->n_extra] = copy;
  return (int64_t)(t->pp->n_string_table + t->n_extra++);
}

/* The string index for a value, adding it once. -1 on OOM. */
static int64_t sp__strtab_value(sp_spj_strtab_t *t, int kind, uint64_t a, uint64_t b, const char *s,
                                size_t len) {
  uint64_t h = (a * 0x9e3779b97f4a7c15ULL) ^ (b + (uint64_t)kind * 0xc2b2ae3d27d4eb4fULL);
  h ^= h >> 29;
  size_t mask = t->dd_cap - 1;
  size_t j = h & mask;
  for (; t->dd[j].kind != 0; j = (j + 1) & mask)
    if (t->dd[j].kind == kind && t->dd[j].a == a && t->dd[j].b == b) return t->dd[j].idx;
  int64_t idx = sp__strtab_add(t, s, len);
  if (idx >= 0) t->dd[j] = (sp_spj_dd_t){.a = a, .b = b, .kind = kind, .idx = idx};
  return idx;
}

static int64_t sp__key_index(sp_spj_strtab_t *t, int64_t existing, const char *name) {
  return existing >= 0 ? existing : sp__strtab_add(t, name, strlen(name));
}

static uint64_t sp__be64(const uint8_t *b) {
  uint64_t v = 0;
  for (int i = 0; i < 8; i++)
    v = v << 8 | b[i];
  return v;
}

int sp__spj_write_labels(sp_profiles_t *batch, sp_profile_t *p, const sp_spj_pctx_t *c,
                         const sp_spj_write_t *w, size_t n) {
  sp_pprof_t *pp = p->pprof;
  sp_spj_strtab_t t = {.batch = batch, .pp = pp};
  int rc = SP_ENOMEM;
  t.dd_cap = 16;
  while (t.dd_cap < n * 4)
    t.dd_cap <<= 1;
  t.dd = sp_calloc(t.dd_cap, sizeof(*t.dd));
  if (t.dd == NULL) goto fail;
  /* An empty table still needs its "" at index 0. */
  if (pp->n_string_table == 0 && sp__strtab_add(&t, "", 0) < 0) goto fail;
  int64_t k_span_id = -1;
  for (size_t i = 0; i < c->n_k_id; i++)
    if (c->k_id[i] >= 0 && strcmp(pp->string_table[c->k_id[i]], "span_id") == 0)
      k_span_id = c->k_id[i];
  int64_t k_name = -1, k_trace = -1;
  for (size_t i = 0; i < n; i++) {
    const sp_spj_write_t *wi = &w[i];
    sp_pprof_sample_t *s = pp->sample[wi->sample];
    sp_spj_skey_t key;
    sp__spj_sample_key(c, wi->sample, &key);
    bool add_id = wi->with_span_id && !key.has_span_id_label;
    bool add_name = !key.has_span_name;
    bool add_trace = !key.has_trace_id;
    size_t add = (size_t)add_id + (size_t)add_name + (size_t)add_trace;
    if (add == 0) continue;
    if ((add_id && k_span_id < 0 && (k_span_id = sp__key_index(&t, -1, "span_id")) < 0) ||
        (add_name && k_name < 0 && (k_name = sp__key_index(&t, c->k_span_name, "span_name")) < 0) ||
        (add_trace && k_trace < 0 && (k_trace = sp__key_index(&t, c->k_trace_id, "trace_id")) < 0))
      goto fail;
    sp_pprof_label_t **labels = sp_arena_alloc(batch->arena, (s->n_label + add) * sizeof(*labels));
    sp_pprof_label_t *fresh = sp_arena_alloc(batch->arena, add * sizeof(*fresh));
    if (labels == NULL || fresh == NULL) goto fail;
    if (s->n_label > 0) memcpy(labels, s->label, s->n_label * sizeof(*labels));
    size_t nl = s->n_label;
    const sp_spj_span_t *sp = wi->span;
    if (add_id) {
      char hex[17];
      uint8_t raw[8];
      for (int b = 0; b < 8; b++)
        raw[b] = (uint8_t)(sp->span_id >> (56 - 8 * b));
      sp_hex_encode(raw, 8, hex, sizeof(hex));
      int64_t v = sp__strtab_value(&t, SP_DD_SPAN, sp->span_id, 0, hex, 16);
      if (v < 0) goto fail;
      fresh[0] = (sp_pprof_label_t)PERFTOOLS__PROFILES__LABEL__INIT;
      fresh[0].key = k_span_id;
      fresh[0].str = v;
      labels[nl++] = fresh++;
    }
    if (add_name) {
      int64_t v = sp__strtab_value(&t, SP_DD_NAME, (uint64_t)(uintptr_t)sp->name, 0, sp->name->s,
                                   sp->name->len);
      if (v < 0) goto fail;
      fresh[0] = (sp_pprof_label_t)PERFTOOLS__PROFILES__LABEL__INIT;
      fresh[0].key = k_name;
      fresh[0].str = v;
      labels[nl++] = fresh++;
    }
    if (add_trace) {
      char hex[33];
      sp_hex_encode(sp->trace_id, 16, hex, sizeof(hex));
      int64_t v = sp__strtab_value(&t, SP_DD_TRACE, sp__be64(sp->trace_id),
                                   sp__be64(sp->trace_id + 8), hex, 32);
      if (v < 0) goto fail;
      fresh[0] = (sp_pprof_label_t)PERFTOOLS__PROFILES__LABEL__INIT;
      fresh[0].key = k_trace;
      fresh[0].str = v;
      labels[nl++] = fresh++;
    }
    /* The sample switches to the new array only once it is complete. */
    s->label = labels;
    s->n_label = nl;
  }
  rc = 0;
fail:
  if (t.n_extra > 0) {
    /*
     * Publish the strings even after a failure: samples already switched
     * may point at them. Without memory for the new table, those samples
     * are rolled back by removing labels whose strings are missing.
     */
    size_t total = pp->n_string_table + t.n_extra;
    char **tab = sp_arena_alloc(batch->arena, total * sizeof(*tab));
    if (tab != NULL) {
      if (pp->n_string_table > 0) memcpy(tab, pp->string_table, pp->n_string_table * sizeof(*tab));
      memcpy(tab + pp->n_string_table, t.extra, t.n_extra * sizeof(*tab));
      pp->string_table = tab;
      pp->n_string_table = total;
    } else {
      for (size_t i = 0; i < n; i++) {
        sp_pprof_sample_t *s = pp->sample[w[i].sample];
        size_t keep = 0;
        for (size_t l = 0; l < s->n_label; l++)
          if ((size_t)s->label[l]->key < pp->n_string_table &&
              (size_t)s->label[l]->str < pp->n_string_table)
            s->label[keep++] = s->label[l];
        s->n_label = keep;
      }
      rc = SP_ENOMEM;
    }
  }
  p->modified = true;
  sp_free(t.extra);
  sp_free(t.dd);
  return rc;
}

/* ---- span attributes ------------------------------------------------------------------- */

#define SP_ATTR_PROFILE_ID "pyroscope.profile.id"
#define SP_ATTR_COUNT "profile.sample.count"
#define SP_ATTR_CPU "profile.cpu.time_ns"
#define SP_ATTR_WALL "profile.wall.time_ns"

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
