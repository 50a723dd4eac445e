/*
 * graph.c — configuration to wired instances, and their ordered lifecycle
 * (see graph.h).
 *
 * Every component defined in the configuration gets one sp_inst_t, whether
 * used or not (validation covers unused ones too); only used ones are
 * created. Pipelines point at instances, so an ID listed by several pipelines
 * is naturally one instance.
 */
#include "pipeline/graph.h"

#include "pipeline/alloc.h"
#include "pipeline/error.h"
#include "pipeline/log.h"
#include "pipeline/transport/http_server.h"

#include <stddef.h>
#include <stdio.h>
#include <string.h>

typedef struct sp_inst_s {
  sp_kind_t kind;
  const char *id;
  const sp_mark_t *mark;
  const sp_component_def_t *def;
  void *config;
  unsigned used_signals;
  sp_component_t *comp;
  bool started;
  sp_consumer_t *fan_traces;
  sp_consumer_t *fan_profiles;
  struct sp_graph_s *graph;
  /*
   * Processors: the furthest position (0 = first) at which any pipeline
   * lists this processor. Shutdown runs level by level from 0 up, so a
   * processor stops only after those feeding it have flushed into it;
   * start runs the other way round.
   */
  size_t level;
} sp_inst_t;

typedef struct sp_pipe_s {
  const char *id;
  unsigned signal;
  sp_inst_t **list[3]; /* receivers, processors, exporters */
  size_t n[3];
  sp_consumer_t *exp_fanout;
  bool own_fanout; /* exp_fanout was allocated (more than one exporter) */
  sp_consumer_t *entry;
} sp_pipe_t;

enum { SP_LIST_RECEIVERS = 0, SP_LIST_PROCESSORS = 1, SP_LIST_EXPORTERS = 2 };

struct sp_graph_s {
  const sp_config_doc_t *doc;
  sp_host_t *host;
  sp_inst_t *inst;
  size_t n_inst;
  sp_pipe_t *pipes;
  size_t n_pipes;
  size_t max_level; /* highest processor level */
  sp_service_settings_t settings;
  bool settings_decoded;
  /* shutdown */
  bool shutting;
  int phase;
  size_t pending;
  sp_done_cb cb;
  void *cb_arg;
  uv_timer_t defer;
  bool defer_init;
  sp_http_server_t *metrics; /* the Prometheus endpoint, when enabled */
  bool metrics_down;
};

static const char *const sp__sections[] = {"receivers", "processors", "exporters", "extensions"};
static const sp_kind_t sp__section_kind[] = {SP_KIND_RECEIVER, SP_KIND_PROCESSOR,
                                             SP_KIND_EXPORTER, SP_KIND_EXTENSION};

/* ---- the service section ---------------------------------------------------- */

static const char *const sp__log_levels[] = {"debug", "info", "warn", "error", NULL};
static const char *const sp__log_encodings[] = {"console", "logfmt", "json", NULL};
static const char *const sp__metric_levels[] = {"none", "basic", "normal", "detailed", NULL};

static const sp_cfg_field_t sp__logs_fields[] = {
    {.key = "level", .type = SP_CFG_ENUM, .offset = 0, .def = "info",
     .enum_values = sp__log_levels},
    {.key = "encoding", .type = SP_CFG_ENUM, .offset = sizeof(int), .def = "console",
     .enum_values = sp__log_encodings},
};
static const sp_cfg_schema_t sp__logs_schema = {sp__logs_fields, 2, 2 * sizeof(int), NULL};

typedef struct sp_metrics_cfg_s {
  int level;
  char *address;
} sp_metrics_cfg_t;

static const sp_cfg_field_t sp__metrics_fields[] = {
    {.key = "level", .type = SP_CFG_ENUM, .offset = offsetof(sp_metrics_cfg_t, level),
     .def = "basic", .enum_values = sp__metric_levels},
    {.key = "address", .type = SP_CFG_STRING, .offset = offsetof(sp_metrics_cfg_t, address),
     .def = "127.0.0.1:8888"},
};
static const sp_cfg_schema_t sp__metrics_schema = {sp__metrics_fields, 2,
                                                   sizeof(sp_metrics_cfg_t), NULL};

typedef struct sp_telemetry_cfg_s {
  int logs[2];
  sp_metrics_cfg_t metrics;
} sp_telemetry_cfg_t;

