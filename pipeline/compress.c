/*
 * compress.c — limited inflating and gzip/zlib/raw deflate encoding on
 * Intel ISA-L (igzip), with zlib kept where ISA-L cannot do the job.
 *
 * Decoding (sp_inflate, sp_inflater_*) runs entirely on isal_inflate(),
 * which takes ~0.6-0.7x zlib's time on our payloads. The decoder
 * writes straight into the caller's sp_buf_t (no intermediate chunk and
 * copy) and manages its growth itself, because sp_buf_reserve() doubles
 * capacity and could allocate twice the limit. Here the capacity is capped
 * at "bytes still allowed + 1": the one spare byte is how an overflow is
 * detected without producing (or allocating for) more than the limit.
 * isal_inflate() decodes ahead into its own fixed 64 KiB window buffer when
 * our output space is short, so a bomb still costs at most limit + 1 bytes
 * of ours plus that fixed state.
 *
 * How isal_inflate() (stateful, ISA-L 2.30) reports, and what we make of it:
 *  - It returns when the input is used up, the output is full, the stream
 *    ended or the data is bad. ISAL_DECOMP_OK (0) covers the first three
 *    (it turns its internal ISAL_END_INPUT into 0): block_state ==
 *    ISAL_BLOCK_FINISH tells "ended"; otherwise avail_out == 0 means "give
 *    me room" and avail_out > 0 means "give me input". ISAL_END_INPUT and
 *    ISAL_OUT_OVERFLOW are only returned by the stateless variant.
 *  - Negative codes are corrupt data: ISAL_INVALID_BLOCK, _SYMBOL,
 *    _LOOKBACK (bad deflate), ISAL_INVALID_WRAPPER / _UNSUPPORTED_METHOD
 *    (bad header), ISAL_INCORRECT_CHECKSUM (CRC-32 + ISIZE, or Adler-32,
 *    mismatch in the trailer). All become SP_EPROTO, and the state is dead.
 *  - Truncation is not an error to it: it just waits for more input. We
 *    call it truncated (SP_EPROTO) when the stream is finished without
 *    block_state reaching ISAL_BLOCK_FINISH.
 *  - At the end of a stream it may have read up to 8 bytes past it into its
 *    bit buffer (read_in / read_in_length); those are not given back in
 *    next_in, so we recover them ourselves (trailing_bytes()): trailing
 *    garbage after a zlib or raw stream must be seen to be refused.
 *
 * gzip headers are parsed here, not by ISA-L (we run isal_inflate with
 * ISAL_GZIP_NO_HDR_VER: deflate data then the CRC-32/ISIZE trailer, which
 * it verifies). ISA-L 2.30's own header parsing inside isal_inflate keeps
 * the header flags in a local of each call, so a header whose optional
 * fields (FEXTRA, FNAME, FCOMMENT, FHCRC) are split across two feeds — one
 * byte at a time from the network — is misread (a valid zlib-made header
 * with all of them, fed in pieces of up to 256 bytes, fails with
 * ISAL_INCORRECT_CHECKSUM; whole, it passes). Our parser is a small
 * resumable state machine and also checks FHCRC, as zlib does. zlib headers
 * are two fixed bytes already checked by format detection, so they are
 * skipped likewise and the rest decoded with ISAL_ZLIB_NO_HDR_VER.
 *
 * Encoding: levels 1-3 run isal_deflate() at ISA-L levels 1-3 (level 1 is
 * ~7x faster than zlib's level 1 for ~2% more bytes on a 125 KB pprof
 * profile and on a 512-span OTLP request; tests/bench/bench_compress.c).
 * zlib stays for level 0, because ISA-L has no "store" level (its level 0
 * still compresses, and our exporters document 0 as "stored"), and for
 * levels 4-9, because ISA-L stops at 3 and whoever asks for 9 wants zlib's
 * ratio. The default (-1) is SP_COMPRESS_DEFAULT_LEVEL (see compress.h).
 * ISA-L's compressor needs a stream struct (~80 KiB) and a level buffer
 * (hash tables and a token buffer); both are one sp_malloc per call, so
 * there is no shared state and OOM paths are testable like zlib's, which
 * allocates through sp_malloc too.
 *
 * Learned tables (sp_compressor_t, level -1 through a context). ISA-L's
 * level 1 parses each payload into an intermediate form, counts its
 * symbols and builds a Huffman code for it before encoding; level 0
 * encodes straight with given tables, but its default tables are generic:
 * +14% bytes on pprof, +24% on OTLP. Tables from isal_create_hufftables() over a histogram of
 * the same kind of payload give level 1's bytes (±0.2%) at ~0.86x of its
 * time on the load generator's profiles and ~0.78x on its 512-span OTLP
 * requests (bench_compress). A histogram (isal_update_histogram, ~170 µs
 * for 167 KB) costs as much as compressing, so it is taken rarely:
 *  - Sampling: the first call samples and builds before compressing, then
 *    the gap between samples doubles (2, 4, ... up to opts.sample_every,
 *    64): ~3 µs per payload amortised. One call samples at a time; the
 *    others keep compressing with the tables they have (or at level 1 if
 *    there are none yet).
 *  - What tables are built from: a decaying average of the sampled
 *    histograms (each scaled to the same weight, the last ~8 count), so a
 *    gateway mixing services gets one code fitting the mix (2-5% more bytes
 *    than level 1 on bench_compress's mixed streams, 8-10% fewer than the
 *    default tables), with a floor under every count (1/2048 of the total)
 *    so symbols the samples lacked still get codes of ~11-13 bits.
 *  - Change: the mean output ratio of the first 8 payloads after a build is
 *    the reference; when the running average (1/8 per payload) gets 8%
 *    worse, a sample is taken after opts.min_gap payloads, and that sample
 *    weighs half the average. A sample whose histogram is far further from
 *    the average than samples usually are (Kullback-Leibler divergence,
 *    more than twice the usual + 0.05 bit/symbol) weighs half too, which
 *    catches a stream that turned more compressible.
 *  - Level 0 never emits stored blocks (random bytes come out 25% larger):
 *    an output above 7/8 of the input is redone at level 1.
 * Synchronisation: one mutex guards the published tables, their reference
 * counts, the counters and the schedule; a call takes a reference under it
 * and compresses outside it, so a table is freed only when the last call
 * using it is done and is never seen half-built. The average belongs to
 * whichever call holds the `sampling` flag (handed over under the mutex).
 * Explicit levels through a context are sp_compress() itself.
 */
