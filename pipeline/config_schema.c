/*
 * config_schema.c — schema-driven decoding of config nodes into structs, and
 * the shared TLS schemas.
 *
 * A component describes its settings once, as a table of sp_cfg_field_t,
 * and sp_cfg_decode() does the rest: type checks, parsing, limits, defaults,
 * unknown and missing keys, nested sections and lists of sections, then the
 * schema's own cross-field check. It never stops at the first problem; every
 * one is added as `file:line:col: path: message`, because a user fixing a
 * config wants the whole list, not one line per restart.
 *
 * Order of the reports follows the document: a section's keys are decoded
 * in the order they were written (unknown keys reported where they stand),
 * then absent fields get their defaults or a "missing required key" line.
 * A section's validate hook runs only when its fields decoded cleanly, so it
 * can trust them and a user does not get a follow-on error for a typo.
 *
 * Defaults are YAML text decoded by the same code as user input: scalar
 * defaults as a plain scalar, STRLIST/STRMAP defaults parsed by libyaml (so
 * "[grpc, http]" works). A default that does not decode is a bug in the
 * schema, caught by an assert; release builds still report it as an error.
 *
 * Everything stored into a config struct is sp_malloc'd and owned by the
 * struct; sp_cfg_free() releases it and leaves the members zeroed.
 */
#include "pipeline/config.h"

#include "pipeline/alloc.h"
#include "pipeline/buf.h"
#include "pipeline/error.h"
#include "pipeline/tls.h"

#include <assert.h>
#include <ctype.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

/* Bounds at or past this magnitude mean "no bound" in messages. */
#define UNBOUNDED 9.2e18

/* ---- small helpers -------------------------------------------------------- */

