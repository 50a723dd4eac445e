/*
 * pyroscope_labels.c — what one profile must look like before Pyroscope
 * sees it.
 *
 * Pyroscope validates every series it ingests (pkg/validation in
 * grafana/pyroscope) and answers a whole push with 400 when one series
 * breaks a rule — and a 400 is never retried, so one odd label would cost
 * every profile of the request. We therefore apply the same rules here,
 * drop what would be refused, count it (spanprof_exporter_dropped_labels_total
 * by reason) and say so in the log, and send the rest.
 *
 * Series labels, in priority order:
 *   service_name   from the profile, else external_labels.service_name,
 *                  else "unknown_service"; required;
 *   __name__       the profile type (process_cpu, memory, ...), from the
 *                  profile or else derived from its first sample type;
 *                  required;
 *   the profile's other series labels, in order;
 *   external_labels from the config, when no label of that name exists
 *                  (data wins over configuration, as Prometheus does).
 * Rules, per label:
 *   - names: every byte outside [A-Za-z0-9_] becomes '_' (dots are what
 *     OTel attribute names are full of; Pyroscope itself only rewrites
 *     dots and refuses anything else) and a leading digit gets a '_'
 *     prefix; an empty name is dropped;
 *   - a name seen before (after rewriting) is dropped — silently when its
 *     value is the same;
 *   - an empty value means "no label" (Prometheus semantics): skipped;
 *   - names longer than max_label_name_length (1024) and values longer than
 *     max_label_value_length (2048) or not UTF-8 are dropped; the two
 *     required labels are truncated / repaired instead;
 *   - at most max_label_names_per_series (30) names, counting the sample
 *     labels below; past it the lowest-priority labels go.
 *
 * Sample labels. Pyroscope splits a profile by its string sample labels and
 * makes each of them a series label of its part — all except span_id,
 * trace_id and profile_id (the span-profile labels, which it keeps on the
 * samples and stores apart). So sample label names count towards the
 * series limit and obey the same name rules:
 *   - span_id (16 lowercase hex), trace_id (32 hex) and profile_id stay on
 *     the samples untouched, never becoming series labels;
 *   - a name that is a series label name already is ignored by Pyroscope
 *     (the series label wins) and left alone;
 *   - a name Pyroscope would refuse is rewritten; one that would collide
 *     with a series label or an earlier sample label after rewriting, one
 *     too long, or one past the label budget is removed from the samples;
 *     a value too long is removed from its sample;
 *   - numeric labels are not series material and are left alone.
 *
 * span_name. The Go and Java SDKs put the span name on samples beside
 * span_id, and since Pyroscope makes it a series label, flame graphs can be
 * grouped and filtered by endpoint ("which code makes GET /checkout slow")
 * — the reason it is kept by default. The price is one series per distinct
 * span name and profile type: a service whose span names carry IDs or
 * unbounded values (raw URLs, SQL text) multiplies its series, runs into
 * Pyroscope's active-series limit (max_global_series_per_tenant) and gets
 * refused with 429s. `span_name_label: false` removes span_name from the
 * samples for such services; span_id and trace_id stay, so span-level
 * lookups from Tempo keep working, only the by-endpoint grouping is lost.
 *
 * A profile that needs none of these changes is sent as the bytes it
 * arrived as. Deciding that never decodes it: the sample label keys in use,
 * their names and the lengths of their values are read from the encoded
 * bytes through the profile's wire index (pipeline/pprofwire.h, cached in
 * the batch), with per-sample work limited to integer comparisons and the
 * string work done once per distinct key. A profile that does need a change
 * is changed on a private copy decoded into the caller's arena and
 * re-encoded: the batch may be shared with other exporters and is never
 * written (beyond caching its index). The same copy gets pprof time_nanos from
 * the profile's time range when it has none, because Pyroscope stamps such
 * profiles with the time they arrive — wrong by the join window at least.
 */
#include "exporters/pyroscope/pyroscope.h"

#include "pipeline/alloc.h"
#include "pipeline/error.h"
#include "pipeline/pprof.h"
#include "pipeline/pprofwire.h"
#include "pipeline/profiletype.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static const char *const sp__reason_names[SP_PYRO_DROP_REASONS] = {
    "invalid_name",  "name_too_long", "value_too_long",
    "invalid_value", "duplicate",     "too_many_labels",
};

