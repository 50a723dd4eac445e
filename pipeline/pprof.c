/*
 * pprof.c — see pprof.h.
 *
 * The validation pass exists so that every later reader can index the
 * string table and resolve IDs without checks of its own: a profile that
 * got into a batch through sp_pprof_decode() is internally consistent.
 * Location and function IDs are usually 1..n in table order (Go, the
 * Datadog/Pyroscope Node encoder and async-profiler all write them so); that
 * case is checked in O(1) per reference, anything else through a sorted copy.
 */
#include "pipeline/pprof.h"

#include "pipeline/pbscan.h"

#include "pipeline/alloc.h"
#include "pipeline/compress.h"
#include "pipeline/error.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int sp_pprof_uncompress(const uint8_t *in, size_t len, size_t max_size, sp_buf_t *scratch,
                        const uint8_t **out, size_t *out_len) {
  if (max_size == 0)
    max_size = SP_PPROF_DEFAULT_MAX_SIZE;
  if (!sp_is_gzip(in, len)) {
    if (len > max_size)
      return SP_ETOOBIG;
    *out = in;
    *out_len = len;
    return 0;
  }
  size_t start = scratch->len;
  int rc = sp_inflate(in, len, SP_ENC_GZIP, max_size, scratch);
  if (rc != 0)
    return rc;
  *out = scratch->data != NULL ? scratch->data + start : (const uint8_t *)"";
  *out_len = scratch->len - start;
  return 0;
}

static int sp__fail(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int sp__fail(char *err, size_t errlen, const char *fmt, ...) {
  if (err != NULL && errlen > 0) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
  }
  return SP_EPROTO;
}

/*
 * protobuf-c reports a failed allocation and malformed input alike (NULL),
 * so the decode goes through this allocator, which remembers whether the
 * arena ran out: that is SP_ENOMEM (retry later), not bad data.
 */
typedef struct sp__tracking_alloc_s {
  ProtobufCAllocator base;
  ProtobufCAllocator *inner;
  bool failed;
} sp__tracking_alloc_t;

static void *sp__tracking_alloc(void *data, size_t size) {
  sp__tracking_alloc_t *t = data;
  void *p = t->inner->alloc(t->inner->allocator_data, size);
  if (p == NULL)
    t->failed = true;
  return p;
}

static void sp__tracking_free(void *data, void *ptr) {
  sp__tracking_alloc_t *t = data;
  t->inner->free(t->inner->allocator_data, ptr);
}

int sp_pprof_decode(sp_arena_t *arena, const uint8_t *raw, size_t len, sp_pprof_t **out,
                    char *err, size_t errlen) {
  *out = NULL;
  /*
   * The scan bounds what decoding may allocate (empty samples cost 2 bytes
   * on the wire and ~60 decoded): over the budget is "too large" (413).
   */
  int src = sp_pbscan(&perftools__profiles__profile__descriptor, raw, len, NULL, NULL, err, errlen);
  if (src == SP_ETOOBIG)
    return src;
  if (src != 0)
    return sp__fail(err, errlen, "not a pprof profile (malformed protobuf)");
  sp__tracking_alloc_t t = {.inner = sp_arena_pbc(arena)};
  t.base = (ProtobufCAllocator){.alloc = sp__tracking_alloc, .free = sp__tracking_free,
                                .allocator_data = &t};
  sp_pprof_t *p = perftools__profiles__profile__unpack(&t.base, len, raw);
  if (p == NULL && t.failed) {
    sp__fail(err, errlen, "out of memory decoding the profile");
    return SP_ENOMEM;
  }
  if (p == NULL)
    return sp__fail(err, errlen, "not a pprof profile (malformed protobuf)");
  int rc = sp_pprof_validate(p, err, errlen);
  if (rc != 0)
    return rc;
  *out = p;
  return 0;
}

/* ---- validation ---------------------------------------------------------------- */

typedef struct sp_idset_s {
  uint64_t *sorted; /* NULL when ids are exactly 1..n in order */
  size_t n;
} sp_idset_t;

static int sp__cmp_u64(const void *a, const void *b) {
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return x < y ? -1 : x > y;
}

