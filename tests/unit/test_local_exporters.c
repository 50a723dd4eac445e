/*
 * test_local_exporters.c — the `file` and `debug` exporters: what they
 * write, size rotation with a bounded number of backups (pprof files of a
 * dropped generation deleted with it), and the debug verbosities.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "pipeline/alloc.h"
#include "pipeline/component.h"
#include "pipeline/log.h"
#include "support/exporter_fixture.h"
#include "support/loop_util.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

extern const sp_component_def_t sp_exporter_file;
extern const sp_component_def_t sp_exporter_debug;

static int exists(const char *dir, const char *name) {
  char p[512];
  snprintf(p, sizeof(p), "%s/%s", dir, name);
  struct stat sb;
  return stat(p, &sb) == 0;
}

static int count_files(const char *dir) {
  DIR *d = opendir(dir);
  int n = 0;
  if (d == NULL)
    return -1;
  struct dirent *e;
  while ((e = readdir(d)) != NULL)
    n += e->d_name[0] != '.';
  closedir(d);
  return n;
}

static void rm_rf(const char *dir) {
  char cmd[600];
  snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
  assert_int_equal(system(cmd), 0);
}

static void test_file_rotation(void **state) {
  (void)state;
  uv_loop_t loop;
  uv_loop_init(&loop);
  sp_host_t host = {.loop = &loop};
  char dir[] = "/tmp/spanprof-file-XXXXXX";
  assert_non_null(mkdtemp(dir));
  char yaml[512];
  snprintf(yaml, sizeof(yaml), "path: %s/out\nrotation:\n  max_megabytes: 1\n  max_backups: 2\n", dir);
  sp_test_exporter_t t;
  assert_int_equal(sp_test_exporter_make(&t, &sp_exporter_file, yaml, &host, "file"), 0);
  assert_int_equal(sp_exporter_file.start(t.comp), 0);
  char out[600];
  snprintf(out, sizeof(out), "%s/out", dir);

  /* Several MB of traces in 1 MB files: the live file plus exactly two backups. */
  size_t spans = 0;
  for (int i = 0; i < 250; i++) {
    uint8_t *bytes;
    size_t len;
    sp_traces_t *b = sp_test_traces(100, (uint32_t)i, &bytes, &len);
    spans += b->span_count;
    sp_free(bytes);
    assert_int_equal(sp_consume_traces(t.comp->input, b), 0);
  }
  assert_true(exists(out, "traces.jsonl"));
  assert_true(exists(out, "traces.jsonl.1"));
  assert_true(exists(out, "traces.jsonl.2"));
  assert_false(exists(out, "traces.jsonl.3"));
  char p[700];
  snprintf(p, sizeof(p), "%s/traces.jsonl", out);
  struct stat sb;
  assert_int_equal(stat(p, &sb), 0);
  assert_true(sb.st_size <= 1 << 20);
  /* Every line is one whole OTLP/JSON request. */
  FILE *f = fopen(p, "r");
  char *line = NULL;
  size_t cap = 0;
  ssize_t n;
  int lines = 0;
  while ((n = getline(&line, &cap, f)) > 0) {
    assert_true(strncmp(line, "{\"resourceSpans\":[", 18) == 0);
    assert_int_equal(line[n - 1], '\n');
    lines++;
  }
  free(line);
  fclose(f);
  assert_true(lines > 0);

  /* Profiles: every profile has its pprof file; rotated-away generations take theirs along. */
  for (int i = 0; i < 4000; i++) {
    sp_profiles_t *b = sp_test_profiles();
    assert_int_equal(sp_consume_profiles(t.comp->input, b), 0);
  }
  snprintf(p, sizeof(p), "%s/pprof", out);
  assert_true(exists(out, "profiles.jsonl.2"));
  assert_false(exists(out, "profiles.jsonl.3"));
  int pprofs = count_files(p);
  assert_true(pprofs > 0);
  assert_true(pprofs < 8000); /* some generations were dropped, with their files */
  sp_test_exporter_stop(&t, 100);
  assert_int_equal(sp_test_loop_finish(&loop, 1000), 0);
  rm_rf(dir);
}

/* Reads what the exporter logged. */
static char *slurp(FILE *f) {
  fflush(f);
  long n = ftell(f);
  char *s = calloc(1, (size_t)n + 1);
  rewind(f);
  assert_int_equal(fread(s, 1, (size_t)n, f), (size_t)n);
  return s;
}

static char *debug_output(const char *yaml) {
  uv_loop_t loop;
  uv_loop_init(&loop);
  sp_host_t host = {.loop = &loop};
  FILE *f = tmpfile();
  sp_log_set_fd(fileno(f));
  sp_test_exporter_t t;
  assert_int_equal(sp_test_exporter_make(&t, &sp_exporter_debug, yaml, &host, "debug"), 0);
  assert_int_equal(sp_exporter_debug.start(t.comp), 0);
  uint8_t *bytes;
  size_t len;
  assert_int_equal(sp_consume_traces(t.comp->input, sp_test_traces(3, 7, &bytes, &len)), 0);
  sp_free(bytes);
  assert_int_equal(sp_consume_profiles(t.comp->input, sp_test_profiles()), 0);
  sp_test_exporter_stop(&t, 100);
  assert_int_equal(sp_test_loop_finish(&loop, 1000), 0);
  sp_log_set_fd(-1);
  char *s = slurp(f);
  fclose(f);
  return s;
}

static int occurrences(const char *s, const char *what) {
  int n = 0;
  for (const char *p = s; (p = strstr(p, what)) != NULL; p++)
    n++;
  return n;
}

static void test_debug_verbosity(void **state) {
  (void)state;
  char *basic = debug_output("verbosity: basic\n");
  assert_int_equal(occurrences(basic, "traces: 3 span(s)"), 1);
  assert_int_equal(occurrences(basic, "profiles: 2 profile(s)"), 1);
  assert_int_equal(occurrences(basic, "span trace_id="), 0);
  free(basic);
  char *normal = debug_output("verbosity: normal\n");
  assert_int_equal(occurrences(normal, "span trace_id="), 3);
  assert_int_equal(occurrences(normal, "profile service_name=svc-a"), 1);
  assert_int_equal(occurrences(normal, "resourceSpans"), 0);
  free(normal);
  char *detailed = debug_output("verbosity: detailed\n");
  assert_int_equal(occurrences(detailed, "resourceSpans"), 1);
  assert_true(occurrences(detailed, "sample[0] values=") >= 2);
  assert_true(occurrences(detailed, "span_id=") >= 1);
  free(detailed);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_file_rotation),
      cmocka_unit_test(test_debug_verbosity),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
