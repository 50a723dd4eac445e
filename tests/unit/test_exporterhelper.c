/*
 * test_exporterhelper.c — the sending queue, retry/backoff and drain logic
 * of pipeline/exporterhelper.c, against a scripted sender in this file.
 *
 * The scripted sender records when each attempt started and completes it
 * from a timer after a chosen delay with the next scripted result (or
 * holds it until the test or the helper's cancel releases it). Intervals
 * are tens of milliseconds so the whole file runs in about two seconds;
 * timing checks allow generous slack above the expected value but none
 * below it (a retry must never come early).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "pipeline/alloc.h"
#include "pipeline/config.h"
#include "pipeline/error.h"
#include "pipeline/defer.h"
#include "pipeline/exporterhelper.h"
#include "pipeline/log.h"
#include "pipeline/telemetry.h"
#include "support/loop_util.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

/* ---- scripted sender --------------------------------------------------------- */

#define MAX_SCRIPT 32
/*
 * Timers never fire early, so lower bounds are exact; upper bounds only
 * guard against "never" and allow for a loaded machine (CI runs the suite
 * two tests at a time on two cores).
 */
#define SLACK_MS 700

/* How long to wait for something that should happen at once (an upper bound only). */
#define WAIT_MS 10000

#define MAX_ATTEMPTS 64

typedef struct pending_s {
  uv_timer_t timer;
  sp_exporterhelper_done_cb done;
  void *token;
  sp_exporterhelper_result_t res;
  struct script_s *sc;
  struct pending_s *next;
  bool fired;
} pending_t;

typedef struct script_s {
  uv_loop_t *loop;
  sp_exporterhelper_result_t results[MAX_SCRIPT]; /* consumed in order; then `fallback` */
  size_t n_results, next_result;
  sp_exporterhelper_result_t fallback;
  int sync_err;      /* non-zero: send returns this instead of starting */
  uint64_t delay_ms; /* completion delay */
  bool hold;         /* keep completions until release_all() or cancel */
  uint64_t attempt_ms[MAX_ATTEMPTS];
  unsigned attempt_no[MAX_ATTEMPTS];
  size_t n_attempts;
  size_t in_flight, max_in_flight;
  int cancels, releases;
  pending_t *held;
  int closes;
} script_t;

static void pending_closed(uv_handle_t *h) { sp_free(h->data); }

static void pending_fire(uv_timer_t *t) {
  pending_t *p = t->data;
  p->sc->in_flight--;
  uv_close((uv_handle_t *)&p->timer, pending_closed);
  p->done(p->token, &p->res);
}

static int scripted_send(void *ctx, sp_exporterhelper_item_t *item, sp_exporterhelper_done_cb done,
                         void *token) {
  script_t *sc = ctx;
  uv_update_time(sc->loop);
  if (sc->n_attempts < MAX_ATTEMPTS) {
    sc->attempt_ms[sc->n_attempts] = uv_now(sc->loop);
    sc->attempt_no[sc->n_attempts] = item->attempt;
  }
  sc->n_attempts++;
  if (item->user == NULL) item->user = sp_strdup("cached body");
  if (sc->sync_err != 0) return sc->sync_err;
  pending_t *p = sp_calloc(1, sizeof(*p));
  assert_non_null(p);
  p->sc = sc;
  p->done = done;
  p->token = token;
  p->res = sc->next_result < sc->n_results ? sc->results[sc->next_result++] : sc->fallback;
  uv_timer_init(sc->loop, &p->timer);
  p->timer.data = p;
  sc->in_flight++;
  if (sc->in_flight > sc->max_in_flight) sc->max_in_flight = sc->in_flight;
  if (sc->hold) {
    p->next = sc->held;
    sc->held = p;
  } else {
    uv_timer_start(&p->timer, pending_fire, sc->delay_ms, 0);
  }
  return 0;
}

/* Completes every held send (from the loop, after @p delay) with @p err. */
static void release_all(script_t *sc, int err) {
  while (sc->held != NULL) {
    pending_t *p = sc->held;
    sc->held = p->next;
    if (err != 0)
      p->res = (sp_exporterhelper_result_t){.err = err, .message = "cancelled by the test"};
    uv_timer_start(&p->timer, pending_fire, 0, 0);
  }
}

static void scripted_cancel(void *ctx) {
  script_t *sc = ctx;
  sc->cancels++;
  release_all(sc, SP_ECANCELED);
}

static void scripted_release(void *ctx, sp_exporterhelper_item_t *item) {
  script_t *sc = ctx;
  sc->releases++;
  sp_free(item->user);
  item->user = NULL;
}

static const sp_exporterhelper_sender_t g_sender = {
    .send = scripted_send, .cancel = scripted_cancel, .release = scripted_release};

/* A transport that closes: ends held sends, then reports from the loop. */
static void scripted_close(void *ctx, void (*done)(void *arg), void *arg) {
  script_t *sc = ctx;
  sc->closes++;
  release_all(sc, SP_ECANCELED);
  assert_int_equal(sp_defer(sc->loop, done, arg), 0);
}

static const sp_exporterhelper_sender_t g_closing_sender = {
    .send = scripted_send, .close = scripted_close, .release = scripted_release};

/* ---- fixture ----------------------------------------------------------------- */

typedef struct fx_s {
  uv_loop_t loop;
  sp_host_t host;
  script_t sc;
  sp_exporterhelper_queue_cfg_t q;
  sp_exporterhelper_retry_cfg_t r;
  sp_exporterhelper_t *eh;
  int shut_done;
} fx_t;