static const sp_cfg_field_t sp__telemetry_fields[] = {
    {.key = "logs", .type = SP_CFG_SECTION, .offset = offsetof(sp_telemetry_cfg_t, logs),
     .section = &sp__logs_schema},
    {.key = "metrics", .type = SP_CFG_SECTION, .offset = offsetof(sp_telemetry_cfg_t, metrics),
     .section = &sp__metrics_schema},
};
static const sp_cfg_schema_t sp__telemetry_schema = {sp__telemetry_fields, 2,
                                                     sizeof(sp_telemetry_cfg_t), NULL};

/* The decodable part of `service` (pipelines and extensions are walked by hand). */
static const sp_cfg_field_t sp__service_fields[] = {
    {.key = "telemetry", .type = SP_CFG_SECTION,
     .offset = offsetof(sp_service_settings_t, logs), .section = &sp__telemetry_schema},
    {.key = "shutdown_timeout", .type = SP_CFG_DURATION,
     .offset = offsetof(sp_service_settings_t, shutdown_timeout_ms), .def = "10s", .min = 0,
     .max = 3600e3},
};
static const sp_cfg_schema_t sp__service_schema = {sp__service_fields, 2,
                                                   sizeof(sp_service_settings_t), NULL};

_Static_assert(offsetof(sp_service_settings_t, metrics) - offsetof(sp_service_settings_t, logs) ==
                   offsetof(sp_telemetry_cfg_t, metrics),
               "sp_service_settings_t must mirror sp_telemetry_cfg_t");

/* ---- helpers ------------------------------------------------------------------ */

static sp_inst_t *sp__find(sp_graph_t *g, sp_kind_t kind, const char *id) {
  for (size_t i = 0; i < g->n_inst; i++)
    if (g->inst[i].kind == kind && strcmp(g->inst[i].id, id) == 0)
      return &g->inst[i];
  return NULL;
}

static const char *sp__signal_name(unsigned signal) {
  return signal == SP_SIGNAL_TRACES ? "traces" : "profiles";
}

/* Lists the registered types of a kind, for "unknown type" messages. */
static void sp__known_types(sp_kind_t kind, char *out, size_t cap) {
  size_t n = 0;
  out[0] = '\0';
  for (const sp_component_def_t *const *d = sp_registry_all(); *d != NULL; d++) {
    if ((*d)->kind != kind || n >= cap)
      continue;
    int w = snprintf(out + n, cap - n, "%s%s", n ? ", " : "", (*d)->type);
    if (w > 0)
      n += (size_t)w;
  }
  if (n == 0)
    snprintf(out, cap, "none");
}

/* Decodes one component section (receivers, processors, ...). */
static int sp__read_section(sp_graph_t *g, const sp_node_t *root, size_t si, sp_errors_t *errs) {
  const char *name = sp__sections[si];
  const sp_node_t *sec = sp_node_get(root, name);
  int rc = 0;
  if (sec == NULL || sec->kind == SP_NODE_NULL)
    return 0;
  if (sec->kind != SP_NODE_MAP) {
    sp_errors_add(errs, &sec->mark, name, "expected a map of component IDs, got %s",
                  sp_node_kind_name(sec));
    return SP_ECONFIG;
  }
  for (size_t i = 0; i < sec->n; i++) {
    const char *id = sec->keys[i];
    const sp_mark_t *mark = &sec->key_marks[i];
    char path[512];
    snprintf(path, sizeof(path), "%s::%s", name, id);
    size_t tlen = sp_component_id_type_len(id);
    if (tlen == 0 || (id[tlen] == '/' && id[tlen + 1] == '\0')) {
      sp_errors_add(errs, mark, path, "invalid component ID (expected \"type\" or \"type/name\")");
      rc = SP_ECONFIG;
      continue;
    }
    const sp_component_def_t *def = sp_registry_find(sp__section_kind[si], id, tlen);
    if (def == NULL) {
      char known[512];
      sp__known_types(sp__section_kind[si], known, sizeof(known));
      sp_errors_add(errs, mark, path, "unknown %s type \"%.*s\" (known: %s)",
                    sp_kind_name(sp__section_kind[si]), (int)tlen, id, known);
      rc = SP_ECONFIG;
      continue;
    }
    sp_inst_t *in = &g->inst[g->n_inst++];
    in->kind = sp__section_kind[si];
    in->id = id;
    in->mark = mark;
    in->def = def;
    in->graph = g;
    in->config = sp_calloc(1, def->config_size > 0 ? def->config_size : 1);
    if (in->config == NULL)
      return SP_ENOMEM;
    if (def->schema != NULL) {
      int drc = sp_cfg_decode(def->schema, sec->items[i], path, mark, in->config, errs);
      if (drc == SP_ENOMEM)
        return drc;
      if (drc != 0)
        rc = SP_ECONFIG;
    } else if (sec->items[i]->kind == SP_NODE_MAP && sec->items[i]->n > 0) {
      sp_errors_add(errs, &sec->items[i]->mark, path, "%s \"%s\" takes no settings",
                    sp_kind_name(in->kind), id);
      rc = SP_ECONFIG;
    }
  }
  return rc;
}

