/*
 * components.c — the registry: every component type the daemon knows, one
 * line each. Adding a component is its own folder plus one line here.
 */
#include "pipeline/component.h"

#include "pipeline/alloc.h"
#include "pipeline/error.h"

#include <string.h>

extern const sp_component_def_t sp_receiver_otlp;
extern const sp_component_def_t sp_receiver_pyroscope;
extern const sp_component_def_t sp_receiver_pprof_scrape;
extern const sp_component_def_t sp_exporter_debug;
extern const sp_component_def_t sp_exporter_file;
extern const sp_component_def_t sp_exporter_otlp;
extern const sp_component_def_t sp_exporter_otlphttp;
extern const sp_component_def_t sp_exporter_pyroscope;
extern const sp_component_def_t sp_processor_batch;
extern const sp_component_def_t sp_processor_spanprofile;

static const sp_component_def_t *const sp__registry[] = {
    &sp_receiver_otlp,
    &sp_receiver_pyroscope,
    &sp_receiver_pprof_scrape,
    &sp_processor_batch,
    &sp_processor_spanprofile,
    &sp_exporter_debug,
    &sp_exporter_file,
    &sp_exporter_otlp,
    &sp_exporter_otlphttp,
    &sp_exporter_pyroscope,
    NULL,
};

const sp_component_def_t *const *sp_registry_all(void) { return sp__registry; }

size_t sp_component_id_type_len(const char *id) {
  const char *slash = strchr(id, '/');
  return slash != NULL ? (size_t)(slash - id) : strlen(id);
}

static int sp__name_is(const char *name, const char *type, size_t len) {
  return strlen(name) == len && memcmp(name, type, len) == 0;
}

const sp_component_def_t *sp_registry_find(sp_kind_t kind, const char *type, size_t type_len) {
  for (const sp_component_def_t *const *d = sp__registry; *d != NULL; d++) {
    if ((*d)->kind != kind)
      continue;
    if (sp__name_is((*d)->type, type, type_len))
      return *d;
    for (const char *const *a = (*d)->aliases; a != NULL && *a != NULL; a++)
      if (sp__name_is(*a, type, type_len))
        return *d;
  }
  return NULL;
}

int sp_host_stash_put(sp_host_t *host, const char *key, void *state, void (*free_state)(void *)) {
  sp_stash_t *e = sp_calloc(1, sizeof(*e));
  if (e == NULL || (e->key = sp_strdup(key)) == NULL) {
    sp_free(e);
    return SP_ENOMEM;
  }
  e->state = state;
  e->free_state = free_state;
  e->next = host->stash;
  host->stash = e;
  return 0;
}

void *sp_host_stash_take(sp_host_t *host, const char *key) {
  for (sp_stash_t **pp = &host->stash; *pp != NULL; pp = &(*pp)->next) {
    sp_stash_t *e = *pp;
    if (strcmp(e->key, key) == 0) {
      void *state = e->state;
      *pp = e->next;
      sp_free(e->key);
      sp_free(e);
      return state;
    }
  }
  return NULL;
}

void sp_host_stash_clear(sp_host_t *host) {
  while (host->stash != NULL) {
    sp_stash_t *e = host->stash;
    host->stash = e->next;
    if (e->free_state != NULL)
      e->free_state(e->state);
    sp_free(e->key);
    sp_free(e);
  }
}

uint64_t sp_host_receiver_stop_budget(const sp_host_t *host) {
  if (host->drain_deadline == 0)
    return UINT64_MAX;
  uint64_t now = uv_now(host->loop);
  uint64_t left = host->drain_deadline > now ? (host->drain_deadline - now) / 2 : 0;
  return left < 100 ? 100 : left;
}

const char *sp_kind_name(sp_kind_t kind) {
  switch (kind) {
  case SP_KIND_RECEIVER:
    return "receiver";
  case SP_KIND_PROCESSOR:
    return "processor";
  case SP_KIND_EXPORTER:
    return "exporter";
  case SP_KIND_EXTENSION:
    return "extension";
  }
  return "component";
}
