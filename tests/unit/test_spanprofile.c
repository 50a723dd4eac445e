/*
 * test_spanprofile.c — the span–profile join, through the real component
 * (registry definition, YAML config, create/attach/start/consume/shutdown/
 * destroy) with recording sinks behind it.
 *
 * The ground-truth tests generate processes whose threads run nested spans
 * with known intervals, plus spans overlapping on one thread (async style)
 * and a process whose spans carry no thread; samples at known threads and
 * times, some carrying the local root's span ID the way Pyroscope SDKs do.
 * The expected span of every sample is computed here by brute force over
 * the generated spans, independently of the processor's index. Spans and
 * profiles are delivered in a shuffled, interleaved order (so spans arrive
 * both before and after their samples); every sample that reaches the sink
 * must carry exactly its expected span's labels, or none when there is none.
 */
#include "pipeline/alloc.h"
#include "pipeline/component.h"
#include "pipeline/config.h"
#include "pipeline/error.h"
#include "pipeline/hex.h"
#include "pipeline/log.h"
#include "pipeline/otlpwire.h"
#include "pipeline/telemetry.h"
#include "processors/spanprofile/spanprofile_int.h"
#include "support/loop_util.h"
#include "support/sink.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

typedef Opentelemetry__Proto__Trace__V1__Span t_span_t;
typedef Opentelemetry__Proto__Trace__V1__ScopeSpans t_scope_t;
typedef Opentelemetry__Proto__Trace__V1__ResourceSpans t_rs_t;
typedef Opentelemetry__Proto__Resource__V1__Resource t_res_t;
typedef Opentelemetry__Proto__Common__V1__KeyValue t_kv_t;
typedef Opentelemetry__Proto__Common__V1__AnyValue t_any_t;
typedef Perftools__Profiles__Sample t_sample_t;
typedef Perftools__Profiles__Label t_label_t;
typedef Perftools__Profiles__ValueType t_vt_t;

#define NO_THREAD INT64_MIN
#define T0 1700000000000000000LL /* ns since the epoch */
#define MS 1000000LL

/* ---- fixture: the component as the service builds it ----------------------------------- */

typedef struct fx_s {
  uv_loop_t loop;
  sp_host_t host;
  sp_telemetry_t *tel;
  const sp_component_def_t *def;
  void *cfg;
  sp_component_t *comp;
  sp_consumer_t *in_traces, *in_profiles;
  sp_sink_t sink_t, sink_p;
  bool done;
  int done_calls;
} fx_t;

static void fx_loop_init(fx_t *f) {
  memset(f, 0, sizeof(*f));
  assert_int_equal(uv_loop_init(&f->loop), 0);
  f->tel = sp_telemetry_create();
  assert_non_null(f->tel);
  f->host.loop = &f->loop;
  f->host.telemetry = f->tel;
  sp_sink_init(&f->sink_t);
  sp_sink_init(&f->sink_p);
}

/* Creates, attaches (traces then profiles) and starts an instance from YAML. */
static void fx_make(fx_t *f, const char *yaml) {
  f->def = sp_registry_find(SP_KIND_PROCESSOR, "spanprofile", strlen("spanprofile"));
  assert_non_null(f->def);
  sp_errors_t errs = {0};
  sp_config_doc_t *doc = NULL;
  int rc = sp_config_load_string("test.yaml", yaml, strlen(yaml), &doc, &errs);
  f->cfg = sp_calloc(1, f->def->config_size);
  assert_non_null(f->cfg);
  if (rc == 0)
    rc = sp_cfg_decode(f->def->schema, doc->root, "processors::spanprofile", NULL, f->cfg, &errs);
  sp_errors_print(&errs, 2);
  sp_errors_free(&errs);
  sp_config_doc_free(doc);
  assert_int_equal(rc, 0);
  sp_create_settings_t set = {.host = &f->host, .id = "spanprofile"};
  assert_int_equal(f->def->create(&set, f->cfg, &f->comp), 0);
  f->comp->def = f->def;
  f->comp->host = &f->host;
  f->comp->id = "spanprofile";
  f->comp->config = f->cfg;
  assert_int_equal(f->def->attach(f->comp, SP_SIGNAL_TRACES, &f->sink_t.consumer, &f->in_traces),
                   0);
  assert_int_equal(
      f->def->attach(f->comp, SP_SIGNAL_PROFILES, &f->sink_p.consumer, &f->in_profiles), 0);
  uv_update_time(&f->loop);
  assert_int_equal(f->def->start(f->comp), 0);
}

static void fx_done_cb(void *arg) {
  fx_t *f = arg;
  f->done = true;
  f->done_calls++;
}

static int fx_is_done(void *arg) { return ((fx_t *)arg)->done; }

/* Shuts the instance down (draining) and destroys it; keeps loop, sinks and telemetry. */
static void fx_stop(fx_t *f) {
  f->done = false;
  uv_update_time(&f->loop);
  f->host.drain_deadline = uv_now(&f->loop) + 200;
  f->def->shutdown(f->comp, fx_done_cb, f);
  assert_false(f->done);                    /* never inline */
  f->def->shutdown(f->comp, fx_done_cb, f); /* idempotent */
  assert_int_equal(sp_test_run_until(&f->loop, fx_is_done, f, 5000), 0);
  assert_int_equal(f->done_calls, 1);
  f->done_calls = 0;
  f->def->destroy(f->comp);
  sp_cfg_free(f->def->schema, f->cfg);
  sp_free(f->cfg);
  f->comp = NULL;
  f->cfg = NULL;
}

static void fx_free(fx_t *f) {
  sp_sink_free(&f->sink_t);
  sp_sink_free(&f->sink_p);
  sp_host_stash_clear(&f->host);
  assert_int_equal(sp_test_loop_finish(&f->loop, 1000), 0);
  sp_telemetry_destroy(f->tel);
}

static uint64_t metric(fx_t *f, const char *name, const char *extra) {
  char labels[256];
  snprintf(labels, sizeof(labels), "processor=\"spanprofile\"%s%s", extra ? "," : "",
           extra ? extra : "");
  return sp_telemetry_value(f->tel, name, labels);
}

static uint64_t unjoined(fx_t *f, const char *reason) {
  char extra[64];
  snprintf(extra, sizeof(extra), "reason=\"%s\"", reason);
  return metric(f, "spanprof_processor_spanprofile_samples_unjoined_total", extra);
}

static uint64_t joined(fx_t *f, const char *method) {
  char extra[64];
  snprintf(extra, sizeof(extra), "method=\"%s\"", method);
  return metric(f, "spanprof_processor_spanprofile_samples_joined_total", extra);
}

static int never(void *a) {
  (void)a;
  return 0;
}

/* Runs the loop for @p ms (no sleeping: the loop waits on its own timers). */
static void run_ms(fx_t *f, uint64_t ms) { sp_test_run_until(&f->loop, never, NULL, ms); }

/* ---- building traces ------------------------------------------------------------------- */

typedef struct tspan_s {
  uint64_t id, parent, root;
  uint8_t trace[16];
  char name[24];
  int64_t s, e;
  int64_t thread; /* NO_THREAD: no thread.id attribute */
  uint32_t flags;
  int proc;
} tspan_t;

typedef struct tres_s {
  const char *service;
  const char *instance; /* NULL: none */
  const char *host;
  int64_t pid; /* 0: none */
} tres_t;

static void be64(uint64_t v, uint8_t *out) {
  for (int i = 0; i < 8; i++)
    out[i] = (uint8_t)(v >> (56 - 8 * i));
}

static void hex64(uint64_t v, char out[17]) {
  uint8_t b[8];
  be64(v, b);
  sp_hex_encode(b, 8, out, 17);
}

static void kv_str(t_kv_t *kv, t_any_t *v, const char *key, const char *val) {
  *kv = (t_kv_t)OPENTELEMETRY__PROTO__COMMON__V1__KEY_VALUE__INIT;
  *v = (t_any_t)OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__INIT;
  kv->key = (char *)key;
  kv->value = v;
  v->value_case = OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_STRING_VALUE;
  v->string_value = (char *)val;
}

static void kv_int(t_kv_t *kv, t_any_t *v, const char *key, int64_t val) {
  *kv = (t_kv_t)OPENTELEMETRY__PROTO__COMMON__V1__KEY_VALUE__INIT;
  *v = (t_any_t)OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__INIT;
  kv->key = (char *)key;
  kv->value = v;
  v->value_case = OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_INT_VALUE;
  v->int_value = val;
}

/* One traces batch: one resource, its spans in the given order. */
static sp_traces_t *mk_traces(const tres_t *r, tspan_t *const *spans, size_t n) {
  t_kv_t rkv[4];
  t_any_t rv[4];
  t_kv_t *rkvp[4];
  size_t nr = 0;
  kv_str(&rkv[nr], &rv[nr], "service.name", r->service);
  nr++;
  if (r->instance != NULL) {
    kv_str(&rkv[nr], &rv[nr], "service.instance.id", r->instance);
    nr++;
  }
  if (r->host != NULL) {
    kv_str(&rkv[nr], &rv[nr], "host.name", r->host);
    nr++;
  }
  if (r->pid != 0) {
    kv_int(&rkv[nr], &rv[nr], "process.pid", r->pid);
    nr++;
  }
  for (size_t i = 0; i < nr; i++)
    rkvp[i] = &rkv[i];
  t_res_t res = OPENTELEMETRY__PROTO__RESOURCE__V1__RESOURCE__INIT;
  res.attributes = rkvp;
  res.n_attributes = nr;
  t_span_t *sp = calloc(n, sizeof(*sp));
  t_span_t **spp = calloc(n, sizeof(*spp));
  t_kv_t *skv = calloc(n, sizeof(*skv));
  t_any_t *sv = calloc(n, sizeof(*sv));
  t_kv_t **skvp = calloc(n, sizeof(*skvp));
  uint8_t(*ids)[16] = calloc(n, 16);
  assert_true(n == 0 || (sp && spp && skv && sv && skvp && ids));
  for (size_t i = 0; i < n; i++) {
    const tspan_t *t = spans[i];
    sp[i] = (t_span_t)OPENTELEMETRY__PROTO__TRACE__V1__SPAN__INIT;
    sp[i].trace_id.data = (uint8_t *)t->trace;
    sp[i].trace_id.len = 16;
    be64(t->id, ids[i]);
    sp[i].span_id.data = ids[i];
    sp[i].span_id.len = 8;
    if (t->parent != 0) {
      be64(t->parent, ids[i] + 8);
      sp[i].parent_span_id.data = ids[i] + 8;
      sp[i].parent_span_id.len = 8;
    }
    sp[i].flags = t->flags;
    sp[i].name = (char *)t->name;
    sp[i].start_time_unix_nano = (uint64_t)t->s;
    sp[i].end_time_unix_nano = (uint64_t)t->e;
    if (t->thread != NO_THREAD) {
      kv_int(&skv[i], &sv[i], "thread.id", t->thread);
      skvp[i] = &skv[i];
      sp[i].attributes = &skvp[i];
      sp[i].n_attributes = 1;
    }
    spp[i] = &sp[i];
  }
  t_scope_t ss = OPENTELEMETRY__PROTO__TRACE__V1__SCOPE_SPANS__INIT;
  ss.spans = spp;
  ss.n_spans = n;
  t_scope_t *ssp = &ss;
  t_rs_t rs = OPENTELEMETRY__PROTO__TRACE__V1__RESOURCE_SPANS__INIT;
  rs.resource = &res;
  rs.scope_spans = &ssp;
  rs.n_scope_spans = 1;
  t_rs_t *rsp = &rs;
  sp_otlp_traces_req_t req =
      OPENTELEMETRY__PROTO__COLLECTOR__TRACE__V1__EXPORT_TRACE_SERVICE_REQUEST__INIT;
  req.resource_spans = &rsp;
  req.n_resource_spans = 1;
  size_t len = protobuf_c_message_get_packed_size(&req.base);
  uint8_t *buf = sp_malloc(len > 0 ? len : 1);
  assert_non_null(buf);
  protobuf_c_message_pack(&req.base, buf);
  sp_traces_t *out = NULL;
  char err[256];
  assert_int_equal(sp_traces_from_proto(buf, len, false, &out, err, sizeof(err)), 0);
  free(sp);
  free(spp);
  free(skv);
  free(sv);
  free(skvp);
  free(ids);
  return out;
}

/* The attribute value of a span in a recorded batch, or NULL. */
static const t_any_t *span_attr(const t_span_t *s, const char *key) {
  for (size_t i = 0; i < s->n_attributes; i++)
    if (strcmp(s->attributes[i]->key, key) == 0) return s->attributes[i]->value;
  return NULL;
}

/* Finds span @p id across the sink's traces batches (the last copy seen). */
static const t_span_t *find_span(sp_sink_t *sink, uint64_t id, size_t *copies) {
  const t_span_t *found = NULL;
  size_t n = 0;
  for (size_t b = 0; b < sink->n_traces; b++) {
    const sp_otlp_traces_req_t *req = sp_traces_request(sink->traces[b]);
    assert_non_null(req);
    for (size_t r = 0; r < req->n_resource_spans; r++)
      for (size_t s = 0; s < req->resource_spans[r]->n_scope_spans; s++) {
        t_scope_t *ss = req->resource_spans[r]->scope_spans[s];
        for (size_t k = 0; k < ss->n_spans; k++) {
          uint8_t want[8];
          be64(id, want);
          if (ss->spans[k]->span_id.len == 8 && memcmp(ss->spans[k]->span_id.data, want, 8) == 0) {
            found = ss->spans[k];
            n++;
          }
        }
      }
  }
  if (copies != NULL) *copies = n;
  return found;
}

static size_t sink_spans(sp_sink_t *sink) {
  size_t n = 0;
  for (size_t b = 0; b < sink->n_traces; b++)
    n += sink->traces[b]->span_count;
  return n;
}

/* ---- building profiles ------------------------------------------------------------------- */

