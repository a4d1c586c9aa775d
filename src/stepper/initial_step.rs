//! Initial step size for adaptive methods on a fresh run. Resumed runs never call it: they
//! continue with the step the controller proposed, which is part of the session state.
//!
//! Two rules: a Hairer–Shampine style estimate in the weighted RMS norm for the one-step
//! methods, and for `bdf` the starting-step algorithm of Hairer, Nørsett & Wanner (Solving
//! ODEs I, sec. II.4; the `hinit` of their codes) for its first, first-order step.
//!
//! Neither `bdf` rule may look at the horizon of the run (CVODE's does: it bounds h₀ by a
//! tenth of the distance to the first output and by a hundred roundings of it): a run in
//! pieces must take the steps of one uninterrupted run, and its first piece does not know
//! where the last one ends. A first step past a short horizon is harmless — the session
//! interpolates inside it. `bdf` follows CVODE's step and order selection and its step
//! sequence is sensitive to the first step (a different h₀ moves the whole run by ±15% in
//! steps, and Van der Pol's error at its end erratically), so it takes CVODE's path only when
//! started with CVODE's h₀ (README, "Stiff problems").

use super::{Rhs, StepperInfo};
use crate::error::Result;

/// Inputs of the estimate.
pub struct InitialStep<'a> {
    pub t0: f64,
    pub y0: &'a [f64],
    pub t_end: f64,
    pub order: u32,
    pub atol: f64,
    pub rtol: f64,
    /// Upper bound (user dt or dt_max); infinity for none.
    pub cap: f64,
    /// The method the step is for (picks the rule).
    pub stepper: &'static StepperInfo,
}

fn rms(v: impl Iterator<Item = f64>, n: usize) -> f64 {
    (v.map(|x| x * x).sum::<f64>() / n as f64).sqrt()
}

/// Estimates a first step.
pub fn estimate(f: &mut dyn Rhs, p: &InitialStep<'_>) -> Result<f64> {
    if std::ptr::eq(p.stepper, &super::bdf::INFO) {
        if let Some(h) = first_order_step(f, p)? {
            return Ok(h);
        }
    }
    one_step_estimate(f, p)
}

/// Hairer–Shampine: h ~ 0.01·(1/max(‖f‖, ‖Δf/h₀‖))^(1/(order+1)).
fn one_step_estimate(f: &mut dyn Rhs, p: &InitialStep<'_>) -> Result<f64> {
    let n = p.y0.len();
    let scale: Vec<f64> = p.y0.iter().map(|y| p.atol + p.rtol * y.abs()).collect();
    let mut f0 = vec![0.0; n];
    f.eval(p.t0, p.y0, &mut f0)?;
    let d0 = rms(p.y0.iter().zip(&scale).map(|(y, s)| y / s), n);
    let d1 = rms(f0.iter().zip(&scale).map(|(y, s)| y / s), n);
    let span = (p.t_end - p.t0).abs();
    let mut h0 = if d0 < 1e-5 || d1 < 1e-5 {
        1e-6
    } else {
        0.01 * d0 / d1
    };
    if span > 0.0 {
        h0 = h0.min(span);
    }
    let y1: Vec<f64> = p.y0.iter().zip(&f0).map(|(y, d)| y + h0 * d).collect();
    let mut f1 = vec![0.0; n];
    f.eval(p.t0 + h0, &y1, &mut f1)?;
    let d2 = rms(
        f1.iter()
            .zip(&f0)
            .zip(&scale)
            .map(|((a, b), s)| (a - b) / s),
        n,
    ) / h0;
    let mut h = 0.01 * (1.0 / d1.max(d2).max(1e-15)).powf(1.0 / f64::from(p.order + 1));
    if p.cap.is_finite() && p.cap > 0.0 {
        h = h.min(p.cap);
    }
    if span > 0.0 {
        h = h.min(span);
    }
    Ok(h.max(1e-16))
}

/// Trial steps of the Euler probe while f is not finite there (CVODE's MAX_ITERS).
const TRIALS: usize = 4;