/* Resolves one pipeline list (receivers/processors/exporters) into instances. */
static int sp__read_pipe_list(sp_graph_t *g, sp_pipe_t *p, int which, const sp_node_t *pnode,
                              const char *ppath, sp_errors_t *errs) {
  static const char *const keys[] = {"receivers", "processors", "exporters"};
  static const sp_kind_t kinds[] = {SP_KIND_RECEIVER, SP_KIND_PROCESSOR, SP_KIND_EXPORTER};
  const char *key = keys[which];
  char path[600];
  snprintf(path, sizeof(path), "%s::%s", ppath, key);
  const sp_node_t *list = sp_node_get(pnode, key);
  int rc = 0;
  if (list == NULL || list->kind == SP_NODE_NULL || (list->kind == SP_NODE_SEQ && list->n == 0)) {
    if (which != SP_LIST_PROCESSORS) {
      sp_errors_add(errs, list != NULL ? &list->mark : &pnode->mark, ppath,
                    "pipeline must have at least one %.*s", (int)strlen(key) - 1, key);
      return SP_ECONFIG;
    }
    return 0;
  }
  if (list->kind != SP_NODE_SEQ) {
    sp_errors_add(errs, &list->mark, path, "expected a list of component IDs, got %s",
                  sp_node_kind_name(list));
    return SP_ECONFIG;
  }
  p->list[which] = sp_calloc(list->n, sizeof(sp_inst_t *));
  if (p->list[which] == NULL)
    return SP_ENOMEM;
  for (size_t i = 0; i < list->n; i++) {
    const sp_node_t *item = list->items[i];
    char ipath[640];
    snprintf(ipath, sizeof(ipath), "%s[%zu]", path, i);
    if (item->kind != SP_NODE_SCALAR) {
      sp_errors_add(errs, &item->mark, ipath, "expected a component ID, got %s",
                    sp_node_kind_name(item));
      rc = SP_ECONFIG;
      continue;
    }
    const char *kname = sp_kind_name(kinds[which]);
    sp_inst_t *in = sp__find(g, kinds[which], item->scalar);
    if (in == NULL) {
      sp_errors_add(errs, &item->mark, ipath, "%s \"%s\" is not configured (define it under %s)",
                    kname, item->scalar, key);
      rc = SP_ECONFIG;
      continue;
    }
    if (!(in->def->signals & p->signal)) {
      sp_errors_add(errs, &item->mark, ipath, "%s \"%s\" does not support %s", kname,
                    item->scalar, sp__signal_name(p->signal));
      rc = SP_ECONFIG;
      continue;
    }
    bool dup = false;
    for (size_t j = 0; j < p->n[which]; j++)
      dup = dup || p->list[which][j] == in;
    if (dup) {
      sp_errors_add(errs, &item->mark, ipath, "%s \"%s\" is listed twice in this pipeline",
                    kname, item->scalar);
      rc = SP_ECONFIG;
      continue;
    }
    if (which == SP_LIST_PROCESSORS) {
      if (p->n[which] > in->level)
        in->level = p->n[which];
      if (in->level > g->max_level)
        g->max_level = in->level;
    }
    p->list[which][p->n[which]++] = in;
    in->used_signals |= p->signal;
  }
  return rc;
}

