/*
 * test_compress.c — limited inflating, format detection, gzip encoding.
 *
 * Encoding and decoding run on ISA-L (levels 1-3) and zlib (0, 4-9), so the
 * cross-compatibility tests use zlib's own API directly as the reference:
 * what we write, zlib reads; what zlib writes at any level, we read.
 */
#include "pipeline/alloc.h"
#include "pipeline/compress.h"
#include "pipeline/error.h"

#include <pthread.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <zlib.h>

/* Compressible but not trivial test data. */
static uint8_t *make_text(size_t n) {
  uint8_t *p = malloc(n);
  uint32_t x = 12345;
  for (size_t i = 0; i < n; i++) {
    x = x * 1103515245u + 12345u;
    p[i] = (uint8_t)("spanprof profiles and traces "[(x >> 16) % 29]);
  }
  return p;
}

/* Text with repeats (words, like labels and attribute keys): LZ77 has matches to find. */
static uint8_t *make_words(size_t n) {
  static const char *const w[] = {"service.name",
                                  "span_id",
                                  "GET /api/v1/orders",
                                  "db.system",
                                  "net/http.(*conn).serve",
                                  "runtime.mallocgc",
                                  "process_cpu",
                                  "nanoseconds",
                                  "samples",
                                  "shop-api",
                                  "main.handler",
                                  "42"};
  uint8_t *p = malloc(n + 64);
  uint32_t x = 777;
  size_t i = 0;
  while (i < n) {
    x = x * 1103515245u + 12345u;
    const char *s = w[(x >> 16) % 12];
    size_t k = strlen(s);
    memcpy(p + i, s, k);
    p[i + k] = (uint8_t)((x >> 8) & 1 ? ' ' : '\n');
    i += k + 1;
  }
  return p;
}

static void roundtrip(sp_encoding_t enc, sp_encoding_t dec_as) {
  size_t n = 300000;
  uint8_t *text = make_text(n);
  sp_buf_t z, out;
  sp_buf_init(&z, 0);
  sp_buf_init(&out, 0);
  assert_int_equal(sp_compress(text, n, enc, 6, &z), 0);
  if (enc != SP_ENC_IDENTITY) assert_true(z.len < n * 3 / 4);
  assert_int_equal(sp_inflate(z.data, z.len, dec_as, 0, &out), 0);
  assert_int_equal(out.len, n);
  assert_memory_equal(out.data, text, n);
  sp_buf_free(&z);
  sp_buf_free(&out);
  free(text);
}

static void test_roundtrip_all_formats(void **state) {
  (void)state;
  roundtrip(SP_ENC_GZIP, SP_ENC_GZIP);
  roundtrip(SP_ENC_GZIP, SP_ENC_AUTO);
  roundtrip(SP_ENC_DEFLATE, SP_ENC_DEFLATE);
  roundtrip(SP_ENC_DEFLATE, SP_ENC_AUTO);
  roundtrip(SP_ENC_RAW_DEFLATE, SP_ENC_DEFLATE); /* "deflate" sent raw, as some clients do */
  roundtrip(SP_ENC_RAW_DEFLATE, SP_ENC_RAW_DEFLATE);
  roundtrip(SP_ENC_RAW_DEFLATE, SP_ENC_AUTO);
  roundtrip(SP_ENC_IDENTITY, SP_ENC_IDENTITY);
}

/*
 * One-shot gzip inflation sizes its buffer from the member's ISIZE trailer:
 * one allocation with no slack at ratios past the 4x first guess (text,
 * ~9x); believed up to 64:1 only (zeros, ~1000:1, grow as before); a
 * trailer that lies is only a hint (refused by the check, never a large
 * allocation, the limit still applies).
 */
static void test_inflate_sized_from_trailer(void **state) {
  (void)state;
  size_t n = 400000;
  uint8_t *zeros = calloc(1, n); /* ~1000:1 */
  uint8_t *text = make_text(n);
  const uint8_t *srcs[2] = {zeros, text};
  for (int k = 0; k < 2; k++) {
    sp_buf_t z, out;
    sp_buf_init(&z, 0);
    sp_buf_init(&out, 0);
    assert_int_equal(sp_gzip_compress(srcs[k], n, 1, &z), 0);
    assert_int_equal(sp_inflate(z.data, z.len, SP_ENC_GZIP, 0, &out), 0);
    assert_int_equal(out.len, n);
    assert_memory_equal(out.data, srcs[k], n);
    if (k == 1) assert_true(out.cap <= n + 256); /* no doubling past the size */
    sp_buf_free(&out);
    sp_buf_init(&out, 0);
    assert_int_equal(sp_inflate(z.data, z.len, SP_ENC_AUTO, 0, &out), 0);
    if (k == 1) assert_true(out.cap <= n + 256);
    /* A trailer claiming ~4 GiB: no such allocation, and the data is refused. */
    z.data[z.len - 1] = 0xff;
    sp_buf_free(&out);
    sp_buf_init(&out, 0);
    assert_int_equal(sp_inflate(z.data, z.len, SP_ENC_GZIP, 0, &out), SP_EPROTO);
    assert_true(out.cap <= 4 * n); /* grown as the data came, not as the trailer claimed */
    /* A trailer claiming less: grows as before, still refused by the check. */
    z.data[z.len - 1] = 0;
    z.data[z.len - 2] = 0;
    z.data[z.len - 3] = 0;
    z.data[z.len - 4] = 16;
    sp_buf_free(&out);
    sp_buf_init(&out, 0);
    assert_int_equal(sp_inflate(z.data, z.len, SP_ENC_GZIP, 0, &out), SP_EPROTO);
    /* Within a limit, the limit still cuts. */
    sp_buf_free(&out);
    sp_buf_init(&out, 0);
    sp_buf_free(&z);
    sp_buf_init(&z, 0);
    assert_int_equal(sp_gzip_compress(srcs[k], n, 1, &z), 0);
    assert_int_equal(sp_inflate(z.data, z.len, SP_ENC_GZIP, n / 2, &out), SP_ETOOBIG);
    assert_true(out.cap <= n / 2 + 1);
    sp_buf_free(&out);
    sp_buf_free(&z);
  }
  free(zeros);
  free(text);
}

static void test_gzip_helper_and_magic(void **state) {
  (void)state;
  sp_buf_t z;
  sp_buf_init(&z, 0);
  assert_int_equal(sp_gzip_compress("hello", 5, -1, &z), 0);
  assert_true(sp_is_gzip(z.data, z.len));
  assert_false(sp_is_gzip(z.data, 1));
  assert_false(sp_is_gzip((const uint8_t *)"hello", 5));
  assert_int_equal(sp_gzip_compress("x", 1, 10, &z), SP_EINVAL);
  sp_buf_free(&z);
}

static void test_encoding_parse(void **state) {
  (void)state;
  sp_encoding_t e;
  assert_int_equal(sp_encoding_parse("gzip", &e), 0);
  assert_int_equal(e, SP_ENC_GZIP);
  assert_int_equal(sp_encoding_parse(" X-GZIP ", &e), 0);
  assert_int_equal(e, SP_ENC_GZIP);
  assert_int_equal(sp_encoding_parse("Deflate", &e), 0);
  assert_int_equal(e, SP_ENC_DEFLATE);
  assert_int_equal(sp_encoding_parse("identity", &e), 0);
  assert_int_equal(e, SP_ENC_IDENTITY);
  assert_int_equal(sp_encoding_parse(NULL, &e), 0);
  assert_int_equal(e, SP_ENC_IDENTITY);
  assert_int_equal(sp_encoding_parse("", &e), 0);
  assert_int_equal(sp_encoding_parse("br", &e), SP_ENOTSUP);
  assert_int_equal(sp_encoding_parse("gzip, br", &e), SP_ENOTSUP);
  assert_int_equal(sp_encoding_parse("zstd", &e), SP_ENOTSUP);
  assert_string_equal(sp_encoding_name(SP_ENC_GZIP), "gzip");
}

