/* Work-precision of dynlib's rk45 against ARKode's ERKStep with the same Dormand-Prince 5(4)
 * pair (ARKODE_DORMAND_PRINCE_7_4_5) on two non-stiff problems. Both integrate the same C
 * right-hand side; dynlib calls it through its C ABI callback model. Both take their default
 * step controllers (ARKode's is printed at the start). ARKode stops at t_end (ERKStepSetStopTime:
 * its Hermite interpolant alone costs ~4e-8 on Arenstorf); dynlib steps past it and evaluates
 * its 4th-order dense output, taking the step again when the next run commits it.
 *
 * Error: ||y(t_end) - ref||_2 / ||ref||_2, the reference an ARKode Verner 8(7) run at
 * rtol 1e-14; its distance to a DP5 run at 1e-13 (and, for Arenstorf, to the closed orbit's
 * initial state) is printed as a bound on the reference's own error. Wall times are the best
 * of `reps`, the two solvers interleaved within each repetition. The ratio columns compare
 * with ARKode at the same error (log-log interpolation of its curve; "-" outside its range).
 *
 * rk45 runs twice per tolerance: with its default classic controller (`rk45`) and with
 * Hairer's PI controller (`rk45pi`, knob beta = BETA). `rejected` is rk45's own count of
 * rejected attempts (the run summary's stepper_stats), checked against the RHS count: 2
 * (first-step estimate) + 1 (first stage) + 6 per attempt (FSAL) + 1 (the first stage of the
 * step that crosses t_end, which the fused loop hands to the general engine), + 1 more when
 * that step's first attempt is rejected and the retry ends inside t_end (the fused loop then
 * starts again without the FSAL stage), for a run that fits in one fused chunk; any other
 * count is reported on stderr.
 *
 * usage: bench [reps]   (benches/vs_arkode/run.sh builds and runs it) */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <arkode/arkode_erkstep.h>
#include <nvector/nvector_serial.h>

#include "../common/work_precision.h"

#define N_TOL 6
#define BETA 0.04
#define N_SOLVERS 3
static const char *SOLVER_NAMES[N_SOLVERS] = {"arkode", "rk45", "rk45pi"};
static const double TOLS[N_TOL] = {1e-3, 1e-4, 1e-5, 1e-6, 1e-7, 1e-8};
#define MAX_N 4

typedef struct Problem {
  const char *name;
  size_t n;
  double y0[MAX_N];
  double t_end;
  /* atol = atol_scale * rtol for every component. */
  double atol_scale;
  void (*rhs)(double t, const double *y, double *out);
  /* 1: the solution returns to y0 at t_end (a periodic orbit). */
  int periodic;
} Problem;

static void lorenz(double t, const double *y, double *f) {
  (void)t;
  f[0] = 10.0 * (y[1] - y[0]);
  f[1] = y[0] * (28.0 - y[2]) - y[1];
  f[2] = y[0] * y[1] - 8.0 / 3.0 * y[2];
}

/* The restricted three-body orbit of Arenstorf (Hairer, Norsett & Wanner I, sec. II.0). */
static void arenstorf(double t, const double *y, double *f) {
  (void)t;
  const double mu = 0.012277471, mu1 = 1.0 - mu;
  double d1 = pow((y[0] + mu) * (y[0] + mu) + y[1] * y[1], 1.5);
  double d2 = pow((y[0] - mu1) * (y[0] - mu1) + y[1] * y[1], 1.5);
  f[0] = y[2];
  f[1] = y[3];
  f[2] = y[0] + 2.0 * y[3] - mu1 * (y[0] + mu) / d1 - mu * (y[0] - mu1) / d2;
  f[3] = y[1] - 2.0 * y[2] - mu1 * y[1] / d1 - mu * y[1] / d2;
}

#define N_PROBLEMS 2
static const Problem PROBLEMS[N_PROBLEMS] = {
    {"Lorenz", 3, {1.0, 1.0, 1.0}, 10.0, 1e-3, lorenz, 0},
    {"Arenstorf", 4, {0.994, 0.0, 0.0, -2.00158510637908252240537862224},
     17.0652165601579625588917206249, 1e-3, arenstorf, 1},
};

typedef struct Result {
  int ran;
  double err, secs;
  long steps, rejected, rhs;
} Result;

static void die(const char *what) {
  fprintf(stderr, "vs_arkode: %s\n", what);
  exit(1);
}

