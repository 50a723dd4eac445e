/*
 * curl_dl.c — loads libcurl on first use (see curl_dl.h).
 *
 * One dlopen() of libcurl by its SONAME. The functions are resolved into a
 * local table first and published only when every one was found, so
 * sp_curl_api is either empty or complete.
 */
/* The table is filled through its member names: no call-site macros here. */
#define SP_CURL_DL_IMPL
#include "pipeline/transport/curl_dl.h"

#include "pipeline/error.h"

#include <dlfcn.h>
#include <stdio.h>
#include <uv.h>

#ifndef SP_CURL_SONAME
#error "SP_CURL_SONAME (the SONAME of libcurl, e.g. \"libcurl.so.4\") is set by CMake"
#endif
#ifndef SP_CURL_PACKAGE
#define SP_CURL_PACKAGE "libcurl"
#endif

sp_curl_api_t sp_curl_api;

static uv_once_t g_once = UV_ONCE_INIT;
static int g_rc = SP_ENOTSUP;
static char g_err[512];

static void load_once(void) {
  sp_curl_api_t api;
  void *h = dlopen(SP_CURL_SONAME, RTLD_NOW | RTLD_LOCAL);
  if (!h) {
    const char *e = dlerror();
    snprintf(g_err, sizeof g_err, "HTTP clients need %s: dlopen %s: %s", SP_CURL_PACKAGE,
             SP_CURL_SONAME, e ? e : "failed");
    return;
  }
  /* POSIX guarantees that dlsym's void * converts to a function pointer. */
#define SP_CURL_DL_RESOLVE(fn)                                                                     \
  do {                                                                                             \
    void *sym = dlsym(h, #fn);                                                                     \
    if (!sym) {                                                                                    \
      snprintf(g_err, sizeof g_err, "HTTP clients need %s: %s has no function %s",                 \
               SP_CURL_PACKAGE, SP_CURL_SONAME, #fn);                                              \
      return; /* the library stays loaded, harmlessly */                                           \
    }                                                                                              \
    api.fn = (__typeof__(api.fn))sym;                                                              \
  } while (0);
  SP_CURL_DL_FUNCS(SP_CURL_DL_RESOLVE)
#undef SP_CURL_DL_RESOLVE
  sp_curl_api = api;
  g_rc = 0;
}

int sp_curl_dl_load(char *err, size_t errlen) {
  uv_once(&g_once, load_once);
  if (g_rc != 0 && err && errlen) snprintf(err, errlen, "%s", g_err);
  return g_rc;
}
