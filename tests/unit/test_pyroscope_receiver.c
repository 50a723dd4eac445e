/*
 * test_pyroscope_receiver.c — the `pyroscope` receiver against a real HTTP
 * client (libcurl, in a client thread while the test runs the receiver's
 * loop) and a recording sink.
 *
 * Covered: /ingest with raw pprof (plain and gzip), the multipart form the
 * Go SDK sends (built here the way its upstream/remote uploader builds it:
 * a `profile` file part and a `sample_type_config` JSON part), folded and
 * lines text; the Connect Push API in protobuf and JSON (built from the
 * generated schema), gzip-encoded; `name` parsing, from/until units,
 * span-label normalisation, tenant/authorization metadata, a table of bad
 * inputs answered 400/404/405/413/415 with messages, refusals answered
 * 503 + Retry-After, counters. Every test ends with uv_loop_close() == 0.
 *
 * The whole suite runs twice: as configured (small bodies are decoded on
 * the loop) and with every request body decoded on libuv's thread pool
 * (sp_pyro_t.pool_min = 1), so both paths give the same answers. Then the
 * pool itself: shutdown waits for requests held on a blocked pool
 * (support/pool_block.h), pipelined requests on one connection are answered
 * and handed over in order whichever path each takes, and concurrent
 * clients are all served.
 */
#include "pipeline/alloc.h"
#include "pipeline/compress.h"
#include "pipeline/config.h"
#include "pipeline/error.h"
#include "pipeline/log.h"
#include "pipeline/pbjson.h"
#include "pipeline/pprof.h"
#include "pipeline/pprofwire.h"
#include "receivers/pyroscope/pyroscope.h"
#include "support/loop_util.h"
#include "support/pool_block.h"
#include "support/sink.h"

#include "push/v1/push.pb-c.h"

#include <arpa/inet.h>
#include <curl/curl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sys/socket.h>
#include <unistd.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <cmocka.h>

extern const sp_component_def_t sp_receiver_pyroscope;

/* --- fixture -------------------------------------------------------------- */

typedef struct fixture_s {
  uv_loop_t loop;
  sp_telemetry_t *telemetry;
  sp_host_t host;
  sp_sink_t sink;
  sp_config_doc_t *doc;
  sp_pyro_cfg_t cfg;
  sp_component_t *comp;
  int port;
  int stopped;
} fixture_t;

static fixture_t fx;

/* sp_pyro_t.pool_min for every test of the current group (0: the receiver's default). */
static size_t g_pool_min;

static void start_receiver(const char *yaml) {
  sp_errors_t errs = {0};
  assert_int_equal(sp_config_load_string("test", yaml, strlen(yaml), &fx.doc, &errs), 0);
  memset(&fx.cfg, 0, sizeof(fx.cfg));
  int rc = sp_cfg_decode(sp_receiver_pyroscope.schema, fx.doc->root, "pyroscope", NULL, &fx.cfg,
                         &errs);
  if (rc != 0)
    sp_errors_print(&errs, 2);
  assert_int_equal(rc, 0);
  sp_errors_free(&errs);
  sp_create_settings_t set = {.host = &fx.host, .id = "pyroscope", .next_profiles = &fx.sink.consumer};
  assert_int_equal(sp_receiver_pyroscope.create(&set, &fx.cfg, &fx.comp), 0);
  fx.comp->def = &sp_receiver_pyroscope;
  fx.comp->host = &fx.host;
  fx.comp->id = "pyroscope";
  fx.comp->config = &fx.cfg;
  assert_int_equal(sp_receiver_pyroscope.start(fx.comp), 0);
  fx.port = sp_http_server_port(((sp_pyro_t *)fx.comp)->http);
  assert_true(fx.port > 0);
  ((sp_pyro_t *)fx.comp)->pool_min = g_pool_min;
}

static int setup(void **state) {
  (void)state;
  memset(&fx, 0, sizeof(fx));
  assert_int_equal(uv_loop_init(&fx.loop), 0);
  fx.telemetry = sp_telemetry_create();
  fx.host.loop = &fx.loop;
  fx.host.telemetry = fx.telemetry;
  sp_sink_init(&fx.sink);
  start_receiver("endpoint: 127.0.0.1:0\nmax_request_body_size: 100KiB\n"
                 "max_profile_size: 64KiB\n");
  return 0;
}

static void on_stopped(void *arg) { (*(int *)arg)++; }
static int stopped_cond(void *arg) { return *(int *)arg > 0; }

static int teardown(void **state) {
  (void)state;
  sp_receiver_pyroscope.shutdown(fx.comp, on_stopped, &fx.stopped);
  assert_int_equal(fx.stopped, 0); /* never inline */
  assert_int_equal(sp_test_run_until(&fx.loop, stopped_cond, &fx.stopped, 5000), 0);
  sp_receiver_pyroscope.destroy(fx.comp);
  sp_cfg_free(sp_receiver_pyroscope.schema, &fx.cfg);
  sp_config_doc_free(fx.doc);
  sp_sink_free(&fx.sink);
  assert_int_equal(sp_test_loop_finish(&fx.loop, 5000), 0);
  sp_telemetry_destroy(fx.telemetry);
  return 0;
}

/* --- client thread ---------------------------------------------------------- */

typedef struct req_s {
  const char *method;
  char url[4096];
  const char *headers[6];
  const void *body;
  size_t len;
  /* results */
  long status;
  char resp[4096];
  size_t resp_len;
  char retry_after[64];
  char resp_ctype[128];
  atomic_int done;
} req_t;

static size_t on_body(char *p, size_t size, size_t n, void *arg) {
  req_t *r = arg;
  size_t len = size * n;
  size_t room = sizeof(r->resp) - 1 - r->resp_len;
  size_t take = len < room ? len : room;
  memcpy(r->resp + r->resp_len, p, take);
  r->resp_len += take;
  r->resp[r->resp_len] = '\0';
  return len;
}

static void header_value(const char *line, size_t len, const char *name, char *out, size_t cap) {
  size_t nl = strlen(name);
  if (len <= nl || strncasecmp(line, name, nl) != 0 || line[nl] != ':')
    return;
  const char *v = line + nl + 1;
  size_t vl = len - nl - 1;
  while (vl > 0 && (*v == ' '))
    v++, vl--;
  while (vl > 0 && (v[vl - 1] == '\r' || v[vl - 1] == '\n'))
    vl--;
  snprintf(out, cap, "%.*s", (int)vl, v);
}

static size_t on_header(char *p, size_t size, size_t n, void *arg) {
  req_t *r = arg;
  header_value(p, size * n, "Retry-After", r->retry_after, sizeof(r->retry_after));
  header_value(p, size * n, "Content-Type", r->resp_ctype, sizeof(r->resp_ctype));
  return size * n;
}

static void *client_main(void *arg) {
  req_t *r = arg;
  CURL *c = curl_easy_init();
  struct curl_slist *h = NULL;
  for (size_t i = 0; i < 6 && r->headers[i] != NULL; i++)
    h = curl_slist_append(h, r->headers[i]);
  h = curl_slist_append(h, "Expect:");
  curl_easy_setopt(c, CURLOPT_URL, r->url);
  curl_easy_setopt(c, CURLOPT_NOPROXY, "*");
  curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
  curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
  curl_easy_setopt(c, CURLOPT_WRITEDATA, r);
  curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
  curl_easy_setopt(c, CURLOPT_HEADERDATA, r);
  curl_easy_setopt(c, CURLOPT_TIMEOUT, 10L);
  if (r->method == NULL || strcmp(r->method, "POST") == 0) {
    curl_easy_setopt(c, CURLOPT_POST, 1L);
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, r->body != NULL ? r->body : "");
    curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)r->len);
  } else {
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, r->method);
  }
  if (curl_easy_perform(c) == CURLE_OK)
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &r->status);
  else
    r->status = -1;
  curl_slist_free_all(h);
  curl_easy_cleanup(c);
  atomic_store(&r->done, 1);
  return NULL;
}

static int req_done(void *arg) { return atomic_load(&((req_t *)arg)->done); }

/* Runs @p r from a client thread while the loop serves it. Returns the status. */
static long run(req_t *r) {
  pthread_t th;
  atomic_store(&r->done, 0);
  assert_int_equal(pthread_create(&th, NULL, client_main, r), 0);
  assert_int_equal(sp_test_run_until(&fx.loop, req_done, r, 15000), 0);
  pthread_join(th, NULL);
  return r->status;
}

/* Percent-encodes @p s for a query value. */
static void qenc(char *out, size_t cap, const char *s) {
  size_t w = 0;
  for (; *s && w + 4 < cap; s++) {
    unsigned char c = (unsigned char)*s;
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
        c == '_' || c == '.' || c == '~')
      out[w++] = (char)c;
    else
      w += (size_t)snprintf(out + w, cap - w, "%%%02X", c);
  }
  out[w] = '\0';
}

