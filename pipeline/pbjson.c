/*
 * pbjson.c — descriptor-driven protobuf-c <-> JSON (see pbjson.h for the
 * mapping rules).
 *
 * Decode parses the whole document into a JSON tree (its own short-lived
 * arena), then walks tree and descriptor together. Having the tree first
 * means every repeated field's length is known before its array is
 * allocated, so each array is one exact allocation through the caller's
 * ProtobufCAllocator — which keeps the result freeable by
 * protobuf_c_message_free_unpacked() (the allocator interface has no
 * realloc). Each new object is linked into its parent before it is filled,
 * and counts are set together with their arrays, so after an error the
 * partial message is always consistent and one free_unpacked() releases it.
 *
 * Field lookup by JSON key: the original name is found by protobuf-c's
 * binary search over its name-sorted index; failing that, the key is
 * compared against each field's JSON name computed on the fly (a handful of
 * fields per message, and only keys containing capitals get that far).
 *
 * Errors carry a path of keys and indexes kept on a small stack while
 * walking; the text is only built when an error actually happens.
 */
#include "pipeline/pbjson.h"

#include "pipeline/alloc.h"
#include "pipeline/arena.h"
#include "pipeline/error.h"

#include "google/protobuf/any.pb-c.h"
#include "google/protobuf/duration.pb-c.h"
#include "google/rpc/error_details.pb-c.h"
#include "google/rpc/status.pb-c.h"

#include <float.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PATH_CAP (SP_JSON_DEFAULT_DEPTH + 8)
#define SEEN_WORDS 8 /* duplicate detection covers the first 512 fields */

/* ---- shared helpers ----------------------------------------------------- */

static void *heap_alloc(void *data, size_t size) {
  (void)data;
  return sp_malloc(size);
}
static void heap_free(void *data, void *p) {
  (void)data;
  sp_free(p);
}
static ProtobufCAllocator heap_allocator = {heap_alloc, heap_free, NULL};

ProtobufCAllocator *sp_pbjson_heap_allocator(void) { return &heap_allocator; }

/* Types whose Any payload is rendered inline; Duration has a special form. */
static const ProtobufCMessageDescriptor *const known_types[] = {
    &google__rpc__status__descriptor,        &google__rpc__error_info__descriptor,
    &google__rpc__retry_info__descriptor,    &google__rpc__debug_info__descriptor,
    &google__rpc__bad_request__descriptor,   &google__rpc__localized_message__descriptor,
    &google__protobuf__duration__descriptor,
};

/* Looks up the type named by the last '/'-separated part of an Any URL. */
static const ProtobufCMessageDescriptor *known_type(const char *url) {
  const char *slash = strrchr(url, '/');
  const char *name = slash ? slash + 1 : url;
  for (size_t i = 0; i < sizeof known_types / sizeof known_types[0]; i++)
    if (strcmp(known_types[i]->name, name) == 0) return known_types[i];
  return NULL;
}

static int is_desc(const ProtobufCMessageDescriptor *d, const ProtobufCMessageDescriptor *want) {
  return d == want || strcmp(d->name, want->name) == 0;
}

/* Expected byte length of an OTLP hex ID field, or 0 when the field is not
 * one. Only messages of the opentelemetry.proto packages have them. */
static size_t otlp_id_len(const ProtobufCMessageDescriptor *desc,
                          const ProtobufCFieldDescriptor *f) {
  if (f->type != PROTOBUF_C_TYPE_BYTES || !desc->package_name ||
      strncmp(desc->package_name, "opentelemetry.proto.", 20) != 0)
    return 0;
  if (strcmp(f->name, "trace_id") == 0 || strcmp(f->name, "profile_id") == 0) return 16;
  if (strcmp(f->name, "span_id") == 0 || strcmp(f->name, "parent_span_id") == 0) return 8;
  return 0;
}

/* True when @p key (NUL-terminated) is the JSON name of field @p name. */
static int json_name_eq(const char *name, const char *key) {
  int up = 0;
  for (; *name; name++) {
    if (*name == '_') {
      up = 1;
      continue;
    }
    char c = up && *name >= 'a' && *name <= 'z' ? (char)(*name - 'a' + 'A') : *name;
    up = 0;
    if (*key++ != c) return 0;
  }
  return *key == '\0';
}

/* protoc names the entry message of map field "foo_bar" "FooBarEntry" and
 * gives it exactly key = 1 and value = 2. protobuf-c does not mark entries,
 * so recognise them by that shape and name. */
static int is_map_field(const ProtobufCFieldDescriptor *f) {
  if (f->label != PROTOBUF_C_LABEL_REPEATED || f->type != PROTOBUF_C_TYPE_MESSAGE) return 0;
  const ProtobufCMessageDescriptor *e = f->descriptor;
  if (e->n_fields != 2 || e->fields[0].id != 1 || e->fields[1].id != 2 ||
      strcmp(e->fields[0].name, "key") != 0 || strcmp(e->fields[1].name, "value") != 0)
    return 0;
  const char *s = e->short_name;
  int up = 1;
  for (const char *n = f->name; *n; n++) {
    if (*n == '_') {
      up = 1;
      continue;
    }
    char c = up && *n >= 'a' && *n <= 'z' ? (char)(*n - 'a' + 'A') : *n;
    up = 0;
    if (*s++ != c) return 0;
  }
  return strcmp(s, "Entry") == 0;
}

/* Size of one element of a repeated field's C array. */
static size_t elt_size(ProtobufCType t) {
  switch (t) {
  case PROTOBUF_C_TYPE_INT32:
  case PROTOBUF_C_TYPE_SINT32:
  case PROTOBUF_C_TYPE_SFIXED32:
  case PROTOBUF_C_TYPE_UINT32:
  case PROTOBUF_C_TYPE_FIXED32:
  case PROTOBUF_C_TYPE_FLOAT:
  case PROTOBUF_C_TYPE_ENUM: return 4;
  case PROTOBUF_C_TYPE_INT64:
  case PROTOBUF_C_TYPE_SINT64:
  case PROTOBUF_C_TYPE_SFIXED64:
  case PROTOBUF_C_TYPE_UINT64:
  case PROTOBUF_C_TYPE_FIXED64:
  case PROTOBUF_C_TYPE_DOUBLE: return 8;
  case PROTOBUF_C_TYPE_BOOL: return sizeof(protobuf_c_boolean);
  case PROTOBUF_C_TYPE_STRING: return sizeof(char *);
  case PROTOBUF_C_TYPE_BYTES: return sizeof(ProtobufCBinaryData);
  case PROTOBUF_C_TYPE_MESSAGE: return sizeof(ProtobufCMessage *);
  }
  return 0;
}

#define MEMBER(msg, off) ((void *)((char *)(msg) + (off)))
#define CMEMBER(msg, off) ((const void *)((const char *)(msg) + (off)))

