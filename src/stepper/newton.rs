//! Simplified Newton iteration for the stage equations of the implicit steppers.
//!
//! Every implicit stage of bdf2, sdirk2, bdf2a and tr-bdf2a has the form
//!
//! ```text
//!     G(y) = y − c·f(t_s, y) − r = 0
//! ```
//!
//! with a known vector `r` and a scalar `c` (the step size times the method's diagonal
//! coefficient). The iteration matrix is `M = I − c·J` with `J = ∂f/∂y`.
//!
//! The Jacobian is evaluated once per step, at the starting guess of the step's first solve
//! (simplified Newton), and factorised once per distinct `c`; solves with the same `c`
//! (TR-BDF2's two stages, SDIRK's two stages) share the factorisation. If a later solve fails
//! with that Jacobian, it is evaluated afresh at that solve's starting guess and the solve is
//! tried once more.
//!
//! Nothing here survives a step: [`Newton::begin_step`] discards the Jacobian and its
//! factorisation, so a stepper's saved workspace never has to carry them and resume stays
//! bit-exact. The factorisation is done in place in preallocated storage ([`DenseLu`]), so a
//! step allocates nothing.
//!
//! The adaptive steppers (bdf2a, tr-bdf2a) also stop as soon as the iteration error is small
//! against the error they accept per step: the weighted RMS update times the estimated
//! contraction rate below [`TIED_FRACTION`] in the controller's weights (after CVODE's
//! test), rather than only at the fixed `newton_tol`, which is independent of the tolerance.
//!
//! `jacobian_mode` is a config knob and knob values are `f64`, so the two modes are encoded
//! as numbers: `0` = internal (finite differences), `1` = external (the model's analytic
//! `[equations.jacobian]`, or a host Jacobian callback; a model without one silently falls
//! back to finite differences). In a model's `[sim]` table the strings `"internal"` and
//! `"external"` map to these numbers.

use super::dense_lu::DenseLu;
use super::{knob, step_failed, Knob, Rhs, StepperInfo};
use crate::error::{Error, Result};

/// A pivot of `M = I − c·J` smaller than this times `max(1, |c|·max|J_ij|)` makes the matrix
/// singular.
const PIVOT_TOL: f64 = 1e-14;

/// Adaptive steppers accept a stage solve once the remaining iteration error is below this
/// fraction of the local error tolerance. CVODE uses 0.1 (with a rate carried across steps);
/// at 0.1 tr-bdf2a's error estimate accepted wrong steps on Van der Pol (μ = 1000) at rtol
/// 1e-3 — error 1.0 after 19 steps, against 5e-3 in 258 steps at 0.01.
const TIED_FRACTION: f64 = 0.01;
/// The contraction-rate estimate decays by at most this factor per iteration (CVODE's
/// CRDOWN), so one lucky update does not make the rate look tiny.
const RATE_DECAY: f64 = 0.3;

/// `jacobian_mode` value for finite differences.
pub const JACOBIAN_INTERNAL: f64 = 0.0;
/// `jacobian_mode` value for the model's analytic Jacobian.
pub const JACOBIAN_EXTERNAL: f64 = 1.0;

/// The Newton knobs shared by every implicit stepper, in the reference's order.
pub const NEWTON_KNOBS: [Knob; 4] = [
    Knob {
        name: "newton_tol",
        default: 1e-8,
        help: "Newton convergence tolerance (residual and relative update); adaptive \
               steppers also stop once the iteration error is 1% of the error tolerance",
    },
    Knob {
        name: "newton_max_iter",
        default: 50.0,
        help: "Newton iterations per stage solve before the solve fails",
    },
    Knob {
        name: "jac_eps",
        default: 1e-8,
        help: "relative perturbation of the finite-difference Jacobian",
    },
    Knob {
        name: "jacobian_mode",
        default: JACOBIAN_INTERNAL,
        help: "0 = finite differences (internal), 1 = the model's analytic Jacobian (external)",
    },
];

/// Newton settings read from a stepper's config vector.
#[derive(Debug, Clone, Copy)]
pub struct NewtonConfig {
    pub tol: f64,
    pub max_iter: u32,
    pub jac_eps: f64,
    pub analytic: bool,
    /// The step controller's tolerances, for the tolerance-tied test (adaptive steppers).
    pub tied: Option<ErrorScale>,
}

