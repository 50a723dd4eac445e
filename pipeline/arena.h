/*
 * arena.h — a bump allocator freed in one call.
 *
 * Each received request is decoded into one arena (protobuf-c takes it as a
 * ProtobufCAllocator whose free is a no-op), so a batch of thousands of spans
 * costs a handful of mallocs and one free. Chunks grow geometrically; a
 * request larger than a chunk gets a chunk of its own.
 *
 * Arenas are not thread-safe: one owner at a time (a decode on the thread
 * pool hands the arena back to the loop with the batch).
 */
#ifndef SP_ARENA_H
#define SP_ARENA_H

#include <protobuf-c/protobuf-c.h>
#include <stdbool.h>
#include <stddef.h>

typedef struct sp_arena_s sp_arena_t;

/** Creates an arena whose first chunk holds @p first_chunk bytes (0: 4 KiB). NULL on OOM. */
sp_arena_t *sp_arena_create(size_t first_chunk);
/** Frees every allocation of the arena and the arena itself; accepts NULL. */
void sp_arena_destroy(sp_arena_t *self);
/** Returns @p n bytes aligned to 16, or NULL on OOM. Memory lives until destroy. */
void *sp_arena_alloc(sp_arena_t *self, size_t n);
/** Zeroed sp_arena_alloc(). */
void *sp_arena_calloc(sp_arena_t *self, size_t n);
/** Copies @p n bytes of @p s plus a NUL into the arena; NULL on OOM. */
char *sp_arena_strndup(sp_arena_t *self, const char *s, size_t n);
/** Copies a NUL-terminated string into the arena. */
char *sp_arena_strdup(sp_arena_t *self, const char *s);
/** Copies @p n bytes into the arena. */
void *sp_arena_memdup(sp_arena_t *self, const void *p, size_t n);
/**
 * Takes @p block (@p size bytes from sp_malloc / sp_realloc) into the arena:
 * it is freed with the arena and counts in sp_arena_bytes() and against the
 * limit. For buffers built elsewhere (an inflated upload) that would
 * otherwise be copied in. False when over the limit or out of memory: then
 * the block stays the caller's.
 */
bool sp_arena_adopt(sp_arena_t *self, void *block, size_t size);
/** Bytes handed out so far plus chunk overhead: what the arena holds. */
/**
 * Caps the arena at @p bytes in all (0: no cap) and clears the "limited"
 * flag. Past the cap allocations return NULL, as on out-of-memory, and
 * sp_arena_limited() tells the two apart — so decoding untrusted input can be
 * bounded and answered "too large" rather than "retry later".
 */
void sp_arena_set_limit(sp_arena_t *self, size_t bytes);
/** True when an allocation was refused because of the cap. */
bool sp_arena_limited(const sp_arena_t *self);
/** The cap set by sp_arena_set_limit (0: none). */
size_t sp_arena_get_limit(const sp_arena_t *self);

size_t sp_arena_bytes(const sp_arena_t *self);
/** A protobuf-c allocator drawing from this arena; valid while the arena lives. */
ProtobufCAllocator *sp_arena_pbc(sp_arena_t *self);

#endif
