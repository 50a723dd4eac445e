/*
 * debug exporter — writes what it receives to the log, as the OpenTelemetry
 * Collector's `debug` exporter does: `basic` one line per batch with counts,
 * `normal` one line per span / per profile, `detailed` the whole batch as
 * OTLP JSON (traces) or every sample with its labels (profiles).
 *
 * It never refuses data and holds nothing, so shutdown has nothing to drain.
 */
#include "pipeline/alloc.h"
#include "pipeline/buf.h"
#include "pipeline/component.h"
#include "pipeline/defer.h"
#include "pipeline/error.h"
#include "pipeline/hex.h"
#include "pipeline/log.h"
#include "pipeline/pbjson.h"

#include <stddef.h>
#include <stdio.h>

typedef struct sp_debug_cfg_s {
  int verbosity; /* 0 basic, 1 normal, 2 detailed */
} sp_debug_cfg_t;

static const char *const sp__verbosities[] = {"basic", "normal", "detailed", NULL};

static const sp_cfg_field_t sp__debug_fields[] = {
    {.key = "verbosity", .type = SP_CFG_ENUM, .offset = offsetof(sp_debug_cfg_t, verbosity),
     .def = "basic", .enum_values = sp__verbosities},
};
static const sp_cfg_schema_t sp__debug_schema = {sp__debug_fields, 1, sizeof(sp_debug_cfg_t),
                                                 NULL};

typedef struct sp_debug_s {
  sp_component_t base;
  sp_consumer_t input;
  int verbosity;
  sp_metric_t *spans;
  sp_metric_t *profiles;
  bool shut;
  sp_deferral_t deferral; /* the shutdown report: cannot fail for lack of memory */
} sp_debug_t;

#define SP_DEBUG_FROM_INPUT(c) ((sp_debug_t *)((char *)(c) - offsetof(sp_debug_t, input)))

static void sp__debug_span_lines(sp_debug_t *self, const sp_otlp_traces_req_t *req) {
  for (size_t i = 0; i < req->n_resource_spans; i++) {
    const sp_otlp_resource_spans_t *rs = req->resource_spans[i];
    for (size_t j = 0; j < rs->n_scope_spans; j++)
      for (size_t k = 0; k < rs->scope_spans[j]->n_spans; k++) {
        const sp_otlp_span_t *s = rs->scope_spans[j]->spans[k];
        char tid[33], sid[17];
        sp_hex_encode(s->trace_id.data, s->trace_id.len, tid, sizeof(tid));
        sp_hex_encode(s->span_id.data, s->span_id.len, sid, sizeof(sid));
        sp_log_info(self->base.id, "span trace_id=%s span_id=%s name=\"%s\" duration_ns=%lld",
                    tid, sid, s->name ? s->name : "",
                    (long long)(s->end_time_unix_nano - s->start_time_unix_nano));
      }
  }
}

static int sp__debug_traces(sp_consumer_t *c, sp_traces_t *batch) {
  sp_debug_t *self = SP_DEBUG_FROM_INPUT(c);
  sp_log_info(self->base.id, "traces: %zu span(s)", batch->span_count);
  if (self->verbosity >= 1) {
    const sp_otlp_traces_req_t *req = sp_traces_request(batch);
    if (req == NULL) {
      sp_log_warn(self->base.id, "cannot decode batch (out of memory)");
    } else if (self->verbosity == 1) {
      sp__debug_span_lines(self, req);
    } else {
      sp_buf_t out;
      sp_buf_init(&out, 0);
      if (sp_pbjson_encode(&req->base, SP_PBJSON_OTLP, &out) == 0)
        sp_log_info(self->base.id, "%s", sp_buf_cstr(&out));
      sp_buf_free(&out);
    }
  }
  sp_metric_add(self->spans, batch->span_count);
  sp_traces_unref(batch);
  return 0;
}