static void test_concatenated_gzip_members(void **state) {
  (void)state;
  sp_buf_t z, out;
  sp_buf_init(&z, 0);
  sp_buf_init(&out, 0);
  assert_int_equal(sp_gzip_compress("hello, ", 7, 6, &z), 0);
  assert_int_equal(sp_gzip_compress("world", 5, 1, &z), 0);
  assert_int_equal(sp_gzip_compress("", 0, 6, &z), 0);
  assert_int_equal(sp_inflate(z.data, z.len, SP_ENC_GZIP, 0, &out), 0);
  assert_int_equal(out.len, 12);
  assert_memory_equal(out.data, "hello, world", 12);
  sp_buf_free(&z);
  sp_buf_free(&out);
}

static void test_corrupt_and_truncated(void **state) {
  (void)state;
  uint8_t *text = make_text(50000);
  sp_buf_t z, zl, out;
  sp_buf_init(&z, 0);
  sp_buf_init(&zl, 0);
  sp_buf_init(&out, 0);
  assert_int_equal(sp_gzip_compress(text, 50000, 6, &z), 0);
  assert_int_equal(sp_compress(text, 50000, SP_ENC_DEFLATE, 6, &zl), 0);

  /* truncated */
  assert_int_equal(sp_inflate(z.data, z.len - 5, SP_ENC_GZIP, 0, &out), SP_EPROTO);
  out.len = 0;
  assert_int_equal(sp_inflate(z.data, z.len / 2, SP_ENC_AUTO, 0, &out), SP_EPROTO);
  out.len = 0;
  /* a flipped bit in the data or the CRC */
  z.data[z.len / 2] ^= 0x55;
  assert_int_equal(sp_inflate(z.data, z.len, SP_ENC_GZIP, 0, &out), SP_EPROTO);
  z.data[z.len / 2] ^= 0x55;
  out.len = 0;
  z.data[z.len - 6] ^= 0x01;
  assert_int_equal(sp_inflate(z.data, z.len, SP_ENC_GZIP, 0, &out), SP_EPROTO);
  z.data[z.len - 6] ^= 0x01;
  out.len = 0;
  /* trailing garbage after a gzip member, and after a zlib stream */
  assert_int_equal(sp_buf_append(&z, "junk", 4), 0);
  assert_int_equal(sp_inflate(z.data, z.len, SP_ENC_GZIP, 0, &out), SP_EPROTO);
  out.len = 0;
  assert_int_equal(sp_buf_append(&zl, "junk", 4), 0);
  assert_int_equal(sp_inflate(zl.data, zl.len, SP_ENC_DEFLATE, 0, &out), SP_EPROTO);
  out.len = 0;
  /* labelled gzip but not gzip */
  assert_int_equal(sp_inflate(zl.data, zl.len - 4, SP_ENC_GZIP, 0, &out), SP_EPROTO);
  out.len = 0;
  assert_int_equal(sp_inflate("not compressed at all", 21, SP_ENC_GZIP, 0, &out), SP_EPROTO);
  out.len = 0;
  assert_int_equal(sp_inflate("\xff\xff\xff\xff", 4, SP_ENC_DEFLATE, 0, &out), SP_EPROTO);
  out.len = 0;
  /* empty input is an empty body; a single byte is truncated */
  assert_int_equal(sp_inflate("", 0, SP_ENC_GZIP, 0, &out), 0);
  assert_int_equal(out.len, 0);
  assert_int_equal(sp_inflate("\x1f", 1, SP_ENC_GZIP, 0, &out), SP_EPROTO);
  assert_int_equal(sp_inflate(NULL, 3, SP_ENC_GZIP, 0, &out), SP_EINVAL);
  sp_buf_free(&z);
  sp_buf_free(&zl);
  sp_buf_free(&out);
  free(text);
}

static void test_bomb_is_cut_at_the_limit(void **state) {
  (void)state;
  size_t n = 10 * 1024 * 1024, limit = 1024 * 1024;
  uint8_t *zeros = calloc(1, n);
  sp_buf_t z, out;
  sp_buf_init(&z, 0);
  sp_buf_init(&out, 0);
  assert_int_equal(sp_gzip_compress(zeros, n, 9, &z), 0);
  assert_true(z.len < 20 * 1024);
  assert_int_equal(sp_inflate(z.data, z.len, SP_ENC_GZIP, limit, &out), SP_ETOOBIG);
  assert_true(out.cap <= limit + 1);
  sp_buf_free(&out);

  /* Exactly at the limit is fine, one byte over is not. */
  sp_buf_t z2;
  sp_buf_init(&z2, 0);
  assert_int_equal(sp_gzip_compress(zeros, limit, 9, &z2), 0);
  assert_int_equal(sp_inflate(z2.data, z2.len, SP_ENC_AUTO, limit, &out), 0);
  assert_int_equal(out.len, limit);
  assert_true(out.cap <= limit + 1);
  sp_buf_free(&out);
  assert_int_equal(sp_inflate(z2.data, z2.len, SP_ENC_AUTO, limit - 1, &out), SP_ETOOBIG);
  assert_true(out.cap <= limit);
  sp_buf_free(&out);

  /* The buffer's own limit applies too. */
  sp_buf_init(&out, 4096);
  assert_int_equal(sp_inflate(z2.data, z2.len, SP_ENC_AUTO, 0, &out), SP_ETOOBIG);
  assert_true(out.cap <= 4097);
  assert_true(out.len <= 4096);
  sp_buf_free(&out);
  sp_buf_free(&z2);

  /* Streaming: the bomb fed in small pieces also stops at the limit. */
  sp_inflater_t *inf;
  assert_int_equal(sp_inflater_create(SP_ENC_GZIP, limit, &inf), 0);
  int rc = 0;
  for (size_t off = 0; off < z.len && rc == 0; off += 100) {
    size_t k = z.len - off < 100 ? z.len - off : 100;
    rc = sp_inflater_feed(inf, z.data + off, k, &out);
  }
  if (rc == 0) rc = sp_inflater_finish(inf, &out);
  assert_int_equal(rc, SP_ETOOBIG);
  assert_true(out.cap <= limit + 1);
  /* Sticky until reset. */
  assert_int_equal(sp_inflater_feed(inf, "x", 1, &out), SP_ETOOBIG);
  sp_inflater_destroy(inf);
  sp_buf_free(&out);
  sp_buf_free(&z);
  free(zeros);
}

