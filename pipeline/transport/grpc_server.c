/*
 * grpc_server.c — unary gRPC calls from grpc core onto the libuv loop.
 *
 * Threads and hand-offs. grpc core's I/O runs in the one completion-queue
 * (CQ) thread that polls our queue, plus grpc's own internal threads. Every
 * call lives in one sp_grpc_call_t ("slot"), owned by exactly one side at a
 * time:
 *
 *   CQ thread    grpc_server_request_call (64 kept outstanding, any method)
 *                → NEW: unknown path → UNIMPLEMENTED, answered right there;
 *                  known path → RECV_MESSAGE batch
 *                → RECV: the (already decompressed) message is made
 *                  contiguous (a slice ref when it is one slice, else one
 *                  copy) and the slot is appended to `incoming` under `mu`,
 *                  then uv_async_send
 *   loop         on_async drains `incoming` whole and runs each handler;
 *                sp_grpc_respond starts the final batch (initial metadata,
 *                message, status, RECV_CLOSE_ON_SERVER) from the loop thread
 *   CQ thread    FINISH: unrefs the call and recycles the slot
 *
 * The only state both threads touch is `incoming` and two flags, under `mu`.
 * The CQ thread allocates a slot (sp_calloc) only when its pool of spare
 * slots is empty, so tests that inject allocation failures (a hook that is
 * not thread-safe) should not run a server at the same time.
 * Starting the final batch on the loop is safe because nothing else touches
 * that call while its handler holds it; it avoids a second hop because
 * grpc core 1.51's C API cannot wake a thread blocked in
 * grpc_completion_queue_next except through an operation on a call.
 *
 * Shutdown. grpc_server_shutdown_and_notify stops accepting; grpc posts our
 * shutdown tag once every call has finished. A timer cancels all calls if
 * handlers do not answer (or clients do not finish sending) within
 * shutdown_timeout_ms, or the tighter bound given to
 * sp_grpc_server_shutdown_within. When the CQ thread sees
 * the tag it tells the loop, which destroys the grpc server, marks calls
 * still held by handlers as orphans (each keeps a grpc_init reference and
 * is only freed by its eventual sp_grpc_respond), and shuts the queue down;
 * from then on no batch is started. The CQ thread drains the queue, frees
 * its spare slots and reports its exit; the loop joins it, closes the async
 * and timer handles and runs the shutdown callback from the last close
 * callback.
 */
#include "pipeline/transport/grpc_server.h"

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
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pipeline/transport/grpc_dl.h" /* last: grpc calls go through the table */

#define REQUESTS_OUTSTANDING 64 /* grpc_server_request_call kept pending */
#define SPARE_SLOTS_MAX 128     /* finished slots the CQ thread keeps for reuse */
#define DEFAULT_MAX_RECV (4u << 20)
#define DEFAULT_SHUTDOWN_TIMEOUT_MS 5000

enum { STAGE_REQUESTED, STAGE_RECV, STAGE_FINISH };

enum {
  ST_CREATED,  /* not started (or start failed before any handle existed) */
  ST_RUNNING,  /* started */
  ST_STOPPING, /* shutdown called: waiting for grpc and the CQ thread */
  ST_CLOSING,  /* handles closing */
  ST_CLOSED    /* handles closed; the shutdown callback ran (if any) */
};

struct sp_grpc_call_s {
  sp_grpc_server_t *server; /* NULL once orphaned by a finished shutdown */
  int stage;
  grpc_call *call;
  grpc_call_details details;
  grpc_metadata_array md;
  grpc_byte_buffer *recv_bb;
  grpc_slice msg; /* the request message, contiguous */
  const sp_grpc_method_t *method;
  /* the final batch */
  grpc_byte_buffer *send_bb;
  grpc_slice status_msg;
  grpc_metadata trailer;
  size_t n_trailer;
  int cancelled;
  /* loop-side caches, freed by sp_grpc_respond */
  const char **md_pairs; /* key, value, key, value... in one block */
  size_t n_md_pairs;
  char *peer;
  /* lists: `incoming` / the CQ thread's spares, and the loop's handled calls */
  sp_grpc_call_t *next;
  sp_grpc_call_t *h_prev, *h_next;
};

struct sp_grpc_server_s {
  uv_loop_t *loop;
  char *component;
  char *bind_addr;
  sp_grpc_method_t *methods; /* paths copied */
  size_t n_methods;
  size_t max_recv;
  uint64_t keepalive_time_ms, keepalive_timeout_ms, max_idle_ms, shutdown_timeout_ms;
  bool tls;
  char *cert_pem, *key_pem, *client_ca_pem;
  bool grpc_ref; /* holds a grpc_init() reference */

