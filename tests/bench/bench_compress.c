/*
 * bench_compress.c — gzip costs on the exporters' and receivers' payloads:
 * zlib (called directly, as compress.c did before ISA-L) against ours
 * (sp_gzip_compress / sp_inflate, ISA-L at levels 1-3).
 *
 * Payloads:
 *  (a) a pprof CPU profile like the load generator's (~125 KB): read from a
 *      gzip or raw file when one is given (e.g. a captured /ingest upload),
 *      else synthesised here the same way (480 functions under net/http,
 *      stacks 8-40 deep, ~1,500 samples of [count, nanoseconds], 80% with a
 *      span_id label);
 *  (b) a 512-span OTLP ExportTraceServiceRequest shaped like the load
 *      generator's (4-span traces, 5-10 attributes per span).
 *
 * For each: gzip level 1 (zlib vs ours), ours at levels 2 and 3, zlib 6 for
 * reference, ISA-L level 0 with its default tables, level -1 through an
 * sp_compressor_t (the same payload again and again: a one-shape stream,
 * against ours at level 1 measured right after it), and inflating (zlib vs
 * ours) the zlib level-1 upload. Prints µs per call (the fastest of 5
 * rounds: the machine is shared), bytes out, and time and bytes ratios.
 *
 * Then streams of payloads of different shapes (what a gateway sees), and
 * with BENCH_COMPRESS_STREAM=dir the files in dir as one stream: ours at
 * level 1, ISA-L level 0 with its default tables, and level -1 through an
 * sp_compressor_t (tables learned from the stream).
 *
 *   bench_compress [pprof-file(.gz)] [min-seconds-per-case=0.3]
 */
#include "pipeline/alloc.h"
#include "pipeline/arena.h"
#include "pipeline/batch.h"
#include "pipeline/buf.h"
#include "pipeline/compress.h"
#include "bench_traces.h"

