/*
 * grpc_util.c — google.rpc.Status/RetryInfo by hand, channel arguments, PEM
 * files (see grpc_util.h).
 *
 * The protobuf wire format needed here is small: varints and
 * length-delimited fields. Field numbers (google/rpc/status.proto,
 * google/rpc/error_details.proto, google/protobuf/{any,duration}.proto):
 *   Status    { int32 code = 1; string message = 2; repeated Any details = 3; }
 *   Any       { string type_url = 1; bytes value = 2; }
 *   RetryInfo { Duration retry_delay = 1; }
 *   Duration  { int64 seconds = 1; int32 nanos = 2; }
 */
#include "pipeline/transport/grpc_util.h"

#include "pipeline/alloc.h"
#include "pipeline/error.h"
#include "pipeline/log.h"

#include <errno.h>
#include <grpc/support/log.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <uv.h>

#include "pipeline/transport/grpc_dl.h" /* last: grpc calls go through the table */

/* ---- grpc core's logs ---------------------------------------------------------- */

static void route_log(gpr_log_func_args *a) {
  sp_log_level_t level = a->severity == GPR_LOG_SEVERITY_ERROR ? SP_LOG_WARN : SP_LOG_DEBUG;
  if (!sp_log_enabled(level)) return;
  const char *file = a->file ? strrchr(a->file, '/') : NULL;
  sp_log(level, "grpc", "%s (%s:%d)", a->message ? a->message : "",
         file ? file + 1 : (a->file ? a->file : "?"), a->line);
}

static uv_once_t log_once = UV_ONCE_INIT;

static void install_log(void) { gpr_set_log_function(route_log); }

int sp__grpc_load(const char *component) {
  char err[512];
  int rc = sp_grpc_dl_load(err, sizeof err);
  if (rc != 0) sp_log_error(component ? component : "grpc", "%s", err);
  return rc;
}

void sp__grpc_init(void) {
  uv_once(&log_once, install_log);
  grpc_init();
}

/* ---- encoding --------------------------------------------------------------- */

static size_t varint_len(uint64_t v) {
  size_t n = 1;
  while (v >= 0x80) {
    v >>= 7;
    n++;
  }
  return n;
}

static uint8_t *put_varint(uint8_t *p, uint64_t v) {
  while (v >= 0x80) {
    *p++ = (uint8_t)(v | 0x80);
    v >>= 7;
  }
  *p++ = (uint8_t)v;
  return p;
}

/* Size of a length-delimited field whose payload is @p len bytes (one-byte tag). */
static size_t field_len(size_t len) { return 1 + varint_len(len) + len; }

grpc_slice sp__grpc_status_details_encode(int code, const char *message, uint64_t retry_after_ms) {
  size_t msg_len = message ? strlen(message) : 0;
  uint64_t seconds = retry_after_ms / 1000;
  uint64_t nanos = (retry_after_ms % 1000) * 1000000u;
  size_t type_len = sizeof(SP__GRPC_RETRY_INFO_TYPE) - 1;

  size_t dur_len = (seconds ? 1 + varint_len(seconds) : 0) + (nanos ? 1 + varint_len(nanos) : 0);
  size_t retry_len = field_len(dur_len);
  size_t any_len = field_len(type_len) + field_len(retry_len);
  /* int32 is encoded sign-extended to 64 bits, as protobuf does. */
  uint64_t code_v = (uint64_t)(int64_t)code;
  size_t total = (code ? 1 + varint_len(code_v) : 0) + (msg_len ? field_len(msg_len) : 0) +
                 (retry_after_ms ? field_len(any_len) : 0);

  grpc_slice s = grpc_slice_malloc(total);
  uint8_t *p = GRPC_SLICE_START_PTR(s);
  if (code) {
    *p++ = 0x08;
    p = put_varint(p, code_v);
  }
  if (msg_len) {
    *p++ = 0x12;
    p = put_varint(p, msg_len);
    memcpy(p, message, msg_len);
    p += msg_len;
  }
  if (retry_after_ms) {
    *p++ = 0x1a; /* Status.details */
    p = put_varint(p, any_len);
    *p++ = 0x0a; /* Any.type_url */
    p = put_varint(p, type_len);
    memcpy(p, SP__GRPC_RETRY_INFO_TYPE, type_len);
    p += type_len;
    *p++ = 0x12; /* Any.value = RetryInfo */
    p = put_varint(p, retry_len);
    *p++ = 0x0a; /* RetryInfo.retry_delay = Duration */
    p = put_varint(p, dur_len);
    if (seconds) {
      *p++ = 0x08;
      p = put_varint(p, seconds);
    }
    if (nanos) {
      *p++ = 0x10;
      p = put_varint(p, nanos);
    }
  }
  return s;
}

