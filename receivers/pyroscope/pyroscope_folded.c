/*
 * pyroscope_folded.c — the legacy text formats of /ingest into pprof.
 *
 * "groups" (the default format; also called folded or collapsed stacks):
 * one line per stack, frames root first separated by ';', then a space and
 * a count — what py-spy, rbspy and the pyroscope-rs based SDKs send. Lines
 * without a space are skipped, as Pyroscope does. "lines": one stack per
 * line, each occurrence counting one sample.
 *
 * The profile type is not in the data: it comes from the app name's suffix
 * (`myapp.cpu`, `myapp.alloc_space`, ...), mapped with Pyroscope's table;
 * the suffix is then cut from the service name. For cpu and wall a sample
 * rate turns counts into nanoseconds with period 1e9/rate, as Pyroscope's
 * legacy ingestion does.
 *
 * The pprof built has one function per distinct frame name, one location
 * per function (IDs equal), and a single fake mapping (ID 1).
 */
#include "receivers/pyroscope/pyroscope.h"

#include "pipeline/alloc.h"
#include "pipeline/error.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int sp__ffail(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int sp__ffail(char *err, size_t errlen, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(err, errlen, fmt, ap);
  va_end(ap);
  return SP_EPROTO;
}

/* Pyroscope's legacy suffix table: suffix → metric, sample type, unit. */
static const struct {
  const char *suffix, *metric, *type, *unit;
} sp__suffixes[] = {
    {"cpu", "process_cpu", "samples", "count"},
    {"wall", "wall", "samples", "count"},
    {"itimer", "process_cpu", "samples", "count"},
    {"inuse_objects", "memory", "inuse_objects", "count"},
    {"inuse_space", "memory", "inuse_space", "bytes"},
    {"alloc_objects", "memory", "alloc_objects", "count"},
    {"alloc_space", "memory", "alloc_space", "bytes"},
    {"goroutines", "goroutines", "goroutines", "count"},
    {"mutex_count", "mutex", "contentions", "count"},
    {"mutex_duration", "mutex", "delay", "nanoseconds"},
    {"block_count", "block", "contentions", "count"},
    {"block_duration", "block", "delay", "nanoseconds"},
    {"lock_count", "block", "contentions", "count"},
    {"lock_duration", "block", "delay", "nanoseconds"},
    {"alloc_in_new_tlab_objects", "memory", "alloc_in_new_tlab_objects", "count"},
    {"alloc_in_new_tlab_bytes", "memory", "alloc_in_new_tlab_bytes", "bytes"},
    {"alloc_outside_tlab_objects", "memory", "alloc_outside_tlab_objects", "count"},
    {"alloc_outside_tlab_bytes", "memory", "alloc_outside_tlab_bytes", "bytes"},
    {"live", "memory", "live", "count"},
    {"exceptions", "exceptions", "samples", "count"},
    {"seconds", "wall", "samples", "count"},
    {"nanoseconds", "wall", "samples", "count"},
    {"microseconds", "wall", "samples", "count"},
    {"milliseconds", "wall", "samples", "count"},
    {"bytes", "memory", "samples", "bytes"},
};

int sp__pyro_folded_type(const char *app_name, sp_arena_t *arena, const char **app,
                         sp_pyro_folded_type_t *out, char *err, size_t errlen) {
  const char *dot = strrchr(app_name, '.');
  const char *suffix = dot != NULL ? dot + 1 : "cpu";
  *app = dot != NULL ? sp_arena_strndup(arena, app_name, (size_t)(dot - app_name)) : app_name;
  if (*app == NULL)
    return SP_ENOMEM;
  for (size_t i = 0; i < sizeof(sp__suffixes) / sizeof(sp__suffixes[0]); i++) {
    if (strcmp(sp__suffixes[i].suffix, suffix) == 0) {
      out->metric = sp__suffixes[i].metric;
      out->type = sp__suffixes[i].type;
      out->unit = sp__suffixes[i].unit;
      return 0;
    }
  }
  return sp__ffail(err, errlen,
                   "unknown profile type \"%s\" (the suffix of the app name \"%s\"); expected "
                   "e.g. .cpu, .wall, .alloc_space, .inuse_objects",
                   suffix, app_name);
}

