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
 *    cell). Each span notes where its items sit in their vectors, so it
 *    leaves in O(1) however many spans share its cell (spans without a
 *    thread of one busy process share one per time slot: thousands).
 *
 * Memory: the memory bound (max_held_bytes) sees what the index has
 * allocated, at allocated size (sp__spj_bytes), and the index gives room
 * back as content leaves: vectors halve at a quarter full; pool chunks whose
 * spans all left and hash tables under 1/8 load are given back by
 * sp__spj_trim, which the engine calls before it evicts for memory and on
 * its timer (not on every removal, so a flush does not rehash all the way
 * down). New spans take the lowest free pool slot, so when traffic falls the
 * high chunks empty out.
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

#include <assert.h>
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

/* ---- item vectors ----------------------------------------------------------------- */

typedef struct sp_spj_item_s {
  int64_t s, e;
  uint32_t idx;
} sp_spj_item_t;

typedef struct sp_spj_vec_s {
  sp_spj_item_t *v;
  uint32_t n, cap;
} sp_spj_vec_t;

/*
 * What the heap spends on a block of @p n bytes (glibc: an 8-byte header,
 * 16-byte granules, 32 bytes at least): held_bytes counts what the
 * process's memory holds, not what was asked for.
 */
static inline size_t sp__heap(size_t n) { return n <= 24 ? 32 : (n + 8 + 15) & ~(size_t)15; }

static inline size_t sp__vec_heap(uint32_t cap) {
  return cap > 0 ? sp__heap((size_t)cap * sizeof(sp_spj_item_t)) : 0;
}

static int sp__vec_resize(size_t *bytes, sp_spj_vec_t *vec, uint32_t cap) {
  sp_spj_item_t *v = sp_realloc(vec->v, (size_t)cap * sizeof(*v));
  if (v == NULL) return SP_ENOMEM;
  *bytes = *bytes - sp__vec_heap(vec->cap) + sp__vec_heap(cap);
  vec->v = v;
  vec->cap = cap;
  return 0;
}

static void sp__vec_free(size_t *bytes, sp_spj_vec_t *vec) {
  *bytes -= sp__vec_heap(vec->cap);
  sp_free(vec->v);
  *vec = (sp_spj_vec_t){0};
}

/*
 * Removes the item at @p pos by moving the last one into its place, and
 * returns the span whose item moved (SP_SPJ_NONE when none did). A vector
 * down to a quarter of its room gives half of it back, so a cell draining
 * out of the window does not keep its peak.
 */
static uint32_t sp__vec_take(size_t *bytes, sp_spj_vec_t *vec, uint32_t pos) {
  uint32_t moved = SP_SPJ_NONE;
  if (pos != --vec->n) {
    vec->v[pos] = vec->v[vec->n];
    moved = vec->v[pos].idx;
  }
  if (vec->n == 0)
    sp__vec_free(bytes, vec);
  else if (vec->cap >= 16 && vec->n <= vec->cap / 4)
    (void)sp__vec_resize(bytes, vec, vec->cap / 2); /* on failure the larger block stays */
  return moved;
}

/* ---- index structures ----------------------------------------------------------- */

#define SP_SPJ_POOL_SHIFT 10
#define SP_SPJ_POOL_CHUNK (1u << SP_SPJ_POOL_SHIFT)
#define SP_SPJ_TABLE_MIN 64 /* slots of a hash table that is not empty */

/* A chunk of the span pool; sp__spj_trim gives its memory back once its last span left. */
typedef struct sp_spj_pchunk_s {
  sp_spj_span_t *spans; /* NULL while given back */
  uint32_t live;
  uint32_t free_head; /* first free slot (pool index), SP_SPJ_NONE when full */
  uint32_t gen_base;  /* generations of its slots start here when it is allocated (again) */
  uint32_t gen_top;   /* the highest generation a slot of it was freed with */
} sp_spj_pchunk_t;

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
  sp_spj_pchunk_t *pool;
  size_t pool_n, pool_cap; /* chunk entries (with or without memory) */
  size_t pool_alloc;       /* chunks with memory */
  uint64_t *pool_nonfull;  /* bit per chunk entry: has memory and a free slot */
  size_t pool_words;
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
  size_t vec_bytes; /* heap held by the item vectors */
  size_t searches;  /* removals whose position note was stale (none unless there is a bug) */
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
  return &ix->pool[idx >> SP_SPJ_POOL_SHIFT].spans[idx & (SP_SPJ_POOL_CHUNK - 1)];
}

