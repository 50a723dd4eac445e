/*
 * otlpprofiles.c — internal profiles → OTLP ExportProfilesServiceRequest
 * (see otlpprofiles.h for the mapping).
 *
 * Everything the request points to lives in the caller's arena. Tables grow
 * by doubling inside the arena (the old array is abandoned there: the arena
 * lives as long as one request, so the waste is bounded by a factor of two).
 * Interning uses small open-addressing hash tables on the heap, freed at the
 * end; their keys are byte strings that live in the arena.
 */
#include "pipeline/otlpprofiles.h"

#include "pipeline/alloc.h"
#include "pipeline/error.h"
#include "pipeline/hex.h"

#include <stdbool.h>
#include <string.h>

typedef Opentelemetry__Proto__Profiles__V1development__ProfilesDictionary sp__dict_t;
typedef Opentelemetry__Proto__Profiles__V1development__ResourceProfiles sp__rprof_t;
typedef Opentelemetry__Proto__Profiles__V1development__ScopeProfiles sp__sprof_t;
typedef Opentelemetry__Proto__Profiles__V1development__Profile sp__oprof_t;
typedef Opentelemetry__Proto__Profiles__V1development__Sample sp__osample_t;
typedef Opentelemetry__Proto__Profiles__V1development__KeyValueAndUnit sp__kvu_t;
typedef Opentelemetry__Proto__Common__V1__AnyValue sp__any_t;
typedef Opentelemetry__Proto__Common__V1__KeyValue sp__kv_t;

/* ---- interning --------------------------------------------------------------- */

typedef struct sp__intern_s {
  const uint8_t **keys;
  size_t *lens;
  int32_t *vals;
  size_t cap; /* power of two; 0 until first use */
  size_t n;
} sp__intern_t;

static uint64_t sp__hash(const void *p, size_t n) {
  const uint8_t *b = p;
  uint64_t h = 1469598103934665603ULL; /* FNV-1a */
  for (size_t i = 0; i < n; i++)
    h = (h ^ b[i]) * 1099511628211ULL;
  return h ^ (h >> 29);
}

static void sp__intern_free(sp__intern_t *t) {
  sp_free(t->keys);
  sp_free(t->lens);
  sp_free(t->vals);
  memset(t, 0, sizeof(*t));
}

static int sp__intern_grow(sp__intern_t *t) {
  size_t cap = t->cap ? t->cap * 2 : 64;
  sp__intern_t n = {.cap = cap};
  n.keys = sp_calloc(cap, sizeof(*n.keys));
  n.lens = sp_calloc(cap, sizeof(*n.lens));
  n.vals = sp_calloc(cap, sizeof(*n.vals));
  if (n.keys == NULL || n.lens == NULL || n.vals == NULL) {
    sp__intern_free(&n);
    return SP_ENOMEM;
  }
  for (size_t i = 0; i < t->cap; i++) {
    if (t->keys[i] == NULL) continue;
    size_t j = sp__hash(t->keys[i], t->lens[i]) & (cap - 1);
    while (n.keys[j] != NULL)
      j = (j + 1) & (cap - 1);
    n.keys[j] = t->keys[i];
    n.lens[j] = t->lens[i];
    n.vals[j] = t->vals[i];
  }
  n.n = t->n;
  sp__intern_free(t);
  *t = n;
  return 0;
}

/*
 * Looks @p key up. Found: *@p val gets its value and 0 is returned. Absent:
 * returns 1 and *@p slot names where sp__intern_put must store it (the
 * table has room). SP_ENOMEM on OOM.
 */
static int sp__intern_find(sp__intern_t *t, const void *key, size_t len, int32_t *val,
                           size_t *slot) {
  if ((t->n + 1) * 2 > t->cap && sp__intern_grow(t) != 0) return SP_ENOMEM;
  size_t j = sp__hash(key, len) & (t->cap - 1);
  while (t->keys[j] != NULL) {
    if (t->lens[j] == len && memcmp(t->keys[j], key, len) == 0) {
      *val = t->vals[j];
      return 0;
    }
    j = (j + 1) & (t->cap - 1);
  }
  *slot = j;
  return 1;
}

static void sp__intern_put(sp__intern_t *t, size_t slot, const uint8_t *key, size_t len,
                           int32_t val) {
  t->keys[slot] = key;
  t->lens[slot] = len;
  t->vals[slot] = val;
  t->n++;
}

