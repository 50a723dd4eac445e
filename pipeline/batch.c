/*
 * batch.c — reference-counted traces and profiles batches (see batch.h).
 */
#include "pipeline/batch.h"

#include "pipeline/alloc.h"
#include "pipeline/error.h"
#include "pipeline/pbscan.h"
#include "pipeline/pprofwire.h"

#include <stdio.h>
#include <string.h>
#include <uv.h>

/* ---- traces ----------------------------------------------------------------- */

typedef struct sp_traces_scan_s {
  size_t spans;
  size_t invalid;
  int cur_ids; /* bit 0: the current span has a non-zero trace_id, bit 1: span_id */
} sp_traces_scan_t;

static bool sp__nonzero(const uint8_t *p, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (p[i] != 0)
      return true;
  return false;
}

/* Called when a span ends (the next one starts, or the scan ends). */
static void sp__scan_span_done(sp_traces_scan_t *st) {
  if (st->spans > 0 && st->cur_ids != 3)
    st->invalid++;
  st->cur_ids = 0;
}

/*
 * Checks ID lengths and counts spans during the wire scan. The scan calls
 * this only for ScopeSpans, Span and Span.Link fields (see sp__scan_only);
 * fields are told apart by number (Span: trace_id 1, span_id 2,
 * parent_span_id 4; Link: trace_id 1, span_id 2).
 */
static int sp__traces_scan_cb(sp_pbscan_t *scan, const ProtobufCMessageDescriptor *msg,
                              const ProtobufCFieldDescriptor *f, const uint8_t *data, size_t len,
                              void *ctx) {
  sp_traces_scan_t *st = ctx;
  if (msg == &opentelemetry__proto__trace__v1__scope_spans__descriptor) {
    if (f->id == 2) {
      sp__scan_span_done(st);
      st->spans++;
    }
    return 0;
  }
  bool span = msg == &opentelemetry__proto__trace__v1__span__descriptor;
  size_t want;
  if (f->id == 1)
    want = 16;
  else if (f->id == 2 || (span && f->id == 4))
    want = 8;
  else
    return 0;
  if (len != 0 && len != want)
    return sp_pbscan_fail(scan, "%s must be %zu bytes, got %zu", f->name, want, len);
  if (span && f->id <= 2 && sp__nonzero(data, len))
    st->cur_ids |= f->id == 1 ? 1 : 2;
  return 0;
}

/* The message types whose fields sp__traces_scan_cb looks at. */
static const ProtobufCMessageDescriptor *const sp__scan_only[] = {
    &opentelemetry__proto__trace__v1__scope_spans__descriptor,
    &opentelemetry__proto__trace__v1__span__descriptor,
    &opentelemetry__proto__trace__v1__span__link__descriptor,
};

static sp_traces_t *sp__traces_new(void) {
  sp_traces_t *self = sp_calloc(1, sizeof(*self));
  if (self == NULL)
    return NULL;
  self->arena = sp_arena_create(0);
  if (self->arena == NULL) {
    sp_free(self);
    return NULL;
  }
  self->refcnt = 1;
  self->received_ns = uv_hrtime();
  return self;
}

int sp_traces_from_proto(uint8_t *buf, size_t len, bool copy, sp_traces_t **out, char *err,
                         size_t errlen) {
  sp_traces_scan_t st = {0};
  sp_traces_t *self = NULL;
  int rc = sp_pbscan_only(
      &opentelemetry__proto__collector__trace__v1__export_trace_service_request__descriptor, buf,
      len, sp__traces_scan_cb, &st, sp__scan_only, 3, err, errlen);
  if (rc != 0)
    goto fail;
  sp__scan_span_done(&st);
  rc = SP_ENOMEM;
  self = sp__traces_new();
  if (self == NULL)
    goto fail;
  if (copy) {
    self->raw = sp_malloc(len > 0 ? len : 1);
    if (self->raw == NULL)
      goto fail;
    if (len > 0)
      memcpy(self->raw, buf, len);
  } else {
    self->raw = buf;
    buf = NULL;
  }
  self->raw_len = len;
  self->span_count = st.spans;
  self->invalid_spans = st.invalid;
  *out = self;
  return 0;
fail:
  if (!copy)
    sp_free(buf);
  sp_traces_unref(self);
  if (rc == SP_ENOMEM && err != NULL && errlen > 0)
    snprintf(err, errlen, "out of memory");
  return rc;
}