sp_spj_span_t *sp__spj_deref(sp_spj_index_t *ix, sp_spj_ref_t r) {
  if (r.idx == SP_SPJ_NONE || (r.idx >> SP_SPJ_POOL_SHIFT) >= ix->pool_n ||
      ix->pool[r.idx >> SP_SPJ_POOL_SHIFT].spans == NULL)
    return NULL;
  sp_spj_span_t *e = sp__spj_at(ix, r.idx);
  return e->gen == r.gen && (e->gen & 1u) ? e : NULL;
}

size_t sp__spj_live(const sp_spj_index_t *ix) { return ix->live; }

size_t sp__spj_searches(const sp_spj_index_t *ix) { return ix->searches; }

/*
 * What the index has allocated, at the size it was allocated: pool chunks,
 * hash tables and item vectors as they are, not what their content would
 * need at best (which undercounted the memory bound about twofold). That a
 * burst which grew them must not keep the bound tripping afterwards is
 * handled by giving the room back instead: vectors halve below 1/4 load,
 * and sp__spj_trim frees empty pool chunks and empty tables and shrinks
 * tables below 1/8 load. The fixed cost of an empty index is not counted.
 */
size_t sp__spj_bytes(const sp_spj_index_t *ix) {
  return ix->pool_alloc * sp__heap(SP_SPJ_POOL_CHUNK * sizeof(sp_spj_span_t)) +
         ix->pool_cap * sizeof(sp_spj_pchunk_t) + ix->pool_words * sizeof(uint64_t) +
         ix->ids_cap * sizeof(sp_spj_idslot_t) + ix->cells_cap * sizeof(sp_spj_cell_t) +
         ix->vec_bytes + ix->strs_cap * sizeof(void *) + ix->strs_bytes +
         ix->pkeys_cap * sizeof(sp_spj_pkey_t) + ix->proc_bytes +
         ix->n_procs * (sizeof(void *) + sizeof(uint32_t)) +
         ix->n_buckets * sizeof(sp_spj_bucket_t);
}

void sp__spj_set_now(sp_spj_index_t *ix, uint64_t now_ms) { ix->now_ms = now_ms; }

/* ---- interned strings ------------------------------------------------------------- */

