/*
 * test_pprofwire.c — the pprof wire index and splice builder against
 * protobuf-c's own encoding and decoding.
 *
 * Profiles are built as protobuf-c structs (a small fixture: 6 samples with
 * string and numeric labels, 4 locations, 3 functions, 2 mappings) and
 * packed. Checked: the index agrees with protobuf-c's decode (strings,
 * samples, labels, values packed and unpacked, sample types, period, time,
 * duration); splices unpack to exactly the expected profile; an empty splice
 * reproduces the input; label lists longer than the caller's buffer.
 * Validation: every invalid case sp_pprof_decode() refuses is refused by
 * the index with the same message, valid variants (IDs out of order,
 * unknown fields) are accepted, and a deterministic mutation loop asserts
 * index(validate) accepts exactly when sp_pprof_decode does; the fast paths
 * (packed location IDs checked 16 / 8 bytes at a time, values counted as a
 * word, labels, top-level samples and strings, the decode budget at their
 * edges) get the same comparison on inputs aimed at them.
 */
#include "perftools/profiles/profile.pb-c.h"
#include "pipeline/alloc.h"
#include "pipeline/arena.h"
#include "pipeline/batch.h"
#include "pipeline/error.h"
#include "pipeline/pprof.h"
#include "pipeline/pprofwire.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

/* ---- the fixture -------------------------------------------------------------------- */

#define NS 6
#define NL 4
#define NF 3
#define NM 2

static const char *const k_strings[] = {"",        "samples", "count",      "cpu",
                                        "nanoseconds", "span_id", "0123456789abcdef",
                                        "thread_num", "bytes", "main", "foo", "bar",
                                        "/bin/app", "build-1"};
#define NSTR (sizeof(k_strings) / sizeof(k_strings[0]))

typedef struct fx_s {
  Perftools__Profiles__Profile p;
  Perftools__Profiles__ValueType st[2], *stp[2], pt;
  Perftools__Profiles__Sample s[NS], *sp[NS];
  uint64_t locids[NS][3];
  int64_t vals[NS][2];
  Perftools__Profiles__Label l[NS][3], *lp[NS][3];
  Perftools__Profiles__Location loc[NL], *locp[NL];
  Perftools__Profiles__Line line[NL], *linep[NL];
  Perftools__Profiles__Function fn[NF], *fnp[NF];
  Perftools__Profiles__Mapping map[NM], *mapp[NM];
  char *strs[NSTR];
  int64_t comment[1];
} fx_t;

static void fx_init(fx_t *f) {
  memset(f, 0, sizeof(*f));
  perftools__profiles__profile__init(&f->p);
  for (int i = 0; i < 2; i++) {
    perftools__profiles__value_type__init(&f->st[i]);
    f->stp[i] = &f->st[i];
  }
  f->st[0].type = 1, f->st[0].unit = 2, f->st[1].type = 3, f->st[1].unit = 4;
  f->p.sample_type = f->stp;
  f->p.n_sample_type = 2;
  perftools__profiles__value_type__init(&f->pt);
  f->pt.type = 3, f->pt.unit = 4;
  f->p.period_type = &f->pt;
  f->p.period = 10000000;
  f->p.time_nanos = 1700000000123456789;
  f->p.duration_nanos = 10000000000;
  f->comment[0] = 1;
  f->p.comment = f->comment;
  f->p.n_comment = 1;
  f->p.default_sample_type = 1;
  for (int i = 0; i < NS; i++) {
    Perftools__Profiles__Sample *s = &f->s[i];
    perftools__profiles__sample__init(s);
    f->sp[i] = s;
    f->locids[i][0] = 1 + (uint64_t)(i % NL);
    f->locids[i][1] = 1 + (uint64_t)((i + 1) % NL);
    f->locids[i][2] = 1 + (uint64_t)((i + 2) % NL);
    s->location_id = f->locids[i];
    s->n_location_id = 1 + (size_t)(i % 3);
    f->vals[i][0] = i + 1;
    f->vals[i][1] = (i + 1) * 1000;
    s->value = f->vals[i];
    s->n_value = 2;
    size_t nl = (size_t)(i % 4 == 3 ? 0 : i % 4); /* 0..2 labels, some samples none */
    if (i == NS - 1)
      nl = 3;
    for (size_t j = 0; j < 3; j++) {
      perftools__profiles__label__init(&f->l[i][j]);
      f->lp[i][j] = &f->l[i][j];
    }
    f->l[i][0].key = 5, f->l[i][0].str = 6;
    f->l[i][1].key = 7, f->l[i][1].num = i, f->l[i][1].num_unit = 8;
    f->l[i][2].key = 7, f->l[i][2].num = -12345;
    s->label = f->lp[i];
    s->n_label = nl;
  }
  f->p.sample = f->sp;
  f->p.n_sample = NS;
  for (int i = 0; i < NL; i++) {
    perftools__profiles__location__init(&f->loc[i]);
    perftools__profiles__line__init(&f->line[i]);
    f->locp[i] = &f->loc[i];
    f->linep[i] = &f->line[i];
    f->loc[i].id = (uint64_t)i + 1;
    f->loc[i].mapping_id = i < 2 ? 1 : 0;
    f->loc[i].address = 0x1000 + (uint64_t)i;
    f->line[i].function_id = 1 + (uint64_t)(i % NF);
    f->line[i].line = 10 + i;
    f->loc[i].line = &f->linep[i];
    f->loc[i].n_line = 1;
  }
  f->p.location = f->locp;
  f->p.n_location = NL;
  for (int i = 0; i < NF; i++) {
    perftools__profiles__function__init(&f->fn[i]);
    f->fnp[i] = &f->fn[i];
    f->fn[i].id = (uint64_t)i + 1;
    f->fn[i].name = 9 + i;
    f->fn[i].filename = 12;
  }
  f->p.function = f->fnp;
  f->p.n_function = NF;
  for (int i = 0; i < NM; i++) {
    perftools__profiles__mapping__init(&f->map[i]);
    f->mapp[i] = &f->map[i];
    f->map[i].id = (uint64_t)i + 1;
    f->map[i].filename = 12;
    f->map[i].build_id = 13;
  }
  f->p.mapping = f->mapp;
  f->p.n_mapping = NM;
  for (size_t i = 0; i < NSTR; i++)
    f->strs[i] = (char *)k_strings[i];
  f->p.string_table = f->strs;
  f->p.n_string_table = NSTR;
}

/* Packs a profile into a malloc'd buffer. */
static uint8_t *pack(const Perftools__Profiles__Profile *p, size_t *len) {
  *len = perftools__profiles__profile__get_packed_size(p);
  uint8_t *b = malloc(*len + 1);
  assert_non_null(b);
  perftools__profiles__profile__pack(p, b);
  return b;
}

static uint8_t *fx_bytes(size_t *len) {
  fx_t f;
  fx_init(&f);
  return pack(&f.p, len);
}

/* ---- helpers ------------------------------------------------------------------------ */

/* The index of @p raw agrees with protobuf-c's decode of it. */
static void assert_index_matches(const sp_pprof_wire_t *w, const uint8_t *raw, size_t len) {
  Perftools__Profiles__Profile *d = perftools__profiles__profile__unpack(NULL, len, raw);
  assert_non_null(d);
  assert_int_equal(w->n_strings, d->n_string_table);
  for (size_t i = 0; i < d->n_string_table; i++) {
    size_t n;
    const char *s = sp_pprof_wire_str(w, (int64_t)i, &n);
    /* protobuf-c's strings end at a NUL byte; the index keeps every byte. */
    assert_int_equal(strnlen(s, n), strlen(d->string_table[i]));
    assert_memory_equal(s, d->string_table[i], strlen(d->string_table[i]));
  }
  assert_int_equal(w->n_samples, d->n_sample);
  for (size_t i = 0; i < d->n_sample; i++) {
    const Perftools__Profiles__Sample *s = d->sample[i];
    sp_pw_label_t l[8];
    assert_int_equal(sp_pprof_wire_labels(w, i, l, 8), s->n_label);
    for (size_t j = 0; j < s->n_label && j < 8; j++) {
      assert_int_equal(l[j].key, s->label[j]->key);
      assert_int_equal(l[j].str, s->label[j]->str);
      assert_int_equal(l[j].num, s->label[j]->num);
      assert_int_equal(l[j].num_unit, s->label[j]->num_unit);
    }
    int64_t v[8];
    assert_int_equal(sp_pprof_wire_values(w, i, v, 8), s->n_value);
    for (size_t j = 0; j < s->n_value && j < 8; j++)
      assert_int_equal(v[j], s->value[j]);
  }
  assert_int_equal(w->n_sample_types, d->n_sample_type);
  for (size_t i = 0; i < d->n_sample_type; i++) {
    assert_int_equal(w->sample_types[i][0], d->sample_type[i]->type);
    assert_int_equal(w->sample_types[i][1], d->sample_type[i]->unit);
  }
  assert_int_equal(w->period_type[0], d->period_type ? d->period_type->type : 0);
  assert_int_equal(w->period_type[1], d->period_type ? d->period_type->unit : 0);
  assert_int_equal(w->period, d->period);
  assert_int_equal(w->time_nanos, d->time_nanos);
  assert_int_equal(w->duration_nanos, d->duration_nanos);
  perftools__profiles__profile__free_unpacked(d, NULL);
}

static void assert_index_matches_bytes(const uint8_t *raw, size_t len) {
  sp_arena_t *a = sp_arena_create(0);
  sp_pprof_wire_t w;
  assert_int_equal(sp_pprof_wire_index(a, raw, len, true, &w, NULL, 0), 0);
  assert_index_matches(&w, raw, len);
  sp_arena_destroy(a);
}

static void index_both_ways(const uint8_t *raw, size_t len) {
  for (int v = 0; v < 2; v++) {
    sp_arena_t *a = sp_arena_create(0);
    sp_pprof_wire_t w;
    char err[256];
    int rc = sp_pprof_wire_index(a, raw, len, v == 1, &w, err, sizeof(err));
    if (rc != 0)
      fail_msg("index (validate=%d): %s", v, err);
    assert_ptr_equal(w.raw, raw);
    assert_int_equal(w.len, len);
    assert_index_matches(&w, raw, len);
    sp_arena_destroy(a);
  }
}

/* Appends a hand-encoded field to a buffer. */
typedef struct wbuf_s {
  uint8_t b[4096];
  size_t n;
} wbuf_t;

static void wb_varint(wbuf_t *w, uint64_t v) {
  while (v >= 0x80) {
    w->b[w->n++] = (uint8_t)(v | 0x80);
    v >>= 7;
  }
  w->b[w->n++] = (uint8_t)v;
}
static void wb_key(wbuf_t *w, uint32_t num, int wt) { wb_varint(w, ((uint64_t)num << 3) | (unsigned)wt); }
static void wb_bytes(wbuf_t *w, uint32_t num, const void *p, size_t n) {
  wb_key(w, num, 2);
  wb_varint(w, n);
  memcpy(w->b + w->n, p, n);
  w->n += n;
}

/* ---- index -------------------------------------------------------------------------- */

static void test_index_matches_protobuf_c(void **state) {
  (void)state;
  size_t len;
  uint8_t *raw = fx_bytes(&len);
  index_both_ways(raw, len);
  sp_arena_t *a = sp_arena_create(0);
  sp_pprof_wire_t w;
  assert_int_equal(sp_pprof_wire_index(a, raw, len, true, &w, NULL, 0), 0);
  assert_int_equal(w.n_samples, NS);
  assert_int_equal(w.n_strings, NSTR);
  assert_int_equal(w.period, 10000000);
  assert_int_equal(w.time_nanos, 1700000000123456789);
  assert_int_equal(w.duration_nanos, 10000000000);
  assert_int_equal(w.period_type[0], 3);
  assert_int_equal(w.sample_types[1][1], 4);
  assert_int_equal(sp_pprof_wire_find(&w, "span_id", 7), 5);
  assert_int_equal(sp_pprof_wire_find(&w, "", 0), 0);
  assert_int_equal(sp_pprof_wire_find(&w, "nope", 4), -1);
  size_t n;
  assert_string_equal(sp_pprof_wire_str(&w, 99, &n), "");
  assert_int_equal(n, 0);
  assert_string_equal(sp_pprof_wire_str(&w, -1, &n), "");
  /* Samples: the field offsets frame exactly the payloads. */
  for (size_t i = 0; i < w.n_samples; i++) {
    assert_int_equal(raw[w.samples[i].field_off], (2 << 3) | 2);
    assert_true(w.samples[i].field_off < w.samples[i].off);
  }
  sp_arena_destroy(a);
  /* An empty buffer indexes (without validation) as an empty profile. */
  a = sp_arena_create(0);
  assert_int_equal(sp_pprof_wire_index(a, NULL, 0, false, &w, NULL, 0), 0);
  assert_int_equal(w.n_samples, 0);
  assert_int_equal(w.n_strings, 0);
  sp_arena_destroy(a);
  free(raw);
}

