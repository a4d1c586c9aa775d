//! BDF2: the two-step backward differentiation formula, fixed step, order 2, L-stable.
//!
//! The first step (and the first after a restart) is an SDIRK2 step, which is second order
//! and needs no history. Later steps solve the variable-coefficient BDF2 equation with
//! ρ = h/h_prev, so the step the runner shortens to reach an off-grid horizon is still
//! integrated correctly (the constant-step formula would not be). When ρ leaves the range in
//! which variable-step BDF2 is zero-stable, the step starts up again instead.
//!
//! Carried between steps (all in the workspace): y_{n−1}, h_{n−1} and the start-up phase.
//! The history is rotated in `commit`, after event actions, never in `step`.

use super::newton::{self, Newton, NewtonConfig, Solve, NEWTON_KNOBS};
use super::sdirk2::SdirkCore;
use super::workspace::{check_layout, load_f64, load_i64};
use super::{Rhs, StepOutcome, Stepper, StepperInfo, WsArray};
use crate::error::{Error, Result};
use crate::method::ModelKind;

/// Largest step ratio h/h_prev for BDF2: variable-step BDF2 is zero-stable for
/// ρ < 1 + √2 ≈ 2.414 (Grigorieff); keep a margin.
pub const RHO_MAX: f64 = 2.4;

pub static INFO: StepperInfo = StepperInfo {
    name: "bdf2",
    aliases: &["bdf2_jit"],
    kind: ModelKind::Ode,
    adaptive: false,
    implicit: true,
    order: 2,
    embedded_order: None,
    dense_output: false,
    config: &NEWTON_KNOBS,
    description: "BDF2, fixed step, SDIRK2 start-up",
    legacy: None,
};

/// Variable-step BDF2 coefficients for ρ = h/h_prev: the step solves
/// `y − c1·y_n + c2·y_{n−1} − c3·h·f(t + h, y) = 0`. ρ = 1 gives (4/3, 1/3, 2/3).
pub fn coefficients(rho: f64) -> (f64, f64, f64) {
    let d = 1.0 + 2.0 * rho;
    (
        (1.0 + rho) * (1.0 + rho) / d,
        rho * rho / d,
        (1.0 + rho) / d,
    )
}

/// The BDF2 history carried between steps, and what `commit` needs of the last step.
pub struct History {
    pub y_nm1: Vec<f64>,
    pub h_nm1: f64,
    /// 0 = the next step starts up; 1 = (y_{n−1}, h_{n−1}) is valid; −1 = restarted since
    /// the last step (an event or `assign` changed the state): discard at commit.
    pub phase: i64,
    /// The state and step size of the last step taken, rotated into the history by commit.
    pub step_y0: Vec<f64>,
    pub step_h: f64,
}

impl History {
    pub fn new(n: usize) -> Self {
        History {
            y_nm1: vec![0.0; n],
            h_nm1: 0.0,
            phase: 0,
            step_y0: vec![0.0; n],
            step_h: 0.0,
        }
    }

    pub fn save(&self, ws: &mut Vec<WsArray>) {
        ws.push(WsArray::f64("y_nm1", self.y_nm1.clone()));
        ws.push(WsArray::f64("h_nm1", vec![self.h_nm1]));
        ws.push(WsArray::i64("phase", vec![self.phase]));
        ws.push(WsArray::f64("step_y0", self.step_y0.clone()));
        ws.push(WsArray::f64("step_h", vec![self.step_h]));
    }

    pub fn load(&mut self, ws: &[WsArray], stepper: &str) -> Result<()> {
        load_f64(ws, "y_nm1", &mut self.y_nm1)?;
        load_f64(ws, "step_y0", &mut self.step_y0)?;
        let mut h = [0.0];
        load_f64(ws, "h_nm1", &mut h)?;
        self.h_nm1 = h[0];
        load_f64(ws, "step_h", &mut h)?;
        self.step_h = h[0];
        for (name, v) in [("h_nm1", self.h_nm1), ("step_h", self.step_h)] {
            if !(v == 0.0 || (v.is_normal() && v > 0.0)) {
                return Err(Error::corrupt(format!(
                    "workspace '{name}' of {stepper} is {v:?}; a step size must be zero (no \
                     history yet) or a positive normal number"
                )));
            }
        }
        let mut phase = [0];
        load_i64(ws, "phase", &mut phase)?;
        if !(-1..=1).contains(&phase[0]) {
            return Err(Error::corrupt(format!(
                "workspace 'phase' of {stepper} is {}, outside -1..=1",
                phase[0]
            )));
        }
        self.phase = phase[0];
        Ok(())
    }

