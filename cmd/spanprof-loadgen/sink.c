/*
 * sink.c — the `sink` mode: an endpoint that receives what spanprofd (or the
 * load generator directly) sends, counts it, and answers with faults on
 * demand.
 *
 * It speaks OTLP/HTTP (/v1/traces, /v1development/profiles; protobuf or
 * JSON, gzip bodies), OTLP/gRPC (TraceService and ProfilesService Export),
 * Pyroscope's /ingest and the Push API (/push.v1.PusherService/Push over
 * Connect/HTTP and over gRPC). Counting must cost far less than producing,
 * so protobuf bodies are not decoded: a wire walk (pipeline/pbwire.h) goes
 * straight down request → resource_spans → scope_spans → spans and counts.
 * The first span of each resource_spans also gives the delivery latency:
 * the load generator makes that span end at the moment it sends the batch,
 * so now − end_time is how long the batch took to get here.
 *
 * Counters are served as JSON on GET /stats (POST /reset zeroes them and
 * the latency histogram), written to --stats-file every second, and printed
 * at exit. POST /faults?status=503&ratio=0.5&delay=20ms&retry_after=1 (or
 * the same flags; every=N instead of ratio fails exactly every Nth request)
 * makes the sink answer a share of requests with an error status (mapped to
 * a gRPC code on gRPC) and/or late.
 */
#include "cmd/spanprof-loadgen/loadgen.h"

#include "pipeline/alloc.h"
#include "pipeline/arena.h"
#include "pipeline/batch.h"
#include "pipeline/compress.h"
#include "pipeline/error.h"
#include "pipeline/log.h"
#include "pipeline/pbjson.h"
#include "pipeline/pbwire.h"
#include "pipeline/transport/grpc_server.h"
#include "pipeline/transport/http_server.h"

#include "opentelemetry/proto/collector/trace/v1/trace_service.pb-c.h"

#include <grpc/status.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

typedef struct lg_sink_counts_s {
  uint64_t requests, bytes, decoded_bytes;
  uint64_t spans, resource_spans;
  uint64_t profiles, inspected, samples, samples_span_id, samples_span_name;
  uint64_t bad, faults;
  uint64_t traces_requests, profiles_requests;
} lg_sink_counts_t;

typedef struct lg_faults_s {
  int status;      /* HTTP status to answer (0: none) */
  double ratio;    /* share of requests that get it (0..1) */
  uint64_t every;  /* instead: exactly every Nth request gets it (0: use ratio) */
  uint64_t seen;
  uint64_t delay_ms;
  int retry_after; /* seconds; 0: no header */
} lg_faults_t;

typedef struct lg_sink_s {
  uv_loop_t *loop;
  sp_http_server_t *http;
  sp_grpc_server_t *grpc;
  lg_sink_counts_t c;
  lg_hist_t lat;
  lg_faults_t faults;
  uint64_t inspect_every; /* read 1 in N pprof bodies for sample counts (0: none) */
  uint64_t seen_profiles;
  uint64_t rng;
  uint64_t start_ns, reset_ns;
  const char *stats_file;
  uv_timer_t stats_timer, stop_timer;
  uv_signal_t sigterm, sigint;
  bool stopping;
  int closing;
  uint64_t pending_delayed;
} lg_sink_t;

/* ---- counting ------------------------------------------------------------------ */

