/*
 * config.c — loading YAML into a marked node tree: error lines, `${...}`
 * substitution, deep merge of several files, and the scalar parsers.
 *
 * libyaml's event API feeds a small recursive reader that builds sp_node_t
 * nodes in the document's arena, so the whole tree is freed with one call
 * and no component ever sees libyaml types. (Events rather than libyaml's
 * document loader because reading can then stop at the nesting limit:
 * libyaml's scanner is quadratic in flow nesting depth, and the document
 * loader would read a hostile file to its end first.) While reading we do
 * what libyaml leaves to its users:
 *
 *   - marks become 1-based (libyaml counts lines and columns from 0);
 *   - aliases share the anchored node (the tree is really a DAG, which
 *     is harmless because nothing mutates it after loading, and it keeps a
 *     "billion laughs" document from expanding);
 *   - `<<` merge keys copy in the entries of the referenced map(s) that the
 *     map does not set itself;
 *   - duplicate keys are reported instead of the later one silently winning;
 *   - `${env:VAR}`, `${VAR}`, `${env:VAR:-default}` and `$$` are expanded in
 *     every scalar value (never in keys), and a plain scalar whose text is
 *     then empty, `~` or `null` becomes a SP_NODE_NULL node, so
 *     `timeout: ${TIMEOUT}` with TIMEOUT unset means "use the default".
 *
 * Problems do not stop the reader at the first one: every error is added to
 * the caller's sp_errors_t, reading goes on, and the document is thrown away
 * at the end if anything was reported. Only SP_ENOMEM, a YAML syntax error
 * (libyaml cannot resume after one) and excessive nesting stop early.
 *
 * Error lines are built as `file:line:col: path: message`. Paths are kept as
 * a chain of stack frames while walking the tree and only rendered into a
 * string when an error needs one, so a clean load does not pay for them.
 */
#include "pipeline/config.h"

#include "pipeline/alloc.h"
#include "pipeline/buf.h"
#include "pipeline/error.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>
#include <yaml.h>

/* Deeper nesting than this is refused: no sane config needs it, and the
 * conversion, merge and decode all recurse once per level. */
#define MAX_DEPTH 256

/* Longest environment variable name accepted inside `${...}`. */
#define MAX_ENV_NAME 255

/* ---- errors --------------------------------------------------------------- */

/* vsnprintf into an sp_malloc'd string; NULL on OOM. */
static char *vformat(const char *fmt, va_list ap) {
  va_list ap2;
  va_copy(ap2, ap);
  int n = vsnprintf(NULL, 0, fmt, ap2);
  va_end(ap2);
  if (n < 0) return NULL;
  char *s = sp_malloc((size_t)n + 1);
  if (s) vsnprintf(s, (size_t)n + 1, fmt, ap);
  return s;
}

void sp_errors_vadd(sp_errors_t *self, const sp_mark_t *mark, const char *path, const char *fmt,
                    va_list ap) {
  char *msg = vformat(fmt, ap);
  char *line = NULL;
  if (!msg) goto fail;

  /* A mark with line 0 is "no position" (for example the mark of a root
   * made up for an empty list of files). */
  char where[64] = "";
  const char *file = "";
  if (mark && mark->line > 0) {
    file = mark->file ? mark->file : "";
    snprintf(where, sizeof(where), "%s%d:%d: ", mark->file ? ":" : "", mark->line, mark->col);
  }
  bool has_path = path && *path;
  line = sp_sprintf("%s%s%s%s%s", file, where, has_path ? path : "", has_path ? ": " : "", msg);
  if (!line) goto fail;

  if (self->n == self->cap) {
    size_t cap = self->cap ? self->cap * 2 : 8;
    char **lines = sp_realloc(self->lines, cap * sizeof(*lines));
    if (!lines) goto fail;
    self->lines = lines;
    self->cap = cap;
  }
  self->lines[self->n++] = line;
  sp_free(msg);
  return;

fail:
  /* Out of memory: the line is lost. Callers that must know compare n
   * before and after (see add_error below). */
  sp_free(line);
  sp_free(msg);
}

void sp_errors_add(sp_errors_t *self, const sp_mark_t *mark, const char *path, const char *fmt,
                   ...) {
  va_list ap;
  va_start(ap, fmt);
  sp_errors_vadd(self, mark, path, fmt, ap);
  va_end(ap);
}

void sp_errors_free(sp_errors_t *self) {
  if (!self) return;
  for (size_t i = 0; i < self->n; i++)
    sp_free(self->lines[i]);
  sp_free(self->lines);
  self->lines = NULL;
  self->n = self->cap = 0;
}

static void write_all(int fd, const char *s, size_t len) {
  while (len > 0) {
    ssize_t w = write(fd, s, len);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return; /* nothing sensible to do about a broken stderr */
    s += w;
    len -= (size_t)w;
  }
}

void sp_errors_print(const sp_errors_t *self, int fd) {
  for (size_t i = 0; i < self->n; i++) {
    write_all(fd, self->lines[i], strlen(self->lines[i]));
    write_all(fd, "\n", 1);
  }
}

/* Adds an error and says whether it could be stored: 0, or SP_ENOMEM. */
static int add_error(sp_errors_t *errs, const sp_mark_t *mark, const char *path, const char *fmt,
                     ...) __attribute__((format(printf, 4, 5)));
static int add_error(sp_errors_t *errs, const sp_mark_t *mark, const char *path, const char *fmt,
                     ...) {
  size_t before = errs->n;
  va_list ap;
  va_start(ap, fmt);
  sp_errors_vadd(errs, mark, path, fmt, ap);
  va_end(ap);
  return errs->n > before ? 0 : SP_ENOMEM;
}

