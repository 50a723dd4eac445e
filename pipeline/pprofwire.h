/*
 * pprofwire.h — reading and splicing encoded pprof without decoding it.
 *
 * The profile path's common case is: a receiver accepts a pprof upload, the
 * span–profile join reads each sample's span label and appends span_name /
 * trace_id labels, the pyroscope exporter sends the result. Decoding the
 * whole Profile with protobuf-c and packing it again costs more than
 * everything else on that path (about 0.8 ms for a 125 KB profile of 1,500
 * samples). This module does the same work on the encoded bytes:
 *
 * - sp_pprof_wire_index(): one pass over the top-level fields records where
 *   every string of the string table and every Sample sits, plus the few
 *   scalars callers read (sample types, period, time, duration). With
 *   `validate`, it also performs every check sp_pprof_validate() makes on a
 *   decoded profile (string_table[0] is "", string indices inside the table,
 *   one value per sample type, location / function / mapping IDs exist and
 *   are unique) and rejects malformed protobuf, so a receiver can accept a
 *   profile without decoding it, and later decodes cannot fail.
 * - reading a sample: its labels and values, decoded on the fly from the
 *   sample's bytes into caller buffers — or, for labels, copied from the
 *   index when the validating pass kept them (SP_PW_LABELS: the receiver
 *   validates on the thread pool, so the event loop reads arrays), along
 *   with a summary of the label keys in use.
 * - sp_pprof_splice_finish_indexed(): the splice's output comes with its
 *   index (derived from the input's), so it is never indexed again; the
 *   _ex form leaves out the pre-decoded labels when only the key summary is
 *   read downstream (the join's case).
 * - label groups: labels encoded once and appended to many samples by
 *   reference (the join adds the same labels to every sample of a span).
 * - a splice builder: new strings are appended to the string table (they get
 *   the next indices; protobuf keeps repeated fields in order, so appending
 *   `string_table` fields at the end of the message is exactly appending to
 *   the table) and new labels are appended to chosen samples (their length
 *   prefix is rewritten). Everything else is copied as it came, in one pass.
 *
 * The index points into the bytes it was built from; it stays valid as long
 * as they do. Pure: no libuv, no globals; any thread for distinct objects.
 */
#ifndef SP_PPROFWIRE_H
#define SP_PPROFWIRE_H

#include "pipeline/arena.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/** A byte range inside the indexed buffer. */
typedef struct sp_pw_range_s {
  uint32_t off; /* offset of the payload from the start of the buffer */
  uint32_t len; /* payload length */
} sp_pw_range_t;

/** A Sample field: where its tag starts (for splicing) and its payload. */
typedef struct sp_pw_sample_s {
  uint32_t field_off; /* offset of the field's tag byte */
  uint32_t off;       /* offset of the Sample message payload */
  uint32_t len;       /* payload length */
} sp_pw_sample_t;

/**
 * A sample label decoded ahead of time (SP_PW_LABELS): 8 bytes instead of
 * the label's 32 in sp_pw_label_t. A string label is {key, str}; a numeric
 * one (no str, no num_unit, 0 < num < 2^32) has SP_PW_PLABEL_NUM set in
 * `key` and num in `val`. A profile with a label of any other shape gets
 * no pre-decoded labels at all (plabels == NULL).
 */
typedef struct sp_pw_plabel_s {
  uint32_t key; /* string index of the key, | SP_PW_PLABEL_NUM for a numeric label */
  uint32_t val; /* string index of the value, or the number */
} sp_pw_plabel_t;

#define SP_PW_PLABEL_NUM 0x80000000u

/**
 * One distinct key of the string labels (key > 0, str > 0) the samples
 * carry, with where it first appears and its longest value.
 */
typedef struct sp_pw_keysum_s {
  int64_t key;           /* string index */
  uint32_t first_sample; /* first sample carrying it */
  uint32_t first_pos;    /* its position among that sample's labels */
  uint32_t max_len;      /* the longest value's encoded length (bytes; an embedded NUL not considered) */
} sp_pw_keysum_t;

/** The index of one encoded Profile. */
typedef struct sp_pprof_wire_s {
  const uint8_t *raw;
  size_t len;
  sp_pw_range_t *strings; /* string_table entries in order */
  size_t n_strings;
  sp_pw_sample_t *samples; /* Sample fields in order */
  size_t n_samples;
  int64_t (*sample_types)[2]; /* (type, unit) string indices, in order */
  size_t n_sample_types;
  int64_t period_type[2]; /* (type, unit); 0 when absent */
  int64_t period;
  int64_t time_nanos;
  int64_t duration_nanos;
  /*
   * Optional (SP_PW_LABELS, or an index made by
   * sp_pprof_splice_finish_indexed from one that has them); NULL / 0
   * otherwise. Sample i's labels are plabels[plabel_start[i] ..
   * plabel_start[i + 1]), in their encoded order.
   */
  const sp_pw_plabel_t *plabels;
  const uint32_t *plabel_start; /* n_samples + 1 entries */
  /*
   * The distinct string-label keys in order of first appearance (sample,
   * then position), exactly the keys a pass over every sample's labels
   * would collect; valid only when has_keys (made from pre-decoded labels,
   * but an index from sp_pprof_splice_finish_indexed_ex without
   * SP_PW_LABELS keeps it while dropping plabels).
   */
  const sp_pw_keysum_t *keys;
  size_t n_keys;
  bool has_keys;
} sp_pprof_wire_t;

