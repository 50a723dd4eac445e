/*
 * profiletype.h — the Pyroscope profile type name (`__name__`) for a pprof
 * sample type, shared by every receiver that builds profiles.
 *
 * Pyroscope groups series by `__name__`: process_cpu, wall, memory,
 * goroutines, mutex, block. Receivers set it on each profile from what the
 * profile measures, so the join and the exporters never have to guess.
 */
#ifndef SP_PROFILETYPE_H
#define SP_PROFILETYPE_H

/**
 * Maps a sample type (e.g. "cpu"/"nanoseconds", "alloc_space"/"bytes",
 * "contentions"/"count" with period type "contentions") to Pyroscope's
 * `__name__`. Unknown types give "process_cpu" when the period type is cpu,
 * else the sample type itself. Never NULL; the result is static or @p type.
 */
const char *sp_profile_type_name(const char *type, const char *unit, const char *period_type);

#endif
