//! TR-BDF2, adaptive: a trapezoidal stage to t + γh followed by a BDF2 stage to t + h
//! (Bank et al. 1985), with γ = 2 − √2 so that both stages have the same diagonal
//! coefficient γ/2 and share one factorisation of I − (γ/2)h·J. Order 2, L-stable.
//!
//! The error estimate is the method's local truncation error (Bank et al. 1985; Hosea &
//! Shampine 1996): τ = k·h³·y‴ with k = (−3γ² + 4γ − 2)/(12(2 − γ)), y‴ from the second
//! divided difference of f over the step's three nodes, and the f values at the stages taken
//! from the stage equations themselves, so the estimate costs no right-hand side and no
//! Newton solve; it is filtered through (I − (γ/2)h·J)⁻¹ (one back-substitution with the
//! stages' factorisation) so that stiff components do not inflate it. Order 2, controller
//! exponent 1/3 (see [`Controller`]). Carried between steps: the dense-output nodes
//! (t_n, y_n), (t_n + γh, y_γ), (t_n + h, y_{n+1}) of the last step (to interpolate a pending
//! step again after a resume, and for f_n and the predictor, below) and the predictive
//! step rule's memory (the last accepted step's h and error), both in the workspace.
//!
//! A step that continues the last one takes f_n = f(t_n, y_n) from the last step's BDF2
//! stage equation, f_{n+1} = (y_{n+1} − r)/(D·h), computed from the saved dense-output nodes
//! (a restart forgets them): no right-hand side, the first-same-as-last of this method
//! (not for a model with lags, whose f depends on more than (t, y)). Its difference to
//! f(t_n, y_n) is the stage's remaining iteration error over D·h, and the next step uses
//! f_n only multiplied by a step size again. The trapezoidal stage is predicted by the last
//! step's quadratic (explicit Euler after a restart), the BDF2 stage by the cubic Hermite
//! interpolant of this step's (t_n, y_n, f_n), (t_n + γh, y_γ, f_γ).
//!
//! Step sizes: Gustafsson's predictive rule (as in RADAU5) limits an accepted step's growth
//! by how its error grew since the last step, and a step accepted after a failed attempt
//! does not grow the next one. On Van der Pol (μ = 1000) at rtol 1e-4 the classic rule
//! failed the first attempt at 95 of 403 steps — all through the slow phase, where the
//! needed step shrinks step after step — the predictive one at 9 of 407.
//!
//! Newton: a Jacobian new every step (at the trapezoidal stage's guess); the BDF2 stage and
//! any retry use it for up to MAXCOR iterations before taking one at their own guess. The
//! contraction rate is carried from solve to solve and from step to step (CVODE's rate
//! memory; in the workspace), so most stages stop after one update: a Jacobian taken at
//! this step's guess contracts about as fast as the last step's did. A solve on the
//! Jacobian of another solve (the BDF2 stage) assumes a rate of at least 0.05 for that
//! (newton.rs). The tied test allows, per stage, CVODE's 0.1 over the weight with which the
//! stage's iteration error enters the error estimate (`STAGE_FRACTIONS`, 0.088 and 0.15).
//!
//! Why the Jacobian is not kept across steps (CVODE's policy, bdf2a's `begin_step_reusing`),
//! from a per-step trace against fully converged stages: the error estimate cannot see
//! iteration error (it takes the stages' f values from their equations, which an
//! unconverged iterate satisfies by construction), so everything rests on the Newton test,
//! and with an old Jacobian that test is fooled. On Van der Pol (μ = 1000) at rtol 1e-3 a
//! Jacobian kept from the fast jump served the slow phase after it for 30+ steps while the
//! steps grew 5x per step: two updates measured a rate below 0.3 (the stiff direction dies
//! at once, a slow one hardly moves), and the accepted stages were 1–229 tolerances off
//! their solution — the run ended with error 3.1; the Oregonator at rtol 1e-3 carried a
//! rate of 0.015 through ten one-update solves of a kept factorisation whose iteration
//! really diverged (the stage error grew 2x per step to 10⁸ tolerances), then found no
//! acceptable step. Refreshing the Jacobian whenever the factorisation is renewed (its
//! coefficient moved beyond DGMAX) cured the first, not the second, and cost more than a
//! Jacobian per step with the rate carried (Van der Pol 1e-4 2.2x CVODE's RHS).

