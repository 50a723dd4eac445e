/*
 * pprof_scrape.h — internals shared by the files of the `pprof_scrape`
 * receiver: pprof_scrape.c (config, lifecycle, scraping) and
 * pprof_scrape_delta.c (cumulative profiles into per-interval deltas).
 */
#ifndef SP_RECEIVER_PPROF_SCRAPE_H
#define SP_RECEIVER_PPROF_SCRAPE_H

#include "pipeline/batch.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/*
 * The values of the cumulative sample types of one scrape, keyed by stack
 * and sample labels: what the next scrape of the same target and profile
 * is subtracted from. Opaque; owned by the scrape job.
 */
typedef struct sp_scrape_delta_s sp_scrape_delta_t;

/**
 * Turns @p p (decoded into @p arena, which must be its batch's arena) into
 * the difference to the previous scrape, in place, for the sample types
 * whose index has @p cumulative[i] set (e.g. Go's alloc_objects and
 * alloc_space; every type of mutex and block profiles):
 *
 * - samples are keyed by their stack (each location's address, or its
 *   function names, files and lines when the address is 0) and their sample
 *   labels; duplicates of a key are summed into the first;
 * - a cumulative value becomes current − previous (a value that went down
 *   means the process restarted: the current value is the delta);
 * - other values (inuse_*) are kept as they are;
 * - samples whose values are all zero afterwards are dropped.
 *
 * @p prev (the baseline, NULL before the first scrape) is only read.
 * *@p next receives the current scrape's values, owned by the caller: it
 * becomes the baseline once the delta has been delivered (or when there was
 * nothing to deliver), and is freed otherwise, so that the next scrape's
 * delta still covers an interval the pipeline refused. *@p primed is set
 * when @p prev is not usable (first scrape, or the sample types changed):
 * @p p then holds no delta and must not be sent. Returns 0 or SP_ENOMEM
 * (then *@p next is NULL and @p p, possibly half-processed, must not be
 * sent either).
 */
int sp__scrape_delta(sp_arena_t *arena, sp_pprof_t *p, const bool *cumulative,
                     const sp_scrape_delta_t *prev, sp_scrape_delta_t **next, bool *primed);

/** Frees a delta table; accepts NULL. */
void sp__scrape_delta_free(sp_scrape_delta_t *d);

/** Number of stacks a delta table holds (tests). */
size_t sp__scrape_delta_size(const sp_scrape_delta_t *d);

#endif
