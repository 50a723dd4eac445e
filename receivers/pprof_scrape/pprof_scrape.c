/*
 * pprof_scrape receiver — pulls profiles from Go programs' net/http/pprof
 * endpoints, for services that expose /debug/pprof but run no profiling SDK
 * (what Grafana Alloy's pyroscope.scrape does).
 *
 *   receivers:
 *     pprof_scrape:
 *       interval: 15s          # time between scrapes of each target
 *       timeout: 10s           # per request; the CPU profile's own duration
 *                              # is added to it
 *       delta: true            # cumulative profiles (allocs, mutex, block)
 *                              # become per-interval deltas here; false sends
 *                              # them as scraped, without __delta__="false",
 *                              # so Pyroscope computes the deltas itself
 *       max_profile_size: 16MiB  # one uncompressed profile
 *       tls: { ca_file, cert_file, key_file, insecure_skip_verify, ... }
 *       targets:
 *         - url: http://127.0.0.1:6060      # scheme, host:port, optional base path
 *           labels:                         # series labels for its profiles
 *             service_name: checkout        # default: the target's host:port
 *             env: prod
 *       profiles:                # each: enabled (default true) and path
 *         cpu:       { path: /debug/pprof/profile, seconds: 0 }  # 0: interval - 1s, at least 1
 *         memory:    { path: /debug/pprof/allocs }   # or the key `heap` / `allocs`:
 *                                                    # Go serves the same profile at both
 *         goroutine: { path: /debug/pprof/goroutine }
 *         mutex:     { path: /debug/pprof/mutex }
 *         block:     { path: /debug/pprof/block }
 *
 * Series labels of each profile: the target's labels, `service_name`
 * (derived when absent), `instance` (host:port, unless given), `__name__`
 * from the endpoint (process_cpu, memory, goroutines, mutex, block — the
 * endpoint says what a profile is, so nothing is guessed from sample types)
 * and `__delta__`="false" when the profile covers one interval. Span labels
 * that programs attach with pprof.Do are normalised on the samples as the
 * pyroscope receiver does.
 *
 * Scheduling: one timer for the receiver fires every interval and starts
 * every enabled (target, profile) scrape whose previous one has finished
 * (otherwise the tick is counted as skipped). Requests go through the libcurl
 * multi client on the loop, so a slow or dead target only occupies its own
 * requests; failures are counted per target and logged when a target starts
 * and stops failing.
 *
 * Backpressure: no sender retries a scrape, so a delta the pipeline refuses
 * retryably is not dropped: the baseline stays where it was and the next
 * scrape's delta covers the refused interval too. Refusals are counted and
 * logged as warnings (one line per 10 s at most).
 */
#include "receivers/pprof_scrape/pprof_scrape.h"

#include "pipeline/alloc.h"
#include "pipeline/component.h"
#include "pipeline/defer.h"
#include "pipeline/error.h"
#include "pipeline/log.h"
#include "pipeline/pprof.h"
#include "pipeline/tls.h"
#include "pipeline/transport/http_client.h"

#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

enum {
  SP_SCRAPE_CPU = 0,
  SP_SCRAPE_MEMORY,
  SP_SCRAPE_GOROUTINE,
  SP_SCRAPE_MUTEX,
  SP_SCRAPE_BLOCK,
  SP_SCRAPE_KINDS
};

static const char *const sp__kind_metric[SP_SCRAPE_KINDS] = {"process_cpu", "memory", "goroutines",
                                                             "mutex", "block"};
static const char *const sp__kind_name[SP_SCRAPE_KINDS] = {"cpu", "memory", "goroutine", "mutex",
                                                           "block"};

/* ---- config ------------------------------------------------------------------- */

typedef struct sp_scrape_kind_cfg_s {
  bool present;
  bool enabled;
  char *path;
  int64_t seconds; /* cpu only */
} sp_scrape_kind_cfg_t;

typedef struct sp_scrape_target_cfg_s {
  char *url;
  sp_strmap_t labels;
} sp_scrape_target_cfg_t;

typedef struct sp_scrape_profiles_cfg_s {
  sp_scrape_kind_cfg_t cpu, memory, heap, allocs, goroutine, mutex, block;
} sp_scrape_profiles_cfg_t;

