/*
 * dynlib_mex.c — the MEX gateway of the dynlib MATLAB / GNU Octave binding.
 *
 * One MEX function dispatching on a command string:
 *
 *     out = dynlib_mex('command', args...)
 *
 * The classes dynlib.Model and dynlib.Sim (+dynlib/) are the user-facing API; this file is
 * a thin layer over include/dynlib.h using only the documented MEX API.
 *
 * - Handles travel to MATLAB as uint64 scalars: identifiers, never reused, that the gateway
 *   maps to the library's pointers. Any other value is refused (dynlib:badHandle), so a
 *   stale or made-up number never reaches the library, and a stale identifier never
 *   reaches a newer object that happens to live at the same address. Clearing the MEX
 *   (clear mex, clear all, exit) frees every handle still in the table (mexAtExit).
 * - A failing dynlib call becomes mexErrMsgIdAndTxt with an identifier derived from its
 *   status (DYNLIB_ERR_INCOMPATIBLE -> dynlib:incompatible, ...) and dynlib_last_error()'s
 *   text. Temporary memory is released before an error is raised, and every handle the
 *   gateway creates is either returned (and registered) or freed: everything that can fail
 *   happens before a handle is created.
 *
 * Build:  mkoctfile --mex -DMX_HAS_INTERLEAVED_COMPLEX=1 dynlib_mex.c -I include -L lib -ldynlib
 *         mex -R2018a dynlib_mex.c -I include -L lib -ldynlib       (MATLAB)
 * or build_mex.m, which does either.
 */

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "mex.h"
#include "dynlib.h"

#if defined(MX_HAS_INTERLEAVED_COMPLEX) && MX_HAS_INTERLEAVED_COMPLEX
#define DBL_PTR(a) mxGetDoubles(a)
#define U64_PTR(a) mxGetUint64s(a)
#define U8_PTR(a) mxGetUint8s(a)
#else
#define DBL_PTR(a) mxGetPr(a)
#define U64_PTR(a) ((uint64_t *)mxGetData(a))
#define U8_PTR(a) ((uint8_t *)mxGetData(a))
#endif

/* ------------------------------------------------------------------------------------------ */
/* Per-call temporaries: released on return and before any error is raised.                  */

#define MAX_TEMPS 256

static struct {
    void *ptr;
    int is_array; /* 1: mxArray (mxDestroyArray), 0: mxMalloc memory (mxFree) */
} g_temps[MAX_TEMPS];
static int g_n_temps = 0;

static void release_temps(void)
{
    while (g_n_temps > 0) {
        g_n_temps--;
        if (g_temps[g_n_temps].ptr != NULL) {
            if (g_temps[g_n_temps].is_array) {
                mxDestroyArray((mxArray *)g_temps[g_n_temps].ptr);
            } else {
                mxFree(g_temps[g_n_temps].ptr);
            }
        }
    }
}

/* Raises a MATLAB error after releasing the temporaries. `text` is copied first, so it may
 * point into a temporary. */
static void fail(const char *id, const char *text)
{
    char message[4096];
    snprintf(message, sizeof message, "%s", text);
    release_temps();
    mexErrMsgIdAndTxt(id, "%s", message);
}

static void failf(const char *id, const char *format, const char *arg)
{
    char message[1024];
    snprintf(message, sizeof message, format, arg);
    fail(id, message);
}

static void keep_temp(void *ptr, int is_array)
{
    if (g_n_temps == MAX_TEMPS) {
        if (is_array) {
            mxDestroyArray((mxArray *)ptr);
        } else {
            mxFree(ptr);
        }
        fail("dynlib:internal", "dynlib_mex: too many temporaries in one call");
    }
    g_temps[g_n_temps].ptr = ptr;
    g_temps[g_n_temps].is_array = is_array;
    g_n_temps++;
}

/* Forgets a temporary without freeing it (it is being returned to MATLAB). */
static void adopt_temp(void *ptr)
{
    int i;
    for (i = 0; i < g_n_temps; i++) {
        if (g_temps[i].ptr == ptr) {
            g_temps[i].ptr = NULL;
        }
    }
}

static void *temp_alloc(size_t n)
{
    void *p = mxMalloc(n == 0 ? 1 : n);
    keep_temp(p, 0);
    return p;
}

static mxArray *temp_array(mxArray *a)
{
    keep_temp(a, 1);
    return a;
}

/* ------------------------------------------------------------------------------------------ */
/* Status codes -> MATLAB error identifiers.                                                  */

static const char *error_id(DynlibStatus status)
{
    switch (status) {
    case DYNLIB_ERR_NULL_POINTER: return "dynlib:nullPointer";
    case DYNLIB_ERR_INVALID_ARGUMENT: return "dynlib:invalidArgument";
    case DYNLIB_ERR_MODEL: return "dynlib:model";
    case DYNLIB_ERR_UNKNOWN_NAME: return "dynlib:unknownName";
    case DYNLIB_ERR_DUPLICATE_NAME: return "dynlib:duplicateName";
    case DYNLIB_ERR_BUFFER_TOO_SMALL: return "dynlib:bufferTooSmall";
    case DYNLIB_ERR_INCOMPATIBLE: return "dynlib:incompatible";
    case DYNLIB_ERR_NO_RESULTS: return "dynlib:noResults";
    case DYNLIB_ERR_IO: return "dynlib:io";
    case DYNLIB_ERR_CORRUPT_SNAPSHOT: return "dynlib:corruptSnapshot";
    case DYNLIB_ERR_STEP_FAILED: return "dynlib:stepFailed";
    case DYNLIB_ERR_NON_FINITE: return "dynlib:nonFinite";
    case DYNLIB_ERR_BAD_HANDLE: return "dynlib:badHandle";
    case DYNLIB_ERR_INTERNAL: return "dynlib:internal";
    case DYNLIB_ERR_BUSY: return "dynlib:busy";
    default: return "dynlib:unknownStatus";
    }
}

/* Raises the error of a failed call (status != DYNLIB_OK) with the library's message. */
static void check(DynlibStatus status)
{
    const char *text;
    if (status == DYNLIB_OK) {
        return;
    }
    text = dynlib_last_error();
    if (text == NULL || text[0] == '\0') {
        text = dynlib_status_name(status);
    }
    fail(error_id(status), text);
}

/* ------------------------------------------------------------------------------------------ */
/* Live handles created by this gateway.                                                      */

enum { KIND_MODEL = 1, KIND_SIM = 2, KIND_ENSEMBLE = 3 };

typedef struct {
    uint64_t id; /* what MATLAB holds */
    void *ptr;   /* what the library returned */
    int kind;
} LiveHandle;

static LiveHandle *g_live = NULL;
static size_t g_n_live = 0;
static size_t g_cap_live = 0;
static int g_at_exit_registered = 0;
/* Identifiers are (load tag << 32) | counter: the counter never repeats within one load of
 * the MEX, and the tag differs from one load to the next (clear mex reloads it). */
static uint64_t g_load_tag = 0;
static uint64_t g_counter = 0;

static uint64_t new_handle_id(void)
{
    if (g_load_tag == 0 || g_counter == 0xffffffffu) {
        uint64_t h = (uint64_t)time(NULL) ^ ((uint64_t)clock() << 20) ^
                     (uint64_t)(uintptr_t)&g_counter ^ (g_load_tag * 0x9e3779b97f4a7c15u);
        h ^= h >> 33;
        h *= 0xff51afd7ed558ccdu;
        h ^= h >> 33;
        g_load_tag = (h & 0x7fffffffu) | 1u;
        g_counter = 0;
    }
    g_counter++;
    return (g_load_tag << 32) | g_counter;
}

static void free_handle(void *ptr, int kind)
{
    if (kind == KIND_MODEL) {
        dynlib_model_free((DynlibModel *)ptr);
    } else if (kind == KIND_ENSEMBLE) {
        dynlib_ensemble_free((DynlibEnsemble *)ptr);
    } else {
        dynlib_sim_free((DynlibSim *)ptr);
    }
}

/* mexAtExit: the MEX is being cleared or the host exits; free what is still alive. */
static void free_all_handles(void)
{
    size_t i;
    for (i = 0; i < g_n_live; i++) {
        free_handle(g_live[i].ptr, g_live[i].kind);
    }
    free(g_live);
    g_live = NULL;
    g_n_live = 0;
    g_cap_live = 0;
    g_at_exit_registered = 0;
}

/* Makes room for one more handle; called before a handle is created, so that registering it
 * afterwards cannot fail. */
static void reserve_handle_slot(void)
{
    if (g_n_live == g_cap_live) {
        size_t cap = g_cap_live == 0 ? 16 : 2 * g_cap_live;
        LiveHandle *grown = (LiveHandle *)realloc(g_live, cap * sizeof *grown);
        if (grown == NULL) {
            fail("dynlib:outOfMemory", "dynlib_mex: cannot grow the handle table");
        }
        g_live = grown;
        g_cap_live = cap;
    }
}

/* Registers a new handle and returns its identifier; cannot fail, since
 * reserve_handle_slot() was called before the handle was created. */
