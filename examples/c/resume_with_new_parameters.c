/* Seed example 2: continue with parameter changes using resume: reset to the end of phase 1,
 * change the Izhikevich parameters a and b, and resume to T = 5.
 * Build: cc -std=c99 -I include examples/c/resume_with_new_parameters.c -L target/release -ldynlib */
#include "example_util.h"

int main(void) {
  DynlibModel *model = NULL;
  DynlibSim *sim = NULL;
  TRY(dynlib_model_load("builtin://ode/izhikevich", NULL, &model));
  TRY(dynlib_sim_new(model, &sim));

  DynlibRunOptions o = run_to(2.0, false, "phase-1");
  TRY(dynlib_sim_run(sim, &o));
  TRY(dynlib_sim_create_snapshot(sim, "phase-1-end", "End of phase 1"));

  TRY(dynlib_sim_reset(sim, "phase-1-end"));
  const char *names[2] = {"a", "b"};
  const double values[2] = {0.02, 0.25};
  TRY(dynlib_sim_assign(sim, names, values, 2, false));

  o = run_to(5.0, true, "phase-2-modified");
  TRY(dynlib_sim_run(sim, &o));
  print_segments(sim);

  DynlibSegmentInfo seg;
  TRY(dynlib_sim_segment_info(sim, 0, &seg));
  dynlib_sim_free(sim);
  dynlib_model_free(model);
  if (!seg.resume || seg.t_end != 5.0) return 1;
  printf("ok\n");
  return 0;
}