/* ---- decode ------------------------------------------------------------------ */

typedef struct {
  const char *key; /* NULL: an array index */
  size_t index;
} seg_t;

typedef struct {
  ProtobufCAllocator *alloc;
  unsigned flags;
  char *err;
  size_t errlen;
  seg_t path[PATH_CAP];
  unsigned depth;
} dec_t;

static void push_key(dec_t *D, const char *key) {
  if (D->depth < PATH_CAP) D->path[D->depth] = (seg_t){key, 0};
  D->depth++;
}
static void push_index(dec_t *D, size_t i) {
  if (D->depth < PATH_CAP) D->path[D->depth] = (seg_t){NULL, i};
  D->depth++;
}
static void pop(dec_t *D) { D->depth--; }

static int derr(dec_t *D, int rc, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static int derr(dec_t *D, int rc, const char *fmt, ...) {
  if (!D->err || !D->errlen) return rc;
  size_t n = 0, cap = D->errlen;
  D->err[0] = '\0';
  unsigned depth = D->depth < PATH_CAP ? D->depth : PATH_CAP;
  for (unsigned i = 0; i < depth && n < cap; i++) {
    int w = D->path[i].key ? snprintf(D->err + n, cap - n, "%s%s", i ? "." : "", D->path[i].key)
                           : snprintf(D->err + n, cap - n, "[%zu]", D->path[i].index);
    if (w > 0) n += (size_t)w;
  }
  if (depth && n < cap) {
    int w = snprintf(D->err + n, cap - n, ": ");
    if (w > 0) n += (size_t)w;
  }
  if (n < cap) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(D->err + n, cap - n, fmt, ap);
    va_end(ap);
  }
  return rc;
}

static int oom(dec_t *D) {
  if (D->err && D->errlen) snprintf(D->err, D->errlen, "out of memory");
  return SP_ENOMEM;
}

static void *dalloc(dec_t *D, size_t n) { return D->alloc->alloc(D->alloc->allocator_data, n); }

static int wrong_type(dec_t *D, const char *want, const sp_json_t *v) {
  return derr(D, SP_EPROTO, "expected %s, got %s", want, sp_json_type_name(v->type));
}

/* Checks the JSON number grammar on a string's contents. */
static int is_number_text(const char *s, size_t len) {
  size_t i = 0;
  if (i < len && s[i] == '-') i++;
  if (i >= len || s[i] < '0' || s[i] > '9') return 0;
  if (s[i] == '0') {
    i++;
  } else {
    while (i < len && s[i] >= '0' && s[i] <= '9')
      i++;
  }
  if (i < len && s[i] == '.') {
    i++;
    if (i >= len || s[i] < '0' || s[i] > '9') return 0;
    while (i < len && s[i] >= '0' && s[i] <= '9')
      i++;
  }
  if (i < len && (s[i] == 'e' || s[i] == 'E')) {
    i++;
    if (i < len && (s[i] == '+' || s[i] == '-')) i++;
    if (i >= len || s[i] < '0' || s[i] > '9') return 0;
    while (i < len && s[i] >= '0' && s[i] <= '9')
      i++;
  }
  return i == len;
}

/* Exact integer value of valid number text: magnitude and sign.
 * Returns 0, 1 when not integral, 2 when the magnitude exceeds 2^64-1. */
static int number_to_integer(const char *s, size_t len, uint64_t *mag, int *neg) {
  size_t i = 0;
  *neg = 0;
  if (s[0] == '-') {
    *neg = 1;
    i++;
  }
  /* Collect significant digits, tracking the decimal exponent. */
  const char *digits = s + i;
  size_t nint = 0, nfrac = 0;
  while (i < len && s[i] >= '0' && s[i] <= '9')
    i++, nint++;
  const char *frac = NULL;
  if (i < len && s[i] == '.') {
    frac = s + ++i;
    while (i < len && s[i] >= '0' && s[i] <= '9')
      i++, nfrac++;
  }
  long exp = 0;
  if (i < len && (s[i] == 'e' || s[i] == 'E')) {
    i++;
    int eneg = 0;
    if (s[i] == '+' || s[i] == '-') eneg = s[i++] == '-';
    while (i < len) {
      if (exp < 100000) exp = exp * 10 + (s[i] - '0');
      i++;
    }
    if (eneg) exp = -exp;
  }
  /* Significand digits: int part then fraction; value = sig * 10^(exp - nfrac).
   * Trailing zeros of the significand move into the exponent. */
  size_t ntot = nint + nfrac;
  long e = exp - (long)nfrac;
  while (ntot > 0) {
    char c = ntot > nint ? frac[ntot - nint - 1] : digits[ntot - 1];
    if (c != '0') break;
    ntot--;
    e++;
  }
  if (ntot == 0) {
    *mag = 0;
    return 0;
  }
  if (e < 0) return 1; /* a non-zero digit right of the decimal point */
  uint64_t v = 0;
  for (size_t k = 0; k < ntot; k++) {
    char c = k < nint ? digits[k] : frac[k - nint];
    unsigned d = (unsigned)(c - '0');
    if (v > (UINT64_MAX - d) / 10) return 2;
    v = v * 10 + d;
  }
  for (long k = 0; k < e; k++) {
    if (v > UINT64_MAX / 10) return 2;
    v *= 10;
  }
  *mag = v;
  return 0;
}

/* Reads an integer field value (number or numeric string) within
 * [min, max] (signed) or [0, umax] (unsigned). */
static int dec_integer(dec_t *D, const sp_json_t *v, int is_signed, int64_t min, int64_t max,
                       uint64_t umax, const char *tname, int64_t *sv, uint64_t *uv) {
  const char *text;
  size_t len;
  if (v->type == SP_JSON_NUMBER) {
    text = v->u.number.text;
    len = v->u.number.len;
  } else if (v->type == SP_JSON_STRING) {
    text = v->u.string.ptr;
    len = v->u.string.len;
    if (!is_number_text(text, len)) {
      if (len > 40) return derr(D, SP_EPROTO, "invalid integer \"%.40s...\"", text);
      return derr(D, SP_EPROTO, "invalid integer \"%s\"", text);
    }
  } else {
    return wrong_type(D, "integer", v);
  }
  uint64_t mag;
  int neg;
  int r = number_to_integer(text, len, &mag, &neg);
  if (r == 1) return derr(D, SP_EPROTO, "not an integer: %.40s", text);
  if (r == 0) {
    if (is_signed) {
      if (!neg && mag <= (uint64_t)max) {
        *sv = (int64_t)mag;
        return 0;
      }
      if (neg && mag <= (uint64_t)0 - (uint64_t)min) {
        *sv = (int64_t)((uint64_t)0 - mag);
        return 0;
      }
    } else if (!neg || mag == 0) {
      if (mag <= umax) {
        *uv = mag;
        return 0;
      }
    }
  }
  return derr(D, SP_EPROTO, "value %.40s out of range for %s", text, tname);
}

