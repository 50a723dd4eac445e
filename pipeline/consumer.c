/*
 * consumer.c — fan-out and no-op consumers (see consumer.h).
 *
 * A fan-out hands the same batch to several consumers by adding references;
 * each downstream consumer sees a shared, read-only batch and copies it (via
 * sp_*_writable) if it needs to change it.
 */
#include "pipeline/consumer.h"

#include "pipeline/alloc.h"
#include "pipeline/error.h"

#include <string.h>

typedef struct sp_fanout_s {
  sp_consumer_t base; /* first: the fan-out is a consumer */
  size_t n;
  sp_consumer_t *next[];
} sp_fanout_t;

/* Permanent errors outrank retryable refusals, which outrank success. */
static int sp__worst(int a, int b) {
  if (a == 0)
    return b;
  if (b == 0)
    return a;
  if (a == SP_EAGAIN)
    return b;
  return a;
}

static int sp__fanout_traces(sp_consumer_t *c, sp_traces_t *batch) {
  sp_fanout_t *self = (sp_fanout_t *)c;
  int rc = 0;
  for (size_t i = 0; i + 1 < self->n; i++)
    sp_traces_ref(batch);
  for (size_t i = 0; i < self->n; i++)
    rc = sp__worst(rc, self->next[i]->consume_traces(self->next[i], batch));
  return rc;
}

static int sp__fanout_profiles(sp_consumer_t *c, sp_profiles_t *batch) {
  sp_fanout_t *self = (sp_fanout_t *)c;
  int rc = 0;
  for (size_t i = 0; i + 1 < self->n; i++)
    sp_profiles_ref(batch);
  for (size_t i = 0; i < self->n; i++)
    rc = sp__worst(rc, self->next[i]->consume_profiles(self->next[i], batch));
  return rc;
}

sp_consumer_t *sp_fanout_create(sp_consumer_t *const *consumers, size_t n) {
  if (n == 1)
    return consumers[0];
  sp_fanout_t *self = sp_calloc(1, sizeof(*self) + n * sizeof(self->next[0]));
  if (self == NULL)
    return NULL;
  self->base.consume_traces = sp__fanout_traces;
  self->base.consume_profiles = sp__fanout_profiles;
  self->n = n;
  if (n > 0)
    memcpy(self->next, consumers, n * sizeof(self->next[0]));
  return &self->base;
}

void sp_fanout_destroy(sp_consumer_t *fanout) {
  if (fanout != NULL && fanout->consume_traces == sp__fanout_traces)
    sp_free(fanout);
}

static int sp__nop_traces(sp_consumer_t *c, sp_traces_t *batch) {
  (void)c;
  sp_traces_unref(batch);
  return 0;
}

static int sp__nop_profiles(sp_consumer_t *c, sp_profiles_t *batch) {
  (void)c;
  sp_profiles_unref(batch);
  return 0;
}

static sp_consumer_t sp__nop = {sp__nop_traces, sp__nop_profiles};

sp_consumer_t *sp_consumer_nop(void) { return &sp__nop; }
