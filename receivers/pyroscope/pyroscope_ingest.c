/*
 * pyroscope_ingest.c — POST /ingest, Pyroscope's legacy ingestion API, as
 * its server understands it.
 *
 * Query parameters:
 *   name             `app{key=value,...}` — the app (service) name before
 *                    `{`, labels inside. Service names take [A-Za-z0-9_.-/],
 *                    label names [A-Za-z0-9_.]; blanks around both are
 *                    trimmed; an empty value drops the label. Unlike
 *                    Pyroscope (which ignores them), a missing `}` or a label
 *                    without `=` are answered 400.
 *   from, until      Unix time in seconds, milliseconds, microseconds or
 *                    nanoseconds, told apart by the digit count (13, 16 and
 *                    19 digits mean ms, µs, ns; 8 digits YYYYMMDD a date;
 *                    anything else seconds). Missing: now. Anything that is
 *                    not digits is a 400 (Pyroscope's relative forms such as
 *                    `now-1h` are not accepted).
 *   format           pprof | groups (the default; also "folded", "collapsed") | lines;
 *                    jfr, trie, tree, speedscope and others are answered 400.
 *   sampleRate       Hz, for folded cpu/wall; default 100; junk means 100.
 *   spyName          the `pyroscope_spy` label (default "unknown").
 *   units, aggregationType  accepted and ignored (pprof carries both).
 * Body: a pprof (gzip detected by its magic bytes) for format=pprof, or a
 * multipart/form-data upload with a `profile` part (the Go and Node SDKs;
 * then `format` is absent) and optionally `sample_type_config` (JSON: sample
 * type → {display-name, units, aggregation, cumulative}, used, as Pyroscope
 * uses it, to name the profile type) and `prev_profile` (refused with
 * Pyroscope's message, as only very old Go SDKs send it). Without `format`,
 * a gzip body is taken as pprof too.
 *
 * Series labels, as Pyroscope builds them: `__name__` (for pprof from the
 * sample types: wall, process_cpu, memory, mutex, block, goroutines; for
 * folded from the app name's suffix), `__delta__`="false", `pyroscope_spy`,
 * `service_name` (the app name — for folded without its type suffix — unless
 * the labels carry one; then folded keeps the app name as `app_name`), and
 * the labels from `name` except private `__...` ones (`__session_id__` is
 * kept).
 *
 * Answers: 200 with an empty body; 400 text for bad input, naming the
 * parameter; 413 over the body or profile size limit; 503 + Retry-After when
 * the pipeline is full.
 *
 * A body of SP_PYRO_POOL_MIN bytes or more is turned into its batch
 * (sp__ingest_build: query, name, times, inflate, check on the wire) on
 * libuv's thread pool; everything it touches is the request, the job below
 * and the const config. The answer, the counters and the hand-over to the
 * pipeline happen in the after_work callback, on the loop (see pyroscope.h).
 */
#include "receivers/pyroscope/pyroscope.h"

#include "pipeline/alloc.h"
#include "pipeline/compress.h"
#include "pipeline/error.h"
#include "pipeline/json.h"
#include "pipeline/log.h"

#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

/* One /ingest request being handled (on the loop, or on the pool and back). */
typedef struct sp_ingest_s {
  sp_pyro_t *self;
  sp_http_request_t *req;
  sp_arena_t *scratch;
  sp_profiles_t *batch; /* what the request turns into */
  int rc;               /* sp__ingest_build's result */
  uv_work_t work;
  /* query */
  const char *name, *from, *until, *format, *sample_rate, *spy_name;
  /* parsed */
  const char *app;
  sp_pyro_labels_t tags; /* labels from `name` */
  int64_t start_ns, end_ns;
  uint32_t rate;
  int status;
  char msg[512];
} sp_ingest_t;