#include "pipeline/compress.h"

#include "pipeline/alloc.h"
#include "pipeline/error.h"

#include <isa-l/crc.h>
#include <isa-l/igzip_lib.h>
#include <limits.h>
#include <math.h>
#include <string.h>
#include <strings.h>
#include <uv.h>
#include <zlib.h>

enum { MODE_NONE = 0, MODE_GZIP, MODE_ZLIB, MODE_RAW };
enum { PH_HDR = 0, PH_BODY, PH_END }; /* where a gzip member (or the stream) is */

/* gzip header (RFC 1952) parsing stages, in stream order. */
enum { GZ_FIXED = 0, GZ_XLEN, GZ_EXTRA, GZ_NAME, GZ_COMMENT, GZ_HCRC, GZ_DONE };
enum { GZF_HCRC = 2, GZF_EXTRA = 4, GZF_NAME = 8, GZF_COMMENT = 16, GZF_RESERVED = 0xe0 };

/* ISA-L takes 32-bit lengths: feed it at most this much at a time. */
#define ISAL_CHUNK ((size_t)1 << 30)
#define GROW_MIN ((size_t)16 * 1024)

struct sp_inflater_s {
  struct inflate_state *st; /* ISA-L state (~85 KiB), allocated on first use, kept across resets */
  sp_encoding_t enc;        /* what the caller asked for */
  int mode;                 /* what the stream turned out to be */
  int phase;                /* PH_*: header, deflate data, or ended */
  uint8_t hdr[2];           /* first bytes held back until the format is known */
  size_t nhdr;
  /* gzip header parser */
  int gz_stage;
  uint8_t gz_flags;
  uint8_t gz_buf[10];
  uint32_t gz_have, gz_need; /* bytes collected into gz_buf / still to skip */
  uint32_t gz_crc;           /* CRC-32 of the header so far (for FHCRC) */
  int err;                   /* sticky error */
  size_t limit;              /* 0 = none */
  size_t total_out;
  size_t hint; /* first growth step (one-shot decoding knows the input size) */
};

static voidpf z_alloc(voidpf opaque, uInt items, uInt size) {
  (void)opaque;
  if (size && items > SIZE_MAX / size) return Z_NULL;
  return sp_malloc((size_t)items * size);
}

static void z_free(voidpf opaque, voidpf p) {
  (void)opaque;
  sp_free(p);
}

static int ascii_ieq_trim(const char *s, const char *word) {
  while (*s == ' ' || *s == '\t')
    s++;
  size_t n = strlen(s);
  while (n && (s[n - 1] == ' ' || s[n - 1] == '\t'))
    n--;
  return n == strlen(word) && strncasecmp(s, word, n) == 0;
}

int sp_encoding_parse(const char *value, sp_encoding_t *out) {
  if (!value || ascii_ieq_trim(value, "") || ascii_ieq_trim(value, "identity")) {
    *out = SP_ENC_IDENTITY;
    return 0;
  }
  if (ascii_ieq_trim(value, "gzip") || ascii_ieq_trim(value, "x-gzip")) {
    *out = SP_ENC_GZIP;
    return 0;
  }
  if (ascii_ieq_trim(value, "deflate")) {
    *out = SP_ENC_DEFLATE;
    return 0;
  }
  return SP_ENOTSUP;
}

const char *sp_encoding_name(sp_encoding_t enc) {
  switch (enc) {
  case SP_ENC_IDENTITY: return "identity";
  case SP_ENC_GZIP: return "gzip";
  case SP_ENC_DEFLATE: return "deflate";
  case SP_ENC_RAW_DEFLATE: return "raw-deflate";
  case SP_ENC_AUTO: return "auto";
  }
  return "?";
}

bool sp_is_gzip(const uint8_t *p, size_t len) { return len >= 2 && p[0] == 0x1f && p[1] == 0x8b; }

/* A zlib header: deflate method, window <= 32 KiB, no preset dictionary, check bits. */
static bool is_zlib_header(const uint8_t *p) {
  return (p[0] & 0x0f) == 8 && (p[0] >> 4) <= 7 && (p[1] & 0x20) == 0 &&
         (((unsigned)p[0] << 8) | p[1]) % 31 == 0;
}

static void inflater_init(sp_inflater_t *s, sp_encoding_t enc, size_t limit) {
  memset(s, 0, sizeof(*s));
  s->enc = enc;
  s->limit = limit;
}

static int fail(sp_inflater_t *s, int err) {
  s->err = err;
  return err;
}

/* --- gzip header --------------------------------------------------------- */

/* Moves to the next stage after @p from whose flag is set. */
static void gz_advance(sp_inflater_t *s, int from) {
  int st = from + 1;
  for (;; st++) {
    if (st == GZ_XLEN && !(s->gz_flags & GZF_EXTRA)) continue;
    if (st == GZ_EXTRA && !(s->gz_flags & GZF_EXTRA)) continue;
    if (st == GZ_NAME && !(s->gz_flags & GZF_NAME)) continue;
    if (st == GZ_COMMENT && !(s->gz_flags & GZF_COMMENT)) continue;
    if (st == GZ_HCRC && !(s->gz_flags & GZF_HCRC)) continue;
    break;
  }
  s->gz_stage = st;
  s->gz_have = 0;
  s->gz_need = st == GZ_HCRC ? 2 : st == GZ_XLEN ? 2 : 0;
}

