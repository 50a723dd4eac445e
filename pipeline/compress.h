/*
 * compress.h — gzip / deflate decoding with a size limit, and gzip encoding.
 *
 * Receivers accept `Content-Encoding: gzip|deflate` and exporters send gzip.
 * Decoding is where a hostile peer can make us allocate: a few kilobytes of
 * deflate expand to gigabytes. So every decoder here takes an output limit
 * that is enforced *while* inflating: the output buffer never grows past
 * `limit + 1` bytes (plus the buffer's geometric growth step, itself capped
 * at that size), and the call fails with SP_ETOOBIG as soon as one byte more
 * than the limit would be produced.
 *
 * "deflate" in HTTP means the zlib format (RFC 1950), but many clients send
 * a raw RFC 1951 stream under that name; both are accepted when decoding.
 * SP_ENC_AUTO recognises gzip (magic 1f 8b), zlib (a valid CMF/FLG pair) and
 * otherwise assumes raw deflate. Concatenated gzip members are decoded as one
 * stream, as gzip(1) does.
 *
 * Decoding runs on Intel ISA-L (igzip); encoding too at levels 1-3, while
 * level 0 (stored) and levels 4-9 use zlib. Output of either is plain
 * RFC 1950/1951/1952 that any inflater reads.
 *
 * The streaming inflater lets the HTTP server decode a body while it
 * arrives, so neither the wire bytes nor the inflated bytes are ever held
 * beyond the limit. All functions are thread-safe on distinct objects (no
 * global state), so they may run on the libuv thread pool.
 */
#ifndef SP_COMPRESS_H
#define SP_COMPRESS_H

#include "pipeline/buf.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum {
  SP_ENC_IDENTITY = 0, /* no encoding */
  SP_ENC_GZIP,         /* RFC 1952, possibly several members */
  SP_ENC_DEFLATE,      /* HTTP "deflate": zlib (RFC 1950); decoding also accepts raw RFC 1951 */
  SP_ENC_RAW_DEFLATE,  /* bare RFC 1951 stream */
  SP_ENC_AUTO,         /* decoding only: detect gzip, zlib or raw deflate from the first bytes */
} sp_encoding_t;

/**
 * Parses a Content-Encoding value: "gzip", "x-gzip", "deflate", "identity",
 * or empty / NULL (identity). Case-insensitive, surrounding blanks ignored.
 * Returns 0 and sets @p out, or SP_ENOTSUP for anything else (including
 * lists such as "gzip, br").
 */
int sp_encoding_parse(const char *value, sp_encoding_t *out);

/** The HTTP token for @p enc ("gzip", "deflate", "identity"; "auto"/"raw-deflate"). */
const char *sp_encoding_name(sp_encoding_t enc);

/** True when @p p starts with the gzip magic bytes (1f 8b); needs @p len >= 2. */
bool sp_is_gzip(const uint8_t *p, size_t len);

/**
 * Decodes @p len bytes of @p in, encoded as @p enc, appending the result to
 * @p out. At most @p limit decoded bytes are accepted (0 = no limit; the
 * buffer's own limit, when set, also applies). The caller owns @p out and
 * frees it with sp_buf_free() on success and failure alike; on failure its
 * contents past the original length are unspecified.
 * Returns 0, SP_ETOOBIG (limit hit: decoding stopped there), SP_EPROTO
 * (corrupt, truncated or trailing garbage), SP_EINVAL or SP_ENOMEM.
 */
int sp_inflate(const void *in, size_t len, sp_encoding_t enc, size_t limit, sp_buf_t *out);

/**
 * The level that -1 ("default") means: 1, ISA-L's fastest level with
 * Huffman coding fitted to the data, for stateless calls (the exporters'
 * default -1 goes through an sp_compressor_t, below). On
 * telemetry (pprof, OTLP protobuf) it is ~7x faster than zlib's level 1 for
 * ~2% more bytes, and compression is an exporter's main CPU cost; zlib's
 * former default 6 saves 4-16% of the bytes for ~15x the CPU. ISA-L's
 * level 2 costs ~10% more than 1 for ~1% fewer bytes, level 3 2-5x more.
 * Ask for 4..9 to get zlib.
 */
#define SP_COMPRESS_DEFAULT_LEVEL 1

/**
 * Compresses @p len bytes as one gzip member at @p level, appending to
 * @p out (owned by the caller). Levels: -1 = SP_COMPRESS_DEFAULT_LEVEL;
 * 0 = stored (no compression, zlib); 1..3 = ISA-L levels 1..3 (fast);
 * 4..9 = zlib levels 4..9 (smaller, slower); sp_compressor_compress() gives
 * -1 another meaning (tables learned from the stream). Thread-safe: the compressor
 * state (about 100-400 KiB at ISA-L levels) is allocated per call.
 * Returns 0, SP_EINVAL (bad level) or SP_ENOMEM / SP_ETOOBIG (buffer limit).
 */
int sp_gzip_compress(const void *in, size_t len, int level, sp_buf_t *out);

/**
 * Like sp_gzip_compress() for any encoding: SP_ENC_GZIP, SP_ENC_DEFLATE
 * (zlib), SP_ENC_RAW_DEFLATE or SP_ENC_IDENTITY (a copy). SP_EINVAL for
 * SP_ENC_AUTO.
 */
int sp_compress(const void *in, size_t len, sp_encoding_t enc, int level, sp_buf_t *out);