/* Builds a lookup over n IDs read by get(i); fails on zero or duplicate IDs. */
static int sp__idset_build(sp_idset_t *set, size_t n, uint64_t (*get)(const sp_pprof_t *, size_t),
                           const sp_pprof_t *p, const char *what, char *err, size_t errlen) {
  set->sorted = NULL;
  set->n = n;
  bool dense = true;
  for (size_t i = 0; i < n && dense; i++)
    dense = get(p, i) == i + 1;
  if (dense)
    return 0;
  set->sorted = sp_malloc(n * sizeof(uint64_t));
  if (set->sorted == NULL)
    return SP_ENOMEM;
  for (size_t i = 0; i < n; i++)
    set->sorted[i] = get(p, i);
  qsort(set->sorted, n, sizeof(uint64_t), sp__cmp_u64);
  for (size_t i = 0; i < n; i++) {
    if (set->sorted[i] == 0)
      return sp__fail(err, errlen, "%s: id 0 is reserved", what);
    if (i > 0 && set->sorted[i] == set->sorted[i - 1])
      return sp__fail(err, errlen, "%s: duplicate id %llu", what,
                      (unsigned long long)set->sorted[i]);
  }
  return 0;
}

static bool sp__idset_has(const sp_idset_t *set, uint64_t id) {
  if (set->sorted == NULL)
    return id >= 1 && id <= set->n;
  return bsearch(&id, set->sorted, set->n, sizeof(uint64_t), sp__cmp_u64) != NULL;
}

static uint64_t sp__loc_id(const sp_pprof_t *p, size_t i) { return p->location[i]->id; }
static uint64_t sp__fn_id(const sp_pprof_t *p, size_t i) { return p->function[i]->id; }
static uint64_t sp__map_id(const sp_pprof_t *p, size_t i) { return p->mapping[i]->id; }

#define SP__STR_OK(p, i) ((i) >= 0 && (uint64_t)(i) < (uint64_t)(p)->n_string_table)

static int sp__check_strings(const sp_pprof_t *p, char *err, size_t errlen) {
  size_t n = p->n_string_table;
  if (n == 0 || p->string_table[0] == NULL || p->string_table[0][0] != '\0')
    return sp__fail(err, errlen, "string_table[0] must be the empty string");
#define SP__CHECK(idx, ...)                                                                        \
  do {                                                                                             \
    if (!SP__STR_OK(p, idx)) {                                                                     \
      char where_[96];                                                                             \
      snprintf(where_, sizeof(where_), __VA_ARGS__);                                               \
      return sp__fail(err, errlen, "%s: string index %lld out of range (table has %zu)", where_,  \
                      (long long)(idx), n);                                                        \
    }                                                                                              \
  } while (0)
  for (size_t i = 0; i < p->n_sample_type; i++) {
    SP__CHECK(p->sample_type[i]->type, "sample_type[%zu].type", i);
    SP__CHECK(p->sample_type[i]->unit, "sample_type[%zu].unit", i);
  }
  if (p->period_type != NULL) {
    SP__CHECK(p->period_type->type, "period_type.type");
    SP__CHECK(p->period_type->unit, "period_type.unit");
  }
  for (size_t i = 0; i < p->n_sample; i++) {
    const sp_pprof_sample_t *s = p->sample[i];
    for (size_t j = 0; j < s->n_label; j++) {
      SP__CHECK(s->label[j]->key, "sample[%zu].label[%zu].key", i, j);
      SP__CHECK(s->label[j]->str, "sample[%zu].label[%zu].str", i, j);
      SP__CHECK(s->label[j]->num_unit, "sample[%zu].label[%zu].num_unit", i, j);
    }
  }
  for (size_t i = 0; i < p->n_mapping; i++) {
    SP__CHECK(p->mapping[i]->filename, "mapping[%zu].filename", i);
    SP__CHECK(p->mapping[i]->build_id, "mapping[%zu].build_id", i);
  }
  for (size_t i = 0; i < p->n_function; i++) {
    SP__CHECK(p->function[i]->name, "function[%zu].name", i);
    SP__CHECK(p->function[i]->system_name, "function[%zu].system_name", i);
    SP__CHECK(p->function[i]->filename, "function[%zu].filename", i);
  }
  SP__CHECK(p->drop_frames, "drop_frames");
  SP__CHECK(p->keep_frames, "keep_frames");
  SP__CHECK(p->default_sample_type, "default_sample_type");
  SP__CHECK(p->doc_url, "doc_url");
  for (size_t i = 0; i < p->n_comment; i++)
    SP__CHECK(p->comment[i], "comment[%zu]", i);
#undef SP__CHECK
  return 0;
}

