/*
 * otlphttp exporter — sends traces and profiles over OTLP/HTTP (what
 * Grafana Tempo ingests on :4318), as the OpenTelemetry Collector's
 * `otlphttp` exporter does.
 *
 * Each batch is one POST of an ExportTraceServiceRequest to
 * `<endpoint>/v1/traces` (an unchanged batch goes out as the bytes it
 * arrived as), or of an ExportProfilesServiceRequest built from the
 * internal profiles to `<endpoint>/v1development/profiles`; protobuf or
 * JSON, gzip or not. The body is built once per batch and kept across
 * retries. Requests run on the shared libcurl-multi client
 * (pipeline/transport/http_client.h); the exporter helper
 * (pipeline/exporterhelper.h) queues, retries and drains.
 *
 * Compression. gzip is the Collector's default and what most backends
 * expect, but deflate dominates the cost of a send: at zlib's default level
 * (6) it was ~83% of the daemon's CPU and capped delivery at ~360k spans/s.
 * So deflate runs on libuv's thread pool and on ISA-L (pipeline/compress.c:
 * level 1 is about 15x faster than zlib's level 6 for ~10% more bytes; set
 * `compression_params: {level: N}` as in the Collector's confighttp for
 * another trade-off), and the default level -1 compresses through an sp_compressor_t per signal
 * (pipeline/compress.h): ISA-L level 0 with Huffman tables learned from earlier requests, ~0.78x of
 * level 1's time for the same bytes on the load generator's requests.
 *
 *   send (loop) ── encode: the batch's own bytes, or JSON / profiles built
 *        │         here (the batch is read only on the loop)
 *        ▼
 *   uv_queue_work ── gzip the encoding into the request's own buffer
 *        │           (pipeline/compress.h is thread-safe; nothing else is
 *        ▼            touched off the loop)
 *   after_work (loop) ── POST, or report the failure to the helper
 *
 * The batch is not modified while the work runs: the helper holds the item
 * (and its reference) until `done`, which only after_work or the response
 * can call. A retry reuses the compressed body. Shutdown: the helper calls
 * `close` once drained or at its deadline; work still queued or running
 * cannot be cancelled reliably, so `close` waits for it (its after_work
 * reports SP_ECANCELED instead of sending) before it closes the client.
 *
 * Responses, per the OTLP/HTTP specification:
 *   2xx           success; a partial_success in the body is logged and its
 *                 rejected items counted, never retried;
 *   429 502 503 504, connection failures and timeouts
 *                 retryable, honouring Retry-After;
 *   anything else permanent; the google.rpc.Status message of the body (or
 *                 its text) goes to the log.
 */
#include "exporters/otlphttp/otlphttp.h"

#include "pipeline/alloc.h"
#include "pipeline/buf.h"
#include "pipeline/compress.h"
#include "pipeline/error.h"
#include "pipeline/log.h"
#include "pipeline/pbjson.h"
#include "pipeline/transport/http_client.h"

#include "google/rpc/status.pb-c.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

/* ---- configuration ---------------------------------------------------------- */

static const char *const sp__encodings[] = {"proto", "json", NULL};
static bool sp__is_url(const char *s) {
  return s != NULL && (strncmp(s, "http://", 7) == 0 || strncmp(s, "https://", 8) == 0);
}

static int sp__otlphttp_validate(void *cfg, const sp_node_t *node, const char *path,
                                 sp_errors_t *errs) {
  const sp_otlphttp_cfg_t *c = cfg;
  const sp_mark_t *mark = node != NULL ? &node->mark : NULL;
  int rc = 0;
  if (c->endpoint == NULL && c->traces_endpoint == NULL && c->profiles_endpoint == NULL) {
    sp_errors_add(errs, mark, path,
                  "missing required key \"endpoint\" (or traces_endpoint / profiles_endpoint)");
    return SP_ECONFIG;
  }
  const char *keys[] = {"endpoint", "traces_endpoint", "profiles_endpoint"};
  const char *vals[] = {c->endpoint, c->traces_endpoint, c->profiles_endpoint};
  for (int i = 0; i < 3; i++) {
    if (vals[i] == NULL) continue;
    const sp_node_t *v = sp_node_get(node, keys[i]);
    if (!sp__is_url(vals[i])) {
      sp_errors_add(errs, v ? &v->mark : mark, path,
                    "%s must be an http:// or https:// URL, got \"%s\"", keys[i], vals[i]);
      rc = SP_ECONFIG;
    } else if (c->tls.present && !c->tls.insecure && strncmp(vals[i], "http://", 7) == 0) {
      sp_errors_add(errs, v ? &v->mark : mark, path,
                    "%s is plaintext http:// but tls is configured; use https:// or set "
                    "tls.insecure: true",
                    keys[i]);
      rc = SP_ECONFIG;
    }
  }
  return rc;
}

