/*
 * pyroscope exporter — sends profiles to Grafana Pyroscope (or Grafana
 * Cloud Profiles), the profile half of what spanprof exists for.
 *
 * Two APIs, chosen with `api`:
 *
 *   push (default)  POST {endpoint}/push.v1.PusherService/Push, Connect's
 *                   unary protocol over HTTP/1.1 (Content-Type
 *                   application/proto, Connect-Protocol-Version: 1): one
 *                   push.v1.PushRequest per batch with one RawProfileSeries
 *                   per profile, each carrying its series labels and one
 *                   RawSample {raw_profile: pprof, ID: a random UUID}.
 *   ingest          POST {endpoint}/ingest?name=<service>.<type>{labels}
 *                   &from=<s>&until=<s>&format=pprof with the pprof as the
 *                   body, one request per profile, one after the other
 *                   within a batch (batches run in parallel in the helper's
 *                   num_consumers slots) — for servers or proxies that only
 *                   speak the original Pyroscope API.
 *
 * Compression: with `compression: gzip` (the default) every pprof is
 * gzipped on its own — the pprof file format is gzip by convention, and
 * Pyroscope inflates raw_profile (and /ingest bodies) when it sees the gzip
 * magic. The HTTP body itself is not compressed again: the bytes inside are
 * already deflated, and per-profile gzip works the same on both APIs and on
 * every Pyroscope version (Connect's Content-Encoding support depends on the
 * server's handler options). `none` sends the pprof bytes uncompressed — an
 * unchanged profile then goes out as the very bytes it arrived as.
 *
 * Deflating ~150 KB of pprof per profile was the largest cost of the
 * profiles path (with inflate at the receiver, 62% of the CPU at ~220
 * profiles/s), so it runs on libuv's thread pool, on ISA-L (level 1 is
 * about 15x faster than zlib's default 6 for ~10% more bytes;
 * `compression_params: {level: N}` as in the Collector's confighttp), and
 * the default level -1 goes through sp_compressor_t contexts (pipeline/compress.h), one
 * per hash of service and profile type (sp__gz_for): ISA-L level 0 with
 * Huffman tables learned from the profiles already sent, ~0.86x of level
 * 1's time for the same bytes on the load generator's profiles. Every
 * batch's pool work shares them; they are freed with the exporter, after
 * shutdown has waited for that work.
 *
 *   send (loop)       prepare every profile (labels, pprof bytes: this reads
 *        │            the batch, so it stays on the loop), drop stale ones
 *        ▼
 *   uv_queue_work     gzip each pending profile into its own buffer and, for
 *        │            push, encode the PushRequest: only the per-batch state
 *        ▼            below is touched, which nothing else uses meanwhile
 *   after_work (loop) POST, or report why not
 *
 * The helper holds the item (and the batch) until `done`, which runs only
 * from after_work or a response, so the batch and the per-batch state are
 * stable while the work runs. Retries reuse what was built. Shutdown: work
 * on the pool cannot be cancelled once running, so `close` waits for it
 * (its after_work then reports the send cancelled) before closing the client.
 *
 * Labels are made acceptable before sending (pyroscope_labels.c): dots and
 * other invalid characters become '_', Pyroscope's limits on name length,
 * value length and label count are applied with counted, logged drops, and
 * span_name can be removed from samples (`span_name_label: false`).
 *
 * Responses (Connect maps its codes to HTTP statuses: resource_exhausted →
 * 429, unavailable → 503, deadline_exceeded → 504, invalid_argument and
 * failed_precondition → 400, unauthenticated → 401, permission_denied → 403,
 * not_found → 404, internal/unknown → 500; /ingest answers 400, 413, 422,
 * 429 itself):
 *   2xx                     success;
 *   408 429 502 503 504, connection failures and timeouts
 *                           retryable, honouring Retry-After;
 *   anything else           permanent (400 401 403 404 413 422 500 ...):
 *                           retrying a rejected or half-applied push would
 *                           at best fail again and at worst count profiles
 *                           twice. The Connect error message (JSON body)
 *                           or the text body goes to the log.
 *
 * Age: Pyroscope refuses profiles older than its reject_older_than (1h by
 * default). Before every attempt, profiles whose time range ended more than
 * `max_age` ago are taken out of the request, logged and counted in
 * spanprof_exporter_dropped_stale_profiles_total — so a backlog built up
 * during an outage is not retried forever, and drains with what is still
 * worth sending. (Pyroscope checks the pprof's time_nanos, its start: a
 * profile started just over max_age ago but ended within it can still be
 * refused, with a 400 that is then not retried.)
 *
 * Everything but the compression and the PushRequest encoding runs on the
 * loop thread. Per batch, the prepared profiles, the compressed bytes and
 * the encoded request are built once and kept across retries (rebuilt only
 * when profiles turned stale in between).
 */
#include "exporters/pyroscope/pyroscope.h"

#include "pipeline/alloc.h"
#include "pipeline/buf.h"
#include "pipeline/compress.h"
#include "pipeline/defer.h"
#include "pipeline/error.h"
#include "pipeline/json.h"
#include "pipeline/log.h"
#include "pipeline/transport/http_client.h"

#include "push/v1/push.pb-c.h"
#include "types/v1/types.pb-c.h"

#include <openssl/evp.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>

/* ---- configuration ---------------------------------------------------------- */

static const char *const sp__apis[] = {"push", "ingest", NULL};
static const sp_cfg_field_t sp__basic_auth_fields[] = {
    {.key = "username",
     .type = SP_CFG_STRING,
     .offset = offsetof(sp_pyroscope_basic_auth_t, username),
     .flags = SP_CFG_REQUIRED | SP_CFG_NONEMPTY},
    {.key = "password",
     .type = SP_CFG_STRING,
     .offset = offsetof(sp_pyroscope_basic_auth_t, password)},
};

static const sp_cfg_schema_t sp__basic_auth_schema = {
    .fields = sp__basic_auth_fields,
    .n_fields = sizeof(sp__basic_auth_fields) / sizeof(sp__basic_auth_fields[0]),
    .size = sizeof(sp_pyroscope_basic_auth_t),
};