  /* loop thread only */
  int state;
  int port;
  grpc_server *server;
  grpc_completion_queue *cq;
  uv_thread_t thread;
  bool thread_running;
  uv_async_t async;
  uv_timer_t timer;
  int handles_open;
  bool destroy_pending;
  bool shutdown_requested;
  uint64_t shutdown_started; /* loop time of the shutdown call */
  void (*shutdown_cb)(void *arg);
  void *shutdown_arg;
  sp_grpc_call_t *handled; /* calls given to handlers, not yet answered */
  size_t n_handled;
  bool server_done_seen; /* grpc server destroyed, queue shut down */
  char shutdown_tag;     /* its address tags grpc_server_shutdown_and_notify */

  /* shared: under mu */
  uv_mutex_t mu;
  bool mu_init;
  sp_grpc_call_t *in_head, *in_tail;
  bool server_done; /* the CQ thread saw the shutdown tag */
  bool thread_done; /* the CQ thread is exiting */

  /* CQ thread only (the loop thread before the thread starts / after join) */
  sp_grpc_call_t *spare;
  size_t n_spare;
  size_t outstanding;
  bool stop_requests;   /* a request was failed: the server is shutting down */
  bool cq_saw_shutdown; /* the shutdown tag arrived: start no batch any more */
};

/* ---- slots -------------------------------------------------------------------- */

static sp_grpc_call_t *slot_new(void) {
  sp_grpc_call_t *c = sp_calloc(1, sizeof(*c));
  if (!c) return NULL;
  grpc_call_details_init(&c->details);
  grpc_metadata_array_init(&c->md);
  c->msg = grpc_empty_slice();
  c->status_msg = grpc_empty_slice();
  return c;
}

/* Releases everything a call holds and makes the slot ready for a new request. */
static void slot_clear(sp_grpc_call_t *c) {
  if (c->call) grpc_call_unref(c->call);
  c->call = NULL;
  grpc_call_details_destroy(&c->details);
  grpc_call_details_init(&c->details);
  grpc_metadata_array_destroy(&c->md);
  grpc_metadata_array_init(&c->md);
  if (c->recv_bb) grpc_byte_buffer_destroy(c->recv_bb);
  if (c->send_bb) grpc_byte_buffer_destroy(c->send_bb);
  c->recv_bb = c->send_bb = NULL;
  grpc_slice_unref(c->msg);
  grpc_slice_unref(c->status_msg);
  c->msg = c->status_msg = grpc_empty_slice();
  if (c->n_trailer) {
    grpc_slice_unref(c->trailer.key);
    grpc_slice_unref(c->trailer.value);
    c->n_trailer = 0;
  }
  sp_free(c->md_pairs);
  sp_free(c->peer);
  c->md_pairs = NULL;
  c->n_md_pairs = 0;
  c->peer = NULL;
  c->method = NULL;
  c->cancelled = 0;
  c->next = c->h_prev = c->h_next = NULL;
}

static void slot_free(sp_grpc_call_t *c) {
  if (!c) return;
  slot_clear(c);
  grpc_call_details_destroy(&c->details);
  grpc_metadata_array_destroy(&c->md);
  sp_free(c);
}

/* ---- completion-queue thread ---------------------------------------------------- */

static void post_incoming(sp_grpc_server_t *self, sp_grpc_call_t *c) {
  c->next = NULL;
  uv_mutex_lock(&self->mu);
  if (self->in_tail)
    self->in_tail->next = c;
  else
    self->in_head = c;
  self->in_tail = c;
  uv_mutex_unlock(&self->mu);
  uv_async_send(&self->async);
}

static void post_flag(sp_grpc_server_t *self, bool *flag) {
  uv_mutex_lock(&self->mu);
  *flag = true;
  uv_mutex_unlock(&self->mu);
  uv_async_send(&self->async);
}

/* Keeps REQUESTS_OUTSTANDING request_call pending, reusing spare slots first. */
static void request_more(sp_grpc_server_t *self) {
  while (!self->stop_requests && !self->cq_saw_shutdown &&
         self->outstanding < REQUESTS_OUTSTANDING) {
    sp_grpc_call_t *c = self->spare;
    if (c) {
      self->spare = c->next;
      self->n_spare--;
      c->next = NULL;
    } else if (!(c = slot_new())) {
      /* Out of memory: fewer requests stay pending; finished calls top them up. */
      return;
    }
    c->server = self;
    c->stage = STAGE_REQUESTED;
    grpc_call_error err = grpc_server_request_call(self->server, &c->call, &c->details, &c->md,
                                                   self->cq, self->cq, c);
    if (err != GRPC_CALL_OK) {
      sp_log_error(self->component, "grpc_server_request_call failed: %d", (int)err);
      slot_free(c);
      return;
    }
    self->outstanding++;
  }
}

