/*
 * grpc_dl.c — loads grpc core on first use (see grpc_dl.h).
 *
 * One dlopen() of libgrpc by its SONAME; libgpr comes with it as a
 * dependency, and dlsym() on libgrpc's handle searches its dependencies too,
 * so the gpr_* functions resolve through the same handle. The functions are
 * resolved into a local table first and published only when every one was
 * found, so sp_grpc_api is either empty or complete.
 */
/* The table is filled through its member names: no call-site macros here. */
#define SP_GRPC_DL_IMPL
#include "pipeline/transport/grpc_dl.h"

#include "pipeline/error.h"

#include <dlfcn.h>
#include <stdio.h>
#include <uv.h>

#ifndef SP_GRPC_SONAME
#error "SP_GRPC_SONAME (the SONAME of libgrpc, e.g. \"libgrpc.so.29\") is set by CMake"
#endif
#ifndef SP_GRPC_PACKAGE
#define SP_GRPC_PACKAGE "grpc core"
#endif

sp_grpc_api_t sp_grpc_api;

static uv_once_t g_once = UV_ONCE_INIT;
static int g_rc = SP_ENOTSUP;
static char g_err[512];

static void load_once(void) {
  sp_grpc_api_t api;
  void *h = dlopen(SP_GRPC_SONAME, RTLD_NOW | RTLD_LOCAL);
  if (!h) {
    const char *e = dlerror();
    snprintf(g_err, sizeof g_err, "gRPC needs %s: dlopen %s: %s", SP_GRPC_PACKAGE, SP_GRPC_SONAME,
             e ? e : "failed");
    return;
  }
  /* POSIX guarantees that dlsym's void * converts to a function pointer. */
#define SP_GRPC_DL_RESOLVE(fn)                                                                     \
  do {                                                                                             \
    void *sym = dlsym(h, #fn);                                                                     \
    if (!sym) {                                                                                    \
      snprintf(g_err, sizeof g_err, "gRPC needs %s: %s has no function %s", SP_GRPC_PACKAGE,       \
               SP_GRPC_SONAME, #fn);                                                               \
      return; /* the library stays loaded, harmlessly */                                           \
    }                                                                                              \
    api.fn = (__typeof__(api.fn))sym;                                                              \
  } while (0);
  SP_GRPC_DL_FUNCS(SP_GRPC_DL_RESOLVE)
#undef SP_GRPC_DL_RESOLVE
  sp_grpc_api = api;
  g_rc = 0;
}

int sp_grpc_dl_load(char *err, size_t errlen) {
  uv_once(&g_once, load_once);
  if (g_rc != 0 && err && errlen) snprintf(err, errlen, "%s", g_err);
  return g_rc;
}