/* Samples whose location_ids and values come unpacked (one field per element), mixed. */
static void test_index_unpacked_values(void **state) {
  (void)state;
  size_t len;
  uint8_t *base = fx_bytes(&len);
  wbuf_t s = {.n = 0}, out = {.n = 0};
  wb_key(&s, 1, 0);
  wb_varint(&s, 2);
  wb_key(&s, 2, 0);
  wb_varint(&s, 7);
  wb_key(&s, 1, 0);
  wb_varint(&s, 3);
  wb_bytes(&s, 2, "", 0); /* an empty packed run counts nothing */
  s.b[s.n++] = (2 << 3) | 2;
  s.b[s.n++] = 1;
  s.b[s.n++] = 0x7f; /* packed [127] */
  wbuf_t lab = {.n = 0};
  wb_key(&lab, 1, 0);
  wb_varint(&lab, 5);
  wb_key(&lab, 2, 0);
  wb_varint(&lab, 6);
  wb_bytes(&s, 3, lab.b, lab.n);
  memcpy(out.b, base, len);
  out.n = len;
  wb_bytes(&out, 2, s.b, s.n);
  index_both_ways(out.b, out.n);
  sp_arena_t *a = sp_arena_create(0);
  sp_pprof_wire_t w;
  assert_int_equal(sp_pprof_wire_index(a, out.b, out.n, true, &w, NULL, 0), 0);
  int64_t v[4];
  assert_int_equal(sp_pprof_wire_values(&w, NS, v, 4), 2);
  assert_int_equal(v[0], 7);
  assert_int_equal(v[1], 127);
  sp_arena_destroy(a);
  free(base);
}

static void test_labels_longer_than_cap(void **state) {
  (void)state;
  size_t len;
  uint8_t *raw = fx_bytes(&len);
  sp_arena_t *a = sp_arena_create(0);
  sp_pprof_wire_t w;
  assert_int_equal(sp_pprof_wire_index(a, raw, len, false, &w, NULL, 0), 0);
  sp_pw_label_t l[3];
  memset(l, 0xab, sizeof(l));
  assert_int_equal(sp_pprof_wire_labels(&w, NS - 1, l, 1), 3);
  assert_int_equal(l[0].key, 5);
  assert_int_equal(l[0].str, 6);
  assert_int_equal(l[1].key, (int64_t)0xabababababababab); /* untouched */
  assert_int_equal(sp_pprof_wire_labels(&w, NS - 1, NULL, 0), 3);
  assert_int_equal(sp_pprof_wire_labels(&w, NS - 1, l, 3), 3);
  assert_int_equal(l[2].num, -12345);
  assert_int_equal(l[1].num_unit, 8);
  int64_t v[1];
  assert_int_equal(sp_pprof_wire_values(&w, 0, v, 1), 2);
  assert_int_equal(v[0], 1);
  assert_int_equal(sp_pprof_wire_labels(&w, NS, l, 3), 0); /* out of range */
  sp_arena_destroy(a);
  free(raw);
}

/* ---- splice ------------------------------------------------------------------------- */

static void test_splice_empty_reproduces_input(void **state) {
  (void)state;
  size_t len;
  uint8_t *raw = fx_bytes(&len);
  sp_arena_t *a = sp_arena_create(0);
  sp_pprof_wire_t w;
  assert_int_equal(sp_pprof_wire_index(a, raw, len, false, &w, NULL, 0), 0);
  sp_pprof_splice_t sp;
  sp_pprof_splice_init(&sp, &w);
  assert_true(sp_pprof_splice_empty(&sp));
  assert_int_equal(sp_pprof_splice_labels(&sp, 1, NULL, 0), 0);
  assert_true(sp_pprof_splice_empty(&sp));
  const uint8_t *out;
  size_t out_len;
  assert_int_equal(sp_pprof_splice_finish(&sp, a, &out, &out_len), 0);
  assert_int_equal(out_len, len);
  assert_memory_equal(out, raw, len);
  sp_pprof_splice_free(&sp);
  sp_pprof_splice_free(&sp); /* zeroed: fine */
  sp_arena_destroy(a);
  free(raw);
}

static void test_splice_labels_and_strings(void **state) {
  (void)state;
  size_t len;
  uint8_t *raw = fx_bytes(&len);
  sp_arena_t *a = sp_arena_create(0);
  sp_pprof_wire_t w;
  assert_int_equal(sp_pprof_wire_index(a, raw, len, false, &w, NULL, 0), 0);
  sp_pprof_splice_t sp;
  sp_pprof_splice_init(&sp, &w);
  int64_t k_name = sp_pprof_splice_string(&sp, "span_name", 9);
  int64_t v_name = sp_pprof_splice_string(&sp, "GET /x", 6);
  int64_t empty = sp_pprof_splice_string(&sp, "", 0);
  assert_int_equal(k_name, NSTR);
  assert_int_equal(v_name, NSTR + 1);
  assert_int_equal(empty, NSTR + 2);
  /* A long string: its length prefix takes two bytes. */
  char big[300];
  memset(big, 'x', sizeof(big));
  int64_t k_big = sp_pprof_splice_string(&sp, big, sizeof(big));
  assert_false(sp_pprof_splice_empty(&sp));
  sp_pw_label_t l1[2] = {{k_name, v_name, 0, 0}, {7, 0, -1, 8}};
  sp_pw_label_t l2[1] = {{k_big, 0, 0, 0}};
  sp_pw_label_t l3[1] = {{0, 0, 0, 0}}; /* all zero: an empty Label message */
  assert_int_equal(sp_pprof_splice_labels(&sp, 2, l1, 2), 0);
  assert_int_equal(sp_pprof_splice_labels(&sp, 0, l2, 1), 0);
  assert_int_equal(sp_pprof_splice_labels(&sp, 2, l2, 1), 0); /* again, later call */
  assert_int_equal(sp_pprof_splice_labels(&sp, 3, l3, 1), 0); /* a sample with no labels */
  assert_int_equal(sp_pprof_splice_labels(&sp, 2, l3, 1), 0);
  assert_int_equal(sp_pprof_splice_labels(&sp, NS, l3, 1), SP_EINVAL);
  /* Many labels on the last sample: its length prefix grows past one byte. */
  for (int i = 0; i < 40; i++)
    assert_int_equal(sp_pprof_splice_labels(&sp, NS - 1, l1, 1), 0);
  const uint8_t *out;
  size_t out_len;
  assert_int_equal(sp_pprof_splice_finish(&sp, a, &out, &out_len), 0);
  sp_pprof_splice_free(&sp);

  Perftools__Profiles__Profile *d = perftools__profiles__profile__unpack(NULL, out_len, out);
  assert_non_null(d);
  fx_t f;
  fx_init(&f);
  assert_int_equal(d->n_string_table, NSTR + 4);
  for (size_t i = 0; i < NSTR; i++)
    assert_string_equal(d->string_table[i], k_strings[i]);
  assert_string_equal(d->string_table[NSTR], "span_name");
  assert_string_equal(d->string_table[NSTR + 1], "GET /x");
  assert_string_equal(d->string_table[NSTR + 2], "");
  assert_int_equal(strlen(d->string_table[NSTR + 3]), sizeof(big));
  assert_int_equal(d->n_sample, NS);
  for (size_t i = 0; i < NS; i++) {
    const Perftools__Profiles__Sample *s = d->sample[i], *o = &f.s[i];
    /* Everything but the labels is as it was. */
    assert_int_equal(s->n_value, o->n_value);
    assert_memory_equal(s->value, o->value, o->n_value * sizeof(int64_t));
    assert_int_equal(s->n_location_id, o->n_location_id);
    assert_memory_equal(s->location_id, o->location_id, o->n_location_id * sizeof(uint64_t));
    size_t want_extra = i == 0 ? 1 : i == 2 ? 4 : i == 3 ? 1 : i == NS - 1 ? 40 : 0;
    assert_int_equal(s->n_label, o->n_label + want_extra);
    for (size_t j = 0; j < o->n_label; j++) {
      assert_int_equal(s->label[j]->key, o->label[j]->key);
      assert_int_equal(s->label[j]->str, o->label[j]->str);
      assert_int_equal(s->label[j]->num, o->label[j]->num);
      assert_int_equal(s->label[j]->num_unit, o->label[j]->num_unit);
    }
    Perftools__Profiles__Label *const *x = s->label + o->n_label;
    if (i == 0) {
      assert_int_equal(x[0]->key, k_big);
    } else if (i == 2) {
      assert_int_equal(x[0]->key, k_name);
      assert_int_equal(x[0]->str, v_name);
      assert_int_equal(x[1]->key, 7);
      assert_int_equal(x[1]->num, -1);
      assert_int_equal(x[1]->num_unit, 8);
      assert_int_equal(x[2]->key, k_big);
      assert_int_equal(x[3]->key, 0);
      assert_int_equal(x[3]->str, 0);
    } else if (i == NS - 1) {
      for (size_t j = 0; j < 40; j++)
        assert_int_equal(x[j]->str, v_name);
    }
  }
  /* The rest of the profile came through unchanged. */
  assert_int_equal(d->n_location, NL);
  assert_int_equal(d->n_function, NF);
  assert_int_equal(d->n_mapping, NM);
  assert_int_equal(d->period, f.p.period);
  assert_int_equal(d->time_nanos, f.p.time_nanos);
  perftools__profiles__profile__free_unpacked(d, NULL);

  /* The result indexes and validates; a canonical label encoding matches protobuf-c's. */
  sp_pprof_wire_t w2;
  char err[256];
  int rc = sp_pprof_wire_index(a, out, out_len, true, &w2, err, sizeof(err));
  if (rc != 0)
    fail_msg("%s", err);
  index_both_ways(out, out_len);
  sp_arena_destroy(a);
  free(raw);
}

/* The splice of the fixture equals protobuf-c's pack of the same edit when samples
 * are the last repeated field before the strings (canonical label bytes). */
static void test_splice_label_bytes_canonical(void **state) {
  (void)state;
  fx_t f;
  fx_init(&f);
  /* Only strings and samples, strings first: splicing appends after the samples. */
  f.p.n_location = f.p.n_function = f.p.n_mapping = 0;
  f.p.period_type = NULL;
  f.p.n_sample_type = 0;
  f.p.n_comment = 0;
  f.p.period = f.p.time_nanos = f.p.duration_nanos = f.p.default_sample_type = 0;
  for (int i = 0; i < NS; i++) {
    f.s[i].n_value = 0;
    f.s[i].n_location_id = 0;
  }
  size_t len;
  uint8_t *raw = pack(&f.p, &len);
  sp_arena_t *a = sp_arena_create(0);
  sp_pprof_wire_t w;
  assert_int_equal(sp_pprof_wire_index(a, raw, len, false, &w, NULL, 0), 0);
  sp_pprof_splice_t sp;
  sp_pprof_splice_init(&sp, &w);
  sp_pw_label_t l = {5, 6, -7, 8};
  assert_int_equal(sp_pprof_splice_labels(&sp, 0, &l, 1), 0);
  const uint8_t *out;
  size_t out_len;
  assert_int_equal(sp_pprof_splice_finish(&sp, a, &out, &out_len), 0);
  sp_pprof_splice_free(&sp);
  /* Same edit through protobuf-c. */
  Perftools__Profiles__Label extra = PERFTOOLS__PROFILES__LABEL__INIT, *lp[4];
  extra.key = 5, extra.str = 6, extra.num = -7, extra.num_unit = 8;
  for (size_t j = 0; j < f.s[0].n_label; j++)
    lp[j] = f.s[0].label[j];
  lp[f.s[0].n_label] = &extra;
  f.s[0].label = lp;
  f.s[0].n_label++;
  size_t want_len;
  uint8_t *want = pack(&f.p, &want_len);
  assert_int_equal(out_len, want_len);
  assert_memory_equal(out, want, want_len);
  free(want);
  sp_arena_destroy(a);
  free(raw);
}