static void gz_start(sp_inflater_t *s) {
  s->gz_stage = GZ_FIXED;
  s->gz_flags = 0;
  s->gz_have = 0;
  s->gz_need = 10;
  s->gz_crc = 0;
}

/*
 * Consumes gzip header bytes from *@p pp / *@p pn, resuming where the last
 * call stopped. Returns 1 when the header is complete (the deflate data
 * starts at *pp), 0 when all input was consumed and more is needed, or
 * SP_EPROTO.
 */
static int gz_parse(sp_inflater_t *s, const uint8_t **pp, size_t *pn) {
  const uint8_t *p = *pp;
  size_t n = *pn;
  int rc = 0;
  while (rc == 0 && s->gz_stage != GZ_DONE && n) {
    switch (s->gz_stage) {
    case GZ_FIXED:
    case GZ_XLEN:
    case GZ_HCRC: {
      size_t k = s->gz_need - s->gz_have;
      if (k > n) k = n;
      memcpy(s->gz_buf + s->gz_have, p, k);
      s->gz_have += (uint32_t)k;
      p += k;
      n -= k;
      if (s->gz_have < s->gz_need) break;
      if (s->gz_stage == GZ_FIXED) {
        const uint8_t *b = s->gz_buf;
        if (b[0] != 0x1f || b[1] != 0x8b || b[2] != 8 || (b[3] & GZF_RESERVED)) {
          rc = SP_EPROTO;
          break;
        }
        s->gz_flags = b[3];
        if (s->gz_flags & GZF_HCRC) s->gz_crc = crc32_gzip_refl(0, s->gz_buf, 10);
        gz_advance(s, GZ_FIXED);
      } else if (s->gz_stage == GZ_XLEN) {
        if (s->gz_flags & GZF_HCRC) s->gz_crc = crc32_gzip_refl(s->gz_crc, s->gz_buf, 2);
        s->gz_stage = GZ_EXTRA;
        s->gz_need = (uint32_t)s->gz_buf[0] | (uint32_t)s->gz_buf[1] << 8;
        s->gz_have = 0;
      } else {
        uint32_t want = (uint32_t)s->gz_buf[0] | (uint32_t)s->gz_buf[1] << 8;
        if (want != (s->gz_crc & 0xffff)) {
          rc = SP_EPROTO;
          break;
        }
        gz_advance(s, GZ_HCRC);
      }
      break;
    }
    case GZ_EXTRA: {
      size_t k = s->gz_need - s->gz_have;
      if (k > n) k = n;
      if (s->gz_flags & GZF_HCRC) s->gz_crc = crc32_gzip_refl(s->gz_crc, p, k);
      p += k;
      n -= k;
      s->gz_have += (uint32_t)k;
      if (s->gz_have == s->gz_need) gz_advance(s, GZ_EXTRA);
      break;
    }
    case GZ_NAME:
    case GZ_COMMENT: {
      const uint8_t *z = memchr(p, 0, n);
      size_t k = z ? (size_t)(z - p) + 1 : n;
      if (s->gz_flags & GZF_HCRC) s->gz_crc = crc32_gzip_refl(s->gz_crc, p, k);
      p += k;
      n -= k;
      if (z) gz_advance(s, s->gz_stage);
      break;
    }
    }
  }
  *pp = p;
  *pn = n;
  if (rc) return rc;
  return s->gz_stage == GZ_DONE;
}

/* --- deflate data through isal_inflate ------------------------------------ */

/*
 * Makes room in @p out for more output: at least one byte, at most
 * @p room_max. Growth is geometric (amortised O(1) per byte) but never past
 * what the limit allows, so a bomb costs at most limit + 1 bytes.
 */
static int grow(sp_inflater_t *s, sp_buf_t *out, size_t room_max) {
  size_t want = out->cap * 2;
  if (want < GROW_MIN) want = GROW_MIN;
  if (s->hint && want < out->len + s->hint) want = out->len + s->hint;
  s->hint = 0;
  if (want - out->len > room_max) want = out->len + room_max;
  if (out->limit && want > out->limit + 1) want = out->limit + 1;
  if (want <= out->cap) return out->limit ? SP_ETOOBIG : SP_ENOMEM;
  uint8_t *d = sp_realloc(out->data, want);
  if (!d) return SP_ENOMEM;
  out->data = d;
  out->cap = want;
  return 0;
}

/* (Re)starts ISA-L on a new deflate stream of the current mode. */
static int body_start(sp_inflater_t *s) {
  if (!s->st) {
    s->st = sp_malloc(sizeof(*s->st));
    if (!s->st) return fail(s, SP_ENOMEM);
  }
  isal_inflate_init(s->st);
  s->st->crc_flag = s->mode == MODE_GZIP   ? ISAL_GZIP_NO_HDR_VER
                    : s->mode == MODE_ZLIB ? ISAL_ZLIB_NO_HDR_VER
                                           : ISAL_DEFLATE;
  s->phase = PH_BODY;
  return 0;
}

/*
 * Inflates what st->next_in holds into @p out until the input is used up
 * (0), the stream ends (0, phase PH_END) or an error (stored and returned).
 */
