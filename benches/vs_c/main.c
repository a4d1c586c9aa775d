#define _POSIX_C_SOURCE 199309L
/* dynlib through its C ABI against the same loops hand-written in C (-O2 and -O3), side by
 * side in one process: every repetition runs each variant once (interleaved), and the best
 * of N repetitions is reported. Built and run by run.sh.
 *
 *   bench [reps]                         the table
 *   bench --one CASE STEPS lib|o2|o3 [record|view]   one run (for valgrind --tool=callgrind)
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "dynlib.h"

#define DECLARE(P)                                                                   \
    void P##rk4_lorenz(long n, double dt, double *y, double *rec_t, double **rec);     \
    void P##rk4_izhikevich(long n, double dt, double *y, double *rec_t, double **rec); \
    void P##logistic(long n, double *x, double *rec_t, double **rec);                  \
    long P##rk45_lorenz(double t_end, double *y, double *rec_t, double **rec, long cap);
DECLARE(o2_)
DECLARE(o3_)

typedef struct {
    const char *name;
    const char *model; /* NULL: the C callback model below */
    const char *stepper;
    int is_map;
    double dt, t_end; /* ODE; maps: t_end = iterations */
    int n;
    double y0[3];
} Case;

static const Case CASES[] = {
    {"rk4 lorenz", "builtin://ode/lorenz", "rk4", 0, 0.001, 1000.0, 3, {1, 1, 1}},
    {"rk4 izhikevich+reset", "builtin://ode/izhikevich", "rk4", 0, 0.01, 10000.0, 2, {-65, -13}},
    {"rk4 lorenz C callback", NULL, "rk4", 0, 0.001, 1000.0, 3, {1, 1, 1}},
    {"rk45 lorenz", "builtin://ode/lorenz", "rk45", 0, 0.001, 2000.0, 3, {1, 1, 1}},
    {"logistic map", "builtin://map/logistic", "map", 1, 1.0, 1e6, 1, {0.1}},
};
#define N_CASES (sizeof CASES / sizeof CASES[0])

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

static void check(DynlibStatus s, const char *what) {
    if (s != DYNLIB_OK) {
        fprintf(stderr, "%s: %s: %s\n", what, dynlib_status_name(s), dynlib_last_error());
        exit(1);
    }
}

typedef struct {
    DynlibModel *model;
    DynlibSim *sim;
    const char *vars[3];
} Lib;

/* Lorenz as a host C callback, what a lab's existing C model becomes. */
static int lorenz_cb(double t, const double *y, const double *p, double *f, void *ud) {
    (void)t;
    (void)ud;
    f[0] = p[0] * (y[1] - y[0]);
    f[1] = y[0] * (p[1] - y[2]) - y[1];
    f[2] = y[0] * y[1] - p[2] * y[2];
    return 0;
}

static DynlibModel *callback_lorenz(void) {
    static const char *states[] = {"x", "y", "z"}, *params[] = {"sigma", "rho", "beta"};
    static const double y0[] = {1, 1, 1}, p0[] = {10.0, 28.0, 8.0 / 3.0};
    DynlibCallbackModel cb;
    dynlib_callback_model_init(&cb);
    cb.id = "bench/lorenz-c";
    cb.version = "1";
    cb.n_states = 3;
    cb.state_names = states;
    cb.state_init = y0;
    cb.n_params = 3;
    cb.param_names = params;
    cb.param_init = p0;
    cb.dt = 0.001;
    cb.stepper = "rk4";
    cb.rhs = lorenz_cb;
    DynlibModel *m;
    check(dynlib_model_from_callbacks(&cb, &m), "callback model");
    return m;
}

static Lib lib_open(const Case *c) {
    Lib l;
    if (c->model)
        check(dynlib_model_load(c->model, c->stepper, &l.model), "load");
    else
        l.model = callback_lorenz();
    check(dynlib_sim_new(l.model, &l.sim), "sim");
    for (int m = 0; m < c->n; m++) {
        static char names[3][64];
        size_t need;
        check(dynlib_model_state_name(l.model, m, names[m], sizeof names[m], &need), "name");
        l.vars[m] = names[m];
    }
    return l;
}

/* Buffers for a recording of up to `cap` samples. */
typedef struct {
    double *t;
    double *cols[3];
    long cap;
    const double *view_t, *view_cols[3];
} Rec;

static Rec rec_alloc(long cap) {
    Rec r = {malloc(cap * sizeof(double)), {0}, cap, NULL, {0}};
    for (int m = 0; m < 3; m++) r.cols[m] = malloc(cap * sizeof(double));
    return r;
}

/* How a recording run hands its samples to the caller. */
enum { COPY, VIEW };

/* One library run; with `rec`, the results are copied into the caller's buffers (COPY) or
 * borrowed in place through the zero-copy views (VIEW: the pointers land in `rec->view_*`). */