static uint64_t register_handle(void *ptr, int kind)
{
    uint64_t id = new_handle_id();
    g_live[g_n_live].id = id;
    g_live[g_n_live].ptr = ptr;
    g_live[g_n_live].kind = kind;
    g_n_live++;
    return id;
}

static long find_handle(uint64_t id, int kind)
{
    size_t i;
    for (i = 0; i < g_n_live; i++) {
        if (g_live[i].id == id && g_live[i].kind == kind) {
            return (long)i;
        }
    }
    return -1;
}

static void forget_handle(size_t index)
{
    g_live[index] = g_live[g_n_live - 1];
    g_n_live--;
}

/* ------------------------------------------------------------------------------------------ */
/* Arguments.                                                                                 */

static void need_args(int nrhs, int n, const char *usage)
{
    if (nrhs != n) {
        failf("dynlib:invalidArgument", "dynlib_mex: usage: %s", usage);
    }
}

static uint64_t handle_value(const mxArray *a, const char *what)
{
    if (!mxIsUint64(a) || mxGetNumberOfElements(a) != 1 || mxIsComplex(a)) {
        failf("dynlib:badHandle", "%s handle must be a uint64 scalar", what);
    }
    return U64_PTR(a)[0];
}

static void *live_handle(const mxArray *a, int kind)
{
    const char *what = kind == KIND_MODEL      ? "dynlib.Model"
                       : kind == KIND_ENSEMBLE ? "dynlib.Ensemble"
                                               : "dynlib.Sim";
    long i = find_handle(handle_value(a, what), kind);
    if (i < 0) {
        failf("dynlib:badHandle",
              "not a live %s handle (already deleted, cleared with the MEX, or not a handle)",
              what);
    }
    return g_live[i].ptr;
}

static DynlibModel *model_arg(const mxArray *a)
{
    return (DynlibModel *)live_handle(a, KIND_MODEL);
}

static DynlibSim *sim_arg(const mxArray *a)
{
    return (DynlibSim *)live_handle(a, KIND_SIM);
}

/* A char array as a NUL-terminated string (a temporary). */
static char *string_arg(const mxArray *a, const char *what)
{
    char *s;
    if (!mxIsChar(a) || (mxGetM(a) > 1 && mxGetNumberOfElements(a) > 0)) {
        failf("dynlib:invalidArgument", "%s must be a character vector", what);
    }
    s = mxArrayToString(a);
    if (s == NULL) {
        failf("dynlib:invalidArgument", "%s could not be converted to a string", what);
    }
    keep_temp(s, 0);
    return s;
}

/* Like string_arg, but [] (any empty non-char value) and '' give NULL. */
static char *opt_string_arg(const mxArray *a, const char *what)
{
    if (mxIsEmpty(a)) {
        return NULL;
    }
    return string_arg(a, what);
}

static double scalar_arg(const mxArray *a, const char *what)
{
    if (!(mxIsNumeric(a) || mxIsLogical(a)) || mxIsComplex(a) ||
        mxGetNumberOfElements(a) != 1) {
        failf("dynlib:invalidArgument", "%s must be a real numeric scalar", what);
    }
    return mxGetScalar(a);
}

static int bool_arg(const mxArray *a, const char *what)
{
    double x = scalar_arg(a, what);
    if (x != 0.0 && x != 1.0) {
        failf("dynlib:invalidArgument", "%s must be true or false", what);
    }
    return x != 0.0;
}

static uint64_t count_arg(const mxArray *a, const char *what)
{
    double x = scalar_arg(a, what);
    if (!(x >= 0.0) || x != floor(x) || x >= 18446744073709551616.0) {
        failf("dynlib:invalidArgument", "%s must be a non-negative integer", what);
    }
    return (uint64_t)x;
}

/* A real double array, any shape; returns its data and element count. */
static const double *doubles_arg(const mxArray *a, size_t *n, const char *what)
{
    if (!mxIsDouble(a) || mxIsComplex(a) || mxIsSparse(a)) {
        failf("dynlib:invalidArgument", "%s must be a real double array", what);
    }
    *n = mxGetNumberOfElements(a);
    return *n == 0 ? NULL : DBL_PTR(a);
}

/* A cell array of character vectors (or one character vector) as a temporary char* array. */
static const char **strings_arg(const mxArray *a, size_t *n, const char *what)
{
    const char **out;
    size_t i;
    if (mxIsChar(a)) {
        out = (const char **)temp_alloc(sizeof *out);
        out[0] = string_arg(a, what);
        *n = 1;
        return out;
    }
    if (!mxIsCell(a)) {
        failf("dynlib:invalidArgument", "%s must be a cell array of character vectors", what);
    }
    *n = mxGetNumberOfElements(a);
    out = (const char **)temp_alloc(*n * sizeof *out);
    for (i = 0; i < *n; i++) {
        const mxArray *c = mxGetCell(a, i);
        if (c == NULL || !mxIsChar(c)) {
            failf("dynlib:invalidArgument", "%s must be a cell array of character vectors",
                  what);
        }
        out[i] = string_arg(c, what);
    }
    return out;
}

/* ------------------------------------------------------------------------------------------ */
/* Outputs.                                                                                   */

static mxArray *handle_out(void)
{
    return temp_array(mxCreateNumericMatrix(1, 1, mxUINT64_CLASS, mxREAL));
}

static mxArray *scalar_out(double x)
{
    return mxCreateDoubleScalar(x);
}

/* Output-buffer protocol for strings: asks the size, then fills a temporary buffer. */
typedef DynlibStatus (*StringGetter)(void *ctx, char *buf, size_t cap, size_t *needed);

static char *get_string(StringGetter get, void *ctx)
{
    size_t needed = 0;
    char *buf;
    check(get(ctx, NULL, 0, &needed));
    buf = (char *)temp_alloc(needed + 1);
    check(get(ctx, buf, needed + 1, &needed));
    return buf;
}

typedef struct {
    DynlibModel *model;
    DynlibSim *sim;
    size_t index;
    const char *text;
    const uint8_t *bytes;
    size_t len;
    int which;
} Ctx;

/* ------------------------------------------------------------------------------------------ */
/* Commands.                                                                                  */

typedef void (*Command)(int nlhs, mxArray *plhs[], int nrhs, const mxArray *prhs[]);

static void cmd_version(int nlhs, mxArray *plhs[], int nrhs, const mxArray *prhs[])
{
    (void)nlhs;
    (void)prhs;
    need_args(nrhs, 0, "dynlib_mex('version')");
    plhs[0] = mxCreateString(dynlib_version());
}

static void cmd_live_handles(int nlhs, mxArray *plhs[], int nrhs, const mxArray *prhs[])
{
    (void)nlhs;
    (void)prhs;
    need_args(nrhs, 0, "dynlib_mex('live_handles')");
    plhs[0] = scalar_out((double)g_n_live);
}

static void cmd_model_load(int nlhs, mxArray *plhs[], int nrhs, const mxArray *prhs[])
{
    const char *source, *stepper = NULL;
    DynlibModel *model = NULL;
    mxArray *out;
    (void)nlhs;
    if (nrhs != 1 && nrhs != 2) {
        need_args(nrhs, 2, "h = dynlib_mex('model_load', source, stepper_or_empty)");
    }
    source = string_arg(prhs[0], "source");
    if (nrhs == 2) {
        stepper = opt_string_arg(prhs[1], "stepper");
    }
    out = handle_out();
    reserve_handle_slot();
    check(dynlib_model_load(source, stepper, &model));
    /* nothing below can fail */
    U64_PTR(out)[0] = register_handle(model, KIND_MODEL);
    adopt_temp(out);
    plhs[0] = out;
}

static void free_command(const mxArray *a, int kind)
{
    long i = find_handle(handle_value(a, kind == KIND_MODEL      ? "dynlib.Model"
                                         : kind == KIND_ENSEMBLE ? "dynlib.Ensemble"
                                                                 : "dynlib.Sim"),
                         kind);
    if (i >= 0) { /* unknown handles are ignored, like *_free(NULL) */
        void *ptr = g_live[i].ptr;
        forget_handle((size_t)i);
        free_handle(ptr, kind);
    }
}

static void cmd_model_free(int nlhs, mxArray *plhs[], int nrhs, const mxArray *prhs[])
{
    (void)nlhs;
    (void)plhs;
    need_args(nrhs, 1, "dynlib_mex('model_free', h)");
    free_command(prhs[0], KIND_MODEL);
}

static DynlibStatus model_name_getter(void *ctx, char *buf, size_t cap, size_t *needed)
{
    Ctx *c = (Ctx *)ctx;
    switch (c->which) {
    case 0: return dynlib_model_state_name(c->model, c->index, buf, cap, needed);
    case 1: return dynlib_model_param_name(c->model, c->index, buf, cap, needed);
    default: return dynlib_model_aux_name(c->model, c->index, buf, cap, needed);
    }
}

