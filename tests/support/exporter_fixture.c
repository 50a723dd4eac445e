/*
 * exporter_fixture.c — see exporter_fixture.h.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "support/exporter_fixture.h"

#include "pipeline/alloc.h"
#include "pipeline/arena.h"
#include "pipeline/config.h"
#include "pipeline/error.h"

#include <stdio.h>
#include <string.h>

/* ---- traces ----------------------------------------------------------------- */

typedef Opentelemetry__Proto__Trace__V1__ResourceSpans rs_t;
typedef Opentelemetry__Proto__Trace__V1__ScopeSpans ss_t;
typedef Opentelemetry__Proto__Trace__V1__Span span_t;
typedef Opentelemetry__Proto__Common__V1__KeyValue kv_t;
typedef Opentelemetry__Proto__Common__V1__AnyValue any_t;

sp_traces_t *sp_test_traces(size_t n_spans, uint32_t seed, uint8_t **bytes, size_t *len) {
  sp_arena_t *a = sp_arena_create(0);
  assert_non_null(a);
  sp_otlp_traces_req_t req =
      OPENTELEMETRY__PROTO__COLLECTOR__TRACE__V1__EXPORT_TRACE_SERVICE_REQUEST__INIT;
  rs_t *rs[2];
  req.resource_spans = rs;
  req.n_resource_spans = 2;
  for (int r = 0; r < 2; r++) {
    rs[r] = sp_arena_calloc(a, sizeof(rs_t));
    opentelemetry__proto__trace__v1__resource_spans__init(rs[r]);
    Opentelemetry__Proto__Resource__V1__Resource *res = sp_arena_calloc(a, sizeof(*res));
    opentelemetry__proto__resource__v1__resource__init(res);
    kv_t *kv = sp_arena_calloc(a, sizeof(kv_t));
    any_t *v = sp_arena_calloc(a, sizeof(any_t));
    opentelemetry__proto__common__v1__key_value__init(kv);
    opentelemetry__proto__common__v1__any_value__init(v);
    kv->key = "service.name";
    v->value_case = OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_STRING_VALUE;
    v->string_value = r == 0 ? "checkout" : "payments";
    kv->value = v;
    res->attributes = sp_arena_calloc(a, sizeof(kv_t *));
    res->attributes[0] = kv;
    res->n_attributes = 1;
    rs[r]->resource = res;
    ss_t *ss = sp_arena_calloc(a, sizeof(ss_t));
    opentelemetry__proto__trace__v1__scope_spans__init(ss);
    rs[r]->scope_spans = sp_arena_calloc(a, sizeof(ss_t *));
    rs[r]->scope_spans[0] = ss;
    rs[r]->n_scope_spans = 1;
    size_t n = r == 0 ? (n_spans + 1) / 2 : n_spans / 2;
    ss->spans = sp_arena_calloc(a, (n ? n : 1) * sizeof(span_t *));
    for (size_t i = 0; i < n; i++) {
      span_t *s = sp_arena_calloc(a, sizeof(span_t));
      opentelemetry__proto__trace__v1__span__init(s);
      uint32_t k = seed * 1000u + (uint32_t)(r * 500 + i) + 1;
      uint8_t *tid = sp_arena_calloc(a, 16), *sid = sp_arena_calloc(a, 8);
      memcpy(tid, &seed, 4);
      memcpy(tid + 8, &k, 4);
      memcpy(sid, &k, 4);
      sid[7] = 0x5a;
      s->trace_id.data = tid;
      s->trace_id.len = 16;
      s->span_id.data = sid;
      s->span_id.len = 8;
      char name[64];
      snprintf(name, sizeof(name), "span-%u-%zu", seed, i);
      s->name = sp_arena_strdup(a, name);
      s->start_time_unix_nano = 1700000000000000000ULL + k;
      s->end_time_unix_nano = s->start_time_unix_nano + 1000 * k;
      s->kind = OPENTELEMETRY__PROTO__TRACE__V1__SPAN__SPAN_KIND__SPAN_KIND_SERVER;
      kv_t *ak = sp_arena_calloc(a, sizeof(kv_t));
      any_t *av = sp_arena_calloc(a, sizeof(any_t));
      opentelemetry__proto__common__v1__key_value__init(ak);
      opentelemetry__proto__common__v1__any_value__init(av);
      ak->key = "http.status_code";
      av->value_case = OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_INT_VALUE;
      av->int_value = 200 + (int64_t)i;
      ak->value = av;
      s->attributes = sp_arena_calloc(a, sizeof(kv_t *));
      s->attributes[0] = ak;
      s->n_attributes = 1;
      ss->spans[ss->n_spans++] = s;
    }
  }
  size_t n = protobuf_c_message_get_packed_size(&req.base);
  uint8_t *buf = sp_malloc(n ? n : 1);
  assert_non_null(buf);
  assert_int_equal(protobuf_c_message_pack(&req.base, buf), n);
  sp_arena_destroy(a);
  *bytes = sp_malloc(n ? n : 1);
  assert_non_null(*bytes);
  memcpy(*bytes, buf, n);
  *len = n;
  sp_traces_t *batch = NULL;
  char err[256];
  assert_int_equal(sp_traces_from_proto(buf, n, false, &batch, err, sizeof(err)), 0);
  assert_int_equal(batch->span_count, n_spans);
  return batch;
}

