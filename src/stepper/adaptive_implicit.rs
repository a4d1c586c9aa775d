//! Parts shared by the adaptive implicit steppers (bdf2a, tr-bdf2a): their knobs, the step
//! controller and a quadratic dense output.

use super::newton::NEWTON_KNOBS;
use super::rk45::CONTROLLER_KNOBS;
use super::workspace::{load_f64, Workspace};
use super::{knob, step_failed, Knob, StepOutcome, StepperInfo, WsArray};
use crate::error::{Error, Result};

/// Knobs in the reference's packed order.
pub static KNOBS: [Knob; 12] = [
    CONTROLLER_KNOBS[0], // atol
    CONTROLLER_KNOBS[1], // rtol
    CONTROLLER_KNOBS[2], // safety
    Knob {
        name: "min_factor",
        default: 0.2,
        help: "smallest step shrink factor (also the shrink after a Newton failure)",
    },
    CONTROLLER_KNOBS[4], // max_factor
    CONTROLLER_KNOBS[5], // max_tries
    CONTROLLER_KNOBS[6], // min_step
    NEWTON_KNOBS[0],
    NEWTON_KNOBS[1],
    NEWTON_KNOBS[2],
    CONTROLLER_KNOBS[7], // dt_max
    NEWTON_KNOBS[3],
];

/// One attempt at a step of a given size.
pub enum Attempt {
    /// The stage equations were solved; `err` is the weighted RMS error estimate.
    Solved { err: f64 },
    /// A Newton solve (or the factorisation) failed; retried with a smaller step.
    NewtonFailed(String),
}

/// The step controller: accept when err ≤ 1, next step h·clamp(safety·err^(−1/(p+1))) for
/// an error estimate of order p (the stepper's `embedded_order`): 2 for both bdf2a's
/// predictor-corrector estimate and tr-bdf2a's local truncation error estimate.
#[derive(Debug, Clone, Copy)]
pub struct Controller {
    /// −1/(p+1).
    exponent: f64,
    pub atol: f64,
    pub rtol: f64,
    safety: f64,
    min_factor: f64,
    max_factor: f64,
    max_tries: u32,
    min_step: f64,
    pub dt_max: f64,
    /// A step accepted after a failed attempt keeps its size for the next step instead of
    /// growing at once (CVODE's rule after a failure; Hairer's in DOPRI5).
    hold_after_failure: bool,
    /// The safety factor of the shrink after a failed error test (`safety` unless a stepper
    /// sets its own, see [`Controller::with_failure_safety`]).
    failure_safety: f64,
}

impl Controller {
    pub fn from_cfg(info: &StepperInfo, cfg: &[f64]) -> Result<Self> {
        let get = |name| knob(info, cfg, name);
        let c = Controller {
            exponent: -1.0 / f64::from(info.embedded_order.unwrap_or(1) + 1),
            atol: get("atol"),
            rtol: get("rtol"),
            safety: get("safety"),
            min_factor: get("min_factor"),
            max_factor: get("max_factor"),
            max_tries: get("max_tries").clamp(1.0, u32::MAX as f64) as u32,
            min_step: get("min_step"),
            dt_max: get("dt_max"),
            hold_after_failure: false,
            failure_safety: get("safety"),
        };
        super::rk45::validate_controller_knobs(info, cfg)?;
        Ok(c)
    }

    /// The controller with [`Controller::hold_after_failure`] on.
    pub fn holding_after_failure(self) -> Self {
        Controller {
            hold_after_failure: true,
            ..self
        }
    }

    /// The controller shrinking a step whose error test failed by
    /// `s · err^(−1/(p+1))` with s = min(`limit`, the `safety` knob).
    pub fn with_failure_safety(self, limit: f64) -> Self {
        Controller {
            failure_safety: self.safety.min(limit),
            ..self
        }
    }

    /// Weighted RMS norm of `a − b` with scale atol + rtol·max(|y0|, |b|).
    pub fn error_norm(&self, y0: &[f64], a: &[f64], b: &[f64]) -> f64 {
        let mut sum = 0.0;
        for i in 0..y0.len() {
            let scale = self.atol + self.rtol * y0[i].abs().max(b[i].abs());
            let e = (a[i] - b[i]) / scale;
            sum += e * e;
        }
        (sum / y0.len() as f64).sqrt()
    }

