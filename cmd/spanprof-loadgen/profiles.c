/*
 * profiles.c — the `profiles` mode: pprof CPU profiles whose samples carry
 * `span_id` labels of spans sent alongside, so that spanprofd's join has
 * real work.
 *
 * Each job sends a small OTLP/HTTP traces batch (the spans of one service,
 * from the span pool of traces.c) and then one CPU profile of that service
 * whose samples name those spans in a `span_id` label (80% of samples; the
 * rest carry none, like code running outside any span), over Pyroscope's
 * /ingest, the Push API (Connect over HTTP, or gRPC) or OTLP profiles.
 *
 * Profiles look like a Go service's 10 s CPU profile: a few hundred
 * functions across packages, a mapping, stacks 8–40 frames deep under
 * net/http's serving goroutine, ~1,500 samples of [samples/count,
 * cpu/nanoseconds] at 100 Hz — about 30 KB gzipped (--samples scales it).
 *
 * Every send must name new spans, and compressing each profile anew would
 * cost more than everything else the load generator does. So the profile is
 * encoded with the span-ID strings and the time fields last (protobuf-c
 * writes fields in number order, and string_table entries are placed so
 * that the span IDs come after every other string), the part before them is
 * deflated once, and the tail is appended as a stored (uncompressed)
 * deflate block: patching a send's span IDs and time is then a few byte
 * writes plus a CRC-32 over the tail, combined with the prefix's CRC
 * (crc32_combine). The result is a valid gzip member of the usual size.
 * OTLP profiles are sent uncompressed and patched in place likewise.
 */
#include "cmd/spanprof-loadgen/loadgen.h"

#include "pipeline/alloc.h"
#include "pipeline/arena.h"
#include "pipeline/batch.h"
#include "pipeline/error.h"
#include "pipeline/hex.h"
#include "pipeline/otlpprofiles.h"
#include "pipeline/pbwire.h"

#include "push/v1/push.pb-c.h"

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

enum { LG_API_INGEST, LG_API_PUSH, LG_API_OTLP };

typedef struct lg_prof_s {
  uint8_t *body;       /* what is sent: the gzip member, a PushRequest, or an OTLP request */
  size_t len;
  size_t gz_off;       /* where the gzip member starts in body (ingest/push) */
  size_t gz_len;
  size_t tail_off;     /* stored tail (uncompressed pprof bytes) in body */
  size_t tail_len;
  uint32_t crc_prefix; /* CRC-32 of the uncompressed pprof before the tail */
  size_t raw_len;      /* uncompressed pprof length */
  uint32_t *hex_off;   /* span ID hex strings (16 chars) in body */
  uint64_t *hex_base;  /* their unpatched values */
  size_t n_hex;
  uint32_t *bin_off;   /* OTLP: span IDs as 8 bytes in body */
  size_t n_bin;
  size_t time_off;     /* the 9-byte varint of time_nanos in body (0: none) */
  size_t uuid_off;     /* push: the 36-char sample ID (0: none) */
  size_t samples;
} lg_prof_t;

typedef struct lg_profiles_s {
  int api;
  size_t n_samples;
  lg_span_pool_t *spans;
  lg_prof_t *prof;
  size_t n_prof, max_len;
  lg_target_t prof_target, traces_target;
  bool send_traces;
  uint8_t **pbufs, **tbufs;
  char (*urls)[512];
  char base_url[400];
  size_t next;
  uint64_t rng;
} lg_profiles_t;

/* ---- building a pprof ------------------------------------------------------------ */

static const char *const lg__pkgs[] = {
    "net/http", "encoding/json", "database/sql", "github.com/jackc/pgx/v5", "runtime",
    "main", "github.com/shop/orders", "github.com/shop/cart", "sync", "bufio", "compress/gzip",
    "github.com/redis/go-redis/v9", "crypto/tls", "strings", "sort", "reflect"};
static const char *const lg__verbs[] = {
    "Handle", "Serve", "decode", "encode", "Query", "scan", "Read", "Write", "Marshal",
    "Unmarshal", "mallocgc", "growslice", "Lock", "Unlock", "process", "validate", "compute",
    "lookup", "flush", "Next", "parse", "render", "hash", "compress"};
static const char *const lg__nouns[] = {"", "Order", "Cart", "Row", "Conn", "Buffer", "State",
                                        "Request", "Response", "Value", "Item", "Batch"};

typedef Perftools__Profiles__Profile lg_pp_t;