/* ---- profiles ---------------------------------------------------------------- */

enum {
  S_EMPTY,
  S_SAMPLES,
  S_COUNT,
  S_CPU,
  S_NS,
  S_MAIN,
  S_WORK,
  S_LEAF,
  S_FILE,
  S_SPAN_ID,
  S_TRACE_ID,
  S_SPAN_HEX,
  S_TRACE_HEX,
  S_ENDPOINT,
  S_API,
  S_BYTES,
  S_SIZE,
  S_APP,
  S_ONLY,
  S_N
};
static char *g_strings[S_N] = {"",
                               "samples",
                               "count",
                               "cpu",
                               "nanoseconds",
                               "main",
                               "work",
                               "leaf",
                               "main.go",
                               "span_id",
                               "trace_id",
                               "0102030405060708",
                               "0102030405060708090a0b0c0d0e0f10",
                               "endpoint",
                               "/api",
                               "bytes",
                               "size",
                               "app",
                               "only"};

static uint8_t *pack(const ProtobufCMessage *m, size_t *len) {
  *len = protobuf_c_message_get_packed_size(m);
  uint8_t *b = sp_malloc(*len ? *len : 1);
  assert_non_null(b);
  protobuf_c_message_pack(m, b);
  return b;
}

typedef Perftools__Profiles__Profile pprof_t;

