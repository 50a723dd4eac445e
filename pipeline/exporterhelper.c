/*
 * exporterhelper.c — bounded sending queue, retry with backoff and drain on
 * shutdown, shared by the network exporters (see exporterhelper.h).
 *
 * Shape: a FIFO of entries (one per accepted batch) and a fixed array of
 * num_consumers slots. A slot takes the head entry and keeps it until the
 * entry is done — sent, failed permanently, or given up — arming its own
 * uv_timer_t between attempts. Every state change goes through pump(),
 * which fills free slots from the queue, and check_drained(), which closes
 * the handles once a shutdown has nothing left to wait for.
 *
 * Re-entrancy: a send may fail synchronously, which finishes its entry and
 * frees its slot while pump() is still looping; the `pumping` flag turns
 * the nested pump() into a no-op and the outer loop picks up the slot. A
 * sender's done callback never runs inside send (the sender contract), so
 * a slot is never finished twice.
 */
#include "pipeline/exporterhelper.h"

#include "pipeline/alloc.h"
#include "pipeline/defer.h"
#include "pipeline/error.h"
#include "pipeline/log.h"
#include "pipeline/satmath.h"

#include <assert.h>
#include <stdio.h>
#include <string.h>

/* ---- configuration ---------------------------------------------------------- */

static const char *const sp__sizers[] = {"requests", "items", "bytes", NULL};

static const sp_cfg_field_t sp__queue_fields[] = {
    {.key = "enabled",
     .type = SP_CFG_BOOL,
     .offset = offsetof(sp_exporterhelper_queue_cfg_t, enabled),
     .def = "true"},
    {.key = "num_consumers",
     .type = SP_CFG_INT,
     .offset = offsetof(sp_exporterhelper_queue_cfg_t, num_consumers),
     .def = "10",
     .min = 1,
     .max = 10000},
    {.key = "queue_size",
     .type = SP_CFG_INT,
     .offset = offsetof(sp_exporterhelper_queue_cfg_t, queue_size),
     .def = "1000",
     .min = 1,
     .max = 1e12},
    {.key = "sizer",
     .type = SP_CFG_ENUM,
     .offset = offsetof(sp_exporterhelper_queue_cfg_t, sizer),
     .def = "requests",
     .enum_values = sp__sizers},
    {.key = "max_queued_bytes",
     .type = SP_CFG_SIZE,
     .offset = offsetof(sp_exporterhelper_queue_cfg_t, max_queued_bytes),
     .def = "64MiB"},
};

/*
 * With `sizer: bytes` the default queue_size (1000, meant as requests) would
 * be a 1000-byte queue, i.e. one request at a time: unless queue_size is
 * given, the byte bound is max_queued_bytes (or its default when that is 0).
 */
static int sp__queue_validate(void *cfg, const sp_node_t *node, const char *path,
                              sp_errors_t *errs) {
  (void)path;
  (void)errs;
  sp_exporterhelper_queue_cfg_t *q = cfg;
  if (q->sizer == SP_EXPORTERHELPER_SIZER_BYTES && sp_node_get(node, "queue_size") == NULL) {
    uint64_t b =
        q->max_queued_bytes > 0 ? q->max_queued_bytes : SP_EXPORTERHELPER_DEFAULT_MAX_QUEUED_BYTES;
    q->queue_size = b > (uint64_t)INT64_MAX ? INT64_MAX : (int64_t)b;
  }
  return 0;
}

const sp_cfg_schema_t sp_exporterhelper_queue_schema = {
    .fields = sp__queue_fields,
    .n_fields = sizeof(sp__queue_fields) / sizeof(sp__queue_fields[0]),
    .size = sizeof(sp_exporterhelper_queue_cfg_t),
    .validate = sp__queue_validate,
};

const char *const sp_exporterhelper_compressions[] = {"gzip", "none", NULL};

static const sp_cfg_field_t sp__compression_params_fields[] = {
    {.key = "level",
     .type = SP_CFG_INT,
     .offset = offsetof(sp_compression_params_t, level),
     .def = "-1",
     .min = -1,
     .max = 9},
};

const sp_cfg_schema_t sp_exporterhelper_compression_params_schema = {
    .fields = sp__compression_params_fields,
    .n_fields = 1,
    .size = sizeof(sp_compression_params_t),
};

