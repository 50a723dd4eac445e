/*
 * spanprofile_index.c — the span index of the span–profile join.
 *
 * Spans live in a pool of fixed-size records addressed by a 32-bit index and
 * a generation, so references held by waiting samples notice when a span
 * has gone. Three structures point into the pool:
 *
 *  - a hash table keyed by (service, span ID), open addressing with linear
 *    probing and backward-shift deletion, for the join by span ID;
 *  - processes, found by their identity key strings (several strings may
 *    alias one process: a resource with both service.instance.id and
 *    host.name + process.pid is reachable by either), each with one bucket
 *    per thread plus one for spans without a thread;
 *  - per bucket, an interval grid for the thread/time join. A span of
 *    duration d is filed at the smallest level whose cell width
 *    W = 2^(13+3*level) ns is at least d, in the one or two cells its
 *    interval touches. A span containing time t is then in cell t/W of its
 *    level, so a query looks at one cell per level in use (a bitmask per
 *    bucket), scanning a short contiguous vector of (start, end, index)
 *    items. Spans longer than the top level (about 18 minutes) sit in a
 *    per-bucket list. Cells are one hash table keyed by (bucket, level,
 *    cell); their vectors come from a size-class slab, so indexing a span
 *    costs no malloc in the steady state.
 *
 * Removal is eager everywhere, so a query only ever sees live spans. When a
 * span leaves, its process's watermark rises to the span's end: a sample at
 * or before the watermark might have belonged to a span that is no longer
 * known, so it is never attributed (reason `expired`) — an outer span must
 * not win because its inner span was forgotten. A small direct-mapped cache
 * remembers recently removed span keys so that a span-ID miss can be told
 * apart (`expired` rather than `no_span`).
 *
 * Resolution rules (see sp__spj_resolve_window): with the sample's thread
 * known, the candidates are the spans of that thread containing the time,
 * plus the process's spans without a thread; the innermost one wins if
 * every other candidate contains it (equal intervals must be its
 * ancestors); an unthreaded innermost span or any partial overlap is not
 * guessed. Without the sample's thread (or with only unthreaded spans), a
 * sample is attributed only when exactly one span of the process is active.
 */
#include "processors/spanprofile/spanprofile_int.h"

#include "pipeline/alloc.h"
#include "pipeline/error.h"

#include <string.h>

/* ---- small helpers ------------------------------------------------------------- */

static inline uint64_t sp__mix(uint64_t x) {
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdULL;
  x ^= x >> 33;
  x *= 0xc4ceb9fe1a85ec53ULL;
  x ^= x >> 33;
  return x;
}

static uint64_t sp__strhash(const char *s, size_t len) {
  uint64_t h = 0xcbf29ce484222325ULL;
  for (size_t i = 0; i < len; i++) {
    h ^= (uint8_t)s[i];
    h *= 0x100000001b3ULL;
  }
  return sp__mix(h);
}

static size_t sp__pow2(size_t n) {
  size_t p = 16;
  while (p < n)
    p <<= 1;
  return p;
}

/* ---- slab of item vectors --------------------------------------------------------- */

typedef struct sp_spj_item_s {
  int64_t s, e;
  uint32_t idx;
} sp_spj_item_t;

#define SP_SPJ_CLASSES 10 /* capacities 2, 4, ..., 1024 items */
#define SP_SPJ_SLAB_CHUNK (256u * 1024u)

typedef struct sp_spj_chunk_s {
  struct sp_spj_chunk_s *next;
  size_t used;
  size_t size;
  _Alignas(16) unsigned char mem[];
} sp_spj_chunk_t;

typedef struct sp_spj_slab_s {
  void *free[SP_SPJ_CLASSES];
  sp_spj_chunk_t *chunks;
  size_t bytes; /* allocated from the system */
  size_t inuse; /* handed out as vectors */
} sp_spj_slab_t;

static int sp__class(uint32_t cap) {
  int c = 0;
  while ((2u << c) < cap)
    c++;
  return c;
}

static sp_spj_item_t *sp__slab_get_raw(sp_spj_slab_t *sl, uint32_t cap);

static sp_spj_item_t *sp__slab_get(sp_spj_slab_t *sl, uint32_t cap) {
  sp_spj_item_t *v = sp__slab_get_raw(sl, cap);
  if (v != NULL) sl->inuse += (size_t)cap * sizeof(*v);
  return v;
}

static sp_spj_item_t *sp__slab_get_raw(sp_spj_slab_t *sl, uint32_t cap) {
  int c = sp__class(cap);
  if (c >= SP_SPJ_CLASSES) {
    sp_spj_item_t *v = sp_malloc((size_t)cap * sizeof(*v));
    if (v != NULL) sl->bytes += (size_t)cap * sizeof(*v);
    return v;
  }
  if (sl->free[c] != NULL) {
    void *p = sl->free[c];
    memcpy(&sl->free[c], p, sizeof(void *));
    return p;
  }
  size_t need = (size_t)(2u << c) * sizeof(sp_spj_item_t);
  sp_spj_chunk_t *ch = sl->chunks;
  if (ch == NULL || ch->size - ch->used < need) {
    ch = sp_malloc(sizeof(*ch) + SP_SPJ_SLAB_CHUNK);
    if (ch == NULL) return NULL;
    ch->next = sl->chunks;
    ch->used = 0;
    ch->size = SP_SPJ_SLAB_CHUNK;
    sl->chunks = ch;
    sl->bytes += sizeof(*ch) + SP_SPJ_SLAB_CHUNK;
  }
  void *p = ch->mem + ch->used;
  ch->used += need;
  return p;
}

static void sp__slab_put(sp_spj_slab_t *sl, sp_spj_item_t *v, uint32_t cap) {
  if (v == NULL) return;
  sl->inuse -= (size_t)cap * sizeof(*v);
  int c = sp__class(cap);
  if (c >= SP_SPJ_CLASSES) {
    sl->bytes -= (size_t)cap * sizeof(*v);
    sp_free(v);
    return;
  }
  memcpy(v, &sl->free[c], sizeof(void *));
  sl->free[c] = v;
}

static void sp__slab_free(sp_spj_slab_t *sl) {
  while (sl->chunks != NULL) {
    sp_spj_chunk_t *n = sl->chunks->next;
    sp_free(sl->chunks);
    sl->chunks = n;
  }
}

typedef struct sp_spj_vec_s {
  sp_spj_item_t *v;
  uint32_t n, cap;
} sp_spj_vec_t;