static double rel_err(size_t n, const double *y, const double *ref) {
  double d = 0.0, r = 0.0;
  for (size_t i = 0; i < n; i++) d += (y[i] - ref[i]) * (y[i] - ref[i]), r += ref[i] * ref[i];
  return sqrt(d / r);
}

typedef struct Counts {
  const Problem *p;
  long rhs;
} Counts;

/* ------------------------------------------------------------------ ARKode */

static int ark_rhs(sunrealtype t, N_Vector y, N_Vector ydot, void *ud) {
  Counts *c = ud;
  c->rhs++;
  c->p->rhs(t, N_VGetArrayPointer(y), N_VGetArrayPointer(ydot));
  return 0;
}

static Result run_arkode(SUNContext ctx, const Problem *p, ARKODE_ERKTableID table, double rtol,
                         double atol, double *y_out, FILE *params) {
  Counts c = {p, 0};
  Result r = {1, 0, 0, 0, 0, 0};
  N_Vector y = N_VNew_Serial((sunindextype)p->n, ctx);
  for (size_t i = 0; i < p->n; i++) NV_Ith_S(y, i) = p->y0[i];
  double t0 = now();
  void *mem = ERKStepCreate(ark_rhs, 0.0, y, ctx);
  if (!mem || ERKStepSetTableNum(mem, table) || ERKStepSetUserData(mem, &c) ||
      ERKStepSStolerances(mem, rtol, atol) || ERKStepSetMaxNumSteps(mem, 100000000) ||
      ERKStepSetStopTime(mem, p->t_end))
    die("ARKode setup failed");
  if (params) ERKStepWriteParameters(mem, params);
  sunrealtype t = 0.0;
  if (ERKStepEvolve(mem, p->t_end, y, &t, ARK_NORMAL) < 0) r.ran = 0;
  r.secs = now() - t0;
  long nst, nfe, netf;
  ERKStepGetNumSteps(mem, &nst);
  ERKStepGetNumRhsEvals(mem, &nfe);
  ERKStepGetNumErrTestFails(mem, &netf);
  if (nfe != c.rhs) die("ARKode's RHS counter disagrees with the callback's");
  r.steps = nst, r.rhs = nfe, r.rejected = netf;
  for (size_t i = 0; i < p->n; i++) y_out[i] = NV_Ith_S(y, i);
  ERKStepFree(&mem);
  N_VDestroy(y);
  return r;
}

/* ------------------------------------------------------------------ dynlib */

static int dl_rhs(double t, const double *y, const double *p, double *out, void *ud) {
  (void)p;
  Counts *c = ud;
  c->rhs++;
  c->p->rhs(t, y, out);
  return 0;
}

typedef struct DlSolver {
  Counts counts;
  DynlibModel *model;
  DynlibSim *sim;
} DlSolver;

static const char *STATE_NAMES[MAX_N] = {"y1", "y2", "y3", "y4"};

static void dl_open(DlSolver *s, const Problem *p) {
  char id[64];
  snprintf(id, sizeof id, "vs_arkode/%s", p->name);
  s->counts = (Counts){p, 0};
  s->sim = open_callback_sim(id, p->n, STATE_NAMES, p->y0, "rk45", dl_rhs, NULL, &s->counts,
                             &s->model);
}

static Result run_dynlib(DlSolver *s, double rtol, double atol, double beta, double *y_out) {
  const Problem *p = s->counts.p;
  Result r = {1, 0, 0, 0, -1, 0};
  const char *names[3] = {"rtol", "atol", "beta"};
  double values[3] = {rtol, atol, beta};
  s->counts.rhs = 0;
  if (run_dynlib_to(s->sim, "rk45", p->t_end, p->y0, p->n, names, values, 3, &r.secs, y_out,
                    &r.steps) != DYNLIB_OK) {
    r.ran = 0;
    return r;
  }
  r.rhs = s->counts.rhs;
  r.rejected = stepper_stat(s->sim, "rejected_attempts");
  long attempts = r.steps + 1 + r.rejected;
  long extra = r.rhs - (4 + 6 * attempts);
  if (r.steps < 4096 && extra != 0 && extra != 1)
    fprintf(stderr, "vs_arkode: %s rtol %g beta %g: %ld RHS evaluations, but %ld attempts\n",
            p->name, rtol, beta, r.rhs, attempts);
  return r;
}

/* ------------------------------------------------------------------ table */