static int sp__read_pipelines(sp_graph_t *g, const sp_node_t *svc, sp_errors_t *errs) {
  const sp_node_t *pipes = sp_node_get(svc, "pipelines");
  if (pipes == NULL || pipes->kind == SP_NODE_NULL || (pipes->kind == SP_NODE_MAP && pipes->n == 0)) {
    sp_errors_add(errs, pipes != NULL ? &pipes->mark : &svc->mark, "service::pipelines",
                  "at least one pipeline is required");
    return SP_ECONFIG;
  }
  if (pipes->kind != SP_NODE_MAP) {
    sp_errors_add(errs, &pipes->mark, "service::pipelines", "expected a map, got %s",
                  sp_node_kind_name(pipes));
    return SP_ECONFIG;
  }
  g->pipes = sp_calloc(pipes->n, sizeof(sp_pipe_t));
  if (g->pipes == NULL)
    return SP_ENOMEM;
  int rc = 0;
  for (size_t i = 0; i < pipes->n; i++) {
    const char *id = pipes->keys[i];
    const sp_node_t *pn = pipes->items[i];
    char path[512];
    snprintf(path, sizeof(path), "service::pipelines::%s", id);
    size_t tlen = sp_component_id_type_len(id);
    unsigned signal = 0;
    if (tlen == 6 && strncmp(id, "traces", 6) == 0)
      signal = SP_SIGNAL_TRACES;
    else if (tlen == 8 && strncmp(id, "profiles", 8) == 0)
      signal = SP_SIGNAL_PROFILES;
    if (signal == 0 || (id[tlen] == '/' && id[tlen + 1] == '\0')) {
      sp_errors_add(errs, &pipes->key_marks[i], path,
                    "unsupported pipeline \"%s\" (expected traces[/name] or profiles[/name])", id);
      rc = SP_ECONFIG;
      continue;
    }
    if (pn->kind != SP_NODE_MAP) {
      sp_errors_add(errs, &pn->mark, path, "expected a map with receivers, processors, exporters");
      rc = SP_ECONFIG;
      continue;
    }
    for (size_t k = 0; k < pn->n; k++)
      if (strcmp(pn->keys[k], "receivers") != 0 && strcmp(pn->keys[k], "processors") != 0 &&
          strcmp(pn->keys[k], "exporters") != 0) {
        sp_errors_add(errs, &pn->key_marks[k], path,
                      "unknown key \"%s\" (known: receivers, processors, exporters)", pn->keys[k]);
        rc = SP_ECONFIG;
      }
    sp_pipe_t *p = &g->pipes[g->n_pipes++];
    p->id = id;
    p->signal = signal;
    for (int w = 0; w < 3; w++) {
      int lrc = sp__read_pipe_list(g, p, w, pn, path, errs);
      if (lrc == SP_ENOMEM)
        return lrc;
      if (lrc != 0)
        rc = SP_ECONFIG;
    }
  }
  return rc;
}

static int sp__read_service(sp_graph_t *g, const sp_node_t *root, sp_errors_t *errs) {
  const sp_node_t *svc = sp_node_get(root, "service");
  if (svc == NULL || svc->kind != SP_NODE_MAP) {
    sp_errors_add(errs, svc != NULL ? &svc->mark : &root->mark, "service",
                  svc == NULL ? "missing required section \"service\" (with pipelines)"
                              : "expected a map with pipelines");
    return SP_ECONFIG;
  }
  /* Decode everything but pipelines/extensions through the schema (every other key:
   * unknown ones must be reported however many there are). */
  sp_node_t view = *svc;
  size_t cap = svc->n > 0 ? svc->n : 1;
  const char **keys = sp_malloc(cap * sizeof(*keys));
  sp_mark_t *kmarks = sp_malloc(cap * sizeof(*kmarks));
  sp_node_t **items = sp_malloc(cap * sizeof(*items));
  if (keys == NULL || kmarks == NULL || items == NULL) {
    sp_free(keys);
    sp_free(kmarks);
    sp_free(items);
    return SP_ENOMEM;
  }
  view.n = 0;
  view.keys = keys;
  view.key_marks = kmarks;
  view.items = items;
  int rc = 0;
  for (size_t i = 0; i < svc->n; i++) {
    if (strcmp(svc->keys[i], "pipelines") == 0 || strcmp(svc->keys[i], "extensions") == 0)
      continue;
    keys[view.n] = svc->keys[i];
    kmarks[view.n] = svc->key_marks[i];
    items[view.n++] = svc->items[i];
  }
  int drc = sp_cfg_decode(&sp__service_schema, &view, "service", &svc->mark, &g->settings, errs);
  sp_free(keys);
  sp_free(kmarks);
  sp_free(items);
  g->settings_decoded = true;
  if (drc == SP_ENOMEM)
    return drc;
  if (drc != 0)
    rc = SP_ECONFIG;
  const sp_node_t *ext = sp_node_get(svc, "extensions");
  if (ext != NULL && ext->kind == SP_NODE_SEQ) {
    for (size_t i = 0; i < ext->n; i++) {
      const sp_node_t *it = ext->items[i];
      if (it->kind != SP_NODE_SCALAR || sp__find(g, SP_KIND_EXTENSION, it->scalar) == NULL) {
        sp_errors_add(errs, &it->mark, "service::extensions",
                      "extension \"%s\" is not configured (define it under extensions)",
                      it->kind == SP_NODE_SCALAR ? it->scalar : "?");
        rc = SP_ECONFIG;
      } else {
        sp__find(g, SP_KIND_EXTENSION, it->scalar)->used_signals = ~0u;
      }
    }
  } else if (ext != NULL && ext->kind != SP_NODE_NULL) {
    sp_errors_add(errs, &ext->mark, "service::extensions", "expected a list of extension IDs");
    rc = SP_ECONFIG;
  }
  int prc = sp__read_pipelines(g, svc, errs);
  if (prc == SP_ENOMEM)
    return prc;
  return prc != 0 ? SP_ECONFIG : rc;
}

