/*
 * test_otlp_profiles.c — OTLP profiles at the current (v1development,
 * dictionary) layout, built with the generated code from the published
 * proto, POSTed to a running otlp receiver with libcurl, then written by the
 * file exporter: links become span_id/trace_id sample labels, per-value
 * timestamps and thread.id survive, stacks and types are intact. Also the
 * receiver's answers to broken dictionaries.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "pipeline/alloc.h"
#include "pipeline/batch.h"
#include "pipeline/component.h"
#include "pipeline/config.h"
#include "pipeline/error.h"
#include "pipeline/log.h"
#include "support/exporter_fixture.h"
#include "support/loop_util.h"
#include "receivers/otlp/otlp.h"

#include "opentelemetry/proto/collector/profiles/v1development/profiles_service.pb-c.h"

#include <curl/curl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

extern const sp_component_def_t sp_receiver_otlp;
extern const sp_component_def_t sp_exporter_file;

#define P(x) Opentelemetry__Proto__Profiles__V1development__##x
#define T0 1700000000000000000ull

static const uint8_t trace_id[16] = {0x5b, 0x8e, 0xff, 0xf7, 0x98, 0x03, 0x81, 0x03,
                                     0xd2, 0x69, 0xb6, 0x33, 0x81, 0x3f, 0xc6, 0x0c};
static const uint8_t span_id[8] = {0xee, 0xe1, 0x9b, 0x7e, 0xc3, 0xc1, 0xb1, 0x74};

/* Encodes a request: one resource (checkout / i-1), one CPU profile, two samples
 * on the stack main → work; the first linked to a span, two timestamped values
 * and a thread.id; the second aggregated. @p bad_stack points a sample at a
 * stack that does not exist. */
