/*
 * testcerts.h — a throw-away PKI for TLS tests, generated at test time.
 *
 * sp_testcerts_create() makes a temporary directory holding, as PEM files:
 * a CA; a server certificate for "localhost" and 127.0.0.1 / ::1 signed by
 * it; a client certificate signed by it (for mTLS); and a "rogue" client
 * certificate signed by a second CA the server does not trust. Keys are
 * EC P-256 (fast to generate). Nothing is committed to the tree.
 */
#ifndef SP_TEST_TESTCERTS_H
#define SP_TEST_TESTCERTS_H

#define SP_TESTCERTS_PATH 320

typedef struct sp_testcerts_s {
  char dir[256];
  char ca_cert[SP_TESTCERTS_PATH];
  char ca_key[SP_TESTCERTS_PATH];
  char server_cert[SP_TESTCERTS_PATH];
  char server_key[SP_TESTCERTS_PATH];
  char client_cert[SP_TESTCERTS_PATH];
  char client_key[SP_TESTCERTS_PATH];
  char rogue_client_cert[SP_TESTCERTS_PATH]; /* signed by an untrusted CA */
  char rogue_client_key[SP_TESTCERTS_PATH];
} sp_testcerts_t;

/**
 * Generates the files under a new directory in $TMPDIR (or /tmp) and fills
 * @p out with their paths. Returns 0, or SP_EIO / SP_ENOMEM (with a message
 * on stderr). Free with sp_testcerts_destroy().
 */
int sp_testcerts_create(sp_testcerts_t *out);

/** Removes the files and the directory. Accepts a zeroed struct. */
void sp_testcerts_destroy(sp_testcerts_t *self);

#endif