static int sp__pyroscope_validate(void *cfg, const sp_node_t *node, const char *path,
                                  sp_errors_t *errs) {
  const sp_pyroscope_cfg_t *c = cfg;
  const sp_mark_t *mark = node != NULL ? &node->mark : NULL;
  int rc = 0;
  const sp_node_t *v = sp_node_get(node, "endpoint");
  const sp_mark_t *emark = v != NULL ? &v->mark : mark;
  if (c->endpoint == NULL) {
    sp_errors_add(errs, mark, path, "missing required key \"endpoint\"");
    return SP_ECONFIG;
  }
  if (strncmp(c->endpoint, "http://", 7) != 0 && strncmp(c->endpoint, "https://", 8) != 0) {
    sp_errors_add(errs, emark, path, "endpoint must be an http:// or https:// URL, got \"%s\"",
                  c->endpoint);
    rc = SP_ECONFIG;
  } else if (strchr(c->endpoint, '?') != NULL || strchr(c->endpoint, '#') != NULL) {
    sp_errors_add(errs, emark, path,
                  "endpoint must be a base URL without a query or fragment, got \"%s\"",
                  c->endpoint);
    rc = SP_ECONFIG;
  } else if (c->tls.present && !c->tls.insecure && strncmp(c->endpoint, "http://", 7) == 0) {
    sp_errors_add(errs, emark, path,
                  "endpoint is plaintext http:// but tls is configured; use https:// or set "
                  "tls.insecure: true");
    rc = SP_ECONFIG;
  }
  if (c->basic_auth.present && c->bearer_token != NULL) {
    const sp_node_t *b = sp_node_get(node, "bearer_token");
    sp_errors_add(errs, b != NULL ? &b->mark : mark, path,
                  "basic_auth and bearer_token are mutually exclusive; set one of them");
    rc = SP_ECONFIG;
  }
  const sp_node_t *ext = sp_node_get(node, "external_labels");
  for (size_t i = 0; i < c->external_labels.n; i++) {
    const char *k = c->external_labels.keys[i];
    char name[SP_PYROSCOPE_MAX_LABEL_NAME_LEN * 2 + 2];
    const sp_mark_t *km =
        ext != NULL && ext->key_marks != NULL && i < ext->n ? &ext->key_marks[i] : mark;
    size_t nl = sp_pyroscope_label_name(k, name, sizeof(name));
    if (nl == 0 || (int64_t)nl > c->max_label_name_length) {
      sp_errors_add(errs, km, path,
                    "external_labels: \"%s\" is not a usable label name (empty or longer than "
                    "max_label_name_length)",
                    k);
      rc = SP_ECONFIG;
    } else if (strcmp(name, "__name__") == 0) {
      sp_errors_add(errs, km, path,
                    "external_labels: __name__ is the profile type and cannot be set here");
      rc = SP_ECONFIG;
    }
  }
  return rc;
}

static const sp_cfg_field_t sp__pyroscope_fields[] = {
    {.key = "endpoint",
     .type = SP_CFG_STRING,
     .offset = offsetof(sp_pyroscope_cfg_t, endpoint),
     .flags = SP_CFG_NONEMPTY},
    {.key = "api",
     .type = SP_CFG_ENUM,
     .offset = offsetof(sp_pyroscope_cfg_t, api),
     .def = "push",
     .enum_values = sp__apis},
    {.key = "compression",
     .type = SP_CFG_ENUM,
     .offset = offsetof(sp_pyroscope_cfg_t, compression),
     .def = "gzip",
     .enum_values = sp_exporterhelper_compressions},
    {.key = "compression_params",
     .type = SP_CFG_SECTION,
     .offset = offsetof(sp_pyroscope_cfg_t, compression_params),
     .section = &sp_exporterhelper_compression_params_schema},
    {.key = "timeout",
     .type = SP_CFG_DURATION,
     .offset = offsetof(sp_pyroscope_cfg_t, timeout_ms),
     .def = "10s",
     .min = 1,
     .max = 3600000},
    {.key = "basic_auth",
     .type = SP_CFG_SECTION,
     .offset = offsetof(sp_pyroscope_cfg_t, basic_auth),
     .flags = SP_CFG_PRESENT,
     .section = &sp__basic_auth_schema,
     .present_offset = offsetof(sp_pyroscope_basic_auth_t, present)},
    {.key = "bearer_token",
     .type = SP_CFG_STRING,
     .offset = offsetof(sp_pyroscope_cfg_t, bearer_token),
     .flags = SP_CFG_NONEMPTY},
    {.key = "tenant_id",
     .type = SP_CFG_STRING,
     .offset = offsetof(sp_pyroscope_cfg_t, tenant_id),
     .flags = SP_CFG_NONEMPTY},
    {.key = "external_labels",
     .type = SP_CFG_STRMAP,
     .offset = offsetof(sp_pyroscope_cfg_t, external_labels)},
    {.key = "span_name_label",
     .type = SP_CFG_BOOL,
     .offset = offsetof(sp_pyroscope_cfg_t, span_name_label),
     .def = "true"},
    {.key = "max_age",
     .type = SP_CFG_DURATION,
     .offset = offsetof(sp_pyroscope_cfg_t, max_age_ms),
     .def = "1h"},
    {.key = "max_label_name_length",
     .type = SP_CFG_INT,
     .offset = offsetof(sp_pyroscope_cfg_t, max_label_name_length),
     .def = "1024",
     .min = 16,
     .max = 2048},
    {.key = "max_label_value_length",
     .type = SP_CFG_INT,
     .offset = offsetof(sp_pyroscope_cfg_t, max_label_value_length),
     .def = "2048",
     .min = 16,
     .max = 1048576},
    {.key = "max_label_names_per_series",
     .type = SP_CFG_INT,
     .offset = offsetof(sp_pyroscope_cfg_t, max_label_names_per_series),
     .def = "30",
     .min = 2,
     .max = 1000},
    SP_EXPORTERHELPER_COMMON_FIELDS(sp_pyroscope_cfg_t),
    {.key = "max_conns_per_host",
     .type = SP_CFG_INT,
     .offset = offsetof(sp_pyroscope_cfg_t, max_conns_per_host),
     .def = "16",
     .min = 1,
     .max = 10000},
};

static const sp_cfg_schema_t sp__pyroscope_schema = {
    .fields = sp__pyroscope_fields,
    .n_fields = sizeof(sp__pyroscope_fields) / sizeof(sp__pyroscope_fields[0]),
    .size = sizeof(sp_pyroscope_cfg_t),
    .validate = sp__pyroscope_validate,
};

