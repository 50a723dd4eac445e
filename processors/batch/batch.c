/*
 * batch processor — groups small batches into larger ones, as the
 * OpenTelemetry Collector's `batch` processor does: a batch goes out when it
 * holds `send_batch_size` items (spans, or profiles) or when `timeout` has
 * passed since its first item. `send_batch_max_size` caps a batch: data that
 * would overflow it starts a new batch (one incoming request larger than the
 * cap is sent on its own, unsplit).
 *
 * Traces are merged without decoding: protobuf defines the concatenation of
 * two encoded messages as their merge, so validated requests are appended
 * byte for byte. Profiles batches are merged by copying their profiles.
 * Data from different tenants (X-Scope-OrgID) is never mixed.
 *
 * Unlike the Collector's, this batcher never drops what it accepted: when
 * the next stage refuses a batch retryably, the batch is kept and retried
 * every `timeout`, and new data is refused retryably meanwhile, so the
 * refusal reaches the sender instead of becoming a loss. At shutdown it
 * flushes and keeps retrying until the drain deadline; what is still refused
 * then is logged and counted as dropped.
 *
 * One instance may sit in several pipelines; each pipeline gets its own
 * accumulator (attach), as the data of different pipelines must not mix.
 *
 * Memory: a batch leaves holding what it contains, not what it grew into.
 * Appending by doubling left a flushed traces batch with up to twice its
 * bytes allocated (an 8,192-span request of ~2.4 MB in a 4 MiB block) for
 * as long as it lived downstream — queued in an exporter, held by the
 * join — and the chain of doublings before it (256 B ... 4 MiB) churned
 * the heap. So the traces accumulator starts at the size the previous
 * batch suggests (its bytes per span times send_batch_size, at most twice
 * its size, plus one more request of room, at most SP__BATCH_MAX_RESERVE),
 * grows by doubling only past that, and the buffer is cut to its content
 * when the batch is built. A flushed profiles batch's item array is cut to
 * its profiles too. Between batches an accumulator holds no buffer at all
 * (the flush hands it over).
 */
#include "pipeline/alloc.h"
#include "pipeline/buf.h"
#include "pipeline/component.h"
#include "pipeline/defer.h"
#include "pipeline/error.h"
#include "pipeline/log.h"

#include <stddef.h>
#include <stdio.h>
#include <string.h>

/* The most a traces accumulator reserves up front from its estimate. */
#define SP__BATCH_MAX_RESERVE ((size_t)64 << 20)

typedef struct sp_batch_cfg_s {
  int64_t send_batch_size;
  int64_t send_batch_max_size;
  uint64_t timeout_ms;
} sp_batch_cfg_t;

static int sp__batch_validate(void *cfg, const sp_node_t *node, const char *path,
                              sp_errors_t *errs) {
  sp_batch_cfg_t *c = cfg;
  if (c->send_batch_max_size > 0 && c->send_batch_max_size < c->send_batch_size) {
    sp_errors_add(errs, node ? &node->mark : NULL, path,
                  "send_batch_max_size (%lld) must be 0 or at least send_batch_size (%lld)",
                  (long long)c->send_batch_max_size, (long long)c->send_batch_size);
    return SP_ECONFIG;
  }
  return 0;
}

static const sp_cfg_field_t sp__batch_fields[] = {
    {.key = "send_batch_size", .type = SP_CFG_INT,
     .offset = offsetof(sp_batch_cfg_t, send_batch_size), .def = "8192", .min = 1, .max = 1e9},
    {.key = "send_batch_max_size", .type = SP_CFG_INT,
     .offset = offsetof(sp_batch_cfg_t, send_batch_max_size), .def = "0", .min = 0, .max = 1e9},
    {.key = "timeout", .type = SP_CFG_DURATION, .offset = offsetof(sp_batch_cfg_t, timeout_ms),
     .def = "200ms", .min = 1, .max = 3600e3},
};
static const sp_cfg_schema_t sp__batch_schema = {sp__batch_fields, 3, sizeof(sp_batch_cfg_t),
                                                 sp__batch_validate};

typedef struct sp_batch_proc_s sp_batch_proc_t;

