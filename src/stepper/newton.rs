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
//! bdf2, sdirk2 and tr-bdf2a evaluate the Jacobian once per step, at the starting
//! guess of the step's first solve (simplified Newton), and factorise once per distinct `c`;
//! solves with the same `c` share the factorisation. If a later solve fails with that
//! Jacobian, it is evaluated afresh at that solve's starting guess and the solve is tried
//! once more. [`Newton::begin_step`] discards both, so bdf2 and sdirk2 carry nothing;
//! tr-bdf2a carries the contraction rate across steps
//! ([`Newton::carrying_rate_across_steps`], in its workspace).
//!
//! bdf2a keeps both across steps as CVODE does
//! ([`Newton::reusing`], [`Newton::begin_step_reusing`]): the Jacobian for up to [`MSBJ`]
//! steps, the factorisation for up to [`MSBP`] steps and while `c` stays within
//! [`DGMAX`] of the `c` it was made for (the correction is then scaled by 2/(1 + c/c_lu),
//! CVODE's γ-ratio fix). A solve with an old Jacobian that does not converge within
//! [`MAXCOR`] iterations re-evaluates it and tries again, before the step is cut. Since this
//! state affects future steps it is part of the saved workspace ([`Newton::save`]); the
//! factors are recomputed from the saved Jacobian on load (the same bits).
//!
//! The adaptive steppers also stop as soon as the iteration error is small against the
//! error they accept per step: the weighted RMS update times the estimated contraction rate
//! below [`TIED_FRACTION`] in the controller's weights (after CVODE's test), rather than
//! only at the fixed `newton_tol`, which is independent of the tolerance. bdf2a carries the
//! rate from solve to solve while the factorisation is kept, tr-bdf2a from solve to solve
//! and step to step although its Jacobian is new every step, so a solve whose first update
//! is already small enough stops after one iteration (CVODE's test); without a carried rate
//! (bdf2a after a new factorisation) at least two updates are needed. A tr-bdf2a solve
//! whose Jacobian was taken for another solve assumes a rate of at least
//! [`BORROWED_JACOBIAN_RATE_FLOOR`] for that.
//!
//! A difference Jacobian evaluates f at the solve's starting guess as its base; for a
//! lag-free model the first iteration takes f from there instead of evaluating it again
//! (the same bits; one right-hand side fewer per Jacobian).
//!
//! `jacobian_mode` is a config knob and knob values are `f64`, so the two modes are encoded
//! as numbers: `0` = internal (finite differences), `1` = external (the model's analytic
//! `[equations.jacobian]`, or a host Jacobian callback; a model without one silently falls
//! back to finite differences). In a model's `[sim]` table the strings `"internal"` and
//! `"external"` map to these numbers.

use super::dense_lu::DenseLu;
use super::workspace::{load_f64, load_i64};
use super::{knob, step_failed, Knob, Rhs, StepperInfo, WsArray};
use crate::error::{Error, Result};

/// A pivot of `M = I − c·J` smaller than this times `max(1, |c|·max|J_ij|)` makes the matrix
/// singular.
const PIVOT_TOL: f64 = 1e-14;

/// Adaptive steppers accept a stage solve once the remaining iteration error is below this
/// fraction of the local error tolerance, unless they set their own
/// ([`NewtonConfig::with_tied_fraction`]). CVODE uses 0.1 in the units of its error estimate.
const TIED_FRACTION: f64 = 0.01;
/// The contraction-rate estimate decays by at most this factor per iteration (CVODE's
/// CRDOWN), so one lucky update does not make the rate look tiny.
const RATE_DECAY: f64 = 0.3;

