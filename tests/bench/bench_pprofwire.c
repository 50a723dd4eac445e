/*
 * bench_pprofwire — what the profile path pays per pprof, decoded versus on
 * the wire (pipeline/pprofwire.h), on a profile shaped like the load
 * generator's: a Go service's 10 s CPU profile, ~300 functions, stacks 8-40
 * frames deep, 1,500 samples of [samples/count, cpu/nanoseconds], 80% of them
 * with a span_id label (about 125 KB uncompressed).
 *
 * Reading:  sp_pprof_decode (scan + unpack + validate, what the receiver did),
 *           protobuf-c unpack + sp_pprof_validate,
 *           sp_pprof_wire_index(validate=true) and (validate=false), and
 *           validating with SP_PW_LABELS (labels pre-decoded, keys
 *           summarised: what the receiver does on the pool);
 *           every sample's labels read from the bytes versus from the
 *           pre-decoded labels (what the join and exporter do on the loop).
 * Writing:  after adding span_name and trace_id labels to every sample with
 *           a span_id: protobuf-c get_packed_size + pack of the edited
 *           profile, versus the splice (labels added + finish) and finish
 *           alone, and sp_pprof_splice_finish_indexed alone (output indexed,
 *           labels and key summary extended), and with
 *           sp_pprof_splice_finish_indexed_ex without SP_PW_LABELS (key
 *           summary only: what the join does); and the join's whole write on
 *           pre-decoded labels (each span's own name and trace ID) as it
 *           was (a call per sample, finish_indexed) and is (a label group
 *           per span, finish_indexed_ex without labels).
 * Times are CPU time of this thread per profile; ratios are against the
 * decoded baseline measured in the same run.
 *
 * The validating index with SP_PW_LABELS (the pool's per-profile work) is
 * also timed on a second profile built the way spanprof-loadgen builds its
 * own: 480 functions with one location each (so location IDs are 1-2 byte
 * varints), 420 stacks 8-40 deep made of a serving chain and a random walk,
 * samples skewed to the first stacks, 80% with a span_id label naming one
 * of 32 span-ID strings at the end of the table (~125 KB). `index` as the
 * second argument times only the validating index on both profiles
 * (fastest of 5 rounds each), `index-lg` on the loadgen-shaped one only
 * (one round; for perf).
 *
 *   bench_pprofwire [iterations] [index | index-lg]   (default 400)
 */
#include "perftools/profiles/profile.pb-c.h"
#include "pipeline/alloc.h"
#include "pipeline/arena.h"
#include "pipeline/error.h"
#include "pipeline/pprof.h"
#include "pipeline/pprofwire.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define N_SAMPLES 1500
#define N_FUNCS 300
#define N_LOCS 2400
#define N_SPANS 64