/* Counts spans of an encoded ExportTraceServiceRequest; latency from each first span. */
static int lg__count_traces_proto(lg_sink_t *s, const uint8_t *buf, size_t len) {
  uint64_t now = lg_wall_ns();
  sp_pbwire_t r0 = sp_pbwire_init(buf, len);
  sp_pbwire_field_t f0, f1, f2, f3;
  uint64_t spans = 0;
  while (sp_pbwire_next(&r0, &f0)) {
    if (f0.num != 1 || f0.wt != 2)
      continue;
    s->c.resource_spans++;
    bool first = true;
    sp_pbwire_t r1 = sp_pbwire_sub(&f0);
    while (sp_pbwire_next(&r1, &f1)) {
      if (f1.num != 2 || f1.wt != 2)
        continue;
      sp_pbwire_t r2 = sp_pbwire_sub(&f1);
      while (sp_pbwire_next(&r2, &f2)) {
        if (f2.num != 2 || f2.wt != 2)
          continue;
        spans++;
        if (!first)
          continue;
        first = false;
        sp_pbwire_t r3 = sp_pbwire_sub(&f2);
        while (sp_pbwire_next(&r3, &f3))
          if (f3.num == 8 && f3.wt == 1) {
            if (f3.v < now && now - f3.v < 600ull * 1000000000ull)
              lg_hist_add(&s->lat, (now - f3.v) / 1000);
            break;
          }
      }
      if (r2.bad)
        r1.bad = true;
    }
    if (r1.bad)
      r0.bad = true;
  }
  s->c.spans += spans;
  return r0.bad ? SP_EPROTO : 0;
}

static int lg__count_traces_json(lg_sink_t *s, const uint8_t *buf, size_t len) {
  sp_arena_t *a = sp_arena_create(len + 4096);
  ProtobufCMessage *msg = NULL;
  int rc = a == NULL ? SP_ENOMEM : 0;
  if (rc == 0)
    rc = sp_pbjson_decode(
        &opentelemetry__proto__collector__trace__v1__export_trace_service_request__descriptor,
        (const char *)buf, len, SP_PBJSON_OTLP, sp_arena_pbc(a), &msg, NULL, 0);
  if (rc == 0) {
    const sp_otlp_traces_req_t *req = (const sp_otlp_traces_req_t *)msg;
    uint64_t now = lg_wall_ns();
    s->c.spans += sp_traces_count_spans(req);
    s->c.resource_spans += req->n_resource_spans;
    for (size_t i = 0; i < req->n_resource_spans; i++) {
      const sp_otlp_resource_spans_t *rs = req->resource_spans[i];
      if (rs->n_scope_spans > 0 && rs->scope_spans[0]->n_spans > 0) {
        uint64_t end = rs->scope_spans[0]->spans[0]->end_time_unix_nano;
        if (end < now && now - end < 600ull * 1000000000ull)
          lg_hist_add(&s->lat, (now - end) / 1000);
      }
    }
  }
  sp_arena_destroy(a);
  return rc;
}

/* Counts the samples of an uncompressed pprof, and those labelled span_id / span_name. */
static void lg__count_pprof(lg_sink_t *s, const uint8_t *buf, size_t len) {
  int64_t idx = 0, k_id = -1, k_name = -1;
  sp_pbwire_t r = sp_pbwire_init(buf, len);
  sp_pbwire_field_t f, g, h;
  while (sp_pbwire_next(&r, &f)) {
    if (f.num != 6 || f.wt != 2)
      continue;
    if (f.v == 7 && memcmp(f.data, "span_id", 7) == 0)
      k_id = idx;
    else if (f.v == 9 && memcmp(f.data, "span_name", 9) == 0)
      k_name = idx;
    idx++;
  }
  r = sp_pbwire_init(buf, len);
  while (sp_pbwire_next(&r, &f)) {
    if (f.num != 2 || f.wt != 2)
      continue;
    s->c.samples++;
    bool has_id = false, has_name = false;
    sp_pbwire_t rs = sp_pbwire_sub(&f);
    while (sp_pbwire_next(&rs, &g)) {
      if (g.num != 3 || g.wt != 2)
        continue;
      sp_pbwire_t rl = sp_pbwire_sub(&g);
      while (sp_pbwire_next(&rl, &h))
        if (h.num == 1 && h.wt == 0) {
          has_id |= (int64_t)h.v == k_id;
          has_name |= (int64_t)h.v == k_name;
        }
    }
    s->c.samples_span_id += has_id;
    s->c.samples_span_name += has_name;
  }
}