sp_traces_t *sp_traces_wrap(uint8_t *buf, size_t len, size_t span_count) {
  sp_traces_t *self = sp__traces_new();
  if (self == NULL) {
    sp_free(buf);
    return NULL;
  }
  self->raw = buf;
  self->raw_len = len;
  self->span_count = span_count;
  return self;
}

static bool sp__span_ids_ok(const sp_otlp_span_t *s) {
  return s->trace_id.len == 16 && s->span_id.len == 8 &&
         sp__nonzero(s->trace_id.data, 16) && sp__nonzero(s->span_id.data, 8);
}

int sp_traces_drop_invalid(sp_traces_t **batch, size_t *dropped) {
  *dropped = 0;
  const sp_otlp_traces_req_t *ro = sp_traces_request(*batch);
  if (ro == NULL)
    return SP_ENOMEM;
  size_t bad = 0;
  for (size_t i = 0; i < ro->n_resource_spans; i++)
    for (size_t j = 0; j < ro->resource_spans[i]->n_scope_spans; j++) {
      const sp_otlp_scope_spans_t *ss = ro->resource_spans[i]->scope_spans[j];
      for (size_t k = 0; k < ss->n_spans; k++)
        bad += !sp__span_ids_ok(ss->spans[k]);
    }
  (*batch)->invalid_spans = 0;
  if (bad == 0)
    return 0;
  if (sp_traces_writable(batch) != 0)
    return SP_ENOMEM;
  sp_otlp_traces_req_t *req = (*batch)->req;
  for (size_t i = 0; i < req->n_resource_spans; i++)
    for (size_t j = 0; j < req->resource_spans[i]->n_scope_spans; j++) {
      sp_otlp_scope_spans_t *ss = req->resource_spans[i]->scope_spans[j];
      size_t w = 0;
      for (size_t k = 0; k < ss->n_spans; k++)
        if (sp__span_ids_ok(ss->spans[k]))
          ss->spans[w++] = ss->spans[k];
      ss->n_spans = w;
    }
  (*batch)->span_count -= bad;
  *dropped = bad;
  return 0;
}

size_t sp_traces_count_spans(const sp_otlp_traces_req_t *req) {
  size_t n = 0;
  for (size_t i = 0; i < req->n_resource_spans; i++) {
    const sp_otlp_resource_spans_t *rs = req->resource_spans[i];
    for (size_t j = 0; j < rs->n_scope_spans; j++)
      n += rs->scope_spans[j]->n_spans;
  }
  return n;
}

sp_traces_t *sp_traces_from_request(sp_arena_t *arena, sp_otlp_traces_req_t *req) {
  sp_traces_t *self = sp_calloc(1, sizeof(*self));
  if (self == NULL) {
    sp_arena_destroy(arena);
    return NULL;
  }
  self->refcnt = 1;
  self->arena = arena;
  self->req = req;
  self->span_count = sp_traces_count_spans(req);
  self->received_ns = uv_hrtime();
  return self;
}

sp_traces_t *sp_traces_ref(sp_traces_t *self) {
  self->refcnt++;
  return self;
}

void sp_traces_unref(sp_traces_t *self) {
  if (self == NULL || --self->refcnt > 0)
    return;
  sp_free(self->raw);
  sp_free(self->enc);
  sp_arena_destroy(self->arena);
  sp_free(self);
}

const sp_otlp_traces_req_t *sp_traces_request(sp_traces_t *self) {
  if (self->req != NULL)
    return self->req;
  const uint8_t *bytes = self->raw != NULL ? self->raw : self->enc;
  size_t len = self->raw != NULL ? self->raw_len : self->enc_len;
  self->req = opentelemetry__proto__collector__trace__v1__export_trace_service_request__unpack(
      sp_arena_pbc(self->arena), len, bytes);
  return self->req;
}

int sp_traces_encoded(sp_traces_t *self, const uint8_t **out, size_t *len) {
  if (self->raw != NULL || (self->req == NULL && self->enc == NULL)) {
    *out = self->raw != NULL ? self->raw : (const uint8_t *)"";
    *len = self->raw_len;
    return 0;
  }
  if (self->enc == NULL) {
    const ProtobufCMessage *m = &self->req->base;
    size_t n = protobuf_c_message_get_packed_size(m);
    self->enc = sp_malloc(n > 0 ? n : 1);
    if (self->enc == NULL)
      return SP_ENOMEM;
    self->enc_len = protobuf_c_message_pack(m, self->enc);
  }
  *out = self->enc;
  *len = self->enc_len;
  return 0;
}