/* ---- batch ------------------------------------------------------------------------- */

static void test_batch_wire(void **state) {
  (void)state;
  size_t len;
  uint8_t *raw = fx_bytes(&len);
  sp_profiles_t *b = sp_profiles_create();
  sp_profile_t *p = sp_profiles_add(b, NULL, 0, 0, 0, raw, len);
  assert_non_null(p);
  const sp_pprof_wire_t *w = sp_profile_wire(b, p);
  assert_non_null(w);
  assert_ptr_equal(sp_profile_wire(b, p), w); /* cached */
  assert_ptr_equal(w->raw, p->raw);
  assert_int_equal(sp_profiles_count_samples(b), NS);
  assert_null(p->pprof); /* counting did not decode */
  /* Edit the decoded form: the index is rebuilt from the re-encoding. */
  sp_pprof_t *d = sp_profile_decode(b, p);
  assert_non_null(d);
  d->n_sample = 2;
  p->modified = true;
  assert_int_equal(sp_profiles_count_samples(b), 2);
  const sp_pprof_wire_t *w2 = sp_profile_wire(b, p);
  assert_non_null(w2);
  assert_int_equal(w2->n_samples, 2);
  assert_false(p->modified);
  /* set_raw: a splice result replaces the bytes. */
  sp_pprof_splice_t sp;
  sp_pprof_splice_init(&sp, w2);
  int64_t k = sp_pprof_splice_string(&sp, "span_name", 9);
  sp_pw_label_t l = {k, k, 0, 0};
  assert_int_equal(sp_pprof_splice_labels(&sp, 1, &l, 1), 0);
  const uint8_t *out;
  size_t out_len;
  assert_int_equal(sp_pprof_splice_finish(&sp, b->arena, &out, &out_len), 0);
  sp_pprof_splice_free(&sp);
  sp_profile_set_raw(p, out, out_len);
  assert_null(p->wire);
  assert_null(p->pprof);
  const uint8_t *enc;
  size_t enc_len;
  assert_int_equal(sp_profile_encoded(b, p, &enc, &enc_len), 0);
  assert_ptr_equal(enc, out);
  const sp_pprof_wire_t *w3 = sp_profile_wire(b, p);
  assert_non_null(w3);
  assert_int_equal(w3->n_strings, NSTR + 1);
  sp_pw_label_t got[4];
  assert_int_equal(sp_pprof_wire_labels(w3, 1, got, 4), 2);
  assert_int_equal(got[1].key, k);
  /* A shared batch made writable: the copy gets its own index of its own bytes. */
  sp_profiles_t *shared = sp_profiles_ref(b);
  assert_int_equal(sp_profiles_writable(&shared), 0);
  assert_ptr_not_equal(shared, b);
  sp_profile_t *cp = &shared->items[0];
  assert_non_null(cp->wire);
  assert_ptr_not_equal(cp->wire, p->wire);
  assert_ptr_equal(cp->wire->raw, cp->raw);
  assert_int_equal(cp->wire->n_strings, NSTR + 1);
  assert_int_equal(sp_pprof_wire_labels(cp->wire, 1, got, 4), 2);
  assert_int_equal(got[1].key, k);
  sp_profiles_unref(shared);
  sp_profiles_unref(b);
  free(raw);
}

/* ---- validation -------------------------------------------------------------------- */

typedef void (*mutate_fn)(fx_t *f);

static void m_label_key(fx_t *f) { f->l[1][0].key = 99; }
static void m_label_str(fx_t *f) { f->l[2][0].str = NSTR; }
static void m_label_unit(fx_t *f) { f->l[2][1].num_unit = -1; }
static void m_sample_type(fx_t *f) { f->st[1].unit = 50; }
static void m_period_type(fx_t *f) { f->pt.type = 50; }
static void m_fn_name(fx_t *f) { f->fn[2].name = 1000; }
static void m_fn_sysname(fx_t *f) { f->fn[0].system_name = 14; }
static void m_map_file(fx_t *f) { f->map[1].filename = 77; }
static void m_map_build(fx_t *f) { f->map[0].build_id = -3; }
static void m_str0(fx_t *f) { f->strs[0] = "x"; }
static void m_no_strings(fx_t *f) { f->p.n_string_table = 0; }
static void m_no_strings_no_samples(fx_t *f) {
  f->p.n_string_table = 0;
  f->p.n_sample = 0;
}
static void m_values(fx_t *f) { f->s[3].n_value = 1; }
static void m_no_sample_types(fx_t *f) { f->p.n_sample_type = 0; }
static void m_unknown_loc(fx_t *f) { f->locids[4][1] = 9; }
static void m_loc_zero_ref(fx_t *f) { f->locids[1][0] = 0; }
static void m_dup_loc(fx_t *f) { f->loc[2].id = 2; }
static void m_zero_loc(fx_t *f) { f->loc[3].id = 0; }
static void m_unknown_fn(fx_t *f) { f->line[1].function_id = 4; }
static void m_zero_fn(fx_t *f) { f->line[0].function_id = 0; }
static void m_unknown_map(fx_t *f) { f->loc[3].mapping_id = 3; }
static void m_dup_fn(fx_t *f) { f->fn[0].id = 3; }
static void m_drop_frames(fx_t *f) { f->p.drop_frames = NSTR; }
static void m_keep_frames(fx_t *f) { f->p.keep_frames = -1; }
static void m_default_st(fx_t *f) { f->p.default_sample_type = 20; }
static void m_doc_url(fx_t *f) { f->p.doc_url = 20; }
static void m_comment(fx_t *f) { f->comment[0] = 20; }
/* IDs in another order: valid, through the sorted path. */
static void m_sparse_ids(fx_t *f) {
  for (int i = 0; i < NL; i++)
    f->loc[i].id = 100 - 10 * (uint64_t)i;
  for (int i = 0; i < NS; i++)
    for (int j = 0; j < 3; j++)
      f->locids[i][j] = 100 - 10 * (f->locids[i][j] - 1);
  f->fn[0].id = 7, f->fn[1].id = 5, f->fn[2].id = 6;
  for (int i = 0; i < NL; i++)
    f->line[i].function_id = f->fn[i % NF].id;
  f->map[0].id = 42, f->map[1].id = 41;
  for (int i = 0; i < NL; i++)
    f->loc[i].mapping_id = i < 2 ? 42 : 0;
}
static void m_sparse_bad_ref(fx_t *f) {
  m_sparse_ids(f);
  f->locids[5][2] = 95;
}
static void m_sparse_bad_fn(fx_t *f) {
  m_sparse_ids(f);
  f->line[3].function_id = 1;
}
static void m_sparse_bad_map(fx_t *f) {
  m_sparse_ids(f);
  f->loc[0].mapping_id = 1;
}
static void m_sparse_dup(fx_t *f) {
  m_sparse_ids(f);
  f->map[1].id = 42;
}
static void m_empty(fx_t *f) {
  (void)f;
}

static const struct {
  const char *name;
  mutate_fn fn;
  bool valid;
} k_cases[] = {
    {"fixture", m_empty, true},
    {"label key", m_label_key, false},
    {"label str", m_label_str, false},
    {"label num_unit", m_label_unit, false},
    {"sample_type unit", m_sample_type, false},
    {"period_type type", m_period_type, false},
    {"function name", m_fn_name, false},
    {"function system_name", m_fn_sysname, false},
    {"mapping filename", m_map_file, false},
    {"mapping build_id", m_map_build, false},
    {"string_table[0] not empty", m_str0, false},
    {"empty string table with samples", m_no_strings, false},
    {"empty string table, no samples", m_no_strings_no_samples, false},
    {"too few values", m_values, false},
    {"no sample types", m_no_sample_types, false},
    {"unknown location id", m_unknown_loc, false},
    {"location id 0 referenced", m_loc_zero_ref, false},
    {"duplicate location id", m_dup_loc, false},
    {"location id 0", m_zero_loc, false},
    {"unknown function id in a line", m_unknown_fn, false},
    {"function id 0 in a line", m_zero_fn, false},
    {"unknown mapping id", m_unknown_map, false},
    {"duplicate function id", m_dup_fn, false},
    {"drop_frames", m_drop_frames, false},
    {"keep_frames", m_keep_frames, false},
    {"default_sample_type", m_default_st, false},
    {"doc_url", m_doc_url, false},
    {"comment", m_comment, false},
    {"sparse ids", m_sparse_ids, true},
    {"sparse ids, unknown location", m_sparse_bad_ref, false},
    {"sparse ids, unknown function", m_sparse_bad_fn, false},
    {"sparse ids, unknown mapping", m_sparse_bad_map, false},
    {"sparse ids, duplicate mapping", m_sparse_dup, false},
};

/* Decode and index agree on @p raw: same code, same message; returns the code. */
static int assert_same_verdict(const uint8_t *raw, size_t len, const char *what) {
  char e1[256] = "", e2[256] = "";
  sp_arena_t *a1 = sp_arena_create(0), *a2 = sp_arena_create(0);
  sp_pprof_t *d = NULL;
  int r1 = sp_pprof_decode(a1, raw, len, &d, e1, sizeof(e1));
  sp_pprof_wire_t w;
  int r2 = sp_pprof_wire_index(a2, raw, len, true, &w, e2, sizeof(e2));
  if (r1 != r2 || strcmp(e1, e2) != 0)
    fail_msg("%s: decode %d \"%s\" vs index %d \"%s\"", what, r1, e1, r2, e2);
  if (r1 == 0) {
    assert_int_equal(w.n_samples, d->n_sample);
    assert_int_equal(w.n_strings, d->n_string_table);
    assert_int_equal(w.n_sample_types, d->n_sample_type);
    assert_index_matches(&w, raw, len); /* every sample's labels and values */
  }
  sp_arena_destroy(a1);
  sp_arena_destroy(a2);
  return r1;
}

static void test_validate_table(void **state) {
  (void)state;
  for (size_t i = 0; i < sizeof(k_cases) / sizeof(k_cases[0]); i++) {
    fx_t f;
    fx_init(&f);
    k_cases[i].fn(&f);
    size_t len;
    uint8_t *raw = pack(&f.p, &len);
    int rc = assert_same_verdict(raw, len, k_cases[i].name);
    if ((rc == 0) != k_cases[i].valid)
      fail_msg("%s: expected %s, got %d", k_cases[i].name, k_cases[i].valid ? "valid" : "invalid",
               rc);
    if (rc == 0)
      index_both_ways(raw, len);
    free(raw);
  }
}

