/*
 * test_pbjson.c — protobuf-c <-> JSON: OTLP round trips, hand-written OTLP
 * JSON, Pyroscope Connect JSON, google.rpc.Status, error messages, and
 * out-of-memory paths.
 */
#include "pipeline/alloc.h"
#include "pipeline/arena.h"
#include "pipeline/buf.h"
#include "pipeline/error.h"
#include "pipeline/pbjson.h"

#include "google/protobuf/duration.pb-c.h"
#include "google/rpc/error_details.pb-c.h"
#include "google/rpc/status.pb-c.h"
#include "opentelemetry/proto/collector/profiles/v1development/profiles_service.pb-c.h"
#include "opentelemetry/proto/collector/trace/v1/trace_service.pb-c.h"
#include "push/v1/push.pb-c.h"

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef Opentelemetry__Proto__Common__V1__AnyValue AnyValue;
typedef Opentelemetry__Proto__Common__V1__KeyValue KeyValue;
typedef Opentelemetry__Proto__Common__V1__ArrayValue ArrayValue;
typedef Opentelemetry__Proto__Common__V1__KeyValueList KeyValueList;
typedef Opentelemetry__Proto__Common__V1__InstrumentationScope Scope;
typedef Opentelemetry__Proto__Resource__V1__Resource Resource;
typedef Opentelemetry__Proto__Trace__V1__ResourceSpans ResourceSpans;
typedef Opentelemetry__Proto__Trace__V1__ScopeSpans ScopeSpans;
typedef Opentelemetry__Proto__Trace__V1__Span Span;
typedef Opentelemetry__Proto__Trace__V1__Span__Event Event;
typedef Opentelemetry__Proto__Trace__V1__Span__Link Link;
typedef Opentelemetry__Proto__Trace__V1__Status Status;
typedef Opentelemetry__Proto__Collector__Trace__V1__ExportTraceServiceRequest TraceReq;
typedef Opentelemetry__Proto__Collector__Profiles__V1development__ExportProfilesServiceRequest
    ProfReq;
typedef Opentelemetry__Proto__Profiles__V1development__ProfilesDictionary Dict;
typedef Opentelemetry__Proto__Profiles__V1development__ResourceProfiles ResourceProfiles;
typedef Opentelemetry__Proto__Profiles__V1development__ScopeProfiles ScopeProfiles;
typedef Opentelemetry__Proto__Profiles__V1development__Profile Profile;
typedef Opentelemetry__Proto__Profiles__V1development__Sample Sample;
typedef Opentelemetry__Proto__Profiles__V1development__ValueType ValueType;
typedef Opentelemetry__Proto__Profiles__V1development__Mapping Mapping;
typedef Opentelemetry__Proto__Profiles__V1development__Location Location;
typedef Opentelemetry__Proto__Profiles__V1development__Line Line;
typedef Opentelemetry__Proto__Profiles__V1development__Function Function;
typedef Opentelemetry__Proto__Profiles__V1development__Link ProfLink;
typedef Opentelemetry__Proto__Profiles__V1development__Stack Stack;
typedef Opentelemetry__Proto__Profiles__V1development__KeyValueAndUnit KeyValueAndUnit;

#define TRACE_REQ_DESC                                                                             \
  (&opentelemetry__proto__collector__trace__v1__export_trace_service_request__descriptor)
#define PROF_REQ_DESC                                                                              \
  (&opentelemetry__proto__collector__profiles__v1development__export_profiles_service_request__descriptor)

/* ---- builders (everything lives in one arena) ---------------------------- */

static void *new_msg(sp_arena_t *a, const ProtobufCMessageDescriptor *d) {
  ProtobufCMessage *m = sp_arena_alloc(a, d->sizeof_message);
  assert_non_null(m);
  d->message_init(m);
  return m;
}

static void *new_array(sp_arena_t *a, size_t n, size_t size) {
  void *p = sp_arena_calloc(a, n * size);
  assert_non_null(p);
  return p;
}

static ProtobufCBinaryData bin(sp_arena_t *a, const char *hex) {
  ProtobufCBinaryData b = {strlen(hex) / 2, NULL};
  b.data = new_array(a, b.len, 1);
  for (size_t i = 0; i < b.len; i++) {
    unsigned v;
    sscanf(hex + 2 * i, "%2x", &v);
    b.data[i] = (uint8_t)v;
  }
  return b;
}

static AnyValue *av(sp_arena_t *a) {
  return new_msg(a, &opentelemetry__proto__common__v1__any_value__descriptor);
}

static AnyValue *av_str(sp_arena_t *a, const char *s) {
  AnyValue *v = av(a);
  v->value_case = OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_STRING_VALUE;
  v->string_value = sp_arena_strdup(a, s);
  return v;
}

static AnyValue *av_int(sp_arena_t *a, int64_t i) {
  AnyValue *v = av(a);
  v->value_case = OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_INT_VALUE;
  v->int_value = i;
  return v;
}

static AnyValue *av_double(sp_arena_t *a, double d) {
  AnyValue *v = av(a);
  v->value_case = OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_DOUBLE_VALUE;
  v->double_value = d;
  return v;
}

static AnyValue *av_bool(sp_arena_t *a, int b) {
  AnyValue *v = av(a);
  v->value_case = OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_BOOL_VALUE;
  v->bool_value = b;
  return v;
}

static AnyValue *av_bytes(sp_arena_t *a, const char *hex) {
  AnyValue *v = av(a);
  v->value_case = OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_BYTES_VALUE;
  v->bytes_value = bin(a, hex);
  return v;
}

static AnyValue *av_array(sp_arena_t *a, size_t n, AnyValue **items) {
  AnyValue *v = av(a);
  ArrayValue *arr = new_msg(a, &opentelemetry__proto__common__v1__array_value__descriptor);
  arr->n_values = n;
  arr->values = new_array(a, n, sizeof(AnyValue *));
  memcpy(arr->values, items, n * sizeof(AnyValue *));
  v->value_case = OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_ARRAY_VALUE;
  v->array_value = arr;
  return v;
}

static KeyValue *kv(sp_arena_t *a, const char *key, AnyValue *value) {
  KeyValue *k = new_msg(a, &opentelemetry__proto__common__v1__key_value__descriptor);
  k->key = sp_arena_strdup(a, key);
  k->value = value;
  return k;
}

static AnyValue *av_kvlist(sp_arena_t *a, size_t n, KeyValue **items) {
  AnyValue *v = av(a);
  KeyValueList *l = new_msg(a, &opentelemetry__proto__common__v1__key_value_list__descriptor);
  l->n_values = n;
  l->values = new_array(a, n, sizeof(KeyValue *));
  memcpy(l->values, items, n * sizeof(KeyValue *));
  v->value_case = OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_KVLIST_VALUE;
  v->kvlist_value = l;
  return v;
}

#define KVS(a, field, nfield, ...)                                                                 \
  do {                                                                                             \
    KeyValue *tmp_[] = {__VA_ARGS__};                                                              \
    nfield = sizeof tmp_ / sizeof tmp_[0];                                                         \
    field = new_array(a, nfield, sizeof(KeyValue *));                                              \
    memcpy(field, tmp_, sizeof tmp_);                                                              \
  } while (0)

