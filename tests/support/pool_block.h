/*
 * pool_block.h — holding libuv's thread pool still in tests.
 *
 * Work a component puts on the pool (uv_queue_work) normally finishes in
 * microseconds, too fast for a test to act while it is in flight. A block
 * occupies every pool thread with a work item that waits on a semaphore, so
 * whatever is queued after it waits too; the test then shuts a component
 * down, checks that its completion does not come early, and releases the
 * block.
 */
#ifndef SP_TEST_POOL_BLOCK_H
#define SP_TEST_POOL_BLOCK_H

#include <uv.h>

typedef struct sp_test_pool_block_s sp_test_pool_block_t;

/**
 * Queues one blocking item per pool thread (UV_THREADPOOL_SIZE, as libuv
 * reads it; 4 by default) and runs @p loop until all of them are running
 * (at most 5 s). Returns the block, or NULL (timeout or out of memory).
 */
sp_test_pool_block_t *sp_test_pool_block(uv_loop_t *loop);

/**
 * Lets the blocking items finish. The block frees itself once their
 * after_work callbacks ran on the loop (run the loop; sp_test_loop_finish()
 * does). Accepts NULL.
 */
void sp_test_pool_release(sp_test_pool_block_t *self);

#endif
