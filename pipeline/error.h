/*
 * error.h — the one table of error codes.
 *
 * Every function in spanprof returns 0 on success or one of the negative
 * SP_E* codes below; sp_strerror() names them. Exporters make exactly one
 * extra distinction: SP_EAGAIN means "retryable" (the sender should try
 * again later), every other code is permanent.
 */
#ifndef SP_ERROR_H
#define SP_ERROR_H

#define SP_ERRNO_MAP(X)                                                        \
  X(EINVAL, -1, "invalid argument")                                            \
  X(ENOMEM, -2, "out of memory")                                               \
  X(EAGAIN, -3, "temporarily refused, retry later")                            \
  X(ECONFIG, -4, "invalid configuration")                                      \
  X(EPROTO, -5, "malformed data")                                              \
  X(ETOOBIG, -6, "too large")                                                  \
  X(ENOTSUP, -7, "not supported")                                              \
  X(EIO, -8, "i/o error")                                                      \
  X(ETIMEDOUT, -9, "timed out")                                                \
  X(ECANCELED, -10, "canceled")                                                \
  X(ENOENT, -11, "not found")                                                  \
  X(EEXIST, -12, "already exists")                                             \
  X(ESHUTDOWN, -13, "shutting down")                                           \
  X(EADDRINUSE, -14, "address already in use")                                 \
  X(EPERM, -15, "permission denied")                                           \
  X(ESTATE, -16, "invalid state")                                              \
  X(EREJECTED, -17, "rejected by the receiving end")

typedef enum {
  SP_OK = 0,
#define SP_ERRNO_ENUM(name, code, text) SP_##name = (code),
  SP_ERRNO_MAP(SP_ERRNO_ENUM)
#undef SP_ERRNO_ENUM
} sp_errno_t;

/** Returns a static, human-readable text for an SP_E* code (or 0). */
const char *sp_strerror(int err);

/** Returns the symbolic name ("SP_EAGAIN") of an SP_E* code. */
const char *sp_err_name(int err);

/** Maps a negative libuv error to the closest SP_E* code. */
int sp_err_from_uv(int uverr);

/** True when @p err means the operation may succeed if retried later. */
static inline int sp_err_retryable(int err) { return err == SP_EAGAIN || err == SP_ETIMEDOUT; }

#endif
