/*
 * components.c — the registry: every component type the daemon knows, one
 * line each. Adding a component is its own folder plus one line here.
 */
#include "pipeline/component.h"

#include <string.h>

extern const sp_component_def_t sp_exporter_debug;
extern const sp_component_def_t sp_exporter_file;
extern const sp_component_def_t sp_processor_batch;

static const sp_component_def_t *const sp__registry[] = {
    &sp_processor_batch,
    &sp_exporter_debug,
    &sp_exporter_file,
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
