/*
 * bench_grpc.c — throughput of the gRPC bridge (pipeline/transport/
 * grpc_server + grpc_client) with OTLP-sized unary calls over loopback.
 *
 * One loop runs both ends: the client keeps `in_flight` calls going, the
 * server's handler answers each at once with a small response (as the OTLP
 * receiver does). Prints calls per second, MB/s of request payload, and the
 * process CPU time per call (all threads: both completion-queue threads, the
 * loop and grpc's own).
 *
 *   bench_grpc [seconds=3] [in_flight=16] [body_bytes=150000] [gzip=0]
 *
 * The OTLP receiver's target is >400k spans/s in 512-span requests, about
 * 800 calls/s of ~100–200 KB.
 */
#include "pipeline/transport/grpc_client.h"
#include "pipeline/transport/grpc_server.h"
#include "pipeline/log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <uv.h>

typedef struct {
  uv_loop_t *loop;
  sp_grpc_client_t *client;
  uint8_t *body;
  size_t body_len;
  uint64_t done, failed, bytes;
  int stopping, closed;
  uint64_t deadline_ns;
} bench_t;

static void on_call(sp_grpc_call_t *call, const uint8_t *msg, size_t len, void *ctx) {
  bench_t *b = ctx;
  b->bytes += len;
  sp_grpc_respond(call, 0, NULL, (const uint8_t *)"", 0, 0);
}

static void issue(bench_t *b);

static void on_result(const sp_grpc_client_result_t *res, void *arg) {
  bench_t *b = arg;
  if (res->status == 0)
    b->done++;
  else if (b->failed++ < 3)
    fprintf(stderr, "call failed: %d %s\n", res->status, res->message);
  if (!b->stopping && uv_hrtime() < b->deadline_ns) issue(b);
}

static void issue(bench_t *b) {
  if (sp_grpc_client_call(b->client, "/bench.Sink/Put", b->body, b->body_len, 10000, NULL, 0,
                          on_result, b) != 0)
    b->failed++;
}

static void on_closed(void *arg) { ((bench_t *)arg)->closed++; }

static double cpu_seconds(void) {
  struct timespec ts;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
  double seconds = argc > 1 ? atof(argv[1]) : 3;
  int in_flight = argc > 2 ? atoi(argv[2]) : 16;
  size_t body_len = argc > 3 ? (size_t)atol(argv[3]) : 150000;
  int gzip = argc > 4 ? atoi(argv[4]) : 0;
  sp_log_set_level(SP_LOG_WARN);

  uv_loop_t loop;
  uv_loop_init(&loop);
  bench_t b = {.loop = &loop, .body_len = body_len};
  b.body = malloc(body_len);
  /* Span-like bytes: repetitive enough to compress about 4:1 with gzip. */
  for (size_t i = 0; i < body_len; i++)
    b.body[i] = (uint8_t)((i % 97) < 70 ? (int)(i % 13) : rand());

  sp_grpc_method_t m = {"/bench.Sink/Put", on_call, &b};
  sp_grpc_server_options_t so = {
      .endpoint = "127.0.0.1:0", .methods = &m, .n_methods = 1, .max_recv_msg_size = 16 << 20};
  sp_grpc_server_t *server = NULL;
  if (sp_grpc_server_create(&loop, &so, &server) != 0 || sp_grpc_server_start(server) != 0) {
    fprintf(stderr, "server failed\n");
    return 1;
  }
  char target[64];
  snprintf(target, sizeof(target), "127.0.0.1:%d", sp_grpc_server_port(server));
  sp_grpc_client_options_t co = {
      .target = target, .compression = gzip ? SP_GRPC_COMPRESSION_GZIP : SP_GRPC_COMPRESSION_NONE};
  if (sp_grpc_client_create(&loop, &co, &b.client) != 0) {
    fprintf(stderr, "client failed\n");
    return 1;
  }

  double cpu0 = cpu_seconds();
  uint64_t t0 = uv_hrtime();
  b.deadline_ns = t0 + (uint64_t)(seconds * 1e9);
  for (int i = 0; i < in_flight; i++)
    issue(&b);
  while (sp_grpc_client_inflight(b.client) > 0)
    uv_run(&loop, UV_RUN_ONCE);
  double wall = (double)(uv_hrtime() - t0) / 1e9;
  double cpu = cpu_seconds() - cpu0;

  printf("bench_grpc: %.0f calls/s, %.1f MB/s request payload, %.1f us CPU per call "
         "(%zu B bodies, %d in flight, gzip=%d, %llu ok, %llu failed)\n",
         (double)b.done / wall, (double)b.bytes / wall / 1e6, cpu / (double)b.done * 1e6, body_len,
         in_flight, gzip, (unsigned long long)b.done, (unsigned long long)b.failed);

  b.stopping = 1;
  sp_grpc_client_shutdown(b.client, on_closed, &b);
  sp_grpc_server_shutdown(server, on_closed, &b);
  while (b.closed < 2)
    uv_run(&loop, UV_RUN_ONCE);
  sp_grpc_client_destroy(b.client);
  sp_grpc_server_destroy(server);
  uv_run(&loop, UV_RUN_DEFAULT);
  int rc = uv_loop_close(&loop);
  free(b.body);
  return rc == 0 && b.failed == 0 ? 0 : 1;
}
