//! Adams–Bashforth engine shared by ab2 and ab3: a Heun start-up step, then the explicit
//! multistep formula of growing order until the method's own order is reached.
//!
//! The history holds f at committed states, computed in `commit` *after* event actions, so
//! it always matches the trajectory. `restart` (an event action or `assign` changed the state)
//! discards the history and the next step starts up again.

use super::workspace::{check_layout, load_f64, load_i64};
use super::{Rhs, StepOutcome, Stepper, StepperInfo, WsArray};
use crate::error::Result;
use crate::method::StepForm;

/// Adams–Bashforth weights by number of history values used (1, 2, 3), newest first.
pub const WEIGHTS: [&[f64]; 3] = [
    &[1.0],
    &[3.0 / 2.0, -1.0 / 2.0],
    &[23.0 / 12.0, -16.0 / 12.0, 5.0 / 12.0],
];

pub struct AdamsBashforth {
    info: &'static StepperInfo,
    order: usize,
    n: usize,
    /// `order` rows of `n`, newest first: f(t_n, y_n), f(t_{n-1}, y_{n-1}), … (flat, so a
    /// fused loop can take it as one array).
    hist: Vec<f64>,
    /// Number of valid history entries; 0 = start up next step; -1 = discard at commit.
    phase: i64,
    k1: Vec<f64>,
    k2: Vec<f64>,
    y_pred: Vec<f64>,
}

impl AdamsBashforth {
    pub fn new(info: &'static StepperInfo, order: usize, n: usize) -> Self {
        AdamsBashforth {
            info,
            order,
            n,
            hist: vec![0.0; order * n],
            phase: 0,
            k1: vec![0.0; n],
            k2: vec![0.0; n],
            y_pred: vec![0.0; n],
        }
    }

    fn row(&self, i: usize) -> &[f64] {
        &self.hist[i * self.n..(i + 1) * self.n]
    }

    fn hist_name(i: usize) -> String {
        match i {
            0 => "f_n".to_string(),
            i => format!("f_nm{i}"),
        }
    }
}

impl Stepper for AdamsBashforth {
    fn info(&self) -> &'static StepperInfo {
        self.info
    }

    fn save(&self) -> Vec<WsArray> {
        let mut ws: Vec<WsArray> = (0..self.order)
            .map(|i| WsArray::f64(&Self::hist_name(i), self.row(i).to_vec()))
            .collect();
        ws.push(WsArray::i64("phase", vec![self.phase]));
        ws
    }

    fn load(&mut self, ws: &[WsArray]) -> Result<()> {
        check_layout(ws, &self.save(), "stepper")?;
        let n = self.n;
        for i in 0..self.order {
            load_f64(ws, &Self::hist_name(i), &mut self.hist[i * n..(i + 1) * n])?;
        }
        let mut phase = [0];
        load_i64(ws, "phase", &mut phase)?;
        if phase[0] < -1 || phase[0] > self.order as i64 {
            return Err(crate::error::Error::corrupt(format!(
                "workspace 'phase' of {} is {}, outside -1..={}",
                self.info.name, phase[0], self.order
            )));
        }
        self.phase = phase[0];
        Ok(())
    }

    fn restart(&mut self) {
        self.phase = -1;
    }

    fn step_form(&self) -> Option<StepForm> {
        Some(StepForm::Adams(WEIGHTS[self.order - 1]))
    }

    fn fused_carry(&mut self) -> Option<&mut [f64]> {
        (self.phase == self.order as i64).then_some(&mut self.hist[..])
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
        if self.phase < 0 {
            self.phase = 0;
        }
        if self.phase == 0 {
            // Heun start-up: second order, needs no history.
            f.eval(t, y, &mut self.k1)?;
            for ((p, yi), k) in self.y_pred.iter_mut().zip(y).zip(&self.k1) {
                *p = yi + h * k;
            }
            f.eval(t + h, &self.y_pred, &mut self.k2)?;
            for m in 0..y.len() {
                y_new[m] = y[m] + h / 2.0 * (self.k1[m] + self.k2[m]);
            }
        } else {
            let w = WEIGHTS[(self.phase as usize).min(self.order) - 1];
            for m in 0..y.len() {
                let mut acc = 0.0;
                for (i, wi) in w.iter().enumerate() {
                    acc += wi * self.hist[i * self.n + m];
                }
                y_new[m] = y[m] + h * acc;
            }
        }
        Ok(StepOutcome {
            h_used: h,
            h_next: h,
        })
    }

    fn commit(&mut self, f: &mut dyn Rhs, t_new: f64, y_new: &[f64]) -> Result<()> {
        if self.phase < 0 {
            // An event changed the state during this step: the history no longer applies.
            self.phase = 0;
            return Ok(());
        }
        // Rotate: the oldest row becomes the newest.
        let n = self.n;
        self.hist.rotate_right(n);
        if self.phase == 0 {
            // After start-up the history is (f(t_{n+1}), f(t_n)); f(t_n) is the Heun k1.
            if self.order > 1 {
                self.hist[n..2 * n].copy_from_slice(&self.k1);
            }
            self.phase = 1;
        }
        f.eval(t_new, y_new, &mut self.hist[..n])?;
        self.phase = (self.phase + 1).min(self.order as i64);
        Ok(())
    }
}