int sp_pprof_validate(const sp_pprof_t *p, char *err, size_t errlen) {
  sp_idset_t locs = {0}, fns = {0}, maps = {0};
  int rc = sp__check_strings(p, err, errlen);
  if (rc != 0)
    goto done;
  for (size_t i = 0; i < p->n_sample; i++) {
    if (p->sample[i]->n_value != p->n_sample_type) {
      rc = sp__fail(err, errlen, "sample[%zu]: %zu values for %zu sample types", i,
                    p->sample[i]->n_value, p->n_sample_type);
      goto done;
    }
  }
  if ((rc = sp__idset_build(&locs, p->n_location, sp__loc_id, p, "location", err, errlen)) != 0 ||
      (rc = sp__idset_build(&fns, p->n_function, sp__fn_id, p, "function", err, errlen)) != 0 ||
      (rc = sp__idset_build(&maps, p->n_mapping, sp__map_id, p, "mapping", err, errlen)) != 0)
    goto done;
  for (size_t i = 0; i < p->n_sample; i++) {
    const sp_pprof_sample_t *s = p->sample[i];
    for (size_t j = 0; j < s->n_location_id; j++) {
      if (!sp__idset_has(&locs, s->location_id[j])) {
        rc = sp__fail(err, errlen, "sample[%zu].location_id[%zu]: no location with id %llu", i, j,
                      (unsigned long long)s->location_id[j]);
        goto done;
      }
    }
  }
  for (size_t i = 0; i < p->n_location; i++) {
    const Perftools__Profiles__Location *l = p->location[i];
    if (l->mapping_id != 0 && !sp__idset_has(&maps, l->mapping_id)) {
      rc = sp__fail(err, errlen, "location[%zu].mapping_id: no mapping with id %llu", i,
                    (unsigned long long)l->mapping_id);
      goto done;
    }
    for (size_t j = 0; j < l->n_line; j++) {
      if (!sp__idset_has(&fns, l->line[j]->function_id)) {
        rc = sp__fail(err, errlen, "location[%zu].line[%zu]: no function with id %llu", i, j,
                      (unsigned long long)l->line[j]->function_id);
        goto done;
      }
    }
  }
done:
  sp_free(locs.sorted);
  sp_free(fns.sorted);
  sp_free(maps.sorted);
  return rc;
}

/* ---- reading ------------------------------------------------------------------- */

const char *sp_pprof_str(const sp_pprof_t *p, int64_t i) {
  return SP__STR_OK(p, i) && p->string_table[i] != NULL ? p->string_table[i] : "";
}

int64_t sp_pprof_find_string(const sp_pprof_t *p, const char *s) {
  for (size_t i = 0; i < p->n_string_table; i++)
    if (p->string_table[i] != NULL && strcmp(p->string_table[i], s) == 0)
      return (int64_t)i;
  return -1;
}

sp_pprof_label_t *sp_pprof_sample_label(const sp_pprof_sample_t *s, int64_t key) {
  for (size_t i = 0; i < s->n_label; i++)
    if (s->label[i]->key == key)
      return s->label[i];
  return NULL;
}

const char *sp_pprof_sample_label_str(const sp_pprof_t *p, const sp_pprof_sample_t *s,
                                      const char *key) {
  int64_t k = sp_pprof_find_string(p, key);
  if (k <= 0)
    return NULL;
  const sp_pprof_label_t *l = sp_pprof_sample_label(s, k);
  return l != NULL && l->str != 0 ? sp_pprof_str(p, l->str) : NULL;
}

bool sp_pprof_is_hex(const char *s, size_t n) {
  size_t i = 0;
  for (; i < n; i++) {
    char c = s[i];
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F')))
      return false;
  }
  return s[i] == '\0';
}

/* ---- editing ------------------------------------------------------------------- */

void sp_pprof_edit_init(sp_pprof_edit_t *e, sp_arena_t *arena, sp_pprof_t *p) {
  memset(e, 0, sizeof(*e));
  e->arena = arena;
  e->p = p;
}

void sp_pprof_edit_free(sp_pprof_edit_t *e) {
  sp_free(e->slots);
  e->slots = NULL;
  e->n_slots = 0;
  e->n_indexed = 0;
}

static uint64_t sp__hash(const char *s) {
  uint64_t h = 1469598103934665603ull;
  for (; *s; s++)
    h = (h ^ (uint8_t)*s) * 1099511628211ull;
  return h;
}

/* Finds the slot holding @p s, or the empty slot where it would go. */
static size_t sp__slot(const sp_pprof_edit_t *e, const char *s, bool *found) {
  size_t mask = e->n_slots - 1, i = (size_t)sp__hash(s) & mask;
  while (e->slots[i] != 0) {
    if (strcmp(e->p->string_table[e->slots[i] - 1], s) == 0) {
      *found = true;
      return i;
    }
    i = (i + 1) & mask;
  }
  *found = false;
  return i;
}