static void model_names(mxArray *plhs[], int nrhs, const mxArray *prhs[], int which)
{
    Ctx c;
    size_t n = 0, i;
    mxArray *out;
    need_args(nrhs, 1, "names = dynlib_mex('model_state_names' | 'model_param_names' | "
                       "'model_aux_names', h)");
    memset(&c, 0, sizeof c);
    c.model = model_arg(prhs[0]);
    c.which = which;
    if (which == 0) {
        check(dynlib_model_n_states(c.model, &n));
    } else if (which == 1) {
        check(dynlib_model_n_params(c.model, &n));
    } else {
        check(dynlib_model_n_aux(c.model, &n));
    }
    out = temp_array(mxCreateCellMatrix(n, 1));
    for (i = 0; i < n; i++) {
        c.index = i;
        mxSetCell(out, i, mxCreateString(get_string(model_name_getter, &c)));
    }
    adopt_temp(out);
    plhs[0] = out;
}

static void cmd_model_state_names(int nlhs, mxArray *plhs[], int nrhs, const mxArray *prhs[])
{
    (void)nlhs;
    model_names(plhs, nrhs, prhs, 0);
}

static void cmd_model_param_names(int nlhs, mxArray *plhs[], int nrhs, const mxArray *prhs[])
{
    (void)nlhs;
    model_names(plhs, nrhs, prhs, 1);
}

static void cmd_model_aux_names(int nlhs, mxArray *plhs[], int nrhs, const mxArray *prhs[])
{
    (void)nlhs;
    model_names(plhs, nrhs, prhs, 2);
}

static DynlibStatus model_info_getter(void *ctx, char *buf, size_t cap, size_t *needed)
{
    return dynlib_model_info_json(((Ctx *)ctx)->model, buf, cap, needed);
}

static void cmd_model_info_json(int nlhs, mxArray *plhs[], int nrhs, const mxArray *prhs[])
{
    Ctx c;
    (void)nlhs;
    need_args(nrhs, 1, "json = dynlib_mex('model_info_json', h)");
    memset(&c, 0, sizeof c);
    c.model = model_arg(prhs[0]);
    plhs[0] = mxCreateString(get_string(model_info_getter, &c));
}

static void cmd_sim_new(int nlhs, mxArray *plhs[], int nrhs, const mxArray *prhs[])
{
    DynlibModel *model;
    DynlibSim *sim = NULL;
    mxArray *out;
    (void)nlhs;
    need_args(nrhs, 1, "s = dynlib_mex('sim_new', model_handle)");
    model = model_arg(prhs[0]);
    out = handle_out();
    reserve_handle_slot();
    check(dynlib_sim_new(model, &sim));
    U64_PTR(out)[0] = register_handle(sim, KIND_SIM);
    adopt_temp(out);
    plhs[0] = out;
}

static void cmd_sim_free(int nlhs, mxArray *plhs[], int nrhs, const mxArray *prhs[])
{
    (void)nlhs;
    (void)plhs;
    need_args(nrhs, 1, "dynlib_mex('sim_free', s)");
    free_command(prhs[0], KIND_SIM);
}

/* The `progress` run option: a function handle called every `progress_every` steps with a
 * struct (t, step, fraction, y); a true return stops the run. Errors inside it are trapped
 * (mexCallMATLABWithTrap: no longjmp through the library, which would leave the sim busy),
 * stop the run, and are rethrown once dynlib_sim_run returned. */
typedef struct {
    const mxArray *fn;
    mxArray *error;
} ProgressCtx;

static int mex_progress(double t, uint64_t step, double fraction, const double *y, size_t n,
                        void *user_data)
{
    static const char *fields[] = {"t", "step", "fraction", "y"};
    ProgressCtx *c = (ProgressCtx *)user_data;
    mxArray *args[2], *out = NULL, *err, *ya;
    int stop = 0;
    args[0] = (mxArray *)c->fn;
    args[1] = mxCreateStructMatrix(1, 1, 4, fields);
    mxSetField(args[1], 0, "t", mxCreateDoubleScalar(t));
    mxSetField(args[1], 0, "step", mxCreateDoubleScalar((double)step));
    mxSetField(args[1], 0, "fraction", mxCreateDoubleScalar(fraction));
    ya = mxCreateDoubleMatrix((mwSize)n, 1, mxREAL);
    if (n > 0) {
        memcpy(DBL_PTR(ya), y, n * sizeof(double));
    }
    mxSetField(args[1], 0, "y", ya);
    err = mexCallMATLABWithTrap(1, &out, 2, args, "feval");
    mxDestroyArray(args[1]);
    if (err != NULL) {
        c->error = err;
        return 1;
    }
    if (out != NULL) {
        if (mxIsLogical(out) || mxIsNumeric(out)) {
            stop = !mxIsEmpty(out) && mxGetScalar(out) != 0.0;
        } else {
            stop = 0;
        }
        mxDestroyArray(out);
    }
    return stop;
}

/* Fills DynlibRunOptions from a scalar struct whose fields are named like its members. */
static void run_options_from_struct(const mxArray *s, DynlibRunOptions *o, ProgressCtx *pc)
{
    int f, nf;
    if (!mxIsStruct(s) || mxGetNumberOfElements(s) != 1) {
        fail("dynlib:invalidArgument", "run options must be a scalar struct");
    }
    nf = mxGetNumberOfFields(s);
    for (f = 0; f < nf; f++) {
        const char *name = mxGetFieldNameByNumber(s, f);
        const mxArray *v = mxGetFieldByNumber(s, 0, f);
        if (v == NULL) {
            continue;
        }
        if (strcmp(name, "T") == 0) {
            o->T = scalar_arg(v, "option 'T'");
        } else if (strcmp(name, "N") == 0) {
            o->N = count_arg(v, "option 'N'");
        } else if (strcmp(name, "dt") == 0) {
            o->dt = scalar_arg(v, "option 'dt'");
        } else if (strcmp(name, "t0") == 0) {
            o->t0 = scalar_arg(v, "option 't0'");
        } else if (strcmp(name, "ic") == 0) {
            o->ic = doubles_arg(v, &o->n_ic, "option 'ic'");
        } else if (strcmp(name, "params") == 0) {
            o->params = doubles_arg(v, &o->n_params, "option 'params'");
        } else if (strcmp(name, "record") == 0) {
            double x = scalar_arg(v, "option 'record'");
            if (x != 0.0 && x != 1.0 && x != -1.0) {
                fail("dynlib:invalidArgument",
                     "option 'record' must be true, false or -1 (the model's default)");
            }
            o->record = (int32_t)x;
        } else if (strcmp(name, "record_interval") == 0) {
            o->record_interval = count_arg(v, "option 'record_interval'");
        } else if (strcmp(name, "record_vars") == 0) {
            static const char *no_vars[1] = {NULL};
            o->record_vars = strings_arg(v, &o->n_record_vars, "option 'record_vars'");
            if (o->n_record_vars == 0) {
                o->record_vars = no_vars; /* {}: record t and step only */
            }
        } else if (strcmp(name, "transient") == 0) {
            o->transient = scalar_arg(v, "option 'transient'");
        } else if (strcmp(name, "resume") == 0) {
            o->resume = bool_arg(v, "option 'resume'") != 0;
        } else if (strcmp(name, "tag") == 0) {
            o->tag = opt_string_arg(v, "option 'tag'");
        } else if (strcmp(name, "max_steps") == 0) {
            o->max_steps = count_arg(v, "option 'max_steps'");
        } else if (strcmp(name, "config") == 0) {
            int k, nk;
            const char **names;
            double *values;
            if (!mxIsStruct(v) || mxGetNumberOfElements(v) != 1) {
                fail("dynlib:invalidArgument",
                     "option 'config' must be a scalar struct of stepper knobs");
            }
            nk = mxGetNumberOfFields(v);
            names = (const char **)temp_alloc((size_t)nk * sizeof *names);
            values = (double *)temp_alloc((size_t)nk * sizeof *values);
            for (k = 0; k < nk; k++) {
                const mxArray *x = mxGetFieldByNumber(v, 0, k);
                names[k] = mxGetFieldNameByNumber(v, k);
                if (x == NULL) {
                    failf("dynlib:invalidArgument", "config knob '%s' has no value", names[k]);
                }
                values[k] = scalar_arg(x, "a config knob");
            }
            o->config_names = names;
            o->config_values = values;
            o->n_config = (size_t)nk;
        } else if (strcmp(name, "checkpoint_dir") == 0) {
            o->checkpoint_dir = opt_string_arg(v, "option 'checkpoint_dir'");
        } else if (strcmp(name, "checkpoint_every_steps") == 0) {
            o->checkpoint_every_steps = count_arg(v, "option 'checkpoint_every_steps'");
        } else if (strcmp(name, "checkpoint_every_time") == 0) {
            o->checkpoint_every_time = scalar_arg(v, "option 'checkpoint_every_time'");
        } else if (strcmp(name, "checkpoint_keep") == 0) {
            o->checkpoint_keep = count_arg(v, "option 'checkpoint_keep'");
        } else if (strcmp(name, "progress") == 0) {
            if (!mxIsClass(v, "function_handle")) {
                fail("dynlib:invalidArgument",
                     "option 'progress' must be a function handle, e.g. @(p) p.step >= 1000");
            }
            if (!pc) {
                /* Ensemble members run on several threads; MATLAB code may not be called
                   from them. */
                fail("dynlib:invalidArgument", "option 'progress' is not available for ensembles");
            }
            pc->fn = v;
        } else if (strcmp(name, "progress_every") == 0) {
            o->progress_every_steps = count_arg(v, "option 'progress_every'");
        } else {
            failf("dynlib:invalidArgument",
                  "unknown run option '%s' (known: T, N, dt, t0, ic, params, record, "
                  "record_interval, record_vars, transient, resume, tag, max_steps, config, "
                  "checkpoint_dir, checkpoint_every_steps, checkpoint_every_time, "
                  "checkpoint_keep, progress, progress_every)",
                  name);
        }
    }
}