static int setup(void **state) {
  fx_t *fx = calloc(1, sizeof(*fx));
  assert_non_null(fx);
  assert_int_equal(uv_loop_init(&fx->loop), 0);
  fx->host.loop = &fx->loop;
  fx->host.telemetry = sp_telemetry_create();
  fx->sc.loop = &fx->loop;
  fx->q = (sp_exporterhelper_queue_cfg_t){true, 2, 10, SP_EXPORTERHELPER_SIZER_REQUESTS};
  fx->r = (sp_exporterhelper_retry_cfg_t){true, 20, 1000, 5000, 2.0, 0};
  *state = fx;
  return 0;
}

static void on_shut(void *arg);
static int shut_done(void *arg);

static int teardown(void **state) {
  fx_t *fx = *state;
  /*
   * A test that failed part way left the helper running: shut it down
   * properly so the failure is reported instead of an abort in destroy.
   */
  if (fx->eh != NULL && fx->shut_done == 0) {
    uv_update_time(&fx->loop);
    fx->host.drain_deadline = uv_now(&fx->loop);
    sp_exporterhelper_shutdown(fx->eh, on_shut, fx);
    sp_test_run_until(&fx->loop, shut_done, fx, WAIT_MS);
  }
  sp_exporterhelper_destroy(fx->eh);
  assert_int_equal(sp_test_loop_finish(&fx->loop, 2000), 0);
  sp_telemetry_destroy(fx->host.telemetry);
  free(fx);
  return 0;
}

static const sp_exporterhelper_sender_t *g_use_sender = &g_sender;

static void make(fx_t *fx) {
  sp_exporterhelper_options_t o = {.id = "exporter/test",
                                   .host = &fx->host,
                                   .queue = &fx->q,
                                   .retry = &fx->r,
                                   .sender = g_use_sender,
                                   .sender_ctx = &fx->sc};
  assert_int_equal(sp_exporterhelper_create(&o, &fx->eh), 0);
}

static void make_started(fx_t *fx) {
  make(fx);
  assert_int_equal(sp_exporterhelper_start(fx->eh), 0);
}

static sp_traces_t *spans(size_t n) {
  sp_traces_t *b = sp_traces_wrap(sp_malloc(1), 0, n);
  assert_non_null(b);
  return b;
}

static int consume(fx_t *fx, size_t n) {
  return sp_consume_traces(sp_exporterhelper_consumer(fx->eh), spans(n));
}

static uint64_t metric(fx_t *fx, const char *name) {
  return sp_telemetry_value(fx->host.telemetry, name, "exporter=\"exporter/test\"");
}
#define SENT(fx) metric(fx, "spanprof_exporter_sent_spans_total")
#define FAILED(fx) metric(fx, "spanprof_exporter_send_failed_spans_total")
#define ENQ_FAILED(fx) metric(fx, "spanprof_exporter_enqueue_failed_spans_total")

static uint64_t g_want;
static int sent_reached(void *arg) {
  fx_t *fx = arg;
  return SENT(fx) + FAILED(fx) >= g_want;
}
static int shut_done(void *arg) { return ((fx_t *)arg)->shut_done; }
static void on_shut(void *arg) { ((fx_t *)arg)->shut_done++; }

static void run_until_done(fx_t *fx, uint64_t want, uint64_t timeout_ms) {
  g_want = want;
  assert_int_equal(sp_test_run_until(&fx->loop, sent_reached, fx, timeout_ms), 0);
}

static void shutdown_and_wait(fx_t *fx, uint64_t drain_ms) {
  uv_update_time(&fx->loop);
  fx->host.drain_deadline = uv_now(&fx->loop) + drain_ms;
  sp_exporterhelper_shutdown(fx->eh, on_shut, fx);
  assert_int_equal(fx->shut_done, 0); /* never inline */
  assert_int_equal(sp_test_run_until(&fx->loop, shut_done, fx, drain_ms + 2000), 0);
  assert_int_equal(fx->shut_done, 1);
}

/* ---- tests ------------------------------------------------------------------- */

static void test_send_and_count(void **state) {
  fx_t *fx = *state;
  make_started(fx);
  for (int i = 0; i < 5; i++)
    assert_int_equal(consume(fx, 3), 0);
  run_until_done(fx, 15, WAIT_MS);
  assert_int_equal(SENT(fx), 15);
  assert_int_equal(FAILED(fx), 0);
  assert_int_equal(fx->sc.n_attempts, 5);
  assert_true(fx->sc.max_in_flight <= 2);
  shutdown_and_wait(fx, 1000);
  assert_int_equal(fx->sc.releases, 5);
}

static void test_queue_full(void **state) {
  fx_t *fx = *state;
  fx->q.num_consumers = 1;
  fx->q.queue_size = 2;
  fx->sc.hold = true;
  make_started(fx);
  assert_int_equal(consume(fx, 1), 0); /* in flight */
  assert_int_equal(consume(fx, 1), 0); /* queued */
  assert_int_equal(consume(fx, 1), 0); /* queued */
  assert_int_equal(consume(fx, 4), SP_EAGAIN);
  assert_int_equal(ENQ_FAILED(fx), 4);
  assert_int_equal(metric(fx, "spanprof_exporter_queue_size"), 2);
  assert_int_equal(metric(fx, "spanprof_exporter_queue_capacity"), 2);
  sp_exporterhelper_stats_t st;
  sp_exporterhelper_stats(fx->eh, &st);
  assert_int_equal(st.queued_requests, 2);
  assert_int_equal(st.sending, 1);
  /* Let the held sends go one after another. */
  fx->sc.hold = false;
  release_all(&fx->sc, 0);
  run_until_done(fx, 3, WAIT_MS);
  assert_int_equal(SENT(fx), 3);
  assert_int_equal(metric(fx, "spanprof_exporter_queue_size"), 0);
  assert_int_equal(consume(fx, 2), 0); /* room again */
  run_until_done(fx, 5, WAIT_MS);
  shutdown_and_wait(fx, 1000);
}