/* One pipeline's accumulator. */
typedef struct sp_batcher_s {
  sp_consumer_t input;
  sp_batch_proc_t *proc;
  unsigned signal;
  sp_consumer_t *next;
  uv_timer_t timer;
  bool timer_armed;
  /* traces being gathered */
  sp_buf_t bytes;
  size_t last_len, last_items; /* the previous traces batch: sizes the next buffer */
  /* profiles being gathered */
  sp_profiles_t *profiles;
  size_t items;
  char *tenant;
  char *authorization;
  /* a batch the next stage refused retryably, kept for retry */
  sp_traces_t *stalled_traces;
  sp_profiles_t *stalled_profiles;
  size_t stalled_items;
  struct sp_batcher_s *next_batcher;
} sp_batcher_t;

struct sp_batch_proc_s {
  sp_component_t base;
  const sp_batch_cfg_t *cfg;
  sp_batcher_t *batchers;
  bool started;
  bool shutting;
  size_t open_timers;
  sp_done_cb cb;
  void *cb_arg;
  uv_timer_t drain_timer;
  bool drain_timer_on;
  sp_deferral_t deferral; /* shutdown before start: reports without allocating */
  sp_metric_t *sent_batches, *refused, *dropped;
};

static bool sp__streq(const char *a, const char *b) {
  return (a == NULL && b == NULL) || (a != NULL && b != NULL && strcmp(a, b) == 0);
}

static bool sp__empty(const sp_batcher_t *b) { return b->items == 0 && b->bytes.len == 0; }

/* Hands a built batch to the next stage; keeps it when refused retryably. */
static void sp__send(sp_batcher_t *b, sp_traces_t *t, sp_profiles_t *p, size_t items) {
  sp_batch_proc_t *proc = b->proc;
  int rc;
  if (t != NULL) {
    sp_traces_ref(t);
    rc = sp_consume_traces(b->next, t);
  } else {
    sp_profiles_ref(p);
    rc = sp_consume_profiles(b->next, p);
  }
  if (rc == SP_EAGAIN) {
    b->stalled_traces = t;
    b->stalled_profiles = p;
    b->stalled_items = items;
    sp_metric_add(proc->refused, 1);
    return;
  }
  if (rc != 0) {
    sp_log_warn(proc->base.id, "next stage rejected a batch of %zu item(s): %s", items,
                sp_strerror(rc));
    sp_metric_add(proc->dropped, items);
  } else {
    sp_metric_add(proc->sent_batches, 1);
  }
  sp_traces_unref(t);
  sp_profiles_unref(p);
}

/* Turns the accumulator into a batch and sends it. */
static void sp__flush(sp_batcher_t *b) {
  if (sp__empty(b) || b->stalled_traces != NULL || b->stalled_profiles != NULL)
    return;
  size_t items = b->items;
  if (b->signal == SP_SIGNAL_TRACES) {
    size_t len, cap = b->bytes.cap;
    uint8_t *buf = sp_buf_steal(&b->bytes, &len);
    if (buf != NULL && cap > len) {
      /* Cut to the content (in place for glibc: the tail goes back to the
       * heap, or to the kernel for a mapped block); keep it when that fails. */
      uint8_t *fit = sp_realloc(buf, len);
      if (fit != NULL) buf = fit;
    }
    if (len > 0 && items > 0) {
      b->last_len = len;
      b->last_items = items;
    }
    sp_traces_t *t = buf != NULL ? sp_traces_wrap(buf, len, items) : NULL;
    if (t == NULL) {
      sp_log_error(b->proc->base.id, "out of memory: dropped %zu span(s)", items);
      sp_metric_add(b->proc->dropped, items);
    } else {
      if (b->tenant != NULL)
        t->meta.tenant = sp_arena_strdup(t->arena, b->tenant);
      if (b->authorization != NULL)
        t->meta.authorization = sp_arena_strdup(t->arena, b->authorization);
      sp__send(b, t, NULL, items);
    }
  } else {
    sp_profiles_t *p = b->profiles;
    b->profiles = NULL;
    if (p->cap > p->n && p->n > 0) {
      sp_profile_t *fit = sp_realloc(p->items, p->n * sizeof(*p->items));
      if (fit != NULL) {
        p->items = fit;
        p->cap = p->n;
      }
    }
    sp__send(b, NULL, p, items);
  }
  b->items = 0;
  sp_free(b->tenant);
  sp_free(b->authorization);
  b->tenant = b->authorization = NULL;
}