/* ---- creating and wiring ------------------------------------------------------ */

static int sp__create_inst(sp_graph_t *g, sp_inst_t *in, sp_errors_t *errs) {
  sp_create_settings_t set = {.host = g->host, .id = in->id};
  if (in->kind == SP_KIND_RECEIVER) {
    /* Fan out to the entry of every pipeline that lists this receiver, however many. */
    for (unsigned sig = SP_SIGNAL_TRACES; sig <= SP_SIGNAL_PROFILES; sig <<= 1) {
      size_t n = 0;
      for (size_t i = 0; i < g->n_pipes; i++)
        for (size_t j = 0; g->pipes[i].signal == sig && j < g->pipes[i].n[SP_LIST_RECEIVERS]; j++)
          n += g->pipes[i].list[SP_LIST_RECEIVERS][j] == in;
      if (n == 0)
        continue;
      sp_consumer_t **entries = sp_malloc(n * sizeof(*entries));
      if (entries == NULL)
        return SP_ENOMEM;
      size_t k = 0;
      for (size_t i = 0; i < g->n_pipes; i++)
        for (size_t j = 0; g->pipes[i].signal == sig && j < g->pipes[i].n[SP_LIST_RECEIVERS]; j++)
          if (g->pipes[i].list[SP_LIST_RECEIVERS][j] == in)
            entries[k++] = g->pipes[i].entry;
      sp_consumer_t *fan = sp_fanout_create(entries, n); /* copies the array */
      sp_free(entries);
      if (fan == NULL)
        return SP_ENOMEM;
      /* A single target is used directly (sp_fanout_create returns it): not ours to free. */
      if (sig == SP_SIGNAL_TRACES) {
        set.next_traces = fan;
        in->fan_traces = n > 1 ? fan : NULL;
      } else {
        set.next_profiles = fan;
        in->fan_profiles = n > 1 ? fan : NULL;
      }
    }
  }
  char *id = sp_strdup(in->id);
  if (id == NULL)
    return SP_ENOMEM;
  sp_component_t *comp = NULL;
  int rc = in->def->create(&set, in->config, &comp);
  if (rc != 0) {
    sp_free(id);
    sp_errors_add(errs, in->mark, NULL, "cannot create %s \"%s\": %s", sp_kind_name(in->kind),
                  in->id, sp_strerror(rc));
    return rc;
  }
  comp->def = in->def;
  comp->host = g->host;
  comp->id = id;
  comp->config = in->config;
  in->comp = comp;
  return 0;
}