static int sp__retry_validate(void *cfg, const sp_node_t *node, const char *path,
                              sp_errors_t *errs) {
  const sp_exporterhelper_retry_cfg_t *r = cfg;
  if (!r->enabled || r->initial_interval_ms > 0) return 0;
  const sp_node_t *v = sp_node_get(node, "initial_interval");
  sp_errors_add(errs,
                v != NULL      ? &v->mark
                : node != NULL ? &node->mark
                               : NULL,
                path, "initial_interval must be greater than 0 when retries are enabled");
  return SP_ECONFIG;
}

static const sp_cfg_field_t sp__retry_fields[] = {
    {.key = "enabled",
     .type = SP_CFG_BOOL,
     .offset = offsetof(sp_exporterhelper_retry_cfg_t, enabled),
     .def = "true"},
    {.key = "initial_interval",
     .type = SP_CFG_DURATION,
     .offset = offsetof(sp_exporterhelper_retry_cfg_t, initial_interval_ms),
     .def = "5s"},
    {.key = "max_interval",
     .type = SP_CFG_DURATION,
     .offset = offsetof(sp_exporterhelper_retry_cfg_t, max_interval_ms),
     .def = "30s"},
    {.key = "max_elapsed_time",
     .type = SP_CFG_DURATION,
     .offset = offsetof(sp_exporterhelper_retry_cfg_t, max_elapsed_time_ms),
     .def = "300s"},
    {.key = "multiplier",
     .type = SP_CFG_DOUBLE,
     .offset = offsetof(sp_exporterhelper_retry_cfg_t, multiplier),
     .def = "1.5",
     .min = 1,
     .max = 1000},
    {.key = "randomization_factor",
     .type = SP_CFG_DOUBLE,
     .offset = offsetof(sp_exporterhelper_retry_cfg_t, randomization_factor),
     .def = "0.5",
     .min = 0,
     .max = 1},
};

const sp_cfg_schema_t sp_exporterhelper_retry_schema = {
    .fields = sp__retry_fields,
    .n_fields = sizeof(sp__retry_fields) / sizeof(sp__retry_fields[0]),
    .size = sizeof(sp_exporterhelper_retry_cfg_t),
    .validate = sp__retry_validate,
};

static const sp_exporterhelper_queue_cfg_t sp__queue_defaults = {
    true, 10, 1000, SP_EXPORTERHELPER_SIZER_REQUESTS, SP_EXPORTERHELPER_DEFAULT_MAX_QUEUED_BYTES};
static const sp_exporterhelper_retry_cfg_t sp__retry_defaults = {true,   5000, 30000,
                                                                 300000, 1.5,  0.5};

/* ---- state ------------------------------------------------------------------ */

typedef struct sp__eh_entry_s {
  sp_exporterhelper_item_t item;
  struct sp__eh_entry_s *next;
} sp__eh_entry_t;

typedef struct sp__eh_slot_s {
  sp_exporterhelper_t *owner;
  uv_timer_t timer;
  sp__eh_entry_t *cur;  /* NULL when idle */
  bool sending;         /* a send is in flight */
  bool waiting;         /* the backoff timer is armed */
  uint64_t first_ms;    /* loop time of the first attempt */
  uint64_t interval_ms; /* current backoff interval; 0 before the first retry */
  uint64_t due_ms;      /* when the armed timer fires */
  char last_error[256];
} sp__eh_slot_t;

/* Per-signal counters; index 0 traces, 1 profiles. */
typedef struct sp__eh_metrics_s {
  sp_metric_t *sent;
  sp_metric_t *failed;
  sp_metric_t *enqueue_failed;
} sp__eh_metrics_t;

struct sp_exporterhelper_s {
  sp_consumer_t input;
  char *id;
  sp_host_t *host;
  uv_loop_t *loop;
  sp_exporterhelper_queue_cfg_t qcfg;
  sp_exporterhelper_retry_cfg_t rcfg;
  const sp_exporterhelper_sender_t *sender;
  void *sender_ctx;

  sp__eh_slot_t *slots;
  size_t n_slots;
  sp__eh_entry_t *head, *tail;
  size_t queued_requests, queued_items, queued_bytes;

  uv_timer_t drain_timer;
  uint64_t deadline;
  size_t open_handles;
  bool started, shutting, expired, cancelled, closing, pumping;
  bool sender_closed;     /* sender->close has been called */
  sp_deferral_t deferral; /* shutdown before start: reports without allocating */
  void (*shutdown_cb)(void *arg);
  void *shutdown_arg;

