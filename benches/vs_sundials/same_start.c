/* Is `bdf` CVODE's algorithm? Runs dynlib's bdf on the four problems at rtol 1e-3..1e-8,
 * records the time of every step (observer callback), then runs CVODE (one step at a time)
 * started with bdf's first step (CVodeSetInitStep) and compares the two step sequences bit
 * for bit. Identical sequences mean the runs differ only in how they choose the first step:
 * CVODE bounds it by the distance to the first output, which bdf cannot do (a run in pieces
 * must start like one uninterrupted run; see the README's "Stiff problems").
 *
 * Then, for Van der Pol at rtol 1e-5, CVODE's error and RHS count for 41 first steps from
 * 1e-10 to 1e-4 (log-spaced): how much the final error depends on h0 alone.
 *
 * usage: same_start   (benches/vs_sundials/run.sh same-start builds and runs it) */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cvode/cvode.h>
#include <nvector/nvector_serial.h>
#include <sunlinsol/sunlinsol_dense.h>
#include <sunmatrix/sunmatrix_dense.h>

#include "../common/work_precision.h"
#include "callbacks.h"
#include "problems.h"

#define MAX_STEPS 200000

/* Counts first, so the callbacks' user data is a Trace as well as its Counts. */
typedef struct Trace {
  Counts c;
  size_t steps;
  double t[MAX_STEPS];
} Trace;

static void die(const char *what) {
  fprintf(stderr, "same_start: %s\n", what);
  exit(1);
}

static int observe(double t, uint64_t step, double fraction, const double *y, size_t n,
                   void *ud) {
  (void)step, (void)fraction, (void)y, (void)n;
  Trace *c = ud;
  if (c->steps < MAX_STEPS) c->t[c->steps++] = t;
  return 0;
}

/* CVODE's steps from t = 0 with first step h0 (0: its own rule) into `tr`. */
static void cvode_steps(SUNContext ctx, const Problem *p, double rtol, double h0, Trace *tr,
                        double *y_end) {
  tr->c = (Counts){p, 0, 0}, tr->steps = 0;
  N_Vector y = N_VNew_Serial((sunindextype)p->n, ctx);
  SUNMatrix A = SUNDenseMatrix((sunindextype)p->n, (sunindextype)p->n, ctx);
  SUNLinearSolver ls = SUNLinSol_Dense(y, A, ctx);
  for (size_t i = 0; i < p->n; i++) NV_Ith_S(y, i) = p->y0[i];
  void *mem = CVodeCreate(CV_BDF, ctx);
  if (!mem || CVodeInit(mem, cv_rhs, 0.0, y) || CVodeSetUserData(mem, tr) ||
      CVodeSStolerances(mem, rtol, p->atol_scale * rtol) || CVodeSetLinearSolver(mem, ls, A) ||
      CVodeSetJacFn(mem, cv_jac) || CVodeSetMaxNumSteps(mem, 100000000) ||
      CVodeSetMaxErrTestFails(mem, 20) || (h0 > 0 && CVodeSetInitStep(mem, h0)))
    die("CVODE setup failed");
  sunrealtype t = 0.0;
  while (t < p->t_end && tr->steps < MAX_STEPS) {
    if (CVode(mem, p->t_end, y, &t, CV_ONE_STEP) < 0) die("CVODE failed");
    tr->t[tr->steps++] = t;
  }
  if (y_end) {
    if (CVodeGetDky(mem, p->t_end, 0, y)) die("CVodeGetDky failed");
    for (size_t i = 0; i < p->n; i++) y_end[i] = NV_Ith_S(y, i);
  }
  CVodeFree(&mem);
  SUNLinSolFree(ls);
  SUNMatDestroy(A);
  N_VDestroy(y);
}

static const char *STATE_NAMES[MAX_N] = {"y1", "y2", "y3", "y4", "y5", "y6", "y7", "y8"};

/* bdf's steps into `tr` (the observer's last call is the state at t_end, interpolated). */
static void bdf_steps(const Problem *p, double rtol, Trace *tr) {
  tr->c = (Counts){p, 0, 0}, tr->steps = 0;
  DynlibModel *model;
  DynlibSim *sim = open_callback_sim("same_start", p->n, STATE_NAMES, p->y0, "bdf", dl_rhs,
                                     dl_jac, tr, &model);
  const char *names[3] = {"rtol", "atol", "jacobian_mode"};
  double values[3] = {rtol, p->atol_scale * rtol, 1.0};
  DynlibRunOptions o;
  dynlib_run_options_init(&o);
  o.T = p->t_end, o.t0 = 0.0, o.ic = p->y0, o.n_ic = p->n, o.record = 0;
  o.max_steps = 100000000;
  o.config_names = names, o.config_values = values, o.n_config = 3;
  o.observer = observe, o.observer_user_data = tr, o.observer_every_steps = 1;
  check_dl(dynlib_sim_run(sim, &o), "bdf run");
  if (tr->steps > 0 && tr->t[tr->steps - 1] == p->t_end) tr->steps--;
  dynlib_sim_free(sim);
  dynlib_model_free(model);
}

int main(void) {
  SUNContext ctx;
  if (SUNContext_Create(NULL, &ctx)) die("SUNContext_Create failed");
  static Trace dl, cv, cv_own;
  const double tols[6] = {1e-3, 1e-4, 1e-5, 1e-6, 1e-7, 1e-8};
  printf("bdf against CVODE started with bdf's first step h0 (cvode@h0) and with its own "
         "(cvode); same = steps whose times agree bit for bit\n");
  printf("%-10s %-6s %11s %11s %9s %9s %9s %13s %9s %9s\n", "problem", "rtol", "h0(bdf)",
         "h0(cvode)", "bdf", "cvode@h0", "same", "steps(cvode)", "rhs(bdf)", "rhs(cv@h0)");
  for (int ip = 0; ip < 4; ip++)
    for (int it = 0; it < 6; it++) {
      const Problem *p = &PROBLEMS[ip];
      bdf_steps(p, tols[it], &dl);
      if (dl.steps == 0) die("bdf took no step");
      cvode_steps(ctx, p, tols[it], dl.t[0], &cv, NULL);
      cvode_steps(ctx, p, tols[it], 0.0, &cv_own, NULL);
      size_t same = 0;
      while (same < dl.steps && same < cv.steps && dl.t[same] == cv.t[same]) same++;
      printf("%-10s %-6.0e %11.3e %11.3e %9zu %9zu %9zu %13zu %9ld %9ld\n", p->name, tols[it],
             dl.t[0], cv_own.t[0], dl.steps, cv.steps, same, cv_own.steps, dl.c.rhs, cv.c.rhs);
    }
  const Problem *vdp = &PROBLEMS[1];
  double ref[MAX_N], y[MAX_N];
  cvode_steps(ctx, vdp, 1e-13, 0.0, &cv, ref);
  printf("\nvdp1000, rtol 1e-5: CVODE with first step h0 (reference: CVODE at rtol 1e-13)\n"
         "%11s %10s %7s %7s\n", "h0", "error", "steps", "rhs");
  for (int k = 0; k <= 40; k++) {
    double h0 = pow(10.0, -10.0 + 0.15 * k);
    cvode_steps(ctx, vdp, 1e-5, h0, &cv, y);
    printf("%11.3e %10.2e %7zu %7ld\n", h0, max_rel_err(vdp, y, ref), cv.steps, cv.c.rhs);
  }
  SUNContext_Free(&ctx);
  return 0;
}