/* The reference solver's `what` (0 = time, 1 = RHS) at error `err` (see cost_at_error). */
static double at_error(const Result *ref, double err, int what) {
  double e[N_TOL], v[N_TOL];
  int ran[N_TOL];
  for (int a = 0; a < N_TOL; a++)
    e[a] = ref[a].err, v[a] = what ? ref[a].rhs : ref[a].secs, ran[a] = ref[a].ran;
  return cost_at_error(e, v, ran, N_TOL, err);
}

static void print_row(double rtol, const char *solver, const Result *r, const Result *ark) {
  char rej[24], tr[16] = "", rr[16] = "";
  snprintf(rej, sizeof rej, r->rejected < 0 ? "-" : "%ld", r->rejected);
  if (ark) {
    double ct = at_error(ark, r->err, 0), cr = at_error(ark, r->err, 1);
    snprintf(tr, sizeof tr, isnan(ct) ? "-" : "%.2f", r->secs / ct);
    snprintf(rr, sizeof rr, isnan(cr) ? "-" : "%.3f", r->rhs / cr);
  }
  printf("%-6.0e %-7s %9.2e %8ld %8s %8ld %10.1f %11s %10s\n", rtol, solver, r->err, r->steps,
         rej, r->rhs, 1e6 * r->secs, tr, rr);
}

int main(int argc, char **argv) {
  int reps = argc > 1 ? atoi(argv[1]) : 5;
  if (reps < 1) die("reps must be at least 1");
  SUNContext ctx;
  if (SUNContext_Create(NULL, &ctx)) die("SUNContext_Create failed");
  printf("dynlib %s rk45 vs ARKode ERKStep DORMAND_PRINCE_7_4_5 (SUNDIALS %s), best of %d\n",
         dynlib_version(), SUNDIALS_VERSION, reps);
  printf("rk45: classic controller; rk45pi: PI controller, beta = %g\n", BETA);
  printf("ARKode's step controller (its defaults, from ERKStepWriteParameters):\n");
  double scratch[MAX_N];
  run_arkode(ctx, &PROBLEMS[0], ARKODE_DORMAND_PRINCE_7_4_5, 1e-6, 1e-9, scratch, stdout);
  for (int ip = 0; ip < N_PROBLEMS; ip++) {
    const Problem *p = &PROBLEMS[ip];
    double ref[MAX_N], ref_dp[MAX_N], y[MAX_N];
    run_arkode(ctx, p, ARKODE_VERNER_8_5_6, 1e-14, 1e-17, ref, NULL);
    run_arkode(ctx, p, ARKODE_DORMAND_PRINCE_7_4_5, 1e-13, 1e-16, ref_dp, NULL);
    printf("\n%s (n = %zu, t_end = %.17g, atol = %g*rtol): reference = ARKode Verner 8(7) at "
           "rtol 1e-14; relative distance to DP5 at 1e-13: %.2e",
           p->name, p->n, p->t_end, p->atol_scale, rel_err(p->n, ref_dp, ref));
    if (p->periodic) printf(", to the initial state (periodic): %.2e", rel_err(p->n, p->y0, ref));
    printf("\n");
    DlSolver dl;
    dl_open(&dl, p);
    Result res[N_SOLVERS][N_TOL];
    memset(res, 0, sizeof res);
    for (int it = 0; it < N_TOL; it++) {
      double rtol = TOLS[it], atol = p->atol_scale * rtol;
      for (int rep = 0; rep < reps; rep++)
        for (int s = 0; s < N_SOLVERS; s++) {
          Result r = s == 0 ? run_arkode(ctx, p, ARKODE_DORMAND_PRINCE_7_4_5, rtol, atol, y, NULL)
                            : run_dynlib(&dl, rtol, atol, s == 2 ? BETA : 0.0, y);
          r.err = r.ran ? rel_err(p->n, y, ref) : NAN;
          if (r.ran && (!res[s][it].ran || r.secs < res[s][it].secs)) res[s][it] = r;
        }
    }
    printf("%-6s %-7s %9s %8s %8s %8s %10s %11s %10s\n", "rtol", "solver", "error", "steps",
           "rejected", "rhs", "time_us", "time/arkode", "rhs/arkode");
    for (int it = 0; it < N_TOL; it++) {
      print_row(TOLS[it], SOLVER_NAMES[0], &res[0][it], NULL);
      for (int s = 1; s < N_SOLVERS; s++) print_row(TOLS[it], SOLVER_NAMES[s], &res[s][it], res[0]);
    }
    dynlib_sim_free(dl.sim);
    dynlib_model_free(dl.model);
  }
  SUNContext_Free(&ctx);
  return 0;
}