static const sp_cfg_field_t sp__otlphttp_fields[] = {
    {.key = "endpoint",
     .type = SP_CFG_STRING,
     .offset = offsetof(sp_otlphttp_cfg_t, endpoint),
     .flags = SP_CFG_NONEMPTY},
    {.key = "traces_endpoint",
     .type = SP_CFG_STRING,
     .offset = offsetof(sp_otlphttp_cfg_t, traces_endpoint),
     .flags = SP_CFG_NONEMPTY},
    {.key = "profiles_endpoint",
     .type = SP_CFG_STRING,
     .offset = offsetof(sp_otlphttp_cfg_t, profiles_endpoint),
     .flags = SP_CFG_NONEMPTY},
    {.key = "encoding",
     .type = SP_CFG_ENUM,
     .offset = offsetof(sp_otlphttp_cfg_t, encoding),
     .def = "proto",
     .enum_values = sp__encodings},
    {.key = "compression",
     .type = SP_CFG_ENUM,
     .offset = offsetof(sp_otlphttp_cfg_t, compression),
     .def = "gzip",
     .enum_values = sp_exporterhelper_compressions},
    {.key = "compression_params",
     .type = SP_CFG_SECTION,
     .offset = offsetof(sp_otlphttp_cfg_t, compression_params),
     .section = &sp_exporterhelper_compression_params_schema},
    {.key = "timeout",
     .type = SP_CFG_DURATION,
     .offset = offsetof(sp_otlphttp_cfg_t, timeout_ms),
     .def = "5s",
     .min = 1,
     .max = 3600000},
    SP_EXPORTERHELPER_COMMON_FIELDS(sp_otlphttp_cfg_t),
    {.key = "max_conns_per_host",
     .type = SP_CFG_INT,
     .offset = offsetof(sp_otlphttp_cfg_t, max_conns_per_host),
     .def = "16",
     .min = 1,
     .max = 10000},
};

static const sp_cfg_schema_t sp__otlphttp_schema = {
    .fields = sp__otlphttp_fields,
    .n_fields = sizeof(sp__otlphttp_fields) / sizeof(sp__otlphttp_fields[0]),
    .size = sizeof(sp_otlphttp_cfg_t),
    .validate = sp__otlphttp_validate,
};

/* ---- instance --------------------------------------------------------------- */

typedef struct sp_otlphttp_s {
  sp_component_t base;
  const sp_otlphttp_cfg_t *cfg;
  sp_exporterhelper_t *helper;
  sp_http_client_t *client;
  char *traces_url;   /* NULL: traces not configured */
  char *profiles_url; /* NULL: profiles not configured */
  sp_http_header_t *headers;
  size_t n_headers;
  bool shut; /* shutdown was called: start must not open the client */
  /* Compression work on the thread pool (see the top of this file). */
  size_t n_work;                 /* queued or running; their after_work has not run */
  bool closing;                  /* close was called: after_work must not send */
  void (*close_done)(void *arg); /* a close waiting for n_work to reach 0 */
  void *close_arg;
  /* Level -1's learned gzip tables, one per signal (spans and profiles encode unalike); NULL
   * at other levels. */
  sp_compressor_t *gz_traces, *gz_profiles;
} sp_otlphttp_t;

