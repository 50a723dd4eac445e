/*
 * test_json.c — the strict JSON parser and the writer helpers.
 */
#include "pipeline/alloc.h"
#include "pipeline/arena.h"
#include "pipeline/error.h"
#include "pipeline/json.h"

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static sp_json_t *parse_ok(sp_arena_t *a, const char *text) {
  sp_json_t *root = NULL;
  sp_json_error_t err;
  int rc = sp_json_parse(text, strlen(text), a, 0, &root, &err);
  if (rc) fail_msg("parse of %s failed: %s", text, err.reason);
  assert_non_null(root);
  return root;
}

static void test_values(void **state) {
  (void)state;
  sp_arena_t *a = sp_arena_create(0);
  sp_json_t *r =
      parse_ok(a, " {\"a\": [1, -2.5e3, true, false, null, \"x\"], \"b\": {}, \"c\": []}\n");
  assert_int_equal(r->type, SP_JSON_OBJECT);
  assert_int_equal(r->u.object.count, 3);
  assert_int_equal(r->offset, 1);
  const sp_json_t *arr = sp_json_get(r, "a");
  assert_non_null(arr);
  assert_int_equal(arr->type, SP_JSON_ARRAY);
  assert_int_equal(arr->u.array.count, 6);
  assert_int_equal(arr->u.array.items[0].type, SP_JSON_NUMBER);
  assert_true(arr->u.array.items[0].u.number.value == 1.0);
  assert_string_equal(arr->u.array.items[1].u.number.text, "-2.5e3");
  assert_true(arr->u.array.items[1].u.number.value == -2500.0);
  assert_int_equal(arr->u.array.items[2].type, SP_JSON_BOOL);
  assert_int_equal(arr->u.array.items[2].u.boolean, 1);
  assert_int_equal(arr->u.array.items[3].u.boolean, 0);
  assert_int_equal(arr->u.array.items[4].type, SP_JSON_NULL);
  assert_int_equal(arr->u.array.items[5].type, SP_JSON_STRING);
  assert_string_equal(arr->u.array.items[5].u.string.ptr, "x");
  assert_int_equal(sp_json_get(r, "b")->u.object.count, 0);
  assert_int_equal(sp_json_get(r, "c")->u.array.count, 0);
  assert_null(sp_json_get(r, "missing"));
  assert_null(sp_json_get(arr, "a"));

  /* Scalars are valid documents; duplicate keys are kept, sp_json_get takes the last. */
  assert_int_equal(parse_ok(a, "42")->type, SP_JSON_NUMBER);
  assert_string_equal(parse_ok(a, "\"s\"")->u.string.ptr, "s");
  r = parse_ok(a, "{\"k\":1,\"k\":2}");
  assert_int_equal(r->u.object.count, 2);
  assert_string_equal(sp_json_get(r, "k")->u.number.text, "2");
  /* A UTF-8 byte order mark is skipped. */
  assert_int_equal(parse_ok(a, "\xef\xbb\xbf[]")->type, SP_JSON_ARRAY);
  sp_arena_destroy(a);
}

static void test_numbers_exact(void **state) {
  (void)state;
  sp_arena_t *a = sp_arena_create(0);
  sp_json_t *r = parse_ok(a, "[18446744073709551615, -9223372036854775808, 0, -0, 0.1, 1E+2, "
                             "123456789012345, 1e400]");
  sp_json_t *it = r->u.array.items;
  assert_string_equal(it[0].u.number.text, "18446744073709551615");
  assert_string_equal(it[1].u.number.text, "-9223372036854775808");
  assert_true(it[2].u.number.value == 0);
  assert_true(signbit(it[3].u.number.value));
  assert_true(it[4].u.number.value == 0.1);
  assert_true(it[5].u.number.value == 100);
  assert_true(it[6].u.number.value == 123456789012345.0);
  assert_true(isinf(it[7].u.number.value)); /* out of range: kept as text, value inf */
  assert_string_equal(it[7].u.number.text, "1e400");
  sp_arena_destroy(a);
}

static void test_strings(void **state) {
  (void)state;
  sp_arena_t *a = sp_arena_create(0);
  sp_json_t *r =
      parse_ok(a, "\"a\\\"b\\\\c\\/d\\b\\f\\n\\r\\t\\u00e9\\u20AC\\ud83d\\ude00 \xc3\xbc\"");
  assert_string_equal(r->u.string.ptr,
                      "a\"b\\c/d\b\f\n\r\t\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80 \xc3\xbc");
  r = parse_ok(a, "\"x\\u0000y\"");
  assert_int_equal(r->u.string.len, 3);
  assert_memory_equal(r->u.string.ptr, "x\0y", 3);
  r = parse_ok(a, "{\"k\\u00e9y\":\"\"}");
  assert_string_equal(r->u.object.members[0].key, "k\xc3\xa9y");
  assert_int_equal(r->u.object.members[0].key_len, 4);
  assert_int_equal(r->u.object.members[0].value.u.string.len, 0);
  sp_arena_destroy(a);
}