/// Weights 1/(atol + rtol·|y|) of a controller.
#[derive(Debug, Clone, Copy)]
pub struct ErrorScale {
    pub atol: f64,
    pub rtol: f64,
}

impl ErrorScale {
    /// Weighted RMS norm of `d` at the state `y`.
    fn norm(&self, d: &[f64], y: &[f64]) -> f64 {
        let sum: f64 = d
            .iter()
            .zip(y)
            .map(|(d, y)| {
                let e = d / (self.atol + self.rtol * y.abs());
                e * e
            })
            .sum();
        (sum / d.len().max(1) as f64).sqrt()
    }
}

impl NewtonConfig {
    /// Reads and checks the Newton knobs of `info` from `cfg`.
    pub fn from_cfg(info: &StepperInfo, cfg: &[f64]) -> Result<Self> {
        let get = |name| knob(info, cfg, name);
        let (tol, max_iter, jac_eps, mode) = (
            get("newton_tol"),
            get("newton_max_iter"),
            get("jac_eps"),
            get("jacobian_mode"),
        );
        let bad = |what: String| Err(Error::invalid(format!("stepper '{}': {what}", info.name)));
        if !(tol > 0.0 && tol.is_finite()) {
            return bad(format!("newton_tol must be positive and finite, got {tol}"));
        }
        if !(max_iter >= 1.0 && max_iter.is_finite()) {
            return bad(format!(
                "newton_max_iter must be at least 1, got {max_iter}"
            ));
        }
        if !(jac_eps > 0.0 && jac_eps.is_finite()) {
            return bad(format!(
                "jac_eps must be positive and finite, got {jac_eps}"
            ));
        }
        let analytic = if mode == JACOBIAN_INTERNAL {
            false
        } else if mode == JACOBIAN_EXTERNAL {
            true
        } else {
            return bad(format!(
                "jacobian_mode must be 0 (internal, finite differences) or 1 (external, the \
                 model's Jacobian), got {mode}"
            ));
        };
        // The adaptive steppers' controller knobs are checked by the controller itself.
        let tied = info.adaptive.then(|| ErrorScale {
            atol: get("atol"),
            rtol: get("rtol"),
        });
        Ok(NewtonConfig {
            tol,
            max_iter: max_iter.min(u32::MAX as f64) as u32,
            jac_eps,
            analytic,
            tied,
        })
    }
}

/// Outcome of one stage solve. A failure is not an error by itself: adaptive methods retry
/// with a smaller step, fixed-step methods turn it into a step failure.
#[derive(Debug, Clone, PartialEq)]
pub enum Solve {
    Converged,
    Failed(String),
}

/// Newton solver state for one step (all of it scratch).
pub struct Newton {
    n: usize,
    /// ∂f/∂y, row-major, and whether it is valid for the current step.
    jac: Vec<f64>,
    jac_valid: bool,
    /// Factorisation of `I − c·J`, whether it is valid, and the `c` it belongs to.
    lu: DenseLu,
    lu_valid: bool,
    lu_coeff: f64,
    f_val: Vec<f64>,
    f_pert: Vec<f64>,
    y_pert: Vec<f64>,
    y_start: Vec<f64>,
    rhs: Vec<f64>,
}

impl Newton {
    pub fn new(n: usize) -> Self {
        Newton {
            n,
            jac: vec![0.0; n * n],
            jac_valid: false,
            lu: DenseLu::new(n),
            lu_valid: false,
            lu_coeff: 0.0,
            f_val: vec![0.0; n],
            f_pert: vec![0.0; n],
            y_pert: vec![0.0; n],
            y_start: vec![0.0; n],
            rhs: vec![0.0; n],
        }
    }

    /// Forgets the Jacobian and factorisation of the previous step.
    pub fn begin_step(&mut self) {
        self.jac_valid = false;
        self.lu_valid = false;
    }