static int sp__bad(sp_ingest_t *in, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int sp__bad(sp_ingest_t *in, int status, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(in->msg, sizeof(in->msg), fmt, ap);
  va_end(ap);
  in->status = status;
  return SP_EPROTO;
}

/* ---- query string --------------------------------------------------------------- */

static int sp__hexval(int c) {
  if (c >= '0' && c <= '9')
    return c - '0';
  c = tolower(c);
  return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* Percent-decodes [s, s+n) into the arena ('+' is a space; a bad escape is kept as is). */
static char *sp__unescape(sp_arena_t *arena, const char *s, size_t n) {
  char *out = sp_arena_alloc(arena, n + 1);
  if (out == NULL)
    return NULL;
  size_t w = 0;
  for (size_t i = 0; i < n; i++) {
    int hi, lo;
    if (s[i] == '+') {
      out[w++] = ' ';
    } else if (s[i] == '%' && i + 2 < n && (hi = sp__hexval((unsigned char)s[i + 1])) >= 0 &&
               (lo = sp__hexval((unsigned char)s[i + 2])) >= 0) {
      out[w++] = (char)(hi << 4 | lo);
      i += 2;
    } else {
      out[w++] = s[i];
    }
  }
  out[w] = '\0';
  return out;
}

static int sp__parse_query(sp_ingest_t *in, const char *q) {
  static const struct {
    const char *key;
    size_t off;
  } keys[] = {
      {"name", offsetof(sp_ingest_t, name)},
      {"from", offsetof(sp_ingest_t, from)},
      {"until", offsetof(sp_ingest_t, until)},
      {"format", offsetof(sp_ingest_t, format)},
      {"sampleRate", offsetof(sp_ingest_t, sample_rate)},
      {"spyName", offsetof(sp_ingest_t, spy_name)},
  };
  while (*q != '\0') {
    size_t n = strcspn(q, "&;");
    const char *eq = memchr(q, '=', n);
    size_t klen = eq != NULL ? (size_t)(eq - q) : n;
    char *key = sp__unescape(in->scratch, q, klen);
    char *val = eq != NULL ? sp__unescape(in->scratch, eq + 1, n - klen - 1)
                           : sp__unescape(in->scratch, "", 0);
    if (key == NULL || val == NULL)
      return SP_ENOMEM;
    for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
      const char **slot = (const char **)((char *)in + keys[i].off);
      if (strcmp(key, keys[i].key) == 0 && *slot == NULL)
        *slot = val; /* the first value wins, as in Go's url.Values.Get */
    }
    q += n;
    if (*q != '\0')
      q++;
  }
  return 0;
}

/* ---- name ------------------------------------------------------------------------- */

static char *sp__trim(sp_arena_t *arena, const char *s, size_t n) {
  while (n > 0 && isspace((unsigned char)*s))
    s++, n--;
  while (n > 0 && isspace((unsigned char)s[n - 1]))
    n--;
  return sp_arena_strndup(arena, s, n);
}

static bool sp__label_char(int c) { return isalnum(c) || c == '_' || c == '.'; }

static bool sp__service_char(int c) { return sp__label_char(c) || c == '-' || c == '/'; }

static int sp__check_service(sp_ingest_t *in, const char *app) {
  if (app[0] == '\0')
    return sp__bad(in, 400, "name: service name is required (e.g. name=myapp.cpu{env=prod})");
  for (const char *c = app; *c; c++)
    if (!sp__service_char((unsigned char)*c))
      return sp__bad(in, 400, "name: invalid service name \"%s\": character '%c' is not allowed",
                     app, *c);
  return 0;
}

static int sp__parse_name(sp_ingest_t *in) {
  const char *s = in->name != NULL ? in->name : "";
  const char *brace = strchr(s, '{');
  size_t app_len = brace != NULL ? (size_t)(brace - s) : strlen(s);
  char *app = sp__trim(in->scratch, s, app_len);
  if (app == NULL)
    return SP_ENOMEM;
  in->app = app;
  int rc = sp__check_service(in, app);
  if (rc != 0 || brace == NULL)
    return rc;
  const char *p = brace + 1;
  const char *close = strchr(p, '}');
  if (close == NULL)
    return sp__bad(in, 400, "name: the label set after \"%s\" has no closing '}'", app);
  while (p < close) {
    size_t n = (size_t)(close - p);
    const char *comma = memchr(p, ',', n);
    size_t len = comma != NULL ? (size_t)(comma - p) : n;
    const char *eq = memchr(p, '=', len);
    if (eq == NULL) {
      char *t = sp__trim(in->scratch, p, len);
      if (t == NULL)
        return SP_ENOMEM;
      if (t[0] != '\0')
        return sp__bad(in, 400, "name: label \"%s\" has no value (expected key=value)", t);
    } else {
      char *key = sp__trim(in->scratch, p, (size_t)(eq - p));
      char *val = sp__trim(in->scratch, eq + 1, len - (size_t)(eq - p) - 1);
      if (key == NULL || val == NULL)
        return SP_ENOMEM;
      if (key[0] == '\0')
        return sp__bad(in, 400, "name: label name is required (in \"%.*s\")", (int)len, p);
      if (strcmp(key, "__name__") == 0) {
        /* Pyroscope lets the reserved label replace the app name. */
        if ((rc = sp__check_service(in, val)) != 0)
          return rc;
        in->app = val;
      } else {
        for (const char *c = key; *c; c++)
          if (!sp__label_char((unsigned char)*c))
            return sp__bad(in, 400,
                           "name: invalid label name \"%s\": character '%c' is not allowed", key,
                           *c);
        if (val[0] == '\0')
          sp__pyro_labels_del(&in->tags, key);
        else if (sp__pyro_labels_set(&in->tags, key, val) != 0)
          return sp__bad(in, 400, "name: too many labels (at most %d)", SP_PYRO_MAX_LABELS);
      }
    }
    p += len;
    if (p < close)
      p++; /* the comma */
  }
  return 0;
}

/* ---- time --------------------------------------------------------------------------- */

/*
 * Pyroscope's attime rules for a digits-only value: 8 digits that form a
 * date are that date (UTC midnight); 13, 16 and 19 digits are ms, µs and
 * ns; any other length is seconds. '_', ',' and blanks are ignored.
 */
static int sp__parse_time(sp_ingest_t *in, const char *what, const char *s, int64_t now_ns,
                          int64_t *out) {
  if (s == NULL || s[0] == '\0') {
    *out = now_ns;
    return 0;
  }
  char d[32];
  size_t n = 0;
  for (const char *c = s; *c; c++) {
    if (*c == '_' || *c == ',' || *c == ' ')
      continue;
    if (!isdigit((unsigned char)*c) || n == sizeof(d) - 1)
      return sp__bad(in, 400,
                     "%s: invalid timestamp \"%s\" (expected Unix time in s, ms, us or ns)", what,
                     s);
    d[n++] = *c;
  }
  d[n] = '\0';
  if (n == 0)
    return sp__bad(in, 400, "%s: invalid timestamp \"%s\"", what, s);
  if (n == 8) {
    struct tm tm;
    memset(&tm, 0, sizeof(tm));
    tm.tm_year = (d[0] - '0') * 1000 + (d[1] - '0') * 100 + (d[2] - '0') * 10 + (d[3] - '0') - 1900;
    tm.tm_mon = (d[4] - '0') * 10 + (d[5] - '0') - 1;
    tm.tm_mday = (d[6] - '0') * 10 + (d[7] - '0');
    if (tm.tm_year > 0 && tm.tm_mon >= 0 && tm.tm_mon < 12 && tm.tm_mday >= 1 &&
        tm.tm_mday <= 31) {
      *out = (int64_t)timegm(&tm) * 1000000000LL;
      return 0;
    }
  }
  errno = 0;
  char *end;
  unsigned long long v = strtoull(d, &end, 10);
  int64_t mul = n == 13 ? 1000000 : n == 16 ? 1000 : n == 19 ? 1 : 1000000000;
  if (errno != 0 || v > (unsigned long long)(INT64_MAX / mul))
    return sp__bad(in, 400, "%s: timestamp \"%s\" is out of range", what, s);
  *out = (int64_t)v * mul;
  return 0;
}

/* ---- sample_type_config ----------------------------------------------------------- */

static int sp__parse_stc(sp_ingest_t *in, const uint8_t *data, size_t len, sp_pyro_stcs_t *out) {
  sp_json_t *root = NULL;
  sp_json_error_t jerr;
  out->present = true;
  int rc = sp_json_parse((const char *)data, len, in->scratch, 0, &root, &jerr);
  if (rc == SP_ENOMEM)
    return rc;
  if (rc != 0)
    return sp__bad(in, 400, "sample_type_config: invalid JSON at line %u, column %u: %s",
                   jerr.line, jerr.column, jerr.reason);
  if (root->type != SP_JSON_OBJECT)
    return sp__bad(in, 400, "sample_type_config: expected a JSON object, got %s",
                   sp_json_type_name(root->type));
  size_t n = root->u.object.count;
  out->items = sp_arena_calloc(in->scratch, (n > 0 ? n : 1) * sizeof(sp_pyro_stc_t));
  if (out->items == NULL)
    return SP_ENOMEM;
  for (size_t i = 0; i < n; i++) {
    const sp_json_member_t *m = &root->u.object.members[i];
    if (m->value.type == SP_JSON_NULL)
      continue;
    if (m->value.type != SP_JSON_OBJECT)
      return sp__bad(in, 400, "sample_type_config.%s: expected an object, got %s", m->key,
                     sp_json_type_name(m->value.type));
    const sp_json_t *dn = sp_json_get(&m->value, "display-name");
    if (dn != NULL && dn->type != SP_JSON_STRING && dn->type != SP_JSON_NULL)
      return sp__bad(in, 400, "sample_type_config.%s.display-name: expected a string", m->key);
    out->items[out->n].type = m->key;
    out->items[out->n].display_name = dn != NULL && dn->type == SP_JSON_STRING ? dn->u.string.ptr
                                                                              : NULL;
    out->n++;
  }
  return 0;
}

/* ---- building the batch ----------------------------------------------------------- */

/* The labels from `name` that Pyroscope keeps: no private `__...` ones but __session_id__. */
static int sp__copy_tags(sp_ingest_t *in, sp_pyro_labels_t *l) {
  for (size_t i = 0; i < in->tags.n; i++) {
    const sp_label_t *t = &in->tags.items[i];
    if (strncmp(t->name, "__", 2) == 0 && strcmp(t->name, "__session_id__") != 0)
      continue;
    if (sp__pyro_labels_set(l, t->name, t->value) != 0)
      return sp__bad(in, 400, "name: too many labels (at most %d)", SP_PYRO_MAX_LABELS);
  }
  return 0;
}

static const char *sp__spy(const sp_ingest_t *in) {
  return in->spy_name != NULL && in->spy_name[0] != '\0' ? in->spy_name : "unknown";
}

static int sp__ingest_pprof(sp_ingest_t *in, sp_profiles_t *batch, const uint8_t *data,
                            size_t len, const sp_pyro_stcs_t *stcs) {
  sp_pyro_labels_t labels = {.n = 0};
  sp__pyro_labels_set(&labels, "__name__", "");
  sp__pyro_labels_set(&labels, "__delta__", "false");
  sp__pyro_labels_set(&labels, "pyroscope_spy", sp__spy(in));
  if (sp__pyro_labels_get(&in->tags, "service_name") == NULL)
    sp__pyro_labels_set(&labels, "service_name", in->app);
  int rc = sp__copy_tags(in, &labels);
  if (rc != 0)
    return rc;
  sp_pyro_pprof_opts_t opts = {
      .derive_name = true,
      .stcs = stcs,
      .start_ns = in->start_ns,
      .end_ns = in->end_ns,
  };
  char err[400];
  rc = sp__pyro_add_pprof(in->self, batch, &labels, data, len, &opts, err, sizeof(err));
  if (rc == SP_ETOOBIG)
    return sp__bad(in, 413, "%s", err);
  if (rc == SP_EPROTO)
    return sp__bad(in, 400, "profile: %s", err);
  return rc;
}

static int sp__ingest_folded(sp_ingest_t *in, sp_profiles_t *batch, bool lines) {
  sp_pyro_folded_type_t type;
  const char *app;
  char err[400];
  int rc = sp__pyro_folded_type(in->app, in->scratch, &app, &type, err, sizeof(err));
  if (rc == SP_EPROTO)
    return sp__bad(in, 400, "name: %s", err);
  if (rc != 0)
    return rc;
  sp_pprof_t *pp = NULL;
  rc = sp__pyro_folded_to_pprof(batch->arena, in->req->body, in->req->body_len, lines, &type,
                                in->rate, in->start_ns, in->end_ns, &pp, err, sizeof(err));
  if (rc == SP_EPROTO)
    return sp__bad(in, 400, "body: %s", err);
  if (rc != 0)
    return rc;
  if (pp->n_sample == 0)
    return 0; /* nothing to store, as an empty tree in Pyroscope */
  sp_pyro_labels_t labels = {.n = 0};
  sp__pyro_labels_set(&labels, "__name__", type.metric);
  sp__pyro_labels_set(&labels, "__delta__", "false");
  sp__pyro_labels_set(&labels, "pyroscope_spy", sp__spy(in));
  if ((rc = sp__copy_tags(in, &labels)) != 0)
    return rc;
  if (sp__pyro_labels_get(&labels, "service_name") == NULL)
    rc = sp__pyro_labels_set(&labels, "service_name", app);
  else if (sp__pyro_labels_get(&labels, "app_name") == NULL)
    rc = sp__pyro_labels_set(&labels, "app_name", app);
  if (rc != 0)
    return sp__bad(in, 400, "name: too many labels (at most %d)", SP_PYRO_MAX_LABELS);
  return sp__pyro_add_built(batch, &labels, pp, in->start_ns, in->end_ns, err, sizeof(err));
}

static int sp__ingest_form(sp_ingest_t *in, sp_profiles_t *batch, const char *ct) {
  sp_pyro_part_t parts[SP_PYRO_MAX_PARTS];
  size_t n = 0;
  char err[400];
  int rc = sp__pyro_multipart_parse(ct, in->req->body, in->req->body_len, in->scratch, parts, &n,
                                    err, sizeof(err));
  if (rc == SP_EPROTO)
    return sp__bad(in, 400, "%s", err);
  if (rc != 0)
    return rc;
  const sp_pyro_part_t *profile = NULL, *prev = NULL, *stc = NULL;
  for (size_t i = 0; i < n; i++) {
    if (strcmp(parts[i].name, "profile") == 0 && profile == NULL)
      profile = &parts[i];
    else if (strcmp(parts[i].name, "prev_profile") == 0 && prev == NULL)
      prev = &parts[i];
    else if (strcmp(parts[i].name, "sample_type_config") == 0 && stc == NULL)
      stc = &parts[i];
  }
  if (profile == NULL)
    return sp__bad(in, 400, "multipart form has no \"profile\" part");
  if (prev != NULL && prev->len > 0)
    return sp__bad(in, 400,
                   "unsupported client version (the form has a prev_profile part); please update "
                   "github.com/grafana/pyroscope-go to the latest version");
  sp_pyro_stcs_t stcs = {0};
  if (stc != NULL && stc->len > 0 && (rc = sp__parse_stc(in, stc->data, stc->len, &stcs)) != 0)
    return rc;
  return sp__ingest_pprof(in, batch, profile->data, profile->len, &stcs);
}

static bool sp__is_multipart(const char *ct) {
  return ct != NULL && strncasecmp(ct, "multipart/form-data", 19) == 0;
}

/* Turns the request into @p batch; sets in->status/msg on bad input. */
static int sp__ingest_build(sp_ingest_t *in, sp_profiles_t *batch) {
  sp_http_request_t *req = in->req;
  int rc = sp__parse_query(in, req->query);
  if (rc == 0)
    rc = sp__parse_name(in);
  if (rc != 0)
    return rc;
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  int64_t now = (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
  if ((rc = sp__parse_time(in, "from", in->from, now, &in->start_ns)) != 0 ||
      (rc = sp__parse_time(in, "until", in->until, now, &in->end_ns)) != 0)
    return rc;
  if (in->end_ns < in->start_ns)
    return sp__bad(in, 400, "until (%s) is before from (%s)", in->until ? in->until : "now",
                   in->from ? in->from : "now");
  in->rate = 100;
  if (in->sample_rate != NULL && in->sample_rate[0] != '\0') {
    char *end;
    errno = 0;
    long v = strtol(in->sample_rate, &end, 10);
    if (errno == 0 && *end == '\0' && v >= 0 && v <= UINT32_MAX)
      in->rate = (uint32_t)v; /* junk falls back to the default, as Pyroscope does */
  }
  const char *ct = sp_http_request_header(req, "content-type");
  const char *fmt = in->format != NULL ? in->format : "";
  if (strcmp(fmt, "jfr") == 0 || strcmp(fmt, "trie") == 0 || strcmp(fmt, "tree") == 0 ||
      strcmp(fmt, "speedscope") == 0 ||
      (ct != NULL && (strncasecmp(ct, "binary/octet-stream+trie", 24) == 0 ||
                      strncasecmp(ct, "binary/octet-stream+tree", 24) == 0)))
    return sp__bad(in, 400,
                   "unsupported format \"%s\": this receiver takes pprof (raw or in a multipart "
                   "form), groups (folded) and lines",
                   fmt[0] ? fmt : (ct != NULL ? ct : ""));
  if (sp__is_multipart(ct) && (fmt[0] == '\0' || strcmp(fmt, "pprof") == 0))
    return sp__ingest_form(in, batch, ct);
  if (strcmp(fmt, "pprof") == 0 ||
      (fmt[0] == '\0' && sp_is_gzip(req->body, req->body_len)))
    return sp__ingest_pprof(in, batch, req->body, req->body_len, NULL);
  if (fmt[0] == '\0' || strcmp(fmt, "groups") == 0 || strcmp(fmt, "folded") == 0 ||
      strcmp(fmt, "collapsed") == 0)
    return sp__ingest_folded(in, batch, false);
  if (strcmp(fmt, "lines") == 0)
    return sp__ingest_folded(in, batch, true);
  return sp__bad(in, 400, "unknown format \"%s\" (expected pprof, groups, folded or lines)", fmt);
}

static void sp__respond_text(sp_http_request_t *req, int status, const char *msg) {
  char body[600];
  int n = snprintf(body, sizeof(body), "%s\n", msg);
  if (n < 0 || (size_t)n >= sizeof(body))
    n = (int)sizeof(body) - 1;
  static const sp_http_header_t retry[] = {{"Retry-After", "1"}};
  bool retryable = status == 503 || status == 429;
  sp_http_respond(req, status, "text/plain; charset=utf-8", body, (size_t)n,
                  retryable ? retry : NULL, retryable ? 1 : 0);
}

/* Loop: hands the batch over (or explains why not), answers, frees @p in. */
static void sp__ingest_finish(sp_ingest_t *in) {
  sp_pyro_t *self = in->self;
  sp_http_request_t *req = in->req;
  const sp_pyro_metrics_t *m = &self->m_ingest;
  sp_profiles_t *batch = in->batch;
  int rc = in->rc;
  if (rc == 0) {
    sp__pyro_set_meta(batch, req);
    rc = sp__pyro_consume(self, m, batch);
    batch = NULL;
    if (rc == SP_EAGAIN)
      sp__bad(in, 503, "the pipeline is full; retry later");
    else if (rc != 0)
      sp__bad(in, 400, "the pipeline rejected the profile: %s", sp_strerror(rc));
  } else if (rc == SP_ENOMEM) {
    sp__bad(in, 503, "out of memory; retry later");
  } else {
    sp_metric_add(m->bad_requests, 1);
    sp_metric_add(m->rejected, 1);
    if (in->status == 0)
      sp__bad(in, 400, "%s", sp_strerror(rc));
    sp_log_debug(self->base.id, "rejected /ingest from %s: %s", req->remote_addr, in->msg);
  }
  sp_profiles_unref(batch);
  sp_arena_destroy(in->scratch);
  if (rc == 0)
    sp_http_respond(req, 200, "text/plain; charset=utf-8", "", 0, NULL, 0);
  else
    sp__respond_text(req, in->status, in->msg);
  sp_free(in);
}

/* Thread pool: the request into its batch; touches only @p in, the request and the config. */
static void sp__ingest_work(uv_work_t *w) {
  sp_ingest_t *in = w->data;
  in->rc = sp__ingest_build(in, in->batch);
}

static void sp__ingest_work_done(uv_work_t *w, int status) {
  sp_ingest_t *in = w->data;
  (void)status; /* never cancelled */
  sp__pyro_offload_done(in->self);
  sp__ingest_finish(in);
}

void sp__pyro_ingest_handle(sp_pyro_t *self, sp_http_request_t *req) {
  const sp_pyro_metrics_t *m = &self->m_ingest;
  if (req->error_status != 0) {
    sp_metric_add(m->bad_requests, 1);
    sp__respond_text(req, req->error_status, req->error_message ? req->error_message : "bad request");
    return;
  }
  if (strcmp(req->method, "POST") != 0) {
    static const sp_http_header_t allow[] = {{"Allow", "POST"}};
    static const char msg[] = "method not allowed: /ingest takes POST\n";
    sp_metric_add(m->bad_requests, 1);
    sp_http_respond(req, 405, "text/plain; charset=utf-8", msg, sizeof(msg) - 1, allow, 1);
    return;
  }
  sp_ingest_t *in = sp_calloc(1, sizeof(*in));
  if (in == NULL) {
    sp__respond_text(req, 503, "out of memory; retry later");
    return;
  }
  in->self = self;
  in->req = req;
  in->rc = SP_ENOMEM;
  in->scratch = sp_arena_create(4096 + strlen(req->query) * 2);
  in->batch = sp_profiles_create();
  if (in->scratch != NULL && in->batch != NULL) {
    if (sp__pyro_offload(self, req->body_len)) {
      in->work.data = in;
      uv_queue_work(self->base.host->loop, &in->work, sp__ingest_work, sp__ingest_work_done);
      return; /* answered from sp__ingest_work_done */
    }
    in->rc = sp__ingest_build(in, in->batch);
  }
  sp__ingest_finish(in);
}