const char *sp_pyroscope_drop_reason_name(sp_pyroscope_drop_reason_t r) {
  return (unsigned)r < SP_PYRO_DROP_REASONS ? sp__reason_names[r] : "unknown";
}

static bool sp__name_char(unsigned char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
}

size_t sp_pyroscope_label_name(const char *name, char *out, size_t cap) {
  size_t n = name != NULL ? strlen(name) : 0;
  if (n == 0) return 0;
  bool lead = name[0] >= '0' && name[0] <= '9';
  if (n + lead + 1 > cap) return 0;
  size_t o = 0;
  if (lead) out[o++] = '_';
  for (size_t i = 0; i < n; i++)
    out[o++] = sp__name_char((unsigned char)name[i]) ? name[i] : '_';
  out[o] = '\0';
  return o;
}

/* True when Pyroscope accepts @p name as it is or only rewrites its dots. */
static bool sp__pyroscope_accepts(const char *name) {
  if (name[0] == '\0' || (name[0] >= '0' && name[0] <= '9')) return false;
  for (const char *c = name; *c; c++)
    if (!sp__name_char((unsigned char)*c) && *c != '.') return false;
  return true;
}

/* Length of the valid UTF-8 prefix of @p s (n bytes), at most n. */
static size_t sp__utf8_valid_prefix(const unsigned char *s, size_t n) {
  size_t i = 0;
  while (i < n) {
    unsigned char c = s[i];
    size_t len;
    uint32_t cp;
    if (c < 0x80) {
      i++;
      continue;
    } else if (c >= 0xc2 && c <= 0xdf) {
      len = 2;
      cp = c & 0x1f;
    } else if (c >= 0xe0 && c <= 0xef) {
      len = 3;
      cp = c & 0x0f;
    } else if (c >= 0xf0 && c <= 0xf4) {
      len = 4;
      cp = c & 0x07;
    } else {
      return i;
    }
    if (i + len > n) return i;
    for (size_t k = 1; k < len; k++) {
      if ((s[i + k] & 0xc0) != 0x80) return i;
      cp = (cp << 6) | (s[i + k] & 0x3f);
    }
    if ((len == 3 && (cp < 0x800 || (cp >= 0xd800 && cp <= 0xdfff))) ||
        (len == 4 && (cp < 0x10000 || cp > 0x10ffff)))
      return i;
    i += len;
  }
  return i;
}

static bool sp__utf8_ok(const char *s) {
  size_t n = strlen(s);
  return sp__utf8_valid_prefix((const unsigned char *)s, n) == n;
}

/*
 * A required label's value made acceptable: invalid UTF-8 bytes become '_'
 * and the text is cut to @p max bytes on a character boundary. Returns @p v
 * itself when it is fine, else a copy in @p arena (NULL on OOM).
 */
static const char *sp__repair_value(sp_arena_t *arena, const char *v, size_t max) {
  size_t n = strlen(v);
  if (n <= max && sp__utf8_ok(v)) return v;
  char *c = sp_arena_strdup(arena, v);
  if (c == NULL) return NULL;
  size_t i = 0;
  while (i < n) {
    size_t ok = sp__utf8_valid_prefix((const unsigned char *)c + i, n - i);
    i += ok;
    if (i < n) c[i++] = '_';
  }
  if (n > max) {
    size_t cut = max;
    while (cut > 0 && ((unsigned char)c[cut] & 0xc0) == 0x80)
      cut--;
    c[cut] = '\0';
  }
  return c;
}

/* ---- building one profile's labels ------------------------------------------- */

typedef struct sp__ctx_s {
  const sp_pyroscope_rules_t *rules;
  size_t max_name, max_value, max_labels;
  sp_arena_t *arena;
  sp_pyroscope_drops_t *drops;
  const char *service; /* for log lines */
  sp_label_t *v;
  size_t n, cap;
} sp__ctx_t;

