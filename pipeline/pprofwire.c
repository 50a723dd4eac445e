/*
 * pprofwire.c — see pprofwire.h.
 *
 * Indexing is two passes over the top-level fields: the first counts the
 * string_table, sample and sample_type fields (and, when validating, the
 * location / function / mapping fields) so that every array is allocated
 * once at its final size — arenas cannot grow an allocation; the second
 * fills them. Both passes only step over a Sample's payload unless the
 * caller asked for validation.
 *
 * Validation has to accept exactly what sp_pprof_decode() accepts, which is
 * three things in a row: the schema scan of pbscan.c (including its decode
 * budget: SP_ETOOBIG past it), protobuf-c's unpack, and sp_pprof_validate().
 * The framing rules below are the intersection of the first two:
 *   - a field key is a varint of at most 5 bytes (protobuf-c) whose field
 *     number is 1..2^29-1 (the scan); wire types 3, 4, 6, 7 are refused;
 *   - a varint value has at most 10 bytes, the 10th being 0 or 1 (the scan);
 *   - a length prefix has at most 5 bytes (protobuf-c) and fits the bytes
 *     left;
 *   - a known field has its type's wire type, or is a repeated scalar sent
 *     packed whose payload is a whole number of valid varints;
 *   - unknown fields of any valid wire type are skipped.
 * The decode budget is computed the way pbscan.c computes it (message sizes
 * from the protobuf-c descriptors, a slot per repeated element, string
 * lengths, 8 bytes per packed byte, a 32-byte record per field occurrence
 * of the message being decoded) and checked at the same points, so the same
 * inputs get SP_ETOOBIG. Nesting in pprof is at most three levels, well
 * under the scan's 64.
 *
 * Most of a profile's bytes are samples (packed location_id and value
 * arrays, a label or two) and locations (a few varints and a Line each), so
 * those (and top-level samples and strings, and the flat messages, labels
 * among them) read their common encoding (one-byte keys, the declared
 * wire types) directly and do sp__known's accounting inline; any other
 * field goes through sp__next and sp__known as before. The accounting is
 * the same either way, checked at the same points: a walk that finds an
 * error stops where the general one would, with the same code. Packed values
 * are only counted (a payload of up to 8 bytes as one word: a popcount of
 * its end bytes; longer ones a byte at a time without a branch per varint).
 * Packed location IDs are checked 16 bytes at a time with SSE2 byte
 * compares (sp__loc_block; the last 1-16 bytes as one more block when the
 * input extends 16 bytes past them) or 8 at a time (sp__loc_word: 64-bit
 * lane arithmetic, used without SSE2 and near the end of the input) to be
 * 1- or 2-byte varints within 1..n, n the first pass's count of locations;
 * a run where that is not conclusive is read again one varint at a time
 * into one maximum of ID - 1 (zero wraps to the top), compared with n at
 * the end.
 *
 * The semantic checks (string indices, value counts, IDs) are made on
 * aggregates collected in the same pass: the largest string index used, the
 * smallest and largest value count, and whether location / function /
 * mapping IDs are 1..n in table order (then a reference is valid iff it lies
 * in 1..n, checked with a min/max). IDs in any other order are sorted into
 * a temporary array and the samples and locations are walked a second time.
 * Only when a check fails is the profile decoded with sp_pprof_decode(),
 * whose message then names the exact offender in the same words a decode
 * would use; rejects are rare and the decode stays within the budget just
 * checked.
 *
 * With SP_PW_LABELS the validating pass keeps every label it reads anyway
 * (8 bytes each, in sp_malloc'd scratch copied into the arena at the end)
 * and each sample's first, and the key summary is made from that array
 * afterwards; the validating receiver runs on the thread pool, so the loop
 * reads labels as arrays. sp_pprof_splice_finish_indexed() derives the
 * output's index from the input's (offsets shifted by the growth of the
 * touched samples before them, labels and keys extended), so a spliced
 * profile is never indexed or read again. The finish is one pass writing
 * the output and the samples' new offsets into one arena block (bytes and
 * index arrays together); the output's size is kept up to date as labels
 * are added in sample order, so no pass sizes it first. Label groups
 * (sp_pprof_splice_group) are encoded once and referenced by every sample
 * they are added to; the key summary's extension looks at a group once.
 *
 * Memory: everything the index allocates is an array with one entry per
 * top-level field of a kind (16 bytes at most per entry), and every field
 * takes at least 2 bytes of input, so a hostile profile cannot make the
 * index allocate more than 8 times its size in the arena, plus at most as
 * much again in temporary sp_malloc'd ID arrays while validating.
 */
#include "pipeline/pprofwire.h"

#include "perftools/profiles/profile.pb-c.h"
#include "pipeline/alloc.h"
#include "pipeline/error.h"
#include "pipeline/pbscan.h"
#include "pipeline/pbwire.h"
#include "pipeline/pprof.h"

#include <assert.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

/* ---- strict wire reading ------------------------------------------------------ */

/* A varint as both the scan and protobuf-c accept it: <= 10 bytes, the 10th 0 or 1. */
static inline __attribute__((always_inline)) bool sp__varint(const uint8_t **pp, const uint8_t *end, uint64_t *out) {
  const uint8_t *p = *pp;
  if (p < end && *p < 0x80) {
    *out = *p;
    *pp = p + 1;
    return true;
  }
  if (end - p >= 2 && p[1] < 0x80) { /* location IDs and lengths up to 16383 */
    *out = (uint64_t)(p[0] & 0x7f) | (uint64_t)p[1] << 7;
    *pp = p + 2;
    return true;
  }
  uint64_t v = 0;
  if (end - p >= 10) { /* no bounds check per byte; unrolled, so every shift is a constant */
#pragma GCC unroll 9
    for (int i = 0; i < 9; i++) {
      uint64_t b = p[i];
      v |= (b & 0x7f) << (7 * i);
      if (b < 0x80) {
        *out = v;
        *pp = p + i + 1;
        return true;
      }
    }
    if (p[9] > 1) return false;
    *out = v | (uint64_t)p[9] << 63;
    *pp = p + 10;
    return true;
  }
  for (int shift = 0; shift < 70; shift += 7) {
    if (p >= end)
      return false;
    uint8_t b = *p++;
    if (shift == 63 && b > 1)
      return false;
    v |= (uint64_t)(b & 0x7f) << shift;
    if (!(b & 0x80)) {
      *out = v;
      *pp = p;
      return true;
    }
  }
  return false;
}

/* A length prefix: at most 5 bytes (protobuf-c), at most INT_MAX, fitting the bytes left. */
static inline __attribute__((always_inline)) bool sp__len(const uint8_t **pp, const uint8_t *end,
                                                          uint64_t *out) {
  const uint8_t *p = *pp;
  if (!sp__varint(pp, end, out) || *pp - p > 5 || *out > INT_MAX || *out > (uint64_t)(end - *pp))
    return false;
  return true;
}

typedef struct sp__fld_s {
  uint32_t num;
  int wt;
  uint64_t v;          /* wire type 0: the value; 2: the payload length */
  const uint8_t *data; /* wire type 2: the payload */
} sp__fld_t;

/* Next field at *pp: 1 read, 0 at the end, -1 malformed. */
static inline __attribute__((always_inline)) int sp__next(const uint8_t **pp, const uint8_t *end, sp__fld_t *f) {
  const uint8_t *p = *pp;
  if (p >= end)
    return 0;
  uint64_t key;
  if (*p < 0x80) {
    key = *p++;
  } else {
    const uint8_t *k0 = p;
    if (!sp__varint(&p, end, &key) || p - k0 > 5)
      return -1;
  }
  if ((key >> 3) == 0 || (key >> 3) > 0x1fffffff)
    return -1;
  f->num = (uint32_t)(key >> 3);
  f->wt = (int)(key & 7);
  f->v = 0;
  f->data = p;
  switch (f->wt) {
  case 0:
    if (!sp__varint(&p, end, &f->v))
      return -1;
    break;
  case 1:
    if (end - p < 8)
      return -1;
    p += 8;
    break;
  case 5:
    if (end - p < 4)
      return -1;
    p += 4;
    break;
  case 2: {
    if (!sp__len(&p, end, &f->v)) return -1;
    f->data = p;
    p += f->v;
    break;
  }
  default:
    return -1;
  }
  *pp = p;
  return 1;
}

/* ---- validation context --------------------------------------------------------- */

enum { SP__K_VARINT, SP__K_VARINT_REP, SP__K_STR_REP, SP__K_MSG, SP__K_MSG_REP };

#define SP__FIELD_COST 32 /* pbscan.c's per-occurrence record */

/* sp__loc_word's thresholds, each times 0x0101...01, and sp__loc_block's. */
typedef struct sp__locw_s {
  uint64_t k1, nh, nh1, nl1;
#if defined(__SSE2__)
  __m128i n1v, nhv, nlv; /* sp__loc_block's: min(n, 127), n' >> 7, n' & 127 in every byte */
#endif
} sp__locw_t;

typedef struct sp__val_s {
  uint64_t cost, max_cost;
  uint64_t max_str; /* largest string index referenced (negative ones wrap to huge) */
  size_t min_vals, max_vals;
  /* Over sample location_ids: whether there are any, and the largest ID - 1 (0 wrapping
   * to the top), so that they all lie in 1..n iff loc_ref_top < n: one compare per ID. */
  bool loc_ref_any;
  uint64_t loc_ref_top;
  /* The block / word checks of packed location IDs (sp__loc_block, sp__loc_word): IDs in
   * 1..n, n the number of location fields counted by the first pass, as byte thresholds. */
  sp__locw_t locw;
  const uint8_t *buf_end; /* end of the whole input: 8-byte loads up to here are safe */
  uint64_t fn_ref_min, fn_ref_max;   /* over line function_ids */
  uint64_t map_ref_max;              /* over non-zero location mapping_ids */
  uint64_t *loc_ids, *fn_ids, *map_ids;
  size_t n_loc, n_fn, n_map;
  sp_pw_range_t *loc_rng; /* location payloads, for the second walk */
  /* SP_PW_LABELS: the labels as read, in sp_malloc'd scratch, and each sample's first */
  bool want_labels; /* still collecting (false once a label does not fit or memory ran out) */
  sp_pw_plabel_t *pl;
  size_t n_pl, cap_pl;
  uint32_t *pl_start; /* arena, n_samples + 1 */
  size_t n_smp_seen;
  size_t n_smp_hint; /* the first pass's count of samples */
} sp__val_t;

/*
 * Accounts for one known field as pbscan.c does and checks its wire type.
 * Returns 0 (wire type as declared), 1 (a packed repeated scalar: the caller
 * reads it with sp__varint, failing with SP_EPROTO), SP_ETOOBIG or SP_EPROTO.
 */
static inline int sp__known(sp__val_t *c, uint64_t *fields, int kind, const sp__fld_t *f) {
  (*fields)++;
  bool msg = kind == SP__K_MSG || kind == SP__K_MSG_REP;
  if (kind != SP__K_VARINT && kind != SP__K_MSG)
    c->cost += 8;
  if (f->wt == 2 && !msg)
    c->cost += f->v + 1;
  if (c->cost + *fields * SP__FIELD_COST > c->max_cost)
    return SP_ETOOBIG;
  int want = kind == SP__K_VARINT || kind == SP__K_VARINT_REP ? 0 : 2;
  if (f->wt == want)
    return 0;
  if (kind == SP__K_VARINT_REP && f->wt == 2) {
    c->cost += f->v * 8;
    return 1;
  }
  return SP_EPROTO;
}