/* Per-batch state kept across attempts (sp_exporterhelper_item_t.user). */
typedef struct sp_otlphttp_req_s {
  sp_otlphttp_t *self;
  sp_exporterhelper_item_t *item;
  sp_buf_t owned;      /* the body when it had to be built (JSON, gzip, profiles) */
  const uint8_t *body; /* owned.data, or the batch's own bytes; NULL until built */
  size_t body_len;
  /* Compression: the encoding to deflate, kept until the pool has done it. */
  sp_buf_t enc;       /* an encoding built here (JSON, profiles); empty for the batch's bytes */
  const uint8_t *raw; /* enc.data or the batch's own bytes */
  size_t raw_len;
  uv_work_t work;
  int work_rc; /* written on the pool, read in after_work */
  sp_exporterhelper_done_cb done;
  void *token;
  unsigned signal;
} sp_otlphttp_req_t;

static char *sp__join_url(const char *base, const char *suffix) {
  size_t n = strlen(base);
  while (n > 0 && base[n - 1] == '/')
    n--;
  return sp_sprintf("%.*s%s", (int)n, base, suffix);
}

/*
 * Encodes @p item on the loop: r->raw is the batch's own bytes (unchanged
 * protobuf traces, valid while the helper holds the batch) or an encoding
 * kept in r->enc. Without compression that is the body; with gzip r->body
 * stays NULL until the pool has compressed it.
 */
static int sp__encode(sp_otlphttp_t *self, sp_exporterhelper_item_t *item, sp_otlphttp_req_t *r) {
  bool json = self->cfg->encoding == SP_OTLPHTTP_JSON;
  sp_arena_t *arena = NULL;
  int rc = 0;
  if (item->signal == SP_SIGNAL_TRACES) {
    if (json) {
      const sp_otlp_traces_req_t *req = sp_traces_request(item->traces);
      rc = req == NULL ? SP_ENOMEM : sp_pbjson_encode(&req->base, SP_PBJSON_OTLP, &r->enc);
      r->raw = r->enc.data;
      r->raw_len = r->enc.len;
    } else {
      rc = sp_traces_encoded(item->traces, &r->raw, &r->raw_len);
    }
  } else {
    sp_otlpprofiles_req_t *req = NULL;
    arena = sp_arena_create(0);
    rc = arena == NULL ? SP_ENOMEM : sp_otlpprofiles_from_batch(item->profiles, arena, &req);
    if (rc == 0 && json) {
      rc = sp_pbjson_encode(&req->base, SP_PBJSON_OTLP, &r->enc);
    } else if (rc == 0) {
      size_t n = protobuf_c_message_get_packed_size(&req->base);
      rc = sp_buf_reserve(&r->enc, n > 0 ? n : 1);
      if (rc == 0) r->enc.len = protobuf_c_message_pack(&req->base, r->enc.data);
    }
    r->raw = r->enc.data;
    r->raw_len = r->enc.len;
  }
  sp_arena_destroy(arena);
  if (rc != 0 || self->cfg->compression == SP_OTLPHTTP_GZIP) return rc;
  if (r->raw == r->enc.data) {
    r->owned = r->enc; /* hand the encoding over */
    sp_buf_init(&r->enc, 0);
    r->body = r->owned.data;
  } else {
    r->body = r->raw; /* the batch's own bytes: the helper keeps the batch alive */
  }
  r->body_len = r->raw_len;
  return 0;
}

/* Copies a response body's text (printable ASCII only) for a log line. */
static void sp__body_text(const uint8_t *p, size_t n, char *out, size_t cap) {
  size_t o = 0;
  for (size_t i = 0; i < n && o + 1 < cap; i++)
    out[o++] = (p[i] >= 0x20 && p[i] < 0x7f) ? (char)p[i] : ' ';
  while (o > 0 && out[o - 1] == ' ')
    o--;
  out[o] = '\0';
}

static bool sp__is_json(const sp_http_client_result_t *res, bool request_json) {
  const char *ct = sp_http_client_result_header(res, "content-type");
  if (ct == NULL || ct[0] == '\0') return request_json;
  return strstr(ct, "json") != NULL;
}

