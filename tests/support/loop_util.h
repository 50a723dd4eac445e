/*
 * loop_util.h — running a libuv loop in tests without sleep().
 *
 * Tests drive the loop until a condition holds or a deadline passes. The
 * condition is polled every few milliseconds as well as after every loop
 * iteration, so it may be set by another thread (a libcurl client thread)
 * without waking the loop.
 */
#ifndef SP_TEST_LOOP_UTIL_H
#define SP_TEST_LOOP_UTIL_H

#include <stdint.h>
#include <uv.h>

/**
 * Runs @p loop until @p cond(@p arg) returns non-zero or @p timeout_ms
 * passes. Returns 0 when the condition held, SP_ETIMEDOUT otherwise.
 * The helper's own timer is closed before returning (no handle is left).
 */
int sp_test_run_until(uv_loop_t *loop, int (*cond)(void *), void *arg, uint64_t timeout_ms);

/**
 * Ends a test's loop: runs it until nothing is active (at most
 * @p timeout_ms), prints any handle still open, and returns
 * uv_loop_close()'s result (0 when no handle leaked).
 */
int sp_test_loop_finish(uv_loop_t *loop, uint64_t timeout_ms);

#endif
