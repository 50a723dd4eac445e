/*
 * curl_dl.h — libcurl, loaded when the configuration first needs it.
 *
 * spanprofd is not linked against libcurl: mapped at start-up, libcurl and
 * what it pulls in (GnuTLS through librtmp, krb5, ldap, ssh2, nghttp2, idn2,
 * p11-kit ...) cost about 3.7 MiB of resident memory even when no component
 * sends HTTP. Instead the library is dlopen()ed by its SONAME (fixed at
 * build time) when the first HTTP client is created, and every function the
 * client calls is resolved into one table, sp_curl_api.
 *
 * A .c file that calls curl includes this header after <curl/curl.h>; the
 * macros at the end turn `curl_foo(...)` into a call through the table. The
 * four variadic functions curl.h wraps in type-checking macros
 * (curl_easy_setopt, curl_easy_getinfo, curl_multi_setopt,
 * curl_share_setopt) are called as sp_curl_easy_setopt(...) and so on: those
 * keep curl's compile-time checks of option and argument types and call
 * through the table. Every function must be in SP_CURL_DL_FUNCS; one that
 * is missing shows up as an undefined reference when spanprofd is linked.
 * The table is valid only after sp_curl_dl_load() returned 0.
 */
#ifndef SP_CURL_DL_H
#define SP_CURL_DL_H

#include <curl/curl.h>
#include <stddef.h>

/* Every libcurl function spanprof calls. */
#define SP_CURL_DL_FUNCS(X)                                                                        \
  X(curl_easy_cleanup)                                                                             \
  X(curl_easy_getinfo)                                                                             \
  X(curl_easy_header)                                                                              \
  X(curl_easy_init)                                                                                \
  X(curl_easy_setopt)                                                                              \
  X(curl_easy_strerror)                                                                            \
  X(curl_free)                                                                                     \
  X(curl_global_init)                                                                              \
  X(curl_multi_add_handle)                                                                         \
  X(curl_multi_assign)                                                                             \
  X(curl_multi_cleanup)                                                                            \
  X(curl_multi_info_read)                                                                          \
  X(curl_multi_init)                                                                               \
  X(curl_multi_remove_handle)                                                                      \
  X(curl_multi_setopt)                                                                             \
  X(curl_multi_socket_action)                                                                      \
  X(curl_multi_strerror)                                                                           \
  X(curl_share_cleanup)                                                                            \
  X(curl_share_init)                                                                               \
  X(curl_share_setopt)                                                                             \
  X(curl_slist_append)                                                                             \
  X(curl_slist_free_all)                                                                           \
  X(curl_url)                                                                                      \
  X(curl_url_cleanup)                                                                              \
  X(curl_url_get)                                                                                  \
  X(curl_url_set)                                                                                  \
  X(curl_version_info)

/** The resolved functions, each typed from its declaration in the curl headers. */
typedef struct sp_curl_api_s {
#define SP_CURL_DL_FIELD(fn) __typeof__(fn) *fn;
  SP_CURL_DL_FUNCS(SP_CURL_DL_FIELD)
#undef SP_CURL_DL_FIELD
} sp_curl_api_t;

/** The table; filled once by the first successful sp_curl_dl_load(), read-only afterwards. */
extern sp_curl_api_t sp_curl_api;

/**
 * Loads libcurl and resolves the table. Idempotent and thread-safe: the
 * first call does the work, later calls return its outcome. Returns 0, or
 * SP_ENOTSUP when the library or one of the functions is missing; then, if
 * @p err is not NULL, writes a message such as "HTTP clients need libcurl4:
 * dlopen libcurl.so.4: ...: cannot open shared object file" into @p err
 * (@p errlen bytes, NUL-terminated). Does not call curl_global_init(). Never
 * undone: the library stays loaded for the life of the process. Any thread
 * (blocks while the library is read from disk).
 */
int sp_curl_dl_load(char *err, size_t errlen);

/* ---- call sites go through the table ------------------------------------- */

#ifndef SP_CURL_DL_IMPL /* curl_dl.c fills the table by member name */
#define curl_easy_cleanup (sp_curl_api.curl_easy_cleanup)
#define curl_easy_header (sp_curl_api.curl_easy_header)
#define curl_easy_init (sp_curl_api.curl_easy_init)
#define curl_easy_strerror (sp_curl_api.curl_easy_strerror)
#define curl_free (sp_curl_api.curl_free)
#define curl_global_init (sp_curl_api.curl_global_init)
#define curl_multi_add_handle (sp_curl_api.curl_multi_add_handle)
#define curl_multi_assign (sp_curl_api.curl_multi_assign)
#define curl_multi_cleanup (sp_curl_api.curl_multi_cleanup)
#define curl_multi_info_read (sp_curl_api.curl_multi_info_read)
#define curl_multi_init (sp_curl_api.curl_multi_init)
#define curl_multi_remove_handle (sp_curl_api.curl_multi_remove_handle)
#define curl_multi_socket_action (sp_curl_api.curl_multi_socket_action)
#define curl_multi_strerror (sp_curl_api.curl_multi_strerror)
#define curl_share_cleanup (sp_curl_api.curl_share_cleanup)
#define curl_share_init (sp_curl_api.curl_share_init)
#define curl_slist_append (sp_curl_api.curl_slist_append)
#define curl_slist_free_all (sp_curl_api.curl_slist_free_all)
#define curl_url (sp_curl_api.curl_url)
#define curl_url_cleanup (sp_curl_api.curl_url_cleanup)
#define curl_url_get (sp_curl_api.curl_url_get)
#define curl_url_set (sp_curl_api.curl_url_set)
#define curl_version_info (sp_curl_api.curl_version_info)

/*
 * The variadic four. curl.h's macro of the same name checks the argument
 * types and then calls the identifier `fn`; inside this statement
 * expression that identifier is a local pointer taken from the table, so the
 * checked call goes through the table.
 */
#define SP_CURL_DL_CALL3(fn, a, b, c)                                                              \
  __extension__({                                                                                  \
    __typeof__(sp_curl_api.fn) const fn = sp_curl_api.fn;                                          \
    fn(a, b, c);                                                                                   \
  })
#define sp_curl_easy_setopt(h, opt, v) SP_CURL_DL_CALL3(curl_easy_setopt, h, opt, v)
#define sp_curl_easy_getinfo(h, info, p) SP_CURL_DL_CALL3(curl_easy_getinfo, h, info, p)
#define sp_curl_multi_setopt(m, opt, v) SP_CURL_DL_CALL3(curl_multi_setopt, m, opt, v)
#define sp_curl_share_setopt(s, opt, v) SP_CURL_DL_CALL3(curl_share_setopt, s, opt, v)
#endif

#endif