/* A call is over for the CQ side: recycle its slot and top up the requests. */
static void cq_release(sp_grpc_server_t *self, sp_grpc_call_t *c) {
  slot_clear(c);
  if (self->n_spare < SPARE_SLOTS_MAX && !self->cq_saw_shutdown) {
    c->next = self->spare;
    self->spare = c;
    self->n_spare++;
  } else {
    slot_free(c);
  }
  request_more(self);
}

/* Answers a call from the CQ thread (unknown method, missing message). */
static void cq_finish(sp_grpc_server_t *self, sp_grpc_call_t *c, grpc_status_code status,
                      const char *message) {
  if (self->cq_saw_shutdown) {
    /* The loop may already have shut the queue down: no new batch. */
    cq_release(self, c);
    return;
  }
  grpc_op ops[3];
  memset(ops, 0, sizeof(ops));
  c->status_msg = grpc_slice_from_copied_string(message);
  ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
  ops[1].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
  ops[1].data.send_status_from_server.status = status;
  ops[1].data.send_status_from_server.status_details = &c->status_msg;
  ops[2].op = GRPC_OP_RECV_CLOSE_ON_SERVER;
  ops[2].data.recv_close_on_server.cancelled = &c->cancelled;
  c->stage = STAGE_FINISH;
  if (grpc_call_start_batch(c->call, ops, 3, c, NULL) != GRPC_CALL_OK) cq_release(self, c);
}

static const sp_grpc_method_t *find_method(const sp_grpc_server_t *self, grpc_slice path) {
  size_t len = GRPC_SLICE_LENGTH(path);
  const uint8_t *p = GRPC_SLICE_START_PTR(path);
  for (size_t i = 0; i < self->n_methods; i++) {
    const char *m = self->methods[i].path;
    if (strlen(m) == len && memcmp(m, p, len) == 0) return &self->methods[i];
  }
  return NULL;
}

static void on_new_call(sp_grpc_server_t *self, sp_grpc_call_t *c, int ok) {
  self->outstanding--;
  if (!ok) {
    /* The request was failed by the server shutting down: asking again
     * would only fail again. */
    self->stop_requests = true;
    cq_release(self, c);
    return;
  }
  request_more(self);
  const sp_grpc_method_t *m = find_method(self, c->details.method);
  if (!m) {
    char text[160];
    int n = (int)GRPC_SLICE_LENGTH(c->details.method);
    snprintf(text, sizeof(text), "unknown method %.*s", n > 100 ? 100 : n,
             (const char *)GRPC_SLICE_START_PTR(c->details.method));
    cq_finish(self, c, GRPC_STATUS_UNIMPLEMENTED, text);
    return;
  }
  if (self->cq_saw_shutdown) {
    cq_release(self, c);
    return;
  }
  c->method = m;
  c->stage = STAGE_RECV;
  grpc_op op;
  memset(&op, 0, sizeof(op));
  op.op = GRPC_OP_RECV_MESSAGE;
  op.data.recv_message.recv_message = &c->recv_bb;
  if (grpc_call_start_batch(c->call, &op, 1, c, NULL) != GRPC_CALL_OK) cq_release(self, c);
}

/* Makes the received message contiguous: a reference when grpc already holds
 * it in one uncompressed slice, otherwise one copy. 0 or -1. */
static int take_message(sp_grpc_call_t *c) {
  grpc_byte_buffer *bb = c->recv_bb;
  if (bb->type == GRPC_BB_RAW && bb->data.raw.compression == GRPC_COMPRESS_NONE &&
      bb->data.raw.slice_buffer.count == 1) {
    c->msg = grpc_slice_ref(bb->data.raw.slice_buffer.slices[0]);
  } else {
    grpc_byte_buffer_reader r;
    if (!grpc_byte_buffer_reader_init(&r, bb)) return -1;
    c->msg = grpc_byte_buffer_reader_readall(&r);
    grpc_byte_buffer_reader_destroy(&r);
  }
  grpc_byte_buffer_destroy(bb);
  c->recv_bb = NULL;
  return 0;
}

static void on_recv(sp_grpc_server_t *self, sp_grpc_call_t *c, int ok) {
  if (!ok) {
    /* Cancelled, deadline passed, or over the size limit: grpc core has
     * already chosen the status (RESOURCE_EXHAUSTED for the latter). */
    cq_release(self, c);
    return;
  }
  if (!c->recv_bb) {
    cq_finish(self, c, GRPC_STATUS_INTERNAL, "missing request message");
    return;
  }
  if (take_message(c) < 0) {
    cq_finish(self, c, GRPC_STATUS_INTERNAL, "cannot read the request message");
    return;
  }
  post_incoming(self, c);
}

