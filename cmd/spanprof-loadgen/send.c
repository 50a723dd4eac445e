/*
 * send.c — the sending engine of spanprof-loadgen.
 *
 * A fixed number of slots (jobs) each carry one job at a time: one or two
 * requests sent in order (a profile after the spans it refers to). A slot
 * that finishes asks the mode for the next job, so the number of requests in
 * flight is bounded by the number of slots, like an SDK exporter with N
 * concurrent exports. With a rate, jobs start on a schedule (items per
 * second of the first part's kind); without one, as fast as answers come.
 *
 * Refusals are retried the way the OpenTelemetry SDKs do: HTTP 429, 502, 503
 * and 504 and the retryable gRPC codes (UNAVAILABLE, RESOURCE_EXHAUSTED with
 * RetryInfo, ...) and transport errors wait — the server's Retry-After or
 * RetryInfo when it sent one, else an exponential backoff with jitter — and
 * resend the same bytes. Other answers are permanent: the job's items are
 * counted as failed. When the duration or count is reached no job starts;
 * jobs still retrying get `drain` more time, after which what is left is
 * counted as failed.
 */
#include "cmd/spanprof-loadgen/loadgen.h"

#include "pipeline/alloc.h"
#include "pipeline/error.h"
#include "pipeline/log.h"

#include <grpc/status.h>
#include <inttypes.h>
#include <math.h>
#include <string.h>

static void lg__try_start(lg_job_t *job);
static void lg__send_part(lg_job_t *job);

static const char *lg__kind_name(lg_items_t k) { return k == LG_ITEMS_SPANS ? "spans" : "profiles"; }

static lg_items_t lg__first_kind(const lg_engine_t *eng) {
  return eng->n_targets > 0 ? eng->targets[0]->items : LG_ITEMS_SPANS;
}

static void lg__handle_closed(uv_handle_t *h) {
  lg_engine_t *eng = h->data;
  eng->open_handles--;
}

static void lg__job_timer_closed(uv_handle_t *h) {
  lg_job_t *job = h->data;
  job->eng->open_handles--;
}

static bool lg__all_idle(const lg_engine_t *eng) {
  for (size_t i = 0; i < eng->n_jobs; i++)
    if (eng->jobs[i].busy)
      return false;
  return true;
}

static void lg__closed_cb(void *arg) {
  lg_engine_t *eng = arg;
  eng->open_handles--;
}

/* Everything is done (or the drain ran out): close transports and timers. */
static void lg__close(lg_engine_t *eng) {
  if (eng->closing)
    return;
  eng->closing = true;
  eng->end_ns = lg_mono_ns();
  /* Jobs still busy past the drain deadline are given up. */
  for (size_t i = 0; i < eng->n_jobs; i++) {
    lg_job_t *job = &eng->jobs[i];
    if (job->busy) {
      for (size_t p = job->cur; p < job->n_parts; p++)
        eng->c[job->parts[p].target->items].failed_items += job->parts[p].items;
      job->busy = false;
    }
    uv_timer_stop(&job->timer);
    uv_close((uv_handle_t *)&job->timer, lg__job_timer_closed);
  }
  uv_close((uv_handle_t *)&eng->rate_timer, lg__handle_closed);
  uv_close((uv_handle_t *)&eng->tick_timer, lg__handle_closed);
  if (eng->http != NULL) {
    eng->open_handles++;
    sp_http_client_shutdown(eng->http, lg__closed_cb, eng);
  }
  for (size_t t = 0; t < eng->n_targets; t++)
    for (size_t k = 0; k < eng->targets[t]->n_grpc; k++) {
      eng->open_handles++;
      sp_grpc_client_shutdown(eng->targets[t]->grpc[k], lg__closed_cb, eng);
    }
}

static void lg__maybe_finish(lg_engine_t *eng) {
  if ((eng->stopping || eng->exhausted) && lg__all_idle(eng))
    lg__close(eng);
}

static void lg__job_done(lg_job_t *job) {
  job->busy = false;
  lg_engine_t *eng = job->eng;
  if (eng->stopping || eng->exhausted)
    lg__maybe_finish(eng);
  else
    lg__try_start(job);
}