/* POST /ingest?name=<name>&<extra> with @p body. */
static long ingest(req_t *r, const char *name, const char *extra, const void *body, size_t len,
                   const char *ctype) {
  char n[1024];
  memset(r, 0, sizeof(*r));
  qenc(n, sizeof(n), name);
  snprintf(r->url, sizeof(r->url), "http://127.0.0.1:%d/ingest?name=%s%s%s", fx.port, n,
           extra[0] ? "&" : "", extra);
  r->body = body;
  r->len = len;
  static char ct[256];
  snprintf(ct, sizeof(ct), "Content-Type: %s", ctype != NULL ? ctype : "binary/octet-stream");
  r->headers[0] = ct;
  return run(r);
}

static long push(req_t *r, const void *body, size_t len, const char *ctype, const char *enc) {
  memset(r, 0, sizeof(*r));
  snprintf(r->url, sizeof(r->url), "http://127.0.0.1:%d/push.v1.PusherService/Push", fx.port);
  r->body = body;
  r->len = len;
  static char ct[128], ce[128];
  snprintf(ct, sizeof(ct), "Content-Type: %s", ctype);
  r->headers[0] = ct;
  r->headers[1] = "Connect-Protocol-Version: 1";
  if (enc != NULL) {
    snprintf(ce, sizeof(ce), "Content-Encoding: %s", enc);
    r->headers[2] = ce;
  }
  return run(r);
}

/* --- building pprof ---------------------------------------------------------- */

typedef struct pb_s {
  Perftools__Profiles__Profile p;
  char *strings[256];
  size_t n_strings;
} pb_t;

static int64_t pb_str(pb_t *b, const char *s) {
  for (size_t i = 0; i < b->n_strings; i++)
    if (strcmp(b->strings[i], s) == 0)
      return (int64_t)i;
  assert_true(b->n_strings < 256);
  b->strings[b->n_strings] = strdup(s);
  return (int64_t)b->n_strings++;
}

/*
 * A profile with sample types "type/unit,type/unit", two functions main ←
 * work, and @p n samples (values i+1 for every type). @p labels: per sample
 * "k=v;k=v" strings (NULL: none). Returns sp_malloc'd bytes.
 */
static uint8_t *make_pprof(const char *types, size_t n, const char *const *labels,
                           int64_t time_ns, size_t *len) {
  pb_t b;
  memset(&b, 0, sizeof(b));
  perftools__profiles__profile__init(&b.p);
  pb_str(&b, "");
  Perftools__Profiles__ValueType *vts[4], vt[4];
  size_t nt = 0;
  char tmp[256];
  snprintf(tmp, sizeof(tmp), "%s", types);
  for (char *save = NULL, *t = strtok_r(tmp, ",", &save); t != NULL;
       t = strtok_r(NULL, ",", &save)) {
    char *slash = strchr(t, '/');
    *slash = '\0';
    perftools__profiles__value_type__init(&vt[nt]);
    vt[nt].type = pb_str(&b, t);
    vt[nt].unit = pb_str(&b, slash + 1);
    vts[nt] = &vt[nt];
    nt++;
  }
  b.p.sample_type = vts;
  b.p.n_sample_type = nt;
  Perftools__Profiles__Function fn[2], *fns[2];
  Perftools__Profiles__Location loc[2], *locs[2];
  Perftools__Profiles__Line line[2], *lines[2][1];
  const char *names[2] = {"main", "work"};
  for (int i = 0; i < 2; i++) {
    perftools__profiles__function__init(&fn[i]);
    fn[i].id = (uint64_t)i + 1;
    fn[i].name = pb_str(&b, names[i]);
    fns[i] = &fn[i];
    perftools__profiles__line__init(&line[i]);
    line[i].function_id = (uint64_t)i + 1;
    lines[i][0] = &line[i];
    perftools__profiles__location__init(&loc[i]);
    loc[i].id = (uint64_t)i + 1;
    loc[i].line = lines[i];
    loc[i].n_line = 1;
    locs[i] = &loc[i];
  }
  b.p.function = fns;
  b.p.n_function = 2;
  b.p.location = locs;
  b.p.n_location = 2;
  Perftools__Profiles__Sample smp[16], *smps[16];
  uint64_t stack[2] = {2, 1};
  int64_t vals[16][4];
  Perftools__Profiles__Label lbl[16][4], *lbls[16][4];
  assert_true(n <= 16);
  for (size_t i = 0; i < n; i++) {
    perftools__profiles__sample__init(&smp[i]);
    smp[i].location_id = stack;
    smp[i].n_location_id = 2;
    for (size_t v = 0; v < nt; v++)
      vals[i][v] = (int64_t)(i + 1);
    smp[i].value = vals[i];
    smp[i].n_value = nt;
    if (labels != NULL && labels[i] != NULL) {
      char lt[256];
      snprintf(lt, sizeof(lt), "%s", labels[i]);
      size_t nl = 0;
      for (char *save = NULL, *kv = strtok_r(lt, ";", &save); kv != NULL;
           kv = strtok_r(NULL, ";", &save)) {
        char *eq = strchr(kv, '=');
        *eq = '\0';
        perftools__profiles__label__init(&lbl[i][nl]);
        lbl[i][nl].key = pb_str(&b, kv);
        lbl[i][nl].str = pb_str(&b, eq + 1);
        lbls[i][nl] = &lbl[i][nl];
        nl++;
      }
      smp[i].label = lbls[i];
      smp[i].n_label = nl;
    }
    smps[i] = &smp[i];
  }
  b.p.sample = smps;
  b.p.n_sample = n;
  b.p.time_nanos = time_ns;
  b.p.duration_nanos = time_ns ? 10000000000LL : 0;
  b.p.string_table = b.strings;
  b.p.n_string_table = b.n_strings;
  *len = perftools__profiles__profile__get_packed_size(&b.p);
  uint8_t *out = sp_malloc(*len);
  perftools__profiles__profile__pack(&b.p, out);
  for (size_t i = 0; i < b.n_strings; i++)
    free(b.strings[i]);
  return out;
}

static uint8_t *gzip_bytes(const uint8_t *in, size_t len, size_t *out_len) {
  sp_buf_t b;
  sp_buf_init(&b, 0);
  assert_int_equal(sp_gzip_compress(in, len, -1, &b), 0);
  return sp_buf_steal(&b, out_len);
}

static const char *label(const sp_profile_t *p, const char *name) {
  return sp_profile_label(p, name);
}

static sp_profile_t *got(size_t i, sp_profiles_t **batch) {
  sp_profile_t *p = sp_sink_profile(&fx.sink, i, batch);
  assert_non_null(p);
  return p;
}

/* The string label @p key of sample @p i of the decoded profile. */
static const char *sample_label(sp_profiles_t *batch, sp_profile_t *p, size_t i, const char *key) {
  sp_pprof_t *pp = sp_profile_decode(batch, p);
  assert_non_null(pp);
  assert_true(i < pp->n_sample);
  return sp_pprof_sample_label_str(pp, pp->sample[i], key);
}

/* --- tests: /ingest ------------------------------------------------------------ */

static void test_ingest_raw_pprof(void **state) {
  (void)state;
  size_t len;
  uint8_t *pb = make_pprof("samples/count,cpu/nanoseconds", 3, NULL, 0, &len);
  req_t r;
  memset(&r, 0, sizeof(r));
  char n[256];
  qenc(n, sizeof(n), "myapp.cpu{env=prod, region = eu-west }");
  snprintf(r.url, sizeof(r.url),
           "http://127.0.0.1:%d/ingest?name=%s&from=1700000000&until=1700000010&format=pprof"
           "&spyName=gospy&sampleRate=100&units=samples&aggregationType=sum",
           fx.port, n);
  r.body = pb;
  r.len = len;
  r.headers[0] = "Content-Type: binary/octet-stream";
  r.headers[1] = "X-Scope-OrgID: tenant-1";
  r.headers[2] = "Authorization: Bearer abc";
  assert_int_equal(run(&r), 200);
  assert_int_equal(fx.sink.n_profiles, 1);
  sp_profiles_t *batch;
  sp_profile_t *p = got(0, &batch);
  /* Pyroscope keeps the whole app name as service_name for pprof uploads. */
  assert_string_equal(label(p, "service_name"), "myapp.cpu");
  assert_string_equal(label(p, "__name__"), "process_cpu");
  assert_string_equal(label(p, "env"), "prod");
  assert_string_equal(label(p, "region"), "eu-west");
  assert_string_equal(label(p, "__delta__"), "false");
  assert_string_equal(label(p, "pyroscope_spy"), "gospy");
  assert_int_equal(p->time_start_ns, 1700000000LL * 1000000000LL);
  assert_int_equal(p->time_end_ns, 1700000010LL * 1000000000LL);
  assert_string_equal(batch->meta.tenant, "tenant-1");
  assert_string_equal(batch->meta.authorization, "Bearer abc");
  /* The profile had no time of its own: it gets `from` (so it is re-encoded). */
  sp_pprof_t *pp = sp_profile_decode(batch, p);
  assert_int_equal(pp->time_nanos, 1700000000LL * 1000000000LL);
  assert_int_equal(pp->n_sample, 3);
  assert_int_equal(sp_telemetry_value(fx.telemetry, "spanprof_receiver_accepted_profiles_total",
                                      "receiver=\"pyroscope\",transport=\"ingest\""),
                   1);
  sp_free(pb);
}