int sp_traces_writable(sp_traces_t **batch) {
  sp_traces_t *self = *batch;
  if (self->refcnt > 1) {
    const uint8_t *bytes;
    size_t len;
    if (sp_traces_encoded(self, &bytes, &len) != 0)
      return SP_ENOMEM;
    sp_traces_t *copy = sp__traces_new();
    if (copy == NULL)
      return SP_ENOMEM;
    copy->raw = sp_malloc(len > 0 ? len : 1);
    if (copy->raw == NULL) {
      sp_traces_unref(copy);
      return SP_ENOMEM;
    }
    memcpy(copy->raw, bytes, len);
    copy->raw_len = len;
    copy->span_count = self->span_count;
    copy->meta.tenant = self->meta.tenant ? sp_arena_strdup(copy->arena, self->meta.tenant) : NULL;
    copy->meta.authorization =
        self->meta.authorization ? sp_arena_strdup(copy->arena, self->meta.authorization) : NULL;
    copy->received_ns = self->received_ns;
    if (sp_traces_request(copy) == NULL) {
      sp_traces_unref(copy);
      return SP_ENOMEM;
    }
    sp_traces_unref(self);
    *batch = self = copy;
  } else if (sp_traces_request(self) == NULL) {
    return SP_ENOMEM;
  }
  /* From here on the decoded message is the truth; stale encodings go. */
  sp_free(self->raw);
  self->raw = NULL;
  self->raw_len = 0;
  sp_free(self->enc);
  self->enc = NULL;
  self->enc_len = 0;
  return 0;
}

int sp_traces_set_raw(sp_traces_t **batch, uint8_t *raw, size_t len) {
  sp_traces_t *self = *batch;
  if (self->refcnt > 1) {
    sp_traces_t *copy = sp__traces_new();
    if (copy == NULL) {
      sp_free(raw);
      return SP_ENOMEM;
    }
    copy->span_count = self->span_count;
    copy->invalid_spans = self->invalid_spans;
    copy->received_ns = self->received_ns;
    if ((self->meta.tenant != NULL &&
         (copy->meta.tenant = sp_arena_strdup(copy->arena, self->meta.tenant)) == NULL) ||
        (self->meta.authorization != NULL &&
         (copy->meta.authorization = sp_arena_strdup(copy->arena, self->meta.authorization)) ==
             NULL)) {
      sp_traces_unref(copy);
      sp_free(raw);
      return SP_ENOMEM;
    }
    sp_traces_unref(self);
    *batch = self = copy;
  }
  sp_free(self->raw);
  self->raw = raw;
  self->raw_len = len;
  self->req = NULL;
  sp_free(self->enc);
  self->enc = NULL;
  self->enc_len = 0;
  return 0;
}

/* ---- profiles --------------------------------------------------------------- */

sp_profiles_t *sp_profiles_create(void) {
  sp_profiles_t *self = sp_calloc(1, sizeof(*self));
  if (self == NULL)
    return NULL;
  self->arena = sp_arena_create(0);
  if (self->arena == NULL) {
    sp_free(self);
    return NULL;
  }
  self->refcnt = 1;
  self->received_ns = uv_hrtime();
  return self;
}

sp_profiles_t *sp_profiles_ref(sp_profiles_t *self) {
  self->refcnt++;
  return self;
}

void sp_profiles_unref(sp_profiles_t *self) {
  if (self == NULL || --self->refcnt > 0)
    return;
  sp_free(self->items);
  sp_arena_destroy(self->arena);
  sp_free(self);
}

const char *sp_profiles_strdup(sp_profiles_t *self, const char *s) {
  return s != NULL ? sp_arena_strdup(self->arena, s) : NULL;
}

static sp_profile_t *sp__profiles_push(sp_profiles_t *self, const sp_label_t *labels,
                                       size_t n_labels, int64_t start_ns, int64_t end_ns) {
  if (self->n == self->cap) {
    size_t cap = self->cap ? self->cap * 2 : 4;
    sp_profile_t *items = sp_realloc(self->items, cap * sizeof(*items));
    if (items == NULL)
      return NULL;
    self->items = items;
    self->cap = cap;
  }
  sp_label_t *copy = n_labels ? sp_arena_alloc(self->arena, n_labels * sizeof(*copy)) : NULL;
  if (n_labels && copy == NULL)
    return NULL;
  for (size_t i = 0; i < n_labels; i++) {
    copy[i].name = sp_arena_strdup(self->arena, labels[i].name);
    copy[i].value = sp_arena_strdup(self->arena, labels[i].value ? labels[i].value : "");
    if (copy[i].name == NULL || copy[i].value == NULL)
      return NULL;
  }
  sp_profile_t *p = &self->items[self->n];
  memset(p, 0, sizeof(*p));
  p->labels = copy;
  p->n_labels = n_labels;
  p->time_start_ns = start_ns;
  p->time_end_ns = end_ns;
  self->n++;
  return p;
}