/* Backoff before retry @p attempt (1-based): initial * 1.5^(attempt-1), capped, ±50% jitter. */
static uint64_t lg__backoff_ms(lg_engine_t *eng, unsigned attempt) {
  double d = (double)eng->o.retry_initial_ms * pow(1.5, attempt > 0 ? attempt - 1 : 0);
  if (d > (double)eng->o.retry_max_ms)
    d = (double)eng->o.retry_max_ms;
  double jitter = (double)(lg_rand(&eng->seed) % 1000) / 1000.0; /* [0, 1) */
  d *= 0.5 + jitter;
  return d < 1 ? 1 : (uint64_t)d;
}

static void lg__retry_cb(uv_timer_t *t) {
  lg_job_t *job = t->data;
  if (job->eng->closing)
    return;
  lg__send_part(job);
}

/* What one attempt came to. */
enum { LG_OK, LG_RETRY, LG_PERMANENT };

static void lg__on_outcome(lg_job_t *job, int outcome, bool transport, uint64_t retry_after_ms,
                           const char *why) {
  lg_engine_t *eng = job->eng;
  job->in_flight = false;
  if (eng->closing)
    return;
  lg_part_t *part = &job->parts[job->cur];
  lg_counts_t *c = &eng->c[part->target->items];
  uint64_t now = lg_mono_ns();
  if (outcome == LG_OK) {
    c->requests_ok++;
    c->accepted_items += part->items;
    c->bytes += part->len;
    lg_hist_add(&eng->lat, (now - job->attempt_ns) / 1000);
    job->cur++;
    job->attempt = 0;
    if (job->cur < job->n_parts)
      lg__send_part(job);
    else
      lg__job_done(job);
    return;
  }
  if (why != NULL)
    snprintf(eng->last_error, sizeof(eng->last_error), "%s", why);
  if (outcome == LG_RETRY) {
    if (transport)
      c->errors++;
    else
      c->refused++;
    job->attempt++;
    bool past_drain = eng->stopping && now >= eng->end_ns + eng->o.drain_ms * 1000000ull;
    if ((eng->o.max_attempts == 0 || job->attempt < eng->o.max_attempts) && !past_drain) {
      uint64_t delay = lg__backoff_ms(eng, job->attempt);
      if (retry_after_ms > 0)
        delay = retry_after_ms < 60000 ? retry_after_ms : 60000;
      uv_timer_start(&job->timer, lg__retry_cb, delay, 0);
      return;
    }
  } else {
    c->rejected++;
  }
  for (size_t p = job->cur; p < job->n_parts; p++)
    eng->c[job->parts[p].target->items].failed_items += job->parts[p].items;
  lg__job_done(job);
}

static void lg__on_http(const sp_http_client_result_t *res, void *arg) {
  lg_job_t *job = arg;
  char why[300];
  if (res->err != 0) {
    snprintf(why, sizeof(why), "%s: %s", sp_strerror(res->err), res->error);
    bool retry = res->err == SP_EIO || res->err == SP_ETIMEDOUT || res->err == SP_ENOMEM;
    lg__on_outcome(job, retry ? LG_RETRY : LG_PERMANENT, true, 0, why);
    return;
  }
  if (res->status >= 200 && res->status < 300) {
    lg__on_outcome(job, LG_OK, false, 0, NULL);
    return;
  }
  snprintf(why, sizeof(why), "HTTP %d", res->status);
  bool retry = res->status == 429 || res->status == 502 || res->status == 503 || res->status == 504;
  lg__on_outcome(job, retry ? LG_RETRY : LG_PERMANENT, false, res->retry_after_ms, why);
}

static void lg__on_grpc(const sp_grpc_client_result_t *res, void *arg) {
  lg_job_t *job = arg;
  if (res->status == GRPC_STATUS_OK) {
    lg__on_outcome(job, LG_OK, false, 0, NULL);
    return;
  }
  char why[300];
  snprintf(why, sizeof(why), "gRPC %s: %s", sp_grpc_status_name(res->status), res->message);
  /* As the SDKs: RESOURCE_EXHAUSTED is retried (with its RetryInfo when sent). */
  int err = sp_grpc_client_result_err(res);
  bool retry = err == SP_EAGAIN || res->status == GRPC_STATUS_RESOURCE_EXHAUSTED;
  bool transport = res->status == GRPC_STATUS_DEADLINE_EXCEEDED ||
                   (res->status == GRPC_STATUS_UNAVAILABLE && res->retry_after_ms == 0);
  lg__on_outcome(job, retry ? LG_RETRY : LG_PERMANENT, transport, res->retry_after_ms, why);
}