static void cmd_run(int nlhs, mxArray *plhs[], int nrhs, const mxArray *prhs[])
{
    DynlibSim *sim;
    DynlibRunOptions o;
    DynlibStatus st;
    ProgressCtx pc = {NULL, NULL};
    if (nrhs != 1 && nrhs != 2) {
        need_args(nrhs, 2, "dynlib_mex('run', s, options_struct)");
    }
    sim = sim_arg(prhs[0]);
    check(dynlib_run_options_init(&o));
    if (nrhs == 2) {
        run_options_from_struct(prhs[1], &o, &pc);
    }
    if (pc.fn != NULL) {
        o.progress = mex_progress;
        o.progress_user_data = &pc;
        if (o.progress_every_steps == 0) {
            o.progress_every_steps = 1000;
        }
    } else if (o.progress_every_steps != 0) {
        fail("dynlib:invalidArgument", "option 'progress_every' needs option 'progress'");
    }
    st = dynlib_sim_run(sim, &o);
    if (pc.error != NULL) {
        /* The run stopped after the step the callback saw; raise its error now. */
        release_temps();
        mexCallMATLAB(0, NULL, 1, &pc.error, "rethrow");
    }
    if (st != DYNLIB_INTERRUPTED) {
        check(st);
    }
    if (nlhs > 0) {
        plhs[0] = mxCreateLogicalScalar(st == DYNLIB_INTERRUPTED);
    }
}

static void cmd_create_snapshot(int nlhs, mxArray *plhs[], int nrhs, const mxArray *prhs[])
{
    DynlibSim *sim;
    const char *name, *description = NULL;
    (void)nlhs;
    (void)plhs;
    if (nrhs != 2 && nrhs != 3) {
        need_args(nrhs, 3, "dynlib_mex('create_snapshot', s, name, description)");
    }
    sim = sim_arg(prhs[0]);
    name = string_arg(prhs[1], "snapshot name");
    if (nrhs == 3) {
        description = opt_string_arg(prhs[2], "description");
    }
    check(dynlib_sim_create_snapshot(sim, name, description));
}

static void cmd_reset(int nlhs, mxArray *plhs[], int nrhs, const mxArray *prhs[])
{
    DynlibSim *sim;
    const char *name = NULL;
    (void)nlhs;
    (void)plhs;
    if (nrhs != 1 && nrhs != 2) {
        need_args(nrhs, 2, "dynlib_mex('reset', s, name_or_empty)");
    }
    sim = sim_arg(prhs[0]);
    if (nrhs == 2) {
        name = opt_string_arg(prhs[1], "snapshot name");
    }
    check(dynlib_sim_reset(sim, name));
}

static void cmd_apply_preset(int nlhs, mxArray *plhs[], int nrhs, const mxArray *prhs[])
{
    DynlibSim *sim;
    const char *name;
    (void)nlhs;
    (void)plhs;
    need_args(nrhs, 2, "dynlib_mex('apply_preset', s, name)");
    sim = sim_arg(prhs[0]);
    name = string_arg(prhs[1], "preset name");
    check(dynlib_sim_apply_preset(sim, name));
}

static DynlibStatus list_snapshots_getter(void *ctx, char *buf, size_t cap, size_t *needed)
{
    return dynlib_sim_list_snapshots_json(((Ctx *)ctx)->sim, buf, cap, needed);
}

static DynlibStatus summary_getter(void *ctx, char *buf, size_t cap, size_t *needed)
{
    return dynlib_sim_summary_json(((Ctx *)ctx)->sim, buf, cap, needed);
}

static DynlibStatus events_getter(void *ctx, char *buf, size_t cap, size_t *needed)
{
    return dynlib_sim_events_json(((Ctx *)ctx)->sim, buf, cap, needed);
}

static void sim_json(mxArray *plhs[], int nrhs, const mxArray *prhs[], StringGetter get)
{
    Ctx c;
    need_args(nrhs, 1, "json = dynlib_mex('list_snapshots_json' | 'summary_json' | "
                       "'events_json', s)");
    memset(&c, 0, sizeof c);
    c.sim = sim_arg(prhs[0]);
    plhs[0] = mxCreateString(get_string(get, &c));
}

static void cmd_list_snapshots_json(int nlhs, mxArray *plhs[], int nrhs,
                                    const mxArray *prhs[])
{
    (void)nlhs;
    sim_json(plhs, nrhs, prhs, list_snapshots_getter);
}

static void cmd_summary_json(int nlhs, mxArray *plhs[], int nrhs, const mxArray *prhs[])
{
    (void)nlhs;
    sim_json(plhs, nrhs, prhs, summary_getter);
}

static void cmd_events_json(int nlhs, mxArray *plhs[], int nrhs, const mxArray *prhs[])
{
    (void)nlhs;
    sim_json(plhs, nrhs, prhs, events_getter);
}

static void cmd_compat_check(int nlhs, mxArray *plhs[], int nrhs, const mxArray *prhs[])
{
    DynlibSim *sim;
    const char *name;
    bool ok = false;
    size_t needed = 0;
    char *buf;
    need_args(nrhs, 2, "[ok, diff] = dynlib_mex('compat_check', s, name)");
    sim = sim_arg(prhs[0]);
    name = string_arg(prhs[1], "snapshot name");
    check(dynlib_sim_compat_check(sim, name, &ok, NULL, 0, &needed));
    buf = (char *)temp_alloc(needed + 1);
    check(dynlib_sim_compat_check(sim, name, &ok, buf, needed + 1, &needed));
    plhs[0] = mxCreateLogicalScalar(ok);
    if (nlhs > 1) {
        plhs[1] = mxCreateString(buf);
    }
}

static void cmd_can_resume(int nlhs, mxArray *plhs[], int nrhs, const mxArray *prhs[])
{
    DynlibSim *sim;
    bool ok = false;
    size_t needed = 0;
    char *buf;
    need_args(nrhs, 1, "[ok, reason] = dynlib_mex('can_resume', s)");
    sim = sim_arg(prhs[0]);
    check(dynlib_sim_can_resume(sim, &ok, NULL, 0, &needed));
    buf = (char *)temp_alloc(needed + 1);
    check(dynlib_sim_can_resume(sim, &ok, buf, needed + 1, &needed));
    plhs[0] = mxCreateLogicalScalar(ok);
    if (nlhs > 1) {
        plhs[1] = mxCreateString(buf);
    }
}

static void cmd_assign(int nlhs, mxArray *plhs[], int nrhs, const mxArray *prhs[])
{
    DynlibSim *sim;
    const char **names;
    const double *values;
    size_t n_names = 0, n_values = 0;
    int clear_history = 0;
    (void)nlhs;
    (void)plhs;
    if (nrhs != 3 && nrhs != 4) {
        need_args(nrhs, 4, "dynlib_mex('assign', s, names_cell, values, clear_history)");
    }
    sim = sim_arg(prhs[0]);
    names = strings_arg(prhs[1], &n_names, "names");
    values = doubles_arg(prhs[2], &n_values, "values");
    if (n_names != n_values) {
        fail("dynlib:invalidArgument", "assign: as many values as names are needed");
    }
    if (nrhs == 4) {
        clear_history = bool_arg(prhs[3], "clear_history");
    }
    check(dynlib_sim_assign(sim, n_names == 0 ? NULL : names, values, n_names,
                            clear_history != 0));
}

static void cmd_time(int nlhs, mxArray *plhs[], int nrhs, const mxArray *prhs[])
{
    DynlibSim *sim;
    double t = 0.0;
    (void)nlhs;
    need_args(nrhs, 1, "t = dynlib_mex('time', s)");
    sim = sim_arg(prhs[0]);
    check(dynlib_sim_time(sim, &t));
    plhs[0] = scalar_out(t);
}

static void cmd_step_count(int nlhs, mxArray *plhs[], int nrhs, const mxArray *prhs[])
{
    DynlibSim *sim;
    uint64_t step = 0;
    (void)nlhs;
    need_args(nrhs, 1, "n = dynlib_mex('step_count', s)");
    sim = sim_arg(prhs[0]);
    check(dynlib_sim_step_count(sim, &step));
    plhs[0] = scalar_out((double)step);
}

