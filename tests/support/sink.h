/*
 * sink.h — a consumer that records what reaches it, for receiver and
 * processor tests (STYLE.md's "sink consumer that records batches").
 *
 * It keeps a reference to every batch it accepts, in arrival order, and can
 * be told to refuse (return a chosen code) instead, as a full queue or an
 * invalid-data downstream would. Single-threaded: call it on the loop
 * thread, like any consumer.
 */
#ifndef SP_TEST_SINK_H
#define SP_TEST_SINK_H

#include "pipeline/consumer.h"

#include <stddef.h>

typedef struct sp_sink_s {
  sp_consumer_t consumer; /* first: pass &sink->consumer as a consumer */
  sp_traces_t **traces;
  size_t n_traces, cap_traces;
  sp_profiles_t **profiles;
  size_t n_profiles, cap_profiles;
  int result;           /* what consume returns (0: accept and record) */
  size_t calls;         /* consume calls, refused ones included */
  size_t refused_calls; /* calls answered with result != 0 */
} sp_sink_t;

/** Initialises an accepting, empty sink. */
void sp_sink_init(sp_sink_t *sink);

/** Drops every recorded batch (keeps the sink usable and its result). */
void sp_sink_clear(sp_sink_t *sink);

/** Drops the recorded batches and frees the arrays. */
void sp_sink_free(sp_sink_t *sink);

/** Total profiles across the recorded profiles batches. */
size_t sp_sink_profile_count(const sp_sink_t *sink);

/** The @p i-th profile across recorded batches (in order), or NULL; *@p batch gets its batch. */
sp_profile_t *sp_sink_profile(const sp_sink_t *sink, size_t i, sp_profiles_t **batch);

#endif