/* ---- instance --------------------------------------------------------------- */

enum { SP__GZ_SHAPES = 8 };

typedef struct sp_pyroscope_s {
  sp_component_t base;
  const sp_pyroscope_cfg_t *cfg;
  sp_exporterhelper_t *helper;
  sp_http_client_t *client;
  char *push_url;
  char *ingest_url;
  sp_http_header_t *headers; /* sent with every request: configured, auth, tenant */
  size_t n_headers;
  char *authorization;
  char timeout_header[24]; /* Connect-Timeout-Ms */
  sp_pyroscope_rules_t rules;
  sp_metric_t *stale;
  sp_metric_t *dropped[SP_PYRO_DROP_REASONS];
  uint64_t last_drop_log; /* uv_now() of the last drop report; 0: none yet */
  size_t drops_unreported;
  bool shut; /* shutdown was called: start must not open the client */
  /* Work on the thread pool (see the top of this file). */
  size_t n_work;                 /* queued or running; their after_work has not run */
  bool closing;                  /* close was called: after_work must not send */
  void (*close_done)(void *arg); /* a close waiting for n_work to reach 0 */
  void *close_arg;
  /* Level -1's learned gzip tables (other levels: none), shared by the pool work (sp__gz_for). */
  sp_compressor_t *gz[SP__GZ_SHAPES];
} sp_pyroscope_t;

enum { SP__PENDING = 0, SP__DELIVERED, SP__STALE, SP__FAILED };

/* One profile of a batch, as sent. */
typedef struct sp__prof_s {
  sp_pyroscope_prepared_t prep;
  const uint8_t *body; /* raw_profile / the /ingest body: gz.data or prep.pprof; NULL
                          until compressed */
  size_t body_len;
  sp_buf_t gz;
  char *url; /* ingest: the full URL (arena) */
  char id[37];
  int state;
} sp__prof_t;

/* Per-batch state kept across attempts (sp_exporterhelper_item_t.user). */
typedef struct sp__req_s {
  sp_pyroscope_t *self;
  sp_exporterhelper_item_t *item;
  sp_arena_t *arena;
  sp__prof_t *profs;
  size_t n;
  sp_buf_t body;   /* push: the encoded PushRequest */
  bool body_valid; /* body holds exactly the pending profiles */
  size_t n_stale, n_failed, n_delivered;
  size_t cur;        /* ingest: the profile in flight */
  char problem[320]; /* why profiles were not delivered (stale, rejected) */
  sp_exporterhelper_done_cb done;
  void *token;
  uv_work_t work;
  int work_rc; /* written on the pool, read in after_work */
} sp__req_t;

static char *sp__join_url(const char *base, const char *suffix) {
  size_t n = strlen(base);
  while (n > 0 && base[n - 1] == '/')
    n--;
  return sp_sprintf("%.*s%s", (int)n, base, suffix);
}

static int64_t sp__now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* A random (version 4) UUID: what Pyroscope clients put in RawSample.ID. */
static void sp__uuid(char out[37]) {
  uint8_t b[16];
  if (uv_random(NULL, NULL, b, sizeof(b), 0, NULL) != 0) {
    /* No entropy source: unique is all the ID needs to be. */
    static uint64_t counter;
    uint64_t x = uv_hrtime() ^ ((uint64_t)(uintptr_t)out << 17) ^ ++counter;
    for (int i = 0; i < 16; i++) {
      x ^= x << 13;
      x ^= x >> 7;
      x ^= x << 17;
      b[i] = (uint8_t)x;
    }
  }
  b[6] = (uint8_t)((b[6] & 0x0f) | 0x40);
  b[8] = (uint8_t)((b[8] & 0x3f) | 0x80);
  snprintf(out, 37, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", b[0],
           b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13], b[14],
           b[15]);
}

/* Counts label drops and reports them, at most one log line per 10 s. */
static void sp__report_drops(sp_pyroscope_t *self, const sp_pyroscope_drops_t *d) {
  size_t total = 0;
  for (int i = 0; i < SP_PYRO_DROP_REASONS; i++) {
    sp_metric_add(self->dropped[i], d->n[i]);
    total += d->n[i];
  }
  if (total == 0) return;
  self->drops_unreported += total;
  uint64_t now = uv_now(self->base.host->loop);
  if (self->last_drop_log != 0 && now - self->last_drop_log < 10000) return;
  sp_log_warn(self->base.id,
              "dropped %zu label(s) Pyroscope would refuse (spanprof_exporter_dropped_labels_total "
              "has the reasons); e.g. %s",
              self->drops_unreported, d->first);
  self->drops_unreported = 0;
  self->last_drop_log = now == 0 ? 1 : now;
}

/* ---- per-batch state -------------------------------------------------------- */

static void sp__req_free(sp__req_t *r) {
  if (r == NULL) return;
  for (size_t i = 0; i < r->n; i++)
    sp_buf_free(&r->profs[i].gz);
  sp_buf_free(&r->body);
  sp_arena_destroy(r->arena);
  sp_free(r);
}