/* ---- paths ---------------------------------------------------------------- */

/* One step of the YAML path from the root to the node being converted. */
typedef struct path_s {
  const struct path_s *up;
  const char *key; /* map key, or NULL for a list item */
  size_t index;    /* list index when key is NULL */
} path_t;

static int path_append(sp_buf_t *b, const path_t *p) {
  if (!p) return 0;
  int rc = path_append(b, p->up);
  if (rc) return rc;
  if (!p->key) return sp_buf_printf(b, "[%zu]", p->index);
  if (b->len > 0 && (rc = sp_buf_puts(b, "::"))) return rc;
  return sp_buf_puts(b, p->key);
}

/* "receivers::otlp::protocols" or "service::pipelines::traces::receivers[1]";
 * "" for the root. sp_malloc'd; NULL on OOM. */
static char *path_render(const path_t *p) {
  sp_buf_t b;
  sp_buf_init(&b, 0);
  if (path_append(&b, p) || sp_buf_reserve(&b, 0)) {
    sp_buf_free(&b);
    return NULL;
  }
  sp_buf_cstr(&b);
  size_t len;
  return (char *)sp_buf_steal(&b, &len);
}

/* ---- the loader ----------------------------------------------------------- */

/* An `&name` seen so far; aliases refer to the latest one of that name. */
typedef struct anchor_s {
  const char *name; /* in the arena */
  sp_node_t *node;
  bool building; /* the anchored collection is still being read */
} anchor_t;

typedef struct loader_s {
  sp_arena_t *arena;
  sp_errors_t *errs;
  const char *file; /* name used in marks; lives in the arena */
  yaml_parser_t *parser;
  const char *buf; /* the input, to place encoding errors */
  size_t len;
  anchor_t *anchors; /* sp_malloc'd, freed when parsing ends */
  size_t n_anchors, cap_anchors;
  bool substitute; /* expand `${...}` (not for schema defaults) */
  int rc;          /* SP_ENOMEM once an allocation failed */
  bool failed;     /* at least one problem was reported */
  bool stop;       /* a syntax error or excessive nesting: read no further */
} loader_t;

static sp_mark_t ld_mark(const loader_t *ld, yaml_mark_t m) {
  return (sp_mark_t){.file = ld->file, .line = (int)m.line + 1, .col = (int)m.column + 1};
}

static void *ld_oom(loader_t *ld) {
  ld->rc = SP_ENOMEM;
  return NULL;
}

