/* The reference loops a user would write by hand in C, compiled by run.sh twice (-O2 and
 * -O3) with different symbol prefixes and linked into one benchmark binary. Each takes the
 * initial state in `y` and leaves the final state there; `rec_*` are NULL (no recording) or
 * preallocated columns of n + 1 samples (t, then each state). */
#include <math.h>
#include <stddef.h>

#define CAT2(a, b) a##b
#define CAT(a, b) CAT2(a, b)
#define NAME(f) CAT(PREFIX, f)

static inline void lorenz(const double *y, double *f) {
    const double s = 10.0, r = 28.0, b = 8.0 / 3.0;
    f[0] = s * (y[1] - y[0]);
    f[1] = y[0] * (r - y[2]) - y[1];
    f[2] = y[0] * y[1] - b * y[2];
}

static inline void izh(const double *y, double *f) {
    const double a = 0.02, b = 0.2, I = 10.0;
    f[0] = 0.04 * y[0] * y[0] + 5.0 * y[0] + 140.0 - y[1] + I;
    f[1] = a * (b * y[0] - y[1]);
}

#define RK4_STEP(F, N, y, h)                                                      \
    do {                                                                          \
        double k1[N], k2[N], k3[N], k4[N], tmp[N];                                \
        F(y, k1);                                                                 \
        for (int m = 0; m < N; m++) tmp[m] = y[m] + 0.5 * h * k1[m];              \
        F(tmp, k2);                                                               \
        for (int m = 0; m < N; m++) tmp[m] = y[m] + 0.5 * h * k2[m];              \
        F(tmp, k3);                                                               \
        for (int m = 0; m < N; m++) tmp[m] = y[m] + h * k3[m];                    \
        F(tmp, k4);                                                               \
        for (int m = 0; m < N; m++)                                               \
            y[m] += h / 6.0 * (k1[m] + 2.0 * k2[m] + 2.0 * k3[m] + k4[m]);        \
    } while (0)

void NAME(rk4_lorenz)(long n, double dt, double *y, double *rec_t, double **rec) {
    if (rec_t) {
        rec_t[0] = 0.0;
        for (int m = 0; m < 3; m++) rec[m][0] = y[m];
    }
    for (long i = 1; i <= n; i++) {
        RK4_STEP(lorenz, 3, y, dt);
        if (rec_t) {
            rec_t[i] = i * dt;
            for (int m = 0; m < 3; m++) rec[m][i] = y[m];
        }
    }
}

/* Izhikevich with its reset: v >= 30 after a step sets v = c, u += d. */
void NAME(rk4_izhikevich)(long n, double dt, double *y, double *rec_t, double **rec) {
    const double c = -65.0, d = 8.0, v_th = 30.0;
    if (rec_t) {
        rec_t[0] = 0.0;
        for (int m = 0; m < 2; m++) rec[m][0] = y[m];
    }
    for (long i = 1; i <= n; i++) {
        RK4_STEP(izh, 2, y, dt);
        if (y[0] >= v_th) {
            y[0] = c;
            y[1] += d;
        }
        if (rec_t) {
            rec_t[i] = i * dt;
            for (int m = 0; m < 2; m++) rec[m][i] = y[m];
        }
    }
}

void NAME(logistic)(long n, double *x, double *rec_t, double **rec) {
    const double r = 4.0;
    if (rec_t) {
        rec_t[0] = 0.0;
        rec[0][0] = x[0];
    }
    for (long i = 1; i <= n; i++) {
        x[0] = r * x[0] * (1.0 - x[0]);
        if (rec_t) {
            rec_t[i] = (double)i;
            rec[0][i] = x[0];
        }
    }
}

/* Dormand-Prince 5(4) with the usual controller (the library's defaults: atol 1e-8,
 * rtol 1e-5, safety 0.9, factors 0.2..5), recording every accepted step. Returns the number
 * of accepted steps. */