static void sp__debug_profile_detail(sp_debug_t *self, sp_profiles_t *batch, sp_profile_t *p) {
  sp_pprof_t *pp = sp_profile_decode(batch, p);
  if (pp == NULL)
    return;
  sp_buf_t line;
  sp_buf_init(&line, 0);
  for (size_t s = 0; s < pp->n_sample; s++) {
    const Perftools__Profiles__Sample *smp = pp->sample[s];
    line.len = 0;
    sp_buf_printf(&line, "  sample[%zu] values=", s);
    for (size_t v = 0; v < smp->n_value; v++)
      sp_buf_printf(&line, "%s%lld", v ? "," : "", (long long)smp->value[v]);
    for (size_t l = 0; l < smp->n_label; l++) {
      const Perftools__Profiles__Label *lb = smp->label[l];
      const char *k = lb->key >= 0 && (size_t)lb->key < pp->n_string_table
                          ? pp->string_table[lb->key]
                          : "?";
      if (lb->str > 0 && (size_t)lb->str < pp->n_string_table)
        sp_buf_printf(&line, " %s=%s", k, pp->string_table[lb->str]);
      else
        sp_buf_printf(&line, " %s=%lld", k, (long long)lb->num);
    }
    if (p->sample_time_ns != NULL && s < p->n_ext)
      sp_buf_printf(&line, " time_ns=%lld", (long long)p->sample_time_ns[s]);
    if (p->sample_thread != NULL && s < p->n_ext && p->sample_thread[s] >= 0)
      sp_buf_printf(&line, " thread=%lld", (long long)p->sample_thread[s]);
    sp_log_info(self->base.id, "%s", sp_buf_cstr(&line));
  }
  sp_buf_free(&line);
}

static int sp__debug_profiles(sp_consumer_t *c, sp_profiles_t *batch) {
  sp_debug_t *self = SP_DEBUG_FROM_INPUT(c);
  sp_log_info(self->base.id, "profiles: %zu profile(s)", batch->n);
  for (size_t i = 0; self->verbosity >= 1 && i < batch->n; i++) {
    sp_profile_t *p = &batch->items[i];
    sp_pprof_t *pp = sp_profile_decode(batch, p);
    const char *svc = sp_profile_label(p, "service_name");
    const char *name = sp_profile_label(p, "__name__");
    sp_log_info(self->base.id, "profile service_name=%s __name__=%s samples=%zu bytes=%zu",
                svc ? svc : "", name ? name : "", pp ? pp->n_sample : 0, p->raw_len);
    if (self->verbosity == 2)
      sp__debug_profile_detail(self, batch, p);
  }
  sp_metric_add(self->profiles, batch->n);
  sp_profiles_unref(batch);
  return 0;
}

static int sp__debug_create(const sp_create_settings_t *set, const void *config,
                            sp_component_t **out) {
  const sp_debug_cfg_t *cfg = config;
  sp_debug_t *self = sp_calloc(1, sizeof(*self));
  if (self == NULL)
    return SP_ENOMEM;
  self->verbosity = cfg->verbosity;
  self->input.consume_traces = sp__debug_traces;
  self->input.consume_profiles = sp__debug_profiles;
  self->base.input = &self->input;
  char labels[256];
  snprintf(labels, sizeof(labels), "exporter=\"%s\"", set->id);
  self->spans = sp_telemetry_counter(set->host->telemetry, "spanprof_exporter_sent_spans_total",
                                     "Spans successfully sent to their destination.", labels);
  self->profiles =
      sp_telemetry_counter(set->host->telemetry, "spanprof_exporter_sent_profiles_total",
                           "Profiles successfully sent to their destination.", labels);
  *out = &self->base;
  return 0;
}

static int sp__debug_start(sp_component_t *base) {
  (void)base;
  return 0;
}

static void sp__debug_shutdown(sp_component_t *base, sp_done_cb cb, void *arg) {
  sp_debug_t *self = (sp_debug_t *)base;
  if (self->shut)
    return;
  self->shut = true;
  /* Nothing is held, so nothing drains; report from the loop, never inline. */
  sp_defer_embedded(base->host->loop, &self->deferral, cb, arg);
}

static void sp__debug_destroy(sp_component_t *base) { sp_free(base); }

const sp_component_def_t sp_exporter_debug = {
    .kind = SP_KIND_EXPORTER,
    .type = "debug",
    .signals = SP_SIGNAL_TRACES | SP_SIGNAL_PROFILES,
    .stability = "development",
    .description = "writes received data to the log (basic, normal or detailed)",
    .schema = &sp__debug_schema,
    .config_size = sizeof(sp_debug_cfg_t),
    .create = sp__debug_create,
    .start = sp__debug_start,
    .shutdown = sp__debug_shutdown,
    .destroy = sp__debug_destroy,
};