  uint64_t rng;
  uint64_t refusals;         /* refusals since the last refusal log line */
  uint64_t last_refusal_log; /* loop time of that line */

  sp__eh_metrics_t m[2];
  sp_metric_t *retries;
  sp_metric_t *queue_size;
  sp_metric_t *queue_capacity;
  sp_metric_t *queue_bytes;
  sp_metric_t *queue_bytes_capacity;
};

#define SP__EH_FROM_INPUT(c)                                                                       \
  ((sp_exporterhelper_t *)((char *)(c)-offsetof(sp_exporterhelper_t, input)))

static int sp__sig(unsigned signal) { return signal == SP_SIGNAL_PROFILES ? 1 : 0; }
static const char *sp__unit(unsigned signal) {
  return signal == SP_SIGNAL_PROFILES ? "profiles" : "spans";
}

/* What one request weighs in the queue's sizer unit. */
static size_t sp__units(const sp_exporterhelper_t *self, const sp_exporterhelper_item_t *item) {
  switch (self->qcfg.sizer) {
  case SP_EXPORTERHELPER_SIZER_ITEMS: return item->count;
  case SP_EXPORTERHELPER_SIZER_BYTES: return item->bytes;
  default: return 1;
  }
}

/* The queue's occupancy in its sizer unit. */
static size_t sp__used(const sp_exporterhelper_t *self) {
  switch (self->qcfg.sizer) {
  case SP_EXPORTERHELPER_SIZER_ITEMS: return self->queued_items;
  case SP_EXPORTERHELPER_SIZER_BYTES: return self->queued_bytes;
  default: return self->queued_requests;
  }
}

static void sp__update_gauge(sp_exporterhelper_t *self) {
  sp_metric_set(self->queue_size, sp__used(self));
  sp_metric_set(self->queue_bytes, self->queued_bytes);
}

size_t sp_exporterhelper_traces_bytes(const sp_traces_t *batch) {
  if (batch->raw != NULL) return batch->raw_len;
  if (batch->enc != NULL) return batch->enc_len;
  return sp_arena_bytes(batch->arena); /* decoded and changed: what it holds */
}

size_t sp_exporterhelper_profiles_bytes(const sp_profiles_t *batch) {
  size_t n = 0;
  for (size_t i = 0; i < batch->n; i++) {
    /* A profile held only decoded: the arena (which also holds every raw
     * profile) is the honest measure of the whole batch. */
    if (batch->items[i].raw == NULL) return sp_arena_bytes(batch->arena);
    n += batch->items[i].raw_len;
  }
  return n;
}

/* xorshift64*: jitter only, no need for quality beyond "not in lockstep". */
static double sp__rand01(sp_exporterhelper_t *self) {
  uint64_t x = self->rng;
  x ^= x >> 12;
  x ^= x << 25;
  x ^= x >> 27;
  self->rng = x;
  return (double)((x * 0x2545F4914F6CDD1DULL) >> 11) / 9007199254740992.0;
}

static void sp__count_failed(sp_exporterhelper_t *self, const sp_exporterhelper_item_t *item,
                             size_t n) {
  sp_metric_add(self->m[sp__sig(item->signal)].failed, n);
}

/* Releases an entry for good: the sender's state, the batch reference, the entry. */
static void sp__entry_free(sp_exporterhelper_t *self, sp__eh_entry_t *e) {
  if (self->sender->release != NULL) self->sender->release(self->sender_ctx, &e->item);
  if (e->item.signal == SP_SIGNAL_PROFILES)
    sp_profiles_unref(e->item.profiles);
  else
    sp_traces_unref(e->item.traces);
  sp_free(e);
}

static sp__eh_entry_t *sp__pop(sp_exporterhelper_t *self) {
  sp__eh_entry_t *e = self->head;
  if (e == NULL) return NULL;
  self->head = e->next;
  if (self->head == NULL) self->tail = NULL;
  e->next = NULL;
  self->queued_requests--;
  self->queued_items -= e->item.count;
  self->queued_bytes -= e->item.bytes;
  return e;
}

/* Drops everything still queued, counting it as failed; logs one line saying @p why. */
static void sp__drop_queue(sp_exporterhelper_t *self, const char *why) {
  size_t n[2] = {0, 0}, reqs = 0;
  sp__eh_entry_t *e;
  while ((e = sp__pop(self)) != NULL) {
    n[sp__sig(e->item.signal)] += e->item.count;
    sp__count_failed(self, &e->item, e->item.count);
    reqs++;
    sp__entry_free(self, e);
  }
  sp__update_gauge(self);
  if (reqs > 0)
    sp_log_error(self->id, "%s: dropping %zu queued request(s): %zu spans and %zu profiles", why,
                 reqs, n[0], n[1]);
}