static void test_streaming_matches_one_shot(void **state) {
  (void)state;
  size_t n = 200000;
  uint8_t *text = make_text(n);
  sp_encoding_t encs[] = {SP_ENC_GZIP, SP_ENC_DEFLATE, SP_ENC_RAW_DEFLATE};
  sp_inflater_t *inf;
  assert_int_equal(sp_inflater_create(SP_ENC_AUTO, 0, &inf), 0);
  for (size_t e = 0; e < 3; e++) {
    sp_buf_t z, out;
    sp_buf_init(&z, 0);
    sp_buf_init(&out, 0);
    assert_int_equal(sp_compress(text, n, encs[e], 6, &z), 0);
    /* one byte at a time, then in uneven pieces: the same inflater is reused */
    for (int pass = 0; pass < 2; pass++) {
      sp_inflater_reset(inf, pass ? SP_ENC_AUTO : encs[e], n);
      out.len = 0;
      size_t off = 0, step = 1;
      while (off < z.len) {
        size_t k = z.len - off < step ? z.len - off : step;
        assert_int_equal(sp_inflater_feed(inf, z.data + off, k, &out), 0);
        off += k;
        if (pass) step = step * 3 + 1;
      }
      assert_int_equal(sp_inflater_finish(inf, &out), 0);
      assert_int_equal(out.len, n);
      assert_int_equal(sp_inflater_total_out(inf), n);
      assert_memory_equal(out.data, text, n);
    }
    /* truncated stream */
    sp_inflater_reset(inf, encs[e], 0);
    out.len = 0;
    assert_int_equal(sp_inflater_feed(inf, z.data, z.len - 3, &out), 0);
    assert_int_equal(sp_inflater_finish(inf, &out), SP_EPROTO);
    sp_buf_free(&z);
    sp_buf_free(&out);
  }
  sp_inflater_destroy(inf);
  sp_inflater_destroy(NULL);
  free(text);
}

static void test_out_of_memory(void **state) {
  (void)state;
  size_t n = 100000;
  uint8_t *text = make_text(n);
  sp_buf_t z;
  sp_buf_init(&z, 0);
  assert_int_equal(sp_gzip_compress(text, n, 6, &z), 0);
  int ok = 0;
  for (long k = 0; k < 50 && !ok; k++) {
    sp_buf_t out;
    sp_buf_init(&out, 0);
    sp_alloc_set_fail_after(k);
    int rc = sp_inflate(z.data, z.len, SP_ENC_GZIP, 0, &out);
    sp_alloc_set_fail_after(-1);
    if (rc == 0) {
      assert_int_equal(out.len, n);
      ok = 1;
    } else {
      assert_int_equal(rc, SP_ENOMEM);
    }
    sp_buf_free(&out);
  }
  assert_true(ok);
  for (long k = 0; k < 5; k++) {
    sp_buf_t out;
    sp_buf_init(&out, 0);
    sp_alloc_set_fail_after(k);
    int rc = sp_gzip_compress(text, n, 6, &out);
    sp_alloc_set_fail_after(-1);
    assert_true(rc == 0 || rc == SP_ENOMEM);
    sp_buf_free(&out);
  }
  sp_buf_free(&z);
  free(text);
}

/* ---- cross-compatibility with zlib, used directly -------------------------- */

static const sp_encoding_t k_encs[3] = {SP_ENC_GZIP, SP_ENC_DEFLATE, SP_ENC_RAW_DEFLATE};
static int wbits_of(sp_encoding_t e) {
  return e == SP_ENC_GZIP ? 31 : e == SP_ENC_DEFLATE ? 15 : -15;
}

static uint32_t g_rng = 1;
static uint32_t rnd(void) {
  g_rng = g_rng * 1103515245u + 12345u;
  return g_rng >> 8;
}

/* Pseudo-random bytes: incompressible, so ISA-L and zlib fall back to stored blocks. */
static uint8_t *make_noise(size_t n) {
  uint8_t *p = malloc(n ? n : 1);
  for (size_t i = 0; i < n; i++)
    p[i] = (uint8_t)rnd();
  return p;
}

/* zlib's inflate over all of @p z as format @p e; returns the size or -1 (and checks it ended). */
static long zlib_inflate(const uint8_t *z, size_t zlen, sp_encoding_t e, uint8_t *dst, size_t cap) {
  z_stream zs;
  memset(&zs, 0, sizeof zs);
  if (inflateInit2(&zs, wbits_of(e)) != Z_OK) return -1;
  zs.next_in = (Bytef *)z;
  zs.avail_in = (uInt)zlen;
  zs.next_out = dst;
  zs.avail_out = (uInt)cap;
  int rc = inflate(&zs, Z_FINISH);
  long n = rc == Z_STREAM_END && zs.avail_in == 0 ? (long)zs.total_out : -1;
  inflateEnd(&zs);
  return n;
}

/* zlib's deflate of @p in as format @p e at @p level into @p out. */
static void zlib_deflate(const uint8_t *in, size_t n, sp_encoding_t e, int level, sp_buf_t *out) {
  z_stream zs;
  memset(&zs, 0, sizeof zs);
  assert_int_equal(deflateInit2(&zs, level, Z_DEFLATED, wbits_of(e), 8, Z_DEFAULT_STRATEGY), Z_OK);
  size_t bound = deflateBound(&zs, (uLong)n);
  assert_int_equal(sp_buf_reserve(out, bound), 0);
  zs.next_in = (Bytef *)in;
  zs.avail_in = (uInt)n;
  zs.next_out = out->data + out->len;
  zs.avail_out = (uInt)bound;
  assert_int_equal(deflate(&zs, Z_FINISH), Z_STREAM_END);
  out->len += bound - zs.avail_out;
  deflateEnd(&zs);
}

/* Feeds @p z to a streaming inflater in pieces: 1 byte (step 0) or random sizes up to @p step. */
static int stream_inflate(sp_inflater_t *inf, const uint8_t *z, size_t zlen, size_t step,
                          sp_buf_t *out) {
  size_t off = 0;
  int rc = 0;
  while (off < zlen && rc == 0) {
    size_t k = step ? 1 + rnd() % step : 1;
    if (k > zlen - off) k = zlen - off;
    rc = sp_inflater_feed(inf, z + off, k, out);
    off += k;
  }
  if (rc == 0) rc = sp_inflater_finish(inf, out);
  return rc;
}

/* Our output, every ISA-L level and the zlib ones around them, is read by zlib itself. */
static void test_ours_read_by_zlib(void **state) {
  (void)state;
  static const int levels[] = {-1, 0, 1, 2, 3, 4, 9};
  static const size_t sizes[] = {0, 1, 100, 70000, 200000};
  for (int data = 0; data < 2; data++) {
    for (size_t si = 0; si < sizeof(sizes) / sizeof(sizes[0]); si++) {
      size_t n = sizes[si];
      uint8_t *in = data ? make_noise(n) : make_words(n ? n : 1);
      uint8_t *back = malloc(n + 16);
      for (size_t li = 0; li < sizeof(levels) / sizeof(levels[0]); li++) {
        for (int e = 0; e < 3; e++) {
          sp_buf_t z;
          sp_buf_init(&z, 0);
          assert_int_equal(sp_compress(in, n, k_encs[e], levels[li], &z), 0);
          long got = zlib_inflate(z.data, z.len, k_encs[e], back, n + 16);
          assert_int_equal(got, (long)n);
          if (n) assert_memory_equal(back, in, n);
          if (k_encs[e] == SP_ENC_DEFLATE) { /* zlib's one-call API too */
            uLongf dl = (uLongf)(n + 16);
            assert_int_equal(uncompress(back, &dl, z.data, (uLong)z.len), Z_OK);
            assert_int_equal(dl, n);
          }
          if (data == 0 && n >= 70000 && levels[li] != 0) assert_true(z.len < n / 2);
          sp_buf_free(&z);
        }
      }
      free(back);
      free(in);
    }
  }
}

