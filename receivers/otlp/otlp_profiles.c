/*
 * otlp_profiles.c — OTLP profiles (v1development, dictionary layout) into
 * the internal profiles form: one pprof Profile per OTLP Profile.
 *
 * What maps where:
 *   resource attributes, profile attributes  → series labels (service.name
 *                                               becomes service_name)
 *   sample_type / period_type / period / time → the pprof fields of the same
 *                                               meaning; __name__ from the type
 *   dictionary mappings, locations, functions → pprof tables (ids = indices)
 *   sample stack                              → location ids, leaf first
 *   sample attributes                         → sample labels (strings as str,
 *                                               integers as num)
 *   sample link                               → span_id / trace_id labels
 *                                               (16 / 32 lowercase hex)
 *   per-value timestamps                      → one pprof sample per value,
 *                                               timestamps in the side array
 *   thread.id attribute                       → the side thread array too
 * Every dictionary index is range-checked; a bad one rejects the request
 * with a message naming it.
 */
#include "receivers/otlp/otlp.h"

#include "pipeline/alloc.h"
#include "pipeline/error.h"
#include "pipeline/hex.h"
#include "pipeline/profiletype.h"
#include "pipeline/satmath.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

typedef Opentelemetry__Proto__Profiles__V1development__ProfilesDictionary sp_dict_t;
typedef Opentelemetry__Proto__Profiles__V1development__Profile sp_oprof_t;
typedef Opentelemetry__Proto__Profiles__V1development__Sample sp_osample_t;
typedef Opentelemetry__Proto__Common__V1__AnyValue sp_any_t;

/* Builds one pprof in the batch arena. */
typedef struct sp_conv_s {
  sp_arena_t *arena;
  const sp_dict_t *dict;
  int64_t *str_map; /* dictionary string index → pprof string index (-1: not yet) */
  char **strings;
  size_t n_strings;
  size_t cap_strings;
  char *err;
  size_t errlen;
} sp_conv_t;