static bool sp__is_proto(const sp_http_client_result_t *res, bool request_json) {
  const char *ct = sp_http_client_result_header(res, "content-type");
  if (ct == NULL || ct[0] == '\0') return !request_json;
  return strstr(ct, "protobuf") != NULL;
}

/*
 * Decodes a response body as @p desc (JSON or protobuf by Content-Type)
 * into @p arena; NULL when it is empty or does not decode.
 */
static ProtobufCMessage *sp__decode_body(const sp_http_client_result_t *res, bool request_json,
                                         const ProtobufCMessageDescriptor *desc,
                                         sp_arena_t *arena) {
  ProtobufCMessage *msg = NULL;
  if (res->body == NULL || res->body_len == 0 || arena == NULL) return NULL;
  if (sp__is_json(res, request_json)) {
    if (sp_pbjson_decode(desc, (const char *)res->body, res->body_len, SP_PBJSON_OTLP,
                         sp_arena_pbc(arena), &msg, NULL, 0) != 0)
      msg = NULL;
  } else if (sp__is_proto(res, request_json)) {
    msg = protobuf_c_message_unpack(desc, sp_arena_pbc(arena), res->body_len, res->body);
  }
  return msg;
}

/* The error message of a failed response: google.rpc.Status.message, else the body text. */
static void sp__error_message(const sp_http_client_result_t *res, bool request_json, char *out,
                              size_t cap) {
  out[0] = '\0';
  sp_arena_t *arena = sp_arena_create(0);
  const Google__Rpc__Status *st = (const Google__Rpc__Status *)sp__decode_body(
      res, request_json, &google__rpc__status__descriptor, arena);
  if (st != NULL && st->message != NULL && st->message[0] != '\0')
    snprintf(out, cap, "%s", st->message);
  else if (res->body != NULL)
    sp__body_text(res->body, res->body_len, out, cap);
  sp_arena_destroy(arena);
}

/* Reads partial_success from a 2xx body; *rejected stays 0 when there is none. */
static void sp__partial_success(const sp_http_client_result_t *res, unsigned signal,
                                bool request_json, size_t *rejected, char *msg, size_t cap) {
  *rejected = 0;
  msg[0] = '\0';
  sp_arena_t *arena = sp_arena_create(0);
  int64_t n = 0;
  const char *text = NULL;
  if (signal == SP_SIGNAL_TRACES) {
    const Opentelemetry__Proto__Collector__Trace__V1__ExportTraceServiceResponse *r =
        (const void *)sp__decode_body(
            res, request_json,
            &opentelemetry__proto__collector__trace__v1__export_trace_service_response__descriptor,
            arena);
    if (r != NULL && r->partial_success != NULL) {
      n = r->partial_success->rejected_spans;
      text = r->partial_success->error_message;
    }
  } else {
    const Opentelemetry__Proto__Collector__Profiles__V1development__ExportProfilesServiceResponse
        *r = (const void *)sp__decode_body(
            res, request_json,
            &opentelemetry__proto__collector__profiles__v1development__export_profiles_service_response__descriptor,
            arena);
    if (r != NULL && r->partial_success != NULL) {
      n = r->partial_success->rejected_profiles;
      text = r->partial_success->error_message;
    }
  }
  *rejected = n > 0 ? (size_t)n : 0;
  if (text != NULL) snprintf(msg, cap, "%s", text);
  sp_arena_destroy(arena);
}