/* zlib's output at every level and format is read by ours, one-shot and streamed. */
static void test_zlib_read_by_ours(void **state) {
  (void)state;
  size_t n = 100000;
  uint8_t *text = make_text(n);
  sp_inflater_t *inf;
  assert_int_equal(sp_inflater_create(SP_ENC_AUTO, 0, &inf), 0);
  for (int level = 0; level <= 9; level++) {
    for (int e = 0; e < 3; e++) {
      sp_buf_t z, out;
      sp_buf_init(&z, 0);
      sp_buf_init(&out, 0);
      zlib_deflate(text, n, k_encs[e], level, &z);
      sp_encoding_t as[2] = {k_encs[e], SP_ENC_AUTO};
      for (int a = 0; a < 2; a++) {
        out.len = 0;
        assert_int_equal(sp_inflate(z.data, z.len, as[a], 0, &out), 0);
        assert_int_equal(out.len, n);
        assert_memory_equal(out.data, text, n);
        /* streamed in random pieces; one byte at a time too for stored gzip and raw zlib-9 */
        bool bytewise = a == 1 && ((level == 0 && e == 0) || (level == 9 && e == 2));
        for (int pass = bytewise ? 0 : 1; pass < 2; pass++) {
          out.len = 0;
          sp_inflater_reset(inf, as[a], n);
          assert_int_equal(stream_inflate(inf, z.data, z.len, pass ? 5000 : 0, &out), 0);
          assert_int_equal(out.len, n);
          assert_memory_equal(out.data, text, n);
        }
      }
      sp_buf_free(&z);
      sp_buf_free(&out);
    }
  }
  sp_inflater_destroy(inf);
  free(text);
}

/* gzip headers with every optional field, split anywhere, and a wrong header CRC. */
static void test_gzip_header_fields(void **state) {
  (void)state;
  size_t n = 5000;
  uint8_t *text = make_text(n);
  z_stream zs;
  memset(&zs, 0, sizeof zs);
  assert_int_equal(deflateInit2(&zs, 6, Z_DEFLATED, 31, 8, Z_DEFAULT_STRATEGY), Z_OK);
  static unsigned char extra[300];
  memset(extra, 'x', sizeof extra);
  gz_header h;
  memset(&h, 0, sizeof h);
  h.extra = extra;
  h.extra_len = sizeof extra;
  h.name = (Bytef *)"profile.pb";
  h.comment = (Bytef *)"a comment";
  h.hcrc = 1;
  assert_int_equal(deflateSetHeader(&zs, &h), Z_OK);
  uint8_t z[8000];
  zs.next_in = text;
  zs.avail_in = (uInt)n;
  zs.next_out = z;
  zs.avail_out = sizeof z;
  assert_int_equal(deflate(&zs, Z_FINISH), Z_STREAM_END);
  size_t zlen = sizeof z - zs.avail_out;
  deflateEnd(&zs);

  sp_buf_t out;
  sp_buf_init(&out, 0);
  assert_int_equal(sp_inflate(z, zlen, SP_ENC_GZIP, 0, &out), 0);
  assert_int_equal(out.len, n);
  assert_memory_equal(out.data, text, n);
  sp_inflater_t *inf;
  assert_int_equal(sp_inflater_create(SP_ENC_GZIP, 0, &inf), 0);
  for (size_t step = 0; step < 40; step += 7) {
    out.len = 0;
    sp_inflater_reset(inf, step % 2 ? SP_ENC_AUTO : SP_ENC_GZIP, 0);
    assert_int_equal(stream_inflate(inf, z, zlen, step, &out), 0);
    assert_int_equal(out.len, n);
    assert_memory_equal(out.data, text, n);
  }
  /* The header CRC sits right before the deflate data: 10 + 2 + 300 + 11 + 10 bytes in. */
  size_t hcrc_at = 10 + 2 + sizeof extra + 11 + 10;
  z[hcrc_at] ^= 1;
  out.len = 0;
  assert_int_equal(sp_inflate(z, zlen, SP_ENC_GZIP, 0, &out), SP_EPROTO);
  z[hcrc_at] ^= 1;
  /* reserved flag bits, and a method other than deflate */
  z[3] |= 0x80;
  assert_int_equal(sp_inflate(z, zlen, SP_ENC_GZIP, 0, &out), SP_EPROTO);
  z[3] &= 0x7f;
  z[2] = 7;
  assert_int_equal(sp_inflate(z, zlen, SP_ENC_GZIP, 0, &out), SP_EPROTO);
  sp_inflater_destroy(inf);
  sp_buf_free(&out);
  free(text);
}

/* Members from both compressors back to back, streamed; garbage of every length after the end. */
static void test_members_and_trailing_garbage(void **state) {
  (void)state;
  size_t n = 35000;
  uint8_t *text = make_text(n);
  sp_buf_t z, out;
  sp_buf_init(&z, 0);
  sp_buf_init(&out, 0);
  static const int levels[] = {1, 6, 2, 0, 3, 9, -1};
  size_t parts = sizeof(levels) / sizeof(levels[0]);
  for (size_t i = 0; i < parts; i++)
    assert_int_equal(sp_gzip_compress(text + i * 5000, 5000, levels[i], &z), 0);
  assert_int_equal(sp_inflate(z.data, z.len, SP_ENC_GZIP, 0, &out), 0);
  assert_int_equal(out.len, parts * 5000);
  assert_memory_equal(out.data, text, parts * 5000);
  sp_inflater_t *inf;
  assert_int_equal(sp_inflater_create(SP_ENC_AUTO, 0, &inf), 0);
  for (size_t step = 0; step <= 3000; step += 1000) {
    out.len = 0;
    sp_inflater_reset(inf, SP_ENC_AUTO, 0);
    assert_int_equal(stream_inflate(inf, z.data, z.len, step, &out), 0);
    assert_int_equal(out.len, parts * 5000);
    assert_memory_equal(out.data, text, parts * 5000);
  }
  sp_buf_free(&z);

  /* 1..12 bytes after a complete stream: ISA-L may hold some in its bit buffer. */
  static const int enc_levels[] = {1, 3, 6};
  for (int e = 0; e < 3; e++) {
    for (int li = 0; li < 3; li++) {
      sp_buf_init(&z, 0);
      assert_int_equal(sp_compress(text, n, k_encs[e], enc_levels[li], &z), 0);
      size_t base = z.len;
      for (size_t g = 1; g <= 12; g++) {
        z.len = base;
        for (size_t k = 0; k < g; k++)
          assert_int_equal(sp_buf_putc(&z, k == 0 ? 0x1f : (int)(0x30 + k)), 0);
        out.len = 0;
        assert_int_equal(sp_inflate(z.data, z.len, k_encs[e], 0, &out), SP_EPROTO);
        out.len = 0;
        sp_inflater_reset(inf, k_encs[e], 0);
        assert_int_equal(stream_inflate(inf, z.data, z.len, g == 1 || g == 5 ? 0 : 777, &out),
                         SP_EPROTO);
      }
      /* trailing zeros are garbage too */
      z.len = base;
      assert_int_equal(sp_buf_append(&z, "\0\0\0\0", 4), 0);
      out.len = 0;
      assert_int_equal(sp_inflate(z.data, z.len, k_encs[e], 0, &out), SP_EPROTO);
      sp_buf_free(&z);
    }
  }
  sp_inflater_destroy(inf);
  sp_buf_free(&out);
  free(text);
}