sp_profile_t *sp_profiles_add(sp_profiles_t *self, const sp_label_t *labels, size_t n_labels,
                              int64_t start_ns, int64_t end_ns, const uint8_t *pprof,
                              size_t len) {
  uint8_t *raw = sp_arena_memdup(self->arena, pprof, len > 0 ? len : 1);
  if (raw == NULL)
    return NULL;
  sp_profile_t *p = sp__profiles_push(self, labels, n_labels, start_ns, end_ns);
  if (p == NULL)
    return NULL;
  p->raw = raw;
  p->raw_len = len;
  return p;
}

sp_profile_t *sp_profiles_add_arena_bytes(sp_profiles_t *self, const sp_label_t *labels,
                                         size_t n_labels, int64_t start_ns, int64_t end_ns,
                                         const uint8_t *pprof, size_t len) {
  sp_profile_t *p = sp__profiles_push(self, labels, n_labels, start_ns, end_ns);
  if (p == NULL)
    return NULL;
  p->raw = pprof;
  p->raw_len = len;
  return p;
}

sp_profile_t *sp_profiles_add_decoded(sp_profiles_t *self, const sp_label_t *labels,
                                      size_t n_labels, int64_t start_ns, int64_t end_ns,
                                      sp_pprof_t *pprof) {
  sp_profile_t *p = sp__profiles_push(self, labels, n_labels, start_ns, end_ns);
  if (p == NULL)
    return NULL;
  p->pprof = pprof;
  p->modified = true;
  return p;
}

sp_pprof_t *sp_profile_decode(sp_profiles_t *batch, sp_profile_t *p) {
  if (p->pprof == NULL && p->raw != NULL)
    p->pprof = perftools__profiles__profile__unpack(sp_arena_pbc(batch->arena), p->raw_len,
                                                    p->raw);
  return p->pprof;
}

const char *sp_profile_label(const sp_profile_t *p, const char *name) {
  for (size_t i = 0; i < p->n_labels; i++)
    if (strcmp(p->labels[i].name, name) == 0)
      return p->labels[i].value;
  return NULL;
}

size_t sp_profiles_count_samples(sp_profiles_t *self) {
  size_t n = 0;
  for (size_t i = 0; i < self->n; i++) {
    sp_profile_t *p = &self->items[i];
    if (p->pprof != NULL && (p->modified || p->raw == NULL)) {
      n += p->pprof->n_sample; /* edited: counting must not re-encode */
      continue;
    }
    const sp_pprof_wire_t *w = sp_profile_wire(self, p);
    if (w != NULL)
      n += w->n_samples;
  }
  return n;
}

const sp_pprof_wire_t *sp_profile_wire(sp_profiles_t *batch, sp_profile_t *p) {
  if (p->wire != NULL && !p->modified && p->raw != NULL)
    return p->wire;
  const uint8_t *raw;
  size_t len;
  if (sp_profile_encoded(batch, p, &raw, &len) != 0)
    return NULL;
  sp_pprof_wire_t *w = sp_arena_alloc(batch->arena, sizeof(*w));
  if (w == NULL || sp_pprof_wire_index(batch->arena, raw, len, false, w, NULL, 0) != 0)
    return NULL;
  p->wire = w;
  return w;
}

void sp_profile_set_raw(sp_profile_t *p, const uint8_t *raw, size_t len) {
  sp_profile_set_raw_indexed(p, raw, len, NULL);
}

void sp_profile_set_raw_indexed(sp_profile_t *p, const uint8_t *raw, size_t len,
                                const sp_pprof_wire_t *wire) {
  p->raw = raw;
  p->raw_len = len;
  p->pprof = NULL;
  p->wire = wire;
  p->modified = false;
}

int sp_profile_encoded(sp_profiles_t *batch, sp_profile_t *p, const uint8_t **out, size_t *len) {
  if (!p->modified && p->raw != NULL) {
    *out = p->raw;
    *len = p->raw_len;
    return 0;
  }
  if (p->pprof == NULL)
    return SP_EINVAL;
  size_t n = protobuf_c_message_get_packed_size(&p->pprof->base);
  uint8_t *buf = sp_arena_alloc(batch->arena, n > 0 ? n : 1);
  if (buf == NULL)
    return SP_ENOMEM;
  p->raw_len = protobuf_c_message_pack(&p->pprof->base, buf);
  p->raw = buf;
  p->wire = NULL; /* indexed the old bytes */
  p->modified = false; /* the new bytes match the decoded profile again */
  *out = p->raw;
  *len = p->raw_len;
  return 0;
}

