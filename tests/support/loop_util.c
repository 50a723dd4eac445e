/*
 * loop_util.c — see loop_util.h.
 */
#include "support/loop_util.h"

#include "pipeline/error.h"

#include <stdio.h>

#define POLL_MS 2

static void on_tick(uv_timer_t *t) { (void)t; /* only wakes the loop */ }

static void on_closed(uv_handle_t *h) { *(int *)h->data = 1; }

int sp_test_run_until(uv_loop_t *loop, int (*cond)(void *), void *arg, uint64_t timeout_ms) {
  uv_timer_t tick;
  int closed = 0;
  uv_timer_init(loop, &tick);
  tick.data = &closed;
  uv_timer_start(&tick, on_tick, POLL_MS, POLL_MS);
  uv_update_time(loop);
  uint64_t deadline = uv_now(loop) + timeout_ms;
  int ok = cond(arg);
  while (!ok && uv_now(loop) < deadline) {
    uv_run(loop, UV_RUN_ONCE);
    ok = cond(arg);
  }
  uv_close((uv_handle_t *)&tick, on_closed);
  while (!closed)
    uv_run(loop, UV_RUN_NOWAIT);
  return ok ? 0 : SP_ETIMEDOUT;
}

static void print_handle(uv_handle_t *h, void *arg) {
  (void)arg;
  fprintf(stderr, "leaked handle: %s active=%d closing=%d\n", uv_handle_type_name(h->type),
          uv_is_active(h), uv_is_closing(h));
}

static void on_deadline(uv_timer_t *t) { *(int *)t->data = 1; }

static void on_deadline_closed(uv_handle_t *h) { (void)h; }

int sp_test_loop_finish(uv_loop_t *loop, uint64_t timeout_ms) {
  /* An unreferenced timer bounds the wait without keeping the loop alive. */
  uv_timer_t deadline;
  int expired = 0;
  uv_timer_init(loop, &deadline);
  deadline.data = &expired;
  uv_timer_start(&deadline, on_deadline, timeout_ms, 0);
  uv_unref((uv_handle_t *)&deadline);
  while (uv_loop_alive(loop) && !expired)
    uv_run(loop, UV_RUN_ONCE);
  uv_close((uv_handle_t *)&deadline, on_deadline_closed);
  uv_run(loop, UV_RUN_NOWAIT);
  int rc = uv_loop_close(loop);
  if (rc) uv_walk(loop, print_handle, NULL);
  return rc;
}