static void test_ingest_gzip_pprof_unmodified(void **state) {
  (void)state;
  size_t len, glen;
  uint8_t *pb = make_pprof("alloc_objects/count,alloc_space/bytes,inuse_objects/count,"
                           "inuse_space/bytes",
                           2, NULL, 1700000000123456789LL, &len);
  uint8_t *gz = gzip_bytes(pb, len, &glen);
  req_t r;
  /* No format: gzip is recognised; 19 digits are nanoseconds. */
  assert_int_equal(ingest(&r, "svc{}", "from=1700000000123456789&until=1700000010123456789", gz,
                          glen, NULL),
                   200);
  sp_profiles_t *batch;
  sp_profile_t *p = got(0, &batch);
  assert_string_equal(label(p, "__name__"), "memory");
  assert_string_equal(label(p, "service_name"), "svc");
  assert_string_equal(label(p, "pyroscope_spy"), "unknown");
  assert_int_equal(p->time_start_ns, 1700000000123456789LL);
  assert_null(batch->meta.tenant);
  /* Nothing changed: the uncompressed bytes travel as received. */
  assert_false(p->modified);
  assert_int_equal(p->raw_len, len);
  assert_memory_equal(p->raw, pb, len);
  sp_free(pb);
  sp_free(gz);
}

/* The Go SDK's upload: mime/multipart with a 60-hex-digit boundary. */
static size_t go_form(char *out, size_t cap, const char *boundary, const uint8_t *profile,
                      size_t plen, const char *stc, const char *extra_part) {
  size_t w = (size_t)snprintf(out, cap,
                              "--%s\r\nContent-Disposition: form-data; name=\"profile\"; "
                              "filename=\"profile.pprof\"\r\nContent-Type: "
                              "application/octet-stream\r\n\r\n",
                              boundary);
  memcpy(out + w, profile, plen);
  w += plen;
  if (stc != NULL)
    w += (size_t)snprintf(out + w, cap - w,
                          "\r\n--%s\r\nContent-Disposition: form-data; "
                          "name=\"sample_type_config\"; "
                          "filename=\"sample_type_config.json\"\r\nContent-Type: "
                          "application/octet-stream\r\n\r\n%s",
                          boundary, stc);
  if (extra_part != NULL)
    w += (size_t)snprintf(out + w, cap - w, "\r\n--%s\r\n%s", boundary, extra_part);
  w += (size_t)snprintf(out + w, cap - w, "\r\n--%s--\r\n", boundary);
  return w;
}

static void test_ingest_go_sdk_multipart(void **state) {
  (void)state;
  const char *boundary = "8c6f3f26b9e8a5d1f0a4c2e7b3d9f1a6c8e0b2d4f6a8c0e2b4d6f8a0c2e4";
  char ctype[160];
  snprintf(ctype, sizeof(ctype), "multipart/form-data; boundary=%s", boundary);
  size_t len, glen;
  /* A Go block profile (godeltaprof), with the SDK's sample_type_config for block. */
  uint8_t *pb = make_pprof("contentions/count,delay/nanoseconds", 2, NULL, 0, &len);
  uint8_t *gz = gzip_bytes(pb, len, &glen);
  static char form[8192];
  size_t flen = go_form(form, sizeof(form), boundary, gz, glen,
                        "{\"contentions\":{\"units\":\"lock_samples\",\"display-name\":"
                        "\"block_count\"},\"delay\":{\"units\":\"lock_nanoseconds\","
                        "\"display-name\":\"block_duration\"}}",
                        NULL);
  req_t r;
  assert_int_equal(ingest(&r, "goapp{__session_id__=abc,__private=x,pod=p1}",
                          "from=1700000000&until=1700000015&spyName=gospy&sampleRate=100"
                          "&units=&aggregationType=",
                          form, flen, ctype),
                   200);
  sp_profile_t *p = got(0, NULL);
  assert_string_equal(label(p, "__name__"), "block");
  assert_string_equal(label(p, "service_name"), "goapp");
  assert_string_equal(label(p, "__session_id__"), "abc");
  assert_string_equal(label(p, "pod"), "p1");
  assert_null(label(p, "__private"));
  /* The same profile without the config: Pyroscope's defaults say mutex. */
  flen = go_form(form, sizeof(form), boundary, gz, glen, NULL, NULL);
  assert_int_equal(ingest(&r, "goapp", "from=1700000000&until=1700000015", form, flen, ctype), 200);
  assert_string_equal(label(got(1, NULL), "__name__"), "mutex");
  /* Goroutines (SDK config renames goroutine → goroutines). */
  sp_free(pb);
  sp_free(gz);
  pb = make_pprof("goroutine/count", 1, NULL, 0, &len);
  flen = go_form(form, sizeof(form), boundary, pb, len,
                 "{\"goroutine\":{\"display-name\":\"goroutines\",\"units\":\"goroutines\","
                 "\"aggregation\":\"average\"}}",
                 NULL);
  assert_int_equal(ingest(&r, "goapp", "", form, flen, ctype), 200);
  assert_string_equal(label(got(2, NULL), "__name__"), "goroutines");
  /* A quoted boundary and a Node-style part (filename "profile", no Content-Type). */
  char qctype[200];
  snprintf(qctype, sizeof(qctype), "multipart/form-data; boundary=\"%s\"", "----formdata-x");
  size_t w = (size_t)snprintf(form, sizeof(form),
                              "------formdata-x\r\nContent-Disposition: form-data; "
                              "name=\"profile\"; filename=\"profile\"\r\n\r\n");
  sp_free(pb);
  pb = make_pprof("samples/count,wall/nanoseconds", 1, NULL, 0, &len);
  memcpy(form + w, pb, len);
  w += len;
  w += (size_t)snprintf(form + w, sizeof(form) - w, "\r\n------formdata-x--\r\n");
  assert_int_equal(ingest(&r, "node{}", "spyName=nodespy", form, w, qctype), 200);
  assert_string_equal(label(got(3, NULL), "__name__"), "wall");
  assert_string_equal(label(got(3, NULL), "pyroscope_spy"), "nodespy");
  sp_free(pb);
}

static void test_ingest_time_units(void **state) {
  (void)state;
  size_t len;
  uint8_t *pb = make_pprof("samples/count", 1, NULL, 1, &len);
  static const struct {
    const char *from;
    int64_t want;
  } cases[] = {
      {"1700000000", 1700000000LL * 1000000000LL},
      {"1700000000123", 1700000000123LL * 1000000LL},
      {"1700000000123456", 1700000000123456LL * 1000LL},
      {"1700000000123456789", 1700000000123456789LL},
      {"20240102", 1704153600LL * 1000000000LL},
      {"1_700_000_000", 1700000000LL * 1000000000LL},
  };
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    char q[256];
    snprintf(q, sizeof(q), "format=pprof&from=%s&until=1800000000", cases[i].from);
    req_t r;
    assert_int_equal(ingest(&r, "t", q, pb, len, NULL), 200);
    assert_int_equal(got(i, NULL)->time_start_ns, cases[i].want);
    assert_int_equal(got(i, NULL)->time_end_ns, 1800000000LL * 1000000000LL);
  }
  sp_free(pb);
}