static void lg__send_part(lg_job_t *job) {
  lg_engine_t *eng = job->eng;
  lg_part_t *part = &job->parts[job->cur];
  lg_target_t *t = part->target;
  job->attempt_ns = lg_mono_ns();
  job->in_flight = true;
  int rc;
  if (t->proto == LG_PROTO_HTTP) {
    sp_http_client_request_t req = {
        .method = "POST",
        .url = part->url != NULL ? part->url : t->url,
        .headers = t->headers,
        .n_headers = t->n_headers,
        .body = part->body,
        .body_len = part->len,
        .timeout_ms = eng->o.timeout_ms,
    };
    rc = sp_http_client_request(eng->http, &req, lg__on_http, job);
  } else {
    sp_grpc_client_t *cl = t->grpc[t->rr++ % t->n_grpc];
    rc = sp_grpc_client_call(cl, t->grpc_method, part->body, part->len, eng->o.timeout_ms, NULL, 0,
                             lg__on_grpc, job);
  }
  if (rc != 0) {
    /* Not started (out of memory): count as a transport error and retry later. */
    job->in_flight = false;
    eng->c[t->items].errors++;
    job->attempt++;
    uv_timer_start(&job->timer, lg__retry_cb, lg__backoff_ms(eng, job->attempt), 0);
  }
}

static void lg__check_end(lg_engine_t *eng) {
  if (eng->stopping)
    return;
  uint64_t now = lg_mono_ns();
  bool by_time = eng->o.duration_ms > 0 && now >= eng->start_ns + eng->o.duration_ms * 1000000ull;
  bool by_count = eng->o.count > 0 && eng->started_items >= eng->o.count;
  if (by_time || by_count) {
    eng->stopping = true;
    eng->end_ns = now;
    uv_timer_stop(&eng->rate_timer);
  }
}

static void lg__rate_cb(uv_timer_t *t) {
  lg_engine_t *eng = t->data;
  for (size_t i = 0; i < eng->n_jobs && !eng->stopping && !eng->exhausted; i++)
    if (!eng->jobs[i].busy)
      lg__try_start(&eng->jobs[i]);
}

static void lg__try_start(lg_job_t *job) {
  lg_engine_t *eng = job->eng;
  lg__check_end(eng);
  if (eng->stopping || eng->exhausted || eng->closing) {
    lg__maybe_finish(eng);
    return;
  }
  uint64_t now = lg_mono_ns();
  if (eng->o.rate > 0) {
    if (now < eng->next_due_ns) {
      if (!uv_is_active((uv_handle_t *)&eng->rate_timer)) {
        uint64_t ms = (eng->next_due_ns - now + 999999) / 1000000;
        uv_timer_start(&eng->rate_timer, lg__rate_cb, ms, 0);
      }
      return;
    }
  }
  memset(job->parts, 0, sizeof(job->parts));
  job->n_parts = 0;
  job->cur = 0;
  job->attempt = 0;
  if (!eng->fill(eng->fill_ctx, job) || job->n_parts == 0) {
    eng->exhausted = true;
    lg__maybe_finish(eng);
    return;
  }
  /* Rate and count are in items of the first target's kind (profiles when
   * a job sends a profile after its spans). */
  size_t items = 0;
  for (size_t p = 0; p < job->n_parts; p++)
    if (job->parts[p].target->items == lg__first_kind(eng))
      items += job->parts[p].items;
  if (eng->o.rate > 0) {
    uint64_t step = (uint64_t)((double)items / eng->o.rate * 1e9);
    /* Behind schedule by more than a second: do not burst to catch up. */
    if (eng->next_due_ns + 1000000000ull < now)
      eng->next_due_ns = now;
    eng->next_due_ns += step;
  }
  eng->started_items += (double)items;
  for (size_t p = 0; p < job->n_parts; p++)
    eng->c[job->parts[p].target->items].sent_items += job->parts[p].items;
  job->busy = true;
  job->first_ns = now;
  lg__send_part(job);
}