#include "perftools/profiles/profile.pb-c.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <isa-l/igzip_lib.h>
#include <zlib.h>

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static uint64_t g_rng = 0x9e3779b97f4a7c15ull;
static uint64_t rnd(void) {
  uint64_t z = (g_rng += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

/* ---- payloads -------------------------------------------------------------------- */

static char *fmt(sp_arena_t *a, const char *f, const char *x, const char *y, size_t n) {
  char tmp[256];
  snprintf(tmp, sizeof tmp, f, x, y, n);
  char *s = sp_arena_alloc(a, strlen(tmp) + 1);
  strcpy(s, tmp);
  return s;
}

/* Name styles of the synthesised profiles: how Go, Java and Python agents name frames. */
enum { STYLE_GO = 0, STYLE_JAVA, STYLE_PYTHON };

static uint8_t *make_pprof_as(int style, size_t n_funcs, size_t n_samples, unsigned label_pct,
                              size_t *len) {
  static const char *const pkgs_java[] = {"com.acme.shop.orders",   "com.acme.shop.cart",
                                          "org.postgresql.core.v3", "com.fasterxml.jackson.core",
                                          "java.util.concurrent",   "io.netty.channel",
                                          "io.grpc.internal",       "com.acme.shop.payments"};
  static const char *const pkgs_py[] = {"shop/orders",   "shop/cart",    "psycopg/cursor",
                                        "json/decoder",  "asyncio/base", "aiohttp/web",
                                        "grpc/_channel", "shop/payments"};
  static const char *const pkgs[] = {"github.com/acme/shop/internal/orders",
                                     "github.com/acme/shop/internal/cart",
                                     "github.com/jackc/pgx/v5/pgconn",
                                     "encoding/json",
                                     "runtime",
                                     "net/http",
                                     "google.golang.org/grpc/internal/transport",
                                     "github.com/acme/shop/internal/payments"};
  static const char *const nouns[] = {"Order", "Cart", "Conn", "Buffer", "State", "Decoder"};
  sp_arena_t *a = sp_arena_create(1 << 20);
  Perftools__Profiles__Profile p = PERFTOOLS__PROFILES__PROFILE__INIT;
  char **st = sp_arena_alloc(a, (n_funcs * 2 + 16 + n_samples) * sizeof(*st));
  size_t ns = 0;
#define STR(s) (st[ns] = (s), (int64_t)ns++)
  STR("");
  int64_t s_samples = STR("samples"), s_count = STR("count"), s_cpu = STR("cpu"),
          s_ns = STR("nanoseconds"), s_span = STR("span_id");
  Perftools__Profiles__ValueType vt[3] = {PERFTOOLS__PROFILES__VALUE_TYPE__INIT,
                                          PERFTOOLS__PROFILES__VALUE_TYPE__INIT,
                                          PERFTOOLS__PROFILES__VALUE_TYPE__INIT};
  vt[0].type = s_samples, vt[0].unit = s_count, vt[1].type = s_cpu, vt[1].unit = s_ns;
  vt[2] = vt[1];
  Perftools__Profiles__ValueType *vts[2] = {&vt[0], &vt[1]};
  p.sample_type = vts, p.n_sample_type = 2, p.period_type = &vt[2], p.period = 10000000;
  p.function = sp_arena_alloc(a, n_funcs * sizeof(*p.function));
  p.location = sp_arena_alloc(a, n_funcs * sizeof(*p.location));
  for (size_t i = 0; i < n_funcs; i++) {
    Perftools__Profiles__Function *f = sp_arena_alloc(a, sizeof(*f));
    Perftools__Profiles__Location *l = sp_arena_alloc(a, sizeof(*l));
    Perftools__Profiles__Line *ln = sp_arena_alloc(a, sizeof(*ln));
    Perftools__Profiles__Line **lines = sp_arena_alloc(a, sizeof(*lines));
    perftools__profiles__function__init(f);
    perftools__profiles__location__init(l);
    perftools__profiles__line__init(ln);
    f->id = l->id = ln->function_id = i + 1;
    if (style == STYLE_JAVA) {
      f->name = f->system_name =
          STR(fmt(a, "%s.%sService.handle%zu", pkgs_java[i % 8], nouns[(i / 8) % 6], i));
      f->filename = STR(fmt(a, "%s/%s%zu.java", pkgs_java[i % 8], nouns[(i / 8) % 6], i % 7));
    } else if (style == STYLE_PYTHON) {
      f->name = f->system_name =
          STR(fmt(a, "%s.%s.handle_%zu", pkgs_py[i % 8], nouns[(i / 8) % 6], i));
      f->filename = STR(fmt(a, "/app/%s/%s%zu.py", pkgs_py[i % 8], nouns[(i / 8) % 6], i % 7));
    } else {
      f->name = f->system_name =
          STR(fmt(a, "%s.(*%s).Handle%zu", pkgs[i % 8], nouns[(i / 8) % 6], i));
      f->filename = STR(fmt(a, "/src/%s/%s%zu.go", pkgs[i % 8], nouns[(i / 8) % 6], i % 7));
    }
    ln->line = (int64_t)(20 + rnd() % 900);
    lines[0] = ln;
    l->line = lines, l->n_line = 1, l->address = 0x401000 + i * 0x40;
    p.function[i] = f;
    p.location[i] = l;
  }
  p.n_function = p.n_location = n_funcs;
  p.sample = sp_arena_alloc(a, n_samples * sizeof(*p.sample));
  for (size_t i = 0; i < n_samples; i++) {
    Perftools__Profiles__Sample *s = sp_arena_alloc(a, sizeof(*s));
    perftools__profiles__sample__init(s);
    size_t depth = 8 + rnd() % 33;
    s->location_id = sp_arena_alloc(a, depth * sizeof(uint64_t));
    uint64_t stack = rnd() % (n_funcs * 7 / 8); /* stacks repeat, with different leaves */
    for (size_t k = 0; k < depth; k++)
      s->location_id[k] =
          k + 1 == depth ? 1 + rnd() % n_funcs : 1 + (stack * 31 + k * 17) % n_funcs;
    s->n_location_id = depth;
    s->value = sp_arena_alloc(a, 2 * sizeof(int64_t));
    s->value[0] = 1 + (int64_t)(rnd() % 3), s->value[1] = s->value[0] * 10000000;
    s->n_value = 2;
    if (label_pct == 80 ? rnd() % 5 != 0 : rnd() % 100 < label_pct) { /* 80: as before */
      Perftools__Profiles__Label *lb = sp_arena_alloc(a, sizeof(*lb));
      Perftools__Profiles__Label **lbs = sp_arena_alloc(a, sizeof(*lbs));
      perftools__profiles__label__init(lb);
      char *hex = sp_arena_alloc(a, 17);
      snprintf(hex, 17, "%016llx", (unsigned long long)rnd());
      lb->key = s_span, lb->str = STR(hex);
      lbs[0] = lb;
      s->label = lbs, s->n_label = 1;
    }
    p.sample[i] = s;
  }
  p.n_sample = n_samples;
  p.string_table = st, p.n_string_table = ns;
  p.time_nanos = 1700000000000000000ll, p.duration_nanos = 10000000000ll;
  *len = protobuf_c_message_get_packed_size(&p.base);
  uint8_t *buf = malloc(*len);
  protobuf_c_message_pack(&p.base, buf);
  sp_arena_destroy(a);
  return buf;
#undef STR
}

/* The load generator's profile: Go names, 480 functions, 1,500 samples, 80% with a span_id. */
static uint8_t *make_pprof(size_t *len) { return make_pprof_as(STYLE_GO, 480, 1500, 80, len); }

static uint8_t *make_traces(size_t n, size_t *len) { return bench_traces_request(n, 7, len); }

/* ---- zlib, as compress.c used it before ----------------------------------------- */

static size_t zlib_gzip(const uint8_t *in, size_t n, int level, sp_buf_t *out) {
  z_stream zs;
  memset(&zs, 0, sizeof zs);
  deflateInit2(&zs, level, Z_DEFLATED, 31, 8, Z_DEFAULT_STRATEGY);
  size_t bound = deflateBound(&zs, (uLong)n);
  out->len = 0;
  sp_buf_reserve(out, bound);
  zs.next_in = (Bytef *)in;
  zs.avail_in = (uInt)n;
  zs.next_out = out->data;
  zs.avail_out = (uInt)bound;
  if (deflate(&zs, Z_FINISH) != Z_STREAM_END) abort();
  out->len = bound - zs.avail_out;
  deflateEnd(&zs);
  return out->len;
}

static size_t zlib_gunzip(const uint8_t *in, size_t n, sp_buf_t *out, size_t raw_len) {
  z_stream zs;
  memset(&zs, 0, sizeof zs);
  inflateInit2(&zs, 31);
  out->len = 0;
  sp_buf_reserve(out, raw_len + 1);
  zs.next_in = (Bytef *)in;
  zs.avail_in = (uInt)n;
  zs.next_out = out->data;
  zs.avail_out = (uInt)out->cap;
  if (inflate(&zs, Z_FINISH) != Z_STREAM_END) abort();
  out->len = zs.total_out;
  inflateEnd(&zs);
  return out->len;
}

/* ---- timing -------------------------------------------------------------------- */

/* ---- ISA-L level 0 with its default tables (what learned tables must beat) ---------- */

static void isal0_gzip(const uint8_t *in, size_t n, sp_buf_t *out) {
  struct isal_zstream *zs = malloc(sizeof(*zs));
  isal_deflate_init(zs);
  zs->level = 0;
  zs->gzip_flag = IGZIP_GZIP;
  zs->end_of_stream = 1;
  out->len = 0;
  sp_buf_reserve(out, n + n / 4 + 1024);
  zs->next_in = (uint8_t *)in;
  zs->avail_in = (uint32_t)n;
  zs->next_out = out->data;
  zs->avail_out = (uint32_t)out->cap;
  if (isal_deflate(zs) != COMP_OK || zs->internal_state.state != ZSTATE_END) abort();
  out->len = out->cap - zs->avail_out;
  free(zs);
}

enum { OP_ZLIB_GZIP, OP_OURS_GZIP, OP_ZLIB_GUNZIP, OP_OURS_GUNZIP, OP_CTX_GZIP, OP_ISAL0_GZIP };

static double g_min_s = 0.3;
static sp_compressor_t *g_ctx; /* OP_CTX_GZIP's context */

/*
 * Runs one case for at least g_min_s, in 5 rounds; returns µs per call of
 * the fastest round (the machine is shared: the slower rounds measure the
 * neighbours) and the output size.
 */
static double run1(int op, int level, const uint8_t *in, size_t n, size_t raw_len, size_t *out_len,
                   double min_s);
static double run(int op, int level, const uint8_t *in, size_t n, size_t raw_len, size_t *out_len) {
  double best = 0;
  for (int r = 0; r < 5; r++) {
    double us = run1(op, level, in, n, raw_len, out_len, g_min_s / 5);
    if (r == 0 || us < best) best = us;
  }
  return best;
}

static double run1(int op, int level, const uint8_t *in, size_t n, size_t raw_len, size_t *out_len,
                   double min_s) {
  sp_buf_t out;
  sp_buf_init(&out, 0);
  long iters = 0;
  double t0 = now_s(), t;
  do {
    for (int k = 0; k < 20; k++) {
      switch (op) {
      case OP_ZLIB_GZIP: zlib_gzip(in, n, level, &out); break;
      case OP_OURS_GZIP:
        out.len = 0;
        if (sp_gzip_compress(in, n, level, &out) != 0) abort();
        break;
      case OP_CTX_GZIP:
        out.len = 0;
        if (sp_compressor_gzip(g_ctx, in, n, level, &out) != 0) abort();
        break;
      case OP_ISAL0_GZIP: isal0_gzip(in, n, &out); break;
      case OP_ZLIB_GUNZIP: zlib_gunzip(in, n, &out, raw_len); break;
      case OP_OURS_GUNZIP:
        /* as a receiver does: a fresh buffer per body */
        sp_buf_free(&out);
        if (sp_inflate(in, n, SP_ENC_GZIP, 0, &out) != 0 || out.len != raw_len) abort();
        break;
      }
      /* freshly allocated output per call for the compressors too, like the exporters */
      if (op == OP_ZLIB_GZIP || op == OP_OURS_GZIP || op == OP_CTX_GZIP || op == OP_ISAL0_GZIP) {
        *out_len = out.len;
        sp_buf_free(&out);
      }
    }
    iters += 20;
    t = now_s() - t0;
  } while (t < min_s);
  if (op == OP_ZLIB_GUNZIP || op == OP_OURS_GUNZIP) *out_len = out.len;
  sp_buf_free(&out);
  return t / (double)iters * 1e6;
}

static void bench(const char *name, const uint8_t *raw, size_t len, const sp_buf_t *file_gz) {
  size_t z1, o1, o2, o3, z6, dummy;
  printf("%s: %zu bytes\n", name, len);
  double tz1 = run(OP_ZLIB_GZIP, 1, raw, len, len, &z1);
  double to1 = run(OP_OURS_GZIP, 1, raw, len, len, &o1);
  double to2 = run(OP_OURS_GZIP, 2, raw, len, len, &o2);
  double to3 = run(OP_OURS_GZIP, 3, raw, len, len, &o3);
  double tz6 = run(OP_ZLIB_GZIP, 6, raw, len, len, &z6);
  printf("  gzip  zlib  level 1 %8.1f us  %7zu bytes\n", tz1, z1);
  printf("  gzip  ours  level 1 %8.1f us  %7zu bytes   time x%.2f of zlib-1, bytes x%.3f\n", to1,
         o1, to1 / tz1, (double)o1 / (double)z1);
  printf("  gzip  ours  level 2 %8.1f us  %7zu bytes   time x%.2f, bytes x%.3f\n", to2, o2,
         to2 / tz1, (double)o2 / (double)z1);
  printf("  gzip  ours  level 3 %8.1f us  %7zu bytes   time x%.2f, bytes x%.3f\n", to3, o3,
         to3 / tz1, (double)o3 / (double)z1);
  printf("  gzip  zlib  level 6 %8.1f us  %7zu bytes   time x%.2f, bytes x%.3f\n", tz6, z6,
         tz6 / tz1, (double)z6 / (double)z1);
  /* Level -1 through a context: ISA-L level 0 with tables learned from the stream (here the
   * same payload again and again: after the first call, what a one-shape stream costs). */
  size_t l0, lc;
  double tl0 = run(OP_ISAL0_GZIP, 0, raw, len, len, &l0);
  sp_compressor_create(NULL, &g_ctx);
  double tlc = run(OP_CTX_GZIP, -1, raw, len, len, &lc);
  double tl1 = run(OP_OURS_GZIP, 1, raw, len, len, &o1); /* level 1 again: the nearest baseline */
  sp_compressor_stats_t st;
  sp_compressor_get_stats(g_ctx, &st);
  sp_compressor_destroy(g_ctx);
  printf("  gzip  isal  level 0 %8.1f us  %7zu bytes   default tables; vs ours-1: time x%.2f, "
         "bytes x%.3f\n",
         tl0, l0, tl0 / tl1, (double)l0 / (double)o1);
  printf("  gzip  ours  learned %8.1f us  %7zu bytes   level -1 via sp_compressor_t; vs ours-1 "
         "(%.1f us): time x%.2f, bytes x%.3f  [%llu calls, %llu samples]\n",
         tlc, lc, tl1, tlc / tl1, (double)lc / (double)o1,
         (unsigned long long)(st.learned + st.level1), (unsigned long long)st.samples);
  /* inflate what a zlib-1 sender uploads, and what ours at level 1 sends */
  sp_buf_t gz;
  sp_buf_init(&gz, 0);
  zlib_gzip(raw, len, 1, &gz);
  double tzi = run(OP_ZLIB_GUNZIP, 0, gz.data, gz.len, len, &dummy);
  double toi = run(OP_OURS_GUNZIP, 0, gz.data, gz.len, len, &dummy);
  printf("  gunzip zlib-1 upload (%zu B): zlib %7.1f us, ours %7.1f us   time x%.2f\n", gz.len, tzi,
         toi, toi / tzi);
  gz.len = 0;
  sp_gzip_compress(raw, len, 1, &gz);
  tzi = run(OP_ZLIB_GUNZIP, 0, gz.data, gz.len, len, &dummy);
  toi = run(OP_OURS_GUNZIP, 0, gz.data, gz.len, len, &dummy);
  printf("  gunzip ours-1 upload (%zu B): zlib %7.1f us, ours %7.1f us   time x%.2f\n", gz.len, tzi,
         toi, toi / tzi);
  if (file_gz) { /* the capture as it was uploaded */
    tzi = run(OP_ZLIB_GUNZIP, 0, file_gz->data, file_gz->len, len, &dummy);
    toi = run(OP_OURS_GUNZIP, 0, file_gz->data, file_gz->len, len, &dummy);
    printf("  gunzip the file itself (%zu B): zlib %7.1f us, ours %7.1f us   time x%.2f\n",
           file_gz->len, tzi, toi, toi / tzi);
  }
  sp_buf_free(&gz);
}

/* ---- a mixed stream: a gateway receiving profiles of many services ---------------- */

typedef struct {
  const char *name;
  uint8_t *p;
  size_t len;
} payload_t;

enum { STREAM_LEN = 96 };

enum { KEYS = 8 };

/*
 * Compresses @p order (indices into @p pl) once with @p mode (0: ours level 1,
 * 1: ISA-L level 0 default tables, 2: learned through ctx[0], 3: learned
 * through ctx[kind % KEYS], as an exporter keeping a context per service
 * would); adds bytes per payload kind to @p bytes, returns the seconds taken.
 */
static double stream_pass(int mode, sp_compressor_t **ctx, const payload_t *pl, const int *order,
                          size_t n, size_t *bytes) {
  sp_buf_t out;
  sp_buf_init(&out, 0);
  double t0 = now_s();
  for (size_t i = 0; i < n; i++) {
    const payload_t *p = &pl[order[i]];
    out.len = 0;
    if (mode == 0 && sp_gzip_compress(p->p, p->len, 1, &out) != 0) abort();
    if (mode == 1) isal0_gzip(p->p, p->len, &out);
    if (mode >= 2 &&
        sp_compressor_gzip(ctx[mode == 3 ? order[i] % KEYS : 0], p->p, p->len, -1, &out) != 0)
      abort();
    bytes[order[i]] += out.len;
    sp_buf_free(&out);
  }
  double t = now_s() - t0;
  sp_buf_free(&out);
  return t;
}

/* One line per mode: µs per payload (fastest of 5 timed passes after a warm-up pass), bytes. */
static void stream_bench(const char *title, const payload_t *pl, size_t npl, const int *order,
                         size_t n) {
  enum { MODES = 4 };
  static const char *const modes[MODES] = {"ours level 1", "isal level 0 (default tables)",
                                           "ours learned (level -1)",
                                           "learned, a context per kind"};
  double us[MODES];
  size_t tot[MODES];
  size_t *bytes = calloc(MODES * npl, sizeof(size_t));
  printf("%s: %zu payloads per pass\n", title, n);
  sp_compressor_stats_t st = {0};
  for (int m = 0; m < MODES; m++) {
    sp_compressor_t *ctx[KEYS] = {NULL};
    for (int k = 0; k < (m == 2 ? 1 : m == 3 ? KEYS : 0); k++)
      sp_compressor_create(NULL, &ctx[k]);
    size_t *scratch = calloc(npl, sizeof(size_t));
    stream_pass(m, ctx, pl, order, n, scratch); /* warm-up (learning, for the contexts) */
    double best = 0;
    int passes = 0;
    double t0 = now_s();
    do {
      memset(scratch, 0, npl * sizeof(size_t));
      double t = stream_pass(m, ctx, pl, order, n, scratch);
      if (passes == 0 || t < best) best = t;
      passes++;
    } while (passes < 5 || now_s() - t0 < g_min_s);
    memcpy(bytes + (size_t)m * npl, scratch, npl * sizeof(size_t));
    free(scratch);
    us[m] = best / (double)n * 1e6;
    tot[m] = 0;
    for (size_t k = 0; k < npl; k++)
      tot[m] += bytes[(size_t)m * npl + k];
    if (m == 2) sp_compressor_get_stats(ctx[0], &st);
    for (int k = 0; k < KEYS; k++)
      sp_compressor_destroy(ctx[k]);
  }
  for (int m = 0; m < MODES; m++)
    printf("  %-30s %7.1f us/payload  %9zu bytes/pass   vs level 1: time x%.2f, bytes x%.3f\n",
           modes[m], us[m], tot[m], us[m] / us[0], (double)tot[m] / (double)tot[0]);
  printf("  learned, per kind (bytes vs level 1 / vs level 0 default):");
  for (size_t k = 0; k < npl; k++)
    if (bytes[k] && pl[k].name[0])
      printf(" %s x%.3f/x%.3f", pl[k].name, (double)bytes[2 * npl + k] / (double)bytes[k],
             (double)bytes[2 * npl + k] / (double)bytes[npl + k]);
  printf("\n  context: %llu calls, %llu learned (%llu fell back to level 1), %llu level 1, "
         "%llu samples, %llu builds\n",
         (unsigned long long)(st.learned + st.level1), (unsigned long long)st.learned,
         (unsigned long long)st.fallbacks, (unsigned long long)st.level1,
         (unsigned long long)st.samples, (unsigned long long)st.builds);
  free(bytes);
}

/* Appends the bytes of file @p path to @p file; false when it cannot be opened. */
static bool read_file(const char *path, sp_buf_t *file) {
  FILE *f = fopen(path, "rb");
  if (!f) return false;
  uint8_t chunk[65536];
  size_t k;
  while ((k = fread(chunk, 1, sizeof chunk, f)) > 0)
    sp_buf_append(file, chunk, k);
  fclose(f);
  return true;
}

/* Reads @p path (gzip or raw) into a malloc'd buffer; NULL when unreadable. */
static uint8_t *read_payload(const char *path, size_t *len) {
  sp_buf_t file, raw;
  sp_buf_init(&file, 0);
  sp_buf_init(&raw, 0);
  if (!read_file(path, &file)) return NULL;
  sp_buf_t *use = &file;
  if (sp_is_gzip(file.data, file.len) && sp_inflate(file.data, file.len, SP_ENC_GZIP, 0, &raw) == 0)
    use = &raw;
  uint8_t *p = malloc(use->len ? use->len : 1);
  memcpy(p, use->data, use->len);
  *len = use->len;
  sp_buf_free(&file);
  sp_buf_free(&raw);
  return p;
}

/*
 * BENCH_COMPRESS_STREAM=dir: every file in dir (gzip or raw, e.g. /ingest
 * bodies captured from spanprof-loadgen) is one payload of a stream, in
 * name order, as the exporter would see them.
 */
static void captured(const char *dir) {
  struct dirent **names;
  int n = scandir(dir, &names, NULL, alphasort);
  if (n < 0) {
    perror(dir);
    return;
  }
  payload_t *pl = calloc((size_t)n, sizeof(*pl));
  int *order = calloc((size_t)n, sizeof(int));
  size_t npl = 0;
  for (int i = 0; i < n; i++) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, names[i]->d_name);
    if (names[i]->d_name[0] != '.' && (pl[npl].p = read_payload(path, &pl[npl].len)) != NULL) {
      pl[npl].name = "";
      order[npl] = (int)npl;
      npl++;
    }
    free(names[i]);
  }
  free(names);
  char title[4200];
  snprintf(title, sizeof title, "captured stream %s", dir);
  if (npl) stream_bench(title, pl, npl, order, npl);
  for (size_t k = 0; k < npl; k++)
    free(pl[k].p);
  free(pl);
  free(order);
}

