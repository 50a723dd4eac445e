/*
 * telemetry.c — the metric registry: a list of families, each a list of
 * series. Registries hold tens to a few hundred series and are looked up when
 * components are created, not per batch, so linear lists keep it simple.
 */
#include "pipeline/telemetry.h"

#include "pipeline/alloc.h"
#include "pipeline/error.h"

#include <stdbool.h>
#include <stdio.h>
#include <string.h>

typedef struct sp_series_s {
  sp_metric_t metric;
  char *labels;
  struct sp_series_s *next;
} sp_series_t;

typedef struct sp_family_s {
  char *name;
  char *help;
  bool gauge;
  sp_series_t *series;
  struct sp_family_s *next;
} sp_family_t;

struct sp_telemetry_s {
  sp_family_t *families;
  sp_family_t *tail;
};

/* Returned when there is no registry or memory ran out: counting must never fail. */
static sp_metric_t sp__dummy_metric;

sp_telemetry_t *sp_telemetry_create(void) { return sp_calloc(1, sizeof(sp_telemetry_t)); }

void sp_telemetry_destroy(sp_telemetry_t *self) {
  if (self == NULL)
    return;
  sp_family_t *f = self->families;
  while (f != NULL) {
    sp_family_t *fn = f->next;
    sp_series_t *s = f->series;
    while (s != NULL) {
      sp_series_t *sn = s->next;
      sp_free(s->labels);
      sp_free(s);
      s = sn;
    }
    sp_free(f->name);
    sp_free(f->help);
    sp_free(f);
    f = fn;
  }
  sp_free(self);
}

static sp_family_t *sp__family(sp_telemetry_t *self, const char *name, const char *help,
                               bool gauge, bool create) {
  for (sp_family_t *f = self->families; f != NULL; f = f->next)
    if (strcmp(f->name, name) == 0)
      return f;
  if (!create)
    return NULL;
  sp_family_t *f = sp_calloc(1, sizeof(*f));
  if (f == NULL)
    return NULL;
  f->name = sp_strdup(name);
  f->help = sp_strdup(help != NULL ? help : "");
  f->gauge = gauge;
  if (f->name == NULL || f->help == NULL) {
    sp_free(f->name);
    sp_free(f->help);
    sp_free(f);
    return NULL;
  }
  if (self->tail != NULL)
    self->tail->next = f;
  else
    self->families = f;
  self->tail = f;
  return f;
}

static sp_series_t *sp__series(sp_family_t *f, const char *labels, bool create) {
  if (labels == NULL)
    labels = "";
  sp_series_t **pp = &f->series;
  for (; *pp != NULL; pp = &(*pp)->next)
    if (strcmp((*pp)->labels, labels) == 0)
      return *pp;
  if (!create)
    return NULL;
  sp_series_t *s = sp_calloc(1, sizeof(*s));
  if (s == NULL)
    return NULL;
  s->labels = sp_strdup(labels);
  if (s->labels == NULL) {
    sp_free(s);
    return NULL;
  }
  *pp = s;
  return s;
}

static sp_metric_t *sp__get(sp_telemetry_t *self, const char *name, const char *help,
                            const char *labels, bool gauge) {
  if (self == NULL)
    return &sp__dummy_metric;
  sp_family_t *f = sp__family(self, name, help, gauge, true);
  sp_series_t *s = f != NULL ? sp__series(f, labels, true) : NULL;
  return s != NULL ? &s->metric : &sp__dummy_metric;
}

sp_metric_t *sp_telemetry_counter(sp_telemetry_t *self, const char *name, const char *help,
                                  const char *labels) {
  return sp__get(self, name, help, labels, false);
}

sp_metric_t *sp_telemetry_gauge(sp_telemetry_t *self, const char *name, const char *help,
                                const char *labels) {
  return sp__get(self, name, help, labels, true);
}

uint64_t sp_telemetry_value(sp_telemetry_t *self, const char *name, const char *labels) {
  if (self == NULL)
    return 0;
  sp_family_t *f = sp__family(self, name, NULL, false, false);
  sp_series_t *s = f != NULL ? sp__series(f, labels, false) : NULL;
  return s != NULL ? sp_metric_get(&s->metric) : 0;
}

int sp_telemetry_render(sp_telemetry_t *self, sp_buf_t *out) {
  int rc = 0;
  for (sp_family_t *f = self->families; f != NULL && rc == 0; f = f->next) {
    rc = sp_buf_printf(out, "# HELP %s %s\n# TYPE %s %s\n", f->name, f->help, f->name,
                       f->gauge ? "gauge" : "counter");
    for (sp_series_t *s = f->series; s != NULL && rc == 0; s = s->next) {
      if (s->labels[0] != '\0')
        rc = sp_buf_printf(out, "%s{%s} %llu\n", f->name, s->labels,
                           (unsigned long long)sp_metric_get(&s->metric));
      else
        rc = sp_buf_printf(out, "%s %llu\n", f->name,
                           (unsigned long long)sp_metric_get(&s->metric));
    }
  }
  return rc < 0 ? SP_ENOMEM : 0;
}

void sp_receiver_metrics_init(sp_telemetry_t *self, const char *id, const char *transport,
                              const char *items, sp_receiver_metrics_t *out) {
  char labels[256], name[128], help[160];
  snprintf(labels, sizeof(labels), "receiver=\"%s\",transport=\"%s\"", id, transport);
  snprintf(name, sizeof(name), "spanprof_receiver_accepted_%s_total", items);
  snprintf(help, sizeof(help), "%c%s accepted into the pipeline.", items[0] - 32, items + 1);
  out->accepted = sp_telemetry_counter(self, name, help, labels);
  snprintf(name, sizeof(name), "spanprof_receiver_refused_%s_total", items);
  snprintf(help, sizeof(help),
           "%c%s refused because the pipeline was full (the sender was told to retry).",
           items[0] - 32, items + 1);
  out->refused = sp_telemetry_counter(self, name, help, labels);
  snprintf(name, sizeof(name), "spanprof_receiver_rejected_%s_total", items);
  snprintf(help, sizeof(help), "%c%s rejected as invalid.", items[0] - 32, items + 1);
  out->rejected = sp_telemetry_counter(self, name, help, labels);
  out->bad_requests = sp_telemetry_counter(self, "spanprof_receiver_bad_requests_total",
                                           "Requests answered with a client error.", labels);
}
