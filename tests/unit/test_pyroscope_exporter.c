/*
 * test_pyroscope_exporter.c — the pyroscope exporter against a test
 * Pyroscope built on our own HTTP server transport.
 *
 * The test server records every request (path, query, headers, body) and
 * answers from a script (status, Retry-After, body, delay). Push requests
 * are decoded with the generated push.v1 code, every raw_profile inflated
 * and decoded as pprof, and compared with what the test put in the batch:
 * series labels (service_name, __name__, dots rewritten, external labels,
 * limits), sample labels (span_id / trace_id on the samples, never series
 * labels; span_name kept or removed), the exact pprof bytes of unchanged
 * profiles; /ingest requests the same way from their query string. Then the
 * fault table: server down then up, 429 with Retry-After: 1, 400 not
 * retried, stale profiles dropped (also between retries), queue full.
 * Compression runs on libuv's thread pool: tests hold the pool
 * (support/pool_block.h) to shut down with that work in flight, and check
 * compression_params.level.
 * Retry intervals are tens of milliseconds; the Retry-After tests wait
 * their full second.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "exporters/pyroscope/pyroscope.h"
#include "pipeline/alloc.h"
#include "pipeline/arena.h"
#include "pipeline/buf.h"
#include "pipeline/compress.h"
#include "pipeline/error.h"
#include "pipeline/log.h"
#include "pipeline/pprof.h"
#include "pipeline/pprofwire.h"
#include "pipeline/telemetry.h"
#include "pipeline/transport/http_server.h"
#include "support/exporter_fixture.h"
#include "support/loop_util.h"
#include "support/pool_block.h"

#include "push/v1/push.pb-c.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <uv.h>

/* ---- test pprof profiles ------------------------------------------------------ */

typedef struct tlabel_s {
  const char *key;
  const char *str; /* NULL: numeric label with `num` */
  int64_t num;
} tlabel_t;

typedef struct tsample_s {
  const tlabel_t *labels;
  size_t n;
} tsample_t;

typedef struct strtab_s {
  char *s[64];
  size_t n;
} strtab_t;

static int64_t str_index(strtab_t *t, const char *s) {
  for (size_t i = 0; i < t->n; i++)
    if (strcmp(t->s[i], s) == 0) return (int64_t)i;
  assert_true(t->n < 64);
  t->s[t->n] = (char *)s;
  return (int64_t)t->n++;
}

#define SPAN_ID "0123456789abcdef"
#define TRACE_ID "0123456789abcdef0123456789abcdef"

/*
 * A cpu profile (samples/count + cpu/nanoseconds, two functions) whose
 * sample i has stack work→main, values (i+1, (i+1)*10ms) and the labels of
 * @p samples[i]. Returns malloc'd bytes.
 */
static uint8_t *build_pprof(const tsample_t *samples, size_t n_samples, int64_t time_nanos,
                            size_t *len) {
  strtab_t st = {.n = 0};
  str_index(&st, "");
  Perftools__Profiles__Profile p = PERFTOOLS__PROFILES__PROFILE__INIT;
  Perftools__Profiles__ValueType vt[3] = {PERFTOOLS__PROFILES__VALUE_TYPE__INIT,
                                          PERFTOOLS__PROFILES__VALUE_TYPE__INIT,
                                          PERFTOOLS__PROFILES__VALUE_TYPE__INIT};
  vt[0].type = str_index(&st, "samples");
  vt[0].unit = str_index(&st, "count");
  vt[1].type = str_index(&st, "cpu");
  vt[1].unit = str_index(&st, "nanoseconds");
  vt[2].type = vt[1].type;
  vt[2].unit = vt[1].unit;
  Perftools__Profiles__ValueType *vtp[2] = {&vt[0], &vt[1]};
  p.sample_type = vtp;
  p.n_sample_type = 2;
  p.period_type = &vt[2];
  p.period = 10000000;
  p.time_nanos = time_nanos;
  p.duration_nanos = time_nanos != 0 ? 10000000000LL : 0;

  Perftools__Profiles__Function fn[2] = {PERFTOOLS__PROFILES__FUNCTION__INIT,
                                         PERFTOOLS__PROFILES__FUNCTION__INIT};
  fn[0].id = 1;
  fn[0].name = str_index(&st, "main");
  fn[1].id = 2;
  fn[1].name = str_index(&st, "work");
  Perftools__Profiles__Function *fnp[2] = {&fn[0], &fn[1]};
  p.function = fnp;
  p.n_function = 2;
  Perftools__Profiles__Line line[2] = {PERFTOOLS__PROFILES__LINE__INIT,
                                       PERFTOOLS__PROFILES__LINE__INIT};
  Perftools__Profiles__Line *linep[2] = {&line[0], &line[1]};
  Perftools__Profiles__Location loc[2] = {PERFTOOLS__PROFILES__LOCATION__INIT,
                                          PERFTOOLS__PROFILES__LOCATION__INIT};
  Perftools__Profiles__Location *locp[2] = {&loc[0], &loc[1]};
  for (int i = 0; i < 2; i++) {
    line[i].function_id = (uint64_t)i + 1;
    line[i].line = 10 * (i + 1);
    loc[i].id = (uint64_t)i + 1;
    loc[i].line = &linep[i];
    loc[i].n_line = 1;
  }
  p.location = locp;
  p.n_location = 2;

  Perftools__Profiles__Sample smp[8];
  Perftools__Profiles__Sample *smpp[8];
  Perftools__Profiles__Label lab[8][48];
  Perftools__Profiles__Label *labp[8][48];
  uint64_t stack[2] = {2, 1};
  int64_t values[8][2];
  assert_true(n_samples <= 8);
  for (size_t i = 0; i < n_samples; i++) {
    perftools__profiles__sample__init(&smp[i]);
    smp[i].location_id = stack;
    smp[i].n_location_id = 2;
    values[i][0] = (int64_t)i + 1;
    values[i][1] = ((int64_t)i + 1) * 10000000;
    smp[i].value = values[i];
    smp[i].n_value = 2;
    assert_true(samples[i].n <= 48);
    for (size_t j = 0; j < samples[i].n; j++) {
      perftools__profiles__label__init(&lab[i][j]);
      lab[i][j].key = str_index(&st, samples[i].labels[j].key);
      if (samples[i].labels[j].str != NULL)
        lab[i][j].str = str_index(&st, samples[i].labels[j].str);
      else
        lab[i][j].num = samples[i].labels[j].num;
      labp[i][j] = &lab[i][j];
    }
    smp[i].label = labp[i];
    smp[i].n_label = samples[i].n;
    smpp[i] = &smp[i];
  }
  p.sample = smpp;
  p.n_sample = n_samples;
  p.string_table = st.s;
  p.n_string_table = st.n;
  *len = protobuf_c_message_get_packed_size(&p.base);
  uint8_t *out = malloc(*len);
  protobuf_c_message_pack(&p.base, out);
  return out;
}

static const tlabel_t g_span_labels[] = {
    {"span_id", SPAN_ID, 0}, {"trace_id", TRACE_ID, 0}, {"span_name", "GET /checkout", 0}};
static const tlabel_t g_other_labels[] = {
    {"span_name", "GET /cart", 0}, {"endpoint", "/cart", 0}, {"bytes", NULL, 512}};
static const tsample_t g_samples[] = {{g_span_labels, 3}, {g_other_labels, 3}, {NULL, 0}};

static int64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* What the test put in a batch, to compare with what arrived. */
typedef struct sent_s {
  uint8_t *bytes;
  size_t len;
  int64_t start_ns, end_ns;
} sent_t;

/*
 * Adds a profile with series labels @p labels (name/value pairs, NULL
 * terminated) ending @p age_ns ago to @p b, remembering its bytes in @p out.
 */
static void add_profile(sp_profiles_t *b, const char *const *labels, int64_t age_ns,
                        const tsample_t *samples, size_t n_samples, bool pprof_time, sent_t *out) {
  sp_label_t l[64];
  size_t n = 0;
  for (; labels[2 * n] != NULL; n++)
    l[n] = (sp_label_t){labels[2 * n], labels[2 * n + 1]};
  int64_t end = now_ns() - age_ns, start = end - 10000000000LL;
  out->bytes = build_pprof(samples, n_samples, pprof_time ? start : 0, &out->len);
  out->start_ns = start;
  out->end_ns = end;
  assert_non_null(sp_profiles_add(b, l, n, start, end, out->bytes, out->len));
}

/* ---- the test Pyroscope -------------------------------------------------------- */

#define MAX_REQ 32

typedef struct resp_s {
  int status;
  const char *retry_after;
  const char *body;
  uint64_t delay_ms;
} resp_t;

typedef struct rec_s {
  char path[64];
  char query[2048];
  char ctype[64];
  char cenc[32];
  char connect[8];
  char connect_timeout[16];
  char tenant[32];
  char auth[128];
  uint8_t *body;
  size_t len;
  uint64_t at_ms;
} rec_t;

typedef struct server_s {
  uv_loop_t *loop;
  sp_http_server_t *srv;
  int port;
  resp_t script[8];
  size_t n_script, next;
  rec_t recs[MAX_REQ];
  size_t n, ok;
  int delayed_open;
} server_t;