typedef struct sp_fold_s {
  sp_arena_t *arena;
  sp_pprof_t *p;
  sp_pprof_edit_t ed;
  /* string index → function ID (0: none yet) */
  uint64_t *fn_of_str;
  size_t fn_of_str_cap;
  /* functions / locations / samples, grown in the heap then copied to the arena */
  Perftools__Profiles__Function **fns;
  Perftools__Profiles__Location **locs;
  size_t n_fns, cap_fns, cap_locs;
  sp_pprof_sample_t **samples;
  size_t n_samples, cap_samples;
  uint64_t *stack; /* scratch: location IDs of the current line, root first */
  size_t cap_stack;
} sp_fold_t;

static int sp__grow(void **arr, size_t *cap, size_t want, size_t elem) {
  if (want <= *cap)
    return 0;
  size_t n = *cap ? *cap : 64;
  while (n < want)
    n *= 2;
  void *a = sp_realloc(*arr, n * elem);
  if (a == NULL)
    return SP_ENOMEM;
  *arr = a;
  *cap = n;
  return 0;
}

/* The location ID (= function ID) for a frame name. */
static int64_t sp__frame(sp_fold_t *f, const char *name) {
  int64_t s = sp_pprof_intern(&f->ed, name);
  if (s < 0)
    return s;
  if ((size_t)s >= f->fn_of_str_cap) {
    size_t old = f->fn_of_str_cap;
    if (sp__grow((void **)&f->fn_of_str, &f->fn_of_str_cap, (size_t)s + 1, sizeof(uint64_t)) != 0)
      return SP_ENOMEM;
    memset(f->fn_of_str + old, 0, (f->fn_of_str_cap - old) * sizeof(uint64_t));
  }
  if (f->fn_of_str[s] != 0)
    return (int64_t)f->fn_of_str[s];
  if (sp__grow((void **)&f->fns, &f->cap_fns, f->n_fns + 1, sizeof(void *)) != 0 ||
      sp__grow((void **)&f->locs, &f->cap_locs, f->n_fns + 1, sizeof(void *)) != 0)
    return SP_ENOMEM;
  Perftools__Profiles__Function *fn = sp_arena_alloc(f->arena, sizeof(*fn));
  Perftools__Profiles__Location *loc = sp_arena_alloc(f->arena, sizeof(*loc));
  Perftools__Profiles__Line *line = sp_arena_alloc(f->arena, sizeof(*line));
  Perftools__Profiles__Line **lines = sp_arena_alloc(f->arena, sizeof(*lines));
  if (fn == NULL || loc == NULL || line == NULL || lines == NULL)
    return SP_ENOMEM;
  uint64_t id = f->n_fns + 1;
  perftools__profiles__function__init(fn);
  fn->id = id;
  fn->name = s;
  perftools__profiles__location__init(loc);
  perftools__profiles__line__init(line);
  loc->id = id;
  loc->mapping_id = 1;
  line->function_id = id;
  lines[0] = line;
  loc->line = lines;
  loc->n_line = 1;
  f->fns[f->n_fns] = fn;
  f->locs[f->n_fns] = loc;
  f->n_fns++;
  f->fn_of_str[s] = id;
  return (int64_t)id;
}

/* Adds one sample for the stack text [s, s+n) with @p value. */
static int sp__stack(sp_fold_t *f, const char *s, size_t n, int64_t value) {
  size_t depth = 0;
  char name[4096];
  while (n > 0) {
    const char *semi = memchr(s, ';', n);
    size_t flen = semi != NULL ? (size_t)(semi - s) : n;
    if (flen > 0) {
      if (flen >= sizeof(name))
        flen = sizeof(name) - 1;
      memcpy(name, s, flen);
      name[flen] = '\0';
      int64_t id = sp__frame(f, name);
      if (id < 0)
        return (int)id;
      if (sp__grow((void **)&f->stack, &f->cap_stack, depth + 1, sizeof(uint64_t)) != 0)
        return SP_ENOMEM;
      f->stack[depth++] = (uint64_t)id;
    }
    if (semi == NULL)
      break;
    n -= (size_t)(semi - s) + 1;
    s = semi + 1;
  }
  if (depth == 0 || value == 0)
    return 0;
  if (sp__grow((void **)&f->samples, &f->cap_samples, f->n_samples + 1, sizeof(void *)) != 0)
    return SP_ENOMEM;
  sp_pprof_sample_t *smp = sp_arena_alloc(f->arena, sizeof(*smp));
  uint64_t *ids = sp_arena_alloc(f->arena, depth * sizeof(uint64_t));
  int64_t *val = sp_arena_alloc(f->arena, sizeof(int64_t));
  if (smp == NULL || ids == NULL || val == NULL)
    return SP_ENOMEM;
  perftools__profiles__sample__init(smp);
  for (size_t i = 0; i < depth; i++) /* pprof stacks are leaf first */
    ids[i] = f->stack[depth - 1 - i];
  *val = value;
  smp->location_id = ids;
  smp->n_location_id = depth;
  smp->value = val;
  smp->n_value = 1;
  f->samples[f->n_samples++] = smp;
  return 0;
}

