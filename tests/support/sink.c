/* sink.c — see sink.h. */
#include "support/sink.h"

#include "pipeline/error.h"

#include <stdlib.h>
#include <string.h>

static int sp__grow(void ***arr, size_t *cap, size_t n) {
  if (n < *cap)
    return 0;
  size_t c = *cap ? *cap * 2 : 16;
  void **a = realloc(*arr, c * sizeof(void *));
  if (a == NULL)
    return -1;
  *arr = a;
  *cap = c;
  return 0;
}

static int sp__sink_traces(sp_consumer_t *c, sp_traces_t *batch) {
  sp_sink_t *s = (sp_sink_t *)c;
  s->calls++;
  if (s->result != 0 || sp__grow((void ***)&s->traces, &s->cap_traces, s->n_traces) != 0) {
    s->refused_calls++;
    sp_traces_unref(batch);
    return s->result != 0 ? s->result : SP_ENOMEM;
  }
  s->traces[s->n_traces++] = batch;
  return 0;
}

static int sp__sink_profiles(sp_consumer_t *c, sp_profiles_t *batch) {
  sp_sink_t *s = (sp_sink_t *)c;
  s->calls++;
  if (s->result != 0 || sp__grow((void ***)&s->profiles, &s->cap_profiles, s->n_profiles) != 0) {
    s->refused_calls++;
    sp_profiles_unref(batch);
    return s->result != 0 ? s->result : SP_ENOMEM;
  }
  s->profiles[s->n_profiles++] = batch;
  return 0;
}

void sp_sink_init(sp_sink_t *sink) {
  memset(sink, 0, sizeof(*sink));
  sink->consumer.consume_traces = sp__sink_traces;
  sink->consumer.consume_profiles = sp__sink_profiles;
}

void sp_sink_clear(sp_sink_t *sink) {
  for (size_t i = 0; i < sink->n_traces; i++)
    sp_traces_unref(sink->traces[i]);
  for (size_t i = 0; i < sink->n_profiles; i++)
    sp_profiles_unref(sink->profiles[i]);
  sink->n_traces = sink->n_profiles = 0;
}

void sp_sink_free(sp_sink_t *sink) {
  sp_sink_clear(sink);
  free(sink->traces);
  free(sink->profiles);
  sink->traces = NULL;
  sink->profiles = NULL;
  sink->cap_traces = sink->cap_profiles = 0;
}

size_t sp_sink_profile_count(const sp_sink_t *sink) {
  size_t n = 0;
  for (size_t i = 0; i < sink->n_profiles; i++)
    n += sink->profiles[i]->n;
  return n;
}

sp_profile_t *sp_sink_profile(const sp_sink_t *sink, size_t i, sp_profiles_t **batch) {
  for (size_t b = 0; b < sink->n_profiles; b++) {
    if (i < sink->profiles[b]->n) {
      if (batch != NULL)
        *batch = sink->profiles[b];
      return &sink->profiles[b]->items[i];
    }
    i -= sink->profiles[b]->n;
  }
  return NULL;
}
