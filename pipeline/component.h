/*
 * component.h — the vtables every receiver, processor and exporter fills in.
 *
 * A component type is one `const sp_component_def_t` with designated
 * initialisers, listed once in pipeline/components.c. The core decodes the
 * component's YAML section with the type's config schema (config.h) into a
 * struct of `config_size` bytes, then calls `create` with it; the decoded
 * config lives until the instance is destroyed.
 *
 * Instances embed sp_component_t first. Lifecycle (OpenTelemetry Collector
 * rules): `create` (and `attach`) allocate and check things that need no
 * I/O and open no libuv handle, so an instance that never started can be
 * destroyed directly; `start`
 * binds sockets and arms timers, never blocks, and may fail (the service then
 * rolls back); `shutdown` is asynchronous, idempotent and safe without
 * `start`: it calls its callback exactly once, from the loop and never from
 * inside the shutdown call itself, after the instance has released every
 * libuv handle; `destroy` frees it afterwards. The service starts exporters,
 * then processors, then receivers, and shuts them down in the reverse order,
 * so data drains downstream. During shutdown, sp_host_t.drain_deadline says
 * by when queued data must be out (loop time, ms).
 *
 * Exporters expose one consumer (sp_component_t.input) shared by every
 * pipeline that lists them. Processors get `attach` called once per pipeline
 * they appear in and return that pipeline's input consumer; one instance thus
 * sees every pipeline that lists its ID (how the span-profile join sees both
 * signals). Receivers get, in their create settings, one consumer per signal
 * that fans out to every pipeline listing them.
 */
#ifndef SP_COMPONENT_H
#define SP_COMPONENT_H

#include "pipeline/config.h"
#include "pipeline/consumer.h"
#include "pipeline/telemetry.h"

#include <uv.h>

typedef enum sp_kind_e {
  SP_KIND_RECEIVER = 0,
  SP_KIND_PROCESSOR,
  SP_KIND_EXPORTER,
  SP_KIND_EXTENSION,
} sp_kind_t;

/** Signals, as a bitmask in definitions. */
enum {
  SP_SIGNAL_TRACES = 1u << 0,
  SP_SIGNAL_PROFILES = 1u << 1,
};

typedef struct sp_component_def_s sp_component_def_t;
typedef struct sp_component_s sp_component_t;

/** Something a component hands over to its successor across a reload. */
typedef struct sp_stash_s {
  char *key;                    /* e.g. "spanprofile:spanprofile/x" */
  void *state;
  void (*free_state)(void *state); /* called if nobody takes it */
  struct sp_stash_s *next;
} sp_stash_t;

/** What the running service offers components. Owned by the service. */
typedef struct sp_host_s {
  uv_loop_t *loop;
  sp_telemetry_t *telemetry;
  uint64_t drain_deadline; /* uv_now() value by which shutdown must finish draining */
  /*
   * True while the graph shuts down for a reload (SIGHUP): a component
   * holding state worth keeping (the join's window) may put it in the stash
   * instead of flushing it, and its successor — created right after, for the
   * new configuration — takes it back. Whatever stays in the stash once the
   * new graph runs is freed with free_state.
   */
  bool reloading;
  sp_stash_t *stash;
} sp_host_t;

/** Parks @p state under @p key (copied) for the next graph. 0 or SP_ENOMEM. */
int sp_host_stash_put(sp_host_t *host, const char *key, void *state, void (*free_state)(void *));
/** Takes back what was parked under @p key, or NULL. The caller owns it afterwards. */
void *sp_host_stash_take(sp_host_t *host, const char *key);
/** Frees everything left in the stash. */
void sp_host_stash_clear(sp_host_t *host);

typedef void (*sp_done_cb)(void *arg);

/** Everything `create` gets besides its config. Valid during create; copy what you keep. */
typedef struct sp_create_settings_s {
  sp_host_t *host;
  const char *id;            /* "otlp" or "otlp/name" */
  /* Receivers only: where to send each signal (NULL when no pipeline of that signal lists it). */
  sp_consumer_t *next_traces;
  sp_consumer_t *next_profiles;
} sp_create_settings_t;

/** The part every instance starts with; filled by the core after create. */
struct sp_component_s {
  const sp_component_def_t *def;
  sp_host_t *host;
  char *id;              /* owned by the core */
  const void *config;    /* decoded config; owned by the core */
  sp_consumer_t *input;  /* exporters: set by create */
};

struct sp_component_def_s {
  sp_kind_t kind;
  const char *type;               /* "otlp", "spanprofile", ... */
  const char *const *aliases;     /* NULL-terminated other names, or NULL */
  unsigned signals;               /* SP_SIGNAL_* mask */
  const char *stability;          /* "development", "alpha", "beta", "stable" */
  const char *description;        /* one line for `spanprofd components` */
  const sp_cfg_schema_t *schema;  /* config table; NULL = takes no settings */
  size_t config_size;             /* sizeof the config struct */
  /*
   * A small YAML config that makes a working instance for the conformance
   * test (tests/unit/test_conformance.c) when the defaults alone are not
   * enough (a required endpoint) or would bind well-known ports: listeners
   * use 127.0.0.1:0. NULL = the defaults.
   */
  const char *example;

  /** Allocates an instance (no I/O). 0 or SP_E* with a log line saying why. */
  int (*create)(const sp_create_settings_t *set, const void *config, sp_component_t **out);
  /** Processors only: called once per pipeline (signal = SP_SIGNAL_*). Returns that pipeline's input. */
  int (*attach)(sp_component_t *self, unsigned signal, sp_consumer_t *next,
                sp_consumer_t **input);
  /** Starts I/O. Never blocks. 0 or SP_E* (logged by the component). */
  int (*start)(sp_component_t *self);
  /** Stops; see the lifecycle rules above. */
  void (*shutdown)(sp_component_t *self, sp_done_cb cb, void *arg);
  /** Frees the instance after shutdown completed or when start never ran. */
  void (*destroy)(sp_component_t *self);
};

/**
 * How long a receiver may take to stop (close listeners, finish or abandon
 * requests in flight) during a shutdown: receivers are the first stage, so
 * they get half of the drain time left, at least 100 ms, and processors and
 * exporters keep the rest to drain what was accepted. UINT64_MAX when no
 * deadline is set (a direct shutdown, as in tests). Loop thread.
 */
uint64_t sp_host_receiver_stop_budget(const sp_host_t *host);

/** Splits "type/name": returns the length of the type part. */
size_t sp_component_id_type_len(const char *id);

/** Looks up a definition by kind and type name or alias; NULL when unknown. */
const sp_component_def_t *sp_registry_find(sp_kind_t kind, const char *type, size_t type_len);

/** Every registered definition (NULL-terminated). */
const sp_component_def_t *const *sp_registry_all(void);

/** "receiver", "processor", "exporter", "extension". */
const char *sp_kind_name(sp_kind_t kind);

#endif