/* Copies a heap array of @p n pointers into the arena. */
static void **sp__arena_ptrs(sp_arena_t *arena, void *const *src, size_t n) {
  if (n == 0)
    return NULL;
  void **dst = sp_arena_alloc(arena, n * sizeof(void *));
  if (dst != NULL)
    memcpy(dst, src, n * sizeof(void *));
  return dst;
}

static int sp__cmp_lines(const void *a, const void *b) {
  const char *const *x = a, *const *y = b;
  return strcmp(*x, *y);
}

/* "lines": sorts the stacks so equal ones are adjacent, then one sample per distinct stack. */
static int sp__lines(sp_fold_t *f, const char *text, size_t len, int64_t scale) {
  size_t n = 0, cap = 0;
  char **lines = NULL;
  int rc = 0;
  const char *p = text, *end = text + len;
  while (p < end && rc == 0) {
    const char *eol = memchr(p, '\n', (size_t)(end - p));
    size_t l = eol != NULL ? (size_t)(eol - p) : (size_t)(end - p);
    if (l > 0 && p[l - 1] == '\r')
      l--;
    if (l > 0) {
      if ((rc = sp__grow((void **)&lines, &cap, n + 1, sizeof(char *))) == 0) {
        lines[n] = sp_arena_strndup(f->arena, p, l);
        rc = lines[n] != NULL ? 0 : SP_ENOMEM;
        n++;
      }
    }
    p = eol != NULL ? eol + 1 : end;
  }
  if (rc == 0 && n > 0)
    qsort(lines, n, sizeof(char *), sp__cmp_lines);
  for (size_t i = 0; i < n && rc == 0;) {
    size_t j = i;
    while (j < n && strcmp(lines[j], lines[i]) == 0)
      j++;
    rc = sp__stack(f, lines[i], strlen(lines[i]), (int64_t)(j - i) * scale);
    i = j;
  }
  sp_free(lines);
  return rc;
}

static int sp__groups(sp_fold_t *f, const char *text, size_t len, int64_t scale, char *err,
                      size_t errlen) {
  const char *p = text, *end = text + len;
  size_t lineno = 0;
  while (p < end) {
    lineno++;
    const char *eol = memchr(p, '\n', (size_t)(end - p));
    size_t l = eol != NULL ? (size_t)(eol - p) : (size_t)(end - p);
    const char *line = p;
    p = eol != NULL ? eol + 1 : end;
    if (l > 0 && line[l - 1] == '\r')
      l--;
    const char *sp = NULL;
    for (size_t i = l; i > 0; i--) {
      if (line[i - 1] == ' ') {
        sp = line + i - 1;
        break;
      }
    }
    if (sp == NULL)
      continue; /* no count: skipped, as Pyroscope does */
    const char *num = sp + 1;
    size_t nlen = (size_t)(line + l - num);
    char buf[32];
    if (nlen == 0 || nlen >= sizeof(buf))
      return sp__ffail(err, errlen, "line %zu: \"%.*s\" is not a sample count", lineno,
                       (int)(nlen > 40 ? 40 : nlen), num);
    memcpy(buf, num, nlen);
    buf[nlen] = '\0';
    char *endp;
    errno = 0;
    long long v = strtoll(buf, &endp, 10);
    if (*endp != '\0' || v < 0 || buf[0] == '+' || buf[0] == ' ')
      return sp__ffail(err, errlen, "line %zu: \"%s\" is not a sample count", lineno, buf);
    /* strtoll saturates out-of-range input at LLONG_MAX (ERANGE): refuse it. */
    if (errno == ERANGE || (scale > 1 && v > INT64_MAX / scale))
      return sp__ffail(err, errlen, "line %zu: sample count %s too large", lineno, buf);
    int rc = sp__stack(f, line, (size_t)(sp - line), (int64_t)v * scale);
    if (rc != 0)
      return rc;
  }
  return 0;
}