static int sp__fail(sp_conv_t *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int sp__fail(sp_conv_t *c, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(c->err, c->errlen, fmt, ap);
  va_end(ap);
  return SP_EPROTO;
}

static const char *sp__dict_str(const sp_dict_t *d, int32_t i) {
  return d != NULL && i >= 0 && (size_t)i < d->n_string_table ? d->string_table[i] : NULL;
}

/* Adds a string to the pprof table; returns its index or -1 on OOM. */
static int64_t sp__add_str(sp_conv_t *c, const char *s) {
  if (c->n_strings == c->cap_strings) {
    size_t cap = c->cap_strings ? c->cap_strings * 2 : 64;
    char **n = sp_arena_alloc(c->arena, cap * sizeof(char *));
    if (n == NULL)
      return -1;
    if (c->n_strings)
      memcpy(n, c->strings, c->n_strings * sizeof(char *));
    c->strings = n;
    c->cap_strings = cap;
  }
  char *copy = sp_arena_strdup(c->arena, s);
  if (copy == NULL)
    return -1;
  c->strings[c->n_strings] = copy;
  return (int64_t)c->n_strings++;
}

/* Maps a dictionary string index to the pprof table; -2 on a bad index, -1 on OOM. */
static int64_t sp__map_str(sp_conv_t *c, int32_t i) {
  if (i == 0)
    return 0;
  if (c->dict == NULL || i < 0 || (size_t)i >= c->dict->n_string_table)
    return -2;
  if (c->str_map[i] < 0)
    c->str_map[i] = sp__add_str(c, c->dict->string_table[i]);
  return c->str_map[i];
}

/* Formats an attribute value as text (for series labels and string sample labels). */
static void sp__any_text(const sp_dict_t *d, const sp_any_t *v, char *out, size_t cap) {
  out[0] = '\0';
  if (v == NULL)
    return;
  switch (v->value_case) {
  case OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_STRING_VALUE:
    snprintf(out, cap, "%s", v->string_value);
    break;
  case OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_STRING_VALUE_STRINDEX: {
    const char *s = sp__dict_str(d, v->string_value_strindex);
    snprintf(out, cap, "%s", s != NULL ? s : "");
    break;
  }
  case OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_BOOL_VALUE:
    snprintf(out, cap, "%s", v->bool_value ? "true" : "false");
    break;
  case OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_INT_VALUE:
    snprintf(out, cap, "%" PRId64, v->int_value);
    break;
  case OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_DOUBLE_VALUE:
    snprintf(out, cap, "%g", v->double_value);
    break;
  default:
    break; /* arrays, maps and bytes have no label form */
  }
}

typedef struct sp_labels_s {
  sp_label_t items[64];
  char values[64][256];
  size_t n;
} sp_labels_t;

static void sp__labels_set(sp_labels_t *l, const char *name, const char *value) {
  for (size_t i = 0; i < l->n; i++)
    if (strcmp(l->items[i].name, name) == 0) {
      snprintf(l->values[i], sizeof(l->values[i]), "%s", value);
      return;
    }
  if (l->n == 64)
    return; /* more series labels than any backend accepts; the rest are ignored */
  snprintf(l->values[l->n], sizeof(l->values[0]), "%s", value);
  l->items[l->n].name = name;
  l->items[l->n].value = l->values[l->n];
  l->n++;
}

static void sp__labels_from_kvs(sp_labels_t *l, const sp_dict_t *d, sp_otlp_kv_t **kvs, size_t n) {
  char text[256];
  for (size_t i = 0; i < n; i++) {
    if (kvs[i]->key == NULL || kvs[i]->key[0] == '\0')
      continue;
    sp__any_text(d, kvs[i]->value, text, sizeof(text));
    sp__labels_set(l, strcmp(kvs[i]->key, "service.name") == 0 ? "service_name" : kvs[i]->key,
                   text);
  }
}

#define SP_NEW(c, type, init)                                                                 \
  ({                                                                                          \
    type *p_ = sp_arena_alloc((c)->arena, sizeof(type));                                      \
    if (p_ != NULL)                                                                           \
      init(p_);                                                                               \
    p_;                                                                                       \
  })

/* Copies the dictionary's mappings, functions and locations into @p pp (ids = indices). */
static int sp__copy_tables(sp_conv_t *c, sp_pprof_t *pp) {
  const sp_dict_t *d = c->dict;
  if (d == NULL)
    return 0;
  size_t nm = d->n_mapping_table > 1 ? d->n_mapping_table - 1 : 0;
  size_t nf = d->n_function_table > 1 ? d->n_function_table - 1 : 0;
  size_t nl = d->n_location_table > 1 ? d->n_location_table - 1 : 0;
  pp->mapping = nm ? sp_arena_alloc(c->arena, nm * sizeof(void *)) : NULL;
  pp->function = nf ? sp_arena_alloc(c->arena, nf * sizeof(void *)) : NULL;
  pp->location = nl ? sp_arena_alloc(c->arena, nl * sizeof(void *)) : NULL;
  if ((nm && !pp->mapping) || (nf && !pp->function) || (nl && !pp->location))
    return SP_ENOMEM;
  for (size_t i = 1; i < d->n_mapping_table; i++) {
    const Opentelemetry__Proto__Profiles__V1development__Mapping *src = d->mapping_table[i];
    Perftools__Profiles__Mapping *m = SP_NEW(c, Perftools__Profiles__Mapping,
                                             perftools__profiles__mapping__init);
    if (m == NULL)
      return SP_ENOMEM;
    m->id = i;
    m->memory_start = src->memory_start;
    m->memory_limit = src->memory_limit;
    m->file_offset = src->file_offset;
    int64_t fn = sp__map_str(c, src->filename_strindex);
    if (fn < -1)
      return sp__fail(c, "dictionary.mapping_table[%zu].filename_strindex %d out of range", i,
                      src->filename_strindex);
    if (fn < 0)
      return SP_ENOMEM;
    m->filename = fn;
    pp->mapping[pp->n_mapping++] = m;
  }
  for (size_t i = 1; i < d->n_function_table; i++) {
    const Opentelemetry__Proto__Profiles__V1development__Function *src = d->function_table[i];
    Perftools__Profiles__Function *f = SP_NEW(c, Perftools__Profiles__Function,
                                              perftools__profiles__function__init);
    if (f == NULL)
      return SP_ENOMEM;
    f->id = i;
    int64_t a = sp__map_str(c, src->name_strindex), b = sp__map_str(c, src->system_name_strindex),
            e = sp__map_str(c, src->filename_strindex);
    if (a < -1 || b < -1 || e < -1)
      return sp__fail(c, "dictionary.function_table[%zu]: string index out of range", i);
    if (a < 0 || b < 0 || e < 0)
      return SP_ENOMEM;
    f->name = a;
    f->system_name = b;
    f->filename = e;
    f->start_line = src->start_line;
    pp->function[pp->n_function++] = f;
  }
  for (size_t i = 1; i < d->n_location_table; i++) {
    const Opentelemetry__Proto__Profiles__V1development__Location *src = d->location_table[i];
    Perftools__Profiles__Location *l = SP_NEW(c, Perftools__Profiles__Location,
                                              perftools__profiles__location__init);
    if (l == NULL)
      return SP_ENOMEM;
    l->id = i;
    if (src->mapping_index < 0 || (size_t)src->mapping_index >= d->n_mapping_table + (d->n_mapping_table == 0))
      return sp__fail(c, "dictionary.location_table[%zu].mapping_index %d out of range", i,
                      src->mapping_index);
    l->mapping_id = (uint64_t)src->mapping_index;
    l->address = src->address;
    if (src->n_lines > 0) {
      l->line = sp_arena_alloc(c->arena, src->n_lines * sizeof(void *));
      if (l->line == NULL)
        return SP_ENOMEM;
    }
    for (size_t k = 0; k < src->n_lines; k++) {
      const Opentelemetry__Proto__Profiles__V1development__Line *sl = src->lines[k];
      if (sl->function_index < 0 || (size_t)sl->function_index >= d->n_function_table)
        return sp__fail(c, "dictionary.location_table[%zu].lines[%zu].function_index %d out of "
                           "range",
                        i, k, sl->function_index);
      Perftools__Profiles__Line *ln = SP_NEW(c, Perftools__Profiles__Line,
                                             perftools__profiles__line__init);
      if (ln == NULL)
        return SP_ENOMEM;
      ln->function_id = (uint64_t)sl->function_index;
      ln->line = sl->line;
      ln->column = sl->column;
      l->line[l->n_line++] = ln;
    }
    pp->location[pp->n_location++] = l;
  }
  return 0;
}

static Perftools__Profiles__Label *sp__label(sp_conv_t *c, int64_t key, int64_t str, int64_t num,
                                             int64_t unit) {
  Perftools__Profiles__Label *lb = SP_NEW(c, Perftools__Profiles__Label,
                                          perftools__profiles__label__init);
  if (lb != NULL) {
    lb->key = key;
    lb->str = str;
    lb->num = num;
    lb->num_unit = unit;
  }
  return lb;
}

/* Builds the labels one OTLP sample carries; *thread gets thread.id or -1. */
static int sp__sample_labels(sp_conv_t *c, const sp_osample_t *s, size_t si,
                             Perftools__Profiles__Label ***out, size_t *n_out, int64_t *thread) {
  const sp_dict_t *d = c->dict;
  size_t max = s->n_attribute_indices + 2;
  Perftools__Profiles__Label **labels = sp_arena_alloc(c->arena, max * sizeof(void *));
  size_t n = 0;
  *thread = -1;
  if (labels == NULL)
    return SP_ENOMEM;
  for (size_t a = 0; a < s->n_attribute_indices; a++) {
    int32_t ai = s->attribute_indices[a];
    if (d == NULL || ai < 0 || (size_t)ai >= d->n_attribute_table)
      return sp__fail(c, "samples[%zu].attribute_indices[%zu] = %d out of range", si, a, ai);
    const Opentelemetry__Proto__Profiles__V1development__KeyValueAndUnit *kv =
        d->attribute_table[ai];
    int64_t key = sp__map_str(c, kv->key_strindex);
    int64_t unit = sp__map_str(c, kv->unit_strindex);
    if (key < -1 || unit < -1)
      return sp__fail(c, "attribute_table[%d]: string index out of range", ai);
    if (key < 0 || unit < 0)
      return SP_ENOMEM;
    const sp_any_t *v = kv->value;
    Perftools__Profiles__Label *lb;
    if (v != NULL && v->value_case == OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_INT_VALUE) {
      lb = sp__label(c, key, 0, v->int_value, unit);
      const char *k = sp__dict_str(d, kv->key_strindex);
      if (k != NULL && (strcmp(k, "thread.id") == 0 || strcmp(k, "thread_id") == 0))
        *thread = v->int_value;
    } else {
      char text[256];
      sp__any_text(d, v, text, sizeof(text));
      int64_t str = sp__add_str(c, text);
      if (str < 0)
        return SP_ENOMEM;
      lb = sp__label(c, key, str, 0, 0);
    }
    if (lb == NULL)
      return SP_ENOMEM;
    labels[n++] = lb;
  }
  if (s->link_index != 0) {
    if (d == NULL || s->link_index < 0 || (size_t)s->link_index >= d->n_link_table)
      return sp__fail(c, "samples[%zu].link_index %d out of range", si, s->link_index);
    const Opentelemetry__Proto__Profiles__V1development__Link *lk = d->link_table[s->link_index];
    if (lk->span_id.len == 8 && lk->trace_id.len == 16) {
      char sid[17], tid[33];
      sp_hex_encode(lk->span_id.data, 8, sid, sizeof(sid));
      sp_hex_encode(lk->trace_id.data, 16, tid, sizeof(tid));
      int64_t ks = sp__add_str(c, "span_id"), vs = sp__add_str(c, sid);
      int64_t kt = sp__add_str(c, "trace_id"), vt = sp__add_str(c, tid);
      if (ks < 0 || vs < 0 || kt < 0 || vt < 0)
        return SP_ENOMEM;
      if ((labels[n++] = sp__label(c, ks, vs, 0, 0)) == NULL ||
          (labels[n++] = sp__label(c, kt, vt, 0, 0)) == NULL)
        return SP_ENOMEM;
    } else if (lk->span_id.len != 0 || lk->trace_id.len != 0) {
      return sp__fail(c, "link_table[%d]: trace_id must be 16 bytes and span_id 8", s->link_index);
    }
  }
  *out = labels;
  *n_out = n;
  return 0;
}

/* Converts one OTLP Profile. */
static int sp__convert_one(sp_conv_t *c, const sp_oprof_t *op, const sp_labels_t *series,
                           sp_profiles_t *out) {
  const sp_dict_t *d = c->dict;
  int rc;
  sp_pprof_t *pp = SP_NEW(c, sp_pprof_t, perftools__profiles__profile__init);
  if (pp == NULL)
    return SP_ENOMEM;
  c->strings = NULL;
  c->n_strings = c->cap_strings = 0;
  if (sp__add_str(c, "") != 0)
    return SP_ENOMEM;
  for (size_t i = 0; d != NULL && i < d->n_string_table; i++)
    c->str_map[i] = -1;
  if ((rc = sp__copy_tables(c, pp)) != 0)
    return rc;

  /* Types, period, time. */
  Perftools__Profiles__ValueType *st = SP_NEW(c, Perftools__Profiles__ValueType,
                                              perftools__profiles__value_type__init);
  Perftools__Profiles__ValueType *pt = SP_NEW(c, Perftools__Profiles__ValueType,
                                              perftools__profiles__value_type__init);
  pp->sample_type = sp_arena_alloc(c->arena, sizeof(void *));
  if (st == NULL || pt == NULL || pp->sample_type == NULL)
    return SP_ENOMEM;
  int32_t st_t = op->sample_type ? op->sample_type->type_strindex : 0;
  int32_t st_u = op->sample_type ? op->sample_type->unit_strindex : 0;
  int32_t pt_t = op->period_type ? op->period_type->type_strindex : 0;
  int32_t pt_u = op->period_type ? op->period_type->unit_strindex : 0;
  int64_t a = sp__map_str(c, st_t), b = sp__map_str(c, st_u), e = sp__map_str(c, pt_t),
          f = sp__map_str(c, pt_u);
  if (a < -1 || b < -1 || e < -1 || f < -1)
    return sp__fail(c, "sample_type/period_type: string index out of range");
  if (a < 0 || b < 0 || e < 0 || f < 0)
    return SP_ENOMEM;
  st->type = a;
  st->unit = b;
  pt->type = e;
  pt->unit = f;
  pp->sample_type[0] = st;
  pp->n_sample_type = 1;
  pp->period_type = pt;
  pp->period = op->period;
  pp->time_nanos = (int64_t)op->time_unix_nano;
  pp->duration_nanos = (int64_t)op->duration_nano;

  /* Samples: one pprof sample per timestamped value, else one per OTLP sample. */
  size_t total = 0;
  for (size_t s = 0; s < op->n_samples; s++) {
    const sp_osample_t *os = op->samples[s];
    size_t nts = os->n_timestamps_unix_nano;
    total += nts > 0 && (os->n_values == nts || os->n_values == 0) ? nts : 1;
  }
  pp->sample = total ? sp_arena_alloc(c->arena, total * sizeof(void *)) : NULL;
  int64_t *times = total ? sp_arena_calloc(c->arena, total * sizeof(int64_t)) : NULL;
  int64_t *threads = total ? sp_arena_alloc(c->arena, total * sizeof(int64_t)) : NULL;
  if (total && (pp->sample == NULL || times == NULL || threads == NULL))
    return SP_ENOMEM;
  bool any_time = false, any_thread = false;
  for (size_t s = 0; s < op->n_samples; s++) {
    const sp_osample_t *os = op->samples[s];
    if (os->stack_index < 0 || (d == NULL ? os->stack_index != 0
                                          : (size_t)os->stack_index >= d->n_stack_table + (d->n_stack_table == 0)))
      return sp__fail(c, "samples[%zu].stack_index %d out of range", s, os->stack_index);
    const Opentelemetry__Proto__Profiles__V1development__Stack *stack =
        d != NULL && d->n_stack_table > 0 ? d->stack_table[os->stack_index] : NULL;
    size_t nloc = stack != NULL ? stack->n_location_indices : 0;
    uint64_t *locs = nloc ? sp_arena_alloc(c->arena, nloc * sizeof(uint64_t)) : NULL;
    if (nloc && locs == NULL)
      return SP_ENOMEM;
    for (size_t k = 0; k < nloc; k++) {
      int32_t li = stack->location_indices[k];
      if (li <= 0 || (size_t)li >= d->n_location_table)
        return sp__fail(c, "stack_table[%d].location_indices[%zu] = %d out of range",
                        os->stack_index, k, li);
      locs[k] = (uint64_t)li;
    }
    Perftools__Profiles__Label **labels = NULL;
    size_t n_labels = 0;
    int64_t thread = -1;
    if ((rc = sp__sample_labels(c, os, s, &labels, &n_labels, &thread)) != 0)
      return rc;
    size_t nts = os->n_timestamps_unix_nano;
    bool expand = nts > 0 && (os->n_values == nts || os->n_values == 0);
    size_t reps = expand ? nts : 1;
    for (size_t r = 0; r < reps; r++) {
      Perftools__Profiles__Sample *ps = SP_NEW(c, Perftools__Profiles__Sample,
                                               perftools__profiles__sample__init);
      int64_t *val = sp_arena_alloc(c->arena, sizeof(int64_t));
      if (ps == NULL || val == NULL)
        return SP_ENOMEM;
      if (expand) {
        *val = os->n_values ? os->values[r] : 1;
        times[pp->n_sample] = (int64_t)os->timestamps_unix_nano[r];
        any_time = true;
      } else {
        *val = 0;
        for (size_t v = 0; v < os->n_values; v++)
          *val = sp_sat_add_i64(*val, os->values[v]); /* counts from the network */
        if (os->n_values == 0)
          *val = (int64_t)(nts > 0 ? nts : 1);
        if (nts > 0) {
          times[pp->n_sample] = (int64_t)os->timestamps_unix_nano[0];
          any_time = true;
        }
      }
      ps->value = val;
      ps->n_value = 1;
      ps->location_id = locs;
      ps->n_location_id = nloc;
      ps->label = labels;
      ps->n_label = n_labels;
      threads[pp->n_sample] = thread;
      any_thread = any_thread || thread >= 0;
      pp->sample[pp->n_sample++] = ps;
    }
  }
  pp->string_table = c->strings;
  pp->n_string_table = c->n_strings;

  /* Series labels: resource + profile attributes, then the type name. */
  sp_labels_t labels = *series;
  char text[256];
  for (size_t a = 0; a < op->n_attribute_indices; a++) {
    int32_t ai = op->attribute_indices[a];
    if (d == NULL || ai < 0 || (size_t)ai >= d->n_attribute_table)
      return sp__fail(c, "profile attribute_indices[%zu] = %d out of range", a, ai);
    const char *k = sp__dict_str(d, d->attribute_table[ai]->key_strindex);
    if (k == NULL || k[0] == '\0')
      continue;
    sp__any_text(d, d->attribute_table[ai]->value, text, sizeof(text));
    sp__labels_set(&labels, strcmp(k, "service.name") == 0 ? "service_name" : k, text);
  }
  bool has_service = false;
  for (size_t i = 0; i < labels.n; i++)
    has_service = has_service || strcmp(labels.items[i].name, "service_name") == 0;
  if (!has_service)
    sp__labels_set(&labels, "service_name", "unknown_service");
  sp__labels_set(&labels, "__name__",
                 sp_profile_type_name(pp->string_table[st->type], pp->string_table[st->unit],
                                      pp->string_table[pt->type]));

  /* Unsigned on the wire: clamped into int64 and summed without overflow. */
  int64_t start = op->time_unix_nano > INT64_MAX ? INT64_MAX : (int64_t)op->time_unix_nano;
  int64_t duration = op->duration_nano > INT64_MAX ? INT64_MAX : (int64_t)op->duration_nano;
  sp_profile_t *p = sp_profiles_add_decoded(out, labels.items, labels.n, start,
                                            sp_sat_add_i64(start, duration), pp);
  if (p == NULL)
    return SP_ENOMEM;
  p->n_ext = pp->n_sample;
  p->sample_time_ns = any_time ? times : NULL;
  p->sample_thread = any_thread ? threads : NULL;
  if (!any_time && !any_thread)
    p->n_ext = 0;
  return 0;
}

int sp__otlp_profiles_convert(const sp_otlp_profiles_req_t *req, sp_profiles_t *out, char *err,
                              size_t errlen) {
  sp_conv_t c = {.arena = out->arena, .dict = req->dictionary, .err = err, .errlen = errlen};
  int rc = 0;
  if (c.dict != NULL && c.dict->n_string_table > 0) {
    c.str_map = sp_malloc(c.dict->n_string_table * sizeof(int64_t));
    if (c.str_map == NULL)
      return SP_ENOMEM;
  }
  for (size_t r = 0; r < req->n_resource_profiles && rc == 0; r++) {
    const Opentelemetry__Proto__Profiles__V1development__ResourceProfiles *rp =
        req->resource_profiles[r];
    sp_labels_t *series = sp_malloc(sizeof(*series));
    if (series == NULL) {
      rc = SP_ENOMEM;
      break;
    }
    series->n = 0;
    if (rp->resource != NULL)
      sp__labels_from_kvs(series, c.dict, rp->resource->attributes, rp->resource->n_attributes);
    for (size_t s = 0; s < rp->n_scope_profiles && rc == 0; s++)
      for (size_t p = 0; p < rp->scope_profiles[s]->n_profiles && rc == 0; p++) {
        rc = sp__convert_one(&c, rp->scope_profiles[s]->profiles[p], series, out);
        if (rc == SP_EPROTO) {
          char inner[400];
          snprintf(inner, sizeof(inner), "%s", err);
          snprintf(err, errlen, "resource_profiles[%zu].scope_profiles[%zu].profiles[%zu]: %s", r,
                   s, p, inner);
        }
      }
    sp_free(series);
  }
  sp_free(c.str_map);
  return rc;
}