/* ---- arena vectors ----------------------------------------------------------- */

typedef struct sp__vec_s {
  void **items;
  size_t n, cap;
} sp__vec_t;

static int sp__vec_push(sp_arena_t *a, sp__vec_t *v, void *item) {
  if (v->n == v->cap) {
    size_t cap = v->cap ? v->cap * 2 : 16;
    void **n = sp_arena_alloc(a, cap * sizeof(void *));
    if (n == NULL) return SP_ENOMEM;
    if (v->n) memcpy(n, v->items, v->n * sizeof(void *));
    v->items = n;
    v->cap = cap;
  }
  v->items[v->n++] = item;
  return 0;
}

/* ---- the builder ------------------------------------------------------------- */

typedef struct sp__builder_s {
  sp_arena_t *a;
  sp__vec_t strings, mappings, locations, functions, links, attrs, stacks;
  sp__vec_t resources;     /* sp__rprof_t *, each with one ScopeProfiles */
  sp__vec_t *res_profiles; /* parallel to resources: profiles per resource (heap array) */
  size_t res_cap;
  sp__intern_t istr, iattr, istack, ilink, ires;
  sp__intern_t ids; /* per pprof: (kind, id) → dictionary index */
} sp__builder_t;

#define SP__NEW(b, type, init)                                                                     \
  ({                                                                                               \
    type *p_ = sp_arena_alloc((b)->a, sizeof(type));                                               \
    if (p_ != NULL) init(p_);                                                                      \
    p_;                                                                                            \
  })

/* The dictionary index of string @p s (added when new); -1 on OOM. */
static int32_t sp__str(sp__builder_t *b, const char *s) {
  if (s == NULL) s = "";
  size_t len = strlen(s), slot;
  int32_t idx;
  int rc = sp__intern_find(&b->istr, s, len, &idx, &slot);
  if (rc == 0) return idx;
  if (rc < 0) return -1;
  char *copy = sp_arena_strndup(b->a, s, len);
  if (copy == NULL || sp__vec_push(b->a, &b->strings, copy) != 0) return -1;
  idx = (int32_t)(b->strings.n - 1);
  sp__intern_put(&b->istr, slot, (const uint8_t *)copy, len, idx);
  return idx;
}

/* Interns an arbitrary record: @p key identifies it, @p make builds it. */
static int32_t sp__intern_rec(sp__builder_t *b, sp__intern_t *t, sp__vec_t *v, const void *key,
                              size_t len, void *(*make)(sp__builder_t *, const void *),
                              const void *arg) {
  size_t slot;
  int32_t idx;
  int rc = sp__intern_find(t, key, len, &idx, &slot);
  if (rc == 0) return idx;
  if (rc < 0) return -1;
  uint8_t *copy = sp_arena_memdup(b->a, key, len > 0 ? len : 1);
  void *rec = make(b, arg);
  if (copy == NULL || rec == NULL || sp__vec_push(b->a, v, rec) != 0) return -1;
  idx = (int32_t)(v->n - 1);
  sp__intern_put(t, slot, copy, len, idx);
  return idx;
}

/* -- attributes -- */

typedef struct sp__attr_arg_s {
  int32_t key, unit;
  bool is_int;
  int64_t num;
  const char *str;
} sp__attr_arg_t;

static void *sp__make_attr(sp__builder_t *b, const void *p) {
  const sp__attr_arg_t *arg = p;
  sp__kvu_t *kv = SP__NEW(b, sp__kvu_t,
                          opentelemetry__proto__profiles__v1development__key_value_and_unit__init);
  sp__any_t *v = SP__NEW(b, sp__any_t, opentelemetry__proto__common__v1__any_value__init);
  if (kv == NULL || v == NULL) return NULL;
  kv->key_strindex = arg->key;
  kv->unit_strindex = arg->unit;
  if (arg->is_int) {
    v->value_case = OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_INT_VALUE;
    v->int_value = arg->num;
  } else {
    v->value_case = OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_STRING_VALUE;
    v->string_value = sp_arena_strdup(b->a, arg->str);
    if (v->string_value == NULL) return NULL;
  }
  kv->value = v;
  return kv;
}

