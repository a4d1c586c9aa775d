//! Explicit Runge–Kutta engine driven by a Butcher tableau (data), shared by euler, rk2, rk4
//! and the stages of rk45.

use super::{Rhs, StepOutcome, Stepper, StepperInfo, WsArray};
use crate::error::Result;
use crate::method::StepForm;
pub use crate::method::Tableau;

/// Stage storage for a tableau over `n` states.
#[derive(Debug, Clone)]
pub struct Stages {
    pub k: Vec<Vec<f64>>,
    pub y_stage: Vec<f64>,
}

impl Stages {
    pub fn new(n_stages: usize, n: usize) -> Self {
        Stages {
            k: vec![vec![0.0; n]; n_stages],
            y_stage: vec![0.0; n],
        }
    }

    /// Computes stages `0..tab.a.len()` of the tableau (k_i = f(t + c_i h, y + h Σ a_ij k_j)).
    #[inline]
    pub fn compute(
        &mut self,
        tab: &Tableau,
        f: &mut dyn Rhs,
        t: f64,
        y: &[f64],
        h: f64,
    ) -> Result<()> {
        f.eval(t, y, &mut self.k[0])?;
        self.compute_after_first(tab, f, t, y, h)
    }

    /// Computes stages `1..tab.a.len()`, with `k[0] = f(t, y)` already in place.
    #[inline]
    pub fn compute_after_first(
        &mut self,
        tab: &Tableau,
        f: &mut dyn Rhs,
        t: f64,
        y: &[f64],
        h: f64,
    ) -> Result<()> {
        for (i, row) in tab.a.iter().enumerate().skip(1) {
            let (done, rest) = self.k.split_at_mut(i);
            for (m, ys) in self.y_stage.iter_mut().enumerate() {
                let mut acc = 0.0;
                for (j, aij) in row.iter().enumerate() {
                    if *aij != 0.0 {
                        acc += aij * done[j][m];
                    }
                }
                *ys = y[m] + h * acc;
            }
            f.eval(t + tab.c[i] * h, &self.y_stage, &mut rest[0])?;
        }
        Ok(())
    }

    /// `out = y + h Σ w_i k_i`.
    #[inline]
    pub fn combine(&self, weights: &[f64], y: &[f64], h: f64, out: &mut [f64]) {
        for (m, o) in out.iter_mut().enumerate() {
            let mut acc = 0.0;
            for (w, k) in weights.iter().zip(&self.k) {
                if *w != 0.0 {
                    acc += w * k[m];
                }
            }
            *o = y[m] + h * acc;
        }
    }
}

/// A fixed-step explicit Runge–Kutta method: no state carried between steps.
pub struct FixedErk {
    info: &'static StepperInfo,
    tab: &'static Tableau,
    n: usize,
    /// Made at the first step through this stepper: a run by a fused loop or the lock-step
    /// kernel never steps here, and an ensemble makes one stepper per member.
    stages: Option<Stages>,
}

impl FixedErk {
    pub fn new(info: &'static StepperInfo, tab: &'static Tableau, n: usize) -> Self {
        FixedErk {
            info,
            tab,
            n,
            stages: None,
        }
    }
}

impl Stepper for FixedErk {
    fn info(&self) -> &'static StepperInfo {
        self.info
    }
    fn save(&self) -> Vec<WsArray> {
        Vec::new()
    }
    fn load(&mut self, ws: &[WsArray]) -> Result<()> {
        super::workspace::check_layout(ws, &[], "stepper")
    }
    fn restart(&mut self) {}
    fn step_form(&self) -> Option<StepForm> {
        Some(StepForm::Erk(self.tab))
    }
    fn step(
        &mut self,
        f: &mut dyn Rhs,
        t: f64,
        y: &[f64],
        h: f64,
        _cfg: &[f64],
        y_new: &mut [f64],
    ) -> Result<StepOutcome> {
        let (tab, n) = (self.tab, self.n);
        let stages = self
            .stages
            .get_or_insert_with(|| Stages::new(tab.b.len(), n));
        stages.compute(tab, f, t, y, h)?;
        stages.combine(tab.b, y, h, y_new);
        Ok(StepOutcome {
            h_used: h,
            h_next: h,
        })
    }
}
