/*
 * pyroscope_push.c — POST /push.v1.PusherService/Push over the Connect
 * protocol (unary), the API Grafana Alloy's pyroscope.write and newer SDKs
 * use.
 *
 * Request: Content-Type application/proto (also application/protobuf and
 * application/x-protobuf) or application/json (standard proto JSON, bytes as
 * base64), optionally Content-Encoding gzip (the HTTP server inflates it
 * within the body limit). A PushRequest holds series; each series has labels
 * and samples, each sample a raw_profile (a pprof, usually gzipped) and an
 * optional ID. Every sample becomes one profile with its series' labels.
 *
 * Labels as Pyroscope's distributor treats them: `__name__` is required
 * (the profile type: process_cpu, memory, ...); a missing `service_name`
 * becomes `unknown_service`; everything else is kept. Span labels among the
 * series labels move onto the samples (pyroscope_profile.c).
 *
 * Answers: 200 with an empty PushResponse in the request's codec; errors as
 * Connect errors, Content-Type application/json and a body
 * {"code": "...", "message": "..."}, with the HTTP status of the Connect
 * code (invalid_argument 400, unavailable 503 + Retry-After, ...), except
 * that an oversized body keeps HTTP 413 (code resource_exhausted). As in
 * Pyroscope, a request mixing valid and invalid samples has the valid ones
 * accepted and is answered invalid_argument naming the first bad one; a
 * request without any sample is "no profiles received".
 *
 * A body of SP_PYRO_POOL_MIN bytes or more is decoded (wire scan, unpack or
 * JSON, then every sample inflated and checked on the wire) on libuv's
 * thread pool; the answer, the counters and the hand-over to the pipeline
 * happen in the after_work callback on the loop (see pyroscope.h).
 */
#include "receivers/pyroscope/pyroscope.h"

#include "pipeline/alloc.h"
#include "pipeline/error.h"
#include "pipeline/json.h"
#include "pipeline/log.h"
#include "pipeline/pbjson.h"
#include "pipeline/pbscan.h"

#include "push/v1/push.pb-c.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>

enum { SP_CODEC_NONE = 0, SP_CODEC_PROTO, SP_CODEC_JSON, SP_CODEC_OTHER };

static int sp__codec(const char *ct) {
  if (ct == NULL || ct[0] == '\0')
    return SP_CODEC_NONE;
  size_t n = strcspn(ct, ";");
  while (n > 0 && (ct[n - 1] == ' ' || ct[n - 1] == '\t'))
    n--;
  if ((n == 17 && strncasecmp(ct, "application/proto", n) == 0) ||
      (n == 20 && strncasecmp(ct, "application/protobuf", n) == 0) ||
      (n == 22 && strncasecmp(ct, "application/x-protobuf", n) == 0))
    return SP_CODEC_PROTO;
  if (n == 16 && strncasecmp(ct, "application/json", n) == 0)
    return SP_CODEC_JSON;
  return SP_CODEC_OTHER;
}

/* The Connect code name for an HTTP status we answer with. */
static const char *sp__connect_code(int status) {
  switch (status) {
  case 400: return "invalid_argument";
  case 401: return "unauthenticated";
  case 403: return "permission_denied";
  case 404: return "not_found";
  case 405: return "unimplemented";
  case 408: return "deadline_exceeded";
  case 413: return "resource_exhausted";
  case 415: return "unimplemented";
  case 429: return "resource_exhausted";
  case 501: return "unimplemented";
  case 503: return "unavailable";
  default: return status >= 500 ? "internal" : "invalid_argument";
  }
}

static void sp__connect_error(sp_http_request_t *req, int status, const char *msg) {
  sp_buf_t out;
  sp_buf_init(&out, 0);
  const char *code = sp__connect_code(status);
  int rc = sp_buf_printf(&out, "{\"code\":\"%s\",\"message\":", code);
  rc |= sp_json_write_string(&out, msg, strlen(msg));
  rc |= sp_buf_putc(&out, '}');
  sp_http_header_t extra[2];
  size_t n_extra = 0;
  if (status == 503 || status == 429)
    extra[n_extra++] = (sp_http_header_t){"Retry-After", "1"};
  if (status == 415)
    extra[n_extra++] = (sp_http_header_t){"Accept-Post", "application/json, application/proto"};
  if (rc != 0)
    sp_http_respond(req, status, "text/plain; charset=utf-8", msg, strlen(msg), extra, n_extra);
  else
    sp_http_respond(req, status, "application/json", out.data, out.len, extra, n_extra);
  sp_buf_free(&out);
}

