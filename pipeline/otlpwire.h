/*
 * otlpwire.h — reading and splicing an encoded OTLP traces request without
 * decoding it.
 *
 * The span–profile join adds a few attributes (pyroscope.profile.id, CPU
 * and wall time) to some spans of a held ExportTraceServiceRequest.
 * Decoding the whole request with protobuf-c to append them and packing it
 * again for the exporter costs far more than the change itself. This
 * module does it on the bytes:
 *
 * - sp_otlpwire_spans() walks the spans in encoded order (resource_spans,
 *   then their scope_spans, then their spans), giving each its ordinal
 *   across the whole request and its encoded Span; the ordinal is the
 *   position protobuf-c gives the span when decoding (repeated fields keep
 *   their order), and the position the join's wire walk
 *   (processors/spanprofile/spanprofile_wire.c) numbers spans by.
 * - sp_otlpwire_span_keys() tells which of some attribute keys a Span
 *   already carries, with the decoded comparison's meaning (see there).
 * - a splice builder: attributes queued for chosen spans are appended as
 *   Span.attributes (field 9) fields at the end of each span's message —
 *   protobuf lets fields come in any order and concatenates repeated
 *   fields, so that is appending to the attribute list — and the length
 *   prefixes of the enclosing Span, ScopeSpans and ResourceSpans are
 *   rewritten. Every other byte (unknown fields, packed fields, long varint
 *   prefixes of untouched messages) is copied as it came.
 *
 * Field numbers (opentelemetry/proto): ExportTraceServiceRequest
 * resource_spans = 1; ResourceSpans scope_spans = 2; ScopeSpans spans = 2;
 * Span attributes = 9; KeyValue key = 1, value = 2; AnyValue string_value
 * = 1, int_value = 3.
 *
 * Input is untrusted as far as framing goes: every length is checked, and
 * malformed bytes along the walked path (a truncated field, a group, a
 * path field that is not length-delimited) are refused with SP_EPROTO.
 * Pure: no libuv, no globals; any thread for distinct objects.
 */
#ifndef SP_OTLPWIRE_H
#define SP_OTLPWIRE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/** Outputs larger than this are refused with SP_ETOOBIG (protobuf-c reads 32-bit lengths). */
#define SP_OTLPWIRE_MAX ((size_t)INT32_MAX)

/**
 * Called by sp_otlpwire_spans() for each span: @p ordinal counts spans
 * across the whole request from 0; @p span / @p len are the encoded Span
 * message (its payload, without tag and length). Return 0 to go on, > 0 to
 * stop the walk (which then returns 0), < 0 to stop it with that code.
 */
typedef int (*sp_otlpwire_span_fn)(void *ctx, size_t ordinal, const uint8_t *span, size_t len);

/**
 * Walks the spans of the encoded ExportTraceServiceRequest @p req
 * (@p len bytes) in encoded order, calling @p fn for each. Fields other
 * than resource_spans, scope_spans and spans are stepped over (their
 * framing checked). Returns 0, SP_EPROTO on malformed framing along the
 * path (spans before the fault may have been reported), or @p fn's
 * negative code. Allocates nothing.
 */
int sp_otlpwire_spans(const uint8_t *req, size_t len, sp_otlpwire_span_fn fn, void *ctx);

/**
 * Which of the attribute keys @p keys (@p n of them, at most 32,
 * NUL-terminated) the encoded Span @p span (@p len bytes) has among its
 * attributes: bit i of *@p found is set when some KeyValue's key equals
 * keys[i]. Keys compare as protobuf-c's decoded C strings compare with
 * strcmp (a KeyValue with several key fields has the last one; bytes after
 * an embedded NUL are not part of the key). Returns 0, SP_EINVAL (n > 32)
 * or SP_EPROTO (malformed attributes; *@p found is then unspecified).
 */
int sp_otlpwire_span_keys(const uint8_t *span, size_t len, const char *const *keys, size_t n,
                          uint32_t *found);

/** sp_otlpwire_span_keys() for one key: 1 present, 0 absent, SP_EPROTO malformed. */
int sp_otlpwire_span_has_attr(const uint8_t *span, size_t len, const char *key);

/* ---- splicing --------------------------------------------------------------------- */

/**
 * Builds a new encoding of a request with attributes appended to chosen
 * spans. Lives on the caller's stack: init, add (any number, spans in any
 * order), finish, free. Scratch memory is sp_malloc'd and freed by
 * sp_otlpwire_splice_free(); the builder does not keep the request, which
 * is given to finish.
 */
typedef struct sp_otlpwire_splice_s {
  /* private */
  struct sp_ow_add_s *adds; /* per call run for one span: its encoded fields in bytes */
  size_t n_adds, cap_adds;
  uint8_t *bytes;
  size_t len, cap;
} sp_otlpwire_splice_t;

/** Starts an empty splice. Allocates nothing. */
void sp_otlpwire_splice_init(sp_otlpwire_splice_t *sp);

/**
 * Queues attribute @p key = string @p val (@p val_len bytes) for span
 * @p ordinal (as sp_otlpwire_spans() numbers them), after the span's
 * existing attributes and those queued for it before. Presence of the key
 * is not checked (see sp_otlpwire_span_keys). 0 or SP_ENOMEM (then the
 * builder is as before the call).
 */
int sp_otlpwire_splice_str(sp_otlpwire_splice_t *sp, size_t ordinal, const char *key,
                           const char *val, size_t val_len);

/** sp_otlpwire_splice_str() with an int_value @p val. 0 or SP_ENOMEM. */
int sp_otlpwire_splice_int(sp_otlpwire_splice_t *sp, size_t ordinal, const char *key, int64_t val);

/** True when nothing was queued (finish would reproduce the input). */
bool sp_otlpwire_splice_empty(const sp_otlpwire_splice_t *sp);

/**
 * Writes the new encoding of @p req (@p len bytes, left untouched) into a
 * fresh sp_malloc'd buffer: *@p out (the caller frees it) / *@p out_len.
 * All or nothing: on error *@p out is not set and nothing was allocated.
 * Returns 0; SP_EPROTO on malformed framing along the path; SP_EINVAL when
 * an attribute was queued for an ordinal past the request's last span;
 * SP_ETOOBIG when the result would exceed SP_OTLPWIRE_MAX; SP_ENOMEM.
 * The queue is kept (finish may be called again, e.g. on the same bytes).
 */
int sp_otlpwire_splice_finish(sp_otlpwire_splice_t *sp, const uint8_t *req, size_t len,
                              uint8_t **out, size_t *out_len);

/** Frees the builder's scratch memory. Accepts a zeroed or initialised builder. */
void sp_otlpwire_splice_free(sp_otlpwire_splice_t *sp);

#endif