/* Byte-level cases: framing the decoder refuses (or accepts). */
static void test_validate_framing(void **state) {
  (void)state;
  size_t len;
  uint8_t *base = fx_bytes(&len);
  wbuf_t b;
  char err[256];
  sp_arena_t *a = sp_arena_create(0);
  sp_pprof_wire_t w;
#define CASE(valid_, what_)                                                                        \
  do {                                                                                             \
    int rc_ = assert_same_verdict(b.b, b.n, what_);                                                \
    if ((rc_ == 0) != (valid_))                                                                    \
      fail_msg("%s: got %d", what_, rc_);                                                          \
  } while (0)
#define RESET()                                                                                    \
  do {                                                                                             \
    memcpy(b.b, base, len);                                                                        \
    b.n = len;                                                                                     \
  } while (0)
  /* Truncated anywhere inside the last field. */
  RESET();
  b.n = len - 1;
  CASE(false, "truncated");
  assert_int_equal(sp_pprof_wire_index(a, b.b, b.n, false, &w, err, sizeof(err)), SP_EPROTO);
  assert_string_equal(err, "not a pprof profile (malformed protobuf)");
  /* Wrong wire type for a known field: time_nanos as fixed64, sample as varint. */
  RESET();
  wb_key(&b, 9, 1);
  memset(b.b + b.n, 0, 8);
  b.n += 8;
  CASE(false, "time_nanos fixed64");
  RESET();
  wb_key(&b, 2, 0);
  wb_varint(&b, 1);
  CASE(false, "sample as varint");
  RESET();
  wb_key(&b, 6, 0);
  wb_varint(&b, 1);
  CASE(false, "string as varint");
  /* period_type twice: the later one replaces the earlier whole, so only its indices count. */
  RESET();
  wb_key(&b, 11, 2);
  wb_varint(&b, 3);
  b.b[b.n++] = 0x10; /* unit = 9999: outside the table */
  b.b[b.n++] = 0x8f;
  b.b[b.n++] = 0x4e;
  wb_key(&b, 11, 2);
  wb_varint(&b, 2);
  b.b[b.n++] = 0x08; /* type = 1 */
  b.b[b.n++] = 0x01;
  CASE(true, "bad period_type replaced by a good one");
  RESET();
  wb_key(&b, 11, 2);
  wb_varint(&b, 2);
  b.b[b.n++] = 0x08;
  b.b[b.n++] = 0x01;
  wb_key(&b, 11, 2);
  wb_varint(&b, 3);
  b.b[b.n++] = 0x10;
  b.b[b.n++] = 0x8f;
  b.b[b.n++] = 0x4e;
  CASE(false, "good period_type replaced by a bad one");
  /* Overlong varints: an 11-byte value, a 10-byte one whose last byte is > 1. */
  RESET();
  wb_key(&b, 12, 0);
  for (int i = 0; i < 10; i++)
    b.b[b.n++] = 0x80;
  b.b[b.n++] = 0;
  CASE(false, "11-byte varint");
  RESET();
  wb_key(&b, 12, 0);
  for (int i = 0; i < 9; i++)
    b.b[b.n++] = 0xff;
  b.b[b.n++] = 0x02;
  CASE(false, "10-byte varint overflowing");
  RESET();
  wb_key(&b, 12, 0);
  for (int i = 0; i < 9; i++)
    b.b[b.n++] = 0xff;
  b.b[b.n++] = 0x01;
  CASE(true, "10-byte varint (negative number)");
  /* A key of 6 bytes (protobuf-c takes at most 5) and of 5. */
  RESET();
  b.b[b.n++] = (12 << 3) | 0x80;
  for (int i = 0; i < 4; i++)
    b.b[b.n++] = 0x80;
  b.b[b.n++] = 0;
  b.b[b.n++] = 1;
  CASE(false, "6-byte key");
  RESET();
  b.b[b.n++] = (12 << 3) | 0x80;
  for (int i = 0; i < 3; i++)
    b.b[b.n++] = 0x80;
  b.b[b.n++] = 0;
  b.b[b.n++] = 1;
  CASE(true, "5-byte key");
  /* A 6-byte length prefix. */
  RESET();
  wb_key(&b, 6, 2);
  for (int i = 0; i < 5; i++)
    b.b[b.n++] = 0x80;
  b.b[b.n++] = 0;
  CASE(false, "6-byte length");
  /* Field number 0, wire types 3 and 6. */
  RESET();
  b.b[b.n++] = 0x00;
  CASE(false, "field 0");
  RESET();
  wb_key(&b, 40, 3);
  CASE(false, "group");
  RESET();
  wb_key(&b, 40, 6);
  CASE(false, "wire type 6");
  /* Unknown fields of every wire type are skipped; inside samples and labels too. */
  RESET();
  wb_key(&b, 40, 0);
  wb_varint(&b, 5);
  wb_key(&b, 41, 1);
  memset(b.b + b.n, 1, 8);
  b.n += 8;
  wb_key(&b, 42, 5);
  memset(b.b + b.n, 1, 4);
  b.n += 4;
  wb_bytes(&b, 43, "zz", 2);
  {
    wbuf_t s = {.n = 0}, l = {.n = 0};
    wb_key(&l, 9, 0);
    wb_varint(&l, 1);
    wb_bytes(&s, 3, l.b, l.n);
    wb_key(&s, 9, 2);
    wb_varint(&s, 0);
    wb_key(&s, 2, 0);
    wb_varint(&s, 1);
    wb_key(&s, 2, 0);
    wb_varint(&s, 1);
    wb_bytes(&b, 2, s.b, s.n);
  }
  CASE(true, "unknown fields");
  /* A packed run ending inside a varint. */
  RESET();
  {
    wbuf_t s = {.n = 0};
    uint8_t pk[] = {0x01, 0x81};
    wb_bytes(&s, 2, pk, 2);
    wb_bytes(&b, 2, s.b, s.n);
  }
  CASE(false, "packed run truncated");
  /* A label field sent as a varint; a label key sent as a string. */
  RESET();
  {
    wbuf_t s = {.n = 0};
    wb_key(&s, 3, 0);
    wb_varint(&s, 1);
    wb_bytes(&b, 2, s.b, s.n);
  }
  CASE(false, "label as varint");
  RESET();
  {
    wbuf_t s = {.n = 0}, l = {.n = 0};
    wb_bytes(&l, 1, "a", 1);
    wb_bytes(&s, 3, l.b, l.n);
    wb_bytes(&b, 2, s.b, s.n);
  }
  CASE(false, "label key as bytes");
  /* Repeated period_type: the later one wins whole (its 0 unit included). */
  RESET();
  {
    wbuf_t v = {.n = 0};
    wb_key(&v, 1, 0);
    wb_varint(&v, 1);
    wb_bytes(&b, 11, v.b, v.n);
  }
  CASE(true, "period_type twice");
  assert_int_equal(sp_pprof_wire_index(a, b.b, b.n, true, &w, NULL, 0), 0);
  assert_int_equal(w.period_type[0], 1);
  assert_int_equal(w.period_type[1], 0);
  /* Over the decode budget: many empty samples (2 bytes each). */
  {
    size_t n = 100000;
    uint8_t *big = malloc(len + 2 * n);
    memcpy(big, base, len);
    for (size_t i = 0; i < n; i++) {
      big[len + 2 * i] = (2 << 3) | 2;
      big[len + 2 * i + 1] = 0;
    }
    /* With the right value counts they are not valid anyway; the budget speaks first. */
    int rc = assert_same_verdict(big, len + 2 * n, "budget");
    assert_int_equal(rc, SP_ETOOBIG);
    free(big);
  }
#undef CASE
#undef RESET
  sp_arena_destroy(a);
  free(base);
}

static uint64_t rng_next(uint64_t *s) {
  uint64_t x = *s;
  x ^= x << 13;
  x ^= x >> 7;
  x ^= x << 17;
  return *s = x;
}

/*
 * The validating pass reads the common encodings of samples, locations and
 * lines without sp__next; the odd but valid encodings and the malformed ones
 * next to them must still get the decoder's verdict.
 */
static void append_msg(wbuf_t *b, uint32_t num, const wbuf_t *m) { wb_bytes(b, num, m->b, m->n); }

static void test_validate_fast_paths(void **state) {
  (void)state;
  size_t len;
  uint8_t *base = fx_bytes(&len);
  wbuf_t b, s, l;
  struct {
    const char *what;
    bool valid;
    const uint8_t *vals; /* the packed value payload */
    size_t n_vals;
    const uint8_t *ids; /* the packed location_id payload */
    size_t n_ids;
  } smp[] = {
      {"10-byte value", true, (const uint8_t *)"\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01\x05", 11,
       (const uint8_t *)"\x01\x02", 2},
      {"10-byte value overflowing", false,
       (const uint8_t *)"\xff\xff\xff\xff\xff\xff\xff\xff\xff\x02\x05", 11, (const uint8_t *)"\x01",
       1},
      {"11-byte value", false, (const uint8_t *)"\x80\x80\x80\x80\x80\x80\x80\x80\x80\x80\x00\x05",
       12, (const uint8_t *)"\x01", 1},
      {"value cut short", false, (const uint8_t *)"\x05\x85", 2, (const uint8_t *)"\x01", 1},
      {"three values", false, (const uint8_t *)"\x05\x06\x07", 3, (const uint8_t *)"\x01", 1},
      {"3-byte location id", true, (const uint8_t *)"\x05\x06", 2,
       (const uint8_t *)"\x81\x80\x00\x02", 4},
      {"location id 0", false, (const uint8_t *)"\x05\x06", 2, (const uint8_t *)"\x01\x00", 2},
      {"location id past the table", false, (const uint8_t *)"\x05\x06", 2,
       (const uint8_t *)"\x01\x80\x01", 3},
      {"location id cut short", false, (const uint8_t *)"\x05\x06", 2, (const uint8_t *)"\x01\x81",
       2},
  };
  for (size_t i = 0; i < sizeof(smp) / sizeof(smp[0]); i++) {
    memcpy(b.b, base, len);
    b.n = len;
    s.n = 0;
    wb_bytes(&s, 1, smp[i].ids, smp[i].n_ids);
    wb_bytes(&s, 2, smp[i].vals, smp[i].n_vals);
    append_msg(&b, 2, &s);
    int rc = assert_same_verdict(b.b, b.n, smp[i].what);
    if ((rc == 0) != smp[i].valid) fail_msg("%s: got %d", smp[i].what, rc);
  }
  /* Values split over two packed fields, and one sent unpacked. */
  memcpy(b.b, base, len);
  b.n = len;
  s.n = 0;
  wb_bytes(&s, 2, "\x05", 1);
  wb_key(&s, 2, 0);
  wb_varint(&s, 6);
  wb_bytes(&s, 1, "\x01", 1);
  append_msg(&b, 2, &s);
  assert_int_equal(assert_same_verdict(b.b, b.n, "values packed and unpacked"), 0);
  /* Packed values on both sides of a label (the values reader's fast path stops at none). */
  memcpy(b.b, base, len);
  b.n = len;
  s.n = 0;
  wb_bytes(&s, 1, "\x01", 1);
  wb_bytes(&s, 2, "\x05", 1);
  wb_bytes(&s, 3, "", 0);
  wb_bytes(&s, 2, "\x87\x01", 2);
  append_msg(&b, 2, &s);
  assert_int_equal(assert_same_verdict(b.b, b.n, "values around a label"), 0);

  /* A location appended as the next ID, its line payload varied. */
  struct {
    const char *what;
    bool valid;
    const uint8_t *line;
    size_t n_line;
    const uint8_t *addr; /* the address varint */
    size_t n_addr;
  } loc[] = {
      {"line with a column", true, (const uint8_t *)"\x08\x01\x10\x07\x18\x03", 6,
       (const uint8_t *)"\x10", 1},
      {"line with an unknown field", true, (const uint8_t *)"\x08\x01\x48\x07", 4,
       (const uint8_t *)"\x10", 1},
      {"line number as fixed32", false, (const uint8_t *)"\x08\x01\x15\x01\x02\x03\x04", 7,
       (const uint8_t *)"\x10", 1},
      {"line number overflowing", false,
       (const uint8_t *)"\x08\x01\x10\xff\xff\xff\xff\xff\xff\xff\xff\xff\x02", 13,
       (const uint8_t *)"\x10", 1},
      {"line cut short", false, (const uint8_t *)"\x08\x01\x10\x87", 4, (const uint8_t *)"\x10", 1},
      {"line without function", false, (const uint8_t *)"\x10\x07", 2, (const uint8_t *)"\x10", 1},
      {"line function past the table", false, (const uint8_t *)"\x08\x7f", 2,
       (const uint8_t *)"\x10", 1},
      {"10-byte address", true, (const uint8_t *)"\x08\x01", 2,
       (const uint8_t *)"\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01", 10},
      {"10-byte address overflowing", false, (const uint8_t *)"\x08\x01", 2,
       (const uint8_t *)"\xff\xff\xff\xff\xff\xff\xff\xff\xff\x02", 10},
      {"address cut short", false, (const uint8_t *)"\x08\x01", 2, (const uint8_t *)"\xff\xff", 2},
  };
  for (size_t i = 0; i < sizeof(loc) / sizeof(loc[0]); i++) {
    memcpy(b.b, base, len);
    b.n = len;
    l.n = 0;
    wb_key(&l, 1, 0);
    wb_varint(&l, NL + 1);
    wb_key(&l, 5, 0); /* is_folded */
    wb_varint(&l, 1);
    wb_bytes(&l, 4, loc[i].line, loc[i].n_line);
    wb_key(&l, 3, 0);
    memcpy(l.b + l.n, loc[i].addr, loc[i].n_addr);
    l.n += loc[i].n_addr;
    append_msg(&b, 4, &l);
    int rc = assert_same_verdict(b.b, b.n, loc[i].what);
    if ((rc == 0) != loc[i].valid) fail_msg("%s: got %d", loc[i].what, rc);
  }
  /* Over the decode budget in small samples and in small locations, read by the fast paths. */
  static const struct {
    const char *what;
    const char *field;
    size_t n;
  } big[] = {
      {"budget: samples", "\x12\x06\x0a\x01\x01\x12\x01\x05", 8},
      {"budget: locations", "\x22\x0a\x08\x01\x22\x00\x22\x02\x08\x01\x22\x00", 12},
      {"budget: labels", "\x12\x08\x1a\x02\x08\x05\x1a\x02\x10\x06", 10},
      {"budget: empty labels", "\x12\x04\x1a\x00\x1a\x00", 6},
      {"budget: strings", "\x32\x00", 2},
  };
  for (size_t i = 0; i < sizeof(big) / sizeof(big[0]); i++) {
    size_t n = 150000;
    uint8_t *raw = malloc(len + big[i].n * n);
    assert_non_null(raw);
    memcpy(raw, base, len);
    for (size_t j = 0; j < n; j++)
      memcpy(raw + len + j * big[i].n, big[i].field, big[i].n);
    int rc = assert_same_verdict(raw, len + big[i].n * n, big[i].what);
    if (rc != SP_ETOOBIG) fail_msg("%s: got %d", big[i].what, rc);
    /* Exactly at the edge: the fewest fields the decoder refuses as too big, and one fewer. */
    size_t lo = 0, hi = n;
    while (hi - lo > 1) {
      size_t mid = lo + (hi - lo) / 2;
      sp_arena_t *a = sp_arena_create(0);
      sp_pprof_t *d = NULL;
      if (sp_pprof_decode(a, raw, len + big[i].n * mid, &d, NULL, 0) == SP_ETOOBIG)
        hi = mid;
      else
        lo = mid;
      sp_arena_destroy(a);
    }
    assert_int_equal(assert_same_verdict(raw, len + big[i].n * hi, big[i].what), SP_ETOOBIG);
    assert_int_not_equal(assert_same_verdict(raw, len + big[i].n * lo, big[i].what), SP_ETOOBIG);
    free(raw);
  }
  free(base);
}