static int sp__vec_push(sp_spj_slab_t *sl, sp_spj_vec_t *vec, sp_spj_item_t it) {
  if (vec->n == vec->cap) {
    uint32_t cap = vec->cap ? vec->cap * 2 : 2;
    sp_spj_item_t *v = sp__slab_get(sl, cap);
    if (v == NULL) return SP_ENOMEM;
    if (vec->n > 0) memcpy(v, vec->v, vec->n * sizeof(*v));
    sp__slab_put(sl, vec->v, vec->cap);
    vec->v = v;
    vec->cap = cap;
  }
  vec->v[vec->n++] = it;
  return 0;
}

/* Removes the item for span @p idx; true when found. */
static bool sp__vec_remove(sp_spj_slab_t *sl, sp_spj_vec_t *vec, uint32_t idx) {
  for (uint32_t i = 0; i < vec->n; i++) {
    if (vec->v[i].idx == idx) {
      vec->v[i] = vec->v[--vec->n];
      if (vec->n == 0) {
        sp__slab_put(sl, vec->v, vec->cap);
        vec->v = NULL;
        vec->cap = 0;
      }
      return true;
    }
  }
  return false;
}

/* ---- index structures ----------------------------------------------------------- */

#define SP_SPJ_POOL_SHIFT 12
#define SP_SPJ_POOL_CHUNK (1u << SP_SPJ_POOL_SHIFT)

typedef struct sp_spj_idslot_s {
  uint64_t id;
  uint32_t svch;
  uint32_t idx; /* SP_SPJ_NONE = empty */
} sp_spj_idslot_t;

typedef struct sp_spj_cell_s {
  uint64_t cell;
  uint32_t key; /* (bucket + 1) << 4 | level; 0 = empty */
  sp_spj_vec_t vec;
} sp_spj_cell_t;

typedef struct sp_spj_pkey_s {
  uint64_t hash;
  char *key; /* NULL = empty; owned by the process */
  uint32_t proc;
} sp_spj_pkey_t;

typedef struct sp_spj_bucket_s {
  uint32_t proc;
  uint32_t live;
  int64_t thread;
  uint32_t level_mask;
  uint32_t level_count[SP_SPJ_LEVELS];
  sp_spj_vec_t huge;
  uint32_t next_free;
} sp_spj_bucket_t;

typedef struct sp_spj_proc_s {
  uint32_t live;
  int64_t watermark;
  uint64_t empty_since;
  bool on_empty;
  uint32_t eprev, enext;
  uint32_t none_bucket;
  /* thread id → bucket, open addressing */
  int64_t *tkeys;
  uint32_t *tvals; /* SP_SPJ_NONE = empty */
  size_t tcap, tn;
  uint32_t *buckets; /* every bucket of the process, for thread-less queries */
  size_t nb, cb;
  char **keys;
  size_t nkeys;
} sp_spj_proc_t;

struct sp_spj_index_s {
  /* span pool */
  sp_spj_span_t **chunks;
  size_t n_chunks;
  uint32_t *free_idx;
  size_t n_free, cap_free;
  size_t live;
  /* (service, span ID) → span */
  sp_spj_idslot_t *ids;
  size_t ids_cap, ids_n;
  /* interned strings */
  sp_spj_str_t **strs;
  size_t strs_cap, strs_n;
  size_t strs_bytes;
  /* processes and their keys */
  sp_spj_proc_t **procs;
  size_t n_procs;
  uint32_t *free_procs;
  size_t n_free_procs;
  sp_spj_pkey_t *pkeys;
  size_t pkeys_cap, pkeys_n;
  uint32_t empty_head, empty_tail;
  uint64_t now_ms;
  /* buckets */
  sp_spj_bucket_t *buckets;
  size_t n_buckets;
  uint32_t free_bucket;
  /* grid cells */
  sp_spj_cell_t *cells;
  size_t cells_cap, cells_n;
  uint64_t cells_version; /* bumped on every change: invalidates the memo */
  struct {
    uint64_t cell;
    uint32_t key;
    uint64_t version;
    const sp_spj_cell_t *c;
  } memo[SP_SPJ_LEVELS];
  sp_spj_slab_t slab;
  /* recently removed span keys */
  uint64_t *gone;
  size_t gone_mask;
  size_t proc_bytes;
};

sp_spj_index_t *sp__spj_index_create(size_t max_spans) {
  sp_spj_index_t *ix = sp_calloc(1, sizeof(*ix));
  if (ix == NULL) return NULL;
  ix->empty_head = ix->empty_tail = SP_SPJ_NONE;
  ix->free_bucket = SP_SPJ_NONE;
  size_t gone = sp__pow2(max_spans < 16384 ? 16384 : max_spans > 65536 ? 65536 : max_spans);
  ix->gone = sp_calloc(gone, sizeof(uint64_t));
  if (ix->gone == NULL) {
    sp_free(ix);
    return NULL;
  }
  ix->gone_mask = gone - 1;
  return ix;
}

sp_spj_span_t *sp__spj_at(sp_spj_index_t *ix, uint32_t idx) {
  return &ix->chunks[idx >> SP_SPJ_POOL_SHIFT][idx & (SP_SPJ_POOL_CHUNK - 1)];
}

sp_spj_span_t *sp__spj_deref(sp_spj_index_t *ix, sp_spj_ref_t r) {
  if (r.idx == SP_SPJ_NONE || (r.idx >> SP_SPJ_POOL_SHIFT) >= ix->n_chunks) return NULL;
  sp_spj_span_t *e = sp__spj_at(ix, r.idx);
  return e->gen == r.gen && (e->gen & 1u) ? e : NULL;
}

size_t sp__spj_live(const sp_spj_index_t *ix) { return ix->live; }

/*
 * What the content needs, not what the pools and tables have grown to: a
 * burst that grew them must not keep the memory bound tripping afterwards.
 * Tables are counted at their maximum load (2 slots per entry).
 */
size_t sp__spj_bytes(const sp_spj_index_t *ix) {
  return ix->live * (sizeof(sp_spj_span_t) + sizeof(uint32_t) + 2 * sizeof(sp_spj_idslot_t)) +
         ix->cells_n * 2 * sizeof(sp_spj_cell_t) + ix->slab.inuse + ix->strs_bytes +
         ix->strs_n * 2 * sizeof(void *) + ix->proc_bytes + ix->pkeys_n * 2 * sizeof(sp_spj_pkey_t);
}

void sp__spj_set_now(sp_spj_index_t *ix, uint64_t now_ms) { ix->now_ms = now_ms; }

/* ---- interned strings ------------------------------------------------------------- */