static void test_ingest_span_labels(void **state) {
  (void)state;
  size_t len;
  /* Java/Ruby spellings, upper-case hex, a sample already carrying span_id, and none. */
  const char *labels[] = {
      "profile_id=ABCDEF0123456789;span=GET /users",
      "span_id=1111111111111111;profile_id=2222222222222222;span_name=op",
      "profile_id=not-a-span-id",
      NULL,
  };
  uint8_t *pb = make_pprof("cpu/nanoseconds", 4, labels, 1700000000000000000LL, &len);
  req_t r;
  /* trace_id given as an upload tag (pyroscope-rs style) moves onto the samples. */
  assert_int_equal(ingest(&r, "rb{trace_id=0123456789abcdef0123456789ABCDEF}",
                          "format=pprof&from=1700000000&until=1700000010", pb, len, NULL),
                   200);
  sp_profiles_t *batch;
  sp_profile_t *p = got(0, &batch);
  assert_true(p->modified);
  assert_null(label(p, "trace_id"));
  assert_string_equal(sample_label(batch, p, 0, "span_id"), "abcdef0123456789");
  assert_null(sample_label(batch, p, 0, "profile_id"));
  assert_string_equal(sample_label(batch, p, 0, "span_name"), "GET /users");
  assert_null(sample_label(batch, p, 0, "span"));
  assert_string_equal(sample_label(batch, p, 1, "span_id"), "1111111111111111");
  assert_null(sample_label(batch, p, 1, "profile_id"));
  assert_string_equal(sample_label(batch, p, 1, "span_name"), "op");
  assert_null(sample_label(batch, p, 2, "span_id"));
  assert_string_equal(sample_label(batch, p, 2, "profile_id"), "not-a-span-id");
  for (size_t i = 0; i < 4; i++)
    assert_string_equal(sample_label(batch, p, i, "trace_id"),
                        "0123456789abcdef0123456789abcdef");
  /* The edited profile encodes and decodes back the same. */
  const uint8_t *bytes;
  size_t blen;
  assert_int_equal(sp_profile_encoded(batch, p, &bytes, &blen), 0);
  sp_arena_t *a = sp_arena_create(0);
  sp_pprof_t *back = NULL;
  char err[256];
  assert_int_equal(sp_pprof_decode(a, bytes, blen, &back, err, sizeof(err)), 0);
  assert_string_equal(sp_pprof_sample_label_str(back, back->sample[0], "span_id"),
                      "abcdef0123456789");
  sp_arena_destroy(a);
  sp_free(pb);
}

/*
 * The common case never decodes: a plain upload (span_id labels in lower
 * case, a time of its own) enters the batch as the uploaded bytes with their
 * wire index; one without a time gets a time_nanos field appended.
 */
static void test_ingest_wire_path(void **state) {
  (void)state;
  size_t len, glen;
  const char *labels[] = {"span_id=00000000000000aa", "span_id=00000000000000bb;thread=x", NULL};
  uint8_t *pb = make_pprof("samples/count,cpu/nanoseconds", 3, labels, 1700000000000000000LL, &len);
  uint8_t *gz = gzip_bytes(pb, len, &glen);
  req_t r;
  assert_int_equal(ingest(&r, "svc{env=prod}", "from=1700000000&until=1700000010", gz, glen, NULL),
                   200);
  sp_profiles_t *batch;
  sp_profile_t *p = got(0, &batch);
  assert_null(p->pprof);
  assert_false(p->modified);
  assert_non_null(p->wire);
  assert_int_equal(p->raw_len, len);
  assert_memory_equal(p->raw, pb, len);
  assert_ptr_equal(p->wire->raw, p->raw);
  assert_int_equal(p->wire->n_samples, 3);
  assert_ptr_equal(sp_profile_wire(batch, p), p->wire);
  assert_string_equal(label(p, "__name__"), "process_cpu");
  assert_int_equal(p->time_start_ns, 1700000000LL * 1000000000LL);
  sp_pw_label_t l[4];
  assert_int_equal(sp_pprof_wire_labels(p->wire, 1, l, 4), 2);
  size_t n;
  const char *v = sp_pprof_wire_str(p->wire, l[0].str, &n);
  assert_int_equal(n, 16);
  assert_memory_equal(v, "00000000000000bb", 16);
  assert_null(p->pprof); /* reading the index decoded nothing */
  sp_free(gz);
  sp_free(pb);

  /* No time in the profile: `from` is appended on the wire, nothing decoded. */
  pb = make_pprof("samples/count,cpu/nanoseconds", 2, labels, 0, &len);
  assert_int_equal(ingest(&r, "svc", "format=pprof&from=1700000000&until=1700000010", pb, len, NULL),
                   200);
  p = got(1, &batch);
  assert_null(p->pprof);
  assert_non_null(p->wire);
  assert_true(p->raw_len > len);
  assert_memory_equal(p->raw, pb, len);
  assert_int_equal(p->wire->time_nanos, 1700000000LL * 1000000000LL);
  sp_pprof_t *pp = sp_profile_decode(batch, p);
  assert_int_equal(pp->time_nanos, 1700000000LL * 1000000000LL);
  assert_int_equal(pp->n_sample, 2);
  sp_free(pb);

  /* A profile the wire check refuses gets the decoder's words. */
  pb = make_pprof("samples/count", 1, NULL, 1700000000000000000LL, &len);
  uint8_t bad[512];
  memcpy(bad, pb, len);
  bad[len] = (6 << 3) | 2; /* a string whose length runs past the end */
  bad[len + 1] = 5;
  assert_int_equal(ingest(&r, "svc", "format=pprof", bad, len + 2, NULL), 400);
  assert_non_null(strstr(r.resp, "not a pprof profile (malformed protobuf)"));
  sp_free(pb);
}

/* Edits still happen where they must, each alone: upper-case IDs, the Ruby "span" key. */
static void test_ingest_edit_triggers(void **state) {
  (void)state;
  size_t len;
  const char *upper[] = {"span_id=00000000000000AA;trace_id=0123456789ABCDEF0123456789abcdef",
                         NULL};
  uint8_t *pb = make_pprof("cpu/nanoseconds", 2, upper, 1700000000000000000LL, &len);
  req_t r;
  assert_int_equal(ingest(&r, "svc", "format=pprof", pb, len, NULL), 200);
  sp_profiles_t *batch;
  sp_profile_t *p = got(0, &batch);
  assert_true(p->modified);
  assert_non_null(p->pprof);
  assert_string_equal(sample_label(batch, p, 0, "span_id"), "00000000000000aa");
  assert_string_equal(sample_label(batch, p, 0, "trace_id"), "0123456789abcdef0123456789abcdef");
  sp_free(pb);

  const char *ruby[] = {"span=GET /", NULL};
  pb = make_pprof("cpu/nanoseconds", 2, ruby, 1700000000000000000LL, &len);
  assert_int_equal(ingest(&r, "svc", "format=pprof", pb, len, NULL), 200);
  p = got(1, &batch);
  assert_true(p->modified);
  assert_string_equal(sample_label(batch, p, 0, "span_name"), "GET /");
  assert_null(sample_label(batch, p, 0, "span"));
  sp_free(pb);

  /* Decoded because of a profile_id key, but nothing to change: the bytes stay as sent. */
  const char *other[] = {"profile_id=not-a-span-id", NULL};
  pb = make_pprof("cpu/nanoseconds", 2, other, 1700000000000000000LL, &len);
  assert_int_equal(ingest(&r, "svc", "format=pprof", pb, len, NULL), 200);
  p = got(2, &batch);
  assert_false(p->modified);
  assert_int_equal(p->raw_len, len);
  assert_memory_equal(p->raw, pb, len);
  assert_non_null(p->wire);
  assert_ptr_equal(p->wire->raw, p->raw);
  sp_free(pb);
}

static void patch_bytes(uint8_t *b, size_t n, const char *from, const char *to, size_t k) {
  for (size_t i = 0; i + k <= n; i++) {
    if (memcmp(b + i, from, k) == 0) {
      memcpy(b + i, to, k);
      return;
    }
  }
  fail_msg("pattern not found");
}

/*
 * Strings with an embedded NUL read as their prefix once decoded, so the wire
 * check treats them that way too: "profile_id\0Y" is a profile_id key and
 * "…AA\0" an upper-case span ID, both edited as the decode path edits them.
 */
static void test_ingest_edit_triggers_embedded_nul(void **state) {
  (void)state;
  size_t len;
  const char *key[] = {"profile_idXY=00000000000000aa", NULL};
  uint8_t *pb = make_pprof("cpu/nanoseconds", 2, key, 1700000000000000000LL, &len);
  patch_bytes(pb, len, "profile_idXY", "profile_id\0Y", 12);
  req_t r;
  assert_int_equal(ingest(&r, "svc", "format=pprof", pb, len, NULL), 200);
  sp_profiles_t *batch;
  sp_profile_t *p = got(0, &batch);
  assert_string_equal(sample_label(batch, p, 0, "span_id"), "00000000000000aa");
  sp_free(pb);

  const char *val[] = {"span_id=00000000000000AAX", NULL};
  pb = make_pprof("cpu/nanoseconds", 2, val, 1700000000000000000LL, &len);
  patch_bytes(pb, len, "00000000000000AAX", "00000000000000AA\0", 17);
  assert_int_equal(ingest(&r, "svc", "format=pprof", pb, len, NULL), 200);
  p = got(1, &batch);
  assert_string_equal(sample_label(batch, p, 0, "span_id"), "00000000000000aa");
  sp_free(pb);
}