/* A pprof as sent (gzip or not). */
static void lg__count_profile_bytes(lg_sink_t *s, const uint8_t *buf, size_t len) {
  s->c.profiles++;
  if (s->inspect_every == 0 || s->seen_profiles++ % s->inspect_every != 0)
    return;
  s->c.inspected++;
  if (len >= 2 && sp_is_gzip(buf, len)) {
    sp_buf_t out;
    sp_buf_init(&out, 0);
    if (sp_inflate(buf, len, SP_ENC_GZIP, 256u << 20, &out) == 0) {
      s->c.decoded_bytes += out.len;
      lg__count_pprof(s, out.data, out.len);
    } else {
      s->c.bad++;
    }
    sp_buf_free(&out);
  } else {
    lg__count_pprof(s, buf, len);
  }
}

/* push.v1.PushRequest: series → samples → raw_profile. */
static int lg__count_push(lg_sink_t *s, const uint8_t *buf, size_t len) {
  sp_pbwire_t r0 = sp_pbwire_init(buf, len);
  sp_pbwire_field_t f0, f1, f2;
  while (sp_pbwire_next(&r0, &f0)) {
    if (f0.num != 1 || f0.wt != 2)
      continue;
    sp_pbwire_t r1 = sp_pbwire_sub(&f0);
    while (sp_pbwire_next(&r1, &f1)) {
      if (f1.num != 2 || f1.wt != 2)
        continue;
      sp_pbwire_t r2 = sp_pbwire_sub(&f1);
      while (sp_pbwire_next(&r2, &f2))
        if (f2.num == 1 && f2.wt == 2)
          lg__count_profile_bytes(s, f2.data, (size_t)f2.v);
    }
  }
  return r0.bad ? SP_EPROTO : 0;
}

/* ExportProfilesServiceRequest: resource_profiles → scope_profiles → profiles → samples. */
static int lg__count_otlp_profiles(lg_sink_t *s, const uint8_t *buf, size_t len) {
  sp_pbwire_t r0 = sp_pbwire_init(buf, len);
  sp_pbwire_field_t f0, f1, f2, f3;
  while (sp_pbwire_next(&r0, &f0)) {
    if (f0.num != 1 || f0.wt != 2)
      continue;
    sp_pbwire_t r1 = sp_pbwire_sub(&f0);
    while (sp_pbwire_next(&r1, &f1)) {
      if (f1.num != 2 || f1.wt != 2)
        continue;
      sp_pbwire_t r2 = sp_pbwire_sub(&f1);
      while (sp_pbwire_next(&r2, &f2)) {
        if (f2.num != 2 || f2.wt != 2)
          continue;
        s->c.profiles++;
        sp_pbwire_t r3 = sp_pbwire_sub(&f2);
        while (sp_pbwire_next(&r3, &f3))
          if (f3.num == 2 && f3.wt == 2)
            s->c.samples++;
      }
    }
  }
  return r0.bad ? SP_EPROTO : 0;
}

/* ---- stats ------------------------------------------------------------------------ */

static void lg__stats_json(lg_sink_t *s, sp_buf_t *out) {
  uint64_t now = lg_mono_ns();
  const lg_sink_counts_t *c = &s->c;
  sp_buf_printf(out,
                "{\"uptime_s\":%.3f,\"since_reset_s\":%.3f,\"requests\":%" PRIu64
                ",\"bytes\":%" PRIu64 ",\"decoded_bytes\":%" PRIu64 ",\"spans\":%" PRIu64
                ",\"resource_spans\":%" PRIu64 ",\"traces_requests\":%" PRIu64
                ",\"profiles\":%" PRIu64 ",\"inspected_profiles\":%" PRIu64 ",\"samples\":%" PRIu64 ",\"samples_span_id\":%" PRIu64
                ",\"samples_span_name\":%" PRIu64 ",\"profiles_requests\":%" PRIu64
                ",\"bad\":%" PRIu64 ",\"faults\":%" PRIu64,
                (double)(now - s->start_ns) / 1e9, (double)(now - s->reset_ns) / 1e9, c->requests,
                c->bytes, c->decoded_bytes, c->spans, c->resource_spans, c->traces_requests,
                c->profiles, c->inspected, c->samples, c->samples_span_id, c->samples_span_name,
                c->profiles_requests, c->bad, c->faults);
  sp_buf_printf(out,
                ",\"latency_ms\":{\"p50\":%.3f,\"p90\":%.3f,\"p99\":%.3f,\"max\":%.3f,\"count\":%" PRIu64
                "},\"cpu_seconds\":%.3f,\"peak_rss_kib\":%" PRIu64 "}\n",
                (double)lg_hist_quantile(&s->lat, 0.5) / 1000.0,
                (double)lg_hist_quantile(&s->lat, 0.9) / 1000.0,
                (double)lg_hist_quantile(&s->lat, 0.99) / 1000.0, (double)s->lat.max_us / 1000.0,
                s->lat.count, lg_cpu_seconds(), lg_peak_rss_kib());
}

