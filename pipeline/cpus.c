/*
 * cpus.c — CPUs available to the process (see cpus.h).
 */
#include "pipeline/cpus.h"

#include <inttypes.h>
#include <stdio.h>
#include <uv.h>

/* Reads the first line of @p dir/@p name into @p buf; false when it cannot. */
static int read_line(const char *dir, const char *name, char *buf, size_t cap) {
  char path[512];
  if (snprintf(path, sizeof(path), "%s/%s", dir, name) >= (int)sizeof(path)) return 0;
  FILE *f = fopen(path, "r");
  if (f == NULL) return 0;
  int ok = fgets(buf, (int)cap, f) != NULL;
  fclose(f);
  return ok;
}

/* The quota in CPUs, rounded up; 0 when there is none. */
static unsigned quota_cpus(const char *root) {
  char line[128];
  int64_t quota = -1, period = 0;
  /* cgroup v2: "max 100000" or "<quota> <period>" */
  if (read_line(root, "cpu.max", line, sizeof(line))) {
    if (sscanf(line, "%" SCNd64 " %" SCNd64, &quota, &period) != 2) return 0;
  } else {
    char dir[512];
    if (snprintf(dir, sizeof(dir), "%s/cpu", root) >= (int)sizeof(dir)) return 0;
    char q[64], p[64];
    if (!read_line(dir, "cpu.cfs_quota_us", q, sizeof(q)) ||
        !read_line(dir, "cpu.cfs_period_us", p, sizeof(p)) || sscanf(q, "%" SCNd64, &quota) != 1 ||
        sscanf(p, "%" SCNd64, &period) != 1)
      return 0;
  }
  if (quota <= 0 || period <= 0) return 0; /* "max" or -1: unlimited */
  int64_t n = (quota + period - 1) / period;
  return n > 0 && n < 1 << 20 ? (unsigned)n : 0;
}

unsigned sp_cpus_available(const char *cgroup_root) {
  unsigned n = uv_available_parallelism();
  unsigned q = quota_cpus(cgroup_root != NULL ? cgroup_root : "/sys/fs/cgroup");
  if (q > 0 && q < n) n = q;
  return n > 0 ? n : 1;
}
