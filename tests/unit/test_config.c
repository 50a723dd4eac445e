/*
 * test_config.c — the YAML loader, `${...}` substitution, deep merge, the
 * scalar parsers and schema-driven decoding (pipeline/config.h).
 *
 * Error texts are part of the contract (users read them, and other tests
 * match them), so most tests compare exact `file:line:col: path: message`
 * lines. Leaks are caught by running this under ASan (SP_SANITIZE=ON).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "pipeline/alloc.h"
#include "pipeline/config.h"
#include "pipeline/error.h"
#include "pipeline/tls.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---- helpers -------------------------------------------------------------- */

static sp_config_doc_t *load(const char *yaml, sp_errors_t *errs, int expect_rc) {
  sp_config_doc_t *doc = NULL;
  int rc = sp_config_load_string("t.yaml", yaml, strlen(yaml), &doc, errs);
  if (rc != expect_rc) sp_errors_print(errs, 2);
  assert_int_equal(rc, expect_rc);
  if (rc == 0)
    assert_non_null(doc);
  else
    assert_null(doc);
  return doc;
}

/* Exact comparison of the collected lines, printing both sides on mismatch. */
static void expect_lines(const sp_errors_t *errs, const char *const *want, size_t n) {
  bool same = errs->n == n;
  for (size_t i = 0; same && i < n; i++)
    same = !strcmp(errs->lines[i], want[i]);
  if (!same) {
    fprintf(stderr, "got %zu line(s):\n", errs->n);
    for (size_t i = 0; i < errs->n; i++)
      fprintf(stderr, "  %s\n", errs->lines[i]);
    fprintf(stderr, "want %zu line(s):\n", n);
    for (size_t i = 0; i < n; i++)
      fprintf(stderr, "  %s\n", want[i]);
  }
  assert_true(same);
}
#define EXPECT_LINES(errs, ...)                                                                    \
  do {                                                                                             \
    const char *const want_[] = {__VA_ARGS__};                                                     \
    expect_lines((errs), want_, sizeof(want_) / sizeof(want_[0]));                                 \
  } while (0)

/* Follows "a", "b", ... through maps. */
static const sp_node_t *at(const sp_node_t *n, const char *k1, const char *k2, const char *k3) {
  if (k1) n = sp_node_get(n, k1);
  if (n && k2) n = sp_node_get(n, k2);
  if (n && k3) n = sp_node_get(n, k3);
  return n;
}

/* A private directory for files the tests write; removed by teardown. */
static char g_dir[64];

static int make_dir(void **state) {
  (void)state;
  snprintf(g_dir, sizeof(g_dir), "/tmp/sp_test_config_XXXXXX");
  return mkdtemp(g_dir) ? 0 : -1;
}

static int remove_dir(void **state) {
  (void)state;
  char cmd[128];
  snprintf(cmd, sizeof(cmd), "rm -rf '%s'", g_dir);
  return system(cmd) == 0 ? 0 : -1;
}

static const char *write_file(const char *name, const char *text) {
  static char paths[4][128];
  static int next;
  char *p = paths[next++ % 4];
  snprintf(p, 128, "%s/%s", g_dir, name);
  FILE *f = fopen(p, "w");
  assert_non_null(f);
  fputs(text, f);
  fclose(f);
  return p;
}

/* ---- scalar parsers ------------------------------------------------------- */

static void test_parse_bool(void **state) {
  (void)state;
  static const struct {
    const char *in;
    int rc;
    bool out;
  } cases[] = {
      {"true", 0, true},   {"TRUE", 0, true},   {"Yes", 0, true},        {"on", 0, true},
      {"false", 0, false}, {"No", 0, false},    {"OFF", 0, false},       {"", SP_EINVAL, 0},
      {"1", SP_EINVAL, 0}, {"y", SP_EINVAL, 0}, {"true ", SP_EINVAL, 0}, {"truth", SP_EINVAL, 0},
  };
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    bool b = !cases[i].out;
    assert_int_equal(sp_parse_bool(cases[i].in, &b), cases[i].rc);
    if (cases[i].rc == 0) assert_int_equal(b, cases[i].out);
  }
  bool b;
  assert_int_equal(sp_parse_bool(NULL, &b), SP_EINVAL);
}

static void test_parse_int(void **state) {
  (void)state;
  static const struct {
    const char *in;
    int rc;
    int64_t out;
  } cases[] = {
      {"0", 0, 0},
      {"42", 0, 42},
      {"-7", 0, -7},
      {"+5", 0, 5},
      {"010", 0, 10}, /* decimal, never octal */
      {"0x1F", 0, 31},
      {"0XfF", 0, 255},
      {"-0x10", 0, -16},
      {"9223372036854775807", 0, INT64_MAX},
      {"-9223372036854775808", 0, INT64_MIN},
      {"0x7fffffffffffffff", 0, INT64_MAX},
      {"9223372036854775808", SP_EINVAL, 0},  /* overflow */
      {"-9223372036854775809", SP_EINVAL, 0}, /* overflow */
      {"0x8000000000000000", SP_EINVAL, 0},   /* overflow */
      {"99999999999999999999999", SP_EINVAL, 0},
      {"", SP_EINVAL, 0},
      {"-", SP_EINVAL, 0},
      {"0x", SP_EINVAL, 0},
      {"abc", SP_EINVAL, 0},
      {"1.5", SP_EINVAL, 0},
      {" 1", SP_EINVAL, 0},
      {"1 ", SP_EINVAL, 0},
      {"--1", SP_EINVAL, 0},
      {"12a", SP_EINVAL, 0},
      {"0x1g", SP_EINVAL, 0},
  };
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    int64_t v = 12345;
    int rc = sp_parse_int(cases[i].in, &v);
    if (rc != cases[i].rc) fprintf(stderr, "case \"%s\"\n", cases[i].in);
    assert_int_equal(rc, cases[i].rc);
    if (rc == 0) assert_true(v == cases[i].out);
  }
}

static void test_parse_double(void **state) {
  (void)state;
  static const struct {
    const char *in;
    int rc;
    double out;
  } cases[] = {
      {"0", 0, 0.0},         {"0.25", 0, 0.25},       {"-1.5", 0, -1.5},
      {"1e3", 0, 1000.0},    {".5", 0, 0.5},          {"3", 0, 3.0},
      {"1e-400", 0, 0.0},    {"", SP_EINVAL, 0},      {" 1", SP_EINVAL, 0},
      {"1 ", SP_EINVAL, 0},  {"abc", SP_EINVAL, 0},   {"nan", SP_EINVAL, 0},
      {"inf", SP_EINVAL, 0}, {"1e999", SP_EINVAL, 0}, {"1.2.3", SP_EINVAL, 0},
  };
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    double v = -99;
    int rc = sp_parse_double(cases[i].in, &v);
    if (rc != cases[i].rc) fprintf(stderr, "case \"%s\"\n", cases[i].in);
    assert_int_equal(rc, cases[i].rc);
    if (rc == 0) assert_float_equal(v, cases[i].out, 1e-12);
  }
}

