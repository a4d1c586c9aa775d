//! Initial step size for adaptive methods on a fresh run (a Hairer–Shampine style estimate in
//! the weighted RMS norm). Resumed runs never call it: they continue with the step the
//! controller proposed, which is part of the session state.

use super::Rhs;
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
}

fn rms(v: impl Iterator<Item = f64>, n: usize) -> f64 {
    (v.map(|x| x * x).sum::<f64>() / n as f64).sqrt()
}

/// Estimates a first step.
pub fn estimate(f: &mut dyn Rhs, p: &InitialStep<'_>) -> Result<f64> {
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
