/* Proves that the sanitizer build of the C suite can fail: each mode commits one error that
 * AddressSanitizer or UndefinedBehaviorSanitizer must report (tests/c_api.rs checks that the
 * program fails and names the error). Linked against libdynlib like the suite.
 *
 * usage: sanitizer_canary heap|free|ub */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dynlib.h"

int main(int argc, char **argv) {
  printf("canary against dynlib %s\n", dynlib_version());
  const char *mode = argc > 1 ? argv[1] : "";
  if (strcmp(mode, "heap") == 0) {
    volatile char *p = malloc(8);
    p[8] = 1; /* heap-buffer-overflow */
    free((void *)p);
  } else if (strcmp(mode, "free") == 0) {
    char *volatile p = malloc(8);
    char *q = p;
    free(q);
    free(p); /* attempting double-free */
  } else if (strcmp(mode, "ub") == 0) {
    volatile int big = INT_MAX;
    int x = big + argc; /* signed integer overflow */
    printf("%d\n", x);
  }
  return 0;
}
