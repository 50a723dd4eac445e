/*
 * config.h — YAML configuration: a marked node tree, error collection, and
 * schema-driven decoding of component settings.
 *
 * Loading (libyaml's document API) turns one or more files into a tree of
 * sp_node_t whose every node remembers `file:line:col`. `${env:VAR}`,
 * `${VAR}` and `${env:VAR:-default}` are substituted in scalars while
 * loading and `$$` stands for a literal `$`; an unset variable without a
 * default becomes the empty string (as in the OpenTelemetry Collector).
 * Several files are deep-merged in order: maps merge key by key, anything
 * else is replaced by the later file.
 *
 * Components never walk YAML themselves. Each declares one table of
 * sp_cfg_field_t (key, type, offset into its config struct, default, limits)
 * and the core decodes a node into the struct with sp_cfg_decode(), reporting
 * every problem at once as `file:line:col: path: message` into an
 * sp_errors_t. Defaults are written as YAML scalar text and go through the
 * same parsers as user input, so a default can never disagree with what a
 * user could write.
 *
 * Not thread-safe; used on the loop thread or before the loop starts.
 */
#ifndef SP_CONFIG_H
#define SP_CONFIG_H

#include "pipeline/arena.h"

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ---- node tree ------------------------------------------------------------ */

typedef enum sp_node_kind_e {
  SP_NODE_NULL = 0, /* `~`, `null`, or an empty value */
  SP_NODE_SCALAR,
  SP_NODE_MAP,
  SP_NODE_SEQ,
} sp_node_kind_t;

/** Where a node starts: file name as given, 1-based line and column. */
typedef struct sp_mark_s {
  const char *file;
  int line;
  int col;
} sp_mark_t;

typedef struct sp_node_s sp_node_t;

struct sp_node_s {
  sp_node_kind_t kind;
  sp_mark_t mark;
  /* SP_NODE_SCALAR: the text after env substitution, NUL-terminated. */
  const char *scalar;
  bool quoted; /* the scalar was quoted in YAML (never a number/bool/null) */
  /* SP_NODE_MAP / SP_NODE_SEQ: n children; for maps keys[i] names items[i]. */
  size_t n;
  const char **keys;      /* maps only */
  sp_mark_t *key_marks;   /* maps only */
  sp_node_t **items;
};

/** A loaded configuration: the tree and the arena that holds it. */
typedef struct sp_config_doc_s {
  sp_arena_t *arena;
  sp_node_t *root; /* a map (an empty map for an empty file) */
} sp_config_doc_t;

/* ---- errors --------------------------------------------------------------- */

/** Collected error lines, each "file:line:col: path: message". */
typedef struct sp_errors_s {
  char **lines;
  size_t n;
  size_t cap;
} sp_errors_t;

/** Adds one error. @p mark may be NULL (no position), @p path may be NULL or "". */
void sp_errors_add(sp_errors_t *self, const sp_mark_t *mark, const char *path, const char *fmt,
                   ...) __attribute__((format(printf, 4, 5)));
void sp_errors_vadd(sp_errors_t *self, const sp_mark_t *mark, const char *path, const char *fmt,
                    va_list ap);
/** Frees the lines; the struct itself is the caller's. Accepts NULL. */
void sp_errors_free(sp_errors_t *self);
/** Writes every line to @p fd, one per line. */
void sp_errors_print(const sp_errors_t *self, int fd);

/* ---- loading -------------------------------------------------------------- */

/**
 * Loads and deep-merges @p n files in order. On success *out owns the tree
 * (free with sp_config_doc_free). Every problem (unreadable file, YAML syntax
 * error, malformed `${...}`) is added to @p errs. Returns 0, SP_ECONFIG
 * (errors added) or SP_ENOMEM.
 */
int sp_config_load_files(const char *const *paths, size_t n, sp_config_doc_t **out,
                         sp_errors_t *errs);

/** Like sp_config_load_files for one in-memory document named @p name in marks. */
int sp_config_load_string(const char *name, const char *yaml, size_t len, sp_config_doc_t **out,
                          sp_errors_t *errs);

/** Frees a document. Accepts NULL. */
void sp_config_doc_free(sp_config_doc_t *doc);

/** Looks up @p key in map node @p map; NULL when absent or @p map is not a map. */
const sp_node_t *sp_node_get(const sp_node_t *map, const char *key);

/** A node's kind as a word for messages: "a map", "a list", "a scalar", "null". */
const char *sp_node_kind_name(const sp_node_t *node);

/* ---- scalar parsers (shared by decode and by callers with special keys) --- */

/** "true/false/yes/no/on/off" (case-insensitive). 0 or SP_EINVAL. */
int sp_parse_bool(const char *s, bool *out);
/** Decimal / 0x hex integer with overflow check. 0 or SP_EINVAL. */
int sp_parse_int(const char *s, int64_t *out);
int sp_parse_double(const char *s, double *out);
/**
 * Duration in milliseconds: "250ms", "5s", "1m", "1h", "1m30s", "1.5s",
 * "100us"/"100ns" rounded up to 1 ms when non-zero, a bare "0". A bare number
 * other than 0 is rejected (ambiguous unit). 0 or SP_EINVAL.
 */
int sp_parse_duration_ms(const char *s, uint64_t *out);
/** Size in bytes: "512", "512B", "64KiB", "4MiB", "1GiB", "10KB"/"10MB" (powers of 1000), case-insensitive units. */
int sp_parse_size(const char *s, uint64_t *out);

/* ---- schema-driven decoding ----------------------------------------------- */

