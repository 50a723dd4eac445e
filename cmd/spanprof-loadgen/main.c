/*
 * spanprof-loadgen — load generator and counting sink for spanprof (in the
 * manner of the OpenTelemetry Collector's telemetrygen).
 *
 *   spanprof-loadgen traces   [flags]   OTLP traces over HTTP or gRPC
 *   spanprof-loadgen profiles [flags]   pprof profiles with span_id labels + their spans
 *   spanprof-loadgen sink     [flags]   an endpoint that counts what it receives
 *
 * `spanprof-loadgen <mode> --help` lists each mode's flags. This file parses
 * the flags the sending modes share and dispatches.
 */
#include "cmd/spanprof-loadgen/loadgen.h"

#include "pipeline/log.h"

#include <signal.h>
#include <stdlib.h>
#include <string.h>

const char lg_common_help[] =
    "\n"
    "Common flags:\n"
    "  --protocol http|grpc     transport (default http)\n"
    "  --encoding proto|json    body encoding over HTTP (default proto)\n"
    "  --gzip                   compress bodies (HTTP: pre-compressed pool; gRPC: message gzip)\n"
    "  --endpoint HOST:PORT     where to send (default 127.0.0.1:4318 for http, :4317 for grpc);\n"
    "                           an http(s):// URL is accepted for HTTP\n"
    "  --connections N          HTTP connections / gRPC channels (default 4)\n"
    "  --inflight N             requests in flight at once (default: = connections)\n"
    "  --rate R                 items per second (spans, or profiles); 0 = as fast as possible\n"
    "  --duration D             how long to send (e.g. 30s, 500ms; default 10s)\n"
    "  --count N                stop after N items (e.g. 100k) instead\n"
    "  --timeout D              per-request timeout (default 10s)\n"
    "  --drain D                after the end, time left for retries to finish (default 30s)\n"
    "  --retry-initial D        first backoff without Retry-After (default 100ms)\n"
    "  --retry-max D            largest backoff (default 5s)\n"
    "  --max-attempts N         attempts per request, 0 = unlimited (default 0)\n"
    "  --header 'Name: value'   extra request header (repeatable, up to 4)\n"
    "  --seed N                 random seed (default 1)\n"
    "  --report D               progress line on stderr every D (default 1s; 0 = none)\n"
    "  --json                   print the result as one JSON object\n"
    "  --quiet                  no progress lines\n"
    "\n"
    "Exit status: 0 when every item was accepted, 3 when some were given up, 1/2 on errors.\n";

void lg_common_defaults(lg_common_t *c) {
  memset(c, 0, sizeof(*c));
  c->proto = LG_PROTO_HTTP;
  c->seed = 1;
  c->send.connections = 4;
  c->send.duration_ms = 10000;
  c->send.timeout_ms = 10000;
  c->send.drain_ms = 30000;
  c->send.retry_initial_ms = 100;
  c->send.retry_max_ms = 5000;
  c->send.report_ms = 1000;
}

static int lg__bad(const char *flag, const char *v) {
  fprintf(stderr, "spanprof-loadgen: bad value for %s: %s\n", flag, v);
  return -1;
}

int lg_common_flag(lg_common_t *c, int argc, char **argv, int *i) {
  const char *a = argv[*i];
  if (strcmp(a, "--gzip") == 0) {
    c->gzip = true;
    return 1;
  }
  if (strcmp(a, "--json") == 0) {
    c->want_json_out = true;
    return 1;
  }
  if (strcmp(a, "--quiet") == 0) {
    c->quiet = true;
    c->send.report_ms = 0;
    return 1;
  }
  static const char *const with_value[] = {
      "--protocol", "--encoding", "--endpoint", "--connections", "--inflight", "--rate",
      "--duration", "--count", "--timeout", "--drain", "--retry-initial", "--retry-max",
      "--max-attempts", "--header", "--seed", "--report", NULL};
  bool known = false;
  for (const char *const *w = with_value; *w != NULL; w++)
    known |= strcmp(a, *w) == 0;
  if (!known)
    return 0;
  if (*i + 1 >= argc) {
    fprintf(stderr, "spanprof-loadgen: %s needs a value\n", a);
    return -1;
  }
  const char *v = argv[++*i];
  double n;
  uint64_t ms;
  if (strcmp(a, "--protocol") == 0) {
    if (strcmp(v, "http") == 0)
      c->proto = LG_PROTO_HTTP;
    else if (strcmp(v, "grpc") == 0)
      c->proto = LG_PROTO_GRPC;
    else
      return lg__bad(a, v);
  } else if (strcmp(a, "--encoding") == 0) {
    if (strcmp(v, "proto") == 0 || strcmp(v, "protobuf") == 0)
      c->json = false;
    else if (strcmp(v, "json") == 0)
      c->json = true;
    else
      return lg__bad(a, v);
  } else if (strcmp(a, "--endpoint") == 0) {
    c->endpoint = v;
  } else if (strcmp(a, "--header") == 0) {
    if (c->n_headers == 4 || strchr(v, ':') == NULL)
      return lg__bad(a, v);
    c->headers[c->n_headers++] = v;
  } else if (strcmp(a, "--duration") == 0 || strcmp(a, "--timeout") == 0 ||
             strcmp(a, "--drain") == 0 || strcmp(a, "--retry-initial") == 0 ||
             strcmp(a, "--retry-max") == 0 || strcmp(a, "--report") == 0) {
    if (lg_parse_duration(v, &ms) != 0)
      return lg__bad(a, v);
    if (strcmp(a, "--duration") == 0)
      c->send.duration_ms = ms;
    else if (strcmp(a, "--timeout") == 0)
      c->send.timeout_ms = ms;
    else if (strcmp(a, "--drain") == 0)
      c->send.drain_ms = ms;
    else if (strcmp(a, "--retry-initial") == 0)
      c->send.retry_initial_ms = ms;
    else if (strcmp(a, "--retry-max") == 0)
      c->send.retry_max_ms = ms;
    else
      c->send.report_ms = c->quiet ? 0 : ms;
  } else {
    if (lg_parse_count(v, &n) != 0)
      return lg__bad(a, v);
    if (strcmp(a, "--connections") == 0) {
      if (n < 1 || n > 4096)
        return lg__bad(a, v);
      c->send.connections = (size_t)n;
    } else if (strcmp(a, "--inflight") == 0) {
      if (n > 65536)
        return lg__bad(a, v);
      c->send.inflight = (size_t)n;
    } else if (strcmp(a, "--rate") == 0) {
      c->send.rate = n;
    } else if (strcmp(a, "--count") == 0) {
      c->send.count = n;
      c->send.duration_ms = 0;
    } else if (strcmp(a, "--max-attempts") == 0) {
      c->send.max_attempts = (unsigned)n;
    } else {
      c->seed = (uint64_t)n;
    }
  }
  return 1;
}

