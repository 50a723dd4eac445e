/*
 * error.c — names and texts for the SP_E* table in error.h.
 */
#include "pipeline/error.h"

#include <uv.h>

const char *sp_strerror(int err) {
  switch (err) {
  case SP_OK: return "success";
#define SP_ERRNO_TEXT(name, code, text)                                        \
  case SP_##name: return text;
    SP_ERRNO_MAP(SP_ERRNO_TEXT)
#undef SP_ERRNO_TEXT
  }
  return "unknown error";
}

const char *sp_err_name(int err) {
  switch (err) {
  case SP_OK: return "SP_OK";
#define SP_ERRNO_NAME(name, code, text)                                        \
  case SP_##name: return "SP_" #name;
    SP_ERRNO_MAP(SP_ERRNO_NAME)
#undef SP_ERRNO_NAME
  }
  return "SP_E?";
}

int sp_err_from_uv(int uverr) {
  switch (uverr) {
  case 0: return SP_OK;
  case UV_ENOMEM: return SP_ENOMEM;
  case UV_EADDRINUSE: return SP_EADDRINUSE;
  case UV_EACCES:
  case UV_EPERM: return SP_EPERM;
  case UV_ETIMEDOUT: return SP_ETIMEDOUT;
  case UV_ECANCELED: return SP_ECANCELED;
  case UV_ENOENT: return SP_ENOENT;
  case UV_EEXIST: return SP_EEXIST;
  case UV_EINVAL: return SP_EINVAL;
  case UV_EAGAIN:
  case UV_ECONNREFUSED:
  case UV_ECONNRESET:
  case UV_EPIPE: return SP_EAGAIN;
  default: return SP_EIO;
  }
}