static int body_run(sp_inflater_t *s, sp_buf_t *out) {
  struct inflate_state *st = s->st;
  for (;;) {
    /* One byte more than allowed is room enough to notice an overflow. */
    size_t room_max = s->limit ? s->limit - s->total_out + 1 : SIZE_MAX - out->len - 1;
    if (out->limit) {
      if (out->len > out->limit) return fail(s, SP_ETOOBIG);
      if (room_max > out->limit - out->len + 1) room_max = out->limit - out->len + 1;
    }
    size_t avail = out->cap > out->len ? out->cap - out->len : 0;
    if (avail > room_max) avail = room_max;
    if (avail == 0) {
      int rc = grow(s, out, room_max);
      if (rc) return fail(s, rc);
      avail = out->cap - out->len;
      if (avail > room_max) avail = room_max;
    }
    if (avail > UINT32_MAX) avail = UINT32_MAX;
    st->next_out = out->data + out->len;
    st->avail_out = (uint32_t)avail;
    int irc = isal_inflate(st);
    size_t produced = avail - st->avail_out;
    out->len += produced;
    s->total_out += produced;
    if (s->limit && s->total_out > s->limit) return fail(s, SP_ETOOBIG);
    if (out->limit && out->len > out->limit) {
      out->len = out->limit; /* keep the buffer's invariant; the spare byte is dropped */
      return fail(s, SP_ETOOBIG);
    }
    /* Negative: corrupt data or checksum; ISAL_NEED_DICT (positive) only comes with ISAL_ZLIB. */
    if (irc != ISAL_DECOMP_OK) return fail(s, SP_EPROTO);
    if (st->block_state == ISAL_BLOCK_FINISH) {
      s->phase = PH_END;
      return 0;
    }
    if (st->avail_out != 0) return 0; /* input used up; all output so far is flushed */
  }
}

/*
 * Bytes isal_inflate() pulled into its bit buffer past the end of the
 * stream: whole bytes above the partly consumed one. Copies them to @p b.
 */
static size_t trailing_bytes(const struct inflate_state *st, uint8_t b[8]) {
  size_t k = st->read_in_length > 0 ? (size_t)st->read_in_length / 8 : 0;
  uint64_t bits = st->read_in >> (st->read_in_length % 8);
  for (size_t i = 0; i < k; i++)
    b[i] = (uint8_t)(bits >> (8 * i));
  return k;
}

/* Handles input after the end of a stream or member: another gzip member, or garbage. */
static int after_end(sp_inflater_t *s) {
  if (s->mode != MODE_GZIP) return fail(s, SP_EPROTO);
  gz_start(s);
  s->phase = PH_HDR;
  return 0;
}

/* Decodes @p n bytes of the stream proper (after format detection). */
static int run(sp_inflater_t *s, const uint8_t *p, size_t n, sp_buf_t *out) {
  while (n) {
    int rc;
    if (s->phase == PH_END && (rc = after_end(s)) != 0) return rc;
    if (s->phase == PH_HDR) {
      rc = gz_parse(s, &p, &n);
      if (rc < 0) return fail(s, rc);
      if (rc == 0) return 0;
      if ((rc = body_start(s)) != 0) return rc;
      if (!n) return 0;
    }
    size_t chunk = n > ISAL_CHUNK ? ISAL_CHUNK : n;
    s->st->next_in = (uint8_t *)p;
    s->st->avail_in = (uint32_t)chunk;
    rc = body_run(s, out);
    size_t used = chunk - s->st->avail_in;
    s->st->next_in = NULL;
    s->st->avail_in = 0;
    if (rc) return rc;
    p += used;
    n -= used;
    if (s->phase == PH_END) {
      uint8_t tail[8];
      size_t k = trailing_bytes(s->st, tail);
      /* Input ISA-L buffered but did not decode: 0 after a finished stream, checked anyway. */
      if (s->st->tmp_in_size) return fail(s, SP_EPROTO);
      if (k) {
        /* Only a gzip member can follow, and its header (10 bytes or more) continues in p. */
        if (s->mode != MODE_GZIP) return fail(s, SP_EPROTO);
        s->st->read_in = 0;
        s->st->read_in_length = 0;
        if ((rc = after_end(s)) != 0) return rc;
        const uint8_t *tp = tail;
        if (gz_parse(s, &tp, &k) != 0) return fail(s, SP_EPROTO);
      }
    } else if (used == 0 && n) {
      return fail(s, SP_EPROTO); /* no progress: cannot happen, but never spin */
    }
  }
  return 0;
}

static int copy_limited(sp_inflater_t *s, const void *in, size_t len, sp_buf_t *out) {
  if (s->limit && len > s->limit - s->total_out) return fail(s, SP_ETOOBIG);
  int rc = sp_buf_append(out, in, len);
  if (rc) return fail(s, rc);
  s->total_out += len;
  return 0;
}

/* Picks the format from the first two bytes. */
static int detect(sp_inflater_t *s) {
  if (sp_is_gzip(s->hdr, 2)) {
    s->mode = s->enc == SP_ENC_RAW_DEFLATE ? MODE_RAW : MODE_GZIP;
  } else if (s->enc == SP_ENC_GZIP) {
    return fail(s, SP_EPROTO); /* labelled gzip but is not */
  } else if (s->enc != SP_ENC_RAW_DEFLATE && is_zlib_header(s->hdr)) {
    s->mode = MODE_ZLIB;
  } else {
    s->mode = MODE_RAW;
  }
  return 0;
}

int sp_inflater_feed(sp_inflater_t *self, const void *in, size_t len, sp_buf_t *out) {
  if (self->err) return self->err;
  const uint8_t *p = in;
  if (self->enc == SP_ENC_IDENTITY) return copy_limited(self, p, len, out);
  if (self->mode == MODE_NONE) {
    while (self->nhdr < 2 && len) {
      self->hdr[self->nhdr++] = *p++;
      len--;
    }
    if (self->nhdr < 2) return 0;
    int rc = detect(self);
    if (rc) return rc;
    if (self->mode == MODE_GZIP) {
      gz_start(self);
      self->phase = PH_HDR;
      rc = run(self, self->hdr, 2, out);
    } else if (self->mode == MODE_ZLIB) {
      rc = body_start(self); /* the two header bytes are checked and consumed */
    } else {
      rc = body_start(self);
      if (!rc) rc = run(self, self->hdr, 2, out);
    }
    if (rc) return rc;
  }
  return run(self, p, len, out);
}