typedef struct delayed_s {
  uv_timer_t timer;
  server_t *srv;
  sp_http_request_t *req;
  resp_t resp;
} delayed_t;

static void copy_hdr(const sp_http_request_t *req, const char *name, char *out, size_t cap) {
  const char *v = sp_http_request_header(req, name);
  snprintf(out, cap, "%s", v ? v : "");
}

static void answer(sp_http_request_t *req, const resp_t *r) {
  sp_http_header_t extra[1];
  size_t n = 0;
  if (r->retry_after) extra[n++] = (sp_http_header_t){"Retry-After", r->retry_after};
  bool json = r->body != NULL && r->body[0] == '{';
  sp_http_respond(req, r->status, json ? "application/json" : "application/proto", r->body,
                  r->body ? strlen(r->body) : 0, extra, n);
}

static void delayed_closed(uv_handle_t *h) {
  delayed_t *d = h->data;
  d->srv->delayed_open--;
  free(d);
}

static void delayed_fire(uv_timer_t *t) {
  delayed_t *d = t->data;
  answer(d->req, &d->resp);
  uv_close((uv_handle_t *)&d->timer, delayed_closed);
}

static void server_handler(sp_http_request_t *req, void *ctx) {
  server_t *s = ctx;
  resp_t r = s->next < s->n_script ? s->script[s->next++] : (resp_t){.status = 200};
  if (s->n < MAX_REQ) {
    rec_t *rec = &s->recs[s->n];
    snprintf(rec->path, sizeof(rec->path), "%s", req->path);
    snprintf(rec->query, sizeof(rec->query), "%s", req->query);
    copy_hdr(req, "content-type", rec->ctype, sizeof(rec->ctype));
    copy_hdr(req, "content-encoding", rec->cenc, sizeof(rec->cenc));
    copy_hdr(req, "connect-protocol-version", rec->connect, sizeof(rec->connect));
    copy_hdr(req, "connect-timeout-ms", rec->connect_timeout, sizeof(rec->connect_timeout));
    copy_hdr(req, "x-scope-orgid", rec->tenant, sizeof(rec->tenant));
    copy_hdr(req, "authorization", rec->auth, sizeof(rec->auth));
    rec->body = malloc(req->body_len ? req->body_len : 1);
    memcpy(rec->body, req->body ? (const void *)req->body : "", req->body_len);
    rec->len = req->body_len;
    uv_update_time(s->loop);
    rec->at_ms = uv_now(s->loop);
  }
  s->n++;
  if (r.status >= 200 && r.status < 300) s->ok++;
  if (r.delay_ms > 0) {
    delayed_t *d = calloc(1, sizeof(*d));
    d->srv = s;
    d->req = req;
    d->resp = r;
    uv_timer_init(s->loop, &d->timer);
    d->timer.data = d;
    s->delayed_open++;
    uv_timer_start(&d->timer, delayed_fire, r.delay_ms, 0);
    return;
  }
  answer(req, &r);
}

static void server_start(server_t *s, uv_loop_t *loop, int port) {
  char ep[64];
  snprintf(ep, sizeof(ep), "127.0.0.1:%d", port);
  sp_http_server_options_t o = {
      .endpoint = ep, .component = "pyroscope-test", .handler = server_handler, .handler_ctx = s};
  s->loop = loop;
  assert_int_equal(sp_http_server_create(loop, &o, &s->srv), 0);
  assert_int_equal(sp_http_server_start(s->srv), 0);
  s->port = sp_http_server_port(s->srv);
}

static void on_flag(void *arg) { *(int *)arg = 1; }
static int flag_set(void *arg) { return *(int *)arg; }
static int no_delayed(void *arg) { return ((server_t *)arg)->delayed_open == 0; }

static void server_stop(server_t *s) {
  if (s->srv == NULL) return;
  assert_int_equal(sp_test_run_until(s->loop, no_delayed, s, 5000), 0);
  int done = 0;
  sp_http_server_shutdown(s->srv, on_flag, &done);
  assert_int_equal(sp_test_run_until(s->loop, flag_set, &done, 5000), 0);
  sp_http_server_destroy(s->srv);
  s->srv = NULL;
}

/* ---- fixture ------------------------------------------------------------------- */

typedef struct fx_s {
  uv_loop_t loop;
  sp_host_t host;
  server_t srv;
  sp_test_exporter_t ex;
  sent_t sent[16];
  size_t n_sent;
} fx_t;

static int setup(void **state) {
  fx_t *fx = calloc(1, sizeof(*fx));
  assert_int_equal(uv_loop_init(&fx->loop), 0);
  fx->host.loop = &fx->loop;
  fx->host.telemetry = sp_telemetry_create();
  *state = fx;
  return 0;
}

static int teardown(void **state) {
  fx_t *fx = *state;
  sp_test_exporter_stop(&fx->ex, 1000);
  server_stop(&fx->srv);
  for (size_t i = 0; i < fx->srv.n && i < MAX_REQ; i++)
    free(fx->srv.recs[i].body);
  for (size_t i = 0; i < fx->n_sent; i++)
    free(fx->sent[i].bytes);
  assert_int_equal(sp_test_loop_finish(&fx->loop, 3000), 0);
  sp_telemetry_destroy(fx->host.telemetry);
  free(fx);
  return 0;
}

static const char *g_fast_retry =
    "retry_on_failure: {initial_interval: 50ms, max_interval: 200ms, randomization_factor: 0}\n";

/* Creates and starts the exporter with "endpoint: http://127.0.0.1:<port>" + @p extra. */
static void exporter_up(fx_t *fx, int port, const char *extra) {
  char yaml[2048];
  snprintf(yaml, sizeof(yaml), "endpoint: http://127.0.0.1:%d/\n%s", port, extra);
  assert_int_equal(
      sp_test_exporter_make(&fx->ex, &sp_exporter_pyroscope, yaml, &fx->host, "pyroscope/test"), 0);
  assert_int_equal(fx->ex.def->start(fx->ex.comp), 0);
}

static uint64_t metric(fx_t *fx, const char *name) {
  return sp_telemetry_value(fx->host.telemetry, name, "exporter=\"pyroscope/test\"");
}

static uint64_t dropped(fx_t *fx, const char *reason) {
  char labels[128];
  snprintf(labels, sizeof(labels), "exporter=\"pyroscope/test\",reason=\"%s\"", reason);
  return sp_telemetry_value(fx->host.telemetry, "spanprof_exporter_dropped_labels_total", labels);
}

static uint64_t g_want;
static int done_reached(void *arg) {
  fx_t *fx = arg;
  return metric(fx, "spanprof_exporter_sent_profiles_total") +
             metric(fx, "spanprof_exporter_send_failed_profiles_total") >=
         g_want;
}
static void wait_profiles(fx_t *fx, uint64_t want, uint64_t timeout_ms) {
  g_want = want;
  assert_int_equal(sp_test_run_until(&fx->loop, done_reached, fx, timeout_ms), 0);
}

/* Runs the loop for @p ms (to show that nothing more happens). */
static void run_for(fx_t *fx, uint64_t ms) {
  uv_update_time(&fx->loop);
  uint64_t until = uv_now(&fx->loop) + ms;
  while (uv_now(&fx->loop) < until) {
    uv_run(&fx->loop, UV_RUN_NOWAIT);
    uv_sleep(2);
    uv_update_time(&fx->loop);
  }
}

/* The standard batch: "checkout" with dotted labels and "cart" without __name__. */
static sp_profiles_t *standard_batch(fx_t *fx) {
  sp_profiles_t *b = sp_profiles_create();
  assert_non_null(b);
  static const char *const a[] = {"service_name", "checkout",     "__name__",
                                  "process_cpu",  "k8s.pod.name", "pod-1",
                                  "env",          "staging",      NULL};
  static const char *const c[] = {"service_name", "cart", NULL};
  add_profile(b, a, 5000000000LL, g_samples, 3, true, &fx->sent[fx->n_sent++]);
  add_profile(b, c, 5000000000LL, g_samples, 3, true, &fx->sent[fx->n_sent++]);
  return b;
}

/* ---- checking what arrived ------------------------------------------------------ */

static const char *series_label(const Push__V1__RawProfileSeries *s, const char *name) {
  for (size_t i = 0; i < s->n_labels; i++)
    if (strcmp(s->labels[i]->name, name) == 0) return s->labels[i]->value;
  return NULL;
}

/* Inflates @p raw when gzipped (as Pyroscope does) into @p out. */
static void raw_pprof(const uint8_t *raw, size_t len, bool want_gzip, sp_buf_t *out) {
  sp_buf_init(out, 0);
  if (want_gzip) {
    assert_true(len > 2 && sp_is_gzip(raw, len));
    assert_int_equal(sp_inflate(raw, len, SP_ENC_GZIP, 0, out), 0);
  } else {
    assert_false(len > 2 && sp_is_gzip(raw, len));
    assert_int_equal(sp_buf_append(out, raw, len), 0);
  }
}

