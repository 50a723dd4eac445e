/*
 * spanprofd — the daemon's command line.
 *
 *   spanprofd [--config FILE]...            run (no --config: the built-in local-dev config)
 *   spanprofd validate [--config FILE]...   check a configuration, print every error
 *   spanprofd components                    list component types, signals, stability
 *   spanprofd --version | --help
 *
 * Thin by design: everything else lives in pipeline/.
 */
#include "pipeline/alloc.h"
#include "pipeline/component.h"
#include "pipeline/cpus.h"
#include "pipeline/error.h"
#include "pipeline/log.h"
#include "pipeline/service.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void usage(FILE *out) {
  fputs("usage: spanprofd [--config FILE]...\n"
        "       spanprofd validate [--config FILE]...\n"
        "       spanprofd components\n"
        "       spanprofd --version | --help\n"
        "\n"
        "Receives OTLP traces and profiles (OTLP, Pyroscope, pprof), joins profile\n"
        "samples to spans, and exports to Grafana Tempo and Pyroscope.\n"
        "\n"
        "  --config FILE   YAML configuration; may repeat, later files merge over earlier\n"
        "                  ones. Without it the built-in local-dev configuration runs.\n"
        "  validate        load the configuration and report every error, then exit\n"
        "                  (0 when valid, 1 otherwise)\n"
        "  components      list the receivers, processors and exporters built in\n"
        "\n"
        "Signals: SIGTERM/SIGINT drain and stop; SIGHUP reloads the configuration.\n",
        out);
}

static int cmd_components(void) {
  static const sp_kind_t kinds[] = {SP_KIND_RECEIVER, SP_KIND_PROCESSOR, SP_KIND_EXPORTER,
                                    SP_KIND_EXTENSION};
  printf("%-10s %-20s %-16s %-12s %s\n", "KIND", "TYPE", "SIGNALS", "STABILITY", "DESCRIPTION");
  for (size_t k = 0; k < 4; k++)
    for (const sp_component_def_t *const *d = sp_registry_all(); *d != NULL; d++) {
      if ((*d)->kind != kinds[k])
        continue;
      char sig[32] = "";
      if ((*d)->signals & SP_SIGNAL_TRACES)
        strcat(sig, "traces");
      if ((*d)->signals & SP_SIGNAL_PROFILES)
        strcat(sig, sig[0] ? ",profiles" : "profiles");
      char type[64];
      snprintf(type, sizeof(type), "%s", (*d)->type);
      for (const char *const *a = (*d)->aliases; a != NULL && *a != NULL; a++) {
        size_t n = strlen(type);
        snprintf(type + n, sizeof(type) - n, "|%s", *a);
      }
      printf("%-10s %-20s %-16s %-12s %s\n", sp_kind_name((*d)->kind), type, sig,
             (*d)->stability, (*d)->description);
    }
  return 0;
}

static void on_stopped(void *arg) { (void)arg; }

/*
 * libuv's thread pool runs what is too heavy for the loop: gzip, inflate,
 * validating uploads. That work is all CPU, so threads beyond the cores only
 * compete with the loop thread, which everything waits on: with the default
 * four threads on two cores, the loop was preempted while it had requests
 * to answer. So unless UV_THREADPOOL_SIZE says otherwise, the pool gets one
 * thread per available CPU (affinity, capped by a container's CPU quota)
 * minus the loop's, at least one. libuv reads the variable when the pool
 * first starts, after this.
 */
static void size_thread_pool(void) {
  if (getenv("UV_THREADPOOL_SIZE") != NULL) return;
  unsigned n = sp_cpus_available(NULL);
  char buf[16];
  snprintf(buf, sizeof(buf), "%u", n > 1 ? n - 1 : 1);
  setenv("UV_THREADPOOL_SIZE", buf, 0);
}

/* Runs the daemon until it is told to stop; the exit status. */
static int run(const sp_service_options_t *opts) {
  /* A peer closing a socket must not kill the daemon. */
  signal(SIGPIPE, SIG_IGN);
  size_thread_pool();
  uv_loop_t loop;
  uv_loop_init(&loop);
  sp_service_t *svc = NULL;
  int rc = sp_service_create(&loop, opts, &svc);
  if (rc != 0) {
    fprintf(stderr, "spanprofd: %s\n", sp_strerror(rc));
    uv_loop_close(&loop);
    return 1;
  }
  sp_errors_t errs = {0};
  rc = sp_service_start(svc, &errs);
  if (rc != 0) {
    sp_errors_print(&errs, STDERR_FILENO);
    sp_log_error(NULL, "cannot start: %s", sp_strerror(rc));
    sp_service_shutdown(svc, on_stopped, NULL);
  } else {
    sp_service_watch_signals(svc, on_stopped, NULL);
  }
  sp_errors_free(&errs);
  uv_run(&loop, UV_RUN_DEFAULT);
  sp_service_destroy(svc);
  if (uv_loop_close(&loop) != 0)
    sp_log_warn(NULL, "event loop closed with handles still open");
  return rc == 0 ? 0 : 1;
}

static int validate(const sp_service_options_t *opts) {
  sp_errors_t errs = {0};
  int rc = sp_service_validate(opts, &errs);
  sp_errors_print(&errs, STDERR_FILENO);
  if (rc == 0)
    printf("configuration is valid\n");
  else if (errs.n == 0)
    fprintf(stderr, "spanprofd: %s\n", sp_strerror(rc));
  sp_errors_free(&errs);
  return rc == 0 ? 0 : 1;
}

int main(int argc, char **argv) {
  const char *paths[256];
  size_t n_paths = 0;
  const char *cmd = NULL;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    const char *path = NULL;
    if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
      usage(stdout);
      return 0;
    } else if (strcmp(a, "--version") == 0 || strcmp(a, "version") == 0) {
      printf("spanprofd %s\n", SP_VERSION);
      return 0;
    } else if (strcmp(a, "--config") == 0 || strcmp(a, "-c") == 0) {
      if (i + 1 >= argc) {
        fprintf(stderr, "spanprofd: --config needs a file\n");
        return 2;
      }
      path = argv[++i];
    } else if (strncmp(a, "--config=", 9) == 0) {
      path = a + 9;
    } else if (cmd == NULL && (strcmp(a, "validate") == 0 || strcmp(a, "components") == 0)) {
      cmd = a;
      continue;
    } else {
      fprintf(stderr, "spanprofd: unknown argument \"%s\"\n\n", a);
      usage(stderr);
      return 2;
    }
    if (n_paths == sizeof(paths) / sizeof(paths[0])) {
      fprintf(stderr, "spanprofd: too many --config files\n");
      return 2;
    }
    paths[n_paths++] = path;
  }
  sp_service_options_t opts = {.config_paths = paths, .n_config_paths = n_paths};
  if (cmd != NULL && strcmp(cmd, "components") == 0)
    return cmd_components();
  if (cmd != NULL && strcmp(cmd, "validate") == 0)
    return validate(&opts);
  return run(&opts);
}