typedef DynlibStatus (*DoublesGetter)(DynlibSim *sim, double *buf, size_t cap, size_t *needed);

static void sim_vector(mxArray *plhs[], int nrhs, const mxArray *prhs[], DoublesGetter get)
{
    DynlibSim *sim;
    size_t n = 0;
    mxArray *out;
    need_args(nrhs, 1, "x = dynlib_mex('state' | 'params', s)");
    sim = sim_arg(prhs[0]);
    check(get(sim, NULL, 0, &n));
    out = temp_array(mxCreateDoubleMatrix(n, 1, mxREAL));
    if (n > 0) {
        check(get(sim, DBL_PTR(out), n, &n));
    }
    adopt_temp(out);
    plhs[0] = out;
}

static void cmd_state(int nlhs, mxArray *plhs[], int nrhs, const mxArray *prhs[])
{
    (void)nlhs;
    sim_vector(plhs, nrhs, prhs, dynlib_sim_state);
}

static void cmd_params(int nlhs, mxArray *plhs[], int nrhs, const mxArray *prhs[])
{
    (void)nlhs;
    sim_vector(plhs, nrhs, prhs, dynlib_sim_params);
}

static void cmd_value(int nlhs, mxArray *plhs[], int nrhs, const mxArray *prhs[])
{
    DynlibSim *sim;
    const char *name;
    double x = 0.0;
    (void)nlhs;
    need_args(nrhs, 2, "x = dynlib_mex('value', s, name)");
    sim = sim_arg(prhs[0]);
    name = string_arg(prhs[1], "name");
    check(dynlib_sim_value(sim, name, &x));
    plhs[0] = scalar_out(x);
}

static DynlibStatus var_name_getter(void *ctx, char *buf, size_t cap, size_t *needed)
{
    Ctx *c = (Ctx *)ctx;
    return dynlib_sim_results_var_name(c->sim, c->index, buf, cap, needed);
}

/* struct with fields t, step, interpolated (n x 1), names (k x 1 cell), values (n x k). */
static void cmd_results(int nlhs, mxArray *plhs[], int nrhs, const mxArray *prhs[])
{
    static const char *fields[] = {"t", "step", "interpolated", "names", "values"};
    DynlibSim *sim;
    size_t n = 0, k = 0, i, j, got = 0;
    mxArray *out, *t, *step, *interp, *names, *values;
    uint64_t *steps;
    uint8_t *flags;
    Ctx c;
    (void)nlhs;
    need_args(nrhs, 1, "r = dynlib_mex('results', s)");
    sim = sim_arg(prhs[0]);
    check(dynlib_sim_n_samples(sim, &n));
    check(dynlib_sim_results_n_vars(sim, &k));

    out = temp_array(mxCreateStructMatrix(1, 1, 5, fields));
    t = mxCreateDoubleMatrix(n, 1, mxREAL);
    mxSetField(out, 0, "t", t);
    step = mxCreateDoubleMatrix(n, 1, mxREAL);
    mxSetField(out, 0, "step", step);
    interp = mxCreateLogicalMatrix(n, 1);
    mxSetField(out, 0, "interpolated", interp);
    names = mxCreateCellMatrix(k, 1);
    mxSetField(out, 0, "names", names);
    values = mxCreateDoubleMatrix(n, k, mxREAL);
    mxSetField(out, 0, "values", values);

    if (n > 0) {
        check(dynlib_sim_results_t(sim, DBL_PTR(t), n, &got));
        steps = (uint64_t *)temp_alloc(n * sizeof *steps);
        check(dynlib_sim_results_step(sim, steps, n, &got));
        for (i = 0; i < n; i++) {
            DBL_PTR(step)[i] = (double)steps[i];
        }
        flags = (uint8_t *)temp_alloc(n);
        check(dynlib_sim_results_interpolated(sim, flags, n, &got));
        for (i = 0; i < n; i++) {
            mxGetLogicals(interp)[i] = flags[i] != 0;
        }
    }
    memset(&c, 0, sizeof c);
    c.sim = sim;
    for (j = 0; j < k; j++) {
        char *name;
        c.index = j;
        name = get_string(var_name_getter, &c);
        mxSetCell(names, j, mxCreateString(name));
        if (n > 0) {
            check(dynlib_sim_results_var(sim, name, DBL_PTR(values) + j * n, n, &got));
        }
    }
    adopt_temp(out);
    plhs[0] = out;
}

static DynlibStatus segment_name_getter(void *ctx, char *buf, size_t cap, size_t *needed)
{
    Ctx *c = (Ctx *)ctx;
    return dynlib_sim_segment_name(c->sim, c->index, buf, cap, needed);
}

static void cmd_segments(int nlhs, mxArray *plhs[], int nrhs, const mxArray *prhs[])
{
    static const char *fields[] = {"name",         "t_start",    "t_end",       "step_start",
                                   "step_end",     "sample_start", "sample_len", "event_start",
                                   "event_len",    "resume"};
    DynlibSim *sim;
    size_t n = 0, i;
    mxArray *out;
    Ctx c;
    (void)nlhs;
    need_args(nrhs, 1, "segs = dynlib_mex('segments', s)");
    sim = sim_arg(prhs[0]);
    check(dynlib_sim_n_segments(sim, &n));
    out = temp_array(mxCreateStructMatrix(n, 1, 10, fields));
    memset(&c, 0, sizeof c);
    c.sim = sim;
    for (i = 0; i < n; i++) {
        DynlibSegmentInfo g;
        c.index = i;
        check(dynlib_sim_segment_info(sim, i, &g));
        mxSetField(out, i, "name", mxCreateString(get_string(segment_name_getter, &c)));
        mxSetField(out, i, "t_start", scalar_out(g.t_start));
        mxSetField(out, i, "t_end", scalar_out(g.t_end));
        mxSetField(out, i, "step_start", scalar_out((double)g.step_start));
        mxSetField(out, i, "step_end", scalar_out((double)g.step_end));
        mxSetField(out, i, "sample_start", scalar_out((double)g.sample_start));
        mxSetField(out, i, "sample_len", scalar_out((double)g.sample_len));
        mxSetField(out, i, "event_start", scalar_out((double)g.event_start));
        mxSetField(out, i, "event_len", scalar_out((double)g.event_len));
        mxSetField(out, i, "resume", mxCreateLogicalScalar(g.resume));
    }
    adopt_temp(out);
    plhs[0] = out;
}

static void cmd_name_segment(int nlhs, mxArray *plhs[], int nrhs, const mxArray *prhs[])
{
    DynlibSim *sim;
    uint64_t k;
    const char *name;
    (void)nlhs;
    (void)plhs;
    need_args(nrhs, 3, "dynlib_mex('name_segment', s, index_1_based, name)");
    sim = sim_arg(prhs[0]);
    k = count_arg(prhs[1], "segment index");
    if (k == 0) {
        fail("dynlib:invalidArgument", "segment indices start at 1");
    }
    name = string_arg(prhs[2], "segment name");
    check(dynlib_sim_name_segment(sim, (size_t)(k - 1), name));
}

static void cmd_name_last_segment(int nlhs, mxArray *plhs[], int nrhs, const mxArray *prhs[])
{
    DynlibSim *sim;
    const char *name;
    (void)nlhs;
    (void)plhs;
    need_args(nrhs, 2, "dynlib_mex('name_last_segment', s, name)");
    sim = sim_arg(prhs[0]);
    name = string_arg(prhs[1], "segment name");
    check(dynlib_sim_name_last_segment(sim, name));
}

static void cmd_export_snapshot(int nlhs, mxArray *plhs[], int nrhs, const mxArray *prhs[])
{
    DynlibSim *sim;
    const char *path, *name = NULL;
    (void)nlhs;
    (void)plhs;
    if (nrhs != 2 && nrhs != 3) {
        need_args(nrhs, 3, "dynlib_mex('export_snapshot', s, path, snapshot_name_or_empty)");
    }
    sim = sim_arg(prhs[0]);
    path = string_arg(prhs[1], "path");
    if (nrhs == 3) {
        name = opt_string_arg(prhs[2], "snapshot name");
    }
    check(dynlib_sim_export_snapshot(sim, path, name));
}

static void cmd_import_snapshot(int nlhs, mxArray *plhs[], int nrhs, const mxArray *prhs[])
{
    DynlibSim *sim;
    const char *path;
    (void)nlhs;
    (void)plhs;
    need_args(nrhs, 2, "dynlib_mex('import_snapshot', s, path)");
    sim = sim_arg(prhs[0]);
    path = string_arg(prhs[1], "path");
    check(dynlib_sim_import_snapshot(sim, path));
}

static DynlibStatus inspect_getter(void *ctx, char *buf, size_t cap, size_t *needed)
{
    return dynlib_inspect_snapshot(((Ctx *)ctx)->text, buf, cap, needed);
}

static void cmd_inspect_snapshot(int nlhs, mxArray *plhs[], int nrhs, const mxArray *prhs[])
{
    Ctx c;
    (void)nlhs;
    need_args(nrhs, 1, "json = dynlib_mex('inspect_snapshot', path)");
    memset(&c, 0, sizeof c);
    c.text = string_arg(prhs[0], "path");
    plhs[0] = mxCreateString(get_string(inspect_getter, &c));
}