    /// Starts a step from `y`: remembers it for `commit` and tells whether the history
    /// (y_{n−1}, h_{n−1}) is valid. The caller records the step size it takes in `step_h`.
    pub fn begin(&mut self, y: &[f64]) -> bool {
        if self.phase < 0 {
            self.phase = 0;
        }
        self.step_y0.copy_from_slice(y);
        self.phase == 1 && self.h_nm1 > 0.0
    }

    pub fn commit(&mut self) {
        if self.phase < 0 {
            // An event changed the state during this step: the history no longer applies.
            self.phase = 0;
            return;
        }
        self.y_nm1.copy_from_slice(&self.step_y0);
        self.h_nm1 = self.step_h;
        self.phase = 1;
    }

    pub fn restart(&mut self) {
        self.phase = -1;
    }
}

/// Solves one BDF2 step with ratio `rho` from `y` (= y_n) into `y_new`, using the history's
/// y_{n−1}. `r` is scratch of length n.
#[allow(clippy::too_many_arguments)]
pub fn bdf2_solve(
    newton: &mut Newton,
    f: &mut dyn Rhs,
    hist: &History,
    t: f64,
    y: &[f64],
    h: f64,
    rho: f64,
    cfg: &NewtonConfig,
    r: &mut [f64],
    y_new: &mut [f64],
) -> Result<Solve> {
    let (c1, c2, c3) = coefficients(rho);
    for i in 0..y.len() {
        r[i] = c1 * y[i] - c2 * hist.y_nm1[i];
        // Predictor: linear extrapolation through y_{n−1} and y_n.
        y_new[i] = (1.0 + rho) * y[i] - rho * hist.y_nm1[i];
    }
    newton.solve(f, t + h, c3 * h, r, y_new, cfg)
}

pub struct Bdf2 {
    newton_cfg: super::KnobCache<NewtonConfig>,
    hist: History,
    startup: SdirkCore,
    newton: Newton,
    r: Vec<f64>,
}

impl Bdf2 {
    pub fn new(n: usize) -> Self {
        Bdf2 {
            newton_cfg: Default::default(),
            hist: History::new(n),
            startup: SdirkCore::new(n),
            newton: Newton::new(n),
            r: vec![0.0; n],
        }
    }
}

impl Stepper for Bdf2 {
    fn info(&self) -> &'static StepperInfo {
        &INFO
    }

    fn save(&self) -> Vec<WsArray> {
        let mut ws = Vec::new();
        self.hist.save(&mut ws);
        ws
    }

    fn load(&mut self, ws: &[WsArray]) -> Result<()> {
        check_layout(ws, &self.save(), "stepper")?;
        self.hist.load(ws, INFO.name)
    }

    fn restart(&mut self) {
        self.hist.restart();
    }

    fn step(
        &mut self,
        f: &mut dyn Rhs,
        t: f64,
        y: &[f64],
        h: f64,
        cfg: &[f64],
        y_new: &mut [f64],
    ) -> Result<StepOutcome> {
        let ncfg = self
            .newton_cfg
            .get(cfg, |c| NewtonConfig::from_cfg(&INFO, c))?;
        let rho = h / self.hist.h_nm1;
        let use_history = self.hist.begin(y) && rho <= RHO_MAX;
        self.hist.step_h = h;
        let solved = if use_history {
            self.newton.begin_step();
            bdf2_solve(
                &mut self.newton,
                f,
                &self.hist,
                t,
                y,
                h,
                rho,
                &ncfg,
                &mut self.r,
                y_new,
            )?
        } else {
            self.startup.step(f, t, y, h, &ncfg, y_new)?
        };
        match solved {
            Solve::Converged => Ok(StepOutcome {
                h_used: h,
                h_next: h,
            }),
            Solve::Failed(m) => Err(newton::fail(INFO.name, t, h, &m)),
        }
    }

    fn commit(&mut self, _f: &mut dyn Rhs, _t_new: f64, _y_new: &[f64]) -> Result<()> {
        self.hist.commit();
        Ok(())
    }
}