/* A request exercising every field of the trace schema and every AnyValue kind. */
static TraceReq *build_trace_request(sp_arena_t *a) {
  TraceReq *req = new_msg(a, TRACE_REQ_DESC);
  ResourceSpans *rs = new_msg(a, &opentelemetry__proto__trace__v1__resource_spans__descriptor);
  Resource *res = new_msg(a, &opentelemetry__proto__resource__v1__resource__descriptor);
  AnyValue *strindex = av(a);
  strindex->value_case = OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_STRING_VALUE_STRINDEX;
  strindex->string_value_strindex = 7;
  KeyValue *keyonly = kv(a, "key.only", NULL);
  KeyValue *byindex = kv(a, "", av_str(a, "by-index"));
  byindex->key_strindex = 3;
  AnyValue *arr_items[] = {av_str(a, "a"), av_int(a, -1), av_double(a, 0.5), av_bool(a, 0),
                           av(a) /* empty */};
  KeyValue *inner_items[] = {kv(a, "nested.int", av_int(a, INT64_MIN)),
                             kv(a, "nested.arr", av_array(a, 1, (AnyValue *[]){av_str(a, "z")}))};
  KVS(a, res->attributes, res->n_attributes, kv(a, "service.name", av_str(a, "checkout")),
      kv(a, "service.instance.id", av_str(a, "627cc493-f310-47de-96bd-71410b7dec09")),
      kv(a, "process.pid", av_int(a, 4242)), kv(a, "big", av_int(a, INT64_MAX)),
      kv(a, "zero.int", av_int(a, 0)), kv(a, "empty.string", av_str(a, "")),
      kv(a, "false.bool", av_bool(a, 0)), kv(a, "true.bool", av_bool(a, 1)),
      kv(a, "ratio", av_double(a, 0.25)), kv(a, "tiny", av_double(a, -1.5e-300)),
      kv(a, "zero.double", av_double(a, 0)), kv(a, "blob", av_bytes(a, "00ff10fe7f")),
      kv(a, "list", av_array(a, 5, arr_items)), kv(a, "map", av_kvlist(a, 2, inner_items)),
      kv(a, "strindex", strindex), kv(a, "empty.value", av(a)), keyonly, byindex,
      kv(a, "unicode \"quoted\"\n", av_str(a, "\xc3\xbc\xe2\x82\xac\xf0\x9f\x98\x80\t\x01")));
  res->dropped_attributes_count = 3;
  rs->resource = res;
  rs->schema_url = sp_arena_strdup(a, "https://opentelemetry.io/schemas/1.24.0");

  ScopeSpans *ss = new_msg(a, &opentelemetry__proto__trace__v1__scope_spans__descriptor);
  Scope *scope = new_msg(a, &opentelemetry__proto__common__v1__instrumentation_scope__descriptor);
  scope->name = sp_arena_strdup(a, "io.opentelemetry.http");
  scope->version = sp_arena_strdup(a, "1.2.3");
  KVS(a, scope->attributes, scope->n_attributes, kv(a, "scope.attr", av_str(a, "s")));
  scope->dropped_attributes_count = 1;
  ss->scope = scope;

  Span *s1 = new_msg(a, &opentelemetry__proto__trace__v1__span__descriptor);
  s1->trace_id = bin(a, "5b8efff798038103d269b633813fc60c");
  s1->span_id = bin(a, "eee19b7ec3c1b174");
  s1->parent_span_id = bin(a, "eee19b7ec3c1b173");
  s1->trace_state = sp_arena_strdup(a, "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE");
  s1->flags = 0x301;
  s1->name = sp_arena_strdup(a, "GET /api/orders/{id}");
  s1->kind = OPENTELEMETRY__PROTO__TRACE__V1__SPAN__SPAN_KIND__SPAN_KIND_SERVER;
  s1->start_time_unix_nano = 1700000000123456789ull;
  s1->end_time_unix_nano = UINT64_MAX;
  KVS(a, s1->attributes, s1->n_attributes, kv(a, "http.method", av_str(a, "GET")),
      kv(a, "http.status_code", av_int(a, 500)), kv(a, "thread.id", av_int(a, 17)));
  s1->dropped_attributes_count = 2;
  Event *ev1 = new_msg(a, &opentelemetry__proto__trace__v1__span__event__descriptor);
  ev1->time_unix_nano = 1700000000200000000ull;
  ev1->name = sp_arena_strdup(a, "exception");
  KVS(a, ev1->attributes, ev1->n_attributes, kv(a, "exception.type", av_str(a, "IOError")),
      kv(a, "exception.escaped", av_bool(a, 1)));
  ev1->dropped_attributes_count = 4;
  Event *ev2 = new_msg(a, &opentelemetry__proto__trace__v1__span__event__descriptor);
  ev2->name = sp_arena_strdup(a, "retry");
  s1->n_events = 2;
  s1->events = new_array(a, 2, sizeof(Event *));
  s1->events[0] = ev1;
  s1->events[1] = ev2;
  s1->dropped_events_count = 5;
  Link *ln = new_msg(a, &opentelemetry__proto__trace__v1__span__link__descriptor);
  ln->trace_id = bin(a, "0af7651916cd43dd8448eb211c80319c");
  ln->span_id = bin(a, "b7ad6b7169203331");
  ln->trace_state = sp_arena_strdup(a, "k=v");
  KVS(a, ln->attributes, ln->n_attributes, kv(a, "link.kind", av_str(a, "follows")));
  ln->dropped_attributes_count = 6;
  ln->flags = 0x101;
  s1->n_links = 1;
  s1->links = new_array(a, 1, sizeof(Link *));
  s1->links[0] = ln;
  s1->dropped_links_count = 7;
  Status *st = new_msg(a, &opentelemetry__proto__trace__v1__status__descriptor);
  st->message = sp_arena_strdup(a, "upstream timed out");
  st->code = OPENTELEMETRY__PROTO__TRACE__V1__STATUS__STATUS_CODE__STATUS_CODE_ERROR;
  s1->status = st;

  Span *s2 = new_msg(a, &opentelemetry__proto__trace__v1__span__descriptor);
  s2->trace_id = bin(a, "5b8efff798038103d269b633813fc60c");
  s2->span_id = bin(a, "0000000000000001");
  s2->name = sp_arena_strdup(a, "child");
  s2->status = new_msg(a, &opentelemetry__proto__trace__v1__status__descriptor); /* empty */

  ss->n_spans = 2;
  ss->spans = new_array(a, 2, sizeof(Span *));
  ss->spans[0] = s1;
  ss->spans[1] = s2;
  ss->schema_url = sp_arena_strdup(a, "");
  rs->n_scope_spans = 1;
  rs->scope_spans = new_array(a, 1, sizeof(ScopeSpans *));
  rs->scope_spans[0] = ss;

  ResourceSpans *empty_rs =
      new_msg(a, &opentelemetry__proto__trace__v1__resource_spans__descriptor);
  req->n_resource_spans = 2;
  req->resource_spans = new_array(a, 2, sizeof(ResourceSpans *));
  req->resource_spans[0] = rs;
  req->resource_spans[1] = empty_rs;
  return req;
}