static void test_queue_items_sizer(void **state) {
  fx_t *fx = *state;
  fx->q.num_consumers = 1;
  fx->q.queue_size = 10;
  fx->q.sizer = SP_EXPORTERHELPER_SIZER_ITEMS;
  make(fx); /* not started: everything waits in the queue */
  assert_int_equal(consume(fx, 6), 0);
  assert_int_equal(consume(fx, 4), 0);
  assert_int_equal(consume(fx, 1), SP_EAGAIN);
  assert_int_equal(metric(fx, "spanprof_exporter_queue_size"), 10);
  assert_int_equal(ENQ_FAILED(fx), 1);
  assert_int_equal(sp_exporterhelper_start(fx->eh), 0);
  run_until_done(fx, 10, WAIT_MS);
  /* A request larger than the whole queue is taken into an empty queue. */
  assert_int_equal(consume(fx, 25), 0);
  run_until_done(fx, 35, WAIT_MS);
  assert_int_equal(SENT(fx), 35);
  shutdown_and_wait(fx, 1000);
}

/* A traces batch whose encoded request is @p bytes long (zeros: the scripted sender never parses).
 */
static int consume_bytes(fx_t *fx, size_t spans_n, size_t bytes) {
  uint8_t *buf = sp_calloc(1, bytes ? bytes : 1);
  assert_non_null(buf);
  sp_traces_t *b = sp_traces_wrap(buf, bytes, spans_n);
  assert_non_null(b);
  assert_int_equal(sp_exporterhelper_traces_bytes(b), bytes);
  return sp_consume_traces(sp_exporterhelper_consumer(fx->eh), b);
}
#define QBYTES(fx) metric(fx, "spanprof_exporter_queue_bytes")

/* sizer: bytes counts each request's encoded size against queue_size. */
static void test_queue_bytes_sizer(void **state) {
  fx_t *fx = *state;
  fx->q.num_consumers = 1;
  fx->q.queue_size = 1000;
  fx->q.sizer = SP_EXPORTERHELPER_SIZER_BYTES;
  make(fx); /* not started: everything waits in the queue */
  assert_int_equal(metric(fx, "spanprof_exporter_queue_capacity"), 1000);
  assert_int_equal(consume_bytes(fx, 5, 600), 0);
  assert_int_equal(consume_bytes(fx, 1, 400), 0);
  assert_int_equal(consume_bytes(fx, 1, 1), SP_EAGAIN); /* 1001 > 1000 */
  assert_int_equal(ENQ_FAILED(fx), 1);
  assert_int_equal(metric(fx, "spanprof_exporter_queue_size"), 1000);
  assert_int_equal(QBYTES(fx), 1000);
  sp_exporterhelper_stats_t st;
  sp_exporterhelper_stats(fx->eh, &st);
  assert_int_equal(st.queued_requests, 2);
  assert_int_equal(st.queued_items, 6);
  assert_int_equal(st.queued_bytes, 1000);
  assert_int_equal(sp_exporterhelper_start(fx->eh), 0);
  run_until_done(fx, 6, WAIT_MS);
  assert_int_equal(metric(fx, "spanprof_exporter_queue_size"), 0);
  assert_int_equal(QBYTES(fx), 0);
  sp_exporterhelper_stats(fx->eh, &st);
  assert_int_equal(st.queued_bytes, 0);
  shutdown_and_wait(fx, 1000);
}

/*
 * max_queued_bytes caps a queue sized in requests: refusal (retryable) at
 * the byte bound, room again once the queue drains, and a lone request
 * larger than the cap taken into an empty queue (whole, not split).
 */
static void test_queue_max_bytes(void **state) {
  fx_t *fx = *state;
  fx->q.num_consumers = 1;
  fx->q.queue_size = 100; /* requests: never the limit here */
  fx->q.max_queued_bytes = 1000;
  fx->sc.hold = true;
  make(fx);
  assert_int_equal(metric(fx, "spanprof_exporter_queue_bytes_capacity"), 1000);
  /* A lone oversize request: the queue is empty, so it is taken. */
  assert_int_equal(consume_bytes(fx, 3, 5000), 0);
  assert_int_equal(QBYTES(fx), 5000);
  assert_int_equal(metric(fx, "spanprof_exporter_queue_size"), 1);
  assert_int_equal(consume_bytes(fx, 1, 1), SP_EAGAIN); /* behind it: full */
  assert_int_equal(ENQ_FAILED(fx), 1);
  assert_int_equal(sp_exporterhelper_start(fx->eh), 0); /* it goes to the slot... */
  assert_int_equal(QBYTES(fx), 0);                      /* ...and no longer counts */
  assert_int_equal(fx->sc.n_attempts, 1);
  assert_int_equal(consume_bytes(fx, 1, 700), 0);
  assert_int_equal(consume_bytes(fx, 1, 300), 0);       /* exactly at the cap */
  assert_int_equal(consume_bytes(fx, 2, 1), SP_EAGAIN); /* one byte past it */
  assert_int_equal(ENQ_FAILED(fx), 3);
  assert_int_equal(QBYTES(fx), 1000);
  assert_int_equal(metric(fx, "spanprof_exporter_queue_size"), 2); /* still in requests */
  fx->sc.hold = false;
  release_all(&fx->sc, 0);
  run_until_done(fx, 5, WAIT_MS);
  assert_int_equal(SENT(fx), 5);
  assert_int_equal(QBYTES(fx), 0);
  assert_int_equal(consume_bytes(fx, 1, 900), 0); /* room again */
  run_until_done(fx, 6, WAIT_MS);
  shutdown_and_wait(fx, 1000);
}