/* The trailer is checked: CRC-32 and ISIZE for gzip, Adler-32 for zlib; truncation anywhere. */
static void test_trailer_and_truncation(void **state) {
  (void)state;
  size_t n = 30000;
  uint8_t *text = make_text(n);
  sp_buf_t out;
  sp_buf_init(&out, 0);
  sp_inflater_t *inf;
  assert_int_equal(sp_inflater_create(SP_ENC_AUTO, 0, &inf), 0);
  for (int src = 0; src < 2; src++) { /* ours at level 1 (ISA-L), zlib's at 6 */
    for (int e = 0; e < 3; e++) {
      sp_buf_t z;
      sp_buf_init(&z, 0);
      if (src == 0)
        assert_int_equal(sp_compress(text, n, k_encs[e], 1, &z), 0);
      else
        zlib_deflate(text, n, k_encs[e], 6, &z);
      size_t trailer = k_encs[e] == SP_ENC_GZIP ? 8 : k_encs[e] == SP_ENC_DEFLATE ? 4 : 0;
      for (size_t t = 0; t < trailer; t++) { /* every trailer byte: CRC (0-3), then ISIZE (4-7) */
        z.data[z.len - trailer + t] ^= 0x40;
        out.len = 0;
        assert_int_equal(sp_inflate(z.data, z.len, k_encs[e], 0, &out), SP_EPROTO);
        out.len = 0;
        sp_inflater_reset(inf, k_encs[e], 0);
        assert_int_equal(stream_inflate(inf, z.data, z.len, t == 0 ? 0 : 500, &out), SP_EPROTO);
        z.data[z.len - trailer + t] ^= 0x40;
      }
      /* cut at many points, including inside the trailer */
      for (size_t cut = 1; cut < z.len; cut += cut < 16 || cut + 16 > z.len ? 1 : 997) {
        out.len = 0;
        assert_int_equal(sp_inflate(z.data, cut, k_encs[e], 0, &out), SP_EPROTO);
      }
      out.len = 0;
      assert_int_equal(sp_inflate(z.data, z.len, k_encs[e], 0, &out), 0);
      assert_int_equal(out.len, n);
      sp_buf_free(&z);
    }
  }
  sp_inflater_destroy(inf);
  sp_buf_free(&out);
  free(text);
}

/* Empty input compresses to a valid empty stream at every level; empty bodies decode to nothing. */
static void test_empty(void **state) {
  (void)state;
  for (int level = -1; level <= 9; level++) {
    for (int e = 0; e < 3; e++) {
      sp_buf_t z, out;
      sp_buf_init(&z, 0);
      sp_buf_init(&out, 0);
      assert_int_equal(sp_compress(NULL, 0, k_encs[e], level, &z), 0);
      assert_true(z.len > 0);
      uint8_t dummy[4];
      assert_int_equal(zlib_inflate(z.data, z.len, k_encs[e], dummy, sizeof dummy), 0);
      assert_int_equal(sp_inflate(z.data, z.len, k_encs[e], 0, &out), 0);
      assert_int_equal(out.len, 0);
      sp_buf_free(&z);
      sp_buf_free(&out);
    }
  }
  sp_inflater_t *inf;
  assert_int_equal(sp_inflater_create(SP_ENC_GZIP, 10, &inf), 0);
  sp_buf_t out;
  sp_buf_init(&out, 0);
  assert_int_equal(sp_inflater_feed(inf, "", 0, &out), 0);
  assert_int_equal(sp_inflater_finish(inf, &out), 0);
  assert_int_equal(out.len, 0);
  sp_inflater_reset(inf, SP_ENC_DEFLATE, 10);
  assert_int_equal(sp_inflater_finish(inf, &out), 0);
  sp_inflater_destroy(inf);
  sp_buf_free(&out);
}

/* A bomb from ISA-L's compressor, fed one byte at a time, also stops at the limit. */
static void test_bomb_streamed_bytewise(void **state) {
  (void)state;
  size_t n = 4 * 1024 * 1024, limit = 300000;
  uint8_t *zeros = calloc(1, n);
  sp_inflater_t *inf;
  assert_int_equal(sp_inflater_create(SP_ENC_AUTO, limit, &inf), 0);
  for (int e = 0; e < 3; e++) {
    sp_buf_t z, out;
    sp_buf_init(&z, 0);
    sp_buf_init(&out, 0);
    assert_int_equal(sp_compress(zeros, n, k_encs[e], 1, &z), 0);
    sp_inflater_reset(inf, SP_ENC_AUTO, limit);
    assert_int_equal(stream_inflate(inf, z.data, z.len, 0, &out), SP_ETOOBIG);
    assert_true(out.cap <= limit + 1);
    assert_true(sp_inflater_total_out(inf) <= limit + 1);
    assert_int_equal(sp_inflater_finish(inf, &out), SP_ETOOBIG); /* sticky */
    sp_buf_free(&out);
    /* exactly at the limit passes */
    sp_buf_free(&z);
    sp_buf_init(&z, 0);
    assert_int_equal(sp_compress(zeros, limit, k_encs[e], 2, &z), 0);
    sp_inflater_reset(inf, k_encs[e], limit);
    assert_int_equal(stream_inflate(inf, z.data, z.len, 50, &out), 0);
    assert_int_equal(out.len, limit);
    assert_true(out.cap <= limit + 1);
    sp_buf_free(&out);
    sp_buf_free(&z);
  }
  sp_inflater_destroy(inf);
  free(zeros);
}

/* Every allocation of inflating (one-shot and streamed) and compressing (each path) can fail. */
static void test_out_of_memory_everywhere(void **state) {
  (void)state;
  size_t n = 200000;
  uint8_t *text = make_text(n);
  sp_buf_t z;
  sp_buf_init(&z, 0);
  assert_int_equal(sp_gzip_compress(text, n, 1, &z), 0);
  for (int mode = 0; mode < 2; mode++) {
    int ok = 0;
    for (long k = 0; k < 200 && !ok; k++) {
      sp_buf_t out;
      sp_buf_init(&out, 0);
      sp_inflater_t *inf = NULL;
      sp_alloc_set_fail_after(k);
      int rc;
      if (mode == 0) {
        rc = sp_inflate(z.data, z.len, SP_ENC_AUTO, 0, &out);
      } else {
        rc = sp_inflater_create(SP_ENC_GZIP, 0, &inf);
        if (rc == 0) rc = stream_inflate(inf, z.data, z.len, 4000, &out);
      }
      sp_alloc_set_fail_after(-1);
      if (rc == 0) {
        assert_int_equal(out.len, n);
        assert_memory_equal(out.data, text, n);
        ok = 1;
      } else {
        assert_int_equal(rc, SP_ENOMEM);
        if (inf) assert_int_equal(sp_inflater_feed(inf, "x", 1, &out), SP_ENOMEM); /* sticky */
      }
      sp_inflater_destroy(inf);
      sp_buf_free(&out);
    }
    assert_true(ok);
  }
  static const int levels[] = {-1, 0, 1, 2, 3, 6};
  for (size_t li = 0; li < sizeof(levels) / sizeof(levels[0]); li++) {
    for (int e = 0; e < 3; e++) {
      int ok = 0;
      for (long k = 0; k < 200 && !ok; k++) {
        sp_buf_t out;
        sp_buf_init(&out, 0);
        sp_alloc_set_fail_after(k);
        int rc = sp_compress(text, n, k_encs[e], levels[li], &out);
        sp_alloc_set_fail_after(-1);
        if (rc == 0) {
          uint8_t *back = malloc(n);
          assert_int_equal(zlib_inflate(out.data, out.len, k_encs[e], back, n), (long)n);
          assert_memory_equal(back, text, n);
          free(back);
          ok = 1;
        } else {
          assert_int_equal(rc, SP_ENOMEM);
        }
        sp_buf_free(&out);
      }
      assert_true(ok);
    }
  }
  sp_buf_free(&z);
  free(text);
}

/* Levels: ISA-L's 1-3 are close to zlib's 1; 9 is smaller; 0 stores; -1 is the documented default.
 */