    /// Evaluates `J = ∂f/∂y` at `(t, y)`: analytic when configured and available, otherwise
    /// forward differences with column perturbation `jac_eps · max(1, |y_j|)`. `Converged`
    /// means a finite Jacobian is ready.
    pub fn evaluate_jacobian(
        &mut self,
        f: &mut dyn Rhs,
        t: f64,
        y: &[f64],
        cfg: &NewtonConfig,
    ) -> Result<Solve> {
        let n = self.n;
        self.lu_valid = false;
        self.jac_valid = false;
        let analytic = if cfg.analytic {
            f.jacobian(t, y, &mut self.jac)
        } else {
            None
        };
        match analytic {
            Some(r) => r?,
            None => {
                f.eval(t, y, &mut self.f_val)?;
                if let Some(i) = self.f_val.iter().position(|v| !v.is_finite()) {
                    return Ok(Solve::Failed(format!(
                        "the right-hand side is not finite (component {i}) at t = {t}"
                    )));
                }
                self.y_pert.copy_from_slice(y);
                for (j, &yj) in y.iter().enumerate() {
                    let eps = cfg.jac_eps * yj.abs().max(1.0);
                    self.y_pert[j] = yj + eps;
                    // The representable perturbation, not the requested one.
                    let dy = self.y_pert[j] - yj;
                    f.eval(t, &self.y_pert, &mut self.f_pert)?;
                    self.y_pert[j] = yj;
                    for i in 0..n {
                        self.jac[i * n + j] = (self.f_pert[i] - self.f_val[i]) / dy;
                    }
                }
            }
        }
        if let Some(k) = self.jac.iter().position(|v| !v.is_finite()) {
            return Ok(Solve::Failed(format!(
                "the Jacobian entry ({}, {}) is {} at t = {t}",
                k / n,
                k % n,
                self.jac[k]
            )));
        }
        self.jac_valid = true;
        Ok(Solve::Converged)
    }

    /// Factorises `M = I − c·J` unless the current factorisation already is for `c`.
    fn factor(&mut self, c: f64) -> Solve {
        if self.lu_valid && self.lu_coeff.to_bits() == c.to_bits() {
            return Solve::Converged;
        }
        let n = self.n;
        let mut jmax = 0.0f64;
        for (k, (m, j)) in self.lu.a.iter_mut().zip(&self.jac).enumerate() {
            jmax = jmax.max(j.abs());
            let id = if k / n == k % n { 1.0 } else { 0.0 };
            *m = id - c * j;
        }
        // Relative to the size of the terms before cancellation: 1 and |c|·max|J|.
        let scale = (c.abs() * jmax).max(1.0);
        if let Err((i, pivot)) = self.lu.factor(PIVOT_TOL * scale) {
            self.lu_valid = false;
            return Solve::Failed(format!(
                "the Newton matrix I - {c:.6e}*J is singular (pivot {pivot:.3e} in column {i})"
            ));
        }
        self.lu_valid = true;
        self.lu_coeff = c;
        Solve::Converged
    }

    /// `v ← (I − c·J)⁻¹·v` with the current factorisation; false (and `v` unchanged) when
    /// there is none for this `c`.
    pub fn apply_inverse(&self, c: f64, v: &mut [f64]) -> bool {
        if !(self.lu_valid && self.lu_coeff.to_bits() == c.to_bits()) {
            return false;
        }
        self.lu.solve(v);
        true
    }

    /// Solves `y − c·f(t_s, y) − r = 0` by simplified Newton, starting from and writing to
    /// `y`. The step's Jacobian is evaluated here at `(t_s, y)` if it has none yet.
    pub fn solve(
        &mut self,
        f: &mut dyn Rhs,
        t_s: f64,
        c: f64,
        r: &[f64],
        y: &mut [f64],
        cfg: &NewtonConfig,
    ) -> Result<Solve> {
        self.y_start.copy_from_slice(y);
        let fresh = !self.jac_valid;
        if fresh {
            if let Solve::Failed(m) = self.evaluate_jacobian(f, t_s, y, cfg)? {
                return Ok(Solve::Failed(m));
            }
        }
        let first = match self.factor(c) {
            Solve::Converged => self.iterate(f, t_s, c, r, y, cfg)?,
            failed => failed,
        };
        if first == Solve::Converged || fresh {
            return Ok(first);
        }
        // The step's Jacobian was taken elsewhere; take it at this stage's guess and retry.
        y.copy_from_slice(&self.y_start);
        if let Solve::Failed(m) = self.evaluate_jacobian(f, t_s, y, cfg)? {
            return Ok(Solve::Failed(m));
        }
        match self.factor(c) {
            Solve::Converged => self.iterate(f, t_s, c, r, y, cfg),
            failed => Ok(failed),
        }
    }