static int sp__strs_grow(sp_spj_index_t *ix) {
  size_t cap = ix->strs_cap ? ix->strs_cap * 2 : 64;
  sp_spj_str_t **t = sp_calloc(cap, sizeof(*t));
  if (t == NULL) return SP_ENOMEM;
  for (size_t i = 0; i < ix->strs_cap; i++) {
    sp_spj_str_t *s = ix->strs[i];
    if (s == NULL) continue;
    size_t j = s->hash & (cap - 1);
    while (t[j] != NULL)
      j = (j + 1) & (cap - 1);
    t[j] = s;
  }
  sp_free(ix->strs);
  ix->strs = t;
  ix->strs_cap = cap;
  return 0;
}

static size_t sp__strs_slot(sp_spj_index_t *ix, const char *s, size_t len, uint64_t h) {
  size_t mask = ix->strs_cap - 1;
  size_t j = h & mask;
  while (ix->strs[j] != NULL) {
    sp_spj_str_t *e = ix->strs[j];
    if (e->hash == h && e->len == len && memcmp(e->s, s, len) == 0) return j;
    j = (j + 1) & mask;
  }
  return j;
}

sp_spj_str_t *sp__spj_intern_find(sp_spj_index_t *ix, const char *s, size_t len) {
  if (ix->strs_cap == 0) return NULL;
  return ix->strs[sp__strs_slot(ix, s, len, sp__strhash(s, len))];
}

sp_spj_str_t *sp__spj_intern(sp_spj_index_t *ix, const char *s, size_t len) {
  if ((ix->strs_n + 1) * 2 > ix->strs_cap && sp__strs_grow(ix) != 0) return NULL;
  uint64_t h = sp__strhash(s, len);
  size_t j = sp__strs_slot(ix, s, len, h);
  sp_spj_str_t *e = ix->strs[j];
  if (e != NULL) {
    e->refs++;
    return e;
  }
  e = sp_malloc(sizeof(*e) + len + 1);
  if (e == NULL) return NULL;
  e->refs = 1;
  e->len = (uint32_t)len;
  e->hash = h;
  memcpy(e->s, s, len);
  e->s[len] = '\0';
  ix->strs[j] = e;
  ix->strs_n++;
  ix->strs_bytes += sizeof(*e) + len + 1;
  return e;
}

void sp__spj_unintern(sp_spj_index_t *ix, sp_spj_str_t *str) {
  if (str == NULL || --str->refs > 0) return;
  size_t mask = ix->strs_cap - 1;
  size_t i = str->hash & mask;
  while (ix->strs[i] != str)
    i = (i + 1) & mask;
  /* backward-shift deletion */
  size_t j = i;
  for (;;) {
    j = (j + 1) & mask;
    if (ix->strs[j] == NULL) break;
    size_t k = ix->strs[j]->hash & mask;
    if ((j > i && (k <= i || k > j)) || (j < i && k <= i && k > j)) {
      ix->strs[i] = ix->strs[j];
      i = j;
    }
  }
  ix->strs[i] = NULL;
  ix->strs_n--;
  ix->strs_bytes -= sizeof(*str) + str->len + 1;
  sp_free(str);
}

/* ---- span pool -------------------------------------------------------------------- */

static uint32_t sp__pool_get(sp_spj_index_t *ix) {
  if (ix->n_free == 0) {
    if (ix->n_chunks >= (SP_SPJ_NONE >> SP_SPJ_POOL_SHIFT)) return SP_SPJ_NONE;
    sp_spj_span_t **chunks = sp_realloc(ix->chunks, (ix->n_chunks + 1) * sizeof(*chunks));
    if (chunks == NULL) return SP_SPJ_NONE;
    ix->chunks = chunks;
    size_t need = ix->cap_free < SP_SPJ_POOL_CHUNK * (ix->n_chunks + 1)
                      ? SP_SPJ_POOL_CHUNK * (ix->n_chunks + 1)
                      : ix->cap_free;
    if (need > ix->cap_free) {
      uint32_t *f = sp_realloc(ix->free_idx, need * sizeof(*f));
      if (f == NULL) return SP_SPJ_NONE;
      ix->free_idx = f;
      ix->cap_free = need;
    }
    sp_spj_span_t *c = sp_calloc(SP_SPJ_POOL_CHUNK, sizeof(*c));
    if (c == NULL) return SP_SPJ_NONE;
    ix->chunks[ix->n_chunks] = c;
    uint32_t base = (uint32_t)(ix->n_chunks << SP_SPJ_POOL_SHIFT);
    ix->n_chunks++;
    /* Hand out low indices first: keeps the hot part of the pool small. */
    for (uint32_t i = SP_SPJ_POOL_CHUNK; i-- > 0;)
      ix->free_idx[ix->n_free++] = base + i;
  }
  return ix->free_idx[--ix->n_free];
}

static void sp__pool_put(sp_spj_index_t *ix, uint32_t idx) {
  sp_spj_span_t *e = sp__spj_at(ix, idx);
  e->gen++; /* even: free */
  ix->free_idx[ix->n_free++] = idx;
}

/* ---- span ID table ---------------------------------------------------------------- */

static inline size_t sp__id_home(uint64_t id, uint32_t svch, size_t mask) {
  return sp__mix(id ^ ((uint64_t)svch << 32 | svch)) & mask;
}

static int sp__ids_grow(sp_spj_index_t *ix) {
  size_t cap = ix->ids_cap ? ix->ids_cap * 2 : 1024;
  sp_spj_idslot_t *t = sp_malloc(cap * sizeof(*t));
  if (t == NULL) return SP_ENOMEM;
  for (size_t i = 0; i < cap; i++)
    t[i].idx = SP_SPJ_NONE;
  for (size_t i = 0; i < ix->ids_cap; i++) {
    sp_spj_idslot_t s = ix->ids[i];
    if (s.idx == SP_SPJ_NONE) continue;
    size_t j = sp__id_home(s.id, s.svch, cap - 1);
    while (t[j].idx != SP_SPJ_NONE)
      j = (j + 1) & (cap - 1);
    t[j] = s;
  }
  sp_free(ix->ids);
  ix->ids = t;
  ix->ids_cap = cap;
  return 0;
}

uint32_t sp__spj_lookup(sp_spj_index_t *ix, const sp_spj_str_t *svc, uint64_t span_id) {
  if (ix->ids_cap == 0 || svc == NULL) return SP_SPJ_NONE;
  uint32_t svch = (uint32_t)svc->hash;
  size_t mask = ix->ids_cap - 1;
  for (size_t j = sp__id_home(span_id, svch, mask);; j = (j + 1) & mask) {
    const sp_spj_idslot_t *s = &ix->ids[j];
    if (s->idx == SP_SPJ_NONE) return SP_SPJ_NONE;
    if (s->id == span_id && s->svch == svch && sp__spj_at(ix, s->idx)->svc == svc) return s->idx;
  }
}

