/*
 * bench_http_client.c — throughput of the HTTP client (pipeline/transport/
 * http_client) posting OTLP-sized bodies over loopback.
 *
 * A minimal HTTP/1.1 sink runs on its own thread and loop (it only counts
 * Content-Length bytes and answers "200, empty body"), so the client's loop
 * thread is measured on its own: requests per second, MB/s, the client
 * thread's CPU time per request, and how many connections the sink saw
 * (with keep-alive it equals the concurrency).
 *
 *   bench_http_client [seconds=3] [in_flight=16] [body_bytes=100000]
 *
 * The otlphttp exporter's target is ~1,200 requests/s of ~100 KB.
 */
#include "pipeline/transport/http_client.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <uv.h>

/* --- the sink ------------------------------------------------------------ */

typedef struct sink_conn_s {
  uv_tcp_t tcp;
  char head[8192]; /* request header bytes seen so far */
  size_t head_len;
  size_t body_left; /* body bytes still to skip */
  bool in_body;
} sink_conn_t;

static uv_loop_t g_sink_loop;
static uv_tcp_t g_sink;
static uv_async_t g_sink_stop;
static int g_sink_accepted;

static const char k_response[] = "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";

static void sink_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  static char slab[256 * 1024];
  buf->base = slab;
  buf->len = sizeof slab;
}

static void sink_closed(uv_handle_t *h) { free(h->data); }

static void sink_answer(sink_conn_t *c) {
  uv_buf_t b = uv_buf_init((char *)k_response, sizeof k_response - 1);
  /* The reply is tiny and the socket buffer empty: one try_write suffices. */
  if (uv_try_write((uv_stream_t *)&c->tcp, &b, 1) != (int)b.len)
    uv_close((uv_handle_t *)&c->tcp, sink_closed);
  c->in_body = false;
  c->head_len = 0;
}

static void sink_read(uv_stream_t *stream, ssize_t n, const uv_buf_t *buf) {
  sink_conn_t *c = stream->data;
  if (n < 0) {
    uv_close((uv_handle_t *)stream, sink_closed);
    return;
  }
  const char *p = buf->base;
  size_t left = (size_t)n;
  while (left > 0) {
    if (c->in_body) {
      size_t take = left < c->body_left ? left : c->body_left;
      c->body_left -= take;
      p += take;
      left -= take;
      if (c->body_left == 0) sink_answer(c);
      continue;
    }
    /* Copy header bytes one at a time until the blank line. */
    if (c->head_len + 1 >= sizeof c->head) {
      uv_close((uv_handle_t *)stream, sink_closed);
      return;
    }
    c->head[c->head_len++] = *p++;
    left--;
    if (c->head_len >= 4 && memcmp(c->head + c->head_len - 4, "\r\n\r\n", 4) == 0) {
      c->head[c->head_len] = '\0';
      const char *cl = strcasestr(c->head, "\r\ncontent-length:");
      c->body_left = cl ? strtoul(cl + 17, NULL, 10) : 0;
      c->in_body = true;
      if (c->body_left == 0) sink_answer(c);
    }
  }
}

static void sink_accept(uv_stream_t *server, int status) {
  if (status < 0) return;
  sink_conn_t *c = calloc(1, sizeof *c);
  uv_tcp_init(&g_sink_loop, &c->tcp);
  c->tcp.data = c;
  if (uv_accept(server, (uv_stream_t *)&c->tcp) != 0) {
    uv_close((uv_handle_t *)&c->tcp, sink_closed);
    return;
  }
  g_sink_accepted++;
  uv_read_start((uv_stream_t *)&c->tcp, sink_alloc, sink_read);
}

static void sink_close_all(uv_handle_t *h, void *arg) {
  if (!uv_is_closing(h)) uv_close(h, h->data && h != (uv_handle_t *)&g_sink ? sink_closed : NULL);
}

static void sink_on_stop(uv_async_t *a) { uv_walk(&g_sink_loop, sink_close_all, NULL); }

static void *sink_thread(void *arg) {
  uv_run(&g_sink_loop, UV_RUN_DEFAULT);
  return NULL;
}