#define SP__STR(c, v) ((c)->max_str = (uint64_t)(v) > (c)->max_str ? (uint64_t)(v) : (c)->max_str)

/*
 * Walks a message whose fields are all non-repeated varints (ValueType, Label, Line,
 * Function, Mapping, and Location minus its lines), keeping the last value of fields
 * 1..n_vals in vals[]. Such a message adds only its per-field records to the cost
 * while it is walked, so the budget becomes a field count fixed up front; the common
 * encoding (one-byte keys of known fields, wire type 0) skips sp__next and sp__known.
 */
static int sp__val_flat(sp__val_t *c, size_t sizeof_message, const uint8_t *p, const uint8_t *end,
                        int64_t *vals, uint32_t n_vals, uint32_t n_known) {
  c->cost += sizeof_message;
  uint64_t fields = 0;
  uint64_t max_fields = c->cost > c->max_cost ? 0 : (c->max_cost - c->cost) / SP__FIELD_COST;
  while (p < end) {
    uint8_t key = *p;
    uint32_t num = key >> 3;
    if ((key & 0x87) == 0 && num >= 1 && num <= n_known) {
      uint64_t v;
      p++;
      if (!sp__varint(&p, end, &v)) return SP_EPROTO;
      if (++fields > max_fields) return SP_ETOOBIG;
      if (num <= n_vals) vals[num - 1] = (int64_t)v;
      continue;
    }
    sp__fld_t f;
    if (sp__next(&p, end, &f) < 0) return SP_EPROTO;
    if (f.num > n_known)
      continue;
    int k = sp__known(c, &fields, SP__K_VARINT, &f);
    if (k != 0)
      return k < 0 ? k : SP_EPROTO;
    if (f.num <= n_vals)
      vals[f.num - 1] = (int64_t)f.v;
  }
  return 0;
}

static int sp__val_valuetype(sp__val_t *c, const sp__fld_t *f, int64_t out[2]) {
  out[0] = out[1] = 0;
  return sp__val_flat(c, perftools__profiles__value_type__descriptor.sizeof_message, f->data,
                      f->data + f->v, out, 2, 2);
}

/* Keeps one label of the sample being validated (SP_PW_LABELS). */
static void sp__keep_label(sp__val_t *c, const int64_t l[4]) {
  sp_pw_plabel_t pl;
  if (l[0] < 0 || l[0] >= (int64_t)SP_PW_PLABEL_NUM || l[3] != 0) {
    c->want_labels = false;
    return;
  }
  if (l[2] == 0 && l[1] >= 0 && l[1] <= (int64_t)UINT32_MAX) {
    pl = (sp_pw_plabel_t){(uint32_t)l[0], (uint32_t)l[1]};
  } else if (l[1] == 0 && l[2] > 0 && l[2] <= (int64_t)UINT32_MAX) {
    pl = (sp_pw_plabel_t){(uint32_t)l[0] | SP_PW_PLABEL_NUM, (uint32_t)l[2]};
  } else {
    c->want_labels = false;
    return;
  }
  if (c->n_pl == c->cap_pl) {
    /* First: room for a label per sample (most profiles have at most that), within reason. */
    size_t cap = c->cap_pl ? c->cap_pl * 2 : (c->n_smp_hint < 65536 ? c->n_smp_hint : 65536) + 64;
    sp_pw_plabel_t *b = sp_realloc(c->pl, cap * sizeof(*b));
    if (b == NULL) {
      c->want_labels = false;
      return;
    }
    c->pl = b;
    c->cap_pl = cap;
  }
  c->pl[c->n_pl++] = pl;
}

/* ---- eight bytes at a time ----------------------------------------------------------- */

/*
 * Packed varints read as 64-bit words ("SWAR"): bit 7 of each byte lane is
 * that byte's continuation bit. Lane arithmetic on 7-bit payloads x (every
 * byte of x below 0x80) cannot borrow across lanes: (x | 0x80) - k for
 * k <= 128 stays within 0..255, and its bit 7 says whether x >= k.
 * Little-endian only (byte i of the buffer is lane i); elsewhere the scalar
 * loops do all the work.
 */
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
#define SP__SWAR 1
#else
#define SP__SWAR 0
#endif
#define SP__HI 0x8080808080808080ull
#define SP__LO 0x0101010101010101ull

static inline uint64_t sp__load64(const uint8_t *p) {
  uint64_t w;
  memcpy(&w, p, 8);
  return w;
}

/*
 * Location IDs in one word, given the previous word's last lane (carries:
 * bit 7 of each says whether that byte was a continuation byte, had a zero
 * payload, had a payload >= nl1; 0 before the first word). Returns lanes
 * (bit 7) that show a varint of 3 or more bytes or an ID outside 1..n; 0
 * when every varint ending in the word has 1 or 2 bytes and a value in
 * 1..n. With n' = min(n, 16383): a 1-byte value x is out of range iff
 * x == 0 or x >= k1 = min(n, 127) + 1; a 2-byte one lo | hi << 7 iff both
 * parts are 0, hi > nh = n' >> 7, or hi == nh and lo >= nl1 = (n' & 127) + 1.
 * Only bit 7 of each lane is meaningful in the intermediate values (one
 * mask at the end): (x | 0x80) - k has bit 7 set iff x >= k (0 <= k <= 128,
 * x a 7-bit payload), and no lane borrows from the next.
 */
static inline uint64_t sp__loc_word(uint64_t w, const sp__locw_t *t, uint64_t *carry_cont,
                                    uint64_t *carry_zero, uint64_t *carry_ge) {
  uint64_t cont = w & SP__HI;
  uint64_t x = w | SP__HI; /* payload | 0x80 in every lane */
  uint64_t nonzero = x - SP__LO;
  uint64_t ge_lo = x - t->nl1;
  uint64_t second = cont << 8 | *carry_cont; /* lanes holding a 2-byte varint's second byte */
  uint64_t lo_zero = ~nonzero << 8 | *carry_zero;
  uint64_t lo_ge = ge_lo << 8 | *carry_ge;
  *carry_cont = cont >> 56;
  *carry_zero = ~nonzero >> 56;
  *carry_ge = ge_lo >> 56;
  uint64_t single = ~(cont | second);
  uint64_t hi_ne = (x ^ t->nh) - SP__LO; /* bit 7 set iff hi != nh */
  uint64_t bad = (cont & second) | (single & (~nonzero | (x - t->k1))) |
                 (second & ((x - t->nh1) | (~hi_ne & lo_ge) | (~nonzero & lo_zero)));
  return bad & SP__HI;
}

/* The thresholds of sp__loc_word and sp__loc_block for IDs 1..n. */
static void sp__loc_word_init(sp__locw_t *t, uint64_t n) {
  uint64_t nc = n < 16383 ? n : 16383;
  t->k1 = ((n < 127 ? n : 127) + 1) * SP__LO;
  t->nh = (nc >> 7) * SP__LO;
  t->nh1 = ((nc >> 7) + 1) * SP__LO;
  t->nl1 = ((nc & 127) + 1) * SP__LO;
#if defined(__SSE2__)
  t->n1v = _mm_set1_epi8((char)(n < 127 ? n : 127));
  t->nhv = _mm_set1_epi8((char)(nc >> 7));
  t->nlv = _mm_set1_epi8((char)(nc & 127));
#endif
}

#if SP__SWAR && defined(__SSE2__)
#define SP__SSE2 1
/*
 * sp__loc_word on 16 bytes with SSE2 byte compares: the same conditions,
 * with one bit per byte (bit i: byte i) instead of one per lane, and
 * carries of bit 15 as 0/1, except that any 2-byte varint whose second
 * byte is 0 (never the shortest encoding) is inconclusive rather than
 * checked for ID 0. 7-bit payloads compare as signed bytes.
 */
static inline uint32_t sp__loc_block(__m128i w, const sp__locw_t *t, uint32_t *carry_cont,
                                     uint32_t *carry_gt) {
  __m128i x = _mm_and_si128(w, _mm_set1_epi8(0x7f));
  uint32_t cont = (uint32_t)_mm_movemask_epi8(w);
  uint32_t nul = (uint32_t)_mm_movemask_epi8(_mm_cmpeq_epi8(x, _mm_setzero_si128()));
  uint32_t gt1 = (uint32_t)_mm_movemask_epi8(_mm_cmpgt_epi8(x, t->n1v));
  uint32_t gth = (uint32_t)_mm_movemask_epi8(_mm_cmpgt_epi8(x, t->nhv));
  uint32_t eqh = (uint32_t)_mm_movemask_epi8(_mm_cmpeq_epi8(x, t->nhv));
  uint32_t gtl = (uint32_t)_mm_movemask_epi8(_mm_cmpgt_epi8(x, t->nlv));
  uint32_t second = cont << 1 | *carry_cont;
  uint32_t lo_gt = gtl << 1 | *carry_gt;
  *carry_cont = cont >> 15;
  *carry_gt = gtl >> 15;
  uint32_t single = ~(cont | second);
  /* A zero payload in a last byte: ID 0, or a 2-byte varint's high part 0 (not the
   * shortest encoding, so inconclusive here; the scalar loop decides). */
  uint32_t bad = (cont & second) | (nul & ~cont) | (single & gt1) | (second & (gth | (eqh & lo_gt)));
  return bad & 0xffff;
}
#else
#define SP__SSE2 0
#endif

/*
 * A packed location_id payload: most IDs take one or two bytes. It is first
 * read as 16-byte blocks (SSE2) and/or 8-byte words that only check that
 * every ID lies in 1..n (n the first pass's count of locations, which is
 * the validated count whenever the final check is reached), without
 * decoding them; the last 1-16 (1-8) bytes are one more block (word), the
 * bytes past the payload read as 0x01, one-byte IDs of 1. Each block or
 * word depends on the previous one only through a few carried bits, so
 * they pipeline. Should any be inconclusive, the payload is read again one
 * varint at a time into the maximum of ID - 1, as before, which catches
 * every error.
 */
static inline __attribute__((always_inline)) int sp__val_loc_ids(sp__val_t *c, const uint8_t *q,
                                                                const uint8_t *qe) {
  uint64_t top = c->loc_ref_top, v;
  if (q < qe) c->loc_ref_any = true;
#if SP__SWAR
  if (q < qe && !(qe[-1] & 0x80)) {
    uint64_t cc = 0, cz = 0, cg = 0, bad = 0, w;
    const uint8_t *s = q;
#if SP__SSE2
    {
      uint32_t bc = 0, bg = 0, bbad = 0;
      for (; qe - s > 16; s += 16)
        bbad |= sp__loc_block(_mm_loadu_si128((const __m128i *)(const void *)s), &c->locw, &bc,
                              &bg);
      if (c->buf_end - s >= 16) { /* the last 1-16 bytes as one more block */
        __m128i keep = _mm_cmpgt_epi8(_mm_set1_epi8((char)(qe - s)),
                                      _mm_setr_epi8(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15));
        __m128i w16 = _mm_loadu_si128((const __m128i *)(const void *)s);
        w16 = _mm_or_si128(_mm_and_si128(keep, w16), _mm_andnot_si128(keep, _mm_set1_epi8(1)));
        if ((bbad | sp__loc_block(w16, &c->locw, &bc, &bg)) == 0)
          return 0;
        goto scalar;
      }
      /* Near the end of the input: the words below, from the block's carries. */
      cc = (uint64_t)bc << 7, cg = (uint64_t)bg << 7;
      cz = s > q && (s[-1] & 0x7f) == 0 ? 0x80 : 0; /* a carry the blocks do not keep */
      bad = bbad;
    }
#endif
    for (; qe - s > 8; s += 8)
      bad |= sp__loc_word(sp__load64(s), &c->locw, &cc, &cz, &cg);
    size_t r = (size_t)(qe - s); /* 1..8 */
    if (c->buf_end - s >= 8) {
      uint64_t keep = ~0ull >> (8 * (8 - r));
      w = (sp__load64(s) & keep) | (SP__LO & ~keep);
    } else {
      w = SP__LO;
      memcpy(&w, s, r);
    }
    bad |= sp__loc_word(w, &c->locw, &cc, &cz, &cg);
    if (bad == 0)
      return 0;
  }
#if SP__SSE2
scalar:
#endif
#endif
  while (q < qe) {
    if (!sp__varint(&q, qe, &v)) return SP_EPROTO;
    top = v - 1 > top ? v - 1 : top;
  }
  c->loc_ref_top = top;
  return 0;
}