static void test_parse_duration(void **state) {
  (void)state;
  static const struct {
    const char *in;
    int rc;
    uint64_t ms;
  } cases[] = {
      {"0", 0, 0},
      {"0s", 0, 0},
      {"250ms", 0, 250},
      {"5s", 0, 5000},
      {"1m", 0, 60000},
      {"1h", 0, 3600000},
      {"1m30s", 0, 90000},
      {"1h1m1s1ms", 0, 3661001},
      {"1.5s", 0, 1500},
      {".5s", 0, 500},
      {"100us", 0, 1},        /* rounded up to 1 ms */
      {"100ns", 0, 1},        /* rounded up to 1 ms */
      {"1500us", 0, 2},       /* rounded up */
      {"100\xc2\xb5s", 0, 1}, /* µs */
      {"2562047h", 0, 9223369200000ull},
      {"", SP_EINVAL, 0},
      {"5", SP_EINVAL, 0}, /* a bare number is ambiguous */
      {"00", SP_EINVAL, 0},
      {"fast", SP_EINVAL, 0},
      {"-1s", SP_EINVAL, 0},
      {"1x", SP_EINVAL, 0},
      {"s", SP_EINVAL, 0},
      {"5 s", SP_EINVAL, 0},
      {"5s ", SP_EINVAL, 0},
      {"1d", SP_EINVAL, 0},
      {"6000000h", SP_EINVAL, 0},              /* overflows the nanosecond total */
      {"99999999999999999999s", SP_EINVAL, 0}, /* overflows the integer part */
      {"3000000h3000000h", SP_EINVAL, 0},      /* overflows the sum */
  };
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    uint64_t v = 777;
    int rc = sp_parse_duration_ms(cases[i].in, &v);
    if (rc != cases[i].rc || (rc == 0 && v != cases[i].ms))
      fprintf(stderr, "case \"%s\": rc %d, %llu ms\n", cases[i].in, rc, (unsigned long long)v);
    assert_int_equal(rc, cases[i].rc);
    if (rc == 0) assert_true(v == cases[i].ms);
  }
}

static void test_parse_size(void **state) {
  (void)state;
  static const struct {
    const char *in;
    int rc;
    uint64_t bytes;
  } cases[] = {
      {"0", 0, 0},
      {"512", 0, 512},
      {"512B", 0, 512},
      {"512b", 0, 512},
      {"64KiB", 0, 65536},
      {"64kib", 0, 65536},
      {"4MiB", 0, 4194304},
      {"1GiB", 0, 1073741824},
      {"2TiB", 0, 2199023255552ull},
      {"10KB", 0, 10000},
      {"10MB", 0, 10000000},
      {"1gb", 0, 1000000000},
      {"1.5KiB", 0, 1536},
      {"64 MiB", 0, 67108864},
      {"18446744073709551615", 0, UINT64_MAX},
      {"", SP_EINVAL, 0},
      {"big", SP_EINVAL, 0},
      {"KiB", SP_EINVAL, 0},
      {"-1", SP_EINVAL, 0},
      {"1.5", SP_EINVAL, 0}, /* bytes are whole */
      {"1.5B", SP_EINVAL, 0},
      {"64 ", SP_EINVAL, 0},
      {"10XB", SP_EINVAL, 0},
      {"1KiBs", SP_EINVAL, 0},
      {"18446744073709551616", SP_EINVAL, 0}, /* overflow */
      {"16777216TiB", SP_EINVAL, 0},          /* 2^64: overflow */
  };
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    uint64_t v = 777;
    int rc = sp_parse_size(cases[i].in, &v);
    if (rc != cases[i].rc || (rc == 0 && v != cases[i].bytes))
      fprintf(stderr, "case \"%s\": rc %d, %llu\n", cases[i].in, rc, (unsigned long long)v);
    assert_int_equal(rc, cases[i].rc);
    if (rc == 0) assert_true(v == cases[i].bytes);
  }
}

/* ---- errors --------------------------------------------------------------- */

static void test_errors_format(void **state) {
  (void)state;
  sp_errors_t errs = {0};
  sp_mark_t m = {.file = "a.yaml", .line = 3, .col = 7};
  sp_mark_t nofile = {.file = NULL, .line = 2, .col = 1};
  sp_errors_add(&errs, &m, "receivers::otlp", "bad %s", "thing");
  sp_errors_add(&errs, &m, NULL, "no path");
  sp_errors_add(&errs, &m, "", "empty path");
  sp_errors_add(&errs, NULL, "a.yaml", "cannot read: %s", "nope");
  sp_errors_add(&errs, NULL, NULL, "bare");
  sp_errors_add(&errs, &nofile, "x", "no file");
  EXPECT_LINES(&errs, "a.yaml:3:7: receivers::otlp: bad thing", "a.yaml:3:7: no path",
               "a.yaml:3:7: empty path", "a.yaml: cannot read: nope", "bare", "2:1: x: no file");

  int fds[2];
  assert_int_equal(pipe(fds), 0);
  sp_errors_print(&errs, fds[1]);
  close(fds[1]);
  char buf[512] = {0};
  ssize_t got = 0, r;
  while ((r = read(fds[0], buf + got, sizeof(buf) - 1 - (size_t)got)) > 0)
    got += r;
  close(fds[0]);
  assert_string_equal(buf, "a.yaml:3:7: receivers::otlp: bad thing\na.yaml:3:7: no path\n"
                           "a.yaml:3:7: empty path\na.yaml: cannot read: nope\nbare\n"
                           "2:1: x: no file\n");
  sp_errors_free(&errs);
  assert_int_equal(errs.n, 0);
  sp_errors_free(&errs); /* idempotent */
  sp_errors_free(NULL);
}

/* ---- loading -------------------------------------------------------------- */

static void test_load_tree_and_marks(void **state) {
  (void)state;
  sp_errors_t errs = {0};
  sp_config_doc_t *doc = load("receivers:\n"
                              "  otlp:\n"
                              "    endpoint: \"0.0.0.0:4317\"\n"
                              "    port: 4317\n"
                              "    a: ~\n"
                              "    b:\n"
                              "    c: null\n"
                              "    d: ''\n"
                              "    e: |\n"
                              "      text\n"
                              "list: [x, 'y', {k: v}]\n",
                              &errs, 0);
  const sp_node_t *root = doc->root;
  assert_int_equal(root->kind, SP_NODE_MAP);
  assert_int_equal(root->n, 2);
  const sp_node_t *otlp = at(root, "receivers", "otlp", NULL);
  assert_non_null(otlp);
  assert_int_equal(otlp->mark.line, 3);
  assert_int_equal(otlp->mark.col, 5);
  const sp_node_t *ep = sp_node_get(otlp, "endpoint");
  assert_int_equal(ep->kind, SP_NODE_SCALAR);
  assert_string_equal(ep->scalar, "0.0.0.0:4317");
  assert_true(ep->quoted);
  assert_string_equal(ep->mark.file, "t.yaml");
  assert_int_equal(ep->mark.line, 3);
  assert_int_equal(ep->mark.col, 15);
  assert_int_equal(otlp->key_marks[0].line, 3);
  assert_int_equal(otlp->key_marks[0].col, 5);
  const sp_node_t *port = sp_node_get(otlp, "port");
  assert_string_equal(port->scalar, "4317");
  assert_false(port->quoted);
  assert_int_equal(sp_node_get(otlp, "a")->kind, SP_NODE_NULL);
  assert_int_equal(sp_node_get(otlp, "b")->kind, SP_NODE_NULL);
  assert_int_equal(sp_node_get(otlp, "c")->kind, SP_NODE_NULL);
  assert_int_equal(sp_node_get(otlp, "d")->kind, SP_NODE_SCALAR); /* quoted "" is text */
  assert_string_equal(sp_node_get(otlp, "d")->scalar, "");
  assert_string_equal(sp_node_get(otlp, "e")->scalar, "text\n");
  assert_true(sp_node_get(otlp, "e")->quoted);
  assert_null(sp_node_get(otlp, "missing"));
  assert_null(sp_node_get(ep, "x")); /* not a map */
  assert_null(sp_node_get(NULL, "x"));

  const sp_node_t *list = sp_node_get(root, "list");
  assert_int_equal(list->kind, SP_NODE_SEQ);
  assert_int_equal(list->n, 3);
  assert_string_equal(list->items[1]->scalar, "y");
  assert_int_equal(list->items[2]->kind, SP_NODE_MAP);
  assert_string_equal(sp_node_kind_name(list), "a list");
  assert_string_equal(sp_node_kind_name(root), "a map");
  assert_string_equal(sp_node_kind_name(ep), "a scalar");
  assert_string_equal(sp_node_kind_name(sp_node_get(otlp, "a")), "null");
  assert_string_equal(sp_node_kind_name(NULL), "null");
  sp_config_doc_free(doc);
  sp_config_doc_free(NULL);
  assert_int_equal(errs.n, 0);
}