static const char *sample_label(const Perftools__Profiles__Profile *p,
                                const Perftools__Profiles__Sample *s, const char *key) {
  for (size_t i = 0; i < s->n_label; i++)
    if (strcmp(p->string_table[s->label[i]->key], key) == 0)
      return s->label[i]->str ? p->string_table[s->label[i]->str] : "<num>";
  return NULL;
}

/* Checks the sample labels of a profile built from g_samples. */
static void check_samples(const uint8_t *pprof, size_t len, bool span_name) {
  Perftools__Profiles__Profile *p = perftools__profiles__profile__unpack(NULL, len, pprof);
  assert_non_null(p);
  assert_int_equal(p->n_sample, 3);
  assert_string_equal(sample_label(p, p->sample[0], "span_id"), SPAN_ID);
  assert_string_equal(sample_label(p, p->sample[0], "trace_id"), TRACE_ID);
  assert_string_equal(sample_label(p, p->sample[1], "endpoint"), "/cart");
  assert_string_equal(sample_label(p, p->sample[1], "bytes"), "<num>");
  if (span_name) {
    assert_string_equal(sample_label(p, p->sample[0], "span_name"), "GET /checkout");
    assert_string_equal(sample_label(p, p->sample[1], "span_name"), "GET /cart");
  } else {
    for (size_t i = 0; i < p->n_sample; i++)
      assert_null(sample_label(p, p->sample[i], "span_name"));
  }
  for (size_t i = 0; i < 3; i++) {
    assert_int_equal(p->sample[i]->value[0], (int64_t)i + 1);
    assert_int_equal(p->sample[i]->n_location_id, 2);
  }
  perftools__profiles__profile__free_unpacked(p, NULL);
}

/* Decodes a push request body. */
static Push__V1__PushRequest *decode_push(const rec_t *r) {
  assert_string_equal(r->path, "/push.v1.PusherService/Push");
  assert_string_equal(r->ctype, "application/proto");
  assert_string_equal(r->connect, "1");
  assert_string_equal(r->cenc, "");
  Push__V1__PushRequest *req = push__v1__push_request__unpack(NULL, r->len, r->body);
  assert_non_null(req);
  return req;
}

/* Percent-decodes query parameter @p key of @p query into @p out; false when absent. */
static bool query_param(const char *query, const char *key, char *out, size_t cap) {
  size_t kl = strlen(key);
  for (const char *p = query; p != NULL && *p; p = strchr(p, '&') ? strchr(p, '&') + 1 : NULL) {
    if (strncmp(p, key, kl) != 0 || p[kl] != '=') continue;
    const char *v = p + kl + 1;
    size_t o = 0;
    for (; *v && *v != '&' && o + 1 < cap; v++) {
      if (*v == '%' && v[1] && v[2]) {
        char hex[3] = {v[1], v[2], 0};
        out[o++] = (char)strtol(hex, NULL, 16);
        v += 2;
      } else {
        out[o++] = *v == '+' ? ' ' : *v;
      }
    }
    out[o] = '\0';
    return true;
  }
  return false;
}

/* ---- tests: what goes on the wire ------------------------------------------------ */

static void test_label_name_rules(void **state) {
  (void)state;
  char out[64];
  assert_int_equal(sp_pyroscope_label_name("service.name", out, sizeof(out)), 12);
  assert_string_equal(out, "service_name");
  assert_int_equal(sp_pyroscope_label_name("k8s.pod-name/x", out, sizeof(out)), 14);
  assert_string_equal(out, "k8s_pod_name_x");
  assert_int_equal(sp_pyroscope_label_name("9lives", out, sizeof(out)), 7);
  assert_string_equal(out, "_9lives");
  assert_int_equal(sp_pyroscope_label_name("__name__", out, sizeof(out)), 8);
  assert_string_equal(out, "__name__");
  assert_int_equal(sp_pyroscope_label_name("h\xc3\xa9", out, sizeof(out)), 3);
  assert_string_equal(out, "h__");
  assert_int_equal(sp_pyroscope_label_name("", out, sizeof(out)), 0);
  assert_int_equal(sp_pyroscope_label_name("abcdef", out, 6), 0); /* does not fit */
  assert_string_equal(sp_pyroscope_drop_reason_name(SP_PYRO_DROP_TOO_MANY), "too_many_labels");
}

/* A batch of one profile with a sample label that clashes with a series label. */
static sp_profiles_t *clash_batch(sent_t *sent) {
  static const tlabel_t l0[] = {{"thread.name", "worker-1", 0}, {"span_id", SPAN_ID, 0}};
  static const tlabel_t l1[] = {{"service_name", "other", 0}, {"span_name", "GET /x", 0}};
  static const tsample_t smp[] = {{l0, 2}, {l1, 2}};
  static const char *const a[] = {"service_name", "svc",         "service.name",
                                  "svc-dotted",   "thread_name", "pool",
                                  "__name__",     "wall",        NULL};
  sp_profiles_t *b = sp_profiles_create();
  assert_non_null(b);
  add_profile(b, a, 1000000000LL, smp, 2, true, sent);
  return b;
}

static void test_prepare_duplicates(void **state) {
  (void)state;
  sent_t sent;
  sp_profiles_t *b = clash_batch(&sent);
  sp_arena_t *arena = sp_arena_create(0);
  sp_pyroscope_rules_t rules = {.span_name_label = true};
  sp_pyroscope_prepared_t out;
  sp_pyroscope_drops_t drops;
  memset(&drops, 0, sizeof(drops));
  char err[128];
  assert_int_equal(
      sp_pyroscope_prepare(&rules, b, &b->items[0], arena, &out, &drops, err, sizeof(err)), 0);
  /* service.name rewrites to service_name, already set with another value: dropped. */
  assert_int_equal(out.n_labels, 3);
  assert_string_equal(out.labels[0].name, "service_name");
  assert_string_equal(out.labels[0].value, "svc");
  assert_string_equal(out.labels[1].name, "__name__");
  assert_string_equal(out.labels[1].value, "wall");
  assert_string_equal(out.labels[2].name, "thread_name");
  assert_string_equal(out.service_name, "svc");
  assert_string_equal(out.profile_type, "wall");
  assert_int_equal(out.start_ns, sent.start_ns);
  /*
   * Sample label thread.name would become thread_name next to the series
   * label: removed. service_name on a sample is ignored by Pyroscope (the
   * series label wins): left alone, like span_name.
   */
  assert_true(out.modified);
  assert_int_equal(drops.n[SP_PYRO_DROP_DUPLICATE], 2);
  assert_true(strstr(drops.first, "service.name") != NULL);
  Perftools__Profiles__Profile *p =
      perftools__profiles__profile__unpack(NULL, out.pprof_len, out.pprof);
  assert_non_null(p);
  assert_null(sample_label(p, p->sample[0], "thread.name"));
  assert_string_equal(sample_label(p, p->sample[0], "span_id"), SPAN_ID);
  assert_string_equal(sample_label(p, p->sample[1], "service_name"), "other");
  assert_string_equal(sample_label(p, p->sample[1], "span_name"), "GET /x");
  perftools__profiles__profile__free_unpacked(p, NULL);
  /* The batch itself was not touched. */
  assert_memory_equal(b->items[0].raw, sent.bytes, sent.len);
  assert_null(b->items[0].pprof);
  sp_arena_destroy(arena);
  sp_profiles_unref(b);
  free(sent.bytes);
}

/* Every allocation of sp_pyroscope_prepare failing in turn: SP_ENOMEM, no leak, no crash. */
static void test_prepare_oom(void **state) {
  (void)state;
  sent_t sent;
  sp_profiles_t *b = clash_batch(&sent);
  sp_strmap_t ext = {0};
  char *keys[] = {"cluster.name"}, *values[] = {"prod"};
  ext.keys = keys;
  ext.values = values;
  ext.n = 1;
  sp_pyroscope_rules_t rules = {.span_name_label = false, .external_labels = &ext};
  int rc = SP_ENOMEM;
  long n;
  for (n = 0; n < 10000 && rc == SP_ENOMEM; n++) {
    sp_arena_t *arena = sp_arena_create(0);
    assert_non_null(arena);
    sp_pyroscope_prepared_t out;
    sp_pyroscope_drops_t drops;
    memset(&drops, 0, sizeof(drops));
    sp_alloc_set_fail_after(n);
    rc = sp_pyroscope_prepare(&rules, b, &b->items[0], arena, &out, &drops, NULL, 0);
    sp_alloc_set_fail_after(-1);
    assert_true(rc == 0 || rc == SP_ENOMEM);
    if (rc == 0) assert_true(out.modified);
    sp_arena_destroy(arena);
  }
  assert_int_equal(rc, 0);
  assert_true(n > 1);
  sp_profiles_unref(b);
  free(sent.bytes);
}

/*
 * A profile that needs no change is sent as the very bytes the batch holds:
 * read on the wire, never decoded nor packed — so it fits an arena far
 * smaller than its decoding. A profile whose sample labels need a fix still
 * gets it (decoded, edited, encoded).
 */
