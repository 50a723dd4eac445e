/*
 * pyroscope_profile.c — what /ingest and Push share: one pprof into the
 * batch with its series labels, the sender's metadata, the hand-over.
 *
 * Span labels: SDKs that cannot label samples (pyroscope-rs based ones:
 * Ruby, Python) put span_id / profile_id / span / span_name / trace_id into
 * the upload's tags, which makes them series labels — one series per span,
 * which Pyroscope itself refuses to store (its legacy ingestion drops such
 * uploads). Here they move onto every sample of the profile, where the join
 * and Pyroscope's span selector look for them, and the series stays the
 * service's. Then the sample labels are normalised (pprof.h).
 *
 * Most uploads need none of that: their samples carry span_id already, in
 * lower case. Those are checked on the wire (sp_pprof_wire_index with
 * validation: exactly what sp_pprof_decode accepts) and enter the batch as
 * received bytes with their index (p->wire), never decoded. Only an upload
 * that must change — span labels among the series labels, a "profile_id" or
 * "span" string in its table (the SDK spellings normalisation renames), a
 * 16 or 32 hex character string with upper-case letters (a span or trace ID
 * to lower-case) — is decoded and edited as before. A missing time_nanos
 * (/ingest fills in `from`) is set on the wire too: a time_nanos field
 * appended at the end wins, as the last occurrence of a singular field does.
 */
#include "receivers/pyroscope/pyroscope.h"

#include "pipeline/alloc.h"
#include "pipeline/error.h"
#include "pipeline/log.h"
#include "pipeline/pprofwire.h"

#include <stdio.h>
#include <string.h>

/* Series labels that are really per-sample span labels. */
static const char *const sp__span_label_names[] = {"span_id", "profile_id", "span", "span_name",
                                              "trace_id"};

const char *sp__pyro_labels_get(const sp_pyro_labels_t *l, const char *name) {
  for (size_t i = 0; i < l->n; i++)
    if (strcmp(l->items[i].name, name) == 0)
      return l->items[i].value;
  return NULL;
}

int sp__pyro_labels_set(sp_pyro_labels_t *l, const char *name, const char *value) {
  for (size_t i = 0; i < l->n; i++) {
    if (strcmp(l->items[i].name, name) == 0) {
      l->items[i].value = value;
      return 0;
    }
  }
  if (l->n == SP_PYRO_MAX_LABELS)
    return SP_ETOOBIG;
  l->items[l->n].name = name;
  l->items[l->n].value = value;
  l->n++;
  return 0;
}

bool sp__pyro_labels_del(sp_pyro_labels_t *l, const char *name) {
  for (size_t i = 0; i < l->n; i++) {
    if (strcmp(l->items[i].name, name) == 0) {
      memmove(&l->items[i], &l->items[i + 1], (l->n - i - 1) * sizeof(l->items[0]));
      l->n--;
      return true;
    }
  }
  return false;
}

/* Pyroscope's default display names for Go sample types (used without a sample_type_config). */
static const char *sp__default_display(const char *type) {
  static const char *const map[][2] = {{"samples", "cpu"},
                                       {"goroutine", "goroutines"},
                                       {"contentions", "mutex_count"},
                                       {"delay", "mutex_duration"}};
  for (size_t i = 0; i < sizeof(map) / sizeof(map[0]); i++)
    if (strcmp(map[i][0], type) == 0)
      return map[i][1];
  return NULL;
}

/*
 * __name__ from the sample types, as Pyroscope's /ingest does for pprof: a
 * "wall" type wins; otherwise the first type whose (display) name says cpu,
 * memory, mutex, block or goroutines; otherwise the last type's name.
 */