static DynlibStatus inspect_bytes_getter(void *ctx, char *buf, size_t cap, size_t *needed)
{
    Ctx *c = (Ctx *)ctx;
    return dynlib_inspect_snapshot_bytes(c->bytes, c->len, buf, cap, needed);
}

static const uint8_t *bytes_arg(const mxArray *a, size_t *len)
{
    if (!mxIsUint8(a) || mxIsComplex(a)) {
        fail("dynlib:invalidArgument", "snapshot bytes must be a uint8 array");
    }
    *len = mxGetNumberOfElements(a);
    return *len == 0 ? NULL : U8_PTR(a);
}

static void cmd_inspect_snapshot_bytes(int nlhs, mxArray *plhs[], int nrhs,
                                       const mxArray *prhs[])
{
    Ctx c;
    (void)nlhs;
    need_args(nrhs, 1, "json = dynlib_mex('inspect_snapshot_bytes', bytes)");
    memset(&c, 0, sizeof c);
    c.bytes = bytes_arg(prhs[0], &c.len);
    plhs[0] = mxCreateString(get_string(inspect_bytes_getter, &c));
}

static void cmd_serialize_snapshot(int nlhs, mxArray *plhs[], int nrhs, const mxArray *prhs[])
{
    DynlibSim *sim;
    const char *name = NULL;
    size_t n = 0;
    uint8_t *buf;
    mxArray *out;
    (void)nlhs;
    if (nrhs != 1 && nrhs != 2) {
        need_args(nrhs, 2, "bytes = dynlib_mex('serialize_snapshot', s, name_or_empty)");
    }
    sim = sim_arg(prhs[0]);
    if (nrhs == 2) {
        name = opt_string_arg(prhs[1], "snapshot name");
    }
    check(dynlib_sim_serialize_snapshot(sim, name, NULL, 0, &n));
    /* Serialised in a temporary buffer first: the array is made only once the size is
     * certain (the library documents a stable size, but does not promise it). */
    buf = (uint8_t *)temp_alloc(n);
    check(dynlib_sim_serialize_snapshot(sim, name, buf, n, &n));
    out = temp_array(mxCreateNumericMatrix(n, 1, mxUINT8_CLASS, mxREAL));
    if (n > 0) {
        memcpy(U8_PTR(out), buf, n);
    }
    adopt_temp(out);
    plhs[0] = out;
}

static void cmd_deserialize_snapshot(int nlhs, mxArray *plhs[], int nrhs,
                                     const mxArray *prhs[])
{
    DynlibSim *sim;
    const uint8_t *bytes;
    size_t len = 0;
    (void)nlhs;
    (void)plhs;
    need_args(nrhs, 2, "dynlib_mex('deserialize_snapshot', s, bytes)");
    sim = sim_arg(prhs[0]);
    bytes = bytes_arg(prhs[1], &len);
    check(dynlib_sim_deserialize_snapshot(sim, bytes, len));
}

static DynlibStatus latest_checkpoint_getter(void *ctx, char *buf, size_t cap, size_t *needed)
{
    return dynlib_latest_checkpoint(((Ctx *)ctx)->text, buf, cap, needed);
}

static void cmd_latest_checkpoint(int nlhs, mxArray *plhs[], int nrhs, const mxArray *prhs[])
{
    Ctx c;
    (void)nlhs;
    need_args(nrhs, 1, "path = dynlib_mex('latest_checkpoint', dir)");
    memset(&c, 0, sizeof c);
    c.text = string_arg(prhs[0], "dir");
    plhs[0] = mxCreateString(get_string(latest_checkpoint_getter, &c));
}

/* ------------------------------------------------------------------------------------------ */
/* Preset bank, preset files, persistent config, stepper config.                              */

static DynlibStatus presets_getter(void *ctx, char *buf, size_t cap, size_t *needed)
{
    return dynlib_sim_list_presets_json(((Ctx *)ctx)->sim, ((Ctx *)ctx)->text, buf, cap, needed);
}

static void cmd_list_presets_json(int nlhs, mxArray *plhs[], int nrhs, const mxArray *prhs[])
{
    Ctx c;
    (void)nlhs;
    need_args(nrhs, 2, "json = dynlib_mex('list_presets_json', s, pattern)");
    memset(&c, 0, sizeof c);
    c.sim = sim_arg(prhs[0]);
    c.text = string_arg(prhs[1], "pattern");
    plhs[0] = mxCreateString(get_string(presets_getter, &c));
}

static void cmd_add_preset(int nlhs, mxArray *plhs[], int nrhs, const mxArray *prhs[])
{
    DynlibSim *sim;
    const char *name;
    const char **names;
    const double *values;
    size_t n_names = 0, n_values = 0;
    (void)nlhs;
    (void)plhs;
    need_args(nrhs, 5, "dynlib_mex('add_preset', s, name, names_cell, values, overwrite)");
    sim = sim_arg(prhs[0]);
    name = string_arg(prhs[1], "preset name");
    names = strings_arg(prhs[2], &n_names, "names");
    values = doubles_arg(prhs[3], &n_values, "values");
    if (n_names != n_values) {
        fail("dynlib:invalidArgument", "add_preset: names and values differ in length");
    }
    check(dynlib_sim_add_preset(sim, name, names, values, n_names,
                                bool_arg(prhs[4], "overwrite") != 0));
}

static void cmd_remove_preset(int nlhs, mxArray *plhs[], int nrhs, const mxArray *prhs[])
{
    (void)nlhs;
    (void)plhs;
    need_args(nrhs, 2, "dynlib_mex('remove_preset', s, name)");
    check(dynlib_sim_remove_preset(sim_arg(prhs[0]), string_arg(prhs[1], "preset name")));
}

static void cmd_load_presets(int nlhs, mxArray *plhs[], int nrhs, const mxArray *prhs[])
{
    size_t n = 0;
    (void)nlhs;
    need_args(nrhs, 4, "n = dynlib_mex('load_presets', s, path, pattern, on_conflict)");
    check(dynlib_sim_load_presets(sim_arg(prhs[0]), string_arg(prhs[1], "path"),
                                  string_arg(prhs[2], "pattern"),
                                  string_arg(prhs[3], "on_conflict"), &n));
    plhs[0] = scalar_out((double)n);
}

static void cmd_save_presets(int nlhs, mxArray *plhs[], int nrhs, const mxArray *prhs[])
{
    size_t n = 0;
    (void)nlhs;
    need_args(nrhs, 4, "n = dynlib_mex('save_presets', s, path, pattern, mode)");
    check(dynlib_sim_save_presets(sim_arg(prhs[0]), string_arg(prhs[1], "path"),
                                  string_arg(prhs[2], "pattern"), string_arg(prhs[3], "mode"),
                                  &n));
    plhs[0] = scalar_out((double)n);
}

static void cmd_config_set_json(int nlhs, mxArray *plhs[], int nrhs, const mxArray *prhs[])
{
    (void)nlhs;
    (void)plhs;
    need_args(nrhs, 2, "dynlib_mex('config_set_json', s, json)");
    check(dynlib_sim_config_set_json(sim_arg(prhs[0]), string_arg(prhs[1], "json")));
}

static DynlibStatus config_getter(void *ctx, char *buf, size_t cap, size_t *needed)
{
    return dynlib_sim_config_json(((Ctx *)ctx)->sim, buf, cap, needed);
}

static DynlibStatus knobs_getter(void *ctx, char *buf, size_t cap, size_t *needed)
{
    return dynlib_sim_stepper_config_json(((Ctx *)ctx)->sim, buf, cap, needed);
}

static void cmd_config_json(int nlhs, mxArray *plhs[], int nrhs, const mxArray *prhs[])
{
    (void)nlhs;
    sim_json(plhs, nrhs, prhs, config_getter);
}

static void cmd_stepper_config_json(int nlhs, mxArray *plhs[], int nrhs, const mxArray *prhs[])
{
    (void)nlhs;
    sim_json(plhs, nrhs, prhs, knobs_getter);
}

static void cmd_stepper_config_set(int nlhs, mxArray *plhs[], int nrhs, const mxArray *prhs[])
{
    const char **names;
    const double *values;
    size_t n_names = 0, n_values = 0;
    DynlibSim *sim;
    (void)nlhs;
    (void)plhs;
    need_args(nrhs, 3, "dynlib_mex('stepper_config_set', s, names_cell, values)");
    sim = sim_arg(prhs[0]);
    names = strings_arg(prhs[1], &n_names, "names");
    values = doubles_arg(prhs[2], &n_values, "values");
    if (n_names != n_values) {
        fail("dynlib:invalidArgument", "stepper_config_set: names and values differ in length");
    }
    check(dynlib_sim_stepper_config_set(sim, names, values, n_names));
}

static void cmd_stepper_config(int nlhs, mxArray *plhs[], int nrhs, const mxArray *prhs[])
{
    (void)nlhs;
    sim_vector(plhs, nrhs, prhs, dynlib_sim_stepper_config);
}