static void sp__ids_insert(sp_spj_index_t *ix, uint64_t id, uint32_t svch, uint32_t idx) {
  size_t mask = ix->ids_cap - 1;
  size_t j = sp__id_home(id, svch, mask);
  while (ix->ids[j].idx != SP_SPJ_NONE)
    j = (j + 1) & mask;
  ix->ids[j] = (sp_spj_idslot_t){.id = id, .svch = svch, .idx = idx};
  ix->ids_n++;
}

static void sp__ids_delete(sp_spj_index_t *ix, uint64_t id, uint32_t svch, uint32_t idx) {
  size_t mask = ix->ids_cap - 1;
  size_t i = sp__id_home(id, svch, mask);
  while (ix->ids[i].idx != idx) {
    if (ix->ids[i].idx == SP_SPJ_NONE) return;
    i = (i + 1) & mask;
  }
  size_t j = i;
  for (;;) {
    j = (j + 1) & mask;
    if (ix->ids[j].idx == SP_SPJ_NONE) break;
    size_t k = sp__id_home(ix->ids[j].id, ix->ids[j].svch, mask);
    if ((j > i && (k <= i || k > j)) || (j < i && k <= i && k > j)) {
      ix->ids[i] = ix->ids[j];
      i = j;
    }
  }
  ix->ids[i].idx = SP_SPJ_NONE;
  ix->ids_n--;
}

static inline uint64_t sp__gone_key(const sp_spj_str_t *svc, uint64_t span_id) {
  return sp__mix(span_id ^ (svc != NULL ? svc->hash : 0)) | 1u;
}

bool sp__spj_recently_removed(sp_spj_index_t *ix, const sp_spj_str_t *svc, uint64_t span_id) {
  uint64_t k = sp__gone_key(svc, span_id);
  return ix->gone[k & ix->gone_mask] == k;
}

/* ---- grid cells --------------------------------------------------------------------- */

static inline unsigned sp__shift(unsigned level) { return 13u + 3u * level; }

static unsigned sp__level(int64_t dur) {
  for (unsigned l = 0; l < SP_SPJ_LEVELS; l++)
    if ((uint64_t)dur <= (1ull << sp__shift(l))) return l;
  return SP_SPJ_HUGE;
}

static inline size_t sp__cell_home(uint64_t cell, uint32_t key, size_t mask) {
  return sp__mix(cell * 0x9e3779b97f4a7c15ULL ^ key) & mask;
}

static int sp__cells_grow(sp_spj_index_t *ix) {
  size_t cap = ix->cells_cap ? ix->cells_cap * 2 : 1024;
  sp_spj_cell_t *t = sp_calloc(cap, sizeof(*t));
  if (t == NULL) return SP_ENOMEM;
  for (size_t i = 0; i < ix->cells_cap; i++) {
    sp_spj_cell_t *c = &ix->cells[i];
    if (c->key == 0) continue;
    size_t j = sp__cell_home(c->cell, c->key, cap - 1);
    while (t[j].key != 0)
      j = (j + 1) & (cap - 1);
    t[j] = *c;
  }
  sp_free(ix->cells);
  ix->cells = t;
  ix->cells_cap = cap;
  ix->cells_version++;
  return 0;
}

static sp_spj_cell_t *sp__cell_find(sp_spj_index_t *ix, uint64_t cell, uint32_t key) {
  if (ix->cells_cap == 0) return NULL;
  size_t mask = ix->cells_cap - 1;
  for (size_t j = sp__cell_home(cell, key, mask);; j = (j + 1) & mask) {
    sp_spj_cell_t *c = &ix->cells[j];
    if (c->key == 0) return NULL;
    if (c->key == key && c->cell == cell) return c;
  }
}

static sp_spj_cell_t *sp__cell_get(sp_spj_index_t *ix, uint64_t cell, uint32_t key) {
  if ((ix->cells_n + 1) * 2 > ix->cells_cap && sp__cells_grow(ix) != 0) return NULL;
  size_t mask = ix->cells_cap - 1;
  size_t j = sp__cell_home(cell, key, mask);
  for (;; j = (j + 1) & mask) {
    sp_spj_cell_t *c = &ix->cells[j];
    if (c->key == 0) break;
    if (c->key == key && c->cell == cell) return c;
  }
  ix->cells[j] = (sp_spj_cell_t){.cell = cell, .key = key};
  ix->cells_n++;
  ix->cells_version++;
  return &ix->cells[j];
}

static void sp__cell_delete(sp_spj_index_t *ix, sp_spj_cell_t *c) {
  size_t mask = ix->cells_cap - 1;
  size_t i = (size_t)(c - ix->cells);
  size_t j = i;
  for (;;) {
    j = (j + 1) & mask;
    if (ix->cells[j].key == 0) break;
    size_t k = sp__cell_home(ix->cells[j].cell, ix->cells[j].key, mask);
    if ((j > i && (k <= i || k > j)) || (j < i && k <= i && k > j)) {
      ix->cells[i] = ix->cells[j];
      i = j;
    }
  }
  ix->cells[i] = (sp_spj_cell_t){0};
  ix->cells_n--;
  ix->cells_version++;
}

static inline uint32_t sp__cell_key(uint32_t bucket, unsigned level) {
  return (bucket + 1) << 4 | level;
}

/* ---- processes and buckets ----------------------------------------------------------- */

static void sp__empty_unlink(sp_spj_index_t *ix, uint32_t pi) {
  sp_spj_proc_t *p = ix->procs[pi];
  if (!p->on_empty) return;
  if (p->eprev != SP_SPJ_NONE)
    ix->procs[p->eprev]->enext = p->enext;
  else
    ix->empty_head = p->enext;
  if (p->enext != SP_SPJ_NONE)
    ix->procs[p->enext]->eprev = p->eprev;
  else
    ix->empty_tail = p->eprev;
  p->on_empty = false;
}

static void sp__empty_link(sp_spj_index_t *ix, uint32_t pi) {
  sp_spj_proc_t *p = ix->procs[pi];
  p->empty_since = ix->now_ms;
  p->on_empty = true;
  p->enext = SP_SPJ_NONE;
  p->eprev = ix->empty_tail;
  if (ix->empty_tail != SP_SPJ_NONE)
    ix->procs[ix->empty_tail]->enext = pi;
  else
    ix->empty_head = pi;
  ix->empty_tail = pi;
}