static int sp__wire(sp_graph_t *g, sp_errors_t *errs) {
  int rc;
  /* Exporters, then processors: instances first, pipelines after. */
  static const sp_kind_t order[] = {SP_KIND_EXTENSION, SP_KIND_EXPORTER, SP_KIND_PROCESSOR};
  for (size_t o = 0; o < 3; o++)
    for (size_t i = 0; i < g->n_inst; i++) {
      sp_inst_t *in = &g->inst[i];
      if (in->kind != order[o])
        continue;
      if (in->used_signals == 0) {
        sp_log_warn(NULL, "%s \"%s\" is configured but not used in any pipeline",
                    sp_kind_name(in->kind), in->id);
        continue;
      }
      if ((rc = sp__create_inst(g, in, errs)) != 0)
        return rc;
      if (in->kind == SP_KIND_EXPORTER && in->comp->input == NULL) {
        sp_errors_add(errs, in->mark, NULL, "exporter \"%s\" has no input", in->id);
        return SP_ESTATE;
      }
    }
  for (size_t i = 0; i < g->n_pipes; i++) {
    sp_pipe_t *p = &g->pipes[i];
    size_t n = p->n[SP_LIST_EXPORTERS];
    sp_consumer_t **inputs = sp_malloc((n > 0 ? n : 1) * sizeof(*inputs));
    if (inputs == NULL)
      return SP_ENOMEM;
    for (size_t j = 0; j < n; j++)
      inputs[j] = p->list[SP_LIST_EXPORTERS][j]->comp->input;
    p->exp_fanout = sp_fanout_create(inputs, n); /* copies the array */
    sp_free(inputs);
    if (p->exp_fanout == NULL)
      return SP_ENOMEM;
    p->own_fanout = n > 1;
    sp_consumer_t *next = p->exp_fanout;
    for (size_t j = p->n[SP_LIST_PROCESSORS]; j-- > 0;) {
      sp_inst_t *in = p->list[SP_LIST_PROCESSORS][j];
      sp_consumer_t *input = NULL;
      rc = in->def->attach(in->comp, p->signal, next, &input);
      if (rc != 0) {
        sp_errors_add(errs, in->mark, NULL, "cannot attach processor \"%s\" to pipeline %s: %s",
                      in->id, p->id, sp_strerror(rc));
        return rc;
      }
      next = input;
    }
    p->entry = next;
  }
  for (size_t i = 0; i < g->n_inst; i++) {
    sp_inst_t *in = &g->inst[i];
    if (in->kind == SP_KIND_RECEIVER && in->used_signals != 0 &&
        (rc = sp__create_inst(g, in, errs)) != 0)
      return rc;
  }
  return 0;
}

int sp_graph_build(const sp_config_doc_t *doc, sp_host_t *host, bool create, sp_graph_t **out,
                   sp_errors_t *errs) {
  int rc = SP_ENOMEM;
  const sp_node_t *root = doc->root;
  sp_graph_t *g = sp_calloc(1, sizeof(*g));
  if (g == NULL)
    goto fail;
  g->doc = doc;
  g->host = host;
  size_t total = 0;
  for (size_t si = 0; si < 4; si++) {
    const sp_node_t *sec = sp_node_get(root, sp__sections[si]);
    if (sec != NULL && sec->kind == SP_NODE_MAP)
      total += sec->n;
  }
  g->inst = sp_calloc(total > 0 ? total : 1, sizeof(sp_inst_t));
  if (g->inst == NULL)
    goto fail;
  rc = 0;
  for (size_t i = 0; i < root->n; i++) {
    const char *k = root->keys[i];
    bool known = strcmp(k, "service") == 0 || strcmp(k, "connectors") == 0;
    for (size_t si = 0; si < 4; si++)
      known = known || strcmp(k, sp__sections[si]) == 0;
    if (!known) {
      sp_errors_add(errs, &root->key_marks[i], k,
                    "unknown top-level key (known: receivers, processors, exporters, extensions, "
                    "service)");
      rc = SP_ECONFIG;
    } else if (strcmp(k, "connectors") == 0 && root->items[i]->kind == SP_NODE_MAP &&
               root->items[i]->n > 0) {
      sp_errors_add(errs, &root->key_marks[i], k, "connectors are not supported");
      rc = SP_ECONFIG;
    }
  }
  for (size_t si = 0; si < 4; si++) {
    int src = sp__read_section(g, root, si, errs);
    if (src == SP_ENOMEM) {
      rc = src;
      goto fail;
    }
    if (src != 0)
      rc = SP_ECONFIG;
  }
  int svc = sp__read_service(g, root, errs);
  if (svc == SP_ENOMEM) {
    rc = svc;
    goto fail;
  }
  if (svc != 0 || rc != 0) {
    rc = SP_ECONFIG;
    goto fail;
  }
  if (create && (rc = sp__wire(g, errs)) != 0)
    goto fail;
  *out = g;
  return 0;
fail:
  sp_graph_destroy(g);
  return rc;
}