static int32_t sp__attr(sp__builder_t *b, const char *key, const char *unit, bool is_int,
                        int64_t num, const char *str) {
  sp__attr_arg_t arg = {
      .key = sp__str(b, key), .unit = sp__str(b, unit), .is_int = is_int, .num = num, .str = str};
  if (arg.key < 0 || arg.unit < 0) return -1;
  /* Key bytes: kind, key index, unit index, then the value. */
  size_t slen = is_int ? 0 : strlen(str);
  uint8_t stackbuf[256];
  size_t len = 1 + 4 + 4 + (is_int ? 8 : slen);
  uint8_t *k = len <= sizeof(stackbuf) ? stackbuf : sp_malloc(len);
  if (k == NULL) return -1;
  k[0] = is_int ? 'i' : 's';
  memcpy(k + 1, &arg.key, 4);
  memcpy(k + 5, &arg.unit, 4);
  if (is_int)
    memcpy(k + 9, &num, 8);
  else
    memcpy(k + 9, str, slen);
  int32_t idx = sp__intern_rec(b, &b->iattr, &b->attrs, k, len, sp__make_attr, &arg);
  if (k != stackbuf) sp_free(k);
  return idx;
}

/* -- links -- */

static void *sp__make_link(sp__builder_t *b, const void *p) {
  const uint8_t *ids = p; /* 16 bytes trace id, 8 bytes span id */
  Opentelemetry__Proto__Profiles__V1development__Link *l =
      SP__NEW(b, Opentelemetry__Proto__Profiles__V1development__Link,
              opentelemetry__proto__profiles__v1development__link__init);
  if (l == NULL) return NULL;
  l->trace_id.data = sp_arena_memdup(b->a, ids, 16);
  l->span_id.data = sp_arena_memdup(b->a, ids + 16, 8);
  if (l->trace_id.data == NULL || l->span_id.data == NULL) return NULL;
  l->trace_id.len = 16;
  l->span_id.len = 8;
  return l;
}

/* -- stacks -- */

typedef struct sp__stack_arg_s {
  const int32_t *locs;
  size_t n;
} sp__stack_arg_t;

static void *sp__make_stack(sp__builder_t *b, const void *p) {
  const sp__stack_arg_t *arg = p;
  Opentelemetry__Proto__Profiles__V1development__Stack *s =
      SP__NEW(b, Opentelemetry__Proto__Profiles__V1development__Stack,
              opentelemetry__proto__profiles__v1development__stack__init);
  if (s == NULL) return NULL;
  if (arg->n > 0) {
    s->location_indices = sp_arena_memdup(b->a, arg->locs, arg->n * sizeof(int32_t));
    if (s->location_indices == NULL) return NULL;
  }
  s->n_location_indices = arg->n;
  return s;
}

/* ---- per pprof tables ------------------------------------------------------- */

enum { SP__ID_MAPPING = 'm', SP__ID_FUNCTION = 'f', SP__ID_LOCATION = 'l' };

static int sp__id_put(sp__builder_t *b, int kind, uint64_t id, int32_t idx) {
  uint8_t key[9];
  key[0] = (uint8_t)kind;
  memcpy(key + 1, &id, 8);
  size_t slot;
  int32_t old;
  int rc = sp__intern_find(&b->ids, key, 9, &old, &slot);
  if (rc < 0) return SP_ENOMEM;
  if (rc == 0) return SP_EPROTO; /* duplicate id */
  uint8_t *copy = sp_arena_memdup(b->a, key, 9);
  if (copy == NULL) return SP_ENOMEM;
  sp__intern_put(&b->ids, slot, copy, 9, idx);
  return 0;
}

/* The dictionary index for pprof id @p id of @p kind; 0 for id 0; -2 unknown; -1 OOM. */
static int32_t sp__id_get(sp__builder_t *b, int kind, uint64_t id) {
  if (id == 0) return 0;
  uint8_t key[9];
  key[0] = (uint8_t)kind;
  memcpy(key + 1, &id, 8);
  size_t slot;
  int32_t idx;
  int rc = sp__intern_find(&b->ids, key, 9, &idx, &slot);
  return rc == 0 ? idx : rc < 0 ? -1 : -2;
}