static void ld_error(loader_t *ld, const sp_mark_t *mark, const path_t *path, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void ld_error(loader_t *ld, const sp_mark_t *mark, const path_t *path, const char *fmt,
                     ...) {
  ld->failed = true;
  char *p = path_render(path);
  if (!p) {
    ld->rc = SP_ENOMEM;
    return;
  }
  size_t before = ld->errs->n;
  va_list ap;
  va_start(ap, fmt);
  sp_errors_vadd(ld->errs, mark, p, fmt, ap);
  va_end(ap);
  if (ld->errs->n == before) ld->rc = SP_ENOMEM;
  sp_free(p);
}

static bool is_null_word(const char *s) {
  return !*s || !strcmp(s, "~") || !strcmp(s, "null") || !strcmp(s, "Null") || !strcmp(s, "NULL");
}

static bool is_env_name(const char *s, size_t n) {
  if (n == 0 || isdigit((unsigned char)s[0])) return false;
  for (size_t i = 0; i < n; i++)
    if (!isalnum((unsigned char)s[i]) && s[i] != '_') return false;
  return true;
}

/*
 * Expands `$$` and `${...}` references in raw[0..len). With out == NULL it
 * only validates and measures; otherwise it writes the result (the caller
 * sized out from the measuring pass). On a malformed reference it reports
 * it (only when reporting, i.e. on the measuring pass) and returns
 * SP_ECONFIG; otherwise 0 with *out_len set.
 *
 * `${env:VAR:-default}` and `${VAR:-default}` use the default when VAR is
 * unset or empty, as `:-` does in the shell. The default is taken literally
 * up to the first `}`.
 */
static int expand_env(loader_t *ld, const char *raw, size_t len, char *out, size_t *out_len,
                      const sp_mark_t *mark, const path_t *path) {
  size_t o = 0;
  size_t i = 0;
  while (i < len) {
    if (raw[i] != '$' || i + 1 >= len || (raw[i + 1] != '$' && raw[i + 1] != '{')) {
      /* Ordinary text, including a lone `$` (as in "pa$word"). */
      if (out) out[o] = raw[i];
      o++, i++;
      continue;
    }
    if (raw[i + 1] == '$') {
      if (out) out[o] = '$';
      o++, i += 2;
      continue;
    }
    const char *start = raw + i + 2;
    const char *close = memchr(start, '}', len - (i + 2));
    if (!close) {
      if (!out) ld_error(ld, mark, path, "unclosed \"${\" in \"%.*s\"", (int)len, raw);
      return SP_ECONFIG;
    }
    const char *name = start;
    bool env_scheme = false;
    if ((size_t)(close - start) >= 4 && !memcmp(start, "env:", 4)) {
      name += 4;
      env_scheme = true;
    }
    const char *name_end = name;
    while (name_end < close && *name_end != ':')
      name_end++;
    const char *def = NULL;
    size_t def_len = 0;
    if (name_end < close) {
      if (close - name_end >= 2 && name_end[1] == '-') {
        def = name_end + 2;
        def_len = (size_t)(close - def);
      } else if (!env_scheme && is_env_name(name, (size_t)(name_end - name))) {
        /* `${file:...}` and friends: another provider of the Collector. */
        if (!out)
          ld_error(ld, mark, path,
                   "unsupported reference \"${%.*s}\": only environment variables "
                   "(${env:NAME} or ${NAME}) can be substituted",
                   (int)(close - start), start);
        return SP_ECONFIG;
      } else {
        name_end = close; /* report the whole thing as the name */
      }
    }
    size_t name_len = (size_t)(name_end - name);
    if (!is_env_name(name, name_len) || name_len > MAX_ENV_NAME) {
      if (!out)
        ld_error(ld, mark, path, "invalid environment variable name \"%.*s\" in \"${%.*s}\"",
                 (int)name_len, name, (int)(close - start), start);
      return SP_ECONFIG;
    }
    char key[MAX_ENV_NAME + 1];
    memcpy(key, name, name_len);
    key[name_len] = '\0';
    const char *val = getenv(key);
    size_t val_len = val ? strlen(val) : 0;
    if (val_len == 0 && def) {
      val = def;
      val_len = def_len;
    }
    if (out && val_len) memcpy(out + o, val, val_len);
    o += val_len;
    i = (size_t)(close - raw) + 1;
  }
  *out_len = o;
  return 0;
}

/* Line and column (1-based, in bytes) of byte @p off of @p buf. */
static sp_mark_t mark_at_offset(const char *file, const char *buf, size_t len, size_t off) {
  sp_mark_t m = {.file = file, .line = 1, .col = 1};
  for (size_t i = 0; i < off && i < len; i++) {
    if (buf[i] == '\n') {
      m.line++;
      m.col = 1;
    } else {
      m.col++;
    }
  }
  return m;
}

static void report_yaml_error(loader_t *ld) {
  const yaml_parser_t *p = ld->parser;
  if (p->error == YAML_MEMORY_ERROR) {
    ld->rc = SP_ENOMEM;
    return;
  }
  const char *problem = p->problem ? p->problem : "invalid YAML";
  if (p->error == YAML_READER_ERROR) {
    /* Encoding problems carry a byte offset rather than a mark. */
    sp_mark_t m = mark_at_offset(ld->file, ld->buf, ld->len, p->problem_offset);
    if (p->problem_value >= 0)
      ld_error(ld, &m, NULL, "%s (byte 0x%02x)", problem, (unsigned)p->problem_value);
    else
      ld_error(ld, &m, NULL, "%s", problem);
    return;
  }
  sp_mark_t m = ld_mark(ld, p->problem_mark);
  if (p->context)
    ld_error(ld, &m, NULL, "%s (%s at line %d, column %d)", problem, p->context,
             (int)p->context_mark.line + 1, (int)p->context_mark.column + 1);
  else
    ld_error(ld, &m, NULL, "%s", problem);
}

static sp_node_t *new_empty_map(sp_arena_t *arena, sp_mark_t mark) {
  sp_node_t *node = sp_arena_calloc(arena, sizeof(*node));
  if (node) {
    node->kind = SP_NODE_MAP;
    node->mark = mark;
  }
  return node;
}

/* A new node of @p kind in the arena; NULL (and ld->rc set) on OOM. */
static sp_node_t *new_node(loader_t *ld, sp_node_kind_t kind, yaml_mark_t mark) {
  sp_node_t *node = sp_arena_calloc(ld->arena, sizeof(*node));
  if (!node) return ld_oom(ld);
  node->kind = kind;
  node->mark = ld_mark(ld, mark);
  node->scalar = "";
  return node;
}

/* Remembers `&name` for @p node; returns its slot index, or -1 on OOM. */
static ssize_t anchor_add(loader_t *ld, const yaml_char_t *name, sp_node_t *node, bool building) {
  if (ld->n_anchors == ld->cap_anchors) {
    size_t cap = ld->cap_anchors ? ld->cap_anchors * 2 : 8;
    anchor_t *a = sp_realloc(ld->anchors, cap * sizeof(*a));
    if (!a) {
      ld->rc = SP_ENOMEM;
      return -1;
    }
    ld->anchors = a;
    ld->cap_anchors = cap;
  }
  const char *copy = sp_arena_strdup(ld->arena, (const char *)name);
  if (!copy) {
    ld->rc = SP_ENOMEM;
    return -1;
  }
  ld->anchors[ld->n_anchors] = (anchor_t){.name = copy, .node = node, .building = building};
  return (ssize_t)ld->n_anchors++;
}

/*
 * `*name`: the anchored node itself, shared (the tree becomes a DAG, which is
 * harmless since nothing mutates it, and keeps a "billion laughs" document
 * from expanding). Undefined and self-containing aliases are reported and
 * read as null so the rest of the document is still checked.
 */
static sp_node_t *resolve_alias(loader_t *ld, const yaml_event_t *ev, const path_t *path) {
  const char *name = (const char *)ev->data.alias.anchor;
  for (size_t i = ld->n_anchors; i-- > 0;) {
    if (strcmp(ld->anchors[i].name, name)) continue;
    if (!ld->anchors[i].building) return ld->anchors[i].node;
    sp_mark_t m = ld_mark(ld, ev->start_mark);
    ld_error(ld, &m, path, "alias *%s refers to a node that contains it", name);
    return ld->rc ? NULL : new_node(ld, SP_NODE_NULL, ev->start_mark);
  }
  sp_mark_t m = ld_mark(ld, ev->start_mark);
  ld_error(ld, &m, path, "undefined alias *%s (anchors must be defined before use)", name);
  return ld->rc ? NULL : new_node(ld, SP_NODE_NULL, ev->start_mark);
}

/* Pulls the next event; false (problem reported, ld->stop set) on error. */
static bool next_event(loader_t *ld, yaml_event_t *ev) {
  if (yaml_parser_parse(ld->parser, ev)) return true;
  report_yaml_error(ld);
  ld->stop = true;
  return false;
}

/* A value scalar: `${...}` expanded, plain null words made SP_NODE_NULL. */
static sp_node_t *read_scalar(loader_t *ld, const yaml_event_t *ev, const path_t *path) {
  const char *raw = (const char *)ev->data.scalar.value;
  size_t len = ev->data.scalar.length;
  bool plain = ev->data.scalar.style == YAML_PLAIN_SCALAR_STYLE;
  sp_node_t *node = new_node(ld, SP_NODE_SCALAR, ev->start_mark);
  char *text;
  size_t out_len = 0;
  if (!node) return NULL;
  if (ld->substitute && memchr(raw, '$', len) &&
      expand_env(ld, raw, len, NULL, &out_len, &node->mark, path) == 0) {
    text = sp_arena_alloc(ld->arena, out_len + 1);
    if (!text) return ld_oom(ld);
    expand_env(ld, raw, len, text, &out_len, &node->mark, path);
    text[out_len] = '\0';
  } else {
    /* No references, or malformed ones (already reported; the document
     * will be discarded, the raw text is as good as any). */
    text = sp_arena_strndup(ld->arena, raw, len);
    if (!text) return ld_oom(ld);
  }
  node->scalar = text;
  /* Literal and folded block scalars count as quoted: they are always text. */
  node->quoted = !plain;
  if (plain && is_null_word(text)) node->kind = SP_NODE_NULL;
  if (ev->data.scalar.anchor && anchor_add(ld, ev->data.scalar.anchor, node, false) < 0)
    return NULL;
  return node;
}

static ssize_t map_find(const sp_node_t *map, const char *key) {
  for (size_t i = 0; i < map->n; i++)
    if (!strcmp(map->keys[i], key)) return (ssize_t)i;
  return -1;
}

/* Makes room for one more entry in a map or list being built (its arrays
 * live in the arena; doubling keeps the waste bounded). */
static bool node_grow(loader_t *ld, sp_node_t *node, size_t *cap) {
  if (node->n < *cap) return true;
  size_t ncap = *cap ? *cap * 2 : 4;
  sp_node_t **items = sp_arena_alloc(ld->arena, ncap * sizeof(*items));
  if (!items) return ld_oom(ld), false;
  if (node->n) memcpy(items, node->items, node->n * sizeof(*items));
  node->items = items;
  if (node->kind == SP_NODE_MAP) {
    const char **keys = sp_arena_alloc(ld->arena, ncap * sizeof(*keys));
    sp_mark_t *marks = sp_arena_alloc(ld->arena, ncap * sizeof(*marks));
    if (!keys || !marks) return ld_oom(ld), false;
    if (node->n) {
      memcpy(keys, node->keys, node->n * sizeof(*keys));
      memcpy(marks, node->key_marks, node->n * sizeof(*marks));
    }
    node->keys = keys;
    node->key_marks = marks;
  }
  *cap = ncap;
  return true;
}

static bool map_append(loader_t *ld, sp_node_t *map, size_t *cap, const char *key, sp_mark_t kmark,
                       sp_node_t *value) {
  if (!node_grow(ld, map, cap)) return false;
  map->keys[map->n] = key;
  map->key_marks[map->n] = kmark;
  map->items[map->n] = value;
  map->n++;
  return true;
}

/* Copies into @p map the entries of @p src (a map) that it does not set. */
static bool merge_key_source(loader_t *ld, sp_node_t *map, size_t *cap, const sp_node_t *src) {
  for (size_t i = 0; i < src->n; i++)
    if (map_find(map, src->keys[i]) < 0 &&
        !map_append(ld, map, cap, src->keys[i], src->key_marks[i], src->items[i]))
      return false;
  return true;
}

static sp_node_t *read_node(loader_t *ld, yaml_event_t *ev, const path_t *path, int depth);

/* Reads events up to the end of the list started by @p start. */
static sp_node_t *read_seq(loader_t *ld, const yaml_event_t *start, const path_t *path, int depth) {
  sp_node_t *node = new_node(ld, SP_NODE_SEQ, start->start_mark);
  ssize_t anchor = -1;
  size_t cap = 0;
  if (!node) return NULL;
  if (start->data.sequence_start.anchor &&
      (anchor = anchor_add(ld, start->data.sequence_start.anchor, node, true)) < 0)
    return NULL;
  for (;;) {
    yaml_event_t ev;
    if (!next_event(ld, &ev)) return NULL;
    if (ev.type == YAML_SEQUENCE_END_EVENT) {
      yaml_event_delete(&ev);
      break;
    }
    path_t here = {.up = path, .key = NULL, .index = node->n};
    sp_node_t *child = read_node(ld, &ev, &here, depth + 1);
    if (!child || !node_grow(ld, node, &cap)) return NULL;
    node->items[node->n++] = child;
  }
  if (anchor >= 0) ld->anchors[anchor].building = false;
  return node;
}

/*
 * Reads events up to the end of the map started by @p start. Duplicate keys
 * are reported (the first one stays). `<< : *base` and `<< : [*a, *b]` merge
 * keys are applied at the end, so explicit keys win wherever they stand and
 * earlier sources win over later ones.
 */
static sp_node_t *read_map(loader_t *ld, const yaml_event_t *start, const path_t *path, int depth) {
  sp_node_t *node = new_node(ld, SP_NODE_MAP, start->start_mark);
  sp_node_t *merges = NULL; /* collects `<<` entries (key marks for errors) */
  ssize_t anchor = -1;
  size_t cap = 0, merges_cap = 0;
  if (!node) return NULL;
  if (start->data.mapping_start.anchor &&
      (anchor = anchor_add(ld, start->data.mapping_start.anchor, node, true)) < 0)
    return NULL;
  for (;;) {
    yaml_event_t ev;
    if (!next_event(ld, &ev)) return NULL;
    if (ev.type == YAML_MAPPING_END_EVENT) {
      yaml_event_delete(&ev);
      break;
    }

    /* The key: plain text only. Keys are never `${...}`-substituted. */
    sp_mark_t kmark = ld_mark(ld, ev.start_mark);
    const char *key = NULL;
    bool merge = false, dup = false;
    if (ev.type == YAML_SCALAR_EVENT) {
      key = sp_arena_strndup(ld->arena, (const char *)ev.data.scalar.value, ev.data.scalar.length);
      merge = key && ev.data.scalar.style == YAML_PLAIN_SCALAR_STYLE && !strcmp(key, "<<");
      bool ok = key != NULL;
      if (ok && ev.data.scalar.anchor) {
        /* `&k name: ...`: the key text may be reused as `*k` elsewhere. */
        sp_node_t *k = new_node(ld, SP_NODE_SCALAR, ev.start_mark);
        if ((ok = k != NULL)) {
          k->scalar = key;
          ok = anchor_add(ld, ev.data.scalar.anchor, k, false) >= 0;
        }
      }
      yaml_event_delete(&ev);
      if (!ok) return ld_oom(ld);
    } else if (ev.type == YAML_ALIAS_EVENT) {
      sp_node_t *k = resolve_alias(ld, &ev, path);
      yaml_event_delete(&ev);
      if (!k) return NULL;
      if (k->kind == SP_NODE_SCALAR || k->kind == SP_NODE_NULL)
        key = k->scalar;
      else
        ld_error(ld, &kmark, path, "map keys must be plain text, not %s", sp_node_kind_name(k));
    } else {
      ld_error(ld, &kmark, path, "map keys must be plain text, not %s",
               ev.type == YAML_MAPPING_START_EVENT ? "a map" : "a list");
      if (!read_node(ld, &ev, path, depth + 1)) return NULL; /* skip it */
    }
    if (key && !merge && map_find(node, key) >= 0) {
      ld_error(ld, &kmark, path, "duplicate key \"%s\"", key);
      dup = true;
    }

    /* The value. */
    if (!next_event(ld, &ev)) return NULL;
    path_t here = {.up = path, .key = key ? key : "?"};
    sp_node_t *value = read_node(ld, &ev, &here, depth + 1);
    if (!value) return NULL;
    if (!key || dup) continue;
    if (merge) {
      if (!merges && !(merges = new_node(ld, SP_NODE_MAP, start->start_mark))) return NULL;
      if (!map_append(ld, merges, &merges_cap, key, kmark, value)) return NULL;
      continue;
    }
    if (!map_append(ld, node, &cap, key, kmark, value)) return NULL;
  }

  for (size_t i = 0; merges && i < merges->n; i++) {
    const sp_node_t *src = merges->items[i];
    bool ok = src->kind == SP_NODE_MAP || src->kind == SP_NODE_SEQ;
    for (size_t j = 0; src->kind == SP_NODE_SEQ && j < src->n; j++)
      if (src->items[j]->kind != SP_NODE_MAP) ok = false;
    if (!ok) {
      path_t here = {.up = path, .key = "<<"};
      ld_error(ld, &merges->key_marks[i], &here,
               "the value of a << merge key must be a map or a list of maps");
      continue;
    }
    if (src->kind == SP_NODE_MAP && !merge_key_source(ld, node, &cap, src)) return NULL;
    for (size_t j = 0; src->kind == SP_NODE_SEQ && j < src->n; j++)
      if (!merge_key_source(ld, node, &cap, src->items[j])) return NULL;
  }
  if (anchor >= 0) ld->anchors[anchor].building = false;
  return node;
}

/*
 * Reads the node that starts with @p ev (and deletes @p ev). NULL when
 * reading must stop: OOM (ld->rc), a syntax error or excessive nesting
 * (ld->stop). Other problems are reported and reading goes on.
 */
static sp_node_t *read_node(loader_t *ld, yaml_event_t *ev, const path_t *path, int depth) {
  sp_node_t *node = NULL;
  bool collection = ev->type == YAML_SEQUENCE_START_EVENT || ev->type == YAML_MAPPING_START_EVENT;
  if (collection && depth >= MAX_DEPTH) {
    /* Stop reading right here: libyaml's cost grows with the square of the
     * nesting depth, so a hostile file must not be read to its end. */
    sp_mark_t m = ld_mark(ld, ev->start_mark);
    ld_error(ld, &m, path, "nested more than %d levels deep", MAX_DEPTH);
    ld->stop = true;
  } else if (ev->type == YAML_SCALAR_EVENT) {
    node = read_scalar(ld, ev, path);
  } else if (ev->type == YAML_ALIAS_EVENT) {
    node = resolve_alias(ld, ev, path);
  } else if (ev->type == YAML_SEQUENCE_START_EVENT) {
    node = read_seq(ld, ev, path, depth);
  } else if (ev->type == YAML_MAPPING_START_EVENT) {
    node = read_map(ld, ev, path, depth);
  } else {
    /* libyaml only produces node events here; be safe anyway. */
    sp_mark_t m = ld_mark(ld, ev->start_mark);
    ld_error(ld, &m, path, "unexpected YAML event");
    ld->stop = true;
  }
  yaml_event_delete(ev);
  return node;
}

/*
 * Parses one YAML stream (a single document) from @p buf into nodes in
 * @p arena. With @p need_map the root must be a map, and an empty document
 * gives an empty map; otherwise any root is returned (a null node for an
 * empty document). 0, SP_ECONFIG (errors added) or SP_ENOMEM.
 */
static int parse_buffer(sp_arena_t *arena, const char *file, const char *buf, size_t len,
                        bool substitute, bool need_map, sp_node_t **out, sp_errors_t *errs) {
  loader_t ld = {.arena = arena, .errs = errs, .substitute = substitute, .buf = buf, .len = len};
  yaml_parser_t parser;
  yaml_event_t ev;
  sp_node_t *root = NULL;
  sp_mark_t start;

  *out = NULL;
  ld.file = sp_arena_strdup(arena, file);
  if (!ld.file) return SP_ENOMEM;
  start = (sp_mark_t){.file = ld.file, .line = 1, .col = 1};
  if (!yaml_parser_initialize(&parser)) return SP_ENOMEM;
  ld.parser = &parser;
  yaml_parser_set_input_string(&parser, (const unsigned char *)buf, len);

  /* STREAM-START, then DOCUMENT-START root DOCUMENT-END, or STREAM-END for
   * a stream without a document (empty, or only comments). */
  if (!next_event(&ld, &ev)) goto done;
  yaml_event_delete(&ev);
  if (!next_event(&ld, &ev)) goto done;
  if (ev.type == YAML_DOCUMENT_START_EVENT) {
    yaml_event_delete(&ev);
    if (!next_event(&ld, &ev)) goto done;
    if (!(root = read_node(&ld, &ev, NULL, 0))) goto done;
    if (!next_event(&ld, &ev)) goto done; /* DOCUMENT-END */
    yaml_event_delete(&ev);
    /* A second document is almost certainly a mistake (two configs pasted
     * together); refuse it rather than ignore it. */
    if (!next_event(&ld, &ev)) goto done;
    if (ev.type == YAML_DOCUMENT_START_EVENT) {
      sp_mark_t m = ld_mark(&ld, ev.start_mark);
      ld_error(&ld, &m, NULL, "only one YAML document per file is supported");
    }
  }
  yaml_event_delete(&ev);

  if (need_map) {
    if (!root || root->kind == SP_NODE_NULL) {
      root = new_empty_map(arena, root ? root->mark : start);
      if (!root) ld.rc = SP_ENOMEM;
    } else if (root->kind != SP_NODE_MAP) {
      ld_error(&ld, &root->mark, NULL, "the configuration must be a map of sections, got %s",
               sp_node_kind_name(root));
    }
  } else if (!root) {
    yaml_mark_t first = {0};
    root = new_node(&ld, SP_NODE_NULL, first);
  }

done:
  sp_free(ld.anchors);
  yaml_parser_delete(&parser);
  if (ld.rc) return ld.rc;
  if (ld.failed || ld.stop) return SP_ECONFIG;
  *out = root;
  return 0;
}

/* ---- merge ---------------------------------------------------------------- */

/*
 * Deep merge: two maps merge key by key; anything else is replaced by
 * @p over. Inputs are never modified (aliases may share them); merged maps
 * are new nodes. Keys keep the mark of where their value was written: the
 * later file's when it replaced the value. NULL on OOM.
 */
static sp_node_t *merge_nodes(sp_arena_t *arena, sp_node_t *base, sp_node_t *over, int depth) {
  if (base->kind != SP_NODE_MAP || over->kind != SP_NODE_MAP || depth > MAX_DEPTH) return over;
  size_t cap = base->n + over->n;
  sp_node_t *m = sp_arena_calloc(arena, sizeof(*m));
  if (!m) return NULL;
  m->kind = SP_NODE_MAP;
  m->mark = base->mark;
  m->keys = sp_arena_alloc(arena, cap * sizeof(*m->keys));
  m->key_marks = sp_arena_alloc(arena, cap * sizeof(*m->key_marks));
  m->items = sp_arena_alloc(arena, cap * sizeof(*m->items));
  if (!m->keys || !m->key_marks || !m->items) return NULL;
  if (base->n) {
    memcpy(m->keys, base->keys, base->n * sizeof(*m->keys));
    memcpy(m->key_marks, base->key_marks, base->n * sizeof(*m->key_marks));
    memcpy(m->items, base->items, base->n * sizeof(*m->items));
  }
  m->n = base->n;
  for (size_t j = 0; j < over->n; j++) {
    ssize_t i = map_find(base, over->keys[j]);
    if (i < 0) {
      m->keys[m->n] = over->keys[j];
      m->key_marks[m->n] = over->key_marks[j];
      m->items[m->n] = over->items[j];
      m->n++;
      continue;
    }
    sp_node_t *v = merge_nodes(arena, base->items[i], over->items[j], depth + 1);
    if (!v) return NULL;
    if (v == over->items[j]) m->key_marks[i] = over->key_marks[j];
    m->items[i] = v;
  }
  return m;
}

/* ---- loading -------------------------------------------------------------- */

/* Reads a whole file into an sp_malloc'd buffer. Reports unreadable files. */
static int read_file(const char *path, char **out, size_t *out_len, sp_errors_t *errs) {
  int fd = -1, rc = 0;
  char *buf = NULL;
  size_t len = 0, cap = 0;
  struct stat st;

  fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0 || fstat(fd, &st) != 0) goto fail_errno;
  if (S_ISDIR(st.st_mode)) {
    errno = EISDIR;
    goto fail_errno;
  }
  /* st_size is only a hint: pipes and /proc files report 0. */
  cap = st.st_size > 0 ? (size_t)st.st_size + 1 : 4096;
  for (;;) {
    if (len == cap) {
      char *nb = sp_realloc(buf, cap * 2);
      if (!nb) goto fail_nomem;
      buf = nb;
      cap *= 2;
    } else if (!buf) {
      buf = sp_malloc(cap);
      if (!buf) goto fail_nomem;
    }
    ssize_t r = read(fd, buf + len, cap - len);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) goto fail_errno;
    if (r == 0) break;
    len += (size_t)r;
  }
  close(fd);
  *out = buf;
  *out_len = len;
  return 0;