/* A profile given a time_nanos on the wire is held once in the batch arena, not twice. */
static void test_ingest_fill_time_single_copy(void **state) {
  (void)state;
  size_t arena[2], raw_len[2];
  for (int k = 0; k < 2; k++) {
    size_t l0, len;
    uint8_t *p0 = make_pprof("cpu/nanoseconds", 4, NULL, k ? 0 : 1700000000000000000LL, &l0);
    size_t big = 50000;
    uint8_t *pb = sp_malloc(l0 + big + 8);
    memcpy(pb, p0, l0);
    len = l0;
    pb[len++] = (6 << 3) | 2; /* a 50 KB string makes the profile's size dominate */
    for (size_t v = big;; v >>= 7) {
      if (v < 0x80) {
        pb[len++] = (uint8_t)v;
        break;
      }
      pb[len++] = (uint8_t)(v | 0x80);
    }
    memset(pb + len, 'x', big);
    len += big;
    sp_free(p0);
    req_t r;
    assert_int_equal(
        ingest(&r, "svc", "format=pprof&from=1700000000&until=1700000010", pb, len, NULL), 200);
    sp_profiles_t *batch;
    sp_profile_t *p = got((size_t)k, &batch);
    assert_null(p->pprof);
    assert_non_null(p->wire);
    raw_len[k] = p->raw_len;
    arena[k] = sp_arena_bytes(batch->arena);
    sp_free(pb);
  }
  assert_true(raw_len[1] > raw_len[0] - 11 && raw_len[1] <= raw_len[0] + 11);
  assert_true(arena[1] < arena[0] + arena[0] / 4); /* was twice the profile */
}

static void test_ingest_folded_and_lines(void **state) {
  (void)state;
  const char *folded = "main;work;hot 3\nmain;idle 2\nno-count-line\n\nmain;work 0\n";
  req_t r;
  assert_int_equal(ingest(&r, "pyapp.cpu{env=dev}",
                          "from=1700000000&until=1700000010&spyName=pyspy&sampleRate=100", folded,
                          strlen(folded), "text/plain"),
                   200);
  sp_profiles_t *batch;
  sp_profile_t *p = got(0, &batch);
  assert_string_equal(label(p, "service_name"), "pyapp");
  assert_string_equal(label(p, "__name__"), "process_cpu");
  assert_string_equal(label(p, "env"), "dev");
  sp_pprof_t *pp = sp_profile_decode(batch, p);
  assert_non_null(pp);
  char err[256];
  assert_int_equal(sp_pprof_validate(pp, err, sizeof(err)), 0);
  assert_int_equal(pp->n_sample, 2);
  assert_string_equal(sp_pprof_str(pp, pp->sample_type[0]->type), "cpu");
  assert_string_equal(sp_pprof_str(pp, pp->sample_type[0]->unit), "nanoseconds");
  assert_int_equal(pp->period, 10000000);
  assert_int_equal(pp->sample[0]->value[0], 30000000);
  assert_int_equal(pp->sample[0]->n_location_id, 3);
  /* Leaf first: "hot". */
  const Perftools__Profiles__Location *leaf = NULL;
  for (size_t i = 0; i < pp->n_location; i++)
    if (pp->location[i]->id == pp->sample[0]->location_id[0])
      leaf = pp->location[i];
  assert_non_null(leaf);
  assert_string_equal(sp_pprof_str(pp, pp->function[leaf->line[0]->function_id - 1]->name), "hot");
  /* Explicit service_name: the app name stays as app_name. */
  const char *lines = "a;b\na;b\na;c\n";
  assert_int_equal(ingest(&r, "rbapp.alloc_objects{service_name=billing}", "format=lines", lines,
                          strlen(lines), NULL),
                   200);
  p = got(1, &batch);
  assert_string_equal(label(p, "service_name"), "billing");
  assert_string_equal(label(p, "app_name"), "rbapp");
  assert_string_equal(label(p, "__name__"), "memory");
  pp = sp_profile_decode(batch, p);
  assert_int_equal(pp->n_sample, 2);
  int64_t total = pp->sample[0]->value[0] + pp->sample[1]->value[0];
  assert_int_equal(total, 3);
}

typedef struct bad_s {
  const char *what;
  const char *name;
  const char *query;
  const char *body;
  size_t len; /* 0: strlen(body) */
  const char *ctype;
  long status;
  const char *msg;
} bad_t;

static void test_ingest_bad_inputs(void **state) {
  (void)state;
  size_t plen, glen;
  uint8_t *pb = make_pprof("samples/count", 1, NULL, 0, &plen);
  uint8_t *gz = gzip_bytes(pb, plen, &glen);
  char corrupt[64];
  memcpy(corrupt, gz, 20);
  memset(corrupt + 20, 0x55, 40);
  /* 200 KiB of zeros gzip to ~200 bytes: over max_profile_size (64 KiB) once inflated. */
  uint8_t *zeros = calloc(1, 200 * 1024);
  size_t bomb_len;
  uint8_t *bomb = gzip_bytes(zeros, 200 * 1024, &bomb_len);
  char nopart[256];
  snprintf(nopart, sizeof(nopart),
           "--b1\r\nContent-Disposition: form-data; name=\"other\"\r\n\r\nx\r\n--b1--\r\n");
  char prev[512];
  size_t prev_len = go_form(prev, sizeof(prev), "b2", pb, plen, NULL,
                            "Content-Disposition: form-data; name=\"prev_profile\"; "
                            "filename=\"p\"\r\n\r\nxyz");
  bad_t cases[] = {
      {"no name", NULL, "format=pprof", (const char *)pb, plen, NULL, 400, "service name is required"},
      {"bad service name", "my app", "format=pprof", (const char *)pb, plen, NULL, 400,
       "invalid service name"},
      {"unterminated labels", "app{env=prod", "format=pprof", (const char *)pb, plen, NULL, 400,
       "closing"},
      {"label without value", "app{env}", "format=pprof", (const char *)pb, plen, NULL, 400,
       "no value"},
      {"bad label name", "app{e-nv=1}", "format=pprof", (const char *)pb, plen, NULL, 400,
       "invalid label name"},
      {"bad from", "app", "format=pprof&from=yesterday", (const char *)pb, plen, NULL, 400,
       "from: invalid timestamp"},
      {"until before from", "app", "format=pprof&from=1700000010&until=1700000000",
       (const char *)pb, plen, NULL, 400, "before"},
      {"jfr", "app", "format=jfr", "x", 1, NULL, 400, "unsupported format"},
      {"trie", "app", "format=trie", "x", 1, NULL, 400, "unsupported format"},
      {"unknown format", "app", "format=bogus", "x", 1, NULL, 400, "unknown format"},
      {"not pprof", "app", "format=pprof", "hello world, not protobuf", 0, NULL, 400,
       "not a pprof profile"},
      {"corrupt gzip", "app", "format=pprof", corrupt, sizeof(corrupt), NULL, 400, "corrupt gzip"},
      {"decompressed too big", "app", "format=pprof", (const char *)bomb, bomb_len, NULL, 413,
       "exceeds"},
      {"form without profile", "app", "", nopart, 0, "multipart/form-data; boundary=b1", 400,
       "no \"profile\" part"},
      {"form with prev_profile", "app", "", prev, prev_len, "multipart/form-data; boundary=b2", 400,
       "prev_profile"},
      {"form without boundary", "app", "", "x", 1, "multipart/form-data", 400, "boundary"},
      {"bad folded count", "app.cpu", "", "a;b;c many\n", 0, NULL, 400, "not a sample count"},
      /* Past int64 (strtoll would saturate it to LLONG_MAX), unscaled and scaled. */
      {"folded count out of range", "app.alloc_objects", "", "a;b 99999999999999999999\n", 0,
       NULL, 400, "too large"},
      {"folded cpu count out of range", "app.cpu", "", "a;b 99999999999999999999\n", 0, NULL,
       400, "too large"},
      {"unknown folded type", "app.weird", "", "a;b 1\n", 0, NULL, 400, "unknown profile type"},
  };
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    bad_t *c = &cases[i];
    req_t r;
    memset(&r, 0, sizeof(r));
    char n[256] = "";
    if (c->name != NULL)
      qenc(n, sizeof(n), c->name);
    snprintf(r.url, sizeof(r.url), "http://127.0.0.1:%d/ingest?%s%s%s%s", fx.port,
             c->name ? "name=" : "", n, c->name ? "&" : "", c->query);
    r.body = c->body;
    r.len = c->len ? c->len : strlen(c->body);
    char ct[200];
    snprintf(ct, sizeof(ct), "Content-Type: %s", c->ctype ? c->ctype : "binary/octet-stream");
    r.headers[0] = ct;
    long st = run(&r);
    if (st != c->status || strstr(r.resp, c->msg) == NULL)
      fail_msg("%s: got %ld \"%s\", want %ld with \"%s\"", c->what, st, r.resp, c->status, c->msg);
  }
  assert_int_equal(fx.sink.n_profiles, 0);
  /* Oversized body: the HTTP server's limit (100 KiB). */
  uint8_t *big = calloc(1, 150 * 1024);
  req_t r;
  assert_int_equal(ingest(&r, "app", "format=pprof", big, 150 * 1024, NULL), 413);
  free(big);
  /* Other methods and paths. */
  memset(&r, 0, sizeof(r));
  r.method = "GET";
  snprintf(r.url, sizeof(r.url), "http://127.0.0.1:%d/ingest?name=app", fx.port);
  assert_int_equal(run(&r), 405);
  memset(&r, 0, sizeof(r));
  snprintf(r.url, sizeof(r.url), "http://127.0.0.1:%d/nope", fx.port);
  assert_int_equal(run(&r), 404);
  /* Still serving. */
  assert_int_equal(ingest(&r, "app", "format=pprof", pb, plen, NULL), 200);
  assert_int_equal(fx.sink.n_profiles, 1);
  assert_true(sp_telemetry_value(fx.telemetry, "spanprof_receiver_bad_requests_total",
                                 "receiver=\"pyroscope\",transport=\"ingest\"") >= 18);
  free(zeros);
  sp_free(bomb);
  sp_free(pb);
  sp_free(gz);
}

