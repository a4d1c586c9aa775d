/* The seed's typical pattern: run, snapshot, resume (appended segment), reset and replay.
 * Build: cc -std=c99 -I include examples/c/typical_pattern.c -L target/release -ldynlib */
#include <math.h>

#include "example_util.h"

int main(void) {
  DynlibModel *model = NULL;
  DynlibSim *sim = NULL;
  TRY(dynlib_model_load("builtin://ode/izhikevich", NULL, &model));
  TRY(dynlib_sim_new(model, &sim));

  DynlibRunOptions o = run_to(2.0, false, "phase-1");
  TRY(dynlib_sim_run(sim, &o));
  TRY(dynlib_sim_create_snapshot(sim, "phase-1", "after the first stimulus"));

  o = run_to(5.0, true, "phase-2"); /* continue without rebuilding; appended */
  TRY(dynlib_sim_run(sim, &o));
  printf("after phase-2:\n");
  print_segments(sim);

  TRY(dynlib_sim_reset(sim, "phase-1")); /* a different branch from the snapshot */
  o = run_to(3.0, false, "phase-1-replay");
  TRY(dynlib_sim_run(sim, &o));
  printf("after reset and replay:\n");
  print_segments(sim);

  double t = 0, v = 0;
  TRY(dynlib_sim_time(sim, &t));
  TRY(dynlib_sim_value(sim, "v", &v));
  printf("t = %.2f, v = %.6f\n", t, v);
  dynlib_sim_free(sim);
  dynlib_model_free(model);
  if (fabs(t - 3.0) > 1e-12) return 1;
  printf("ok\n");
  return 0;
}