static void sp__on_response(const sp_http_client_result_t *res, void *arg) {
  sp_otlphttp_req_t *r = arg;
  sp_otlphttp_t *self = r->self;
  bool json = self->cfg->encoding == SP_OTLPHTTP_JSON;
  char msg[512], full[640];
  sp_exporterhelper_result_t out = {0};
  if (res->err != 0) {
    /* Transport failures: connection refused or reset, DNS, TLS, timeouts —
     * retryable; a cancelled request (shutdown) or an unusable one is not. */
    bool retry = res->err == SP_EIO || res->err == SP_ETIMEDOUT || res->err == SP_ENOMEM;
    out.err = retry ? SP_EAGAIN : res->err;
    snprintf(full, sizeof(full), "%s%s%s", sp_strerror(res->err), res->error[0] ? ": " : "",
             res->error);
    out.message = full;
  } else if (res->status >= 200 && res->status < 300) {
    sp__partial_success(res, r->signal, json, &out.rejected, msg, sizeof(msg));
    out.message = msg;
  } else {
    sp__error_message(res, json, msg, sizeof(msg));
    snprintf(full, sizeof(full), "HTTP %d%s%s", res->status, msg[0] ? ": " : "", msg);
    out.message = full;
    switch (res->status) {
    case 429:
    case 502:
    case 503:
    case 504:
      out.err = SP_EAGAIN;
      out.retry_after_ms = res->retry_after_ms;
      break;
    default: out.err = SP_EREJECTED; break;
    }
  }
  r->done(r->token, &out);
}

/* Maps a synchronous sp_http_client_request() error to a send result. */
static int sp__request_error(int rc) {
  if (rc == SP_ESHUTDOWN) return SP_ECANCELED;
  if (rc == SP_ENOMEM) return SP_EAGAIN;
  return rc;
}

/* POSTs the built body of @p r. 0, or the request's synchronous error. */
static int sp__post(sp_otlphttp_t *self, sp_otlphttp_req_t *r) {
  const sp_exporterhelper_item_t *item = r->item;
  const char *url = item->signal == SP_SIGNAL_TRACES ? self->traces_url : self->profiles_url;
  bool json = self->cfg->encoding == SP_OTLPHTTP_JSON;
  sp_http_header_t hdrs[3];
  size_t nh = 0;
  hdrs[nh++] =
      (sp_http_header_t){"Content-Type", json ? "application/json" : "application/x-protobuf"};
  if (self->cfg->compression == SP_OTLPHTTP_GZIP)
    hdrs[nh++] = (sp_http_header_t){"Content-Encoding", "gzip"};
  const sp_meta_t *meta =
      item->signal == SP_SIGNAL_TRACES ? &item->traces->meta : &item->profiles->meta;
  if (self->cfg->tenant_from_metadata && meta->tenant != NULL && meta->tenant[0] != '\0')
    hdrs[nh++] = (sp_http_header_t){"X-Scope-OrgID", meta->tenant};
  sp_http_client_request_t req = {.method = "POST",
                                  .url = url,
                                  .headers = hdrs,
                                  .n_headers = nh,
                                  .body = r->body,
                                  .body_len = r->body_len,
                                  .timeout_ms = self->cfg->timeout_ms};
  return sp__request_error(sp_http_client_request(self->client, &req, sp__on_response, r));
}

/* Thread pool: deflates r->raw into r->owned. Touches nothing but @p r's buffers. */
static void sp__compress_work(uv_work_t *w) {
  sp_otlphttp_req_t *r = w->data;
  sp_otlphttp_t *self = r->self;
  int level = (int)self->cfg->compression_params.level;
  r->owned.len = 0;
  /* No contexts (NULL) at explicit levels: the stateless compressor. */
  r->work_rc =
      sp_compressor_gzip(r->signal == SP_SIGNAL_PROFILES ? self->gz_profiles : self->gz_traces,
                         r->raw, r->raw_len, level, &r->owned);
}

/* A close that waited for the pool: every after_work has run, close the client now. */
static void sp__close_if_idle(sp_otlphttp_t *self) {
  if (self->n_work > 0 || self->close_done == NULL) return;
  void (*done)(void *) = self->close_done;
  self->close_done = NULL;
  sp_http_client_shutdown(self->client, done, self->close_arg);
}