/* The defaults (no queue config) cap the queue at 64 MiB whatever the request size. */
static void test_queue_default_byte_cap(void **state) {
  fx_t *fx = *state;
  sp_exporterhelper_options_t o = {
      .id = "exporter/test", .host = &fx->host, .sender = &g_sender, .sender_ctx = &fx->sc};
  assert_int_equal(sp_exporterhelper_create(&o, &fx->eh), 0);
  assert_int_equal(metric(fx, "spanprof_exporter_queue_bytes_capacity"),
                   SP_EXPORTERHELPER_DEFAULT_MAX_QUEUED_BYTES);
  assert_int_equal(metric(fx, "spanprof_exporter_queue_capacity"), 1000);
  /* Not started: 4 MiB requests wait; the 17th would pass 64 MiB, long before 1,000. */
  for (int i = 0; i < 16; i++)
    assert_int_equal(consume_bytes(fx, 1, 4u << 20), 0);
  assert_int_equal(consume_bytes(fx, 1, 4u << 20), SP_EAGAIN);
  assert_int_equal(QBYTES(fx), 64u << 20);
  assert_int_equal(metric(fx, "spanprof_exporter_queue_size"), 16);
  sp_exporterhelper_destroy(fx->eh); /* never started: dropped and counted */
  fx->eh = NULL;
  assert_int_equal(FAILED(fx), 16);
}

static void test_queue_disabled(void **state) {
  fx_t *fx = *state;
  fx->q.enabled = false;
  fx->q.num_consumers = 2;
  fx->sc.hold = true;
  make(fx);
  assert_int_equal(consume(fx, 1), SP_EAGAIN); /* not started: nowhere to send */
  assert_int_equal(sp_exporterhelper_start(fx->eh), 0);
  assert_int_equal(consume(fx, 1), 0);
  assert_int_equal(consume(fx, 1), 0);
  assert_int_equal(consume(fx, 1), SP_EAGAIN);
  assert_int_equal(fx->sc.n_attempts, 2); /* sent directly */
  assert_int_equal(ENQ_FAILED(fx), 2);
  assert_int_equal(metric(fx, "spanprof_exporter_queue_capacity"), 0);
  fx->sc.hold = false;
  release_all(&fx->sc, 0);
  run_until_done(fx, 2, WAIT_MS);
  assert_int_equal(consume(fx, 1), 0);
  run_until_done(fx, 3, WAIT_MS);
  assert_int_equal(SENT(fx), 3);
  shutdown_and_wait(fx, 1000);
}

static void test_retry_backoff_timing(void **state) {
  fx_t *fx = *state;
  /* 40 ms, then 80, then 160 (multiplier 2, no jitter), then success. */
  fx->r.initial_interval_ms = 40;
  for (int i = 0; i < 3; i++)
    fx->sc.results[i] = (sp_exporterhelper_result_t){.err = SP_EAGAIN, .message = "busy"};
  fx->sc.n_results = 3;
  make_started(fx);
  assert_int_equal(consume(fx, 7), 0);
  run_until_done(fx, 7, WAIT_MS);
  assert_int_equal(SENT(fx), 7);
  assert_int_equal(fx->sc.n_attempts, 4);
  uint64_t want[] = {40, 80, 160};
  for (int i = 0; i < 3; i++) {
    uint64_t gap = fx->sc.attempt_ms[i + 1] - fx->sc.attempt_ms[i];
    assert_true(gap >= want[i]);
    assert_true(gap < want[i] + SLACK_MS);
    assert_int_equal(fx->sc.attempt_no[i + 1], i + 1);
  }
  assert_int_equal(metric(fx, "spanprof_exporter_retries_total"), 3);
  assert_int_equal(fx->sc.releases, 1); /* the cached body lived across attempts */
  shutdown_and_wait(fx, 1000);
}

static void test_retry_max_interval_and_jitter(void **state) {
  fx_t *fx = *state;
  /* initial 20, multiplier 3, max 40: delays 20, 40, 40 ± 50 %. */
  fx->r.initial_interval_ms = 20;
  fx->r.max_interval_ms = 40;
  fx->r.multiplier = 3;
  fx->r.randomization_factor = 0.5;
  for (int i = 0; i < 4; i++)
    fx->sc.results[i] = (sp_exporterhelper_result_t){.err = SP_EAGAIN};
  fx->sc.n_results = 4;
  make_started(fx);
  assert_int_equal(consume(fx, 1), 0);
  run_until_done(fx, 1, WAIT_MS);
  assert_int_equal(fx->sc.n_attempts, 5);
  uint64_t base[] = {20, 40, 40, 40};
  for (int i = 0; i < 4; i++) {
    uint64_t gap = fx->sc.attempt_ms[i + 1] - fx->sc.attempt_ms[i];
    assert_true(gap + 1 >= base[i] / 2);
    assert_true(gap <= base[i] * 3 / 2 + SLACK_MS);
  }
  shutdown_and_wait(fx, 1000);
}

static void test_retry_after_honoured(void **state) {
  fx_t *fx = *state;
  fx->r.initial_interval_ms = 10;
  fx->sc.results[0] =
      (sp_exporterhelper_result_t){.err = SP_EAGAIN, .retry_after_ms = 300, .message = "503"};
  fx->sc.n_results = 1;
  make_started(fx);
  assert_int_equal(consume(fx, 2), 0);
  run_until_done(fx, 2, WAIT_MS);
  assert_int_equal(fx->sc.n_attempts, 2);
  uint64_t gap = fx->sc.attempt_ms[1] - fx->sc.attempt_ms[0];
  assert_true(gap >= 300);
  assert_true(gap < 300 + SLACK_MS);
  assert_int_equal(SENT(fx), 2);
  shutdown_and_wait(fx, 1000);
}

