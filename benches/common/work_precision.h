/* What the work-precision benchmarks (benches/vs_sundials, benches/vs_arkode) share: the
 * clock, dynlib status checks, the dynlib side (a C callback model of the problem and one
 * unrecorded run) and the comparison at matched error. Header-only: each benchmark is one
 * translation unit. */
#ifndef DYNLIB_BENCH_WORK_PRECISION_H
#define DYNLIB_BENCH_WORK_PRECISION_H

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "dynlib.h"

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

static void check_dl(DynlibStatus s, const char *what) {
  if (s != DYNLIB_OK) {
    fprintf(stderr, "%s: %s: %s\n", what, dynlib_status_name(s), dynlib_last_error());
    exit(1);
  }
}

/* A sim of a callback model with `n` states named `names`, starting at `y0`, with right-hand
 * side `rhs` and Jacobian `jac` (NULL: none), both called with `user_data`. */
static DynlibSim *open_callback_sim(const char *id, size_t n, const char *const *names,
                                    const double *y0, const char *stepper, DynlibRhsFn rhs,
                                    DynlibJacobianFn jac, void *user_data, DynlibModel **model) {
  DynlibCallbackModel cb;
  DynlibSim *sim;
  check_dl(dynlib_callback_model_init(&cb), "init");
  cb.id = id;
  cb.kind = DYNLIB_MODEL_ODE;
  cb.n_states = n;
  cb.state_names = names;
  cb.state_init = y0;
  cb.stepper = stepper;
  cb.rhs = rhs;
  cb.jacobian = jac;
  cb.user_data = user_data;
  check_dl(dynlib_model_from_callbacks(&cb, model), "callback model");
  check_dl(dynlib_sim_new(*model, &sim), "sim");
  return sim;
}

/* A counter of the stepper's `stepper_stats` in the run summary (bdf's work counters, rk45's
 * rejected attempts); -1 when absent. */
static long stepper_stat(DynlibSim *sim, const char *name) {
  char buf[4096], key[64];
  size_t need;
  check_dl(dynlib_sim_summary_json(sim, buf, sizeof buf, &need), "summary");
  snprintf(key, sizeof key, "\"%s\":", name);
  const char *k = strstr(buf, key);
  return k ? strtol(k + strlen(key), NULL, 10) : -1;
}

/* One unrecorded run from t = 0 and `y0` to `t_end` with the `n_config` stepper knobs given;
 * on success the final state goes to `y_out` and the step count to `*steps`. `*secs` is the
 * wall time of dynlib_sim_run. A failure is reported on stderr and returned. */
static DynlibStatus run_dynlib_to(DynlibSim *sim, const char *label, double t_end,
                                  const double *y0, size_t n, const char **names,
                                  const double *values, size_t n_config, double *secs,
                                  double *y_out, long *steps) {
  DynlibRunOptions o;
  dynlib_run_options_init(&o);
  o.T = t_end;
  o.t0 = 0.0;
  o.ic = y0;
  o.n_ic = n;
  o.record = 0;
  o.max_steps = 100000000;
  o.config_names = names;
  o.config_values = values;
  o.n_config = n_config;
  double t0 = now();
  DynlibStatus st = dynlib_sim_run(sim, &o);
  *secs = now() - t0;
  if (st != DYNLIB_OK) {
    fprintf(stderr, "%s at rtol %g: %s: %s\n", label, values[0], dynlib_status_name(st),
            dynlib_last_error());
    return st;
  }
  size_t need;
  uint64_t k;
  check_dl(dynlib_sim_state(sim, y_out, n, &need), "state");
  check_dl(dynlib_sim_step_count(sim, &k), "steps");
  *steps = (long)k;
  return st;
}

/* The reference solver's cost at error `err`: log-log interpolation between neighbouring
 * tolerances of its curve (errors `e`, costs `v`, usable where `ran`), its own value where
 * `err` is one of its errors, NAN outside its range. */
static double cost_at_error(const double *e, const double *v, const int *ran, int n,
                            double err) {
  double best = NAN;
  for (int a = 0; a + 1 < n; a++) {
    double ea = e[a], eb = e[a + 1];
    if (!ran[a] || !ran[a + 1] || !(ea >= err && err >= eb) || ea == eb) continue;
    double s = (log(err) - log(ea)) / (log(eb) - log(ea));
    best = exp(log(v[a]) + s * (log(v[a + 1]) - log(v[a])));
  }
  for (int a = 0; a < n; a++)
    if (ran[a] && e[a] == err) best = v[a];
  return best;
}

#endif
