/*
 * file exporter — writes data to local files, for development, tests and
 * audits.
 *
 * Under `path` (a directory, created when missing):
 *   traces.jsonl    one OTLP/JSON ExportTraceServiceRequest per line (the
 *                   spec's JSON: hex IDs, lowerCamelCase keys, 64-bit
 *                   integers as strings) — what the Collector's file
 *                   exporter writes;
 *   profiles.jsonl  one JSON object per profile: series labels, time range,
 *                   sample types, and every sample with its values, labels,
 *                   timestamp and thread id when known, plus the name of the
 *                   pprof file holding the profile;
 *   pprof/          the pprof bytes of each profile (uncompressed).
 * Each .jsonl file is rotated when it passes `rotation.max_megabytes`:
 * renamed to .1 (older backups shift up), keeping `rotation.max_backups`;
 * pprof files referenced only by a discarded backup are deleted with it.
 *
 * Writes are synchronous write(2) calls on the loop thread: this exporter
 * serves development and tests, where simplicity beats throughput. A write
 * failure refuses the batch retryably (the disk may free up).
 */
#include "pipeline/alloc.h"
#include "pipeline/buf.h"
#include "pipeline/component.h"
#include "pipeline/defer.h"
#include "pipeline/error.h"
#include "pipeline/json.h"
#include "pipeline/log.h"
#include "pipeline/pbjson.h"

#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

typedef struct sp_rotation_cfg_s {
  int64_t max_megabytes;
  int64_t max_backups;
} sp_rotation_cfg_t;

typedef struct sp_file_cfg_s {
  char *path;
  sp_rotation_cfg_t rotation;
  bool samples;
} sp_file_cfg_t;

static const sp_cfg_field_t sp__rotation_fields[] = {
    {.key = "max_megabytes", .type = SP_CFG_INT,
     .offset = offsetof(sp_rotation_cfg_t, max_megabytes), .def = "100", .min = 1, .max = 1e6},
    {.key = "max_backups", .type = SP_CFG_INT, .offset = offsetof(sp_rotation_cfg_t, max_backups),
     .def = "3", .min = 0, .max = 1000},
};
static const sp_cfg_schema_t sp__rotation_schema = {sp__rotation_fields, 2,
                                                    sizeof(sp_rotation_cfg_t), NULL};

static const sp_cfg_field_t sp__file_fields[] = {
    {.key = "path", .type = SP_CFG_STRING, .offset = offsetof(sp_file_cfg_t, path),
     .def = "./spanprof-data", .flags = SP_CFG_NONEMPTY},
    {.key = "rotation", .type = SP_CFG_SECTION, .offset = offsetof(sp_file_cfg_t, rotation),
     .section = &sp__rotation_schema},
    {.key = "samples", .type = SP_CFG_BOOL, .offset = offsetof(sp_file_cfg_t, samples),
     .def = "true"},
};
static const sp_cfg_schema_t sp__file_schema = {sp__file_fields, 3, sizeof(sp_file_cfg_t), NULL};

#define SP_FILE_MAX_GENERATIONS 1002

/* One rotated .jsonl stream. */
typedef struct sp_stream_s {
  const char *name; /* "traces" or "profiles" */
  int fd;
  uint64_t size;
  /* profiles: first pprof sequence number of the live file and of each backup */
  uint64_t gen_first_seq[SP_FILE_MAX_GENERATIONS];
} sp_stream_t;

typedef struct sp_file_s {
  sp_component_t base;
  sp_consumer_t input;
  const sp_file_cfg_t *cfg;
  sp_stream_t traces;
  sp_stream_t profiles;
  uint64_t pprof_seq;
  char run_prefix[32]; /* keeps pprof names unique across restarts */
  sp_metric_t *sent_spans, *sent_profiles, *failed_spans, *failed_profiles;
  bool shut;
  sp_deferral_t deferral; /* the shutdown report: cannot fail for lack of memory */
} sp_file_t;

#define SP_FILE_FROM_INPUT(c) ((sp_file_t *)((char *)(c) - offsetof(sp_file_t, input)))

static int sp__mkdirs(const char *path) {
  char tmp[4096];
  snprintf(tmp, sizeof(tmp), "%s", path);
  for (char *p = tmp + 1; *p; p++)
    if (*p == '/') {
      *p = '\0';
      if (mkdir(tmp, 0755) != 0 && errno != EEXIST)
        return -1;
      *p = '/';
    }
  return mkdir(tmp, 0755) != 0 && errno != EEXIST ? -1 : 0;
}