/* Appends @p s percent-encoded (all but RFC 3986 unreserved characters). */
static int sp__url_escape(sp_buf_t *b, const char *s) {
  static const char hex[] = "0123456789ABCDEF";
  int rc = 0;
  for (const unsigned char *c = (const unsigned char *)s; *c && rc == 0; c++) {
    if ((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9') ||
        *c == '-' || *c == '_' || *c == '.' || *c == '~') {
      rc = sp_buf_putc(b, *c);
    } else {
      char e[3] = {'%', hex[*c >> 4], hex[*c & 15]};
      rc = sp_buf_append(b, e, 3);
    }
  }
  return rc;
}

/*
 * The /ingest URL of one profile. The `name` parameter is the original
 * Pyroscope key, `<app>{k=v,...}`, parsed without escapes: a value cannot
 * hold ',' or '}' (they become '_'), and the application name only
 * [A-Za-z0-9_.\-/] (others become '_'). service_name is sent as a label
 * too, so it does not depend on the ".<type>" suffix of the app name.
 */
static char *sp__ingest_url(sp_pyroscope_t *self, sp__req_t *r, const sp__prof_t *pf) {
  sp_buf_t key, url;
  sp_buf_init(&key, 0);
  sp_buf_init(&url, 0);
  char *out = NULL;
  int rc = sp_buf_printf(&key, "%s.%s", pf->prep.service_name, pf->prep.profile_type);
  for (size_t i = 0; rc == 0 && i < key.len; i++) {
    char c = (char)key.data[i];
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
          c == '.' || c == '-' || c == '/'))
      key.data[i] = '_';
  }
  rc = rc ? rc : sp_buf_putc(&key, '{');
  bool first = true;
  for (size_t i = 0; rc == 0 && i < pf->prep.n_labels; i++) {
    const sp_label_t *l = &pf->prep.labels[i];
    if (strcmp(l->name, "__name__") == 0) continue;
    rc = sp_buf_printf(&key, "%s%s=", first ? "" : ",", l->name);
    first = false;
    for (const char *c = l->value; rc == 0 && *c; c++)
      rc = sp_buf_putc(&key, (*c == ',' || *c == '}') ? '_' : *c);
  }
  rc = rc ? rc : sp_buf_putc(&key, '}');
  rc = rc ? rc : sp_buf_printf(&url, "%s?name=", self->ingest_url);
  rc = rc ? rc : sp__url_escape(&url, sp_buf_cstr(&key));
  if (rc == 0 && pf->prep.start_ns > 0)
    rc = sp_buf_printf(&url, "&from=%lld", (long long)(pf->prep.start_ns / 1000000000LL));
  if (rc == 0 && pf->prep.end_ns > 0)
    rc = sp_buf_printf(&url, "&until=%lld",
                       (long long)((pf->prep.end_ns + 999999999LL) / 1000000000LL));
  rc = rc ? rc : sp_buf_puts(&url, "&format=pprof");
  if (rc == 0) out = sp_arena_strndup(r->arena, (const char *)url.data, url.len);
  sp_buf_free(&key);
  sp_buf_free(&url);
  return out;
}

/*
 * Builds the per-batch state: every profile prepared (labels, bytes) and
 * given an ID (push) or a URL (ingest); compression comes later (sp__work).
 * Returns 0 or SP_ENOMEM. A profile that does not decode is marked failed.
 */
static int sp__req_build(sp_pyroscope_t *self, sp_exporterhelper_item_t *item, sp__req_t **out) {
  sp_profiles_t *batch = item->profiles;
  sp__req_t *r = sp_calloc(1, sizeof(*r));
  sp_pyroscope_drops_t drops;
  int rc = SP_ENOMEM;
  memset(&drops, 0, sizeof(drops));
  if (r == NULL) return SP_ENOMEM;
  r->self = self;
  r->item = item;
  sp_buf_init(&r->body, 0);
  r->n = batch->n;
  r->arena = sp_arena_create(0);
  if (r->arena == NULL) goto fail;
  r->profs = sp_arena_calloc(r->arena, (r->n > 0 ? r->n : 1) * sizeof(*r->profs));
  if (r->profs == NULL) goto fail;
  for (size_t i = 0; i < r->n; i++)
    sp_buf_init(&r->profs[i].gz, 0);
  for (size_t i = 0; i < r->n; i++) {
    sp__prof_t *pf = &r->profs[i];
    char err[200];
    rc = sp_pyroscope_prepare(&self->rules, batch, &batch->items[i], r->arena, &pf->prep, &drops,
                              err, sizeof(err));
    if (rc == SP_ENOMEM) goto fail;
    if (rc != 0) {
      pf->state = SP__FAILED;
      r->n_failed++;
      snprintf(r->problem, sizeof(r->problem), "profile %zu cannot be sent: %s", i,
               err[0] ? err : sp_strerror(rc));
      sp_log_error(self->base.id, "%s", r->problem);
      continue;
    }
    if (self->cfg->compression != SP_PYROSCOPE_GZIP) {
      pf->body = pf->prep.pprof;
      pf->body_len = pf->prep.pprof_len;
    } /* else compressed on the pool (sp__work) */
    if (self->cfg->api == SP_PYROSCOPE_API_INGEST) {
      pf->url = sp__ingest_url(self, r, pf);
      if (pf->url == NULL) {
        rc = SP_ENOMEM;
        goto fail;
      }
    } else {
      sp__uuid(pf->id);
    }
  }
  sp__report_drops(self, &drops);
  *out = r;
  return 0;
fail:
  sp__req_free(r);
  return rc;
}

/* Takes profiles that ended more than max_age ago out of the request. */
static void sp__check_stale(sp_pyroscope_t *self, sp__req_t *r) {
  if (self->cfg->max_age_ms == 0) return;
  int64_t limit = sp__now_ns() - (int64_t)self->cfg->max_age_ms * 1000000LL;
  size_t n = 0;
  int64_t newest = 0;
  for (size_t i = 0; i < r->n; i++) {
    sp__prof_t *pf = &r->profs[i];
    int64_t t = pf->prep.end_ns > 0 ? pf->prep.end_ns : pf->prep.start_ns;
    if (pf->state != SP__PENDING || t <= 0 || t >= limit) continue;
    pf->state = SP__STALE;
    n++;
    if (t > newest) newest = t;
  }
  if (n == 0) return;
  r->n_stale += n;
  r->body_valid = false;
  sp_metric_add(self->stale, n);
  snprintf(r->problem, sizeof(r->problem),
           "%zu profile(s) older than max_age (%llu s) dropped: Pyroscope refuses them (the "
           "newest ended %lld s ago)",
           r->n_stale, (unsigned long long)(self->cfg->max_age_ms / 1000),
           (long long)((sp__now_ns() - newest) / 1000000000LL));
  sp_log_warn(self->base.id, "%s", r->problem);
}

static size_t sp__pending(const sp__req_t *r) {
  size_t n = 0;
  for (size_t i = 0; i < r->n; i++)
    n += r->profs[i].state == SP__PENDING;
  return n;
}