static void test_ingest_refused(void **state) {
  (void)state;
  size_t len;
  uint8_t *pb = make_pprof("samples/count", 1, NULL, 0, &len);
  req_t r;
  fx.sink.result = SP_EAGAIN;
  assert_int_equal(ingest(&r, "app", "format=pprof", pb, len, NULL), 503);
  assert_string_equal(r.retry_after, "1");
  assert_non_null(strstr(r.resp, "retry"));
  fx.sink.result = SP_EPROTO;
  assert_int_equal(ingest(&r, "app", "format=pprof", pb, len, NULL), 400);
  assert_int_equal(sp_telemetry_value(fx.telemetry, "spanprof_receiver_refused_profiles_total",
                                      "receiver=\"pyroscope\",transport=\"ingest\""),
                   1);
  fx.sink.result = 0;
  sp_free(pb);
}

/* --- tests: Push --------------------------------------------------------------- */

typedef struct push_build_s {
  Push__V1__PushRequest req;
  Push__V1__RawProfileSeries series[2], *sp[2];
  Types__V1__LabelPair lp[2][4], *lpp[2][4];
  Push__V1__RawSample rs[3], *rsp[2][2];
  uint8_t *bufs[3];
} push_build_t;

static void push_build(push_build_t *b) {
  memset(b, 0, sizeof(*b));
  push__v1__push_request__init(&b->req);
  const char *l0[][2] = {{"__name__", "process_cpu"}, {"service_name", "svc"}, {"foo", "bar"},
                         {"span_name", "series-level"}};
  const char *l1[][2] = {{"__name__", "memory"}, {"env", "test"}};
  for (int s = 0; s < 2; s++) {
    push__v1__raw_profile_series__init(&b->series[s]);
    size_t nl = s == 0 ? 4 : 2;
    for (size_t i = 0; i < nl; i++) {
      types__v1__label_pair__init(&b->lp[s][i]);
      b->lp[s][i].name = (char *)(s == 0 ? l0[i][0] : l1[i][0]);
      b->lp[s][i].value = (char *)(s == 0 ? l0[i][1] : l1[i][1]);
      b->lpp[s][i] = &b->lp[s][i];
    }
    b->series[s].labels = b->lpp[s];
    b->series[s].n_labels = nl;
    b->sp[s] = &b->series[s];
  }
  const char *labels[] = {"span_id=00000000000000aa", NULL};
  for (int i = 0; i < 3; i++) {
    size_t len;
    uint8_t *pb = make_pprof(i < 2 ? "samples/count,cpu/nanoseconds" : "alloc_space/bytes", 2,
                             i == 0 ? labels : NULL, 1700000000000000000LL + i, &len);
    size_t glen;
    b->bufs[i] = i == 1 ? pb : gzip_bytes(pb, len, &glen); /* one plain, two gzipped */
    if (i != 1)
      sp_free(pb);
    push__v1__raw_sample__init(&b->rs[i]);
    b->rs[i].raw_profile.data = b->bufs[i];
    b->rs[i].raw_profile.len = i == 1 ? len : glen;
    b->rs[i].id = (char *)"3c8a4a0e-0000-4000-8000-000000000000";
  }
  b->rsp[0][0] = &b->rs[0];
  b->rsp[0][1] = &b->rs[1];
  b->rsp[1][0] = &b->rs[2];
  b->series[0].samples = b->rsp[0];
  b->series[0].n_samples = 2;
  b->series[1].samples = b->rsp[1];
  b->series[1].n_samples = 1;
  b->req.series = b->sp;
  b->req.n_series = 2;
}

static void push_free(push_build_t *b) {
  for (int i = 0; i < 3; i++)
    sp_free(b->bufs[i]);
}

static void check_pushed(size_t first) {
  sp_profiles_t *batch;
  sp_profile_t *p = got(first, &batch);
  assert_string_equal(label(p, "__name__"), "process_cpu");
  assert_string_equal(label(p, "service_name"), "svc");
  assert_string_equal(label(p, "foo"), "bar");
  assert_null(label(p, "span_name"));
  assert_string_equal(sample_label(batch, p, 0, "span_name"), "series-level");
  assert_string_equal(sample_label(batch, p, 0, "span_id"), "00000000000000aa");
  assert_int_equal(p->time_start_ns, 1700000000000000000LL);
  assert_int_equal(p->time_end_ns, 1700000000000000000LL + 10000000000LL);
  p = got(first + 1, NULL);
  assert_int_equal(p->time_start_ns, 1700000000000000001LL);
  p = got(first + 2, NULL);
  assert_string_equal(label(p, "__name__"), "memory");
  assert_string_equal(label(p, "service_name"), "unknown_service");
  assert_string_equal(label(p, "env"), "test");
}

static void test_push_proto_and_json(void **state) {
  (void)state;
  push_build_t b;
  push_build(&b);
  size_t len = push__v1__push_request__get_packed_size(&b.req);
  uint8_t *body = malloc(len);
  push__v1__push_request__pack(&b.req, body);
  req_t r;
  assert_int_equal(push(&r, body, len, "application/proto", NULL), 200);
  assert_string_equal(r.resp_ctype, "application/proto");
  assert_int_equal(r.resp_len, 0);
  assert_int_equal(sp_sink_profile_count(&fx.sink), 3);
  check_pushed(0);

  /* The same request gzipped. */
  size_t glen;
  uint8_t *gz = gzip_bytes(body, len, &glen);
  assert_int_equal(push(&r, gz, glen, "application/proto", "gzip"), 200);
  check_pushed(3);

  /* Standard proto JSON (bytes as base64, lowerCamelCase keys). */
  sp_buf_t json;
  sp_buf_init(&json, 0);
  assert_int_equal(sp_pbjson_encode(&b.req.base, 0, &json), 0);
  assert_non_null(strstr((const char *)sp_buf_cstr(&json), "rawProfile"));
  assert_int_equal(push(&r, json.data, json.len, "application/json", NULL), 200);
  assert_string_equal(r.resp, "{}");
  check_pushed(6);
  assert_int_equal(sp_telemetry_value(fx.telemetry, "spanprof_receiver_accepted_profiles_total",
                                      "receiver=\"pyroscope\",transport=\"push\""),
                   9);
  sp_buf_free(&json);
  sp_free(gz);
  free(body);
  push_free(&b);
}