static uint8_t *make_pprof_a(size_t *len) {
  Perftools__Profiles__ValueType st0 = PERFTOOLS__PROFILES__VALUE_TYPE__INIT,
                                 st1 = PERFTOOLS__PROFILES__VALUE_TYPE__INIT,
                                 pt = PERFTOOLS__PROFILES__VALUE_TYPE__INIT;
  st0.type = S_SAMPLES;
  st0.unit = S_COUNT;
  st1.type = S_CPU;
  st1.unit = S_NS;
  pt.type = S_CPU;
  pt.unit = S_NS;
  Perftools__Profiles__ValueType *sts[2] = {&st0, &st1};
  Perftools__Profiles__Mapping m = PERFTOOLS__PROFILES__MAPPING__INIT;
  m.id = 7;
  m.memory_start = 0x400000;
  m.memory_limit = 0x500000;
  m.filename = S_APP;
  Perftools__Profiles__Mapping *ms[1] = {&m};
  Perftools__Profiles__Function f[3];
  Perftools__Profiles__Function *fs[3];
  int fnames[3] = {S_MAIN, S_WORK, S_LEAF};
  for (int i = 0; i < 3; i++) {
    perftools__profiles__function__init(&f[i]);
    f[i].id = (uint64_t)(i + 1);
    f[i].name = fnames[i];
    f[i].system_name = fnames[i];
    f[i].filename = S_FILE;
    fs[i] = &f[i];
  }
  /* Locations 10 (leaf), 20 (work), 30 (main). */
  Perftools__Profiles__Location l[3];
  Perftools__Profiles__Line ln[3];
  Perftools__Profiles__Line *lnp[3];
  Perftools__Profiles__Location *ls[3];
  for (int i = 0; i < 3; i++) {
    perftools__profiles__location__init(&l[i]);
    perftools__profiles__line__init(&ln[i]);
    l[i].id = (uint64_t)(10 * (i + 1));
    l[i].mapping_id = 7;
    l[i].address = 0x401000 + (uint64_t)i * 16;
    ln[i].function_id = (uint64_t)(3 - i);
    ln[i].line = 10 * (3 - i);
    lnp[i] = &ln[i];
    l[i].line = &lnp[i];
    l[i].n_line = 1;
    ls[i] = &l[i];
  }
  uint64_t full[3] = {10, 20, 30}, part[2] = {20, 30};
  int64_t v0[2] = {1, 10000000}, v1[2] = {2, 20000000}, v2[2] = {3, 30000000};
  Perftools__Profiles__Label lspan = PERFTOOLS__PROFILES__LABEL__INIT,
                             ltrace = PERFTOOLS__PROFILES__LABEL__INIT,
                             lend = PERFTOOLS__PROFILES__LABEL__INIT,
                             lsize = PERFTOOLS__PROFILES__LABEL__INIT;
  lspan.key = S_SPAN_ID;
  lspan.str = S_SPAN_HEX;
  ltrace.key = S_TRACE_ID;
  ltrace.str = S_TRACE_HEX;
  lend.key = S_ENDPOINT;
  lend.str = S_API;
  lsize.key = S_SIZE;
  lsize.num = 512;
  lsize.num_unit = S_BYTES;
  Perftools__Profiles__Label *lab0[2] = {&lspan, &ltrace}, *lab1[2] = {&lend, &lsize};
  Perftools__Profiles__Sample s[3];
  Perftools__Profiles__Sample *ss[3];
  for (int i = 0; i < 3; i++) {
    perftools__profiles__sample__init(&s[i]);
    ss[i] = &s[i];
  }
  s[0].location_id = full;
  s[0].n_location_id = 3;
  s[0].value = v0;
  s[0].n_value = 2;
  s[0].label = lab0;
  s[0].n_label = 2;
  s[1].location_id = part;
  s[1].n_location_id = 2;
  s[1].value = v1;
  s[1].n_value = 2;
  s[1].label = lab1;
  s[1].n_label = 2;
  s[2].location_id = full;
  s[2].n_location_id = 3;
  s[2].value = v2;
  s[2].n_value = 2;
  pprof_t p = PERFTOOLS__PROFILES__PROFILE__INIT;
  p.sample_type = sts;
  p.n_sample_type = 2;
  p.sample = ss;
  p.n_sample = 3;
  p.mapping = ms;
  p.n_mapping = 1;
  p.location = ls;
  p.n_location = 3;
  p.function = fs;
  p.n_function = 3;
  p.string_table = g_strings;
  p.n_string_table = S_N;
  p.time_nanos = 1700000000000000000LL;
  p.duration_nanos = 10000000000LL;
  p.period_type = &pt;
  p.period = 10000000;
  return pack(&p.base, len);
}

static uint8_t *make_pprof_b(size_t *len) {
  Perftools__Profiles__ValueType st = PERFTOOLS__PROFILES__VALUE_TYPE__INIT;
  st.type = S_SAMPLES;
  st.unit = S_COUNT;
  Perftools__Profiles__ValueType *sts[1] = {&st};
  Perftools__Profiles__Function f = PERFTOOLS__PROFILES__FUNCTION__INIT;
  f.id = 1;
  f.name = S_ONLY;
  Perftools__Profiles__Function *fs[1] = {&f};
  Perftools__Profiles__Line ln = PERFTOOLS__PROFILES__LINE__INIT;
  ln.function_id = 1;
  Perftools__Profiles__Line *lnp[1] = {&ln};
  Perftools__Profiles__Location l = PERFTOOLS__PROFILES__LOCATION__INIT;
  l.id = 1;
  l.line = lnp;
  l.n_line = 1;
  Perftools__Profiles__Location *ls[1] = {&l};
  uint64_t locs[1] = {1};
  int64_t v[1] = {5};
  Perftools__Profiles__Sample s = PERFTOOLS__PROFILES__SAMPLE__INIT;
  s.location_id = locs;
  s.n_location_id = 1;
  s.value = v;
  s.n_value = 1;
  Perftools__Profiles__Sample *ss[1] = {&s};
  pprof_t p = PERFTOOLS__PROFILES__PROFILE__INIT;
  p.sample_type = sts;
  p.n_sample_type = 1;
  p.sample = ss;
  p.n_sample = 1;
  p.function = fs;
  p.n_function = 1;
  p.location = ls;
  p.n_location = 1;
  p.string_table = g_strings;
  p.n_string_table = S_N;
  return pack(&p.base, len);
}