static int sink_start(pthread_t *th) {
  uv_loop_init(&g_sink_loop);
  uv_tcp_init(&g_sink_loop, &g_sink);
  uv_async_init(&g_sink_loop, &g_sink_stop, sink_on_stop);
  struct sockaddr_in addr;
  uv_ip4_addr("127.0.0.1", 0, &addr);
  if (uv_tcp_bind(&g_sink, (const struct sockaddr *)&addr, 0) != 0 ||
      uv_listen((uv_stream_t *)&g_sink, 512, sink_accept) != 0)
    return -1;
  struct sockaddr_storage ss;
  int len = sizeof ss;
  uv_tcp_getsockname(&g_sink, (struct sockaddr *)&ss, &len);
  pthread_create(th, NULL, sink_thread, NULL);
  return ntohs(((struct sockaddr_in *)&ss)->sin_port);
}

/* --- the client ----------------------------------------------------------- */

static sp_http_client_t *g_client;
static sp_http_client_request_t g_req;
static long g_done, g_failed;
static bool g_stopping;

static void on_response(const sp_http_client_result_t *res, void *arg);

static void send_one(void) {
  if (sp_http_client_request(g_client, &g_req, on_response, NULL) != 0) g_failed++;
}

static void on_response(const sp_http_client_result_t *res, void *arg) {
  if (res->err || res->status != 200) {
    if (g_failed++ < 3) fprintf(stderr, "request failed: %d %s\n", res->status, res->error);
  }
  g_done++;
  if (!g_stopping) send_one();
}

static void on_deadline(uv_timer_t *t) { g_stopping = true; }

static void on_shutdown(void *arg) {}

static double seconds(clockid_t clk) {
  struct timespec ts;
  clock_gettime(clk, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
  int secs = argc > 1 ? atoi(argv[1]) : 3;
  int in_flight = argc > 2 ? atoi(argv[2]) : 16;
  size_t body_len = argc > 3 ? strtoul(argv[3], NULL, 10) : 100000;
  if (secs <= 0 || in_flight <= 0) {
    fprintf(stderr, "usage: %s [seconds] [in_flight] [body_bytes]\n", argv[0]);
    return 2;
  }
  pthread_t th;
  int port = sink_start(&th);
  if (port < 0) {
    fprintf(stderr, "cannot listen\n");
    return 1;
  }
  char *body = malloc(body_len ? body_len : 1);
  for (size_t i = 0; i < body_len; i++)
    body[i] = (char)(i * 131);
  char url[64];
  snprintf(url, sizeof url, "http://127.0.0.1:%d/v1/traces", port);
  static const sp_http_header_t hdrs[] = {{"Content-Type", "application/x-protobuf"}};
  g_req = (sp_http_client_request_t){
      .url = url, .headers = hdrs, .n_headers = 1, .body = body, .body_len = body_len};

  uv_loop_t loop;
  uv_loop_init(&loop);
  sp_http_client_options_t opts = {.component = "bench", .max_conns_per_host = (unsigned)in_flight};
  if (sp_http_client_create(&loop, &opts, &g_client) != 0) return 1;
  uv_timer_t deadline;
  uv_timer_init(&loop, &deadline);
  uv_timer_start(&deadline, on_deadline, (uint64_t)secs * 1000, 0);

  double w0 = seconds(CLOCK_MONOTONIC), c0 = seconds(CLOCK_THREAD_CPUTIME_ID);
  for (int i = 0; i < in_flight; i++)
    send_one();
  while (!g_stopping || sp_http_client_pending(g_client) > 0)
    uv_run(&loop, UV_RUN_ONCE);
  double wall = seconds(CLOCK_MONOTONIC) - w0, cpu = seconds(CLOCK_THREAD_CPUTIME_ID) - c0;

  sp_http_client_shutdown(g_client, on_shutdown, NULL);
  uv_close((uv_handle_t *)&deadline, NULL);
  uv_run(&loop, UV_RUN_DEFAULT);
  sp_http_client_destroy(g_client);
  uv_loop_close(&loop);
  uv_async_send(&g_sink_stop);
  pthread_join(th, NULL);
  uv_loop_close(&g_sink_loop);
  printf("http_client: body=%zu B in_flight=%d: %.0f req/s, %.1f MB/s, client thread %.1f us "
         "CPU/req, %d connections, %ld failed\n",
         body_len, in_flight, (double)g_done / wall, (double)g_done * (double)body_len / wall / 1e6,
         g_done ? cpu / (double)g_done * 1e6 : 0.0, g_sink_accepted, g_failed);

  free(body);
  return g_failed ? 1 : 0;
}