use super::adaptive_implicit::{Attempt, Controller, ErrorHistory, QuadraticDense, KNOBS};
use super::newton::{Newton, NewtonConfig, Solve};
use super::workspace::check_layout;
use super::{step_failed, LegacyLayout, Rhs, StepOutcome, Stepper, StepperInfo, WsArray};
use crate::error::Result;
use crate::method::ModelKind;

/// γ = 2 − √2: the trapezoidal stage ends at t + γh.
pub const GAMMA: f64 = 2.0 - std::f64::consts::SQRT_2;
/// Diagonal coefficient of both stages. The BDF2 stage's (1−γ)/(2−γ) equals γ/2 exactly in
/// real arithmetic for this γ; one constant keeps one factorisation.
pub const D: f64 = GAMMA / 2.0;
/// Weight of y_γ in the BDF2 stage, 1/(γ(2−γ)); y_n gets 1 − W.
pub const W: f64 = 1.0 / (GAMMA * (2.0 - GAMMA));
/// Error constant of the local truncation error τ = K·h³·y‴.
const K: f64 = (-3.0 * GAMMA * GAMMA + 4.0 * GAMMA - 2.0) / (12.0 * (2.0 - GAMMA));

/// CVODE's Newton test fraction, in the units of its error estimate.
const CVODE_FRACTION: f64 = 0.1;
/// The tied Newton test's fraction for each stage: CVODE's over the weight with which the
/// stage's iteration error δ enters the error estimate through the stage-equation f values
/// (`error_estimate`): 2|K|/(D·γ·(1−γ)) ≈ 1.14 for y_γ (via f_γ), 2|K|/(D·(1−γ)) ≈ 0.67 for
/// y_{n+1} (via f_{n+1}), before the filter. (The shared default, 0.01, is ~10x tighter.)
const STAGE_FRACTIONS: [f64; 2] = [
    CVODE_FRACTION * D * GAMMA * (1.0 - GAMMA) / (-2.0 * K),
    CVODE_FRACTION * D * (1.0 - GAMMA) / (-2.0 * K),
];

pub static INFO: StepperInfo = StepperInfo {
    name: "tr-bdf2a",
    aliases: &["trbdf2a"],
    kind: ModelKind::Ode,
    adaptive: true,
    implicit: true,
    order: 2,
    embedded_order: Some(2),
    dense_output: true,
    config: &KNOBS,
    description: "TR-BDF2, adaptive, L-stable, local truncation error estimate",
    legacy: Some(&LEGACY),
};

/// tr-bdf2a files written before the Newton rate was carried across steps: the dense-output
/// nodes and the predictive rule's history.
static LEGACY: LegacyLayout = LegacyLayout {
    knob_names: || KNOBS.iter().map(|k| k.name).collect(),
    template: template_before_rate,
    upgrade: upgrade_before_rate,
    older: Some(&LEGACY_NODES_ONLY),
};

/// tr-bdf2a files written before the predictive step rule: the dense-output nodes only.
static LEGACY_NODES_ONLY: LegacyLayout = LegacyLayout {
    knob_names: || KNOBS.iter().map(|k| k.name).collect(),
    template: template_nodes_only,
    upgrade: upgrade_nodes_only,
    older: None,
};

/// The workspace of a fresh tr-bdf2a stepper of `n` states before the carried rate.
fn template_before_rate(n: usize) -> Vec<WsArray> {
    let mut ws = template_nodes_only(n);
    ErrorHistory::default().save(&mut ws);
    ws
}

/// The workspace of a fresh tr-bdf2a stepper of `n` states before the predictive rule.
fn template_nodes_only(n: usize) -> Vec<WsArray> {
    let mut ws = Vec::new();
    QuadraticDense::new(n).save(&mut ws);
    ws
}

/// A workspace without the rate as today's: the rate unknown, as after a restart, so the
/// first solve after the import measures it. (The knobs did not change.)
fn upgrade_before_rate(ws: &mut Vec<WsArray>, _config: &mut Vec<f64>) {
    Newton::new(0).save_rate(ws);
}

/// A workspace of the nodes-only layout as today's: no error history yet, so the first
/// step after the import is sized by the classic rule, as every step of the writing build
/// was; the rate unknown.
fn upgrade_nodes_only(ws: &mut Vec<WsArray>, config: &mut Vec<f64>) {
    ErrorHistory::default().save(ws);
    upgrade_before_rate(ws, config);
}