/*
 * The number of varints in a packed payload, or -1 unless it is a whole
 * number of valid ones (as sp__varint reads them): counted a byte at a time
 * without branches, since values of one and of several bytes alternate.
 */
static inline int64_t sp__count_varints(const uint8_t *q, const uint8_t *qe) {
  uint64_t n = 0;
  uint32_t run = 0; /* continuation bytes so far in the current varint */
  bool bad = false;
  for (; q < qe; q++) {
    uint32_t cont = *q >> 7;
    bad |= run == 9 && *q > 1; /* the 10th byte: 0 or 1 */
    n += cont ^ 1;
    run = (run + 1) & (0 - cont);
  }
  return bad || run != 0 ? -1 : (int64_t)n;
}

/*
 * A Label in its common encoding: only one-byte keys of fields 1-4 with wire
 * type 0 and valid varints. Sets l[] (the last value of each field wins;
 * 0 for fields absent) and *n_fields and returns true; otherwise returns
 * false, and the caller walks the Label with sp__val_flat.
 */
static inline bool sp__label_common(const uint8_t *q, const uint8_t *qe, int64_t l[4],
                                    uint64_t *n_fields) {
  /* In registers (selects, no indexed stores that the reads after the loop would wait on). */
  uint64_t n = 0, v, l0 = 0, l1 = 0, l2 = 0, l3 = 0;
  while (q < qe) {
    uint8_t key = *q++;
    if ((key & 0x87) != 0 || key < 0x08 || key > 0x20) return false;
    if (!sp__varint(&q, qe, &v)) return false;
    l0 = key == 0x08 ? v : l0;
    l1 = key == 0x10 ? v : l1;
    l2 = key == 0x18 ? v : l2;
    l3 = key == 0x20 ? v : l3;
    n++;
  }
  l[0] = (int64_t)l0, l[1] = (int64_t)l1, l[2] = (int64_t)l2, l[3] = (int64_t)l3;
  *n_fields = n;
  return true;
}

/* A sample's label, its length prefix read: validated, its strings noted, kept (SP_PW_LABELS). */
static inline int sp__val_label(sp__val_t *c, const uint8_t *q, const uint8_t *qe) {
  const size_t label_size = perftools__profiles__label__descriptor.sizeof_message;
  int64_t l[4] = {0, 0, 0, 0};
  uint64_t n_fields;
  int k;
  if (sp__label_common(q, qe, l, &n_fields)) {
    /* sp__val_flat's budget check on a valid label: fails iff it has a field too many. */
    c->cost += label_size;
    if (n_fields > 0 && c->cost + n_fields * SP__FIELD_COST > c->max_cost) return SP_ETOOBIG;
  } else if ((k = sp__val_flat(c, label_size, q, qe, l, 4, 4)) != 0) {
    return k;
  }
  SP__STR(c, l[0]);
  SP__STR(c, l[1]);
  SP__STR(c, l[3]);
  if (c->want_labels)
    sp__keep_label(c, l);
  return 0;
}

static int sp__val_sample(sp__val_t *c, const sp__fld_t *sf) {
  c->cost += perftools__profiles__sample__descriptor.sizeof_message;
  if (c->want_labels)
    c->pl_start[c->n_smp_seen++] = (uint32_t)c->n_pl;
  uint64_t fields = 0;
  size_t n_vals = 0;
  const uint8_t *p = sf->data, *end = sf->data + sf->v;
  sp__fld_t f;
  int r, k;
  while (p < end) {
    uint8_t key = *p;
    if (key == 0x0a || key == 0x12) { /* packed location_id / value: the common encoding */
      const uint8_t *q = p + 1;
      uint64_t n;
      if (!sp__len(&q, end, &n)) return SP_EPROTO;
      /* What sp__known accounts for a packed repeated scalar. */
      fields++;
      c->cost += 8 + n + 1;
      if (c->cost + fields * SP__FIELD_COST > c->max_cost) return SP_ETOOBIG;
      c->cost += n * 8;
      p = q + n;
      if (key == 0x0a) {
        if ((k = sp__val_loc_ids(c, q, p)) != 0) return k;
      } else {
#if SP__SWAR
        if (n <= 8 && c->buf_end - q >= 8) {
          /* Varints of at most 8 bytes: whole iff the last byte ends one; one per end byte. */
          if (n > 0) {
            if (p[-1] & 0x80) return SP_EPROTO;
            uint64_t ends = ~sp__load64(q) & (SP__HI >> (8 * (8 - n)));
            n_vals += (size_t)(((ends >> 7) * SP__LO) >> 56);
          }
          continue;
        }
#endif
        int64_t n_packed = sp__count_varints(q, p);
        if (n_packed < 0) return SP_EPROTO;
        n_vals += (size_t)n_packed;
      }
      continue;
    }
    if (key == 0x1a) { /* a label, with sp__known's accounting for a repeated message */
      const uint8_t *q = p + 1;
      uint64_t n;
      if (!sp__len(&q, end, &n)) return SP_EPROTO;
      fields++;
      c->cost += 8;
      if (c->cost + fields * SP__FIELD_COST > c->max_cost) return SP_ETOOBIG;
      p = q + n;
      if ((k = sp__val_label(c, q, p)) != 0) return k;
      continue;
    }
    if ((r = sp__next(&p, end, &f)) < 0) return SP_EPROTO;
    switch (f.num) {
    case 1: /* location_id */
    case 2: /* value */
      if ((k = sp__known(c, &fields, SP__K_VARINT_REP, &f)) < 0)
        return k;
      if (k == 0) {
        if (f.num == 2) {
          n_vals++;
        } else {
          c->loc_ref_any = true;
          c->loc_ref_top = f.v - 1 > c->loc_ref_top ? f.v - 1 : c->loc_ref_top;
        }
        break;
      }
      {
        const uint8_t *q = f.data, *qe = f.data + f.v;
        uint64_t v;
        if (f.num == 2) {
          while (q < qe) {
            if (!sp__varint(&q, qe, &v))
              return SP_EPROTO;
            n_vals++;
          }
        } else if ((k = sp__val_loc_ids(c, q, qe)) != 0) {
          return k;
        }
      }
      break;
    case 3: /* label */
      if ((k = sp__known(c, &fields, SP__K_MSG_REP, &f)) != 0)
        return k < 0 ? k : SP_EPROTO;
      if ((k = sp__val_label(c, f.data, f.data + f.v)) != 0)
        return k;
      break;
    default:
      break;
    }
  }
  c->min_vals = n_vals < c->min_vals ? n_vals : c->min_vals;
  c->max_vals = n_vals > c->max_vals ? n_vals : c->max_vals;
  return 0;
}

/*
 * A Line in its common encoding: only one-byte keys of fields 1-3 with wire type
 * 0 and valid varints. Sets *fn (function_id) and *n_fields and returns true;
 * otherwise returns false having changed nothing, and the caller walks the
 * Line with sp__val_flat, which finds the error (or the odd encoding) in order.
 */
static inline bool sp__line_common(const uint8_t *q, const uint8_t *qe, uint64_t *fn,
                                   uint64_t *n_fields) {
  uint64_t n = 0, f = 0, v;
  while (q < qe) {
    uint8_t key = *q++;
    if (key != 0x08 && key != 0x10 && key != 0x18) return false;
    if (!sp__varint(&q, qe, &v)) return false;
    if (key == 0x08) f = v;
    n++;
  }
  *fn = f;
  *n_fields = n;
  return true;
}

/*
 * A Location. The common encoding (one-byte keys: id, mapping_id, address,
 * is_folded as varints, lines as messages) is read here directly, with the
 * accounting sp__known would do; anything else goes through sp__next.
 */
static int sp__val_location(sp__val_t *c, const sp__fld_t *lf) {
  const size_t line_size = perftools__profiles__line__descriptor.sizeof_message;
  c->cost += perftools__profiles__location__descriptor.sizeof_message;
  uint64_t fields = 0;
  uint64_t id = 0, mapping = 0, fn, v;
  const uint8_t *p = lf->data, *end = lf->data + lf->v;
  sp__fld_t f;
  int k;
  while (p < end) {
    uint8_t key = *p;
    if (key == 0x08 || key == 0x10 || key == 0x18 || key == 0x28) {
      p++;
      if (!sp__varint(&p, end, &v)) return SP_EPROTO;
      if (c->cost + ++fields * SP__FIELD_COST > c->max_cost) return SP_ETOOBIG;
      if (key == 0x08)
        id = v;
      else if (key == 0x10)
        mapping = v;
      continue;
    }
    if (key == 0x22) { /* line */
      const uint8_t *q = p + 1;
      if (!sp__len(&q, end, &v)) return SP_EPROTO;
      p = q + v;
      c->cost += 8;
      if (c->cost + ++fields * SP__FIELD_COST > c->max_cost) return SP_ETOOBIG;
      uint64_t n_line;
      if (sp__line_common(q, p, &fn, &n_line)) {
        /* Valid throughout, so the budget is the only check left, and it is monotonic. */
        c->cost += line_size;
        if (c->cost + n_line * SP__FIELD_COST > c->max_cost) return SP_ETOOBIG;
      } else {
        int64_t line[3] = {0, 0, 0};
        if ((k = sp__val_flat(c, line_size, q, p, line, 1, 3)) != 0) return k;
        fn = (uint64_t)line[0];
      }
      c->fn_ref_min = fn < c->fn_ref_min ? fn : c->fn_ref_min;
      c->fn_ref_max = fn > c->fn_ref_max ? fn : c->fn_ref_max;
      continue;
    }
    if (sp__next(&p, end, &f) < 0) return SP_EPROTO;
    if (f.num == 4) {
      if ((k = sp__known(c, &fields, SP__K_MSG_REP, &f)) != 0)
        return k < 0 ? k : SP_EPROTO;
      int64_t line[3] = {0, 0, 0};
      if ((k = sp__val_flat(c, line_size, f.data, f.data + f.v, line, 1, 3)) != 0) return k;
      fn = (uint64_t)line[0];
      c->fn_ref_min = fn < c->fn_ref_min ? fn : c->fn_ref_min;
      c->fn_ref_max = fn > c->fn_ref_max ? fn : c->fn_ref_max;
    } else if (f.num >= 1 && f.num <= 5) {
      if ((k = sp__known(c, &fields, SP__K_VARINT, &f)) != 0)
        return k < 0 ? k : SP_EPROTO;
      if (f.num == 1)
        id = f.v;
      else if (f.num == 2)
        mapping = f.v;
    }
  }
  if (mapping > c->map_ref_max)
    c->map_ref_max = mapping;
  c->loc_ids[c->n_loc++] = id;
  return 0;
}