static uint8_t *build(size_t *len, int bad_stack) {
  static char *strings[] = {"", "cpu", "nanoseconds", "main", "work", "main.go", "thread.id"};
  P(Function) f0 = OPENTELEMETRY__PROTO__PROFILES__V1DEVELOPMENT__FUNCTION__INIT, f1 = f0, f2 = f0;
  f1.name_strindex = 3;
  f1.filename_strindex = 5;
  f2.name_strindex = 4;
  f2.filename_strindex = 5;
  P(Function) *funcs[] = {&f0, &f1, &f2};
  P(Line) l1 = OPENTELEMETRY__PROTO__PROFILES__V1DEVELOPMENT__LINE__INIT, l2 = l1;
  l1.function_index = 1;
  l1.line = 10;
  l2.function_index = 2;
  l2.line = 20;
  P(Line) *lines1[] = {&l1}, *lines2[] = {&l2};
  P(Location) loc0 = OPENTELEMETRY__PROTO__PROFILES__V1DEVELOPMENT__LOCATION__INIT, loc1 = loc0, loc2 = loc0;
  loc1.n_lines = 1;
  loc1.lines = lines1;
  loc2.n_lines = 1;
  loc2.lines = lines2;
  P(Location) *locs[] = {&loc0, &loc1, &loc2};
  P(Stack) st0 = OPENTELEMETRY__PROTO__PROFILES__V1DEVELOPMENT__STACK__INIT, st1 = st0;
  int32_t leaf_first[] = {2, 1};
  st1.n_location_indices = 2;
  st1.location_indices = leaf_first;
  P(Stack) *stacks[] = {&st0, &st1};
  P(Link) lk0 = OPENTELEMETRY__PROTO__PROFILES__V1DEVELOPMENT__LINK__INIT, lk1 = lk0;
  lk1.trace_id = (ProtobufCBinaryData){16, (uint8_t *)trace_id};
  lk1.span_id = (ProtobufCBinaryData){8, (uint8_t *)span_id};
  P(Link) *links[] = {&lk0, &lk1};
  Opentelemetry__Proto__Common__V1__AnyValue tid = OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__INIT;
  tid.value_case = OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_INT_VALUE;
  tid.int_value = 4242;
  P(KeyValueAndUnit) a0 = OPENTELEMETRY__PROTO__PROFILES__V1DEVELOPMENT__KEY_VALUE_AND_UNIT__INIT, a1 = a0;
  a1.key_strindex = 6;
  a1.value = &tid;
  P(KeyValueAndUnit) *attrs[] = {&a0, &a1};
  P(Mapping) m0 = OPENTELEMETRY__PROTO__PROFILES__V1DEVELOPMENT__MAPPING__INIT;
  P(Mapping) *maps[] = {&m0};
  P(ProfilesDictionary) dict = OPENTELEMETRY__PROTO__PROFILES__V1DEVELOPMENT__PROFILES_DICTIONARY__INIT;
  dict.n_string_table = 7;
  dict.string_table = strings;
  dict.n_function_table = 3;
  dict.function_table = funcs;
  dict.n_location_table = 3;
  dict.location_table = locs;
  dict.n_stack_table = 2;
  dict.stack_table = stacks;
  dict.n_link_table = 2;
  dict.link_table = links;
  dict.n_attribute_table = 2;
  dict.attribute_table = attrs;
  dict.n_mapping_table = 1;
  dict.mapping_table = maps;

  int32_t s1_attrs[] = {1};
  int64_t s1_values[] = {10, 20};
  uint64_t s1_times[] = {T0 + 1000, T0 + 2000};
  int64_t s2_values[] = {5};
  P(Sample) s1 = OPENTELEMETRY__PROTO__PROFILES__V1DEVELOPMENT__SAMPLE__INIT, s2 = s1;
  s1.stack_index = 1;
  s1.n_attribute_indices = 1;
  s1.attribute_indices = s1_attrs;
  s1.link_index = 1;
  s1.n_values = 2;
  s1.values = s1_values;
  s1.n_timestamps_unix_nano = 2;
  s1.timestamps_unix_nano = s1_times;
  s2.stack_index = bad_stack ? 9 : 1;
  s2.n_values = 1;
  s2.values = s2_values;
  P(Sample) *samples[] = {&s1, &s2};
  P(ValueType) vt = OPENTELEMETRY__PROTO__PROFILES__V1DEVELOPMENT__VALUE_TYPE__INIT;
  vt.type_strindex = 1;
  vt.unit_strindex = 2;
  P(Profile) prof = OPENTELEMETRY__PROTO__PROFILES__V1DEVELOPMENT__PROFILE__INIT;
  prof.sample_type = &vt;
  prof.period_type = &vt;
  prof.period = 10000000;
  prof.time_unix_nano = T0;
  prof.duration_nano = 10000000000ull;
  prof.n_samples = 2;
  prof.samples = samples;
  P(Profile) *profs[] = {&prof};
  P(ScopeProfiles) sp = OPENTELEMETRY__PROTO__PROFILES__V1DEVELOPMENT__SCOPE_PROFILES__INIT;
  sp.n_profiles = 1;
  sp.profiles = profs;
  P(ScopeProfiles) *sps[] = {&sp};
  Opentelemetry__Proto__Common__V1__AnyValue v1 = OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__INIT, v2 = v1;
  v1.value_case = v2.value_case = OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_STRING_VALUE;
  v1.string_value = "checkout";
  v2.string_value = "i-1";
  Opentelemetry__Proto__Common__V1__KeyValue kv1 = OPENTELEMETRY__PROTO__COMMON__V1__KEY_VALUE__INIT, kv2 = kv1;
  kv1.key = "service.name";
  kv1.value = &v1;
  kv2.key = "service.instance.id";
  kv2.value = &v2;
  Opentelemetry__Proto__Common__V1__KeyValue *kvs[] = {&kv1, &kv2};
  Opentelemetry__Proto__Resource__V1__Resource res = OPENTELEMETRY__PROTO__RESOURCE__V1__RESOURCE__INIT;
  res.n_attributes = 2;
  res.attributes = kvs;
  P(ResourceProfiles) rp = OPENTELEMETRY__PROTO__PROFILES__V1DEVELOPMENT__RESOURCE_PROFILES__INIT;
  rp.resource = &res;
  rp.n_scope_profiles = 1;
  rp.scope_profiles = sps;
  P(ResourceProfiles) *rps[] = {&rp};
  Opentelemetry__Proto__Collector__Profiles__V1development__ExportProfilesServiceRequest req =
      OPENTELEMETRY__PROTO__COLLECTOR__PROFILES__V1DEVELOPMENT__EXPORT_PROFILES_SERVICE_REQUEST__INIT;
  req.n_resource_profiles = 1;
  req.resource_profiles = rps;
  req.dictionary = &dict;
  *len = protobuf_c_message_get_packed_size(&req.base);
  uint8_t *buf = malloc(*len);
  protobuf_c_message_pack(&req.base, buf);
  return buf;
}