fail_errno:
  rc = add_error(errs, NULL, path, "cannot read: %s", strerror(errno));
  if (rc == 0) rc = SP_ECONFIG;
  goto fail;
fail_nomem:
  rc = SP_ENOMEM;
fail:
  if (fd >= 0) close(fd);
  sp_free(buf);
  return rc;
}

static sp_config_doc_t *doc_new(void) {
  sp_config_doc_t *doc = sp_calloc(1, sizeof(*doc));
  if (!doc) return NULL;
  doc->arena = sp_arena_create(0);
  if (!doc->arena) {
    sp_free(doc);
    return NULL;
  }
  return doc;
}

/* Parses one document and merges it into doc->root. */
static int doc_add(sp_config_doc_t *doc, const char *name, const char *buf, size_t len,
                   sp_errors_t *errs) {
  sp_node_t *tree;
  int rc = parse_buffer(doc->arena, name, buf, len, true, true, &tree, errs);
  if (rc) return rc;
  if (!doc->root) {
    doc->root = tree;
    return 0;
  }
  sp_node_t *merged = merge_nodes(doc->arena, doc->root, tree, 0);
  if (!merged) return SP_ENOMEM;
  doc->root = merged;
  return 0;
}

int sp_config_load_files(const char *const *paths, size_t n, sp_config_doc_t **out,
                         sp_errors_t *errs) {
  int rc = 0;
  bool bad = false;
  *out = NULL;
  sp_config_doc_t *doc = doc_new();
  if (!doc) return SP_ENOMEM;

  /* Every file is tried even after a bad one, so all problems show at once. */
  for (size_t i = 0; i < n; i++) {
    char *buf = NULL;
    size_t len = 0;
    int r = read_file(paths[i], &buf, &len, errs);
    if (r == 0) {
      r = doc_add(doc, paths[i], buf, len, errs);
      sp_free(buf);
    }
    if (r == SP_ENOMEM) {
      rc = SP_ENOMEM;
      goto fail;
    }
    if (r) bad = true;
  }
  if (bad) {
    rc = SP_ECONFIG;
    goto fail;
  }
  if (!doc->root && !(doc->root = new_empty_map(doc->arena, (sp_mark_t){0}))) {
    rc = SP_ENOMEM;
    goto fail;
  }
  *out = doc;
  return 0;

fail:
  sp_config_doc_free(doc);
  return rc;
}