typedef struct tsample_s {
  uint64_t span_id; /* label span_id; 0: none */
  int64_t t;        /* 0: no time */
  int64_t thread;   /* NO_THREAD: unknown */
  int64_t cpu_ns;
  int64_t gt; /* label gt_idx (the sample's identity in the test) */
} tsample_t;

enum { SAMPLE_SIDE = 0, SAMPLE_LABELS = 1 };

/* Adds one profile with the given samples; times/threads in side arrays or pprof labels. */
static void add_profile(sp_profiles_t *b, const sp_label_t *labels, size_t nl, const tsample_t *smp,
                        size_t n, int mode) {
  const char *fixed[] = {"",        "samples",   "count",        "cpu",   "nanoseconds",
                         "span_id", "thread_id", "timestamp_ns", "gt_idx"};
  size_t nfixed = sizeof(fixed) / sizeof(fixed[0]);
  char **strs = calloc(nfixed + n, sizeof(char *));
  char(*hex)[17] = calloc(n ? n : 1, 17);
  for (size_t i = 0; i < nfixed; i++)
    strs[i] = (char *)fixed[i];
  size_t ns = nfixed;
  t_vt_t vt[2] = {PERFTOOLS__PROFILES__VALUE_TYPE__INIT, PERFTOOLS__PROFILES__VALUE_TYPE__INIT};
  vt[0].type = 1;
  vt[0].unit = 2;
  vt[1].type = 3;
  vt[1].unit = 4;
  t_vt_t *vtp[2] = {&vt[0], &vt[1]};
  t_sample_t *s = calloc(n ? n : 1, sizeof(*s));
  t_sample_t **sp = calloc(n ? n : 1, sizeof(*sp));
  t_label_t *lb = calloc(n ? n * 4 : 1, sizeof(*lb));
  t_label_t **lbp = calloc(n ? n * 4 : 1, sizeof(*lbp));
  int64_t *vals = calloc(n ? n * 2 : 1, sizeof(int64_t));
  for (size_t i = 0; i < n; i++) {
    s[i] = (t_sample_t)PERFTOOLS__PROFILES__SAMPLE__INIT;
    vals[2 * i] = 1;
    vals[2 * i + 1] = smp[i].cpu_ns;
    s[i].value = &vals[2 * i];
    s[i].n_value = 2;
    size_t k = 0;
    t_label_t *l = &lb[4 * i];
    l[k] = (t_label_t)PERFTOOLS__PROFILES__LABEL__INIT;
    l[k].key = 8;
    l[k].num = smp[i].gt;
    k++;
    if (smp[i].span_id != 0) {
      hex64(smp[i].span_id, hex[i]);
      strs[ns] = hex[i];
      l[k] = (t_label_t)PERFTOOLS__PROFILES__LABEL__INIT;
      l[k].key = 5;
      l[k].str = (int64_t)ns++;
      k++;
    }
    if (mode == SAMPLE_LABELS && smp[i].thread != NO_THREAD) {
      l[k] = (t_label_t)PERFTOOLS__PROFILES__LABEL__INIT;
      l[k].key = 6;
      l[k].num = smp[i].thread;
      k++;
    }
    if (mode == SAMPLE_LABELS && smp[i].t != 0) {
      l[k] = (t_label_t)PERFTOOLS__PROFILES__LABEL__INIT;
      l[k].key = 7;
      l[k].num = smp[i].t;
      k++;
    }
    for (size_t j = 0; j < k; j++)
      lbp[4 * i + j] = &l[j];
    s[i].label = &lbp[4 * i];
    s[i].n_label = k;
    sp[i] = &s[i];
  }
  sp_pprof_t pp = PERFTOOLS__PROFILES__PROFILE__INIT;
  pp.sample_type = vtp;
  pp.n_sample_type = 2;
  pp.sample = sp;
  pp.n_sample = n;
  pp.string_table = strs;
  pp.n_string_table = ns;
  size_t len = protobuf_c_message_get_packed_size(&pp.base);
  uint8_t *buf = malloc(len ? len : 1);
  protobuf_c_message_pack(&pp.base, buf);
  sp_profile_t *p = sp_profiles_add(b, labels, nl, T0, T0 + 10000 * MS, buf, len);
  assert_non_null(p);
  if (mode == SAMPLE_SIDE && n > 0) {
    p->sample_time_ns = sp_arena_alloc(b->arena, n * sizeof(int64_t));
    p->sample_thread = sp_arena_alloc(b->arena, n * sizeof(int64_t));
    for (size_t i = 0; i < n; i++) {
      p->sample_time_ns[i] = smp[i].t;
      p->sample_thread[i] = smp[i].thread == NO_THREAD ? -1 : smp[i].thread;
    }
    p->n_ext = n;
  }
  free(buf);
  free(strs);
  free(hex);
  free(s);
  free(sp);
  free(lb);
  free(lbp);
  free(vals);
}

static const char *label_str(const sp_pprof_t *pp, const t_sample_t *s, const char *key) {
  for (size_t i = 0; i < s->n_label; i++) {
    const t_label_t *l = s->label[i];
    if (l->key > 0 && (size_t)l->key < pp->n_string_table &&
        strcmp(pp->string_table[l->key], key) == 0 && l->str > 0 &&
        (size_t)l->str < pp->n_string_table)
      return pp->string_table[l->str];
  }
  return NULL;
}

static int64_t label_num(const sp_pprof_t *pp, const t_sample_t *s, const char *key) {
  for (size_t i = 0; i < s->n_label; i++) {
    const t_label_t *l = s->label[i];
    if (l->key > 0 && (size_t)l->key < pp->n_string_table &&
        strcmp(pp->string_table[l->key], key) == 0)
      return l->num;
  }
  return -1;
}

static size_t count_label(const sp_pprof_t *pp, const t_sample_t *s, const char *key) {
  size_t n = 0;
  for (size_t i = 0; i < s->n_label; i++)
    if ((size_t)s->label[i]->key < pp->n_string_table &&
        strcmp(pp->string_table[s->label[i]->key], key) == 0)
      n++;
  return n;
}

/* ---- deterministic randomness ------------------------------------------------------------- */