/* Gives @p dst (a copy of the bytes @p w indexes) its own copy of the index: offsets hold. */
static int sp__wire_copy(sp_profiles_t *batch, sp_profile_t *dst, const sp_pprof_wire_t *w) {
  sp_pprof_wire_t *c = sp_arena_memdup(batch->arena, w, sizeof(*w));
  if (c == NULL)
    return SP_ENOMEM;
  c->raw = dst->raw;
  c->strings = w->n_strings ? sp_arena_memdup(batch->arena, w->strings,
                                              w->n_strings * sizeof(*w->strings))
                            : NULL;
  c->samples = w->n_samples ? sp_arena_memdup(batch->arena, w->samples,
                                              w->n_samples * sizeof(*w->samples))
                            : NULL;
  c->sample_types = w->n_sample_types
                        ? sp_arena_memdup(batch->arena, w->sample_types,
                                          w->n_sample_types * sizeof(*w->sample_types))
                        : NULL;
  if ((w->n_strings && !c->strings) || (w->n_samples && !c->samples) ||
      (w->n_sample_types && !c->sample_types))
    return SP_ENOMEM;
  if (w->plabels != NULL) {
    size_t nl = w->plabel_start[w->n_samples];
    c->plabels = sp_arena_memdup(batch->arena, w->plabels, (nl ? nl : 1) * sizeof(*w->plabels));
    c->plabel_start = sp_arena_memdup(batch->arena, w->plabel_start,
                                      (w->n_samples + 1) * sizeof(*w->plabel_start));
    if (c->plabels == NULL || c->plabel_start == NULL)
      return SP_ENOMEM;
  }
  if (w->has_keys) {
    c->keys = sp_arena_memdup(batch->arena, w->keys, (w->n_keys ? w->n_keys : 1) * sizeof(*w->keys));
    if (c->keys == NULL)
      return SP_ENOMEM;
  }
  dst->wire = c;
  return 0;
}

sp_profile_t *sp_profiles_copy_in(sp_profiles_t *dst_batch, sp_profiles_t *src_batch,
                                  sp_profile_t *src) {
  const uint8_t *bytes;
  size_t len;
  if (sp_profile_encoded(src_batch, src, &bytes, &len) != 0) return NULL;
  sp_profile_t *dst = sp_profiles_add(dst_batch, src->labels, src->n_labels, src->time_start_ns,
                                      src->time_end_ns, bytes, len);
  if (dst == NULL) return NULL;
  if (src->wire != NULL && src->raw == bytes && sp__wire_copy(dst_batch, dst, src->wire) != 0)
    goto fail;
  if (src->n_ext > 0) {
    size_t n = src->n_ext * sizeof(int64_t);
    dst->sample_time_ns =
        src->sample_time_ns ? sp_arena_memdup(dst_batch->arena, src->sample_time_ns, n) : NULL;
    dst->sample_thread =
        src->sample_thread ? sp_arena_memdup(dst_batch->arena, src->sample_thread, n) : NULL;
    if ((src->sample_time_ns && !dst->sample_time_ns) ||
        (src->sample_thread && !dst->sample_thread))
      goto fail;
    dst->n_ext = src->n_ext;
  }
  return dst;
fail:
  dst_batch->n--; /* the item just pushed; its arena bytes stay until the batch goes */
  return NULL;
}

int sp_profiles_writable(sp_profiles_t **batch) {
  sp_profiles_t *self = *batch;
  if (self->refcnt <= 1)
    return 0;
  sp_profiles_t *copy = sp_profiles_create();
  if (copy == NULL)
    return SP_ENOMEM;
  copy->meta.tenant = sp_profiles_strdup(copy, self->meta.tenant);
  copy->meta.authorization = sp_profiles_strdup(copy, self->meta.authorization);
  copy->received_ns = self->received_ns;
  for (size_t i = 0; i < self->n; i++)
    if (sp_profiles_copy_in(copy, self, &self->items[i]) == NULL) goto fail;
  sp_profiles_unref(self);
  *batch = copy;
  return 0;
fail:
  sp_profiles_unref(copy);
  return SP_ENOMEM;
}
