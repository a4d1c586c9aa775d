/* Robertson, Van der Pol (mu = 1000), HIRES and the Oregonator (Hairer & Wanner, Solving ODEs
 * II; the IVP test set of Mazzia et al. for HIRES and the scaled Van der Pol values). */
#include "problems.h"

static void robertson(double t, const double *y, double *f) {
  (void)t;
  f[0] = -0.04 * y[0] + 1.0e4 * y[1] * y[2];
  f[2] = 3.0e7 * y[1] * y[1];
  f[1] = -f[0] - f[2];
}

static void robertson_jac(double t, const double *y, double *j) {
  (void)t;
  j[0] = -0.04;  j[1] = 1.0e4 * y[2];                  j[2] = 1.0e4 * y[1];
  j[3] = 0.04;   j[4] = -1.0e4 * y[2] - 6.0e7 * y[1];  j[5] = -1.0e4 * y[1];
  j[6] = 0.0;    j[7] = 6.0e7 * y[1];                  j[8] = 0.0;
}

#define MU 1000.0

static void vdp(double t, const double *y, double *f) {
  (void)t;
  f[0] = y[1];
  f[1] = MU * (1.0 - y[0] * y[0]) * y[1] - y[0];
}

static void vdp_jac(double t, const double *y, double *j) {
  (void)t;
  j[0] = 0.0;
  j[1] = 1.0;
  j[2] = -2.0 * MU * y[0] * y[1] - 1.0;
  j[3] = MU * (1.0 - y[0] * y[0]);
}

static void hires(double t, const double *y, double *f) {
  (void)t;
  f[0] = -1.71 * y[0] + 0.43 * y[1] + 8.32 * y[2] + 0.0007;
  f[1] = 1.71 * y[0] - 8.75 * y[1];
  f[2] = -10.03 * y[2] + 0.43 * y[3] + 0.035 * y[4];
  f[3] = 8.32 * y[1] + 1.71 * y[2] - 1.12 * y[3];
  f[4] = -1.745 * y[4] + 0.43 * y[5] + 0.43 * y[6];
  f[5] = -280.0 * y[5] * y[7] + 0.69 * y[3] + 1.71 * y[4] - 0.43 * y[5] + 0.69 * y[6];
  f[6] = 280.0 * y[5] * y[7] - 1.81 * y[6];
  f[7] = -f[6];
}

static void hires_jac(double t, const double *y, double *j) {
  (void)t;
  for (int k = 0; k < 64; k++) j[k] = 0.0;
#define J(r, c) j[(r) * 8 + (c)]
  J(0, 0) = -1.71; J(0, 1) = 0.43; J(0, 2) = 8.32;
  J(1, 0) = 1.71; J(1, 1) = -8.75;
  J(2, 2) = -10.03; J(2, 3) = 0.43; J(2, 4) = 0.035;
  J(3, 1) = 8.32; J(3, 2) = 1.71; J(3, 3) = -1.12;
  J(4, 4) = -1.745; J(4, 5) = 0.43; J(4, 6) = 0.43;
  J(5, 3) = 0.69; J(5, 4) = 1.71; J(5, 5) = -0.43 - 280.0 * y[7]; J(5, 6) = 0.69;
  J(5, 7) = -280.0 * y[5];
  J(6, 5) = 280.0 * y[7]; J(6, 6) = -1.81; J(6, 7) = 280.0 * y[5];
  J(7, 5) = -280.0 * y[7]; J(7, 6) = 1.81; J(7, 7) = -280.0 * y[5];
#undef J
}

static void orego(double t, const double *y, double *f) {
  (void)t;
  f[0] = 77.27 * (y[1] + y[0] * (1.0 - 8.375e-6 * y[0] - y[1]));
  f[1] = (y[2] - (1.0 + y[0]) * y[1]) / 77.27;
  f[2] = 0.161 * (y[0] - y[2]);
}

static void orego_jac(double t, const double *y, double *j) {
  (void)t;
  j[0] = 77.27 * (1.0 - 2.0 * 8.375e-6 * y[0] - y[1]);
  j[1] = 77.27 * (1.0 - y[0]);
  j[2] = 0.0;
  j[3] = -y[1] / 77.27;
  j[4] = -(1.0 + y[0]) / 77.27;
  j[5] = 1.0 / 77.27;
  j[6] = 0.161;
  j[7] = 0.0;
  j[8] = -0.161;
}

const Problem PROBLEMS[4] = {
    {"robertson", 3, {1.0, 0.0, 0.0}, 40.0, 1e-6,
     {0.7158270687193135, 9.185534764557763e-6, 0.2841637457458802},
     "Hairer & Wanner II, sec. IV.10 (t = 40)", robertson, robertson_jac},
    /* Unscaled Van der Pol to t = 2000 is the test set's scaled problem (eps = 1e-6) at
     * t = 2: y1 equal, y2 divided by mu. */
    {"vdp1000", 2, {2.0, 0.0}, 2000.0, 1.0,
     {1.706167732170483, -0.8928097010247975 / MU},
     "IVP test set, vdpol eps = 1e-6 at t = 2", vdp, vdp_jac},
    {"hires", 8, {1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0057}, 321.8122, 1e-4,
     {0.7371312573325668e-3, 0.1442485726316185e-3, 0.5888729740967575e-4,
      0.1175651343283149e-2, 0.2386356198831331e-2, 0.6238968252742796e-2,
      0.2849998395185769e-2, 0.2850001604814231e-2},
     "IVP test set, hires at t = 321.8122", hires, hires_jac},
    {"oregonator", 3, {1.0, 2.0, 3.0}, 360.0, 1e-2,
     {0.1000814870318523e1, 0.1228178521549917e4, 0.1320554942846706e3},
     "Hairer & Wanner II, OREGO at t = 360", orego, orego_jac},
};