static int sp__pkeys_grow(sp_spj_index_t *ix) {
  size_t cap = ix->pkeys_cap ? ix->pkeys_cap * 2 : 64;
  sp_spj_pkey_t *t = sp_calloc(cap, sizeof(*t));
  if (t == NULL) return SP_ENOMEM;
  for (size_t i = 0; i < ix->pkeys_cap; i++) {
    if (ix->pkeys[i].key == NULL) continue;
    size_t j = ix->pkeys[i].hash & (cap - 1);
    while (t[j].key != NULL)
      j = (j + 1) & (cap - 1);
    t[j] = ix->pkeys[i];
  }
  sp_free(ix->pkeys);
  ix->pkeys = t;
  ix->pkeys_cap = cap;
  return 0;
}

static sp_spj_pkey_t *sp__pkey_find(sp_spj_index_t *ix, const char *key, uint64_t h) {
  if (ix->pkeys_cap == 0) return NULL;
  size_t mask = ix->pkeys_cap - 1;
  for (size_t j = h & mask;; j = (j + 1) & mask) {
    sp_spj_pkey_t *k = &ix->pkeys[j];
    if (k->key == NULL) return NULL;
    if (k->hash == h && strcmp(k->key, key) == 0) return k;
  }
}

static void sp__pkey_delete(sp_spj_index_t *ix, sp_spj_pkey_t *k) {
  size_t mask = ix->pkeys_cap - 1;
  size_t i = (size_t)(k - ix->pkeys), j = i;
  for (;;) {
    j = (j + 1) & mask;
    if (ix->pkeys[j].key == NULL) break;
    size_t h = ix->pkeys[j].hash & mask;
    if ((j > i && (h <= i || h > j)) || (j < i && h <= i && h > j)) {
      ix->pkeys[i] = ix->pkeys[j];
      i = j;
    }
  }
  ix->pkeys[i] = (sp_spj_pkey_t){0};
  ix->pkeys_n--;
}

static void sp__proc_free(sp_spj_index_t *ix, uint32_t pi) {
  sp_spj_proc_t *p = ix->procs[pi];
  if (p == NULL) return;
  sp__empty_unlink(ix, pi);
  for (size_t i = 0; i < p->nkeys; i++) {
    sp_spj_pkey_t *k = sp__pkey_find(ix, p->keys[i], sp__strhash(p->keys[i], strlen(p->keys[i])));
    if (k != NULL && k->proc == pi) sp__pkey_delete(ix, k);
    ix->proc_bytes -= strlen(p->keys[i]) + 1;
    sp_free(p->keys[i]);
  }
  /* A process is only freed without spans, so its buckets are all empty and freed. */
  ix->proc_bytes -= sizeof(*p) + p->tcap * (sizeof(int64_t) + sizeof(uint32_t)) +
                    p->cb * sizeof(uint32_t) + p->nkeys * sizeof(char *);
  sp_free(p->keys);
  sp_free(p->tkeys);
  sp_free(p->tvals);
  sp_free(p->buckets);
  sp_free(p);
  ix->procs[pi] = NULL;
  ix->free_procs[ix->n_free_procs++] = pi;
}

static uint32_t sp__proc_new(sp_spj_index_t *ix) {
  sp_spj_proc_t *p = sp_calloc(1, sizeof(*p));
  if (p == NULL) return SP_SPJ_NONE;
  p->watermark = INT64_MIN;
  p->none_bucket = SP_SPJ_NONE;
  p->eprev = p->enext = SP_SPJ_NONE;
  uint32_t pi;
  if (ix->n_free_procs > 0) {
    pi = ix->free_procs[--ix->n_free_procs];
  } else {
    sp_spj_proc_t **procs = sp_realloc(ix->procs, (ix->n_procs + 1) * sizeof(*procs));
    if (procs == NULL) {
      sp_free(p);
      return SP_SPJ_NONE;
    }
    ix->procs = procs;
    uint32_t *fp = sp_realloc(ix->free_procs, (ix->n_procs + 1) * sizeof(*fp));
    if (fp == NULL) {
      sp_free(p);
      return SP_SPJ_NONE;
    }
    ix->free_procs = fp;
    pi = (uint32_t)ix->n_procs++;
  }
  ix->procs[pi] = p;
  ix->proc_bytes += sizeof(*p);
  sp__empty_link(ix, pi);
  return pi;
}

static int sp__proc_add_key(sp_spj_index_t *ix, uint32_t pi, const char *key, uint64_t h) {
  if ((ix->pkeys_n + 1) * 2 > ix->pkeys_cap && sp__pkeys_grow(ix) != 0) return SP_ENOMEM;
  sp_spj_proc_t *p = ix->procs[pi];
  char **keys = sp_realloc(p->keys, (p->nkeys + 1) * sizeof(*keys));
  if (keys == NULL) return SP_ENOMEM;
  p->keys = keys;
  char *dup = sp_strdup(key);
  if (dup == NULL) return SP_ENOMEM;
  p->keys[p->nkeys++] = dup;
  ix->proc_bytes += sizeof(char *) + strlen(dup) + 1;
  size_t mask = ix->pkeys_cap - 1;
  size_t j = h & mask;
  while (ix->pkeys[j].key != NULL)
    j = (j + 1) & mask;
  ix->pkeys[j] = (sp_spj_pkey_t){.hash = h, .key = dup, .proc = pi};
  ix->pkeys_n++;
  return 0;
}

uint32_t sp__spj_process(sp_spj_index_t *ix, char *const *keys, size_t n, bool create) {
  uint32_t found = SP_SPJ_NONE;
  bool any = false;
  for (size_t i = 0; i < n; i++) {
    if (keys[i] == NULL) continue;
    any = true;
    sp_spj_pkey_t *k = sp__pkey_find(ix, keys[i], sp__strhash(keys[i], strlen(keys[i])));
    if (k != NULL) {
      found = k->proc;
      break;
    }
  }
  if (!create || !any) return found;
  if (found == SP_SPJ_NONE && (found = sp__proc_new(ix)) == SP_SPJ_NONE) return SP_SPJ_NONE;
  /* Alias every complete key set of this resource to the process. */
  for (size_t i = 0; i < n; i++) {
    if (keys[i] == NULL) continue;
    uint64_t h = sp__strhash(keys[i], strlen(keys[i]));
    if (sp__pkey_find(ix, keys[i], h) == NULL && sp__proc_add_key(ix, found, keys[i], h) != 0)
      break; /* the process stays reachable by the keys it has */
  }
  return found;
}

