/*
 * pprof.h — reading and editing pprof profiles (perftools.profiles.Profile).
 *
 * Receivers get pprof from senders gzipped or not and must check it before
 * accepting it; the span–profile join and the exporters read and change
 * sample labels. This module holds what they share:
 *
 * - sp_pprof_uncompress(): gzip detection and inflating with a size limit
 *   enforced while inflating (the pprof file format is gzip by convention,
 *   but SDKs send both);
 * - sp_pprof_decode(): protobuf decode into an arena plus a reference check
 *   (every string index, sample value count, location / function / mapping
 *   ID), so code that walks a decoded profile can index without checking;
 * - sp_pprof_edit_t: an editor that interns strings into the string table
 *   (with a hash index built on first use) and adds, replaces, renames and
 *   removes sample labels. Everything it allocates comes from the arena the
 *   profile lives in (the batch arena), so edits are freed with the batch;
 * - sp_pprof_normalize_span_labels(): the span-profile label spellings of
 *   the Pyroscope SDKs mapped onto span_id / span_name / trace_id.
 *
 * Editing rules: a profile may only be edited by the sole owner of its batch
 * (sp_profiles_writable()), and whoever edits the pprof of an sp_profile_t
 * sets its `modified` flag so the received bytes are not forwarded stale.
 *
 * Nothing here touches libuv or global state: the functions are safe on any
 * thread for distinct profiles (a decode may run on the libuv thread pool).
 */
#ifndef SP_PPROF_H
#define SP_PPROF_H

#include "pipeline/arena.h"
#include "pipeline/batch.h"
#include "pipeline/buf.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef Perftools__Profiles__Sample sp_pprof_sample_t;
typedef Perftools__Profiles__Label sp_pprof_label_t;

/** Largest uncompressed profile accepted when a caller passes 0 as the limit. */
#define SP_PPROF_DEFAULT_MAX_SIZE ((size_t)64 << 20)

/**
 * Gives the uncompressed pprof bytes of @p in (@p len bytes): @p in itself
 * when it is not gzip, else its inflated form appended to @p scratch (owned
 * by the caller, who frees it with sp_buf_free() on success and failure).
 * At most @p max_size uncompressed bytes are accepted (0: the default
 * SP_PPROF_DEFAULT_MAX_SIZE); the limit is enforced while inflating.
 * *@p out / *@p out_len point into @p in or @p scratch.
 * Returns 0, SP_ETOOBIG, SP_EPROTO (corrupt or truncated gzip) or SP_ENOMEM.
 */
int sp_pprof_uncompress(const uint8_t *in, size_t len, size_t max_size, sp_buf_t *scratch,
                        const uint8_t **out, size_t *out_len);

/**
 * Decodes uncompressed pprof bytes into @p arena (which then owns every part
 * of the message) and checks it with sp_pprof_validate(). On failure @p err
 * (may be NULL) says why, e.g. "not a pprof profile (malformed protobuf)" or
 * "sample[3]: 2 values for 1 sample types".
 * Returns 0, SP_EPROTO or SP_ENOMEM (arena exhausted: err says so).
 */
int sp_pprof_decode(sp_arena_t *arena, const uint8_t *raw, size_t len, sp_pprof_t **out,
                    char *err, size_t errlen);

/**
 * Checks what the pprof format requires of a decoded profile: string_table[0]
 * is "", every string index is inside the table, each sample has one value
 * per sample type, every location ID a sample names exists (and is unique),
 * every function ID a line names exists, every non-zero mapping ID a location
 * names exists. Returns 0, SP_EPROTO (with @p err set) or SP_ENOMEM (the ID
 * check needs a temporary index).
 */
int sp_pprof_validate(const sp_pprof_t *p, char *err, size_t errlen);

/** The string at index @p i of the string table, "" when out of range. Never NULL. */
const char *sp_pprof_str(const sp_pprof_t *p, int64_t i);

/** Index of @p s in the string table (linear search), or -1 when absent. */
int64_t sp_pprof_find_string(const sp_pprof_t *p, const char *s);

/** The first label of @p s whose key is string index @p key, or NULL. */
sp_pprof_label_t *sp_pprof_sample_label(const sp_pprof_sample_t *s, int64_t key);

