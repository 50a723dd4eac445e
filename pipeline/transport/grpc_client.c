/*
 * grpc_client.c — asynchronous unary gRPC calls for exporters (see
 * grpc_client.h).
 *
 * A call is one batch started on the loop thread: initial metadata (the
 * static headers plus the call's own), the message, close, and the three
 * receive operations. grpc core does the I/O on the client's
 * completion-queue (CQ) thread, which, when the batch completes, makes the
 * response contiguous, reads the RetryInfo delay from the
 * grpc-status-details-bin trailer, and appends the call to `done` under
 * `mu` before uv_async_send. The loop drains `done` whole, runs each
 * callback and frees the call. `done` and the `thread_done` flag are the only
 * state both threads touch; a call's own fields belong to the CQ thread from
 * the moment its batch starts until it is taken off `done`.
 *
 * Shutdown cancels every call in flight (grpc_call_cancel is thread-safe);
 * once the last callback ran, the loop destroys the channel and shuts the
 * queue down, the CQ thread reports its exit, and the loop joins it and
 * closes the async handle; the close callback runs the user's callback.
 */
#include "pipeline/transport/grpc_client.h"

#include "pipeline/alloc.h"
#include "pipeline/error.h"
#include "pipeline/log.h"
#include "pipeline/transport/grpc_util.h"

#include <assert.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/compression.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/support/alloc.h>
#include <grpc/support/time.h>
#include <string.h>

#include "pipeline/transport/grpc_dl.h" /* last: grpc calls go through the table */

enum { CL_RUNNING, CL_STOPPING, CL_CLOSING, CL_CLOSED };

typedef struct ccall_s ccall_t;
struct ccall_s {
  sp_grpc_client_t *client;
  grpc_call *call;
  sp_grpc_client_cb cb;
  void *arg;
  grpc_metadata *md; /* static headers (shared slices) then this call's own */
  size_t n_md;
  grpc_byte_buffer *send_bb;
  grpc_metadata_array init_md, trail_md;
  grpc_byte_buffer *recv_bb;
  grpc_status_code status;
  grpc_slice details;
  const char *error_string;
  grpc_slice resp;
  bool has_resp;
  uint64_t retry_after_ms;
  ccall_t *prev, *next; /* loop: calls in flight */
  ccall_t *done_next;   /* `done` list */
  grpc_metadata md_storage[];
};

struct sp_grpc_client_s {
  uv_loop_t *loop;
  char *component;
  char *target;
  char *name_override;
  grpc_channel *channel;
  grpc_completion_queue *cq;
  grpc_metadata *static_md;
  size_t n_static;
  bool grpc_ref;

  /* loop thread only */
  int state;
  bool shutdown_requested;
  void (*shutdown_cb)(void *arg);
  void *shutdown_arg;
  bool free_on_close; /* create failed after the async handle existed */
  uv_thread_t thread;
  bool thread_running;
  uv_async_t async;
  ccall_t *inflight;
  size_t n_inflight;

  /* shared: under mu */
  uv_mutex_t mu;
  bool mu_init;
  ccall_t *done_head, *done_tail;
  bool thread_done;
};

static const char *const status_names[] = {
    "OK",        "CANCELLED",      "UNKNOWN",           "INVALID_ARGUMENT",   "DEADLINE_EXCEEDED",
    "NOT_FOUND", "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION",
    "ABORTED",   "OUT_OF_RANGE",   "UNIMPLEMENTED",     "INTERNAL",           "UNAVAILABLE",
    "DATA_LOSS", "UNAUTHENTICATED"};

const char *sp_grpc_status_name(int status) {
  if (status < 0 || status >= (int)(sizeof(status_names) / sizeof(status_names[0])))
    return "UNKNOWN";
  return status_names[status];
}

int sp_grpc_client_result_err(const sp_grpc_client_result_t *res) {
  if (!res) return SP_EINVAL;
  switch (res->status) {
  case GRPC_STATUS_OK: return 0;
  case GRPC_STATUS_CANCELLED:
  case GRPC_STATUS_DEADLINE_EXCEEDED:
  case GRPC_STATUS_ABORTED:
  case GRPC_STATUS_OUT_OF_RANGE:
  case GRPC_STATUS_UNAVAILABLE:
  case GRPC_STATUS_DATA_LOSS: return SP_EAGAIN;
  case GRPC_STATUS_RESOURCE_EXHAUSTED: return res->retry_after_ms ? SP_EAGAIN : SP_EREJECTED;
  default: return SP_EREJECTED;
  }
}