sp_profiles_t *sp_test_profiles(void) {
  sp_profiles_t *b = sp_profiles_create();
  assert_non_null(b);
  size_t len;
  uint8_t *bytes = make_pprof_a(&len);
  sp_label_t la[2] = {{"service_name", "svc-a"}, {"__name__", "process_cpu"}};
  sp_profile_t *p =
      sp_profiles_add(b, la, 2, 1700000000000000000LL, 1700000010000000000LL, bytes, len);
  assert_non_null(p);
  sp_free(bytes);
  p->sample_time_ns = sp_arena_alloc(b->arena, 3 * sizeof(int64_t));
  p->sample_thread = sp_arena_alloc(b->arena, 3 * sizeof(int64_t));
  p->sample_time_ns[0] = 1700000001000000000LL;
  p->sample_time_ns[1] = 1700000002000000000LL;
  p->sample_time_ns[2] = 0;
  p->sample_thread[0] = 7;
  p->sample_thread[1] = -1;
  p->sample_thread[2] = 9;
  p->n_ext = 3;
  bytes = make_pprof_b(&len);
  sp_label_t lb[3] = {{"service_name", "svc-b"}, {"__name__", "process_cpu"}, {"env", "prod"}};
  assert_non_null(
      sp_profiles_add(b, lb, 3, 1700000000000000000LL, 1700000005000000000LL, bytes, len));
  sp_free(bytes);
  return b;
}

/* ---- checking the OTLP form ------------------------------------------------- */

typedef Opentelemetry__Proto__Profiles__V1development__ProfilesDictionary dict_t;
typedef Opentelemetry__Proto__Profiles__V1development__Profile oprof_t;
typedef Opentelemetry__Proto__Profiles__V1development__Sample osample_t;

static const char *dstr(const dict_t *d, int32_t i) {
  assert_true(i >= 0 && (size_t)i < d->n_string_table);
  return d->string_table[i];
}

static const char *
res_attr(const Opentelemetry__Proto__Profiles__V1development__ResourceProfiles *rp,
         const char *key) {
  for (size_t i = 0; i < rp->resource->n_attributes; i++)
    if (strcmp(rp->resource->attributes[i]->key, key) == 0)
      return rp->resource->attributes[i]->value->string_value;
  return NULL;
}

/* The stack of @p s as "f1;f2;..." (leaf first). */
static void stack_names(const dict_t *d, const osample_t *s, char *out, size_t cap) {
  out[0] = '\0';
  assert_true(s->stack_index >= 0 && (size_t)s->stack_index < d->n_stack_table);
  const Opentelemetry__Proto__Profiles__V1development__Stack *st = d->stack_table[s->stack_index];
  for (size_t k = 0; k < st->n_location_indices; k++) {
    int32_t li = st->location_indices[k];
    assert_true(li > 0 && (size_t)li < d->n_location_table);
    const Opentelemetry__Proto__Profiles__V1development__Location *l = d->location_table[li];
    assert_int_equal(l->n_lines, 1);
    int32_t fi = l->lines[0]->function_index;
    assert_true(fi > 0 && (size_t)fi < d->n_function_table);
    size_t o = strlen(out);
    snprintf(out + o, cap - o, "%s%s", k ? ";" : "", dstr(d, d->function_table[fi]->name_strindex));
  }
}