static ProfReq *build_profiles_request(sp_arena_t *a) {
  ProfReq *req = new_msg(a, PROF_REQ_DESC);
  Dict *d =
      new_msg(a, &opentelemetry__proto__profiles__v1development__profiles_dictionary__descriptor);
  static const char *strings[] = {"",     "cpu",     "nanoseconds",  "samples",  "count",
                                  "main", "main.go", "/usr/bin/app", "thread.id"};
  d->n_string_table = sizeof strings / sizeof strings[0];
  d->string_table = new_array(a, d->n_string_table, sizeof(char *));
  for (size_t i = 0; i < d->n_string_table; i++)
    d->string_table[i] = sp_arena_strdup(a, strings[i]);

  d->n_mapping_table = 2;
  d->mapping_table = new_array(a, 2, sizeof(Mapping *));
  d->mapping_table[0] =
      new_msg(a, &opentelemetry__proto__profiles__v1development__mapping__descriptor);
  Mapping *m = d->mapping_table[1] =
      new_msg(a, &opentelemetry__proto__profiles__v1development__mapping__descriptor);
  m->memory_start = 0x400000;
  m->memory_limit = 0xffffffffffff0000ull;
  m->file_offset = 0x1000;
  m->filename_strindex = 7;
  m->n_attribute_indices = 1;
  m->attribute_indices = new_array(a, 1, sizeof(int32_t));
  m->attribute_indices[0] = 1;

  d->n_function_table = 2;
  d->function_table = new_array(a, 2, sizeof(Function *));
  d->function_table[0] =
      new_msg(a, &opentelemetry__proto__profiles__v1development__function__descriptor);
  Function *fn = d->function_table[1] =
      new_msg(a, &opentelemetry__proto__profiles__v1development__function__descriptor);
  fn->name_strindex = 5;
  fn->system_name_strindex = 5;
  fn->filename_strindex = 6;
  fn->start_line = 10;

  d->n_location_table = 2;
  d->location_table = new_array(a, 2, sizeof(Location *));
  d->location_table[0] =
      new_msg(a, &opentelemetry__proto__profiles__v1development__location__descriptor);
  Location *loc = d->location_table[1] =
      new_msg(a, &opentelemetry__proto__profiles__v1development__location__descriptor);
  loc->mapping_index = 1;
  loc->address = 0x401234;
  loc->n_lines = 2;
  loc->lines = new_array(a, 2, sizeof(Line *));
  for (int i = 0; i < 2; i++) {
    Line *l = loc->lines[i] =
        new_msg(a, &opentelemetry__proto__profiles__v1development__line__descriptor);
    l->function_index = 1;
    l->line = 42 + i;
    l->column = i;
  }

  d->n_link_table = 2;
  d->link_table = new_array(a, 2, sizeof(ProfLink *));
  d->link_table[0] = new_msg(a, &opentelemetry__proto__profiles__v1development__link__descriptor);
  ProfLink *pl = d->link_table[1] =
      new_msg(a, &opentelemetry__proto__profiles__v1development__link__descriptor);
  pl->trace_id = bin(a, "5b8efff798038103d269b633813fc60c");
  pl->span_id = bin(a, "eee19b7ec3c1b174");

  d->n_attribute_table = 2;
  d->attribute_table = new_array(a, 2, sizeof(KeyValueAndUnit *));
  d->attribute_table[0] =
      new_msg(a, &opentelemetry__proto__profiles__v1development__key_value_and_unit__descriptor);
  KeyValueAndUnit *kvu = d->attribute_table[1] =
      new_msg(a, &opentelemetry__proto__profiles__v1development__key_value_and_unit__descriptor);
  kvu->key_strindex = 8;
  kvu->value = av_int(a, 17);
  kvu->unit_strindex = 0;

  d->n_stack_table = 2;
  d->stack_table = new_array(a, 2, sizeof(Stack *));
  d->stack_table[0] = new_msg(a, &opentelemetry__proto__profiles__v1development__stack__descriptor);
  Stack *stk = d->stack_table[1] =
      new_msg(a, &opentelemetry__proto__profiles__v1development__stack__descriptor);
  stk->n_location_indices = 3;
  stk->location_indices = new_array(a, 3, sizeof(int32_t));
  stk->location_indices[0] = 1;
  stk->location_indices[1] = 1;
  stk->location_indices[2] = 0;
  req->dictionary = d;

  Profile *p = new_msg(a, &opentelemetry__proto__profiles__v1development__profile__descriptor);
  p->sample_type =
      new_msg(a, &opentelemetry__proto__profiles__v1development__value_type__descriptor);
  p->sample_type->type_strindex = 1;
  p->sample_type->unit_strindex = 2;
  p->period_type =
      new_msg(a, &opentelemetry__proto__profiles__v1development__value_type__descriptor);
  p->period_type->type_strindex = 1;
  p->period_type->unit_strindex = 2;
  p->period = 10000000;
  p->time_unix_nano = 1700000000000000001ull;
  p->duration_nano = 10000000000ull;
  p->profile_id = bin(a, "0102030405060708090a0b0c0d0e0f10");
  p->dropped_attributes_count = 1;
  p->original_payload_format = sp_arena_strdup(a, "pprof");
  p->original_payload = bin(a, "1f8b0800");
  p->n_attribute_indices = 1;
  p->attribute_indices = new_array(a, 1, sizeof(int32_t));
  p->attribute_indices[0] = 1;
  p->n_samples = 2;
  p->samples = new_array(a, 2, sizeof(Sample *));
  for (int i = 0; i < 2; i++) {
    Sample *s = p->samples[i] =
        new_msg(a, &opentelemetry__proto__profiles__v1development__sample__descriptor);
    s->stack_index = 1;
    s->link_index = i;
    s->n_values = 2;
    s->values = new_array(a, 2, sizeof(int64_t));
    s->values[0] = 10000000;
    s->values[1] = i ? INT64_MIN : -1;
    s->n_attribute_indices = 1;
    s->attribute_indices = new_array(a, 1, sizeof(int32_t));
    s->attribute_indices[0] = 1;
    s->n_timestamps_unix_nano = 2;
    s->timestamps_unix_nano = new_array(a, 2, sizeof(uint64_t));
    s->timestamps_unix_nano[0] = 1700000000000000001ull;
    s->timestamps_unix_nano[1] = 1700000000010000001ull;
  }
  ScopeProfiles *sp =
      new_msg(a, &opentelemetry__proto__profiles__v1development__scope_profiles__descriptor);
  sp->scope = new_msg(a, &opentelemetry__proto__common__v1__instrumentation_scope__descriptor);
  sp->scope->name = sp_arena_strdup(a, "ebpf-profiler");
  sp->n_profiles = 1;
  sp->profiles = new_array(a, 1, sizeof(Profile *));
  sp->profiles[0] = p;
  ResourceProfiles *rp =
      new_msg(a, &opentelemetry__proto__profiles__v1development__resource_profiles__descriptor);
  rp->resource = new_msg(a, &opentelemetry__proto__resource__v1__resource__descriptor);
  KVS(a, rp->resource->attributes, rp->resource->n_attributes,
      kv(a, "service.name", av_str(a, "checkout")), kv(a, "process.pid", av_int(a, 4242)));
  rp->n_scope_profiles = 1;
  rp->scope_profiles = new_array(a, 1, sizeof(ScopeProfiles *));
  rp->scope_profiles[0] = sp;
  req->n_resource_profiles = 1;
  req->resource_profiles = new_array(a, 1, sizeof(ResourceProfiles *));
  req->resource_profiles[0] = rp;
  return req;
}

/* ---- helpers ---------------------------------------------------------------- */

static uint8_t *pack(const ProtobufCMessage *m, size_t *len) {
  *len = protobuf_c_message_get_packed_size(m);
  uint8_t *p = malloc(*len ? *len : 1);
  assert_int_equal(protobuf_c_message_pack(m, p), *len);
  return p;
}