/* One Push request being handled (on the loop, or on the pool and back). */
typedef struct sp_push_s {
  sp_pyro_t *self;
  sp_http_request_t *req;
  int codec;
  sp_arena_t *scratch;  /* the decoded PushRequest */
  sp_profiles_t *batch; /* what the request turns into */
  int rc;               /* sp__push_decode's result */
  uv_work_t work;
  int status;
  char msg[512];
  size_t rejected;
} sp_push_t;

static int sp__push_bad(sp_push_t *st, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int sp__push_bad(sp_push_t *st, int status, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(st->msg, sizeof(st->msg), fmt, ap);
  va_end(ap);
  st->status = status;
  return SP_EPROTO;
}

/* Adds every sample of every series; remembers the first bad one in @p st. */
static int sp__push_build(sp_pyro_t *self, const Push__V1__PushRequest *pr, sp_profiles_t *batch,
                          sp_push_t *st) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  sp_pyro_pprof_opts_t opts = {
      .time_from_profile = true,
      .now_ns = (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec,
  };
  size_t samples = 0;
  for (size_t i = 0; i < pr->n_series; i++) {
    const Push__V1__RawProfileSeries *s = pr->series[i];
    samples += s->n_samples;
    sp_pyro_labels_t base = {.n = 0};
    const char *bad = NULL;
    for (size_t j = 0; j < s->n_labels && bad == NULL; j++) {
      const Types__V1__LabelPair *l = s->labels[j];
      if (l->name == NULL || l->name[0] == '\0')
        bad = "a label has an empty name";
      else if (sp__pyro_labels_set(&base, l->name, l->value != NULL ? l->value : "") != 0)
        bad = "too many labels";
    }
    const char *name = sp__pyro_labels_get(&base, "__name__");
    if (bad == NULL && (name == NULL || name[0] == '\0'))
      bad = "invalid metric name: the __name__ label (the profile type, e.g. process_cpu) is "
            "missing";
    const char *svc = sp__pyro_labels_get(&base, "service_name");
    if (bad == NULL && (svc == NULL || svc[0] == '\0') &&
        sp__pyro_labels_set(&base, "service_name", "unknown_service") != 0)
      bad = "too many labels";
    if (bad != NULL) {
      st->rejected += s->n_samples;
      if (st->status == 0)
        sp__push_bad(st, 400, "series[%zu]: invalid labels: %s", i, bad);
      continue;
    }
    for (size_t k = 0; k < s->n_samples; k++) {
      const Push__V1__RawSample *rs = s->samples[k];
      sp_pyro_labels_t labels = base; /* span labels may move per profile */
      char err[400];
      int rc;
      if (rs->raw_profile.len == 0) {
        rc = SP_EPROTO;
        snprintf(err, sizeof(err), "empty raw_profile");
      } else {
        rc = sp__pyro_add_pprof(self, batch, &labels, rs->raw_profile.data, rs->raw_profile.len,
                                &opts, err, sizeof(err));
      }
      if (rc == SP_ENOMEM)
        return rc;
      if (rc != 0) {
        st->rejected++;
        if (st->status == 0)
          sp__push_bad(st, rc == SP_ETOOBIG ? 413 : 400, "series[%zu].samples[%zu]%s%s%s: %s", i,
                       k, rs->id != NULL && rs->id[0] ? " (ID " : "",
                       rs->id != NULL ? rs->id : "", rs->id != NULL && rs->id[0] ? ")" : "", err);
      }
    }
  }
  if (samples == 0)
    return sp__push_bad(st, 400, "no profiles received");
  return 0;
}

/*
 * Decodes the PushRequest and adds its samples to st->batch; sets
 * st->status/msg on bad input. Any thread: touches only @p st, the request
 * and the config.
 */
static int sp__push_decode(sp_push_t *st) {
  sp_http_request_t *req = st->req;
  const Push__V1__PushRequest *pr = NULL;
  int rc;
  if (st->codec == SP_CODEC_JSON) {
    ProtobufCMessage *msg = NULL;
    char err[400];
    rc = sp_pbjson_decode(&push__v1__push_request__descriptor, (const char *)req->body,
                          req->body_len, 0, sp_arena_pbc(st->scratch), &msg, err, sizeof(err));
    if (rc == SP_EPROTO)
      sp__push_bad(st, 400, "cannot decode PushRequest: %s", err);
    pr = (const Push__V1__PushRequest *)msg;
  } else {
    /* The scan bounds what unpack may allocate (see pipeline/pbscan.h). */
    char err[400];
    const uint8_t *body = req->body != NULL ? req->body : (const uint8_t *)"";
    rc = sp_pbscan(&push__v1__push_request__descriptor, body, req->body_len, NULL, NULL, err,
                   sizeof(err));
    if (rc == SP_ETOOBIG) {
      rc = sp__push_bad(st, 413, "PushRequest too large: %s", err);
    } else if (rc != 0) {
      rc = sp__push_bad(st, 400, "cannot decode PushRequest (malformed protobuf)");
    } else {
      pr = push__v1__push_request__unpack(sp_arena_pbc(st->scratch), req->body_len, body);
      rc = pr != NULL ? 0 : sp__push_bad(st, 503, "out of memory decoding the PushRequest");
    }
  }
  if (rc == 0)
    rc = sp__push_build(st->self, pr, st->batch, st);
  return rc;
}

/* Loop: hands the batch over (or explains why not), counts, answers, frees @p st. */
static void sp__push_finish(sp_push_t *st) {
  sp_pyro_t *self = st->self;
  sp_http_request_t *req = st->req;
  const sp_pyro_metrics_t *m = &self->m_push;
  sp_profiles_t *batch = st->batch;
  int rc = st->rc;
  if (rc == 0) {
    sp__pyro_set_meta(batch, req);
    rc = sp__pyro_consume(self, m, batch);
    batch = NULL;
    if (rc == SP_EAGAIN)
      sp__push_bad(st, 503, "the pipeline is full; retry later");
    else if (rc != 0)
      sp__push_bad(st, 400, "the pipeline rejected the profiles: %s", sp_strerror(rc));
  }
  if (rc == SP_ENOMEM)
    sp__push_bad(st, 503, "out of memory; retry later");
  if (st->rejected > 0)
    sp_metric_add(m->rejected, st->rejected);
  if (st->status >= 400 && st->status < 500) {
    sp_metric_add(m->bad_requests, 1);
    sp_log_debug(self->base.id, "rejected Push from %s: %s", req->remote_addr, st->msg);
  }
  sp_profiles_unref(batch);
  sp_arena_destroy(st->scratch);
  if (st->status != 0) {
    sp__connect_error(req, st->status, st->msg);
  } else if (st->codec == SP_CODEC_JSON) {
    sp_http_respond(req, 200, "application/json", "{}", 2, NULL, 0);
  } else {
    sp_http_respond(req, 200, "application/proto", "", 0, NULL, 0);
  }
  sp_free(st);
}

/* Thread pool: the request into its batch. */
static void sp__push_work(uv_work_t *w) {
  sp_push_t *st = w->data;
  st->rc = sp__push_decode(st);
}

static void sp__push_work_done(uv_work_t *w, int status) {
  sp_push_t *st = w->data;
  (void)status; /* never cancelled */
  sp__pyro_offload_done(st->self);
  sp__push_finish(st);
}

void sp__pyro_push_handle(sp_pyro_t *self, sp_http_request_t *req) {
  const sp_pyro_metrics_t *m = &self->m_push;
  if (req->error_status != 0) {
    sp_metric_add(m->bad_requests, 1);
    sp__connect_error(req, req->error_status,
                      req->error_message != NULL ? req->error_message : "bad request");
    return;
  }
  if (strcmp(req->method, "POST") != 0) {
    sp_metric_add(m->bad_requests, 1);
    sp__connect_error(req, 405, "Push takes POST");
    return;
  }
  int codec = sp__codec(sp_http_request_header(req, "content-type"));
  if (codec != SP_CODEC_PROTO && codec != SP_CODEC_JSON) {
    sp_metric_add(m->bad_requests, 1);
    sp__connect_error(req, 415,
                      "unsupported content type; use application/proto or application/json");
    return;
  }
  sp_push_t *st = sp_calloc(1, sizeof(*st));
  if (st == NULL) {
    sp__connect_error(req, 503, "out of memory; retry later");
    return;
  }
  st->self = self;
  st->req = req;
  st->codec = codec;
  st->rc = SP_ENOMEM;
  st->scratch = sp_arena_create(req->body_len + 4096);
  st->batch = sp_profiles_create();
  if (st->scratch != NULL && st->batch != NULL) {
    if (sp__pyro_offload(self, req->body_len)) {
      st->work.data = st;
      uv_queue_work(self->base.host->loop, &st->work, sp__push_work, sp__push_work_done);
      return; /* answered from sp__push_work_done */
    }
    st->rc = sp__push_decode(st);
  }
  sp__push_finish(st);
}