/// The lowest carried rate a solve trusts to stop after its first update when its
/// Jacobian was evaluated for another solve (tr-bdf2a's BDF2 stage and retries, with a rate
/// carried across steps: [`Newton::carrying_rate_across_steps`]). Measured on the Oregonator
/// at rtol 1e-3 without it: a rate of 0.002 from one fast-converging step, carried on through
/// eight steps of one-update BDF2 solves that really contracted at ~0.4, left those stages
/// 2–7 error tolerances off their solution, unseen by the error estimate (which takes the
/// stages' f values from their equations); with 0.05, at most 0.7 on the four benchmark
/// problems at rtol 1e-3..1e-4 (see README, Stiff problems).
const BORROWED_JACOBIAN_RATE_FLOOR: f64 = 0.05;

/// Steps a kept Jacobian may serve (CVODE's MSBJ).
const MSBJ: u64 = 51;
/// Steps a kept factorisation may serve (CVODE's MSBP).
const MSBP: u64 = 20;
/// A kept factorisation of `I − c'·J` serves a solve with `c` while |c/c' − 1| ≤ this
/// (CVODE's DGMAX).
const DGMAX: f64 = 0.3;
/// Iterations a solve with a kept (not freshly evaluated) Jacobian gets before the
/// Jacobian is refreshed (CVODE's MAXCOR).
const MAXCOR: u32 = 3;

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

/// Weights 1/(atol + rtol·|y|) of a controller, and the fraction of them the iteration
/// error may reach.
#[derive(Debug, Clone, Copy)]
pub struct ErrorScale {
    pub atol: f64,
    pub rtol: f64,
    pub fraction: f64,
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
    /// Sets the tied test's fraction: a stepper whose error estimate weighs the iteration
    /// error by w may allow CVODE's 0.1/w.
    pub fn with_tied_fraction(mut self, fraction: f64) -> Self {
        if let Some(t) = &mut self.tied {
            t.fraction = fraction;
        }
        self
    }

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
            fraction: TIED_FRACTION,
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

/// Newton solver state: the Jacobian and its factorisation (kept across steps by the
/// bdf2a, see the module docs) and scratch.
pub struct Newton {
    n: usize,
    /// Keep the Jacobian and factorisation across steps.
    reuse: bool,
    /// Carry the contraction rate from solve to solve while the factorisation is kept.
    carry_rate: bool,
    /// Keep the rate across steps and new factorisations too (tr-bdf2a).
    rate_across_steps: bool,
    /// The Jacobian was evaluated by the current solve (at its own starting guess).
    jac_from_this_solve: bool,
    /// `f_val` holds f at the current solve's starting guess, evaluated for its difference
    /// Jacobian (a lag-free model's f depends on (t, y) only): its first iteration needs no
    /// evaluation of its own.
    f_val_at_start: bool,
    /// ∂f/∂y, row-major, and whether it is valid.
    jac: Vec<f64>,
    jac_valid: bool,
    /// Factorisation of `I − c·J`, whether it is valid, and the `c` it belongs to.
    lu: DenseLu,
    lu_valid: bool,
    lu_coeff: f64,
    /// Steps begun since the Jacobian / the factorisation was made (reuse only).
    jac_age: u64,
    lu_age: u64,
    /// Contraction rate measured by the last solve with this factorisation; 1 = unknown.
    rate: f64,
    f_val: Vec<f64>,
    f_pert: Vec<f64>,
    y_pert: Vec<f64>,
    y_start: Vec<f64>,
    rhs: Vec<f64>,
}

impl Newton {
    /// A solver that forgets its Jacobian at every step.
    pub fn new(n: usize) -> Self {
        Newton {
            n,
            reuse: false,
            carry_rate: false,
            rate_across_steps: false,
            jac_from_this_solve: false,
            f_val_at_start: false,
            jac: vec![0.0; n * n],
            jac_valid: false,
            lu: DenseLu::new(n),
            lu_valid: false,
            lu_coeff: 0.0,
            jac_age: 0,
            lu_age: 0,
            rate: 1.0,
            f_val: vec![0.0; n],
            f_pert: vec![0.0; n],
            y_pert: vec![0.0; n],
            y_start: vec![0.0; n],
            rhs: vec![0.0; n],
        }
    }