static size_t sp__busy(const sp_exporterhelper_t *self) {
  size_t n = 0;
  for (size_t i = 0; i < self->n_slots; i++)
    n += self->slots[i].cur != NULL;
  return n;
}

static sp__eh_slot_t *sp__free_slot(sp_exporterhelper_t *self) {
  for (size_t i = 0; i < self->n_slots; i++)
    if (self->slots[i].cur == NULL) return &self->slots[i];
  return NULL;
}

static void sp__attempt(sp__eh_slot_t *s);
static void sp__pump(sp_exporterhelper_t *self);
static void sp__check_drained(sp_exporterhelper_t *self);

/* The slot's entry is done (its outcome already counted and logged). */
static void sp__finish(sp__eh_slot_t *s) {
  sp_exporterhelper_t *self = s->owner;
  sp__eh_entry_t *e = s->cur;
  s->cur = NULL;
  s->sending = s->waiting = false;
  s->last_error[0] = '\0';
  sp__entry_free(self, e);
  sp__pump(self);
  sp__check_drained(self);
}

static void sp__give_up(sp__eh_slot_t *s, const char *why) {
  sp_exporterhelper_t *self = s->owner;
  const sp_exporterhelper_item_t *item = &s->cur->item;
  sp_log_error(self->id,
               "giving up on %zu %s after %u attempt(s) over %llu ms (%s); last error: %s",
               item->count, sp__unit(item->signal), item->attempt + 1,
               (unsigned long long)(uv_now(self->loop) - s->first_ms), why,
               s->last_error[0] ? s->last_error : "unknown");
  sp__count_failed(self, item, item->count);
  sp__finish(s);
}

/* The next backoff delay, as the Collector computes it; advances the interval. */
static uint64_t sp__next_delay(sp_exporterhelper_t *self, sp__eh_slot_t *s) {
  const sp_exporterhelper_retry_cfg_t *r = &self->rcfg;
  if (s->interval_ms == 0) s->interval_ms = r->initial_interval_ms;
  double iv = (double)s->interval_ms;
  double delay = iv;
  if (r->randomization_factor > 0) {
    double delta = r->randomization_factor * iv;
    delay = (iv - delta) + sp__rand01(self) * (2 * delta);
  }
  double next = iv * r->multiplier;
  if (next > (double)r->max_interval_ms) next = (double)r->max_interval_ms;
  if (next < iv && iv <= (double)r->max_interval_ms) next = iv;
  s->interval_ms = next < 1 ? 1 : (uint64_t)next;
  return delay < 0 ? 0 : (uint64_t)(delay + 0.5);
}

/*
 * The server's requested delay (Retry-After, RetryInfo), bounded. Parsers
 * saturate at UINT64_MAX, and a slot waiting that long would be pinned for
 * good (enough of them and the pipeline refuses everything). With a
 * max_elapsed_time budget nothing more is needed: a delay past the budget
 * gives the item up at once (the saturating sum in the caller). Retrying
 * forever (max_elapsed_time 0), the delay is capped at
 * max(max_interval, SP__SERVER_DELAY_CEILING_MS): the server is still
 * honoured for any sane value, and a slot is never held longer than that.
 */
#define SP__SERVER_DELAY_CEILING_MS 3600000ULL /* one hour */

static uint64_t sp__server_delay(const sp_exporterhelper_t *self, uint64_t asked_ms) {
  if (self->rcfg.max_elapsed_time_ms > 0) return asked_ms;
  uint64_t ceiling = self->rcfg.max_interval_ms > SP__SERVER_DELAY_CEILING_MS
                         ? self->rcfg.max_interval_ms
                         : SP__SERVER_DELAY_CEILING_MS;
  return asked_ms < ceiling ? asked_ms : ceiling;
}

static void sp__retry_fire(uv_timer_t *t) {
  sp__eh_slot_t *s = t->data;
  s->waiting = false;
  s->cur->item.attempt++;
  sp__attempt(s);
}