static void test_load_empty_and_root(void **state) {
  (void)state;
  sp_errors_t errs = {0};
  const char *empties[] = {"", "# only a comment\n", "---\n", "~\n"};
  for (size_t i = 0; i < sizeof(empties) / sizeof(empties[0]); i++) {
    sp_config_doc_t *doc = load(empties[i], &errs, 0);
    assert_int_equal(doc->root->kind, SP_NODE_MAP);
    assert_int_equal(doc->root->n, 0);
    sp_config_doc_free(doc);
  }
  load("- a\n- b\n", &errs, SP_ECONFIG);
  load("just text\n", &errs, SP_ECONFIG);
  load("a: 1\n---\nb: 2\n", &errs, SP_ECONFIG);
  EXPECT_LINES(&errs, "t.yaml:1:1: the configuration must be a map of sections, got a list",
               "t.yaml:1:1: the configuration must be a map of sections, got a scalar",
               "t.yaml:2:1: only one YAML document per file is supported");
  sp_errors_free(&errs);

  /* No files at all: an empty map. */
  sp_config_doc_t *doc = NULL;
  assert_int_equal(sp_config_load_files(NULL, 0, &doc, &errs), 0);
  assert_int_equal(doc->root->kind, SP_NODE_MAP);
  assert_int_equal(doc->root->n, 0);
  sp_config_doc_free(doc);
}

static void test_yaml_syntax_errors(void **state) {
  (void)state;
  static const struct {
    const char *yaml;
    const char *line;
  } cases[] = {
      {"a: b\n  c: d\n", "t.yaml:2:4: mapping values are not allowed in this context"},
      {"a: [1, 2\nb: 3\n",
       "t.yaml:2:2: did not find expected ',' or ']' (while parsing a flow sequence at line 1, "
       "column 4)"},
      {"a:\n\tb: 1\n",
       "t.yaml:2:1: found character that cannot start any token (while scanning for the next "
       "token at line 2, column 1)"},
      {"a: *nope\n", "t.yaml:1:4: a: undefined alias *nope (anchors must be defined before use)"},
      {"a: \"open\n", "t.yaml:2:1: found unexpected end of stream (while scanning a quoted "
                      "scalar at line 1, column 4)"},
      {"a: 1\nb: \x01\n", "t.yaml:2:4: control characters are not allowed (byte 0x01)"},
  };
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    sp_errors_t errs = {0};
    load(cases[i].yaml, &errs, SP_ECONFIG);
    EXPECT_LINES(&errs, cases[i].line);
    sp_errors_free(&errs);
  }
}

static void test_duplicate_keys(void **state) {
  (void)state;
  sp_errors_t errs = {0};
  load("a: 1\n"
       "b:\n"
       "  c: 1\n"
       "  c: 2\n"
       "a: 3\n"
       "l:\n"
       "  - {x: 1, x: 2}\n"
       "? [complex]\n"
       ": 1\n",
       &errs, SP_ECONFIG);
  EXPECT_LINES(&errs, "t.yaml:4:3: b: duplicate key \"c\"", "t.yaml:5:1: duplicate key \"a\"",
               "t.yaml:7:12: l[0]: duplicate key \"x\"",
               "t.yaml:8:3: map keys must be plain text, not a list");
  sp_errors_free(&errs);
}

static void test_anchors_aliases_merge_keys(void **state) {
  (void)state;
  sp_errors_t errs = {0};
  sp_config_doc_t *doc = load("base: &b\n"
                              "  x: 1\n"
                              "  y: 2\n"
                              "extra: &e {z: 9, x: 7}\n"
                              "other:\n"
                              "  y: 3\n"
                              "  <<: [*b, *e]\n"
                              "list: [*b, *b]\n"
                              "'<<': quoted-is-a-key\n",
                              &errs, 0);
  const sp_node_t *other = sp_node_get(doc->root, "other");
  assert_int_equal(other->n, 3);
  assert_string_equal(sp_node_get(other, "x")->scalar, "1"); /* the first source wins */
  assert_string_equal(sp_node_get(other, "y")->scalar, "3"); /* explicit keys win */
  assert_string_equal(sp_node_get(other, "z")->scalar, "9");
  assert_null(sp_node_get(other, "<<"));
  const sp_node_t *list = sp_node_get(doc->root, "list");
  assert_ptr_equal(list->items[0], sp_node_get(doc->root, "base")); /* shared, not copied */
  assert_ptr_equal(list->items[1], list->items[0]);
  assert_string_equal(sp_node_get(doc->root, "<<")->scalar, "quoted-is-a-key");
  sp_config_doc_free(doc);

  load("a: &x [1, *x]\n", &errs, SP_ECONFIG);
  load("a: &s text\nb:\n  <<: *s\nc: {<<: [{x: 1}, 2]}\n", &errs, SP_ECONFIG);
  load("a: &m {k: v}\nb: {*m : 1}\n", &errs, SP_ECONFIG);
  EXPECT_LINES(&errs, "t.yaml:1:11: a[1]: alias *x refers to a node that contains it",
               "t.yaml:3:3: b::<<: the value of a << merge key must be a map or a list of maps",
               "t.yaml:4:5: c::<<: the value of a << merge key must be a map or a list of maps",
               "t.yaml:2:5: b: map keys must be plain text, not a map");
  sp_errors_free(&errs);

  /* Anchored keys and aliases used as keys; later anchors shadow earlier. */
  doc = load("a: {&k name: 1}\nb: {*k : 2}\nc: &v one\nd: &v two\ne: *v\n", &errs, 0);
  assert_string_equal(at(doc->root, "b", "name", NULL)->scalar, "2");
  assert_string_equal(sp_node_get(doc->root, "e")->scalar, "two");
  sp_config_doc_free(doc);
}

/* Reading stops at the limit: libyaml's scanner is quadratic in flow depth,
 * so reading this 200k-deep document to its end would take minutes. */
static void test_deep_nesting_refused(void **state) {
  (void)state;
  sp_errors_t errs = {0};
  size_t depth = 200000;
  char *yaml = malloc(2 * depth + 8);
  assert_non_null(yaml);
  memcpy(yaml, "a: ", 3);
  memset(yaml + 3, '[', depth);
  memset(yaml + 3 + depth, ']', depth);
  yaml[3 + 2 * depth] = '\0';
  load(yaml, &errs, SP_ECONFIG);
  free(yaml);
  assert_int_equal(errs.n, 1);
  assert_non_null(strstr(errs.lines[0], "t.yaml:1:259: a[0][0]"));
  assert_non_null(strstr(errs.lines[0], "[0]: nested more than 256 levels deep"));
  sp_errors_free(&errs);
}

/* ---- environment substitution --------------------------------------------- */

