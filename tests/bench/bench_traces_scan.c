/*
 * bench_traces_scan.c — cost of accepting an OTLP traces request: the wire
 * scan that validates it and counts its spans (sp_traces_from_proto), which
 * the otlp receiver runs on the loop thread for every protobuf request.
 *
 * Builds a 512-span request shaped like the load generator's (4-span traces,
 * 4–10 attributes per span, 10 resource attributes), then scans it over and
 * over. Prints nanoseconds per span and MB/s.
 *
 *   bench_traces_scan [iterations=2000] [spans=512]
 */
#include "pipeline/arena.h"
#include "pipeline/batch.h"
#include "bench_traces.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
  int iters = argc > 1 ? atoi(argv[1]) : 2000;
  size_t n = argc > 2 ? (size_t)atol(argv[2]) : 512;
  size_t len;
  uint8_t *buf = bench_traces_request(n, 1, &len);

  char err[256];
  double t0 = now_s();
  size_t total = 0;
  for (int it = 0; it < iters; it++) {
    sp_traces_t *b = NULL;
    if (sp_traces_from_proto(buf, len, true, &b, err, sizeof(err)) != 0) {
      fprintf(stderr, "scan failed: %s\n", err);
      return 1;
    }
    total += b->span_count;
    sp_traces_unref(b);
  }
  double dt = now_s() - t0;
  printf("bench_traces_scan: %.1f ns/span, %.0f MB/s (%zu-byte requests of %zu spans, %d iterations)\n",
         dt / (double)total * 1e9, (double)len * iters / dt / 1e6, len, n, iters);
  free(buf);
  return 0;
}