/*
 * Packed location IDs are checked 8 bytes at a time (IDs of 1-2 bytes
 * within 1..n), falling back to one varint at a time when a word is
 * inconclusive. Profiles with n locations around the word check's
 * thresholds (127 and multiples of 128), deep stacks of 1- and 2-byte IDs:
 * an ID just inside or outside the table at every position of a run, zero
 * in one and two bytes, 3-byte encodings, runs cut short; as the last bytes
 * of the input and not; then random byte edits inside the runs.
 */
static uint8_t *deep_profile(size_t n, uint64_t *seed, size_t *len) {
  Perftools__Profiles__Profile p = PERFTOOLS__PROFILES__PROFILE__INIT;
  Perftools__Profiles__ValueType st = PERFTOOLS__PROFILES__VALUE_TYPE__INIT, *stp = &st;
  st.type = 1, st.unit = 2;
  p.sample_type = &stp, p.n_sample_type = 1;
  static char *strs[] = {"", "samples", "count", "f"};
  p.string_table = strs, p.n_string_table = 4;
  Perftools__Profiles__Function fn = PERFTOOLS__PROFILES__FUNCTION__INIT, *fnp = &fn;
  fn.id = 1, fn.name = 3;
  p.function = &fnp, p.n_function = 1;
  Perftools__Profiles__Line line = PERFTOOLS__PROFILES__LINE__INIT, *linep = &line;
  line.function_id = 1;
  Perftools__Profiles__Location *loc = calloc(n, sizeof(*loc)), **locp = calloc(n, sizeof(*locp));
  assert_true(loc != NULL && locp != NULL);
  for (size_t i = 0; i < n; i++) {
    perftools__profiles__location__init(&loc[i]);
    loc[i].id = i + 1, loc[i].line = &linep, loc[i].n_line = 1;
    locp[i] = &loc[i];
  }
  p.location = locp, p.n_location = n;
  enum { NSMP = 24 };
  Perftools__Profiles__Sample smp[NSMP], *smpp[NSMP];
  uint64_t ids[NSMP][40];
  int64_t val = 1;
  static const uint64_t edge[] = {1, 2, 126, 127, 128, 129, 255, 256, 383, 384};
  for (int i = 0; i < NSMP; i++) {
    perftools__profiles__sample__init(&smp[i]);
    size_t d = 1 + (size_t)(rng_next(seed) % 40);
    for (size_t j = 0; j < d; j++) {
      uint64_t r = rng_next(seed);
      uint64_t id = r % 3 == 0 ? edge[(r >> 8) % 10] : r % 3 == 1 ? n - (r >> 8) % 3 : 1 + (r >> 8) % n;
      ids[i][j] = id >= 1 && id <= n ? id : 1;
    }
    smp[i].location_id = ids[i], smp[i].n_location_id = d;
    smp[i].value = &val, smp[i].n_value = 1;
    smpp[i] = &smp[i];
  }
  p.sample = smpp, p.n_sample = NSMP;
  uint8_t *raw = pack(&p, len);
  free(loc);
  free(locp);
  return raw;
}

/* Appends a sample whose location_id payload is @p ids (and one value), then @p pad bytes of an unknown field. */
static size_t append_sample(uint8_t *buf, size_t len, const uint8_t *ids, size_t n_ids, bool pad) {
  uint8_t *p = buf + len;
  size_t body = 2 + n_ids + 3;
  *p++ = 0x12;
  *p++ = (uint8_t)body; /* < 128 */
  *p++ = 0x0a;
  *p++ = (uint8_t)n_ids;
  memcpy(p, ids, n_ids);
  p += n_ids;
  memcpy(p, "\x12\x01\x05", 3);
  p += 3;
  if (pad) { /* field 100, a 9-byte varint */
    memcpy(p, "\xa0\x06\x81\x82\x83\x84\x85\x86\x87\x88\x01", 11);
    p += 11;
  }
  return (size_t)(p - buf);
}

/* Encodes @p v as a varint of exactly @p width bytes (padded with 0x80 continuation bytes). */
static size_t put_varint_width(uint8_t *p, uint64_t v, size_t width) {
  for (size_t i = 0; i + 1 < width; i++, v >>= 7)
    p[i] = (uint8_t)(v | 0x80);
  p[width - 1] = (uint8_t)v;
  return width;
}

static void test_validate_packed_location_words(void **state) {
  (void)state;
  static const size_t ns[] = {5, 126, 127, 128, 129, 200, 255, 256, 300, 383, 384, 385};
  uint64_t seed = 0x51ed2701f3a5c0ddull;
  size_t accepted = 0, total = 0;
  char what[96];
  for (size_t t = 0; t < sizeof(ns) / sizeof(ns[0]); t++) {
    size_t n = ns[t], len;
    uint8_t *base = deep_profile(n, &seed, &len);
    uint8_t *buf = malloc(len + 256);
    assert_non_null(buf);
    /* A run of 40 IDs with one changed at every position. */
    for (size_t pos = 0; pos < 40; pos++) {
      static const struct {
        const char *what;
        uint64_t id;  /* UINT64_MAX: n; UINT64_MAX - 1: n + 1 */
        size_t width; /* 0: shortest */
        bool valid;
      } subst[] = {
          {"n", UINT64_MAX, 0, true},          {"n + 1", UINT64_MAX - 1, 0, false},
          {"0", 0, 0, false},                   {"0 in 2 bytes", 0, 2, false},
          {"1 in 2 bytes", 1, 2, true},         {"1 in 3 bytes", 1, 3, true},
          {"n in 3 bytes", UINT64_MAX, 3, true}, {"2^14", 16384, 0, false},
      };
      for (size_t k = 0; k < sizeof(subst) / sizeof(subst[0]); k++) {
        uint8_t ids[160];
        size_t m = 0;
        for (size_t j = 0; j < 40; j++) {
          uint64_t id = 1 + (j * 37 + pos) % n, width = 0;
          if (j == pos) {
            id = subst[k].id == UINT64_MAX ? n : subst[k].id == UINT64_MAX - 1 ? n + 1 : subst[k].id;
            width = subst[k].width;
          }
          size_t wmin = id < 128 ? 1 : id < 16384 ? 2 : 3;
          m += put_varint_width(ids + m, id, width ? width : wmin);
        }
        for (int pad = 0; pad < 2; pad++) {
          memcpy(buf, base, len);
          size_t blen = append_sample(buf, len, ids, m, pad);
          snprintf(what, sizeof(what), "n %zu, run[%zu] = %s%s", n, pos, subst[k].what,
                   pad ? ", padded" : "");
          int rc = assert_same_verdict(buf, blen, what);
          if ((rc == 0) != subst[k].valid) fail_msg("%s: got %d", what, rc);
        }
      }
    }
    /* Short runs (the last word only), and runs cut short. */
    for (size_t m = 1; m <= 17; m++) {
      uint8_t ids[20];
      for (size_t j = 0; j < m; j++)
        ids[j] = (uint8_t)(j % 2 ? 0x81 : 1 + j % 4);
      for (int pad = 0; pad < 2; pad++) {
        memcpy(buf, base, len);
        size_t blen = append_sample(buf, len, ids, m, pad);
        snprintf(what, sizeof(what), "n %zu, short run of %zu bytes%s", n, m, pad ? ", padded" : "");
        assert_same_verdict(buf, blen, what);
      }
    }
    /* Byte edits inside the runs of the packed profile. */
    sp_arena_t *a = sp_arena_create(0);
    sp_pprof_wire_t w;
    assert_int_equal(sp_pprof_wire_index(a, base, len, false, &w, NULL, 0), 0);
    static const uint8_t vals[] = {0x00, 0x01, 0x7f, 0x80, 0x81, 0xff, 0x02, 0x03, 0x83};
    for (int it = 0; it < 150; it++) {
      memcpy(buf, base, len);
      const sp_pw_sample_t *sm = &w.samples[rng_next(&seed) % w.n_samples];
      const uint8_t *q = base + sm->off;
      assert_int_equal(q[0], 0x0a);
      size_t plen = q[1] & 0x7f, poff = sm->off + 2; /* payloads here are < 128 bytes */
      assert_true(q[1] < 0x80);
      int edits = 1 + (int)(rng_next(&seed) % 2);
      for (int e = 0; e < edits; e++) {
        uint64_t r = rng_next(&seed);
        size_t at = poff + (size_t)(r % plen);
        switch ((r >> 16) % 4) {
        case 0: buf[at] = vals[(r >> 24) % sizeof(vals)]; break;
        case 1: buf[at] = (uint8_t)(n >> 7) + (uint8_t)((r >> 24) % 3); break;
        case 2: buf[at] = (uint8_t)((n & 0x7f) | 0x80) + (uint8_t)((r >> 24) % 3); break;
        default: buf[at] = (uint8_t)(r >> 24); break;
        }
      }
      snprintf(what, sizeof(what), "n %zu, edit %d", n, it);
      accepted += assert_same_verdict(buf, len, what) == 0;
      total++;
    }
    sp_arena_destroy(a);
    free(buf);
    free(base);
  }
  print_message("packed location edits: %zu of %zu accepted\n", accepted, total);
  assert_true(accepted > total / 10);
  assert_true(accepted < total - total / 10);
}