static const char *sp__pstr(const sp_pprof_t *pp, int64_t i) {
  return i >= 0 && (size_t)i < pp->n_string_table ? pp->string_table[i] : "";
}

/* Adds the pprof's mappings, functions and locations to the dictionary. */
static int sp__add_tables(sp__builder_t *b, const sp_pprof_t *pp) {
  sp__intern_free(&b->ids);
  for (size_t i = 0; i < pp->n_mapping; i++) {
    const Perftools__Profiles__Mapping *src = pp->mapping[i];
    Opentelemetry__Proto__Profiles__V1development__Mapping *m =
        SP__NEW(b, Opentelemetry__Proto__Profiles__V1development__Mapping,
                opentelemetry__proto__profiles__v1development__mapping__init);
    if (m == NULL) return SP_ENOMEM;
    m->memory_start = src->memory_start;
    m->memory_limit = src->memory_limit;
    m->file_offset = src->file_offset;
    if ((m->filename_strindex = sp__str(b, sp__pstr(pp, src->filename))) < 0) return SP_ENOMEM;
    if (src->build_id > 0) {
      int32_t a =
          sp__attr(b, "process.executable.build_id.gnu", "", false, 0, sp__pstr(pp, src->build_id));
      m->attribute_indices = sp_arena_alloc(b->a, sizeof(int32_t));
      if (a < 0 || m->attribute_indices == NULL) return SP_ENOMEM;
      m->attribute_indices[0] = a;
      m->n_attribute_indices = 1;
    }
    if (sp__vec_push(b->a, &b->mappings, m) != 0) return SP_ENOMEM;
    int rc = sp__id_put(b, SP__ID_MAPPING, src->id, (int32_t)(b->mappings.n - 1));
    if (rc != 0) return rc;
  }
  for (size_t i = 0; i < pp->n_function; i++) {
    const Perftools__Profiles__Function *src = pp->function[i];
    Opentelemetry__Proto__Profiles__V1development__Function *f =
        SP__NEW(b, Opentelemetry__Proto__Profiles__V1development__Function,
                opentelemetry__proto__profiles__v1development__function__init);
    if (f == NULL) return SP_ENOMEM;
    f->name_strindex = sp__str(b, sp__pstr(pp, src->name));
    f->system_name_strindex = sp__str(b, sp__pstr(pp, src->system_name));
    f->filename_strindex = sp__str(b, sp__pstr(pp, src->filename));
    f->start_line = src->start_line;
    if (f->name_strindex < 0 || f->system_name_strindex < 0 || f->filename_strindex < 0 ||
        sp__vec_push(b->a, &b->functions, f) != 0)
      return SP_ENOMEM;
    int rc = sp__id_put(b, SP__ID_FUNCTION, src->id, (int32_t)(b->functions.n - 1));
    if (rc != 0) return rc;
  }
  for (size_t i = 0; i < pp->n_location; i++) {
    const Perftools__Profiles__Location *src = pp->location[i];
    Opentelemetry__Proto__Profiles__V1development__Location *l =
        SP__NEW(b, Opentelemetry__Proto__Profiles__V1development__Location,
                opentelemetry__proto__profiles__v1development__location__init);
    if (l == NULL) return SP_ENOMEM;
    int32_t mi = sp__id_get(b, SP__ID_MAPPING, src->mapping_id);
    if (mi < 0) return mi == -1 ? SP_ENOMEM : SP_EPROTO;
    l->mapping_index = mi;
    l->address = src->address;
    if (src->n_line > 0) {
      l->lines = sp_arena_alloc(b->a, src->n_line * sizeof(void *));
      if (l->lines == NULL) return SP_ENOMEM;
    }
    for (size_t k = 0; k < src->n_line; k++) {
      Opentelemetry__Proto__Profiles__V1development__Line *ln =
          SP__NEW(b, Opentelemetry__Proto__Profiles__V1development__Line,
                  opentelemetry__proto__profiles__v1development__line__init);
      if (ln == NULL) return SP_ENOMEM;
      int32_t fi = sp__id_get(b, SP__ID_FUNCTION, src->line[k]->function_id);
      if (fi < 0) return fi == -1 ? SP_ENOMEM : SP_EPROTO;
      ln->function_index = fi;
      ln->line = src->line[k]->line;
      ln->column = src->line[k]->column;
      l->lines[l->n_lines++] = ln;
    }
    if (sp__vec_push(b->a, &b->locations, l) != 0) return SP_ENOMEM;
    int rc = sp__id_put(b, SP__ID_LOCATION, src->id, (int32_t)(b->locations.n - 1));
    if (rc != 0) return rc;
  }
  return 0;
}