static void mixed(void) {
  payload_t pl[9];
  size_t npl = 0;
  g_rng = 0x1234567;
  pl[npl].name = "go", pl[npl].p = make_pprof_as(STYLE_GO, 480, 1500, 80, &pl[npl].len), npl++;
  pl[npl].name = "go-small", pl[npl].p = make_pprof_as(STYLE_GO, 120, 200, 80, &pl[npl].len), npl++;
  pl[npl].name = "java", pl[npl].p = make_pprof_as(STYLE_JAVA, 900, 3000, 0, &pl[npl].len), npl++;
  pl[npl].name = "java-big", pl[npl].p = make_pprof_as(STYLE_JAVA, 2400, 6000, 30, &pl[npl].len),
  npl++;
  pl[npl].name = "python", pl[npl].p = make_pprof_as(STYLE_PYTHON, 300, 800, 50, &pl[npl].len),
  npl++;
  pl[npl].name = "otlp-512", pl[npl].p = make_traces(512, &pl[npl].len), npl++;
  pl[npl].name = "otlp-32", pl[npl].p = make_traces(32, &pl[npl].len), npl++;
  pl[npl].name = "random-16k", pl[npl].len = 16384, pl[npl].p = malloc(16384), npl++;
  for (size_t i = 0; i < 16384; i++)
    pl[npl - 1].p[i] = (uint8_t)rnd();
  printf("mixed stream payloads:");
  for (size_t k = 0; k < npl; k++)
    printf(" %s %zu B", pl[k].name, pl[k].len);
  printf("\n");
  /* The five profile kinds in a random order (a gateway of services in several languages). */
  int order[STREAM_LEN];
  for (size_t i = 0; i < STREAM_LEN; i++)
    order[i] = (int)(rnd() % 5);
  stream_bench("profiles of 5 shapes, interleaved", pl, npl, order, STREAM_LEN);
  /* Everything, random bytes included. */
  for (size_t i = 0; i < STREAM_LEN; i++)
    order[i] = (int)(rnd() % npl);
  stream_bench("profiles, OTLP requests and random bytes, interleaved", pl, npl, order, STREAM_LEN);
  /* A shape change: Go profiles, then only Java ones (re-learning after the switch). */
  for (size_t i = 0; i < STREAM_LEN; i++)
    order[i] = i < STREAM_LEN / 3 ? 0 : 2;
  stream_bench("Go profiles, then Java ones", pl, npl, order, STREAM_LEN);
  for (size_t k = 0; k < npl; k++)
    free(pl[k].p);
}

