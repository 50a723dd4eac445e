/*
 * compress.c — limited inflating and gzip encoding on zlib (see compress.h).
 *
 * The decoder writes straight into the caller's sp_buf_t (no intermediate
 * chunk and copy) and manages its growth itself, because sp_buf_reserve()
 * doubles capacity and could allocate twice the limit. Here the capacity is
 * capped at "bytes still allowed + 1": the one spare byte is how an overflow
 * is detected without producing (or allocating for) more than the limit.
 *
 * zlib allocates through sp_malloc so out-of-memory paths are testable.
 */
#include "pipeline/compress.h"

#include "pipeline/alloc.h"
#include "pipeline/error.h"

#include <limits.h>
#include <string.h>
#include <strings.h>
#include <zlib.h>

enum { MODE_NONE = 0, MODE_GZIP, MODE_ZLIB, MODE_RAW, MODE_COPY };

struct sp_inflater_s {
  z_stream zs;
  bool zinit;        /* inflateInit2 done (zlib memory allocated) */
  sp_encoding_t enc; /* what the caller asked for */
  int mode;          /* what the stream turned out to be */
  uint8_t hdr[2];    /* first bytes held back until the format is known */
  size_t nhdr;
  bool ended;   /* the current deflate stream / gzip member is complete */
  int err;      /* sticky error */
  size_t limit; /* 0 = none */
  size_t total_out;
  size_t hint; /* first growth step (one-shot decoding knows the input size) */
};

#define GROW_MIN ((size_t)16 * 1024)

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
  s->zs.zalloc = z_alloc;
  s->zs.zfree = z_free;
  s->enc = enc;
  s->limit = limit;
}

static void inflater_cleanup(sp_inflater_t *s) {
  if (s->zinit) inflateEnd(&s->zs);
  s->zinit = false;
}

static int fail(sp_inflater_t *s, int err) {
  s->err = err;
  return err;
}

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

/* Inflates whatever zs.next_in holds into @p out. */
static int run(sp_inflater_t *s, sp_buf_t *out) {
  for (;;) {
    if (s->ended) {
      if (s->zs.avail_in == 0) return 0;
      /* More input after the end: only gzip allows another member. */
      if (s->mode != MODE_GZIP) return fail(s, SP_EPROTO);
      if (inflateReset(&s->zs) != Z_OK) return fail(s, SP_EPROTO);
      s->ended = false;
    }
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
    if (avail > UINT_MAX) avail = UINT_MAX;
    s->zs.next_out = out->data + out->len;
    s->zs.avail_out = (uInt)avail;
    int zrc = inflate(&s->zs, Z_NO_FLUSH);
    size_t produced = avail - s->zs.avail_out;
    out->len += produced;
    s->total_out += produced;
    if (s->limit && s->total_out > s->limit) return fail(s, SP_ETOOBIG);
    if (out->limit && out->len > out->limit) {
      out->len = out->limit; /* keep the buffer's invariant; the spare byte is dropped */
      return fail(s, SP_ETOOBIG);
    }
    switch (zrc) {
    case Z_STREAM_END: s->ended = true; break;
    case Z_OK:
    case Z_BUF_ERROR:
      /* Input used up and output not full: everything is flushed. */
      if (s->zs.avail_in == 0 && s->zs.avail_out != 0) return 0;
      if (zrc == Z_BUF_ERROR && s->zs.avail_out != 0) return fail(s, SP_EPROTO);
      break;
    case Z_MEM_ERROR: return fail(s, SP_ENOMEM);
    default: return fail(s, SP_EPROTO); /* Z_DATA_ERROR, Z_NEED_DICT, Z_STREAM_ERROR */
    }
  }
}

static int copy_limited(sp_inflater_t *s, const void *in, size_t len, sp_buf_t *out) {
  if (s->limit && len > s->limit - s->total_out) return fail(s, SP_ETOOBIG);
  int rc = sp_buf_append(out, in, len);
  if (rc) return fail(s, rc);
  s->total_out += len;
  return 0;
}

/* Picks the format from the first two bytes and (re)initialises zlib for it. */
static int start_stream(sp_inflater_t *s) {
  int mode;
  if (sp_is_gzip(s->hdr, 2)) {
    mode = s->enc == SP_ENC_RAW_DEFLATE ? MODE_RAW : MODE_GZIP;
  } else if (s->enc == SP_ENC_GZIP) {
    return fail(s, SP_EPROTO); /* labelled gzip but is not */
  } else if (s->enc != SP_ENC_RAW_DEFLATE && is_zlib_header(s->hdr)) {
    mode = MODE_ZLIB;
  } else {
    mode = MODE_RAW;
  }
  int wbits = mode == MODE_GZIP ? 15 + 16 : mode == MODE_ZLIB ? 15 : -15;
  int zrc;
  if (!s->zinit) {
    zrc = inflateInit2(&s->zs, wbits);
    if (zrc == Z_OK) s->zinit = true;
  } else {
    zrc = inflateReset2(&s->zs, wbits);
  }
  if (zrc == Z_MEM_ERROR) return fail(s, SP_ENOMEM);
  if (zrc != Z_OK) return fail(s, SP_EPROTO);
  s->mode = mode;
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
    int rc = start_stream(self);
    if (rc) return rc;
    self->zs.next_in = self->hdr;
    self->zs.avail_in = 2;
    rc = run(self, out);
    if (rc) return rc;
  }
  while (len) {
    size_t n = len > UINT_MAX ? UINT_MAX : len;
    self->zs.next_in = (Bytef *)p;
    self->zs.avail_in = (uInt)n;
    int rc = run(self, out);
    self->zs.next_in = Z_NULL;
    self->zs.avail_in = 0;
    if (rc) return rc;
    p += n;
    len -= n;
  }
  return 0;
}