static uint32_t sp__bucket_find(sp_spj_index_t *ix, uint32_t pi, int64_t thread) {
  sp_spj_proc_t *p = ix->procs[pi];
  if (thread == SP_SPJ_NO_THREAD) return p->none_bucket;
  if (p->tcap == 0) return SP_SPJ_NONE;
  size_t mask = p->tcap - 1;
  for (size_t j = sp__mix((uint64_t)thread) & mask;; j = (j + 1) & mask) {
    if (p->tvals[j] == SP_SPJ_NONE) return SP_SPJ_NONE;
    if (p->tkeys[j] == thread) return p->tvals[j];
  }
}

static int sp__threads_grow(sp_spj_index_t *ix, sp_spj_proc_t *p) {
  size_t cap = p->tcap ? p->tcap * 2 : 8;
  int64_t *k = sp_malloc(cap * sizeof(*k));
  uint32_t *v = sp_malloc(cap * sizeof(*v));
  if (k == NULL || v == NULL) {
    sp_free(k);
    sp_free(v);
    return SP_ENOMEM;
  }
  for (size_t i = 0; i < cap; i++)
    v[i] = SP_SPJ_NONE;
  for (size_t i = 0; i < p->tcap; i++) {
    if (p->tvals[i] == SP_SPJ_NONE) continue;
    size_t j = sp__mix((uint64_t)p->tkeys[i]) & (cap - 1);
    while (v[j] != SP_SPJ_NONE)
      j = (j + 1) & (cap - 1);
    k[j] = p->tkeys[i];
    v[j] = p->tvals[i];
  }
  ix->proc_bytes += (cap - p->tcap) * (sizeof(int64_t) + sizeof(uint32_t));
  sp_free(p->tkeys);
  sp_free(p->tvals);
  p->tkeys = k;
  p->tvals = v;
  p->tcap = cap;
  return 0;
}

static void sp__threads_delete(sp_spj_proc_t *p, int64_t thread) {
  size_t mask = p->tcap - 1;
  size_t i = sp__mix((uint64_t)thread) & mask;
  while (p->tkeys[i] != thread || p->tvals[i] == SP_SPJ_NONE)
    i = (i + 1) & mask;
  size_t j = i;
  for (;;) {
    j = (j + 1) & mask;
    if (p->tvals[j] == SP_SPJ_NONE) break;
    size_t k = sp__mix((uint64_t)p->tkeys[j]) & mask;
    if ((j > i && (k <= i || k > j)) || (j < i && k <= i && k > j)) {
      p->tkeys[i] = p->tkeys[j];
      p->tvals[i] = p->tvals[j];
      i = j;
    }
  }
  p->tvals[i] = SP_SPJ_NONE;
  p->tn--;
}

static uint32_t sp__bucket_get(sp_spj_index_t *ix, uint32_t pi, int64_t thread) {
  uint32_t b = sp__bucket_find(ix, pi, thread);
  if (b != SP_SPJ_NONE) return b;
  sp_spj_proc_t *p = ix->procs[pi];
  if (p->nb == p->cb) {
    size_t cb = p->cb ? p->cb * 2 : 4;
    uint32_t *l = sp_realloc(p->buckets, cb * sizeof(*l));
    if (l == NULL) return SP_SPJ_NONE;
    ix->proc_bytes += (cb - p->cb) * sizeof(uint32_t);
    p->buckets = l;
    p->cb = cb;
  }
  if (thread != SP_SPJ_NO_THREAD && (p->tn + 1) * 2 > p->tcap && sp__threads_grow(ix, p) != 0)
    return SP_SPJ_NONE;
  if (ix->free_bucket != SP_SPJ_NONE) {
    b = ix->free_bucket;
    ix->free_bucket = ix->buckets[b].next_free;
  } else {
    if (ix->n_buckets >= (1u << 27)) return SP_SPJ_NONE;
    sp_spj_bucket_t *bs = sp_realloc(ix->buckets, (ix->n_buckets + 1) * sizeof(*bs));
    if (bs == NULL) return SP_SPJ_NONE;
    ix->buckets = bs;
    b = (uint32_t)ix->n_buckets++;
  }
  ix->buckets[b] = (sp_spj_bucket_t){.proc = pi, .thread = thread, .next_free = SP_SPJ_NONE};
  p->buckets[p->nb++] = b;
  if (thread == SP_SPJ_NO_THREAD) {
    p->none_bucket = b;
  } else {
    size_t mask = p->tcap - 1;
    size_t j = sp__mix((uint64_t)thread) & mask;
    while (p->tvals[j] != SP_SPJ_NONE)
      j = (j + 1) & mask;
    p->tkeys[j] = thread;
    p->tvals[j] = b;
    p->tn++;
  }
  return b;
}

static void sp__bucket_release(sp_spj_index_t *ix, uint32_t b) {
  sp_spj_bucket_t *bk = &ix->buckets[b];
  sp_spj_proc_t *p = ix->procs[bk->proc];
  if (bk->thread == SP_SPJ_NO_THREAD)
    p->none_bucket = SP_SPJ_NONE;
  else
    sp__threads_delete(p, bk->thread);
  for (size_t i = 0; i < p->nb; i++) {
    if (p->buckets[i] == b) {
      p->buckets[i] = p->buckets[--p->nb];
      break;
    }
  }
  sp__slab_put(&ix->slab, bk->huge.v, bk->huge.cap);
  *bk = (sp_spj_bucket_t){.next_free = ix->free_bucket, .proc = SP_SPJ_NONE};
  ix->free_bucket = b;
}

/* ---- adding and removing spans -------------------------------------------------------- */

/* Files span @p idx in bucket @p b; 0 or SP_ENOMEM (nothing filed). */
static int sp__file(sp_spj_index_t *ix, uint32_t b, uint32_t idx, sp_spj_span_t *e) {
  ix->cells_version++;
  sp_spj_item_t it = {.s = e->start_ns, .e = e->end_ns, .idx = idx};
  unsigned l = sp__level(e->end_ns - e->start_ns);
  e->level = (uint8_t)l;
  if (l == SP_SPJ_HUGE) return sp__vec_push(&ix->slab, &ix->buckets[b].huge, it);
  unsigned sh = sp__shift(l);
  uint64_t c0 = (uint64_t)e->start_ns >> sh, c1 = (uint64_t)e->end_ns >> sh;
  uint32_t key = sp__cell_key(b, l);
  sp_spj_cell_t *c = sp__cell_get(ix, c0, key);
  if (c == NULL || sp__vec_push(&ix->slab, &c->vec, it) != 0) {
    if (c != NULL && c->vec.n == 0) sp__cell_delete(ix, c);
    return SP_ENOMEM;
  }
  if (c1 != c0) {
    c = sp__cell_get(ix, c1, key);
    if (c == NULL || sp__vec_push(&ix->slab, &c->vec, it) != 0) {
      if (c != NULL && c->vec.n == 0) sp__cell_delete(ix, c);
      c = sp__cell_find(ix, c0, key);
      sp__vec_remove(&ix->slab, &c->vec, idx);
      if (c->vec.n == 0) sp__cell_delete(ix, c);
      return SP_ENOMEM;
    }
  }
  sp_spj_bucket_t *bk = &ix->buckets[b];
  if (bk->level_count[l]++ == 0) bk->level_mask |= 1u << l;
  return 0;
}

