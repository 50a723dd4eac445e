/*
 * spanprofile processor — joins profile samples to the spans that were
 * running when they were taken (the reason spanprof exists; DESIGN.md, "The
 * span–profile join").
 *
 * One instance sits in traces and profiles pipelines at once: `attach` is
 * called once per pipeline and gives each its own port (input consumer +
 * next stage). Batches leave through the port they came in on. The join
 * itself (index, window, eviction) is in spanprofile_join.c and
 * spanprofile_index.c; this file is the component around it: config,
 * ports, one timer, retries, shutdown and the reload hand-over.
 *
 * How samples are joined
 *   1. By span ID: a sample label `span_id` (then `profile_id`, `span`;
 *      see span_id_labels) holding 16 hex characters is matched to the span
 *      with that ID whose resource `service.name` equals the profile's
 *      `service_name` series label. No process identity is needed.
 *   2. By thread and time: a sample without a span ID but with a time
 *      (sp_profile_t.sample_time_ns, or the numeric pprof label named by
 *      sample_time_label) is matched within its process (identity: the
 *      resource attributes in process_attributes, else those in
 *      process_attributes_fallback; profile series labels may spell dots as
 *      underscores) to the innermost span on its thread
 *      (sp_profile_t.sample_thread or the pprof label sample_thread_label ↔
 *      the span attribute span_thread_attribute) containing the time. With
 *      the thread unknown on one side, only a sole active span is taken.
 *      Ambiguity is never guessed.
 *   Joined samples gain the labels span_id (join by thread/time only),
 *   span_name and trace_id where they lack them. Data of different tenants
 *   (X-Scope-OrgID) never joins.
 *
 * Span attributes added on emission (TraceQL: span.<name>)
 *   pyroscope.profile.id  string  the span's own ID in hex, on joined local
 *                                 roots (no parent, or a remote parent per
 *                                 the span flags 0x100|0x200); on every
 *                                 joined span with profile_id_attribute: all
 *   profile.sample.count  int     sampled count of the joined samples (the
 *                                 `samples`/`count` value; 1 per pprof sample
 *                                 when the profile has none)
 *   profile.cpu.time_ns   int     summed `cpu` value of joined samples, ns
 *   profile.wall.time_ns  int     summed `wall` value of joined samples, ns
 *   The last three need span_cpu_attributes: true; cpu/wall only appear
 *   when the profiles carry that sample type.
 *
 * Config
 *   wait                         15s        how long each side waits for the other
 *   max_held_spans               1000000    indexed spans (kept 2 x wait for late samples)
 *   max_held_bytes               128MiB     held batches + index
 *   profile_id_attribute         local_roots | all | none
 *   span_cpu_attributes          false      hold every span `wait` and add the profile.* attributes
 *   process_attributes           [service.name, service.instance.id]
 *   process_attributes_fallback  [host.name, process.pid]
 *   span_thread_attribute        thread.id
 *   sample_thread_label          thread_id
 *   sample_time_label            ""         (none: only per-sample times from OTLP)
 *   span_id_labels               [span_id, profile_id, span]   (at most 4)
 *
 * Metrics (all labelled processor="<id>")
 *   spanprof_processor_spanprofile_samples_joined_total{method=span_id|thread_time}
 *   spanprof_processor_spanprofile_samples_unjoined_total{reason=no_span|expired|
 *       ambiguous|no_thread|no_timestamp|unknown_process}
 *   spanprof_processor_spanprofile_spans_indexed_total
 *   spanprof_processor_spanprofile_spans_duplicate_total
 *   spanprof_processor_spanprofile_spans_enriched_total
 *   spanprof_processor_spanprofile_evicted_spans_total     (memory bound)
 *   spanprof_processor_spanprofile_evicted_samples_total   (memory bound)
 *   spanprof_processor_spanprofile_passthrough_batches_total (could not be held)
 *   spanprof_processor_spanprofile_refused_total           (next stage said retry)
 *   spanprof_processor_spanprofile_held_spans / _held_samples / _held_bytes (gauges)
 *   spanprof_processor_dropped_items_total   (only: refused past the drain deadline, or
 *                                             held by a processor a reload removed)
 *
 * Delivery: a batch the next stage refuses retryably is kept, in order, and
 * retried every wait/4 (10 ms .. 1 s); meanwhile that port refuses new input
 * with SP_EAGAIN so the refusal reaches the sender. Shutdown resolves and
 * emits everything held, then retries until host->drain_deadline. During a
 * reload (host->reloading) the held state is parked in the host stash under
 * "spanprofile:<id>" with a fingerprint of the config; a successor with the
 * same config continues the window, one with a different config emits it
 * all at start.
 */