/**
 * The string value of the label named @p key on @p s, or NULL when the
 * sample has no such string label. Linear in the string table: for loops
 * over samples, resolve the key once with sp_pprof_find_string() and use
 * sp_pprof_sample_label().
 */
const char *sp_pprof_sample_label_str(const sp_pprof_t *p, const sp_pprof_sample_t *s,
                                      const char *key);

/** True when @p s is exactly @p n lowercase-or-uppercase hex characters. */
bool sp_pprof_is_hex(const char *s, size_t n);

/* ---- editing ----------------------------------------------------------------- */

/**
 * An editor over one decoded profile. Lives on the caller's stack:
 * sp_pprof_edit_init(), edits, sp_pprof_edit_free(). The string index is
 * sp_malloc'd (freed by sp_pprof_edit_free); the profile's new strings,
 * arrays and labels come from @p arena, which must be the arena the profile
 * was decoded into (or one that lives as long).
 */
typedef struct sp_pprof_edit_s {
  sp_arena_t *arena;
  sp_pprof_t *p;
  size_t strtab_cap; /* capacity of p->string_table once the editor owns the array; 0 before */
  int64_t *slots;    /* open addressing: string index + 1, 0 = empty */
  size_t n_slots;    /* power of two, or 0 before the first intern */
  size_t n_indexed;  /* strings in the index */
  size_t changed;    /* edits made (labels added, replaced, renamed or removed) */
} sp_pprof_edit_t;

/** Starts editing @p p, whose parts live in @p arena. Allocates nothing. */
void sp_pprof_edit_init(sp_pprof_edit_t *e, sp_arena_t *arena, sp_pprof_t *p);

/** Frees the editor's index (not the profile). Accepts a zeroed editor. */
void sp_pprof_edit_free(sp_pprof_edit_t *e);

/**
 * Index of @p s in the string table, appending a copy when absent.
 * Returns the index (>= 0) or SP_ENOMEM.
 */
int64_t sp_pprof_intern(sp_pprof_edit_t *e, const char *s);

/**
 * Gives @p s the string label @p key = @p value (string indices): replaces
 * the value of an existing label with that key (numeric ones become string
 * labels), else appends a label. 0 or SP_ENOMEM.
 */
int sp_pprof_sample_set_label(sp_pprof_edit_t *e, sp_pprof_sample_t *s, int64_t key,
                              int64_t value);

/** sp_pprof_sample_set_label() with strings, interned as needed. 0 or SP_ENOMEM. */
int sp_pprof_sample_set_label_str(sp_pprof_edit_t *e, sp_pprof_sample_t *s, const char *key,
                                  const char *value);

/** Removes every label with key index @p key from @p s; returns how many went. */
size_t sp_pprof_sample_remove_label(sp_pprof_edit_t *e, sp_pprof_sample_t *s, int64_t key);

/**
 * Renames the sample label @p from to @p to on every sample. Where a sample
 * already has a @p to label, its @p from label is dropped instead (the
 * canonical spelling wins). *@p n_changed (may be NULL) gets the number of
 * samples changed. Interns @p to only when some sample has @p from.
 * 0 or SP_ENOMEM.
 */
int sp_pprof_rename_label(sp_pprof_edit_t *e, const char *from, const char *to,
                          size_t *n_changed);

/**
 * Brings the span-profile labels the Pyroscope SDKs put on samples to one
 * spelling:
 *   profile_id (Java, Ruby, .NET: the span ID) → span_id, when its value is
 *              16 hex characters (other values are left alone);
 *   span       (Ruby: the span name)           → span_name;
 *   span_id, trace_id hex values are lower-cased.
 * Where the canonical label is already present, the alias is dropped.
 * Fast when none of these labels occurs (nothing is interned).
 * *@p n_changed (may be NULL) gets the number of samples changed.
 * 0 or SP_ENOMEM.
 */
int sp_pprof_normalize_span_labels(sp_pprof_edit_t *e, size_t *n_changed);

/**
 * Makes an empty, valid profile in @p arena (string_table = [""]) for code
 * that builds profiles (format converters, the delta computation's output).
 * NULL on OOM.
 */
sp_pprof_t *sp_pprof_new(sp_arena_t *arena);

#endif
