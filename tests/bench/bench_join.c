/*
 * bench_join — spans/s and samples/s through the spanprofile processor, and
 * the bytes it holds per span, with baselines measured in the same run on
 * the same data: a pass-through consumer (what forwarding costs) and a
 * decode-only consumer (the protobuf-c decode the join cannot avoid).
 *
 * The data: P processes x T threads running nested spans (a root of 2-25 ms
 * with up to three levels of children, 8 attributes each, thread.id among
 * them), 500 spans per traces batch; profiles of 2000 samples (5 frames,
 * 2 values) either labelled with their local root's span ID (the Pyroscope
 * convention) or carrying per-sample time and thread (OTLP profiles).
 * Everything is built and encoded before the clock starts; batches enter
 * through the component's input consumer exactly as a pipeline feeds it.
 *
 * A second data set is shaped like most SDKs' output (and the load
 * generator's): no thread.id, few processes, many requests in flight (a
 * trace of a 2-182 ms server span and three children starting every ~50 us
 * per process), so one process's spans share an interval cell per time
 * slot. It is indexed with everything kept, then with the span bound
 * evicting the oldest batch for every new one (the steady state of a full
 * processor), and held under a byte bound to compare what the processor says
 * it holds (held_bytes) with what the heap says it holds (glibc mallinfo2),
 * its batches built the way the batch processor builds them (appended into
 * a buffer that doubles).
 *
 * Seconds are CPU seconds of the bench's thread.
 *
 *   bench_join [spans] [samples] [lg]   (defaults 200000 and 1000000; with "lg", only the
 *                                        loadgen-like rows, five times: for profiling)
 */
#include "pipeline/alloc.h"
#include "pipeline/arena.h"
#include "pipeline/component.h"
#include "pipeline/config.h"
#include "pipeline/error.h"
#include "pipeline/log.h"
#include "pipeline/pprofwire.h"
#include "pipeline/telemetry.h"

#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <uv.h>

typedef Opentelemetry__Proto__Trace__V1__Span b_span_t;
typedef Opentelemetry__Proto__Common__V1__KeyValue b_kv_t;
typedef Opentelemetry__Proto__Common__V1__AnyValue b_any_t;

#define T0 1700000000000000000LL
#define MS 1000000LL
#define PROCS 16
#define THREADS 8
#define SPANS_PER_BATCH 500
#define SAMPLES_PER_PROFILE 2000
#define U_PROCS 4 /* processes of the spans without thread.id */

/* Bytes the heap has handed out and not got back (glibc). */
static size_t heap_inuse(void) {
  struct mallinfo2 mi = mallinfo2();
  return mi.uordblks + mi.hblkhd;
}

/*
 * CPU time of this thread (everything runs on it): on a shared machine other
 * processes stretch the wall clock, not this.
 */
