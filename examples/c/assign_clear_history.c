/* Seed example 3: assign() with clear_history: drop the recorded results but keep the session
 * state (time, workspace), so the next run starts a new segment from where the session is.
 * Build: cc -std=c99 -I include examples/c/assign_clear_history.c -L target/release -ldynlib */
#include "example_util.h"

int main(void) {
  DynlibModel *model = NULL;
  DynlibSim *sim = NULL;
  TRY(dynlib_model_load("builtin://ode/izhikevich", NULL, &model));
  TRY(dynlib_sim_new(model, &sim));

  DynlibRunOptions o = run_to(2.0, false, "initial");
  TRY(dynlib_sim_run(sim, &o));
  double t_before = 0;
  TRY(dynlib_sim_time(sim, &t_before));

  const char *name = "I";
  double current = 20.0;
  TRY(dynlib_sim_assign(sim, &name, &current, 1, true)); /* clear_history */
  double t_after = 0;
  size_t samples = 1;
  TRY(dynlib_sim_time(sim, &t_after));
  /* As after reset: there are no results until the next recorded run. */
  if (dynlib_sim_n_samples(sim, &samples) == DYNLIB_ERR_NO_RESULTS) samples = 0;
  printf("after assign: t = %.2f (unchanged), %zu samples kept\n", t_after, samples);

  o = run_to(3.0, false, "new-segment");
  TRY(dynlib_sim_run(sim, &o));
  print_segments(sim);
  dynlib_sim_free(sim);
  dynlib_model_free(model);
  if (t_after != t_before || samples != 0) return 1;
  printf("ok\n");
  return 0;
}