int sp_inflater_finish(sp_inflater_t *self, sp_buf_t *out) {
  if (self->err) return self->err;
  if (self->enc == SP_ENC_IDENTITY) return 0;
  if (self->mode == MODE_NONE) return self->nhdr == 0 ? 0 : fail(self, SP_EPROTO);
  if (self->phase == PH_BODY) {
    /* Nothing is pending (body_run drains all output), but ask once more. */
    self->st->next_in = NULL;
    self->st->avail_in = 0;
    int rc = body_run(self, out);
    if (rc) return rc;
  }
  /* A header or member cut short is truncation; ended is complete. */
  return self->phase == PH_END ? 0 : fail(self, SP_EPROTO);
}

int sp_inflater_create(sp_encoding_t enc, size_t limit, sp_inflater_t **out) {
  *out = NULL;
  if ((unsigned)enc > SP_ENC_AUTO) return SP_EINVAL;
  sp_inflater_t *s = sp_malloc(sizeof(*s));
  if (!s) return SP_ENOMEM;
  inflater_init(s, enc, limit);
  *out = s;
  return 0;
}

void sp_inflater_reset(sp_inflater_t *self, sp_encoding_t enc, size_t limit) {
  struct inflate_state *st = self->st;
  inflater_init(self, enc, limit);
  self->st = st;
}

size_t sp_inflater_total_out(const sp_inflater_t *self) { return self->total_out; }

void sp_inflater_destroy(sp_inflater_t *self) {
  if (!self) return;
  sp_free(self->st);
  sp_free(self);
}

int sp_inflate(const void *in, size_t len, sp_encoding_t enc, size_t limit, sp_buf_t *out) {
  if ((unsigned)enc > SP_ENC_AUTO || (!in && len)) return SP_EINVAL;
  sp_inflater_t s;
  inflater_init(&s, enc, limit);
  /* Most payloads inflate 3-10x; start there instead of doubling up from 16 KiB. */
  s.hint = len < SIZE_MAX / 4 ? len * 4 + 1024 : 0;
  /*
   * A gzip member ends with its size (mod 2^32): room for exactly that (plus
   * a little, so the trailer is read without growing) spares a realloc that
   * copies everything and leaves up to half the buffer unused. It is only a
   * hint: a wrong one (several members, a lie) costs a growth step. It is
   * believed up to 64:1 (payloads deflate 3-10x; past that the buffer grows
   * as before, so a lying trailer cannot make a small upload allocate much)
   * and within the limit.
   */
  const uint8_t *b = in;
  if ((enc == SP_ENC_GZIP || enc == SP_ENC_AUTO) && len >= 18 && b[0] == 0x1f && b[1] == 0x8b &&
      len < SIZE_MAX / 64 - 1024) {
    size_t isize = (size_t)b[len - 4] | (size_t)b[len - 3] << 8 | (size_t)b[len - 2] << 16 |
                   (size_t)b[len - 1] << 24;
    size_t room = isize + 64;
    if (room <= len * 64 + 1024 && (limit == 0 || room <= limit + 1)) s.hint = room;
  }
  int rc = sp_inflater_feed(&s, in, len, out);
  if (!rc) rc = sp_inflater_finish(&s, out);
  sp_free(s.st);
  return rc;
}

/* --- encoding ------------------------------------------------------------ */

/*
 * Room the encoders may write into: the buffer's spare capacity less the
 * byte sp_buf keeps for a NUL, and never past its limit (sp_buf_reserve
 * rounds the capacity up, beyond the limit).
 */
static size_t out_room(const sp_buf_t *out) {
  size_t room = out->cap > out->len ? out->cap - out->len - 1 : 0;
  if (out->limit) {
    size_t left = out->limit > out->len ? out->limit - out->len : 0;
    if (room > left) room = left;
  }
  return room;
}

/* Makes about @p want more bytes of room, no more than the limit allows; SP_ETOOBIG at the limit.
 */
static int out_grow(sp_buf_t *out, size_t want) {
  if (out->limit) {
    if (out->len >= out->limit) return SP_ETOOBIG;
    if (want > out->limit - out->len) want = out->limit - out->len;
  }
  return sp_buf_reserve(out, want);
}

/* out_grow that must add room (the encoder can go no further without): SP_ETOOBIG if it cannot. */
static int out_more(sp_buf_t *out, size_t want) {
  size_t before = out_room(out);
  int rc = out_grow(out, want);
  return rc == 0 && out_room(out) <= before ? SP_ETOOBIG : rc;
}

/* zlib: levels 0 (stored) and 4-9. */
static int zlib_compress(const uint8_t *in, size_t len, sp_encoding_t enc, int level,
                         sp_buf_t *out) {
  int wbits = enc == SP_ENC_GZIP ? 15 + 16 : enc == SP_ENC_DEFLATE ? 15 : -15;
  z_stream zs;
  memset(&zs, 0, sizeof zs);
  zs.zalloc = z_alloc;
  zs.zfree = z_free;
  int zrc = deflateInit2(&zs, level, Z_DEFLATED, wbits, 8, Z_DEFAULT_STRATEGY);
  if (zrc != Z_OK) return zrc == Z_MEM_ERROR ? SP_ENOMEM : SP_EINVAL;
  int rc = out_grow(out, (size_t)deflateBound(&zs, (uLong)len));
  if (rc) goto fail;
  const uint8_t *p = in;
  size_t left = len;
  for (;;) {
    size_t n = left > UINT_MAX ? UINT_MAX : left;
    zs.next_in = (Bytef *)p;
    zs.avail_in = (uInt)n;
    int flush = n == left ? Z_FINISH : Z_NO_FLUSH;
    do {
      if (out_room(out) == 0) {
        rc = out_more(out, out->cap / 2 + 1024);
        if (rc) goto fail;
      }
      size_t avail = out_room(out);
      if (avail > UINT_MAX) avail = UINT_MAX;
      zs.next_out = out->data + out->len;
      zs.avail_out = (uInt)avail;
      zrc = deflate(&zs, flush);
      out->len += avail - zs.avail_out;
      if (zrc == Z_STREAM_ERROR) {
        rc = SP_EINVAL;
        goto fail;
      }
    } while (flush == Z_FINISH ? zrc != Z_STREAM_END : zs.avail_out == 0);
    p += n - zs.avail_in;
    left -= n - zs.avail_in;
    if (flush == Z_FINISH) break;
  }
  deflateEnd(&zs);
  return 0;
fail:
  deflateEnd(&zs);
  return rc;
}