/* ---- samples and profiles --------------------------------------------------- */

/* Per pprof sample, shared by the OTLP profiles of every sample type. */
typedef struct sp__sample_parts_s {
  int32_t stack;
  int32_t link;
  int32_t *attrs;
  size_t n_attrs;
  uint64_t time; /* 0: unknown */
} sp__sample_parts_t;

static bool sp__label_is(const sp_pprof_t *pp, const Perftools__Profiles__Label *lb,
                         const char *name) {
  return strcmp(sp__pstr(pp, lb->key), name) == 0;
}

static int sp__sample_parts(sp__builder_t *b, const sp_profile_t *p, const sp_pprof_t *pp,
                            size_t si, sp__sample_parts_t *out, int32_t *scratch,
                            size_t scratch_cap) {
  const Perftools__Profiles__Sample *s = pp->sample[si];
  memset(out, 0, sizeof(*out));
  /* The stack. */
  for (size_t k = 0; k < s->n_location_id; k++) {
    int32_t li = sp__id_get(b, SP__ID_LOCATION, s->location_id[k]);
    if (li < 0) return li == -1 ? SP_ENOMEM : SP_EPROTO;
    if (k < scratch_cap) scratch[k] = li;
  }
  sp__stack_arg_t sa = {scratch, s->n_location_id};
  if ((out->stack = sp__intern_rec(b, &b->istack, &b->stacks, scratch,
                                   s->n_location_id * sizeof(int32_t), sp__make_stack, &sa)) < 0)
    return SP_ENOMEM;
  /* A span link when both IDs are there and well-formed. */
  const char *span = NULL, *trace = NULL;
  for (size_t l = 0; l < s->n_label; l++) {
    if (sp__label_is(pp, s->label[l], "span_id") && s->label[l]->str > 0)
      span = sp__pstr(pp, s->label[l]->str);
    else if (sp__label_is(pp, s->label[l], "trace_id") && s->label[l]->str > 0)
      trace = sp__pstr(pp, s->label[l]->str);
  }
  uint8_t ids[24];
  bool linked = span != NULL && trace != NULL && strlen(trace) == 32 && strlen(span) == 16 &&
                sp_hex_decode(trace, 32, ids) == 0 && sp_hex_decode(span, 16, ids + 16) == 0;
  if (linked &&
      (out->link = sp__intern_rec(b, &b->ilink, &b->links, ids, 24, sp__make_link, ids)) < 0)
    return SP_ENOMEM;
  /* Attributes: the other labels, then the thread from the side array. */
  bool has_thread = false;
  out->attrs = sp_arena_alloc(b->a, (s->n_label + 1) * sizeof(int32_t));
  if (out->attrs == NULL) return SP_ENOMEM;
  for (size_t l = 0; l < s->n_label; l++) {
    const Perftools__Profiles__Label *lb = s->label[l];
    if (linked && (sp__label_is(pp, lb, "span_id") || sp__label_is(pp, lb, "trace_id"))) continue;
    has_thread =
        has_thread || sp__label_is(pp, lb, "thread.id") || sp__label_is(pp, lb, "thread_id");
    int32_t a =
        lb->str != 0
            ? sp__attr(b, sp__pstr(pp, lb->key), "", false, 0, sp__pstr(pp, lb->str))
            : sp__attr(b, sp__pstr(pp, lb->key), sp__pstr(pp, lb->num_unit), true, lb->num, NULL);
    if (a < 0) return SP_ENOMEM;
    out->attrs[out->n_attrs++] = a;
  }
  if (!has_thread && p->sample_thread != NULL && si < p->n_ext && p->sample_thread[si] >= 0) {
    int32_t a = sp__attr(b, "thread.id", "", true, p->sample_thread[si], NULL);
    if (a < 0) return SP_ENOMEM;
    out->attrs[out->n_attrs++] = a;
  }
  if (p->sample_time_ns != NULL && si < p->n_ext && p->sample_time_ns[si] > 0)
    out->time = (uint64_t)p->sample_time_ns[si];
  return 0;
}