static void sp__drop(sp__ctx_t *c, sp_pyroscope_drop_reason_t r, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void sp__drop(sp__ctx_t *c, sp_pyroscope_drop_reason_t r, const char *fmt, ...) {
  c->drops->n[r]++;
  if (c->drops->first[0] != '\0') return;
  char what[200];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(what, sizeof(what), fmt, ap);
  va_end(ap);
  snprintf(c->drops->first, sizeof(c->drops->first), "service \"%s\": %s", c->service, what);
}

static const sp_label_t *sp__find(const sp__ctx_t *c, const char *name) {
  for (size_t i = 0; i < c->n; i++)
    if (strcmp(c->v[i].name, name) == 0) return &c->v[i];
  return NULL;
}

/* Adds one series label under the rules above. 0 or SP_ENOMEM. */
static int sp__add(sp__ctx_t *c, const char *raw, const char *value, bool required, bool external) {
  char name[SP_PYROSCOPE_MAX_LABEL_NAME_LEN * 2 + 2];
  if (value == NULL || value[0] == '\0') return 0;
  size_t nl = sp_pyroscope_label_name(raw, name, sizeof(name));
  if (nl == 0) {
    if (raw != NULL && raw[0] != '\0')
      sp__drop(c, SP_PYRO_DROP_NAME_TOO_LONG,
               "series label name of %zu bytes is longer than "
               "max_label_name_length (%zu)",
               strlen(raw), c->max_name);
    else
      sp__drop(c, SP_PYRO_DROP_INVALID_NAME, "series label with an empty name dropped");
    return 0;
  }
  const sp_label_t *dup = sp__find(c, name);
  if (dup != NULL) {
    if (!external && strcmp(dup->value, value) != 0)
      sp__drop(c, SP_PYRO_DROP_DUPLICATE,
               "series label \"%s\" dropped: it is \"%s\" after rewriting, which is already set",
               raw, name);
    return 0;
  }
  if (nl > c->max_name) {
    sp__drop(c, SP_PYRO_DROP_NAME_TOO_LONG,
             "series label name \"%.40s...\" is longer than max_label_name_length (%zu)", name,
             c->max_name);
    return 0;
  }
  if (required) {
    value = sp__repair_value(c->arena, value, c->max_value);
    if (value == NULL) return SP_ENOMEM;
  } else if (strlen(value) > c->max_value) {
    sp__drop(c, SP_PYRO_DROP_VALUE_TOO_LONG,
             "series label \"%s\" dropped: value of %zu bytes is longer than "
             "max_label_value_length (%zu)",
             name, strlen(value), c->max_value);
    return 0;
  } else if (!sp__utf8_ok(value)) {
    sp__drop(c, SP_PYRO_DROP_INVALID_VALUE, "series label \"%s\" dropped: value is not UTF-8",
             name);
    return 0;
  }
  if (c->n == c->cap) {
    size_t cap = c->cap ? c->cap * 2 : 16;
    sp_label_t *v = sp_arena_alloc(c->arena, cap * sizeof(*v));
    if (v == NULL) return SP_ENOMEM;
    if (c->n > 0) memcpy(v, c->v, c->n * sizeof(*v));
    c->v = v;
    c->cap = cap;
  }
  char *n = sp_arena_strndup(c->arena, name, nl);
  if (n == NULL) return SP_ENOMEM;
  c->v[c->n++] = (sp_label_t){.name = n, .value = value};
  return 0;
}

/* ---- sample labels ------------------------------------------------------------ */

enum { SP__KEEP = 0, SP__DROP, SP__RENAME };

typedef struct sp__skey_s {
  int64_t idx;      /* string index of the name in the analysed profile */
  const char *name; /* as in the profile */
  char *effective;  /* the name Pyroscope will use (arena), NULL when not a series label */
  int action;
  bool long_values; /* some values are longer than max_label_value_length */
} sp__skey_t;

typedef struct sp__keys_s {
  sp__skey_t *v;
  size_t n, cap;
} sp__keys_t;

/* The entry of key @p idx, appended (with a NULL name for the caller to set) when new. */
static sp__skey_t *sp__key(sp__ctx_t *c, sp__keys_t *k, int64_t idx) {
  for (size_t i = k->n; i > 0; i--)
    if (k->v[i - 1].idx == idx) return &k->v[i - 1];
  if (k->n == k->cap) {
    size_t cap = k->cap ? k->cap * 2 : 8;
    sp__skey_t *v = sp_arena_alloc(c->arena, cap * sizeof(*v));
    if (v == NULL) return NULL;
    if (k->n > 0) memcpy(v, k->v, k->n * sizeof(*v));
    k->v = v;
    k->cap = cap;
  }
  sp__skey_t *e = &k->v[k->n++];
  *e = (sp__skey_t){.idx = idx};
  return e;
}

static bool sp__is_span_label(const char *name) {
  return strcmp(name, "span_id") == 0 || strcmp(name, "trace_id") == 0 ||
         strcmp(name, "profile_id") == 0;
}

/* Collects the string sample label names of a decoded profile into @p k. 0 or SP_ENOMEM. */
static int sp__collect_keys(sp__ctx_t *c, const sp_pprof_t *pp, sp__keys_t *k) {
  for (size_t i = 0; i < pp->n_sample; i++) {
    const sp_pprof_sample_t *s = pp->sample[i];
    for (size_t j = 0; j < s->n_label; j++) {
      const sp_pprof_label_t *l = s->label[j];
      if (l->str <= 0 || l->key <= 0)
        continue; /* numeric (or empty): Pyroscope leaves it out of the series */
      sp__skey_t *e = sp__key(c, k, l->key);
      if (e == NULL) return SP_ENOMEM;
      if (e->name == NULL) e->name = sp_pprof_str(pp, l->key);
      if (strlen(sp_pprof_str(pp, l->str)) > c->max_value) e->long_values = true;
    }
  }
  return 0;
}

/*
 * The length string @p i has in a decoded profile (protobuf-c strings end
 * at an embedded NUL); 0 when out of range, as sp_pprof_str gives "".
 */
static size_t sp__wire_strlen(const sp_pprof_wire_t *w, int64_t i) {
  size_t len;
  const char *s = sp_pprof_wire_str(w, i, &len);
  const char *nul = len > 0 ? memchr(s, '\0', len) : NULL;
  return nul != NULL ? (size_t)(nul - s) : len;
}

#define SP__STACK_LABELS 16

/*
 * Whether the index's key summary says all sp__collect_keys_wire needs:
 * it has one, and no key has a value longer than max_label_value_length
 * (else which values are long is decided per sample, as without it).
 */
static bool sp__keys_from_summary(const sp__ctx_t *c, const sp_pprof_wire_t *w) {
  if (!w->has_keys) return false;
  for (size_t i = 0; i < w->n_keys; i++)
    if (w->keys[i].max_len > c->max_value) return false;
  return true;
}

/*
 * The same from the encoded profile: per sample only integer work (label
 * keys compared with the few distinct ones seen, value lengths read from
 * the index — and only when the table has a string long enough to matter);
 * names are copied out once per distinct key. 0 or SP_ENOMEM.
 */
static int sp__collect_keys_wire(sp__ctx_t *c, const sp_pprof_wire_t *w, sp__keys_t *k) {
  bool any_long = false;
  if (sp__keys_from_summary(c, w)) {
    /* The index summarises the keys, in the order a pass over the samples meets them. */
    for (size_t i = 0; i < w->n_keys; i++) {
      sp__skey_t *e = sp__key(c, k, w->keys[i].key);
      if (e == NULL) return SP_ENOMEM;
      if (e->name == NULL) {
        size_t len;
        const char *s = sp_pprof_wire_str(w, w->keys[i].key, &len);
        e->name = sp_arena_strndup(c->arena, s, sp__wire_strlen(w, w->keys[i].key));
        if (e->name == NULL) return SP_ENOMEM;
      }
    }
    return 0;
  }
  for (size_t i = 0; i < w->n_strings && !any_long; i++)
    any_long = w->strings[i].len > c->max_value;
  sp_pw_label_t stack[SP__STACK_LABELS];
  sp_pw_label_t *heap = NULL;
  size_t heap_cap = 0;
  int64_t last_key = -1;
  sp__skey_t *last = NULL;
  int rc = 0;
  for (size_t i = 0; i < w->n_samples && rc == 0; i++) {
    const sp_pw_label_t *lb = stack;
    size_t n = sp_pprof_wire_labels(w, i, stack, SP__STACK_LABELS);
    if (n > SP__STACK_LABELS) {
      if (n > heap_cap) {
        sp_pw_label_t *h = sp_realloc(heap, n * sizeof(*h));
        if (h == NULL) {
          rc = SP_ENOMEM;
          break;
        }
        heap = h;
        heap_cap = n;
      }
      sp_pprof_wire_labels(w, i, heap, n);
      lb = heap;
    }
    for (size_t j = 0; j < n; j++) {
      if (lb[j].str <= 0 || lb[j].key <= 0) continue; /* numeric (or empty) */
      sp__skey_t *e = last;
      if (lb[j].key != last_key) {
        e = sp__key(c, k, lb[j].key);
        if (e == NULL) {
          rc = SP_ENOMEM;
          break;
        }
        if (e->name == NULL) {
          size_t len;
          const char *s = sp_pprof_wire_str(w, lb[j].key, &len);
          e->name = sp_arena_strndup(c->arena, s, sp__wire_strlen(w, lb[j].key));
          if (e->name == NULL) {
            rc = SP_ENOMEM;
            break;
          }
        }
        last_key = lb[j].key;
        last = e; /* always the latest pointer sp__key gave: valid until its next call */
      }
      if (any_long && !e->long_values && sp__wire_strlen(w, lb[j].str) > c->max_value)
        e->long_values = true;
    }
  }
  sp_free(heap);
  return rc;
}

/*
 * Decides, for each collected sample label name in @p k, what happens to
 * it (see the top of the file). *@p changes is set when the samples must
 * change. @p budget is how many names may still become series labels.
 * 0 or SP_ENOMEM.
 */
static int sp__sample_keys(sp__ctx_t *c, size_t budget, sp__keys_t *k, bool *changes) {
  size_t counted = 0;
  char name[SP_PYROSCOPE_MAX_LABEL_NAME_LEN * 2 + 2];
  for (size_t i = 0; i < k->n; i++) {
    sp__skey_t *e = &k->v[i];
    if (sp__is_span_label(e->name)) {
      e->long_values = false;
      continue;
    }
    if (strcmp(e->name, "span_name") == 0 && !c->rules->span_name_label) {
      e->action = SP__DROP; /* configured: not counted as a drop */
      *changes = true;
      continue;
    }
    if (sp__find(c, e->name) != NULL) {
      e->long_values = false; /* the series label wins; Pyroscope ignores this one */
      continue;
    }
    size_t nl = sp_pyroscope_label_name(e->name, name, sizeof(name));
    if (nl == 0 || nl > c->max_name) {
      sp__drop(c, SP_PYRO_DROP_NAME_TOO_LONG,
               "sample label name of %zu bytes removed: longer than max_label_name_length (%zu)",
               strlen(e->name), c->max_name);
      e->action = SP__DROP;
      *changes = true;
      continue;
    }
    bool clash = sp__find(c, name) != NULL;
    for (size_t j = 0; j < i && !clash; j++)
      clash = k->v[j].effective != NULL && k->v[j].action != SP__DROP &&
              strcmp(k->v[j].effective, name) == 0;
    if (clash) {
      sp__drop(c, SP_PYRO_DROP_DUPLICATE,
               "sample label \"%s\" removed: it becomes \"%s\", which is already a label", e->name,
               name);
      e->action = SP__DROP;
      *changes = true;
      continue;
    }
    if (counted >= budget) {
      sp__drop(c, SP_PYRO_DROP_TOO_MANY,
               "sample label \"%s\" removed: series labels plus sample labels exceed "
               "max_label_names_per_series (%zu)",
               e->name, c->max_labels);
      e->action = SP__DROP;
      *changes = true;
      continue;
    }
    counted++;
    e->effective = sp_arena_strndup(c->arena, name, nl);
    if (e->effective == NULL) return SP_ENOMEM;
    if (!sp__pyroscope_accepts(e->name)) {
      e->action = SP__RENAME;
      *changes = true;
    }
    if (e->long_values) {
      sp__drop(c, SP_PYRO_DROP_VALUE_TOO_LONG,
               "sample label \"%s\" removed from samples whose value is longer than "
               "max_label_value_length (%zu)",
               e->name, c->max_value);
      *changes = true;
    }
  }
  return 0;
}

/* Applies the decisions in @p k to @p pp (a private copy). 0 or SP_ENOMEM. */
static int sp__apply(sp__ctx_t *c, sp_pprof_t *pp, const sp__keys_t *k) {
  sp_pprof_edit_t e;
  int rc = 0;
  sp_pprof_edit_init(&e, c->arena, pp);
  for (size_t i = 0; i < k->n && rc == 0; i++) {
    const sp__skey_t *d = &k->v[i];
    if (d->action == SP__DROP) {
      for (size_t j = 0; j < pp->n_sample; j++)
        sp_pprof_sample_remove_label(&e, pp->sample[j], d->idx);
      continue;
    }
    if (d->long_values) {
      for (size_t j = 0; j < pp->n_sample; j++) {
        sp_pprof_label_t *l = sp_pprof_sample_label(pp->sample[j], d->idx);
        if (l != NULL && l->str > 0 && strlen(sp_pprof_str(pp, l->str)) > c->max_value)
          sp_pprof_sample_remove_label(&e, pp->sample[j], d->idx);
      }
    }
    if (d->action == SP__RENAME) {
      int64_t to = sp_pprof_intern(&e, d->effective);
      if (to < 0) {
        rc = SP_ENOMEM;
        break;
      }
      for (size_t j = 0; j < pp->n_sample; j++) {
        sp_pprof_sample_t *s = pp->sample[j];
        for (size_t m = 0; m < s->n_label; m++)
          if (s->label[m]->key == d->idx) s->label[m]->key = to;
      }
    }
  }
  sp_pprof_edit_free(&e);
  return rc;
}

/* ---- the whole profile ------------------------------------------------------- */

static const char *sp__type_name(const sp_pprof_t *pp) {
  if (pp == NULL || pp->n_sample_type == 0) return "process_cpu";
  const Perftools__Profiles__ValueType *st = pp->sample_type[0];
  const char *period = pp->period_type != NULL ? sp_pprof_str(pp, pp->period_type->type) : "";
  return sp_profile_type_name(sp_pprof_str(pp, st->type), sp_pprof_str(pp, st->unit), period);
}

/* String @p i of @p w as a C string in @p arena (as decoded: up to a NUL); NULL on OOM. */
static const char *sp__wire_cstr(sp_arena_t *arena, const sp_pprof_wire_t *w, int64_t i) {
  size_t len;
  const char *s = sp_pprof_wire_str(w, i, &len);
  return sp_arena_strndup(arena, s, sp__wire_strlen(w, i));
}

/* sp__type_name from the encoded profile. NULL on OOM. */
static const char *sp__type_name_wire(sp_arena_t *arena, const sp_pprof_wire_t *w) {
  if (w->n_sample_types == 0) return "process_cpu";
  const char *type = sp__wire_cstr(arena, w, w->sample_types[0][0]);
  const char *unit = sp__wire_cstr(arena, w, w->sample_types[0][1]);
  /* A period_type field of type 0 reads as "", like an absent one. */
  const char *period = sp__wire_cstr(arena, w, w->period_type[0]);
  if (type == NULL || unit == NULL || period == NULL) return NULL;
  return sp_profile_type_name(type, unit, period);
}

int sp_pyroscope_prepare(const sp_pyroscope_rules_t *rules, sp_profiles_t *batch, sp_profile_t *p,
                         sp_arena_t *arena, sp_pyroscope_prepared_t *out,
                         sp_pyroscope_drops_t *drops, char *err, size_t errlen) {
  sp__ctx_t c = {
      .rules = rules,
      .max_name = rules->max_name_len ? rules->max_name_len : SP_PYROSCOPE_MAX_LABEL_NAME_LEN,
      .max_value = rules->max_value_len ? rules->max_value_len : SP_PYROSCOPE_MAX_LABEL_VALUE_LEN,
      .max_labels = rules->max_labels ? rules->max_labels : SP_PYROSCOPE_MAX_LABEL_NAMES,
      .arena = arena,
      .drops = drops};
  const sp_pprof_wire_t *w = NULL; /* the encoded profile's index: read only */
  const sp_pprof_t *src = NULL;    /* or a decoding (the batch's, or ours): read only */
  sp_pprof_t *priv = NULL;         /* our own copy: ours to change */
  const uint8_t *bytes = NULL;
  size_t len = 0;
  int rc;
  memset(out, 0, sizeof(*out));
  if (err != NULL && errlen > 0) err[0] = '\0';
  if (c.max_name > SP_PYROSCOPE_MAX_LABEL_NAME_LEN * 2)
    c.max_name = SP_PYROSCOPE_MAX_LABEL_NAME_LEN * 2; /* the name buffers' size */
  if (c.max_labels < 2) c.max_labels = 2;

  /*
   * The common case reads the encoded bytes only (their index is cached in
   * the batch). Without an index (the bytes do not index, or no memory for
   * it) the profile is decoded as before, which also says what is wrong.
   */
  w = sp_profile_wire(batch, p);
  if (w == NULL) {
    src = p->pprof;
    if (src == NULL) {
      if (p->raw == NULL) return SP_EPROTO;
      rc = sp_pprof_decode(arena, p->raw, p->raw_len, &priv, err, errlen);
      if (rc != 0) return rc;
      src = priv;
    }
  }

  /* Series labels. */
  const char *service = sp_profile_label(p, "service_name");
  if (service == NULL || service[0] == '\0')
    service = rules->external_labels != NULL ? sp_strmap_get(rules->external_labels, "service_name")
                                             : NULL;
  if (service == NULL || service[0] == '\0') service = "unknown_service";
  c.service = service;
  const char *type = sp_profile_label(p, "__name__");
  if (type == NULL || type[0] == '\0') {
    type = w != NULL ? sp__type_name_wire(arena, w) : sp__type_name(src);
    if (type == NULL) return SP_ENOMEM;
  }
  if ((rc = sp__add(&c, "service_name", service, true, false)) != 0 ||
      (rc = sp__add(&c, "__name__", type, true, false)) != 0)
    return rc;
  for (size_t i = 0; i < p->n_labels; i++) {
    const char *n = p->labels[i].name;
    if (n == NULL || strcmp(n, "service_name") == 0 || strcmp(n, "__name__") == 0) continue;
    if ((rc = sp__add(&c, n, p->labels[i].value, false, false)) != 0) return rc;
  }
  const sp_strmap_t *ext = rules->external_labels;
  for (size_t i = 0; ext != NULL && i < ext->n; i++)
    if ((rc = sp__add(&c, ext->keys[i], ext->values[i], false, true)) != 0) return rc;
  while (c.n > c.max_labels) {
    c.n--;
    sp__drop(&c, SP_PYRO_DROP_TOO_MANY,
             "series label \"%s\" dropped: more than max_label_names_per_series (%zu)",
             c.v[c.n].name, c.max_labels);
  }

  /* Sample labels. */
  sp__keys_t keys = {0};
  bool changes = false;
  rc = w != NULL ? sp__collect_keys_wire(&c, w, &keys) : sp__collect_keys(&c, src, &keys);
  if (rc == 0) rc = sp__sample_keys(&c, c.max_labels - c.n, &keys, &changes);
  if (rc != 0) return rc;
  int64_t time_nanos = w != NULL ? w->time_nanos : src->time_nanos;
  bool fix_time = time_nanos == 0 && (p->time_start_ns > 0 || p->time_end_ns > 0);
  if (changes || fix_time) {
    if (priv == NULL) {
      /* The bytes the index describes, so the key indices above hold. */
      if (w != NULL) {
        bytes = w->raw;
        len = w->len;
        rc = 0;
      } else {
        rc = sp_profile_encoded(batch, p, &bytes, &len);
      }
      if (rc == 0) rc = sp_pprof_decode(arena, bytes, len, &priv, err, errlen);
      if (rc != 0) return rc;
    }
    if (changes && (rc = sp__apply(&c, priv, &keys)) != 0) return rc;
    if (fix_time) {
      priv->time_nanos = p->time_start_ns > 0 ? p->time_start_ns : p->time_end_ns;
      if (priv->duration_nanos == 0 && p->time_start_ns > 0 && p->time_end_ns > p->time_start_ns)
        priv->duration_nanos = p->time_end_ns - p->time_start_ns;
    }
    size_t n = protobuf_c_message_get_packed_size(&priv->base);
    uint8_t *buf = sp_arena_alloc(arena, n > 0 ? n : 1);
    if (buf == NULL) return SP_ENOMEM;
    out->pprof = buf;
    out->pprof_len = protobuf_c_message_pack(&priv->base, buf);
    out->modified = true;
  } else if (w != NULL) {
    /* Nothing to change: the bytes as they are, never decoded nor packed. */
    out->pprof = w->raw;
    out->pprof_len = w->len;
  } else {
    rc = sp_profile_encoded(batch, p, &bytes, &len);
    if (rc != 0) return rc;
    out->pprof = bytes;
    out->pprof_len = len;
  }
  out->labels = c.v;
  out->n_labels = c.n;
  out->service_name = c.v[0].value;
  out->profile_type = c.v[1].value;
  out->start_ns = p->time_start_ns;
  out->end_ns = p->time_end_ns;
  return 0;
}