/// The first step of a first-order (backward Euler) step, by the algorithm of Hairer,
/// Nørsett & Wanner (Solving ODEs I, sec. II.4, p = 1), all norms weighted RMS with the
/// tolerances rtol·|y₀| + atol: a probe h = 0.01·‖y₀‖/‖f₀‖ (10⁻⁶ when either is below
/// 10⁻⁵; at most the cap), y'' ≈ (f(t₀+h, y₀+h·f₀) − f₀)/h there, and then the step at which
/// h²·max(‖f₀‖, ‖y''‖) is 0.01, at most 100 probes (and the cap). One evaluation of f beyond
/// f₀ (more only when f is not finite at the probe: it shrinks by 5, CVODE's recovery).
/// `None` when the rule does not apply (no interval, zero weights, non-finite values): the
/// general estimate is used instead.
fn first_order_step(f: &mut dyn Rhs, p: &InitialStep<'_>) -> Result<Option<f64>> {
    let n = p.y0.len();
    let span = (p.t_end - p.t0).abs();
    let tolerance: Vec<f64> = p.y0.iter().map(|y| p.rtol * y.abs() + p.atol).collect();
    if span == 0.0 || n == 0 || tolerance.iter().any(|w| !(*w > 0.0 && w.is_finite())) {
        return Ok(None);
    }
    let mut f0 = vec![0.0; n];
    f.eval(p.t0, p.y0, &mut f0)?;
    if f0.iter().any(|v| !v.is_finite()) {
        return Ok(None);
    }
    let d0 = rms(p.y0.iter().zip(&tolerance).map(|(y, w)| y / w), n);
    let d1 = rms(f0.iter().zip(&tolerance).map(|(v, w)| v / w), n);
    let capped = |h: f64| {
        if p.cap.is_finite() && p.cap > 0.0 {
            h.min(p.cap)
        } else {
            h
        }
    };
    let probe_step = capped(if d0 < 1e-5 || d1 < 1e-5 {
        1e-6
    } else {
        0.01 * d0 / d1
    });
    let mut probe = SecondDerivative {
        t0: p.t0,
        y0: p.y0,
        f0: &f0,
        tolerance: &tolerance,
        y: vec![0.0; n],
        f: vec![0.0; n],
    };
    let Some((h, d2)) = probe.norm_near(probe_step, f)? else {
        return Ok(None);
    };
    let d = d1.max(d2);
    let step = if d <= 1e-15 {
        (h * 1e-3).max(1e-6)
    } else {
        (0.01 / d).sqrt()
    };
    let h0 = capped((100.0 * h).min(step));
    Ok((h0 > 0.0 && h0.is_finite()).then_some(h0))
}

/// Difference estimates of ‖y''‖ at trial steps.
struct SecondDerivative<'a> {
    t0: f64,
    y0: &'a [f64],
    f0: &'a [f64],
    tolerance: &'a [f64],
    y: Vec<f64>,
    f: Vec<f64>,
}