static void test_levels(void **state) {
  (void)state;
  size_t n = 200000;
  uint8_t *text = make_words(n);
  size_t sz[11];
  for (int level = -1; level <= 9; level++) {
    sp_buf_t z;
    sp_buf_init(&z, 0);
    assert_int_equal(sp_gzip_compress(text, n, level, &z), 0);
    sz[level + 1] = z.len;
    sp_buf_free(&z);
  }
  assert_int_equal(sz[0], sz[SP_COMPRESS_DEFAULT_LEVEL + 1]);
  assert_true(sz[1] > n);         /* 0: stored */
  assert_true(sz[10] < sz[2]);    /* 9 beats ISA-L's 1 */
  assert_true(sz[2] < n * 3 / 4); /* and 1 compresses */
  sp_buf_t z;
  sp_buf_init(&z, 0);
  assert_int_equal(sp_compress("x", 1, SP_ENC_GZIP, -2, &z), SP_EINVAL);
  assert_int_equal(sp_compress("x", 1, SP_ENC_AUTO, 1, &z), SP_EINVAL);
  assert_int_equal(sp_compress(NULL, 1, SP_ENC_GZIP, 1, &z), SP_EINVAL);
  sp_buf_free(&z);
  /* A buffer limit too small for the output is SP_ETOOBIG, from ISA-L's path as from zlib's. */
  for (int level = 0; level <= 9; level += 3) {
    sp_buf_t small;
    sp_buf_init(&small, 1000);
    assert_int_equal(sp_gzip_compress(text, n, level == 9 ? 1 : level, &small), SP_ETOOBIG);
    sp_buf_free(&small);
  }
  free(text);
}

/* ---- sp_compressor_t: level -1 with learned tables ------------------------- */

static void put_varint(sp_buf_t *b, uint64_t v) {
  while (v >= 0x80) {
    assert_int_equal(sp_buf_putc(b, (int)(v & 0x7f) | 0x80), 0);
    v >>= 7;
  }
  assert_int_equal(sp_buf_putc(b, (int)v), 0);
}

static void put_bytes(sp_buf_t *b, unsigned field, const void *p, size_t n) {
  put_varint(b, (uint64_t)field << 3 | 2);
  put_varint(b, n);
  assert_int_equal(sp_buf_append(b, p, n), 0);
}

/*
 * Bytes shaped like an encoded pprof Profile: samples (packed location IDs,
 * values, a span_id label), then functions and the string table. @p style
 * changes the names (as services in other languages would), @p seed the rest.
 */
static uint8_t *make_pprof(int style, uint32_t seed, size_t n_samples, size_t *len) {
  static const char *const pkg[3][4] = {
      {"net/http", "github.com/acme/shop/orders", "runtime", "encoding/json"},
      {"com.acme.shop.orders", "io.netty.channel", "java.util.concurrent", "org.postgresql"},
      {"shop/orders", "aiohttp/web", "asyncio/base", "json/decoder"}};
  g_rng = seed;
  sp_buf_t b, sample;
  sp_buf_init(&b, 0);
  sp_buf_init(&sample, 0);
  for (size_t i = 0; i < n_samples; i++) {
    sample.len = 0;
    sp_buf_t ids;
    sp_buf_init(&ids, 0);
    size_t depth = 8 + rnd() % 24, stack = rnd() % 200;
    for (size_t k = 0; k < depth; k++)
      put_varint(&ids, 1 + (stack * 31 + k * 17) % 300);
    put_bytes(&sample, 1, ids.data, ids.len);
    sp_buf_free(&ids);
    uint8_t vals[12];
    size_t nv = 0;
    uint64_t v = 1 + rnd() % 3;
    vals[nv++] = (uint8_t)v;
    for (uint64_t x = v * 10000000; x; x >>= 7)
      vals[nv++] = (uint8_t)((x & 0x7f) | (x >= 0x80 ? 0x80 : 0));
    put_bytes(&sample, 2, vals, nv);
    if (rnd() % 5) {
      uint8_t label[8] = {0x08, 5, 0x10, 0, 0, 0, 0, 0};
      label[3] = (uint8_t)(6 + rnd() % 100);
      put_bytes(&sample, 3, label, 4);
    }
    put_bytes(&b, 2, sample.data, sample.len);
  }
  for (size_t i = 0; i < 300; i++) {
    char name[160];
    int n = snprintf(name, sizeof name,
                     style == 0   ? "%s.(*Handler%zu).Serve"
                     : style == 1 ? "%s.Handler%zuService.serve"
                                  : "%s.handler_%zu",
                     pkg[style][i % 4], i);
    put_bytes(&b, 6, name, (size_t)n);
  }
  sp_buf_free(&sample);
  return sp_buf_steal(&b, len);
}

/* Compresses with @p ctx and checks that zlib and sp_inflate both give @p in back. */
static size_t ctx_roundtrip(sp_compressor_t *ctx, const uint8_t *in, size_t n, sp_encoding_t e,
                            int level) {
  sp_buf_t z, out;
  sp_buf_init(&z, 0);
  sp_buf_init(&out, 0);
  assert_int_equal(sp_compressor_compress(ctx, in, n, e, level, &z), 0);
  uint8_t *back = malloc(n + 16);
  assert_int_equal(zlib_inflate(z.data, z.len, e, back, n + 16), (long)n);
  if (n) assert_memory_equal(back, in, n);
  assert_int_equal(sp_inflate(z.data, z.len, e, 0, &out), 0);
  assert_int_equal(out.len, n);
  if (n) assert_memory_equal(out.data, in, n);
  size_t zl = z.len;
  free(back);
  sp_buf_free(&z);
  sp_buf_free(&out);
  return zl;
}

static size_t level1_size(const uint8_t *in, size_t n) {
  sp_buf_t z;
  sp_buf_init(&z, 0);
  assert_int_equal(sp_gzip_compress(in, n, 1, &z), 0);
  size_t zl = z.len;
  sp_buf_free(&z);
  return zl;
}

/*
 * Tables learned from pprof-shaped payloads encode anything: other pprof
 * styles, text, random bytes, zeros, empty and tiny inputs, a payload larger
 * than a sample reads, in every format; what the tables fit compresses like
 * level 1.
 */