typedef struct {
  const char *text;
  size_t len; /* 0: strlen */
  unsigned line, column;
  size_t offset;
  const char *reason;
} bad_case_t;

static void test_errors(void **state) {
  (void)state;
  static const bad_case_t cases[] = {
      {"", 0, 1, 1, 0, "unexpected end of input, expected a JSON value"},
      {"   ", 0, 1, 4, 3, "unexpected end of input, expected a JSON value"},
      {"{\"a\":1,}", 0, 1, 8, 7, "unexpected '}', expected a string key in object"},
      {"[1,]", 0, 1, 4, 3, "unexpected ']', expected a JSON value"},
      {"[1 2]", 0, 1, 4, 3, "unexpected '2', expected ',' or ']' after array element"},
      {"{\"a\":1 \"b\":2}", 0, 1, 8, 7, "unexpected '\"', expected ',' or '}' after object member"},
      {"{\n  \"a\" 1}", 0, 2, 7, 8, "unexpected '1', expected ':' after object key"},
      {"{a:1}", 0, 1, 2, 1, "unexpected 'a', expected a string key in object"},
      {"01", 0, 1, 1, 0, "invalid number (leading zeros are not allowed)"},
      {"-", 0, 1, 2, 1, "unexpected end of input, expected a digit in number"},
      {"1.", 0, 1, 3, 2, "unexpected end of input, expected a digit after the decimal point"},
      {"1e+", 0, 1, 4, 3, "unexpected end of input, expected a digit in exponent"},
      {".5", 0, 1, 1, 0, "unexpected '.', expected a JSON value"},
      {"+1", 0, 1, 1, 0, "unexpected '+', expected a JSON value"},
      {"tru", 0, 1, 1, 0, "unexpected 't', expected a JSON value"},
      {"nul", 0, 1, 1, 0, "unexpected 'n', expected a JSON value"},
      {"NaN", 0, 1, 1, 0, "unexpected 'N', expected a JSON value"},
      {"1 2", 0, 1, 3, 2, "unexpected '2', expected end of input after the JSON value"},
      {"[\"abc", 0, 1, 2, 1, "unterminated string"},
      {"\"ab\\", 0, 1, 1, 0, "unterminated string"},
      {"\"a\tb\"", 0, 1, 3, 2, "control character 0x09 in string must be escaped"},
      {"\"\\x\"", 0, 1, 2, 1, "invalid escape '\\x'"},
      {"\"\\u12\"", 0, 1, 2, 1, "invalid \\u escape (expected 4 hex digits)"},
      {"\"\\ud800\"", 0, 1, 2, 1, "unpaired UTF-16 surrogate in \\u escape"},
      {"\"\\ud800\\u0041\"", 0, 1, 2, 1, "unpaired UTF-16 surrogate in \\u escape"},
      {"\"\\udc00\"", 0, 1, 2, 1, "unpaired UTF-16 surrogate in \\u escape"},
      {"\"ok\xff\"", 0, 1, 4, 3, "invalid UTF-8 in string"},
      {"\"\xc0\xaf\"", 0, 1, 2, 1, "invalid UTF-8 in string"},         /* overlong */
      {"\"\xed\xa0\x80\"", 0, 1, 2, 1, "invalid UTF-8 in string"},     /* surrogate */
      {"\"\xf4\x90\x80\x80\"", 0, 1, 2, 1, "invalid UTF-8 in string"}, /* > U+10FFFF */
      {"\"\xe2\x82\"", 0, 1, 2, 1, "invalid UTF-8 in string"},         /* truncated */
      {"[\0]", 3, 1, 2, 1, "unexpected byte 0x00, expected a JSON value"},
      {"// c\n1", 0, 1, 1, 0, "unexpected '/', expected a JSON value"},
      {"{\"a\":[1,{\"b\":\n\n   ]}]}", 0, 3, 4, 18, "unexpected ']', expected a JSON value"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    const bad_case_t *c = &cases[i];
    sp_arena_t *a = sp_arena_create(0);
    sp_json_t *root = (sp_json_t *)1;
    sp_json_error_t err;
    size_t len = c->len ? c->len : strlen(c->text);
    int rc = sp_json_parse(c->text, len, a, 0, &root, &err);
    if (rc != SP_EPROTO || strcmp(err.reason, c->reason) != 0 || err.line != c->line ||
        err.column != c->column || err.offset != c->offset)
      fail_msg("case %zu (%s): rc %d, %u:%u @%zu \"%s\"", i, c->text, rc, err.line, err.column,
               err.offset, err.reason);
    assert_null(root);
    sp_arena_destroy(a);
  }
}

static void test_depth_limit(void **state) {
  (void)state;
  enum { BOMB = 100000 };
  char *bomb = malloc(BOMB);
  memset(bomb, '[', BOMB);
  sp_arena_t *a = sp_arena_create(0);
  sp_json_t *root;
  sp_json_error_t err;
  assert_int_equal(sp_json_parse(bomb, BOMB, a, 0, &root, &err), SP_EPROTO);
  assert_string_equal(err.reason, "nesting deeper than 100 levels");
  assert_int_equal(err.offset, 100);
  /* Objects count too, and a custom limit applies. */
  const char *objs = "{\"a\":{\"a\":{\"a\":1}}}";
  assert_int_equal(sp_json_parse(objs, strlen(objs), a, 2, &root, &err), SP_EPROTO);
  assert_string_equal(err.reason, "nesting deeper than 2 levels");
  assert_int_equal(sp_json_parse(objs, strlen(objs), a, 3, &root, &err), 0);
  /* Exactly the default limit is fine. */
  char ok[200];
  memset(ok, '[', 100);
  memset(ok + 100, ']', 100);
  assert_int_equal(sp_json_parse(ok, sizeof ok, a, 0, &root, &err), 0);
  sp_arena_destroy(a);
  free(bomb);
}

static void test_number_too_long(void **state) {
  (void)state;
  size_t n = SP_JSON_MAX_NUMBER_LEN + 1;
  char *num = malloc(n);
  memset(num, '7', n);
  sp_arena_t *a = sp_arena_create(0);
  sp_json_t *root;
  sp_json_error_t err;
  assert_int_equal(sp_json_parse(num, n, a, 0, &root, &err), SP_EPROTO);
  assert_string_equal(err.reason, "number too long (513 characters, limit 512)");
  assert_int_equal(sp_json_parse(num, n - 1, a, 0, &root, &err), 0);
  assert_true(root->u.number.value > 1e300);
  sp_arena_destroy(a);
  free(num);
}

static void test_alloc_failures(void **state) {
  (void)state;
  const char *doc = "{\"resource\":{\"attributes\":[{\"key\":\"a\",\"value\":{\"stringValue\":"
                    "\"x\\u00e9\"}},{\"key\":\"b\",\"value\":{\"intValue\":\"12\"}}]},"
                    "\"list\":[1,2,3,4,5,6,7,8,9,10,[[[]]],{\"deep\":[{}]}]}";
  int succeeded = 0;
  for (long n = 0; n < 1000 && !succeeded; n++) {
    sp_alloc_set_fail_after(n);
    sp_arena_t *a = sp_arena_create(64);
    sp_json_t *root = NULL;
    sp_json_error_t err;
    int rc = a ? sp_json_parse(doc, strlen(doc), a, 0, &root, &err) : SP_ENOMEM;
    sp_alloc_set_fail_after(-1);
    if (rc == 0) {
      succeeded = 1;
      assert_non_null(sp_json_get(root, "list"));
    } else {
      assert_int_equal(rc, SP_ENOMEM);
      if (a) assert_string_equal(err.reason, "out of memory");
      assert_null(root);
    }
    sp_arena_destroy(a);
  }
  assert_true(succeeded);
}

static const char *write_str(sp_buf_t *b, const char *s, size_t len) {
  b->len = 0;
  assert_int_equal(sp_json_write_string(b, s, len), 0);
  return sp_buf_cstr(b);
}

static void test_write_string(void **state) {
  (void)state;
  sp_buf_t b;
  sp_buf_init(&b, 0);
  assert_string_equal(write_str(&b, "", 0), "\"\"");
  assert_string_equal(write_str(&b, "plain", 5), "\"plain\"");
  assert_string_equal(write_str(&b, "q\"b\\s/", 6), "\"q\\\"b\\\\s/\"");
  assert_string_equal(write_str(&b, "\n\r\t\b\f\x01\x1f\x7f", 8),
                      "\"\\n\\r\\t\\b\\f\\u0001\\u001f\x7f\"");
  assert_string_equal(write_str(&b, "x\0y", 3), "\"x\\u0000y\"");
  /* Valid UTF-8 passes through; invalid bytes become U+FFFD escapes. */
  assert_string_equal(write_str(&b, "\xc3\xbc\xe2\x82\xac\xf0\x9f\x98\x80", 9),
                      "\"\xc3\xbc\xe2\x82\xac\xf0\x9f\x98\x80\"");
  assert_string_equal(write_str(&b,
                                "a\xff"
                                "b\xc3",
                                4),
                      "\"a\\ufffdb\\ufffd\"");
  assert_string_equal(write_str(&b, "\xed\xa0\x80", 3), "\"\\ufffd\\ufffd\\ufffd\"");

  /* What the writer produces, the parser reads back unchanged. */
  sp_arena_t *a = sp_arena_create(0);
  unsigned seed = 12345;
  for (int i = 0; i < 200; i++) {
    char s[64];
    size_t n = (size_t)(i % 64);
    for (size_t k = 0; k < n; k++) {
      seed = seed * 1103515245u + 12345u;
      s[k] = (char)((seed >> 16) & 0x7f); /* ASCII incl. control characters */
    }
    write_str(&b, s, n);
    sp_json_t *r = NULL;
    assert_int_equal(sp_json_parse((const char *)b.data, b.len, a, 0, &r, NULL), 0);
    assert_int_equal(r->u.string.len, n);
    assert_memory_equal(r->u.string.ptr, s, n);
  }
  sp_arena_destroy(a);

  /* A limit that the string does not fit leaves the buffer unchanged. */
  sp_buf_t small;
  sp_buf_init(&small, 8);
  assert_int_equal(sp_buf_puts(&small, "ab"), 0);
  assert_int_equal(sp_json_write_string(&small, "hello\n", 6), SP_ETOOBIG);
  assert_int_equal(small.len, 2);
  assert_int_equal(sp_json_write_string(&small, "hell", 4), 0);
  assert_int_equal(small.len, 8);
  sp_buf_free(&small);
  sp_buf_free(&b);
}

static const char *write_num(sp_buf_t *b, int kind, double d, int64_t i, uint64_t u) {
  b->len = 0;
  int rc = kind == 0   ? sp_json_write_double(b, d)
           : kind == 1 ? sp_json_write_int64(b, i)
                       : sp_json_write_uint64(b, u);
  assert_int_equal(rc, 0);
  return sp_buf_cstr(b);
}

static void test_write_numbers(void **state) {
  (void)state;
  sp_buf_t b;
  sp_buf_init(&b, 0);
  assert_string_equal(write_num(&b, 0, 0.1, 0, 0), "0.1");
  assert_string_equal(write_num(&b, 0, 3, 0, 0), "3");
  assert_string_equal(write_num(&b, 0, -0.0, 0, 0), "-0");
  assert_string_equal(write_num(&b, 0, 1e300, 0, 0), "1e+300");
  assert_string_equal(write_num(&b, 0, 1.0 / 3, 0, 0), "0.3333333333333333");
  assert_string_equal(write_num(&b, 1, 0, INT64_MIN, 0), "-9223372036854775808");
  assert_string_equal(write_num(&b, 1, 0, INT64_MAX, 0), "9223372036854775807");
  assert_string_equal(write_num(&b, 1, 0, -1, 0), "-1");
  assert_string_equal(write_num(&b, 2, 0, 0, UINT64_MAX), "18446744073709551615");
  assert_string_equal(write_num(&b, 2, 0, 0, 0), "0");
  b.len = 0;
  assert_int_equal(sp_json_write_double(&b, NAN), SP_EINVAL);
  assert_int_equal(sp_json_write_double(&b, -INFINITY), SP_EINVAL);
  assert_int_equal(b.len, 0);

  /* Doubles read back bit-exactly. */
  sp_arena_t *a = sp_arena_create(0);
  double vals[] = {0.1,        1e-310, 2.2250738585072014e-308, 1.7976931348623157e308,
                   123456.789, -1e21,  9007199254740993.0};
  for (size_t i = 0; i < sizeof vals / sizeof vals[0]; i++) {
    write_num(&b, 0, vals[i], 0, 0);
    sp_json_t *r = NULL;
    assert_int_equal(sp_json_parse((const char *)b.data, b.len, a, 0, &r, NULL), 0);
    assert_memory_equal(&r->u.number.value, &vals[i], sizeof(double));
  }
  sp_arena_destroy(a);
  sp_buf_free(&b);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_values),         cmocka_unit_test(test_numbers_exact),
      cmocka_unit_test(test_strings),        cmocka_unit_test(test_errors),
      cmocka_unit_test(test_depth_limit),    cmocka_unit_test(test_number_too_long),
      cmocka_unit_test(test_alloc_failures), cmocka_unit_test(test_write_string),
      cmocka_unit_test(test_write_numbers),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
