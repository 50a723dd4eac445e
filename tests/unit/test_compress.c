/*
 * test_compress.c — limited inflating, format detection, gzip encoding.
 */
#include "pipeline/alloc.h"
#include "pipeline/compress.h"
#include "pipeline/error.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

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

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_roundtrip_all_formats),
      cmocka_unit_test(test_gzip_helper_and_magic),
      cmocka_unit_test(test_encoding_parse),
      cmocka_unit_test(test_concatenated_gzip_members),
      cmocka_unit_test(test_corrupt_and_truncated),
      cmocka_unit_test(test_bomb_is_cut_at_the_limit),
      cmocka_unit_test(test_streaming_matches_one_shot),
      cmocka_unit_test(test_out_of_memory),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