static double now_cpu(void) {
  struct timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static uint64_t g_rng = 0x2545f4914f6cdd1dull;
static uint32_t rnd(uint32_t n) {
  g_rng ^= g_rng << 13;
  g_rng ^= g_rng >> 7;
  g_rng ^= g_rng << 17;
  return (uint32_t)(g_rng % n);
}

/* Builds and packs the profile (malloc'd bytes). */
static uint8_t *build_profile(size_t *len) {
  size_t n_str = 0, cap_str = 8 + N_FUNCS + N_SPANS + 8;
  char **strs = calloc(cap_str, sizeof(char *));
  strs[n_str++] = strdup("");
  int64_t s_samples = (int64_t)n_str;
  strs[n_str++] = strdup("samples");
  int64_t s_count = (int64_t)n_str;
  strs[n_str++] = strdup("count");
  int64_t s_cpu = (int64_t)n_str;
  strs[n_str++] = strdup("cpu");
  int64_t s_ns = (int64_t)n_str;
  strs[n_str++] = strdup("nanoseconds");
  int64_t s_span_id = (int64_t)n_str;
  strs[n_str++] = strdup("span_id");
  int64_t s_bin = (int64_t)n_str;
  strs[n_str++] = strdup("/usr/local/bin/service");
  int64_t s_file0 = (int64_t)n_str;
  strs[n_str++] = strdup("/go/src/example.com/service/internal/handlers/handler.go");
  int64_t s_fn0 = (int64_t)n_str;
  static const char *pkgs[] = {"net/http", "runtime", "encoding/json", "example.com/service/internal/db",
                               "example.com/service/internal/handlers", "github.com/lib/pq",
                               "compress/flate", "sync"};
  for (int i = 0; i < N_FUNCS; i++) {
    char b[128];
    snprintf(b, sizeof(b), "%s.(*worker%d).Process%d", pkgs[i % 8], i % 17, i);
    strs[n_str++] = strdup(b);
  }
  int64_t s_span0 = (int64_t)n_str;
  for (int i = 0; i < N_SPANS; i++) {
    char b[32];
    snprintf(b, sizeof(b), "%016llx", (unsigned long long)(0x1000000000000000ull + 7919ull * (unsigned)i));
    strs[n_str++] = strdup(b);
  }
  Perftools__Profiles__Profile p = PERFTOOLS__PROFILES__PROFILE__INIT;
  Perftools__Profiles__ValueType vt[2], *vtp[2], pt = PERFTOOLS__PROFILES__VALUE_TYPE__INIT;
  for (int i = 0; i < 2; i++) {
    perftools__profiles__value_type__init(&vt[i]);
    vtp[i] = &vt[i];
  }
  vt[0].type = s_samples, vt[0].unit = s_count, vt[1].type = s_cpu, vt[1].unit = s_ns;
  pt.type = s_cpu, pt.unit = s_ns;
  p.sample_type = vtp, p.n_sample_type = 2, p.period_type = &pt, p.period = 10000000;
  p.time_nanos = 1700000000000000000LL, p.duration_nanos = 10000000000LL;
  Perftools__Profiles__Mapping map = PERFTOOLS__PROFILES__MAPPING__INIT, *mapp = &map;
  map.id = 1, map.memory_start = 0x400000, map.memory_limit = 0x2000000, map.filename = s_bin;
  map.has_functions = 1;
  p.mapping = &mapp, p.n_mapping = 1;
  Perftools__Profiles__Function *fn = calloc(N_FUNCS, sizeof(*fn)), **fnp = calloc(N_FUNCS, sizeof(*fnp));
  for (int i = 0; i < N_FUNCS; i++) {
    perftools__profiles__function__init(&fn[i]);
    fn[i].id = (uint64_t)i + 1, fn[i].name = s_fn0 + i, fn[i].system_name = s_fn0 + i;
    fn[i].filename = s_file0, fn[i].start_line = 10 + i;
    fnp[i] = &fn[i];
  }
  p.function = fnp, p.n_function = N_FUNCS;
  Perftools__Profiles__Location *loc = calloc(N_LOCS, sizeof(*loc)), **locp = calloc(N_LOCS, sizeof(*locp));
  Perftools__Profiles__Line *line = calloc(N_LOCS, sizeof(*line)), **linep = calloc(N_LOCS, sizeof(*linep));
  for (int i = 0; i < N_LOCS; i++) {
    perftools__profiles__location__init(&loc[i]);
    perftools__profiles__line__init(&line[i]);
    line[i].function_id = 1 + (uint64_t)rnd(N_FUNCS), line[i].line = 20 + rnd(500);
    linep[i] = &line[i];
    loc[i].id = (uint64_t)i + 1, loc[i].mapping_id = 1, loc[i].address = 0x401000 + 16 * (uint64_t)i;
    loc[i].line = &linep[i], loc[i].n_line = 1;
    locp[i] = &loc[i];
  }
  p.location = locp, p.n_location = N_LOCS;
  Perftools__Profiles__Sample *smp = calloc(N_SAMPLES, sizeof(*smp)), **smpp = calloc(N_SAMPLES, sizeof(*smpp));
  Perftools__Profiles__Label *lab = calloc(N_SAMPLES, sizeof(*lab)), **labp = calloc(N_SAMPLES, sizeof(*labp));
  uint64_t *ids = calloc(N_SAMPLES * 40, sizeof(uint64_t));
  int64_t *vals = calloc(N_SAMPLES * 2, sizeof(int64_t));
  for (int i = 0; i < N_SAMPLES; i++) {
    perftools__profiles__sample__init(&smp[i]);
    size_t depth = 8 + rnd(25);
    /* Stacks share their root part (net/http serving), like real ones. */
    for (size_t d = 0; d < depth; d++)
      ids[i * 40 + d] = d + 4 < depth ? 1 + rnd(N_LOCS) : (uint64_t)(depth - d);
    smp[i].location_id = &ids[i * 40], smp[i].n_location_id = depth;
    vals[2 * i] = 1 + rnd(3), vals[2 * i + 1] = vals[2 * i] * 10000000;
    smp[i].value = &vals[2 * i], smp[i].n_value = 2;
    if (rnd(10) < 8) {
      perftools__profiles__label__init(&lab[i]);
      lab[i].key = s_span_id, lab[i].str = s_span0 + rnd(N_SPANS);
      labp[i] = &lab[i];
      smp[i].label = &labp[i], smp[i].n_label = 1;
    }
    smpp[i] = &smp[i];
  }
  p.sample = smpp, p.n_sample = N_SAMPLES;
  p.string_table = strs, p.n_string_table = n_str;
  *len = perftools__profiles__profile__get_packed_size(&p);
  uint8_t *out = malloc(*len);
  perftools__profiles__profile__pack(&p, out);
  for (size_t i = 0; i < n_str; i++)
    free(strs[i]);
  free(strs), free(fn), free(fnp), free(loc), free(locp), free(line), free(linep), free(smp);
  free(smpp), free(lab), free(labp), free(ids), free(vals);
  return out;
}

/*
 * A profile shaped like spanprof-loadgen's (see the header comment); the
 * string contents differ, the sizes and ID ranges do not.
 */
static uint8_t *build_profile_lg(size_t *len) {
  enum { LG_FUNCS = 480, LG_STACKS = 420, LG_SPANS = 32 };
  Perftools__Profiles__Profile p = PERFTOOLS__PROFILES__PROFILE__INIT;
  size_t n_str = 0;
  char **strs = calloc(LG_FUNCS * 2 + 16 + LG_SPANS, sizeof(char *));
  static const char *fixed[] = {"", "samples", "count", "cpu", "nanoseconds", "span_id",
                                "/usr/local/bin/shop-api", "a3f1c2d4e5b60718293a4b5c6d7e8f9011223344"};
  for (size_t i = 0; i < sizeof(fixed) / sizeof(fixed[0]); i++)
    strs[n_str++] = strdup(fixed[i]);
  Perftools__Profiles__ValueType vt[2], *vtp[2], pt = PERFTOOLS__PROFILES__VALUE_TYPE__INIT;
  for (int i = 0; i < 2; i++) {
    perftools__profiles__value_type__init(&vt[i]);
    vtp[i] = &vt[i];
  }
  vt[0].type = 1, vt[0].unit = 2, vt[1].type = 3, vt[1].unit = 4, pt.type = 3, pt.unit = 4;
  p.sample_type = vtp, p.n_sample_type = 2, p.period_type = &pt, p.period = 10000000;
  Perftools__Profiles__Mapping map = PERFTOOLS__PROFILES__MAPPING__INIT, *mapp = &map;
  map.id = 1, map.memory_start = 0x400000, map.memory_limit = 0x1c00000, map.filename = 6;
  map.build_id = 7, map.has_functions = map.has_filenames = map.has_line_numbers = 1;
  p.mapping = &mapp, p.n_mapping = 1;
  Perftools__Profiles__Function *fn = calloc(LG_FUNCS, sizeof(*fn)), **fnp = calloc(LG_FUNCS, sizeof(*fnp));
  Perftools__Profiles__Location *loc = calloc(LG_FUNCS, sizeof(*loc)), **locp = calloc(LG_FUNCS, sizeof(*locp));
  Perftools__Profiles__Line *line = calloc(LG_FUNCS, sizeof(*line)), **linep = calloc(LG_FUNCS, sizeof(*linep));
  for (int i = 0; i < LG_FUNCS; i++) {
    char b[128];
    snprintf(b, sizeof(b), "github.com/shop/orders.(*Cart%d).process%d", i % 12, i);
    perftools__profiles__function__init(&fn[i]);
    fn[i].id = (uint64_t)i + 1, fn[i].name = fn[i].system_name = (int64_t)n_str;
    strs[n_str++] = strdup(b);
    snprintf(b, sizeof(b), "/src/github.com/shop/orders/cart%d.go", i % 12);
    fn[i].filename = (int64_t)n_str;
    strs[n_str++] = strdup(b);
    fn[i].start_line = 20 + (i * 37) % 900;
    fnp[i] = &fn[i];
    perftools__profiles__line__init(&line[i]);
    line[i].function_id = fn[i].id, line[i].line = fn[i].start_line + rnd(60);
    linep[i] = &line[i];
    perftools__profiles__location__init(&loc[i]);
    loc[i].id = (uint64_t)i + 1, loc[i].mapping_id = 1, loc[i].address = 0x401000 + (uint64_t)i * 0x1a3;
    loc[i].line = &linep[i], loc[i].n_line = 1;
    locp[i] = &loc[i];
  }
  p.function = fnp, p.n_function = LG_FUNCS, p.location = locp, p.n_location = LG_FUNCS;
  static uint64_t stacks[LG_STACKS][40];
  static size_t depth[LG_STACKS];
  for (int k = 0; k < LG_STACKS; k++) {
    size_t d = 8 + rnd(33);
    for (size_t j = 0; j < 4; j++)
      stacks[k][d - 1 - j] = j + 1;
    uint64_t cur = 5 + rnd(60);
    for (size_t j = 4; j < d; j++) {
      stacks[k][d - 1 - j] = cur;
      cur = 5 + (cur + rnd(40)) % (LG_FUNCS - 5);
    }
    depth[k] = d;
  }
  int64_t s_span0 = (int64_t)n_str;
  for (int i = 0; i < LG_SPANS; i++) {
    char b[32];
    snprintf(b, sizeof(b), "%016llx", (unsigned long long)(0x3000000000000000ull + 104729ull * (unsigned)i));
    strs[n_str++] = strdup(b);
  }
  Perftools__Profiles__Sample *smp = calloc(N_SAMPLES, sizeof(*smp)), **smpp = calloc(N_SAMPLES, sizeof(*smpp));
  Perftools__Profiles__Label *lab = calloc(N_SAMPLES, sizeof(*lab)), **labp = calloc(N_SAMPLES, sizeof(*labp));
  int64_t *vals = calloc(N_SAMPLES * 2, sizeof(int64_t));
  for (int i = 0; i < N_SAMPLES; i++) {
    perftools__profiles__sample__init(&smp[i]);
    uint64_t r = rnd(LG_STACKS);
    size_t k = (size_t)(r * r / LG_STACKS);
    smp[i].location_id = stacks[k], smp[i].n_location_id = depth[k];
    vals[2 * i] = 1 + (rnd(4) == 0), vals[2 * i + 1] = vals[2 * i] * 10000000;
    smp[i].value = &vals[2 * i], smp[i].n_value = 2;
    if (rnd(5) != 0) {
      perftools__profiles__label__init(&lab[i]);
      lab[i].key = 5, lab[i].str = s_span0 + rnd(LG_SPANS);
      labp[i] = &lab[i];
      smp[i].label = &labp[i], smp[i].n_label = 1;
    }
    smpp[i] = &smp[i];
  }
  p.sample = smpp, p.n_sample = N_SAMPLES;
  p.string_table = strs, p.n_string_table = n_str;
  p.time_nanos = 1700000000000000000LL, p.duration_nanos = 10000000000LL;
  *len = perftools__profiles__profile__get_packed_size(&p);
  uint8_t *out = malloc(*len);
  perftools__profiles__profile__pack(&p, out);
  for (size_t i = 0; i < n_str; i++)
    free(strs[i]);
  free(strs), free(fn), free(fnp), free(loc), free(locp), free(line), free(linep), free(smp);
  free(smpp), free(lab), free(labp), free(vals);
  return out;
}

/* The validating index with SP_PW_LABELS: fastest of @p rounds rounds of @p iters, per profile. */
static double time_index(const uint8_t *raw, size_t len, int iters, int rounds, size_t *sink) {
  double best = 1e9;
  char err[256];
  for (int r = 0; r < rounds; r++) {
    double t0 = now_cpu();
    for (int i = 0; i < iters; i++) {
      sp_arena_t *a = sp_arena_create(len);
      sp_pprof_wire_t w;
      if (sp_pprof_wire_index_ex(a, raw, len, SP_PW_VALIDATE | SP_PW_LABELS, &w, err,
                                 sizeof(err)) != 0 || w.plabels == NULL || !w.has_keys) {
        fprintf(stderr, "index: %s\n", err);
        exit(1);
      }
      *sink += w.n_samples;
      sp_arena_destroy(a);
    }
    double t = (now_cpu() - t0) / iters;
    best = t < best ? t : best;
  }
  return best;
}

/* The join's edit on a decoded profile: span_name and trace_id after every span_id. */
static void edit_decoded(sp_arena_t *a, sp_pprof_t *pp) {
  sp_pprof_edit_t e;
  sp_pprof_edit_init(&e, a, pp);
  int64_t k_sid = sp_pprof_find_string(pp, "span_id");
  for (size_t i = 0; i < pp->n_sample; i++) {
    sp_pprof_label_t *l = sp_pprof_sample_label(pp->sample[i], k_sid);
    if (l == NULL)
      continue;
    sp_pprof_sample_set_label_str(&e, pp->sample[i], "span_name", "GET /api/v1/users/{id}");
    sp_pprof_sample_set_label_str(&e, pp->sample[i], "trace_id", "0af7651916cd43dd8448eb211c80319c");
  }
  sp_pprof_edit_free(&e);
}

/* The same on the wire. */
static int splice_labels(sp_pprof_splice_t *sp, const sp_pprof_wire_t *w) {
  int64_t k_sid = sp_pprof_wire_find(w, "span_id", 7);
  int64_t k_name = sp_pprof_splice_string(sp, "span_name", 9);
  int64_t v_name = sp_pprof_splice_string(sp, "GET /api/v1/users/{id}", 22);
  int64_t k_tid = sp_pprof_splice_string(sp, "trace_id", 8);
  int64_t v_tid = sp_pprof_splice_string(sp, "0af7651916cd43dd8448eb211c80319c", 32);
  for (size_t i = 0; i < w->n_samples; i++) {
    sp_pw_label_t l[8];
    size_t n = sp_pprof_wire_labels(w, i, l, 8);
    for (size_t j = 0; j < n && j < 8; j++) {
      if (l[j].key != k_sid)
        continue;
      sp_pw_label_t add[2] = {{k_name, v_name, 0, 0}, {k_tid, v_tid, 0, 0}};
      if (sp_pprof_splice_labels(sp, i, add, 2) != 0)
        return -1;
      break;
    }
  }
  return 0;
}

/*
 * The join's edit on a profile whose labels were pre-decoded: each sample
 * with a span_id gets that span's own span_name and trace_id (new strings,
 * made once per span). With @p groups as the join does it now (one label
 * group per span, appended by reference), else one sp_pprof_splice_labels
 * call per sample (as it did before).
 */
static int splice_join(sp_pprof_splice_t *sp, const sp_pprof_wire_t *w, bool groups) {
  int64_t k_sid = sp_pprof_wire_find(w, "span_id", 7);
  char first[17];
  snprintf(first, sizeof(first), "%016llx", (unsigned long long)0x1000000000000000ull);
  int64_t s_span0 = sp_pprof_wire_find(w, first, 16);
  int64_t k_name = sp_pprof_splice_string(sp, "span_name", 9);
  int64_t k_tid = sp_pprof_splice_string(sp, "trace_id", 8);
  if (k_sid < 0 || s_span0 < 0 || k_name < 0 || k_tid < 0)
    return -1;
  int64_t g[N_SPANS], vn[N_SPANS], vt[N_SPANS];
  for (int i = 0; i < N_SPANS; i++)
    g[i] = vn[i] = vt[i] = -1;
  for (size_t i = 0; i < w->n_samples; i++) {
    int64_t span = -1;
    for (uint32_t j = w->plabel_start[i]; j < w->plabel_start[i + 1]; j++)
      if (w->plabels[j].key == (uint32_t)k_sid)
        span = (int64_t)w->plabels[j].val - s_span0;
    if (span < 0 || span >= N_SPANS)
      continue;
    if (vn[span] < 0) {
      char name[64], tid[33];
      snprintf(name, sizeof(name), "GET /api/v1/items/{id} %d", (int)span);
      snprintf(tid, sizeof(tid), "0af7651916cd43dd8448eb211c8%05d", (int)span);
      vn[span] = sp_pprof_splice_string(sp, name, strlen(name));
      vt[span] = sp_pprof_splice_string(sp, tid, 32);
      if (vn[span] < 0 || vt[span] < 0)
        return -1;
    }
    sp_pw_label_t add[2] = {{k_name, vn[span], 0, 0}, {k_tid, vt[span], 0, 0}};
    if (groups) {
      if (g[span] < 0 && (g[span] = sp_pprof_splice_group(sp, add, 2)) < 0)
        return -1;
      if (sp_pprof_splice_labels_group(sp, i, g[span]) != 0)
        return -1;
    } else if (sp_pprof_splice_labels(sp, i, add, 2) != 0) {
      return -1;
    }
  }
  return 0;
}

int main(int argc, char **argv) {
  int iters = argc > 1 ? atoi(argv[1]) : 400;
  if (iters <= 0)
    iters = 400;
  size_t len, lg_len;
  uint8_t *raw = build_profile(&len);
  uint8_t *lg = build_profile_lg(&lg_len);
  char err[256];
  if (argc > 2 && strcmp(argv[2], "index-lg") == 0) { /* for perf: the loadgen-shaped profile only */
    size_t sink = 0;
    printf("validate + SP_PW_LABELS: loadgen-shaped %.1f us\n", time_index(lg, lg_len, iters, 1, &sink) * 1e6);
    free(raw);
    free(lg);
    return 0;
  }
  if (argc > 2 && strcmp(argv[2], "index") == 0) {
    size_t sink = 0;
    double t_b = time_index(raw, len, iters, 5, &sink);
    double t_l = time_index(lg, lg_len, iters, 5, &sink);
    printf("validate + SP_PW_LABELS: bench profile (%zu bytes) %.1f us, loadgen-shaped (%zu bytes) "
           "%.1f us (sink %zu)\n", len, t_b * 1e6, lg_len, t_l * 1e6, sink % 10);
    free(raw);
    free(lg);
    return 0;
  }
  double t0, t_decode, t_unpack, t_wire_v = 0, t_wire = 0, t_pack, t_splice, t_finish;
  size_t sink = 0;

  t0 = now_cpu();
  for (int i = 0; i < iters; i++) {
    sp_arena_t *a = sp_arena_create(len * 4);
    sp_pprof_t *pp;
    if (sp_pprof_decode(a, raw, len, &pp, err, sizeof(err)) != 0) {
      fprintf(stderr, "decode: %s\n", err);
      return 1;
    }
    sink += pp->n_sample;
    sp_arena_destroy(a);
  }
  t_decode = (now_cpu() - t0) / iters;

  t0 = now_cpu();
  for (int i = 0; i < iters; i++) {
    sp_arena_t *a = sp_arena_create(len * 4);
    sp_pprof_t *pp = perftools__profiles__profile__unpack(sp_arena_pbc(a), len, raw);
    if (pp == NULL || sp_pprof_validate(pp, err, sizeof(err)) != 0)
      return 1;
    sink += pp->n_sample;
    sp_arena_destroy(a);
  }
  t_unpack = (now_cpu() - t0) / iters;

  double t_wire_l = 0, t_read_bytes = 0, t_read_pre = 0, t_finish_ix = 0, t_read_vals = 0;
  double t_finish_ix0 = 0, t_join_before = 0, t_join_now = 0;
  for (int v = 2; v >= 0; v--) {
    unsigned flags = v == 2 ? SP_PW_VALIDATE | SP_PW_LABELS : v == 1 ? SP_PW_VALIDATE : 0;
    t0 = now_cpu();
    for (int i = 0; i < iters; i++) {
      sp_arena_t *a = sp_arena_create(len);
      sp_pprof_wire_t w;
      if (sp_pprof_wire_index_ex(a, raw, len, flags, &w, err, sizeof(err)) != 0) {
        fprintf(stderr, "index: %s\n", err);
        return 1;
      }
      sink += w.n_samples;
      sp_arena_destroy(a);
    }
    *(v == 2 ? &t_wire_l : v ? &t_wire_v : &t_wire) = (now_cpu() - t0) / iters;
  }
  /* Reading every sample's labels: from the bytes, then pre-decoded. */
  {
    sp_arena_t *a = sp_arena_create(len);
    sp_pprof_wire_t wb, wp;
    if (sp_pprof_wire_index(a, raw, len, false, &wb, NULL, 0) != 0 ||
        sp_pprof_wire_index_ex(a, raw, len, SP_PW_VALIDATE | SP_PW_LABELS, &wp, NULL, 0) != 0 ||
        wp.plabels == NULL)
      return 1;
    for (int v = 0; v < 2; v++) {
      const sp_pprof_wire_t *w = v ? &wp : &wb;
      t0 = now_cpu();
      for (int i = 0; i < iters; i++) {
        sp_pw_label_t l[16];
        for (size_t s = 0; s < w->n_samples; s++)
          sink += sp_pprof_wire_labels(w, s, l, 16) + (size_t)l[0].str;
      }
      *(v ? &t_read_pre : &t_read_bytes) = (now_cpu() - t0) / iters;
    }
    t0 = now_cpu();
    for (int i = 0; i < iters; i++) {
      int64_t vals[4];
      for (size_t s = 0; s < wb.n_samples; s++)
        sink += sp_pprof_wire_values(&wb, s, vals, 4) + (size_t)vals[0];
    }
    t_read_vals = (now_cpu() - t0) / iters;
    sp_arena_destroy(a);
  }

  /* Writing: pack of the edited decoded profile. */
  {
    sp_arena_t *a = sp_arena_create(len * 4);
    sp_pprof_t *pp;
    if (sp_pprof_decode(a, raw, len, &pp, err, sizeof(err)) != 0)
      return 1;
    edit_decoded(a, pp);
    uint8_t *buf = malloc(2 * len + 65536);
    t0 = now_cpu();
    for (int i = 0; i < iters; i++) {
      size_t n = perftools__profiles__profile__get_packed_size(pp);
      sink += perftools__profiles__profile__pack(pp, buf) + n;
    }
    t_pack = (now_cpu() - t0) / iters;
    free(buf);
    sp_arena_destroy(a);
  }
  /* Writing: the splice (labels + finish), and finish alone. */
  {
    sp_arena_t *ia = sp_arena_create(len);
    sp_pprof_wire_t w;
    if (sp_pprof_wire_index(ia, raw, len, false, &w, NULL, 0) != 0)
      return 1;
    t0 = now_cpu();
    for (int i = 0; i < iters; i++) {
      sp_arena_t *a = sp_arena_create(2 * len);
      sp_pprof_splice_t sp;
      sp_pprof_splice_init(&sp, &w);
      const uint8_t *out;
      size_t out_len;
      if (splice_labels(&sp, &w) != 0 || sp_pprof_splice_finish(&sp, a, &out, &out_len) != 0)
        return 1;
      sink += out_len;
      sp_pprof_splice_free(&sp);
      sp_arena_destroy(a);
    }
    t_splice = (now_cpu() - t0) / iters;
    sp_pprof_splice_t sp;
    sp_pprof_splice_init(&sp, &w);
    if (splice_labels(&sp, &w) != 0)
      return 1;
    t0 = now_cpu();
    for (int i = 0; i < iters; i++) {
      sp_arena_t *a = sp_arena_create(2 * len);
      const uint8_t *out;
      size_t out_len;
      if (sp_pprof_splice_finish(&sp, a, &out, &out_len) != 0)
        return 1;
      sink += out_len;
      sp_arena_destroy(a);
    }
    t_finish = (now_cpu() - t0) / iters;
    {
      sp_arena_t *la = sp_arena_create(len);
      sp_pprof_wire_t wl;
      if (sp_pprof_wire_index_ex(la, raw, len, SP_PW_VALIDATE | SP_PW_LABELS, &wl, NULL, 0) != 0)
        return 1;
      sp_pprof_splice_t spl;
      sp_pprof_splice_init(&spl, &wl);
      if (splice_labels(&spl, &wl) != 0)
        return 1;
      t0 = now_cpu();
      for (int i = 0; i < iters; i++) {
        sp_arena_t *a = sp_arena_create(2 * len);
        const uint8_t *out;
        size_t out_len;
        sp_pprof_wire_t wo;
        if (sp_pprof_splice_finish_indexed(&spl, a, &out, &out_len, &wo) != 0)
          return 1;
        sink += out_len + wo.n_keys;
        sp_arena_destroy(a);
      }
      t_finish_ix = (now_cpu() - t0) / iters;
      t0 = now_cpu();
      for (int i = 0; i < iters; i++) {
        sp_arena_t *a = sp_arena_create(2 * len);
        const uint8_t *out;
        size_t out_len;
        sp_pprof_wire_t wo;
        if (sp_pprof_splice_finish_indexed_ex(&spl, a, 0, &out, &out_len, &wo) != 0 ||
            !wo.has_keys)
          return 1;
        sink += out_len + wo.n_keys;
        sp_arena_destroy(a);
      }
      t_finish_ix0 = (now_cpu() - t0) / iters;
      /* The join's whole write, before and now, on the pre-decoded index. */
      for (int v = 0; v < 2; v++) {
        t0 = now_cpu();
        for (int i = 0; i < iters; i++) {
          sp_arena_t *a = sp_arena_create(2 * len);
          sp_pprof_splice_t sj;
          sp_pprof_splice_init(&sj, &wl);
          const uint8_t *out;
          size_t out_len;
          sp_pprof_wire_t wo;
          int rc = splice_join(&sj, &wl, v == 1);
          if (rc == 0)
            rc = v ? sp_pprof_splice_finish_indexed_ex(&sj, a, 0, &out, &out_len, &wo)
                   : sp_pprof_splice_finish_indexed(&sj, a, &out, &out_len, &wo);
          if (rc != 0)
            return 1;
          sink += out_len + wo.n_keys;
          sp_pprof_splice_free(&sj);
          sp_arena_destroy(a);
        }
        *(v ? &t_join_now : &t_join_before) = (now_cpu() - t0) / iters;
      }
      sp_pprof_splice_free(&spl);
      sp_arena_destroy(la);
    }
    /* The splice result decodes to the same samples as the edited profile. */
    sp_arena_t *a = sp_arena_create(2 * len);
    const uint8_t *out;
    size_t out_len;
    sp_pprof_t *back;
    if (sp_pprof_splice_finish(&sp, a, &out, &out_len) != 0 ||
        sp_pprof_decode(a, out, out_len, &back, err, sizeof(err)) != 0 ||
        back->n_sample != N_SAMPLES) {
      fprintf(stderr, "splice result does not decode: %s\n", err);
      return 1;
    }
    sp_arena_destroy(a);
    sp_pprof_splice_free(&sp);
    sp_arena_destroy(ia);
  }

  printf("profile: %zu bytes, %d samples, %d iterations (sink %zu)\n", len, N_SAMPLES, iters,
         sink % 10);
  printf("read   scan+unpack+validate (sp_pprof_decode)  %8.1f us  1.00x\n", t_decode * 1e6);
  printf("read   unpack+validate                          %8.1f us  %.2fx\n", t_unpack * 1e6,
         t_unpack / t_decode);
  printf("read   wire index, validate=true                %8.1f us  %.2fx (%.1fx faster)\n",
         t_wire_v * 1e6, t_wire_v / t_decode, t_decode / t_wire_v);
  printf("read   wire index, validate=false               %8.1f us  %.2fx (%.1fx faster)\n",
         t_wire * 1e6, t_wire / t_decode, t_decode / t_wire);
  printf("read   wire index, validate + SP_PW_LABELS      %8.1f us  %.2fx (+%.1f us for labels)\n",
         t_wire_l * 1e6, t_wire_l / t_decode, (t_wire_l - t_wire_v) * 1e6);
  {
    size_t s2 = 0;
    double t_lg = time_index(lg, lg_len, iters, 3, &s2);
    sink += s2;
    printf("read   wire index, validate + SP_PW_LABELS, loadgen-shaped (%zu bytes) %.1f us  %.2fx\n",
           lg_len, t_lg * 1e6, t_lg / t_decode);
  }
  printf("read   all sample labels, from the bytes        %8.1f us\n", t_read_bytes * 1e6);
  printf("read   all sample labels, pre-decoded           %8.1f us  (%.1fx faster)\n",
         t_read_pre * 1e6, t_read_bytes / t_read_pre);
  printf("read   all sample values (from the bytes)       %8.1f us\n", t_read_vals * 1e6);
  printf("write  get_packed_size+pack (edited, decoded)   %8.1f us  1.00x\n", t_pack * 1e6);
  printf("write  splice: labels + finish                  %8.1f us  %.2fx (%.1fx faster)\n",
         t_splice * 1e6, t_splice / t_pack, t_pack / t_splice);
  printf("write  splice: finish_indexed alone             %8.1f us  (+%.1f us over finish)\n",
         t_finish_ix * 1e6, (t_finish_ix - t_finish) * 1e6);
  printf("write  splice: finish_indexed_ex, no labels    %8.1f us  (+%.1f us over finish; the join's)\n",
         t_finish_ix0 * 1e6, (t_finish_ix0 - t_finish) * 1e6);
  printf("write  the join's splice, per-sample calls + finish_indexed (before) %6.1f us  1.00x\n",
         t_join_before * 1e6);
  printf("write  the join's splice, label groups + finish_indexed_ex (now)    %6.1f us  %.2fx\n",
         t_join_now * 1e6, t_join_now / t_join_before);
  printf("write  splice: finish alone                     %8.1f us  %.2fx (%.1fx faster)\n",
         t_finish * 1e6, t_finish / t_pack, t_pack / t_finish);
  free(raw);
  free(lg);
  return 0;
}
