/* Work-precision of dynlib's implicit steppers against SUNDIALS CVODE (BDF, dense LU) on four
 * stiff problems. Both integrate the same C right-hand side and analytic Jacobian
 * (problems.c); dynlib calls them through its C ABI callback model. Wall times are the best
 * of `reps` runs, the solvers interleaved within each repetition. Errors are the largest
 * relative error over the components at t_end against a CVODE run at rtol 1e-13, which is
 * itself checked against the published reference values. The ratio columns compare with
 * CVODE at the same error (log-log interpolation of CVODE's curve; "-" outside its range).
 *
 * CVODE runs with its defaults except max_steps and the error-test failure limit, which is
 * set to dynlib bdf's 20 (CVODE's default 7 fails on the Oregonator at some tolerances).
 *
 * The `rhs` column counts every evaluation of the right-hand side on both sides, those for
 * difference Jacobians included (CVODE reports these apart, as nfeLS, outside nfe);
 * `rhs_jac` is that part. With the analytic Jacobian (the default) it is 0 for both; with
 * `fd` both difference their Jacobians (CVODE's dense DQ Jacobian, bdf's jacobian_mode = 0).
 *
 * usage: bench [reps] [fd]   (benches/vs_sundials/run.sh builds and runs it) */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cvode/cvode.h>
#include <nvector/nvector_serial.h>
#include <sunlinsol/sunlinsol_dense.h>
#include <sunmatrix/sunmatrix_dense.h>

#include "../common/work_precision.h"
#include "callbacks.h"
#include "problems.h"

#define N_TOL 6
static const double TOLS[N_TOL] = {1e-3, 1e-4, 1e-5, 1e-6, 1e-7, 1e-8};
/* The second-order steppers need very many steps at tight tolerances; their targets are at
 * 1e-3..1e-4, so they run down to this rtol only. */
#define LOW_ORDER_MIN_RTOL 1e-6

#define N_SOLVERS 4
static const char *SOLVERS[N_SOLVERS] = {"cvode", "bdf", "bdf2a", "tr-bdf2a"};

/* 1: both solvers difference their Jacobians instead of calling the analytic one. */
static int fd_jacobian = 0;

typedef struct Result {
  int ran;
  /* secs: the whole solve (CVODE: create, init, setup and CVode; dynlib: dynlib_sim_run);
   * setup: CVODE's part before CVode. */
  double err, secs, setup;
  /* rhs: all RHS evaluations; rhs_jac: of those, for difference Jacobians (-1: unknown). */
  long steps, rhs, rhs_jac, jac, lu;
} Result;

static void die(const char *what) {
  fprintf(stderr, "vs_sundials: %s\n", what);
  exit(1);
}

/* ------------------------------------------------------------------ CVODE */

static Result run_cvode(SUNContext ctx, const Problem *p, double rtol, double *y_out) {
  Counts c = {p, 0, 0};
  Result r = {1, 0, 0, 0, 0, 0, 0, 0, 0};
  N_Vector y = N_VNew_Serial((sunindextype)p->n, ctx);
  SUNMatrix A = SUNDenseMatrix((sunindextype)p->n, (sunindextype)p->n, ctx);
  SUNLinearSolver ls = SUNLinSol_Dense(y, A, ctx);
  for (size_t i = 0; i < p->n; i++) NV_Ith_S(y, i) = p->y0[i];
  double t0 = now();
  void *mem = CVodeCreate(CV_BDF, ctx);
  if (!mem || CVodeInit(mem, cv_rhs, 0.0, y) || CVodeSetUserData(mem, &c) ||
      CVodeSStolerances(mem, rtol, p->atol_scale * rtol) || CVodeSetLinearSolver(mem, ls, A) ||
      (!fd_jacobian && CVodeSetJacFn(mem, cv_jac)) || CVodeSetMaxNumSteps(mem, 100000000) ||
      CVodeSetMaxErrTestFails(mem, 20))
    die("CVODE setup failed");
  r.setup = now() - t0;
  sunrealtype t = 0.0;
  if (CVode(mem, p->t_end, y, &t, CV_NORMAL) < 0) r.ran = 0;
  r.secs = now() - t0;
  long nst, nfe, nfe_ls, nje, nsetups;
  CVodeGetNumSteps(mem, &nst);
  CVodeGetNumRhsEvals(mem, &nfe);
  CVodeGetNumLinRhsEvals(mem, &nfe_ls);
  CVodeGetNumJacEvals(mem, &nje);
  CVodeGetNumLinSolvSetups(mem, &nsetups);
  if (nfe + nfe_ls != c.rhs || (!fd_jacobian && nje != c.jac))
    die("CVODE's counters disagree with the callbacks'");
  r.steps = nst, r.rhs = nfe + nfe_ls, r.rhs_jac = nfe_ls, r.jac = nje, r.lu = nsetups;
  for (size_t i = 0; i < p->n; i++) y_out[i] = NV_Ith_S(y, i);
  CVodeFree(&mem);
  SUNLinSolFree(ls);
  SUNMatDestroy(A);
  N_VDestroy(y);
  return r;
}