static void test_push_errors(void **state) {
  (void)state;
  req_t r;
  /* No series. */
  Push__V1__PushRequest empty = PUSH__V1__PUSH_REQUEST__INIT;
  uint8_t buf[16];
  size_t n = push__v1__push_request__pack(&empty, buf);
  assert_int_equal(push(&r, buf, n, "application/proto", NULL), 400);
  assert_string_equal(r.resp_ctype, "application/json");
  assert_non_null(strstr(r.resp, "\"code\":\"invalid_argument\""));
  assert_non_null(strstr(r.resp, "no profiles received"));
  assert_int_equal(push(&r, "{}", 2, "application/json", NULL), 400);
  assert_non_null(strstr(r.resp, "no profiles received"));
  /* A series without __name__: the valid series is still taken. */
  push_build_t b;
  push_build(&b);
  b.lp[1][0].name = (char *)"not_name";
  size_t len = push__v1__push_request__get_packed_size(&b.req);
  uint8_t *body = malloc(len);
  push__v1__push_request__pack(&b.req, body);
  assert_int_equal(push(&r, body, len, "application/proto", NULL), 400);
  assert_non_null(strstr(r.resp, "__name__"));
  assert_non_null(strstr(r.resp, "series[1]"));
  assert_int_equal(sp_sink_profile_count(&fx.sink), 2);
  free(body);
  /* A sample that is not pprof. */
  b.lp[1][0].name = (char *)"__name__";
  b.rs[2].raw_profile.data = (uint8_t *)"garbage!";
  b.rs[2].raw_profile.len = 8;
  len = push__v1__push_request__get_packed_size(&b.req);
  body = malloc(len);
  push__v1__push_request__pack(&b.req, body);
  assert_int_equal(push(&r, body, len, "application/proto", NULL), 400);
  assert_non_null(strstr(r.resp, "series[1].samples[0]"));
  free(body);
  push_free(&b);
  /* Malformed protobuf, bad JSON, wrong content type, GET. */
  assert_int_equal(push(&r, "\x0a\x05\x12", 3, "application/proto", NULL), 400);
  assert_non_null(strstr(r.resp, "malformed protobuf"));
  assert_int_equal(push(&r, "{\"series\":[", 11, "application/json", NULL), 400);
  assert_non_null(strstr(r.resp, "invalid_argument"));
  assert_int_equal(push(&r, "x", 1, "text/plain", NULL), 415);
  memset(&r, 0, sizeof(r));
  r.method = "GET";
  snprintf(r.url, sizeof(r.url), "http://127.0.0.1:%d/push.v1.PusherService/Push", fx.port);
  assert_int_equal(run(&r), 405);
  assert_non_null(strstr(r.resp, "unimplemented"));
  /* Oversized: 413 with a Connect body. */
  uint8_t *big = calloc(1, 150 * 1024);
  assert_int_equal(push(&r, big, 150 * 1024, "application/proto", NULL), 413);
  assert_non_null(strstr(r.resp, "resource_exhausted"));
  free(big);
}

static void test_push_refused(void **state) {
  (void)state;
  push_build_t b;
  push_build(&b);
  size_t len = push__v1__push_request__get_packed_size(&b.req);
  uint8_t *body = malloc(len);
  push__v1__push_request__pack(&b.req, body);
  req_t r;
  fx.sink.result = SP_EAGAIN;
  assert_int_equal(push(&r, body, len, "application/proto", NULL), 503);
  assert_string_equal(r.retry_after, "1");
  assert_non_null(strstr(r.resp, "\"code\":\"unavailable\""));
  assert_int_equal(sp_telemetry_value(fx.telemetry, "spanprof_receiver_refused_profiles_total",
                                      "receiver=\"pyroscope\",transport=\"push\""),
                   3);
  fx.sink.result = 0;
  free(body);
  push_free(&b);
}

/* --- decoding on the thread pool ---------------------------------------------- */

static int on_the_pool(void *arg) {
  (void)arg;
  return ((sp_pyro_t *)fx.comp)->n_work == 1;
}

static int never(void *arg) {
  (void)arg;
  return 0;
}

/*
 * A request held on a blocked pool keeps the receiver's shutdown waiting
 * (the HTTP server waits for its answer); released, it is answered and its
 * profile handed over before the shutdown completes.
 */
static void test_pool_shutdown_waits(void **state) {
  (void)state;
  sp_pyro_t *self = (sp_pyro_t *)fx.comp;
  self->pool_min = 1;
  size_t len, glen;
  uint8_t *pb = make_pprof("samples/count,cpu/nanoseconds", 4, NULL, 0, &len);
  uint8_t *gz = gzip_bytes(pb, len, &glen);
  sp_test_pool_block_t *block = sp_test_pool_block(&fx.loop);
  assert_non_null(block);
  req_t r;
  memset(&r, 0, sizeof(r));
  snprintf(r.url, sizeof(r.url), "http://127.0.0.1:%d/ingest?name=held&format=pprof", fx.port);
  r.body = gz;
  r.len = glen;
  r.headers[0] = "Content-Type: binary/octet-stream";
  pthread_t th;
  atomic_store(&r.done, 0);
  assert_int_equal(pthread_create(&th, NULL, client_main, &r), 0);
  assert_int_equal(sp_test_run_until(&fx.loop, on_the_pool, NULL, 5000), 0);
  int stopped = 0;
  sp_receiver_pyroscope.shutdown(fx.comp, on_stopped, &stopped);
  assert_int_equal(sp_test_run_until(&fx.loop, never, NULL, 200), SP_ETIMEDOUT);
  assert_int_equal(stopped, 0);
  assert_int_equal(atomic_load(&r.done), 0);
  assert_int_equal(fx.sink.n_profiles, 0);
  sp_test_pool_release(block);
  assert_int_equal(sp_test_run_until(&fx.loop, stopped_cond, &stopped, 5000), 0);
  assert_int_equal(sp_test_run_until(&fx.loop, req_done, &r, 5000), 0);
  pthread_join(th, NULL);
  assert_int_equal(r.status, 200);
  assert_int_equal(fx.sink.n_profiles, 1);
  assert_string_equal(label(got(0, NULL), "service_name"), "held");
  assert_int_equal(self->n_work, 0);
  /* Started again for the teardown (a fresh server). */
  assert_int_equal(sp_receiver_pyroscope.start(fx.comp), 0);
  sp_free(pb);
  sp_free(gz);
}

/* A raw client: writes @p out in one go, reads until the server closes. */
typedef struct raw_s {
  int port;
  const char *out;
  size_t out_len;
  char in[16384];
  size_t in_len;
  atomic_int done;
} raw_t;

static void *raw_main(void *arg) {
  raw_t *r = arg;
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in sa;
  memset(&sa, 0, sizeof(sa));
  sa.sin_family = AF_INET;
  sa.sin_port = htons((uint16_t)r->port);
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (fd >= 0 && connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0) {
    size_t off = 0;
    while (off < r->out_len) {
      ssize_t n = write(fd, r->out + off, r->out_len - off);
      if (n <= 0)
        break;
      off += (size_t)n;
    }
    ssize_t n;
    while (r->in_len + 1 < sizeof(r->in) &&
           (n = read(fd, r->in + r->in_len, sizeof(r->in) - 1 - r->in_len)) > 0)
      r->in_len += (size_t)n;
    r->in[r->in_len] = '\0';
  }
  if (fd >= 0)
    close(fd);
  atomic_store(&r->done, 1);
  return NULL;
}

static int raw_done(void *arg) { return atomic_load(&((raw_t *)arg)->done); }

/* Appends one POST /ingest request to @p out. */
static size_t raw_ingest(char *out, size_t cap, const char *name, const uint8_t *body, size_t len,
                         bool last) {
  int w = snprintf(out, cap,
                   "POST /ingest?name=%s&format=pprof HTTP/1.1\r\nHost: x\r\nContent-Type: "
                   "binary/octet-stream\r\nContent-Length: %zu\r\n%s\r\n",
                   name, len, last ? "Connection: close\r\n" : "");
  assert_true(w > 0 && (size_t)w + len < cap);
  memcpy(out + w, body, len);
  return (size_t)w + len;
}

/*
 * Three requests pipelined on one connection: a large one (decoded on the
 * pool, held there until released), a bad small one and a good small one
 * (decoded on the loop). Answers and hand-overs keep the request order.
 */
static void test_pool_pipelined_order(void **state) {
  (void)state;
  sp_pyro_t *self = (sp_pyro_t *)fx.comp;
  size_t big_len, small_len, gbig;
  const char *labels[16];
  for (int i = 0; i < 16; i++)
    labels[i] = "thread_name=a-rather-long-thread-name;endpoint=/some/long/endpoint/path";
  uint8_t *big = make_pprof("samples/count,cpu/nanoseconds", 16, labels, 0, &big_len);
  uint8_t *gz = gzip_bytes(big, big_len, &gbig);
  uint8_t *small = make_pprof("samples/count", 1, NULL, 0, &small_len);
  assert_true(small_len < gbig);
  self->pool_min = gbig; /* the first body goes to the pool, the others stay on the loop */
  static char out[32768];
  size_t n = raw_ingest(out, sizeof(out), "first", gz, gbig, false);
  n += raw_ingest(out + n, sizeof(out) - n, "bad%20name", small, small_len, false);
  n += raw_ingest(out + n, sizeof(out) - n, "third", small, small_len, true);
  sp_test_pool_block_t *block = sp_test_pool_block(&fx.loop);
  assert_non_null(block);
  static raw_t r;
  memset(&r, 0, sizeof(r));
  r.port = fx.port;
  r.out = out;
  r.out_len = n;
  pthread_t th;
  assert_int_equal(pthread_create(&th, NULL, raw_main, &r), 0);
  assert_int_equal(sp_test_run_until(&fx.loop, on_the_pool, NULL, 5000), 0);
  /* The later requests wait behind the held one. */
  assert_int_equal(sp_test_run_until(&fx.loop, never, NULL, 100), SP_ETIMEDOUT);
  assert_int_equal(fx.sink.n_profiles, 0);
  sp_test_pool_release(block);
  assert_int_equal(sp_test_run_until(&fx.loop, raw_done, &r, 5000), 0);
  pthread_join(th, NULL);
  const char *s1 = strstr(r.in, "HTTP/1.1 200");
  const char *s2 = strstr(r.in, "HTTP/1.1 400");
  const char *s3 = s2 != NULL ? strstr(s2, "HTTP/1.1 200") : NULL;
  if (s1 == NULL || s2 == NULL || s3 == NULL || !(s1 < s2 && s2 < s3))
    fail_msg("responses out of order or missing:\n%s", r.in);
  assert_non_null(strstr(s2, "invalid service name"));
  assert_int_equal(fx.sink.n_profiles, 2);
  assert_string_equal(label(got(0, NULL), "service_name"), "first");
  assert_string_equal(label(got(1, NULL), "service_name"), "third");
  sp_free(big);
  sp_free(gz);
  sp_free(small);
}