static void test_prepare_wire_unchanged_and_fixed(void **state) {
  (void)state;
  /* Eight samples of 40 labels: span labels plus numeric ones (never series material). */
  static tlabel_t many[40];
  many[0] = (tlabel_t){"span_id", SPAN_ID, 0};
  many[1] = (tlabel_t){"trace_id", TRACE_ID, 0};
  many[2] = (tlabel_t){"span_name", "GET /checkout", 0};
  for (size_t i = 3; i < 40; i++)
    many[i] = (tlabel_t){"bytes", NULL, (int64_t)i};
  static const tlabel_t bad[] = {{"span_id", SPAN_ID, 0}, {"bad key!", "v", 0}};
  const tsample_t big[8] = {{many, 40}, {many, 40}, {many, 40}, {many, 40},
                            {many, 40}, {many, 40}, {many, 40}, {many, 40}};
  const tsample_t fix[2] = {{bad, 2}, {many, 3}};
  static const char *const a[] = {"service_name", "svc", NULL};
  sent_t sent[2];
  sp_profiles_t *b = sp_profiles_create();
  assert_non_null(b);
  add_profile(b, a, 1000000000LL, big, 8, true, &sent[0]);
  add_profile(b, a, 1000000000LL, fix, 2, true, &sent[1]);
  sp_pyroscope_rules_t rules = {.span_name_label = true};
  sp_pyroscope_prepared_t out;
  sp_pyroscope_drops_t drops;
  memset(&drops, 0, sizeof(drops));
  char err[128];

  /* Its decoding alone would need more than the whole arena may hold. */
  sp_arena_t *probe = sp_arena_create(0);
  sp_pprof_t *dec = NULL;
  assert_int_equal(sp_pprof_decode(probe, sent[0].bytes, sent[0].len, &dec, err, sizeof(err)), 0);
  size_t decoded_bytes = sp_arena_bytes(probe);
  sp_arena_destroy(probe);
  sp_arena_t *arena = sp_arena_create(0);
  size_t limit = sp_arena_bytes(arena) + 6000;
  assert_true(decoded_bytes > limit);
  sp_arena_set_limit(arena, limit);
  assert_int_equal(
      sp_pyroscope_prepare(&rules, b, &b->items[0], arena, &out, &drops, err, sizeof(err)), 0);
  assert_false(out.modified);
  assert_ptr_equal(out.pprof, b->items[0].raw); /* the batch's bytes, not a copy */
  assert_int_equal(out.pprof_len, sent[0].len);
  assert_memory_equal(out.pprof, sent[0].bytes, sent[0].len);
  assert_null(b->items[0].pprof); /* nobody decoded it */
  assert_string_equal(out.profile_type, "process_cpu");
  assert_int_equal(out.n_labels, 2);
  sp_arena_destroy(arena);

  /* "bad key!" must become "bad_key_": the decode-edit-encode path. */
  arena = sp_arena_create(0);
  assert_int_equal(
      sp_pyroscope_prepare(&rules, b, &b->items[1], arena, &out, &drops, err, sizeof(err)), 0);
  assert_true(out.modified);
  assert_ptr_not_equal(out.pprof, b->items[1].raw);
  Perftools__Profiles__Profile *p =
      perftools__profiles__profile__unpack(NULL, out.pprof_len, out.pprof);
  assert_non_null(p);
  assert_null(sample_label(p, p->sample[0], "bad key!"));
  assert_string_equal(sample_label(p, p->sample[0], "bad_key_"), "v");
  assert_string_equal(sample_label(p, p->sample[0], "span_id"), SPAN_ID);
  assert_string_equal(sample_label(p, p->sample[1], "span_name"), "GET /checkout");
  perftools__profiles__profile__free_unpacked(p, NULL);
  /* The batch still holds what it received. */
  assert_memory_equal(b->items[1].raw, sent[1].bytes, sent[1].len);
  sp_arena_destroy(arena);

  /* span_name_label: false finds span_name among the keys and removes it. */
  rules.span_name_label = false;
  arena = sp_arena_create(0);
  assert_int_equal(
      sp_pyroscope_prepare(&rules, b, &b->items[0], arena, &out, &drops, err, sizeof(err)), 0);
  assert_true(out.modified);
  p = perftools__profiles__profile__unpack(NULL, out.pprof_len, out.pprof);
  assert_non_null(p);
  for (size_t i = 0; i < p->n_sample; i++) {
    assert_null(sample_label(p, p->sample[i], "span_name"));
    assert_string_equal(sample_label(p, p->sample[i], "trace_id"), TRACE_ID);
  }
  perftools__profiles__profile__free_unpacked(p, NULL);
  sp_arena_destroy(arena);
  sp_profiles_unref(b);
  free(sent[0].bytes);
  free(sent[1].bytes);
}


/* Indexes item @p i of @p b as the receiver does (labels pre-decoded, keys summarised). */
static sp_pprof_wire_t *index_with_keys(sp_profiles_t *b, size_t i) {
  sp_pprof_wire_t *w = sp_arena_alloc(b->arena, sizeof(*w));
  assert_non_null(w);
  assert_int_equal(sp_pprof_wire_index_ex(b->arena, b->items[i].raw, b->items[i].raw_len,
                                          SP_PW_VALIDATE | SP_PW_LABELS, w, NULL, 0),
                   0);
  assert_true(w->has_keys);
  b->items[i].wire = w;
  return w;
}

/*
 * With a key summary in the index, the exporter takes the sample label keys
 * from it (no pass over the samples) — but only when no key has a value
 * longer than max_label_value_length; then it reads the samples as before.
 * Same results either way; a forged summary shows which path ran.
 */
static void test_prepare_key_summary(void **state) {
  (void)state;
  static const tlabel_t l0[] = {{"span_id", SPAN_ID, 0}, {"bad key!", "v", 0}};
  static const tlabel_t l1[] = {{"span_id", SPAN_ID, 0}, {"thread", "main", 0}};
  static const tlabel_t longv[] = {{"thread", "0123456789012345678901234567890123456789", 0}};
  const tsample_t smp[2] = {{l0, 2}, {l1, 2}};
  const tsample_t smp_long[2] = {{l1, 2}, {longv, 1}};
  static const char *const a[] = {"service_name", "svc", NULL};
  sent_t sent[2];
  sp_profiles_t *b = sp_profiles_create();
  assert_non_null(b);
  add_profile(b, a, 1000000000LL, smp, 2, true, &sent[0]);
  add_profile(b, a, 1000000000LL, smp_long, 2, true, &sent[1]);
  sp_pyroscope_rules_t rules = {.span_name_label = true, .max_value_len = 32};
  char err[128];
  for (size_t item = 0; item < 2; item++) {
    /* Without, then with the summary: the same output. */
    sp_pyroscope_prepared_t out[2];
    sp_pyroscope_drops_t drops[2];
    sp_arena_t *arenas[2];
    for (int with = 0; with < 2; with++) {
      if (with) index_with_keys(b, item);
      arenas[with] = sp_arena_create(0);
      memset(&drops[with], 0, sizeof(drops[with]));
      assert_int_equal(sp_pyroscope_prepare(&rules, b, &b->items[item], arenas[with], &out[with],
                                            &drops[with], err, sizeof(err)),
                       0);
    }
    assert_true(out[0].modified); /* "bad key!" renamed / the long value dropped */
    assert_int_equal(out[0].modified, out[1].modified);
    assert_int_equal(out[0].pprof_len, out[1].pprof_len);
    assert_memory_equal(out[0].pprof, out[1].pprof, out[0].pprof_len);
    assert_int_equal(out[0].n_labels, out[1].n_labels);
    assert_memory_equal(&drops[0], &drops[1], sizeof(drops[0]));
    sp_arena_destroy(arenas[0]);
    sp_arena_destroy(arenas[1]);
  }
  /* A forged, empty summary: believed when no value is long (nothing to fix, bytes as they are)… */
  sp_pprof_wire_t *w = index_with_keys(b, 0);
  w->n_keys = 0;
  sp_arena_t *arena = sp_arena_create(0);
  sp_pyroscope_prepared_t out;
  sp_pyroscope_drops_t drops;
  memset(&drops, 0, sizeof(drops));
  assert_int_equal(
      sp_pyroscope_prepare(&rules, b, &b->items[0], arena, &out, &drops, err, sizeof(err)), 0);
  assert_false(out.modified);
  assert_ptr_equal(out.pprof, b->items[0].raw);
  sp_arena_destroy(arena);
  /* …and not when it says some value is long: the samples are read, "thread"'s value dropped. */
  w = index_with_keys(b, 1);
  size_t k = 0;
  while (k < w->n_keys && w->keys[k].max_len <= 32)
    k++;
  assert_true(k < w->n_keys); /* "thread" */
  w->keys += k; /* the summary names that key only: were it believed, nothing would change */
  w->n_keys = 1;
  arena = sp_arena_create(0);
  memset(&drops, 0, sizeof(drops));
  assert_int_equal(
      sp_pyroscope_prepare(&rules, b, &b->items[1], arena, &out, &drops, err, sizeof(err)), 0);
  assert_true(out.modified);
  Perftools__Profiles__Profile *p =
      perftools__profiles__profile__unpack(NULL, out.pprof_len, out.pprof);
  assert_non_null(p);
  assert_null(sample_label(p, p->sample[1], "thread"));
  assert_string_equal(sample_label(p, p->sample[0], "thread"), "main");
  perftools__profiles__profile__free_unpacked(p, NULL);
  sp_arena_destroy(arena);
  sp_profiles_unref(b);
  free(sent[0].bytes);
  free(sent[1].bytes);
}