/* The resource (and its profile list) for a profile's series labels. */
static int sp__resource_for(sp__builder_t *b, const sp_profile_t *p, sp__vec_t **profiles) {
  /* Key: name NUL value NUL ... for every label but __name__. */
  size_t len = 0;
  for (size_t i = 0; i < p->n_labels; i++)
    if (strcmp(p->labels[i].name, "__name__") != 0)
      len += strlen(p->labels[i].name) + strlen(p->labels[i].value) + 2;
  uint8_t *key = sp_malloc(len > 0 ? len : 1);
  if (key == NULL) return SP_ENOMEM;
  size_t o = 0;
  for (size_t i = 0; i < p->n_labels; i++) {
    if (strcmp(p->labels[i].name, "__name__") == 0) continue;
    size_t a = strlen(p->labels[i].name) + 1, v = strlen(p->labels[i].value) + 1;
    memcpy(key + o, p->labels[i].name, a);
    memcpy(key + o + a, p->labels[i].value, v);
    o += a + v;
  }
  size_t slot;
  int32_t idx;
  int rc = sp__intern_find(&b->ires, key, len, &idx, &slot);
  if (rc == 0) {
    sp_free(key);
    *profiles = &b->res_profiles[idx];
    return 0;
  }
  if (rc < 0) goto oom;
  sp__rprof_t *rp = SP__NEW(b, sp__rprof_t,
                            opentelemetry__proto__profiles__v1development__resource_profiles__init);
  Opentelemetry__Proto__Resource__V1__Resource *res =
      SP__NEW(b, Opentelemetry__Proto__Resource__V1__Resource,
              opentelemetry__proto__resource__v1__resource__init);
  sp__sprof_t *sp =
      SP__NEW(b, sp__sprof_t, opentelemetry__proto__profiles__v1development__scope_profiles__init);
  uint8_t *kcopy = sp_arena_memdup(b->a, key, len > 0 ? len : 1);
  if (rp == NULL || res == NULL || sp == NULL || kcopy == NULL) goto oom;
  res->attributes = p->n_labels ? sp_arena_alloc(b->a, p->n_labels * sizeof(void *)) : NULL;
  if (p->n_labels && res->attributes == NULL) goto oom;
  for (size_t i = 0; i < p->n_labels; i++) {
    if (strcmp(p->labels[i].name, "__name__") == 0) continue;
    sp__kv_t *kv = SP__NEW(b, sp__kv_t, opentelemetry__proto__common__v1__key_value__init);
    sp__any_t *v = SP__NEW(b, sp__any_t, opentelemetry__proto__common__v1__any_value__init);
    if (kv == NULL || v == NULL) goto oom;
    const char *name =
        strcmp(p->labels[i].name, "service_name") == 0 ? "service.name" : p->labels[i].name;
    kv->key = sp_arena_strdup(b->a, name);
    v->value_case = OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_STRING_VALUE;
    v->string_value = sp_arena_strdup(b->a, p->labels[i].value);
    if (kv->key == NULL || v->string_value == NULL) goto oom;
    kv->value = v;
    res->attributes[res->n_attributes++] = kv;
  }
  rp->resource = res;
  rp->scope_profiles = sp_arena_alloc(b->a, sizeof(void *));
  if (rp->scope_profiles == NULL) goto oom;
  rp->scope_profiles[0] = sp;
  rp->n_scope_profiles = 1;
  if (b->resources.n == b->res_cap) {
    size_t cap = b->res_cap ? b->res_cap * 2 : 8;
    sp__vec_t *n = sp_realloc(b->res_profiles, cap * sizeof(*n));
    if (n == NULL) goto oom;
    memset(n + b->res_cap, 0, (cap - b->res_cap) * sizeof(*n));
    b->res_profiles = n;
    b->res_cap = cap;
  }
  if (sp__vec_push(b->a, &b->resources, rp) != 0) goto oom;
  idx = (int32_t)(b->resources.n - 1);
  sp__intern_put(&b->ires, slot, kcopy, len, idx);
  sp_free(key);
  *profiles = &b->res_profiles[idx];
  return 0;
oom:
  sp_free(key);
  return SP_ENOMEM;
}