static void sp__handle_result(sp__eh_slot_t *s, const sp_exporterhelper_result_t *res) {
  sp_exporterhelper_t *self = s->owner;
  sp_exporterhelper_item_t *item = &s->cur->item;
  const sp__eh_metrics_t *m = &self->m[sp__sig(item->signal)];
  const char *msg = res->message != NULL && res->message[0] ? res->message : NULL;

  if (res->err == 0) {
    size_t rejected = res->rejected < item->count ? res->rejected : item->count;
    if (rejected > 0 || msg != NULL)
      sp_log_warn(self->id, "backend accepted the request partially: %zu of %zu %s rejected%s%s",
                  rejected, item->count, sp__unit(item->signal), msg ? ": " : "", msg ? msg : "");
    sp_metric_add(m->sent, item->count - rejected);
    sp_metric_add(m->failed, rejected);
    sp__finish(s);
    return;
  }
  snprintf(s->last_error, sizeof(s->last_error), "%s%s%s", sp_strerror(res->err), msg ? ": " : "",
           msg ? msg : "");
  if (self->expired) {
    sp__give_up(s, "the shutdown deadline passed");
    return;
  }
  if (!sp_err_retryable(res->err)) {
    sp_log_error(self->id, "dropping %zu %s: permanent error (not retried): %s", item->count,
                 sp__unit(item->signal), s->last_error);
    sp_metric_add(m->failed, item->count);
    sp__finish(s);
    return;
  }
  if (!self->rcfg.enabled) {
    sp__give_up(s, "retry_on_failure is disabled");
    return;
  }
  uint64_t delay = sp__next_delay(self, s);
  uint64_t server = sp__server_delay(self, res->retry_after_ms);
  if (server > delay) delay = server;
  uint64_t now = uv_now(self->loop);
  uint64_t elapsed = sp_sat_sub_u64(now, s->first_ms);
  /* Saturating sums: a huge delay must read as "too late", never wrap. */
  if (self->rcfg.max_elapsed_time_ms > 0 &&
      sp_sat_add_u64(elapsed, delay) > self->rcfg.max_elapsed_time_ms) {
    sp__give_up(s, "max_elapsed_time reached");
    return;
  }
  if (self->shutting && sp_sat_add_u64(now, delay) > self->deadline) {
    sp__give_up(s, "shutting down and the next retry would come after the drain deadline");
    return;
  }
  sp_log_info(self->id, "sending %zu %s failed (attempt %u), retrying in %llu ms: %s", item->count,
              sp__unit(item->signal), item->attempt + 1, (unsigned long long)delay, s->last_error);
  sp_metric_add(self->retries, 1);
  s->waiting = true;
  s->due_ms = sp_sat_add_u64(now, delay);
  uv_timer_start(&s->timer, sp__retry_fire, delay, 0);
}

static void sp__done(void *token, const sp_exporterhelper_result_t *res) {
  sp__eh_slot_t *s = token;
  assert(s->cur != NULL && s->sending && "send completed twice or for an idle slot");
  s->sending = false;
  sp__handle_result(s, res);
}

static void sp__attempt(sp__eh_slot_t *s) {
  sp_exporterhelper_t *self = s->owner;
  sp_exporterhelper_item_t *item = &s->cur->item;
  s->sending = true;
  int rc = self->sender->send(self->sender_ctx, item, sp__done, s);
  if (rc != 0) {
    sp_exporterhelper_result_t res = {.err = rc};
    s->sending = false;
    sp__handle_result(s, &res);
  }
}

static void sp__pump(sp_exporterhelper_t *self) {
  if (self->pumping || !self->started || self->expired || self->closing) return;
  self->pumping = true;
  sp__eh_slot_t *s;
  while (self->head != NULL && (s = sp__free_slot(self)) != NULL) {
    s->cur = sp__pop(self);
    s->interval_ms = 0;
    s->first_ms = uv_now(self->loop);
    sp__attempt(s);
  }
  self->pumping = false;
  sp__update_gauge(self);
}

/* ---- consumer --------------------------------------------------------------- */

static void sp__refused(sp_exporterhelper_t *self, unsigned signal, size_t count, const char *why) {
  sp_metric_add(self->m[sp__sig(signal)].enqueue_failed, count);
  self->refusals++;
  uint64_t now = uv_now(self->loop);
  if (self->last_refusal_log == 0 || now - self->last_refusal_log >= 10000) {
    sp_log_warn(self->id, "refusing %zu %s (%s); %llu refusal(s) since the last report", count,
                sp__unit(signal), why, (unsigned long long)self->refusals);
    self->last_refusal_log = now == 0 ? 1 : now;
    self->refusals = 0;
  }
}

