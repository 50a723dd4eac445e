/*
 * otlpprofiles.h — the internal profiles batch as an OTLP
 * ExportProfilesServiceRequest (v1development, dictionary layout), for the
 * exporters that speak OTLP (otlp, otlphttp).
 *
 * It is the inverse of what the otlp receiver does on the way in:
 *   series labels (minus __name__)      → resource attributes (service_name
 *                                          becomes service.name), one
 *                                          ResourceProfiles per distinct set
 *   each pprof sample type               → one OTLP Profile (OTLP profiles
 *                                          carry a single sample type)
 *   pprof mappings/locations/functions   → the shared dictionary tables
 *   sample location ids                  → a stack (deduplicated)
 *   span_id + trace_id sample labels     → a link (deduplicated)
 *   other sample labels                  → attributes (str → string value,
 *                                          num → int value with its unit)
 *   side arrays: time, thread            → timestamps_unix_nano, thread.id
 * Strings, attributes, stacks and links are interned, so a request's
 * dictionary holds each once.
 */
#ifndef SP_OTLPPROFILES_H
#define SP_OTLPPROFILES_H

#include "pipeline/arena.h"
#include "pipeline/batch.h"

#include "opentelemetry/proto/collector/profiles/v1development/profiles_service.pb-c.h"

typedef Opentelemetry__Proto__Collector__Profiles__V1development__ExportProfilesServiceRequest
    sp_otlpprofiles_req_t;

/**
 * Builds the request for every profile of @p batch (decoding them when
 * needed) with every part allocated in @p arena (free it to free the
 * request). Loop thread or any thread that owns the batch. Returns 0 and
 * sets *@p out, SP_EPROTO (a profile's pprof bytes do not decode, or refer
 * to ids that do not exist) or SP_ENOMEM.
 */
int sp_otlpprofiles_from_batch(sp_profiles_t *batch, sp_arena_t *arena,
                               sp_otlpprofiles_req_t **out);

#endif