static void test_validate_mutations(void **state) {
  (void)state;
  size_t len;
  fx_t f;
  fx_init(&f);
  uint8_t *base = pack(&f.p, &len);
  m_sparse_ids(&f);
  size_t slen;
  uint8_t *sparse = pack(&f.p, &slen);
  uint8_t *buf = malloc(len > slen ? len : slen);
  uint64_t seed = 0x9e3779b97f4a7c15ull;
  size_t accepted = 0;
  for (int it = 0; it < 4000; it++) {
    const uint8_t *src = it & 1 ? sparse : base;
    size_t n = it & 1 ? slen : len;
    memcpy(buf, src, n);
    int muts = 1 + (int)(rng_next(&seed) % 3);
    for (int m = 0; m < muts; m++) {
      uint64_t r = rng_next(&seed);
      switch (r % 4) {
      case 0: /* truncate */
        n = (size_t)(rng_next(&seed) % (n + 1));
        break;
      case 1: /* flip one bit */
        if (n > 0)
          buf[rng_next(&seed) % n] ^= (uint8_t)(1u << (r >> 8) % 8);
        break;
      case 2: /* set a byte */
        if (n > 0)
          buf[rng_next(&seed) % n] = (uint8_t)(r >> 16);
        break;
      default: /* small value change (indices, IDs) */
        if (n > 0)
          buf[rng_next(&seed) % n] += (uint8_t)(1 + (r >> 20) % 3);
        break;
      }
    }
    char what[64];
    snprintf(what, sizeof(what), "mutation %d", it);
    if (assert_same_verdict(buf, n, what) == 0) {
      accepted++;
      assert_index_matches_bytes(buf, n);
    }
    /* Without validation only the top level is framed: reading samples stays in bounds. */
    sp_arena_t *a = sp_arena_create(0);
    sp_pprof_wire_t w;
    if (sp_pprof_wire_index(a, buf, n, false, &w, NULL, 0) == 0) {
      for (size_t i = 0; i < w.n_samples; i++) {
        sp_pw_label_t l[4];
        int64_t v[4];
        sp_pprof_wire_labels(&w, i, l, 4);
        sp_pprof_wire_values(&w, i, v, 4);
      }
    }
    sp_arena_destroy(a);
  }
  print_message("mutations: %zu of 4000 accepted\n", accepted);
  /* Both outcomes were exercised. */
  assert_true(accepted > 50);
  assert_true(accepted < 3950);
  free(buf);
  free(sparse);
  free(base);
}

/* Out of memory: the arena's cap refuses the arrays. */

/* ---- pre-decoded labels, key summary, indexed splice ----------------------------------- */

/* The fixture with labels that fit sp_pw_plabel_t: string labels of two keys, positive numbers. */
static uint8_t *fx_plain_bytes(size_t *len) {
  fx_t f;
  fx_init(&f);
  for (int i = 0; i < NS; i++) {
    f.l[i][1].num = i + 1; /* key 7 ("thread_num"), numeric, no unit */
    f.l[i][1].num_unit = 0;
    f.l[i][2].key = 10, f.l[i][2].str = 11, f.l[i][2].num = 0; /* "foo" = "bar" */
  }
  /* The first sample carrying key 10 comes before the first carrying key 5 at that position. */
  f.lp[2][0] = &f.l[2][2];
  return pack(&f.p, len);
}

/* Two indexes of the same bytes are equal, pre-decoded parts included. */
static void assert_same_index(const sp_pprof_wire_t *a, const sp_pprof_wire_t *b) {
  assert_int_equal(a->len, b->len);
  assert_memory_equal(a->raw, b->raw, a->len);
  assert_int_equal(a->n_strings, b->n_strings);
  for (size_t i = 0; i < a->n_strings; i++) {
    assert_int_equal(a->strings[i].off, b->strings[i].off);
    assert_int_equal(a->strings[i].len, b->strings[i].len);
  }
  assert_int_equal(a->n_samples, b->n_samples);
  for (size_t i = 0; i < a->n_samples; i++) {
    assert_int_equal(a->samples[i].field_off, b->samples[i].field_off);
    assert_int_equal(a->samples[i].off, b->samples[i].off);
    assert_int_equal(a->samples[i].len, b->samples[i].len);
  }
  assert_int_equal(a->n_sample_types, b->n_sample_types);
  if (a->n_sample_types > 0)
    assert_memory_equal(a->sample_types, b->sample_types, a->n_sample_types * sizeof(int64_t[2]));
  assert_int_equal(a->period_type[0], b->period_type[0]);
  assert_int_equal(a->period_type[1], b->period_type[1]);
  assert_int_equal(a->period, b->period);
  assert_int_equal(a->time_nanos, b->time_nanos);
  assert_int_equal(a->duration_nanos, b->duration_nanos);
  assert_int_equal(a->plabels == NULL, b->plabels == NULL);
  if (a->plabels != NULL) {
    assert_memory_equal(a->plabel_start, b->plabel_start, (a->n_samples + 1) * sizeof(uint32_t));
    assert_memory_equal(a->plabels, b->plabels,
                        a->plabel_start[a->n_samples] * sizeof(sp_pw_plabel_t));
  }
  assert_int_equal(a->has_keys, b->has_keys);
  if (a->has_keys) {
    assert_int_equal(a->n_keys, b->n_keys);
    for (size_t i = 0; i < a->n_keys; i++) {
      assert_int_equal(a->keys[i].key, b->keys[i].key);
      assert_int_equal(a->keys[i].first_sample, b->keys[i].first_sample);
      assert_int_equal(a->keys[i].first_pos, b->keys[i].first_pos);
      assert_int_equal(a->keys[i].max_len, b->keys[i].max_len);
    }
  }
}

/* The key summary a pass over every sample's labels (decoded from the bytes) gives. */
static void assert_keys_exact(const sp_pprof_wire_t *w) {
  assert_true(w->has_keys);
  sp_arena_t *a = sp_arena_create(0);
  sp_pprof_wire_t plain;
  assert_int_equal(sp_pprof_wire_index(a, w->raw, w->len, false, &plain, NULL, 0), 0);
  assert_null(plain.plabels);
  sp_pw_keysum_t want[SP_PW_MAX_KEYS];
  size_t n = 0;
  for (size_t i = 0; i < plain.n_samples; i++) {
    sp_pw_label_t l[64];
    size_t nl = sp_pprof_wire_labels(&plain, i, l, 64);
    assert_true(nl <= 64);
    for (size_t j = 0; j < nl; j++) {
      if (l[j].key <= 0 || l[j].str <= 0)
        continue;
      size_t e = 0;
      while (e < n && want[e].key != l[j].key)
        e++;
      if (e == n) {
        assert_true(n < SP_PW_MAX_KEYS);
        want[n++] = (sp_pw_keysum_t){l[j].key, (uint32_t)i, (uint32_t)j, 0};
      }
      size_t vl;
      sp_pprof_wire_str(&plain, l[j].str, &vl);
      if (vl > want[e].max_len)
        want[e].max_len = (uint32_t)vl;
    }
  }
  assert_int_equal(w->n_keys, n);
  for (size_t i = 0; i < n; i++) {
    assert_int_equal(w->keys[i].key, want[i].key);
    assert_int_equal(w->keys[i].first_sample, want[i].first_sample);
    assert_int_equal(w->keys[i].first_pos, want[i].first_pos);
    assert_int_equal(w->keys[i].max_len, want[i].max_len);
  }
  sp_arena_destroy(a);
}

static void test_predecoded_labels(void **state) {
  (void)state;
  size_t len;
  /* The fixture has a label with a unit and a negative number: no pre-decoded labels. */
  uint8_t *raw = fx_bytes(&len);
  sp_arena_t *a = sp_arena_create(0);
  sp_pprof_wire_t w;
  assert_int_equal(sp_pprof_wire_index_ex(a, raw, len, SP_PW_VALIDATE | SP_PW_LABELS, &w, NULL, 0), 0);
  assert_null(w.plabels);
  assert_false(w.has_keys);
  assert_index_matches(&w, raw, len);
  free(raw);
  /* Labels that fit: the arrays agree with protobuf-c and with reading the bytes. */
  raw = fx_plain_bytes(&len);
  assert_int_equal(sp_pprof_wire_index_ex(a, raw, len, SP_PW_VALIDATE | SP_PW_LABELS, &w, NULL, 0), 0);
  assert_non_null(w.plabels);
  assert_non_null(w.plabel_start);
  assert_index_matches(&w, raw, len);
  assert_keys_exact(&w);
  assert_int_equal(w.n_keys, 2);
  assert_int_equal(w.keys[0].key, 5); /* sample 1 */
  assert_int_equal(w.keys[1].key, 10); /* sample 2 */
  /* SP_PW_LABELS without validation is ignored. */
  sp_pprof_wire_t w2;
  assert_int_equal(sp_pprof_wire_index_ex(a, raw, len, SP_PW_LABELS, &w2, NULL, 0), 0);
  assert_null(w2.plabels);
  assert_false(w2.has_keys);
  sp_arena_destroy(a);
  free(raw);
}

/* Every splice of the test, finished indexed, equals indexing the result afresh. */
static void splice_indexed_check(sp_pprof_splice_t *sp, sp_arena_t *a, bool expect_plabels) {
  const uint8_t *out;
  size_t out_len;
  sp_pprof_wire_t wi, fresh;
  assert_int_equal(sp_pprof_splice_finish_indexed(sp, a, &out, &out_len, &wi), 0);
  assert_ptr_equal(wi.raw, out);
  assert_int_equal(wi.len, out_len);
  char err[256];
  int rc = sp_pprof_wire_index_ex(a, out, out_len,
                                  SP_PW_VALIDATE | (sp->w->plabels ? SP_PW_LABELS : 0), &fresh,
                                  err, sizeof(err));
  if (rc != 0)
    fail_msg("%s", err);
  if (!expect_plabels) {
    assert_null(wi.plabels);
    assert_false(wi.has_keys);
    fresh.plabels = NULL;
    fresh.plabel_start = NULL;
    fresh.keys = NULL;
    fresh.n_keys = 0;
    fresh.has_keys = false;
  } else {
    assert_non_null(wi.plabels);
    assert_keys_exact(&wi);
  }
  assert_same_index(&wi, &fresh);
  assert_index_matches(&wi, out, out_len);

  /*
   * Without SP_PW_LABELS (the join's finish): the same bytes and index,
   * without pre-decoded labels; the key summary is kept and exact.
   */
  const uint8_t *out2;
  size_t out_len2;
  sp_pprof_wire_t wk;
  assert_int_equal(sp_pprof_splice_finish_indexed_ex(sp, a, 0, &out2, &out_len2, &wk), 0);
  assert_ptr_equal(wk.raw, out2);
  assert_int_equal(out_len2, out_len);
  assert_memory_equal(out2, out, out_len);
  assert_null(wk.plabels);
  assert_null(wk.plabel_start);
  assert_int_equal(wk.has_keys, wi.has_keys);
  if (wk.has_keys)
    assert_keys_exact(&wk);
  fresh.plabels = NULL;
  fresh.plabel_start = NULL;
  fresh.raw = out2;
  assert_same_index(&wk, &fresh);
  assert_index_matches(&wk, out2, out_len2);

  /*
   * A splice of that output (a second join): its key summary is extended
   * without pre-decoded labels (positions read from the bytes).
   */
  sp_pprof_splice_t sp2;
  sp_pprof_splice_init(&sp2, &wk);
  int64_t k2 = sp_pprof_splice_string(&sp2, "second", 6);
  int64_t v2 = sp_pprof_splice_string(&sp2, "pass", 4);
  assert_true(k2 > 0 && v2 > 0);
  sp_pw_label_t l2[1] = {{k2, v2, 0, 0}};
  if (wk.n_samples > 0) {
    assert_int_equal(sp_pprof_splice_labels(&sp2, wk.n_samples - 1, l2, 1), 0);
    assert_int_equal(sp_pprof_splice_labels(&sp2, 0, l2, 1), 0);
  }
  sp_pprof_wire_t w3;
  assert_int_equal(sp_pprof_splice_finish_indexed_ex(&sp2, a, 0, &out, &out_len, &w3), 0);
  assert_null(w3.plabels);
  assert_int_equal(w3.has_keys, wk.has_keys);
  if (w3.has_keys)
    assert_keys_exact(&w3);
  assert_index_matches(&w3, out, out_len);
  sp_pprof_splice_free(&sp2);
}