#include "processors/spanprofile/spanprofile_int.h"

#include "pipeline/alloc.h"
#include "pipeline/buf.h"
#include "pipeline/component.h"
#include "pipeline/defer.h"
#include "pipeline/error.h"
#include "pipeline/log.h"

#include <stddef.h>
#include <stdio.h>
#include <string.h>

/* ---- config ------------------------------------------------------------------------------ */

static const char *const sp__pid_modes[] = {"local_roots", "all", "none", NULL};

static int sp__spanprofile_validate(void *cfg, const sp_node_t *node, const char *path,
                                    sp_errors_t *errs) {
  sp_spanprofile_cfg_t *c = cfg;
  if (c->span_id_labels.n > 4) {
    sp_errors_add(errs, node ? &node->mark : NULL, path,
                  "span_id_labels: at most 4 label names, got %zu", c->span_id_labels.n);
    return SP_ECONFIG;
  }
  return 0;
}

static const sp_cfg_field_t sp__spanprofile_fields[] = {
    {.key = "wait",
     .type = SP_CFG_DURATION,
     .offset = offsetof(sp_spanprofile_cfg_t, wait_ms),
     .def = "15s",
     .min = 1,
     .max = 3600e3},
    {.key = "max_held_spans",
     .type = SP_CFG_INT,
     .offset = offsetof(sp_spanprofile_cfg_t, max_held_spans),
     .def = "1000000",
     .min = 1,
     .max = 1e9},
    {.key = "max_held_bytes",
     .type = SP_CFG_SIZE,
     .offset = offsetof(sp_spanprofile_cfg_t, max_held_bytes),
     .def = "128MiB",
     .min = 1024,
     .max = 1e13},
    {.key = "profile_id_attribute",
     .type = SP_CFG_ENUM,
     .offset = offsetof(sp_spanprofile_cfg_t, profile_id_attribute),
     .def = "local_roots",
     .enum_values = sp__pid_modes},
    {.key = "span_cpu_attributes",
     .type = SP_CFG_BOOL,
     .offset = offsetof(sp_spanprofile_cfg_t, span_cpu_attributes),
     .def = "false"},
    {.key = "process_attributes",
     .type = SP_CFG_STRLIST,
     .offset = offsetof(sp_spanprofile_cfg_t, process_attributes),
     .flags = SP_CFG_NONEMPTY,
     .def = "[service.name, service.instance.id]"},
    {.key = "process_attributes_fallback",
     .type = SP_CFG_STRLIST,
     .offset = offsetof(sp_spanprofile_cfg_t, process_attributes_fallback),
     .def = "[host.name, process.pid]"},
    {.key = "span_thread_attribute",
     .type = SP_CFG_STRING,
     .offset = offsetof(sp_spanprofile_cfg_t, span_thread_attribute),
     .def = "thread.id"},
    {.key = "sample_thread_label",
     .type = SP_CFG_STRING,
     .offset = offsetof(sp_spanprofile_cfg_t, sample_thread_label),
     .def = "thread_id"},
    {.key = "sample_time_label",
     .type = SP_CFG_STRING,
     .offset = offsetof(sp_spanprofile_cfg_t, sample_time_label)},
    {.key = "span_id_labels",
     .type = SP_CFG_STRLIST,
     .offset = offsetof(sp_spanprofile_cfg_t, span_id_labels),
     .flags = SP_CFG_NONEMPTY,
     .def = "[span_id, profile_id, span]"},
};

