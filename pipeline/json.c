/*
 * json.c — strict JSON parser into an arena tree, and writer helpers
 * (see json.h).
 *
 * The parser is recursive descent with an explicit depth limit. Children of
 * an array or object are collected on one shared scratch stack (heap, grown
 * geometrically) and copied into the arena as one contiguous block when the
 * container closes, so a container costs one arena allocation however many
 * children it has, and the total work stays linear in the input size.
 *
 * Strings are handled in two passes: the first finds the closing quote, the
 * second validates (UTF-8, control characters, escapes) while copying into
 * an arena block the size of the raw text — decoding never grows a string.
 */
#include "pipeline/json.h"

#include "pipeline/alloc.h"
#include "pipeline/error.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Nesting above this is refused even if a caller asks for more: the parser
 * recurses once per level and must not run out of stack. */
#define HARD_DEPTH_LIMIT 1000

typedef struct {
  const uint8_t *base; /* start of input */
  const uint8_t *p;    /* cursor */
  const uint8_t *end;
  sp_arena_t *arena;
  unsigned max_depth;
  sp_json_member_t *stack; /* scratch children of the open containers */
  size_t top, cap;
  sp_json_error_t *err;
  int rc;
} parser_t;

static int fail(parser_t *P, const uint8_t *at, int rc, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int fail(parser_t *P, const uint8_t *at, int rc, const char *fmt, ...) {
  if (P->rc) return P->rc; /* keep the first error */
  P->rc = rc;
  if (P->err) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(P->err->reason, sizeof P->err->reason, fmt, ap);
    va_end(ap);
    P->err->offset = (size_t)(at - P->base);
  }
  return rc;
}

/* Out of memory, or past the arena's cap (sp_arena_set_limit): "too large". */
static int fail_oom(parser_t *P) {
  if (sp_arena_limited(P->arena))
    return fail(P, P->p, SP_ETOOBIG, "the document needs more memory than allowed");
  return fail(P, P->p, SP_ENOMEM, "out of memory");
}

static void skip_ws(parser_t *P) {
  const uint8_t *p = P->p, *end = P->end;
  while (p < end && (*p == ' ' || *p == '\n' || *p == '\r' || *p == '\t'))
    p++;
  P->p = p;
}

/* Describes the byte at @p at for an "unexpected ..." message. */
static int fail_unexpected(parser_t *P, const uint8_t *at, const char *what) {
  if (at >= P->end) return fail(P, at, SP_EPROTO, "unexpected end of input, %s", what);
  if (*at >= 0x21 && *at < 0x7f) return fail(P, at, SP_EPROTO, "unexpected '%c', %s", *at, what);
  return fail(P, at, SP_EPROTO, "unexpected byte 0x%02x, %s", *at, what);
}

static int push(parser_t *P, const sp_json_member_t *m) {
  if (P->top == P->cap) {
    size_t cap = P->cap ? P->cap * 2 : 64;
    /* The scratch stack counts against the arena's cap like the tree does. */
    size_t limit = sp_arena_get_limit(P->arena);
    if (limit != 0 && cap * sizeof(*P->stack) > limit) {
      sp_arena_set_limit(P->arena, limit); /* keeps the cap */
      return fail(P, P->p, SP_ETOOBIG, "the document needs more memory than allowed");
    }
    sp_json_member_t *s = sp_realloc(P->stack, cap * sizeof(*s));
    if (!s) return fail_oom(P);
    P->stack = s;
    P->cap = cap;
  }
  P->stack[P->top++] = *m;
  return 0;
}

/* ---- UTF-8 ---------------------------------------------------------------- */

/* Length of the valid UTF-8 sequence starting at @p s (lead byte >= 0x80),
 * or 0 when it is invalid (overlong forms, surrogates, > U+10FFFF, truncated). */
static size_t utf8_seq(const uint8_t *s, size_t avail) {
  uint8_t c = s[0];
  if (c >= 0xc2 && c <= 0xdf) {
    return avail >= 2 && (s[1] & 0xc0) == 0x80 ? 2 : 0;
  }
  if (c >= 0xe0 && c <= 0xef) {
    if (avail < 3 || (s[1] & 0xc0) != 0x80 || (s[2] & 0xc0) != 0x80) return 0;
    if (c == 0xe0 && s[1] < 0xa0) return 0; /* overlong */
    if (c == 0xed && s[1] > 0x9f) return 0; /* UTF-16 surrogate */
    return 3;
  }
  if (c >= 0xf0 && c <= 0xf4) {
    if (avail < 4 || (s[1] & 0xc0) != 0x80 || (s[2] & 0xc0) != 0x80 || (s[3] & 0xc0) != 0x80)
      return 0;
    if (c == 0xf0 && s[1] < 0x90) return 0; /* overlong */
    if (c == 0xf4 && s[1] > 0x8f) return 0; /* above U+10FFFF */
    return 4;
  }
  return 0;
}

