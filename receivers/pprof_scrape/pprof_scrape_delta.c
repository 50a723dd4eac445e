/*
 * pprof_scrape_delta.c — cumulative pprof profiles into per-interval deltas.
 *
 * Go's allocs/heap, mutex and block endpoints report totals since the
 * process started. Pyroscope wants what happened in each interval, so, as
 * Grafana Alloy's scraper (and godeltaprof) do, each scrape is subtracted
 * from the previous one of the same target and profile.
 *
 * Location IDs are not stable across two encodings of a Go profile, so a
 * sample is identified by content: each frame's address (stable for the
 * life of a process) or, for symbol-only frames, its function names, files
 * and lines; plus its labels, sorted (pprof.Do labels, heap's "bytes"
 * size-class label). The key bytes are hashed into an open-addressing table
 * that keeps, per key, the summed cumulative values; that table becomes the
 * baseline for the next scrape.
 */
#include "receivers/pprof_scrape/pprof_scrape.h"

#include "pipeline/alloc.h"
#include "pipeline/buf.h"
#include "pipeline/error.h"
#include "pipeline/pprof.h"
#include "pipeline/satmath.h"

#include <stdlib.h>
#include <string.h>

struct sp_scrape_delta_s {
  char *sig;       /* the sample types, "type/unit;..." — a change invalidates the baseline */
  size_t n_cum;    /* cumulative values per key */
  size_t n_slots;  /* power of two */
  size_t n_used;
  uint64_t *hash;  /* 0: empty slot */
  size_t *key_off; /* into keys */
  size_t *key_len;
  size_t *first;   /* while building: the sample that holds the key's sums */
  int64_t *vals;   /* n_slots * n_cum */
  sp_buf_t keys;
};

void sp__scrape_delta_free(sp_scrape_delta_t *d) {
  if (d == NULL)
    return;
  sp_free(d->sig);
  sp_free(d->hash);
  sp_free(d->key_off);
  sp_free(d->key_len);
  sp_free(d->first);
  sp_free(d->vals);
  sp_buf_free(&d->keys);
  sp_free(d);
}

size_t sp__scrape_delta_size(const sp_scrape_delta_t *d) { return d != NULL ? d->n_used : 0; }

static int sp__table_alloc(sp_scrape_delta_t *d, size_t n_slots) {
  d->n_slots = n_slots;
  d->hash = sp_calloc(n_slots, sizeof(uint64_t));
  d->key_off = sp_calloc(n_slots, sizeof(size_t));
  d->key_len = sp_calloc(n_slots, sizeof(size_t));
  d->first = sp_calloc(n_slots, sizeof(size_t));
  d->vals = sp_calloc(n_slots * (d->n_cum > 0 ? d->n_cum : 1), sizeof(int64_t));
  return d->hash && d->key_off && d->key_len && d->first && d->vals ? 0 : SP_ENOMEM;
}

static uint64_t sp__hash(const uint8_t *p, size_t n) {
  uint64_t h = 1469598103934665603ull;
  for (size_t i = 0; i < n; i++)
    h = (h ^ p[i]) * 1099511628211ull;
  return h != 0 ? h : 1;
}

/* The slot of key (found or where it goes). */
static size_t sp__slot(const sp_scrape_delta_t *d, const uint8_t *key, size_t len, uint64_t h,
                       bool *found) {
  size_t mask = d->n_slots - 1, i = (size_t)h & mask;
  while (d->hash[i] != 0) {
    if (d->hash[i] == h && d->key_len[i] == len &&
        memcmp(d->keys.data + d->key_off[i], key, len) == 0) {
      *found = true;
      return i;
    }
    i = (i + 1) & mask;
  }
  *found = false;
  return i;
}

/* id → index lookups over locations and functions (dense 1..n, else sorted pairs). */
typedef struct sp_idx_s {
  uint64_t *pairs; /* id, index, id, index... sorted by id; NULL when dense */
  size_t n;
} sp_idx_t;

static int sp__cmp_pair(const void *a, const void *b) {
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return x < y ? -1 : x > y;
}

static int sp__idx_build(sp_idx_t *ix, size_t n, const uint64_t *(*id_at)(const sp_pprof_t *, size_t),
                         const sp_pprof_t *p) {
  ix->pairs = NULL;
  ix->n = n;
  bool dense = true;
  for (size_t i = 0; i < n && dense; i++)
    dense = *id_at(p, i) == i + 1;
  if (dense)
    return 0;
  ix->pairs = sp_malloc((n > 0 ? n : 1) * 2 * sizeof(uint64_t));
  if (ix->pairs == NULL)
    return SP_ENOMEM;
  for (size_t i = 0; i < n; i++) {
    ix->pairs[2 * i] = *id_at(p, i);
    ix->pairs[2 * i + 1] = i;
  }
  qsort(ix->pairs, n, 2 * sizeof(uint64_t), sp__cmp_pair);
  return 0;
}