int sp__pyro_folded_to_pprof(sp_arena_t *arena, const uint8_t *text, size_t len, bool lines,
                             const sp_pyro_folded_type_t *type, uint32_t sample_rate,
                             int64_t start_ns, int64_t end_ns, sp_pprof_t **out, char *err,
                             size_t errlen) {
  sp_fold_t f;
  memset(&f, 0, sizeof(f));
  f.arena = arena;
  int rc = SP_ENOMEM;
  f.p = sp_pprof_new(arena);
  if (f.p == NULL)
    goto done;
  sp_pprof_edit_init(&f.ed, arena, f.p);
  sp_pprof_t *p = f.p;
  const char *st_type = type->type, *st_unit = type->unit;
  int64_t scale = 1;
  bool timed = strcmp(type->metric, "process_cpu") == 0 || strcmp(type->metric, "wall") == 0;
  Perftools__Profiles__ValueType *st = sp_arena_alloc(arena, sizeof(*st));
  Perftools__Profiles__ValueType **sts = sp_arena_alloc(arena, sizeof(*sts));
  Perftools__Profiles__Mapping *map = sp_arena_alloc(arena, sizeof(*map));
  Perftools__Profiles__Mapping **maps = sp_arena_alloc(arena, sizeof(*maps));
  if (st == NULL || sts == NULL || map == NULL || maps == NULL)
    goto done;
  perftools__profiles__value_type__init(st);
  perftools__profiles__mapping__init(map);
  map->id = 1;
  maps[0] = map;
  p->mapping = maps;
  p->n_mapping = 1;
  if (timed && sample_rate != 0) {
    scale = 1000000000LL / sample_rate;
    if (scale < 1)
      scale = 1;
    st_type = strcmp(type->metric, "wall") == 0 ? "wall" : "cpu";
    st_unit = "nanoseconds";
    Perftools__Profiles__ValueType *pt = sp_arena_alloc(arena, sizeof(*pt));
    if (pt == NULL)
      goto done;
    perftools__profiles__value_type__init(pt);
    int64_t a = sp_pprof_intern(&f.ed, "cpu"), b = sp_pprof_intern(&f.ed, "nanoseconds");
    if (a < 0 || b < 0)
      goto done;
    pt->type = a;
    pt->unit = b;
    p->period_type = pt;
    p->period = scale;
  }
  int64_t a = sp_pprof_intern(&f.ed, st_type), b = sp_pprof_intern(&f.ed, st_unit);
  if (a < 0 || b < 0)
    goto done;
  st->type = a;
  st->unit = b;
  sts[0] = st;
  p->sample_type = sts;
  p->n_sample_type = 1;
  p->time_nanos = start_ns;
  p->duration_nanos = end_ns > start_ns ? end_ns - start_ns : 0;
  if (lines)
    rc = sp__lines(&f, (const char *)text, len, scale);
  else
    rc = sp__groups(&f, (const char *)text, len, scale, err, errlen);
  if (rc != 0)
    goto done;
  rc = SP_ENOMEM;
  p->function = (Perftools__Profiles__Function **)sp__arena_ptrs(arena, (void *const *)f.fns,
                                                                 f.n_fns);
  p->location = (Perftools__Profiles__Location **)sp__arena_ptrs(arena, (void *const *)f.locs,
                                                                 f.n_fns);
  p->sample = (sp_pprof_sample_t **)sp__arena_ptrs(arena, (void *const *)f.samples,
                                                   f.n_samples);
  if ((f.n_fns > 0 && (p->function == NULL || p->location == NULL)) ||
      (f.n_samples > 0 && p->sample == NULL))
    goto done;
  p->n_function = p->n_location = f.n_fns;
  p->n_sample = f.n_samples;
  *out = p;
  rc = 0;
done:
  if (rc == SP_ENOMEM)
    snprintf(err, errlen, "out of memory");
  sp_pprof_edit_free(&f.ed);
  sp_free(f.fn_of_str);
  sp_free(f.fns);
  sp_free(f.locs);
  sp_free(f.samples);
  sp_free(f.stack);
  return rc;
}