static uint64_t rng_state = 42;
static uint64_t rnd(void) {
  uint64_t z = (rng_state += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}
static int64_t rnd_range(int64_t lo, int64_t hi) {
  return lo + (int64_t)(rnd() % (uint64_t)(hi - lo + 1));
}

/* ---- the ground-truth generator ------------------------------------------------------------ */

#define GT_MAX_SPANS 6000
#define GT_MAX_SAMPLES 6000

typedef struct gt_s {
  tspan_t spans[GT_MAX_SPANS];
  size_t n_spans;
  tsample_t samples[GT_MAX_SAMPLES];
  int sample_proc[GT_MAX_SAMPLES];
  const tspan_t *expect[GT_MAX_SAMPLES];
  size_t n_samples;
  int64_t t_end;
} gt_t;

static const tres_t gt_res[3] = {
    {.service = "gt-a", .instance = "inst-a"},
    {.service = "gt-b", .host = "host-b", .pid = 4242},
    {.service = "gt-c", .instance = "inst-c"},
};

static tspan_t *gt_span(gt_t *g, int proc, int64_t thread, int64_t s, int64_t e,
                        const tspan_t *parent, int depth) {
  assert_true(g->n_spans < GT_MAX_SPANS);
  tspan_t *t = &g->spans[g->n_spans++];
  memset(t, 0, sizeof(*t));
  t->id = rnd() | 1;
  t->parent = parent ? parent->id : 0;
  t->root = parent ? parent->root : t->id;
  if (parent)
    memcpy(t->trace, parent->trace, 16);
  else
    for (int i = 0; i < 16; i++)
      t->trace[i] = (uint8_t)rnd();
  snprintf(t->name, sizeof(t->name), "p%d-d%d-%d", proc, depth, (int)(rnd() % 7));
  t->s = s;
  t->e = e;
  t->thread = thread;
  t->proc = proc;
  return t;
}

/* Nested children filling parts of [s, e]. */
static void gt_children(gt_t *g, const tspan_t *parent, int depth) {
  if (depth >= 4) return;
  int k = (int)(rnd() % 4);
  int64_t cur = parent->s;
  int64_t room = parent->e - parent->s;
  for (int i = 0; i < k; i++) {
    int64_t gap = rnd_range(0, room / 8);
    int64_t len = rnd_range(1, room / 3 > 1 ? room / 3 : 1);
    if (cur + gap + len >= parent->e) break;
    tspan_t *c =
        gt_span(g, parent->proc, parent->thread, cur + gap, cur + gap + len, parent, depth);
    gt_children(g, c, depth + 1);
    cur = c->e;
  }
}

/* Sequential root spans on one thread, each with nested children. */
static void gt_thread(gt_t *g, int proc, int64_t thread, int64_t until) {
  int64_t cur = T0 + rnd_range(0, 2 * MS);
  while (cur < until && g->n_spans + 80 < GT_MAX_SPANS) {
    int64_t len = rnd_range(2 * MS, 25 * MS);
    tspan_t *root = gt_span(g, proc, thread, cur, cur + len, NULL, 0);
    gt_children(g, root, 1);
    cur = root->e + rnd_range(100000, 3 * MS);
  }
}

/* The expected span for a sample, following the rules of the issue. */
static const tspan_t *gt_expect(const gt_t *g, int proc, const tsample_t *s) {
  if (s->span_id != 0) {
    for (size_t i = 0; i < g->n_spans; i++)
      if (g->spans[i].id == s->span_id && g->spans[i].proc == proc) return &g->spans[i];
    return NULL;
  }
  if (s->t == 0) return NULL;
  const tspan_t *cand[64];
  size_t nt = 0, nn = 0, nall = 0;
  const tspan_t *unthreaded[64];
  for (size_t i = 0; i < g->n_spans; i++) {
    const tspan_t *t = &g->spans[i];
    if (t->proc != proc || t->s > s->t || t->e < s->t) continue;
    nall++;
    if (t->thread == NO_THREAD)
      unthreaded[nn++ & 63] = t;
    else if (s->thread != NO_THREAD && t->thread == s->thread)
      cand[nt++ & 63] = t;
  }
  if (s->thread == NO_THREAD) {
    if (nall != 1) return NULL;
    for (size_t i = 0; i < g->n_spans; i++) {
      const tspan_t *t = &g->spans[i];
      if (t->proc == proc && t->s <= s->t && s->t <= t->e) return t;
    }
    return NULL;
  }
  if (nt == 0) return nn == 1 ? unthreaded[0] : NULL;
  /* innermost: the latest start; everything else (threaded or not) must contain it */
  const tspan_t *best = cand[0];
  for (size_t i = 1; i < nt; i++)
    if (cand[i]->s > best->s || (cand[i]->s == best->s && cand[i]->e < best->e)) best = cand[i];
  for (size_t i = 0; i < nt; i++)
    if (cand[i] != best && !(cand[i]->s <= best->s && best->e <= cand[i]->e)) return NULL;
  for (size_t i = 0; i < nn; i++)
    if (!(unthreaded[i]->s < best->s && best->e <= unthreaded[i]->e)) return NULL;
  return best;
}

static void gt_generate(gt_t *g, uint64_t seed) {
  memset(g, 0, sizeof(*g));
  rng_state = seed;
  int64_t until = T0 + 400 * MS;
  /* process 0: three threads of nested spans, and one thread of overlapping (async) spans */
  for (int64_t th = 1; th <= 3; th++)
    gt_thread(g, 0, 100 + th, until);
  for (int i = 0; i < 40; i++) {
    int64_t s = T0 + rnd_range(0, 380 * MS);
    gt_span(g, 0, 199, s, s + rnd_range(1 * MS, 30 * MS), NULL, 0);
  }
  /* process 1 (identified by host.name + process.pid): two threads */
  for (int64_t th = 1; th <= 2; th++)
    gt_thread(g, 1, 200 + th, until);
  /* process 2: spans without any thread attribute */
  gt_thread(g, 2, NO_THREAD, until);
  /* one span with a remote parent: a local root despite its parent */
  tspan_t *remote = gt_span(g, 0, 104, T0 + 100 * MS, T0 + 120 * MS, NULL, 0);
  remote->parent = rnd() | 1;
  remote->flags = 0x300;
  g->t_end = until;

  for (size_t i = 0; i < 3000; i++) {
    tsample_t *s = &g->samples[g->n_samples];
    int proc = (int)(rnd() % 3);
    memset(s, 0, sizeof(*s));
    s->gt = (int64_t)g->n_samples;
    s->cpu_ns = rnd_range(1, 10) * 1000000;
    s->t = T0 + rnd_range(0, 410 * MS);
    uint64_t kind = rnd() % 20;
    if (proc == 0)
      s->thread = kind < 2 ? NO_THREAD : kind < 4 ? 199 : kind < 5 ? 150 : 100 + rnd_range(1, 4);
    else if (proc == 1)
      s->thread = kind < 2 ? NO_THREAD : 200 + rnd_range(1, 2);
    else
      s->thread = kind < 10 ? NO_THREAD : 7;
    if (kind == 19 || kind == 18) {
      /* Pyroscope style: the local root's ID (root containing the time on that thread) */
      for (size_t k = 0; k < g->n_spans; k++) {
        const tspan_t *t = &g->spans[k];
        if (t->proc == proc && t->parent == 0 && t->s <= s->t && s->t <= t->e &&
            (s->thread == NO_THREAD || t->thread == s->thread)) {
          s->span_id = t->id;
          break;
        }
      }
      if (s->span_id == 0) s->span_id = rnd() | 1; /* a span that never arrives */
      if (kind == 18) s->t = 0;
    }
    if (kind == 17) s->t = 0; /* nothing to join by */
    g->sample_proc[g->n_samples] = proc;
    g->expect[g->n_samples] = gt_expect(g, proc, s);
    g->n_samples++;
  }
}

/* Series labels for process @p proc (dotted and underscored spellings both used). */
static size_t gt_labels(int proc, sp_label_t *l) {
  size_t n = 0;
  l[n++] = (sp_label_t){"__name__", "process_cpu"};
  l[n++] = (sp_label_t){"service_name", gt_res[proc].service};
  if (proc == 0) l[n++] = (sp_label_t){"service_instance_id", "inst-a"};
  if (proc == 1) {
    l[n++] = (sp_label_t){"host_name", "host-b"};
    l[n++] = (sp_label_t){"process.pid", "4242"};
  }
  if (proc == 2) l[n++] = (sp_label_t){"service.instance.id", "inst-c"};
  return n;
}

typedef struct delivery_s {
  bool traces;
  int proc;
  size_t first, n; /* into a permutation of spans / the process's samples */
} delivery_t;

/* Delivers the ground truth in a shuffled, interleaved order. */
static void gt_deliver(fx_t *f, gt_t *g, size_t span_batch, size_t sample_batch,
                       bool run_loop_between) {
  /* spans grouped per process, shuffled so parents and children land in various batches */
  static tspan_t *perm[3][GT_MAX_SPANS];
  size_t np[3] = {0};
  for (size_t i = 0; i < g->n_spans; i++)
    perm[g->spans[i].proc][np[g->spans[i].proc]++] = &g->spans[i];
  static tsample_t sperm[3][GT_MAX_SAMPLES];
  size_t ns[3] = {0};
  for (size_t i = 0; i < g->n_samples; i++)
    sperm[g->sample_proc[i]][ns[g->sample_proc[i]]++] = g->samples[i];
  static delivery_t d[4096];
  size_t nd = 0;
  for (int p = 0; p < 3; p++) {
    for (size_t i = np[p]; i > 1; i--) {
      size_t k = rnd() % i;
      tspan_t *tmp = perm[p][i - 1];
      perm[p][i - 1] = perm[p][k];
      perm[p][k] = tmp;
    }
    for (size_t i = 0; i < np[p]; i += span_batch)
      d[nd++] = (delivery_t){true, p, i, np[p] - i < span_batch ? np[p] - i : span_batch};
    for (size_t i = 0; i < ns[p]; i += sample_batch)
      d[nd++] = (delivery_t){false, p, i, ns[p] - i < sample_batch ? ns[p] - i : sample_batch};
  }
  for (size_t i = nd; i > 1; i--) {
    size_t k = rnd() % i;
    delivery_t tmp = d[i - 1];
    d[i - 1] = d[k];
    d[k] = tmp;
  }
  for (size_t i = 0; i < nd; i++) {
    if (d[i].traces) {
      sp_traces_t *t = mk_traces(&gt_res[d[i].proc], perm[d[i].proc] + d[i].first, d[i].n);
      /* every third batch arrives decoded (as after another processor): the other index path */
      if (i % 3 == 0) assert_non_null(sp_traces_request(t));
      assert_int_equal(sp_consume_traces(f->in_traces, t), 0);
    } else {
      sp_profiles_t *b = sp_profiles_create();
      sp_label_t l[6];
      size_t nl = gt_labels(d[i].proc, l);
      /* process 1 carries times and threads as pprof labels, the others in side arrays */
      add_profile(b, l, nl, sperm[d[i].proc] + d[i].first, d[i].n,
                  d[i].proc == 1 ? SAMPLE_LABELS : SAMPLE_SIDE);
      assert_int_equal(sp_consume_profiles(f->in_profiles, b), 0);
    }
    if (run_loop_between) uv_run(&f->loop, UV_RUN_NOWAIT);
  }
}

typedef struct gt_score_s {
  size_t seen, right, wrong, missed, expected_joins;
} gt_score_t;

static gt_score_t gt_check(fx_t *f, gt_t *g) {
  gt_score_t sc = {0};
  static bool seen[GT_MAX_SAMPLES];
  memset(seen, 0, sizeof(seen));
  for (size_t i = 0; i < g->n_samples; i++)
    sc.expected_joins += g->expect[i] != NULL;
  for (size_t b = 0; b < f->sink_p.n_profiles; b++) {
    sp_profiles_t *batch = f->sink_p.profiles[b];
    for (size_t k = 0; k < batch->n; k++) {
      sp_pprof_t *pp = sp_profile_decode(batch, &batch->items[k]);
      assert_non_null(pp);
      for (size_t i = 0; i < pp->n_sample; i++) {
        const t_sample_t *s = pp->sample[i];
        int64_t gi = label_num(pp, s, "gt_idx");
        assert_true(gi >= 0 && (size_t)gi < g->n_samples);
        assert_false(seen[gi]);
        seen[gi] = true;
        sc.seen++;
        const tspan_t *want = g->expect[gi];
        const char *name = label_str(pp, s, "span_name");
        const char *trace = label_str(pp, s, "trace_id");
        const char *sid = label_str(pp, s, "span_id");
        assert_true(count_label(pp, s, "span_name") <= 1);
        assert_true(count_label(pp, s, "span_id") <= 1);
        if (want == NULL) {
          if (name != NULL || trace != NULL || (sid != NULL && g->samples[gi].span_id == 0)) {
            sc.wrong++;
            print_message("sample %lld: joined to %s but expected nothing\n", (long long)gi,
                          name ? name : "?");
          }
          continue;
        }
        char want_trace[33], want_id[17];
        sp_hex_encode(want->trace, 16, want_trace, sizeof(want_trace));
        hex64(want->id, want_id);
        if (name == NULL && trace == NULL) {
          sc.missed++;
          print_message("sample %lld (proc %d t=%lld thread=%lld id=%d): missed %s\n",
                        (long long)gi, g->sample_proc[gi], (long long)(g->samples[gi].t - T0),
                        (long long)g->samples[gi].thread, g->samples[gi].span_id != 0, want->name);
        } else if (name == NULL || trace == NULL || sid == NULL || strcmp(name, want->name) != 0 ||
                   strcmp(trace, want_trace) != 0 || strcmp(sid, want_id) != 0) {
          sc.wrong++;
          print_message("sample %lld: wrong join (%s / %s)\n", (long long)gi, name ? name : "-",
                        sid ? sid : "-");
        } else {
          sc.right++;
        }
      }
    }
  }
  return sc;
}

static const char *gt_yaml = "wait: 10s\n"
                             "sample_time_label: timestamp_ns\n"
                             "span_cpu_attributes: true\n";

/* Spans and samples interleaved at random, all within the window; shutdown resolves them. */
static void test_ground_truth_flush(void **state) {
  (void)state;
  static gt_t g;
  for (uint64_t seed = 1; seed <= 3; seed++) {
    fx_t f;
    fx_loop_init(&f);
    fx_make(&f, gt_yaml);
    gt_generate(&g, seed * 7919);
    gt_deliver(&f, &g, 37, 50, false);
    fx_stop(&f);
    gt_score_t sc = gt_check(&f, &g);
    print_message("seed %llu: %zu samples, %zu expected joins, %zu right, %zu wrong, %zu missed\n",
                  (unsigned long long)seed, sc.seen, sc.expected_joins, sc.right, sc.wrong,
                  sc.missed);
    assert_int_equal(sc.seen, g.n_samples); /* nothing dropped */
    assert_int_equal(sc.wrong, 0);
    assert_int_equal(sc.missed, 0);
    assert_int_equal(sc.right, sc.expected_joins);
    assert_true(sc.expected_joins > 1000);
    assert_int_equal(sink_spans(&f.sink_t), g.n_spans);
    /* the counters agree with what the sink saw */
    uint64_t total = joined(&f, "span_id") + joined(&f, "thread_time");
    assert_int_equal(total, sc.expected_joins);
    uint64_t un = 0;
    const char *reasons[] = {"no_span",   "expired",      "ambiguous",
                             "no_thread", "no_timestamp", "unknown_process"};
    for (size_t r = 0; r < 6; r++)
      un += unjoined(&f, reasons[r]);
    assert_int_equal(total + un, g.n_samples);
    assert_true(unjoined(&f, "ambiguous") > 0);
    assert_true(unjoined(&f, "no_thread") > 0);
    assert_true(unjoined(&f, "no_timestamp") > 0);
    assert_true(joined(&f, "span_id") > 0);
    /* local roots with joined samples carry pyroscope.profile.id = their own ID */
    size_t roots_with_id = 0;
    for (size_t i = 0; i < g.n_spans; i++) {
      const tspan_t *t = &g.spans[i];
      size_t copies;
      const t_span_t *out = find_span(&f.sink_t, t->id, &copies);
      assert_non_null(out);
      assert_int_equal(copies, 1);
      size_t n_joined = 0;
      uint64_t cpu = 0;
      for (size_t k = 0; k < g.n_samples; k++)
        if (g.expect[k] == t) {
          n_joined++;
          cpu += (uint64_t)g.samples[k].cpu_ns;
        }
      const t_any_t *pid = span_attr(out, "pyroscope.profile.id");
      bool local_root = t->parent == 0 || t->flags == 0x300;
      if (n_joined > 0 && local_root) {
        char want[17];
        hex64(t->id, want);
        assert_non_null(pid);
        assert_string_equal(pid->string_value, want);
        roots_with_id++;
      } else {
        assert_null(pid);
      }
      const t_any_t *cnt = span_attr(out, "profile.sample.count");
      const t_any_t *cpuv = span_attr(out, "profile.cpu.time_ns");
      if (n_joined > 0) {
        assert_non_null(cnt);
        assert_int_equal(cnt->int_value, (int64_t)n_joined);
        assert_non_null(cpuv);
        assert_int_equal(cpuv->int_value, (int64_t)cpu);
      } else {
        assert_null(cnt);
      }
    }
    assert_true(roots_with_id > 20);
    assert_true(metric(&f, "spanprof_processor_spanprofile_spans_enriched_total", NULL) > 0);
    assert_int_equal(metric(&f, "spanprof_processor_spanprofile_held_spans", NULL), 0);
    assert_int_equal(metric(&f, "spanprof_processor_spanprofile_held_samples", NULL), 0);
    fx_free(&f);
  }
}

static int sinks_have(void *arg) {
  fx_t *f = arg;
  return sink_spans(&f->sink_t) > 0 && f->sink_p.n_profiles > 0 &&
         metric(f, "spanprof_processor_spanprofile_held_samples", NULL) == 0 &&
         metric(f, "spanprof_processor_spanprofile_held_spans", NULL) == 0;
}

/* The same, with a short window driven by the loop's timer (expiry, not shutdown). */
static void test_ground_truth_timer(void **state) {
  (void)state;
  static gt_t g;
  fx_t f;
  fx_loop_init(&f);
  fx_make(&f, "wait: 250ms\nsample_time_label: timestamp_ns\n");
  gt_generate(&g, 99991);
  uint64_t t0 = uv_hrtime();
  gt_deliver(&f, &g, 50, 64, true);
  uint64_t took_ms = (uv_hrtime() - t0) / 1000000;
  /* Everything expires by itself: spans after 2 x wait leave the index. */
  assert_int_equal(sp_test_run_until(&f.loop, sinks_have, &f, 5000), 0);
  gt_score_t sc = gt_check(&f, &g);
  print_message("timer: %zu samples, %zu expected, %zu right, %zu wrong, %zu missed (delivery "
                "took %llu ms)\n",
                sc.seen, sc.expected_joins, sc.right, sc.wrong, sc.missed,
                (unsigned long long)took_ms);
  assert_int_equal(sc.seen, g.n_samples);
  assert_int_equal(sc.wrong, 0);
  /* Only a delivery slower than the window may miss joins (a very slow machine). */
  if (took_ms < 200) assert_int_equal(sc.missed, 0);
  assert_int_equal(sink_spans(&f.sink_t), g.n_spans);
  fx_stop(&f);
  fx_free(&f);
}

/* ---- focused scenarios ------------------------------------------------------------------------
 */

static tspan_t mkspan(uint64_t id, uint64_t parent, int64_t s_ms, int64_t e_ms, int64_t thread,
                      const char *name) {
  tspan_t t = {0};
  t.id = id;
  t.parent = parent;
  t.s = T0 + s_ms * MS;
  t.e = T0 + e_ms * MS;
  t.thread = thread;
  snprintf(t.name, sizeof(t.name), "%s", name);
  for (int i = 0; i < 16; i++)
    t.trace[i] = (uint8_t)(id * 31 + (uint64_t)i);
  return t;
}

static void send_spans(fx_t *f, const tres_t *r, tspan_t *spans, size_t n) {
  tspan_t *p[64];
  for (size_t i = 0; i < n; i++)
    p[i] = &spans[i];
  assert_int_equal(sp_consume_traces(f->in_traces, mk_traces(r, p, n)), 0);
}

static int send_samples(fx_t *f, const char *svc, const char *inst, const tsample_t *s, size_t n) {
  sp_profiles_t *b = sp_profiles_create();
  sp_label_t l[3] = {
      {"__name__", "process_cpu"}, {"service_name", svc}, {"service_instance_id", inst}};
  add_profile(b, l, inst ? 3 : 2, s, n, SAMPLE_SIDE);
  return sp_consume_profiles(f->in_profiles, b);
}

static const tres_t res_a = {.service = "svc", .instance = "i1"};

/* Looks a sample up by gt_idx in everything the profiles sink holds. */
static const t_sample_t *out_sample(fx_t *f, int64_t gt, sp_pprof_t **ppo) {
  for (size_t b = 0; b < f->sink_p.n_profiles; b++) {
    sp_profiles_t *batch = f->sink_p.profiles[b];
    for (size_t k = 0; k < batch->n; k++) {
      sp_pprof_t *pp = sp_profile_decode(batch, &batch->items[k]);
      for (size_t i = 0; i < pp->n_sample; i++)
        if (label_num(pp, pp->sample[i], "gt_idx") == gt) {
          *ppo = pp;
          return pp->sample[i];
        }
    }
  }
  return NULL;
}

static const char *out_label(fx_t *f, int64_t gt, const char *key) {
  sp_pprof_t *pp = NULL;
  const t_sample_t *s = out_sample(f, gt, &pp);
  assert_non_null(s);
  return label_str(pp, s, key);
}

/* A profile whose samples all join by ID leaves at once, and so do fully joined root spans. */
static void test_early_emission(void **state) {
  (void)state;
  fx_t f;
  fx_loop_init(&f);
  fx_make(&f, "wait: 1h\n");
  tspan_t sp[3] = {mkspan(0xa1, 0, 0, 100, 1, "root"), mkspan(0xa2, 0xa1, 10, 20, 1, "child"),
                   mkspan(0xa3, 0, 200, 300, 1, "other-root")};
  send_spans(&f, &res_a, sp, 3);
  assert_int_equal(f.sink_t.n_traces, 0); /* held: its roots are not joined yet */
  tsample_t s1[2] = {{.span_id = 0xa1, .gt = 1, .cpu_ns = 5}, {.span_id = 0xa3, .gt = 2}};
  assert_int_equal(send_samples(&f, "svc", NULL, s1, 2), 0);
  /* both sides are complete: emitted without waiting for the hour */
  assert_int_equal(f.sink_p.n_profiles, 1);
  assert_int_equal(f.sink_t.n_traces, 1);
  assert_string_equal(out_label(&f, 1, "span_name"), "root");
  assert_string_equal(out_label(&f, 2, "span_name"), "other-root");
  const t_span_t *root = find_span(&f.sink_t, 0xa1, NULL);
  assert_string_equal(span_attr(root, "pyroscope.profile.id")->string_value, "00000000000000a1");
  assert_null(span_attr(find_span(&f.sink_t, 0xa2, NULL), "pyroscope.profile.id"));
  assert_null(span_attr(root, "profile.sample.count")); /* span_cpu_attributes is off */
  /* a profile with a span ID nobody sent is held (the span may come) */
  tsample_t s2[1] = {{.span_id = 0xdead, .gt = 3}};
  assert_int_equal(send_samples(&f, "svc", NULL, s2, 1), 0);
  assert_int_equal(f.sink_p.n_profiles, 1);
  fx_stop(&f);
  assert_int_equal(f.sink_p.n_profiles, 2);
  assert_null(out_label(&f, 3, "span_name"));
  assert_int_equal(unjoined(&f, "no_span"), 1);
  fx_free(&f);
}

/*
 * Attributes are spliced into a held batch's bytes: the batch leaves with
 * wire bytes and no decoded form, and its bytes decode to exactly what the
 * decoded path (a batch that reached the join decoded) produces.
 */
static void test_enriched_on_the_wire(void **state) {
  (void)state;
  uint8_t *canon[2];
  size_t canon_len[2];
  for (int decoded = 0; decoded < 2; decoded++) {
    fx_t f;
    fx_loop_init(&f);
    fx_make(&f, "wait: 1h\nspan_cpu_attributes: true\nprofile_id_attribute: all\n");
    tspan_t sp[4] = {mkspan(0xe1, 0, 0, 100, 1, "root"), mkspan(0xe2, 0xe1, 10, 20, 1, "child"),
                     mkspan(0xe3, 0, 200, 300, 2, "idle"),
                     mkspan(0xe4, 0xe1, 30, 40, NO_THREAD, "c2")};
    tspan_t *p[4] = {&sp[0], &sp[1], &sp[2], &sp[3]};
    sp_traces_t *t = mk_traces(&res_a, p, 4);
    if (decoded) assert_non_null(sp_traces_request(t));
    assert_int_equal(sp_consume_traces(f.in_traces, t), 0);
    tsample_t s[3] = {{.span_id = 0xe1, .gt = 1, .cpu_ns = 5},
                      {.span_id = 0xe2, .gt = 2, .cpu_ns = 7},
                      {.span_id = 0xe1, .gt = 3, .cpu_ns = 11}};
    assert_int_equal(send_samples(&f, "svc", NULL, s, 3), 0);
    fx_stop(&f);
    assert_int_equal(f.sink_t.n_traces, 1);
    sp_traces_t *out = f.sink_t.traces[0];
    if (!decoded) { /* never decoded: the spliced bytes are the batch's bytes */
      assert_null(out->req);
      assert_non_null(out->raw);
      assert_null(out->enc);
      const uint8_t *enc;
      size_t len;
      assert_int_equal(sp_traces_encoded(out, &enc, &len), 0);
      assert_ptr_equal(enc, out->raw);
    }
    const t_span_t *root = find_span(&f.sink_t, 0xe1, NULL),
                   *child = find_span(&f.sink_t, 0xe2, NULL);
    assert_string_equal(span_attr(root, "pyroscope.profile.id")->string_value, "00000000000000e1");
    assert_int_equal(span_attr(root, "profile.sample.count")->int_value, 2);
    assert_int_equal(span_attr(root, "profile.cpu.time_ns")->int_value, 16);
    assert_string_equal(root->attributes[0]->key, "thread.id"); /* appended after its own */
    assert_string_equal(span_attr(child, "pyroscope.profile.id")->string_value, "00000000000000e2");
    assert_int_equal(span_attr(child, "profile.sample.count")->int_value, 1);
    assert_int_equal(span_attr(child, "profile.cpu.time_ns")->int_value, 7);
    assert_int_equal(find_span(&f.sink_t, 0xe3, NULL)->n_attributes, 1);
    assert_int_equal(find_span(&f.sink_t, 0xe4, NULL)->n_attributes, 0);
    assert_int_equal(metric(&f, "spanprof_processor_spanprofile_spans_enriched_total", NULL), 2);
    const sp_otlp_traces_req_t *req = sp_traces_request(out);
    canon_len[decoded] = protobuf_c_message_get_packed_size(&req->base);
    canon[decoded] = malloc(canon_len[decoded]);
    assert_non_null(canon[decoded]);
    protobuf_c_message_pack(&req->base, canon[decoded]);
    fx_free(&f);
  }
  assert_int_equal(canon_len[0], canon_len[1]);
  assert_memory_equal(canon[0], canon[1], canon_len[0]);
  free(canon[0]);
  free(canon[1]);
}

/* Keys a span already has are left alone on the wire, as sp__spj_write_attrs leaves them. */
static void test_enrich_keeps_existing_keys(void **state) {
  (void)state;
  fx_t f;
  fx_loop_init(&f);
  fx_make(&f, "wait: 1h\nspan_cpu_attributes: true\nprofile_id_attribute: all\n");
  tspan_t sp[2] = {mkspan(0xf1, 0, 0, 100, 1, "root"), mkspan(0xf2, 0xf1, 10, 20, 1, "child")};
  tspan_t *p[2] = {&sp[0], &sp[1]};
  /* span 0xf1 arrives with its own profile.sample.count and pyroscope.profile.id */
  sp_traces_t *t = mk_traces(&res_a, p, 2);
  sp_otlpwire_splice_t ws;
  sp_otlpwire_splice_init(&ws);
  assert_int_equal(sp_otlpwire_splice_int(&ws, 0, "profile.sample.count", 99), 0);
  assert_int_equal(sp_otlpwire_splice_str(&ws, 0, "pyroscope.profile.id", "mine", 4), 0);
  uint8_t *bytes;
  size_t len;
  assert_int_equal(sp_otlpwire_splice_finish(&ws, t->raw, t->raw_len, &bytes, &len), 0);
  sp_otlpwire_splice_free(&ws);
  sp_traces_unref(t);
  char err[128];
  assert_int_equal(sp_traces_from_proto(bytes, len, false, &t, err, sizeof(err)), 0);
  assert_int_equal(sp_consume_traces(f.in_traces, t), 0);
  tsample_t s[2] = {{.span_id = 0xf1, .gt = 1, .cpu_ns = 5},
                    {.span_id = 0xf2, .gt = 2, .cpu_ns = 7}};
  assert_int_equal(send_samples(&f, "svc", NULL, s, 2), 0);
  fx_stop(&f);
  assert_int_equal(f.sink_t.n_traces, 1);
  assert_null(f.sink_t.traces[0]->req); /* enriched on the wire */
  const t_span_t *root = find_span(&f.sink_t, 0xf1, NULL);
  size_t counts = 0, ids = 0;
  for (size_t i = 0; i < root->n_attributes; i++) {
    counts += strcmp(root->attributes[i]->key, "profile.sample.count") == 0;
    ids += strcmp(root->attributes[i]->key, "pyroscope.profile.id") == 0;
  }
  assert_int_equal(counts, 1);
  assert_int_equal(ids, 1);
  assert_int_equal(span_attr(root, "profile.sample.count")->int_value, 99);
  assert_string_equal(span_attr(root, "pyroscope.profile.id")->string_value, "mine");
  assert_int_equal(span_attr(root, "profile.cpu.time_ns")->int_value, 5); /* the key it lacked */
  const t_span_t *child = find_span(&f.sink_t, 0xf2, NULL);
  assert_int_equal(span_attr(child, "profile.sample.count")->int_value, 1);
  assert_string_equal(span_attr(child, "pyroscope.profile.id")->string_value, "00000000000000f2");
  assert_int_equal(metric(&f, "spanprof_processor_spanprofile_spans_enriched_total", NULL), 2);
  fx_free(&f);
}

/* Span ID samples match only the span of the same service; samples may arrive first. */
static void test_id_join_service_and_order(void **state) {
  (void)state;
  fx_t f;
  fx_loop_init(&f);
  fx_make(&f, "wait: 1h\nprofile_id_attribute: all\n");
  tsample_t s[3] = {
      {.span_id = 0xb1, .gt = 1}, {.span_id = 0xb1, .gt = 2}, {.span_id = 0xb2, .gt = 3}};
  assert_int_equal(send_samples(&f, "svc", NULL, s, 2), 0);
  assert_int_equal(send_samples(&f, "other-svc", NULL, s + 2, 1), 0);
  assert_int_equal(f.sink_p.n_profiles, 0);
  tspan_t sp[2] = {mkspan(0xb1, 0x77, 0, 10, 1, "late-span"), mkspan(0xb2, 0x77, 0, 10, 1, "b2")};
  send_spans(&f, &res_a, sp, 2); /* service "svc" */
  fx_stop(&f);
  assert_string_equal(out_label(&f, 1, "span_name"), "late-span");
  assert_string_equal(out_label(&f, 2, "span_name"), "late-span");
  char trace[33];
  sp_hex_encode(sp[0].trace, 16, trace, sizeof(trace));
  assert_string_equal(out_label(&f, 2, "trace_id"), trace);
  assert_null(out_label(&f, 3, "span_name")); /* other service: not the same span */
  /* all: a joined child (a non-root) gains the profile id too */
  const t_span_t *b1 = find_span(&f.sink_t, 0xb1, NULL);
  assert_non_null(span_attr(b1, "pyroscope.profile.id"));
  assert_null(span_attr(find_span(&f.sink_t, 0xb2, NULL), "pyroscope.profile.id"));
  fx_free(&f);
}

/* profile_id_attribute: none — traces are never held; labels still flow to samples. */
static void test_profile_id_none(void **state) {
  (void)state;
  fx_t f;
  fx_loop_init(&f);
  fx_make(&f, "wait: 1h\nprofile_id_attribute: none\n");
  tspan_t sp[2] = {mkspan(0xc1, 0, 0, 100, 5, "root"), mkspan(0xc2, 0xc1, 10, 50, 5, "inner")};
  send_spans(&f, &res_a, sp, 2);
  assert_int_equal(f.sink_t.n_traces, 1);   /* passed straight on, unchanged */
  assert_non_null(f.sink_t.traces[0]->raw); /* not re-encoded */
  tsample_t s[2] = {{.t = T0 + 30 * MS, .thread = 5, .gt = 1}, {.span_id = 0xc1, .gt = 2}};
  assert_int_equal(send_samples(&f, "svc", "i1", s, 2), 0);
  fx_stop(&f);
  assert_string_equal(out_label(&f, 1, "span_name"), "inner");
  assert_string_equal(out_label(&f, 1, "span_id"), "00000000000000c2");
  assert_string_equal(out_label(&f, 2, "span_name"), "root");
  assert_null(span_attr(find_span(&f.sink_t, 0xc1, NULL), "pyroscope.profile.id"));
  fx_free(&f);
}

/* Duplicate spans (a retried export) neither double-count nor become ambiguous. */
static void test_duplicates(void **state) {
  (void)state;
  fx_t f;
  fx_loop_init(&f);
  fx_make(&f, "wait: 1h\nspan_cpu_attributes: true\n");
  tspan_t sp[2] = {mkspan(0xd1, 0, 0, 100, 3, "root"), mkspan(0xd2, 0xd1, 10, 20, 3, "child")};
  send_spans(&f, &res_a, sp, 2);
  send_spans(&f, &res_a, sp, 2);
  tsample_t s[2] = {{.t = T0 + 15 * MS, .thread = 3, .gt = 1, .cpu_ns = 7},
                    {.t = T0 + 50 * MS, .thread = 3, .gt = 2, .cpu_ns = 9}};
  assert_int_equal(send_samples(&f, "svc", "i1", s, 2), 0);
  fx_stop(&f);
  assert_int_equal(metric(&f, "spanprof_processor_spanprofile_spans_duplicate_total", NULL), 2);
  assert_string_equal(out_label(&f, 1, "span_name"), "child");
  assert_string_equal(out_label(&f, 2, "span_name"), "root");
  size_t copies;
  const t_span_t *root = find_span(&f.sink_t, 0xd1, &copies);
  assert_int_equal(copies, 2); /* both copies go on: the join never drops */
  assert_int_equal(span_attr(root, "profile.sample.count")->int_value, 1);
  assert_int_equal(span_attr(root, "profile.cpu.time_ns")->int_value, 9);
  fx_free(&f);
}

/* Samples of a process nobody sent spans for stay unjoined, counted. */
static void test_unknown_process(void **state) {
  (void)state;
  fx_t f;
  fx_loop_init(&f);
  fx_make(&f, "wait: 1h\n");
  tspan_t sp[1] = {mkspan(0xe1, 0, 0, 100, 1, "root")};
  send_spans(&f, &res_a, sp, 1);
  tsample_t s[2] = {{.t = T0 + 10 * MS, .thread = 1, .gt = 1},
                    {.t = T0 + 10 * MS, .thread = 1, .gt = 2}};
  assert_int_equal(send_samples(&f, "svc", "some-other-instance", s, 1), 0);
  assert_int_equal(send_samples(&f, "svc", NULL, s + 1, 1), 0); /* no identity at all */
  fx_stop(&f);
  assert_null(out_label(&f, 1, "span_name"));
  assert_null(out_label(&f, 2, "span_name"));
  assert_int_equal(unjoined(&f, "unknown_process"), 2);
  fx_free(&f);
}

/* Overlapping spans on one thread are ambiguous; the thread-less rule wants a sole span. */
static void test_ambiguity(void **state) {
  (void)state;
  fx_t f;
  fx_loop_init(&f);
  fx_make(&f, "wait: 1h\n");
  tspan_t sp[4] = {mkspan(0xf1, 0, 0, 100, 9, "a"), mkspan(0xf2, 0, 50, 150, 9, "b"),
                   mkspan(0xf3, 0, 200, 300, 9, "alone"), mkspan(0xf4, 0, 400, 500, 8, "c")};
  send_spans(&f, &res_a, sp, 4);
  tsample_t s[5] = {
      {.t = T0 + 70 * MS, .thread = 9, .gt = 1},          /* inside a and b: ambiguous */
      {.t = T0 + 20 * MS, .thread = 9, .gt = 2},          /* only a */
      {.t = T0 + 250 * MS, .thread = NO_THREAD, .gt = 3}, /* no thread, one active span */
      {.t = T0 + 70 * MS, .thread = NO_THREAD, .gt = 4},  /* no thread, two active */
      {.t = T0 + 450 * MS, .thread = 9, .gt = 5},         /* another thread's span */
  };
  assert_int_equal(send_samples(&f, "svc", "i1", s, 5), 0);
  fx_stop(&f);
  assert_null(out_label(&f, 1, "span_name"));
  assert_string_equal(out_label(&f, 2, "span_name"), "a");
  assert_string_equal(out_label(&f, 3, "span_name"), "alone");
  assert_null(out_label(&f, 4, "span_name"));
  assert_null(out_label(&f, 5, "span_name"));
  assert_int_equal(unjoined(&f, "ambiguous"), 1);
  assert_int_equal(unjoined(&f, "no_thread"), 1);
  assert_int_equal(unjoined(&f, "no_span"), 1);
  fx_free(&f);
}

/* The memory bound evicts the oldest early, never drops, never joins wrongly. */
static void test_memory_bound(void **state) {
  (void)state;
  fx_t f;
  fx_loop_init(&f);
  fx_make(&f, "wait: 1h\nmax_held_spans: 100\nspan_cpu_attributes: true\n");
  tspan_t sp[50];
  for (int b = 0; b < 20; b++) {
    for (int i = 0; i < 50; i++) {
      int k = b * 50 + i;
      /* a parent and its child per pair: the child (lower index) arrives first */
      sp[i] = (i % 2 == 0)
                  ? mkspan(0x1000 + (uint64_t)k, 0x1000 + (uint64_t)k + 1, k * 10 + 2, k * 10 + 8,
                           1, "child")
                  : mkspan(0x1000 + (uint64_t)k, 0, (k - 1) * 10, (k - 1) * 10 + 10, 1, "parent");
    }
    send_spans(&f, &res_a, sp, 50);
    assert_true(metric(&f, "spanprof_processor_spanprofile_held_spans", NULL) <= 100);
  }
  assert_true(metric(&f, "spanprof_processor_spanprofile_evicted_spans_total", NULL) >= 900);
  assert_true(sink_spans(&f.sink_t) >= 900); /* evicted early, not lost */
  /* a sample in an evicted child's time must not fall back to its parent */
  tsample_t s[3] = {
      {.t = T0 + 5 * MS, .thread = 1, .gt = 1},              /* child 0x1000: evicted */
      {.span_id = 0x1000, .gt = 2},                          /* evicted ID */
      {.t = T0 + (998 * 10 + 5) * MS, .thread = 1, .gt = 3}, /* child 0x1000+998: held */
  };
  assert_int_equal(send_samples(&f, "svc", "i1", s, 3), 0);
  fx_stop(&f);
  assert_int_equal(sink_spans(&f.sink_t), 1000);
  assert_null(out_label(&f, 1, "span_name"));
  assert_null(out_label(&f, 2, "span_name"));
  assert_string_equal(out_label(&f, 3, "span_name"), "child");
  /* the ID miss is `expired` unless its slot in the small removed-ID cache was reused */
  assert_true(unjoined(&f, "expired") >= 1);
  assert_int_equal(unjoined(&f, "expired") + unjoined(&f, "no_span"), 2);
  fx_free(&f);
}

/* An evicted inner span must not hand its samples to the outer span that stayed. */
static void test_eviction_never_falls_back(void **state) {
  (void)state;
  fx_t f;
  fx_loop_init(&f);
  fx_make(&f, "wait: 1h\nmax_held_spans: 2\n");
  tspan_t child[1] = {mkspan(0x201, 0x202, 10, 20, 1, "child")};
  tspan_t parent[1] = {mkspan(0x202, 0, 0, 100, 1, "parent")};
  tspan_t other[1] = {mkspan(0x203, 0, 500, 600, 2, "other")};
  send_spans(&f, &res_a, child, 1);
  send_spans(&f, &res_a, parent, 1);
  send_spans(&f, &res_a, other, 1); /* over the bound: the child (oldest) is forgotten */
  assert_int_equal(metric(&f, "spanprof_processor_spanprofile_held_spans", NULL), 2);
  tsample_t s[2] = {{.t = T0 + 15 * MS, .thread = 1, .gt = 1},
                    {.t = T0 + 550 * MS, .thread = 2, .gt = 2}};
  assert_int_equal(send_samples(&f, "svc", "i1", s, 2), 0);
  fx_stop(&f);
  assert_null(out_label(&f, 1, "span_name")); /* not "parent" */
  assert_string_equal(out_label(&f, 2, "span_name"), "other");
  assert_int_equal(unjoined(&f, "expired"), 1);
  assert_int_equal(sink_spans(&f.sink_t), 3);
  fx_free(&f);
}

/* max_held_bytes: a batch bigger than the bound goes straight through. */
static void test_byte_bound(void **state) {
  (void)state;
  fx_t f;
  fx_loop_init(&f);
  fx_make(&f, "wait: 1h\nmax_held_bytes: 4KiB\n");
  tspan_t sp[40];
  for (int i = 0; i < 40; i++)
    sp[i] = mkspan(0x5000 + (uint64_t)i, 0, i * 10, i * 10 + 5, 1, "root");
  send_spans(&f, &res_a, sp, 40);
  assert_int_equal(sink_spans(&f.sink_t), 40);
  assert_true(metric(&f, "spanprof_processor_spanprofile_held_bytes", NULL) <= 4096);
  tsample_t s[200];
  for (int i = 0; i < 200; i++)
    s[i] = (tsample_t){.t = T0 + (1000 + i) * MS, .thread = 2, .gt = i};
  assert_int_equal(send_samples(&f, "svc", "i1", s, 200), 0);
  assert_int_equal(f.sink_p.n_profiles, 1); /* could not be held: resolved and sent */
  assert_true(metric(&f, "spanprof_processor_spanprofile_evicted_samples_total", NULL) >= 200);
  fx_stop(&f);
  fx_free(&f);
}

static int refused_cleared(void *arg) {
  fx_t *f = arg;
  return f->sink_t.n_traces == 3;
}

/* A refusal downstream is kept and retried, and input is refused meanwhile. */
static void test_refusal_retried(void **state) {
  (void)state;
  fx_t f;
  fx_loop_init(&f);
  fx_make(&f, "wait: 40ms\nprofile_id_attribute: none\n");
  f.sink_t.result = SP_EAGAIN;
  tspan_t a[1] = {mkspan(0x61, 0, 0, 10, 1, "first")};
  send_spans(&f, &res_a, a, 1); /* accepted; refused downstream; kept */
  assert_int_equal(f.sink_t.refused_calls, 1);
  tspan_t b[1] = {mkspan(0x62, 0, 0, 10, 1, "second")};
  tspan_t *bp = &b[0];
  assert_int_equal(sp_consume_traces(f.in_traces, mk_traces(&res_a, &bp, 1)), SP_EAGAIN);
  /* profiles use their own port: not blocked */
  tsample_t s[1] = {{.span_id = 0x61, .gt = 1}};
  assert_int_equal(send_samples(&f, "svc", NULL, s, 1), 0);
  assert_true(metric(&f, "spanprof_processor_spanprofile_refused_total", NULL) >= 1);
  f.sink_t.result = 0;
  tspan_t *cp[1] = {&b[0]};
  /* after the next stage recovers, the retry goes first and input is accepted again */
  run_ms(&f, 30);
  assert_int_equal(f.sink_t.n_traces, 1);
  assert_int_equal(sp_consume_traces(f.in_traces, mk_traces(&res_a, cp, 1)), 0);
  tspan_t c[1] = {mkspan(0x63, 0, 0, 10, 1, "third")};
  send_spans(&f, &res_a, c, 1);
  assert_int_equal(sp_test_run_until(&f.loop, refused_cleared, &f, 2000), 0);
  assert_non_null(find_span(&f.sink_t, 0x61, NULL));
  assert_non_null(find_span(&f.sink_t, 0x62, NULL));
  assert_string_equal(out_label(&f, 1, "span_name"), "first");
  fx_stop(&f);
  assert_int_equal(metric(&f, "spanprof_processor_dropped_items_total", NULL), 0);
  fx_free(&f);
}

/* Refused until the drain deadline: dropped and counted, the callback still runs. */
static void test_refusal_at_shutdown(void **state) {
  (void)state;
  fx_t f;
  fx_loop_init(&f);
  fx_make(&f, "wait: 1h\n");
  tspan_t a[2] = {mkspan(0x71, 0, 0, 10, 1, "r1"), mkspan(0x72, 0, 0, 10, 2, "r2")};
  send_spans(&f, &res_a, a, 2);
  f.sink_t.result = SP_EAGAIN;
  fx_stop(&f); /* flushes, retries for 200 ms, then gives up */
  assert_int_equal(metric(&f, "spanprof_processor_dropped_items_total", NULL), 2);
  assert_true(f.sink_t.refused_calls >= 2);
  fx_free(&f);
}

/* Shutdown flushes what is held, joined; data arriving afterwards passes through. */
static void test_shutdown_flushes(void **state) {
  (void)state;
  fx_t f;
  fx_loop_init(&f);
  fx_make(&f, "wait: 1h\nspan_cpu_attributes: true\n");
  tspan_t sp[2] = {mkspan(0x81, 0, 0, 100, 4, "root"), mkspan(0x82, 0x81, 30, 60, 4, "io")};
  send_spans(&f, &res_a, sp, 2);
  tsample_t s[2] = {{.t = T0 + 40 * MS, .thread = 4, .gt = 1, .cpu_ns = 3},
                    {.t = T0 + 90 * MS, .thread = 4, .gt = 2, .cpu_ns = 4}};
  assert_int_equal(send_samples(&f, "svc", "i1", s, 2), 0);
  assert_int_equal(f.sink_t.n_traces + f.sink_p.n_profiles, 0);
  fx_stop(&f);
  assert_string_equal(out_label(&f, 1, "span_name"), "io");
  assert_string_equal(out_label(&f, 2, "span_name"), "root");
  const t_span_t *root = find_span(&f.sink_t, 0x81, NULL);
  assert_int_equal(span_attr(root, "profile.cpu.time_ns")->int_value, 4);
  assert_non_null(span_attr(root, "pyroscope.profile.id"));
  const t_span_t *io = find_span(&f.sink_t, 0x82, NULL);
  assert_int_equal(span_attr(io, "profile.sample.count")->int_value, 1);
  assert_null(span_attr(io, "pyroscope.profile.id"));
  fx_free(&f);
}

/* A late inner span takes the sample over from the outer one, credits included. */
static void test_late_inner_span(void **state) {
  (void)state;
  fx_t f;
  fx_loop_init(&f);
  fx_make(&f, "wait: 1h\nspan_cpu_attributes: true\nprofile_id_attribute: all\n");
  tspan_t outer[1] = {mkspan(0x91, 0, 0, 100, 6, "outer")};
  send_spans(&f, &res_a, outer, 1);
  tsample_t s[1] = {{.t = T0 + 50 * MS, .thread = 6, .gt = 1, .cpu_ns = 11}};
  assert_int_equal(send_samples(&f, "svc", "i1", s, 1), 0);
  tspan_t inner[1] = {mkspan(0x92, 0x91, 40, 60, 6, "inner")};
  send_spans(&f, &res_a, inner, 1);
  fx_stop(&f);
  assert_string_equal(out_label(&f, 1, "span_name"), "inner");
  assert_null(span_attr(find_span(&f.sink_t, 0x91, NULL), "profile.sample.count"));
  assert_null(span_attr(find_span(&f.sink_t, 0x91, NULL), "pyroscope.profile.id"));
  assert_int_equal(span_attr(find_span(&f.sink_t, 0x92, NULL), "profile.cpu.time_ns")->int_value,
                   11);
  fx_free(&f);
}

/*
 * A sample arriving after its span's batch left (here at once: nothing can
 * change it) still joins while the span is indexed (2 x wait after it came).
 */
static void test_late_samples_window(void **state) {
  (void)state;
  fx_t f;
  fx_loop_init(&f);
  fx_make(&f, "wait: 50ms\nprofile_id_attribute: none\n");
  tspan_t sp[1] = {mkspan(0x101, 0, 0, 100, 1, "root")};
  send_spans(&f, &res_a, sp, 1);
  assert_int_equal(f.sink_t.n_traces, 1);
  tsample_t s[1] = {{.t = T0 + 10 * MS, .thread = 1, .gt = 1}};
  assert_int_equal(send_samples(&f, "svc", "i1", s, 1), 0);
  run_ms(&f, 130); /* the profile leaves at 50 ms, the span at 100 ms */
  assert_string_equal(out_label(&f, 1, "span_name"), "root");
  assert_int_equal(metric(&f, "spanprof_processor_spanprofile_held_spans", NULL), 0);
  /* now the span is gone: a sample in its time is not attributed to anything */
  tsample_t s2[1] = {{.t = T0 + 20 * MS, .thread = 1, .gt = 2}};
  assert_int_equal(send_samples(&f, "svc", "i1", s2, 1), 0);
  run_ms(&f, 80);
  assert_null(out_label(&f, 2, "span_name"));
  assert_int_equal(unjoined(&f, "expired"), 1);
  fx_stop(&f);
  fx_free(&f);
}

/* A reload with the same config keeps the window; a changed one emits it at start. */
static void test_reload_stash(void **state) {
  (void)state;
  fx_t f;
  fx_loop_init(&f);
  fx_make(&f, "wait: 1h\n");
  tspan_t sp[2] = {mkspan(0x111, 0, 0, 100, 1, "root"), mkspan(0x112, 0x111, 10, 20, 1, "c")};
  send_spans(&f, &res_a, sp, 2);
  tsample_t s1[1] = {{.t = T0 + 50 * MS, .thread = 1, .gt = 1}};
  assert_int_equal(send_samples(&f, "svc", "i1", s1, 1), 0);
  f.host.reloading = true;
  fx_stop(&f);
  f.host.reloading = false;
  assert_int_equal(f.sink_t.n_traces + f.sink_p.n_profiles, 0); /* parked, not flushed */
  assert_non_null(f.host.stash);
  /* the successor, same config: continues the window */
  fx_make(&f, "wait: 1h\n");
  assert_null(f.host.stash);
  assert_int_equal(f.sink_t.n_traces + f.sink_p.n_profiles, 0);
  tsample_t s2[1] = {{.t = T0 + 15 * MS, .thread = 1, .gt = 2}};
  assert_int_equal(send_samples(&f, "svc", "i1", s2, 1), 0);
  f.host.reloading = true;
  fx_stop(&f);
  f.host.reloading = false;
  /* a successor with another config emits the predecessor's window at start */
  fx_make(&f, "wait: 30m\n");
  assert_int_equal(f.sink_t.n_traces, 1);
  assert_int_equal(f.sink_p.n_profiles, 2);
  assert_string_equal(out_label(&f, 1, "span_name"), "root");
  assert_string_equal(out_label(&f, 2, "span_name"), "c");
  assert_non_null(span_attr(find_span(&f.sink_t, 0x111, NULL), "pyroscope.profile.id"));
  fx_stop(&f);
  /* a processor missing from the new config: its stash is freed and counted */
  fx_make(&f, "wait: 1h\n");
  send_spans(&f, &res_a, sp, 1);
  f.host.reloading = true;
  fx_stop(&f);
  f.host.reloading = false;
  assert_int_equal(metric(&f, "spanprof_processor_spanprofile_held_spans", NULL), 1);
  sp_host_stash_clear(&f.host);
  assert_int_equal(metric(&f, "spanprof_processor_dropped_items_total", NULL), 1);
  assert_int_equal(metric(&f, "spanprof_processor_spanprofile_held_spans", NULL), 0);
  fx_free(&f);
}

/*
 * Every allocation in the data path fails in turn: batches still all come
 * out (unjoined where memory was short), nothing crashes or leaks.
 */
static void test_out_of_memory(void **state) {
  (void)state;
  for (long n = 0; n < 400; n += 3) {
    fx_t f;
    fx_loop_init(&f);
    fx_make(&f, "wait: 1h\nspan_cpu_attributes: true\n");
    tspan_t sp[4] = {mkspan(0x301, 0, 0, 100, 1, "root"), mkspan(0x302, 0x301, 10, 50, 1, "a"),
                     mkspan(0x303, 0x301, 60, 90, 1, "b"), mkspan(0x304, 0, 200, 300, 2, "r2")};
    tspan_t *p1[2] = {&sp[0], &sp[1]}, *p2[2] = {&sp[2], &sp[3]};
    sp_traces_t *t1 = mk_traces(&res_a, p1, 2), *t2 = mk_traces(&res_a, p2, 2);
    tsample_t s[4] = {{.t = T0 + 20 * MS, .thread = 1, .gt = 1},
                      {.span_id = 0x304, .gt = 2},
                      {.t = T0 + 95 * MS, .thread = 1, .gt = 3},
                      {.span_id = 0x399, .gt = 4}};
    sp_profiles_t *b1 = sp_profiles_create(), *b2 = sp_profiles_create();
    sp_label_t l[3] = {{"__name__", "cpu"}, {"service_name", "svc"}, {"service_instance_id", "i1"}};
    add_profile(b1, l, 3, s, 2, SAMPLE_SIDE);
    add_profile(b2, l, 3, s + 2, 2, SAMPLE_LABELS);
    sp_alloc_set_fail_after(n);
    assert_int_equal(sp_consume_traces(f.in_traces, t1), 0);
    assert_int_equal(sp_consume_profiles(f.in_profiles, b1), 0);
    assert_int_equal(sp_consume_traces(f.in_traces, t2), 0);
    assert_int_equal(sp_consume_profiles(f.in_profiles, b2), 0);
    sp_alloc_set_fail_after(-1);
    fx_stop(&f);
    assert_int_equal(sink_spans(&f.sink_t), 4);
    assert_int_equal(sp_sink_profile_count(&f.sink_p), 2);
    /* whatever was joined is right */
    const char *a = out_label(&f, 1, "span_name");
    assert_true(a == NULL || strcmp(a, "a") == 0);
    const char *r = out_label(&f, 3, "span_name");
    assert_true(r == NULL || strcmp(r, "root") == 0);
    assert_null(out_label(&f, 4, "span_name"));
    if (n == 0) /* nothing could be held: everything went straight through */
      assert_int_equal(metric(&f, "spanprof_processor_spanprofile_passthrough_batches_total", NULL),
                       4);
    fx_free(&f);
  }
}

/* Bytes the wire reader cannot read fall back to protobuf-c; bytes neither reads go on as they are.
 */
static void test_malformed_traces(void **state) {
  (void)state;
  fx_t f;
  fx_loop_init(&f);
  fx_make(&f, "wait: 1h\n");
  tspan_t sp[2] = {mkspan(0x401, 0, 0, 100, 1, "root"), mkspan(0x402, 0x401, 10, 20, 1, "c")};
  tspan_t *pp[2] = {&sp[0], &sp[1]};
  sp_traces_t *good = mk_traces(&res_a, pp, 2);
  const uint8_t *bytes;
  size_t len;
  assert_int_equal(sp_traces_encoded(good, &bytes, &len), 0);
  /* every truncation of a valid request, wrapped without validation */
  for (size_t cut = 1; cut < len; cut += 7) {
    uint8_t *b = sp_malloc(cut);
    memcpy(b, bytes, cut);
    sp_traces_t *t = sp_traces_wrap(b, cut, 2);
    assert_non_null(t);
    assert_int_equal(sp_consume_traces(f.in_traces, t), 0);
  }
  /* garbage: a group wire type the reader refuses and protobuf-c too */
  uint8_t *junk = sp_malloc(4);
  memcpy(junk, "\x0b\x0c\x0d\x0e", 4);
  assert_int_equal(sp_consume_traces(f.in_traces, sp_traces_wrap(junk, 4, 1)), 0);
  assert_true(metric(&f, "spanprof_processor_spanprofile_passthrough_batches_total", NULL) > 0);
  assert_int_equal(sp_consume_traces(f.in_traces, good), 0);
  tsample_t s[1] = {{.t = T0 + 15 * MS, .thread = 1, .gt = 1}};
  assert_int_equal(send_samples(&f, "svc", "i1", s, 1), 0);
  fx_stop(&f);
  assert_string_equal(out_label(&f, 1, "span_name"), "c");
  fx_free(&f);
}

/* Spans and samples of different tenants (X-Scope-OrgID) never join, even with equal IDs. */
static void test_tenants_never_mix(void **state) {
  (void)state;
  fx_t f;
  fx_loop_init(&f);
  fx_make(&f, "wait: 1h\n");
  tspan_t sp[1] = {mkspan(0x501, 0, 0, 100, 1, "tenant-a-span")};
  tspan_t *p = &sp[0];
  sp_traces_t *t = mk_traces(&res_a, &p, 1);
  t->meta.tenant = sp_arena_strdup(t->arena, "a");
  assert_int_equal(sp_consume_traces(f.in_traces, t), 0);
  const char *tenants[2] = {"b", "a"};
  for (int k = 0; k < 2; k++) {
    tsample_t s[2] = {{.span_id = 0x501, .gt = 1 + 2 * k},
                      {.t = T0 + 10 * MS, .thread = 1, .gt = 2 + 2 * k}};
    sp_profiles_t *b = sp_profiles_create();
    sp_label_t l[3] = {{"__name__", "cpu"}, {"service_name", "svc"}, {"service_instance_id", "i1"}};
    add_profile(b, l, 3, s, 2, SAMPLE_SIDE);
    b->meta.tenant = sp_profiles_strdup(b, tenants[k]);
    assert_int_equal(sp_consume_profiles(f.in_profiles, b), 0);
  }
  fx_stop(&f);
  assert_null(out_label(&f, 1, "span_name"));
  assert_null(out_label(&f, 2, "span_name"));
  assert_string_equal(out_label(&f, 3, "span_name"), "tenant-a-span");
  assert_string_equal(out_label(&f, 4, "span_name"), "tenant-a-span");
  fx_free(&f);
}

/* Lifecycle: shutdown without start, destroy without start, bad config. */
static void test_lifecycle_and_config(void **state) {
  (void)state;
  fx_t f;
  fx_loop_init(&f);
  const sp_component_def_t *def =
      sp_registry_find(SP_KIND_PROCESSOR, "spanprofile", strlen("spanprofile"));
  assert_non_null(def);
  void *cfg = sp_calloc(1, def->config_size);
  sp_errors_t errs = {0};
  assert_int_equal(sp_cfg_decode(def->schema, NULL, "processors::spanprofile", NULL, cfg, &errs),
                   0);
  sp_create_settings_t set = {.host = &f.host, .id = "spanprofile"};
  sp_component_t *comp;
  assert_int_equal(def->create(&set, cfg, &comp), 0);
  comp->def = def;
  comp->host = &f.host;
  comp->id = "spanprofile";
  f.done = false;
  def->shutdown(comp, fx_done_cb, &f);
  assert_false(f.done);
  assert_int_equal(sp_test_run_until(&f.loop, fx_is_done, &f, 1000), 0);
  def->destroy(comp);
  assert_int_equal(def->create(&set, cfg, &comp), 0);
  def->destroy(comp); /* never started */
  sp_cfg_free(def->schema, cfg);
  memset(cfg, 0, def->config_size);
  sp_config_doc_t *doc = NULL;
  const char *bad = "profile_id_attribute: some\nwait: 0ms\nspan_id_labels: [a, b, c, d, e]\n";
  assert_int_equal(sp_config_load_string("bad.yaml", bad, strlen(bad), &doc, &errs), 0);
  assert_int_equal(
      sp_cfg_decode(def->schema, doc->root, "processors::spanprofile", NULL, cfg, &errs),
      SP_ECONFIG);
  assert_true(errs.n >= 2);
  sp_errors_free(&errs);
  sp_config_doc_free(doc);
  sp_cfg_free(def->schema, cfg);
  sp_free(cfg);
  fx_free(&f);
}

/* ---- the index alone: many spans in one cell, removed in random order ----------------------- */

typedef struct ix_span_s {
  int64_t s, e;
  int64_t thread;
  bool late; /* never removed before the checks */
  bool live;
  sp_spj_ref_t ref;
} ix_span_t;

/* The innermost live span of @p thread containing @p t by brute force (spans nest), or -1. */
static int ix_expect(const ix_span_t *sp, int n, int64_t thread, int64_t t) {
  int best = -1;
  for (int i = 0; i < n; i++)
    if (sp[i].live && sp[i].thread == thread && sp[i].s <= t && t <= sp[i].e &&
        (best < 0 || sp[i].s > sp[best].s))
      best = i;
  return best;
}

static void ix_check(sp_spj_index_t *ix, uint32_t proc, const ix_span_t *sp, int n, int64_t base) {
  for (int j = 1; j <= 50; j++) {
    int64_t t = base + (300 + j) * 1000 * MS + 500 * MS;
    uint32_t idx = SP_SPJ_NONE;
    int r = sp__spj_resolve_window(ix, proc, 7, t, &idx);
    int want = ix_expect(sp, n, 7, t);
    if (want < 0) {
      assert_int_equal(r, SP_SPJ_R_NO_SPAN);
    } else {
      assert_int_equal(r, SP_SPJ_JOINED_WINDOW);
      assert_int_equal(sp__spj_at(ix, idx)->span_id, (uint64_t)want + 1);
    }
  }
}

static void ix_remove(sp_spj_index_t *ix, ix_span_t *sp, int i) {
  assert_true(sp__spj_deref(ix, sp[i].ref) != NULL);
  sp__spj_remove(ix, sp[i].ref.idx);
  assert_null(sp__spj_deref(ix, sp[i].ref));
  sp[i].live = false;
}

/*
 * Thousands of spans of one thread (and of no thread) in one level-9 cell
 * and in the list of spans too long for the grid, added and removed in
 * random order: removal moves items around inside the vectors, and every
 * span must still be found where it is. The spans removed early all end
 * before the checked times (a removal raises the process's watermark); the
 * nested late spans are checked by brute force along the way. At the end
 * everything leaves and the index gives back all it took.
 */
static void test_index_shared_cell_churn(void **state) {
  (void)state;
  enum { EARLY = 1500, UNTHREADED = 1500, HUGE = 100, LATE = 50, LATE_HUGE = 3 };
  enum { N = EARLY + UNTHREADED + HUGE + LATE + LATE_HUGE };
  const int64_t S = 1000 * MS;
  const int64_t base = ((T0 >> 40) << 40) + 60 * S; /* one level-9 cell: 2^40 ns, ~18 min */
  ix_span_t *sp = calloc(N, sizeof(*sp));
  assert_non_null(sp);
  int k = 0;
  for (int i = 0; i < EARLY + UNTHREADED; i++, k++) {
    sp[k].s = base + S + (int64_t)(rnd() % (uint64_t)(50 * S));
    sp[k].e = sp[k].s + 150 * S + (int64_t)(rnd() % (uint64_t)(49 * S));
    sp[k].thread = i < EARLY ? 7 : SP_SPJ_NO_THREAD;
  }
  for (int i = 0; i < HUGE; i++, k++) { /* longer than the grid's top level */
    sp[k].s = base - 2000 * S + (int64_t)(rnd() % (uint64_t)(100 * S));
    sp[k].e = base + 100 * S + (int64_t)(rnd() % (uint64_t)(100 * S));
    sp[k].thread = 7;
  }
  for (int i = 1; i <= LATE; i++, k++) /* nested: the i-th contains the checked times j >= i */
    sp[k] = (ix_span_t){
        .s = base + (300 + i) * S, .e = base + (900 - i) * S, .thread = 7, .late = true};
  for (int i = 0; i < LATE_HUGE; i++, k++)
    sp[k] = (ix_span_t){
        .s = base - (3000 + i) * S, .e = base + (2000 + i) * S, .thread = 7, .late = true};
  assert_int_equal(k, N);
  int *order = calloc(N, sizeof(int));
  assert_non_null(order);
  for (int i = 0; i < N; i++)
    order[i] = i;
  for (int i = N - 1; i > 0; i--) {
    int j = (int)(rnd() % (uint64_t)(i + 1)), t = order[i];
    order[i] = order[j];
    order[j] = t;
  }

  sp_spj_index_t *ix = sp__spj_index_create(N);
  assert_non_null(ix);
  char key[] = "proc-a";
  char *keys[1] = {key};
  uint32_t proc = sp__spj_process(ix, keys, 1, true);
  assert_int_not_equal(proc, SP_SPJ_NONE);
  sp_spj_str_t *svc = sp__spj_intern(ix, "svc", 3);
  assert_non_null(svc);
  size_t empty_bytes = sp__spj_bytes(ix);

  for (int n = 0; n < N; n++) {
    int i = order[n];
    sp_spj_span_t t = {.span_id = (uint64_t)i + 1, .start_ns = sp[i].s, .end_ns = sp[i].e};
    t.name = sp__spj_intern(ix, "op", 2);
    t.svc = svc;
    svc->refs++;
    assert_int_equal(sp__spj_add(ix, &t, proc, sp[i].thread, &sp[i].ref), 0);
    sp[i].live = true;
    if (rnd() % 2 == 0) { /* and one of the early ones leaves */
      int v = (int)(rnd() % N);
      if (sp[v].live && !sp[v].late) ix_remove(ix, sp, v);
    }
    if (n % 97 == 0) ix_check(ix, proc, sp, N, base);
  }
  for (int n = 0; n < N; n++)
    if (sp[order[n]].live && !sp[order[n]].late) ix_remove(ix, sp, order[n]);
  ix_check(ix, proc, sp, N, base);
  for (int j = 1; j <= LATE; j++) /* all late spans are there: the j-th check found the j-th */
    assert_int_equal(ix_expect(sp, N, 7, base + (300 + j) * S + 500 * MS),
                     EARLY + UNTHREADED + HUGE + j - 1);

  /* A cell that shrinks back to a few items (searched, notes not kept), then grows again. */
  ix_span_t sm[40];
  for (int round = 0; round < 3; round++) {
    for (int i = 0; i < 40; i++) {
      sm[i] = (ix_span_t){.s = base + (1 + i) * S, .e = base + (200 + i) * S, .thread = 8};
      sp_spj_span_t t = {.span_id = 100000 + (uint64_t)i, .start_ns = sm[i].s, .end_ns = sm[i].e};
      t.name = sp__spj_intern(ix, "op", 2);
      t.svc = svc;
      svc->refs++;
      assert_int_equal(sp__spj_add(ix, &t, proc, 8, &sm[i].ref), 0);
      sm[i].live = true;
      if (i == 7) { /* the oldest leave first: the newest move into their places */
        static const int gone[6] = {0, 2, 4, 6, 1, 3};
        for (int v = 0; v < 6; v++)
          ix_remove(ix, sm, gone[v]);
      }
    }
    for (int v = 0; v < 40; v++) {
      int i = (v * 17 + round * 5) % 40; /* 17 is prime to 40: each once */
      if (sm[i].live) ix_remove(ix, sm, i);
    }
  }
  assert_int_equal(sp__spj_searches(ix), 0);
  size_t full_bytes = sp__spj_bytes(ix);
  assert_true(full_bytes > 128 * 1024);
  for (int n = N - 1; n >= 0; n--)
    if (sp[order[n]].live) ix_remove(ix, sp, order[n]);
  assert_int_equal(sp__spj_live(ix), 0);
  assert_int_equal(sp__spj_searches(ix), 0); /* every removal went straight to its item */
  sp__spj_trim(ix);
  /* Vectors, cells, pool chunks and tables all went back; what stays is bookkeeping (the
   * process's thread table, the chunk and bucket arrays). */
  assert_true(sp__spj_bytes(ix) < empty_bytes + 1024);
  sp__spj_unintern(ix, svc);
  sp__spj_index_destroy(ix);
  free(order);
  free(sp);
}

/* ---- the wire path: samples read and labelled without decoding ------------------------------ */

/* A sample label for wire_profile(): key, then a string value or (str NULL) a number. */
typedef struct wlabel_s {
  const char *key;
  const char *str;
  int64_t num;
} wlabel_t;

#define WMAX_LABELS 4
#define WPAD 20 /* numeric labels sample 1 carries before its own (past any stack buffer) */

/*
 * Encodes a cpu profile whose sample i has gt_idx = i + 1 and the labels
 * @p lab[i] (up to WMAX_LABELS, key NULL ends them); sample 1 has WPAD
 * numeric "pad" labels between the two. Returns malloc'd bytes.
 */
static uint8_t *wire_profile(const wlabel_t (*lab)[WMAX_LABELS], size_t n, size_t *len) {
  char *strs[128];
  size_t ns = 0;
  const char *fixed[] = {"", "samples", "count", "cpu", "nanoseconds", "gt_idx", "pad"};
  for (size_t i = 0; i < sizeof(fixed) / sizeof(fixed[0]); i++)
    strs[ns++] = (char *)fixed[i];
  t_vt_t vt[2] = {PERFTOOLS__PROFILES__VALUE_TYPE__INIT, PERFTOOLS__PROFILES__VALUE_TYPE__INIT};
  vt[0].type = 1;
  vt[0].unit = 2;
  vt[1].type = 3;
  vt[1].unit = 4;
  t_vt_t *vtp[2] = {&vt[0], &vt[1]};
  t_sample_t s[16];
  t_sample_t *sp[16];
  t_label_t lb[16][WMAX_LABELS + 1 + WPAD];
  t_label_t *lbp[16][WMAX_LABELS + 1 + WPAD];
  int64_t vals[16][2];
  assert_true(n <= 16);
  for (size_t i = 0; i < n; i++) {
    s[i] = (t_sample_t)PERFTOOLS__PROFILES__SAMPLE__INIT;
    vals[i][0] = 1;
    vals[i][1] = 10 * MS;
    s[i].value = vals[i];
    s[i].n_value = 2;
    size_t k = 0;
    lb[i][k] = (t_label_t)PERFTOOLS__PROFILES__LABEL__INIT;
    lb[i][k].key = 5;
    lb[i][k++].num = (int64_t)i + 1;
    for (size_t j = 0; i == 0 && j < WPAD; j++) {
      lb[i][k] = (t_label_t)PERFTOOLS__PROFILES__LABEL__INIT;
      lb[i][k].key = 6;
      lb[i][k++].num = (int64_t)j;
    }
    for (size_t j = 0; j < WMAX_LABELS && lab[i][j].key != NULL; j++) {
      const char *txt[2] = {lab[i][j].key, lab[i][j].str};
      int64_t idx[2] = {0, 0};
      for (int t = 0; t < 2; t++) {
        if (txt[t] == NULL) continue;
        size_t f;
        for (f = 0; f < ns && strcmp(strs[f], txt[t]) != 0; f++)
          ;
        if (f == ns) strs[ns++] = (char *)txt[t];
        idx[t] = (int64_t)f;
      }
      lb[i][k] = (t_label_t)PERFTOOLS__PROFILES__LABEL__INIT;
      lb[i][k].key = idx[0];
      lb[i][k].str = idx[1];
      lb[i][k++].num = lab[i][j].str == NULL ? lab[i][j].num : 0;
    }
    for (size_t j = 0; j < k; j++)
      lbp[i][j] = &lb[i][j];
    s[i].label = lbp[i];
    s[i].n_label = k;
    sp[i] = &s[i];
  }
  sp_pprof_t pp = PERFTOOLS__PROFILES__PROFILE__INIT;
  pp.sample_type = vtp;
  pp.n_sample_type = 2;
  pp.sample = sp;
  pp.n_sample = n;
  pp.string_table = strs;
  pp.n_string_table = ns;
  *len = protobuf_c_message_get_packed_size(&pp.base);
  uint8_t *buf = malloc(*len);
  assert_non_null(buf);
  protobuf_c_message_pack(&pp.base, buf);
  return buf;
}

#define A1 "00000000000000a1"

/* The samples of test_wire_spellings and what each must come out with. */
static const wlabel_t g_wlab[][WMAX_LABELS] = {
    /* 1: lowercase span_id (after WPAD other labels) → root by ID */
    {{"span_id", A1, 0}},
    /* 2: the second configured spelling, uppercase → child by ID (no span_id added) */
    {{"spanID", "00000000000000A2", 0}},
    /* 3: uppercase span_id → other by ID, kept as it came */
    {{"span_id", "00000000000000A3", 0}},
    /* 4: no valid ID; thread as text, time label → child by window; span_id stays "zzzz" */
    {{"span_id", "zzzz", 0}, {"thread_id", "1", 0}, {"ts", NULL, T0 + 20 * MS}},
    /* 5: thread as number → other by window, span_id added */
    {{"thread_id", NULL, 2}, {"ts", NULL, T0 + 250 * MS}},
    /* 6: an all-zero ID is no ID; no time: nothing to join by */
    {{"span_id", "0000000000000000", 0}},
    /* 7: already named: nothing added, the sample's own labels kept */
    {{"span_id", A1, 0}, {"span_name", "keep", 0}, {"trace_id", "tid", 0}},
    /* 8, 9: both spellings: the first configured one wins, whatever the order */
    {{"span_id", A1, 0}, {"spanID", "00000000000000a2", 0}},
    {{"spanID", "00000000000000a2", 0}, {"span_id", A1, 0}},
    /* 10: a time on a thread with no span then */
    {{"thread_id", "2", 0}, {"ts", NULL, T0 + 20 * MS}},
    /* 11: the string "1" as an (invalid) ID and as a thread → root by window */
    {{"span_id", "1", 0}, {"thread_id", "1", 0}, {"ts", NULL, T0 + 60 * MS}},
    /* 12: a span_id of 17 characters is not an ID; no time */
    {{"span_id", A1 "0", 0}},
};

static void wire_spellings_run(bool decoded) {
  fx_t f;
  fx_loop_init(&f);
  fx_make(&f, "wait: 1h\nspan_id_labels: [span_id, spanID]\nsample_time_label: ts\n");
  tspan_t sp[3] = {mkspan(0xa1, 0, 0, 100, 1, "root"), mkspan(0xa2, 0xa1, 10, 50, 1, "child"),
                   mkspan(0xa3, 0, 200, 300, 2, "other")};
  send_spans(&f, &res_a, sp, 3);
  size_t n = sizeof(g_wlab) / sizeof(g_wlab[0]);
  size_t len;
  uint8_t *bytes = wire_profile(g_wlab, n, &len);
  sp_profiles_t *b = sp_profiles_create();
  sp_label_t l[3] = {
      {"__name__", "process_cpu"}, {"service_name", "svc"}, {"service_instance_id", "i1"}};
  if (decoded) {
    /* As the OTLP receivers hand profiles on: decoded, modified, no bytes. */
    sp_profile_t *p = sp_profiles_add(b, l, 3, T0, T0 + 10000 * MS, bytes, len);
    assert_non_null(sp_profile_decode(b, p));
    p->raw = NULL;
    p->raw_len = 0;
    p->modified = true;
    p->wire = NULL;
  } else {
    assert_non_null(sp_profiles_add(b, l, 3, T0, T0 + 10000 * MS, bytes, len));
  }
  assert_int_equal(sp_consume_profiles(f.in_profiles, b), 0);
  fx_stop(&f);
  assert_int_equal(f.sink_p.n_profiles, 1);
  /* The join left encoded bytes only: nothing decoded, the labels spliced in. */
  sp_profile_t *out = &f.sink_p.profiles[0]->items[0];
  assert_null(out->pprof);
  assert_non_null(out->raw);
  assert_false(out->modified);
  sp_pprof_t *pp = perftools__profiles__profile__unpack(NULL, out->raw_len, out->raw);
  assert_non_null(pp);
  perftools__profiles__profile__free_unpacked(pp, NULL);

  char trace_a1[33], trace_a2[33], trace_a3[33];
  sp_hex_encode(sp[0].trace, 16, trace_a1, sizeof(trace_a1));
  sp_hex_encode(sp[1].trace, 16, trace_a2, sizeof(trace_a2));
  sp_hex_encode(sp[2].trace, 16, trace_a3, sizeof(trace_a3));
  static const char *const want_name[] = {"root", "child", "other", "child", "other", NULL,
                                          "keep", "root",  "root",  NULL,    "root",  NULL};
  const char *want_trace[] = {trace_a1, trace_a2, trace_a3, trace_a2, trace_a3, NULL,
                              "tid",    trace_a1, trace_a1, NULL,     trace_a1, NULL};
  static const char *const want_id[] = {A1,
                                        NULL,
                                        "00000000000000A3",
                                        "zzzz",
                                        "00000000000000a3",
                                        "0000000000000000",
                                        A1,
                                        A1,
                                        A1,
                                        NULL,
                                        "1",
                                        A1 "0"};
  for (size_t i = 0; i < n; i++) {
    const char *name = out_label(&f, (int64_t)i + 1, "span_name");
    const char *trace = out_label(&f, (int64_t)i + 1, "trace_id");
    const char *id = out_label(&f, (int64_t)i + 1, "span_id");
    if (want_name[i] == NULL)
      assert_null(name);
    else
      assert_string_equal(name, want_name[i]);
    if (want_trace[i] == NULL)
      assert_null(trace);
    else
      assert_string_equal(trace, want_trace[i]);
    if (want_id[i] == NULL)
      assert_null(id);
    else
      assert_string_equal(id, want_id[i]);
    sp_pprof_t *opp = NULL;
    const t_sample_t *s = out_sample(&f, (int64_t)i + 1, &opp);
    assert_int_equal(count_label(opp, s, "span_name"), want_name[i] != NULL);
    assert_int_equal(count_label(opp, s, "trace_id"), want_trace[i] != NULL);
  }
  /* Sample 2 kept its own spelling and gained no span_id. */
  sp_pprof_t *opp = NULL;
  const t_sample_t *s2 = out_sample(&f, 2, &opp);
  assert_string_equal(label_str(opp, s2, "spanID"), "00000000000000A2");
  assert_int_equal(s2->n_label, 4); /* gt_idx, spanID, span_name, trace_id */
  assert_int_equal(joined(&f, "span_id"), 6);
  assert_int_equal(joined(&f, "thread_time"), 3);
  assert_int_equal(unjoined(&f, "no_timestamp"), 2);
  assert_int_equal(unjoined(&f, "no_span"), 1);
  free(bytes);
  fx_free(&f);
}

/*
 * Span IDs in several spellings, thread numbers as text and as numbers,
 * time labels, invalid and uppercase IDs, samples already named: joined and
 * labelled on the encoded bytes exactly as the decoded path did — for
 * received bytes and for a decoded (OTLP) profile alike.
 */
static void test_wire_spellings(void **state) {
  (void)state;
  wire_spellings_run(false);
  wire_spellings_run(true);
}

/* Samples of test_wire_predecoded: those of g_wlab whose labels all fit pre-decoded ones. */
static const wlabel_t g_wlab_pd[][WMAX_LABELS] = {
    {{"span_id", A1, 0}},
    {{"spanID", "00000000000000A2", 0}},
    {{"span_id", "00000000000000A3", 0}},
    {{"span_id", "zzzz", 0}, {"thread_id", "1", 0}},
    {{"thread_id", NULL, 2}},
    {{"span_id", "0000000000000000", 0}},
    {{"span_id", A1, 0}, {"span_name", "keep", 0}, {"trace_id", "tid", 0}},
    {{"span_id", A1, 0}, {"spanID", "00000000000000a2", 0}},
    {{"spanID", "00000000000000a2", 0}, {"span_id", A1, 0}},
};

/*
 * Joins the g_wlab_pd profile, its labels read from the bytes or (@p
 * predecoded) pre-decoded as the Pyroscope receiver indexes it; the output
 * bytes (malloc'd) and the sample counters.
 */
static uint8_t *wire_pd_run(bool predecoded, size_t *out_len, uint64_t counts[4]) {
  fx_t f;
  fx_loop_init(&f);
  fx_make(&f, "wait: 1h\nspan_id_labels: [span_id, spanID]\n");
  tspan_t sp[3] = {mkspan(0xa1, 0, 0, 100, 1, "root"), mkspan(0xa2, 0xa1, 10, 50, 1, "child"),
                   mkspan(0xa3, 0, 200, 300, 2, "other")};
  send_spans(&f, &res_a, sp, 3);
  size_t len;
  uint8_t *bytes = wire_profile(g_wlab_pd, sizeof(g_wlab_pd) / sizeof(g_wlab_pd[0]), &len);
  sp_profiles_t *b = sp_profiles_create();
  sp_label_t l[3] = {
      {"__name__", "process_cpu"}, {"service_name", "svc"}, {"service_instance_id", "i1"}};
  sp_profile_t *p = sp_profiles_add(b, l, 3, T0, T0 + 10000 * MS, bytes, len);
  assert_non_null(p);
  if (predecoded) {
    sp_pprof_wire_t *w = sp_arena_alloc(b->arena, sizeof(*w));
    assert_non_null(w);
    assert_int_equal(sp_pprof_wire_index_ex(b->arena, p->raw, p->raw_len,
                                            SP_PW_VALIDATE | SP_PW_LABELS, w, NULL, 0),
                     0);
    assert_non_null(w->plabels);
    assert_true(w->has_keys);
    p->wire = w;
  }
  assert_int_equal(sp_consume_profiles(f.in_profiles, b), 0);
  fx_stop(&f);
  assert_int_equal(f.sink_p.n_profiles, 1);
  sp_profile_t *out = &f.sink_p.profiles[0]->items[0];
  assert_non_null(out->raw);
  const sp_pprof_wire_t *ow = out->wire;
  assert_non_null(ow); /* the splice's own index, installed with the bytes */
  assert_null(ow->plabels); /* not carried over: nothing downstream reads them */
  assert_int_equal(ow->has_keys, predecoded);
  if (predecoded) {
    /* The summary the exporter reads is the one indexing the output afresh gives. */
    sp_arena_t *a = sp_arena_create(0);
    sp_pprof_wire_t fresh;
    assert_int_equal(sp_pprof_wire_index_ex(a, out->raw, out->raw_len,
                                            SP_PW_VALIDATE | SP_PW_LABELS, &fresh, NULL, 0),
                     0);
    assert_true(fresh.has_keys);
    assert_int_equal(ow->n_keys, fresh.n_keys);
    for (size_t i = 0; i < fresh.n_keys; i++) {
      assert_int_equal(ow->keys[i].key, fresh.keys[i].key);
      assert_int_equal(ow->keys[i].first_sample, fresh.keys[i].first_sample);
      assert_int_equal(ow->keys[i].first_pos, fresh.keys[i].first_pos);
      assert_int_equal(ow->keys[i].max_len, fresh.keys[i].max_len);
    }
    sp_arena_destroy(a);
  }
  uint8_t *copy = malloc(out->raw_len);
  assert_non_null(copy);
  memcpy(copy, out->raw, out->raw_len);
  *out_len = out->raw_len;
  counts[0] = joined(&f, "span_id");
  counts[1] = joined(&f, "thread_time");
  counts[2] = unjoined(&f, "no_timestamp");
  counts[3] = unjoined(&f, "no_span");
  free(bytes);
  fx_free(&f);
  return copy;
}

/*
 * Labels pre-decoded by the receiver are read as arrays: the join finds
 * and writes exactly what reading the bytes gives (same output bytes, same
 * counts), and the output's key summary is exact.
 */
static void test_wire_predecoded(void **state) {
  (void)state;
  size_t la, lb;
  uint64_t ca[4], cb[4];
  uint8_t *a = wire_pd_run(false, &la, ca);
  uint8_t *b = wire_pd_run(true, &lb, cb);
  assert_int_equal(la, lb);
  assert_memory_equal(a, b, la);
  assert_memory_equal(ca, cb, sizeof(ca));
  assert_int_equal(ca[0], 6); /* 1, 2, 3, 7, 8, 9 by ID */
  free(a);
  free(b);
}

/*
 * A sample's key from the bytes and from pre-decoded labels alike; with
 * skip_values (nothing reads them) the values are not read: count 1, no
 * cpu time, the labels' part unchanged.
 */
static void test_sample_key_values(void **state) {
  (void)state;
  size_t len;
  uint8_t *bytes = wire_profile(g_wlab_pd, sizeof(g_wlab_pd) / sizeof(g_wlab_pd[0]), &len);
  sp_arena_t *a = sp_arena_create(0);
  sp_pprof_wire_t w[2];
  assert_int_equal(sp_pprof_wire_index(a, bytes, len, false, &w[0], NULL, 0), 0);
  assert_int_equal(sp_pprof_wire_index_ex(a, bytes, len, SP_PW_VALIDATE | SP_PW_LABELS, &w[1],
                                          NULL, 0),
                   0);
  assert_null(w[0].plabels);
  assert_non_null(w[1].plabels);
  sp_profile_t p = {0};
  const char *ids[2] = {"span_id", "spanID"};
  for (int v = 0; v < 2; v++) {
    sp_spj_pctx_t c;
    sp__spj_pctx_init(&c, &w[v], &p, ids, 2, "thread_id", NULL);
    sp_spj_skey_t k, ks;
    for (size_t i = 0; i < w[v].n_samples; i++) {
      sp__spj_sample_key(&c, i, &k);
      assert_int_equal(k.count, 1);
      assert_int_equal(k.cpu_ns, 10 * MS);
      c.skip_values = true;
      sp__spj_sample_key(&c, i, &ks);
      c.skip_values = false;
      assert_int_equal(ks.count, 1);
      assert_int_equal(ks.cpu_ns, 0);
      assert_int_equal(ks.has_id, k.has_id);
      assert_int_equal(ks.span_id, k.span_id);
      assert_int_equal(ks.thread, k.thread);
      assert_int_equal(ks.has_span_name, k.has_span_name);
      assert_int_equal(ks.has_trace_id, k.has_trace_id);
      assert_int_equal(ks.has_span_id_label, k.has_span_id_label);
    }
    sp__spj_sample_key(&c, 0, &k);
    assert_true(k.has_id);
    assert_int_equal(k.span_id, 0xa1);
    sp__spj_sample_key(&c, 4, &k);
    assert_false(k.has_id);
    assert_int_equal(k.thread, 2);
    sp__spj_pctx_free(&c);
  }
  sp_arena_destroy(a);
  free(bytes);
}

/*
 * A profile whose samples all carry span IDs of known spans is labelled in
 * one splice at arrival; a failed allocation anywhere leaves it exactly as
 * it came (all or nothing), never half labelled.
 */
static void test_wire_oom_all_or_nothing(void **state) {
  (void)state;
  bool seen_none = false, seen_all = false;
  for (long n = 0; n < 160; n++) {
    fx_t f;
    fx_loop_init(&f);
    fx_make(&f, "wait: 1h\nprofile_id_attribute: none\n");
    tspan_t sp[2] = {mkspan(0xa1, 0, 0, 100, 1, "root"), mkspan(0xa2, 0xa1, 10, 50, 1, "child")};
    send_spans(&f, &res_a, sp, 2);
    tsample_t s[3] = {
        {.span_id = 0xa1, .gt = 1}, {.span_id = 0xa2, .gt = 2}, {.span_id = 0xa1, .gt = 3}};
    sp_profiles_t *b = sp_profiles_create();
    sp_label_t l[2] = {{"__name__", "process_cpu"}, {"service_name", "svc"}};
    add_profile(b, l, 2, s, 3, SAMPLE_SIDE);
    sp_alloc_set_fail_after(n);
    assert_int_equal(sp_consume_profiles(f.in_profiles, b), 0);
    sp_alloc_set_fail_after(-1);
    fx_stop(&f);
    assert_int_equal(f.sink_p.n_profiles, 1);
    const char *a = out_label(&f, 1, "span_name");
    const char *c = out_label(&f, 2, "span_name");
    const char *r = out_label(&f, 3, "span_name");
    bool none = a == NULL && c == NULL && r == NULL;
    bool all = a != NULL && c != NULL && r != NULL;
    assert_true(none || all);
    if (all) {
      assert_string_equal(a, "root");
      assert_string_equal(c, "child");
      assert_string_equal(r, "root");
    }
    seen_none |= none;
    seen_all |= all;
    fx_free(&f);
  }
  assert_true(seen_none && seen_all);
}

int main(void) {
  sp_log_set_level(SP_LOG_OFF);
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_ground_truth_flush),   cmocka_unit_test(test_ground_truth_timer),
      cmocka_unit_test(test_early_emission),       cmocka_unit_test(test_id_join_service_and_order),
      cmocka_unit_test(test_profile_id_none),      cmocka_unit_test(test_duplicates),
      cmocka_unit_test(test_unknown_process),      cmocka_unit_test(test_ambiguity),
      cmocka_unit_test(test_memory_bound),         cmocka_unit_test(test_eviction_never_falls_back),
      cmocka_unit_test(test_byte_bound),           cmocka_unit_test(test_refusal_retried),
      cmocka_unit_test(test_refusal_at_shutdown),  cmocka_unit_test(test_shutdown_flushes),
      cmocka_unit_test(test_late_inner_span),      cmocka_unit_test(test_late_samples_window),
      cmocka_unit_test(test_reload_stash),         cmocka_unit_test(test_out_of_memory),
      cmocka_unit_test(test_malformed_traces),     cmocka_unit_test(test_tenants_never_mix),
      cmocka_unit_test(test_lifecycle_and_config), cmocka_unit_test(test_index_shared_cell_churn),
      cmocka_unit_test(test_wire_spellings),       cmocka_unit_test(test_wire_oom_all_or_nothing),
      cmocka_unit_test(test_wire_predecoded),
      cmocka_unit_test(test_sample_key_values),
      cmocka_unit_test(test_enriched_on_the_wire),
      cmocka_unit_test(test_enrich_keeps_existing_keys),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
