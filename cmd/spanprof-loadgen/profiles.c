/* profiles.c — the `profiles` mode (being written). */
#include "cmd/spanprof-loadgen/loadgen.h"

int lg_profiles_main(int argc, char **argv) {
  (void)argc;
  (void)argv;
  fprintf(stderr, "spanprof-loadgen profiles: not implemented yet\n");
  return 2;
}
