/* Shared by the C examples: stop with the library's message when a call fails. */
#ifndef DYNLIB_EXAMPLE_UTIL_H
#define DYNLIB_EXAMPLE_UTIL_H
#include <stdio.h>
#include <stdlib.h>

#include "dynlib.h"

#define TRY(call)                                                                       \
  do {                                                                                  \
    DynlibStatus status_ = (call);                                                      \
    if (status_ != DYNLIB_OK) {                                                         \
      fprintf(stderr, "%s failed: %s: %s\n", #call, dynlib_status_name(status_),        \
              dynlib_last_error());                                                     \
      exit(1);                                                                          \
    }                                                                                   \
  } while (0)

/* A run to absolute time T, other options at their defaults. */
static inline DynlibRunOptions run_to(double T, bool resume, const char *tag) {
  DynlibRunOptions o;
  dynlib_run_options_init(&o);
  o.T = T;
  o.resume = resume;
  o.tag = tag;
  return o;
}

/* Prints every segment: name, time span, whether it was resumed. */
static inline void print_segments(DynlibSim *sim) {
  size_t n = 0;
  TRY(dynlib_sim_n_segments(sim, &n));
  for (size_t i = 0; i < n; i++) {
    DynlibSegmentInfo seg;
    char name[64];
    TRY(dynlib_sim_segment_info(sim, i, &seg));
    TRY(dynlib_sim_segment_name(sim, i, name, sizeof name, NULL));
    printf("  segment %-18s t = %6.2f .. %6.2f  (%llu samples%s)\n", name, seg.t_start,
           seg.t_end, (unsigned long long)seg.sample_len, seg.resume ? ", resumed" : "");
  }
}
#endif
