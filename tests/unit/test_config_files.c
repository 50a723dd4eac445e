/*
 * test_config_files.c — whole configuration files through the same path as
 * `spanprofd validate`: every YAML file in tests/data/config/valid must validate,
 * and every one in tests/data/config/invalid must produce exactly the error
 * lines its `# expect: ` comments list, in order (`{file}` stands for the
 * file's path, `{...}` for any text — used where a message lists the
 * registered component types, so adding a component changes no fixture). This pins down positions (file:line:col), YAML paths and
 * wording, and that all errors of a file are reported at once.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "pipeline/alloc.h"
#include "pipeline/buf.h"
#include "pipeline/config.h"
#include "pipeline/error.h"
#include "pipeline/log.h"
#include "pipeline/service.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char data_dir[4096];

static int has_suffix(const char *s, const char *suf) {
  size_t a = strlen(s), b = strlen(suf);
  return a >= b && strcmp(s + a - b, suf) == 0;
}

static int list_yaml(const char *dir, char names[][256], int max) {
  DIR *d = opendir(dir);
  int n = 0;
  assert_non_null(d);
  struct dirent *e;
  while ((e = readdir(d)) != NULL && n < max)
    if (has_suffix(e->d_name, ".yaml"))
      snprintf(names[n++], 256, "%s", e->d_name);
  closedir(d);
  qsort(names, (size_t)n, 256, (int (*)(const void *, const void *))strcmp);
  return n;
}

static int validate(const char *path, sp_errors_t *errs) {
  const char *paths[] = {path};
  sp_service_options_t opts = {.config_paths = paths, .n_config_paths = 1};
  return sp_service_validate(&opts, errs);
}

static void test_valid(void **state) {
  (void)state;
  char dir[4200], names[128][256];
  snprintf(dir, sizeof(dir), "%s/valid", data_dir);
  int n = list_yaml(dir, names, 128);
  assert_true(n > 0);
  for (int i = 0; i < n; i++) {
    char path[4500];
    snprintf(path, sizeof(path), "%s/%s", dir, names[i]);
    sp_errors_t errs = {0};
    int rc = validate(path, &errs);
    if (rc != 0) {
      sp_errors_print(&errs, 2);
      fail_msg("%s should be valid", path);
    }
    sp_errors_free(&errs);
  }
}

/* Replaces {file} in an expectation with the path. */
static void expand(const char *line, const char *path, char *out, size_t cap) {
  const char *p = strstr(line, "{file}");
  if (p == NULL)
    snprintf(out, cap, "%s", line);
  else
    snprintf(out, cap, "%.*s%s%s", (int)(p - line), line, path, p + 6);
}

/* Whether @p got matches @p want, where "{...}" in want matches any text. */
static int matches(const char *want, const char *got) {
  const char *star = strstr(want, "{...}");
  if (star == NULL)
    return strcmp(want, got) == 0;
  size_t head = (size_t)(star - want);
  if (strncmp(want, got, head) != 0)
    return 0;
  const char *rest = star + 5;
  for (const char *g = got + head;; g++) {
    if (matches(rest, g))
      return 1;
    if (*g == '\0')
      return 0;
  }
}

static void test_invalid(void **state) {
  (void)state;
  char dir[4200], names[128][256];
  snprintf(dir, sizeof(dir), "%s/invalid", data_dir);
  int n = list_yaml(dir, names, 128);
  assert_true(n > 0);
  int failures = 0;
  for (int i = 0; i < n; i++) {
    char path[4500];
    snprintf(path, sizeof(path), "%s/%s", dir, names[i]);
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    char expect[32][1024];
    int n_expect = 0;
    char line[2048];
    while (fgets(line, sizeof(line), f) != NULL && n_expect < 32) {
      if (strncmp(line, "# expect: ", 10) != 0)
        continue;
      line[strcspn(line, "\n")] = '\0';
      expand(line + 10, path, expect[n_expect++], sizeof(expect[0]));
    }
    fclose(f);
    assert_true(n_expect > 0);
    sp_errors_t errs = {0};
    int rc = validate(path, &errs);
    int ok = rc != 0 && errs.n == (size_t)n_expect;
    for (size_t k = 0; ok && k < errs.n; k++)
      ok = matches(expect[k], errs.lines[k]);
    if (!ok) {
      failures++;
      print_error("%s: expected %d error(s):\n", names[i], n_expect);
      for (int k = 0; k < n_expect; k++)
        print_error("  want: %s\n", expect[k]);
      for (size_t k = 0; k < errs.n; k++)
        print_error("  got:  %s\n", errs.lines[k]);
    }
    sp_errors_free(&errs);
  }
  assert_int_equal(failures, 0);
}

/* Several files merge in order, later values winning (the Collector's --config semantics). */
static void test_merge_files(void **state) {
  (void)state;
  char a[4200], b[4200];
  snprintf(a, sizeof(a), "%s/merge/base.yaml", data_dir);
  snprintf(b, sizeof(b), "%s/merge/override.yaml", data_dir);
  const char *paths[] = {a, b};
  sp_service_options_t opts = {.config_paths = paths, .n_config_paths = 2};
  sp_errors_t errs = {0};
  int rc = sp_service_validate(&opts, &errs);
  sp_errors_print(&errs, 2);
  assert_int_equal(rc, 0);
  sp_errors_free(&errs);
  /* base.yaml alone references an exporter only override.yaml defines. */
  const char *one[] = {a};
  opts.config_paths = one;
  opts.n_config_paths = 1;
  assert_int_equal(sp_service_validate(&opts, &errs), SP_ECONFIG);
  sp_errors_free(&errs);
}

/* The built-in configuration is valid. */
static void test_builtin(void **state) {
  (void)state;
  sp_service_options_t opts = {0};
  sp_errors_t errs = {0};
  int rc = sp_service_validate(&opts, &errs);
  sp_errors_print(&errs, 2);
  assert_int_equal(rc, 0);
  sp_errors_free(&errs);
}

int main(void) {
  const char *src = getenv("SP_SOURCE_DIR");
  snprintf(data_dir, sizeof(data_dir), "%s/tests/data/config", src != NULL ? src : ".");
  sp_log_set_level(SP_LOG_ERROR);
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_valid),
      cmocka_unit_test(test_invalid),
      cmocka_unit_test(test_merge_files),
      cmocka_unit_test(test_builtin),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
