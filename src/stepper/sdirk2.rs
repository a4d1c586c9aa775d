//! Alexander's two-stage SDIRK method: fixed step, order 2, L-stable and stiffly accurate.
//!
//! Tableau: c = (γ, 1), A = [[γ, 0], [1−γ, γ]], b = (1−γ, γ) with γ = (2 − √2)/2. Both
//! stages share the diagonal γ, so they share one factorisation of I − γh·J. The method is
//! one-step: nothing is carried between steps and the workspace is empty.

use super::newton::{self, Newton, NewtonConfig, Solve, NEWTON_KNOBS};
use super::{Rhs, StepOutcome, Stepper, StepperInfo, WsArray};
use crate::error::Result;
use crate::method::ModelKind;

/// The diagonal coefficient γ = (2 − √2)/2 ≈ 0.2929.
pub const GAMMA: f64 = (2.0 - std::f64::consts::SQRT_2) / 2.0;

pub static INFO: StepperInfo = StepperInfo {
    name: "sdirk2",
    aliases: &["sdirk2_jit", "alexander2"],
    kind: ModelKind::Ode,
    adaptive: false,
    implicit: true,
    order: 2,
    embedded_order: None,
    dense_output: false,
    config: &NEWTON_KNOBS,
    description: "Alexander's 2-stage SDIRK, fixed step, L-stable",
    legacy: None,
};

/// The SDIRK2 step itself, also used as the start-up step of bdf2.
pub struct SdirkCore {
    pub newton: Newton,
    stage1: Vec<f64>,
    r: Vec<f64>,
}

impl SdirkCore {
    pub fn new(n: usize) -> Self {
        SdirkCore {
            newton: Newton::new(n),
            stage1: vec![0.0; n],
            r: vec![0.0; n],
        }
    }

    /// One step of size `h` from `(t, y)` into `y_new`. Starts a new Jacobian.
    pub fn step(
        &mut self,
        f: &mut dyn Rhs,
        t: f64,
        y: &[f64],
        h: f64,
        cfg: &NewtonConfig,
        y_new: &mut [f64],
    ) -> Result<Solve> {
        self.newton.begin_step();
        let c = GAMMA * h;
        // Stage 1: Y1 = y + γh·f(t + γh, Y1), from y.
        self.stage1.copy_from_slice(y);
        if let Solve::Failed(m) = self.newton.solve(f, t + c, c, y, &mut self.stage1, cfg)? {
            return Ok(Solve::Failed(format!("stage 1: {m}")));
        }
        // Stage 2: Y2 = y + (1−γ)h·k1 + γh·f(t + h, Y2). The stage derivative comes from the
        // stage equation, h·k1 = (Y1 − y)/γ, rather than from evaluating f: that does not
        // amplify the Newton error by the stiffness.
        for ((r, y0), s1) in self.r.iter_mut().zip(y).zip(&self.stage1) {
            *r = y0 + (1.0 - GAMMA) / GAMMA * (s1 - y0);
        }
        y_new.copy_from_slice(&self.r);
        if let Solve::Failed(m) = self.newton.solve(f, t + h, c, &self.r, y_new, cfg)? {
            return Ok(Solve::Failed(format!("stage 2: {m}")));
        }
        Ok(Solve::Converged)
    }
}

pub struct Sdirk2 {
    newton_cfg: super::KnobCache<NewtonConfig>,
    core: SdirkCore,
}

impl Sdirk2 {
    pub fn new(n: usize) -> Self {
        Sdirk2 {
            newton_cfg: Default::default(),
            core: SdirkCore::new(n),
        }
    }
}

impl Stepper for Sdirk2 {
    fn info(&self) -> &'static StepperInfo {
        &INFO
    }

    fn save(&self) -> Vec<WsArray> {
        Vec::new()
    }

    fn load(&mut self, ws: &[WsArray]) -> Result<()> {
        super::workspace::check_layout(ws, &[], "stepper")
    }

    fn restart(&mut self) {}

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
        match self.core.step(f, t, y, h, &ncfg, y_new)? {
            Solve::Converged => Ok(StepOutcome {
                h_used: h,
                h_next: h,
            }),
            Solve::Failed(m) => Err(newton::fail(INFO.name, t, h, &m)),
        }
    }
}
