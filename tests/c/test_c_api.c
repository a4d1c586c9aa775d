/* The C test suite of libdynlib: every function, every error code a C caller can provoke, the
 * buffer protocol, snapshot/reset/branch/resume/export/import through the ABI, callback
 * models, and 8 sims on 8 threads matching the single-threaded results bit for bit.
 *
 * usage: test_c_api WORK_DIR     (a writable directory for snapshot files)
 * Exit status 0 = all checks passed. */
#define _POSIX_C_SOURCE 200809L /* clock_gettime, pthread_cond_timedwait */
#include <math.h>
#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "dynlib.h"

static int checks = 0;
static int failures = 0;
static const char *work_dir = ".";

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

/* The call fails with `code` and the last error contains `needle` (if not NULL). */
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

static char *path_in_work(const char *name) {
  size_t n = strlen(work_dir) + strlen(name) + 2;
  char *p = malloc(n);
  snprintf(p, n, "%s/%s", work_dir, name);
  return p;
}

typedef DynlibStatus (*SimTextFn)(DynlibSim *, char *, size_t, size_t *);
typedef DynlibStatus (*SimDoublesFn)(DynlibSim *, double *, size_t, size_t *);

/* A string from a sim getter, by the size-query protocol. Caller frees. */
static char *sim_text(SimTextFn f, DynlibSim *sim) {
  size_t needed = 0;
  if (f(sim, NULL, 0, &needed) != DYNLIB_OK) return NULL;
  char *buf = malloc(needed);
  if (f(sim, buf, needed, &needed) != DYNLIB_OK) {
    free(buf);
    return NULL;
  }
  return buf;
}

static double *sim_doubles(SimDoublesFn f, DynlibSim *sim, size_t *n) {
  *n = 0;
  if (f(sim, NULL, 0, n) != DYNLIB_OK) return NULL;
  double *buf = malloc((*n ? *n : 1) * sizeof(double));
  if (f(sim, buf, *n, n) != DYNLIB_OK) {
    free(buf);
    return NULL;
  }
  return buf;
}

static double *series(DynlibSim *sim, const char *var, size_t *n) {
  *n = 0;
  if (dynlib_sim_results_var(sim, var, NULL, 0, n) != DYNLIB_OK) return NULL;
  double *buf = malloc((*n ? *n : 1) * sizeof(double));
  if (dynlib_sim_results_var(sim, var, buf, *n, n) != DYNLIB_OK) {
    free(buf);
    return NULL;
  }
  return buf;
}

static DynlibModel *load(const char *source, const char *stepper) {
  DynlibModel *m = NULL;
  OK(dynlib_model_load(source, stepper, &m));
  return m;
}

static DynlibSim *new_sim(DynlibModel *m) {
  DynlibSim *s = NULL;
  OK(dynlib_sim_new(m, &s));
  return s;
}

static DynlibRunOptions opts_T(double T) {
  DynlibRunOptions o;
  dynlib_run_options_init(&o);
  o.T = T;
  return o;
}

static int same_bits(const double *a, const double *b, size_t n) {
  return memcmp(a, b, n * sizeof(double)) == 0;
}

/* ------------------------------------------------------------------ basics */

static void test_version_and_status_names(void) {
  CHECK(strcmp(dynlib_version(), DYNLIB_VERSION_STRING) == 0);
  CHECK(DYNLIB_VERSION_NUMBER ==
        DYNLIB_VERSION_MAJOR * 10000 + DYNLIB_VERSION_MINOR * 100 + DYNLIB_VERSION_PATCH);
  CHECK(strcmp(dynlib_last_error(), "") == 0);
  const struct {
    DynlibStatus code;
    const char *name;
  } codes[] = {
      {DYNLIB_OK, "DYNLIB_OK"},
      {DYNLIB_ERR_NULL_POINTER, "DYNLIB_ERR_NULL_POINTER"},
      {DYNLIB_ERR_INVALID_ARGUMENT, "DYNLIB_ERR_INVALID_ARGUMENT"},
      {DYNLIB_ERR_MODEL, "DYNLIB_ERR_MODEL"},
      {DYNLIB_ERR_UNKNOWN_NAME, "DYNLIB_ERR_UNKNOWN_NAME"},
      {DYNLIB_ERR_DUPLICATE_NAME, "DYNLIB_ERR_DUPLICATE_NAME"},
      {DYNLIB_ERR_BUFFER_TOO_SMALL, "DYNLIB_ERR_BUFFER_TOO_SMALL"},
      {DYNLIB_ERR_INCOMPATIBLE, "DYNLIB_ERR_INCOMPATIBLE"},
      {DYNLIB_ERR_NO_RESULTS, "DYNLIB_ERR_NO_RESULTS"},
      {DYNLIB_ERR_IO, "DYNLIB_ERR_IO"},
      {DYNLIB_ERR_CORRUPT_SNAPSHOT, "DYNLIB_ERR_CORRUPT_SNAPSHOT"},
      {DYNLIB_ERR_STEP_FAILED, "DYNLIB_ERR_STEP_FAILED"},
      {DYNLIB_ERR_NON_FINITE, "DYNLIB_ERR_NON_FINITE"},
      {DYNLIB_ERR_BAD_HANDLE, "DYNLIB_ERR_BAD_HANDLE"},
      {DYNLIB_ERR_INTERNAL, "DYNLIB_ERR_INTERNAL"},
      {DYNLIB_ERR_BUSY, "DYNLIB_ERR_BUSY"},
      {DYNLIB_INTERRUPTED, "DYNLIB_INTERRUPTED"},
  };
  for (size_t i = 0; i < sizeof codes / sizeof codes[0]; i++) {
    CHECK(strcmp(dynlib_status_name(codes[i].code), codes[i].name) == 0);
  }
  CHECK(strcmp(dynlib_status_name(-7), "DYNLIB_UNKNOWN_STATUS") == 0);
  CHECK(strcmp(dynlib_status_name(9999), "DYNLIB_UNKNOWN_STATUS") == 0);
}

static void test_model_loading_and_errors(void) {
  DynlibModel *m = (DynlibModel *)0x1;
  EXPECT(dynlib_model_load(NULL, NULL, &m), DYNLIB_ERR_NULL_POINTER, "'source'");
  CHECK(m == (DynlibModel *)0x1); /* out-params are written only on success */
  EXPECT(dynlib_model_load("builtin://ode/lorenz", NULL, NULL), DYNLIB_ERR_NULL_POINTER,
         "model_out");
  EXPECT(dynlib_model_load("builtin://ode/lorenzz", NULL, &m), DYNLIB_ERR_UNKNOWN_NAME,
         "lorenz");
  EXPECT(dynlib_model_load("inline:[model]\ntype = \"ode\"\n[states]\nx = \n", NULL, &m),
         DYNLIB_ERR_MODEL, "line");
  EXPECT(dynlib_model_load("inline:[model]\ntype=\"ode\"\n[states]\nx=1\n[equations.rhs]\n"
                           "x = \"-k*\"\n",
                           NULL, &m),
         DYNLIB_ERR_MODEL, "[equations.rhs].x: unexpected end of expression");
  EXPECT(dynlib_model_load("builtin://ode/lorenz", "rk5", &m), DYNLIB_ERR_UNKNOWN_NAME,
         "did you mean");
  EXPECT(dynlib_model_load("builtin://ode/lorenz", "map", &m), DYNLIB_ERR_INVALID_ARGUMENT,
         "map models");
  char *missing = path_in_work("no-such-model.toml");
  EXPECT(dynlib_model_load(missing, NULL, &m), DYNLIB_ERR_IO, "no-such-model");
  free(missing);
  CHECK(m == (DynlibModel *)0x1);

  /* A model file on disk. */
  char *path = path_in_work("decay.toml");
  FILE *f = fopen(path, "w");
  fputs("[model]\ntype = \"ode\"\n[states]\nx = 1.0\n[params]\nk = 0.5\n"
        "[equations.rhs]\nx = \"-k*x\"\n[sim]\ndt = 0.01\n",
        f);
  fclose(f);
  DynlibModel *decay = load(path, "rk4");
  DynlibSim *sim = new_sim(decay);
  DynlibRunOptions o = opts_T(2.0);
  OK(dynlib_sim_run(sim, &o));
  double x = 0;
  OK(dynlib_sim_value(sim, "x", &x));
  CHECK(fabs(x - exp(-1.0)) < 1e-9); /* analytic x(2) = exp(-0.5 * 2) */
  dynlib_sim_free(sim);
  dynlib_model_free(decay);
  free(path);
}

static void test_model_introspection_and_buffer_protocol(void) {
  DynlibModel *m = load("builtin://ode/izhikevich", NULL);
  size_t n = 0;
  OK(dynlib_model_n_states(m, &n));
  CHECK(n == 2);
  OK(dynlib_model_n_params(m, &n));
  CHECK(n == 6);
  OK(dynlib_model_n_aux(m, &n));
  CHECK(n == 0);
  EXPECT(dynlib_model_n_states(m, NULL), DYNLIB_ERR_NULL_POINTER, "'n'");

  /* Size query, too small (buffer untouched), exact fit. */
  size_t needed = 0;
  OK(dynlib_model_state_name(m, 0, NULL, 0, &needed));
  CHECK(needed == 2); /* "v" + NUL */
  char small[1] = {'#'};
  needed = 0;
  EXPECT(dynlib_model_state_name(m, 1, small, sizeof small, &needed),
         DYNLIB_ERR_BUFFER_TOO_SMALL, "needed");
  CHECK(small[0] == '#' && needed == 2);
  char name[8];
  OK(dynlib_model_state_name(m, 1, name, 2, &needed));
  CHECK(strcmp(name, "u") == 0);
  OK(dynlib_model_param_name(m, 4, name, sizeof name, NULL)); /* needed may be NULL */
  CHECK(strcmp(name, "I") == 0);
  EXPECT(dynlib_model_param_name(m, 6, name, sizeof name, &needed),
         DYNLIB_ERR_INVALID_ARGUMENT, "out of range");
  EXPECT(dynlib_model_aux_name(m, 0, name, sizeof name, &needed), DYNLIB_ERR_INVALID_ARGUMENT,
         "out of range");
  EXPECT(dynlib_model_state_name(m, 0, NULL, 8, &needed), DYNLIB_ERR_NULL_POINTER, "buf");

  OK(dynlib_model_info_json(m, NULL, 0, &needed));
  char *info = malloc(needed);
  OK(dynlib_model_info_json(m, info, needed, &needed));
  CHECK(strlen(info) + 1 == needed);
  CHECK(strstr(info, "\"spec_hash\"") != NULL);
  CHECK(strstr(info, "Izhikevich") != NULL);
  free(info);

  DynlibModel *hh = load("builtin://ode/hodgkin-huxley", NULL);
  OK(dynlib_model_n_aux(hh, &n));
  CHECK(n > 0);
  OK(dynlib_model_aux_name(hh, 0, NULL, 0, &needed));
  CHECK(needed > 1);
  dynlib_model_free(hh);
  dynlib_model_free(m);
  dynlib_model_free(NULL);
  dynlib_sim_free(NULL);
}

/* ------------------------------------------------------------------ sessions */

static void test_model_validate_and_mods(void) {
  size_t needed = 0;
  const char *bad = "inline:[model]\ntype = \"ode\"\n[states]\nx = 1\n"
                    "[equations.rhs]\nx = \"-y\"\n[sim]\ndtt = 1\n";
  OK(dynlib_model_validate(bad, NULL, 0, &needed));
  char *json = malloc(needed);
  OK(dynlib_model_validate(bad, json, needed, &needed));
  CHECK(strstr(json, "\"valid\":false") != NULL);
  CHECK(strstr(json, "dtt") != NULL);
  CHECK(strstr(json, "\"line\":8") != NULL);
  free(json);
  char ok[64];
  OK(dynlib_model_validate("builtin://ode/lorenz", ok, sizeof ok, &needed));
  CHECK(strcmp(ok, "{\"valid\":true,\"errors\":[]}") == 0);

  const char *base = "inline:[model]\ntype = \"ode\"\n[states]\nx = 1\n[params]\nk = 2\n"
                     "[equations.rhs]\nx = \"-k*x\"\n[mods.fast]\nset.params = { k = 4.0 }\n";
  const char *mods[] = {"fast"};
  DynlibModel *m = NULL;
  OK(dynlib_model_load_mods(base, mods, 1, NULL, &m));
  char *info = malloc(4096);
  OK(dynlib_model_info_json(m, info, 4096, &needed));
  CHECK(strstr(info, "\"param_defaults\":[4.0]") != NULL);
  free(info);
  dynlib_model_free(m);
  const char *typo[] = {"fsat"};
  EXPECT(dynlib_model_load_mods(base, typo, 1, NULL, &m), DYNLIB_ERR_MODEL, "did you mean 'fast'");
  OK(dynlib_model_load_mods("builtin://ode/lorenz", NULL, 0, NULL, &m));
  dynlib_model_free(m);
}

