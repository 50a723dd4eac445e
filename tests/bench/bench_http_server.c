/*
 * bench_http_server.c — loopback throughput of the HTTP/1.1 server
 * (pipeline/transport/http_server).
 *
 * The server runs on the main thread's loop with a handler that answers
 * every request at once with "ok" (as a receiver acknowledging a batch).
 * A client thread drives it over blocking sockets with keep-alive
 * connections. Each scenario prints requests/s, MB/s of request body, and
 * the server thread's CPU time per request (the loop is one core, so
 * "per server-CPU-second" figures are what one core sustains).
 *
 *   bench_http_server [seconds per scenario=2]
 *
 * Scenarios: 1 MiB identity bodies; 1 MiB gzip bodies (zlib-bound); 100 B
 * bodies ping-pong; 100 B bodies pipelined 32 deep on 4 connections.
 * Targets: > 1 GB/s of 1 MiB bodies and tens of thousands of small
 * requests/s on one core.
 */
#include "pipeline/compress.h"
#include "pipeline/log.h"
#include "pipeline/transport/http_server.h"
#include "support/loop_util.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

typedef struct scenario_s {
  const char *name;
  size_t body_len;
  bool gzip;
  int conns;
  int depth; /* requests written before reading their responses */
} scenario_t;

typedef struct client_s {
  const scenario_t *sc;
  int port;
  double seconds;
  atomic_int done;
  uint64_t requests;
  uint64_t body_bytes; /* decoded body bytes the server received */
  int failed;
} client_t;