static void test_env_substitution(void **state) {
  (void)state;
  setenv("SP_TEST_A", "hello", 1);
  setenv("SP_TEST_EMPTY", "", 1);
  setenv("SP_TEST_NULL", "null", 1);
  unsetenv("SP_TEST_UNSET");
  sp_errors_t errs = {0};
  sp_config_doc_t *doc = load("a: ${env:SP_TEST_A}\n"
                              "b: ${SP_TEST_A}\n"
                              "c: \"x-${SP_TEST_A}-${env:SP_TEST_A}y\"\n"
                              "d: ${env:SP_TEST_UNSET:-def ault}\n"
                              "e: \"${SP_TEST_UNSET:-}\"\n"
                              "f: price $$5 and $HOME and 100$\n"
                              "g: ${SP_TEST_UNSET}\n"
                              "h: '${env:SP_TEST_UNSET}'\n"
                              "i: ${SP_TEST_EMPTY:-fallback}\n"
                              "j: $${SP_TEST_A}\n"
                              "k: ${SP_TEST_NULL}\n"
                              "l: [\"${SP_TEST_A}\", x]\n" /* flow context: quote it */
                              "m: ${SP_TEST_A:-unused}\n"
                              "${SP_TEST_A}: keys are not substituted\n",
                              &errs, 0);
  const sp_node_t *r = doc->root;
  assert_string_equal(sp_node_get(r, "a")->scalar, "hello");
  assert_string_equal(sp_node_get(r, "b")->scalar, "hello");
  assert_string_equal(sp_node_get(r, "c")->scalar, "x-hello-helloy");
  assert_string_equal(sp_node_get(r, "d")->scalar, "def ault");
  assert_int_equal(sp_node_get(r, "e")->kind, SP_NODE_SCALAR);
  assert_string_equal(sp_node_get(r, "e")->scalar, "");
  assert_string_equal(sp_node_get(r, "f")->scalar, "price $5 and $HOME and 100$");
  /* Unset → "", and an empty plain value is null ("use the default"). */
  assert_int_equal(sp_node_get(r, "g")->kind, SP_NODE_NULL);
  assert_int_equal(sp_node_get(r, "h")->kind, SP_NODE_SCALAR);
  assert_string_equal(sp_node_get(r, "h")->scalar, "");
  assert_string_equal(sp_node_get(r, "i")->scalar, "fallback");
  assert_string_equal(sp_node_get(r, "j")->scalar, "${SP_TEST_A}");
  assert_int_equal(sp_node_get(r, "k")->kind, SP_NODE_NULL);
  assert_string_equal(sp_node_get(r, "l")->items[0]->scalar, "hello");
  assert_string_equal(sp_node_get(r, "m")->scalar, "hello");
  assert_string_equal(sp_node_get(r, "${SP_TEST_A}")->scalar, "keys are not substituted");
  sp_config_doc_free(doc);
  assert_int_equal(errs.n, 0);
}

static void test_env_malformed(void **state) {
  (void)state;
  sp_errors_t errs = {0};
  load("x: ${FOO\n"
       "a:\n"
       "  b:\n"
       "    - ok ${HOME}\n"
       "    - ${1BAD}\n"
       "    - ${file:/etc/passwd}\n"
       "    - \"${env:}\"\n"
       "    - ${env:A:b}\n"
       "    - ${A B}\n",
       &errs, SP_ECONFIG);
  EXPECT_LINES(&errs, "t.yaml:1:4: x: unclosed \"${\" in \"${FOO\"",
               "t.yaml:5:7: a::b[1]: invalid environment variable name \"1BAD\" in \"${1BAD}\"",
               "t.yaml:6:7: a::b[2]: unsupported reference \"${file:/etc/passwd}\": only "
               "environment variables (${env:NAME} or ${NAME}) can be substituted",
               "t.yaml:7:7: a::b[3]: invalid environment variable name \"\" in \"${env:}\"",
               "t.yaml:8:7: a::b[4]: invalid environment variable name \"A:b\" in \"${env:A:b}\"",
               "t.yaml:9:7: a::b[5]: invalid environment variable name \"A B\" in \"${A B}\"");
  sp_errors_free(&errs);
}

/* ---- files and merge ------------------------------------------------------ */

static void test_files_deep_merge(void **state) {
  (void)state;
  const char *base = write_file("base.yaml", "receivers:\n"
                                             "  otlp:\n"
                                             "    endpoint: 0.0.0.0:4317\n"
                                             "    tls:\n"
                                             "      cert_file: a.pem\n"
                                             "exporters:\n"
                                             "  debug: {}\n"
                                             "service:\n"
                                             "  pipelines: [a, b]\n");
  const char *over = write_file("over.yaml", "receivers:\n"
                                             "  otlp:\n"
                                             "    endpoint: 127.0.0.1:4317\n"
                                             "  pyroscope:\n"
                                             "    x: 1\n"
                                             "service:\n"
                                             "  pipelines: [c]\n");
  const char *paths[] = {base, over};
  sp_config_doc_t *doc = NULL;
  sp_errors_t errs = {0};
  assert_int_equal(sp_config_load_files(paths, 2, &doc, &errs), 0);
  const sp_node_t *root = doc->root;

  const sp_node_t *ep = at(root, "receivers", "otlp", "endpoint");
  assert_string_equal(ep->scalar, "127.0.0.1:4317");
  assert_string_equal(ep->mark.file, over);
  assert_int_equal(ep->mark.line, 3);
  assert_int_equal(ep->mark.col, 15);

  const sp_node_t *cert = at(at(root, "receivers", "otlp", "tls"), "cert_file", NULL, NULL);
  assert_string_equal(cert->scalar, "a.pem");
  assert_string_equal(cert->mark.file, base);
  assert_int_equal(cert->mark.line, 5);

  assert_non_null(at(root, "receivers", "pyroscope", "x"));
  assert_non_null(at(root, "exporters", "debug", NULL));
  const sp_node_t *pipes = at(root, "service", "pipelines", NULL);
  assert_int_equal(pipes->n, 1); /* lists are replaced, not appended */
  assert_string_equal(pipes->items[0]->scalar, "c");
  assert_string_equal(pipes->mark.file, over);
  assert_int_equal(sp_node_get(root, "receivers")->n, 2);
  sp_config_doc_free(doc);
  assert_int_equal(errs.n, 0);

  /* Every bad file is reported, not just the first. */
  const char *bad = write_file("bad.yaml", "a: [\n");
  char missing[160], dir_line[160], missing_line[200];
  snprintf(missing, sizeof(missing), "%s/missing.yaml", g_dir);
  const char *paths2[] = {missing, base, bad, g_dir};
  assert_int_equal(sp_config_load_files(paths2, 4, &doc, &errs), SP_ECONFIG);
  assert_null(doc);
  snprintf(missing_line, sizeof(missing_line), "%s: cannot read: No such file or directory",
           missing);
  char bad_line[200];
  snprintf(bad_line, sizeof(bad_line),
           "%s:2:1: did not find expected node content (while parsing a flow node at line 2, "
           "column 1)",
           bad);
  snprintf(dir_line, sizeof(dir_line), "%s: cannot read: Is a directory", g_dir);
  EXPECT_LINES(&errs, missing_line, bad_line, dir_line);
  sp_errors_free(&errs);
}

/* ---- decoding ------------------------------------------------------------- */

typedef struct t_item_s {
  char *name;
  int64_t weight;
} t_item_t;

typedef struct t_inner_s {
  bool present;
  char *endpoint;
  uint64_t timeout_ms;
} t_inner_t;

