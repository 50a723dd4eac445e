/*
 * alloc.h — the one allocation wrapper.
 *
 * All heap memory in spanprof goes through these functions so that tests can
 * replace the allocator (sp_alloc_set_fail_after) and drive out-of-memory
 * paths. In the data path a NULL return is an error to report (SP_ENOMEM),
 * never an abort.
 */
#ifndef SP_ALLOC_H
#define SP_ALLOC_H

#include <stddef.h>

/** malloc(); NULL on failure or when a test injected a failure. */
void *sp_malloc(size_t n);
/** calloc(); NULL on failure or on size overflow. */
void *sp_calloc(size_t count, size_t size);
/** realloc(); on failure @p p stays valid and NULL is returned. */
void *sp_realloc(void *p, size_t n);
/** free(); accepts NULL. */
void sp_free(void *p);
/** strdup() through sp_malloc; NULL in, NULL out. */
char *sp_strdup(const char *s);
/** strndup() through sp_malloc. */
char *sp_strndup(const char *s, size_t n);
/** asprintf() through sp_malloc; returns NULL on failure. */
char *sp_sprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/**
 * Test hook: the next @p n allocations succeed, every later one fails, until
 * called again with a negative @p n (which disables injection). Not
 * thread-safe; for unit tests only.
 */
void sp_alloc_set_fail_after(long n);

#endif
