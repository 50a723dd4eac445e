/*
 * defer.h — run a callback on a later loop iteration.
 *
 * Completion callbacks must never run inside the call that started the
 * operation (libuv's rule, STYLE.md). Components whose shutdown has nothing
 * to wait for use this to report from the loop instead.
 *
 * sp_defer() allocates its handle, so it can fail. Where a failure would
 * leave a callback never called (a shutdown completion: the service would
 * wait for it forever), use sp_defer_embedded() with storage the caller
 * owns: it cannot fail.
 */
#ifndef SP_DEFER_H
#define SP_DEFER_H

#include <uv.h>

/**
 * Calls @p cb(@p arg) from @p loop on a later iteration. The handle it uses
 * is freed by itself. 0 or SP_ENOMEM (then nothing is scheduled).
 */
int sp_defer(uv_loop_t *loop, void (*cb)(void *arg), void *arg);

/** Storage for one sp_defer_embedded(); embed it in the object that defers. */
typedef struct sp_deferral_s {
  uv_timer_t timer;
  void (*cb)(void *arg);
  void *arg;
} sp_deferral_t;

/**
 * Calls @p cb(@p arg) from @p loop on a later iteration, like sp_defer(),
 * without allocating: it cannot fail. @p storage (caller-owned, typically a
 * member of the component) must stay valid and unused by another deferral
 * until @p cb runs; its timer handle is already closed then, so @p cb may
 * free @p storage (destroy the component). Loop thread only.
 */
void sp_defer_embedded(uv_loop_t *loop, sp_deferral_t *storage, void (*cb)(void *arg), void *arg);

#endif