/* Encodes the PushRequest of the pending profiles into r->body. 0 or SP_ENOMEM. */
static int sp__build_push(sp__req_t *r) {
  size_t n = sp__pending(r), k = 0;
  int rc = SP_ENOMEM;
  Push__V1__RawProfileSeries *series = sp_calloc(n > 0 ? n : 1, sizeof(*series));
  Push__V1__RawProfileSeries **sp = sp_calloc(n > 0 ? n : 1, sizeof(*sp));
  Push__V1__RawSample *samples = sp_calloc(n > 0 ? n : 1, sizeof(*samples));
  Push__V1__RawSample **ssp = sp_calloc(n > 0 ? n : 1, sizeof(*ssp));
  size_t n_labels = 0;
  for (size_t i = 0; i < r->n; i++)
    if (r->profs[i].state == SP__PENDING) n_labels += r->profs[i].prep.n_labels;
  Types__V1__LabelPair *pairs = sp_calloc(n_labels > 0 ? n_labels : 1, sizeof(*pairs));
  Types__V1__LabelPair **pp = sp_calloc(n_labels > 0 ? n_labels : 1, sizeof(*pp));
  if (series == NULL || sp == NULL || samples == NULL || ssp == NULL || pairs == NULL || pp == NULL)
    goto fail;
  size_t l = 0;
  for (size_t i = 0; i < r->n; i++) {
    sp__prof_t *pf = &r->profs[i];
    if (pf->state != SP__PENDING) continue;
    Push__V1__RawProfileSeries *s = &series[k];
    push__v1__raw_profile_series__init(s);
    s->labels = &pp[l];
    s->n_labels = pf->prep.n_labels;
    for (size_t j = 0; j < pf->prep.n_labels; j++, l++) {
      types__v1__label_pair__init(&pairs[l]);
      pairs[l].name = (char *)pf->prep.labels[j].name;
      pairs[l].value = (char *)pf->prep.labels[j].value;
      pp[l] = &pairs[l];
    }
    push__v1__raw_sample__init(&samples[k]);
    samples[k].raw_profile.data = (uint8_t *)pf->body;
    samples[k].raw_profile.len = pf->body_len;
    samples[k].id = pf->id;
    ssp[k] = &samples[k];
    s->samples = &ssp[k];
    s->n_samples = 1;
    sp[k] = s;
    k++;
  }
  Push__V1__PushRequest req;
  push__v1__push_request__init(&req);
  req.series = sp;
  req.n_series = k;
  size_t size = protobuf_c_message_get_packed_size(&req.base);
  r->body.len = 0;
  rc = sp_buf_reserve(&r->body, size > 0 ? size : 1);
  if (rc == 0) {
    r->body.len = protobuf_c_message_pack(&req.base, r->body.data);
    r->body_valid = true;
  }
fail:
  sp_free(series);
  sp_free(sp);
  sp_free(samples);
  sp_free(ssp);
  sp_free(pairs);
  sp_free(pp);
  return rc;
}

/* ---- responses -------------------------------------------------------------- */

/* Printable text of a response body for a log line. */
static void sp__body_text(const uint8_t *p, size_t n, char *out, size_t cap) {
  size_t o = 0;
  for (size_t i = 0; i < n && o + 1 < cap; i++)
    out[o++] = (p[i] >= 0x20 && p[i] < 0x7f) ? (char)p[i] : ' ';
  while (o > 0 && out[o - 1] == ' ')
    o--;
  out[o] = '\0';
}

/* "HTTP 400 (invalid_argument): <message>" from a Connect JSON error or a text body. */
static void sp__error_text(const sp_http_client_result_t *res, char *out, size_t cap) {
  char text[400];
  text[0] = '\0';
  const char *code = NULL;
  sp_arena_t *arena = NULL;
  const sp_json_t *doc = NULL;
  if (res->body != NULL && res->body_len > 0 && res->body[0] == '{' &&
      (arena = sp_arena_create(0)) != NULL) {
    sp_json_t *j = NULL;
    if (sp_json_parse((const char *)res->body, res->body_len, arena, 8, &j, NULL) == 0) doc = j;
  }
  const sp_json_t *c = doc != NULL ? sp_json_get(doc, "code") : NULL;
  const sp_json_t *m = doc != NULL ? sp_json_get(doc, "message") : NULL;
  if (c != NULL && c->type == SP_JSON_STRING) code = c->u.string.ptr;
  if (m != NULL && m->type == SP_JSON_STRING)
    snprintf(text, sizeof(text), "%s", m->u.string.ptr);
  else if (res->body != NULL)
    sp__body_text(res->body, res->body_len, text, sizeof(text));
  snprintf(out, cap, "HTTP %d%s%s%s%s%s", res->status, code ? " (" : "", code ? code : "",
           code ? ")" : "", text[0] ? ": " : "", text);
  sp_arena_destroy(arena);
}

static bool sp__status_retryable(int status) {
  return status == 408 || status == 429 || status == 502 || status == 503 || status == 504;
}

/* Transport failures worth retrying: refused/reset connections, DNS, TLS, timeouts. */
static bool sp__transport_retryable(int err) {
  return err == SP_EIO || err == SP_ETIMEDOUT || err == SP_ENOMEM;
}

/* The outcome once nothing is pending any more. */
static void sp__finish(sp__req_t *r) {
  sp_exporterhelper_result_t out = {0};
  size_t lost = r->n - r->n_delivered;
  if (r->n_delivered == 0 && lost > 0) {
    out.err = SP_EREJECTED;
  } else {
    out.rejected = lost;
  }
  out.message = lost > 0 ? r->problem : NULL;
  r->done(r->token, &out);
}

static void sp__finish_deferred(void *arg) { sp__finish(arg); }

/* Reports a permanent failure that ended the batch early (shutdown, unusable request). */
static void sp__fail(sp__req_t *r, int err, const char *why) {
  sp_exporterhelper_result_t out = {0};
  snprintf(r->problem, sizeof(r->problem), "%s", why);
  if (r->n_delivered > 0) {
    out.rejected = r->n - r->n_delivered; /* keep what was delivered out of the failures */
  } else {
    out.err = err;
  }
  out.message = r->problem;
  r->done(r->token, &out);
}

static void sp__retry_later(sp__req_t *r, uint64_t retry_after_ms, const char *why) {
  sp_exporterhelper_result_t out = {
      .err = SP_EAGAIN, .retry_after_ms = retry_after_ms, .message = why};
  r->done(r->token, &out);
}

static int sp__post(sp__req_t *r, const char *url, const uint8_t *body, size_t len,
                    sp_http_client_cb cb);

