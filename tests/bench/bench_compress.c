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
 * reference, and inflating (zlib vs ours) the zlib level-1 upload. Prints
 * µs per call, bytes out, and ours/zlib time ratios.
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

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
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

static uint8_t *make_pprof(size_t *len) {
  enum { N_FUNCS = 480, N_SAMPLES = 1500 };
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
  char **st = sp_arena_alloc(a, (N_FUNCS * 2 + 16 + N_SAMPLES) * sizeof(*st));
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
  p.function = sp_arena_alloc(a, N_FUNCS * sizeof(*p.function));
  p.location = sp_arena_alloc(a, N_FUNCS * sizeof(*p.location));
  for (size_t i = 0; i < N_FUNCS; i++) {
    Perftools__Profiles__Function *f = sp_arena_alloc(a, sizeof(*f));
    Perftools__Profiles__Location *l = sp_arena_alloc(a, sizeof(*l));
    Perftools__Profiles__Line *ln = sp_arena_alloc(a, sizeof(*ln));
    Perftools__Profiles__Line **lines = sp_arena_alloc(a, sizeof(*lines));
    perftools__profiles__function__init(f);
    perftools__profiles__location__init(l);
    perftools__profiles__line__init(ln);
    f->id = l->id = ln->function_id = i + 1;
    f->name = f->system_name =
        STR(fmt(a, "%s.(*%s).Handle%zu", pkgs[i % 8], nouns[(i / 8) % 6], i));
    f->filename = STR(fmt(a, "/src/%s/%s%zu.go", pkgs[i % 8], nouns[(i / 8) % 6], i % 7));
    ln->line = (int64_t)(20 + rnd() % 900);
    lines[0] = ln;
    l->line = lines, l->n_line = 1, l->address = 0x401000 + i * 0x40;
    p.function[i] = f;
    p.location[i] = l;
  }
  p.n_function = p.n_location = N_FUNCS;
  p.sample = sp_arena_alloc(a, N_SAMPLES * sizeof(*p.sample));
  for (size_t i = 0; i < N_SAMPLES; i++) {
    Perftools__Profiles__Sample *s = sp_arena_alloc(a, sizeof(*s));
    perftools__profiles__sample__init(s);
    size_t depth = 8 + rnd() % 33;
    s->location_id = sp_arena_alloc(a, depth * sizeof(uint64_t));
    uint64_t stack = rnd() % 420; /* stacks repeat, with different leaves */
    for (size_t k = 0; k < depth; k++)
      s->location_id[k] =
          k + 1 == depth ? 1 + rnd() % N_FUNCS : 1 + (stack * 31 + k * 17) % N_FUNCS;
    s->n_location_id = depth;
    s->value = sp_arena_alloc(a, 2 * sizeof(int64_t));
    s->value[0] = 1 + (int64_t)(rnd() % 3), s->value[1] = s->value[0] * 10000000;
    s->n_value = 2;
    if (rnd() % 5) {
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
  p.n_sample = N_SAMPLES;
  p.string_table = st, p.n_string_table = ns;
  p.time_nanos = 1700000000000000000ll, p.duration_nanos = 10000000000ll;
  *len = protobuf_c_message_get_packed_size(&p.base);
  uint8_t *buf = malloc(*len);
  protobuf_c_message_pack(&p.base, buf);
  sp_arena_destroy(a);
  return buf;
#undef STR
}

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

enum { OP_ZLIB_GZIP, OP_OURS_GZIP, OP_ZLIB_GUNZIP, OP_OURS_GUNZIP };

static double g_min_s = 0.3;

/* Runs one case for at least g_min_s; returns µs per call and the output size. */
static double run(int op, int level, const uint8_t *in, size_t n, size_t raw_len, size_t *out_len) {
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
      case OP_ZLIB_GUNZIP: zlib_gunzip(in, n, &out, raw_len); break;
      case OP_OURS_GUNZIP:
        /* as a receiver does: a fresh buffer per body */
        sp_buf_free(&out);
        if (sp_inflate(in, n, SP_ENC_GZIP, 0, &out) != 0 || out.len != raw_len) abort();
        break;
      }
      /* freshly allocated output per call for the compressors too, like the exporters */
      if (op == OP_ZLIB_GZIP || op == OP_OURS_GZIP) {
        *out_len = out.len;
        sp_buf_free(&out);
      }
    }
    iters += 20;
    t = now_s() - t0;
  } while (t < g_min_s);
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

int main(int argc, char **argv) {
  const char *path = argc > 1 && argv[1][0] ? argv[1] : NULL;
  if (argc > 2) g_min_s = atof(argv[2]);
  uint8_t *pprof = NULL;
  size_t plen = 0;
  sp_buf_t file;
  sp_buf_init(&file, 0);
  const char *what = "pprof (synthesised like spanprof-loadgen's)";
  if (path) {
    FILE *f = fopen(path, "rb");
    if (!f) {
      perror(path);
      return 1;
    }
    sp_buf_t raw;
    sp_buf_init(&raw, 0);
    uint8_t chunk[65536];
    size_t k;
    while ((k = fread(chunk, 1, sizeof chunk, f)) > 0)
      sp_buf_append(&file, chunk, k);
    fclose(f);
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
  if (path)
    sp_free(pprof);
  else
    free(pprof);
  return 0;
}