static const char *sp__metric_name(const char *const *types, size_t n_types,
                                   const sp_pyro_stcs_t *stcs) {
  for (size_t i = 0; i < n_types; i++)
    if (strcmp(types[i], "wall") == 0)
      return "wall";
  const char *st = "";
  for (size_t i = 0; i < n_types; i++) {
    st = types[i];
    const char *display = NULL;
    if (stcs != NULL && stcs->present) {
      for (size_t j = 0; j < stcs->n; j++)
        if (strcmp(stcs->items[j].type, st) == 0)
          display = stcs->items[j].display_name;
    } else {
      display = sp__default_display(st);
    }
    if (display != NULL && display[0] != '\0')
      st = display;
    if (strstr(st, "cpu") != NULL)
      return "process_cpu";
    if (strstr(st, "alloc_") != NULL || strstr(st, "inuse_") != NULL ||
        strcmp(st, "space") == 0 || strcmp(st, "objects") == 0)
      return "memory";
    if (strstr(st, "mutex_") != NULL)
      return "mutex";
    if (strstr(st, "block_") != NULL)
      return "block";
    if (strstr(st, "goroutines") != NULL)
      return "goroutines";
  }
  return st;
}

/*
 * Moves span labels from the series onto every sample, then normalises the
 * sample labels. Marks *modified when the pprof changed.
 */
static int sp__span_labels(sp_profiles_t *batch, sp_pyro_labels_t *labels, sp_pprof_t *pp,
                           bool *modified) {
  sp_pprof_edit_t e;
  sp_pprof_edit_init(&e, batch->arena, pp);
  int rc = 0;
  for (size_t k = 0; k < sizeof(sp__span_label_names) / sizeof(sp__span_label_names[0]) && rc == 0; k++) {
    const char *name = sp__span_label_names[k];
    const char *value = sp__pyro_labels_get(labels, name);
    if (value == NULL)
      continue;
    if (value[0] != '\0') {
      for (size_t i = 0; i < pp->n_sample && rc == 0; i++) {
        /* A sample's own label is more specific than the upload's tag. */
        int64_t key = sp_pprof_intern(&e, name);
        if (key < 0)
          rc = SP_ENOMEM;
        else if (sp_pprof_sample_label(pp->sample[i], key) == NULL)
          rc = sp_pprof_sample_set_label_str(&e, pp->sample[i], name, value);
      }
    }
    sp__pyro_labels_del(labels, name);
  }
  if (rc == 0)
    rc = sp_pprof_normalize_span_labels(&e, NULL);
  if (e.changed > 0)
    *modified = true;
  sp_pprof_edit_free(&e);
  return rc;
}

static sp_profile_t *sp__add(sp_profiles_t *batch, const sp_pyro_labels_t *labels,
                             sp_pprof_t *pp, bool modified, const uint8_t *raw, size_t len,
                             int64_t start_ns, int64_t end_ns) {
  sp_profile_t *p;
  if (modified || raw == NULL) {
    p = sp_profiles_add_decoded(batch, labels->items, labels->n, start_ns, end_ns, pp);
  } else {
    p = sp_profiles_add(batch, labels->items, labels->n, start_ns, end_ns, raw, len);
    if (p != NULL)
      p->pprof = pp;
  }
  return p;
}


/*
 * The length string @p i has once decoded: protobuf-c's strings end at an
 * embedded NUL, and the decode-and-edit path compares them as C strings.
 */
static size_t sp__cstr_len(const sp_pprof_wire_t *w, size_t i) {
  const uint8_t *c = w->raw + w->strings[i].off;
  const uint8_t *nul = w->strings[i].len > 0 ? memchr(c, 0, w->strings[i].len) : NULL;
  return nul != NULL ? (size_t)(nul - c) : w->strings[i].len;
}

/* True when the @p n bytes at @p c, as a C string, are exactly @p name (@p k bytes). */
static bool sp__is_cstr(const uint8_t *c, size_t n, const char *name, size_t k) {
  return n >= k && memcmp(c, name, k) == 0 && (n == k || c[k] == 0);
}

static bool sp__is_hex(uint8_t ch) {
  return (ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'f') || (ch >= 'A' && ch <= 'F');
}

