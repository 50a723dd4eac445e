/* defer.c — one-shot deferred callbacks on a zero timer (see defer.h). */
#include "pipeline/defer.h"

#include "pipeline/alloc.h"
#include "pipeline/error.h"

typedef struct sp_deferred_s {
  uv_timer_t timer;
  void (*cb)(void *arg);
  void *arg;
} sp_deferred_t;

static void sp__deferred_closed(uv_handle_t *h) { sp_free(h->data); }

static void sp__deferred_fire(uv_timer_t *t) {
  sp_deferred_t *d = t->data;
  uv_close((uv_handle_t *)t, sp__deferred_closed);
  d->cb(d->arg);
}

int sp_defer(uv_loop_t *loop, void (*cb)(void *arg), void *arg) {
  sp_deferred_t *d = sp_malloc(sizeof(*d));
  if (d == NULL)
    return SP_ENOMEM;
  d->cb = cb;
  d->arg = arg;
  uv_timer_init(loop, &d->timer);
  d->timer.data = d;
  uv_timer_start(&d->timer, sp__deferred_fire, 0, 0);
  return 0;
}

/* Embedded: the callback runs once the handle is closed, so it may free the storage. */
static void sp__embedded_closed(uv_handle_t *h) {
  sp_deferral_t *d = h->data;
  d->cb(d->arg);
}

static void sp__embedded_fire(uv_timer_t *t) { uv_close((uv_handle_t *)t, sp__embedded_closed); }

void sp_defer_embedded(uv_loop_t *loop, sp_deferral_t *storage, void (*cb)(void *arg), void *arg) {
  storage->cb = cb;
  storage->arg = arg;
  uv_timer_init(loop, &storage->timer); /* cannot fail on a live loop */
  storage->timer.data = storage;
  uv_timer_start(&storage->timer, sp__embedded_fire, 0, 0);
}