/* ---- a client thread, so the loop keeps running while curl waits ------------------ */

typedef struct post_s {
  char url[128];
  const uint8_t *body;
  size_t len;
  long status;
  char reply[1024];
  size_t reply_len;
  atomic_int done;
} post_t;

static size_t on_body(char *p, size_t sz, size_t n, void *arg) {
  post_t *pt = arg;
  size_t k = sz * n;
  if (pt->reply_len + k < sizeof(pt->reply)) {
    memcpy(pt->reply + pt->reply_len, p, k);
    pt->reply_len += k;
    pt->reply[pt->reply_len] = '\0';
  }
  return k;
}

static void *post_thread(void *arg) {
  post_t *pt = arg;
  CURL *c = curl_easy_init();
  struct curl_slist *h = curl_slist_append(NULL, "Content-Type: application/x-protobuf");
  curl_easy_setopt(c, CURLOPT_URL, pt->url);
  curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
  curl_easy_setopt(c, CURLOPT_POSTFIELDS, pt->body);
  curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, (long)pt->len);
  curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
  curl_easy_setopt(c, CURLOPT_WRITEDATA, pt);
  curl_easy_setopt(c, CURLOPT_TIMEOUT, 10L);
  if (curl_easy_perform(c) == CURLE_OK)
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &pt->status);
  curl_slist_free_all(h);
  curl_easy_cleanup(c);
  atomic_store(&pt->done, 1);
  return NULL;
}

static int post_done(void *arg) { return atomic_load(&((post_t *)arg)->done); }

/* Records profiles batches and passes them on to the file exporter. */
typedef struct tap_s {
  sp_consumer_t base;
  sp_consumer_t *next;
  sp_profiles_t *kept;
} tap_t;

static int tap_traces(sp_consumer_t *c, sp_traces_t *b) {
  (void)c;
  sp_traces_unref(b);
  return SP_EINVAL;
}

static int tap_profiles(sp_consumer_t *c, sp_profiles_t *b) {
  tap_t *t = (tap_t *)c;
  if (t->kept == NULL)
    t->kept = sp_profiles_ref(b);
  return sp_consume_profiles(t->next, b);
}

static const char *str(const sp_pprof_t *pp, int64_t i) { return pp->string_table[i]; }

static const char *label_str(const sp_pprof_t *pp, const Perftools__Profiles__Sample *s, const char *k) {
  for (size_t i = 0; i < s->n_label; i++)
    if (strcmp(str(pp, s->label[i]->key), k) == 0)
      return s->label[i]->str ? str(pp, s->label[i]->str) : "(num)";
  return NULL;
}

static void on_done(void *arg) { (*(int *)arg)++; }
static int flag(void *arg) { return *(int *)arg; }