/*
 * A compressor context: level -1 ("default") learned from the stream.
 *
 * An exporter that gzips many payloads of the same shape (the pyroscope
 * exporter: one pprof per profile) can do better than ISA-L level 1's
 * per-payload Huffman coding: ISA-L level 0 with Huffman tables built from
 * payloads seen before gives the same bytes (±0.2%) for ~0.86x of the time
 * on the load generator's profiles, ~0.78x on its OTLP requests. The
 * context samples a payload now and then (its histogram costs about as much
 * as compressing it), keeps a decaying average of the sampled histograms,
 * builds tables from it and publishes them for every later call; see
 * compress.c for when it samples. Tables give every literal, length and
 * distance a code, so they encode any payload correctly; a payload unlike
 * the learned ones only compresses worse, and one that would come out
 * nearly incompressible is compressed again at level 1 (stored blocks).
 */
typedef struct sp_compressor_s sp_compressor_t;

/** Tuning for sp_compressor_create(); zero fields take the defaults. */
typedef struct sp_compressor_opts_s {
  /** Payloads between two samples once the tables have settled (default 64; 1 = every one). */
  unsigned sample_every;
  /** Fewest payloads between two samples when the ratio degrades (default 16). */
  unsigned min_gap;
  /**
   * How much worse (relative) the recent output ratio may get than the one
   * measured just after the tables were built before a sample is taken early
   * (default 0.08, i.e. 8%).
   */
  double degrade;
} sp_compressor_opts_t;

/** What a context did, for tests, benchmarks and metrics. */
typedef struct sp_compressor_stats_s {
  uint64_t learned;        /* level -1 payloads compressed at ISA-L level 0 with learned tables */
  uint64_t level1;         /* level -1 payloads compressed at ISA-L level 1 (no tables yet) */
  uint64_t fallbacks;      /* learned output nearly incompressible: compressed again at level 1 */
  uint64_t samples;        /* payloads whose histogram was taken */
  uint64_t builds;         /* tables published */
  uint64_t explicit_level; /* calls with an explicit level (compressed as sp_compress does) */
} sp_compressor_stats_t;

/**
 * Creates a context with @p opts (NULL: defaults). Returns 0 and sets
 * @p out, or SP_ENOMEM. Free with sp_compressor_destroy() once no call is
 * running any more.
 */
int sp_compressor_create(const sp_compressor_opts_t *opts, sp_compressor_t **out);

/**
 * Like sp_compress(), but level -1 compresses with learned tables (see
 * above) instead of SP_COMPRESS_DEFAULT_LEVEL; explicit levels 0..9 give
 * exactly sp_compress()'s output. Thread-safe: any number of threads may
 * call it at once on one context (the libuv pool); tables are swapped under
 * a lock and reference counted, so a call never sees a half-built table.
 * @p out is owned by the caller. Returns what sp_compress() returns. Out of
 * memory while sampling is not an error: the payload is compressed with the
 * tables it had. A NULL context is sp_compress() itself (callers that make
 * contexts only for level -1 call this either way).
 */
int sp_compressor_compress(sp_compressor_t *self, const void *in, size_t len, sp_encoding_t enc,
                           int level, sp_buf_t *out);

/** sp_compressor_compress() as gzip. */
int sp_compressor_gzip(sp_compressor_t *self, const void *in, size_t len, int level, sp_buf_t *out);

/** Copies the counters of @p self into @p out (a consistent snapshot). Thread-safe. */
void sp_compressor_get_stats(sp_compressor_t *self, sp_compressor_stats_t *out);

/** Frees the context and its tables; accepts NULL. No call may be running. */
void sp_compressor_destroy(sp_compressor_t *self);

/*
 * Streaming decoder: create once, then for each body reset → feed* → finish.
 * The ISA-L inflate state (about 85 KiB) is allocated on the first feed and
 * kept across resets, so a keep-alive connection pays for it once. Input
 * may be fed in pieces of any size, down to one byte.
 */
typedef struct sp_inflater_s sp_inflater_t;

/**
 * Creates an inflater for @p enc with a limit of @p limit decoded bytes
 * (0 = none). Returns 0 and sets @p out, SP_EINVAL or SP_ENOMEM. Free with
 * sp_inflater_destroy().
 */
int sp_inflater_create(sp_encoding_t enc, size_t limit, sp_inflater_t **out);

/** Prepares for a new stream with encoding @p enc and @p limit; keeps the inflate state. */
void sp_inflater_reset(sp_inflater_t *self, sp_encoding_t enc, size_t limit);

/**
 * Decodes the next @p len bytes of the stream, appending output to @p out.
 * Returns 0, SP_ETOOBIG, SP_EPROTO or SP_ENOMEM; after an error the
 * inflater stays failed (every later call returns the same code) until reset.
 */
int sp_inflater_feed(sp_inflater_t *self, const void *in, size_t len, sp_buf_t *out);

/**
 * Ends the stream: flushes remaining output to @p out and checks that the
 * stream was complete. Returns 0, SP_EPROTO (truncated), or a stored error.
 * An empty stream (no byte fed) decodes to nothing and succeeds.
 */
int sp_inflater_finish(sp_inflater_t *self, sp_buf_t *out);

/** Decoded bytes produced since the last reset. */
size_t sp_inflater_total_out(const sp_inflater_t *self);

/** Frees the inflater; accepts NULL. */
void sp_inflater_destroy(sp_inflater_t *self);

#endif