static void lg__reset(lg_sink_t *s) {
  memset(&s->c, 0, sizeof(s->c));
  memset(&s->lat, 0, sizeof(s->lat));
  s->reset_ns = lg_mono_ns();
}

static void lg__write_stats_file(lg_sink_t *s) {
  if (s->stats_file == NULL)
    return;
  sp_buf_t b;
  sp_buf_init(&b, 0);
  lg__stats_json(s, &b);
  char tmp[1024];
  snprintf(tmp, sizeof(tmp), "%s.tmp", s->stats_file);
  FILE *f = fopen(tmp, "w");
  if (f != NULL) {
    fwrite(b.data, 1, b.len, f);
    fclose(f);
    rename(tmp, s->stats_file);
  }
  sp_buf_free(&b);
}

/* ---- faults ----------------------------------------------------------------------- */

static int lg__parse_faults(const char *query, lg_faults_t *f) {
  char buf[512];
  snprintf(buf, sizeof(buf), "%s", query);
  lg_faults_t n = {0, 1.0, 0, 0, 0, 0};
  for (char *save = NULL, *kv = strtok_r(buf, "&", &save); kv != NULL;
       kv = strtok_r(NULL, "&", &save)) {
    char *eq = strchr(kv, '=');
    if (eq == NULL)
      return -1;
    *eq = '\0';
    const char *v = eq + 1;
    if (strcmp(kv, "status") == 0)
      n.status = atoi(v);
    else if (strcmp(kv, "ratio") == 0)
      n.ratio = atof(v);
    else if (strcmp(kv, "every") == 0)
      n.every = strtoull(v, NULL, 10);
    else if (strcmp(kv, "delay") == 0) {
      if (lg_parse_duration(v, &n.delay_ms) != 0)
        return -1;
    } else if (strcmp(kv, "retry_after") == 0)
      n.retry_after = atoi(v);
    else
      return -1;
  }
  if (n.status != 0 && (n.status < 200 || n.status > 599))
    return -1;
  *f = n;
  return 0;
}

/* Whether this request gets the fault status. */
static bool lg__fault_now(lg_sink_t *s) {
  if (s->faults.status == 0)
    return false;
  if (s->faults.every > 0)
    return ++s->faults.seen % s->faults.every == 0;
  if (s->faults.ratio <= 0)
    return false;
  if (s->faults.ratio >= 1)
    return true;
  return (double)(lg_rand(&s->rng) % 1000000) / 1e6 < s->faults.ratio;
}

static int lg__grpc_code(int http) {
  switch (http) {
  case 400:
    return GRPC_STATUS_INVALID_ARGUMENT;
  case 401:
    return GRPC_STATUS_UNAUTHENTICATED;
  case 403:
    return GRPC_STATUS_PERMISSION_DENIED;
  case 404:
    return GRPC_STATUS_NOT_FOUND;
  case 429:
    return GRPC_STATUS_RESOURCE_EXHAUSTED;
  case 501:
    return GRPC_STATUS_UNIMPLEMENTED;
  case 503:
  case 502:
    return GRPC_STATUS_UNAVAILABLE;
  case 504:
    return GRPC_STATUS_DEADLINE_EXCEEDED;
  default:
    return http >= 500 ? GRPC_STATUS_INTERNAL : GRPC_STATUS_INVALID_ARGUMENT;
  }
}