/* ---- ID sets (the non-dense case) -------------------------------------------------- */

static int sp__cmp_u64(const void *a, const void *b) {
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return x < y ? -1 : x > y;
}

static bool sp__dense(const uint64_t *ids, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (ids[i] != i + 1)
      return false;
  return true;
}

/* Sorts ids in place; false on a zero or duplicate ID (what sp_pprof_validate refuses). */
static bool sp__idset_sort(uint64_t *ids, size_t n) {
  qsort(ids, n, sizeof(uint64_t), sp__cmp_u64);
  for (size_t i = 0; i < n; i++)
    if (ids[i] == 0 || (i > 0 && ids[i] == ids[i - 1]))
      return false;
  return true;
}

static bool sp__idset_has(const uint64_t *ids, size_t n, bool dense, uint64_t id) {
  if (dense)
    return id >= 1 && id <= n;
  return bsearch(&id, ids, n, sizeof(uint64_t), sp__cmp_u64) != NULL;
}

/* The second walk when some ID set is not 1..n: every reference looked up. */
static bool sp__refs_ok(const sp_pprof_wire_t *w, sp__val_t *c, bool loc_dense, bool fn_dense,
                        bool map_dense) {
  for (size_t i = 0; i < w->n_samples; i++) {
    const uint8_t *p = w->raw + w->samples[i].off, *end = p + w->samples[i].len;
    sp__fld_t f;
    while (sp__next(&p, end, &f) > 0) {
      if (f.num != 1)
        continue;
      if (f.wt == 0) {
        if (!sp__idset_has(c->loc_ids, c->n_loc, loc_dense, f.v))
          return false;
      } else {
        const uint8_t *q = f.data, *qe = f.data + f.v;
        uint64_t v;
        while (q < qe && sp__varint(&q, qe, &v))
          if (!sp__idset_has(c->loc_ids, c->n_loc, loc_dense, v))
            return false;
      }
    }
  }
  for (size_t i = 0; i < c->n_loc; i++) {
    const uint8_t *p = w->raw + c->loc_rng[i].off, *end = p + c->loc_rng[i].len;
    uint64_t mapping = 0;
    sp__fld_t f;
    while (sp__next(&p, end, &f) > 0) {
      if (f.num == 2 && f.wt == 0) {
        mapping = f.v;
      } else if (f.num == 4 && f.wt == 2) {
        const uint8_t *q = f.data, *qe = f.data + f.v;
        uint64_t fn = 0;
        sp__fld_t g;
        while (sp__next(&q, qe, &g) > 0)
          if (g.num == 1 && g.wt == 0)
            fn = g.v;
        if (!sp__idset_has(c->fn_ids, c->n_fn, fn_dense, fn))
          return false;
      }
    }
    if (mapping != 0 && !sp__idset_has(c->map_ids, c->n_map, map_dense, mapping))
      return false;
  }
  return true;
}

/* ---- indexing ---------------------------------------------------------------------- */

/* Reads a ValueType without checks (the bytes were validated before). */
static void sp__valuetype_lenient(const sp__fld_t *vf, int64_t out[2]) {
  const uint8_t *p = vf->data, *end = vf->data + vf->v;
  sp__fld_t f;
  while (sp__next(&p, end, &f) > 0)
    if (f.wt == 0 && (f.num == 1 || f.num == 2))
      out[f.num - 1] = (int64_t)f.v;
}

static int sp__fail_msg(char *err, size_t errlen, int rc, uint64_t max_cost) {
  if (err == NULL || errlen == 0)
    return rc;
  if (rc == SP_ETOOBIG)
    snprintf(err, errlen,
             "decoding would need more than %llu MiB (over %d times the request size); "
             "send smaller requests",
             (unsigned long long)(max_cost >> 20), SP_PBSCAN_COST_FACTOR);
  else if (rc == SP_ENOMEM)
    snprintf(err, errlen, "out of memory indexing the profile");
  else
    snprintf(err, errlen, "not a pprof profile (malformed protobuf)");
  return rc;
}

/*
 * A semantic check failed: let the decoder name the offender, in its words.
 * Should it accept the profile after all (it cannot, unless the aggregates
 * above are wrong), the profile is still refused.
 */
static int sp__diagnose(const uint8_t *raw, size_t len, char *err, size_t errlen) {
  sp_arena_t *a = sp_arena_create(len + 4096);
  sp_pprof_t *p = NULL;
  int rc = SP_ENOMEM;
  if (a != NULL)
    rc = sp_pprof_decode(a, raw, len, &p, err, errlen);
  sp_arena_destroy(a);
  if (rc == SP_ENOMEM) {
    if (err != NULL && errlen > 0)
      snprintf(err, errlen, "out of memory checking the profile");
    return SP_ENOMEM;
  }
  if (rc == 0 && err != NULL && errlen > 0)
    snprintf(err, errlen, "inconsistent profile (string, value or id references)");
  return SP_EPROTO;
}

/*
 * The key summary from the pre-decoded labels: keys in order of first
 * appearance, each with its longest value. False past SP_PW_MAX_KEYS keys.
 */
static bool sp__summarise_keys(const sp_pprof_wire_t *w, sp_pw_keysum_t *keys, size_t *n_keys) {
  size_t n = 0, last = SIZE_MAX;
  for (size_t i = 0; i < w->n_samples; i++) {
    for (uint32_t j = w->plabel_start[i]; j < w->plabel_start[i + 1]; j++) {
      const sp_pw_plabel_t *l = &w->plabels[j];
      if (l->key == 0 || (l->key & SP_PW_PLABEL_NUM) || l->val == 0)
        continue;
      size_t e = last;
      if (e == SIZE_MAX || keys[e].key != (int64_t)l->key) {
        for (e = 0; e < n && keys[e].key != (int64_t)l->key; e++)
          ;
        if (e == n) {
          if (n == SP_PW_MAX_KEYS)
            return false;
          keys[n++] = (sp_pw_keysum_t){(int64_t)l->key, (uint32_t)i, j - w->plabel_start[i], 0};
        }
        last = e;
      }
      uint32_t vl = l->val < w->n_strings ? w->strings[l->val].len : 0;
      if (vl > keys[e].max_len)
        keys[e].max_len = vl;
    }
  }
  *n_keys = n;
  return true;
}

/* Moves the collected labels and their summary into the arena; without memory, no labels. */
static void sp__install_labels(sp_arena_t *arena, sp__val_t *c, sp_pprof_wire_t *out) {
  sp_pw_plabel_t *pl = sp_arena_alloc(arena, (c->n_pl ? c->n_pl : 1) * sizeof(*pl));
  if (pl == NULL)
    return;
  if (c->n_pl > 0)
    memcpy(pl, c->pl, c->n_pl * sizeof(*pl));
  c->pl_start[out->n_samples] = (uint32_t)c->n_pl;
  out->plabels = pl;
  out->plabel_start = c->pl_start;
  sp_pw_keysum_t keys[SP_PW_MAX_KEYS];
  size_t n = 0;
  if (!sp__summarise_keys(out, keys, &n))
    return;
  sp_pw_keysum_t *k = sp_arena_alloc(arena, (n ? n : 1) * sizeof(*k));
  if (k == NULL)
    return;
  if (n > 0)
    memcpy(k, keys, n * sizeof(*k));
  out->keys = k;
  out->n_keys = n;
  out->has_keys = true;
}

int sp_pprof_wire_index(sp_arena_t *arena, const uint8_t *raw, size_t len, bool validate,
                        sp_pprof_wire_t *out, char *err, size_t errlen) {
  return sp_pprof_wire_index_ex(arena, raw, len, validate ? SP_PW_VALIDATE : 0, out, err, errlen);
}

