/*
 * consumer.h — the contract between pipeline stages.
 *
 * A consumer accepts batches of one or both signals. The call is synchronous
 * acceptance, as in the OpenTelemetry Collector: by the time it returns, the
 * consumer has either taken responsibility for the data (queued, held for a
 * join, or passed on) and returns 0, or refused it. A refusal is retryable
 * (SP_EAGAIN: a queue is full, the sender should retry later — receivers
 * answer HTTP 503 / gRPC UNAVAILABLE) or permanent (any other negative code:
 * the data is invalid — receivers answer 400 / INVALID_ARGUMENT).
 *
 * Ownership: the call always takes the caller's reference to the batch,
 * whatever it returns. Everything runs on the loop thread.
 */
#ifndef SP_CONSUMER_H
#define SP_CONSUMER_H

#include "pipeline/batch.h"

typedef struct sp_consumer_s sp_consumer_t;

struct sp_consumer_s {
  /** Takes @p batch's reference. 0, SP_EAGAIN (retryable) or a permanent error. */
  int (*consume_traces)(sp_consumer_t *self, sp_traces_t *batch);
  /** Takes @p batch's reference. 0, SP_EAGAIN (retryable) or a permanent error. */
  int (*consume_profiles)(sp_consumer_t *self, sp_profiles_t *batch);
};

/** Forwards traces to @p c (which must accept traces); takes @p b's reference. */
static inline int sp_consume_traces(sp_consumer_t *c, sp_traces_t *b) {
  return c->consume_traces(c, b);
}

/** Forwards profiles to @p c; takes @p b's reference. */
static inline int sp_consume_profiles(sp_consumer_t *c, sp_profiles_t *b) {
  return c->consume_profiles(c, b);
}

/**
 * A fan-out consumer passing every batch to each of @p n consumers (adding
 * n-1 references: the batch becomes read-only for them). The result is the
 * most severe of the results: a permanent error over SP_EAGAIN over 0.
 * With n == 1 the fan-out is bypassed by sp_fanout_create, which returns the
 * single consumer itself. The array is copied. NULL on OOM.
 */
sp_consumer_t *sp_fanout_create(sp_consumer_t *const *consumers, size_t n);
/** Frees a fan-out made by sp_fanout_create (no-op for a bypassed single consumer). */
void sp_fanout_destroy(sp_consumer_t *fanout);

/** A consumer that accepts and drops everything (tests, conformance). Static; never freed. */
sp_consumer_t *sp_consumer_nop(void);

#endif