static int sp__stream_open(sp_file_t *self, sp_stream_t *st) {
  char path[4096];
  snprintf(path, sizeof(path), "%s/%s.jsonl", self->cfg->path, st->name);
  st->fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (st->fd < 0) {
    sp_log_error(self->base.id, "cannot open %s: %s", path, strerror(errno));
    return SP_EIO;
  }
  struct stat sb;
  st->size = fstat(st->fd, &sb) == 0 ? (uint64_t)sb.st_size : 0;
  return 0;
}

static void sp__remove_pprofs(sp_file_t *self, uint64_t from, uint64_t to) {
  char path[4096];
  for (uint64_t s = from; s < to; s++) {
    snprintf(path, sizeof(path), "%s/pprof/%s-%06llu.pprof", self->cfg->path, self->run_prefix,
             (unsigned long long)s);
    unlink(path);
  }
}

/* Renames name.jsonl → name.jsonl.1 → ... and drops the oldest backup. */
static int sp__rotate(sp_file_t *self, sp_stream_t *st) {
  int64_t backups = self->cfg->rotation.max_backups;
  char from[4096], to[4096];
  close(st->fd);
  st->fd = -1;
  if (backups == 0) {
    snprintf(from, sizeof(from), "%s/%s.jsonl", self->cfg->path, st->name);
    unlink(from);
  } else {
    snprintf(from, sizeof(from), "%s/%s.jsonl.%lld", self->cfg->path, st->name,
             (long long)backups);
    unlink(from);
    for (int64_t i = backups - 1; i >= 0; i--) {
      if (i == 0)
        snprintf(from, sizeof(from), "%s/%s.jsonl", self->cfg->path, st->name);
      else
        snprintf(from, sizeof(from), "%s/%s.jsonl.%lld", self->cfg->path, st->name, (long long)i);
      snprintf(to, sizeof(to), "%s/%s.jsonl.%lld", self->cfg->path, st->name, (long long)i + 1);
      rename(from, to);
    }
  }
  /* The generation that fell off the end takes its pprof files with it. */
  if (st == &self->profiles) {
    uint64_t dropped_from = st->gen_first_seq[backups];
    uint64_t dropped_to = backups > 0 ? st->gen_first_seq[backups - 1] : self->pprof_seq;
    sp__remove_pprofs(self, dropped_from, dropped_to);
    memmove(&st->gen_first_seq[1], &st->gen_first_seq[0], (size_t)backups * sizeof(uint64_t));
    st->gen_first_seq[0] = self->pprof_seq;
  }
  return sp__stream_open(self, st);
}

static int sp__write_line(sp_file_t *self, sp_stream_t *st, sp_buf_t *line) {
  if (sp_buf_putc(line, '\n') != 0)
    return SP_ENOMEM;
  uint64_t limit = (uint64_t)self->cfg->rotation.max_megabytes << 20;
  if (st->size > 0 && st->size + line->len > limit) {
    int rc = sp__rotate(self, st);
    if (rc != 0)
      return rc;
  }
  size_t off = 0;
  while (off < line->len) {
    ssize_t n = write(st->fd, line->data + off, line->len - off);
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0) {
      sp_log_error(self->base.id, "write to %s.jsonl failed: %s", st->name, strerror(errno));
      return SP_EIO;
    }
    off += (size_t)n;
  }
  st->size += line->len;
  return 0;
}

static int sp__file_traces(sp_consumer_t *c, sp_traces_t *batch) {
  sp_file_t *self = SP_FILE_FROM_INPUT(c);
  sp_buf_t line;
  sp_buf_init(&line, 0);
  int rc = SP_ENOMEM;
  const sp_otlp_traces_req_t *req = sp_traces_request(batch);
  if (req != NULL && sp_pbjson_encode(&req->base, SP_PBJSON_OTLP, &line) == 0)
    rc = sp__write_line(self, &self->traces, &line);
  sp_metric_add(rc == 0 ? self->sent_spans : self->failed_spans, batch->span_count);
  sp_buf_free(&line);
  sp_traces_unref(batch);
  return rc == 0 ? 0 : SP_EAGAIN;
}

static const char *sp__str(const sp_pprof_t *pp, int64_t i) {
  return i >= 0 && (size_t)i < pp->n_string_table ? pp->string_table[i] : "";
}