/* Index of @p id, or SIZE_MAX. */
static size_t sp__idx_find(const sp_idx_t *ix, uint64_t id) {
  if (ix->pairs == NULL)
    return id >= 1 && id <= ix->n ? (size_t)(id - 1) : SIZE_MAX;
  const uint64_t *hit = bsearch(&id, ix->pairs, ix->n, 2 * sizeof(uint64_t), sp__cmp_pair);
  return hit != NULL ? (size_t)hit[1] : SIZE_MAX;
}

static const uint64_t *sp__loc_id(const sp_pprof_t *p, size_t i) { return &p->location[i]->id; }
static const uint64_t *sp__fn_id(const sp_pprof_t *p, size_t i) { return &p->function[i]->id; }

/* Orders labels by key text, then string value, then number. */
static int sp__label_cmp(const sp_pprof_t *p, const sp_pprof_label_t *a, const sp_pprof_label_t *b) {
  int c = strcmp(sp_pprof_str(p, a->key), sp_pprof_str(p, b->key));
  if (c == 0)
    c = strcmp(sp_pprof_str(p, a->str), sp_pprof_str(p, b->str));
  if (c == 0)
    c = a->num < b->num ? -1 : a->num > b->num;
  return c;
}

static int sp__put(sp_buf_t *b, char tag, const void *data, size_t n) {
  int rc = sp_buf_putc(b, tag);
  if (rc == 0 && n > 0)
    rc = sp_buf_append(b, data, n);
  return rc;
}

static int sp__put_str(sp_buf_t *b, char tag, const char *s) {
  return sp__put(b, tag, s, strlen(s) + 1); /* with the NUL as separator */
}

/* The identity of sample @p s as bytes in @p key (cleared first). */
static int sp__sample_key(const sp_pprof_t *p, const sp_pprof_sample_t *s, const sp_idx_t *locs,
                          const sp_idx_t *fns, sp_buf_t *key, const sp_pprof_label_t **scratch) {
  key->len = 0;
  int rc = 0;
  for (size_t i = 0; i < s->n_location_id && rc == 0; i++) {
    size_t li = sp__idx_find(locs, s->location_id[i]);
    const Perftools__Profiles__Location *loc = li != SIZE_MAX ? p->location[li] : NULL;
    if (loc == NULL) {
      rc = sp__put(key, '?', &s->location_id[i], sizeof(uint64_t));
    } else if (loc->address != 0) {
      rc = sp__put(key, 'a', &loc->address, sizeof(uint64_t));
    } else {
      for (size_t j = 0; j < loc->n_line && rc == 0; j++) {
        size_t fi = sp__idx_find(fns, loc->line[j]->function_id);
        const Perftools__Profiles__Function *fn = fi != SIZE_MAX ? p->function[fi] : NULL;
        rc = sp__put_str(key, 'f', fn != NULL ? sp_pprof_str(p, fn->name) : "");
        if (rc == 0)
          rc = sp__put_str(key, 'F', fn != NULL ? sp_pprof_str(p, fn->filename) : "");
        if (rc == 0)
          rc = sp__put(key, 'l', &loc->line[j]->line, sizeof(int64_t));
      }
      if (rc == 0)
        rc = sp__put(key, '|', NULL, 0);
    }
  }
  if (rc != 0 || s->n_label == 0)
    return rc;
  /* Labels in a canonical order: insertion sort (samples carry a handful). */
  for (size_t i = 0; i < s->n_label; i++) {
    const sp_pprof_label_t *l = s->label[i];
    size_t j = i;
    while (j > 0 && sp__label_cmp(p, scratch[j - 1], l) > 0) {
      scratch[j] = scratch[j - 1];
      j--;
    }
    scratch[j] = l;
  }
  for (size_t i = 0; i < s->n_label && rc == 0; i++) {
    const sp_pprof_label_t *l = scratch[i];
    rc = sp__put_str(key, 'k', sp_pprof_str(p, l->key));
    if (rc == 0 && l->str != 0)
      rc = sp__put_str(key, 's', sp_pprof_str(p, l->str));
    else if (rc == 0)
      rc = sp__put(key, 'n', &l->num, sizeof(int64_t));
    if (rc == 0 && l->num_unit != 0)
      rc = sp__put_str(key, 'u', sp_pprof_str(p, l->num_unit));
  }
  return rc;
}

static char *sp__signature(const sp_pprof_t *p) {
  sp_buf_t b;
  sp_buf_init(&b, 0);
  int rc = 0;
  for (size_t i = 0; i < p->n_sample_type; i++)
    rc |= sp_buf_printf(&b, "%s/%s;", sp_pprof_str(p, p->sample_type[i]->type),
                        sp_pprof_str(p, p->sample_type[i]->unit));
  if (rc != 0 || sp_buf_putc(&b, '\0') != 0) {
    sp_buf_free(&b);
    return NULL;
  }
  size_t len;
  return (char *)sp_buf_steal(&b, &len);
}