/* A slice holding @p s lower-cased (metadata keys must be lower case). */
static grpc_slice slice_lower(const char *s) {
  size_t n = strlen(s);
  grpc_slice out = grpc_slice_malloc(n);
  uint8_t *p = GRPC_SLICE_START_PTR(out);
  for (size_t i = 0; i < n; i++) {
    char ch = s[i];
    p[i] = (uint8_t)(ch >= 'A' && ch <= 'Z' ? ch - 'A' + 'a' : ch);
  }
  return out;
}

/* ---- completion-queue thread ----------------------------------------------------- */

static void cq_complete(ccall_t *cc, int ok) {
  if (cc->recv_bb) {
    grpc_byte_buffer *bb = cc->recv_bb;
    if (bb->type == GRPC_BB_RAW && bb->data.raw.compression == GRPC_COMPRESS_NONE &&
        bb->data.raw.slice_buffer.count == 1) {
      cc->resp = grpc_slice_ref(bb->data.raw.slice_buffer.slices[0]);
      cc->has_resp = true;
    } else {
      grpc_byte_buffer_reader r;
      if (grpc_byte_buffer_reader_init(&r, bb)) {
        cc->resp = grpc_byte_buffer_reader_readall(&r);
        cc->has_resp = true;
        grpc_byte_buffer_reader_destroy(&r);
      }
    }
    grpc_byte_buffer_destroy(bb);
    cc->recv_bb = NULL;
  }
  for (size_t i = 0; i < cc->trail_md.count; i++) {
    const grpc_metadata *m = &cc->trail_md.metadata[i];
    size_t kl = sizeof(SP__GRPC_STATUS_DETAILS_KEY) - 1;
    if (GRPC_SLICE_LENGTH(m->key) == kl &&
        memcmp(GRPC_SLICE_START_PTR(m->key), SP__GRPC_STATUS_DETAILS_KEY, kl) == 0) {
      cc->retry_after_ms = sp__grpc_status_details_retry_ms(GRPC_SLICE_START_PTR(m->value),
                                                            GRPC_SLICE_LENGTH(m->value));
      break;
    }
  }
  /* A batch with RECV_STATUS_ON_CLIENT reports failures through the status;
   * should it ever fail as a whole, do not report success. */
  if (!ok && cc->status == GRPC_STATUS_OK) cc->status = GRPC_STATUS_UNKNOWN;
}