const sp_service_settings_t *sp_graph_settings(const sp_graph_t *self) { return &self->settings; }

size_t sp_graph_pipeline_count(const sp_graph_t *self) { return self->n_pipes; }

sp_component_t *sp_graph_component(sp_graph_t *self, sp_kind_t kind, const char *id) {
  sp_inst_t *in = sp__find(self, kind, id);
  return in != NULL ? in->comp : NULL;
}

/* ---- lifecycle --------------------------------------------------------------- */

/*
 * The telemetry endpoint: GET /metrics is the self-metrics registry in
 * Prometheus text format, GET /health answers 200 while the pipelines run.
 */
static void sp__metrics_handler(sp_http_request_t *req, void *ctx) {
  sp_graph_t *g = ctx;
  if (req->error_status != 0) {
    sp_http_respond(req, req->error_status, "text/plain", req->error_message,
                    strlen(req->error_message), NULL, 0);
    return;
  }
  if (strcmp(req->path, "/health") == 0) {
    /* For liveness/readiness probes: answered only while the graph runs. */
    static const char ok[] = "{\"status\":\"Server available\"}";
    sp_http_respond(req, g->shutting ? 503 : 200, "application/json", ok, sizeof(ok) - 1, NULL,
                    0);
    return;
  }
  if (strcmp(req->path, "/metrics") != 0) {
    sp_http_respond(req, 404, "text/plain", "404 page not found\n", 19, NULL, 0);
    return;
  }
  sp_buf_t out;
  sp_buf_init(&out, 0);
  if (sp_telemetry_render(g->host->telemetry, &out) != 0)
    sp_http_respond(req, 500, "text/plain", "out of memory\n", 14, NULL, 0);
  else
    sp_http_respond(req, 200, "text/plain; version=0.0.4; charset=utf-8", out.data, out.len,
                    NULL, 0);
  sp_buf_free(&out);
}

static int sp__metrics_start(sp_graph_t *g) {
  const sp_service_settings_t *s = &g->settings;
  if (s->metrics.level == 0 || s->metrics.address == NULL || s->metrics.address[0] == '\0' ||
      g->host->telemetry == NULL)
    return 0;
  sp_http_server_options_t opts = {.endpoint = s->metrics.address,
                                   .component = "telemetry",
                                   .max_body_size = 64 * 1024,
                                   .handler = sp__metrics_handler,
                                   .handler_ctx = g};
  int rc = sp_http_server_create(g->host->loop, &opts, &g->metrics);
  if (rc == 0)
    rc = sp_http_server_start(g->metrics);
  if (rc != 0)
    sp_log_error(NULL, "cannot serve metrics on %s: %s", s->metrics.address, sp_strerror(rc));
  return rc;
}

/* Starts one instance; logs why when it cannot. */
static int sp__start_inst(sp_inst_t *in) {
  int rc = in->def->start != NULL ? in->def->start(in->comp) : 0;
  if (rc != 0) {
    sp_log_error(NULL, "cannot start %s \"%s\": %s", sp_kind_name(in->kind), in->id,
                 sp_strerror(rc));
    return rc;
  }
  in->started = true;
  return 0;
}

int sp_graph_start(sp_graph_t *self) {
  static const sp_kind_t order[] = {SP_KIND_EXTENSION, SP_KIND_EXPORTER, SP_KIND_PROCESSOR,
                                    SP_KIND_RECEIVER};
  for (size_t o = 0; o < 4; o++) {
    /* Processors downstream first: the last level of every pipeline, then inwards. */
    size_t levels = order[o] == SP_KIND_PROCESSOR ? self->max_level + 1 : 1;
    for (size_t l = levels; l-- > 0;)
      for (size_t i = 0; i < self->n_inst; i++) {
        sp_inst_t *in = &self->inst[i];
        if (in->kind != order[o] || in->comp == NULL ||
            (order[o] == SP_KIND_PROCESSOR && in->level != l))
          continue;
        int rc = sp__start_inst(in);
        if (rc != 0)
          return rc;
      }
  }
  return sp__metrics_start(self);
}

static void sp__phase(sp_graph_t *g);

