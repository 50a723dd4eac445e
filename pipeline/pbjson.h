/*
 * pbjson.h — protobuf-c messages <-> JSON, driven by message descriptors.
 *
 * One generic codec serves every schema in pipeline/proto: OTLP/JSON
 * (traces, profiles, the partial-success responses), google.rpc.Status
 * error bodies and Pyroscope's Connect JSON (standard protobuf JSON).
 *
 * Mapping (proto3 JSON, with the OTLP deviations when SP_PBJSON_OTLP is set):
 * - keys are the fields' JSON names (lowerCamelCase, as protoc derives them:
 *   drop each '_' and upper-case the letter after it); the original field
 *   names are accepted too when decoding. Unknown keys and null values are
 *   ignored. A field given twice (e.g. as "traceId" and "trace_id") or two
 *   members of one oneof are errors.
 * - int64, uint64, sint64, fixed64, sfixed64: decimal strings on encode;
 *   strings or numbers on decode (an exponent or fraction is accepted when
 *   the value is integral). 32-bit integers are numbers on encode; numbers
 *   or strings on decode. Values out of the field's range are errors.
 * - double/float: numbers; "NaN", "Infinity", "-Infinity" as strings.
 * - bytes: base64 (standard alphabet, padded) on encode; standard or URL-safe,
 *   padded or not, on decode. With SP_PBJSON_OTLP the ID fields of OTLP
 *   messages — trace_id (16 bytes), span_id and parent_span_id (8 bytes),
 *   profile_id (16 bytes) — are hex instead: lowercase on encode,
 *   case-insensitive on decode, and a wrong length is an error ("" = absent).
 * - enums: with SP_PBJSON_OTLP integers on encode (the OTLP rule), otherwise
 *   value names (integers when the value has no name); either accepted on
 *   decode.
 * - fields without presence that hold their zero value, empty repeated
 *   fields and unset messages are omitted on encode; a set oneof member is
 *   always written, even when zero (so AnyValue{intValue: 0} survives).
 * - map fields are JSON objects; google.protobuf.Duration is "1.5s";
 *   google.protobuf.Any is {"@type": url, ...fields} for the types this
 *   codec knows (google.rpc error details, Status, Duration). An Any of any
 *   other type is written, and accepted, as {"@type": url, "value": base64}
 *   — a spanprof convention, not part of the protobuf JSON mapping.
 * Note: OTLP's specification says receivers must use lowerCamelCase keys
 * and integer enums; decode is deliberately lenient and accepts both forms,
 * like the OpenTelemetry Collector.
 *
 * Ownership of decoded messages: every part of the message (the structs,
 * strings, bytes, arrays) is allocated separately through the caller's
 * ProtobufCAllocator, exactly as protobuf_c_message_unpack() would. So the
 * caller frees it with protobuf_c_message_free_unpacked(msg, alloc), or —
 * when alloc is an arena's (sp_arena_pbc) — simply by destroying the arena.
 * The result is a normal message: protobuf_c_message_pack() works on it.
 *
 * Thread-safety: no global state; the functions may run on any thread
 * (e.g. on the libuv thread pool) as long as the allocator is not shared.
 */
#ifndef SP_PBJSON_H
#define SP_PBJSON_H

#include "pipeline/buf.h"
#include "pipeline/json.h"

#include <protobuf-c/protobuf-c.h>
#include <stddef.h>

/**
 * JSON bytes allowed per request byte, for the parse tree and again for the
 * decoded message (JSON is wordier than protobuf, so a lower factor than the
 * wire scan's). Past it decoding stops with SP_ETOOBIG.
 */
#define SP_PBJSON_COST_FACTOR 8

/** The decode budget for @p len bytes of JSON, in bytes. */
static inline size_t sp_pbjson_budget(size_t len) {
  return len * SP_PBJSON_COST_FACTOR + ((size_t)1 << 20);
}

/** Flag: OTLP/JSON rules (hex IDs, integer enums on encode). */
#define SP_PBJSON_OTLP 0x1u

/** Deepest message nesting sp_pbjson_encode() writes (binary input may nest without limit). */
#define SP_PBJSON_MAX_DEPTH 512

/**
 * Decodes the JSON document @p json (@p len bytes, need not be
 * NUL-terminated) into a new message of type @p desc allocated through
 * @p alloc (NULL: a heap allocator over sp_malloc/sp_free, see
 * sp_pbjson_heap_allocator()). @p flags: 0 or SP_PBJSON_OTLP.
 *
 * On success *out holds the message (ownership: see the file comment).
 * On failure *out is NULL, nothing stays allocated through @p alloc, and
 * @p err (may be NULL) holds a NUL-terminated message naming the JSON path,
 * e.g. "resourceSpans[0].scopeSpans[1].spans[3].traceId: invalid hex
 * (expected 32 chars, got 31)", or for syntax errors "invalid JSON at line
 * 3, column 14 (byte 57): <reason>". Nesting is limited to
 * SP_JSON_DEFAULT_DEPTH.
 *
 * Returns 0, SP_EPROTO (malformed JSON or a value that does not fit the
 * schema), SP_ENOMEM (err says "out of memory").
 */
int sp_pbjson_decode(const ProtobufCMessageDescriptor *desc, const char *json, size_t len,
                     unsigned flags, ProtobufCAllocator *alloc, ProtobufCMessage **out, char *err,
                     size_t errlen);

/**
 * Like sp_pbjson_decode() for a tree already parsed with sp_json_parse().
 * The tree is only read; it may be freed right after the call.
 */
int sp_pbjson_decode_tree(const ProtobufCMessageDescriptor *desc, const sp_json_t *root,
                          unsigned flags, ProtobufCAllocator *alloc, ProtobufCMessage **out,
                          char *err, size_t errlen);

/**
 * Appends @p msg as compact JSON (no whitespace) to @p out. @p flags: 0 or
 * SP_PBJSON_OTLP. The message is only read.
 *
 * Returns 0, SP_ENOMEM, SP_ETOOBIG (the buffer's limit) or SP_EPROTO
 * (messages nested deeper than SP_PBJSON_MAX_DEPTH); on failure @p out's
 * length is restored to what it was before the call. Note that decode
 * accepts at most SP_JSON_DEFAULT_DEPTH levels of JSON nesting, so very
 * deep messages encode to JSON that sp_pbjson_decode() refuses.
 */
int sp_pbjson_encode(const ProtobufCMessage *msg, unsigned flags, sp_buf_t *out);

/**
 * A ProtobufCAllocator over sp_malloc/sp_free (so allocation failures can be
 * injected in tests). Static; valid for the program's lifetime.
 */
ProtobufCAllocator *sp_pbjson_heap_allocator(void);

#endif