static void test_round_trip(void **state) {
  (void)state;
  uv_loop_t loop;
  uv_loop_init(&loop);
  sp_host_t host = {.loop = &loop};
  char dir[] = "/tmp/spanprof-otlpprof-XXXXXX";
  assert_non_null(mkdtemp(dir));
  char yaml[256];
  snprintf(yaml, sizeof(yaml), "path: %s\n", dir);
  sp_test_exporter_t file;
  assert_int_equal(sp_test_exporter_make(&file, &sp_exporter_file, yaml, &host, "file"), 0);
  assert_int_equal(sp_exporter_file.start(file.comp), 0);
  tap_t tap = {{tap_traces, tap_profiles}, file.comp->input, NULL};

  /* The receiver, with the tap as its profiles pipeline. */
  const char *ry = "protocols:\n  http:\n    endpoint: 127.0.0.1:0\n";
  sp_errors_t errs = {0};
  sp_config_doc_t *doc = NULL;
  assert_int_equal(sp_config_load_string("r.yaml", ry, strlen(ry), &doc, &errs), 0);
  void *rcfg = sp_calloc(1, sp_receiver_otlp.config_size);
  assert_int_equal(sp_cfg_decode(sp_receiver_otlp.schema, doc->root, "otlp", NULL, rcfg, &errs), 0);
  sp_create_settings_t set = {.host = &host, .id = "otlp", .next_profiles = &tap.base};
  sp_component_t *recv = NULL;
  assert_int_equal(sp_receiver_otlp.create(&set, rcfg, &recv), 0);
  recv->def = &sp_receiver_otlp;
  recv->host = &host;
  recv->id = "otlp";
  assert_int_equal(sp_receiver_otlp.start(recv), 0);
  int port = sp_http_server_port(((sp_otlp_t *)recv)->http);
  assert_true(port > 0);

  /* Post the request from a client thread while the loop serves it. */
  size_t len;
  uint8_t *body = build(&len, 0);
  post_t pt = {.body = body, .len = len};
  snprintf(pt.url, sizeof(pt.url), "http://127.0.0.1:%d/v1development/profiles", port);
  pthread_t th;
  pthread_create(&th, NULL, post_thread, &pt);
  assert_int_equal(sp_test_run_until(&loop, post_done, &pt, 10000), 0);
  pthread_join(th, NULL);
  assert_int_equal(pt.status, 200);
  free(body);

  /* The converted profile. */
  assert_non_null(tap.kept);
  assert_int_equal(tap.kept->n, 1);
  sp_profile_t *p = &tap.kept->items[0];
  assert_string_equal(sp_profile_label(p, "service_name"), "checkout");
  assert_string_equal(sp_profile_label(p, "service.instance.id"), "i-1");
  assert_string_equal(sp_profile_label(p, "__name__"), "process_cpu");
  assert_int_equal(p->time_start_ns, (int64_t)T0);
  assert_int_equal(p->time_end_ns, (int64_t)T0 + 10000000000ll);
  sp_pprof_t *pp = sp_profile_decode(tap.kept, p);
  assert_non_null(pp);
  assert_int_equal(pp->n_sample, 3); /* two timestamped values + one aggregated sample */
  assert_string_equal(str(pp, pp->sample_type[0]->type), "cpu");
  assert_string_equal(str(pp, pp->sample_type[0]->unit), "nanoseconds");
  assert_int_equal(pp->period, 10000000);
  assert_int_equal(pp->sample[0]->value[0], 10);
  assert_int_equal(pp->sample[1]->value[0], 20);
  assert_int_equal(pp->sample[2]->value[0], 5);
  assert_int_equal(p->n_ext, 3);
  assert_int_equal(p->sample_time_ns[0], (int64_t)(T0 + 1000));
  assert_int_equal(p->sample_time_ns[1], (int64_t)(T0 + 2000));
  assert_int_equal(p->sample_time_ns[2], 0);
  assert_int_equal(p->sample_thread[0], 4242);
  assert_int_equal(p->sample_thread[2], -1);
  assert_string_equal(label_str(pp, pp->sample[0], "span_id"), "eee19b7ec3c1b174");
  assert_string_equal(label_str(pp, pp->sample[1], "trace_id"), "5b8efff798038103d269b633813fc60c");
  assert_null(label_str(pp, pp->sample[2], "span_id"));
  /* Leaf first: work (location 2) then main (location 1). */
  assert_int_equal(pp->sample[0]->n_location_id, 2);
  assert_int_equal(pp->sample[0]->location_id[0], 2);
  const Perftools__Profiles__Location *leaf = pp->location[1];
  assert_int_equal(leaf->id, 2);
  assert_string_equal(str(pp, pp->function[leaf->line[0]->function_id - 1]->name), "work");
  assert_int_equal(leaf->line[0]->line, 20);

  /* ... and what the file exporter wrote. */
  char path[256], line[8192];
  snprintf(path, sizeof(path), "%s/profiles.jsonl", dir);
  FILE *f = fopen(path, "r");
  assert_non_null(f);
  assert_non_null(fgets(line, sizeof(line), f));
  fclose(f);
  assert_non_null(strstr(line, "\"service_name\":\"checkout\""));
  assert_non_null(strstr(line, "\"span_id\":\"eee19b7ec3c1b174\""));
  assert_non_null(strstr(line, "\"timeUnixNano\":\"1700000000000002000\""));
  assert_non_null(strstr(line, "\"threadId\":4242"));
  assert_non_null(strstr(line, "\"sampleTypes\":[\"cpu/nanoseconds\"]"));

  /* A sample pointing at a stack that does not exist: 400 naming it. */
  body = build(&len, 1);
  memset(&pt, 0, sizeof(pt));
  pt.body = body;
  pt.len = len;
  snprintf(pt.url, sizeof(pt.url), "http://127.0.0.1:%d/v1development/profiles", port);
  pthread_create(&th, NULL, post_thread, &pt);
  assert_int_equal(sp_test_run_until(&loop, post_done, &pt, 10000), 0);
  pthread_join(th, NULL);
  free(body);
  assert_int_equal(pt.status, 400);
  assert_non_null(strstr(pt.reply, "samples[1].stack_index 9 out of range"));

  sp_profiles_unref(tap.kept);
  int done = 0;
  sp_receiver_otlp.shutdown(recv, on_done, &done);
  assert_int_equal(sp_test_run_until(&loop, flag, &done, 5000), 0);
  sp_receiver_otlp.destroy(recv);
  sp_cfg_free(sp_receiver_otlp.schema, rcfg);
  sp_free(rcfg);
  sp_errors_free(&errs);
  sp_config_doc_free(doc);
  sp_test_exporter_stop(&file, 100);
  assert_int_equal(sp_test_loop_finish(&loop, 1000), 0);
  char cmd[300];
  snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
  assert_int_equal(system(cmd), 0);
}