typedef struct t_all_s {
  bool flag;
  int64_t port;
  double ratio;
  char *name;
  char *unset;
  uint64_t timeout_ms;
  uint64_t limit;
  int mode;
  sp_strlist_t tags;
  sp_strlist_t protocols;
  sp_strmap_t headers;
  sp_strmap_t labels;
  t_inner_t inner;
  t_inner_t absent_inner;
  sp_cfg_list_t items;
  sp_tls_config_t tls;
  sp_tls_config_t client_tls;
} t_all_t;

static const sp_cfg_field_t t_item_fields[] = {
    {.key = "name",
     .type = SP_CFG_STRING,
     .offset = offsetof(t_item_t, name),
     .flags = SP_CFG_REQUIRED},
    {.key = "weight",
     .type = SP_CFG_INT,
     .offset = offsetof(t_item_t, weight),
     .def = "1",
     .min = 0,
     .max = 100},
};
static const sp_cfg_schema_t t_item_schema = {t_item_fields, 2, sizeof(t_item_t), NULL};

static const sp_cfg_field_t t_inner_fields[] = {
    {.key = "endpoint",
     .type = SP_CFG_STRING,
     .offset = offsetof(t_inner_t, endpoint),
     .flags = SP_CFG_REQUIRED | SP_CFG_NONEMPTY},
    {.key = "timeout",
     .type = SP_CFG_DURATION,
     .offset = offsetof(t_inner_t, timeout_ms),
     .def = "200ms"},
};
static const sp_cfg_schema_t t_inner_schema = {t_inner_fields, 2, sizeof(t_inner_t), NULL};

static const char *const t_modes[] = {"proto", "json", NULL};

#define OFF(m) offsetof(t_all_t, m)
static const sp_cfg_field_t t_all_fields[] = {
    {.key = "flag", .type = SP_CFG_BOOL, .offset = OFF(flag), .def = "true"},
    {.key = "port",
     .type = SP_CFG_INT,
     .offset = OFF(port),
     .flags = SP_CFG_REQUIRED,
     .min = 1,
     .max = 65535},
    {.key = "ratio", .type = SP_CFG_DOUBLE, .offset = OFF(ratio), .def = "0.5", .min = 0, .max = 1},
    {.key = "name",
     .type = SP_CFG_STRING,
     .offset = OFF(name),
     .flags = SP_CFG_NONEMPTY,
     .def = "default-name"},
    {.key = "unset", .type = SP_CFG_STRING, .offset = OFF(unset)},
    {.key = "timeout",
     .type = SP_CFG_DURATION,
     .offset = OFF(timeout_ms),
     .def = "5s",
     .min = 1,
     .max = 3600000},
    {.key = "limit",
     .type = SP_CFG_SIZE,
     .offset = OFF(limit),
     .def = "4MiB",
     .min = 1024,
     .max = 1 << 30},
    {.key = "mode",
     .type = SP_CFG_ENUM,
     .offset = OFF(mode),
     .def = "json",
     .enum_values = t_modes},
    {.key = "tags", .type = SP_CFG_STRLIST, .offset = OFF(tags)},
    {.key = "protocols", .type = SP_CFG_STRLIST, .offset = OFF(protocols), .def = "[grpc, http]"},
    {.key = "headers", .type = SP_CFG_STRMAP, .offset = OFF(headers)},
    {.key = "labels", .type = SP_CFG_STRMAP, .offset = OFF(labels), .def = "{env: prod}"},
    {.key = "inner",
     .type = SP_CFG_SECTION,
     .offset = OFF(inner),
     .flags = SP_CFG_PRESENT,
     .section = &t_inner_schema,
     .present_offset = offsetof(t_inner_t, present)},
    {.key = "absent_inner",
     .type = SP_CFG_SECTION,
     .offset = OFF(absent_inner),
     .flags = SP_CFG_PRESENT,
     .section = &t_inner_schema,
     .present_offset = offsetof(t_inner_t, present)},
    {.key = "items", .type = SP_CFG_LIST, .offset = OFF(items), .section = &t_item_schema},
    {.key = "tls",
     .type = SP_CFG_SECTION,
     .offset = OFF(tls),
     .flags = SP_CFG_PRESENT,
     .section = &sp_tls_server_schema,
     .present_offset = offsetof(sp_tls_config_t, present)},
    {.key = "client_tls",
     .type = SP_CFG_SECTION,
     .offset = OFF(client_tls),
     .flags = SP_CFG_PRESENT,
     .section = &sp_tls_client_schema,
     .present_offset = offsetof(sp_tls_config_t, present)},
};
static const sp_cfg_schema_t t_all_schema = {
    t_all_fields, sizeof(t_all_fields) / sizeof(t_all_fields[0]), sizeof(t_all_t), NULL};

static const char *k_full_yaml = "flag: off\n"
                                 "port: \"8080\"\n"
                                 "ratio: 0.25\n"
                                 "name: 42\n"
                                 "timeout: 1m30s\n"
                                 "limit: 64KiB\n"
                                 "mode: PROTO\n"
                                 "tags: single\n"
                                 "headers:\n"
                                 "  X-A: one\n"
                                 "  X-B:\n"
                                 "inner:\n"
                                 "  endpoint: localhost:1\n"
                                 "items:\n"
                                 "  - name: a\n"
                                 "    weight: 5\n"
                                 "  - name: b\n"
                                 "tls:\n"
                                 "  cert_file: c.pem\n"
                                 "  key_file: k.pem\n"
                                 "client_tls:\n";

static void test_decode_every_type(void **state) {
  (void)state;
  sp_errors_t errs = {0};
  sp_config_doc_t *doc = load(k_full_yaml, &errs, 0);
  t_all_t c = {0};
  int rc = sp_cfg_decode(&t_all_schema, doc->root, "receivers::test", NULL, &c, &errs);
  if (rc) sp_errors_print(&errs, 2);
  assert_int_equal(rc, 0);
  assert_int_equal(errs.n, 0);

  assert_false(c.flag);
  assert_true(c.port == 8080);
  assert_float_equal(c.ratio, 0.25, 1e-12);
  assert_string_equal(c.name, "42"); /* a plain number is fine as text */
  assert_null(c.unset);
  assert_true(c.timeout_ms == 90000);
  assert_true(c.limit == 65536);
  assert_int_equal(c.mode, 0);
  assert_int_equal(c.tags.n, 1);
  assert_string_equal(c.tags.items[0], "single");
  assert_int_equal(c.protocols.n, 2); /* from the default */
  assert_string_equal(c.protocols.items[0], "grpc");
  assert_string_equal(c.protocols.items[1], "http");
  assert_int_equal(c.headers.n, 2);
  assert_string_equal(sp_strmap_get(&c.headers, "X-A"), "one");
  assert_string_equal(sp_strmap_get(&c.headers, "X-B"), "");
  assert_null(sp_strmap_get(&c.headers, "X-C"));
  assert_null(sp_strmap_get(NULL, "X-C"));
  assert_string_equal(sp_strmap_get(&c.labels, "env"), "prod");
  assert_true(c.inner.present);
  assert_string_equal(c.inner.endpoint, "localhost:1");
  assert_true(c.inner.timeout_ms == 200);
  assert_false(c.absent_inner.present); /* absent: no presence, defaults, no required error */
  assert_null(c.absent_inner.endpoint);
  assert_true(c.absent_inner.timeout_ms == 200);
  assert_int_equal(c.items.n, 2);
  t_item_t *items = c.items.items;
  assert_string_equal(items[0].name, "a");
  assert_true(items[0].weight == 5);
  assert_string_equal(items[1].name, "b");
  assert_true(items[1].weight == 1);
  assert_true(c.tls.present);
  assert_string_equal(c.tls.cert_file, "c.pem");
  assert_string_equal(c.tls.key_file, "k.pem");
  assert_string_equal(c.tls.min_version, "1.2");
  assert_true(c.client_tls.present); /* `client_tls:` alone: present, all defaults */
  assert_false(c.client_tls.insecure);
  assert_string_equal(c.client_tls.min_version, "1.2");

  sp_cfg_free(&t_all_schema, &c);
  assert_null(c.name);
  assert_null(c.items.items);
  assert_int_equal(c.headers.n, 0);
  sp_cfg_free(&t_all_schema, &c); /* members are zeroed: a second free is harmless */
  sp_cfg_free(&t_all_schema, NULL);
  sp_config_doc_free(doc);
}