static int sp__write_samples(sp_buf_t *o, const sp_profile_t *p, const sp_pprof_t *pp) {
  int rc = sp_buf_puts(o, ",\"samples\":[");
  for (size_t s = 0; s < pp->n_sample && rc == 0; s++) {
    const Perftools__Profiles__Sample *smp = pp->sample[s];
    rc |= sp_buf_puts(o, s ? ",{\"values\":[" : "{\"values\":[");
    for (size_t v = 0; v < smp->n_value; v++) {
      if (v)
        rc |= sp_buf_putc(o, ',');
      rc |= sp_json_write_int64(o, smp->value[v]);
    }
    rc |= sp_buf_puts(o, "],\"labels\":{");
    for (size_t l = 0; l < smp->n_label; l++) {
      const Perftools__Profiles__Label *lb = smp->label[l];
      if (l)
        rc |= sp_buf_putc(o, ',');
      const char *k = sp__str(pp, lb->key);
      rc |= sp_json_write_string(o, k, strlen(k));
      rc |= sp_buf_putc(o, ':');
      if (lb->str != 0) {
        const char *v = sp__str(pp, lb->str);
        rc |= sp_json_write_string(o, v, strlen(v));
      } else {
        rc |= sp_json_write_int64(o, lb->num);
      }
    }
    rc |= sp_buf_putc(o, '}');
    if (p->sample_time_ns != NULL && s < p->n_ext && p->sample_time_ns[s] != 0)
      rc |= sp_buf_printf(o, ",\"timeUnixNano\":\"%lld\"", (long long)p->sample_time_ns[s]);
    if (p->sample_thread != NULL && s < p->n_ext && p->sample_thread[s] >= 0)
      rc |= sp_buf_printf(o, ",\"threadId\":%lld", (long long)p->sample_thread[s]);
    rc |= sp_buf_putc(o, '}');
  }
  rc |= sp_buf_putc(o, ']');
  return rc != 0 ? SP_ENOMEM : 0;
}

static int sp__file_one_profile(sp_file_t *self, sp_profiles_t *batch, sp_profile_t *p) {
  const uint8_t *bytes;
  size_t len;
  sp_pprof_t *pp = sp_profile_decode(batch, p);
  int rc = sp_profile_encoded(batch, p, &bytes, &len);
  if (rc != 0 || pp == NULL)
    return rc != 0 ? rc : SP_EPROTO;
  char name[128], path[4096];
  snprintf(name, sizeof(name), "pprof/%s-%06llu.pprof", self->run_prefix,
           (unsigned long long)self->pprof_seq);
  snprintf(path, sizeof(path), "%s/%s", self->cfg->path, name);
  int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0 || write(fd, bytes, len) != (ssize_t)len) {
    sp_log_error(self->base.id, "cannot write %s: %s", path, strerror(errno));
    if (fd >= 0)
      close(fd);
    return SP_EIO;
  }
  close(fd);
  self->pprof_seq++;

  sp_buf_t o;
  sp_buf_init(&o, 0);
  rc = sp_buf_puts(&o, "{\"labels\":{");
  for (size_t i = 0; i < p->n_labels; i++) {
    if (i)
      rc |= sp_buf_putc(&o, ',');
    rc |= sp_json_write_string(&o, p->labels[i].name, strlen(p->labels[i].name));
    rc |= sp_buf_putc(&o, ':');
    rc |= sp_json_write_string(&o, p->labels[i].value, strlen(p->labels[i].value));
  }
  rc |= sp_buf_printf(&o, "},\"timeStartUnixNano\":\"%lld\",\"timeEndUnixNano\":\"%lld\"",
                      (long long)p->time_start_ns, (long long)p->time_end_ns);
  rc |= sp_buf_puts(&o, ",\"sampleTypes\":[");
  for (size_t i = 0; i < pp->n_sample_type; i++) {
    char st[256];
    snprintf(st, sizeof(st), "%s/%s", sp__str(pp, pp->sample_type[i]->type),
             sp__str(pp, pp->sample_type[i]->unit));
    if (i)
      rc |= sp_buf_putc(&o, ',');
    rc |= sp_json_write_string(&o, st, strlen(st));
  }
  rc |= sp_buf_printf(&o, "],\"sampleCount\":%zu", pp->n_sample);
  if (rc == 0 && self->cfg->samples)
    rc = sp__write_samples(&o, p, pp);
  rc |= sp_buf_puts(&o, ",\"pprofFile\":");
  rc |= sp_json_write_string(&o, name, strlen(name));
  rc |= sp_buf_putc(&o, '}');
  rc = rc != 0 ? SP_ENOMEM : sp__write_line(self, &self->profiles, &o);
  sp_buf_free(&o);
  return rc;
}

