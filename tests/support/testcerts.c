/*
 * testcerts.c — CA, server and client certificates with the OpenSSL 3 API
 * (see testcerts.h).
 */
#include "support/testcerts.h"

#include "pipeline/error.h"

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int add_ext(X509 *cert, X509 *issuer, int nid, const char *value) {
  X509V3_CTX ctx;
  X509V3_set_ctx_nodb(&ctx);
  X509V3_set_ctx(&ctx, issuer, cert, NULL, NULL, 0);
  X509_EXTENSION *ext = X509V3_EXT_conf_nid(NULL, &ctx, nid, value);
  if (!ext) return -1;
  int ok = X509_add_ext(cert, ext, -1);
  X509_EXTENSION_free(ext);
  return ok ? 0 : -1;
}

/*
 * Makes a certificate for @p cn with a new key. With @p issuer NULL it is a
 * self-signed CA; otherwise it is signed by @p issuer / @p issuer_key and
 * gets @p san and @p eku.
 */
static int make_cert(const char *cn, X509 *issuer, EVP_PKEY *issuer_key, const char *san,
                     const char *eku, long serial, X509 **cert_out, EVP_PKEY **key_out) {
  EVP_PKEY *key = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
  X509 *x = X509_new();
  if (!key || !x) goto fail;
  X509_set_version(x, 2);
  ASN1_INTEGER_set(X509_get_serialNumber(x), serial);
  X509_gmtime_adj(X509_getm_notBefore(x), -3600);
  X509_gmtime_adj(X509_getm_notAfter(x), 7L * 24 * 3600);
  X509_set_pubkey(x, key);
  X509_NAME *name = X509_get_subject_name(x);
  X509_NAME_add_entry_by_txt(name, "O", MBSTRING_ASC, (const unsigned char *)"spanprof tests", -1,
                             -1, 0);
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1, 0);
  X509 *signer = issuer ? issuer : x;
  X509_set_issuer_name(x, X509_get_subject_name(signer));
  if (add_ext(x, signer, NID_subject_key_identifier, "hash")) goto fail;
  if (!issuer) {
    if (add_ext(x, x, NID_basic_constraints, "critical,CA:TRUE")) goto fail;
    if (add_ext(x, x, NID_key_usage, "critical,keyCertSign,cRLSign")) goto fail;
  } else {
    if (add_ext(x, signer, NID_authority_key_identifier, "keyid:always")) goto fail;
    if (add_ext(x, signer, NID_basic_constraints, "critical,CA:FALSE")) goto fail;
    if (add_ext(x, signer, NID_key_usage, "critical,digitalSignature,keyEncipherment")) goto fail;
    if (eku && add_ext(x, signer, NID_ext_key_usage, eku)) goto fail;
    if (san && add_ext(x, signer, NID_subject_alt_name, san)) goto fail;
  }
  if (!X509_sign(x, issuer ? issuer_key : key, EVP_sha256())) goto fail;
  *cert_out = x;
  *key_out = key;
  return 0;
fail:
  ERR_print_errors_fp(stderr);
  X509_free(x);
  EVP_PKEY_free(key);
  return SP_EIO;
}

static int write_pair(X509 *cert, EVP_PKEY *key, const char *cert_path, const char *key_path) {
  int rc = SP_EIO;
  FILE *fc = fopen(cert_path, "w");
  FILE *fk = fopen(key_path, "w");
  if (!fc || !fk) goto done;
  if (!PEM_write_X509(fc, cert)) goto done;
  if (!PEM_write_PrivateKey(fk, key, NULL, NULL, 0, NULL, NULL)) goto done;
  rc = 0;
done:
  if (fc) fclose(fc);
  if (fk) fclose(fk);
  if (rc) fprintf(stderr, "testcerts: cannot write %s / %s\n", cert_path, key_path);
  return rc;
}

static void path(char *dst, const char *dir, const char *file) {
  snprintf(dst, SP_TESTCERTS_PATH, "%s/%s", dir, file);
}

int sp_testcerts_create(sp_testcerts_t *out) {
  memset(out, 0, sizeof *out);
  const char *tmp = getenv("TMPDIR");
  snprintf(out->dir, sizeof out->dir, "%s/sp-certs-XXXXXX", tmp && *tmp ? tmp : "/tmp");
  if (!mkdtemp(out->dir)) {
    perror("testcerts: mkdtemp");
    out->dir[0] = '\0';
    return SP_EIO;
  }
  path(out->ca_cert, out->dir, "ca.pem");
  path(out->ca_key, out->dir, "ca-key.pem");
  path(out->server_cert, out->dir, "server.pem");
  path(out->server_key, out->dir, "server-key.pem");
  path(out->client_cert, out->dir, "client.pem");
  path(out->client_key, out->dir, "client-key.pem");
  path(out->rogue_client_cert, out->dir, "rogue-client.pem");
  path(out->rogue_client_key, out->dir, "rogue-client-key.pem");

  X509 *ca = NULL, *srv = NULL, *cli = NULL, *rca = NULL, *rcli = NULL;
  EVP_PKEY *ca_k = NULL, *srv_k = NULL, *cli_k = NULL, *rca_k = NULL, *rcli_k = NULL;
  int rc = make_cert("spanprof test CA", NULL, NULL, NULL, NULL, 1, &ca, &ca_k);
  if (!rc)
    rc = make_cert("localhost", ca, ca_k, "DNS:localhost,IP:127.0.0.1,IP:::1", "serverAuth", 2,
                   &srv, &srv_k);
  if (!rc) rc = make_cert("test client", ca, ca_k, NULL, "clientAuth", 3, &cli, &cli_k);
  if (!rc) rc = make_cert("rogue CA", NULL, NULL, NULL, NULL, 4, &rca, &rca_k);
  if (!rc) rc = make_cert("rogue client", rca, rca_k, NULL, "clientAuth", 5, &rcli, &rcli_k);
  if (!rc) rc = write_pair(ca, ca_k, out->ca_cert, out->ca_key);
  if (!rc) rc = write_pair(srv, srv_k, out->server_cert, out->server_key);
  if (!rc) rc = write_pair(cli, cli_k, out->client_cert, out->client_key);
  if (!rc) rc = write_pair(rcli, rcli_k, out->rogue_client_cert, out->rogue_client_key);
  X509_free(ca);
  X509_free(srv);
  X509_free(cli);
  X509_free(rca);
  X509_free(rcli);
  EVP_PKEY_free(ca_k);
  EVP_PKEY_free(srv_k);
  EVP_PKEY_free(cli_k);
  EVP_PKEY_free(rca_k);
  EVP_PKEY_free(rcli_k);
  if (rc) sp_testcerts_destroy(out);
  return rc;
}

void sp_testcerts_destroy(sp_testcerts_t *self) {
  if (!self->dir[0]) return;
  const char *files[] = {self->ca_cert,           self->ca_key,          self->server_cert,
                         self->server_key,        self->client_cert,     self->client_key,
                         self->rogue_client_cert, self->rogue_client_key};
  for (size_t i = 0; i < sizeof files / sizeof *files; i++)
    if (files[i][0]) unlink(files[i]);
  rmdir(self->dir);
  self->dir[0] = '\0';
}