static void test_push_series_and_bytes(void **state) {
  fx_t *fx = *state;
  server_start(&fx->srv, &fx->loop, 0);
  exporter_up(fx, fx->srv.port,
              "tenant_id: team-a\n"
              "basic_auth: {username: \"123\", password: tok}\n"
              "headers: {Authorization: ignored, X-Other: 1}\n"
              "external_labels: {cluster.name: prod, env: dev}\n"
              "timeout: 7s\n");
  sp_profiles_t *b = standard_batch(fx);
  b->meta.tenant = "not-forwarded";
  assert_int_equal(sp_consume_profiles(fx->ex.comp->input, b), 0);
  wait_profiles(fx, 2, 5000);
  assert_int_equal(metric(fx, "spanprof_exporter_sent_profiles_total"), 2);
  assert_int_equal(fx->srv.n, 1); /* one request for the whole batch */
  const rec_t *r = &fx->srv.recs[0];
  assert_string_equal(r->tenant, "team-a");
  assert_string_equal(r->auth, "Basic MTIzOnRvaw=="); /* base64("123:tok") */
  assert_string_equal(r->connect_timeout, "7000");
  Push__V1__PushRequest *req = decode_push(r);
  assert_int_equal(req->n_series, 2);

  const Push__V1__RawProfileSeries *s0 = req->series[0], *s1 = req->series[1];
  assert_int_equal(s0->n_labels, 5);
  assert_string_equal(series_label(s0, "service_name"), "checkout");
  assert_string_equal(series_label(s0, "__name__"), "process_cpu");
  assert_string_equal(series_label(s0, "k8s_pod_name"), "pod-1"); /* dots rewritten */
  assert_string_equal(series_label(s0, "env"), "staging");        /* data beats config */
  assert_string_equal(series_label(s0, "cluster_name"), "prod");
  assert_int_equal(s1->n_labels, 4);
  assert_string_equal(series_label(s1, "service_name"), "cart");
  assert_string_equal(series_label(s1, "__name__"), "process_cpu"); /* from the sample types */
  assert_string_equal(series_label(s1, "env"), "dev");
  assert_string_equal(series_label(s1, "cluster_name"), "prod");
  for (size_t i = 0; i < 2; i++) {
    const Push__V1__RawProfileSeries *s = req->series[i];
    /* The span-profile labels stay on the samples. */
    assert_null(series_label(s, "span_id"));
    assert_null(series_label(s, "trace_id"));
    assert_null(series_label(s, "span_name"));
    assert_int_equal(s->n_samples, 1);
    assert_int_equal(strlen(s->samples[0]->id), 36);
    assert_int_equal(s->samples[0]->id[14], '4');
    sp_buf_t pb;
    raw_pprof(s->samples[0]->raw_profile.data, s->samples[0]->raw_profile.len, true, &pb);
    /* Unchanged profiles are the bytes they arrived as. */
    assert_int_equal(pb.len, fx->sent[i].len);
    assert_memory_equal(pb.data, fx->sent[i].bytes, pb.len);
    check_samples(pb.data, pb.len, true);
    sp_buf_free(&pb);
  }
  assert_string_not_equal(s0->samples[0]->id, s1->samples[0]->id);
  push__v1__push_request__free_unpacked(req, NULL);
  for (int i = 0; i < SP_PYRO_DROP_REASONS; i++)
    assert_int_equal(dropped(fx, sp_pyroscope_drop_reason_name(i)), 0);
}

static void test_push_uncompressed_tenant_and_time(void **state) {
  fx_t *fx = *state;
  server_start(&fx->srv, &fx->loop, 0);
  exporter_up(fx, fx->srv.port,
              "compression: none\ntenant_id: cfg\ntenant_from_metadata: true\n"
              "bearer_token: s3cret\n");
  sp_profiles_t *b = sp_profiles_create();
  static const char *const a[] = {"service_name", "svc", "__name__", "process_cpu", NULL};
  add_profile(b, a, 1000000000LL, g_samples, 3, true, &fx->sent[fx->n_sent++]);
  /* No time in the pprof: the exporter fills it from the time range. */
  add_profile(b, a, 1000000000LL, g_samples, 3, false, &fx->sent[fx->n_sent++]);
  b->meta.tenant = "from-request";
  assert_int_equal(sp_consume_profiles(fx->ex.comp->input, b), 0);
  wait_profiles(fx, 2, 5000);
  const rec_t *r = &fx->srv.recs[0];
  assert_string_equal(r->tenant, "from-request");
  assert_string_equal(r->auth, "Bearer s3cret");
  Push__V1__PushRequest *req = decode_push(r);
  assert_int_equal(req->n_series, 2);
  const ProtobufCBinaryData *raw0 = &req->series[0]->samples[0]->raw_profile;
  assert_int_equal(raw0->len, fx->sent[0].len); /* not compressed: the very bytes */
  assert_memory_equal(raw0->data, fx->sent[0].bytes, raw0->len);
  const ProtobufCBinaryData *raw1 = &req->series[1]->samples[0]->raw_profile;
  assert_false(raw1->len > 2 && sp_is_gzip(raw1->data, raw1->len));
  Perftools__Profiles__Profile *p =
      perftools__profiles__profile__unpack(NULL, raw1->len, raw1->data);
  assert_non_null(p);
  assert_int_equal(p->time_nanos, fx->sent[1].start_ns);
  assert_int_equal(p->duration_nanos, fx->sent[1].end_ns - fx->sent[1].start_ns);
  perftools__profiles__profile__free_unpacked(p, NULL);
  check_samples(raw1->data, raw1->len, true);
  push__v1__push_request__free_unpacked(req, NULL);
}

static void test_ingest_mode(void **state) {
  fx_t *fx = *state;
  server_start(&fx->srv, &fx->loop, 0);
  exporter_up(fx, fx->srv.port,
              "api: ingest\nexternal_labels: {cluster.name: prod}\ntenant_id: team-b\n");
  sp_profiles_t *b = sp_profiles_create();
  static const char *const a[] = {"service_name", "checkout",     "__name__",
                                  "process_cpu",  "k8s.pod.name", "pod-1",
                                  "note",         "a,b}c",        NULL};
  static const char *const m[] = {"service_name", "my svc", "__name__", "memory", NULL};
  add_profile(b, a, 2000000000LL, g_samples, 3, true, &fx->sent[fx->n_sent++]);
  add_profile(b, m, 2000000000LL, g_samples, 3, true, &fx->sent[fx->n_sent++]);
  assert_int_equal(sp_consume_profiles(fx->ex.comp->input, b), 0);
  wait_profiles(fx, 2, 5000);
  assert_int_equal(metric(fx, "spanprof_exporter_sent_profiles_total"), 2);
  assert_int_equal(fx->srv.n, 2); /* one request per profile */
  const char *want_name[2] = {
      "checkout.process_cpu{service_name=checkout,k8s_pod_name=pod-1,note=a_b_c,cluster_name=prod}",
      "my_svc.memory{service_name=my svc,cluster_name=prod}"};
  for (size_t i = 0; i < 2; i++) {
    const rec_t *r = &fx->srv.recs[i];
    char v[512];
    assert_string_equal(r->path, "/ingest");
    assert_string_equal(r->ctype, "application/octet-stream");
    assert_string_equal(r->tenant, "team-b");
    assert_string_equal(r->connect, "");
    assert_true(query_param(r->query, "name", v, sizeof(v)));
    assert_string_equal(v, want_name[i]);
    assert_true(query_param(r->query, "format", v, sizeof(v)));
    assert_string_equal(v, "pprof");
    assert_true(query_param(r->query, "from", v, sizeof(v)));
    assert_int_equal(strtoll(v, NULL, 10), fx->sent[i].start_ns / 1000000000LL);
    assert_true(query_param(r->query, "until", v, sizeof(v)));
    assert_int_equal(strtoll(v, NULL, 10), (fx->sent[i].end_ns + 999999999LL) / 1000000000LL);
    sp_buf_t pb;
    raw_pprof(r->body, r->len, true, &pb);
    assert_int_equal(pb.len, fx->sent[i].len);
    assert_memory_equal(pb.data, fx->sent[i].bytes, pb.len);
    check_samples(pb.data, pb.len, true);
    sp_buf_free(&pb);
  }
}

