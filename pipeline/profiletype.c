/* profiletype.c — see profiletype.h. */
#include "pipeline/profiletype.h"

#include <string.h>

static int sp__is(const char *s, const char *want) { return s != NULL && strcmp(s, want) == 0; }

static int sp__has(const char *s, const char *part) { return s != NULL && strstr(s, part) != NULL; }

const char *sp_profile_type_name(const char *type, const char *unit, const char *period_type) {
  (void)unit;
  if (sp__is(type, "cpu") || sp__is(period_type, "cpu"))
    return "process_cpu";
  if (sp__is(type, "wall") || sp__is(period_type, "wall"))
    return "wall";
  if (sp__has(type, "alloc_") || sp__has(type, "inuse_") || sp__is(period_type, "space"))
    return "memory";
  if (sp__has(type, "goroutine"))
    return "goroutines";
  if (sp__has(period_type, "mutex") || sp__has(type, "mutex") ||
      ((sp__is(type, "contentions") || sp__is(type, "delay")) &&
       sp__is(period_type, "contentions")))
    return "mutex";
  if (sp__has(period_type, "block") || sp__has(type, "block"))
    return "block";
  if (sp__is(type, "samples") && (period_type == NULL || period_type[0] == '\0'))
    return "process_cpu";
  return type != NULL && type[0] != '\0' ? type : "unknown";
}