static int sp__file_profiles(sp_consumer_t *c, sp_profiles_t *batch) {
  sp_file_t *self = SP_FILE_FROM_INPUT(c);
  int rc = 0;
  size_t done = 0;
  for (size_t i = 0; i < batch->n && rc == 0; i++) {
    rc = sp__file_one_profile(self, batch, &batch->items[i]);
    if (rc == 0)
      done++;
  }
  sp_metric_add(self->sent_profiles, done);
  sp_metric_add(self->failed_profiles, batch->n - done);
  sp_profiles_unref(batch);
  if (rc == SP_EPROTO) {
    sp_log_warn(self->base.id, "dropped a profile whose pprof does not decode");
    return rc;
  }
  return rc == 0 ? 0 : SP_EAGAIN;
}

static int sp__file_create(const sp_create_settings_t *set, const void *config,
                           sp_component_t **out) {
  sp_file_t *self = sp_calloc(1, sizeof(*self));
  if (self == NULL)
    return SP_ENOMEM;
  self->cfg = config;
  self->traces.name = "traces";
  self->profiles.name = "profiles";
  self->traces.fd = self->profiles.fd = -1;
  self->input.consume_traces = sp__file_traces;
  self->input.consume_profiles = sp__file_profiles;
  self->base.input = &self->input;
  snprintf(self->run_prefix, sizeof(self->run_prefix), "%lld-%d", (long long)time(NULL),
           (int)getpid());
  char labels[256];
  snprintf(labels, sizeof(labels), "exporter=\"%s\"", set->id);
  sp_telemetry_t *t = set->host->telemetry;
  self->sent_spans = sp_telemetry_counter(t, "spanprof_exporter_sent_spans_total",
                                          "Spans successfully sent to their destination.", labels);
  self->failed_spans = sp_telemetry_counter(t, "spanprof_exporter_send_failed_spans_total",
                                            "Spans that could not be sent.", labels);
  self->sent_profiles = sp_telemetry_counter(
      t, "spanprof_exporter_sent_profiles_total", "Profiles successfully sent.", labels);
  self->failed_profiles = sp_telemetry_counter(
      t, "spanprof_exporter_send_failed_profiles_total", "Profiles that could not be sent.",
      labels);
  *out = &self->base;
  return 0;
}

static int sp__file_start(sp_component_t *base) {
  sp_file_t *self = (sp_file_t *)base;
  char dir[4096];
  snprintf(dir, sizeof(dir), "%s/pprof", self->cfg->path);
  if (sp__mkdirs(dir) != 0) {
    sp_log_error(base->id, "cannot create %s: %s", dir, strerror(errno));
    return SP_EIO;
  }
  int rc = sp__stream_open(self, &self->traces);
  if (rc == 0)
    rc = sp__stream_open(self, &self->profiles);
  return rc;
}

static void sp__file_shutdown(sp_component_t *base, sp_done_cb cb, void *arg) {
  sp_file_t *self = (sp_file_t *)base;
  if (self->shut)
    return;
  self->shut = true;
  sp_defer_embedded(base->host->loop, &self->deferral, cb, arg);
}

static void sp__file_destroy(sp_component_t *base) {
  sp_file_t *self = (sp_file_t *)base;
  if (self == NULL)
    return;
  if (self->traces.fd >= 0)
    close(self->traces.fd);
  if (self->profiles.fd >= 0)
    close(self->profiles.fd);
  sp_free(self);
}

const sp_component_def_t sp_exporter_file = {
    .kind = SP_KIND_EXPORTER,
    .type = "file",
    .signals = SP_SIGNAL_TRACES | SP_SIGNAL_PROFILES,
    .stability = "development",
    .description = "writes OTLP/JSON traces and profiles (JSON + pprof) to local files",
    .schema = &sp__file_schema,
    .config_size = sizeof(sp_file_cfg_t),
    .example = "path: ${env:TMPDIR:-/tmp}/spanprof-conformance-file\n",
    .create = sp__file_create,
    .start = sp__file_start,
    .shutdown = sp__file_shutdown,
    .destroy = sp__file_destroy,
};