static void test_seed_typical_pattern(void) {
  DynlibModel *m = load("builtin://ode/izhikevich", NULL);
  DynlibSim *sim = new_sim(m);
  size_t n = 0;
  EXPECT(dynlib_sim_n_samples(sim, &n), DYNLIB_ERR_NO_RESULTS, "run");

  DynlibRunOptions o = opts_T(2.0);
  o.record = 1;
  o.tag = "phase-1";
  OK(dynlib_sim_run(sim, &o));
  OK(dynlib_sim_create_snapshot(sim, "phase-1", "after the first stimulus"));
  o = opts_T(5.0);
  o.resume = true;
  o.tag = "phase-2";
  OK(dynlib_sim_run(sim, &o));
  OK(dynlib_sim_n_segments(sim, &n));
  CHECK(n == 2);
  DynlibSegmentInfo seg;
  OK(dynlib_sim_segment_info(sim, 1, &seg));
  /* The seam sample belongs to phase-1; phase-2 starts one step later. */
  CHECK(seg.resume && seg.t_end == 5.0 && fabs(seg.t_start - 2.01) < 1e-12);
  char name[32];
  OK(dynlib_sim_segment_name(sim, 1, name, sizeof name, NULL));
  CHECK(strcmp(name, "phase-2") == 0);
  double t = 0;
  OK(dynlib_sim_time(sim, &t));
  CHECK(fabs(t - 5.0) < 1e-12);

  OK(dynlib_sim_reset(sim, "phase-1"));
  EXPECT(dynlib_sim_n_samples(sim, &n), DYNLIB_ERR_NO_RESULTS, NULL);
  OK(dynlib_sim_n_segments(sim, &n));
  CHECK(n == 0);
  o = opts_T(3.0);
  o.tag = "phase-1-replay";
  OK(dynlib_sim_run(sim, &o));
  OK(dynlib_sim_segment_name(sim, 0, name, sizeof name, NULL));
  CHECK(strcmp(name, "phase-1-replay") == 0);
  OK(dynlib_sim_n_samples(sim, &n));
  CHECK(n == 301); /* t = 0, 0.01, ..., 3.0 */

  char *snaps = sim_text(dynlib_sim_list_snapshots_json, sim);
  CHECK(snaps && strstr(snaps, "\"initial\"") && strstr(snaps, "after the first stimulus"));
  free(snaps);
  dynlib_sim_free(sim);
  dynlib_model_free(m);
}

/* Whole run vs the same run in three pieces (resume), vs a branch replayed from a snapshot,
 * vs bytes moved to a second sim: bit-identical samples and final state. */
static void check_exact_resume(const char *source, const char *stepper) {
  DynlibModel *m = load(source, stepper);
  DynlibSim *whole = new_sim(m), *split = new_sim(m), *moved = new_sim(m);
  DynlibRunOptions o = opts_T(7.5);
  OK(dynlib_sim_run(whole, &o));
  o = opts_T(2.5);
  OK(dynlib_sim_run(split, &o));
  OK(dynlib_sim_create_snapshot(split, "seam", NULL));
  o = opts_T(5.0);
  o.resume = true;
  OK(dynlib_sim_run(split, &o));

  size_t len = 0;
  OK(dynlib_sim_serialize_snapshot(split, NULL, NULL, 0, &len));
  uint8_t *bytes = malloc(len);
  size_t len2 = 0;
  OK(dynlib_sim_serialize_snapshot(split, NULL, bytes, len, &len2));
  CHECK(len2 == len); /* stable size for an unchanged session */
  OK(dynlib_sim_deserialize_snapshot(moved, bytes, len));
  free(bytes);

  o = opts_T(7.5);
  o.resume = true;
  OK(dynlib_sim_run(split, &o));
  OK(dynlib_sim_run(moved, &o));

  size_t na = 0, nb = 0, nc = 0, sa = 0, sb = 0, sc = 0;
  double *ya = sim_doubles(dynlib_sim_state, whole, &sa);
  double *yb = sim_doubles(dynlib_sim_state, split, &sb);
  double *yc = sim_doubles(dynlib_sim_state, moved, &sc);
  CHECK(sa == sb && sa == sc && same_bits(ya, yb, sa) && same_bits(ya, yc, sa));
  double *ta = sim_doubles(dynlib_sim_results_t, whole, &na);
  double *tb = sim_doubles(dynlib_sim_results_t, split, &nb);
  double *tc = sim_doubles(dynlib_sim_results_t, moved, &nc);
  /* Fixed-step: the split recording is the whole one; the moved one is its tail. */
  CHECK(na == nb && same_bits(ta, tb, na));
  CHECK(nc > 0 && nc < na && same_bits(ta + (na - nc), tc, nc));
  uint64_t ka = 0, kb = 0;
  OK(dynlib_sim_step_count(whole, &ka));
  OK(dynlib_sim_step_count(split, &kb));
  CHECK(ka == kb && ka == 750);

  /* Replay from the snapshot: the tail after the seam is the same again. */
  OK(dynlib_sim_reset(split, "seam"));
  o = opts_T(7.5);
  o.resume = true;
  OK(dynlib_sim_run(split, &o));
  double *yd = sim_doubles(dynlib_sim_state, split, &sb);
  CHECK(same_bits(ya, yd, sa));
  free(ya), free(yb), free(yc), free(yd), free(ta), free(tb), free(tc);
  dynlib_sim_free(whole), dynlib_sim_free(split), dynlib_sim_free(moved);
  dynlib_model_free(m);
}

static void test_exact_resume(void) {
  check_exact_resume("builtin://ode/izhikevich", "rk4");
  check_exact_resume("builtin://ode/lorenz", "ab3");
  check_exact_resume("builtin://ode/vanderpol", "bdf2");
}

static void test_run_options(void) {
  DynlibModel *m = load("builtin://ode/izhikevich", NULL);
  DynlibSim *sim = new_sim(m);
  DynlibRunOptions o;
  OK(dynlib_run_options_init(&o));
  CHECK(o.struct_size == sizeof o && isnan(o.T) && o.N == 0 && o.record == -1 && !o.resume);
  EXPECT(dynlib_run_options_init(NULL), DYNLIB_ERR_NULL_POINTER, "opts");

  /* Every field at once. */
  const double ic[2] = {-70.0, -14.0};
  const double params[6] = {0.02, 0.2, -65.0, 8.0, 12.0, 30.0};
  const char *vars[2] = {"u", "v"};
  o.T = 10.0;
  o.dt = 0.02;
  o.t0 = 1.0;
  o.ic = ic;
  o.n_ic = 2;
  o.params = params;
  o.n_params = 6;
  o.record = 1;
  o.record_interval = 5;
  o.record_vars = vars;
  o.n_record_vars = 2;
  o.transient = 2.0;
  o.tag = "all-options";
  o.max_steps = 100000;
  OK(dynlib_sim_run(sim, &o));
  size_t n = 0;
  OK(dynlib_sim_results_n_vars(sim, &n));
  CHECK(n == 2);
  char name[8];
  OK(dynlib_sim_results_var_name(sim, 0, name, sizeof name, NULL));
  CHECK(strcmp(name, "u") == 0); /* request order */
  EXPECT(dynlib_sim_results_var_name(sim, 2, name, sizeof name, NULL),
         DYNLIB_ERR_INVALID_ARGUMENT, "out of range");
  double *t = sim_doubles(dynlib_sim_results_t, sim, &n);
  /* Recorded time runs from t0 = 1 to T = 10 after the warm-up: 450 steps, every 5th. */
  CHECK(n == 91 && t[0] == 1.0 && fabs(t[n - 1] - 10.0) < 1e-9);
  free(t);
  uint64_t steps[128];
  size_t ns = 0;
  OK(dynlib_sim_results_step(sim, steps, 128, &ns));
  CHECK(ns == 91 && steps[0] == 0 && steps[1] == 5);
  uint8_t interp[128];
  OK(dynlib_sim_results_interpolated(sim, interp, 128, &ns));
  CHECK(ns == 91 && interp[0] == 0 && interp[90] == 0);
  double p[6];
  OK(dynlib_sim_params(sim, p, 6, &n));
  CHECK(n == 6 && p[4] == 12.0);
  double *summary_t = NULL;
  (void)summary_t;
  char *summary = sim_text(dynlib_sim_summary_json, sim);
  CHECK(summary && strstr(summary, "\"time_shift\":2") && strstr(summary, "\"stepper\":\"rk4\""));
  free(summary);

  /* Bad values are named; a failed run changes nothing. */
  double before = 0;
  OK(dynlib_sim_time(sim, &before));
  o = opts_T(20.0);
  o.record = 7;
  EXPECT(dynlib_sim_run(sim, &o), DYNLIB_ERR_INVALID_ARGUMENT, "opts->record");
  o = opts_T(20.0);
  o.ic = ic;
  o.n_ic = 1;
  EXPECT(dynlib_sim_run(sim, &o), DYNLIB_ERR_INVALID_ARGUMENT, "ic has 1 values");
  o = opts_T(20.0);
  o.resume = true;
  o.ic = ic;
  o.n_ic = 2;
  EXPECT(dynlib_sim_run(sim, &o), DYNLIB_ERR_INVALID_ARGUMENT, "does not accept 'ic'");
  o = opts_T(20.0);
  o.n_ic = 2; /* ic NULL */
  EXPECT(dynlib_sim_run(sim, &o), DYNLIB_ERR_NULL_POINTER, "opts->ic");
  o = opts_T(20.0);
  const char *knob = "atol";
  double knob_value = 1e-9;
  o.config_names = &knob;
  o.config_values = &knob_value;
  o.n_config = 1;
  EXPECT(dynlib_sim_run(sim, &o), DYNLIB_ERR_UNKNOWN_NAME, "no configuration knobs");
  o = opts_T(20.0);
  o.max_steps = 10;
  EXPECT(dynlib_sim_run(sim, &o), DYNLIB_ERR_STEP_FAILED, "max_steps");
  double after = 0;
  OK(dynlib_sim_time(sim, &after));
  CHECK(after == before);
  OK(dynlib_sim_n_samples(sim, &n));
  CHECK(n == 91);

  /* struct_size versioning: a caller built against a shorter struct (without the checkpoint
   * fields) still works; a zero size is refused. NULL options = all defaults. */
  o = opts_T(1.0);
  o.struct_size = offsetof(DynlibRunOptions, checkpoint_dir);
  o.checkpoint_dir = "ignored-because-beyond-struct_size";
  OK(dynlib_sim_run(sim, &o));
  o.struct_size = 0;
  EXPECT(dynlib_sim_run(sim, &o), DYNLIB_ERR_INVALID_ARGUMENT, "struct_size");
  OK(dynlib_sim_run(sim, NULL));

  /* Stepper knobs on an adaptive stepper. */
  DynlibModel *lor = load("builtin://ode/lorenz", "rk45");
  DynlibSim *s45 = new_sim(lor);
  o = opts_T(1.0);
  const char *knobs[2] = {"rtol", "atol"};
  double values[2] = {1e-9, 1e-12};
  o.config_names = knobs;
  o.config_values = values;
  o.n_config = 2;
  OK(dynlib_sim_run(s45, &o));
  char *s = sim_text(dynlib_sim_summary_json, s45);
  CHECK(s && strstr(s, "\"rtol\":1e-9"));
  free(s);
  dynlib_sim_free(s45);
  dynlib_model_free(lor);
  dynlib_sim_free(sim);
  dynlib_model_free(m);
}