static void test_ctx_learns_and_encodes_anything(void **state) {
  (void)state;
  sp_compressor_t *ctx = NULL;
  assert_int_equal(sp_compressor_create(NULL, &ctx), 0);
  size_t plen;
  uint8_t *pp = make_pprof(0, 1, 1500, &plen);
  for (int i = 0; i < 10; i++) /* learn */
    ctx_roundtrip(ctx, pp, plen, SP_ENC_GZIP, -1);
  /* Another profile of the same shape: within 1% of level 1. */
  size_t p2len;
  uint8_t *pp2 = make_pprof(0, 2, 1400, &p2len);
  size_t learned = ctx_roundtrip(ctx, pp2, p2len, SP_ENC_GZIP, -1);
  size_t one = level1_size(pp2, p2len);
  assert_true(learned * 100 <= one * 101);
  sp_compressor_stats_t st;
  sp_compressor_get_stats(ctx, &st);
  assert_true(st.builds >= 1);
  assert_int_equal(st.learned + st.level1, 11);
  assert_int_equal(st.level1, 0); /* the first call built tables before compressing */
  assert_int_equal(st.fallbacks, 0);

  size_t big_n = ((size_t)3 << 20) / 2; /* more than one sample reads */
  struct {
    uint8_t *p;
    size_t n;
  } kinds[10];
  size_t nk = 0;
  kinds[nk].p = make_pprof(1, 3, 900, &kinds[nk].n), nk++;
  kinds[nk].p = make_pprof(2, 4, 300, &kinds[nk].n), nk++;
  kinds[nk].p = make_words(100000), kinds[nk].n = 100000, nk++;
  kinds[nk].p = make_text(70000), kinds[nk].n = 70000, nk++;
  kinds[nk].p = make_noise(50000), kinds[nk].n = 50000, nk++;
  kinds[nk].p = calloc(1, 200000), kinds[nk].n = 200000, nk++;
  kinds[nk].p = make_words(big_n), kinds[nk].n = big_n, nk++;
  kinds[nk].p = make_noise(1), kinds[nk].n = 1, nk++;
  kinds[nk].p = make_noise(300), kinds[nk].n = 300, nk++;
  kinds[nk].p = make_noise(1), kinds[nk].n = 0, nk++;
  for (int round = 0; round < 2; round++)
    for (size_t k = 0; k < nk; k++)
      for (int e = 0; e < 3; e++) {
        size_t zl = ctx_roundtrip(ctx, kinds[k].p, kinds[k].n, k_encs[e], -1);
        if (k == 4) assert_true(zl < kinds[k].n + 200); /* noise: level 1's stored blocks */
        if (k == 5) assert_true(zl < 3000);             /* zeros */
      }
  sp_compressor_get_stats(ctx, &st);
  assert_true(st.fallbacks >= 2); /* the noise, at least */
  assert_int_equal(st.explicit_level, 0);
  for (size_t k = 0; k < nk; k++)
    free(kinds[k].p);
  free(pp);
  free(pp2);
  sp_compressor_destroy(ctx);
  sp_compressor_destroy(NULL);
}

/* Explicit levels give exactly sp_compress()'s bytes; bad arguments are refused alike. */
static void test_ctx_explicit_levels(void **state) {
  (void)state;
  sp_compressor_t *ctx = NULL;
  assert_int_equal(sp_compressor_create(NULL, &ctx), 0);
  size_t n;
  uint8_t *pp = make_pprof(0, 5, 600, &n);
  for (int i = 0; i < 3; i++)
    ctx_roundtrip(ctx, pp, n, SP_ENC_GZIP, -1); /* tables exist: they must not leak in */
  /* Explicit levels through a context, and any level without one (NULL), are sp_compress(). */
  for (int level = -1; level <= 9; level++)
    for (int e = 0; e < 3; e++)
      for (int none = 0; none < 2; none++) {
        if (level == -1 && !none) continue;
        sp_buf_t a, b;
        sp_buf_init(&a, 0);
        sp_buf_init(&b, 0);
        assert_int_equal(sp_compressor_compress(none ? NULL : ctx, pp, n, k_encs[e], level, &a), 0);
        assert_int_equal(sp_compress(pp, n, k_encs[e], level, &b), 0);
        assert_int_equal(a.len, b.len);
        assert_memory_equal(a.data, b.data, a.len);
        sp_buf_free(&a);
        sp_buf_free(&b);
      }
  sp_buf_t z;
  sp_buf_init(&z, 0);
  assert_int_equal(sp_compressor_compress(ctx, "x", 1, SP_ENC_GZIP, -2, &z), SP_EINVAL);
  assert_int_equal(sp_compressor_compress(ctx, "x", 1, SP_ENC_GZIP, 10, &z), SP_EINVAL);
  assert_int_equal(sp_compressor_compress(ctx, "x", 1, SP_ENC_AUTO, -1, &z), SP_EINVAL);
  assert_int_equal(sp_compressor_compress(ctx, NULL, 1, SP_ENC_GZIP, -1, &z), SP_EINVAL);
  assert_int_equal(z.len, 0);
  assert_int_equal(sp_compressor_compress(ctx, "xyz", 3, SP_ENC_IDENTITY, -1, &z), 0);
  assert_int_equal(z.len, 3);
  sp_buf_free(&z);
  /* A buffer limit too small for the output: SP_ETOOBIG, as from sp_compress. */
  sp_buf_t small;
  sp_buf_init(&small, 1000);
  assert_int_equal(sp_compressor_gzip(ctx, pp, n, -1, &small), SP_ETOOBIG);
  sp_buf_free(&small);
  /* Appends, as sp_compress does. */
  sp_buf_init(&z, 0);
  assert_int_equal(sp_buf_append(&z, "head", 4), 0);
  assert_int_equal(sp_compressor_gzip(ctx, pp, n, -1, &z), 0);
  sp_buf_t out;
  sp_buf_init(&out, 0);
  assert_int_equal(sp_inflate(z.data + 4, z.len - 4, SP_ENC_GZIP, 0, &out), 0);
  assert_int_equal(out.len, n);
  assert_memory_equal(out.data, pp, n);
  sp_buf_free(&out);
  sp_buf_free(&z);
  free(pp);
  sp_compressor_destroy(ctx);
}

/* A stream that turns worse than its tables were built for is sampled early, not after 64. */
static void test_ctx_relearns_when_the_ratio_degrades(void **state) {
  (void)state;
  sp_compressor_t *ctx = NULL;
  sp_compressor_opts_t o = {.sample_every = 1000, .min_gap = 4};
  assert_int_equal(sp_compressor_create(&o, &ctx), 0);
  size_t n;
  uint8_t *pp = make_pprof(0, 6, 400, &n);
  uint8_t *text = make_text(40000);
  sp_compressor_stats_t st;
  for (int i = 0; i < 80; i++)
    ctx_roundtrip(ctx, pp, n, SP_ENC_GZIP, -1);
  sp_compressor_get_stats(ctx, &st);
  uint64_t before = st.samples; /* 1, 2, 4, ..., 64 */
  size_t first = ctx_roundtrip(ctx, text, 40000, SP_ENC_GZIP, -1);
  size_t last = first;
  for (int i = 0; i < 40; i++)
    last = ctx_roundtrip(ctx, text, 40000, SP_ENC_GZIP, -1);
  sp_compressor_get_stats(ctx, &st);
  assert_true(st.samples > before);
  assert_true(last < first);
  assert_true(last * 100 <= level1_size(text, 40000) * 105); /* within 41 calls */
  free(pp);
  free(text);
  sp_compressor_destroy(ctx);
}

/* ---- concurrent use: tables rebuilt on every call while other threads compress ---- */

typedef struct {
  sp_compressor_t *ctx;
  uint8_t **in;
  size_t *n;
  size_t n_in;
  int seed, failures;
} worker_t;

static void *worker(void *arg) {
  worker_t *w = arg;
  sp_buf_t z, out;
  sp_buf_init(&z, 0);
  sp_buf_init(&out, 0);
  for (int i = 0; i < 40; i++) {
    size_t k = (size_t)(w->seed + i) % w->n_in;
    sp_encoding_t e = k_encs[(w->seed + i) % 3];
    z.len = out.len = 0;
    if (sp_compressor_compress(w->ctx, w->in[k], w->n[k], e, -1, &z) != 0 ||
        sp_inflate(z.data, z.len, e, 0, &out) != 0 || out.len != w->n[k] ||
        (out.len && memcmp(out.data, w->in[k], out.len) != 0))
      w->failures++;
  }
  sp_buf_free(&z);
  sp_buf_free(&out);
  return NULL;
}