typedef struct sp_scrape_cfg_s {
  sp_cfg_list_t targets;
  uint64_t interval_ms;
  uint64_t timeout_ms;
  bool delta;
  uint64_t max_profile_size;
  sp_scrape_profiles_cfg_t profiles;
  sp_tls_config_t tls;
} sp_scrape_cfg_t;

static int sp__path_validate(void *cfg, const sp_node_t *node, const char *path,
                             sp_errors_t *errs) {
  const sp_scrape_kind_cfg_t *k = cfg;
  if (k->path != NULL && k->path[0] != '/') {
    sp_errors_add(errs, node ? &node->mark : NULL, path, "path must start with /");
    return SP_ECONFIG;
  }
  return 0;
}

#define SP__KIND_FIELDS(name, def_path)                                                            \
  static const sp_cfg_field_t sp__##name##_fields[] = {                                            \
      {.key = "enabled", .type = SP_CFG_BOOL, .offset = offsetof(sp_scrape_kind_cfg_t, enabled),   \
       .def = "true"},                                                                             \
      {.key = "path", .type = SP_CFG_STRING, .offset = offsetof(sp_scrape_kind_cfg_t, path),       \
       .def = def_path, .flags = SP_CFG_NONEMPTY},                                                 \
      {.key = "seconds", .type = SP_CFG_INT, .offset = offsetof(sp_scrape_kind_cfg_t, seconds),    \
       .def = "0", .min = 0, .max = 3600},                                                         \
  };                                                                                               \
  static const sp_cfg_schema_t sp__##name##_schema = {                                             \
      sp__##name##_fields, sizeof(sp__##name##_fields) / sizeof(sp__##name##_fields[0]),           \
      sizeof(sp_scrape_kind_cfg_t), sp__path_validate}

/* Only cpu takes `seconds`: the other tables stop before it. */
SP__KIND_FIELDS(cpu, "/debug/pprof/profile");
#undef SP__KIND_FIELDS
#define SP__KIND_FIELDS(name, def_path)                                                            \
  static const sp_cfg_field_t sp__##name##_fields[] = {                                            \
      {.key = "enabled", .type = SP_CFG_BOOL, .offset = offsetof(sp_scrape_kind_cfg_t, enabled),   \
       .def = "true"},                                                                             \
      {.key = "path", .type = SP_CFG_STRING, .offset = offsetof(sp_scrape_kind_cfg_t, path),       \
       .def = def_path, .flags = SP_CFG_NONEMPTY},                                                 \
  };                                                                                               \
  static const sp_cfg_schema_t sp__##name##_schema = {                                             \
      sp__##name##_fields, 2, sizeof(sp_scrape_kind_cfg_t), sp__path_validate}
SP__KIND_FIELDS(memory, "/debug/pprof/allocs");
SP__KIND_FIELDS(heap, "/debug/pprof/heap");
SP__KIND_FIELDS(allocs, "/debug/pprof/allocs");
SP__KIND_FIELDS(goroutine, "/debug/pprof/goroutine");
SP__KIND_FIELDS(mutex, "/debug/pprof/mutex");
SP__KIND_FIELDS(block, "/debug/pprof/block");
#undef SP__KIND_FIELDS