/*
 * One pass over the string table for what makes the profile need editing:
 * a "profile_id" or "span" string (label names the decode path renames),
 * or a 16 / 32 hex string with A-F (a span_id / trace_id value that may need
 * lower-casing). Strings are compared as C strings (text after an embedded
 * NUL is not seen). Most strings (function and file names) are passed over
 * on their length or first byte.
 */
static bool sp__strings_need_edit(const sp_pprof_wire_t *w) {
  for (size_t i = 1; i < w->n_strings; i++) {
    size_t n = w->strings[i].len;
    if (n < 4) continue;
    const uint8_t *c = w->raw + w->strings[i].off;
    if ((c[0] == 's' && sp__is_cstr(c, n, "span", 4)) ||
        (c[0] == 'p' && sp__is_cstr(c, n, "profile_id", 10)))
      return true;
    if (n < 16 || !sp__is_hex(c[0])) continue;
    n = sp__cstr_len(w, i);
    if (n != 16 && n != 32) continue;
    bool upper = false, hex = true;
    for (size_t j = 0; j < n && hex; j++) {
      upper |= c[j] >= 'A' && c[j] <= 'F';
      hex = sp__is_hex(c[j]);
    }
    if (hex && upper)
      return true;
  }
  return false;
}

/* Whether the profile must be decoded and edited (see the top of this file). */
static bool sp__needs_edit(const sp_pyro_labels_t *labels, const sp_pprof_wire_t *w) {
  for (size_t k = 0; k < sizeof(sp__span_label_names) / sizeof(sp__span_label_names[0]); k++)
    if (sp__pyro_labels_get(labels, sp__span_label_names[k]) != NULL)
      return true;
  return sp__strings_need_edit(w);
}

/* The sample type names of a decoded profile (into @p arena). NULL on OOM. */
static const char **sp__types_decoded(sp_arena_t *arena, const sp_pprof_t *pp) {
  const char **t = sp_arena_alloc(arena, (pp->n_sample_type + 1) * sizeof(*t));
  for (size_t i = 0; t != NULL && i < pp->n_sample_type; i++)
    t[i] = sp_pprof_str(pp, pp->sample_type[i]->type);
  return t;
}

/* The sample type names of an indexed profile, NUL-terminated copies in @p arena. */
static const char **sp__types_wire(sp_arena_t *arena, const sp_pprof_wire_t *w) {
  const char **t = sp_arena_alloc(arena, (w->n_sample_types + 1) * sizeof(*t));
  for (size_t i = 0; t != NULL && i < w->n_sample_types; i++) {
    size_t n;
    const char *s = sp_pprof_wire_str(w, w->sample_types[i][0], &n);
    if ((t[i] = sp_arena_strndup(arena, s, n)) == NULL)
      return NULL;
  }
  return t;
}

/* Fewer nanoseconds than this since the epoch means "still in 1970": no real time. */
#define SP__YEAR_1971_NS (365LL * 24 * 3600 * 1000000000LL)
#define SP__DAY_NS (24LL * 3600 * 1000000000LL)

/* The profile's time range (Push) per the options; *fill_time: /ingest must set time_nanos. */
static void sp__times(const sp_pyro_pprof_opts_t *opts, int64_t time_nanos, int64_t duration,
                      int64_t *start, int64_t *end, bool *fill_time) {
  *start = opts->start_ns;
  *end = opts->end_ns;
  *fill_time = false;
  if (opts->time_from_profile) {
    /* Durations beyond a day are treated as none (a corrupt value must not overflow). */
    int64_t dur = duration > 0 && duration < SP__DAY_NS ? duration : 0;
    if (time_nanos >= SP__YEAR_1971_NS && time_nanos < INT64_MAX - SP__DAY_NS) {
      *start = time_nanos;
      *end = time_nanos + dur;
    } else {
      *end = opts->now_ns;
      *start = *end - dur;
    }
  } else if (time_nanos < SP__YEAR_1971_NS && *start > 0) {
    /* Old py-spy, rbspy and pyroscope-rs write no (or a microsecond) time: use `from`. */
    *fill_time = true;
  }
}