int sp_pprof_wire_index_ex(sp_arena_t *arena, const uint8_t *raw, size_t len, unsigned flags,
                           sp_pprof_wire_t *out, char *err, size_t errlen) {
  bool validate = (flags & SP_PW_VALIDATE) != 0;
  memset(out, 0, sizeof(*out));
  if (err != NULL && errlen > 0)
    err[0] = '\0';
  sp__val_t c;
  memset(&c, 0, sizeof(c));
  c.max_cost = sp_pbscan_budget(len);
  if (len >= ((size_t)1 << 32) || (raw == NULL && len > 0))
    return sp__fail_msg(err, errlen, SP_EPROTO, c.max_cost);
  if (raw == NULL)
    raw = (const uint8_t *)"";
  out->raw = raw;
  out->len = len;

  /* Pass 1: counts (framing of the top level only). */
  size_t n_str = 0, n_smp = 0, n_st = 0, n_loc = 0, n_fn = 0, n_map = 0;
  bool framing_bad = false;
  {
    /* A counter per field number below 16, for length-delimited fields; one-byte keys read directly. */
    size_t cnt[16] = {0};
    const uint8_t *p = raw, *end = raw + len;
    sp__fld_t f;
    int r = 0;
    while (p < end) {
      uint8_t key = *p;
      if ((key & 0x87) == 2 && key >= 0x08) {
        const uint8_t *q = p + 1;
        uint64_t n;
        if (!sp__len(&q, end, &n)) {
          r = -1;
          break;
        }
        cnt[key >> 3]++;
        p = q + n;
        continue;
      }
      if ((r = sp__next(&p, end, &f)) <= 0)
        break;
      if (f.wt == 2 && f.num < 16)
        cnt[f.num]++;
    }
    framing_bad = r < 0;
    n_st = cnt[1], n_smp = cnt[2], n_map = cnt[3], n_loc = cnt[4], n_fn = cnt[5], n_str = cnt[6];
  }
  if (framing_bad && !validate)
    return sp__fail_msg(err, errlen, SP_EPROTO, c.max_cost);

  int rc = 0;
  out->strings = n_str ? sp_arena_alloc(arena, n_str * sizeof(*out->strings)) : NULL;
  out->samples = n_smp ? sp_arena_alloc(arena, n_smp * sizeof(*out->samples)) : NULL;
  out->sample_types = n_st ? sp_arena_alloc(arena, n_st * sizeof(*out->sample_types)) : NULL;
  if ((n_str && !out->strings) || (n_smp && !out->samples) || (n_st && !out->sample_types)) {
    rc = SP_ENOMEM;
    goto fail;
  }
  if (validate) {
    c.loc_ids = sp_malloc((n_loc + 1) * sizeof(uint64_t));
    c.loc_rng = sp_malloc((n_loc + 1) * sizeof(sp_pw_range_t));
    c.fn_ids = sp_malloc((n_fn + 1) * sizeof(uint64_t));
    c.map_ids = sp_malloc((n_map + 1) * sizeof(uint64_t));
    if (!c.loc_ids || !c.loc_rng || !c.fn_ids || !c.map_ids) {
      rc = SP_ENOMEM;
      goto fail;
    }
    c.min_vals = SIZE_MAX;
    c.buf_end = raw + len;
    c.n_smp_hint = n_smp;
    sp__loc_word_init(&c.locw, n_loc);
    c.fn_ref_min = UINT64_MAX;
    if ((flags & SP_PW_LABELS) && n_smp < UINT32_MAX) {
      c.pl_start = sp_arena_alloc(arena, (n_smp + 1) * sizeof(uint32_t));
      c.want_labels = c.pl_start != NULL;
    }
    c.cost = perftools__profiles__profile__descriptor.sizeof_message;
  }

  /* Pass 2: fill (and, validating, check everything). */
  int64_t period_type[2] = {0, 0};
  int64_t scalars[4] = {0, 0, 0, 0}; /* drop_frames, keep_frames, default_sample_type, doc_url */
  uint64_t fields = 0;
  const uint8_t *p = raw, *end = raw + len;
  const uint8_t *start = raw;
  sp__fld_t f;
  int r = 0;
  for (;;) {
    if (validate && p < end && (*p == 0x12 || *p == 0x32)) {
      /* A sample or a string with a one-byte key: sp__known's accounting, without sp__next. */
      const uint8_t *q = p + 1;
      uint64_t n;
      if (!sp__len(&q, end, &n)) {
        r = -1;
        break;
      }
      bool smp = *p == 0x12;
      uint32_t foff = (uint32_t)(p - raw);
      fields++;
      c.cost += smp ? 8 : 8 + n + 1;
      p = start = q + n;
      if (c.cost + fields * SP__FIELD_COST > c.max_cost) {
        rc = SP_ETOOBIG;
        goto fail;
      }
      if (smp) {
        f = (sp__fld_t){2, 2, n, q};
        if ((rc = sp__val_sample(&c, &f)) != 0)
          goto fail;
        out->samples[out->n_samples++] = (sp_pw_sample_t){foff, (uint32_t)(q - raw), (uint32_t)n};
      } else {
        out->strings[out->n_strings++] = (sp_pw_range_t){(uint32_t)(q - raw), (uint32_t)n};
      }
      continue;
    }
    if ((r = sp__next(&p, end, &f)) <= 0)
      break;
    uint32_t foff = (uint32_t)(start - raw);
    start = p;
    int k = 0;
    if (!validate) {
      if (f.wt == 2) {
        uint32_t off = (uint32_t)(f.data - raw);
        switch (f.num) {
        case 1: {
          int64_t *vt = out->sample_types[out->n_sample_types++];
          vt[0] = vt[1] = 0;
          sp__valuetype_lenient(&f, vt);
          break;
        }
        case 2:
          out->samples[out->n_samples++] = (sp_pw_sample_t){foff, off, (uint32_t)f.v};
          break;
        case 6:
          out->strings[out->n_strings++] = (sp_pw_range_t){off, (uint32_t)f.v};
          break;
        case 11: {
          period_type[0] = period_type[1] = 0;
          sp__valuetype_lenient(&f, period_type);
          break;
        }
        default:
          break;
        }
      } else if (f.wt == 0) {
        switch (f.num) {
        case 9: out->time_nanos = (int64_t)f.v; break;
        case 10: out->duration_nanos = (int64_t)f.v; break;
        case 12: out->period = (int64_t)f.v; break;
        default: break;
        }
      }
      continue;
    }
    switch (f.num) {
    case 1: /* sample_type */
    case 11: { /* period_type */
      if ((k = sp__known(&c, &fields, f.num == 1 ? SP__K_MSG_REP : SP__K_MSG, &f)) != 0)
        break;
      int64_t vt[2];
      if ((k = sp__val_valuetype(&c, &f, vt)) != 0)
        break;
      if (f.num == 1) {
        SP__STR(&c, vt[0]);
        SP__STR(&c, vt[1]);
        int64_t *st = out->sample_types[out->n_sample_types++];
        st[0] = vt[0];
        st[1] = vt[1];
      } else {
        /*
         * A repeated singular message is merged by protobuf-c, but proto3
         * scalars have no presence, so the later one wins whole.
         */
        period_type[0] = vt[0];
        period_type[1] = vt[1];
      }
      break;
    }
    case 2: /* sample */
      if ((k = sp__known(&c, &fields, SP__K_MSG_REP, &f)) != 0)
        break;
      if ((k = sp__val_sample(&c, &f)) != 0)
        break;
      out->samples[out->n_samples++] =
          (sp_pw_sample_t){foff, (uint32_t)(f.data - raw), (uint32_t)f.v};
      break;
    case 3: { /* mapping */
      if ((k = sp__known(&c, &fields, SP__K_MSG_REP, &f)) != 0)
        break;
      int64_t m[6] = {0};
      if ((k = sp__val_flat(&c, perftools__profiles__mapping__descriptor.sizeof_message, f.data,
                            f.data + f.v, m, 6, 10)) != 0)
        break;
      SP__STR(&c, m[4]);
      SP__STR(&c, m[5]);
      c.map_ids[c.n_map++] = (uint64_t)m[0];
      break;
    }
    case 4: /* location */
      if ((k = sp__known(&c, &fields, SP__K_MSG_REP, &f)) != 0)
        break;
      {
        size_t i = c.n_loc;
        if ((k = sp__val_location(&c, &f)) != 0)
          break;
        c.loc_rng[i] = (sp_pw_range_t){(uint32_t)(f.data - raw), (uint32_t)f.v};
      }
      break;
    case 5: { /* function */
      if ((k = sp__known(&c, &fields, SP__K_MSG_REP, &f)) != 0)
        break;
      int64_t fn[4] = {0};
      if ((k = sp__val_flat(&c, perftools__profiles__function__descriptor.sizeof_message, f.data,
                            f.data + f.v, fn, 4, 5)) != 0)
        break;
      SP__STR(&c, fn[1]);
      SP__STR(&c, fn[2]);
      SP__STR(&c, fn[3]);
      c.fn_ids[c.n_fn++] = (uint64_t)fn[0];
      break;
    }
    case 6: /* string_table */
      if ((k = sp__known(&c, &fields, SP__K_STR_REP, &f)) != 0)
        break;
      out->strings[out->n_strings++] = (sp_pw_range_t){(uint32_t)(f.data - raw), (uint32_t)f.v};
      break;
    case 13: /* comment */
      if ((k = sp__known(&c, &fields, SP__K_VARINT_REP, &f)) < 0)
        break;
      if (k == 0) {
        SP__STR(&c, f.v);
      } else {
        const uint8_t *q = f.data, *qe = f.data + f.v;
        uint64_t v;
        k = 0;
        while (q < qe) {
          if (!sp__varint(&q, qe, &v)) {
            k = SP_EPROTO;
            break;
          }
          SP__STR(&c, v);
        }
      }
      break;
    case 7:  /* drop_frames */
    case 8:  /* keep_frames */
    case 9:  /* time_nanos */
    case 10: /* duration_nanos */
    case 12: /* period */
    case 14: /* default_sample_type */
    case 15: /* doc_url */
      if ((k = sp__known(&c, &fields, SP__K_VARINT, &f)) != 0)
        break;
      if (f.num == 9)
        out->time_nanos = (int64_t)f.v;
      else if (f.num == 10)
        out->duration_nanos = (int64_t)f.v;
      else if (f.num == 12)
        out->period = (int64_t)f.v;
      else
        scalars[f.num == 7 ? 0 : f.num == 8 ? 1 : f.num == 14 ? 2 : 3] = (int64_t)f.v;
      break;
    default:
      break; /* unknown fields are skipped */
    }
    if (k != 0) {
      rc = k > 0 ? SP_EPROTO : k;
      goto fail;
    }
  }
  if (r < 0) {
    rc = SP_EPROTO;
    goto fail;
  }
  out->period_type[0] = period_type[0];
  out->period_type[1] = period_type[1];
  if (!validate)
    return 0;

  /* The checks of sp_pprof_validate(), on the aggregates. Singular fields: the last one counts. */
  for (int i = 0; i < 4; i++)
    SP__STR(&c, scalars[i]);
  /* Only the last period_type counts (an earlier one is replaced whole): check that one. */
  SP__STR(&c, period_type[0]);
  SP__STR(&c, period_type[1]);
  /* string_table[0] is checked as a C string, as decoded: a leading NUL makes it "". */
  bool ok = out->n_strings > 0 && (out->strings[0].len == 0 || raw[out->strings[0].off] == 0);
  ok = ok && c.max_str < out->n_strings;
  ok = ok && (out->n_samples == 0 ||
              (c.min_vals == out->n_sample_types && c.max_vals == out->n_sample_types));
  if (ok) {
    bool ld = sp__dense(c.loc_ids, c.n_loc), fd = sp__dense(c.fn_ids, c.n_fn),
         md = sp__dense(c.map_ids, c.n_map);
    ok = (ld || sp__idset_sort(c.loc_ids, c.n_loc)) && (fd || sp__idset_sort(c.fn_ids, c.n_fn)) &&
         (md || sp__idset_sort(c.map_ids, c.n_map));
    if (ok && ld && fd && md)
      ok = (!c.loc_ref_any || c.loc_ref_top < c.n_loc) &&
           (c.fn_ref_min == UINT64_MAX || (c.fn_ref_min >= 1 && c.fn_ref_max <= c.n_fn)) &&
           c.map_ref_max <= c.n_map;
    else if (ok)
      ok = sp__refs_ok(out, &c, ld, fd, md);
  }
  sp_free(c.loc_ids);
  sp_free(c.loc_rng);
  sp_free(c.fn_ids);
  sp_free(c.map_ids);
  if (ok && c.want_labels && c.n_pl <= UINT32_MAX)
    sp__install_labels(arena, &c, out);
  sp_free(c.pl);
  if (ok)
    return 0;
  memset(out, 0, sizeof(*out));
  return sp__diagnose(raw, len, err, errlen);

fail:
  sp_free(c.loc_ids);
  sp_free(c.loc_rng);
  sp_free(c.fn_ids);
  sp_free(c.map_ids);
  sp_free(c.pl);
  memset(out, 0, sizeof(*out));
  return sp__fail_msg(err, errlen, rc, c.max_cost);
}

int64_t sp_pprof_wire_find(const sp_pprof_wire_t *w, const char *s, size_t len) {
  for (size_t i = 0; i < w->n_strings; i++)
    if (w->strings[i].len == len && memcmp(w->raw + w->strings[i].off, s, len) == 0)
      return (int64_t)i;
  return -1;
}

/* ---- reading samples --------------------------------------------------------------- */

/*
 * A Label's fields: the common encoding (one-byte keys of fields 1-4, wire
 * type 0) in a tight loop, anything else through sp__next. Memory-safe on
 * any bytes; on malformed ones the label ends where the bytes stop making
 * sense.
 */
static inline void sp__label_read(const uint8_t *p, const uint8_t *end, sp_pw_label_t *out) {
  int64_t l[4] = {0, 0, 0, 0};
  while (p < end) {
    uint8_t key = *p;
    if ((key & 0x87) == 0 && key >= 0x08 && key <= 0x20) { /* fields 1-4, varint */
      p++;
      uint64_t v;
      if (!sp__varint(&p, end, &v))
        break;
      l[(key >> 3) - 1] = (int64_t)v;
      continue;
    }
    sp__fld_t g;
    if (sp__next(&p, end, &g) <= 0)
      break;
    if (g.wt == 0 && g.num >= 1 && g.num <= 4)
      l[g.num - 1] = (int64_t)g.v;
  }
  *out = (sp_pw_label_t){l[0], l[1], l[2], l[3]};
}