    /// Weighted RMS norm of the error vector `e` with scale atol + rtol·max(|y0|, |y1|).
    pub fn norm_of(&self, y0: &[f64], y1: &[f64], e: &[f64]) -> f64 {
        let mut sum = 0.0;
        for ((a, b), e) in y0.iter().zip(y1).zip(e) {
            let r = e / (self.atol + self.rtol * a.abs().max(b.abs()));
            sum += r * r;
        }
        (sum / y0.len() as f64).sqrt()
    }

    /// Runs attempts from `h_in` (capped by dt_max) until one is accepted.
    pub fn drive(
        &self,
        stepper: &str,
        t: f64,
        h_in: f64,
        attempt: impl FnMut(f64) -> Result<Attempt>,
    ) -> Result<StepOutcome> {
        self.drive_with_history(stepper, t, h_in, None, attempt)
    }

    /// [`Controller::drive`] with Gustafsson's predictive rule when `history` is given: the
    /// accepted step's factor is also limited by how the error grew since the last step
    /// (`history`, updated here), so a solution whose error grows step after step shrinks
    /// its steps before they fail rather than after.
    pub fn drive_with_history(
        &self,
        stepper: &str,
        t: f64,
        h_in: f64,
        mut history: Option<&mut ErrorHistory>,
        mut attempt: impl FnMut(f64) -> Result<Attempt>,
    ) -> Result<StepOutcome> {
        let mut h = h_in.min(self.dt_max);
        let mut last = String::new();
        for _ in 0..self.max_tries {
            match attempt(h)? {
                Attempt::NewtonFailed(why) => {
                    if h <= self.min_step {
                        return Err(step_failed(format!(
                            "{stepper}: the implicit step at t = {t} failed even with the \
                             minimum step {}: {why}",
                            self.min_step
                        )));
                    }
                    h = (h * self.min_factor).max(self.min_step);
                    last = why;
                }
                Attempt::Solved { err } => {
                    if err <= 1.0 || h <= self.min_step {
                        let mut factor = if err > 0.0 {
                            (self.safety * err.powf(self.exponent))
                                .clamp(self.min_factor, self.max_factor)
                        } else {
                            self.max_factor
                        };
                        if let Some(hist) = history.as_deref_mut() {
                            factor = factor.min(self.predictive_factor(hist, h, err));
                        }
                        // `last` names the failure of an earlier attempt at this step.
                        if self.hold_after_failure && !last.is_empty() {
                            factor = factor.min(1.0);
                        }
                        return Ok(StepOutcome {
                            h_used: h,
                            h_next: (h * factor).min(self.dt_max),
                        });
                    }
                    // A NaN error estimate shrinks by min_factor (max ignores NaN).
                    h *= self
                        .min_factor
                        .max(self.failure_safety * err.powf(self.exponent));
                    last = format!("error estimate {err:.3e} > 1");
                    if h < self.min_step {
                        return Err(step_failed(format!(
                            "{stepper}: step size fell below min_step = {} at t = {t} ({last})",
                            self.min_step
                        )));
                    }
                }
            }
        }
        Err(step_failed(format!(
            "{stepper}: no acceptable step after {} tries at t = {t} (last h = {h:.3e}; {last})",
            self.max_tries
        )))
    }
}

/// The floor of the error recorded for the predictive rule (RADAU5's), so that one very
/// accurate step does not make the next one grow without bound.
const HISTORY_ERR_FLOOR: f64 = 1e-2;

/// The last accepted step's size and error (floored at [`HISTORY_ERR_FLOOR`]), the memory of
/// the predictive rule; `h = 0`: no step yet (or forgotten at a restart). It affects future
/// steps, so the steppers that use it keep it in their workspace.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ErrorHistory {
    pub h: f64,
    pub err: f64,
}

impl ErrorHistory {
    pub fn save(&self, ws: &mut Workspace) {
        ws.push(WsArray::f64("controller_history", vec![self.h, self.err]));
    }

    /// Loads what [`ErrorHistory::save`] wrote; checks it before changing anything.
    pub fn load(&mut self, ws: &[WsArray], stepper: &str) -> Result<()> {
        let mut v = [0.0; 2];
        load_f64(ws, "controller_history", &mut v)?;
        let [h, err] = v;
        let none = h == 0.0 && err.is_finite();
        let some = h > 0.0 && h.is_finite() && err >= HISTORY_ERR_FLOOR && err.is_finite();
        if !(none || some) {
            return Err(Error::corrupt(format!(
                "{stepper} workspace: controller_history [{h}, {err}] must be a step size \
                 (0: none) and, after a step, its finite error >= {HISTORY_ERR_FLOOR}"
            )));
        }
        *self = ErrorHistory { h, err };
        Ok(())
    }
}