static void test_ctx_concurrent(void **state) {
  (void)state;
  enum { THREADS = 4, INPUTS = 6 };
  uint8_t *in[INPUTS];
  size_t n[INPUTS];
  in[0] = make_pprof(0, 7, 300, &n[0]);
  in[1] = make_pprof(1, 8, 500, &n[1]);
  in[2] = make_words(30000), n[2] = 30000;
  in[3] = make_noise(20000), n[3] = 20000;
  in[4] = make_text(25000), n[4] = 25000;
  in[5] = calloc(1, 40000), n[5] = 40000;
  /* Every call samples when no other does: tables are swapped all the time. */
  sp_compressor_opts_t o = {.sample_every = 1, .min_gap = 1};
  sp_compressor_t *ctx = NULL;
  assert_int_equal(sp_compressor_create(&o, &ctx), 0);
  pthread_t th[THREADS];
  worker_t w[THREADS];
  for (int i = 0; i < THREADS; i++) {
    w[i] = (worker_t){.ctx = ctx, .in = in, .n = n, .n_in = INPUTS, .seed = i * 5};
    assert_int_equal(pthread_create(&th[i], NULL, worker, &w[i]), 0);
  }
  for (int i = 0; i < THREADS; i++) {
    assert_int_equal(pthread_join(th[i], NULL), 0);
    assert_int_equal(w[i].failures, 0);
  }
  sp_compressor_stats_t st;
  sp_compressor_get_stats(ctx, &st);
  assert_int_equal(st.learned + st.level1, THREADS * 40);
  assert_true(st.builds >= 10);
  sp_compressor_destroy(ctx);
  for (int i = 0; i < INPUTS; i++)
    free(in[i]);
}

/*
 * Every allocation can fail: creating, the first (learning) call, a call
 * with tables. A failed sample only postpones learning; output is correct
 * whenever 0 is returned, and the context keeps working afterwards.
 */
static void test_ctx_out_of_memory(void **state) {
  (void)state;
  size_t n;
  uint8_t *pp = make_pprof(0, 9, 500, &n);
  int ok = 0;
  for (long k = 0; k < 50 && !ok; k++) {
    sp_compressor_t *ctx = NULL;
    sp_alloc_set_fail_after(k);
    int rc = sp_compressor_create(NULL, &ctx);
    sp_alloc_set_fail_after(-1);
    if (rc == 0) {
      ok = 1;
    } else {
      assert_int_equal(rc, SP_ENOMEM);
      assert_null(ctx);
    }
    sp_compressor_destroy(ctx);
  }
  assert_true(ok);
  for (int warm = 0; warm < 2; warm++) {
    ok = 0;
    for (long k = 0; k < 50 && !ok; k++) {
      sp_compressor_opts_t o = {.sample_every = 1, .min_gap = 1};
      sp_compressor_t *ctx = NULL;
      assert_int_equal(sp_compressor_create(&o, &ctx), 0);
      if (warm) ctx_roundtrip(ctx, pp, n, SP_ENC_GZIP, -1);
      sp_buf_t z;
      sp_buf_init(&z, 0);
      sp_alloc_set_fail_after(k);
      int rc = sp_compressor_gzip(ctx, pp, n, -1, &z);
      sp_alloc_set_fail_after(-1);
      if (rc == 0) {
        uint8_t *back = malloc(n);
        assert_int_equal(zlib_inflate(z.data, z.len, SP_ENC_GZIP, back, n), (long)n);
        assert_memory_equal(back, pp, n);
        free(back);
        sp_compressor_stats_t st;
        sp_compressor_get_stats(ctx, &st);
        ok = st.samples == (uint64_t)(warm + 1) && st.builds == (uint64_t)(warm + 1);
      } else {
        assert_int_equal(rc, SP_ENOMEM);
      }
      sp_buf_free(&z);
      /* Whatever failed, the context still works and learns. */
      ctx_roundtrip(ctx, pp, n, SP_ENC_GZIP, -1);
      sp_compressor_stats_t st;
      sp_compressor_get_stats(ctx, &st);
      assert_true(st.builds >= 1);
      sp_compressor_destroy(ctx);
    }
    assert_true(ok); /* k large enough: learned and compressed */
  }
  free(pp);
}

/*
 * An output buffer's limit holds for every encoder: what does not fit is
 * SP_ETOOBIG with at most the limit written (the buffer's capacity is
 * rounded up past it, and the encoders used to write into all of it).
 */
static void test_compress_respects_limit(void **state) {
  (void)state;
  size_t n = 100000;
  uint8_t *noise = make_noise(n), *text = make_text(n);
  sp_compressor_t *ctx;
  assert_int_equal(sp_compressor_create(NULL, &ctx), 0);
  static const int levels[] = {-1, 0, 1, 2, 3, 6, 9};
  for (size_t i = 0; i < sizeof(levels) / sizeof(levels[0]); i++) {
    for (int via_ctx = 0; via_ctx < 2; via_ctx++) {
      sp_buf_t full, out;
      sp_buf_init(&full, 0);
      int lv = levels[i];
      assert_int_equal(via_ctx ? sp_compressor_gzip(ctx, noise, n, lv, &full)
                               : sp_gzip_compress(noise, n, lv, &full),
                       0);
      /* Short of what it needs: refused, the limit never passed. */
      sp_buf_init(&out, full.len - 100);
      int rc = via_ctx ? sp_compressor_gzip(ctx, noise, n, lv, &out)
                       : sp_gzip_compress(noise, n, lv, &out);
      assert_int_equal(rc, SP_ETOOBIG);
      assert_true(out.len <= full.len - 100);
      sp_buf_free(&out);
      /* Exactly enough for text: it fits. */
      sp_buf_free(&full);
      sp_buf_init(&full, 0);
      assert_int_equal(sp_gzip_compress(text, n, lv < 0 ? 1 : lv, &full), 0);
      sp_buf_init(&out, full.len);
      assert_int_equal(sp_gzip_compress(text, n, lv < 0 ? 1 : lv, &out), 0);
      assert_int_equal(out.len, full.len);
      assert_memory_equal(out.data, full.data, full.len);
      sp_buf_free(&out);
      sp_buf_free(&full);
    }
  }
  sp_compressor_destroy(ctx);
  free(noise);
  free(text);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_roundtrip_all_formats),
      cmocka_unit_test(test_inflate_sized_from_trailer),
      cmocka_unit_test(test_compress_respects_limit),
      cmocka_unit_test(test_gzip_helper_and_magic),
      cmocka_unit_test(test_encoding_parse),
      cmocka_unit_test(test_concatenated_gzip_members),
      cmocka_unit_test(test_corrupt_and_truncated),
      cmocka_unit_test(test_bomb_is_cut_at_the_limit),
      cmocka_unit_test(test_streaming_matches_one_shot),
      cmocka_unit_test(test_out_of_memory),
      cmocka_unit_test(test_ours_read_by_zlib),
      cmocka_unit_test(test_zlib_read_by_ours),
      cmocka_unit_test(test_gzip_header_fields),
      cmocka_unit_test(test_members_and_trailing_garbage),
      cmocka_unit_test(test_trailer_and_truncation),
      cmocka_unit_test(test_empty),
      cmocka_unit_test(test_bomb_streamed_bytewise),
      cmocka_unit_test(test_out_of_memory_everywhere),
      cmocka_unit_test(test_levels),
      cmocka_unit_test(test_ctx_learns_and_encodes_anything),
      cmocka_unit_test(test_ctx_explicit_levels),
      cmocka_unit_test(test_ctx_relearns_when_the_ratio_degrades),
      cmocka_unit_test(test_ctx_concurrent),
      cmocka_unit_test(test_ctx_out_of_memory),
  };
  if (getenv("TEST_FILTER")) cmocka_set_test_filter(getenv("TEST_FILTER"));
  return cmocka_run_group_tests(tests, NULL, NULL);
}