size_t sp_pprof_wire_labels(const sp_pprof_wire_t *w, size_t i, sp_pw_label_t *out, size_t cap) {
  if (i >= w->n_samples)
    return 0;
  if (w->plabels != NULL) {
    const sp_pw_plabel_t *l = w->plabels + w->plabel_start[i];
    size_t n = w->plabel_start[i + 1] - w->plabel_start[i];
    for (size_t j = 0; j < n && j < cap; j++) {
      if (l[j].key & SP_PW_PLABEL_NUM)
        out[j] = (sp_pw_label_t){.key = l[j].key & ~SP_PW_PLABEL_NUM, .num = l[j].val};
      else
        out[j] = (sp_pw_label_t){.key = l[j].key, .str = l[j].val};
    }
    return n;
  }
  const uint8_t *p = w->raw + w->samples[i].off, *end = p + w->samples[i].len;
  size_t n = 0;
  while (p < end) {
    uint8_t key = *p;
    if (key == ((1 << 3) | 2) || key == ((2 << 3) | 2) || key == ((3 << 3) | 2)) {
      /* packed location_id / value, or a label: one-byte key, length-delimited */
      p++;
      uint64_t len;
      if (!sp__varint(&p, end, &len) || len > (uint64_t)(end - p))
        break;
      if (key == ((3 << 3) | 2)) {
        if (n < cap)
          sp__label_read(p, p + len, &out[n]);
        n++;
      }
      p += len;
      continue;
    }
    sp__fld_t f;
    if (sp__next(&p, end, &f) <= 0)
      break;
    if (f.num == 3 && f.wt == 2) {
      if (n < cap)
        sp__label_read(f.data, f.data + f.v, &out[n]);
      n++;
    }
  }
  return n;
}

size_t sp_pprof_wire_values(const sp_pprof_wire_t *w, size_t i, int64_t *out, size_t cap) {
  if (i >= w->n_samples)
    return 0;
  const uint8_t *p = w->raw + w->samples[i].off, *end = p + w->samples[i].len;
  size_t n = 0;
  /*
   * The common encoding in a tight loop: one-byte keys of length-delimited
   * fields (packed location_id, packed value, labels), the values read
   * where they are, everything else skipped by its length. Anything else
   * (unpacked values, other wire types) continues in the general loop.
   */
  while (p < end) {
    uint8_t key = *p;
    if (key != ((1 << 3) | 2) && key != ((2 << 3) | 2) && key != ((3 << 3) | 2))
      break;
    const uint8_t *q = p + 1;
    uint64_t len;
    if (!sp__len(&q, end, &len))
      break; /* malformed: the general loop stops there too */
    p = q + len;
    if (key == ((2 << 3) | 2)) {
      uint64_t v;
      while (q < p && sp__varint(&q, p, &v)) {
        if (n < cap)
          out[n] = (int64_t)v;
        n++;
      }
    }
  }
  sp__fld_t f;
  while (sp__next(&p, end, &f) > 0) {
    if (f.num != 2)
      continue;
    if (f.wt == 0) {
      if (n < cap)
        out[n] = (int64_t)f.v;
      n++;
    } else if (f.wt == 2) {
      const uint8_t *q = f.data, *qe = f.data + f.v;
      uint64_t v;
      while (q < qe && sp__varint(&q, qe, &v)) {
        if (n < cap)
          out[n] = (int64_t)v;
        n++;
      }
    }
  }
  return n;
}

/* ---- splicing ---------------------------------------------------------------------- */

/* One sp_pprof_splice_labels() call: its encoded labels in label_bytes. */
/*
 * One run of labels for a sample: its encoded bytes in label_bytes and its
 * labels in add_labels. Records made by sp_pprof_splice_labels_group point
 * at their group's bytes (shared by every sample of the group). 32-bit:
 * sp_pprof_splice_labels and sp_pprof_splice_group keep the scratch under
 * 4 GiB.
 */
struct sp_pw_add_s {
  uint32_t sample;
  uint32_t seq; /* call order, for a stable sort */
  uint32_t off, len;
  uint32_t lab_off, lab_n;
  uint32_t grp; /* 1 + the group whose labels these exactly are; 0 otherwise */
};

/* A label group: encoded once (bytes in label_bytes, labels in add_labels). */
struct sp_pw_group_s {
  uint32_t off, len;
  uint32_t lab_off, lab_n;
};

/*
 * memcpy for the short pieces a splice copies per sample (a sample's
 * payload, its new labels: tens of bytes, thousands of times per profile):
 * fixed-size overlapping moves the compiler inlines instead of a call.
 * The buffers do not overlap.
 */
typedef struct sp__b16_s {
  uint8_t b[16];
} sp__b16_t;

static inline void sp__copy(uint8_t *d, const uint8_t *s, size_t n) {
  if (n > 64) {
    memcpy(d, s, n);
  } else if (n > 32) {
    sp__b16_t a, b, c, e;
    memcpy(&a, s, 16);
    memcpy(&b, s + 16, 16);
    memcpy(&c, s + n - 32, 16);
    memcpy(&e, s + n - 16, 16);
    memcpy(d, &a, 16);
    memcpy(d + 16, &b, 16);
    memcpy(d + n - 32, &c, 16);
    memcpy(d + n - 16, &e, 16);
  } else if (n > 16) {
    sp__b16_t a, b;
    memcpy(&a, s, 16);
    memcpy(&b, s + n - 16, 16);
    memcpy(d, &a, 16);
    memcpy(d + n - 16, &b, 16);
  } else if (n >= 8) {
    uint64_t a, b;
    memcpy(&a, s, 8);
    memcpy(&b, s + n - 8, 8);
    memcpy(d, &a, 8);
    memcpy(d + n - 8, &b, 8);
  } else if (n >= 4) {
    uint32_t a, b;
    memcpy(&a, s, 4);
    memcpy(&b, s + n - 4, 4);
    memcpy(d, &a, 4);
    memcpy(d + n - 4, &b, 4);
  } else if (n > 0) {
    d[0] = s[0];
    d[n / 2] = s[n / 2];
    d[n - 1] = s[n - 1];
  }
}

/* Makes room for @p n more bytes in *buf (sp_realloc, doubling). */
static int sp__reserve(uint8_t **buf, size_t *cap, size_t len, size_t n) {
  if (len + n <= *cap)
    return 0;
  size_t c = *cap ? *cap : 256;
  while (c < len + n)
    c *= 2;
  uint8_t *b = sp_realloc(*buf, c);
  if (b == NULL)
    return SP_ENOMEM;
  *buf = b;
  *cap = c;
  return 0;
}

/* Up to this many samples, the first sp_pprof_splice_labels sizes the scratch for all. */
#define SP__FIRST_SAMPLES 16384

static size_t sp__first_samples(const sp_pprof_splice_t *sp) {
  return sp->w->n_samples < SP__FIRST_SAMPLES ? sp->w->n_samples : SP__FIRST_SAMPLES;
}

void sp_pprof_splice_init(sp_pprof_splice_t *sp, const sp_pprof_wire_t *w) {
  memset(sp, 0, sizeof(*sp));
  sp->w = w;
}

int64_t sp_pprof_splice_string(sp_pprof_splice_t *sp, const char *s, size_t len) {
  if (sp->n_new_strings == sp->cap_new_strings) {
    size_t c = sp->cap_new_strings ? sp->cap_new_strings * 2 : 128;
    sp_pw_range_t *r = sp_realloc(sp->new_strings, c * sizeof(*r));
    if (r == NULL)
      return SP_ENOMEM;
    sp->new_strings = r;
    sp->cap_new_strings = c;
  }
  /* The first string sizes the scratch for some hundred more (the join adds a few per span). */
  size_t want = sp->str_cap == 0 && len < 4096 ? 4096 : len;
  if (len > UINT32_MAX || sp__reserve(&sp->str_bytes, &sp->str_cap, sp->str_len, want) != 0)
    return SP_ENOMEM;
  if (len > 0)
    memcpy(sp->str_bytes + sp->str_len, s, len);
  sp->new_strings[sp->n_new_strings++] = (sp_pw_range_t){(uint32_t)sp->str_len, (uint32_t)len};
  sp->str_len += len;
  return (int64_t)(sp->w->n_strings + sp->n_new_strings - 1);
}

/*
 * A Label as Sample field 3, fields equal to zero omitted (as protobuf
 * writes them), in one pass: the body (4 varints, at most 44 bytes) always
 * fits a one-byte length. @p out has room for SP__LABEL_MAX bytes.
 */
#define SP__LABEL_MAX (2 + 4 * 11)

static size_t sp__label_encode(uint8_t *out, const sp_pw_label_t *l) {
  const int64_t v[4] = {l->key, l->str, l->num, l->num_unit};
  uint8_t *p = out + 2;
  for (int i = 0; i < 4; i++) {
    if (v[i] != 0) {
      *p++ = (uint8_t)(((i + 1) << 3) | 0);
      p = sp_pbwire_put_varint(p, (uint64_t)v[i]);
    }
  }
  out[0] = (3 << 3) | 2;
  out[1] = (uint8_t)(p - out - 2);
  return (size_t)(p - out);
}

/* An added label as sp_pw_plabel_t; false when it does not fit one. */
static bool sp__plabel_of(const sp_pw_label_t *l, sp_pw_plabel_t *out) {
  if (l->key < 0 || l->key >= (int64_t)SP_PW_PLABEL_NUM || l->num_unit != 0)
    return false;
  if (l->num == 0 && l->str >= 0 && l->str <= (int64_t)UINT32_MAX) {
    *out = (sp_pw_plabel_t){(uint32_t)l->key, (uint32_t)l->str};
    return true;
  }
  if (l->str == 0 && l->num > 0 && l->num <= (int64_t)UINT32_MAX) {
    *out = (sp_pw_plabel_t){(uint32_t)l->key | SP_PW_PLABEL_NUM, (uint32_t)l->num};
    return true;
  }
  return false;
}

/* Room for one more record. 0 or SP_ENOMEM. */
static inline __attribute__((always_inline)) int sp__adds_room(sp_pprof_splice_t *sp) {
  if (sp->n_adds < sp->cap_adds)
    return 0;
  if (sp->n_adds >= UINT32_MAX)
    return SP_ENOMEM;
  size_t c = sp->cap_adds ? sp->cap_adds * 2 : sp__first_samples(sp) + 1;
  struct sp_pw_add_s *a = sp_realloc(sp->adds, c * sizeof(*a));
  if (a == NULL)
    return SP_ENOMEM;
  sp->adds = a;
  sp->cap_adds = c;
  return 0;
}

/* Room for @p bytes more label bytes and @p n more labels (32-bit offsets). 0 or SP_ENOMEM. */
static inline __attribute__((always_inline)) int sp__labels_room(sp_pprof_splice_t *sp, size_t bytes, size_t n, size_t first_n) {
  if (bytes > UINT32_MAX - sp->label_len || n > UINT32_MAX - sp->n_add_labels)
    return SP_ENOMEM;
  if (sp__reserve(&sp->label_bytes, &sp->label_cap, sp->label_len, bytes) != 0)
    return SP_ENOMEM;
  if (sp->n_add_labels + n > sp->cap_add_labels) {
    size_t c = sp->cap_add_labels ? sp->cap_add_labels : first_n;
    if (c < 16)
      c = 16;
    while (c < sp->n_add_labels + n)
      c *= 2;
    sp_pw_plabel_t *a = sp_realloc(sp->add_labels, c * sizeof(*a));
    if (a == NULL)
      return SP_ENOMEM;
    sp->add_labels = a;
    sp->cap_add_labels = c;
  }
  return 0;
}

/* Encodes @p n labels at the end of the scratch; their byte count. Room was made. */
static inline __attribute__((always_inline)) size_t sp__labels_put(sp_pprof_splice_t *sp, const sp_pw_label_t *labels, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (!sp__plabel_of(&labels[i], &sp->add_labels[sp->n_add_labels + i]))
      sp->add_unfit = true;
  sp->n_add_labels += n;
  uint8_t *p = sp->label_bytes + sp->label_len;
  size_t bytes = 0;
  for (size_t i = 0; i < n; i++)
    bytes += sp__label_encode(p + bytes, &labels[i]);
  sp->label_len += bytes;
  return bytes;
}