static const sp_cfg_schema_t sp__spanprofile_schema = {
    sp__spanprofile_fields, sizeof(sp__spanprofile_fields) / sizeof(sp__spanprofile_fields[0]),
    sizeof(sp_spanprofile_cfg_t), sp__spanprofile_validate};

static int sp__list_fp(sp_buf_t *b, const char *name, const sp_strlist_t *l) {
  int rc = sp_buf_printf(b, "%s=[", name);
  for (size_t i = 0; rc == 0 && i < l->n; i++)
    rc = sp_buf_printf(b, "%zu:%s,", strlen(l->items[i]), l->items[i]);
  return rc != 0 ? rc : sp_buf_puts(b, "]\n");
}

/* A text that differs whenever the join would behave differently. NULL on OOM. */
static char *sp__fingerprint(const sp_spanprofile_cfg_t *c) {
  sp_buf_t b;
  sp_buf_init(&b, 0);
  int rc = sp_buf_printf(&b, "wait=%llu\nspans=%lld\nbytes=%llu\npid=%d\ncpu=%d\n",
                         (unsigned long long)c->wait_ms, (long long)c->max_held_spans,
                         (unsigned long long)c->max_held_bytes, c->profile_id_attribute,
                         (int)c->span_cpu_attributes);
  if (rc == 0) rc = sp__list_fp(&b, "proc", &c->process_attributes);
  if (rc == 0) rc = sp__list_fp(&b, "fallback", &c->process_attributes_fallback);
  if (rc == 0) rc = sp__list_fp(&b, "ids", &c->span_id_labels);
  if (rc == 0)
    rc = sp_buf_printf(&b, "thread_attr=%s\nthread_label=%s\ntime_label=%s\n",
                       c->span_thread_attribute ? c->span_thread_attribute : "",
                       c->sample_thread_label ? c->sample_thread_label : "",
                       c->sample_time_label ? c->sample_time_label : "");
  if (rc != 0) {
    sp_buf_free(&b);
    return NULL;
  }
  size_t len;
  uint8_t *s = sp_buf_steal(&b, &len);
  if (s == NULL) return NULL;
  char *out = sp_strndup((const char *)s, len);
  sp_free(s);
  return out;
}

/* ---- instance ------------------------------------------------------------------------------ */

typedef struct sp_spp_out_s {
  struct sp_spp_out_s *next;
  void *batch;
} sp_spp_out_t;

typedef struct sp_spanprof_s sp_spanprof_t;

/* One pipeline the instance is attached to. */
typedef struct sp_spp_port_s {
  sp_consumer_t input;
  sp_spanprof_t *self;
  unsigned signal;
  unsigned ordinal; /* among the ports of its signal, in attach order */
  sp_consumer_t *next;
  sp_spp_out_t *q_head, *q_tail; /* refused by next, in order, awaiting retry */
  size_t q_n;
  struct sp_spp_port_s *next_port;
} sp_spp_port_t;

struct sp_spanprof_s {
  sp_component_t base;
  const sp_spanprofile_cfg_t *cfg;
  char *fingerprint;
  char *stash_key;
  sp_spj_t *join;
  sp_spj_metrics_t m;
  sp_metric_t *refused;
  sp_metric_t *dropped;
  sp_spp_port_t *ports;
  unsigned n_ports[2];
  uv_timer_t timer;
  bool timer_open;
  uint64_t timer_due; /* UINT64_MAX when not armed */
  uint64_t retry_ms;
  bool started;
  bool shutting;
  bool flushed; /* everything held went out: input now passes straight through */
  bool closed;  /* the timer is closed: no more retries */
  sp_done_cb cb;
  void *cb_arg;
  sp_deferral_t deferral; /* shutdown before start: reports without allocating */
};