/* An answer held back by a delay fault. */
typedef struct lg_delayed_s {
  uv_timer_t timer;
  lg_sink_t *sink;
  sp_http_request_t *req;
  sp_grpc_call_t *call;
  int status;
  bool json;
} lg_delayed_t;

static void lg__answer_http(lg_sink_t *s, sp_http_request_t *req, int status, bool json) {
  if (status >= 200 && status < 300) {
    sp_http_respond(req, 200, json ? "application/json" : "application/x-protobuf",
                    json ? "{}" : "", json ? 2 : 0, NULL, 0);
    return;
  }
  char ra[16];
  snprintf(ra, sizeof(ra), "%d", s->faults.retry_after);
  sp_http_header_t h = {"Retry-After", ra};
  const char *msg = "fault injected by spanprof-loadgen sink";
  sp_http_respond(req, status, "text/plain", msg, strlen(msg), &h, s->faults.retry_after > 0);
}

static void lg__answer_grpc(lg_sink_t *s, sp_grpc_call_t *call, int status) {
  if (status >= 200 && status < 300)
    sp_grpc_respond(call, GRPC_STATUS_OK, NULL, (const uint8_t *)"", 0, 0);
  else
    sp_grpc_respond(call, lg__grpc_code(status), "fault injected by spanprof-loadgen sink", NULL,
                    0, (uint64_t)s->faults.retry_after * 1000);
}

static void lg__delayed_closed(uv_handle_t *h) { sp_free(h->data); }

static void lg__delayed_cb(uv_timer_t *t) {
  lg_delayed_t *d = t->data;
  if (d->req != NULL)
    lg__answer_http(d->sink, d->req, d->status, d->json);
  else
    lg__answer_grpc(d->sink, d->call, d->status);
  d->sink->pending_delayed--;
  t->data = d;
  uv_close((uv_handle_t *)t, lg__delayed_closed);
}

/* Answers now or after the configured delay. */
static void lg__finish(lg_sink_t *s, sp_http_request_t *req, sp_grpc_call_t *call, int status,
                       bool json) {
  if (s->faults.delay_ms > 0) {
    lg_delayed_t *d = sp_calloc(1, sizeof(*d));
    if (d != NULL) {
      d->sink = s;
      d->req = req;
      d->call = call;
      d->status = status;
      d->json = json;
      uv_timer_init(s->loop, &d->timer);
      d->timer.data = d;
      uv_timer_start(&d->timer, lg__delayed_cb, s->faults.delay_ms, 0);
      s->pending_delayed++;
      return;
    }
  }
  if (req != NULL)
    lg__answer_http(s, req, status, json);
  else
    lg__answer_grpc(s, call, status);
}

/* ---- handlers --------------------------------------------------------------------- */

enum { LG_KIND_TRACES, LG_KIND_OTLP_PROFILES, LG_KIND_PUSH, LG_KIND_INGEST };

/* Counts one request; returns the HTTP-style status to answer. */
static int lg__consume(lg_sink_t *s, int kind, const uint8_t *body, size_t len, size_t wire_len,
                       bool json) {
  if (lg__fault_now(s)) {
    s->c.faults++;
    return s->faults.status;
  }
  s->c.requests++;
  s->c.bytes += wire_len;
  int rc = 0;
  switch (kind) {
  case LG_KIND_TRACES:
    s->c.traces_requests++;
    rc = json ? lg__count_traces_json(s, body, len) : lg__count_traces_proto(s, body, len);
    break;
  case LG_KIND_OTLP_PROFILES:
    s->c.profiles_requests++;
    rc = lg__count_otlp_profiles(s, body, len);
    break;
  case LG_KIND_PUSH:
    s->c.profiles_requests++;
    rc = lg__count_push(s, body, len);
    break;
  default:
    s->c.profiles_requests++;
    lg__count_profile_bytes(s, body, len);
    break;
  }
  if (rc != 0) {
    s->c.bad++;
    return 400;
  }
  return 200;
}

