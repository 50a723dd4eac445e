/*
 * tls_conn.h — OpenSSL contexts from sp_tls_config_t, and TLS connections
 * over memory BIOs for libuv streams.
 *
 * libuv owns the sockets, so OpenSSL never touches a file descriptor here:
 * the caller feeds ciphertext it read into the connection, takes plaintext
 * out, writes plaintext in, and sends whatever ciphertext the connection has
 * pending (handshake messages, records, alerts, close_notify). After every
 * call that may produce output (feed+read, handshake, write, close_notify),
 * the caller checks sp_tls_conn_pending() and sends it. This shape serves
 * the HTTP server and any future client on the loop alike.
 *
 * A context (SSL_CTX) is immutable after creation and may be shared by many
 * connections; contexts may be created on any thread. A connection belongs
 * to one thread at a time (the loop thread).
 */
#ifndef SP_TLS_CONN_H
#define SP_TLS_CONN_H

#include "pipeline/tls.h"

#include <openssl/ssl.h>
#include <stdbool.h>
#include <stddef.h>

typedef struct sp_tls_ctx_s sp_tls_ctx_t;
typedef struct sp_tls_conn_s sp_tls_conn_t;

/**
 * Builds a server context from @p cfg: cert_file + key_file (required),
 * client_ca_file (when set, clients must present a certificate signed by it:
 * mTLS), min_version "1.2" (default) or "1.3". @p component names the owner
 * in log lines (may be NULL). The config is only read during the call.
 * Returns 0 and sets @p out; SP_ECONFIG (with an error log line naming the
 * file or key and the reason) or SP_ENOMEM.
 */
int sp_tls_ctx_create_server(const sp_tls_config_t *cfg, const char *component, sp_tls_ctx_t **out);

/**
 * Builds a client context from @p cfg: ca_file (else the system trust
 * store), cert_file + key_file (optional client certificate for mTLS),
 * insecure_skip_verify, server_name_override (used by sp_tls_conn_create()
 * instead of the name it is given), min_version. Same returns as the server.
 */
int sp_tls_ctx_create_client(const sp_tls_config_t *cfg, const char *component, sp_tls_ctx_t **out);

/** Releases the context; connections created from it keep it alive. Accepts NULL. */
void sp_tls_ctx_destroy(sp_tls_ctx_t *self);

/** The underlying SSL_CTX (borrowed), e.g. for libcurl's CURLOPT_SSL_CTX_FUNCTION. */
SSL_CTX *sp_tls_ctx_ssl_ctx(sp_tls_ctx_t *self);

/**
 * Creates a connection in the server or client role of @p ctx. For clients,
 * @p server_name (may be NULL) is sent as SNI and verified against the
 * server certificate (DNS name or IP address), unless the context skips
 * verification. Returns 0 and sets @p out, or SP_ENOMEM.
 */
int sp_tls_conn_create(sp_tls_ctx_t *ctx, const char *server_name, sp_tls_conn_t **out);

/** Frees the connection (no close_notify is sent). Accepts NULL. */
void sp_tls_conn_destroy(sp_tls_conn_t *self);

/** Hands @p len bytes of ciphertext received from the peer to the connection (copied). 0 or
 * SP_ENOMEM. */
int sp_tls_conn_feed(sp_tls_conn_t *self, const void *cipher, size_t len);

/**
 * Advances the handshake with the ciphertext fed so far. Returns 0 once it
 * is complete, SP_EAGAIN when more input is needed (send what is pending
 * first), SP_EPROTO when it failed (see sp_tls_conn_error(); an alert may be
 * pending to send).
 */
int sp_tls_conn_handshake(sp_tls_conn_t *self);

/**
 * Reads decrypted bytes into @p dst (up to @p cap), completing the
 * handshake first if needed. Returns 0 with *@p n > 0; SP_EAGAIN when more
 * ciphertext is needed; SP_ESHUTDOWN when the peer sent close_notify;
 * SP_EPROTO on a TLS failure.
 */
int sp_tls_conn_read(sp_tls_conn_t *self, void *dst, size_t cap, size_t *n);

/**
 * Encrypts @p len bytes (copied). Before the handshake completes they are
 * held and sent once it does. Returns 0, SP_ENOMEM or SP_EPROTO.
 */
int sp_tls_conn_write(sp_tls_conn_t *self, const void *src, size_t len);

/** Queues a close_notify alert (send it with the pending ciphertext). 0 or SP_EPROTO. */
int sp_tls_conn_close_notify(sp_tls_conn_t *self);

/** Bytes of ciphertext waiting to be sent to the peer. */
size_t sp_tls_conn_pending(const sp_tls_conn_t *self);

/** Moves up to @p cap bytes of pending ciphertext into @p dst; returns how many. */
size_t sp_tls_conn_take(sp_tls_conn_t *self, void *dst, size_t cap);

/** True once the handshake completed. */
bool sp_tls_conn_established(const sp_tls_conn_t *self);

/** Text of the last failure ("" when none); valid until the next call on @p self. */
const char *sp_tls_conn_error(const sp_tls_conn_t *self);

/** The negotiated protocol ("TLSv1.3"), or "" before the handshake. */
const char *sp_tls_conn_version(const sp_tls_conn_t *self);

#endif
