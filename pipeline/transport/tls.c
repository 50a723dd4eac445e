/*
 * tls.c — OpenSSL contexts and memory-BIO connections (see tls_conn.h).
 *
 * Each connection owns an SSL object wired to two memory BIOs: `rbio` holds
 * ciphertext fed from the socket, `wbio` collects ciphertext to send. Memory
 * BIOs never block, so SSL_write always completes once the handshake is
 * done, and SSL_read reports "want read" exactly when the fed bytes are used
 * up. Plaintext written before the handshake completes is held in a buffer
 * and flushed when it does (clients may write their request right away).
 *
 * Config errors are reported once, at context creation, with the file name
 * and OpenSSL's reason, so a typo in a path fails `spanprofd validate`
 * instead of the first handshake.
 */
#include "pipeline/transport/tls_conn.h"

#include "pipeline/alloc.h"
#include "pipeline/buf.h"
#include "pipeline/error.h"
#include "pipeline/log.h"

#include <arpa/inet.h>
#include <errno.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

struct sp_tls_ctx_s {
  atomic_int refs;
  SSL_CTX *ssl_ctx;
  bool server;
  bool verify;         /* client: verify the server's certificate */
  char *name_override; /* client: server_name_override */
};

struct sp_tls_conn_s {
  sp_tls_ctx_t *ctx;
  SSL *ssl;
  BIO *rbio; /* owned by ssl */
  BIO *wbio; /* owned by ssl */
  bool established;
  bool failed;
  sp_buf_t early; /* plaintext written before the handshake completed */
  char err[256];
};

/* Collects OpenSSL's error queue into one line (and empties it). */
static void ssl_errors(char *dst, size_t cap) {
  size_t used = 0;
  dst[0] = '\0';
  unsigned long e;
  while ((e = ERR_get_error()) != 0) {
    char one[256];
    ERR_error_string_n(e, one, sizeof one);
    int n = snprintf(dst + used, cap - used, "%s%s", used ? "; " : "", one);
    if (n < 0 || (size_t)n >= cap - used) break;
    used += (size_t)n;
  }
  if (!dst[0]) snprintf(dst, cap, "unknown OpenSSL error");
}

/* Checks that @p path can be opened, for a clearer message than OpenSSL's. */
static int check_readable(const char *comp, const char *key, const char *path) {
  FILE *f = fopen(path, "r");
  if (!f) {
    sp_log_error(comp, "tls: cannot read %s \"%s\": %s", key, path, strerror(errno));
    return SP_ECONFIG;
  }
  fclose(f);
  return 0;
}

static int set_min_version(SSL_CTX *ctx, const char *comp, const char *v) {
  int ver;
  if (!v || !*v || strcmp(v, "1.2") == 0)
    ver = TLS1_2_VERSION;
  else if (strcmp(v, "1.3") == 0)
    ver = TLS1_3_VERSION;
  else {
    sp_log_error(comp, "tls: min_version \"%s\" is not supported (use \"1.2\" or \"1.3\")", v);
    return SP_ECONFIG;
  }
  if (!SSL_CTX_set_min_proto_version(ctx, ver)) return SP_ECONFIG;
  return 0;
}

static int load_keypair(SSL_CTX *ctx, const char *comp, const char *cert, const char *key) {
  char why[512];
  int rc = check_readable(comp, "cert_file", cert);
  if (!rc) rc = check_readable(comp, "key_file", key);
  if (rc) return rc;
  ERR_clear_error();
  if (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1) {
    ssl_errors(why, sizeof why);
    sp_log_error(comp, "tls: cannot load certificate from cert_file \"%s\": %s", cert, why);
    return SP_ECONFIG;
  }
  if (SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1) {
    ssl_errors(why, sizeof why);
    sp_log_error(comp, "tls: cannot load private key from key_file \"%s\": %s", key, why);
    return SP_ECONFIG;
  }
  if (SSL_CTX_check_private_key(ctx) != 1) {
    ssl_errors(why, sizeof why);
    sp_log_error(comp, "tls: key_file \"%s\" does not match cert_file \"%s\": %s", key, cert, why);
    return SP_ECONFIG;
  }
  return 0;
}