static void test_max_elapsed_give_up(void **state) {
  fx_t *fx = *state;
  fx->r.initial_interval_ms = 20;
  fx->r.multiplier = 1;
  fx->r.max_elapsed_time_ms = 110;
  fx->sc.fallback = (sp_exporterhelper_result_t){.err = SP_EAGAIN, .message = "down"};
  make_started(fx);
  uv_update_time(&fx->loop);
  uint64_t t0 = uv_now(&fx->loop);
  assert_int_equal(consume(fx, 9), 0);
  run_until_done(fx, 9, WAIT_MS);
  uv_update_time(&fx->loop);
  assert_int_equal(FAILED(fx), 9);
  assert_int_equal(SENT(fx), 0);
  /* Attempts at 0, 20, 40, 60, 80, 100; the next would pass 110 ms. */
  assert_true(fx->sc.n_attempts >= 1 && fx->sc.n_attempts <= 6);
  assert_true(uv_now(&fx->loop) - t0 < 110 + SLACK_MS);
  /* A Retry-After beyond max_elapsed_time gives up at once. */
  fx->sc.fallback.retry_after_ms = 10000;
  size_t before = fx->sc.n_attempts;
  assert_int_equal(consume(fx, 1), 0);
  run_until_done(fx, 10, WAIT_MS);
  assert_int_equal(fx->sc.n_attempts, before + 1);
  assert_int_equal(FAILED(fx), 10);
  shutdown_and_wait(fx, 1000);
}

static void test_permanent_not_retried(void **state) {
  fx_t *fx = *state;
  fx->sc.fallback = (sp_exporterhelper_result_t){.err = SP_EREJECTED, .message = "HTTP 400"};
  make_started(fx);
  assert_int_equal(consume(fx, 4), 0);
  run_until_done(fx, 4, WAIT_MS);
  assert_int_equal(fx->sc.n_attempts, 1);
  assert_int_equal(FAILED(fx), 4);
  assert_int_equal(metric(fx, "spanprof_exporter_retries_total"), 0);
  shutdown_and_wait(fx, 1000);
}

static void test_retry_disabled(void **state) {
  fx_t *fx = *state;
  fx->r.enabled = false;
  fx->sc.fallback = (sp_exporterhelper_result_t){.err = SP_EAGAIN};
  make_started(fx);
  assert_int_equal(consume(fx, 2), 0);
  run_until_done(fx, 2, WAIT_MS);
  assert_int_equal(fx->sc.n_attempts, 1);
  assert_int_equal(FAILED(fx), 2);
  shutdown_and_wait(fx, 1000);
}

static void test_partial_success(void **state) {
  fx_t *fx = *state;
  fx->sc.fallback =
      (sp_exporterhelper_result_t){.err = 0, .rejected = 2, .message = "2 spans too old"};
  make_started(fx);
  assert_int_equal(consume(fx, 5), 0);
  run_until_done(fx, 5, WAIT_MS);
  assert_int_equal(SENT(fx), 3);
  assert_int_equal(FAILED(fx), 2);
  assert_int_equal(fx->sc.n_attempts, 1);
  shutdown_and_wait(fx, 1000);
}

static void test_sync_send_failure(void **state) {
  fx_t *fx = *state;
  fx->q.num_consumers = 1;
  fx->sc.sync_err = SP_EINVAL; /* permanent, returned from send itself */
  make(fx);
  for (int i = 0; i < 4; i++)
    assert_int_equal(consume(fx, 1), 0);
  assert_int_equal(sp_exporterhelper_start(fx->eh), 0);
  assert_int_equal(FAILED(fx), 4);
  /* Retryable synchronous failures go through the backoff timer. */
  fx->sc.sync_err = SP_EAGAIN;
  fx->r.initial_interval_ms = 10;
  assert_int_equal(consume(fx, 1), 0);
  assert_int_equal(fx->sc.n_attempts, 5);
  fx->sc.sync_err = 0;
  run_until_done(fx, 5, WAIT_MS);
  assert_int_equal(SENT(fx), 1);
  shutdown_and_wait(fx, 1000);
}

static void test_drain_sends_queued(void **state) {
  fx_t *fx = *state;
  fx->q.num_consumers = 1;
  fx->sc.delay_ms = 20;
  make_started(fx);
  for (int i = 0; i < 5; i++)
    assert_int_equal(consume(fx, 2), 0);
  shutdown_and_wait(fx, 2000);
  assert_int_equal(SENT(fx), 10);
  assert_int_equal(FAILED(fx), 0);
  assert_int_equal(consume(fx, 1), SP_EAGAIN); /* refused after shutdown */
  assert_int_equal(ENQ_FAILED(fx), 1);
  sp_exporterhelper_shutdown(fx->eh, on_shut, fx); /* idempotent */
  assert_int_equal(fx->shut_done, 1);
}

/* With a close hook: it runs once after the drain, and ends sends still in flight at the deadline. */
static void test_close_hook(void **state) {
  fx_t *fx = *state;
  g_use_sender = &g_closing_sender;
  make_started(fx);
  assert_int_equal(consume(fx, 2), 0);
  shutdown_and_wait(fx, 1000); /* drains normally, then closes */
  assert_int_equal(fx->sc.closes, 1);
  assert_int_equal(SENT(fx), 2);
  sp_exporterhelper_destroy(fx->eh);
  fx->eh = NULL;

  /* A backend that never answers: the close at the deadline ends the send. */
  fx->shut_done = 0;
  fx->sc.closes = 0;
  fx->sc.hold = true;
  make_started(fx);
  assert_int_equal(consume(fx, 3), 0);
  shutdown_and_wait(fx, 100);
  assert_int_equal(fx->sc.closes, 1);
  assert_int_equal(FAILED(fx), 3);
  g_use_sender = &g_sender;
}

static void test_drain_deadline(void **state) {
  fx_t *fx = *state;
  fx->q.num_consumers = 1;
  fx->sc.hold = true; /* the backend never answers */
  make_started(fx);
  for (int i = 0; i < 3; i++)
    assert_int_equal(consume(fx, 3), 0);
  uv_update_time(&fx->loop);
  uint64_t t0 = uv_now(&fx->loop);
  shutdown_and_wait(fx, 100);
  uv_update_time(&fx->loop);
  uint64_t took = uv_now(&fx->loop) - t0;
  assert_true(took >= 100 && took < 100 + SLACK_MS);
  assert_int_equal(fx->sc.cancels, 1);
  assert_int_equal(FAILED(fx), 9); /* 6 queued + 3 cancelled in flight */
  assert_int_equal(SENT(fx), 0);
  assert_int_equal(fx->sc.releases, 3);
}