pub struct TrBdf2a {
    newton_cfg: super::KnobCache<NewtonConfig>,
    ctrl_cfg: super::KnobCache<Controller>,
    dense: QuadraticDense,
    newton: Newton,
    f_n: Vec<f64>,
    r: Vec<f64>,
    y_gamma: Vec<f64>,
    y_trbdf2: Vec<f64>,
    tau: Vec<f64>,
    /// The predictive step-size rule's memory (in the workspace).
    history: ErrorHistory,
}

impl TrBdf2a {
    pub fn new(n: usize) -> Self {
        TrBdf2a {
            newton_cfg: Default::default(),
            ctrl_cfg: Default::default(),
            dense: QuadraticDense::new(n),
            newton: Newton::reusing(n).carrying_rate_across_steps(),
            f_n: vec![0.0; n],
            r: vec![0.0; n],
            y_gamma: vec![0.0; n],
            y_trbdf2: vec![0.0; n],
            tau: vec![0.0; n],
            history: ErrorHistory::default(),
        }
    }

    fn attempt(
        &mut self,
        f: &mut dyn Rhs,
        t: f64,
        y: &[f64],
        h: f64,
        cfg: &NewtonConfig,
        ctrl: &Controller,
    ) -> Result<Attempt> {
        let c = D * h;
        // Trapezoidal stage: y_γ − (γ/2)h·f(t+γh, y_γ) = y_n + (γ/2)h·f_n, predicted by the
        // last step's quadratic when this step continues it, else by explicit Euler
        // y_n + γh·f_n.
        let continues = self.dense.ends_at(t, y);
        for (i, &y0) in y.iter().enumerate() {
            self.r[i] = y0 + c * self.f_n[i];
            self.y_gamma[i] = y0 + GAMMA * h * self.f_n[i];
        }
        if continues {
            self.dense.interpolate(t + GAMMA * h, &mut self.y_gamma);
        }
        let stage_cfg = cfg.with_tied_fraction(STAGE_FRACTIONS[0]);
        let solved =
            self.newton
                .solve(f, t + GAMMA * h, c, &self.r, &mut self.y_gamma, &stage_cfg)?;
        if let Solve::Failed(m) = solved {
            return Ok(Attempt::NewtonFailed(format!("trapezoidal stage: {m}")));
        }
        // BDF2 stage: y − (γ/2)h·f(t+h, y) = (1−W)·y_n + W·y_γ, predicted from this step's
        // trapezoidal stage.
        self.predict_second_stage(y, h);
        for ((r, y0), yg) in self.r.iter_mut().zip(y).zip(&self.y_gamma) {
            *r = (1.0 - W) * y0 + W * yg;
        }
        let stage_cfg = cfg.with_tied_fraction(STAGE_FRACTIONS[1]);
        let solved = self
            .newton
            .solve(f, t + h, c, &self.r, &mut self.y_trbdf2, &stage_cfg)?;
        if let Solve::Failed(m) = solved {
            return Ok(Attempt::NewtonFailed(format!("BDF2 stage: {m}")));
        }
        Ok(Attempt::Solved {
            err: self.error_estimate(y, h, ctrl),
        })
    }

    /// The BDF2 stage's starting guess: the cubic Hermite interpolant through (t_n, y_n, f_n)
    /// and (t_n + γh, y_γ, f_γ) — f_γ from the trapezoidal stage equation, no right-hand side
    /// — extrapolated to t_n + h. Fourth-order accurate where the last step's quadratic
    /// (third) was, and available at the first step too. Measured (benchmark, rtol 1e-4,
    /// fresh Jacobian every step): BDF2-stage iterations 2.60 → 2.25 per attempt on Van der
    /// Pol, 2.80 → 2.36 on HIRES.
    fn predict_second_stage(&mut self, y: &[f64], h: f64) {
        let c = D * h;
        let s = 1.0 / GAMMA;
        let (s2, s3) = (s * s, s * s * s);
        let (h00, h10, h01, h11) = (
            2.0 * s3 - 3.0 * s2 + 1.0,
            s3 - 2.0 * s2 + s,
            3.0 * s2 - 2.0 * s3,
            s3 - s2,
        );
        let span = GAMMA * h;
        for (i, &y0) in y.iter().enumerate() {
            let f_gamma = (self.y_gamma[i] - y0 - c * self.f_n[i]) / c;
            self.y_trbdf2[i] =
                h00 * y0 + h10 * span * self.f_n[i] + h01 * self.y_gamma[i] + h11 * span * f_gamma;
        }
    }