static void sp__retry_stalled(sp_batcher_t *b) {
  sp_traces_t *t = b->stalled_traces;
  sp_profiles_t *p = b->stalled_profiles;
  if (t == NULL && p == NULL)
    return;
  b->stalled_traces = NULL;
  b->stalled_profiles = NULL;
  sp__send(b, t, p, b->stalled_items);
}

static void sp__on_timer(uv_timer_t *timer) {
  sp_batcher_t *b = timer->data;
  b->timer_armed = false;
  sp__retry_stalled(b);
  sp__flush(b);
  if (b->stalled_traces != NULL || b->stalled_profiles != NULL) {
    uv_timer_start(&b->timer, sp__on_timer, b->proc->cfg->timeout_ms, 0);
    b->timer_armed = true;
  }
}

static void sp__arm(sp_batcher_t *b) {
  if (!b->timer_armed && b->proc->started && !b->proc->shutting) {
    uv_timer_start(&b->timer, sp__on_timer, b->proc->cfg->timeout_ms, 0);
    b->timer_armed = true;
  }
}

/* Starts a new accumulation when the incoming data does not belong with the current one. */
static int sp__prepare(sp_batcher_t *b, const sp_meta_t *meta, size_t incoming) {
  const sp_batch_cfg_t *cfg = b->proc->cfg;
  if (b->stalled_traces != NULL || b->stalled_profiles != NULL) {
    sp__retry_stalled(b);
    if (b->stalled_traces != NULL || b->stalled_profiles != NULL)
      return SP_EAGAIN;
  }
  if (!sp__empty(b) &&
      (!sp__streq(b->tenant, meta->tenant) || !sp__streq(b->authorization, meta->authorization) ||
       (cfg->send_batch_max_size > 0 &&
        b->items + incoming > (size_t)cfg->send_batch_max_size))) {
    sp__flush(b);
    if (b->stalled_traces != NULL || b->stalled_profiles != NULL)
      return SP_EAGAIN;
  }
  if (sp__empty(b)) {
    if ((meta->tenant != NULL && (b->tenant = sp_strdup(meta->tenant)) == NULL) ||
        (meta->authorization != NULL &&
         (b->authorization = sp_strdup(meta->authorization)) == NULL))
      return SP_ENOMEM;
  }
  return 0;
}

static void sp__after_add(sp_batcher_t *b) {
  if (b->items >= (size_t)b->proc->cfg->send_batch_size)
    sp__flush(b);
  if (!sp__empty(b) || b->stalled_traces != NULL || b->stalled_profiles != NULL)
    sp__arm(b);
}

/*
 * The room a new accumulation reserves before its first request of @p len
 * bytes: the previous batch's bytes per span times send_batch_size — but at
 * most twice the previous batch, so a trickle that leaves on the timeout
 * reserves little — plus one request (the one that reaches the size
 * overshoots it), capped. 0 when there is nothing to go by yet.
 */
static size_t sp__estimate(const sp_batcher_t *b, size_t len) {
  if (b->last_items == 0) return 0;
  double per_item = (double)b->last_len / (double)b->last_items;
  double full = per_item * (double)b->proc->cfg->send_batch_size;
  if (full > 2.0 * (double)b->last_len) full = 2.0 * (double)b->last_len;
  double est = full + (double)len;
  if (est > (double)SP__BATCH_MAX_RESERVE) est = (double)SP__BATCH_MAX_RESERVE;
  return est > (double)len ? (size_t)est : len;
}

static int sp__batch_traces(sp_consumer_t *c, sp_traces_t *batch) {
  sp_batcher_t *b = (sp_batcher_t *)c;
  int rc = b->proc->shutting ? SP_EAGAIN : sp__prepare(b, &batch->meta, batch->span_count);
  const uint8_t *bytes;
  size_t len;
  if (rc == 0 && (rc = sp_traces_encoded(batch, &bytes, &len)) == 0) {
    /* A failed reservation is not an error: the append below says whether memory is short. */
    if (b->bytes.cap == 0) (void)sp_buf_reserve(&b->bytes, sp__estimate(b, len));
    if (sp_buf_append(&b->bytes, bytes, len) != 0) {
      rc = SP_EAGAIN; /* memory is short: let the sender retry */
    } else {
      b->items += batch->span_count;
      sp__after_add(b);
    }
  }
  if (rc == SP_ENOMEM)
    rc = SP_EAGAIN;
  sp_traces_unref(batch);
  return rc;
}