static int load_ca(SSL_CTX *ctx, const char *comp, const char *keyname, const char *file) {
  char why[512];
  int rc = check_readable(comp, keyname, file);
  if (rc) return rc;
  ERR_clear_error();
  if (SSL_CTX_load_verify_locations(ctx, file, NULL) != 1) {
    ssl_errors(why, sizeof why);
    sp_log_error(comp, "tls: cannot load CA certificates from %s \"%s\": %s", keyname, file, why);
    return SP_ECONFIG;
  }
  return 0;
}

static sp_tls_ctx_t *ctx_new(bool server) {
  sp_tls_ctx_t *c = sp_calloc(1, sizeof(*c));
  if (!c) return NULL;
  atomic_init(&c->refs, 1);
  c->server = server;
  c->ssl_ctx = SSL_CTX_new(server ? TLS_server_method() : TLS_client_method());
  if (!c->ssl_ctx) {
    sp_free(c);
    return NULL;
  }
  /* Idle keep-alive connections then hold no 34 KiB record buffers. */
  SSL_CTX_set_mode(c->ssl_ctx, SSL_MODE_RELEASE_BUFFERS);
  SSL_CTX_set_options(c->ssl_ctx, SSL_OP_NO_RENEGOTIATION);
  return c;
}

int sp_tls_ctx_create_server(const sp_tls_config_t *cfg, const char *component,
                             sp_tls_ctx_t **out) {
  *out = NULL;
  if (!cfg->cert_file || !*cfg->cert_file || !cfg->key_file || !*cfg->key_file) {
    sp_log_error(component, "tls: a server needs both cert_file and key_file");
    return SP_ECONFIG;
  }
  int rc = SP_ENOMEM;
  sp_tls_ctx_t *c = ctx_new(true);
  if (!c) goto fail;
  rc = set_min_version(c->ssl_ctx, component, cfg->min_version);
  if (rc) goto fail;
  rc = load_keypair(c->ssl_ctx, component, cfg->cert_file, cfg->key_file);
  if (rc) goto fail;
  if (cfg->client_ca_file && *cfg->client_ca_file) {
    rc = load_ca(c->ssl_ctx, component, "client_ca_file", cfg->client_ca_file);
    if (rc) goto fail;
    /* Tell clients which CAs we accept, as most servers do. */
    STACK_OF(X509_NAME) *names = SSL_load_client_CA_file(cfg->client_ca_file);
    if (names) SSL_CTX_set_client_CA_list(c->ssl_ctx, names);
    SSL_CTX_set_verify(c->ssl_ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
  }
  /* Needed for session resumption when client certificates are verified. */
  static const unsigned char sid[] = "spanprof";
  SSL_CTX_set_session_id_context(c->ssl_ctx, sid, sizeof sid - 1);
  *out = c;
  return 0;
fail:
  sp_tls_ctx_destroy(c);
  return rc;
}

int sp_tls_ctx_create_client(const sp_tls_config_t *cfg, const char *component,
                             sp_tls_ctx_t **out) {
  *out = NULL;
  int rc = SP_ENOMEM;
  sp_tls_ctx_t *c = ctx_new(false);
  if (!c) goto fail;
  rc = set_min_version(c->ssl_ctx, component, cfg->min_version);
  if (rc) goto fail;
  c->verify = !cfg->insecure_skip_verify;
  if (cfg->ca_file && *cfg->ca_file) {
    rc = load_ca(c->ssl_ctx, component, "ca_file", cfg->ca_file);
    if (rc) goto fail;
  } else if (c->verify && SSL_CTX_set_default_verify_paths(c->ssl_ctx) != 1) {
    sp_log_warn(component, "tls: the system CA store could not be loaded");
  }
  bool has_cert = cfg->cert_file && *cfg->cert_file;
  bool has_key = cfg->key_file && *cfg->key_file;
  if (has_cert != has_key) {
    sp_log_error(component, "tls: cert_file and key_file must be given together");
    rc = SP_ECONFIG;
    goto fail;
  }
  if (has_cert) {
    rc = load_keypair(c->ssl_ctx, component, cfg->cert_file, cfg->key_file);
    if (rc) goto fail;
  }
  SSL_CTX_set_verify(c->ssl_ctx, c->verify ? SSL_VERIFY_PEER : SSL_VERIFY_NONE, NULL);
  rc = SP_ENOMEM;
  if (cfg->server_name_override && *cfg->server_name_override) {
    c->name_override = sp_strdup(cfg->server_name_override);
    if (!c->name_override) goto fail;
  }
  *out = c;
  return 0;
fail:
  sp_tls_ctx_destroy(c);
  return rc;
}

void sp_tls_ctx_destroy(sp_tls_ctx_t *self) {
  if (!self || atomic_fetch_sub(&self->refs, 1) != 1) return;
  SSL_CTX_free(self->ssl_ctx);
  sp_free(self->name_override);
  sp_free(self);
}

SSL_CTX *sp_tls_ctx_ssl_ctx(sp_tls_ctx_t *self) { return self->ssl_ctx; }

/* --- connections --------------------------------------------------------- */

static bool is_ip_literal(const char *s) {
  unsigned char tmp[16];
  return inet_pton(AF_INET, s, tmp) == 1 || inet_pton(AF_INET6, s, tmp) == 1;
}

int sp_tls_conn_create(sp_tls_ctx_t *ctx, const char *server_name, sp_tls_conn_t **out) {
  *out = NULL;
  sp_tls_conn_t *c = sp_calloc(1, sizeof(*c));
  if (!c) return SP_ENOMEM;
  sp_buf_init(&c->early, 0);
  c->ssl = SSL_new(ctx->ssl_ctx);
  c->rbio = BIO_new(BIO_s_mem());
  c->wbio = BIO_new(BIO_s_mem());
  if (!c->ssl || !c->rbio || !c->wbio) {
    BIO_free(c->rbio);
    BIO_free(c->wbio);
    SSL_free(c->ssl);
    sp_free(c);
    return SP_ENOMEM;
  }
  /* An empty read BIO means "no data yet", not end of file. */
  BIO_set_mem_eof_return(c->rbio, -1);
  SSL_set_bio(c->ssl, c->rbio, c->wbio);
  atomic_fetch_add(&ctx->refs, 1);
  c->ctx = ctx;
  if (ctx->server) {
    SSL_set_accept_state(c->ssl);
  } else {
    const char *name = ctx->name_override ? ctx->name_override : server_name;
    if (name && *name) {
      bool ip = is_ip_literal(name);
      if (!ip) SSL_set_tlsext_host_name(c->ssl, name);
      if (ctx->verify) {
        X509_VERIFY_PARAM *vp = SSL_get0_param(c->ssl);
        if (ip)
          X509_VERIFY_PARAM_set1_ip_asc(vp, name);
        else
          X509_VERIFY_PARAM_set1_host(vp, name, 0);
      }
    }
    SSL_set_connect_state(c->ssl);
  }
  *out = c;
  return 0;
}

void sp_tls_conn_destroy(sp_tls_conn_t *self) {
  if (!self) return;
  SSL_free(self->ssl); /* frees both BIOs */
  sp_buf_free(&self->early);
  sp_tls_ctx_destroy(self->ctx);
  sp_free(self);
}

int sp_tls_conn_feed(sp_tls_conn_t *self, const void *cipher, size_t len) {
  const char *p = cipher;
  while (len) {
    int n = len > INT32_MAX ? INT32_MAX : (int)len;
    int w = BIO_write(self->rbio, p, n);
    if (w <= 0) return SP_ENOMEM;
    p += w;
    len -= (size_t)w;
  }
  return 0;
}

/* Records why the connection failed; returns SP_EPROTO. */
static int conn_fail(sp_tls_conn_t *self, int ssl_err) {
  char why[200];
  self->failed = true;
  long vr = SSL_get_verify_result(self->ssl);
  if (ssl_err == SSL_ERROR_SYSCALL && ERR_peek_error() == 0) {
    snprintf(why, sizeof why, "unexpected end of stream");
  } else {
    ssl_errors(why, sizeof why);
  }
  if (vr != X509_V_OK) {
    snprintf(self->err, sizeof self->err, "%s (certificate verification: %s)", why,
             X509_verify_cert_error_string(vr));
  } else {
    snprintf(self->err, sizeof self->err, "%s", why);
  }
  return SP_EPROTO;
}

static int flush_early(sp_tls_conn_t *self) {
  if (!self->early.len) return 0;
  size_t n = 0;
  ERR_clear_error();
  if (SSL_write_ex(self->ssl, self->early.data, self->early.len, &n) != 1 || n != self->early.len)
    return conn_fail(self, SSL_get_error(self->ssl, 0));
  sp_buf_free(&self->early);
  return 0;
}

int sp_tls_conn_handshake(sp_tls_conn_t *self) {
  if (self->failed) return SP_EPROTO;
  if (self->established) return 0;
  ERR_clear_error();
  int r = SSL_do_handshake(self->ssl);
  if (r == 1) {
    self->established = true;
    return flush_early(self);
  }
  int e = SSL_get_error(self->ssl, r);
  if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) return SP_EAGAIN;
  return conn_fail(self, e);
}