/* Reads a double: a number, or "NaN"/"Infinity"/"-Infinity"/numeric string. */
static int dec_double(dec_t *D, const sp_json_t *v, const char *tname, double *out) {
  if (v->type == SP_JSON_NUMBER) {
    if (isinf(v->u.number.value))
      return derr(D, SP_EPROTO, "value %.40s out of range for %s", v->u.number.text, tname);
    *out = v->u.number.value;
    return 0;
  }
  if (v->type != SP_JSON_STRING) return wrong_type(D, "number", v);
  const char *s = v->u.string.ptr;
  if (strcmp(s, "NaN") == 0) {
    *out = NAN;
  } else if (strcmp(s, "Infinity") == 0) {
    *out = INFINITY;
  } else if (strcmp(s, "-Infinity") == 0) {
    *out = -INFINITY;
  } else if (is_number_text(s, v->u.string.len)) {
    *out = strtod(s, NULL);
    if (isinf(*out)) return derr(D, SP_EPROTO, "value %.40s out of range for %s", s, tname);
  } else {
    return derr(D, SP_EPROTO, "invalid number \"%.40s\"", s);
  }
  return 0;
}

static int b64val(unsigned char c) {
  if (c >= 'A' && c <= 'Z') return c - 'A';
  if (c >= 'a' && c <= 'z') return c - 'a' + 26;
  if (c >= '0' && c <= '9') return c - '0' + 52;
  if (c == '+' || c == '-') return 62;
  if (c == '/' || c == '_') return 63;
  return -1;
}

/* Decodes base64 (either alphabet, padding optional) into a new buffer. */
static int dec_base64(dec_t *D, const char *s, size_t len, ProtobufCBinaryData *out) {
  size_t n = len;
  if (n && s[n - 1] == '=') n--;
  if (n && s[n - 1] == '=') n--;
  if (n % 4 == 1 || (n != len && len % 4 != 0)) return derr(D, SP_EPROTO, "invalid base64");
  size_t outlen = n / 4 * 3 + (n % 4 ? n % 4 - 1 : 0);
  if (outlen == 0) return 0;
  uint8_t *d = dalloc(D, outlen);
  if (!d) return oom(D);
  size_t o = 0;
  uint32_t acc = 0;
  unsigned bits = 0;
  for (size_t i = 0; i < n; i++) {
    int b = b64val((unsigned char)s[i]);
    if (b < 0) {
      D->alloc->free(D->alloc->allocator_data, d);
      return derr(D, SP_EPROTO, "invalid base64 (bad character at position %zu)", i);
    }
    acc = (acc << 6) | (uint32_t)b;
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      d[o++] = (uint8_t)(acc >> bits);
    }
  }
  out->data = d;
  out->len = outlen;
  return 0;
}