/* Receives profiles into @p kept from one OTLP/HTTP POST of @p body; the reply status. */
typedef struct rx1_s {
  uv_loop_t loop;
  sp_host_t host;
  sp_config_doc_t *doc;
  void *cfg;
  sp_component_t *recv;
  sp_profiles_t *kept;
  sp_consumer_t base;
} rx1_t;

static int keep_traces(sp_consumer_t *c, sp_traces_t *b) {
  (void)c;
  sp_traces_unref(b);
  return SP_EINVAL;
}

static int keep_profiles(sp_consumer_t *c, sp_profiles_t *b) {
  rx1_t *r = (rx1_t *)((char *)c - offsetof(rx1_t, base));
  if (r->kept == NULL)
    r->kept = b;
  else
    sp_profiles_unref(b);
  return 0;
}

/*
 * Values and times from the network that overflow int64 when combined: a
 * sample whose values sum past INT64_MAX, a profile whose time plus duration
 * does too. The conversion saturates (this aborted under UBSan as signed
 * overflow) and the request is accepted.
 */
static void test_values_past_int64(void **state) {
  (void)state;
  rx1_t r;
  memset(&r, 0, sizeof(r));
  uv_loop_init(&r.loop);
  r.host.loop = &r.loop;
  r.base.consume_traces = keep_traces;
  r.base.consume_profiles = keep_profiles;
  const char *ry = "protocols:\n  http:\n    endpoint: 127.0.0.1:0\n";
  sp_errors_t errs = {0};
  assert_int_equal(sp_config_load_string("r.yaml", ry, strlen(ry), &r.doc, &errs), 0);
  r.cfg = sp_calloc(1, sp_receiver_otlp.config_size);
  assert_int_equal(sp_cfg_decode(sp_receiver_otlp.schema, r.doc->root, "otlp", NULL, r.cfg, &errs),
                   0);
  sp_create_settings_t set = {.host = &r.host, .id = "otlp", .next_profiles = &r.base};
  assert_int_equal(sp_receiver_otlp.create(&set, r.cfg, &r.recv), 0);
  r.recv->def = &sp_receiver_otlp;
  r.recv->host = &r.host;
  r.recv->id = "otlp";
  assert_int_equal(sp_receiver_otlp.start(r.recv), 0);
  int port = sp_http_server_port(((sp_otlp_t *)r.recv)->http);

  /* The round-trip request, edited: sample 2 gets three huge values, the
   * profile a duration that runs past the end of int64 time. */
  size_t len;
  uint8_t *orig = build(&len, 0);
  Opentelemetry__Proto__Collector__Profiles__V1development__ExportProfilesServiceRequest *req =
      opentelemetry__proto__collector__profiles__v1development__export_profiles_service_request__unpack(
          NULL, len, orig);
  free(orig);
  assert_non_null(req);
  P(Profile) *prof = req->resource_profiles[0]->scope_profiles[0]->profiles[0];
  P(Sample) *s2 = prof->samples[1];
  int64_t *saved_values = s2->values;
  size_t saved_n = s2->n_values;
  int64_t huge[3] = {INT64_MAX, INT64_MAX - 1, 7};
  s2->values = huge;
  s2->n_values = 3;
  prof->duration_nano = (uint64_t)INT64_MAX;
  len = protobuf_c_message_get_packed_size(&req->base);
  uint8_t *body = malloc(len);
  protobuf_c_message_pack(&req->base, body);
  s2->values = saved_values;
  s2->n_values = saved_n;
  protobuf_c_message_free_unpacked(&req->base, NULL);

  post_t pt = {.body = body, .len = len};
  snprintf(pt.url, sizeof(pt.url), "http://127.0.0.1:%d/v1development/profiles", port);
  pthread_t th;
  pthread_create(&th, NULL, post_thread, &pt);
  assert_int_equal(sp_test_run_until(&r.loop, post_done, &pt, 10000), 0);
  pthread_join(th, NULL);
  free(body);
  assert_int_equal(pt.status, 200);
  assert_non_null(r.kept);
  sp_profile_t *p = &r.kept->items[0];
  assert_int_equal(p->time_start_ns, (int64_t)T0);
  assert_int_equal(p->time_end_ns, INT64_MAX);
  sp_pprof_t *pp = sp_profile_decode(r.kept, p);
  assert_non_null(pp);
  assert_int_equal(pp->n_sample, 3);
  assert_int_equal(pp->sample[2]->value[0], INT64_MAX);

  sp_profiles_unref(r.kept);
  int done = 0;
  sp_receiver_otlp.shutdown(r.recv, on_done, &done);
  assert_int_equal(sp_test_run_until(&r.loop, flag, &done, 5000), 0);
  sp_receiver_otlp.destroy(r.recv);
  sp_cfg_free(sp_receiver_otlp.schema, r.cfg);
  sp_free(r.cfg);
  sp_errors_free(&errs);
  sp_config_doc_free(r.doc);
  assert_int_equal(sp_test_loop_finish(&r.loop, 1000), 0);
}

int main(void) {
  sp_log_set_level(SP_LOG_ERROR);
  curl_global_init(CURL_GLOBAL_DEFAULT);
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_round_trip),
      cmocka_unit_test(test_values_past_int64),
  };
  int rc = cmocka_run_group_tests(tests, NULL, NULL);
  curl_global_cleanup();
  return rc;
}