static void test_snapshots_assign_and_segments(void) {
  DynlibModel *m = load("builtin://ode/izhikevich", NULL);
  DynlibSim *sim = new_sim(m);
  DynlibRunOptions o = opts_T(2.0);
  o.tag = "baseline";
  OK(dynlib_sim_run(sim, &o));
  OK(dynlib_sim_create_snapshot(sim, "after-baseline", "End of baseline run"));
  EXPECT(dynlib_sim_create_snapshot(sim, "after-baseline", NULL), DYNLIB_ERR_DUPLICATE_NAME,
         "already exists");
  EXPECT(dynlib_sim_create_snapshot(sim, NULL, NULL), DYNLIB_ERR_NULL_POINTER, "'name'");
  EXPECT(dynlib_sim_reset(sim, "after-baselin"), DYNLIB_ERR_UNKNOWN_NAME,
         "did you mean 'after-baseline'");

  bool ok = false;
  char text[256];
  size_t needed = 0;
  OK(dynlib_sim_compat_check(sim, "after-baseline", &ok, text, sizeof text, &needed));
  CHECK(ok && text[0] == '\0' && needed == 1);
  EXPECT(dynlib_sim_compat_check(sim, "nope", &ok, text, sizeof text, &needed),
         DYNLIB_ERR_UNKNOWN_NAME, "nope");
  ok = false;
  OK(dynlib_sim_can_resume(sim, &ok, text, sizeof text, &needed));
  CHECK(ok);
  EXPECT(dynlib_sim_can_resume(sim, NULL, text, sizeof text, &needed), DYNLIB_ERR_NULL_POINTER,
         "ok");

  /* Seed example 1: branch with a parameter change. */
  OK(dynlib_sim_reset(sim, "after-baseline"));
  const char *I = "I";
  double fifteen = 15.0;
  OK(dynlib_sim_assign(sim, &I, &fifteen, 1, false));
  double value = 0;
  OK(dynlib_sim_value(sim, "I", &value));
  CHECK(value == 15.0);
  o = opts_T(3.0);
  o.tag = "modified-current";
  OK(dynlib_sim_run(sim, &o));
  size_t n = 0;
  OK(dynlib_sim_n_segments(sim, &n));
  CHECK(n == 1);

  /* assign is atomic: an unknown name changes nothing and suggests the right one. */
  const char *names[2] = {"a", "bb"};
  double vals[2] = {0.03, 0.3};
  EXPECT(dynlib_sim_assign(sim, names, vals, 2, false), DYNLIB_ERR_UNKNOWN_NAME,
         "'bb' (did you mean 'b'?)");
  OK(dynlib_sim_value(sim, "a", &value));
  CHECK(value == 0.02);
  EXPECT(dynlib_sim_assign(sim, names, NULL, 2, false), DYNLIB_ERR_NULL_POINTER, "values");
  EXPECT(dynlib_sim_value(sim, "zz", &value), DYNLIB_ERR_UNKNOWN_NAME, "zz");

  /* Presets: parameters from the model's [presets.<name>] table. */
  OK(dynlib_sim_apply_preset(sim, "intrinsic_bursting"));
  OK(dynlib_sim_value(sim, "c", &value));
  CHECK(value == -55.0);
  OK(dynlib_sim_value(sim, "d", &value));
  CHECK(value == 4.0);
  EXPECT(dynlib_sim_apply_preset(sim, "intrinsic_burstin"), DYNLIB_ERR_UNKNOWN_NAME,
         "did you mean 'intrinsic_bursting'");
  OK(dynlib_sim_apply_preset(sim, "regular_spiking"));

  /* Seed example 3: assign with clear_history, then a new segment. */
  double twenty = 20.0;
  OK(dynlib_sim_assign(sim, &I, &twenty, 1, true));
  /* clear_history: no results at all, exactly as after reset. */
  EXPECT(dynlib_sim_n_samples(sim, &n), DYNLIB_ERR_NO_RESULTS, "no results");
  OK(dynlib_sim_n_segments(sim, &n));
  CHECK(n == 0);
  o = opts_T(3.0);
  o.tag = "new-segment";
  OK(dynlib_sim_run(sim, &o));
  o = opts_T(4.0);
  o.resume = true;
  OK(dynlib_sim_run(sim, &o));
  OK(dynlib_sim_segment_name(sim, 1, text, sizeof text, NULL));
  CHECK(strcmp(text, "run#1") == 0);
  OK(dynlib_sim_name_segment(sim, 0, "first"));
  OK(dynlib_sim_name_last_segment(sim, "first")); /* made unique */
  OK(dynlib_sim_segment_name(sim, 1, text, sizeof text, NULL));
  CHECK(strcmp(text, "first-2") == 0);
  DynlibSegmentInfo seg;
  EXPECT(dynlib_sim_segment_info(sim, 2, &seg), DYNLIB_ERR_INVALID_ARGUMENT, "out of range");
  EXPECT(dynlib_sim_name_segment(sim, 5, "x"), DYNLIB_ERR_INVALID_ARGUMENT, "out of range");

  /* Events of the spike reset. */
  char *events = sim_text(dynlib_sim_events_json, sim);
  CHECK(events && strstr(events, "\"event\":\"reset\""));
  free(events);

  /* Seed example 2: reset, change Izhikevich parameters, continue with resume. */
  OK(dynlib_sim_reset(sim, "after-baseline"));
  const char *ab[2] = {"a", "b"};
  double abv[2] = {0.02, 0.25};
  OK(dynlib_sim_assign(sim, ab, abv, 2, false));
  o = opts_T(5.0);
  o.resume = true;
  o.tag = "phase-2-modified";
  OK(dynlib_sim_run(sim, &o));
  OK(dynlib_sim_segment_info(sim, 0, &seg));
  CHECK(seg.resume && fabs(seg.t_start - 2.0) < 1e-12 && seg.t_end == 5.0);
  dynlib_sim_free(sim);
  dynlib_model_free(m);
}

/* ------------------------------------------------------------------ files */

static void test_snapshot_files(void) {
  DynlibModel *m = load("builtin://ode/izhikevich", NULL);
  DynlibSim *a = new_sim(m), *b = new_sim(m);
  DynlibRunOptions o = opts_T(50.0);
  OK(dynlib_sim_run(a, &o));
  OK(dynlib_sim_create_snapshot(a, "mid", "halfway"));
  char *path = path_in_work("sub/dir/current.npz");
  char *stored = path_in_work("stored.npz");
  OK(dynlib_sim_export_snapshot(a, path, NULL));
  OK(dynlib_sim_export_snapshot(a, stored, "mid"));
  EXPECT(dynlib_sim_export_snapshot(a, stored, "mdi"), DYNLIB_ERR_UNKNOWN_NAME, "did you mean");

  size_t needed = 0;
  OK(dynlib_inspect_snapshot(stored, NULL, 0, &needed));
  char *meta = malloc(needed);
  OK(dynlib_inspect_snapshot(stored, meta, needed, &needed));
  CHECK(strstr(meta, "dynlib-snapshot-v1") && strstr(meta, "\"halfway\""));
  free(meta);

  OK(dynlib_sim_import_snapshot(b, path));
  size_t n = 0;
  EXPECT(dynlib_sim_n_samples(b, &n), DYNLIB_ERR_NO_RESULTS, NULL);
  o = opts_T(80.0);
  o.resume = true;
  OK(dynlib_sim_run(a, &o));
  OK(dynlib_sim_run(b, &o));
  size_t na = 0, nb = 0;
  double *ya = sim_doubles(dynlib_sim_state, a, &na);
  double *yb = sim_doubles(dynlib_sim_state, b, &nb);
  CHECK(na == nb && same_bits(ya, yb, na));
  free(ya), free(yb);

  /* Refusals leave the session as it was. */
  double t_before = 0, t_after = 0;
  OK(dynlib_sim_time(b, &t_before));
  char *missing = path_in_work("missing.npz");
  EXPECT(dynlib_sim_import_snapshot(b, missing), DYNLIB_ERR_IO, "missing.npz");
  const uint8_t junk[16] = "not a snapshot!";
  EXPECT(dynlib_sim_deserialize_snapshot(b, junk, sizeof junk), DYNLIB_ERR_CORRUPT_SNAPSHOT,
         "not a zip archive");
  EXPECT(dynlib_sim_deserialize_snapshot(b, NULL, 0), DYNLIB_ERR_NULL_POINTER, "bytes");
  EXPECT(dynlib_inspect_snapshot_bytes(junk, sizeof junk, NULL, 0, &needed),
         DYNLIB_ERR_CORRUPT_SNAPSHOT, "not a zip");
  DynlibModel *euler_model = load("builtin://ode/izhikevich", "euler");
  DynlibSim *e = new_sim(euler_model);
  o = opts_T(1.0);
  OK(dynlib_sim_run(e, &o));
  char *euler_path = path_in_work("euler.npz");
  OK(dynlib_sim_export_snapshot(e, euler_path, NULL));
  EXPECT(dynlib_sim_import_snapshot(b, euler_path), DYNLIB_ERR_INCOMPATIBLE,
         "stepper_name is 'euler' in the file, 'rk4' here");
  OK(dynlib_sim_time(b, &t_after));
  CHECK(t_before == t_after);
  OK(dynlib_sim_n_samples(b, &n));
  CHECK(n > 0);

  /* Serialized bytes: size query, too small (untouched), inspect. */
  OK(dynlib_sim_serialize_snapshot(a, "mid", NULL, 0, &needed));
  uint8_t *bytes = malloc(needed);
  memset(bytes, 0xAB, needed);
  size_t short_needed = 0;
  EXPECT(dynlib_sim_serialize_snapshot(a, "mid", bytes, needed - 1, &short_needed),
         DYNLIB_ERR_BUFFER_TOO_SMALL, NULL);
  CHECK(short_needed == needed && bytes[0] == 0xAB);
  OK(dynlib_sim_serialize_snapshot(a, "mid", bytes, needed, &needed));
  size_t mlen = 0;
  OK(dynlib_inspect_snapshot_bytes(bytes, needed, NULL, 0, &mlen));
  CHECK(mlen > 100);
  free(bytes);

  /* Periodic checkpoints through the run options. */
  char *ckdir = path_in_work("checkpoints");
  DynlibSim *c = new_sim(m);
  o = opts_T(10.0);
  o.checkpoint_dir = ckdir;
  o.checkpoint_every_steps = 200;
  o.checkpoint_keep = 2;
  OK(dynlib_sim_run(c, &o));
  char latest[1024];
  OK(dynlib_latest_checkpoint(ckdir, latest, sizeof latest, NULL));
  CHECK(strstr(latest, "checkpoint-00000000000000001000.npz") != NULL);
  DynlibSim *d = new_sim(m);
  OK(dynlib_sim_import_snapshot(d, latest));
  double tc = 0, td = 0;
  OK(dynlib_sim_time(c, &tc));
  OK(dynlib_sim_time(d, &td));
  CHECK(tc == td);
  o.checkpoint_every_steps = 0;
  EXPECT(dynlib_sim_run(c, &o), DYNLIB_ERR_INVALID_ARGUMENT, "checkpoint_every");
  dynlib_sim_free(c), dynlib_sim_free(d);
  free(ckdir);

  dynlib_sim_free(e);
  dynlib_model_free(euler_model);
  free(euler_path), free(missing), free(path), free(stored);
  dynlib_sim_free(a), dynlib_sim_free(b);
  dynlib_model_free(m);
}

/* ------------------------------------------------------------------ callbacks */

typedef struct {
  double sigma, fail_after;
  int calls;
} LorenzData;

static int lorenz_rhs(double t, const double *y, const double *p, double *out, void *ud) {
  LorenzData *d = ud;
  d->calls++;
  if (t > d->fail_after) return 42;
  out[0] = p[0] * (y[1] - y[0]);
  out[1] = y[0] * (p[1] - y[2]) - y[1];
  out[2] = y[0] * y[1] - p[2] * y[2];
  return 0;
}