/* What the instance parks in the host stash across a reload. */
typedef struct sp_spp_stash_s {
  char *fingerprint;
  char *id;
  sp_spj_t *join;
  struct {
    sp_spj_metrics_t join;
    sp_metric_t *dropped_items;
  } m; /* series live in the service's registry, which outlives reloads */
} sp_spp_stash_t;

static unsigned sp__sig_slot(unsigned signal) { return signal == SP_SIGNAL_TRACES ? 0 : 1; }

static void sp__unref(unsigned signal, void *batch) {
  if (signal == SP_SIGNAL_TRACES)
    sp_traces_unref(batch);
  else
    sp_profiles_unref(batch);
}

static void *sp__ref(unsigned signal, void *batch) {
  return signal == SP_SIGNAL_TRACES ? (void *)sp_traces_ref(batch) : (void *)sp_profiles_ref(batch);
}

static size_t sp__items(unsigned signal, void *batch) {
  if (signal == SP_SIGNAL_TRACES) return ((sp_traces_t *)batch)->span_count;
  return ((sp_profiles_t *)batch)->n;
}

static int sp__consume(sp_spp_port_t *p, void *batch) {
  return p->signal == SP_SIGNAL_TRACES ? sp_consume_traces(p->next, batch)
                                       : sp_consume_profiles(p->next, batch);
}

static void sp__arm(sp_spanprof_t *self);

static void sp__drop(sp_spanprof_t *self, unsigned signal, void *batch, const char *why) {
  size_t n = sp__items(signal, batch);
  sp_log_error(self->base.id, "dropped %zu %s: %s", n,
               signal == SP_SIGNAL_TRACES ? "span(s)" : "profile(s)", why);
  sp_metric_add(self->dropped, n);
  sp__unref(signal, batch);
}

/* Hands one batch to the port's next stage; keeps it for retry when refused retryably. */
static void sp__send(sp_spp_port_t *p, void *batch) {
  sp_spanprof_t *self = p->self;
  if (p->q_head == NULL) {
    int rc = sp__consume(p, sp__ref(p->signal, batch));
    if (rc != SP_EAGAIN) {
      if (rc != 0)
        sp_log_warn(self->base.id, "next stage rejected %zu item(s): %s",
                    sp__items(p->signal, batch), sp_strerror(rc));
      sp__unref(p->signal, batch);
      return;
    }
    sp_metric_add(self->refused, 1);
    if (self->closed) {
      sp__drop(self, p->signal, batch, "the next stage refused it after shutdown");
      return;
    }
  }
  sp_spp_out_t *o = sp_malloc(sizeof(*o));
  if (o == NULL) {
    sp__drop(self, p->signal, batch, "out of memory queueing a refused batch");
    return;
  }
  o->next = NULL;
  o->batch = batch;
  if (p->q_tail != NULL)
    p->q_tail->next = o;
  else
    p->q_head = o;
  p->q_tail = o;
  p->q_n++;
}

/* Retries the port's refused batches in order; stops at the first refusal. */
static void sp__retry(sp_spp_port_t *p) {
  while (p->q_head != NULL) {
    sp_spp_out_t *o = p->q_head;
    int rc = sp__consume(p, sp__ref(p->signal, o->batch));
    if (rc == SP_EAGAIN) {
      sp_metric_add(p->self->refused, 1);
      return;
    }
    if (rc != 0)
      sp_log_warn(p->self->base.id, "next stage rejected %zu item(s): %s",
                  sp__items(p->signal, o->batch), sp_strerror(rc));
    p->q_head = o->next;
    if (p->q_head == NULL) p->q_tail = NULL;
    p->q_n--;
    sp__unref(p->signal, o->batch);
    sp_free(o);
  }
}

static bool sp__stalled(const sp_spanprof_t *self) {
  for (const sp_spp_port_t *p = self->ports; p != NULL; p = p->next_port)
    if (p->q_head != NULL) return true;
  return false;
}