/* The attribute @p key of @p s: returns its table entry or NULL. */
static const Opentelemetry__Proto__Profiles__V1development__KeyValueAndUnit *
sample_attr(const dict_t *d, const osample_t *s, const char *key) {
  for (size_t i = 0; i < s->n_attribute_indices; i++) {
    int32_t ai = s->attribute_indices[i];
    assert_true(ai > 0 && (size_t)ai < d->n_attribute_table);
    if (strcmp(dstr(d, d->attribute_table[ai]->key_strindex), key) == 0)
      return d->attribute_table[ai];
  }
  return NULL;
}

void sp_test_check_profiles(const sp_otlpprofiles_req_t *req) {
  const dict_t *d = req->dictionary;
  assert_non_null(d);
  assert_string_equal(d->string_table[0], "");
  assert_int_equal(req->n_resource_profiles, 2);
  const Opentelemetry__Proto__Profiles__V1development__ResourceProfiles
      *ra = req->resource_profiles[0],
      *rb = req->resource_profiles[1];
  assert_string_equal(res_attr(ra, "service.name"), "svc-a");
  assert_null(res_attr(ra, "__name__"));
  assert_string_equal(res_attr(rb, "service.name"), "svc-b");
  assert_string_equal(res_attr(rb, "env"), "prod");
  assert_int_equal(ra->n_scope_profiles, 1);
  assert_int_equal(ra->scope_profiles[0]->n_profiles, 2);
  assert_int_equal(rb->scope_profiles[0]->n_profiles, 1);

  for (int t = 0; t < 2; t++) {
    const oprof_t *p = ra->scope_profiles[0]->profiles[t];
    assert_string_equal(dstr(d, p->sample_type->type_strindex), t == 0 ? "samples" : "cpu");
    assert_string_equal(dstr(d, p->sample_type->unit_strindex), t == 0 ? "count" : "nanoseconds");
    assert_string_equal(dstr(d, p->period_type->type_strindex), "cpu");
    assert_int_equal(p->period, 10000000);
    assert_int_equal(p->time_unix_nano, 1700000000000000000ULL);
    assert_int_equal(p->duration_nano, 10000000000ULL);
    assert_int_equal(p->n_samples, 3);
    char names[128];
    int64_t want0[3] = {1, 2, 3}, want1[3] = {10000000, 20000000, 30000000};
    for (int s = 0; s < 3; s++) {
      assert_int_equal(p->samples[s]->n_values, 1);
      assert_int_equal(p->samples[s]->values[0], t == 0 ? want0[s] : want1[s]);
    }
    stack_names(d, p->samples[0], names, sizeof(names));
    assert_string_equal(names, "leaf;work;main");
    stack_names(d, p->samples[1], names, sizeof(names));
    assert_string_equal(names, "work;main");
    assert_int_equal(p->samples[0]->stack_index, p->samples[2]->stack_index); /* interned */
    /* Sample 0: the link, a timestamp, thread 7. */
    const osample_t *s0 = p->samples[0];
    assert_true(s0->link_index > 0 && (size_t)s0->link_index < d->n_link_table);
    const Opentelemetry__Proto__Profiles__V1development__Link *lk = d->link_table[s0->link_index];
    assert_int_equal(lk->trace_id.len, 16);
    assert_int_equal(lk->span_id.len, 8);
    assert_int_equal(lk->trace_id.data[0], 1);
    assert_int_equal(lk->trace_id.data[15], 0x10);
    assert_int_equal(lk->span_id.data[7], 8);
    assert_null(sample_attr(d, s0, "span_id"));
    assert_int_equal(s0->n_timestamps_unix_nano, 1);
    assert_int_equal(s0->timestamps_unix_nano[0], 1700000001000000000ULL);
    const Opentelemetry__Proto__Profiles__V1development__KeyValueAndUnit *a =
        sample_attr(d, s0, "thread.id");
    assert_non_null(a);
    assert_int_equal(a->value->int_value, 7);
    /* Sample 1: string and numeric labels, a timestamp, no thread. */
    const osample_t *s1 = p->samples[1];
    assert_int_equal(s1->link_index, 0);
    a = sample_attr(d, s1, "endpoint");
    assert_non_null(a);
    assert_string_equal(a->value->string_value, "/api");
    a = sample_attr(d, s1, "size");
    assert_non_null(a);
    assert_int_equal(a->value->int_value, 512);
    assert_string_equal(dstr(d, a->unit_strindex), "bytes");
    assert_null(sample_attr(d, s1, "thread.id"));
    assert_int_equal(s1->n_timestamps_unix_nano, 1);
    /* Sample 2: thread 9, no timestamp. */
    const osample_t *s2 = p->samples[2];
    assert_int_equal(s2->n_timestamps_unix_nano, 0);
    a = sample_attr(d, s2, "thread.id");
    assert_non_null(a);
    assert_int_equal(a->value->int_value, 9);
  }
  /* The mapping survived. */
  const osample_t *s0 = ra->scope_profiles[0]->profiles[0]->samples[0];
  const Opentelemetry__Proto__Profiles__V1development__Location *leaf =
      d->location_table[d->stack_table[s0->stack_index]->location_indices[0]];
  assert_int_equal(leaf->address, 0x401000);
  assert_true(leaf->mapping_index > 0);
  assert_string_equal(dstr(d, d->mapping_table[leaf->mapping_index]->filename_strindex), "app");
  assert_int_equal(d->mapping_table[leaf->mapping_index]->memory_start, 0x400000);

  const oprof_t *pb = rb->scope_profiles[0]->profiles[0];
  assert_int_equal(pb->n_samples, 1);
  assert_int_equal(pb->samples[0]->values[0], 5);
  char names[64];
  stack_names(d, pb->samples[0], names, sizeof(names));
  assert_string_equal(names, "only");
  assert_int_equal(pb->time_unix_nano, 1700000000000000000ULL);
  assert_int_equal(pb->duration_nano, 5000000000ULL);
}