static int lorenz_aux(double t, const double *y, const double *p, double *out, void *ud) {
  (void)t, (void)p, (void)ud;
  out[0] = y[0] * y[0] + y[1] * y[1] + y[2] * y[2];
  return 0;
}

static DynlibCallbackModel lorenz_def(LorenzData *data) {
  static const char *states[3] = {"x", "y", "z"};
  static const double init[3] = {1.0, 1.0, 1.0};
  static const char *params[3] = {"sigma", "rho", "beta"};
  static const double pinit[3] = {10.0, 28.0, 8.0 / 3.0};
  static const char *aux[1] = {"r2"};
  DynlibCallbackModel cb;
  dynlib_callback_model_init(&cb);
  cb.id = "lab/lorenz";
  cb.version = "1";
  cb.n_states = 3;
  cb.state_names = states;
  cb.state_init = init;
  cb.n_params = 3;
  cb.param_names = params;
  cb.param_init = pinit;
  cb.n_aux = 1;
  cb.aux_names = aux;
  cb.dt = 0.01;
  cb.rhs = lorenz_rhs;
  cb.aux = lorenz_aux;
  cb.user_data = data;
  return cb;
}

static int jacobian_calls = 0;

static int lorenz_jacobian(double t, const double *y, const double *p, double *jac, void *ud) {
  (void)t, (void)ud;
  jacobian_calls++;
  const double j[9] = {-p[0], p[0], 0.0, p[1] - y[2], -1.0, -y[0], y[1], y[0], -p[2]};
  memcpy(jac, j, sizeof j);
  return 0;
}

/* The Jacobian callback drives an implicit stepper: with jacobian_mode = 1 it is called and
 * the result agrees with finite differences (mode 0) to the Newton tolerance. */

/* Issue 15: the preset bank and preset files, persistent config, stepper_config and
 * record_vars = [] (a non-NULL record_vars with n_record_vars = 0). */
static void test_presets_config_and_stepper_config(void) {
  DynlibModel *model = NULL;
  DynlibSim *sim = NULL;
  OK(dynlib_model_load("builtin://ode/izhikevich", "rk45", &model));
  OK(dynlib_sim_new(model, &sim));
  char buf[4096];
  size_t need = 0, n = 0;

  /* The bank starts with the model's presets; glob listing. */
  OK(dynlib_sim_list_presets_json(sim, "intrinsic_*", buf, sizeof buf, &need));
  CHECK(strstr(buf, "\"intrinsic_bursting\"") != NULL);
  CHECK(strstr(buf, "regular_spiking") == NULL);
  const char *names[2] = {"I", "v"};
  double vals[2] = {12.5, -70.0};
  OK(dynlib_sim_add_preset(sim, "mine", names, vals, 2, false));
  EXPECT(dynlib_sim_add_preset(sim, "mine", names, vals, 2, false), DYNLIB_ERR_DUPLICATE_NAME,
         "already exists");
  const char *bad[1] = {"Ix"};
  EXPECT(dynlib_sim_add_preset(sim, "other", bad, vals, 1, false), DYNLIB_ERR_UNKNOWN_NAME,
         "did you mean 'I'");
  OK(dynlib_sim_add_preset(sim, "snap", NULL, NULL, 0, false)); /* the current session */
  OK(dynlib_sim_list_presets_json(sim, "mine", buf, sizeof buf, &need));
  CHECK(strstr(buf, "\"I\":12.5") != NULL && strstr(buf, "\"v\":-70.0") != NULL);

  /* Save (overwrite), load into another sim with each conflict policy, apply. */
  char path[1024];
  snprintf(path, sizeof path, "%s/bank.toml", work_dir);
  OK(dynlib_sim_save_presets(sim, path, "m*", "overwrite", &n));
  CHECK(n == 1);
  EXPECT(dynlib_sim_save_presets(sim, path, "mine", NULL, &n), DYNLIB_ERR_DUPLICATE_NAME,
         "already in");
  EXPECT(dynlib_sim_save_presets(sim, path, "mine", "apend", &n), DYNLIB_ERR_INVALID_ARGUMENT,
         "did you mean 'append'");
  DynlibSim *other = NULL;
  OK(dynlib_sim_new(model, &other));
  OK(dynlib_sim_load_presets(other, path, "*", NULL, &n));
  CHECK(n == 1);
  EXPECT(dynlib_sim_load_presets(other, path, "*", NULL, &n), DYNLIB_ERR_DUPLICATE_NAME,
         "already in the bank");
  OK(dynlib_sim_load_presets(other, path, "*", "keep", &n));
  CHECK(n == 0);
  OK(dynlib_sim_load_presets(other, path, "*", "replace", NULL));
  EXPECT(dynlib_sim_load_presets(other, path, "*", "merge", NULL), DYNLIB_ERR_INVALID_ARGUMENT,
         "on_conflict");
  OK(dynlib_sim_apply_preset(other, "mine"));
  double value = 0;
  OK(dynlib_sim_value(other, "I", &value));
  CHECK(value == 12.5);
  OK(dynlib_sim_remove_preset(other, "mine"));
  EXPECT(dynlib_sim_apply_preset(other, "mine"), DYNLIB_ERR_UNKNOWN_NAME, "unknown preset");
  dynlib_sim_free(other);

  /* Persistent config: read back, applied by later runs, atomic on error. */
  OK(dynlib_sim_config_set_json(sim, "{\"max_steps\": 5, \"record_interval\": 2, \"atol\": 1e-9}"));
  OK(dynlib_sim_config_json(sim, buf, sizeof buf, &need));
  CHECK(strstr(buf, "\"max_steps\":{\"value\":5,\"set\":true}") != NULL);
  EXPECT(dynlib_sim_config_set_json(sim, "{\"max_steps\": 9, \"max_step\": 1}"),
         DYNLIB_ERR_UNKNOWN_NAME, "did you mean 'max_steps'");
  EXPECT(dynlib_sim_config_set_json(sim, "[1]"), DYNLIB_ERR_INVALID_ARGUMENT, "object");
  OK(dynlib_sim_config_json(sim, buf, sizeof buf, &need));
  CHECK(strstr(buf, "\"max_steps\":{\"value\":5,") != NULL);
  OK(dynlib_sim_config_set_json(sim, "{\"max_steps\": null, \"record_interval\": null}"));

  /* stepper_config: values, names/defaults as JSON, NaN restores the default. */
  double cfg[16];
  OK(dynlib_sim_stepper_config(sim, cfg, 16, &need));
  CHECK(need == 9 && cfg[0] == 1e-9);
  const char *knobs[2] = {"rtol", "atol"};
  double kv[2] = {1e-6, NAN};
  OK(dynlib_sim_stepper_config_set(sim, knobs, kv, 2));
  OK(dynlib_sim_stepper_config(sim, cfg, 16, &need));
  CHECK(cfg[1] == 1e-6 && cfg[0] != 1e-9);
  OK(dynlib_sim_stepper_config_json(sim, buf, sizeof buf, &need));
  CHECK(strstr(buf, "\"name\":\"atol\"") != NULL && strstr(buf, "\"default\"") != NULL);
  const char *typo[1] = {"rtoll"};
  EXPECT(dynlib_sim_stepper_config_set(sim, typo, kv, 1), DYNLIB_ERR_UNKNOWN_NAME,
         "did you mean 'rtol'");

  /* record_vars = []: t and step only. */
  DynlibRunOptions o;
  OK(dynlib_run_options_init(&o));
  o.T = 10.0;
  const char *none = NULL;
  o.record_vars = &none;
  o.n_record_vars = 0;
  OK(dynlib_sim_run(sim, &o));
  OK(dynlib_sim_results_n_vars(sim, &n));
  CHECK(n == 0);
  OK(dynlib_sim_n_samples(sim, &n));
  CHECK(n > 1);
  dynlib_sim_free(sim);
  dynlib_model_free(model);

  /* A parameters-only model loads, keeps presets, and refuses to run. */
  OK(dynlib_model_load("inline:[model]\ntype = \"ode\"\n[params]\na = 1.0\n"
                       "[presets.p.params]\na = 2\n", NULL, &model));
  OK(dynlib_sim_new(model, &sim));
  OK(dynlib_sim_apply_preset(sim, "p"));
  OK(dynlib_sim_value(sim, "a", &value));
  CHECK(value == 2.0);
  EXPECT(dynlib_sim_run(sim, NULL), DYNLIB_ERR_INVALID_ARGUMENT, "has no states");
  dynlib_sim_free(sim);
  dynlib_model_free(model);
}

static void test_callback_jacobian(void) {
  LorenzData data = {10.0, 1e300, 0};
  DynlibCallbackModel cb = lorenz_def(&data);
  cb.jacobian = lorenz_jacobian;
  cb.stepper = "bdf2";
  DynlibModel *m = NULL;
  OK(dynlib_model_from_callbacks(&cb, &m));
  DynlibSim *analytic = new_sim(m), *numeric = new_sim(m);
  const char *knob = "jacobian_mode";
  double one = 1.0, zero = 0.0;
  DynlibRunOptions o = opts_T(1.0);
  o.dt = 0.001;
  o.config_names = &knob;
  o.n_config = 1;
  o.config_values = &one;
  OK(dynlib_sim_run(analytic, &o));
  int analytic_calls = jacobian_calls;
  o.config_values = &zero;
  OK(dynlib_sim_run(numeric, &o));
  int numeric_calls = jacobian_calls - analytic_calls;
  size_t n = 0;
  double *ya = sim_doubles(dynlib_sim_state, analytic, &n);
  double *yn = sim_doubles(dynlib_sim_state, numeric, &n);
  double worst = 0;
  for (size_t i = 0; i < n; i++) worst = fmax(worst, fabs(ya[i] - yn[i]));
  CHECK(n == 3 && worst < 1e-6);
  /* At least one Jacobian per step in mode 1; none in mode 0 (finite differences). */
  CHECK(analytic_calls >= 1000 && numeric_calls == 0);
  free(ya), free(yn);
  dynlib_sim_free(analytic), dynlib_sim_free(numeric);
  dynlib_model_free(m);
}

/* Integrate-and-fire: dv/dt = (I - v) / tau, reset to 0 when v >= 1. */
static int lif_rhs(double t, const double *y, const double *p, double *out, void *ud) {
  (void)t, (void)ud;
  out[0] = (p[0] - y[0]) / p[1];
  return 0;
}
static int lif_cond(size_t ev, double t, const double *y, const double *p, int *fires,
                    void *ud) {
  (void)t, (void)p, (void)ud;
  *fires = ev == 0 && y[0] >= 1.0;
  return 0;
}
static int lif_action(size_t ev, double t, double *y, double *p, void *ud) {
  (void)ev, (void)t, (void)p;
  y[0] = 0.0;
  (*(int *)ud)++;
  return 0;
}
static int logistic(double t, const double *y, const double *p, double *out, void *ud) {
  (void)t, (void)ud;
  out[0] = p[0] * y[0] * (1.0 - y[0]);
  return 0;
}