/* ------------------------------------------------------------------ dynlib */

typedef struct DlSolver {
  Counts counts;
  DynlibModel *model;
  DynlibSim *sim;
} DlSolver;

static const char *STATE_NAMES[MAX_N] = {"y1", "y2", "y3", "y4", "y5", "y6", "y7", "y8"};

static void dl_open(DlSolver *s, const Problem *p, const char *stepper) {
  char id[64];
  snprintf(id, sizeof id, "vs_sundials/%s", p->name);
  s->counts = (Counts){p, 0, 0};
  s->sim = open_callback_sim(id, p->n, STATE_NAMES, p->y0, stepper, dl_rhs, dl_jac, &s->counts,
                             &s->model);
}

static Result run_dynlib(DlSolver *s, const char *stepper, double rtol, double *y_out) {
  const Problem *p = s->counts.p;
  Result r = {1, 0, 0, 0, 0, 0, -1, 0, -1};
  const char *names[3] = {"rtol", "atol", "jacobian_mode"};
  double values[3] = {rtol, p->atol_scale * rtol, fd_jacobian ? 0.0 : 1.0};
  s->counts.rhs = s->counts.jac = 0;
  if (run_dynlib_to(s->sim, stepper, p->t_end, p->y0, p->n, names, values, 3, &r.secs, y_out,
                    &r.steps) != DYNLIB_OK) {
    r.ran = 0;
    return r;
  }
  r.rhs = s->counts.rhs, r.jac = s->counts.jac;
  if (!fd_jacobian) r.rhs_jac = 0;
  /* The other steppers difference their Jacobians without counting them. */
  if (fd_jacobian) r.jac = -1;
  if (strcmp(stepper, "bdf") == 0) {
    r.lu = stepper_stat(s->sim, "lu_factorisations");
    r.rhs_jac = stepper_stat(s->sim, "jacobian_rhs_evals");
    if (fd_jacobian) r.jac = stepper_stat(s->sim, "jac_evals");
  }
  return r;
}

/* ------------------------------------------------------------------ table */

/* CVODE's `what` (0 = time, 1 = RHS evals) at error `err` (see cost_at_error). */
static double cvode_at(const Result *cv, double err, int what) {
  double e[N_TOL], v[N_TOL];
  int ran[N_TOL];
  for (int a = 0; a < N_TOL; a++)
    e[a] = cv[a].err, v[a] = what ? cv[a].rhs : cv[a].secs, ran[a] = cv[a].ran;
  return cost_at_error(e, v, ran, N_TOL, err);
}