static double now_s(void) {
  struct timespec t;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
  return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static uint64_t rng = 12345;
static uint64_t rnd(void) {
  uint64_t z = (rng += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

/* ---- generated spans (kept small: what samples need to aim at them) ------------------ */

typedef struct g_span_s {
  uint64_t id, parent, root;
  int64_t s, e;
  int proc;
  int thread;
  int depth;
} g_span_t;

static g_span_t *g_spans;
static size_t g_n, g_cap;
static int64_t g_end[PROCS];

#define NO_PARENT ((size_t)-1)

static g_span_t *g_add(int proc, int thread, int64_t s, int64_t e, size_t parent_i) {
  if (g_n == g_cap) {
    g_cap = g_cap ? g_cap * 2 : 1 << 16;
    g_spans = realloc(g_spans, g_cap * sizeof(*g_spans));
  }
  const g_span_t *parent = parent_i != NO_PARENT ? &g_spans[parent_i] : NULL;
  g_span_t *t = &g_spans[g_n++];
  t->id = rnd() | 1;
  t->parent = parent ? parent->id : 0;
  t->root = parent ? parent->root : t->id;
  t->s = s;
  t->e = e;
  t->proc = proc;
  t->thread = thread;
  t->depth = parent ? parent->depth + 1 : 0;
  return t;
}

static void g_children(size_t pi, size_t limit) {
  g_span_t p = g_spans[pi];
  if (p.depth >= 3) return;
  int k = (int)(rnd() % 4);
  int64_t cur = p.s, room = p.e - p.s;
  for (int i = 0; i < k && g_n < limit; i++) {
    int64_t gap = (int64_t)(rnd() % (uint64_t)(room / 8 + 1));
    int64_t len = 1 + (int64_t)(rnd() % (uint64_t)(room / 3 + 1));
    if (cur + gap + len >= p.e) break;
    g_add(p.proc, p.thread, cur + gap, cur + gap + len, pi);
    size_t ci = g_n - 1;
    g_children(ci, limit);
    cur = g_spans[ci].e;
  }
}

/* Spans thread by thread, round robin over processes, until @p n exist. */
static void g_generate(size_t n) {
  int64_t cur[PROCS][THREADS];
  for (int p = 0; p < PROCS; p++)
    for (int t = 0; t < THREADS; t++)
      cur[p][t] = T0 + (int64_t)(rnd() % (uint64_t)MS);
  while (g_n < n) {
    for (int p = 0; p < PROCS && g_n < n; p++)
      for (int t = 0; t < THREADS && g_n < n; t++) {
        int64_t len = 2 * MS + (int64_t)(rnd() % (uint64_t)(23 * MS));
        g_add(p, t, cur[p][t], cur[p][t] + len, NO_PARENT);
        g_children(g_n - 1, n);
        cur[p][t] += len + (int64_t)(rnd() % (uint64_t)(2 * MS));
        if (cur[p][t] > g_end[p]) g_end[p] = cur[p][t];
      }
  }
}

/*
 * Spans without threads: @p procs processes, traces shaped like the load
 * generator's (a server span of 2-182 ms; a query over the first 40%, a call
 * over the next 40%, a cache read near the end), one starting every 25-75 us
 * per process, until @p n spans exist.
 */
static void g_generate_unthreaded(size_t n, int procs) {
  int64_t cur[PROCS];
  for (int p = 0; p < procs; p++)
    cur[p] = T0 + (int64_t)(rnd() % (uint64_t)MS);
  while (g_n < n) {
    for (int p = 0; p < procs && g_n < n; p++) {
      int64_t s = cur[p], dur = 2 * MS + (int64_t)(rnd() % (uint64_t)(180 * MS));
      g_add(p, -1, s, s + dur, NO_PARENT);
      size_t root = g_n - 1;
      int64_t d1s = s + dur / 20, d1e = d1s + dur * 2 / 5;
      int64_t h1s = d1e + dur / 50, h1e = h1s + dur * 2 / 5;
      int64_t c1s = h1e + dur / 100, c1e = c1s + dur / 50;
      g_add(p, -1, d1s, d1e, root);
      g_add(p, -1, h1s, h1e, root);
      g_add(p, -1, c1s, c1e, root);
      cur[p] += 25000 + (int64_t)(rnd() % 50000);
      if (cur[p] > g_end[p]) g_end[p] = cur[p];
    }
  }
}

static void g_reset(void) {
  g_n = 0;
  memset(g_end, 0, sizeof(g_end));
}

/* ---- encoded traces batches ---------------------------------------------------------- */

typedef struct enc_s {
  uint8_t *buf;
  size_t len;
  size_t spans;
} enc_t;

static void kv_s(b_kv_t *kv, b_any_t *v, const char *k, const char *s) {
  opentelemetry__proto__common__v1__key_value__init(kv);
  opentelemetry__proto__common__v1__any_value__init(v);
  kv->key = (char *)k;
  kv->value = v;
  v->value_case = OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_STRING_VALUE;
  v->string_value = (char *)s;
}

static void kv_i(b_kv_t *kv, b_any_t *v, const char *k, int64_t i) {
  opentelemetry__proto__common__v1__key_value__init(kv);
  opentelemetry__proto__common__v1__any_value__init(v);
  kv->key = (char *)k;
  kv->value = v;
  v->value_case = OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_INT_VALUE;
  v->int_value = i;
}

static const char *g_names[] = {"GET /api/items/{id}", "SELECT items",  "render", "cache.get",
                                "POST /api/orders",    "INSERT orders", "auth",   "serialize"};

static void be64(uint64_t v, uint8_t *o) {
  for (int i = 0; i < 8; i++)
    o[i] = (uint8_t)(v >> (56 - 8 * i));
}

/* Encodes spans [first, first+n) (all of process @p proc) as one request. */
static enc_t encode_batch(const g_span_t *const *spans, size_t n, int proc) {
  sp_arena_t *a = sp_arena_create(1 << 16);
  char inst[32];
  snprintf(inst, sizeof(inst), "instance-%d", proc);
  b_kv_t *rkv = sp_arena_alloc(a, 3 * sizeof(*rkv));
  b_any_t *rv = sp_arena_alloc(a, 3 * sizeof(*rv));
  b_kv_t **rkvp = sp_arena_alloc(a, 3 * sizeof(void *));
  char *svc = sp_arena_alloc(a, 32);
  snprintf(svc, 32, "service-%d", proc);
  kv_s(&rkv[0], &rv[0], "service.name", svc);
  kv_s(&rkv[1], &rv[1], "service.instance.id", inst);
  kv_s(&rkv[2], &rv[2], "host.name", "bench-host");
  for (int i = 0; i < 3; i++)
    rkvp[i] = &rkv[i];
  Opentelemetry__Proto__Resource__V1__Resource res;
  opentelemetry__proto__resource__v1__resource__init(&res);
  res.attributes = rkvp;
  res.n_attributes = 3;
  b_span_t **sp = sp_arena_alloc(a, n * sizeof(void *));
  for (size_t i = 0; i < n; i++) {
    const g_span_t *g = spans[i];
    b_span_t *s = sp_arena_alloc(a, sizeof(*s));
    opentelemetry__proto__trace__v1__span__init(s);
    uint8_t *ids = sp_arena_alloc(a, 32);
    be64(g->root * 0x9e3779b97f4a7c15ULL, ids);
    be64(g->root, ids + 8);
    be64(g->id, ids + 16);
    s->trace_id = (ProtobufCBinaryData){16, ids};
    s->span_id = (ProtobufCBinaryData){8, ids + 16};
    if (g->parent != 0) {
      be64(g->parent, ids + 24);
      s->parent_span_id = (ProtobufCBinaryData){8, ids + 24};
    }
    s->name = (char *)g_names[(g->id >> 8) % 8];
    s->kind = g->depth == 0 ? 2 : 1;
    s->start_time_unix_nano = (uint64_t)g->s;
    s->end_time_unix_nano = (uint64_t)g->e;
    b_kv_t *kv = sp_arena_alloc(a, 8 * sizeof(*kv));
    b_any_t *v = sp_arena_alloc(a, 8 * sizeof(*v));
    b_kv_t **kvp = sp_arena_alloc(a, 8 * sizeof(void *));
    kv_s(&kv[0], &v[0], "http.request.method", "GET");
    kv_s(&kv[1], &v[1], "http.route", "/api/items/{id}");
    kv_i(&kv[2], &v[2], "http.response.status_code", 200);
    kv_s(&kv[3], &v[3], "server.address", "items.internal");
    kv_i(&kv[4], &v[4], "server.port", 8080);
    kv_s(&kv[5], &v[5], "thread.name", "worker");
    kv_s(&kv[6], &v[6], "code.function", "handle");
    kv_i(&kv[7], &v[7], "thread.id", g->thread); /* last: left out for spans without a thread */
    for (int k = 0; k < 8; k++)
      kvp[k] = &kv[k];
    s->attributes = kvp;
    s->n_attributes = g->thread >= 0 ? 8 : 7;
    sp[i] = s;
  }
  Opentelemetry__Proto__Trace__V1__ScopeSpans ss;
  opentelemetry__proto__trace__v1__scope_spans__init(&ss);
  ss.spans = sp;
  ss.n_spans = n;
  Opentelemetry__Proto__Trace__V1__ScopeSpans *ssp = &ss;
  Opentelemetry__Proto__Trace__V1__ResourceSpans rs;
  opentelemetry__proto__trace__v1__resource_spans__init(&rs);
  rs.resource = &res;
  rs.scope_spans = &ssp;
  rs.n_scope_spans = 1;
  Opentelemetry__Proto__Trace__V1__ResourceSpans *rsp = &rs;
  sp_otlp_traces_req_t req;
  opentelemetry__proto__collector__trace__v1__export_trace_service_request__init(&req);
  req.resource_spans = &rsp;
  req.n_resource_spans = 1;
  enc_t e;
  e.spans = n;
  e.len = protobuf_c_message_get_packed_size(&req.base);
  e.buf = malloc(e.len);
  protobuf_c_message_pack(&req.base, e.buf);
  sp_arena_destroy(a);
  return e;
}

static enc_t *g_batches;
static size_t g_n_batches;

static void encode_all(void) {
  /* group spans per process, keeping generation order (roughly end-time order) */
  size_t cap = g_n / SPANS_PER_BATCH + PROCS + 1;
  g_batches = calloc(cap, sizeof(*g_batches));
  const g_span_t **buf = malloc(SPANS_PER_BATCH * sizeof(void *));
  for (int p = 0; p < PROCS; p++) {
    size_t k = 0;
    for (size_t i = 0; i < g_n; i++) {
      if (g_spans[i].proc != p) continue;
      buf[k++] = &g_spans[i];
      if (k == SPANS_PER_BATCH) {
        g_batches[g_n_batches++] = encode_batch(buf, k, p);
        k = 0;
      }
    }
    if (k > 0) g_batches[g_n_batches++] = encode_batch(buf, k, p);
  }
  free(buf);
}

static void free_batches(void) {
  for (size_t i = 0; i < g_n_batches; i++)
    free(g_batches[i].buf);
  free(g_batches);
  g_batches = NULL;
  g_n_batches = 0;
}

/*
 * As the batch processor hands them on: requests appended into a buffer
 * that doubles, so up to twice the bytes are allocated.
 */
static sp_traces_t **wrap_traces_grown(void) {
  sp_traces_t **out = malloc(g_n_batches * sizeof(*out));
  for (size_t i = 0; i < g_n_batches; i++) {
    size_t cap = 256;
    while (cap < g_batches[i].len + 1)
      cap *= 2;
    uint8_t *buf = sp_malloc(cap);
    memcpy(buf, g_batches[i].buf, g_batches[i].len);
    memset(buf + g_batches[i].len, 0, cap - g_batches[i].len); /* touched, as a reused heap is */
    out[i] = sp_traces_wrap(buf, g_batches[i].len, g_batches[i].spans);
    if (out[i] == NULL) exit(1);
  }
  return out;
}

static sp_traces_t **wrap_traces(void) {
  sp_traces_t **out = malloc(g_n_batches * sizeof(*out));
  char err[128];
  for (size_t i = 0; i < g_n_batches; i++)
    if (sp_traces_from_proto(g_batches[i].buf, g_batches[i].len, true, &out[i], err, sizeof(err)) !=
        0) {
      fprintf(stderr, "bad batch: %s\n", err);
      exit(1);
    }
  return out;
}

/* ---- encoded profiles ------------------------------------------------------------------- */

typedef struct penc_s {
  uint8_t *buf;
  size_t len;
  int proc;
  int64_t *times;
  int64_t *threads;
  size_t n;
} penc_t;

static penc_t *g_prof;
static size_t g_n_prof;

/* A random span of process @p p (by binary search over the generation order is not needed). */
static const g_span_t *pick_span(int p) {
  for (;;) {
    const g_span_t *s = &g_spans[rnd() % g_n];
    if (s->proc == p) return s;
  }
}

static penc_t encode_profile(int proc, bool by_id) {
  penc_t pe = {.proc = proc, .n = SAMPLES_PER_PROFILE};
  size_t n = SAMPLES_PER_PROFILE;
  sp_arena_t *a = sp_arena_create(1 << 16);
  const char *fixed[] = {"", "samples", "count", "cpu", "nanoseconds", "span_id", "main", "work"};
  size_t nf = sizeof(fixed) / sizeof(fixed[0]);
  char **strs = sp_arena_alloc(a, (nf + n) * sizeof(char *));
  for (size_t i = 0; i < nf; i++)
    strs[i] = (char *)fixed[i];
  size_t ns = nf;
  Perftools__Profiles__ValueType vt[2];
  Perftools__Profiles__ValueType *vtp[2] = {&vt[0], &vt[1]};
  perftools__profiles__value_type__init(&vt[0]);
  perftools__profiles__value_type__init(&vt[1]);
  vt[0].type = 1;
  vt[0].unit = 2;
  vt[1].type = 3;
  vt[1].unit = 4;
  Perftools__Profiles__Sample **sp = sp_arena_alloc(a, n * sizeof(void *));
  pe.times = malloc(n * sizeof(int64_t));
  pe.threads = malloc(n * sizeof(int64_t));
  for (size_t i = 0; i < n; i++) {
    Perftools__Profiles__Sample *s = sp_arena_alloc(a, sizeof(*s));
    perftools__profiles__sample__init(s);
    uint64_t *loc = sp_arena_alloc(a, 5 * sizeof(uint64_t));
    for (int k = 0; k < 5; k++)
      loc[k] = 1 + rnd() % 200;
    s->location_id = loc;
    s->n_location_id = 5;
    int64_t *val = sp_arena_alloc(a, 2 * sizeof(int64_t));
    val[0] = 1;
    val[1] = 10 * MS;
    s->value = val;
    s->n_value = 2;
    const g_span_t *g = pick_span(proc);
    int64_t t = g->s + (int64_t)(rnd() % (uint64_t)(g->e - g->s + 1));
    pe.times[i] = by_id ? 0 : t;
    pe.threads[i] = by_id ? -1 : g->thread;
    if (by_id) {
      char *hex = sp_arena_alloc(a, 17);
      snprintf(hex, 17, "%016llx", (unsigned long long)g->root);
      strs[ns] = hex;
      Perftools__Profiles__Label *l = sp_arena_alloc(a, sizeof(*l));
      perftools__profiles__label__init(l);
      l->key = 5;
      l->str = (int64_t)ns++;
      Perftools__Profiles__Label **lp = sp_arena_alloc(a, sizeof(void *));
      lp[0] = l;
      s->label = lp;
      s->n_label = 1;
    }
    sp[i] = s;
  }
  sp_pprof_t pp;
  perftools__profiles__profile__init(&pp);
  pp.sample_type = vtp;
  pp.n_sample_type = 2;
  pp.sample = sp;
  pp.n_sample = n;
  pp.string_table = strs;
  pp.n_string_table = ns;
  pe.len = protobuf_c_message_get_packed_size(&pp.base);
  pe.buf = malloc(pe.len);
  protobuf_c_message_pack(&pp.base, pe.buf);
  sp_arena_destroy(a);
  return pe;
}

static void encode_profiles(size_t samples, bool by_id) {
  g_n_prof = samples / SAMPLES_PER_PROFILE;
  g_prof = calloc(g_n_prof, sizeof(*g_prof));
  for (size_t i = 0; i < g_n_prof; i++)
    g_prof[i] = encode_profile((int)(i % PROCS), by_id);
}

static void free_profiles(void) {
  for (size_t i = 0; i < g_n_prof; i++) {
    free(g_prof[i].buf);
    free(g_prof[i].times);
    free(g_prof[i].threads);
  }
  free(g_prof);
}

static sp_profiles_t **wrap_profiles(bool side) {
  sp_profiles_t **out = malloc(g_n_prof * sizeof(*out));
  for (size_t i = 0; i < g_n_prof; i++) {
    penc_t *pe = &g_prof[i];
    char svc[32], inst[32];
    snprintf(svc, sizeof(svc), "service-%d", pe->proc);
    snprintf(inst, sizeof(inst), "instance-%d", pe->proc);
    sp_label_t l[3] = {
        {"__name__", "process_cpu"}, {"service_name", svc}, {"service_instance_id", inst}};
    out[i] = sp_profiles_create();
    sp_profile_t *p = sp_profiles_add(out[i], l, 3, T0, T0 + 10000 * MS, pe->buf, pe->len);
    if (side) {
      p->sample_time_ns = sp_arena_memdup(out[i]->arena, pe->times, pe->n * sizeof(int64_t));
      p->sample_thread = sp_arena_memdup(out[i]->arena, pe->threads, pe->n * sizeof(int64_t));
      p->n_ext = pe->n;
    }
  }
  return out;
}

/*
 * Profiles shaped like the load generator's (and bench_pprofwire's): a Go
 * service's CPU profile, LG_FUNCS functions with one location each, stacks
 * 8-40 frames deep, LG_SAMPLES samples of [samples/count, cpu/nanoseconds],
 * 80% of them with a span_id label (the local roots of LG_SPANS spans of
 * the process, as the load generator names the spans of one request),
 * about 125 KB. Wrapped as the Pyroscope receiver hands them to
 * the loop: indexed on the pool with labels pre-decoded (SP_PW_LABELS).
 */
#define LG_SAMPLES 1500
#define LG_FUNCS 480
#define LG_SPANS 32

static penc_t encode_profile_lg(int proc) {
  penc_t pe = {.proc = proc, .n = LG_SAMPLES};
  sp_arena_t *a = sp_arena_create(1 << 20);
  size_t cap = 16 + LG_FUNCS + LG_SPANS, ns = 0;
  char **strs = sp_arena_alloc(a, cap * sizeof(char *));
  const char *fixed[] = {"", "samples", "count", "cpu", "nanoseconds", "span_id",
                         "/usr/local/bin/service", "/go/src/example.com/service/handler.go"};
  for (size_t i = 0; i < sizeof(fixed) / sizeof(fixed[0]); i++)
    strs[ns++] = (char *)fixed[i];
  int64_t s_fn0 = (int64_t)ns;
  static const char *pkgs[] = {"net/http", "runtime", "encoding/json", "example.com/service/db",
                               "example.com/service/handlers", "github.com/lib/pq",
                               "compress/flate", "sync"};
  for (int i = 0; i < LG_FUNCS; i++) {
    char *b = sp_arena_alloc(a, 96);
    snprintf(b, 96, "%s.(*worker%d).Process%d", pkgs[i % 8], i % 17, i);
    strs[ns++] = b;
  }
  Perftools__Profiles__ValueType vt[2], *vtp[2] = {&vt[0], &vt[1]};
  perftools__profiles__value_type__init(&vt[0]);
  perftools__profiles__value_type__init(&vt[1]);
  vt[0].type = 1, vt[0].unit = 2, vt[1].type = 3, vt[1].unit = 4;
  Perftools__Profiles__ValueType pt;
  perftools__profiles__value_type__init(&pt);
  pt.type = 3, pt.unit = 4;
  Perftools__Profiles__Mapping map, *mapp = &map;
  perftools__profiles__mapping__init(&map);
  map.id = 1, map.memory_start = 0x400000, map.memory_limit = 0x2000000, map.filename = 6;
  map.has_functions = 1;
  Perftools__Profiles__Function *fn = sp_arena_alloc(a, LG_FUNCS * sizeof(*fn));
  Perftools__Profiles__Function **fnp = sp_arena_alloc(a, LG_FUNCS * sizeof(*fnp));
  Perftools__Profiles__Location *loc = sp_arena_alloc(a, LG_FUNCS * sizeof(*loc));
  Perftools__Profiles__Location **locp = sp_arena_alloc(a, LG_FUNCS * sizeof(*locp));
  Perftools__Profiles__Line *line = sp_arena_alloc(a, LG_FUNCS * sizeof(*line));
  Perftools__Profiles__Line **linep = sp_arena_alloc(a, LG_FUNCS * sizeof(*linep));
  for (int i = 0; i < LG_FUNCS; i++) {
    perftools__profiles__function__init(&fn[i]);
    fn[i].id = (uint64_t)i + 1, fn[i].name = s_fn0 + i, fn[i].system_name = s_fn0 + i;
    fn[i].filename = 7, fn[i].start_line = 10 + i;
    fnp[i] = &fn[i];
    perftools__profiles__line__init(&line[i]);
    line[i].function_id = (uint64_t)i + 1, line[i].line = 20 + (int64_t)(rnd() % 500);
    linep[i] = &line[i];
    perftools__profiles__location__init(&loc[i]);
    loc[i].id = (uint64_t)i + 1, loc[i].mapping_id = 1, loc[i].address = 0x401000 + 16 * (uint64_t)i;
    loc[i].line = &linep[i], loc[i].n_line = 1;
    locp[i] = &loc[i];
  }
  /* Like the load generator: the samples name the spans of one traces request. */
  int64_t s_root0 = (int64_t)ns;
  for (size_t i = 0; i < LG_SPANS; i++) {
    char *hex = sp_arena_alloc(a, 17);
    snprintf(hex, 17, "%016llx", (unsigned long long)pick_span(proc)->root);
    strs[ns++] = hex;
  }
  Perftools__Profiles__Sample **sp = sp_arena_alloc(a, LG_SAMPLES * sizeof(void *));
  for (size_t i = 0; i < LG_SAMPLES; i++) {
    Perftools__Profiles__Sample *smp = sp_arena_alloc(a, sizeof(*smp));
    perftools__profiles__sample__init(smp);
    size_t depth = 8 + rnd() % 33;
    uint64_t *ids = sp_arena_alloc(a, depth * sizeof(uint64_t));
    for (size_t d = 0; d < depth; d++)
      ids[d] = d + 4 < depth ? 1 + rnd() % LG_FUNCS : (uint64_t)(depth - d);
    smp->location_id = ids, smp->n_location_id = depth;
    int64_t *val = sp_arena_alloc(a, 2 * sizeof(int64_t));
    val[0] = 1 + (int64_t)(rnd() % 3), val[1] = val[0] * 10 * MS;
    smp->value = val, smp->n_value = 2;
    if (rnd() % 10 < 8) {
      Perftools__Profiles__Label *l = sp_arena_alloc(a, sizeof(*l));
      perftools__profiles__label__init(l);
      l->key = 5, l->str = s_root0 + (int64_t)(rnd() % LG_SPANS);
      Perftools__Profiles__Label **lp = sp_arena_alloc(a, sizeof(void *));
      lp[0] = l;
      smp->label = lp, smp->n_label = 1;
    }
    sp[i] = smp;
  }
  sp_pprof_t pp;
  perftools__profiles__profile__init(&pp);
  pp.sample_type = vtp, pp.n_sample_type = 2, pp.period_type = &pt, pp.period = 10 * MS;
  pp.time_nanos = T0, pp.duration_nanos = 10000 * MS;
  pp.mapping = &mapp, pp.n_mapping = 1;
  pp.function = fnp, pp.n_function = LG_FUNCS;
  pp.location = locp, pp.n_location = LG_FUNCS;
  pp.sample = sp, pp.n_sample = LG_SAMPLES;
  pp.string_table = strs, pp.n_string_table = ns;
  pe.len = protobuf_c_message_get_packed_size(&pp.base);
  pe.buf = malloc(pe.len);
  protobuf_c_message_pack(&pp.base, pe.buf);
  sp_arena_destroy(a);
  return pe;
}

static void encode_profiles_lg(size_t n) {
  g_n_prof = n;
  g_prof = calloc(g_n_prof, sizeof(*g_prof));
  for (size_t i = 0; i < g_n_prof; i++)
    g_prof[i] = encode_profile_lg((int)(i % PROCS));
}

/* One profile per batch, indexed with its labels pre-decoded as the receiver does on the pool. */
static sp_profiles_t **wrap_profiles_lg(void) {
  sp_profiles_t **out = wrap_profiles(false);
  for (size_t i = 0; i < g_n_prof; i++) {
    sp_profile_t *p = &out[i]->items[0];
    sp_pprof_wire_t *w = sp_arena_alloc(out[i]->arena, sizeof(*w));
    char err[256];
    if (w == NULL || sp_pprof_wire_index_ex(out[i]->arena, p->raw, p->raw_len,
                                            SP_PW_VALIDATE | SP_PW_LABELS, w, err,
                                            sizeof(err)) != 0 ||
        w->plabels == NULL) {
      fprintf(stderr, "loadgen-like profile: %s\n", err);
      exit(1);
    }
    p->wire = w;
  }
  return out;
}

/* ---- consumers ------------------------------------------------------------------------------ */

static size_t drained_spans, drained_profiles;

static int count_traces(sp_consumer_t *c, sp_traces_t *b) {
  (void)c;
  drained_spans += b->span_count;
  sp_traces_unref(b);
  return 0;
}

static int count_profiles(sp_consumer_t *c, sp_profiles_t *b) {
  (void)c;
  drained_profiles += b->n;
  sp_profiles_unref(b);
  return 0;
}

static sp_consumer_t g_counter = {count_traces, count_profiles};

static int decode_traces(sp_consumer_t *c, sp_traces_t *b) {
  (void)c;
  if (sp_traces_request(b) == NULL) abort();
  return count_traces(c, b);
}

static int decode_profiles(sp_consumer_t *c, sp_profiles_t *b) {
  for (size_t i = 0; i < b->n; i++)
    if (sp_profile_decode(b, &b->items[i]) == NULL) abort();
  return count_profiles(c, b);
}

static sp_consumer_t g_decoder = {decode_traces, decode_profiles};

/* ---- the processor ----------------------------------------------------------------------------
 */

typedef struct proc_s {
  uv_loop_t loop;
  sp_host_t host;
  sp_telemetry_t *tel;
  const sp_component_def_t *def;
  void *cfg;
  sp_component_t *comp;
  sp_consumer_t *in_t, *in_p;
  bool done;
} proc_t;

static void proc_make(proc_t *p, const char *yaml) {
  memset(p, 0, sizeof(*p));
  uv_loop_init(&p->loop);
  p->tel = sp_telemetry_create();
  p->host.loop = &p->loop;
  p->host.telemetry = p->tel;
  p->def = sp_registry_find(SP_KIND_PROCESSOR, "spanprofile", 11);
  sp_errors_t errs = {0};
  sp_config_doc_t *doc = NULL;
  p->cfg = sp_calloc(1, p->def->config_size);
  if (sp_config_load_string("bench.yaml", yaml, strlen(yaml), &doc, &errs) != 0 ||
      sp_cfg_decode(p->def->schema, doc->root, "spanprofile", NULL, p->cfg, &errs) != 0) {
    sp_errors_print(&errs, 2);
    exit(1);
  }
  sp_errors_free(&errs);
  sp_config_doc_free(doc);
  sp_create_settings_t set = {.host = &p->host, .id = "spanprofile"};
  if (p->def->create(&set, p->cfg, &p->comp) != 0) exit(1);
  p->comp->def = p->def;
  p->comp->host = &p->host;
  p->comp->id = "spanprofile";
  p->comp->config = p->cfg;
  p->def->attach(p->comp, SP_SIGNAL_TRACES, &g_counter, &p->in_t);
  p->def->attach(p->comp, SP_SIGNAL_PROFILES, &g_counter, &p->in_p);
  p->def->start(p->comp);
}

static uint64_t proc_metric(proc_t *p, const char *name, const char *extra) {
  char labels[128];
  snprintf(labels, sizeof(labels), "processor=\"spanprofile\"%s%s", extra ? "," : "",
           extra ? extra : "");
  return sp_telemetry_value(p->tel, name, labels);
}

static void proc_done(void *arg) { ((proc_t *)arg)->done = true; }

static uint64_t last_window_joined; /* of the last instance stopped */
static size_t last_heap_freed;      /* heap bytes the last instance held until it stopped */

/* Shuts down (resolving and emitting everything held); returns the seconds it took. */
static double proc_stop(proc_t *p) {
  size_t heap0 = heap_inuse();
  double t0 = now_s();
  p->host.drain_deadline = uv_now(&p->loop) + 1000;
  p->def->shutdown(p->comp, proc_done, p);
  while (!p->done)
    uv_run(&p->loop, UV_RUN_ONCE);
  double dt = now_s() - t0;
  last_window_joined = proc_metric(p, "spanprof_processor_spanprofile_samples_joined_total",
                                   "method=\"thread_time\"");
  p->def->destroy(p->comp);
  sp_cfg_free(p->def->schema, p->cfg);
  sp_free(p->cfg);
  uv_run(&p->loop, UV_RUN_DEFAULT);
  uv_loop_close(&p->loop);
  sp_telemetry_destroy(p->tel);
  size_t heap1 = heap_inuse();
  last_heap_freed = heap0 > heap1 ? heap0 - heap1 : 0;
  return dt;
}

/* ---- runs
 * ------------------------------------------------------------------------------------------ */

typedef struct row_s {
  const char *what;
  size_t items;
  double secs;
  double bytes_per_span; /* held_bytes / held spans; < 0: not applicable */
  double heap_per_span;  /* heap the instance gave back at shutdown / held spans; < 0: n/a */
} row_t;

static row_t rows[32];
static size_t n_rows;

static row_t *row(const char *what, size_t items, double secs, double bps) {
  rows[n_rows] = (row_t){what, items, secs, bps, -1};
  return &rows[n_rows++];
}

static double feed_traces(sp_consumer_t *c, sp_traces_t **b) {
  double t0 = now_s();
  for (size_t i = 0; i < g_n_batches; i++)
    sp_consume_traces(c, b[i]);
  return now_s() - t0;
}

static double feed_profiles(sp_consumer_t *c, sp_profiles_t **b) {
  double t0 = now_s();
  for (size_t i = 0; i < g_n_prof; i++)
    sp_consume_profiles(c, b[i]);
  return now_s() - t0;
}

/*
 * Loadgen-like profiles by span ID (scenario 4's shape), labels
 * pre-decoded: what the join costs the event loop per profile. Needs the
 * spans indexed (g_batches).
 */
static void run_lg(size_t n_samples, const char *yaml, size_t *n_lg_out, size_t *bytes_out,
                   uint64_t *by_id_out, double *pass_out, double *join_out) {
  size_t n_lg = n_samples / LG_SAMPLES / 2 < 300 ? n_samples / LG_SAMPLES / 2 : 300;
  if (n_lg == 0) n_lg = 1;
  uint64_t rng_saved = rng; /* the rows after this one see the data they saw before it */
  encode_profiles_lg(n_lg);
  size_t ns_lg = n_lg * LG_SAMPLES;
  *bytes_out = g_prof[0].len;
  sp_profiles_t **pb = wrap_profiles_lg();
  double lg_pass = feed_profiles(&g_counter, pb);
  row("loadgen-like profiles: pass-through (baseline)", ns_lg, lg_pass, -1);
  free(pb);
  proc_t p;
  proc_make(&p, yaml);
  sp_traces_t **tb = wrap_traces();
  feed_traces(p.in_t, tb);
  free(tb);
  pb = wrap_profiles_lg();
  double lg_join = feed_profiles(p.in_p, pb);
  *by_id_out =
      proc_metric(&p, "spanprof_processor_spanprofile_samples_joined_total", "method=\"span_id\"");
  row("loadgen-like profiles: join by span ID, labels pre-decoded (read keys + resolve + splice)",
      ns_lg, lg_join, -1);
  free(pb);
  proc_stop(&p);
  free_profiles();
  rng = rng_saved;
  *n_lg_out = n_lg;
  *pass_out = lg_pass;
  *join_out = lg_join;
}

int main(int argc, char **argv) {
  size_t n_spans = argc > 1 ? strtoull(argv[1], NULL, 10) : 200000;
  size_t n_samples = argc > 2 ? strtoull(argv[2], NULL, 10) : 1000000;
  sp_log_set_level(SP_LOG_WARN);
  g_generate(n_spans);
  encode_all();
  size_t raw = 0;
  for (size_t i = 0; i < g_n_batches; i++)
    raw += g_batches[i].len;
  const char *big = "wait: 1h\nmax_held_spans: 100000000\nmax_held_bytes: 1000GiB\n";
  char yaml[256];
  if (argc > 3 && strcmp(argv[3], "lg") == 0) {
    /* only the loadgen-like rows (for profiling the join's loop part) */
    size_t n_lg, lg_bytes;
    uint64_t lg_by_id;
    double lg_pass, lg_join;
    double best = -1, med[5];
    for (int rep = 0; rep < 5; rep++) {
      run_lg(n_samples, big, &n_lg, &lg_bytes, &lg_by_id, &lg_pass, &lg_join);
      med[rep] = (lg_join - lg_pass) / (double)n_lg * 1e6;
      if (best < 0 || med[rep] < best) best = med[rep];
    }
    for (int a = 1; a < 5; a++) /* insertion sort for the median */
      for (int b = a; b > 0 && med[b - 1] > med[b]; b--) {
        double t = med[b];
        med[b] = med[b - 1];
        med[b - 1] = t;
      }
    printf("loadgen-like: %zu profiles of %d samples (%zu bytes), %llu samples joined by span ID; "
           "join over the pass-through: best %.1f us, median %.1f us per profile (5 runs)\n",
           n_lg, LG_SAMPLES, lg_bytes, (unsigned long long)lg_by_id, best, med[2]);
    free_batches();
    free(g_spans);
    return 0;
  }

  /* traces: baselines, then the join keeping only its index, then holding batches too */
  sp_traces_t **tb = wrap_traces();
  row("traces: pass-through (baseline)", g_n, feed_traces(&g_counter, tb), -1);
  free(tb);
  tb = wrap_traces();
  row("traces: protobuf-c decode only (baseline)", g_n, feed_traces(&g_decoder, tb), -1);
  free(tb);

  proc_t p;
  snprintf(yaml, sizeof(yaml), "%sprofile_id_attribute: none\n", big);
  proc_make(&p, yaml);
  tb = wrap_traces();
  double dt = feed_traces(p.in_t, tb);
  uint64_t held = proc_metric(&p, "spanprof_processor_spanprofile_held_spans", NULL);
  uint64_t bytes = proc_metric(&p, "spanprof_processor_spanprofile_held_bytes", NULL);
  row_t *r = row("traces: join, index only (profile_id_attribute: none)", g_n, dt,
                 held ? (double)bytes / (double)held : 0);
  double teardown = proc_stop(&p);
  r->heap_per_span = held ? (double)last_heap_freed / (double)held : 0;
  row("  index teardown at shutdown", g_n, teardown, -1);
  free(tb);

  snprintf(yaml, sizeof(yaml), "%sspan_cpu_attributes: true\n", big);
  proc_make(&p, yaml);
  tb = wrap_traces();
  dt = feed_traces(p.in_t, tb);
  held = proc_metric(&p, "spanprof_processor_spanprofile_held_spans", NULL);
  bytes = proc_metric(&p, "spanprof_processor_spanprofile_held_bytes", NULL);
  r = row("traces: join, batches held (span_cpu_attributes: true)", g_n, dt,
          held ? (double)bytes / (double)held : 0);
  dt = proc_stop(&p);
  r->heap_per_span = held ? (double)last_heap_freed / (double)held : 0;
  row("  flush at shutdown (no samples joined)", g_n, dt, -1);
  free(tb);

  /* samples by span ID, against the indexed spans */
  encode_profiles(n_samples, true);
  size_t ns = g_n_prof * SAMPLES_PER_PROFILE;
  sp_profiles_t **pb = wrap_profiles(false);
  row("profiles: pass-through (baseline)", ns, feed_profiles(&g_counter, pb), -1);
  free(pb);
  pb = wrap_profiles(false);
  row("profiles: pprof decode only (baseline)", ns, feed_profiles(&g_decoder, pb), -1);
  free(pb);
  snprintf(yaml, sizeof(yaml), "%sprofile_id_attribute: none\n", big);
  proc_make(&p, yaml);
  tb = wrap_traces();
  feed_traces(p.in_t, tb);
  free(tb);
  pb = wrap_profiles(false);
  dt = feed_profiles(p.in_p, pb);
  uint64_t by_id =
      proc_metric(&p, "spanprof_processor_spanprofile_samples_joined_total", "method=\"span_id\"");
  row("profiles: join by span ID (decode + join + labels)", ns, dt, -1);
  free(pb);
  proc_stop(&p);
  free_profiles();

  /*
   * samples by thread and time. With profile_id_attribute: none a sample is
   * resolved once, when its profile leaves (here: at shutdown, which also
   * tears the span index down; that part, measured above, is subtracted).
   * With the default local_roots, held span batches are credited by a
   * tentative resolution on arrival as well.
   */
  encode_profiles(n_samples, false);
  snprintf(yaml, sizeof(yaml), "%sprofile_id_attribute: none\n", big);
  proc_make(&p, yaml);
  tb = wrap_traces();
  feed_traces(p.in_t, tb);
  free(tb);
  pb = wrap_profiles(true);
  double arrive = feed_profiles(p.in_p, pb);
  row("profiles: thread+time, on arrival (decode, read keys, hold)", ns, arrive, -1);
  uint64_t held_samples = proc_metric(&p, "spanprof_processor_spanprofile_held_samples", NULL);
  double stop = proc_stop(&p);
  double final = stop - teardown > 0 ? stop - teardown : stop;
  row("profiles: thread+time, final resolution + labels", ns, final, -1);
  row("profiles: thread+time, total (profile_id_attribute: none)", ns, arrive + final, -1);
  free(pb);

  proc_make(&p, big);
  tb = wrap_traces();
  feed_traces(p.in_t, tb);
  free(tb);
  pb = wrap_profiles(true);
  double arrive_t = feed_profiles(p.in_p, pb);
  row("profiles: thread+time, on arrival with tentative credit (local_roots)", ns, arrive_t, -1);
  row("profiles: thread+time, total (local_roots: tentative + final)", ns, arrive_t + final, -1);
  proc_stop(&p);
  uint64_t by_window = last_window_joined;
  free(pb);
  free_profiles();

  size_t n_lg = 0, lg_bytes = 0;
  uint64_t lg_by_id = 0;
  double lg_pass = 0, lg_join = 0;
  run_lg(n_samples, big, &n_lg, &lg_bytes, &lg_by_id, &lg_pass, &lg_join);

  size_t thr_n = g_n, thr_batches = g_n_batches;
  free_batches();

  /*
   * Spans without thread.id, U_PROCS processes: index everything, then keep
   * the span bound full (every batch evicts the oldest), then hold batches
   * under a byte bound and compare held_bytes with the heap.
   */
  g_reset();
  g_generate_unthreaded(n_spans, U_PROCS);
  encode_all();
  snprintf(yaml, sizeof(yaml), "%sprofile_id_attribute: none\n", big);
  proc_make(&p, yaml);
  tb = wrap_traces();
  dt = feed_traces(p.in_t, tb);
  held = proc_metric(&p, "spanprof_processor_spanprofile_held_spans", NULL);
  bytes = proc_metric(&p, "spanprof_processor_spanprofile_held_bytes", NULL);
  r = row("no thread.id: join, index only (profile_id_attribute: none)", g_n, dt,
          held ? (double)bytes / (double)held : 0);
  dt = proc_stop(&p);
  r->heap_per_span = held ? (double)last_heap_freed / (double)held : 0;
  row("  index teardown at shutdown", g_n, dt, -1);
  free(tb);

  snprintf(yaml, sizeof(yaml), "wait: 1h\nmax_held_spans: %zu\nmax_held_bytes: 1000GiB\n",
           n_spans / 10);
  proc_make(&p, yaml);
  tb = wrap_traces();
  dt = feed_traces(p.in_t, tb);
  uint64_t evicted = proc_metric(&p, "spanprof_processor_spanprofile_evicted_spans_total", NULL);
  row("no thread.id: join, span bound full (max_held_spans: spans/10, local_roots)", g_n, dt, -1);
  proc_stop(&p);
  free(tb);

  const size_t bound = 16u << 20;
  snprintf(yaml, sizeof(yaml), "wait: 1h\nmax_held_spans: 100000000\nmax_held_bytes: %zu\n", bound);
  proc_make(&p, yaml);
  tb = wrap_traces_grown();
  dt = feed_traces(p.in_t, tb);
  held = proc_metric(&p, "spanprof_processor_spanprofile_held_spans", NULL);
  uint64_t bound_bytes = proc_metric(&p, "spanprof_processor_spanprofile_held_bytes", NULL);
  r = row("no thread.id: join, byte bound full (max_held_bytes: 16MiB, local_roots, batches "
          "grown by doubling)",
          g_n, dt, held ? (double)bound_bytes / (double)held : 0);
  proc_stop(&p);
  size_t bound_heap = last_heap_freed;
  r->heap_per_span = held ? (double)bound_heap / (double)held : 0;
  free(tb);

  printf("\n%zu spans in %zu batches (%.0f bytes/span encoded), %zu processes x %d threads; "
         "%zu samples in profiles of %d\n\n",
         thr_n, thr_batches, (double)raw / (double)thr_n, (size_t)PROCS, THREADS, ns,
         SAMPLES_PER_PROFILE);
  printf(
      "then %zu spans in %zu batches without thread.id, %d processes (rows \"no thread.id\")\n\n",
      g_n, g_n_batches, U_PROCS);
  printf("| run | items | seconds | items/s | held_bytes per span | heap per span |\n");
  printf("|---|---:|---:|---:|---:|---:|\n");
  for (size_t i = 0; i < n_rows; i++) {
    char bps[32] = "", hps[32] = "";
    if (rows[i].bytes_per_span >= 0) snprintf(bps, sizeof(bps), "%.0f", rows[i].bytes_per_span);
    if (rows[i].heap_per_span >= 0) snprintf(hps, sizeof(hps), "%.0f", rows[i].heap_per_span);
    printf("| %s | %zu | %.3f | %.0f | %s | %s |\n", rows[i].what, rows[i].items, rows[i].secs,
           rows[i].secs > 0 ? (double)rows[i].items / rows[i].secs : 0, bps, hps);
  }
  printf("\nchecks: %llu samples joined by span ID of %zu; %llu samples held before the final "
         "resolution; %zu spans and %zu profiles reached the next stage\n",
         (unsigned long long)by_id, ns, (unsigned long long)held_samples, drained_spans,
         drained_profiles);
  printf("checks: %llu samples joined by thread+time of %zu\n", (unsigned long long)by_window, ns);
  printf("loadgen-like: %zu profiles of %d samples (%zu bytes), %llu samples joined by span ID; "
         "join %.1f us per profile over the pass-through's %.1f us\n",
         n_lg, LG_SAMPLES, lg_bytes, (unsigned long long)lg_by_id,
         (lg_join - lg_pass) / (double)n_lg * 1e6, lg_pass / (double)n_lg * 1e6);
  printf("checks: no thread.id: %llu spans evicted by the span bound; under max_held_bytes %zu "
         "the gauge said %llu and the instance gave back %zu heap bytes at shutdown (%.2fx)\n",
         (unsigned long long)evicted, bound, (unsigned long long)bound_bytes, bound_heap,
         bound_bytes ? (double)bound_heap / (double)bound_bytes : 0);
  free_batches();
  free(g_spans);
  return 0;
}