static void test_span_name_label_false(void **state) {
  fx_t *fx = *state;
  server_start(&fx->srv, &fx->loop, 0);
  exporter_up(fx, fx->srv.port, "span_name_label: false\n");
  assert_int_equal(sp_consume_profiles(fx->ex.comp->input, standard_batch(fx)), 0);
  wait_profiles(fx, 2, 5000);
  assert_int_equal(metric(fx, "spanprof_exporter_sent_profiles_total"), 2);
  Push__V1__PushRequest *req = decode_push(&fx->srv.recs[0]);
  assert_int_equal(req->n_series, 2);
  for (size_t i = 0; i < 2; i++) {
    const Push__V1__RawSample *s = req->series[i]->samples[0];
    sp_buf_t pb;
    raw_pprof(s->raw_profile.data, s->raw_profile.len, true, &pb);
    assert_true(pb.len != fx->sent[i].len || memcmp(pb.data, fx->sent[i].bytes, pb.len) != 0);
    check_samples(pb.data, pb.len, false); /* span_id/trace_id stay, span_name went */
    sp_buf_free(&pb);
  }
  push__v1__push_request__free_unpacked(req, NULL);
  /* Removing span_name is configuration, not a drop. */
  for (int i = 0; i < SP_PYRO_DROP_REASONS; i++)
    assert_int_equal(dropped(fx, sp_pyroscope_drop_reason_name(i)), 0);
}

static void test_label_limits(void **state) {
  fx_t *fx = *state;
  server_start(&fx->srv, &fx->loop, 0);
  exporter_up(fx, fx->srv.port,
              "max_label_names_per_series: 6\nmax_label_value_length: 32\n"
              "external_labels: {zone: z1}\n");
  static const tlabel_t long_val[] = {{"span_id", SPAN_ID, 0},
                                      {"trace_id", TRACE_ID, 0},
                                      {"thread", "0123456789012345678901234567890123456789", 0}};
  static const tlabel_t bad_name[] = {{"thread", "main", 0}, {"bad key!", "v", 0}};
  static const tsample_t smp[] = {{long_val, 3}, {bad_name, 2}};
  static const char *const a[] = {"service_name",
                                  "svc",
                                  "__name__",
                                  "process_cpu",
                                  "long",
                                  "0123456789012345678901234567890123456789",
                                  "1bad-name",
                                  "v1",
                                  "b",
                                  "v",
                                  "c",
                                  "v",
                                  "d",
                                  "v",
                                  NULL};
  static const char *const few[] = {"service_name", "svc2", "__name__", "process_cpu", NULL};
  sp_profiles_t *b = sp_profiles_create();
  add_profile(b, a, 1000000000LL, smp, 2, true, &fx->sent[fx->n_sent++]);
  add_profile(b, few, 1000000000LL, smp, 2, true, &fx->sent[fx->n_sent++]);
  assert_int_equal(sp_consume_profiles(fx->ex.comp->input, b), 0);
  wait_profiles(fx, 2, 5000);
  assert_int_equal(metric(fx, "spanprof_exporter_sent_profiles_total"), 2);
  Push__V1__PushRequest *req = decode_push(&fx->srv.recs[0]);
  /*
   * Profile 0: "long" is dropped (value), "1bad-name" becomes "_1bad_name";
   * service_name, __name__, _1bad_name, b, c, d fill the 6 names, so zone
   * and both sample labels (thread, "bad key!") are dropped for the count.
   */
  const Push__V1__RawProfileSeries *s = req->series[0];
  assert_int_equal(s->n_labels, 6);
  assert_string_equal(series_label(s, "_1bad_name"), "v1");
  assert_null(series_label(s, "long"));
  assert_null(series_label(s, "zone"));
  sp_buf_t pb;
  raw_pprof(s->samples[0]->raw_profile.data, s->samples[0]->raw_profile.len, true, &pb);
  Perftools__Profiles__Profile *p = perftools__profiles__profile__unpack(NULL, pb.len, pb.data);
  assert_non_null(p);
  assert_string_equal(sample_label(p, p->sample[0], "span_id"), SPAN_ID);
  assert_string_equal(sample_label(p, p->sample[0], "trace_id"), TRACE_ID);
  assert_null(sample_label(p, p->sample[0], "thread"));
  assert_null(sample_label(p, p->sample[1], "thread"));
  assert_null(sample_label(p, p->sample[1], "bad key!"));
  perftools__profiles__profile__free_unpacked(p, NULL);
  sp_buf_free(&pb);
  /*
   * Profile 1: service_name, __name__, zone leave room for 3 sample names:
   * "thread" stays but its long value goes from sample 0, "bad key!"
   * becomes "bad_key_".
   */
  s = req->series[1];
  assert_int_equal(s->n_labels, 3);
  assert_string_equal(series_label(s, "zone"), "z1");
  raw_pprof(s->samples[0]->raw_profile.data, s->samples[0]->raw_profile.len, true, &pb);
  p = perftools__profiles__profile__unpack(NULL, pb.len, pb.data);
  assert_non_null(p);
  assert_null(sample_label(p, p->sample[0], "thread"));
  assert_string_equal(sample_label(p, p->sample[1], "thread"), "main");
  assert_null(sample_label(p, p->sample[1], "bad key!"));
  assert_string_equal(sample_label(p, p->sample[1], "bad_key_"), "v");
  assert_string_equal(sample_label(p, p->sample[0], "span_id"), SPAN_ID);
  perftools__profiles__profile__free_unpacked(p, NULL);
  sp_buf_free(&pb);
  push__v1__push_request__free_unpacked(req, NULL);

  assert_int_equal(dropped(fx, "value_too_long"), 2);  /* "long"; thread's value in profile 1 */
  assert_int_equal(dropped(fx, "too_many_labels"), 3); /* zone, thread, "bad key!" */
  assert_int_equal(dropped(fx, "duplicate"), 0);
}

/* ---- tests: the fault table ------------------------------------------------------ */

static void test_server_down_then_up(void **state) {
  fx_t *fx = *state;
  /* Find a free port, then leave it closed: connections are refused. */
  server_start(&fx->srv, &fx->loop, 0);
  int port = fx->srv.port;
  server_stop(&fx->srv);
  exporter_up(fx, port, g_fast_retry);
  assert_int_equal(sp_consume_profiles(fx->ex.comp->input, standard_batch(fx)), 0);
  assert_int_equal(sp_consume_profiles(fx->ex.comp->input, standard_batch(fx)), 0);
  run_for(fx, 300);
  assert_true(metric(fx, "spanprof_exporter_retries_total") >= 2);
  assert_int_equal(metric(fx, "spanprof_exporter_sent_profiles_total"), 0);
  server_start(&fx->srv, &fx->loop, port);
  wait_profiles(fx, 4, 5000);
  assert_int_equal(metric(fx, "spanprof_exporter_sent_profiles_total"), 4);
  assert_int_equal(metric(fx, "spanprof_exporter_send_failed_profiles_total"), 0);
  assert_int_equal(fx->srv.n, 2);
  for (size_t k = 0; k < 2; k++) {
    Push__V1__PushRequest *req = decode_push(&fx->srv.recs[k]);
    assert_int_equal(req->n_series, 2);
    push__v1__push_request__free_unpacked(req, NULL);
  }
}

static void test_429_retry_after(void **state) {
  fx_t *fx = *state;
  fx->srv.script[0] = (resp_t){
      .status = 429,
      .retry_after = "1",
      .body = "{\"code\":\"resource_exhausted\",\"message\":\"ingestion rate limit reached\"}"};
  fx->srv.n_script = 1;
  server_start(&fx->srv, &fx->loop, 0);
  exporter_up(fx, fx->srv.port, g_fast_retry);
  assert_int_equal(sp_consume_profiles(fx->ex.comp->input, standard_batch(fx)), 0);
  wait_profiles(fx, 2, 5000);
  assert_int_equal(fx->srv.n, 2);
  uint64_t gap = fx->srv.recs[1].at_ms - fx->srv.recs[0].at_ms;
  assert_true(gap >= 990);
  assert_true(gap < 1800);
  assert_int_equal(metric(fx, "spanprof_exporter_sent_profiles_total"), 2);
  assert_int_equal(metric(fx, "spanprof_exporter_retries_total"), 1);
  /* The retry sends the same request: same IDs, same bytes. */
  assert_int_equal(fx->srv.recs[0].len, fx->srv.recs[1].len);
  assert_memory_equal(fx->srv.recs[0].body, fx->srv.recs[1].body, fx->srv.recs[0].len);
}

static void test_400_not_retried(void **state) {
  fx_t *fx = *state;
  fx->srv.script[0] = (resp_t){
      .status = 400, .body = "{\"code\":\"invalid_argument\",\"message\":\"invalid labels\"}"};
  fx->srv.n_script = 1;
  server_start(&fx->srv, &fx->loop, 0);
  exporter_up(fx, fx->srv.port, g_fast_retry);
  assert_int_equal(sp_consume_profiles(fx->ex.comp->input, standard_batch(fx)), 0);
  wait_profiles(fx, 2, 5000);
  run_for(fx, 200); /* well past the 50 ms retry interval */
  assert_int_equal(fx->srv.n, 1);
  assert_int_equal(metric(fx, "spanprof_exporter_send_failed_profiles_total"), 2);
  assert_int_equal(metric(fx, "spanprof_exporter_sent_profiles_total"), 0);
  assert_int_equal(metric(fx, "spanprof_exporter_retries_total"), 0);
}