static int sp__consume(sp_exporterhelper_t *self, unsigned signal, void *batch, size_t count,
                       size_t bytes) {
  const char *why = NULL;
  if (self->shutting) {
    why = "the exporter is shutting down";
  } else if (self->qcfg.enabled) {
    sp_exporterhelper_item_t probe = {.count = count, .bytes = bytes};
    /* A request larger than the whole queue (or its byte cap) is still taken
     * into an empty queue; refusing it would refuse it forever. */
    if (self->queued_requests > 0 &&
        sp_sat_add_u64(sp__used(self), sp__units(self, &probe)) > (uint64_t)self->qcfg.queue_size)
      why = "sending queue is full";
    else if (self->queued_requests > 0 && self->qcfg.max_queued_bytes > 0 &&
             sp_sat_add_u64(self->queued_bytes, bytes) > self->qcfg.max_queued_bytes)
      why = "sending queue is full (max_queued_bytes)";
  } else if (!self->started || sp__free_slot(self) == NULL) {
    why = "all senders are busy and the sending queue is disabled";
  }
  sp__eh_entry_t *e = why == NULL ? sp_calloc(1, sizeof(*e)) : NULL;
  if (why == NULL && e == NULL) why = "out of memory";
  if (why != NULL) {
    sp__refused(self, signal, count, why);
    if (signal == SP_SIGNAL_PROFILES)
      sp_profiles_unref(batch);
    else
      sp_traces_unref(batch);
    return SP_EAGAIN;
  }
  e->item.signal = signal;
  if (signal == SP_SIGNAL_PROFILES)
    e->item.profiles = batch;
  else
    e->item.traces = batch;
  e->item.count = count;
  e->item.bytes = bytes;
  if (self->tail != NULL)
    self->tail->next = e;
  else
    self->head = e;
  self->tail = e;
  self->queued_requests++;
  self->queued_items += count;
  self->queued_bytes += bytes;
  sp__update_gauge(self);
  sp__pump(self);
  return 0;
}

static int sp__consume_traces(sp_consumer_t *c, sp_traces_t *batch) {
  return sp__consume(SP__EH_FROM_INPUT(c), SP_SIGNAL_TRACES, batch, batch->span_count,
                     sp_exporterhelper_traces_bytes(batch));
}

static int sp__consume_profiles(sp_consumer_t *c, sp_profiles_t *batch) {
  return sp__consume(SP__EH_FROM_INPUT(c), SP_SIGNAL_PROFILES, batch, batch->n,
                     sp_exporterhelper_profiles_bytes(batch));
}

/* ---- lifecycle -------------------------------------------------------------- */

