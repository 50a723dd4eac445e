/*
 * pool_block.c — see pool_block.h.
 */
#include "support/pool_block.h"

#include "support/loop_util.h"

#include <stdatomic.h>
#include <stdlib.h>

#define SP_TEST_POOL_MAX 1024 /* libuv's MAX_THREADPOOL_SIZE */

struct sp_test_pool_block_s {
  uv_sem_t sem;
  atomic_int running;
  int n;        /* blocking items queued */
  int finished; /* their after_work callbacks that ran (loop thread) */
  uv_work_t work[];
};

/* The pool size libuv uses: UV_THREADPOOL_SIZE, 0 meaning 1, capped at 1024; 4 when unset. */
static int sp__pool_size(void) {
  const char *v = getenv("UV_THREADPOOL_SIZE");
  if (v == NULL) return 4;
  int n = atoi(v);
  if (n <= 0) n = 1;
  return n > SP_TEST_POOL_MAX ? SP_TEST_POOL_MAX : n;
}

static void sp__block_work(uv_work_t *w) {
  sp_test_pool_block_t *b = w->data;
  atomic_fetch_add(&b->running, 1);
  uv_sem_wait(&b->sem);
}

static void sp__block_after(uv_work_t *w, int status) {
  (void)status;
  sp_test_pool_block_t *b = w->data;
  if (++b->finished == b->n) {
    uv_sem_destroy(&b->sem);
    free(b);
  }
}

static int sp__all_running(void *arg) {
  sp_test_pool_block_t *b = arg;
  return atomic_load(&b->running) == b->n;
}

sp_test_pool_block_t *sp_test_pool_block(uv_loop_t *loop) {
  int n = sp__pool_size();
  sp_test_pool_block_t *b = calloc(1, sizeof(*b) + (size_t)n * sizeof(uv_work_t));
  if (b == NULL) return NULL;
  if (uv_sem_init(&b->sem, 0) != 0) {
    free(b);
    return NULL;
  }
  b->n = n;
  atomic_init(&b->running, 0);
  for (int i = 0; i < n; i++) {
    b->work[i].data = b;
    uv_queue_work(loop, &b->work[i], sp__block_work, sp__block_after);
  }
  if (sp_test_run_until(loop, sp__all_running, b, 5000) != 0) {
    sp_test_pool_release(b); /* frees itself once the items ran */
    return NULL;
  }
  return b;
}

void sp_test_pool_release(sp_test_pool_block_t *self) {
  if (self == NULL) return;
  for (int i = 0; i < self->n; i++)
    uv_sem_post(&self->sem);
}