long NAME(rk45_lorenz)(double t_end, double *y, double *rec_t, double **rec, long cap) {
    static const double c2 = 1.0 / 5, c3 = 3.0 / 10, c4 = 4.0 / 5, c5 = 8.0 / 9;
    static const double a21 = 1.0 / 5, a31 = 3.0 / 40, a32 = 9.0 / 40, a41 = 44.0 / 45,
                        a42 = -56.0 / 15, a43 = 32.0 / 9, a51 = 19372.0 / 6561,
                        a52 = -25360.0 / 2187, a53 = 64448.0 / 6561, a54 = -212.0 / 729,
                        a61 = 9017.0 / 3168, a62 = -355.0 / 33, a63 = 46732.0 / 5247,
                        a64 = 49.0 / 176, a65 = -5103.0 / 18656, b1 = 35.0 / 384,
                        b3 = 500.0 / 1113, b4 = 125.0 / 192, b5 = -2187.0 / 6784,
                        b6 = 11.0 / 84;
    static const double e1 = 35.0 / 384 - 5179.0 / 57600, e3 = 500.0 / 1113 - 7571.0 / 16695,
                        e4 = 125.0 / 192 - 393.0 / 640, e5 = -2187.0 / 6784 + 92097.0 / 339200,
                        e6 = 11.0 / 84 - 187.0 / 2100, e7 = -1.0 / 40;
    const double atol = 1e-8, rtol = 1e-5;
    double t = 0.0, h = 1e-3;
    double k1[3], k2[3], k3[3], k4[3], k5[3], k6[3], k7[3], tmp[3], y5[3];
    long acc = 0;
    (void)c2; (void)c3; (void)c4; (void)c5;
    if (rec_t) {
        rec_t[0] = 0.0;
        for (int m = 0; m < 3; m++) rec[m][0] = y[m];
    }
    lorenz(y, k1);
    while (t < t_end && acc + 1 < cap) {
        if (t + h > t_end) h = t_end - t;
        for (int m = 0; m < 3; m++) tmp[m] = y[m] + h * a21 * k1[m];
        lorenz(tmp, k2);
        for (int m = 0; m < 3; m++) tmp[m] = y[m] + h * (a31 * k1[m] + a32 * k2[m]);
        lorenz(tmp, k3);
        for (int m = 0; m < 3; m++) tmp[m] = y[m] + h * (a41 * k1[m] + a42 * k2[m] + a43 * k3[m]);
        lorenz(tmp, k4);
        for (int m = 0; m < 3; m++)
            tmp[m] = y[m] + h * (a51 * k1[m] + a52 * k2[m] + a53 * k3[m] + a54 * k4[m]);
        lorenz(tmp, k5);
        for (int m = 0; m < 3; m++)
            tmp[m] = y[m] + h * (a61 * k1[m] + a62 * k2[m] + a63 * k3[m] + a64 * k4[m] + a65 * k5[m]);
        lorenz(tmp, k6);
        for (int m = 0; m < 3; m++)
            y5[m] = y[m] + h * (b1 * k1[m] + b3 * k3[m] + b4 * k4[m] + b5 * k5[m] + b6 * k6[m]);
        lorenz(y5, k7);
        double sum = 0.0;
        for (int m = 0; m < 3; m++) {
            double e = h * (e1 * k1[m] + e3 * k3[m] + e4 * k4[m] + e5 * k5[m] + e6 * k6[m] + e7 * k7[m]);
            double sc = atol + rtol * fmax(fabs(y[m]), fabs(y5[m]));
            sum += (e / sc) * (e / sc);
        }
        double err = sqrt(sum / 3.0);
        if (err <= 1.0) {
            t += h;
            for (int m = 0; m < 3; m++) {
                y[m] = y5[m];
                k1[m] = k7[m]; /* FSAL */
            }
            acc++;
            if (rec_t) {
                rec_t[acc] = t;
                for (int m = 0; m < 3; m++) rec[m][acc] = y[m];
            }
            double f = err > 0.0 ? 0.9 * pow(err, -0.2) : 5.0;
            h *= f < 0.2 ? 0.2 : (f > 5.0 ? 5.0 : f);
        } else {
            double f = 0.9 * pow(err, -0.25);
            h *= f < 0.2 ? 0.2 : f;
        }
    }
    return acc;
}