static sp_spp_port_t *sp__port(sp_spanprof_t *self, unsigned signal, unsigned ordinal) {
  sp_spp_port_t *first = NULL;
  for (sp_spp_port_t *p = self->ports; p != NULL; p = p->next_port) {
    if (p->signal != signal) continue;
    if (p->ordinal == ordinal) return p;
    if (p->ordinal == 0) first = p;
  }
  return first; /* a port that went away in a reload: its signal's first port */
}

/* The join engine's output. */
static void sp__on_emit(void *ctx, unsigned signal, unsigned port, void *batch) {
  sp_spanprof_t *self = ctx;
  sp_spp_port_t *p = sp__port(self, signal, port);
  if (p == NULL) {
    sp__drop(self, signal, batch, "no pipeline of that signal lists this processor any more");
    return;
  }
  sp__send(p, batch);
}

/* ---- input --------------------------------------------------------------------------------- */

/* True when the port must refuse: earlier output is still refused downstream. */
static bool sp__blocked(sp_spp_port_t *p) {
  if (p->q_head == NULL) return false;
  sp__retry(p);
  return p->q_head != NULL;
}

static int sp__in_traces(sp_consumer_t *c, sp_traces_t *batch) {
  sp_spp_port_t *p = (sp_spp_port_t *)c;
  sp_spanprof_t *self = p->self;
  if (sp__blocked(p)) {
    sp_traces_unref(batch);
    return SP_EAGAIN;
  }
  if (!self->started || self->flushed || self->join == NULL) {
    sp__send(p, batch);
    return 0;
  }
  sp__spj_traces(self->join, batch, p->ordinal, uv_now(self->base.host->loop));
  sp__arm(self);
  return 0;
}

static int sp__in_profiles(sp_consumer_t *c, sp_profiles_t *batch) {
  sp_spp_port_t *p = (sp_spp_port_t *)c;
  sp_spanprof_t *self = p->self;
  if (sp__blocked(p)) {
    sp_profiles_unref(batch);
    return SP_EAGAIN;
  }
  if (!self->started || self->flushed || self->join == NULL) {
    sp__send(p, batch);
    return 0;
  }
  sp__spj_profiles(self->join, batch, p->ordinal, uv_now(self->base.host->loop));
  sp__arm(self);
  return 0;
}

/* ---- timer --------------------------------------------------------------------------------- */

static void sp__on_timer(uv_timer_t *t) {
  sp_spanprof_t *self = t->data;
  self->timer_due = UINT64_MAX;
  for (sp_spp_port_t *p = self->ports; p != NULL; p = p->next_port)
    sp__retry(p);
  if (self->join != NULL && !self->flushed)
    sp__spj_advance(self->join, uv_now(self->base.host->loop));
  sp__arm(self);
}

/* Arms the timer for the engine's next deadline or the next retry, whichever is first. */
static void sp__arm(sp_spanprof_t *self) {
  if (!self->timer_open || self->shutting) return;
  uint64_t now = uv_now(self->base.host->loop);
  uint64_t due = self->join != NULL && !self->flushed ? sp__spj_deadline(self->join) : UINT64_MAX;
  if (sp__stalled(self) && now + self->retry_ms < due) due = now + self->retry_ms;
  if (due == UINT64_MAX || due >= self->timer_due)
    return; /* nothing to do, or an earlier wake-up is already armed (it re-arms) */
  self->timer_due = due;
  uv_timer_start(&self->timer, sp__on_timer, due > now ? due - now : 0, 0);
}

/* ---- lifecycle ------------------------------------------------------------------------------ */

static sp_metric_t *sp__counter(sp_telemetry_t *t, const char *name, const char *help,
                                const char *id, const char *extra) {
  char labels[512];
  snprintf(labels, sizeof(labels), "processor=\"%s\"%s%s", id, extra ? "," : "",
           extra ? extra : "");
  return sp_telemetry_counter(t, name, help, labels);
}