/* Adds an error; returns SP_ECONFIG, or SP_ENOMEM when the line was lost. */
static int report(sp_errors_t *errs, const sp_mark_t *mark, const char *path, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int report(sp_errors_t *errs, const sp_mark_t *mark, const char *path, const char *fmt,
                  ...) {
  size_t before = errs->n;
  va_list ap;
  va_start(ap, fmt);
  sp_errors_vadd(errs, mark, path, fmt, ap);
  va_end(ap);
  return errs->n > before ? SP_ECONFIG : SP_ENOMEM;
}

/* Combines two results: SP_ENOMEM wins, then any error, then 0. */
static int worst(int a, int b) {
  if (a == SP_ENOMEM || b == SP_ENOMEM) return SP_ENOMEM;
  return a ? a : b;
}

/* "path::key" ("key" at the root); sp_malloc'd, NULL on OOM. */
static char *join_key(const char *path, const char *key) {
  return path && *path ? sp_sprintf("%s::%s", path, key) : sp_strdup(key);
}

static char *join_index(const char *path, size_t i) { return sp_sprintf("%s[%zu]", path, i); }

/* "expected <what>, got a list" — or got "text" for a scalar. */
static int wrong_kind(sp_errors_t *errs, const sp_node_t *node, const char *path,
                      const char *what) {
  if (node->kind == SP_NODE_SCALAR)
    return report(errs, &node->mark, path, "expected %s, got \"%s\"", what, node->scalar);
  return report(errs, &node->mark, path, "expected %s, got %s", what, sp_node_kind_name(node));
}

/* "a, b, c" from a NULL-terminated list of names; sp_malloc'd, NULL on OOM. */
static char *join_names(const char *const *names, size_t n_max) {
  sp_buf_t b;
  sp_buf_init(&b, 0);
  int rc = sp_buf_reserve(&b, 0);
  for (size_t i = 0; rc == 0 && i < n_max && names[i]; i++)
    rc = sp_buf_printf(&b, "%s%s", i ? ", " : "", names[i]);
  if (rc) {
    sp_buf_free(&b);
    return NULL;
  }
  sp_buf_cstr(&b);
  size_t len;
  return (char *)sp_buf_steal(&b, &len);
}

static void format_duration(uint64_t ms, char *buf, size_t n) {
  if (ms && ms % 3600000 == 0)
    snprintf(buf, n, "%" PRIu64 "h", ms / 3600000);
  else if (ms && ms % 60000 == 0)
    snprintf(buf, n, "%" PRIu64 "m", ms / 60000);
  else if (ms && ms % 1000 == 0)
    snprintf(buf, n, "%" PRIu64 "s", ms / 1000);
  else
    snprintf(buf, n, "%" PRIu64 "ms", ms);
}

static void format_size(uint64_t b, char *buf, size_t n) {
  if (b && b % (1ull << 30) == 0)
    snprintf(buf, n, "%" PRIu64 "GiB", b >> 30);
  else if (b && b % (1ull << 20) == 0)
    snprintf(buf, n, "%" PRIu64 "MiB", b >> 20);
  else if (b && b % (1ull << 10) == 0)
    snprintf(buf, n, "%" PRIu64 "KiB", b >> 10);
  else
    snprintf(buf, n, "%" PRIu64, b);
}

/* A bound written the way a user would write a value of the field's type. */
static void format_bound(const sp_cfg_field_t *f, double v, char *buf, size_t n) {
  if (f->type == SP_CFG_DURATION)
    format_duration((uint64_t)v, buf, n);
  else if (f->type == SP_CFG_SIZE)
    format_size((uint64_t)v, buf, n);
  else
    snprintf(buf, n, "%.15g", v);
}

/* Checks f->min..f->max (when min < max) and reports with the user's text. */
static int check_range(const sp_cfg_field_t *f, double v, const sp_node_t *node, const char *path,
                       sp_errors_t *errs) {
  if (!(f->min < f->max) || (v >= f->min && v <= f->max)) return 0;
  char lo[48], hi[48];
  format_bound(f, f->min, lo, sizeof(lo));
  format_bound(f, f->max, hi, sizeof(hi));
  if (f->max >= UNBOUNDED)
    return report(errs, &node->mark, path, "must be at least %s, got %s", lo, node->scalar);
  if (f->min <= -UNBOUNDED)
    return report(errs, &node->mark, path, "must be at most %s, got %s", hi, node->scalar);
  return report(errs, &node->mark, path, "must be between %s and %s, got %s", lo, hi, node->scalar);
}

/* Levenshtein distance, case-insensitive; SIZE_MAX for very long words. */
static size_t edit_distance(const char *a, const char *b) {
  size_t la = strlen(a), lb = strlen(b);
  size_t row[64];
  if (la >= 64 || lb >= 64) return SIZE_MAX;
  for (size_t j = 0; j <= lb; j++)
    row[j] = j;
  for (size_t i = 1; i <= la; i++) {
    size_t diag = row[0];
    row[0] = i;
    for (size_t j = 1; j <= lb; j++) {
      size_t up = row[j];
      size_t cost = tolower((unsigned char)a[i - 1]) != tolower((unsigned char)b[j - 1]);
      size_t best = diag + cost;
      if (up + 1 < best) best = up + 1;
      if (row[j - 1] + 1 < best) best = row[j - 1] + 1;
      row[j] = best;
      diag = up;
    }
  }
  return row[lb];
}

static const sp_cfg_field_t *find_field(const sp_cfg_schema_t *schema, const char *key) {
  for (size_t i = 0; i < schema->n_fields; i++)
    if (!strcmp(schema->fields[i].key, key)) return &schema->fields[i];
  return NULL;
}

/* `unknown key "endpont" (known: endpoint, tls); did you mean "endpoint"?` */
static int unknown_key(const sp_cfg_schema_t *schema, const char *key, const sp_mark_t *mark,
                       const char *path, sp_errors_t *errs) {
  sp_buf_t known;
  sp_buf_init(&known, 0);
  int rc = sp_buf_reserve(&known, 0);
  const char *best = NULL;
  size_t best_d = SIZE_MAX;
  for (size_t i = 0; rc == 0 && i < schema->n_fields; i++) {
    const char *name = schema->fields[i].key;
    rc = sp_buf_printf(&known, "%s%s", i ? ", " : "", name);
    size_t d = edit_distance(key, name);
    if (d < best_d) best_d = d, best = name;
  }
  if (rc) {
    sp_buf_free(&known);
    return SP_ENOMEM;
  }
  /* Only suggest what is plausibly a typo, not any short word. */
  bool suggest = best && best_d <= 2 && best_d < strlen(key);
  if (schema->n_fields == 0)
    rc = report(errs, mark, path, "unknown key \"%s\" (this section takes no keys)", key);
  else if (suggest)
    rc = report(errs, mark, path, "unknown key \"%s\" (known: %s); did you mean \"%s\"?", key,
                sp_buf_cstr(&known), best);
  else
    rc = report(errs, mark, path, "unknown key \"%s\" (known: %s)", key, sp_buf_cstr(&known));
  sp_buf_free(&known);
  return rc;
}

/* ---- decoding ------------------------------------------------------------- */

static int decode_section(const sp_cfg_schema_t *schema, const sp_node_t *node, const char *path,
                          const sp_mark_t *parent_mark, void *out, sp_errors_t *errs,
                          bool optional);

/* BOOL, INT, DOUBLE, STRING, DURATION, SIZE, ENUM from a scalar node. */
static int decode_scalar(const sp_cfg_field_t *f, const sp_node_t *v, const char *path, void *dst,
                         sp_errors_t *errs) {
  const char *s = v->scalar;
  switch (f->type) {
  case SP_CFG_BOOL: {
    bool b;
    if (sp_parse_bool(s, &b))
      return report(errs, &v->mark, path, "expected true or false, got \"%s\"", s);
    *(bool *)dst = b;
    return 0;
  }
  case SP_CFG_INT: {
    int64_t i;
    if (sp_parse_int(s, &i))
      return report(errs, &v->mark, path, "expected an integer, got \"%s\"", s);
    *(int64_t *)dst = i;
    return check_range(f, (double)i, v, path, errs);
  }
  case SP_CFG_DOUBLE: {
    double d;
    if (sp_parse_double(s, &d))
      return report(errs, &v->mark, path, "expected a number, got \"%s\"", s);
    *(double *)dst = d;
    return check_range(f, d, v, path, errs);
  }
  case SP_CFG_STRING: {
    if ((f->flags & SP_CFG_NONEMPTY) && !*s)
      return report(errs, &v->mark, path, "must not be empty");
    char *copy = sp_strdup(s);
    if (!copy) return SP_ENOMEM;
    sp_free(*(char **)dst);
    *(char **)dst = copy;
    return 0;
  }
  case SP_CFG_DURATION: {
    uint64_t ms;
    if (sp_parse_duration_ms(s, &ms))
      return report(errs, &v->mark, path, "expected a duration like 200ms, 5s or 1m, got \"%s\"",
                    s);
    *(uint64_t *)dst = ms;
    return check_range(f, (double)ms, v, path, errs);
  }
  case SP_CFG_SIZE: {
    uint64_t bytes;
    if (sp_parse_size(s, &bytes))
      return report(errs, &v->mark, path, "expected a size like 512KiB, 4MiB or 1GiB, got \"%s\"",
                    s);
    *(uint64_t *)dst = bytes;
    return check_range(f, (double)bytes, v, path, errs);
  }
  case SP_CFG_ENUM: {
    assert(f->enum_values && "SP_CFG_ENUM needs enum_values");
    int found = -1;
    for (int i = 0; found < 0 && f->enum_values[i]; i++)
      if (!strcmp(s, f->enum_values[i])) found = i;
    for (int i = 0; found < 0 && f->enum_values[i]; i++)
      if (!strcasecmp(s, f->enum_values[i])) found = i;
    if (found >= 0) {
      *(int *)dst = found;
      return 0;
    }
    char *names = join_names(f->enum_values, SIZE_MAX);
    if (!names) return SP_ENOMEM;
    int rc = report(errs, &v->mark, path, "expected one of %s, got \"%s\"", names, s);
    sp_free(names);
    return rc;
  }
  default: assert(!"not a scalar type"); return SP_EINVAL;
  }
}

static int decode_strlist(const sp_cfg_field_t *f, const sp_node_t *v, const char *path,
                          sp_strlist_t *l, sp_errors_t *errs) {
  int rc = 0;
  if (v->kind == SP_NODE_SCALAR) {
    /* `receivers: otlp` is read as `receivers: [otlp]`. */
    if (!(l->items = sp_calloc(1, sizeof(*l->items)))) return SP_ENOMEM;
    if (!(l->items[0] = sp_strdup(v->scalar))) return SP_ENOMEM;
    l->n = 1;
  } else if (v->kind == SP_NODE_SEQ) {
    if (!(l->items = sp_calloc(v->n, sizeof(*l->items)))) return SP_ENOMEM;
    for (size_t i = 0; i < v->n; i++) {
      const sp_node_t *it = v->items[i];
      if (it->kind != SP_NODE_SCALAR) {
        char *ipath = join_index(path, i);
        if (!ipath) return SP_ENOMEM;
        rc = worst(rc, wrong_kind(errs, it, ipath, "a string"));
        sp_free(ipath);
        if (rc == SP_ENOMEM) return rc;
        continue;
      }
      if (!(l->items[l->n] = sp_strdup(it->scalar))) return SP_ENOMEM;
      l->n++;
    }
  } else {
    return wrong_kind(errs, v, path, "a list of strings");
  }
  if (rc == 0 && (f->flags & SP_CFG_NONEMPTY) && l->n == 0)
    rc = report(errs, &v->mark, path, "must not be empty");
  return rc;
}

static int decode_strmap(const sp_cfg_field_t *f, const sp_node_t *v, const char *path,
                         sp_strmap_t *m, sp_errors_t *errs) {
  int rc = 0;
  if (v->kind != SP_NODE_MAP) return wrong_kind(errs, v, path, "a map of strings");
  m->keys = sp_calloc(v->n, sizeof(*m->keys));
  m->values = sp_calloc(v->n, sizeof(*m->values));
  if (!m->keys || !m->values) return SP_ENOMEM;
  for (size_t i = 0; i < v->n; i++) {
    const sp_node_t *it = v->items[i];
    if (it->kind != SP_NODE_SCALAR && it->kind != SP_NODE_NULL) {
      char *kpath = join_key(path, v->keys[i]);
      if (!kpath) return SP_ENOMEM;
      rc = worst(rc, wrong_kind(errs, it, kpath, "a string"));
      sp_free(kpath);
      if (rc == SP_ENOMEM) return rc;
      continue;
    }
    /* `X-Empty:` (null) is an empty value, as a header would be. */
    char *key = sp_strdup(v->keys[i]);
    char *val = sp_strdup(it->kind == SP_NODE_SCALAR ? it->scalar : "");
    if (!key || !val) {
      sp_free(key);
      sp_free(val);
      return SP_ENOMEM;
    }
    m->keys[m->n] = key;
    m->values[m->n] = val;
    m->n++;
  }
  if (rc == 0 && (f->flags & SP_CFG_NONEMPTY) && m->n == 0)
    rc = report(errs, &v->mark, path, "must not be empty");
  return rc;
}

static int decode_list(const sp_cfg_field_t *f, const sp_node_t *v, const char *path,
                       sp_cfg_list_t *l, sp_errors_t *errs) {
  int rc = 0;
  assert(f->section && "SP_CFG_LIST needs a section schema");
  if (v->kind != SP_NODE_SEQ) return wrong_kind(errs, v, path, "a list");
  if (v->n) {
    /* Zeroed and counted before decoding, so sp_cfg_free can release a
     * list whose decoding stopped half-way. */
    if (!(l->items = sp_calloc(v->n, f->section->size))) return SP_ENOMEM;
    l->n = v->n;
  }
  for (size_t i = 0; i < v->n; i++) {
    char *ipath = join_index(path, i);
    if (!ipath) return SP_ENOMEM;
    void *item = (char *)l->items + i * f->section->size;
    rc = worst(
        rc, decode_section(f->section, v->items[i], ipath, &v->items[i]->mark, item, errs, false));
    sp_free(ipath);
    if (rc == SP_ENOMEM) return rc;
  }
  if (rc == 0 && (f->flags & SP_CFG_NONEMPTY) && l->n == 0)
    rc = report(errs, &v->mark, path, "must not be empty");
  return rc;
}

/* Decodes a present, non-null value @p v for field @p f into @p dst. */
static int decode_value(const sp_cfg_field_t *f, const sp_node_t *v, const char *path, void *dst,
                        sp_errors_t *errs) {
  switch (f->type) {
  case SP_CFG_STRLIST: return decode_strlist(f, v, path, dst, errs);
  case SP_CFG_STRMAP: return decode_strmap(f, v, path, dst, errs);
  case SP_CFG_LIST: return decode_list(f, v, path, dst, errs);
  case SP_CFG_SECTION: return decode_section(f->section, v, path, &v->mark, dst, errs, false);
  case SP_CFG_ENUM:
    if (v->kind != SP_NODE_SCALAR) {
      char *names = join_names(f->enum_values, SIZE_MAX);
      if (!names) return SP_ENOMEM;
      char what[512];
      snprintf(what, sizeof(what), "one of %s", names);
      sp_free(names);
      return wrong_kind(errs, v, path, what);
    }
    return decode_scalar(f, v, path, dst, errs);
  default: break;
  }
  if (v->kind != SP_NODE_SCALAR) {
    static const char *const nouns[] = {
        [SP_CFG_BOOL] = "true or false",  [SP_CFG_INT] = "an integer",
        [SP_CFG_DOUBLE] = "a number",     [SP_CFG_STRING] = "a string",
        [SP_CFG_DURATION] = "a duration", [SP_CFG_SIZE] = "a size",
    };
    return wrong_kind(errs, v, path, nouns[f->type]);
  }
  return decode_scalar(f, v, path, dst, errs);
}

/* Applies f->def (if any) to @p dst, through the same decoding as input. */
static int apply_default(const sp_cfg_field_t *f, const char *path, void *dst, sp_errors_t *errs) {
  int rc;
  if (!f->def) return 0;
  assert(f->type != SP_CFG_SECTION && f->type != SP_CFG_LIST && "sections take no default");
  if (f->type == SP_CFG_STRLIST || f->type == SP_CFG_STRMAP) {
    sp_arena_t *arena = sp_arena_create(512);
    const sp_node_t *node = NULL;
    if (!arena) return SP_ENOMEM;
    rc = sp__config_parse_value(arena, f->def, &node, errs);
    if (rc == 0 && node->kind != SP_NODE_NULL) rc = decode_value(f, node, path, dst, errs);
    sp_arena_destroy(arena);
  } else {
    sp_node_t node = {.kind = SP_NODE_SCALAR, .scalar = f->def};
    rc = decode_value(f, &node, path, dst, errs);
  }
  /* A default that its own parser refuses is a bug in the schema table. */
  assert(rc != SP_ECONFIG && "schema default does not decode");
  return rc;
}

/* A key present in the section's map (its value may be null). */
static int decode_field(const sp_cfg_field_t *f, const sp_node_t *v, const char *path, void *base,
                        sp_errors_t *errs) {
  void *dst = (char *)base + f->offset;
  char *fpath = join_key(path, f->key);
  int rc;
  if (!fpath) return SP_ENOMEM;
  if (f->type == SP_CFG_SECTION) {
    /* `tls:` alone means "present, with defaults". */
    if (f->flags & SP_CFG_PRESENT) *(bool *)((char *)dst + f->present_offset) = true;
    rc = decode_section(f->section, v, fpath, &v->mark, dst, errs, false);
  } else if (v->kind == SP_NODE_NULL) {
    /* `key:` or `key: ${UNSET}`: as if absent, but a required key must say
     * something. */
    if (f->flags & SP_CFG_REQUIRED)
      rc = report(errs, &v->mark, path, "missing value for required key \"%s\"", f->key);
    else
      rc = apply_default(f, fpath, dst, errs);
  } else {
    rc = decode_value(f, v, fpath, dst, errs);
  }
  sp_free(fpath);
  return rc;
}

/* A key absent from the section (or the whole section absent). */
static int decode_absent(const sp_cfg_field_t *f, const char *path, const sp_mark_t *mark,
                         void *base, sp_errors_t *errs, bool optional) {
  void *dst = (char *)base + f->offset;
  if ((f->flags & SP_CFG_REQUIRED) && !optional)
    return report(errs, mark, path, "missing required key \"%s\"", f->key);
  char *fpath = join_key(path, f->key);
  if (!fpath) return SP_ENOMEM;
  int rc;
  if (f->type == SP_CFG_SECTION)
    /* Nested defaults still apply; a section with a presence flag is
     * optional as a whole, so its required keys are only required when it
     * is given. */
    rc = decode_section(f->section, NULL, fpath, mark, dst, errs,
                        optional || (f->flags & SP_CFG_PRESENT));
  else
    rc = apply_default(f, fpath, dst, errs);
  sp_free(fpath);
  return rc;
}

/*
 * Decodes one section. @p optional: the section is absent and optional, so
 * missing required keys inside it are not errors.
 */
static int decode_section(const sp_cfg_schema_t *schema, const sp_node_t *node, const char *path,
                          const sp_mark_t *parent_mark, void *out, sp_errors_t *errs,
                          bool optional) {
  size_t before = errs->n;
  const sp_node_t *map = NULL;
  const sp_mark_t *mark = node ? &node->mark : parent_mark;
  int rc = 0;

  assert(schema && "SP_CFG_SECTION needs a section schema");
  if (node && node->kind != SP_NODE_NULL) {
    if (node->kind != SP_NODE_MAP) return wrong_kind(errs, node, path, "a map");
    map = node;
  }
  for (size_t i = 0; map && i < map->n; i++) {
    const sp_cfg_field_t *f = find_field(schema, map->keys[i]);
    int r = f ? decode_field(f, map->items[i], path, out, errs)
              : unknown_key(schema, map->keys[i], &map->key_marks[i], path, errs);
    rc = worst(rc, r);
    if (rc == SP_ENOMEM) return rc;
  }
  for (size_t i = 0; i < schema->n_fields; i++) {
    const sp_cfg_field_t *f = &schema->fields[i];
    if (map && sp_node_get(map, f->key)) continue;
    rc = worst(rc, decode_absent(f, path, mark, out, errs, optional));
    if (rc == SP_ENOMEM) return rc;
  }
  if (rc == 0 && errs->n == before && schema->validate)
    rc = schema->validate(out, node, path, errs);
  if (rc == 0 && errs->n > before) rc = SP_ECONFIG;
  return rc;
}

int sp_cfg_decode(const sp_cfg_schema_t *schema, const sp_node_t *node, const char *path,
                  const sp_mark_t *parent_mark, void *out, sp_errors_t *errs) {
  return decode_section(schema, node, path ? path : "", parent_mark, out, errs, false);
}

void sp_cfg_free(const sp_cfg_schema_t *schema, void *cfg) {
  if (!schema || !cfg) return;
  for (size_t i = 0; i < schema->n_fields; i++) {
    const sp_cfg_field_t *f = &schema->fields[i];
    void *p = (char *)cfg + f->offset;
    switch (f->type) {
    case SP_CFG_STRING:
      sp_free(*(char **)p);
      *(char **)p = NULL;
      break;
    case SP_CFG_STRLIST: {
      sp_strlist_t *l = p;
      for (size_t j = 0; j < l->n; j++)
        sp_free(l->items[j]);
      sp_free(l->items);
      l->items = NULL;
      l->n = 0;
      break;
    }
    case SP_CFG_STRMAP: {
      sp_strmap_t *m = p;
      for (size_t j = 0; j < m->n; j++) {
        sp_free(m->keys[j]);
        sp_free(m->values[j]);
      }
      sp_free(m->keys);
      sp_free(m->values);
      m->keys = m->values = NULL;
      m->n = 0;
      break;
    }
    case SP_CFG_SECTION: sp_cfg_free(f->section, p); break;
    case SP_CFG_LIST: {
      sp_cfg_list_t *l = p;
      for (size_t j = 0; j < l->n; j++)
        sp_cfg_free(f->section, (char *)l->items + j * f->section->size);
      sp_free(l->items);
      l->items = NULL;
      l->n = 0;
      break;
    }
    default: break;
    }
  }
}

const char *sp_strmap_get(const sp_strmap_t *map, const char *key) {
  for (size_t i = 0; map && i < map->n; i++)
    if (!strcmp(map->keys[i], key)) return map->values[i];
  return NULL;
}

/* ---- TLS ------------------------------------------------------------------ */

static int tls_check_version(const sp_tls_config_t *t, const sp_node_t *node, const char *path,
                             sp_errors_t *errs) {
  if (!t->min_version || !strcmp(t->min_version, "1.2") || !strcmp(t->min_version, "1.3")) return 0;
  const sp_node_t *v = sp_node_get(node, "min_version");
  char *vpath = join_key(path, "min_version");
  if (!vpath) return SP_ENOMEM;
  int rc = report(errs,
                  v      ? &v->mark
                  : node ? &node->mark
                         : NULL,
                  vpath, "expected one of 1.2, 1.3, got \"%s\"", t->min_version);
  sp_free(vpath);
  return rc;
}

static int tls_server_validate(void *cfg, const sp_node_t *node, const char *path,
                               sp_errors_t *errs) {
  const sp_tls_config_t *t = cfg;
  const sp_mark_t *mark = node ? &node->mark : NULL;
  int rc = 0;
  if (!t->present) return 0;
  /* A server cannot speak TLS without its certificate and key. */
  if (!t->cert_file)
    rc = worst(rc, report(errs, mark, path,
                          "missing required key \"cert_file\" (a TLS server needs cert_file "
                          "and key_file)"));
  if (!t->key_file)
    rc = worst(rc, report(errs, mark, path,
                          "missing required key \"key_file\" (a TLS server needs cert_file "
                          "and key_file)"));
  return worst(rc, tls_check_version(t, node, path, errs));
}

static int tls_client_validate(void *cfg, const sp_node_t *node, const char *path,
                               sp_errors_t *errs) {
  const sp_tls_config_t *t = cfg;
  const sp_mark_t *mark = node ? &node->mark : NULL;
  int rc = 0;
  if (!t->present) return 0;
  /* A client certificate is optional (mTLS), but only as a pair. */
  if (!t->cert_file != !t->key_file)
    rc = report(errs, mark, path, "cert_file and key_file must be given together (%s is missing)",
                t->cert_file ? "key_file" : "cert_file");
  return worst(rc, tls_check_version(t, node, path, errs));
}

#define TLS_FIELD(name, type_, flags_, def_)                                                       \
  {                                                                                                \
    .key = #name, .type = (type_), .offset = offsetof(sp_tls_config_t, name), .flags = (flags_),   \
    .def = (def_)                                                                                  \
  }

static const sp_cfg_field_t tls_server_fields[] = {
    TLS_FIELD(cert_file, SP_CFG_STRING, SP_CFG_NONEMPTY, NULL),
    TLS_FIELD(key_file, SP_CFG_STRING, SP_CFG_NONEMPTY, NULL),
    TLS_FIELD(client_ca_file, SP_CFG_STRING, SP_CFG_NONEMPTY, NULL),
    TLS_FIELD(min_version, SP_CFG_STRING, 0, "1.2"),
};

static const sp_cfg_field_t tls_client_fields[] = {
    TLS_FIELD(insecure, SP_CFG_BOOL, 0, NULL),
    TLS_FIELD(ca_file, SP_CFG_STRING, SP_CFG_NONEMPTY, NULL),
    TLS_FIELD(cert_file, SP_CFG_STRING, SP_CFG_NONEMPTY, NULL),
    TLS_FIELD(key_file, SP_CFG_STRING, SP_CFG_NONEMPTY, NULL),
    TLS_FIELD(server_name_override, SP_CFG_STRING, SP_CFG_NONEMPTY, NULL),
    TLS_FIELD(insecure_skip_verify, SP_CFG_BOOL, 0, NULL),
    TLS_FIELD(min_version, SP_CFG_STRING, 0, "1.2"),
};

const sp_cfg_schema_t sp_tls_server_schema = {
    .fields = tls_server_fields,
    .n_fields = sizeof(tls_server_fields) / sizeof(tls_server_fields[0]),
    .size = sizeof(sp_tls_config_t),
    .validate = tls_server_validate,
};

const sp_cfg_schema_t sp_tls_client_schema = {
    .fields = tls_client_fields,
    .n_fields = sizeof(tls_client_fields) / sizeof(tls_client_fields[0]),
    .size = sizeof(sp_tls_config_t),
    .validate = tls_client_validate,
};