static void test_ingest_permanent_and_retryable(void **state) {
  fx_t *fx = *state;
  /* One request per profile: accepted, refused (422), unavailable (504). */
  fx->srv.script[0] = (resp_t){.status = 200};
  fx->srv.script[1] = (resp_t){.status = 422, .body = "failed to ingest profile"};
  fx->srv.script[2] = (resp_t){.status = 504};
  fx->srv.n_script = 3;
  server_start(&fx->srv, &fx->loop, 0);
  char extra[256];
  snprintf(extra, sizeof(extra), "api: ingest\n%s", g_fast_retry);
  exporter_up(fx, fx->srv.port, extra);
  static const char *const p0[] = {"service_name", "p0", NULL};
  static const char *const p1[] = {"service_name", "p1", NULL};
  static const char *const p2[] = {"service_name", "p2", NULL};
  sp_profiles_t *b = sp_profiles_create();
  add_profile(b, p0, 1000000000LL, g_samples, 3, true, &fx->sent[fx->n_sent++]);
  add_profile(b, p1, 1000000000LL, g_samples, 3, true, &fx->sent[fx->n_sent++]);
  add_profile(b, p2, 1000000000LL, g_samples, 3, true, &fx->sent[fx->n_sent++]);
  assert_int_equal(sp_consume_profiles(fx->ex.comp->input, b), 0);
  wait_profiles(fx, 3, 5000);
  run_for(fx, 150);
  /* The retry resends only the profile that failed retryably. */
  assert_int_equal(fx->srv.n, 4);
  const char *want[4] = {"p0", "p1", "p2", "p2"};
  for (size_t i = 0; i < 4; i++) {
    char v[256], svc[32];
    assert_true(query_param(fx->srv.recs[i].query, "name", v, sizeof(v)));
    snprintf(svc, sizeof(svc), "%s.process_cpu{service_name=%s}", want[i], want[i]);
    assert_string_equal(v, svc);
  }
  assert_int_equal(metric(fx, "spanprof_exporter_sent_profiles_total"), 2);
  assert_int_equal(metric(fx, "spanprof_exporter_send_failed_profiles_total"), 1);
  assert_int_equal(metric(fx, "spanprof_exporter_retries_total"), 1);
}

static void test_stale_dropped(void **state) {
  fx_t *fx = *state;
  server_start(&fx->srv, &fx->loop, 0);
  exporter_up(fx, fx->srv.port, g_fast_retry);
  static const char *const a[] = {"service_name", "fresh", NULL};
  static const char *const o[] = {"service_name", "old", NULL};
  sp_profiles_t *b = sp_profiles_create();
  add_profile(b, o, 2 * 3600 * 1000000000LL, g_samples, 3, true, &fx->sent[fx->n_sent++]);
  add_profile(b, a, 1000000000LL, g_samples, 3, true, &fx->sent[fx->n_sent++]);
  assert_int_equal(sp_consume_profiles(fx->ex.comp->input, b), 0);
  wait_profiles(fx, 2, 5000);
  assert_int_equal(fx->srv.n, 1);
  Push__V1__PushRequest *req = decode_push(&fx->srv.recs[0]);
  assert_int_equal(req->n_series, 1);
  assert_string_equal(series_label(req->series[0], "service_name"), "fresh");
  push__v1__push_request__free_unpacked(req, NULL);
  assert_int_equal(metric(fx, "spanprof_exporter_dropped_stale_profiles_total"), 1);
  assert_int_equal(metric(fx, "spanprof_exporter_sent_profiles_total"), 1);
  assert_int_equal(metric(fx, "spanprof_exporter_send_failed_profiles_total"), 1);

  /* A batch of stale profiles only: nothing is sent, all counted. */
  b = sp_profiles_create();
  add_profile(b, o, 2 * 3600 * 1000000000LL, g_samples, 3, true, &fx->sent[fx->n_sent++]);
  add_profile(b, o, 3 * 3600 * 1000000000LL, g_samples, 3, true, &fx->sent[fx->n_sent++]);
  assert_int_equal(sp_consume_profiles(fx->ex.comp->input, b), 0);
  wait_profiles(fx, 4, 5000);
  run_for(fx, 100);
  assert_int_equal(fx->srv.n, 1);
  assert_int_equal(metric(fx, "spanprof_exporter_dropped_stale_profiles_total"), 3);
  assert_int_equal(metric(fx, "spanprof_exporter_send_failed_profiles_total"), 3);
  assert_int_equal(metric(fx, "spanprof_exporter_retries_total"), 0);
}

static void test_stale_between_retries(void **state) {
  fx_t *fx = *state;
  /* The server is overloaded for a second; by then the profile is too old. */
  fx->srv.script[0] = (resp_t){.status = 503, .retry_after = "1"};
  fx->srv.n_script = 1;
  server_start(&fx->srv, &fx->loop, 0);
  char extra[256];
  snprintf(extra, sizeof(extra), "max_age: 1s\n%s", g_fast_retry);
  exporter_up(fx, fx->srv.port, extra);
  static const char *const a[] = {"service_name", "slow", NULL};
  sp_profiles_t *b = sp_profiles_create();
  add_profile(b, a, 500000000LL, g_samples, 3, true, &fx->sent[fx->n_sent++]);
  assert_int_equal(sp_consume_profiles(fx->ex.comp->input, b), 0);
  wait_profiles(fx, 1, 5000);
  assert_int_equal(fx->srv.n, 1); /* never sent again */
  assert_int_equal(metric(fx, "spanprof_exporter_dropped_stale_profiles_total"), 1);
  assert_int_equal(metric(fx, "spanprof_exporter_send_failed_profiles_total"), 1);
  assert_int_equal(metric(fx, "spanprof_exporter_retries_total"), 1);
}

static void test_queue_full_refuses(void **state) {
  fx_t *fx = *state;
  fx->srv.script[0] = (resp_t){.status = 200, .delay_ms = 200};
  fx->srv.n_script = 1;
  server_start(&fx->srv, &fx->loop, 0);
  exporter_up(fx, fx->srv.port, "sending_queue: {num_consumers: 1, queue_size: 1}\n");
  assert_int_equal(sp_consume_profiles(fx->ex.comp->input, standard_batch(fx)), 0); /* sending */
  assert_int_equal(sp_consume_profiles(fx->ex.comp->input, standard_batch(fx)), 0); /* queued */
  assert_int_equal(sp_consume_profiles(fx->ex.comp->input, standard_batch(fx)), SP_EAGAIN);
  assert_int_equal(metric(fx, "spanprof_exporter_enqueue_failed_profiles_total"), 2);
  wait_profiles(fx, 4, 5000);
  assert_int_equal(metric(fx, "spanprof_exporter_sent_profiles_total"), 4);
}

static void test_drain_deadline_cancels_ingest(void **state) {
  fx_t *fx = *state;
  fx->srv.script[0] = (resp_t){.status = 200};
  fx->srv.script[1] = (resp_t){.status = 200, .delay_ms = 1500}; /* the server hangs */
  fx->srv.n_script = 2;
  server_start(&fx->srv, &fx->loop, 0);
  exporter_up(fx, fx->srv.port, "api: ingest\nsending_queue: {num_consumers: 1}\n");
  assert_int_equal(sp_consume_profiles(fx->ex.comp->input, standard_batch(fx)), 0);
  assert_int_equal(sp_consume_profiles(fx->ex.comp->input, standard_batch(fx)), 0); /* queued */
  for (int i = 0; i < 200 && fx->srv.n < 2; i++)
    uv_run(&fx->loop, UV_RUN_ONCE);
  assert_int_equal(fx->srv.n, 2);
  uv_update_time(&fx->loop);
  uint64_t t0 = uv_now(&fx->loop);
  sp_test_exporter_stop(&fx->ex, 200);
  uv_update_time(&fx->loop);
  uint64_t took = uv_now(&fx->loop) - t0;
  assert_true(took >= 190 && took < 1000);
  /* The first profile got through; the hung one and the queued batch did not. */
  assert_int_equal(metric(fx, "spanprof_exporter_sent_profiles_total"), 1);
  assert_int_equal(metric(fx, "spanprof_exporter_send_failed_profiles_total"), 3);
}

/* ---- compression on the thread pool --------------------------------------------- */

static void expect_config_error(fx_t *fx, const char *yaml);

/* Starts the exporter's shutdown with drain deadline now + @p drain_ms. */
static void begin_stop(fx_t *fx, uint64_t drain_ms, int *done) {
  uv_update_time(&fx->loop);
  fx->host.drain_deadline = uv_now(&fx->loop) + drain_ms;
  fx->ex.def->shutdown(fx->ex.comp, on_flag, done);
  assert_int_equal(*done, 0); /* never inline */
}

/* After the shutdown callback: what sp_test_exporter_stop() does past it. */
static void end_stop(fx_t *fx) {
  fx->ex.def->destroy(fx->ex.comp);
  sp_cfg_free(fx->ex.def->schema, fx->ex.cfg);
  sp_free(fx->ex.cfg);
  memset(&fx->ex, 0, sizeof(fx->ex));
}

/*
 * The drain deadline passes while the profiles are being compressed on the
 * pool: the shutdown waits for that work (it cannot be cancelled), which
 * then reports the batch cancelled; nothing is sent after the client closed.
 */