static void sp__metrics(sp_spanprof_t *self, sp_telemetry_t *t, const char *id) {
  static const char *const reasons[SP_SPJ_R_COUNT] = {
      "no_span", "expired", "ambiguous", "no_thread", "no_timestamp", "unknown_process"};
  const char *joined = "spanprof_processor_spanprofile_samples_joined_total";
  const char *joined_help = "Profile samples joined to a span, by method.";
  self->m.joined_id = sp__counter(t, joined, joined_help, id, "method=\"span_id\"");
  self->m.joined_window = sp__counter(t, joined, joined_help, id, "method=\"thread_time\"");
  for (int r = 0; r < SP_SPJ_R_COUNT; r++) {
    char extra[64];
    snprintf(extra, sizeof(extra), "reason=\"%s\"", reasons[r]);
    self->m.unjoined[r] =
        sp__counter(t, "spanprof_processor_spanprofile_samples_unjoined_total",
                    "Profile samples emitted without a span, by reason.", id, extra);
  }
  self->m.spans_indexed = sp__counter(t, "spanprof_processor_spanprofile_spans_indexed_total",
                                      "Spans added to the join index.", id, NULL);
  self->m.spans_duplicate =
      sp__counter(t, "spanprof_processor_spanprofile_spans_duplicate_total",
                  "Spans whose ID was already indexed for the same service.", id, NULL);
  self->m.spans_enriched = sp__counter(t, "spanprof_processor_spanprofile_spans_enriched_total",
                                       "Spans that gained profile attributes.", id, NULL);
  self->m.evicted_spans =
      sp__counter(t, "spanprof_processor_spanprofile_evicted_spans_total",
                  "Spans emitted or forgotten early because of the memory bound.", id, NULL);
  self->m.evicted_samples = sp__counter(
      t, "spanprof_processor_spanprofile_evicted_samples_total",
      "Profile samples resolved and emitted early because of the memory bound.", id, NULL);
  self->m.passthrough =
      sp__counter(t, "spanprof_processor_spanprofile_passthrough_batches_total",
                  "Batches emitted unjoined because they could not be held.", id, NULL);
  char labels[512];
  snprintf(labels, sizeof(labels), "processor=\"%s\"", id);
  self->m.held_spans = sp_telemetry_gauge(t, "spanprof_processor_spanprofile_held_spans",
                                          "Spans in the join index.", labels);
  self->m.held_samples = sp_telemetry_gauge(t, "spanprof_processor_spanprofile_held_samples",
                                            "Profile samples held for the join.", labels);
  self->m.held_bytes = sp_telemetry_gauge(t, "spanprof_processor_spanprofile_held_bytes",
                                          "Bytes held by the join (batches and index).", labels);
  self->refused = sp__counter(t, "spanprof_processor_spanprofile_refused_total",
                              "Batches the next stage refused retryably.", id, NULL);
  self->dropped = sp_telemetry_counter(t, "spanprof_processor_dropped_items_total",
                                       "Items a processor had to drop.", labels);
}

static void sp__spanprofile_destroy(sp_component_t *base);

static int sp__spanprofile_create(const sp_create_settings_t *set, const void *config,
                                  sp_component_t **out) {
  const sp_spanprofile_cfg_t *cfg = config;
  sp_spanprof_t *self = sp_calloc(1, sizeof(*self));
  if (self == NULL) return SP_ENOMEM;
  self->cfg = cfg;
  self->base.host = set->host;
  self->timer_due = UINT64_MAX;
  self->retry_ms = cfg->wait_ms / 4;
  if (self->retry_ms < 10) self->retry_ms = 10;
  if (self->retry_ms > 1000) self->retry_ms = 1000;
  self->fingerprint = sp__fingerprint(cfg);
  self->stash_key = sp_sprintf("spanprofile:%s", set->id);
  if (self->fingerprint == NULL || self->stash_key == NULL ||
      sp__spj_create(cfg, &self->join) != 0) {
    sp_log_error(set->id, "out of memory creating the span-profile join");
    sp__spanprofile_destroy(&self->base);
    return SP_ENOMEM;
  }
  sp__metrics(self, set->host->telemetry, set->id);
  sp__spj_bind(self->join, sp__on_emit, self, &self->m);
  *out = &self->base;
  return 0;
}