/* (Re)builds the index with room for at least @p want strings at load <= 1/2. */
static int sp__index_grow(sp_pprof_edit_t *e, size_t want) {
  size_t n = 64;
  while (n < want * 2)
    n *= 2;
  int64_t *slots = sp_calloc(n, sizeof(int64_t));
  if (slots == NULL)
    return SP_ENOMEM;
  sp_free(e->slots);
  e->slots = slots;
  e->n_slots = n;
  e->n_indexed = 0;
  for (size_t i = 0; i < e->p->n_string_table; i++) {
    const char *s = e->p->string_table[i];
    if (s == NULL)
      continue;
    bool found;
    size_t at = sp__slot(e, s, &found);
    if (!found) { /* duplicates keep their first index */
      e->slots[at] = (int64_t)i + 1;
      e->n_indexed++;
    }
  }
  return 0;
}

int64_t sp_pprof_intern(sp_pprof_edit_t *e, const char *s) {
  sp_pprof_t *p = e->p;
  if (e->n_slots == 0 || (e->n_indexed + 1) * 2 > e->n_slots) {
    if (sp__index_grow(e, p->n_string_table + 16) != 0)
      return SP_ENOMEM;
  }
  bool found;
  size_t at = sp__slot(e, s, &found);
  if (found)
    return e->slots[at] - 1;
  if (e->strtab_cap == 0 || p->n_string_table == e->strtab_cap) {
    size_t cap = p->n_string_table < 8 ? 16 : p->n_string_table * 2;
    char **tab = sp_arena_alloc(e->arena, cap * sizeof(char *));
    if (tab == NULL)
      return SP_ENOMEM;
    if (p->n_string_table > 0)
      memcpy(tab, p->string_table, p->n_string_table * sizeof(char *));
    p->string_table = tab;
    e->strtab_cap = cap;
  }
  char *copy = sp_arena_strdup(e->arena, s);
  if (copy == NULL)
    return SP_ENOMEM;
  int64_t idx = (int64_t)p->n_string_table;
  p->string_table[p->n_string_table++] = copy;
  e->slots[at] = idx + 1;
  e->n_indexed++;
  return idx;
}

int sp_pprof_sample_set_label(sp_pprof_edit_t *e, sp_pprof_sample_t *s, int64_t key,
                              int64_t value) {
  sp_pprof_label_t *l = sp_pprof_sample_label(s, key);
  if (l != NULL) {
    if (l->str != value || l->num != 0 || l->num_unit != 0) {
      l->str = value;
      l->num = 0;
      l->num_unit = 0;
      e->changed++;
    }
    return 0;
  }
  sp_pprof_label_t **arr = sp_arena_alloc(e->arena, (s->n_label + 1) * sizeof(*arr));
  l = sp_arena_alloc(e->arena, sizeof(*l));
  if (arr == NULL || l == NULL)
    return SP_ENOMEM;
  perftools__profiles__label__init(l);
  l->key = key;
  l->str = value;
  if (s->n_label > 0)
    memcpy(arr, s->label, s->n_label * sizeof(*arr));
  arr[s->n_label] = l;
  s->label = arr;
  s->n_label++;
  e->changed++;
  return 0;
}

int sp_pprof_sample_set_label_str(sp_pprof_edit_t *e, sp_pprof_sample_t *s, const char *key,
                                  const char *value) {
  int64_t k = sp_pprof_intern(e, key);
  if (k < 0)
    return (int)k;
  int64_t v = sp_pprof_intern(e, value);
  if (v < 0)
    return (int)v;
  return sp_pprof_sample_set_label(e, s, k, v);
}

size_t sp_pprof_sample_remove_label(sp_pprof_edit_t *e, sp_pprof_sample_t *s, int64_t key) {
  size_t w = 0;
  for (size_t i = 0; i < s->n_label; i++)
    if (s->label[i]->key != key)
      s->label[w++] = s->label[i];
  size_t removed = s->n_label - w;
  s->n_label = w;
  e->changed += removed;
  return removed;
}