int sp_config_load_string(const char *name, const char *yaml, size_t len, sp_config_doc_t **out,
                          sp_errors_t *errs) {
  *out = NULL;
  sp_config_doc_t *doc = doc_new();
  if (!doc) return SP_ENOMEM;
  int rc = doc_add(doc, name ? name : "<string>", yaml, len, errs);
  if (rc) {
    sp_config_doc_free(doc);
    return rc;
  }
  *out = doc;
  return 0;
}

void sp_config_doc_free(sp_config_doc_t *doc) {
  if (!doc) return;
  sp_arena_destroy(doc->arena);
  sp_free(doc);
}

int sp__config_parse_value(sp_arena_t *arena, const char *text, const sp_node_t **out,
                           sp_errors_t *errs) {
  sp_node_t *node = NULL;
  int rc = parse_buffer(arena, "<default>", text, strlen(text), false, false, &node, errs);
  *out = node;
  return rc;
}

const sp_node_t *sp_node_get(const sp_node_t *map, const char *key) {
  if (!map || map->kind != SP_NODE_MAP) return NULL;
  ssize_t i = map_find(map, key);
  return i < 0 ? NULL : map->items[i];
}

const char *sp_node_kind_name(const sp_node_t *node) {
  switch (node ? node->kind : SP_NODE_NULL) {
  case SP_NODE_SCALAR: return "a scalar";
  case SP_NODE_MAP: return "a map";
  case SP_NODE_SEQ: return "a list";
  case SP_NODE_NULL: break;
  }
  return "null";
}