static int sp__spanprofile_attach(sp_component_t *base, unsigned signal, sp_consumer_t *next,
                                  sp_consumer_t **input) {
  sp_spanprof_t *self = (sp_spanprof_t *)base;
  if (signal != SP_SIGNAL_TRACES && signal != SP_SIGNAL_PROFILES) return SP_ENOTSUP;
  sp_spp_port_t *p = sp_calloc(1, sizeof(*p));
  if (p == NULL) return SP_ENOMEM;
  p->input.consume_traces = sp__in_traces;
  p->input.consume_profiles = sp__in_profiles;
  p->self = self;
  p->signal = signal;
  p->ordinal = self->n_ports[sp__sig_slot(signal)]++;
  p->next = next;
  /* Appended, so ports stay in attach order (ordinals match across a reload). */
  sp_spp_port_t **pp = &self->ports;
  while (*pp != NULL)
    pp = &(*pp)->next_port;
  *pp = p;
  *input = &p->input;
  return 0;
}

static void sp__stash_free(void *state) {
  sp_spp_stash_t *st = state;
  if (st == NULL) return;
  size_t items = st->join != NULL ? sp__spj_held_items(st->join) : 0;
  if (items > 0) {
    sp_log_error(st->id,
                 "the reloaded configuration has no such processor: dropped the %zu span(s) "
                 "and profile(s) its join window held",
                 items);
    sp_metric_add(st->m.dropped_items, items);
  }
  if (st->join != NULL) sp__spj_zero_gauges(st->join, &st->m.join);
  sp__spj_destroy(st->join);
  sp_free(st->fingerprint);
  sp_free(st->id);
  sp_free(st);
}

/* Takes over the window its predecessor parked during a reload. */
static void sp__adopt(sp_spanprof_t *self) {
  sp_host_t *host = self->base.host;
  sp_spp_stash_t *st = sp_host_stash_take(host, self->stash_key);
  if (st == NULL) return;
  size_t spans = 0, samples = 0;
  sp__spj_held(st->join, &spans, &samples);
  sp__spj_bind(st->join, sp__on_emit, self, &self->m);
  if (strcmp(st->fingerprint, self->fingerprint) == 0) {
    sp__spj_destroy(self->join);
    self->join = st->join;
    sp_log_info(self->base.id,
                "kept the join window across the reload (%zu span(s), %zu "
                "sample(s))",
                spans, samples);
  } else {
    /* The rules changed: what was held goes out now, joined as far as it got. */
    sp__spj_flush(st->join);
    sp__spj_destroy(st->join);
    sp_log_info(self->base.id,
                "configuration changed: emitted the previous join window "
                "(%zu span(s), %zu sample(s))",
                spans, samples);
  }
  st->join = NULL;
  sp__stash_free(st);
}

static int sp__spanprofile_start(sp_component_t *base) {
  sp_spanprof_t *self = (sp_spanprof_t *)base;
  uv_timer_init(base->host->loop, &self->timer);
  self->timer.data = self;
  self->timer_open = true;
  self->started = true;
  sp__adopt(self);
  sp__arm(self);
  return 0;
}

static void sp__timer_closed(uv_handle_t *h) {
  sp_spanprof_t *self = h->data;
  self->timer_open = false;
  self->cb(self->cb_arg);
}