static void lg__http_handler(sp_http_request_t *req, void *ctx) {
  lg_sink_t *s = ctx;
  const char *ct = sp_http_request_header(req, "content-type");
  bool json = ct != NULL && strstr(ct, "json") != NULL;
  if (req->error_status != 0) {
    s->c.bad++;
    const char *m = req->error_message != NULL ? req->error_message : "bad request";
    sp_http_respond(req, req->error_status, "text/plain", m, strlen(m), NULL, 0);
    return;
  }
  sp_buf_t out;
  if (strcmp(req->path, "/stats") == 0) {
    sp_buf_init(&out, 0);
    lg__stats_json(s, &out);
    sp_http_respond(req, 200, "application/json", out.data, out.len, NULL, 0);
    sp_buf_free(&out);
    return;
  }
  if (strcmp(req->path, "/reset") == 0) {
    /* The counters as they were, so that nothing counted between a read and the reset is lost. */
    sp_buf_init(&out, 0);
    lg__stats_json(s, &out);
    lg__reset(s);
    sp_http_respond(req, 200, "application/json", out.data, out.len, NULL, 0);
    sp_buf_free(&out);
    return;
  }
  if (strcmp(req->path, "/faults") == 0) {
    lg_faults_t f;
    if (lg__parse_faults(req->query, &f) != 0) {
      const char *m = "bad faults query; keys: status, ratio, every, delay, retry_after\n";
      sp_http_respond(req, 400, "text/plain", m, strlen(m), NULL, 0);
      return;
    }
    s->faults = f;
    sp_http_respond(req, 200, "text/plain", "ok\n", 3, NULL, 0);
    return;
  }
  int kind;
  if (strcmp(req->path, "/v1/traces") == 0)
    kind = LG_KIND_TRACES;
  else if (strcmp(req->path, "/v1development/profiles") == 0)
    kind = LG_KIND_OTLP_PROFILES;
  else if (strcmp(req->path, "/push.v1.PusherService/Push") == 0)
    kind = LG_KIND_PUSH;
  else if (strcmp(req->path, "/ingest") == 0)
    kind = LG_KIND_INGEST;
  else {
    sp_http_respond(req, 404, "text/plain", "not found\n", 10, NULL, 0);
    return;
  }
  int status = lg__consume(s, kind, req->body, req->body_len, req->wire_len, json);
  if (kind == LG_KIND_PUSH && status == 200) {
    /* Connect unary: an empty PushResponse. */
    if (s->faults.delay_ms == 0) {
      sp_http_respond(req, 200, json ? "application/json" : "application/proto", json ? "{}" : "",
                      json ? 2 : 0, NULL, 0);
      return;
    }
  }
  if (kind == LG_KIND_INGEST && status == 200 && s->faults.delay_ms == 0) {
    sp_http_respond(req, 200, "text/plain", "", 0, NULL, 0);
    return;
  }
  lg__finish(s, req, NULL, status, json);
}

static void lg__grpc_traces(sp_grpc_call_t *call, const uint8_t *msg, size_t len, void *ctx) {
  lg_sink_t *s = ctx;
  lg__finish(s, NULL, call, lg__consume(s, LG_KIND_TRACES, msg, len, len, false), false);
}

static void lg__grpc_profiles(sp_grpc_call_t *call, const uint8_t *msg, size_t len, void *ctx) {
  lg_sink_t *s = ctx;
  lg__finish(s, NULL, call, lg__consume(s, LG_KIND_OTLP_PROFILES, msg, len, len, false), false);
}

static void lg__grpc_push(sp_grpc_call_t *call, const uint8_t *msg, size_t len, void *ctx) {
  lg_sink_t *s = ctx;
  lg__finish(s, NULL, call, lg__consume(s, LG_KIND_PUSH, msg, len, len, false), false);
}

/* ---- lifecycle -------------------------------------------------------------------- */

static void lg__closed(uv_handle_t *h) {
  lg_sink_t *s = h->data;
  s->closing--;
}

static void lg__server_down(void *arg) {
  lg_sink_t *s = arg;
  s->closing--;
}