/*
 * The wire path: the received bytes (plus a time_nanos field when missing) and
 * their index. @p inflated is the buffer the bytes were inflated into (they
 * start at its beginning), or NULL when they arrived uncompressed: it is
 * handed to the batch arena rather than copied into it.
 */
static int sp__add_wire(sp_profiles_t *batch, sp_pyro_labels_t *labels, sp_pprof_wire_t *w,
                        int64_t start, int64_t end, bool fill_time, sp_buf_t *inflated) {
  const uint8_t *bytes = w->raw;
  size_t len = w->len;
  bool in_arena = fill_time;
  if (!fill_time && inflated != NULL && inflated->data == w->raw && inflated->len == len &&
      len > 0) {
    size_t cap = inflated->cap;
    uint8_t *block = sp_buf_steal(inflated, NULL);
    uint8_t *fit = cap > len + len / 8 ? sp_realloc(block, len) : NULL; /* drop the slack */
    if (fit != NULL) block = fit;
    if (!sp_arena_adopt(batch->arena, block, fit != NULL ? len : cap)) {
      sp_free(block);
      return SP_ENOMEM;
    }
    bytes = block;
    in_arena = true;
  }
  if (fill_time) {
    uint8_t *b = sp_arena_alloc(batch->arena, len + 11);
    if (b == NULL)
      return SP_ENOMEM;
    memcpy(b, w->raw, len);
    size_t n = len;
    b[n++] = (9 << 3) | 0;
    for (uint64_t v = (uint64_t)start; ; v >>= 7) {
      if (v < 0x80) {
        b[n++] = (uint8_t)v;
        break;
      }
      b[n++] = (uint8_t)(v | 0x80);
    }
    bytes = b;
    len = n;
    w->time_nanos = start;
  }
  /* Bytes already in the batch arena are used in place (no second copy). */
  sp_profile_t *p =
      in_arena
          ? sp_profiles_add_arena_bytes(batch, labels->items, labels->n, start, end, bytes, len)
          : sp_profiles_add(batch, labels->items, labels->n, start, end, bytes, len);
  if (p == NULL)
    return SP_ENOMEM;
  /* Offsets are relative to the buffer: the index holds for the batch's copy. */
  w->raw = p->raw;
  w->len = len;
  p->wire = w;
  return 0;
}

