/*
 * json.h — a small, strict JSON (RFC 8259) parser and writer helpers.
 *
 * The parser turns a whole document into a read-only tree allocated in an
 * sp_arena_t, so a caller frees everything with one sp_arena_destroy().
 * It is strict: UTF-8 is validated, control characters must be escaped,
 * lone UTF-16 surrogates in \u escapes are refused, no comments, no trailing
 * commas, no leading zeros, and nesting is limited so a hostile document
 * cannot exhaust the stack. A leading UTF-8 byte order mark is skipped (RFC
 * 8259 section 8.1 allows ignoring it). Errors report the byte offset,
 * line and column (1-based, columns count bytes) and a short reason.
 *
 * Numbers keep their exact source text beside a double, so 64-bit integers
 * (OTLP timestamps, IDs) survive: read the text, not the double.
 *
 * The writer helpers append JSON tokens to an sp_buf_t; sp_pbjson builds
 * on both halves. Everything here is reentrant and thread-agnostic: a tree
 * belongs to whoever owns its arena. The double conversions assume the "C"
 * LC_NUMERIC locale, which spanprof never changes.
 */
#ifndef SP_JSON_H
#define SP_JSON_H

#include "pipeline/arena.h"
#include "pipeline/buf.h"

#include <stddef.h>
#include <stdint.h>

/** Default nesting limit (open arrays/objects) used when 0 is passed. */
#define SP_JSON_DEFAULT_DEPTH 100
/** Longest number text accepted; longer ones are refused as "number too long". */
#define SP_JSON_MAX_NUMBER_LEN 512

typedef enum {
  SP_JSON_NULL = 0,
  SP_JSON_BOOL,
  SP_JSON_NUMBER,
  SP_JSON_STRING,
  SP_JSON_ARRAY,
  SP_JSON_OBJECT
} sp_json_type_t;

typedef struct sp_json_s sp_json_t;
typedef struct sp_json_member_s sp_json_member_t;

/**
 * One JSON value. Strings are decoded (escapes resolved), NUL-terminated and
 * may contain NUL bytes (\u0000): use len. Array items and object members
 * are stored contiguously, in document order; duplicate keys are kept.
 */
struct sp_json_s {
  sp_json_type_t type;
  size_t offset; /* byte offset of the value's first character in the input */
  union {
    int boolean;
    struct {
      const char *text; /* exact source text, NUL-terminated */
      size_t len;
      double value; /* nearest double; +-HUGE_VAL when out of range */
    } number;
    struct {
      const char *ptr;
      size_t len;
    } string;
    struct {
      sp_json_t *items;
      size_t count;
    } array;
    struct {
      sp_json_member_t *members;
      size_t count;
    } object;
  } u;
};

/** One object member: decoded key (NUL-terminated) and its value. */
struct sp_json_member_s {
  const char *key;
  size_t key_len;
  sp_json_t value;
};

/** Where and why a parse failed. */
typedef struct sp_json_error_s {
  size_t offset;   /* byte offset of the offending input byte (0-based) */
  unsigned line;   /* 1-based */
  unsigned column; /* 1-based, in bytes */
  char reason[96]; /* e.g. "expected ',' or '}' after object member" */
} sp_json_error_t;

/**
 * Parses @p len bytes of @p text (need not be NUL-terminated) into a tree
 * allocated from @p arena. @p max_depth bounds nesting (0: the default).
 * The tree does not reference @p text afterwards. On failure the arena may
 * hold partial allocations (freed with it) and *out is NULL.
 *
 * Returns 0; SP_EPROTO for malformed input, with @p err filled (err may be
 * NULL); SP_ETOOBIG when the arena has a cap (sp_arena_set_limit) and the
 * tree or its scratch stack would pass it; SP_ENOMEM when the arena or the
 * scratch stack cannot grow (err's
 * reason says so).
 */
int sp_json_parse(const char *text, size_t len, sp_arena_t *arena, unsigned max_depth,
                  sp_json_t **out, sp_json_error_t *err);

/** Name of a type for messages: "null", "boolean", "number", "string", "array", "object". */
const char *sp_json_type_name(sp_json_type_t type);

/**
 * Returns the value of the last member named @p key of object @p obj, or
 * NULL when absent or when @p obj is not an object. Linear in the member
 * count.
 */
const sp_json_t *sp_json_get(const sp_json_t *obj, const char *key);

/**
 * Computes the 1-based line and column (in bytes) of byte @p offset in
 * @p text. Used for error messages; linear in @p offset.
 */
void sp_json_position(const char *text, size_t len, size_t offset, unsigned *line,
                      unsigned *column);

/**
 * Appends @p s (len bytes) as a quoted JSON string. '"', '\\' and control
 * characters are escaped (\n, \t ... or \u00XX); valid UTF-8 passes through
 * unchanged; each byte of an invalid UTF-8 sequence becomes \ufffd so the
 * output is always valid JSON. Returns 0, SP_ENOMEM or SP_ETOOBIG (buffer
 * limit); on failure @p out's length is unchanged.
 */
int sp_json_write_string(sp_buf_t *out, const char *s, size_t len);

/** Appends a signed decimal integer. Returns 0, SP_ENOMEM or SP_ETOOBIG. */
int sp_json_write_int64(sp_buf_t *out, int64_t v);

/** Appends an unsigned decimal integer. Returns 0, SP_ENOMEM or SP_ETOOBIG. */
int sp_json_write_uint64(sp_buf_t *out, uint64_t v);

/**
 * Appends the shortest decimal form of @p v that reads back as the same
 * double (e.g. 0.1, 1e+300, -0). Returns 0, SP_EINVAL for NaN or infinity
 * (JSON has no such numbers; nothing is written), SP_ENOMEM or SP_ETOOBIG.
 */
int sp_json_write_double(sp_buf_t *out, double v);

#endif