/*
 * Appends the run of labels at @p off (@p bytes) / @p lab_off (@p lab_n) to
 * @p sample, extending the last record when the run directly follows it
 * (consecutive calls for one sample), and keeps the output's growth while
 * samples come in order. Room for a record was made.
 */
static inline __attribute__((always_inline)) void sp__add_record(sp_pprof_splice_t *sp, size_t sample, size_t off, size_t bytes,
                           size_t lab_off, size_t lab_n, uint32_t grp) {
  struct sp_pw_add_s *last = sp->n_adds ? &sp->adds[sp->n_adds - 1] : NULL;
  bool same = last != NULL && last->sample == sample;
  sp->n_rec_labels += lab_n;
  if (last != NULL && sample < last->sample)
    sp->unsorted = true; /* finish sorts and sizes */
  if (same && (size_t)last->off + last->len == off && (size_t)last->lab_off + last->lab_n == lab_off) {
    last->len += (uint32_t)bytes;
    last->lab_n += (uint32_t)lab_n;
    last->grp = 0; /* no longer exactly one group's labels */
  } else {
    sp->adds[sp->n_adds] = (struct sp_pw_add_s){(uint32_t)sample,  (uint32_t)sp->n_adds,
                                                (uint32_t)off,     (uint32_t)bytes,
                                                (uint32_t)lab_off, (uint32_t)lab_n,
                                                grp};
    sp->n_adds++;
  }
  if (sp->unsorted)
    return;
  /* The output's growth (modular, as in sp__adds_prepare). */
  const sp_pw_sample_t *s = &sp->w->samples[sample];
  if (!same) {
    sp->cur_extra = bytes;
    sp->grow +=
        1 + sp_pbwire_varint_size((size_t)s->len + bytes) + bytes - ((size_t)s->off - s->field_off);
  } else {
    size_t before = (size_t)s->len + sp->cur_extra;
    sp->cur_extra += bytes;
    sp->grow += sp_pbwire_varint_size(before + bytes) - sp_pbwire_varint_size(before) + bytes;
  }
}

int sp_pprof_splice_labels(sp_pprof_splice_t *sp, size_t sample, const sp_pw_label_t *labels,
                           size_t n) {
  if (sample >= sp->w->n_samples)
    return SP_EINVAL;
  if (n == 0)
    return 0;
  if (n > SIZE_MAX / SP__LABEL_MAX / 2)
    return SP_ENOMEM;
  /*
   * The first call sizes the scratch for every sample getting as much (the
   * join labels most samples alike), so it is not regrown sample by sample.
   */
  size_t want = n * SP__LABEL_MAX;
  if (sp->label_cap == 0 && n <= 64 && sp->w->n_samples <= SP__FIRST_SAMPLES)
    want += n * 16 * sp->w->n_samples; /* a label is some 8 to 12 bytes */
  if (sp__labels_room(sp, want, n, n * (sp__first_samples(sp) + 1)) != 0 ||
      sp__adds_room(sp) != 0)
    return SP_ENOMEM;
  size_t off = sp->label_len, lab_off = sp->n_add_labels;
  size_t bytes = sp__labels_put(sp, labels, n);
  sp__add_record(sp, sample, off, bytes, lab_off, n, 0);
  return 0;
}

int64_t sp_pprof_splice_group(sp_pprof_splice_t *sp, const sp_pw_label_t *labels, size_t n) {
  if (n > SIZE_MAX / SP__LABEL_MAX / 2)
    return SP_ENOMEM;
  if (sp->n_groups == sp->cap_groups) {
    size_t c = sp->cap_groups ? sp->cap_groups * 2 : 64;
    struct sp_pw_group_s *g = sp_realloc(sp->groups, c * sizeof(*g));
    if (g == NULL)
      return SP_ENOMEM;
    sp->groups = g;
    sp->cap_groups = c;
  }
  if (sp__labels_room(sp, n * SP__LABEL_MAX, n, 64) != 0)
    return SP_ENOMEM;
  size_t off = sp->label_len, lab_off = sp->n_add_labels;
  size_t bytes = sp__labels_put(sp, labels, n);
  sp->groups[sp->n_groups] =
      (struct sp_pw_group_s){(uint32_t)off, (uint32_t)bytes, (uint32_t)lab_off, (uint32_t)n};
  return (int64_t)sp->n_groups++;
}

int sp_pprof_splice_labels_group(sp_pprof_splice_t *sp, size_t sample, int64_t group) {
  if (sample >= sp->w->n_samples || group < 0 || (size_t)group >= sp->n_groups)
    return SP_EINVAL;
  const struct sp_pw_group_s *g = &sp->groups[group];
  if (g->lab_n == 0)
    return 0;
  if (sp__adds_room(sp) != 0)
    return SP_ENOMEM;
  sp__add_record(sp, sample, g->off, g->len, g->lab_off, g->lab_n,
                 group < UINT32_MAX ? (uint32_t)group + 1 : 0);
  return 0;
}

bool sp_pprof_splice_empty(const sp_pprof_splice_t *sp) {
  return sp->n_adds == 0 && sp->n_new_strings == 0;
}

static int sp__cmp_add(const void *a, const void *b) {
  const struct sp_pw_add_s *x = a, *y = b;
  if (x->sample != y->sample)
    return x->sample < y->sample ? -1 : 1;
  return x->seq < y->seq ? -1 : x->seq > y->seq; /* call order within a sample */
}

/*
 * Sorts the adds by sample (once) and sets sp->grow: what the touched
 * samples add to the input's length (their labels and re-framing).
 * sp_pprof_splice_labels keeps grow up to date while samples come in
 * increasing order (the join's case); otherwise it is computed here.
 */
static void sp__adds_prepare(sp_pprof_splice_t *sp) {
  if (!sp->unsorted)
    return;
  const sp_pprof_wire_t *w = sp->w;
  qsort(sp->adds, sp->n_adds, sizeof(*sp->adds), sp__cmp_add);
  size_t grow = 0, extra = 0;
  for (size_t i = 0; i < sp->n_adds;) {
    const sp_pw_sample_t *s = &w->samples[sp->adds[i].sample];
    size_t j = i;
    extra = 0;
    for (; j < sp->n_adds && sp->adds[j].sample == sp->adds[i].sample; j++)
      extra += sp->adds[j].len;
    size_t payload = (size_t)s->len + extra;
    /* modular: a padded input framing may be longer than the new one */
    grow += 1 + sp_pbwire_varint_size(payload) + extra - ((size_t)s->off - s->field_off);
    i = j;
  }
  sp->grow = grow;
  /* Labels added after this (a finish, then more) continue from the last sample's. */
  sp->cur_extra = extra;
  sp->unsorted = false;
}

static size_t sp__round8(size_t n) {
  return (n + 7) & ~(size_t)7;
}

/* The encoded length of string @p i of the output (an input string or an added one). */
static size_t sp__out_strlen(const sp_pprof_splice_t *sp, uint32_t i) {
  const sp_pprof_wire_t *w = sp->w;
  if (i < w->n_strings)
    return w->strings[i].len;
  i -= (uint32_t)w->n_strings;
  return i < sp->n_new_strings ? sp->new_strings[i].len : 0;
}

/*
 * The input's key summary extended with the added string labels, into
 * @p keys (SP_PW_MAX_KEYS entries). False when it cannot be had (the input
 * has none or no pre-decoded labels, an added label does not fit
 * sp_pw_plabel_t, or the keys overflow).
 */
static bool sp__splice_keys(const sp_pprof_splice_t *sp, sp_pw_keysum_t *keys, size_t *n_keys) {
  const sp_pprof_wire_t *w = sp->w;
  size_t n = w->n_keys;
  if (!w->has_keys || sp->add_unfit || n > SP_PW_MAX_KEYS)
    return false;
  if (n > 0)
    memcpy(keys, w->keys, n * sizeof(*keys));
  bool moved = false;
  /*
   * The labels are met in (sample, position) order, so a label equal to
   * one met before adds nothing; the join adds the same few dozen labels
   * (a span's name and trace ID) to many samples, so a small direct-mapped
   * table of the labels met skips most.
   */
  sp_pw_plabel_t seen[256];
  memset(seen, 0, sizeof(seen)); /* {0, 0} is never looked up: such labels are skipped first */
  /*
   * A group's labels after its first use (a later sample, or later in the
   * same one) add nothing either: such records are skipped whole.
   */
  uint64_t gseen[64]; /* the first 4096 groups */
  memset(gseen, 0, sizeof(gseen));
  for (size_t i = 0; i < sp->n_adds;) {
    size_t s = sp->adds[i].sample;
    /*
     * Positions count from after the sample's own labels; that count is only
     * needed for a key's first appearance (rare), so it is read then (from
     * the bytes when the index has no pre-decoded labels).
     */
    uint32_t pos = 0;
    bool based = false;
    for (; i < sp->n_adds && sp->adds[i].sample == s; i++) {
      uint32_t g = sp->adds[i].grp - 1; /* UINT32_MAX: none */
      if (g < 64 * 64) {
        if (gseen[g >> 6] >> (g & 63) & 1) {
          pos += sp->adds[i].lab_n;
          continue;
        }
        gseen[g >> 6] |= 1ull << (g & 63);
      }
      for (size_t j = 0; j < sp->adds[i].lab_n; j++, pos++) {
        const sp_pw_plabel_t *pl = &sp->add_labels[sp->adds[i].lab_off + j];
        if (pl->key == 0 || (pl->key & SP_PW_PLABEL_NUM) || pl->val == 0)
          continue;
        sp_pw_plabel_t *pv = &seen[(pl->val * 0x9e3779b1u + pl->key) >> 24];
        if (pl->key == pv->key && pl->val == pv->val)
          continue;
        *pv = *pl;
        size_t e = 0;
        for (; e < n && keys[e].key != (int64_t)pl->key; e++)
          ;
        if (!based && (e == n || s <= keys[e].first_sample)) {
          pos += (uint32_t)(w->plabels != NULL ? w->plabel_start[s + 1] - w->plabel_start[s]
                                               : sp_pprof_wire_labels(w, s, NULL, 0));
          based = true;
        }
        if (e == n) {
          if (n == SP_PW_MAX_KEYS)
            return false;
          keys[n++] = (sp_pw_keysum_t){(int64_t)pl->key, (uint32_t)s, pos, 0};
          moved = true;
        } else if (s < keys[e].first_sample ||
                   (s == keys[e].first_sample && pos < keys[e].first_pos)) {
          keys[e].first_sample = (uint32_t)s;
          keys[e].first_pos = pos;
          moved = true;
        }
        size_t vl = sp__out_strlen(sp, pl->val);
        if (vl > keys[e].max_len)
          keys[e].max_len = (uint32_t)vl;
      }
    }
  }
  /* Order of first appearance again (insertion sort: a handful of keys). */
  for (size_t i = 1; moved && i < n; i++) {
    sp_pw_keysum_t x = keys[i];
    size_t j = i;
    for (; j > 0 && (keys[j - 1].first_sample > x.first_sample ||
                     (keys[j - 1].first_sample == x.first_sample &&
                      keys[j - 1].first_pos > x.first_pos));
         j--)
      keys[j] = keys[j - 1];
    keys[j] = x;
  }
  *n_keys = n;
  return true;
}