static char *encode(const ProtobufCMessage *m, unsigned flags) {
  sp_buf_t b;
  sp_buf_init(&b, 0);
  assert_int_equal(sp_pbjson_encode(m, flags, &b), 0);
  char *s = strdup(sp_buf_cstr(&b));
  sp_buf_free(&b);
  return s;
}

static ProtobufCMessage *decode_ok(const ProtobufCMessageDescriptor *d, const char *json,
                                   unsigned flags, sp_arena_t *a) {
  ProtobufCMessage *m = NULL;
  char err[256];
  int rc = sp_pbjson_decode(d, json, strlen(json), flags, sp_arena_pbc(a), &m, err, sizeof err);
  if (rc) fail_msg("decode failed (%d): %s\n%s", rc, err, json);
  assert_non_null(m);
  return m;
}

/* proto -> JSON -> proto must reproduce the exact bytes, and JSON -> proto
 * -> JSON the exact text; both with the arena and with the heap allocator. */
static void check_round_trip(const ProtobufCMessage *orig, unsigned flags) {
  size_t len1, len2;
  uint8_t *bytes1 = pack(orig, &len1);
  char *json1 = encode(orig, flags);

  sp_arena_t *a = sp_arena_create(0);
  ProtobufCMessage *m = decode_ok(orig->descriptor, json1, flags, a);
  uint8_t *bytes2 = pack(m, &len2);
  assert_int_equal(len1, len2);
  assert_memory_equal(bytes1, bytes2, len1);
  char *json2 = encode(m, flags);
  assert_string_equal(json1, json2);
  sp_arena_destroy(a);

  ProtobufCMessage *h = NULL;
  char err[256];
  assert_int_equal(
      sp_pbjson_decode(orig->descriptor, json1, strlen(json1), flags, NULL, &h, err, sizeof err),
      0);
  free(bytes2);
  bytes2 = pack(h, &len2);
  assert_int_equal(len1, len2);
  assert_memory_equal(bytes1, bytes2, len1);
  protobuf_c_message_free_unpacked(h, sp_pbjson_heap_allocator());

  free(bytes1);
  free(bytes2);
  free(json1);
  free(json2);
}

static void assert_contains(const char *hay, const char *needle) {
  if (!strstr(hay, needle)) fail_msg("\"%s\" not found in:\n%s", needle, hay);
}

/* ---- tests ------------------------------------------------------------------- */

static void test_trace_round_trip(void **state) {
  (void)state;
  sp_arena_t *a = sp_arena_create(0);
  TraceReq *req = build_trace_request(a);
  check_round_trip(&req->base, SP_PBJSON_OTLP);
  check_round_trip(&req->base, 0);

  char *j = encode(&req->base, SP_PBJSON_OTLP);
  assert_contains(j, "{\"resourceSpans\":[{\"resource\":{\"attributes\":[{\"key\":\"service.name\","
                     "\"value\":{\"stringValue\":\"checkout\"}},");
  assert_contains(
      j, "\"traceId\":\"5b8efff798038103d269b633813fc60c\",\"spanId\":\"eee19b7ec3c1b174\","
         "\"traceState\":\"rojo=00f067aa0ba902b7,congo=t61rcWkgMzE\","
         "\"parentSpanId\":\"eee19b7ec3c1b173\"");
  assert_contains(j, "\"name\":\"GET /api/orders/{id}\",\"kind\":2,"
                     "\"startTimeUnixNano\":\"1700000000123456789\","
                     "\"endTimeUnixNano\":\"18446744073709551615\"");
  assert_contains(j, "\"flags\":769}");
  assert_contains(j, "{\"key\":\"big\",\"value\":{\"intValue\":\"9223372036854775807\"}}");
  assert_contains(j, "{\"key\":\"zero.int\",\"value\":{\"intValue\":\"0\"}}");
  assert_contains(j, "{\"key\":\"empty.string\",\"value\":{\"stringValue\":\"\"}}");
  assert_contains(j, "{\"key\":\"false.bool\",\"value\":{\"boolValue\":false}}");
  assert_contains(j, "{\"key\":\"zero.double\",\"value\":{\"doubleValue\":0}}");
  assert_contains(j, "{\"key\":\"tiny\",\"value\":{\"doubleValue\":-1.5e-300}}");
  assert_contains(j, "{\"key\":\"blob\",\"value\":{\"bytesValue\":\"AP8Q/n8=\"}}");
  assert_contains(j, "\"arrayValue\":{\"values\":[{\"stringValue\":\"a\"},{\"intValue\":\"-1\"},"
                     "{\"doubleValue\":0.5},{\"boolValue\":false},{}]}");
  assert_contains(j, "\"kvlistValue\":{\"values\":[{\"key\":\"nested.int\",\"value\":{\"intValue\":"
                     "\"-9223372036854775808\"}}");
  assert_contains(j, "{\"key\":\"strindex\",\"value\":{\"stringValueStrindex\":7}}");
  assert_contains(j, "{\"key\":\"empty.value\",\"value\":{}}");
  assert_contains(j, "{\"key\":\"key.only\"}");
  assert_contains(j, "{\"value\":{\"stringValue\":\"by-index\"},\"keyStrindex\":3}");
  assert_contains(j, "{\"key\":\"unicode \\\"quoted\\\"\\n\",\"value\":{\"stringValue\":"
                     "\"\xc3\xbc\xe2\x82\xac\xf0\x9f\x98\x80\\t\\u0001\"}}");
  assert_contains(j, "\"status\":{\"message\":\"upstream timed out\",\"code\":2}");
  assert_contains(j, "\"links\":[{\"traceId\":\"0af7651916cd43dd8448eb211c80319c\","
                     "\"spanId\":\"b7ad6b7169203331\",\"traceState\":\"k=v\"");
  assert_contains(j,
                  "\"events\":[{\"timeUnixNano\":\"1700000000200000000\",\"name\":\"exception\"");
  assert_contains(j, "{\"name\":\"retry\"}");
  /* Empty status, empty scope schemaUrl, then an empty ResourceSpans. */
  assert_contains(
      j, "\"status\":{}}]}],\"schemaUrl\":\"https://opentelemetry.io/schemas/1.24.0\"},{}]}");
  free(j);

  /* Standard protobuf JSON: base64 IDs and enum names. */
  j = encode(&req->base, 0);
  assert_contains(j, "\"traceId\":\"W47/95gDgQPSabYzgT/GDA==\"");
  assert_contains(j, "\"kind\":\"SPAN_KIND_SERVER\"");
  assert_contains(j, "\"code\":\"STATUS_CODE_ERROR\"");
  free(j);
  sp_arena_destroy(a);
}

