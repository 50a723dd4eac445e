/*
 * test_pprof_scrape.c — the `pprof_scrape` receiver against a test server
 * built on our own HTTP server, serving Go-like /debug/pprof endpoints whose
 * cumulative profiles grow on every request.
 *
 * Checked: the scrape interval (never shorter than configured), the CPU
 * request's ?seconds=, labels and __name__/__delta__ per endpoint, delta
 * computation (first scrape primes; differences; zero rows dropped; inuse
 * values kept), failures counted per target for a dead port, HTTP 500s and
 * a target that never answers (timeout), while the healthy target keeps its
 * schedule. The delta function is also tested directly: location IDs
 * renumbered between scrapes, duplicate stacks, label identity, a restart.
 */
#include "pipeline/alloc.h"
#include "pipeline/component.h"
#include "pipeline/compress.h"
#include "pipeline/config.h"
#include "pipeline/error.h"
#include "pipeline/log.h"
#include "pipeline/pprof.h"
#include "pipeline/transport/http_server.h"
#include "receivers/pprof_scrape/pprof_scrape.h"
#include "support/loop_util.h"
#include "support/sink.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

extern const sp_component_def_t sp_receiver_pprof_scrape;

/* --- building Go-like profiles ------------------------------------------------ */

typedef struct tsample_s {
  uint64_t addrs[4]; /* leaf first */
  size_t depth;
  int64_t vals[4];
  const char *lk, *lv; /* one string label, or NULL */
} tsample_t;

typedef struct tbuild_s {
  char *strings[128];
  size_t n;
} tbuild_t;

static int64_t tstr(tbuild_t *b, const char *s) {
  for (size_t i = 0; i < b->n; i++)
    if (strcmp(b->strings[i], s) == 0)
      return (int64_t)i;
  b->strings[b->n] = strdup(s);
  return (int64_t)b->n++;
}

/*
 * Encodes a profile: sample types "t/u,t/u", samples with stacks of
 * addresses (one location + function per distinct address). With
 * @p reverse_ids the location IDs run backwards, as a different encoding of
 * the same data would number them. Returns malloc'd bytes (gzip when asked).
 */