static void lg__tick_cb(uv_timer_t *t) {
  lg_engine_t *eng = t->data;
  lg__check_end(eng);
  uint64_t now = lg_mono_ns();
  if (eng->stopping) {
    if (lg__all_idle(eng) || now >= eng->end_ns + eng->o.drain_ms * 1000000ull) {
      lg__close(eng);
      return;
    }
  }
  if (eng->o.report_ms > 0 && now - eng->last_report_ns >= eng->o.report_ms * 1000000ull) {
    lg_items_t k = lg__first_kind(eng);
    const lg_counts_t *c = &eng->c[k];
    double dt = (double)(now - eng->last_report_ns) / 1e9;
    fprintf(stderr,
            "loadgen %s: %6.1fs  %10.0f %s/s  accepted %" PRIu64 "  refused %" PRIu64
            "  errors %" PRIu64 "  failed %" PRIu64 "  p99 %.1f ms\n",
            eng->mode, (double)(now - eng->start_ns) / 1e9,
            (double)(c->accepted_items - eng->last_report_items) / dt, lg__kind_name(k),
            c->accepted_items, c->refused, c->errors, c->failed_items,
            (double)lg_hist_quantile(&eng->lat, 0.99) / 1000.0);
    eng->last_report_ns = now;
    eng->last_report_items = c->accepted_items;
  }
}

int lg_engine_run(lg_engine_t *eng) {
  int rc = 0;
  if (eng->o.inflight == 0)
    eng->o.inflight = eng->o.connections;
  if (eng->o.retry_max_ms < eng->o.retry_initial_ms)
    eng->o.retry_max_ms = eng->o.retry_initial_ms;
  bool need_http = false;
  for (size_t t = 0; t < eng->n_targets; t++)
    need_http |= eng->targets[t]->proto == LG_PROTO_HTTP;
  if (need_http) {
    sp_http_client_options_t ho = {
        .component = "loadgen",
        .max_conns_per_host = (unsigned)eng->o.connections,
        .connect_timeout_ms = 5000,
    };
    if ((rc = sp_http_client_create(eng->loop, &ho, &eng->http)) != 0)
      return rc;
  }
  for (size_t t = 0; t < eng->n_targets; t++) {
    lg_target_t *tg = eng->targets[t];
    if (tg->proto != LG_PROTO_GRPC)
      continue;
    tg->grpc = sp_calloc(eng->o.connections, sizeof(*tg->grpc));
    if (tg->grpc == NULL)
      return SP_ENOMEM;
    for (size_t k = 0; k < eng->o.connections; k++) {
      sp_grpc_client_options_t go = {
          .target = tg->grpc_target,
          .component = "loadgen",
          .compression = tg->grpc_gzip ? SP_GRPC_COMPRESSION_GZIP : SP_GRPC_COMPRESSION_NONE,
          .max_recv_msg_size = 16u << 20,
      };
      if ((rc = sp_grpc_client_create(eng->loop, &go, &tg->grpc[k])) != 0)
        return rc;
      tg->n_grpc++;
    }
  }
  eng->n_jobs = eng->o.inflight;
  eng->jobs = sp_calloc(eng->n_jobs, sizeof(*eng->jobs));
  if (eng->jobs == NULL)
    return SP_ENOMEM;
  uv_timer_init(eng->loop, &eng->rate_timer);
  uv_timer_init(eng->loop, &eng->tick_timer);
  eng->rate_timer.data = eng->tick_timer.data = eng;
  eng->open_handles = 2;
  for (size_t i = 0; i < eng->n_jobs; i++) {
    lg_job_t *job = &eng->jobs[i];
    job->eng = eng;
    job->idx = i;
    uv_timer_init(eng->loop, &job->timer);
    job->timer.data = job;
    eng->open_handles++;
  }
  eng->start_ns = eng->last_report_ns = eng->next_due_ns = lg_mono_ns();
  uv_timer_start(&eng->tick_timer, lg__tick_cb, 50, 50);
  for (size_t i = 0; i < eng->n_jobs && !eng->stopping && !eng->exhausted; i++)
    lg__try_start(&eng->jobs[i]);
  while (eng->open_handles > 0 || !eng->closing)
    uv_run(eng->loop, UV_RUN_ONCE);
  sp_http_client_destroy(eng->http);
  eng->http = NULL;
  for (size_t t = 0; t < eng->n_targets; t++) {
    lg_target_t *tg = eng->targets[t];
    for (size_t k = 0; k < tg->n_grpc; k++)
      sp_grpc_client_destroy(tg->grpc[k]);
    sp_free(tg->grpc);
    tg->grpc = NULL;
    tg->n_grpc = 0;
  }
  uv_run(eng->loop, UV_RUN_DEFAULT);
  return 0;
}