int sp_exporterhelper_create(const sp_exporterhelper_options_t *opts, sp_exporterhelper_t **out) {
  if (opts == NULL || out == NULL || opts->host == NULL || opts->host->loop == NULL ||
      opts->sender == NULL || opts->sender->send == NULL)
    return SP_EINVAL;
  const sp_exporterhelper_queue_cfg_t *q = opts->queue ? opts->queue : &sp__queue_defaults;
  const sp_exporterhelper_retry_cfg_t *r = opts->retry ? opts->retry : &sp__retry_defaults;
  if (q->num_consumers < 1 || (q->enabled && q->queue_size < 1)) return SP_EINVAL;
  sp_exporterhelper_t *self = sp_calloc(1, sizeof(*self));
  if (self == NULL) return SP_ENOMEM;
  self->qcfg = *q;
  self->rcfg = *r;
  self->host = opts->host;
  self->loop = opts->host->loop;
  self->sender = opts->sender;
  self->sender_ctx = opts->sender_ctx;
  self->n_slots = (size_t)q->num_consumers;
  self->id = sp_strdup(opts->id ? opts->id : "exporter");
  self->slots = sp_calloc(self->n_slots, sizeof(*self->slots));
  if (self->id == NULL || self->slots == NULL) {
    sp_exporterhelper_destroy(self);
    return SP_ENOMEM;
  }
  for (size_t i = 0; i < self->n_slots; i++)
    self->slots[i].owner = self;
  self->input.consume_traces = sp__consume_traces;
  self->input.consume_profiles = sp__consume_profiles;
  self->rng = (uv_hrtime() ^ (uint64_t)(uintptr_t)self) | 1;

  char labels[300];
  snprintf(labels, sizeof(labels), "exporter=\"%s\"", self->id);
  sp_telemetry_t *t = opts->host->telemetry;
  self->m[0].sent = sp_telemetry_counter(t, "spanprof_exporter_sent_spans_total",
                                         "Spans successfully sent to their destination.", labels);
  self->m[0].failed = sp_telemetry_counter(t, "spanprof_exporter_send_failed_spans_total",
                                           "Spans that could not be sent.", labels);
  self->m[0].enqueue_failed =
      sp_telemetry_counter(t, "spanprof_exporter_enqueue_failed_spans_total",
                           "Spans refused because the sending queue was full.", labels);
  self->m[1].sent = sp_telemetry_counter(t, "spanprof_exporter_sent_profiles_total",
                                         "Profiles successfully sent.", labels);
  self->m[1].failed = sp_telemetry_counter(t, "spanprof_exporter_send_failed_profiles_total",
                                           "Profiles that could not be sent.", labels);
  self->m[1].enqueue_failed =
      sp_telemetry_counter(t, "spanprof_exporter_enqueue_failed_profiles_total",
                           "Profiles refused because the sending queue was full.", labels);
  self->retries = sp_telemetry_counter(t, "spanprof_exporter_retries_total",
                                       "Send attempts that were retried after a failure.", labels);
  self->queue_size = sp_telemetry_gauge(t, "spanprof_exporter_queue_size",
                                        "Current size of the sending queue.", labels);
  self->queue_capacity = sp_telemetry_gauge(t, "spanprof_exporter_queue_capacity",
                                            "Capacity of the sending queue.", labels);
  self->queue_bytes =
      sp_telemetry_gauge(t, "spanprof_exporter_queue_bytes",
                         "Encoded bytes of the requests waiting in the sending queue.", labels);
  self->queue_bytes_capacity = sp_telemetry_gauge(
      t, "spanprof_exporter_queue_bytes_capacity",
      "The sending queue's byte cap (sending_queue.max_queued_bytes; 0: none).", labels);
  sp_metric_set(self->queue_size, 0);
  sp_metric_set(self->queue_bytes, 0);
  sp_metric_set(self->queue_capacity, q->enabled ? (uint64_t)q->queue_size : 0);
  sp_metric_set(self->queue_bytes_capacity, q->enabled ? q->max_queued_bytes : 0);
  *out = self;
  return 0;
}

sp_consumer_t *sp_exporterhelper_consumer(sp_exporterhelper_t *self) { return &self->input; }

int sp_exporterhelper_start(sp_exporterhelper_t *self) {
  if (self->started || self->shutting) return SP_ESTATE;
  uv_timer_init(self->loop, &self->drain_timer);
  self->drain_timer.data = self;
  for (size_t i = 0; i < self->n_slots; i++) {
    uv_timer_init(self->loop, &self->slots[i].timer);
    self->slots[i].timer.data = &self->slots[i];
  }
  /* The timers, plus the sender's transport when it has a close hook. */
  self->open_handles = self->n_slots + 1 + (self->sender->close != NULL);
  self->started = true;
  sp__pump(self);
  return 0;
}

int sp_exporterhelper_start_http(sp_exporterhelper_t *self, const sp_component_t *base,
                                 const sp_tls_config_t *tls, unsigned max_conns_per_host,
                                 const sp_http_header_t *headers, size_t n_headers,
                                 sp_http_client_t **client) {
  sp_http_client_options_t o = {.component = base->id,
                                .tls = tls != NULL && tls->present ? tls : NULL,
                                .max_conns_per_host = max_conns_per_host,
                                .headers = headers,
                                .n_headers = n_headers};
  int rc = sp_http_client_create(base->host->loop, &o, client);
  if (rc != 0) {
    sp_log_error(base->id, "cannot create the HTTP client: %s", sp_strerror(rc));
    *client = NULL;
    return rc;
  }
  rc = sp_exporterhelper_start(self);
  if (rc != 0)
    sp_log_error(base->id, "cannot start the sending queue: %s", sp_strerror(rc));
  return rc;
}

static void sp__report_shutdown(void *arg) {
  sp_exporterhelper_t *self = arg;
  if (self->shutdown_cb != NULL) self->shutdown_cb(self->shutdown_arg);
}

static void sp__one_closed(sp_exporterhelper_t *self) {
  if (--self->open_handles == 0) sp__report_shutdown(self);
}