/* ------------------------------------------------------------------------------------------ */
/* Dispatch.                                                                                  */


/* ------------------------------------------------------------------------------------------ */
/* Ensembles. Member indices are 0-based here (+dynlib/Ensemble.m converts); matrices are
 * n_members x k in MATLAB (column-major) and row-major in the library: transposed here.      */

static DynlibEnsemble *ensemble_arg(const mxArray *a)
{
    return (DynlibEnsemble *)live_handle(a, KIND_ENSEMBLE);
}

static void cmd_ensemble_new(int nlhs, mxArray *plhs[], int nrhs, const mxArray *prhs[])
{
    DynlibModel *model;
    DynlibEnsemble *ens = NULL;
    uint64_t n;
    mxArray *out;
    (void)nlhs;
    need_args(nrhs, 2, "e = dynlib_mex('ensemble_new', model_handle, n_members)");
    model = model_arg(prhs[0]);
    n = count_arg(prhs[1], "n_members");
    out = handle_out();
    reserve_handle_slot();
    check(dynlib_ensemble_new(model, (size_t)n, &ens));
    U64_PTR(out)[0] = register_handle(ens, KIND_ENSEMBLE);
    adopt_temp(out);
    plhs[0] = out;
}

static void cmd_ensemble_from_sim(int nlhs, mxArray *plhs[], int nrhs, const mxArray *prhs[])
{
    DynlibSim *sim;
    DynlibEnsemble *ens = NULL;
    uint64_t n;
    mxArray *out;
    (void)nlhs;
    need_args(nrhs, 2, "e = dynlib_mex('ensemble_from_sim', s, n_members)");
    sim = sim_arg(prhs[0]);
    n = count_arg(prhs[1], "n_members");
    out = handle_out();
    reserve_handle_slot();
    check(dynlib_ensemble_from_sim(sim, (size_t)n, &ens));
    U64_PTR(out)[0] = register_handle(ens, KIND_ENSEMBLE);
    adopt_temp(out);
    plhs[0] = out;
}

static void cmd_ensemble_free(int nlhs, mxArray *plhs[], int nrhs, const mxArray *prhs[])
{
    (void)nlhs;
    (void)plhs;
    need_args(nrhs, 1, "dynlib_mex('ensemble_free', e)");
    free_command(prhs[0], KIND_ENSEMBLE);
}

static void cmd_ensemble_count(int nlhs, mxArray *plhs[], int nrhs, const mxArray *prhs[])
{
    size_t n = 0, failed = 0;
    DynlibEnsemble *ens;
    (void)nlhs;
    need_args(nrhs, 1, "[n, n_failed] = dynlib_mex('ensemble_count', e)");
    ens = ensemble_arg(prhs[0]);
    check(dynlib_ensemble_n_members(ens, &n));
    check(dynlib_ensemble_n_failed(ens, &failed));
    plhs[0] = scalar_out((double)n);
    if (nlhs > 1) {
        plhs[1] = scalar_out((double)failed);
    }
}

/* dynlib_mex('ensemble_lockstep', e) returns [lanes, kernel member-steps of the last run];
 * dynlib_mex('ensemble_lockstep', e, lanes) sets the lanes first. */
static void cmd_ensemble_lockstep(int nlhs, mxArray *plhs[], int nrhs, const mxArray *prhs[])
{
    size_t lanes = 0;
    uint64_t steps = 0;
    DynlibEnsemble *ens;
    if (nrhs != 1 && nrhs != 2) {
        failf("dynlib:invalidArgument", "dynlib_mex: usage: %s",
              "[lanes, steps] = dynlib_mex('ensemble_lockstep', e [, lanes])");
    }
    ens = ensemble_arg(prhs[0]);
    if (nrhs == 2) {
        uint64_t want = count_arg(prhs[1], "lockstep lanes");
        if (want > (uint64_t)SIZE_MAX) {
            failf("dynlib:invalidArgument", "%s is too large", "lockstep lanes");
        }
        check(dynlib_ensemble_set_lockstep_lanes(ens, (size_t)want));
    }
    check(dynlib_ensemble_lockstep_lanes(ens, &lanes));
    check(dynlib_ensemble_last_run_lockstep_steps(ens, &steps));
    plhs[0] = scalar_out((double)lanes);
    if (nlhs > 1) {
        plhs[1] = scalar_out((double)steps);
    }
}

typedef DynlibStatus (*MatrixSetter)(DynlibEnsemble *, const double *, size_t, size_t);

static void ensemble_set_matrix(int nrhs, const mxArray *prhs[], MatrixSetter set)
{
    DynlibEnsemble *ens;
    size_t rows, cols, i, j, n;
    const double *m;
    double *row_major;
    need_args(nrhs, 2, "dynlib_mex('ensemble_set_params' | 'ensemble_set_ic', e, matrix)");
    ens = ensemble_arg(prhs[0]);
    m = doubles_arg(prhs[1], &n, "matrix (n_members x n)");
    if (mxGetNumberOfDimensions(prhs[1]) != 2) {
        fail("dynlib:invalidArgument", "the matrix must be 2-D: one row per member");
    }
    rows = mxGetM(prhs[1]);
    cols = mxGetN(prhs[1]);
    row_major = (double *)temp_alloc(n > 0 ? n * sizeof(double) : 1);
    for (i = 0; i < rows; i++) {
        for (j = 0; j < cols; j++) {
            row_major[i * cols + j] = m[j * rows + i];
        }
    }
    check(set(ens, row_major, rows, cols));
}

static void cmd_ensemble_set_params(int nlhs, mxArray *plhs[], int nrhs, const mxArray *prhs[])
{
    (void)nlhs;
    (void)plhs;
    ensemble_set_matrix(nrhs, prhs, dynlib_ensemble_set_params);
}

static void cmd_ensemble_set_ic(int nlhs, mxArray *plhs[], int nrhs, const mxArray *prhs[])
{
    (void)nlhs;
    (void)plhs;
    ensemble_set_matrix(nrhs, prhs, dynlib_ensemble_set_ic);
}

static void cmd_ensemble_set_column(int nlhs, mxArray *plhs[], int nrhs, const mxArray *prhs[])
{
    DynlibEnsemble *ens;
    const char *name;
    const double *v;
    size_t n = 0;
    (void)nlhs;
    (void)plhs;
    need_args(nrhs, 3, "dynlib_mex('ensemble_set_column', e, name, values)");
    ens = ensemble_arg(prhs[0]);
    name = string_arg(prhs[1], "name");
    v = doubles_arg(prhs[2], &n, "values");
    check(dynlib_ensemble_set_column(ens, name, v, n));
}

static void cmd_ensemble_run(int nlhs, mxArray *plhs[], int nrhs, const mxArray *prhs[])
{
    DynlibEnsemble *ens;
    DynlibRunOptions o;
    uint64_t threads;
    (void)nlhs;
    (void)plhs;
    need_args(nrhs, 3, "dynlib_mex('ensemble_run', e, options_struct, n_threads)");
    ens = ensemble_arg(prhs[0]);
    check(dynlib_run_options_init(&o));
    run_options_from_struct(prhs[1], &o, NULL);
    threads = count_arg(prhs[2], "n_threads");
    check(dynlib_ensemble_run(ens, &o, (size_t)threads));
}

static void cmd_ensemble_member_status(int nlhs, mxArray *plhs[], int nrhs,
                                       const mxArray *prhs[])
{
    DynlibEnsemble *ens;
    DynlibStatus st = DYNLIB_OK;
    uint64_t i;
    char *msg;
    size_t needed = 0;
    (void)nlhs;
    need_args(nrhs, 2, "[status_name, message] = dynlib_mex('ensemble_member_status', e, i0)");
    ens = ensemble_arg(prhs[0]);
    i = count_arg(prhs[1], "member index");
    check(dynlib_ensemble_member_status(ens, (size_t)i, &st));
    check(dynlib_ensemble_member_error(ens, (size_t)i, NULL, 0, &needed));
    msg = (char *)temp_alloc(needed + 1);
    check(dynlib_ensemble_member_error(ens, (size_t)i, msg, needed + 1, &needed));
    plhs[0] = mxCreateString(st == DYNLIB_OK ? "" : error_id(st));
    if (nlhs > 1) {
        plhs[1] = mxCreateString(msg);
    }
}

typedef DynlibStatus (*EnsDoubles)(DynlibEnsemble *, double *, size_t, size_t *);