/*
 * Copies every profile of @p batch into the accumulator, all or nothing:
 * when memory runs out part way, the profiles already appended are taken
 * back out (the sender retries the whole batch, which must not duplicate
 * them). Their arena memory stays until the accumulator is sent. 0 or
 * SP_ENOMEM.
 */
static int sp__append_profiles(sp_batcher_t *b, sp_profiles_t *batch) {
  sp_profiles_t *acc = b->profiles;
  size_t n_before = acc->n, items_before = b->items;
  for (size_t i = 0; i < batch->n; i++) {
    /* Bytes, side arrays and the wire index (so nothing downstream re-indexes). */
    if (sp_profiles_copy_in(acc, batch, &batch->items[i]) == NULL) goto fail;
    b->items++;
  }
  return 0;
fail:
  acc->n = n_before;
  b->items = items_before;
  return SP_ENOMEM;
}

static int sp__batch_profiles(sp_consumer_t *c, sp_profiles_t *batch) {
  sp_batcher_t *b = (sp_batcher_t *)c;
  int rc = b->proc->shutting ? SP_EAGAIN : sp__prepare(b, &batch->meta, batch->n);
  if (rc == 0 && b->profiles == NULL) {
    /* The first batch is adopted (a private copy when it is shared: later
     * ones are appended to it); later ones are copied into it. */
    rc = sp_profiles_writable(&batch);
    if (rc == 0) {
      b->profiles = batch;
      b->items = batch->n;
      sp__after_add(b);
      return 0;
    }
  } else if (rc == 0) {
    rc = sp__append_profiles(b, batch);
  }
  if (rc == 0) {
    sp__after_add(b);
  } else if (sp__empty(b)) {
    /* Nothing was accumulated: forget the meta sp__prepare recorded for it. */
    sp_free(b->tenant);
    sp_free(b->authorization);
    b->tenant = b->authorization = NULL;
  }
  if (rc == SP_ENOMEM)
    rc = SP_EAGAIN; /* memory is short: let the sender retry */
  sp_profiles_unref(batch);
  return rc;
}

static int sp__batch_create(const sp_create_settings_t *set, const void *config,
                            sp_component_t **out) {
  sp_batch_proc_t *self = sp_calloc(1, sizeof(*self));
  if (self == NULL)
    return SP_ENOMEM;
  self->cfg = config;
  char labels[256];
  snprintf(labels, sizeof(labels), "processor=\"%s\"", set->id);
  sp_telemetry_t *t = set->host->telemetry;
  self->sent_batches = sp_telemetry_counter(t, "spanprof_processor_batch_batches_sent_total",
                                            "Batches sent by the batch processor.", labels);
  self->refused = sp_telemetry_counter(t, "spanprof_processor_batch_refused_total",
                                       "Batches the next stage refused retryably.", labels);
  self->dropped = sp_telemetry_counter(t, "spanprof_processor_dropped_items_total",
                                       "Items a processor had to drop.", labels);
  *out = &self->base;
  return 0;
}

static int sp__batch_attach(sp_component_t *base, unsigned signal, sp_consumer_t *next,
                            sp_consumer_t **input) {
  sp_batch_proc_t *self = (sp_batch_proc_t *)base;
  sp_batcher_t *b = sp_calloc(1, sizeof(*b));
  if (b == NULL)
    return SP_ENOMEM;
  b->input.consume_traces = sp__batch_traces;
  b->input.consume_profiles = sp__batch_profiles;
  b->proc = self;
  b->signal = signal;
  b->next = next;
  sp_buf_init(&b->bytes, 0);
  b->next_batcher = self->batchers;
  self->batchers = b;
  *input = &b->input;
  return 0;
}