/* Clients in parallel, every body decoded on the pool: all answered, all handed over. */
static void test_pool_concurrent_clients(void **state) {
  (void)state;
  ((sp_pyro_t *)fx.comp)->pool_min = 1;
  enum { N = 8 };
  size_t len, glen;
  uint8_t *pb = make_pprof("samples/count,cpu/nanoseconds", 8, NULL, 0, &len);
  uint8_t *gz = gzip_bytes(pb, len, &glen);
  static req_t r[N];
  pthread_t th[N];
  for (int i = 0; i < N; i++) {
    memset(&r[i], 0, sizeof(r[i]));
    snprintf(r[i].url, sizeof(r[i].url), "http://127.0.0.1:%d/ingest?name=c%d&format=pprof",
             fx.port, i);
    r[i].body = i % 2 ? gz : pb;
    r[i].len = i % 2 ? glen : len;
    r[i].headers[0] = "Content-Type: binary/octet-stream";
    atomic_store(&r[i].done, 0);
    assert_int_equal(pthread_create(&th[i], NULL, client_main, &r[i]), 0);
  }
  for (int i = 0; i < N; i++) {
    assert_int_equal(sp_test_run_until(&fx.loop, req_done, &r[i], 15000), 0);
    pthread_join(th[i], NULL);
    assert_int_equal(r[i].status, 200);
  }
  assert_int_equal(fx.sink.n_profiles, N);
  assert_int_equal(((sp_pyro_t *)fx.comp)->n_work, 0);
  sp_free(pb);
  sp_free(gz);
}

/* --- pprof helper module -------------------------------------------------------- */

static void test_pprof_helpers(void **state) {
  (void)state;
  size_t len;
  const char *labels[] = {"span=a", "span=b;span_name=c", NULL};
  uint8_t *pb = make_pprof("samples/count", 3, labels, 0, &len);
  sp_arena_t *a = sp_arena_create(0);
  sp_pprof_t *p = NULL;
  char err[256];
  assert_int_equal(sp_pprof_decode(a, pb, len, &p, err, sizeof(err)), 0);
  sp_pprof_edit_t e;
  sp_pprof_edit_init(&e, a, p);
  size_t n_strings = p->n_string_table;
  int64_t i1 = sp_pprof_intern(&e, "brand-new");
  assert_int_equal(i1, (int64_t)n_strings);
  assert_int_equal(sp_pprof_intern(&e, "brand-new"), i1);
  assert_int_equal(sp_pprof_intern(&e, "main"), sp_pprof_find_string(p, "main"));
  for (int i = 0; i < 200; i++) { /* growth of the table and of the index */
    char s[32];
    snprintf(s, sizeof(s), "s%d", i);
    assert_true(sp_pprof_intern(&e, s) > 0);
  }
  assert_int_equal(sp_pprof_intern(&e, "s7"), sp_pprof_find_string(p, "s7"));
  size_t changed = 0;
  assert_int_equal(sp_pprof_rename_label(&e, "span", "span_name", &changed), 0);
  assert_int_equal(changed, 2);
  assert_string_equal(sp_pprof_sample_label_str(p, p->sample[0], "span_name"), "a");
  assert_string_equal(sp_pprof_sample_label_str(p, p->sample[1], "span_name"), "c");
  assert_int_equal(p->sample[1]->n_label, 1);
  assert_int_equal(sp_pprof_sample_set_label_str(&e, p->sample[2], "k", "v"), 0);
  assert_int_equal(sp_pprof_sample_set_label_str(&e, p->sample[2], "k", "w"), 0);
  assert_int_equal(p->sample[2]->n_label, 1);
  assert_string_equal(sp_pprof_sample_label_str(p, p->sample[2], "k"), "w");
  assert_int_equal(sp_pprof_sample_remove_label(&e, p->sample[2], sp_pprof_find_string(p, "k")),
                   1);
  assert_int_equal(sp_pprof_validate(p, err, sizeof(err)), 0);
  sp_pprof_edit_free(&e);
  /* Validation failures. */
  p->sample[0]->location_id[0] = 99;
  assert_int_equal(sp_pprof_validate(p, err, sizeof(err)), SP_EPROTO);
  assert_non_null(strstr(err, "no location with id 99"));
  p->sample[0]->location_id[0] = 1;
  p->sample[0]->label[0]->str = 100000;
  assert_int_equal(sp_pprof_validate(p, err, sizeof(err)), SP_EPROTO);
  assert_non_null(strstr(err, "sample[0].label[0].str"));
  p->sample[0]->label[0]->str = 0;
  p->sample[0]->n_value = 0;
  assert_int_equal(sp_pprof_validate(p, err, sizeof(err)), SP_EPROTO);
  assert_non_null(strstr(err, "0 values for 1 sample types"));
  sp_arena_destroy(a);
  /* Uncompress: plain, gzip, over the limit. */
  sp_buf_t s;
  sp_buf_init(&s, 0);
  const uint8_t *out;
  size_t olen, glen;
  assert_int_equal(sp_pprof_uncompress(pb, len, 0, &s, &out, &olen), 0);
  assert_ptr_equal(out, pb);
  uint8_t *gz = gzip_bytes(pb, len, &glen);
  assert_int_equal(sp_pprof_uncompress(gz, glen, 0, &s, &out, &olen), 0);
  assert_int_equal(olen, len);
  assert_memory_equal(out, pb, len);
  sp_buf_free(&s);
  assert_int_equal(sp_pprof_uncompress(gz, glen, len - 1, &s, &out, &olen), SP_ETOOBIG);
  sp_buf_free(&s);
  assert_int_equal(sp_pprof_uncompress(pb, len, len - 1, &s, &out, &olen), SP_ETOOBIG);
  sp_free(gz);
  sp_free(pb);
}

int main(void) {
  sp_log_set_level(SP_LOG_ERROR);
  curl_global_init(CURL_GLOBAL_DEFAULT);
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_ingest_raw_pprof, setup, teardown),
      cmocka_unit_test_setup_teardown(test_ingest_gzip_pprof_unmodified, setup, teardown),
      cmocka_unit_test_setup_teardown(test_ingest_go_sdk_multipart, setup, teardown),
      cmocka_unit_test_setup_teardown(test_ingest_time_units, setup, teardown),
      cmocka_unit_test_setup_teardown(test_ingest_span_labels, setup, teardown),
      cmocka_unit_test_setup_teardown(test_ingest_wire_path, setup, teardown),
      cmocka_unit_test_setup_teardown(test_ingest_edit_triggers, setup, teardown),
      cmocka_unit_test_setup_teardown(test_ingest_edit_triggers_embedded_nul, setup, teardown),
      cmocka_unit_test_setup_teardown(test_ingest_fill_time_single_copy, setup, teardown),
      cmocka_unit_test_setup_teardown(test_ingest_folded_and_lines, setup, teardown),
      cmocka_unit_test_setup_teardown(test_ingest_bad_inputs, setup, teardown),
      cmocka_unit_test_setup_teardown(test_ingest_refused, setup, teardown),
      cmocka_unit_test_setup_teardown(test_push_proto_and_json, setup, teardown),
      cmocka_unit_test_setup_teardown(test_push_errors, setup, teardown),
      cmocka_unit_test_setup_teardown(test_push_refused, setup, teardown),
      cmocka_unit_test(test_pprof_helpers),
  };
  const struct CMUnitTest pool_tests[] = {
      cmocka_unit_test_setup_teardown(test_pool_shutdown_waits, setup, teardown),
      cmocka_unit_test_setup_teardown(test_pool_pipelined_order, setup, teardown),
      cmocka_unit_test_setup_teardown(test_pool_concurrent_clients, setup, teardown),
  };
  int rc = cmocka_run_group_tests_name("as configured", tests, NULL, NULL);
  g_pool_min = 1; /* every request body is decoded on the thread pool */
  rc |= cmocka_run_group_tests_name("decoded on the pool", tests, NULL, NULL);
  g_pool_min = 0;
  rc |= cmocka_run_group_tests_name("the pool", pool_tests, NULL, NULL);
  curl_global_cleanup();
  return rc;
}