/* ---- scalar parsers ------------------------------------------------------- */

int sp_parse_bool(const char *s, bool *out) {
  static const char *const yes[] = {"true", "yes", "on"};
  static const char *const no[] = {"false", "no", "off"};
  if (!s) return SP_EINVAL;
  for (size_t i = 0; i < sizeof(yes) / sizeof(yes[0]); i++) {
    if (!strcasecmp(s, yes[i])) {
      *out = true;
      return 0;
    }
    if (!strcasecmp(s, no[i])) {
      *out = false;
      return 0;
    }
  }
  return SP_EINVAL;
}

static int digit_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return 99;
}

int sp_parse_int(const char *s, int64_t *out) {
  if (!s) return SP_EINVAL;
  const char *p = s;
  bool neg = false;
  if (*p == '+' || *p == '-') neg = *p++ == '-';
  unsigned base = 10;
  if (p[0] == '0' && (p[1] == 'x' || p[1] == 'X')) {
    base = 16;
    p += 2;
  }
  if (!*p) return SP_EINVAL;
  /* Accumulate the magnitude unsigned; INT64_MIN's magnitude is one more
   * than INT64_MAX's. */
  uint64_t limit = neg ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX;
  uint64_t v = 0;
  for (; *p; p++) {
    unsigned d = (unsigned)digit_value(*p);
    if (d >= base) return SP_EINVAL;
    if (v > (limit - d) / base) return SP_EINVAL;
    v = v * base + d;
  }
  if (!neg)
    *out = (int64_t)v;
  else
    *out = v == (uint64_t)INT64_MAX + 1 ? INT64_MIN : -(int64_t)v;
  return 0;
}