void lg_engine_report(const lg_engine_t *eng, bool json, FILE *out) {
  double secs = (double)(eng->end_ns - eng->start_ns) / 1e9;
  if (secs <= 0)
    secs = 1e-9;
  double q[4] = {(double)lg_hist_quantile(&eng->lat, 0.5) / 1000.0,
                 (double)lg_hist_quantile(&eng->lat, 0.9) / 1000.0,
                 (double)lg_hist_quantile(&eng->lat, 0.99) / 1000.0,
                 (double)eng->lat.max_us / 1000.0};
  double cpu = lg_cpu_seconds();
  if (json) {
    fprintf(out, "{\"mode\":\"%s\",\"seconds\":%.3f,\"cpu_seconds\":%.3f,\"peak_rss_kib\":%" PRIu64,
            eng->mode, secs, cpu, lg_peak_rss_kib());
    for (int k = 0; k < LG_ITEMS_KINDS; k++) {
      const lg_counts_t *c = &eng->c[k];
      if (c->sent_items == 0 && c->requests_ok == 0 && c->refused == 0 && c->errors == 0)
        continue;
      fprintf(out,
              ",\"%s\":{\"sent\":%" PRIu64 ",\"accepted\":%" PRIu64 ",\"failed\":%" PRIu64
              ",\"requests\":%" PRIu64 ",\"refused\":%" PRIu64 ",\"errors\":%" PRIu64
              ",\"rejected\":%" PRIu64 ",\"bytes\":%" PRIu64 ",\"per_second\":%.1f}",
              lg__kind_name((lg_items_t)k), c->sent_items, c->accepted_items, c->failed_items,
              c->requests_ok, c->refused, c->errors, c->rejected, c->bytes,
              (double)c->accepted_items / secs);
    }
    fprintf(out,
            ",\"latency_ms\":{\"p50\":%.3f,\"p90\":%.3f,\"p99\":%.3f,\"max\":%.3f,\"count\":%" PRIu64
            "},\"last_error\":\"",
            q[0], q[1], q[2], q[3], eng->lat.count);
    for (const char *p = eng->last_error; *p; p++)
      if (*p >= 0x20 && *p != '"' && *p != '\\')
        fputc(*p, out);
    fputs("\"}\n", out);
    return;
  }
  fprintf(out, "spanprof-loadgen %s: %.2f s, %.2f CPU s, peak RSS %.1f MiB\n", eng->mode, secs,
          cpu, (double)lg_peak_rss_kib() / 1024.0);
  fprintf(out, "  %-9s %12s %12s %10s %10s %10s %10s %14s\n", "items", "sent", "accepted",
          "failed", "refused", "errors", "rejected", "accepted/s");
  for (int k = 0; k < LG_ITEMS_KINDS; k++) {
    const lg_counts_t *c = &eng->c[k];
    if (c->sent_items == 0)
      continue;
    fprintf(out,
            "  %-9s %12" PRIu64 " %12" PRIu64 " %10" PRIu64 " %10" PRIu64 " %10" PRIu64
            " %10" PRIu64 " %14.0f\n",
            lg__kind_name((lg_items_t)k), c->sent_items, c->accepted_items, c->failed_items,
            c->refused, c->errors, c->rejected, (double)c->accepted_items / secs);
  }
  fprintf(out, "  latency (successful requests): p50 %.2f ms  p90 %.2f ms  p99 %.2f ms  max %.2f ms\n",
          q[0], q[1], q[2], q[3]);
  if (eng->last_error[0] != '\0')
    fprintf(out, "  last error: %s\n", eng->last_error);
}