static void test_drain_gives_up_late_retry(void **state) {
  fx_t *fx = *state;
  fx->r.initial_interval_ms = 5000; /* far past the drain deadline */
  /* Room for that delay: the fixture's 1 s interval cap and 5 s elapsed budget would
   * otherwise make it a near tie with the drain deadline or an immediate give-up. */
  fx->r.max_interval_ms = 10000;
  fx->r.max_elapsed_time_ms = 60000;
  fx->sc.results[0] = (sp_exporterhelper_result_t){.err = SP_EAGAIN};
  fx->sc.n_results = 1;
  make_started(fx);
  assert_int_equal(consume(fx, 3), 0);
  assert_int_equal(consume(fx, 1), 0);
  run_until_done(fx, 1, WAIT_MS); /* the second succeeds, the first waits */
  sp_exporterhelper_stats_t st;
  sp_exporterhelper_stats(fx->eh, &st);
  assert_int_equal(st.busy, 1);
  uv_update_time(&fx->loop);
  uint64_t t0 = uv_now(&fx->loop);
  shutdown_and_wait(fx, 1000);
  uv_update_time(&fx->loop);
  assert_true(uv_now(&fx->loop) - t0 < SLACK_MS); /* did not wait for the deadline */
  assert_int_equal(FAILED(fx), 3);
  assert_int_equal(SENT(fx), 1);
  assert_int_equal(fx->sc.cancels, 0);
}

static void test_shutdown_without_start(void **state) {
  fx_t *fx = *state;
  make(fx);
  assert_int_equal(consume(fx, 2), 0);
  sp_exporterhelper_shutdown(fx->eh, on_shut, fx);
  assert_int_equal(fx->shut_done, 0);
  assert_int_equal(sp_test_run_until(&fx->loop, shut_done, fx, 1000), 0);
  assert_int_equal(FAILED(fx), 2);
  assert_int_equal(sp_exporterhelper_start(fx->eh), SP_ESTATE);
}

static void test_destroy_without_start(void **state) {
  fx_t *fx = *state;
  make(fx);
  assert_int_equal(consume(fx, 2), 0);
  sp_exporterhelper_destroy(fx->eh);
  fx->eh = NULL;
  assert_int_equal(FAILED(fx), 2);
  assert_int_equal(fx->sc.releases, 1);
}

static void test_profiles(void **state) {
  fx_t *fx = *state;
  make_started(fx);
  sp_profiles_t *b = sp_profiles_create();
  assert_non_null(b);
  sp_label_t l = {"service_name", "svc"};
  assert_non_null(sp_profiles_add(b, &l, 1, 0, 0, (const uint8_t *)"", 0));
  assert_non_null(sp_profiles_add(b, &l, 1, 0, 0, (const uint8_t *)"", 0));
  assert_int_equal(sp_consume_profiles(sp_exporterhelper_consumer(fx->eh), b), 0);
  uv_update_time(&fx->loop);
  for (int i = 0; i < 100 && metric(fx, "spanprof_exporter_sent_profiles_total") < 2; i++)
    uv_run(&fx->loop, UV_RUN_ONCE);
  assert_int_equal(metric(fx, "spanprof_exporter_sent_profiles_total"), 2);
  shutdown_and_wait(fx, 1000);
}

/* A profiles batch weighs its pprof bytes; the sender sees the size the queue counted. */
static size_t g_seen_bytes;
static int bytes_send(void *ctx, sp_exporterhelper_item_t *item, sp_exporterhelper_done_cb done,
                      void *token) {
  g_seen_bytes = item->bytes;
  return scripted_send(ctx, item, done, token);
}
static const sp_exporterhelper_sender_t g_bytes_sender = {
    .send = bytes_send, .cancel = scripted_cancel, .release = scripted_release};

static void test_profiles_bytes(void **state) {
  fx_t *fx = *state;
  fx->q.sizer = SP_EXPORTERHELPER_SIZER_BYTES;
  fx->q.queue_size = 10000;
  g_use_sender = &g_bytes_sender;
  make(fx);
  g_use_sender = &g_sender;
  sp_profiles_t *b = sp_profiles_create();
  assert_non_null(b);
  static const uint8_t pprof[150] = {0};
  sp_label_t l = {"service_name", "svc"};
  assert_non_null(sp_profiles_add(b, &l, 1, 0, 0, pprof, 100));
  assert_non_null(sp_profiles_add(b, &l, 1, 0, 0, pprof, 50));
  assert_int_equal(sp_exporterhelper_profiles_bytes(b), 150);
  assert_int_equal(sp_consume_profiles(sp_exporterhelper_consumer(fx->eh), b), 0);
  assert_int_equal(metric(fx, "spanprof_exporter_queue_size"), 150);
  assert_int_equal(QBYTES(fx), 150);
  g_seen_bytes = 0;
  assert_int_equal(sp_exporterhelper_start(fx->eh), 0);
  assert_int_equal(g_seen_bytes, 150);
  uv_update_time(&fx->loop);
  for (int i = 0; i < 100 && metric(fx, "spanprof_exporter_sent_profiles_total") < 2; i++)
    uv_run(&fx->loop, UV_RUN_ONCE);
  assert_int_equal(metric(fx, "spanprof_exporter_sent_profiles_total"), 2);
  assert_int_equal(QBYTES(fx), 0);
  shutdown_and_wait(fx, 1000);
}