/* Loop: the compression finished; send, or report why not. */
static void sp__compress_done(uv_work_t *w, int status) {
  sp_otlphttp_req_t *r = w->data;
  sp_otlphttp_t *self = r->self;
  sp_exporterhelper_result_t res = {0};
  char msg[160];
  (void)status; /* never cancelled: uv_cancel is not used */
  self->n_work--;
  if (r->work_rc == 0) {
    r->body = r->owned.data;
    r->body_len = r->owned.len;
    sp_buf_free(&r->enc); /* the encoding is no longer needed */
    r->raw = NULL;
    r->raw_len = 0;
  }
  if (self->closing) {
    res.err = SP_ECANCELED;
    res.message = "the exporter is shutting down";
  } else if (r->work_rc != 0) {
    /* Out of memory is worth another try (the encoding is kept); anything else is not. */
    res.err = r->work_rc == SP_ENOMEM ? SP_EAGAIN : r->work_rc;
    snprintf(msg, sizeof(msg), "cannot compress the request: %s", sp_strerror(r->work_rc));
    res.message = msg;
  } else {
    res.err = sp__post(self, r);
  }
  /* done may release the item (and free r): nothing touches r after it. */
  if (res.err != 0) r->done(r->token, &res);
  sp__close_if_idle(self);
}

static int sp__otlphttp_send(void *ctx, sp_exporterhelper_item_t *item,
                             sp_exporterhelper_done_cb done, void *token) {
  sp_otlphttp_t *self = ctx;
  const char *url = item->signal == SP_SIGNAL_TRACES ? self->traces_url : self->profiles_url;
  if (url == NULL) {
    sp_log_error(self->base.id, "no endpoint configured for %s",
                 item->signal == SP_SIGNAL_TRACES ? "traces" : "profiles");
    return SP_ENOTSUP;
  }
  if (self->client == NULL || self->closing) return SP_ECANCELED;
  sp_otlphttp_req_t *r = item->user;
  if (r == NULL) {
    r = sp_calloc(1, sizeof(*r));
    if (r == NULL) return SP_EAGAIN;
    r->self = self;
    r->signal = item->signal;
    sp_buf_init(&r->owned, 0);
    sp_buf_init(&r->enc, 0);
    int rc = sp__encode(self, item, r);
    if (rc != 0) {
      sp_buf_free(&r->enc);
      sp_buf_free(&r->owned);
      sp_free(r);
      sp_log_error(self->base.id, "cannot encode %s: %s",
                   item->signal == SP_SIGNAL_TRACES ? "traces" : "profiles", sp_strerror(rc));
      return rc == SP_ENOMEM ? SP_EAGAIN : rc;
    }
    item->user = r;
  }
  r->item = item;
  r->done = done;
  r->token = token;
  if (r->body == NULL) {
    /* Not compressed yet (first attempt, or a retry after it ran out of memory). */
    r->work.data = r;
    int rc = uv_queue_work(self->base.host->loop, &r->work, sp__compress_work, sp__compress_done);
    if (rc != 0) return SP_EAGAIN; /* cannot happen with both callbacks set */
    self->n_work++;
    return 0;
  }
  return sp__post(self, r);
}

static void sp__otlphttp_release(void *ctx, sp_exporterhelper_item_t *item) {
  (void)ctx;
  sp_otlphttp_req_t *r = item->user;
  if (r == NULL) return;
  sp_buf_free(&r->enc);
  sp_buf_free(&r->owned);
  sp_free(r);
  item->user = NULL;
}

/*
 * The helper has drained (or the deadline passed with requests in flight):
 * close the client, which ends whatever is still in flight; the helper
 * reports its shutdown after @p done. Compression work still on the pool
 * cannot be stopped: the client closes once its after_work has run (and
 * reported the send as cancelled), so nothing outlives the shutdown.
 */
static void sp__otlphttp_close(void *ctx, void (*done)(void *arg), void *arg) {
  sp_otlphttp_t *self = ctx;
  self->closing = true;
  self->close_done = done;
  self->close_arg = arg;
  sp__close_if_idle(self);
}

static const sp_exporterhelper_sender_t sp__otlphttp_sender = {
    .send = sp__otlphttp_send,
    .close = sp__otlphttp_close,
    .release = sp__otlphttp_release,
};

static void sp__otlphttp_destroy(sp_component_t *base);