int sp_inflater_finish(sp_inflater_t *self, sp_buf_t *out) {
  if (self->err) return self->err;
  if (self->enc == SP_ENC_IDENTITY) return 0;
  if (self->mode == MODE_NONE) return self->nhdr == 0 ? 0 : fail(self, SP_EPROTO);
  self->zs.avail_in = 0;
  int rc = run(self, out);
  if (rc) return rc;
  return self->ended ? 0 : fail(self, SP_EPROTO);
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
  self->enc = enc;
  self->limit = limit;
  self->mode = MODE_NONE;
  self->nhdr = 0;
  self->ended = false;
  self->err = 0;
  self->total_out = 0;
  self->hint = 0;
  self->zs.next_in = Z_NULL;
  self->zs.avail_in = 0;
}

size_t sp_inflater_total_out(const sp_inflater_t *self) { return self->total_out; }

void sp_inflater_destroy(sp_inflater_t *self) {
  if (!self) return;
  inflater_cleanup(self);
  sp_free(self);
}

int sp_inflate(const void *in, size_t len, sp_encoding_t enc, size_t limit, sp_buf_t *out) {
  if ((unsigned)enc > SP_ENC_AUTO || (!in && len)) return SP_EINVAL;
  sp_inflater_t s;
  inflater_init(&s, enc, limit);
  /* Most payloads inflate 3-10x; start there instead of doubling up from 16 KiB. */
  s.hint = len < SIZE_MAX / 4 ? len * 4 + 1024 : 0;
  int rc = sp_inflater_feed(&s, in, len, out);
  if (!rc) rc = sp_inflater_finish(&s, out);
  inflater_cleanup(&s);
  return rc;
}

/* --- encoding ------------------------------------------------------------ */

int sp_compress(const void *in, size_t len, sp_encoding_t enc, int level, sp_buf_t *out) {
  if (level < -1 || level > 9 || (!in && len)) return SP_EINVAL;
  if (enc == SP_ENC_IDENTITY) return sp_buf_append(out, in, len);
  int wbits;
  switch (enc) {
  case SP_ENC_GZIP: wbits = 15 + 16; break;
  case SP_ENC_DEFLATE: wbits = 15; break;
  case SP_ENC_RAW_DEFLATE: wbits = -15; break;
  default: return SP_EINVAL;
  }
  z_stream zs;
  memset(&zs, 0, sizeof zs);
  zs.zalloc = z_alloc;
  zs.zfree = z_free;
  int zrc = deflateInit2(&zs, level, Z_DEFLATED, wbits, 8, Z_DEFAULT_STRATEGY);
  if (zrc != Z_OK) return zrc == Z_MEM_ERROR ? SP_ENOMEM : SP_EINVAL;
  int rc = sp_buf_reserve(out, (size_t)deflateBound(&zs, (uLong)len));
  if (rc) goto fail;
  const uint8_t *p = in;
  size_t left = len;
  for (;;) {
    size_t n = left > UINT_MAX ? UINT_MAX : left;
    zs.next_in = (Bytef *)p;
    zs.avail_in = (uInt)n;
    int flush = n == left ? Z_FINISH : Z_NO_FLUSH;
    do {
      if (out->cap - out->len <= 1) {
        rc = sp_buf_reserve(out, out->cap / 2 + 1024);
        if (rc) goto fail;
      }
      size_t avail = out->cap - out->len - 1;
      if (avail > UINT_MAX) avail = UINT_MAX;
      zs.next_out = out->data + out->len;
      zs.avail_out = (uInt)avail;
      zrc = deflate(&zs, flush);
      out->len += avail - zs.avail_out;
      if (zrc == Z_STREAM_ERROR) {
        rc = SP_EINVAL;
        goto fail;
      }
    } while (zs.avail_out == 0 || (flush == Z_FINISH && zrc != Z_STREAM_END));
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

int sp_gzip_compress(const void *in, size_t len, int level, sp_buf_t *out) {
  return sp_compress(in, len, SP_ENC_GZIP, level, out);
}