static void sp__defer_closed(uv_handle_t *h) {
  sp_graph_t *g = h->data;
  g->defer_init = false;
  sp_done_cb cb = g->cb;
  g->cb = NULL;
  if (cb != NULL)
    cb(g->cb_arg);
}

static void sp__inst_done(void *arg) {
  sp_inst_t *in = arg;
  sp_graph_t *g = in->graph;
  if (--g->pending == 0) {
    g->phase++;
    sp__phase(g);
  }
}

static void sp__metrics_down(void *arg) {
  sp_graph_t *g = arg;
  uv_close((uv_handle_t *)&g->defer, sp__defer_closed);
}

/*
 * Runs shutdown step by step: receivers, then processors level by level
 * (those first in their pipelines first, so each flushes into a processor
 * that still accepts), then exporters, then extensions.
 */
static void sp__phase(sp_graph_t *g) {
  size_t n_steps = 1 + (g->max_level + 1) + 2;
  while ((size_t)g->phase < n_steps) {
    size_t step = (size_t)g->phase;
    sp_kind_t kind = step == 0                 ? SP_KIND_RECEIVER
                     : step <= g->max_level + 1 ? SP_KIND_PROCESSOR
                     : step == g->max_level + 2 ? SP_KIND_EXPORTER
                                                : SP_KIND_EXTENSION;
    size_t level = step - 1;
    size_t n = 0;
    for (size_t i = 0; i < g->n_inst; i++) {
      sp_inst_t *in = &g->inst[i];
      if (in->kind == kind && in->comp != NULL && (kind != SP_KIND_PROCESSOR || in->level == level))
        n++;
    }
    if (n > 0) {
      /* Count first: components report from the loop, never inline. */
      g->pending = n;
      for (size_t i = 0; i < g->n_inst; i++) {
        sp_inst_t *in = &g->inst[i];
        if (in->kind == kind && in->comp != NULL &&
            (kind != SP_KIND_PROCESSOR || in->level == level))
          in->def->shutdown(in->comp, sp__inst_done, in);
      }
      return;
    }
    g->phase++;
  }
  if (g->metrics != NULL && !g->metrics_down) {
    g->metrics_down = true;
    /* Last to stop: whatever drain time is left, at least 100 ms, so a scrape can finish. */
    uint64_t now = uv_now(g->host->loop);
    uint64_t left = g->host->drain_deadline > now ? g->host->drain_deadline - now : 0;
    sp_http_server_shutdown_within(g->metrics, left < 100 ? 100 : left, sp__metrics_down, g);
    return;
  }
  /* Everything is down; report from a close callback so it is never inline. */
  uv_close((uv_handle_t *)&g->defer, sp__defer_closed);
}

void sp_graph_shutdown(sp_graph_t *self, uint64_t timeout_ms, sp_done_cb cb, void *arg) {
  if (self->shutting)
    return;
  self->shutting = true;
  self->cb = cb;
  self->cb_arg = arg;
  self->host->drain_deadline = uv_now(self->host->loop) + timeout_ms;
  uv_timer_init(self->host->loop, &self->defer);
  self->defer.data = self;
  self->defer_init = true;
  self->phase = 0;
  sp__phase(self);
}

void sp_graph_destroy(sp_graph_t *self) {
  if (self == NULL)
    return;
  for (size_t i = 0; i < self->n_inst; i++) {
    sp_inst_t *in = &self->inst[i];
    if (in->comp != NULL) {
      char *id = in->comp->id;
      in->def->destroy(in->comp);
      sp_free(id);
    }
    if (in->fan_traces != NULL)
      sp_fanout_destroy(in->fan_traces);
    if (in->fan_profiles != NULL)
      sp_fanout_destroy(in->fan_profiles);
    if (in->config != NULL && in->def->schema != NULL)
      sp_cfg_free(in->def->schema, in->config);
    sp_free(in->config);
  }
  for (size_t i = 0; i < self->n_pipes; i++) {
    sp_pipe_t *p = &self->pipes[i];
    if (p->own_fanout)
      sp_fanout_destroy(p->exp_fanout);
    for (int w = 0; w < 3; w++)
      sp_free(p->list[w]);
  }
  sp_http_server_destroy(self->metrics);
  if (self->settings_decoded)
    sp_cfg_free(&sp__service_schema, &self->settings);
  sp_free(self->pipes);
  sp_free(self->inst);
  sp_free(self);
}