int sp_pprof_rename_label(sp_pprof_edit_t *e, const char *from, const char *to,
                          size_t *n_changed) {
  sp_pprof_t *p = e->p;
  size_t n = 0;
  int64_t kf = sp_pprof_find_string(p, from), kt = -1;
  if (kf > 0) {
    for (size_t i = 0; i < p->n_sample; i++) {
      sp_pprof_sample_t *s = p->sample[i];
      sp_pprof_label_t *l = sp_pprof_sample_label(s, kf);
      if (l == NULL)
        continue;
      if (kt < 0 && (kt = sp_pprof_intern(e, to)) < 0)
        return SP_ENOMEM;
      if (sp_pprof_sample_label(s, kt) != NULL) {
        sp_pprof_sample_remove_label(e, s, kf);
      } else {
        for (size_t j = 0; j < s->n_label; j++)
          if (s->label[j]->key == kf)
            s->label[j]->key = kt;
        e->changed++;
      }
      n++;
    }
  }
  if (n_changed != NULL)
    *n_changed = n;
  return 0;
}

/* Lower-cases a hex value in place through the string table; 1 when changed. */
static int sp__lower_hex(sp_pprof_edit_t *e, sp_pprof_label_t *l) {
  const char *v = sp_pprof_str(e->p, l->str);
  bool upper = false;
  for (const char *c = v; *c; c++)
    upper |= (*c >= 'A' && *c <= 'F');
  if (!upper)
    return 0;
  char buf[64];
  size_t n = strlen(v);
  if (n >= sizeof(buf))
    return 0;
  for (size_t i = 0; i <= n; i++)
    buf[i] = (v[i] >= 'A' && v[i] <= 'F') ? (char)(v[i] - 'A' + 'a') : v[i];
  int64_t idx = sp_pprof_intern(e, buf);
  if (idx < 0)
    return (int)idx;
  l->str = idx;
  e->changed++;
  return 1;
}

int sp_pprof_normalize_span_labels(sp_pprof_edit_t *e, size_t *n_changed) {
  sp_pprof_t *p = e->p;
  size_t n = 0;
  int64_t k_pid = sp_pprof_find_string(p, "profile_id"), k_span = sp_pprof_find_string(p, "span");
  int64_t k_sid = sp_pprof_find_string(p, "span_id"), k_tid = sp_pprof_find_string(p, "trace_id");
  int64_t k_name = sp_pprof_find_string(p, "span_name");
  if (k_pid <= 0 && k_span <= 0 && k_sid <= 0 && k_tid <= 0)
    goto done;
  for (size_t i = 0; i < p->n_sample; i++) {
    sp_pprof_sample_t *s = p->sample[i];
    size_t before = e->changed;
    sp_pprof_label_t *l;
    if (k_pid > 0 && (l = sp_pprof_sample_label(s, k_pid)) != NULL &&
        sp_pprof_is_hex(sp_pprof_str(p, l->str), 16)) {
      if (k_sid <= 0 && (k_sid = sp_pprof_intern(e, "span_id")) < 0)
        return SP_ENOMEM;
      if (sp_pprof_sample_label(s, k_sid) != NULL) {
        sp_pprof_sample_remove_label(e, s, k_pid);
      } else {
        l->key = k_sid;
        e->changed++;
      }
    }
    if (k_span > 0 && (l = sp_pprof_sample_label(s, k_span)) != NULL && l->str != 0) {
      if (k_name <= 0 && (k_name = sp_pprof_intern(e, "span_name")) < 0)
        return SP_ENOMEM;
      if (sp_pprof_sample_label(s, k_name) != NULL) {
        sp_pprof_sample_remove_label(e, s, k_span);
      } else {
        l->key = k_name;
        e->changed++;
      }
    }
    if (k_sid > 0 && (l = sp_pprof_sample_label(s, k_sid)) != NULL &&
        sp_pprof_is_hex(sp_pprof_str(p, l->str), 16) && sp__lower_hex(e, l) < 0)
      return SP_ENOMEM;
    if (k_tid > 0 && (l = sp_pprof_sample_label(s, k_tid)) != NULL &&
        sp_pprof_is_hex(sp_pprof_str(p, l->str), 32) && sp__lower_hex(e, l) < 0)
      return SP_ENOMEM;
    n += e->changed != before;
  }
done:
  if (n_changed != NULL)
    *n_changed = n;
  return 0;
}

sp_pprof_t *sp_pprof_new(sp_arena_t *arena) {
  sp_pprof_t *p = sp_arena_alloc(arena, sizeof(*p));
  char **tab = sp_arena_alloc(arena, sizeof(char *));
  char *empty = sp_arena_strdup(arena, "");
  if (p == NULL || tab == NULL || empty == NULL)
    return NULL;
  perftools__profiles__profile__init(p);
  tab[0] = empty;
  p->string_table = tab;
  p->n_string_table = 1;
  return p;
}