static void lib_run(const Case *c, Lib *l, Rec *rec, int how, double *y_out) {
    DynlibRunOptions o;
    dynlib_run_options_init(&o);
    o.ic = c->y0;
    o.n_ic = c->n;
    o.dt = c->dt;
    if (c->is_map)
        o.N = (uint64_t)c->t_end;
    else
        o.T = c->t_end;
    o.record = rec ? 1 : 0;
    o.max_steps = 100000000;
    check(dynlib_sim_run(l->sim, &o), c->name);
    if (rec && how == VIEW) {
        size_t n;
        check(dynlib_sim_results_t_view(l->sim, &rec->view_t, &n), "results_t_view");
        for (int m = 0; m < c->n; m++)
            check(dynlib_sim_results_var_view(l->sim, l->vars[m], &rec->view_cols[m], &n),
                  "results_var_view");
    } else if (rec) {
        size_t need;
        check(dynlib_sim_results_t(l->sim, rec->t, rec->cap, &need), "results_t");
        for (int m = 0; m < c->n; m++)
            check(dynlib_sim_results_var(l->sim, l->vars[m], rec->cols[m], rec->cap, &need),
                  "results_var");
    }
    size_t need;
    check(dynlib_sim_state(l->sim, y_out, 3, &need), "state");
}

static long hand_run(const Case *c, int o3, Rec *rec, double *y) {
    memcpy(y, c->y0, sizeof c->y0);
    double *t = rec ? rec->t : NULL;
    double **cols = rec ? rec->cols : NULL;
    long n = (long)(c->t_end / c->dt + 0.5);
    if (!strcmp(c->stepper, "rk45"))
        return (o3 ? o3_rk45_lorenz : o2_rk45_lorenz)(c->t_end, y, t, cols, rec ? rec->cap : 1L << 40);
    if (c->is_map)
        (o3 ? o3_logistic : o2_logistic)(n, y, t, cols);
    else if (c->n == 3)
        (o3 ? o3_rk4_lorenz : o2_rk4_lorenz)(n, c->dt, y, t, cols);
    else
        (o3 ? o3_rk4_izhikevich : o2_rk4_izhikevich)(n, c->dt, y, t, cols);
    return n;
}

int main(int argc, char **argv) {
    if ((argc == 5 || argc == 6) && !strcmp(argv[1], "--one")) {
        for (size_t i = 0; i < N_CASES; i++) {
            Case c = CASES[i];
            if (strcmp(c.name, argv[2])) continue;
            double steps = atof(argv[3]), y[3];
            c.t_end = c.is_map ? steps : steps * c.dt;
            Rec r = rec_alloc((long)steps + 16);
            Rec *rec = argc == 6 ? &r : NULL;
            if (!strcmp(argv[4], "lib")) {
                Lib l = lib_open(&c);
                lib_run(&c, &l, rec, argc == 6 && !strcmp(argv[5], "view") ? VIEW : COPY, y);
            } else {
                hand_run(&c, !strcmp(argv[4], "o3"), rec, y);
            }
            printf("%s %s: %.17g\n", c.name, argv[4], y[0]);
            return 0;
        }
        fprintf(stderr, "unknown case '%s'\n", argv[2]);
        return 2;
    }
    int reps = argc > 1 ? atoi(argv[1]) : 7;
    printf("dynlib %s through the C ABI vs hand-written C; best of %d interleaved runs\n\n",
           dynlib_version(), reps);
    printf("%-22s %-6s %10s %10s %10s %9s %9s %9s\n", "case", "record", "steps", "lib ms",
           "C-O2 ms", "C-O3 ms", "vs -O2", "vs -O3");
    for (size_t i = 0; i < N_CASES; i++) {
        const Case *c = &CASES[i];
        Lib l = lib_open(c);
        /* record 0: off; 1: every step, copied out; 2: every step, read through views. */
        for (int record = 0; record <= 2; record++) {
            long cap = (long)(c->t_end / c->dt) + 16;
            if (!strcmp(c->stepper, "rk45")) cap = 4000000;
            Rec r = rec_alloc(cap);
            Rec *rec = record ? &r : NULL;
            double best[3] = {1e30, 1e30, 1e30}, y_lib[3], y_c[3];
            long steps = 0;
            for (int k = 0; k < reps; k++) {
                double t0 = now();
                lib_run(c, &l, rec, record == 2 ? VIEW : COPY, y_lib);
                double t1 = now();
                steps = hand_run(c, 0, rec, y_c);
                double t2 = now();
                hand_run(c, 1, rec, y_c);
                double t3 = now();
                double d[3] = {t1 - t0, t2 - t1, t3 - t2};
                for (int j = 0; j < 3; j++)
                    if (d[j] < best[j]) best[j] = d[j];
            }
            printf("%-22s %-6s %10ld %10.2f %10.2f %10.2f %8.2fx %8.2fx\n", c->name,
                   (const char *[]){"off", "copy", "view"}[record], steps, 1e3 * best[0], 1e3 * best[1],
                   1e3 * best[2], best[1] / best[0], best[2] / best[0]);
            for (int m = 0; m < 3; m++) {
                free(r.cols[m]);
            }
            free(r.t);
        }
        dynlib_sim_free(l.sim);
        dynlib_model_free(l.model);
    }
    printf("\nvs -O2 / vs -O3: the hand-written loop's time divided by the library's "
           "(above 1 = the library is faster).\n");
    return 0;
}
