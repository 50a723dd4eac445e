/*
 * tls.h — TLS settings shared by servers (receivers) and clients (exporters).
 *
 * One struct serves both sides, as the OpenTelemetry Collector's
 * configtls does; each side's config schema exposes the keys that apply to
 * it. Strings are owned by the config (freed with it).
 */
#ifndef SP_TLS_H
#define SP_TLS_H

#include <stdbool.h>

typedef struct sp_tls_config_s {
  bool present;                /* the `tls` section was given */
  char *cert_file;             /* PEM certificate (server cert, or client cert for mTLS) */
  char *key_file;              /* PEM private key for cert_file */
  char *ca_file;               /* client side: CA bundle to verify the server */
  char *client_ca_file;        /* server side: CA bundle to require and verify client certs */
  char *min_version;           /* "1.2" (default) or "1.3" */
  char *server_name_override;  /* client side: SNI / verification name */
  bool insecure;               /* client side: plaintext (no TLS at all) */
  bool insecure_skip_verify;   /* client side: do not verify the server certificate */
} sp_tls_config_t;

#endif
