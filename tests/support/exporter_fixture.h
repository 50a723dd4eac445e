/*
 * exporter_fixture.h — shared pieces of the OTLP exporter tests
 * (test_otlphttp.c, test_otlp_exporter.c): known traces and profiles
 * batches, an exporter instance built from YAML the way the service builds
 * one, and a check that a received ExportProfilesServiceRequest carries
 * exactly the test profile.
 */
#ifndef SP_TEST_EXPORTER_FIXTURE_H
#define SP_TEST_EXPORTER_FIXTURE_H

#include "pipeline/batch.h"
#include "pipeline/component.h"
#include "pipeline/otlpprofiles.h"

#include <stddef.h>
#include <stdint.h>

/**
 * A traces batch of @p n_spans spans (in two resources) whose IDs, names
 * and attributes derive from @p seed. *@p bytes (sp_malloc'd, caller frees)
 * receives a copy of its encoding, to compare with what a backend received.
 */
sp_traces_t *sp_test_traces(size_t n_spans, uint32_t seed, uint8_t **bytes, size_t *len);

/**
 * A profiles batch of two profiles (services "svc-a" and "svc-b"); the first
 * has two sample types (cpu samples/count and cpu/nanoseconds), 3 samples
 * with stacks, string and numeric labels, a span link (span_id + trace_id
 * labels) and per-sample time/thread side arrays.
 */
sp_profiles_t *sp_test_profiles(void);

/**
 * Asserts (cmocka) that @p req is the OTLP form of sp_test_profiles(): the
 * resources, sample types, values, stacks (function names), attributes,
 * link, timestamps and thread ids.
 */
void sp_test_check_profiles(const sp_otlpprofiles_req_t *req);

/** An exporter instance made from YAML as the service makes one. */
typedef struct sp_test_exporter_s {
  const sp_component_def_t *def;
  void *cfg;
  sp_component_t *comp;
} sp_test_exporter_t;

/**
 * Decodes @p yaml with @p def's schema and creates the instance on @p host
 * with ID @p id. Returns 0, or the decode/create error (errors printed).
 */
int sp_test_exporter_make(sp_test_exporter_t *t, const sp_component_def_t *def, const char *yaml,
                          sp_host_t *host, const char *id);

/**
 * Shuts @p t down with drain deadline now + @p drain_ms, runs the loop until
 * the callback ran (asserting it was not inline), destroys the instance and
 * frees the config.
 */
void sp_test_exporter_stop(sp_test_exporter_t *t, uint64_t drain_ms);

#endif