int sp_parse_double(const char *s, double *out) {
  if (!s || !*s || isspace((unsigned char)*s)) return SP_EINVAL;
  char *end;
  double d = strtod(s, &end);
  if (end == s || *end || !isfinite(d)) return SP_EINVAL;
  *out = d;
  return 0;
}

/* Reads "123" or "123.456" at *p: integer part and up to 18 fraction digits
 * as frac / scale. False when there is no digit or the integer overflows. */
static bool read_decimal(const char **p, uint64_t *ip, uint64_t *frac, uint64_t *scale) {
  const char *s = *p;
  bool any = false;
  *ip = 0, *frac = 0, *scale = 1;
  for (; isdigit((unsigned char)*s); s++, any = true) {
    unsigned d = (unsigned)(*s - '0');
    if (*ip > (UINT64_MAX - d) / 10) return false;
    *ip = *ip * 10 + d;
  }
  if (*s == '.') {
    for (s++; isdigit((unsigned char)*s); s++, any = true) {
      if (*scale >= 1000000000000000000ull) continue; /* beyond any useful precision */
      *frac = *frac * 10 + (uint64_t)(*s - '0');
      *scale *= 10;
    }
  }
  *p = s;
  return any;
}

/* ip.frac × unit, floored; false on overflow. */
static bool scale_decimal(uint64_t ip, uint64_t frac, uint64_t scale, uint64_t unit,
                          uint64_t *out) {
  if (unit && ip > UINT64_MAX / unit) return false;
  uint64_t v = ip * unit;
  long double f = (long double)frac * (long double)unit / (long double)scale;
  if (f >= 18446744073709551616.0L) return false;
  uint64_t fi = (uint64_t)f;
  if (fi > UINT64_MAX - v) return false;
  *out = v + fi;
  return true;
}