static void cq_thread_main(void *arg) {
  sp_grpc_server_t *self = arg;
  for (;;) {
    grpc_event ev = grpc_completion_queue_next(self->cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
    if (ev.type == GRPC_QUEUE_SHUTDOWN) break;
    if (ev.type != GRPC_OP_COMPLETE) continue;
    if (ev.tag == &self->shutdown_tag) {
      self->cq_saw_shutdown = true;
      post_flag(self, &self->server_done);
      continue;
    }
    sp_grpc_call_t *c = ev.tag;
    switch (c->stage) {
    case STAGE_REQUESTED: on_new_call(self, c, ev.success); break;
    case STAGE_RECV: on_recv(self, c, ev.success); break;
    default: cq_release(self, c); break;
    }
  }
  while (self->spare) {
    sp_grpc_call_t *c = self->spare;
    self->spare = c->next;
    slot_free(c);
  }
  self->n_spare = 0;
  post_flag(self, &self->thread_done);
}

/* ---- loop thread ------------------------------------------------------------------ */

static void handled_unlink(sp_grpc_server_t *self, sp_grpc_call_t *c) {
  if (c->h_prev)
    c->h_prev->h_next = c->h_next;
  else
    self->handled = c->h_next;
  if (c->h_next) c->h_next->h_prev = c->h_prev;
  c->h_prev = c->h_next = NULL;
  self->n_handled--;
}

static void on_handle_closed(uv_handle_t *h) {
  sp_grpc_server_t *self = h->data;
  if (--self->handles_open > 0) return;
  self->state = ST_CLOSED;
  void (*cb)(void *) = self->shutdown_cb;
  self->shutdown_cb = NULL;
  bool free_now = self->destroy_pending;
  if (cb) cb(self->shutdown_arg);
  if (free_now) sp_grpc_server_destroy(self);
}

static void close_handles(sp_grpc_server_t *self) {
  self->state = ST_CLOSING;
  self->handles_open = 2;
  uv_close((uv_handle_t *)&self->async, on_handle_closed);
  uv_close((uv_handle_t *)&self->timer, on_handle_closed);
}

static void on_server_done(sp_grpc_server_t *self) {
  self->server_done_seen = true;
  uv_timer_stop(&self->timer);
  grpc_server_destroy(self->server);
  self->server = NULL;
  if (self->n_handled)
    sp_log_warn(self->component,
                "%zu gRPC calls were still unanswered at shutdown; they were cancelled",
                self->n_handled);
  /* Orphans outlive the server: each keeps grpc initialised until its
   * handler answers (sp_grpc_respond then only frees it). */
  while (self->handled) {
    sp_grpc_call_t *c = self->handled;
    handled_unlink(self, c);
    c->server = NULL;
    sp__grpc_init();
  }
  grpc_completion_queue_shutdown(self->cq);
}

static void on_thread_done(sp_grpc_server_t *self) {
  uv_thread_join(&self->thread);
  self->thread_running = false;
  grpc_completion_queue_destroy(self->cq);
  self->cq = NULL;
  close_handles(self);
}

static void dispatch(sp_grpc_server_t *self, sp_grpc_call_t *c) {
  if (self->server_done_seen) {
    /* Arrived after the server finished (its peer is gone): drop it. */
    slot_free(c);
    return;
  }
  c->h_prev = NULL;
  c->h_next = self->handled;
  if (self->handled) self->handled->h_prev = c;
  self->handled = c;
  self->n_handled++;
  const sp_grpc_method_t *m = c->method;
  m->handler(c, GRPC_SLICE_START_PTR(c->msg), GRPC_SLICE_LENGTH(c->msg), m->ctx);
}

static void on_async(uv_async_t *h) {
  sp_grpc_server_t *self = h->data;
  uv_mutex_lock(&self->mu);
  sp_grpc_call_t *list = self->in_head;
  self->in_head = self->in_tail = NULL;
  bool server_done = self->server_done;
  bool thread_done = self->thread_done;
  uv_mutex_unlock(&self->mu);

  while (list) {
    sp_grpc_call_t *c = list;
    list = c->next;
    c->next = NULL;
    dispatch(self, c);
  }
  if (server_done && !self->server_done_seen) on_server_done(self);
  if (thread_done && self->thread_running) on_thread_done(self);
}

static void on_shutdown_timeout(uv_timer_t *t) {
  sp_grpc_server_t *self = t->data;
  if (!self->server) return;
  sp_log_warn(self->component,
              "gRPC shutdown: calls still in flight after %llu ms, cancelling them",
              (unsigned long long)(uv_now(self->loop) - self->shutdown_started));
  grpc_server_cancel_all_calls(self->server);
}

/* Parses "host:port" into grpc's bind address; an empty host binds all
 * interfaces. NULL on a malformed endpoint. */
static char *make_bind_addr(const char *endpoint) {
  const char *colon = endpoint ? strrchr(endpoint, ':') : NULL;
  if (!colon || !colon[1]) return NULL;
  char *end = NULL;
  unsigned long port = strtoul(colon + 1, &end, 10);
  if (*end || port > 65535 || colon[1] < '0' || colon[1] > '9') return NULL;
  if (colon == endpoint) return sp_sprintf("[::]:%lu", port);
  return sp_strdup(endpoint);
}

int sp_grpc_server_create(uv_loop_t *loop, const sp_grpc_server_options_t *opts,
                          sp_grpc_server_t **out) {
  int rc = SP_EINVAL;
  sp_grpc_server_t *self = NULL;
  if (out) *out = NULL;
  if (!loop || !opts || !out || (opts->n_methods && !opts->methods)) goto fail;
  for (size_t i = 0; i < opts->n_methods; i++)
    if (!opts->methods[i].path || opts->methods[i].path[0] != '/' || !opts->methods[i].handler)
      goto fail;

  rc = SP_ENOMEM;
  self = sp_calloc(1, sizeof(*self));
  if (!self) goto fail;
  self->loop = loop;
  self->state = ST_CREATED;
  self->component = sp_strdup(opts->component ? opts->component : "grpc");
  if (!self->component) goto fail;
  self->bind_addr = make_bind_addr(opts->endpoint);
  if (!self->bind_addr) {
    rc = SP_EINVAL;
    sp_log_error(self->component, "invalid gRPC endpoint \"%s\" (want host:port)",
                 opts->endpoint ? opts->endpoint : "");
    goto fail;
  }
  if (opts->n_methods) {
    self->methods = sp_calloc(opts->n_methods, sizeof(*self->methods));
    if (!self->methods) goto fail;
    for (size_t i = 0; i < opts->n_methods; i++) {
      self->methods[i] = opts->methods[i];
      self->methods[i].path = sp_strdup(opts->methods[i].path);
      self->n_methods = i + 1;
      if (!self->methods[i].path) goto fail;
    }
  }
  self->max_recv = opts->max_recv_msg_size ? opts->max_recv_msg_size : DEFAULT_MAX_RECV;
  self->keepalive_time_ms = opts->keepalive_time_ms;
  self->keepalive_timeout_ms = opts->keepalive_timeout_ms;
  self->max_idle_ms = opts->max_connection_idle_ms;
  self->shutdown_timeout_ms =
      opts->shutdown_timeout_ms ? opts->shutdown_timeout_ms : DEFAULT_SHUTDOWN_TIMEOUT_MS;

  if (opts->tls && opts->tls->present) {
    self->tls = true;
    if ((rc = sp__grpc_check_tls_version(self->component, opts->tls)) < 0) goto fail;
    if ((rc = sp__grpc_read_pem(self->component, "cert_file", opts->tls->cert_file,
                                &self->cert_pem)) < 0)
      goto fail;
    if ((rc = sp__grpc_read_pem(self->component, "key_file", opts->tls->key_file, &self->key_pem)) <
        0)
      goto fail;
    if (opts->tls->client_ca_file && *opts->tls->client_ca_file &&
        (rc = sp__grpc_read_pem(self->component, "client_ca_file", opts->tls->client_ca_file,
                                &self->client_ca_pem)) < 0)
      goto fail;
  }
  if (uv_mutex_init(&self->mu) != 0) {
    rc = SP_EIO;
    goto fail;
  }
  self->mu_init = true;
  if ((rc = sp__grpc_load(self->component)) < 0) goto fail;
  sp__grpc_init();
  self->grpc_ref = true;
  *out = self;
  return 0;
fail:
  sp_grpc_server_destroy(self);
  return rc;
}

static grpc_server_credentials *make_credentials(sp_grpc_server_t *self) {
  if (!self->tls) return grpc_insecure_server_credentials_create();
  grpc_ssl_pem_key_cert_pair pair = {self->key_pem, self->cert_pem};
  return grpc_ssl_server_credentials_create_ex(
      self->client_ca_pem, &pair, 1,
      self->client_ca_pem ? GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY
                          : GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE,
      NULL);
}

/* Shuts a started grpc server down synchronously (start failed after
 * grpc_server_start): no handler has seen any of its calls. */
static void abort_started(sp_grpc_server_t *self) {
  grpc_server_shutdown_and_notify(self->server, self->cq, &self->shutdown_tag);
  grpc_server_cancel_all_calls(self->server);
  self->cq_saw_shutdown = true; /* no new requests or batches */
  for (;;) {
    grpc_event ev = grpc_completion_queue_next(self->cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
    if (ev.type == GRPC_QUEUE_SHUTDOWN) break;
    if (ev.type != GRPC_OP_COMPLETE) continue;
    if (ev.tag == &self->shutdown_tag) {
      grpc_server_destroy(self->server);
      self->server = NULL;
      grpc_completion_queue_shutdown(self->cq);
      continue;
    }
    slot_free(ev.tag);
  }
  grpc_completion_queue_destroy(self->cq);
  self->cq = NULL;
}

/* Destroys a grpc server that was never started, and its queue. */
static void drop_unstarted(sp_grpc_server_t *self) {
  if (self->server) grpc_server_destroy(self->server);
  self->server = NULL;
  if (self->cq) {
    grpc_completion_queue_shutdown(self->cq);
    while (grpc_completion_queue_next(self->cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL).type !=
           GRPC_QUEUE_SHUTDOWN) {
    }
    grpc_completion_queue_destroy(self->cq);
    self->cq = NULL;
  }
}

int sp_grpc_server_start(sp_grpc_server_t *self) {
  if (!self) return SP_EINVAL;
  if (self->state != ST_CREATED || self->handles_open) return SP_ESTATE;
  int rc = SP_EIO;
  bool started = false;

  sp__grpc_args_t args = {0};
  sp__grpc_args_int(&args, GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH, sp__grpc_clamp_int(self->max_recv));
  sp__grpc_args_int(&args, GRPC_ARG_ALLOW_REUSEPORT, 0); /* a busy port must fail the bind */
  sp__grpc_args_int(&args, GRPC_COMPRESSION_CHANNEL_ENABLED_ALGORITHMS_BITSET,
                    (1 << GRPC_COMPRESS_NONE) | (1 << GRPC_COMPRESS_DEFLATE) |
                        (1 << GRPC_COMPRESS_GZIP));
  if (self->keepalive_time_ms)
    sp__grpc_args_int(&args, GRPC_ARG_KEEPALIVE_TIME_MS,
                      sp__grpc_clamp_int(self->keepalive_time_ms));
  if (self->keepalive_timeout_ms)
    sp__grpc_args_int(&args, GRPC_ARG_KEEPALIVE_TIMEOUT_MS,
                      sp__grpc_clamp_int(self->keepalive_timeout_ms));
  if (self->max_idle_ms)
    sp__grpc_args_int(&args, GRPC_ARG_MAX_CONNECTION_IDLE_MS,
                      sp__grpc_clamp_int(self->max_idle_ms));
  grpc_channel_args cargs = {args.n, args.v};

  self->cq = grpc_completion_queue_create_for_next(NULL);
  self->server = grpc_server_create(&cargs, NULL);
  if (!self->cq || !self->server) goto fail;
  grpc_server_register_completion_queue(self->server, self->cq, NULL);

  grpc_server_credentials *creds = make_credentials(self);
  if (!creds) {
    sp_log_error(self->component, "cannot create gRPC server credentials");
    rc = SP_ECONFIG;
    goto fail;
  }
  self->port = grpc_server_add_http2_port(self->server, self->bind_addr, creds);
  grpc_server_credentials_release(creds);
  if (self->port <= 0) {
    self->port = 0;
    sp_log_error(self->component, "cannot listen on %s (address in use or not available)",
                 self->bind_addr);
    rc = SP_EADDRINUSE;
    goto fail;
  }

  /* From here on the server has a listener: failures go through a real start
   * and shutdown, which is the only teardown grpc documents for it. */
  for (int i = 0; i < REQUESTS_OUTSTANDING; i++) {
    sp_grpc_call_t *c = slot_new();
    if (!c) break; /* run with fewer; they are topped up later */
    c->next = self->spare;
    self->spare = c;
    self->n_spare++;
  }
  grpc_server_start(self->server);
  started = true;
  if (!self->n_spare) {
    rc = SP_ENOMEM;
    goto fail;
  }
  if (uv_async_init(self->loop, &self->async, on_async) != 0) goto fail;
  self->async.data = self;
  uv_timer_init(self->loop, &self->timer);
  self->timer.data = self;
  self->cq_saw_shutdown = false;
  request_more(self);
  if (uv_thread_create(&self->thread, cq_thread_main, self) != 0) {
    close_handles(self);
    goto fail;
  }
  self->thread_running = true;
  self->state = ST_RUNNING;
  sp_log_info(self->component, "gRPC server listening on %s (port %d%s)", self->bind_addr,
              self->port, self->tls ? (self->client_ca_pem ? ", mTLS" : ", TLS") : "");
  return 0;

fail:
  if (started)
    abort_started(self);
  else
    drop_unstarted(self);
  while (self->spare) {
    sp_grpc_call_t *c = self->spare;
    self->spare = c->next;
    slot_free(c);
  }
  self->n_spare = 0;
  self->outstanding = 0;
  self->port = 0;
  return rc;
}

int sp_grpc_server_port(const sp_grpc_server_t *self) { return self ? self->port : 0; }

void sp_grpc_server_shutdown_within(sp_grpc_server_t *self, uint64_t timeout_ms,
                                    void (*cb)(void *arg), void *arg) {
  if (!self) return;
  if (self->shutdown_requested) {
    /* Idempotent: the first callback wins; a tighter bound still applies. */
    if (self->state == ST_STOPPING && self->server && uv_is_active((uv_handle_t *)&self->timer) &&
        timeout_ms < uv_timer_get_due_in(&self->timer))
      uv_timer_start(&self->timer, on_shutdown_timeout, timeout_ms, 0);
    return;
  }
  self->shutdown_requested = true;
  self->shutdown_cb = cb;
  self->shutdown_arg = arg;
  if (self->state == ST_RUNNING) {
    self->state = ST_STOPPING;
    self->shutdown_started = uv_now(self->loop);
    grpc_server_shutdown_and_notify(self->server, self->cq, &self->shutdown_tag);
    uint64_t ms = timeout_ms < self->shutdown_timeout_ms ? timeout_ms : self->shutdown_timeout_ms;
    uv_timer_start(&self->timer, on_shutdown_timeout, ms, 0);
    return;
  }
  /* A failed start whose handles are still closing: their close callback
   * runs cb. */
  if (self->handles_open) return;
  /* Never started (or a failed start already closed): a short-lived handle
   * defers the callback past this call. uv_timer_init cannot fail. */
  uv_timer_init(self->loop, &self->timer);
  self->timer.data = self;
  self->state = ST_CLOSING;
  self->handles_open = 1;
  uv_close((uv_handle_t *)&self->timer, on_handle_closed);
}

void sp_grpc_server_shutdown(sp_grpc_server_t *self, void (*cb)(void *arg), void *arg) {
  sp_grpc_server_shutdown_within(self, UINT64_MAX, cb, arg);
}

void sp_grpc_server_destroy(sp_grpc_server_t *self) {
  if (!self) return;
  if (self->handles_open) {
    /* A failed start's handles are still closing: free after them. */
    assert(self->state == ST_CLOSING);
    self->destroy_pending = true;
    return;
  }
  assert(self->state == ST_CREATED || self->state == ST_CLOSED);
  for (size_t i = 0; i < self->n_methods; i++)
    sp_free((char *)self->methods[i].path);
  sp_free(self->methods);
  sp_free(self->component);
  sp_free(self->bind_addr);
  sp_free(self->cert_pem);
  sp_free(self->key_pem);
  sp_free(self->client_ca_pem);
  if (self->mu_init) uv_mutex_destroy(&self->mu);
  bool grpc_ref = self->grpc_ref;
  sp_free(self);
  if (grpc_ref) grpc_shutdown();
}

/* ---- calls (loop thread) ------------------------------------------------------------ */

/* Copies the call's metadata into NUL-terminated pairs once. 0 or SP_ENOMEM (retried next time). */
static int md_load(sp_grpc_call_t *c) {
  if (c->md_pairs || !c->md.count) return 0;
  size_t size = c->md.count * 2 * sizeof(char *);
  for (size_t i = 0; i < c->md.count; i++)
    size +=
        GRPC_SLICE_LENGTH(c->md.metadata[i].key) + GRPC_SLICE_LENGTH(c->md.metadata[i].value) + 2;
  const char **pairs = sp_malloc(size);
  if (!pairs) return SP_ENOMEM;
  char *p = (char *)(pairs + c->md.count * 2);
  for (size_t i = 0; i < c->md.count; i++) {
    for (int kv = 0; kv < 2; kv++) {
      grpc_slice s = kv ? c->md.metadata[i].value : c->md.metadata[i].key;
      size_t n = GRPC_SLICE_LENGTH(s);
      pairs[2 * i + kv] = p;
      memcpy(p, GRPC_SLICE_START_PTR(s), n);
      p[n] = '\0';
      p += n + 1;
    }
  }
  c->md_pairs = pairs;
  c->n_md_pairs = c->md.count;
  return 0;
}

int sp_grpc_call_metadata_get(const sp_grpc_call_t *call, const char *key, const char **value) {
  /* The cache is filled lazily; the call is never const underneath. */
  sp_grpc_call_t *c = (sp_grpc_call_t *)call;
  *value = NULL;
  if (!c || !key) return SP_EINVAL;
  int rc = md_load(c);
  if (rc) return rc;
  for (size_t i = 0; i < c->n_md_pairs; i++)
    if (strcmp(c->md_pairs[2 * i], key) == 0) {
      *value = c->md_pairs[2 * i + 1];
      break;
    }
  return 0;
}

const char *sp_grpc_call_metadata(const sp_grpc_call_t *call, const char *key) {
  const char *v = NULL;
  sp_grpc_call_metadata_get(call, key, &v);
  return v;
}

static int hexval(char ch) {
  if (ch >= '0' && ch <= '9') return ch - '0';
  if (ch >= 'a' && ch <= 'f') return ch - 'a' + 10;
  if (ch >= 'A' && ch <= 'F') return ch - 'A' + 10;
  return -1;
}

const char *sp_grpc_call_peer(const sp_grpc_call_t *call) {
  sp_grpc_call_t *c = (sp_grpc_call_t *)call;
  if (!c || !c->call) return "";
  if (c->peer) return c->peer;
  char *uri = grpc_call_get_peer(c->call);
  if (!uri) return "";
  /* "ipv4:1.2.3.4:5" / "ipv6:%5B::1%5D:5" → "1.2.3.4:5" / "[::1]:5". */
  const char *src = uri;
  if (strncmp(src, "ipv4:", 5) == 0 || strncmp(src, "ipv6:", 5) == 0) src += 5;
  char *out = sp_malloc(strlen(src) + 1);
  if (out) {
    char *d = out;
    for (const char *s = src; *s; s++) {
      if (s[0] == '%' && hexval(s[1]) >= 0 && hexval(s[2]) >= 0) {
        *d++ = (char)(hexval(s[1]) * 16 + hexval(s[2]));
        s += 2;
      } else {
        *d++ = *s;
      }
    }
    *d = '\0';
  }
  gpr_free(uri);
  c->peer = out;
  return out ? out : "";
}

void sp_grpc_respond(sp_grpc_call_t *c, int status, const char *message, const uint8_t *resp,
                     size_t len, uint64_t retry_after_ms) {
  if (!c) return;
  sp_grpc_server_t *self = c->server;
  if (!self) {
    /* Orphaned by a finished shutdown: the peer is gone; just free it. */
    slot_free(c);
    grpc_shutdown();
    return;
  }
  handled_unlink(self, c);
  if (status < 0 || status > GRPC_STATUS_UNAUTHENTICATED) status = GRPC_STATUS_UNKNOWN;

  grpc_op ops[4];
  size_t n = 0;
  memset(ops, 0, sizeof(ops));
  ops[n++].op = GRPC_OP_SEND_INITIAL_METADATA;
  if (status == GRPC_STATUS_OK) {
    /* Copied before the request is released: a handler may echo it. */
    grpc_slice s =
        len ? grpc_slice_from_copied_buffer((const char *)resp, len) : grpc_empty_slice();
    c->send_bb = grpc_raw_byte_buffer_create(&s, 1);
    grpc_slice_unref(s);
    ops[n].op = GRPC_OP_SEND_MESSAGE;
    ops[n++].data.send_message.send_message = c->send_bb;
  }
  if (message && *message) c->status_msg = grpc_slice_from_copied_string(message);
  if (retry_after_ms && status != GRPC_STATUS_OK) {
    c->trailer.key = grpc_slice_from_static_string(SP__GRPC_STATUS_DETAILS_KEY);
    c->trailer.value = sp__grpc_status_details_encode(status, message, retry_after_ms);
    c->n_trailer = 1;
  }
  ops[n].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
  ops[n].data.send_status_from_server.status = (grpc_status_code)status;
  ops[n].data.send_status_from_server.status_details = message && *message ? &c->status_msg : NULL;
  ops[n].data.send_status_from_server.trailing_metadata_count = c->n_trailer;
  ops[n++].data.send_status_from_server.trailing_metadata = c->n_trailer ? &c->trailer : NULL;
  ops[n].op = GRPC_OP_RECV_CLOSE_ON_SERVER;
  ops[n++].data.recv_close_on_server.cancelled = &c->cancelled;

  /* The request and the loop-side caches end here (the contract says so). */
  grpc_slice_unref(c->msg);
  c->msg = grpc_empty_slice();
  sp_free(c->md_pairs);
  sp_free(c->peer);
  c->md_pairs = NULL;
  c->n_md_pairs = 0;
  c->peer = NULL;

  c->stage = STAGE_FINISH;
  /* After a successful start the CQ thread owns (and may free) the slot. */
  grpc_call_error err = grpc_call_start_batch(c->call, ops, n, c, NULL);
  if (err != GRPC_CALL_OK) {
    sp_log_error(self->component, "gRPC: cannot send the response (%d)", (int)err);
    slot_free(c);
  }
}
