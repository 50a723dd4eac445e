/*
 * satmath.h — saturating integer arithmetic for values that come from the
 * network or from a clock.
 *
 * Counts, durations and timestamps in requests are attacker-controlled:
 * summing or subtracting them with plain `+`/`-` is undefined behaviour on
 * signed overflow and wraps silently on unsigned overflow (a delay of
 * UINT64_MAX added to "now" lands in the past). These helpers clamp to the
 * type's range instead, which keeps every result ordered correctly: a sum
 * that does not fit is "as large as it gets", never small or negative.
 *
 * Header-only, no state; safe on any thread.
 */
#ifndef SP_SATMATH_H
#define SP_SATMATH_H

#include <stdint.h>

/** @p a + @p b, clamped to [INT64_MIN, INT64_MAX]. */
static inline int64_t sp_sat_add_i64(int64_t a, int64_t b) {
  int64_t r;
  if (__builtin_add_overflow(a, b, &r)) return b > 0 ? INT64_MAX : INT64_MIN;
  return r;
}

/** @p a - @p b, clamped to [INT64_MIN, INT64_MAX]. */
static inline int64_t sp_sat_sub_i64(int64_t a, int64_t b) {
  int64_t r;
  if (__builtin_sub_overflow(a, b, &r)) return b < 0 ? INT64_MAX : INT64_MIN;
  return r;
}

/** @p a + @p b, clamped to UINT64_MAX. */
static inline uint64_t sp_sat_add_u64(uint64_t a, uint64_t b) {
  uint64_t r;
  if (__builtin_add_overflow(a, b, &r)) return UINT64_MAX;
  return r;
}

/** @p a - @p b, clamped to 0. */
static inline uint64_t sp_sat_sub_u64(uint64_t a, uint64_t b) { return a > b ? a - b : 0; }

#endif
