//! Variable-step BDF2 with an error estimate and step-size control.
//!
//! Start-up (first step, or after a restart): backward Euler with Richardson error
//! estimation — one step of h and two of h/2; the error is the difference, the two half steps
//! are kept. Later steps: variable-coefficient BDF2 with ρ = h/h_prev (ρ capped at
//! [`RHO_MAX`] for zero stability), then a backward-Euler solve of the same step; the error
//! estimate is the difference of the two, so it is of order 1 and the controller uses the
//! exponent 1/2 (see [`Controller`]).
//!
//! Carried between steps: y_{n−1}, h_{n−1}, the start-up phase and the dense-output nodes of
//! the last step; the proposed next step is the session's. The history is rotated in
//! `commit`, after event actions, so it always matches the committed trajectory.

use super::adaptive_implicit::{
    backward_euler_estimate, Attempt, Controller, QuadraticDense, KNOBS,
};
use super::bdf2::{bdf2_solve, History, RHO_MAX};
use super::newton::{Newton, NewtonConfig, Solve};
use super::workspace::check_layout;
use super::{Rhs, StepOutcome, Stepper, StepperInfo, WsArray};
use crate::error::Result;
use crate::method::ModelKind;

pub static INFO: StepperInfo = StepperInfo {
    name: "bdf2a",
    aliases: &["bdf2a_jit"],
    kind: ModelKind::Ode,
    adaptive: true,
    implicit: true,
    order: 2,
    embedded_order: Some(1),
    dense_output: true,
    config: &KNOBS,
    description: "variable-step BDF2, adaptive, backward-Euler error estimate",
};

pub struct Bdf2a {
    newton_cfg: super::KnobCache<NewtonConfig>,
    ctrl_cfg: super::KnobCache<Controller>,
    hist: History,
    dense: QuadraticDense,
    newton: Newton,
    r: Vec<f64>,
    y_bdf: Vec<f64>,
    y_be: Vec<f64>,
    y_half: Vec<f64>,
}

impl Bdf2a {
    pub fn new(n: usize) -> Self {
        Bdf2a {
            newton_cfg: Default::default(),
            ctrl_cfg: Default::default(),
            hist: History::new(n),
            dense: QuadraticDense::new(n),
            newton: Newton::new(n),
            r: vec![0.0; n],
            y_bdf: vec![0.0; n],
            y_be: vec![0.0; n],
            y_half: vec![0.0; n],
        }
    }

    /// Start-up attempt: backward Euler, one step of h (coarse, into y_be) and two of h/2
    /// (fine, into y_bdf via y_half).
    fn startup(
        &mut self,
        f: &mut dyn Rhs,
        t: f64,
        y: &[f64],
        h: f64,
        cfg: &NewtonConfig,
        ctrl: &Controller,
    ) -> Result<Attempt> {
        let half = 0.5 * h;
        self.y_be.copy_from_slice(y);
        if let Solve::Failed(m) = self.newton.solve(f, t + h, h, y, &mut self.y_be, cfg)? {
            return Ok(Attempt::NewtonFailed(format!("backward Euler (h): {m}")));
        }
        self.y_half.copy_from_slice(y);
        let solved = self
            .newton
            .solve(f, t + half, half, y, &mut self.y_half, cfg)?;
        if let Solve::Failed(m) = solved {
            return Ok(Attempt::NewtonFailed(format!("backward Euler (h/2): {m}")));
        }
        // Second half step from the linear extrapolation of the first.
        for ((b, m), y0) in self.y_bdf.iter_mut().zip(&self.y_half).zip(y) {
            *b = 2.0 * m - y0;
        }
        let solved = self
            .newton
            .solve(f, t + h, half, &self.y_half, &mut self.y_bdf, cfg)?;
        if let Solve::Failed(m) = solved {
            return Ok(Attempt::NewtonFailed(format!("backward Euler (h/2): {m}")));
        }
        Ok(Attempt::Solved {
            err: ctrl.error_norm(y, &self.y_be, &self.y_bdf),
        })
    }

    /// BDF2 attempt into y_bdf, then backward Euler into y_be for the error estimate.
    #[allow(clippy::too_many_arguments)]
    fn bdf2(
        &mut self,
        f: &mut dyn Rhs,
        t: f64,
        y: &[f64],
        h: f64,
        rho: f64,
        cfg: &NewtonConfig,
        ctrl: &Controller,
    ) -> Result<Attempt> {
        let solved = bdf2_solve(
            &mut self.newton,
            f,
            &self.hist,
            t,
            y,
            h,
            rho,
            cfg,
            &mut self.r,
            &mut self.y_bdf,
        )?;
        if let Solve::Failed(m) = solved {
            return Ok(Attempt::NewtonFailed(format!("BDF2: {m}")));
        }
        backward_euler_estimate(
            &mut self.newton,
            f,
            t,
            h,
            y,
            &self.y_bdf,
            &mut self.y_be,
            cfg,
            ctrl,
        )
    }
}

impl Stepper for Bdf2a {
    fn info(&self) -> &'static StepperInfo {
        &INFO
    }

    fn save(&self) -> Vec<WsArray> {
        let mut ws = Vec::new();
        self.hist.save(&mut ws);
        self.dense.save(&mut ws);
        ws
    }

    fn load(&mut self, ws: &[WsArray]) -> Result<()> {
        check_layout(ws, &self.save(), "stepper")?;
        self.hist.load(ws, INFO.name)?;
        self.dense.load(ws)
    }

    fn restart(&mut self) {
        self.hist.restart();
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
        let ctrl = self.ctrl_cfg.get(cfg, |c| Controller::from_cfg(&INFO, c))?;
        self.newton.begin_step();
        let use_history = self.hist.begin(y);
        // The BDF2 formula is zero-stable only for a bounded step ratio.
        let h_cap = if use_history {
            RHO_MAX * self.hist.h_nm1
        } else {
            f64::INFINITY
        };
        let out = ctrl.drive(INFO.name, t, h_in.min(h_cap), |h| {
            if use_history {
                self.bdf2(f, t, y, h, h / self.hist.h_nm1, &ncfg, &ctrl)
            } else {
                self.startup(f, t, y, h, &ncfg, &ctrl)
            }
        })?;
        let h = out.h_used;
        self.hist.step_h = h;
        y_new.copy_from_slice(&self.y_bdf);
        if use_history {
            self.dense.set(
                [t - self.hist.h_nm1, t, t + h],
                [&self.hist.y_nm1, y, y_new],
            );
        } else {
            self.dense
                .set([t, t + 0.5 * h, t + h], [y, &self.y_half, y_new]);
        }
        Ok(StepOutcome {
            h_used: h,
            // The next step is a BDF2 step with this one as its history.
            h_next: out.h_next.min(RHO_MAX * h),
        })
    }

    fn commit(&mut self, _f: &mut dyn Rhs, _t_new: f64, _y_new: &[f64]) -> Result<()> {
        self.hist.commit();
        Ok(())
    }

    fn interpolate(&self, t: f64, out: &mut [f64]) -> bool {
        self.dense.interpolate(t, out)
    }
}