static void sp__unfile(sp_spj_index_t *ix, uint32_t b, uint32_t idx, const sp_spj_span_t *e) {
  ix->cells_version++;
  unsigned l = e->level;
  sp_spj_bucket_t *bk = &ix->buckets[b];
  if (l == SP_SPJ_HUGE) {
    sp__vec_remove(&ix->slab, &bk->huge, idx);
    return;
  }
  unsigned sh = sp__shift(l);
  uint64_t cs[2] = {(uint64_t)e->start_ns >> sh, (uint64_t)e->end_ns >> sh};
  uint32_t key = sp__cell_key(b, l);
  for (int i = 0; i < (cs[1] != cs[0] ? 2 : 1); i++) {
    sp_spj_cell_t *c = sp__cell_find(ix, cs[i], key);
    if (c == NULL) continue;
    sp__vec_remove(&ix->slab, &c->vec, idx);
    if (c->vec.n == 0) sp__cell_delete(ix, c);
  }
  bk = &ix->buckets[b];
  if (--bk->level_count[l] == 0) bk->level_mask &= ~(1u << l);
}

int sp__spj_add(sp_spj_index_t *ix, const sp_spj_span_t *tmpl, uint32_t proc, int64_t thread,
                sp_spj_ref_t *out) {
  if ((ix->ids_n + 1) * 2 > ix->ids_cap && sp__ids_grow(ix) != 0) goto fail;
  uint32_t idx = sp__pool_get(ix);
  if (idx == SP_SPJ_NONE) goto fail;
  sp_spj_span_t *e = sp__spj_at(ix, idx);
  uint32_t gen = e->gen + 1;
  *e = *tmpl;
  e->gen = gen;
  e->bucket = SP_SPJ_NONE;
  if (e->end_ns < e->start_ns) e->end_ns = e->start_ns;
  if (proc != SP_SPJ_NONE && e->start_ns > 0) {
    uint32_t b = sp__bucket_get(ix, proc, thread);
    if (b != SP_SPJ_NONE && sp__file(ix, b, idx, e) == 0) {
      e->bucket = b;
      ix->buckets[b].live++;
      sp_spj_proc_t *p = ix->procs[proc];
      if (p->live++ == 0) sp__empty_unlink(ix, proc);
    } else if (b != SP_SPJ_NONE && ix->buckets[b].live == 0) {
      sp__bucket_release(ix, b);
      /* Without its interval the span still joins by ID; that is not an error. */
    }
  }
  sp__ids_insert(ix, e->span_id, (uint32_t)e->svc->hash, idx);
  ix->live++;
  out->idx = idx;
  out->gen = gen;
  return 0;
fail:
  sp__spj_unintern(ix, tmpl->name);
  sp__spj_unintern(ix, tmpl->svc);
  return SP_ENOMEM;
}

void sp__spj_remove(sp_spj_index_t *ix, uint32_t idx) {
  sp_spj_span_t *e = sp__spj_at(ix, idx);
  if (!(e->gen & 1u)) return;
  sp__ids_delete(ix, e->span_id, (uint32_t)e->svc->hash, idx);
  uint64_t k = sp__gone_key(e->svc, e->span_id);
  ix->gone[k & ix->gone_mask] = k;
  if (e->bucket != SP_SPJ_NONE) {
    uint32_t b = e->bucket;
    uint32_t pi = ix->buckets[b].proc;
    sp__unfile(ix, b, idx, e);
    sp_spj_proc_t *p = ix->procs[pi];
    if (e->end_ns > p->watermark) p->watermark = e->end_ns;
    if (--ix->buckets[b].live == 0) sp__bucket_release(ix, b);
    if (--p->live == 0) sp__empty_link(ix, pi);
  }
  sp__spj_unintern(ix, e->name);
  sp__spj_unintern(ix, e->svc);
  e->name = e->svc = NULL;
  e->owner = e->held = NULL;
  ix->live--;
  sp__pool_put(ix, idx);
}

void sp__spj_gc(sp_spj_index_t *ix, uint64_t now_ms, uint64_t grace_ms) {
  while (ix->empty_head != SP_SPJ_NONE &&
         ix->procs[ix->empty_head]->empty_since + grace_ms <= now_ms)
    sp__proc_free(ix, ix->empty_head);
}

uint64_t sp__spj_gc_due(sp_spj_index_t *ix, uint64_t grace_ms) {
  if (ix->empty_head == SP_SPJ_NONE) return UINT64_MAX;
  return ix->procs[ix->empty_head]->empty_since + grace_ms;
}

void sp__spj_index_destroy(sp_spj_index_t *ix) {
  if (ix == NULL) return;
  for (size_t i = 0; i < ix->strs_cap; i++)
    sp_free(ix->strs[i]);
  sp_free(ix->strs);
  for (size_t i = 0; i < ix->n_procs; i++) {
    sp_spj_proc_t *p = ix->procs[i];
    if (p == NULL) continue;
    for (size_t k = 0; k < p->nkeys; k++)
      sp_free(p->keys[k]);
    sp_free(p->keys);
    sp_free(p->tkeys);
    sp_free(p->tvals);
    sp_free(p->buckets);
    sp_free(p);
  }
  sp_free(ix->procs);
  sp_free(ix->free_procs);
  sp_free(ix->pkeys);
  for (size_t i = 0; i < ix->n_buckets; i++)
    if (ix->buckets[i].huge.cap > (2u << (SP_SPJ_CLASSES - 1))) sp_free(ix->buckets[i].huge.v);
  sp_free(ix->buckets);
  for (size_t i = 0; i < ix->cells_cap; i++)
    if (ix->cells[i].key != 0 && ix->cells[i].vec.cap > (2u << (SP_SPJ_CLASSES - 1)))
      sp_free(ix->cells[i].vec.v);
  sp_free(ix->cells);
  sp__slab_free(&ix->slab);
  for (size_t i = 0; i < ix->n_chunks; i++)
    sp_free(ix->chunks[i]);
  sp_free(ix->chunks);
  sp_free(ix->free_idx);
  sp_free(ix->ids);
  sp_free(ix->gone);
  sp_free(ix);
}