impl Controller {
    /// Gustafsson's predictive factor for an accepted step (in Hairer & Wanner's RADAU5
    /// form, exponent e = 1/(p+1)): safety·(h/h_acc)·err^(−e)·(err_acc/err)^e, clamped like
    /// the classic one; infinite (no limit) without a previous step. Records this step.
    fn predictive_factor(&self, hist: &mut ErrorHistory, h: f64, err: f64) -> f64 {
        let e = -self.exponent;
        let factor = if hist.h > 0.0 && err > 0.0 {
            (self.safety * (h / hist.h) * err.powf(-e) * (hist.err / err).powf(e))
                .clamp(self.min_factor, self.max_factor)
        } else {
            f64::INFINITY
        };
        hist.h = h;
        hist.err = err.max(HISTORY_ERR_FLOOR);
        factor
    }
}

/// Dense output inside the last step: the quadratic through three (time, state) nodes of the
/// step, e.g. (t_{n−1}, y_{n−1}), (t_n, y_n), (t_{n+1}, y_{n+1}) for BDF2 — the method's own
/// collocation polynomial — or (t_n, y_n), (t_n + γh, y_γ), (t_{n+1}, y_{n+1}) for TR-BDF2.
/// Second order, like the methods. Saved with the workspace so a pending step can be
/// interpolated again after a resume.
pub struct QuadraticDense {
    n: usize,
    times: [f64; 3],
    /// Node values, 3 rows of n.
    values: Vec<f64>,
}

impl QuadraticDense {
    pub fn new(n: usize) -> Self {
        QuadraticDense {
            n,
            times: [0.0; 3],
            values: vec![0.0; 3 * n],
        }
    }

    pub fn set(&mut self, times: [f64; 3], nodes: [&[f64]; 3]) {
        self.times = times;
        for (row, node) in nodes.iter().enumerate() {
            self.values[row * self.n..(row + 1) * self.n].copy_from_slice(node);
        }
    }

    pub fn save(&self, ws: &mut Workspace) {
        ws.push(WsArray::matrix("dense", 3, self.n, self.values.clone()));
        ws.push(WsArray::f64("dense_t", self.times.to_vec()));
    }

    pub fn load(&mut self, ws: &[WsArray]) -> Result<()> {
        load_f64(ws, "dense", &mut self.values)?;
        load_f64(ws, "dense_t", &mut self.times)
    }

    /// Whether the last node is (t, y), bit for bit: a step from there continues the
    /// trajectory these nodes describe (not after a restart that changed the state).
    pub fn ends_at(&self, t: f64, y: &[f64]) -> bool {
        let last = &self.values[2 * self.n..];
        self.times[2].to_bits() == t.to_bits()
            && last.iter().zip(y).all(|(a, b)| a.to_bits() == b.to_bits())
    }

    /// Invalidates the nodes: no interpolation, and `ends_at` serves no derivative (the
    /// times are no longer increasing).
    pub fn forget(&mut self) {
        self.times = [0.0; 3];
    }

    /// The values of node `k` (0, 1 or 2).
    pub fn node(&self, k: usize) -> &[f64] {
        &self.values[k * self.n..(k + 1) * self.n]
    }

    /// The times of the three nodes.
    pub fn node_times(&self) -> [f64; 3] {
        self.times
    }

    /// Lagrange form of the quadratic at `t` (outside the nodes: extrapolation); false if no
    /// step has set the nodes.
    pub fn interpolate(&self, t: f64, out: &mut [f64]) -> bool {
        let [t0, t1, t2] = self.times;
        if !(t0 < t1 && t1 < t2) {
            return false;
        }
        let l0 = (t - t1) * (t - t2) / ((t0 - t1) * (t0 - t2));
        let l1 = (t - t0) * (t - t2) / ((t1 - t0) * (t1 - t2));
        let l2 = (t - t0) * (t - t1) / ((t2 - t0) * (t2 - t1));
        let n = self.n;
        for (i, o) in out.iter_mut().enumerate() {
            *o = l0 * self.values[i] + l1 * self.values[n + i] + l2 * self.values[2 * n + i];
        }
        true
    }
}