static uint8_t *tprof(const char *types, const tsample_t *s, size_t n, bool reverse_ids,
                      int64_t time_ns, int64_t dur_ns, bool gz, size_t *len) {
  tbuild_t b = {.n = 0};
  tstr(&b, "");
  Perftools__Profiles__Profile p = PERFTOOLS__PROFILES__PROFILE__INIT;
  Perftools__Profiles__ValueType vt[4], *vts[4];
  char tmp[128];
  snprintf(tmp, sizeof(tmp), "%s", types);
  size_t nt = 0;
  for (char *save = NULL, *t = strtok_r(tmp, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
    char *sl = strchr(t, '/');
    *sl = '\0';
    perftools__profiles__value_type__init(&vt[nt]);
    vt[nt].type = tstr(&b, t);
    vt[nt].unit = tstr(&b, sl + 1);
    vts[nt] = &vt[nt];
    nt++;
  }
  p.sample_type = vts;
  p.n_sample_type = nt;
  uint64_t addrs[32];
  size_t na = 0;
  for (size_t i = 0; i < n; i++)
    for (size_t d = 0; d < s[i].depth; d++) {
      size_t k = 0;
      while (k < na && addrs[k] != s[i].addrs[d])
        k++;
      if (k == na)
        addrs[na++] = s[i].addrs[d];
    }
  Perftools__Profiles__Location loc[32], *locs[32];
  Perftools__Profiles__Function fn[32], *fns[32];
  Perftools__Profiles__Line line[32], *lines[32][1];
  for (size_t k = 0; k < na; k++) {
    uint64_t id = reverse_ids ? na - k : k + 1;
    char name[32];
    snprintf(name, sizeof(name), "fn_%llx", (unsigned long long)addrs[k]);
    perftools__profiles__function__init(&fn[k]);
    fn[k].id = id;
    fn[k].name = tstr(&b, name);
    fns[k] = &fn[k];
    perftools__profiles__line__init(&line[k]);
    line[k].function_id = id;
    lines[k][0] = &line[k];
    perftools__profiles__location__init(&loc[k]);
    loc[k].id = id;
    loc[k].address = addrs[k];
    loc[k].line = lines[k];
    loc[k].n_line = 1;
    locs[k] = &loc[k];
  }
  p.location = locs;
  p.n_location = na;
  p.function = fns;
  p.n_function = na;
  Perftools__Profiles__Sample smp[16], *smps[16];
  uint64_t ids[16][4];
  int64_t vals[16][4];
  Perftools__Profiles__Label lbl[16], *lbls[16][1];
  for (size_t i = 0; i < n; i++) {
    perftools__profiles__sample__init(&smp[i]);
    for (size_t d = 0; d < s[i].depth; d++) {
      size_t k = 0;
      while (addrs[k] != s[i].addrs[d])
        k++;
      ids[i][d] = reverse_ids ? na - k : k + 1;
    }
    smp[i].location_id = ids[i];
    smp[i].n_location_id = s[i].depth;
    memcpy(vals[i], s[i].vals, sizeof(vals[i]));
    smp[i].value = vals[i];
    smp[i].n_value = nt;
    if (s[i].lk != NULL) {
      perftools__profiles__label__init(&lbl[i]);
      lbl[i].key = tstr(&b, s[i].lk);
      lbl[i].str = tstr(&b, s[i].lv);
      lbls[i][0] = &lbl[i];
      smp[i].label = lbls[i];
      smp[i].n_label = 1;
    }
    smps[i] = &smp[i];
  }
  p.sample = smps;
  p.n_sample = n;
  p.time_nanos = time_ns;
  p.duration_nanos = dur_ns;
  p.string_table = b.strings;
  p.n_string_table = b.n;
  size_t plen = perftools__profiles__profile__get_packed_size(&p);
  uint8_t *out = malloc(plen);
  perftools__profiles__profile__pack(&p, out);
  for (size_t i = 0; i < b.n; i++)
    free(b.strings[i]);
  if (!gz) {
    *len = plen;
    return out;
  }
  sp_buf_t g;
  sp_buf_init(&g, 0);
  assert_int_equal(sp_gzip_compress(out, plen, -1, &g), 0);
  free(out);
  uint8_t *copy = malloc(g.len);
  memcpy(copy, g.data, g.len);
  *len = g.len;
  sp_buf_free(&g);
  return copy;
}

/* --- the delta function on its own ------------------------------------------------ */

static sp_pprof_t *decode(sp_arena_t *a, const uint8_t *b, size_t len) {
  sp_pprof_t *p = NULL;
  char err[256];
  assert_int_equal(sp_pprof_decode(a, b, len, &p, err, sizeof(err)), 0);
  return p;
}

/* The value @p v of the sample whose leaf is @p leaf (and label value @p lv, or none). */
static int64_t value_of(const sp_pprof_t *p, uint64_t leaf, const char *lv, size_t v) {
  for (size_t i = 0; i < p->n_sample; i++) {
    const sp_pprof_sample_t *s = p->sample[i];
    const Perftools__Profiles__Location *loc = NULL;
    for (size_t k = 0; k < p->n_location; k++)
      if (p->location[k]->id == s->location_id[0])
        loc = p->location[k];
    const char *got = s->n_label ? sp_pprof_str(p, s->label[0]->str) : NULL;
    if (loc->address == leaf && ((lv == NULL && got == NULL) ||
                                 (lv != NULL && got != NULL && strcmp(lv, got) == 0)))
      return s->value[v];
  }
  return -1; /* absent */
}

/* One delta, committing the scrape's values as the baseline as the receiver does on delivery. */
static int delta(sp_arena_t *a, sp_pprof_t *p, const bool *cum, sp_scrape_delta_t **prev,
                 bool *primed) {
  sp_scrape_delta_t *next = NULL;
  int rc = sp__scrape_delta(a, p, cum, *prev, &next, primed);
  if (rc == 0) {
    sp__scrape_delta_free(*prev);
    *prev = next;
  }
  return rc;
}

static void test_delta_function(void **state) {
  (void)state;
  sp_scrape_delta_t *prev = NULL;
  bool cum[2] = {true, true};
  bool primed = false;
  /* Scrape 1: stacks A (two samples with the same stack: summed), B with label x. */
  tsample_t s1[] = {{{0xa1, 0xf0}, 2, {3, 30}, NULL, NULL},
                    {{0xa1, 0xf0}, 2, {1, 10}, NULL, NULL},
                    {{0xb1, 0xf0}, 2, {5, 50}, "span_id", "x"}};
  size_t len;
  uint8_t *b = tprof("contentions/count,delay/nanoseconds", s1, 3, false, 0, 0, false, &len);
  sp_arena_t *a = sp_arena_create(0);
  sp_pprof_t *p = decode(a, b, len);
  assert_int_equal(delta(a, p, cum, &prev, &primed), 0);
  assert_true(primed);
  assert_int_equal(sp__scrape_delta_size(prev), 2);
  free(b);
  sp_arena_destroy(a);
  /* Scrape 2: new numbering; A grew by 2; B unchanged (dropped); B with label y is new. */
  tsample_t s2[] = {{{0xb1, 0xf0}, 2, {5, 50}, "span_id", "x"},
                    {{0xa1, 0xf0}, 2, {6, 60}, NULL, NULL},
                    {{0xb1, 0xf0}, 2, {7, 70}, "span_id", "y"}};
  b = tprof("contentions/count,delay/nanoseconds", s2, 3, true, 0, 0, false, &len);
  a = sp_arena_create(0);
  p = decode(a, b, len);
  assert_int_equal(delta(a, p, cum, &prev, &primed), 0);
  assert_false(primed);
  assert_int_equal(p->n_sample, 2);
  assert_int_equal(value_of(p, 0xa1, NULL, 0), 2);
  assert_int_equal(value_of(p, 0xa1, NULL, 1), 20);
  assert_int_equal(value_of(p, 0xb1, "x", 0), -1);
  assert_int_equal(value_of(p, 0xb1, "y", 0), 7);
  char err[256];
  assert_int_equal(sp_pprof_validate(p, err, sizeof(err)), 0);
  free(b);
  sp_arena_destroy(a);
  /* Scrape 3: the process restarted (A went down): the new total is the delta. */
  tsample_t s3[] = {{{0xa1, 0xf0}, 2, {1, 9}, NULL, NULL}};
  b = tprof("contentions/count,delay/nanoseconds", s3, 1, false, 0, 0, false, &len);
  a = sp_arena_create(0);
  p = decode(a, b, len);
  assert_int_equal(delta(a, p, cum, &prev, &primed), 0);
  assert_int_equal(value_of(p, 0xa1, NULL, 0), 1);
  assert_int_equal(value_of(p, 0xa1, NULL, 1), 9);
  free(b);
  sp_arena_destroy(a);
  /* Scrape 4: different sample types: the baseline is not usable, re-primed. */
  b = tprof("alloc_objects/count,inuse_objects/count", s3, 1, false, 0, 0, false, &len);
  a = sp_arena_create(0);
  p = decode(a, b, len);
  bool mem[2] = {true, false};
  assert_int_equal(delta(a, p, mem, &prev, &primed), 0);
  assert_true(primed);
  free(b);
  sp_arena_destroy(a);
  /* Scrape 5: memory: alloc_ values are deltas, inuse values kept; zero-alloc rows with inuse stay. */
  tsample_t s5[] = {{{0xa1, 0xf0}, 2, {1, 4}, NULL, NULL}};
  b = tprof("alloc_objects/count,inuse_objects/count", s5, 1, false, 0, 0, false, &len);
  a = sp_arena_create(0);
  p = decode(a, b, len);
  assert_int_equal(delta(a, p, mem, &prev, &primed), 0);
  assert_false(primed);
  assert_int_equal(p->n_sample, 1);
  assert_int_equal(value_of(p, 0xa1, NULL, 0), 0);
  assert_int_equal(value_of(p, 0xa1, NULL, 1), 4);
  free(b);
  sp_arena_destroy(a);
  sp__scrape_delta_free(prev);
}

/*
 * Corrupt or hostile counts from a scraped program: duplicate stacks summing
 * past INT64_MAX, and a difference to a negative baseline that does not fit.
 * Both saturate (signed overflow is undefined behaviour).
 */
static void test_delta_saturates(void **state) {
  (void)state;
  sp_scrape_delta_t *prev = NULL;
  bool cum[1] = {true};
  bool primed = false;
  tsample_t s1[] = {{{0xa1}, 1, {-5}, NULL, NULL},
                    {{0xb1}, 1, {INT64_MAX}, NULL, NULL},
                    {{0xb1}, 1, {INT64_MAX}, NULL, NULL}};
  size_t len;
  uint8_t *b = tprof("contentions/count", s1, 3, false, 0, 0, false, &len);
  sp_arena_t *a = sp_arena_create(0);
  sp_pprof_t *p = decode(a, b, len);
  assert_int_equal(delta(a, p, cum, &prev, &primed), 0);
  assert_true(primed);
  assert_int_equal(value_of(p, 0xb1, NULL, 0), INT64_MAX); /* summed, saturated */
  free(b);
  sp_arena_destroy(a);
  tsample_t s2[] = {{{0xa1}, 1, {INT64_MAX}, NULL, NULL}, {{0xb1}, 1, {INT64_MAX}, NULL, NULL}};
  b = tprof("contentions/count", s2, 2, false, 0, 0, false, &len);
  a = sp_arena_create(0);
  p = decode(a, b, len);
  assert_int_equal(delta(a, p, cum, &prev, &primed), 0);
  assert_false(primed);
  assert_int_equal(value_of(p, 0xa1, NULL, 0), INT64_MAX); /* INT64_MAX - (-5), saturated */
  assert_int_equal(value_of(p, 0xb1, NULL, 0), -1);        /* unchanged: dropped */
  free(b);
  sp_arena_destroy(a);
  sp__scrape_delta_free(prev);
}

/* --- the receiver against a test server -------------------------------------------- */

#define MAX_HELD 64

typedef struct srv_s {
  uv_loop_t loop;
  sp_http_server_t *http;
  int port;
  int n_mutex, n_allocs, n_cpu, n_goroutine, n_broken, n_other;
  uint64_t mutex_at[64];
  char cpu_query[64];
  sp_http_request_t *held[MAX_HELD];
  int n_held;
  int down;
} srv_t;

static srv_t srv;

static void reply(sp_http_request_t *req, uint8_t *body, size_t len) {
  sp_http_respond(req, 200, "application/octet-stream", body, len, NULL, 0);
  free(body);
}

static void handler(sp_http_request_t *req, void *ctx) {
  (void)ctx;
  const char *path = req->path;
  size_t len;
  if (strncmp(path, "/hang/", 6) == 0) {
    assert_true(srv.n_held < MAX_HELD);
    srv.held[srv.n_held++] = req;
    return;
  }
  if (strncmp(path, "/broken/", 8) == 0) {
    srv.n_broken++;
    sp_http_respond(req, 500, "text/plain", "boom", 4, NULL, 0);
    return;
  }
  if (strcmp(path, "/debug/pprof/mutex") == 0) {
    /* Cumulative: A grows by 10 per request; B appears on the 2nd and stays at 5. */
    int n = ++srv.n_mutex;
    if (n <= 64)
      srv.mutex_at[n - 1] = uv_now(&srv.loop);
    tsample_t s[] = {{{0x1000, 0x2000}, 2, {10 * n, 1000 * n}, NULL, NULL},
                     {{0x1100, 0x2000}, 2, {5, 500}, NULL, NULL}};
    uint8_t *body = tprof("contentions/count,delay/nanoseconds", s, n >= 2 ? 2 : 1, n % 2 == 0, 0, 0,
                     true, &len);
    reply(req, body, len);
  } else if (strcmp(path, "/debug/pprof/allocs") == 0) {
    int n = ++srv.n_allocs;
    tsample_t s[] = {{{0x3000}, 1, {2 * n, 200 * n, 7, 700}, NULL, NULL}};
    uint8_t *body = tprof("alloc_objects/count,alloc_space/bytes,inuse_objects/count,inuse_space/bytes",
                     s, 1, false, 1700000000000000000LL, 0, true, &len);
    reply(req, body, len);
  } else if (strcmp(path, "/debug/pprof/profile") == 0) {
    srv.n_cpu++;
    snprintf(srv.cpu_query, sizeof(srv.cpu_query), "%s", req->query);
    tsample_t s[] = {{{0x4000, 0x2000}, 2, {3, 30000000}, "span_id", "ABCDEF0123456789"}};
    uint8_t *body = tprof("samples/count,cpu/nanoseconds", s, 1, false, 1700000000000000000LL,
                     1000000000LL, false, &len);
    reply(req, body, len);
  } else if (strcmp(path, "/debug/pprof/goroutine") == 0) {
    srv.n_goroutine++;
    tsample_t s[] = {{{0x5000}, 1, {4}, NULL, NULL}};
    uint8_t *body = tprof("goroutine/count", s, 1, false, 0, 0, true, &len);
    reply(req, body, len);
  } else {
    srv.n_other++;
    sp_http_respond(req, 404, "text/plain", "404 page not found", 18, NULL, 0);
  }
}

typedef struct rx_s {
  sp_telemetry_t *telemetry;
  sp_host_t host;
  sp_sink_t sink;
  sp_config_doc_t *doc;
  void *cfg;
  sp_component_t *comp;
} rx_t;

static rx_t rx;

static void rx_start(const char *yaml) {
  sp_errors_t errs = {0};
  assert_int_equal(sp_config_load_string("test", yaml, strlen(yaml), &rx.doc, &errs), 0);
  rx.cfg = sp_calloc(1, sp_receiver_pprof_scrape.config_size);
  int rc = sp_cfg_decode(sp_receiver_pprof_scrape.schema, rx.doc->root, "pprof_scrape", NULL,
                         rx.cfg, &errs);
  if (rc != 0)
    sp_errors_print(&errs, 2);
  assert_int_equal(rc, 0);
  sp_errors_free(&errs);
  sp_create_settings_t set = {.host = &rx.host, .id = "pprof_scrape",
                              .next_profiles = &rx.sink.consumer};
  assert_int_equal(sp_receiver_pprof_scrape.create(&set, rx.cfg, &rx.comp), 0);
  rx.comp->def = &sp_receiver_pprof_scrape;
  rx.comp->host = &rx.host;
  rx.comp->id = "pprof_scrape";
  rx.comp->config = rx.cfg;
  assert_int_equal(sp_receiver_pprof_scrape.start(rx.comp), 0);
}

static void on_down(void *arg) { (*(int *)arg)++; }
static int is_down(void *arg) { return *(int *)arg > 0; }

static void rx_stop(void) {
  int done = 0;
  sp_receiver_pprof_scrape.shutdown(rx.comp, on_down, &done);
  assert_int_equal(done, 0);
  assert_int_equal(sp_test_run_until(&srv.loop, is_down, &done, 5000), 0);
  sp_receiver_pprof_scrape.destroy(rx.comp);
  sp_cfg_free(sp_receiver_pprof_scrape.schema, rx.cfg);
  sp_free(rx.cfg);
  sp_config_doc_free(rx.doc);
  sp_sink_free(&rx.sink);
}

static int setup(void **state) {
  (void)state;
  memset(&srv, 0, sizeof(srv));
  memset(&rx, 0, sizeof(rx));
  assert_int_equal(uv_loop_init(&srv.loop), 0);
  sp_http_server_options_t o = {.endpoint = "127.0.0.1:0", .component = "pprof-test",
                                .handler = handler};
  assert_int_equal(sp_http_server_create(&srv.loop, &o, &srv.http), 0);
  assert_int_equal(sp_http_server_start(srv.http), 0);
  srv.port = sp_http_server_port(srv.http);
  rx.telemetry = sp_telemetry_create();
  rx.host.loop = &srv.loop;
  rx.host.telemetry = rx.telemetry;
  sp_sink_init(&rx.sink);
  return 0;
}

static int teardown(void **state) {
  (void)state;
  for (int i = 0; i < srv.n_held; i++)
    sp_http_respond(srv.held[i], 503, "text/plain", "late", 4, NULL, 0);
  srv.n_held = 0;
  sp_http_server_shutdown(srv.http, on_down, &srv.down);
  assert_int_equal(sp_test_run_until(&srv.loop, is_down, &srv.down, 5000), 0);
  sp_http_server_destroy(srv.http);
  assert_int_equal(sp_test_loop_finish(&srv.loop, 5000), 0);
  sp_telemetry_destroy(rx.telemetry);
  return 0;
}

/* Profiles in the sink with __name__ @p name. */
static size_t count_named(const char *name, size_t *first) {
  size_t n = 0;
  for (size_t i = 0; i < sp_sink_profile_count(&rx.sink); i++) {
    sp_profile_t *p = sp_sink_profile(&rx.sink, i, NULL);
    if (strcmp(sp_profile_label(p, "__name__"), name) == 0) {
      if (n == 0 && first != NULL)
        *first = i;
      n++;
    }
  }
  return n;
}

static int three_mutex_deltas(void *arg) {
  (void)arg;
  return count_named("mutex", NULL) >= 3 &&
         sp_telemetry_value(rx.telemetry, "spanprof_receiver_scrape_failures_total",
                            "receiver=\"pprof_scrape\",target=\"http://127.0.0.1:1\"") >= 1;
}

static uint64_t failures(const char *url) {
  char l[256];
  snprintf(l, sizeof(l), "receiver=\"pprof_scrape\",target=\"%s\"", url);
  return sp_telemetry_value(rx.telemetry, "spanprof_receiver_scrape_failures_total", l);
}

static sp_profile_t *nth_named(const char *name, size_t k, sp_profiles_t **batch) {
  size_t n = 0;
  for (size_t i = 0; i < sp_sink_profile_count(&rx.sink); i++) {
    sp_profile_t *p = sp_sink_profile(&rx.sink, i, batch);
    if (strcmp(sp_profile_label(p, "__name__"), name) == 0 && n++ == k)
      return p;
  }
  fail_msg("no %s profile #%zu", name, k);
  return NULL;
}

static void test_scrape_targets(void **state) {
  (void)state;
  char yaml[1024];
  snprintf(yaml, sizeof(yaml),
           "interval: 300ms\n"
           "timeout: 250ms\n"
           "targets:\n"
           "  - url: http://127.0.0.1:%d/\n"
           "    labels: {service_name: svc-a, env: test}\n"
           "  - url: http://127.0.0.1:1\n"
           "  - url: http://127.0.0.1:%d/broken\n"
           "    labels: {service_name: broken}\n"
           "  - url: http://127.0.0.1:%d/hang\n"
           "    labels: {service_name: hang}\n"
           "profiles:\n"
           "  cpu: {seconds: 1}\n"
           "  block: {enabled: false}\n",
           srv.port, srv.port, srv.port);
  rx_start(yaml);
  uint64_t t0 = uv_now(&srv.loop);
  assert_int_equal(sp_test_run_until(&srv.loop, three_mutex_deltas, NULL, 8000), 0);
  uint64_t elapsed = uv_now(&srv.loop) - t0;

  /* Interval: 4 mutex scrapes (1 primes, 3 deltas) need 3 intervals, and none came early. */
  assert_true(srv.n_mutex >= 4);
  assert_true(elapsed >= 3 * 300 - 20);
  for (int i = 1; i < srv.n_mutex && i < 64; i++)
    if (srv.mutex_at[i] - srv.mutex_at[i - 1] < 300 - 20)
      fail_msg("mutex scrapes %d and %d only %llu ms apart", i - 1, i,
               (unsigned long long)(srv.mutex_at[i] - srv.mutex_at[i - 1]));
  assert_string_equal(srv.cpu_query, "seconds=1");
  assert_int_equal(srv.n_other, 0); /* block disabled, no other paths asked for */

  /* Mutex: deltas. 1st delta: A +10, B new (5); 2nd: A +10, B unchanged → dropped. */
  sp_profiles_t *batch;
  sp_profile_t *p = nth_named("mutex", 0, &batch);
  char inst[64];
  snprintf(inst, sizeof(inst), "127.0.0.1:%d", srv.port);
  assert_string_equal(sp_profile_label(p, "service_name"), "svc-a");
  assert_string_equal(sp_profile_label(p, "env"), "test");
  assert_string_equal(sp_profile_label(p, "instance"), inst);
  assert_string_equal(sp_profile_label(p, "__delta__"), "false");
  assert_true(p->time_end_ns > p->time_start_ns);
  assert_true(p->modified);
  sp_pprof_t *pp = sp_profile_decode(batch, p);
  assert_int_equal(pp->n_sample, 2);
  assert_int_equal(value_of(pp, 0x1000, NULL, 0), 10);
  assert_int_equal(value_of(pp, 0x1000, NULL, 1), 1000);
  assert_int_equal(value_of(pp, 0x1100, NULL, 0), 5);
  assert_int_equal(pp->duration_nanos, p->time_end_ns - p->time_start_ns);
  p = nth_named("mutex", 1, &batch);
  pp = sp_profile_decode(batch, p);
  assert_int_equal(pp->n_sample, 1);
  assert_int_equal(value_of(pp, 0x1000, NULL, 0), 10);
  assert_int_equal(value_of(pp, 0x1100, NULL, 0), -1);
  sp_profile_t *p0 = nth_named("mutex", 0, NULL);
  assert_true(p->time_start_ns >= p0->time_end_ns); /* consecutive intervals */

  /* Memory: alloc_ values are deltas, inuse_ values as scraped. */
  p = nth_named("memory", 0, &batch);
  assert_string_equal(sp_profile_label(p, "__delta__"), "false");
  pp = sp_profile_decode(batch, p);
  assert_int_equal(value_of(pp, 0x3000, NULL, 0), 2);
  assert_int_equal(value_of(pp, 0x3000, NULL, 1), 200);
  assert_int_equal(value_of(pp, 0x3000, NULL, 2), 7);
  assert_int_equal(value_of(pp, 0x3000, NULL, 3), 700);

  /* CPU: the profile's own time range, span labels normalised. */
  p = nth_named("process_cpu", 0, &batch);
  assert_string_equal(sp_profile_label(p, "__delta__"), "false");
  assert_int_equal(p->time_start_ns, 1700000000000000000LL);
  assert_int_equal(p->time_end_ns, 1700000001000000000LL);
  pp = sp_profile_decode(batch, p);
  assert_string_equal(sp_pprof_sample_label_str(pp, pp->sample[0], "span_id"), "abcdef0123456789");

  /* Goroutines: a snapshot per scrape. */
  assert_true(count_named("goroutines", NULL) >= 3);
  assert_int_equal(count_named("block", NULL), 0);

  /* Only the healthy target produced profiles; the others failed, each counted. */
  size_t total = sp_sink_profile_count(&rx.sink);
  for (size_t i = 0; i < total; i++)
    assert_string_equal(sp_profile_label(sp_sink_profile(&rx.sink, i, NULL), "service_name"),
                        "svc-a");
  char url[128];
  snprintf(url, sizeof(url), "http://127.0.0.1:%d", srv.port);
  assert_int_equal(failures(url), 0);
  assert_true(failures("http://127.0.0.1:1") >= 4);
  snprintf(url, sizeof(url), "http://127.0.0.1:%d/broken", srv.port);
  assert_true(failures(url) >= 4);
  assert_true(srv.n_broken >= 4);
  snprintf(url, sizeof(url), "http://127.0.0.1:%d/hang", srv.port);
  assert_true(failures(url) >= 3); /* timeouts */
  char l[256];
  snprintf(l, sizeof(l), "receiver=\"pprof_scrape\",target=\"%s\"", url);
  assert_true(sp_telemetry_value(rx.telemetry, "spanprof_receiver_scrapes_skipped_total", l) >= 1);
  assert_int_equal(sp_telemetry_value(rx.telemetry, "spanprof_receiver_accepted_profiles_total",
                                      "receiver=\"pprof_scrape\",transport=\"scrape\""),
                   total);
  rx_stop();
}

/* A target that comes up late: failures first, then profiles; delta disabled sends totals. */
static int two_mutex(void *arg) {
  (void)arg;
  return count_named("mutex", NULL) >= 2;
}

static void test_scrape_no_delta(void **state) {
  (void)state;
  char yaml[512];
  snprintf(yaml, sizeof(yaml),
           "interval: 150ms\n"
           "delta: false\n"
           "targets:\n"
           "  - url: http://127.0.0.1:%d\n"
           "profiles:\n"
           "  cpu: {enabled: false}\n"
           "  heap: {path: /debug/pprof/allocs}\n"
           "  goroutine: {enabled: false}\n"
           "  block: {enabled: false}\n",
           srv.port);
  rx_start(yaml);
  assert_int_equal(sp_test_run_until(&srv.loop, two_mutex, NULL, 5000), 0);
  sp_profiles_t *batch;
  sp_profile_t *p = nth_named("mutex", 1, &batch);
  char svc[64];
  snprintf(svc, sizeof(svc), "127.0.0.1:%d", srv.port);
  assert_string_equal(sp_profile_label(p, "service_name"), svc);
  assert_null(sp_profile_label(p, "__delta__")); /* cumulative, as scraped */
  assert_false(p->modified);
  sp_pprof_t *pp = sp_profile_decode(batch, p);
  assert_int_equal(value_of(pp, 0x1000, NULL, 0), 20);
  assert_true(count_named("memory", NULL) >= 1);
  rx_stop();
}

/*
 * The pipeline refuses deltas for a while: nothing is lost, as no sender
 * retries a scrape, the baseline stays where it was and the first delta
 * accepted covers the refused intervals too (it used to move on every
 * scrape, so each refused interval was gone for good).
 */
static int two_refused(void *arg) {
  (void)arg;
  return rx.sink.refused_calls >= 2;
}
static int one_mutex(void *arg) {
  (void)arg;
  return count_named("mutex", NULL) >= 1;
}

static void test_scrape_refused_delta_kept(void **state) {
  (void)state;
  char yaml[512];
  snprintf(yaml, sizeof(yaml),
           "interval: 150ms\n"
           "targets:\n"
           "  - url: http://127.0.0.1:%d\n"
           "profiles:\n"
           "  cpu: {enabled: false}\n"
           "  memory: {enabled: false}\n"
           "  goroutine: {enabled: false}\n"
           "  block: {enabled: false}\n",
           srv.port);
  rx.sink.result = SP_EAGAIN;
  rx_start(yaml);
  uv_update_time(&srv.loop);
  int64_t t0 = (int64_t)time(NULL) * 1000000000LL;
  assert_int_equal(sp_test_run_until(&srv.loop, two_refused, NULL, 5000), 0);
  size_t refused = rx.sink.refused_calls;
  rx.sink.result = 0;
  assert_int_equal(sp_test_run_until(&srv.loop, one_mutex, NULL, 5000), 0);
  /* Scrape 1 primed; `refused` deltas were refused; the accepted one covers them all. */
  sp_profiles_t *batch;
  sp_profile_t *p = nth_named("mutex", 0, &batch);
  sp_pprof_t *pp = sp_profile_decode(batch, p);
  assert_int_equal(value_of(pp, 0x1000, NULL, 0), 10 * (int64_t)(refused + 1));
  assert_int_equal(value_of(pp, 0x1100, NULL, 0), 5); /* appeared in a refused interval */
  /* Its interval starts at the priming scrape, (refused + 1) intervals back
   * (one interval of slack for response times under load). */
  assert_true(p->time_start_ns >= t0 - 1000000000LL);
  int64_t covered = p->time_end_ns - p->time_start_ns;
  assert_true(covered >= (int64_t)refused * 150000000LL);
  assert_int_equal(sp_telemetry_value(rx.telemetry, "spanprof_receiver_refused_profiles_total",
                                      "receiver=\"pprof_scrape\",transport=\"scrape\""),
                   refused);
  rx_stop();
}

static void test_config_errors(void **state) {
  (void)state;
  static const struct {
    const char *yaml, *want;
  } cases[] = {
      {"interval: 1s\n", "targets"},
      {"targets: []\n", "at least one target"},
      {"targets:\n  - url: ftp://x\n", "http://"},
      {"targets:\n  - labels: {a: b}\n", "url"},
      {"targets:\n  - url: http://x\nprofiles:\n  memory: {}\n  heap: {}\n", "only one"},
      {"targets:\n  - url: http://x\nprofiles:\n  mutex: {path: debug}\n", "start with /"},
      {"targets:\n  - url: http://x\nprofiles:\n  mutex: {seconds: 3}\n", "seconds"},
      {"targets:\n  - url: http://x\ninterval: 10ms\n", "interval"},
  };
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    sp_errors_t errs = {0};
    sp_config_doc_t *doc = NULL;
    assert_int_equal(
        sp_config_load_string("t", cases[i].yaml, strlen(cases[i].yaml), &doc, &errs), 0);
    void *cfg = sp_calloc(1, sp_receiver_pprof_scrape.config_size);
    int rc = sp_cfg_decode(sp_receiver_pprof_scrape.schema, doc->root, "pprof_scrape", NULL, cfg,
                           &errs);
    bool found = false;
    for (size_t e = 0; e < errs.n; e++)
      found |= strstr(errs.lines[e], cases[i].want) != NULL;
    if (rc == 0 || !found) {
      sp_errors_print(&errs, 2);
      fail_msg("case %zu: expected an error mentioning \"%s\"", i, cases[i].want);
    }
    sp_errors_free(&errs);
    sp_cfg_free(sp_receiver_pprof_scrape.schema, cfg);
    sp_free(cfg);
    sp_config_doc_free(doc);
  }
}

int main(void) {
  sp_log_set_level(SP_LOG_ERROR);
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_delta_function),
      cmocka_unit_test(test_delta_saturates),
      cmocka_unit_test_setup_teardown(test_scrape_targets, setup, teardown),
      cmocka_unit_test_setup_teardown(test_scrape_no_delta, setup, teardown),
      cmocka_unit_test(test_config_errors),
      cmocka_unit_test_setup_teardown(test_scrape_refused_delta_kept, setup, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