static void test_callback_models(void) {
  LorenzData data = {10.0, 1e300, 0};
  DynlibCallbackModel cb = lorenz_def(&data);
  DynlibModel *m = NULL;
  OK(dynlib_model_from_callbacks(&cb, &m));
  DynlibModel *builtin = load("builtin://ode/lorenz", NULL);
  DynlibSim *mine = new_sim(m), *ref = new_sim(builtin);
  DynlibRunOptions o = opts_T(1.0);
  const char *vars[2] = {"x", "r2"};
  o.record_vars = vars;
  o.n_record_vars = 2;
  OK(dynlib_sim_run(mine, &o));
  CHECK(data.calls == 400); /* rk4: 4 evaluations per step, 100 steps */
  o.n_record_vars = 1;
  OK(dynlib_sim_run(ref, &o));
  size_t n1 = 0, n2 = 0;
  double *x1 = series(mine, "x", &n1), *x2 = series(ref, "x", &n2);
  CHECK(n1 == 101 && n1 == n2);
  double worst = 0;
  for (size_t i = 0; i < n1; i++) worst = fmax(worst, fabs(x1[i] - x2[i]));
  CHECK(worst < 1e-9); /* the same equations, callback vs model language */
  double *r2 = series(mine, "aux.r2", &n2);
  CHECK(n2 == 101 && r2[0] == 3.0);
  free(x1), free(x2), free(r2);

  /* Snapshot and resume are exact for callback models too. */
  DynlibSim *whole = new_sim(m), *split = new_sim(m);
  o = opts_T(3.0);
  OK(dynlib_sim_run(whole, &o));
  o = opts_T(1.3);
  OK(dynlib_sim_run(split, &o));
  o = opts_T(3.0);
  o.resume = true;
  OK(dynlib_sim_run(split, &o));
  size_t na, nb;
  double *ya = sim_doubles(dynlib_sim_state, whole, &na);
  double *yb = sim_doubles(dynlib_sim_state, split, &nb);
  CHECK(na == 3 && same_bits(ya, yb, 3));
  free(ya), free(yb);

  /* A non-zero return stops the run cleanly: error with the code, nothing changed. */
  data.fail_after = 3.5;
  double t0 = 0, t1 = 0;
  OK(dynlib_sim_time(split, &t0));
  o = opts_T(5.0);
  o.resume = true;
  EXPECT(dynlib_sim_run(split, &o), DYNLIB_ERR_STEP_FAILED, "returned 42");
  OK(dynlib_sim_time(split, &t1));
  CHECK(t0 == t1);
  size_t ns = 0;
  OK(dynlib_sim_n_samples(split, &ns));
  CHECK(ns == 301);
  data.fail_after = 1e300;

  /* A snapshot of one callback model is refused by another (id/version in the spec hash). */
  char *path = path_in_work("callback.npz");
  OK(dynlib_sim_export_snapshot(split, path, NULL));
  cb.version = "2";
  DynlibModel *m2 = NULL;
  OK(dynlib_model_from_callbacks(&cb, &m2));
  DynlibSim *other = new_sim(m2);
  EXPECT(dynlib_sim_import_snapshot(other, path), DYNLIB_ERR_INCOMPATIBLE, "spec_hash");
  free(path);
  dynlib_sim_free(other);
  dynlib_model_free(m2);

  /* Events through callbacks. */
  static const char *lif_states[1] = {"v"};
  static const double lif_init[1] = {0.0};
  static const char *lif_params[2] = {"I", "tau"};
  static const double lif_pinit[2] = {1.5, 10.0};
  static const char *lif_events[1] = {"spike"};
  int spikes = 0;
  DynlibCallbackModel lif;
  dynlib_callback_model_init(&lif);
  lif.id = "lab/lif";
  lif.n_states = 1;
  lif.state_names = lif_states;
  lif.state_init = lif_init;
  lif.n_params = 2;
  lif.param_names = lif_params;
  lif.param_init = lif_pinit;
  lif.n_events = 1;
  lif.event_names = lif_events;
  lif.rhs = lif_rhs;
  lif.event_cond = lif_cond;
  lif.event_action = lif_action;
  lif.user_data = &spikes;
  DynlibModel *lm = NULL;
  OK(dynlib_model_from_callbacks(&lif, &lm));
  DynlibSim *ls = new_sim(lm);
  o = opts_T(100.0);
  OK(dynlib_sim_run(ls, &o));
  /* Period of v: tau * ln(I / (I - 1)) = 10 ln 3 ≈ 10.99, so 9 spikes in 100. */
  CHECK(spikes == 9);
  char *events = sim_text(dynlib_sim_events_json, ls);
  CHECK(events && strstr(events, "\"spike\""));
  free(events);
  dynlib_sim_free(ls);
  dynlib_model_free(lm);

  /* A map through callbacks. */
  static const char *map_states[1] = {"x"};
  static const double map_init[1] = {0.2};
  static const char *map_params[1] = {"r"};
  static const double map_pinit[1] = {3.5};
  DynlibCallbackModel mc;
  dynlib_callback_model_init(&mc);
  mc.id = "lab/logistic";
  mc.kind = DYNLIB_MODEL_MAP;
  mc.n_states = 1;
  mc.state_names = map_states;
  mc.state_init = map_init;
  mc.n_params = 1;
  mc.param_names = map_params;
  mc.param_init = map_pinit;
  mc.dt = 1.0;
  mc.rhs = logistic;
  DynlibModel *mm = NULL;
  OK(dynlib_model_from_callbacks(&mc, &mm));
  DynlibSim *ms = new_sim(mm);
  o = opts_T(NAN);
  o.N = 3;
  OK(dynlib_sim_run(ms, &o));
  double x = 0;
  OK(dynlib_sim_value(ms, "x", &x));
  double e = 0.2;
  for (int i = 0; i < 3; i++) e = 3.5 * e * (1.0 - e);
  CHECK(x == e);
  dynlib_sim_free(ms);
  dynlib_model_free(mm);

  /* Definition errors. */
  DynlibCallbackModel bad = lorenz_def(&data);
  DynlibModel *none = NULL;
  bad.rhs = NULL;
  EXPECT(dynlib_model_from_callbacks(&bad, &none), DYNLIB_ERR_NULL_POINTER, "rhs");
  bad = lorenz_def(&data);
  bad.aux = NULL;
  EXPECT(dynlib_model_from_callbacks(&bad, &none), DYNLIB_ERR_NULL_POINTER, "cb->aux");
  bad = lorenz_def(&data);
  bad.kind = 7;
  EXPECT(dynlib_model_from_callbacks(&bad, &none), DYNLIB_ERR_INVALID_ARGUMENT, "kind is 7");
  bad = lorenz_def(&data);
  bad.id = NULL;
  EXPECT(dynlib_model_from_callbacks(&bad, &none), DYNLIB_ERR_NULL_POINTER, "cb->id");
  bad = lorenz_def(&data);
  bad.dt = -1.0;
  EXPECT(dynlib_model_from_callbacks(&bad, &none), DYNLIB_ERR_INVALID_ARGUMENT, "dt");
  bad = lorenz_def(&data);
  bad.param_names = (const char *[]){"sigma", "x", "beta"};
  EXPECT(dynlib_model_from_callbacks(&bad, &none), DYNLIB_ERR_INVALID_ARGUMENT,
         "duplicate name 'x'");
  bad = lorenz_def(&data);
  bad.stepper = "map";
  EXPECT(dynlib_model_from_callbacks(&bad, &none), DYNLIB_ERR_INVALID_ARGUMENT, "map models");
  EXPECT(dynlib_model_from_callbacks(NULL, &none), DYNLIB_ERR_NULL_POINTER, "cb");
  CHECK(none == NULL);

  dynlib_sim_free(whole), dynlib_sim_free(split), dynlib_sim_free(mine), dynlib_sim_free(ref);
  dynlib_model_free(m);
  dynlib_model_free(builtin);
}

/* ------------------------------------------------------------------ error codes, handles */

static void test_remaining_error_codes_and_handles(void) {
  /* Non-finite: x' = x^2 from x = 1 blows up at t = 1. */
  DynlibModel *m = load("inline:[model]\ntype=\"ode\"\n[states]\nx=1.0\n[equations.rhs]\n"
                        "x=\"x^2\"\n[sim]\ndt=0.01\n",
                        NULL);
  DynlibSim *sim = new_sim(m);
  DynlibRunOptions o = opts_T(5.0);
  EXPECT(dynlib_sim_run(sim, &o), DYNLIB_ERR_NON_FINITE, "state 'x'");
  size_t n = 0;
  EXPECT(dynlib_sim_n_samples(sim, &n), DYNLIB_ERR_NO_RESULTS, NULL);

  /* NULL and wrong-type handles. */
  double t = 0;
  EXPECT(dynlib_sim_time(NULL, &t), DYNLIB_ERR_NULL_POINTER, "'sim'");
  EXPECT(dynlib_sim_time((DynlibSim *)m, &t), DYNLIB_ERR_BAD_HANDLE, "not a live DynlibSim");
  EXPECT(dynlib_model_n_states((const DynlibModel *)sim, &n), DYNLIB_ERR_BAD_HANDLE,
         "DynlibModel");
  EXPECT(dynlib_sim_new((const DynlibModel *)sim, &sim), DYNLIB_ERR_BAD_HANDLE, NULL);
  dynlib_sim_free((DynlibSim *)m); /* wrong type: ignored, the model stays usable */
  OK(dynlib_model_n_states(m, &n));
  CHECK(n == 1);
  EXPECT(dynlib_sim_time(sim, NULL), DYNLIB_ERR_NULL_POINTER, "'t'");
  EXPECT(dynlib_sim_run(sim, &o), DYNLIB_ERR_NON_FINITE, NULL);

  /* Strings must be UTF-8. */
  EXPECT(dynlib_sim_create_snapshot(sim, "\xff\xfe", NULL), DYNLIB_ERR_INVALID_ARGUMENT,
         "UTF-8");

  /* A sim outlives its model handle. */
  DynlibModel *m2 = load("builtin://map/logistic", NULL);
  DynlibSim *s2 = new_sim(m2);
  dynlib_model_free(m2);
  o = opts_T(NAN);
  o.N = 10;
  OK(dynlib_sim_run(s2, &o));
  OK(dynlib_sim_n_samples(s2, &n));
  CHECK(n == 11);

  /* Freed handles are refused without reading freed memory (also under valgrind/ASan). */
  dynlib_sim_free(s2);
  EXPECT(dynlib_sim_time(s2, &t), DYNLIB_ERR_BAD_HANDLE, "already freed");
  dynlib_sim_free(s2); /* double free: ignored */
  dynlib_sim_free(sim);
  dynlib_model_free(m);
}

/* ------------------------------------------------------------------ threads */

enum { N_THREADS = 8 };

typedef struct {
  DynlibModel *model;
  double current;
  double *v;
  size_t n;
  double y[2];
  int status;
} Job;

static void run_job(Job *job) {
  DynlibSim *sim = NULL;
  job->status = dynlib_sim_new(job->model, &sim);
  if (job->status != DYNLIB_OK) return;
  const char *I = "I";
  DynlibRunOptions o = opts_T(150.0);
  if ((job->status = dynlib_sim_assign(sim, &I, &job->current, 1, false)) == DYNLIB_OK &&
      (job->status = dynlib_sim_run(sim, &o)) == DYNLIB_OK) {
    o = opts_T(300.0);
    o.resume = true;
    job->status = dynlib_sim_run(sim, &o);
  }
  if (job->status == DYNLIB_OK) {
    job->v = series(sim, "v", &job->n);
    size_t k = 0;
    job->status = dynlib_sim_state(sim, job->y, 2, &k);
  }
  dynlib_sim_free(sim);
}

static void *thread_main(void *arg) {
  run_job(arg);
  return NULL;
}

static void test_threads(void) {
  DynlibModel *m = load("builtin://ode/izhikevich", NULL);
  Job serial[N_THREADS], parallel[N_THREADS];
  for (int i = 0; i < N_THREADS; i++) {
    Job j = {m, 5.0 + 1.5 * i, NULL, 0, {0, 0}, -1};
    serial[i] = j;
    parallel[i] = j;
    run_job(&serial[i]);
  }
  pthread_t threads[N_THREADS];
  for (int i = 0; i < N_THREADS; i++) {
    CHECK(pthread_create(&threads[i], NULL, thread_main, &parallel[i]) == 0);
  }
  for (int i = 0; i < N_THREADS; i++) pthread_join(threads[i], NULL);
  for (int i = 0; i < N_THREADS; i++) {
    CHECK(serial[i].status == DYNLIB_OK && parallel[i].status == DYNLIB_OK);
    CHECK(serial[i].n == 30001 && parallel[i].n == serial[i].n);
    CHECK(serial[i].v && parallel[i].v && same_bits(serial[i].v, parallel[i].v, serial[i].n));
    CHECK(same_bits(serial[i].y, parallel[i].y, 2));
    if (i > 0) CHECK(!same_bits(serial[i].y, serial[0].y, 2)); /* the currents differ */
    free(serial[i].v), free(parallel[i].v);
  }
  /* Errors are per thread: a failure on one thread leaves another's message alone. */
  dynlib_model_free(m);
}

static void *fail_in_thread(void *arg) {
  (void)arg;
  DynlibModel *m = NULL;
  (void)dynlib_model_load("builtin://ode/nothing-here", NULL, &m);
  return NULL;
}

