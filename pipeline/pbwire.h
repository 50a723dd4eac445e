/*
 * pbwire.h — a minimal, allocation-free protobuf wire reader.
 *
 * pbscan.h validates a whole message against its schema; some callers only
 * need to walk a known path through the bytes — count the spans of an
 * ExportTraceServiceRequest, find where the IDs of each span sit so that a
 * load generator can patch them in place, read one timestamp — and want that
 * at a few nanoseconds per field. This reader steps over one message level at
 * a time: the caller descends by opening a new reader on a length-delimited
 * field's bytes. Every length is checked against the buffer, so it is safe on
 * untrusted input (a malformed buffer ends the walk with an error, never a
 * read out of bounds).
 *
 * Header-only: everything is static inline. Pure; any thread.
 */
#ifndef SP_PBWIRE_H
#define SP_PBWIRE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/** A cursor over the fields of one message level. */
typedef struct sp_pbwire_s {
  const uint8_t *p;
  const uint8_t *end;
  bool bad; /* set when the bytes were malformed; the walk stopped there */
} sp_pbwire_t;

/** One field as read: its number, wire type and payload. */
typedef struct sp_pbwire_field_s {
  uint32_t num;
  int wt;            /* 0 varint, 1 fixed64, 2 length-delimited, 5 fixed32 */
  uint64_t v;        /* wire types 0, 1, 5: the value; 2: the length */
  const uint8_t *data; /* start of the payload (the bytes of a wire type 1/2/5 field) */
} sp_pbwire_field_t;

/** Starts a reader over @p len bytes at @p buf. */
static inline sp_pbwire_t sp_pbwire_init(const uint8_t *buf, size_t len) {
  sp_pbwire_t r = {buf, buf + len, false};
  return r;
}

/** Reads a varint at *@p p (not past @p end); false when truncated or too long. */
static inline bool sp_pbwire_varint(const uint8_t **p, const uint8_t *end, uint64_t *out) {
  uint64_t v = 0;
  for (int shift = 0; shift < 64 && *p < end; shift += 7) {
    uint8_t b = *(*p)++;
    v |= (uint64_t)(b & 0x7f) << shift;
    if (!(b & 0x80)) {
      *out = v;
      return true;
    }
  }
  return false;
}

/**
 * Reads the next field into @p f. Returns false at the end of the message
 * or on malformed bytes (then r->bad is set). Groups (wire types 3/4) count
 * as malformed: no schema we read uses them.
 */
static inline bool sp_pbwire_next(sp_pbwire_t *r, sp_pbwire_field_t *f) {
  if (r->p >= r->end)
    return false;
  uint64_t key;
  if (!sp_pbwire_varint(&r->p, r->end, &key) || (key >> 3) == 0 || (key >> 3) > 0x1fffffff)
    goto bad;
  f->num = (uint32_t)(key >> 3);
  f->wt = (int)(key & 7);
  switch (f->wt) {
  case 0:
    f->data = r->p;
    if (!sp_pbwire_varint(&r->p, r->end, &f->v))
      goto bad;
    return true;
  case 1:
  case 5: {
    size_t n = f->wt == 1 ? 8 : 4;
    if ((size_t)(r->end - r->p) < n)
      goto bad;
    f->data = r->p;
    f->v = 0;
    for (size_t i = 0; i < n; i++)
      f->v |= (uint64_t)r->p[i] << (8 * i);
    r->p += n;
    return true;
  }
  case 2:
    if (!sp_pbwire_varint(&r->p, r->end, &f->v) || f->v > (uint64_t)(r->end - r->p))
      goto bad;
    f->data = r->p;
    r->p += f->v;
    return true;
  default:
    break;
  }
bad:
  r->bad = true;
  r->p = r->end;
  return false;
}

/** A reader over the payload of length-delimited field @p f (a sub-message). */
static inline sp_pbwire_t sp_pbwire_sub(const sp_pbwire_field_t *f) {
  return sp_pbwire_init(f->data, (size_t)f->v);
}

/* ---- writing ---------------------------------------------------------------------- */

/** Bytes the varint encoding of @p v takes (1..10). */
static inline size_t sp_pbwire_varint_size(uint64_t v) {
  size_t n = 1;
  while (v >= 0x80) {
    v >>= 7;
    n++;
  }
  return n;
}

/** Writes @p v as a varint at @p p (room for sp_pbwire_varint_size(v) bytes); returns the end. */
static inline uint8_t *sp_pbwire_put_varint(uint8_t *p, uint64_t v) {
  while (v >= 0x80) {
    *p++ = (uint8_t)(v | 0x80);
    v >>= 7;
  }
  *p++ = (uint8_t)v;
  return p;
}

#endif
