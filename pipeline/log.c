/*
 * log.c — logfmt/JSON line writer (see log.h).
 */
#include "pipeline/log.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static atomic_int min_level = SP_LOG_INFO;
static atomic_int encoding = SP_LOG_LOGFMT;
static atomic_int out_fd = 2;

static const char *level_names[] = {"debug", "info", "warn", "error", "none"};

void sp_log_set_level(sp_log_level_t level) { atomic_store(&min_level, (int)level); }
void sp_log_set_encoding(sp_log_encoding_t enc) { atomic_store(&encoding, (int)enc); }
void sp_log_set_fd(int fd) { atomic_store(&out_fd, fd < 0 ? 2 : fd); }
int sp_log_enabled(sp_log_level_t level) { return (int)level >= atomic_load(&min_level); }

int sp_log_level_parse(const char *s) {
  for (int i = 0; i <= SP_LOG_OFF; i++)
    if (strcmp(s, level_names[i]) == 0) return i;
  if (strcmp(s, "warning") == 0) return SP_LOG_WARN;
  return -1;
}

/* Appends @p s quoted and escaped for either encoding (both accept JSON-style
 * escapes inside double quotes). */
static size_t put_quoted(char *dst, size_t cap, size_t at, const char *s) {
  if (at < cap) dst[at++] = '"';
  for (; *s && at + 7 < cap; s++) {
    unsigned char c = (unsigned char)*s;
    if (c == '"' || c == '\\') {
      dst[at++] = '\\';
      dst[at++] = (char)c;
    } else if (c == '\n') {
      dst[at++] = '\\';
      dst[at++] = 'n';
    } else if (c < 0x20) {
      at += (size_t)snprintf(dst + at, cap - at, "\\u%04x", c);
    } else {
      dst[at++] = (char)c;
    }
  }
  if (at < cap) dst[at++] = '"';
  return at;
}

void sp_log(sp_log_level_t level, const char *component, const char *fmt, ...) {
  if (!sp_log_enabled(level)) return;
  char msg[2048];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);

  struct timeval tv;
  gettimeofday(&tv, NULL);
  struct tm tm;
  gmtime_r(&tv.tv_sec, &tm);
  char ts[40];
  size_t tl = strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%S", &tm);
  snprintf(ts + tl, sizeof ts - tl, ".%03dZ", (int)(tv.tv_usec / 1000));

  char line[4096];
  size_t at;
  const char *lvl = level_names[level];
  if (atomic_load(&encoding) == SP_LOG_JSON) {
    at = (size_t)snprintf(line, sizeof line, "{\"ts\":\"%s\",\"level\":\"%s\"", ts, lvl);
    if (component) {
      at += (size_t)snprintf(line + at, sizeof line - at, ",\"component\":");
      at = put_quoted(line, sizeof line - 3, at, component);
    }
    at += (size_t)snprintf(line + at, sizeof line - at, ",\"msg\":");
    at = put_quoted(line, sizeof line - 3, at, msg);
    line[at++] = '}';
  } else {
    at = (size_t)snprintf(line, sizeof line, "ts=%s level=%s", ts, lvl);
    if (component) at += (size_t)snprintf(line + at, sizeof line - at, " component=%s", component);
    at += (size_t)snprintf(line + at, sizeof line - at, " msg=");
    at = put_quoted(line, sizeof line - 3, at, msg);
  }
  line[at++] = '\n';
  ssize_t w = write(atomic_load(&out_fd), line, at);
  (void)w;
}