static void test_decode_defaults_only(void **state) {
  (void)state;
  sp_errors_t errs = {0};
  t_all_t c = {0};
  sp_mark_t parent = {.file = "p.yaml", .line = 3, .col = 5};
  assert_int_equal(sp_cfg_decode(&t_all_schema, NULL, "receivers::test", &parent, &c, &errs),
                   SP_ECONFIG);
  EXPECT_LINES(&errs, "p.yaml:3:5: receivers::test: missing required key \"port\"");
  /* Everything else still got its default. */
  assert_true(c.flag);
  assert_string_equal(c.name, "default-name");
  assert_true(c.timeout_ms == 5000);
  assert_true(c.limit == 4u << 20);
  assert_int_equal(c.mode, 1);
  assert_float_equal(c.ratio, 0.5, 1e-12);
  assert_false(c.tls.present);
  assert_string_equal(c.tls.min_version, "1.2");
  assert_int_equal(c.items.n, 0);
  sp_cfg_free(&t_all_schema, &c);
  sp_errors_free(&errs);

  /* Null values mean "use the default"; a required key must have a value. */
  unsetenv("SP_TEST_UNSET");
  sp_config_doc_t *doc = load("port:\nname: ${SP_TEST_UNSET}\nitems:\n", &errs, 0);
  t_all_t d = {0};
  assert_int_equal(sp_cfg_decode(&t_all_schema, doc->root, "x", NULL, &d, &errs), SP_ECONFIG);
  EXPECT_LINES(&errs, "t.yaml:1:6: x: missing value for required key \"port\"");
  assert_string_equal(d.name, "default-name");
  sp_cfg_free(&t_all_schema, &d);
  sp_config_doc_free(doc);
  sp_errors_free(&errs);
}

static void test_decode_unknown_key_suggestion(void **state) {
  (void)state;
  sp_errors_t errs = {0};
  sp_config_doc_t *doc = load("inner:\n"
                              "  endpont: x\n"
                              "  Timeout: 1s\n"
                              "  zzz: 1\n",
                              &errs, 0);
  t_inner_t in = {0};
  assert_int_equal(sp_cfg_decode(&t_inner_schema, sp_node_get(doc->root, "inner"),
                                 "receivers::otlp", NULL, &in, &errs),
                   SP_ECONFIG);
  EXPECT_LINES(&errs,
               "t.yaml:2:3: receivers::otlp: unknown key \"endpont\" (known: endpoint, timeout); "
               "did you mean \"endpoint\"?",
               "t.yaml:3:3: receivers::otlp: unknown key \"Timeout\" (known: endpoint, timeout); "
               "did you mean \"timeout\"?",
               "t.yaml:4:3: receivers::otlp: unknown key \"zzz\" (known: endpoint, timeout)",
               "t.yaml:2:3: receivers::otlp: missing required key \"endpoint\"");
  sp_cfg_free(&t_inner_schema, &in);
  sp_errors_free(&errs);

  static const sp_cfg_schema_t empty = {NULL, 0, 1, NULL};
  char dummy = 0;
  assert_int_equal(sp_cfg_decode(&empty, doc->root, "", NULL, &dummy, &errs), SP_ECONFIG);
  EXPECT_LINES(&errs, "t.yaml:1:1: unknown key \"inner\" (this section takes no keys)");
  sp_errors_free(&errs);
  sp_config_doc_free(doc);
}

static void test_decode_many_errors_at_once(void **state) {
  (void)state;
  sp_errors_t errs = {0};
  sp_config_doc_t *doc = load("flag: maybe\n"                /* 1 */
                              "port: 0\n"                    /* 2 */
                              "ratio: abc\n"                 /* 3 */
                              "timeout: fast\n"              /* 4 */
                              "limit: [1]\n"                 /* 5 */
                              "mode: xml\n"                  /* 6 */
                              "tagz: x\n"                    /* 7 */
                              "inner:\n"                     /* 8 */
                              "items:\n"                     /* 9 */
                              "  - weight: 500\n"            /* 10 */
                              "  - name: {a: 1}\n"           /* 11 */
                              "tls:\n"                       /* 12 */
                              "  cert_file: c.pem\n"         /* 13 */
                              "  min_versio: \"1.3\"\n"      /* 14 */
                              "client_tls: {cert_file: c}\n" /* 15 */
                              "name: \"\"\n"                 /* 16 */
                              "headers: [a]\n"               /* 17 */
                              "tags: [a, [b]]\n"             /* 18 */
                              "absent_inner: text\n"         /* 19 */
                              "timeout: 2h\n",               /* 20: duplicate */
                              &errs, SP_ECONFIG);
  EXPECT_LINES(&errs, "t.yaml:20:1: duplicate key \"timeout\"");
  sp_errors_free(&errs);

  doc = load("flag: maybe\n"                /* 1 */
             "port: 0\n"                    /* 2 */
             "ratio: abc\n"                 /* 3 */
             "timeout: 2h\n"                /* 4 */
             "limit: [1]\n"                 /* 5 */
             "mode: xml\n"                  /* 6 */
             "tagz: x\n"                    /* 7 */
             "inner:\n"                     /* 8 */
             "items:\n"                     /* 9 */
             "  - weight: 500\n"            /* 10 */
             "  - name: {a: 1}\n"           /* 11 */
             "tls:\n"                       /* 12 */
             "  cert_file: c.pem\n"         /* 13 */
             "  min_versio: \"1.3\"\n"      /* 14 */
             "client_tls: {cert_file: c}\n" /* 15 */
             "name: \"\"\n"                 /* 16 */
             "headers: [a]\n"               /* 17 */
             "tags: [a, [b]]\n"             /* 18 */
             "absent_inner: text\n"         /* 19 */
             "ratio2: 1\n",                 /* 20 */
             &errs, 0);
  t_all_t c = {0};
  assert_int_equal(sp_cfg_decode(&t_all_schema, doc->root, "receivers::test", NULL, &c, &errs),
                   SP_ECONFIG);
  EXPECT_LINES(
      &errs, "t.yaml:1:7: receivers::test::flag: expected true or false, got \"maybe\"",
      "t.yaml:2:7: receivers::test::port: must be between 1 and 65535, got 0",
      "t.yaml:3:8: receivers::test::ratio: expected a number, got \"abc\"",
      "t.yaml:4:10: receivers::test::timeout: must be between 1ms and 1h, got 2h",
      "t.yaml:5:8: receivers::test::limit: expected a size, got a list",
      "t.yaml:6:7: receivers::test::mode: expected one of proto, json, got \"xml\"",
      "t.yaml:7:1: receivers::test: unknown key \"tagz\" (known: flag, port, ratio, name, unset, "
      "timeout, limit, mode, tags, protocols, headers, labels, inner, absent_inner, items, tls, "
      "client_tls); did you mean \"tags\"?",
      "t.yaml:8:7: receivers::test::inner: missing required key \"endpoint\"",
      "t.yaml:10:13: receivers::test::items[0]::weight: must be between 0 and 100, got 500",
      "t.yaml:10:5: receivers::test::items[0]: missing required key \"name\"",
      "t.yaml:11:11: receivers::test::items[1]::name: expected a string, got a map",
      "t.yaml:14:3: receivers::test::tls: unknown key \"min_versio\" (known: cert_file, "
      "key_file, client_ca_file, min_version); did you mean \"min_version\"?",
      "t.yaml:15:13: receivers::test::client_tls: cert_file and key_file must be given together "
      "(key_file is missing)",
      "t.yaml:16:7: receivers::test::name: must not be empty",
      "t.yaml:17:10: receivers::test::headers: expected a map of strings, got a list",
      "t.yaml:18:11: receivers::test::tags[1]: expected a string, got a list",
      "t.yaml:19:15: receivers::test::absent_inner: expected a map, got \"text\"",
      "t.yaml:20:1: receivers::test: unknown key \"ratio2\" (known: flag, port, ratio, name, "
      "unset, timeout, limit, mode, tags, protocols, headers, labels, inner, absent_inner, items, "
      "tls, client_tls); did you mean \"ratio\"?");
  sp_cfg_free(&t_all_schema, &c);
  sp_config_doc_free(doc);
  sp_errors_free(&errs);
}