/*
 * The level buffer holds hash tables and a token buffer; ISA-L writes one
 * deflate block per token buffer, so a small input needs no more tokens
 * than bytes. Sized as ISA-L's *_DEFAULT for large inputs.
 */
static size_t isal_level_buf_size(int level, size_t len) {
  size_t req = level == 1 ? ISAL_DEF_LVL1_REQ : level == 2 ? ISAL_DEF_LVL2_REQ : ISAL_DEF_LVL3_REQ;
  size_t tok_max = ((size_t)ISAL_DEF_LVL1_DEFAULT - ISAL_DEF_LVL1_REQ) / ISAL_DEF_LVL1_TOKEN_SIZE;
  size_t tokens = len + 1024;
  if (tokens > tok_max) tokens = tok_max;
  return req + tokens * ISAL_DEF_LVL1_TOKEN_SIZE; /* token size is 4 at every level */
}

/*
 * ISA-L: levels 1-3, or level 0 with @p tables (learned ones: level 0 needs
 * no level buffer, its hash table is in the stream struct).
 */
static int isal_compress(const uint8_t *in, size_t len, sp_encoding_t enc, int level,
                         struct isal_hufftables *tables, sp_buf_t *out) {
  size_t zs_size = (sizeof(struct isal_zstream) + 63) & ~(size_t)63;
  size_t lvl_size = level == 0 ? 0 : isal_level_buf_size(level, len);
  uint8_t *mem = sp_malloc(zs_size + lvl_size);
  if (!mem) return SP_ENOMEM;
  struct isal_zstream *zs = (struct isal_zstream *)(void *)mem;
  isal_deflate_init(zs);
  zs->level = (uint32_t)level;
  if (lvl_size) {
    zs->level_buf = mem + zs_size;
    zs->level_buf_size = (uint32_t)lvl_size;
  }
  if (tables) zs->hufftables = tables;
  zs->gzip_flag = enc == SP_ENC_GZIP      ? IGZIP_GZIP
                  : enc == SP_ENC_DEFLATE ? IGZIP_ZLIB
                                          : IGZIP_DEFLATE;
  zs->flush = NO_FLUSH;
  /* Profiles and spans deflate 3-5x: start at half and grow by halves. */
  int rc = out_grow(out, len / 2 + 1024);
  if (rc) goto fail;
  const uint8_t *p = in;
  size_t left = len;
  for (;;) {
    size_t n = left > ISAL_CHUNK ? ISAL_CHUNK : left;
    zs->next_in = (uint8_t *)p;
    zs->avail_in = (uint32_t)n;
    zs->end_of_stream = n == left;
    bool stalled = false;
    do {
      /* Room for a block header (ISAL_DEF_MAX_HDR_SIZE) at least; more when stuck. */
      if (out_room(out) < 512 || stalled) {
        /* Stuck: room must grow. Short of room: grow what the limit allows, write that first. */
        rc = stalled ? out_more(out, out->cap / 2 + 1024) : out_grow(out, out->cap / 2 + 1024);
        if (rc == SP_ETOOBIG && !stalled && out_room(out) > 0) rc = 0;
        if (rc) goto fail;
      }
      uint32_t in_before = zs->avail_in;
      size_t avail = out_room(out);
      if (avail > UINT32_MAX) avail = UINT32_MAX;
      zs->next_out = out->data + out->len;
      zs->avail_out = (uint32_t)avail;
      int irc = isal_deflate(zs);
      out->len += avail - zs->avail_out;
      stalled = zs->avail_in == in_before && zs->avail_out == avail;
      if (irc != COMP_OK) { /* bad level, level buffer or flush: our mistake */
        rc = SP_EINVAL;
        goto fail;
      }
    } while (zs->avail_in > 0 || (zs->end_of_stream && zs->internal_state.state != ZSTATE_END));
    p += n;
    left -= n;
    if (!left) break;
  }
  rc = 0;
fail:
  sp_free(mem);
  return rc;
}

int sp_compress(const void *in, size_t len, sp_encoding_t enc, int level, sp_buf_t *out) {
  if (level < -1 || level > 9 || (!in && len)) return SP_EINVAL;
  if (enc == SP_ENC_IDENTITY) return sp_buf_append(out, in, len);
  if (enc != SP_ENC_GZIP && enc != SP_ENC_DEFLATE && enc != SP_ENC_RAW_DEFLATE) return SP_EINVAL;
  if (level == -1) level = SP_COMPRESS_DEFAULT_LEVEL;
  if (level >= 1 && level <= ISAL_DEF_MAX_LEVEL)
    return isal_compress(in, len, enc, level, NULL, out);
  return zlib_compress(in, len, enc, level, out);
}

int sp_gzip_compress(const void *in, size_t len, int level, sp_buf_t *out) {
  return sp_compress(in, len, SP_ENC_GZIP, level, out);
}

/* --- learned Huffman tables (sp_compressor_t) ------------------------------ */