int main(int argc, char **argv) {
  const char *path = argc > 1 && argv[1][0] ? argv[1] : NULL;
  if (argc > 2) g_min_s = atof(argv[2]);
  uint8_t *pprof = NULL;
  size_t plen = 0;
  sp_buf_t file;
  sp_buf_init(&file, 0);
  const char *what = "pprof (synthesised like spanprof-loadgen's)";
  if (path) {
    if (!read_file(path, &file)) {
      perror(path);
      return 1;
    }
    sp_buf_t raw;
    sp_buf_init(&raw, 0);
    if (sp_is_gzip(file.data, file.len)) {
      if (sp_inflate(file.data, file.len, SP_ENC_GZIP, 0, &raw) != 0) {
        fprintf(stderr, "%s: bad gzip\n", path);
        return 1;
      }
      pprof = sp_buf_steal(&raw, &plen);
    } else {
      pprof = sp_buf_steal(&file, &plen);
    }
    sp_buf_free(&raw);
    what = path;
  } else {
    pprof = make_pprof(&plen);
  }
  bench(what, pprof, plen, file.len ? &file : NULL);
  sp_buf_free(&file);
  size_t tlen;
  uint8_t *traces = make_traces(512, &tlen);
  bench("OTLP traces request, 512 spans", traces, tlen, NULL);
  free(traces);
  mixed();
  if (getenv("BENCH_COMPRESS_STREAM")) captured(getenv("BENCH_COMPRESS_STREAM"));
  if (path)
    sp_free(pprof);
  else
    free(pprof);
  return 0;
}