    /// The Newton iterations proper.
    ///
    /// Convergence after an update Δ (solving `M Δ = −G(y_k)`) when both
    /// `max|G(y_k)| ≤ tol · max(1, max|y_k|, max|r|)` and `max_i |Δ_i| / max(1, |y_k,i|) ≤ tol`;
    /// the residual is the one computed before the update. With a tied tolerance, also when
    /// ‖Δ‖·min(1, rate) ≤ TIED_FRACTION in the controller's weights.
    fn iterate(
        &mut self,
        f: &mut dyn Rhs,
        t_s: f64,
        c: f64,
        r: &[f64],
        y: &mut [f64],
        cfg: &NewtonConfig,
    ) -> Result<Solve> {
        debug_assert!(self.lu_valid, "factorised before iterating");
        let r_max = r.iter().fold(0.0f64, |a, v| a.max(v.abs()));
        let mut prev_update = f64::INFINITY;
        let mut last = (f64::NAN, f64::NAN);
        let mut tied = TiedTest::default();
        for k in 0..cfg.max_iter {
            f.eval(t_s, y, &mut self.f_val)?;
            let mut res_max = 0.0f64;
            let mut y_max = 0.0f64;
            for i in 0..self.n {
                let g = y[i] - c * self.f_val[i] - r[i];
                res_max = res_max.max(g.abs());
                y_max = y_max.max(y[i].abs());
                self.rhs[i] = -g;
            }
            if !res_max.is_finite() {
                return Ok(Solve::Failed(format!(
                    "the Newton residual became non-finite at t = {t_s} (iteration {})",
                    k + 1
                )));
            }
            self.lu.solve(&mut self.rhs);
            let mut update = 0.0f64;
            for (i, yi) in y.iter_mut().enumerate() {
                update = update.max(self.rhs[i].abs() / yi.abs().max(1.0));
                *yi += self.rhs[i];
            }
            if !update.is_finite() {
                return Ok(Solve::Failed(format!(
                    "the Newton update became non-finite at t = {t_s} (iteration {})",
                    k + 1
                )));
            }
            last = (res_max, update);
            if res_max <= cfg.tol * y_max.max(r_max).max(1.0) && update <= cfg.tol {
                return Ok(Solve::Converged);
            }
            if let Some(scale) = &cfg.tied {
                if tied.converged(scale.norm(&self.rhs, y)) {
                    return Ok(Solve::Converged);
                }
            }
            // Clearly diverging: give up early rather than spend the remaining iterations.
            if k >= 2 && update > 2.0 * prev_update {
                return Ok(Solve::Failed(format!(
                    "Newton diverged at t = {t_s} after {} iterations (update {update:.3e}, \
                     residual {res_max:.3e})",
                    k + 1
                )));
            }
            prev_update = update;
        }
        Ok(Solve::Failed(format!(
            "Newton did not converge in {} iterations at t = {t_s} (last update {:.3e}, \
             residual {:.3e}, newton_tol {:.1e})",
            cfg.max_iter, last.1, last.0, cfg.tol
        )))
    }
}

/// CVODE's convergence test on successive weighted update norms.
struct TiedTest {
    rate: f64,
    previous: f64,
}

impl Default for TiedTest {
    fn default() -> Self {
        TiedTest {
            rate: 1.0,
            previous: f64::NAN,
        }
    }
}

impl TiedTest {
    /// Takes the norm of the latest update; true when the iteration error it implies is
    /// below the tied fraction. Never after the first update: without a rate (CVODE carries
    /// one across steps; these steppers keep no Newton state between steps) a small first
    /// update can hide a diverging iteration.
    fn converged(&mut self, norm: f64) -> bool {
        let first = !self.previous.is_finite();
        if !first {
            let ratio = if self.previous > 0.0 {
                norm / self.previous
            } else {
                0.0
            };
            self.rate = (RATE_DECAY * self.rate).max(ratio);
        }
        self.previous = norm;
        !first && self.rate < 1.0 && norm * self.rate <= TIED_FRACTION
    }
}

/// A stage-solve failure as a step failure of a fixed-step method.
pub fn fail(stepper: &str, t: f64, h: f64, why: &str) -> Error {
    step_failed(format!(
        "{stepper}: implicit step from t = {t} with h = {h} failed: {why}; a fixed-step method \
         cannot retry, so use a smaller dt or an adaptive implicit stepper (bdf2a, tr-bdf2a)"
    ))
}