static void test_profiles_round_trip(void **state) {
  (void)state;
  sp_arena_t *a = sp_arena_create(0);
  ProfReq *req = build_profiles_request(a);
  check_round_trip(&req->base, SP_PBJSON_OTLP);
  check_round_trip(&req->base, 0);
  char *j = encode(&req->base, SP_PBJSON_OTLP);
  assert_contains(j, "\"stringTable\":[\"\",\"cpu\",\"nanoseconds\"");
  assert_contains(j, "\"linkTable\":[{},{\"traceId\":\"5b8efff798038103d269b633813fc60c\","
                     "\"spanId\":\"eee19b7ec3c1b174\"}]");
  assert_contains(j, "\"stackTable\":[{},{\"locationIndices\":[1,1,0]}]");
  assert_contains(j, "\"profileId\":\"0102030405060708090a0b0c0d0e0f10\"");
  assert_contains(j, "\"originalPayload\":\"H4sIAA==\"");
  assert_contains(j, "{\"stackIndex\":1,\"attributeIndices\":[1],\"linkIndex\":1,"
                     "\"values\":[\"10000000\",\"-9223372036854775808\"],"
                     "\"timestampsUnixNano\":[\"1700000000000000001\",\"1700000000010000001\"]}");
  assert_contains(j, "\"memoryLimit\":\"18446744073709486080\"");
  assert_contains(j, "\"attributeTable\":[{},{\"keyStrindex\":8,\"value\":{\"intValue\":\"17\"}}]");
  free(j);
  sp_arena_destroy(a);
}

/* OTLP/JSON written by hand in the style of the specification's examples. */
static void test_decode_otlp_handwritten(void **state) {
  (void)state;
  const char *json =
      "{\n"
      "  \"resourceSpans\": [{\n"
      "    \"resource\": {\"attributes\": [\n"
      "      {\"key\": \"service.name\", \"value\": {\"stringValue\": \"my.service\"}},\n"
      "      {\"key\": \"n\", \"value\": {\"intValue\": 42}},\n"
      "      {\"key\": \"s\", \"value\": {\"intValue\": \"-7\"}},\n"
      "      {\"key\": \"d\", \"value\": {\"doubleValue\": \"NaN\"}},\n"
      "      {\"key\": \"e\", \"value\": {\"doubleValue\": \"1.25\"}},\n"
      "      {\"key\": \"f\", \"value\": {\"doubleValue\": \"-Infinity\"}},\n"
      "      {\"key\": \"g\", \"value\": {\"doubleValue\": 1e2}}\n"
      "    ], \"droppedAttributesCount\": null},\n"
      "    \"scopeSpans\": [{\n"
      "      \"scope\": {\"name\": \"my.library\", \"version\": \"1.0.0\", \"futureField\": [1, "
      "{}]},\n"
      "      \"spans\": [{\n"
      "        \"traceId\": \"5B8EFFF798038103D269B633813FC60C\",\n"
      "        \"spanId\": \"EEE19B7EC3C1B174\",\n"
      "        \"parent_span_id\": \"eee19b7ec3c1b173\",\n"
      "        \"name\": \"I'm a server span\",\n"
      "        \"startTimeUnixNano\": \"1544712660000000000\",\n"
      "        \"endTimeUnixNano\": 1544712661000000001,\n"
      "        \"kind\": 2,\n"
      "        \"flags\": \"257\",\n"
      "        \"dropped_attributes_count\": 1e1,\n"
      "        \"attributes\": [{\"key\": \"my.span.attr\", \"value\": {\"stringValue\": "
      "\"v\"}}],\n"
      "        \"unknownObject\": {\"deep\": [[{\"x\": null}]]},\n"
      "        \"events\": [{\"time_unix_nano\": \"1544712660500000000\", \"name\": \"ev\"}],\n"
      "        \"links\": [{\"traceId\": \"0AF7651916CD43DD8448EB211C80319C\",\n"
      "                     \"spanId\": \"\", \"flags\": 256}],\n"
      "        \"status\": {\"code\": \"STATUS_CODE_ERROR\", \"message\": null}\n"
      "      }, {\"traceId\": \"\", \"kind\": \"SPAN_KIND_CLIENT\"}]\n"
      "    }],\n"
      "    \"schemaUrl\": \"https://opentelemetry.io/schemas/1.4.0\"\n"
      "  }]\n"
      "}\n";
  sp_arena_t *a = sp_arena_create(0);
  TraceReq *req = (TraceReq *)decode_ok(TRACE_REQ_DESC, json, SP_PBJSON_OTLP, a);
  assert_int_equal(req->n_resource_spans, 1);
  ResourceSpans *rs = req->resource_spans[0];
  assert_string_equal(rs->schema_url, "https://opentelemetry.io/schemas/1.4.0");
  assert_int_equal(rs->resource->n_attributes, 7);
  assert_string_equal(rs->resource->attributes[0]->value->string_value, "my.service");
  assert_int_equal(rs->resource->attributes[1]->value->int_value, 42);
  assert_int_equal(rs->resource->attributes[2]->value->int_value, -7);
  assert_true(isnan(rs->resource->attributes[3]->value->double_value));
  assert_true(rs->resource->attributes[4]->value->double_value == 1.25);
  assert_true(isinf(rs->resource->attributes[5]->value->double_value));
  assert_true(rs->resource->attributes[6]->value->double_value == 100);
  ScopeSpans *ss = rs->scope_spans[0];
  assert_string_equal(ss->scope->name, "my.library");
  assert_int_equal(ss->n_spans, 2);
  Span *s = ss->spans[0];
  static const uint8_t tid[16] = {0x5b, 0x8e, 0xff, 0xf7, 0x98, 0x03, 0x81, 0x03,
                                  0xd2, 0x69, 0xb6, 0x33, 0x81, 0x3f, 0xc6, 0x0c};
  assert_int_equal(s->trace_id.len, 16);
  assert_memory_equal(s->trace_id.data, tid, 16);
  assert_int_equal(s->span_id.len, 8);
  assert_int_equal(s->span_id.data[0], 0xee);
  assert_int_equal(s->parent_span_id.data[7], 0x73);
  assert_string_equal(s->name, "I'm a server span");
  assert_true(s->start_time_unix_nano == 1544712660000000000ull);
  assert_true(s->end_time_unix_nano == 1544712661000000001ull); /* exact beyond 2^53 */
  assert_int_equal(s->kind, 2);
  assert_int_equal(s->flags, 257);
  assert_int_equal(s->dropped_attributes_count, 10);
  assert_int_equal(s->n_events, 1);
  assert_true(s->events[0]->time_unix_nano == 1544712660500000000ull);
  assert_int_equal(s->n_links, 1);
  assert_int_equal(s->links[0]->trace_id.len, 16);
  assert_int_equal(s->links[0]->span_id.len, 0);
  assert_int_equal(s->links[0]->flags, 256);
  assert_int_equal(s->status->code, 2);
  assert_string_equal(s->status->message, "");
  assert_int_equal(ss->spans[1]->kind, 3);
  assert_int_equal(ss->spans[1]->trace_id.len, 0);

  /* The decoded message packs; the canonical JSON re-encodes from it. */
  size_t n;
  free(pack(&req->base, &n));
  char *j = encode(&req->base, SP_PBJSON_OTLP);
  assert_contains(j, "\"traceId\":\"5b8efff798038103d269b633813fc60c\"");
  assert_contains(j, "\"doubleValue\":\"NaN\"");
  assert_contains(j, "\"doubleValue\":\"-Infinity\"");
  assert_contains(j, "\"droppedAttributesCount\":10");
  free(j);
  sp_arena_destroy(a);
}