static Opentelemetry__Proto__Profiles__V1development__ValueType *
sp__value_type(sp__builder_t *b, const sp_pprof_t *pp, const Perftools__Profiles__ValueType *vt) {
  Opentelemetry__Proto__Profiles__V1development__ValueType *o =
      SP__NEW(b, Opentelemetry__Proto__Profiles__V1development__ValueType,
              opentelemetry__proto__profiles__v1development__value_type__init);
  if (o == NULL) return NULL;
  o->type_strindex = sp__str(b, vt ? sp__pstr(pp, vt->type) : "");
  o->unit_strindex = sp__str(b, vt ? sp__pstr(pp, vt->unit) : "");
  return o->type_strindex < 0 || o->unit_strindex < 0 ? NULL : o;
}

static int sp__convert_profile(sp__builder_t *b, sp_profiles_t *batch, sp_profile_t *p) {
  sp_pprof_t *pp = sp_profile_decode(batch, p);
  if (pp == NULL) return SP_EPROTO;
  int rc = sp__add_tables(b, pp);
  if (rc != 0) return rc;
  size_t max_locs = 0;
  for (size_t s = 0; s < pp->n_sample; s++)
    if (pp->sample[s]->n_location_id > max_locs) max_locs = pp->sample[s]->n_location_id;
  int32_t *scratch = sp_malloc((max_locs > 0 ? max_locs : 1) * sizeof(int32_t));
  sp__sample_parts_t *parts = sp_calloc(pp->n_sample > 0 ? pp->n_sample : 1, sizeof(*parts));
  if (scratch == NULL || parts == NULL) {
    rc = SP_ENOMEM;
    goto done;
  }
  for (size_t s = 0; s < pp->n_sample && rc == 0; s++)
    rc = sp__sample_parts(b, p, pp, s, &parts[s], scratch, max_locs);
  if (rc != 0) goto done;
  sp__vec_t *list;
  if ((rc = sp__resource_for(b, p, &list)) != 0) goto done;
  int64_t start = pp->time_nanos != 0 ? pp->time_nanos : p->time_start_ns;
  int64_t dur = pp->duration_nanos != 0  ? pp->duration_nanos
                : p->time_end_ns > start ? p->time_end_ns - start
                                         : 0;
  size_t n_types = pp->n_sample_type > 0 ? pp->n_sample_type : 1;
  for (size_t t = 0; t < n_types; t++) {
    sp__oprof_t *op =
        SP__NEW(b, sp__oprof_t, opentelemetry__proto__profiles__v1development__profile__init);
    if (op == NULL) goto oom;
    op->sample_type = sp__value_type(b, pp, pp->n_sample_type > 0 ? pp->sample_type[t] : NULL);
    op->period_type = sp__value_type(b, pp, pp->period_type);
    if (op->sample_type == NULL || op->period_type == NULL) goto oom;
    op->period = pp->period;
    op->time_unix_nano = (uint64_t)(start > 0 ? start : 0);
    op->duration_nano = (uint64_t)(dur > 0 ? dur : 0);
    if (pp->n_sample > 0) {
      op->samples = sp_arena_alloc(b->a, pp->n_sample * sizeof(void *));
      if (op->samples == NULL) goto oom;
    }
    for (size_t s = 0; s < pp->n_sample; s++) {
      const Perftools__Profiles__Sample *src = pp->sample[s];
      sp__osample_t *os =
          SP__NEW(b, sp__osample_t, opentelemetry__proto__profiles__v1development__sample__init);
      if (os == NULL) goto oom;
      os->stack_index = parts[s].stack;
      os->link_index = parts[s].link;
      os->attribute_indices = parts[s].attrs;
      os->n_attribute_indices = parts[s].n_attrs;
      os->values = sp_arena_alloc(b->a, sizeof(int64_t));
      if (os->values == NULL) goto oom;
      os->values[0] = t < src->n_value ? src->value[t] : 0;
      os->n_values = 1;
      if (parts[s].time != 0) {
        os->timestamps_unix_nano = sp_arena_alloc(b->a, sizeof(uint64_t));
        if (os->timestamps_unix_nano == NULL) goto oom;
        os->timestamps_unix_nano[0] = parts[s].time;
        os->n_timestamps_unix_nano = 1;
      }
      op->samples[op->n_samples++] = os;
    }
    if (sp__vec_push(b->a, list, op) != 0) goto oom;
  }
  goto done;
oom:
  rc = SP_ENOMEM;
done:
  sp_free(scratch);
  sp_free(parts);
  return rc;
}