    /// A solver that keeps its Jacobian and factorisation across steps (bdf2a).
    pub fn reusing(n: usize) -> Self {
        Newton {
            reuse: true,
            carry_rate: true,
            ..Newton::new(n)
        }
    }

    /// A solver that forgets its Jacobian at every step but carries the contraction rate
    /// from solve to solve while the factorisation is kept (tr-bdf2a's two stages).
    pub fn carrying_rate(n: usize) -> Self {
        Newton {
            carry_rate: true,
            ..Newton::new(n)
        }
    }

    /// The solver keeping its contraction rate across steps and new factorisations
    /// (CVODE's rate memory `crate`, which CVODE itself resets at a new factorisation): for
    /// a stepper that evaluates its Jacobian every step at the same kind of point, so the
    /// rate of the last step is the best guess for this one. The stepper saves the rate
    /// ([`Newton::save_rate`]).
    pub fn carrying_rate_across_steps(self) -> Self {
        Newton {
            carry_rate: true,
            rate_across_steps: true,
            ..self
        }
    }

    /// Forgets the Jacobian and factorisation of the previous step (and the rate, unless
    /// it is carried across steps).
    pub fn begin_step(&mut self) {
        if self.rate_across_steps {
            self.jac_valid = false;
            self.lu_valid = false;
        } else {
            self.forget();
        }
    }

    /// The contraction rate as a workspace array (steppers that carry nothing else of the
    /// solver across steps).
    pub fn save_rate(&self, ws: &mut Vec<WsArray>) {
        ws.push(WsArray::f64("newton_rate", vec![self.rate]));
    }

    /// Loads what [`Newton::save_rate`] wrote; checks it before changing anything.
    pub fn load_rate(&mut self, ws: &[WsArray], stepper: &str) -> Result<()> {
        let mut rate = [0.0];
        load_f64(ws, "newton_rate", &mut rate)?;
        if !(rate[0] >= 0.0 && rate[0] <= 1.0) {
            return Err(Error::corrupt(format!(
                "{stepper} workspace: newton_rate {} outside [0, 1]",
                rate[0]
            )));
        }
        self.rate = rate[0];
        Ok(())
    }

    /// Forgets the Jacobian, its factorisation and the rate (a restart: the state jumped).
    pub fn forget(&mut self) {
        self.jac_valid = false;
        self.lu_valid = false;
        self.rate = 1.0;
    }

    /// Starts a step of a reusing solver: ages the kept Jacobian and factorisation and drops
    /// the Jacobian once it has served [`MSBJ`] steps.
    pub fn begin_step_reusing(&mut self) {
        debug_assert!(self.reuse, "a reusing solver");
        self.jac_age = (self.jac_age + 1).min(MSBJ);
        self.lu_age = (self.lu_age + 1).min(MSBP);
        if self.jac_age >= MSBJ {
            self.forget();
        }
    }

    /// The carried state as workspace arrays (names prefixed `newton_`).
    pub fn save(&self, ws: &mut Vec<WsArray>) {
        let n = self.n;
        // An invalid Jacobian is never read; zeros keep the file finite.
        let jac = if self.jac_valid {
            self.jac.clone()
        } else {
            vec![0.0; n * n]
        };
        ws.push(WsArray::matrix("newton_jac", n, n, jac));
        ws.push(WsArray::f64("newton_lu_coeff", vec![self.lu_coeff]));
        ws.push(WsArray::f64("newton_rate", vec![self.rate]));
        ws.push(WsArray::i64(
            "newton_flags",
            vec![
                i64::from(self.jac_valid),
                i64::from(self.lu_valid),
                self.jac_age as i64,
                self.lu_age as i64,
            ],
        ));
    }