static void sp__on_push(const sp_http_client_result_t *res, void *arg) {
  sp__req_t *r = arg;
  char msg[512];
  if (res->err != 0) {
    snprintf(msg, sizeof(msg), "%s%s%s", sp_strerror(res->err), res->error[0] ? ": " : "",
             res->error);
    if (sp__transport_retryable(res->err))
      sp__retry_later(r, 0, msg);
    else
      sp__fail(r, res->err, msg);
    return;
  }
  if (res->status >= 200 && res->status < 300) {
    for (size_t i = 0; i < r->n; i++) {
      if (r->profs[i].state == SP__PENDING) {
        r->profs[i].state = SP__DELIVERED;
        r->n_delivered++;
      }
    }
    sp__finish(r);
    return;
  }
  sp__error_text(res, msg, sizeof(msg));
  if (sp__status_retryable(res->status))
    sp__retry_later(r, res->retry_after_ms, msg);
  else
    sp__fail(r, SP_EREJECTED, msg);
}

/* Ingest: the next pending profile from r->cur on, or r->n. */
static size_t sp__next_pending(const sp__req_t *r, size_t from) {
  while (from < r->n && r->profs[from].state != SP__PENDING)
    from++;
  return from;
}

static void sp__on_ingest(const sp_http_client_result_t *res, void *arg);

/* Ingest: posts profile r->cur. 0 or the request's synchronous error. */
static int sp__ingest_post(sp__req_t *r) {
  sp__prof_t *pf = &r->profs[r->cur];
  return sp__post(r, pf->url, pf->body, pf->body_len, sp__on_ingest);
}

static void sp__on_ingest(const sp_http_client_result_t *res, void *arg) {
  sp__req_t *r = arg;
  sp__prof_t *pf = &r->profs[r->cur];
  char msg[512];
  if (res->err != 0) {
    snprintf(msg, sizeof(msg), "%s%s%s", sp_strerror(res->err), res->error[0] ? ": " : "",
             res->error);
    if (sp__transport_retryable(res->err))
      sp__retry_later(r, 0, msg);
    else
      sp__fail(r, res->err, msg);
    return;
  }
  if (res->status >= 200 && res->status < 300) {
    pf->state = SP__DELIVERED;
    r->n_delivered++;
  } else {
    sp__error_text(res, msg, sizeof(msg));
    if (sp__status_retryable(res->status)) {
      sp__retry_later(r, res->retry_after_ms, msg);
      return;
    }
    pf->state = SP__FAILED;
    r->n_failed++;
    snprintf(r->problem, sizeof(r->problem), "profile of service \"%s\" (%s) refused: %s",
             pf->prep.service_name, pf->prep.profile_type, msg);
  }
  r->cur = sp__next_pending(r, r->cur + 1);
  if (r->cur >= r->n) {
    sp__finish(r);
    return;
  }
  int rc = sp__ingest_post(r);
  if (rc != 0) {
    if (rc == SP_ENOMEM)
      sp__retry_later(r, 0, "out of memory");
    else
      sp__fail(r, SP_ECANCELED, sp_strerror(rc));
  }
}

/* ---- the sender ------------------------------------------------------------- */

static int sp__post(sp__req_t *r, const char *url, const uint8_t *body, size_t len,
                    sp_http_client_cb cb) {
  sp_pyroscope_t *self = r->self;
  bool push = self->cfg->api == SP_PYROSCOPE_API_PUSH;
  sp_http_header_t hdrs[4];
  size_t nh = 0;
  if (push) {
    hdrs[nh++] = (sp_http_header_t){"Content-Type", "application/proto"};
    hdrs[nh++] = (sp_http_header_t){"Connect-Protocol-Version", "1"};
    hdrs[nh++] = (sp_http_header_t){"Connect-Timeout-Ms", self->timeout_header};
  } else {
    hdrs[nh++] = (sp_http_header_t){"Content-Type", "application/octet-stream"};
  }
  const sp_meta_t *meta = &r->item->profiles->meta;
  if (self->cfg->tenant_from_metadata && meta->tenant != NULL && meta->tenant[0] != '\0')
    hdrs[nh++] = (sp_http_header_t){"X-Scope-OrgID", meta->tenant};
  sp_http_client_request_t req = {.method = "POST",
                                  .url = url,
                                  .headers = hdrs,
                                  .n_headers = nh,
                                  .body = body,
                                  .body_len = len,
                                  .timeout_ms = self->cfg->timeout_ms};
  return sp_http_client_request(self->client, &req, cb, r);
}

/* True when the pool has something to do before @p r can be posted. */
static bool sp__needs_work(const sp__req_t *r) {
  if (r->self->cfg->api == SP_PYROSCOPE_API_PUSH && !r->body_valid) return true;
  for (size_t i = 0; i < r->n; i++)
    if (r->profs[i].state == SP__PENDING && r->profs[i].body == NULL) return true;
  return false;
}

/*
 * The learned-tables context for @p prep: one per hash of its service and
 * profile type. Profiles of one service and type are alike, those of
 * services in other languages or of other types less so, and a context's
 * tables fit the average of what it sees: on a mix of five shapes, one
 * context for all gives ~3.7% more bytes than level 1, one per shape ~2%
 * (tests/bench/bench_compress.c). Many services share the 8 contexts.
 */
static sp_compressor_t *sp__gz_for(sp_pyroscope_t *self, const sp_pyroscope_prepared_t *prep) {
  if (self->gz[0] == NULL) return NULL; /* an explicit level: no contexts */
  uint32_t h = 2166136261u; /* FNV-1a */
  for (const char *s = prep->service_name ? prep->service_name : ""; *s; s++)
    h = (h ^ (uint8_t)*s) * 16777619u;
  h = (h ^ 0xff) * 16777619u;
  for (const char *s = prep->profile_type ? prep->profile_type : ""; *s; s++)
    h = (h ^ (uint8_t)*s) * 16777619u;
  return self->gz[(h ^ h >> 16) % SP__GZ_SHAPES];
}

/*
 * Thread pool: gzips every pending profile not compressed yet, then (push)
 * encodes the PushRequest. Touches only @p r's own buffers and reads what
 * the batch and r->arena hold; nothing on the loop uses them meanwhile.
 */