int main(int argc, char **argv) {
  int reps = argc > 1 ? atoi(argv[1]) : 5;
  if (reps < 1) die("reps must be at least 1");
  if (argc > 2) {
    if (strcmp(argv[2], "fd") != 0) die("the second argument, if any, must be 'fd'");
    fd_jacobian = 1;
  }
  SUNContext ctx;
  if (SUNContext_Create(NULL, &ctx)) die("SUNContext_Create failed");
  printf("dynlib %s vs CVODE (SUNDIALS %s), dense LU, %s Jacobian, best of %d\n"
         "rhs = every RHS evaluation (CVODE: nfe + nfeLS), rhs_jac = of those, for difference "
         "Jacobians (nfeLS); steps: dynlib does not count the step past t_end it interpolates "
         "in (CVODE does)\n",
         dynlib_version(), SUNDIALS_VERSION, fd_jacobian ? "difference-quotient" : "analytic",
         reps);
  for (int ip = 0; ip < 4; ip++) {
    const Problem *p = &PROBLEMS[ip];
    double ref[MAX_N], y[MAX_N];
    run_cvode(ctx, p, 1e-13, ref);
    printf("\n%s (n = %zu, t_end = %g, atol = %g*rtol): reference = CVODE at rtol 1e-13, "
           "max relative difference to the published values (%s): %.2e\n",
           p->name, p->n, p->t_end, p->atol_scale, p->source, max_rel_err(p, ref, p->published));
    DlSolver dl[N_SOLVERS];
    for (int s = 1; s < N_SOLVERS; s++) dl_open(&dl[s], p, SOLVERS[s]);
    Result res[N_SOLVERS][N_TOL];
    memset(res, 0, sizeof res);
    for (int it = 0; it < N_TOL; it++) {
      double rtol = TOLS[it];
      for (int rep = 0; rep < reps; rep++)
        for (int s = 0; s < N_SOLVERS; s++) {
          if (s >= 2 && rtol < LOW_ORDER_MIN_RTOL) continue;
          Result r = s == 0 ? run_cvode(ctx, p, rtol, y) : run_dynlib(&dl[s], SOLVERS[s], rtol, y);
          r.err = r.ran ? max_rel_err(p, y, ref) : NAN;
          if (r.ran && (!res[s][it].ran || r.secs < res[s][it].secs)) res[s][it] = r;
        }
    }
    printf("%-6s %-9s %9s %8s %8s %8s %6s %6s %10s %11s %11s %9s\n", "rtol", "solver", "error",
           "steps", "rhs", "rhs_jac", "jac", "lu", "time_us", "time/cvode", "rhs/cvode",
           "setup_us");
    for (int it = 0; it < N_TOL; it++)
      for (int s = 0; s < N_SOLVERS; s++) {
        const Result *r = &res[s][it];
        if (!r->ran) continue;
        char lu[16], tr[16] = "", rr[16] = "", su[16] = "";
        snprintf(lu, sizeof lu, r->lu < 0 ? "-" : "%ld", r->lu);
        if (s > 0) {
          double ct = cvode_at(res[0], r->err, 0), cr = cvode_at(res[0], r->err, 1);
          snprintf(tr, sizeof tr, isnan(ct) ? "-" : "%.2f", r->secs / ct);
          snprintf(rr, sizeof rr, isnan(cr) ? "-" : "%.2f", r->rhs / cr);
        } else {
          snprintf(su, sizeof su, "%.1f", 1e6 * r->setup);
        }
        char rj[16], jc[16];
        snprintf(rj, sizeof rj, r->rhs_jac < 0 ? "-" : "%ld", r->rhs_jac);
        snprintf(jc, sizeof jc, r->jac < 0 ? "-" : "%ld", r->jac);
        printf("%-6.0e %-9s %9.2e %8ld %8ld %8s %6s %6s %10.1f %11s %11s %9s\n", TOLS[it],
               SOLVERS[s], r->err, r->steps, r->rhs, rj, jc, lu, 1e6 * r->secs, tr, rr, su);
      }
    for (int s = 1; s < N_SOLVERS; s++) {
      dynlib_sim_free(dl[s].sim);
      dynlib_model_free(dl[s].model);
    }
  }
  SUNContext_Free(&ctx);
  return 0;
}