/* Pre-decoded labels of the output: each sample's old ones, then its added ones. */
static void sp__splice_plabels(const sp_pprof_splice_t *sp, sp_pw_plabel_t *pl, uint32_t *st) {
  const sp_pprof_wire_t *w = sp->w;
  size_t n_old = w->plabel_start[w->n_samples];
  size_t k = 0, from = 0; /* pl written up to k; input samples copied before sample `from` */
  for (size_t i = 0; i < sp->n_adds;) {
    size_t s = sp->adds[i].sample;
    /* untouched samples from..s-1 and s's own labels: one copy, starts shifted by k - old */
    size_t a = w->plabel_start[from], b = w->plabel_start[s + 1];
    sp__copy((uint8_t *)(pl + k), (const uint8_t *)(w->plabels + a), (b - a) * sizeof(*pl));
    for (size_t j = from; j <= s; j++)
      st[j] = (uint32_t)(w->plabel_start[j] - a + k);
    k += b - a;
    for (; i < sp->n_adds && sp->adds[i].sample == s; i++) {
      sp__copy((uint8_t *)(pl + k), (const uint8_t *)(sp->add_labels + sp->adds[i].lab_off),
               sp->adds[i].lab_n * sizeof(*pl));
      k += sp->adds[i].lab_n;
    }
    from = s + 1;
  }
  size_t a = w->plabel_start[from];
  if (n_old > a)
    memcpy(pl + k, w->plabels + a, (n_old - a) * sizeof(*pl));
  for (size_t j = from; j <= w->n_samples; j++)
    st[j] = (uint32_t)(w->plabel_start[j] - a + k);
}

/*
 * Both finishes. The output bytes and, when @p wout is given, every array
 * of its index come from one arena allocation (one chunk: the output is
 * larger than any chunk the batch arena would make for it anyway). One pass
 * copies the input and writes the samples' new offsets; strings placed
 * after every touched sample (as protobuf encoders write string_table, after
 * the samples) all move by the final growth.
 */
static int sp__finish(sp_pprof_splice_t *sp, sp_arena_t *arena, unsigned flags,
                      const uint8_t **out, size_t *out_len, sp_pprof_wire_t *wout) {
  const sp_pprof_wire_t *w = sp->w;
  sp__adds_prepare(sp);
  size_t total = w->len + sp->grow; /* modular growth: the sum is exact */
  for (size_t i = 0; i < sp->n_new_strings; i++)
    total += 1 + sp_pbwire_varint_size(sp->new_strings[i].len) + sp->new_strings[i].len;
  /* The index: sizes of its arrays behind the bytes, each 8-aligned. */
  size_t n_str = w->n_strings + sp->n_new_strings, n_smp = w->n_samples;
  size_t n_old = w->plabels != NULL ? w->plabel_start[w->n_samples] : 0;
  sp_pw_keysum_t keys[SP_PW_MAX_KEYS];
  size_t n_keys = 0;
  bool with_keys = false, with_labels = false;
  size_t sz_bytes = sp__round8(total > 0 ? total : 1), sz_st = 0, sz_keys = 0, sz_str = 0;
  size_t sz_smp = 0, sz_pl = 0, sz_pls = 0;
  if (wout != NULL) {
    if (total > UINT32_MAX)
      return SP_ENOMEM; /* offsets are 32-bit */
    with_labels = (flags & SP_PW_LABELS) && w->plabels != NULL && !sp->add_unfit &&
                  n_old + sp->n_rec_labels <= UINT32_MAX;
    with_keys = sp__splice_keys(sp, keys, &n_keys);
    sz_st = w->n_sample_types * sizeof(*w->sample_types);
    sz_keys = with_keys ? sp__round8((n_keys ? n_keys : 1) * sizeof(sp_pw_keysum_t)) : 0;
    sz_str = n_str * sizeof(sp_pw_range_t);
    sz_smp = sp__round8(n_smp * sizeof(sp_pw_sample_t));
    if (with_labels) {
      sz_pl = (n_old + sp->n_rec_labels + 1) * sizeof(sp_pw_plabel_t);
      sz_pls = sp__round8((n_smp + 1) * sizeof(uint32_t));
    }
  }
  uint8_t *buf = sp_arena_alloc(arena, sz_bytes + sz_st + sz_keys + sz_str + sz_smp + sz_pl +
                                           sz_pls);
  if (buf == NULL)
    return SP_ENOMEM;
  uint8_t *ix = buf + sz_bytes;
  int64_t(*st)[2] = sz_st ? (int64_t(*)[2])ix : NULL;
  ix += sz_st;
  sp_pw_keysum_t *k = with_keys ? (sp_pw_keysum_t *)ix : NULL;
  ix += sz_keys;
  sp_pw_range_t *strs = sz_str ? (sp_pw_range_t *)ix : NULL;
  ix += sz_str;
  sp_pw_sample_t *smp = sz_smp ? (sp_pw_sample_t *)ix : NULL;
  ix += sz_smp;
  sp_pw_plabel_t *pl = with_labels ? (sp_pw_plabel_t *)ix : NULL;
  ix += sz_pl;
  uint32_t *pls = with_labels ? (uint32_t *)ix : NULL;

  /* One pass: untouched runs in one copy, touched samples re-framed, offsets noted. */
  uint8_t *p = buf;
  size_t at = 0;    /* input copied up to here */
  size_t next = 0;  /* samples before this one have their output offsets */
  size_t shift = 0; /* output offset - input offset past `at` (modular) */
  for (size_t i = 0; i < sp->n_adds;) {
    size_t si = sp->adds[i].sample;
    const sp_pw_sample_t *s = &w->samples[si];
    size_t j = i, extra = 0;
    for (; j < sp->n_adds && sp->adds[j].sample == si; j++)
      extra += sp->adds[j].len;
    if (smp != NULL)
      for (; next < si; next++)
        smp[next] = (sp_pw_sample_t){(uint32_t)(w->samples[next].field_off + shift),
                                     (uint32_t)(w->samples[next].off + shift),
                                     w->samples[next].len};
    sp__copy(p, w->raw + at, s->field_off - at);
    p += s->field_off - at;
    size_t fo = (size_t)(p - buf);
    size_t payload = (size_t)s->len + extra;
    *p++ = (2 << 3) | 2;
    p = sp_pbwire_put_varint(p, payload);
    size_t po = (size_t)(p - buf);
    sp__copy(p, w->raw + s->off, s->len);
    p += s->len;
    for (size_t q = i; q < j; q++) {
      sp__copy(p, sp->label_bytes + sp->adds[q].off, sp->adds[q].len);
      p += sp->adds[q].len;
    }
    if (smp != NULL)
      smp[si] = (sp_pw_sample_t){(uint32_t)fo, (uint32_t)po, (uint32_t)payload};
    next = si + 1;
    at = (size_t)s->off + s->len;
    shift = (size_t)(p - buf) - at;
    i = j;
  }
  if (smp != NULL)
    for (; next < n_smp; next++)
      smp[next] = (sp_pw_sample_t){(uint32_t)(w->samples[next].field_off + shift),
                                   (uint32_t)(w->samples[next].off + shift), w->samples[next].len};
  if (w->len > at) {
    memcpy(p, w->raw + at, w->len - at);
    p += w->len - at;
  }
  for (size_t i = 0; i < sp->n_new_strings; i++) {
    *p++ = (6 << 3) | 2;
    p = sp_pbwire_put_varint(p, sp->new_strings[i].len);
    if (sp->new_strings[i].len > 0)
      memcpy(p, sp->str_bytes + sp->new_strings[i].off, sp->new_strings[i].len);
    p += sp->new_strings[i].len;
  }
  size_t len = (size_t)(p - buf);
  assert(len == total); /* the size computed up front is what was written */
  *out = buf;
  *out_len = len;
  if (wout == NULL)
    return 0;

  sp_pprof_wire_t o;
  memset(&o, 0, sizeof(o));
  o.raw = buf;
  o.len = len;
  o.n_strings = n_str;
  o.n_samples = n_smp;
  o.n_sample_types = w->n_sample_types;
  o.period_type[0] = w->period_type[0];
  o.period_type[1] = w->period_type[1];
  o.period = w->period;
  o.time_nanos = w->time_nanos;
  o.duration_nanos = w->duration_nanos;
  if (st != NULL)
    memcpy(st, w->sample_types, sz_st);
  /* Strings: shifted by the growth of the touched samples before them. */
  if (w->n_strings > 0 && (sp->n_adds == 0 || w->strings[0].off >= at)) {
    for (size_t i = 0; i < w->n_strings; i++) /* all after the last touched sample */
      strs[i] = (sp_pw_range_t){(uint32_t)(w->strings[i].off + shift), w->strings[i].len};
  } else {
    size_t ti = 0, sh = 0;
    for (size_t i = 0; i < w->n_strings; i++) {
      uint32_t off = w->strings[i].off;
      while (ti < sp->n_adds && w->samples[sp->adds[ti].sample].off < off) {
        size_t smpi = sp->adds[ti].sample;
        while (ti < sp->n_adds && sp->adds[ti].sample == smpi)
          ti++;
        sh = (size_t)smp[smpi].off + smp[smpi].len -
             ((size_t)w->samples[smpi].off + w->samples[smpi].len);
      }
      strs[i] = (sp_pw_range_t){(uint32_t)(off + sh), w->strings[i].len};
    }
  }
  /* The new strings, at the end in order. */
  size_t end = len;
  for (size_t i = sp->n_new_strings; i > 0; i--) {
    size_t l = sp->new_strings[i - 1].len;
    end -= l;
    strs[w->n_strings + i - 1] = (sp_pw_range_t){(uint32_t)end, (uint32_t)l};
    end -= 1 + sp_pbwire_varint_size(l);
  }
  o.strings = strs;
  o.samples = smp;
  o.sample_types = st;
  if (with_labels) {
    sp__splice_plabels(sp, pl, pls);
    o.plabels = pl;
    o.plabel_start = pls;
  }
  if (with_keys) {
    if (n_keys > 0)
      memcpy(k, keys, n_keys * sizeof(*k));
    o.keys = k;
    o.n_keys = n_keys;
    o.has_keys = true;
  }
  *wout = o;
  return 0;
}

int sp_pprof_splice_finish(sp_pprof_splice_t *sp, sp_arena_t *arena, const uint8_t **out,
                           size_t *out_len) {
  return sp__finish(sp, arena, 0, out, out_len, NULL);
}

int sp_pprof_splice_finish_indexed(sp_pprof_splice_t *sp, sp_arena_t *arena, const uint8_t **out,
                                   size_t *out_len, sp_pprof_wire_t *wout) {
  return sp__finish(sp, arena, SP_PW_LABELS, out, out_len, wout);
}

int sp_pprof_splice_finish_indexed_ex(sp_pprof_splice_t *sp, sp_arena_t *arena, unsigned flags,
                                      const uint8_t **out, size_t *out_len,
                                      sp_pprof_wire_t *wout) {
  return sp__finish(sp, arena, flags, out, out_len, wout);
}

void sp_pprof_splice_free(sp_pprof_splice_t *sp) {
  if (sp == NULL)
    return;
  sp_free(sp->new_strings);
  sp_free(sp->str_bytes);
  sp_free(sp->adds);
  sp_free(sp->label_bytes);
  sp_free(sp->add_labels);
  sp_free(sp->groups);
  memset(sp, 0, sizeof(*sp));
}