static void test_shutdown_waits_for_compression(void **state) {
  fx_t *fx = *state;
  server_start(&fx->srv, &fx->loop, 0);
  for (int api = 0; api < 2; api++) {
    exporter_up(fx, fx->srv.port, api == 0 ? "" : "api: ingest\n");
    sp_test_pool_block_t *block = sp_test_pool_block(&fx->loop);
    assert_non_null(block);
    assert_int_equal(sp_consume_profiles(fx->ex.comp->input, standard_batch(fx)), 0);
    int done = 0;
    begin_stop(fx, 50, &done);
    run_for(fx, 300); /* well past the deadline */
    assert_int_equal(done, 0);
    sp_test_pool_release(block);
    assert_int_equal(sp_test_run_until(&fx->loop, flag_set, &done, 5000), 0);
    end_stop(fx);
  }
  assert_int_equal(fx->srv.n, 0);
  assert_int_equal(metric(fx, "spanprof_exporter_send_failed_profiles_total"), 4);
  assert_int_equal(metric(fx, "spanprof_exporter_sent_profiles_total"), 0);
}

/* With time left, a shutdown drains: work held up on the pool still gets sent. */
static void test_drain_waits_for_compression(void **state) {
  fx_t *fx = *state;
  server_start(&fx->srv, &fx->loop, 0);
  exporter_up(fx, fx->srv.port, "sending_queue: {num_consumers: 2}\n");
  sp_test_pool_block_t *block = sp_test_pool_block(&fx->loop);
  assert_non_null(block);
  assert_int_equal(sp_consume_profiles(fx->ex.comp->input, standard_batch(fx)), 0);
  assert_int_equal(sp_consume_profiles(fx->ex.comp->input, standard_batch(fx)), 0);
  int done = 0;
  begin_stop(fx, 5000, &done);
  run_for(fx, 100);
  assert_int_equal(done, 0);
  assert_int_equal(fx->srv.n, 0);
  sp_test_pool_release(block);
  assert_int_equal(sp_test_run_until(&fx->loop, flag_set, &done, 5000), 0);
  end_stop(fx);
  assert_int_equal(fx->srv.n, 2);
  assert_int_equal(metric(fx, "spanprof_exporter_sent_profiles_total"), 4);
  for (size_t k = 0; k < 2; k++) {
    Push__V1__PushRequest *req = decode_push(&fx->srv.recs[k]);
    assert_int_equal(req->n_series, 2);
    for (size_t i = 0; i < 2; i++) {
      sp_buf_t pb;
      const ProtobufCBinaryData *raw = &req->series[i]->samples[0]->raw_profile;
      raw_pprof(raw->data, raw->len, true, &pb);
      check_samples(pb.data, pb.len, true);
      sp_buf_free(&pb);
    }
    push__v1__push_request__free_unpacked(req, NULL);
  }
}

/* compression_params.level: -1 (learned tables) by default; 0 stores, 9 packs tighter; the bytes
 * survive. */
static void test_compression_level(void **state) {
  fx_t *fx = *state;
  server_start(&fx->srv, &fx->loop, 0);
  static const char *const levels[] = {"", "compression_params: {level: 0}\n",
                                       "compression_params: {level: 9}\n"};
  size_t body[3];
  static const char *const a[] = {"service_name", "svc", "__name__", "process_cpu", NULL};
  for (int i = 0; i < 3; i++) {
    char extra[128];
    snprintf(extra, sizeof(extra), "api: ingest\n%s", levels[i]);
    exporter_up(fx, fx->srv.port, extra);
    if (i == 0) assert_int_equal(((sp_pyroscope_cfg_t *)fx->ex.cfg)->compression_params.level, -1);
    sp_profiles_t *b = sp_profiles_create();
    add_profile(b, a, 1000000000LL, g_samples, 3, true, &fx->sent[fx->n_sent++]);
    const sent_t *sent = &fx->sent[fx->n_sent - 1];
    assert_int_equal(sp_consume_profiles(fx->ex.comp->input, b), 0);
    wait_profiles(fx, (uint64_t)i + 1, 5000);
    sp_test_exporter_stop(&fx->ex, 1000);
    const rec_t *r = &fx->srv.recs[i];
    sp_buf_t pb;
    raw_pprof(r->body, r->len, true, &pb);
    assert_int_equal(pb.len, sent->len); /* unchanged profile: its very bytes */
    assert_memory_equal(pb.data, sent->bytes, pb.len);
    sp_buf_free(&pb);
    body[i] = r->len;
    if (i == 1) assert_true(body[i] > sent->len); /* stored: the bytes plus gzip framing */
  }
  assert_true(body[0] < body[1]);
  assert_true(body[2] <= body[0]);
  expect_config_error(fx, "endpoint: http://h:4040\ncompression_params: {level: 10}\n");
  expect_config_error(fx, "endpoint: http://h:4040\ncompression_params: {level: x}\n");
}

/* ---- configuration --------------------------------------------------------------- */

static void expect_config_error(fx_t *fx, const char *yaml) {
  sp_test_exporter_t t;
  assert_int_not_equal(
      sp_test_exporter_make(&t, &sp_exporter_pyroscope, yaml, &fx->host, "pyroscope/test"), 0);
}

static void test_config_errors(void **state) {
  fx_t *fx = *state;
  expect_config_error(fx, "api: push\n"); /* no endpoint */
  expect_config_error(fx, "endpoint: 127.0.0.1:4040\n");
  expect_config_error(fx, "endpoint: http://h:4040/?x=1\n");
  expect_config_error(fx, "endpoint: http://h:4040\napi: grpc\n");
  expect_config_error(fx, "endpoint: http://h:4040\ncompression: zstd\n");
  expect_config_error(fx, "endpoint: http://h:4040\nbasic_auth: {username: u, password: p}\n"
                          "bearer_token: t\n");
  expect_config_error(fx, "endpoint: http://h:4040\nbasic_auth: {password: p}\n");
  expect_config_error(fx, "endpoint: http://h:4040\nexternal_labels: {__name__: x}\n");
  expect_config_error(fx, "endpoint: http://h:4040\nmax_label_names_per_series: 1\n");
  expect_config_error(fx, "endpoint: http://h:4040\ntls: {ca_file: /x}\n");
  /* The defaults. */
  sp_test_exporter_t t;
  assert_int_equal(sp_test_exporter_make(&t, &sp_exporter_pyroscope, "endpoint: http://h:4040\n",
                                         &fx->host, "pyroscope/test"),
                   0);
  const sp_pyroscope_cfg_t *c = t.cfg;
  assert_int_equal(c->api, SP_PYROSCOPE_API_PUSH);
  assert_int_equal(c->compression, SP_PYROSCOPE_GZIP);
  assert_true(c->span_name_label);
  assert_false(c->tenant_from_metadata);
  assert_int_equal(c->max_age_ms, 3600000);
  assert_int_equal(c->max_label_name_length, 1024);
  assert_int_equal(c->max_label_value_length, 2048);
  assert_int_equal(c->max_label_names_per_series, 30);
  t.def->destroy(t.comp); /* never started */
  sp_cfg_free(t.def->schema, t.cfg);
  sp_free(t.cfg);
}

int main(void) {
  sp_log_set_level(getenv("SP_TEST_LOG") ? SP_LOG_DEBUG : SP_LOG_OFF);
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_label_name_rules),
      cmocka_unit_test(test_prepare_duplicates),
      cmocka_unit_test(test_prepare_oom),
      cmocka_unit_test(test_prepare_wire_unchanged_and_fixed),
      cmocka_unit_test(test_prepare_key_summary),
      cmocka_unit_test_setup_teardown(test_push_series_and_bytes, setup, teardown),
      cmocka_unit_test_setup_teardown(test_push_uncompressed_tenant_and_time, setup, teardown),
      cmocka_unit_test_setup_teardown(test_ingest_mode, setup, teardown),
      cmocka_unit_test_setup_teardown(test_span_name_label_false, setup, teardown),
      cmocka_unit_test_setup_teardown(test_label_limits, setup, teardown),
      cmocka_unit_test_setup_teardown(test_server_down_then_up, setup, teardown),
      cmocka_unit_test_setup_teardown(test_429_retry_after, setup, teardown),
      cmocka_unit_test_setup_teardown(test_400_not_retried, setup, teardown),
      cmocka_unit_test_setup_teardown(test_ingest_permanent_and_retryable, setup, teardown),
      cmocka_unit_test_setup_teardown(test_stale_dropped, setup, teardown),
      cmocka_unit_test_setup_teardown(test_stale_between_retries, setup, teardown),
      cmocka_unit_test_setup_teardown(test_queue_full_refuses, setup, teardown),
      cmocka_unit_test_setup_teardown(test_drain_deadline_cancels_ingest, setup, teardown),
      cmocka_unit_test_setup_teardown(test_config_errors, setup, teardown),
      cmocka_unit_test_setup_teardown(test_shutdown_waits_for_compression, setup, teardown),
      cmocka_unit_test_setup_teardown(test_drain_waits_for_compression, setup, teardown),
      cmocka_unit_test_setup_teardown(test_compression_level, setup, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