static char *lg__fmt(sp_arena_t *a, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static char *lg__fmt(sp_arena_t *a, const char *fmt, ...) {
  char buf[256];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(buf, sizeof(buf), fmt, ap);
  va_end(ap);
  return sp_arena_strdup(a, buf);
}

static Perftools__Profiles__ValueType *lg__vt(sp_arena_t *a, int64_t type, int64_t unit) {
  Perftools__Profiles__ValueType *v = sp_arena_alloc(a, sizeof(*v));
  if (v != NULL) {
    perftools__profiles__value_type__init(v);
    v->type = type;
    v->unit = unit;
  }
  return v;
}

/*
 * Builds a profile whose last @p n_ids strings are the span IDs (hex of
 * @p ids) into @p a. Sample labels point at them.
 */
static lg_pp_t *lg__pprof(sp_arena_t *a, uint64_t *rng, size_t n_samples, const uint64_t *ids,
                          size_t n_ids, size_t *n_fixed_strings) {
  enum { N_FUNCS = 480, N_STACKS = 420 };
  lg_pp_t *p = sp_arena_alloc(a, sizeof(*p));
  if (p == NULL)
    return NULL;
  perftools__profiles__profile__init(p);
  size_t cap_str = N_FUNCS * 2 + 32 + n_ids;
  char **st = sp_arena_alloc(a, cap_str * sizeof(*st));
  if (st == NULL)
    return NULL;
  size_t ns = 0;
#define LG_STR(s) (st[ns] = (s), (int64_t)ns++)
  LG_STR("");
  int64_t s_samples = LG_STR("samples"), s_count = LG_STR("count"), s_cpu = LG_STR("cpu"),
          s_ns = LG_STR("nanoseconds"), s_span = LG_STR("span_id"),
          s_bin = LG_STR("/usr/local/bin/shop-api");
  p->n_sample_type = 2;
  p->sample_type = sp_arena_alloc(a, 2 * sizeof(*p->sample_type));
  if (p->sample_type == NULL || !(p->sample_type[0] = lg__vt(a, s_samples, s_count)) ||
      !(p->sample_type[1] = lg__vt(a, s_cpu, s_ns)) || !(p->period_type = lg__vt(a, s_cpu, s_ns)))
    return NULL;
  p->period = 10000000;
  /* One mapping, N_FUNCS functions, one location per function. */
  Perftools__Profiles__Mapping *m = sp_arena_alloc(a, sizeof(*m));
  if (m == NULL)
    return NULL;
  perftools__profiles__mapping__init(m);
  m->id = 1;
  m->memory_start = 0x400000;
  m->memory_limit = 0x1c00000;
  m->filename = s_bin;
  m->build_id = LG_STR("a3f1c2d4e5b60718293a4b5c6d7e8f9011223344");
  m->has_functions = 1;
  m->has_filenames = 1;
  m->has_line_numbers = 1;
  p->mapping = sp_arena_alloc(a, sizeof(*p->mapping));
  if (p->mapping == NULL)
    return NULL;
  p->mapping[0] = m;
  p->n_mapping = 1;
  p->function = sp_arena_alloc(a, N_FUNCS * sizeof(*p->function));
  p->location = sp_arena_alloc(a, N_FUNCS * sizeof(*p->location));
  if (p->function == NULL || p->location == NULL)
    return NULL;
  for (size_t i = 0; i < N_FUNCS; i++) {
    Perftools__Profiles__Function *f = sp_arena_alloc(a, sizeof(*f));
    Perftools__Profiles__Location *l = sp_arena_alloc(a, sizeof(*l));
    Perftools__Profiles__Line *ln = sp_arena_alloc(a, sizeof(*ln));
    Perftools__Profiles__Line **lines = sp_arena_alloc(a, sizeof(*lines));
    if (!f || !l || !ln || !lines)
      return NULL;
    perftools__profiles__function__init(f);
    perftools__profiles__location__init(l);
    perftools__profiles__line__init(ln);
    const char *pkg = lg__pkgs[i % 16];
    const char *noun = lg__nouns[(i / 16) % 12];
    char *name = i < 4 ? NULL
                       : lg__fmt(a, "%s.%s%s%s", pkg, noun[0] ? "(*" : "", noun,
                                 noun[0] ? ")." : "");
    if (i >= 4) {
      char *full = name == NULL ? NULL : lg__fmt(a, "%s%s%zu", name, lg__verbs[i % 24], i / 24);
      name = full;
    } else {
      static const char *const roots[] = {"runtime.goexit", "net/http.(*conn).serve",
                                          "net/http.serverHandler.ServeHTTP",
                                          "net/http.(*ServeMux).ServeHTTP"};
      name = (char *)roots[i];
    }
    char *file = lg__fmt(a, "/src/%s/%s.go", pkg, noun[0] ? noun : "main");
    if (name == NULL || file == NULL)
      return NULL;
    f->id = i + 1;
    f->name = LG_STR(name);
    f->system_name = f->name;
    f->filename = LG_STR(file);
    f->start_line = (int64_t)(20 + (i * 37) % 900);
    ln->function_id = f->id;
    ln->line = f->start_line + (int64_t)(lg_rand(rng) % 60);
    l->id = i + 1;
    l->mapping_id = 1;
    l->address = 0x401000 + i * 0x1a3;
    lines[0] = ln;
    l->line = lines;
    l->n_line = 1;
    p->function[i] = f;
    p->location[i] = l;
  }
  p->n_function = p->n_location = N_FUNCS;
  /* Stacks: the serving chain, then a random walk biased to nearby functions. */
  uint64_t *stacks[N_STACKS];
  size_t depth[N_STACKS];
  for (size_t k = 0; k < N_STACKS; k++) {
    size_t d = 8 + lg_rand(rng) % 33;
    uint64_t *ids_ = sp_arena_alloc(a, d * sizeof(uint64_t));
    if (ids_ == NULL)
      return NULL;
    /* Leaf first: fill from the root end. */
    ids_[d - 1] = 1;
    ids_[d - 2] = 2;
    ids_[d - 3] = 3;
    ids_[d - 4] = 4;
    uint64_t cur = 5 + lg_rand(rng) % 60;
    for (size_t j = 4; j < d; j++) {
      ids_[d - 1 - j] = cur;
      cur = 5 + (cur + lg_rand(rng) % 40) % (N_FUNCS - 5);
    }
    stacks[k] = ids_;
    depth[k] = d;
  }
  *n_fixed_strings = ns;
  int64_t first_id = (int64_t)ns;
  for (size_t k = 0; k < n_ids; k++) {
    uint8_t be[8];
    for (int b = 0; b < 8; b++)
      be[b] = (uint8_t)(ids[k] >> (56 - 8 * b));
    char *hex = sp_arena_alloc(a, 17);
    if (hex == NULL)
      return NULL;
    sp_hex_encode(be, 8, hex, 17);
    LG_STR(hex);
  }
#undef LG_STR
  p->string_table = st;
  p->n_string_table = ns;
  p->sample = sp_arena_alloc(a, n_samples * sizeof(*p->sample));
  if (p->sample == NULL)
    return NULL;
  for (size_t i = 0; i < n_samples; i++) {
    Perftools__Profiles__Sample *s = sp_arena_alloc(a, sizeof(*s));
    int64_t *vals = sp_arena_alloc(a, 2 * sizeof(int64_t));
    if (s == NULL || vals == NULL)
      return NULL;
    perftools__profiles__sample__init(s);
    /* Skewed towards the first stacks, as real profiles are. */
    uint64_t r = lg_rand(rng) % N_STACKS;
    size_t k = (size_t)((r * r) / N_STACKS);
    s->location_id = stacks[k];
    s->n_location_id = depth[k];
    vals[0] = 1 + (int64_t)(lg_rand(rng) % 4 == 0);
    vals[1] = vals[0] * 10000000;
    s->value = vals;
    s->n_value = 2;
    if (n_ids > 0 && lg_rand(rng) % 5 != 0) {
      Perftools__Profiles__Label *lb = sp_arena_alloc(a, sizeof(*lb));
      Perftools__Profiles__Label **lbs = sp_arena_alloc(a, sizeof(*lbs));
      if (lb == NULL || lbs == NULL)
        return NULL;
      perftools__profiles__label__init(lb);
      lb->key = s_span;
      lb->str = first_id + (int64_t)(lg_rand(rng) % n_ids);
      lbs[0] = lb;
      s->label = lbs;
      s->n_label = 1;
    }
    p->sample[i] = s;
  }
  p->n_sample = n_samples;
  p->time_nanos = 1700000000000000000;
  p->duration_nanos = 10000000000;
  return p;
}

/* ---- gzip with a patchable stored tail -------------------------------------------- */

/* gzip(prefix deflated + tail stored); records where the tail lands. 0 or SP_ENOMEM. */
static int lg__gzip_tail(const uint8_t *raw, size_t raw_len, size_t tail_at, sp_buf_t *out,
                         size_t *tail_off, uint32_t *crc_prefix) {
  static const uint8_t hdr[10] = {0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff};
  size_t tail_len = raw_len - tail_at;
  if (tail_len > 65535)
    return SP_EINVAL;
  if (sp_buf_append(out, hdr, sizeof(hdr)) != 0)
    return SP_ENOMEM;
  z_stream z;
  memset(&z, 0, sizeof(z));
  if (deflateInit2(&z, 6, Z_DEFLATED, -15, 8, Z_DEFAULT_STRATEGY) != Z_OK)
    return SP_ENOMEM;
  size_t bound = deflateBound(&z, tail_at) + 16;
  int rc = sp_buf_reserve(out, bound + tail_len + 16);
  if (rc == 0) {
    z.next_in = (Bytef *)raw;
    z.avail_in = (uInt)tail_at;
    z.next_out = out->data + out->len;
    z.avail_out = (uInt)bound;
    int zr = deflate(&z, Z_SYNC_FLUSH); /* byte-aligned, no final block yet */
    if (zr != Z_OK || z.avail_in != 0)
      rc = SP_ENOMEM;
    else
      out->len += bound - z.avail_out;
  }
  deflateEnd(&z);
  if (rc != 0)
    return rc;
  uint8_t blk[5] = {0x01, (uint8_t)tail_len, (uint8_t)(tail_len >> 8), (uint8_t)~tail_len,
                    (uint8_t)(~tail_len >> 8)};
  sp_buf_append(out, blk, 5);
  *tail_off = out->len;
  sp_buf_append(out, raw + tail_at, tail_len);
  *crc_prefix = (uint32_t)crc32(0, raw, (uInt)tail_at);
  uint32_t crc = (uint32_t)crc32_combine(*crc_prefix, crc32(0, raw + tail_at, (uInt)tail_len),
                                         (z_off_t)tail_len);
  uint8_t trl[8];
  for (int i = 0; i < 4; i++) {
    trl[i] = (uint8_t)(crc >> (8 * i));
    trl[4 + i] = (uint8_t)(raw_len >> (8 * i));
  }
  return sp_buf_append(out, trl, 8);
}

/* Finds the offsets to patch in an encoded pprof: span-ID strings and time_nanos. */
static int lg__pprof_offsets(const uint8_t *raw, size_t len, size_t first_id_index,
                             size_t *tail_at, size_t *time_at) {
  sp_pbwire_t r = sp_pbwire_init(raw, len);
  sp_pbwire_field_t f;
  size_t idx = 0;
  *tail_at = 0;
  *time_at = 0;
  while (true) {
    const uint8_t *at = r.p;
    if (!sp_pbwire_next(&r, &f))
      break;
    if (f.num == 6 && f.wt == 2) {
      if (idx == first_id_index)
        *tail_at = (size_t)(at - raw);
      idx++;
    } else if (f.num == 9 && f.wt == 0) {
      *time_at = (size_t)(f.data - raw);
      if (r.p - f.data != 9)
        return SP_EINVAL;
    }
  }
  return r.bad || *tail_at == 0 || *time_at < *tail_at ? SP_EINVAL : 0;
}

static int lg__find_ids(lg_prof_t *pr, const uint8_t *body, size_t from, size_t to,
                        const uint64_t *ids, size_t n, bool binary) {
  for (size_t k = 0; k < n; k++) {
    uint8_t be[8];
    char hex[17];
    for (int b = 0; b < 8; b++)
      be[b] = (uint8_t)(ids[k] >> (56 - 8 * b));
    sp_hex_encode(be, 8, hex, sizeof(hex));
    const uint8_t *p = body + from, *end = body + to;
    const void *needle = binary ? (const void *)be : (const void *)hex;
    size_t nl = binary ? 8 : 16;
    while ((p = memmem(p, (size_t)(end - p), needle, nl)) != NULL) {
      if (binary) {
        uint32_t *v = sp_realloc(pr->bin_off, (pr->n_bin + 1) * sizeof(*v));
        if (v == NULL)
          return SP_ENOMEM;
        pr->bin_off = v;
        v[pr->n_bin++] = (uint32_t)(p - body);
      } else {
        uint32_t *v = sp_realloc(pr->hex_off, (pr->n_hex + 1) * sizeof(*v));
        uint64_t *b = v ? sp_realloc(pr->hex_base, (pr->n_hex + 1) * sizeof(*b)) : NULL;
        if (v != NULL)
          pr->hex_off = v;
        if (b == NULL)
          return SP_ENOMEM;
        pr->hex_base = b;
        v[pr->n_hex] = (uint32_t)(p - body);
        b[pr->n_hex++] = ids[k];
      }
      p += nl;
    }
  }
  return 0;
}

static int lg__prof_build(lg_profiles_t *t, size_t i, uint64_t *rng, lg_prof_t *pr) {
  int rc = SP_ENOMEM;
  sp_arena_t *a = sp_arena_create(1 << 20);
  sp_buf_t raw, gz, body;
  sp_buf_init(&raw, 0);
  sp_buf_init(&gz, 0);
  sp_buf_init(&body, 0);
  size_t n_ids = 0;
  const uint64_t *ids = lg_span_pool_span_ids(t->spans, i, &n_ids);
  size_t fixed = 0;
  lg_pp_t *p = a ? lg__pprof(a, rng, t->n_samples, ids, n_ids, &fixed) : NULL;
  if (p == NULL)
    goto fail;
  pr->samples = p->n_sample;
  size_t n = protobuf_c_message_get_packed_size(&p->base);
  if ((rc = sp_buf_reserve(&raw, n)) != 0)
    goto fail;
  raw.len = protobuf_c_message_pack(&p->base, raw.data);
  pr->raw_len = raw.len;
  size_t tail_at, time_at;
  if ((rc = lg__pprof_offsets(raw.data, raw.len, fixed, &tail_at, &time_at)) != 0)
    goto fail;
  const char *svc = lg_span_pool_service(t->spans, i);
  if (t->api == LG_API_OTLP) {
    sp_profiles_t *batch = sp_profiles_create();
    sp_label_t labels[] = {{"service_name", svc}, {"__name__", "process_cpu"}};
    sp_otlpprofiles_req_t *req = NULL;
    rc = SP_ENOMEM;
    if (batch != NULL &&
        sp_profiles_add(batch, labels, 2, 1700000000000000000, 1700000010000000000, raw.data,
                        raw.len) != NULL)
      rc = sp_otlpprofiles_from_batch(batch, a, &req);
    if (rc == 0) {
      size_t m = protobuf_c_message_get_packed_size(&req->base);
      rc = sp_buf_reserve(&body, m);
      if (rc == 0)
        body.len = protobuf_c_message_pack(&req->base, body.data);
    }
    sp_profiles_unref(batch);
    if (rc == 0)
      rc = lg__find_ids(pr, body.data, 0, body.len, ids, n_ids, false);
    if (rc == 0)
      rc = lg__find_ids(pr, body.data, 0, body.len, ids, n_ids, true);
    if (rc != 0)
      goto fail;
    pr->len = body.len;
    pr->body = sp_buf_steal(&body, &pr->len);
    goto done;
  }
  if ((rc = lg__gzip_tail(raw.data, raw.len, tail_at, &gz, &pr->tail_off, &pr->crc_prefix)) != 0)
    goto fail;
  pr->tail_len = raw.len - tail_at;
  pr->gz_len = gz.len;
  size_t time_in_tail = time_at - tail_at;
  if (t->api == LG_API_PUSH) {
    Types__V1__LabelPair l1 = TYPES__V1__LABEL_PAIR__INIT, l2 = TYPES__V1__LABEL_PAIR__INIT,
                         l3 = TYPES__V1__LABEL_PAIR__INIT;
    l1.name = "__name__";
    l1.value = "process_cpu";
    l2.name = "service_name";
    l2.value = (char *)svc;
    l3.name = "env";
    l3.value = "bench";
    Types__V1__LabelPair *labels[] = {&l1, &l2, &l3};
    Push__V1__RawSample smp = PUSH__V1__RAW_SAMPLE__INIT;
    smp.raw_profile.data = gz.data;
    smp.raw_profile.len = gz.len;
    smp.id = "00000000-0000-4000-8000-000000000000";
    Push__V1__RawSample *smps[] = {&smp};
    Push__V1__RawProfileSeries series = PUSH__V1__RAW_PROFILE_SERIES__INIT;
    series.labels = labels;
    series.n_labels = 3;
    series.samples = smps;
    series.n_samples = 1;
    Push__V1__RawProfileSeries *ser[] = {&series};
    Push__V1__PushRequest req = PUSH__V1__PUSH_REQUEST__INIT;
    req.series = ser;
    req.n_series = 1;
    size_t m = protobuf_c_message_get_packed_size(&req.base);
    if ((rc = sp_buf_reserve(&body, m)) != 0)
      goto fail;
    body.len = protobuf_c_message_pack(&req.base, body.data);
    const uint8_t *g = memmem(body.data, body.len, gz.data, gz.len);
    const uint8_t *u = memmem(body.data, body.len, smp.id, 36);
    if (g == NULL || u == NULL) {
      rc = SP_EINVAL;
      goto fail;
    }
    pr->gz_off = (size_t)(g - body.data);
    pr->uuid_off = (size_t)(u - body.data);
  } else {
    if ((rc = sp_buf_append(&body, gz.data, gz.len)) != 0)
      goto fail;
    pr->gz_off = 0;
  }
  pr->tail_off += pr->gz_off;
  pr->time_off = pr->tail_off + time_in_tail;
  rc = lg__find_ids(pr, body.data, pr->tail_off, pr->tail_off + pr->tail_len, ids, n_ids, false);
  if (rc != 0)
    goto fail;
  pr->body = sp_buf_steal(&body, &pr->len);
done:
  rc = pr->body != NULL ? 0 : SP_ENOMEM;
fail:
  sp_buf_free(&raw);
  sp_buf_free(&gz);
  sp_buf_free(&body);
  sp_arena_destroy(a);
  return rc;
}

/* Copies profile @p i into @p dst and patches its span IDs, time and CRC. */
static size_t lg__prof_emit(lg_profiles_t *t, size_t i, uint8_t *dst, uint64_t span_key,
                            uint64_t now_ns) {
  const lg_prof_t *pr = &t->prof[i];
  memcpy(dst, pr->body, pr->len);
  for (size_t k = 0; k < pr->n_hex; k++) {
    uint64_t v = pr->hex_base[k] ^ span_key;
    uint8_t be[8];
    char hex[17];
    for (int b = 0; b < 8; b++)
      be[b] = (uint8_t)(v >> (56 - 8 * b));
    sp_hex_encode(be, 8, hex, sizeof(hex));
    memcpy(dst + pr->hex_off[k], hex, 16);
  }
  for (size_t k = 0; k < pr->n_bin; k++)
    for (int b = 0; b < 8; b++)
      dst[pr->bin_off[k] + (size_t)b] ^= (uint8_t)(span_key >> (56 - 8 * b));
  if (t->api == LG_API_OTLP)
    return pr->len;
  /* time_nanos: the profile covers the 10 s before now; a 9-byte varint keeps its size. */
  uint64_t tn = now_ns - 10000000000ull;
  uint8_t *q = dst + pr->time_off;
  for (int b = 0; b < 8; b++) {
    q[b] = (uint8_t)(0x80 | (tn & 0x7f));
    tn >>= 7;
  }
  q[8] = (uint8_t)tn;
  if (pr->uuid_off != 0) {
    char u[40];
    uint64_t a = lg_rand(&t->rng), b = lg_rand(&t->rng);
    snprintf(u, sizeof(u), "%08x-%04x-4%03x-8%03x-%012llx", (unsigned)(a >> 32),
             (unsigned)(a >> 16) & 0xffff, (unsigned)a & 0xfff, (unsigned)(b >> 48) & 0xfff,
             (unsigned long long)(b & 0xffffffffffffull));
    memcpy(dst + pr->uuid_off, u, 36);
  }
  uint32_t crc = (uint32_t)crc32_combine(pr->crc_prefix,
                                         crc32(0, dst + pr->tail_off, (uInt)pr->tail_len),
                                         (z_off_t)pr->tail_len);
  uint8_t *trl = dst + pr->gz_off + pr->gz_len - 8;
  for (int b = 0; b < 4; b++)
    trl[b] = (uint8_t)(crc >> (8 * b));
  return pr->len;
}

/* ---- the mode ---------------------------------------------------------------------- */

static bool lg__profiles_fill(void *ctx, lg_job_t *job) {
  lg_profiles_t *t = ctx;
  size_t i = t->next++ % t->n_prof;
  uint64_t sk = lg_rand(&t->rng), tk = lg_rand(&t->rng), now = lg_wall_ns();
  size_t n = 0;
  if (t->send_traces) {
    size_t len = lg_span_pool_emit(t->spans, i, t->tbufs[job->idx], tk, sk, now);
    job->parts[n++] = (lg_part_t){&t->traces_target, t->tbufs[job->idx], len,
                                  lg_span_pool_spans(t->spans, i), NULL};
  }
  size_t len = lg__prof_emit(t, i, t->pbufs[job->idx], sk, now);
  lg_part_t part = {&t->prof_target, t->pbufs[job->idx], len, 1, NULL};
  if (t->api == LG_API_INGEST) {
    uint64_t until = now / 1000000000ull;
    snprintf(t->urls[job->idx], sizeof(t->urls[0]),
             "%s/ingest?name=%s%%7Benv%%3Dbench%%7D&from=%llu&until=%llu&format=pprof"
             "&sampleRate=100&spyName=gospy",
             t->base_url, lg_span_pool_service(t->spans, i), (unsigned long long)(until - 10),
             (unsigned long long)until);
    part.url = t->urls[job->idx];
  }
  job->parts[n++] = part;
  job->n_parts = n;
  return true;
}

static const char lg__profiles_help[] =
    "usage: spanprof-loadgen profiles [flags]\n"
    "\n"
    "Sends pprof CPU profiles (~30 KB gzipped) whose samples carry span_id labels\n"
    "of spans it sends first over OTLP/HTTP, so that the span-profile join has work.\n"
    "--rate and --count are in profiles.\n"
    "\n"
    "  --api ingest|push|otlp   Pyroscope /ingest (default), the Push API (Connect over\n"
    "                           HTTP, or gRPC with --protocol grpc), or OTLP profiles\n"
    "                           (HTTP or gRPC); --endpoint defaults to :4040 (ingest,\n"
    "                           push) or :4318/:4317 (otlp)\n"
    "  --traces-endpoint H:P    OTLP/HTTP endpoint for the spans (default 127.0.0.1:4318)\n"
    "  --no-traces              send the profiles only\n"
    "  --spans N                spans per profile, all named by its samples (default 32)\n"
    "  --samples N              samples per profile (default 1500)\n"
    "  --pool N                 distinct profiles (default 16)\n"
    "  --services N             distinct service names (default 4)\n";

int lg_profiles_main(int argc, char **argv) {
  lg_common_t c;
  lg_common_defaults(&c);
  lg_profiles_t t;
  memset(&t, 0, sizeof(t));
  t.api = LG_API_INGEST;
  t.n_samples = 1500;
  t.send_traces = true;
  size_t spans = 32, pool_n = 16, services = 4;
  const char *traces_ep = "127.0.0.1:4318";
  for (int i = 0; i < argc; i++) {
    int r = lg_common_flag(&c, argc, argv, &i);
    if (r < 0)
      return 2;
    if (r > 0)
      continue;
    const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
    double n;
    if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
      fputs(lg__profiles_help, stdout);
      fputs(lg_common_help, stdout);
      return 0;
    } else if (strcmp(a, "--no-traces") == 0) {
      t.send_traces = false;
    } else if (strcmp(a, "--api") == 0 && v != NULL) {
      i++;
      if (strcmp(v, "ingest") == 0)
        t.api = LG_API_INGEST;
      else if (strcmp(v, "push") == 0)
        t.api = LG_API_PUSH;
      else if (strcmp(v, "otlp") == 0)
        t.api = LG_API_OTLP;
      else {
        fprintf(stderr, "spanprof-loadgen: bad value for --api: %s\n", v);
        return 2;
      }
    } else if (strcmp(a, "--traces-endpoint") == 0 && v != NULL) {
      traces_ep = v;
      i++;
    } else if ((strcmp(a, "--spans") == 0 || strcmp(a, "--samples") == 0 ||
                strcmp(a, "--pool") == 0 || strcmp(a, "--services") == 0) &&
               v != NULL) {
      i++;
      if (lg_parse_count(v, &n) != 0 || n < 1 || n > 1e6) {
        fprintf(stderr, "spanprof-loadgen: bad value for %s: %s\n", a, v);
        return 2;
      }
      if (strcmp(a, "--spans") == 0)
        spans = (size_t)n;
      else if (strcmp(a, "--samples") == 0)
        t.n_samples = (size_t)n;
      else if (strcmp(a, "--pool") == 0)
        pool_n = (size_t)n;
      else
        services = (size_t)n;
    } else {
      fprintf(stderr, "spanprof-loadgen profiles: unknown flag %s (see --help)\n", a);
      return 2;
    }
  }
  if (t.api != LG_API_OTLP && spans > 2000) {
    fprintf(stderr, "spanprof-loadgen: at most 2000 --spans with --api %s\n",
            t.api == LG_API_PUSH ? "push" : "ingest");
    return 2;
  }
  if (t.api == LG_API_INGEST && c.proto == LG_PROTO_GRPC) {
    fprintf(stderr, "spanprof-loadgen: --api ingest is HTTP only\n");
    return 2;
  }
  t.rng = c.seed ^ 0x9f0f11e5;
  uint64_t rng = c.seed * 31 + 7;
  lg_span_pool_opts_t po = {.batches = pool_n, .batch_spans = spans, .services = services,
                            .seed = c.seed ^ 0x5a5a};
  int rc = lg_span_pool_create(&po, &t.spans);
  t.n_prof = pool_n;
  t.prof = rc == 0 ? sp_calloc(pool_n, sizeof(*t.prof)) : NULL;
  for (size_t i = 0; t.prof != NULL && rc == 0 && i < pool_n; i++) {
    rc = lg__prof_build(&t, i, &rng, &t.prof[i]);
    if (t.prof[i].len > t.max_len)
      t.max_len = t.prof[i].len;
  }
  if (t.prof == NULL || rc != 0) {
    fprintf(stderr, "spanprof-loadgen: cannot build the profiles: %s\n",
                    sp_strerror(rc != 0 ? rc : SP_ENOMEM));
    return 1;
  }
  /* The profile target first: --rate and --count count profiles. */
  lg_common_t pc = c;
  pc.gzip = false; /* the bodies are gzip members (pprof) or carry them */
  pc.json = false;
  if (t.api == LG_API_OTLP) {
    lg_target_setup(&t.prof_target, &pc, "4318", "/v1development/profiles",
                    "/opentelemetry.proto.collector.profiles.v1development.ProfilesService/Export",
                    "application/x-protobuf");
  } else {
    lg_target_setup(&t.prof_target, &pc, "4040",
                    t.api == LG_API_PUSH ? "/push.v1.PusherService/Push" : "",
                    "/push.v1.PusherService/Push",
                    t.api == LG_API_PUSH ? "application/proto" : "application/octet-stream");
    if (t.api == LG_API_PUSH && c.proto == LG_PROTO_HTTP && t.prof_target.n_headers < 4)
      t.prof_target.headers[t.prof_target.n_headers++] =
          (sp_http_header_t){"Connect-Protocol-Version", "1"};
    snprintf(t.base_url, sizeof(t.base_url), "%s", t.prof_target.url);
  }
  t.prof_target.items = LG_ITEMS_PROFILES;
  lg_common_t tc = c;
  tc.proto = LG_PROTO_HTTP;
  tc.json = tc.gzip = false;
  tc.endpoint = traces_ep;
  tc.n_headers = 0;
  lg_target_setup(&t.traces_target, &tc, "4318", "/v1/traces", NULL, "application/x-protobuf");
  t.traces_target.items = LG_ITEMS_SPANS;
  size_t slots = c.send.inflight ? c.send.inflight : c.send.connections;
  t.pbufs = sp_calloc(slots, sizeof(*t.pbufs));
  t.tbufs = sp_calloc(slots, sizeof(*t.tbufs));
  t.urls = sp_calloc(slots, sizeof(*t.urls));
  if (t.pbufs == NULL || t.tbufs == NULL || t.urls == NULL)
    return 1;
  for (size_t i = 0; i < slots; i++)
    if ((t.pbufs[i] = sp_malloc(t.max_len)) == NULL ||
        (t.tbufs[i] = sp_malloc(lg_span_pool_max_len(t.spans))) == NULL)
      return 1;
  if (!c.quiet)
    fprintf(stderr,
            "loadgen profiles: %zu-sample profiles of %zu bytes (%zu uncompressed), %zu spans "
            "each, to %s\n",
            t.prof[0].samples, t.prof[0].gz_len ? t.prof[0].gz_len : t.prof[0].len,
            t.prof[0].raw_len, lg_span_pool_spans(t.spans, 0),
            c.proto == LG_PROTO_GRPC ? t.prof_target.grpc_target : t.prof_target.url);
  uv_loop_t loop;
  uv_loop_init(&loop);
  lg_engine_t eng = {.loop = &loop, .o = c.send, .fill = lg__profiles_fill, .fill_ctx = &t,
                     .seed = c.seed, .mode = "profiles"};
  eng.targets[eng.n_targets++] = &t.prof_target;
  if (t.send_traces)
    eng.targets[eng.n_targets++] = &t.traces_target;
  rc = lg_engine_run(&eng);
  if (rc != 0)
    fprintf(stderr, "spanprof-loadgen: cannot start: %s\n", sp_strerror(rc));
  else
    lg_engine_report(&eng, c.want_json_out, stdout);
  uv_loop_close(&loop);
  for (size_t i = 0; i < slots; i++) {
    sp_free(t.pbufs[i]);
    sp_free(t.tbufs[i]);
  }
  sp_free(t.pbufs);
  sp_free(t.tbufs);
  sp_free(t.urls);
  for (size_t i = 0; i < t.n_prof; i++) {
    sp_free(t.prof[i].body);
    sp_free(t.prof[i].hex_off);
    sp_free(t.prof[i].hex_base);
    sp_free(t.prof[i].bin_off);
  }
  sp_free(t.prof);
  sp_free(eng.jobs);
  lg_span_pool_destroy(t.spans);
  if (rc != 0)
    return 1;
  return eng.c[LG_ITEMS_PROFILES].failed_items + eng.c[LG_ITEMS_SPANS].failed_items > 0 ? 3 : 0;
}