static size_t utf8_put(uint8_t *d, uint32_t cp) {
  if (cp < 0x80) {
    d[0] = (uint8_t)cp;
    return 1;
  }
  if (cp < 0x800) {
    d[0] = (uint8_t)(0xc0 | (cp >> 6));
    d[1] = (uint8_t)(0x80 | (cp & 0x3f));
    return 2;
  }
  if (cp < 0x10000) {
    d[0] = (uint8_t)(0xe0 | (cp >> 12));
    d[1] = (uint8_t)(0x80 | ((cp >> 6) & 0x3f));
    d[2] = (uint8_t)(0x80 | (cp & 0x3f));
    return 3;
  }
  d[0] = (uint8_t)(0xf0 | (cp >> 18));
  d[1] = (uint8_t)(0x80 | ((cp >> 12) & 0x3f));
  d[2] = (uint8_t)(0x80 | ((cp >> 6) & 0x3f));
  d[3] = (uint8_t)(0x80 | (cp & 0x3f));
  return 4;
}

static int hexval(uint8_t c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

/* Reads the 4 hex digits after "\u" at @p s; -1 when malformed. */
static long hex4(const uint8_t *s, const uint8_t *end) {
  if (end - s < 4) return -1;
  long v = 0;
  for (int i = 0; i < 4; i++) {
    int h = hexval(s[i]);
    if (h < 0) return -1;
    v = v * 16 + h;
  }
  return v;
}

/* ---- values ----------------------------------------------------------------- */

static int parse_value(parser_t *P, sp_json_t *out, unsigned depth);

/* Parses the string whose opening quote is at P->p. */
static int parse_string(parser_t *P, const char **out, size_t *out_len) {
  const uint8_t *open = P->p, *s = open + 1, *end = P->end, *q = s;
  /* Pass 1: find the closing quote; a backslash always consumes the next
   * byte, which is enough to skip \" and \\. */
  for (;;) {
    const uint8_t *hit = q;
    while (hit < end && *hit != '"' && *hit != '\\')
      hit++;
    if (hit >= end) return fail(P, open, SP_EPROTO, "unterminated string");
    if (*hit == '"') {
      q = hit;
      break;
    }
    if (end - hit < 2) return fail(P, open, SP_EPROTO, "unterminated string");
    q = hit + 2;
  }
  size_t raw = (size_t)(q - s);
  uint8_t *d = sp_arena_alloc(P->arena, raw + 1), *w = d;
  if (!d) return fail_oom(P);

  /* Pass 2: validate and decode. */
  const uint8_t *r = s;
  while (r < q) {
    uint8_t c = *r;
    if (c >= 0x20 && c < 0x80 && c != '\\') {
      *w++ = c;
      r++;
    } else if (c < 0x20) {
      return fail(P, r, SP_EPROTO, "control character 0x%02x in string must be escaped", c);
    } else if (c >= 0x80) {
      size_t n = utf8_seq(r, (size_t)(q - r));
      if (!n) return fail(P, r, SP_EPROTO, "invalid UTF-8 in string");
      memcpy(w, r, n);
      w += n;
      r += n;
    } else {
      uint8_t e = r[1];
      switch (e) {
      case '"': *w++ = '"'; break;
      case '\\': *w++ = '\\'; break;
      case '/': *w++ = '/'; break;
      case 'b': *w++ = '\b'; break;
      case 'f': *w++ = '\f'; break;
      case 'n': *w++ = '\n'; break;
      case 'r': *w++ = '\r'; break;
      case 't': *w++ = '\t'; break;
      case 'u': {
        long cp = hex4(r + 2, q);
        if (cp < 0) return fail(P, r, SP_EPROTO, "invalid \\u escape (expected 4 hex digits)");
        if (cp >= 0xdc00 && cp <= 0xdfff)
          return fail(P, r, SP_EPROTO, "unpaired UTF-16 surrogate in \\u escape");
        if (cp >= 0xd800 && cp <= 0xdbff) {
          long lo = (q - r >= 12 && r[6] == '\\' && r[7] == 'u') ? hex4(r + 8, q) : -1;
          if (lo < 0xdc00 || lo > 0xdfff)
            return fail(P, r, SP_EPROTO, "unpaired UTF-16 surrogate in \\u escape");
          cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
          r += 6;
        }
        w += utf8_put(w, (uint32_t)cp);
        r += 4;
        break;
      }
      default:
        if (e >= 0x21 && e < 0x7f) return fail(P, r, SP_EPROTO, "invalid escape '\\%c'", e);
        return fail(P, r, SP_EPROTO, "invalid escape sequence");
      }
      r += 2;
    }
  }
  *w = '\0';
  *out = (const char *)d;
  *out_len = (size_t)(w - d);
  P->p = q + 1;
  return 0;
}

static int is_digit(uint8_t c) { return c >= '0' && c <= '9'; }

static int parse_number(parser_t *P, sp_json_t *out) {
  const uint8_t *start = P->p, *p = start, *end = P->end;
  int simple = 1; /* no fraction, no exponent */
  if (p < end && *p == '-') p++;
  if (p >= end || !is_digit(*p)) return fail_unexpected(P, p, "expected a digit in number");
  if (*p == '0') {
    p++;
    if (p < end && is_digit(*p))
      return fail(P, start, SP_EPROTO, "invalid number (leading zeros are not allowed)");
  } else {
    while (p < end && is_digit(*p))
      p++;
  }
  if (p < end && *p == '.') {
    simple = 0;
    p++;
    if (p >= end || !is_digit(*p))
      return fail_unexpected(P, p, "expected a digit after the decimal point");
    while (p < end && is_digit(*p))
      p++;
  }
  if (p < end && (*p == 'e' || *p == 'E')) {
    simple = 0;
    p++;
    if (p < end && (*p == '+' || *p == '-')) p++;
    if (p >= end || !is_digit(*p)) return fail_unexpected(P, p, "expected a digit in exponent");
    while (p < end && is_digit(*p))
      p++;
  }
  size_t len = (size_t)(p - start);
  if (len > SP_JSON_MAX_NUMBER_LEN)
    return fail(P, start, SP_EPROTO, "number too long (%zu characters, limit %d)", len,
                SP_JSON_MAX_NUMBER_LEN);
  char *text = sp_arena_strndup(P->arena, (const char *)start, len);
  if (!text) return fail_oom(P);
  double v;
  const char *digits = text + (text[0] == '-');
  if (simple && strlen(digits) <= 15) {
    /* Exact: any integer below 10^15 is a double. */
    int64_t n = 0;
    for (const char *c = digits; *c; c++)
      n = n * 10 + (*c - '0');
    v = (double)n;
    if (text[0] == '-') v = -v;
  } else {
    v = strtod(text, NULL);
  }
  out->type = SP_JSON_NUMBER;
  out->u.number.text = text;
  out->u.number.len = len;
  out->u.number.value = v;
  P->p = p;
  return 0;
}

static int parse_literal(parser_t *P, sp_json_t *out) {
  static const struct {
    const char *word;
    size_t len;
    sp_json_type_t type;
    int b;
  } lits[] = {
      {"true", 4, SP_JSON_BOOL, 1}, {"false", 5, SP_JSON_BOOL, 0}, {"null", 4, SP_JSON_NULL, 0}};
  size_t avail = (size_t)(P->end - P->p);
  for (size_t i = 0; i < sizeof lits / sizeof lits[0]; i++) {
    if (avail >= lits[i].len && memcmp(P->p, lits[i].word, lits[i].len) == 0) {
      out->type = lits[i].type;
      out->u.boolean = lits[i].b;
      P->p += lits[i].len;
      return 0;
    }
  }
  return fail_unexpected(P, P->p, "expected a JSON value");
}

static int check_depth(parser_t *P, unsigned depth) {
  if (depth >= P->max_depth)
    return fail(P, P->p, SP_EPROTO, "nesting deeper than %u levels", P->max_depth);
  return 0;
}

static int parse_array(parser_t *P, sp_json_t *out, unsigned depth) {
  if (check_depth(P, depth)) return P->rc;
  size_t base = P->top;
  P->p++; /* '[' */
  skip_ws(P);
  if (P->p < P->end && *P->p == ']') {
    P->p++;
  } else {
    for (;;) {
      sp_json_member_t m = {NULL, 0, {0}};
      if (parse_value(P, &m.value, depth + 1) || push(P, &m)) return P->rc;
      skip_ws(P);
      if (P->p < P->end && *P->p == ',') {
        P->p++;
        continue;
      }
      if (P->p < P->end && *P->p == ']') {
        P->p++;
        break;
      }
      return fail_unexpected(P, P->p, "expected ',' or ']' after array element");
    }
  }
  size_t n = P->top - base;
  out->type = SP_JSON_ARRAY;
  out->u.array.count = n;
  out->u.array.items = NULL;
  if (n) {
    sp_json_t *items = sp_arena_alloc(P->arena, n * sizeof(*items));
    if (!items) return fail_oom(P);
    for (size_t i = 0; i < n; i++)
      items[i] = P->stack[base + i].value;
    out->u.array.items = items;
  }
  P->top = base;
  return 0;
}

static int parse_object(parser_t *P, sp_json_t *out, unsigned depth) {
  if (check_depth(P, depth)) return P->rc;
  size_t base = P->top;
  P->p++; /* '{' */
  skip_ws(P);
  if (P->p < P->end && *P->p == '}') {
    P->p++;
  } else {
    for (;;) {
      sp_json_member_t m = {NULL, 0, {0}};
      skip_ws(P);
      if (P->p >= P->end || *P->p != '"')
        return fail_unexpected(P, P->p, "expected a string key in object");
      if (parse_string(P, &m.key, &m.key_len)) return P->rc;
      skip_ws(P);
      if (P->p >= P->end || *P->p != ':')
        return fail_unexpected(P, P->p, "expected ':' after object key");
      P->p++;
      if (parse_value(P, &m.value, depth + 1) || push(P, &m)) return P->rc;
      skip_ws(P);
      if (P->p < P->end && *P->p == ',') {
        P->p++;
        continue;
      }
      if (P->p < P->end && *P->p == '}') {
        P->p++;
        break;
      }
      return fail_unexpected(P, P->p, "expected ',' or '}' after object member");
    }
  }
  size_t n = P->top - base;
  out->type = SP_JSON_OBJECT;
  out->u.object.count = n;
  out->u.object.members = NULL;
  if (n) {
    sp_json_member_t *mem = sp_arena_alloc(P->arena, n * sizeof(*mem));
    if (!mem) return fail_oom(P);
    memcpy(mem, P->stack + base, n * sizeof(*mem));
    out->u.object.members = mem;
  }
  P->top = base;
  return 0;
}

static int parse_value(parser_t *P, sp_json_t *out, unsigned depth) {
  skip_ws(P);
  if (P->p >= P->end) return fail_unexpected(P, P->p, "expected a JSON value");
  out->offset = (size_t)(P->p - P->base);
  switch (*P->p) {
  case '{': return parse_object(P, out, depth);
  case '[': return parse_array(P, out, depth);
  case '"':
    out->type = SP_JSON_STRING;
    return parse_string(P, &out->u.string.ptr, &out->u.string.len);
  case '-':
  case '0':
  case '1':
  case '2':
  case '3':
  case '4':
  case '5':
  case '6':
  case '7':
  case '8':
  case '9': return parse_number(P, out);
  default: return parse_literal(P, out);
  }
}

void sp_json_position(const char *text, size_t len, size_t offset, unsigned *line,
                      unsigned *column) {
  unsigned l = 1;
  size_t line_start = 0;
  if (offset > len) offset = len;
  for (size_t i = 0; i < offset; i++) {
    if (text[i] == '\n') {
      l++;
      line_start = i + 1;
    }
  }
  if (line) *line = l;
  if (column) *column = (unsigned)(offset - line_start + 1);
}

int sp_json_parse(const char *text, size_t len, sp_arena_t *arena, unsigned max_depth,
                  sp_json_t **out, sp_json_error_t *err) {
  parser_t P;
  memset(&P, 0, sizeof P);
  P.base = P.p = (const uint8_t *)text;
  P.end = P.base + len;
  P.arena = arena;
  P.max_depth = max_depth ? max_depth : SP_JSON_DEFAULT_DEPTH;
  if (P.max_depth > HARD_DEPTH_LIMIT) P.max_depth = HARD_DEPTH_LIMIT;
  P.err = err;
  *out = NULL;
  if (err) memset(err, 0, sizeof *err);

  sp_json_t *root = NULL;
  if (len >= 3 && memcmp(text, "\xef\xbb\xbf", 3) == 0) P.p += 3;
  sp_json_t v;
  memset(&v, 0, sizeof v);
  if (parse_value(&P, &v, 0)) goto fail;
  skip_ws(&P);
  if (P.p != P.end) {
    fail_unexpected(&P, P.p, "expected end of input after the JSON value");
    goto fail;
  }
  root = sp_arena_alloc(arena, sizeof(*root));
  if (!root) {
    fail_oom(&P);
    goto fail;
  }
  *root = v;
  sp_free(P.stack);
  *out = root;
  return 0;

fail:
  sp_free(P.stack);
  if (err) sp_json_position(text, len, err->offset, &err->line, &err->column);
  return P.rc;
}

const char *sp_json_type_name(sp_json_type_t type) {
  switch (type) {
  case SP_JSON_NULL: return "null";
  case SP_JSON_BOOL: return "boolean";
  case SP_JSON_NUMBER: return "number";
  case SP_JSON_STRING: return "string";
  case SP_JSON_ARRAY: return "array";
  case SP_JSON_OBJECT: return "object";
  }
  return "?";
}

const sp_json_t *sp_json_get(const sp_json_t *obj, const char *key) {
  if (!obj || obj->type != SP_JSON_OBJECT) return NULL;
  size_t klen = strlen(key);
  for (size_t i = obj->u.object.count; i-- > 0;) {
    const sp_json_member_t *m = &obj->u.object.members[i];
    if (m->key_len == klen && memcmp(m->key, key, klen) == 0) return &m->value;
  }
  return NULL;
}

/* ---- writer --------------------------------------------------------------- */

int sp_json_write_string(sp_buf_t *out, const char *str, size_t len) {
  static const char hex[] = "0123456789abcdef";
  const uint8_t *s = (const uint8_t *)str, *end = s + len, *run = s;
  size_t saved = out->len;
  int rc = sp_buf_reserve(out, len + 2);
  if (rc) goto fail;
  out->data[out->len++] = '"';
  while (s < end) {
    uint8_t c = *s;
    if (c >= 0x20 && c != '"' && c != '\\' && c < 0x80) {
      s++;
      continue;
    }
    size_t n = 1;
    if (c >= 0x80 && (n = utf8_seq(s, (size_t)(end - s))) != 0) {
      s += n;
      continue;
    }
    /* Flush the run of bytes that need no escaping, then escape c. */
    if ((rc = sp_buf_append(out, run, (size_t)(s - run)))) goto fail;
    char esc[8];
    size_t elen = 2;
    esc[0] = '\\';
    switch (c) {
    case '"': esc[1] = '"'; break;
    case '\\': esc[1] = '\\'; break;
    case '\b': esc[1] = 'b'; break;
    case '\f': esc[1] = 'f'; break;
    case '\n': esc[1] = 'n'; break;
    case '\r': esc[1] = 'r'; break;
    case '\t': esc[1] = 't'; break;
    default:
      if (c >= 0x80) { /* a byte of invalid UTF-8 */
        memcpy(esc, "\\ufffd", 6);
      } else {
        memcpy(esc, "\\u00", 4);
        esc[4] = hex[c >> 4];
        esc[5] = hex[c & 15];
      }
      elen = 6;
    }
    if ((rc = sp_buf_append(out, esc, elen))) goto fail;
    s++;
    run = s;
  }
  if ((rc = sp_buf_append(out, run, (size_t)(s - run)))) goto fail;
  if ((rc = sp_buf_putc(out, '"'))) goto fail;
  return 0;

fail:
  out->len = saved;
  return rc;
}

int sp_json_write_uint64(sp_buf_t *out, uint64_t v) {
  char tmp[24];
  char *p = tmp + sizeof tmp;
  do {
    *--p = (char)('0' + v % 10);
    v /= 10;
  } while (v);
  return sp_buf_append(out, p, (size_t)(tmp + sizeof tmp - p));
}

int sp_json_write_int64(sp_buf_t *out, int64_t v) {
  if (v >= 0) return sp_json_write_uint64(out, (uint64_t)v);
  char tmp[24];
  char *p = tmp + sizeof tmp;
  uint64_t u = (uint64_t)0 - (uint64_t)v; /* well defined for INT64_MIN too */
  do {
    *--p = (char)('0' + u % 10);
    u /= 10;
  } while (u);
  *--p = '-';
  return sp_buf_append(out, p, (size_t)(tmp + sizeof tmp - p));
}

int sp_json_write_double(sp_buf_t *out, double v) {
  if (!isfinite(v)) return SP_EINVAL;
  char tmp[40];
  int n = 0;
  /* The shortest of %.15g..%.17g that reads back exactly; %.17g always does. */
  for (int prec = 15; prec <= 17; prec++) {
    n = snprintf(tmp, sizeof tmp, "%.*g", prec, v);
    if (prec == 17 || strtod(tmp, NULL) == v) break;
  }
  return sp_buf_append(out, tmp, (size_t)n);
}