int sp_tls_conn_read(sp_tls_conn_t *self, void *dst, size_t cap, size_t *n) {
  *n = 0;
  if (!self->established) {
    int rc = sp_tls_conn_handshake(self);
    if (rc) return rc;
  }
  if (self->failed) return SP_EPROTO;
  ERR_clear_error();
  int r = SSL_read_ex(self->ssl, dst, cap, n);
  if (r == 1) return 0;
  int e = SSL_get_error(self->ssl, r);
  switch (e) {
  case SSL_ERROR_WANT_READ:
  case SSL_ERROR_WANT_WRITE: return SP_EAGAIN;
  case SSL_ERROR_ZERO_RETURN: return SP_ESHUTDOWN;
  default: return conn_fail(self, e);
  }
}

int sp_tls_conn_write(sp_tls_conn_t *self, const void *src, size_t len) {
  if (self->failed) return SP_EPROTO;
  if (!len) return 0;
  if (!self->established) {
    int rc = sp_buf_append(&self->early, src, len);
    if (rc) return rc;
    rc = sp_tls_conn_handshake(self);
    return rc == SP_EAGAIN ? 0 : rc;
  }
  size_t n = 0;
  ERR_clear_error();
  if (SSL_write_ex(self->ssl, src, len, &n) != 1 || n != len)
    return conn_fail(self, SSL_get_error(self->ssl, 0));
  return 0;
}

int sp_tls_conn_close_notify(sp_tls_conn_t *self) {
  if (self->failed || !self->established) return SP_EPROTO;
  ERR_clear_error();
  int r = SSL_shutdown(self->ssl);
  if (r < 0) {
    int e = SSL_get_error(self->ssl, r);
    if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE) return conn_fail(self, e);
  }
  return 0;
}

size_t sp_tls_conn_pending(const sp_tls_conn_t *self) { return BIO_ctrl_pending(self->wbio); }

size_t sp_tls_conn_take(sp_tls_conn_t *self, void *dst, size_t cap) {
  size_t got = 0;
  if (BIO_read_ex(self->wbio, dst, cap, &got) != 1) return 0;
  return got;
}

bool sp_tls_conn_established(const sp_tls_conn_t *self) { return self->established; }

const char *sp_tls_conn_error(const sp_tls_conn_t *self) { return self->err; }

const char *sp_tls_conn_version(const sp_tls_conn_t *self) {
  return self->established ? SSL_get_version(self->ssl) : "";
}