/** sp_pprof_wire_index_ex flags. */
enum {
  SP_PW_VALIDATE = 1u << 0, /* as sp_pprof_wire_index's validate */
  SP_PW_LABELS = 1u << 1,   /* with SP_PW_VALIDATE: pre-decode labels and summarise keys */
};

/** At most this many distinct string-label keys are summarised (has_keys is false past it). */
#define SP_PW_MAX_KEYS 64

/** A sample label as encoded (pprof Label: key, str, num, num_unit string indices / value). */
typedef struct sp_pw_label_s {
  int64_t key;
  int64_t str;
  int64_t num;
  int64_t num_unit;
} sp_pw_label_t;

/**
 * Indexes @p len bytes of encoded Profile at @p raw into @p out; the arrays
 * come from @p arena (which may carry a limit). Buffers of 4 GiB or more are
 * refused (offsets are 32-bit). With @p validate, also checks what
 * sp_pprof_validate() checks (see above) and that the bytes are well-formed
 * protobuf for the pprof schema, writing the reason to @p err on failure
 * (e.g. "sample[3]: 2 values for 1 sample types", "sample[9].label[0]: key
 * 812 outside the string table (400 strings)"). Without @p validate the
 * bytes must have been validated before (only framing is checked).
 * Returns 0, SP_EPROTO or SP_ENOMEM; with @p validate also SP_ETOOBIG,
 * exactly when sp_pprof_decode() would refuse the bytes as over the decode
 * budget of pipeline/pbscan.h (the message is the same). A validating call
 * accepts exactly what sp_pprof_decode() accepts, and its messages are
 * sp_pprof_decode()'s.
 */
int sp_pprof_wire_index(sp_arena_t *arena, const uint8_t *raw, size_t len, bool validate,
                        sp_pprof_wire_t *out, char *err, size_t errlen);

/**
 * sp_pprof_wire_index with flags: SP_PW_VALIDATE as validate; SP_PW_LABELS
 * (only together with SP_PW_VALIDATE, ignored otherwise) also fills
 * plabels / plabel_start and the key summary from the validating pass, at
 * 8 bytes per label and 4 per sample in @p arena. Those are optional: when
 * they cannot be had (a label of another shape, more than SP_PW_MAX_KEYS
 * keys, or no memory for them) the index is made without them and the call
 * still succeeds. Return codes and messages as sp_pprof_wire_index.
 */
int sp_pprof_wire_index_ex(sp_arena_t *arena, const uint8_t *raw, size_t len, unsigned flags,
                           sp_pprof_wire_t *out, char *err, size_t errlen);

/** String @p i of the table (not NUL-terminated); "" with length 0 when out of range. */
static inline const char *sp_pprof_wire_str(const sp_pprof_wire_t *w, int64_t i, size_t *len) {
  if (i < 0 || (size_t)i >= w->n_strings) {
    *len = 0;
    return "";
  }
  *len = w->strings[i].len;
  return (const char *)w->raw + w->strings[i].off;
}

/** Index of the string equal to @p s (@p len bytes), or -1. Linear in the table. */
int64_t sp_pprof_wire_find(const sp_pprof_wire_t *w, const char *s, size_t len);

/**
 * Decodes the labels of sample @p i into @p out (at most @p cap, in their
 * encoded order). Returns how many the sample has (which may exceed @p cap:
 * then only the first @p cap were written). With pre-decoded labels this is
 * a copy out of plabels.
 */
size_t sp_pprof_wire_labels(const sp_pprof_wire_t *w, size_t i, sp_pw_label_t *out, size_t cap);

/**
 * Decodes the values of sample @p i (packed or not) into @p out (at most
 * @p cap). Returns how many the sample has.
 */
size_t sp_pprof_wire_values(const sp_pprof_wire_t *w, size_t i, int64_t *out, size_t cap);

/* ---- splicing --------------------------------------------------------------------- */

/**
 * Builds a new encoding of an indexed profile with strings appended to its
 * table and labels appended to some samples. Lives on the caller's stack:
 * init, add*, finish, free. Scratch memory is sp_malloc'd (freed by
 * sp_pprof_splice_free); the result of finish comes from the arena given.
 */