    /// Loads what [`Newton::save`] wrote and refactors a valid factorisation; checks
    /// everything before changing anything.
    pub fn load(&mut self, ws: &[WsArray], stepper: &str) -> Result<()> {
        let n = self.n;
        let mut jac = vec![0.0; n * n];
        let (mut coeff, mut rate, mut flags) = ([0.0], [0.0], [0i64; 4]);
        load_f64(ws, "newton_jac", &mut jac)?;
        load_f64(ws, "newton_lu_coeff", &mut coeff)?;
        load_f64(ws, "newton_rate", &mut rate)?;
        load_i64(ws, "newton_flags", &mut flags)?;
        let corrupt = |what: String| Err(Error::corrupt(format!("{stepper} workspace: {what}")));
        let [jac_valid, lu_valid, jac_age, lu_age] = flags;
        if !(0..=1).contains(&jac_valid) || !(0..=1).contains(&lu_valid) {
            return corrupt(format!(
                "newton_flags validity entries must be 0 or 1, got {jac_valid}, {lu_valid}"
            ));
        }
        if lu_valid == 1 && jac_valid == 0 {
            return corrupt("a factorisation without a Jacobian".into());
        }
        if !(0..=MSBJ as i64).contains(&jac_age) || !(0..=MSBP as i64).contains(&lu_age) {
            return corrupt(format!(
                "Newton ages {jac_age}, {lu_age} outside 0..={MSBJ} and 0..={MSBP}"
            ));
        }
        if !(rate[0] >= 0.0 && rate[0] <= 1.0) {
            return corrupt(format!("newton_rate {} outside [0, 1]", rate[0]));
        }
        if !(coeff[0].is_finite()) || jac.iter().any(|v| !v.is_finite()) {
            return corrupt("non-finite Newton Jacobian or coefficient".into());
        }
        let mut lu = self.lu.clone();
        if lu_valid == 1 {
            fill_newton_matrix(&mut lu.a, &jac, coeff[0], n);
            if lu.factor(pivot_floor(&jac, coeff[0])).is_err() {
                return corrupt(format!(
                    "the saved Newton matrix I - {:e}*J is singular",
                    coeff[0]
                ));
            }
        }
        self.jac = jac;
        self.jac_valid = jac_valid == 1;
        self.lu = lu;
        self.lu_valid = lu_valid == 1;
        self.lu_coeff = coeff[0];
        self.jac_age = jac_age as u64;
        self.lu_age = lu_age as u64;
        self.rate = rate[0];
        Ok(())
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
                self.f_val_at_start = f.lag_free();
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
        self.jac_age = 0;
        Ok(Solve::Converged)
    }

    /// Whether the current factorisation may serve a solve with `c`: made for `c`, or (when
    /// reusing) young enough and for a `c` within [`DGMAX`].
    fn factorisation_serves(&self, c: f64) -> bool {
        self.lu_valid
            && (self.lu_coeff.to_bits() == c.to_bits()
                || (self.reuse && self.lu_age < MSBP && (c / self.lu_coeff - 1.0).abs() <= DGMAX))
    }

    /// Factorises `M = I − c·J` unless the current factorisation serves `c`.
    fn factor(&mut self, c: f64) -> Solve {
        if self.factorisation_serves(c) {
            return Solve::Converged;
        }
        fill_newton_matrix(&mut self.lu.a, &self.jac, c, self.n);
        if !self.rate_across_steps {
            self.rate = 1.0;
        }
        if let Err((i, pivot)) = self.lu.factor(pivot_floor(&self.jac, c)) {
            self.lu_valid = false;
            return Solve::Failed(format!(
                "the Newton matrix I - {c:.6e}*J is singular (pivot {pivot:.3e} in column {i})"
            ));
        }
        self.lu_valid = true;
        self.lu_coeff = c;
        self.lu_age = 0;
        Solve::Converged
    }