static void test_splice_indexed(void **state) {
  (void)state;
  size_t len;
  uint8_t *raws[2];
  size_t lens[2];
  raws[0] = fx_plain_bytes(&lens[0]);
  raws[1] = fx_bytes(&lens[1]);
  for (int r = 0; r < 2; r++) {
    for (int variant = 0; variant < 4; variant++) {
      sp_arena_t *a = sp_arena_create(0);
      sp_pprof_wire_t w;
      len = lens[r];
      assert_int_equal(
          sp_pprof_wire_index_ex(a, raws[r], len, SP_PW_VALIDATE | SP_PW_LABELS, &w, NULL, 0), 0);
      sp_pprof_splice_t sp;
      sp_pprof_splice_init(&sp, &w);
      bool fits = r == 0;
      if (variant == 0) {
        /* nothing added */
      } else if (variant == 1) {
        /* new key and value strings on some samples, the last one first; an existing key on
         * a sample before its first appearance; a long value */
        int64_t k = sp_pprof_splice_string(&sp, "span_name", 9);
        int64_t v = sp_pprof_splice_string(&sp, "GET /x", 6);
        char big[300];
        memset(big, 'y', sizeof(big));
        int64_t vb = sp_pprof_splice_string(&sp, big, sizeof(big));
        sp_pw_label_t l1[2] = {{k, v, 0, 0}, {5, vb, 0, 0}};
        sp_pw_label_t l2[1] = {{10, v, 0, 0}};
        assert_int_equal(sp_pprof_splice_labels(&sp, NS - 1, l1, 2), 0);
        assert_int_equal(sp_pprof_splice_labels(&sp, 0, l2, 1), 0);
        assert_int_equal(sp_pprof_splice_labels(&sp, 3, l1, 1), 0);
        assert_int_equal(sp_pprof_splice_labels(&sp, 0, l1, 2), 0); /* a second record for 0 */
        for (int i = 0; i < 40; i++) /* the last sample's length prefix grows */
          assert_int_equal(sp_pprof_splice_labels(&sp, NS - 1, l2, 1), 0);
      } else if (variant == 2) {
        /* strings only */
        assert_true(sp_pprof_splice_string(&sp, "x", 1) >= 0);
      } else {
        /* a label that does not fit a pre-decoded one: the output has none */
        sp_pw_label_t l[1] = {{7, 0, 3, 8}};
        assert_int_equal(sp_pprof_splice_labels(&sp, 1, l, 1), 0);
        fits = false;
      }
      splice_indexed_check(&sp, a, fits);
      sp_pprof_splice_free(&sp);
      sp_arena_destroy(a);
    }
  }
  free(raws[0]);
  free(raws[1]);
}

/*
 * One sequence of label additions, through sp_pprof_splice_labels (@p groups
 * false) or label groups: a group on several samples, out of sample order,
 * two groups on one sample (adjacent: one run), a group and plain labels on
 * one sample, an empty group. 0 or the first failing call's code.
 */
static int splice_sequence(sp_pprof_splice_t *sp, bool groups) {
  int64_t k = sp_pprof_splice_string(sp, "span_name", 9);
  int64_t v1 = sp_pprof_splice_string(sp, "GET /a", 6);
  int64_t v2 = sp_pprof_splice_string(sp, "GET /b", 6);
  if (k < 0 || v1 < 0 || v2 < 0)
    return SP_ENOMEM;
  const sp_pw_label_t a[2] = {{k, v1, 0, 0}, {5, v2, 0, 0}};
  const sp_pw_label_t b[1] = {{k, v2, 0, 0}};
  const sp_pw_label_t c[1] = {{10, 0, 7, 0}};
  static const struct {
    size_t sample;
    int which; /* 0 a, 1 b, 2 c, 3 empty */
  } seq[] = {{0, 0}, {1, 0}, {1, 1}, {3, 1}, {2, 0}, {4, 0}, {4, 2}, {5, 3}, {5, 1}, {0, 1}};
  const sp_pw_label_t *lists[4] = {a, b, c, NULL};
  const size_t lens[4] = {2, 1, 1, 0};
  int64_t g[4];
  if (groups) {
    for (int i = 0; i < 4; i++)
      if ((g[i] = sp_pprof_splice_group(sp, lists[i], lens[i])) < 0)
        return (int)g[i];
  }
  for (size_t i = 0; i < sizeof(seq) / sizeof(seq[0]); i++) {
    int w = seq[i].which;
    int rc = groups ? sp_pprof_splice_labels_group(sp, seq[i].sample, g[w])
                    : sp_pprof_splice_labels(sp, seq[i].sample, lists[w], lens[w]);
    if (rc != 0)
      return rc;
  }
  if (groups) { /* plain labels after a group on the same sample */
    return sp_pprof_splice_labels(sp, 0, c, 1);
  }
  return sp_pprof_splice_labels(sp, 0, c, 1);
}

/*
 * Label groups give exactly what the same labels added one call at a time
 * give (bytes, index, labels, key summary); bad handles are refused; out of
 * memory, a call fails whole.
 */
static void test_splice_groups(void **state) {
  (void)state;
  size_t len;
  uint8_t *raw = fx_plain_bytes(&len);
  sp_arena_t *a = sp_arena_create(0);
  sp_pprof_wire_t w;
  assert_int_equal(sp_pprof_wire_index_ex(a, raw, len, SP_PW_VALIDATE | SP_PW_LABELS, &w, NULL, 0), 0);
  assert_non_null(w.plabels);
  sp_pprof_splice_t s1, s2;
  sp_pprof_splice_init(&s1, &w);
  sp_pprof_splice_init(&s2, &w);
  assert_int_equal(splice_sequence(&s1, false), 0);
  assert_int_equal(splice_sequence(&s2, true), 0);
  assert_int_equal(sp_pprof_splice_labels_group(&s2, NS, 0), SP_EINVAL);
  assert_int_equal(sp_pprof_splice_labels_group(&s2, 0, 99), SP_EINVAL);
  assert_int_equal(sp_pprof_splice_labels_group(&s2, 0, -1), SP_EINVAL);
  const uint8_t *o1, *o2;
  size_t l1, l2;
  sp_pprof_wire_t w1, w2;
  assert_int_equal(sp_pprof_splice_finish_indexed(&s1, a, &o1, &l1, &w1), 0);
  assert_int_equal(sp_pprof_splice_finish_indexed(&s2, a, &o2, &l2, &w2), 0);
  assert_int_equal(l1, l2);
  assert_memory_equal(o1, o2, l1);
  assert_non_null(w2.plabels);
  w1.raw = o2;
  assert_same_index(&w2, &w1);
  assert_index_matches(&w2, o2, l2);
  assert_keys_exact(&w2);
  sp_pprof_splice_free(&s1);
  /* Out of memory at every step: each call succeeds whole or fails, and the rest is exact. */
  bool failed = false, whole = false;
  for (long n = 0; n < 40; n++) {
    sp_pprof_splice_t s3;
    sp_pprof_splice_init(&s3, &w);
    sp_alloc_set_fail_after(n);
    int rc = splice_sequence(&s3, true);
    sp_alloc_set_fail_after(-1);
    if (rc == 0) {
      const uint8_t *o3;
      size_t l3;
      assert_int_equal(sp_pprof_splice_finish(&s3, a, &o3, &l3), 0);
      assert_int_equal(l3, l2);
      assert_memory_equal(o3, o2, l2);
      whole = true;
    } else {
      assert_int_equal(rc, SP_ENOMEM);
      failed = true;
    }
    sp_pprof_splice_free(&s3);
  }
  assert_true(failed && whole);
  sp_pprof_splice_free(&s2);
  sp_arena_destroy(a);
  free(raw);
}

/*
 * A sample framed with a padded (non-minimal) key and length, as protobuf
 * allows: the splice re-frames it minimally, so the output shrinks there;
 * offsets, size and index stay exact, samples in order or not.
 */
static void test_splice_padded_framing(void **state) {
  (void)state;
  size_t len;
  uint8_t *base = fx_plain_bytes(&len);
  sp_arena_t *a = sp_arena_create(0);
  sp_pprof_wire_t w0;
  assert_int_equal(sp_pprof_wire_index(a, base, len, false, &w0, NULL, 0), 0);
  static wbuf_t b;
  memcpy(b.b, base, len);
  b.n = len;
  /* sample 0's payload again, its key and its length in 5 bytes each */
  b.b[b.n++] = 0x80 | ((2 << 3) | 2);
  b.b[b.n++] = 0x80;
  b.b[b.n++] = 0x80;
  b.b[b.n++] = 0x80;
  b.b[b.n++] = 0x00;
  uint32_t pl = w0.samples[0].len;
  for (int i = 0; i < 4; i++)
    b.b[b.n++] = (uint8_t)((pl >> (7 * i)) & 0x7f) | 0x80;
  b.b[b.n++] = (uint8_t)(pl >> 28);
  memcpy(b.b + b.n, base + w0.samples[0].off, pl);
  b.n += pl;
  for (int order = 0; order < 2; order++) {
    sp_pprof_wire_t w;
    char err[256];
    if (sp_pprof_wire_index_ex(a, b.b, b.n, SP_PW_VALIDATE | SP_PW_LABELS, &w, err, sizeof(err)) != 0)
      fail_msg("%s", err);
    assert_int_equal(w.n_samples, NS + 1);
    assert_non_null(w.plabels);
    sp_pprof_splice_t sp;
    sp_pprof_splice_init(&sp, &w);
    int64_t k = sp_pprof_splice_string(&sp, "span_name", 9);
    int64_t v = sp_pprof_splice_string(&sp, "x", 1);
    /* a key-only label (4 bytes) on the padded sample: its field shrinks by 4 */
    sp_pw_label_t l[1] = {{k, v, 0, 0}}, l0[1] = {{k, 0, 0, 0}};
    size_t seq[3] = {0, 1, NS};
    for (int i = 0; i < 3; i++) {
      size_t smp = seq[order ? 2 - i : i];
      assert_int_equal(sp_pprof_splice_labels(&sp, smp, smp == NS ? l0 : l, 1), 0);
    }
    splice_indexed_check(&sp, a, true);
    sp_pprof_splice_free(&sp);
  }
  sp_arena_destroy(a);
  free(base);
}

/* More distinct keys than the summary holds: labels pre-decoded, no summary (also after a splice). */
static void test_keys_overflow(void **state) {
  (void)state;
  Perftools__Profiles__Profile p;
  perftools__profiles__profile__init(&p);
  enum { NK = SP_PW_MAX_KEYS + 1 };
  char *strs[NK + 2];
  char names[NK][8];
  strs[0] = "";
  strs[1] = "v";
  for (int i = 0; i < NK; i++) {
    snprintf(names[i], sizeof(names[i]), "k%d", i);
    strs[2 + i] = names[i];
  }
  p.string_table = strs;
  p.n_string_table = NK + 2;
  Perftools__Profiles__Label l[NK], *lp[NK];
  for (int i = 0; i < NK; i++) {
    perftools__profiles__label__init(&l[i]);
    l[i].key = 2 + i;
    l[i].str = 1;
    lp[i] = &l[i];
  }
  Perftools__Profiles__Sample s, *sp_[1] = {&s};
  perftools__profiles__sample__init(&s);
  s.label = lp;
  s.n_label = NK - 1; /* exactly the maximum */
  p.sample = sp_;
  p.n_sample = 1;
  size_t len;
  uint8_t *raw = pack(&p, &len);
  sp_arena_t *a = sp_arena_create(0);
  sp_pprof_wire_t w;
  assert_int_equal(sp_pprof_wire_index_ex(a, raw, len, SP_PW_VALIDATE | SP_PW_LABELS, &w, NULL, 0), 0);
  assert_true(w.has_keys);
  assert_int_equal(w.n_keys, SP_PW_MAX_KEYS);
  assert_keys_exact(&w);
  /* One more key through a splice: the output has labels but no summary. */
  sp_pprof_splice_t sp;
  sp_pprof_splice_init(&sp, &w);
  sp_pw_label_t add[1] = {{2 + NK - 1, 1, 0, 0}};
  assert_int_equal(sp_pprof_splice_labels(&sp, 0, add, 1), 0);
  const uint8_t *out;
  size_t out_len;
  sp_pprof_wire_t wo;
  assert_int_equal(sp_pprof_splice_finish_indexed(&sp, a, &out, &out_len, &wo), 0);
  assert_non_null(wo.plabels);
  assert_false(wo.has_keys);
  sp_pprof_splice_free(&sp);
  free(raw);
  s.n_label = NK;
  raw = pack(&p, &len);
  assert_int_equal(sp_pprof_wire_index_ex(a, raw, len, SP_PW_VALIDATE | SP_PW_LABELS, &w, NULL, 0), 0);
  assert_non_null(w.plabels);
  assert_false(w.has_keys);
  assert_index_matches(&w, raw, len);
  sp_arena_destroy(a);
  free(raw);
}