static void test_bad_options(void **state) {
  fx_t *fx = *state;
  sp_exporterhelper_t *eh = NULL;
  sp_exporterhelper_options_t o = {.host = &fx->host, .sender = &g_sender};
  fx->q.num_consumers = 0;
  o.queue = &fx->q;
  assert_int_equal(sp_exporterhelper_create(&o, &eh), SP_EINVAL);
  o.queue = NULL;
  o.sender = NULL;
  assert_int_equal(sp_exporterhelper_create(&o, &eh), SP_EINVAL);
  o.sender = &g_sender;
  assert_int_equal(sp_exporterhelper_create(&o, &eh), 0); /* defaults */
  sp_exporterhelper_destroy(eh);
  for (long n = 0; n < 3; n++) {
    sp_alloc_set_fail_after(n);
    int rc = sp_exporterhelper_create(&o, &eh);
    sp_alloc_set_fail_after(-1);
    assert_int_equal(rc, SP_ENOMEM);
  }
}

/* The schemas decode the Collector's defaults and reject nonsense. */
typedef struct holder_s {
  sp_exporterhelper_queue_cfg_t q;
  sp_exporterhelper_retry_cfg_t r;
} holder_t;

static const sp_cfg_field_t holder_fields[] = {
    {.key = "sending_queue",
     .type = SP_CFG_SECTION,
     .offset = offsetof(holder_t, q),
     .section = &sp_exporterhelper_queue_schema},
    {.key = "retry_on_failure",
     .type = SP_CFG_SECTION,
     .offset = offsetof(holder_t, r),
     .section = &sp_exporterhelper_retry_schema},
};
static const sp_cfg_schema_t holder_schema = {holder_fields, 2, sizeof(holder_t), NULL};

static int decode(const char *yaml, holder_t *h, sp_errors_t *errs) {
  sp_config_doc_t *doc = NULL;
  memset(h, 0, sizeof(*h));
  assert_int_equal(sp_config_load_string("t.yaml", yaml, strlen(yaml), &doc, errs), 0);
  int rc = sp_cfg_decode(&holder_schema, doc->root, "exporters::x", NULL, h, errs);
  sp_cfg_free(&holder_schema, h);
  sp_config_doc_free(doc);
  return rc;
}

static void test_schema(void **state) {
  (void)state;
  holder_t h;
  sp_errors_t errs = {0};
  assert_int_equal(decode("{}", &h, &errs), 0);
  assert_true(h.q.enabled);
  assert_int_equal(h.q.num_consumers, 10);
  assert_int_equal(h.q.queue_size, 1000);
  assert_int_equal(h.q.sizer, SP_EXPORTERHELPER_SIZER_REQUESTS);
  assert_int_equal(h.q.max_queued_bytes, SP_EXPORTERHELPER_DEFAULT_MAX_QUEUED_BYTES);
  assert_true(h.r.enabled);
  assert_int_equal(h.r.initial_interval_ms, 5000);
  assert_int_equal(h.r.max_interval_ms, 30000);
  assert_int_equal(h.r.max_elapsed_time_ms, 300000);
  assert_true(h.r.multiplier == 1.5 && h.r.randomization_factor == 0.5);

  assert_int_equal(decode("sending_queue: {num_consumers: 2, queue_size: 50, sizer: items}\n"
                          "retry_on_failure: {initial_interval: 100ms, max_elapsed_time: 0}\n",
                          &h, &errs),
                   0);
  assert_int_equal(h.q.num_consumers, 2);
  assert_int_equal(h.q.sizer, SP_EXPORTERHELPER_SIZER_ITEMS);
  assert_int_equal(h.r.initial_interval_ms, 100);
  assert_int_equal(h.r.max_elapsed_time_ms, 0);
  assert_int_equal(errs.n, 0);

  assert_int_equal(h.q.max_queued_bytes, 64u << 20);
  assert_int_equal(decode("sending_queue: {sizer: bytes, queue_size: 5000000, "
                          "max_queued_bytes: 1MiB}\n",
                          &h, &errs),
                   0);
  assert_int_equal(h.q.sizer, SP_EXPORTERHELPER_SIZER_BYTES);
  assert_int_equal(h.q.queue_size, 5000000);
  assert_int_equal(h.q.max_queued_bytes, 1u << 20);
  assert_int_equal(decode("sending_queue: {max_queued_bytes: 0}\n", &h, &errs), 0);
  assert_int_equal(h.q.max_queued_bytes, 0);
  assert_int_equal(errs.n, 0);
  /* sizer: bytes without a queue_size: the byte bound, not 1000 bytes. */
  assert_int_equal(decode("sending_queue: {sizer: bytes, max_queued_bytes: 8MiB}\n", &h, &errs), 0);
  assert_int_equal(h.q.queue_size, 8 << 20);
  assert_int_equal(decode("sending_queue: {sizer: bytes, max_queued_bytes: 0}\n", &h, &errs), 0);
  assert_int_equal(h.q.queue_size, 64 << 20);
  assert_int_equal(decode("sending_queue: {sizer: items}\n", &h, &errs), 0);
  assert_int_equal(h.q.queue_size, 1000);
  assert_int_equal(errs.n, 0);

  assert_int_equal(decode("sending_queue: {num_consumers: 0, sizer: pages}\n", &h, &errs),
                   SP_ECONFIG);
  assert_int_equal(errs.n, 2);
  sp_errors_free(&errs);
  memset(&errs, 0, sizeof(errs));
  assert_int_equal(decode("retry_on_failure: {initial_interval: 0}\n", &h, &errs), SP_ECONFIG);
  assert_int_equal(errs.n, 1);
  assert_non_null(strstr(errs.lines[0], "initial_interval"));
  sp_errors_free(&errs);
  memset(&errs, 0, sizeof(errs));
  assert_int_equal(decode("retry_on_failure: {enabled: false, initial_interval: 0}\n", &h, &errs),
                   0);
  sp_errors_free(&errs);
}