/* Every timer's data points at the helper once closing (see sp__close_all). */
static void sp__handle_closed(uv_handle_t *h) { sp__one_closed(h->data); }

static void sp__sender_closed(void *arg) { sp__one_closed(arg); }

/* Closes the sender's transport once (see sp_exporterhelper_sender_t.close). */
static void sp__close_sender(sp_exporterhelper_t *self) {
  if (self->sender->close == NULL || self->sender_closed)
    return;
  self->sender_closed = true;
  self->sender->close(self->sender_ctx, sp__sender_closed, self);
}

static void sp__close_all(sp_exporterhelper_t *self) {
  self->closing = true;
  sp__close_sender(self);
  uv_timer_stop(&self->drain_timer);
  self->drain_timer.data = self;
  uv_close((uv_handle_t *)&self->drain_timer, sp__handle_closed);
  for (size_t i = 0; i < self->n_slots; i++) {
    uv_timer_stop(&self->slots[i].timer);
    self->slots[i].timer.data = self;
    uv_close((uv_handle_t *)&self->slots[i].timer, sp__handle_closed);
  }
}

static void sp__check_drained(sp_exporterhelper_t *self) {
  if (!self->shutting || !self->started || self->closing || self->pumping) return;
  if (self->head != NULL || sp__busy(self) > 0) return;
  sp__close_all(self);
}

/* Gives up every slot waiting for a retry due after loop time @p due_after. */
static void sp__give_up_waiting(sp_exporterhelper_t *self, uint64_t due_after, const char *why) {
  for (size_t i = 0; i < self->n_slots; i++) {
    sp__eh_slot_t *s = &self->slots[i];
    if (s->cur != NULL && s->waiting && s->due_ms > due_after) {
      uv_timer_stop(&s->timer);
      s->waiting = false;
      sp__give_up(s, why);
    }
  }
}

static void sp__drain_expired(uv_timer_t *t) {
  sp_exporterhelper_t *self = t->data;
  self->expired = true;
  sp__drop_queue(self, "shutdown deadline passed");
  sp__give_up_waiting(self, 0, "the shutdown deadline passed");
  bool sending = false;
  for (size_t i = 0; i < self->n_slots; i++)
    sending |= self->slots[i].sending;
  if (sending) {
    sp_log_warn(self->id, "shutdown deadline passed with sends in flight; cancelling them");
    if (self->sender->cancel != NULL && !self->cancelled) {
      self->cancelled = true;
      self->sender->cancel(self->sender_ctx);
    } else if (self->sender->cancel == NULL) {
      sp__close_sender(self);
    }
  }
  sp__check_drained(self);
}

void sp_exporterhelper_shutdown(sp_exporterhelper_t *self, void (*cb)(void *arg), void *arg) {
  if (self == NULL || self->shutting) return;
  self->shutting = true;
  self->shutdown_cb = cb;
  self->shutdown_arg = arg;
  if (!self->started) {
    sp__drop_queue(self, "shut down before it started");
    self->closing = true;
    sp_defer_embedded(self->loop, &self->deferral, sp__report_shutdown, self);
    return;
  }
  uint64_t now = uv_now(self->loop);
  self->deadline = self->host->drain_deadline;
  /* Retries that could only happen after the deadline will not happen. */
  sp__give_up_waiting(self, self->deadline,
                      "shutting down and the next retry would come after the drain deadline");
  if (!self->closing)
    uv_timer_start(&self->drain_timer, sp__drain_expired,
                   self->deadline > now ? self->deadline - now : 0, 0);
  sp__check_drained(self);
}

void sp_exporterhelper_destroy(sp_exporterhelper_t *self) {
  if (self == NULL) return;
  assert((!self->started || self->open_handles == 0) && "destroy before the shutdown callback");
  if (self->head != NULL && self->sender != NULL)
    sp__drop_queue(self, "destroyed before it started");
  sp_free(self->slots);
  sp_free(self->id);
  sp_free(self);
}

void sp_exporterhelper_stats(const sp_exporterhelper_t *self, sp_exporterhelper_stats_t *out) {
  memset(out, 0, sizeof(*out));
  out->queued_requests = self->queued_requests;
  out->queued_items = self->queued_items;
  out->queued_bytes = self->queued_bytes;
  for (size_t i = 0; i < self->n_slots; i++) {
    out->busy += self->slots[i].cur != NULL;
    out->sending += self->slots[i].sending;
  }
}