/* Samples of every payload length from 0 to 90 bytes, each given 1 to 9 labels: the splice's
 * short copies are exact at every size (checked against protobuf-c's decode). */
static void test_splice_every_size(void **state) {
  (void)state;
  enum { N = 91 };
  Perftools__Profiles__Profile p;
  perftools__profiles__profile__init(&p);
  char *strs[] = {"", "k", "v"};
  p.string_table = strs;
  p.n_string_table = 3;
  static Perftools__Profiles__Sample smp[N], *sp_[N];
  static uint64_t ids[N][N];
  for (size_t i = 0; i < N; i++) {
    perftools__profiles__sample__init(&smp[i]);
    /* packed location_id: a 1-byte key, 1-byte length, i - 2 one-byte IDs (none for i < 2) */
    smp[i].n_location_id = i >= 2 ? i - 2 : 0;
    for (size_t j = 0; j < smp[i].n_location_id; j++)
      ids[i][j] = 0; /* no locations: the index need not validate */
    smp[i].location_id = ids[i];
    sp_[i] = &smp[i];
  }
  p.sample = sp_;
  p.n_sample = N;
  size_t len;
  uint8_t *raw = pack(&p, &len);
  sp_arena_t *a = sp_arena_create(0);
  sp_pprof_wire_t w;
  assert_int_equal(sp_pprof_wire_index(a, raw, len, false, &w, NULL, 0), 0);
  sp_pprof_splice_t spl;
  sp_pprof_splice_init(&spl, &w);
  sp_pw_label_t l[9];
  for (size_t j = 0; j < 9; j++)
    l[j] = (sp_pw_label_t){1, 2, 0, 0};
  for (size_t i = 0; i < N; i++)
    assert_int_equal(sp_pprof_splice_labels(&spl, i, l, 1 + i % 9), 0);
  const uint8_t *out;
  size_t out_len;
  sp_pprof_wire_t wo;
  assert_int_equal(sp_pprof_splice_finish_indexed(&spl, a, &out, &out_len, &wo), 0);
  sp_pprof_splice_free(&spl);
  Perftools__Profiles__Profile *d = perftools__profiles__profile__unpack(NULL, out_len, out);
  assert_non_null(d);
  assert_int_equal(d->n_sample, N);
  for (size_t i = 0; i < N; i++) {
    assert_int_equal(d->sample[i]->n_location_id, smp[i].n_location_id);
    assert_int_equal(d->sample[i]->n_label, 1 + i % 9);
    for (size_t j = 0; j < d->sample[i]->n_label; j++) {
      assert_int_equal(d->sample[i]->label[j]->key, 1);
      assert_int_equal(d->sample[i]->label[j]->str, 2);
    }
  }
  perftools__profiles__profile__free_unpacked(d, NULL);
  assert_index_matches(&wo, out, out_len);
  sp_arena_destroy(a);
  free(raw);
}


/* A batch's pre-decoded labels and key summary: set_raw_indexed installs a splice's index, a
 * writable copy gets its own copy of them (in its own arena), equal to the original. */
static void test_batch_wire_labels(void **state) {
  (void)state;
  size_t len;
  uint8_t *raw = fx_plain_bytes(&len);
  sp_profiles_t *b = sp_profiles_create();
  sp_profile_t *p = sp_profiles_add(b, NULL, 0, 0, 0, raw, len);
  assert_non_null(p);
  sp_pprof_wire_t *w = sp_arena_alloc(b->arena, sizeof(*w));
  assert_non_null(w);
  assert_int_equal(sp_pprof_wire_index_ex(b->arena, p->raw, p->raw_len,
                                          SP_PW_VALIDATE | SP_PW_LABELS, w, NULL, 0),
                   0);
  p->wire = w;
  sp_pprof_splice_t sp;
  sp_pprof_splice_init(&sp, w);
  int64_t k = sp_pprof_splice_string(&sp, "span_name", 9);
  sp_pw_label_t l = {k, k, 0, 0};
  assert_int_equal(sp_pprof_splice_labels(&sp, 1, &l, 1), 0);
  const uint8_t *out;
  size_t out_len;
  sp_pprof_wire_t *nw = sp_arena_alloc(b->arena, sizeof(*nw));
  assert_non_null(nw);
  assert_int_equal(sp_pprof_splice_finish_indexed(&sp, b->arena, &out, &out_len, nw), 0);
  sp_pprof_splice_free(&sp);
  sp_profile_set_raw_indexed(p, out, out_len, nw);
  assert_ptr_equal(sp_profile_wire(b, p), nw); /* installed, not rebuilt */
  assert_non_null(nw->plabels);
  assert_true(nw->has_keys);
  sp_profiles_t *shared = sp_profiles_ref(b);
  assert_int_equal(sp_profiles_writable(&shared), 0);
  assert_ptr_not_equal(shared, b);
  const sp_pprof_wire_t *cw = shared->items[0].wire;
  assert_non_null(cw);
  assert_ptr_equal(cw->raw, shared->items[0].raw);
  assert_ptr_not_equal(cw->plabels, nw->plabels);
  assert_ptr_not_equal(cw->plabel_start, nw->plabel_start);
  assert_ptr_not_equal(cw->keys, nw->keys);
  assert_same_index(cw, nw);
  sp_profiles_unref(shared);
  sp_profiles_unref(b);
  free(raw);
}

static void test_index_enomem(void **state) {
  (void)state;
  size_t len;
  uint8_t *raw = fx_bytes(&len);
  sp_arena_t *a = sp_arena_create(0);
  sp_arena_set_limit(a, 1);
  sp_pprof_wire_t w;
  char err[128];
  assert_int_equal(sp_pprof_wire_index(a, raw, len, true, &w, err, sizeof(err)), SP_ENOMEM);
  assert_true(sp_arena_limited(a));
  sp_arena_destroy(a);
  free(raw);
  /* Pre-decoded labels are optional: short of memory for them, the index comes without. */
  raw = fx_plain_bytes(&len);
  bool with = false, without = false;
  for (long n = 0; n < 100 && !with; n++) {
    a = sp_arena_create(0);
    sp_alloc_set_fail_after(n);
    int rc = sp_pprof_wire_index_ex(a, raw, len, SP_PW_VALIDATE | SP_PW_LABELS, &w, err,
                                    sizeof(err));
    sp_alloc_set_fail_after(-1);
    if (rc == 0) {
      assert_index_matches(&w, raw, len);
      if (w.plabels != NULL) {
        with = true;
        if (w.has_keys)
          assert_keys_exact(&w);
      } else {
        without = true;
      }
    } else {
      assert_int_equal(rc, SP_ENOMEM);
    }
    sp_arena_destroy(a);
  }
  assert_true(with);
  assert_true(without);
  free(raw);
}

/*
 * Labels added after a finish that sorted out-of-order adds: the next
 * finish's size must count them (here they push a sample's length prefix to
 * two bytes; the stale count overflowed the output under ASan).
 */
static void test_splice_add_after_finish(void **state) {
  (void)state;
  uint8_t buf[512], *p = buf;
  *p++ = 0x0a; /* sample_type {} */
  *p++ = 0;
  for (int s = 0; s < 3; s++) {
    size_t pl = s == 2 ? 112 : 6;
    *p++ = 0x12;
    *p++ = (uint8_t)pl;
    static const uint8_t ids[] = {0x0a, 1, 1, 0x12, 1, 1}; /* location_id 1, value 1 */
    memcpy(p, ids, sizeof(ids));
    p += sizeof(ids);
    for (size_t i = 6; i < pl; i += 2) { /* unknown field 15 to make it long */
      *p++ = 0x78;
      *p++ = 0;
    }
  }
  static const uint8_t tail[] = {0x22, 2,   0x08, 1,   0x32, 0,   0x32, 1,   'k', 0x32,
                                 9,    'v', 'v',  'v', 'v',  'v', 'v',  'v', 'v', 'v'};
  /* location 1; strings "", "k", "vvvvvvvvv": 152 bytes, so that the stale size (152 + 24)
   * filled its arena chunk exactly and the byte past it was written outside */
  memcpy(p, tail, sizeof(tail));
  p += sizeof(tail);
  size_t len = (size_t)(p - buf);
  sp_arena_t *a = sp_arena_create(0);
  sp_pprof_wire_t w, r;
  char err[200];
  assert_int_equal(sp_pprof_wire_index(a, buf, len, true, &w, err, sizeof(err)), 0);
  sp_pprof_splice_t sp;
  sp_pprof_splice_init(&sp, &w);
  sp_pw_label_t l = {.key = 1, .str = 2}; /* 6 bytes as a Sample field */
  const uint8_t *out;
  size_t out_len;
  assert_int_equal(sp_pprof_splice_labels(&sp, 2, &l, 1), 0);
  assert_int_equal(sp_pprof_splice_labels(&sp, 0, &l, 1), 0);
  assert_int_equal(sp_pprof_splice_labels(&sp, 2, &l, 1), 0);
  assert_int_equal(sp_pprof_splice_finish(&sp, a, &out, &out_len), 0);
  assert_int_equal(out_len, len + 3 * 6);
  assert_int_equal(sp_pprof_splice_labels(&sp, 2, &l, 1), 0); /* sample 2: 130 bytes */
  sp_arena_t *a2 = sp_arena_create(64); /* the output in a chunk of exactly its computed size */
  assert_int_equal(sp_pprof_splice_finish(&sp, a2, &out, &out_len), 0);
  assert_int_equal(out_len, len + 4 * 6 + 1);
  assert_int_equal(sp_pprof_wire_index(a, out, out_len, true, &r, err, sizeof(err)), 0);
  sp_pw_label_t got[4];
  assert_int_equal(sp_pprof_wire_labels(&r, 2, got, 4), 3);
  assert_int_equal(sp_pprof_wire_labels(&r, 0, got, 4), 1);
  sp_pprof_splice_free(&sp);
  sp_arena_destroy(a2);
  sp_arena_destroy(a);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_index_matches_protobuf_c),
      cmocka_unit_test(test_index_unpacked_values),
      cmocka_unit_test(test_labels_longer_than_cap),
      cmocka_unit_test(test_splice_empty_reproduces_input),
      cmocka_unit_test(test_splice_labels_and_strings),
      cmocka_unit_test(test_splice_label_bytes_canonical),
      cmocka_unit_test(test_batch_wire),
      cmocka_unit_test(test_validate_table),
      cmocka_unit_test(test_validate_framing),
      cmocka_unit_test(test_validate_fast_paths),
      cmocka_unit_test(test_validate_mutations),
      cmocka_unit_test(test_validate_packed_location_words),
      cmocka_unit_test(test_index_enomem),
      cmocka_unit_test(test_predecoded_labels),
      cmocka_unit_test(test_splice_indexed),
      cmocka_unit_test(test_splice_groups),
      cmocka_unit_test(test_splice_padded_framing),
      cmocka_unit_test(test_keys_overflow),
      cmocka_unit_test(test_splice_every_size),
      cmocka_unit_test(test_batch_wire_labels),
      cmocka_unit_test(test_splice_add_after_finish),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
