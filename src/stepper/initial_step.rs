//! Initial step size for adaptive methods on a fresh run. Resumed runs never call it: they
//! continue with the step the controller proposed, which is part of the session state.
//!
//! Two rules: a Hairer–Shampine style estimate in the weighted RMS norm for the one-step
//! methods, and for `bdf` the rule of CVODE (Hindmarsh et al., ACM TOMS 31, 2005, sec. 2.1),
//! which sizes the first backward-Euler step from a difference estimate of y''. `bdf` follows
//! CVODE's step and order selection; its step sequence is sensitive to the first step (a
//! different h₀ moves the whole run by ±15% in steps), so the two only take comparable paths
//! when they also start alike.
//!
//! Unlike CVODE's, the `bdf` rule does not look at the horizon of the run (CVODE bounds h₀ by
//! a tenth of the distance to the first output and by a hundred roundings of it): a run in
//! pieces must take the steps of one uninterrupted run, and its first piece does not know
//! where the last one ends. A first step past a short horizon is harmless — the session
//! interpolates inside it.

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
        if let Some(h) = second_derivative_step(f, p)? {
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

/// Trial steps of the y'' estimate (CVODE's MAX_ITERS).
const TRIALS: usize = 4;
/// The first step may change no component by more than this fraction (Euler step).
const GROWTH_BOUND: f64 = 0.1;
/// The lower bound, in units of the rounding of t (at t₀ or at the upper bound).
const LOWER_ROUNDINGS: f64 = 100.0;
/// Safety factor on the step whose estimated local error equals the tolerance.
const BIAS: f64 = 0.5;

/// The first step of a first-order BDF step: the h at which the local error ½h²‖y''‖ is the
/// tolerance, times [`BIAS`], with y'' ≈ (f(t₀+h, y₀+h·f₀) − f₀)/h re-estimated at the
/// proposed h until two proposals agree within a factor 2. Bounded above by [`GROWTH_BOUND`]
/// of every |y/y'| (and the cap), below by a hundred roundings of t.
/// `None` when the rule does not apply (no interval, zero weights, f₀ = 0 so no bound,
/// non-finite values): the general estimate is used instead.
fn second_derivative_step(f: &mut dyn Rhs, p: &InitialStep<'_>) -> Result<Option<f64>> {
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
    let rate = (0..n)
        .map(|i| f0[i].abs() / (GROWTH_BOUND * p.y0[i].abs() + tolerance[i]))
        .fold(0.0, f64::max);
    if !(rate > 0.0 && rate.is_finite()) {
        return Ok(None);
    }
    let mut upper = 1.0 / rate;
    if p.cap.is_finite() && p.cap > 0.0 {
        upper = upper.min(p.cap);
    }
    let lower = LOWER_ROUNDINGS * f64::EPSILON * p.t0.abs().max(upper);
    if upper < lower {
        return Ok(Some((lower * upper).sqrt()));
    }
    let mut probe = SecondDerivative {
        t0: p.t0,
        y0: p.y0,
        f0: &f0,
        tolerance: &tolerance,
        y: vec![0.0; n],
        f: vec![0.0; n],
    };
    let Some(h) = probe.settle((lower * upper).sqrt(), upper, f)? else {
        return Ok(None);
    };
    Ok(Some((BIAS * h).clamp(lower, upper)))
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

    /// Iterates h ← √(2/‖y''‖) from `h` until a proposal is within a factor 2 of the step it
    /// was computed at (or a proposal jumps up by more than 2 after the first trial: the
    /// difference quotient is then likely dominated by cancellation, so the trial is kept).
    /// An agreeing proposal is taken without evaluating f there again.
    fn settle(&mut self, mut h: f64, upper: f64, f: &mut dyn Rhs) -> Result<Option<f64>> {
        let mut last_good = None;
        for trial in 1..=TRIALS {
            let Some((h_ok, norm)) = self.norm_near(h, f)? else {
                return Ok(last_good);
            };
            h = h_ok;
            last_good = Some(h);
            if trial == TRIALS {
                break;
            }
            let proposal = if norm * upper * upper > 2.0 {
                (2.0 / norm).sqrt()
            } else {
                (h * upper).sqrt()
            };
            let ratio = proposal / h;
            if trial > 1 && ratio > 2.0 {
                break;
            }
            if ratio > 0.5 && ratio < 2.0 {
                return Ok(Some(proposal));
            }
            h = proposal;
        }
        Ok(last_good)
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
    fn bdf_starts_where_half_h_squared_y_second_derivative_is_a_quarter_tolerance() {
        for k in [0.5, 3.0, 40.0] {
            let (h, evals) = first_step(k, 100.0, f64::INFINITY);
            // ‖y''‖ in the weights is k²/(rtol + atol); the rule's step is ½·√(2/‖y''‖).
            let norm = k * k / (1e-3 + 1e-6);
            let want = 0.5 * (2.0 / norm).sqrt();
            assert!(
                (h / want - 1.0).abs() < 1e-12,
                "k = {k}: h = {h}, want {want}"
            );
            // f₀ and two trial quotients (the second proposal agrees with the first).
            assert_eq!(evals, 3, "k = {k}");
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
        // No component may grow by more than a tenth of itself in an Euler step: y0 = 1,
        // |f0| = k, so h <= 0.1/k (with the tolerance added to |y|).
        let (h, _) = first_step(1e4, 100.0, f64::INFINITY);
        assert!(h <= (0.1 + 1e-3 + 1e-6) / 1e4, "h = {h}");
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