typedef enum sp_cfg_type_e {
  SP_CFG_BOOL,     /* bool */
  SP_CFG_INT,      /* int64_t */
  SP_CFG_DOUBLE,   /* double */
  SP_CFG_STRING,   /* char * (sp_malloc'd; NULL when unset without default) */
  SP_CFG_DURATION, /* uint64_t milliseconds */
  SP_CFG_SIZE,     /* uint64_t bytes */
  SP_CFG_ENUM,     /* int: index into enum_values */
  SP_CFG_STRLIST,  /* sp_strlist_t; a single scalar is accepted as a one-item list */
  SP_CFG_STRMAP,   /* sp_strmap_t: a map of scalar values */
  SP_CFG_SECTION,  /* a nested struct stored inline at offset; see present_offset */
  SP_CFG_LIST,     /* sp_cfg_list_t of nested structs (schema->size each) */
} sp_cfg_type_t;

/** A list of strings owned by the config struct. */
typedef struct sp_strlist_s {
  char **items;
  size_t n;
} sp_strlist_t;

/** Ordered key → value strings owned by the config struct. */
typedef struct sp_strmap_s {
  char **keys;
  char **values;
  size_t n;
} sp_strmap_t;

/** A list of decoded sections: n items of the section schema's size, contiguous. */
typedef struct sp_cfg_list_s {
  void *items;
  size_t n;
} sp_cfg_list_t;

#define SP_CFG_REQUIRED 0x1u /* error when the key is absent */
#define SP_CFG_NONEMPTY 0x2u /* strings/lists: error when empty */
#define SP_CFG_PRESENT 0x4u  /* sections: record presence at present_offset */

typedef struct sp_cfg_schema_s sp_cfg_schema_t;

typedef struct sp_cfg_field_s {
  const char *key;
  sp_cfg_type_t type;
  size_t offset;            /* offsetof(config struct, member) */
  unsigned flags;           /* SP_CFG_REQUIRED | SP_CFG_NONEMPTY */
  const char *def;          /* default as YAML scalar text; NULL = zero/NULL/absent */
  double min, max;          /* INT/DOUBLE/DURATION(ms)/SIZE bounds, checked when min < max */
  const char *const *enum_values;  /* SP_CFG_ENUM: NULL-terminated names */
  const sp_cfg_schema_t *section;  /* SP_CFG_SECTION / SP_CFG_LIST */
  /*
   * SP_CFG_SECTION with SP_CFG_PRESENT: offset, inside the section's own
   * struct, of a bool set to true when the key is present, so `tls: {}`
   * differs from no `tls` at all.
   */
  size_t present_offset;
} sp_cfg_field_t;

/**
 * Cross-field validation run after the fields were decoded. @p node is the
 * section's node (NULL when absent) for error marks, @p path its YAML path.
 * Adds errors to @p errs and returns 0 or SP_ECONFIG.
 */
typedef int (*sp_cfg_validate_fn)(void *cfg, const sp_node_t *node, const char *path,
                                  sp_errors_t *errs);

struct sp_cfg_schema_s {
  const sp_cfg_field_t *fields;
  size_t n_fields;
  size_t size;                /* sizeof the struct (for SP_CFG_LIST items) */
  sp_cfg_validate_fn validate; /* optional */
};

/**
 * Decodes @p node (a map, or NULL/null for "all defaults") into @p out, which
 * must be zeroed and schema->size bytes. Applies defaults, rejects unknown
 * keys, wrong types, out-of-range values and missing required keys, then runs
 * schema->validate. @p path names the node in messages ("receivers::otlp").
 * @p parent_mark is used for errors about a NULL node (missing keys). All
 * problems go to @p errs; returns 0, SP_ECONFIG or SP_ENOMEM. On failure the
 * struct may be partly filled: free it with sp_cfg_free either way.
 */
int sp_cfg_decode(const sp_cfg_schema_t *schema, const sp_node_t *node, const char *path,
                  const sp_mark_t *parent_mark, void *out, sp_errors_t *errs);

/** Frees everything sp_cfg_decode allocated inside @p cfg (not @p cfg itself). Accepts NULL. */
void sp_cfg_free(const sp_cfg_schema_t *schema, void *cfg);

/** Looks up a key in a decoded string map; NULL when absent. */
const char *sp_strmap_get(const sp_strmap_t *map, const char *key);

/**
 * Shared schemas for pipeline/tls.h's sp_tls_config_t: the server side
 * (cert_file, key_file, client_ca_file, min_version) and the client side
 * (insecure, ca_file, cert_file, key_file, server_name_override,
 * insecure_skip_verify, min_version). Use with SP_CFG_SECTION | SP_CFG_PRESENT
 * and present_offset = offsetof(sp_tls_config_t, present).
 */
extern const sp_cfg_schema_t sp_tls_server_schema;
extern const sp_cfg_schema_t sp_tls_client_schema;

/* ---- internal (between config.c and config_schema.c) ---------------------- */

/**
 * Parses @p text as one YAML value of any kind (flow lists and maps such as
 * "[a, b]" included), without `${...}` substitution, into nodes allocated in
 * @p arena; marks name the file "<default>". Empty text gives a null node.
 * Used to decode STRLIST/STRMAP defaults with the same code as user input.
 * Returns 0, SP_ECONFIG (errors added to @p errs) or SP_ENOMEM.
 */
int sp__config_parse_value(sp_arena_t *arena, const char *text, const sp_node_t **out,
                           sp_errors_t *errs);

#endif