typedef struct sp_pprof_splice_s {
  const sp_pprof_wire_t *w;
  /* private */
  sp_pw_range_t *new_strings; /* ranges into str_bytes */
  size_t n_new_strings, cap_new_strings;
  uint8_t *str_bytes;
  size_t str_len, str_cap;
  struct sp_pw_add_s *adds; /* per touched sample: encoded labels to append */
  size_t n_adds, cap_adds;
  uint8_t *label_bytes;
  size_t label_len, label_cap;
  sp_pw_plabel_t *add_labels; /* the labels added, in call order (for the indexed finish) */
  size_t n_add_labels, cap_add_labels;
  size_t n_rec_labels; /* labels appended to samples (a group's count once per use) */
  struct sp_pw_group_s *groups; /* sp_pprof_splice_group's label runs */
  size_t n_groups, cap_groups;
  bool add_unfit; /* some added label does not fit sp_pw_plabel_t */
  bool unsorted;  /* samples came out of order: finish sorts the adds and sizes the output */
  size_t grow;    /* while sorted: what the touched samples add to the input's length */
  size_t cur_extra; /* while sorted: the bytes added to the last touched sample so far */
} sp_pprof_splice_t;

/** Starts a splice over @p w. Allocates nothing. */
void sp_pprof_splice_init(sp_pprof_splice_t *sp, const sp_pprof_wire_t *w);

/**
 * Appends @p s (@p len bytes) to the string table; returns its new index
 * (>= w->n_strings) or SP_ENOMEM. No deduplication: callers that add the
 * same string many times keep their own map.
 */
int64_t sp_pprof_splice_string(sp_pprof_splice_t *sp, const char *s, size_t len);

/**
 * Appends @p n labels to sample @p sample (after its existing labels).
 * Calls for one sample may repeat; samples may come in any order. Label
 * string indices may name strings added with sp_pprof_splice_string().
 * 0, SP_EINVAL (sample out of range) or SP_ENOMEM.
 */
int sp_pprof_splice_labels(sp_pprof_splice_t *sp, size_t sample, const sp_pw_label_t *labels,
                           size_t n);

/**
 * Encodes @p n labels once as a group, for sp_pprof_splice_labels_group to
 * append to many samples without encoding them again (the join adds the
 * same span_name / trace_id labels to every sample of a span). Returns the
 * group's handle (>= 0), or SP_ENOMEM. Label string indices as for
 * sp_pprof_splice_labels.
 */
int64_t sp_pprof_splice_group(sp_pprof_splice_t *sp, const sp_pw_label_t *labels, size_t n);

/**
 * sp_pprof_splice_labels with the labels of @p group (from
 * sp_pprof_splice_group on this builder): the same result, without encoding
 * them again. 0, SP_EINVAL (sample or group out of range) or SP_ENOMEM.
 */
int sp_pprof_splice_labels_group(sp_pprof_splice_t *sp, size_t sample, int64_t group);

/** True when nothing was added (finish would reproduce the input). */
bool sp_pprof_splice_empty(const sp_pprof_splice_t *sp);

/**
 * Writes the new encoding into @p arena: *@p out / *@p out_len. The input
 * bytes and index are untouched (the caller re-indexes the result if it
 * needs to read it). 0 or SP_ENOMEM.
 */
int sp_pprof_splice_finish(sp_pprof_splice_t *sp, sp_arena_t *arena, const uint8_t **out,
                           size_t *out_len);

/**
 * sp_pprof_splice_finish that also indexes its output into *@p wout (arrays
 * from @p arena) without reading it again: strings and samples are the
 * input's, shifted where the splice moved them, plus the new ones; the
 * scalars are the input's. Pre-decoded labels and the key summary of the
 * input index, when it has them, are extended with the added labels (and
 * dropped when an added label does not fit sp_pw_plabel_t or the keys
 * overflow SP_PW_MAX_KEYS). 0 or SP_ENOMEM (then nothing is written).
 */
int sp_pprof_splice_finish_indexed(sp_pprof_splice_t *sp, sp_arena_t *arena, const uint8_t **out,
                                   size_t *out_len, sp_pprof_wire_t *wout);

/**
 * sp_pprof_splice_finish_indexed with a choice of what the output's index
 * carries besides strings, samples and scalars: with SP_PW_LABELS in
 * @p flags, the extended pre-decoded labels (as sp_pprof_splice_finish_indexed);
 * without, none (plabels NULL: readers of sample labels read the bytes),
 * which saves a copy of every label when only the key summary is read
 * downstream. The key summary is extended either way when the input has
 * one and its pre-decoded labels (so has_keys may hold without plabels on
 * such an output). The output bytes and every index array come from one
 * arena allocation. 0 or SP_ENOMEM (then nothing is written).
 */
int sp_pprof_splice_finish_indexed_ex(sp_pprof_splice_t *sp, sp_arena_t *arena, unsigned flags,
                                      const uint8_t **out, size_t *out_len,
                                      sp_pprof_wire_t *wout);

/** Frees the builder's scratch memory. Accepts a zeroed builder. */
void sp_pprof_splice_free(sp_pprof_splice_t *sp);

#endif
