/*
 * defer.h — run a callback on a later loop iteration.
 *
 * Completion callbacks must never run inside the call that started the
 * operation (libuv's rule, STYLE.md). Components whose shutdown has nothing
 * to wait for use this to report from the loop instead.
 */
#ifndef SP_DEFER_H
#define SP_DEFER_H

#include <uv.h>

/**
 * Calls @p cb(@p arg) from @p loop on a later iteration. The handle it uses
 * is freed by itself. 0 or SP_ENOMEM (then nothing is scheduled).
 */
int sp_defer(uv_loop_t *loop, void (*cb)(void *arg), void *arg);

#endif