void lg_target_setup(lg_target_t *t, const lg_common_t *c, const char *default_port,
                     const char *path, const char *grpc_method, const char *content_type) {
  memset(t, 0, sizeof(*t));
  t->proto = c->proto;
  const char *ep = c->endpoint;
  char def[64];
  if (ep == NULL || ep[0] == '\0') {
    snprintf(def, sizeof(def), "127.0.0.1:%s",
             c->proto == LG_PROTO_GRPC && strcmp(default_port, "4318") == 0 ? "4317"
                                                                             : default_port);
    ep = def;
  }
  if (c->proto == LG_PROTO_GRPC) {
    const char *hp = strstr(ep, "://");
    snprintf(t->grpc_target, sizeof(t->grpc_target), "%s", hp != NULL ? hp + 3 : ep);
    size_t n = strlen(t->grpc_target);
    while (n > 0 && t->grpc_target[n - 1] == '/')
      t->grpc_target[--n] = '\0';
    t->grpc_method = grpc_method;
    t->grpc_gzip = c->gzip;
    return;
  }
  bool has_scheme = strncmp(ep, "http://", 7) == 0 || strncmp(ep, "https://", 8) == 0;
  size_t n = strlen(ep);
  while (n > 0 && ep[n - 1] == '/')
    n--;
  snprintf(t->url, sizeof(t->url), "%s%.*s%s", has_scheme ? "" : "http://", (int)n, ep, path);
  t->headers[t->n_headers++] = (sp_http_header_t){"Content-Type", content_type};
  if (c->gzip)
    t->headers[t->n_headers++] = (sp_http_header_t){"Content-Encoding", "gzip"};
  /* Extra headers are split in place ("Name: value"); at most what fits. */
  for (size_t i = 0; i < c->n_headers && t->n_headers < 4; i++) {
    static char store[4][256];
    snprintf(store[i], sizeof(store[i]), "%s", c->headers[i]);
    char *colon = strchr(store[i], ':');
    if (colon == NULL)
      continue;
    *colon = '\0';
    const char *val = colon + 1;
    while (*val == ' ')
      val++;
    t->headers[t->n_headers++] = (sp_http_header_t){store[i], val};
  }
}

static void lg__usage(FILE *out) {
  fputs("usage: spanprof-loadgen traces|profiles|sink [flags]   (--help after a mode lists its flags)\n"
        "\n"
        "  traces    send realistic OTLP traces over HTTP or gRPC, report accepted / refused /\n"
        "            failed and latency percentiles\n"
        "  profiles  send pprof CPU profiles whose samples carry span_id labels of spans it also\n"
        "            sends, over Pyroscope /ingest, the Pyroscope Push API or OTLP profiles\n"
        "  sink      receive OTLP/HTTP, OTLP/gRPC and Pyroscope ingest/push, count spans,\n"
        "            profiles, samples and bytes, and answer with faults on demand\n",
        out);
}

int main(int argc, char **argv) {
  signal(SIGPIPE, SIG_IGN);
  sp_log_set_level(SP_LOG_WARN);
  if (argc < 2) {
    lg__usage(stderr);
    return 2;
  }
  const char *mode = argv[1];
  if (strcmp(mode, "traces") == 0)
    return lg_traces_main(argc - 2, argv + 2);
  if (strcmp(mode, "profiles") == 0)
    return lg_profiles_main(argc - 2, argv + 2);
  if (strcmp(mode, "sink") == 0)
    return lg_sink_main(argc - 2, argv + 2);
  if (strcmp(mode, "--help") == 0 || strcmp(mode, "-h") == 0 || strcmp(mode, "help") == 0) {
    lg__usage(stdout);
    return 0;
  }
  fprintf(stderr, "spanprof-loadgen: unknown mode \"%s\"\n\n", mode);
  lg__usage(stderr);
  return 2;
}