/* Retries refused output until it is out or the drain deadline passes, then closes. */
static void sp__drain_step(uv_timer_t *t) {
  sp_spanprof_t *self = t->data;
  bool pending = false;
  for (sp_spp_port_t *p = self->ports; p != NULL; p = p->next_port) {
    sp__retry(p);
    pending = pending || p->q_head != NULL;
  }
  sp_host_t *host = self->base.host;
  uint64_t now = uv_now(host->loop);
  if (pending && now < host->drain_deadline) {
    uint64_t wait = host->drain_deadline - now;
    uv_timer_start(t, sp__drain_step, wait < self->retry_ms ? wait : self->retry_ms, 0);
    return;
  }
  self->closed = true;
  for (sp_spp_port_t *p = self->ports; p != NULL; p = p->next_port) {
    while (p->q_head != NULL) {
      sp_spp_out_t *o = p->q_head;
      p->q_head = o->next;
      sp__drop(self, p->signal, o->batch,
               "the shutdown deadline passed while the next stage "
               "kept refusing it");
      sp_free(o);
    }
    p->q_tail = NULL;
    p->q_n = 0;
  }
  uv_close((uv_handle_t *)t, sp__timer_closed);
}

static void sp__spanprofile_shutdown(sp_component_t *base, sp_done_cb cb, void *arg) {
  sp_spanprof_t *self = (sp_spanprof_t *)base;
  if (self->shutting) return;
  self->shutting = true;
  if (!self->started) {
    self->flushed = true;
    sp_defer_embedded(base->host->loop, &self->deferral, cb, arg);
    return;
  }
  self->cb = cb;
  self->cb_arg = arg;
  sp_host_t *host = base->host;
  size_t spans = 0, samples = 0;
  sp__spj_held(self->join, &spans, &samples);
  bool parked = false;
  if (host->reloading && (spans > 0 || samples > 0)) {
    sp_spp_stash_t *st = sp_calloc(1, sizeof(*st));
    if (st != NULL) {
      st->fingerprint = sp_strdup(self->fingerprint);
      st->id = sp_strdup(base->id != NULL ? base->id : "spanprofile");
      st->join = self->join;
      st->m.join = self->m;
      st->m.dropped_items = self->dropped;
    }
    if (st != NULL && st->fingerprint != NULL && st->id != NULL &&
        sp_host_stash_put(host, self->stash_key, st, sp__stash_free) == 0) {
      sp__spj_bind(self->join, NULL, NULL, NULL);
      self->join = NULL;
      parked = true;
    } else if (st != NULL) {
      st->join = NULL;
      sp__stash_free(st);
    }
  }
  if (!parked) sp__spj_flush(self->join);
  self->flushed = true;
  uv_timer_stop(&self->timer);
  self->timer_due = UINT64_MAX;
  uv_timer_start(&self->timer, sp__drain_step, 0, 0);
}

static void sp__spanprofile_destroy(sp_component_t *base) {
  sp_spanprof_t *self = (sp_spanprof_t *)base;
  if (self == NULL) return;
  sp_spp_port_t *p = self->ports;
  while (p != NULL) {
    sp_spp_port_t *n = p->next_port;
    while (p->q_head != NULL) {
      sp_spp_out_t *o = p->q_head;
      p->q_head = o->next;
      sp__unref(p->signal, o->batch);
      sp_free(o);
    }
    sp_free(p);
    p = n;
  }
  sp__spj_destroy(self->join);
  sp_free(self->fingerprint);
  sp_free(self->stash_key);
  sp_free(self);
}

const sp_component_def_t sp_processor_spanprofile = {
    .kind = SP_KIND_PROCESSOR,
    .type = "spanprofile",
    .signals = SP_SIGNAL_TRACES | SP_SIGNAL_PROFILES,
    .stability = "alpha",
    .description = "joins profile samples to spans by span ID and by thread and time",
    .schema = &sp__spanprofile_schema,
    .config_size = sizeof(sp_spanprofile_cfg_t),
    .create = sp__spanprofile_create,
    .attach = sp__spanprofile_attach,
    .start = sp__spanprofile_start,
    .shutdown = sp__spanprofile_shutdown,
    .destroy = sp__spanprofile_destroy,
};