/* ---- exporter instances ------------------------------------------------------ */

int sp_test_exporter_make(sp_test_exporter_t *t, const sp_component_def_t *def, const char *yaml,
                          sp_host_t *host, const char *id) {
  memset(t, 0, sizeof(*t));
  t->def = def;
  sp_errors_t errs = {0};
  sp_config_doc_t *doc = NULL;
  int rc = sp_config_load_string("test.yaml", yaml, strlen(yaml), &doc, &errs);
  t->cfg = sp_calloc(1, def->config_size);
  assert_non_null(t->cfg);
  if (rc == 0) rc = sp_cfg_decode(def->schema, doc->root, id, NULL, t->cfg, &errs);
  sp_errors_print(&errs, 2);
  sp_errors_free(&errs);
  sp_config_doc_free(doc);
  if (rc != 0) {
    sp_cfg_free(def->schema, t->cfg);
    sp_free(t->cfg);
    t->cfg = NULL;
    return rc;
  }
  sp_create_settings_t set = {.host = host, .id = id};
  rc = def->create(&set, t->cfg, &t->comp);
  if (rc != 0) {
    sp_cfg_free(def->schema, t->cfg);
    sp_free(t->cfg);
    t->cfg = NULL;
    return rc;
  }
  t->comp->def = def;
  t->comp->host = host;
  t->comp->id = (char *)id;
  t->comp->config = t->cfg;
  return 0;
}

static void on_stopped(void *arg) { (*(int *)arg)++; }

void sp_test_exporter_stop(sp_test_exporter_t *t, uint64_t drain_ms) {
  if (t->comp == NULL) return;
  uv_loop_t *loop = t->comp->host->loop;
  int done = 0;
  uv_update_time(loop);
  t->comp->host->drain_deadline = uv_now(loop) + drain_ms;
  t->def->shutdown(t->comp, on_stopped, &done);
  assert_int_equal(done, 0);
  uint64_t until = uv_now(loop) + drain_ms + 5000;
  while (done == 0 && uv_now(loop) < until) {
    uv_run(loop, UV_RUN_ONCE);
    uv_update_time(loop);
  }
  assert_int_equal(done, 1);
  t->def->destroy(t->comp);
  sp_cfg_free(t->def->schema, t->cfg);
  sp_free(t->cfg);
  memset(t, 0, sizeof(*t));
}