#define LL_SYMS ISAL_DEF_LIT_LEN_SYMBOLS
#define D_SYMS ISAL_DEF_DIST_SYMBOLS
#define SAMPLE_MAX ((size_t)1 << 20) /* a sample's histogram reads at most this much */
#define SAMPLE_MIN 256               /* smaller payloads are not worth a sample */
#define HIST_SCALE 1048576.0         /* each sample weighs as this many lit/len symbols */
#define ACC_WINDOW 8                 /* the average weighs the last ~8 samples */
#define FLOOR_DIV 2048.0             /* no symbol counts less than 1/2048 of its alphabet's total */
#define REF_N 8                      /* outputs averaged into the reference ratio after a build */
#define RATIO_MIN_LEN 1024           /* smaller outputs say little about the fit */
#define KL_SLACK 0.05                /* bits per symbol: divergence below this is never a change */

typedef struct sp__tables_s {
  unsigned refs; /* the context's own (while current) + one per call using them; under mu */
  struct isal_hufftables h;
} sp__tables_t;

struct sp_compressor_s {
  uv_mutex_t mu;
  sp_compressor_opts_t opts;
  /* Under mu. */
  sp__tables_t *cur;    /* published tables; NULL until the first build */
  bool sampling;        /* a call is building tables (only one at a time) */
  bool urgent;          /* the ratio degraded: the next sample weighs half the average */
  uint64_t n;           /* level -1 calls so far (numbers them) */
  uint64_t next_sample; /* the call numbered this (or the next free one) samples */
  uint64_t last_sample;
  uint64_t period;           /* distance to the next sample: doubles up to opts.sample_every */
  double ref_sum, ref, ewma; /* the ratio monitor over outputs made with cur */
  unsigned ref_n;
  sp_compressor_stats_t stats;
  /* Only the sampling call touches these (sampling == true hands them over under mu). */
  double acc_ll[LL_SYMS], acc_d[D_SYMS]; /* decaying average of sampled histograms */
  unsigned n_acc;
  double kl_avg; /* how far samples usually are from the average (bits per symbol) */
  unsigned n_kl;
};

int sp_compressor_create(const sp_compressor_opts_t *opts, sp_compressor_t **out) {
  *out = NULL;
  sp_compressor_t *self = sp_calloc(1, sizeof(*self));
  if (!self) return SP_ENOMEM;
  if (uv_mutex_init(&self->mu) != 0) {
    sp_free(self);
    return SP_ENOMEM;
  }
  if (opts) self->opts = *opts;
  if (self->opts.sample_every == 0) self->opts.sample_every = 64;
  if (self->opts.min_gap == 0) self->opts.min_gap = 16;
  if (self->opts.min_gap > self->opts.sample_every) self->opts.min_gap = self->opts.sample_every;
  if (!(self->opts.degrade > 0)) self->opts.degrade = 0.08;
  self->next_sample = 1;
  self->period = 1;
  *out = self;
  return 0;
}

void sp_compressor_destroy(sp_compressor_t *self) {
  if (!self) return;
  sp_free(self->cur);
  uv_mutex_destroy(&self->mu);
  sp_free(self);
}

void sp_compressor_get_stats(sp_compressor_t *self, sp_compressor_stats_t *out) {
  uv_mutex_lock(&self->mu);
  *out = self->stats;
  uv_mutex_unlock(&self->mu);
}

/* Drops one reference (under mu); returns the tables to free after unlocking, or NULL. */
static sp__tables_t *tables_unref(sp__tables_t *t) {
  if (t && --t->refs == 0) return t;
  return NULL;
}

/*
 * Sampling call (self->sampling is ours): adds @p in's histogram to the
 * average and builds tables from it. NULL when out of memory (or should
 * ISA-L refuse the code), which only postpones learning.
 */
static sp__tables_t *learn(sp_compressor_t *self, const uint8_t *in, size_t len, bool urgent) {
  struct isal_huff_histogram *h = sp_calloc(1, sizeof(*h));
  sp__tables_t *t = sp_malloc(sizeof(*t));
  if (!h || !t) goto fail;
  isal_update_histogram((uint8_t *)in, (int)(len > SAMPLE_MAX ? SAMPLE_MAX : len), h);
  double tot = 0;
  for (int i = 0; i < LL_SYMS; i++)
    tot += (double)h->lit_len_histogram[i];
  if (tot == 0) goto fail;
  /*
   * How many more bits per lit/len symbol this payload would cost with codes
   * made for the average than with its own (Kullback-Leibler divergence,
   * floors included). Far more than usual means the stream changed shape
   * (a stationary mix of shapes keeps it about the same): the sample then
   * weighs half the average, as it does when the ratio monitor asked for it.
   */
  double kl = 0;
  if (self->n_acc > 0) {
    double qt = 0;
    for (int i = 0; i < LL_SYMS; i++)
      qt += self->acc_ll[i];
    double fq = qt / FLOOR_DIV, qn = 0;
    for (int i = 0; i < LL_SYMS; i++)
      qn += self->acc_ll[i] > fq ? self->acc_ll[i] : fq;
    for (int i = 0; i < LL_SYMS; i++) {
      if (!h->lit_len_histogram[i]) continue;
      double p = (double)h->lit_len_histogram[i] / tot;
      double q = (self->acc_ll[i] > fq ? self->acc_ll[i] : fq) / qn;
      kl += p * log2(p / q);
    }
  }
  /* Each sample weighs the same whatever its size; the first ACC_WINDOW are a plain mean. */
  double scale = HIST_SCALE / tot;
  double w = self->n_acc < ACC_WINDOW ? 1.0 / (self->n_acc + 1) : 1.0 / ACC_WINDOW;
  bool changed = self->n_kl >= 2 && kl > 2 * self->kl_avg + KL_SLACK;
  if ((urgent || changed) && w < 0.5) w = 0.5;
  if (self->n_acc > 0 && !changed && !urgent) { /* what is usual, without the changes */
    self->kl_avg = self->n_kl == 0 ? kl : self->kl_avg + (kl - self->kl_avg) / 4;
    self->n_kl++;
  }
  double sll = 0, sd = 0;
  for (int i = 0; i < LL_SYMS; i++) {
    self->acc_ll[i] += ((double)h->lit_len_histogram[i] * scale - self->acc_ll[i]) * w;
    sll += self->acc_ll[i];
  }
  for (int i = 0; i < D_SYMS; i++) {
    self->acc_d[i] += ((double)h->dist_histogram[i] * scale - self->acc_d[i]) * w;
    sd += self->acc_d[i];
  }
  self->n_acc++;
  /*
   * A floor under every count keeps the codes of symbols the samples never
   * had at ~11-13 bits, so a payload unlike them costs less (and the
   * learned payloads ~0.02% more).
   */
  double fll = sll / FLOOR_DIV, fd = sd / FLOOR_DIV;
  for (int i = 0; i < LL_SYMS; i++)
    h->lit_len_histogram[i] = (uint64_t)((self->acc_ll[i] > fll ? self->acc_ll[i] : fll) + 0.5);
  for (int i = 0; i < D_SYMS; i++)
    h->dist_histogram[i] = (uint64_t)((self->acc_d[i] > fd ? self->acc_d[i] : fd) + 0.5);
  if (isal_create_hufftables(&t->h, h) != 0) goto fail;
  sp_free(h);
  return t;
fail:
  sp_free(h);
  sp_free(t);
  return NULL;
}