static void lg__stop(lg_sink_t *s) {
  if (s->stopping)
    return;
  s->stopping = true;
  lg__write_stats_file(s);
  s->closing = 4;
  uv_close((uv_handle_t *)&s->stats_timer, lg__closed);
  uv_close((uv_handle_t *)&s->stop_timer, lg__closed);
  uv_close((uv_handle_t *)&s->sigterm, lg__closed);
  uv_close((uv_handle_t *)&s->sigint, lg__closed);
  if (s->http != NULL) {
    s->closing++;
    sp_http_server_shutdown(s->http, lg__server_down, s);
  }
  if (s->grpc != NULL) {
    s->closing++;
    sp_grpc_server_shutdown(s->grpc, lg__server_down, s);
  }
}

static void lg__signal_cb(uv_signal_t *h, int signum) {
  (void)signum;
  lg__stop(h->data);
}

static void lg__stop_timer_cb(uv_timer_t *t) { lg__stop(t->data); }

static void lg__stats_timer_cb(uv_timer_t *t) { lg__write_stats_file(t->data); }

static const char lg__sink_help[] =
    "usage: spanprof-loadgen sink [flags]\n"
    "\n"
    "Receives OTLP/HTTP (/v1/traces, /v1development/profiles), OTLP/gRPC,\n"
    "Pyroscope /ingest and the Push API (Connect and gRPC), counts spans,\n"
    "profiles, samples and bytes, and measures delivery latency from the\n"
    "load generator's timestamps.\n"
    "\n"
    "  --http HOST:PORT      OTLP/HTTP + Pyroscope + control endpoint (default 127.0.0.1:4318;\n"
    "                        'off' disables)\n"
    "  --grpc HOST:PORT      OTLP/gRPC + Push endpoint (default 127.0.0.1:4317; 'off' disables)\n"
    "  --stats-file PATH     write the counters as JSON every second (and at exit)\n"
    "  --duration D          exit after D (default: run until SIGTERM/SIGINT)\n"
    "  --count-samples       inflate and read every pprof body to count its samples, and\n"
    "                        those with span_id / span_name labels (costs CPU)\n"
    "  --inspect-every N     the same for 1 in N profiles only (OTLP profiles: samples only)\n"
    "  --fail-status N       answer with HTTP status N (gRPC: the matching code) ...\n"
    "  --fail-ratio R        ... for this share of requests (default 1)\n"
    "  --fail-every N        ... for exactly every Nth request instead\n"
    "  --delay D             answer every request after D\n"
    "  --retry-after S       Retry-After seconds on faults (gRPC: RetryInfo)\n"
    "  --json                print the final counters as JSON (default: also JSON)\n"
    "\n"
    "Control (on the HTTP endpoint): GET /stats, POST /reset (answers the counters it cleared),\n"
    "POST /faults?status=503&ratio=0.5|every=3&delay=20ms&retry_after=1 (no query: no faults).\n";