static int hexdigit(unsigned char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

static int dec_hex_id(dec_t *D, const char *s, size_t len, size_t want, ProtobufCBinaryData *out) {
  if (len == 0) return 0;
  if (len != want * 2)
    return derr(D, SP_EPROTO, "invalid hex (expected %zu chars, got %zu)", want * 2, len);
  for (size_t i = 0; i < len; i++)
    if (hexdigit((unsigned char)s[i]) < 0)
      return derr(D, SP_EPROTO, "invalid hex (non-hex character at position %zu)", i);
  uint8_t *d = dalloc(D, want);
  if (!d) return oom(D);
  for (size_t i = 0; i < want; i++)
    d[i] =
        (uint8_t)(hexdigit((unsigned char)s[2 * i]) << 4 | hexdigit((unsigned char)s[2 * i + 1]));
  out->data = d;
  out->len = want;
  return 0;
}

/* Copies a JSON string for a string field. With @p must_alloc even "" gets
 * its own allocation (repeated elements are freed unconditionally by
 * free_unpacked; oneof members at the default are not packed); otherwise ""
 * stays the shared default. */
static int dec_string(dec_t *D, const ProtobufCFieldDescriptor *f, const sp_json_t *v, char **slot,
                      int must_alloc) {
  if (v->type != SP_JSON_STRING) return wrong_type(D, "string", v);
  if (memchr(v->u.string.ptr, '\0', v->u.string.len))
    return derr(D, SP_EPROTO, "string contains a NUL character (not supported)");
  if (v->u.string.len == 0 && !must_alloc && f->default_value == protobuf_c_empty_string) {
    *slot = (char *)protobuf_c_empty_string;
    return 0;
  }
  char *s = dalloc(D, v->u.string.len + 1);
  if (!s) return oom(D);
  memcpy(s, v->u.string.ptr, v->u.string.len + 1);
  *slot = s;
  return 0;
}

static int dec_message(dec_t *D, const ProtobufCMessageDescriptor *desc, const sp_json_t *v,
                       ProtobufCMessage **slot);

/* Decodes one value (a singular field, or one element of a repeated one)
 * into @p dst, the C storage of that value. */
static int dec_value(dec_t *D, const ProtobufCMessageDescriptor *owner,
                     const ProtobufCFieldDescriptor *f, const sp_json_t *v, void *dst,
                     int in_array) {
  int64_t sv = 0;
  uint64_t uv = 0;
  double dv = 0;
  int rc;
  switch (f->type) {
  case PROTOBUF_C_TYPE_INT32:
  case PROTOBUF_C_TYPE_SINT32:
  case PROTOBUF_C_TYPE_SFIXED32:
    if ((rc = dec_integer(D, v, 1, INT32_MIN, INT32_MAX, 0, "int32", &sv, &uv))) return rc;
    *(int32_t *)dst = (int32_t)sv;
    return 0;
  case PROTOBUF_C_TYPE_UINT32:
  case PROTOBUF_C_TYPE_FIXED32:
    if ((rc = dec_integer(D, v, 0, 0, 0, UINT32_MAX, "uint32", &sv, &uv))) return rc;
    *(uint32_t *)dst = (uint32_t)uv;
    return 0;
  case PROTOBUF_C_TYPE_INT64:
  case PROTOBUF_C_TYPE_SINT64:
  case PROTOBUF_C_TYPE_SFIXED64:
    if ((rc = dec_integer(D, v, 1, INT64_MIN, INT64_MAX, 0, "int64", &sv, &uv))) return rc;
    *(int64_t *)dst = sv;
    return 0;
  case PROTOBUF_C_TYPE_UINT64:
  case PROTOBUF_C_TYPE_FIXED64:
    if ((rc = dec_integer(D, v, 0, 0, 0, UINT64_MAX, "uint64", &sv, &uv))) return rc;
    *(uint64_t *)dst = uv;
    return 0;
  case PROTOBUF_C_TYPE_FLOAT:
    if ((rc = dec_double(D, v, "float", &dv))) return rc;
    if (isfinite(dv) && fabs(dv) > FLT_MAX)
      return derr(D, SP_EPROTO, "value out of range for float");
    *(float *)dst = (float)dv;
    return 0;
  case PROTOBUF_C_TYPE_DOUBLE:
    if ((rc = dec_double(D, v, "double", &dv))) return rc;
    *(double *)dst = dv;
    return 0;
  case PROTOBUF_C_TYPE_BOOL:
    if (v->type != SP_JSON_BOOL) return wrong_type(D, "boolean", v);
    *(protobuf_c_boolean *)dst = v->u.boolean ? 1 : 0;
    return 0;
  case PROTOBUF_C_TYPE_ENUM:
    if (v->type == SP_JSON_STRING) {
      const ProtobufCEnumValue *ev =
          protobuf_c_enum_descriptor_get_value_by_name(f->descriptor, v->u.string.ptr);
      if (!ev)
        return derr(D, SP_EPROTO, "unknown value \"%.60s\" for enum %s", v->u.string.ptr,
                    ((const ProtobufCEnumDescriptor *)f->descriptor)->name);
      *(int32_t *)dst = ev->value;
      return 0;
    }
    if (v->type != SP_JSON_NUMBER) return wrong_type(D, "enum integer or name", v);
    if ((rc = dec_integer(D, v, 1, INT32_MIN, INT32_MAX, 0, "enum", &sv, &uv))) return rc;
    *(int32_t *)dst = (int32_t)sv;
    return 0;
  case PROTOBUF_C_TYPE_STRING:
    /* protobuf-c does not pack a oneof string that points at the shared
     * default, so a set-but-empty oneof string needs its own "". */
    return dec_string(D, f, v, (char **)dst, in_array || (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF));
  case PROTOBUF_C_TYPE_BYTES: {
    if (v->type != SP_JSON_STRING) return wrong_type(D, "string", v);
    size_t idlen = (D->flags & SP_PBJSON_OTLP) ? otlp_id_len(owner, f) : 0;
    if (idlen) return dec_hex_id(D, v->u.string.ptr, v->u.string.len, idlen, dst);
    return dec_base64(D, v->u.string.ptr, v->u.string.len, dst);
  }
  case PROTOBUF_C_TYPE_MESSAGE: return dec_message(D, f->descriptor, v, (ProtobufCMessage **)dst);
  }
  return derr(D, SP_EPROTO, "unsupported field type");
}

/* Decodes a map field (a JSON object) into its repeated entry messages. */
static int dec_map(dec_t *D, ProtobufCMessage *msg, const ProtobufCFieldDescriptor *f,
                   const sp_json_t *v) {
  if (v->type != SP_JSON_OBJECT) return wrong_type(D, "object", v);
  const ProtobufCMessageDescriptor *ed = f->descriptor;
  const ProtobufCFieldDescriptor *kf = &ed->fields[0], *vf = &ed->fields[1];
  size_t n = v->u.object.count;
  if (n == 0) return 0;
  ProtobufCMessage **arr = dalloc(D, n * sizeof(*arr));
  if (!arr) return oom(D);
  memset(arr, 0, n * sizeof(*arr));
  *(size_t *)MEMBER(msg, f->quantifier_offset) = n;
  *(void **)MEMBER(msg, f->offset) = arr;
  for (size_t i = 0; i < n; i++) {
    const sp_json_member_t *m = &v->u.object.members[i];
    int rc;
    push_key(D, m->key);
    if (m->value.type == SP_JSON_NULL) return derr(D, SP_EPROTO, "null is not allowed in a map");
    ProtobufCMessage *e = dalloc(D, ed->sizeof_message);
    if (!e) return oom(D);
    ed->message_init(e);
    arr[i] = e;
    /* The key arrives as a string; reuse the value decoders on it, reading
     * it as JSON where the key type is not a string. */
    sp_json_t key = {.type = SP_JSON_STRING, .offset = m->value.offset};
    key.u.string.ptr = m->key;
    key.u.string.len = m->key_len;
    if (kf->type == PROTOBUF_C_TYPE_BOOL) {
      if (strcmp(m->key, "true") && strcmp(m->key, "false"))
        return derr(D, SP_EPROTO, "invalid boolean map key");
      key.type = SP_JSON_BOOL;
      key.u.boolean = m->key[0] == 't';
    }
    if ((rc = dec_value(D, ed, kf, &key, MEMBER(e, kf->offset), 0))) return rc;
    if ((rc = dec_value(D, ed, vf, &m->value, MEMBER(e, vf->offset), 0))) return rc;
    pop(D);
  }
  return 0;
}

static int dec_repeated(dec_t *D, const ProtobufCMessageDescriptor *desc, ProtobufCMessage *msg,
                        const ProtobufCFieldDescriptor *f, const sp_json_t *v) {
  if (is_map_field(f)) return dec_map(D, msg, f, v);
  if (v->type != SP_JSON_ARRAY) return wrong_type(D, "array", v);
  size_t n = v->u.array.count, esz = elt_size(f->type);
  if (n == 0) return 0;
  if (n > SIZE_MAX / esz) return oom(D);
  char *arr = dalloc(D, n * esz);
  if (!arr) return oom(D);
  memset(arr, 0, n * esz);
  *(size_t *)MEMBER(msg, f->quantifier_offset) = n;
  *(void **)MEMBER(msg, f->offset) = arr;
  for (size_t i = 0; i < n; i++) {
    const sp_json_t *item = &v->u.array.items[i];
    int rc;
    push_index(D, i);
    if (item->type == SP_JSON_NULL)
      return derr(D, SP_EPROTO, "null is not allowed in a repeated field");
    if ((rc = dec_value(D, desc, f, item, arr + i * esz, 1))) return rc;
    pop(D);
  }
  return 0;
}

static const ProtobufCFieldDescriptor *find_field(const ProtobufCMessageDescriptor *desc,
                                                  const char *key) {
  const ProtobufCFieldDescriptor *f = protobuf_c_message_descriptor_get_field_by_name(desc, key);
  if (f) return f;
  for (unsigned i = 0; i < desc->n_fields; i++)
    if (json_name_eq(desc->fields[i].name, key)) return &desc->fields[i];
  return NULL;
}

/* Prints the JSON name of @p name into @p buf (for messages). */
static const char *json_name(const char *name, char *buf, size_t cap) {
  size_t n = 0;
  int up = 0;
  for (; *name && n + 1 < cap; name++) {
    if (*name == '_') {
      up = 1;
      continue;
    }
    buf[n++] = up && *name >= 'a' && *name <= 'z' ? (char)(*name - 'a' + 'A') : *name;
    up = 0;
  }
  buf[n] = '\0';
  return buf;
}

static int dec_duration(dec_t *D, const sp_json_t *v, ProtobufCMessage **slot) {
  if (v->type != SP_JSON_STRING) return wrong_type(D, "duration string", v);
  const char *s = v->u.string.ptr, *p = s;
  size_t len = v->u.string.len;
  int neg = 0;
  int64_t sec = 0;
  int32_t nanos = 0;
  if (*p == '-') neg = 1, p++;
  const char *d0 = p;
  while (*p >= '0' && *p <= '9' && p - d0 < 13)
    sec = sec * 10 + (*p++ - '0');
  int ok = p > d0;
  if (ok && *p == '.') {
    p++;
    int nd = 0;
    while (*p >= '0' && *p <= '9' && nd < 9)
      nanos = nanos * 10 + (*p++ - '0'), nd++;
    if (nd == 0) ok = 0;
    for (; nd < 9; nd++)
      nanos *= 10;
  }
  if (!ok || *p != 's' || (size_t)(p + 1 - s) != len || sec > 315576000000LL)
    return derr(D, SP_EPROTO, "invalid duration \"%.40s\" (expected e.g. \"1.5s\")", s);
  Google__Protobuf__Duration *dur = dalloc(D, sizeof(*dur));
  if (!dur) return oom(D);
  google__protobuf__duration__init(dur);
  dur->seconds = neg ? -sec : sec;
  dur->nanos = neg ? -nanos : nanos;
  *slot = &dur->base;
  return 0;
}

static int dec_fields(dec_t *D, const ProtobufCMessageDescriptor *desc, const sp_json_t *v,
                      ProtobufCMessage *msg);

/* google.protobuf.Any: {"@type": url, ...fields of that type}. */
static int dec_any(dec_t *D, const sp_json_t *v, ProtobufCMessage **slot) {
  if (v->type != SP_JSON_OBJECT) return wrong_type(D, "object", v);
  Google__Protobuf__Any *any = dalloc(D, sizeof(*any));
  if (!any) return oom(D);
  google__protobuf__any__init(any);
  *slot = &any->base;
  const sp_json_t *type = sp_json_get(v, "@type");
  if (!type) {
    if (v->u.object.count == 0) return 0;
    return derr(D, SP_EPROTO, "\"@type\" is required in an Any");
  }
  push_key(D, "@type");
  int rc = dec_string(D, &google__protobuf__any__descriptor.fields[0], type, &any->type_url, 0);
  if (rc) return rc;
  pop(D);
  const ProtobufCMessageDescriptor *td = known_type(any->type_url);
  if (!td) {
    /* spanprof's fallback form for types it does not know. */
    const sp_json_t *val = sp_json_get(v, "value");
    if (v->u.object.count != 2 || !val || val->type != SP_JSON_STRING)
      return derr(D, SP_EPROTO, "unknown type \"%.80s\" in Any", any->type_url);
    push_key(D, "value");
    rc = dec_base64(D, val->u.string.ptr, val->u.string.len, &any->value);
    if (rc) return rc;
    pop(D);
    return 0;
  }
  ProtobufCMessage *inner = NULL;
  if (is_desc(td, &google__protobuf__duration__descriptor)) {
    const sp_json_t *val = sp_json_get(v, "value");
    if (!val) return derr(D, SP_EPROTO, "\"value\" is required in an Any holding a Duration");
    push_key(D, "value");
    rc = dec_duration(D, val, &inner);
    if (!rc) pop(D);
  } else {
    inner = dalloc(D, td->sizeof_message);
    if (!inner) return oom(D);
    td->message_init(inner);
    rc = dec_fields(D, td, v, inner); /* "@type" is an unknown key there: ignored */
  }
  if (!rc) {
    size_t n = protobuf_c_message_get_packed_size(inner);
    if (n) {
      uint8_t *buf = dalloc(D, n);
      if (!buf) {
        rc = oom(D);
      } else {
        protobuf_c_message_pack(inner, buf);
        any->value.data = buf;
        any->value.len = n;
      }
    }
  }
  protobuf_c_message_free_unpacked(inner, D->alloc);
  return rc;
}

/* Fills the fields of the already-initialised @p msg from object @p v. */
static int dec_fields(dec_t *D, const ProtobufCMessageDescriptor *desc, const sp_json_t *v,
                      ProtobufCMessage *msg) {
  uint64_t seen[SEEN_WORDS] = {0};
  for (size_t i = 0; i < v->u.object.count; i++) {
    const sp_json_member_t *m = &v->u.object.members[i];
    if (m->value.type == SP_JSON_NULL) continue;
    /* A key with an embedded NUL could otherwise match a field by prefix. */
    if (memchr(m->key, '\0', m->key_len)) continue;
    const ProtobufCFieldDescriptor *f = find_field(desc, m->key);
    if (!f) continue;
    int rc;
    size_t idx = (size_t)(f - desc->fields);
    push_key(D, m->key);
    if (idx < SEEN_WORDS * 64) {
      uint64_t bit = (uint64_t)1 << (idx % 64);
      if (seen[idx / 64] & bit) return derr(D, SP_EPROTO, "field is set more than once");
      seen[idx / 64] |= bit;
    }
    if (f->label == PROTOBUF_C_LABEL_REPEATED) {
      rc = dec_repeated(D, desc, msg, f, &m->value);
    } else {
      if (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) {
        uint32_t *oneof_case = MEMBER(msg, f->quantifier_offset);
        if (*oneof_case) {
          const ProtobufCFieldDescriptor *other =
              protobuf_c_message_descriptor_get_field(desc, (unsigned)*oneof_case);
          char nb[64];
          return derr(D, SP_EPROTO, "only one field of a oneof may be set (already set: %s)",
                      other ? json_name(other->name, nb, sizeof nb) : "?");
        }
        /* Set the case first: a submessage is linked before it is filled and
         * must be reachable by free_unpacked if filling fails. */
        *oneof_case = f->id;
      } else if (f->label == PROTOBUF_C_LABEL_OPTIONAL && f->type != PROTOBUF_C_TYPE_STRING &&
                 f->type != PROTOBUF_C_TYPE_MESSAGE) {
        *(protobuf_c_boolean *)MEMBER(msg, f->quantifier_offset) = 1;
      }
      rc = dec_value(D, desc, f, &m->value, MEMBER(msg, f->offset), 0);
    }
    if (rc) return rc;
    pop(D);
  }
  return 0;
}

static int dec_message(dec_t *D, const ProtobufCMessageDescriptor *desc, const sp_json_t *v,
                       ProtobufCMessage **slot) {
  if (desc->name[0] == 'g') { /* cheap pre-check before the name compares */
    if (is_desc(desc, &google__protobuf__duration__descriptor)) return dec_duration(D, v, slot);
    if (is_desc(desc, &google__protobuf__any__descriptor)) return dec_any(D, v, slot);
  }
  if (v->type != SP_JSON_OBJECT) return wrong_type(D, "object", v);
  ProtobufCMessage *msg = dalloc(D, desc->sizeof_message);
  if (!msg) return oom(D);
  desc->message_init(msg);
  *slot = msg;
  return dec_fields(D, desc, v, msg);
}

int sp_pbjson_decode_tree(const ProtobufCMessageDescriptor *desc, const sp_json_t *root,
                          unsigned flags, ProtobufCAllocator *alloc, ProtobufCMessage **out,
                          char *err, size_t errlen) {
  dec_t *D = sp_malloc(sizeof(*D));
  ProtobufCMessage *msg = NULL;
  int rc;
  *out = NULL;
  if (err && errlen) err[0] = '\0';
  if (!D) {
    if (err && errlen) snprintf(err, errlen, "out of memory");
    return SP_ENOMEM;
  }
  D->alloc = alloc ? alloc : &heap_allocator;
  D->flags = flags;
  D->err = err;
  D->errlen = errlen;
  D->depth = 0;
  rc = dec_message(D, desc, root, &msg);
  if (rc) goto fail;
  sp_free(D);
  *out = msg;
  return 0;

fail:
  protobuf_c_message_free_unpacked(msg, D->alloc);
  sp_free(D);
  return rc;
}

int sp_pbjson_decode(const ProtobufCMessageDescriptor *desc, const char *json, size_t len,
                     unsigned flags, ProtobufCAllocator *alloc, ProtobufCMessage **out, char *err,
                     size_t errlen) {
  *out = NULL;
  if (err && errlen) err[0] = '\0';
  /* The tree is roughly as large as the text; start near that size. */
  size_t first = len < 4096 ? 4096 : len > (1u << 20) ? (1u << 20) : len;
  sp_arena_t *arena = sp_arena_create(first);
  sp_json_t *root = NULL;
  sp_json_error_t jerr;
  int rc;
  if (!arena) {
    rc = SP_ENOMEM;
    if (err && errlen) snprintf(err, errlen, "out of memory");
    goto fail;
  }
  /* The tree of a hostile text ("{},{},...") can be many times its size: bound it. */
  sp_arena_set_limit(arena, sp_pbjson_budget(len));
  rc = sp_json_parse(json, len, arena, SP_JSON_DEFAULT_DEPTH, &root, &jerr);
  if (rc == SP_ETOOBIG) {
    if (err && errlen)
      snprintf(err, errlen, "decoding would need more than %d times the request size; send "
                            "smaller requests", SP_PBJSON_COST_FACTOR);
    goto fail;
  }
  if (rc == SP_ENOMEM) {
    if (err && errlen) snprintf(err, errlen, "out of memory");
    goto fail;
  }
  if (rc) {
    if (err && errlen)
      snprintf(err, errlen, "invalid JSON at line %u, column %u (byte %zu): %s", jerr.line,
               jerr.column, jerr.offset, jerr.reason);
    goto fail;
  }
  rc = sp_pbjson_decode_tree(desc, root, flags, alloc, out, err, errlen);

fail:
  sp_arena_destroy(arena);
  return rc;
}

/* ---- encode ------------------------------------------------------------------ */

typedef struct {
  sp_buf_t *out;
  unsigned flags;
  unsigned depth; /* message nesting, bounded: binary input can nest without limit */
} enc_t;

static int enc_message(enc_t *E, const ProtobufCMessage *msg);

static int put_json_name(sp_buf_t *out, const char *name) {
  char buf[128];
  size_t n = 0;
  int up = 0;
  buf[n++] = '"';
  for (; *name; name++) {
    if (n + 3 > sizeof buf) { /* absurdly long name: flush */
      int rc = sp_buf_append(out, buf, n);
      if (rc) return rc;
      n = 0;
    }
    if (*name == '_') {
      up = 1;
      continue;
    }
    buf[n++] = up && *name >= 'a' && *name <= 'z' ? (char)(*name - 'a' + 'A') : *name;
    up = 0;
  }
  buf[n++] = '"';
  buf[n++] = ':';
  return sp_buf_append(out, buf, n);
}

static int enc_base64(sp_buf_t *out, const uint8_t *d, size_t len) {
  static const char tbl[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  size_t olen = (len + 2) / 3 * 4;
  int rc = sp_buf_reserve(out, olen + 2);
  if (rc) return rc;
  char *w = (char *)out->data + out->len;
  *w++ = '"';
  size_t i = 0;
  for (; i + 3 <= len; i += 3) {
    uint32_t v = (uint32_t)d[i] << 16 | (uint32_t)d[i + 1] << 8 | d[i + 2];
    *w++ = tbl[v >> 18];
    *w++ = tbl[(v >> 12) & 63];
    *w++ = tbl[(v >> 6) & 63];
    *w++ = tbl[v & 63];
  }
  if (len - i == 1) {
    uint32_t v = (uint32_t)d[i] << 16;
    *w++ = tbl[v >> 18];
    *w++ = tbl[(v >> 12) & 63];
    *w++ = '=';
    *w++ = '=';
  } else if (len - i == 2) {
    uint32_t v = (uint32_t)d[i] << 16 | (uint32_t)d[i + 1] << 8;
    *w++ = tbl[v >> 18];
    *w++ = tbl[(v >> 12) & 63];
    *w++ = tbl[(v >> 6) & 63];
    *w++ = '=';
  }
  *w++ = '"';
  out->len = (size_t)((uint8_t *)w - out->data);
  return 0;
}

static int enc_hex(sp_buf_t *out, const uint8_t *d, size_t len) {
  static const char hex[] = "0123456789abcdef";
  int rc = sp_buf_reserve(out, len * 2 + 2);
  if (rc) return rc;
  char *w = (char *)out->data + out->len;
  *w++ = '"';
  for (size_t i = 0; i < len; i++) {
    *w++ = hex[d[i] >> 4];
    *w++ = hex[d[i] & 15];
  }
  *w++ = '"';
  out->len = (size_t)((uint8_t *)w - out->data);
  return 0;
}

static int enc_quoted_int64(sp_buf_t *out, int64_t v) {
  int rc = sp_buf_putc(out, '"');
  if (!rc) rc = sp_json_write_int64(out, v);
  if (!rc) rc = sp_buf_putc(out, '"');
  return rc;
}

static int enc_quoted_uint64(sp_buf_t *out, uint64_t v) {
  int rc = sp_buf_putc(out, '"');
  if (!rc) rc = sp_json_write_uint64(out, v);
  if (!rc) rc = sp_buf_putc(out, '"');
  return rc;
}

static int enc_double(sp_buf_t *out, double v) {
  if (isnan(v)) return sp_buf_puts(out, "\"NaN\"");
  if (isinf(v)) return sp_buf_puts(out, v > 0 ? "\"Infinity\"" : "\"-Infinity\"");
  return sp_json_write_double(out, v);
}

static int enc_float(sp_buf_t *out, float v) {
  if (!isfinite(v)) return enc_double(out, v);
  char tmp[32];
  int n = 0;
  /* Shortest of %.6g..%.9g that reads back as the same float. */
  for (int prec = 6; prec <= 9; prec++) {
    n = snprintf(tmp, sizeof tmp, "%.*g", prec, (double)v);
    if (prec == 9 || strtof(tmp, NULL) == v) break;
  }
  return sp_buf_append(out, tmp, (size_t)n);
}

static int enc_duration(sp_buf_t *out, const Google__Protobuf__Duration *d) {
  int64_t s = d->seconds;
  int32_t ns = d->nanos;
  int neg = s < 0 || ns < 0;
  uint64_t us = s < 0 ? (uint64_t)0 - (uint64_t)s : (uint64_t)s;
  uint32_t uns = ns < 0 ? (uint32_t)0 - (uint32_t)ns : (uint32_t)ns;
  char tmp[48];
  int n;
  if (uns == 0)
    n = snprintf(tmp, sizeof tmp, "\"%s%llus\"", neg ? "-" : "", (unsigned long long)us);
  else if (uns % 1000000 == 0)
    n = snprintf(tmp, sizeof tmp, "\"%s%llu.%03us\"", neg ? "-" : "", (unsigned long long)us,
                 uns / 1000000);
  else if (uns % 1000 == 0)
    n = snprintf(tmp, sizeof tmp, "\"%s%llu.%06us\"", neg ? "-" : "", (unsigned long long)us,
                 uns / 1000);
  else
    n = snprintf(tmp, sizeof tmp, "\"%s%llu.%09us\"", neg ? "-" : "", (unsigned long long)us, uns);
  return sp_buf_append(out, tmp, (size_t)n);
}

/* Writes one value of field @p f stored at @p p. */
static int enc_value(enc_t *E, const ProtobufCMessageDescriptor *owner,
                     const ProtobufCFieldDescriptor *f, const void *p) {
  sp_buf_t *out = E->out;
  switch (f->type) {
  case PROTOBUF_C_TYPE_INT32:
  case PROTOBUF_C_TYPE_SINT32:
  case PROTOBUF_C_TYPE_SFIXED32: return sp_json_write_int64(out, *(const int32_t *)p);
  case PROTOBUF_C_TYPE_UINT32:
  case PROTOBUF_C_TYPE_FIXED32: return sp_json_write_uint64(out, *(const uint32_t *)p);
  case PROTOBUF_C_TYPE_INT64:
  case PROTOBUF_C_TYPE_SINT64:
  case PROTOBUF_C_TYPE_SFIXED64: return enc_quoted_int64(out, *(const int64_t *)p);
  case PROTOBUF_C_TYPE_UINT64:
  case PROTOBUF_C_TYPE_FIXED64: return enc_quoted_uint64(out, *(const uint64_t *)p);
  case PROTOBUF_C_TYPE_FLOAT: return enc_float(out, *(const float *)p);
  case PROTOBUF_C_TYPE_DOUBLE: return enc_double(out, *(const double *)p);
  case PROTOBUF_C_TYPE_BOOL:
    return sp_buf_puts(out, *(const protobuf_c_boolean *)p ? "true" : "false");
  case PROTOBUF_C_TYPE_ENUM: {
    int32_t v = *(const int32_t *)p;
    if (!(E->flags & SP_PBJSON_OTLP)) {
      const ProtobufCEnumValue *ev = protobuf_c_enum_descriptor_get_value(f->descriptor, v);
      if (ev) return sp_json_write_string(out, ev->name, strlen(ev->name));
    }
    return sp_json_write_int64(out, v);
  }
  case PROTOBUF_C_TYPE_STRING: {
    const char *s = *(char *const *)p;
    return s ? sp_json_write_string(out, s, strlen(s)) : sp_buf_puts(out, "\"\"");
  }
  case PROTOBUF_C_TYPE_BYTES: {
    const ProtobufCBinaryData *b = p;
    if ((E->flags & SP_PBJSON_OTLP) && otlp_id_len(owner, f)) return enc_hex(out, b->data, b->len);
    return enc_base64(out, b->data, b->len);
  }
  case PROTOBUF_C_TYPE_MESSAGE: {
    const ProtobufCMessage *m = *(ProtobufCMessage *const *)p;
    return m ? enc_message(E, m) : sp_buf_puts(out, "{}");
  }
  }
  return SP_EINVAL;
}

/* Writes a map key: JSON object keys are strings, so numbers are quoted. */
static int enc_map_key(sp_buf_t *out, const ProtobufCFieldDescriptor *kf, const void *k) {
  int rc = 0;
  switch (kf->type) {
  case PROTOBUF_C_TYPE_STRING: {
    const char *s = *(char *const *)k;
    return sp_json_write_string(out, s ? s : "", s ? strlen(s) : 0);
  }
  case PROTOBUF_C_TYPE_BOOL:
    return sp_buf_puts(out, *(const protobuf_c_boolean *)k ? "\"true\"" : "\"false\"");
  case PROTOBUF_C_TYPE_INT32:
  case PROTOBUF_C_TYPE_SINT32:
  case PROTOBUF_C_TYPE_SFIXED32:
    rc = sp_buf_putc(out, '"');
    if (!rc) rc = sp_json_write_int64(out, *(const int32_t *)k);
    break;
  case PROTOBUF_C_TYPE_UINT32:
  case PROTOBUF_C_TYPE_FIXED32:
    rc = sp_buf_putc(out, '"');
    if (!rc) rc = sp_json_write_uint64(out, *(const uint32_t *)k);
    break;
  case PROTOBUF_C_TYPE_UINT64:
  case PROTOBUF_C_TYPE_FIXED64: return enc_quoted_uint64(out, *(const uint64_t *)k);
  default: return enc_quoted_int64(out, *(const int64_t *)k);
  }
  if (!rc) rc = sp_buf_putc(out, '"');
  return rc;
}

static int enc_map(enc_t *E, const ProtobufCFieldDescriptor *f, const ProtobufCMessage *const *arr,
                   size_t n) {
  const ProtobufCMessageDescriptor *ed = f->descriptor;
  const ProtobufCFieldDescriptor *kf = &ed->fields[0], *vf = &ed->fields[1];
  int rc = sp_buf_putc(E->out, '{'), first = 1;
  for (size_t i = 0; !rc && i < n; i++) {
    if (!arr[i]) continue;
    if (!first) rc = sp_buf_putc(E->out, ',');
    first = 0;
    if (!rc) rc = enc_map_key(E->out, kf, CMEMBER(arr[i], kf->offset));
    if (!rc) rc = sp_buf_putc(E->out, ':');
    if (!rc) rc = enc_value(E, ed, vf, CMEMBER(arr[i], vf->offset));
  }
  if (!rc) rc = sp_buf_putc(E->out, '}');
  return rc;
}

/* True when a singular field without presence holds its zero value. */
static int is_zero(const ProtobufCFieldDescriptor *f, const void *p) {
  switch (f->type) {
  case PROTOBUF_C_TYPE_INT32:
  case PROTOBUF_C_TYPE_SINT32:
  case PROTOBUF_C_TYPE_SFIXED32:
  case PROTOBUF_C_TYPE_UINT32:
  case PROTOBUF_C_TYPE_FIXED32:
  case PROTOBUF_C_TYPE_ENUM: return *(const uint32_t *)p == 0;
  case PROTOBUF_C_TYPE_INT64:
  case PROTOBUF_C_TYPE_SINT64:
  case PROTOBUF_C_TYPE_SFIXED64:
  case PROTOBUF_C_TYPE_UINT64:
  case PROTOBUF_C_TYPE_FIXED64: return *(const uint64_t *)p == 0;
  case PROTOBUF_C_TYPE_FLOAT: return *(const float *)p == 0;
  case PROTOBUF_C_TYPE_DOUBLE: return *(const double *)p == 0;
  case PROTOBUF_C_TYPE_BOOL: return *(const protobuf_c_boolean *)p == 0;
  case PROTOBUF_C_TYPE_STRING: {
    const char *s = *(char *const *)p;
    return !s || !*s;
  }
  case PROTOBUF_C_TYPE_BYTES: return ((const ProtobufCBinaryData *)p)->len == 0;
  case PROTOBUF_C_TYPE_MESSAGE: return *(ProtobufCMessage *const *)p == NULL;
  }
  return 1;
}

static int is_present(const ProtobufCMessage *msg, const ProtobufCFieldDescriptor *f) {
  const void *p = CMEMBER(msg, f->offset);
  if (f->label == PROTOBUF_C_LABEL_REPEATED)
    return *(const size_t *)CMEMBER(msg, f->quantifier_offset) != 0;
  if (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF)
    return *(const uint32_t *)CMEMBER(msg, f->quantifier_offset) == f->id;
  switch (f->label) {
  case PROTOBUF_C_LABEL_REQUIRED: return 1;
  case PROTOBUF_C_LABEL_OPTIONAL:
    if (f->type == PROTOBUF_C_TYPE_STRING || f->type == PROTOBUF_C_TYPE_MESSAGE)
      return *(void *const *)p != NULL;
    return *(const protobuf_c_boolean *)CMEMBER(msg, f->quantifier_offset) != 0;
  default: return !is_zero(f, p);
  }
}

/* Writes the present fields of @p msg as members; *first tracks commas. */
static int enc_fields(enc_t *E, const ProtobufCMessage *msg, int *first) {
  const ProtobufCMessageDescriptor *desc = msg->descriptor;
  for (unsigned i = 0; i < desc->n_fields; i++) {
    const ProtobufCFieldDescriptor *f = &desc->fields[i];
    int rc;
    if (!is_present(msg, f)) continue;
    if (!*first && (rc = sp_buf_putc(E->out, ','))) return rc;
    *first = 0;
    if ((rc = put_json_name(E->out, f->name))) return rc;
    const void *p = CMEMBER(msg, f->offset);
    if (f->label != PROTOBUF_C_LABEL_REPEATED) {
      rc = enc_value(E, desc, f, p);
    } else {
      size_t n = *(const size_t *)CMEMBER(msg, f->quantifier_offset);
      const char *arr = *(const char *const *)p;
      if (is_map_field(f)) {
        rc = enc_map(E, f, (const ProtobufCMessage *const *)arr, n);
      } else {
        size_t esz = elt_size(f->type);
        rc = sp_buf_putc(E->out, '[');
        for (size_t k = 0; !rc && k < n; k++) {
          if (k && (rc = sp_buf_putc(E->out, ','))) break;
          rc = enc_value(E, desc, f, arr + k * esz);
        }
        if (!rc) rc = sp_buf_putc(E->out, ']');
      }
    }
    if (rc) return rc;
  }
  return 0;
}

static int enc_any(enc_t *E, const Google__Protobuf__Any *any) {
  const char *url = any->type_url ? any->type_url : "";
  const ProtobufCMessageDescriptor *td = *url ? known_type(url) : NULL;
  ProtobufCMessage *inner = NULL;
  int first = 0, rc;
  if (!*url && any->value.len == 0) return sp_buf_puts(E->out, "{}");
  if ((rc = sp_buf_puts(E->out, "{\"@type\":"))) return rc;
  if ((rc = sp_json_write_string(E->out, url, strlen(url)))) return rc;
  if (td) inner = protobuf_c_message_unpack(td, &heap_allocator, any->value.len, any->value.data);
  if (!inner) { /* unknown type or unreadable payload: the fallback form */
    rc = sp_buf_puts(E->out, ",\"value\":");
    if (!rc) rc = enc_base64(E->out, any->value.data, any->value.len);
  } else if (is_desc(td, &google__protobuf__duration__descriptor)) {
    rc = sp_buf_puts(E->out, ",\"value\":");
    if (!rc) rc = enc_duration(E->out, (const Google__Protobuf__Duration *)inner);
  } else {
    rc = enc_fields(E, inner, &first);
  }
  protobuf_c_message_free_unpacked(inner, &heap_allocator);
  if (!rc) rc = sp_buf_putc(E->out, '}');
  return rc;
}

static int enc_message(enc_t *E, const ProtobufCMessage *msg) {
  const ProtobufCMessageDescriptor *desc = msg->descriptor;
  if (desc->name[0] == 'g') {
    if (is_desc(desc, &google__protobuf__duration__descriptor))
      return enc_duration(E->out, (const Google__Protobuf__Duration *)msg);
    if (is_desc(desc, &google__protobuf__any__descriptor))
      return enc_any(E, (const Google__Protobuf__Any *)msg);
  }
  int first = 1, rc;
  if (E->depth >= SP_PBJSON_MAX_DEPTH) return SP_EPROTO;
  E->depth++;
  if ((rc = sp_buf_putc(E->out, '{'))) return rc;
  if ((rc = enc_fields(E, msg, &first))) return rc;
  E->depth--;
  return sp_buf_putc(E->out, '}');
}

int sp_pbjson_encode(const ProtobufCMessage *msg, unsigned flags, sp_buf_t *out) {
  enc_t E = {out, flags, 0};
  size_t saved = out->len;
  int rc = enc_message(&E, msg);
  if (rc) out->len = saved;
  return rc;
}