static void test_decode_wrong_kinds_and_quoted(void **state) {
  (void)state;
  sp_errors_t errs = {0};
  sp_config_doc_t *doc = load("port: '65535'\n"
                              "flag: 'yes'\n"
                              "ratio: \"1\"\n"
                              "timeout: '250ms'\n"
                              "limit: \"1024\"\n"
                              "name: {a: b}\n"
                              "mode: [proto]\n"
                              "items: {name: x}\n"
                              "inner: [x]\n"
                              "tags: []\n",
                              &errs, 0);
  t_all_t c = {0};
  assert_int_equal(sp_cfg_decode(&t_all_schema, doc->root, "", NULL, &c, &errs), SP_ECONFIG);
  EXPECT_LINES(&errs, "t.yaml:6:7: name: expected a string, got a map",
               "t.yaml:7:7: mode: expected one of proto, json, got a list",
               "t.yaml:8:8: items: expected a list, got a map",
               "t.yaml:9:8: inner: expected a map, got a list");
  /* Quoted numbers, bools, durations and sizes are accepted (env values). */
  assert_true(c.port == 65535);
  assert_true(c.flag);
  assert_float_equal(c.ratio, 1.0, 1e-12);
  assert_true(c.timeout_ms == 250);
  assert_true(c.limit == 1024);
  assert_int_equal(c.tags.n, 0);
  sp_cfg_free(&t_all_schema, &c);
  sp_config_doc_free(doc);
  sp_errors_free(&errs);

  /* The root itself of the wrong kind. */
  doc = load("x: [1]\n", &errs, 0);
  assert_int_equal(sp_cfg_decode(&t_all_schema, sp_node_get(doc->root, "x"), "processors::batch",
                                 NULL, &c, &errs),
                   SP_ECONFIG);
  EXPECT_LINES(&errs, "t.yaml:1:4: processors::batch: expected a map, got a list");
  sp_cfg_free(&t_all_schema, &c);
  sp_config_doc_free(doc);
  sp_errors_free(&errs);
}

/* Range messages for one-sided bounds and typed bounds. */
typedef struct t_bounds_s {
  int64_t at_least;
  int64_t at_most;
  uint64_t size;
  uint64_t dur;
} t_bounds_t;

static const sp_cfg_field_t t_bounds_fields[] = {
    {.key = "at_least",
     .type = SP_CFG_INT,
     .offset = offsetof(t_bounds_t, at_least),
     .min = 1,
     .max = 1e19},
    {.key = "at_most",
     .type = SP_CFG_INT,
     .offset = offsetof(t_bounds_t, at_most),
     .min = -1e19,
     .max = 10},
    {.key = "size",
     .type = SP_CFG_SIZE,
     .offset = offsetof(t_bounds_t, size),
     .min = 1024,
     .max = 1 << 20},
    {.key = "dur",
     .type = SP_CFG_DURATION,
     .offset = offsetof(t_bounds_t, dur),
     .min = 500,
     .max = 90000},
};
static const sp_cfg_schema_t t_bounds_schema = {t_bounds_fields, 4, sizeof(t_bounds_t), NULL};

static void test_decode_bounds_messages(void **state) {
  (void)state;
  sp_errors_t errs = {0};
  sp_config_doc_t *doc = load("at_least: 0\nat_most: 0x10\nsize: 2MiB\ndur: 100ms\n", &errs, 0);
  t_bounds_t b = {0};
  assert_int_equal(sp_cfg_decode(&t_bounds_schema, doc->root, "b", NULL, &b, &errs), SP_ECONFIG);
  EXPECT_LINES(&errs, "t.yaml:1:11: b::at_least: must be at least 1, got 0",
               "t.yaml:2:10: b::at_most: must be at most 10, got 0x10",
               "t.yaml:3:7: b::size: must be between 1KiB and 1MiB, got 2MiB",
               "t.yaml:4:6: b::dur: must be between 500ms and 90s, got 100ms");
  sp_config_doc_free(doc);
  sp_errors_free(&errs);
}

/* ---- TLS schemas ---------------------------------------------------------- */

typedef struct t_tls_holder_s {
  sp_tls_config_t tls;
} t_tls_holder_t;

static const sp_cfg_field_t t_server_fields[] = {
    {.key = "tls",
     .type = SP_CFG_SECTION,
     .offset = offsetof(t_tls_holder_t, tls),
     .flags = SP_CFG_PRESENT,
     .section = &sp_tls_server_schema,
     .present_offset = offsetof(sp_tls_config_t, present)},
};
static const sp_cfg_schema_t t_server_schema = {t_server_fields, 1, sizeof(t_tls_holder_t), NULL};
static const sp_cfg_field_t t_client_fields[] = {
    {.key = "tls",
     .type = SP_CFG_SECTION,
     .offset = offsetof(t_tls_holder_t, tls),
     .flags = SP_CFG_PRESENT,
     .section = &sp_tls_client_schema,
     .present_offset = offsetof(sp_tls_config_t, present)},
};
static const sp_cfg_schema_t t_client_schema = {t_client_fields, 1, sizeof(t_tls_holder_t), NULL};

/* Decodes @p yaml with @p schema; returns rc and leaves lines in errs. */
static int decode_tls(const sp_cfg_schema_t *schema, const char *yaml, t_tls_holder_t *h,
                      sp_errors_t *errs) {
  sp_config_doc_t *doc = load(yaml, errs, 0);
  memset(h, 0, sizeof(*h));
  int rc = sp_cfg_decode(schema, doc->root, "r", NULL, h, errs);
  sp_config_doc_free(doc); /* decoded strings are copies: the doc may go */
  return rc;
}