static int sp__batch_start(sp_component_t *base) {
  sp_batch_proc_t *self = (sp_batch_proc_t *)base;
  /* Handles are opened here, not in attach, so destroy-without-start holds none. */
  for (sp_batcher_t *b = self->batchers; b != NULL; b = b->next_batcher) {
    uv_timer_init(base->host->loop, &b->timer);
    b->timer.data = b;
    self->open_timers++;
  }
  self->started = true;
  return 0;
}

static void sp__timer_closed(uv_handle_t *h) {
  sp_batcher_t *b = h->data;
  sp_batch_proc_t *self = b->proc;
  if (--self->open_timers == 0 && !self->drain_timer_on)
    self->cb(self->cb_arg);
}

static void sp__drain_closed(uv_handle_t *h) {
  sp_batch_proc_t *self = h->data;
  self->drain_timer_on = false;
  if (self->open_timers == 0)
    self->cb(self->cb_arg);
}

/* Flushes, retries what is refused until the deadline, then closes the timers. */
static void sp__drain_step(uv_timer_t *t) {
  sp_batch_proc_t *self = t->data;
  bool pending = false;
  for (sp_batcher_t *b = self->batchers; b != NULL; b = b->next_batcher) {
    sp__retry_stalled(b);
    sp__flush(b);
    pending = pending || b->stalled_traces != NULL || b->stalled_profiles != NULL;
  }
  uint64_t now = uv_now(self->base.host->loop);
  if (pending && now < self->base.host->drain_deadline) {
    uint64_t wait = self->base.host->drain_deadline - now;
    uv_timer_start(t, sp__drain_step, wait < 100 ? wait : 100, 0);
    return;
  }
  for (sp_batcher_t *b = self->batchers; b != NULL && self->started; b = b->next_batcher) {
    if (b->stalled_traces != NULL || b->stalled_profiles != NULL) {
      sp_log_error(self->base.id, "shutdown deadline passed: dropped %zu item(s) the next "
                                  "stage kept refusing",
                   b->stalled_items);
      sp_metric_add(self->dropped, b->stalled_items);
      sp_traces_unref(b->stalled_traces);
      sp_profiles_unref(b->stalled_profiles);
      b->stalled_traces = NULL;
      b->stalled_profiles = NULL;
    }
    uv_timer_stop(&b->timer);
    uv_close((uv_handle_t *)&b->timer, sp__timer_closed);
  }
  uv_close((uv_handle_t *)t, sp__drain_closed);
}

static void sp__batch_shutdown(sp_component_t *base, sp_done_cb cb, void *arg) {
  sp_batch_proc_t *self = (sp_batch_proc_t *)base;
  if (self->shutting)
    return;
  self->shutting = true;
  if (!self->started) {
    sp_defer_embedded(base->host->loop, &self->deferral, cb, arg);
    return;
  }
  self->cb = cb;
  self->cb_arg = arg;
  uv_timer_init(base->host->loop, &self->drain_timer);
  self->drain_timer.data = self;
  self->drain_timer_on = true;
  uv_timer_start(&self->drain_timer, sp__drain_step, 0, 0);
}

static void sp__batch_destroy(sp_component_t *base) {
  sp_batch_proc_t *self = (sp_batch_proc_t *)base;
  if (self == NULL)
    return;
  sp_batcher_t *b = self->batchers;
  while (b != NULL) {
    sp_batcher_t *n = b->next_batcher;
    sp_buf_free(&b->bytes);
    sp_profiles_unref(b->profiles);
    sp_traces_unref(b->stalled_traces);
    sp_profiles_unref(b->stalled_profiles);
    sp_free(b->tenant);
    sp_free(b->authorization);
    sp_free(b);
    b = n;
  }
  sp_free(self);
}

const sp_component_def_t sp_processor_batch = {
    .kind = SP_KIND_PROCESSOR,
    .type = "batch",
    .signals = SP_SIGNAL_TRACES | SP_SIGNAL_PROFILES,
    .stability = "beta",
    .description = "groups data into larger batches by size and time, without loss",
    .schema = &sp__batch_schema,
    .config_size = sizeof(sp_batch_cfg_t),
    .create = sp__batch_create,
    .attach = sp__batch_attach,
    .start = sp__batch_start,
    .shutdown = sp__batch_shutdown,
    .destroy = sp__batch_destroy,
};