static void sp__work(uv_work_t *w) {
  sp__req_t *r = w->data;
  int level = (int)r->self->cfg->compression_params.level;
  int rc = 0;
  for (size_t i = 0; i < r->n && rc == 0; i++) {
    sp__prof_t *pf = &r->profs[i];
    if (pf->state != SP__PENDING || pf->body != NULL) continue;
    pf->gz.len = 0;
    /* No contexts (NULL) at explicit levels: the stateless compressor. */
    rc = sp_compressor_gzip(sp__gz_for(r->self, &pf->prep), pf->prep.pprof, pf->prep.pprof_len,
                            level, &pf->gz);
    if (rc == 0) {
      pf->body = pf->gz.data;
      pf->body_len = pf->gz.len;
    }
  }
  if (rc == 0 && r->self->cfg->api == SP_PYROSCOPE_API_PUSH && !r->body_valid)
    rc = sp__build_push(r);
  r->work_rc = rc;
}

/* A close that waited for the pool: every after_work has run, close the client now. */
static void sp__close_if_idle(sp_pyroscope_t *self) {
  if (self->n_work > 0 || self->close_done == NULL) return;
  void (*done)(void *) = self->close_done;
  self->close_done = NULL;
  sp_http_client_shutdown(self->client, done, self->close_arg);
}

/* Posts the pending profiles of @p r (the push, or the first /ingest). 0 or a send result. */
static int sp__start_post(sp__req_t *r) {
  sp_pyroscope_t *self = r->self;
  int rc;
  if (self->cfg->api == SP_PYROSCOPE_API_PUSH) {
    rc = sp__post(r, self->push_url, r->body.data, r->body.len, sp__on_push);
  } else {
    r->cur = sp__next_pending(r, 0);
    rc = sp__ingest_post(r);
  }
  if (rc == SP_ESHUTDOWN) return SP_ECANCELED;
  if (rc == SP_ENOMEM) return SP_EAGAIN;
  return rc;
}

/* Loop: the pool's work finished; send, or report why not. */
static void sp__work_done(uv_work_t *w, int status) {
  sp__req_t *r = w->data;
  sp_pyroscope_t *self = r->self;
  (void)status; /* never cancelled: uv_cancel is not used */
  self->n_work--;
  /* Each report below may release the item (and free r): nothing touches r after it. */
  if (self->closing) {
    sp__fail(r, SP_ECANCELED, "the exporter is shutting down");
  } else if (r->work_rc == SP_ENOMEM) {
    sp__retry_later(r, 0, "out of memory compressing the profiles");
  } else if (r->work_rc != 0) {
    sp__fail(r, r->work_rc, sp_strerror(r->work_rc));
  } else {
    int rc = sp__start_post(r);
    if (rc == SP_EAGAIN)
      sp__retry_later(r, 0, "out of memory");
    else if (rc != 0)
      sp__fail(r, rc, sp_strerror(rc));
  }
  sp__close_if_idle(self);
}

static int sp__pyroscope_send(void *ctx, sp_exporterhelper_item_t *item,
                              sp_exporterhelper_done_cb done, void *token) {
  sp_pyroscope_t *self = ctx;
  if (self->client == NULL || self->closing) return SP_ECANCELED;
  sp__req_t *r = item->user;
  if (r == NULL) {
    int rc = sp__req_build(self, item, &r);
    if (rc != 0) {
      sp_log_error(self->base.id, "cannot prepare %zu profile(s): %s", item->count,
                   sp_strerror(rc));
      return SP_EAGAIN; /* out of memory: try again later */
    }
    item->user = r;
  }
  r->done = done;
  r->token = token;
  sp__check_stale(self, r);
  if (sp__pending(r) == 0) {
    /* Nothing left to send (all stale or undecodable): report from the loop. */
    return sp_defer(self->base.host->loop, sp__finish_deferred, r) == 0 ? 0 : SP_EAGAIN;
  }
  if (sp__needs_work(r)) {
    r->work.data = r;
    if (uv_queue_work(self->base.host->loop, &r->work, sp__work, sp__work_done) != 0)
      return SP_EAGAIN; /* cannot happen with both callbacks set */
    self->n_work++;
    return 0;
  }
  return sp__start_post(r);
}

static void sp__pyroscope_release(void *ctx, sp_exporterhelper_item_t *item) {
  (void)ctx;
  sp__req_free(item->user);
  item->user = NULL;
}

/* ---- lifecycle -------------------------------------------------------------- */

/*
 * The helper has drained (or the deadline passed with requests in flight):
 * close the client, which ends whatever is still in flight; the helper
 * reports its shutdown after @p done. Work still on the pool cannot be
 * stopped: the client closes once its after_work has run (and reported the
 * send as cancelled), so nothing outlives the shutdown.
 */
static void sp__pyroscope_close(void *ctx, void (*done)(void *arg), void *arg) {
  sp_pyroscope_t *self = ctx;
  self->closing = true;
  self->close_done = done;
  self->close_arg = arg;
  sp__close_if_idle(self);
}

static const sp_exporterhelper_sender_t sp__pyroscope_sender = {
    .send = sp__pyroscope_send,
    .close = sp__pyroscope_close,
    .release = sp__pyroscope_release,
};

/* "Basic base64(user:password)". NULL on OOM. */
static char *sp__basic_auth(const sp_pyroscope_basic_auth_t *ba) {
  char *plain = sp_sprintf("%s:%s", ba->username, ba->password ? ba->password : "");
  if (plain == NULL) return NULL;
  size_t n = strlen(plain);
  char *out = sp_malloc(6 + 4 * ((n + 2) / 3) + 1);
  if (out != NULL) {
    memcpy(out, "Basic ", 6);
    EVP_EncodeBlock((unsigned char *)out + 6, (const unsigned char *)plain, (int)n);
  }
  memset(plain, 0, n);
  sp_free(plain);
  return out;
}

