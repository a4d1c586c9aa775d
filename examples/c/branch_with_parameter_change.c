/* Seed example 1: branch with a parameter change (no resume): run a baseline, snapshot it,
 * reset to the snapshot, raise the input current and start a fresh recording.
 * Build: cc -std=c99 -I include examples/c/branch_with_parameter_change.c -L target/release -ldynlib */
#include "example_util.h"

int main(void) {
  DynlibModel *model = NULL;
  DynlibSim *sim = NULL;
  TRY(dynlib_model_load("builtin://ode/izhikevich", NULL, &model));
  TRY(dynlib_sim_new(model, &sim));

  DynlibRunOptions o = run_to(2.0, false, "baseline");
  TRY(dynlib_sim_run(sim, &o));
  TRY(dynlib_sim_create_snapshot(sim, "after-baseline", "End of baseline run"));

  TRY(dynlib_sim_reset(sim, "after-baseline"));
  const char *name = "I";
  double current = 15.0;
  TRY(dynlib_sim_assign(sim, &name, &current, 1, false));

  o = run_to(3.0, false, "modified-current"); /* starts a fresh recording */
  TRY(dynlib_sim_run(sim, &o));
  print_segments(sim);

  double I = 0;
  size_t n = 0;
  TRY(dynlib_sim_value(sim, "I", &I));
  TRY(dynlib_sim_n_segments(sim, &n));
  printf("I = %g, %zu segment(s)\n", I, n);
  dynlib_sim_free(sim);
  dynlib_model_free(model);
  if (I != 15.0 || n != 1) return 1;
  printf("ok\n");
  return 0;
}