/* Rehashes the string table into @p cap slots (0: frees it). */
static int sp__strs_resize(sp_spj_index_t *ix, size_t cap) {
  sp_spj_str_t **t = NULL;
  if (cap > 0 && (t = sp_calloc(cap, sizeof(*t))) == NULL) return SP_ENOMEM;
  for (size_t i = 0; ix->strs_n > 0 && i < ix->strs_cap; i++) {
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
  if ((ix->strs_n + 1) * 2 > ix->strs_cap &&
      sp__strs_resize(ix, ix->strs_cap ? ix->strs_cap * 2 : SP_SPJ_TABLE_MIN) != 0)
    return NULL;
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
  ix->strs_bytes += sp__heap(sizeof(*e) + len + 1);
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
  ix->strs_bytes -= sp__heap(sizeof(*str) + str->len + 1);
  sp_free(str);
}

/* ---- span pool -------------------------------------------------------------------- */

/* Gives chunk entry @p c memory: its slots free, linked lowest first. 0 or SP_ENOMEM. */
static int sp__chunk_alloc(sp_spj_index_t *ix, size_t c) {
  if (c == ix->pool_n) {
    if (ix->pool_n >= (SP_SPJ_NONE >> SP_SPJ_POOL_SHIFT)) return SP_ENOMEM;
    if (ix->pool_n == ix->pool_cap) {
      size_t cap = ix->pool_cap ? ix->pool_cap * 2 : 16;
      sp_spj_pchunk_t *pool = sp_realloc(ix->pool, cap * sizeof(*pool));
      if (pool == NULL) return SP_ENOMEM;
      ix->pool = pool;
      ix->pool_cap = cap;
    }
    if (ix->pool_n / 64 == ix->pool_words) {
      uint64_t *w = sp_realloc(ix->pool_nonfull, (ix->pool_words + 1) * sizeof(*w));
      if (w == NULL) return SP_ENOMEM;
      w[ix->pool_words++] = 0;
      ix->pool_nonfull = w;
    }
    ix->pool[ix->pool_n++] = (sp_spj_pchunk_t){.free_head = SP_SPJ_NONE};
  }
  sp_spj_pchunk_t *ch = &ix->pool[c];
  sp_spj_span_t *spans = sp_malloc(SP_SPJ_POOL_CHUNK * sizeof(*spans));
  if (spans == NULL) return SP_ENOMEM;
  uint32_t base = (uint32_t)(c << SP_SPJ_POOL_SHIFT);
  for (uint32_t i = 0; i < SP_SPJ_POOL_CHUNK; i++) {
    spans[i].gen = ch->gen_base;
    spans[i].bucket = i + 1 < SP_SPJ_POOL_CHUNK ? base + i + 1 : SP_SPJ_NONE;
  }
  ch->spans = spans;
  ch->live = 0;
  ch->free_head = base;
  ix->pool_nonfull[c / 64] |= 1ull << (c % 64);
  ix->pool_alloc++;
  return 0;
}

/*
 * Gives an empty chunk's memory back. References into it must keep failing
 * after it is allocated again, so its slots then start above every
 * generation they had.
 */
static void sp__chunk_release(sp_spj_index_t *ix, size_t c) {
  sp_spj_pchunk_t *ch = &ix->pool[c];
  uint32_t top = ch->gen_top > ch->gen_base ? ch->gen_top : ch->gen_base;
  sp_free(ch->spans);
  *ch = (sp_spj_pchunk_t){.free_head = SP_SPJ_NONE, .gen_base = top, .gen_top = top};
  ix->pool_nonfull[c / 64] &= ~(1ull << (c % 64));
  ix->pool_alloc--;
}

/*
 * A free slot from the lowest chunk that has one: spans gather in the low
 * chunks, so the high ones empty out and are given back when traffic falls.
 */
static uint32_t sp__pool_get(sp_spj_index_t *ix) {
  size_t c = SIZE_MAX;
  for (size_t w = 0; w < ix->pool_words; w++) {
    if (ix->pool_nonfull[w] != 0) {
      c = w * 64 + (size_t)__builtin_ctzll(ix->pool_nonfull[w]);
      break;
    }
  }
  if (c == SIZE_MAX) {
    for (c = 0; c < ix->pool_n && ix->pool[c].spans != NULL; c++)
      ;
    if (sp__chunk_alloc(ix, c) != 0) return SP_SPJ_NONE;
  }
  sp_spj_pchunk_t *ch = &ix->pool[c];
  uint32_t idx = ch->free_head;
  ch->free_head = ch->spans[idx & (SP_SPJ_POOL_CHUNK - 1)].bucket;
  if (ch->free_head == SP_SPJ_NONE) ix->pool_nonfull[c / 64] &= ~(1ull << (c % 64));
  ch->live++;
  return idx;
}

static void sp__pool_put(sp_spj_index_t *ix, uint32_t idx) {
  size_t c = idx >> SP_SPJ_POOL_SHIFT;
  sp_spj_pchunk_t *ch = &ix->pool[c];
  sp_spj_span_t *e = &ch->spans[idx & (SP_SPJ_POOL_CHUNK - 1)];
  e->gen++; /* even: free */
  if (e->gen > ch->gen_top) ch->gen_top = e->gen;
  e->bucket = ch->free_head;
  ch->free_head = idx;
  ix->pool_nonfull[c / 64] |= 1ull << (c % 64);
  ch->live--; /* an empty chunk is given back by sp__spj_trim */
}

/* ---- span ID table ---------------------------------------------------------------- */

static inline size_t sp__id_home(uint64_t id, uint32_t svch, size_t mask) {
  return sp__mix(id ^ ((uint64_t)svch << 32 | svch)) & mask;
}

/* Rehashes the span ID table into @p cap slots (0: frees it). */
static int sp__ids_resize(sp_spj_index_t *ix, size_t cap) {
  sp_spj_idslot_t *t = NULL;
  if (cap > 0 && (t = sp_malloc(cap * sizeof(*t))) == NULL) return SP_ENOMEM;
  for (size_t i = 0; i < cap; i++)
    t[i].idx = SP_SPJ_NONE;
  for (size_t i = 0; ix->ids_n > 0 && i < ix->ids_cap; i++) {
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

void sp__spj_prefetch_id(sp_spj_index_t *ix, const sp_spj_str_t *svc, uint64_t span_id) {
  if (ix->ids_cap == 0 || svc == NULL) return;
  __builtin_prefetch(&ix->ids[sp__id_home(span_id, (uint32_t)svc->hash, ix->ids_cap - 1)]);
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

static inline unsigned sp__shift(unsigned level);
static inline uint32_t sp__cell_key(uint32_t bucket, unsigned level);
static sp_spj_cell_t *sp__cell_find(sp_spj_index_t *ix, uint64_t cell, uint32_t key);

/*
 * Removing a span costs a cache miss on its record and one on its span-ID
 * slot (a table of millions of slots) and on its item in a cell, one after
 * the other. A caller that knows which spans go next asks for the record a
 * few spans ahead and for the rest, found from the record fetched
 * meanwhile, a little later.
 */
void sp__spj_prefetch(sp_spj_index_t *ix, uint32_t idx, bool slots) {
  size_t c = idx >> SP_SPJ_POOL_SHIFT;
  if (idx == SP_SPJ_NONE || c >= ix->pool_n || ix->pool[c].spans == NULL) return;
  const sp_spj_span_t *e = &ix->pool[c].spans[idx & (SP_SPJ_POOL_CHUNK - 1)];
  if (!slots) {
    __builtin_prefetch(e);
    __builtin_prefetch((const char *)e + sizeof(*e) - 1);
    return;
  }
  if (!(e->gen & 1u) || ix->ids_cap == 0) return;
  __builtin_prefetch(&ix->ids[sp__id_home(e->span_id, (uint32_t)e->svc->hash, ix->ids_cap - 1)], 1);
  __builtin_prefetch(&ix->gone[sp__gone_key(e->svc, e->span_id) & ix->gone_mask], 1);
  /* and its items in their cells, where the position notes say */
  if (e->bucket == SP_SPJ_NONE || e->level == SP_SPJ_HUGE) return;
  unsigned sh = sp__shift(e->level);
  uint64_t cs[2] = {(uint64_t)e->start_ns >> sh, (uint64_t)e->end_ns >> sh};
  uint32_t key = sp__cell_key(e->bucket, e->level);
  for (int i = 0; i < (cs[1] != cs[0] ? 2 : 1); i++) {
    const sp_spj_cell_t *c = sp__cell_find(ix, cs[i], key);
    if (c != NULL && e->pos[i] < c->vec.n) __builtin_prefetch(&c->vec.v[e->pos[i]], 1);
  }
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

/* Rehashes the cell table into @p cap slots (0: frees it). */
static int sp__cells_resize(sp_spj_index_t *ix, size_t cap) {
  sp_spj_cell_t *t = NULL;
  if (cap > 0 && (t = sp_calloc(cap, sizeof(*t))) == NULL) return SP_ENOMEM;
  for (size_t i = 0; ix->cells_n > 0 && i < ix->cells_cap; i++) {
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
  if ((ix->cells_n + 1) * 2 > ix->cells_cap &&
      sp__cells_resize(ix, ix->cells_cap ? ix->cells_cap * 2 : SP_SPJ_TABLE_MIN) != 0)
    return NULL;
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

/* Rehashes the process key table into @p cap slots (0: frees it). */
static int sp__pkeys_resize(sp_spj_index_t *ix, size_t cap) {
  sp_spj_pkey_t *t = NULL;
  if (cap > 0 && (t = sp_calloc(cap, sizeof(*t))) == NULL) return SP_ENOMEM;
  for (size_t i = 0; ix->pkeys_n > 0 && i < ix->pkeys_cap; i++) {
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
  if ((ix->pkeys_n + 1) * 2 > ix->pkeys_cap &&
      sp__pkeys_resize(ix, ix->pkeys_cap ? ix->pkeys_cap * 2 : SP_SPJ_TABLE_MIN) != 0)
    return SP_ENOMEM;
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
  sp__vec_free(&ix->vec_bytes, &bk->huge);
  *bk = (sp_spj_bucket_t){.next_free = ix->free_bucket, .proc = SP_SPJ_NONE};
  ix->free_bucket = b;
}

/* ---- adding and removing spans -------------------------------------------------------- */

/*
 * Where a span's items are. Each span notes its position in each of its
 * (one or two) vectors, so removal is O(1) however many spans share a cell
 * (those without a thread of one busy process share one per time slot, and
 * searching them made eviction quadratic). Keeping the notes costs a write
 * to the span whose item moves into the gap, so vectors with room for at
 * most SP_SPJ_VEC_SMALL items (a thread's cells, nearly always) are searched
 * instead and their notes may be stale; a vector growing past that size
 * brings its notes up to date first.
 */
#define SP_SPJ_VEC_SMALL 8

/*
 * Which of its span's two positions item @p it in cell @p cell at shift
 * @p sh is (sh 0: huge), told by the item alone: the span's record is then
 * only written, not read (a cache miss the removal does not wait for).
 */
static inline unsigned sp__slot(const sp_spj_item_t *it, uint64_t cell, unsigned sh) {
  return sh != 0 && ((uint64_t)it->s >> sh) != cell;
}

/* Appends @p it to @p vec (cell @p cell at shift @p sh), its position into *@p pos. */
static int sp__place(sp_spj_index_t *ix, sp_spj_vec_t *vec, sp_spj_item_t it, uint64_t cell,
                     unsigned sh, uint32_t *pos) {
  if (vec->n == vec->cap) {
    uint32_t old = vec->cap;
    if (old > UINT32_MAX / 4) return SP_ENOMEM;
    if (sp__vec_resize(&ix->vec_bytes, vec, old ? old * 2 : 1) != 0) return SP_ENOMEM;
    if (old <= SP_SPJ_VEC_SMALL && vec->cap > SP_SPJ_VEC_SMALL) {
      for (uint32_t i = 0; i < vec->n; i++)
        sp__spj_at(ix, vec->v[i].idx)->pos[sp__slot(&vec->v[i], cell, sh)] = i;
    }
  }
  *pos = vec->n;
  vec->v[vec->n++] = it;
  return 0;
}

/* Takes span @p idx's item, noted at @p pos, out of @p vec (cell @p cell at shift @p sh). */
static void sp__unplace(sp_spj_index_t *ix, sp_spj_vec_t *vec, uint32_t idx, uint32_t pos,
                        uint64_t cell, unsigned sh) {
  bool small = vec->cap <= SP_SPJ_VEC_SMALL;
  if (!small && (pos >= vec->n || vec->v[pos].idx != idx)) {
    assert(!"stale position note");
    ix->searches++; /* a bug; the answer stays right, only slower */
    small = true;
  }
  if (small)
    for (pos = 0; pos < vec->n && vec->v[pos].idx != idx; pos++)
      ;
  assert(pos < vec->n);
  if (pos >= vec->n) return; /* cannot happen: every filed item is in its vector */
  uint32_t moved = sp__vec_take(&ix->vec_bytes, vec, pos);
  if (moved != SP_SPJ_NONE && !small)
    sp__spj_at(ix, moved)->pos[sp__slot(&vec->v[pos], cell, sh)] = pos;
}

/* Takes span @p idx's item out of cell @p c and deletes the cell when it is empty. */
static void sp__cell_take(sp_spj_index_t *ix, sp_spj_cell_t *c, uint32_t idx, uint32_t pos,
                          uint64_t cell, unsigned sh) {
  sp__unplace(ix, &c->vec, idx, pos, cell, sh);
  if (c->vec.n == 0) sp__cell_delete(ix, c);
}

/* Files span @p idx in bucket @p b; 0 or SP_ENOMEM (nothing filed). */
static int sp__file(sp_spj_index_t *ix, uint32_t b, uint32_t idx, sp_spj_span_t *e) {
  ix->cells_version++;
  sp_spj_item_t it = {.s = e->start_ns, .e = e->end_ns, .idx = idx};
  unsigned l = sp__level(e->end_ns - e->start_ns);
  e->level = (uint8_t)l;
  if (l == SP_SPJ_HUGE) return sp__place(ix, &ix->buckets[b].huge, it, 0, 0, &e->pos[0]);
  unsigned sh = sp__shift(l);
  uint64_t c0 = (uint64_t)e->start_ns >> sh, c1 = (uint64_t)e->end_ns >> sh;
  uint32_t key = sp__cell_key(b, l);
  sp_spj_cell_t *c = sp__cell_get(ix, c0, key);
  if (c == NULL || sp__place(ix, &c->vec, it, c0, sh, &e->pos[0]) != 0) {
    if (c != NULL && c->vec.n == 0) sp__cell_delete(ix, c);
    return SP_ENOMEM;
  }
  if (c1 != c0) {
    c = sp__cell_get(ix, c1, key);
    if (c == NULL || sp__place(ix, &c->vec, it, c1, sh, &e->pos[1]) != 0) {
      if (c != NULL && c->vec.n == 0) sp__cell_delete(ix, c);
      sp__cell_take(ix, sp__cell_find(ix, c0, key), idx, e->pos[0], c0, sh);
      return SP_ENOMEM;
    }
  }
  sp_spj_bucket_t *bk = &ix->buckets[b];
  if (bk->level_count[l]++ == 0) bk->level_mask |= 1u << l;
  return 0;
}

/* Takes the items of span @p idx out of its cells. */
static void sp__unfile(sp_spj_index_t *ix, uint32_t b, uint32_t idx, const sp_spj_span_t *e) {
  ix->cells_version++;
  unsigned l = e->level;
  sp_spj_bucket_t *bk = &ix->buckets[b];
  if (l == SP_SPJ_HUGE) {
    sp__unplace(ix, &bk->huge, idx, e->pos[0], 0, 0);
    return;
  }
  unsigned sh = sp__shift(l);
  uint64_t cs[2] = {(uint64_t)e->start_ns >> sh, (uint64_t)e->end_ns >> sh};
  uint32_t key = sp__cell_key(b, l);
  for (int i = 0; i < (cs[1] != cs[0] ? 2 : 1); i++) {
    sp_spj_cell_t *c = sp__cell_find(ix, cs[i], key);
    assert(c != NULL);
    if (c != NULL) sp__cell_take(ix, c, idx, e->pos[i], cs[i], sh);
  }
  bk = &ix->buckets[b];
  if (--bk->level_count[l] == 0) bk->level_mask &= ~(1u << l);
}

int sp__spj_add(sp_spj_index_t *ix, const sp_spj_span_t *tmpl, uint32_t proc, int64_t thread,
                sp_spj_ref_t *out) {
  if ((ix->ids_n + 1) * 2 > ix->ids_cap &&
      sp__ids_resize(ix, ix->ids_cap ? ix->ids_cap * 2 : SP_SPJ_TABLE_MIN) != 0)
    goto fail;
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

/*
 * The size a table of @p n entries and @p cap slots is trimmed to: none when
 * empty; under 1/8 load, the smallest that keeps the load at or below 1/4
 * (so that a trim is not undone by the next few insertions).
 */
static size_t sp__trim_cap(size_t n, size_t cap) {
  if (n == 0) return 0;
  if (cap <= SP_SPJ_TABLE_MIN || n * 8 >= cap) return cap;
  size_t c = SP_SPJ_TABLE_MIN;
  while (c < n * 4)
    c <<= 1;
  return c;
}

/*
 * Tables are not shrunk on every removal (a flush would rehash them over and
 * over on the way down) but here, when the memory bound or the timer asks.
 * A table that cannot be rehashed for lack of memory stays as it is.
 */
bool sp__spj_trim(sp_spj_index_t *ix) {
  bool done = false;
  size_t c;
  if ((c = sp__trim_cap(ix->ids_n, ix->ids_cap)) != ix->ids_cap) done |= sp__ids_resize(ix, c) == 0;
  if ((c = sp__trim_cap(ix->cells_n, ix->cells_cap)) != ix->cells_cap)
    done |= sp__cells_resize(ix, c) == 0;
  if ((c = sp__trim_cap(ix->strs_n, ix->strs_cap)) != ix->strs_cap)
    done |= sp__strs_resize(ix, c) == 0;
  if ((c = sp__trim_cap(ix->pkeys_n, ix->pkeys_cap)) != ix->pkeys_cap)
    done |= sp__pkeys_resize(ix, c) == 0;
  if (ix->pool_alloc * SP_SPJ_POOL_CHUNK > ix->live) {
    for (c = 0; c < ix->pool_n; c++) {
      if (ix->pool[c].spans != NULL && ix->pool[c].live == 0) {
        sp__chunk_release(ix, c);
        done = true;
      }
    }
  }
  return done;
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
    sp_free(ix->buckets[i].huge.v);
  sp_free(ix->buckets);
  for (size_t i = 0; i < ix->cells_cap; i++)
    if (ix->cells[i].key != 0) sp_free(ix->cells[i].vec.v);
  sp_free(ix->cells);
  for (size_t i = 0; i < ix->pool_n; i++)
    sp_free(ix->pool[i].spans);
  sp_free(ix->pool);
  sp_free(ix->pool_nonfull);
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

/*
 * Appends the spans of bucket @p b containing @p t; returns the new count
 * (may exceed cap: overflow). Stops looking once the count reaches
 * @p enough: past that the answer no longer depends on it (a second span
 * without a thread, one past the candidate cap), and a cell of a busy
 * process without threads holds thousands of spans.
 */
static size_t sp__collect(sp_spj_index_t *ix, uint32_t b, int64_t t, bool unthreaded,
                          sp_spj_cand_t *c, size_t n, size_t cap, size_t enough) {
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
        if (++n >= enough) return n;
      }
    }
  }
  for (uint32_t i = 0; i < bk->huge.n; i++) {
    const sp_spj_item_t *it = &bk->huge.v[i];
    if (it->s <= t && t <= it->e) {
      if (n < cap)
        c[n] = (sp_spj_cand_t){.s = it->s, .e = it->e, .idx = it->idx, .unthreaded = unthreaded};
      if (++n >= enough) return n;
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
      n = sp__collect(ix, p->buckets[i], t_ns, false, c, n, SP_SPJ_MAX_CAND, 2);
    if (n == 0) return SP_SPJ_R_NO_SPAN;
    if (n > 1) return SP_SPJ_R_NO_THREAD;
    *idx = c[0].idx;
    return SP_SPJ_JOINED_WINDOW;
  }
  size_t nt = sp__collect(ix, sp__bucket_find(ix, proc, thread), t_ns, false, c, 0, SP_SPJ_MAX_CAND,
                          SP_SPJ_MAX_CAND + 1);
  /* With no span of the thread, a second span without a thread already decides (no_thread). */
  size_t n = sp__collect(ix, p->none_bucket, t_ns, true, c, nt, SP_SPJ_MAX_CAND,
                         nt == 0 ? 2 : SP_SPJ_MAX_CAND + 1);
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