/* Index 0 of every dictionary table is the zero value. */
static int sp__dict_zero_entries(sp__builder_t *b) {
  void *m = SP__NEW(b, Opentelemetry__Proto__Profiles__V1development__Mapping,
                    opentelemetry__proto__profiles__v1development__mapping__init);
  void *l = SP__NEW(b, Opentelemetry__Proto__Profiles__V1development__Location,
                    opentelemetry__proto__profiles__v1development__location__init);
  void *f = SP__NEW(b, Opentelemetry__Proto__Profiles__V1development__Function,
                    opentelemetry__proto__profiles__v1development__function__init);
  void *k = SP__NEW(b, Opentelemetry__Proto__Profiles__V1development__Link,
                    opentelemetry__proto__profiles__v1development__link__init);
  void *a = SP__NEW(b, sp__kvu_t,
                    opentelemetry__proto__profiles__v1development__key_value_and_unit__init);
  if (!m || !l || !f || !k || !a || sp__str(b, "") != 0) return SP_ENOMEM;
  if (sp__vec_push(b->a, &b->mappings, m) || sp__vec_push(b->a, &b->locations, l) ||
      sp__vec_push(b->a, &b->functions, f) || sp__vec_push(b->a, &b->links, k) ||
      sp__vec_push(b->a, &b->attrs, a))
    return SP_ENOMEM;
  /* The empty stack is interned so samples without locations share it. */
  sp__stack_arg_t none = {NULL, 0};
  return sp__intern_rec(b, &b->istack, &b->stacks, "", 0, sp__make_stack, &none) == 0 ? 0
                                                                                      : SP_ENOMEM;
}

int sp_otlpprofiles_from_batch(sp_profiles_t *batch, sp_arena_t *arena,
                               sp_otlpprofiles_req_t **out) {
  sp__builder_t b;
  memset(&b, 0, sizeof(b));
  b.a = arena;
  int rc = 0;
  sp_otlpprofiles_req_t *req = SP__NEW(
      &b, sp_otlpprofiles_req_t,
      opentelemetry__proto__collector__profiles__v1development__export_profiles_service_request__init);
  sp__dict_t *d = SP__NEW(&b, sp__dict_t,
                          opentelemetry__proto__profiles__v1development__profiles_dictionary__init);
  if (req == NULL || d == NULL || sp__dict_zero_entries(&b) != 0) {
    rc = SP_ENOMEM;
    goto done;
  }
  for (size_t i = 0; i < batch->n && rc == 0; i++)
    rc = sp__convert_profile(&b, batch, &batch->items[i]);
  if (rc != 0) goto done;
  for (size_t r = 0; r < b.resources.n; r++) {
    sp__sprof_t *sp = ((sp__rprof_t *)b.resources.items[r])->scope_profiles[0];
    sp->profiles = (sp__oprof_t **)b.res_profiles[r].items;
    sp->n_profiles = b.res_profiles[r].n;
  }
  req->resource_profiles = (sp__rprof_t **)b.resources.items;
  req->n_resource_profiles = b.resources.n;
  d->string_table = (char **)b.strings.items;
  d->n_string_table = b.strings.n;
  d->mapping_table = (void *)b.mappings.items;
  d->n_mapping_table = b.mappings.n;
  d->location_table = (void *)b.locations.items;
  d->n_location_table = b.locations.n;
  d->function_table = (void *)b.functions.items;
  d->n_function_table = b.functions.n;
  d->link_table = (void *)b.links.items;
  d->n_link_table = b.links.n;
  d->attribute_table = (void *)b.attrs.items;
  d->n_attribute_table = b.attrs.n;
  d->stack_table = (void *)b.stacks.items;
  d->n_stack_table = b.stacks.n;
  req->dictionary = d;
  *out = req;
done:
  sp__intern_free(&b.istr);
  sp__intern_free(&b.iattr);
  sp__intern_free(&b.istack);
  sp__intern_free(&b.ilink);
  sp__intern_free(&b.ires);
  sp__intern_free(&b.ids);
  sp_free(b.res_profiles);
  return rc;
}
