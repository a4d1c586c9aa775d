/* The callbacks both CVODE drivers (main.c, same_start.c) give the solvers: the problem's
 * right-hand side and Jacobian, counted, for CVODE (N_Vector, SUNMatrix) and for dynlib's
 * callback model; and the error measure. */
#ifndef VS_SUNDIALS_CALLBACKS_H
#define VS_SUNDIALS_CALLBACKS_H

#include <math.h>
#include <stddef.h>

#include <cvode/cvode.h>
#include <nvector/nvector_serial.h>
#include <sunmatrix/sunmatrix_dense.h>

#include "problems.h"

/* The user data of every callback (or the first member of it). */
typedef struct Counts {
  const Problem *p;
  long rhs, jac;
} Counts;

/* The largest relative error of a component of `y` against `ref`. */
static double max_rel_err(const Problem *p, const double *y, const double *ref) {
  double e = 0.0;
  for (size_t i = 0; i < p->n; i++) e = fmax(e, fabs(y[i] - ref[i]) / fabs(ref[i]));
  return e;
}

static int cv_rhs(sunrealtype t, N_Vector y, N_Vector ydot, void *ud) {
  Counts *c = ud;
  c->rhs++;
  c->p->rhs(t, N_VGetArrayPointer(y), N_VGetArrayPointer(ydot));
  return 0;
}

static int cv_jac(sunrealtype t, N_Vector y, N_Vector fy, SUNMatrix J, void *ud, N_Vector t1,
                  N_Vector t2, N_Vector t3) {
  (void)fy, (void)t1, (void)t2, (void)t3;
  Counts *c = ud;
  double buf[MAX_N * MAX_N];
  size_t n = c->p->n;
  c->jac++;
  c->p->jac(t, N_VGetArrayPointer(y), buf);
  for (size_t i = 0; i < n; i++)
    for (size_t j = 0; j < n; j++) SM_ELEMENT_D(J, i, j) = buf[i * n + j];
  return 0;
}

static int dl_rhs(double t, const double *y, const double *p, double *out, void *ud) {
  (void)p;
  Counts *c = ud;
  c->rhs++;
  c->p->rhs(t, y, out);
  return 0;
}

static int dl_jac(double t, const double *y, const double *p, double *out, void *ud) {
  (void)p;
  Counts *c = ud;
  c->jac++;
  c->p->jac(t, y, out);
  return 0;
}

#endif