/* ---- resolution ---------------------------------------------------------------------- */

#define SP_SPJ_MAX_CAND 64

typedef struct sp_spj_cand_s {
  int64_t s, e;
  uint32_t idx;
  bool unthreaded;
} sp_spj_cand_t;

/* Appends the spans of bucket @p b containing @p t; returns the new count (may exceed cap:
 * overflow). */
static size_t sp__collect(sp_spj_index_t *ix, uint32_t b, int64_t t, bool unthreaded,
                          sp_spj_cand_t *c, size_t n, size_t cap) {
  if (b == SP_SPJ_NONE) return n;
  const sp_spj_bucket_t *bk = &ix->buckets[b];
  uint32_t mask = bk->level_mask;
  while (mask != 0) {
    unsigned l = (unsigned)__builtin_ctz(mask);
    mask &= mask - 1;
    uint64_t ci = (uint64_t)t >> sp__shift(l);
    uint32_t key = sp__cell_key(b, l);
    const sp_spj_cell_t *cell;
    /* Samples close in time on one thread look up the same cells: remember the last one. */
    if (ix->memo[l].version == ix->cells_version && ix->memo[l].cell == ci &&
        ix->memo[l].key == key) {
      cell = ix->memo[l].c;
    } else {
      cell = sp__cell_find(ix, ci, key);
      ix->memo[l].cell = ci;
      ix->memo[l].key = key;
      ix->memo[l].version = ix->cells_version;
      ix->memo[l].c = cell;
    }
    if (cell == NULL) continue;
    for (uint32_t i = 0; i < cell->vec.n; i++) {
      const sp_spj_item_t *it = &cell->vec.v[i];
      if (it->s <= t && t <= it->e) {
        if (n < cap)
          c[n] = (sp_spj_cand_t){.s = it->s, .e = it->e, .idx = it->idx, .unthreaded = unthreaded};
        n++;
      }
    }
  }
  for (uint32_t i = 0; i < bk->huge.n; i++) {
    const sp_spj_item_t *it = &bk->huge.v[i];
    if (it->s <= t && t <= it->e) {
      if (n < cap)
        c[n] = (sp_spj_cand_t){.s = it->s, .e = it->e, .idx = it->idx, .unthreaded = unthreaded};
      n++;
    }
  }
  return n;
}

/*
 * Picks the innermost candidate: the latest start (then the earliest end),
 * which every other candidate must contain. Among candidates with the same
 * interval, the one no other names as its parent wins, and the others must
 * be its ancestors. Returns the chosen position or -1 (ambiguous).
 */
static int sp__innermost(sp_spj_index_t *ix, const sp_spj_cand_t *c, size_t n) {
  size_t b = 0;
  for (size_t i = 1; i < n; i++)
    if (c[i].s > c[b].s || (c[i].s == c[b].s && c[i].e < c[b].e)) b = i;
  size_t same = 0;
  for (size_t i = 0; i < n; i++) {
    if (c[i].s == c[b].s && c[i].e == c[b].e) {
      same++;
    } else if (!(c[i].s <= c[b].s && c[b].e <= c[i].e)) {
      return -1;
    }
  }
  if (same == 1) return (int)b;
  /* Equal intervals: they must form one parent chain; its deepest member wins. */
  int leaf = -1;
  for (size_t i = 0; i < n; i++) {
    if (c[i].s != c[b].s || c[i].e != c[b].e) continue;
    uint64_t id = sp__spj_at(ix, c[i].idx)->span_id;
    bool is_parent = false;
    for (size_t j = 0; j < n && !is_parent; j++)
      is_parent = j != i && c[j].s == c[b].s && c[j].e == c[b].e &&
                  sp__spj_at(ix, c[j].idx)->parent_id == id;
    if (!is_parent) {
      if (leaf >= 0) return -1;
      leaf = (int)i;
    }
  }
  if (leaf < 0) return -1;
  /* Walk up from the leaf: every equal-interval candidate must be met. */
  size_t met = 1;
  uint64_t parent = sp__spj_at(ix, c[leaf].idx)->parent_id;
  for (size_t step = 0; step < same && parent != 0; step++) {
    bool found = false;
    for (size_t j = 0; j < n; j++) {
      if (c[j].s == c[b].s && c[j].e == c[b].e && sp__spj_at(ix, c[j].idx)->span_id == parent) {
        met++;
        parent = sp__spj_at(ix, c[j].idx)->parent_id;
        found = true;
        break;
      }
    }
    if (!found) break;
  }
  return met == same ? leaf : -1;
}

int sp__spj_resolve_window(sp_spj_index_t *ix, uint32_t proc, int64_t thread, int64_t t_ns,
                           uint32_t *idx) {
  if (proc == SP_SPJ_NONE || proc >= ix->n_procs || ix->procs[proc] == NULL)
    return SP_SPJ_R_UNKNOWN_PROCESS;
  const sp_spj_proc_t *p = ix->procs[proc];
  if (t_ns <= p->watermark) return SP_SPJ_R_EXPIRED;
  sp_spj_cand_t c[SP_SPJ_MAX_CAND];
  if (thread == SP_SPJ_NO_THREAD) {
    size_t n = 0;
    for (size_t i = 0; i < p->nb && n < 2; i++)
      n = sp__collect(ix, p->buckets[i], t_ns, false, c, n, SP_SPJ_MAX_CAND);
    if (n == 0) return SP_SPJ_R_NO_SPAN;
    if (n > 1) return SP_SPJ_R_NO_THREAD;
    *idx = c[0].idx;
    return SP_SPJ_JOINED_WINDOW;
  }
  size_t nt =
      sp__collect(ix, sp__bucket_find(ix, proc, thread), t_ns, false, c, 0, SP_SPJ_MAX_CAND);
  size_t n = sp__collect(ix, p->none_bucket, t_ns, true, c, nt, SP_SPJ_MAX_CAND);
  if (n > SP_SPJ_MAX_CAND) return SP_SPJ_R_AMBIGUOUS;
  if (nt == 0) {
    if (n == 0) return SP_SPJ_R_NO_SPAN;
    if (n > 1) return SP_SPJ_R_NO_THREAD;
    *idx = c[0].idx;
    return SP_SPJ_JOINED_WINDOW;
  }
  int b = sp__innermost(ix, c, n);
  if (b < 0) return SP_SPJ_R_AMBIGUOUS;
  if (c[b].unthreaded) return SP_SPJ_R_NO_THREAD;
  *idx = c[b].idx;
  return SP_SPJ_JOINED_WINDOW;
}