/* Under mu: one more output of @p out_len bytes for @p len made with the current tables. */
static void monitor(sp_compressor_t *self, size_t len, size_t out_len) {
  double r = (double)out_len / (double)len;
  if (self->ref_n < REF_N) {
    self->ref_sum += r;
    if (++self->ref_n == REF_N) self->ewma = self->ref = self->ref_sum / REF_N;
    return;
  }
  self->ewma += (r - self->ewma) / 8;
  if (self->ewma <= self->ref * (1 + self->opts.degrade)) return;
  /* Worse than just after the build: sample soon, and learn quickly again after. */
  uint64_t at = self->last_sample + self->opts.min_gap;
  if (at <= self->n) at = self->n + 1;
  if (at < self->next_sample) self->next_sample = at;
  self->period = self->opts.min_gap;
  self->urgent = true;
}

int sp_compressor_compress(sp_compressor_t *self, const void *in, size_t len, sp_encoding_t enc,
                           int level, sp_buf_t *out) {
  if (self == NULL) return sp_compress(in, len, enc, level, out);
  if (level != -1 || enc == SP_ENC_IDENTITY || (!in && len) ||
      (enc != SP_ENC_GZIP && enc != SP_ENC_DEFLATE && enc != SP_ENC_RAW_DEFLATE)) {
    uv_mutex_lock(&self->mu);
    self->stats.explicit_level++;
    uv_mutex_unlock(&self->mu);
    return sp_compress(in, len, enc, level, out);
  }
  size_t base = out->len;
  sp__tables_t *dead[2] = {NULL, NULL};
  uv_mutex_lock(&self->mu);
  uint64_t n = ++self->n;
  sp__tables_t *t = self->cur;
  if (t) t->refs++;
  bool sample = !self->sampling && n >= self->next_sample && len >= SAMPLE_MIN;
  bool urgent = self->urgent;
  if (sample) self->sampling = true;
  uv_mutex_unlock(&self->mu);

  if (sample) {
    /* Outside the lock: other calls go on with the tables they have. */
    sp__tables_t *nt = learn(self, in, len, urgent);
    uv_mutex_lock(&self->mu);
    self->sampling = false;
    self->urgent = false;
    self->last_sample = n;
    self->stats.samples++;
    if (nt) {
      nt->refs = 2; /* the context's and this call's */
      dead[0] = tables_unref(t);
      dead[1] = tables_unref(self->cur);
      self->cur = t = nt;
      self->stats.builds++;
      self->ref_n = 0;
      self->ref_sum = 0;
    }
    self->next_sample = n + self->period;
    self->period =
        self->period * 2 < self->opts.sample_every ? self->period * 2 : self->opts.sample_every;
    uv_mutex_unlock(&self->mu);
    sp_free(dead[0]);
    sp_free(dead[1]);
    dead[0] = dead[1] = NULL;
  }

  int rc;
  bool fallback = false;
  if (!t) {
    rc = isal_compress(in, len, enc, 1, NULL, out);
  } else {
    rc = isal_compress(in, len, enc, 0, &t->h, out);
    /*
     * Level 0 never falls back to stored blocks: data the tables do not
     * fit (random bytes: +25%) goes again through level 1, which does.
     */
    if ((rc == 0 && len >= SAMPLE_MIN && out->len - base > len - len / 8) ||
        (rc == SP_ETOOBIG && out->limit)) { /* level 1 may still fit: stored blocks */
      out->len = base;
      fallback = true;
      rc = isal_compress(in, len, enc, 1, NULL, out);
    }
  }

  uv_mutex_lock(&self->mu);
  if (!t) {
    self->stats.level1++;
  } else {
    self->stats.learned++;
    if (fallback) self->stats.fallbacks++;
    if (rc == 0 && !fallback && !sample && t == self->cur && len >= RATIO_MIN_LEN)
      monitor(self, len, out->len - base);
  }
  dead[0] = tables_unref(t);
  uv_mutex_unlock(&self->mu);
  sp_free(dead[0]);
  return rc;
}

int sp_compressor_gzip(sp_compressor_t *self, const void *in, size_t len, int level,
                       sp_buf_t *out) {
  return sp_compressor_compress(self, in, len, SP_ENC_GZIP, level, out);
}