static void test_thread_local_errors(void) {
  DynlibModel *m = NULL;
  (void)dynlib_model_load("builtin://ode/izhikevic", NULL, &m);
  char mine[512];
  snprintf(mine, sizeof mine, "%s", dynlib_last_error());
  pthread_t th;
  CHECK(pthread_create(&th, NULL, fail_in_thread, NULL) == 0);
  pthread_join(th, NULL);
  CHECK(strcmp(mine, dynlib_last_error()) == 0);
  CHECK(strstr(mine, "izhikevic") != NULL);
}

/* ------------------------------------------------------------------ hardening (issue 18) */

/* A one-state decay model through callbacks; the rhs may call back into the library. */
typedef struct {
  DynlibSim *self;          /* the sim this rhs belongs to (set after dynlib_sim_new) */
  DynlibModel *other_model; /* for creating and running a different sim inside the callback */
  int armed;                /* 1: make the re-entrant calls on the next rhs call */
  int fail_with_status;     /* 1: return the busy status from the rhs (stops the run) */
  DynlibStatus st_free_msg_ok, st_reset, st_assign, st_run, st_time, st_snapshot, st_export,
      st_state, st_other;
  char free_msg[512];
  char run_msg[512];
} Reentry;

static int reentrant_rhs(double t, const double *y, const double *p, double *out, void *ud) {
  (void)t;
  Reentry *r = ud;
  out[0] = -p[0] * y[0];
  if (!r->armed) return 0;
  r->armed = 0;
  /* A different error first, so the message after the free is provably the free's. */
  (void)dynlib_sim_time(NULL, NULL);
  dynlib_sim_free(r->self);
  snprintf(r->free_msg, sizeof r->free_msg, "%s", dynlib_last_error());
  r->st_reset = dynlib_sim_reset(r->self, NULL);
  const char *k = "k";
  double two = 2.0;
  r->st_assign = dynlib_sim_assign(r->self, &k, &two, 1, true);
  DynlibRunOptions o;
  dynlib_run_options_init(&o);
  o.T = 0.5;
  r->st_run = dynlib_sim_run(r->self, &o);
  snprintf(r->run_msg, sizeof r->run_msg, "%s", dynlib_last_error());
  double now = -1;
  r->st_time = dynlib_sim_time(r->self, &now);
  r->st_snapshot = dynlib_sim_create_snapshot(r->self, "inner", NULL);
  char *path = path_in_work("reentrant.npz");
  r->st_export = dynlib_sim_export_snapshot(r->self, path, NULL);
  free(path);
  double yy[1];
  size_t need = 0;
  r->st_state = dynlib_sim_state(r->self, yy, 1, &need);
  /* Other sims are fine from inside a callback. */
  DynlibSim *other = NULL;
  r->st_other = dynlib_sim_new(r->other_model, &other);
  if (r->st_other == DYNLIB_OK) {
    DynlibRunOptions oo;
    dynlib_run_options_init(&oo);
    oo.N = 5;
    r->st_other = dynlib_sim_run(other, &oo);
    dynlib_sim_free(other);
  }
  return r->fail_with_status ? r->st_run : 0;
}

static DynlibCallbackModel decay_callbacks(Reentry *r) {
  static const char *states[1] = {"x"};
  static const double init[1] = {1.0};
  static const char *params[1] = {"k"};
  static const double pinit[1] = {1.0};
  DynlibCallbackModel cb;
  dynlib_callback_model_init(&cb);
  cb.id = "test/reentrant-decay";
  cb.n_states = 1;
  cb.state_names = states;
  cb.state_init = init;
  cb.n_params = 1;
  cb.param_names = params;
  cb.param_init = pinit;
  cb.dt = 0.01;
  cb.rhs = reentrant_rhs;
  cb.user_data = r;
  return cb;
}

/* Item 2: a callback that frees, resets, assigns, runs, reads or exports its own sim gets
 * DYNLIB_ERR_BUSY for each (the free is refused and the handle stays valid); the outer run
 * completes as if nothing had been attempted; other sims work from inside the callback. */
static void test_reentrant_calls_from_callbacks(void) {
  Reentry r;
  memset(&r, 0, sizeof r);
  DynlibCallbackModel cb = decay_callbacks(&r);
  DynlibModel *m = NULL;
  OK(dynlib_model_from_callbacks(&cb, &m));
  r.other_model = load("builtin://map/logistic", NULL);
  DynlibSim *sim = new_sim(m);
  DynlibSim *ref = new_sim(m);
  r.self = sim;
  DynlibRunOptions o = opts_T(1.0);
  OK(dynlib_sim_run(ref, &o)); /* not armed: the reference run */
  r.armed = 1;
  OK(dynlib_sim_run(sim, &o));
  CHECK(r.armed == 0);
  CHECK(strstr(r.free_msg, "dynlib_sim_free refused") != NULL);
  CHECK(strstr(r.free_msg, "re-entrant") != NULL && strstr(r.free_msg, "stays valid") != NULL);
  CHECK(r.st_reset == DYNLIB_ERR_BUSY);
  CHECK(r.st_assign == DYNLIB_ERR_BUSY);
  CHECK(r.st_run == DYNLIB_ERR_BUSY);
  CHECK(strstr(r.run_msg, "busy") != NULL && strstr(r.run_msg, "re-entrant") != NULL);
  CHECK(r.st_time == DYNLIB_ERR_BUSY);
  CHECK(r.st_snapshot == DYNLIB_ERR_BUSY);
  CHECK(r.st_export == DYNLIB_ERR_BUSY);
  CHECK(r.st_state == DYNLIB_ERR_BUSY);
  CHECK(r.st_other == DYNLIB_OK);
  /* The sim survived, nothing the callback attempted happened, and the run is intact. */
  double t = 0, k = 0;
  OK(dynlib_sim_time(sim, &t));
  CHECK(t == 1.0);
  OK(dynlib_sim_value(sim, "k", &k));
  CHECK(k == 1.0);
  size_t n = 0;
  OK(dynlib_sim_n_samples(sim, &n));
  CHECK(n == 101);
  char *snaps = sim_text(dynlib_sim_list_snapshots_json, sim);
  CHECK(snaps && strstr(snaps, "inner") == NULL);
  free(snaps);
  char *path = path_in_work("reentrant.npz");
  FILE *f = fopen(path, "rb");
  CHECK(f == NULL); /* the export was refused, no file written */
  if (f) fclose(f);
  free(path);
  size_t na = 0, nb = 0;
  double *ya = sim_doubles(dynlib_sim_state, sim, &na);
  double *yb = sim_doubles(dynlib_sim_state, ref, &nb);
  CHECK(na == 1 && nb == 1 && ya && yb && same_bits(ya, yb, 1));
  free(ya), free(yb);
  /* A callback may report the refusal as its failure: the run stops cleanly. */
  r.armed = 1;
  r.fail_with_status = 1;
  o.resume = true;
  o.T = 2.0;
  EXPECT(dynlib_sim_run(sim, &o), DYNLIB_ERR_STEP_FAILED, "returned 15");
  OK(dynlib_sim_time(sim, &t));
  CHECK(t == 1.0);
  dynlib_sim_free(sim); /* not busy any more: freed now */
  EXPECT(dynlib_sim_time(sim, &t), DYNLIB_ERR_BAD_HANDLE, "already freed");
  dynlib_sim_free(ref);
  dynlib_model_free(r.other_model);
  dynlib_model_free(m);
}

/* Item 3: a freed handle is refused without touching freed memory, and never aliases an
 * object created later, however the allocator reuses memory. */
static void test_stale_handles_never_alias(void) {
  DynlibModel *m = load("builtin://ode/expdecay", NULL);
  enum { ROUNDS = 200 };
  DynlibSim *stale[ROUNDS];
  DynlibSim *live = NULL;
  double t = 0;
  for (int i = 0; i < ROUNDS; i++) {
    DynlibSim *s = new_sim(m);
    dynlib_sim_free(s);
    stale[i] = s;
    dynlib_sim_free(live);
    live = new_sim(m); /* often lands in the block the freed sim had */
    for (int j = 0; j <= i; j++) {
      if (stale[j] == live) {
        CHECK(!"a new sim got the handle value of a freed one");
        break;
      }
    }
  }
  DynlibRunOptions o = opts_T(0.5);
  OK(dynlib_sim_run(live, &o));
  for (int i = 0; i < ROUNDS; i++) {
    if (dynlib_sim_time(stale[i], &t) != DYNLIB_ERR_BAD_HANDLE) {
      CHECK(!"a freed sim handle was accepted");
      break;
    }
    dynlib_sim_free(stale[i]); /* must not free `live` */
  }
  EXPECT(dynlib_sim_time(stale[0], &t), DYNLIB_ERR_BAD_HANDLE, "already freed");
  EXPECT(dynlib_sim_run(stale[ROUNDS - 1], &o), DYNLIB_ERR_BAD_HANDLE, "already freed");
  OK(dynlib_sim_time(live, &t));
  CHECK(t == 0.5);
  /* Freed models likewise; their sims live on. */
  DynlibModel *m2 = load("builtin://ode/expdecay", NULL);
  dynlib_model_free(m2);
  DynlibSim *none = NULL;
  EXPECT(dynlib_sim_new(m2, &none), DYNLIB_ERR_BAD_HANDLE, "already freed");
  CHECK(none == NULL);
  size_t n = 0;
  EXPECT(dynlib_model_n_states(m2, &n), DYNLIB_ERR_BAD_HANDLE, "DynlibModel");
  dynlib_model_free(m2); /* double free: ignored */
  /* Garbage of every kind is refused without being read: stack and heap addresses, odd and
   * tiny values, and a handle of the other type. */
  double local = 0;
  void *heap = malloc(64);
  memset(heap, 0xA5, 64);
  DynlibSim *garbage[] = {(DynlibSim *)&local, (DynlibSim *)heap, (DynlibSim *)(uintptr_t)1,
                          (DynlibSim *)(uintptr_t)0x10, (DynlibSim *)(uintptr_t)-8,
                          (DynlibSim *)((uintptr_t)live + 1)};
  for (size_t i = 0; i < sizeof garbage / sizeof garbage[0]; i++) {
    EXPECT(dynlib_sim_time(garbage[i], &t), DYNLIB_ERR_BAD_HANDLE, "not a handle this library");
    dynlib_sim_free(garbage[i]);
  }
  free(heap);
  EXPECT(dynlib_sim_time((DynlibSim *)m, &t), DYNLIB_ERR_BAD_HANDLE,
         "it is a DynlibModel handle");
  EXPECT(dynlib_model_n_states((DynlibModel *)live, &n), DYNLIB_ERR_BAD_HANDLE,
         "it is a DynlibSim handle");
  OK(dynlib_sim_time(live, &t));
  CHECK(t == 0.5);
  dynlib_sim_free(live);
  dynlib_model_free(m);
}

