/*
 * pbscan.h — validate protobuf bytes against a protobuf-c descriptor without
 * building anything.
 *
 * Receivers check every request before accepting it, but most batches are
 * forwarded without ever being decoded. The scanner walks the wire format
 * with the schema, checking exactly what protobuf-c's unpack would reject
 * (truncation, wrong wire types for known fields, bad varints, nesting too
 * deep), so a batch that passed the scan always decodes later. A callback
 * sees every length-delimited field of a known type, before a sub-message is
 * descended into, which is how callers count spans or check ID lengths in the
 * same pass.
 *
 * The scan also bounds what decoding would cost: a request whose decoded
 * form would take more than SP_PBSCAN_COST_FACTOR times its own size (plus
 * 1 MiB) is refused with SP_ETOOBIG, so a few kilobytes of gzip cannot make
 * the daemon allocate gigabytes. Real OTLP requests decode to 2–13 times
 * their size.
 */
#ifndef SP_PBSCAN_H
#define SP_PBSCAN_H

#include <protobuf-c/protobuf-c.h>
#include <stddef.h>
#include <stdint.h>

typedef struct sp_pbscan_s sp_pbscan_t;

/** Decoded size allowed per request byte. */
#define SP_PBSCAN_COST_FACTOR 16

/** The decode budget for a request of @p len bytes, in bytes. */
uint64_t sp_pbscan_budget(size_t len);

/**
 * Called for each length-delimited field of a known field (string, bytes,
 * message) inside message type @p msg. Return 0 to go on, or a negative
 * code after setting an error with sp_pbscan_fail().
 */
typedef int (*sp_pbscan_cb)(sp_pbscan_t *scan, const ProtobufCMessageDescriptor *msg,
                            const ProtobufCFieldDescriptor *field, const uint8_t *data,
                            size_t len, void *ctx);

/**
 * Scans @p buf as a @p desc message. On failure @p err holds
 * "path: reason" (e.g. "resource_spans[0].scope_spans[1].spans[3]: truncated
 * field"). Returns 0, SP_EPROTO, SP_ETOOBIG (over the decode budget) or the
 * callback's code.
 */
int sp_pbscan(const ProtobufCMessageDescriptor *desc, const uint8_t *buf, size_t len,
              sp_pbscan_cb cb, void *ctx, char *err, size_t errlen);

/**
 * sp_pbscan() calling @p cb only for fields of the @p n_only message types
 * in @p only (the array is borrowed for the call). Validation is the same;
 * skipping the callback elsewhere saves an indirect call per string field.
 */
int sp_pbscan_only(const ProtobufCMessageDescriptor *desc, const uint8_t *buf, size_t len,
                   sp_pbscan_cb cb, void *ctx, const ProtobufCMessageDescriptor *const *only,
                   size_t n_only, char *err, size_t errlen);

/** Sets the scan error to "path.field: <formatted reason>"; returns SP_EPROTO. */
int sp_pbscan_fail(sp_pbscan_t *scan, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
