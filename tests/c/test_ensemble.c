/* C tests of the ensemble API: every dynlib_ensemble_* function, bad input (mismatched shapes,
 * NaN parameters, n_members = 0, a failing member, bad handles, small buffers), and member i
 * bit-identical to a single sim with the same inputs for several thread counts, across a
 * checkpoint export/import.
 *
 * usage: test_ensemble WORK_DIR
 * Exit status 0 = all checks passed. */
#include <math.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dynlib.h"

static int checks = 0;
static int failures = 0;

#define CHECK(cond)                                                                        \
  do {                                                                                     \
    checks++;                                                                              \
    if (!(cond)) {                                                                         \
      fprintf(stderr, "%s:%d: CHECK failed: %s (last error: %s)\n", __FILE__, __LINE__,    \
              #cond, dynlib_last_error());                                                 \
      failures++;                                                                          \
    }                                                                                      \
  } while (0)

#define OK(call)                                                                           \
  do {                                                                                     \
    DynlibStatus s_ = (call);                                                              \
    checks++;                                                                              \
    if (s_ != DYNLIB_OK) {                                                                 \
      fprintf(stderr, "%s:%d: %s -> %s: %s\n", __FILE__, __LINE__, #call,                  \
              dynlib_status_name(s_), dynlib_last_error());                                \
      failures++;                                                                          \
    }                                                                                      \
  } while (0)

static const char *show(const char *s) { return s ? s : "(null)"; }

static int message_has(const char *needle) {
  return needle == NULL || strstr(dynlib_last_error(), needle) != NULL;
}

#define EXPECT(call, code, needle)                                                         \
  do {                                                                                     \
    DynlibStatus s_ = (call);                                                              \
    checks++;                                                                              \
    if (s_ != (code)) {                                                                    \
      fprintf(stderr, "%s:%d: %s -> %s, expected %s (%s)\n", __FILE__, __LINE__, #call,    \
              dynlib_status_name(s_), dynlib_status_name(code), dynlib_last_error());      \
      failures++;                                                                          \
    } else if (!message_has(needle)) {                                                     \
      fprintf(stderr, "%s:%d: %s: message lacks \"%s\": %s\n", __FILE__, __LINE__, #call,  \
              show(needle), dynlib_last_error());                                          \
      failures++;                                                                          \
    }                                                                                      \
  } while (0)

#define N 12
#define NS 2 /* izhikevich: v, u */

static int same_bits(const double *a, const double *b, size_t n) {
  return memcmp(a, b, n * sizeof(double)) == 0;
}

static const char *BLOWUP =
    "inline:\n[model]\ntype = \"ode\"\n[states]\nx = 1.0\n[params]\na = 1.0\n"
    "[equations.rhs]\nx = \"a*x*x\"\n[sim]\ndt = 0.01\nt_end = 1.0\n";

/* Single sim reference: assign I, run to T1, resume to T2. */
static void single(DynlibModel *m, double I, double T1, double T2, double *y, uint64_t *events) {
  DynlibSim *s = NULL;
  OK(dynlib_sim_new(m, &s));
  const char *names[] = {"I"};
  OK(dynlib_sim_assign(s, names, &I, 1, false));
  DynlibRunOptions o;
  dynlib_run_options_init(&o);
  o.T = T1;
  OK(dynlib_sim_run(s, &o));
  o.T = T2;
  o.resume = true;
  OK(dynlib_sim_run(s, &o));
  size_t needed = 0;
  OK(dynlib_sim_state(s, y, NS, &needed));
  char buf[1 << 16];
  OK(dynlib_sim_events_json(s, buf, sizeof buf, &needed));
  uint64_t count = 0;
  for (const char *p = buf; (p = strstr(p, "\"event\"")) != NULL; p++) count++;
  *events = count;
  dynlib_sim_free(s);
}

int main(int argc, char **argv) {
  const char *work = argc > 1 ? argv[1] : ".";
  char path[4096];
  snprintf(path, sizeof path, "%s/ens-checkpoint.npz", work);

  DynlibModel *m = NULL;
  OK(dynlib_model_load("builtin://ode/izhikevich", NULL, &m));
  DynlibEnsemble *ens = NULL;

  /* Creation and bad handles. */
  EXPECT(dynlib_ensemble_new(m, 0, &ens), DYNLIB_ERR_INVALID_ARGUMENT, "n_members is 0");
  CHECK(ens == NULL);
  EXPECT(dynlib_ensemble_new(NULL, 3, &ens), DYNLIB_ERR_NULL_POINTER, "model");
  EXPECT(dynlib_ensemble_new(m, 3, NULL), DYNLIB_ERR_NULL_POINTER, "ens_out");
  OK(dynlib_ensemble_new(m, N, &ens));
  size_t n = 0;
  OK(dynlib_ensemble_n_members(ens, &n));
  CHECK(n == N);
  EXPECT(dynlib_ensemble_n_members((DynlibEnsemble *)m, &n), DYNLIB_ERR_BAD_HANDLE,
         "it is a DynlibModel handle");
  EXPECT(dynlib_sim_run((DynlibSim *)ens, NULL), DYNLIB_ERR_BAD_HANDLE,
         "it is a DynlibEnsemble handle");

  /* Inputs: bad shapes and NaN change nothing. */
  double I[N];
  for (int i = 0; i < N; i++) I[i] = 2.0 + 1.5 * i;
  size_t np = 0;
  OK(dynlib_ensemble_params(ens, NULL, 0, &np));
  CHECK(np % N == 0);
  size_t n_params = np / N;
  double *P = malloc(np * sizeof(double));
  double *P0 = malloc(np * sizeof(double));
  OK(dynlib_ensemble_params(ens, P0, np, &np));
  memcpy(P, P0, np * sizeof(double));
  EXPECT(dynlib_ensemble_set_params(ens, P, N - 1, n_params), DYNLIB_ERR_INVALID_ARGUMENT,
         "the ensemble has 12 members");
  EXPECT(dynlib_ensemble_set_params(ens, P, N, n_params - 1), DYNLIB_ERR_INVALID_ARGUMENT,
         "columns");
  P[3 * n_params + 1] = NAN;
  EXPECT(dynlib_ensemble_set_params(ens, P, N, n_params), DYNLIB_ERR_INVALID_ARGUMENT,
         "row 3, column 1");
  EXPECT(dynlib_ensemble_set_params(ens, NULL, N, n_params), DYNLIB_ERR_NULL_POINTER, "data");
  double ic_bad[N * NS] = {0};
  ic_bad[5] = INFINITY;
  EXPECT(dynlib_ensemble_set_ic(ens, ic_bad, N, NS), DYNLIB_ERR_INVALID_ARGUMENT, "finite");
  EXPECT(dynlib_ensemble_set_param_column(ens, "II", I, N), DYNLIB_ERR_UNKNOWN_NAME, "'II'");
  EXPECT(dynlib_ensemble_set_param_column(ens, "v", I, N), DYNLIB_ERR_UNKNOWN_NAME,
         "unknown parameter");
  EXPECT(dynlib_ensemble_set_param_column(ens, "I", I, N - 2), DYNLIB_ERR_INVALID_ARGUMENT,
         "10 values");
  double I_nan[N];
  memcpy(I_nan, I, sizeof I);
  I_nan[7] = NAN;
  EXPECT(dynlib_ensemble_set_param_column(ens, "I", I_nan, N), DYNLIB_ERR_INVALID_ARGUMENT,
         "[row 7] is NaN");
  double *P1 = malloc(np * sizeof(double));
  OK(dynlib_ensemble_params(ens, P1, np, &np));
  CHECK(same_bits(P0, P1, np)); /* nothing changed */

  /* A matrix then a column; set_column takes states too. */
  memcpy(P, P0, np * sizeof(double));
  OK(dynlib_ensemble_set_params(ens, P, N, n_params));
  OK(dynlib_ensemble_set_param_column(ens, "I", I, N));
  double v0[N];
  for (int i = 0; i < N; i++) v0[i] = -65.0;
  OK(dynlib_ensemble_set_column(ens, "v", v0, N));

  /* Runs on 1, 2 and all threads give the single sims' bits. */
  DynlibRunOptions o;
  dynlib_run_options_init(&o);
  o.record = 0;
  double ref[N * NS];
  uint64_t ref_events[N];
  for (int i = 0; i < N; i++) single(m, I[i], 60.0, 150.0, ref + i * NS, ref_events + i);
  /* Lock-step lanes change the speed, not the bits: off, odd (rounded up), the default. */
  {
    size_t lanes_in[] = {0, 5, 8}, lanes_out[] = {0, 6, 8};
    for (int k = 0; k < 3; k++) {
      DynlibEnsemble *le = NULL;
      OK(dynlib_ensemble_new(m, N, &le));
      OK(dynlib_ensemble_set_param_column(le, "I", I, N));
      OK(dynlib_ensemble_set_lockstep_lanes(le, lanes_in[k]));
      size_t got = 99;
      OK(dynlib_ensemble_lockstep_lanes(le, &got));
      CHECK(got == lanes_out[k]);
      EXPECT(dynlib_ensemble_set_lockstep_lanes(le, 65), DYNLIB_ERR_INVALID_ARGUMENT,
             "at most 64");
      OK(dynlib_ensemble_lockstep_lanes(le, &got));
      CHECK(got == lanes_out[k]);
      EXPECT(dynlib_ensemble_lockstep_lanes(le, NULL), DYNLIB_ERR_NULL_POINTER, "lanes");
      o.T = 60.0;
      o.resume = false;
      OK(dynlib_ensemble_run(le, &o, 2));
      o.T = 150.0;
      o.resume = true;
      OK(dynlib_ensemble_run(le, &o, 2));
      uint64_t taken = 1;
      OK(dynlib_ensemble_last_run_lockstep_steps(le, &taken));
      CHECK(lanes_in[k] == 0 ? taken == 0 : taken > 0);
      double ly[N * NS];
      size_t lneeded = 0;
      OK(dynlib_ensemble_final_states(le, ly, N * NS, &lneeded));
      CHECK(same_bits(ly, ref, N * NS));
      dynlib_ensemble_free(le);
    }
  }
  size_t threads[] = {1, 2, 0};
  for (int k = 0; k < 3; k++) {
    if (k > 0) { /* a fresh run starts from the current state: start over from defaults */
      dynlib_ensemble_free(ens);
      ens = NULL;
      OK(dynlib_ensemble_new(m, N, &ens));
      OK(dynlib_ensemble_set_param_column(ens, "I", I, N));
    }
    o.T = 60.0;
    o.resume = false;
    OK(dynlib_ensemble_run(ens, &o, threads[k]));
    if (k == 2) {
      /* Seam through a checkpoint file: a fresh ensemble imports it and resumes. */
      OK(dynlib_ensemble_export_checkpoint(ens, path));
      dynlib_ensemble_free(ens);
      ens = NULL;
      OK(dynlib_ensemble_new(m, N, &ens));
      OK(dynlib_ensemble_import_checkpoint(ens, path));
    }
    o.T = 150.0;
    o.resume = true;
    OK(dynlib_ensemble_run(ens, &o, threads[k]));
    double y[N * NS];
    size_t needed = 0;
    OK(dynlib_ensemble_final_states(ens, y, N * NS, &needed));
    CHECK(needed == N * NS);
    CHECK(same_bits(y, ref, N * NS));
    uint64_t ev[N];
    OK(dynlib_ensemble_event_counts(ens, ev, N, &needed));
    CHECK(memcmp(ev, ref_events, sizeof ev) == 0);
    CHECK(ev[N - 1] > 0);
  }
  /* Buffer protocol. */
  size_t needed = 0;
  OK(dynlib_ensemble_final_states(ens, NULL, 0, &needed));
  CHECK(needed == N * NS);
  double small[3] = {42.0, 42.0, 42.0};
  EXPECT(dynlib_ensemble_final_states(ens, small, 3, &needed), DYNLIB_ERR_BUFFER_TOO_SMALL,
         NULL);
  CHECK(needed == N * NS && small[0] == 42.0);
  double t[N];
  OK(dynlib_ensemble_times(ens, t, N, &needed));
  CHECK(t[0] == 150.0 && t[N - 1] == 150.0);
  uint64_t steps[N];
  OK(dynlib_ensemble_step_counts(ens, steps, N, &needed));
  CHECK(steps[4] == 15000);
  EXPECT(dynlib_ensemble_event_counts(ens, steps, 2, &needed), DYNLIB_ERR_BUFFER_TOO_SMALL,
         NULL);

  /* A member as an ordinary sim. */
  DynlibSim *member = NULL;
  OK(dynlib_ensemble_member_sim(ens, 5, &member));
  double y5[NS];
  OK(dynlib_sim_state(member, y5, NS, &needed));
  CHECK(same_bits(y5, ref + 5 * NS, NS));
  o.T = 200.0;
  OK(dynlib_sim_run(member, &o)); /* independent of the ensemble */
  OK(dynlib_ensemble_times(ens, t, N, &needed));
  CHECK(t[5] == 150.0);
  dynlib_sim_free(member);
  EXPECT(dynlib_ensemble_member_sim(ens, N, &member), DYNLIB_ERR_INVALID_ARGUMENT,
         "out of range");

  /* Options no member accepts: refused before any member runs. */
  double ic2[NS] = {-70.0, -14.0};
  o.ic = ic2;
  o.n_ic = NS;
  o.resume = true;
  EXPECT(dynlib_ensemble_run(ens, &o, 0), DYNLIB_ERR_INVALID_ARGUMENT, "does not accept 'ic'");
  o.ic = NULL;
  o.n_ic = 0;
  o.checkpoint_dir = work;
  o.checkpoint_every_steps = 10;
  EXPECT(dynlib_ensemble_run(ens, &o, 0), DYNLIB_ERR_INVALID_ARGUMENT, "export_checkpoint");
  o.checkpoint_dir = NULL;
  o.checkpoint_every_steps = 0;
  EXPECT(dynlib_ensemble_run(ens, &o, 100000), DYNLIB_ERR_INVALID_ARGUMENT, "n_threads");

  /* from_sim copies the session. */
  DynlibSim *s = NULL;
  OK(dynlib_sim_new(m, &s));
  dynlib_run_options_init(&o);
  o.T = 10.0;
  OK(dynlib_sim_run(s, &o));
  DynlibEnsemble *copies = NULL;
  OK(dynlib_ensemble_from_sim(s, 4, &copies));
  OK(dynlib_ensemble_times(copies, t, 4, &needed));
  CHECK(t[3] == 10.0);
  EXPECT(dynlib_ensemble_from_sim(s, 0, &copies), DYNLIB_ERR_INVALID_ARGUMENT, "n_members");
  /* Checkpoint of the wrong size is refused and changes nothing. */
  EXPECT(dynlib_ensemble_import_checkpoint(copies, path), DYNLIB_ERR_INCOMPATIBLE,
         "holds 12 members");
  OK(dynlib_ensemble_times(copies, t, 4, &needed));
  CHECK(t[3] == 10.0);
  EXPECT(dynlib_sim_import_snapshot(s, path), DYNLIB_ERR_CORRUPT_SNAPSHOT, NULL);
  EXPECT(dynlib_ensemble_import_checkpoint(copies, "/nonexistent/x.npz"), DYNLIB_ERR_IO, NULL);
  dynlib_ensemble_free(copies);
  dynlib_sim_free(s);

  /* A failing member: member 2 blows up, the others finish. */
  DynlibModel *bm = NULL;
  OK(dynlib_model_load(BLOWUP, NULL, &bm));
  DynlibEnsemble *be = NULL;
  OK(dynlib_ensemble_new(bm, 4, &be));
  double a[4] = {-1.0, 0.5, 5.0, 1.0};
  OK(dynlib_ensemble_set_param_column(be, "a", a, 4));
  dynlib_run_options_init(&o);
  o.T = 0.5;
  DynlibStatus st = dynlib_ensemble_run(be, &o, 2);
  CHECK(st != DYNLIB_OK);
  CHECK(strstr(dynlib_last_error(), "1 of 4 members failed") != NULL);
  size_t nf = 0;
  OK(dynlib_ensemble_n_failed(be, &nf));
  CHECK(nf == 1);
  DynlibStatus ms = DYNLIB_OK;
  OK(dynlib_ensemble_member_status(be, 2, &ms));
  CHECK(ms == st && ms != DYNLIB_OK);
  OK(dynlib_ensemble_member_status(be, 1, &ms));
  CHECK(ms == DYNLIB_OK);
  char msg[512];
  OK(dynlib_ensemble_member_error(be, 2, msg, sizeof msg, &needed));
  CHECK(strlen(msg) > 0 && needed == strlen(msg) + 1);
  OK(dynlib_ensemble_member_error(be, 1, msg, sizeof msg, &needed));
  CHECK(msg[0] == '\0' && needed == 1);
  EXPECT(dynlib_ensemble_member_status(be, 4, &ms), DYNLIB_ERR_INVALID_ARGUMENT, "out of range");
  double by[4];
  OK(dynlib_ensemble_final_states(be, by, 4, &needed));
  CHECK(by[2] == 1.0); /* unchanged */
  /* Member 3 (a = 1) equals a single sim. */
  DynlibSim *bs = NULL;
  OK(dynlib_sim_new(bm, &bs));
  const char *an[] = {"a"};
  OK(dynlib_sim_assign(bs, an, &a[3], 1, false));
  OK(dynlib_sim_run(bs, &o));
  double y1;
  OK(dynlib_sim_state(bs, &y1, 1, &needed));
  CHECK(same_bits(&y1, &by[3], 1));
  dynlib_sim_free(bs);
  dynlib_ensemble_free(be);
  dynlib_model_free(bm);

  /* Free: second free is a no-op, the handle is dead. */
  dynlib_ensemble_free(ens);
  dynlib_ensemble_free(ens);
  EXPECT(dynlib_ensemble_n_members(ens, &n), DYNLIB_ERR_BAD_HANDLE, "already freed");
  dynlib_ensemble_free(NULL);

  free(P);
  free(P0);
  free(P1);
  dynlib_model_free(m);
  printf("test_ensemble: %d checks, %d failures\n", checks, failures);
  return failures == 0 ? 0 : 1;
}