/* Item 4: struct_size must end on a field boundary; a size inside a pointer is refused. */
static void test_struct_size_boundaries(void) {
  DynlibModel *m = load("builtin://ode/expdecay", NULL);
  DynlibSim *sim = new_sim(m);
  DynlibRunOptions o = opts_T(1.0);
  OK(dynlib_sim_run(sim, &o));
  double before = 0, after = 0;
  OK(dynlib_sim_time(sim, &before));
  char full[32];
  snprintf(full, sizeof full, "%zu", sizeof(DynlibRunOptions));
  const size_t bad[] = {0,
                        1,
                        7,
                        sizeof(size_t), /* sizeof(pointer) instead of sizeof(struct) */
                        offsetof(DynlibRunOptions, ic) + 4,
                        offsetof(DynlibRunOptions, tag) + 3,
                        offsetof(DynlibRunOptions, checkpoint_dir) + 1,
                        sizeof(DynlibRunOptions) - 4,
                        sizeof(DynlibRunOptions) + 8,
                        (size_t)-1};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    o = opts_T(5.0);
    o.struct_size = bad[i];
    o.tag = "never-used";
    char needle[64];
    snprintf(needle, sizeof needle, "struct_size is %zu", bad[i]);
    EXPECT(dynlib_sim_run(sim, &o), DYNLIB_ERR_INVALID_ARGUMENT, needle);
    CHECK(message_has("accepted sizes are") && message_has(full) &&
          message_has("DynlibRunOptions"));
  }
  OK(dynlib_sim_time(sim, &after));
  CHECK(after == before); /* nothing ran */
  /* Sizes of shorter (older) layouts work: the end of a field, or sizeof such a prefix. */
  const size_t good[] = {offsetof(DynlibRunOptions, N), offsetof(DynlibRunOptions, tag),
                         offsetof(DynlibRunOptions, checkpoint_dir),
                         offsetof(DynlibRunOptions, record) + sizeof(int32_t),
                         sizeof(DynlibRunOptions)};
  for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
    o = opts_T(1.0);
    o.struct_size = good[i];
    OK(dynlib_sim_run(sim, &o));
  }
  /* The callback-model struct likewise, and a refused definition writes no handle. */
  Reentry r;
  memset(&r, 0, sizeof r);
  DynlibCallbackModel cb = decay_callbacks(&r);
  DynlibModel *out = (DynlibModel *)0x1;
  cb.struct_size = offsetof(DynlibCallbackModel, rhs) + 4;
  EXPECT(dynlib_model_from_callbacks(&cb, &out), DYNLIB_ERR_INVALID_ARGUMENT,
         "not the size of any known layout of DynlibCallbackModel");
  cb.struct_size = offsetof(DynlibCallbackModel, user_data) + 2;
  EXPECT(dynlib_model_from_callbacks(&cb, &out), DYNLIB_ERR_INVALID_ARGUMENT, "accepted sizes");
  cb.struct_size = sizeof(DynlibCallbackModel) + sizeof(void *);
  EXPECT(dynlib_model_from_callbacks(&cb, &out), DYNLIB_ERR_INVALID_ARGUMENT, "newer");
  CHECK(out == (DynlibModel *)0x1);
  /* A layout ending just before rhs is a valid size, but then rhs is missing. */
  cb.struct_size = offsetof(DynlibCallbackModel, rhs);
  EXPECT(dynlib_model_from_callbacks(&cb, &out), DYNLIB_ERR_NULL_POINTER, "rhs");
  cb.struct_size = sizeof cb;
  OK(dynlib_model_from_callbacks(&cb, &out));
  dynlib_model_free(out);
  dynlib_sim_free(sim);
  dynlib_model_free(m);
}

/* The one-argument symbols that programs built against headers from before *_init_sized
 * call (this header maps the names to macros; the parentheses stop that expansion). */
DynlibStatus(dynlib_run_options_init)(DynlibRunOptions *opts);
DynlibStatus(dynlib_callback_model_init)(DynlibCallbackModel *cb);

#define CANARY 0xA5
/* Room for this header's struct and then some, aligned for it; an old caller's struct is the
 * first `size` bytes and everything after them is the canary that must survive. */
typedef union {
  DynlibRunOptions o;
  DynlibCallbackModel cb;
  unsigned char bytes[sizeof(DynlibRunOptions) + sizeof(DynlibCallbackModel) + 64];
} OldCaller;

static void fill_canary(OldCaller *c) { memset(c->bytes, CANARY, sizeof c->bytes); }

/* No byte from `from` on was written. */
static int canary_intact(const OldCaller *c, size_t from) {
  for (size_t i = from; i < sizeof c->bytes; i++)
    if (c->bytes[i] != CANARY) return 0;
  return 1;
}

/* A program compiled against an older header has a shorter struct with its own data right
 * after it: init with its (shorter) sizeof writes exactly that many bytes, and a run with
 * that struct works, reading none of the bytes after it (garbage here). Sizes that are not a
 * layout are refused and write nothing. */
static void test_sized_init_keeps_old_callers_struct(void) {
  DynlibModel *m = load("builtin://ode/expdecay", NULL);
  DynlibSim *sim = new_sim(m);
  OldCaller c;
  const size_t old_sizes[] = {offsetof(DynlibRunOptions, progress), /* before progress */
                              offsetof(DynlibRunOptions, tag),
                              offsetof(DynlibRunOptions, record) + sizeof(int32_t),
                              offsetof(DynlibRunOptions, dt)};
  for (size_t i = 0; i < sizeof old_sizes / sizeof old_sizes[0]; i++) {
    fill_canary(&c);
    OK(dynlib_run_options_init_sized(&c.o, old_sizes[i]));
    CHECK(c.o.struct_size == old_sizes[i] && isnan(c.o.T) && c.o.N == 0);
    CHECK(canary_intact(&c, old_sizes[i]));
    c.o.T = 0.5;
    OK(dynlib_sim_run(sim, &c.o));
    double t = 0;
    OK(dynlib_sim_time(sim, &t));
    CHECK(t == 0.5);
    CHECK(canary_intact(&c, old_sizes[i]));
  }
  const size_t bad[] = {0, sizeof(size_t), offsetof(DynlibRunOptions, ic) + 4,
                        offsetof(DynlibRunOptions, progress) + 2, sizeof(DynlibRunOptions) + 8,
                        (size_t)-1};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    fill_canary(&c);
    char needle[64];
    snprintf(needle, sizeof needle, "struct_size is %zu", bad[i]);
    EXPECT(dynlib_run_options_init_sized(&c.o, bad[i]), DYNLIB_ERR_INVALID_ARGUMENT, needle);
    CHECK(message_has("DynlibRunOptions") && message_has("accepted sizes are"));
    CHECK(canary_intact(&c, 0));
  }
  EXPECT(dynlib_run_options_init_sized(NULL, sizeof(DynlibRunOptions)),
         DYNLIB_ERR_NULL_POINTER, "opts");
  /* The old one-argument symbol writes only the first layout (through checkpoint_keep). */
  const size_t first = offsetof(DynlibRunOptions, checkpoint_keep) + sizeof(uint64_t);
  fill_canary(&c);
  OK((dynlib_run_options_init)(&c.o));
  CHECK(c.o.struct_size == first && isnan(c.o.checkpoint_every_time) && c.o.record == -1);
  CHECK(canary_intact(&c, first));
  /* The macro passes this header's sizeof. */
  fill_canary(&c);
  OK(dynlib_run_options_init(&c.o));
  CHECK(c.o.struct_size == sizeof(DynlibRunOptions) && c.o.progress == NULL);
  CHECK(canary_intact(&c, sizeof(DynlibRunOptions)));

  /* The callback-model struct likewise. */
  const size_t cb_old = offsetof(DynlibCallbackModel, jacobian);
  fill_canary(&c);
  OK(dynlib_callback_model_init_sized(&c.cb, cb_old));
  CHECK(c.cb.struct_size == cb_old && c.cb.kind == DYNLIB_MODEL_ODE && c.cb.dt == 0.01 &&
        c.cb.rhs == NULL);
  CHECK(canary_intact(&c, cb_old));
  fill_canary(&c);
  EXPECT(dynlib_callback_model_init_sized(&c.cb, offsetof(DynlibCallbackModel, rhs) + 4),
         DYNLIB_ERR_INVALID_ARGUMENT, "DynlibCallbackModel");
  CHECK(canary_intact(&c, 0));
  const size_t cb_first = offsetof(DynlibCallbackModel, user_data) + sizeof(void *);
  fill_canary(&c);
  OK((dynlib_callback_model_init)(&c.cb));
  CHECK(c.cb.struct_size == cb_first && c.cb.user_data == NULL);
  CHECK(canary_intact(&c, cb_first));
  fill_canary(&c);
  OK(dynlib_callback_model_init(&c.cb));
  CHECK(c.cb.struct_size == sizeof(DynlibCallbackModel));
  CHECK(canary_intact(&c, sizeof(DynlibCallbackModel)));
  dynlib_sim_free(sim);
  dynlib_model_free(m);
}

/* Item 5: two threads on one sim. Deterministic: the worker's rhs holds the sim busy until
 * the main thread has made its calls, which all get DYNLIB_ERR_BUSY; then a free-for-all
 * race where every status is OK or BUSY and nothing crashes. */
typedef struct {
  pthread_mutex_t mu;
  pthread_cond_t cv;
  int inside, go;
  DynlibSim *sim;
  DynlibStatus worker_status;
} Handshake;

static int wait_flag(Handshake *h, int *flag) {
  struct timespec until;
  clock_gettime(CLOCK_REALTIME, &until);
  until.tv_sec += 30;
  int ok = 1;
  pthread_mutex_lock(&h->mu);
  while (!*flag && ok) ok = pthread_cond_timedwait(&h->cv, &h->mu, &until) == 0;
  pthread_mutex_unlock(&h->mu);
  return *flag;
}

static void set_flag(Handshake *h, int *flag) {
  pthread_mutex_lock(&h->mu);
  *flag = 1;
  pthread_cond_broadcast(&h->cv);
  pthread_mutex_unlock(&h->mu);
}

static int blocking_rhs(double t, const double *y, const double *p, double *out, void *ud) {
  (void)t, (void)p;
  Handshake *h = ud;
  out[0] = -y[0];
  if (!h->inside) {
    set_flag(h, &h->inside);
    if (!wait_flag(h, &h->go)) return 99; /* the main thread never answered */
  }
  return 0;
}

static void *blocking_worker(void *arg) {
  Handshake *h = arg;
  DynlibRunOptions o = opts_T(1.0);
  h->worker_status = dynlib_sim_run(h->sim, &o);
  return NULL;
}

typedef struct {
  DynlibSim *sim;
  int ok, busy, other;
} Racer;

static void *racer_main(void *arg) {
  Racer *r = arg;
  for (int i = 0; i < 300; i++) {
    DynlibRunOptions o = opts_T(2.0);
    DynlibStatus s = dynlib_sim_run(r->sim, &o);
    double t = 0;
    DynlibStatus s2 = dynlib_sim_time(r->sim, &t);
    DynlibStatus both[2] = {s, s2};
    for (int j = 0; j < 2; j++) {
      if (both[j] == DYNLIB_OK) r->ok++;
      else if (both[j] == DYNLIB_ERR_BUSY) r->busy++;
      else r->other++;
    }
  }
  return NULL;
}

static void test_one_sim_two_threads(void) {
  static const char *states[1] = {"x"};
  static const double init[1] = {1.0};
  Handshake h;
  memset(&h, 0, sizeof h);
  pthread_mutex_init(&h.mu, NULL);
  pthread_cond_init(&h.cv, NULL);
  DynlibCallbackModel cb;
  dynlib_callback_model_init(&cb);
  cb.id = "test/blocking";
  cb.n_states = 1;
  cb.state_names = states;
  cb.state_init = init;
  cb.rhs = blocking_rhs;
  cb.user_data = &h;
  DynlibModel *m = NULL;
  OK(dynlib_model_from_callbacks(&cb, &m));
  h.sim = new_sim(m);
  pthread_t worker;
  CHECK(pthread_create(&worker, NULL, blocking_worker, &h) == 0);
  CHECK(wait_flag(&h, &h.inside));
  DynlibRunOptions o = opts_T(3.0);
  EXPECT(dynlib_sim_run(h.sim, &o), DYNLIB_ERR_BUSY, "another thread");
  double t = -1;
  EXPECT(dynlib_sim_time(h.sim, &t), DYNLIB_ERR_BUSY, "busy");
  CHECK(t == -1); /* out-parameter untouched */
  const char *x = "x";
  double v = 5.0;
  EXPECT(dynlib_sim_assign(h.sim, &x, &v, 1, false), DYNLIB_ERR_BUSY, "nothing was changed");
  (void)dynlib_sim_time(NULL, NULL);
  dynlib_sim_free(h.sim); /* refused: the worker is inside */
  CHECK(message_has("dynlib_sim_free refused") && message_has("another thread"));
  set_flag(&h, &h.go);
  pthread_join(worker, NULL);
  CHECK(h.worker_status == DYNLIB_OK);
  OK(dynlib_sim_time(h.sim, &t));
  CHECK(t == 1.0); /* the worker's run, and only it, happened */
  size_t n = 0;
  OK(dynlib_sim_n_samples(h.sim, &n));
  CHECK(n == 101);
  dynlib_sim_free(h.sim);
  EXPECT(dynlib_sim_time(h.sim, &t), DYNLIB_ERR_BAD_HANDLE, "already freed");
  dynlib_model_free(m);
  pthread_cond_destroy(&h.cv);
  pthread_mutex_destroy(&h.mu);

  /* The race: two threads hammer one sim. */
  DynlibModel *iz = load("builtin://ode/izhikevich", NULL);
  DynlibSim *shared = new_sim(iz);
  Racer racers[2] = {{shared, 0, 0, 0}, {shared, 0, 0, 0}};
  pthread_t th[2];
  for (int i = 0; i < 2; i++) CHECK(pthread_create(&th[i], NULL, racer_main, &racers[i]) == 0);
  for (int i = 0; i < 2; i++) pthread_join(th[i], NULL);
  int ok = racers[0].ok + racers[1].ok, busy = racers[0].busy + racers[1].busy;
  CHECK(racers[0].other == 0 && racers[1].other == 0);
  CHECK(ok + busy == 1200 && ok >= 2);
  printf("one sim, two threads: %d calls OK, %d refused with DYNLIB_ERR_BUSY (thread 1: %d/%d, "
         "thread 2: %d/%d)\n",
         ok, busy, racers[0].ok, racers[0].busy, racers[1].ok, racers[1].busy);
  OK(dynlib_sim_time(shared, &t));
  CHECK(t == 2.0);
  dynlib_sim_free(shared);
  dynlib_model_free(iz);
}


