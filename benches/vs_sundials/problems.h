/* The four stiff test problems of the work-precision benchmark: one C right-hand side and one
 * analytic Jacobian (row-major) each, called by both CVODE and dynlib's callback model. */
#ifndef VS_SUNDIALS_PROBLEMS_H
#define VS_SUNDIALS_PROBLEMS_H
#include <stddef.h>

#define MAX_N 8

typedef struct Problem {
  const char *name;
  size_t n;
  double y0[MAX_N];
  double t_end;
  /* atol = atol_scale * rtol for every component. */
  double atol_scale;
  /* Published reference values at t_end and where they come from. */
  double published[MAX_N];
  const char *source;
  void (*rhs)(double t, const double *y, double *out);
  void (*jac)(double t, const double *y, double *jac_row_major);
} Problem;

extern const Problem PROBLEMS[4];

#endif
