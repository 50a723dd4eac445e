/*
 * stats.c — the small measuring tools of spanprof-loadgen: a fixed-size
 * latency histogram, clocks, this process's CPU and peak memory, and parsers
 * for flag values such as "30s" and "10k".
 */
#include "cmd/spanprof-loadgen/loadgen.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Bucket of a value: exact below LG_HIST_SUB, then LG_HIST_SUB per octave. */
static size_t lg__bucket(uint64_t v) {
  if (v < LG_HIST_SUB)
    return (size_t)v;
  int msb = 63 - __builtin_clzll(v); /* >= 5 */
  int shift = msb - 5;               /* LG_HIST_SUB == 1 << 5 */
  size_t sub = (size_t)((v >> shift) & (LG_HIST_SUB - 1));
  size_t b = (size_t)(shift + 1) * LG_HIST_SUB + sub;
  return b < LG_HIST_BUCKETS ? b : LG_HIST_BUCKETS - 1;
}

/* The upper bound of a bucket (what a quantile inside it reports). */
static uint64_t lg__bucket_value(size_t b) {
  if (b < LG_HIST_SUB)
    return b;
  size_t shift = b / LG_HIST_SUB - 1;
  uint64_t sub = b % LG_HIST_SUB;
  return ((LG_HIST_SUB + sub + 1) << shift) - 1;
}

void lg_hist_add(lg_hist_t *h, uint64_t us) {
  h->b[lg__bucket(us)]++;
  h->count++;
  h->sum_us += us;
  if (us > h->max_us)
    h->max_us = us;
}

uint64_t lg_hist_quantile(const lg_hist_t *h, double q) {
  if (h->count == 0)
    return 0;
  uint64_t rank = (uint64_t)(q * (double)h->count);
  if (rank >= h->count)
    rank = h->count - 1;
  uint64_t seen = 0;
  for (size_t b = 0; b < LG_HIST_BUCKETS; b++) {
    seen += h->b[b];
    if (seen > rank) {
      uint64_t v = lg__bucket_value(b);
      return v < h->max_us ? v : h->max_us;
    }
  }
  return h->max_us;
}

uint64_t lg_mono_ns(void) { return uv_hrtime(); }

uint64_t lg_wall_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

double lg_cpu_seconds(void) {
  struct timespec ts;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

uint64_t lg_peak_rss_kib(void) {
  FILE *f = fopen("/proc/self/status", "r");
  if (f == NULL)
    return 0;
  char line[256];
  uint64_t kib = 0;
  while (fgets(line, sizeof(line), f) != NULL)
    if (strncmp(line, "VmHWM:", 6) == 0) {
      kib = strtoull(line + 6, NULL, 10);
      break;
    }
  fclose(f);
  return kib;
}

int lg_parse_duration(const char *s, uint64_t *ms) {
  char *end;
  double v = strtod(s, &end);
  if (end == s || v < 0)
    return -1;
  double mult = 1000;
  if (*end == '\0' || strcmp(end, "s") == 0)
    mult = 1000;
  else if (strcmp(end, "ms") == 0)
    mult = 1;
  else if (strcmp(end, "m") == 0)
    mult = 60000;
  else if (strcmp(end, "h") == 0)
    mult = 3600000;
  else if (strcmp(end, "us") == 0)
    mult = 0.001;
  else
    return -1;
  *ms = (uint64_t)(v * mult + 0.5);
  return 0;
}

int lg_parse_count(const char *s, double *out) {
  char *end;
  double v = strtod(s, &end);
  if (end == s || v < 0)
    return -1;
  if (*end == 'k' || *end == 'K')
    v *= 1e3, end++;
  else if (*end == 'M' || *end == 'm')
    v *= 1e6, end++;
  else if (*end == 'G' || *end == 'g')
    v *= 1e9, end++;
  if (*end != '\0')
    return -1;
  *out = v;
  return 0;
}

uint64_t lg_rand(uint64_t *state) {
  uint64_t z = (*state += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}