/* Pyroscope's Connect JSON: standard protobuf JSON, so bytes are base64. */
static void test_decode_push_request(void **state) {
  (void)state;
  const char *json = "{\"series\":[{\"labels\":[{\"name\":\"__name__\",\"value\":\"process_cpu\"},"
                     "{\"name\":\"service_name\",\"value\":\"app\"}],"
                     "\"samples\":[{\"rawProfile\":\"AAEC/w==\",\"ID\":\"734FD599\"},"
                     "{\"raw_profile\":\"AAEC_w\"},{\"rawProfile\":\"\"}],"
                     "\"annotations\":[{\"key\":\"k\",\"value\":\"v\"}]}],\"extra\":true}";
  sp_arena_t *a = sp_arena_create(0);
  Push__V1__PushRequest *req =
      (Push__V1__PushRequest *)decode_ok(&push__v1__push_request__descriptor, json, 0, a);
  assert_int_equal(req->n_series, 1);
  Push__V1__RawProfileSeries *s = req->series[0];
  assert_int_equal(s->n_labels, 2);
  assert_string_equal(s->labels[0]->name, "__name__");
  assert_string_equal(s->labels[1]->value, "app");
  assert_int_equal(s->n_samples, 3);
  static const uint8_t want[4] = {0, 1, 2, 0xff};
  assert_int_equal(s->samples[0]->raw_profile.len, 4);
  assert_memory_equal(s->samples[0]->raw_profile.data, want, 4);
  assert_string_equal(s->samples[0]->id, "734FD599");
  assert_int_equal(s->samples[1]->raw_profile.len, 4);
  assert_memory_equal(s->samples[1]->raw_profile.data, want, 4);
  assert_int_equal(s->samples[2]->raw_profile.len, 0);
  assert_int_equal(s->n_annotations, 1);
  char *j = encode(&req->base, 0);
  assert_string_equal(j,
                      "{\"series\":[{\"labels\":[{\"name\":\"__name__\",\"value\":\"process_cpu\"},"
                      "{\"name\":\"service_name\",\"value\":\"app\"}],"
                      "\"samples\":[{\"rawProfile\":\"AAEC/w==\",\"ID\":\"734FD599\"},"
                      "{\"rawProfile\":\"AAEC/w==\"},{}],"
                      "\"annotations\":[{\"key\":\"k\",\"value\":\"v\"}]}]}");
  free(j);
  sp_arena_destroy(a);
}

/* google.rpc.Status with Any details: RetryInfo (Duration), ErrorInfo (map). */
static void test_status_any_duration_map(void **state) {
  (void)state;
  sp_arena_t *a = sp_arena_create(0);
  Google__Rpc__RetryInfo ri = GOOGLE__RPC__RETRY_INFO__INIT;
  Google__Protobuf__Duration dur = GOOGLE__PROTOBUF__DURATION__INIT;
  dur.seconds = 1;
  dur.nanos = 500000000;
  ri.retry_delay = &dur;
  Google__Rpc__ErrorInfo ei = GOOGLE__RPC__ERROR_INFO__INIT;
  ei.reason = "QUEUE_FULL";
  ei.domain = "spanprof";
  Google__Rpc__ErrorInfo__MetadataEntry e1 = GOOGLE__RPC__ERROR_INFO__METADATA_ENTRY__INIT;
  Google__Rpc__ErrorInfo__MetadataEntry e2 = GOOGLE__RPC__ERROR_INFO__METADATA_ENTRY__INIT;
  e1.key = "exporter";
  e1.value = "otlp/tempo";
  e2.key = "queue";
  e2.value = "1000";
  Google__Rpc__ErrorInfo__MetadataEntry *entries[] = {&e1, &e2};
  ei.n_metadata = 2;
  ei.metadata = entries;

  Google__Protobuf__Any any[3] = {GOOGLE__PROTOBUF__ANY__INIT, GOOGLE__PROTOBUF__ANY__INIT,
                                  GOOGLE__PROTOBUF__ANY__INIT};
  size_t n1, n2;
  any[0].type_url = "type.googleapis.com/google.rpc.RetryInfo";
  any[0].value.data = pack(&ri.base, &n1);
  any[0].value.len = n1;
  any[1].type_url = "type.googleapis.com/google.rpc.ErrorInfo";
  any[1].value.data = pack(&ei.base, &n2);
  any[1].value.len = n2;
  any[2].type_url = "type.googleapis.com/example.Unknown";
  any[2].value.data = (uint8_t *)"\x08\x01";
  any[2].value.len = 2;
  Google__Protobuf__Any *details[] = {&any[0], &any[1], &any[2]};
  Google__Rpc__Status st = GOOGLE__RPC__STATUS__INIT;
  st.code = 8;
  st.message = "exporter queue is full";
  st.n_details = 3;
  st.details = details;

  char *j = encode(&st.base, 0);
  assert_string_equal(
      j, "{\"code\":8,\"message\":\"exporter queue is full\",\"details\":["
         "{\"@type\":\"type.googleapis.com/google.rpc.RetryInfo\",\"retryDelay\":\"1.500s\"},"
         "{\"@type\":\"type.googleapis.com/google.rpc.ErrorInfo\",\"reason\":\"QUEUE_FULL\","
         "\"domain\":\"spanprof\",\"metadata\":{\"exporter\":\"otlp/tempo\",\"queue\":\"1000\"}},"
         "{\"@type\":\"type.googleapis.com/example.Unknown\",\"value\":\"CAE=\"}]}");
  check_round_trip(&st.base, 0);

  /* Durations in all their forms. */
  static const struct {
    int64_t s;
    int32_t ns;
    const char *text;
  } durs[] = {{0, 0, "\"0s\""},
              {3, 0, "\"3s\""},
              {0, 1000, "\"0.000001s\""},
              {-1, -250000000, "\"-1.250s\""},
              {0, -5, "\"-0.000000005s\""},
              {315576000000LL, 999999999, "\"315576000000.999999999s\""}};
  for (size_t i = 0; i < sizeof durs / sizeof durs[0]; i++) {
    dur.seconds = durs[i].s;
    dur.nanos = durs[i].ns;
    char *t = encode(&dur.base, 0);
    assert_string_equal(t, durs[i].text);
    Google__Protobuf__Duration *back =
        (Google__Protobuf__Duration *)decode_ok(&google__protobuf__duration__descriptor, t, 0, a);
    assert_true(back->seconds == durs[i].s);
    assert_int_equal(back->nanos, durs[i].ns);
    free(t);
  }
  free(any[0].value.data);
  free(any[1].value.data);
  free(j);
  sp_arena_destroy(a);
}

/* Smaller rules: keys with NULs are unknown, encode depth is bounded,
 * int fields take numeric strings and integral exponents. */
static void test_edge_cases(void **state) {
  (void)state;
  sp_arena_t *a = sp_arena_create(0);
  TraceReq *req = (TraceReq *)decode_ok(
      TRACE_REQ_DESC,
      "{\"resourceSpans\":[{\"schemaUrl\\u0000x\":\"a\",\"resource\":{\"droppedAttributesCount\":"
      "\"2.5e1\"}}]}",
      SP_PBJSON_OTLP, a);
  assert_string_equal(req->resource_spans[0]->schema_url, "");
  assert_int_equal(req->resource_spans[0]->resource->dropped_attributes_count, 25);

  /* AnyValue -> ArrayValue -> AnyValue ... deeper than SP_PBJSON_MAX_DEPTH. */
  AnyValue *v = av_str(a, "leaf");
  for (int i = 0; i < SP_PBJSON_MAX_DEPTH; i++)
    v = av_array(a, 1, &v);
  sp_buf_t b;
  sp_buf_init(&b, 0);
  assert_int_equal(sp_buf_puts(&b, "x"), 0);
  assert_int_equal(sp_pbjson_encode(&v->base, SP_PBJSON_OTLP, &b), SP_EPROTO);
  assert_int_equal(b.len, 1);
  sp_buf_free(&b);
  sp_arena_destroy(a);
}