int sp_parse_duration_ms(const char *s, uint64_t *out) {
  /* Longer unit names first so "ms" is not read as "m" followed by "s". */
  static const struct {
    const char *name;
    uint64_t ns;
  } units[] = {
      {"ns", 1ull},
      {"us", 1000ull},
      {"\xc2\xb5s", 1000ull}, /* µs (micro sign) */
      {"\xce\xbcs", 1000ull}, /* μs (Greek mu) */
      {"ms", 1000000ull},
      {"s", 1000000000ull},
      {"m", 60ull * 1000000000ull},
      {"h", 3600ull * 1000000000ull},
  };
  if (!s || !*s) return SP_EINVAL;
  if (!strcmp(s, "0")) {
    *out = 0;
    return 0;
  }
  uint64_t total_ns = 0;
  const char *p = s;
  while (*p) {
    uint64_t ip, frac, scale, v;
    if (!read_decimal(&p, &ip, &frac, &scale)) return SP_EINVAL;
    size_t u = 0, n_units = sizeof(units) / sizeof(units[0]);
    while (u < n_units && strncmp(p, units[u].name, strlen(units[u].name)))
      u++;
    if (u == n_units) return SP_EINVAL; /* no unit, or an unknown one */
    p += strlen(units[u].name);
    if (!scale_decimal(ip, frac, scale, units[u].ns, &v)) return SP_EINVAL;
    if (total_ns > UINT64_MAX - v) return SP_EINVAL;
    total_ns += v;
  }
  /* Round up, so "100us" is 1 ms rather than "no timeout at all". */
  *out = total_ns / 1000000 + (total_ns % 1000000 != 0);
  return 0;
}

int sp_parse_size(const char *s, uint64_t *out) {
  static const struct {
    const char *name;
    uint64_t mult;
  } units[] = {
      {"", 1ull},          {"b", 1ull},           {"kb", 1000ull},
      {"mb", 1000000ull},  {"gb", 1000000000ull}, {"tb", 1000000000000ull},
      {"kib", 1ull << 10}, {"mib", 1ull << 20},   {"gib", 1ull << 30},
      {"tib", 1ull << 40},
  };
  if (!s) return SP_EINVAL;
  const char *p = s;
  uint64_t ip, frac, scale;
  if (!read_decimal(&p, &ip, &frac, &scale)) return SP_EINVAL;
  while (*p == ' ')
    p++; /* "64 MiB" reads naturally too */
  for (size_t u = 0; u < sizeof(units) / sizeof(units[0]); u++) {
    if (strcasecmp(p, units[u].name)) continue;
    /* Whole bytes only: "1.5" or "1.5B" is refused, "1.5KiB" is 1536. */
    if (units[u].mult == 1 && scale > 1) return SP_EINVAL;
    if (!*p && p > s && p[-1] == ' ') return SP_EINVAL; /* trailing space */
    return scale_decimal(ip, frac, scale, units[u].mult, out) ? 0 : SP_EINVAL;
  }
  return SP_EINVAL;
}