/* ---- parsing ---------------------------------------------------------------- */

typedef struct {
  const uint8_t *p, *end;
} pb_reader_t;

static int get_varint(pb_reader_t *r, uint64_t *out) {
  uint64_t v = 0;
  for (int shift = 0; shift < 64; shift += 7) {
    if (r->p >= r->end) return -1;
    uint8_t b = *r->p++;
    v |= (uint64_t)(b & 0x7f) << shift;
    if (!(b & 0x80)) {
      *out = v;
      return 0;
    }
  }
  return -1;
}

/*
 * Reads the next field: its number, wire type, and for length-delimited
 * fields the payload (@p sub); varints land in @p v. Other wire types are
 * skipped. -1 on malformed input.
 */
static int next_field(pb_reader_t *r, uint32_t *field, int *wt, uint64_t *v, pb_reader_t *sub) {
  uint64_t key;
  if (get_varint(r, &key) < 0) return -1;
  *field = (uint32_t)(key >> 3);
  *wt = (int)(key & 7);
  switch (*wt) {
  case 0: return get_varint(r, v);
  case 1:
    if (r->end - r->p < 8) return -1;
    r->p += 8;
    return 0;
  case 5:
    if (r->end - r->p < 4) return -1;
    r->p += 4;
    return 0;
  case 2: {
    uint64_t n;
    if (get_varint(r, &n) < 0 || n > (uint64_t)(r->end - r->p)) return -1;
    sub->p = r->p;
    sub->end = r->p + n;
    r->p += n;
    return 0;
  }
  default: return -1;
  }
}

/* Duration → milliseconds (rounded up); 0 for negative or malformed values. */
static uint64_t duration_ms(pb_reader_t r) {
  int64_t seconds = 0, nanos = 0;
  while (r.p < r.end) {
    uint32_t f;
    int wt;
    uint64_t v = 0;
    pb_reader_t sub;
    if (next_field(&r, &f, &wt, &v, &sub) < 0) return 0;
    if (f == 1 && wt == 0) seconds = (int64_t)v;
    if (f == 2 && wt == 0) nanos = (int32_t)(uint32_t)v;
  }
  if (seconds < 0 || nanos < 0 || nanos > 999999999) return 0;
  if ((uint64_t)seconds > UINT64_MAX / 1000 - 1) return UINT64_MAX;
  return (uint64_t)seconds * 1000 + ((uint64_t)nanos + 999999) / 1000000;
}

static uint64_t retry_info_ms(pb_reader_t r) {
  while (r.p < r.end) {
    uint32_t f;
    int wt;
    uint64_t v;
    pb_reader_t sub;
    if (next_field(&r, &f, &wt, &v, &sub) < 0) return 0;
    if (f == 1 && wt == 2) return duration_ms(sub);
  }
  return 0;
}