typedef struct {
  const ProtobufCMessageDescriptor *desc;
  unsigned flags;
  const char *json;
  const char *err;
} err_case_t;

static void test_errors(void **state) {
  (void)state;
  const ProtobufCMessageDescriptor *T = TRACE_REQ_DESC;
  const unsigned O = SP_PBJSON_OTLP;
  static char bomb[4096];
  size_t k = (size_t)snprintf(bomb, sizeof bomb, "{\"resourceSpans\":");
  for (int i = 0; i < 300; i++)
    bomb[k++] = '[';
  bomb[k] = '\0';
  const err_case_t cases[] = {
      {T, O,
       "{\"resourceSpans\":[{\"scopeSpans\":[{},{\"spans\":[{},{},{},"
       "{\"traceId\":\"0123456789abcdef0123456789abcde\"}]}]}]}",
       "resourceSpans[0].scopeSpans[1].spans[3].traceId: invalid hex (expected 32 chars, got 31)"},
      {T, O,
       "{\"resourceSpans\":[{\"scopeSpans\":[{\"spans\":[{\"spanId\":\"0123456789abcdef01\"}]}]}]}",
       "resourceSpans[0].scopeSpans[0].spans[0].spanId: invalid hex (expected 16 chars, got 18)"},
      {T, O,
       "{\"resourceSpans\":[{\"scopeSpans\":[{\"spans\":[{\"parentSpanId\":\"0123456789abcdeg\"}]}]"
       "}]}",
       "resourceSpans[0].scopeSpans[0].spans[0].parentSpanId: invalid hex (non-hex character at "
       "position 15)"},
      {T, O,
       "{\"resourceSpans\":[{\"scopeSpans\":[{\"spans\":[{\"links\":[{\"spanId\":\"abcd\"}]}]}]}]}",
       "resourceSpans[0].scopeSpans[0].spans[0].links[0].spanId: invalid hex (expected 16 chars, "
       "got 4)"},
      {T, O, "{\"resourceSpans\":[{\"scopeSpans\":[{\"spans\":[{\"name\":5}]}]}]}",
       "resourceSpans[0].scopeSpans[0].spans[0].name: expected string, got number"},
      {T, O, "{\"resourceSpans\":[{\"scopeSpans\":[{\"spans\":[{\"kind\":\"SPAN_KIND_FOO\"}]}]}]}",
       "resourceSpans[0].scopeSpans[0].spans[0].kind: unknown value \"SPAN_KIND_FOO\" for enum "
       "opentelemetry.proto.trace.v1.Span.SpanKind"},
      {T, O, "{\"resourceSpans\":[{\"scopeSpans\":[{\"spans\":[{\"kind\":true}]}]}]}",
       "resourceSpans[0].scopeSpans[0].spans[0].kind: expected enum integer or name, got boolean"},
      {T, O,
       "{\"resourceSpans\":[{\"scopeSpans\":[{\"spans\":[{\"startTimeUnixNano\":\"12x\"}]}]}]}",
       "resourceSpans[0].scopeSpans[0].spans[0].startTimeUnixNano: invalid integer \"12x\""},
      {T, O, "{\"resourceSpans\":[{\"scopeSpans\":[{\"spans\":[{\"startTimeUnixNano\":-1}]}]}]}",
       "resourceSpans[0].scopeSpans[0].spans[0].startTimeUnixNano: value -1 out of range for "
       "uint64"},
      {T, O,
       "{\"resourceSpans\":[{\"scopeSpans\":[{\"spans\":[{\"endTimeUnixNano\":"
       "\"18446744073709551616\"}]}]}]}",
       "resourceSpans[0].scopeSpans[0].spans[0].endTimeUnixNano: value 18446744073709551616 out of "
       "range for uint64"},
      {T, O, "{\"resourceSpans\":[{\"resource\":{\"droppedAttributesCount\":4294967296}}]}",
       "resourceSpans[0].resource.droppedAttributesCount: value 4294967296 out of range for "
       "uint32"},
      {T, O, "{\"resourceSpans\":[{\"resource\":{\"droppedAttributesCount\":1.5}}]}",
       "resourceSpans[0].resource.droppedAttributesCount: not an integer: 1.5"},
      {T, O, "{\"resourceSpans\":[{\"resource\":{\"droppedAttributesCount\":1e30}}]}",
       "resourceSpans[0].resource.droppedAttributesCount: value 1e30 out of range for uint32"},
      {T, O,
       "{\"resourceSpans\":[{\"resource\":{\"attributes\":[{\"key\":\"k\",\"value\":"
       "{\"doubleValue\":1e999}}]}}]}",
       "resourceSpans[0].resource.attributes[0].value.doubleValue: value 1e999 out of range for "
       "double"},
      {T, O,
       "{\"resourceSpans\":[{\"resource\":{\"attributes\":[{\"key\":\"k\",\"value\":"
       "{\"intValue\":\"99999999999999999999\"}}]}}]}",
       "resourceSpans[0].resource.attributes[0].value.intValue: value 99999999999999999999 out of "
       "range for int64"},
      {T, O,
       "{\"resourceSpans\":[{\"resource\":{\"attributes\":[{\"key\":\"k\",\"value\":"
       "{\"stringValue\":\"a\",\"intValue\":\"1\"}}]}}]}",
       "resourceSpans[0].resource.attributes[0].value.intValue: only one field of a oneof may be "
       "set (already set: stringValue)"},
      {T, O,
       "{\"resourceSpans\":[{\"resource\":{\"attributes\":[{\"key\":\"k\",\"value\":"
       "{\"boolValue\":\"true\"}}]}}]}",
       "resourceSpans[0].resource.attributes[0].value.boolValue: expected boolean, got string"},
      {T, O,
       "{\"resourceSpans\":[{\"resource\":{\"attributes\":[{\"key\":\"k\",\"value\":"
       "{\"bytesValue\":\"AA=A\"}}]}}]}",
       "resourceSpans[0].resource.attributes[0].value.bytesValue: invalid base64 (bad character at "
       "position 2)"},
      {T, O,
       "{\"resourceSpans\":[{\"resource\":{\"attributes\":[{\"key\":\"k\",\"value\":"
       "{\"bytesValue\":\"AA=\"}}]}}]}",
       "resourceSpans[0].resource.attributes[0].value.bytesValue: invalid base64"},
      {T, O, "{\"resourceSpans\":[{\"resource\":{\"attributes\":[{\"key\":\"k\\u0000\"}]}}]}",
       "resourceSpans[0].resource.attributes[0].key: string contains a NUL character (not "
       "supported)"},
      {T, O,
       "{\"resourceSpans\":[{\"scopeSpans\":[{\"spans\":[{\"traceId\":\"\",\"trace_id\":\"\"}]}]}]"
       "}",
       "resourceSpans[0].scopeSpans[0].spans[0].trace_id: field is set more than once"},
      {T, O, "{\"resourceSpans\":{}}", "resourceSpans: expected array, got object"},
      {T, O, "{\"resourceSpans\":[null]}",
       "resourceSpans[0]: null is not allowed in a repeated field"},
      {T, O, "{\"resourceSpans\":[{\"resource\":[]}]}",
       "resourceSpans[0].resource: expected object, got array"},
      {T, O, "[]", "expected object, got array"},
      {T, O, "{\"resourceSpans\":[{\"scopeSpans\":[{\"spans\":[{\"traceId\":\"5b8e",
       "invalid JSON at line 1, column 55 (byte 54): unterminated string"},
      {T, O, "{\"resourceSpans\":[{\"resource\":{}}",
       "invalid JSON at line 1, column 34 (byte 33): unexpected end of input, expected ',' or ']' "
       "after array element"},
      {T, O, "{\"resourceSpans\":\n  [1,]}",
       "invalid JSON at line 2, column 6 (byte 23): unexpected ']', expected a JSON value"},
      {T, O, bomb, "invalid JSON at line 1, column 117 (byte 116): nesting deeper than 100 levels"},
      {&google__rpc__status__descriptor, 0, "{\"details\":[{\"@type\":\"x/a.B\",\"f\":1}]}",
       "details[0]: unknown type \"x/a.B\" in Any"},
      {&google__rpc__retry_info__descriptor, 0, "{\"retryDelay\":\"1.5\"}",
       "retryDelay: invalid duration \"1.5\" (expected e.g. \"1.5s\")"},
      {&push__v1__push_request__descriptor, 0,
       "{\"series\":[{\"samples\":[{\"rawProfile\":\"AA*A\"}]}]}",
       "series[0].samples[0].rawProfile: invalid base64 (bad character at position 2)"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    const err_case_t *c = &cases[i];
    ProtobufCMessage *m = (ProtobufCMessage *)1;
    char err[256];
    /* The heap allocator: a leak of the partial message would show under ASan. */
    int rc =
        sp_pbjson_decode(c->desc, c->json, strlen(c->json), c->flags, NULL, &m, err, sizeof err);
    if (rc != SP_EPROTO || strcmp(err, c->err) != 0)
      fail_msg("case %zu: rc %d\n  got:  %s\n  want: %s", i, rc, err, c->err);
    assert_null(m);
  }

  /* A short error buffer truncates but stays terminated; NULL err is fine. */
  char small[16];
  ProtobufCMessage *m;
  assert_int_equal(
      sp_pbjson_decode(T, "{\"resourceSpans\":5}", 19, O, NULL, &m, small, sizeof small),
      SP_EPROTO);
  assert_string_equal(small, "resourceSpans: ");
  assert_int_equal(sp_pbjson_decode(T, "{\"resourceSpans\":5}", 19, O, NULL, &m, NULL, 0),
                   SP_EPROTO);
}

static void test_alloc_failures(void **state) {
  (void)state;
  sp_arena_t *a = sp_arena_create(0);
  TraceReq *req = build_trace_request(a);
  char *json = encode(&req->base, SP_PBJSON_OTLP);
  size_t want_len;
  uint8_t *want = pack(&req->base, &want_len);
  sp_arena_destroy(a);

  /* Decode through the heap allocator (sp_malloc): every failure point must
   * report SP_ENOMEM and free the partial message (ASan checks leaks). */
  int done = 0;
  long n;
  for (n = 0; n < 100000 && !done; n++) {
    ProtobufCMessage *m = NULL;
    char err[64];
    sp_alloc_set_fail_after(n);
    int rc = sp_pbjson_decode(TRACE_REQ_DESC, json, strlen(json), SP_PBJSON_OTLP, NULL, &m, err,
                              sizeof err);
    sp_alloc_set_fail_after(-1);
    if (rc == 0) {
      size_t len;
      uint8_t *got = pack(m, &len);
      assert_int_equal(len, want_len);
      assert_memory_equal(got, want, len);
      free(got);
      protobuf_c_message_free_unpacked(m, sp_pbjson_heap_allocator());
      done = 1;
    } else {
      assert_int_equal(rc, SP_ENOMEM);
      assert_string_equal(err, "out of memory");
      assert_null(m);
    }
  }
  assert_true(done);
  assert_true(n > 100); /* the injection really hit many allocation points */

  /* The same through an arena allocator. */
  done = 0;
  for (n = 0; n < 100000 && !done; n += 1) {
    sp_arena_t *ar = sp_arena_create(256);
    ProtobufCMessage *m = NULL;
    sp_alloc_set_fail_after(n);
    int rc = sp_pbjson_decode(TRACE_REQ_DESC, json, strlen(json), SP_PBJSON_OTLP, sp_arena_pbc(ar),
                              &m, NULL, 0);
    sp_alloc_set_fail_after(-1);
    if (rc == 0)
      done = 1;
    else
      assert_int_equal(rc, SP_ENOMEM);
    sp_arena_destroy(ar);
  }
  assert_true(done);

  /* Encode: a failed buffer growth leaves the buffer as it was. */
  a = sp_arena_create(0);
  req = build_trace_request(a);
  sp_buf_t b;
  sp_buf_init(&b, 0);
  assert_int_equal(sp_buf_puts(&b, "prefix"), 0);
  sp_alloc_set_fail_after(0);
  assert_int_equal(sp_pbjson_encode(&req->base, SP_PBJSON_OTLP, &b), SP_ENOMEM);
  sp_alloc_set_fail_after(-1);
  assert_int_equal(b.len, 6);
  sp_buf_free(&b);
  sp_buf_init(&b, 100);
  assert_int_equal(sp_pbjson_encode(&req->base, SP_PBJSON_OTLP, &b), SP_ETOOBIG);
  assert_int_equal(b.len, 0);
  sp_buf_free(&b);
  sp_arena_destroy(a);
  free(json);
  free(want);
}

/* A few MB of OTLP JSON (4000 spans) decode and encode back to the same
 * text. Speed is measured by tests/bench/bench_pbjson.c, not here. */
static void test_large_request(void **state) {
  (void)state;
  sp_arena_t *a = sp_arena_create(0);
  TraceReq *req = build_trace_request(a);
  ScopeSpans *ss = req->resource_spans[0]->scope_spans[0];
  enum { NSPANS = 4000 };
  Span **spans = new_array(a, NSPANS, sizeof(Span *));
  for (size_t i = 0; i < NSPANS; i++)
    spans[i] = ss->spans[i % 2];
  ss->spans = spans;
  ss->n_spans = NSPANS;
  char *json = encode(&req->base, SP_PBJSON_OTLP);
  size_t len = strlen(json);
  sp_arena_destroy(a);

  sp_arena_t *ar = sp_arena_create(1 << 16);
  ProtobufCMessage *m = decode_ok(TRACE_REQ_DESC, json, SP_PBJSON_OTLP, ar);
  assert_int_equal(((TraceReq *)m)->resource_spans[0]->scope_spans[0]->n_spans, NSPANS);
  sp_buf_t b;
  sp_buf_init(&b, 0);
  assert_int_equal(sp_pbjson_encode(m, SP_PBJSON_OTLP, &b), 0);
  assert_int_equal(b.len, len);
  assert_memory_equal(b.data, json, len);
  sp_buf_free(&b);
  sp_arena_destroy(ar);
  free(json);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_trace_round_trip),
      cmocka_unit_test(test_profiles_round_trip),
      cmocka_unit_test(test_decode_otlp_handwritten),
      cmocka_unit_test(test_decode_push_request),
      cmocka_unit_test(test_status_any_duration_map),
      cmocka_unit_test(test_edge_cases),
      cmocka_unit_test(test_errors),
      cmocka_unit_test(test_alloc_failures),
      cmocka_unit_test(test_large_request),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