/* The headers sent with every request: auth and tenant win over `headers`. */
static int sp__make_headers(sp_pyroscope_t *self) {
  const sp_pyroscope_cfg_t *cfg = self->cfg;
  if (cfg->basic_auth.present)
    self->authorization = sp__basic_auth(&cfg->basic_auth);
  else if (cfg->bearer_token != NULL)
    self->authorization = sp_sprintf("Bearer %s", cfg->bearer_token);
  if ((cfg->basic_auth.present || cfg->bearer_token != NULL) && self->authorization == NULL)
    return SP_ENOMEM;
  self->headers = sp_calloc(cfg->headers.n + 2, sizeof(*self->headers));
  if (self->headers == NULL) return SP_ENOMEM;
  size_t n = 0;
  for (size_t i = 0; i < cfg->headers.n; i++) {
    const char *k = cfg->headers.keys[i];
    if ((self->authorization != NULL && strcasecmp(k, "Authorization") == 0) ||
        (cfg->tenant_id != NULL && strcasecmp(k, "X-Scope-OrgID") == 0))
      continue;
    self->headers[n++] = (sp_http_header_t){k, cfg->headers.values[i]};
  }
  if (self->authorization != NULL)
    self->headers[n++] = (sp_http_header_t){"Authorization", self->authorization};
  if (cfg->tenant_id != NULL)
    self->headers[n++] = (sp_http_header_t){"X-Scope-OrgID", cfg->tenant_id};
  self->n_headers = n;
  return 0;
}

static void sp__pyroscope_destroy(sp_component_t *base);

static int sp__pyroscope_create(const sp_create_settings_t *set, const void *config,
                                sp_component_t **out) {
  const sp_pyroscope_cfg_t *cfg = config;
  sp_pyroscope_t *self = sp_calloc(1, sizeof(*self));
  int rc = SP_ENOMEM;
  if (self == NULL) return SP_ENOMEM;
  self->cfg = cfg;
  self->push_url = sp__join_url(cfg->endpoint, "/push.v1.PusherService/Push");
  self->ingest_url = sp__join_url(cfg->endpoint, "/ingest");
  if (self->push_url == NULL || self->ingest_url == NULL || sp__make_headers(self) != 0) goto fail;
  for (int i = 0; i < SP__GZ_SHAPES && cfg->compression_params.level == -1; i++)
    if ((rc = sp_compressor_create(NULL, &self->gz[i])) != 0) goto fail;
  snprintf(self->timeout_header, sizeof(self->timeout_header), "%llu",
           (unsigned long long)cfg->timeout_ms);
  self->rules = (sp_pyroscope_rules_t){
      .max_name_len = (size_t)cfg->max_label_name_length,
      .max_value_len = (size_t)cfg->max_label_value_length,
      .max_labels = (size_t)cfg->max_label_names_per_series,
      .external_labels = &cfg->external_labels,
      .span_name_label = cfg->span_name_label,
  };
  /* /ingest adds __delta__ and pyroscope_spy to every series itself. */
  if (cfg->api == SP_PYROSCOPE_API_INGEST && self->rules.max_labels > 4)
    self->rules.max_labels -= 2;

  char labels[300];
  sp_telemetry_t *t = set->host->telemetry;
  snprintf(labels, sizeof(labels), "exporter=\"%s\"", set->id);
  self->stale = sp_telemetry_counter(
      t, "spanprof_exporter_dropped_stale_profiles_total",
      "Profiles dropped unsent because they were older than max_age (Pyroscope refuses them).",
      labels);
  for (int i = 0; i < SP_PYRO_DROP_REASONS; i++) {
    snprintf(labels, sizeof(labels), "exporter=\"%s\",reason=\"%s\"", set->id,
             sp_pyroscope_drop_reason_name((sp_pyroscope_drop_reason_t)i));
    self->dropped[i] = sp_telemetry_counter(
        t, "spanprof_exporter_dropped_labels_total",
        "Labels dropped before sending because the backend would refuse them.", labels);
  }

  sp_exporterhelper_options_t ho = {.id = set->id,
                                    .host = set->host,
                                    .queue = &cfg->sending_queue,
                                    .retry = &cfg->retry_on_failure,
                                    .sender = &sp__pyroscope_sender,
                                    .sender_ctx = self};
  rc = sp_exporterhelper_create(&ho, &self->helper);
  if (rc != 0) {
    sp_log_error(set->id, "cannot create the sending queue: %s", sp_strerror(rc));
    goto fail;
  }
  self->base.input = sp_exporterhelper_consumer(self->helper);
  *out = &self->base;
  return 0;
fail:
  sp__pyroscope_destroy(&self->base);
  return rc;
}

static int sp__pyroscope_start(sp_component_t *base) {
  sp_pyroscope_t *self = (sp_pyroscope_t *)base;
  if (self->client != NULL || self->shut) return SP_ESTATE;
  const sp_pyroscope_cfg_t *cfg = self->cfg;
  return sp_exporterhelper_start_http(self->helper, base, &cfg->tls,
                                      (unsigned)cfg->max_conns_per_host, self->headers,
                                      self->n_headers, &self->client);
}

static void sp__pyroscope_shutdown(sp_component_t *base, sp_done_cb cb, void *arg) {
  sp_pyroscope_t *self = (sp_pyroscope_t *)base;
  self->shut = true;
  /* Drains, then closes the client through the sender's close hook; idempotent. */
  sp_exporterhelper_shutdown(self->helper, cb, arg);
}

static void sp__pyroscope_destroy(sp_component_t *base) {
  sp_pyroscope_t *self = (sp_pyroscope_t *)base;
  if (self == NULL) return;
  sp_exporterhelper_destroy(self->helper);
  sp_http_client_destroy(self->client);
  sp_free(self->headers);
  if (self->authorization != NULL) {
    memset(self->authorization, 0, strlen(self->authorization));
    sp_free(self->authorization);
  }
  sp_free(self->push_url);
  sp_free(self->ingest_url);
  for (int i = 0; i < SP__GZ_SHAPES; i++) /* no pool work is left: shutdown waited for it */
    sp_compressor_destroy(self->gz[i]);
  sp_free(self);
}

const sp_component_def_t sp_exporter_pyroscope = {
    .kind = SP_KIND_EXPORTER,
    .type = "pyroscope",
    .signals = SP_SIGNAL_PROFILES,
    .stability = "development",
    .description = "sends profiles to Grafana Pyroscope (push API or /ingest), with label "
                   "limits, stale-data dropping, queue and retry",
    .schema = &sp__pyroscope_schema,
    .config_size = sizeof(sp_pyroscope_cfg_t),
    .example = "endpoint: http://127.0.0.1:1\n",
    .create = sp__pyroscope_create,
    .start = sp__pyroscope_start,
    .shutdown = sp__pyroscope_shutdown,
    .destroy = sp__pyroscope_destroy,
};