impl SecondDerivative<'_> {
    /// ‖(f(t₀+h, y₀+h·f₀) − f₀)/h‖ in the error weights; None when f is not finite there.
    fn norm_at(&mut self, h: f64, f: &mut dyn Rhs) -> Result<Option<f64>> {
        for ((y, y0), f0) in self.y.iter_mut().zip(self.y0).zip(self.f0) {
            *y = y0 + h * f0;
        }
        f.eval(self.t0 + h, &self.y, &mut self.f)?;
        let n = self.y.len();
        let norm = rms(
            (0..n).map(|i| (self.f[i] - self.f0[i]) / h / self.tolerance[i]),
            n,
        );
        Ok(norm.is_finite().then_some(norm))
    }

    /// A norm at `h`, shrinking h by 5 while f is not finite there (CVODE's recovery).
    fn norm_near(&mut self, mut h: f64, f: &mut dyn Rhs) -> Result<Option<(f64, f64)>> {
        for _ in 0..TRIALS {
            if let Some(norm) = self.norm_at(h, f)? {
                return Ok(Some((h, norm)));
            }
            h *= 0.2;
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stepper::bdf;

    /// y' = −k·y: y'' = k²·y, and the Euler difference quotient of f is exactly k²·y₀.
    struct Decay {
        k: f64,
        evals: usize,
    }

    impl Rhs for Decay {
        fn eval(&mut self, _t: f64, y: &[f64], out: &mut [f64]) -> Result<()> {
            self.evals += 1;
            out[0] = -self.k * y[0];
            Ok(())
        }
    }

    fn first_step(k: f64, t_end: f64, cap: f64) -> (f64, usize) {
        let mut f = Decay { k, evals: 0 };
        let h = estimate(
            &mut f,
            &InitialStep {
                t0: 0.0,
                y0: &[1.0],
                t_end,
                order: 1,
                atol: 1e-6,
                rtol: 1e-3,
                cap,
                stepper: &bdf::INFO,
            },
        )
        .unwrap();
        (h, f.evals)
    }

    #[test]
    fn bdf_starts_where_h_squared_times_the_larger_of_f_and_y_second_derivative_is_a_hundredth() {
        let tol = 1e-3 + 1e-6;
        // k < 1: ‖f₀‖ is the larger of the two; k > 1: ‖y''‖.
        for k in [1e-5, 0.5, 3.0, 40.0] {
            let (h, evals) = first_step(k, 100.0, f64::INFINITY);
            // In the weights: ‖y₀‖ = 1/tol, ‖f₀‖ = k/tol, so the probe is 0.01/k, and the
            // difference quotient of f there is exactly ‖y''‖ = k²/tol.
            let probe = 0.01 * (1.0 / tol) / (k / tol);
            let want = (0.01 / (k / tol).max(k * k / tol))
                .sqrt()
                .min(100.0 * probe);
            assert!(
                (h / want - 1.0).abs() < 1e-12,
                "k = {k}: h = {h}, want {want}"
            );
            // f₀ and one probe.
            assert_eq!(evals, 2, "k = {k}");
        }
    }

    #[test]
    fn bdf_first_step_ignores_the_horizon_and_respects_the_cap() {
        // A run in pieces starts as one uninterrupted run does.
        let (short, _) = first_step(0.5, 1e-4, f64::INFINITY);
        let (long, _) = first_step(0.5, 100.0, f64::INFINITY);
        assert_eq!(short.to_bits(), long.to_bits());
        let (h, _) = first_step(0.5, 100.0, 1e-4);
        assert!(h <= 1e-4 && h > 0.0, "h = {h}");
        assert!(h < long, "{h} vs {long}");
    }

    /// y' = (0, −1), not finite where y₂ < 0.5.
    struct Wall {
        evals: usize,
    }

    impl Rhs for Wall {
        fn eval(&mut self, _t: f64, y: &[f64], out: &mut [f64]) -> Result<()> {
            self.evals += 1;
            out[0] = 0.0;
            out[1] = if y[1] < 0.5 { f64::NAN } else { -1.0 };
            Ok(())
        }
    }

    #[test]
    fn bdf_probe_shrinks_where_f_is_not_finite() {
        let mut f = Wall { evals: 0 };
        let p = InitialStep {
            t0: 0.0,
            y0: &[100.0, 0.6],
            t_end: 100.0,
            order: 1,
            atol: 1.0,
            rtol: 0.0,
            cap: f64::INFINITY,
            stepper: &bdf::INFO,
        };
        let h = estimate(&mut f, &p).unwrap();
        // ‖y₀‖ ≈ 70.7, ‖f₀‖ = √½: the probe 1.0 and then 0.2 cross the wall, 0.04 does not
        // (f₀, three probes). f is constant there, so the step is √(0.01/‖f₀‖) ≈ 0.119
        // (below 100 probes).
        assert_eq!(f.evals, 4);
        let want = (0.01 / 0.5f64.sqrt()).sqrt();
        assert!((h / want - 1.0).abs() < 1e-12, "h = {h}, want {want}");
    }

    #[test]
    fn other_steppers_keep_the_one_step_rule() {
        let info = crate::stepper::lookup("rk45").unwrap();
        let p = InitialStep {
            t0: 0.0,
            y0: &[1.0],
            t_end: 100.0,
            order: 4,
            atol: 1e-6,
            rtol: 1e-3,
            cap: f64::INFINITY,
            stepper: info,
        };
        let h = estimate(&mut Decay { k: 3.0, evals: 0 }, &p).unwrap();
        let h_one_step = one_step_estimate(&mut Decay { k: 3.0, evals: 0 }, &p).unwrap();
        assert_eq!(h.to_bits(), h_one_step.to_bits());
    }
}
