/*
 * arena.c — chunked bump allocator (see arena.h).
 */
#include "pipeline/arena.h"

#include "pipeline/alloc.h"

#include <stdbool.h>
#include <stdint.h>
#include <string.h>

typedef struct chunk_s {
  struct chunk_s *next;
  size_t size; /* usable bytes after the header */
  size_t used;
} chunk_t;

#define ALIGN 16u
#define HDR (((sizeof(chunk_t) + ALIGN - 1) / ALIGN) * ALIGN)

/* A block taken in by sp_arena_adopt (the node lives in a chunk). */
typedef struct adopted_s {
  struct adopted_s *next;
  void *block;
} adopted_t;

struct sp_arena_s {
  chunk_t *head;
  adopted_t *adopted;
  size_t next_size;
  size_t total;
  size_t limit;  /* 0: none; see sp_arena_set_limit */
  bool limited;  /* an allocation was refused because of the limit */
  ProtobufCAllocator pbc;
};

/* Whether a new chunk of @p size bytes stays within the limit. */
static bool fits(sp_arena_t *self, size_t size) {
  if (self->limit == 0 || self->total + HDR + size <= self->limit)
    return true;
  self->limited = true;
  return false;
}

static void *pbc_alloc(void *data, size_t size) { return sp_arena_alloc(data, size); }
static void pbc_free(void *data, void *ptr) { (void)data, (void)ptr; }

static chunk_t *chunk_new(size_t size) {
  chunk_t *c = sp_malloc(HDR + size);
  if (!c) return NULL;
  c->next = NULL;
  c->size = size;
  c->used = 0;
  return c;
}

sp_arena_t *sp_arena_create(size_t first_chunk) {
  sp_arena_t *a = sp_calloc(1, sizeof(*a));
  if (!a) return NULL;
  a->next_size = first_chunk ? first_chunk : 4096;
  a->pbc.alloc = pbc_alloc;
  a->pbc.free = pbc_free;
  a->pbc.allocator_data = a;
  return a;
}

void sp_arena_destroy(sp_arena_t *self) {
  if (!self) return;
  for (adopted_t *a = self->adopted; a; a = a->next) /* the nodes go with the chunks */
    sp_free(a->block);
  chunk_t *c = self->head;
  while (c) {
    chunk_t *n = c->next;
    sp_free(c);
    c = n;
  }
  sp_free(self);
}

void *sp_arena_alloc(sp_arena_t *self, size_t n) {
  if (n > SIZE_MAX / 2) return NULL;
  n = (n + ALIGN - 1) & ~(size_t)(ALIGN - 1);
  if (n == 0) n = ALIGN;
  chunk_t *c = self->head;
  if (!c || c->size - c->used < n) {
    if (n > self->next_size / 2) {
      /* A large request gets a chunk of its own, linked behind the current
       * one so the current chunk's free space is not wasted. */
      chunk_t *big = fits(self, n) ? chunk_new(n) : NULL;
      if (!big) return NULL;
      big->used = n;
      self->total += HDR + n;
      if (c) {
        big->next = c->next;
        c->next = big;
      } else {
        self->head = big;
      }
      return (char *)big + HDR;
    }
    chunk_t *fresh = fits(self, self->next_size) ? chunk_new(self->next_size) : NULL;
    if (!fresh) return NULL;
    self->total += HDR + self->next_size;
    if (self->next_size < (1u << 20)) self->next_size *= 2;
    fresh->next = c;
    self->head = c = fresh;
  }
  void *p = (char *)c + HDR + c->used;
  c->used += n;
  return p;
}

void *sp_arena_calloc(sp_arena_t *self, size_t n) {
  void *p = sp_arena_alloc(self, n);
  if (p) memset(p, 0, n);
  return p;
}

void *sp_arena_memdup(sp_arena_t *self, const void *p, size_t n) {
  void *d = sp_arena_alloc(self, n);
  if (d && n) memcpy(d, p, n);
  return d;
}

bool sp_arena_adopt(sp_arena_t *self, void *block, size_t size) {
  if (!fits(self, size)) return false;
  adopted_t *a = sp_arena_alloc(self, sizeof(*a));
  if (!a) return false;
  a->block = block;
  a->next = self->adopted;
  self->adopted = a;
  self->total += size;
  return true;
}

char *sp_arena_strndup(sp_arena_t *self, const char *s, size_t n) {
  char *d = sp_arena_alloc(self, n + 1);
  if (!d) return NULL;
  memcpy(d, s, n);
  d[n] = '\0';
  return d;
}

char *sp_arena_strdup(sp_arena_t *self, const char *s) { return sp_arena_strndup(self, s, strlen(s)); }

void sp_arena_set_limit(sp_arena_t *self, size_t bytes) {
  self->limit = bytes;
  self->limited = false;
}

bool sp_arena_limited(const sp_arena_t *self) { return self->limited; }

size_t sp_arena_get_limit(const sp_arena_t *self) { return self->limit; }

size_t sp_arena_bytes(const sp_arena_t *self) { return self ? self->total + sizeof(*self) : 0; }

ProtobufCAllocator *sp_arena_pbc(sp_arena_t *self) { return &self->pbc; }