int sp__pyro_add_pprof(sp_pyro_t *self, sp_profiles_t *batch, sp_pyro_labels_t *labels,
                       const uint8_t *bytes, size_t len, const sp_pyro_pprof_opts_t *opts,
                       char *err, size_t errlen) {
  sp_buf_t scratch;
  sp_buf_init(&scratch, 0);
  const uint8_t *raw = NULL;
  size_t raw_len = 0;
  sp_pprof_t *pp = NULL;
  bool modified = false;
  int rc = 0;
  if (len == 0)
    goto done;
  rc = sp_pprof_uncompress(bytes, len, self->cfg->max_profile_size, &scratch, &raw, &raw_len);
  if (rc == SP_ETOOBIG) {
    snprintf(err, errlen, "uncompressed profile exceeds the limit of %llu bytes",
             (unsigned long long)self->cfg->max_profile_size);
    goto done;
  }
  if (rc == SP_EPROTO) {
    snprintf(err, errlen, "corrupt gzip data in the profile");
    goto done;
  }
  if (rc != 0)
    goto done;
  /* The batch is private to this call's thread until it is handed over (pyroscope.h). */
  sp_pprof_wire_t *w = sp_arena_alloc(batch->arena, sizeof(*w));
  if (w == NULL) {
    rc = SP_ENOMEM;
    goto done;
  }
  /* Labels are decoded here, on the pool, once: the join and the exporter read them as arrays. */
  rc = sp_pprof_wire_index_ex(batch->arena, raw, raw_len, SP_PW_VALIDATE | SP_PW_LABELS, w, err,
                              errlen);
  if (rc != 0)
    goto done;
  bool edit = sp__needs_edit(labels, w);
  if (edit && (rc = sp_pprof_decode(batch->arena, raw, raw_len, &pp, err, errlen)) != 0)
    goto done;
  if (opts->derive_name) {
    size_t n_types = edit ? pp->n_sample_type : w->n_sample_types;
    if (n_types == 0) {
      rc = SP_EPROTO;
      snprintf(err, errlen, "the profile has no sample types");
      goto done;
    }
    const char **types = edit ? sp__types_decoded(batch->arena, pp)
                              : sp__types_wire(batch->arena, w);
    if (types == NULL) {
      rc = SP_ENOMEM;
      goto done;
    }
    if ((rc = sp__pyro_labels_set(labels, "__name__", sp__metric_name(types, n_types, opts->stcs))) != 0)
      goto labels_full;
  }
  int64_t start, end;
  bool fill_time;
  sp__times(opts, w->time_nanos, w->duration_nanos, &start, &end, &fill_time);
  if (!edit) {
    rc = sp__add_wire(batch, labels, w, start, end, fill_time,
                      raw == scratch.data ? &scratch : NULL);
    goto done;
  }
  if (fill_time) {
    pp->time_nanos = start;
    modified = true;
  }
  if ((rc = sp__span_labels(batch, labels, pp, &modified)) != 0)
    goto done;
  sp_profile_t *p = sp__add(batch, labels, pp, modified, raw, raw_len, start, end);
  rc = p != NULL ? 0 : SP_ENOMEM;
  if (p != NULL && !modified) {
    w->raw = p->raw; /* unchanged bytes: the index holds for the batch's copy */
    p->wire = w;
  }
  goto done;
labels_full:
  snprintf(err, errlen, "too many labels (at most %d)", SP_PYRO_MAX_LABELS);
  rc = SP_EPROTO;
done:
  if (rc == SP_ENOMEM)
    snprintf(err, errlen, "out of memory");
  sp_buf_free(&scratch);
  return rc;
}

int sp__pyro_add_built(sp_profiles_t *batch, sp_pyro_labels_t *labels, sp_pprof_t *pp,
                       int64_t start_ns, int64_t end_ns, char *err, size_t errlen) {
  bool modified = true;
  int rc = sp__span_labels(batch, labels, pp, &modified);
  if (rc == 0 && sp__add(batch, labels, pp, true, NULL, 0, start_ns, end_ns) == NULL)
    rc = SP_ENOMEM;
  if (rc == SP_ENOMEM)
    snprintf(err, errlen, "out of memory");
  return rc;
}

void sp__pyro_set_meta(sp_profiles_t *batch, const sp_http_request_t *req) {
  const char *tenant = sp_http_request_header(req, "x-scope-orgid");
  const char *auth = sp_http_request_header(req, "authorization");
  batch->meta.tenant = tenant != NULL && tenant[0] != '\0' ? sp_profiles_strdup(batch, tenant)
                                                          : NULL;
  batch->meta.authorization =
      auth != NULL && auth[0] != '\0' ? sp_profiles_strdup(batch, auth) : NULL;
}

bool sp__pyro_offload(sp_pyro_t *self, size_t len) {
  size_t min = self->pool_min > 0 ? self->pool_min : SP_PYRO_POOL_MIN;
  if (len < min || self->n_work >= SP_PYRO_POOL_MAX)
    return false;
  self->n_work++;
  return true;
}

void sp__pyro_offload_done(sp_pyro_t *self) { self->n_work--; }

int sp__pyro_consume(sp_pyro_t *self, const sp_pyro_metrics_t *m, sp_profiles_t *batch) {
  size_t n = batch->n;
  if (n == 0) {
    sp_profiles_unref(batch);
    return 0;
  }
  int rc = sp_consume_profiles(self->next, batch);
  if (rc == 0)
    sp_metric_add(m->accepted, n);
  else if (rc == SP_EAGAIN)
    sp_metric_add(m->refused, n);
  else
    sp_metric_add(m->rejected, n);
  return rc;
}