/* n_members x (len / n_members) matrix from a row-major library array. */
static void cmd_ensemble_matrix_out(int nrhs, const mxArray *prhs[], mxArray *plhs[],
                                    EnsDoubles get, int as_matrix)
{
    DynlibEnsemble *ens;
    size_t n = 0, members = 0, cols, i, j;
    double *flat;
    mxArray *out;
    need_args(nrhs, 1, "x = dynlib_mex('ensemble_final_states' | ..., e)");
    ens = ensemble_arg(prhs[0]);
    check(dynlib_ensemble_n_members(ens, &members));
    check(get(ens, NULL, 0, &n));
    flat = (double *)temp_alloc(n > 0 ? n * sizeof(double) : 1);
    if (n > 0) {
        check(get(ens, flat, n, &n));
    }
    cols = as_matrix && members > 0 ? n / members : 1;
    out = mxCreateDoubleMatrix(as_matrix ? members : n, cols, mxREAL);
    for (i = 0; i < (as_matrix ? members : n); i++) {
        for (j = 0; j < cols; j++) {
            DBL_PTR(out)[j * (as_matrix ? members : n) + i] = flat[i * cols + j];
        }
    }
    plhs[0] = out;
}

static void cmd_ensemble_final_states(int nlhs, mxArray *plhs[], int nrhs,
                                      const mxArray *prhs[])
{
    (void)nlhs;
    cmd_ensemble_matrix_out(nrhs, prhs, plhs, dynlib_ensemble_final_states, 1);
}

static void cmd_ensemble_params(int nlhs, mxArray *plhs[], int nrhs, const mxArray *prhs[])
{
    (void)nlhs;
    cmd_ensemble_matrix_out(nrhs, prhs, plhs, dynlib_ensemble_params, 1);
}

static void cmd_ensemble_times(int nlhs, mxArray *plhs[], int nrhs, const mxArray *prhs[])
{
    (void)nlhs;
    cmd_ensemble_matrix_out(nrhs, prhs, plhs, dynlib_ensemble_times, 0);
}

typedef DynlibStatus (*EnsCounts)(DynlibEnsemble *, uint64_t *, size_t, size_t *);

static void ensemble_counts(int nrhs, const mxArray *prhs[], mxArray *plhs[], EnsCounts get)
{
    DynlibEnsemble *ens;
    size_t n = 0, i;
    uint64_t *v;
    mxArray *out;
    need_args(nrhs, 1, "c = dynlib_mex('ensemble_event_counts' | 'ensemble_step_counts', e)");
    ens = ensemble_arg(prhs[0]);
    check(get(ens, NULL, 0, &n));
    v = (uint64_t *)temp_alloc(n > 0 ? n * sizeof(uint64_t) : 1);
    if (n > 0) {
        check(get(ens, v, n, &n));
    }
    out = mxCreateDoubleMatrix(n, 1, mxREAL);
    for (i = 0; i < n; i++) {
        DBL_PTR(out)[i] = (double)v[i];
    }
    plhs[0] = out;
}

static void cmd_ensemble_event_counts(int nlhs, mxArray *plhs[], int nrhs,
                                      const mxArray *prhs[])
{
    (void)nlhs;
    ensemble_counts(nrhs, prhs, plhs, dynlib_ensemble_event_counts);
}

static void cmd_ensemble_step_counts(int nlhs, mxArray *plhs[], int nrhs,
                                     const mxArray *prhs[])
{
    (void)nlhs;
    ensemble_counts(nrhs, prhs, plhs, dynlib_ensemble_step_counts);
}

static void cmd_ensemble_member_sim(int nlhs, mxArray *plhs[], int nrhs, const mxArray *prhs[])
{
    DynlibEnsemble *ens;
    DynlibSim *sim = NULL;
    uint64_t i;
    mxArray *out;
    (void)nlhs;
    need_args(nrhs, 2, "s = dynlib_mex('ensemble_member_sim', e, i0)");
    ens = ensemble_arg(prhs[0]);
    i = count_arg(prhs[1], "member index");
    out = handle_out();
    reserve_handle_slot();
    check(dynlib_ensemble_member_sim(ens, (size_t)i, &sim));
    U64_PTR(out)[0] = register_handle(sim, KIND_SIM);
    adopt_temp(out);
    plhs[0] = out;
}

static void cmd_ensemble_export_checkpoint(int nlhs, mxArray *plhs[], int nrhs,
                                           const mxArray *prhs[])
{
    DynlibEnsemble *ens;
    const char *path;
    (void)nlhs;
    (void)plhs;
    need_args(nrhs, 2, "dynlib_mex('ensemble_export_checkpoint', e, path)");
    ens = ensemble_arg(prhs[0]);
    path = string_arg(prhs[1], "path");
    check(dynlib_ensemble_export_checkpoint(ens, path));
}

static void cmd_ensemble_import_checkpoint(int nlhs, mxArray *plhs[], int nrhs,
                                           const mxArray *prhs[])
{
    DynlibEnsemble *ens;
    const char *path;
    (void)nlhs;
    (void)plhs;
    need_args(nrhs, 2, "dynlib_mex('ensemble_import_checkpoint', e, path)");
    ens = ensemble_arg(prhs[0]);
    path = string_arg(prhs[1], "path");
    check(dynlib_ensemble_import_checkpoint(ens, path));
}

static const struct {
    const char *name;
    Command fn;
} COMMANDS[] = {
    {"version", cmd_version},
    {"live_handles", cmd_live_handles},
    {"model_load", cmd_model_load},
    {"model_free", cmd_model_free},
    {"model_state_names", cmd_model_state_names},
    {"model_param_names", cmd_model_param_names},
    {"model_aux_names", cmd_model_aux_names},
    {"model_info_json", cmd_model_info_json},
    {"sim_new", cmd_sim_new},
    {"sim_free", cmd_sim_free},
    {"run", cmd_run},
    {"create_snapshot", cmd_create_snapshot},
    {"reset", cmd_reset},
    {"apply_preset", cmd_apply_preset},
    {"list_snapshots_json", cmd_list_snapshots_json},
    {"summary_json", cmd_summary_json},
    {"events_json", cmd_events_json},
    {"compat_check", cmd_compat_check},
    {"can_resume", cmd_can_resume},
    {"assign", cmd_assign},
    {"time", cmd_time},
    {"step_count", cmd_step_count},
    {"state", cmd_state},
    {"params", cmd_params},
    {"value", cmd_value},
    {"results", cmd_results},
    {"segments", cmd_segments},
    {"name_segment", cmd_name_segment},
    {"name_last_segment", cmd_name_last_segment},
    {"export_snapshot", cmd_export_snapshot},
    {"import_snapshot", cmd_import_snapshot},
    {"inspect_snapshot", cmd_inspect_snapshot},
    {"inspect_snapshot_bytes", cmd_inspect_snapshot_bytes},
    {"serialize_snapshot", cmd_serialize_snapshot},
    {"deserialize_snapshot", cmd_deserialize_snapshot},
    {"latest_checkpoint", cmd_latest_checkpoint},
    {"list_presets_json", cmd_list_presets_json},
    {"add_preset", cmd_add_preset},
    {"remove_preset", cmd_remove_preset},
    {"load_presets", cmd_load_presets},
    {"save_presets", cmd_save_presets},
    {"config_set_json", cmd_config_set_json},
    {"config_json", cmd_config_json},
    {"stepper_config_set", cmd_stepper_config_set},
    {"stepper_config", cmd_stepper_config},
    {"stepper_config_json", cmd_stepper_config_json},
    {"ensemble_new", cmd_ensemble_new},
    {"ensemble_from_sim", cmd_ensemble_from_sim},
    {"ensemble_free", cmd_ensemble_free},
    {"ensemble_count", cmd_ensemble_count},
    {"ensemble_lockstep", cmd_ensemble_lockstep},
    {"ensemble_set_params", cmd_ensemble_set_params},
    {"ensemble_set_ic", cmd_ensemble_set_ic},
    {"ensemble_set_column", cmd_ensemble_set_column},
    {"ensemble_run", cmd_ensemble_run},
    {"ensemble_member_status", cmd_ensemble_member_status},
    {"ensemble_final_states", cmd_ensemble_final_states},
    {"ensemble_params", cmd_ensemble_params},
    {"ensemble_times", cmd_ensemble_times},
    {"ensemble_event_counts", cmd_ensemble_event_counts},
    {"ensemble_step_counts", cmd_ensemble_step_counts},
    {"ensemble_member_sim", cmd_ensemble_member_sim},
    {"ensemble_export_checkpoint", cmd_ensemble_export_checkpoint},
    {"ensemble_import_checkpoint", cmd_ensemble_import_checkpoint},
};

void mexFunction(int nlhs, mxArray *plhs[], int nrhs, const mxArray *prhs[])
{
    char command[64];
    size_t i;

    g_n_temps = 0;
    if (!g_at_exit_registered) {
        mexAtExit(free_all_handles);
        g_at_exit_registered = 1;
    }
    if (nrhs < 1 || !mxIsChar(prhs[0]) ||
        mxGetString(prhs[0], command, sizeof command) != 0) {
        fail("dynlib:invalidArgument", "dynlib_mex: the first argument must be a command name");
    }
    for (i = 0; i < sizeof COMMANDS / sizeof COMMANDS[0]; i++) {
        if (strcmp(command, COMMANDS[i].name) == 0) {
            COMMANDS[i].fn(nlhs, plhs, nrhs - 1, prhs + 1);
            release_temps();
            return;
        }
    }
    failf("dynlib:invalidArgument", "dynlib_mex: unknown command '%s'", command);
}
