/*
 * test_cpus.c — sp_cpus_available: the affinity's CPU count capped by a
 * cgroup v2 or v1 CPU quota, read from a directory tree made here.
 */
#include "pipeline/cpus.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <uv.h>

#include <cmocka.h>

static void put(const char *dir, const char *name, const char *text) {
  char path[512];
  snprintf(path, sizeof(path), "%s/%s", dir, name);
  FILE *f = fopen(path, "w");
  assert_non_null(f);
  fputs(text, f);
  fclose(f);
}

static void test_quota(void **state) {
  (void)state;
  unsigned all = uv_available_parallelism();
  char v2[] = "/tmp/sp-cpus-v2-XXXXXX", v1[] = "/tmp/sp-cpus-v1-XXXXXX",
       none[] = "/tmp/sp-cpus-0-XXXXXX";
  assert_non_null(mkdtemp(v2));
  assert_non_null(mkdtemp(v1));
  assert_non_null(mkdtemp(none));
  /* No quota files, or no limit: the affinity's count. */
  assert_int_equal(sp_cpus_available(none), all);
  put(v2, "cpu.max", "max 100000\n");
  assert_int_equal(sp_cpus_available(v2), all);
  /* 1.5 CPUs rounds up to 2; 0.2 to 1; never above the affinity's count. */
  put(v2, "cpu.max", "150000 100000\n");
  assert_int_equal(sp_cpus_available(v2), all < 2 ? all : 2);
  put(v2, "cpu.max", "20000 100000\n");
  assert_int_equal(sp_cpus_available(v2), 1);
  put(v2, "cpu.max", "100000000 100000\n");
  assert_int_equal(sp_cpus_available(v2), all);
  put(v2, "cpu.max", "garbage\n");
  assert_int_equal(sp_cpus_available(v2), all);
  /* cgroup v1: cpu/cpu.cfs_quota_us and cpu.cfs_period_us. */
  char cpu[600];
  snprintf(cpu, sizeof(cpu), "%s/cpu", v1);
  assert_int_equal(mkdir(cpu, 0700), 0);
  put(cpu, "cpu.cfs_quota_us", "-1\n");
  put(cpu, "cpu.cfs_period_us", "100000\n");
  assert_int_equal(sp_cpus_available(v1), all);
  put(cpu, "cpu.cfs_quota_us", "50000\n");
  assert_int_equal(sp_cpus_available(v1), 1);
  char cmd[1400];
  snprintf(cmd, sizeof(cmd), "rm -rf %s %s %s", v2, v1, none);
  assert_int_equal(system(cmd), 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_quota),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