static void cq_thread_main(void *arg) {
  sp_grpc_client_t *self = arg;
  for (;;) {
    grpc_event ev = grpc_completion_queue_next(self->cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
    if (ev.type == GRPC_QUEUE_SHUTDOWN) break;
    if (ev.type != GRPC_OP_COMPLETE) continue;
    ccall_t *cc = ev.tag;
    cq_complete(cc, ev.success);
    cc->done_next = NULL;
    uv_mutex_lock(&self->mu);
    if (self->done_tail)
      self->done_tail->done_next = cc;
    else
      self->done_head = cc;
    self->done_tail = cc;
    uv_mutex_unlock(&self->mu);
    uv_async_send(&self->async);
  }
  uv_mutex_lock(&self->mu);
  self->thread_done = true;
  uv_mutex_unlock(&self->mu);
  uv_async_send(&self->async);
}

/* ---- loop thread ------------------------------------------------------------------ */

static void ccall_free(ccall_t *cc) {
  if (!cc) return;
  if (cc->call) grpc_call_unref(cc->call);
  sp_grpc_client_t *self = cc->client;
  for (size_t i = self->n_static; i < cc->n_md; i++) {
    grpc_slice_unref(cc->md[i].key);
    grpc_slice_unref(cc->md[i].value);
  }
  if (cc->send_bb) grpc_byte_buffer_destroy(cc->send_bb);
  if (cc->recv_bb) grpc_byte_buffer_destroy(cc->recv_bb);
  grpc_metadata_array_destroy(&cc->init_md);
  grpc_metadata_array_destroy(&cc->trail_md);
  grpc_slice_unref(cc->details);
  if (cc->has_resp) grpc_slice_unref(cc->resp);
  gpr_free((void *)cc->error_string);
  sp_free(cc);
}

static void inflight_unlink(sp_grpc_client_t *self, ccall_t *cc) {
  if (cc->prev)
    cc->prev->next = cc->next;
  else
    self->inflight = cc->next;
  if (cc->next) cc->next->prev = cc->prev;
  cc->prev = cc->next = NULL;
  self->n_inflight--;
}

static void on_async_closed(uv_handle_t *h) {
  sp_grpc_client_t *self = h->data;
  self->state = CL_CLOSED;
  if (self->free_on_close) {
    sp_grpc_client_destroy(self);
    return;
  }
  void (*cb)(void *) = self->shutdown_cb;
  self->shutdown_cb = NULL;
  if (cb) cb(self->shutdown_arg);
}

/* Every callback ran: drop the channel and let the CQ thread finish. */
static void stop_channel(sp_grpc_client_t *self) {
  if (!self->channel) return;
  grpc_channel_destroy(self->channel);
  self->channel = NULL;
  grpc_completion_queue_shutdown(self->cq);
}

static void deliver(sp_grpc_client_t *self, ccall_t *cc) {
  inflight_unlink(self, cc);
  size_t dl = GRPC_SLICE_LENGTH(cc->details);
  char *msg = dl ? sp_strndup((const char *)GRPC_SLICE_START_PTR(cc->details), dl) : NULL;
  sp_grpc_client_result_t res = {
      .status = (int)cc->status,
      .message = msg ? msg : "",
      .resp = cc->has_resp ? GRPC_SLICE_START_PTR(cc->resp) : NULL,
      .resp_len = cc->has_resp ? GRPC_SLICE_LENGTH(cc->resp) : 0,
      .retry_after_ms = cc->retry_after_ms,
  };
  cc->cb(&res, cc->arg);
  sp_free(msg);
  ccall_free(cc);
}

static void on_async(uv_async_t *h) {
  sp_grpc_client_t *self = h->data;
  uv_mutex_lock(&self->mu);
  ccall_t *list = self->done_head;
  self->done_head = self->done_tail = NULL;
  bool thread_done = self->thread_done;
  uv_mutex_unlock(&self->mu);

  while (list) {
    ccall_t *cc = list;
    list = cc->done_next;
    deliver(self, cc);
  }
  if (self->state == CL_STOPPING && self->n_inflight == 0) stop_channel(self);
  if (thread_done && self->thread_running) {
    uv_thread_join(&self->thread);
    self->thread_running = false;
    grpc_completion_queue_destroy(self->cq);
    self->cq = NULL;
    self->state = CL_CLOSING;
    uv_close((uv_handle_t *)&self->async, on_async_closed);
  }
}

static grpc_channel_credentials *make_credentials(sp_grpc_client_t *self,
                                                  const sp_tls_config_t *tls, int *rc) {
  grpc_channel_credentials *creds = NULL;
  char *ca = NULL, *cert = NULL, *key = NULL;
  *rc = 0;
  if (!tls || tls->insecure) return grpc_insecure_credentials_create();

  if ((*rc = sp__grpc_check_tls_version(self->component, tls)) < 0) goto out;
  if (tls->ca_file && *tls->ca_file &&
      (*rc = sp__grpc_read_pem(self->component, "ca_file", tls->ca_file, &ca)) < 0)
    goto out;
  bool has_cert = tls->cert_file && *tls->cert_file, has_key = tls->key_file && *tls->key_file;
  if (has_cert != has_key) {
    sp_log_error(self->component, "tls: cert_file and key_file must be set together");
    *rc = SP_ECONFIG;
    goto out;
  }
  if (has_cert &&
      ((*rc = sp__grpc_read_pem(self->component, "cert_file", tls->cert_file, &cert)) < 0 ||
       (*rc = sp__grpc_read_pem(self->component, "key_file", tls->key_file, &key)) < 0))
    goto out;

  if (tls->insecure_skip_verify) {
    /* The TLS credentials API can skip the chain and name checks; the
     * classic SSL credentials cannot. */
    grpc_tls_credentials_options *o = grpc_tls_credentials_options_create();
    if (cert) {
      grpc_tls_identity_pairs *pairs = grpc_tls_identity_pairs_create();
      grpc_tls_identity_pairs_add_pair(pairs, key, cert);
      grpc_tls_certificate_provider *prov =
          grpc_tls_certificate_provider_static_data_create(NULL, pairs);
      grpc_tls_credentials_options_set_certificate_provider(o, prov);
      grpc_tls_credentials_options_watch_identity_key_cert_pairs(o);
      grpc_tls_certificate_provider_release(prov);
    }
    grpc_tls_credentials_options_set_verify_server_cert(o, 0);
    grpc_tls_certificate_verifier *v = grpc_tls_certificate_verifier_no_op_create();
    grpc_tls_credentials_options_set_certificate_verifier(o, v);
    grpc_tls_certificate_verifier_release(v);
    grpc_tls_credentials_options_set_check_call_host(o, 0);
    creds = grpc_tls_credentials_create(o);
    sp_log_warn(self->component, "tls: insecure_skip_verify is set; the server is not verified");
  } else {
    grpc_ssl_pem_key_cert_pair pair = {key, cert};
    creds = grpc_ssl_credentials_create_ex(ca, cert ? &pair : NULL, NULL, NULL);
  }
  if (!creds) {
    sp_log_error(self->component, "tls: cannot create the gRPC channel credentials");
    *rc = SP_ECONFIG;
  }
out:
  sp_free(ca);
  sp_free(cert);
  sp_free(key);
  return creds;
}

int sp_grpc_client_create(uv_loop_t *loop, const sp_grpc_client_options_t *opts,
                          sp_grpc_client_t **out) {
  int rc = SP_EINVAL;
  sp_grpc_client_t *self = NULL;
  grpc_channel_credentials *creds = NULL;
  if (out) *out = NULL;
  if (!loop || !opts || !out || !opts->target || !*opts->target ||
      (opts->n_headers && !opts->headers))
    goto fail;
  for (size_t i = 0; i < opts->n_headers; i++)
    if (!opts->headers[i].name || !*opts->headers[i].name || !opts->headers[i].value) goto fail;

  rc = SP_ENOMEM;
  self = sp_calloc(1, sizeof(*self));
  if (!self) goto fail;
  self->loop = loop;
  self->state = CL_RUNNING;
  self->component = sp_strdup(opts->component ? opts->component : "grpc");
  self->target = sp_strdup(opts->target);
  if (!self->component || !self->target) goto fail;
  if ((rc = sp__grpc_load(self->component)) < 0) goto fail;
  sp__grpc_init();
  self->grpc_ref = true;

  if (opts->n_headers) {
    self->static_md = sp_calloc(opts->n_headers, sizeof(*self->static_md));
    if (!self->static_md) goto fail;
    for (size_t i = 0; i < opts->n_headers; i++) {
      self->static_md[i].key = slice_lower(opts->headers[i].name);
      self->static_md[i].value = grpc_slice_from_copied_string(opts->headers[i].value);
      self->n_static = i + 1;
    }
  }

  creds = make_credentials(self, opts->tls, &rc);
  if (!creds) {
    if (rc == 0) rc = SP_EIO;
    goto fail;
  }
  rc = SP_ENOMEM;
  if (opts->tls && !opts->tls->insecure && opts->tls->server_name_override &&
      *opts->tls->server_name_override) {
    self->name_override = sp_strdup(opts->tls->server_name_override);
    if (!self->name_override) goto fail;
  }

  sp__grpc_args_t args = {0};
  sp__grpc_args_int(&args, GRPC_ARG_ENABLE_RETRIES, 0);
  sp__grpc_args_int(&args, GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  sp__grpc_args_str(&args, GRPC_ARG_PRIMARY_USER_AGENT_STRING, "spanprof/" SP_VERSION);
  if (opts->compression == SP_GRPC_COMPRESSION_GZIP)
    sp__grpc_args_int(&args, GRPC_COMPRESSION_CHANNEL_DEFAULT_ALGORITHM, GRPC_COMPRESS_GZIP);
  if (opts->max_send_msg_size)
    sp__grpc_args_int(&args, GRPC_ARG_MAX_SEND_MESSAGE_LENGTH,
                      sp__grpc_clamp_int(opts->max_send_msg_size));
  if (opts->max_recv_msg_size)
    sp__grpc_args_int(&args, GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH,
                      sp__grpc_clamp_int(opts->max_recv_msg_size));
  if (opts->keepalive_time_ms)
    sp__grpc_args_int(&args, GRPC_ARG_KEEPALIVE_TIME_MS,
                      sp__grpc_clamp_int(opts->keepalive_time_ms));
  if (opts->keepalive_timeout_ms)
    sp__grpc_args_int(&args, GRPC_ARG_KEEPALIVE_TIMEOUT_MS,
                      sp__grpc_clamp_int(opts->keepalive_timeout_ms));
  if (opts->keepalive_permit_without_calls)
    sp__grpc_args_int(&args, GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  if (self->name_override)
    sp__grpc_args_str(&args, GRPC_SSL_TARGET_NAME_OVERRIDE_ARG, self->name_override);
  grpc_channel_args cargs = {args.n, args.v};

  rc = SP_EIO;
  self->channel = grpc_channel_create(self->target, creds, &cargs);
  grpc_channel_credentials_release(creds);
  creds = NULL;
  self->cq = grpc_completion_queue_create_for_next(NULL);
  if (!self->channel || !self->cq) goto fail;
  if (uv_mutex_init(&self->mu) != 0) goto fail;
  self->mu_init = true;
  if (uv_async_init(loop, &self->async, on_async) != 0) goto fail;
  self->async.data = self;
  if (uv_thread_create(&self->thread, cq_thread_main, self) != 0) {
    /* The async handle exists now: free from its close callback. */
    stop_channel(self);
    while (grpc_completion_queue_next(self->cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL).type !=
           GRPC_QUEUE_SHUTDOWN) {
    }
    grpc_completion_queue_destroy(self->cq);
    self->cq = NULL;
    self->free_on_close = true;
    self->state = CL_CLOSING;
    uv_close((uv_handle_t *)&self->async, on_async_closed);
    return SP_EIO;
  }
  self->thread_running = true;
  *out = self;
  return 0;

fail:
  if (creds) grpc_channel_credentials_release(creds);
  if (self) {
    if (self->channel) grpc_channel_destroy(self->channel);
    self->channel = NULL;
    if (self->cq) {
      grpc_completion_queue_shutdown(self->cq);
      while (grpc_completion_queue_next(self->cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL).type !=
             GRPC_QUEUE_SHUTDOWN) {
      }
      grpc_completion_queue_destroy(self->cq);
      self->cq = NULL;
    }
    self->state = CL_CLOSED;
  }
  sp_grpc_client_destroy(self);
  return rc;
}

int sp_grpc_client_call(sp_grpc_client_t *self, const char *method, const uint8_t *req, size_t len,
                        uint64_t timeout_ms, const sp_grpc_metadata_t *extra, size_t n_extra,
                        sp_grpc_client_cb cb, void *arg) {
  if (!self || !method || method[0] != '/' || !cb || (len && !req) || (n_extra && !extra))
    return SP_EINVAL;
  if (self->state != CL_RUNNING) return SP_ESHUTDOWN;
  for (size_t i = 0; i < n_extra; i++)
    if (!extra[i].name || !*extra[i].name || !extra[i].value) return SP_EINVAL;

  ccall_t *cc = sp_calloc(1, sizeof(*cc) + (self->n_static + n_extra) * sizeof(grpc_metadata));
  if (!cc) return SP_ENOMEM;
  cc->client = self;
  cc->cb = cb;
  cc->arg = arg;
  cc->details = grpc_empty_slice();
  grpc_metadata_array_init(&cc->init_md);
  grpc_metadata_array_init(&cc->trail_md);
  cc->md = cc->md_storage;
  for (size_t i = 0; i < self->n_static; i++)
    cc->md[cc->n_md++] = self->static_md[i];
  for (size_t i = 0; i < n_extra; i++) {
    cc->md[cc->n_md].key = slice_lower(extra[i].name);
    cc->md[cc->n_md].value = grpc_slice_from_copied_string(extra[i].value);
    cc->n_md++;
  }

  gpr_timespec deadline =
      timeout_ms
          ? gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC),
                         gpr_time_from_millis(
                             (int64_t)(timeout_ms > INT64_MAX / 2 ? INT64_MAX / 2 : timeout_ms),
                             GPR_TIMESPAN))
          : gpr_inf_future(GPR_CLOCK_REALTIME);
  cc->call = grpc_channel_create_call(self->channel, NULL, GRPC_PROPAGATE_DEFAULTS, self->cq,
                                      grpc_slice_from_static_string(method), NULL, deadline, NULL);
  if (!cc->call) {
    ccall_free(cc);
    return SP_EIO;
  }
  grpc_slice s = len ? grpc_slice_from_copied_buffer((const char *)req, len) : grpc_empty_slice();
  cc->send_bb = grpc_raw_byte_buffer_create(&s, 1);
  grpc_slice_unref(s);

  grpc_op ops[6];
  memset(ops, 0, sizeof(ops));
  ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
  ops[0].data.send_initial_metadata.count = cc->n_md;
  ops[0].data.send_initial_metadata.metadata = cc->n_md ? cc->md : NULL;
  ops[1].op = GRPC_OP_SEND_MESSAGE;
  ops[1].data.send_message.send_message = cc->send_bb;
  ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
  ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
  ops[3].data.recv_initial_metadata.recv_initial_metadata = &cc->init_md;
  ops[4].op = GRPC_OP_RECV_MESSAGE;
  ops[4].data.recv_message.recv_message = &cc->recv_bb;
  ops[5].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
  ops[5].data.recv_status_on_client.trailing_metadata = &cc->trail_md;
  ops[5].data.recv_status_on_client.status = &cc->status;
  ops[5].data.recv_status_on_client.status_details = &cc->details;
  ops[5].data.recv_status_on_client.error_string = &cc->error_string;

  /* Linked first: once the batch starts, the CQ thread owns the call's
   * result fields (never the list links). */
  cc->next = self->inflight;
  if (self->inflight) self->inflight->prev = cc;
  self->inflight = cc;
  self->n_inflight++;
  grpc_call_error err = grpc_call_start_batch(cc->call, ops, 6, cc, NULL);
  if (err != GRPC_CALL_OK) {
    inflight_unlink(self, cc);
    ccall_free(cc);
    sp_log_error(self->component, "gRPC call %s could not start (%d)", method, (int)err);
    return err == GRPC_CALL_ERROR_INVALID_METADATA ? SP_EINVAL : SP_EIO;
  }
  return 0;
}

size_t sp_grpc_client_inflight(const sp_grpc_client_t *self) { return self ? self->n_inflight : 0; }

void sp_grpc_client_shutdown(sp_grpc_client_t *self, void (*cb)(void *arg), void *arg) {
  if (!self || self->shutdown_requested) return;
  self->shutdown_requested = true;
  self->shutdown_cb = cb;
  self->shutdown_arg = arg;
  self->state = CL_STOPPING;
  for (ccall_t *cc = self->inflight; cc; cc = cc->next)
    grpc_call_cancel(cc->call, NULL);
  /* With nothing in flight the queue shuts down now; the callback still
   * comes later, after the CQ thread's exit reached the loop. */
  if (self->n_inflight == 0) stop_channel(self);
}

void sp_grpc_client_destroy(sp_grpc_client_t *self) {
  if (!self) return;
  assert(self->state == CL_CLOSED);
  for (size_t i = 0; i < self->n_static; i++) {
    grpc_slice_unref(self->static_md[i].key);
    grpc_slice_unref(self->static_md[i].value);
  }
  sp_free(self->static_md);
  sp_free(self->component);
  sp_free(self->target);
  sp_free(self->name_override);
  if (self->mu_init) uv_mutex_destroy(&self->mu);
  bool grpc_ref = self->grpc_ref;
  sp_free(self);
  if (grpc_ref) grpc_shutdown();
}