    /// `v ← (I − c'·J)⁻¹·v` with the current factorisation (the last solve's c' — within
    /// [`DGMAX`] of its `c` when reusing); false (and `v` unchanged) when there is none.
    pub fn apply_inverse(&self, v: &mut [f64]) -> bool {
        if !self.lu_valid {
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
        self.f_val_at_start = false;
        let fresh = !self.jac_valid;
        if fresh {
            if let Solve::Failed(m) = self.evaluate_jacobian(f, t_s, y, cfg)? {
                return Ok(Solve::Failed(m));
            }
        }
        // A kept Jacobian gets a few iterations only: refreshing it is cheaper than
        // iterating on with a poor one.
        let max_iter = if fresh || !self.reuse {
            cfg.max_iter
        } else {
            cfg.max_iter.min(MAXCOR)
        };
        self.jac_from_this_solve = fresh;
        let first = match self.factor(c) {
            Solve::Converged => self.iterate(f, t_s, c, r, y, cfg, max_iter)?,
            failed => failed,
        };
        if first == Solve::Converged || fresh {
            return Ok(first);
        }
        // The Jacobian was taken elsewhere; take it at this stage's guess and retry.
        y.copy_from_slice(&self.y_start);
        if let Solve::Failed(m) = self.evaluate_jacobian(f, t_s, y, cfg)? {
            return Ok(Solve::Failed(m));
        }
        self.jac_from_this_solve = true;
        match self.factor(c) {
            Solve::Converged => self.iterate(f, t_s, c, r, y, cfg, cfg.max_iter),
            failed => Ok(failed),
        }
    }

    /// The Newton iterations proper.
    ///
    /// Convergence after an update Δ (solving `M Δ = −G(y_k)`) when both
    /// `max|G(y_k)| ≤ tol · max(1, max|y_k|, max|r|)` and `max_i |Δ_i| / max(1, |y_k,i|) ≤ tol`;
    /// the residual is the one computed before the update. With a tied tolerance, also when
    /// ‖Δ‖·rate ≤ TIED_FRACTION in the controller's weights (see [`TiedTest`]). A
    /// factorisation made for c' ≠ c scales Δ by 2/(1 + c/c') (CVODE's γ-ratio fix).
    #[allow(clippy::too_many_arguments)]
    fn iterate(
        &mut self,
        f: &mut dyn Rhs,
        t_s: f64,
        c: f64,
        r: &[f64],
        y: &mut [f64],
        cfg: &NewtonConfig,
        max_iter: u32,
    ) -> Result<Solve> {
        debug_assert!(self.lu_valid, "factorised before iterating");
        let r_max = r.iter().fold(0.0f64, |a, v| a.max(v.abs()));
        let ratio_fix = if self.lu_coeff.to_bits() == c.to_bits() {
            None
        } else {
            Some(2.0 / (1.0 + c / self.lu_coeff))
        };
        let mut prev_update = f64::INFINITY;
        let mut last = (f64::NAN, f64::NAN);
        // Carried only where configured. tr-bdf2a's second stage accepting a first update on
        // its first stage's rate once let Van der Pol (μ = 1000) at rtol 1e-3 take 15 wrong
        // steps (error 1.07), with the explicit-Euler predictor and growth right after a
        // failure; with its quadratic predictor and no such growth the errors are unchanged
        // at rtol 1e-3..1e-6 on the four benchmark problems.
        let mut tied = TiedTest::carried(if self.carry_rate { self.rate } else { 1.0 });
        if self.rate_across_steps && !self.jac_from_this_solve {
            tied.first_update_floor = BORROWED_JACOBIAN_RATE_FLOOR;
        }
        for k in 0..max_iter {
            // The same value, bit for bit, as evaluating it here.
            if !std::mem::take(&mut self.f_val_at_start) {
                f.eval(t_s, y, &mut self.f_val)?;
            }
            let mut res_max = 0.0f64;
            let mut y_max = 0.0f64;
            for i in 0..self.n {
                let g = y[i] - c * self.f_val[i] - r[i];
                res_max = res_max.max(g.abs());
                y_max = y_max.max(y[i].abs());
                self.rhs[i] = -g;
            }
            if !res_max.is_finite() {
                self.rate = 1.0;
                return Ok(Solve::Failed(format!(
                    "the Newton residual became non-finite at t = {t_s} (iteration {})",
                    k + 1
                )));
            }
            self.lu.solve(&mut self.rhs);
            if let Some(fix) = ratio_fix {
                self.rhs.iter_mut().for_each(|d| *d *= fix);
            }
            let mut update = 0.0f64;
            for (i, yi) in y.iter_mut().enumerate() {
                update = update.max(self.rhs[i].abs() / yi.abs().max(1.0));
                *yi += self.rhs[i];
            }
            if !update.is_finite() {
                self.rate = 1.0;
                return Ok(Solve::Failed(format!(
                    "the Newton update became non-finite at t = {t_s} (iteration {})",
                    k + 1
                )));
            }
            last = (res_max, update);
            if res_max <= cfg.tol * y_max.max(r_max).max(1.0) && update <= cfg.tol {
                self.rate = tied.rate;
                return Ok(Solve::Converged);
            }
            if let Some(scale) = &cfg.tied {
                if tied.converged(scale.norm(&self.rhs, y), scale.fraction) {
                    self.rate = tied.rate;
                    return Ok(Solve::Converged);
                }
            }
            // Clearly diverging: give up early rather than spend the remaining iterations.
            if k >= 2 && update > 2.0 * prev_update {
                self.rate = 1.0;
                return Ok(Solve::Failed(format!(
                    "Newton diverged at t = {t_s} after {} iterations (update {update:.3e}, \
                     residual {res_max:.3e})",
                    k + 1
                )));
            }
            prev_update = update;
        }
        self.rate = 1.0;
        Ok(Solve::Failed(format!(
            "Newton did not converge in {max_iter} iterations at t = {t_s} (last update {:.3e}, \
             residual {:.3e}, newton_tol {:.1e})",
            last.1, last.0, cfg.tol
        )))
    }
}

/// `m ← I − c·J` (row-major n × n).
fn fill_newton_matrix(m: &mut [f64], jac: &[f64], c: f64, n: usize) {
    for (k, (m, j)) in m.iter_mut().zip(jac).enumerate() {
        let id = if k / n == k % n { 1.0 } else { 0.0 };
        *m = id - c * j;
    }
}

/// The pivot below which `I − c·J` is singular: relative to the size of the terms before
/// cancellation, 1 and |c|·max|J|.
fn pivot_floor(jac: &[f64], c: f64) -> f64 {
    let jmax = jac.iter().fold(0.0f64, |a, j| a.max(j.abs()));
    PIVOT_TOL * (c.abs() * jmax).max(1.0)
}

/// CVODE's convergence test on successive weighted update norms.
struct TiedTest {
    rate: f64,
    /// The least rate a first-update acceptance assumes (0: the carried rate as it is).
    first_update_floor: f64,
    /// The rate came from an earlier solve with the same factorisation.
    carried: bool,
    previous: f64,
}

impl TiedTest {
    /// Starts from the rate of the last solve with this factorisation (1 = unknown).
    fn carried(rate: f64) -> Self {
        TiedTest {
            rate,
            first_update_floor: 0.0,
            carried: rate < 1.0,
            previous: f64::NAN,
        }
    }

    /// Takes the norm of the latest update; true when the iteration error it implies is
    /// below the tied fraction. After the first update only with a carried rate: without
    /// one a small first update can hide a diverging iteration.
    fn converged(&mut self, norm: f64, fraction: f64) -> bool {
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
        let rate = if first {
            self.rate.max(self.first_update_floor)
        } else {
            self.rate
        };
        (!first || self.carried) && rate < 1.0 && norm * rate <= fraction
    }
}

/// A stage-solve failure as a step failure of a fixed-step method.
pub fn fail(stepper: &str, t: f64, h: f64, why: &str) -> Error {
    step_failed(format!(
        "{stepper}: implicit step from t = {t} with h = {h} failed: {why}; a fixed-step method \
         cannot retry, so use a smaller dt or an adaptive implicit stepper (bdf2a, tr-bdf2a)"
    ))
}