/*
 * A server's delay of UINT64_MAX (Retry-After and RetryInfo parsers saturate
 * there) must not wrap the time sums: within a max_elapsed_time budget the
 * item is given up at once and its slot is free again (it used to arm an
 * effectively infinite timer, pinning the slot for good).
 */
static void test_retry_after_saturated_gives_up(void **state) {
  fx_t *fx = *state;
  fx->q.num_consumers = 1;
  fx->sc.delay_ms = 20; /* elapsed > 0 when the answer comes: the sum would wrap */
  fx->sc.results[0] = (sp_exporterhelper_result_t){
      .err = SP_EAGAIN, .retry_after_ms = UINT64_MAX, .message = "429"};
  fx->sc.n_results = 1;
  make_started(fx);
  assert_int_equal(consume(fx, 2), 0);
  run_until_done(fx, 2, WAIT_MS);
  assert_int_equal(FAILED(fx), 2);
  assert_int_equal(fx->sc.n_attempts, 1);
  sp_exporterhelper_stats_t st;
  sp_exporterhelper_stats(fx->eh, &st);
  assert_int_equal(st.busy, 0);
  assert_int_equal(consume(fx, 3), 0); /* the only slot takes new work */
  run_until_done(fx, 5, WAIT_MS);
  assert_int_equal(SENT(fx), 3);
  shutdown_and_wait(fx, 1000);
}

static int one_waiting(void *arg) {
  fx_t *fx = arg;
  sp_exporterhelper_stats_t st;
  sp_exporterhelper_stats(fx->eh, &st);
  return fx->sc.n_attempts == 1 && st.busy == 1 && st.sending == 0;
}

/*
 * Retrying forever (max_elapsed_time 0), the same delay is capped at
 * max(max_interval, 1h), and a shutdown gives the waiting item up at once
 * (its retry would come after the drain deadline) instead of waiting for it.
 */
static void test_retry_after_saturated_forever(void **state) {
  fx_t *fx = *state;
  fx->r.max_elapsed_time_ms = 0;
  fx->sc.results[0] = (sp_exporterhelper_result_t){
      .err = SP_EAGAIN, .retry_after_ms = UINT64_MAX, .message = "429"};
  fx->sc.n_results = 1;
  FILE *f = tmpfile();
  assert_non_null(f);
  sp_log_set_level(SP_LOG_INFO);
  sp_log_set_fd(fileno(f));
  make_started(fx);
  assert_int_equal(consume(fx, 2), 0);
  assert_int_equal(sp_test_run_until(&fx->loop, one_waiting, fx, 1000), 0);
  sp_log_set_fd(-1);
  if (getenv("SP_TEST_LOG") == NULL) sp_log_set_level(SP_LOG_OFF);
  char line[4096] = "";
  rewind(f);
  size_t n = fread(line, 1, sizeof(line) - 1, f);
  line[n] = '\0';
  fclose(f);
  assert_non_null(strstr(line, "retrying in 3600000 ms"));
  uv_update_time(&fx->loop);
  uint64_t t0 = uv_now(&fx->loop);
  shutdown_and_wait(fx, 1000);
  uv_update_time(&fx->loop);
  assert_true(uv_now(&fx->loop) - t0 < SLACK_MS);
  assert_int_equal(FAILED(fx), 2);
  assert_int_equal(fx->sc.n_attempts, 1);
}

int main(void) {
  if (getenv("SP_TEST_LOG") == NULL) sp_log_set_level(SP_LOG_OFF);
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_send_and_count, setup, teardown),
      cmocka_unit_test_setup_teardown(test_queue_full, setup, teardown),
      cmocka_unit_test_setup_teardown(test_queue_items_sizer, setup, teardown),
      cmocka_unit_test_setup_teardown(test_queue_bytes_sizer, setup, teardown),
      cmocka_unit_test_setup_teardown(test_queue_max_bytes, setup, teardown),
      cmocka_unit_test_setup_teardown(test_queue_default_byte_cap, setup, teardown),
      cmocka_unit_test_setup_teardown(test_queue_disabled, setup, teardown),
      cmocka_unit_test_setup_teardown(test_retry_backoff_timing, setup, teardown),
      cmocka_unit_test_setup_teardown(test_retry_max_interval_and_jitter, setup, teardown),
      cmocka_unit_test_setup_teardown(test_retry_after_honoured, setup, teardown),
      cmocka_unit_test_setup_teardown(test_max_elapsed_give_up, setup, teardown),
      cmocka_unit_test_setup_teardown(test_permanent_not_retried, setup, teardown),
      cmocka_unit_test_setup_teardown(test_retry_disabled, setup, teardown),
      cmocka_unit_test_setup_teardown(test_partial_success, setup, teardown),
      cmocka_unit_test_setup_teardown(test_sync_send_failure, setup, teardown),
      cmocka_unit_test_setup_teardown(test_drain_sends_queued, setup, teardown),
      cmocka_unit_test_setup_teardown(test_drain_deadline, setup, teardown),
      cmocka_unit_test_setup_teardown(test_close_hook, setup, teardown),
      cmocka_unit_test_setup_teardown(test_drain_gives_up_late_retry, setup, teardown),
      cmocka_unit_test_setup_teardown(test_shutdown_without_start, setup, teardown),
      cmocka_unit_test_setup_teardown(test_destroy_without_start, setup, teardown),
      cmocka_unit_test_setup_teardown(test_profiles, setup, teardown),
      cmocka_unit_test_setup_teardown(test_profiles_bytes, setup, teardown),
      cmocka_unit_test_setup_teardown(test_bad_options, setup, teardown),
      cmocka_unit_test(test_schema),
      cmocka_unit_test_setup_teardown(test_retry_after_saturated_gives_up, setup, teardown),
      cmocka_unit_test_setup_teardown(test_retry_after_saturated_forever, setup, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