/* ------------------------------------------------------------------ progress and cancel */

typedef struct {
  int calls;
  int stop_at; /* stop on this call (1-based); 0 = never */
  uint64_t steps[64];
  double fractions[64];
  double ts[64];
  size_t n_states;
  double y_at[64][3];
  DynlibSim *sim; /* for a re-entrant call */
  DynlibStatus reentrant;
} ProgressLog;

static int progress_cb(double t, uint64_t step, double fraction, const double *y, size_t n,
                       void *user_data) {
  ProgressLog *log = user_data;
  int i = log->calls++;
  if (i < 64) {
    log->steps[i] = step;
    log->fractions[i] = fraction;
    log->ts[i] = t;
    log->n_states = n;
    for (size_t k = 0; k < n && k < 3; k++) log->y_at[i][k] = y[k];
  }
  if (log->sim) {
    double tt;
    log->reentrant = dynlib_sim_time(log->sim, &tt);
  }
  return log->stop_at != 0 && log->calls >= log->stop_at;
}

static void test_progress_and_cancel(void) {
  DynlibModel *m = load("builtin://ode/lorenz", "rk4");
  DynlibSim *whole = new_sim(m), *split = new_sim(m);
  DynlibRunOptions o = opts_T(10.0);
  o.dt = 0.001;
  ProgressLog all = {0};
  all.sim = whole;
  o.progress = progress_cb;
  o.progress_user_data = &all;
  o.progress_every_steps = 1000;
  OK(dynlib_sim_run(whole, &o));
  CHECK(all.calls == 10);
  for (int i = 0; i < all.calls && i < 64; i++) {
    CHECK(all.steps[i] == (uint64_t)(i + 1) * 1000);
    CHECK(all.n_states == 3);
    if (i > 0) CHECK(all.fractions[i] > all.fractions[i - 1]);
  }
  CHECK(all.fractions[9] == 1.0);
  CHECK(all.reentrant == DYNLIB_ERR_BUSY); /* the sim is busy during its callback */

  /* Stop on the third call: DYNLIB_INTERRUPTED, the last error untouched, USER_BREAK. */
  EXPECT(dynlib_sim_value(split, "no-such-name", &o.T), DYNLIB_ERR_UNKNOWN_NAME, "no-such-name");
  o = opts_T(10.0);
  o.dt = 0.001;
  ProgressLog stop = {0};
  stop.stop_at = 3;
  o.progress = progress_cb;
  o.progress_user_data = &stop;
  o.progress_every_steps = 1000;
  CHECK(dynlib_sim_run(split, &o) == DYNLIB_INTERRUPTED);
  CHECK(message_has("no-such-name"));
  CHECK(stop.calls == 3);
  uint64_t steps = 0;
  OK(dynlib_sim_step_count(split, &steps));
  CHECK(steps == 3000);
  char *summary = sim_text(dynlib_sim_summary_json, split);
  CHECK(summary && strstr(summary, "USER_BREAK"));
  free(summary);
  size_t n_partial = 0;
  double *partial = series(split, "x", &n_partial);
  CHECK(n_partial == 3001);
  free(partial);

  /* Resume (with an observer this time): bit-identical to the uninterrupted run. */
  o = opts_T(10.0);
  o.resume = true;
  ProgressLog seen = {0};
  o.observer = progress_cb;
  o.observer_user_data = &seen;
  o.observer_every_steps = 2000;
  OK(dynlib_sim_run(split, &o));
  CHECK(seen.calls == 4); /* steps 4000, 6000, 8000, 10000 */
  size_t na = 0, nb = 0;
  double *xa = series(whole, "x", &na), *xb = series(split, "x", &nb);
  CHECK(xa && xb && na == nb && na == 10001 && same_bits(xa, xb, na));
  for (int i = 0; i < seen.calls && i < 64; i++) {
    CHECK(seen.steps[i] == (uint64_t)(i + 2) * 2000);
    CHECK(xa && seen.steps[i] < na && seen.y_at[i][0] == xa[seen.steps[i]]);
  }
  free(xa);
  free(xb);
  size_t ns = 0;
  double *ya = sim_doubles(dynlib_sim_state, whole, &ns);
  double *yb = sim_doubles(dynlib_sim_state, split, &ns);
  CHECK(ya && yb && same_bits(ya, yb, ns));
  free(ya);
  free(yb);

  /* An observer stops the run just as a progress callback does. */
  o = opts_T(12.0);
  o.resume = true;
  ProgressLog obs_stop = {0};
  obs_stop.stop_at = 1;
  o.observer = progress_cb;
  o.observer_user_data = &obs_stop;
  o.observer_every_steps = 500;
  CHECK(dynlib_sim_run(split, &o) == DYNLIB_INTERRUPTED);
  OK(dynlib_sim_step_count(split, &steps));
  CHECK(steps == 10500);

  /* Bad schedules are refused and change nothing. */
  double t_before = 0, t_after = 0;
  OK(dynlib_sim_time(split, &t_before));
  o = opts_T(11.0);
  o.resume = true;
  o.observer = progress_cb;
  o.observer_user_data = &seen;
  EXPECT(dynlib_sim_run(split, &o), DYNLIB_ERR_INVALID_ARGUMENT, "observer_every_steps");
  o = opts_T(11.0);
  o.resume = true;
  o.progress = progress_cb;
  o.progress_user_data = &seen;
  o.progress_every_steps = 10;
  o.progress_every_seconds = 0.5;
  EXPECT(dynlib_sim_run(split, &o), DYNLIB_ERR_INVALID_ARGUMENT, "not both");
  o.progress_every_steps = 0;
  o.progress_every_seconds = -1.0;
  EXPECT(dynlib_sim_run(split, &o), DYNLIB_ERR_INVALID_ARGUMENT, "seconds");
  o = opts_T(11.0);
  o.resume = true;
  o.progress_every_steps = 10; /* without a callback */
  EXPECT(dynlib_sim_run(split, &o), DYNLIB_ERR_INVALID_ARGUMENT, "progress is NULL");
  OK(dynlib_sim_time(split, &t_after));
  CHECK(t_after == t_before);

  /* A caller built against the layout before the progress fields: they are not read. */
  o = opts_T(11.0);
  o.resume = true;
  ProgressLog never = {0};
  o.progress = progress_cb;
  o.progress_user_data = &never;
  o.progress_every_steps = 1;
  o.struct_size = offsetof(DynlibRunOptions, progress);
  OK(dynlib_sim_run(split, &o));
  CHECK(never.calls == 0);
  dynlib_sim_free(whole);
  dynlib_sim_free(split);
  dynlib_model_free(m);
}

/* Zero-copy views: the library's own arrays, the same bits as the copies; a failed call
   writes nothing; a run (even a failed resume) is what ends a view's life. */
static void test_results_views(void) {
  DynlibModel *m = load("builtin://ode/lorenz", "rk4");
  DynlibSim *sim = NULL;
  OK(dynlib_sim_new(m, &sim));
  const double *view = (const double *)&checks; /* a sentinel: failed calls must keep it */
  size_t n = 12345;
  EXPECT(dynlib_sim_results_t_view(sim, &view, &n), DYNLIB_ERR_NO_RESULTS, "no results");
  CHECK(view == (const double *)&checks && n == 12345);
  DynlibRunOptions o = opts_T(2.0);
  o.dt = 0.01;
  OK(dynlib_sim_run(sim, &o));
  size_t nc = 0;
  double *t = sim_doubles(dynlib_sim_results_t, sim, &nc);
  double *x = series(sim, "x", &nc);
  OK(dynlib_sim_results_t_view(sim, &view, &n));
  CHECK(n == nc && n == 201 && same_bits(view, t, n));
  const double *xv = NULL;
  OK(dynlib_sim_results_var_view(sim, "x", &xv, &n));
  CHECK(n == nc && same_bits(xv, x, n));
  /* Queries keep the view valid; it is the recording itself, not a copy. */
  const double *again = NULL;
  OK(dynlib_sim_results_var_view(sim, "x", &again, &n));
  CHECK(again == xv);
  double y[3];
  OK(dynlib_sim_state(sim, y, 3, &n));
  CHECK(y[0] == xv[200]);
  /* Bad arguments write nothing. */
  const double *keep = (const double *)&checks;
  n = 777;
  EXPECT(dynlib_sim_results_var_view(sim, "nope", &keep, &n), DYNLIB_ERR_UNKNOWN_NAME, "nope");
  CHECK(keep == (const double *)&checks && n == 777);
  EXPECT(dynlib_sim_results_var_view(sim, "x", &keep, NULL), DYNLIB_ERR_NULL_POINTER, "n");
  CHECK(keep == (const double *)&checks);
  EXPECT(dynlib_sim_results_t_view(sim, NULL, &n), DYNLIB_ERR_NULL_POINTER, "data");
  CHECK(n == 777);
  EXPECT(dynlib_sim_results_var_view(sim, NULL, &keep, &n), DYNLIB_ERR_NULL_POINTER, "name");
  /* A run without recording has an empty recording: NULL, 0. */
  o = opts_T(1.0);
  o.record = 0;
  OK(dynlib_sim_run(sim, &o));
  OK(dynlib_sim_results_t_view(sim, &keep, &n));
  CHECK(keep == NULL && n == 0);
  n = 99;
  OK(dynlib_sim_n_samples(sim, &n));
  CHECK(n == 0);
  /* assign with clear_history drops the recording. */
  const char *names[] = {"x"};
  double vals[] = {2.0};
  OK(dynlib_sim_assign(sim, names, vals, 1, true));
  keep = (const double *)&checks;
  EXPECT(dynlib_sim_results_t_view(sim, &keep, &n), DYNLIB_ERR_NO_RESULTS, "no results");
  CHECK(keep == (const double *)&checks);
  free(t);
  free(x);
  dynlib_sim_free(sim);
  dynlib_model_free(m);
}

int main(int argc, char **argv) {
  if (argc > 1) work_dir = argv[1];
  test_version_and_status_names();
  test_model_loading_and_errors();
  test_model_introspection_and_buffer_protocol();
  test_model_validate_and_mods();
  test_seed_typical_pattern();
  test_exact_resume();
  test_run_options();
  test_snapshots_assign_and_segments();
  test_snapshot_files();
  test_presets_config_and_stepper_config();
  test_callback_models();
  test_callback_jacobian();
  test_remaining_error_codes_and_handles();
  test_threads();
  test_thread_local_errors();
  test_reentrant_calls_from_callbacks();
  test_stale_handles_never_alias();
  test_struct_size_boundaries();
  test_sized_init_keeps_old_callers_struct();
  test_one_sim_two_threads();
  test_progress_and_cancel();
  test_results_views();
  printf("C API suite: %d checks, %d failures\n", checks, failures);
  return failures == 0 ? 0 : 1;
}