/* One Any: returns the RetryInfo delay if it is one, else 0. */
static uint64_t any_retry_ms(pb_reader_t r) {
  pb_reader_t type = {NULL, NULL}, value = {NULL, NULL};
  while (r.p < r.end) {
    uint32_t f;
    int wt;
    uint64_t v;
    pb_reader_t sub;
    if (next_field(&r, &f, &wt, &v, &sub) < 0) return 0;
    if (f == 1 && wt == 2) type = sub;
    if (f == 2 && wt == 2) value = sub;
  }
  size_t tl = sizeof(SP__GRPC_RETRY_INFO_TYPE) - 1;
  if (!type.p || (size_t)(type.end - type.p) != tl ||
      memcmp(type.p, SP__GRPC_RETRY_INFO_TYPE, tl) != 0 || !value.p)
    return 0;
  return retry_info_ms(value);
}

uint64_t sp__grpc_status_details_retry_ms(const uint8_t *p, size_t len) {
  if (!p) return 0;
  pb_reader_t r = {p, p + len};
  while (r.p < r.end) {
    uint32_t f;
    int wt;
    uint64_t v;
    pb_reader_t sub;
    if (next_field(&r, &f, &wt, &v, &sub) < 0) return 0;
    if (f == 3 && wt == 2) {
      uint64_t ms = any_retry_ms(sub);
      if (ms) return ms;
    }
  }
  return 0;
}

/* ---- files, TLS settings, channel arguments ----------------------------------- */

#define PEM_MAX_SIZE (16u << 20)

int sp__grpc_read_pem(const char *component, const char *what, const char *path, char **out) {
  int rc = SP_ECONFIG;
  char *data = NULL;
  FILE *f = NULL;
  struct stat st;
  *out = NULL;
  if (!path || !*path) {
    sp_log_error(component, "tls: %s is not set", what);
    goto fail;
  }
  f = fopen(path, "rb");
  if (!f || fstat(fileno(f), &st) != 0) {
    sp_log_error(component, "tls: cannot open %s %s: %s", what, path, strerror(errno));
    goto fail;
  }
  if (st.st_size <= 0 || (uint64_t)st.st_size > PEM_MAX_SIZE) {
    sp_log_error(component, "tls: %s %s is empty or larger than 16 MiB", what, path);
    goto fail;
  }
  data = sp_malloc((size_t)st.st_size + 1);
  if (!data) {
    rc = SP_ENOMEM;
    goto fail;
  }
  size_t n = fread(data, 1, (size_t)st.st_size, f);
  if (n == 0 || ferror(f)) {
    sp_log_error(component, "tls: cannot read %s %s", what, path);
    goto fail;
  }
  data[n] = '\0';
  fclose(f);
  *out = data;
  return 0;
fail:
  if (f) fclose(f);
  sp_free(data);
  return rc;
}

int sp__grpc_check_tls_version(const char *component, const sp_tls_config_t *tls) {
  const char *v = tls ? tls->min_version : NULL;
  if (!v || !*v || strcmp(v, "1.2") == 0) return 0;
  sp_log_error(component,
               "tls: min_version \"%s\" is not supported by the gRPC transport (grpc core "
               "negotiates TLS 1.2 or 1.3 and cannot require 1.3); use \"1.2\"",
               v);
  return SP_ECONFIG;
}

void sp__grpc_args_int(sp__grpc_args_t *a, const char *key, int value) {
  if (a->n >= sizeof(a->v) / sizeof(a->v[0])) return;
  grpc_arg *g = &a->v[a->n++];
  g->type = GRPC_ARG_INTEGER;
  g->key = (char *)key;
  g->value.integer = value;
}

void sp__grpc_args_str(sp__grpc_args_t *a, const char *key, const char *value) {
  if (a->n >= sizeof(a->v) / sizeof(a->v[0])) return;
  grpc_arg *g = &a->v[a->n++];
  g->type = GRPC_ARG_STRING;
  g->key = (char *)key;
  g->value.string = (char *)value;
}

int sp__grpc_clamp_int(uint64_t v) { return v > (uint64_t)INT_MAX ? INT_MAX : (int)v; }