static void test_tls_schemas(void **state) {
  (void)state;
  sp_errors_t errs = {0};
  t_tls_holder_t h;

  assert_int_equal(decode_tls(&t_server_schema, "", &h, &errs), 0);
  assert_false(h.tls.present);
  sp_cfg_free(&t_server_schema, &h);

  assert_int_equal(decode_tls(&t_server_schema,
                              "tls:\n  cert_file: c\n  key_file: k\n  client_ca_file: ca\n"
                              "  min_version: 1.3\n",
                              &h, &errs),
                   0);
  assert_true(h.tls.present);
  assert_string_equal(h.tls.client_ca_file, "ca");
  assert_string_equal(h.tls.min_version, "1.3");
  sp_cfg_free(&t_server_schema, &h);

  assert_int_equal(decode_tls(&t_server_schema, "tls:\n", &h, &errs), SP_ECONFIG);
  sp_cfg_free(&t_server_schema, &h); /* a failed decode is freed too */
  assert_int_equal(decode_tls(&t_server_schema,
                              "tls: {key_file: k, cert_file: c, "
                              "min_version: \"1.1\"}\n",
                              &h, &errs),
                   SP_ECONFIG);
  sp_cfg_free(&t_server_schema, &h);
  assert_int_equal(decode_tls(&t_server_schema, "tls: {ca_file: x}\n", &h, &errs), SP_ECONFIG);
  sp_cfg_free(&t_server_schema, &h);
  EXPECT_LINES(&errs,
               "t.yaml:1:5: r::tls: missing required key \"cert_file\" (a TLS server needs "
               "cert_file and key_file)",
               "t.yaml:1:5: r::tls: missing required key \"key_file\" (a TLS server needs "
               "cert_file and key_file)",
               "t.yaml:1:47: r::tls::min_version: expected one of 1.2, 1.3, got \"1.1\"",
               "t.yaml:1:7: r::tls: unknown key \"ca_file\" (known: cert_file, key_file, "
               "client_ca_file, min_version)");
  sp_errors_free(&errs);

  assert_int_equal(decode_tls(&t_client_schema,
                              "tls:\n  insecure: true\n  ca_file: ca\n  server_name_override: s\n"
                              "  insecure_skip_verify: yes\n",
                              &h, &errs),
                   0);
  assert_true(h.tls.present);
  assert_true(h.tls.insecure);
  assert_true(h.tls.insecure_skip_verify);
  assert_string_equal(h.tls.ca_file, "ca");
  assert_string_equal(h.tls.server_name_override, "s");
  assert_string_equal(h.tls.min_version, "1.2");
  sp_cfg_free(&t_client_schema, &h);

  assert_int_equal(decode_tls(&t_client_schema, "tls: {cert_file: c, key_file: k}\n", &h, &errs),
                   0);
  sp_cfg_free(&t_client_schema, &h);
  assert_int_equal(decode_tls(&t_client_schema, "tls: {key_file: k}\n", &h, &errs), SP_ECONFIG);
  sp_cfg_free(&t_client_schema, &h);
  EXPECT_LINES(&errs, "t.yaml:1:6: r::tls: cert_file and key_file must be given together "
                      "(cert_file is missing)");
  sp_errors_free(&errs);
}

/* ---- out of memory -------------------------------------------------------- */

/* Fails the n-th allocation for n = 0, 1, ... until a run succeeds. */
static void test_oom_decode(void **state) {
  (void)state;
  sp_errors_t errs = {0};
  sp_config_doc_t *doc = load(k_full_yaml, &errs, 0);
  int rc = SP_ENOMEM;
  long n;
  for (n = 0; rc != 0 && n < 10000; n++) {
    t_all_t c = {0};
    sp_alloc_set_fail_after(n);
    rc = sp_cfg_decode(&t_all_schema, doc->root, "receivers::test", NULL, &c, &errs);
    sp_alloc_set_fail_after(-1);
    assert_true(rc == 0 || rc == SP_ENOMEM);
    assert_int_equal(errs.n, 0);
    sp_cfg_free(&t_all_schema, &c);
  }
  assert_int_equal(rc, 0);
  assert_true(n > 20); /* the decode path really allocates */
  sp_config_doc_free(doc);

  /* The error path too: every result is ECONFIG or ENOMEM, never a crash. */
  doc = load("flag: maybe\nport: 0\ntagz: x\nitems: [{weight: 500}]\ntls: {cert_file: c}\n", &errs,
             0);
  rc = SP_ENOMEM;
  for (n = 0; rc == SP_ENOMEM && n < 10000; n++) {
    t_all_t c = {0};
    sp_alloc_set_fail_after(n);
    rc = sp_cfg_decode(&t_all_schema, doc->root, "r", NULL, &c, &errs);
    sp_alloc_set_fail_after(-1);
    assert_true(rc == SP_ECONFIG || rc == SP_ENOMEM);
    sp_cfg_free(&t_all_schema, &c);
    sp_errors_free(&errs);
  }
  assert_int_equal(rc, SP_ECONFIG);
  sp_config_doc_free(doc);
}

static void test_oom_load(void **state) {
  (void)state;
  setenv("SP_TEST_A", "hello", 1);
  const char *yaml = "a: &x\n  b: [1, 2, \"${SP_TEST_A}\"]\n  c: $$\nd:\n  <<: *x\n  e: 1\n";
  sp_errors_t errs = {0};
  int rc = SP_ENOMEM;
  long n;
  for (n = 0; rc != 0 && n < 10000; n++) {
    sp_config_doc_t *doc = NULL;
    sp_alloc_set_fail_after(n);
    rc = sp_config_load_string("t.yaml", yaml, strlen(yaml), &doc, &errs);
    sp_alloc_set_fail_after(-1);
    assert_true(rc == 0 || rc == SP_ENOMEM);
    assert_int_equal(errs.n, 0);
    if (rc == 0) {
      assert_string_equal(at(doc->root, "d", "b", NULL)->items[2]->scalar, "hello");
    } else {
      assert_null(doc);
    }
    sp_config_doc_free(doc);
  }
  assert_int_equal(rc, 0);

  /* Loading files and merging them, with errors being reported. */
  const char *f1 = write_file("o1.yaml", "a: {b: 1, c: [x]}\n");
  const char *f2 = write_file("o2.yaml", "a: {b: 2, d: ${1X}}\n");
  const char *paths[] = {f1, f2, f1};
  rc = SP_ENOMEM;
  for (n = 0; rc == SP_ENOMEM && n < 10000; n++) {
    sp_config_doc_t *doc = NULL;
    sp_alloc_set_fail_after(n);
    rc = sp_config_load_files(paths, 3, &doc, &errs);
    sp_alloc_set_fail_after(-1);
    assert_true(rc == SP_ECONFIG || rc == SP_ENOMEM);
    assert_null(doc);
    sp_errors_free(&errs);
  }
  assert_int_equal(rc, SP_ECONFIG);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_parse_bool),
      cmocka_unit_test(test_parse_int),
      cmocka_unit_test(test_parse_double),
      cmocka_unit_test(test_parse_duration),
      cmocka_unit_test(test_parse_size),
      cmocka_unit_test(test_errors_format),
      cmocka_unit_test(test_load_tree_and_marks),
      cmocka_unit_test(test_load_empty_and_root),
      cmocka_unit_test(test_yaml_syntax_errors),
      cmocka_unit_test(test_duplicate_keys),
      cmocka_unit_test(test_anchors_aliases_merge_keys),
      cmocka_unit_test(test_deep_nesting_refused),
      cmocka_unit_test(test_env_substitution),
      cmocka_unit_test(test_env_malformed),
      cmocka_unit_test(test_files_deep_merge),
      cmocka_unit_test(test_decode_every_type),
      cmocka_unit_test(test_decode_defaults_only),
      cmocka_unit_test(test_decode_unknown_key_suggestion),
      cmocka_unit_test(test_decode_many_errors_at_once),
      cmocka_unit_test(test_decode_wrong_kinds_and_quoted),
      cmocka_unit_test(test_decode_bounds_messages),
      cmocka_unit_test(test_tls_schemas),
      cmocka_unit_test(test_oom_decode),
      cmocka_unit_test(test_oom_load),
  };
  return cmocka_run_group_tests(tests, make_dir, remove_dir);
}