int sp__scrape_delta(sp_arena_t *arena, sp_pprof_t *p, const bool *cumulative,
                     const sp_scrape_delta_t *prev, sp_scrape_delta_t **next, bool *primed) {
  (void)arena;
  *next = NULL;
  size_t cum_idx[64], n_cum = 0;
  for (size_t i = 0; i < p->n_sample_type && n_cum < 64; i++)
    if (cumulative[i])
      cum_idx[n_cum++] = i;
  sp_idx_t locs = {0}, fns = {0};
  sp_buf_t key;
  sp_buf_init(&key, 0);
  const sp_pprof_label_t **scratch = NULL;
  bool *drop = NULL;
  int rc = SP_ENOMEM;
  sp_scrape_delta_t *cur = sp_calloc(1, sizeof(*cur));
  if (cur == NULL)
    goto done;
  sp_buf_init(&cur->keys, 0);
  cur->n_cum = n_cum;
  size_t slots = 64;
  while (slots < p->n_sample * 2)
    slots *= 2;
  size_t max_labels = 1;
  for (size_t i = 0; i < p->n_sample; i++)
    if (p->sample[i]->n_label > max_labels)
      max_labels = p->sample[i]->n_label;
  if ((cur->sig = sp__signature(p)) == NULL || sp__table_alloc(cur, slots) != 0 ||
      sp__idx_build(&locs, p->n_location, sp__loc_id, p) != 0 ||
      sp__idx_build(&fns, p->n_function, sp__fn_id, p) != 0 ||
      (scratch = sp_malloc(max_labels * sizeof(*scratch))) == NULL ||
      (drop = sp_calloc(p->n_sample > 0 ? p->n_sample : 1, sizeof(bool))) == NULL)
    goto done;

  /* Pass 1: key every sample, summing duplicates into the first one (saturating:
   * the counts come from the scraped program and may be hostile or corrupt). */
  for (size_t i = 0; i < p->n_sample; i++) {
    sp_pprof_sample_t *s = p->sample[i];
    if (sp__sample_key(p, s, &locs, &fns, &key, scratch) != 0)
      goto done;
    uint64_t h = sp__hash(key.data, key.len);
    bool found;
    size_t at = sp__slot(cur, key.data, key.len, h, &found);
    int64_t *vals = cur->vals + at * (n_cum > 0 ? n_cum : 1);
    if (found) {
      sp_pprof_sample_t *f = p->sample[cur->first[at]];
      for (size_t v = 0; v < s->n_value && v < f->n_value; v++)
        f->value[v] = sp_sat_add_i64(f->value[v], s->value[v]);
      for (size_t c = 0; c < n_cum; c++)
        vals[c] = sp_sat_add_i64(vals[c], s->value[cum_idx[c]]);
      drop[i] = true;
      continue;
    }
    cur->hash[at] = h;
    cur->key_off[at] = cur->keys.len;
    cur->key_len[at] = key.len;
    cur->first[at] = i;
    if (sp_buf_append(&cur->keys, key.data, key.len) != 0)
      goto done;
    for (size_t c = 0; c < n_cum; c++)
      vals[c] = s->value[cum_idx[c]];
    cur->n_used++;
  }

  /* Pass 2: subtract the baseline, then drop what is left empty. */
  const sp_scrape_delta_t *old = prev;
  bool usable = old != NULL && old->n_cum == n_cum && strcmp(old->sig, cur->sig) == 0;
  if (usable) {
    for (size_t at = 0; at < cur->n_slots; at++) {
      if (cur->hash[at] == 0)
        continue;
      bool found;
      size_t pat = sp__slot(old, cur->keys.data + cur->key_off[at], cur->key_len[at],
                            cur->hash[at], &found);
      const int64_t *pv = found ? old->vals + pat * (n_cum > 0 ? n_cum : 1) : NULL;
      const int64_t *cv = cur->vals + at * (n_cum > 0 ? n_cum : 1);
      sp_pprof_sample_t *s = p->sample[cur->first[at]];
      for (size_t c = 0; c < n_cum; c++) {
        int64_t d = cv[c];
        if (pv != NULL && cv[c] >= pv[c])
          d = sp_sat_sub_i64(cv[c], pv[c]); /* else: restarted, the total is the delta */
        s->value[cum_idx[c]] = d;
      }
    }
    size_t w = 0;
    for (size_t i = 0; i < p->n_sample; i++) {
      bool zero = true;
      for (size_t v = 0; v < p->sample[i]->n_value && zero; v++)
        zero = p->sample[i]->value[v] == 0;
      if (!drop[i] && !zero)
        p->sample[w++] = p->sample[i];
    }
    p->n_sample = w;
  }
  *primed = !usable;
  *next = cur;
  cur = NULL;
  rc = 0;
done:
  sp__scrape_delta_free(cur);
  sp_free(locs.pairs);
  sp_free(fns.pairs);
  sp_free(scratch);
  sp_free(drop);
  sp_buf_free(&key);
  return rc;
}