static int sp__otlphttp_create(const sp_create_settings_t *set, const void *config,
                               sp_component_t **out) {
  const sp_otlphttp_cfg_t *cfg = config;
  sp_otlphttp_t *self = sp_calloc(1, sizeof(*self));
  int rc = SP_ENOMEM;
  if (self == NULL) return SP_ENOMEM;
  self->cfg = cfg;
  if (cfg->traces_endpoint != NULL)
    self->traces_url = sp_strdup(cfg->traces_endpoint);
  else if (cfg->endpoint != NULL)
    self->traces_url = sp__join_url(cfg->endpoint, "/v1/traces");
  if (cfg->profiles_endpoint != NULL)
    self->profiles_url = sp_strdup(cfg->profiles_endpoint);
  else if (cfg->endpoint != NULL)
    self->profiles_url = sp__join_url(cfg->endpoint, "/v1development/profiles");
  if ((self->traces_url == NULL && (cfg->traces_endpoint || cfg->endpoint)) ||
      (self->profiles_url == NULL && (cfg->profiles_endpoint || cfg->endpoint)))
    goto fail;
  if (cfg->headers.n > 0) {
    self->headers = sp_calloc(cfg->headers.n, sizeof(*self->headers));
    if (self->headers == NULL) goto fail;
    for (size_t i = 0; i < cfg->headers.n; i++)
      self->headers[i] = (sp_http_header_t){cfg->headers.keys[i], cfg->headers.values[i]};
    self->n_headers = cfg->headers.n;
  }
  if (cfg->compression_params.level == -1 &&
      ((rc = sp_compressor_create(NULL, &self->gz_traces)) != 0 ||
       (rc = sp_compressor_create(NULL, &self->gz_profiles)) != 0))
    goto fail;
  sp_exporterhelper_options_t ho = {.id = set->id,
                                    .host = set->host,
                                    .queue = &cfg->sending_queue,
                                    .retry = &cfg->retry_on_failure,
                                    .sender = &sp__otlphttp_sender,
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
  sp__otlphttp_destroy(&self->base);
  return rc;
}

static int sp__otlphttp_start(sp_component_t *base) {
  sp_otlphttp_t *self = (sp_otlphttp_t *)base;
  if (self->client != NULL || self->shut) return SP_ESTATE;
  const sp_otlphttp_cfg_t *cfg = self->cfg;
  return sp_exporterhelper_start_http(self->helper, base, &cfg->tls,
                                      (unsigned)cfg->max_conns_per_host, self->headers,
                                      self->n_headers, &self->client);
}

static void sp__otlphttp_shutdown(sp_component_t *base, sp_done_cb cb, void *arg) {
  sp_otlphttp_t *self = (sp_otlphttp_t *)base;
  self->shut = true;
  /* Drains, then closes the client through the sender's close hook; idempotent. */
  sp_exporterhelper_shutdown(self->helper, cb, arg);
}

static void sp__otlphttp_destroy(sp_component_t *base) {
  sp_otlphttp_t *self = (sp_otlphttp_t *)base;
  if (self == NULL) return;
  sp_exporterhelper_destroy(self->helper);
  sp_http_client_destroy(self->client);
  sp_free(self->headers);
  sp_free(self->traces_url);
  sp_free(self->profiles_url);
  /* No pool work is left: shutdown waited for it. */
  sp_compressor_destroy(self->gz_traces);
  sp_compressor_destroy(self->gz_profiles);
  sp_free(self);
}

static const char *const sp__otlphttp_aliases[] = {"otlp_http", NULL};

const sp_component_def_t sp_exporter_otlphttp = {
    .kind = SP_KIND_EXPORTER,
    .type = "otlphttp",
    .aliases = sp__otlphttp_aliases,
    .signals = SP_SIGNAL_TRACES | SP_SIGNAL_PROFILES,
    .stability = "development",
    .description = "sends traces and profiles over OTLP/HTTP (Tempo, gateways), with queue and "
                   "retry",
    .schema = &sp__otlphttp_schema,
    .config_size = sizeof(sp_otlphttp_cfg_t),
    .example = "endpoint: http://127.0.0.1:4318\n",
    .create = sp__otlphttp_create,
    .start = sp__otlphttp_start,
    .shutdown = sp__otlphttp_shutdown,
    .destroy = sp__otlphttp_destroy,
};