int lg_sink_main(int argc, char **argv) {
  const char *http_ep = "127.0.0.1:4318", *grpc_ep = "127.0.0.1:4317";
  lg_sink_t s;
  memset(&s, 0, sizeof(s));
  s.faults.ratio = 1.0;
  s.rng = 0x51ac;
  uint64_t duration_ms = 0;
  for (int i = 0; i < argc; i++) {
    const char *a = argv[i];
    const char *v = i + 1 < argc ? argv[i + 1] : NULL;
    if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
      fputs(lg__sink_help, stdout);
      return 0;
    } else if (strcmp(a, "--count-samples") == 0) {
      s.inspect_every = 1;
    } else if (strcmp(a, "--json") == 0) {
      /* the final counters are always JSON */
    } else if (v == NULL) {
      fprintf(stderr, "spanprof-loadgen sink: unknown flag or missing value: %s\n", a);
      return 2;
    } else {
      i++;
      bool ok = true;
      if (strcmp(a, "--http") == 0)
        http_ep = v;
      else if (strcmp(a, "--grpc") == 0)
        grpc_ep = v;
      else if (strcmp(a, "--stats-file") == 0)
        s.stats_file = v;
      else if (strcmp(a, "--inspect-every") == 0)
        s.inspect_every = strtoull(v, NULL, 10);
      else if (strcmp(a, "--duration") == 0)
        ok = lg_parse_duration(v, &duration_ms) == 0;
      else if (strcmp(a, "--fail-status") == 0)
        ok = (s.faults.status = atoi(v)) >= 200 && s.faults.status <= 599;
      else if (strcmp(a, "--fail-ratio") == 0)
        s.faults.ratio = atof(v);
      else if (strcmp(a, "--fail-every") == 0)
        s.faults.every = strtoull(v, NULL, 10);
      else if (strcmp(a, "--delay") == 0)
        ok = lg_parse_duration(v, &s.faults.delay_ms) == 0;
      else if (strcmp(a, "--retry-after") == 0)
        s.faults.retry_after = atoi(v);
      else
        ok = false;
      if (!ok) {
        fprintf(stderr, "spanprof-loadgen sink: bad flag or value: %s %s\n", a, v);
        return 2;
      }
    }
  }
  uv_loop_t loop;
  uv_loop_init(&loop);
  s.loop = &loop;
  s.start_ns = s.reset_ns = lg_mono_ns();
  int rc = 0;
  if (strcmp(http_ep, "off") != 0) {
    sp_http_server_options_t ho = {.endpoint = http_ep,
                                   .component = "sink",
                                   .max_body_size = 256u << 20,
                                   .handler = lg__http_handler,
                                   .handler_ctx = &s};
    rc = sp_http_server_create(&loop, &ho, &s.http);
    if (rc == 0)
      rc = sp_http_server_start(s.http);
    if (rc != 0) {
      fprintf(stderr, "spanprof-loadgen sink: cannot listen on %s: %s\n", http_ep,
              sp_strerror(rc));
      return 1;
    }
  }
  if (strcmp(grpc_ep, "off") != 0) {
    sp_grpc_method_t methods[] = {
        {"/opentelemetry.proto.collector.trace.v1.TraceService/Export", lg__grpc_traces, &s},
        {"/opentelemetry.proto.collector.profiles.v1development.ProfilesService/Export",
         lg__grpc_profiles, &s},
        {"/push.v1.PusherService/Push", lg__grpc_push, &s},
    };
    sp_grpc_server_options_t go = {.endpoint = grpc_ep,
                                   .component = "sink",
                                   .max_recv_msg_size = 256u << 20,
                                   .methods = methods,
                                   .n_methods = 3};
    rc = sp_grpc_server_create(&loop, &go, &s.grpc);
    if (rc == 0)
      rc = sp_grpc_server_start(s.grpc);
    if (rc != 0) {
      fprintf(stderr, "spanprof-loadgen sink: cannot listen on %s: %s\n", grpc_ep,
              sp_strerror(rc));
      return 1;
    }
  }
  uv_timer_init(&loop, &s.stats_timer);
  uv_timer_init(&loop, &s.stop_timer);
  uv_signal_init(&loop, &s.sigterm);
  uv_signal_init(&loop, &s.sigint);
  s.stats_timer.data = s.stop_timer.data = s.sigterm.data = s.sigint.data = &s;
  if (s.stats_file != NULL)
    uv_timer_start(&s.stats_timer, lg__stats_timer_cb, 1000, 1000);
  if (duration_ms > 0)
    uv_timer_start(&s.stop_timer, lg__stop_timer_cb, duration_ms, 0);
  uv_signal_start(&s.sigterm, lg__signal_cb, SIGTERM);
  uv_signal_start(&s.sigint, lg__signal_cb, SIGINT);
  fprintf(stderr, "sink: listening on http %s, grpc %s\n", s.http ? http_ep : "off",
          s.grpc ? grpc_ep : "off");
  lg__write_stats_file(&s);
  while (!s.stopping || s.closing > 0)
    uv_run(&loop, UV_RUN_ONCE);
  sp_buf_t out;
  sp_buf_init(&out, 0);
  lg__stats_json(&s, &out);
  fwrite(out.data, 1, out.len, stdout);
  sp_buf_free(&out);
  sp_http_server_destroy(s.http);
  sp_grpc_server_destroy(s.grpc);
  uv_run(&loop, UV_RUN_DEFAULT);
  uv_loop_close(&loop);
  return 0;
}