#define SP__KIND_SECTION(name)                                                                     \
  {.key = #name, .type = SP_CFG_SECTION, .offset = offsetof(sp_scrape_profiles_cfg_t, name),       \
   .flags = SP_CFG_PRESENT, .present_offset = offsetof(sp_scrape_kind_cfg_t, present),            \
   .section = &sp__##name##_schema}

static int sp__profiles_validate(void *cfg, const sp_node_t *node, const char *path,
                                 sp_errors_t *errs) {
  const sp_scrape_profiles_cfg_t *c = cfg;
  if (c->memory.present + c->heap.present + c->allocs.present > 1) {
    sp_errors_add(errs, node ? &node->mark : NULL, path,
                  "memory, heap and allocs name the same profile: give only one of them");
    return SP_ECONFIG;
  }
  return 0;
}

static const sp_cfg_field_t sp__profiles_fields[] = {
    SP__KIND_SECTION(cpu),       SP__KIND_SECTION(memory), SP__KIND_SECTION(heap),
    SP__KIND_SECTION(allocs),    SP__KIND_SECTION(goroutine), SP__KIND_SECTION(mutex),
    SP__KIND_SECTION(block),
};
static const sp_cfg_schema_t sp__profiles_schema = {sp__profiles_fields, 7,
                                                    sizeof(sp_scrape_profiles_cfg_t),
                                                    sp__profiles_validate};

static int sp__target_validate(void *cfg, const sp_node_t *node, const char *path,
                               sp_errors_t *errs) {
  const sp_scrape_target_cfg_t *t = cfg;
  if (t->url != NULL && strncmp(t->url, "http://", 7) != 0 && strncmp(t->url, "https://", 8) != 0) {
    sp_errors_add(errs, node ? &node->mark : NULL, path,
                  "url must start with http:// or https:// (got \"%s\")", t->url);
    return SP_ECONFIG;
  }
  return 0;
}

static const sp_cfg_field_t sp__target_fields[] = {
    {.key = "url", .type = SP_CFG_STRING, .offset = offsetof(sp_scrape_target_cfg_t, url),
     .flags = SP_CFG_REQUIRED | SP_CFG_NONEMPTY},
    {.key = "labels", .type = SP_CFG_STRMAP,
     .offset = offsetof(sp_scrape_target_cfg_t, labels)},
};
static const sp_cfg_schema_t sp__target_schema = {sp__target_fields, 2,
                                                  sizeof(sp_scrape_target_cfg_t),
                                                  sp__target_validate};

static int sp__scrape_validate(void *cfg, const sp_node_t *node, const char *path,
                               sp_errors_t *errs) {
  const sp_scrape_cfg_t *c = cfg;
  if (c->targets.n == 0) {
    sp_errors_add(errs, node ? &node->mark : NULL, path, "at least one target is required");
    return SP_ECONFIG;
  }
  return 0;
}

static const sp_cfg_field_t sp__scrape_fields[] = {
    {.key = "targets", .type = SP_CFG_LIST, .offset = offsetof(sp_scrape_cfg_t, targets),
     .flags = SP_CFG_REQUIRED, .section = &sp__target_schema},
    {.key = "interval", .type = SP_CFG_DURATION, .offset = offsetof(sp_scrape_cfg_t, interval_ms),
     .def = "15s", .min = 100, .max = 24.0 * 3600 * 1000},
    {.key = "timeout", .type = SP_CFG_DURATION, .offset = offsetof(sp_scrape_cfg_t, timeout_ms),
     .def = "10s", .min = 10, .max = 3600.0 * 1000},
    {.key = "delta", .type = SP_CFG_BOOL, .offset = offsetof(sp_scrape_cfg_t, delta),
     .def = "true"},
    {.key = "max_profile_size", .type = SP_CFG_SIZE,
     .offset = offsetof(sp_scrape_cfg_t, max_profile_size), .def = "16MiB", .min = 1024,
     .max = 1024.0 * 1024 * 1024},
    {.key = "profiles", .type = SP_CFG_SECTION, .offset = offsetof(sp_scrape_cfg_t, profiles),
     .section = &sp__profiles_schema},
    {.key = "tls", .type = SP_CFG_SECTION, .offset = offsetof(sp_scrape_cfg_t, tls),
     .flags = SP_CFG_PRESENT, .present_offset = offsetof(sp_tls_config_t, present),
     .section = &sp_tls_client_schema},
};
static const sp_cfg_schema_t sp__scrape_schema = {sp__scrape_fields, 7, sizeof(sp_scrape_cfg_t),
                                                  sp__scrape_validate};

/* ---- instance ------------------------------------------------------------------- */

typedef struct sp_scrape_s sp_scrape_t;
typedef struct sp_scrape_target_s sp_scrape_target_t;

/* One (target, profile kind) pair. */
typedef struct sp_scrape_job_s {
  sp_scrape_target_t *target;
  int kind;
  bool enabled;
  char *url;
  uint64_t timeout_ms;
  bool in_flight;
  int64_t started_ns;
  sp_scrape_delta_t *prev; /* baseline of cumulative values; NULL before the first scrape */
  int64_t prev_ns;         /* when the baseline was taken (moves only once a delta is delivered) */
} sp_scrape_job_t;

struct sp_scrape_target_s {
  sp_scrape_t *owner;
  char *url;
  sp_label_t *labels; /* sp_malloc'd names and values */
  size_t n_labels;
  bool failing;
  sp_metric_t *scrapes, *failures, *skipped;
  sp_scrape_job_t jobs[SP_SCRAPE_KINDS];
};

struct sp_scrape_s {
  sp_component_t base;
  const sp_scrape_cfg_t *cfg;
  sp_consumer_t *next;
  sp_scrape_target_t *targets;
  size_t n_targets;
  sp_http_client_t *client;
  uv_timer_t timer;
  bool timer_active;
  sp_receiver_metrics_t m; /* accepted, refused, rejected profiles */
  uint64_t refusals;         /* refusals since the last refusal log line */
  uint64_t last_refusal_log; /* loop time of that line; 0: none yet */
  bool shutting;
  int pending;
  sp_done_cb cb;
  void *cb_arg;
  sp_deferral_t deferral; /* the shutdown's own count: released without allocating */
};

static int64_t sp__wall_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* "host:port" of a URL (copied), or NULL on OOM. */
static char *sp__host_port(const char *url) {
  const char *p = strstr(url, "://");
  p = p != NULL ? p + 3 : url;
  const char *at = strpbrk(p, "@/?#");
  if (at != NULL && *at == '@') /* user info */
    p = at + 1;
  size_t n = strcspn(p, "/?#");
  return sp_strndup(p, n);
}

static int sp__add_label(sp_scrape_target_t *t, const char *name, const char *value) {
  sp_label_t *l = sp_realloc(t->labels, (t->n_labels + 1) * sizeof(*l));
  if (l == NULL)
    return SP_ENOMEM;
  t->labels = l;
  l[t->n_labels].name = sp_strdup(name);
  l[t->n_labels].value = sp_strdup(value);
  if (l[t->n_labels].name == NULL || l[t->n_labels].value == NULL) {
    sp_free((char *)l[t->n_labels].name);
    sp_free((char *)l[t->n_labels].value);
    return SP_ENOMEM;
  }
  t->n_labels++;
  return 0;
}

/* Which configured section stands for a kind (memory has two aliases). */
static const sp_scrape_kind_cfg_t *sp__kind_cfg(const sp_scrape_cfg_t *c, int kind) {
  const sp_scrape_profiles_cfg_t *p = &c->profiles;
  switch (kind) {
  case SP_SCRAPE_CPU: return &p->cpu;
  case SP_SCRAPE_MEMORY: return p->heap.present ? &p->heap : p->allocs.present ? &p->allocs
                                                                               : &p->memory;
  case SP_SCRAPE_GOROUTINE: return &p->goroutine;
  case SP_SCRAPE_MUTEX: return &p->mutex;
  default: return &p->block;
  }
}

static int64_t sp__cpu_seconds(const sp_scrape_cfg_t *c) {
  if (c->profiles.cpu.seconds > 0)
    return c->profiles.cpu.seconds;
  int64_t s = (int64_t)(c->interval_ms / 1000) - 1;
  return s < 1 ? 1 : s;
}

static void sp__target_free(sp_scrape_target_t *t) {
  for (size_t i = 0; i < t->n_labels; i++) {
    sp_free((char *)t->labels[i].name);
    sp_free((char *)t->labels[i].value);
  }
  sp_free(t->labels);
  sp_free(t->url);
  for (int k = 0; k < SP_SCRAPE_KINDS; k++) {
    sp_free(t->jobs[k].url);
    sp__scrape_delta_free(t->jobs[k].prev);
  }
}

static int sp__target_init(sp_scrape_t *self, sp_scrape_target_t *t,
                           const sp_scrape_target_cfg_t *tc, const char *id, sp_telemetry_t *tel) {
  const sp_scrape_cfg_t *c = self->cfg;
  t->owner = self;
  size_t ulen = strlen(tc->url);
  while (ulen > 0 && tc->url[ulen - 1] == '/')
    ulen--;
  if ((t->url = sp_strndup(tc->url, ulen)) == NULL)
    return SP_ENOMEM;
  for (size_t i = 0; i < tc->labels.n; i++)
    if (sp__add_label(t, tc->labels.keys[i], tc->labels.values[i]) != 0)
      return SP_ENOMEM;
  char *hp = sp__host_port(t->url);
  if (hp == NULL)
    return SP_ENOMEM;
  int rc = 0;
  if (sp_strmap_get(&tc->labels, "service_name") == NULL)
    rc = sp__add_label(t, "service_name", hp);
  if (rc == 0 && sp_strmap_get(&tc->labels, "instance") == NULL)
    rc = sp__add_label(t, "instance", hp);
  sp_free(hp);
  if (rc != 0)
    return rc;
  for (int k = 0; k < SP_SCRAPE_KINDS; k++) {
    sp_scrape_job_t *j = &t->jobs[k];
    const sp_scrape_kind_cfg_t *kc = sp__kind_cfg(c, k);
    j->target = t;
    j->kind = k;
    j->enabled = kc->enabled;
    j->timeout_ms = c->timeout_ms;
    if (k == SP_SCRAPE_CPU) {
      int64_t secs = sp__cpu_seconds(c);
      j->url = sp_sprintf("%s%s%cseconds=%lld", t->url, kc->path,
                          strchr(kc->path, '?') != NULL ? '&' : '?', (long long)secs);
      j->timeout_ms += (uint64_t)secs * 1000;
    } else {
      j->url = sp_sprintf("%s%s", t->url, kc->path);
    }
    if (j->url == NULL)
      return SP_ENOMEM;
  }
  /* Prometheus label values: keep quotes and backslashes out. */
  char target[256], l[512];
  snprintf(target, sizeof(target), "%s", t->url);
  for (char *p = target; *p; p++)
    if (*p == '"' || *p == '\\' || *p == '\n')
      *p = '_';
  snprintf(l, sizeof(l), "receiver=\"%s\",target=\"%s\"", id, target);
  t->scrapes = sp_telemetry_counter(tel, "spanprof_receiver_scrapes_total",
                                    "Profile scrapes attempted, per target.", l);
  t->failures = sp_telemetry_counter(
      tel, "spanprof_receiver_scrape_failures_total",
      "Profile scrapes that failed (connection, timeout, HTTP status, invalid pprof), per target.",
      l);
  t->skipped = sp_telemetry_counter(
      tel, "spanprof_receiver_scrapes_skipped_total",
      "Scrapes not started because the previous one of the same profile was still running.", l);
  return 0;
}

/* ---- scraping ------------------------------------------------------------------- */

static void sp__scrape_failed(sp_scrape_job_t *j, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void sp__scrape_failed(sp_scrape_job_t *j, const char *fmt, ...) {
  sp_scrape_target_t *t = j->target;
  sp_metric_add(t->failures, 1);
  char msg[300];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof(msg), fmt, ap);
  va_end(ap);
  if (!t->failing)
    sp_log_warn(t->owner->base.id, "scraping %s failed: %s", j->url, msg);
  else
    sp_log_debug(t->owner->base.id, "scraping %s failed: %s", j->url, msg);
  t->failing = true;
}

static void sp__scrape_ok(sp_scrape_job_t *j) {
  if (j->target->failing)
    sp_log_info(j->target->owner->base.id, "scraping %s works again", j->target->url);
  j->target->failing = false;
}

/* Which sample types of a kind's profile count up over the process lifetime. */
static bool sp__cumulative(const sp_pprof_t *pp, int kind, size_t i) {
  if (kind == SP_SCRAPE_MUTEX || kind == SP_SCRAPE_BLOCK)
    return true;
  if (kind == SP_SCRAPE_MEMORY)
    return strncmp(sp_pprof_str(pp, pp->sample_type[i]->type), "alloc_", 6) == 0;
  return false;
}

/*
 * The pipeline did not take a profile: a warning, at most one every 10 s
 * with the count since the last one (a full pipeline refuses every scrape).
 */
static void sp__refused(sp_scrape_job_t *j, int rc, bool kept) {
  sp_scrape_t *self = j->target->owner;
  self->refusals++;
  uint64_t now = uv_now(self->base.host->loop);
  if (self->last_refusal_log != 0 && now - self->last_refusal_log < 10000)
    return;
  sp_log_warn(self->base.id,
              "the pipeline refused a %s profile of %s: %s%s; %llu refusal(s) since the last "
              "report",
              sp__kind_name[j->kind], j->target->url, sp_strerror(rc),
              kept ? " (the next delta covers this interval too)" : "",
              (unsigned long long)self->refusals);
  self->last_refusal_log = now == 0 ? 1 : now;
  self->refusals = 0;
}

/* The scrape's values become the baseline the next delta is taken from. */
static void sp__commit_baseline(sp_scrape_job_t *j, sp_scrape_delta_t **next, int64_t now) {
  sp__scrape_delta_free(j->prev);
  j->prev = *next;
  j->prev_ns = now;
  *next = NULL;
}

/* Turns one response into a profile for the pipeline. */
static void sp__scrape_ingest(sp_scrape_job_t *j, const uint8_t *body, size_t len, int64_t now) {
  sp_scrape_t *self = j->target->owner;
  const sp_scrape_cfg_t *c = self->cfg;
  sp_buf_t scratch;
  sp_buf_init(&scratch, 0);
  sp_profiles_t *batch = sp_profiles_create();
  const uint8_t *raw = NULL;
  size_t raw_len = 0;
  sp_pprof_t *pp = NULL;
  bool *cum = NULL;
  sp_scrape_delta_t *next_base = NULL; /* this scrape's values, until committed */
  char err[256] = "";
  if (batch == NULL)
    goto oom;
  int rc = sp_pprof_uncompress(body, len, c->max_profile_size, &scratch, &raw, &raw_len);
  if (rc == SP_ENOMEM)
    goto oom;
  if (rc != 0) {
    sp__scrape_failed(j, "%s", rc == SP_ETOOBIG ? "profile larger than max_profile_size"
                                                : "corrupt gzip data");
    goto done;
  }
  if ((rc = sp_pprof_decode(batch->arena, raw, raw_len, &pp, err, sizeof(err))) != 0) {
    if (rc == SP_ENOMEM)
      goto oom;
    sp_metric_add(self->m.rejected, 1);
    sp__scrape_failed(j, "invalid pprof: %s", err);
    goto done;
  }
  sp__scrape_ok(j);
  bool modified = false, delta = false, any_cum = false;
  int64_t start = now, end = now;
  if ((cum = sp_calloc(pp->n_sample_type + 1, sizeof(bool))) == NULL)
    goto oom;
  for (size_t i = 0; i < pp->n_sample_type; i++)
    any_cum |= cum[i] = sp__cumulative(pp, j->kind, i);
  if (any_cum && c->delta) {
    bool primed = false;
    if (sp__scrape_delta(batch->arena, pp, cum, j->prev, &next_base, &primed) != 0)
      goto oom;
    int64_t since = j->prev_ns;
    if (primed) {
      sp__commit_baseline(j, &next_base, now);
      sp_log_debug(self->base.id, "%s: first %s scrape primes the delta", j->target->url,
                   sp__kind_name[j->kind]);
      goto done;
    }
    start = since;
    pp->time_nanos = since;
    pp->duration_nanos = now - since;
    modified = delta = true;
  } else if (j->kind == SP_SCRAPE_CPU) {
    delta = true;
    const int64_t day = 24LL * 3600 * 1000000000LL; /* beyond it the fields are corrupt */
    if (pp->time_nanos > 0 && pp->time_nanos < INT64_MAX - day && pp->duration_nanos > 0 &&
        pp->duration_nanos < day) {
      start = pp->time_nanos;
      end = pp->time_nanos + pp->duration_nanos;
    } else {
      start = j->started_ns;
    }
  } else {
    delta = !any_cum; /* goroutine (and inuse-only) snapshots are not cumulative */
    if (pp->time_nanos > 0)
      start = end = pp->time_nanos;
  }
  sp_pprof_edit_t e;
  sp_pprof_edit_init(&e, batch->arena, pp);
  rc = sp_pprof_normalize_span_labels(&e, NULL);
  modified |= e.changed > 0;
  sp_pprof_edit_free(&e);
  if (rc != 0)
    goto oom;
  sp_label_t labels[64];
  size_t n = 0;
  for (size_t i = 0; i < j->target->n_labels && n < 62; i++)
    if (strcmp(j->target->labels[i].name, "__name__") != 0 &&
        strcmp(j->target->labels[i].name, "__delta__") != 0)
      labels[n++] = j->target->labels[i];
  labels[n++] = (sp_label_t){"__name__", sp__kind_metric[j->kind]};
  if (delta)
    labels[n++] = (sp_label_t){"__delta__", "false"};
  sp_profile_t *p;
  if (modified) {
    p = sp_profiles_add_decoded(batch, labels, n, start, end, pp);
  } else {
    p = sp_profiles_add(batch, labels, n, start, end, raw, raw_len);
    if (p != NULL)
      p->pprof = pp;
  }
  if (p == NULL)
    goto oom;
  rc = sp_consume_profiles(self->next, batch);
  batch = NULL;
  if (rc == 0)
    sp_metric_add(self->m.accepted, 1);
  else if (rc == SP_EAGAIN)
    sp_metric_add(self->m.refused, 1);
  else
    sp_metric_add(self->m.rejected, 1);
  /*
   * No sender retries a scrape, so a retryable refusal keeps the old
   * baseline: the next delta then covers this interval as well. Anything
   * else (accepted, or rejected for good, which a larger delta would not
   * change) moves the baseline on.
   */
  if (rc != SP_EAGAIN && next_base != NULL)
    sp__commit_baseline(j, &next_base, now);
  if (rc != 0)
    sp__refused(j, rc, rc == SP_EAGAIN && next_base != NULL);
  goto done;
oom:
  sp__scrape_failed(j, "out of memory");
done:
  sp__scrape_delta_free(next_base);
  sp_free(cum);
  sp_profiles_unref(batch);
  sp_buf_free(&scratch);
}

static void sp__scrape_done(const sp_http_client_result_t *res, void *arg) {
  sp_scrape_job_t *j = arg;
  sp_scrape_t *self = j->target->owner;
  j->in_flight = false;
  if (res->err == SP_ECANCELED || self->shutting)
    return;
  if (res->err != 0) {
    sp__scrape_failed(j, "%s (%s)", sp_strerror(res->err), res->error);
    return;
  }
  if (res->status != 200) {
    sp__scrape_failed(j, "HTTP %d: %.*s", res->status,
                      (int)(res->body_len < 120 ? res->body_len : 120),
                      res->body != NULL ? (const char *)res->body : "");
    return;
  }
  sp__scrape_ingest(j, res->body, res->body_len, sp__wall_ns());
}

static void sp__scrape_tick(uv_timer_t *timer) {
  sp_scrape_t *self = timer->data;
  if (self->shutting)
    return;
  for (size_t i = 0; i < self->n_targets; i++) {
    sp_scrape_target_t *t = &self->targets[i];
    for (int k = 0; k < SP_SCRAPE_KINDS; k++) {
      sp_scrape_job_t *j = &t->jobs[k];
      if (!j->enabled)
        continue;
      if (j->in_flight) {
        sp_metric_add(t->skipped, 1);
        continue;
      }
      sp_http_client_request_t req = {
          .method = "GET",
          .url = j->url,
          .timeout_ms = j->timeout_ms,
          .max_response_bytes = self->cfg->max_profile_size,
      };
      sp_metric_add(t->scrapes, 1);
      j->started_ns = sp__wall_ns();
      int rc = sp_http_client_request(self->client, &req, sp__scrape_done, j);
      if (rc != 0)
        sp__scrape_failed(j, "cannot start the request: %s", sp_strerror(rc));
      else
        j->in_flight = true;
    }
  }
}

/* ---- lifecycle ------------------------------------------------------------------ */

static void sp__scrape_destroy(sp_component_t *base);

static int sp__scrape_create(const sp_create_settings_t *set, const void *config,
                             sp_component_t **out) {
  if (set->next_profiles == NULL) {
    sp_log_error(set->id, "no profiles pipeline uses this receiver");
    return SP_ECONFIG;
  }
  const sp_scrape_cfg_t *c = config;
  sp_scrape_t *self = sp_calloc(1, sizeof(*self));
  if (self == NULL)
    return SP_ENOMEM;
  self->cfg = c;
  self->next = set->next_profiles;
  sp_telemetry_t *tel = set->host->telemetry;
  sp_receiver_metrics_init(tel, set->id, "scrape", "profiles", &self->m);
  self->targets = sp_calloc(c->targets.n, sizeof(*self->targets));
  if (self->targets == NULL) {
    sp_free(self);
    return SP_ENOMEM;
  }
  self->n_targets = c->targets.n;
  for (size_t i = 0; i < c->targets.n; i++) {
    const sp_scrape_target_cfg_t *tc = (const sp_scrape_target_cfg_t *)c->targets.items + i;
    if (sp__target_init(self, &self->targets[i], tc, set->id, tel) != 0) {
      sp__scrape_destroy(&self->base);
      return SP_ENOMEM;
    }
  }
  *out = &self->base;
  return 0;
}

static int sp__scrape_start(sp_component_t *base) {
  sp_scrape_t *self = (sp_scrape_t *)base;
  const sp_scrape_cfg_t *c = self->cfg;
  sp_http_client_destroy(self->client); /* a previous run's, after its shutdown */
  self->client = NULL;
  self->shutting = false;
  sp_http_client_options_t opts = {
      .component = base->id,
      .tls = c->tls.present ? &c->tls : NULL,
      .max_conns_per_host = SP_SCRAPE_KINDS + 1,
  };
  int rc = sp_http_client_create(base->host->loop, &opts, &self->client);
  if (rc != 0) {
    sp_log_error(base->id, "cannot create the HTTP client: %s", sp_strerror(rc));
    return rc;
  }
  uv_timer_init(base->host->loop, &self->timer);
  self->timer.data = self;
  self->timer_active = true;
  uv_timer_start(&self->timer, sp__scrape_tick, 0, c->interval_ms);
  sp_log_info(base->id, "scraping %zu target(s) every %llu ms", self->n_targets,
              (unsigned long long)c->interval_ms);
  return 0;
}

static void sp__scrape_down(void *arg) {
  sp_scrape_t *self = arg;
  if (--self->pending == 0 && self->cb != NULL) {
    sp_done_cb cb = self->cb;
    self->cb = NULL;
    cb(self->cb_arg);
  }
}

static void sp__timer_closed(uv_handle_t *h) { sp__scrape_down(h->data); }

static void sp__scrape_shutdown(sp_component_t *base, sp_done_cb cb, void *arg) {
  sp_scrape_t *self = (sp_scrape_t *)base;
  if (self->shutting)
    return;
  self->shutting = true;
  self->cb = cb;
  self->cb_arg = arg;
  self->pending = 1; /* so that nothing completes us inside this call */
  if (self->timer_active) {
    self->timer_active = false;
    self->pending++;
    uv_timer_stop(&self->timer);
    uv_close((uv_handle_t *)&self->timer, sp__timer_closed);
  }
  if (self->client != NULL) {
    self->pending++;
    sp_http_client_shutdown(self->client, sp__scrape_down, self);
  }
  sp_defer_embedded(base->host->loop, &self->deferral, sp__scrape_down, self);
}

static void sp__scrape_destroy(sp_component_t *base) {
  sp_scrape_t *self = (sp_scrape_t *)base;
  if (self == NULL)
    return;
  sp_http_client_destroy(self->client);
  for (size_t i = 0; i < self->n_targets; i++)
    sp__target_free(&self->targets[i]);
  sp_free(self->targets);
  sp_free(self);
}

const sp_component_def_t sp_receiver_pprof_scrape = {
    .kind = SP_KIND_RECEIVER,
    .type = "pprof_scrape",
    .signals = SP_SIGNAL_PROFILES,
    .stability = "alpha",
    .description = "scrapes Go /debug/pprof endpoints (cpu, memory, goroutine, mutex, block; "
                   "cumulative profiles as deltas)",
    .schema = &sp__scrape_schema,
    .config_size = sizeof(sp_scrape_cfg_t),
    .example = "interval: 1s\ntargets:\n  - url: http://127.0.0.1:1\n    labels:\n"
               "      service_name: conformance\n",
    .create = sp__scrape_create,
    .start = sp__scrape_start,
    .shutdown = sp__scrape_shutdown,
    .destroy = sp__scrape_destroy,
};