static void on_request(sp_http_request_t *req, void *ctx) {
  (void)ctx;
  int status = req->error_status ? req->error_status : 200;
  sp_http_respond(req, status, "text/plain", "ok", 2, NULL, 0);
}

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double thread_cpu_s(void) {
  struct rusage ru;
  getrusage(RUSAGE_THREAD, &ru);
  return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
         (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

static int dial(int port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
    close(fd);
    return -1;
  }
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  return fd;
}

static int send_all(int fd, const void *p, size_t n) {
  const char *c = p;
  while (n) {
    ssize_t k = send(fd, c, n, MSG_NOSIGNAL);
    if (k <= 0) return -1;
    c += k;
    n -= (size_t)k;
  }
  return 0;
}

static int recv_all(int fd, void *p, size_t n) {
  char *c = p;
  while (n) {
    ssize_t k = recv(fd, c, n, 0);
    if (k <= 0) return -1;
    c += k;
    n -= (size_t)k;
  }
  return 0;
}

static void *client_main(void *arg) {
  client_t *cl = arg;
  const scenario_t *sc = cl->sc;
  uint8_t *body = malloc(sc->body_len);
  for (size_t i = 0; i < sc->body_len; i++)
    body[i] = (uint8_t)("spanprof "[i % 9] + (i / 4096) % 7);
  sp_buf_t z;
  sp_buf_init(&z, 0);
  const uint8_t *wire = body;
  size_t wire_len = sc->body_len;
  if (sc->gzip) {
    sp_gzip_compress(body, sc->body_len, 1, &z);
    wire = z.data;
    wire_len = z.len;
  }
  char head[256];
  int hl = snprintf(head, sizeof head,
                    "POST /v1/traces HTTP/1.1\r\nHost: bench\r\nContent-Type: "
                    "application/x-protobuf\r\n%sContent-Length: %zu\r\n\r\n",
                    sc->gzip ? "Content-Encoding: gzip\r\n" : "", wire_len);
  /* Small requests go out as one buffer holding `depth` requests. */
  size_t one = (size_t)hl + wire_len;
  char *batch = NULL;
  if (sc->body_len < 65536) {
    batch = malloc(one * (size_t)sc->depth);
    for (int i = 0; i < sc->depth; i++) {
      memcpy(batch + one * (size_t)i, head, (size_t)hl);
      memcpy(batch + one * (size_t)i + hl, wire, wire_len);
    }
  }
  const char resp[] = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok";
  size_t rlen = sizeof resp - 1;
  char *rbuf = malloc(rlen * (size_t)sc->depth);
  int fds[16];
  for (int c = 0; c < sc->conns; c++)
    fds[c] = dial(cl->port);
  double end = now_s() + cl->seconds;
  while (now_s() < end && !cl->failed) {
    for (int c = 0; c < sc->conns && !cl->failed; c++) {
      if (fds[c] < 0) {
        cl->failed = 1;
        break;
      }
      int rc = batch ? send_all(fds[c], batch, one * (size_t)sc->depth)
                     : (send_all(fds[c], head, (size_t)hl) || send_all(fds[c], wire, wire_len));
      if (rc) cl->failed = 1;
    }
    for (int c = 0; c < sc->conns && !cl->failed; c++) {
      if (recv_all(fds[c], rbuf, rlen * (size_t)sc->depth) || memcmp(rbuf, resp, rlen) != 0) {
        cl->failed = 1;
        break;
      }
      cl->requests += (uint64_t)sc->depth;
      cl->body_bytes += (uint64_t)sc->depth * sc->body_len;
    }
  }
  for (int c = 0; c < sc->conns; c++)
    if (fds[c] >= 0) close(fds[c]);
  free(rbuf);
  free(batch);
  sp_buf_free(&z);
  free(body);
  atomic_store(&cl->done, 1);
  return NULL;
}

static int client_done(void *p) { return atomic_load(&((client_t *)p)->done); }
static void on_flag(void *arg) { *(int *)arg = 1; }
static int flag_set(void *arg) { return *(int *)arg; }

static int run(const scenario_t *sc, double seconds) {
  uv_loop_t loop;
  uv_loop_init(&loop);
  sp_http_server_options_t o;
  memset(&o, 0, sizeof o);
  o.endpoint = "127.0.0.1:0";
  o.component = "bench";
  o.max_body_size = 64u << 20;
  o.handler = on_request;
  sp_http_server_t *srv;
  if (sp_http_server_create(&loop, &o, &srv) || sp_http_server_start(srv)) return 1;
  client_t cl = {.sc = sc, .port = sp_http_server_port(srv), .seconds = seconds};
  pthread_t th;
  double t0 = now_s(), cpu0 = thread_cpu_s();
  pthread_create(&th, NULL, client_main, &cl);
  sp_test_run_until(&loop, client_done, &cl, (uint64_t)(seconds * 1000) + 10000);
  pthread_join(th, NULL);
  double wall = now_s() - t0, cpu = thread_cpu_s() - cpu0;
  int done = 0;
  sp_http_server_shutdown(srv, on_flag, &done);
  sp_test_run_until(&loop, flag_set, &done, 5000);
  sp_http_server_destroy(srv);
  int lrc = sp_test_loop_finish(&loop, 5000);
  if (cl.failed || lrc) {
    fprintf(stderr, "%s: client failed\n", sc->name);
    return 1;
  }
  printf("%-28s %10.0f req/s %9.1f MB/s  server CPU %5.1f%%  %7.2f us/req  %8.0f MB/s per "
         "server-core\n",
         sc->name, (double)cl.requests / wall, (double)cl.body_bytes / wall / 1e6,
         100.0 * cpu / wall, cpu * 1e6 / (double)cl.requests, (double)cl.body_bytes / cpu / 1e6);
  return 0;
}

int main(int argc, char **argv) {
  double seconds = argc > 1 ? atof(argv[1]) : 2.0;
  sp_log_set_level(SP_LOG_WARN);
  const scenario_t scenarios[] = {
      {"1MiB identity, 1 conn", 1u << 20, false, 1, 1},
      {"1MiB identity, 4 conns", 1u << 20, false, 4, 1},
      {"1MiB gzip, 1 conn", 1u << 20, true, 1, 1},
      {"100B ping-pong, 1 conn", 100, false, 1, 1},
      {"100B pipelined 32, 4 conns", 100, false, 4, 32},
  };
  int rc = 0;
  for (size_t i = 0; i < sizeof scenarios / sizeof *scenarios; i++)
    rc |= run(&scenarios[i], seconds);
  return rc;
}