    /// f(t, y) from the BDF2 stage equation of the last step when this step continues it:
    /// f_{n+1} = (y_{n+1} − (1−W)·y_n − W·y_γ)/(D·h), from the dense-output nodes (saved),
    /// so resumed runs compute the same bits. False (f_n untouched) when the step does not
    /// continue the last one.
    fn derivative_from_last_step(&mut self, t: f64, y: &[f64]) -> bool {
        if !self.dense.ends_at(t, y) {
            return false;
        }
        let [t0, _, t1] = self.dense.node_times();
        if t0 >= t1 {
            return false;
        }
        let c = D * (t1 - t0);
        let (y0, yg) = (self.dense.node(0), self.dense.node(1));
        for (i, fv) in self.f_n.iter_mut().enumerate() {
            *fv = (y[i] - ((1.0 - W) * y0[i] + W * yg[i])) / c;
        }
        true
    }

    /// The filtered local truncation error of the step just solved (see the module docs).
    /// f at the stages from their equations: y_γ − c·f_γ = y_n + c·f_n and
    /// y_{n+1} − c·f_{n+1} = r, with r still the BDF2 stage's right-hand side.
    fn error_estimate(&mut self, y: &[f64], h: f64, ctrl: &Controller) -> f64 {
        let c = D * h;
        for (i, y0) in y.iter().enumerate() {
            let f_gamma = (self.y_gamma[i] - y0 - c * self.f_n[i]) / c;
            let f_new = (self.y_trbdf2[i] - self.r[i]) / c;
            let divided =
                self.f_n[i] / GAMMA - f_gamma / (GAMMA * (1.0 - GAMMA)) + f_new / (1.0 - GAMMA);
            self.tau[i] = 2.0 * K * h * divided;
        }
        // Without the factorisation (never after converged stages) the raw estimate is used.
        self.newton.apply_inverse(&mut self.tau);
        ctrl.norm_of(y, &self.y_trbdf2, &self.tau)
    }
}

impl Stepper for TrBdf2a {
    fn info(&self) -> &'static StepperInfo {
        &INFO
    }

    fn save(&self) -> Vec<WsArray> {
        let mut ws = Vec::new();
        self.dense.save(&mut ws);
        self.history.save(&mut ws);
        self.newton.save_rate(&mut ws);
        ws
    }

    fn load(&mut self, ws: &[WsArray]) -> Result<()> {
        check_layout(ws, &self.save(), "stepper")?;
        self.history.load(ws, INFO.name)?;
        self.newton.load_rate(ws, INFO.name)?;
        self.dense.load(ws)
    }

    /// The last step's nodes no longer describe the trajectory (a parameter may have
    /// changed with the state kept): neither f_n nor the predictor may come from them, nor
    /// the step size from the last step's error.
    fn restart(&mut self) {
        self.dense.forget();
        self.history = ErrorHistory::default();
        self.newton.forget();
    }

    fn step(
        &mut self,
        f: &mut dyn Rhs,
        t: f64,
        y: &[f64],
        h_in: f64,
        cfg: &[f64],
        y_new: &mut [f64],
    ) -> Result<StepOutcome> {
        let ncfg = self
            .newton_cfg
            .get(cfg, |c| NewtonConfig::from_cfg(&INFO, c))?;
        let ctrl = self
            .ctrl_cfg
            .get(cfg, |c| Controller::from_cfg(&INFO, c))?
            .holding_after_failure();
        // A Jacobian new every step, but the step's later solves (the BDF2 stage, retries)
        // get MAXCOR iterations with it before it is evaluated again at their guess; the
        // contraction rate is kept.
        self.newton.begin_step();
        if !(f.lag_free() && self.derivative_from_last_step(t, y)) {
            f.eval(t, y, &mut self.f_n)?;
        }
        if let Some(i) = self.f_n.iter().position(|v| !v.is_finite()) {
            return Err(step_failed(format!(
                "tr-bdf2a: the right-hand side is not finite (component {i}) at t = {t}"
            )));
        }
        // Updated by the accepted attempt; kept only if the step succeeds.
        let mut history = self.history;
        let out = ctrl.drive_with_history(INFO.name, t, h_in, Some(&mut history), |h| {
            self.attempt(f, t, y, h, &ncfg, &ctrl)
        })?;
        self.history = history;
        let h = out.h_used;
        y_new.copy_from_slice(&self.y_trbdf2);
        self.dense
            .set([t, t + GAMMA * h, t + h], [y, &self.y_gamma, y_new]);
        Ok(out)
    }

    fn interpolate(&self, t: f64, out: &mut [f64]) -> bool {
        self.dense.interpolate(t, out)
    }
}
